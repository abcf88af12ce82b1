"""Tests for the banded DeepWAS likelihood: banded LD operators, block Cholesky, banded PCG."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysislib.gwas import likelihood, windows
from analysislib.gwas.banded import band_window, block_cholesky, block_solve
from analysislib.gwas.likelihood import NotPositiveDefiniteError, window_nll

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def structured_ld(m: int, k: int, seed: int) -> np.ndarray:
    """Correlation of ``m`` SNPs over ``k`` samples: AR(1) decay plus a shared component.

    The shared component gives long-range LD (as population structure does), so cutting the
    matrix to a band leaves it indefinite, as on real panels.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, k))
    for i in range(1, m):
        X[i] = 0.9 * X[i - 1] + math.sqrt(1 - 0.81) * X[i]
    X += 0.6 * rng.standard_normal(k)[None, :] * rng.choice([-1.0, 1.0], m)[:, None]
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    return X @ X.T / k


def banded_dense(R: np.ndarray, b: int, taper: str | None) -> np.ndarray:
    d = np.abs(np.subtract.outer(np.arange(len(R)), np.arange(len(R))))
    w = (d <= b).astype(float)
    if taper == "bartlett":
        w *= 1 - d / (b + 1)
    return R * w


def dense_c(Rb: np.ndarray, F: np.ndarray, t: slice, sigma: float, eps: float) -> np.ndarray:
    U = Rb[t, :]
    return (U * F) @ U.T + sigma * Rb[t, t] + eps * np.eye(t.stop - t.start)


@pytest.fixture(scope="module")
def window():
    m, b = 130, 12
    R = structured_ld(m, 90, seed=1)
    rng = np.random.default_rng(2)
    # targets span several blocks of 2b = 24 and end in a partial block
    return R, b, slice(30, 101), rng.normal(-1.5, 1.0, m), rng.standard_normal(71)


@pytest.mark.parametrize("taper", ["bartlett", None])
@pytest.mark.parametrize("target", [slice(30, 101), slice(0, 50), slice(100, 130),
                                    slice(0, 130)])
def test_banded_operators_equal_the_dense_band(window, taper, target):
    R, b, _, log_F, _ = window
    bw = band_window(R, target=target, bandwidth=b, taper=taper)
    Rb = banded_dense(R, b, taper)
    n_t = target.stop - target.start
    np.testing.assert_allclose(bw.dense_u().numpy(), Rb[target, :], atol=1e-15)
    rng = np.random.default_rng(5)
    V = rng.standard_normal((n_t, 3))
    Vp = bw.pad_targets(torch.tensor(V))
    W = rng.standard_normal((R.shape[0], 3))
    Wp = torch.cat([bw.pad_window(torch.tensor(W[:, j]))[:, None] for j in range(3)], 1)
    np.testing.assert_allclose(bw.u_mul(Wp)[:n_t].numpy(), Rb[target, :] @ W, atol=1e-12)
    window_part = slice(bw.pad, bw.pad + bw.n_snps)
    np.testing.assert_allclose(bw.ut_mul(Vp)[window_part].numpy(), Rb[target, :].T @ V,
                               atol=1e-12)
    np.testing.assert_allclose(bw.rtt_mul(Vp)[:n_t].numpy(), Rb[target, target] @ V, atol=1e-12)
    F = np.exp(log_F)
    C = dense_c(Rb, F, target, 0.8, 1e-4)
    Fp = bw.pad_window(torch.tensor(F))
    np.testing.assert_allclose(bw.c_operator(Fp, 0.8, 1e-4)(Vp)[:n_t].numpy(), C @ V,
                               atol=1e-11)
    # block-tridiagonal form: padded rows carry an identity and nothing else
    D, B = bw.c_blocks(Fp, 0.8, 1e-4)
    N, s = bw.n_blocks, bw.block
    full = torch.zeros(N * s, N * s, dtype=torch.float64)
    for i in range(N):
        full[i * s:(i + 1) * s, i * s:(i + 1) * s] = D[i]
        if i < N - 1:
            full[(i + 1) * s:(i + 2) * s, i * s:(i + 1) * s] = B[i]
            full[i * s:(i + 1) * s, (i + 1) * s:(i + 2) * s] = B[i].T
    expected = np.eye(N * s)
    expected[:n_t, :n_t] = C
    np.testing.assert_allclose(full.numpy(), expected, atol=1e-11)


def test_band_from_blocks_equals_band_from_dense(window):
    R, b, t, _, _ = window
    from_dense = band_window(R, target=t, bandwidth=b)
    from_blocks = band_window(target=t, bandwidth=b, n_snps=R.shape[0],
                              block_fn=lambda rows, cols: R[rows, cols])
    assert torch.equal(from_dense.slabs, from_blocks.slabs)
    assert torch.equal(from_dense.col_index, from_blocks.col_index)


