"""Solvers of the DeepWAS window likelihood: exact (Cholesky, Woodbury, banded) and iterative.

Given a window's validated problem (``z``, ``U = R[t, :]``, ``R_tt``, ``log F``, ``sigma``,
``eps``) these compute ``log|C_tt|`` and ``z' C_tt^-1 z`` for
``C = R diag(F) R + sigma R + eps I`` (Amin, Potapczynski & Wilson, ICML 2025, arXiv 2506.19598,
section 3; the authors' ``SNPTrainerChol``, ``WASP_new`` and ``CG_iterators.py``): the dense
Cholesky factor, the Woodbury identity on ``eigh(R_tt)`` (:class:`WindowFactor`), the
block-tridiagonal Cholesky of a banded window, and batched preconditioned conjugate gradients
(:func:`pcg`) with a Hutchinson gradient and a stochastic Lanczos quadrature log-determinant.
Each solver is described in :mod:`analysislib.gwas.likelihood`, whose
:func:`~analysislib.gwas.likelihood.window_nll` validates the inputs and picks one by
``method=``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from analysislib.errors import InvalidArgumentError, NotPositiveDefiniteError
from analysislib.gwas.banded import (
    BandedWindow,
    block_cholesky,
    block_jacobi,
    block_logdet,
    block_lower_solve,
    block_solve,
    block_upper_solve,
    selected_inverse,
)

__all__ = [
    "CGResult",
    "NLLInfo",
    "WindowFactor",
    "pcg",
]

Tensor = torch.Tensor
_DTYPE = torch.float64


# ------------------------------------------------------------------------------------ problems


@dataclass
class _Problem:
    """One window's validated inputs (made by ``analysislib.gwas.likelihood._prepare_problem``)."""

    z: Tensor
    U: Tensor  # R[t, :], (n_t, m)
    R_tt: Tensor
    log_F: Tensor
    sigma: Tensor | float
    eps: float
    target: slice

    @property
    def n_t(self) -> int:
        return self.z.shape[0]

    @property
    def m(self) -> int:
        return self.U.shape[1]


@dataclass
class WindowFactor:
    """Factorisations of one window that do not depend on ``F`` or ``sigma`` (cache per window).

    Made by :func:`~analysislib.gwas.likelihood.prepare_window`.

    Attributes
    ----------
    n_snps
        Window size ``m``.
    target
        Local target slice the factor was made for.
    rtt_eigvals, rtt_eigvecs
        ``eigh(R_tt)``: used by ``"woodbury"``, the ``"target"`` preconditioner and SLQ.
    G
        ``rtt_eigvecs' R[t, :]``, ``(n_t, m)``, used by ``"woodbury"``.
    r_eigvals, q_target
        ``eigh(R)`` of the whole window (eigenvalues, and the target rows of the eigenvectors,
        ``(n_t, m)``) for the ``"spectral"`` preconditioner; ``None`` unless requested.
    """

    n_snps: int
    target: slice
    rtt_eigvals: Tensor
    rtt_eigvecs: Tensor
    G: Tensor
    r_eigvals: Tensor | None = None
    q_target: Tensor | None = None


# ------------------------------------------------------------------------------------ results


@dataclass
class NLLInfo:
    """Diagnostics of one :func:`~analysislib.gwas.likelihood.window_nll` evaluation.

    Attributes
    ----------
    method
        Solver used.
    logdet, quad
        ``log|C_tt|`` (exact, or the SLQ estimate for ``"cg"``) and ``z' C_tt^-1 z``.
    rank
        Eigen-directions of ``R_tt`` kept by ``"woodbury"``.
    cg_iterations
        PCG iterations for the ``z`` solve (``"cg"``).
    probe_iterations
        Largest PCG iteration count among the Hutchinson probe solves (0 when no gradient).
    n_probes
        Hutchinson probes (``n_t`` unit vectors when ``vtol=0``).
    converged
        Whether every PCG column reached the tolerance.
    relative_residual
        Largest final ``||r|| / ||b||`` over the PCG columns.
    logdet_estimate
        ``"exact"`` or ``"slq"``.
    logdet_stderr
        Standard error of the SLQ estimate across its probes (0 when exact).
    grad_rel_stderr
        Standard error of the Hutchinson part of the gradient relative to the gradient of
        ``log|C_tt| + z'C_tt^-1 z`` with respect to ``F`` (norms over the window's SNPs; 0 when
        exact or without gradient).
    """

    method: str
    logdet: float
    quad: float
    rank: int | None = None
    cg_iterations: int | None = None
    probe_iterations: int | None = None
    n_probes: int | None = None
    converged: bool | None = None
    relative_residual: float | None = None
    logdet_estimate: str = "exact"
    logdet_stderr: float = 0.0
    grad_rel_stderr: float = 0.0


