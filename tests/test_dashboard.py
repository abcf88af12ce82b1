from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("panel")

import holoviews as hv

from analysislib.dashboard.app import MAX_SCATTER_POINTS, Dashboard
from analysislib.results import (
    COLUMNS,
    ResultsStore,
    compare_methods,
    costs,
    lower_is_better,
    metric_label,
    ordered_strata,
    run_provenance,
    summarise,
    win_counts,
)

TASK = "genotype_imputation"
MAF_BINS = ["[0.4,0.5]", "[0.01,0.05)", "[0.05,0.1)"]  # deliberately out of order


def make_rows(run_id, method, values, *, dataset="d1", scenario="array_omni15", task=TASK,
              runtime=1.0, memory=100.0, parameters=None):
    """Result rows of one run; ``values`` maps (metric, kind, stratum) -> value."""
    return pd.DataFrame([{
        "run_id": run_id, "timestamp": f"2025-01-01T00:00:{run_id[-2:]}+00:00", "task": task,
        "dataset": dataset, "scenario": scenario, "method": method, "metric": metric,
        "stratum_kind": kind, "stratum": stratum, "value": value, "n": 10 + i,
        "runtime_s": runtime, "peak_memory_mb": memory,
        "parameters": json.dumps(parameters or {"method": method}),
        "data_checksum": "ab" * 32, "code_version": "analysislib 0.1.0 (test)",
    } for i, ((metric, kind, stratum), value) in enumerate(values.items())])


def curve(metric, points):
    """{stratum: (value, se)} -> MAF-bin rows with their SE rows."""
    out = {}
    for stratum, (value, se) in points.items():
        out[(metric, "maf_bin", stratum)] = value
        out[(f"{metric}_se", "maf_bin", stratum)] = se
    return out


def tiles(metric, values):
    return {(metric, "tile", f"tile{t}"): v for t, v in zip((1, 2, 10, 3), values, strict=True)}


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "results")
    beagle = {**curve("r2", {"[0.01,0.05)": (0.6, 0.02), "[0.05,0.1)": (0.8, 0.01),
                             "[0.4,0.5]": (0.95, 0.005)}),
              ("r2", "all", "all"): 0.8, ("r2_se", "all", "all"): 0.01,
              ("r2", "population", "CEU"): 0.9, ("r2", "population", "YRI"): 0.8,
              **tiles("r2", [0.9, 0.5, 0.7, 0.6]), **tiles("rmse", [0.1, 0.2, 0.3, 0.4]),
              ("r2", "variant", "22:100:A:G"): 0.7, ("r2", "variant", "22:200:C:T"): 0.9}
    minimac = {**curve("r2", {"[0.05,0.1)": (0.7, 0.03), "[0.4,0.5]": (0.9, 0.01)}),
               ("r2", "all", "all"): 0.75, ("r2", "population", "CEU"): 0.85,
               **tiles("r2", [0.8, 0.6, 0.7, 0.4]), **tiles("rmse", [0.2, 0.1, 0.3, 0.5])}
    floor = {**curve("r2", {"[0.01,0.05)": (0.0, 0.0), "[0.05,0.1)": (0.0, 0.0),
                            "[0.4,0.5]": (0.0, 0.0)}), ("r2", "all", "all"): 0.0}
    store.append(make_rows("20240101T000000-old00001", "beagle",
                           curve("r2", {"[0.01,0.05)": (0.4, 0.02)}), runtime=30.0))
    store.append(make_rows("20250101T000000-beagle02", "beagle", beagle, runtime=10.0,
                           memory=500.0, parameters={"ne": 20000, "window": 40}))
    store.append(make_rows("20250101T000000-minimac3", "minimac4", minimac, runtime=2.0,
                           memory=float("nan")))
    store.append(make_rows("20250101T000000-floor004", "allele_frequency", floor, runtime=0.01))
    store.append(make_rows("20250101T000000-random05", "beagle", floor, scenario="random_05_seed1"))
    store.append(make_rows("20250101T000000-d2run006", "minimac4", floor, dataset="d2",
                           scenario="typed_1in3"))
    return store