def test_bartlett_taper_keeps_ld_psd_where_the_hard_band_does_not(window):
    R, b, _, _, _ = window
    assert np.linalg.eigvalsh(R).min() > -1e-10
    assert np.linalg.eigvalsh(banded_dense(R, b, None)).min() < -0.1
    assert np.linalg.eigvalsh(banded_dense(R, b, "bartlett")).min() > -1e-10


def test_block_cholesky_solves_and_factors(window):
    R, b, t, log_F, _ = window
    bw = band_window(R, target=t, bandwidth=b)
    D, B = bw.c_blocks(bw.pad_window(torch.tensor(np.exp(log_F))), 1.0, 1e-4)
    L, M = block_cholesky(D, B)
    C = dense_c(banded_dense(R, b, "bartlett"), np.exp(log_F), t, 1.0, 1e-4)
    assert float(2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum()) == pytest.approx(
        np.linalg.slogdet(C)[1], rel=1e-10)
    Y = np.random.default_rng(0).standard_normal((71, 2))
    X = block_solve(L, M, bw.pad_targets(torch.tensor(Y)))[:71].numpy()
    np.testing.assert_allclose(C @ X, Y, atol=1e-8)


def test_banded_exact_value_and_gradient_equal_cholesky_on_the_band(window):
    R, b, t, log_F, z = window
    Rb = banded_dense(R, b, "bartlett")
    bw = band_window(R, target=t, bandwidth=b)
    lf_ref = torch.tensor(log_F, requires_grad=True)
    sig_ref = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    ref = window_nll(z, Rb, lf_ref, target=t, sigma=sig_ref, n=5e4)
    ref.backward()
    for R_arg, options in ((bw, {}), (R, {"bandwidth": b})):
        lf = torch.tensor(log_F, requires_grad=True)
        sig = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        got = window_nll(z, R_arg, lf, target=t, sigma=sig, n=5e4, method="banded", **options)
        got.backward()
        assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
        np.testing.assert_allclose(lf.grad.numpy(), lf_ref.grad.numpy(), rtol=1e-7, atol=1e-12)
        assert float(sig.grad) == pytest.approx(float(sig_ref.grad), rel=1e-8)


def test_banded_gradcheck():
    R = structured_ld(20, 40, seed=4)
    bw = band_window(R, target=slice(5, 16), bandwidth=3)
    z = torch.linspace(-1.5, 2.0, 11, dtype=torch.float64)

    def f(log_F, sigma):
        return window_nll(z, bw, log_F, target=slice(5, 16), sigma=sigma, method="banded")

    log_F = torch.linspace(-2, 1, 20, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (log_F, sigma), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("preconditioner", ["tridiagonal", "block", None])
def test_banded_cg_exact_with_unit_probes_and_exact_logdet(window, preconditioner):
    R, b, t, log_F, z = window
    bw = band_window(R, target=t, bandwidth=b)
    lf_ref = torch.tensor(log_F, requires_grad=True)
    ref = window_nll(z, bw, lf_ref, target=t, method="banded")
    ref.backward()
    lf = torch.tensor(log_F, requires_grad=True)
    got, info = window_nll(z, bw, lf, target=t, method="banded_cg", vtol=0, logdet="exact",
                           tol=1e-12, max_iter=5000, preconditioner=preconditioner,
                           return_info=True)
    got.backward()
    assert info.converged and info.n_probes == 71
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-9)
    np.testing.assert_allclose(lf.grad.numpy(), lf_ref.grad.numpy(), rtol=1e-6, atol=1e-10)


def test_banded_cg_estimates_within_their_stated_errors(window):
    R, b, t, log_F, z = window
    bw = band_window(R, target=t, bandwidth=b)
    lf_ref = torch.tensor(log_F, requires_grad=True)
    ref, exact = window_nll(z, bw, lf_ref, target=t, method="banded", return_info=True)
    ref.backward()
    for seed in range(3):
        lf = torch.tensor(log_F, requires_grad=True)
        # the block-Jacobi preconditioner is not exact, so SLQ has a real error to state
        got, info = window_nll(z, bw, lf, target=t, method="banded_cg", preconditioner="block",
                               vtol=0.1, logdet_tol=0.01, seed=seed, return_info=True)
        got.backward()
        assert info.converged and info.quad == pytest.approx(exact.quad, rel=1e-5)
        assert 0 < info.logdet_stderr <= 0.01 * 71  # the logdet_tol target, met by more probes
        assert abs(info.logdet - exact.logdet) < 4 * info.logdet_stderr + 1e-9
        assert 0 < info.grad_rel_stderr <= 0.1  # the vtol target, met by adding probes
        rel_err = float((lf.grad - lf_ref.grad).norm() / lf_ref.grad.norm())
        assert rel_err < 4 * info.grad_rel_stderr


def test_missed_variance_targets_warn(window):
    R, b, t, log_F, z = window
    bw = band_window(R, target=t, bandwidth=b)
    with pytest.warns(RuntimeWarning, match="max_slq_probes"):
        window_nll(z, bw, torch.tensor(log_F), target=t, method="banded_cg",
                   preconditioner="block", logdet_tol=1e-6, max_slq_probes=20)
    with pytest.warns(RuntimeWarning, match="max_probes"):
        window_nll(z, bw, torch.tensor(log_F, requires_grad=True), target=t,
                   method="banded_cg", preconditioner="block", vtol=1e-4, max_probes=20,
                   logdet_tol=None)


