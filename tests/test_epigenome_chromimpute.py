"""Tests for analysislib.epigenome.chromimpute: the real ChromImpute jar on a small simulation,
plus its wig reader and error handling (with stand-in ``java`` scripts)."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from analysislib.epigenome.chromimpute import (
    CHROMIMPUTE_JAR_ENV,
    ChromImputeImputer,
    chromimpute_available,
    find_chromimpute_jar,
    read_fixedstep_wig,
)
from analysislib.epigenome.imputer import get_epigenome_imputer
from analysislib.epigenome.tensor import create_signal_dataset, hide_tracks, to_arcsinh
from analysislib.errors import ExternalToolError, InputFormatError, ToolNotFoundError
from analysislib.simulate.epigenome import simulate_epigenome

needs_chromimpute = pytest.mark.skipif(not chromimpute_available(), reason="ChromImpute not installed")
SMALL = {"num_samples": 4000}  # quick preset: windows 10/40 bins


@pytest.fixture(scope="module")
def simulated():
    return simulate_epigenome("quick", n_cells=6, n_bins=8000, seed=3)


@pytest.fixture(scope="module")
def fitted(simulated):
    if not chromimpute_available():
        pytest.skip("ChromImpute not installed")
    imputer = ChromImputeImputer("quick", **SMALL)
    return imputer.fit(simulated)


@pytest.mark.tools
@pytest.mark.slow
@needs_chromimpute
def test_predictions_beat_a_constant(simulated, fitted) -> None:
    target = ("cell000", "H3K4me3")
    prediction = fitted.predict([target])
    assert prediction.dims == ("track", "bin")
    assert prediction.attrs["scale"] == "arcsinh"
    assert prediction["track"].values.tolist() == ["cell000.H3K4me3"]
    truth = to_arcsinh(simulated)["signal"].sel(cell="cell000", assay="H3K4me3").values
    values = prediction.isel(track=0).values
    inner = slice(40, -40)  # Apply writes 0 within window_wide bins of the ends
    assert np.all(values[:40] == 0) and np.all(values[-40:] == 0)
    r = np.corrcoef(truth[inner], values[inner])[0, 1]
    mse = np.mean((truth[inner] - values[inner]) ** 2)
    assert r > 0.6
    assert mse < 0.75 * np.var(truth[inner])  # the best constant has MSE = variance
    run = fitted.last_run
    assert run.peak_memory_mb > 0 and run.seconds > 0
    assert {"GenerateTrainData", "Train", "Apply"} <= set(run.details["tool_seconds"])
    assert run.details["tool_version"] == "1.0.3"
    assert run.details["fit"]["tool_seconds"].keys() == {"Convert", "ComputeGlobalDist"}


@pytest.mark.tools
@pytest.mark.slow
@needs_chromimpute
def test_target_data_are_never_used() -> None:
    """Imputing an observed track equals imputing it with the track hidden (leave-one-out).

    With ``num_samples`` >= bins every position is a training position, so no random draw can
    differ between the two sample-mark tables.
    """
    ds = simulate_epigenome("quick", n_cells=4, n_bins=2000, seed=5)
    target = ("cell001", "H3K27me3")
    imputer = ChromImputeImputer("quick", num_samples=2000).fit(ds)
    with_target = imputer.predict([target]).values
    without = imputer.predict([target], observed=hide_tracks(ds, [target])).values
    assert np.count_nonzero(with_target) > 1000
    np.testing.assert_array_equal(with_target, without)
    assert imputer.last_run.details["tool_seconds"]["Convert"] > 0  # a fresh workspace was built


@pytest.mark.tools
@needs_chromimpute
def test_target_without_training_cells_is_refused(simulated, fitted) -> None:
    others = [str(c) for c in simulated["cell"].values if c != "cell000"]
    lonely = hide_tracks(simulated, [(c, "H3K9me3") for c in others])
    with pytest.raises(ValueError, match="observed in no cell type other than cell000"):
        fitted.predict([("cell000", "H3K9me3")], observed=lonely)


def test_registered_and_configured() -> None:
    imputer = get_epigenome_imputer("chromimpute", preset="full", max_knn=5)
    assert isinstance(imputer, ChromImputeImputer)
    params = imputer.parameters()
    assert params["num_samples"] == 100_000 and params["window_wide"] == 400
    assert params["max_knn"] == 5 and params["preset"] == "full"
    with pytest.raises(ValueError, match="preset"):
        ChromImputeImputer("huge")
    with pytest.raises(ValueError, match="java_mem"):
        ChromImputeImputer(java_mem="lots")
    with pytest.raises(ValueError, match="window_wide"):
        ChromImputeImputer(window_wide=0)


# --------------------------------------------------------------------------- wig reader


def test_read_fixedstep_wig(tmp_path: Path) -> None:
    path = tmp_path / "x.wig.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("track type=wiggle_0 name=x\nfixedStep chrom=chr2 start=51 step=25 span=25\n"
                     "0.5\n1\n0\nfixedStep  chrom=chr1 start=1 step=25 span=25\n2.25\n")
    blocks = read_fixedstep_wig(path)
    start, step, values = blocks["chr2"]
    assert (start, step) == (50, 25)
    np.testing.assert_array_equal(values, [0.5, 1.0, 0.0])
    assert blocks["chr1"][0] == 0 and blocks["chr1"][2].tolist() == [2.25]


@pytest.mark.parametrize("text, message", [
    ("variableStep chrom=chr1\n1 2\n", "variableStep"),
    ("1.0\n", "before any fixedStep"),
    ("fixedStep chrom=chr1 start=1 step=25\nabc\n", "line 2"),
    ("fixedStep chrom=chr1 step=25\n1\n", "bad fixedStep"),
])
def test_read_fixedstep_wig_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.wig"
    path.write_text(text)
    with pytest.raises(InputFormatError, match=message):
        read_fixedstep_wig(path)


# --------------------------------------------------------------------------- failures


def tiny_dataset():
    signal = np.abs(np.random.default_rng(0).normal(size=(2, 2, 50))).astype(np.float32)
    return create_signal_dataset(signal, cells=["a", "b"], assays=["m1", "m2"])


def fake_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A ``java`` that answers ``Version`` like ChromImpute and runs ``body`` otherwise."""
    script = tmp_path / "bin" / "java"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = Version ] && "
                      "echo 'This is version 1.0.3 of ChromImpute' && exit 0; done\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    jar = tmp_path / "chromimpute.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(CHROMIMPUTE_JAR_ENV, str(jar))


