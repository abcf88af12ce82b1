r"""Imputation metrics for epigenomic tracks (eDICE Fig. 2-3; PREDICTD and ENCODE definitions).

Follows the eDICE paper (Results, "eDICE imputations are highly accurate on the reference
epigenomes", and Methods, "Roadmap imputation metrics") and the public code: eDICE's
``edice/models/metrics.py`` and ``edice/utils/val_utils.py`` (``alex-hh/eDICE``), PREDICTD's
``quality_measures.py`` (``tdurham86/PREDICTD``) and the ENCODE Imputation Challenge's
``score_metrics.py`` (``ENCODE-DCC/imputation_challenge``).

Scales. The eDICE paper computes MSE and Pearson correlation on the arcsinh-transformed signal;
the eDICE code's own training metrics, the ENCODE challenge and PREDICTD's ``GWcorr`` use the raw
−log10 p scale (``sinh`` of arcsinh). Where the sources differ both are reported: a metric name
without suffix is on the **arcsinh** scale, the ``_raw`` suffix means the **−log10 p** scale.
Rank-based metrics (Spearman, Match/Catch, AUROC, AUPRC) do not depend on the scale.

Foreground and background. The paper's foreground bins are the 25 bp bins inside peaks called by
MACS2 on the *observed* track (Methods, "Enrichment detection"); background bins are all others.
Peaks come from :func:`analysislib.epigenome.peaks.call_peaks` (the ``bdgpeakcall`` rule; default
cut-off −log10 p >= 2, i.e. p < 0.01).

Metrics returned by :func:`score_track` (N scored bins, n1 = round(0.01 N), n5 = round(0.05 N)):

=================== ======================================================================
``mse``             mean squared error, arcsinh (PREDICTD ``MSEglobal``; eDICE "GW MSE")
``mse_raw``         the same on −log10 p (ENCODE ``mse``; eDICE code ``MeanSquaredError``)
``pearson``         Pearson r, arcsinh (PREDICTD ``GWcorrasinh``; eDICE "GW Corr")
``pearson_raw``     Pearson r on −log10 p (PREDICTD ``GWcorr``; ENCODE ``gwcorr``)
``spearman``        Spearman rho (PREDICTD ``GWspcorr``; ENCODE ``gwspear``), average ranks
``*_fg``/``*_bg``   MSE and Pearson (both scales) on foreground / background bins
``mse1obs``         MSE on the top n1 bins of the observed track (both scales)
``mse1imp``         MSE on the top n1 bins of the imputed track (both scales)
``match1``          \|top1%obs ∩ top1%imp\| / n1 (PREDICTD fraction)
``catch1obs``       \|top1%obs ∩ top5%imp\| / n1; equals the eDICE code's recall
                    ``gt1Preds5``
``catch1imp``       \|top1%imp ∩ top5%obs\| / n1; equals the eDICE code's precision
                    ``gt5Preds1``
``*_count``         ENCODE challenge counts for match1/catch1obs/catch1imp: thresholds
                    ``sort(x)[-n]``, bins ``>=`` threshold (ties included)
``auroc_obs1``      ROC AUC, labels = observed top 1 %, scores = imputed (``AucObs1``)
``auroc_imp1``      ROC AUC, labels = imputed top 1 %, scores = observed (``AucImp1``)
``auprc_obs1``      average precision, labels = observed top 1 %, scores = imputed (eDICE
                    code ``gt1PredsFull``)
``auroc_peaks``     ROC AUC of foreground bins scored by the imputation (``CatchPeakObs``)
``auprc_peaks``     average precision of foreground bins scored by the imputation (eDICE
                    Fig. 2 "AUPRC")
``precision_bins``  of bins in peaks called on the imputed track, the fraction in observed
                    peaks (eDICE Fig. 2 "Precision", bin level)
``recall_bins``     of bins in observed peaks, the fraction in imputed peaks
``precision_peaks`` fraction of imputed peaks overlapping an observed peak by >= 1 bp
``recall_peaks``    fraction of observed peaks overlapped by an imputed peak
``n_bins`` ...      counts: scored bins, foreground bins, observed and imputed peaks
=================== ======================================================================

Choices the sources leave open: the top n1 / n5 bins are taken by rank (a stable descending sort,
so among tied values the earlier bin wins), as PREDICTD does; average precision is scikit-learn's
step-wise definition (no interpolation), computed here from one sort and checked against
scikit-learn in the tests; ROC AUC uses average ranks for ties (Mann-Whitney), equal to
scikit-learn's. The paper's precision/recall compare peaksets; whether it matched bins or peaks is
not stated, so both levels are reported. A metric that is undefined (a constant track for
Pearson, no foreground bins, a single class for AUROC, no peaks for precision) is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import rankdata

from analysislib.epigenome.peaks import call_peaks, peak_mask
from analysislib.epigenome.tensor import signal_scale, to_arcsinh
from analysislib.errors import InvalidArgumentError

__all__ = [
    "COUNT_METRICS",
    "METRICS",
    "auroc",
    "average_precision",
    "metric_rows",
    "peak_precision_recall",
    "score_track",
    "score_tracks",
]

#: Every value metric of :func:`score_track`, in report order.
METRICS: tuple[str, ...] = (
    "mse", "mse_raw", "pearson", "pearson_raw", "spearman",
    "mse_fg", "mse_fg_raw", "pearson_fg", "pearson_fg_raw",
    "mse_bg", "mse_bg_raw", "pearson_bg", "pearson_bg_raw",
    "mse1obs", "mse1obs_raw", "mse1imp", "mse1imp_raw",
    "match1", "catch1obs", "catch1imp", "match1_count", "catch1obs_count", "catch1imp_count",
    "auroc_obs1", "auroc_imp1", "auprc_obs1", "auroc_peaks", "auprc_peaks",
    "precision_bins", "recall_bins", "precision_peaks", "recall_peaks",
)
#: Count entries of :func:`score_track`.
COUNT_METRICS: tuple[str, ...] = ("n_bins", "n_foreground", "n_peaks_observed",
                                  "n_peaks_imputed")


# --------------------------------------------------------------------------- building blocks


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2)) if a.size else float("nan")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.dot(da, da) * np.dot(db, db))
    return float(np.dot(da, db) / denominator) if denominator > 0 else float("nan")


def auroc(labels: np.ndarray, scores: np.ndarray, *, ranks: np.ndarray | None = None) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic (average ranks for ties).

    Parameters
    ----------
    labels
        Boolean positives.
    scores
        Scores; higher means more likely positive.
    ranks
        ``scipy.stats.rankdata(scores)``, when already computed.

    Returns
    -------
    float
        NaN when only one class is present.
    """
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores) if ranks is None else ranks
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(labels: np.ndarray, scores: np.ndarray, *,
                      order: np.ndarray | None = None) -> float:
    """Average precision: sum over score thresholds of (recall step) x precision.

    The step-wise definition of ``sklearn.metrics.average_precision_score``: tied scores form
    one threshold.

    Parameters
    ----------
    labels
        Boolean positives.
    scores
        Scores; higher means more likely positive.
    order
        ``numpy.argsort(-scores, kind="stable")``, when already computed.

    Returns
    -------
    float
        NaN when there are no positives.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable") if order is None else order
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp = np.cumsum(sorted_labels)[last_of_tie].astype(np.float64)
    predicted = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    precision = tp / predicted
    recall_step = np.diff(np.r_[0.0, tp]) / n_pos
    return float(np.sum(recall_step * precision))


def _order_and_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable descending order of ``x`` and its average ascending ranks (``rankdata(x)``)."""
    order = np.argsort(-x, kind="stable")
    ordered = x[order]
    head = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(head) - 1
    first = np.flatnonzero(head)
    last = np.r_[first[1:] - 1, x.size - 1]
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = (x.size - (first + last) / 2.0)[group]
    return order, ranks