@dataclass
class CGResult:
    """Output of :func:`pcg`.

    Attributes
    ----------
    x
        Solutions, same shape as the right-hand sides.
    iterations
        Iterations each column needed (``max_iter`` if it did not converge).
    converged
        Per-column convergence flags.
    relative_residual
        Final ``||r|| / ||b||`` per column.
    """

    x: Tensor
    iterations: Tensor
    converged: Tensor
    relative_residual: Tensor


def pcg(
    matvec: Callable[[Tensor], Tensor],
    B: Tensor,
    precond: Callable[[Tensor], Tensor] | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> CGResult:
    """Batched preconditioned conjugate gradients for ``A X = B`` with ``A`` SPD.

    Parameters
    ----------
    matvec
        ``V -> A V`` for ``V`` of shape ``(n, k)``.
    B
        Right-hand sides ``(n,)`` or ``(n, k)``; columns are solved independently (each with its
        own step sizes) and converged columns drop out of the products.
    precond
        ``V -> P V`` with ``P ~ A^-1`` SPD, or ``None``.
    tol
        Stop a column when ``||r|| <= tol ||b||``.
    max_iter
        Iteration cap.

    Returns
    -------
    CGResult
    """
    squeeze = B.ndim == 1
    Bm = B[:, None] if squeeze else B
    k = Bm.shape[1]
    X = torch.zeros_like(Bm)
    Rr = Bm.clone()
    bnorm = Bm.norm(dim=0)
    thresh = tol * bnorm
    iters = torch.zeros(k, dtype=torch.long, device=B.device)
    active = Rr.norm(dim=0) > thresh
    Zr = precond(Rr) if precond is not None else Rr.clone()
    Pd = Zr.clone()
    rz = (Rr * Zr).sum(0)
    for it in range(1, int(max_iter) + 1):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        AP = matvec(Pd[:, idx])
        pAp = (Pd[:, idx] * AP).sum(0)
        alpha = rz[idx] / pAp
        X[:, idx] += alpha * Pd[:, idx]
        Rr[:, idx] -= alpha * AP
        rnorm = Rr[:, idx].norm(dim=0)
        done = rnorm <= thresh[idx]
        iters[idx] = it
        Z_new = precond(Rr[:, idx]) if precond is not None else Rr[:, idx]
        rz_new = (Rr[:, idx] * Z_new).sum(0)
        beta = rz_new / rz[idx]
        Pd[:, idx] = Z_new + beta * Pd[:, idx]
        rz[idx] = rz_new
        active[idx[done]] = False
    safe = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    rel = Rr.norm(dim=0) / safe
    converged = ~active
    return CGResult(x=X[:, 0] if squeeze else X, iterations=iters, converged=converged,
                    relative_residual=rel)


# ------------------------------------------------------------------------------------ solvers


def _cholesky(mat: Tensor, what: str) -> Tensor:
    L, info = torch.linalg.cholesky_ex(mat)
    if int(info) != 0:
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite (Cholesky failed at row {int(info)}); the LD "
            "window is probably not PSD: clip it with make_psd(R)")
    return L


def _dense_C(p: _Problem, F: Tensor) -> Tensor:
    n_t = p.n_t
    C = (p.U * F) @ p.U.T + p.sigma * p.R_tt + p.eps * torch.eye(n_t, dtype=_DTYPE,
                                                                  device=p.U.device)
    return 0.5 * (C + C.T)


