"""Tests for analysislib.genotype.segments: encoding, segmentation, reassembly, HDF5, HWE and QC."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from analysislib.errors import InputFormatError
from analysislib.genotype.segments import (
    PAD,
    SegmentLayout,
    biallelic_snp_mask,
    code_dosage,
    decode_phased,
    duplicate_position_mask,
    encode_dataset,
    encode_phased,
    genotypes_to_dataset,
    haplotype_probabilities_to_phased,
    haplotype_tokens,
    hwe_exact_pvalues,
    hwe_pvalues,
    iter_segment_batches,
    positional_channel,
    qc_split,
    read_segments,
    reassemble_probabilities,
    reassemble_tokens,
    segment_codes,
    segment_dataset,
    segment_to_hdf5,
    write_segments,
)
from analysislib.testing import genotype_dataset

requires_plink = pytest.mark.skipif(shutil.which("plink1.9") is None,
                                    reason="plink1.9 is not installed (apt-get install plink1.9)")


def _dataset(gt: np.ndarray, *, positions=None, alleles=("A", "G"), populations=None, contig=None,
             genetic=None) -> xr.Dataset:
    ds = genotype_dataset(gt, positions=positions, contig=contig, contigs=["22", "21"],
                          alleles=alleles, sample_ids="S", variant_ids="rs", phased=True,
                          populations=populations)
    if genetic is not None:
        ds["variant_genetic_position"] = ("variants", np.asarray(genetic, dtype=np.float64))
    return ds


def _random_gt(rng: np.random.Generator, n_var: int, n_samp: int, p=0.3) -> np.ndarray:
    return (rng.random((n_var, n_samp, 2)) < p).astype(np.int8)


# ----------------------------------------------------------------------------- encoding


def test_phased_codes_by_hand():
    # variants x samples x ploidy: 0|0, 0|1, 1|0, 1|1, .|0, 0|.
    gt = np.array([[[0, 0], [0, 1], [1, 0], [1, 1], [-1, 0], [0, -1]]], dtype=np.int8)
    codes = encode_phased(gt)
    assert codes.shape == (6, 1) and codes.dtype == np.uint8
    assert codes[:, 0].tolist() == [1, 2, 3, 4, 0, 0]
    back = decode_phased(codes)
    assert back[0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [-1, -1], [-1, -1]]
    np.testing.assert_array_equal(code_dosage([0, 1, 2, 3, 4, 5]), [np.nan, 0, 1, 1, 2, np.nan])


def test_encoding_round_trips_through_the_dataset():
    rng = np.random.default_rng(0)
    gt = _random_gt(rng, 30, 7)
    gt[3, 2] = -1
    ds = _dataset(gt)
    codes = encode_dataset(ds)
    assert codes.shape == (7, 30) and codes[2, 3] == 0
    again = genotypes_to_dataset(codes, ds)
    np.testing.assert_array_equal(again["call_genotype"].values, ds["call_genotype"].values)
    assert not again["call_genotype_phased"].values[3, 2] and again["call_genotype_phased"].values[4, 2]


def test_non_biallelic_calls_are_named():
    gt = np.zeros((4, 2, 2), np.int8)
    gt[2, 1, 0] = 2
    with pytest.raises(ValueError, match="rs2: allele index above 1"):
        encode_dataset(_dataset(gt))
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.5"):
        decode_phased(np.array([[6]]))


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize(("n_var", "n_seg", "pad"), [
    (1, 1, 127), (128, 1, 0), (129, 2, 111), (240, 2, 0), (241, 3, 111), (1000, 9, 24),
])
def test_layout_counts_segments_and_padding(n_var, n_seg, pad):
    layout = SegmentLayout(n_var, 128, 16)
    assert layout.stride == 112 and layout.n_segments == n_seg and layout.n_padding == pad
    idx = layout.index()
    covered = np.unique(idx[idx >= 0])
    np.testing.assert_array_equal(covered, np.arange(n_var))
    np.testing.assert_array_equal(layout.starts, np.arange(n_seg) * 112)


def test_layout_rejects_bad_parameters():
    for kwargs in ({"n_variants": 0}, {"n_variants": 5, "overlap": 128},
                   {"n_variants": 5, "segment_length": 0}, {"n_variants": 5, "overlap": -1}):
        with pytest.raises(ValueError):
            SegmentLayout(**kwargs)


def test_segments_by_hand_with_padding():
    codes = np.array([[1, 2, 3, 4, 1, 2, 3, 4]], dtype=np.uint8)
    layout = SegmentLayout(8, segment_length=4, overlap=1)  # starts 0, 3, 6
    seg = segment_codes(codes, layout)
    assert seg.tolist() == [[[1, 2, 3, 4], [4, 1, 2, 3], [3, 4, PAD, PAD]]]
    assert SegmentLayout(7, 4, 1).n_segments == 2  # [0..3], [3..6] already cover 7 SNPs
    assert reassemble_tokens(seg, layout).tolist() == codes.tolist()


@settings(max_examples=60, deadline=None)
@given(n_var=st.integers(1, 300), n_samp=st.integers(1, 4), length=st.integers(1, 40),
       overlap_frac=st.floats(0, 0.95), seed=st.integers(0, 2**16))
def test_segment_then_reassemble_is_the_identity(n_var, n_samp, length, overlap_frac, seed):
    overlap = min(length - 1, int(overlap_frac * length))
    layout = SegmentLayout(n_var, length, overlap)
    codes = np.random.default_rng(seed).integers(0, 5, size=(n_samp, n_var)).astype(np.uint8)
    seg = segment_codes(codes, layout)
    assert seg.shape == (n_samp, layout.n_segments, length)
    np.testing.assert_array_equal(reassemble_tokens(seg, layout), codes)
    # the probability path: one-hot "predictions" reassemble to the input exactly
    probs = np.eye(6, dtype=np.float32)[seg]
    full = reassemble_probabilities(probs, layout)
    np.testing.assert_array_equal(full.argmax(-1), codes)
    np.testing.assert_array_equal(full.sum(-1), 1)


def test_overlaps_resolved_by_the_most_confident_segment():
    layout = SegmentLayout(6, segment_length=4, overlap=2)  # segments [0..3], [2..5]
    probs = np.zeros((1, 2, 4, 2))
    probs[0, 0] = [[1, 0], [1, 0], [0.6, 0.4], [0.55, 0.45]]  # SNPs 0-3
    probs[0, 1] = [[0.2, 0.8], [0.5, 0.5], [0, 1], [0, 1]]  # SNPs 2-5
    full, source = reassemble_probabilities(probs, layout, return_source=True)
    # SNP 2: 0.8 (segment 1) beats 0.6; SNP 3: 0.55 (segment 0) beats 0.5
    np.testing.assert_allclose(full[0], [[1, 0], [1, 0], [0.2, 0.8], [0.55, 0.45], [0, 1], [0, 1]])
    assert source[0].tolist() == [0, 0, 1, 0, 1, 1]
    tie = np.full((1, 2, 4, 2), 0.5)
    tie[0, 1, :, :] = [0.5, 0.5]
    assert reassemble_probabilities(tie, layout, return_source=True)[1][0].tolist() == [0, 0, 0, 0, 1, 1]


def test_positional_channel_by_hand():
    layout = SegmentLayout(5, segment_length=3, overlap=1)  # [0,1,2], [2,3,4]
    x = [100, 110, 130, 170, 170]
    seg = positional_channel(x, layout, "segment")
    np.testing.assert_allclose(seg, [[0, 1 / 3, 1], [0, 1, 1]], rtol=1e-6)
    glob = positional_channel(x, layout, "global")
    np.testing.assert_allclose(glob, [[0, 1 / 7, 3 / 7], [3 / 7, 1, 1]], rtol=1e-6)
    padded = positional_channel([5.0, 5.0], SegmentLayout(2, 4, 0))
    np.testing.assert_array_equal(padded, [[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="normalise"):
        positional_channel(x, layout, "bogus")  # type: ignore[arg-type]


def test_segment_dataset_uses_genetic_positions_when_asked():
    rng = np.random.default_rng(1)
    ds = _dataset(_random_gt(rng, 10, 3), genetic=np.linspace(0, 2, 10) ** 2)
    seg = segment_dataset(ds, segment_length=10, overlap=0, position="genetic")
    np.testing.assert_allclose(seg.positional[0], (np.linspace(0, 2, 10) ** 2) / 4, rtol=1e-6)
    phys = segment_dataset(ds, segment_length=10, overlap=0)
    np.testing.assert_allclose(phys.positional[0], np.linspace(0, 1, 10), rtol=1e-6)
    with pytest.raises(ValueError, match="variant_genetic_position"):
        segment_dataset(ds.drop_vars("variant_genetic_position"), position="genetic")


def test_segment_dataset_needs_one_sorted_contig():
    rng = np.random.default_rng(2)
    gt = _random_gt(rng, 4, 2)
    with pytest.raises(ValueError, match="one contig at a time; the dataset holds 22, 21"):
        segment_dataset(_dataset(gt, contig=np.array([0, 0, 1, 1], np.int16)))
    with pytest.raises(ValueError, match="rs2 comes after"):
        segment_dataset(_dataset(gt, positions=[10, 20, 15, 30]))


# ----------------------------------------------------------------------------- HDF5


def test_hdf5_round_trip_full_and_batchwise(tmp_path: Path):
    rng = np.random.default_rng(3)
    ds = _dataset(_random_gt(rng, 50, 9))
    seg = segment_dataset(ds, segment_length=16, overlap=4)
    path = write_segments(tmp_path / "seg.h5", seg)
    back = read_segments(path)
    np.testing.assert_array_equal(back.tokens, seg.tokens)
    np.testing.assert_array_equal(back.positional, seg.positional)
    np.testing.assert_array_equal(back.sample_id, seg.sample_id)
    assert back.layout == seg.layout and back.contig == "22"
    np.testing.assert_array_equal(back.codes(), encode_dataset(ds))
    # chunked writing (3 samples at a time) produces the same rows
    chunked = segment_to_hdf5(ds, tmp_path / "chunked.h5", segment_length=16, overlap=4, sample_chunk=3)
    np.testing.assert_array_equal(read_segments(chunked).tokens, seg.tokens)
    batches = list(iter_segment_batches(chunked, batch_size=7))
    rows = np.concatenate([b.tokens for b in batches])
    np.testing.assert_array_equal(rows.reshape(seg.tokens.shape), seg.tokens)
    sample = np.concatenate([b.sample_index for b in batches])
    segment = np.concatenate([b.segment_index for b in batches])
    np.testing.assert_array_equal(sample, np.repeat(np.arange(9), seg.n_segments))
    np.testing.assert_array_equal(segment, np.tile(np.arange(seg.n_segments), 9))
    np.testing.assert_array_equal(batches[0].positional, seg.positional[segment[:7]])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_leaves_nothing_and_bad_files_are_named(tmp_path: Path):
    rng = np.random.default_rng(4)
    ds = _dataset(_random_gt(rng, 5, 2))
    ds["call_genotype"].values[1, 0, 0] = 3  # not biallelic: fails while writing
    with pytest.raises(ValueError, match="rs1"):
        segment_to_hdf5(ds, tmp_path / "bad.h5", segment_length=4, overlap=1)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(InputFormatError, match=r"junk\.h5"):
        read_segments(tmp_path / "junk.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.attrs["format"] = "something else"
    with pytest.raises(InputFormatError, match="not a segment file"):
        list(iter_segment_batches(tmp_path / "other.h5"))


# ----------------------------------------------------------------------------- HWE and QC


def _hwe_brute_force(het: int, hom1: int, hom2: int) -> float:
    n = het + hom1 + hom2
    rare = 2 * min(hom1, hom2) + het
    probs = {}
    for h in range(rare % 2, rare + 1, 2):
        r = (rare - h) // 2
        c = n - h - r
        if c < 0:
            continue
        # P(h | n, rare) = 2^h n! rare! (2n - rare)! / (r! h! c! (2n)!)
        probs[h] = (2**h * math.factorial(n) * math.factorial(rare) * math.factorial(2 * n - rare)
                    / (math.factorial(r) * math.factorial(h) * math.factorial(c) * math.factorial(2 * n)))
    obs = probs[het]
    return min(1.0, sum(p for p in probs.values() if p <= obs * (1 + 1e-7)))


def test_hwe_exact_test_matches_enumeration():
    cases = [(0, 10, 10), (20, 0, 0), (5, 10, 5), (1, 30, 0), (3, 2, 15), (57, 14, 29), (0, 0, 0)]
    het, h1, h2 = (np.array(c) for c in zip(*cases, strict=True))
    got = hwe_exact_pvalues(het, h1, h2)
    want = [_hwe_brute_force(*c) if sum(c) else 1.0 for c in cases]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert got[0] < 1e-5 and got[3] == pytest.approx(1.0)  # no hets at p=0.5 vs one rare het


@pytest.mark.tools
@requires_plink
def test_hwe_agrees_with_plink(tmp_path: Path):
    from analysislib.io.vcf import write_vcf

    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.5, 200)[:, None, None]
    gt = (rng.random((200, 80, 2)) < p).astype(np.int8)
    gt[:40, :70] = gt[:40, :70, :1]  # excess homozygotes in part of the variants
    ds = _dataset(gt, positions=np.arange(1, 201) * 1000)
    vcf = write_vcf(ds, tmp_path / "in.vcf.gz")
    subprocess.run(["plink1.9", "--vcf", str(vcf), "--double-id", "--hardy", "--out",
                    str(tmp_path / "hw")], check=True, capture_output=True)
    table = pd.read_csv(tmp_path / "hw.hwe", sep=r"\s+")
    ours = hwe_pvalues(ds)
    np.testing.assert_allclose(ours, table["P"].to_numpy(), rtol=1e-3, atol=1e-300)
    assert (ours < 1e-6).sum() > 3


def test_biallelic_and_duplicate_masks():
    gt = np.zeros((5, 2, 2), np.int8)
    gt[3, 0, 0] = 2
    alleles = np.array([["A", "G"], ["AT", "A"], ["C", ""], ["G", "T"], ["T", "C"]], dtype=object)
    ds = _dataset(gt, positions=[10, 20, 30, 40, 40], alleles=alleles)
    assert biallelic_snp_mask(ds).tolist() == [True, False, False, False, True]
    assert duplicate_position_mask(ds).tolist() == [True, True, True, True, False]


def test_qc_split_filters_and_splits_as_the_paper():
    rng = np.random.default_rng(6)
    n_samp = 60
    pops = np.repeat(["YRI", "CEU", "CHB"], 20)
    gt = _random_gt(rng, 40, n_samp)
    gt[0] = 0  # monomorphic: MAF 0 fails
    gt[1] = 0
    gt[1, :, 0] = 1  # every sample 1|0 heterozygous: HWE p tiny
    gt[2, 5, :] = -1  # a missing call (1 in 39 for sample 5): SNP removed
    gt[3, 7, :] = 2  # not biallelic
    gt[4:8, 9, :] = -1  # sample 9 misses 4 of 39 calls (>5%): sample removed
    result = qc_split(_dataset(gt, populations=pops), seed=3)
    r = result.report
    assert r["non_biallelic_snp"] == 1 and r["samples_missing_over"] == 1
    assert r["variants_with_missing"] == 1  # sample 9's SNPs are complete once it is gone
    assert r["train"] + r["validation"] + r["test"] == 59
    assert (r["train"], r["validation"], r["test"]) == (47, 6, 6)
    kept = result.variant_index.tolist()
    assert 0 not in kept and 1 not in kept and 2 not in kept and 3 not in kept
    assert r["variants_out"] == len(kept) == result.train.sizes["variants"] == result.test.sizes["variants"]
    for part in (result.train, result.validation, result.test):
        assert sorted(set(part["sample_population"].values)) == ["CEU", "CHB", "YRI"]
    assert "S9" not in set(result.train["sample_id"].values) | set(result.test["sample_id"].values)


def test_qc_decided_by_train_or_by_all_splits():
    # a SNP whose minor allele sits in one training sample only: passes MAF on train,
    # fails (monomorphic) on validation and test
    n_samp = 40
    gt = np.zeros((3, n_samp, 2), np.int8)
    rng = np.random.default_rng(7)
    gt[1:] = _random_gt(rng, 2, n_samp, 0.4)
    train_default = qc_split(_dataset(gt), seed=0)
    first_train = int(np.flatnonzero(np.isin([f"S{i}" for i in range(n_samp)],
                                             train_default.train["sample_id"].values))[0])
    gt[0, first_train, 0] = 1
    ds = _dataset(gt)
    by_train = qc_split(ds, seed=0, min_maf=0.001)
    by_all = qc_split(ds, seed=0, min_maf=0.001, decide="all")
    assert 0 in by_train.variant_index.tolist()
    assert 0 not in by_all.variant_index.tolist()
    with pytest.raises(ValueError, match="decide"):
        qc_split(ds, decide="test")  # type: ignore[arg-type]


def test_haplotype_rows_split_each_phased_genotype_and_pair_up_again():
    gt = _random_gt(np.random.default_rng(3), 7, 5, 0.4)
    gt[2, 1] = -1  # a missing call
    codes = encode_phased(gt)  # (samples, variants)
    rows = haplotype_tokens(segment_codes(codes, SegmentLayout(7, 4, 0)))
    assert rows.shape[0] == 10 and rows.dtype == np.uint8
    flat = reassemble_tokens(rows, SegmentLayout(7, 4, 0))
    # row 2i is haplotype 0 of sample i and row 2i+1 haplotype 1, each as a homozygous code
    for i in range(5):
        for h in range(2):
            expected = np.where(gt[:, i, h] < 0, 0, np.where(gt[:, i, h] == 1, 4, 1))
            np.testing.assert_array_equal(flat[2 * i + h], expected)
    assert (rows[..., -1] == PAD).any()  # padding stays padding
    # certain haplotypes give the phased genotype they came from, with probability 1
    certain = np.eye(4, dtype=np.float32)[np.where(flat == 4, 3, 0)]
    phased = haplotype_probabilities_to_phased(certain)
    assert phased.shape == (5, 7, 4)
    known = codes > 0
    np.testing.assert_array_equal(phased.argmax(-1)[known] + 1, codes[known])
    # ALT probability P(1|1) / (P(0|0) + P(1|1)); the products sum to 1
    p = np.array([[[0.2, 0.1, 0.1, 0.6]], [[0.5, 0.0, 0.0, 0.5]]], dtype=np.float32)
    np.testing.assert_allclose(haplotype_probabilities_to_phased(p)[0, 0],
                               [0.25 * 0.5, 0.25 * 0.5, 0.75 * 0.5, 0.75 * 0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="2 \\* samples"):
        haplotype_probabilities_to_phased(p[:1])
    with pytest.raises(ValueError, match="token values"):
        haplotype_tokens(np.array([[6]], dtype=np.uint8))
