"""The GWAS-prior harness and ``analysislib evaluate --task gwas``."""

from __future__ import annotations

import pytest

from analysislib.cli import main
from analysislib.errors import PresetError
from analysislib.gwas.evaluate import evaluate_gwas, parse_method
from analysislib.results import ResultsStore


@pytest.fixture(scope="module")
def sim():
    from analysislib.simulate.gwas import simulate_gwas

    return simulate_gwas("quick", seed=0)


def test_a_likelihood_prior_learns_and_its_rows_are_stored(sim, tmp_path):
    from analysislib.gwas.priors import RESULT_METRICS

    result = evaluate_gwas("likelihood_linear", "quick", sim=sim, settings={"epochs": 2},
                           store=ResultsStore(tmp_path))
    rows = ResultsStore(tmp_path).read("gwas_priors")
    assert len(rows) == 2 * len(RESULT_METRICS) and set(rows.run_id) == {result.run_id}
    assert set(rows.stratum) == {"test", "train"} and set(rows.method) == {"likelihood_linear"}
    assert set(rows.scenario) == {"features_all"} and set(rows.dataset) == {"sim_gwas_quick_seed0"}
    held_out = rows[rows.stratum == "test"].set_index("metric")["value"]
    assert held_out["delta_nll"] == pytest.approx(result.scores["delta_nll"])
    # learns: better than the constant-prior null on held-out SNPs, and tracks the true prior
    assert held_out["delta_nll"] < 0 and held_out["log_f_r"] > 0.3, held_out.to_dict()


def test_bad_requests_fail_before_anything_is_simulated():
    with pytest.raises(ValueError, match="unknown GWAS prior method 'likelihood_cnn'; choose from"):
        parse_method("likelihood_cnn")
    with pytest.raises(PresetError, match="unknown GWAS prior training setting 'epoch'"):
        evaluate_gwas("ldsr_linear", "quick", settings={"epoch": 2}, write=False)
    with pytest.raises(PresetError, match="unknown GWAS prior training preset 'huge'"):
        evaluate_gwas("ldsr_linear", "huge", write=False)


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "likelihood_cnn", "--dataset", "sim_gwas_quick"], "unknown GWAS prior method"),
    (["--method", "ldsr_linear", "--dataset", "1kg_chr22_array500"], "runs on simulations"),
    (["--method", "ldsr_linear", "--dataset", "sim_gwas_huge"], "preset 'huge'"),
    (["--method", "ldsr_linear", "--dataset", "sim_gwas_quick", "-p", "epoch=2"], "setting 'epoch'"),
    (["--method", "ldsr_linear", "--dataset", "sim_gwas_quick", "--scenario", "typed_1in3"],
     "--scenario applies to --task genotype only"),
])
def test_evaluate_gwas_refuses_bad_options_in_one_line(extra, message, tmp_path, capsys):
    assert main(["evaluate", "--task", "gwas", "--results", str(tmp_path), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(tmp_path.rglob("*.parquet"))


def test_evaluate_gwas_from_the_command_line(tmp_path, capsys):
    assert main(["evaluate", "--task", "gwas", "--method", "ldsr_constant", "--dataset", "sim_gwas_quick",
                 "-p", "epochs=1", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ldsr_constant on sim_gwas_quick_seed0, features_all" in out and "delta_nll" in out
    assert set(ResultsStore(tmp_path).read("gwas_priors").method) == {"ldsr_constant"}
    assert main(["evaluate", "--method", "beagle", "--dataset", "x", "--scenario", "typed_1in3",
                 "--features", "few"]) == 1
    assert "--features applies to --task gwas only" in capsys.readouterr().err