def test_importing_the_package_does_not_import_panel():
    code = "import sys, analysislib.dashboard; print('panel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dashboard_modules_are_documented():
    import inspect

    import analysislib.dashboard
    import analysislib.dashboard.app as app_module

    assert analysislib.dashboard.__doc__.strip() and app_module.__doc__.strip()
    for name in app_module.__all__:
        assert inspect.getdoc(getattr(app_module, name)), name


def test_strata_order_labels_and_metric_direction():
    assert ordered_strata(["[0.4,0.5]", "[0.005,0.01)", "[0.05,0.1)", "[0.01,0.05)"]) == [
        "[0.005,0.01)", "[0.01,0.05)", "[0.05,0.1)", "[0.4,0.5]"]
    assert ordered_strata(["tile10", "tile2", "tile1", "tile2"]) == ["tile1", "tile2", "tile10"]
    assert ordered_strata(["CEU", "10", "9"]) == ["9", "10", "CEU"]
    assert metric_label("aggregate_r2") == "aggregate r²"
    assert metric_label("iqs") == "IQS"
    assert lower_is_better("rmse") and lower_is_better("r2_se") and lower_is_better("mse")
    assert not lower_is_better("r2") and not lower_is_better("concordance")


def test_summarise_orders_bins_and_keeps_missing_strata_missing(store):
    rows = store.read(TASK, latest=True, dataset="d1", scenario="array_omni15")
    table = summarise(rows, "r2", "maf_bin")
    beagle = table[table.method == "beagle"]
    assert beagle.stratum.tolist() == ["[0.01,0.05)", "[0.05,0.1)", "[0.4,0.5]"]
    assert beagle.position.tolist() == [0, 1, 2]
    np.testing.assert_allclose(beagle.value, [0.6, 0.8, 0.95])
    np.testing.assert_allclose(beagle.se, [0.02, 0.01, 0.005])
    minimac = table[table.method == "minimac4"]
    assert minimac.stratum.tolist() == ["[0.05,0.1)", "[0.4,0.5]"]  # lacks the rare bin
    assert minimac.position.tolist() == [1, 2]  # same x as the other methods
    # All runs kept: the two beagle runs average, SE = sd / sqrt(2) = |0.6 - 0.4| / 2.
    both = summarise(store.read(TASK, dataset="d1", scenario="array_omni15"), "r2", "maf_bin")
    rare = both[(both.method == "beagle") & (both.stratum == "[0.01,0.05)")].iloc[0]
    assert rare.value == pytest.approx(0.5)
    assert rare.se == pytest.approx(0.1)
    assert rare.runs == 2
    assert summarise(rows, "iqs", "maf_bin").empty


def test_compare_methods_counts_wins_in_the_metric_direction(store):
    rows = store.read(TASK, latest=True, dataset="d1")
    pairs = compare_methods(rows, "r2", "tile", "beagle", "minimac4")
    assert pairs.stratum.tolist() == ["tile1", "tile2", "tile3", "tile10"]
    np.testing.assert_allclose(pairs.x, [0.9, 0.5, 0.6, 0.7])
    np.testing.assert_allclose(pairs.y, [0.8, 0.6, 0.4, 0.7])
    assert win_counts(pairs, "r2", "beagle", "minimac4") == {"beagle": 2, "minimac4": 1, "ties": 1}
    errors = compare_methods(rows, "rmse", "tile", "beagle", "minimac4")
    # rmse: beagle 0.1 < 0.2 and 0.4 < 0.5, minimac4 0.1 < 0.2, tie at 0.3.
    assert win_counts(errors, "rmse", "beagle", "minimac4") == {"beagle": 2, "minimac4": 1, "ties": 1}
    # Strata one method lacks are not paired.
    assert compare_methods(rows, "r2", "population", "beagle", "minimac4").stratum.tolist() == ["CEU"]