def _solve_cholesky(p: _Problem) -> tuple[Tensor, Tensor, NLLInfo]:
    L = _cholesky(_dense_C(p, torch.exp(p.log_F)), "C_tt = R_t diag(F) R_t' + sigma R_tt + eps I")
    logdet = 2.0 * torch.log(torch.diagonal(L)).sum()
    alpha = torch.cholesky_solve(p.z[:, None], L)[:, 0]
    quad = p.z @ alpha
    return logdet, quad, NLLInfo("cholesky", float(logdet.detach()), float(quad.detach()))


def _solve_woodbury(p: _Problem, factor: WindowFactor, rank_tol: float | None,
                    inner: str) -> tuple[Tensor, Tensor, NLLInfo]:
    lam, Q, G = factor.rtt_eigvals, factor.rtt_eigvecs, factor.G
    s = p.sigma * lam + p.eps
    if bool((s <= 0).any()):
        raise NotPositiveDefiniteError(
            "sigma R_tt + eps I is not positive definite (R_tt has eigenvalue "
            f"{float(lam.min()):.3g}); clip the LD window with make_psd(R)")
    y = Q.T @ p.z
    logdet_b = torch.log(s).sum()
    keep = torch.ones_like(lam, dtype=torch.bool) if rank_tol is None else lam > rank_tol
    Gk, sk, yk = G[keep], s[keep], y[keep]
    r = int(keep.sum())
    F = torch.exp(p.log_F)
    if inner not in ("auto", "eigen", "snps"):
        raise InvalidArgumentError(f"inner must be 'auto', 'eigen' or 'snps', got {inner!r}")
    if inner == "auto":
        inner = "eigen" if r <= p.m else "snps"
    if inner == "eigen":
        H = Gk / torch.sqrt(sk)[:, None]
        A = torch.eye(r, dtype=_DTYPE, device=H.device) + (H * F) @ H.T
        L = _cholesky(0.5 * (A + A.T), "A = I + S^-1/2 G F G' S^-1/2")
        yt = yk / torch.sqrt(sk)
        quad = (y**2 / s).sum() - (yk**2 / sk).sum() + yt @ torch.cholesky_solve(yt[:, None],
                                                                                  L)[:, 0]
    else:
        fh = torch.sqrt(F)
        W = Gk.T @ (Gk / sk[:, None])
        A = torch.eye(p.m, dtype=_DTYPE, device=W.device) + fh[:, None] * W * fh[None, :]
        L = _cholesky(0.5 * (A + A.T), "A = I + F^1/2 W F^1/2")
        u = fh * (Gk.T @ (yk / sk))
        quad = (y**2 / s).sum() - u @ torch.cholesky_solve(u[:, None], L)[:, 0]
    logdet = logdet_b + 2.0 * torch.log(torch.diagonal(L)).sum()
    return logdet, quad, NLLInfo("woodbury", float(logdet.detach()), float(quad.detach()), rank=r)


@dataclass
class _CGState:
    p: _Problem | None  # dense problem (method "cg")
    factor: WindowFactor | None
    preconditioner: str | None
    tol: float
    max_iter: int
    vtol: float
    generator: torch.Generator
    logdet: str
    slq_probes: int
    lanczos_steps: int
    need_grad: bool
    min_probes: int = 16
    max_probes: int = 1024
    logdet_tol: float | None = None
    max_slq_probes: int = 256
    banded: BandedWindow | None = None  # banded problem (method "banded_cg")
    z: Tensor | None = None
    eps: float = 0.0
    info: NLLInfo | None = None
    solves: Tensor | None = None
    probes: Tensor | None = None
    dlogdet_F: Tensor | None = None
    sigma_offset: Tensor | None = None
    ops: Any = None


def _spectral_diag(lam: Tensor, mu: float, sigma: float, eps: float) -> Tensor:
    lam = lam.clamp_min(0.0)
    return mu * lam**2 + sigma * lam + eps


