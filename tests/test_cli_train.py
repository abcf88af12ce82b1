"""``analysislib train``: reference VCF -> autoencoder bundle, resume, and the panel-free workflow."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from analysislib.cli import TRAIN_RECORD_NAME, _typed_sites_flags, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCHS = ["--epochs", "20", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """A two-contig simulated panel (one LD tile per contig) and a target with one SNP in three."""
    import xarray as xr

    from analysislib.io.vcf import write_vcf
    from analysislib.simulate.genotypes import simulate_genotypes

    parts = [simulate_genotypes("quick", seed=seed, samples_per_population=8,
                                sequence_length=30_000).ds.compute() for seed in (1, 2)]
    parts[1]["variant_contig"] = xr.zeros_like(parts[1]["variant_contig"]) + 1
    panel = xr.concat(parts, dim="variants", data_vars="minimal", coords="minimal",
                      compat="override", join="override")
    panel.attrs = {**parts[0].attrs, "contigs": ["21", "22"]}
    panel.attrs.pop("contig_lengths", None)
    folder = tmp_path_factory.mktemp("train")
    write_vcf(panel, folder / "reference.vcf.gz")
    write_vcf(panel.isel(variants=slice(0, None, 3), samples=slice(0, 6)), folder / "target.vcf.gz")
    return {"reference": folder / "reference.vcf.gz", "target": folder / "target.vcf.gz",
            "n_variants": panel.sizes["variants"]}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _weights(bundle: Path) -> dict[str, object]:
    """sha256 of the packed ``weights.npy`` and every tile's tensors (a ``.pt`` file's bytes
    also hold the temporary name it was written under, so its checksum differs between runs)."""
    import torch

    manifest = json.loads((bundle / "manifest.json").read_text())
    weights: dict[str, object] = {"weights.npy": manifest["files"]["weights.npy"]}
    for tile in manifest["tiles"]:
        state = torch.load(bundle / tile["weights"], weights_only=True)
        weights[tile["weights"]] = {k: v.numpy().tobytes() for k, v in state.items()}
    return weights


@pytest.fixture(scope="module")
def trained(reference, tmp_path_factory) -> Path:
    """A bundle trained from start to end by one ``analysislib train`` command."""
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    assert main(["train", str(reference["reference"]), "--out", str(out), *EPOCHS]) == 0
    return out


def test_train_then_impute_is_the_panel_free_workflow(reference, trained, tmp_path, capsys):
    from analysislib.genotype.dae import load_bundle
    from analysislib.io.vcf import read_vcf

    bundle = load_bundle(trained)
    # the quick preset: two models over each variant, the second on offset tiles of its own
    assert list(bundle.tiles["contig"]) == ["21", "21", "22", "22"]
    assert bundle.manifest["training"]["models_per_tile"] == 2
    assert len(bundle.variants) == reference["n_variants"]
    record = json.loads((trained / TRAIN_RECORD_NAME).read_text())
    assert record["settings"]["preset"] == "quick" and record["settings"]["epochs"] == 20
    assert not (trained / "checkpoints").exists()
    out = tmp_path / "imputed.vcf.gz"
    assert main(["impute", "--models", str(trained), str(reference["target"]), str(out)]) == 0
    imputed = read_vcf(out)
    assert imputed.sizes["variants"] == reference["n_variants"] and imputed.sizes["samples"] == 6
    assert np.isfinite(imputed["call_dosage"].values).all()
    typed = read_vcf(reference["target"])
    at_typed = np.isin(imputed["variant_position"].values + 10**9 * imputed["variant_contig"].values,
                       typed["variant_position"].values + 10**9 * typed["variant_contig"].values)
    np.testing.assert_array_equal(imputed["call_genotype"].values[at_typed].sum(-1),
                                  typed["call_genotype"].values.sum(-1))


def test_interrupted_run_resumes_to_the_same_bundle(reference, trained, tmp_path, capsys):
    import shutil

    # The folder an interrupted run leaves: finished tiles (each written atomically; the quick
    # preset trains 2 models for each of the 2 LD tiles, stored as 4 tiles), the run
    # record, and no manifest or packed weights (they are written last).
    out = tmp_path / "bundle"
    shutil.copytree(trained, out)
    for name in ("manifest.json", "weights.npy"):
        (out / name).unlink()
    second = sorted((out / "tiles").glob("*.json"))[1]
    for path in (out / "tiles").glob(second.name.removesuffix(".json") + ".*"):
        path.unlink()
    kept = min((out / "tiles").glob("*.json"))
    kept_mtime = kept.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", str(reference["reference"]), "--out", str(out), *EPOCHS]) == 0
    captured = capsys.readouterr()
    assert "resuming the interrupted run" in captured.err and "3 of 4 tiles" in captured.err
    assert "1 trained, 3 kept from the interrupted run" in captured.out
    assert kept.stat().st_mtime_ns == kept_mtime  # the finished tile was not retrained
    assert _weights(out) == _weights(trained)


def test_finished_bundle_is_refused_unless_forced(reference, trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(trained, out)
    before = (out / "manifest.json").read_bytes()
    assert main(["train", str(reference["reference"]), "--out", str(out), *EPOCHS]) == 1
    assert "already holds a finished model bundle" in _one_error_line(capsys)
    assert (out / "manifest.json").read_bytes() == before
    assert main(["train", str(reference["reference"]), "--out", str(out), "--force", *EPOCHS]) == 0
    assert _weights(out) == _weights(trained)



def test_a_run_recorded_before_ensembles_resumes_as_one_model_per_tile(reference, trained, tmp_path, capsys):
    import json
    import shutil

    single = tmp_path / "single"
    one_model = [*EPOCHS, "--models-per-tile", "1"]
    assert main(["train", str(reference["reference"]), "--out", str(single), *one_model]) == 0
    out = tmp_path / "bundle"
    shutil.copytree(single, out)
    (out / "manifest.json").unlink()
    record = json.loads((out / "analysislib-train.json").read_text())
    assert record["settings"].pop("models_per_tile") == 1
    assert record["settings"].pop("unit") == "genotype"  # records before haplotype rows: genotype rows
    assert record["settings"].pop("ensemble_layout") == "offset"  # no layout with one model per tile
    (out / "analysislib-train.json").write_text(json.dumps(record))
    assert main(["train", str(reference["reference"]), "--out", str(out), *one_model]) == 0
    assert "resuming the interrupted run" in capsys.readouterr().err
    assert _weights(out) == _weights(single)

def test_interrupted_run_of_other_settings_is_refused(reference, trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(trained, out)
    (out / "manifest.json").unlink()
    args = ["train", str(reference["reference"]), "--out", str(out), "--no-progress"]
    assert main([*args, "--epochs", "21"]) == 1
    err = _one_error_line(capsys)
    assert str(out) in err and "interrupted run of other settings" in err and "epochs" in err
    assert main([*args, "--epochs", "20", "--seed", "1"]) == 1
    assert "(hparams.seed 0 there, 1 now)" in _one_error_line(capsys)
    other = tmp_path / "other.vcf.gz"
    shutil.copy(reference["target"], other)
    assert main(["train", str(other), "--out", str(out), "--epochs", "20"]) == 1
    assert "another reference" in _one_error_line(capsys)
    # a run of two models per tile recorded before the second moved to offset tiles
    record = json.loads((out / TRAIN_RECORD_NAME).read_text())
    record["settings"].pop("ensemble_layout")
    (out / TRAIN_RECORD_NAME).write_text(json.dumps(record))
    assert main([*args, "--epochs", "20"]) == 1
    assert "(ensemble_layout 'repeated' there, 'offset' now)" in _one_error_line(capsys)
    assert not (out / "manifest.json").exists()  # nothing was touched


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such reference VCF/BCF file"),
    ("garbage", "garbage.vcf"),
    ("header_only", "no variant records"),
    ("haploid", "genotypes are haploid"),
    ("preset", "unknown autoencoder preset 'fast'"),
    ("threads", "--threads must be at least 1"),
    ("jobs", "--jobs must be at least 1"),
    ("models", "--models-per-tile must be at least 1"),
    ("typed_fraction", "typed_fraction must be a number in (0, 1), got 1.5"),
    ("jobs_and_scheduler", "leave --jobs out"),
    ("not_empty", "holds no model bundle or interrupted training run"),
    ("foreign_tiles", "not started by `analysislib train`"),
    ("scheduler", "scheduler tcp://127.0.0.1:9: cannot connect"),
])
def test_bad_input_is_one_error_line(case, message, reference, tmp_path, capsys):
    import dask
    from test_bad_input_vcf import _bgzip, _vcf_text  # tests/ is on sys.path (rootdir conftest)

    source = str(reference["reference"])
    out = tmp_path / "bundle"
    extra: list[str] = []
    if case == "missing":
        source = str(tmp_path / "absent.vcf.gz")
    elif case == "garbage":
        source = str(tmp_path / "garbage.vcf")
        Path(source).write_text("this is not a VCF\n")
    elif case == "header_only":
        source = str(_bgzip(_vcf_text(n_variants=0), tmp_path / "empty.vcf.gz"))
    elif case == "haploid":
        source = str(_bgzip(_vcf_text(ploidy=1), tmp_path / "haploid.vcf.gz"))
    elif case == "not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "foreign_tiles":  # e.g. train_bundle() from Python, stopped before its manifest
        (out / "tiles").mkdir(parents=True)
        (out / "tiles" / "22_1-2.json").write_text("{}")
    else:
        extra = {"preset": ["--preset", "fast"], "threads": ["--threads", "0"],
                 "jobs": ["--jobs", "-1"], "models": ["--models-per-tile", "0"],
                 "typed_fraction": ["--typed-fraction", "1.5"], "scheduler": ["--scheduler", "tcp://127.0.0.1:9"],
                 "jobs_and_scheduler": ["--jobs", "2", "--scheduler", "tcp://127.0.0.1:9"]}[case]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["train", source, "--out", str(out), "--epochs", "1", *extra]) == 1
    err = _one_error_line(capsys)
    assert message in err
    if case in ("missing", "garbage", "header_only", "haploid"):
        assert source in err
    if case not in ("not_empty", "foreign_tiles"):
        assert not out.exists()  # nothing written on failure


def test_typed_fraction_sets_the_masking_curriculum_of_the_run(reference, tmp_path):
    out = tmp_path / "bundle"
    assert main(["train", str(reference["reference"]), "--out", str(out), "--typed-fraction", "0.25",
                 *EPOCHS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for tile in manifest["tiles"]:
        config = json.loads((out / tile["config"]).read_text())
        assert (config["hparams"]["min_mask"], config["hparams"]["max_mask"]) == (0.65, 0.8)
    record = json.loads((out / TRAIN_RECORD_NAME).read_text())
    assert record["settings"]["hparams"]["max_mask"] == 0.8


def test_typed_sites_train_for_the_targets_array(reference, tmp_path, capsys):
    """--typed-sites TARGETS: the tiles mask the targets' untyped sites first, the curriculum is
    centred on their share and the bundle records the sites; a file with none of the panel's
    sites is one error line."""
    out = tmp_path / "bundle"
    assert main(["train", str(reference["reference"]), "--out", str(out), "--typed-sites",
                 str(reference["target"]), *EPOCHS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    n_typed = len(range(0, reference["n_variants"], 3))
    assert sum(map(len, manifest["typed_sites"].values())) == n_typed
    record = json.loads((out / TRAIN_RECORD_NAME).read_text())
    assert record["settings"]["typed_sites"]["matched"] == n_typed
    share = 1 - n_typed / reference["n_variants"]  # masking_for_typed_fraction: u - 0.10 to u + 0.05
    assert record["settings"]["hparams"]["min_mask"] == pytest.approx(share - 0.10, abs=1e-4)
    for tile in manifest["tiles"]:
        config = json.loads((out / tile["config"]).read_text())
        assert config["training"]["untyped"]  # every tile has sites off the array
    imputed = tmp_path / "imputed.vcf.gz"
    assert main(["impute", "--models", str(out), str(reference["target"]), str(imputed)]) == 0
    assert "not among the" not in capsys.readouterr().err
    from analysislib.io.vcf import read_vcf, write_vcf

    panel = read_vcf(reference["reference"], fields=("GT",))
    other_array = tmp_path / "other_array.vcf.gz"  # the second site of every three
    write_vcf(panel.isel(variants=slice(1, None, 3), samples=slice(0, 6)), other_array)
    assert main(["impute", "--models", str(out), str(other_array), str(tmp_path / "no.vcf.gz")]) == 1
    err = _one_error_line(capsys)
    assert str(other_array) in err and "it was trained for another array" in err
    assert not (tmp_path / "no.vcf.gz").exists()
    sites_only = tmp_path / "sites_only.vcf"  # the target's first eight columns: no samples
    with gzip.open(reference["target"], "rt") as text:
        sites_only.write_text("".join("\t".join(line.rstrip("\n").split("\t")[:8]) + "\n"
                                      for line in text if not line.startswith("##FORMAT")))
    flags = _typed_sites_flags(panel, sites_only)
    assert flags.sum() == n_typed and np.array_equal(np.flatnonzero(flags), np.arange(0, reference["n_variants"], 3))
    elsewhere = tmp_path / "elsewhere.vcf"
    elsewhere.write_text("##fileformat=VCFv4.2\n##contig=<ID=5>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER"
                         "\tINFO\tFORMAT\tS1\n5\t100\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\n")
    assert main(["train", str(reference["reference"]), "--out", str(tmp_path / "x"), "--typed-sites",
                 str(elsewhere), *EPOCHS]) == 1
    err = _one_error_line(capsys)
    assert str(elsewhere) in err and "none of typed_sites is a site of the reference panel" in err


def test_unit_haplotype_trains_on_haplotype_rows_and_impute_follows(reference, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["train", str(reference["reference"]), "--out", str(out), "--unit", "haplotype",
                 *EPOCHS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unit"] == "haplotype"
    assert json.loads((out / TRAIN_RECORD_NAME).read_text())["settings"]["unit"] == "haplotype"
    config = json.loads((out / manifest["tiles"][0]["config"]).read_text())
    assert config["training"]["n_reference_samples"] == 2 * 24  # 24 samples, two rows each
    imputed = tmp_path / "imputed.vcf.gz"
    assert main(["impute", "--models", str(out), str(reference["target"]), str(imputed)]) == 0
    assert imputed.is_file() and "unphased" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(reference["reference"]), "--out", str(tmp_path / "x"), "--unit", "diplo"])
    assert "invalid choice: 'diplo'" in capsys.readouterr().err


def test_a_folder_being_trained_into_is_refused(reference, tmp_path, capsys):
    import fcntl

    out = tmp_path / "bundle"
    out.mkdir()
    with open(out / ".analysislib-train.lock", "a") as held:  # as a running `train` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["train", str(reference["reference"]), "--out", str(out), *EPOCHS]) == 1
    assert "another `analysislib train` is writing into this folder" in _one_error_line(capsys)
    assert not (out / TRAIN_RECORD_NAME).exists()


def test_readme_documents_the_two_command_workflow():
    import shlex

    from test_cli import readme_command_lines

    from analysislib.cli import build_parser
    from analysislib.genotype.dae import DAE_PRESETS

    lines = readme_command_lines()
    trains = [build_parser().parse_args(shlex.split(line)[1:]) for line in lines
              if line.split()[1] == "train"]
    assert trains, "the README shows no `analysislib train` line"
    bundles = {a.out.rstrip("/") for a in trains}
    assert all(a.preset in DAE_PRESETS for a in trains)
    imputes = [build_parser().parse_args(shlex.split(line)[1:]) for line in lines
               if line.split()[1] == "impute"]
    assert bundles & {a.models.rstrip("/") for a in imputes}, "impute does not use the trained bundle"


def test_scheduler_trains_the_same_bundle_on_a_dask_cluster(reference, trained, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")

    out = tmp_path / "bundle"
    # tcp on loopback: the inproc transport looks the machine's address up through the network
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert main(["train", str(reference["reference"]), "--out", str(out), *EPOCHS,
                     "--scheduler", cluster.scheduler_address]) == 0, capsys.readouterr().err
    assert _weights(out) == _weights(trained)
