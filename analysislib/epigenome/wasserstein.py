"""Peak-shape differences between two tissues: 1-D Wasserstein distances (eDICE Fig. 4a–c).

Follows eDICE (Hawkins-Hooker et al., *Nat Commun* 2023), "Differential peak analysis using
imputed epigenomic tracks" and Fig. 4c: for every peak of a peak set (one tissue's enriched
peaks, or a consensus set), the signal profile of tissue A and of tissue B within the peak is
treated as a distribution over genomic position, the Wasserstein (earth mover's) distance between
the two is computed once on observed and once on imputed tracks, and the two sets of distances
are compared across peaks. The paper does not give the procedure in detail; the choices made
here are:

Profile
    The bins overlapping the peak ``[start, end)`` (half-open, bp) on the peak's chromosome, in
    genomic order. Positions are bin offsets ``0, 1, ..., length - 1`` from the peak's first bin.
Scale
    The raw −log10 p scale. Tracks on the arcsinh scale (``attrs["scale"] == "arcsinh"``) are
    mapped back with ``sinh`` first, since arcsinh compresses the peak summit and would change
    the shape being compared.
Normalisation
    Negative values are clipped to 0 (−log10 p is non-negative, but imputations can dip below
    0) and missing values (NaN) count as 0; each profile is then divided by its total, so that
    only the shape is compared and the peak height (compared by the differential-count analysis
    in :mod:`analysislib.epigenome.differential`) is removed.
Empty profiles
    A profile whose clipped total is 0 has no distribution; its distance is NaN (never a silent
    0 or a uniform fill-in). :func:`distance_agreement` and :func:`highlight_peaks` skip NaN.
Distance
    W1 = Σ_i |F_A(i) − F_B(i)| over the offsets, with F the cumulative normalised profile;
    the same as ``scipy.stats.wasserstein_distance(pos, pos, a, b)``. Units are bins by
    default, or bp with ``unit="bp"`` (bins × bin size).

Ragged peaks
    Peaks differ in length. :func:`peak_profiles` gathers profiles into a dense
    ``(peak, offset)`` array padded with zeros, with a ``peak_length`` coordinate; zero padding
    after the last bin leaves W1 unchanged (both cumulative profiles already equal 1 there).
    :func:`wasserstein_distances` chunks by peak instead: the peak table is cut, in its own
    order, into chunks of ``chunk_size`` peaks, and :func:`xarray.apply_ufunc`
    (``dask="parallelized"``) runs one task per chunk that gathers the chunk's profiles from
    the tracks and computes W1. Inside a task, peaks are grouped into length buckets (powers of
    two in bins) and each bucket is padded only to its own longest peak (at most twice the
    shortest), so a set mixing 300 bp promoters with 20 kb gene-body domains does not pad
    everything to 20 kb, and only one chunk's profiles are in memory at a time. Each
    chromosome of each track is one dask chunk shared by all tasks of that chromosome (a
    worker holds ≈ 4–8 bytes per bin of it: 40–80 MB for chr1 at 25 bp), which keeps the graph
    to a few keys per peak chunk. Peak sets spanning several chromosomes are computed per
    chromosome and put back in the table's order. Everything stays lazy until ``.compute()``,
    which runs on the threaded scheduler by default or on a ``dask.distributed`` client when
    one is active. ``benchmarks/wasserstein_throughput.py`` measures the rates.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.errors import InvalidArgumentError

__all__ = [
    "DistanceAgreement",
    "distance_agreement",
    "highlight_peaks",
    "normalise_profiles",
    "peak_bin_ranges",
    "peak_profiles",
    "peak_shape_distances",
    "wasserstein_1d",
    "wasserstein_distances",
]

PEAK_COLUMNS = ("chrom", "start", "end")


# --------------------------------------------------------------------------- numpy kernels


def normalise_profiles(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip negatives and NaN to 0 and scale each profile (last axis) to unit mass.

    Parameters
    ----------
    profiles
        Array ``(..., offset)`` of non-normalised signal on the −log10 p scale.

    Returns
    -------
    weights, empty
        ``weights`` has the input's shape and sums to 1 along the last axis where ``empty`` is
        False; rows with zero total mass (``empty``) are all 0.
    """
    x = np.asarray(profiles, dtype=np.float64)
    x = np.where(np.isfinite(x) & (x > 0), x, 0.0)
    total = x.sum(axis=-1, keepdims=True)
    empty = total[..., 0] <= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total > 0, x / np.where(total > 0, total, 1.0), 0.0)
    return weights, empty


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between profiles on the same unit-spaced grid (last axis).

    Parameters
    ----------
    a, b
        Arrays ``(..., offset)`` of non-negative signal (not necessarily normalised); they are
        normalised with :func:`normalise_profiles`. Trailing zero padding does not change the
        result.

    Returns
    -------
    numpy.ndarray
        Shape ``a.shape[:-1]``, in grid units; NaN where either profile has zero mass.

    Examples
    --------
    >>> float(wasserstein_1d(np.array([1.0, 0, 0]), np.array([0, 0, 2.0])))
    2.0
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InvalidArgumentError(f"profiles have different shapes {a.shape} and {b.shape}")
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    wa, empty_a = normalise_profiles(a)
    wb, empty_b = normalise_profiles(b)
    diff = np.cumsum(wa - wb, axis=-1)[..., :-1]
    out = np.abs(diff).sum(axis=-1)
    return np.where(empty_a | empty_b, np.nan, out)


