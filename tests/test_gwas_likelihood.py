"""Tests for analysislib.gwas.likelihood: windows, LD extraction, the three NLL solvers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

torch = pytest.importorskip("torch")

from analysislib.gwas.likelihood import (
    LOG_2PI,
    NotPositiveDefiniteError,
    Window,
    cg_operators,
    composite_nll,
    make_psd,
    null_nll,
    pcg,
    plan_windows,
    prepare_window,
    window_matrix,
    window_nll,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ld_panel(m: int, k: int, rho: float, seed: int) -> np.ndarray:
    """LD-like correlation matrix of ``m`` AR(1)-correlated standardised SNPs over ``k`` samples.

    With ``k < m`` the matrix has rank ``k`` (a reference panel smaller than the window), which
    makes ``C = R F R + sigma R + eps I`` ill-conditioned (smallest eigenvalues ``eps``).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, k))
    for i in range(1, m):
        X[i] = rho * X[i - 1] + math.sqrt(1 - rho**2) * X[i]
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    return X @ X.T / k


def dense_c(R: np.ndarray, F: np.ndarray, t: slice, sigma: float, eps: float) -> np.ndarray:
    """``C_tt`` built the textbook way: (R diag(F) R + sigma R + eps I)[t, t]."""
    C = R @ np.diag(F) @ R + sigma * R + eps * np.eye(R.shape[0])
    return C[t, t]


@pytest.fixture(scope="module")
def problem():
    R = ld_panel(90, 200, 0.9, seed=3)
    rng = np.random.default_rng(4)
    log_F = rng.normal(-2.0, 1.0, 90)
    t = slice(30, 60)
    z = rng.standard_normal(30) * 1.3
    return R, log_F, t, z


# ------------------------------------------------------------------------------------ windows


def test_plan_windows_snp_units_hand_example():
    windows = plan_windows(10, target_size=4, flank=2)
    assert windows == [Window(0, 6, 0, 4), Window(2, 10, 4, 8), Window(6, 10, 8, 10)]
    assert windows[1].target == slice(2, 6)
    assert windows[1].size == 8 and windows[1].n_targets == 4


@pytest.mark.parametrize("n_snps,target_size,flank", [(1, 1, 0), (97, 10, 25), (500, 64, 0),
                                                      (33, 100, 7)])
def test_plan_windows_covers_each_snp_once(n_snps, target_size, flank):
    windows = plan_windows(n_snps, target_size=target_size, flank=flank)
    counts = np.zeros(n_snps, dtype=int)
    for w in windows:
        counts[w.target_snps] += 1
        assert w.target_start - w.start == min(flank, w.target_start)
        assert w.stop - w.target_stop == min(flank, n_snps - w.target_stop)
    np.testing.assert_array_equal(counts, 1)


def test_plan_windows_base_pairs_and_contigs():
    pos = np.array([100, 900, 1500, 2100, 2200, 4100, 50, 1200, 1300])
    contig = np.array(["1"] * 6 + ["2"] * 3)
    windows = plan_windows(9, positions=pos, target_bp=1000, flank_bp=500, contigs=contig)
    # contig 1: segments [0,1000) -> SNPs 0-1, [1000,2000) -> 2, [2000,3000) -> 3-4, [4000,5000)
    # -> 5; a window holds the SNPs within 500 bp of its segment's ends, never crossing contigs.
    assert windows == [
        Window(0, 2, 0, 2),  # [-500, 1500): 100, 900 (1500 is excluded)
        Window(1, 5, 2, 3),  # [500, 2500): 900 ... 2200
        Window(2, 5, 3, 5),  # [1500, 3500): 1500, 2100, 2200
        Window(5, 6, 5, 6),  # [3500, 5500): 4100
        Window(6, 9, 6, 7),  # contig 2, [-500, 1500): 50, 1200, 1300
        Window(7, 9, 7, 9),  # contig 2, [500, 2500): 1200, 1300
    ]
    counts = np.zeros(9, dtype=int)
    for w in windows:
        counts[w.target_snps] += 1
    np.testing.assert_array_equal(counts, 1)


