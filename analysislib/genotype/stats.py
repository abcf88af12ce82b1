"""Descriptive statistics of genotype datasets: allele frequencies, MAF spectra and PCA.

Used by the data tour (notebook 00) and by the imputation metrics that stratify by minor
allele frequency. PCA follows Patterson, Price and Reich (2006): each variant is centred on
twice its allele frequency and scaled by sqrt(2p(1-p)) before the SVD.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError

__all__ = ["alt_allele_frequency", "genotype_pca", "maf_spectrum", "minor_allele_frequency"]


def _alt_counts(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-call alternate-allele and called-allele counts, dims (variants, samples)."""
    gt = ds["call_genotype"]
    called = gt >= 0
    return (gt > 0).where(called, False).sum("ploidy"), called.sum("ploidy")


def _grouped_counts(ds: xr.Dataset, by: str | None) -> tuple[xr.DataArray, xr.DataArray]:
    """Alternate-allele and called-allele counts per variant, with a ``group`` dim if ``by``.

    One pass over the genotype array (NumPy or dask); dask inputs are computed here.
    """
    variables.validate(ds, "call_genotype")
    gt = ds["call_genotype"].data
    if by is None:
        groups, selectors = ["all"], [slice(None)]
    else:
        variables.validate(ds, by)
        labels = np.asarray(ds[by].values)
        groups = list(dict.fromkeys(labels.tolist()))
        selectors = [np.flatnonzero(labels == g) for g in groups]
    alt = [(gt[:, sel] > 0).sum(axis=(1, 2)) for sel in selectors]
    called = [(gt[:, sel] >= 0).sum(axis=(1, 2)) for sel in selectors]
    if not isinstance(gt, np.ndarray):
        import dask

        alt, called = dask.compute(alt, called)
    dims = ("group", "variants")
    coords = {"group": groups}
    alt_da = xr.DataArray(np.stack(alt).astype(np.int64), dims=dims, coords=coords)
    called_da = xr.DataArray(np.stack(called).astype(np.int64), dims=dims, coords=coords)
    if by is None:
        return alt_da.isel(group=0, drop=True), called_da.isel(group=0, drop=True)
    return alt_da, called_da


def alt_allele_frequency(ds: xr.Dataset, *, by: str | None = None) -> xr.DataArray:
    """Frequency of non-reference alleles per variant, ignoring missing calls.

    Parameters
    ----------
    ds
        Genotype dataset.
    by
        Optional sample variable (for example ``"sample_population"``) to compute one
        frequency per group; the result then has a ``group`` dimension.
    """
    alt, n = _grouped_counts(ds, by)
    return (alt / n).rename("alt_allele_frequency")


def minor_allele_frequency(ds: xr.Dataset, *, by: str | None = None) -> xr.DataArray:
    """Minor allele frequency per variant (per group with ``by``), in [0, 0.5].

    Computed from counts, so 1 minor allele in 20 is exactly 0.05.
    """
    alt, n = _grouped_counts(ds, by)
    return (np.minimum(alt, n - alt) / n).rename("minor_allele_frequency")


def maf_spectrum(
    ds: xr.Dataset,
    *,
    by: str | None = None,
    bins: Sequence[float] = (0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5),
) -> pd.DataFrame:
    """Count variants per MAF bin, overall or per group.

    Monomorphic variants (MAF 0) fall in their own bin labelled ``"0"``. Bins are closed on the
    right: ``(0.01, 0.05]``. Returns a tidy table ``group, maf_bin, n_variants, fraction``.
    """
    maf = minor_allele_frequency(ds, by=by)
    if by is None:
        maf = maf.expand_dims(group=["all"])
    rows = []
    edges = np.asarray(bins, dtype=float)
    labels = ["0"] + [f"({lo:g}, {hi:g}]" for lo, hi in itertools.pairwise(edges)]
    for group in maf["group"].values:
        values = maf.sel(group=group).values
        values = values[~np.isnan(values)]
        counts = [int((values == 0).sum())]
        counts += [int(((values > lo) & (values <= hi)).sum()) for lo, hi in itertools.pairwise(edges)]
        total = max(len(values), 1)
        rows += [{"group": group, "maf_bin": lab, "n_variants": c, "fraction": c / total}
                 for lab, c in zip(labels, counts, strict=True)]
    return pd.DataFrame(rows)


def genotype_pca(ds: xr.Dataset, *, n_components: int = 10, min_maf: float = 0.01) -> xr.Dataset:
    """Principal components of samples from standardised alternate-allele counts.

    Missing calls are set to the variant mean (zero after centring). Variants with MAF below
    ``min_maf`` are dropped.

    Returns
    -------
    xarray.Dataset
        ``sample_pc`` (samples, components), ``explained_variance_ratio`` (components), and
        the sample variables of ``ds``.
    """
    variables.validate(ds, "call_genotype")
    alt, n = _alt_counts(ds)
    alt_counts = np.asarray(alt.values, dtype=np.float64)
    n_called = np.asarray(n.values, dtype=np.float64)
    p = alt_counts.sum(1) / np.maximum(n_called.sum(1), 1)
    keep = np.minimum(p, 1 - p) >= min_maf
    if keep.sum() < 2:
        raise InvalidArgumentError(f"only {int(keep.sum())} variants have MAF >= {min_maf}; PCA needs at least 2")
    ploidy = ds.sizes["ploidy"]
    dosage = np.where(n_called[keep] == ploidy, alt_counts[keep], ploidy * p[keep, None])
    z = (dosage - ploidy * p[keep, None]) / np.sqrt(ploidy * p[keep, None] * (1 - p[keep, None]))
    u, s, _ = np.linalg.svd(z.T, full_matrices=False)
    k = min(n_components, len(s))
    explained = s**2 / np.sum(s**2)
    out = xr.Dataset(
        {
            "sample_pc": (("samples", "components"), u[:, :k] * s[:k]),
            "explained_variance_ratio": (("components",), explained[:k]),
        },
        coords={"components": np.arange(1, k + 1)},
        attrs={"n_variants_used": int(keep.sum())},
    )
    for name in ("sample_id", "sample_population"):
        if name in ds:
            out[name] = ds[name]
    return out
