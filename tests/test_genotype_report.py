"""Runs, tables and figures of the BiU-Net comparison (genotype.report, plotting.genotype)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from analysislib.evaluate import evaluate, make_imputer
from analysislib.genotype import report
from analysislib.genotype.masking import apply_scenario, random_missing_scenario, split_samples
from analysislib.genotype.metrics import aggregate_r2, allele_count
from analysislib.plotting.genotype import (
    plot_cohort_scatter,
    plot_metrics_by_maf,
    plot_r2_by_maf,
    plot_r2_definitions,
)
from analysislib.results import ResultsStore
from analysislib.testing import genotype_dataset, simulate_genotype_calls

BINS = ["[0.01,0.05)", "[0.1,0.2)", "[0.4,0.5]"]


def _rows() -> pd.DataFrame:
    """Harness-style rows: two methods, two replicate seeds at 5 %, one at 15 %."""
    rows = []
    for scenario, shift in (("random_05_seed1", 0.0), ("random_05_seed2", 0.1), ("random_15_seed1", 0.2)):
        for method, level in (("biunet", 0.6), ("beagle", 0.8)):
            for metric in report.TABLE_METRICS:
                for kind, stratum, n in [("all", "all", 30), *(("maf_bin", b, 10) for b in reversed(BINS))]:
                    rows.append({"scenario": scenario, "method": method, "metric": metric,
                                 "stratum_kind": kind, "stratum": stratum, "n": n,
                                 "value": level + shift, "run_id": f"{scenario}-{method}"})
    return pd.DataFrame(rows)


def test_summaries_average_replicates_and_order_bins():
    summary, bins = report.summarise_scenarios(_rows())
    assert bins == BINS
    five = summary[(summary.rate == 0.05) & (summary.method == "beagle") & (summary.stratum == "all")]
    assert five.value.iloc[0] == pytest.approx(0.85) and five.replicates.iloc[0] == 2
    tables = report.per_bin_tables(summary, bins, ["biunet", "beagle"])
    assert list(tables) == [0.05, 0.15]
    table = tables[0.05]
    assert list(table.index) == ["overall", *BINS] and table["SNPs"].tolist() == [30, 10, 10, 10]
    assert table[("R²", "biunet")].tolist() == pytest.approx([0.65] * 4)
    assert [c[0] for c in table.columns[1:3]] == ["accuracy", "accuracy"]


def test_cohort_gains():
    wide = pd.DataFrame({"rate": [0.05] * 3, "population": ["YRI", "YRI", "CEU"],
                         "biunet_ALL": [0.9, 0.7, 0.5], "biunet_YRI": [0.8, 0.8, np.nan]})
    gains = report.cohort_gains(wide, ["YRI"])
    row = gains.iloc[0]
    assert row["test samples"] == 2 and row["samples ALL better"] == 1
    assert row["mean gain of ALL"] == pytest.approx(0.0)


def test_unknown_panel_is_refused():
    with pytest.raises(ValueError, match="panel must be one of"):
        report.biunet_panel("chr1")


def test_evaluate_methods_and_per_sample_rows_match_the_harness(tmp_path):
    calls = simulate_genotype_calls(40, 60, seed=3)
    ds = genotype_dataset(calls, populations=["A"] * 30 + ["B"] * 30)
    store = ResultsStore(tmp_path)
    scenario = random_missing_scenario(0.25, 1)
    log = report.evaluate_methods({"allele_frequency": make_imputer("allele_frequency")}, ds,
                                  [scenario], store=store, label="toy", target_fraction=0.2)
    assert log.method.tolist() == ["allele_frequency"] and 0 <= log["accuracy"].iloc[0] <= 1
    reference, truth = split_samples(ds, target_fraction=0.2, seed=0)
    result = evaluate(make_imputer("allele_frequency"), ds, scenario, target_fraction=0.2, seed=0)
    per_sample = report.per_sample_r2_rows(result, truth, reference, scenario)
    assert len(per_sample) == truth.sizes["samples"] and (per_sample.stratum_kind == "sample").all()
    hidden = int(result.rows.query("stratum_kind == 'all' and metric == 'aggregate_r2'").n.iloc[0])
    assert per_sample.n.sum() == hidden  # the harness's own mask, one test sample at a time
    j = int(np.flatnonzero(per_sample.n.to_numpy() > 0)[0])
    # That sample's value, computed directly from its hidden entries.
    hidden_mask = apply_scenario(truth, scenario, reference=reference).score_mask
    expected = aggregate_r2(result.imputed["call_dosage"].values[:, [j]],
                            allele_count(truth["call_genotype"].values)[:, [j]], hidden_mask[:, [j]])
    assert per_sample.value.iloc[j] == pytest.approx(expected, nan_ok=True)
    assert set(per_sample.columns) == set(result.rows.columns)
    assert store.runs("genotype_imputation").method.tolist() == ["allele_frequency"]


def test_figures_draw_every_method_and_panel():
    summary, bins = report.summarise_scenarios(_rows())
    methods = ["biunet", "beagle"]
    fig = plot_metrics_by_maf(summary, bins, methods)
    main = [ax for ax in fig.axes if ax.get_title()]
    assert len(main) == 2 * len(report.FIGURE_METRICS)  # two rates × metrics (plus twin axes)
    assert all(len(ax.lines) == 2 for ax in main)
    fig = plot_r2_definitions(summary, bins, methods)
    assert len(fig.axes) == 2
    rows = _rows().assign(rate=lambda r: r.scenario.str[7:9].astype(int) / 100)
    assert len(plot_r2_by_maf(rows).axes) == 2
    wide = pd.DataFrame({"rate": [0.05, 0.05], "population": ["YRI", "YRI"],
                         "biunet_ALL": [0.9, 0.7], "biunet_YRI": [0.8, 0.8]})
    fig = plot_cohort_scatter(wide, ["YRI"])
    assert len(fig.axes) == 1 and "ALL better: 1/2" in fig.axes[0].texts[0].get_text()


def test_data_tour_figures():
    from analysislib.genotype.stats import genotype_pca, maf_spectrum
    from analysislib.ld import ld_decay
    from analysislib.plotting.genotype import plot_genotype_pcs, plot_ld_decay, plot_maf_spectra

    ds = genotype_dataset(simulate_genotype_calls(60, 40, seed=1), populations=["A"] * 20 + ["B"] * 20)
    spectra = maf_spectrum(ds, by="sample_population")
    assert len(plot_maf_spectra(spectra).axes[0].patches) >= spectra.maf_bin.nunique()
    pcs = genotype_pca(ds, n_components=2)
    unlabelled = genotype_pca(ds.drop_vars("sample_population"), n_components=2)
    fig = plot_genotype_pcs({"with": pcs, "without": unlabelled})
    assert [ax.get_title() for ax in fig.axes] == ["with", "without"]
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None
    decay = ld_decay(ds, max_offset=10, distance_bins=(0, 500, 1000, 5000)).assign(dataset="toy")
    assert len(plot_ld_decay(decay, min_pairs=0).axes[0].lines) >= 1


def _tile_rows() -> pd.DataFrame:
    """Per-tile r² rows of two scenarios: dae < dae_tuned < minimac4 on every tile but one."""
    rows = []
    for scenario in ("array_a", "array_b"):
        for tile in range(6):
            values = {"dae": 0.5 + 0.01 * tile, "dae_tuned": 0.6 + 0.01 * tile, "minimac4": 0.7}
            if tile == 5:
                values["dae_tuned"] = 0.9  # one tile the tuned model wins
            for method, value in values.items():
                rows.append({"scenario": scenario, "method": method, "metric": "r2",
                             "stratum_kind": "tile", "stratum": str(tile), "value": value, "n": 10,
                             "run_id": f"{scenario}-{method}"})
        for method, value in {"dae": 0.55, "dae_tuned": 0.65, "minimac4": 0.7}.items():
            rows.append({"scenario": scenario, "method": method, "metric": "r2",
                         "stratum_kind": "all", "stratum": "all", "value": value, "n": 60,
                         "run_id": f"{scenario}-{method}"})
    return pd.DataFrame(rows)


def test_dias_win_counts_tables_and_tuning_change():
    rows = _tile_rows()
    autoencoders = ["dae", "dae_tuned"]
    pairs = report.per_tile_pairs(rows, [("dae", "minimac4"), ("dae_tuned", "minimac4"),
                                         ("dae", "dae_tuned")])
    assert len(pairs["dae", "minimac4"]) == 12 and set(pairs["dae", "minimac4"].scenario) == {"array_a", "array_b"}
    tests = report.win_tests(pairs, autoencoders, ["minimac4"]).set_index("autoencoder")
    assert tests.loc["dae", "autoencoder wins"] == 0 and tests.loc["dae", "baseline wins"] == 12
    assert tests.loc["dae_tuned", "autoencoder wins"] == 2 and tests.loc["dae_tuned", "tiles"] == 12
    change = report.tuning_change(tests.reset_index(), pairs["dae", "dae_tuned"].eval("y - x")).iloc[0]
    assert change["wins before"] == 0 and change["wins after"] == 2
    assert change["tiles improved by tuning"] == 12
    assert change["mean r² gain"] == pytest.approx((10 * 0.1 + 2 * 0.35) / 12)
    assert change["Wilcoxon p (tuned vs untuned)"] < 0.01
    tables = report.region_tables(rows, ["dae", "dae_tuned", "minimac4"], autoencoders)
    row = tables[(tables.scenario == "array_a") & (tables.method == "minimac4")].iloc[0]
    assert row["whole-region r²"] == 0.7 and row["mean r² per tile"] == pytest.approx(0.7)
    assert row["Wilcoxon p (dae vs this)"] < 0.05
    assert np.isnan(tables[tables.method == "dae"]["Wilcoxon p (dae vs this)"]).all()  # not compared with itself
    features = pd.DataFrame({"size": np.arange(6.0), "reversed": -np.arange(6.0)}, index=range(6))
    rho = report.tile_feature_correlations(features, rows)
    assert rho.loc["size", "r²(dae) − r²(minimac4)"] == pytest.approx(1.0)
    assert rho.loc["reversed", "r²(dae) − r²(minimac4)"] == pytest.approx(-1.0)


def test_array_densities_run_every_method(tmp_path):
    ds = genotype_dataset(simulate_genotype_calls(30, 40, seed=2), populations=["A"] * 40)
    store = ResultsStore(tmp_path)
    tiles = pd.DataFrame({"tile": [0], "first_variant": [0], "last_variant": [29]})
    report.evaluate_array_densities({"allele_frequency": {}}, ds, ["omni15"], tiles=tiles,
                                    store=store, label="toy")
    runs = store.runs("genotype_imputation")
    assert runs.method.tolist() == ["allele_frequency"] and runs.scenario.tolist() == ["array_omni15"]


def test_dias_figures():
    from analysislib.plotting.genotype import (
        plot_by_population,
        plot_inference_time,
        plot_metrics_by_maf_bin,
        plot_per_tile_r2,
    )

    rows = _tile_rows()
    pairs = report.per_tile_pairs(rows, [("dae", "minimac4"), ("dae_tuned", "minimac4")])
    tests = report.win_tests(pairs, ["dae", "dae_tuned"], ["minimac4"])
    fig = plot_per_tile_r2(pairs, tests, {"dae": "before", "dae_tuned": "after"}, ["minimac4"])
    assert len(fig.axes) == 2 and "minimac4 better: 12" in fig.axes[0].texts[0].get_text()
    maf = rows.assign(stratum_kind="maf_bin", stratum=lambda r: np.where(r.stratum == "all", "[0.1,0.5]", "[0.01,0.05)"))
    assert len(plot_metrics_by_maf_bin(maf, ["r2"]).axes) == 2  # one row per scenario
    pop = rows.assign(stratum_kind="population", stratum="YRI")
    assert len(plot_by_population(pop, ["r2"]).axes) == 2
    runs = pd.DataFrame({"method": ["dae", "minimac4"], "scenario": ["a", "a"], "runtime_s": [1.0, 2.0]})
    assert len(plot_inference_time(runs, ["dae", "minimac4"]).axes[0].patches) >= 2
