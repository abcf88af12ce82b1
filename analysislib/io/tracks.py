"""Reading and writing epigenomic tracks: Roadmap npz, bigWig, bedGraph and zarr.

Every reader returns the signal layout of :mod:`analysislib.epigenome.tensor` (a track
DataArray over ``bin``, or a full cell × assay signal Dataset); every writer is atomic (a temporary
sibling renamed into place). The Roadmap npz layout is the one of the Avocado pilot-region files
(``data/*.pilot.arcsinh.npz`` in ``jmschrei/avocado``): one
file per track named ``CELL.ASSAY.*.npz`` holding ``arr_0``, float32 arcsinh(−log10 p) at 25 bp.

Malformed input raises :class:`analysislib.errors.InputFormatError` naming the file and the
line or record.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import os
import shutil
import struct
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from analysislib import variables
from analysislib.epigenome.tensor import (
    create_signal_dataset,
    signal_scale,
    to_arcsinh,
    to_neglog10p,
)
from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.io.atomic import atomic_output

__all__ = [
    "BIGWIG_MAGIC",
    "parse_region",
    "parse_roadmap_name",
    "read_bedgraph",
    "read_bigwig",
    "read_roadmap_npz",
    "read_track_files",
    "read_zarr",
    "track_file_format",
    "write_bedgraph",
    "write_bigwig",
    "write_roadmap_npz",
    "write_zarr",
]

PathLike = str | os.PathLike[str]
NPZ_KEY = "arr_0"


# --------------------------------------------------------------------------- Roadmap npz


def parse_roadmap_name(path: PathLike) -> tuple[str, str]:
    """Return ``(cell, assay)`` from a file name of the form ``CELL.ASSAY.*.npz``.

    Raises
    ------
    InputFormatError
        If the name does not follow that layout.
    """
    name = Path(path).name
    parts = name.split(".")
    if not name.endswith(".npz") or len(parts) < 3 or not parts[0] or not parts[1]:
        raise InputFormatError(path, "file name does not follow the Roadmap layout CELL.ASSAY.*.npz")
    return parts[0], parts[1]


# What NumPy, zipfile and zlib raise for a damaged or cut npz (zero bytes: EOFError; a flipped
# deflate bit: zlib.error; a damaged .npy header: SyntaxError or tokenize.TokenError).
_NPZ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, NotImplementedError,
               SyntaxError, tokenize.TokenError, KeyError)


def _load_npz_track(path: Path) -> np.ndarray:
    if path.is_file() and path.stat().st_size == 0:
        raise InputFormatError(path, "empty file (0 bytes): not an npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if NPZ_KEY not in keys:
                raise InputFormatError(path, f"expected the array key {NPZ_KEY!r}, found {keys}",
                                       record=f"key {NPZ_KEY}")
            values = archive[NPZ_KEY]
    except InputFormatError:
        raise
    except FileNotFoundError:
        raise
    except _NPZ_ERRORS as err:
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise InputFormatError(path, f"not a readable npz archive, the file is damaged or cut "
                               f"short ({reason})") from None
    if values.ndim != 1:
        raise InputFormatError(path, f"expected a 1-D track, got shape {values.shape}",
                               record=f"key {NPZ_KEY}")
    if values.dtype.kind not in "fiu":
        raise InputFormatError(path, f"expected numeric values, got dtype {values.dtype}",
                               record=f"key {NPZ_KEY}")
    return values


def read_roadmap_npz(
    paths_or_dir: PathLike | Iterable[PathLike],
    *,
    cells: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    chrom: str = "pilot",
    bin_size: int = 25,
) -> xr.Dataset:
    """Read per-track Roadmap npz files into a full cell × assay signal dataset (arcsinh scale).

    Parameters
    ----------
    paths_or_dir
        A directory (every ``*.npz`` in it is read) or an iterable of files named
        ``CELL.ASSAY.*.npz``, each holding one track under the key ``arr_0``.
    cells, assays
        The grid, in order. By default the sorted cells and assays found in the files. Files of
        other cells or assays are skipped; grid entries with no file are unobserved (NaN).
    chrom
        Value of ``bin_chrom`` (the pilot-region files carry no coordinates, so bins are indexed
        by position and ``bin_start`` is ``bin * bin_size``).
    bin_size
        Bin width in bp.

    Returns
    -------
    xarray.Dataset
        Signal dataset with ``scale="arcsinh"``.

    Raises
    ------
    InputFormatError
        On a bad file name, a missing ``arr_0`` key, a non-1-D track, tracks of different lengths
        or two files for the same track.
    """
    if isinstance(paths_or_dir, (str, os.PathLike)) and Path(paths_or_dir).is_dir():
        paths = sorted(Path(paths_or_dir).glob("*.npz"))
        if not paths:
            raise FileNotFoundError(f"no .npz files in {paths_or_dir}")
    elif isinstance(paths_or_dir, (str, os.PathLike)):
        paths = [Path(paths_or_dir)]
    else:
        paths = [Path(p) for p in paths_or_dir]
    named: dict[tuple[str, str], Path] = {}
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(path)
        key = parse_roadmap_name(path)
        if key in named:
            raise InputFormatError(path, f"second file for track {key}; first was {named[key]}")
        named[key] = path
    cell_list = sorted({c for c, _ in named}) if cells is None else list(cells)
    assay_list = sorted({a for _, a in named}) if assays is None else list(assays)
    wanted = [(key, path) for key, path in named.items()
              if key[0] in cell_list and key[1] in assay_list]

    signal: np.ndarray | None = None
    observed = np.zeros((len(cell_list), len(assay_list)), dtype=bool)
    reference: Path | None = None
    for (cell, assay), path in wanted:
        values = _load_npz_track(path)
        if signal is None:
            signal = np.full((len(cell_list), len(assay_list), values.size), np.nan, np.float32)
            reference = path
        elif values.size != signal.shape[-1]:
            raise InputFormatError(
                path, f"track has {values.size} bins but {reference.name} has {signal.shape[-1]};"
                " all tracks must cover the same bins", record=f"key {NPZ_KEY}")
        i, j = cell_list.index(cell), assay_list.index(assay)
        signal[i, j] = values
        observed[i, j] = True
    if signal is None:
        raise FileNotFoundError(f"no track file matches cells={cell_list} assays={assay_list}")
    return create_signal_dataset(
        signal, cells=cell_list, assays=assay_list, observed=observed, chrom=chrom,
        bin_size=bin_size, scale="arcsinh",
        attrs={"source": "Roadmap npz (CELL.ASSAY.*.npz)"})


def write_roadmap_npz(ds: xr.Dataset, directory: PathLike, *, label: str = "track") -> list[Path]:
    """Write each observed track as ``CELL.ASSAY.<label>.arcsinh.npz`` (key ``arr_0``, float32).

    The inverse of :func:`read_roadmap_npz` for datasets without an ``individual`` dimension.

    Returns
    -------
    list of Path
        The files written.
    """
    variables.validate(ds, ["signal", "observed"])
    if "individual" in ds["signal"].dims:
        raise InvalidArgumentError("the Roadmap npz layout has no individual dimension; select one first")
    arcsinh = to_arcsinh(ds)["signal"]
    out = []
    for cell in ds["cell"].values:
        for assay in ds["assay"].values:
            if not bool(ds["observed"].sel(cell=cell, assay=assay)):
                continue
            path = Path(directory) / f"{cell}.{assay}.{label}.arcsinh.npz"
            values = np.asarray(arcsinh.sel(cell=cell, assay=assay).values, dtype=np.float32)
            with atomic_output(path) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, values)
            out.append(path)
    return out


# --------------------------------------------------------------------------- single tracks


def _track_array(
    values: np.ndarray, chroms: np.ndarray, starts: np.ndarray, *, scale: str, bin_size: int,
    source: PathLike,
) -> xr.DataArray:
    return xr.DataArray(
        values.astype(np.float32), dims=("bin",), name="signal",
        coords={"bin": np.arange(values.size), "bin_start": ("bin", starts.astype(np.int64)),
                "bin_chrom": ("bin", chroms.astype(str))},
        attrs={"scale": scale, "bin_size": int(bin_size), "source": str(source)})


def _bin_edges(start: int, end: int, bin_size: int) -> np.ndarray:
    if bin_size <= 0:
        raise InvalidArgumentError(f"bin_size must be positive, got {bin_size}")
    if not 0 <= start < end:
        raise InvalidArgumentError(f"empty or negative region [{start}, {end})")
    return np.append(np.arange(start, end, bin_size, dtype=np.int64), end)


def _interval_bin_means(
    starts: np.ndarray, ends: np.ndarray, values: np.ndarray, edges: np.ndarray, fill_value: float
) -> np.ndarray:
    """Base-weighted mean of interval values in each bin (intervals sorted, non-overlapping)."""
    n_bins = edges.size - 1
    keep = (ends > edges[0]) & (starts < edges[-1])
    starts, ends, values = starts[keep], ends[keep], values[keep]
    first = np.searchsorted(edges, starts, side="right") - 1
    last = np.searchsorted(edges, ends, side="left") - 1
    first = np.clip(first, 0, n_bins - 1)
    last = np.clip(last, 0, n_bins - 1)
    counts = last - first + 1
    owner = np.repeat(np.arange(starts.size), counts)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    bins = first[owner] + offset
    overlap = (np.minimum(ends[owner], edges[bins + 1])
               - np.maximum(starts[owner], edges[bins])).astype(np.float64)
    covered = np.bincount(bins, weights=overlap, minlength=n_bins)
    total = np.bincount(bins, weights=overlap * values[owner], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(covered > 0, total / np.where(covered > 0, covered, 1), fill_value)


def _chrom_list(chrom: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if chrom is None:
        return list(available)
    return [chrom] if isinstance(chrom, str) else list(chrom)


def read_bigwig(
    path: PathLike,
    chrom: str | Sequence[str] | None = None,
    start: int = 0,
    end: int | None = None,
    bin_size: int = 25,
    *,
    scale: str = "neglog10p",
    fill_value: float = 0.0,
    chunk_bases: int = 10_000_000,
) -> xr.DataArray:
    """Read a bigWig track averaged into fixed bins (uses pyBigWig).

    Parameters
    ----------
    path
        bigWig file.
    chrom
        One chromosome, several, or ``None`` for all chromosomes in the file's header order.
    start, end
        Region on a single chromosome, 0-based half-open; ``end`` defaults to the chromosome end.
    bin_size
        Bin width in bp. Each bin holds the base-weighted mean of the covered bases.
    scale
        What the file's values are (``"neglog10p"`` for Roadmap p-value tracks, or ``"arcsinh"``).
    fill_value
        Value of bins with no covered base.
    chunk_bases
        Bases read per call, to bound memory on whole chromosomes.

    Returns
    -------
    xarray.DataArray
        Dims ``(bin,)`` with coordinates ``bin_start``, ``bin_chrom`` and attributes ``scale``,
        ``bin_size``.
    """
    path = Path(path)
    handle = _open_bigwig(path)
    try:
        sizes = _bigwig_chroms(handle, path)
        chroms = _chrom_list(chrom, list(sizes))
        if len(chroms) > 1 and (start != 0 or end is not None):
            raise InvalidArgumentError("start/end can only be given with a single chromosome")
        pieces, chrom_labels, bin_starts = [], [], []
        for name in chroms:
            if name not in sizes:
                raise InputFormatError(path, f"chromosome {name!r} is not in the file "
                                             f"(it has {list(sizes)[:10]})", record=name)
            region_end = sizes[name] if end is None else end
            if region_end > sizes[name]:
                raise InvalidArgumentError(f"end {region_end} is beyond {name}'s length {sizes[name]}")
            edges = _bin_edges(start, region_end, bin_size)
            pieces.append(_binned_bigwig(handle, path, name, edges, bin_size, fill_value=fill_value,
                                         chunk_bases=chunk_bases))
            chrom_labels.append(np.full(edges.size - 1, name))
            bin_starts.append(edges[:-1])
    finally:
        handle.close()
    return _track_array(np.concatenate(pieces), np.concatenate(chrom_labels),
                        np.concatenate(bin_starts), scale=scale, bin_size=bin_size, source=path)


def _open_bigwig(path: Path) -> Any:
    """An open pyBigWig handle, after checking the file's layout (libBigWig crashes the process
    on some damaged files); FileNotFoundError or InputFormatError naming the file otherwise."""
    import pyBigWig

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such track file")
    _check_bigwig_layout(path)
    try:
        with _quiet_stderr():
            handle = pyBigWig.open(str(path))
    except RuntimeError:
        raise InputFormatError(path, "not a readable bigWig file: its header is damaged or the "
                                     "file is cut short") from None
    if handle is None or not handle.isBigWig():
        raise InputFormatError(path, "not a bigWig file")
    return handle


def _bigwig_chroms(handle: Any, path: Path) -> dict[str, int]:
    """The chromosome sizes of an open bigWig; a damaged name raises InputFormatError naming the file."""
    try:
        return handle.chroms()
    except RuntimeError:  # pyBigWig on a name that is not UTF-8, e.g. one flipped bit
        raise InputFormatError(path, "damaged bigWig file: its chromosome list cannot be read") from None


def _binned_bigwig(handle: Any, path: Path, chrom: str, edges: np.ndarray, bin_size: int, *,
                   fill_value: float, chunk_bases: int = 10_000_000) -> np.ndarray:
    """Base-weighted bin means of ``chrom`` between ``edges[0]`` and ``edges[-1]``, read in
    chunks of ``chunk_bases``; bins with no covered base get ``fill_value``."""
    start, region_end = int(edges[0]), int(edges[-1])
    means = np.empty(edges.size - 1)
    step = max(1, chunk_bases // bin_size) * bin_size
    for lo in range(start, region_end, step):
        hi = min(lo + step, region_end)
        try:
            with _quiet_stderr():
                base = np.asarray(handle.values(chrom, lo, hi, numpy=True), dtype=np.float64)
        except RuntimeError:
            raise InputFormatError(path, "damaged bigWig file: its data cannot be read",
                                   record=f"{chrom}:{lo}-{hi}") from None
        n_chunk_bins = -(-(hi - lo) // bin_size)
        padded = np.full(n_chunk_bins * bin_size, np.nan)
        padded[: base.size] = base
        padded = padded.reshape(n_chunk_bins, bin_size)
        covered = np.isfinite(padded).sum(axis=1)
        total = np.nansum(padded, axis=1)
        first = (lo - start) // bin_size
        means[first: first + n_chunk_bins] = np.where(
            covered > 0, total / np.maximum(covered, 1), fill_value)
    return means


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # closed by the caller


def _parse_bedgraph(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Parse and check a bedGraph: sorted, non-overlapping, numeric; returns per-chrom arrays."""
    per_chrom: dict[str, tuple[list[int], list[int], list[float]]] = {}
    current: str | None = None
    prev_start = prev_end = -1
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith(("#", "track", "browser")):
                continue
            fields = text.split()
            record = f"line {number}"
            if len(fields) < 4:
                raise InputFormatError(path, f"expected 4 columns (chrom start end value), got "
                                             f"{len(fields)}", record=record)
            name = fields[0]
            try:
                begin, stop = int(fields[1]), int(fields[2])
            except ValueError:
                raise InputFormatError(path, f"start/end are not integers: {fields[1]!r} "
                                             f"{fields[2]!r}", record=record) from None
            try:
                value = float(fields[3])
            except ValueError:
                raise InputFormatError(path, f"value {fields[3]!r} is not a number",
                                       record=record) from None
            if begin < 0 or stop <= begin:
                raise InputFormatError(path, f"invalid interval [{begin}, {stop})", record=record)
            if name != current:
                if name in per_chrom:
                    raise InputFormatError(path, f"unsorted: {name} appears again after "
                                                 f"{current}", record=record)
                per_chrom[name] = ([], [], [])
                current, prev_start, prev_end = name, -1, -1
            if begin < prev_start:
                raise InputFormatError(path, f"unsorted: start {begin} is before the previous "
                                             f"start {prev_start} on {name}", record=record)
            if begin < prev_end:
                raise InputFormatError(path, f"interval [{begin}, {stop}) overlaps the previous "
                                             f"one ending at {prev_end}", record=record)
            starts, ends, values = per_chrom[name]
            starts.append(begin)
            ends.append(stop)
            values.append(value)
            prev_start, prev_end = begin, stop
    if not per_chrom:
        raise InputFormatError(path, "no data lines")
    return {name: (np.asarray(s, np.int64), np.asarray(e, np.int64), np.asarray(v, np.float64))
            for name, (s, e, v) in per_chrom.items()}


