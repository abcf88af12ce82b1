"""Tests for analysislib.epigenome.metrics: hand-computed cases and agreement with scipy/sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from analysislib.epigenome.imputer import AverageImputer
from analysislib.epigenome.metrics import (
    COUNT_METRICS,
    METRICS,
    _order_and_ranks,
    auroc,
    average_precision,
    metric_rows,
    score_track,
    score_tracks,
)
from analysislib.epigenome.peaks import call_peaks
from analysislib.epigenome.tensor import create_signal_dataset

NO_PEAKS = pd.DataFrame({"chrom": pd.Series(dtype=str), "start": pd.Series(dtype=np.int64),
                         "end": pd.Series(dtype=np.int64)})


def peaks(*intervals, chrom="chr1"):
    return pd.DataFrame({"chrom": [chrom] * len(intervals),
                         "start": [s for s, _ in intervals], "end": [e for _, e in intervals]})


def score(obs, imp, **kwargs):
    kwargs.setdefault("observed_peaks", NO_PEAKS)
    kwargs.setdefault("imputed_peaks", NO_PEAKS)
    return score_track(np.asarray(obs, float), np.asarray(imp, float), **kwargs)


def test_global_mse_and_pearson_by_hand() -> None:
    s = score([1, 2, 3, 4], [2, 4, 6, 8])
    assert s["mse"] == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert s["pearson"] == pytest.approx(1.0)
    assert s["spearman"] == pytest.approx(1.0)
    s = score([0, 1, 2, 3], [0, 1, 1, 5])
    assert s["mse"] == pytest.approx((0 + 0 + 1 + 4) / 4)
    # Pearson by hand: deviations (-1.5,-.5,.5,1.5) and (-1.75,-.75,-.75,3.25)
    num = 1.5 * 1.75 + 0.5 * 0.75 - 0.5 * 0.75 + 1.5 * 3.25
    den = np.sqrt(5.0 * (1.75**2 + 0.75**2 * 2 + 3.25**2))
    assert s["pearson"] == pytest.approx(num / den)


def test_raw_scale_metrics_apply_sinh() -> None:
    obs, imp = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 1.0, 1.0, 2.5])
    s = score(obs, imp)
    assert s["mse_raw"] == pytest.approx(np.mean((np.sinh(obs) - np.sinh(imp)) ** 2))
    assert s["pearson_raw"] == pytest.approx(np.corrcoef(np.sinh(obs), np.sinh(imp))[0, 1])
    # the same tracks given on the −log10 p scale score identically
    raw = score(np.sinh(obs), np.sinh(imp), scale="neglog10p")
    for key in ("mse", "mse_raw", "pearson", "pearson_raw", "spearman"):
        assert raw[key] == pytest.approx(s[key])


def test_top_one_percent_metrics_by_hand() -> None:
    # N = 200 -> n1 = 2, n5 = 10.  Observed top 1 % = {198, 199}, top 5 % = {190..199}.
    obs = np.arange(200, dtype=float)
    imp = np.zeros(200)
    imp[199], imp[50] = 10.0, 9.0  # imputed top 1 % = {199, 50}; top 5 % adds bins 0..7 (ties)
    s = score(obs, imp)
    assert s["match1"] == 0.5
    assert s["catch1obs"] == 0.5  # 199 is in the imputed top 5 %, 198 is not
    assert s["catch1imp"] == 0.5  # 199 is in the observed top 5 %, 50 is not
    # ENCODE counts use thresholds with ties: imputed >= sort(imp)[-10] = 0 is every bin
    assert s["match1_count"] == 1
    assert s["catch1obs_count"] == 2
    assert s["catch1imp_count"] == 1
    assert s["mse1obs"] == pytest.approx(((198 - 0) ** 2 + (199 - 10) ** 2) / 2)
    assert s["mse1imp"] == pytest.approx(((199 - 10) ** 2 + (50 - 9) ** 2) / 2)
    # positive 199 (score 10) beats all 198 negatives; positive 198 (score 0) ties 197 zeros
    assert s["auroc_obs1"] == pytest.approx((198 + 0.5 * 197) / (2 * 198))
    # thresholds 10 (P=1, R=.5), 9 (no recall gain), 0 (P=2/200, R=1)
    assert s["auprc_obs1"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 200)
    labels = np.isin(np.arange(200), [198, 199])
    assert s["auroc_obs1"] == pytest.approx(roc_auc_score(labels, imp))
    assert s["auprc_obs1"] == pytest.approx(average_precision_score(labels, imp))
    labels_imp = np.isin(np.arange(200), [199, 50])
    assert s["auroc_imp1"] == pytest.approx(roc_auc_score(labels_imp, obs))


def test_foreground_background_split_by_hand() -> None:
    obs = np.array([0, 0, 3, 4, 0, 1, 0, 0], float)
    imp = np.array([0, 1, 2, 4, 1, 1, 0, 2], float)
    s = score(obs, imp, observed_peaks=peaks((50, 100)))  # bins 2 and 3
    assert s["n_foreground"] == 2
    assert s["mse_fg"] == pytest.approx((1 + 0) / 2)
    assert s["pearson_fg"] == pytest.approx(1.0)  # (3,4) vs (2,4)
    assert s["mse_bg"] == pytest.approx((0 + 1 + 1 + 0 + 0 + 4) / 6)
    assert s["pearson_bg"] == pytest.approx(np.corrcoef([0, 0, 0, 1, 0, 0],
                                                        [0, 1, 1, 1, 0, 2])[0, 1])
    assert s["auroc_peaks"] == pytest.approx(roc_auc_score(np.isin(range(8), [2, 3]), imp))
    assert s["auprc_peaks"] == pytest.approx(
        average_precision_score(np.isin(range(8), [2, 3]), imp))


def test_peak_precision_and_recall_by_hand() -> None:
    n = 60  # 25 bp bins over [0, 1500)
    obs_peaks = peaks((0, 100), (500, 600))  # bins 0-3 and 20-23
    imp_peaks = peaks((50, 150), (1000, 1100), (1200, 1225))  # bins 2-5, 40-43, 48
    s = score(np.zeros(n), np.zeros(n), observed_peaks=obs_peaks, imputed_peaks=imp_peaks)
    assert s["precision_bins"] == pytest.approx(2 / 9)
    assert s["recall_bins"] == pytest.approx(2 / 8)
    assert s["precision_peaks"] == pytest.approx(1 / 3)
    assert s["recall_peaks"] == pytest.approx(1 / 2)
    assert (s["n_peaks_observed"], s["n_peaks_imputed"]) == (2, 3)


def test_undefined_metrics_are_nan() -> None:
    s = score([1, 1, 1, 1], [0, 1, 2, 3])
    assert np.isnan(s["pearson"]) and np.isnan(s["mse_fg"]) and np.isnan(s["auroc_peaks"])
    assert np.isnan(s["precision_bins"]) and np.isnan(s["recall_peaks"])
    assert np.isnan(s["match1"])  # n1 = round(0.04) = 0


def test_nan_and_bin_selection_are_left_out() -> None:
    obs = np.array([1.0, np.nan, 3.0, 4.0])
    imp = np.array([1.0, 2.0, 2.0, 0.0])
    s = score(obs, imp)
    assert s["n_bins"] == 3
    assert s["mse"] == pytest.approx((0 + 1 + 16) / 3)
    s = score(obs, imp, bins=np.array([True, True, True, False]))
    assert s["n_bins"] == 2 and s["mse"] == pytest.approx(0.5)


def test_peaks_are_called_when_not_given() -> None:
    obs = np.zeros(40)
    obs[10:20] = np.arcsinh(5.0)  # a 250 bp peak at −log10 p = 5
    imp = np.zeros(40)
    imp[12:22] = np.arcsinh(3.0)
    s = score_track(obs, imp)
    assert s["n_peaks_observed"] == 1 and s["n_peaks_imputed"] == 1
    assert s["precision_bins"] == pytest.approx(8 / 10)
    assert s["recall_bins"] == pytest.approx(8 / 10)
    assert s["n_foreground"] == 10


def test_rank_helpers_agree_with_scipy_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=500), 1)  # many ties
    y = x + np.round(rng.normal(size=500), 1)
    order, ranks = _order_and_ranks(x)
    np.testing.assert_allclose(ranks, rankdata(x))
    assert np.all(np.diff(x[order]) <= 0)
    labels = y > 1.0
    assert auroc(labels, x) == pytest.approx(roc_auc_score(labels, x))
    assert average_precision(labels, x) == pytest.approx(average_precision_score(labels, x))
    s = score(x, y)
    assert s["spearman"] == pytest.approx(spearmanr(x, y)[0])
    assert np.isnan(auroc(np.zeros(5, bool), np.arange(5)))
    assert np.isnan(average_precision(np.zeros(5, bool), np.arange(5)))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="bins"):
        score([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="scale"):
        score_track(xr.DataArray(np.zeros(3), dims="bin"), np.zeros(3))
    with pytest.raises(ValueError, match="top_fraction"):
        score([1, 2], [1, 2], top_fraction=0.1, catch_fraction=0.05)


# --------------------------------------------------------------------------- many tracks


@pytest.fixture(scope="module")
def small_dataset():
    rng = np.random.default_rng(1)
    base = rng.exponential(0.3, 400)
    base[100:140] += 4.0
    base[300:320] += 3.0
    signal = np.stack([
        np.stack([base * f + rng.exponential(0.1, 400) for f in (1.0, 0.5)])
        for _ in range(3)]).astype(np.float32)  # 3 cells x 2 assays x 400 bins
    return create_signal_dataset(np.arcsinh(signal), cells=["c1", "c2", "c3"],
                                 assays=["a1", "a2"], scale="arcsinh")


def test_score_tracks_and_metric_rows(small_dataset) -> None:
    ds = small_dataset
    targets = [("c1", "a1"), ("c2", "a1"), ("c3", "a2")]
    predictions = AverageImputer().fit(ds).predict(targets)
    table = score_tracks(ds, predictions)
    assert table["track"].tolist() == ["c1.a1", "c2.a1", "c3.a2"]
    # each row equals a direct score_track call on that track
    direct = score_track(ds["signal"].sel(cell="c2", assay="a1"), predictions.isel(track=1))
    assert table.iloc[1]["mse"] == pytest.approx(direct["mse"])
    assert table.iloc[1]["auprc_peaks"] == pytest.approx(direct["auprc_peaks"])
    rows = metric_rows(table, common={"method": "avg", "dataset": "toy"})
    n_metrics = len(METRICS) + len(COUNT_METRICS)
    assert len(rows) == n_metrics * (3 + 2 + 1)  # tracks, assays, all
    assert set(rows["method"]) == {"avg"} and set(rows["dataset"]) == {"toy"}
    a1 = rows[(rows.stratum_kind == "assay") & (rows.stratum == "a1") & (rows.metric == "mse")]
    assert a1["value"].item() == pytest.approx(table["mse"].iloc[:2].mean())
    assert a1["n"].item() == 2
    overall = rows[(rows.stratum_kind == "all") & (rows.metric == "pearson")]
    assert overall["value"].item() == pytest.approx(table["pearson"].mean())
    track_fg = rows[(rows.stratum == "c1.a1") & (rows.metric == "mse_fg")]
    assert track_fg["n"].item() == table.iloc[0]["n_foreground"] > 0
    recall = rows[(rows.stratum == "c1.a1") & (rows.metric == "recall_peaks")]
    assert recall["n"].item() == table.iloc[0]["n_peaks_observed"]


def test_score_tracks_reuses_given_peaks(small_dataset) -> None:
    ds = small_dataset
    predictions = AverageImputer().fit(ds).predict([("c1", "a1")])
    none = {"c1.a1": NO_PEAKS.assign(summit=[], score=[])}
    table = score_tracks(ds, predictions, observed_peaks=none)
    assert table.iloc[0]["n_foreground"] == 0
    called = call_peaks(ds["signal"].sel(cell="c1", assay="a1"))
    assert score_tracks(ds, predictions).iloc[0]["n_peaks_observed"] == len(called) > 0


def test_score_tracks_refuses_unobserved_truth(small_dataset) -> None:
    from analysislib.epigenome.tensor import hide_tracks

    ds = small_dataset
    predictions = AverageImputer().fit(ds).predict([("c1", "a1")])
    with pytest.raises(ValueError, match="not observed"):
        score_tracks(hide_tracks(ds, [("c1", "a1")]), predictions)


def test_metric_rows_means_skip_nan() -> None:
    table = pd.DataFrame({"track": ["x.a", "y.a"], "cell": ["x", "y"], "assay": ["a", "a"],
                          "mse": [1.0, np.nan], "n_bins": [10, 10], "n_foreground": [0, 0]})
    rows = metric_rows(table, metrics=["mse"])
    agg = rows[rows.stratum_kind == "assay"]
    assert agg["value"].item() == 1.0 and agg["n"].item() == 1
    with pytest.raises(ValueError, match="lacks metrics"):
        metric_rows(table, metrics=["pearson"])
