"""Runs, readers, tables and verdicts of the eDICE notebooks, from the rows the harnesses store.

Notebooks 30–33 (Hawkins-Hooker et al. 2023, Figs. 2–6) call these: run setup, several methods
on one protocol and the learning curve of Fig. 2d (through
:func:`~analysislib.epigenome.evaluate.evaluate_epigenome`), per-track scores and the mark-group
Welch tests of Fig. 3b–c, signal windows for the example-track figures, and the readers of the
rows :mod:`analysislib.epigenome.downstream` stores for Figs. 4–6. The figures live in
:mod:`analysislib.plotting.epigenome`. The readers are plain pandas on results-store rows, so a
stored run can be re-summarised without refitting.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.downstream import _peak_ids, _signal_track
from analysislib.epigenome.evaluate import (
    TASK,
    EpigenomeEvaluation,
    evaluate_epigenome,
    load_signal,
)
from analysislib.epigenome.imputer import EpigenomeImputer, Track, get_epigenome_imputer
from analysislib.epigenome.tensor import create_signal_dataset, observed_tracks, to_arcsinh
from analysislib.results import ResultsStore

__all__ = [
    "MARK_GROUPS",
    "PAPER_METRICS",
    "FirstBinsImputer",
    "available_methods",
    "contrast_tissues",
    "correlation_blocks",
    "evaluate_methods",
    "example_peaks",
    "example_tracks",
    "kept_marks",
    "learning_curve",
    "load_window",
    "mark_group_tests",
    "mark_group_verdicts",
    "mark_groups",
    "method_parameters",
    "occupancy_share",
    "pool_replicates",
    "read_differential",
    "read_joint_occupancy",
    "read_occupancy",
    "read_peak_shapes",
    "read_track_scores",
    "read_transfer_tracks",
    "reduced_cell_fitted",
    "strongest_bin",
    "support_counts",
    "track_windows",
    "training_bins",
]

log = logging.getLogger(__name__)

#: The metrics of eDICE Fig. 2a and their labels in the paper.
PAPER_METRICS = {"mse": "GW MSE", "pearson": "GW Corr", "mse_fg": "Fg MSE",
                 "pearson_fg": "Fg Corr", "mse_bg": "Bg MSE", "pearson_bg": "Bg Corr",
                 "auprc_peaks": "AUPRC", "precision_bins": "Precision",
                 "recall_bins": "Recall"}


#: Mark groups of eDICE Fig. 3b–c (Results, "eDICE imputations are highly accurate..."). The
#: paper puts H3K9me3 in neither peak-shape group, H3K36me3 and H2A.Z in neither function group.
MARK_GROUPS = {
    "narrow": ("H3K27ac", "H3K4me2", "H3K4me3", "H3K9ac"),
    "broad": ("H3K27me3", "H3K36me3", "H3K4me1", "H3K79me2", "H4K20me1"),
    "repressive": ("H3K27me3", "H3K9me3"),
    "activating": ("H3K9ac", "H3K4me2", "H3K4me3", "H3K4me1", "H3K27ac", "DNase"),
}


# --------------------------------------------------------------------------------------- run setup

def method_parameters(method: str, preset: str) -> dict[str, Any]:
    """The imputer settings of a registered method at one preset (AVG has none).

    Every method's preset table has ``quick`` and ``paper``; the in-process methods also get
    ``progress=False``.

    >>> method_parameters("avg", "paper"), method_parameters("chromimpute", "quick")
    ({}, {'preset': 'quick'})
    """
    if method == "avg":
        return {}
    return {"preset": preset} if method == "chromimpute" else {"preset": preset,
                                                                "progress": False}


def available_methods(methods: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The methods that can run here, and why the others cannot.

    Only ChromImpute needs something outside Python (its jar and ``java``).

    Returns
    -------
    available, skipped
        ``methods`` in order without the skipped ones, and skipped name -> reason.
    """
    from analysislib.epigenome.chromimpute import find_chromimpute_jar
    from analysislib.errors import ToolNotFoundError
    from analysislib.external import find_tool

    skipped = {}
    if "chromimpute" in methods:
        try:
            find_chromimpute_jar()
            find_tool("java")
        except ToolNotFoundError as err:
            skipped["chromimpute"] = str(err)
    return [m for m in methods if m not in skipped], skipped