def read_bedgraph(
    path: PathLike,
    chrom: str | Sequence[str] | None = None,
    start: int = 0,
    end: int | None = None,
    bin_size: int = 25,
    *,
    scale: str = "neglog10p",
    fill_value: float = 0.0,
) -> xr.DataArray:
    """Read a bedGraph (plain or gzip) averaged into fixed bins.

    Parameters
    ----------
    path
        bedGraph file: ``chrom start end value`` per line; ``track``, ``browser`` and ``#``
        lines are skipped. Lines must be sorted by start within contiguous chromosome blocks
        and must not overlap.
    chrom
        One chromosome, several, or ``None`` for all, in file order.
    start, end
        Region on a single chromosome; ``end`` defaults to the last interval's end.
    bin_size
        Bin width in bp; each bin holds the base-weighted mean of covered bases.
    scale
        What the values are (``"neglog10p"`` or ``"arcsinh"``).
    fill_value
        Value of bins with no covered base.

    Returns
    -------
    xarray.DataArray
        Dims ``(bin,)``, as :func:`read_bigwig`.

    Raises
    ------
    InputFormatError
        Naming the line of an unsorted, overlapping, non-numeric or short record.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        intervals = _parse_bedgraph(path)
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as err:  # bare before
        raise InputFormatError(path, f"not a readable text bedGraph ({type(err).__name__})") from None
    chroms = _chrom_list(chrom, list(intervals))
    if len(chroms) > 1 and (start != 0 or end is not None):
        raise InvalidArgumentError("start/end can only be given with a single chromosome")
    pieces, chrom_labels, bin_starts = [], [], []
    for name in chroms:
        if name not in intervals:
            raise InputFormatError(path, f"chromosome {name!r} has no intervals in the file",
                                   record=name)
        starts, ends, values = intervals[name]
        edges = _bin_edges(start, int(ends[-1]) if end is None else end, bin_size)
        pieces.append(_interval_bin_means(starts, ends, values, edges, fill_value))
        chrom_labels.append(np.full(edges.size - 1, name))
        bin_starts.append(edges[:-1])
    return _track_array(np.concatenate(pieces), np.concatenate(chrom_labels),
                        np.concatenate(bin_starts), scale=scale, bin_size=bin_size, source=path)


def _select_track(
    track: xr.Dataset | xr.DataArray,
    cell: str | None,
    assay: str | None,
    individual: str | None,
) -> tuple[xr.DataArray, int | None]:
    """Reduce a dataset (with labels) or a DataArray to one track over ``bin``."""
    bin_size = None
    if isinstance(track, xr.Dataset):
        variables.validate(track, ["signal", "observed"])
        bin_size = track.attrs.get("bin_size")
        selector = {k: v for k, v in (("cell", cell), ("assay", assay),
                                      ("individual", individual)) if v is not None}
        observed = track["observed"].sel(selector)
        data = track["signal"].sel(selector).copy(deep=False)
        data.attrs = {**data.attrs, "scale": signal_scale(track)}
        if observed.ndim == 0 and not bool(observed):
            raise InvalidArgumentError(f"track {selector} is not observed; nothing to write")
    else:
        data = track
        bin_size = track.attrs.get("bin_size")
    if data.dims != ("bin",):
        raise InvalidArgumentError(f"expected one track over 'bin', got dims {data.dims}; "
                         "pass cell=, assay= (and individual=) to pick one")
    for coord in ("bin_start", "bin_chrom"):
        if coord not in data.coords:
            raise InvalidArgumentError(f"track has no {coord!r} coordinate")
    return data, bin_size


def _track_for_writing(
    track: xr.Dataset | xr.DataArray, *, cell: str | None, assay: str | None,
    individual: str | None, scale: str, bin_size: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    data, found_size = _select_track(track, cell, assay, individual)
    data = to_arcsinh(data) if scale == "arcsinh" else to_neglog10p(data)
    size = bin_size or found_size
    starts = np.asarray(data["bin_start"].values, dtype=np.int64)
    if size is None:
        gaps = np.diff(starts)
        size = int(gaps[gaps > 0].min()) if np.any(gaps > 0) else 25
    return (np.asarray(data.values, dtype=np.float64), np.asarray(data["bin_chrom"].values, str),
            starts, int(size))


def write_bigwig(
    track: xr.Dataset | xr.DataArray,
    path: PathLike,
    chrom_sizes: Mapping[str, int],
    *,
    cell: str | None = None,
    assay: str | None = None,
    individual: str | None = None,
    scale: str = "neglog10p",
    bin_size: int | None = None,
) -> Path:
    """Write one track to a bigWig file (atomic). NaN bins are left out.

    Parameters
    ----------
    track
        A track DataArray over ``bin`` (with ``bin_start``, ``bin_chrom`` and ``scale``), or a
        signal dataset together with ``cell``, ``assay`` (and ``individual``).
    path
        Destination ``.bw`` / ``.bigWig``.
    chrom_sizes
        Chromosome lengths, in the order written to the header; must cover every bin.
    scale
        Scale of the written values; the track is converted (once) if needed.
    bin_size
        Bin width; by default the dataset's or track's ``bin_size`` attribute.

    Returns
    -------
    Path
        The written file.
    """
    import pyBigWig

    values, chroms, starts, size = _track_for_writing(track, cell=cell, assay=assay,
                                                      individual=individual, scale=scale,
                                                      bin_size=bin_size)
    unknown = sorted(set(np.unique(chroms)) - set(chrom_sizes))
    if unknown:
        raise InvalidArgumentError(f"chrom_sizes lacks chromosomes {unknown}")
    path = Path(path)
    with atomic_output(path) as tmp:
        handle = pyBigWig.open(str(tmp), "w")
        try:
            handle.addHeader([(str(c), int(n)) for c, n in chrom_sizes.items()])
            for name, length in chrom_sizes.items():
                on_chrom = np.flatnonzero((chroms == name) & np.isfinite(values))
                if on_chrom.size == 0:
                    continue
                order = on_chrom[np.argsort(starts[on_chrom], kind="stable")]
                bin_starts, bin_values = starts[order], values[order]
                if bin_starts[-1] >= length:
                    raise InvalidArgumentError(f"bin at {name}:{bin_starts[-1]} is beyond its length {length}")
                bin_ends = np.minimum(bin_starts + size, length)
                if np.any(bin_starts[1:] < bin_ends[:-1]):
                    raise InvalidArgumentError(f"bins overlap on {name}; bin_start must step by {size}")
                # Runs of adjacent full-width bins go in fixed-step blocks.
                full = bin_ends - bin_starts == size
                breaks = np.flatnonzero((np.diff(bin_starts) != size) | ~full[:-1] | ~full[1:]) + 1
                for run in np.split(np.arange(bin_starts.size), breaks):
                    if full[run[0]]:
                        handle.addEntries(name, int(bin_starts[run[0]]), values=bin_values[run],
                                          span=size, step=size)
                    else:
                        handle.addEntries([name] * run.size, bin_starts[run], ends=bin_ends[run],
                                          values=bin_values[run])
        finally:
            handle.close()
    return path


def write_bedgraph(
    track: xr.Dataset | xr.DataArray,
    path: PathLike,
    *,
    cell: str | None = None,
    assay: str | None = None,
    individual: str | None = None,
    scale: str = "neglog10p",
    bin_size: int | None = None,
    merge_equal: bool = True,
) -> Path:
    """Write one track as bedGraph (gzip if the path ends in ``.gz``), atomically.

    Parameters
    ----------
    track
        A track DataArray over ``bin`` or a signal dataset with ``cell``/``assay``
        (/``individual``), as in :func:`write_bigwig`.
    path
        Destination.
    scale
        Scale of the written values.
    bin_size
        Bin width; by default the dataset's or track's ``bin_size``.
    merge_equal
        Merge adjacent bins with equal values into one line, as bedGraph tools do.

    Returns
    -------
    Path
        The written file. Values are written with 9 significant digits, enough to restore
        float32 exactly. NaN bins are left out.
    """
    values, chroms, starts, size = _track_for_writing(track, cell=cell, assay=assay,
                                                      individual=individual, scale=scale,
                                                      bin_size=bin_size)
    path = Path(path)
    chrom_order = list(dict.fromkeys(chroms.tolist()))
    with atomic_output(path) as tmp:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8") as handle:
            for name in chrom_order:
                on_chrom = np.flatnonzero((chroms == name) & np.isfinite(values))
                order = on_chrom[np.argsort(starts[on_chrom], kind="stable")]
                bin_starts, bin_values = starts[order], values[order].astype(np.float32)
                bin_ends = bin_starts + size
                if order.size == 0:
                    continue
                if merge_equal:
                    joins = (bin_starts[1:] == bin_ends[:-1]) & (bin_values[1:] == bin_values[:-1])
                    heads = np.flatnonzero(np.r_[True, ~joins])
                    tails = np.r_[heads[1:] - 1, order.size - 1]
                    bin_starts, bin_ends, bin_values = (bin_starts[heads], bin_ends[tails],
                                                        bin_values[heads])
                handle.writelines(
                    f"{name}\t{s}\t{e}\t{float(v):.9g}\n"
                    for s, e, v in zip(bin_starts.tolist(), bin_ends.tolist(), bin_values.tolist(),
                                       strict=True))
    return path


# --------------------------------------------------------------------------- track sets

#: The first four bytes of a bigWig file (magic number 0x888FFC26, little-endian).
BIGWIG_MAGIC = b"\x26\xfc\x8f\x88"
_BIGWIG_SUFFIXES = (".bw", ".bigwig")


def parse_region(text: str) -> tuple[str, int, int]:
    """Parse ``chrom:start-end`` (0-based, half-open as in BED; commas in numbers are allowed).

    Raises
    ------
    ValueError
        If ``text`` is not of that form or the region is empty.
    """
    chrom, sep, span = str(text).rpartition(":")
    first, dash, last = span.replace(",", "").partition("-")
    if not sep or not chrom or not dash or not first.isdigit() or not last.isdigit():
        raise InvalidArgumentError(f"region {text!r}: expected chrom:start-end (0-based, half-open)")
    start, end = int(first), int(last)
    if end <= start:
        raise InvalidArgumentError(f"region {text!r}: end must be greater than start")
    return chrom, start, end


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (libBigWig prints its own messages on failure)."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr descriptor
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def track_file_format(path: PathLike) -> str:
    """``"bigwig"`` for a file starting with the bigWig magic number, ``"bedgraph"`` otherwise.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    InputFormatError
        If ``path`` is not a file, is empty, or is named ``.bw``/``.bigWig`` without being one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such track file")
    if not path.is_file():
        raise InputFormatError(path, "is not a file; expected a bigWig or bedGraph track")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == BIGWIG_MAGIC:
        return "bigwig"
    if not magic:
        raise InputFormatError(path, "empty file (0 bytes): not a bigWig or bedGraph track")
    if path.name.lower().endswith(_BIGWIG_SUFFIXES):
        raise InputFormatError(path, "not a bigWig file (no bigWig magic number at its start)")
    return "bedgraph"


