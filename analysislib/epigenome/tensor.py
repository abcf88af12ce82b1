"""The epigenomic signal tensor: an xarray Dataset of tracks over cell × assay × bin.

Values are Roadmap-style −log10 p-values at 25 bp, as in eDICE's data files
(``edice/data_loaders/hdf5_datasets.py`` in ``alex-hh/eDICE``); models train on their arcsinh
transform, and an ``observed`` mask says which (cell, assay) tracks were measured. Unobserved
tracks hold NaN.

Layout of a signal dataset:

- ``signal``: float32, dims ``(cell, assay, bin)`` or ``(individual, cell, assay, bin)``;
- ``observed``: bool, dims ``(cell, assay)`` or ``(individual, cell, assay)``;
- coordinates ``cell``, ``assay`` (and ``individual``), ``bin`` (0, 1, 2, ...), ``bin_start``
  (0-based start on its chromosome) and ``bin_chrom``;
- attributes ``scale`` (``"neglog10p"`` or ``"arcsinh"``, also set on ``signal``) and
  ``bin_size`` (bp).

The module also holds the per-track statistics used to calibrate the simulator against real
Roadmap tracks (:func:`track_summary`, :func:`cross_mark_correlation`), and
:func:`cross_cell_agreement`, which tells from observed marks alone whether a new cell type
follows the average of the others (where AVG is hard to beat).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError

__all__ = [
    "SCALES",
    "create_signal_dataset",
    "cross_cell_agreement",
    "cross_mark_correlation",
    "hide_tracks",
    "observed_tracks",
    "select_tracks",
    "signal_scale",
    "stack_tracks",
    "to_arcsinh",
    "to_neglog10p",
    "track_summary",
]

SCALES = ("neglog10p", "arcsinh")
TRACK_DIMS = ("cell", "assay", "bin")
INDIVIDUAL_TRACK_DIMS = ("individual", "cell", "assay", "bin")


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise InvalidArgumentError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def create_signal_dataset(
    signal: Any,
    *,
    cells: Sequence[str],
    assays: Sequence[str],
    individuals: Sequence[str] | None = None,
    observed: Any | None = None,
    bin_start: Any | None = None,
    bin_chrom: Any | None = None,
    chrom: str = "chr1",
    bin_size: int = 25,
    scale: str = "neglog10p",
    extra: Mapping[str, tuple[tuple[str, ...], Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build and validate an epigenomic signal dataset.

    Parameters
    ----------
    signal
        NumPy or dask array of shape ``(cells, assays, bins)``, or
        ``(individuals, cells, assays, bins)`` when ``individuals`` is given. Cast to float32.
    cells, assays, individuals
        Labels of the leading axes.
    observed
        Boolean mask of shape ``signal.shape[:-1]``. By default a track is observed when it has
        at least one finite value. Values of unobserved tracks are replaced by NaN.
    bin_start
        0-based start of each bin; by default ``bin * bin_size`` (one contiguous region).
    bin_chrom
        Chromosome of each bin; by default ``chrom`` for every bin.
    chrom
        Chromosome name used when ``bin_chrom`` is not given.
    bin_size
        Bin width in bp (25 for Roadmap tracks).
    scale
        ``"neglog10p"`` (−log10 p-values) or ``"arcsinh"`` (their arcsinh transform).
    extra
        Further variables, ``name -> (dims, values)``, for example simulation truth.
    attrs
        Further dataset attributes.

    Returns
    -------
    xarray.Dataset
        Validated against :mod:`analysislib.variables` (``signal``, ``observed``,
        ``bin_start``, ``bin_chrom``).

    Examples
    --------
    >>> import numpy as np
    >>> ds = create_signal_dataset(np.zeros((2, 1, 4)), cells=["E003", "E017"], assays=["H3K4me3"])
    >>> ds["signal"].dims, ds.attrs["scale"]
    (('cell', 'assay', 'bin'), 'neglog10p')
    """
    _check_scale(scale)
    if bin_size <= 0:
        raise InvalidArgumentError(f"bin_size must be positive, got {bin_size}")
    dims = TRACK_DIMS if individuals is None else INDIVIDUAL_TRACK_DIMS
    if getattr(signal, "ndim", np.ndim(signal)) != len(dims):
        raise InvalidArgumentError(f"signal must have {len(dims)} dimensions {dims}, got shape {np.shape(signal)}")
    if not hasattr(signal, "dtype") or not hasattr(signal, "shape"):
        signal = np.asarray(signal)
    if signal.dtype != np.float32:
        signal = signal.astype(np.float32)
    labels = [cells, assays] if individuals is None else [individuals, cells, assays]
    for name, values, size in zip(dims[:-1], labels, signal.shape[:-1], strict=True):
        if len(values) != size:
            raise InvalidArgumentError(f"{len(values)} {name} labels for an axis of length {size}")
        if len(set(values)) != len(values):
            raise InvalidArgumentError(f"{name} labels are not unique: {list(values)}")
    n_bins = signal.shape[-1]

    if observed is None:
        observed = np.isfinite(signal).any(axis=-1)
    observed = observed.astype(bool) if hasattr(observed, "astype") else np.asarray(observed, bool)
    if tuple(observed.shape) != tuple(signal.shape[:-1]):
        raise InvalidArgumentError(f"observed has shape {observed.shape}; expected {signal.shape[:-1]}")
    if hasattr(signal, "dask") or hasattr(observed, "dask"):
        import dask.array as da

        signal = da.where(observed[..., None], signal, np.float32(np.nan))
    elif not np.all(observed):
        signal = np.where(observed[..., None], signal, np.float32(np.nan))

    bin_index = np.arange(n_bins, dtype=np.int64)
    bin_start = bin_index * bin_size if bin_start is None else np.asarray(bin_start)
    if bin_chrom is None:
        bin_chrom = np.full(n_bins, chrom)
    bin_chrom = np.asarray(bin_chrom).astype(str)
    for name, values in (("bin_start", bin_start), ("bin_chrom", bin_chrom)):
        if values.shape != (n_bins,):
            raise InvalidArgumentError(f"{name} has shape {values.shape}; expected ({n_bins},)")

    coords: dict[str, Any] = {
        "cell": np.asarray(cells, dtype=str),
        "assay": np.asarray(assays, dtype=str),
        "bin": bin_index,
        "bin_start": ("bin", bin_start.astype(np.int64)),
        "bin_chrom": ("bin", bin_chrom),
    }
    if individuals is not None:
        coords["individual"] = np.asarray(individuals, dtype=str)
    data_vars: dict[str, Any] = {
        "signal": (dims, signal, {"scale": scale}),
        "observed": (dims[:-1], observed),
    }
    data_vars.update(dict(extra or {}))
    ds = xr.Dataset(data_vars, coords=coords,
                    attrs={**dict(attrs or {}), "scale": scale, "bin_size": int(bin_size)})
    variables.validate(ds, ["signal", "observed", "bin_start", "bin_chrom"])
    return ds


