"""Hyperparameter search for the per-tile denoising autoencoders (Dias et al. 2022).

Follows the paper's Methods ("Hyperparameter initialization and grid search", "Hyperparameter
tuning", Table 1) and the authors' repository ``TorkamaniLab/Imputation_Autoencoder`` (the
search space in ``autoencoder_tuning_pipeline/1000_random_hyperparameters.tsv`` and the MAF bins
of their XGBoost profiling features):

1. random search: every tile is trained with randomly drawn hyperparameter sets for a short,
   fixed number of epochs (500 in the paper, one masking cycle, no stop criterion) and scored by
   the mean per-variant r² on held-out samples (:func:`run_random_search`);
2. per-tile features describe each tile's LD structure (:func:`tile_features`): variant count,
   MAF-bin proportions, mean pairwise |r|, principal components for 90% of the variance,
   variance explained by the first two components, unique haplotypes and diplotypes;
3. an XGBoost regressor predicts a tile's r² from hyperparameters (categoricals one-hot) plus
   tile features, checked by 10-fold cross-validation (:class:`HyperparameterPredictor`; the
   paper reports r² = 0.935 ± 0.002 of predicted against observed);
4. the predictor ranks many new hyperparameter sets per tile (500,000 in the paper) and the
   top k (10) plus the best tested set of each tile go on to longer training with the cycle
   stop criterion (:meth:`HyperparameterPredictor.top_k`, :func:`train_candidates`).

:func:`tune_tiles` runs the four steps with a preset of :data:`TUNING_PRESETS`: ``quick`` for CI
and ``full`` at the paper's scale. Models are trained by
:func:`analysislib.genotype.autoencoder.train_tile`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysislib.presets import Presets
from analysislib.training.randomness import derive_seed

if TYPE_CHECKING:
    import xarray as xr

    from analysislib.genotype.autoencoder import DAEHyperparameters

__all__ = [
    "AUTHORS_CODE_SEARCH_SPACE",
    "CATEGORICAL_HYPERPARAMETERS",
    "SEARCH_SPACE",
    "SEARCH_SPACES",
    "TILE_FEATURES",
    "TUNING_PRESETS",
    "XGB_MAF_BINS",
    "CrossValidationResult",
    "HyperparameterPredictor",
    "TuningPreset",
    "TuningResult",
    "best_hyperparameters",
    "dataset_tile_features",
    "run_random_search",
    "sample_hyperparameters",
    "split_validation_samples",
    "tile_feature_table",
    "tile_features",
    "tile_genotypes",
    "to_hyperparameters",
    "train_candidates",
    "tune_tiles",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- search space

#: Table 1 of Dias et al. 2022 (coarse-grid search values), keyed by
#: :class:`~analysislib.genotype.autoencoder.DAEHyperparameters` field names. Three entries are
#: adapted: Table 1 lists 1 among the "number of hidden layers", but the model is symmetric
#: (``n_layers`` Linear layers, half encoder, half decoder, as in the authors' code and in
#: Table 3, whose "hidden layers" are 2 to 8), so 1 is left out; ρ = 1.0 is left out because
#: the KL sparsity term needs a target activation strictly inside (0, 1); the optimizers
#: "Adam", "RMS Propagation" and "Gradient Descent" are ``adam``, ``rmsprop`` and ``sgd``.
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
            raise ValueError(f"unknown search space {space!r}; choose one of {sorted(SEARCH_SPACES)}")
        return SEARCH_SPACES[space]
    from analysislib.genotype.autoencoder import DAEHyperparameters

    fields = set(DAEHyperparameters.__dataclass_fields__)
    resolved = {}
    for name, values in space.items():
        if name not in fields:
            raise ValueError(f"search space entry {name!r} is not a DAEHyperparameters field")
        values = tuple(values)
        if not values:
            raise ValueError(f"search space entry {name!r} has no values")
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
        raise ValueError(f"n must be non-negative, got {n}")
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

    Columns that are :class:`~analysislib.genotype.autoencoder.DAEHyperparameters` fields
    replace the values of ``base`` (the defaults if ``None``); other columns are ignored.

    Returns
    -------
    list of DAEHyperparameters
    """
    from analysislib.genotype.autoencoder import DAEHyperparameters

    base = base if base is not None else DAEHyperparameters()
    fields = [name for name in table.columns if name in DAEHyperparameters.__dataclass_fields__]
    # DAEHyperparameters validates the values and casts NumPy scalars and integral floats.
    return [replace(base, **dict(zip(fields, row, strict=True)))
            for row in table[fields].itertuples(index=False, name=None)]


# ----------------------------------------------------------------------------- tile features

#: MAF bins of the authors' XGBoost profiling features (right-closed, ``(lo, hi]``;
#: ``TorkamaniLab/Imputation_Autoencoder``). Monomorphic variants get their own proportion.
XGB_MAF_BINS: tuple[float, ...] = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def _maf_bin_names() -> list[str]:
    return [f"maf_{lo:g}_{hi:g}" for lo, hi in itertools.pairwise(XGB_MAF_BINS)]


#: Names of the features :func:`tile_features` returns, in order.
TILE_FEATURES: tuple[str, ...] = (
    "n_variants",
    "maf_monomorphic",
    *_maf_bin_names(),
    "mean_maf",
    "heterozygosity",
    "mean_abs_r",
    "mean_r2",
    "n_pcs_90",
    "pc1_pc2_variance",
    "unique_haplotypes",
    "unique_diplotypes",
    "recombination_rate",
)


def _check_genotypes(genotypes: Any, what: str = "genotypes") -> np.ndarray:
    gt = np.asarray(genotypes)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise ValueError(f"{what} must be diploid calls (variants, samples, 2), got shape {gt.shape}")
    if not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"{what} must hold integer allele indices (-1 missing), got dtype {gt.dtype}")
    if gt.shape[0] == 0 or gt.shape[1] == 0:
        raise ValueError(f"{what} has no variants or no samples (shape {gt.shape})")
    return gt


def _mean_ld(gt: np.ndarray, phased: bool, positions: np.ndarray | None) -> tuple[float, float]:
    """Mean |r| and mean r² over all pairs of polymorphic variants, via :func:`ld_band`."""
    import dask.array as da

    from analysislib.genotype.dataset import create_genotype_dataset
    from analysislib.ld import compute_ld, ld_band

    n_variants, n_samples = gt.shape[:2]
    if n_variants < 2:
        return math.nan, math.nan
    pos = np.arange(1, n_variants + 1) if positions is None else np.asarray(positions, dtype=np.int64)
    ds = create_genotype_dataset(
        contigs=["tile"],
        variant_contig=np.zeros(n_variants, dtype=np.int64),
        variant_position=pos,
        variant_allele=np.full((n_variants, 2), "N", dtype=object),
        sample_id=[f"s{i}" for i in range(n_samples)],
        call_genotype=gt.astype(np.int8, copy=False),
    )
    # Every pair once: each variant with all later ones; chunks bound the memory of the band.
    band = ld_band(ds, window=n_variants - 1, unit="haplotype" if phased else "dosage",
                   chunk_variants=min(n_variants, 1024)).data
    finite = da.isfinite(band)
    abs_r = da.where(finite, da.absolute(band), 0).astype(np.float64)
    total_abs, total_r2, n_pairs = compute_ld(abs_r.sum(), (abs_r**2).sum(), finite.sum())
    if int(n_pairs) == 0:
        return math.nan, math.nan
    return float(total_abs) / int(n_pairs), float(total_r2) / int(n_pairs)


