"""Hyperparameters of one tile's autoencoder (Dias et al. 2022, Table 1) and its layer widths.

Defaults are those of the authors' ``DSAE_TORCH_ARG.py`` (``TorkamaniLab/Imputation_Autoencoder``).
Torch-free: bundles read and check hyperparameters, and tuning draws them, without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from analysislib.errors import InvalidArgumentError

__all__ = ["ACTIVATIONS", "LOSSES", "OPTIMIZERS", "DAEHyperparameters", "layer_sizes",
           "masking_for_typed_fraction", "stored_hyperparameters"]


ACTIVATIONS = ("sigmoid", "tanh", "relu", "leakyrelu", "softplus")
"""Hidden-layer activations (Table 1 plus the code's ``leakyrelu``)."""
OPTIMIZERS = ("adam", "rmsprop", "sgd", "adagrad", "adadelta")
"""Optimizers of the authors' code (Table 1 lists the first three)."""
LOSSES = ("CE", "FL")
"""Reconstruction losses: binary cross entropy or focal loss (Eq. 2)."""


@dataclass(frozen=True)
class DAEHyperparameters:
    """Hyperparameters of one tile's autoencoder (defaults: the authors' ``DSAE_TORCH_ARG.py``).

    Attributes
    ----------
    n_layers
        Number of Linear layers, even (half encoder, half decoder).
    size_ratio
        Width of each encoder layer relative to the previous one (decoder mirrors).
    activation
        Hidden activation, one of :data:`ACTIVATIONS`.
    loss
        ``"CE"`` binary cross entropy or ``"FL"`` focal loss.
    gamma
        Focal-loss modulating exponent γ (Eq. 2; 0 = cross entropy weighted by α_t).
    l1
        λ1 of the L1 term (Σ over weight matrices of mean |W|).
    l2
        λ2, the optimizer's weight decay.
    beta, rho
        Weight β and target activation ρ of the KL sparsity term (Eq. 4); β = 0 switches it off.
    learning_rate
        Initial learning rate.
    optimizer
        One of :data:`OPTIMIZERS`.
    batch_size
        Samples per optimizer step.
    decay_rate
        Learning rate × ``decay_rate`` at the end of every cycle; 0 disables decay.
    cycle_epochs
        Epochs per masking/training cycle (checkpoint, early-stopping check, curriculum period).
    max_epochs
        Maximum number of epochs.
    min_mask
        First masking rate of the curriculum.
    max_mask_keep
        The curriculum ends with all but this many variants masked per sample.
    max_mask
        Upper bound of the curriculum's masking rate (1 = the authors' all-but-``max_mask_keep``
        end). Lower values keep training close to the share of untyped sites that inference
        sees (for example 2/3 when one SNP in three is typed).
    offspring
        Number of offspring formed once from the (phased) training panel and added to it before
        de-duplication (0 = no augmentation).
    deduplicate
        Train on the distinct rows only, as the authors' code does (``np.unique`` of the
        training rows). On tiles of a few dozen variants many rows repeat, above all with
        haplotype rows (a median of 396 distinct haplotypes among 900 on 53-variant windows of
        1000 Genomes chr22 array sites), and de-duplication throws away how often each one
        occurs, the frequencies an imputation posterior rests on. False keeps every row.
    seed
        Seed of initialisation, shuffling, masking and offspring formation.
    """

    n_layers: int = 4
    size_ratio: float = 0.5
    activation: str = "tanh"
    loss: str = "CE"
    gamma: float = 0.0
    l1: float = 1e-9
    l2: float = 1e-5
    beta: float = 0.0
    rho: float = 0.05
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 256
    decay_rate: float = 0.0
    cycle_epochs: int = 500
    max_epochs: int = 20000
    min_mask: float = 0.80
    max_mask_keep: int = 5
    max_mask: float = 1.0
    offspring: int = 0
    deduplicate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> InvalidArgumentError:
            return InvalidArgumentError(f"DAEHyperparameters.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("n_layers", "batch_size", "cycle_epochs", "max_epochs", "max_mask_keep",
                     "offspring", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise bad(name, "an integer")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.deduplicate, (bool, np.bool_)):
            raise bad("deduplicate", "True or False")
        object.__setattr__(self, "deduplicate", bool(self.deduplicate))
        for spec in fields(self):
            if spec.type == "float":
                value = getattr(self, spec.name)
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise bad(spec.name, "a number")
                if not math.isfinite(value):
                    raise bad(spec.name, "finite")
                object.__setattr__(self, spec.name, float(value))
        if self.n_layers < 2 or self.n_layers % 2:
            raise bad("n_layers", "an even integer >= 2")
        if self.size_ratio <= 0:
            raise bad("size_ratio", "positive")
        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"one of {ACTIVATIONS}")
        if self.loss not in LOSSES:
            raise bad("loss", f"one of {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {OPTIMIZERS}")
        for name in ("gamma", "l1", "l2", "beta"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        if not 0 < self.rho < 1:
            raise bad("rho", "in (0, 1)")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "positive")
        if not 0 <= self.decay_rate <= 1:
            raise bad("decay_rate", "in [0, 1]")
        if not 0 <= self.min_mask <= 1:
            raise bad("min_mask", "in [0, 1]")
        if not 0 < self.max_mask <= 1:
            raise bad("max_mask", "in (0, 1]")
        for name in ("batch_size", "cycle_epochs", "max_epochs"):
            if getattr(self, name) < 1:
                raise bad(name, ">= 1")
        for name in ("max_mask_keep", "offspring", "seed"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DAEHyperparameters:
        """Build from a dict such as :meth:`to_dict` wrote; missing keys take the defaults.

        Raises
        ------
        ValueError
            On unknown keys or invalid values.
        """
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown DAE hyperparameters {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> DAEHyperparameters:
        """A copy with some fields changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def stored_hyperparameters(values: Any) -> Any:
    """Hyperparameters as a bundle or checkpoint stored them, with fields added since at their
    defaults (so a tile trained before a field existed still matches); ``values`` unchanged if
    they are not a valid set."""
    try:
        return DAEHyperparameters.from_dict(values).to_dict()
    except (InvalidArgumentError, TypeError, AttributeError):
        return values


#: Span of the masking curriculum around the untyped share ``1 - typed_fraction`` of the targets'
#: sites (:func:`masking_for_typed_fraction`): from 0.10 below it to 0.05 above it.
TYPED_MASKING_SPAN = (0.10, 0.05)


def masking_for_typed_fraction(typed_fraction: float) -> dict[str, float]:
    """``min_mask`` and ``max_mask`` of a curriculum for targets typed at ``typed_fraction`` of the sites.

    Training masks a variable share of each sample's variants, and imputation hides the
    untyped share ``u = 1 - typed_fraction``. A network trained at rates well above ``u``
    spends its fit on a harder problem than the one it will face: on 1000 Genomes chr22 array
    sites with one SNP in three typed (``u`` = 0.67; first 2,000 SNPs, 450 reference and 50
    target samples, the ``quick`` preset), the aggregate r² at untyped sites was 0.730 for the
    array-agnostic 50-90 % curriculum, 0.750 for 50-80 %, 0.755 for 50-70 % and 0.756 for
    ``u`` - 0.10 to ``u`` + 0.05 (Minimac4: 0.785). With one SNP in ten typed (``u`` = 0.9)
    the same rule gave 0.543, equal to the 50-90 % curriculum, while 50-70 % fell to 0.503. The
    rule trades generality for accuracy at the given density: a bundle trained for one array
    is worse on a much sparser one.

    Returns
    -------
    dict
        ``{"min_mask": max(0, u - 0.10), "max_mask": min(1, u + 0.05)}``, rounded to 4 decimals.

    Raises
    ------
    InvalidArgumentError
        Unless ``0 < typed_fraction < 1``.
    """
    if isinstance(typed_fraction, bool) or not isinstance(typed_fraction, (int, float, np.number)) \
            or not 0 < typed_fraction < 1:
        raise InvalidArgumentError(f"typed_fraction must be a number in (0, 1), got {typed_fraction!r}")
    untyped = 1 - float(typed_fraction)
    below, above = TYPED_MASKING_SPAN
    return {"min_mask": round(max(0.0, untyped - below), 4),
            "max_mask": round(min(1.0, untyped + above), 4)}


def layer_sizes(n_variants: int, n_layers: int = 4, size_ratio: float = 0.5) -> list[int]:
    """Widths of the encoder, input first: ``2V, int(2V r), int(2V r²), ...`` (``n_layers/2 + 1``).

    As in the authors' ``Autoencoder``, each width is the previous one times ``size_ratio``
    truncated to an integer; widths are floored at 1 here. The decoder mirrors this list.

    Examples
    --------
    >>> layer_sizes(10, 4, 0.5)
    [20, 10, 5]
    """
    if int(n_variants) != n_variants or n_variants < 1:
        raise InvalidArgumentError(f"n_variants must be a positive integer, got {n_variants!r}")
    if n_layers < 2 or n_layers % 2:
        raise InvalidArgumentError(f"n_layers must be an even integer >= 2, got {n_layers!r}")
    sizes = [2 * int(n_variants)]
    for _ in range(n_layers // 2):
        sizes.append(max(1, int(sizes[-1] * size_ratio)))
    return sizes