@dataclass
class _Operators:
    """``C_tt``, its preconditioner and the pieces of the gradient, in one basis.

    Dense problems use the SNPs or the eigenbasis of ``R_tt`` (``rotate=True``): there
    ``C~ = Q_t' C_tt Q_t = G diag(F) G' + diag(sigma lambda + eps)`` with ``G = Q_t' R[t, :]``,
    products cost ``2 n_t m + n_t`` per column instead of ``2 n_t m + n_t^2``, and the
    ``"target"`` preconditioner is diagonal. Gaussian probes are rotation-invariant, so the
    estimators are the same in either basis. Banded problems use the padded target rows of a
    :class:`~analysislib.gwas.banded.BandedWindow`.
    """

    matvec: Callable[[Tensor], Tensor]
    precond: Callable[[Tensor], Tensor] | None
    ut: Callable[[Tensor], Tensor]  # V -> U' V, restricted to the window's SNPs (dC/dF_j = U_j U_j')
    sigma_op: Callable[[Tensor], Tensor]  # d C / d sigma, applied to vectors
    z: Tensor  # right-hand side; its length is the operator's size
    real_rows: Tensor | None = None  # padded layouts: which rows are targets
    # () -> (V -> M^-1/2 C M^-T/2 V, log|M|) for the preconditioned SLQ log-determinant
    whitened: Callable[[], tuple[Callable[[Tensor], Tensor], float]] | None = None
    # () -> (diag(U' M^-1 U), tr(M^-1 R_tt)) exactly, M the preconditioner: the Hutchinson
    # control variates of d log|C| / dF and d log|C| / d sigma
    precond_trace: Callable[[], tuple[Tensor, Tensor]] | None = None


def _make_operators(state: _CGState, F: Tensor, sigma: float, *,
                    rotate: bool | None = None) -> _Operators:
    p = state.p
    mu = float(F.mean())
    if state.preconditioner not in ("spectral", "target", None):
        raise InvalidArgumentError(
            f"preconditioner must be 'spectral', 'target' or None, got {state.preconditioner!r}")
    if rotate is None:
        rotate = state.preconditioner == "target"
    if rotate:
        G, lam = state.factor.G, state.factor.rtt_eigvals
        s = sigma * lam + p.eps
        d_t = 1.0 / _spectral_diag(lam, mu, sigma, p.eps)

        def matvec(V: Tensor) -> Tensor:
            return G @ (F[:, None] * (G.T @ V)) + s[:, None] * V

        def diag_precond(V: Tensor) -> Tensor:
            return d_t[:, None] * V

        return _Operators(matvec, diag_precond if state.preconditioner == "target" else None,
                          lambda V: G.T @ V, lambda V: lam[:, None] * V,
                          state.factor.rtt_eigvecs.T @ p.z,
                          whitened=lambda: _spectral_whitening(state, matvec, mu, sigma))

    def matvec(V: Tensor) -> Tensor:
        return p.U @ (F[:, None] * (p.U.T @ V)) + sigma * (p.R_tt @ V) + p.eps * V

    precond = None
    if state.preconditioner == "spectral":
        Qw = state.factor.q_target
        d = 1.0 / _spectral_diag(state.factor.r_eigvals, mu, sigma, p.eps)

        def precond(V: Tensor) -> Tensor:
            return Qw @ (d[:, None] * (Qw.T @ V))
    elif state.preconditioner == "target":
        Qt = state.factor.rtt_eigvecs
        d_t = 1.0 / _spectral_diag(state.factor.rtt_eigvals, mu, sigma, p.eps)

        def precond(V: Tensor) -> Tensor:
            return Qt @ (d_t[:, None] * (Qt.T @ V))

    def whitened() -> tuple[Callable[[Tensor], Tensor], float]:
        rot = _make_operators(state, F, sigma, rotate=True)
        return _spectral_whitening(state, rot.matvec, mu, sigma)

    return _Operators(matvec, precond, lambda V: p.U.T @ V, lambda V: p.R_tt @ V, p.z,
                      whitened=whitened)


def _spectral_whitening(state: _CGState, rotated_matvec: Callable[[Tensor], Tensor], mu: float,
                        sigma: float) -> tuple[Callable[[Tensor], Tensor], float]:
    """``M^-1/2 C M^-1/2`` in the eigenbasis of ``R_tt``, ``M`` the ``"target"`` approximation."""
    e = _spectral_diag(state.factor.rtt_eigvals, mu, sigma, state.p.eps)
    isq = e.rsqrt()

    def whitened(V: Tensor) -> Tensor:
        return isq[:, None] * rotated_matvec(isq[:, None] * V)

    return whitened, float(torch.log(e).sum())