def _check_bigwig_layout(path: Path) -> None:
    """Refuse a bigWig whose header points beyond the file's end (libBigWig crashes on some)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(64)
        if len(head) < 64:
            raise InputFormatError(path, f"bigWig file cut short: {size} bytes, fewer than its "
                                         "64-byte header")
        (_, _, zoom_levels, chrom_tree, full_data, full_index, _, _, _, total_summary, _,
         _) = struct.unpack("<IHHQQQHHQQIQ", head)
        zooms = handle.read(24 * zoom_levels)
    parts = {"zoom headers": 64 + 24 * zoom_levels, "chromosome tree": chrom_tree + 32,
             "data": full_data + 4, "index": full_index + 48}
    if total_summary:
        parts["summary"] = total_summary + 40
    if len(zooms) == 24 * zoom_levels:
        for level in range(zoom_levels):
            _, _, data, index = struct.unpack_from("<IIQQ", zooms, 24 * level)
            parts[f"zoom level {level + 1} data"] = data + 4
            parts[f"zoom level {level + 1} index"] = index + 48
    for part, end in parts.items():
        if end > size:
            raise InputFormatError(path, f"bigWig file cut short or damaged: its {part} lies "
                                         f"beyond the end of the file ({size} bytes)")
    with open(path, "rb") as handle:
        _check_bigwig_trees(path, handle, size, chrom_tree=chrom_tree, full_index=full_index,
                            full_data=full_data)


def _check_bigwig_trees(path: Path, handle: Any, size: int, *, chrom_tree: int, full_index: int,
                        full_data: int) -> None:
    """Walk the chromosome B+ tree and the data R-tree, checking every count and offset."""

    def damaged(what: str) -> InputFormatError:
        return InputFormatError(path, f"damaged bigWig file: its {what} is inconsistent")

    def read(offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > size:
            raise damaged("index (an offset points outside the file)")
        handle.seek(offset)
        return handle.read(n)

    magic, block, key_size, value_size, n_chroms, _ = struct.unpack(
        "<IIIIQQ", read(chrom_tree, 32))
    if magic != 0x78CA8C91 or value_size != 8 or not 0 < key_size <= 256 or block == 0:
        raise damaged("chromosome tree header")
    ids: set[int] = set()
    pending = [(chrom_tree + 32, 0)]
    while pending:
        offset, depth = pending.pop()
        leaf, _, count = struct.unpack("<BBH", read(offset, 4))
        if depth > 32 or count > block or leaf > 1:
            raise damaged("chromosome tree")
        item = key_size + 8
        items = read(offset + 4, count * item)
        for i in range(count):
            if leaf:
                chrom_id, _ = struct.unpack_from("<II", items, i * item + key_size)
                if chrom_id >= n_chroms or chrom_id in ids or items[i * item] == 0:
                    raise damaged("chromosome tree")
                ids.add(chrom_id)
            else:
                (child,) = struct.unpack_from("<Q", items, i * item + key_size)
                pending.append((child, depth + 1))
    if len(ids) != n_chroms:
        raise damaged("chromosome tree")
    magic, block, _, _, _, _, _, _, _ = struct.unpack("<IIQIIIIQI", read(full_index, 44))
    if magic != 0x2468ACE0 or block == 0:
        raise damaged("data index header")
    pending = [(full_index + 48, 0)]
    while pending:
        offset, depth = pending.pop()
        leaf, _, count = struct.unpack("<BBH", read(offset, 4))
        if depth > 32 or count > block or leaf > 1:
            raise damaged("data index")
        item = 32 if leaf else 24
        items = read(offset + 4, count * item)
        for i in range(count):
            start_chrom, _, end_chrom, _ = struct.unpack_from("<IIII", items, i * item)
            if start_chrom >= n_chroms or end_chrom >= n_chroms or start_chrom > end_chrom:
                raise damaged("data index")
            if leaf:
                data, data_size = struct.unpack_from("<QQ", items, i * item + 16)
                if data < full_data or data + data_size > size:
                    raise damaged("data index (a block lies outside the file)")
            else:
                (child,) = struct.unpack_from("<Q", items, i * item + 16)
                pending.append((child, depth + 1))


def _bedgraph_intervals(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    try:
        return _parse_bedgraph(path)
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputFormatError(path, f"neither a bigWig file nor a readable text bedGraph "
                                     f"({type(err).__name__})") from None


def _check_same_chromosomes(path: Path, sizes: Mapping[str, int], reference: Path,
                            layout: Mapping[str, int], exact_lengths: bool) -> None:
    """InputFormatError naming ``path`` when its chromosomes differ from ``reference``'s."""
    extra = [c for c in sizes if c not in layout]
    missing = [c for c in layout if c not in sizes]
    if extra or missing:
        what = []
        if extra:
            what.append(f"has {', '.join(extra[:5])}, which {reference.name} lacks")
        if missing:
            what.append(f"lacks {', '.join(missing[:5])} of {reference.name}")
        raise InputFormatError(path, f"chromosome mismatch between tracks: it {' and '.join(what)}"
                               "; give --regions to read only shared regions")
    for name, size in sizes.items():
        if (size != layout[name]) if exact_lengths else (size > layout[name]):
            raise InputFormatError(path, f"chromosome mismatch between tracks: {name} has length "
                                         f"{size} here but {layout[name]} in {reference.name}",
                                   record=name)


