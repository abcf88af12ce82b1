"""Linkage disequilibrium: banded r between nearby variants, sparse pair lists, LD scores, decay.

Everything here goes through one computation, :func:`ld_band`: Pearson r between each variant
and its next ``window`` neighbours, as a lazy dask array chunked along variants. Each chunk is
standardised, then multiplied (BLAS) against itself plus a halo of the next ``window`` variants:
a blocked matrix product, where sgkit's ``ld_matrix`` (``sgkit-dev/sgkit``,
``sgkit/stats/ld.py``) loops over pairs. Correlations are of haplotype allele indicators (phased
data, as in the tiling code of Dias et al. 2022, ``TorkamaniLab/Genome-Tiling``) or of
per-sample alternate-allele counts (the statistic of ``plink --r2``). :func:`ld_scores` follows
LD score regression (Bulik-Sullivan et al. 2015, ldsc ``ldscore.py``) with ldsc's unbiased r^2
estimator.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "LD_UNITS",
    "compute_ld",
    "ld_band",
    "ld_decay",
    "ld_pairs",
    "ld_r2_band",
    "ld_scores",
]

#: Units a correlation can be computed on (see :func:`ld_band`).
LD_UNITS = ("haplotype", "dosage", "call_dosage")

Unit = Literal["haplotype", "dosage", "call_dosage"]

#: Rows of a chunk multiplied at a time against the rows that follow them; the cost of a chunk
#: of ``c`` variants is about ``2 n c (SUB_BLOCK + window)`` flops.
SUB_BLOCK = 512

#: Default variants per chunk for NumPy-backed datasets (at least ``window``).
DEFAULT_CHUNK_VARIANTS = 4096

# A variant whose standardised values have a standard deviation below this is treated as
# monomorphic (its correlations are undefined).
_MIN_STD = 1e-8


# ------------------------------------------------------------------------------------ helpers


def _check_options(window: int, window_bp: float | None, unit: str, min_maf: float | None) -> None:
    if int(window) < 1:
        raise InvalidArgumentError(f"window must be at least 1 variant, got {window}")
    if window_bp is not None and window_bp < 0:
        raise InvalidArgumentError(f"window_bp must be non-negative, got {window_bp}")
    if unit not in LD_UNITS:
        raise InvalidArgumentError(f"unit must be one of {LD_UNITS}, got {unit!r}")
    if min_maf is not None and not 0 <= min_maf <= 0.5:
        raise InvalidArgumentError(f"min_maf must lie in [0, 0.5], got {min_maf}")


def _as_variant_chunked(data: Any, chunk_variants: int | None, window: int) -> dask.array.Array:
    """A dask array chunked along axis 0 only (other axes in one chunk)."""
    import dask.array as da

    whole = {axis: -1 for axis in range(1, np.ndim(data))}
    if isinstance(data, da.Array):
        if chunk_variants is not None:
            return data.rechunk({0: int(chunk_variants), **whole})
        return data.rechunk(whole)
    size = int(chunk_variants) if chunk_variants is not None else max(DEFAULT_CHUNK_VARIANTS, window)
    return da.from_array(np.asarray(data), chunks=(size, *(-1 for _ in whole)))


def _unit_values(block: np.ndarray, unit: str, ploidy: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Float64 values (variants, n) of one slab and its missing-call mask (None if complete)."""
    if unit == "haplotype":
        flat = block.reshape(block.shape[0], -1)
        missing = flat < 0
        values = (flat > 0).astype(np.float64)
    elif unit == "dosage":
        values = np.zeros(block.shape[:2])
        missing = np.zeros(block.shape[:2], dtype=bool)
        for k in range(block.shape[2]):  # slices: reductions over a length-2 axis are slow
            values += block[..., k] > 0
            missing |= block[..., k] < 0
    else:
        values = np.array(block, dtype=np.float64)
        missing = np.isnan(values)
    return values, (missing if missing.any() else None)