def _banded_operators(state: _CGState, F: Tensor, sigma: float) -> _Operators:
    """``C_tt`` on the padded rows of a banded window; preconditioners from its blocks."""
    bw = state.banded
    F_cols = bw.pad_window(F)
    matvec = bw.c_operator(F_cols, sigma, state.eps)
    window = slice(bw.pad, bw.pad + bw.n_snps)
    if state.preconditioner not in ("block", "tridiagonal", None):
        raise InvalidArgumentError("preconditioner must be 'block', 'tridiagonal' or None for "
                         f"method='banded_cg', got {state.preconditioner!r}")
    factor: tuple[Tensor, Tensor | None] | None = None
    if state.preconditioner is not None:
        D, B = bw.c_blocks(F_cols, sigma, state.eps)
        factor = ((block_jacobi(D), None) if state.preconditioner == "block"
                  else block_cholesky(D, B))

    def precond(V: Tensor) -> Tensor:
        return block_solve(*factor, V)

    def whitened() -> tuple[Callable[[Tensor], Tensor], float]:
        if factor is None:
            return matvec, 0.0
        L, M = factor
        return (lambda V: block_lower_solve(L, M, matvec(block_upper_solve(L, M, V))),
                float(block_logdet(L)))

    def precond_trace() -> tuple[Tensor, Tensor]:
        Z = selected_inverse(*factor)
        return bw.quadratic_diag(*Z), bw.rtt_trace(*Z)

    return _Operators(matvec, precond if factor is not None else None,
                      lambda V: bw.ut_mul(V)[window], bw.rtt_mul, state.z,
                      real_rows=bw.real_rows(), whitened=whitened,
                      precond_trace=precond_trace if factor is not None else None)


def _slq_logdet(matvec: Callable[[Tensor], Tensor], probes: Tensor, steps: int) -> Tensor:
    """Stochastic Lanczos quadrature of ``tr log(A)``: one estimate per probe column."""
    n, k = probes.shape
    steps = max(1, min(int(steps), n))
    norms = probes.norm(dim=0)
    q = probes / norms
    basis = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(k, dtype=_DTYPE, device=q.device)
    alive = torch.ones(k, dtype=torch.bool, device=q.device)
    for j in range(steps):
        w = matvec(q)
        a = (q * w).sum(0)
        w = w - a * q - beta_prev * q_prev
        stack = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice for stability
            w = w - (stack * (stack * w).sum(1, keepdim=True)).sum(0)
        alphas.append(torch.where(alive, a, torch.ones_like(a)))
        if j == steps - 1:
            break
        b = w.norm(dim=0)
        alive = alive & (b > 1e-10 * a.abs().clamp_min(1e-300))
        b = torch.where(alive, b, torch.zeros_like(b))
        betas.append(b)
        if not bool(alive.any()):  # every Krylov space is exhausted (e.g. an exact M)
            break
        q_prev, beta_prev = q, b
        q = torch.where(alive, w / torch.where(alive, b, torch.ones_like(b)), torch.zeros_like(w))
        basis.append(q)
    J = len(alphas)
    T = torch.zeros(k, J, J, dtype=_DTYPE, device=q.device)
    idx = torch.arange(J, device=q.device)
    T[:, idx, idx] = torch.stack(alphas, dim=1)
    if J > 1:
        off = torch.stack(betas[:J - 1], dim=1)
        T[:, idx[:-1], idx[1:]] = off
        T[:, idx[1:], idx[:-1]] = off
    theta, vecs = torch.linalg.eigh(T)
    tau2 = vecs[:, 0, :] ** 2
    return norms**2 * (tau2 * torch.log(theta.clamp_min(1e-300))).sum(1)


def _draw(state: _CGState, ops: _Operators, k: int, kind: str) -> Tensor:
    """``k`` Gaussian or Rademacher probe columns, zero on padded rows."""
    if kind == "gaussian":
        P = torch.randn(ops.z.shape[0], k, dtype=_DTYPE, generator=state.generator, device="cpu")
    else:
        P = torch.randint(0, 2, (ops.z.shape[0], k), generator=state.generator,
                          device="cpu").to(_DTYPE) * 2 - 1
    P = P.to(ops.z.device)
    return P if ops.real_rows is None else P * ops.real_rows[:, None]