def load_window(dataset: str, bins: slice | None = None) -> tuple[xr.Dataset, str]:
    """A catalog dataset's bins ``bins`` (default all) in memory, and its results label.

    The label names the window, ``"roadmap_pilot_arcsinh[200000:220000]"``, so runs on
    different windows are stored apart.
    """
    data, _ = load_signal(dataset)
    start, stop, _ = (bins or slice(None)).indices(data.sizes["bin"])
    return data.isel(bin=slice(start, stop)).load(), f"{dataset}[{start}:{stop}]"


def kept_marks(ds: xr.Dataset) -> dict[str, str]:
    """The mark each cell type keeps in the reduced-cell protocol: cell *i* keeps assay *i* mod n.

    Over the cell types every mark is then a target about equally often.
    """
    assays = [str(a) for a in ds["assay"].values]
    return {str(cell): assays[i % len(assays)] for i, cell in enumerate(ds["cell"].values)}


def pool_replicates(replicates: xr.Dataset, *, dim: str = "replicate") -> xr.Dataset:
    """The pooled track of every cell and assay: the mean of its replicates' signal.

    The stand-in for Roadmap's pooled ``pval.signal`` tracks (eDICE Fig. 4), on the replicates'
    scale.
    """
    return create_signal_dataset(
        replicates["signal"].mean(dim).transpose("cell", "assay", "bin").values,
        cells=[str(c) for c in replicates["cell"].values],
        assays=[str(a) for a in replicates["assay"].values],
        bin_start=replicates["bin_start"].values, bin_chrom=replicates["bin_chrom"].values,
        bin_size=int(replicates.attrs.get("bin_size", 25)),
        scale=replicates.attrs.get("scale", "neglog10p"))


def contrast_tissues(ds: xr.Dataset) -> tuple[str, str, str]:
    """The tissues of eDICE Fig. 4 in a simulated dataset with a ``cell_lineage`` coordinate.

    Returns
    -------
    first, second, proxy
        The first tissue (the paper's E025), the first tissue of another lineage (E052), and
        another tissue of the first one's lineage (E023), whose replicates give the dispersion
        trend.
    """
    cells = [str(c) for c in ds["cell"].values]
    lineage = list(ds["cell_lineage"].values)
    second = next(c for c, g in zip(cells, lineage, strict=True) if g != lineage[0])
    proxy = next(c for c, g in zip(cells[1:], lineage[1:], strict=True) if g == lineage[0])
    return cells[0], second, proxy


# ------------------------------------------------------------- runs of several methods (Figs. 2–3)

def evaluate_methods(
    methods: Sequence[str],
    ds: xr.Dataset,
    protocol: str,
    *,
    scenario: str,
    dataset_label: str,
    preset: str = "quick",
    store: ResultsStore | None = None,
    reuse: bool = False,
    **options: Any,
) -> dict[str, EpigenomeEvaluation | None]:
    """Run :func:`~analysislib.epigenome.evaluate.evaluate_epigenome` for several methods on one
    protocol and scenario.

    Each method gets :func:`method_parameters` at ``preset``. With the ``split`` protocol, eDICE
    (the one method that validates) also gets the split's validation tracks, as in the paper.

    Parameters
    ----------
    methods
        Registered method names.
    ds, protocol
        As for :func:`~analysislib.epigenome.evaluate.evaluate_epigenome`.
    scenario, dataset_label
        Recorded in the store.
    preset
        ``"quick"`` or ``"paper"``.
    store
        Results store; default ``ResultsStore()``.
    reuse
        Skip a method whose latest run of this dataset and scenario in the store used the same
        preset (for example one made by another notebook).
    **options
        Further :func:`~analysislib.epigenome.evaluate.evaluate_epigenome` arguments
        (``cells``, ``keep``, ``split`` ...).

    Returns
    -------
    dict
        Method -> its evaluation, or None for a reused run.
    """
    store = store or ResultsStore()
    out: dict[str, EpigenomeEvaluation | None] = {}
    for name in methods:
        parameters = method_parameters(name, preset)
        if reuse:
            have = store.read(TASK, latest=True, dataset=dataset_label, scenario=scenario,
                              method=name)
            if len(have) and (json.loads(have["parameters"].iloc[0]).get("preset")
                              == parameters.get("preset")):
                log.info("reusing %s %s (run %s)", name, scenario, have["run_id"].iloc[0])
                out[name] = None
                continue
        split = options.get("split") or {}
        fit_kwargs = ({"val_tracks": split["val"]} if protocol == "split" and name == "edice"
                      and split.get("val") else None)
        out[name] = evaluate_epigenome(name, ds, protocol, method_parameters=parameters,
                                       fit_kwargs=fit_kwargs, store=store,
                                       dataset_label=dataset_label, scenario=scenario, **options)
    return out


