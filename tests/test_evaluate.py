from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysislib.evaluate import evaluate, harness_split, load_genotypes, make_imputer
from analysislib.genotype.imputer import AlleleFrequencyImputer
from analysislib.genotype.masking import parse_scenario
from analysislib.io.vcf import write_vcf
from analysislib.results import COLUMNS, ResultsStore
from analysislib.simulate.genotypes import simulate_genotypes
from analysislib.testing import genotype_dataset, simulate_genotype_calls


@pytest.fixture(scope="module")
def panel():
    return simulate_genotypes("quick", seed=5, samples_per_population=20, sequence_length=300_000).ds.compute()


def test_allele_frequency_imputer_by_hand():
    gt = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 1]]], dtype=np.int8)  # p = 0.75, 0.25
    ref = genotype_dataset(gt, positions=[10, 20], alleles=[["A", "G"], ["C", "T"]],
                           sample_ids=["r1", "r2"], variant_ids=None)
    target = genotype_dataset([[[1, 1], [-1, -1]]], positions=[20], alleles=[["C", "T"]],
                              sample_ids=["t1", "t2"], variant_ids=None)
    out = AlleleFrequencyImputer().fit(ref).impute(target)
    np.testing.assert_allclose(out.call_dosage.values, [[1.5, 1.5], [2.0, 0.5]])
    np.testing.assert_allclose(out.call_genotype_probability.values[0, 0], [0.0625, 0.375, 0.5625])
    np.testing.assert_array_equal(out.call_genotype.values[1, 0], [1, 1])


@pytest.mark.parametrize("name", ["array_omni15", "typed_1in3", "random_05_seed1"])
def test_scenario_names_parse(name):
    assert parse_scenario(name).name == name


def test_unknown_names_are_clear():
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("everything")
    with pytest.raises(KeyError, match="registered: allele_frequency"):
        make_imputer("magic")


def test_harness_split_is_the_split_evaluate_scores(panel, tmp_path):
    result = evaluate("allele_frequency", panel, "typed_1in3", seed=3, store=ResultsStore(tmp_path))
    reference, truth = harness_split(panel, seed=3)
    assert list(result.imputed.sample_id.values) == list(truth.sample_id.values)
    assert reference.sizes["samples"] + truth.sizes["samples"] == panel.sizes["samples"]
    populations = set(panel.sample_population.values)
    assert set(truth.sample_population.values) == populations  # stratified
    other, _ = harness_split(panel, seed=4)
    assert list(other.sample_id.values) != list(reference.sample_id.values)


def test_evaluate_stores_scored_rows(panel, tmp_path):
    store = ResultsStore(tmp_path)
    result = evaluate("allele_frequency", panel, "typed_1in3", store=store, dataset_label="sim")
    table = store.read("genotype_imputation")
    assert list(table.columns) == list(COLUMNS)
    assert set(table.run_id) == {result.run_id}
    assert {"all", "maf_bin", "variant", "population"} <= set(table.stratum_kind)
    overall = table[(table.metric == "concordance") & (table.stratum_kind == "all")]
    # Hardy-Weinberg guessing is right more often than chance but far from perfect.
    assert 0.4 < overall.value.iloc[0] < 0.95
    n_untyped = panel.sizes["variants"] - len(range(0, panel.sizes["variants"], 3))
    assert overall.n.iloc[0] == n_untyped  # a mean over untyped variants
    pooled = table[(table.metric == "aggregate_concordance") & (table.stratum_kind == "all")]
    assert pooled.n.iloc[0] == n_untyped * result.imputed.sizes["samples"]
    assert table.runtime_s.gt(0).all() and table.code_version.str.startswith("analysislib").all()


def test_evaluate_accepts_a_user_vcf(panel, tmp_path):
    path = tmp_path / "mine.vcf.gz"
    write_vcf(panel, path)
    ds, label, checksum = load_genotypes(path)
    assert ds.sizes == panel.sizes
    assert label == "mine.vcf.gz" and len(checksum) == 64
    result = evaluate("allele_frequency", path, "random_05_seed1", store=ResultsStore(tmp_path / "r"))
    assert result.rows.dataset.unique().tolist() == ["mine.vcf.gz"]
    assert result.rows.scenario.unique().tolist() == ["random_05_seed1"]


class _SleepyImputer(AlleleFrequencyImputer):
    """The floor, slowed down, and reporting a misleading cost of its own."""

    name = "sleepy"

    def fit(self, reference):
        import time

        time.sleep(0.05)
        return super().fit(reference)

    def impute(self, target):
        import time

        from analysislib.genotype.imputer import ImputationRun

        time.sleep(0.02)
        out = super().impute(target)
        self.last_run = ImputationRun(seconds=1e-6, peak_memory_mb=42.0)
        return out