# --------------------------------------------------------------------------- peaks -> bins


def _check_peaks(peaks: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PEAK_COLUMNS if c not in peaks.columns]
    if missing:
        raise InvalidArgumentError(f"peak table lacks columns {missing}; it needs {list(PEAK_COLUMNS)}")
    bad = np.flatnonzero(peaks["end"].to_numpy() <= peaks["start"].to_numpy())
    if bad.size:
        row = peaks.iloc[bad[0]]
        raise InvalidArgumentError(f"peak {bad[0]} ({row['chrom']}:{row['start']}-{row['end']}) has "
                         "end <= start")
    return peaks


def _bin_coords(track: xr.DataArray) -> tuple[np.ndarray, np.ndarray, int]:
    if "bin" not in track.dims:
        raise InvalidArgumentError(f"track has no 'bin' dimension (dims {track.dims})")
    for name in ("bin_start", "bin_chrom"):
        if name not in track.coords:
            raise InvalidArgumentError(f"track has no {name!r} coordinate along 'bin'")
    starts = np.asarray(track["bin_start"].values, dtype=np.int64)
    chroms = np.asarray(track["bin_chrom"].values).astype(str)
    bin_size = track.attrs.get("bin_size")
    if bin_size is None:
        steps = np.diff(starts)[chroms[1:] == chroms[:-1]]
        steps = steps[steps > 0]
        if steps.size == 0:
            raise InvalidArgumentError("cannot infer the bin size: set attrs['bin_size'] on the track")
        bin_size = int(steps.min())
    return starts, chroms, int(bin_size)