def test_plan_windows_bp_property_random_positions():
    rng = np.random.default_rng(0)
    pos = np.sort(rng.integers(0, 5_000_000, 800))
    windows = plan_windows(800, positions=pos, target_bp=1e6, flank_bp=1e6)
    counts = np.zeros(800, dtype=int)
    for w in windows:
        counts[w.target_snps] += 1
        seg = pos[w.target_start] // 1_000_000
        assert np.all(pos[w.target_snps] // 1_000_000 == seg)
        inside = (pos >= (seg - 1) * 1e6) & (pos < (seg + 2) * 1e6)
        np.testing.assert_array_equal(np.flatnonzero(inside), np.arange(w.start, w.stop))
    np.testing.assert_array_equal(counts, 1)


def test_plan_windows_errors():
    with pytest.raises(ValueError, match="either target_size"):
        plan_windows(10, target_size=3, flank=1, target_bp=10, flank_bp=1, positions=range(10))
    with pytest.raises(ValueError, match="either target_size"):
        plan_windows(10)
    with pytest.raises(ValueError, match="need positions"):
        plan_windows(10, target_bp=10, flank_bp=1)
    with pytest.raises(ValueError, match="SNP 2 at 5 follows 9"):
        plan_windows(3, positions=[1, 9, 5], target_bp=10, flank_bp=1)
    with pytest.raises(ValueError, match="contiguous"):
        plan_windows(3, target_size=1, flank=0, contigs=["1", "2", "1"])
    with pytest.raises(ValueError, match="target_stop"):
        Window(0, 5, 3, 3)


# ------------------------------------------------------------------------------------ matrices


def test_window_matrix_sparse_dense_blocks_agree():
    R = ld_panel(40, 80, 0.8, seed=1)
    R[np.abs(np.subtract.outer(np.arange(40), np.arange(40))) > 10] = 0.0
    w = Window(5, 30, 10, 20)
    dense = window_matrix(R, w)
    np.testing.assert_array_equal(dense, R[5:30, 5:30])
    np.testing.assert_array_equal(window_matrix(sp.csc_matrix(R), w), dense)
    np.testing.assert_array_equal(window_matrix(torch.tensor(R), w), dense)
    upper = sp.triu(sp.csr_matrix(R)).tocoo()
    np.testing.assert_allclose(window_matrix(upper, w, upper_triangle=True), dense)
    blocks = [R[:12, :12], R[12:25, 12:25], R[25:, 25:]]
    expected = np.zeros((25, 25))
    expected[:7, :7] = R[5:12, 5:12]
    expected[7:20, 7:20] = R[12:25, 12:25]
    expected[20:, 20:] = R[25:30, 25:30]
    np.testing.assert_array_equal(window_matrix(blocks, w), expected)
    with pytest.raises(ValueError, match="runs past"):
        window_matrix(sp.csr_matrix(R), Window(30, 45, 35, 40))
    with pytest.raises(ValueError, match="runs past the LD blocks"):
        window_matrix(blocks[:1], w)


def test_make_psd_clips_eigenvalues():
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    lam = np.array([-0.3, -1e-3, 0.0, 0.5, 1.0, 4.5])
    A = (Q * lam) @ Q.T
    out = make_psd(A)
    np.testing.assert_allclose(np.linalg.eigvalsh(out), np.sort(np.clip(lam, 0, None)), atol=1e-12)
    np.testing.assert_allclose(out, (Q * np.clip(lam, 0, None)) @ Q.T, atol=1e-12)
    floored = make_psd(torch.tensor(A), floor=0.1)
    assert isinstance(floored, torch.Tensor)
    np.testing.assert_allclose(torch.linalg.eigvalsh(floored).numpy(),
                               np.sort(np.clip(lam, 0.1, None)), atol=1e-12)
    psd = (Q * np.abs(lam)) @ Q.T
    np.testing.assert_allclose(make_psd(psd), psd, atol=1e-12)
    with pytest.raises(ValueError, match="not symmetric"):
        make_psd(np.triu(A))


# ------------------------------------------------------------------------------------ values


def test_cholesky_matches_scipy_logpdf(problem):
    R, log_F, t, z = problem
    C = dense_c(R, np.exp(log_F), t, 0.7, 1e-4)
    ref = -stats.multivariate_normal(mean=np.zeros(30), cov=C).logpdf(z) / 30
    got = window_nll(z, R, torch.tensor(log_F), target=t, sigma=0.7)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    # the Jacobian from z to beta_hat = z / sqrt(N): -0.5 log N per SNP
    with_n = window_nll(z, R, torch.tensor(log_F), target=t, sigma=0.7, n=407_527)
    assert float(with_n) == pytest.approx(ref - 0.5 * math.log(407_527), rel=1e-10)


def test_hand_computed_two_snp_case():
    # R = [[1, .5], [.5, 1]], F = (1, 0) (F -> 0 via log F = -800), sigma 1, eps 0, target 0.
    # C = R diag(F) R + R: C_00 = 1 + 1 = 2, so nll = 0.5 [log 2 + z^2/2 + log 2 pi].
    R = np.array([[1.0, 0.5], [0.5, 1.0]])
    got = window_nll([1.5], R, torch.tensor([0.0, -800.0], dtype=torch.float64), target=slice(0, 1), eps=0.0)
    assert float(got) == pytest.approx(0.5 * (math.log(2) + 1.5**2 / 2 + LOG_2PI), rel=1e-12)
    # the flank SNP's F enters through R_01^2: F = (0, 4) gives C_00 = 0.25 * 4 + 1 = 2 again
    got = window_nll([1.5], R, torch.tensor([-800.0, math.log(4.0)], dtype=torch.float64), target=slice(0, 1), eps=0.0)
    assert float(got) == pytest.approx(0.5 * (math.log(2) + 1.5**2 / 2 + LOG_2PI), rel=1e-12)


@pytest.mark.parametrize("options", [{}, {"inner": "snps"}, {"inner": "eigen"}])
def test_woodbury_equals_cholesky(problem, options):
    R, log_F, t, z = problem
    ref, ref_info = window_nll(z, R, torch.tensor(log_F), target=t, sigma=1.3, return_info=True)
    got, info = window_nll(z, R, torch.tensor(log_F), target=t, sigma=1.3, method="woodbury",
                           return_info=True, **options)
    assert float(got) == pytest.approx(float(ref), rel=1e-9)
    assert info.logdet == pytest.approx(ref_info.logdet, rel=1e-9)
    assert info.quad == pytest.approx(ref_info.quad, rel=1e-9)


def test_woodbury_rank_reduction_on_low_rank_ld():
    R = make_psd(ld_panel(80, 25, 0.9, seed=5))  # rank 25 < 40 targets
    t = slice(20, 60)
    rng = np.random.default_rng(6)
    log_F, z = torch.tensor(rng.normal(-1, 1, 80)), rng.standard_normal(40)
    ref = window_nll(z, R, log_F, target=t)
    got, info = window_nll(z, R, log_F, target=t, method="woodbury", rank_tol=1e-10,
                           return_info=True)
    assert info.rank <= 25
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    factor = prepare_window(R, target=t, spectral=False)
    again = window_nll(z, R, log_F, target=t, method="woodbury", factor=factor, rank_tol=1e-10)
    assert float(again) == float(got)


def test_cg_exact_logdet_equals_cholesky(problem):
    R, log_F, t, z = problem
    ref = window_nll(z, R, torch.tensor(log_F), target=t)
    for pc in ("spectral", "target", None):
        got, info = window_nll(z, R, torch.tensor(log_F), target=t, method="cg", logdet="exact",
                               tol=1e-11, preconditioner=pc, return_info=True)
        assert info.converged
        assert float(got) == pytest.approx(float(ref), rel=1e-9)


def test_cg_slq_estimate_within_its_stated_error(problem):
    R, log_F, t, z = problem
    _, exact = window_nll(z, R, torch.tensor(log_F), target=t, return_info=True)
    _, info = window_nll(z, R, torch.tensor(log_F), target=t, method="cg", seed=11,
                         slq_probes=32, return_info=True)
    assert info.logdet_estimate == "slq"
    assert 0 < info.logdet_stderr < 0.05 * abs(exact.logdet)
    assert abs(info.logdet - exact.logdet) < 4 * info.logdet_stderr
    assert info.quad == pytest.approx(exact.quad, rel=1e-6)
    # the SLQ error shrinks with more probes (same seed stream)
    _, many = window_nll(z, R, torch.tensor(log_F), target=t, method="cg", seed=11,
                         slq_probes=256, return_info=True)
    assert many.logdet_stderr < info.logdet_stderr


def test_null_nll_is_the_F_to_zero_limit(problem):
    R, _, t, z = problem
    ref = -stats.multivariate_normal(mean=np.zeros(30), cov=0.8 * R[t, t] + 1e-4 * np.eye(30)
                                     ).logpdf(z) / 30
    assert float(null_nll(z, R, target=t, sigma=0.8)) == pytest.approx(ref, rel=1e-10)
    assert float(null_nll(z, R[t, t], sigma=0.8)) == pytest.approx(ref, rel=1e-10)
    tiny = window_nll(z, R, torch.full((90,), -60.0), target=t, sigma=0.8)
    assert float(tiny) == pytest.approx(ref, rel=1e-10)


def test_composite_nll_on_block_diagonal_ld_is_the_joint_likelihood():
    blocks = [ld_panel(m, 60, 0.85, seed=s) for s, m in enumerate((15, 20, 10))]
    R = np.zeros((45, 45))
    R[:15, :15], R[15:35, 15:35], R[35:, 35:] = blocks
    rng = np.random.default_rng(9)
    log_F, z = torch.tensor(rng.normal(-1, 0.5, 45)), rng.standard_normal(45)
    C = R @ np.diag(np.exp(log_F.numpy())) @ R + R + 1e-4 * np.eye(45)
    joint = -stats.multivariate_normal(mean=np.zeros(45), cov=C).logpdf(z) / 45
    windows = [Window(0, 15, 0, 15), Window(15, 35, 15, 35), Window(35, 45, 35, 45)]
    assert float(composite_nll(z, blocks, log_F, windows)) == pytest.approx(joint, rel=1e-10)
    # flanks that only reach zero-LD SNPs do not change anything
    flanked = plan_windows(45, target_size=15, flank=5)
    got = composite_nll(z, sp.csr_matrix(R), log_F, flanked, method="woodbury")
    separate = sum(w.n_targets * float(window_nll(z[w.target_snps], window_matrix(R, w),
                                                  log_F[w.snps], target=w.target))
                   for w in flanked) / 45
    assert float(got) == pytest.approx(separate, rel=1e-9)


# ------------------------------------------------------------------------------------ gradients


def test_gradcheck_cholesky_and_woodbury():
    R = ld_panel(8, 30, 0.7, seed=7)
    t = slice(2, 6)
    z = torch.tensor([0.4, -1.2, 2.0, 0.3], dtype=torch.float64)
    for method, options in (("cholesky", {}), ("woodbury", {}), ("woodbury", {"inner": "snps"})):
        def f(log_F, sigma, method=method, options=options):
            return window_nll(z, R, log_F, target=t, sigma=sigma, method=method, **options)

        log_F = torch.linspace(-2, 1, 8, dtype=torch.float64, requires_grad=True)
        sigma = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(f, (log_F, sigma), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("preconditioner", ["spectral", "target", None])
def test_cg_gradient_exact_with_unit_probes(problem, preconditioner):
    R, log_F, t, z = problem
    lf = torch.tensor(log_F, requires_grad=True)
    sig = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    g_ref = torch.autograd.grad(window_nll(z, R, lf, target=t, sigma=sig), (lf, sig))
    out = window_nll(z, R, lf, target=t, sigma=sig, method="cg", vtol=0, tol=1e-11,
                     preconditioner=preconditioner)
    g_cg = torch.autograd.grad(out, (lf, sig))
    np.testing.assert_allclose(g_cg[0].numpy(), g_ref[0].numpy(), rtol=1e-6, atol=1e-12)
    assert float(g_cg[1]) == pytest.approx(float(g_ref[1]), rel=1e-6)


def test_cg_hutchinson_gradient_stochastic_error(problem):
    R, log_F, t, z = problem
    lf = torch.tensor(log_F, requires_grad=True)
    (g_ref,) = torch.autograd.grad(window_nll(z, R, lf, target=t), lf)
    errors = []
    mean = torch.zeros_like(g_ref)
    for seed in range(4):
        out, info = window_nll(z, R, lf, target=t, method="cg", vtol=0.1, seed=seed,
                               return_info=True)
        # probes are added until the stated relative standard error (10%) is reached
        assert 16 <= info.n_probes <= 1024 and info.grad_rel_stderr <= 0.1
        (g,) = torch.autograd.grad(out, lf)
        mean += g / 4
        errors.append(float((g - g_ref).norm() / g_ref.norm()))
    # about 5-10% relative error here; averaging 4 seeds shrinks it
    assert max(errors) < 0.15
    assert float((mean - g_ref).norm() / g_ref.norm()) < np.mean(errors)


def test_no_probes_without_gradient(problem):
    R, log_F, t, z = problem
    with torch.no_grad():
        _, info = window_nll(z, R, torch.tensor(log_F, requires_grad=True), target=t,
                             method="cg", return_info=True)
    assert info.n_probes == 0 and info.probe_iterations == 0


# ------------------------------------------------------------------------------------ CG


def test_preconditioners_cut_cg_iterations_on_ill_conditioned_ld():
    R = make_psd(ld_panel(240, 100, 0.95, seed=1))  # rank 100: cond(C) ~ 1e5 - 1e6
    rng = np.random.default_rng(1)
    log_F = torch.tensor(rng.normal(-2, 1, 240))
    z = rng.standard_normal(240)
    iters = {}
    for pc in ("spectral", None):
        _, info = window_nll(z, R, log_F, target=slice(0, 240), method="cg", preconditioner=pc,
                             tol=1e-8, max_iter=3000, return_info=True)
        assert info.converged
        iters[pc] = info.cg_iterations
    # DeepWAS's spectral preconditioner is exact for constant F over the whole window
    assert iters["spectral"] * 10 < iters[None]
    flank_iters = {}
    for pc in ("target", "spectral", None):
        _, info = window_nll(z[80:160], R, log_F, target=slice(80, 160), method="cg",
                             preconditioner=pc, tol=1e-8, max_iter=3000, return_info=True)
        flank_iters[pc] = info.cg_iterations
    assert flank_iters["target"] * 5 < flank_iters[None]
    assert flank_iters["spectral"] < flank_iters[None]


def test_pcg_solves_spd_system_like_numpy():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((30, 30))
    A = A @ A.T + 30 * np.eye(30)
    B = rng.standard_normal((30, 3))
    res = pcg(lambda V: torch.tensor(A) @ V, torch.tensor(B), tol=1e-12)
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A, B), rtol=1e-9)
    assert bool(res.converged.all()) and int(res.iterations.max()) <= 30
    single = pcg(lambda V: torch.tensor(A) @ V, torch.tensor(B[:, 0]), tol=1e-12)
    np.testing.assert_allclose(single.x.numpy(), np.linalg.solve(A, B[:, 0]), rtol=1e-9)