def signal_scale(obj: xr.Dataset | xr.DataArray) -> str:
    """Return the scale (``"neglog10p"`` or ``"arcsinh"``) recorded on a dataset or track.

    Raises
    ------
    ValueError
        If no ``scale`` attribute is present, since guessing could transform twice.
    """
    scale = obj.attrs.get("scale")
    if scale is None and isinstance(obj, xr.Dataset) and "signal" in obj:
        scale = obj["signal"].attrs.get("scale")
    if scale is None:
        raise InvalidArgumentError("no 'scale' attribute: cannot tell whether values are −log10 p or arcsinh")
    return _check_scale(scale)


def _transform(obj: xr.Dataset | xr.DataArray, target: str, func: Any) -> xr.Dataset | xr.DataArray:
    if signal_scale(obj) == target:
        return obj
    if isinstance(obj, xr.Dataset):
        out = obj.copy()
        track = func(obj["signal"])
        track.attrs = {**obj["signal"].attrs, "scale": target}
        out["signal"] = track
        out.attrs["scale"] = target
        return out
    out_da = func(obj)
    out_da.attrs = {**obj.attrs, "scale": target}
    return out_da


def to_arcsinh(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Return the signal on the arcsinh scale; data already on that scale are returned unchanged.

    Parameters
    ----------
    obj
        A signal dataset, or a track DataArray carrying a ``scale`` attribute.
    """
    return _transform(obj, "arcsinh", np.arcsinh)


def to_neglog10p(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Return the signal as −log10 p (``sinh`` of arcsinh values); never transforms twice.

    Parameters
    ----------
    obj
        A signal dataset, or a track DataArray carrying a ``scale`` attribute.
    """
    return _transform(obj, "neglog10p", np.sinh)


def _track_dims(ds: xr.Dataset) -> tuple[str, ...]:
    variables.validate(ds, ["signal", "observed"])
    return tuple(ds["observed"].dims)


def observed_tracks(ds: xr.Dataset) -> list[tuple[str, ...]]:
    """List the observed tracks as ``(cell, assay)`` or ``(individual, cell, assay)`` tuples."""
    dims = _track_dims(ds)
    mask = np.asarray(ds["observed"].values, dtype=bool)
    labels = [ds[d].values for d in dims]
    return [tuple(str(lab[i]) for lab, i in zip(labels, idx, strict=True))
            for idx in zip(*np.nonzero(mask), strict=True)]


def select_tracks(
    ds: xr.Dataset,
    *,
    cells: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    individuals: Sequence[str] | None = None,
    bins: slice | None = None,
) -> xr.Dataset:
    """Subset a signal dataset by labels (in the order given) and optionally by bin positions.

    Parameters
    ----------
    cells, assays, individuals
        Labels to keep; ``None`` keeps all.
    bins
        Positional slice along ``bin``.
    """
    indexers: dict[Hashable, Any] = {}
    for dim, wanted in (("cell", cells), ("assay", assays), ("individual", individuals)):
        if wanted is None:
            continue
        if dim not in ds.dims:
            raise InvalidArgumentError(f"dataset has no dimension {dim!r}")
        missing = sorted(set(wanted) - set(ds[dim].values.tolist()))
        if missing:
            raise KeyError(f"{dim} labels not in dataset: {missing}")
        indexers[dim] = list(wanted)
    out = ds.sel(indexers)
    if bins is not None:
        out = out.isel(bin=bins)
    return out


def hide_tracks(ds: xr.Dataset, tracks: Iterable[Sequence[str]]) -> xr.Dataset:
    """Mark tracks unobserved and blank their values (NaN), for example to hold them out.

    Parameters
    ----------
    tracks
        ``(cell, assay)`` or ``(individual, cell, assay)`` tuples, matching ``observed``'s dims.
    """
    dims = _track_dims(ds)
    observed = np.asarray(ds["observed"].values, dtype=bool).copy()
    index = {d: {str(v): i for i, v in enumerate(ds[d].values)} for d in dims}
    for track in tracks:
        if len(track) != len(dims):
            raise InvalidArgumentError(f"track {tuple(track)} does not match dims {dims}")
        try:
            observed[tuple(index[d][str(v)] for d, v in zip(dims, track, strict=True))] = False
        except KeyError as err:
            raise KeyError(f"track {tuple(track)} is not in the dataset") from err
    out = ds.copy()
    out["observed"] = (dims, observed)
    track = ds["signal"].where(xr.DataArray(observed, dims=dims))
    track.attrs = dict(ds["signal"].attrs)
    out["signal"] = track.astype(np.float32)
    return out


def stack_tracks(
    tracks: Mapping[tuple[str, str], xr.DataArray | np.ndarray],
    *,
    cells: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    scale: str | None = None,
    bin_size: int | None = None,
    chrom: str = "chr1",
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Assemble single tracks into the full cell × assay grid; absent tracks are unobserved.

    Parameters
    ----------
    tracks
        ``(cell, assay) -> values`` with one value per bin. DataArrays from
        :func:`analysislib.io.tracks.read_bigwig` or :func:`~analysislib.io.tracks.read_bedgraph`
        carry ``bin_start``, ``bin_chrom``, ``scale`` and ``bin_size``, which are used.
    cells, assays
        Grid labels in order; by default the sorted labels present in ``tracks``.
    scale, bin_size
        Override or supply the scale and bin width (defaults: from the tracks, else
        ``"neglog10p"`` and 25).
    chrom
        Chromosome for plain arrays without coordinates.
    """
    if not tracks:
        raise InvalidArgumentError("no tracks given")
    cells = sorted({c for c, _ in tracks}) if cells is None else list(cells)
    assays = sorted({a for _, a in tracks}) if assays is None else list(assays)
    first = next(iter(tracks.values()))
    n_bins = int(np.shape(first)[-1])
    signal = np.full((len(cells), len(assays), n_bins), np.nan, dtype=np.float32)
    observed = np.zeros((len(cells), len(assays)), dtype=bool)
    cell_index = {c: i for i, c in enumerate(cells)}
    assay_index = {a: j for j, a in enumerate(assays)}
    scales = set()
    for (cell, assay), values in tracks.items():
        if cell not in cell_index or assay not in assay_index:
            continue
        if np.shape(values) != (n_bins,):
            raise InvalidArgumentError(f"track ({cell}, {assay}) has shape {np.shape(values)}; expected ({n_bins},)")
        if isinstance(values, xr.DataArray) and "scale" in values.attrs:
            scales.add(values.attrs["scale"])
        signal[cell_index[cell], assay_index[assay]] = np.asarray(values, dtype=np.float32)
        observed[cell_index[cell], assay_index[assay]] = True
    if len(scales) > 1:
        raise InvalidArgumentError(f"tracks mix scales {sorted(scales)}; convert them first")
    if scale is None:
        scale = scales.pop() if scales else "neglog10p"
    bin_start = bin_chrom = None
    if isinstance(first, xr.DataArray) and "bin_start" in first.coords:
        bin_start, bin_chrom = first["bin_start"].values, first["bin_chrom"].values
    if bin_size is None:
        bin_size = int(getattr(first, "attrs", {}).get("bin_size", 25))
    return create_signal_dataset(
        signal, cells=cells, assays=assays, observed=observed, bin_start=bin_start,
        bin_chrom=bin_chrom, chrom=chrom, bin_size=bin_size, scale=scale, attrs=attrs)


def _lag1_autocorrelation(x: np.ndarray) -> float:
    a, b = x[:-1], x[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def track_summary(ds: xr.Dataset, threshold: float = 2.0) -> pd.DataFrame:
    """Per-track statistics used to compare simulated and real tracks.

    Parameters
    ----------
    ds
        A signal dataset on either scale.
    threshold
        −log10 p cut-off for ``fraction_above`` (2 means p < 0.01).

    Returns
    -------
    pandas.DataFrame
        One row per observed track, with the track's labels (``individual`` if present,
        ``cell``, ``assay``) and ``fraction_above`` (share of bins with −log10 p above
        ``threshold``), ``mean`` and ``median`` (−log10 p scale), ``q99`` and
        ``lag1_autocorrelation`` (Pearson correlation of neighbouring bins, arcsinh scale).
    """
    dims = _track_dims(ds)
    arcsinh = to_arcsinh(ds)["signal"]
    rows = []
    for track in observed_tracks(ds):
        selector = dict(zip(dims, track, strict=True))
        x = np.asarray(arcsinh.sel(selector).values, dtype=np.float64)
        p = np.sinh(x)
        finite = p[np.isfinite(p)]
        rows.append({
            **selector,
            "fraction_above": float(np.mean(finite > threshold)),
            "mean": float(finite.mean()),
            "median": float(np.median(finite)),
            "q99": float(np.quantile(finite, 0.99)),
            "lag1_autocorrelation": _lag1_autocorrelation(x),
        })
    return pd.DataFrame(rows, columns=[*dims, "fraction_above", "mean", "median", "q99",
                                       "lag1_autocorrelation"])


def cross_mark_correlation(ds: xr.Dataset) -> pd.DataFrame:
    """Mean Pearson correlation between each pair of assays within a cell, on the arcsinh scale.

    The correlation of two assays is computed in every cell (and individual) where both are
    observed, then averaged over those cells.

    Returns
    -------
    pandas.DataFrame
        Square, assay × assay; NaN where a pair is never observed together.
    """
    dims = _track_dims(ds)
    assays = [str(a) for a in ds["assay"].values]
    n = len(assays)
    total = np.zeros((n, n))
    count = np.zeros((n, n))
    arcsinh = to_arcsinh(ds)["signal"].transpose(*dims, "bin")
    observed = np.asarray(ds["observed"].transpose(*dims).values, dtype=bool)
    flat_signal = arcsinh.values.reshape(-1, n, arcsinh.sizes["bin"])
    for block, mask in zip(flat_signal, observed.reshape(-1, n), strict=True):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        x = block[idx].astype(np.float64)
        keep = np.all(np.isfinite(x), axis=0)
        corr = np.atleast_2d(np.corrcoef(x[:, keep]))
        total[np.ix_(idx, idx)] += np.nan_to_num(corr)
        count[np.ix_(idx, idx)] += np.isfinite(corr)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.DataFrame(mean, index=pd.Index(assays, name="assay"), columns=assays)


def _agreement(track: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """Pearson r and least-squares slope of ``track`` on the mean of the ``others`` rows."""
    mean = others.mean(axis=0)
    keep = np.isfinite(track) & np.isfinite(mean)
    x, y = mean[keep], track[keep]
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan"), float("nan")
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / np.sqrt((x @ x) * (y @ y))), float((x @ y) / (x @ x))


def cross_cell_agreement(ds: xr.Dataset, cell: str) -> pd.DataFrame:
    """How closely ``cell`` follows the average of the other cell types, per assay.

    For each assay observed in ``cell`` and in at least two other cell types, on the arcsinh
    scale:

    - ``cell_r``, ``cell_slope``: Pearson r and least-squares slope of ``cell``'s track against
      the bin-wise mean of the other cell types' tracks (what AVG predicts);
    - ``others_r``, ``others_slope``: the same for each of those other cell types against the
      mean of the remaining ones, averaged over them;
    - ``n_others``: how many other cell types have the assay.

    A model fitted on the other cell types can only learn the agreement they show among
    themselves. Where ``cell`` agrees with their mean more closely than they agree with each
    other (``cell_r > others_r``), such a model shrinks its predictions more than the cell
    needs and AVG is hard to beat. On the first 400,000 bins of the Roadmap pilot tracks the
    H3K4me3 track of E003 and of E017 follows the other three cell types' mean more closely
    than they follow each other (r 0.75 against 0.63, 0.81 against 0.58), and those of E065 and
    E116 less closely; with only H3K4me3 kept, eDICE is behind AVG on E017 (Pearson and MSE)
    and on E003's MSE, and ahead on both for E065 and E116 (``benchmarks/epigenome_accuracy.py``,
    which prints this table for the kept marks of each left-out cell type). The hidden marks
    are not needed: call it on the marks the new cell type has.

    Raises
    ------
    InvalidArgumentError
        If ``ds`` has an ``individual`` dimension or ``cell`` is not one of its cell types.
    """
    dims = _track_dims(ds)
    if dims != ("cell", "assay"):
        raise InvalidArgumentError(f"cross_cell_agreement needs (cell, assay) tracks, got {dims}")
    cells = [str(c) for c in ds["cell"].values]
    if cell not in cells:
        raise InvalidArgumentError(f"cell type {cell!r} is not in the dataset (cell types: {cells})")
    arcsinh = to_arcsinh(ds)["signal"].transpose("cell", "assay", "bin")
    observed = np.asarray(ds["observed"].transpose("cell", "assay").values, dtype=bool)
    index = cells.index(cell)
    rows = []
    for a, assay in enumerate(str(x) for x in ds["assay"].values):
        others = [c for c in np.flatnonzero(observed[:, a]) if c != index]
        if not observed[index, a] or len(others) < 2:
            continue
        values = np.asarray(arcsinh.isel(assay=a).values, dtype=np.float64)
        cell_r, cell_slope = _agreement(values[index], values[others])
        pairs = np.array([_agreement(values[o], values[[p for p in others if p != o]])
                          for o in others])
        defined = np.isfinite(pairs[:, 0])
        others_r, others_slope = pairs[defined].mean(axis=0) if defined.any() else (np.nan, np.nan)
        rows.append({"assay": assay, "cell_r": cell_r, "cell_slope": cell_slope,
                     "others_r": float(others_r), "others_slope": float(others_slope),
                     "n_others": len(others)})
    columns = ["assay", "cell_r", "cell_slope", "others_r", "others_slope", "n_others"]
    return pd.DataFrame(rows, columns=columns).set_index("assay")
