"""Tests for analysislib.genotype.dae: bundles, many-tile training, variant mapping, inference.

Bundle format, the overlap rule, typed pass-through and variant mapping are checked with exact
values using a stand-in module whose output is fixed per tile (``TagModel``: tile ``k`` predicts
``P(ALT present) = tag_k``, ``P(REF present) = 1``, so every imputed dosage names the tile it
came from). Training, resume, the process pool, dask and the imputer run the real autoencoder on
a small simulated panel for a few epochs. Beagle comparisons are marked ``tools``.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from analysislib.cli import main
from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.genotype import autoencoder as ae
from analysislib.genotype import dae
from analysislib.genotype.dae import (
    DAE_PRESETS,
    BundleChecksumError,
    BundleError,
    DAEImputer,
    impute_dataset,
    impute_vcf,
    infer_genome_build,
    load_bundle,
    map_variants,
    normalise_contig,
    plan_stream,
    plan_tile_tasks,
    train_bundle,
    write_manifest,
    write_tile,
)
from analysislib.genotype.dae import fit as dae_fit
from analysislib.genotype.dae import inference as dae_inference
from analysislib.genotype.dae import streaming as dae_streaming
from analysislib.genotype.imputer import check_imputed
from analysislib.io.vcf import read_vcf, write_vcf
from analysislib.runtime import RunOptions
from analysislib.simulate.genotypes import simulate_genotypes
from analysislib.testing import genotype_dataset
from analysislib.tiling import variant_tiles

torch = pytest.importorskip("torch")
from analysislib.genotype.dae import model as dae_model  # imports torch

GRCH37_CHR22 = 51304566
GRCH38_CHR22 = 50818468


# ------------------------------------------------------------------------------------------
# A stand-in model with a known output per tile
# ------------------------------------------------------------------------------------------


class TagModel(torch.nn.Module):
    """Outputs a fixed allele-presence vector: REF present 1, ALT present ``tag``."""

    def __init__(self, n_variants: int, hparams: object = None) -> None:
        super().__init__()
        self.n_variants = n_variants
        self.bias = torch.nn.Parameter(torch.zeros(2 * n_variants))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def tag_model(n_variants: int, tag: float) -> TagModel:
    model = TagModel(n_variants)
    with torch.no_grad():
        model.bias[0::2] = 1.0
        model.bias[1::2] = tag
    return model


def variant_table(pos, ref, alt, chrom="22") -> pd.DataFrame:
    pos = np.asarray(pos)
    return pd.DataFrame({"chrom": chrom, "pos": pos, "id": [f"rs{p}" for p in pos],
                         "ref": list(ref), "alt": list(alt), "alt_freq": 0.25})


# 12 variants on contig 22; three overlapping tiles.
POS = np.arange(1, 13) * 100
REF = list("ACGTACGTACGC")
ALT = list("GTACTGCAGTAA")   # variants 4 (A/T), 5 (C/G), 6 (G/C), 7 (T/A) are strand-ambiguous
TILES = [(0, 5), (3, 9), (8, 11)]
TAGS = [0.1, 0.2, 0.3]


@pytest.fixture
def tag_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(dae_model, "SparseDenoisingAutoencoder", TagModel)
    out = tmp_path / "bundle"
    hp = ae.DAEHyperparameters()
    entries = [write_tile(out, f"t{k}", tag_model(b - a + 1, tag), hp,
                          variant_table(POS[a:b + 1], REF[a:b + 1], ALT[a:b + 1]))
               for k, ((a, b), tag) in enumerate(zip(TILES, TAGS, strict=True))]
    write_manifest(out, entries, training_data={"n_samples": 7}, contig_lengths={"22": GRCH37_CHR22})
    return out


def target(pos, ref, alt, gt, *, contig="22", lengths=None, phased=None) -> xr.Dataset:
    gt = np.asarray(gt, dtype=np.int8)
    attrs = {"source": "target.vcf.gz"}
    if lengths is not None:
        attrs["contig_lengths"] = [lengths]
    alleles = np.array([list(ref), list(alt)], dtype=object).T
    return genotype_dataset(gt, positions=pos, contigs=[contig], alleles=alleles, variant_ids=None,
                            phased=phased, attrs=attrs)


# ------------------------------------------------------------------------------------------
# Names, builds and scheduling
# ------------------------------------------------------------------------------------------


def test_contig_names_are_normalised():
    assert [normalise_contig(c) for c in ("chr22", "22", "CHRX", "chrM", "MT", "chr1_random")] == \
        ["22", "22", "X", "M", "M", "1_RANDOM"]


def test_genome_build_from_contig_lengths():
    assert infer_genome_build(["22"], [GRCH37_CHR22]) == "GRCh37"
    assert infer_genome_build(["chr22", "chrX"], [GRCH38_CHR22, 156040895]) == "GRCh38"
    assert infer_genome_build(["22", "X"], [GRCH37_CHR22, 156040895]) is None  # mixed
    assert infer_genome_build(["22"], [12345]) is None
    assert infer_genome_build(["22"], None) is None


def test_plan_tile_tasks_balances_cost_with_a_capacity():
    # LPT by hand: 9->A, 8->B, 4->C, 4->C (C full), 2->B (B full), 1->A; loads 10, 10, 8.
    assert plan_tile_tasks([9, 1, 4, 4, 2, 8], n_workers=1, tiles_per_task=2) == [[0, 1], [4, 5], [2, 3]]
    # default: about four tasks per worker, at least one tile each, biggest first
    assert plan_tile_tasks([9, 1, 4, 4, 2, 8], n_workers=2) == [[0], [5], [2], [3], [4], [1]]
    tasks = plan_tile_tasks(np.arange(50) % 7 + 1.0, n_workers=3, tiles_per_task=5)
    assert sorted(i for t in tasks for i in t) == list(range(50))
    assert all(len(t) <= 5 for t in tasks) and len(tasks) == 10
    assert plan_tile_tasks([], 4) == []


def test_threads_go_to_tiles_only_when_tiles_are_large():
    assert dae_inference._thread_split(None, [1e9]) == (1, None)
    assert dae_inference._thread_split(1, [1e9] * 4) == (1, 1)
    assert dae_inference._thread_split(4, [1e5] * 10) == (1, 1)      # overhead-bound small tiles
    assert dae_inference._thread_split(4, [1e9] * 10) == (4, 1)      # four tiles at a time
    assert dae_inference._thread_split(4, [1e9] * 2) == (2, 2)       # two tiles, two torch threads each
    with pytest.raises(ValueError, match="at least 1"):
        dae_inference._thread_split(0, [1e9])


# ------------------------------------------------------------------------------------------
# The bundle format
# ------------------------------------------------------------------------------------------


def test_bundle_files_manifest_and_checksums(tag_bundle: Path):
    manifest = json.loads((tag_bundle / "manifest.json").read_text())
    assert manifest["format"] == "analysislib-dae-bundle" and manifest["format_version"] == 1
    assert manifest["genome_build"] == "GRCh37" and manifest["contigs"] == ["22"]
    assert manifest["training_data"] == {"n_samples": 7}
    assert manifest["overlap_rule"] == dae.OVERLAP_RULE
    assert [t["id"] for t in manifest["tiles"]] == ["t0", "t1", "t2"]
    assert len(manifest["files"]) == 9
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((tag_bundle / rel).read_bytes()).hexdigest() == digest
    config = json.loads((tag_bundle / "tiles/t1.json").read_text())
    assert config["hparams"] == ae.DAEHyperparameters().to_dict()
    assert config["n_variants"] == 7 and config["first_position"] == 400 and config["last_position"] == 1000
    lines = (tag_bundle / "tiles/t1.variants.tsv").read_text().splitlines()
    assert lines[0] == "chrom\tpos\tid\tref\talt\talt_freq"
    assert lines[1] == "22\t400\trs400\tT\tC\t0.25"


def test_bundle_variants_follow_the_overlap_rule(tag_bundle: Path, tmp_path: Path):
    bundle = load_bundle(tag_bundle)
    assert bundle.variants["pos"].tolist() == POS.tolist()
    assert bundle.variants["n_tiles"].tolist() == [1, 1, 1, 2, 2, 2, 1, 1, 2, 2, 1, 1]
    tiles = pd.DataFrame({"tile": [0, 1, 2], "first_variant": [a for a, _ in TILES],
                          "last_variant": [b for _, b in TILES]})
    expected = variant_tiles(tiles, len(POS))
    expected = expected[expected["primary"]].set_index("variant")["tile"]
    assert bundle.variants["tile"].tolist() == expected.tolist()
    assert [m.tolist() for m in bundle.members] == [list(range(a, b + 1)) for a, b in TILES]
    empty = target([50], ["A"], ["C"], np.zeros((1, 2, 2)))
    with pytest.raises(InputFormatError, match="no input variant overlaps"):
        impute_dataset(bundle, empty)
    # One typed variant. Every other dosage is its tiles' ALT presence ("tag"), averaged with
    # weights 1 + edge distance: variant 3 is t0's 4th of 6 (edge 2) and t1's 1st (edge 0), so
    # (3 * 0.1 + 1 * 0.2) / 4; variant 8 is t1's 6th of 7 (edge 1) and t2's 1st (edge 0).
    one = target([100], ["A"], ["G"], [[[0, 1], [1, 1]]])
    imputed = impute_dataset(bundle, one)
    dosage = imputed["call_dosage"].values
    mixed = [0.1, 0.1, 0.1, 0.5 / 4, 0.6 / 4, 0.7 / 4, 0.2, 0.2, 0.7 / 3, 0.8 / 3, 0.3, 0.3]
    np.testing.assert_allclose(dosage[1:], np.repeat(np.array(mixed)[1:, None], 2, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(dosage[0], [1, 2])
    weights = bundle.overlap_weights()
    np.testing.assert_allclose(weights[0], [1, 1, 1, 3 / 4, 2 / 4, 1 / 4], rtol=1e-6)
    np.testing.assert_allclose(np.bincount(np.concatenate(bundle.members), np.concatenate(weights)), 1, rtol=1e-6)
    # The streamed writer sums the same tiles with the same weights, also when a chunk ends
    # inside an overlap (variants 3-5 and 8-9).
    write_vcf(one, tmp_path / "one.vcf")
    write_vcf(imputed, tmp_path / "memory.vcf", fields=("GT", "DS", "GP"))
    for genotypes in (2, 5, 10**6):
        report = impute_vcf(bundle, tmp_path / "one.vcf", tmp_path / "out.vcf", chunk_genotypes=genotypes)
        assert (tmp_path / "out.vcf").read_bytes() == (tmp_path / "memory.vcf").read_bytes(), genotypes
    assert len(report.plan.chunks) == 1 and len(impute_vcf(
        bundle, tmp_path / "one.vcf", tmp_path / "out.vcf", chunk_genotypes=2).plan.chunks) == 3


def test_load_bundle_reports_missing_and_corrupt_files(tag_bundle: Path, tmp_path: Path):
    with pytest.raises(BundleError, match="no such model bundle"):
        load_bundle(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tag_bundle, broken)
    weights = broken / "tiles/t1.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    expected = json.loads((broken / "manifest.json").read_text())["files"]["tiles/t1.pt"]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleChecksumError) as err:
        load_bundle(broken)
    assert str(weights) in str(err.value) and expected in str(err.value) and actual in str(err.value)
    # without verification the bundle opens, and a truncated tile fails when its model loads
    weights.write_bytes(bytes(data[: len(data) // 2]))
    bundle = load_bundle(broken, verify=False)
    with pytest.raises(BundleError, match=r"t1\.pt: unreadable tile weights"):
        bundle.load_model(1)
    (broken / "tiles/t2.variants.tsv").unlink()
    with pytest.raises(BundleError, match=r"t2\.variants\.tsv.*incomplete bundle"):
        load_bundle(broken, verify=False)
    (broken / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing.*interrupted"):
        load_bundle(broken)


def test_load_bundle_rejects_other_versions_and_bad_tables(tag_bundle: Path):
    manifest = json.loads((tag_bundle / "manifest.json").read_text())
    table = tag_bundle / "tiles/t0.variants.tsv"
    table.write_text(table.read_text().replace("22\t300\trs300\tG\tA\t0.25", "22\t300\trs300\tG"))
    with pytest.raises(BundleError, match=r"t0\.variants\.tsv: line 4: 4 columns, expected 6"):
        load_bundle(tag_bundle, verify=False)
    manifest["format_version"] = 99
    (tag_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(tag_bundle)


# ------------------------------------------------------------------------------------------
# Variant mapping
# ------------------------------------------------------------------------------------------


def test_map_variants_recodes_flips_and_reports_every_case(tag_bundle: Path):
    bundle = load_bundle(tag_bundle)
    # bundle: 100 A/G, 200 C/T, 300 G/A, 400 T/C, 500 A/T, 600 C/G, 700 G/C, 800 T/A, 900 A/G,
    #         1000 C/T, 1100 G/A, 1200 C/A
    rows = [
        (100, "A", "G"),   # exact
        (200, "T", "C"),   # allele flip
        (300, "C", "T"),   # strand flip (G/A complemented)
        (400, "G", "A"),   # strand + allele flip (T/C -> A/G, swapped)
        (500, "A", "T"),   # ambiguous, as written
        (600, "G", "C"),   # ambiguous, swapped
        (900, "A", "C"),   # allele mismatch
        (1000, "C", "."),  # monomorphic in the input: matched on REF
        (1150, "A", "G"),  # no bundle variant there
    ]
    pos, ref, alt = zip(*rows, strict=True)
    ds = target(pos, ref, alt, np.zeros((len(rows), 1, 2)), contig="chr22")
    mapping = map_variants(bundle, ds)
    c = mapping.counts
    assert (c["exact"], c["allele_flip"], c["strand_flip"], c["strand_allele_flip"]) == (1, 1, 1, 1)
    assert (c["ambiguous"], c["ambiguous_flip"], c["ambiguous_dropped"]) == (1, 1, 0)
    assert (c["allele_mismatch"], c["monomorphic"], c["not_in_bundle"], c["other_contig"]) == (1, 1, 1, 0)
    assert (c["input"], c["used"], c["bundle"]) == (9, 7, 12)
    assert mapping.input_index.tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert mapping.bundle_index.tolist() == [0, 1, 2, 3, 4, 5, 9]
    assert mapping.flip.tolist() == [False, True, False, True, False, True, False]
    assert mapping.contig_map == {"chr22": "22"}
    text = mapping.summary()
    assert "7 of 9 input variants" in text and "'chr22' read as bundle contig '22'" in text
    assert "strand-ambiguous (A/T, C/G) SNPs: 2 used as written, 0 dropped" in text
    dropped = map_variants(bundle, ds, strand_ambiguous="drop")
    assert dropped.counts["ambiguous_dropped"] == 2 and dropped.counts["used"] == 5
    assert 4 not in dropped.input_index and 5 not in dropped.input_index


def test_impute_passes_typed_genotypes_through_recoded(tag_bundle: Path):
    bundle = load_bundle(tag_bundle)
    # 200 as T/C (flipped), 400 as G/A (strand + allele flip), 700 as given; sample 1 misses 700
    gt = [[[0, 1], [1, 1]], [[0, 0], [1, 0]], [[1, 1], [-1, -1]]]
    phased = np.array([[True, False], [True, True], [False, False]])
    ds = target([200, 400, 700], ["T", "G", "G"], ["C", "A", "C"], gt, phased=phased)
    out = impute_dataset(bundle, ds, threads=1)
    assert out.attrs["contigs"] == ["22"] and out.sizes["variants"] == 12
    genotype = out["call_genotype"].values
    np.testing.assert_array_equal(genotype[1], [[1, 0], [0, 0]])   # 0|1 -> 1|0, 1/1 -> 0/0
    np.testing.assert_array_equal(genotype[3], [[1, 1], [0, 1]])   # 0/0 -> 1/1, 1|0 -> 0|1
    np.testing.assert_array_equal(genotype[6, 0], [1, 1])
    np.testing.assert_array_equal(out["call_genotype_phased"].values[[1, 3, 6]],
                                  [[True, False], [True, True], [False, False]])
    gp = out["call_genotype_probability"].values
    np.testing.assert_array_equal(gp[1], [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out["call_dosage"].values[[1, 3]], [[1, 0], [2, 1]])
    # the missing call at 700 is imputed by its only tile (t1, tag 0.2): GP (0.8, 0.2, 0)
    np.testing.assert_allclose(gp[6, 1], [0.8, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(genotype[6, 1], [0, 0])
    np.testing.assert_allclose(gp.sum(-1), 1, rtol=1e-6)
    np.testing.assert_allclose(out["call_dosage"].values, gp[..., 1] + 2 * gp[..., 2], rtol=1e-6)
    assert json.loads(out.attrs["variant_mapping"])["counts"]["used"] == 3


def test_bad_inputs_get_clear_errors(tag_bundle: Path):
    bundle = load_bundle(tag_bundle)
    gt = np.zeros((1, 1, 2))
    with pytest.raises(InputFormatError, match=r"target\.vcf\.gz: no input contig matches.*has 1; the bundle has 22"):
        map_variants(bundle, target([100], "A", "G", gt, contig="1"))
    with pytest.raises(InputFormatError, match=r"length 50818468 \(GRCh38\).*51304566 \(GRCh37\)"):
        map_variants(bundle, target([100], "A", "G", gt, contig="chr22", lengths=GRCH38_CHR22))
    # every bundle position twice, with alleles that fit neither orientation nor strand
    alleles = [a + "C" for a in REF]
    with pytest.raises(InputFormatError, match=r"alleles differ at 24 of 24 positions.*another genome build"):
        map_variants(bundle, target(np.repeat(POS, 2), np.repeat(REF, 2), np.repeat(alleles, 2),
                                    np.zeros((24, 1, 2))))
    with pytest.raises(InputFormatError, match=r"no input variant overlaps the model bundle.*22:100-1200"):
        map_variants(bundle, target([150], "A", "G", gt))


def test_only_contigs_in_the_input_are_imputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dae_model, "SparseDenoisingAutoencoder", TagModel)
    hp = ae.DAEHyperparameters()
    entries = [write_tile(tmp_path, f"c{c}", tag_model(4, 0.1), hp,
                          variant_table([10, 20, 30, 40], "ACGT", "GTAC", chrom=c)) for c in ("21", "22")]
    write_manifest(tmp_path, entries, contigs=["21", "22"])
    out = impute_dataset(tmp_path, target([20], ["C"], ["T"], [[[0, 1]]], contig="chr22"))
    assert out.attrs["contigs"] == ["chr22"] and out["variant_position"].values.tolist() == [10, 20, 30, 40]
    assert out.attrs["tiles_imputed"] == 1 and out.attrs["tiles_without_typed_variants"] == 0


# ------------------------------------------------------------------------------------------
# VCF to VCF and the command line
# ------------------------------------------------------------------------------------------


def test_impute_vcf_writes_indexed_gt_ds_gp(tag_bundle: Path, tmp_path: Path):
    ds = target([100, 400], ["A", "T"], ["G", "C"], [[[0, 1], [1, 1]], [[0, 0], [0, 1]]], contig="chr22")
    write_vcf(ds, tmp_path / "in.vcf.gz")
    report = impute_vcf(tag_bundle, tmp_path / "in.vcf.gz", tmp_path / "out.vcf.gz", threads=2)
    assert report.n_variants == 12 and report.n_samples == 2 and report.n_tiles == 3
    assert report.mapping.counts["exact"] == 2 and set(report.seconds) >= {"read", "impute", "write", "total"}
    assert (tmp_path / "out.vcf.gz.tbi").exists()
    back = read_vcf(tmp_path / "out.vcf.gz")
    assert back.attrs["contigs"][0] == "chr22"
    np.testing.assert_array_equal(back["call_genotype"].values[[0, 3]], [[[0, 1], [1, 1]], [[0, 0], [0, 1]]])
    np.testing.assert_allclose(back["call_genotype_probability"].values.sum(-1), 1, atol=2e-3)
    np.testing.assert_allclose(back["call_dosage"].values[1], [0.1, 0.1], atol=1e-3)


def test_cli_impute_prints_the_report_and_errors_in_one_line(tag_bundle: Path, tmp_path: Path, capsys):
    ds = target([100], ["A"], ["G"], [[[0, 1]]], contig="chr22")
    write_vcf(ds, tmp_path / "in.vcf.gz")
    assert main(["impute", "--models", str(tag_bundle), str(tmp_path / "in.vcf.gz"),
                 str(tmp_path / "out.vcf.gz"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "12 variants x 1 samples from 3 tiles" in out and "read as bundle contig '22'" in out
    (tag_bundle / "tiles/t0.json").write_text("{}")
    assert main(["impute", "--models", str(tag_bundle), str(tmp_path / "in.vcf.gz"),
                 str(tmp_path / "out2.vcf.gz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "t0.json" in err and "sha256" in err
    assert not (tmp_path / "out2.vcf.gz").exists()


# ------------------------------------------------------------------------------------------
# Training bundles with the real autoencoder
# ------------------------------------------------------------------------------------------

FAST = ae.DAEHyperparameters(n_layers=2, size_ratio=0.5, batch_size=64, cycle_epochs=2, seed=5)


@pytest.fixture(scope="module")
def panel() -> xr.Dataset:
    return simulate_genotypes("quick", seed=4, samples_per_population=12, sequence_length=60_000).ds.compute()


def tile_table(n_variants: int) -> pd.DataFrame:
    bounds = np.linspace(0, n_variants - 1, 4).astype(int)
    first = [0, bounds[1] - 5, bounds[2] - 5]
    last = [bounds[1] + 5, bounds[2] + 5, n_variants - 1]
    return pd.DataFrame({"tile": [0, 1, 2], "first_variant": first, "last_variant": last})


def test_train_bundle_writes_every_tile_and_resumes(panel: xr.Dataset, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    tiles = tile_table(panel.sizes["variants"])
    out = tmp_path / "bundle"
    bundle = train_bundle(panel, tiles, FAST, out, epochs=3, options=RunOptions(progress=False))
    assert len(bundle.tiles) == 3 and len(bundle.variants) == panel.sizes["variants"]
    assert bundle.training_data["n_samples"] == panel.sizes["samples"]
    assert bundle.training_data["populations"] == {"CEU": 12, "CHB": 12, "YRI": 12}
    config = bundle.tile_config(0)
    assert config["hparams"] == FAST.to_dict() and config["training"]["epochs_requested"] == 3
    assert config["training"]["epochs_completed"] == 3
    assert not (out / "checkpoints").exists()
    freq = panel["call_genotype"].values.mean(axis=(1, 2))
    np.testing.assert_allclose(bundle.variants["alt_freq"], freq, atol=1e-6)
    # the shared-skeleton fast path gives the module's numbers
    x = np.random.default_rng(0).integers(0, 2, (5, 2 * int(bundle.tiles["n_variants"].iat[2]))).astype(np.float32)
    with torch.inference_mode():
        expected = bundle.load_model(2)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(bundle.predict(2, x), expected, rtol=1e-6, atol=1e-7)

    calls: list[int] = []
    real_train = dae_fit.train_tile

    def counting_train(genotypes, *args, **kwargs):
        calls.append(genotypes.shape[0])
        return real_train(genotypes, *args, **kwargs)

    monkeypatch.setattr(dae_fit, "train_tile", counting_train)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "tiles").iterdir()}
    again = train_bundle(panel, tiles, FAST, out, epochs=3, options=RunOptions(progress=False))
    assert calls == [] and {p.name: p.stat().st_mtime_ns for p in (out / "tiles").iterdir()} == stamps
    assert again.manifest["training"]["tiles_reused"] == 3
    (out / bundle.tiles["config"].iat[1]).unlink()  # as if interrupted while writing tile 1
    train_bundle(panel, tiles, FAST, out, epochs=3, options=RunOptions(progress=False))
    assert calls == [int(bundle.tiles["n_variants"].iat[1])]
    # a tile written before a hyperparameter field existed is reused (the field at its default)
    config_path = out / bundle.tiles["config"].iat[0]
    config = json.loads(config_path.read_text())
    del config["hparams"]["deduplicate"]
    config_path.write_text(json.dumps(config))
    calls.clear()
    train_bundle(panel, tiles, FAST, out, epochs=3, options=RunOptions(progress=False))
    assert calls == []
    with pytest.raises(BundleError, match="other hyperparameters, epochs"):
        train_bundle(panel, tiles, FAST.replace(learning_rate=0.01), out, epochs=3, options=RunOptions(progress=False))
    with pytest.raises(ValueError, match="no hyperparameters for tile"):
        train_bundle(panel, tiles, {0: FAST, 1: FAST}, tmp_path / "other", epochs=3, options=RunOptions(progress=False))



def test_haplotype_rows_train_twice_the_rows_and_impute_each_haplotype(
        panel: xr.Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from analysislib.genotype.encoding import haplotype_rows

    tiles = tile_table(panel.sizes["variants"])
    quiet = RunOptions(progress=False)
    bundle = train_bundle(panel, tiles, FAST, tmp_path / "hap", epochs=2, unit="haplotype", options=quiet)
    assert bundle.unit == "haplotype" and bundle.tile_config(0)["training"]["unit"] == "haplotype"
    assert bundle.tile_config(0)["training"]["n_reference_samples"] == 2 * panel.sizes["samples"]
    with pytest.raises(BundleError, match="training rows"):  # no resuming with other rows
        train_bundle(panel, tiles, FAST, tmp_path / "hap", epochs=2, options=quiet)
    with pytest.raises(ValueError, match="unit must be one of"):
        train_bundle(panel, tiles, FAST, tmp_path / "other", unit="diplotype", options=quiet)
    unphased_panel = panel.copy(deep=True)
    unphased_panel["call_genotype_phased"].values[:] = False
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        train_bundle(unphased_panel, tiles.iloc[:1], FAST, tmp_path / "unphased", epochs=1, unit="haplotype",
                     options=quiet)
    assert "training on haplotype rows reads them as phased" in caplog.text
    caplog.clear()

    typed = panel.isel(variants=slice(0, None, 3))
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        imputed = impute_dataset(bundle, typed)
    assert not caplog.records  # phased targets are read silently
    # The same weights read as a genotype-row bundle, run on each haplotype as a pseudo-sample:
    # a sample's probabilities are the products of its haplotypes' ALT probabilities (half of
    # each row's dosage).
    as_genotypes = load_bundle(bundle.path)
    as_genotypes.manifest["unit"] = "genotype"
    pseudo = typed.isel(samples=np.repeat(np.arange(typed.sizes["samples"]), 2)).copy()
    pseudo["call_genotype"] = (pseudo["call_genotype"].dims, haplotype_rows(typed["call_genotype"].values))
    pseudo["sample_id"] = ("samples", np.arange(pseudo.sizes["samples"]).astype(str).astype(object))
    rows = impute_dataset(as_genotypes, pseudo)["call_genotype_probability"].values.astype(np.float64)
    alt = rows[..., 1] / 2 + rows[..., 2]  # half of each haplotype row's dosage
    a, b = alt[:, 0::2], alt[:, 1::2]
    expected = np.stack([(1 - a) * (1 - b), a * (1 - b) + (1 - a) * b, a * b], axis=2)
    untyped = np.ones(panel.sizes["variants"], dtype=bool)
    untyped[::3] = False
    np.testing.assert_allclose(imputed["call_genotype_probability"].values[untyped], expected[untyped],
                               atol=2e-6)
    # streamed: the same text as the in-memory result
    write_vcf(typed, tmp_path / "in.vcf.gz")
    typed_read = read_vcf(tmp_path / "in.vcf.gz", multiallelic="split", fields=("GT",))
    write_vcf(impute_dataset(bundle, typed_read), tmp_path / "memory.vcf", fields=("GT", "DS", "GP"))
    impute_vcf(bundle.path, tmp_path / "in.vcf.gz", tmp_path / "streamed.vcf")
    assert (tmp_path / "streamed.vcf").read_bytes() == (tmp_path / "memory.vcf").read_bytes()
    # unphased heterozygous typed calls are read in the order given, with a warning
    unphased = typed.copy(deep=True)
    unphased["call_genotype_phased"].values[:] = False
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        impute_dataset(bundle, unphased)
    assert "heterozygous calls of" in caplog.text and "are unphased" in caplog.text


def test_a_bundle_trained_for_typed_sites_reads_only_those(
        panel: xr.Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """train_bundle(typed_sites=...) masks the other sites first, records the sites, refuses to
    resume with other sites, and inference keeps target calls elsewhere out of the inputs."""
    n = panel.sizes["variants"]
    typed = np.arange(n) % 3 == 0
    tiles = tile_table(n)
    quiet = RunOptions(progress=False)
    bundle = train_bundle(panel, tiles, FAST, tmp_path / "array", epochs=2, typed_sites=typed, options=quiet)
    np.testing.assert_array_equal(bundle.typed_sites, typed)
    assert sum(map(len, bundle.manifest["typed_sites"].values())) == typed.sum()
    first = int(tiles["first_variant"][1])
    untyped = bundle.tile_config(1)["training"]["untyped"]
    assert untyped == np.flatnonzero(~typed[first:int(tiles["last_variant"][1]) + 1]).tolist()
    assert load_bundle(bundle.path).typed_sites is not None
    # the same sites as a Dataset or as (contig, position) pairs; none of the panel's: refused
    from analysislib.genotype.dae.contigs import _contig_names
    from analysislib.genotype.dae.plan import _typed_flags

    as_pairs = list(zip(_contig_names(panel)[typed], panel["variant_position"].values[typed], strict=True))

    np.testing.assert_array_equal(_typed_flags(panel, panel.isel(variants=typed)), typed)
    np.testing.assert_array_equal(_typed_flags(panel, as_pairs), typed)
    with pytest.raises(InvalidArgumentError, match="none of typed_sites is a site of the reference"):
        _typed_flags(panel, [("chrX", 5)])
    with pytest.raises(InvalidArgumentError, match="one value per reference variant"):
        _typed_flags(panel, typed[:5])
    with pytest.raises(BundleError, match="typed sites"):  # no resuming with other sites
        train_bundle(panel, tiles, FAST, tmp_path / "array", epochs=2, typed_sites=~typed, options=quiet)
    assert train_bundle(panel, tiles, FAST, tmp_path / "any", epochs=1, options=quiet).typed_sites is None

    # Targets typing one more site than the array: its calls stay in the output but are not read.
    on_array = panel.isel(variants=np.flatnonzero(typed))
    extra = int(np.flatnonzero(~typed)[4])
    more = panel.isel(variants=np.flatnonzero(typed | (np.arange(n) == extra)))
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        expected = impute_dataset(bundle, on_array)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        got = impute_dataset(bundle, more)
    assert "1 of the" in caplog.text and "not among the" in caplog.text
    np.testing.assert_array_equal(got["call_genotype"].values[extra], panel["call_genotype"].values[extra])
    others = np.arange(n) != extra
    np.testing.assert_allclose(got["call_genotype_probability"].values[others],  # summation order aside
                               expected["call_genotype_probability"].values[others], atol=1e-6)
    # streamed: the same
    write_vcf(more, tmp_path / "more.vcf.gz")
    write_vcf(impute_dataset(bundle, read_vcf(tmp_path / "more.vcf.gz", multiallelic="split", fields=("GT",))),
              tmp_path / "memory.vcf", fields=("GT", "DS", "GP"))
    impute_vcf(bundle.path, tmp_path / "more.vcf.gz", tmp_path / "streamed.vcf")
    assert (tmp_path / "streamed.vcf").read_bytes() == (tmp_path / "memory.vcf").read_bytes()
    # a region of the array: silent; a fifth of its sites missing: warned; most of them: refused
    caplog.clear()
    on_sites = np.flatnonzero(typed)
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        impute_dataset(bundle, panel.isel(variants=on_sites[:20]))
    assert not caplog.records
    with caplog.at_level("WARNING", logger="analysislib.genotype"):
        impute_dataset(bundle, panel.isel(variants=on_sites[np.arange(len(on_sites)) % 5 != 2]))
    assert "sites (in its span) that this bundle was trained to read, so it imputes less accurately" in caplog.text
    with pytest.raises(InputFormatError, match="it was trained for another array"):
        impute_dataset(bundle, panel.isel(variants=np.flatnonzero(np.arange(n) % 3 == 1)))


def test_dae_imputer_trained_for_typed_sites_centres_the_curriculum_unless_told_otherwise(
        panel: xr.Dataset, monkeypatch: pytest.MonkeyPatch):
    from analysislib.genotype.dae import imputer as dae_imputer
    from analysislib.genotype.dae.hyperparameters import masking_for_typed_fraction

    def stop(reference, tiling, hparams, folder, **kwargs):
        raise _Stop(hparams, kwargs["typed_sites"])

    monkeypatch.setattr(dae_imputer, "train_bundle", stop)
    typed = np.arange(panel.sizes["variants"]) % 4 == 0
    for settings, expected in [({}, masking_for_typed_fraction(float(typed.mean()))),
                               ({"typed_fraction": 0.5}, masking_for_typed_fraction(0.5)),
                               ({"hparams": {"max_mask": 0.6}}, {"min_mask": 0.5, "max_mask": 0.6})]:
        imputer = DAEImputer(typed_sites=panel.isel(variants=typed), progress=False, **settings)
        with pytest.raises(_Stop) as stopped:
            imputer.fit(panel)
        hparams, flags = stopped.value.args
        assert {k: hparams[k] for k in ("min_mask", "max_mask")} == expected
        np.testing.assert_array_equal(flags, typed)
        assert imputer.parameters()["typed_sites"] == typed.sum()


class _Stop(Exception):
    """Ends a call once the value under test has arrived (no training)."""


def test_train_bundle_takes_n_jobs_and_threads_per_job_for_one_release(panel: xr.Dataset, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    from analysislib.genotype.dae import plan as dae_plan

    seen = {}

    def no_training(function, payloads, *, jobs, client, window):
        seen.update(jobs=jobs, threads=next(iter(payloads))["options"].threads)
        raise _Stop

    monkeypatch.setattr(dae_plan, "run_tasks", no_training)
    with pytest.warns(FutureWarning) as warned, pytest.raises(_Stop):
        train_bundle(panel, tile_table(panel.sizes["variants"]), FAST, tmp_path / "bundle", epochs=1,
                     n_jobs=2, threads_per_job=3, progress=False)
    assert seen == {"jobs": 2, "threads": 3}
    messages = " ".join(str(w.message) for w in warned)
    assert "'n_jobs' is now called 'jobs'" in messages
    assert "'threads_per_job' is now called 'threads'" in messages


def test_dae_imputer_takes_n_jobs_for_one_release():
    with pytest.warns(FutureWarning, match="'n_jobs' is now called 'jobs'"):
        imputer = DAEImputer(n_jobs=3)
    assert imputer.jobs == 3 and imputer.parameters()["jobs"] == 3


def _spans(*columns: np.ndarray) -> list[tuple[int, ...]]:
    return list(zip(*(c.tolist() for c in columns), strict=True))


def test_offset_tiles_move_each_model_s_edges_inside_the_others():
    from analysislib.genotype.dae import offset_tiles

    # two contigs: tiles 0-39, 30-69, 60-99 on the first, 100-149 on the second
    contigs = np.array([0] * 100 + [1] * 50)
    first, last = np.array([0, 30, 60, 100]), np.array([39, 69, 99, 149])
    a, b, rows, models = offset_tiles(first, last, contigs, 1)
    assert a.tolist() == first.tolist() and b.tolist() == last.tolist() and models.tolist() == [1] * 4
    a, b, rows, models = offset_tiles(first, last, contigs, 2)
    # ordered by input tile, then model; model 2 cuts at mid-tile (0+20, 30+20, 60+20), from the
    # contig's first variant to its last, never across contigs
    assert rows.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and models.tolist() == [1, 2] * 4
    assert _spans(a[models == 2], b[models == 2]) == [(0, 49), (50, 79), (80, 99), (100, 149)]
    a, b, rows, models = offset_tiles(first, last, contigs, 3)
    third = _spans(a[models == 3], b[models == 3])
    assert third == [(0, 55), (56, 85), (86, 99), (100, 149)]  # cuts at 2/3 of each tile
    for k in (2, 3):  # every model covers every tiled variant exactly once here
        covered = np.concatenate([np.arange(x, y + 1) for x, y in _spans(a[models == k], b[models == k])])
        assert np.array_equal(np.sort(covered), np.arange(150))
    # a cut that would go backwards (a short tile nested in a long one) stays at the one before it;
    # a tile left empty is dropped
    a, b, _, models = offset_tiles(np.array([0, 5]), np.array([99, 9]), np.zeros(100, int), 2)
    assert _spans(a[models == 2], b[models == 2]) == [(0, 49), (50, 99)]
    a, b, rows, models = offset_tiles(np.array([0, 1, 1, 3]), np.array([9, 2, 2, 9]), np.zeros(10, int), 2)
    assert _spans(a[models == 2], b[models == 2], rows[models == 2]) == [
        (0, 4, 0), (5, 5, 2), (6, 9, 3)]


def test_models_per_tile_train_an_ensemble_that_inference_averages(panel: xr.Dataset, tmp_path: Path):
    from analysislib.genotype.dae import offset_tiles
    from analysislib.training import derive_seed

    tiles = tile_table(panel.sizes["variants"])
    single = train_bundle(panel, tiles, FAST, tmp_path / "single", epochs=2, options=RunOptions(progress=False))
    bundle = train_bundle(panel, tiles, FAST, tmp_path / "ensemble", epochs=2, models_per_tile=2, options=RunOptions(progress=False))
    assert bundle.manifest["training"]["models_per_tile"] == 2 and len(bundle.tiles) == 6
    assert bundle.manifest["training"]["ensemble_layout"] == "offset"
    ids = bundle.tiles["id"].tolist()
    assert ids[0::2] == single.tiles["id"].tolist() and all(i.endswith("_m2") for i in ids[1::2])
    # model 2 runs on the offset tiles, so its edges fall inside model 1's tiles
    a, b, _, models = offset_tiles(tiles["first_variant"].to_numpy(), tiles["last_variant"].to_numpy(),
                                   np.zeros(panel.sizes["variants"], int), 2)
    assert [m.tolist() for m in bundle.members[1::2]] == [list(range(x, y + 1)) for x, y in _spans(a[models == 2], b[models == 2])]
    assert [m.tolist() for m in bundle.members[0::2]] == [m.tolist() for m in single.members]
    # model 1 of each tile is the single model (same seed); model 2 has a seed of its own
    assert bundle.hyperparameters(0) == FAST and bundle.hyperparameters(1).seed == derive_seed(5, dae.ENSEMBLE_STREAM, 2)
    x = np.random.default_rng(1).integers(0, 2, (4, 2 * len(bundle.members[2]))).astype(np.float32)
    np.testing.assert_array_equal(bundle.predict(2, x), single.predict(1, x))
    # each variant's weights over the tiles that hold it sum to 1, and a variant at a model-1 tile
    # edge takes more from the model-2 tile around it
    weights = np.zeros(panel.sizes["variants"])
    for member, w in zip(bundle.members, bundle.overlap_weights(), strict=True):
        np.add.at(weights, member, w)
    np.testing.assert_allclose(weights, 1, rtol=1e-6)
    edge = int(tiles["last_variant"][0])
    held = [(row, int(np.flatnonzero(m == edge)[0])) for row, m in enumerate(bundle.members) if edge in m]
    by_model = {row % 2: bundle.overlap_weights()[row][i] for row, i in held}
    assert by_model[1] > by_model[0]
    # inference averages the models: a variant differs from the single model's imputation
    typed = panel.isel(variants=slice(0, None, 3))
    both = impute_dataset(bundle, typed)["call_dosage"].values
    firsts = impute_dataset(single, typed)["call_dosage"].values
    only = int(np.flatnonzero(single.variants["n_tiles"].to_numpy() == 1)[1])
    assert only % 3 != 0 and np.abs(both[only] - firsts[only]).max() > 1e-4
    assert not np.isnan(both).any()
    with pytest.raises(ValueError, match="models_per_tile must be a positive integer"):
        train_bundle(panel, tiles, FAST, tmp_path / "none", models_per_tile=0)
    with pytest.raises(ValueError, match="models_per_tile must be at least 1"):
        DAEImputer(models_per_tile=0)
    assert DAEImputer(preset="standard").models_per_tile == 3 and DAEImputer().models_per_tile == 2
    assert DAEImputer(preset="full").models_per_tile == 1

def test_packed_weights_run_without_torch_and_match_it(panel: xr.Dataset, tmp_path: Path):
    tiles = tile_table(panel.sizes["variants"])
    hp = {0: FAST, 1: FAST.replace(n_layers=4, activation="relu"), 2: FAST.replace(activation="softplus")}
    out = tmp_path / "bundle"
    bundle = train_bundle(panel, tiles, hp, out, epochs=2, options=RunOptions(progress=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert bundle.packed and manifest["packed_weights"]["file"] == "weights.npy"
    assert manifest["files"]["weights.npy"] == hashlib.sha256((out / "weights.npy").read_bytes()).hexdigest()
    # layout: per tile, each Linear layer's weight (out, in) row-major then its bias
    flat = np.load(out / "weights.npy")
    state = bundle.load_weights(1)
    keys = ["encoder.0", "encoder.2", "decoder.0", "decoder.2"]
    expected = np.concatenate([state[f"{k}.{p}"].numpy().ravel() for k in keys for p in ("weight", "bias")])
    entry = manifest["tiles"][1]["packed"]
    assert entry["activation"] == "relu" and entry["widths"][0] == entry["widths"][-1] == 2 * entry_n(manifest, 1)
    np.testing.assert_array_equal(flat[entry["offset"]:entry["offset"] + expected.size], expected)
    assert flat.size == manifest["packed_weights"]["size"] == sum(
        a * b + b for t in manifest["tiles"] for a, b in itertools.pairwise(t["packed"]["widths"]))
    x = np.random.default_rng(2).integers(0, 2, (9, 2 * entry_n(manifest, 2))).astype(np.float32)
    np.testing.assert_allclose(bundle.predict(2, x), bundle.predict(2, x, engine="torch"), rtol=1e-5, atol=2e-6)
    # The layers are read-only views of the mapped file (inference never writes into them).
    (weight, bias), *_ = bundle.packed_layers(1)[0]
    assert not weight.flags.writeable and not bias.flags.writeable
    np.testing.assert_array_equal(weight.ravel(), state["encoder.0.weight"].numpy().ravel())
    typed = panel.isel(variants=slice(0, None, 3))
    fast, slow = (impute_dataset(bundle, typed, engine=e, threads=2) for e in ("numpy", "torch"))
    np.testing.assert_allclose(fast["call_genotype_probability"].values, slow["call_genotype_probability"].values,
                               atol=2e-6)
    np.testing.assert_array_equal(fast["call_genotype"].values, slow["call_genotype"].values)

    # A bundle written before packed weights (no weights.npy) still loads and runs through torch.
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "weights.npy").unlink()
    legacy = {k: v for k, v in manifest.items() if k != "packed_weights"}
    legacy["files"] = {k: v for k, v in manifest["files"].items() if k != "weights.npy"}
    legacy["tiles"] = [{k: v for k, v in t.items() if k != "packed"} for t in manifest["tiles"]]
    (old / "manifest.json").write_text(json.dumps(legacy))
    old_bundle = load_bundle(old)
    assert not old_bundle.packed
    with pytest.raises(BundleError, match=r"no weights\.npy"):
        old_bundle.predict(0, x[:, :2 * entry_n(manifest, 0)], engine="numpy")
    np.testing.assert_array_equal(impute_dataset(old_bundle, typed)["call_dosage"].values,
                                  slow["call_dosage"].values)

    # The command line imputes a packed bundle without importing torch, with the same output.
    write_vcf(typed, tmp_path / "in.vcf.gz")
    impute_vcf(out, tmp_path / "in.vcf.gz", tmp_path / "inproc.vcf.gz")
    script = ("import sys\nfrom analysislib.cli import main\n"
              f"code = main(['impute', '--models', {str(out)!r}, {str(tmp_path / 'in.vcf.gz')!r}, "
              f"{str(tmp_path / 'cli.vcf.gz')!r}])\n"
              "assert code == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    np.testing.assert_array_equal(read_vcf(tmp_path / "cli.vcf.gz")["call_dosage"].values,
                                  read_vcf(tmp_path / "inproc.vcf.gz")["call_dosage"].values)

    # The .pt files, unread by NumPy inference, are verified when first read.
    for folder in (out, old):
        pt = folder / manifest["tiles"][0]["weights"]
        pt.write_bytes(pt.read_bytes()[:-1] + b"x")
    lazy = load_bundle(out)
    assert impute_dataset(lazy, typed)["call_dosage"].shape == fast["call_dosage"].shape
    with pytest.raises(BundleChecksumError, match=r"\.pt"):
        lazy.load_weights(0)
    with pytest.raises(BundleChecksumError, match=r"\.pt"):
        load_bundle(old)  # without packed weights every file is checked at load

    # A manifest whose packed entries do not fit the tiles is refused by name.
    manifest["tiles"][1]["packed"]["offset"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest\.json: tile .*'packed' entry .* at offset"):
        load_bundle(out, verify=False)


def entry_n(manifest: dict, tile: int) -> int:
    return int(manifest["tiles"][tile]["n_variants"])


@pytest.mark.slow
def test_process_pool_and_dask_train_the_same_weights(panel: xr.Dataset, tmp_path: Path):
    distributed = pytest.importorskip("distributed")
    tiles = tile_table(panel.sizes["variants"])
    serial = train_bundle(panel, tiles, FAST, tmp_path / "serial", epochs=2, options=RunOptions(progress=False, threads=1))
    pooled = train_bundle(panel, tiles, FAST, tmp_path / "pool", epochs=2,
                          tiles_per_task=2, options=RunOptions(jobs=2, progress=False))
    # tcp on loopback: the inproc transport looks the machine's address up through the network
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        dasked = train_bundle(panel, tiles, FAST, tmp_path / "dask", epochs=2, options=RunOptions(client=client, progress=False))
    for other in (pooled, dasked):
        for t in range(3):
            a, b = serial.load_model(t).state_dict(), other.load_model(t).state_dict()
            for name in a:
                torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_typed_fraction_centres_the_masking_curriculum_on_the_untyped_share():
    from analysislib.genotype.dae.hyperparameters import masking_for_typed_fraction

    assert masking_for_typed_fraction(1 / 3) == {"min_mask": 0.5667, "max_mask": 0.7167}
    assert masking_for_typed_fraction(0.1) == {"min_mask": 0.8, "max_mask": 0.95}
    assert masking_for_typed_fraction(0.95) == {"min_mask": 0.0, "max_mask": 0.1}
    assert masking_for_typed_fraction(0.02) == {"min_mask": 0.88, "max_mask": 1.0}
    for bad in (0, 1, -0.2, 1.5, True, "0.3", float("nan")):
        with pytest.raises(InvalidArgumentError, match=r"typed_fraction must be a number in \(0, 1\)"):
            masking_for_typed_fraction(bad)
    quick = DAE_PRESETS["quick"]["hparams"]
    imputer = DAEImputer(typed_fraction=1 / 3, hparams={"n_layers": 4})
    assert imputer.hparams == {**quick, "n_layers": 4, "min_mask": 0.5667, "max_mask": 0.7167}
    assert imputer.parameters()["typed_fraction"] == pytest.approx(1 / 3)
    assert DAEImputer().parameters()["typed_fraction"] is None
    assert DAEImputer(typed_fraction=0.1, hparams=FAST).hparams == FAST.replace(min_mask=0.8, max_mask=0.95)
    with pytest.raises(InvalidArgumentError, match=r"leave \['max_mask'\] out of hparams"):
        DAEImputer(typed_fraction=0.5, hparams={"max_mask": 0.6})
    with pytest.raises(InvalidArgumentError, match="per-tile"):
        DAEImputer(typed_fraction=0.5, hparams={0: FAST})
    with pytest.raises(InvalidArgumentError, match="typed_fraction must be"):
        DAEImputer(typed_fraction=0)


def test_dae_imputer_in_the_evaluation_harness(panel: xr.Dataset, tmp_path: Path):
    from analysislib.evaluate import evaluate, make_imputer
    from analysislib.results import ResultsStore

    quick = DAE_PRESETS["quick"]["hparams"]
    assert DAEImputer().hparams == quick and quick["batch_size"] >= 450  # full batch on 450 samples
    assert DAEImputer(hparams={"n_layers": 4}).hparams == {**quick, "n_layers": 4}
    # standard trains as long as quick (longer training measured worse; see DAE_PRESETS), with
    # one more model and smaller batches
    standard = DAEImputer(preset="standard")
    assert (standard.epochs, standard.hparams) == (DAEImputer().epochs, {**quick, "batch_size": 256})
    assert DAEImputer(preset="full").hparams == {} and DAEImputer(preset="full").epochs is None
    assert DAEImputer(hparams={0: FAST}).hparams == {0: FAST}
    tuned = DAEImputer(hparams={0: FAST, 1: FAST.to_dict()}, name="dae_tuned")
    assert tuned.name == "dae_tuned" and DAEImputer().name == "dae"
    assert tuned.parameters()["hparams"] == {"0": FAST.to_dict(), "1": FAST.to_dict()}
    assert tuned.parameters()["hparams_per_tile"] and not DAEImputer().parameters()["hparams_per_tile"]
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        DAEImputer(name="")
    imputer = make_imputer("dae", epochs=4, hparams=FAST.to_dict(), tiling={"box": 10},
                           bundle_dir=tmp_path / "bundle", progress=False)
    assert isinstance(imputer, DAEImputer)
    result = evaluate(imputer, panel, "typed_1in3", store=ResultsStore(tmp_path / "results"),
                      dataset_label="sim")
    assert set(result.rows["method"]) == {"dae"}
    assert imputer.last_run.details["trained"] and imputer.last_run.details["n_tiles"] >= 1
    assert imputer.parameters()["unit"] == "genotype" and imputer.bundle.unit == "genotype"
    with pytest.raises(InvalidArgumentError, match="unit must be one of"):
        DAEImputer(unit="haplotypes")
    # reuse the trained bundle: same output without training, the bundle's unit reported
    reloaded = DAEImputer(bundle=tmp_path / "bundle", unit="haplotype").fit(imputer.reference)
    assert reloaded.parameters()["unit"] == "genotype"
    reference, typed_target = imputer.reference, _typed_target(panel, imputer.reference)
    first = check_imputed(imputer.impute(typed_target), reference, typed_target)
    second = reloaded.impute(typed_target)
    np.testing.assert_array_equal(first["call_dosage"].values, second["call_dosage"].values)
    typed = np.isin(reference["variant_position"].values, typed_target["variant_position"].values)
    np.testing.assert_array_equal(first["call_genotype"].values[typed], typed_target["call_genotype"].values)


def test_real_chr22_targets_with_chr_names_and_the_wrong_build(data_mirror, tmp_path: Path):
    from analysislib.catalog import load_catalog

    ds = load_catalog().open("1kg_chr22_array500").isel(variants=slice(0, 120)).compute()
    reference = ds.isel(samples=slice(0, 450))
    typed = ds.isel(samples=slice(450, None), variants=slice(0, None, 3))
    tiles = pd.DataFrame({"first_variant": [0, 50], "last_variant": [69, 119]})
    bundle = train_bundle(reference, tiles, FAST, tmp_path / "bundle", epochs=2, options=RunOptions(progress=False))
    assert bundle.genome_build == "GRCh37" and bundle.contig_lengths == {"22": GRCH37_CHR22}
    pos = reference["variant_position"].values
    assert list(bundle.tiles["id"]) == [f"22_{pos[0]}-{pos[69]}", f"22_{pos[50]}-{pos[119]}"]
    typed.attrs["contigs"] = [f"chr{c}" for c in typed.attrs["contigs"]]
    write_vcf(typed, tmp_path / "in.vcf.gz")
    report = impute_vcf(bundle.path, tmp_path / "in.vcf.gz", tmp_path / "out.vcf.gz")
    alleles = typed["variant_allele"].values
    n_ambiguous = sum((a, b) in {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")} for a, b in alleles)
    c = report.mapping.counts
    assert (c["used"], c["ambiguous"], c["exact"]) == (40, n_ambiguous, 40 - n_ambiguous)
    assert report.mapping.contig_map == {"chr22": "22"} and report.n_variants == 120
    out = read_vcf(tmp_path / "out.vcf.gz")
    np.testing.assert_array_equal(out["call_genotype"].values[::3], typed["call_genotype"].values)
    lengths = list(typed.attrs["contig_lengths"])
    lengths[typed.attrs["contigs"].index("chr22")] = GRCH38_CHR22
    typed.attrs["contig_lengths"] = lengths
    write_vcf(typed, tmp_path / "in38.vcf.gz")
    with pytest.raises(InputFormatError, match=r"in38\.vcf\.gz: contig chr22 has length 50818468 \(GRCh38\)"):
        impute_vcf(bundle.path, tmp_path / "in38.vcf.gz", tmp_path / "out38.vcf.gz")
    assert not (tmp_path / "out38.vcf.gz").exists()


def _typed_target(panel: xr.Dataset, reference: xr.Dataset) -> xr.Dataset:
    held_out = ~np.isin(panel["sample_id"].values, reference["sample_id"].values)
    return panel.isel(samples=np.flatnonzero(held_out), variants=slice(0, None, 3))


# ------------------------------------------------------------------------------------------
# Against Beagle and bcftools
# ------------------------------------------------------------------------------------------


@pytest.mark.tools
def test_same_sites_and_typed_calls_as_beagle(panel: xr.Dataset, tmp_path: Path):
    if shutil.which("beagle") is None:
        pytest.skip("beagle not installed")
    from analysislib.genotype.hmm import BeagleImputer

    reference = panel.isel(samples=slice(0, 30))
    typed_target = panel.isel(samples=slice(30, None), variants=slice(0, None, 3))
    bundle = train_bundle(reference, tile_table(panel.sizes["variants"]), FAST, tmp_path / "b",
                          epochs=2, options=RunOptions(progress=False))
    ours = impute_dataset(bundle, typed_target)
    beagle = BeagleImputer(threads=1).fit(reference)
    theirs = beagle.impute(typed_target)
    beagle.close()
    np.testing.assert_array_equal(ours["variant_position"].values, theirs["variant_position"].values)
    typed = np.zeros(panel.sizes["variants"], dtype=bool)
    typed[::3] = True
    # both report the observed genotypes at typed sites as hard calls
    np.testing.assert_allclose(ours["call_dosage"].values[typed], theirs["call_dosage"].values[typed])


@pytest.mark.tools
def test_output_reads_in_bcftools(tag_bundle: Path, tmp_path: Path):
    if shutil.which("bcftools") is None:
        pytest.skip("bcftools not installed")
    ds = target([100, 400], ["A", "T"], ["G", "C"], [[[0, 1]], [[0, 0]]])
    write_vcf(ds, tmp_path / "in.vcf.gz")
    impute_vcf(tag_bundle, tmp_path / "in.vcf.gz", tmp_path / "out.vcf.gz")
    # 600 lies in t0 (weight 1) and t1 (weight 3): (0.1 + 3 * 0.2) / 4
    query = subprocess.run(["bcftools", "query", "-r", "22:600-800", "-f", "%POS[\t%GT\t%DS\t%GP]\n",
                            str(tmp_path / "out.vcf.gz")], capture_output=True, text=True, check=True)
    assert query.stdout.splitlines() == ["600\t0/0\t0.175\t0.825,0.175,0", "700\t0/0\t0.2\t0.8,0.2,0",
                                         "800\t0/0\t0.2\t0.8,0.2,0"]


# ------------------------------------------------------------------------------------------
# Streamed imputation: region chunks, sample batches, dask, atomic output
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def streamed(panel: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """A packed bundle, a 36-sample target VCF and the text of write_vcf(impute_dataset(...))."""
    work = tmp_path_factory.mktemp("streamed")
    bundle = train_bundle(panel, tile_table(panel.sizes["variants"]), FAST, work / "bundle", epochs=2, options=RunOptions(progress=False))
    write_vcf(panel.isel(variants=slice(0, None, 3)), work / "in.vcf.gz")
    typed = read_vcf(work / "in.vcf.gz", multiallelic="split", fields=("GT",))
    write_vcf(impute_dataset(bundle, typed), work / "memory.vcf", fields=("GT", "DS", "GP"))
    return bundle.path, work / "in.vcf.gz", (work / "memory.vcf").read_bytes()


def test_plan_stream_bounds_the_genotypes_held():
    supplier = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    plan = plan_stream(supplier, 5, batch_samples=2, chunk_genotypes=20)  # about 4 variants a chunk
    assert plan.chunks == ((0, 3), (3, 5), (5, 9), (9, 10))  # cut where the supplying tile changes
    assert (plan.max_chunk_variants, plan.genotypes_held, plan.batch_genotypes) == (4, 20, 8)
    assert plan_stream(supplier, 5, chunk_genotypes=1).chunks == ((0, 3), (3, 5), (5, 9), (9, 10))
    assert plan_stream(supplier, 1).chunks == ((0, 10),)
    # chr22 array sites (10,490 variants, 191 tiles of about 55) with 5,000 targets: each chunk's
    # text covers at most 2**22 genotypes plus one tile, not the 52 million of the cohort
    tiles = np.repeat(np.arange(191), 55)[:10_490]
    plan = plan_stream(tiles, 5000)
    assert plan.genotypes_held <= dae.CHUNK_GENOTYPES + 55 * 5000 and len(plan.chunks) == 13
    assert plan.batch_genotypes == plan.max_chunk_variants * dae.DEFAULT_BATCH_SAMPLES
    # Two threads: two chunks imputed and one written at a time share the same text budget.
    side = plan_stream(tiles, 5000, side_by_side=2)
    assert side.chunks_held == 3 and len(side.chunks) == 39
    assert side.genotypes_held <= dae.CHUNK_GENOTYPES + 3 * 55 * 5000
    assert side.batch_genotypes == 2 * side.max_chunk_variants * dae.DEFAULT_BATCH_SAMPLES
    # With few samples, still a chunk per thread where the tiles allow.
    assert plan_stream(tiles, 50, side_by_side=2).chunks == ((0, 5225), (5225, 10_450), (10_450, 10_490))
    assert plan_stream(tiles, 50).chunks == ((0, 10_490),)
    with pytest.raises(ValueError, match="at least 1"):
        plan_stream(supplier, 5, batch_samples=0)


def test_streamed_output_matches_the_in_memory_output(streamed, tmp_path: Path):
    bundle, in_vcf, memory = streamed
    for settings in ({}, {"chunk_genotypes": 1}, {"batch_samples": 36, "chunk_genotypes": 200}):
        report = impute_vcf(bundle, in_vcf, tmp_path / "out.vcf", **settings)
        assert (tmp_path / "out.vcf").read_bytes() == memory, settings
    assert len(report.plan.chunks) > 1 and "region chunks" in report.summary()
    # Batches of 7 (36 samples: 5 full batches and 1). BLAS sums float32 products in an order that
    # depends on the number of rows, so a few values can round to the next 0.001: the same
    # records and hard calls, DS/GP within one unit of the last decimal, and few such calls.
    impute_vcf(bundle, in_vcf, tmp_path / "batched.vcf", batch_samples=7, chunk_genotypes=200)
    site_a, gt_a, values_a = _split_calls(memory)
    site_b, gt_b, values_b = _split_calls((tmp_path / "batched.vcf").read_bytes())
    assert site_a == site_b
    np.testing.assert_array_equal(gt_a, gt_b)
    np.testing.assert_allclose(values_a, values_b, rtol=0, atol=1.0001e-3)
    assert (values_a != values_b).any(axis=-1).mean() < 0.01


def test_a_tile_in_two_chunks_computes_the_same_outputs_in_each(streamed, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    """BLAS can round a product differently with another number of output columns (on chr22
    one GP of 1.6 million moved by 0.001 between 1 and 11 chunks), so a tile reaching into two
    chunks computes all its wanted outputs in both and each chunk keeps its own."""
    bundle, in_vcf, memory = streamed
    calls: list[tuple[int, tuple[int, ...]]] = []
    real = dae.Bundle.predict

    def recording(self, tile, presence, *args, **kwargs):
        calls.append((tile, tuple(kwargs["outputs"])))
        return real(self, tile, presence, *args, **kwargs)

    monkeypatch.setattr(dae.Bundle, "predict", recording)
    impute_vcf(bundle, in_vcf, tmp_path / "chunks.vcf", chunk_genotypes=200)
    assert (tmp_path / "chunks.vcf").read_bytes() == memory
    runs = {tile: [outputs for t, outputs in calls if t == tile] for tile, _ in calls}
    assert max(map(len, runs.values())) > 1  # some tiles ran in two chunks
    assert all(len(set(outputs)) == 1 for outputs in runs.values())


def test_streamed_chunks_side_by_side_on_threads(streamed, tmp_path: Path):
    """threads > 1 runs chunks on threads: the same text, and the BLAS thread limit is restored."""
    from threadpoolctl import threadpool_info

    bundle, in_vcf, memory = streamed
    before = [pool["num_threads"] for pool in threadpool_info()]
    for settings in ({"threads": 2}, {"threads": 3, "chunk_genotypes": 200}):
        report = impute_vcf(bundle, in_vcf, tmp_path / "threads.vcf.gz", **settings)
        assert len(report.plan.chunks) >= settings["threads"]
        with gzip.open(tmp_path / "threads.vcf.gz") as handle:
            assert handle.read() == memory, settings
    assert [pool["num_threads"] for pool in threadpool_info()] == before


def _split_calls(text: bytes) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Site columns, GT strings and DS + GP values of a GT:DS:GP VCF's records."""
    records = [line.split("\t") for line in text.decode().splitlines() if not line.startswith("#")]
    calls = np.array([r[9:] for r in records])
    parts = np.char.partition(calls, ":")
    values = np.char.replace(parts[..., 2], ":", ",")
    numbers = np.array([[v.split(",") for v in row] for row in values], dtype=float)
    return ["\t".join(r[:9]) for r in records], parts[..., 0], numbers


