"""DeepWAS full GWAS marginal likelihood on banded LD windows, with three solvers.

Follows Amin, Potapczynski & Wilson (ICML 2025, arXiv 2506.19598, section 3) and the authors'
DeepWAS code (``src/models``: ``SNPTrainerChol``, ``WASP_new``, ``CG_iterators.py``). With standardised genotypes, per-SNP prior ``beta_j ~ N(0, F_j)`` and ``z = sqrt(N) beta_hat``,

    z ~ N(0, C),    C = R diag(F) R + sigma R + eps I,

where ``F`` is the prior variance on the z scale (the network's ``log_F_N``), ``sigma`` the
residual-variance scale (1 in the UKBB config) and ``eps = 1e-4``. The genome is cut into
non-overlapping *target* segments, each with flanking LD context (:func:`plan_windows`; DeepWAS
uses the middle 1 Mb of 3 Mb windows). A window's loss is the per-target-SNP negative
log-likelihood of the target z under ``C_tt`` (the targets' block of ``C``), where the sum over
``F`` runs over the whole window, so causal SNPs in the flanks contribute; LD beyond the window
is treated as zero and window losses are summed as independent (a composite likelihood):

    nll = (0.5 / n_t) [log|C_tt| + z_t' C_tt^-1 z_t + n_t log 2 pi]   (- 0.5 log N, optional).

Solvers (``method=`` of :func:`window_nll`):

``"cholesky"``
    Exact: dense ``C_tt`` and its Cholesky factor (``SNPTrainerChol``). Autograd throughout.
``"woodbury"``
    Exact: the matrix determinant lemma and Woodbury identity of ``WASP_new`` (the loss both
    DeepWAS configs train with). The base matrix ``B = sigma R_tt + eps I`` is diagonalised once
    by ``eigh(R_tt)`` (independent of ``F`` and ``sigma``, so cacheable with
    :func:`prepare_window`), ``W = U' B^-1 U`` with ``U = R[t, :]`` and
    ``A = I + F^1/2 W F^1/2``; ``log|C_tt| = log|B| + log|A|`` and
    ``z'C^-1 z = z'B^-1 z - (F^1/2 v)' A^-1 (F^1/2 v)`` with ``v = U'B^-1 z``. Unlike
    ``WASP_new``, the ``eps I`` term is kept inside ``B`` (``WASP_new`` uses the pseudo-inverse of
    ``sigma R_tt`` and drops ``eps``), so the value equals the Cholesky one; dropping
    eigen-directions of ``R_tt`` with eigenvalue ``<= rank_tol`` (``WASP_new`` drops those
    ``<= eps``) is an option that is exact when ``R`` is exactly PSD of low rank. ``A`` is
    ``m x m`` in ``WASP_new``; by Sylvester's identity the same determinant and solve can be done
    in the ``r x r`` eigen-space of the kept directions, which ``inner="auto"`` picks when smaller.
    Autograd throughout (``WASP_new``'s detached sign-flip trick is not needed).
``"cg"``
    Iterative (``src/models/CG_iterators.py``, not wired into DeepWAS's ``train.py``): the solve
    ``C_tt^-1 z`` by batched preconditioned conjugate gradients, only matrix-vector products with
    ``U`` and ``R_tt``. Preconditioner (``preconditioner="spectral"``, the form in ``CG_iterators.py``): with
    ``R = Q diag(lambda) Q'`` (``eigh`` of the whole window) and ``mu = mean(F)``,
    ``P = Q_t diag(1 / (mu lambda^2 + sigma lambda + eps)) Q_t'`` (``Q_t`` = target rows of
    ``Q``). It is the exact inverse only when ``F`` is constant *and* the targets are the whole
    window; with flanks it is the target block of the inverse rather than the inverse of the
    target block, and on panel LD with flanks it leaves hundreds of iterations (see
    ``benchmarks/gwas_likelihood_solvers.py``). ``preconditioner="target"`` (added here) uses
    the same formula on ``eigh(R_tt)`` instead: cheaper to set up (``O(n_t^3)`` against
    ``O(m^3)``), 15-35 iterations in the same cases, and run in the eigenbasis of ``R_tt``,
    where ``C_tt`` is ``G diag(F) G' + diag(sigma lambda + eps)`` (``G = Q_t' R[t, :]``) and the
    preconditioner is diagonal, so no ``n_t x n_t`` products remain. The gradient of
    ``log|C_tt|`` is the Hutchinson estimator ``tr(C^-1 dC) ~ (1/S) sum_s (C^-1 p_s)' dC p_s`` with
    ``S`` Gaussian probes (see below) solved by the same PCG (``vtol=0`` uses the
    ``n_t`` unit vectors, which makes the gradient exact). The original's forward returns a
    random placeholder for ``log|C|``; here the forward returns, with ``logdet="slq"``
    (default), a preconditioned stochastic Lanczos quadrature estimate
    ``log|M| + tr log(M^-1/2 C M^-1/2)`` with ``M`` the ``"target"`` spectral approximation of
    ``C_tt`` (so ``log|M|`` is exact and the Lanczos part only has to resolve a well-conditioned
    operator), Rademacher probes and full reorthogonalisation; or, with ``logdet="exact"``, the
    exact value from a dense Cholesky factor (for validation: it costs as much as the exact
    solver). The quadratic term is always exact up to the CG tolerance, and its gradient is
    exact given the solve. Probe counts follow stated variance targets rather than a fixed
    number: ``vtol`` (default 0.1) is the largest standard error the Hutchinson estimate may put
    on the gradient, relative to the gradient's norm; probes start at ``min_probes`` (16) and are
    added, in one block sized from the observed variance, up to ``max_probes`` (1024).
    ``logdet_tol`` (default 5e-3) bounds the SLQ standard error per target SNP in the same way
    (``slq_probes`` to start, at most ``max_slq_probes``). A missed target warns.
``"banded"``
    Exact on a banded LD window (:mod:`analysislib.gwas.banded`): ``R`` kept to ``bandwidth``
    SNPs either side of the diagonal (Bartlett-tapered by default, so it stays positive
    semi-definite), where ``C_tt`` is block-tridiagonal in blocks of ``2 b`` and its Cholesky
    factor costs ``O(n_t b^2)`` instead of ``O(n_t^2 m)`` to form and ``O(n_t^3)`` to factor.
    Autograd throughout, so the gradient is exact.
``"banded_cg"``
    The iterative solver on the same banded window: PCG with ``O(n_t b)`` products, Hutchinson
    gradient and SLQ log-determinant as for ``"cg"``, and the preconditioner ``"tridiagonal"``
    (default: the block-tridiagonal Cholesky factor of ``C_tt``, so PCG needs 1-2 iterations and
    SLQ is exact), ``"block"`` (block-Jacobi, its diagonal blocks only: cheaper to factor, but
    165 iterations on an 8,000-SNP window in ``benchmarks/gwas_likelihood_solvers.py``) or
    ``None``. Products and solves are batched over every right-hand side, so ``z`` and all
    probes go through PCG as one block.

Choices the paper leaves open, made here: ``sigma`` may be a float (fixed, as in the UKBB
config) or a tensor (trained, the ``train_sigma`` option); the ``-n_t log N`` Jacobian from z to
``beta_hat`` is included only when the GWAS sample size ``n`` is given; window planning in base
pairs uses a grid anchored at multiples of ``target_bp`` (DeepWAS's UKBB LD files start at
multiples of 1 Mb); CG stops at ``||r|| <= tol ||b||`` per column.

This module validates the inputs, factors windows (:func:`prepare_window`) and evaluates the
likelihood; window planning and LD extraction are in :mod:`analysislib.gwas.windows`, the solvers
and :func:`pcg` in :mod:`analysislib.gwas.solvers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from analysislib.errors import InvalidArgumentError, NotPositiveDefiniteError
from analysislib.gwas.banded import BandedWindow, band_window

# Windows and solvers moved to analysislib.gwas.windows and analysislib.gwas.solvers; their
# public names are re-exported here for one release.
from analysislib.gwas.solvers import (
    _CG_OPTIONS,
    CGResult,
    NLLInfo,
    WindowFactor,
    _as_sigma_tensor,
    _cg_state,
    _CGState,
    _cholesky,
    _IterativeNLL,
    _make_operators,
    _needs_grad,
    _Problem,
    _solve_banded,
    _solve_cholesky,
    _solve_woodbury,
    pcg,
)
from analysislib.gwas.windows import (
    Window,
    _as_matrix,
    _PerTensor,
    make_psd,
    plan_windows,
    window_matrix,
)

__all__ = [
    "LOG_2PI",
    "METHODS",
    "CGResult",
    "NLLInfo",
    "NotPositiveDefiniteError",
    "Window",
    "WindowFactor",
    "cg_operators",
    "composite_nll",
    "make_psd",
    "null_nll",
    "pcg",
    "plan_windows",
    "prepare_window",
    "window_matrix",
    "window_nll",
]

#: ``log(2 pi)``.
LOG_2PI = math.log(2.0 * math.pi)

#: Solvers accepted by :func:`window_nll`.
METHODS = ("cholesky", "woodbury", "cg", "banded", "banded_cg")

Method = Literal["cholesky", "woodbury", "cg", "banded", "banded_cg"]
Tensor = torch.Tensor
_DTYPE = torch.float64


# ------------------------------------------------------------------------------------ inputs


#: Banded forms of dense window tensors, per (target, bandwidth, taper, device).
_BANDED = _PerTensor()


def _local_slice(target: slice, m: int) -> slice:
    if not isinstance(target, slice):
        raise TypeError(f"target must be a slice of the window, got {type(target).__name__}")
    start, stop, step = target.indices(m)
    if step != 1 or stop <= start:
        raise InvalidArgumentError(
            f"target must be a non-empty contiguous slice inside the window of {m} SNPs, "
            f"got {target}")
    return slice(start, stop)


def _check_inputs(
    z_target: Any, log_F: Any, m: int, *, target: slice, sigma: Any, eps: float,
) -> tuple[Tensor, Tensor, Tensor | float, slice]:
    """Validated ``z`` (float64), ``log_F``, ``sigma`` and the local target slice."""
    device = log_F.device if isinstance(log_F, torch.Tensor) else torch.device("cpu")
    if isinstance(log_F, torch.Tensor):
        log_F_t = log_F if log_F.dtype == _DTYPE else log_F.to(_DTYPE)
    else:
        log_F_t = torch.as_tensor(np.asarray(log_F, dtype=np.float64))
    t = _local_slice(target, m)
    if log_F_t.shape != (m,):
        raise InvalidArgumentError(
            f"log_F has shape {tuple(log_F_t.shape)}; expected ({m},), one value per SNP of the "
            "window (flanks included)")
    if not torch.isfinite(log_F_t.detach()).all():
        raise InvalidArgumentError("log_F contains NaN or infinite values")
    if isinstance(z_target, torch.Tensor):
        z = z_target.detach().to(device=device, dtype=_DTYPE)
    else:
        z = torch.as_tensor(np.asarray(z_target, dtype=np.float64), device=device)
    n_t = t.stop - t.start
    if z.shape != (n_t,):
        raise InvalidArgumentError(
            f"z_target has shape {tuple(z.shape)}; expected ({n_t},) for target {t.start}:{t.stop}")
    if not torch.isfinite(z).all():
        raise InvalidArgumentError("z_target contains NaN or infinite values")
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise InvalidArgumentError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
        sig: Tensor | float = sigma.reshape(()).to(device=device, dtype=_DTYPE)
        sig_value = float(sig.detach())
    else:
        sig = float(sigma)
        sig_value = sig
    if not sig_value > 0:
        raise InvalidArgumentError(f"sigma must be positive, got {sig_value}")
    if not float(eps) >= 0:
        raise InvalidArgumentError(f"eps must be non-negative, got {eps}")
    return z, log_F_t, sig, t


def _prepare_problem(
    z_target: Any, R_window: Any, log_F: Any, *, target: slice, sigma: Any, eps: float
) -> _Problem:
    device = log_F.device if isinstance(log_F, torch.Tensor) else torch.device("cpu")
    R = _as_matrix(R_window, "R_window", device)
    z, log_F_t, sig, t = _check_inputs(z_target, log_F, R.shape[0], target=target, sigma=sigma,
                                       eps=eps)
    U = R[t, :]
    return _Problem(z=z, U=U, R_tt=U[:, t].clone(), log_F=log_F_t, sigma=sig, eps=float(eps),
                    target=t)


# ------------------------------------------------------------------------------------ factors


def _check_psd_eigvals(lam: Tensor, name: str, psd_tol: float) -> None:
    top = max(1.0, float(lam.abs().max())) if lam.numel() else 1.0
    low = float(lam.min())
    if low < -psd_tol * top:
        raise NotPositiveDefiniteError(
            f"{name} is not positive semi-definite (smallest eigenvalue {low:.3g}, largest "
            f"{float(lam.max()):.3g}); clip it with make_psd(R) first")


def prepare_window(
    R_window: Any,
    *,
    target: slice,
    spectral: bool = True,
    psd_tol: float = 1e-8,
    device: str | torch.device = "cpu",
) -> WindowFactor:
    """Precompute the ``F``-independent factorisations of one window for reuse across steps.

    Parameters
    ----------
    R_window
        Dense ``(m, m)`` LD matrix of the window.
    target
        Local slice of the target SNPs.
    spectral
        Also compute ``eigh`` of the whole window for the spectral CG preconditioner
        (``O(m^3)``; not needed by ``"woodbury"`` or ``preconditioner="target"``).
    psd_tol
        Eigenvalues below ``-psd_tol * max(1, |lambda|_max)`` raise
        :class:`NotPositiveDefiniteError`.
    device
        Torch device for the factors.

    Returns
    -------
    WindowFactor
    """
    R = _as_matrix(R_window, "R_window", torch.device(device))
    t = _local_slice(target, R.shape[0])
    U = R[t, :]
    lam_t, Q_t = torch.linalg.eigh(U[:, t])
    _check_psd_eigvals(lam_t, "R_window[target, target]", psd_tol)
    factor = WindowFactor(n_snps=R.shape[0], target=t, rtt_eigvals=lam_t, rtt_eigvecs=Q_t,
                          G=Q_t.T @ U)
    if spectral:
        lam, Q = torch.linalg.eigh(R)
        _check_psd_eigvals(lam, "R_window", psd_tol)
        factor.r_eigvals, factor.q_target = lam, Q[t, :].contiguous()
    return factor


def _factor_for(p: _Problem, factor: WindowFactor | None, spectral: bool,
                R_window: Any) -> WindowFactor:
    if factor is None:
        return prepare_window(R_window, target=p.target, spectral=spectral, device=p.U.device)
    if factor.n_snps != p.m or (factor.target.start, factor.target.stop) != (
            p.target.start, p.target.stop):
        raise InvalidArgumentError(
            f"factor was prepared for a window of {factor.n_snps} SNPs with target "
            f"{factor.target.start}:{factor.target.stop}, not {p.m} SNPs with target "
            f"{p.target.start}:{p.target.stop}")
    if spectral and factor.r_eigvals is None:
        raise InvalidArgumentError("the spectral preconditioner needs prepare_window(..., spectral=True)")
    return factor


# ------------------------------------------------------------------------------------ likelihood


def _nll_from_parts(logdet: Tensor, quad: Tensor, n_t: int, n: float | None) -> Tensor:
    nll = 0.5 / n_t * (logdet + quad + n_t * LOG_2PI)
    if n is not None:
        if not float(n) > 0:
            raise InvalidArgumentError(f"n (GWAS sample size) must be positive, got {n}")
        nll = nll - 0.5 * math.log(float(n))
    return nll


def _solve_cg(p: _Problem, R_window: Any, options: dict[str, Any]) -> tuple[Tensor, NLLInfo]:
    unknown = set(options) - _CG_OPTIONS - {"factor", "preconditioner"}
    if unknown:
        raise TypeError(f"unknown options for method='cg': {sorted(unknown)}")
    preconditioner = options.get("preconditioner", "spectral")
    factor = _factor_for(p, options.get("factor"), preconditioner == "spectral", R_window)
    sigma_t = _as_sigma_tensor(p.sigma, p.z.device)
    state = _cg_state(options, _needs_grad(p.log_F, sigma_t), p=p, factor=factor,
                      preconditioner=preconditioner, eps=p.eps)
    total = _IterativeNLL.apply(p.log_F, sigma_t, state)
    return total, state.info


def _banded_for(R_window: Any, target: slice, options: dict[str, Any],
                device: torch.device) -> BandedWindow:
    """The window as a :class:`BandedWindow`: given one, or banded here from a dense window."""
    if isinstance(R_window, BandedWindow):
        if "bandwidth" in options or "taper" in options:
            raise TypeError("bandwidth and taper belong to band_window(); this window is "
                            f"already banded at {R_window.bandwidth} SNPs")
        if (target.start, target.stop) != (R_window.target.start, R_window.target.stop):
            raise InvalidArgumentError(
                f"the banded window was made for target {R_window.target.start}:"
                f"{R_window.target.stop}, not {target.start}:{target.stop}")
        return R_window
    if "bandwidth" not in options:
        raise TypeError("the banded methods need a BandedWindow (band_window(...)) or a dense "
                        "window with bandwidth=...")
    key = (target.start, target.stop, int(options["bandwidth"]), options.get("taper", "bartlett"),
           str(device))
    if not isinstance(R_window, torch.Tensor):
        return band_window(R_window, target=target, bandwidth=key[2], taper=key[3],
                           device=device)
    bands = _BANDED.get(R_window) or {}  # band a training window once, not every step
    if key not in bands:
        bands[key] = band_window(R_window, target=target, bandwidth=key[2], taper=key[3],
                                 device=device)
        _BANDED.set(R_window, bands)
    return bands[key]


def cg_operators(
    R_window: Any,
    log_F: Any,
    *,
    target: slice,
    sigma: float = 1.0,
    eps: float = 1e-4,
    preconditioner: str | None = "spectral",
    factor: WindowFactor | None = None,
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor] | None]:
    """The operators ``method="cg"`` uses, for :func:`pcg` (diagnostics, benchmarks).

    Parameters
    ----------
    R_window, log_F, target, sigma, eps
        As in :func:`window_nll` (``log_F`` is used without gradient).
    preconditioner
        ``"spectral"`` (``CG_iterators.py``'s ``P``), ``"target"`` or ``None``.
    factor
        A :class:`WindowFactor` to reuse; computed when ``None``.

    Returns
    -------
    (matvec, precond)
        ``V -> C_tt V`` and ``V -> P V`` (``None`` without a preconditioner), for ``V`` of shape
        ``(n_t, k)``.
    """
    lf = log_F.detach() if isinstance(log_F, torch.Tensor) else log_F
    t = _local_slice(target, np.shape(R_window)[0])
    p = _prepare_problem(np.zeros(t.stop - t.start), R_window, lf, target=t, sigma=sigma, eps=eps)
    fac = (_factor_for(p, factor, preconditioner == "spectral", R_window)
           if preconditioner is not None else factor)
    state = _CGState(p=p, factor=fac, preconditioner=preconditioner, tol=0.0, max_iter=0,
                     vtol=0.0, generator=torch.Generator(), logdet="exact", slq_probes=0,
                     lanczos_steps=0, need_grad=False)
    ops = _make_operators(state, torch.exp(p.log_F), float(sigma), rotate=False)
    return ops.matvec, ops.precond


def window_nll(
    z_target: Any,
    R_window: Any,
    log_F: Any,
    *,
    target: slice,
    sigma: float | Tensor = 1.0,
    eps: float = 1e-4,
    n: float | None = None,
    method: Method = "cholesky",
    return_info: bool = False,
    **solver_options: Any,
) -> Tensor | tuple[Tensor, NLLInfo]:
    """Per-target-SNP negative log-likelihood of one LD window (DeepWAS full likelihood).

    ``z_target ~ N(0, C_tt)`` with ``C = R diag(F) R + sigma R + eps I`` restricted to the target
    rows and columns; ``F = exp(log_F)`` runs over the whole window. Returns
    ``(0.5 / n_t) [log|C_tt| + z'C_tt^-1 z + n_t log 2 pi]``, minus ``0.5 log n`` when the GWAS
    sample size ``n`` is given (the ``-n_t log N`` Jacobian of DeepWAS's loss, which turns the
    NLL of z into that of ``beta_hat = z / sqrt(N)``).

    Parameters
    ----------
    z_target
        z-scores of the target SNPs, shape ``(n_t,)``.
    R_window
        Dense ``(m, m)`` LD matrix of the window (NumPy or torch; see :func:`window_matrix`), or
        for the banded methods a :class:`~analysislib.gwas.banded.BandedWindow`
        (:func:`~analysislib.gwas.banded.band_window`). A torch tensor is checked for symmetry
        (and, with ``bandwidth``, banded) once and reused while it is not modified.
    log_F
        Log prior variance (z scale) of every window SNP, shape ``(m,)``; a float64 tensor to
        differentiate (other dtypes are converted to float64).
    target
        Local slice of the targets inside the window (:attr:`Window.target`).
    sigma
        Residual-variance scale; a tensor to differentiate with respect to it.
    eps
        Diagonal jitter ``eps I`` (1e-4 in DeepWAS).
    n
        GWAS sample size for the Jacobian term; ``None`` leaves it out.
    method
        ``"cholesky"``, ``"woodbury"``, ``"cg"``, ``"banded"`` or ``"banded_cg"`` (see the
        module docstring).
    return_info
        Also return an :class:`NLLInfo` with the log-determinant, quadratic form and, for
        ``"cg"``, iteration counts.
    **solver_options
        ``"woodbury"``: ``factor`` (:class:`WindowFactor`), ``rank_tol`` (drop eigen-directions
        of ``R_tt`` with eigenvalue ``<=`` it; default ``None`` keeps all, exact), ``inner``
        (``"auto"``, ``"eigen"`` for the ``r x r`` form, ``"snps"`` for ``WASP_new``'s
        ``m x m`` form). ``"cg"``: ``factor``, ``preconditioner`` (``"spectral"`` default,
        ``"target"`` or ``None``), ``tol`` (1e-6), ``max_iter`` (1000), ``vtol`` (0.1: relative
        standard error target of the gradient; 0 for exact unit probes), ``min_probes`` (16),
        ``max_probes`` (1024), ``seed`` (0) or ``generator``, ``logdet`` (``"slq"`` default or
        ``"exact"``), ``slq_probes`` (16, the first SLQ block), ``logdet_tol`` (5e-3 per target
        SNP; ``None`` keeps ``slq_probes``), ``max_slq_probes`` (256), ``lanczos_steps`` (40).
        ``"banded"``: ``bandwidth`` and ``taper`` (``"bartlett"``) when ``R_window`` is dense.
        ``"banded_cg"``: those, ``preconditioner`` (``"tridiagonal"``, ``"block"`` or ``None``)
        and the ``"cg"`` options other than ``factor``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, NLLInfo)
        A float64 scalar, differentiable with respect to ``log_F`` (and ``sigma``). For
        ``"cg"`` its value uses the SLQ estimate of ``log|C_tt|`` unless ``logdet="exact"``,
        and its gradient uses the Hutchinson estimate unless ``vtol=0``.

    Raises
    ------
    ValueError
        Bad shapes, non-finite values, a non-symmetric ``R_window``, non-positive ``sigma``.
    NotPositiveDefiniteError
        ``C_tt`` (or ``R_window`` where its eigenvalues are computed) is not positive
        (semi-)definite.
    """
    if method in ("banded", "banded_cg"):
        m = R_window.n_snps if isinstance(R_window, BandedWindow) else np.shape(R_window)[0]
        z, log_F_t, sig, t = _check_inputs(z_target, log_F, m, target=target, sigma=sigma, eps=eps)
        cg_keys = _CG_OPTIONS | {"preconditioner"} if method == "banded_cg" else set()
        unknown = set(solver_options) - {"bandwidth", "taper"} - cg_keys
        if unknown:
            raise TypeError(f"unknown options for method={method!r}: {sorted(unknown)}")
        bw = _banded_for(R_window, t, solver_options, log_F_t.device)
        if method == "banded":
            logdet, quad, info = _solve_banded(bw, z, log_F_t, sig, float(eps))
            nll = _nll_from_parts(logdet, quad, bw.n_t, n)
        else:
            sigma_t = _as_sigma_tensor(sig, z.device)
            options = {k: v for k, v in solver_options.items() if k in cg_keys}
            state = _cg_state(options, _needs_grad(log_F_t, sigma_t), p=None, factor=None,
                              preconditioner=options.get("preconditioner", "tridiagonal"),
                              banded=bw,
                              z=bw.pad_targets(z), eps=float(eps))
            total = _IterativeNLL.apply(log_F_t, sigma_t, state)
            info = state.info
            nll = _nll_from_parts(total, torch.zeros((), dtype=_DTYPE, device=total.device),
                                  bw.n_t, n)
        return (nll, info) if return_info else nll
    p = _prepare_problem(z_target, R_window, log_F, target=target, sigma=sigma, eps=eps)
    if method == "cholesky":
        if solver_options:
            raise TypeError(f"unknown options for method='cholesky': {sorted(solver_options)}")
        logdet, quad, info = _solve_cholesky(p)
        nll = _nll_from_parts(logdet, quad, p.n_t, n)
    elif method == "woodbury":
        unknown = set(solver_options) - {"factor", "rank_tol", "inner"}
        if unknown:
            raise TypeError(f"unknown options for method='woodbury': {sorted(unknown)}")
        factor = _factor_for(p, solver_options.get("factor"), False, R_window)
        logdet, quad, info = _solve_woodbury(
            p, factor, solver_options.get("rank_tol"), solver_options.get("inner", "auto"))
        nll = _nll_from_parts(logdet, quad, p.n_t, n)
    elif method == "cg":
        total, info = _solve_cg(p, R_window, solver_options)
        nll = _nll_from_parts(total, torch.zeros((), dtype=_DTYPE, device=total.device), p.n_t, n)
    else:
        raise InvalidArgumentError(f"method must be one of {METHODS}, got {method!r}")
    return (nll, info) if return_info else nll


def null_nll(
    z_target: Any,
    R_window: Any,
    *,
    target: slice | None = None,
    sigma: float | Tensor = 1.0,
    eps: float = 1e-4,
    n: float | None = None,
) -> Tensor:
    """Per-target-SNP NLL of the null model ``F -> 0``: ``z_t ~ N(0, sigma R_tt + eps I)``.

    DeepWAS reports ``val_delta_loss`` = model NLL minus this one (negative is better).

    Parameters
    ----------
    z_target
        z-scores of the targets, ``(n_t,)``.
    R_window
        Dense LD matrix of the window (or of the targets only when ``target`` is ``None``).
    target
        Local slice of the targets; ``None`` means the whole matrix.
    sigma, eps, n
        As in :func:`window_nll`.

    Returns
    -------
    torch.Tensor
        Float64 scalar (differentiable in ``sigma`` when it is a tensor).
    """
    device = sigma.device if isinstance(sigma, torch.Tensor) else torch.device("cpu")
    R = _as_matrix(R_window, "R_window", device)
    t = _local_slice(target if target is not None else slice(None), R.shape[0])
    m = R.shape[0]
    p = _prepare_problem(z_target, R, torch.zeros(m, dtype=_DTYPE, device=device), target=t,
                         sigma=sigma, eps=eps)
    C = p.sigma * p.R_tt + p.eps * torch.eye(p.n_t, dtype=_DTYPE, device=device)
    L = _cholesky(0.5 * (C + C.T), "sigma R_tt + eps I")
    logdet = 2.0 * torch.log(torch.diagonal(L)).sum()
    quad = p.z @ torch.cholesky_solve(p.z[:, None], L)[:, 0]
    return _nll_from_parts(logdet, quad, p.n_t, n)


def composite_nll(
    z: Any,
    R_global: Any,
    log_F: Tensor,
    windows: Sequence[Window],
    *,
    upper_triangle: bool = False,
    **options: Any,
) -> Tensor:
    """Composite NLL over many windows, averaged per target SNP (genome-wide DeepWAS loss).

    Each window contributes ``n_t * window_nll``; the sum is divided by the number of target
    SNPs, so the result is the per-SNP NLL of the whole region.

    Parameters
    ----------
    z
        Genome-wide z-scores, ``(M,)``.
    R_global
        Global LD matrix in any form :func:`window_matrix` accepts.
    log_F
        Genome-wide log prior variances, ``(M,)`` (a tensor to differentiate).
    windows
        From :func:`plan_windows`.
    upper_triangle
        Passed to :func:`window_matrix`.
    **options
        Passed to :func:`window_nll` (``sigma``, ``eps``, ``n``, ``method``, solver options;
        a ``factor`` cannot be shared across windows and is rejected).

    Returns
    -------
    torch.Tensor
        Float64 scalar.
    """
    if "factor" in options or "return_info" in options:
        raise TypeError("composite_nll does not take factor or return_info")
    if not windows:
        raise InvalidArgumentError("composite_nll needs at least one window")
    z_all = torch.as_tensor(np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z,
                                       dtype=np.float64))
    if z_all.ndim != 1 or z_all.shape[0] != log_F.shape[0]:
        raise InvalidArgumentError(
            f"z has shape {tuple(z_all.shape)} and log_F {tuple(log_F.shape)}; both must be (M,)")
    total = torch.zeros((), dtype=_DTYPE, device=log_F.device)
    count = 0
    for w in windows:
        R_w = window_matrix(R_global, w, upper_triangle=upper_triangle)
        nll = window_nll(z_all[w.target_snps], R_w, log_F[w.snps], target=w.target, **options)
        total = total + w.n_targets * nll
        count += w.n_targets
    return total / count