def test_costs_and_provenance(store):
    rows = store.read(TASK, latest=True, dataset="d1", scenario="array_omni15")
    table = costs(rows).set_index("method")
    assert table.loc["beagle", "runtime_s"] == 10.0
    assert table.loc["beagle", "peak_memory_mb"] == 500.0
    assert math.isnan(table.loc["minimac4", "peak_memory_mb"])
    record = run_provenance(rows, "20250101T000000-beagle02")
    assert record["parameters"] == {"ne": 20000, "window": 40}
    assert record["data_checksum"] == "ab" * 32
    assert record["code_version"] == "analysislib 0.1.0 (test)"
    assert record["method"] == "beagle" and record["runtime_s"] == 10.0
    assert run_provenance(rows, "20250101T000000-minimac3")["peak_memory_mb"] is None
    with pytest.raises(KeyError, match="no run 'nope'"):
        run_provenance(rows, "nope")


def test_dashboard_defaults_follow_the_store(store):
    app = Dashboard(results_dir=str(store.root))
    assert app.has_results
    assert app.param.task.objects == [TASK]
    assert (app.task, app.dataset, app.scenario) == (TASK, "d1", "array_omni15")
    assert app.param.scenario.objects == ["array_omni15", "random_05_seed1"]
    assert app.methods == ["allele_frequency", "beagle", "minimac4"]
    assert app.metric == "r2" and app.param.metric.objects == ["r2", "rmse"]
    assert (app.curve_strata, app.group_strata, app.scatter_strata) == ("maf_bin", "population", "tile")
    assert (app.method_x, app.method_y) == ("allele_frequency", "beagle")
    # latest=True: the old beagle run is not among the runs offered.
    assert "20240101T000000-old00001" not in app.param.run_id.objects
    assert set(app.selection.run_id) == {"20250101T000000-beagle02", "20250101T000000-minimac3",
                                         "20250101T000000-floor004"}


def test_choices_cascade_and_hidden_methods_stay_hidden(store):
    app = Dashboard(results_dir=str(store.root))
    app.methods = ["beagle", "minimac4"]
    revision = app.revision
    app.dataset = "d2"
    assert app.revision == revision + 1  # one refresh per user change
    assert app.param.scenario.objects == ["typed_1in3"] and app.scenario == "typed_1in3"
    assert app.methods == ["minimac4"]
    app.dataset = "d1"
    assert app.scenario == "array_omni15"
    assert app.methods == ["beagle", "minimac4"]  # allele_frequency stays hidden
    app.scenario = "random_05_seed1"
    assert app.methods == ["beagle"]
    assert app.curve_table().stratum.tolist() == ["[0.01,0.05)", "[0.05,0.1)", "[0.4,0.5]"]
    chosen = Dashboard(results_dir=str(store.root), methods=["minimac4"])
    assert chosen.methods == ["minimac4"]
    assert set(chosen.selection.method) == {"minimac4"}


def test_tables_follow_the_parameters(store):
    app = Dashboard(results_dir=str(store.root), methods=["beagle", "minimac4"])
    table = app.curve_table()
    assert set(table.method) == {"beagle", "minimac4"} and len(table) == 5
    group = app.group_table()
    assert group[["method", "stratum"]].values.tolist() == [
        ["beagle", "CEU"], ["beagle", "YRI"], ["minimac4", "CEU"]]
    assert (app.method_x, app.method_y) == ("beagle", "minimac4")
    assert app.win_counts() == {"beagle": 2, "minimac4": 1, "ties": 1}
    app.param.update(method_x="minimac4", method_y="beagle")
    assert app.scatter_table().x.tolist() == [0.8, 0.6, 0.4, 0.7]
    app.metric = "rmse"
    assert app.win_counts() == {"minimac4": 1, "beagle": 2, "ties": 1}
    assert app.curve_table().empty  # no MAF-bin rmse rows
    assert app.cost_table().method.tolist() == ["beagle", "minimac4"]
    app.run_id = "20250101T000000-beagle02"
    assert app.provenance()["parameters"] == {"ne": 20000, "window": 40}
    app.methods = []
    assert app.curve_table().empty and app.provenance() == {}
    assert "Select at least one method" in str(app.curve_plot().data)