def test_cg_operators_match_dense_formulas(problem):
    R, log_F, t, _ = problem
    F = np.exp(log_F)
    V = torch.tensor(np.random.default_rng(5).standard_normal((30, 2)))
    matvec, precond = cg_operators(R, torch.tensor(log_F), target=t, sigma=0.6)
    np.testing.assert_allclose(matvec(V).numpy(), dense_c(R, F, t, 0.6, 1e-4) @ V.numpy(),
                               rtol=1e-10)
    lam, Q = np.linalg.eigh(R)
    lam = np.clip(lam, 0, None)
    P = (Q[t] / (F.mean() * lam**2 + 0.6 * lam + 1e-4)) @ Q[t].T
    np.testing.assert_allclose(precond(V).numpy(), P @ V.numpy(), rtol=1e-8)
    # with the whole window as target and constant F, P is the exact inverse of C
    flat = np.full(90, -1.0)
    matvec, precond = cg_operators(R, flat, target=slice(0, 90))
    res = pcg(matvec, torch.tensor(np.random.default_rng(6).standard_normal(90)), precond,
              tol=1e-10)
    assert int(res.iterations[0]) <= 2
    assert cg_operators(R, flat, target=t, preconditioner=None)[1] is None


def test_cg_warns_when_not_converged(problem):
    R, log_F, t, z = problem
    with pytest.warns(RuntimeWarning, match="PCG did not reach"):
        _, info = window_nll(z, R, torch.tensor(log_F), target=t, method="cg",
                             preconditioner=None, max_iter=2, return_info=True)
    assert not info.converged and info.cg_iterations == 2


