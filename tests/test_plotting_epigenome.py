"""The eDICE figures (analysislib.plotting.epigenome) draw what their tables hold."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from analysislib.epigenome.differential import compare_differential
from analysislib.epigenome.occupancy import enriched_bins, joint_occupancy, occupancy_histogram
from analysislib.epigenome.report import mark_group_tests, mark_groups, track_windows
from analysislib.epigenome.tensor import create_signal_dataset
from analysislib.plotting.epigenome import (
    plot_affinity_correlation,
    plot_affinity_heatmap,
    plot_distance_scatter,
    plot_example_tracks,
    plot_individual_specific_auprc,
    plot_joint_occupancy,
    plot_learning_curves,
    plot_mark_groups,
    plot_metric_boxes,
    plot_occupancy_histograms,
    plot_peak_examples,
    plot_replicates_at_peaks,
    plot_scores_by_assay,
    plot_track_across_individuals,
    plot_transfer_scores,
    plot_venn,
    plot_win_percentages,
)
from analysislib.simulate.epigenome import simulate_epigenome

matplotlib.use("Agg")
BIN = 25


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _signals(values, dim, names, scale="neglog10p"):
    """Tracks ``(dim, bin)`` with the bin coordinates of a signal dataset."""
    values = np.asarray(values, dtype=np.float32)[:, None, :]
    ds = create_signal_dataset(values, cells=list(names), assays=["H3K9ac"], chrom="chrS",
                               scale=scale)
    return ds["signal"].isel(assay=0, drop=True).rename(cell=dim).assign_attrs(ds.attrs)


def _track_rows(seed=0):
    """Per-track store rows: two datasets, two methods, four tracks, three metrics."""
    rng = np.random.default_rng(seed)
    rows = []
    for data in ("real", "simulated"):
        for method in ("edice", "avg"):
            for k, (cell, assay) in enumerate([("c1", "H3K4me3"), ("c1", "H3K27me3"),
                                               ("c2", "H3K4me3"), ("c2", "H3K9me3")]):
                for metric in ("mse", "pearson", "auprc_peaks"):
                    rows.append({"data": data, "method": method, "metric": metric,
                                 "stratum": f"{cell}.{assay}", "cell": cell, "assay": assay,
                                 "stratum_kind": "track", "value": float(rng.uniform()),
                                 "n": 100, "run_id": f"{data}-{method}",
                                 "fitted tracks, same cell type": k + 1,
                                 "fitted tracks, same assay": 2 * k})
    return pd.DataFrame(rows)


def test_metric_boxes_one_panel_per_metric():
    rows = _track_rows()
    metrics = {"mse": "GW MSE", "pearson": "GW Corr"}
    fig = plot_metric_boxes(rows[rows.data == "real"], metrics=metrics, order=["edice", "avg"],
                            title="real: 4 test tracks")
    assert [ax.get_title() for ax in fig.axes] == ["GW MSE", "GW Corr"]
    assert fig._suptitle.get_text() == "real: 4 test tracks"
    # every track is a dot on top of the boxes: 2 methods x 4 tracks per panel
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 8


def test_example_tracks_rows_of_signal_and_a_row_of_peaks():
    windows = pd.DataFrame({"cell": "c1", "track": np.repeat(["observed", "edice"], 4),
                            "bin_start": np.tile(np.arange(4) * BIN, 2),
                            "signal": [0, 2, 4, 0, 0, 1, 3, 1]})
    peaks = pd.DataFrame({"cell": "c1", "track": ["observed", "edice", "edice"],
                          "start": [25, 25, 75], "end": [75, 75, 100]})
    fig = plot_example_tracks(windows, peaks, titles={"c1": "c1 H3K4me3"})
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "c1 H3K4me3"
    assert fig.axes[0].get_ylim()[1] == pytest.approx(4 * 1.05)  # shared by all tracks
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == ["observed peaks",
                                                                    "edice peaks"]
    segments = [len(c.get_segments()) for c in fig.axes[2].collections]
    assert segments == [1, 2]


def test_win_percentages_bars_and_the_50_percent_line():
    wins = pd.DataFrame({"data": ["real"] * 4, "metric": ["mse", "mse", "pearson", "pearson"],
                         "baseline": ["avg", "predictd"] * 2, "strata": 4, "wins": [1, 2, 3, 4],
                         "win_pct": [25.0, 50.0, 75.0, 100.0]})
    fig = plot_win_percentages(wins, labels={"mse": "GW MSE", "pearson": "GW Corr"},
                               baselines=["avg", "predictd"], col="data", ylabel="eDICE better (%)")
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert heights == [25.0, 50.0, 75.0, 100.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GW MSE", "GW Corr"]
    assert ax.get_ylabel() == "eDICE better (%)" and ax.get_ylim() == (0, 100)
    assert any(list(line.get_ydata()) == [50, 50] for line in ax.lines)


def test_learning_curves_log_scale_one_panel_per_metric():
    rows = _track_rows()
    rows = rows[rows.metric != "auprc_peaks"]
    rows = rows.assign(**{"training bins": np.where(rows.data == "real", 500, 8000)})
    fig = plot_learning_curves(rows, labels={"mse": "GW MSE", "pearson": "GW Corr"}, title="t")
    assert sorted(ax.get_title() for ax in fig.axes) == ["GW Corr", "GW MSE"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert all(len(ax.lines) >= 2 for ax in fig.axes)  # one line per method


def test_scores_by_assay_dots_bars_and_colour_bar():
    rows = _track_rows()
    rows = rows[rows.method == "edice"]
    fig = plot_scores_by_assay(rows, metrics={"pearson": "GW Corr", "mse": "GW MSE"})
    # 2 metrics x 2 datasets, each with its twin axis for the bars, and one colour bar
    assert len(fig.axes) == 2 * 2 * 2 + 1
    ax = fig.axes[0]
    assert ax.get_title() == "real: eDICE GW Corr per test track"
    assert len(ax.collections[0].get_offsets()) == 4
    part = rows[(rows.data == "real") & (rows.metric == "pearson")]
    np.testing.assert_allclose(sorted(ax.collections[0].get_offsets()[:, 1]), sorted(part.value))
    twin = next(a for a in fig.axes[1:] if a.bbox.bounds == ax.bbox.bounds)
    bars = [p.get_height() for p in twin.patches]
    expected = part.groupby("assay")["fitted tracks, same assay"].mean().sort_index()
    np.testing.assert_allclose(bars, expected.to_numpy())


def test_mark_groups_prints_the_welch_p_under_each_panel():
    rows = _track_rows()
    rows = rows[rows.method == "edice"]
    tests = mark_group_tests(rows, "narrow", "broad")
    fig = plot_mark_groups(mark_groups(rows, "narrow", "broad"), tests, metrics=["mse", "pearson"])
    assert len(fig.axes) == 2 * 2
    p = tests.set_index(["data", "metric"]).loc[("real", "mse"), "Welch p"]
    assert fig.axes[0].get_xlabel() == f"Welch p = {p:.3g}"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["narrow", "broad"]


def _distances():
    return xr.Dataset({"observed": ("peak", [0.5, 3.0, 1.0, np.nan]),
                       "imputed": ("peak", [0.6, 2.0, 1.5, 1.0])},
                      attrs={"cells": ["E025", "E052"], "unit": "bins"})


def test_distance_scatter_circles_and_names_the_highlighted_peaks():
    highlight = pd.DataFrame({"observed": [3.0, 0.5], "imputed": [2.0, 0.6],
                              "kind": ["specific", "shared"], "peak": ["chrS:0-50", "chrS:0-25"]})
    fig = plot_distance_scatter(_distances(), highlight=highlight)
    ax = fig.axes[0]
    assert len(ax.collections) == 1 + len(highlight)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["specific: chrS:0-50",
                                                                  "shared: chrS:0-25"]
    assert ax.get_title().startswith("E025 vs E052") and "(n=3)" in ax.get_title()
    assert ax.get_xlabel() == "W1 distance, observed (bins)"


def test_peak_examples_show_the_windowed_signal():
    rng = np.random.default_rng(1)
    observed = _signals(rng.uniform(0, 5, (2, 40)), "cell", ["E025", "E052"])
    imputed = _signals(np.arcsinh(rng.uniform(0, 5, (2, 40))), "cell", ["E025", "E052"],
                       scale="arcsinh")
    highlight = pd.DataFrame({"chrom": "chrS", "start": [250, 700], "end": [350, 750],
                              "kind": ["specific", "shared"]})
    windows = track_windows({"observed": observed, "imputed": imputed}, highlight, flank_bins=2)
    fig = plot_peak_examples(windows, highlight)
    assert len(fig.axes) == 2 * 2
    assert fig.axes[0].get_title() == "specific: chrS:250-350"
    # first panel, first line: E025 observed on the peak's bins 10..13 and 2 bins either side
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), observed.values[0, 8:16])
    # imputed panels are on the −log10 p scale again
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(),
                               np.sinh(imputed.values[0, 8:16]), rtol=1e-6)


def test_replicates_at_peaks_draw_every_replicate():
    rng = np.random.default_rng(2)
    reps = {"E025": _signals(rng.uniform(0, 5, (4, 40)), "replicate", range(4)),
            "E052": _signals(rng.uniform(0, 5, (3, 40)), "replicate", range(3))}
    highlight = pd.DataFrame({"chrom": "chrS", "start": [250], "end": [350], "kind": ["shared"]})
    fig = plot_replicates_at_peaks(track_windows(reps, highlight, flank_bins=8), highlight)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 + 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["E025", "E052"]
    assert ax.get_title() == "shared: chrS:250-350"


def test_venn_counts_and_circles():
    fig = plot_venn(compare_differential({"p1", "p2", "p3"}, {"p2", "p3", "p4", "p5"}))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert {"1", "2", "measured", "imputed"} <= set(texts)
    assert len(fig.axes[0].patches) == 2
    assert "PPV 0.50" in fig.axes[0].get_title()


def test_affinity_heatmaps():
    corr = pd.DataFrame(np.eye(3) * 0.5 + 0.5, index=list("abc"), columns=list("abc"))
    fig = plot_affinity_correlation(corr)
    assert any(ax.images or ax.collections for ax in fig.axes)
    matrix = pd.DataFrame(np.random.default_rng(0).normal(size=(5, 3)), columns=list("abc"))
    samples = pd.DataFrame({"source": ["imputed", "measured", "measured"],
                            "tissue": ["A", "B", "A"]}, index=list("abc"))
    fig = plot_affinity_heatmap(matrix, samples)
    heatmap = max(fig.axes, key=lambda ax: ax.get_position().width * ax.get_position().height)
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["c", "b", "a"]  # measured first
    with pytest.raises(ValueError, match="two differential peaks"):
        plot_affinity_heatmap(matrix.iloc[:1])


def test_track_across_individuals_one_row_each():
    track = _signals(np.random.default_rng(3).uniform(0, 5, (3, 50)), "individual",
                     ["ind00", "ind01", "ind02"])
    region = pd.DataFrame({"chrom": ["chrS"], "start": [600], "end": [625]})
    fig = plot_track_across_individuals(track_windows({"H3K4me3": track}, region, flank_bins=5),
                                        title="t")
    assert [ax.get_ylabel() for ax in fig.axes] == ["ind00", "ind01", "ind02"]
    assert fig.axes[-1].get_xlabel() == "chrS position (kb)"


def test_occupancy_histograms_and_joint_heatmaps():
    ds = simulate_epigenome("personal", n_individuals=2, n_cells=2, n_bins=800, seed=3)
    enriched = enriched_bins(ds.isel(assay=[0, 1]))
    assays = sorted(str(a) for a in enriched["assay"].values)  # panels in sorted order
    table = occupancy_histogram(enriched, "cell")
    fig = plot_occupancy_histograms(table, title="t")
    assert [ax.get_title() for ax in fig.axes] == assays
    summed = table.groupby(["assay", "occupancy"])["n_bins"].sum()
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, summed[assays[0]] / summed[assays[0]].sum())
    tables = {a: joint_occupancy(enriched, individual="ind00", cell="cell000", assay=a)
              for a in assays}
    fig2 = plot_joint_occupancy(tables)
    assert len(fig2.axes) == 4  # two heatmaps and their colour bars
    texts = [int(t.get_text()) for t in fig2.axes[0].texts]
    assert sorted(texts) == sorted(tables[assays[0]].to_numpy().ravel().tolist())
    with pytest.raises(ValueError, match="value"):
        plot_occupancy_histograms(table, value="x")


def _transfer_rows(metrics, methods, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"metric": m, "method": method, "assay": assay,
                          "stratum": f"ind00>ind01:cell000.{assay}", "value": float(rng.uniform())}
                         for m in metrics for method in methods
                         for assay in ("H3K4me3", "H3K27me3")])


def test_transfer_scores_one_panel_per_metric():
    rows = _transfer_rows(["mse", "pearson"],
                          ["edice_transfer", "training_individual_track", "individual_avg"])
    fig = plot_transfer_scores(rows)
    assert [ax.get_title() for ax in fig.axes] == ["mse (arcsinh)", "pearson (arcsinh)"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["eDICE (transfer)", "Training Ind. Track", "AVG (individual)"]


def test_individual_specific_auprc_boxes_and_per_track_scatter():
    methods = ["edice_transfer", "training_individual_track", "individual_avg",
               "positive_fraction"]
    rows = _transfer_rows(["auprc"], methods)
    fig = plot_individual_specific_auprc(rows)
    assert [ax.get_title() for ax in fig.axes] == ["Fig. 6c", "Fig. 6d: per track"]
    scatter = fig.axes[1]
    assert len(scatter.collections) == 3  # one colour per baseline
    edice = rows[rows.method == "edice_transfer"].set_index("stratum")["value"]
    np.testing.assert_allclose(sorted(scatter.collections[0].get_offsets()[:, 1]),
                               sorted(edice))
