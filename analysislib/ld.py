"""Linkage disequilibrium: r and r^2 between nearby variants.

This module starts with LD decay (mean r^2 against physical distance), used by the data tour.
Pairwise correlations are Pearson correlations of haplotype allele indicators (phased data) as in
Dias et al. (2022) and the method notes (genotype_imputation.md section 1.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables

__all__ = ["ld_decay"]


def _standardised_haplotypes(ds: xr.Dataset) -> np.ndarray:
    gt = np.asarray(ds["call_genotype"].values)
    haps = gt.reshape(gt.shape[0], -1).astype(np.float64)
    haps[haps > 0] = 1.0
    haps[gt.reshape(gt.shape[0], -1) < 0] = np.nan
    mean = np.nanmean(haps, axis=1, keepdims=True)
    haps = np.where(np.isnan(haps), mean, haps) - mean
    norm = np.sqrt((haps**2).sum(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, haps / norm, np.nan)


def ld_decay(
    ds: xr.Dataset,
    *,
    max_offset: int = 200,
    distance_bins: Sequence[float] = (0, 1e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6),
) -> pd.DataFrame:
    """Mean r^2 between variant pairs, binned by distance in base pairs.

    Pairs are every variant with each of its next ``max_offset`` neighbours; monomorphic
    variants are skipped. Missing alleles are mean-imputed.

    Returns
    -------
    pandas.DataFrame
        ``distance_bin`` (left edge), ``distance_mid``, ``mean_r2``, ``n_pairs``.
    """
    variables.validate(ds, ["call_genotype", "variant_position"])
    z = _standardised_haplotypes(ds)
    pos = np.asarray(ds["variant_position"].values, dtype=np.int64)
    edges = np.asarray(distance_bins, dtype=float)
    sums = np.zeros(len(edges) - 1)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for offset in range(1, min(max_offset, len(pos) - 1) + 1):
        r2 = np.einsum("ij,ij->i", z[:-offset], z[offset:]) ** 2
        dist = pos[offset:] - pos[:-offset]
        ok = ~np.isnan(r2)
        idx = np.searchsorted(edges, dist[ok], side="right") - 1
        inside = (idx >= 0) & (idx < len(sums))
        np.add.at(sums, idx[inside], r2[ok][inside])
        np.add.at(counts, idx[inside], 1)
    with np.errstate(invalid="ignore"):
        mean = sums / counts
    return pd.DataFrame({
        "distance_bin": edges[:-1],
        "distance_mid": (edges[:-1] + edges[1:]) / 2,
        "mean_r2": mean,
        "n_pairs": counts,
    })
