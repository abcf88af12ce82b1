"""Benchmark: leave-one-cell-type-out accuracy of eDICE and the baselines on the real Roadmap tracks.

The regime that matters for eDICE (Hawkins-Hooker et al. 2023, Fig. 2: a target cell type with
few observed marks): on the catalog's ``roadmap_pilot_arcsinh`` tracks (4 Roadmap cell types x 5
histone marks, 25 bp bins, arcsinh of −log10 p), cut to the first ``--bins`` bins,

* **folds**: each of the 4 cell types is left out in turn (``fold`` = that cell type);
* **kept marks**: the left-out cell type keeps only (a) ``H3K4me3`` or (b) ``H3K4me3+H3K27me3``;
  its other marks are hidden (:func:`analysislib.epigenome.tensor.hide_tracks`, values blanked),
  while the other 3 cell types keep all 5 marks;
* **methods**: every imputer of :data:`analysislib.epigenome.imputer.EPIGENOME_IMPUTERS` (``avg``,
  ``edice``, ``predictd``, ``avocado``, ``chromimpute``), each fitted on that dataset and asked for
  the left-out cell type's hidden marks (``assay`` = the imputed mark);
* **seeds**: ``--seeds K`` runs seeds ``0 .. K-1``; seed ``s`` is passed to each method as its
  ``seed`` setting (the ``seed`` field of the eDICE, PREDICTD and Avocado configs, replacing the
  preset's; ChromImpute's ``seed`` argument, its ``-d`` option). AVG has no randomness: it is
  fitted once per fold and kept set and its scores (and seconds) are repeated under every seed,
  with ``"deterministic": true`` in the JSON, so its seed SD is 0.

Methods use the library's ``quick`` presets (``--preset paper``: the papers' hyperparameters and
ChromImpute's ``full``), on the CPU, with ``--threads`` torch threads (default 1).

Scores (:func:`analysislib.epigenome.metrics.score_tracks`, one row per imputed track):

* ``pearson``, ``mse``: genome-wide (all bins of the window) on the arcsinh scale;
* ``pearson_peaks``, ``mse_peaks``: the same on the bins inside the *observed* track's peaks
  (``pearson_fg``/``mse_fg`` of the metrics module);
* ``peak_precision``: fraction of the peaks called on the imputed track that overlap a peak of the
  observed track by >= 1 bp; ``peak_recall``: fraction of the observed track's peaks overlapped by
  an imputed peak (``precision_peaks``/``recall_peaks`` of the metrics module). Bin-level versions
  are in the JSON as ``peak_precision_bins``/``peak_recall_bins``;
* ``peak_precision_matched``, ``peak_recall_matched``: the same with the imputed track's peaks
  called at a **level-matched cut-off** (:func:`analysislib.epigenome.peaks.matched_cutoff`,
  in the JSON as ``peak_cutoff_matched``): the −log10 p value at which the imputed track has the
  share of bins at or above it that the other cell types' observed tracks of the same mark have
  at or above 2, on average. It uses only the training tracks, so it can be applied to a new
  cell type; it separates a method's ranking of peaks from its calibration of their height.

**Peak rule** (observed and imputed tracks alike): :func:`analysislib.epigenome.peaks.call_peaks`
with its defaults, the MACS2 ``bdgpeakcall`` rule on the −log10 p scale (``sinh`` of the arcsinh
signal): bins with −log10 p >= 2 (p < 0.01, the eDICE paper's cut-off), runs joined across gaps
of <= 30 bp (one 25 bp bin), peaks at least 200 bp long. A track without observed peaks has NaN
``peak_recall`` (and no ``*_peaks`` scores); one without imputed peaks has NaN
``peak_precision``. Means over tracks skip NaN, and the summary lists the tracks concerned.

Printed: progress per fit on stderr (method, fold, kept, seed, seconds); on stdout, per method x
kept set (and per fold) the mean ± SD over seeds of the per-fold mean over the imputed assays, the
eDICE-minus-AVG margin per fold, and a check of the targets: eDICE beats AVG on both Pearson and
MSE (mean over seeds) in every fold for (b) and in >= 3 of 4 folds for (a); eDICE's seed SD is
under a third of its margin over AVG (every fold and kept set, Pearson and MSE); PREDICTD and
Avocado are at least level with AVG on mean Pearson; eDICE's peak recall exceeds 0.3 on every
imputed track with observed peaks (mean over seeds). Last, for each left-out cell type, how
closely its kept marks follow the other cell types' mean compared with how closely those follow
each other (:func:`kept_mark_agreement`): where the left-out cell type follows the mean more
closely, models fitted on the others shrink its imputed marks and AVG is hard to beat.

``--json PATH`` writes a list with one object per method, fold, kept set, imputed assay and seed,
with the keys ``method, fold, kept, assay, seed, pearson, mse, peak_precision, peak_recall,
fit_seconds, predict_seconds`` (seconds of the whole fit / predict call for that fold, kept set
and seed, repeated on each of its assays) and more (``pearson_peaks``, ``mse_peaks``, bin-level
precision/recall, peak counts, ``peak_rss_mb``, ``bins``, ``preset``, ``deterministic``);
undefined values are ``null``. The file is rewritten after every fit, so an interrupted run keeps
what it finished.

Run from the project root (``ANALYSISLIB_DATA_MIRROR`` set as the Makefile does)::

    .venv/bin/python benchmarks/epigenome_accuracy.py --json build/epigenome_accuracy.json
    .venv/bin/python benchmarks/epigenome_accuracy.py --bins 20000 --seeds 1 \\
        --methods avg edice                 # a smoke test of a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["DEFAULT_BINS", "KEPT", "METHODS", "REQUIRED_KEYS", "fold_targets", "main",
           "make_imputer", "observed_peaks", "run", "summarise"]

DATASET = "roadmap_pilot_arcsinh"
METHODS = ("avg", "edice", "predictd", "avocado", "chromimpute")
#: Methods without randomness: fitted once per fold and kept set, reported under every seed.
DETERMINISTIC = frozenset({"avg"})
#: Kept-set label -> marks the left-out cell type keeps.
KEPT: dict[str, tuple[str, ...]] = {"H3K4me3": ("H3K4me3",),
                                    "H3K4me3+H3K27me3": ("H3K4me3", "H3K27me3")}
DEFAULT_BINS = 400_000
REQUIRED_KEYS = ("method", "fold", "kept", "assay", "seed", "pearson", "mse", "peak_precision",
                 "peak_recall", "fit_seconds", "predict_seconds")
#: :func:`score_track` metric -> JSON key.
SCORES = {"pearson": "pearson", "mse": "mse", "pearson_fg": "pearson_peaks",
          "mse_fg": "mse_peaks", "precision_peaks": "peak_precision",
          "recall_peaks": "peak_recall", "precision_bins": "peak_precision_bins",
          "recall_bins": "peak_recall_bins"}
#: Extra columns: peaks of the imputed track called at the level-matched cut-off.
MATCHED = ("peak_cutoff_matched", "peak_precision_matched", "peak_recall_matched")
#: Columns of the summary tables: JSON key -> (header, format).
COLUMNS = {"pearson": ("Pearson", ".3f"), "mse": ("MSE", ".4f"),
           "pearson_peaks": ("Pearson in peaks", ".3f"), "mse_peaks": ("MSE in peaks", ".4f"),
           "peak_precision": ("peak precision", ".3f"), "peak_recall": ("peak recall", ".3f"),
           "peak_precision_matched": ("peak precision, matched cut-off", ".3f"),
           "peak_recall_matched": ("peak recall, matched cut-off", ".3f"),
           "fit_seconds": ("fit s", ".1f"), "predict_seconds": ("predict s", ".2f")}
RECALL_TARGET = 0.3

Track = tuple[str, str]
Factory = Callable[[str, int], Any]


def _sibling(name: str) -> Any:
    """Import another script of ``benchmarks/`` (not a package) by file path."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _peak_options() -> dict[str, Any]:
    from analysislib.epigenome.peaks import DEFAULT_CUTOFF, DEFAULT_MAX_GAP, DEFAULT_MIN_LENGTH

    return {"cutoff": DEFAULT_CUTOFF, "min_length": DEFAULT_MIN_LENGTH,
            "max_gap": DEFAULT_MAX_GAP}