def test_streamed_chunks_run_on_dask(streamed, tmp_path: Path):
    distributed = pytest.importorskip("distributed")
    bundle, in_vcf, memory = streamed
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = impute_vcf(bundle, in_vcf, tmp_path / "dask.vcf", chunk_genotypes=200, client=client)
    assert len(report.plan.chunks) > 2
    assert (tmp_path / "dask.vcf").read_bytes() == memory


def test_a_failure_midway_leaves_no_output(streamed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bundle, in_vcf, _ = streamed
    real = dae_streaming._impute_chunk
    calls: list[int] = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise InputFormatError("in.vcf.gz", "simulated failure in the second chunk")
        return real(*args, **kwargs)

    monkeypatch.setattr(dae_streaming, "_impute_chunk", failing)
    for out in (tmp_path / "new.vcf.gz", tmp_path / "old.vcf.gz"):
        if out.name == "old.vcf.gz":
            out.write_bytes(b"previous run")
        with pytest.raises(InputFormatError, match="second chunk"):
            impute_vcf(bundle, in_vcf, out, chunk_genotypes=200)
        calls.clear()
    assert not (tmp_path / "new.vcf.gz").exists() and (tmp_path / "old.vcf.gz").read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.vcf.gz"]  # no temporary left


def test_changed_weights_found_while_imputing_leave_no_output(streamed, tmp_path: Path):
    """The packed weights are hashed while the targets are imputed; a mismatch ends the run with
    BundleChecksumError before any output appears, and an older output is kept."""
    from analysislib.errors import BundleChecksumError

    source, in_vcf, memory = streamed
    bundle = Path(shutil.copytree(source, tmp_path / "bundle"))
    data = bytearray((bundle / "weights.npy").read_bytes())
    data[-5] ^= 0x01  # the last weight's low bits: the run itself goes through
    (bundle / "weights.npy").write_bytes(bytes(data))
    out = tmp_path / "out" / "old.vcf.gz"
    out.parent.mkdir()
    out.write_bytes(b"previous run")
    for threads in (1, 2):
        with pytest.raises(BundleChecksumError, match=r"weights\.npy: corrupt bundle file"):
            impute_vcf(bundle, in_vcf, out, threads=threads)
    assert sorted(p.name for p in out.parent.iterdir()) == ["old.vcf.gz"]
    assert out.read_bytes() == b"previous run"
    impute_vcf(bundle, in_vcf, tmp_path / "unverified.vcf", verify=False)  # read as it is
    assert (tmp_path / "unverified.vcf").read_bytes().count(b"\n") == memory.count(b"\n")


def test_cli_impute_batches_and_refuses_bad_settings(streamed, tmp_path: Path, capsys):
    bundle, in_vcf, memory = streamed
    assert main(["impute", "--models", str(bundle), str(in_vcf), str(tmp_path / "cli.vcf"),
                 "--batch-samples", "36"]) == 0
    assert (tmp_path / "cli.vcf").read_bytes() == memory
    assert "batches of 36" in capsys.readouterr().out
    assert main(["impute", "--models", str(bundle), str(in_vcf), str(tmp_path / "x.vcf"),
                 "--batch-samples", "0"]) == 1
    assert capsys.readouterr().err == "error: --batch-samples must be at least 1\n"
    assert main(["impute", "--models", str(bundle), str(in_vcf), str(tmp_path / "x.vcf"),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: scheduler tcp://127.0.0.1:9: cannot connect") and err.count("\n") == 1
    assert not (tmp_path / "x.vcf").exists()


#: Modules ``analysislib impute`` must not import: its start-up time is NumPy's and analysislib's.
IMPUTE_AVOIDS = ("pandas", "xarray", "dask", "torch", "yaml")


def test_impute_path_imports_no_pandas_xarray_dask_torch_or_yaml(streamed, tmp_path: Path):
    bundle, in_vcf, memory = streamed
    script = (
        "import sys\n"
        "import analysislib.cli, analysislib.genotype.dae, analysislib.io.vcf\n"
        "from analysislib.cli import main\n"
        "from analysislib.genotype.dae import impute_vcf\n"
        f"assert main(['impute', '--models', {str(bundle)!r}, {str(in_vcf)!r}, "
        f"{str(tmp_path / 'cli.vcf.gz')!r}]) == 0\n"
        f"impute_vcf({str(bundle)!r}, {str(in_vcf)!r}, {str(tmp_path / 'api.vcf')!r}, threads=2)\n"
        f"print('loaded:', *sorted({{m.split('.')[0] for m in sys.modules}} & set({IMPUTE_AVOIDS!r})))\n")
    package_root = str(Path(dae.__file__).resolve().parents[3])  # the analysislib under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded:", done.stdout
    assert (tmp_path / "api.vcf").read_bytes() == memory