def test_harness_times_fit_and_impute_itself(panel, tmp_path):
    result = evaluate(_SleepyImputer(), panel, "typed_1in3", store=ResultsStore(tmp_path))
    run = result.rows.iloc[0]
    # the harness's own clock, not the imputer's report (1e-6 s); lower bounds only
    assert run.fit_seconds >= 0.05 and run.impute_seconds >= 0.02
    assert run.runtime_s == pytest.approx(run.fit_seconds + run.impute_seconds)
    assert run.peak_memory_mb == 42.0
    stored = ResultsStore(tmp_path).runs()
    assert stored.fit_seconds.iloc[0] == run.fit_seconds
    assert stored.impute_seconds.iloc[0] == run.impute_seconds


def test_maf_bins_come_from_the_reference_samples_only(panel, tmp_path):
    from analysislib.genotype.masking import apply_scenario, split_samples
    from analysislib.genotype.metrics import assign_maf_bins
    from analysislib.genotype.stats import minor_allele_frequency

    result = evaluate("allele_frequency", panel, "typed_1in3", store=ResultsStore(tmp_path),
                      target_fraction=0.25, seed=3)
    reference, truth = split_samples(panel, target_fraction=0.25, seed=3,
                                     stratify_by="sample_population")
    scored = apply_scenario(truth, parse_scenario("typed_1in3"), reference=reference).score_mask
    bins = assign_maf_bins(minor_allele_frequency(reference).values).astype(object)
    expected = pd.Series(bins[scored.any(axis=1)]).value_counts()
    rows = result.rows[(result.rows.metric == "r2") & (result.rows.stratum_kind == "maf_bin")]
    assert dict(zip(rows.stratum, rows.n, strict=True)) == expected.to_dict()
    # ... which differ from bins over all samples on this panel
    everyone = pd.Series(assign_maf_bins(minor_allele_frequency(panel).values).astype(object)
                         [scored.any(axis=1)]).value_counts()
    assert everyone.to_dict() != expected.to_dict()


def test_thread_parameters_name_each_imputers_keyword():
    from analysislib.evaluate import thread_parameters

    assert thread_parameters("beagle", 3) == {"threads": 3}
    assert thread_parameters("minimac4", 2) == {"threads": 2}
    assert thread_parameters("dae", 2) == {"threads": 2, "jobs": 2}  # one training worker per thread
    assert thread_parameters("dae", 1) == {"threads": 1}
    assert thread_parameters("biunet", 2) == {"threads": 2}
    assert thread_parameters("scda", 1) == {"threads": 1}
    assert thread_parameters("allele_frequency", 1) == {}
    assert thread_parameters("beagle", None) == {}
    with pytest.raises(ValueError, match="runs on one thread"):
        thread_parameters("allele_frequency", 2)
    with pytest.raises(ValueError, match="at least 1"):
        thread_parameters("beagle", 0)
    with pytest.raises(KeyError, match="unknown genotype imputer"):
        thread_parameters("magic", 1)


def test_unknown_imputer_parameters_are_value_errors():
    with pytest.raises(ValueError, match="takes no parameter 'bogus'"):
        make_imputer("beagle", bogus=1)
    with pytest.raises(ValueError, match="takes no parameter 'threads'"):
        make_imputer("allele_frequency", threads=1)
    with pytest.raises(ValueError, match="bogus"):
        make_imputer("biunet", bogus=1)


def test_train_once_fits_once_per_reference_panel_and_per_population():
    from analysislib.genotype.imputer import TrainOnce

    class CountingFits(AlleleFrequencyImputer):
        fits = 0

        def fit(self, reference):
            CountingFits.fits += 1
            return super().fit(reference)

    panel = genotype_dataset(simulate_genotype_calls(30, 12, seed=3), populations=["A"] * 6 + ["B"] * 6)
    once = TrainOnce(CountingFits(), name="af_once")
    target = panel.isel(samples=slice(0, 2), variants=slice(0, 30, 3))
    for _ in range(3):
        out = once.fit(panel).impute(target)
    assert CountingFits.fits == 1 and once.name == "af_once"
    assert out.sizes["variants"] == 30 and once.parameters()["trained_once_per_reference"]
    once.fit(panel.isel(samples=slice(0, 10)))  # another panel: trained again
    assert CountingFits.fits == 2
    cohort = TrainOnce(CountingFits(), population="B").fit(panel)
    assert cohort.reference.sizes["samples"] == 6 and cohort.parameters()["training_population"] == "B"
    with pytest.raises(ValueError, match="population 'C'"):
        TrainOnce(CountingFits(), population="C").fit(panel)