def _pca_summary(alt_count: np.ndarray, called: np.ndarray) -> tuple[int, float]:
    """Components for 90% of the variance and PC1+PC2 share of centred alt-allele counts.

    ``alt_count`` and ``called`` are (variants, samples); missing calls take the variant mean.
    """
    n_called = called.sum(axis=1)
    mean = np.divide(np.where(called, alt_count, 0).sum(axis=1), n_called,
                     out=np.zeros(len(n_called)), where=n_called > 0)
    x = np.where(called, alt_count, mean[:, None]) - mean[:, None]  # (variants, samples)
    # Eigenvalues of the smaller Gram matrix are the squared singular values of x.
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    eigenvalues = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
    total = eigenvalues.sum()
    if total <= 1e-12 * max(x.size, 1):
        return 0, math.nan
    share = np.cumsum(eigenvalues) / total
    n_90 = int(np.searchsorted(share, 0.9 - 1e-12) + 1)
    return n_90, float(share[min(1, len(share) - 1)])


def tile_features(
    genotypes: Any,
    *,
    phased: bool = True,
    positions: Any | None = None,
    genetic_positions: Any | None = None,
) -> dict[str, float]:
    """Features describing a tile's allele frequencies and LD structure (Dias et al. 2022).

    The paper's predictors of autoencoder accuracy ("Hyperparameter tuning"; Results, Figure 2
    supplement 3), computed on the training genotypes of one tile.

    Parameters
    ----------
    genotypes
        ``(variants, samples, 2)`` allele indices, -1 missing (a tile of ``call_genotype``).
    phased
        Whether the two alleles of a call are ordered haplotypes. LD is then computed between
        haplotype allele indicators (as for tiling), otherwise between per-sample alternate-allele
        counts; unique haplotypes are undefined (NaN) for unphased data.
    positions
        Base-pair positions of the variants (needed only for ``recombination_rate``).
    genetic_positions
        Genetic map positions in cM (with ``positions``, gives ``recombination_rate``).

    Returns
    -------
    dict
        Keys :data:`TILE_FEATURES`:

        * ``n_variants``;
        * ``maf_monomorphic`` and ``maf_<lo>_<hi>``: proportions of the tile's variants with MAF
          0 (or no called allele) and in each right-closed bin of :data:`XGB_MAF_BINS`
          (they sum to 1); MAF is over called alleles;
        * ``mean_maf``; ``heterozygosity`` (fraction of called genotypes that are heterozygous);
        * ``mean_abs_r``, ``mean_r2``: mean |r| and r² over all pairs of polymorphic variants
          (:func:`analysislib.ld.ld_band`, missing calls at the variant mean);
        * ``n_pcs_90``: principal components needed to explain at least 90% of the variance of
          the centred alternate-allele counts (samples x variants); ``pc1_pc2_variance``: the
          share of the first two (NaN if nothing varies);
        * ``unique_haplotypes``: distinct haplotypes among the 2N (missing is its own allele);
        * ``unique_diplotypes``: distinct unordered haplotype pairs (phased) or distinct
          multi-locus genotypes (unphased);
        * ``recombination_rate``: cM per Mb across the tile (NaN without a genetic map).
    """
    gt = _check_genotypes(genotypes)
    n_variants, n_samples = gt.shape[:2]
    for name, values in (("positions", positions), ("genetic_positions", genetic_positions)):
        if values is not None and np.shape(values) != (n_variants,):
            raise ValueError(f"{name} need one value per variant ({n_variants}), got shape {np.shape(values)}")
    called_allele = gt >= 0
    alt_allele = gt > 0
    n_called = called_allele.sum(axis=(1, 2))
    n_alt = alt_allele.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        maf = np.minimum(n_alt, n_called - n_alt) / n_called  # minor count first: exact bin edges
    polymorphic = np.isfinite(maf) & (maf > 0)
    features: dict[str, float] = {"n_variants": float(n_variants),
                                  "maf_monomorphic": float(np.mean(~polymorphic))}
    for name, (lo, hi) in zip(_maf_bin_names(), itertools.pairwise(XGB_MAF_BINS), strict=True):
        features[name] = float(np.mean(polymorphic & (maf > lo) & (maf <= hi)))
    features["mean_maf"] = float(np.nanmean(maf)) if np.isfinite(maf).any() else math.nan

    called = called_allele.all(axis=2)
    het = called & (alt_allele[..., 0] != alt_allele[..., 1])
    features["heterozygosity"] = float(het.sum() / called.sum()) if called.any() else math.nan

    features["mean_abs_r"], features["mean_r2"] = _mean_ld(gt, phased, positions)
    alt_count = alt_allele.sum(axis=2).astype(np.float64)
    n_pcs, pc12 = _pca_summary(alt_count, called)
    features["n_pcs_90"] = float(n_pcs)
    features["pc1_pc2_variance"] = pc12

    if phased:
        haplotypes = gt.transpose(1, 2, 0).reshape(2 * n_samples, n_variants)
        _, hap_id = np.unique(haplotypes, axis=0, return_inverse=True)
        hap_id = hap_id.reshape(n_samples, 2)
        features["unique_haplotypes"] = float(hap_id.max() + 1)
        features["unique_diplotypes"] = float(len(np.unique(np.sort(hap_id, axis=1), axis=0)))
    else:
        features["unique_haplotypes"] = math.nan
        genotype_vectors = np.where(called, alt_allele.sum(axis=2), -1).T
        features["unique_diplotypes"] = float(len(np.unique(genotype_vectors, axis=0)))

    features["recombination_rate"] = _recombination_rate(positions, genetic_positions, n_variants)
    return features


def _recombination_rate(positions: Any, genetic_positions: Any, n_variants: int) -> float:
    if positions is None or genetic_positions is None:
        return math.nan
    pos = np.asarray(positions, dtype=np.float64)
    cm = np.asarray(genetic_positions, dtype=np.float64)
    span_mb = (pos[-1] - pos[0]) / 1e6
    if n_variants < 2 or span_mb <= 0 or not np.isfinite(cm[[0, -1]]).all():
        return math.nan
    return float((cm[-1] - cm[0]) / span_mb)