def test_preconditioner_control_variate(window):
    """Probes only estimate tr((C^-1 - M^-1) dC): exact with the exact block factor, and far
    less noisy than plain Hutchinson with block-Jacobi."""
    R, b, t, log_F, z = window
    bw = band_window(R, target=t, bandwidth=b)
    lf_ref = torch.tensor(log_F, requires_grad=True)
    sig_ref = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    window_nll(z, bw, lf_ref, target=t, sigma=sig_ref, method="banded").backward()
    lf = torch.tensor(log_F, requires_grad=True)
    sig = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    out, info = window_nll(z, bw, lf, target=t, sigma=sig, method="banded_cg", return_info=True)
    out.backward()
    assert info.n_probes == 16 and info.grad_rel_stderr < 1e-6  # nothing left to estimate
    np.testing.assert_allclose(lf.grad.numpy(), lf_ref.grad.numpy(), rtol=1e-5, atol=1e-9)
    assert float(sig.grad) == pytest.approx(float(sig_ref.grad), rel=1e-7)
    lf = torch.tensor(log_F, requires_grad=True)
    _, block = window_nll(z, bw, lf, target=t, method="banded_cg", preconditioner="block",
                            min_probes=64, max_probes=64, return_info=True)
    lf2 = torch.tensor(log_F, requires_grad=True)
    _, plain = window_nll(z, bw, lf2, target=t, method="banded_cg", preconditioner=None,
                             min_probes=64, max_probes=64, return_info=True, max_iter=5000,
                             logdet="exact")
    assert block.grad_rel_stderr < 0.5 * plain.grad_rel_stderr


def test_exact_block_preconditioner_needs_one_iteration(window):
    R, b, t, log_F, z = window
    bw = band_window(R, target=t, bandwidth=b)
    with torch.no_grad():
        _, tri = window_nll(z, bw, torch.tensor(log_F), target=t, method="banded_cg",
                            preconditioner="tridiagonal", return_info=True)
        _, none = window_nll(z, bw, torch.tensor(log_F), target=t, method="banded_cg",
                             preconditioner=None, return_info=True, max_iter=5000,
                             logdet="exact")
    assert tri.cg_iterations <= 2 < none.cg_iterations


def test_banded_errors(window):
    R, b, t, log_F, z = window
    with pytest.raises(TypeError, match="bandwidth"):
        window_nll(z, R, torch.tensor(log_F), target=t, method="banded")
    bw = band_window(R, target=t, bandwidth=b)
    with pytest.raises(ValueError, match="target"):
        window_nll(z[:70], bw, torch.tensor(log_F), target=slice(30, 100), method="banded")
    with pytest.raises(TypeError, match="already banded"):
        window_nll(z, bw, torch.tensor(log_F), target=t, method="banded", bandwidth=b)
    with pytest.raises(TypeError, match="unknown options"):
        window_nll(z, bw, torch.tensor(log_F), target=t, method="banded", vtol=0.1)
    with pytest.raises(ValueError, match="taper"):
        band_window(R, target=t, bandwidth=b, taper="hann")
    with pytest.raises(ValueError, match="bandwidth"):
        band_window(R, target=t, bandwidth=0)
    # the hard band of LD with long-range structure is indefinite: a clear error, not NaN
    hard = band_window(R, target=slice(0, 130), bandwidth=b, taper=None)
    with pytest.raises(NotPositiveDefiniteError, match="taper='bartlett'"):
        window_nll(np.zeros(130), hard, torch.full((130,), -8.0), target=slice(0, 130),
                   method="banded", eps=0.0)
    with pytest.raises(ValueError, match="not symmetric"):
        bad = R.copy()
        bad[0, 5] += 1
        band_window(bad, target=t, bandwidth=b)


def test_window_tensors_are_checked_and_banded_once(window, monkeypatch):
    R, b, t, log_F, z = window
    calls = {"check": 0, "band": 0}
    check, band = windows._check_square_symmetric, likelihood.band_window

    def counting_check(*a, **k):
        calls["check"] += 1
        return check(*a, **k)

    def counting_band(*a, **k):
        calls["band"] += 1
        return band(*a, **k)

    monkeypatch.setattr(windows, "_check_square_symmetric", counting_check)
    monkeypatch.setattr(likelihood, "band_window", counting_band)
    Rt = torch.tensor(R)
    for _ in range(3):
        window_nll(z, Rt, torch.tensor(log_F), target=t)
        window_nll(z, Rt, torch.tensor(log_F), target=t, method="banded", bandwidth=b)
    assert calls == {"check": 1, "band": 1}  # one symmetry check serves both paths
    Rt[0, 5] += 1.0  # an in-place change is noticed
    with pytest.raises(ValueError, match="not symmetric"):
        window_nll(z, Rt, torch.tensor(log_F), target=t)
