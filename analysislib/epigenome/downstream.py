"""The analyses of imputed tracks, timed and stored like an imputation (eDICE Figs. 4–6).

Each harness runs one analysis of Hawkins-Hooker et al. 2023 on observed and imputed signal and
appends its rows to the results store under task ``"epigenome_downstream"``
(:data:`DOWNSTREAM_TASK`): peak-shape distances between two tissues (Fig. 4c,
:func:`evaluate_peak_shapes`), differential peaks from measured and imputed replicates
(Fig. 4d–f, :func:`evaluate_differential`), occupancy of enriched bins across tissues and
individuals (Fig. 5b–d, :func:`evaluate_occupancy`) and leave-one-tissue-out transfer with its
individual-specific peaks (Figs. 5e, 6, :func:`evaluate_transfer`). Notebooks 32 and 33 call
them; :mod:`analysislib.epigenome.report` reads the rows back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.evaluate import TASK
from analysislib.epigenome.metrics import metric_rows
from analysislib.epigenome.occupancy import MIN_SPECIFIC_LENGTH
from analysislib.results import ResultsStore, array_checksum, run_stamp

__all__ = [
    "DOWNSTREAM_TASK",
    "evaluate_differential",
    "evaluate_occupancy",
    "evaluate_peak_shapes",
    "evaluate_transfer",
]

#: Task of the analyses made on imputed tracks (eDICE Figs. 4–6).
DOWNSTREAM_TASK = "epigenome_downstream"


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
        :func:`~analysislib.epigenome.evaluate.evaluate_epigenome` returns them), or a signal
        array ``(cell, assay, bin)``.
    cells, assay
        The two tissues and the assay.
    dataset_label, scenario, method
        Recorded in the store (task ``"epigenome_downstream"``; default scenario
        ``peak_shape_wasserstein_<A>_<B>_<assay>``).
    store, write
        As for :func:`~analysislib.epigenome.evaluate.evaluate_epigenome`.

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


def evaluate_differential(  # noqa: PLR0913 - one option per paper analysis setting
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
        As for :func:`~analysislib.epigenome.evaluate.evaluate_epigenome`.

    Returns
    -------
    analysislib.epigenome.differential.DifferentialComparison
        The stored rows are the overlap counts, PPV and recall and the trend's ``a0`` and
        ``a1`` (stratum ``all``), and the affinity correlation of every sample pair
        (stratum_kind ``sample_pair``, stratum ``a|b``);
        :func:`~analysislib.epigenome.report.read_differential` reads them.
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
        As for :func:`~analysislib.epigenome.evaluate.evaluate_epigenome`.
    **peak_options
        ``enriched_bins`` peak settings (``cutoff``, ``min_length``, ``max_gap``).

    Returns
    -------
    xarray.DataArray
        The enriched bins. Three runs are stored (task ``"epigenome_downstream"``, method
        ``"observed"``), bin counts summed per assay: ``occupancy_across_tissues`` and
        ``occupancy_across_individuals`` (stratum ``assay:occupancy``, read back by
        :func:`~analysislib.epigenome.report.read_occupancy`) and
        ``joint_occupancy_<individual>_<cell>`` (stratum ``assay:n_tissues:n_individuals``, read
        back by :func:`~analysislib.epigenome.report.read_joint_occupancy`).
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
        As for :func:`~analysislib.epigenome.evaluate.evaluate_epigenome`.
    device, progress
        Torch device preference and progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per imputed track and method. Three runs are stored per method, tracks named
        ``training>target:tissue.assay``
        (:func:`~analysislib.epigenome.report.read_transfer_tracks`): ``entex_loo_transfer``
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