def read_track_files(
    tracks: Mapping[tuple[str, str], PathLike],
    *,
    regions: Sequence[tuple[str, int, int]] | None = None,
    bin_size: int = 25,
    scale: str = "neglog10p",
    fill_value: float = 0.0,
) -> xr.Dataset:
    """Read one bigWig or bedGraph file per ``(cell, assay)`` into a binned signal dataset.

    Parameters
    ----------
    tracks
        ``(cell, assay) -> path``. The format is told by the file's content: bigWig by its magic
        number, anything else is read as bedGraph (plain or gzip).
    regions
        ``(chrom, start, end)`` regions, 0-based half-open, non-overlapping. By default every
        chromosome of the files, whole; then all tracks must have the same chromosomes (and
        bigWig files the same lengths).
    bin_size
        Bin width in bp; each bin holds the base-weighted mean of the covered bases.
    scale
        What the files hold: ``"neglog10p"`` (raw −log10 p) or ``"arcsinh"``.
    fill_value
        Value of bins with no covered base.

    Returns
    -------
    xarray.Dataset
        Signal dataset over the sorted cells and assays; a cell × assay pair with no file is
        unobserved (NaN). ``attrs["chrom_sizes"]`` holds every chromosome's length (from the
        first bigWig's header, or else the largest interval or region end of the bedGraph
        files), the header for writing predictions back with :func:`write_bigwig`.

    Raises
    ------
    FileNotFoundError, InputFormatError
        Naming the file: a missing, empty, damaged or non-bigWig file, a bad bedGraph line, or
        chromosomes and regions that do not match between the tracks.
    """
    if not tracks:
        raise InvalidArgumentError("no track files given")
    if bin_size <= 0:
        raise InvalidArgumentError(f"bin size must be positive, got {bin_size}")
    paths = {key: Path(p) for key, p in tracks.items()}
    formats = {key: track_file_format(path) for key, path in paths.items()}
    bedgraphs = {key: _bedgraph_intervals(paths[key])
                 for key, kind in formats.items() if kind == "bedgraph"}
    handles: dict[tuple[str, str], Any] = {}  # each bigWig is checked and opened once
    try:
        for key, kind in formats.items():
            if kind == "bigwig":
                handles[key] = _open_bigwig(paths[key])
        return _read_opened_tracks(paths, formats, bedgraphs, handles, regions=regions,
                                   bin_size=bin_size, scale=scale, fill_value=fill_value)
    finally:
        for handle in handles.values():
            handle.close()