def _standardise_block(
    block: np.ndarray, *, unit: str, ploidy: int, min_maf: float | None, dtype: np.dtype,
    slab: int = 256,
) -> np.ndarray:
    """Centred, unit-norm rows of one chunk; monomorphic or filtered variants become zero rows.

    ``block`` is ``call_genotype`` (variants, samples, ploidy) for the haplotype and dosage
    units, or ``call_dosage`` (variants, samples) for the call_dosage unit. Rows are processed
    ``slab`` at a time in float64 to keep temporaries small.
    """
    n = block.shape[1] * (block.shape[2] if unit == "haplotype" else 1)
    frequency_scale = 1.0 if unit == "haplotype" else 1.0 / ploidy
    out = np.empty((block.shape[0], n), dtype=dtype)
    for a in range(0, block.shape[0], slab):
        values, missing = _unit_values(block[a:a + slab], unit, ploidy)
        if missing is None:
            n_called = np.full(len(values), n)
        else:
            values[missing] = 0.0
            n_called = n - missing.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = values.sum(axis=1) / n_called
        values -= mean[:, None]
        if missing is not None:
            values[missing] = 0.0  # mean imputation of missing calls
        norm = np.sqrt(np.einsum("ij,ij->i", values, values))
        keep = (n_called > 0) & (norm > _MIN_STD * np.sqrt(max(n, 1)))
        if min_maf is not None:
            frequency = np.clip(mean * frequency_scale, 0.0, 1.0)
            keep &= np.minimum(frequency, 1.0 - frequency) >= min_maf
        scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=keep)
        np.multiply(values, scale[:, None], out=out[a:a + slab], casting="unsafe")
    return out


def _halo(x: dask.array.Array, depth: int, side: Literal["after", "before"]) -> dask.array.Array:
    """Rows next to each chunk: block k holds ``x[end_k:end_k+depth]`` (or ``x[start_k-depth:start_k]``).

    Every block is one chunk (it may gather rows from several chunks of ``x``); the first or
    last block is empty. The result has as many blocks along axis 0 as ``x``, so it pairs block by
    block with ``x`` in ``map_blocks``.
    """
    import dask.array as da

    bounds = np.cumsum((0, *x.chunks[0]))
    m = int(bounds[-1])
    pieces = []
    for start, end in itertools.pairwise(bounds):
        lo, hi = (end, min(end + depth, m)) if side == "after" else (max(start - depth, 0), start)
        pieces.append(x[int(lo):int(hi)].rechunk({0: -1}))
    sizes = tuple(piece.shape[0] for piece in pieces)
    # concatenate drops empty pieces; an explicit rechunk puts the empty blocks back
    nonempty = [piece for piece in pieces if piece.shape[0]]
    joined = da.concatenate(nonempty, axis=0) if nonempty else x[:0]
    return joined.rechunk((sizes, *x.chunks[1:]))


