"""Peak calling on −log10 p signal tracks (MACS2 ``bdgpeakcall`` rule), consensus peaks, peak masks.

eDICE (Methods, "Enrichment detection and evaluation metrics") calls peaks on observed and imputed
tracks with MACS2 at a cut-off of 0.01 and calls the 25 bp bins inside them "enriched" or
"foreground" bins. ``macs2 bdgpeakcall`` works directly on a −log10 p bedGraph such as a
Roadmap ``pval.signal`` track; its rule (``BedGraph.call_peaks`` in ``macs3-project/MACS``) is:

1. take the bedGraph regions whose value is ``>= cutoff``;
2. join consecutive such regions when the gap between the end of one and the start of the next is
   ``<= max_gap`` bp;
3. keep joined regions at least ``min_length`` bp long;
4. the peak score is the largest value in the peak; the summit is the midpoint
   ``floor((start + end) / 2)`` of the region holding that value, and when several regions share
   it, the middle one (the lower middle for an even count).

Regions are runs of *equal* values: MACS stores a bedGraph as a step function and merges adjacent
records with the same value, so a plateau of several bins is one region and its summit is the
plateau's midpoint. :func:`call_peaks` implements this rule in NumPy (``method="numpy"``, the
default: fast, no dependency) and also drives the real tool (``method="macs2"``, Debian package
``macs``); the tests check that both give identical peaks.

The paper ran MACS2 on the reads (one-sided Poisson test, Benjamini-Hochberg, cut-off 0.01);
reads are not part of our data, so peaks are called on the −log10 p signal tracks themselves,
which is what ``bdgpeakcall`` is made for. The same rule is applied to observed and
imputed tracks.

Choices the paper leaves open (documented here, used everywhere):

- Defaults are ``cutoff=2.0`` (p < 0.01, the paper's cut-off read as a −log10 p threshold),
  ``min_length=200`` bp and ``max_gap=30`` bp (the ``bdgpeakcall`` defaults; with 25 bp bins a
  gap of one bin is bridged, two are not).
- Tracks on the arcsinh scale are converted with ``sinh`` first.
- Bins with NaN, and stretches of a chromosome not covered by any bin (before the first bin or
  between bins), count as value 0, i.e. below any positive cut-off. MACS itself fills the start
  of a chromosome with 0 but silently stretches the next record over any later gap in a bedGraph
  (its reader uses ``add_loc``, which ignores record starts); the ``macs2`` path therefore writes
  a gap-free bedGraph with explicit zero bins, which requires bins on a regular grid.
- The cut-off must be positive: MACS treats a running maximum of 0 as "unset" when it looks for
  the summit, which only matters for non-positive cut-offs.

:func:`consensus_peaks` merges peak sets from replicates or tissues the way DiffBind's consensus
peakset does (``minOverlap``): overlapping peaks are merged and a merged peak is kept when it
holds peaks from at least ``min_overlap`` of the sets.
:func:`peak_mask` marks the bins a peak set covers (the foreground bins of the metrics).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.tensor import signal_scale, to_neglog10p
from analysislib.errors import ExternalToolError, InputFormatError, InvalidArgumentError

__all__ = [
    "DEFAULT_CUTOFF",
    "DEFAULT_MAX_GAP",
    "DEFAULT_MIN_LENGTH",
    "PEAK_COLUMNS",
    "call_peaks",
    "consensus_peaks",
    "matched_cutoff",
    "peak_mask",
    "read_narrowpeak",
]

#: −log10 p cut-off (p < 0.01, the eDICE paper's cut-off).
DEFAULT_CUTOFF = 2.0
#: Minimum peak length in bp (``bdgpeakcall -l`` default).
DEFAULT_MIN_LENGTH = 200
#: Largest gap in bp bridged inside a peak (``bdgpeakcall -g`` default).
DEFAULT_MAX_GAP = 30
#: Columns of every peak table returned here.
PEAK_COLUMNS = ("chrom", "start", "end", "length", "summit", "score")


def _empty_peaks() -> pd.DataFrame:
    return pd.DataFrame({
        "chrom": pd.Series(dtype=str), "start": pd.Series(dtype=np.int64),
        "end": pd.Series(dtype=np.int64), "length": pd.Series(dtype=np.int64),
        "summit": pd.Series(dtype=np.int64), "score": pd.Series(dtype=np.float64)})


def _track_arrays(track: xr.DataArray, bin_size: int | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Values on the −log10 p scale (float32, NaN -> 0), chromosomes, starts and bin size."""
    if not isinstance(track, xr.DataArray):
        raise TypeError(f"track must be an xarray.DataArray over 'bin', got {type(track).__name__}")
    if track.dims != ("bin",):
        raise InvalidArgumentError(f"track must have the single dimension 'bin', got dims {track.dims}; "
                         "select one cell and assay first")
    if "bin_start" not in track.coords:
        raise InvalidArgumentError("track has no 'bin_start' coordinate (0-based bin starts in bp)")
    signal_scale(track)  # raises when the scale is unknown
    values = np.asarray(to_neglog10p(track).values, dtype=np.float32)
    values = np.where(np.isfinite(values), values, np.float32(0.0))
    starts = np.asarray(track["bin_start"].values, dtype=np.int64)
    if "bin_chrom" in track.coords:
        chroms = np.asarray(track["bin_chrom"].values).astype(str)
    else:
        chroms = np.full(values.size, "chr1")
    if bin_size is None:
        bin_size = track.attrs.get("bin_size")
    if bin_size is None:
        steps = np.diff(starts)
        positive = steps[steps > 0]
        bin_size = int(positive.min()) if positive.size else 25
    bin_size = int(bin_size)
    if bin_size <= 0:
        raise InvalidArgumentError(f"bin_size must be positive, got {bin_size}")
    if np.any(starts < 0):
        raise InvalidArgumentError("bin_start has negative values")
    return values, chroms, starts, bin_size


