"""Occupancy of enriched bins across tissues and individuals; individual-specific peaks (eDICE Figs. 5–6).

Follows eDICE (Hawkins-Hooker et al., *Nat Commun* 2023), Results "eDICE accurately predicts
personalized epigenomes in unseen tissues" (Fig. 5b–d) and "eDICE captures epigenetic variation
between individuals" (Fig. 6c–d), and Methods "Enrichment detection" and "Individual-specific
imputation metrics".

Enriched bins
    The 25 bp bins inside peaks called on an *observed* track (MACS2 rule,
    :func:`analysislib.epigenome.peaks.call_peaks`, cut-off p < 0.01). Unobserved tracks have no
    enriched bins and are left out of every count (:func:`enriched_bins` keeps the observed mask
    as a coordinate).
Occupancy (Fig. 5b, c)
    For every bin enriched in at least one observed entry along a dimension (``cell``: across
    tissues, Fig. 5b; ``individual``: across individuals, Fig. 5c), the number of entries in which
    it is enriched; :func:`occupancy_histogram` tabulates these counts per group (e.g. per
    individual and assay). Occupancy 1 means the bin is specific to one tissue (or individual).
Joint occupancy (Fig. 5d)
    For the enriched bins of one track (individual *i*, tissue *t*, assay *a*), the number of
    tissues of *i* and the number of individuals with tissue *t* in which the bin is also
    enriched (both counts include the track itself), as a tissues × individuals table of bin
    counts (:func:`joint_occupancy`). The paper draws it as a 3-D histogram; here it is a heatmap
    (:func:`analysislib.plotting.epigenome.plot_joint_occupancy`).
Individual-specific peaks (Fig. 6c, d)
    The paper's definition: peaks detected on the measured target-individual track that span at
    least 150 bp (about one nucleosome) and are absent in the training individual; the AUPRC of
    the imputation is computed after excluding the regions of peaks conserved between the two
    individuals and of individual-specific peaks shorter than 150 bp, and it is compared with the
    fraction of positive bins (the AUPRC of a random scorer). Choices the paper leaves open, made
    here (:func:`individual_specific_regions`):

    - a target peak is *conserved* when it overlaps a training-individual peak (same tissue and
      assay) by at least 1 bp; otherwise it is *specific*;
    - excluded bins are those of conserved target peaks, of the training peaks they overlap (the
      whole conserved region, both extents) and of specific peaks shorter than ``min_length``;
    - positives are the bins of the remaining specific peaks; every other bin (background and
      peaks present only in the training individual) is a negative, so a method copying the
      training individual is penalised there, as it should be for individual-specific signal;
    - bins where a method has no finite prediction are dropped for that method
      (:func:`individual_specific_auprc`).

    The AUPRC is :func:`analysislib.epigenome.metrics.average_precision` (scikit-learn's
    step-wise average precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.metrics import average_precision
from analysislib.epigenome.peaks import (
    DEFAULT_CUTOFF,
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_LENGTH,
    call_peaks,
    peak_mask,
)
from analysislib.errors import InvalidArgumentError

__all__ = [
    "MIN_SPECIFIC_LENGTH",
    "IndividualSpecificRegions",
    "enriched_bins",
    "individual_specific_auprc",
    "individual_specific_regions",
    "joint_occupancy",
    "occupancy_histogram",
    "peak_overlaps",
]

#: Shortest individual-specific peak kept (bp): about the DNA wrapped around one nucleosome.
MIN_SPECIFIC_LENGTH = 150


# --------------------------------------------------------------------------- enriched bins


def enriched_bins(
    ds: xr.Dataset,
    *,
    cutoff: float = DEFAULT_CUTOFF,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_gap: int = DEFAULT_MAX_GAP,
    method: str = "numpy",
) -> xr.DataArray:
    """Bins inside peaks called on every observed track of a signal dataset.

    Parameters
    ----------
    ds
        Signal dataset with ``signal`` ``(cell, assay, bin)`` or ``(individual, cell, assay,
        bin)``, ``observed``, ``bin_start`` (and ``bin_chrom``); either scale.
    cutoff, min_length, max_gap, method
        Peak-calling settings of :func:`analysislib.epigenome.peaks.call_peaks`.

    Returns
    -------
    xarray.DataArray
        ``bool`` with the dims of ``signal``; unobserved tracks are all ``False``. The observed
        mask is attached as the coordinate ``observed`` and the peak settings as attributes.
    """
    for name in ("signal", "observed"):
        if name not in ds:
            raise InvalidArgumentError(f"enriched_bins: the dataset has no {name!r} variable")
    signal = ds["signal"]
    if signal.dims[-1] != "bin":
        raise InvalidArgumentError(f"enriched_bins: 'signal' must end with the 'bin' dimension, got "
                         f"{signal.dims}")
    track_dims = signal.dims[:-1]
    observed = ds["observed"].transpose(*track_dims)
    scale = ds.attrs.get("scale", signal.attrs.get("scale"))
    if scale is None:
        raise InvalidArgumentError("enriched_bins: the dataset has no 'scale' attribute")
    bin_size = int(ds.attrs.get("bin_size", signal.attrs.get("bin_size", 25)))
    coords = {name: ds[name] for name in ("bin_start", "bin_chrom") if name in ds.coords}
    if "bin_start" not in coords:
        raise InvalidArgumentError("enriched_bins: the dataset has no 'bin_start' coordinate")
    bin_chrom = coords["bin_chrom"].values if "bin_chrom" in coords else None
    out = np.zeros(signal.shape, dtype=bool)
    mask = np.asarray(observed.values, dtype=bool)
    for index in zip(*np.nonzero(mask), strict=True):
        selection = dict(zip(track_dims, index, strict=True))
        track = signal.isel(selection)
        track = xr.DataArray(np.asarray(track.values), dims="bin", coords=coords,
                             attrs={"scale": scale, "bin_size": bin_size})
        peaks = call_peaks(track, cutoff=cutoff, min_length=min_length, max_gap=max_gap,
                           method=method, bin_size=bin_size)
        out[index] = peak_mask(peaks, coords["bin_start"].values, bin_size, bin_chrom=bin_chrom)
    result = xr.DataArray(out, dims=signal.dims,
                          coords={**{d: signal[d] for d in signal.dims if d in signal.coords},
                                  **coords, "observed": (track_dims, mask)},
                          name="enriched",
                          attrs={"cutoff": float(cutoff), "min_length": int(min_length),
                                 "max_gap": int(max_gap), "bin_size": bin_size})
    return result


def _check_enriched(enriched: xr.DataArray) -> np.ndarray:
    if not isinstance(enriched, xr.DataArray) or "bin" not in enriched.dims:
        raise InvalidArgumentError("expected the output of enriched_bins (a DataArray with a 'bin' dim)")
    if "observed" not in enriched.coords:
        raise InvalidArgumentError("enriched bins carry no 'observed' coordinate; use enriched_bins()")
    return np.asarray(enriched["observed"].values, dtype=bool)


def occupancy_histogram(enriched: xr.DataArray, over: str = "cell") -> pd.DataFrame:
    """Histogram of how many entries along ``over`` share each enriched bin (eDICE Fig. 5b, c).

    Parameters
    ----------
    enriched
        Output of :func:`enriched_bins`.
    over
        ``"cell"`` (occupancy across tissues) or ``"individual"`` (across individuals), or any
        other track dimension.

    Returns
    -------
    pandas.DataFrame
        One row per group (every combination of the other track dimensions) and occupancy
        ``1..n_observed``: the group's labels, ``occupancy``, ``n_bins`` (bins enriched in exactly
        that many entries), ``fraction`` (of the group's bins enriched at least once) and
        ``n_observed`` (observed entries along ``over`` in the group). Groups with fewer than
        one observed entry are left out.
    """
    observed = _check_enriched(enriched)
    track_dims = [d for d in enriched.dims if d != "bin"]
    if over not in track_dims:
        raise InvalidArgumentError(f"over must be one of the track dimensions {track_dims}, got {over!r}")
    groups = [d for d in track_dims if d != over]
    values = enriched.transpose(*groups, over, "bin").values
    obs = xr.DataArray(observed, dims=enriched["observed"].dims).transpose(*groups, over).values
    rows = []
    for index in np.ndindex(*values.shape[:-2]):
        n_observed = int(obs[index].sum())
        if n_observed == 0:
            continue
        counts = values[index][obs[index]].sum(axis=0)
        hist = np.bincount(counts, minlength=n_observed + 1)[1:]
        total = int(hist.sum())
        labels = {d: str(enriched[d].values[i]) if d in enriched.coords else int(i)
                  for d, i in zip(groups, index, strict=True)}
        for occupancy, n in enumerate(hist, start=1):
            rows.append({**labels, "occupancy": occupancy, "n_bins": int(n),
                         "fraction": n / total if total else np.nan, "n_observed": n_observed})
    return pd.DataFrame(rows, columns=[*groups, "occupancy", "n_bins", "fraction",
                                       "n_observed"])


def joint_occupancy(enriched: xr.DataArray, *, individual: str, cell: str,
                    assay: str) -> pd.DataFrame:
    """Tissues × individuals co-occurrence counts of one track's enriched bins (eDICE Fig. 5d).

    Parameters
    ----------
    enriched
        Output of :func:`enriched_bins` with dims ``(individual, cell, assay, bin)``.
    individual, cell, assay
        The track whose enriched bins are counted; it must be observed.

    Returns
    -------
    pandas.DataFrame
        Index ``n_tissues`` (1..number of cells), columns ``n_individuals`` (1..number of
        individuals): the number of the track's enriched bins that are enriched in that many
        observed tissues of ``individual`` and that many observed individuals' ``cell`` (the
        track itself included in both counts).
    """
    _check_enriched(enriched)
    for dim in ("individual", "cell", "assay"):
        if dim not in enriched.dims:
            raise InvalidArgumentError(f"joint_occupancy needs an {dim!r} dimension; got {enriched.dims}")
    data = enriched.sel(assay=assay).transpose("individual", "cell", "bin")
    observed = np.asarray(data["observed"].transpose("individual", "cell").values, dtype=bool)
    people = [str(x) for x in data["individual"].values]
    cells = [str(x) for x in data["cell"].values]
    if individual not in people or cell not in cells:
        raise KeyError(f"track {individual}/{cell}/{assay} is not in the enriched bins "
                       f"(individuals {people}, cells {cells})")
    i, c = people.index(individual), cells.index(cell)
    if not observed[i, c]:
        raise InvalidArgumentError(f"track {individual}/{cell}/{assay} is not observed")
    values = np.asarray(data.values, dtype=bool)
    own = values[i, c]
    n_tissues = (values[i][observed[i]])[:, own].sum(axis=0)
    n_people = (values[:, c][observed[:, c]])[:, own].sum(axis=0)
    table = np.zeros((len(cells), len(people)), dtype=np.int64)
    np.add.at(table, (n_tissues - 1, n_people - 1), 1)
    return pd.DataFrame(table, index=pd.Index(np.arange(1, len(cells) + 1), name="n_tissues"),
                        columns=pd.Index(np.arange(1, len(people) + 1), name="n_individuals"))


# --------------------------------------------------------------------------- Fig. 6


def peak_overlaps(query: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Whether each ``query`` peak overlaps any ``reference`` peak by at least 1 bp.

    Intervals are half-open ``[start, end)`` on the same chromosome (touching peaks do not
    overlap).

    Returns
    -------
    numpy.ndarray
        ``bool``, one entry per query row, in the query's order.
    """
    for name, table in (("query", query), ("reference", reference)):
        missing = {"chrom", "start", "end"} - set(table.columns)
        if missing:
            raise InvalidArgumentError(f"{name} peaks lack columns {sorted(missing)}")
    hits = np.zeros(len(query), dtype=bool)
    if len(query) == 0 or len(reference) == 0:
        return hits
    q_chrom = query["chrom"].astype(str).to_numpy()
    q_start = query["start"].to_numpy(np.int64)
    q_end = query["end"].to_numpy(np.int64)
    for chrom, block in reference.groupby(reference["chrom"].astype(str)):
        rows = np.flatnonzero(q_chrom == chrom)
        if rows.size == 0:
            continue
        ordered = block.sort_values("start", kind="stable")
        r_start = ordered["start"].to_numpy(np.int64)
        r_end_max = np.maximum.accumulate(ordered["end"].to_numpy(np.int64))
        # the reference peaks starting before the query's end; one reaching past its start hits
        last = np.searchsorted(r_start, q_end[rows], side="left") - 1
        hits[rows] = (last >= 0) & (r_end_max[np.maximum(last, 0)] > q_start[rows])
    return hits