class FirstBinsImputer(EpigenomeImputer):
    """An imputer fitted on the first ``train_bins`` bins only, then predicting every bin.

    For models that learn an embedding per position (Avocado), which must see the bins they
    predict: the Avocado-style model fits genome embeddings for the unseen bins at prediction
    (its second stage), the scheme the eDICE authors used in Fig. 2d.

    Parameters
    ----------
    imputer
        The imputer to wrap; its name and parameters (plus ``train_bins``) are stored.
    train_bins
        Bins, from the first, that ``fit`` passes on.
    """

    def __init__(self, imputer: EpigenomeImputer, train_bins: int) -> None:
        super().__init__()
        self.imputer, self.train_bins = imputer, int(train_bins)
        self.name = imputer.name  # type: ignore[misc]  # stored under the wrapped method's name

    def parameters(self) -> dict[str, Any]:
        """The wrapped imputer's parameters and ``train_bins``."""
        return {**self.imputer.parameters(), "train_bins": self.train_bins}

    def fit(self, ds: xr.Dataset) -> FirstBinsImputer:
        """Fit the wrapped imputer on the first ``train_bins`` bins of ``ds``."""
        self.imputer.fit(ds.isel(bin=slice(0, self.train_bins)))
        self.training_data = to_arcsinh(ds)
        return self

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        values = self.imputer.predict(targets, observed=observed).values
        self.last_run = self.imputer.last_run
        return values


def learning_curve(
    ds: xr.Dataset,
    train_bins: Sequence[int],
    *,
    cell: str,
    keep: str,
    dataset_label: str,
    preset: str = "quick",
    min_steps: int = 0,
    store: ResultsStore | None = None,
) -> list[str]:
    """eDICE and the Avocado-style model trained on growing numbers of bins (eDICE Fig. 2d).

    eDICE learns from the signal at each position, so it trains on a random subset of ``n``
    bins (its ``train_bins``) and predicts everywhere; the Avocado-style model trains on the
    first ``n`` bins (:class:`FirstBinsImputer`). Both run the reduced-cell protocol on
    ``cell``. eDICE trains for at least ``min_steps`` optimiser steps (more epochs on fewer
    bins), so that small subsets are not also under-trained; Avocado keeps its preset's epochs.
    Sizes not below the dataset's bins are skipped: that point is the reduced-cell run itself.

    Returns
    -------
    list of str
        The scenarios stored, ``learning_curve_<cell>_<n>bins``.
    """
    from analysislib.epigenome.edice import edice_config

    config = edice_config(preset)
    scenarios = []
    for n in (int(n) for n in train_bins if int(n) < ds.sizes["bin"]):
        scenario = f"learning_curve_{cell}_{n}bins"
        epochs = max(config.epochs, math.ceil(min_steps / math.ceil(n / config.batch_size)))
        edice = {**method_parameters("edice", preset), "train_bins": n, "epochs": epochs}
        avocado = get_epigenome_imputer("avocado", **method_parameters("avocado", preset))
        for method, parameters in (("edice", edice), (FirstBinsImputer(avocado, n), None)):
            evaluate_epigenome(method, ds, "reduced_cell", cells=[cell], keep=keep,
                               method_parameters=parameters, store=store,
                               dataset_label=dataset_label, scenario=scenario)
        scenarios.append(scenario)
    return scenarios


# ------------------------------------------------------------- stored per-track scores (Figs. 2–3)