def _band_block(
    z: np.ndarray, z_next: np.ndarray, meta: np.ndarray, meta_next: np.ndarray, *,
    window: int, window_bp: float | None, sub_block: int,
) -> np.ndarray:
    """r between each row of ``z`` and the ``window`` rows after it (NaN where undefined).

    ``meta`` holds (position, contig) per row; ``z_next``/``meta_next`` are the rows following
    the chunk (the halo, possibly shorter than ``window`` at the end of the data).
    """
    c, h = z.shape[0], z_next.shape[0]
    out = np.empty((c, window), dtype=z.dtype)
    for a in range(0, c, sub_block):
        b = min(a + sub_block, c)
        hi = min(b + window, c + h)  # partners are rows a .. hi-1 of [z; z_next]
        product = np.full((b - a, (b - a) + window), np.nan, dtype=z.dtype)
        inside = min(hi, c)
        product[:, :inside - a] = z[a:b] @ z[a:inside].T
        if hi > c:
            product[:, c - a:hi - a] = z[a:b] @ z_next[:hi - c].T
        # row i holds r(i, i + o) at column i + o: read the diagonals as a strided view
        s0, s1 = product.strides
        out[a:b] = np.lib.stride_tricks.as_strided(
            product[:, 1:], shape=(b - a, window), strides=(s0 + s1, s1), writeable=False)
    np.clip(out, -1.0, 1.0, out=out)

    if window_bp is not None:
        _check_sorted(np.concatenate([meta, meta_next]))
    # Masks: pairs past the end, monomorphic variants, other contigs, beyond window_bp.
    valid = np.einsum("ij,ij->i", z, z) > 0.5  # unit rows, or zero rows for monomorphic
    pad = window - h
    valid_p = np.concatenate([valid, np.einsum("ij,ij->i", z_next, z_next) > 0.5,
                              np.zeros(pad, bool)])
    position_p = np.concatenate([meta[:, 0], meta_next[:, 0], np.zeros(pad, meta.dtype)])
    contig_p = np.concatenate([meta[:, 1], meta_next[:, 1], np.full(pad, -1, meta.dtype)])
    partner = functools.partial(np.lib.stride_tricks.sliding_window_view, window_shape=window)
    bad = ~(valid[:, None] & partner(valid_p[1:])[:c])
    bad |= partner(contig_p[1:])[:c] != meta[:, 1:2]
    if window_bp is not None:
        bad |= (partner(position_p[1:])[:c] - meta[:, 0:1]) > window_bp
    out[bad] = np.nan
    return out


