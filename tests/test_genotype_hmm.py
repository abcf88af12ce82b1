"""Tests for analysislib.genotype.hmm: Beagle and Minimac4 behind the GenotypeImputer interface.

A small simulated panel is split 90/10 into reference and target samples; the targets keep one
SNP in three (typed). Tool-backed tests are marked ``tools`` and skip when the tool is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from analysislib.errors import ExternalToolError, InputFormatError, ToolNotFoundError
from analysislib.genotype import hmm
from analysislib.genotype.hmm import BeagleImputer, Minimac4Imputer, write_plink_map
from analysislib.genotype.imputer import GenotypeImputer, check_imputed
from analysislib.simulate.genotypes import simulate_genotypes

needs_beagle = pytest.mark.skipif(shutil.which("beagle") is None, reason="beagle not installed")
needs_minimac4 = pytest.mark.skipif(shutil.which("minimac4") is None,
                                    reason="minimac4 not installed")


# ------------------------------------------------------------------------------------------
# The scenario
# ------------------------------------------------------------------------------------------


class Scenario:
    """Reference/target split of a simulated panel, with the truth at every variant."""

    def __init__(self) -> None:
        self.panel = simulate_genotypes("quick", seed=3, samples_per_population=40,
                                        sequence_length=1_000_000)
        ds = self.panel.ds
        rng = np.random.default_rng(0)
        order = rng.permutation(ds.sizes["samples"])
        n_target = ds.sizes["samples"] // 10
        target_samples, reference_samples = np.sort(order[:n_target]), np.sort(order[n_target:])
        self.reference = ds.isel(samples=reference_samples)
        self.typed = np.zeros(ds.sizes["variants"], dtype=bool)
        self.typed[::3] = True
        self.target = ds.isel(samples=target_samples, variants=np.flatnonzero(self.typed))
        self.truth = ds["call_genotype"].values[:, target_samples].sum(-1).astype(np.float64)
        # 5% of typed genotypes missing (the random-missing scenario)
        gt = self.target["call_genotype"].values.copy()
        self.missing = rng.random(gt.shape[:2]) < 0.05
        gt[self.missing] = -1
        self.target_missing = self.target.copy()
        self.target_missing["call_genotype"] = self.target["call_genotype"].copy(data=gt)
        af = self.reference["call_genotype"].values.mean(axis=(1, 2))
        self.maf = np.minimum(af, 1 - af)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


def untyped_r2(dosage: np.ndarray, sc: Scenario, min_maf: float = 0.05) -> float:
    """Mean per-variant squared Pearson correlation of dosage with truth at untyped sites."""
    values = []
    for v in np.flatnonzero(~sc.typed & (sc.maf > min_maf)):
        x, y = dosage[v], sc.truth[v]
        if x.std() > 0 and y.std() > 0:
            values.append(np.corrcoef(x, y)[0, 1] ** 2)
    assert len(values) > 100
    return float(np.mean(values))


def check_result(out: xr.Dataset, sc: Scenario, target: xr.Dataset, imputer: GenotypeImputer,
                 min_r2: float) -> None:
    """Properties every HMM imputation must have."""
    check_imputed(out, sc.reference, target)
    n_variants, n_samples = sc.reference.sizes["variants"], target.sizes["samples"]
    assert out["call_dosage"].shape == (n_variants, n_samples)
    assert out["call_genotype_probability"].shape == (n_variants, n_samples, 3)
    gp = out["call_genotype_probability"].values.astype(np.float64)
    np.testing.assert_allclose(gp.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["call_dosage"].values, gp[..., 1] + 2 * gp[..., 2], atol=1e-5)
    gt = out["call_genotype"].values
    assert gt.min() >= 0 and out["call_genotype_phased"].values.all()
    assert np.array_equal(out["sample_population"].values, target["sample_population"].values)
    assert untyped_r2(out["call_dosage"].values, sc) > min_r2
    # typed sites keep their observed genotypes (phase aside), as hard calls
    given = target["call_genotype"].values
    observed = (given >= 0).all(-1)
    typed_gp = gp[sc.typed]
    assert np.array_equal(gt[sc.typed].sum(-1)[observed], given.sum(-1)[observed])
    np.testing.assert_allclose(typed_gp.max(-1)[observed], 1.0, atol=1e-6)
    run = imputer.last_run
    assert run.seconds > 0 and run.peak_memory_mb > 0
    assert run.details["steps"] and all(s["seconds"] > 0 for s in run.details["steps"])


# ------------------------------------------------------------------------------------------
# Genetic maps (no tools needed)
# ------------------------------------------------------------------------------------------


def test_write_plink_map(tmp_path: Path) -> None:
    path = write_plink_map(tmp_path / "m.map", ["22", "22", "22", "X"],
                           [100, 100, 250, 5], [0.0, 0.0, 0.125, 3.0])
    assert path.read_text().splitlines() == [
        "22\t.\t0.00000000\t100", "22\t.\t0.12500000\t250", "X\t.\t3.00000000\t5"]
    with pytest.raises(ValueError, match="cM go backwards at entry 1"):
        write_plink_map(tmp_path / "bad.map", ["1", "1"], [10, 20], [1.0, 0.5])
    with pytest.raises(ValueError, match="positions go backwards"):
        write_plink_map(tmp_path / "bad.map", ["1", "1"], [20, 10], [0.0, 0.5])
    with pytest.raises(ValueError, match="not finite"):
        write_plink_map(tmp_path / "bad.map", ["1"], [10], [np.nan])
    assert not (tmp_path / "bad.map").exists()


def test_reference_map_sources(scenario: Scenario, tmp_path: Path) -> None:
    ref = scenario.reference
    want = ref["variant_genetic_position"].values
    for genetic_map, source in [(None, "variant_genetic_position"),
                                (scenario.panel.rate_map, "rate_map"), (want, "array")]:
        path, got_source = hmm._reference_map(ref, genetic_map, tmp_path)
        assert got_source == source
        assert path is not None
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert {r[0] for r in rows} == {"22"}
        np.testing.assert_array_equal([int(r[3]) for r in rows], ref["variant_position"].values)
        np.testing.assert_allclose([float(r[2]) for r in rows], want, atol=1e-8)
    path, source = hmm._reference_map(ref.drop_vars("variant_genetic_position"), None, tmp_path)
    assert path is None and "1 cM = 1 Mb" in source
    with pytest.raises(ValueError, match="one cM value per reference variant"):
        hmm._reference_map(ref, want[:-1], tmp_path)
    with pytest.raises(FileNotFoundError):
        hmm._reference_map(ref, tmp_path / "absent.map", tmp_path)


def test_missing_tools_raise_tool_not_found(scenario: Scenario, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="apt-get install beagle"):
        BeagleImputer(workdir=tmp_path).fit(scenario.reference)
    with pytest.raises(ToolNotFoundError, match="apt-get install minimac4"):
        Minimac4Imputer(workdir=tmp_path).fit(scenario.reference)
    assert list(tmp_path.iterdir()) == []


def test_bad_configuration_and_panels(scenario: Scenario) -> None:
    with pytest.raises(ValueError, match="java_mem"):
        BeagleImputer(java_mem="lots")
    with pytest.raises(ValueError, match="prephase"):
        Minimac4Imputer(prephase="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        BeagleImputer(threads=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        BeagleImputer().impute(scenario.target)
    unphased = scenario.reference.copy()
    unphased["call_genotype_phased"] = unphased["call_genotype_phased"] & False
    with pytest.raises(ValueError, match="phased"):
        hmm._check_reference(unphased)
    holes = scenario.reference.copy()
    gt = holes["call_genotype"].values.copy()
    gt[0, 0, 0] = -1
    holes["call_genotype"] = holes["call_genotype"].copy(data=gt)
    with pytest.raises(ValueError, match="missing genotypes"):
        hmm._check_reference(holes)
    two_contigs = scenario.reference.copy()
    contig = np.zeros(two_contigs.sizes["variants"], dtype=np.int16)
    contig[two_contigs.sizes["variants"] // 2:] = 1
    two_contigs["variant_contig"] = ("variants", contig)
    two_contigs.attrs["contigs"] = ["21", "22"]
    with pytest.raises(ValueError, match="one chromosome at a time"):
        Minimac4Imputer().fit(two_contigs)


# ------------------------------------------------------------------------------------------
# Beagle
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beagle(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> BeagleImputer:
    if shutil.which("beagle") is None:
        pytest.skip("beagle not installed")
    workdir = tmp_path_factory.mktemp("beagle")
    return BeagleImputer(threads=2, seed=1, workdir=workdir).fit(scenario.reference)


@pytest.mark.tools
@needs_beagle
def test_beagle_imputes_the_panel(beagle: BeagleImputer, scenario: Scenario) -> None:
    out = beagle.impute(scenario.target)
    check_result(out, scenario, scenario.target, beagle, min_r2=0.85)
    details = beagle.last_run.details
    assert "version 5.4" in details["version"]
    assert "gp=true" in details["command"] and "impute=true" in details["command"]
    assert details["genetic_map"] == "variant_genetic_position"
    assert beagle.parameters()["threads"] == 2
    # only the fit directory remains in the workdir
    assert [p.name.split("-")[2] for p in beagle.workdir.iterdir()] == ["reference"]


@pytest.mark.tools
@needs_beagle
def test_beagle_fills_missing_typed_genotypes(beagle: BeagleImputer, scenario: Scenario) -> None:
    out = beagle.impute(scenario.target_missing)
    check_result(out, scenario, scenario.target_missing, beagle, min_r2=0.85)
    filled = out["call_dosage"].values[scenario.typed][scenario.missing]
    truth = scenario.truth[scenario.typed][scenario.missing]
    assert scenario.missing.sum() > 100
    assert np.all(filled == np.rint(filled))  # Beagle reports typed markers as hard calls
    assert np.mean(filled == truth) > 0.95


@pytest.mark.tools
@needs_beagle
def test_beagle_with_every_marker_genotyped(scenario: Scenario, tmp_path: Path) -> None:
    # BiU-Net's random-missingness setting: the panel holds only target markers, so Beagle
    # imputes nothing and writes no GP header; calls come back as one-hot hard calls.
    reference = scenario.reference.isel(variants=np.flatnonzero(scenario.typed))
    imputer = BeagleImputer(threads=2, seed=1, workdir=tmp_path).fit(reference)
    out = imputer.impute(scenario.target_missing)
    check_imputed(out, reference, scenario.target_missing)
    gp = out["call_genotype_probability"].values
    assert set(np.unique(gp)) <= {0.0, 1.0} and np.allclose(gp.sum(-1), 1.0)
    filled = out["call_dosage"].values[scenario.missing]
    truth = scenario.truth[scenario.typed][scenario.missing]
    assert np.mean(filled == truth) > 0.9


@pytest.mark.tools
@needs_beagle
def test_beagle_failure_quotes_stderr(scenario: Scenario, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.map"
    corrupt.write_text("22\t.\tnot-a-number\t20000100\n")
    imputer = BeagleImputer(genetic_map=corrupt, workdir=tmp_path / "work")
    imputer.fit(scenario.reference)
    with pytest.raises(ExternalToolError) as info:
        imputer.impute(scenario.target)
    assert info.value.returncode != 0
    assert "not-a-number" in info.value.stderr_tail
    assert "not-a-number" in str(info.value)
    # the failed run's scratch directory is gone; closing removes the fit directory too
    assert [p.name.split("-")[2] for p in (tmp_path / "work").iterdir()] == ["reference"]
    imputer.close()
    assert list((tmp_path / "work").iterdir()) == []


# ------------------------------------------------------------------------------------------
# Minimac4
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minimac4(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Minimac4Imputer:
    if shutil.which("minimac4") is None:
        pytest.skip("minimac4 not installed")
    workdir = tmp_path_factory.mktemp("minimac4")
    return Minimac4Imputer(threads=2, workdir=workdir).fit(scenario.reference)


@pytest.mark.tools
@needs_minimac4
def test_minimac4_imputes_the_panel(minimac4: Minimac4Imputer, scenario: Scenario) -> None:
    fit = minimac4.last_run
    assert fit.seconds > 0 and fit.peak_memory_mb > 0
    assert "--compress-reference" in fit.details["fit_steps"][0]["command"]
    out = minimac4.impute(scenario.target)
    check_result(out, scenario, scenario.target, minimac4, min_r2=0.9)
    details = minimac4.last_run.details
    assert "4.1.2" in details["version"]
    assert [s["step"] for s in details["steps"]] == ["minimac4"]  # phased, complete: no prephasing
    assert details["fit_seconds"] == fit.seconds
    assert "-m" in details["command"]


@pytest.mark.tools
@needs_minimac4
def test_minimac4_raw_typed_sites_are_hmm_estimates(scenario: Scenario, tmp_path: Path) -> None:
    imputer = Minimac4Imputer(restore_typed=False, workdir=tmp_path).fit(scenario.reference)
    raw = imputer.impute(scenario.target)["call_dosage"].values[scenario.typed]
    given = scenario.target["call_genotype"].values.sum(-1)
    assert np.abs(raw - given).max() > 0.1  # Minimac4 re-estimates some typed genotypes
    assert np.mean(np.abs(raw - given) < 0.5) > 0.97  # ... but mostly agrees with them


@pytest.mark.tools
@needs_minimac4
@needs_beagle
def test_minimac4_prephases_missing_targets(minimac4: Minimac4Imputer, scenario: Scenario) -> None:
    out = minimac4.impute(scenario.target_missing)
    check_result(out, scenario, scenario.target_missing, minimac4, min_r2=0.9)
    assert [s["step"] for s in minimac4.last_run.details["steps"]] == [
        "beagle prephasing", "minimac4"]
    filled = out["call_dosage"].values[scenario.typed][scenario.missing]
    truth = scenario.truth[scenario.typed][scenario.missing]
    assert np.mean(np.abs(filled - truth) < 0.5) > 0.95


@pytest.mark.tools
@needs_minimac4
def test_minimac4_without_prephasing_refuses_missing_targets(scenario: Scenario,
                                                             tmp_path: Path) -> None:
    never = Minimac4Imputer(prephase="never", workdir=tmp_path).fit(scenario.reference)
    with pytest.raises(ValueError, match="missing or unphased"):
        never.impute(scenario.target_missing)
    unphased = scenario.target.copy()
    unphased["call_genotype_phased"] = unphased["call_genotype_phased"] & False
    with pytest.raises(ValueError, match="missing or unphased"):
        never.impute(unphased)


@pytest.mark.tools
@needs_minimac4
def test_minimac4_failure_quotes_stderr(scenario: Scenario, tmp_path: Path) -> None:
    imputer = Minimac4Imputer(extra_args=["--no-such-option"], workdir=tmp_path)
    imputer.fit(scenario.reference)
    with pytest.raises(ExternalToolError, match="Print usage") as info:
        imputer.impute(scenario.target)
    assert info.value.returncode != 0
    assert len(list(tmp_path.iterdir())) == 1  # the fit directory only


@pytest.mark.tools
@needs_minimac4
def test_output_is_matched_to_the_reference_order(minimac4: Minimac4Imputer, scenario: Scenario,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    expected = minimac4.impute(scenario.target)
    real_read_vcf = hmm.read_vcf

    def reversed_read(*args: Any, **kwargs: Any) -> xr.Dataset:
        ds = real_read_vcf(*args, **kwargs)
        return ds.isel(variants=slice(None, None, -1))

    monkeypatch.setattr(hmm, "read_vcf", reversed_read)
    reordered = minimac4.impute(scenario.target)
    xr.testing.assert_equal(reordered["call_genotype_probability"],
                            expected["call_genotype_probability"])

    def dropping_read(*args: Any, **kwargs: Any) -> xr.Dataset:
        return real_read_vcf(*args, **kwargs).isel(variants=slice(1, None))

    monkeypatch.setattr(hmm, "read_vcf", dropping_read)
    first = f"22:{scenario.reference['variant_position'].values[0]}"
    with pytest.raises(InputFormatError, match=f"reference variant {first}:.* is missing"):
        minimac4.impute(scenario.target)


@pytest.mark.tools
@needs_minimac4
def test_keep_workdir_keeps_the_scratch_files(scenario: Scenario, tmp_path: Path) -> None:
    imputer = Minimac4Imputer(keep_workdir=True, workdir=tmp_path).fit(scenario.reference)
    imputer.impute(scenario.target)
    kept = Path(imputer.last_run.details["workdir"])
    assert (kept / "imputed.vcf.gz").exists() and (kept / "target.vcf.gz").exists()
    imputer.close()
    assert kept.exists()  # kept on request, also after close