def read_track_scores(store: ResultsStore, datasets: Mapping[str, str], *,
                      methods: Sequence[str], scenarios: Sequence[str]) -> pd.DataFrame:
    """The latest per-track scores of some runs, with a readable dataset name.

    Parameters
    ----------
    store
        Results store.
    datasets
        Dataset label -> name shown in figures and tables (column ``data``).
    methods, scenarios
        Runs to read.

    Returns
    -------
    pandas.DataFrame
        Store rows of ``stratum_kind == "track"``, plus ``data``, ``cell`` and ``assay``.
    """
    rows = store.read(TASK, latest=True, dataset=list(datasets), method=list(methods),
                      scenario=list(scenarios), stratum_kind="track")
    parts = rows["stratum"].astype(str).str.split(".", n=1)
    return rows.assign(data=rows["dataset"].astype(str).map(dict(datasets)),
                       cell=parts.str[0], assay=parts.str[1]).reset_index(drop=True)


def training_bins(rows: pd.DataFrame, n_bins: int) -> pd.Series:
    """Bins each stored run trained on (its ``train_bins`` parameter, at most ``n_bins``)."""
    trained = [json.loads(p).get("train_bins") or n_bins for p in rows["parameters"]]
    return pd.Series(np.minimum(trained, n_bins), index=rows.index, name="training bins")


def reduced_cell_fitted(ds: xr.Dataset, keep: Mapping[str, str]) -> dict[str, set[Track]]:
    """Tracks a method is fitted on when each cell type is reduced to its kept mark.

    Returns
    -------
    dict
        Cell -> the observed tracks but the cell's hidden ones.
    """
    tracks = {(str(c), str(a)) for c, a in observed_tracks(ds)}
    return {cell: {(c, a) for c, a in tracks if c != cell or a == kept}
            for cell, kept in keep.items()}


def support_counts(tracks: pd.DataFrame,
                   fitted: Mapping[str, Iterable[Sequence[str]]] | Iterable[Sequence[str]]
                   ) -> pd.DataFrame:
    """Add what each test track's model was fitted on near it (eDICE Fig. 3a colours and bars).

    Parameters
    ----------
    tracks
        Per-track rows with ``cell`` and ``assay`` columns.
    fitted
        The ``(cell, assay)`` tracks the model was fitted on: one collection for all test
        tracks (a split), or cell -> collection (:func:`reduced_cell_fitted`).

    Returns
    -------
    pandas.DataFrame
        ``tracks`` with ``fitted tracks, same cell type`` and ``fitted tracks, same assay``
        (in other cell types).
    """
    by_cell = ({str(c): {tuple(t) for t in pool} for c, pool in fitted.items()}
               if isinstance(fitted, Mapping) else None)
    shared = None if by_cell is not None else {tuple(t) for t in fitted}  # type: ignore[union-attr]
    same_cell, same_assay = [], []
    for cell, assay in zip(tracks["cell"], tracks["assay"], strict=True):
        pool = by_cell[cell] if by_cell is not None else shared
        same_cell.append(sum(c == cell for c, _ in pool))
        same_assay.append(sum(a == assay and c != cell for c, a in pool))
    return tracks.assign(**{"fitted tracks, same cell type": same_cell,
                            "fitted tracks, same assay": same_assay})


# ------------------------------------------------------------------------- mark groups (Fig. 3b–c)