def make_imputer(name: str, seed: int, preset: str = "quick") -> Any:
    """The imputer ``name`` with its ``preset`` and ``seed`` (AVG takes neither), on the CPU.

    As ``_make`` of ``benchmarks/edice_vs_baselines.py``, plus the seed.
    """
    from analysislib.epigenome.imputer import get_epigenome_imputer

    if name == "avg":
        return get_epigenome_imputer("avg")
    if name == "chromimpute":
        return get_epigenome_imputer("chromimpute", preset="full" if preset == "paper" else preset,
                                     seed=int(seed))
    return get_epigenome_imputer(name, preset=preset, device="cpu", progress=False,
                                 seed=int(seed))


def fold_targets(ds: xr.Dataset, cell: str, kept: Sequence[str]) -> list[Track]:
    """Tracks hidden when ``cell`` keeps only the marks ``kept``: its other observed marks.

    Raises
    ------
    ValueError
        If ``cell`` is not in ``ds``, or a kept mark is not an observed track of ``cell``.
    """
    cells = [str(c) for c in ds["cell"].values]
    assays = [str(a) for a in ds["assay"].values]
    if cell not in cells:
        raise ValueError(f"cell type {cell!r} is not in the dataset (cells {cells})")
    for assay in kept:
        if assay not in assays or not bool(ds["observed"].sel(cell=cell, assay=assay)):
            raise ValueError(f"kept mark {cell}.{assay} is not an observed track")
    return [(cell, a) for a in assays
            if a not in kept and bool(ds["observed"].sel(cell=cell, assay=a))]