def _read_opened_tracks(paths: Mapping[tuple[str, str], Path], formats: Mapping[tuple[str, str], str],
                        bedgraphs: Mapping[tuple[str, str], Any],
                        handles: Mapping[tuple[str, str], Any], *,
                        regions: Sequence[tuple[str, int, int]] | None, bin_size: int, scale: str,
                        fill_value: float) -> xr.Dataset:
    """:func:`read_track_files` once its bedGraphs are parsed and its bigWigs are open."""
    sizes = {key: ({str(c): int(n) for c, n in _bigwig_chroms(handles[key], paths[key]).items()}
                   if kind == "bigwig"
                   else {c: int(e[-1]) for c, (_, e, _) in bedgraphs[key].items()})
             for key, kind in formats.items()}
    bigwigs = [key for key, kind in formats.items() if kind == "bigwig"]
    reference = paths[bigwigs[0] if bigwigs else next(iter(paths))]
    if bigwigs:
        layout = dict(sizes[bigwigs[0]])
    else:
        layout = {}
        for found in sizes.values():
            for name, end in found.items():
                layout[name] = max(end, layout.get(name, 0))
    if regions is None:
        for key, found in sizes.items():
            _check_same_chromosomes(paths[key], found, reference, layout,
                                    exact_lengths=formats[key] == "bigwig")
        spans = [(name, 0, size) for name, size in layout.items()]
    else:
        spans = [(str(c), int(s), int(e)) for c, s, e in regions]
        for chrom, start, end in spans:
            if not 0 <= start < end:
                raise InvalidArgumentError(f"region {chrom}:{start}-{end} is empty or negative")
        ordered = sorted(spans)
        for (c1, _, e1), (c2, s2, _) in itertools.pairwise(ordered):
            if c1 == c2 and s2 < e1:
                raise InvalidArgumentError(f"regions overlap on {c1} near {s2}; give disjoint regions")
        for key, found in sizes.items():
            for chrom, _, end in spans:
                if chrom not in found:
                    kind = "is not in the file" if formats[key] == "bigwig" else "has no intervals"
                    raise InputFormatError(paths[key], f"chromosome {chrom} of --regions {kind} "
                                           f"(it has {', '.join(list(found)[:5])})", record=chrom)
                if formats[key] == "bigwig" and end > found[chrom]:
                    raise InputFormatError(paths[key], f"region {chrom}:{end} ends beyond the "
                                           f"chromosome's length {found[chrom]}", record=chrom)
        if not bigwigs:  # bedGraph files carry no lengths: reach at least to each region's end
            for chrom, _, end in spans:
                layout[chrom] = max(end, layout.get(chrom, 0))
    edges = [_bin_edges(start, end, bin_size) for _, start, end in spans]
    bin_chrom = np.concatenate([np.full(e.size - 1, c) for (c, _, _), e in zip(spans, edges,
                                                                                 strict=True)])
    bin_start = np.concatenate([e[:-1] for e in edges])
    cells = sorted({c for c, _ in paths})
    assays = sorted({a for _, a in paths})
    signal = np.full((len(cells), len(assays), bin_start.size), np.nan, dtype=np.float32)
    for (cell, assay), path in paths.items():
        row = signal[cells.index(cell), assays.index(assay)]
        offset = 0
        for (chrom, _, _), edge in zip(spans, edges, strict=True):
            n = edge.size - 1
            if formats[(cell, assay)] == "bigwig":
                values = _binned_bigwig(handles[(cell, assay)], path, chrom, edge, bin_size,
                                        fill_value=fill_value)
            else:
                s, e, v = bedgraphs[(cell, assay)][chrom]
                values = _interval_bin_means(s, e, v, edge, fill_value)
            row[offset: offset + n] = values
            offset += n
    observed = np.zeros((len(cells), len(assays)), dtype=bool)
    for cell, assay in paths:
        observed[cells.index(cell), assays.index(assay)] = True
    return create_signal_dataset(
        signal, cells=cells, assays=assays, observed=observed, bin_start=bin_start,
        bin_chrom=bin_chrom, bin_size=bin_size, scale=scale,
        attrs={"source": "bigWig/bedGraph tracks", "chrom_sizes": layout})