def mark_groups(rows: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Rows whose assay is in one of two :data:`MARK_GROUPS`, with that group in ``group``."""
    group = {**dict.fromkeys(MARK_GROUPS[second], second),
             **dict.fromkeys(MARK_GROUPS[first], first)}
    return rows[rows["assay"].isin(list(group))].assign(group=lambda d: d["assay"].map(group))


def mark_group_tests(rows: pd.DataFrame, first: str, second: str, *,
                     by: Sequence[str] = ("data", "metric")) -> pd.DataFrame:
    """Two-sided Welch t-test of two mark groups' per-track values (eDICE Fig. 3b–c).

    Parameters
    ----------
    rows
        Per-track rows with ``assay`` and ``value``.
    first, second
        Names in :data:`MARK_GROUPS` (``"narrow"`` and ``"broad"``...).
    by
        Columns to test within (one test per combination).

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, ``split`` (``"first vs second"``), ``tracks (first)``,
        ``tracks (second)``, ``mean (first)``, ``mean (second)`` and ``Welch p``
        (``scipy.stats.ttest_ind(equal_var=False)``; NaN with fewer than two tracks in a group).
    """
    from scipy import stats

    out = []
    for key, part in mark_groups(rows, first, second).groupby(list(by), sort=True):
        a = part.loc[part["group"] == first, "value"].dropna()
        b = part.loc[part["group"] == second, "value"].dropna()
        p = stats.ttest_ind(a, b, equal_var=False).pvalue if min(len(a), len(b)) >= 2 else np.nan
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key, strict=True)), "split": f"{first} vs {second}",
                    "tracks (first)": len(a), "tracks (second)": len(b),
                    "mean (first)": a.mean(), "mean (second)": b.mean(), "Welch p": float(p)})
    return pd.DataFrame(out)


def mark_group_verdicts(tests: pd.DataFrame, *, label: str = "eDICE GW Corr",
                        alpha: float = 0.05) -> list[str]:
    """One verdict per test of :func:`mark_group_tests`: whether the first group scores higher.

    The paper finds narrow-peak marks imputed better than broad-peak ones and activating
    better than repressive ones, with significant Welch tests: "reproduced" needs the same
    direction and p < ``alpha``.
    """
    lines = []
    for row in tests.to_dict("records"):
        first, second = row["split"].split(" vs ")
        a, b, p = row["mean (first)"], row["mean (second)"], row["Welch p"]
        verdict = ("reproduced" if a > b and p < alpha else
                   "same direction, not significant" if a > b else "NOT reproduced")
        lines.append(f"{row['data']}: {label} {first} {a:.3f} vs {second} {b:.3f}, "
                     f"Welch p = {p:.2g}: {verdict}")
    return lines


# -------------------------------------------------------------- example tracks (Figs. 2b, 4a–b, 5a)

def track_windows(tracks: Mapping[str, xr.DataArray], regions: pd.DataFrame, *,
                  flank_bins: int = 8) -> pd.DataFrame:
    """Signal around regions, on the −log10 p scale, as a long table for figures.

    Parameters
    ----------
    tracks
        Name -> DataArray with a ``bin`` dimension and ``bin_start``/``bin_chrom``
        coordinates; other dimensions (``cell``, ``replicate``...) become columns. Arcsinh
        signal (``attrs["scale"]``) is mapped back with ``sinh``.
    regions
        ``chrom``, ``start``, ``end`` (bp, half-open), e.g. peaks.
    flank_bins
        Bins shown on each side of a region.

    Returns
    -------
    pandas.DataFrame
        Columns ``track``, the tracks' other dimensions, ``region`` (row number in
        ``regions``), ``chrom``, ``bin_start`` and ``signal``.
    """
    from analysislib.epigenome.wasserstein import peak_bin_ranges

    regions = regions.reset_index(drop=True)
    frames = []
    for name, track in tracks.items():
        first, length = peak_bin_ranges(track, regions[["chrom", "start", "end"]])
        if track.attrs.get("scale") == "arcsinh":
            track = np.sinh(track)
        for region, (lo, n) in enumerate(zip(first, length, strict=True)):
            part = track.isel(bin=slice(max(0, int(lo) - flank_bins),
                                        min(track.sizes["bin"], int(lo + n) + flank_bins)))
            others = [d for d in part.dims if d != "bin"]
            table = (part.drop_vars([c for c in part.coords if c not in (*part.dims, "bin_start")])
                     .rename("signal").to_dataframe().reset_index())
            frames.append(table.assign(track=name, region=region,
                                       chrom=str(regions.at[region, "chrom"]))
                          [["track", *others, "region", "chrom", "bin_start", "signal"]])
    return pd.concat(frames, ignore_index=True)


def strongest_bin(track: xr.DataArray) -> pd.DataFrame:
    """The bin with the highest signal (mean over any other dimension), as a one-row region."""
    profile = track.mean([d for d in track.dims if d != "bin"]) if track.ndim > 1 else track
    index = int(profile.argmax("bin"))
    start = int(track["bin_start"].values[index])
    size = int(track.attrs.get("bin_size", 25))
    return pd.DataFrame({"chrom": [str(track["bin_chrom"].values[index])], "start": [start],
                         "end": [start + size]})


def example_tracks(ds: xr.Dataset,
                   predictions: Mapping[str, xr.DataArray | Sequence[xr.DataArray]], *,
                   cells: Sequence[str], assay: str, flank_bins: int = 200
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observed and imputed tracks around the strongest observed peak, with peaks (eDICE Fig. 2b).

    Peaks are called with the same rule on the observed and on each imputed track
    (:func:`analysislib.epigenome.peaks.call_peaks`).

    Parameters
    ----------
    ds
        The observed signal dataset.
    predictions
        Method -> prediction(s) ``(track, bin)`` holding ``"cell.assay"`` of every cell in
        ``cells`` (several arrays are concatenated).
    cells, assay
        Tracks shown, one panel per cell.
    flank_bins
        Bins shown on each side of the strongest observed peak's summit.

    Returns
    -------
    windows, peaks
        :func:`track_windows` rows (``track`` is ``"observed"`` or the method) with a ``cell``
        column, and the peaks of each track inside its window (``cell``, ``track``, ``start``,
        ``end``).
    """
    from analysislib.epigenome.peaks import call_peaks

    arrays = {name: xr.concat(list(p), "track") if isinstance(p, Sequence) else p
              for name, p in predictions.items()}
    size = int(ds.attrs.get("bin_size", 25))
    windows, peaks = [], []
    for cell in cells:
        observed = ds["signal"].sel(cell=cell, assay=assay).drop_vars(["cell", "assay"],
                                                                      errors="ignore")
        series = {"observed": observed.assign_attrs(scale=ds.attrs.get("scale", "arcsinh"),
                                                    bin_size=size)}
        for name, pred in arrays.items():
            track = pred.sel(track=f"{cell}.{assay}").drop_vars(["track", "cell", "assay"],
                                                                errors="ignore")
            series[name] = track.assign_attrs(scale=pred.attrs.get("scale", "arcsinh"),
                                              bin_size=size)
        called = {name: call_peaks(track) for name, track in series.items()}
        summit = int(called["observed"].loc[called["observed"]["score"].idxmax(), "summit"])
        chrom = str(called["observed"].loc[called["observed"]["score"].idxmax(), "chrom"])
        region = pd.DataFrame({"chrom": [chrom], "start": [summit - summit % size],
                               "end": [summit - summit % size + size]})
        window = track_windows(series, region, flank_bins=flank_bins).assign(cell=cell)
        lo, hi = window["bin_start"].min(), window["bin_start"].max() + size
        for name, table in called.items():
            inside = table[(table["chrom"] == chrom) & (table["end"] > lo) & (table["start"] < hi)]
            peaks.append(inside[["start", "end"]].assign(cell=cell, track=name))
        windows.append(window)
    return (pd.concat(windows, ignore_index=True),
            pd.concat(peaks, ignore_index=True)[["cell", "track", "start", "end"]])


