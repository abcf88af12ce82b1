from __future__ import annotations

import numpy as np
import pytest

from analysislib.evaluate import evaluate, load_genotypes, make_imputer
from analysislib.genotype.imputer import AlleleFrequencyImputer
from analysislib.genotype.masking import parse_scenario
from analysislib.io.vcf import write_vcf
from analysislib.results import COLUMNS, ResultsStore
from analysislib.simulate.genotypes import simulate_genotypes


@pytest.fixture(scope="module")
def panel():
    return simulate_genotypes("quick", seed=5, samples_per_population=20, sequence_length=300_000).ds.compute()


def test_allele_frequency_imputer_by_hand():
    from analysislib.genotype.dataset import create_genotype_dataset

    gt = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 1]]], dtype=np.int8)  # p = 0.75, 0.25
    ref = create_genotype_dataset(contigs=["1"], variant_contig=[0, 0], variant_position=[10, 20],
                                  variant_allele=np.array([["A", "G"], ["C", "T"]], dtype=object),
                                  sample_id=["r1", "r2"], call_genotype=gt)
    target = create_genotype_dataset(contigs=["1"], variant_contig=[0], variant_position=[20],
                                     variant_allele=np.array([["C", "T"]], dtype=object),
                                     sample_id=["t1", "t2"],
                                     call_genotype=np.array([[[1, 1], [-1, -1]]], dtype=np.int8))
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