# --------------------------------------------------------------------------- zarr


def _jsonable(value: Any) -> Any:
    """Convert attribute values to JSON types (zarr stores attributes as JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain_strings(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates as fixed-width unicode, which zarr format 2 round-trips."""
    updates = {}
    for name, coord in ds.coords.items():
        if coord.dtype.kind in "OT" or (coord.dtype.kind == "U"):
            updates[name] = coord.copy(data=np.asarray(coord.values).astype(str))
    return ds.assign_coords(updates) if updates else ds


def write_zarr(
    ds: xr.Dataset,
    path: PathLike,
    *,
    overwrite: bool = False,
    chunks: Mapping[str, int] | None = None,
) -> Path:
    """Write a signal dataset to a zarr store (format 2, consolidated), atomically.

    The store is written into a temporary sibling directory and renamed into place, so an
    interrupted write leaves no partial store at ``path``.

    Parameters
    ----------
    ds
        A signal dataset (validated first).
    path
        Destination directory (conventionally ``*.zarr``).
    overwrite
        Replace an existing store; otherwise an existing ``path`` is an error.
    chunks
        Chunk sizes per dimension, for example ``{"bin": 100_000}``.

    Returns
    -------
    Path
        The store.
    """
    variables.validate(ds, ["signal", "observed"])
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = _plain_strings(ds.drop_encoding())
    out.attrs = _jsonable(dict(out.attrs))
    for name in out.variables:
        out[name].attrs = _jsonable(dict(out[name].attrs))
    if chunks:
        out = out.chunk(dict(chunks))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        json.dumps(out.attrs)  # fail early if an attribute cannot be stored
        out.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
        if path.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, backup / "store")
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_zarr(path: PathLike, *, load: bool = False) -> xr.Dataset:
    """Open a signal dataset written by :func:`write_zarr` (lazy, dask-backed unless ``load``).

    Raises
    ------
    InputFormatError
        If ``path`` is not a zarr store holding a valid signal dataset.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        ds = xr.open_zarr(path, consolidated=None)
    except Exception as err:
        raise InputFormatError(path, f"not a readable zarr store ({err})") from err
    ds = _plain_strings(ds)
    try:
        variables.validate(ds, ["signal", "observed", "bin_start", "bin_chrom"])
        signal_scale(ds)
    except ValueError as err:
        raise InputFormatError(path, f"not a signal dataset: {err}") from err
    return ds.load() if load else ds