def test_tool_failure_quotes_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_java(tmp_path, monkeypatch,
              "echo 'Exception in thread \"main\" java.lang.OutOfMemoryError: heap' >&2\nexit 1\n")
    imputer = ChromImputeImputer(workdir=tmp_path / "work")
    with pytest.raises(ExternalToolError, match="OutOfMemoryError"):
        imputer.fit(tiny_dataset())
    assert not list((tmp_path / "work").iterdir())  # the failed workspace is removed


def test_silent_tool_without_output_is_an_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake_java(tmp_path, monkeypatch, "echo 'WARNING input not found and not converted!' >&2\n")
    with pytest.raises(ExternalToolError, match="Convert exited without writing"):
        ChromImputeImputer(workdir=tmp_path / "work").fit(tiny_dataset())


def test_missing_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHROMIMPUTE_JAR_ENV, str(tmp_path / "absent.jar"))
    with pytest.raises(ToolNotFoundError, match="chromimpute"):
        find_chromimpute_jar()


def test_bins_off_the_grid_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_java(tmp_path, monkeypatch, "exit 0\n")
    ds = create_signal_dataset(np.ones((1, 1, 3)), cells=["a"], assays=["m"],
                               bin_start=np.array([10, 35, 60]))
    with pytest.raises(ValueError, match="multiples of bin_size"):
        ChromImputeImputer(workdir=tmp_path).fit(ds)