def test_table_csv_and_row_selection_open_provenance(store):
    app = Dashboard(results_dir=str(store.root), methods=["beagle", "minimac4"])
    rows = app.table_rows()
    assert list(rows.columns) == list(COLUMNS)
    assert "variant" not in set(rows.stratum_kind)
    assert len(rows) == 32  # 18 beagle + 14 minimac4 rows that are not per variant
    app.include_variants = True
    assert (app.table_rows().stratum_kind == "variant").sum() == 2
    assert len(app._table.value) == 34
    back = pd.read_csv(io.StringIO(app.csv().getvalue()))
    assert len(back) == 34 and list(back.columns) == list(COLUMNS)
    np.testing.assert_allclose(back.value, app.table_rows().value)
    assert app._download.filename == "genotype_imputation_d1_array_omni15_results.csv"
    layout = app.__panel__()
    assert layout is app.__panel__()
    minimac_row = int(np.flatnonzero(app._table.value.method == "minimac4")[0])
    app._table.selection = [minimac_row]
    assert app.run_id == "20250101T000000-minimac3"
    assert app._tabs.active == 3


def rendered(element):
    return hv.render(element, backend="bokeh")


def test_plots_have_titles_labels_and_method_colours(store):
    app = Dashboard(results_dir=str(store.root))
    fig = rendered(app.curve_plot())
    assert fig.title.text == "r² by MAF bin (± 1 SE)"
    assert fig.xaxis[0].axis_label == "MAF bin" and fig.yaxis[0].axis_label == "r²"
    assert fig.xaxis[0].major_label_overrides == {0: "[0.01,0.05)", 1: "[0.05,0.1)", 2: "[0.4,0.5]"}
    points = {r.data_source.data["method"][0]: len(r.data_source.data["x"])
              for r in fig.renderers if "method" in r.data_source.data
              and type(r.glyph).__name__ == "Scatter"}
    assert points == {"allele_frequency": 3, "beagle": 3, "minimac4": 2}
    bars = rendered(app.group_plot())
    assert bars.title.text == "r² by population" and bars.xaxis[0].axis_label == "population"
    data = bars.renderers[0].data_source.data
    colours = {m: c for m, c in zip(data["method"], data["color"], strict=True)}
    assert colours == {m: app._colors[m] for m in ("beagle", "minimac4")}  # floor has no rows
    app.param.update(methods=["beagle", "minimac4"])
    scatter = rendered(app.scatter_plot())
    assert scatter.title.text.splitlines() == [
        "r² per tile: minimac4 (y) vs beagle (x)",
        "higher is better · minimac4 wins 1, beagle wins 2, ties 1"]
    assert scatter.xaxis[0].axis_label == "r², beagle"
    runtime = rendered(app.runtime_plot())
    assert runtime.title.text == "Runtime" and runtime.yaxis[0].axis_label == "runtime (s)"
    memory = rendered(app.memory_plot())
    assert memory.title.text == "Peak memory\nnot recorded: minimac4"
    app.methods = ["allele_frequency", "beagle"]  # 0.01 s and 10 s
    assert rendered(app.runtime_plot()).title.text == "Runtime · log scale"


def test_empty_store_says_how_to_produce_results(tmp_path):
    app = Dashboard(results_dir=str(tmp_path / "nothing"))
    assert not app.has_results
    assert app.task is None and app.methods == [] and app.param.task.objects == []
    status = app.status()
    assert "holds no results yet" in status and "analysislib evaluate" in status
    assert str(tmp_path / "nothing") in status
    for view in (app.curve_plot, app.group_plot, app.scatter_plot, app.runtime_plot,
                 app.memory_plot):
        element = view()
        assert isinstance(element, hv.Text) and "No results" in element.text
        rendered(element)
    app.__panel__()
    assert not app._tabs.visible
    assert app.table_rows().empty and app.provenance() == {}
    ResultsStore(tmp_path / "nothing").append(
        make_rows("20250101T000000-first001", "beagle", curve("r2", {"[0.01,0.05)": (0.5, 0.1)})))
    app.param.trigger("reload")
    assert app.has_results and app._tabs.visible
    assert app.methods == ["beagle"] and len(app.curve_table()) == 1


