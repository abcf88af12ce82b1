"""Tests of analysislib.gwas.ldsc: LD scores, weights, jackknife, S-LDSC and enrichment."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from analysislib.gwas.ldsc import (
    annotation_ld_scores,
    block_jackknife,
    enrichment,
    ldsc_weights,
    s_ldsc,
    unbiased_r2,
)


def test_unbiased_r2_by_hand() -> None:
    assert unbiased_r2(0.5, 12) == pytest.approx(0.5 - 0.5 / 10)
    assert unbiased_r2(0.0, 102) == pytest.approx(-0.01)
    assert unbiased_r2(1.0, 5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n > 2"):
        unbiased_r2(0.3, 2)


def test_annotation_ld_scores_by_hand_dense_and_sparse() -> None:
    R = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]])
    a = np.array([[1, 1], [1, 0], [1, 1]], dtype=float)
    n = 12
    r2 = lambda r: r ** 2 - (1 - r ** 2) / (n - 2)
    # SNP 0: self 1 + r~2(0.5) + r~2(0) (the zero pair is stored in the dense matrix)
    expected = np.array([
        [1 + r2(0.5) + r2(0.0), 1 + r2(0.0)],
        [r2(0.5) + 1 + r2(0.2), r2(0.5) + r2(0.2)],
        [r2(0.0) + r2(0.2) + 1, r2(0.0) + 1],
    ])
    np.testing.assert_allclose(annotation_ld_scores(R, a, n_ref=n), expected)
    # sparse: only stored pairs count, so the unlinked pair (0, 2) adds nothing
    sparse = annotation_ld_scores(sp.csr_matrix(R), a, n_ref=n)
    np.testing.assert_allclose(sparse[0], [1 + r2(0.5), 1.0])
    np.testing.assert_allclose(annotation_ld_scores(R, a[:, 0], unbiased=False),
                               (R ** 2).sum(axis=1)[:, None])
    with pytest.raises(ValueError, match="n_ref"):
        annotation_ld_scores(R, a)
    with pytest.raises(ValueError, match="one annotation row per SNP"):
        annotation_ld_scores(R, a[:2], n_ref=n)


def test_ldsc_weights_by_hand() -> None:
    # c = h2 N / M = 0.1 * 100 / 10 = 1; het_w = 1 / (2 (1 + 2)^2); w_ld 0.5 clips to 1
    assert ldsc_weights(2.0, 0.5, 100, 10, 0.1, intercept=1.0) == pytest.approx(1 / 18)
    # ld below 1 clips to 1, h2 above 1 clips to 1: c = 1 * 10 / 10 = 1 -> 1/(2 (1.5 + 1)^2) / 4
    assert ldsc_weights(0.2, 4.0, 10, 10, 3.0, intercept=1.5) == pytest.approx(
        1 / (2 * 2.5 ** 2) / 4)
    # negative h2 clips to 0
    assert ldsc_weights(5.0, 1.0, 10, 10, -1.0, intercept=2.0) == pytest.approx(1 / 8)


def test_block_jackknife_matches_explicit_leave_one_block_out() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=90), np.ones(90)])
    y = x @ [2.0, -1.0] + rng.normal(size=90)
    est, delete, seps = block_jackknife(x, y, 9)
    np.testing.assert_array_equal(seps, np.arange(0, 91, 10))
    np.testing.assert_allclose(est, np.linalg.lstsq(x, y, rcond=None)[0])
    for b in range(9):
        keep = np.r_[0:10 * b, 10 * (b + 1):90]
        np.testing.assert_allclose(delete[b], np.linalg.lstsq(x[keep], y[keep], rcond=None)[0])
    with pytest.raises(ValueError, match="n_blocks"):
        block_jackknife(x, y, 1)


def _design(m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary annotations (base + 2 categories) and synthetic annotation LD scores.

    ``r2_jk = exp(-|j - k| / L)`` within 30 SNPs, with a local LD length ``L`` varying smoothly
    along the genome (so the total LD score varies and the intercept is identifiable).
    """
    rng = np.random.default_rng(seed)
    a = np.column_stack([np.ones(m), rng.random(m) < 0.2, rng.random(m) < 0.4]).astype(float)
    length = 1.0 + 9.0 * (0.5 + 0.5 * np.sin(np.arange(m) / 150.0 + rng.uniform(0, 6)))
    offsets = np.arange(-30, 31)
    cols = np.arange(m)[:, None] + offsets[None, :]
    inside = (cols >= 0) & (cols < m)
    pair_length = 0.5 * (length[:, None] + length[np.clip(cols, 0, m - 1)])
    r2 = np.where(inside, np.exp(-np.abs(offsets)[None, :] / pair_length), 0.0)
    ld = np.stack([(r2 * a[np.clip(cols, 0, m - 1), c]).sum(axis=1) for c in range(3)], axis=1)
    return a, ld, ld[:, 0]