def _top(order: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(order.size, dtype=bool)
    mask[order[:n]] = True
    return mask


def _at_least_nth(x: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """ENCODE challenge selection: bins ``>= sort(x)[-n]`` (ties included)."""
    if n <= 0:
        return np.zeros(x.size, dtype=bool)
    return x >= x[order[n - 1]]


def _as_track(values: xr.DataArray | np.ndarray, scale: str, name: str) -> xr.DataArray:
    if isinstance(values, xr.DataArray):
        if values.ndim != 1:
            raise InvalidArgumentError(f"{name} must be one track (1-D over 'bin'), got dims {values.dims}")
        if "scale" not in values.attrs:
            raise InvalidArgumentError(f"{name} has no 'scale' attribute (neglog10p or arcsinh)")
        return values
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} must be 1-D, got shape {array.shape}")
    track = xr.DataArray(array, dims="bin", attrs={"scale": scale})
    signal_scale(track)
    return track


def _bin_coords(track: xr.DataArray, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    if "bin_start" in track.coords:
        starts = np.asarray(track["bin_start"].values, dtype=np.int64)
    else:
        starts = np.arange(track.size, dtype=np.int64) * bin_size
    if "bin_chrom" in track.coords:
        chroms = np.asarray(track["bin_chrom"].values).astype(str)
    else:
        chroms = np.full(track.size, "chr1")
    return starts, chroms


def _with_coords(track: xr.DataArray, starts: np.ndarray, chroms: np.ndarray) -> xr.DataArray:
    if "bin_start" in track.coords and "bin_chrom" in track.coords:
        return track
    return xr.DataArray(np.asarray(track.values), dims="bin",
                        coords={"bin_start": ("bin", starts), "bin_chrom": ("bin", chroms)},
                        attrs=dict(track.attrs))


def _peak_overlap_fraction(query: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Fraction of ``query`` peaks overlapping at least one ``reference`` peak by >= 1 bp."""
    if query.shape[0] == 0:
        return float("nan")
    hits = np.zeros(query.shape[0], dtype=bool)
    for chrom, block in reference.groupby(reference["chrom"].astype(str)):
        rows = np.flatnonzero(query["chrom"].astype(str).to_numpy() == chrom)
        if rows.size == 0:
            continue
        ordered = block.sort_values("start")
        r_start = ordered["start"].to_numpy(np.int64)
        r_end_max = np.maximum.accumulate(ordered["end"].to_numpy(np.int64))
        q_start = query["start"].to_numpy(np.int64)[rows]
        q_end = query["end"].to_numpy(np.int64)[rows]
        # reference peaks starting before q_end; any of them reaching past q_start overlaps
        last = np.searchsorted(r_start, q_end, side="left") - 1
        hits[rows] = (last >= 0) & (r_end_max[np.maximum(last, 0)] > q_start)
    return float(hits.mean())


# --------------------------------------------------------------------------- one track


def peak_precision_recall(observed_peaks: pd.DataFrame, imputed_peaks: pd.DataFrame
                          ) -> tuple[float, float]:
    """Peak-level precision and recall (``precision_peaks``, ``recall_peaks`` of the table above).

    Precision: the fraction of imputed peaks overlapping an observed peak by >= 1 bp (NaN
    without imputed peaks); recall: the fraction of observed peaks overlapping an imputed peak
    (NaN without observed peaks).
    """
    return (_peak_overlap_fraction(imputed_peaks, observed_peaks),
            _peak_overlap_fraction(observed_peaks, imputed_peaks))


def score_track(
    observed: xr.DataArray | np.ndarray,
    imputed: xr.DataArray | np.ndarray,
    *,
    observed_peaks: pd.DataFrame | None = None,
    imputed_peaks: pd.DataFrame | None = None,
    bins: np.ndarray | None = None,
    peak_options: Mapping[str, Any] | None = None,
    top_fraction: float = 0.01,
    catch_fraction: float = 0.05,
    scale: str = "arcsinh",
    bin_size: int | None = None,
) -> dict[str, float]:
    """Score one imputed track against the observed one with every metric of this module.

    Parameters
    ----------
    observed, imputed
        Tracks over the same bins: 1-D DataArrays with a ``scale`` attribute (and ideally
        ``bin_start``/``bin_chrom``), or 1-D arrays on scale ``scale``.
    observed_peaks, imputed_peaks
        Peak tables (as from :func:`~analysislib.epigenome.peaks.call_peaks`); called here
        with ``peak_options`` when not given.
    bins
        Boolean mask (or indices) of the bins to score, for example to leave out blacklisted
        bins. Bins where either track is not finite are always left out. Peaks are called on
        the whole track.
    peak_options
        Keyword arguments for :func:`~analysislib.epigenome.peaks.call_peaks` (``cutoff``,
        ``min_length``, ``max_gap``, ``method``).
    top_fraction, catch_fraction
        The 1 % and 5 % of Match1/Catch1/MSE1/AUC*1.
    scale
        Scale of plain-array inputs.
    bin_size
        Bin width in bp; default the tracks' ``bin_size`` attribute, else 25.

    Returns
    -------
    dict
        :data:`METRICS` and :data:`COUNT_METRICS` -> value (see the module table).
    """
    obs_track = _as_track(observed, scale, "observed")
    imp_track = _as_track(imputed, scale, "imputed")
    if obs_track.size != imp_track.size:
        raise InvalidArgumentError(f"observed has {obs_track.size} bins but imputed has {imp_track.size}")
    if not 0 < top_fraction < catch_fraction < 1:
        raise InvalidArgumentError("need 0 < top_fraction < catch_fraction < 1")
    size = int(bin_size or obs_track.attrs.get("bin_size") or imp_track.attrs.get("bin_size")
               or 25)
    starts, chroms = _bin_coords(obs_track, size)
    obs_track = _with_coords(obs_track, starts, chroms)
    imp_track = _with_coords(imp_track, starts, chroms)
    options = {"bin_size": size, **dict(peak_options or {})}
    if observed_peaks is None:
        observed_peaks = call_peaks(obs_track, **options)
    if imputed_peaks is None:
        imputed_peaks = call_peaks(imp_track, **options)

    obs = np.asarray(to_arcsinh(obs_track).values, dtype=np.float64)
    imp = np.asarray(to_arcsinh(imp_track).values, dtype=np.float64)
    keep = np.isfinite(obs) & np.isfinite(imp)
    if bins is not None:
        selected = np.zeros(obs.size, dtype=bool)
        selected[np.asarray(bins)] = True
        keep &= selected
    fg_all = peak_mask(observed_peaks, starts, size, bin_chrom=chroms)
    imp_fg_all = peak_mask(imputed_peaks, starts, size, bin_chrom=chroms)
    obs, imp, fg, imp_fg = obs[keep], imp[keep], fg_all[keep], imp_fg_all[keep]
    obs_raw, imp_raw = np.sinh(obs), np.sinh(imp)
    n = obs.size
    out: dict[str, float] = {}
    out["mse"], out["mse_raw"] = _mse(obs, imp), _mse(obs_raw, imp_raw)
    out["pearson"], out["pearson_raw"] = _pearson(obs, imp), _pearson(obs_raw, imp_raw)
    obs_order, obs_ranks = _order_and_ranks(obs)
    imp_order, imp_ranks = _order_and_ranks(imp)
    out["spearman"] = _pearson(obs_ranks, imp_ranks)
    for part, sel in (("fg", fg), ("bg", ~fg)):
        out[f"mse_{part}"] = _mse(obs[sel], imp[sel])
        out[f"mse_{part}_raw"] = _mse(obs_raw[sel], imp_raw[sel])
        out[f"pearson_{part}"] = _pearson(obs[sel], imp[sel])
        out[f"pearson_{part}_raw"] = _pearson(obs_raw[sel], imp_raw[sel])

    n1, n5 = round(top_fraction * n), round(catch_fraction * n)
    top1_obs, top1_imp = _top(obs_order, n1), _top(imp_order, n1)
    top5_obs, top5_imp = _top(obs_order, n5), _top(imp_order, n5)
    out["mse1obs"] = _mse(obs[top1_obs], imp[top1_obs])
    out["mse1obs_raw"] = _mse(obs_raw[top1_obs], imp_raw[top1_obs])
    out["mse1imp"] = _mse(obs[top1_imp], imp[top1_imp])
    out["mse1imp_raw"] = _mse(obs_raw[top1_imp], imp_raw[top1_imp])
    nan = float("nan")
    out["match1"] = float((top1_obs & top1_imp).sum() / n1) if n1 else nan
    out["catch1obs"] = float((top1_obs & top5_imp).sum() / n1) if n1 else nan
    out["catch1imp"] = float((top1_imp & top5_obs).sum() / n1) if n1 else nan
    e1_obs, e1_imp = _at_least_nth(obs, obs_order, n1), _at_least_nth(imp, imp_order, n1)
    e5_obs, e5_imp = _at_least_nth(obs, obs_order, n5), _at_least_nth(imp, imp_order, n5)
    out["match1_count"] = float((e1_obs & e1_imp).sum())
    out["catch1obs_count"] = float((e1_obs & e5_imp).sum())
    out["catch1imp_count"] = float((e5_obs & e1_imp).sum())
    out["auroc_obs1"] = auroc(top1_obs, imp, ranks=imp_ranks)
    out["auroc_imp1"] = auroc(top1_imp, obs, ranks=obs_ranks)
    out["auprc_obs1"] = average_precision(top1_obs, imp, order=imp_order)
    out["auroc_peaks"] = auroc(fg, imp, ranks=imp_ranks)
    out["auprc_peaks"] = average_precision(fg, imp, order=imp_order)
    both = float((fg & imp_fg).sum())
    out["precision_bins"] = both / float(imp_fg.sum()) if imp_fg.any() else nan
    out["recall_bins"] = both / float(fg.sum()) if fg.any() else nan
    out["precision_peaks"], out["recall_peaks"] = peak_precision_recall(observed_peaks,
                                                                        imputed_peaks)
    out["n_bins"] = float(n)
    out["n_foreground"] = float(fg.sum())
    out["n_peaks_observed"] = float(observed_peaks.shape[0])
    out["n_peaks_imputed"] = float(imputed_peaks.shape[0])
    return out


# --------------------------------------------------------------------------- many tracks


def score_tracks(
    observed: xr.Dataset,
    predictions: xr.DataArray,
    *,
    observed_peaks: Mapping[str, pd.DataFrame] | None = None,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Score every predicted track against the observed dataset.

    Parameters
    ----------
    observed
        Signal dataset holding the truth for every predicted ``(cell, assay)``.
    predictions
        DataArray ``(track, bin)`` with ``cell``/``assay`` coordinates on ``track`` and a
        ``scale`` attribute, as returned by ``EpigenomeImputer.predict``.
    observed_peaks
        Peaks of observed tracks by ``"cell.assay"``, reused when given.
    progress
        Show a tqdm bar.
    **options
        Passed to :func:`score_track`.

    Returns
    -------
    pandas.DataFrame
        One row per track: ``track`` (``"cell.assay"``), ``cell``, ``assay``, then the metrics.
    """
    if predictions.dims != ("track", "bin"):
        raise InvalidArgumentError(f"predictions must have dims ('track', 'bin'), got {predictions.dims}")
    if "individual" in observed["signal"].dims:
        raise InvalidArgumentError("select one individual before scoring")
    truth = to_arcsinh(observed)
    imputed = to_arcsinh(predictions)
    bin_size = options.pop("bin_size", None) or observed.attrs.get("bin_size") or 25
    rows = []
    cells = imputed["cell"].values
    assays = imputed["assay"].values
    index = range(imputed.sizes["track"])
    if progress:
        from tqdm.auto import tqdm

        index = tqdm(index, desc="scoring tracks")
    for i in index:
        cell, assay = str(cells[i]), str(assays[i])
        if not bool(observed["observed"].sel(cell=cell, assay=assay)):
            raise InvalidArgumentError(f"track {cell}.{assay} is not observed, so it cannot be scored")
        obs = truth["signal"].sel(cell=cell, assay=assay)
        obs.attrs = {"scale": "arcsinh"}
        imp = imputed.isel(track=i)
        imp.attrs = {"scale": "arcsinh"}
        name = f"{cell}.{assay}"
        peaks = None if observed_peaks is None else observed_peaks.get(name)
        scores = score_track(obs, imp, observed_peaks=peaks, bin_size=int(bin_size), **options)
        rows.append({"track": name, "cell": cell, "assay": assay, **scores})
    return pd.DataFrame(rows, columns=["track", "cell", "assay", *METRICS, *COUNT_METRICS])


def _metric_n(metric: str, row: Mapping[str, Any]) -> int:
    if metric.endswith(("_fg", "_fg_raw")):
        return int(row["n_foreground"])
    if metric.endswith(("_bg", "_bg_raw")):
        return int(row["n_bins"] - row["n_foreground"])
    if metric in ("precision_peaks", "n_peaks_imputed"):
        return int(row["n_peaks_imputed"])
    if metric in ("recall_peaks", "n_peaks_observed"):
        return int(row["n_peaks_observed"])
    return int(row["n_bins"])


def metric_rows(table: pd.DataFrame, *, common: Mapping[str, Any] | None = None,
                metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy result rows: one per (track, metric), plus per-assay and overall means.

    Parameters
    ----------
    table
        Output of :func:`score_tracks` (columns ``track``, ``cell``, ``assay``, metrics).
    common
        Values for the other results-store columns (``run_id``, ``task``, ``dataset`` ...),
        repeated on every row.
    metrics
        Metrics to include; default :data:`METRICS` plus :data:`COUNT_METRICS`.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric``, ``stratum_kind``, ``stratum``, ``value``, ``n`` plus ``common``.
        ``stratum_kind`` is ``"track"`` (stratum ``"cell.assay"``, ``n`` the bins the value
        summarises: all scored bins, foreground or background bins, or peaks), ``"assay"``
        (stratum the assay) or ``"all"`` (stratum ``"all"``); aggregates are means over the
        tracks where the metric is finite, with ``n`` the number of such tracks.
    """
    metrics = list(metrics) if metrics is not None else [*METRICS, *COUNT_METRICS]
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise InvalidArgumentError(f"score table lacks metrics {missing}")
    records: list[dict[str, Any]] = []
    for row in table.to_dict("records"):
        for metric in metrics:
            records.append({"metric": metric, "stratum_kind": "track", "stratum": row["track"],
                            "value": float(row[metric]), "n": _metric_n(metric, row)})
    for kind, groups in (("assay", table.groupby("assay", sort=True)),
                         ("all", [("all", table)])):
        for label, block in groups:
            for metric in metrics:
                values = block[metric].to_numpy(np.float64)
                finite = values[np.isfinite(values)]
                records.append({"metric": metric, "stratum_kind": kind, "stratum": str(label),
                                "value": float(finite.mean()) if finite.size else float("nan"),
                                "n": int(finite.size)})
    frame = pd.DataFrame(records, columns=["metric", "stratum_kind", "stratum", "value", "n"])
    for key, value in dict(common or {}).items():
        frame[key] = value
    return frame