def tile_feature_table(
    tiles_genotypes: Mapping[Hashable, Any],
    *,
    phased: bool = True,
    positions: Mapping[Hashable, Any] | None = None,
    genetic_positions: Mapping[Hashable, Any] | None = None,
) -> pd.DataFrame:
    """:func:`tile_features` of every tile, one row per tile (index ``tile``).

    ``positions`` and ``genetic_positions``, if given, map tile ids to per-variant arrays.
    """
    rows = {}
    for tile, genotypes in tiles_genotypes.items():
        rows[tile] = tile_features(
            genotypes, phased=phased,
            positions=None if positions is None else positions.get(tile),
            genetic_positions=None if genetic_positions is None else genetic_positions.get(tile))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(TILE_FEATURES))
    table.index.name = "tile"
    return table


def tile_genotypes(ds: xr.Dataset, tiles: pd.DataFrame) -> dict[Hashable, np.ndarray]:
    """In-memory ``call_genotype`` of each tile of a tile table.

    Parameters
    ----------
    ds
        Genotype dataset.
    tiles
        Tile table with ``tile``, ``first_variant`` and ``last_variant`` (inclusive), as
        :func:`analysislib.tiling.tile_genome` returns in ``Tiling.tiles``.

    Returns
    -------
    dict
        Tile id -> int8 array ``(variants, samples, 2)``.
    """
    missing = {"tile", "first_variant", "last_variant"} - set(tiles.columns)
    if missing:
        raise ValueError(f"the tile table lacks columns {sorted(missing)}")
    n = ds.sizes["variants"]
    out = {}
    for row in tiles.itertuples(index=False):
        first, last = int(row.first_variant), int(row.last_variant)
        if not 0 <= first <= last < n:
            raise ValueError(f"tile {row.tile}: variants {first}..{last} lie outside the dataset's {n}")
        out[row.tile] = np.asarray(ds["call_genotype"].data[first:last + 1], dtype=np.int8)
    return out


def dataset_tile_features(ds: xr.Dataset, tiles: pd.DataFrame) -> pd.DataFrame:
    """:func:`tile_feature_table` for the tiles of a dataset.

    Phasing is taken from ``call_genotype_phased`` (all calls phased, else unphased), positions
    from ``variant_position`` and the genetic map from ``variant_genetic_position`` if present.
    """
    genotypes = tile_genotypes(ds, tiles)
    phased = bool(np.asarray(ds["call_genotype_phased"]).all()) if "call_genotype_phased" in ds else False
    position = np.asarray(ds["variant_position"])
    cm = np.asarray(ds["variant_genetic_position"]) if "variant_genetic_position" in ds else None
    spans = {row.tile: slice(int(row.first_variant), int(row.last_variant) + 1)
             for row in tiles.itertuples(index=False)}
    return tile_feature_table(
        genotypes, phased=phased,
        positions={t: position[s] for t, s in spans.items()},
        genetic_positions=None if cm is None else {t: cm[s] for t, s in spans.items()})


# ----------------------------------------------------------------------------- training runs


def split_validation_samples(n_samples: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random split of sample indices into training and validation (sorted index arrays).

    The same split is used for every tile, so validation individuals never train any tile.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    n_val = round(n_samples * fraction)
    if n_val < 1 or n_val >= n_samples:
        raise ValueError(f"cannot hold out {fraction:g} of {n_samples} samples for validation")
    order = np.random.default_rng(derive_seed(int(seed), 0x5A11)).permutation(n_samples)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# Columns a training run adds to its row.
_RUN_COLUMNS = ("val_r2", "status", "epochs_trained", "best_epoch", "stopped_early", "final_loss",
                "message", "seconds")


@dataclass
class _Task:
    """Trials of one tile run in one process."""

    tile: Hashable
    train: np.ndarray
    validation: np.ndarray
    validation_mask: Any
    runs: list[tuple[Any, dict[str, Any]]]  # (trial id, full hyperparameter dict)
    epochs: int
    device: str
    threads: int | None


def _run_task(task: _Task) -> list[dict[str, Any]]:
    """Train and score each run of a task (top level so process pools can pickle it)."""
    import torch

    from analysislib.genotype.autoencoder import DAEHyperparameters, train_tile

    if task.threads is not None:
        torch.set_num_threads(task.threads)
    rows = []
    for trial, values in task.runs:
        hparams = DAEHyperparameters.from_dict(values)
        started = time.perf_counter()
        row: dict[str, Any] = {"tile": task.tile, "trial": trial}
        try:
            trained = train_tile(task.train, hparams, epochs=task.epochs, validation=task.validation,
                                 validation_mask=task.validation_mask, device=task.device,
                                 progress=False)
        except FloatingPointError as error:  # the training loop stops on a non-finite loss
            row.update(status="diverged", val_r2=0.0, epochs_trained=math.nan, best_epoch=math.nan,
                       stopped_early=False, final_loss=math.nan,
                       message=str(error).splitlines()[0][:200])
        else:
            history = trained.history
            final_loss = float(history["loss"].iloc[-1]) if len(history) else math.nan
            # r² of the weights train_tile keeps, on its fixed validation mask
            r2 = float(trained.val_r2)
            if math.isfinite(r2):
                status, message = "ok", ""
            elif not math.isfinite(final_loss):
                status, message, r2 = "diverged", "non-finite loss", 0.0
            else:
                status, message = "unscored", "no masked validation variant is polymorphic"
            row.update(status=status, val_r2=r2, epochs_trained=int(trained.epochs_completed),
                       best_epoch=trained.best_epoch, stopped_early=bool(trained.stopped_early),
                       final_loss=final_loss, message=message)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows


def _tile_splits(
    tiles_genotypes: Mapping[Hashable, Any],
    validation: Mapping[Hashable, Any] | None,
    validation_fraction: float,
    seed: int,
) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
    if not tiles_genotypes:
        raise ValueError("no tiles given")
    splits = {}
    split_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for tile, genotypes in tiles_genotypes.items():
        gt = _check_genotypes(genotypes, f"tile {tile!r} genotypes")
        if validation is not None:
            if tile not in validation:
                raise ValueError(f"tile {tile!r} has no validation genotypes")
            val = _check_genotypes(validation[tile], f"tile {tile!r} validation genotypes")
            if val.shape[0] != gt.shape[0]:
                raise ValueError(f"tile {tile!r}: {val.shape[0]} validation variants but {gt.shape[0]} training ones")
            splits[tile] = (gt, val)
            continue
        n = gt.shape[1]
        if n not in split_cache:
            split_cache[n] = split_validation_samples(n, validation_fraction, seed)
        train_idx, val_idx = split_cache[n]
        splits[tile] = (np.ascontiguousarray(gt[:, train_idx]), np.ascontiguousarray(gt[:, val_idx]))
    return splits


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _execute(tasks: list[_Task], n_jobs: int, client: Any, progress: bool | None, label: str) -> list[dict[str, Any]]:
    """Run tasks inline, in a process pool or on a dask.distributed client."""
    from analysislib.training.loop import progress_enabled

    show = progress_enabled(progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(t.runs) for t in tasks), desc=label, unit="model")
    rows: list[dict[str, Any]] = []
    try:
        if client is not None:
            from dask.distributed import as_completed

            futures = client.map(_run_task, tasks, pure=False)
            for future in as_completed(futures):
                result = future.result()
                rows += result
                if bar is not None:
                    bar.update(len(result))
        elif n_jobs <= 1 or len(tasks) <= 1:
            for task in tasks:
                result = _run_task(task)
                rows += result
                if bar is not None:
                    bar.update(len(result))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures import as_completed as done

            context = multiprocessing.get_context("spawn")  # torch is not fork-safe
            with ProcessPoolExecutor(max_workers=min(n_jobs, len(tasks)), mp_context=context) as pool:
                futures = [pool.submit(_run_task, task) for task in tasks]
                for future in done(futures):
                    result = future.result()
                    rows += result
                    if bar is not None:
                        bar.update(len(result))
    finally:
        if bar is not None:
            bar.close()
    return rows