def observed_peaks(ds: xr.Dataset, tracks: Iterable[Track]) -> dict[str, pd.DataFrame]:
    """Peaks of the observed ``tracks`` by ``"cell.assay"`` (the benchmark's peak rule)."""
    from analysislib.epigenome.peaks import call_peaks
    from analysislib.epigenome.tensor import to_arcsinh

    truth = to_arcsinh(ds)
    size = int(ds.attrs.get("bin_size") or 25)
    out = {}
    for cell, assay in tracks:
        track = truth["signal"].sel(cell=cell, assay=assay)
        track.attrs = {"scale": "arcsinh"}
        out[f"{cell}.{assay}"] = call_peaks(track, bin_size=size, **_peak_options())
    return out


def matched_peak_scores(ds: xr.Dataset, train: xr.Dataset, prediction: xr.DataArray,
                        peaks: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per imputed track ``"cell.assay"``: :data:`MATCHED` (cut-off, peak precision, recall).

    The imputed track's peaks are called at :func:`~analysislib.epigenome.peaks.matched_cutoff`
    against the same mark's observed tracks in the other cell types of ``train`` (the hidden
    targets are not among them), and compared with the observed ``peaks``.
    """
    from analysislib.epigenome.metrics import peak_precision_recall
    from analysislib.epigenome.peaks import call_peaks, matched_cutoff
    from analysislib.epigenome.tensor import to_arcsinh

    truth, known, imputed = to_arcsinh(ds)["signal"], to_arcsinh(train), to_arcsinh(prediction)
    options = {**_peak_options(), "bin_size": int(ds.attrs.get("bin_size") or 25)}
    out = {}
    for i in range(imputed.sizes["track"]):
        cell, assay = str(imputed["cell"].values[i]), str(imputed["assay"].values[i])
        references = []
        for other in known["cell"].values:
            if other != cell and bool(known["observed"].sel(cell=other, assay=assay)):
                reference = known["signal"].sel(cell=other, assay=assay)
                reference.attrs = {"scale": "arcsinh"}
                references.append(reference)
        track = truth.sel(cell=cell, assay=assay).copy(data=imputed.isel(track=i).values)
        track.attrs = {"scale": "arcsinh"}
        cutoff = matched_cutoff(track, references, cutoff=options["cutoff"])
        called = call_peaks(track, **{**options, "cutoff": cutoff})
        precision, recall = peak_precision_recall(peaks[f"{cell}.{assay}"], called)
        out[f"{cell}.{assay}"] = dict(zip(MATCHED, (cutoff, precision, recall), strict=True))
    return out


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    from analysislib.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(records, indent=1) + "\n")


def run(ds: xr.Dataset, methods: Sequence[str], seeds: Sequence[int], *,
        folds: Sequence[str] | None = None, kept: Sequence[str] | None = None,
        make: Factory | None = None, preset: str = "quick", log: TextIO | None = None,
        json_path: Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Fit, predict and score every method, fold, kept set and seed.

    Parameters
    ----------
    ds
        Signal dataset ``(cell, assay, bin)`` holding the truth of every track.
    methods, seeds
        Imputer names and the seeds passed to them.
    folds, kept
        Left-out cell types (default all) and kept-set labels of :data:`KEPT` (default both).
    make
        ``make(name, seed) -> imputer``; default :func:`make_imputer` with ``preset``.
    log
        Stream for the progress lines (default stderr).
    json_path
        Rewrite the records there after every fit.

    Returns
    -------
    records, failures
        One record per method, fold, kept set, imputed assay and seed (the JSON objects), and a
        message per fit that raised (the run goes on without it).
    """
    from analysislib.epigenome.metrics import score_tracks
    from analysislib.epigenome.tensor import hide_tracks

    peak_rss = _sibling("edice_vs_baselines").PeakRSS
    log = sys.stderr if log is None else log
    make = make or (lambda name, seed: make_imputer(name, seed, preset))
    folds = [str(c) for c in ds["cell"].values] if folds is None else list(folds)
    kept = list(KEPT) if kept is None else list(kept)
    seeds = [int(s) for s in seeds]
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    total = len(folds) * len(kept) * sum(1 if m in DETERMINISTIC else len(seeds) for m in methods)
    done = 0
    for fold in folds:
        for kept_name in kept:
            targets = fold_targets(ds, fold, KEPT[kept_name])
            train = hide_tracks(ds, targets)
            peaks = observed_peaks(ds, targets)
            for method in methods:
                for number, seed in enumerate(seeds):
                    if method in DETERMINISTIC and number > 0:
                        first = [r for r in records if r["method"] == method
                                 and r["fold"] == fold and r["kept"] == kept_name
                                 and r["seed"] == seeds[0]]
                        records.extend({**r, "seed": seed} for r in first)
                        continue
                    done += 1
                    label = f"{method} fold={fold} kept={kept_name} seed={seed}"
                    try:
                        imputer = make(method, seed)
                        with peak_rss() as memory:
                            start = time.perf_counter()
                            imputer.fit(train)
                            fit_s = time.perf_counter() - start
                            start = time.perf_counter()
                            prediction = imputer.predict(targets)
                            predict_s = time.perf_counter() - start
                        table = score_tracks(ds, prediction, observed_peaks=peaks,
                                             peak_options=_peak_options())
                        matched = matched_peak_scores(ds, train, prediction, peaks)
                    except Exception as err:  # noqa: BLE001 - one failed fit must not end a long run
                        failures.append(f"{label}: {type(err).__name__}: {err}")
                        print(f"[{done}/{total}] {label}: FAILED: {type(err).__name__}: {err}",
                              file=log, flush=True)
                        continue
                    finally:
                        imputer = prediction = None  # free a model before the next fit
                    for row in table.to_dict("records"):
                        records.append({
                            "method": method, "fold": fold, "kept": kept_name,
                            "assay": row["assay"], "seed": seed,
                            **{key: _number(row[metric]) for metric, key in SCORES.items()},
                            **{key: _number(value) for key, value in matched[row["track"]].items()},
                            **{key: int(row[key]) for key in ("n_peaks_observed",
                                                              "n_peaks_imputed")},
                            "n_peak_bins": int(row["n_foreground"]),
                            "fit_seconds": fit_s, "predict_seconds": predict_s,
                            "peak_rss_mb": _number(memory.peak_mb), "track": row["track"],
                            "bins": int(ds.sizes["bin"]), "preset": preset,
                            "deterministic": method in DETERMINISTIC})
                    print(f"[{done}/{total}] {label}: fit {fit_s:.1f} s, predict "
                          f"{predict_s:.1f} s, mean pearson {table['pearson'].mean():.3f}, "
                          f"mse {table['mse'].mean():.4f}", file=log, flush=True)
                    if json_path is not None:
                        _write_json(json_path, records)
    return records, failures