@dataclass(frozen=True)
class IndividualSpecificRegions:
    """Bins labelled for the individual-specific AUPRC of one track (eDICE Fig. 6c, d).

    Attributes
    ----------
    labels
        ``bool`` per bin: inside an individual-specific peak of at least ``min_length`` bp.
    evaluated
        ``bool`` per bin: kept for scoring (not in a conserved region or a short specific peak).
    specific_peaks
        The target peaks that overlap no training peak (all lengths), with a ``kept`` column.
    n_conserved, n_short
        Target peaks overlapping a training peak, and specific peaks shorter than
        ``min_length``.
    min_length
        The length rule used (bp).
    """

    labels: np.ndarray
    evaluated: np.ndarray
    specific_peaks: pd.DataFrame
    n_conserved: int
    n_short: int
    min_length: int

    @property
    def n_positive(self) -> int:
        """Positive bins among the evaluated ones."""
        return int((self.labels & self.evaluated).sum())

    @property
    def positive_fraction(self) -> float:
        """Share of evaluated bins that are positive: the AUPRC of a random scorer."""
        n = int(self.evaluated.sum())
        return self.n_positive / n if n else float("nan")


def individual_specific_regions(
    target_peaks: pd.DataFrame,
    training_peaks: pd.DataFrame,
    bin_start: Any,
    bin_size: int,
    *,
    bin_chrom: Any | None = None,
    min_length: int = MIN_SPECIFIC_LENGTH,
) -> IndividualSpecificRegions:
    """Positive and evaluated bins for individual-specific peaks (see the module docstring).

    Parameters
    ----------
    target_peaks
        Peaks called on the measured track of the target individual.
    training_peaks
        Peaks called on the training individual's track of the same tissue and assay.
    bin_start, bin_size, bin_chrom
        The bins to label (as for :func:`analysislib.epigenome.peaks.peak_mask`).
    min_length
        Shortest individual-specific peak kept, in bp (paper: 150).

    Returns
    -------
    IndividualSpecificRegions
    """
    if min_length < 0:
        raise InvalidArgumentError(f"min_length must be >= 0, got {min_length}")
    starts = np.asarray(bin_start, dtype=np.int64)
    target_peaks = target_peaks.reset_index(drop=True)
    training_peaks = training_peaks.reset_index(drop=True)
    conserved = peak_overlaps(target_peaks, training_peaks)
    partners = peak_overlaps(training_peaks, target_peaks)
    specific = target_peaks[~conserved].copy()
    length = (specific["end"] - specific["start"]).to_numpy(np.int64)
    specific["kept"] = length >= min_length

    def mask(peaks: pd.DataFrame) -> np.ndarray:
        return peak_mask(peaks, starts, bin_size, bin_chrom=bin_chrom)

    excluded = (mask(target_peaks[conserved]) | mask(training_peaks[partners])
                | mask(specific[~specific["kept"]]))
    positive = mask(specific[specific["kept"]]) & ~excluded
    return IndividualSpecificRegions(
        labels=positive, evaluated=~excluded, specific_peaks=specific.reset_index(drop=True),
        n_conserved=int(conserved.sum()), n_short=int((~specific["kept"]).sum()),
        min_length=int(min_length))


def individual_specific_auprc(regions: IndividualSpecificRegions,
                              scores: Any) -> dict[str, float]:
    """AUPRC of a predicted track for the individual-specific bins, and its baseline.

    Parameters
    ----------
    regions
        From :func:`individual_specific_regions`.
    scores
        Predicted signal per bin (any monotone scale: arcsinh or −log10 p give the same AUPRC).
        Bins with a non-finite score are dropped.

    Returns
    -------
    dict
        ``auprc``, ``positive_fraction`` (over the same scored bins), ``n_positive`` and
        ``n_evaluated``; the AUPRC is NaN when no positive bin is scored.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != regions.labels.shape:
        raise InvalidArgumentError(f"scores have shape {scores.shape}, the regions "
                         f"{regions.labels.shape}")
    use = regions.evaluated & np.isfinite(scores)
    labels = regions.labels[use]
    n, n_pos = int(use.sum()), int(labels.sum())
    return {"auprc": average_precision(labels, scores[use]) if n_pos else float("nan"),
            "positive_fraction": n_pos / n if n else float("nan"),
            "n_positive": float(n_pos), "n_evaluated": float(n)}