def _make_tasks(
    splits: Mapping[Hashable, tuple[np.ndarray, np.ndarray]],
    runs_per_tile: Mapping[Hashable, list[tuple[Any, dict[str, Any]]]],
    *,
    epochs: int,
    validation_mask: Any,
    device: str,
    n_jobs: int,
    runs_per_task: int | None,
) -> list[_Task]:
    n_tiles = max(len(runs_per_tile), 1)
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else None
    tasks = []
    for tile, runs in runs_per_tile.items():
        if not runs:
            continue
        size = runs_per_task or max(1, math.ceil(len(runs) / max(1, math.ceil(n_jobs / n_tiles))))
        train, val = splits[tile]
        mask = validation_mask.get(tile) if isinstance(validation_mask, Mapping) else validation_mask
        for chunk in _chunks(runs, size):
            tasks.append(_Task(tile=tile, train=train, validation=val, validation_mask=mask, runs=chunk,
                               epochs=int(epochs), device=device, threads=threads))
    return tasks


def _order_rows(rows: list[dict[str, Any]], tiles: Sequence[Hashable]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    rank = {tile: i for i, tile in enumerate(tiles)}
    table["_rank"] = table["tile"].map(rank)
    return table.sort_values(["_rank", "trial"], kind="stable").drop(columns="_rank").reset_index(drop=True)


def run_random_search(
    tiles_genotypes: Mapping[Hashable, Any],
    n_trials: int,
    epochs_per_trial: int,
    seed: int = 0,
    *,
    n_jobs: int = 1,
    space: str | Mapping[str, Sequence[Any]] = "paper",
    base: DAEHyperparameters | None = None,
    shared_trials: bool = True,
    validation: Mapping[Hashable, Any] | None = None,
    validation_fraction: float = 0.2,
    validation_mask: Any = None,
    features: pd.DataFrame | None = None,
    device: str = "cpu",
    trials_per_task: int | None = None,
    client: Any = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Random hyperparameter search over tiles (the paper's coarse-grid search).

    Every tile is trained with ``n_trials`` hyperparameter sets for exactly
    ``epochs_per_trial`` epochs (one masking cycle: ``cycle_epochs = max_epochs =
    epochs_per_trial``, so no stop criterion and no decay step, as in the paper's 500-epoch
    trials) and scored by the mean per-variant r² of the trained model on validation genotypes
    (``TrainedTile.val_r2``: :func:`analysislib.genotype.autoencoder.validation_r2` at the
    validation mask).

    Parameters
    ----------
    tiles_genotypes
        Tile id -> training genotypes ``(variants, samples, 2)``, e.g. from :func:`tile_genotypes`.
    n_trials
        Hyperparameter sets per tile (100 in the paper).
    epochs_per_trial
        Training epochs per trial (500 in the paper).
    seed
        Seeds the draws, the validation split and each model (``hparams.seed`` is derived from
        ``seed``, the tile's position and the trial).
    n_jobs
        Worker processes (spawned, so a script must call this under
        ``if __name__ == "__main__":``; torch threads are split between them).
    space
        Search space (see :func:`sample_hyperparameters`).
    base
        Values of the hyperparameters that are not searched (defaults of
        :class:`~analysislib.genotype.autoencoder.DAEHyperparameters`).
    shared_trials
        Use the same ``n_trials`` sets on every tile (as the authors' pipeline, whose tiles all
        ran the first 100 of one list); otherwise draw separately per tile.
    validation
        Tile id -> validation genotypes (an independent cohort, as ARIC in the paper). If
        ``None``, ``validation_fraction`` of the samples are held out, the same for every tile.
    validation_mask
        Passed to :func:`~analysislib.genotype.autoencoder.train_tile` and used for the score:
        a masking rate, a boolean array of masked entries (e.g. the off-array variants), a
        mapping tile -> either, or ``None`` for the model's default.
    features
        Precomputed :func:`tile_feature_table` (computed from the training genotypes if
        ``None``; phased input assumed).
    device
        Torch device of the training.
    trials_per_task
        Trials run one after another in a task; by default each tile's trials are split so
        there are at least ``n_jobs`` tasks.
    client
        A ``dask.distributed`` client to run the tasks on instead of local processes.
    progress
        Show a progress bar over trained models.

    Returns
    -------
    pandas.DataFrame
        One row per (tile, trial): ``tile``, ``trial``, the searched hyperparameters, ``seed``,
        the tile features, ``val_r2``, ``status`` (``"ok"``; ``"diverged"`` when training hit a
        non-finite loss, scored 0 as the authors' accuracy calculator scores an undefined r²;
        ``"unscored"`` with NaN when no masked validation variant is polymorphic),
        ``epochs_trained``, ``best_epoch``, ``stopped_early``, ``final_loss``, ``message`` and
        ``seconds``.
    """
    if int(n_trials) < 1 or int(epochs_per_trial) < 1:
        raise ValueError(f"n_trials and epochs_per_trial must be at least 1, got {n_trials}, {epochs_per_trial}")
    from analysislib.genotype.autoencoder import DAEHyperparameters

    base = base if base is not None else DAEHyperparameters()
    base = replace(base, cycle_epochs=int(epochs_per_trial), max_epochs=int(epochs_per_trial))
    splits = _tile_splits(tiles_genotypes, validation, validation_fraction, seed)
    tiles = list(splits)
    if features is None:
        features = tile_feature_table({tile: train for tile, (train, _) in splits.items()})
    _check_feature_rows(features, tiles)

    searched = list(_resolve_space(space))
    runs_per_tile: dict[Hashable, list[tuple[Any, dict[str, Any]]]] = {}
    draws: dict[Hashable, pd.DataFrame] = {}
    for index, tile in enumerate(tiles):
        draw_seed = seed if shared_trials else derive_seed(int(seed), 1, index)
        table = sample_hyperparameters(int(n_trials), draw_seed, space=space)
        draws[tile] = table
        runs = []
        for trial, hparams in zip(table.index, to_hyperparameters(table, base), strict=True):
            hparams = replace(hparams, seed=derive_seed(int(seed), 2, index, int(trial)) % (2**31))
            runs.append((int(trial), hparams.to_dict()))
        runs_per_tile[tile] = runs

    tasks = _make_tasks(splits, runs_per_tile, epochs=int(epochs_per_trial), validation_mask=validation_mask,
                        device=device, n_jobs=int(n_jobs), runs_per_task=trials_per_task)
    results = _order_rows(_execute(tasks, int(n_jobs), client, progress, "random search"), tiles)

    hyper = pd.concat([draws[tile].assign(tile=tile) for tile in tiles]).rename_axis("trial").reset_index()
    seeds = pd.DataFrame([(tile, trial, values["seed"]) for tile in tiles for trial, values in runs_per_tile[tile]],
                         columns=["tile", "trial", "seed"])
    table = hyper.merge(seeds, on=["tile", "trial"]).merge(results, on=["tile", "trial"])
    table = table.join(features[list(TILE_FEATURES)], on="tile")
    order = ["tile", "trial", *searched, "seed", *TILE_FEATURES, *_RUN_COLUMNS]
    return table[order]


def _check_feature_rows(features: pd.DataFrame, tiles: Sequence[Hashable]) -> None:
    absent = [tile for tile in tiles if tile not in features.index]
    if absent:
        raise ValueError(f"the feature table has no rows for tiles {absent[:5]}")
    lacking = [name for name in TILE_FEATURES if name not in features.columns]
    if lacking:
        raise ValueError(f"the feature table lacks columns {lacking}")


def train_candidates(
    tiles_genotypes: Mapping[Hashable, Any],
    candidates: pd.DataFrame,
    *,
    max_epochs: int,
    cycle_epochs: int,
    seed: int = 0,
    n_jobs: int = 1,
    base: DAEHyperparameters | None = None,
    validation: Mapping[Hashable, Any] | None = None,
    validation_fraction: float = 0.2,
    validation_mask: Any = None,
    device: str = "cpu",
    client: Any = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Longer training of selected hyperparameter sets (the paper's fine-tuning step).

    Each row of ``candidates`` (a tile and its hyperparameter columns, as
    :meth:`HyperparameterPredictor.top_k` returns) is trained for up to ``max_epochs`` epochs in
    cycles of ``cycle_epochs`` with the stop criterion of
    :func:`~analysislib.genotype.autoencoder.train_tile` (35,000 and 500 in the paper) and
    scored on the validation genotypes. Use the same ``seed``, ``validation`` and
    ``validation_fraction`` as the search so the held-out samples stay the same.

    Returns
    -------
    pandas.DataFrame
        ``candidates`` (row order kept) with the ``seed``, ``cycle_epochs`` and ``max_epochs``
        each run used, and ``val_r2``, ``status``, ``epochs_trained``, ``best_epoch``,
        ``stopped_early``, ``final_loss``, ``message`` and ``seconds``, so
        :func:`best_hyperparameters` returns the settings as trained.
    """
    from analysislib.genotype.autoencoder import DAEHyperparameters

    if "tile" not in candidates.columns:
        raise ValueError("candidates need a 'tile' column")
    base = base if base is not None else DAEHyperparameters()
    base = replace(base, cycle_epochs=int(cycle_epochs), max_epochs=int(max_epochs))
    splits = _tile_splits(tiles_genotypes, validation, validation_fraction, seed)
    unknown = set(candidates["tile"]) - set(splits)
    if unknown:
        raise ValueError(f"candidates name tiles without genotypes: {sorted(map(str, unknown))[:5]}")
    tiles = list(splits)
    table = candidates.reset_index(drop=True)
    runs_per_tile: dict[Hashable, list[tuple[Any, dict[str, Any]]]] = {tile: [] for tile in tiles}
    used = []
    for row_number, hparams in enumerate(to_hyperparameters(table, base)):
        tile = table.at[row_number, "tile"]
        if "seed" not in table.columns:
            hparams = replace(hparams, seed=derive_seed(int(seed), 3, row_number) % (2**31))
        runs_per_tile[tile].append((row_number, hparams.to_dict()))
        used.append((hparams.seed, hparams.cycle_epochs, hparams.max_epochs))
    table[["seed", "cycle_epochs", "max_epochs"]] = pd.DataFrame(used, index=table.index)
    tasks = _make_tasks(splits, runs_per_tile, epochs=int(max_epochs), validation_mask=validation_mask,
                        device=device, n_jobs=int(n_jobs), runs_per_task=1)
    results = pd.DataFrame(_execute(tasks, int(n_jobs), client, progress, "candidate training"))
    results = results.set_index("trial").drop(columns="tile").sort_index()
    scored = [*_RUN_COLUMNS]
    return table.drop(columns=[c for c in scored if c in table.columns]).join(results[scored])


def best_hyperparameters(
    results: pd.DataFrame, base: DAEHyperparameters | None = None, *, score: str = "val_r2",
) -> dict[Hashable, DAEHyperparameters]:
    """The highest-scoring hyperparameter set of each tile (ties: first row).

    ``results`` is a table from :func:`run_random_search` or :func:`train_candidates`; the
    mapping it returns can be given to ``analysislib.genotype.dae.train_bundle``.
    """
    if results.empty:
        raise ValueError("no results to choose from")
    best_rows = results.loc[results.groupby("tile", sort=False)[score].idxmax()]
    chosen = to_hyperparameters(best_rows, base)
    return dict(zip(best_rows["tile"], chosen, strict=True))


# ----------------------------------------------------------------------------- predictor


@dataclass
class CrossValidationResult:
    """k-fold cross-validation of the hyperparameter predictor.

    Attributes
    ----------
    folds
        One row per fold: ``fold``, ``n_train``, ``n_test``, ``r2`` (coefficient of determination
        of predicted against observed r²) and ``pearson_r2`` (squared correlation).
    predictions
        Out-of-fold prediction for every row of the table (same index).
    """

    folds: pd.DataFrame
    predictions: pd.Series

    @property
    def r2(self) -> float:
        """Mean over folds of the coefficient of determination."""
        return float(self.folds["r2"].mean())

    @property
    def r2_se(self) -> float:
        """Standard error over folds of :attr:`r2`."""
        return float(self.folds["r2"].std(ddof=1) / np.sqrt(len(self.folds)))

    @property
    def pearson_r2(self) -> float:
        """Mean over folds of the squared Pearson correlation (predicted vs observed)."""
        return float(self.folds["pearson_r2"].mean())

    @property
    def pearson_r2_se(self) -> float:
        """Standard error over folds of :attr:`pearson_r2`."""
        return float(self.folds["pearson_r2"].std(ddof=1) / np.sqrt(len(self.folds)))


class HyperparameterPredictor:
    """XGBoost regression of a tile's autoencoder r² on hyperparameters and tile features.

    As in the paper: categorical hyperparameters (activation, optimizer, loss) one-hot
    encoded, numeric ones and the tile features as they are, XGBoost with default settings.

    Parameters
    ----------
    hyperparameters
        Hyperparameter columns used as predictors (default: every key of :data:`SEARCH_SPACE`).
    features
        Tile-feature columns (default: those of :data:`TILE_FEATURES` in the fitted table).
    target
        Column to predict.
    seed
        ``random_state`` of XGBoost.
    n_jobs
        XGBoost threads.
    **xgb_params
        Further ``xgboost.XGBRegressor`` settings (none in the paper).
    """

    def __init__(
        self,
        hyperparameters: Sequence[str] | None = None,
        features: Sequence[str] | None = None,
        *,
        target: str = "val_r2",
        seed: int = 0,
        n_jobs: int = 1,
        **xgb_params: Any,
    ) -> None:
        self.hyperparameters = list(hyperparameters) if hyperparameters is not None else list(SEARCH_SPACE)
        self.features = list(features) if features is not None else None
        self.target = target
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)
        self.xgb_params = dict(xgb_params)
        self.categories: dict[str, list[Any]] = {}
        self.columns: list[str] = []
        self.model: Any = None

    # -- design matrix

    def _learn_layout(self, table: pd.DataFrame) -> None:
        absent = [c for c in [*self.hyperparameters, self.target] if c not in table.columns]
        if absent:
            raise ValueError(f"the trial table lacks columns {absent}")
        if self.features is None:
            self.features = [name for name in TILE_FEATURES if name in table.columns]
        absent = [c for c in self.features if c not in table.columns]
        if absent:
            raise ValueError(f"the trial table lacks feature columns {absent}")
        self.categories = {}
        for name in self.hyperparameters:
            if name in CATEGORICAL_HYPERPARAMETERS:
                known = [*SEARCH_SPACE.get(name, ()), *AUTHORS_CODE_SEARCH_SPACE.get(name, ())]
                seen = pd.unique(table[name].astype(str)).tolist()
                self.categories[name] = list(dict.fromkeys([*map(str, known), *sorted(seen)]))
        columns = []
        for name in self.hyperparameters:
            if name in self.categories:
                columns += [f"{name}_{value}" for value in self.categories[name]]
            else:
                columns.append(name)
        self.columns = columns + list(self.features)

    def design_matrix(self, table: pd.DataFrame) -> pd.DataFrame:
        """Predictor matrix of a table with hyperparameter and feature columns (float32).

        Categories not seen at fit time (nor in the search spaces) get all-zero indicators.
        """
        if not self.columns:
            raise RuntimeError("the predictor has not been fitted")
        absent = [c for c in [*self.hyperparameters, *self.features] if c not in table.columns]
        if absent:
            raise ValueError(f"the table lacks predictor columns {absent}")
        parts = {}
        for name in self.hyperparameters:
            if name in self.categories:
                values = table[name].astype(str).to_numpy()
                for category in self.categories[name]:
                    parts[f"{name}_{category}"] = (values == category).astype(np.float32)
            else:
                parts[name] = pd.to_numeric(table[name], errors="raise").to_numpy(dtype=np.float32)
        for name in self.features:
            parts[name] = pd.to_numeric(table[name], errors="raise").to_numpy(dtype=np.float32)
        return pd.DataFrame(parts, index=table.index)[self.columns]

    def _new_model(self) -> Any:
        import xgboost

        return xgboost.XGBRegressor(random_state=self.seed, n_jobs=self.n_jobs, **self.xgb_params)

    def _scored(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows with a finite target (unscored trials carry no information)."""
        y = pd.to_numeric(table[self.target], errors="raise")
        keep = np.isfinite(y.to_numpy(dtype=np.float64))
        if not keep.all():
            log.warning("leaving out %d of %d trials without a finite %r", int((~keep).sum()),
                        len(table), self.target)
        return table[keep]

    def _targets(self, table: pd.DataFrame) -> np.ndarray:
        return pd.to_numeric(table[self.target], errors="raise").to_numpy(dtype=np.float64)

    # -- fitting and prediction

    def fit(self, trials: pd.DataFrame) -> HyperparameterPredictor:
        """Fit on a trial table (:func:`run_random_search` output). Returns ``self``.

        Rows whose target is NaN (``status == "unscored"``) are left out.
        """
        trials = self._scored(trials)
        if len(trials) < 2:
            raise ValueError(f"need at least 2 trials to fit the predictor, got {len(trials)}")
        self._learn_layout(trials)
        self.model = self._new_model()
        self.model.fit(self.design_matrix(trials), self._targets(trials))
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted r² of each row (hyperparameters plus the tile's features)."""
        if self.model is None:
            raise RuntimeError("the predictor has not been fitted")
        return np.asarray(self.model.predict(self.design_matrix(table)), dtype=np.float64)

    def cross_validate(
        self, trials: pd.DataFrame, k: int = 10, *, seed: int | None = None, group_by_tile: bool = False,
    ) -> CrossValidationResult:
        """k-fold cross-validation on a trial table (the paper's check: 10 folds).

        Each fold fits a fresh model with this predictor's settings on the other folds and
        predicts the held-out rows. ``group_by_tile`` keeps all trials of a tile in one fold
        (a harder test: prediction for unseen tiles); the paper's folds are random rows.
        Does not change this predictor's fitted model. Rows with a NaN target are left out.
        """
        from sklearn.metrics import r2_score
        from sklearn.model_selection import GroupKFold, KFold

        trials = self._scored(trials)
        k = int(k)
        if k < 2:
            raise ValueError(f"cross-validation needs k >= 2, got {k}")
        if len(trials) < k:
            raise ValueError(f"cannot split {len(trials)} trials into {k} folds")
        layout = HyperparameterPredictor(self.hyperparameters, self.features, target=self.target,
                                         seed=self.seed, n_jobs=self.n_jobs, **self.xgb_params)
        layout._learn_layout(trials)  # one column layout for every fold
        x = layout.design_matrix(trials)
        y = layout._targets(trials)
        shuffle_seed = self.seed if seed is None else int(seed)
        if group_by_tile:
            groups = trials["tile"].astype(str).to_numpy()
            if len(set(groups)) < k:
                raise ValueError(f"cannot split {len(set(groups))} tiles into {k} folds")
            splitter = GroupKFold(n_splits=k, shuffle=True, random_state=shuffle_seed)
            folds = splitter.split(x, y, groups)
        else:
            folds = KFold(n_splits=k, shuffle=True, random_state=shuffle_seed).split(x, y)
        predictions = np.full(len(y), np.nan)
        rows = []
        for fold, (train_idx, test_idx) in enumerate(folds):
            model = layout._new_model()
            model.fit(x.iloc[train_idx], y[train_idx])
            predicted = np.asarray(model.predict(x.iloc[test_idx]), dtype=np.float64)
            predictions[test_idx] = predicted
            observed = y[test_idx]
            rows.append({"fold": fold, "n_train": len(train_idx), "n_test": len(test_idx),
                         "r2": float(r2_score(observed, predicted)) if len(test_idx) > 1 else math.nan,
                         "pearson_r2": _pearson_r2(observed, predicted)})
        return CrossValidationResult(folds=pd.DataFrame(rows),
                                     predictions=pd.Series(predictions, index=trials.index, name="predicted"))

    def top_k(
        self,
        tile_features: pd.DataFrame,
        candidates: pd.DataFrame,
        k: int = 10,
        *,
        observed: pd.DataFrame | None = None,
        batch_size: int = 200_000,
    ) -> pd.DataFrame:
        """The ``k`` candidate hyperparameter sets with the highest predicted r², per tile.

        Parameters
        ----------
        tile_features
            One row per tile (index = tile id), :data:`TILE_FEATURES` columns
            (:func:`tile_feature_table`).
        candidates
            Hyperparameter sets to rank, e.g. ``sample_hyperparameters(500_000, seed)``.
        k
            Sets kept per tile (10 in the paper). Ties keep the earlier candidate.
        observed
            A trial table (:func:`run_random_search`); if given, each tile's best tested set is
            added as well (the paper's "single best initially tested" combination), marked
            ``source = "observed"``, unless it is already among the top ``k``.
        batch_size
            Candidates predicted at a time.

        Returns
        -------
        pandas.DataFrame
            ``tile``, ``rank`` (1 = best), ``source`` (``"predicted"`` or ``"observed"``),
            ``candidate`` (row label in ``candidates``, or the trial number), the hyperparameter
            columns, ``predicted_r2`` and ``observed_r2`` (for observed rows).
        """
        if self.model is None:
            raise RuntimeError("the predictor has not been fitted")
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if candidates.empty:
            raise ValueError("no candidate hyperparameter sets")
        _check_feature_rows_subset(tile_features, self.features)
        hyper = candidates[self.hyperparameters].reset_index(drop=True)
        labels = candidates.index.to_numpy()
        keep = min(k, len(hyper))
        frames = []
        for tile, feature_row in tile_features.iterrows():
            best_scores = np.empty(0)
            best_index = np.empty(0, dtype=np.int64)
            for start in range(0, len(hyper), int(batch_size)):
                chunk = hyper.iloc[start:start + int(batch_size)]
                table = chunk.assign(**{name: feature_row[name] for name in self.features})
                scores = self.predict(table)
                best_scores = np.concatenate([best_scores, scores])
                best_index = np.concatenate([best_index, np.arange(start, start + len(chunk))])
                order = np.lexsort((best_index, -best_scores))[:keep]  # score desc, then candidate order
                best_scores, best_index = best_scores[order], best_index[order]
            chosen = hyper.iloc[best_index].reset_index(drop=True)
            chosen.insert(0, "candidate", labels[best_index])
            chosen.insert(0, "source", "predicted")
            chosen.insert(0, "rank", np.arange(1, keep + 1))
            chosen.insert(0, "tile", tile)
            chosen["predicted_r2"] = best_scores
            chosen["observed_r2"] = np.nan
            if observed is not None:
                extra = self._best_observed(tile, observed, chosen, feature_row)
                if extra is not None:
                    chosen = pd.concat([chosen, extra], ignore_index=True)
            frames.append(chosen)
        return pd.concat(frames, ignore_index=True)

    def _best_observed(self, tile: Hashable, observed: pd.DataFrame, chosen: pd.DataFrame,
                       feature_row: pd.Series) -> pd.DataFrame | None:
        rows = observed[observed["tile"] == tile]
        if rows.empty:
            return None
        best = rows.loc[[rows[self.target].idxmax()]]
        hyper = best[self.hyperparameters].reset_index(drop=True)
        already = (chosen[self.hyperparameters].astype(str).to_numpy()
                   == hyper.astype(str).to_numpy()).all(axis=1).any()
        if already:
            return None
        predicted = self.predict(hyper.assign(**{name: feature_row[name] for name in self.features}))
        extra = hyper.copy()
        extra.insert(0, "candidate", best["trial"].to_numpy() if "trial" in best else best.index.to_numpy())
        extra.insert(0, "source", "observed")
        extra.insert(0, "rank", len(chosen) + 1)
        extra.insert(0, "tile", tile)
        extra["predicted_r2"] = predicted
        extra["observed_r2"] = best[self.target].to_numpy(dtype=np.float64)
        return extra


def _check_feature_rows_subset(tile_features: pd.DataFrame, features: Sequence[str] | None) -> None:
    lacking = [name for name in (features or ()) if name not in tile_features.columns]
    if lacking:
        raise ValueError(f"the tile feature table lacks columns {lacking}")


def _pearson_r2(observed: np.ndarray, predicted: np.ndarray) -> float:
    if len(observed) < 2 or np.std(observed) == 0 or np.std(predicted) == 0:
        return math.nan
    return float(np.corrcoef(observed, predicted)[0, 1] ** 2)


# ----------------------------------------------------------------------------- presets and driver


@dataclass(frozen=True)
class TuningPreset:
    """Scale of a tuning run (see :data:`TUNING_PRESETS`).

    Attributes
    ----------
    n_trials
        Random hyperparameter sets trained per tile.
    epochs_per_trial
        Epochs of each random-search trial (one cycle, no stop criterion).
    n_candidates
        New hyperparameter sets ranked by the predictor.
    top_k
        Predicted-best sets per tile that go on to longer training.
    include_best_observed
        Also train each tile's best random-search set.
    final_max_epochs, final_cycle_epochs
        Longer training: epoch limit and cycle length (stop when a cycle does not improve).
    cv_folds
        Folds of the predictor's cross-validation.
    space
        Search space name (:data:`SEARCH_SPACES`).
    validation_fraction
        Held-out samples when no validation cohort is given.
    include_base
        Also train the ``base`` hyperparameters (the untuned set) among each tile's finalists,
        marked ``source = "base"``, so a tile keeps them unless a tuned set validates better.
        The paper's finalists include the set of its "untuned" model (the best set of the
        coarse search, ``include_best_observed``); when the untuned model is instead a
        default set, this is the same safeguard. Off in both presets.
    """

    n_trials: int
    epochs_per_trial: int
    n_candidates: int
    top_k: int
    include_best_observed: bool
    final_max_epochs: int
    final_cycle_epochs: int
    cv_folds: int
    space: str = "paper"
    validation_fraction: float = 0.2
    include_base: bool = False


#: ``quick`` runs in well under a minute for two small tiles on 2 CPU cores (CI); ``full`` is
#: the paper's scale: 100 trials of 500 epochs per tile, 10-fold CV, 500,000 ranked sets, top 10
#: plus the best tested set trained for up to 35,000 epochs in 500-epoch cycles.
TUNING_PRESETS: Presets[TuningPreset] = Presets("autoencoder tuning", {
    "quick": TuningPreset(n_trials=4, epochs_per_trial=20, n_candidates=2_000, top_k=1,
                          include_best_observed=True, final_max_epochs=60, final_cycle_epochs=20,
                          cv_folds=4),
    "full": TuningPreset(n_trials=100, epochs_per_trial=500, n_candidates=500_000, top_k=10,
                         include_best_observed=True, final_max_epochs=35_000, final_cycle_epochs=500,
                         cv_folds=10),
})


@dataclass
class TuningResult:
    """Everything a :func:`tune_tiles` run produced.

    Attributes
    ----------
    preset
        The scale used.
    features
        :func:`tile_feature_table` of the training genotypes.
    trials
        Random-search table (:func:`run_random_search`).
    predictor
        The :class:`HyperparameterPredictor` fitted on all trials.
    cross_validation
        Its k-fold cross-validation.
    selected
        Candidates chosen per tile (:meth:`HyperparameterPredictor.top_k`).
    finals
        ``selected`` after longer training (:func:`train_candidates`).
    best
        Tile id -> chosen :class:`~analysislib.genotype.autoencoder.DAEHyperparameters` (the
        ``base`` set itself, seed and schedule included, where it won with ``include_base``).
    """

    preset: TuningPreset
    features: pd.DataFrame
    trials: pd.DataFrame
    predictor: HyperparameterPredictor
    cross_validation: CrossValidationResult
    selected: pd.DataFrame
    finals: pd.DataFrame
    best: dict[Hashable, Any] = field(default_factory=dict)


def _with_base_rows(selected: pd.DataFrame, predictor: HyperparameterPredictor, features: pd.DataFrame,
                    base: DAEHyperparameters | None) -> pd.DataFrame:
    """``selected`` plus one ``source = "base"`` row per tile holding the base set's searched values."""
    from analysislib.genotype.autoencoder import DAEHyperparameters

    base = base if base is not None else DAEHyperparameters()
    values = {name: getattr(base, name) for name in predictor.hyperparameters}
    frames = []
    for tile, rows in selected.groupby("tile", sort=False):
        row = pd.DataFrame([values])
        predicted = predictor.predict(row.assign(**{name: features.loc[tile, name] for name in predictor.features}))
        row.insert(0, "candidate", -1)
        row.insert(0, "source", "base")
        row.insert(0, "rank", int(rows["rank"].max()) + 1)
        row.insert(0, "tile", [tile])
        row["predicted_r2"] = predicted
        row["observed_r2"] = np.nan
        frames += [rows, row]
    return pd.concat(frames, ignore_index=True)


def tune_tiles(
    tiles_genotypes: Mapping[Hashable, Any],
    preset: str | TuningPreset = "quick",
    *,
    seed: int = 0,
    n_jobs: int = 1,
    base: DAEHyperparameters | None = None,
    validation: Mapping[Hashable, Any] | None = None,
    validation_mask: Any = None,
    features: pd.DataFrame | None = None,
    phased: bool = True,
    device: str = "cpu",
    client: Any = None,
    progress: bool | None = False,
) -> TuningResult:
    """The paper's tuning pipeline: random search, predictor, top-k, longer training.

    Parameters
    ----------
    tiles_genotypes
        Tile id -> training genotypes ``(variants, samples, 2)``.
    preset
        A key of :data:`TUNING_PRESETS` or a :class:`TuningPreset`.
    seed, n_jobs, base, validation, validation_mask, device, client, progress
        As for :func:`run_random_search`.
    features
        Precomputed tile features (else computed from the training genotypes with ``phased``).

    Returns
    -------
    TuningResult
    """
    preset = TUNING_PRESETS.resolve(preset)  # PresetError for an unknown name
    splits = _tile_splits(tiles_genotypes, validation, preset.validation_fraction, seed)
    if features is None:
        features = tile_feature_table({tile: train for tile, (train, _) in splits.items()}, phased=phased)
    common: dict[str, Any] = {
        "seed": seed, "n_jobs": n_jobs, "base": base, "validation": validation,
        "validation_fraction": preset.validation_fraction, "validation_mask": validation_mask,
        "device": device, "client": client, "progress": progress}
    trials = run_random_search(tiles_genotypes, preset.n_trials, preset.epochs_per_trial,
                               space=preset.space, features=features, **common)
    predictor = HyperparameterPredictor(list(_resolve_space(preset.space)), seed=seed, n_jobs=n_jobs)
    folds = min(preset.cv_folds, len(trials))
    cross_validation = predictor.cross_validate(trials, k=folds)
    predictor.fit(trials)
    candidates = sample_hyperparameters(preset.n_candidates, derive_seed(int(seed), 4), space=preset.space)
    selected = predictor.top_k(features, candidates, preset.top_k,
                               observed=trials if preset.include_best_observed else None)
    if preset.include_base:
        selected = _with_base_rows(selected, predictor, features, base)
    finals = train_candidates(tiles_genotypes, selected, max_epochs=preset.final_max_epochs,
                              cycle_epochs=preset.final_cycle_epochs, **common)
    return TuningResult(preset=preset, features=features, trials=trials, predictor=predictor,
                        cross_validation=cross_validation, selected=selected, finals=finals,
                        best=_keep_base_where_it_won(best_hyperparameters(finals, base), finals, base))


def _keep_base_where_it_won(best: dict[Hashable, Any], finals: pd.DataFrame,
                            base: DAEHyperparameters | None) -> dict[Hashable, Any]:
    """Tiles whose winning finalist is the ``base`` row get ``base`` itself (its seed and schedule),
    so they reproduce the untuned model instead of retraining its values from another seed."""
    if "source" not in finals.columns or not (finals["source"] == "base").any():
        return best
    from analysislib.genotype.autoencoder import DAEHyperparameters

    base = base if base is not None else DAEHyperparameters()
    winners = finals.loc[finals.groupby("tile", sort=False)["val_r2"].idxmax()]
    return {tile: base if source == "base" else best[tile]
            for tile, source in zip(winners["tile"], winners["source"], strict=True)}