# --------------------------------------------------------------------------- summary


def summarise(records: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-fold and fold-averaged summaries over seeds.

    Returns
    -------
    per_seed
        Index ``(method, kept, fold, seed)``: the mean over imputed assays (NaN skipped) of each
        :data:`COLUMNS` value.
    by_fold
        Index ``(method, kept, fold)``; columns ``(value, "mean" | "std")`` over seeds of
        ``per_seed``.
    overall
        Index ``(method, kept)``; mean and SD over seeds of the mean over folds of ``per_seed``.
    """
    frame = pd.DataFrame(records)
    values = list(COLUMNS)
    frame[values] = frame[values].astype(float)
    # Report order: methods as in METHODS, kept sets as in KEPT, folds and seeds as run.
    seen = list(dict.fromkeys(frame["method"]))
    order = {"method": [m for m in METHODS if m in seen] + [m for m in seen if m not in METHODS],
             "kept": [k for k in KEPT if k in set(frame["kept"])],
             "fold": list(dict.fromkeys(frame["fold"])), "seed": list(dict.fromkeys(frame["seed"]))}
    for column, levels in order.items():
        frame[column] = pd.Categorical(frame[column], categories=levels, ordered=True)
    per_seed = frame.groupby(["method", "kept", "fold", "seed"], observed=True)[values].mean()
    by_fold = per_seed.groupby(level=["method", "kept", "fold"], observed=True).agg(
        ["mean", "std"])
    fold_mean = per_seed.groupby(level=["method", "kept", "seed"], observed=True).mean()
    overall = fold_mean.groupby(level=["method", "kept"], observed=True).agg(["mean", "std"])
    for table in (per_seed, by_fold, overall):
        table.index = table.index.set_levels(
            [level.astype(object) for level in table.index.levels])
    return per_seed, by_fold, overall


def _finite(value: float) -> bool:
    return bool(np.isfinite(value))


def _pm(mean: float, sd: float, spec: str) -> str:
    if not _finite(mean):
        return "NaN"
    return f"{mean:{spec}}" + (f" ± {sd:{spec}}" if _finite(sd) else "")


def _print_table(summary: pd.DataFrame, index_names: Sequence[str]) -> None:
    headers = [*index_names, *(h for h, _ in COLUMNS.values())]
    print("| " + " | ".join(headers) + " |")
    print("|---" * len(headers) + "|")
    for key, row in summary.iterrows():
        cells = [str(k) for k in (key if isinstance(key, tuple) else (key,))]
        cells += [_pm(row[(c, "mean")], row[(c, "std")], spec) for c, (_, spec) in COLUMNS.items()]
        print("| " + " | ".join(cells) + " |")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _margin_targets(by_fold: pd.DataFrame, kept_sets: Sequence[str], folds: Sequence[str],
                    n_seeds: int) -> list[tuple[str, bool | None]]:
    """Print the eDICE-minus-AVG table; the "beats AVG" and "seed SD" targets per kept set."""
    print("\n## eDICE minus AVG per fold (means over seeds; the MSE margin is AVG − eDICE, so "
          "margins above 0 mean eDICE is better)\n")
    print("| kept | fold | Pearson margin | eDICE Pearson SD | MSE margin | eDICE MSE SD | "
          "eDICE beats AVG on both |")
    print("|---|---|---|---|---|---|---|")
    targets: list[tuple[str, bool | None]] = []
    for kept in kept_sets:
        wins, steady, scored = 0, 0, 0
        for fold in folds:
            if ("edice", kept, fold) not in by_fold.index or ("avg", kept, fold) not in \
                    by_fold.index:
                continue
            e, a = by_fold.loc[("edice", kept, fold)], by_fold.loc[("avg", kept, fold)]
            dr = e[("pearson", "mean")] - a[("pearson", "mean")]
            dm = a[("mse", "mean")] - e[("mse", "mean")]
            sr, sm = e[("pearson", "std")], e[("mse", "std")]
            beats = bool(dr > 0 and dm > 0)
            scored += 1
            wins += beats
            steady += bool(beats and sr < dr / 3 and sm < dm / 3)
            sd_r, sd_m = (f"{sd:.4f}" if _finite(sd) else "-" for sd in (sr, sm))
            print(f"| {kept} | {fold} | {dr:+.4f} | {sd_r} | {dm:+.4f} | {sd_m} | "
                  f"{'yes' if beats else 'no'} |")
        need = scored if kept == "H3K4me3+H3K27me3" else min(3, scored)
        targets.append(((f"eDICE beats AVG on Pearson and MSE, kept {kept}: {wins} of {scored} "
                        f"folds (need {need})"), wins >= need if scored else None))
        if n_seeds < 2:
            targets.append((f"eDICE seed SD < margin/3, kept {kept}: needs >= 2 seeds", None))
        else:
            targets.append(((f"eDICE seed SD < margin/3 on Pearson and MSE, kept {kept}: "
                            f"{steady} of {scored} folds"), steady == scored if scored else None))
    return targets


def kept_mark_agreement(ds: xr.Dataset, folds: Sequence[str], kept: Sequence[str]) -> pd.DataFrame:
    """Each left-out cell type's kept marks against the other cell types' mean.

    :func:`~analysislib.epigenome.tensor.cross_cell_agreement` of the marks in ``kept`` (labels
    of :data:`KEPT`), one row per fold and mark: where ``cell_r`` exceeds ``others_r`` the cell
    type follows the average more closely than the training cell types follow each other, and a
    fitted model is unlikely to beat AVG there. Uses only the tracks the fold keeps.
    """
    from analysislib.epigenome.tensor import cross_cell_agreement

    marks = list(dict.fromkeys(m for label in kept for m in KEPT[label]))
    tables = []
    for fold in folds:
        table = cross_cell_agreement(ds, fold)
        tables.append(table.loc[[m for m in marks if m in table.index]].assign(fold=fold))
    return pd.concat(tables).reset_index().set_index(["fold", "assay"])


def print_report(records: list[dict[str, Any]], seeds: Sequence[int]) -> None:
    """The summary tables, eDICE-minus-AVG margins and target check (stdout)."""
    if not records:
        print("\nno results")
        return
    _, by_fold, overall = summarise(records)
    print(f"\n## Mean ± SD over {len(seeds)} seed(s) of the mean over folds of the per-fold mean "
          "over imputed assays (arcsinh scale)\n")
    _print_table(overall, ["method", "kept"])
    print("\n## Per fold: mean ± SD over seeds of the mean over imputed assays\n")
    _print_table(by_fold, ["method", "kept", "fold"])

    frame = pd.DataFrame(records)
    frame[["peak_recall", "peak_recall_matched"]] = frame[
        ["peak_recall", "peak_recall_matched"]].astype(float)
    no_peaks = sorted({f"{r['track']} (kept {r['kept']})" for r in records
                       if not r["n_peaks_observed"]})
    if no_peaks:
        print("\nNo observed peaks (peak recall and in-peak scores NaN, left out of the means): "
              + ", ".join(no_peaks))
    no_imputed = frame[frame["n_peaks_imputed"] == 0]
    if len(no_imputed):
        counts = no_imputed.groupby("method", sort=False).size()
        print("Imputed tracks without peaks (peak precision NaN), (track, seed) pairs per "
              "method: " + ", ".join(f"{m} {n}" for m, n in counts.items()))

    methods = set(frame["method"])
    kept_sets = [k for k in KEPT if k in set(frame["kept"])]
    folds = list(dict.fromkeys(frame["fold"]))
    targets: list[tuple[str, bool | None]] = []
    if {"edice", "avg"} <= methods:
        targets += _margin_targets(by_fold, kept_sets, folds, len(seeds))
    else:
        targets.append(("eDICE beats AVG, seed SD < margin/3: needs edice and avg", None))
    for method in ("predictd", "avocado"):
        for kept in kept_sets:
            if not {method, "avg"} <= methods:
                targets.append(((f"{method} mean Pearson >= AVG, kept {kept}: needs {method} "
                                "and avg"), None))
                continue
            m = overall.loc[(method, kept), ("pearson", "mean")]
            a = overall.loc[("avg", kept), ("pearson", "mean")]
            targets.append(((f"{method} mean Pearson >= AVG, kept {kept}: {m:.3f} vs {a:.3f} "
                            f"({m - a:+.3f})"), bool(m >= a)))
    if "edice" in methods:
        edice = frame[(frame["method"] == "edice") & (frame["n_peaks_observed"] > 0)]
        for column, rule in (("peak_recall", "cut-off 2"),
                             ("peak_recall_matched", "level-matched cut-off")):
            # mean over seeds; a seed without imputed peaks has recall 0, not NaN
            recall = edice.groupby(["kept", "track"], sort=False)[column].mean()
            low = recall[~(recall > RECALL_TARGET)]
            detail = ("; at or below: " + ", ".join(f"{t} (kept {k}) {v:.2f}"
                                                    for (k, t), v in low.items())) if len(low) else ""
            targets.append(((f"eDICE peak recall ({rule}) > {RECALL_TARGET} on tracks with "
                            f"observed peaks: {len(recall) - len(low)} of {len(recall)} (mean over "
                            f"seeds){detail}"), len(low) == 0 if len(recall) else None))
    else:
        targets.append(("eDICE peak recall: needs edice", None))
    print("\n## Target check\n")
    for text, ok in targets:
        print(f"- [{_verdict(ok)}] {text}")


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write one JSON object per method, fold, kept set, assay and seed")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, metavar="N",
                        help=f"use the first N 25 bp bins (default {DEFAULT_BINS})")
    parser.add_argument("--seeds", type=int, default=3, metavar="K",
                        help="run seeds 0 .. K-1 (default 3)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        metavar="NAME", help=f"methods to run (default all: {' '.join(METHODS)})")
    parser.add_argument("--folds", nargs="+", default=None, metavar="CELL",
                        help="left-out cell types (default all four)")
    parser.add_argument("--kept", nargs="+", choices=list(KEPT), default=list(KEPT),
                        help="kept mark sets of the left-out cell type (default both)")
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="hyperparameters of the learned methods (default quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser


def main(argv: list[str] | None = None, *, make: Factory | None = None) -> int:
    """Run the benchmark; 0 when every fit succeeded (whatever the targets say), else 1."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.bins < 1:
        parser.error("--bins must be at least 1")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    methods = list(dict.fromkeys(args.methods))
    if "chromimpute" in methods and make is None:
        from analysislib.epigenome.chromimpute import find_chromimpute_jar

        try:
            find_chromimpute_jar()
        except Exception as err:  # noqa: BLE001 - any lookup failure means the tool cannot run
            parser.error(f"chromimpute: {err}")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from analysislib.catalog import open_dataset

    torch.set_num_threads(args.threads)
    # The factorisations warn when a target informed their shared factors; every target is
    # hidden before fit here, so the warning cannot apply.
    warnings.filterwarnings("ignore", message=".*informed the shared factors.*")
    full = open_dataset(DATASET)
    if args.bins > full.sizes["bin"]:
        parser.error(f"--bins {args.bins} exceeds the {full.sizes['bin']} bins of {DATASET}")
    cells = [str(c) for c in full["cell"].values]
    folds = list(dict.fromkeys(args.folds or cells))
    unknown = sorted(set(folds) - set(cells))
    if unknown:
        parser.error(f"--folds {unknown} not among the cell types {cells}")
    ds = full.isel(bin=slice(0, args.bins)).load()
    seeds = list(range(args.seeds))
    options = _peak_options()
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, torch {torch.__version__} "
          f"({args.threads} thread(s)), load average {os.getloadavg()[0]:.1f}")
    print(f"# {DATASET}: first {args.bins} bins ({args.bins * 25 / 1e6:.2f} Mb); folds {folds}; "
          f"kept {args.kept}; methods {methods}; seeds {seeds}; preset {args.preset}")
    print(f"# peaks: bdgpeakcall rule on −log10 p = sinh(arcsinh), cut-off {options['cutoff']} "
          f"(p < 0.01), min length {options['min_length']} bp, max gap {options['max_gap']} bp; "
          "precision/recall by >= 1 bp peak overlap; AVG is deterministic (run once, repeated "
          "under each seed)")
    started = time.perf_counter()
    records, failures = run(ds, methods, seeds, folds=folds, kept=args.kept, make=make,
                            preset=args.preset, json_path=args.json)
    print(f"# total {time.perf_counter() - started:.0f} s")
    print_report(records, seeds)
    print("\n## Kept marks of each left-out cell type against the other cell types' mean "
          "(arcsinh; AVG is hard to beat where cell_r > others_r)\n")
    print(kept_mark_agreement(ds, folds, args.kept).round(3).to_string())
    if args.json is not None:
        _write_json(args.json, records)
        print(f"\nwrote {len(records)} rows to {args.json}")
    if failures:
        print("\nfailed fits:\n" + "\n".join(f"  {f}" for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
