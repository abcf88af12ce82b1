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

The analyses of imputed tracks (eDICE Figs. 4–6) are stored by
:mod:`analysislib.epigenome.downstream`; the notebooks' batch runs, readers and tables are in
:mod:`analysislib.epigenome.report`.
"""

from __future__ import annotations

import logging
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
from analysislib.epigenome.tensor import hide_tracks, observed_tracks, select_tracks, to_arcsinh
from analysislib.errors import InvalidArgumentError
from analysislib.results import ResultsStore, array_checksum, peak_memory_mb, run_stamp

__all__ = [
    "NO_REFIT",
    "PROTOCOLS",
    "TASK",
    "EpigenomeEvaluation",
    "evaluate_epigenome",
    "load_signal",
    "split_tracks",
]

log = logging.getLogger(__name__)
TASK = "epigenome_imputation"
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
        raise InvalidArgumentError(f"dataset {dataset!r} is {entry.kind}, not epigenome")
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
        raise InvalidArgumentError(f"fractions must be three non-negative shares summing to 1, got "
                         f"{tuple(fractions)}")
    tracks = [(str(c), str(a)) for c, a in observed_tracks(ds)]
    if len(tracks) < 2:
        raise InvalidArgumentError("need at least two observed tracks to split")
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
        raise InvalidArgumentError(f"{what}: tracks {missing} are not observed, so they cannot be scored")
    if not tracks:
        raise InvalidArgumentError(f"{what}: no tracks to hold out")


def _concat(pieces: list[xr.DataArray]) -> xr.DataArray:
    out = xr.concat(pieces, dim="track")
    out.attrs = dict(pieces[0].attrs)
    return out


def _progress(items: list[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def evaluate_epigenome(  # noqa: PLR0913 - the benchmark protocol's settings
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
        raise InvalidArgumentError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    parameters = dict(method_parameters or {})

    def make() -> EpigenomeImputer:
        return get_epigenome_imputer(method, **parameters) if isinstance(method, str) else method

    imputer = make()  # an unknown method or parameter fails before any data is loaded
    data, label = load_signal(ds, label=dataset_label)
    if "individual" in data["signal"].dims:
        raise InvalidArgumentError("the dataset has an individual dimension; select one individual first")
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
            raise InvalidArgumentError(f"reduced_cell: cells {unknown} are not in the dataset")
        kept_by_cell = {}
        for cell in _progress(chosen, progress, "reduced cells"):
            present = [a for c, a in observed_tracks(data) if c == cell]
            kept = ([present[0]] if present else []) if keep is None else (
                [keep] if isinstance(keep, str) else list(keep))
            missing = sorted(set(kept) - set(present))
            if missing:
                raise InvalidArgumentError(f"reduced_cell: cell {cell} has no observed {missing}")
            hidden = [(cell, a) for a in present if a not in kept]
            if not hidden:
                continue
            kept_by_cell[cell] = kept
            observed = hide_tracks(data, hidden)
            imputer = make() if pieces else imputer
            clock.fit(imputer, observed, fit_options)
            pieces.append(clock.predict(imputer, hidden, observed))
        if not pieces:
            raise InvalidArgumentError("reduced_cell: no cell has a track to hide")
        details["keep"] = kept_by_cell
        default_scenario = ("reduced_cell_keep_first" if keep is None else
                            "reduced_cell_keep_" + "+".join([keep] if isinstance(keep, str)
                                                            else list(keep)))
    elif protocol == "holdout":
        if wanted is None:
            raise InvalidArgumentError("holdout: give the tracks to hold out with tracks=")
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
            raise InvalidArgumentError("split: the split has no test tracks")
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