def _unit_probes(ops: _Operators) -> Tensor:
    eye = torch.eye(ops.z.shape[0], dtype=_DTYPE, device=ops.z.device)
    return eye if ops.real_rows is None else eye[:, ops.real_rows]


def _more_probes(have: int, rel_stderr: float, target: float, cap: int) -> int:
    """Extra probes for a relative standard error ``target`` (it falls as ``1/sqrt(S)``)."""
    if not rel_stderr > target or have >= cap:
        return 0
    # 10% over the estimate, since the variance itself is estimated from the probes so far
    return min(cap, math.ceil(1.1 * have * (rel_stderr / target) ** 2)) - have


class _IterativeNLL(torch.autograd.Function):
    """``log|C_tt| + z'C_tt^-1 z`` by PCG; Hutchinson gradient of the log-determinant.

    Probe counts follow stated variance targets: the Hutchinson estimate of ``d log|C| / dF``
    starts with ``min_probes`` Gaussian probes (solved in one block with ``z``) and adds one more
    block, sized from the observed variance, when the standard error it puts on the gradient
    ``d(log|C| + z'C^-1 z) / dF`` exceeds ``vtol`` relative to that gradient (norms over the
    window's SNPs); the SLQ log-determinant starts with ``slq_probes`` and adds a block when its
    standard error per target SNP exceeds ``logdet_tol``.
    """

    @staticmethod
    def forward(ctx: Any, log_F: Tensor, sigma: Tensor, state: _CGState) -> Tensor:
        F = torch.exp(log_F.detach())
        sig = float(sigma.detach())
        ops = (_banded_operators(state, F, sig) if state.banded is not None
               else _make_operators(state, F, sig))
        n_t = state.banded.n_t if state.banded is not None else state.p.n_t
        probes = None
        if state.need_grad:
            probes = (_unit_probes(ops) if state.vtol == 0
                      else _draw(state, ops, state.min_probes, "gaussian"))
            rhs = torch.cat([ops.z[:, None], probes], dim=1)
        else:
            rhs = ops.z[:, None]
        res = pcg(ops.matvec, rhs, ops.precond, tol=state.tol, max_iter=state.max_iter)
        solves, iterations = res.x, [res.iterations]
        converged, residual = bool(res.converged.all()), float(res.relative_residual.max())
        grad_rel_stderr = 0.0
        if probes is not None:
            X, P = solves[:, 1:], probes
            # control variate (Wenger et al. 2022, ICML, "Preconditioning for scalable GP
            # hyperparameter optimization"): tr(C^-1 dC) = tr(M^-1 dC) + tr((C^-1 - M^-1) dC),
            # the first term exact from the preconditioner's blocks, probes only for the second
            exact, state.sigma_offset = (ops.precond_trace()
                                         if state.vtol > 0 and ops.precond_trace else (None, None))

            def per_probe(X: Tensor, P: Tensor) -> Tensor:
                UP = ops.ut(P)
                if exact is None:
                    return ops.ut(X) * UP
                return ops.ut(X - ops.precond(P)) * UP

            offset = 0.0 if exact is None else exact
            terms = per_probe(X, P)  # (m, S): per-probe estimates of d log|C| / dF - offset
            if state.vtol > 0:
                # relative to the whole gradient d(log|C| + z'C^-1 z)/dF: its quadratic part,
                # -(U' alpha)^2, is exact given the solve
                quad_grad = ops.ut(solves[:, :1])[:, 0] ** 2

                def rel_stderr(t: Tensor) -> float:
                    se = t.std(1).norm() / math.sqrt(t.shape[1])
                    return float(se / (offset + t.mean(1) - quad_grad).norm().clamp_min(1e-300))

                grad_rel_stderr = rel_stderr(terms)
                while extra := _more_probes(probes.shape[1], grad_rel_stderr, state.vtol,
                                            state.max_probes):
                    P, P2 = probes, _draw(state, ops, extra, "gaussian")
                    res2 = pcg(ops.matvec, P2, ops.precond, tol=state.tol,
                               max_iter=state.max_iter)
                    solves, probes = torch.cat([solves, res2.x], 1), torch.cat([P, P2], 1)
                    iterations.append(res2.iterations)
                    converged = converged and bool(res2.converged.all())
                    residual = max(residual, float(res2.relative_residual.max()))
                    terms = torch.cat([terms, per_probe(res2.x, P2)], 1)
                    grad_rel_stderr = rel_stderr(terms)
                if grad_rel_stderr > state.vtol:
                    warnings.warn(
                        f"Hutchinson gradient: relative standard error {grad_rel_stderr:.3f} "
                        f"after {probes.shape[1]} probes (max_probes) misses vtol={state.vtol}",
                        RuntimeWarning, stacklevel=4)
                state.dlogdet_F = offset + terms.mean(1)
            else:
                state.dlogdet_F = terms.sum(1)  # unit vectors: the exact trace
        quad = ops.z @ solves[:, 0]
        if not converged:
            warnings.warn(
                f"PCG did not reach tol={state.tol} in {state.max_iter} iterations (largest "
                f"relative residual {residual:.2e})", RuntimeWarning, stacklevel=4)
        if state.logdet == "exact":
            if state.banded is not None:
                bw = state.banded
                L, _ = block_cholesky(*bw.c_blocks(bw.pad_window(F), sig, state.eps))
                logdet = float(block_logdet(L))
            else:
                L = _cholesky(_dense_C(_replace_sigma(state.p, sig), F), "C_tt")
                logdet = float(2.0 * torch.log(torch.diagonal(L)).sum())
            stderr, how = 0.0, "exact"
        elif state.logdet == "slq":
            # log|C| = log|M| + tr log(M^-1/2 C M^-1/2), M the preconditioner's approximation
            whitened, logdet_m = ops.whitened()
            est = _slq_logdet(whitened, _draw(state, ops, state.slq_probes, "rademacher"),
                              state.lanczos_steps)
            while state.logdet_tol is not None and est.numel() > 1 and (extra := _more_probes(
                    est.numel(), float(est.std() / math.sqrt(est.numel())) / n_t,
                    state.logdet_tol, state.max_slq_probes)):
                est = torch.cat([est, _slq_logdet(
                    whitened, _draw(state, ops, extra, "rademacher"), state.lanczos_steps)])
            stderr = (float(est.std() / math.sqrt(est.numel())) if est.numel() > 1
                      else float("nan"))
            if state.logdet_tol is not None and stderr / n_t > state.logdet_tol:
                warnings.warn(
                    f"SLQ log-determinant: standard error {stderr / n_t:.2e} per target SNP after "
                    f"{est.numel()} probes (max_slq_probes) misses logdet_tol={state.logdet_tol}",
                    RuntimeWarning, stacklevel=4)
            logdet, how = logdet_m + float(est.mean()), "slq"
        else:
            raise InvalidArgumentError(f"logdet must be 'slq' or 'exact', got {state.logdet!r}")
        probe_iters = torch.cat(iterations)[1:]
        state.info = NLLInfo(
            "banded_cg" if state.banded is not None else "cg", logdet, float(quad),
            cg_iterations=int(res.iterations[0]),
            probe_iterations=int(probe_iters.max()) if probe_iters.numel() else 0,
            n_probes=0 if probes is None else int(probes.shape[1]), converged=converged,
            relative_residual=residual, logdet_estimate=how, logdet_stderr=stderr,
            grad_rel_stderr=grad_rel_stderr)
        state.solves, state.probes, state.ops = solves, probes, ops
        ctx.state = state
        ctx.save_for_backward(F)
        return torch.as_tensor(logdet + float(quad), dtype=_DTYPE, device=ops.z.device)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (F,) = ctx.saved_tensors
        state: _CGState = ctx.state
        if state.probes is None:
            raise RuntimeError("the CG likelihood was evaluated without gradient probes")
        ops: _Operators = state.ops
        alpha = state.solves[:, :1]
        X = state.solves[:, 1:]
        P = state.probes
        Ua = ops.ut(alpha)[:, 0]
        # d quad / dF_j = -(U' alpha)_j^2 ; d logdet / dF_j ~ mean_s (U' C^-1 p_s)_j (U' p_s)_j
        # (forward); unit-vector probes (vtol = 0) sum to the exact trace
        g_logF = grad_out * F * (state.dlogdet_F - Ua**2)
        g_sigma = None
        if ctx.needs_input_grad[1]:
            scale = 1.0 if state.vtol == 0 else 1.0 / P.shape[1]
            if state.sigma_offset is None:
                d_logdet_sigma = (X * ops.sigma_op(P)).sum() * scale
            else:  # the same control variate as for F
                d_logdet_sigma = (state.sigma_offset
                                  + ((X - ops.precond(P)) * ops.sigma_op(P)).sum() * scale)
            d_quad_sigma = -(alpha[:, 0] @ ops.sigma_op(alpha)[:, 0])
            g_sigma = grad_out * (d_logdet_sigma + d_quad_sigma)
        return g_logF, g_sigma, None


