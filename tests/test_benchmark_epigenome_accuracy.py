"""benchmarks/epigenome_accuracy.py: fold/kept enumeration, JSON rows, AVG by hand, peak scores."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from analysislib.epigenome.chromimpute import chromimpute_available

REQUIRED = {"method", "fold", "kept", "assay", "seed", "pearson", "mse", "peak_precision",
            "peak_recall", "fit_seconds", "predict_seconds"}
MARKS = ["H3K27me3", "H3K36me3", "H3K4me1", "H3K4me3", "H3K9me3"]  # the catalog's order
CELLS = ["E003", "E017", "E065", "E116"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def benchmark(benchmark_script):
    return benchmark_script("epigenome_accuracy")


@pytest.fixture(scope="module")
def simulated():
    from analysislib.simulate.epigenome import simulate_epigenome

    ds = simulate_epigenome("quick", n_cells=4, n_bins=1500, seed=3, assays=MARKS)
    return ds[["signal", "observed"]]


def _hidden(kept: str) -> list[str]:
    keep = {"H3K4me3": {"H3K4me3"}, "H3K4me3+H3K27me3": {"H3K4me3", "H3K27me3"}}[kept]
    return [m for m in MARKS if m not in keep]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _tiny_edice(name: str, seed: int):
    from analysislib.epigenome.imputer import get_epigenome_imputer

    if name == "avg":
        return get_epigenome_imputer("avg")
    return get_epigenome_imputer("edice", preset="quick", device="cpu", progress=False,
                                 seed=seed, epochs=1, train_bins=600, val_bins=100)


def test_constants_follow_issue_13(benchmark):
    assert benchmark.METHODS == ("avg", "edice", "predictd", "avocado", "chromimpute")
    assert benchmark.KEPT == {"H3K4me3": ("H3K4me3",),
                              "H3K4me3+H3K27me3": ("H3K4me3", "H3K27me3")}
    assert set(benchmark.REQUIRED_KEYS) == REQUIRED
    assert benchmark.DEFAULT_BINS == 400_000
    args = benchmark._parser().parse_args([])
    assert (args.bins, args.seeds, args.threads, args.json) == (400_000, 3, 1, None)
    assert args.methods == list(benchmark.METHODS)


def test_make_imputer_passes_the_seed(benchmark):
    assert benchmark.make_imputer("avg", 4).name == "avg"
    for name in ("edice", "predictd", "avocado"):
        imputer = benchmark.make_imputer(name, 7)
        assert imputer.config.seed == 7 and imputer.preset == "quick"
    chromimpute = benchmark.make_imputer("chromimpute", 5)
    assert chromimpute.seed == 5 and chromimpute.preset == "quick"
    assert benchmark.make_imputer("chromimpute", 5, "paper").preset == "full"


def test_fold_targets(benchmark, simulated):
    cell = str(simulated["cell"].values[1])
    assert benchmark.fold_targets(simulated, cell, ("H3K4me3",)) == [
        (cell, "H3K27me3"), (cell, "H3K36me3"), (cell, "H3K4me1"), (cell, "H3K9me3")]
    assert benchmark.fold_targets(simulated, cell, ("H3K4me3", "H3K27me3")) == [
        (cell, "H3K36me3"), (cell, "H3K4me1"), (cell, "H3K9me3")]
    with pytest.raises(ValueError, match="not in the dataset"):
        benchmark.fold_targets(simulated, "E999", ("H3K4me3",))
    with pytest.raises(ValueError, match=r"kept mark .*H3K4me2"):
        benchmark.fold_targets(simulated, cell, ("H3K4me2",))


def test_avg_records_match_a_hand_computation(benchmark, simulated):
    from analysislib.epigenome.tensor import to_arcsinh

    records, failures = benchmark.run(simulated, ["avg"], [0, 1, 2], log=io.StringIO())
    assert failures == []
    cells = [str(c) for c in simulated["cell"].values]
    # 4 folds x (4 + 3 hidden marks) x 3 seeds, AVG's one fit repeated under each seed
    assert len(records) == 4 * 7 * 3
    expected = {(f, k, a) for f in cells for k in benchmark.KEPT for a in _hidden(k)}
    assert {(r["fold"], r["kept"], r["assay"]) for r in records} == expected
    assert {r["seed"] for r in records} == {0, 1, 2}
    signal = to_arcsinh(simulated)["signal"]
    for record in records:
        assert set(record) >= REQUIRED and record["deterministic"] is True
        truth = signal.sel(cell=record["fold"], assay=record["assay"]).values.astype(float)
        others = [c for c in cells if c != record["fold"]]
        average = signal.sel(cell=others, assay=record["assay"]).values.astype(
            np.float32).mean(axis=0).astype(float)
        assert record["pearson"] == pytest.approx(_pearson(truth, average), abs=1e-5)
        assert record["mse"] == pytest.approx(np.mean((truth - average) ** 2), rel=1e-4)
        twin = next(r for r in records if r["seed"] == 0 and r["fold"] == record["fold"]
                    and r["kept"] == record["kept"] and r["assay"] == record["assay"])
        assert {k: v for k, v in record.items() if k != "seed"} == \
            {k: v for k, v in twin.items() if k != "seed"}
    per_seed, by_fold, overall = benchmark.summarise(records)
    part = [r["pearson"] for r in records if r["fold"] == cells[0] and r["seed"] == 0
            and r["kept"] == "H3K4me3"]
    assert per_seed.loc[("avg", "H3K4me3", cells[0], 0), "pearson"] == pytest.approx(
        np.mean(part))
    assert by_fold.loc[("avg", "H3K4me3", cells[0]), ("pearson", "std")] == 0.0
    folds = [per_seed.loc[("avg", "H3K4me3+H3K27me3", c, 1), "mse"] for c in cells]
    assert overall.loc[("avg", "H3K4me3+H3K27me3"), ("mse", "mean")] == pytest.approx(
        np.mean(folds))


class _Fixed:
    """An imputer that returns given arcsinh tracks (for hand-made peak examples)."""

    name = "fixed"

    def __init__(self, values: dict[tuple[str, str], np.ndarray]) -> None:
        self.values = values

    def fit(self, ds):
        self.ds = ds
        return self

    def predict(self, targets, observed=None):
        from analysislib.epigenome.imputer import prediction_array

        rows = np.stack([self.values[tuple(t)] for t in targets])
        return prediction_array(rows, targets, self.ds, self.name)


def _runs(n: int, *spans: tuple[int, int], value: float = 5.0) -> np.ndarray:
    out = np.zeros(n)
    for start, stop in spans:
        out[start:stop] = value
    return out


def test_peak_precision_and_recall_on_a_hand_made_example(benchmark):
    from analysislib.epigenome.tensor import create_signal_dataset

    n = 100
    rng = np.random.default_rng(0)
    signal = rng.uniform(0, 1, size=(4, 5, n))  # −log10 p below the cut-off 2: no peaks
    k36, k4me1 = MARKS.index("H3K36me3"), MARKS.index("H3K4me1")
    # observed E003.H3K36me3: 4 peaks of >= 8 bins (200 bp) at -log10 p 5
    signal[0, k36] = _runs(n, (0, 10), (20, 30), (40, 50), (85, 95))
    signal[0, k4me1] = _runs(n, (10, 30))
    ds = create_signal_dataset(signal, cells=CELLS, assays=MARKS, scale="neglog10p")
    imputed = {
        # hits the 1st and 3rd observed peak; the 3rd imputed peak hits nothing
        ("E003", "H3K36me3"): np.arcsinh(_runs(n, (5, 15), (45, 55), (65, 75))),
        ("E003", "H3K9me3"): np.arcsinh(_runs(n, (30, 40))),  # observed has no peak
        ("E003", "H3K4me1"): np.arcsinh(_runs(n, (10, 30), value=1.0)),  # no imputed peak
    }
    records, failures = benchmark.run(
        ds, ["fixed"], [0], folds=["E003"], kept=["H3K4me3+H3K27me3"],
        make=lambda name, seed: _Fixed(imputed), log=io.StringIO())
    assert failures == []
    by_assay = {r["assay"]: r for r in records}
    assert set(by_assay) == {"H3K36me3", "H3K9me3", "H3K4me1"}
    k36_row = by_assay["H3K36me3"]
    assert k36_row["peak_precision"] == pytest.approx(2 / 3)
    assert k36_row["peak_recall"] == pytest.approx(2 / 4)
    assert (k36_row["n_peaks_observed"], k36_row["n_peaks_imputed"]) == (4, 3)
    assert k36_row["peak_precision_bins"] == pytest.approx(10 / 30)
    assert k36_row["peak_recall_bins"] == pytest.approx(10 / 40)
    assert k36_row["n_peak_bins"] == 40
    assert k36_row["pearson_peaks"] is None  # both tracks are constant inside observed peaks
    inside = np.r_[0:10, 20:30, 40:50, 85:95]
    truth = np.arcsinh(signal[0, k36])
    assert k36_row["mse_peaks"] == pytest.approx(
        np.mean((truth[inside] - imputed[("E003", "H3K36me3")][inside]) ** 2), rel=1e-5)
    assert by_assay["H3K9me3"]["peak_recall"] is None  # no observed peaks: NaN -> null
    assert by_assay["H3K9me3"]["mse_peaks"] is None
    assert by_assay["H3K9me3"]["peak_precision"] == 0.0
    assert by_assay["H3K4me1"]["peak_precision"] is None  # no imputed peaks
    assert by_assay["H3K4me1"]["peak_recall"] == 0.0
    # the other cell types have no bin at -log10 p >= 2: the matched cut-off is 2 itself
    assert k36_row["peak_cutoff_matched"] == 2.0
    assert (k36_row["peak_precision_matched"], k36_row["peak_recall_matched"]) == \
        (k36_row["peak_precision"], k36_row["peak_recall"])
    # the summary's per-fold recall skips the NaN track
    per_seed, _, _ = benchmark.summarise(records)
    assert per_seed.loc[("fixed", "H3K4me3+H3K27me3", "E003", 0), "peak_recall"] == \
        pytest.approx(np.mean([0.5, 0.0]))


def test_matched_cutoff_recovers_peaks_of_a_shrunken_imputation(benchmark):
    from analysislib.epigenome.tensor import create_signal_dataset

    n = 100
    signal = np.zeros((4, 5, n))
    k36 = MARKS.index("H3K36me3")
    signal[:, k36] = _runs(n, (0, 10), (20, 30), (40, 50), (85, 95))  # 40 % of bins at 5
    signal[1, k36, 60:70] = 5.0  # E017 has 50 %: the mean share of E017/E065/E116 is 0.433
    ds = create_signal_dataset(signal, cells=CELLS, assays=MARKS, scale="neglog10p")
    # E003's imputation ranks its 4 peaks right but at -log10 p 1.5 (below 2), 3 bins of 1.0
    shrunk = (_runs(n, (0, 10), (20, 30), (40, 50), (85, 95), value=1.5)
              + _runs(n, (60, 63), value=1.0))
    imputed = {("E003", a): np.arcsinh(shrunk) for a in MARKS}
    records, failures = benchmark.run(
        ds, ["fixed"], [0], folds=["E003"], kept=["H3K4me3"],
        make=lambda name, seed: _Fixed(imputed), log=io.StringIO())
    assert failures == []
    row = next(r for r in records if r["assay"] == "H3K36me3")
    assert row["peak_recall"] == 0.0 and row["peak_precision"] is None  # nothing at >= 2
    # 43 bins of 100 -> the 43rd largest value, 1.0: the 3 bins at 1.0 join the peaks' 40 but
    # make a run of 75 bp (< 200 bp), so they are no peak
    assert row["peak_cutoff_matched"] == pytest.approx(1.0)
    assert row["peak_recall_matched"] == 1.0 and row["peak_precision_matched"] == 1.0


def test_tiny_edice_and_avg_end_to_end(benchmark, simulated, capsys):
    cell = str(simulated["cell"].values[0])
    records, failures = benchmark.run(simulated, ["avg", "edice"], [0, 1], folds=[cell],
                                      kept=["H3K4me3"], make=_tiny_edice)
    assert failures == []
    log = capsys.readouterr().err
    assert f"edice fold={cell} kept=H3K4me3 seed=1: fit" in log and "[3/3]" in log
    edice = [r for r in records if r["method"] == "edice"]
    assert len(edice) == 2 * 4 and all(r["deterministic"] is False for r in edice)
    assert all(r["fit_seconds"] > 0 and r["predict_seconds"] > 0 for r in edice)
    by_seed = {s: [r["mse"] for r in edice if r["seed"] == s] for s in (0, 1)}
    assert by_seed[0] != by_seed[1]  # the seed reaches the model
    benchmark.print_report(records, [0, 1])
    out = capsys.readouterr().out
    assert "## eDICE minus AVG per fold" in out and "## Target check" in out
    assert "eDICE beats AVG on Pearson and MSE, kept H3K4me3:" in out
    assert "eDICE seed SD < margin/3 on Pearson and MSE, kept H3K4me3: " in out


def test_a_failing_fit_is_reported_and_the_run_goes_on(benchmark, simulated):
    def make(name, seed):
        if name == "edice":
            raise RuntimeError("boom")
        return _tiny_edice(name, seed)

    records, failures = benchmark.run(simulated, ["edice", "avg"], [0], folds=["cell000"],
                                      kept=["H3K4me3"], make=make,
                                      log=io.StringIO())
    assert failures == ["edice fold=cell000 kept=H3K4me3 seed=0: RuntimeError: boom"]
    assert {r["method"] for r in records} == {"avg"}


@pytest.mark.parametrize("argv, message", [
    (["--bins", "0"], "--bins must be at least 1"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--methods", "bogus"], "invalid choice: 'bogus'"),
    (["--kept", "H3K27me3"], "invalid choice: 'H3K27me3'"),
    (["--bins", "ten"], "invalid int value"),
])
def test_argument_errors(benchmark, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--folds", "E999", "--methods", "avg"], "--folds ['E999'] not among the cell types"),
    (["--bins", "2000000", "--methods", "avg"], "exceeds the 1126469 bins"),
])
def test_argument_errors_against_the_data(benchmark, data_mirror, capsys, argv, message):
    with pytest.raises(SystemExit):
        benchmark.main(argv)
    assert message in capsys.readouterr().err


def test_avg_on_a_real_slice_writes_the_json(benchmark, data_mirror, tmp_path, capsys):
    from analysislib.catalog import open_dataset

    out = tmp_path / "epigenome_accuracy.json"
    assert benchmark.main(["--bins", "3000", "--seeds", "2", "--methods", "avg",
                           "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "[8/8] avg fold=E116 kept=H3K4me3+H3K27me3 seed=0: fit" in printed.err
    assert "## Mean ± SD over 2 seed(s)" in printed.out and "## Target check" in printed.out
    assert f"wrote {4 * 7 * 2} rows to {out}" in printed.out
    records = json.loads(out.read_text())
    assert isinstance(records, list) and len(records) == 4 * 7 * 2
    for record in records:
        assert set(record) >= REQUIRED and record["bins"] == 3000
        for key in ("pearson", "mse", "fit_seconds", "predict_seconds"):
            assert isinstance(record[key], float) and math.isfinite(record[key])
    expected = {(f, k, a, s) for f in CELLS for k in ("H3K4me3", "H3K4me3+H3K27me3")
                for a in _hidden(k) for s in (0, 1)}
    assert {(r["fold"], r["kept"], r["assay"], r["seed"]) for r in records} == expected
    ds = open_dataset("roadmap_pilot_arcsinh").isel(bin=slice(0, 3000)).load()
    row = next(r for r in records if (r["fold"], r["kept"], r["assay"], r["seed"])
               == ("E065", "H3K4me3", "H3K36me3", 1))
    truth = ds["signal"].sel(cell="E065", assay="H3K36me3").values.astype(float)
    average = ds["signal"].sel(cell=["E003", "E017", "E116"], assay="H3K36me3").values.mean(
        axis=0).astype(float)
    assert row["pearson"] == pytest.approx(_pearson(truth, average), abs=1e-5)
    assert row["mse"] == pytest.approx(np.mean((truth - average) ** 2), rel=1e-4)


def test_main_with_tiny_edice_prints_the_margins(benchmark, data_mirror, capsys):
    assert benchmark.main(["--bins", "3000", "--seeds", "2", "--methods", "avg", "edice",
                           "--folds", "E003", "--kept", "H3K4me3+H3K27me3"],
                          make=_tiny_edice) == 0
    out = capsys.readouterr().out
    assert "| H3K4me3+H3K27me3 | E003 |" in out
    assert "eDICE beats AVG on Pearson and MSE, kept H3K4me3+H3K27me3: " in out
    assert "of 1 folds (need 1)" in out



@pytest.mark.tools
@pytest.mark.slow
@pytest.mark.skipif(not chromimpute_available(), reason="ChromImpute not installed")
def test_chromimpute_fold(benchmark, simulated):
    from analysislib.epigenome.imputer import get_epigenome_imputer

    def make(name, seed):
        return get_epigenome_imputer("chromimpute", preset="quick", num_samples=1500, seed=seed)

    records, failures = benchmark.run(simulated, ["chromimpute"], [0], folds=["cell001"],
                                      kept=["H3K4me3+H3K27me3"], make=make,
                                      log=io.StringIO())
    assert failures == []
    assert [r["assay"] for r in records] == _hidden("H3K4me3+H3K27me3")
    assert all(r["fit_seconds"] > 0 and r["predict_seconds"] > 0 for r in records)
    assert all(r["pearson"] is not None and r["pearson"] > 0 for r in records)


def test_kept_mark_agreement_rows_per_fold_and_kept_mark(benchmark, simulated):
    from analysislib.epigenome.tensor import cross_cell_agreement

    cells = [str(c) for c in simulated["cell"].values]
    table = benchmark.kept_mark_agreement(simulated, cells[:2], ["H3K4me3", "H3K4me3+H3K27me3"])
    assert list(table.index) == [(c, m) for c in cells[:2] for m in ("H3K4me3", "H3K27me3")]
    expected = cross_cell_agreement(simulated, cells[1]).loc["H3K27me3"]
    assert table.loc[(cells[1], "H3K27me3"), "cell_r"] == pytest.approx(expected["cell_r"])
    assert table.loc[(cells[1], "H3K27me3"), "others_r"] == pytest.approx(expected["others_r"])