# ------------------------------------------------------------------------------------ errors


def test_bad_shapes_and_values(problem):
    R, log_F, t, z = problem
    lf = torch.tensor(log_F)
    with pytest.raises(ValueError, match=r"z_target has shape \(29,\); expected \(30,\)"):
        window_nll(z[:-1], R, lf, target=t)
    with pytest.raises(ValueError, match=r"log_F has shape \(89,\); expected \(90,\)"):
        window_nll(z, R, lf[:-1], target=t)
    with pytest.raises(ValueError, match="R_window must be a square matrix"):
        window_nll(z, R[:, :-1], lf, target=t)
    with pytest.raises(ValueError, match="R_window is not symmetric"):
        window_nll(z, np.triu(R), lf, target=t)
    with pytest.raises(TypeError, match="window_matrix"):
        window_nll(z, sp.csr_matrix(R), lf, target=t)
    with pytest.raises(ValueError, match="non-empty contiguous slice"):
        window_nll(z, R, lf, target=slice(30, 30))
    with pytest.raises(ValueError, match="sigma must be positive"):
        window_nll(z, R, lf, target=t, sigma=0.0)
    with pytest.raises(ValueError, match="z_target contains NaN"):
        window_nll(np.full(30, np.nan), R, lf, target=t)
    with pytest.raises(ValueError, match="method must be one of"):
        window_nll(z, R, lf, target=t, method="lu")
    with pytest.raises(TypeError, match="unknown options"):
        window_nll(z, R, lf, target=t, method="woodbury", vtol=0.1)
    factor = prepare_window(R, target=slice(0, 30), spectral=False)
    with pytest.raises(ValueError, match="factor was prepared"):
        window_nll(z, R, lf, target=t, method="woodbury", factor=factor)


def test_non_psd_ld_is_rejected():
    R = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    lf = torch.full((2,), -5.0)
    with pytest.raises(NotPositiveDefiniteError, match="make_psd"):
        window_nll([0.1, 0.2], R, lf, target=slice(0, 2))
    with pytest.raises(NotPositiveDefiniteError, match="smallest eigenvalue -1"):
        window_nll([0.1, 0.2], R, lf, target=slice(0, 2), method="woodbury")
    with pytest.raises(NotPositiveDefiniteError, match="not positive semi-definite"):
        window_nll([0.1, 0.2], R, lf, target=slice(0, 2), method="cg")
    fixed = make_psd(R)
    assert np.isfinite(float(window_nll([0.1, 0.2], fixed, lf, target=slice(0, 2))))