def _replace_sigma(p: _Problem, sigma: float) -> _Problem:
    return _Problem(z=p.z, U=p.U, R_tt=p.R_tt, log_F=p.log_F, sigma=sigma, eps=p.eps,
                    target=p.target)


_CG_OPTIONS = {"tol", "max_iter", "vtol", "min_probes", "max_probes", "seed", "generator",
               "logdet", "slq_probes", "logdet_tol", "max_slq_probes", "lanczos_steps"}


def _cg_state(options: dict[str, Any], need_grad: bool, **fields: Any) -> _CGState:
    vtol = float(options.get("vtol", 0.1))
    if vtol < 0:
        raise InvalidArgumentError(f"vtol must be >= 0, got {vtol}")
    min_probes, max_probes = int(options.get("min_probes", 16)), int(options.get("max_probes",
                                                                                 1024))
    if not 2 <= min_probes <= max_probes:
        raise InvalidArgumentError(f"need 2 <= min_probes <= max_probes, got {min_probes}, {max_probes}")
    logdet_tol = options.get("logdet_tol", 5e-3)
    if logdet_tol is not None and not float(logdet_tol) > 0:
        raise InvalidArgumentError(f"logdet_tol must be positive or None, got {logdet_tol}")
    generator = options.get("generator")
    if generator is None:
        generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
    return _CGState(
        tol=float(options.get("tol", 1e-6)), max_iter=int(options.get("max_iter", 1000)),
        vtol=vtol, min_probes=min_probes, max_probes=max_probes, generator=generator,
        logdet=options.get("logdet", "slq"), slq_probes=int(options.get("slq_probes", 16)),
        logdet_tol=None if logdet_tol is None else float(logdet_tol),
        max_slq_probes=int(options.get("max_slq_probes", 256)),
        lanczos_steps=int(options.get("lanczos_steps", 40)), need_grad=need_grad, **fields)


def _needs_grad(log_F: Tensor, sigma: Tensor) -> bool:
    return torch.is_grad_enabled() and (log_F.requires_grad or sigma.requires_grad)


def _as_sigma_tensor(sigma: Tensor | float, device: torch.device) -> Tensor:
    return sigma if isinstance(sigma, torch.Tensor) else torch.tensor(sigma, dtype=_DTYPE,
                                                                      device=device)


def _solve_banded(bw: BandedWindow, z: Tensor, log_F: Tensor, sigma: Tensor | float,
                  eps: float) -> tuple[Tensor, Tensor, NLLInfo]:
    """Exact: block-tridiagonal Cholesky of the banded ``C_tt``; autograd throughout."""
    D, B = bw.c_blocks(bw.pad_window(torch.exp(log_F)), sigma, eps)
    L, M = block_cholesky(D, B, "C_tt = U diag(F) U' + sigma R_tt + eps I (banded)")
    zp = bw.pad_targets(z)[:, None]
    quad = (zp * block_solve(L, M, zp)).sum()
    logdet = block_logdet(L)
    return logdet, quad, NLLInfo("banded", float(logdet.detach()), float(quad.detach()))