def _chrom_blocks(chroms: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Indices of each chromosome's bins, in order of first appearance."""
    names, first = np.unique(chroms, return_index=True)
    if names.size == 1:
        return [(str(names[0]), np.arange(chroms.size))]
    return [(str(name), np.flatnonzero(chroms == name)) for name in names[np.argsort(first)]]


def _regions(starts: np.ndarray, values: np.ndarray, bin_size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACS's step function for one chromosome: contiguous regions from 0, equal runs merged.

    Uncovered stretches (before the first bin, between bins) become regions of value 0.
    """
    order = np.argsort(starts, kind="stable")
    starts, values = starts[order], values[order]
    ends = starts + bin_size
    if np.any(starts[1:] < ends[:-1]):
        raise InvalidArgumentError(f"bins overlap: bin_start steps must be at least bin_size={bin_size}")
    gap_before = np.r_[starts[0] > 0, starts[1:] > ends[:-1]]
    n_gaps = int(gap_before.sum())
    total = values.size + n_gaps
    region_start = np.empty(total, dtype=np.int64)
    region_end = np.empty(total, dtype=np.int64)
    region_value = np.empty(total, dtype=np.float32)
    position = np.arange(values.size) + np.cumsum(gap_before)  # slot of each bin
    region_start[position] = starts
    region_end[position] = ends
    region_value[position] = values
    gap_slot = position[gap_before] - 1
    previous_end = np.r_[0, ends[:-1]]
    region_start[gap_slot] = previous_end[gap_before]
    region_end[gap_slot] = starts[gap_before]
    region_value[gap_slot] = 0.0
    # merge runs of equal values (contiguous by construction)
    head = np.r_[True, region_value[1:] != region_value[:-1]]
    first = np.flatnonzero(head)
    last = np.r_[first[1:] - 1, total - 1]
    return region_start[first], region_end[last], region_value[first]


def _call_numpy(values: np.ndarray, chroms: np.ndarray, starts: np.ndarray, bin_size: int, *,
                cutoff: float, min_length: int, max_gap: int) -> pd.DataFrame:
    frames = []
    for name, index in _chrom_blocks(chroms):
        r_start, r_end, r_value = _regions(starts[index], values[index], bin_size)
        above = np.flatnonzero(r_value.astype(np.float64) >= cutoff)
        if above.size == 0:
            continue
        gap = r_start[above[1:]] - r_end[above[:-1]]
        new_peak = np.r_[True, gap > max_gap]
        group = np.cumsum(new_peak) - 1
        heads = np.flatnonzero(new_peak)
        tails = np.r_[heads[1:] - 1, above.size - 1]
        peak_start = r_start[above[heads]]
        peak_end = r_end[above[tails]]
        v = r_value[above].astype(np.float64)
        score = np.maximum.reduceat(v, heads)
        # summit: midpoint of the middle region among those holding the maximum
        is_max = v == score[group]
        counts = np.bincount(group[is_max], minlength=heads.size)
        rank = np.cumsum(is_max) - 1  # running index among maxima ...
        rank = rank - np.r_[0, np.cumsum(counts)[:-1]][group]  # ... restarted in each peak
        pick = is_max & (rank == (counts[group] + 1) // 2 - 1)
        mid = (r_start[above] + r_end[above]) // 2
        summit = np.empty(heads.size, dtype=np.int64)
        summit[group[pick]] = mid[pick]
        keep = (peak_end - peak_start) >= min_length
        frames.append(pd.DataFrame({
            "chrom": name, "start": peak_start[keep], "end": peak_end[keep],
            "length": (peak_end - peak_start)[keep], "summit": summit[keep],
            "score": score[keep]}))
    if not frames:
        return _empty_peaks()
    return _sorted(pd.concat(frames, ignore_index=True))


def _sorted(peaks: pd.DataFrame) -> pd.DataFrame:
    peaks = peaks.sort_values(["chrom", "start", "end"], kind="stable").reset_index(drop=True)
    peaks = peaks.astype({"start": np.int64, "end": np.int64, "length": np.int64,
                          "summit": np.int64, "score": np.float64})
    peaks["chrom"] = peaks["chrom"].astype(str)
    return peaks[list(PEAK_COLUMNS)]


def read_narrowpeak(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a narrowPeak file (10 columns; ``track``/``browser``/``#`` lines skipped).

    Returns
    -------
    pandas.DataFrame
        :data:`PEAK_COLUMNS` with ``summit`` absolute (start + column 10, or the midpoint when
        column 10 is −1) and ``score`` column 5 divided by 10, the way ``bdgpeakcall`` writes
        ``int(10 * score)``.

    Raises
    ------
    InputFormatError
        On a line that is not a valid narrowPeak record (naming the file and line).
    """
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith(("track", "browser", "#")):
                continue
            fields = text.split("\t")
            if len(fields) < 10:
                raise InputFormatError(path, f"expected 10 tab-separated narrowPeak columns, got "
                                             f"{len(fields)}", record=f"line {number}")
            try:
                start, end, offset = int(fields[1]), int(fields[2]), int(fields[9])
                score = float(fields[4]) / 10.0
            except ValueError:
                raise InputFormatError(path, "start, end, score or summit offset is not a "
                                             "number", record=f"line {number}") from None
            if not 0 <= start < end:
                raise InputFormatError(path, f"invalid interval [{start}, {end})",
                                       record=f"line {number}")
            summit = start + offset if offset >= 0 else (start + end) // 2
            rows.append((fields[0], start, end, end - start, summit, score))
    if not rows:
        return _empty_peaks()
    return _sorted(pd.DataFrame(rows, columns=list(PEAK_COLUMNS)))


def _gap_free_track(values: np.ndarray, chroms: np.ndarray, starts: np.ndarray,
                    bin_size: int) -> xr.DataArray:
    """The track on a regular grid per chromosome, uncovered bins set to 0 (for MACS's reader)."""
    pieces_v, pieces_c, pieces_s = [], [], []
    for name, index in _chrom_blocks(chroms):
        s = starts[index]
        origin = int(s.min())
        offsets = s - origin
        if np.any(offsets % bin_size):
            raise InvalidArgumentError(
                f"bins on {name} are not on a {bin_size} bp grid; method='macs2' needs a regular "
                "grid because bdgpeakcall ignores gaps in a bedGraph (use method='numpy')")
        slots = offsets // bin_size
        if np.unique(slots).size != slots.size:
            raise InvalidArgumentError(f"two bins share a start on {name}")
        grid = np.zeros(int(slots.max()) + 1, dtype=np.float32)
        grid[slots] = values[index]
        pieces_v.append(grid)
        pieces_c.append(np.full(grid.size, name))
        pieces_s.append(origin + bin_size * np.arange(grid.size, dtype=np.int64))
    v = np.concatenate(pieces_v)
    return xr.DataArray(v, dims=("bin",), coords={
        "bin_start": ("bin", np.concatenate(pieces_s)),
        "bin_chrom": ("bin", np.concatenate(pieces_c))}, attrs={"scale": "neglog10p"})


def _call_macs2(values: np.ndarray, chroms: np.ndarray, starts: np.ndarray, bin_size: int, *,
                cutoff: float, min_length: int, max_gap: int, workdir: str | os.PathLike[str] | None,
                timeout: float | None) -> pd.DataFrame:
    from analysislib.external import run_tool
    from analysislib.io.tracks import write_bedgraph

    grid = _gap_free_track(values, chroms, starts, bin_size)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="analysislib-macs2-", dir=workdir) as scratch:
        bedgraph = write_bedgraph(grid, Path(scratch) / "track.bdg", bin_size=bin_size)
        out = Path(scratch) / "peaks.narrowPeak"
        run = run_tool(["macs2", "bdgpeakcall", "-i", bedgraph, "-c", repr(float(cutoff)),
                        "-l", str(int(min_length)), "-g", str(int(max_gap)), "--outdir", scratch,
                        "-o", out.name], timeout=timeout, tail_lines=20)
        if not out.exists():
            raise ExternalToolError(run.command, run.returncode,
                                    "macs2 bdgpeakcall exited without writing "
                                    f"{out.name}\n{run.stderr_tail}")
        peaks = read_narrowpeak(out)
    # narrowPeak keeps only int(10 * score); restore the exact maximum from the track.
    exact = _peak_maxima(peaks, values, chroms, starts, bin_size)
    written = np.rint(peaks["score"].to_numpy() * 10).astype(np.int64)
    if peaks.shape[0] and np.any(np.floor(exact * 10).astype(np.int64) != written):
        raise ExternalToolError(run.command, 0, "macs2 peak scores do not match the track maxima")
    peaks["score"] = exact
    peaks.attrs["tool_run"] = {"seconds": run.seconds, "peak_memory_mb": run.peak_memory_mb,
                               "command": run.command}
    return peaks


def _peak_maxima(peaks: pd.DataFrame, values: np.ndarray, chroms: np.ndarray,
                 starts: np.ndarray, bin_size: int) -> np.ndarray:
    """Largest track value over the bins overlapping each peak (0 when none does)."""
    out = np.zeros(peaks.shape[0])
    for name, index in _chrom_blocks(chroms):
        rows = np.flatnonzero(peaks["chrom"].to_numpy() == name)
        if rows.size == 0:
            continue
        order = index[np.argsort(starts[index], kind="stable")]
        s, v = starts[order], values[order].astype(np.float64)
        lo = np.searchsorted(s, peaks["start"].to_numpy()[rows] - bin_size, side="right")
        hi = np.searchsorted(s, peaks["end"].to_numpy()[rows], side="left")
        for row, a, b in zip(rows, lo, hi, strict=True):
            out[row] = v[a:b].max() if b > a else 0.0
    return out


def call_peaks(
    track: xr.DataArray,
    *,
    cutoff: float = DEFAULT_CUTOFF,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_gap: int = DEFAULT_MAX_GAP,
    method: str = "numpy",
    bin_size: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> pd.DataFrame:
    """Call peaks on one signal track with the MACS2 ``bdgpeakcall`` rule.

    Parameters
    ----------
    track
        1-D DataArray over ``bin`` with coordinates ``bin_start`` (0-based bp) and optionally
        ``bin_chrom`` (default ``"chr1"``), and a ``scale`` attribute; arcsinh tracks are
        converted to −log10 p with ``sinh``.
    cutoff
        −log10 p threshold (``-c``); a region is in a peak when its value is ``>= cutoff``.
        Must be positive.
    min_length
        Minimum peak length in bp (``-l``).
    max_gap
        Largest gap in bp between above-cut-off regions joined into one peak (``-g``).
    method
        ``"numpy"`` (in-library implementation of the rule) or ``"macs2"`` (runs
        ``macs2 bdgpeakcall`` on a bedGraph of the track).
    bin_size
        Bin width in bp; by default the track's ``bin_size`` attribute, else the smallest step
        of ``bin_start``.
    workdir
        Parent folder of the scratch directory (``macs2`` only); removed afterwards.
    timeout
        Seconds before MACS2 is killed (``macs2`` only).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PEAK_COLUMNS`: ``chrom``, ``start``, ``end`` (bp, half-open),
        ``length``, ``summit`` (absolute bp position) and ``score`` (largest −log10 p in the
        peak), sorted by chromosome and start. With ``macs2`` the score is recomputed from the
        track (narrowPeak keeps only ``int(10 * score)``, which is checked against it) and
        ``attrs["tool_run"]`` holds the tool's time and peak memory.

    Raises
    ------
    ValueError
        On a bad track or parameter.
    ToolNotFoundError, ExternalToolError
        ``macs2`` is missing or fails (the message quotes its stderr tail).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> v = np.array([0, 3, 3, 3, 3, 3, 3, 3, 3, 0], dtype=np.float32)
    >>> t = xr.DataArray(v, dims="bin", coords={"bin_start": ("bin", np.arange(10) * 25)},
    ...                  attrs={"scale": "neglog10p"})
    >>> call_peaks(t)[["start", "end", "summit", "score"]].values.tolist()
    [[25.0, 225.0, 125.0, 3.0]]
    """
    if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
        raise InvalidArgumentError(f"cutoff must be a positive −log10 p value, got {cutoff!r}")
    if min_length < 0 or max_gap < 0:
        raise InvalidArgumentError(f"min_length and max_gap must be >= 0, got {min_length}, {max_gap}")
    values, chroms, starts, size = _track_arrays(track, bin_size)
    if values.size == 0:
        return _empty_peaks()
    if method == "numpy":
        return _call_numpy(values, chroms, starts, size, cutoff=float(cutoff),
                           min_length=int(min_length), max_gap=int(max_gap))
    if method == "macs2":
        return _call_macs2(values, chroms, starts, size, cutoff=float(cutoff),
                           min_length=int(min_length), max_gap=int(max_gap), workdir=workdir,
                           timeout=timeout)
    raise InvalidArgumentError(f"method must be 'numpy' or 'macs2', got {method!r}")


def matched_cutoff(track: xr.DataArray, references: Sequence[xr.DataArray], *,
                   cutoff: float = DEFAULT_CUTOFF) -> float:
    """The −log10 p cut-off at which ``track`` has the share of bins the ``references`` have at ``cutoff``.

    A cut-off for tracks whose level is off while their ranking is right, such as imputations
    that under-estimate peak heights (the eDICE paper, Results: "a tendency to systematically
    underestimate the absolute signal values within peaks"). The share is the mean over the
    ``references`` (e.g. observed tracks of the same mark in other cell types) of their fraction
    of bins with −log10 p ``>= cutoff``; the returned cut-off is the value of ``track`` with that
    fraction of its bins at or above it. Pass it to :func:`call_peaks`. It uses no data of the
    track's own truth.

    Returns
    -------
    float
        A positive −log10 p value; ``cutoff`` itself when the references have no bin at or
        above it. NaN bins count as 0, as in :func:`call_peaks`.

    Raises
    ------
    ValueError
        With no references, or a track that is not a 1-D signal over ``bin``.
    """
    if not references:
        raise InvalidArgumentError("matched_cutoff needs at least one reference track")
    shares = [float(np.mean(_track_arrays(ref, None)[0] >= cutoff)) for ref in references]
    share = float(np.mean(shares))
    values = _track_arrays(track, None)[0]
    if share <= 0 or values.size == 0:
        return float(cutoff)
    rank = min(values.size, max(1, round(share * values.size)))
    level = float(np.partition(values, values.size - rank)[values.size - rank])
    # Cut-offs must be positive (call_peaks); a track at 0 there has no peaks at any cut-off.
    return level if level > 0 else float(np.nextafter(np.float32(0), np.float32(1)))


def consensus_peaks(tables: Sequence[pd.DataFrame], min_overlap: float = 2) -> pd.DataFrame:
    """Merge peak sets and keep the merged peaks present in at least ``min_overlap`` of them.

    Follows DiffBind's consensus peakset (``minOverlap``): all peaks are pooled, peaks that
    overlap by at least 1 bp are merged (half-open intervals, so touching peaks stay apart), and a
    merged peak is kept when peaks from at least ``k`` different sets went into it.

    Parameters
    ----------
    tables
        Peak tables with at least ``chrom``, ``start``, ``end`` (as from :func:`call_peaks`).
    min_overlap
        ``k`` as a count (>= 1), or, when strictly between 0 and 1, as a fraction of the sets
        (``k = ceil(fraction * n_sets)``), as in DiffBind. Default 2.

    Returns
    -------
    pandas.DataFrame
        :data:`PEAK_COLUMNS` plus ``n_sets``; ``score`` is the largest score of the merged
        peaks and ``summit`` that peak's summit (NaN score / midpoint summit when the input has
        no such columns).
    """
    tables = list(tables)
    if not tables:
        raise InvalidArgumentError("no peak tables given")
    n = len(tables)
    if 0 < min_overlap < 1:
        k = math.ceil(min_overlap * n)
    elif min_overlap >= 1 and float(min_overlap).is_integer():
        k = int(min_overlap)
    else:
        raise InvalidArgumentError(f"min_overlap must be a count >= 1 or a fraction in (0, 1), got "
                         f"{min_overlap!r}")
    pooled = []
    for number, table in enumerate(tables):
        missing = {"chrom", "start", "end"} - set(table.columns)
        if missing:
            raise InvalidArgumentError(f"peak table {number} lacks columns {sorted(missing)}")
        part = pd.DataFrame({
            "chrom": table["chrom"].astype(str).to_numpy(),
            "start": table["start"].to_numpy(np.int64), "end": table["end"].to_numpy(np.int64),
            "score": (table["score"].to_numpy(np.float64) if "score" in table
                      else np.full(len(table), np.nan)),
            "summit": (table["summit"].to_numpy(np.int64) if "summit" in table
                       else ((table["start"] + table["end"]) // 2).to_numpy(np.int64)),
            "set": number})
        if np.any(part["end"] <= part["start"]):
            raise InvalidArgumentError(f"peak table {number} has an empty or inverted interval")
        pooled.append(part)
    allp = pd.concat(pooled, ignore_index=True).sort_values(["chrom", "start", "end"],
                                                            kind="stable")
    rows = []
    for chrom, block in allp.groupby("chrom", sort=True):
        s, e = block["start"].to_numpy(), block["end"].to_numpy()
        reach = np.maximum.accumulate(e)
        new = np.r_[True, s[1:] >= reach[:-1]]
        group = np.cumsum(new) - 1
        for g in range(int(group.max()) + 1):
            member = block[group == g]
            sets = member["set"].nunique()
            if sets < k:
                continue
            best = member.iloc[int(np.nanargmax(member["score"].to_numpy()))] \
                if member["score"].notna().any() else member.iloc[0]
            start, end = int(member["start"].min()), int(member["end"].max())
            summit = int(best["summit"]) if member["score"].notna().any() else (start + end) // 2
            rows.append((chrom, start, end, end - start, summit, float(best["score"]), sets))
    columns = [*PEAK_COLUMNS, "n_sets"]
    if not rows:
        out = _empty_peaks()
        out["n_sets"] = pd.Series(dtype=np.int64)
        return out
    out = pd.DataFrame(rows, columns=columns).sort_values(["chrom", "start", "end"],
                                                          kind="stable")
    return _sorted(out.reset_index(drop=True)).assign(
        n_sets=out["n_sets"].to_numpy(np.int64))


def peak_mask(peaks: pd.DataFrame, bin_start: Any, bin_size: int, *,
              bin_chrom: Any | None = None) -> np.ndarray:
    """Boolean mask of the bins covered by peaks (a bin counts when it overlaps a peak by >= 1 bp).

    Parameters
    ----------
    peaks
        Table with ``chrom``, ``start``, ``end`` (half-open bp).
    bin_start
        0-based start of each bin.
    bin_size
        Bin width in bp.
    bin_chrom
        Chromosome of each bin. When omitted, every peak is taken to lie on the bins'
        chromosome, which requires the peaks to share one chromosome.

    Returns
    -------
    numpy.ndarray
        ``bool`` array, one entry per bin.
    """
    starts = np.asarray(bin_start, dtype=np.int64)
    if bin_size <= 0:
        raise InvalidArgumentError(f"bin_size must be positive, got {bin_size}")
    mask = np.zeros(starts.size, dtype=bool)
    if peaks.shape[0] == 0:
        return mask
    if bin_chrom is None:
        names = pd.unique(peaks["chrom"].astype(str))
        if len(names) > 1:
            raise InvalidArgumentError(f"peaks lie on several chromosomes {list(names)}; give bin_chrom")
        groups = [(np.arange(starts.size), peaks)]
    else:
        chroms = np.asarray(bin_chrom).astype(str)
        if chroms.shape != starts.shape:
            raise InvalidArgumentError(f"bin_chrom has shape {chroms.shape}, bin_start {starts.shape}")
        groups = [(np.flatnonzero(chroms == str(name)), block)
                  for name, block in peaks.groupby(peaks["chrom"].astype(str))]
    for index, block in groups:
        if index.size == 0:
            continue
        order = index[np.argsort(starts[index], kind="stable")]
        s = starts[order]
        p_start = block["start"].to_numpy(np.int64)
        p_end = block["end"].to_numpy(np.int64)
        # bins overlapping [p_start, p_end): s < p_end and s + bin_size > p_start
        lo = np.searchsorted(s, p_start - bin_size, side="right")
        hi = np.searchsorted(s, p_end, side="left")
        delta = np.zeros(s.size + 1, dtype=np.int64)
        np.add.at(delta, lo, 1)
        np.add.at(delta, hi, -1)
        mask[order] = np.cumsum(delta)[:-1] > 0
    return mask
