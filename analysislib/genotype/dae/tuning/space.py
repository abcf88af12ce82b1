"""Hyperparameter search spaces (Dias et al. 2022, Table 1, and the authors' code) and random draws.

:func:`sample_hyperparameters` draws sets uniformly from a space, as the authors' lists of random
combinations; :func:`to_hyperparameters` turns rows of drawn values into full
:class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dae.hyperparameters import DAEHyperparameters
from analysislib.training.randomness import derive_seed

__all__ = [
    "AUTHORS_CODE_SEARCH_SPACE",
    "CATEGORICAL_HYPERPARAMETERS",
    "SEARCH_SPACE",
    "SEARCH_SPACES",
    "sample_hyperparameters",
    "to_hyperparameters",
]


#: Table 1 of Dias et al. 2022 (coarse-grid search values), keyed by
#: :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters` field names. Three entries
#: are adapted: Table 1 lists 1 among the "number of hidden layers", but the model is symmetric
#: (``n_layers`` Linear layers, half encoder, half decoder, as in the authors' code and in Table 3,
#: whose "hidden layers" are 2 to 8), so 1 is left out; ρ = 1.0 is left out because the KL sparsity
#: term needs a target activation strictly inside (0, 1); the optimizers "Adam", "RMS Propagation"
#: and "Gradient Descent" are ``adam``, ``rmsprop`` and ``sgd``.
SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "l1": (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "l2": (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "beta": (0.0, 0.001, 0.01, 0.05, 1.0, 5.0, 10.0),
    "rho": (0.001, 0.004, 0.007, 0.01, 0.04, 0.07, 0.1, 0.4, 0.7),
    "activation": ("sigmoid", "tanh", "relu", "softplus"),
    "learning_rate": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
    "gamma": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0),
    "optimizer": ("adam", "rmsprop", "sgd"),
    "loss": ("CE", "FL"),
    "n_layers": (2, 4, 6, 8),
    "size_ratio": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "decay_rate": (0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 0.9999),
}

#: The values of the authors' random search (``1000_random_hyperparameters.tsv``), which differ
#: from Table 1: L1/L2 also 0; beta 0 or 1e-5 to 10; rho 0.005 to 0.5; gamma adds 4; learning
#: rate 1e-5 to 0.1; leakyrelu instead of softplus; adagrad and adadelta added; size ratio up to
#: 1.2. (Their ``disable_alpha`` switch of the focal-loss weight is not searched here.)
AUTHORS_CODE_SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "l1": (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "l2": (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "beta": (0.0, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 5.0, 10.0),
    "rho": (0.005, 0.01, 0.05, 0.1, 0.25, 0.5),
    "activation": ("sigmoid", "tanh", "relu", "leakyrelu"),
    "learning_rate": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "gamma": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0),
    "optimizer": ("sgd", "adagrad", "rmsprop", "adam", "adadelta"),
    "loss": ("CE", "FL"),
    "n_layers": (2, 4, 6, 8),
    "size_ratio": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2),
    "decay_rate": (0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 0.9999),
}

#: Named search spaces accepted wherever a ``space`` is expected.
SEARCH_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "paper": SEARCH_SPACE,
    "authors_code": AUTHORS_CODE_SEARCH_SPACE,
}

#: Hyperparameters one-hot encoded for the predictor (the paper's categorical predictors).
CATEGORICAL_HYPERPARAMETERS: tuple[str, ...] = ("activation", "optimizer", "loss")


def _resolve_space(space: str | Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    if isinstance(space, str):
        if space not in SEARCH_SPACES:
            raise InvalidArgumentError(f"unknown search space {space!r}; choose one of {sorted(SEARCH_SPACES)}")
        return SEARCH_SPACES[space]
    fields = set(DAEHyperparameters.__dataclass_fields__)
    resolved = {}
    for name, values in space.items():
        if name not in fields:
            raise InvalidArgumentError(f"search space entry {name!r} is not a DAEHyperparameters field")
        values = tuple(values)
        if not values:
            raise InvalidArgumentError(f"search space entry {name!r} has no values")
        resolved[name] = values
    return resolved


def sample_hyperparameters(
    n: int, seed: int = 0, *, space: str | Mapping[str, Sequence[Any]] = "paper",
) -> pd.DataFrame:
    """Draw ``n`` hyperparameter sets at random from a search space (random grid search).

    Each hyperparameter is drawn independently and uniformly from its listed values, as in the
    authors' lists of random combinations.

    Parameters
    ----------
    n
        Number of sets.
    seed
        Seed of the draw; the same seed gives the same table.
    space
        ``"paper"`` (:data:`SEARCH_SPACE`, Table 1), ``"authors_code"``
        (:data:`AUTHORS_CODE_SEARCH_SPACE`) or a mapping of field name to values.

    Returns
    -------
    pandas.DataFrame
        ``n`` rows indexed ``0..n-1`` (named ``candidate``), one column per searched
        hyperparameter, with the values' own types.
    """
    if int(n) < 0:
        raise InvalidArgumentError(f"n must be non-negative, got {n}")
    values = _resolve_space(space)
    rng = np.random.default_rng(derive_seed(int(seed), 0x7E5E))
    columns = {}
    for name, options in values.items():
        picks = rng.integers(0, len(options), size=int(n))
        column = np.empty(int(n), dtype=object)
        column[:] = [options[i] for i in picks]
        kinds = {type(option) for option in options}
        columns[name] = pd.array(column.tolist(), dtype=_column_dtype(kinds))
    table = pd.DataFrame(columns, index=pd.RangeIndex(int(n), name="candidate"))
    return table


def _column_dtype(kinds: set[type]) -> Any:
    if kinds <= {int}:
        return "int64"
    if kinds <= {int, float}:
        return "float64"
    return object


def to_hyperparameters(
    table: pd.DataFrame, base: DAEHyperparameters | None = None,
) -> list[DAEHyperparameters]:
    """Turn rows of searched values into full hyperparameter sets.

    Columns that are :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters` fields
    replace the values of ``base`` (the defaults if ``None``); other columns are ignored.

    Returns
    -------
    list of DAEHyperparameters
    """
    base = base if base is not None else DAEHyperparameters()
    fields = [name for name in table.columns if name in DAEHyperparameters.__dataclass_fields__]
    # DAEHyperparameters validates the values and casts NumPy scalars and integral floats.
    return [replace(base, **dict(zip(fields, row, strict=True)))
            for row in table[fields].itertuples(index=False, name=None)]