# --------------------------------------------------------------------- downstream rows (Figs. 4–6)

def read_peak_shapes(rows: pd.DataFrame, *, cells: Sequence[str],
                     unit: str = "bins") -> xr.Dataset:
    """Per-peak distances back from the store rows of
    :func:`~analysislib.epigenome.downstream.evaluate_peak_shapes`.

    Returns
    -------
    xarray.Dataset
        ``observed`` and ``imputed`` over ``peak`` (the peak ids), with attributes ``cells``
        and ``unit`` (what :func:`analysislib.plotting.epigenome.plot_distance_scatter` draws).
    """
    wide = rows[rows["stratum_kind"] == "peak"].pivot_table(index="stratum", columns="metric",
                                                            values="value", dropna=False)
    return xr.Dataset({kind: ("peak", wide[f"w1_{kind}"].to_numpy())
                       for kind in ("observed", "imputed")},
                      coords={"peak": wide.index.to_numpy()},
                      attrs={"cells": list(cells), "unit": unit})


def example_peaks(distances: xr.Dataset, observed: xr.Dataset, *,
                  min_length: int = 4) -> pd.DataFrame:
    """The two example peaks of eDICE Fig. 4a–b.

    The peak with the largest observed distance (a tissue-specific shape, 4b) and, among the
    peaks that overlap a peak called on the second tissue's observed track, the one with the
    smallest (a shared shape, 4a); peaks shorter than ``min_length`` bins are skipped.

    Parameters
    ----------
    distances
        Output of :func:`~analysislib.epigenome.downstream.evaluate_peak_shapes` (its
        attributes name the tissues and assay).
    observed
        The observed signal dataset.
    min_length
        Shortest peak shown, in bins.

    Returns
    -------
    pandas.DataFrame
        :func:`analysislib.epigenome.wasserstein.highlight_peaks` rows with ``peak`` set to the
        id ``chrom:start-end``.
    """
    from analysislib.epigenome.occupancy import peak_overlaps
    from analysislib.epigenome.peaks import call_peaks
    from analysislib.epigenome.wasserstein import highlight_peaks

    other = call_peaks(_signal_track(observed, distances.attrs["cells"][1],
                                     distances.attrs["assay"]))
    table = pd.DataFrame({c: distances[c].values for c in ("chrom", "start", "end")})
    in_both = np.flatnonzero(peak_overlaps(table, other))
    picked = pd.concat(
        [highlight_peaks(distances, n_specific=1, n_shared=0, min_length=min_length),
         highlight_peaks(distances.isel(peak=in_both), n_specific=0, n_shared=1,
                         min_length=min_length)], ignore_index=True)
    return picked.assign(peak=_peak_ids(picked))