def test_reload_shows_a_new_task_without_code_change(store):
    app = Dashboard(results_dir=str(store.root))
    values = {("mse", "assay", "H3K4me3"): 0.2, ("mse", "assay", "H3K27ac"): 0.3,
              ("mse_se", "assay", "H3K4me3"): 0.01, ("mse", "all", "all"): 0.25}
    for run, method, shift in (("20250102T000000-chrom001", "chromimpute", 0.0),
                               ("20250102T000000-avocado2", "avocado", -0.05)):
        rows = make_rows(run, method, {k: v + shift for k, v in values.items()},
                         task="epigenome_imputation", dataset="roadmap_pilot_arcsinh",
                         scenario="holdout_e003")
        store.append(rows)
    assert app.param.task.objects == [TASK]
    app.param.trigger("reload")
    assert app.param.task.objects == ["epigenome_imputation", TASK]
    assert app.task == TASK  # the current choice is kept
    app.task = "epigenome_imputation"
    assert app.dataset == "roadmap_pilot_arcsinh" and app.metric == "mse"
    assert app.methods == ["avocado", "chromimpute"]
    assert app.curve_strata == "assay" and app.scatter_strata == "assay"
    assert app.win_counts() == {"avocado": 2, "chromimpute": 0, "ties": 0}  # lower mse wins
    fig = rendered(app.curve_plot())
    assert fig.title.text == "MSE by assay (± 1 SE)" and fig.xaxis[0].axis_label == "assay"


def test_large_store_is_aggregated_before_plotting(tmp_path):
    store = ResultsStore(tmp_path)
    rng = np.random.default_rng(0)
    n_variants = MAX_SCATTER_POINTS + 1000
    maf = rng.uniform(0.005, 0.5, n_variants)
    bins = pd.cut(maf, [0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5], right=False,
                  include_lowest=True).astype(str)
    for i, method in enumerate(("a", "b", "c")):
        r2 = rng.uniform(0, 1, n_variants)
        per_bin = pd.Series(r2).groupby(bins).agg(["mean", "sem", "size"])
        frame = pd.concat([
            pd.DataFrame({"metric": "r2", "stratum_kind": "variant",
                          "stratum": [f"22:{p}:A:G" for p in range(n_variants)], "value": r2, "n": 9}),
            pd.DataFrame({"metric": "r2", "stratum_kind": "maf_bin", "stratum": per_bin.index,
                          "value": per_bin["mean"].values, "n": per_bin["size"].values}),
            pd.DataFrame({"metric": "r2_se", "stratum_kind": "maf_bin", "stratum": per_bin.index,
                          "value": per_bin["sem"].values, "n": per_bin["size"].values}),
        ])
        store.append(frame.assign(
            run_id=f"20250101T00000{i}-big", timestamp="2025-01-01T00:00:00+00:00", task=TASK,
            dataset="big", scenario="array_omni15", method=method, runtime_s=1.0 + i,
            peak_memory_mb=10.0, parameters="{}", data_checksum="0" * 64, code_version="test"))
    app = Dashboard(results_dir=str(tmp_path))
    assert len(store.read(TASK)) == 3 * (n_variants + 14)
    assert app.scatter_strata == "variant"  # no tiles stored: pair variants instead
    table = app.curve_table()
    assert len(table) == 3 * 7  # a point per method and MAF bin, whatever the store size
    assert (table.n.groupby(table.method).sum() == n_variants).all()
    overlay = app.curve_plot()
    assert sum(len(el) for el in overlay if isinstance(el, hv.Scatter)) == 21
    scatter = app.scatter_plot()
    hexes = [el for el in scatter if isinstance(el, hv.HexTiles)]
    assert len(hexes) == 1 and len(hexes[0]) == n_variants  # binned in the browser, not drawn
    rendered(scatter)
    assert len(app.table_rows()) == 3 * 14  # per-variant rows only on request


