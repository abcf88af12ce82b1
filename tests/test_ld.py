"""Tests for analysislib.ld: banded r against numpy.corrcoef and plink 1.9, LD scores, laziness."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest

from analysislib.ld import ld_band, ld_decay, ld_pairs, ld_r2_band, ld_scores
from analysislib.testing import genotype_dataset, raise_if_dask_computes

requires_plink = pytest.mark.skipif(shutil.which("plink1.9") is None,
                                    reason="plink1.9 is not installed (apt-get install plink1.9)")


# ------------------------------------------------------------------------------------ fixtures


def _linked_genotypes(n_var=47, n_samp=30, seed=0):
    """Haplotypes that copy their left neighbour 75% of the time (so neighbours are in LD)."""
    rng = np.random.default_rng(seed)
    gt = (rng.random((n_var, n_samp, 2)) < rng.uniform(0.05, 0.6, (n_var, 1, 1))).astype(np.int8)
    for k in range(1, n_var):
        copy = rng.random((n_samp, 2)) < 0.75
        gt[k][copy] = gt[k - 1][copy]
    gt[5] = 0        # monomorphic reference
    gt[8, 3, 1] = -1  # missing calls
    if n_var > 32:
        gt[22] = 1   # monomorphic alternate
        gt[31, 0, :] = -1
        gt[32, 7, 0] = -1
    return gt


def _reference_r(gt, unit):
    """numpy.corrcoef of mean-imputed values (NaN rows for monomorphic variants)."""
    if unit == "haplotype":
        x = (gt > 0).astype(float).reshape(len(gt), -1)
        x[gt.reshape(len(gt), -1) < 0] = np.nan
    else:
        x = (gt > 0).sum(axis=2).astype(float)
        x[(gt < 0).any(axis=2)] = np.nan
    mean = np.nanmean(x, axis=1, keepdims=True)
    x = np.where(np.isnan(x), mean, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(x)


def _as_band(matrix, window, allowed=None):
    m = len(matrix)
    band = np.full((m, window), np.nan)
    for i in range(m):
        for o in range(1, window + 1):
            if i + o < m and (allowed is None or allowed(i, i + o)):
                band[i, o - 1] = matrix[i, i + o]
    return band


# ------------------------------------------------------------------------------------ ld_band


def test_hand_computed_pair():
    # haplotypes x = 1100, y = 1110: cov 1/8, var 1/4 and 3/16, r = 1/sqrt(3); x vs 1-x: r = -1
    gt = np.array([[[1, 1], [0, 0]], [[1, 1], [1, 0]], [[0, 0], [1, 1]]])
    r = ld_band(genotype_dataset(gt), window=2).values
    np.testing.assert_allclose(r[0], [1 / np.sqrt(3), -1.0], rtol=1e-6)
    np.testing.assert_allclose(r[1, 0], -1 / np.sqrt(3), rtol=1e-6)
    assert np.isnan(r[1, 1]) and np.isnan(r[2]).all()


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("unit", ["haplotype", "dosage"])
@pytest.mark.parametrize(("window", "chunk"), [(6, 10), (6, 4), (12, 5), (60, 16)])
def test_band_matches_corrcoef_across_chunks(unit, window, chunk):
    gt = _linked_genotypes()
    expected = _as_band(_reference_r(gt, unit), window)
    band = ld_band(genotype_dataset(gt), window=window, unit=unit, chunk_variants=chunk, sub_block=3)
    assert band.dims == ("variants", "offset")
    assert band.data.chunks[0][0] == chunk
    np.testing.assert_array_equal(band["offset"].values, np.arange(1, window + 1))
    np.testing.assert_array_equal(band["variant_position"].values, np.arange(1, 48) * 100)
    np.testing.assert_allclose(band.values, expected, atol=2e-6)
    assert np.isnan(band.values[5]).all() and np.isnan(band.values[22]).all()
    assert np.isnan(band.values[4, 0])  # partner 5 is monomorphic
    assert band.attrs["n"] == (60 if unit == "haplotype" else 30)


def test_dask_backed_dataset_keeps_its_chunks_and_float64_is_exact():
    gt = _linked_genotypes()
    ds = genotype_dataset(gt).chunk({"variants": 9})
    band = ld_band(ds, window=7, dtype=np.float64)
    assert band.data.chunks[0] == (9, 9, 9, 9, 9, 2)
    assert band.dtype == np.float64
    np.testing.assert_allclose(band.values, _as_band(_reference_r(gt, "haplotype"), 7),
                               atol=1e-12)


def test_window_bp_and_contig_boundaries():
    gt = _linked_genotypes()
    rng = np.random.default_rng(3)
    contig = np.r_[np.zeros(25, int), np.ones(22, int)]
    positions = np.r_[np.cumsum(rng.integers(1, 400, 25)), np.cumsum(rng.integers(1, 400, 22))]
    ds = genotype_dataset(gt, positions=positions, contig=contig, contigs=("1", "2"))

    def allowed(i, j):
        return contig[i] == contig[j] and positions[j] - positions[i] <= 700

    band = ld_band(ds, window=10, window_bp=700, chunk_variants=8)
    np.testing.assert_allclose(band.values, _as_band(_reference_r(gt, "haplotype"), 10, allowed),
                               atol=2e-6)
    assert np.isnan(band.values[24]).all()  # last variant of contig 1 has no partner


def test_call_dosage_unit_and_min_maf():
    rng = np.random.default_rng(5)
    gt = _linked_genotypes(n_var=20)
    dosage = (gt > 0).sum(axis=2) + rng.normal(0, 0.2, gt.shape[:2])
    dosage[3, 4] = np.nan
    ds = genotype_dataset(gt, dosage=dosage.astype(np.float32))
    x = dosage.astype(np.float32).astype(float)
    x = np.where(np.isnan(x), np.nanmean(x, axis=1, keepdims=True), x)
    expected = _as_band(np.corrcoef(x), 5)
    np.testing.assert_allclose(ld_band(ds, window=5, unit="call_dosage", chunk_variants=6).values,
                               expected, atol=2e-6)

    haps = (gt > 0).reshape(20, -1).astype(float)
    haps[gt.reshape(20, -1) < 0] = np.nan
    frequency = np.nanmean(haps, axis=1)
    rare = np.minimum(frequency, 1 - frequency) < 0.2
    assert 0 < rare.sum() < 20
    band = ld_band(ds, window=5, min_maf=0.2).values
    assert np.isnan(band[rare]).all()
    common = ~rare
    np.testing.assert_allclose(
        band[common], _as_band(_reference_r(gt, "haplotype"), 5, lambda i, j: common[j])[common],
        atol=2e-6)


def test_r2_band_is_r_squared():
    ds = genotype_dataset(_linked_genotypes())
    np.testing.assert_allclose(ld_r2_band(ds, window=4).values, ld_band(ds, window=4).values ** 2)


def test_bad_options_are_refused():
    ds = genotype_dataset(_linked_genotypes(n_var=12))
    with pytest.raises(ValueError, match="unit"):
        ld_band(ds, unit="genotype")
    with pytest.raises(ValueError, match="window"):
        ld_band(ds, window=0)
    with pytest.raises(ValueError, match="min_maf"):
        ld_band(ds, min_maf=0.7)
    positions = [10, 20, 15, *range(30, 120, 10)]
    unsorted = genotype_dataset(_linked_genotypes(n_var=12), positions=positions)
    with pytest.raises(ValueError, match=r"variant 2 \(position 15\)"):
        ld_band(unsorted, window_bp=100)
    lazy = ld_band(unsorted.chunk({"variants": 5}), window_bp=100)  # checked when computed
    with pytest.raises(ValueError, match=r"\(position 15\) comes after position 20"):
        lazy.compute()
    with pytest.raises(Exception, match="call_dosage"):
        ld_band(ds, unit="call_dosage")


# ------------------------------------------------------------------------------------ laziness


def test_band_scores_and_r2_build_graphs_without_computing():
    gt = _linked_genotypes()
    for ds in (genotype_dataset(gt), genotype_dataset(gt).chunk({"variants": 10})):
        with raise_if_dask_computes():
            band = ld_band(ds, window=8, window_bp=2000)
            r2 = ld_r2_band(ds, window=8)
            scores = ld_scores(ds, window=8)
        assert isinstance(band.data, da.Array)
        assert isinstance(r2.data, da.Array)
        assert isinstance(scores.data, da.Array)
    with raise_if_dask_computes(max_computes=1):
        band.sum().compute()


def test_distributed_client_gives_the_same_band_and_scores():
    distributed = pytest.importorskip("distributed")
    ds = genotype_dataset(_linked_genotypes()).chunk({"variants": 10})
    expected_band = ld_band(ds, window=8).compute(scheduler="threads")
    expected_scores = ld_scores(ds, window=8).compute(scheduler="threads")
    # tcp on loopback: the inproc transport looks up the machine's address through the network
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        band = client.compute(ld_band(ds, window=8)).result()
        scores = ld_scores(ds, window=8).compute()
    np.testing.assert_array_equal(band.values, expected_band.values)
    np.testing.assert_array_equal(scores.values, expected_scores.values)


# ------------------------------------------------------------------------------------ pairs, scores


def test_pairs_list_every_pair_above_the_threshold():
    gt = _linked_genotypes()
    reference = _reference_r(gt, "dosage")
    table = ld_pairs(genotype_dataset(gt), window=6, threshold_r2=0.3, unit="dosage", chunk_variants=7)
    expected = [(i, j) for i in range(47) for j in range(i + 1, min(i + 7, 47))
                if reference[i, j] ** 2 >= 0.3 + 1e-5]
    borderline = {(i, j) for i in range(47) for j in range(i + 1, min(i + 7, 47))
                  if abs(reference[i, j] ** 2 - 0.3) <= 1e-5}
    got = set(zip(table["i"], table["j"], strict=True))
    assert set(expected) <= got and got - set(expected) <= borderline
    assert len(expected) > 10
    assert list(table.columns) == ["i", "j", "position_i", "position_j", "variant_id_i",
                                   "variant_id_j", "r", "r2"]
    row = table.iloc[0]
    assert row["position_i"] == (row["i"] + 1) * 100 and row["variant_id_j"] == f"v{row['j']}"
    np.testing.assert_allclose(table["r"], reference[table["i"], table["j"]], atol=2e-6)
    assert (table["i"].diff().dropna() >= 0).all()


def test_ld_scores_sum_both_sides_with_unbiased_r2():
    gt = _linked_genotypes()
    contig = np.r_[np.zeros(30, int), np.ones(17, int)]
    ds = genotype_dataset(gt, contig=contig, contigs=("1", "2"))
    reference = _reference_r(gt, "haplotype")
    n = 60
    for unbiased in (True, False):
        scores = ld_scores(ds, window=5, unbiased=unbiased, chunk_variants=4).values
        for j in range(47):
            if j in (5, 22):
                assert np.isnan(scores[j])
                continue
            partners = [k for k in range(max(0, j - 5), min(47, j + 6))
                        if k != j and contig[k] == contig[j] and not np.isnan(reference[j, k])]
            r2 = reference[j, partners] ** 2
            if unbiased:
                r2 = r2 - (1 - r2) / (n - 2)
            assert scores[j] == pytest.approx(1 + r2.sum(), abs=1e-5)


def test_ld_scores_window_bp_and_isolated_variant():
    gt = _linked_genotypes(n_var=12)
    positions = np.r_[np.arange(1, 7) * 100, 10_000 + np.arange(6) * 100]
    scores = ld_scores(genotype_dataset(gt, positions=positions), window=20, window_bp=250,
                       unbiased=False).values
    reference = _reference_r(gt, "haplotype")
    expected = [1 + sum(reference[j, k] ** 2 for k in range(12)
                        if k != j and abs(positions[k] - positions[j]) <= 250
                        and not np.isnan(reference[j, k])) for j in range(12)]
    expected = np.array(expected)
    expected[5] = np.nan
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_ld_decay_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    base = rng.random((30, 50)) < 0.4
    haps = base.copy()
    haps[1::2] = base[::2][: len(haps[1::2])] ^ (rng.random((15, 50)) < 0.1)  # odd rows copy even ones
    gt = haps.reshape(30, 25, 2).astype(np.int8)
    ds = genotype_dataset(gt, positions=np.arange(1, 31) * 1000)
    table = ld_decay(ds, max_offset=1, distance_bins=(0, 1500))
    expected = np.mean([np.corrcoef(haps[i], haps[i + 1])[0, 1] ** 2 for i in range(29)])
    assert table["n_pairs"].iloc[0] == 29
    assert table["mean_r2"].iloc[0] == pytest.approx(expected, rel=1e-5)


def test_ld_decay_bins_by_distance_across_chunks():
    gt = _linked_genotypes()
    positions = np.cumsum(np.random.default_rng(2).integers(50, 700, 47))
    ds = genotype_dataset(gt, positions=positions)
    reference = _reference_r(gt, "haplotype")
    edges = (0, 500, 1000, 5000)
    table = ld_decay(ds, max_offset=4, distance_bins=edges, chunk_variants=6)
    sums, counts = np.zeros(3), np.zeros(3, int)
    for i in range(47):
        for j in range(i + 1, min(i + 5, 47)):
            k = np.searchsorted(edges, positions[j] - positions[i], side="right") - 1
            if 0 <= k < 3 and not np.isnan(reference[i, j]):
                sums[k] += reference[i, j] ** 2
                counts[k] += 1
    np.testing.assert_array_equal(table["n_pairs"], counts)
    np.testing.assert_allclose(table["mean_r2"], sums / counts, rtol=1e-5)


# ------------------------------------------------------------------------------------ plink 1.9


@pytest.mark.tools
@requires_plink
def test_dosage_r2_agrees_with_plink(tmp_path: Path):
    from analysislib.io.vcf import write_vcf
    from analysislib.simulate.genotypes import simulate_genotypes

    ds = simulate_genotypes("quick", seed=11, samples_per_population=20,
                            sequence_length=150_000).ds
    vcf = write_vcf(ds, tmp_path / "panel.vcf.gz")
    window, window_kb = 20, 10
    # plink's --ld-window N pairs a variant with the next N - 1 variants
    subprocess.run(["plink1.9", "--vcf", str(vcf), "--double-id", "--allow-extra-chr", "--r2",
                    "--ld-window", str(window + 1), "--ld-window-kb", str(window_kb),
                    "--ld-window-r2", "0", "--threads", "1", "--out", str(tmp_path / "ld")],
                   check=True, capture_output=True)
    plink = pd.read_csv(tmp_path / "ld.ld", sep=r"\s+")
    ours = ld_pairs(ds, window=window, window_bp=window_kb * 1000, threshold_r2=0, unit="dosage")
    merged = ours.merge(plink, left_on=["position_i", "position_j"], right_on=["BP_A", "BP_B"],
                        how="outer", indicator=True)
    assert len(plink) > 1000
    assert (merged["_merge"] == "both").all()
    # plink prints 6 significant digits; float32 products add about 1e-6
    assert np.abs(merged["r2"] - merged["R2"]).max() < 1e-5