def compute_ld(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute`` with BLAS limited to one thread per task on a multi-threaded scheduler.

    Use it to compute anything built on :func:`ld_band` (or :func:`ld_scores`).

    dask threads and OpenBLAS threads multiply; on 2 busy cores the threaded scheduler with one
    BLAS thread per task took 2.1 s for the 25k-SNP benchmark band against 10.8 s with the BLAS
    default (benchmarks/ld_vs_plink.py panel).
    On the synchronous scheduler BLAS keeps its own threads.
    """
    import dask
    from threadpoolctl import threadpool_limits

    if dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded"):
        return dask.compute(*collections)
    with threadpool_limits(limits=1, user_api="blas"):
        return dask.compute(*collections)


def _check_sorted(meta: np.ndarray, first_index: int | None = None) -> None:
    """Refuse positions that decrease within a contig (``meta`` rows are position, contig)."""
    same_contig = meta[1:, 1] == meta[:-1, 1]
    backwards = np.flatnonzero(same_contig & (np.diff(meta[:, 0]) < 0))
    if len(backwards):
        k = int(backwards[0]) + 1
        where = "" if first_index is None else f"variant {first_index + k} "
        raise InvalidArgumentError(
            f"window_bp needs variants sorted by position within each contig; {where}"
            f"(position {meta[k, 0]}) comes after position {meta[k - 1, 0]}")


def _site_meta(ds: xr.Dataset, chunks: tuple[int, ...], window_bp: float | None) -> dask.array.Array:
    """(position, contig) per variant as an int64 dask array chunked like the variants.

    In-memory site columns are checked for sorting here; dask-backed ones in the band kernel.
    """
    import dask.array as da

    position = ds["variant_position"].data
    contig = ds["variant_contig"].data if "variant_contig" in ds else np.zeros(len(position), int)
    if isinstance(position, np.ndarray) and isinstance(contig, np.ndarray):
        meta = np.stack([position, contig], axis=1).astype(np.int64)
        if window_bp is not None:
            _check_sorted(meta, first_index=0)
        return da.from_array(meta, chunks=(chunks, 2))
    columns = [da.asarray(column).astype(np.int64) for column in (position, contig)]
    return da.stack(columns, axis=1).rechunk((chunks, 2))


def _prepare(
    ds: xr.Dataset, *, window: int, window_bp: float | None, unit: str,
    chunk_variants: int | None, min_maf: float | None, dtype: Any,
) -> tuple[dask.array.Array, int, dask.array.Array]:
    """Standardised values (dask, variants x n), n, and the (position, contig) array."""
    import dask.array as da

    _check_options(window, window_bp, unit, min_maf)
    source = "call_dosage" if unit == "call_dosage" else "call_genotype"
    variables.validate(ds, [source, "variant_position"])
    ploidy = int(ds.sizes.get("ploidy", 2))
    data = _as_variant_chunked(ds[source].data, chunk_variants, window)
    n = data.shape[1] * (ploidy if unit == "haplotype" else 1)
    kernel = functools.partial(_standardise_block, unit=unit, ploidy=ploidy, min_maf=min_maf,
                               dtype=np.dtype(dtype))
    drop = (2,) if data.ndim == 3 else ()
    chunks = (data.chunks[0], (n,))
    z = da.map_blocks(kernel, data, drop_axis=drop, chunks=chunks, dtype=np.dtype(dtype),
                      name="ld-standardise")
    return z, n, _site_meta(ds, z.chunks[0], window_bp)


def _band_from_standardised(
    z: dask.array.Array, meta: dask.array.Array, *,
    window: int, window_bp: float | None, sub_block: int,
) -> dask.array.Array:
    import dask.array as da

    kernel = functools.partial(_band_block, window=int(window), window_bp=window_bp,
                               sub_block=int(sub_block))
    return da.map_blocks(
        kernel, z, _halo(z, window, "after"), meta, _halo(meta, window, "after"),
        chunks=(z.chunks[0], (int(window),)), dtype=z.dtype, name="ld-band")


def _wrap_band(data: Any, ds: xr.Dataset, window: int, **attrs: Any) -> xr.DataArray:
    coords: dict[str, Any] = {
        "variants": np.arange(ds.sizes["variants"]),
        "offset": np.arange(1, int(window) + 1),
        "variant_position": ("variants", ds["variant_position"].data),
    }
    if "variant_id" in ds:
        coords["variant_id"] = ("variants", ds["variant_id"].data)
    return xr.DataArray(data, dims=("variants", "offset"), coords=coords, attrs=attrs)


# ------------------------------------------------------------------------------------ public API


def ld_band(
    ds: xr.Dataset,
    *,
    window: int = 1000,
    window_bp: float | None = None,
    unit: Unit = "haplotype",
    chunk_variants: int | None = None,
    min_maf: float | None = None,
    dtype: Any = np.float32,
    sub_block: int = SUB_BLOCK,
) -> xr.DataArray:
    """Pearson r between every variant and each of its next ``window`` variants (lazy).

    Parameters
    ----------
    ds
        Genotype dataset with ``call_genotype`` (or ``call_dosage``) and ``variant_position``;
        NumPy- or dask-backed. ``variant_contig`` separates contigs (pairs across contigs are
        NaN).
    window
        Number of following variants paired with each variant (offsets ``1..window``).
    window_bp
        If given, pairs more than ``window_bp`` base pairs apart are NaN (positions must then be
        sorted within each contig).
    unit
        ``"haplotype"``: alleles as 0/1 (alt > 0) per haplotype, n = ploidy x samples (phased
        data). ``"dosage"``: alternate-allele count per sample from ``call_genotype``,
        n = samples (the correlation ``plink --r2`` reports). ``"call_dosage"``: the
        ``call_dosage`` variable (for example imputed dosages), n = samples.
    chunk_variants
        Variants per dask chunk. ``None`` keeps a dask-backed dataset's chunks, or uses
        ``max(4096, window)`` for in-memory data. Each chunk is multiplied against a halo of the
        next ``window`` variants, so chunks at least as long as ``window`` are most efficient.
    min_maf
        If given, variants whose minor allele frequency (of called alleles) is below it are
        treated like monomorphic ones: all their pairs are NaN. Variants are never dropped, so
        indices match ``ds``.
    dtype
        Floating dtype of the matrix products and result (float32 by default; values are
        standardised in float64 first, so r is accurate to about 1e-6).
    sub_block
        Rows of a chunk multiplied at a time (cost about ``2 n m (sub_block + window)`` flops).

    Returns
    -------
    xarray.DataArray
        Dask-backed, dims ``("variants", "offset")``, chunked like the variants: the value at
        ``(i, o)`` is r between variants ``i`` and ``i + o``. NaN where ``i + o`` is past the
        end or on another contig, beyond ``window_bp``, or where either variant is monomorphic
        (or below ``min_maf``). Coordinates: ``variants`` (index 0..m-1), ``offset`` (1..window),
        ``variant_position`` (and ``variant_id`` if present) on ``variants``. Attribute
        ``n`` is the number of haplotypes or samples correlated.

    Notes
    -----
    Missing calls are replaced by the variant's mean (over called values) before
    standardising, so a variant's correlations use every haplotype or sample (in the dosage
    unit a sample with any missing allele counts as missing). plink instead drops, pair by
    pair, the samples missing at either variant, so the two differ when calls are missing. Nothing is
    computed until the result is (``.compute()``, ``.values``, a reduction); any dask
    scheduler works, including a ``dask.distributed`` client. On the threaded scheduler, dask
    threads and BLAS threads multiply: compute inside
    ``threadpoolctl.threadpool_limits(1, user_api="blas")`` for full speed (:func:`ld_pairs` and
    :func:`ld_decay` do this themselves).
    """
    z, n, meta = _prepare(ds, window=window, window_bp=window_bp, unit=unit,
                                      chunk_variants=chunk_variants, min_maf=min_maf, dtype=dtype)
    band = _band_from_standardised(z, meta, window=window, window_bp=window_bp,
                                   sub_block=sub_block)
    return _wrap_band(band, ds, window, n=n, unit=unit,
                      window_bp=np.nan if window_bp is None else window_bp).rename("ld_r")


def ld_r2_band(ds: xr.Dataset, **options: Any) -> xr.DataArray:
    """Squared correlations r^2 in the layout of :func:`ld_band` (same options), lazy."""
    r = ld_band(ds, **options)
    return (r**2).rename("ld_r2").assign_attrs(r.attrs)


def _block_pairs(r: np.ndarray, start: int, threshold_r2: float) -> pd.DataFrame:
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(r * r >= threshold_r2)
    values = r[rows, cols].astype(np.float64)
    i = rows.astype(np.int64) + start
    return pd.DataFrame({"i": i, "j": i + cols + 1, "r": values})


def ld_pairs(
    ds: xr.Dataset,
    *,
    window: int = 1000,
    window_bp: float | None = None,
    threshold_r2: float = 0.2,
    unit: Unit = "haplotype",
    chunk_variants: int | None = None,
    min_maf: float | None = None,
    dtype: Any = np.float32,
    sub_block: int = SUB_BLOCK,
) -> pd.DataFrame:
    """Variant pairs within the window whose r^2 reaches ``threshold_r2`` (computed).

    Parameters are those of :func:`ld_band`; ``threshold_r2 = 0`` lists every defined pair. The
    band is computed chunk by chunk and only the pairs kept are gathered, with one BLAS thread
    per task on a multi-threaded scheduler.

    Returns
    -------
    pandas.DataFrame
        One row per pair ``i < j``, sorted by ``i`` then ``j``: ``i``, ``j`` (variant indices),
        ``position_i``, ``position_j``, ``variant_id_i``, ``variant_id_j`` (if the dataset has
        ids), ``r`` and ``r2``.
    """
    import dask

    band = ld_band(ds, window=window, window_bp=window_bp, unit=unit,
                   chunk_variants=chunk_variants, min_maf=min_maf, dtype=dtype,
                   sub_block=sub_block)
    starts = np.cumsum((0, *band.data.chunks[0]))[:-1]
    blocks = band.data.to_delayed().ravel()
    parts = compute_ld(*[dask.delayed(_block_pairs)(block, int(start), float(threshold_r2))
                           for block, start in zip(blocks, starts, strict=True)])
    table = pd.concat(parts, ignore_index=True) if parts else _block_pairs(
        np.empty((0, window)), 0, threshold_r2)
    position = np.asarray(band["variant_position"].values)
    table.insert(2, "position_i", position[table["i"].to_numpy()])
    table.insert(3, "position_j", position[table["j"].to_numpy()])
    if "variant_id" in band.coords:
        ids = np.asarray(band["variant_id"].values)
        table.insert(4, "variant_id_i", ids[table["i"].to_numpy()])
        table.insert(5, "variant_id_j", ids[table["j"].to_numpy()])
    table["r2"] = table["r"] ** 2
    return table


def _valid_rows(z: np.ndarray) -> np.ndarray:
    """Standardised rows that are not zero (zero rows mark monomorphic or filtered variants)."""
    return np.einsum("ij,ij->i", z, z) > 0.5


def _adjusted_r2(r: np.ndarray, n: int, unbiased: bool) -> np.ndarray:
    r2 = r.astype(np.float64) ** 2
    if unbiased:
        r2 = r2 - (1.0 - r2) / (n - 2)
    return r2


def _right_sums(r: np.ndarray, *, n: int, unbiased: bool) -> np.ndarray:
    return np.nansum(_adjusted_r2(r, n, unbiased), axis=1)


def _left_sums(r: np.ndarray, r_before: np.ndarray, *, n: int, unbiased: bool) -> np.ndarray:
    """Sum of r~^2 over the pairs (i, j) with i < j for each variant j of the chunk."""
    c = r.shape[0]
    rows = np.concatenate([r_before, r]) if len(r_before) else r
    r2 = np.nan_to_num(_adjusted_r2(rows, n, unbiased), nan=0.0)
    target = (np.arange(rows.shape[0]) - len(r_before))[:, None] + np.arange(1, r.shape[1] + 1)
    inside = (target >= 0) & (target < c)
    return np.bincount(target[inside], weights=r2[inside], minlength=c)


def ld_scores(
    ds: xr.Dataset,
    *,
    window: int = 1000,
    window_bp: float | None = None,
    unbiased: bool = True,
    unit: Unit = "haplotype",
    chunk_variants: int | None = None,
    min_maf: float | None = None,
    dtype: Any = np.float32,
    sub_block: int = SUB_BLOCK,
) -> xr.DataArray:
    """LD score of every variant: the sum of r^2 with its neighbours on both sides (lazy).

    ``l_j = 1 + sum_k r~^2_jk`` over variants ``k != j`` at most ``window`` variants (and, if
    given, ``window_bp`` base pairs) away on either side. The leading 1 is ``r^2_jj``, which LD
    score regression includes (ldsc's ``ldscore.py``). With ``unbiased=True`` each r^2 is
    replaced by the estimator ``r~^2 = r^2 - (1 - r^2) / (n - 2)`` (``_l2_unbiased`` in
    ``ldscore/ldscore.py`` of ``bulik/ldsc``), where ``n`` is the number of haplotypes
    (haplotype unit) or samples (dosage units); it can be negative for unlinked pairs.

    Parameters
    ----------
    ds, window, window_bp, unit, chunk_variants, min_maf, dtype, sub_block
        As for :func:`ld_band`.
    unbiased
        Use the unbiased r~^2 (default) rather than the sample r^2.

    Returns
    -------
    xarray.DataArray
        float64, dims ``("variants",)``, dask-backed, with the coordinates of :func:`ld_band`.
        NaN for monomorphic variants (and those below ``min_maf``).
    """
    import dask.array as da

    z, n, meta = _prepare(ds, window=window, window_bp=window_bp, unit=unit,
                                      chunk_variants=chunk_variants, min_maf=min_maf, dtype=dtype)
    if unbiased and n <= 2:
        raise InvalidArgumentError(f"the unbiased r^2 needs more than 2 haplotypes or samples, got {n}")
    band = _band_from_standardised(z, meta, window=window, window_bp=window_bp,
                                   sub_block=sub_block)
    right = da.map_blocks(functools.partial(_right_sums, n=n, unbiased=unbiased), band,
                          drop_axis=1, dtype=np.float64, name="ld-score-right")
    left = da.map_blocks(functools.partial(_left_sums, n=n, unbiased=unbiased), band,
                         _halo(band, window, "before"), drop_axis=1,
                         chunks=(band.chunks[0],), dtype=np.float64, name="ld-score-left")
    valid = da.map_blocks(_valid_rows, z, drop_axis=1, dtype=bool, name="ld-score-valid")
    scores = da.where(valid, 1.0 + right + left, np.nan)
    template = _wrap_band(band, ds, window)
    return xr.DataArray(
        scores, dims=("variants",),
        coords={k: v for k, v in template.coords.items() if k != "offset"},
        attrs={"n": n, "unit": unit, "unbiased": unbiased, "window": int(window)},
        name="ld_score")


def _decay_block(
    r: np.ndarray, meta: np.ndarray, meta_next: np.ndarray, *, edges: np.ndarray
) -> np.ndarray:
    """Per-bin sums of r^2 and pair counts for one chunk, shape (1, 2 * bins)."""
    c, window = r.shape
    position = np.concatenate([meta[:, 0], meta_next[:, 0]])
    position = np.concatenate([position, np.zeros(c + window - len(position), position.dtype)])
    partner = np.lib.stride_tricks.sliding_window_view(position[1:], window)[:c]
    distance = (partner - meta[:, 0:1]).astype(np.float64)
    r2 = r.astype(np.float64) ** 2
    ok = ~np.isnan(r2)
    index = np.searchsorted(edges, distance[ok], side="right") - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    sums = np.bincount(index[inside], weights=r2[ok][inside], minlength=len(edges) - 1)
    counts = np.bincount(index[inside], minlength=len(edges) - 1)
    return np.concatenate([sums, counts])[None, :]


def ld_decay(
    ds: xr.Dataset,
    *,
    max_offset: int = 200,
    distance_bins: Sequence[float] = (0, 1e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6),
    unit: Unit = "haplotype",
    chunk_variants: int | None = None,
    dtype: Any = np.float32,
) -> pd.DataFrame:
    """Mean r^2 between variant pairs, binned by distance in base pairs (computed).

    Pairs are every variant with each of its next ``max_offset`` neighbours (the band of
    :func:`ld_band`); pairs involving a monomorphic variant are skipped and missing alleles are
    mean-imputed. Bins are left-closed: ``[edge_k, edge_k+1)``.

    Returns
    -------
    pandas.DataFrame
        ``distance_bin`` (left edge), ``distance_mid``, ``mean_r2``, ``n_pairs``.
    """
    import dask.array as da

    edges = np.asarray(distance_bins, dtype=float)
    n_bins = len(edges) - 1
    if n_bins < 1:
        raise InvalidArgumentError("distance_bins needs at least two edges")
    window = max(1, min(int(max_offset), ds.sizes["variants"] - 1))
    band = ld_band(ds, window=window, unit=unit, chunk_variants=chunk_variants, dtype=dtype)
    meta = _site_meta(ds, band.data.chunks[0], None)
    per_block = da.map_blocks(
        functools.partial(_decay_block, edges=edges), band.data, meta,
        _halo(meta, window, "after"),
        chunks=((1,) * band.data.numblocks[0], (2 * n_bins,)), dtype=np.float64,
        name="ld-decay")
    (totals,) = compute_ld(per_block.sum(axis=0))
    sums, counts = totals[:n_bins], totals[n_bins:].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return pd.DataFrame({
        "distance_bin": edges[:-1],
        "distance_mid": (edges[:-1] + edges[1:]) / 2,
        "mean_r2": mean,
        "n_pairs": counts,
    })