def test_noiseless_chi2_recovers_tau_exactly_and_enrichment_by_hand() -> None:
    a, ld, w_ld = _design(3000, 1)
    tau = np.array([1e-7, 6e-7, -2e-8])
    n = 5e4
    chi2 = 1.3 + n * ld @ tau
    res = s_ldsc(chi2, ld, w_ld, n, a.sum(axis=0), n_blocks=50)
    np.testing.assert_allclose(res.tau, tau, rtol=1e-6)
    assert res.intercept == pytest.approx(1.3, rel=1e-8)
    np.testing.assert_allclose(res.tau_se, 0.0, atol=1e-12)
    m = a.sum(axis=0)
    assert res.h2 == pytest.approx(m @ tau)
    table = enrichment(res, a, names=["base", "c1", "c2"])
    h2_j = a @ tau
    for c in range(3):
        prop = h2_j[a[:, c] == 1].sum() / h2_j.sum()
        assert table.loc[c, "prop_h2"] == pytest.approx(prop, rel=1e-6)
        assert table.loc[c, "enrichment"] == pytest.approx(prop / a[:, c].mean(), rel=1e-6)
    assert table.loc[0, "enrichment"] == pytest.approx(1.0)
    # fixing the intercept at its true value gives the same slopes
    fixed = s_ldsc(chi2, ld, w_ld, n, m, intercept=1.3, n_blocks=50)
    np.testing.assert_allclose(fixed.tau, tau, rtol=1e-6)
    assert fixed.intercept_delete_values is None and np.isnan(fixed.intercept_se)


def test_noisy_chi2_estimates_cover_the_truth() -> None:
    a, ld, w_ld = _design(20000, 2)
    tau = np.array([2e-7, 1.5e-6, 0.0])
    n = 1e5
    expected = 1.0 + n * ld @ tau
    rng = np.random.default_rng(3)
    chi2 = expected * rng.chisquare(1, size=expected.size)
    res = s_ldsc(chi2, ld, w_ld, n, a.sum(axis=0), n_blocks=100)
    assert np.all(np.abs(res.tau - tau) < 4 * res.tau_se)
    assert abs(res.intercept - 1.0) < 4 * res.intercept_se
    assert res.tau_se[1] > 0
    table = enrichment(res, a)
    truth = (a.T @ (a @ tau)) / (a.sum(axis=0) @ tau) / a.mean(axis=0)
    assert abs(table.loc[1, "enrichment"] - truth[1]) < 4 * table.loc[1, "enrichment_se"]
    assert table.loc[1, "enrichment_p"] < 0.01
    # the two-step estimator agrees within error and flags the SNPs it filtered
    two = s_ldsc(chi2, ld, w_ld, n, a.sum(axis=0), n_blocks=100, two_step=30)
    assert two.twostep_filtered == int((chi2 >= 30).sum())
    assert abs(two.tau[1] - tau[1]) < 4 * two.tau_se[1]
    assert abs(two.intercept - 1.0) < 4 * two.intercept_se


def test_two_step_single_annotation_noiseless_is_exact() -> None:
    # ldsc's own setting (one annotation): step 1 on chi2 < 30 must find the intercept, step 2
    # the slope from all SNPs, including the large chi2 that step 1 dropped
    _a, ld, w_ld = _design(4000, 4)
    n = 1e5
    chi2 = 1.1 + n * ld[:, 0] * 3e-5
    assert (chi2 >= 30).sum() > 100
    res = s_ldsc(chi2, ld[:, :1], w_ld, n, [4000], n_blocks=40, two_step=30)
    assert res.twostep_filtered == int((chi2 >= 30).sum())
    assert res.intercept == pytest.approx(1.1, rel=1e-8)
    assert res.tau[0] == pytest.approx(3e-5, rel=1e-8)
    np.testing.assert_allclose(res.intercept_delete_values, 1.1, rtol=1e-8)
    with pytest.raises(ValueError, match="chi2 < 5"):
        s_ldsc(chi2, ld[:, :1], w_ld, n, [4000], n_blocks=40, two_step=5)


def test_input_errors() -> None:
    a, ld, w_ld = _design(500, 6)
    chi2 = np.ones(500)
    with pytest.raises(ValueError, match="m has 2 values"):
        s_ldsc(chi2, ld, w_ld, 1e4, [1, 2])
    with pytest.raises(ValueError, match="two_step"):
        s_ldsc(chi2, ld, w_ld, 1e4, a.sum(axis=0), intercept=1.0, two_step=30)
    bad = chi2.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="chi2 is not finite at SNP 7"):
        s_ldsc(bad, ld, w_ld, 1e4, a.sum(axis=0))
    res = s_ldsc(chi2 + ld[:, 0] * 1e-2, ld, w_ld, 1e4, a.sum(axis=0), n_blocks=20)
    with pytest.raises(ValueError, match="categories"):
        enrichment(res, a[:, :2])


def test_on_simulated_gwas_with_block_diagonal_ld() -> None:
    """LDSC on the simulator's block-diagonal R: intercept near 1, h2 near the truth."""
    from analysislib.simulate.gwas import (
        _block_edges,
        block_ld_matrix,
        simulate_summary_statistics,
    )

    rng = np.random.default_rng(7)
    m, n_ref = 6000, 400
    # haplotypes with LD: each SNP copies its left neighbour with probability 0.8
    hap = np.empty((m, n_ref), dtype=np.int8)
    hap[0] = rng.random(n_ref) < 0.3
    for j in range(1, m):
        fresh = rng.random(n_ref) < rng.uniform(0.1, 0.5)
        hap[j] = np.where(rng.random(n_ref) < 0.8, hap[j - 1], fresh)
    edges = _block_edges(m, 100)
    R = block_ld_matrix(hap, edges)
    h2, n = 0.05, 2e5
    z, _ = simulate_summary_statistics(hap, edges, np.full(m, h2 / m), n, rng)
    ell = annotation_ld_scores(R, np.ones(m), n_ref=n_ref)
    res = s_ldsc(z ** 2, ell, ell[:, 0], n, [m], n_blocks=60)
    assert abs(res.intercept - 1.0) < 4 * res.intercept_se
    assert abs(res.h2 - h2) < 4 * res.h2_se
