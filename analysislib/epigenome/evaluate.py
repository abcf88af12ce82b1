"""The epigenomic imputation protocol: hold tracks out, impute them, score them, store the rows.

Follows the eDICE evaluation (paper Results "eDICE imputations are highly accurate on the
reference epigenomes", Fig. 2-3; Methods "Roadmap imputation metrics") and the authors' code
(``alex-hh/eDICE``: the PREDICTD split in ``sample_data/roadmap/predictd_splits.json``, the
validation and test generators in ``edice/data_loaders/data_generators.py``). One call,
:func:`evaluate_epigenome`, runs a protocol with any registered imputer
(:data:`analysislib.epigenome.imputer.EPIGENOME_IMPUTERS`):

``"leave_one_out"``
    Every observed track (or those in ``tracks``) is imputed from all the other observed tracks,
    as the Roadmap ChromImpute imputations were made. Each track is predicted in its own call.
    Methods whose ``fit`` never reads values that could serve a held-out track's prediction
    (:data:`NO_REFIT`: AVG, which only averages other cell types at predict time, and ChromImpute,
    whose per-target training leaves the target out, checked in its tests) are fitted once on
    all tracks; every other method (eDICE, PREDICTD, Avocado learn from every track they are fitted
    on) is refitted per held-out track on the data without it. ``refit`` overrides the choice.
``"reduced_cell"``
    For each cell type (or those in ``cells``), all its observed tracks but ``keep`` (one assay
    name, or a list for "a new cell type with a few marks"; default: the cell's first observed
    assay in dataset order) are hidden; the method is fitted once per cell on what remains and
    predicts the hidden tracks.
``"holdout"``
    A user-given set of tracks (``tracks``) is hidden; the method is fitted once on the rest and
    predicts them. This also covers a new cell type with a few marks: hold out its other tracks.
``"split"``
    A train/validation/test split of the observed tracks (:func:`split_tracks`, or ``split``
    given explicitly, e.g. the PREDICTD split). As for the eDICE paper model, the method is
    fitted on training plus validation tracks and predicts the test tracks from them.

Every predicted track is scored against the observed one with
:func:`analysislib.epigenome.metrics.score_tracks` (foreground = peaks called on the observed
track by :func:`analysislib.epigenome.peaks.call_peaks`), and tidy rows are appended to the
results store: task ``"epigenome_imputation"``, ``stratum_kind`` ``"track"`` (stratum
``"cell.assay"``), ``"assay"`` and ``"all"`` (means over tracks), with runtime (wall time of all
fits and predictions), peak memory (the largest the method reported; for in-process methods that
report none, the Python process's peak resident set size, an upper bound), parameters, data
checksum and code version.

The second half of the module is what the eDICE figure notebooks (30–33) run and read back:
several methods on one protocol (:func:`evaluate_methods`, reusing stored runs on request), the
learning curve of Fig. 2d (:func:`learning_curve`), per-track scores with the dataset's name
(:func:`read_track_scores`), the mark-group Welch tests of Fig. 3b–c (:func:`mark_group_tests`),
signal windows for the example-track figures (:func:`track_windows`, :func:`example_tracks`),
and the analyses of Figs. 4–6, timed and stored like an imputation, each with its reader
(:func:`evaluate_peak_shapes`, :func:`evaluate_differential`, :func:`evaluate_occupancy`,
:func:`evaluate_transfer`). Figures are drawn by :mod:`analysislib.plotting.epigenome`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.imputer import EpigenomeImputer, get_epigenome_imputer
from analysislib.epigenome.metrics import metric_rows, score_tracks
from analysislib.epigenome.occupancy import MIN_SPECIFIC_LENGTH
from analysislib.epigenome.tensor import (
    create_signal_dataset,
    hide_tracks,
    observed_tracks,
    select_tracks,
    to_arcsinh,
)
from analysislib.results import ResultsStore, array_checksum, peak_memory_mb, run_stamp

__all__ = [
    "DOWNSTREAM_TASK",
    "MARK_GROUPS",
    "NO_REFIT",
    "PAPER_METRICS",
    "PROTOCOLS",
    "TASK",
    "EpigenomeEvaluation",
    "FirstBinsImputer",
    "available_methods",
    "contrast_tissues",
    "correlation_blocks",
    "evaluate_differential",
    "evaluate_epigenome",
    "evaluate_methods",
    "evaluate_occupancy",
    "evaluate_peak_shapes",
    "evaluate_transfer",
    "example_peaks",
    "example_tracks",
    "kept_marks",
    "learning_curve",
    "load_signal",
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
    "split_tracks",
    "strongest_bin",
    "support_counts",
    "track_windows",
    "training_bins",
]

log = logging.getLogger(__name__)
TASK = "epigenome_imputation"
#: Task of the analyses made on imputed tracks (eDICE Figs. 4–6).
DOWNSTREAM_TASK = "epigenome_downstream"
PROTOCOLS = ("leave_one_out", "reduced_cell", "holdout", "split")
#: Methods that need no refit per held-out track in leave-one-out (see the module notes).
NO_REFIT = frozenset({"avg", "chromimpute"})

Track = tuple[str, str]


@dataclass
class EpigenomeEvaluation:
    """What :func:`evaluate_epigenome` produced.

    Attributes
    ----------
    run_id
        Id of the stored run.
    rows
        The tidy rows appended to the store.
    scores
        One row per predicted track with every metric (:func:`score_tracks`).
    predictions
        Arcsinh predictions ``(track, bin)`` of every held-out track.
    store_path
        The parquet file written, or None when nothing was stored.
    """

    run_id: str
    rows: pd.DataFrame
    scores: pd.DataFrame
    predictions: xr.DataArray
    store_path: Path | None

    def summary(self, metrics: Sequence[str] = ("mse", "pearson", "auprc_peaks")) -> pd.DataFrame:
        """Per-assay and overall means of some metrics, one column per metric."""
        rows = self.rows[self.rows.metric.isin(list(metrics))
                         & self.rows.stratum_kind.isin(["assay", "all"])]
        return rows.pivot_table(index=["stratum_kind", "stratum"], columns="metric",
                                values="value").reset_index()


def load_signal(dataset: str | xr.Dataset, *, label: str | None = None
                ) -> tuple[xr.Dataset, str]:
    """A signal dataset and its results label, from a catalog name or an in-memory dataset."""
    if isinstance(dataset, xr.Dataset):
        return dataset, label or str(dataset.attrs.get("source", "in-memory"))
    from analysislib.catalog import load_catalog

    catalog = load_catalog()
    entry = catalog[dataset]
    if entry.kind != "epigenome":
        raise ValueError(f"dataset {dataset!r} is {entry.kind}, not epigenome")
    return catalog.open(dataset), label or dataset


def split_tracks(ds: xr.Dataset, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
                 ) -> dict[str, list[Track]]:
    """Randomly split the observed tracks into train, validation and test sets.

    Tracks are shuffled and cut at the given fractions; then any validation or test track whose
    assay has no training track in another cell type, or whose cell type has no training track
    at all, is moved to training, so that every held-out track can be imputed from the training
    tracks (the PREDICTD split has the same property).

    Parameters
    ----------
    ds
        Signal dataset (one individual).
    fractions
        Train, validation and test shares (summing to 1; validation may be 0).
    seed
        Seed of the shuffle.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` of ``(cell, assay)``, each sorted.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got "
                         f"{tuple(fractions)}")
    tracks = [(str(c), str(a)) for c, a in observed_tracks(ds)]
    if len(tracks) < 2:
        raise ValueError("need at least two observed tracks to split")
    order = np.random.default_rng(seed).permutation(len(tracks))
    n_train = round(fractions[0] * len(tracks))
    n_val = round(fractions[1] * len(tracks))
    shuffled = [tracks[i] for i in order]
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val],
             "test": shuffled[n_train + n_val:]}
    changed = True
    while changed:
        changed = False
        train = set(parts["train"])
        for name in ("val", "test"):
            for cell, assay in list(parts[name]):
                has_assay = any(a == assay and c != cell for c, a in train)
                has_cell = any(c == cell for c, _ in train)
                if not (has_assay and has_cell):
                    parts[name].remove((cell, assay))
                    parts["train"].append((cell, assay))
                    changed = True
                    break
            if changed:
                break
    return {name: sorted(value) for name, value in parts.items()}


def _peak_memory(imputer: EpigenomeImputer) -> float:
    reported = float(getattr(imputer.last_run, "peak_memory_mb", float("nan")))
    if np.isfinite(reported):
        return reported
    return peak_memory_mb()


class _Clock:
    """Sum of wall time and maximum peak memory over the fits and predictions of a run."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.peak_mb = float("nan")

    def fit(self, imputer: EpigenomeImputer, ds: xr.Dataset,
            fit_kwargs: Mapping[str, Any]) -> None:
        start = time.perf_counter()
        imputer.fit(ds, **fit_kwargs)
        self._note(imputer, time.perf_counter() - start)

    def predict(self, imputer: EpigenomeImputer, targets: list[Track],
                observed: xr.Dataset) -> xr.DataArray:
        start = time.perf_counter()
        out = imputer.predict(targets, observed=observed)
        self._note(imputer, time.perf_counter() - start)
        return out

    def _note(self, imputer: EpigenomeImputer, seconds: float) -> None:
        self.seconds += seconds
        self.peak_mb = float(np.nanmax([self.peak_mb, _peak_memory(imputer)]))


def _as_tracks(tracks: Iterable[Sequence[str]] | None) -> list[Track] | None:
    if tracks is None:
        return None
    out = []
    for track in tracks:
        if isinstance(track, str):
            cell, _, assay = track.partition(".")
            out.append((cell, assay))
        else:
            cell, assay = track
            out.append((str(cell), str(assay)))
    return out


def _check_observed(ds: xr.Dataset, tracks: list[Track], what: str) -> None:
    observed = set(map(tuple, observed_tracks(ds)))
    missing = [f"{c}.{a}" for c, a in tracks if (c, a) not in observed]
    if missing:
        raise ValueError(f"{what}: tracks {missing} are not observed, so they cannot be scored")
    if not tracks:
        raise ValueError(f"{what}: no tracks to hold out")


def _concat(pieces: list[xr.DataArray]) -> xr.DataArray:
    out = xr.concat(pieces, dim="track")
    out.attrs = dict(pieces[0].attrs)
    return out


def _progress(items: list[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def evaluate_epigenome(
    method: str | EpigenomeImputer,
    ds: str | xr.Dataset,
    protocol: str = "leave_one_out",
    *,
    tracks: Iterable[Sequence[str]] | None = None,
    cells: Sequence[str] | None = None,
    keep: str | Sequence[str] | None = None,
    split: Mapping[str, Sequence[Sequence[str]]] | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    bins: slice | None = None,
    refit: bool | None = None,
    method_parameters: Mapping[str, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    score_options: Mapping[str, Any] | None = None,
    store: ResultsStore | None = None,
    write: bool = True,
    dataset_label: str | None = None,
    scenario: str | None = None,
    progress: bool = False,
) -> EpigenomeEvaluation:
    """Run one evaluation protocol, score every held-out track and store tidy rows.

    Parameters
    ----------
    method
        Registered imputer name (``"avg"``, ``"edice"``, ``"chromimpute"`` ...) or an imputer.
        A fresh imputer is made for every refit when a name is given; an instance is refitted
        in place.
    ds
        Signal dataset, or the catalog name of one (``"roadmap_pilot_arcsinh"``,
        ``"sim_epigenome_quick"``).
    protocol
        ``"leave_one_out"``, ``"reduced_cell"``, ``"holdout"`` or ``"split"`` (module notes).
    tracks
        ``leave_one_out``: the tracks to impute (default all observed). ``holdout``: the tracks
        to hide (required). ``(cell, assay)`` pairs or ``"cell.assay"`` strings.
    cells, keep
        ``reduced_cell``: target cells (default all) and the assay(s) each keeps.
    split
        ``split``: explicit ``{"train": ..., "val": ..., "test": ...}``; otherwise
        :func:`split_tracks` with ``fractions`` and ``seed``.
    bins
        Positional slice of bins to evaluate on (for example ``slice(0, 200_000)`` in quick
        runs); the method sees only these bins.
    refit
        Leave-one-out only: refit per held-out track (default: unless the method is in
        :data:`NO_REFIT`).
    method_parameters
        Keyword arguments for the imputer when ``method`` is a name.
    fit_kwargs
        Extra keyword arguments for every ``fit`` call.
    score_options
        Keyword arguments for :func:`analysislib.epigenome.metrics.score_track`.
    store
        Results store; default ``ResultsStore()``.
    write
        Append the rows to the store (False: only return them).
    dataset_label
        Name recorded for an in-memory dataset.
    scenario
        Name recorded in the ``scenario`` column; default built from the protocol.
    progress
        Show progress bars.

    Returns
    -------
    EpigenomeEvaluation
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    parameters = dict(method_parameters or {})

    def make() -> EpigenomeImputer:
        return get_epigenome_imputer(method, **parameters) if isinstance(method, str) else method

    imputer = make()  # an unknown method or parameter fails before any data is loaded
    data, label = load_signal(ds, label=dataset_label)
    if "individual" in data["signal"].dims:
        raise ValueError("the dataset has an individual dimension; select one individual first")
    if bins is not None:
        data = select_tracks(data, bins=bins)
    data = to_arcsinh(data)
    fit_options = dict(fit_kwargs or {})
    clock = _Clock()
    pieces: list[xr.DataArray] = []
    details: dict[str, Any] = {"protocol": protocol}
    wanted = _as_tracks(tracks)

    if protocol == "leave_one_out":
        targets = wanted if wanted is not None else [
            (str(c), str(a)) for c, a in observed_tracks(data)]
        _check_observed(data, targets, protocol)
        needs_refit = (imputer.name not in NO_REFIT) if refit is None else bool(refit)
        details["refit"] = needs_refit
        if not needs_refit:
            clock.fit(imputer, data, fit_options)
        for target in _progress(targets, progress, "leave-one-out"):
            observed = data
            if needs_refit:
                observed = hide_tracks(data, [target])
                imputer = make()
                clock.fit(imputer, observed, fit_options)
            pieces.append(clock.predict(imputer, [target], observed))
        default_scenario = "leave_one_out"
    elif protocol == "reduced_cell":
        all_cells = [str(c) for c in data["cell"].values]
        chosen = list(cells) if cells is not None else all_cells
        unknown = sorted(set(chosen) - set(all_cells))
        if unknown:
            raise ValueError(f"reduced_cell: cells {unknown} are not in the dataset")
        kept_by_cell = {}
        for cell in _progress(chosen, progress, "reduced cells"):
            present = [a for c, a in observed_tracks(data) if c == cell]
            kept = ([present[0]] if present else []) if keep is None else (
                [keep] if isinstance(keep, str) else list(keep))
            missing = sorted(set(kept) - set(present))
            if missing:
                raise ValueError(f"reduced_cell: cell {cell} has no observed {missing}")
            hidden = [(cell, a) for a in present if a not in kept]
            if not hidden:
                continue
            kept_by_cell[cell] = kept
            observed = hide_tracks(data, hidden)
            imputer = make() if pieces else imputer
            clock.fit(imputer, observed, fit_options)
            pieces.append(clock.predict(imputer, hidden, observed))
        if not pieces:
            raise ValueError("reduced_cell: no cell has a track to hide")
        details["keep"] = kept_by_cell
        default_scenario = ("reduced_cell_keep_first" if keep is None else
                            "reduced_cell_keep_" + "+".join([keep] if isinstance(keep, str)
                                                            else list(keep)))
    elif protocol == "holdout":
        if wanted is None:
            raise ValueError("holdout: give the tracks to hold out with tracks=")
        _check_observed(data, wanted, protocol)
        observed = hide_tracks(data, wanted)
        clock.fit(imputer, observed, fit_options)
        pieces.append(clock.predict(imputer, wanted, observed))
        details["tracks"] = [f"{c}.{a}" for c, a in wanted]
        default_scenario = f"holdout_{len(wanted)}"
    else:  # split
        parts = ({k: _as_tracks(v) or [] for k, v in split.items()} if split is not None
                 else split_tracks(data, fractions, seed))
        if "test" not in parts or not parts["test"]:
            raise ValueError("split: the split has no test tracks")
        _check_observed(data, parts["test"], protocol)
        observed = hide_tracks(data, parts["test"])
        clock.fit(imputer, observed, fit_options)
        pieces.append(clock.predict(imputer, parts["test"], observed))
        details.update({"n_train": len(parts.get("train", [])), "n_val": len(parts.get("val", [])),
                        "n_test": len(parts["test"]),
                        "split_seed": seed if split is None else None})
        default_scenario = f"split_seed{seed}" if split is None else "split_given"

    predictions = _concat(pieces)
    scores = score_tracks(data, predictions, progress=progress, **dict(score_options or {}))
    if bins is not None:
        details["bins"] = [bins.start, bins.stop, bins.step]
    common = run_stamp(
        task=TASK, dataset=label, scenario=scenario or default_scenario, method=imputer.name,
        parameters={**imputer.parameters(), **details, "score_options": dict(score_options or {})},
        data_checksum=array_checksum(data["observed"].values, data["signal"].values,
                                     data["bin_start"].values),
        runtime_s=clock.seconds, peak_memory_mb=clock.peak_mb)
    run_id = common["run_id"]
    rows = metric_rows(scores, common=common)
    path = None
    if write:
        path = (store or ResultsStore()).append(rows)
        log.info("stored %d rows in %s", len(rows), path)
    return EpigenomeEvaluation(run_id, rows, scores, predictions, path)


# --------------------------------------------------------------------------- eDICE figure runs
# What notebooks 30–33 (eDICE Figs. 2–6) run and read back, so that each notebook is a few calls.

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
    """Run :func:`evaluate_epigenome` for several methods on one protocol and scenario.

    Each method gets :func:`method_parameters` at ``preset``. With the ``split`` protocol, eDICE
    (the one method that validates) also gets the split's validation tracks, as in the paper.

    Parameters
    ----------
    methods
        Registered method names.
    ds, protocol
        As for :func:`evaluate_epigenome`.
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
        Further :func:`evaluate_epigenome` arguments (``cells``, ``keep``, ``split`` ...).

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


def _peak_ids(table: Any) -> list[str]:
    return [f"{c}:{int(s)}-{int(e)}" for c, s, e in
            zip(np.asarray(table["chrom"]), np.asarray(table["start"]), np.asarray(table["end"]),
                strict=True)]


def _signal_track(ds: xr.Dataset, cell: str, assay: str) -> xr.DataArray:
    track = ds["signal"].sel(cell=cell, assay=assay)
    return track.assign_attrs(scale=ds.attrs.get("scale", "neglog10p"),
                              bin_size=int(ds.attrs.get("bin_size", 25)))


def _peak_shape_rows(distances: xr.Dataset) -> pd.DataFrame:
    from analysislib.epigenome.wasserstein import distance_agreement

    agreement = distance_agreement(distances)
    rows = [{"metric": m, "stratum_kind": "all", "stratum": "all",
             "value": float(getattr(agreement, m)), "n": agreement.n}
            for m in ("pearson", "pearson_p", "spearman", "spearman_p")]
    ids, lengths = _peak_ids(distances), distances["peak_length"].values
    for kind in ("observed", "imputed"):
        rows += [{"metric": f"w1_{kind}", "stratum_kind": "peak", "stratum": pid,
                  "value": float(v), "n": int(n)}
                 for pid, v, n in zip(ids, distances[kind].values, lengths, strict=True)]
    return pd.DataFrame(rows)


def evaluate_peak_shapes(
    observed: xr.Dataset,
    imputed: xr.DataArray,
    *,
    cells: Sequence[str],
    assay: str,
    dataset_label: str,
    scenario: str | None = None,
    method: str = "edice",
    store: ResultsStore | None = None,
    write: bool = True,
) -> xr.Dataset:
    """Peak-shape distances between two tissues, observed and imputed, stored (eDICE Fig. 4c).

    As in the paper, the peaks are the enriched peaks of the first tissue (called on its
    observed track); :func:`analysislib.epigenome.wasserstein.peak_shape_distances` gives the W1
    distance of the two tissues' profiles in each peak, in bins. The computation follows the
    active dask scheduler.

    Parameters
    ----------
    observed
        Signal dataset ``(cell, assay, bin)``.
    imputed
        Predictions ``(track, bin)`` holding ``"cell.assay"`` for both tissues (as
        :func:`evaluate_epigenome` returns them), or a signal array ``(cell, assay, bin)``.
    cells, assay
        The two tissues and the assay.
    dataset_label, scenario, method
        Recorded in the store (task ``"epigenome_downstream"``; default scenario
        ``peak_shape_wasserstein_<A>_<B>_<assay>``).
    store, write
        As for :func:`evaluate_epigenome`.

    Returns
    -------
    xarray.Dataset
        The computed distances. The stored rows are the Pearson and Spearman agreement of
        observed and imputed distances with their p-values (stratum ``all``) and, per peak
        (stratum ``chrom:start-end``, ``n`` its length in bins), ``w1_observed`` and
        ``w1_imputed``.
    """
    from analysislib.epigenome.peaks import call_peaks
    from analysislib.epigenome.wasserstein import peak_shape_distances

    a, b = cells
    if "track" in imputed.dims:
        imputed = xr.concat([imputed.sel(track=f"{c}.{assay}").drop_vars(
            [v for v in ("track", "cell", "assay") if v in imputed.coords]) for c in cells],
            dim=pd.Index(list(cells), name="cell")).expand_dims(assay=[assay])
    start = time.perf_counter()
    peaks = call_peaks(_signal_track(observed, a, assay))
    distances = peak_shape_distances(observed, imputed, peaks, cells=cells, assay=assay).compute()
    common = run_stamp(
        task=DOWNSTREAM_TASK, dataset=dataset_label, method=method,
        scenario=scenario or f"peak_shape_wasserstein_{a}_{b}_{assay}",
        parameters={"unit": "bins", "peaks": f"enriched peaks of {a}"},
        data_checksum=array_checksum(observed["signal"].sel(cell=list(cells), assay=assay).values,
                                     imputed.sel(cell=list(cells), assay=assay).values),
        runtime_s=time.perf_counter() - start)
    if write:
        (store or ResultsStore()).append(_peak_shape_rows(distances).assign(**common))
    return distances


def read_peak_shapes(rows: pd.DataFrame, *, cells: Sequence[str],
                     unit: str = "bins") -> xr.Dataset:
    """Per-peak distances back from the store rows of :func:`evaluate_peak_shapes`.

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
        Output of :func:`evaluate_peak_shapes` (its attributes name the tissues and assay).
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


def _differential_rows(comparison: Any) -> pd.DataFrame:
    overlap, trend, corr = comparison.overlap, comparison.trend, comparison.correlation
    n = len(comparison.peaks)
    rows = [{"metric": m, "stratum_kind": "all", "stratum": "all",
             "value": float(getattr(overlap, m)), "n": n}
            for m in ("n_measured", "n_imputed", "n_shared", "ppv", "recall")]
    rows += [{"metric": f"dispersion_{k}", "stratum_kind": "all", "stratum": "all",
              "value": float(getattr(trend, k)), "n": trend.n_features} for k in ("a0", "a1")]
    rows += [{"metric": "affinity_correlation", "stratum_kind": "sample_pair",
              "stratum": f"{a}|{b}", "value": float(corr.at[a, b]), "n": n}
             for a in corr.index for b in corr.columns]
    return pd.DataFrame(rows)


def evaluate_differential(
    measured: Mapping[str, xr.DataArray],
    imputed: Mapping[str, xr.DataArray],
    trend: Any,
    *,
    dataset_label: str,
    scenario: str | None = None,
    method: str = "edice",
    n_replicates: int | Mapping[str, int] | None = None,
    peak_method: str = "numpy",
    min_overlap: float = 2,
    alpha: float = 0.05,
    seed: int = 0,
    store: ResultsStore | None = None,
    write: bool = True,
) -> Any:
    """Differential peaks from measured and imputed replicates, stored (eDICE Fig. 4d–f).

    Runs :func:`analysislib.epigenome.differential.run_differential_comparison` (the arguments
    not listed here are its own).

    Parameters
    ----------
    measured, imputed, trend
        Tissue -> measured replicates, tissue -> imputed mean track, and the dispersion trend.
    dataset_label, scenario, method
        Recorded in the store (task ``"epigenome_downstream"``; default scenario
        ``differential_<A>_<B>``).
    n_replicates, peak_method, min_overlap, alpha, seed
        As for ``run_differential_comparison``.
    store, write
        As for :func:`evaluate_epigenome`.

    Returns
    -------
    analysislib.epigenome.differential.DifferentialComparison
        The stored rows are the overlap counts, PPV and recall and the trend's ``a0`` and
        ``a1`` (stratum ``all``), and the affinity correlation of every sample pair
        (stratum_kind ``sample_pair``, stratum ``a|b``); :func:`read_differential` reads them.
    """
    from analysislib.epigenome.differential import run_differential_comparison

    start = time.perf_counter()
    comparison = run_differential_comparison(
        measured, imputed, trend, n_replicates=n_replicates, peak_method=peak_method,
        min_overlap=min_overlap, alpha=alpha, seed=seed)
    common = run_stamp(
        task=DOWNSTREAM_TASK, dataset=dataset_label, method=method,
        scenario=scenario or "differential_" + "_".join(measured),
        parameters={"trend": trend.method, "peak_method": peak_method, "alpha": alpha,
                    "min_overlap": min_overlap, "n_replicates": n_replicates, "seed": seed},
        data_checksum=array_checksum(*(np.asarray(t.values) for t in measured.values()),
                                     *(np.asarray(t.values) for t in imputed.values())),
        runtime_s=time.perf_counter() - start)
    if write:
        (store or ResultsStore()).append(_differential_rows(comparison).assign(**common))
    return comparison


def read_differential(rows: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """The overlap and the affinity-correlation matrix back from :func:`evaluate_differential`.

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


def _occupancy_rows(histogram: pd.DataFrame) -> pd.DataFrame:
    summed = histogram.groupby(["assay", "occupancy"])["n_bins"].sum().reset_index()
    totals = summed.groupby("assay")["n_bins"].transform("sum")
    return pd.DataFrame({"metric": "enriched_bins", "stratum_kind": "assay:occupancy",
                         "stratum": summed["assay"] + ":" + summed["occupancy"].astype(str),
                         "value": summed["n_bins"].astype(float), "n": totals.astype(int)})


def _joint_occupancy_rows(enriched: xr.DataArray, *, individual: str, cell: str
                          ) -> pd.DataFrame:
    from analysislib.epigenome.occupancy import joint_occupancy

    rows = []
    for assay in (str(a) for a in enriched["assay"].values):
        table = joint_occupancy(enriched, individual=individual, cell=cell, assay=assay)
        rows += [{"metric": "enriched_bins", "stratum_kind": "assay:n_tissues:n_individuals",
                  "stratum": f"{assay}:{k_tissues}:{k_people}", "value": float(value),
                  "n": int(table.to_numpy().sum())}
                 for (k_tissues, k_people), value in table.stack().items()]
    return pd.DataFrame(rows)


def evaluate_occupancy(
    ds: xr.Dataset,
    *,
    individual: str,
    cell: str,
    dataset_label: str,
    store: ResultsStore | None = None,
    write: bool = True,
    **peak_options: Any,
) -> xr.DataArray:
    """Occupancy of enriched bins across tissues and individuals, stored (eDICE Fig. 5b–d).

    Enriched bins are those inside peaks called on the observed tracks
    (:func:`analysislib.epigenome.occupancy.enriched_bins`).

    Parameters
    ----------
    ds
        Signal dataset ``(individual, cell, assay, bin)``.
    individual, cell
        The track whose joint occupancy is counted (Fig. 5d), for every assay.
    dataset_label
        Recorded in the store.
    store, write
        As for :func:`evaluate_epigenome`.
    **peak_options
        ``enriched_bins`` peak settings (``cutoff``, ``min_length``, ``max_gap``).

    Returns
    -------
    xarray.DataArray
        The enriched bins. Three runs are stored (task ``"epigenome_downstream"``, method
        ``"observed"``), bin counts summed per assay: ``occupancy_across_tissues`` and
        ``occupancy_across_individuals`` (stratum ``assay:occupancy``, read back by
        :func:`read_occupancy`) and ``joint_occupancy_<individual>_<cell>`` (stratum
        ``assay:n_tissues:n_individuals``, read back by :func:`read_joint_occupancy`).
    """
    from analysislib.epigenome.occupancy import enriched_bins, occupancy_histogram

    start = time.perf_counter()
    enriched = enriched_bins(ds, **peak_options)
    seconds = time.perf_counter() - start
    runs = {"occupancy_across_tissues": _occupancy_rows(occupancy_histogram(enriched, "cell")),
            "occupancy_across_individuals": _occupancy_rows(
                occupancy_histogram(enriched, "individual")),
            f"joint_occupancy_{individual}_{cell}": _joint_occupancy_rows(
                enriched, individual=individual, cell=cell)}
    checksum = array_checksum(ds["signal"].values)
    for scenario, rows in runs.items():
        if write:
            (store or ResultsStore()).append(rows.assign(**run_stamp(
                task=DOWNSTREAM_TASK, dataset=dataset_label, scenario=scenario, method="observed",
                parameters={k: enriched.attrs[k] for k in ("cutoff", "min_length", "max_gap")},
                data_checksum=checksum, runtime_s=seconds)))
    return enriched


def read_occupancy(rows: pd.DataFrame) -> pd.DataFrame:
    """``assay, occupancy, n_bins`` back from an occupancy run of :func:`evaluate_occupancy`."""
    parts = rows["stratum"].astype(str).str.split(":", expand=True)
    return pd.DataFrame({"assay": parts[0], "occupancy": parts[1].astype(int),
                         "n_bins": rows["value"]}).reset_index(drop=True)


def read_joint_occupancy(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Assay -> tissues × individuals table back from the joint run of :func:`evaluate_occupancy`."""
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


def _transfer_rows(table: pd.DataFrame, metrics: Sequence[str], n: str) -> pd.DataFrame:
    table = table.dropna(subset=[n])
    track = (table["training_individual"] + ">" + table["target_individual"] + ":"
             + table["tissue"] + "." + table["assay"])
    return metric_rows(table.assign(track=track, n_bins=table[n]), metrics=metrics)


def evaluate_transfer(
    ds: xr.Dataset,
    *,
    dataset_label: str,
    config: Any = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    tissues: Sequence[str] | None = None,
    peak_options: Mapping[str, Any] | None = None,
    min_length: int = MIN_SPECIFIC_LENGTH,
    store: ResultsStore | None = None,
    write: bool = True,
    device: str = "auto",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Leave-one-tissue-out transfer and its individual-specific peaks, stored (eDICE Figs. 5e, 6).

    Runs :func:`analysislib.epigenome.transfer.run_transfer_experiment` with
    :func:`~analysislib.epigenome.transfer.individual_specific_scores` on every run.

    Parameters
    ----------
    ds
        Signal dataset ``(individual, cell, assay, bin)``.
    dataset_label
        Recorded in the store.
    config, pairs, tissues
        As for ``run_transfer_experiment`` (default: the ``entex`` preset, every ordered pair
        of individuals, every tissue).
    peak_options, min_length
        As for ``individual_specific_scores``.
    store, write
        As for :func:`evaluate_epigenome`.
    device, progress
        Torch device preference and progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per imputed track and method. Three runs are stored per method, tracks named
        ``training>target:tissue.assay`` (:func:`read_transfer_tracks`): ``entex_loo_transfer``
        (task ``"epigenome_imputation"``: ``mse`` and ``pearson``; eDICE's run carries the
        runtime of the whole experiment), ``individual_specific_peaks`` (task
        ``"epigenome_downstream"``: ``auprc``, with the ``positive_fraction`` baseline) and,
        when ``ds`` holds the simulator's truth, ``individual_specific_peak_truth`` (method
        ``"observed"``: ``planted_share`` and ``genome_share``).
    """
    from functools import partial

    from analysislib.epigenome.transfer import (
        TRANSFER_METHODS,
        individual_specific_scores,
        run_transfer_experiment,
        transfer_config,
    )

    config = config if config is not None else transfer_config("entex")
    people = [str(i) for i in ds["individual"].values]
    pairs = [tuple(p) for p in pairs] if pairs is not None else [
        (a, b) for a in people for b in people if a != b]
    tissues = list(tissues) if tissues is not None else [str(c) for c in ds["cell"].values]
    start = time.perf_counter()
    scores = run_transfer_experiment(
        ds, config=config, pairs=pairs, tissues=tissues, device=device, progress=progress,
        extra_scores=partial(individual_specific_scores, ds=ds, peak_options=peak_options,
                             min_length=min_length))
    runtime = time.perf_counter() - start
    if not write:
        return scores
    store = store or ResultsStore()
    parameters = {"transfer": config.to_dict(), "pairs": pairs, "tissues": tissues}
    rules = {"peaks": dict(peak_options or {}), "min_specific_length": min_length}
    checksum = array_checksum(ds["signal"].values)

    def stamp(task: str, scenario: str, method: str, parameters: dict[str, Any],
              runtime_s: float = math.nan) -> dict[str, Any]:
        return run_stamp(task=task, dataset=dataset_label, scenario=scenario, method=method,
                         parameters=parameters, data_checksum=checksum, runtime_s=runtime_s)

    for method, part in scores.groupby("method", sort=False):
        if method in TRANSFER_METHODS:
            store.append(_transfer_rows(part, ["mse", "pearson"], "n").assign(**stamp(
                TASK, "entex_loo_transfer", method, parameters,
                runtime if method == "edice_transfer" else math.nan)))
        store.append(_transfer_rows(part, ["auprc"], "n_evaluated").assign(**stamp(
            DOWNSTREAM_TASK, "individual_specific_peaks", method, {**parameters, **rules})))
    if "planted_share" in scores:
        truth = scores[scores["method"] == "positive_fraction"]  # one row per track
        store.append(_transfer_rows(truth, ["planted_share", "genome_share"], "n_positive")
                     .assign(**stamp(DOWNSTREAM_TASK, "individual_specific_peak_truth",
                                     "observed", rules)))
    return scores


def read_transfer_tracks(rows: pd.DataFrame) -> pd.DataFrame:
    """Track rows of :func:`evaluate_transfer` from the store, with ``pair``, ``tissue``, ``assay``.

    ``pair`` is ``training>target``.
    """
    parts = rows["stratum"].astype(str).str.extract(
        r"^(?P<pair>[^:]+):(?P<tissue>.+)\.(?P<assay>[^.]+)$")
    return rows.assign(**{c: parts[c] for c in parts.columns})