def read_differential(rows: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """The overlap and the affinity-correlation matrix back from
    :func:`~analysislib.epigenome.downstream.evaluate_differential`.

    Returns
    -------
    overlap, correlation
        A :class:`~analysislib.epigenome.differential.DifferentialOverlap` and the sample ×
        sample correlation matrix.
    """
    from analysislib.epigenome.differential import DifferentialOverlap

    totals = rows[rows["stratum_kind"] == "all"].set_index("metric")["value"]
    overlap = DifferentialOverlap(int(totals["n_measured"]), int(totals["n_imputed"]),
                                  int(totals["n_shared"]), float(totals["ppv"]),
                                  float(totals["recall"]))
    pairs = rows[rows["stratum_kind"] == "sample_pair"]
    names = pairs["stratum"].astype(str).str.split("|", expand=True)
    matrix = pd.DataFrame({"a": names[0], "b": names[1], "r": pairs["value"]}).pivot(
        index="a", columns="b", values="r")
    return overlap, matrix.rename_axis(index=None, columns=None)


def correlation_blocks(correlation: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Mean correlation between groups of samples (``source:tissue``, e.g. ``imputed:E025``)."""
    group = samples["source"].astype(str) + ":" + samples["tissue"].astype(str)
    rows = correlation.groupby(group.reindex(correlation.index).to_numpy()).mean()
    return rows.T.groupby(group.reindex(correlation.columns).to_numpy()).mean()


def read_occupancy(rows: pd.DataFrame) -> pd.DataFrame:
    """``assay, occupancy, n_bins`` back from an occupancy run of
    :func:`~analysislib.epigenome.downstream.evaluate_occupancy`.
    """
    parts = rows["stratum"].astype(str).str.split(":", expand=True)
    return pd.DataFrame({"assay": parts[0], "occupancy": parts[1].astype(int),
                         "n_bins": rows["value"]}).reset_index(drop=True)


def read_joint_occupancy(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Assay -> tissues × individuals table back from the joint run of
    :func:`~analysislib.epigenome.downstream.evaluate_occupancy`.
    """
    parts = rows["stratum"].astype(str).str.split(":", expand=True)
    joint = pd.DataFrame({"assay": parts[0], "n_tissues": parts[1].astype(int),
                          "n_individuals": parts[2].astype(int),
                          "bins": rows["value"].astype(int)})
    return {str(assay): part.pivot(index="n_tissues", columns="n_individuals", values="bins")
            for assay, part in joint.groupby("assay")}


def occupancy_share(table: pd.DataFrame, occupancy: int = 1) -> pd.Series:
    """Share of each assay's enriched bins with this occupancy (1: in one entry only)."""
    totals = table.groupby("assay")["n_bins"].sum()
    return table[table["occupancy"] == occupancy].set_index("assay")["n_bins"] / totals


def read_transfer_tracks(rows: pd.DataFrame) -> pd.DataFrame:
    """Track rows of :func:`~analysislib.epigenome.downstream.evaluate_transfer` from the store,
    with ``pair``, ``tissue``, ``assay``.

    ``pair`` is ``training>target``.
    """
    parts = rows["stratum"].astype(str).str.extract(
        r"^(?P<pair>[^:]+):(?P<tissue>.+)\.(?P<assay>[^.]+)$")
    return rows.assign(**{c: parts[c] for c in parts.columns})
