"""Per-tile features of allele frequencies and LD structure, the predictors of autoencoder accuracy.

Dias et al. 2022, "Hyperparameter tuning" (Results, Figure 2 supplement 3) and the MAF bins of
the authors' XGBoost profiling features (``TorkamaniLab/Imputation_Autoencoder``):
:func:`tile_features` of one tile, :func:`tile_feature_table` of many and
:func:`dataset_tile_features` of a dataset's tiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dae.fit import _check_genotypes

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "TILE_FEATURES",
    "XGB_MAF_BINS",
    "dataset_tile_features",
    "tile_feature_table",
    "tile_features",
    "tile_genotypes",
]


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
    gt = _check_genotypes(genotypes, biallelic=False)
    n_variants, n_samples = gt.shape[:2]
    for name, values in (("positions", positions), ("genetic_positions", genetic_positions)):
        if values is not None and np.shape(values) != (n_variants,):
            raise InvalidArgumentError(f"{name} need one value per variant ({n_variants}), got shape {np.shape(values)}")
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
        raise InvalidArgumentError(f"the tile table lacks columns {sorted(missing)}")
    n = ds.sizes["variants"]
    out = {}
    for row in tiles.itertuples(index=False):
        first, last = int(row.first_variant), int(row.last_variant)
        if not 0 <= first <= last < n:
            raise InvalidArgumentError(f"tile {row.tile}: variants {first}..{last} lie outside the dataset's {n}")
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