def test_rows_written_by_the_harness(tmp_path):
    from analysislib.evaluate import evaluate
    from analysislib.simulate.genotypes import simulate_genotypes

    ds = simulate_genotypes("quick", seed=3, samples_per_population=10,
                            sequence_length=150_000).ds.compute()
    position = ds["variant_position"].values
    edges = np.linspace(position.min(), position.max() + 1, 6).astype(int)
    tile_table = pd.DataFrame({"tile": [f"t{i}" for i in range(5)], "start": edges[:-1],
                               "end": edges[1:] - 1})
    store = ResultsStore(tmp_path)
    result = evaluate("allele_frequency", ds, "typed_1in3", store=store, tiles=tile_table,
                      dataset_label="sim")
    app = Dashboard(results_dir=str(tmp_path))
    assert (app.dataset, app.scenario, app.methods) == ("sim", "typed_1in3", ["allele_frequency"])
    assert app.param.group_strata.objects == ["all", "maf_bin", "population", "tile", "variant"]
    stored = result.rows[(result.rows.metric == "r2") & (result.rows.stratum_kind == "maf_bin")]
    table = app.curve_table()
    assert table.stratum.tolist() == ordered_strata(stored.stratum)
    np.testing.assert_allclose(table.set_index("stratum").value[stored.stratum], stored.value)
    assert set(app.group_table().stratum) == {"YRI", "CEU", "CHB"}
    assert len(app.scatter_table()) == 5
    record = app.provenance()
    assert record["run_id"] == result.run_id
    assert record["parameters"] == {"split_seed": 0, "target_fraction": 0.1}
    assert record["code_version"].startswith("analysislib") and len(record["data_checksum"]) == 64
    for view in (app.curve_plot, app.group_plot, app.scatter_plot, app.runtime_plot,
                 app.memory_plot):
        rendered(view())


def test_cli_dashboard_arguments():
    from analysislib.cli import build_parser, main

    args = build_parser().parse_args(["dashboard", "--results", "r", "--port", "5007", "--show"])
    assert (args.results, args.port, args.address, args.show) == ("r", 5007, "127.0.0.1", True)
    assert build_parser().parse_args(["dashboard"]).show is False
    assert main(["dashboard", "--port", "0"]) == 1


def test_fit_and_impute_times_are_shown_where_runtime_is(store):
    from analysislib.dashboard.app import PHASE_COLORS
    from analysislib.results import runtime_phases

    deep = make_rows("20250101T000000-biunet07", "biunet",
                     curve("r2", {"[0.01,0.05)": (0.5, 0.02)}), runtime=125.0).assign(
        fit_seconds=120.0, impute_seconds=5.0)
    store.append(deep)
    rows = store.read(TASK, latest=True, dataset="d1", scenario="array_omni15")
    table = costs(rows).set_index("method")
    assert table.loc["biunet", ["runtime_s", "fit_seconds", "impute_seconds"]].tolist() == [125.0, 120.0, 5.0]
    assert math.isnan(table.loc["beagle", "fit_seconds"])  # stored before the split existed
    phases = runtime_phases(costs(rows))
    assert phases[phases.method == "biunet"][["phase", "seconds"]].values.tolist() == [
        ["fit", 120.0], ["impute", 5.0]]
    assert phases[phases.method == "beagle"][["phase", "seconds"]].values.tolist() == [["total", 10.0]]
    record = run_provenance(rows, "20250101T000000-biunet07")
    assert (record["fit_seconds"], record["impute_seconds"]) == (120.0, 5.0)
    assert run_provenance(rows, "20250101T000000-beagle02")["fit_seconds"] is None

    app = Dashboard(results_dir=str(store.root))
    app.param.update(methods=["beagle", "biunet"])
    fig = rendered(app.runtime_plot())
    assert fig.title.text == "Runtime" and fig.yaxis[0].axis_label == "runtime (s)"
    data = fig.renderers[0].data_source.data
    drawn = {(m, p): v for m, p, v in zip(data["method"], data["phase"], data["seconds"], strict=True)
             if not math.isnan(v)}
    assert drawn == {("beagle", "total"): 10.0, ("biunet", "fit"): 120.0, ("biunet", "impute"): 5.0}
    colours = {p: c for p, c, v in zip(data["phase"], data["color"], data["seconds"], strict=True)
               if not math.isnan(v)}
    assert colours == {p: PHASE_COLORS[p] for p in ("total", "fit", "impute")}
    app.run_id = "20250101T000000-biunet07"
    text = app.provenance_view().objects[0].object
    assert "| fit time | 120 s |" in text and "| impute time | 5 s |" in text
