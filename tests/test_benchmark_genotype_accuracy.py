"""benchmarks/genotype_accuracy.py on a tiny simulated panel with the allele-frequency floor only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

REQUIRED = {"method", "scenario", "preset", "maf_bin", "aggregate_r2", "r2", "accuracy",
            "fit_seconds", "impute_seconds"}


@pytest.fixture(scope="module")
def benchmark(benchmark_script):
    return benchmark_script("genotype_accuracy")


@pytest.fixture(scope="module")
def tiny_vcf(tmp_path_factory):
    from analysislib.io.vcf import write_vcf
    from analysislib.simulate.genotypes import simulate_genotypes

    ds = simulate_genotypes("quick", seed=5, samples_per_population=20,
                            sequence_length=150_000).ds.compute()
    path = tmp_path_factory.mktemp("bench") / "tiny.vcf.gz"
    write_vcf(ds, path)
    return path


def test_scenarios_run_the_methods_of_issue_12(benchmark):
    assert {s: set(m) for s, (_, m) in benchmark.SCENARIOS.items()} == {
        "typed_1in3": {"dae", "beagle", "minimac4", "allele_frequency"},
        "random_05": {"biunet", "scda", "beagle", "allele_frequency"},
        "random_15": {"biunet", "scda", "beagle", "allele_frequency"},
        "random_25": {"biunet", "scda", "beagle", "allele_frequency"},
    }
    from analysislib.genotype.masking import parse_scenario

    for harness_name, _ in benchmark.SCENARIOS.values():
        parse_scenario(harness_name)
    assert benchmark._method_parameters("biunet", "standard", 2) == {"preset": "standard",
                                                                      "threads": 2}
    # the autoencoder's tiles train in one worker process per thread
    assert benchmark._method_parameters("dae", "quick", 2) == {"preset": "quick", "threads": 2,
                                                                "jobs": 2, "unit": "haplotype"}
    assert benchmark._method_parameters("dae", "quick", 1) == {"preset": "quick", "threads": 1,
                                                                "unit": "haplotype"}
    # trained for the scenario's density on haplotype rows, or as the paper trains
    assert benchmark._method_parameters("dae", "quick", 2, "typed_1in3") == {
        "preset": "quick", "threads": 2, "jobs": 2, "unit": "haplotype", "typed_fraction": 1 / 3}
    assert benchmark._method_parameters("dae", "quick", 2, "typed_1in3", dae_trained_for="density") == {
        "preset": "quick", "threads": 2, "jobs": 2, "unit": "haplotype", "typed_fraction": 1 / 3}
    assert benchmark._method_parameters("dae", "quick", 2, "typed_1in3", dae_trained_for="any",
                                        dae_unit="genotype") == {"preset": "quick", "threads": 2,
                                                                 "jobs": 2, "unit": "genotype"}
    assert benchmark._method_parameters("beagle", "quick", 2) == {"threads": 2}
    assert benchmark._method_parameters("allele_frequency", "quick", 2) == {}


def test_the_autoencoder_is_trained_for_the_sites_the_harness_keeps_typed(benchmark, tiny_vcf, tmp_path,
                                                                         monkeypatch):
    """With ``typed_sites`` in the spec, run_one gives the autoencoder the scenario's typed sites:
    those the harness keeps in the targets (one in three, from the first)."""
    import analysislib.evaluate

    class Stop(Exception):
        pass

    def capture(method, ds, scenario, **kwargs):
        raise Stop(kwargs["method_parameters"], ds.sizes["variants"])

    monkeypatch.setattr(analysislib.evaluate, "evaluate", capture)
    spec = {"dataset": str(tiny_vcf), "variants": 30, "scenario": "typed_1in3", "method": "dae",
            "store": str(tmp_path), "parameters": {"preset": "quick"}}
    with pytest.raises(Stop) as stopped:
        benchmark.run_one({**spec, "typed_sites": True})
    parameters, n_variants = stopped.value.args
    np.testing.assert_array_equal(parameters["typed_sites"], np.arange(n_variants) % 3 == 0)
    with pytest.raises(Stop) as stopped:
        benchmark.run_one(spec)
    assert "typed_sites" not in stopped.value.args[0]


def test_floor_only_run_writes_the_json_rows(benchmark, tiny_vcf, tmp_path, capsys):
    from analysislib.evaluate import evaluate
    from analysislib.io.vcf import read_vcf
    from analysislib.results import ResultsStore

    out = tmp_path / "accuracy.json"
    argv = ["--dataset", str(tiny_vcf), "--variants", "300", "--methods", "allele_frequency",
            "--scenarios", "typed_1in3", "random_05", "--json", str(out)]
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    assert "typed_1in3 (typed_1in3): accuracy on hidden genotypes" in printed
    assert "random_05: cost" in printed
    records = json.loads(out.read_text())
    assert isinstance(records, list) and records
    for record in records:
        assert set(record) >= REQUIRED
        assert record["method"] == "allele_frequency" and record["preset"] == "quick"
        assert record["fit_seconds"] > 0 and record["impute_seconds"] > 0
        assert record["aggregate_r2_ratio_to_beagle"] is None  # Beagle did not run
    assert {r["scenario"] for r in records} == {"typed_1in3", "random_05"}
    for scenario in ("typed_1in3", "random_05"):
        bins = [r["maf_bin"] for r in records if r["scenario"] == scenario]
        assert bins[0] == "all" and len(bins) > 1 and len(set(bins)) == len(bins)
    # the figures are the harness's, on the first 300 SNPs
    panel = read_vcf(tiny_vcf).isel(variants=slice(0, 300)).compute()
    direct = evaluate("allele_frequency", panel, "random_05_seed1",
                      store=ResultsStore(tmp_path / "direct")).headline()
    overall = next(r for r in records if r["scenario"] == "random_05" and r["maf_bin"] == "all")
    assert overall["aggregate_r2"] == pytest.approx(direct.aggregate_r2.iloc[0])
    assert overall["accuracy"] == pytest.approx(direct.genotype_accuracy.iloc[0])
    assert overall["r2"] == 0.0 and overall["calls"] == direct.calls.iloc[0]
    assert not math.isnan(overall["peak_memory_mb"])