def peak_bin_ranges(track: xr.DataArray, peaks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """First bin index and number of bins of each peak, from the track's coordinates.

    A bin belongs to a peak when it overlaps ``[start, end)``. The bins of one chromosome must
    be sorted by start; a peak must cover consecutive, gap-free bins.

    Parameters
    ----------
    track
        DataArray with a ``bin`` dimension and ``bin_start``/``bin_chrom`` coordinates.
    peaks
        Table with ``chrom``, ``start``, ``end`` (bp, half-open).

    Returns
    -------
    first, length
        int64 arrays, one entry per peak.

    Raises
    ------
    ValueError
        Naming the first peak whose chromosome is absent, which lies outside the binned
        region, or which spans a gap between bins.
    """
    _check_peaks(peaks)
    starts, chroms, bin_size = _bin_coords(track)
    first = np.empty(len(peaks), dtype=np.int64)
    length = np.empty(len(peaks), dtype=np.int64)
    peak_chrom = peaks["chrom"].astype(str).to_numpy()
    peak_start = peaks["start"].to_numpy(dtype=np.int64)
    peak_end = peaks["end"].to_numpy(dtype=np.int64)
    for chrom in pd.unique(peak_chrom):
        rows = np.flatnonzero(peak_chrom == chrom)
        on = np.flatnonzero(chroms == chrom)
        if on.size == 0:
            raise InvalidArgumentError(f"peak {rows[0]} is on {chrom!r}, which the track does not cover")
        s = starts[on]
        if np.any(np.diff(s) <= 0):
            raise InvalidArgumentError(f"bins of {chrom!r} are not sorted by bin_start")
        lo = np.searchsorted(s + bin_size, peak_start[rows], side="right")
        hi = np.searchsorted(s, peak_end[rows], side="left")
        n = hi - lo
        empty = np.flatnonzero(n <= 0)
        if empty.size:
            r = rows[empty[0]]
            raise InvalidArgumentError(f"peak {r} ({chrom}:{peak_start[r]}-{peak_end[r]}) overlaps no bin")
        gap = np.flatnonzero(s[hi - 1] - s[lo] != (n - 1) * bin_size)
        if gap.size:
            r = rows[gap[0]]
            raise InvalidArgumentError(f"peak {r} ({chrom}:{peak_start[r]}-{peak_end[r]}) spans a gap "
                             "between bins")
        first[rows] = on[lo]
        length[rows] = n
    return first, length


def _as_neglog10p(track: xr.DataArray) -> xr.DataArray:
    scale = track.attrs.get("scale", "neglog10p")
    if scale == "arcsinh":
        out = np.sinh(track)
        out.attrs = {**track.attrs, "scale": "neglog10p"}
        return out
    if scale != "neglog10p":
        raise InvalidArgumentError(f"unknown scale {scale!r}; expected 'neglog10p' or 'arcsinh'")
    return track


def peak_profiles(
    track: xr.DataArray,
    peaks: pd.DataFrame,
    *,
    width: int | None = None,
    ranges: tuple[np.ndarray, np.ndarray] | None = None,
) -> xr.DataArray:
    """Gather each peak's signal into a dense ``(..., peak, offset)`` array, zero-padded.

    Parameters
    ----------
    track
        Signal over ``bin`` (other dimensions such as ``cell`` are kept), numpy- or
        dask-backed; arcsinh tracks are converted to −log10 p.
    peaks
        Table with ``chrom``, ``start``, ``end``.
    width
        Number of offsets; default the longest peak. Peaks longer than ``width`` raise.
    ranges
        Precomputed :func:`peak_bin_ranges` output.

    Returns
    -------
    xarray.DataArray
        Values on the −log10 p scale with dims ``(..., peak, offset)``, coordinates ``peak``
        (the table's index), ``peak_length`` (bins) and ``offset``; positions past a peak's
        end hold 0. Lazy if ``track`` is dask-backed.
    """
    first, length = peak_bin_ranges(track, peaks) if ranges is None else ranges
    width = int(length.max()) if width is None else int(width)
    if length.size and length.max() > width:
        raise InvalidArgumentError(f"a peak has {int(length.max())} bins, more than width={width}")
    offset = np.arange(width, dtype=np.int64)
    inside = offset[None, :] < length[:, None]
    index = np.where(inside, first[:, None] + offset[None, :], first[:, None])
    track = _as_neglog10p(track)
    gathered = track.drop_vars([c for c in track.coords if "bin" in track[c].dims]).isel(
        bin=xr.DataArray(index, dims=("peak", "offset")))
    out = gathered.where(xr.DataArray(inside, dims=("peak", "offset")), 0.0)
    out = out.assign_coords(peak=peaks.index.to_numpy(), offset=offset,
                            peak_length=("peak", length))
    out.attrs = {**track.attrs, "scale": "neglog10p"}
    return out


# --------------------------------------------------------------------------- distances


def _length_buckets(length: np.ndarray) -> dict[int, np.ndarray]:
    """Group peak positions by ``ceil(log2(length))``: each bucket pads to ≤ 2× its shortest."""
    key = np.ceil(np.log2(np.maximum(length, 1))).astype(np.int64)
    return {int(k): np.flatnonzero(key == k) for k in np.unique(key)}


def wasserstein_distances(
    track_a: xr.DataArray,
    track_b: xr.DataArray,
    peaks: pd.DataFrame,
    *,
    chunk_size: int = 4096,
    unit: str = "bins",
) -> xr.DataArray:
    """Lazy W1 distance between two tracks' normalised profiles in each peak.

    Parameters
    ----------
    track_a, track_b
        1-D signal over ``bin`` (same bins; −log10 p or arcsinh scale, from ``attrs``), for
        example the observed tracks of two tissues for one assay.
    peaks
        Table with ``chrom``, ``start``, ``end`` (bp, half-open), e.g. from
        :func:`analysislib.epigenome.peaks.call_peaks`.
    chunk_size
        Peaks per dask chunk.
    unit
        ``"bins"`` or ``"bp"``.

    Returns
    -------
    xarray.DataArray
        float64 over ``peak`` (the table's index, same order), dask-backed, with the
        ``peak_length`` coordinate (bins); NaN where either profile has no mass. See the module
        docstring for the normalisation. The bin coordinates (``bin_start``, ``bin_chrom``)
        are read when the graph is built, to place the peaks; the signal itself stays lazy.

    Examples
    --------
    >>> import pandas as pd
    >>> coords = {"bin_start": ("bin", [0, 25, 50, 75]), "bin_chrom": ("bin", ["c"] * 4)}
    >>> a = xr.DataArray([4.0, 0, 0, 0], dims="bin", coords=coords)
    >>> b = xr.DataArray([0.0, 0, 3, 0], dims="bin", coords=coords)
    >>> peaks = pd.DataFrame({"chrom": ["c"], "start": [0], "end": [100]})
    >>> wasserstein_distances(a, b, peaks).values.tolist()
    [2.0]
    """
    if unit not in ("bins", "bp"):
        raise InvalidArgumentError(f"unit must be 'bins' or 'bp', got {unit!r}")
    if chunk_size < 1:
        raise InvalidArgumentError("chunk_size must be positive")
    for name, track in (("track_a", track_a), ("track_b", track_b)):
        if track.dims != ("bin",):
            raise InvalidArgumentError(f"{name} must be 1-D over 'bin', got dims {track.dims}")
    if track_a.sizes["bin"] != track_b.sizes["bin"] or not np.array_equal(
            track_a["bin_start"].values, track_b["bin_start"].values):
        raise InvalidArgumentError("track_a and track_b are not on the same bins")
    first, length = peak_bin_ranges(track_a, peaks)
    _, chroms, bin_size = _bin_coords(track_a)
    factor = float(bin_size) if unit == "bp" else 1.0
    labels = {"peak": peaks.index.to_numpy(), "peak_length": ("peak", length)}
    peak_chrom = chroms[first] if first.size else np.zeros(0, dtype=str)
    pieces, order = [], []
    for chrom in pd.unique(peak_chrom):
        rows = np.flatnonzero(peak_chrom == chrom)
        on = np.flatnonzero(chroms == chrom)
        lo, hi = int(on.min()), int(on.max()) + 1
        # One chromosome of each track is one dask chunk, shared by every peak chunk's task.
        tracks = [_as_neglog10p(t).isel(bin=slice(lo, hi)).drop_vars(
            [c for c in t.coords]).chunk({"bin": -1}) for t in (track_a, track_b)]
        starts = xr.DataArray(first[rows] - lo, dims="peak").chunk({"peak": chunk_size})
        lengths = xr.DataArray(length[rows], dims="peak").chunk({"peak": chunk_size})
        pieces.append(xr.apply_ufunc(
            _chunk_distances, starts, lengths, tracks[0], tracks[1],
            input_core_dims=[[], [], ["bin"], ["bin"]], kwargs={"factor": factor},
            dask="parallelized", output_dtypes=[np.float64]))
        order.append(rows)
    if not pieces:
        out = xr.DataArray(np.zeros(0), dims="peak", coords=labels)
    elif len(pieces) == 1:
        out = pieces[0]
    else:
        # Back to the table's order: one float per peak, so a single-chunk permutation is
        # cheap and avoids the many small chunks of an out-of-order dask take.
        joined = xr.concat(pieces, dim="peak").chunk({"peak": -1})
        inverse = np.argsort(np.concatenate(order), kind="stable")
        out = xr.apply_ufunc(lambda x: x[..., inverse], joined, input_core_dims=[["peak"]],
                             output_core_dims=[["peak"]], dask="parallelized",
                             output_dtypes=[np.float64]).chunk({"peak": chunk_size})
    out = out.assign_coords(labels)
    out.name = "wasserstein"
    out.attrs = {"unit": unit, "bin_size": bin_size,
                 "normalisation": "clip<0 and NaN to 0, unit mass on the -log10 p scale"}
    return out


def _chunk_distances(first: np.ndarray, length: np.ndarray, a: np.ndarray, b: np.ndarray,
                     factor: float = 1.0) -> np.ndarray:
    """Distances of one chunk of peaks: gather, pad per length bucket, W1 (numpy)."""
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    out = np.empty(first.shape, dtype=np.float64)
    for rows in _length_buckets(length).values():
        width = int(length[rows].max())
        offset = np.arange(width)
        inside = offset[None, :] < length[rows, None]
        index = np.where(inside, first[rows, None] + offset[None, :], first[rows, None])
        out[rows] = wasserstein_1d(np.where(inside, a[index], 0.0),
                                   np.where(inside, b[index], 0.0))
    return out * factor


def _track(obj: xr.Dataset | xr.DataArray, cell: str, assay: str | None) -> xr.DataArray:
    signal = obj["signal"] if isinstance(obj, xr.Dataset) else obj
    scale = obj.attrs.get("scale", signal.attrs.get("scale", "neglog10p"))
    bin_size = obj.attrs.get("bin_size", signal.attrs.get("bin_size"))
    sel: dict[Hashable, Any] = {"cell": cell}
    if assay is not None:
        sel["assay"] = assay
    elif "assay" in signal.dims:
        raise InvalidArgumentError("signal has an 'assay' dimension: pass assay=")
    try:
        out = signal.sel(sel)
    except KeyError as err:
        raise KeyError(f"track {sel} is not in the signal") from err
    out = out.drop_vars([c for c in out.coords if c not in ("bin_start", "bin_chrom", "bin")])
    out.attrs = {**out.attrs, "scale": scale}
    if bin_size is not None:
        out.attrs["bin_size"] = int(bin_size)
    return out


def peak_shape_distances(
    observed: xr.Dataset | xr.DataArray,
    imputed: xr.Dataset | xr.DataArray,
    peaks: pd.DataFrame,
    *,
    cells: Sequence[str],
    assay: str | None = None,
    chunk_size: int = 4096,
    unit: str = "bins",
) -> xr.Dataset:
    """Observed and imputed W1 peak-shape distances between two tissues (eDICE Fig. 4c).

    Parameters
    ----------
    observed, imputed
        Signal datasets (or ``signal`` DataArrays) with dims ``(cell, assay, bin)`` or
        ``(cell, bin)``; either scale (from ``attrs["scale"]``).
    peaks
        The peak set, e.g. the enriched peaks of ``cells[0]`` (as in the paper) or a consensus.
    cells
        The two tissues ``(A, B)``.
    assay
        Assay to compare when the signal has an ``assay`` dimension.
    chunk_size, unit
        As in :func:`wasserstein_distances`.

    Returns
    -------
    xarray.Dataset
        Lazy variables ``observed`` and ``imputed`` over ``peak``, plus the peak table's
        ``chrom``, ``start`` and ``end`` as coordinates.
    """
    if len(cells) != 2:
        raise InvalidArgumentError(f"cells must name two tissues, got {list(cells)}")
    a, b = cells
    out = xr.Dataset({
        kind: wasserstein_distances(_track(src, a, assay), _track(src, b, assay), peaks,
                                    chunk_size=chunk_size, unit=unit)
        for kind, src in (("observed", observed), ("imputed", imputed))})
    out = out.assign_coords({c: ("peak", peaks[c].to_numpy()) for c in PEAK_COLUMNS})
    out.attrs = {"cells": list(cells), "assay": assay or "", "unit": unit}
    return out


# --------------------------------------------------------------------------- Figure 4c


@dataclass(frozen=True)
class DistanceAgreement:
    """Agreement of observed and imputed peak-shape distances across peaks.

    Attributes
    ----------
    n
        Peaks with both distances finite.
    pearson, spearman
        Correlation coefficients across those peaks.
    pearson_p, spearman_p
        Their two-sided p-values (scipy).
    """

    n: int
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float


def distance_agreement(distances: xr.Dataset) -> DistanceAgreement:
    """Pearson and Spearman correlation of observed vs imputed distances (NaN peaks dropped).

    Parameters
    ----------
    distances
        Output of :func:`peak_shape_distances` (computed or lazy).
    """
    from scipy import stats

    x = np.asarray(distances["observed"].values, dtype=np.float64)
    y = np.asarray(distances["imputed"].values, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3:
        return DistanceAgreement(n, np.nan, np.nan, np.nan, np.nan)
    pr = stats.pearsonr(x[ok], y[ok])
    sr = stats.spearmanr(x[ok], y[ok])
    return DistanceAgreement(n, float(pr.statistic), float(pr.pvalue),
                             float(sr.statistic), float(sr.pvalue))


def highlight_peaks(
    distances: xr.Dataset,
    *,
    n_specific: int = 1,
    n_shared: int = 1,
    by: str = "observed",
    min_length: int = 1,
) -> pd.DataFrame:
    """Pick example peaks to show beside Fig. 4c, as the paper's panels a and b.

    Tissue-specific shapes (panel b) are the peaks with the largest distance; non-specific
    ones (panel a) have the smallest distance. The paper does not say how its examples were
    chosen, so this is the rule used here.

    Parameters
    ----------
    distances
        Output of :func:`peak_shape_distances`.
    n_specific, n_shared
        How many of each kind.
    by
        ``"observed"`` or ``"imputed"``: which distance ranks the peaks.
    min_length
        Skip peaks shorter than this many bins (one-bin peaks always have distance 0).

    Returns
    -------
    pandas.DataFrame
        Columns ``peak``, ``chrom``, ``start``, ``end``, ``observed``, ``imputed``, ``kind``
        (``"specific"`` or ``"shared"``), specific peaks first, by decreasing distance.
    """
    if by not in ("observed", "imputed"):
        raise InvalidArgumentError(f"by must be 'observed' or 'imputed', got {by!r}")
    table = pd.DataFrame({
        "peak": distances["peak"].values,
        **{c: distances[c].values for c in PEAK_COLUMNS if c in distances.coords},
        "observed": np.asarray(distances["observed"].values, dtype=np.float64),
        "imputed": np.asarray(distances["imputed"].values, dtype=np.float64),
        "length": distances["peak_length"].values,
    })
    table = table[np.isfinite(table["observed"]) & np.isfinite(table["imputed"])
                  & (table["length"] >= min_length)]
    ranked = table.sort_values(by, ascending=False, kind="stable")
    specific = ranked.head(n_specific).assign(kind="specific")
    rest = ranked.iloc[n_specific:]
    shared = rest.tail(n_shared).iloc[::-1].assign(kind="shared") if n_shared else rest.head(0)
    return pd.concat([specific, shared], ignore_index=True).drop(columns="length")
