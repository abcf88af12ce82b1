"""Tables, tests, verdicts and notebook runs of the eDICE comparison (epigenome.report).

AVG runs wherever a method must actually run; the costly steps (eDICE, Avocado, transfer
learning, DESeq2) are replaced by recorders or canned outputs, so each test checks the rows the
helper stores and reads back, not the models.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from analysislib.epigenome import report
from analysislib.epigenome.downstream import (
    DOWNSTREAM_TASK,
    evaluate_differential,
    evaluate_occupancy,
    evaluate_peak_shapes,
    evaluate_transfer,
)
from analysislib.epigenome.evaluate import TASK
from analysislib.epigenome.imputer import AverageImputer
from analysislib.epigenome.occupancy import enriched_bins, joint_occupancy, occupancy_histogram
from analysislib.epigenome.peaks import call_peaks
from analysislib.epigenome.report import (
    FirstBinsImputer,
    available_methods,
    contrast_tissues,
    correlation_blocks,
    evaluate_methods,
    example_peaks,
    example_tracks,
    kept_marks,
    learning_curve,
    load_window,
    mark_group_tests,
    mark_group_verdicts,
    mark_groups,
    method_parameters,
    occupancy_share,
    pool_replicates,
    read_differential,
    read_joint_occupancy,
    read_occupancy,
    read_peak_shapes,
    read_track_scores,
    read_transfer_tracks,
    reduced_cell_fitted,
    strongest_bin,
    support_counts,
    track_windows,
    training_bins,
)
from analysislib.epigenome.tensor import create_signal_dataset, to_arcsinh
from analysislib.errors import ToolNotFoundError
from analysislib.results import ResultsStore
from analysislib.simulate.epigenome import simulate_epigenome

BIN = 25


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    """4 cells x 3 assays x 600 bins with shared peaks (−log10 p)."""
    bins = np.arange(600)
    profile = 5.0 * ((bins >= 100) & (bins < 160)) + 3.0 * ((bins >= 400) & (bins < 430))
    scale = np.outer(0.8 + 0.1 * np.arange(4), 1.0 + 0.3 * np.arange(3))[:, :, None]
    noise = np.random.default_rng(0).exponential(0.25, (4, 3, 600))
    signal = (scale * profile + noise).astype(np.float32)
    return create_signal_dataset(signal, cells=["E1", "E2", "E3", "E4"],
                                 assays=["m1", "m2", "m3"], chrom="chrS")


@pytest.fixture(scope="module")
def personal() -> xr.Dataset:
    return simulate_epigenome("personal", n_individuals=2, n_cells=3, n_bins=2000, seed=1)


def _track(values, dims=("bin",), coords=None, scale="neglog10p"):
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    return xr.DataArray(values, dims=dims,
                        coords={**(coords or {}), "bin_start": ("bin", np.arange(n) * BIN),
                                "bin_chrom": ("bin", np.full(n, "chrS"))},
                        attrs={"scale": scale, "bin_size": BIN})


# --------------------------------------------------------------------------- runs and rows


def test_method_parameters_and_the_kept_mark_rotation(small):
    assert method_parameters("avg", "paper") == {}
    assert method_parameters("chromimpute", "quick") == {"preset": "quick"}
    assert method_parameters("edice", "paper") == {"preset": "paper", "progress": False}
    assert kept_marks(small) == {"E1": "m1", "E2": "m2", "E3": "m3", "E4": "m1"}


def test_available_methods_drops_chromimpute_without_its_tool(monkeypatch):
    from analysislib.epigenome import chromimpute

    def missing():
        raise ToolNotFoundError("no ChromImpute.jar")

    monkeypatch.setattr(chromimpute, "find_chromimpute_jar", missing)
    methods, skipped = available_methods(["edice", "avg", "chromimpute"])
    assert methods == ["edice", "avg"] and list(skipped) == ["chromimpute"]
    assert "no ChromImpute.jar" in skipped["chromimpute"]
    assert available_methods(["avg"]) == (["avg"], {})


def test_load_window_labels_the_bins(small, monkeypatch):
    monkeypatch.setattr(report, "load_signal", lambda name: (small, name))
    window, label = load_window("pilot", slice(100, 300))
    assert label == "pilot[100:300]" and window.sizes["bin"] == 200
    np.testing.assert_array_equal(window["bin_start"].values, small["bin_start"].values[100:300])
    whole, label = load_window("pilot")
    assert label == "pilot[0:600]" and whole.sizes["bin"] == 600


def test_evaluate_methods_stores_runs_and_reuses_them(small, tmp_path):
    store = ResultsStore(tmp_path)
    keep = kept_marks(small)
    common = {"store": store, "dataset_label": "small", "scenario": "reduced_cell_E2_keep_m2"}
    runs = evaluate_methods(["avg"], small, "reduced_cell", cells=["E2"], keep=keep["E2"],
                            **common)
    assert set(runs) == {"avg"}
    assert sorted(runs["avg"].predictions["track"].values.tolist()) == ["E2.m1", "E2.m3"]
    again = evaluate_methods(["avg"], small, "reduced_cell", cells=["E2"], keep="m2", reuse=True,
                             **common)
    assert again == {"avg": None}
    assert store.read(TASK)["run_id"].nunique() == 1

    tracks = read_track_scores(store, {"small": "Small"}, methods=["avg"],
                               scenarios=["reduced_cell_E2_keep_m2"])
    assert set(tracks["stratum_kind"]) == {"track"} and set(tracks["data"]) == {"Small"}
    assert set(zip(tracks["cell"], tracks["assay"], strict=True)) == {("E2", "m1"), ("E2", "m3")}
    mse = tracks[(tracks.metric == "mse") & (tracks.stratum == "E2.m1")]["value"].item()
    by_hand = np.arcsinh(small["signal"].sel(cell=["E1", "E3", "E4"], assay="m1").values)
    truth = np.arcsinh(small["signal"].sel(cell="E2", assay="m1").values)
    assert mse == pytest.approx(np.mean((by_hand.mean(axis=0) - truth) ** 2), rel=1e-5)


def test_evaluate_methods_gives_edice_the_validation_tracks(small, monkeypatch):
    calls = []
    monkeypatch.setattr(report, "evaluate_epigenome",
                        lambda name, ds, protocol, **kw: calls.append((name, kw)) or name)
    split = {"train": [("E1", "m1")], "val": [("E2", "m1")], "test": [("E3", "m1")]}
    out = evaluate_methods(["edice", "avg"], small, "split", split=split, preset="paper",
                           dataset_label="small", scenario="s", store=ResultsStore("unused"))
    assert out == {"edice": "edice", "avg": "avg"}
    (_, edice), (_, avg) = calls
    assert edice["fit_kwargs"] == {"val_tracks": [("E2", "m1")]}
    assert edice["method_parameters"] == {"preset": "paper", "progress": False}
    assert avg["fit_kwargs"] is None and avg["method_parameters"] == {}


def test_first_bins_imputer_fits_on_the_first_bins_and_predicts_all(small):
    seen = []

    class Spy(AverageImputer):
        def fit(self, ds):
            seen.append(ds.sizes["bin"])
            return super().fit(ds)

    wrapped = FirstBinsImputer(Spy(), 100)
    assert wrapped.name == "avg"
    assert wrapped.parameters() == {"train_bins": 100}
    wrapped.fit(small)
    prediction = wrapped.predict([("E1", "m1")], observed=to_arcsinh(small))
    assert seen == [100] and prediction.sizes["bin"] == 600
    expected = np.arcsinh(small["signal"].sel(cell=["E2", "E3", "E4"], assay="m1").values)
    np.testing.assert_allclose(prediction.values[0], expected.mean(axis=0), rtol=1e-5)


def test_learning_curve_runs_both_models_per_size(small, monkeypatch):
    calls = []
    monkeypatch.setattr(report, "evaluate_epigenome",
                        lambda method, ds, protocol, **kw: calls.append((method, kw)))
    scenarios = learning_curve(small, ["100", 300, 600], cell="E1", keep="m1", preset="quick",
                               min_steps=10, dataset_label="small")
    assert scenarios == ["learning_curve_E1_100bins", "learning_curve_E1_300bins"]  # 600: all
    edice = [kw for method, kw in calls if method == "edice"]
    avocado = [method for method, _ in calls if method != "edice"]
    assert [kw["method_parameters"]["train_bins"] for kw in edice] == [100, 300]
    from analysislib.epigenome.edice import edice_config

    config = edice_config("quick")
    steps_per_epoch = -(-100 // config.batch_size)
    assert edice[0]["method_parameters"]["epochs"] == max(config.epochs, -(-10 // steps_per_epoch))
    assert [a.train_bins for a in avocado] == [100, 300]
    assert all(a.name == "avocado" for a in avocado)

    rows = pd.DataFrame({"parameters": [json.dumps({"train_bins": 100}), json.dumps({}),
                                        json.dumps({"train_bins": 10_000})]})
    assert training_bins(rows, 600).tolist() == [100, 600, 600]


def test_support_counts_count_fitted_tracks_near_each_test_track(small):
    keep = kept_marks(small)
    fitted = reduced_cell_fitted(small, keep)
    assert fitted["E1"] == {(c, a) for c in ("E2", "E3", "E4") for a in ("m1", "m2", "m3")} | {
        ("E1", "m1")}
    tracks = pd.DataFrame({"cell": ["E1", "E1"], "assay": ["m2", "m3"]})
    counted = support_counts(tracks, fitted)
    assert counted["fitted tracks, same cell type"].tolist() == [1, 1]
    assert counted["fitted tracks, same assay"].tolist() == [3, 3]
    split = support_counts(tracks, [("E1", "m1"), ("E2", "m2"), ("E3", "m2"), ("E1", "m2")])
    assert split["fitted tracks, same cell type"].tolist() == [2, 2]
    assert split["fitted tracks, same assay"].tolist() == [2, 0]


def test_mark_group_tests_are_welch_tests_with_verdicts():
    rng = np.random.default_rng(3)
    narrow, broad = rng.normal(0.8, 0.05, 5), rng.normal(0.5, 0.05, 6)
    rows = pd.DataFrame({"data": "sim", "metric": "pearson",
                         "assay": ["H3K4me3"] * 5 + ["H3K27me3"] * 3 + ["H3K36me3"] * 3
                         + ["H3K9me3"] * 2,  # in neither group
                         "value": [*narrow, *broad, 0.0, 0.0]})
    grouped = mark_groups(rows, "narrow", "broad")
    assert len(grouped) == 11 and set(grouped["group"]) == {"narrow", "broad"}
    tests = mark_group_tests(rows, "narrow", "broad")
    row = tests.iloc[0]
    assert (row["split"], row["tracks (first)"], row["tracks (second)"]) == ("narrow vs broad",
                                                                              5, 6)
    assert row["mean (first)"] == pytest.approx(narrow.mean())
    assert row["Welch p"] == pytest.approx(stats.ttest_ind(narrow, broad, equal_var=False).pvalue)
    (line,) = mark_group_verdicts(tests)
    assert line == (f"sim: eDICE GW Corr narrow {narrow.mean():.3f} vs broad {broad.mean():.3f}, "
                    f"Welch p = {row['Welch p']:.2g}: reproduced")
    flipped = tests.assign(**{"mean (first)": 0.1})
    assert mark_group_verdicts(flipped)[0].endswith("NOT reproduced")
    weak = tests.assign(**{"Welch p": 0.2})
    assert mark_group_verdicts(weak)[0].endswith("same direction, not significant")
    one = mark_group_tests(rows.iloc[[0, 5, 6, 7]], "narrow", "broad")
    assert np.isnan(one["Welch p"].iloc[0])  # one narrow track: no test


# --------------------------------------------------------------------------- windows


def test_track_windows_cut_the_regions_on_the_neglog10p_scale():
    values = np.arange(40, dtype=float).reshape(2, 20)
    tracks = {"observed": _track(values, dims=("cell", "bin"), coords={"cell": ["A", "B"]}),
              "imputed": _track(np.arcsinh(values), dims=("cell", "bin"),
                                coords={"cell": ["A", "B"]}, scale="arcsinh")}
    regions = pd.DataFrame({"chrom": "chrS", "start": [100, 0], "end": [150, 25]})
    windows = track_windows(tracks, regions, flank_bins=2)
    assert list(windows.columns) == ["track", "cell", "region", "chrom", "bin_start", "signal"]
    first = windows[(windows.track == "observed") & (windows.cell == "B") & (windows.region == 0)]
    assert first["bin_start"].tolist() == [50, 75, 100, 125, 150, 175]
    assert first["signal"].tolist() == [22, 23, 24, 25, 26, 27]
    edge = windows[(windows.track == "imputed") & (windows.cell == "A") & (windows.region == 1)]
    np.testing.assert_allclose(edge["signal"], [0, 1, 2])  # clipped at the first bin
    assert strongest_bin(tracks["observed"]).to_dict("records") == [
        {"chrom": "chrS", "start": 19 * BIN, "end": 20 * BIN}]


def test_example_tracks_centre_on_the_strongest_observed_peak(small):
    predictions = to_arcsinh(small)["signal"].sel(assay="m2").rename(cell="track")
    predictions = predictions.assign_coords(
        track=[f"{c}.m2" for c in small["cell"].values]).drop_vars("assay")
    predictions.attrs = {"scale": "arcsinh"}
    windows, peaks = example_tracks(small, {"copy": predictions}, cells=["E2"], assay="m2",
                                    flank_bins=20)
    observed = small["signal"].sel(cell="E2", assay="m2").assign_attrs(scale="neglog10p",
                                                                       bin_size=BIN)
    strongest = call_peaks(observed).sort_values("score").iloc[-1]
    summit_bin = strongest["summit"] // BIN
    assert set(windows["track"]) == {"observed", "copy"} and set(windows["cell"]) == {"E2"}
    obs = windows[windows.track == "observed"]
    assert obs["bin_start"].tolist() == list(range((summit_bin - 20) * BIN,
                                                   (summit_bin + 21) * BIN, BIN))
    np.testing.assert_allclose(windows[windows.track == "copy"]["signal"], obs["signal"],
                               rtol=1e-5)
    assert set(peaks["track"]) == {"observed", "copy"}
    assert ((peaks["end"] > obs["bin_start"].min()) & (peaks["start"] <= obs["bin_start"].max())
            ).all()


# --------------------------------------------------------------------------- Fig. 4


def _two_tissues():
    rng = np.random.default_rng(4)
    signal = rng.gamma(0.5, 0.5, (3, 1, 2000))
    for start in range(100, 1900, 150):
        signal[0, 0, start:start + 24] += rng.uniform(4, 8) * np.hanning(24)
        signal[1, 0, start + 3:start + 27] += rng.uniform(2, 8) * np.hanning(24)
    lineage = xr.DataArray(["a", "b", "a"], dims="cell")
    ds = create_signal_dataset(signal, cells=["E025", "E052", "E023"], assays=["H3K9ac"],
                               chrom="chrS")
    return ds.assign_coords(cell_lineage=lineage)


def test_pool_replicates_and_contrast_tissues():
    rng = np.random.default_rng(5)
    reps = create_signal_dataset(rng.uniform(0, 3, (3, 1, 50)), cells=["t0", "t1", "t2"],
                                 assays=["H3K9ac"], chrom="chrS")
    reps = xr.concat([reps, reps.assign(signal=reps["signal"] * 3)], dim="replicate")
    reps = reps.assign_coords(cell_lineage=("cell", ["x", "y", "x"]))
    pooled = pool_replicates(reps)
    np.testing.assert_allclose(pooled["signal"].values, 2 * reps["signal"].values[0], rtol=1e-6)
    assert pooled.attrs["scale"] == reps.attrs["scale"]
    assert contrast_tissues(reps) == ("t0", "t1", "t2")


def test_evaluate_peak_shapes_stores_distances_and_agreement(tmp_path):
    from analysislib.epigenome.wasserstein import distance_agreement, peak_shape_distances

    ds = _two_tissues()
    store = ResultsStore(tmp_path)
    noisy = ds["signal"].values[:2, 0] * np.random.default_rng(6).uniform(0.8, 1.2, (2, 2000))
    predictions = xr.DataArray(np.arcsinh(noisy).astype(np.float32), dims=("track", "bin"),
                               coords={"track": ["E025.H3K9ac", "E052.H3K9ac"],
                                       "cell": ("track", ["E025", "E052"]),
                                       "assay": ("track", ["H3K9ac", "H3K9ac"]),
                                       "bin_start": ds["bin_start"], "bin_chrom": ds["bin_chrom"]},
                               attrs={"scale": "arcsinh"})
    distances = evaluate_peak_shapes(ds, predictions, cells=["E025", "E052"], assay="H3K9ac",
                                     store=store, dataset_label="two")
    peaks = call_peaks(ds["signal"].sel(cell="E025", assay="H3K9ac").assign_attrs(
        scale="neglog10p", bin_size=BIN))
    assert distances.sizes["peak"] == len(peaks) > 5
    imputed = xr.DataArray(np.arcsinh(noisy)[:, None], dims=("cell", "assay", "bin"),
                           coords={"cell": ["E025", "E052"], "assay": ["H3K9ac"],
                                   "bin_start": ds["bin_start"], "bin_chrom": ds["bin_chrom"]},
                           attrs={"scale": "arcsinh"})
    direct = peak_shape_distances(ds, imputed, peaks, cells=["E025", "E052"],
                                  assay="H3K9ac").compute()
    np.testing.assert_allclose(distances["imputed"], direct["imputed"], rtol=1e-5)

    rows = store.read(DOWNSTREAM_TASK, scenario="peak_shape_wasserstein_E025_E052_H3K9ac")
    agreement = distance_agreement(distances)
    totals = rows[rows.stratum_kind == "all"].set_index("metric")["value"]
    assert totals["pearson"] == pytest.approx(agreement.pearson)
    assert totals["spearman_p"] == pytest.approx(agreement.spearman_p)
    stored = read_peak_shapes(rows, cells=["E025", "E052"])
    assert stored.attrs == {"cells": ["E025", "E052"], "unit": "bins"}
    first = f"chrS:{peaks['start'].iloc[0]}-{peaks['end'].iloc[0]}"
    assert stored["observed"].sel(peak=first).item() == pytest.approx(
        distances["observed"].values[0])

    picked = example_peaks(distances, ds, min_length=4)
    assert picked["kind"].tolist() == ["specific", "shared"]
    long = distances.where(distances["peak_length"] >= 4, drop=True)
    assert picked["observed"].iloc[0] == pytest.approx(float(long["observed"].max()))
    assert picked["peak"].iloc[0] == (f"chrS:{int(picked['start'].iloc[0])}-"
                                      f"{int(picked['end'].iloc[0])}")


def test_evaluate_differential_stores_what_read_differential_returns(tmp_path, monkeypatch):
    from analysislib.epigenome import differential

    samples = ["A_measured_1", "B_measured_1", "A_imputed_1"]
    corr = pd.DataFrame([[1.0, 0.2, 0.9], [0.2, 1.0, 0.3], [0.9, 0.3, 1.0]], index=samples,
                        columns=samples)
    trend = SimpleNamespace(method="moments", a0=0.1, a1=0.5, n_features=40)
    canned = SimpleNamespace(overlap=differential.DifferentialOverlap(4, 3, 2, 2 / 3, 0.5),
                             trend=trend, correlation=corr, peaks=pd.DataFrame(index=range(7)))
    seen = {}

    def fake(measured, imputed, trend, **options):
        seen.update(options)
        return canned

    monkeypatch.setattr(differential, "run_differential_comparison", fake)
    measured = {"A": _track(np.ones((2, 5)), dims=("replicate", "bin")),
                "B": _track(np.zeros((2, 5)), dims=("replicate", "bin"))}
    imputed = {t: _track(np.ones(5)) for t in ("A", "B")}
    store = ResultsStore(tmp_path)
    out = evaluate_differential(measured, imputed, trend, n_replicates={"A": 2, "B": 2},
                                alpha=0.1, store=store, dataset_label="d")
    assert out is canned and seen["alpha"] == 0.1 and seen["n_replicates"] == {"A": 2, "B": 2}
    rows = store.read(DOWNSTREAM_TASK, scenario="differential_A_B")
    totals = rows[rows.stratum_kind == "all"].set_index("metric")["value"]
    assert totals[["n_measured", "n_imputed", "n_shared", "dispersion_a0"]].tolist() == [
        4, 3, 2, 0.1]
    assert json.loads(rows["parameters"].iloc[0])["alpha"] == 0.1
    overlap, matrix = read_differential(rows)
    assert overlap == canned.overlap
    pd.testing.assert_frame_equal(matrix.loc[samples, samples], corr, check_names=False)
    table = pd.DataFrame({"source": ["measured", "measured", "imputed"],
                          "tissue": ["A", "B", "A"]}, index=samples)
    blocks = correlation_blocks(matrix, table)
    assert blocks.loc["measured:A", "imputed:A"] == pytest.approx(0.9)
    assert blocks.loc["measured:B", "measured:B"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- Figs. 5-6


def test_evaluate_occupancy_round_trips_through_the_store(personal, tmp_path):
    store = ResultsStore(tmp_path)
    enriched = evaluate_occupancy(personal, individual="ind00", cell="cell002", store=store,
                                  dataset_label="p")
    xr.testing.assert_equal(enriched, enriched_bins(personal))
    rows = store.read(DOWNSTREAM_TASK, scenario="occupancy_across_tissues")
    table = read_occupancy(rows)
    expected = occupancy_histogram(enriched, "cell").groupby(["assay", "occupancy"])[
        "n_bins"].sum()
    np.testing.assert_array_equal(table.set_index(["assay", "occupancy"])["n_bins"]
                                  .sort_index().to_numpy(), expected.sort_index().to_numpy())
    share = occupancy_share(table)
    assay = share.index[0]
    assert share[assay] == pytest.approx(expected[assay][1] / expected[assay].sum())
    joint = read_joint_occupancy(store.read(DOWNSTREAM_TASK, scenario="joint_occupancy_ind00_cell002"))
    for name, got in joint.items():
        want = joint_occupancy(enriched, individual="ind00", cell="cell002", assay=name)
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert set(store.read(DOWNSTREAM_TASK)["method"]) == {"observed"}


def test_evaluate_transfer_stores_three_scenarios(personal, tmp_path, monkeypatch):
    from analysislib.epigenome import transfer

    keys = {"training_individual": "ind00", "target_individual": "ind01", "tissue": "cell000"}
    scores = pd.DataFrame([
        {**keys, "assay": assay, "method": method, "mse": mse, "pearson": 0.5, "n": 2000.0,
         "auprc": auprc, "positive_fraction": 0.01, "n_positive": 20.0, "n_evaluated": 1900.0,
         "planted_share": 0.6, "genome_share": 0.02}
        for assay, mse, auprc in (("H3K4me3", 0.1, 0.3), ("H3K27me3", 0.3, 0.2))
        for method in ("edice_transfer", "training_individual_track", "individual_avg")])
    pos = scores.drop_duplicates("assay").assign(method="positive_fraction", mse=np.nan,
                                                 pearson=np.nan, n=np.nan, auprc=0.01)
    seen = {}

    def fake(ds, **kwargs):
        seen.update(kwargs)
        return pd.concat([scores, pos], ignore_index=True)

    monkeypatch.setattr(transfer, "run_transfer_experiment", fake)
    store = ResultsStore(tmp_path)
    out = evaluate_transfer(personal, pairs=[("ind00", "ind01")], tissues=["cell000"],
                            peak_options={"min_length": 0}, store=store, dataset_label="p")
    assert len(out) == 8 and seen["extra_scores"].keywords["peak_options"] == {"min_length": 0}
    imputation = read_transfer_tracks(store.read(TASK, scenario="entex_loo_transfer",
                                                 stratum_kind="track"))
    assert set(imputation["method"]) == set(transfer.TRANSFER_METHODS)
    edice = imputation[(imputation.method == "edice_transfer") & (imputation.metric == "mse")]
    assert edice.set_index("assay")["value"].to_dict() == {"H3K4me3": 0.1, "H3K27me3": 0.3}
    assert set(edice["pair"]) == {"ind00>ind01"} and set(edice["tissue"]) == {"cell000"}
    runtimes = store.read(TASK).groupby("method")["runtime_s"].first()
    assert np.isfinite(runtimes["edice_transfer"]) and np.isnan(runtimes["individual_avg"])
    auprc = store.read(DOWNSTREAM_TASK, scenario="individual_specific_peaks", stratum_kind="track")
    assert set(auprc["method"]) == {*transfer.TRANSFER_METHODS, "positive_fraction"}
    assert auprc.loc[auprc.method == "positive_fraction", "value"].tolist() == [0.01, 0.01]
    assert set(auprc["n"]) == {1900}
    truth = store.read(DOWNSTREAM_TASK, scenario="individual_specific_peak_truth",
                       stratum_kind="track")
    assert sorted(truth["metric"]) == ["genome_share", "genome_share", "planted_share",
                                       "planted_share"]
    assert set(truth["n"]) == {20} and set(truth["method"]) == {"observed"}
