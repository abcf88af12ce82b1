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
"""

from __future__ import annotations

import itertools
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from analysislib.errors import NotPositiveDefiniteError
from analysislib.gwas.banded import (
    BandedWindow,
    band_window,
    block_cholesky,
    block_jacobi,
    block_logdet,
    block_lower_solve,
    block_solve,
    block_upper_solve,
    selected_inverse,
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


# ------------------------------------------------------------------------------------ windows


@dataclass(frozen=True)
class Window:
    """One LD window: SNPs ``[start, stop)`` with targets ``[target_start, target_stop)`` inside.

    Indices are global (positions in the genome-wide SNP order). The likelihood of a window is
    evaluated on the target SNPs only; the flanking SNPs ``[start, target_start)`` and
    ``[target_stop, stop)`` supply LD context and prior variance.

    Attributes
    ----------
    start, stop
        The whole window, half-open.
    target_start, target_stop
        The target SNPs, half-open, ``start <= target_start < target_stop <= stop``.
    """

    start: int
    stop: int
    target_start: int
    target_stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.target_start < self.target_stop <= self.stop:
            raise ValueError(
                "Window needs 0 <= start <= target_start < target_stop <= stop, got "
                f"start={self.start}, target_start={self.target_start}, "
                f"target_stop={self.target_stop}, stop={self.stop}")

    @property
    def size(self) -> int:
        """Number of SNPs in the whole window."""
        return self.stop - self.start

    @property
    def n_targets(self) -> int:
        """Number of target SNPs."""
        return self.target_stop - self.target_start

    @property
    def snps(self) -> slice:
        """Global slice of the whole window."""
        return slice(self.start, self.stop)

    @property
    def target_snps(self) -> slice:
        """Global slice of the target SNPs."""
        return slice(self.target_start, self.target_stop)

    @property
    def target(self) -> slice:
        """Slice of the targets inside the window (local indices, for ``window_nll``)."""
        return slice(self.target_start - self.start, self.target_stop - self.start)


def _contig_runs(n_snps: int, contigs: Any) -> list[tuple[int, int]]:
    if contigs is None:
        return [(0, n_snps)]
    labels = np.asarray(contigs)
    if labels.shape != (n_snps,):
        raise ValueError(f"contigs has shape {labels.shape}; expected ({n_snps},)")
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = [0, *change.tolist(), n_snps]
    runs = list(itertools.pairwise(bounds))
    seen = [labels[a] for a, _ in runs]
    if len(set(seen)) != len(seen):
        raise ValueError("contigs must be sorted: each contig's SNPs must be contiguous")
    return runs


def plan_windows(
    n_snps: int,
    *,
    target_size: int | None = None,
    flank: int | None = None,
    positions: Any = None,
    target_bp: float | None = None,
    flank_bp: float | None = None,
    contigs: Any = None,
) -> list[Window]:
    """Cut ``n_snps`` ordered SNPs into non-overlapping target segments with flanking context.

    Every SNP is a target of exactly one window. Each window adds up to ``flank`` SNPs (or
    ``flank_bp`` base pairs) of context on both sides, clipped at the ends of the data (and of
    each contig). DeepWAS's UKBB setting is ``target_bp=1e6, flank_bp=1e6`` (the middle 1 Mb of
    each 3 Mb LD window).

    Parameters
    ----------
    n_snps
        Number of SNPs, in genome order.
    target_size, flank
        SNP-count units: targets of ``target_size`` consecutive SNPs (the last may be shorter),
        ``flank`` SNPs of context each side.
    positions
        Base-pair positions (non-decreasing within each contig); needed for bp units.
    target_bp, flank_bp
        Base-pair units: targets are the SNPs in ``[k target_bp, (k + 1) target_bp)`` for
        integer ``k`` (empty segments are skipped); the window holds the SNPs within
        ``flank_bp`` of that segment's ends.
    contigs
        Optional contig label per SNP (sorted); windows never cross contigs.

    Returns
    -------
    list of Window
        In genome order.
    """
    n_snps = int(n_snps)
    if n_snps < 1:
        raise ValueError(f"plan_windows needs at least one SNP, got n_snps={n_snps}")
    snp_units = target_size is not None or flank is not None
    bp_units = target_bp is not None or flank_bp is not None
    if snp_units == bp_units:
        raise ValueError(
            "plan_windows: give either target_size and flank (SNP counts) or target_bp and "
            "flank_bp (base pairs, with positions)")
    runs = _contig_runs(n_snps, contigs)
    windows: list[Window] = []
    if snp_units:
        if target_size is None or flank is None:
            raise ValueError("plan_windows: target_size and flank must be given together")
        if int(target_size) < 1 or int(flank) < 0:
            raise ValueError(
                f"plan_windows: target_size must be >= 1 and flank >= 0, got {target_size}, "
                f"{flank}")
        step, fl = int(target_size), int(flank)
        for a, b in runs:
            for ts in range(a, b, step):
                te = min(ts + step, b)
                windows.append(Window(max(a, ts - fl), min(b, te + fl), ts, te))
        return windows
    if target_bp is None or flank_bp is None:
        raise ValueError("plan_windows: target_bp and flank_bp must be given together")
    if positions is None:
        raise ValueError("plan_windows: base-pair units need positions")
    if not target_bp > 0 or not flank_bp >= 0:
        raise ValueError(
            f"plan_windows: target_bp must be > 0 and flank_bp >= 0, got {target_bp}, {flank_bp}")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n_snps,):
        raise ValueError(f"positions has shape {pos.shape}; expected ({n_snps},)")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or infinite values")
    for a, b in runs:
        p = pos[a:b]
        bad = np.flatnonzero(np.diff(p) < 0)
        if bad.size:
            raise ValueError(
                f"positions must be non-decreasing within a contig; SNP {a + bad[0] + 1} at "
                f"{p[bad[0] + 1]:.0f} follows {p[bad[0]]:.0f}")
        segment = np.floor(p / target_bp).astype(np.int64)
        starts = [0, *(np.flatnonzero(np.diff(segment)) + 1).tolist()]
        ends = [*starts[1:], b - a]
        for i0, i1 in zip(starts, ends, strict=True):
            k = segment[i0]
            lo = int(np.searchsorted(p, k * target_bp - flank_bp, side="left"))
            hi = int(np.searchsorted(p, (k + 1) * target_bp + flank_bp, side="left"))
            windows.append(Window(a + lo, a + max(hi, i1), a + i0, a + i1))
    return windows


def window_matrix(R_global: Any, window: Window, *, upper_triangle: bool = False) -> np.ndarray:
    """Dense float64 LD submatrix ``R[start:stop, start:stop]`` of one window.

    Parameters
    ----------
    R_global
        The genome-wide (banded) LD matrix: a ``scipy.sparse`` matrix or array, a dense 2-D
        NumPy array or torch tensor, or a sequence of dense square blocks forming a
        block-diagonal matrix (in order).
    window
        The window to extract.
    upper_triangle
        ``R_global`` stores only the upper triangle (with the diagonal), as the PolyFun UKBB LD
        files do; the window is symmetrised as ``S + S' - diag(S)``.

    Returns
    -------
    numpy.ndarray
        ``(window.size, window.size)`` float64 array (a copy).
    """
    import scipy.sparse as sp

    s = window.snps
    if sp.issparse(R_global):
        shape = R_global.shape
        _check_global_shape(shape, window)
        block = sp.csr_matrix(R_global)[s, s].toarray()
    elif isinstance(R_global, np.ndarray | torch.Tensor):
        arr = R_global.detach().cpu().numpy() if isinstance(R_global, torch.Tensor) else R_global
        if arr.ndim != 2:
            raise ValueError(f"R_global must be 2-D, got shape {arr.shape}")
        _check_global_shape(arr.shape, window)
        block = np.array(arr[s, s], dtype=np.float64)
    elif isinstance(R_global, Sequence):
        block = _block_diagonal_window(R_global, window)
    else:
        raise TypeError(
            "R_global must be a scipy.sparse matrix, a 2-D array or tensor, or a sequence of "
            f"dense diagonal blocks; got {type(R_global).__name__}")
    block = np.asarray(block, dtype=np.float64)
    if upper_triangle:
        block = np.triu(block)
        block = block + block.T - np.diag(np.diag(block))
    return block


def _check_global_shape(shape: tuple[int, ...], window: Window) -> None:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"R_global must be square, got shape {tuple(shape)}")
    if window.stop > shape[0]:
        raise ValueError(
            f"window [{window.start}, {window.stop}) runs past R_global with {shape[0]} SNPs")


def _block_diagonal_window(blocks: Sequence[Any], window: Window) -> np.ndarray:
    out = np.zeros((window.size, window.size), dtype=np.float64)
    offset = 0
    for i, blk in enumerate(blocks):
        b = np.asarray(blk, dtype=np.float64)
        if b.ndim != 2 or b.shape[0] != b.shape[1]:
            raise ValueError(f"LD block {i} must be square, got shape {b.shape}")
        lo, hi = max(offset, window.start), min(offset + b.shape[0], window.stop)
        if lo < hi:
            out[lo - window.start:hi - window.start, lo - window.start:hi - window.start] = (
                b[lo - offset:hi - offset, lo - offset:hi - offset])
        offset += b.shape[0]
    if window.stop > offset:
        raise ValueError(
            f"window [{window.start}, {window.stop}) runs past the LD blocks ({offset} SNPs)")
    return out


def make_psd(R: Any, floor: float = 0.0) -> Any:
    """Clip the eigenvalues of a symmetric matrix at ``floor`` (DeepWAS's ``make_psd``).

    Reference-panel LD matrices (and their banded or lifted-over versions) are often slightly
    indefinite; DeepWAS preprocesses every window as ``R = Q max(Lambda, floor) Q'``.

    Parameters
    ----------
    R
        Square symmetric matrix, NumPy array or torch tensor.
    floor
        Lower bound for the eigenvalues (0 in DeepWAS).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The clipped, exactly symmetric matrix, same type as ``R`` (float64).
    """
    is_tensor = isinstance(R, torch.Tensor)
    mat = R.detach().to(_DTYPE) if is_tensor else torch.as_tensor(np.asarray(R, dtype=np.float64))
    _check_square_symmetric(mat, "R")
    lam, Q = torch.linalg.eigh(mat)
    out = (Q * lam.clamp_min(float(floor))) @ Q.T
    out = 0.5 * (out + out.T)
    return out if is_tensor else out.numpy()


# ------------------------------------------------------------------------------------ inputs


def _check_square_symmetric(mat: Tensor, name: str) -> None:
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(mat.shape)}")
    if not torch.isfinite(mat).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    scale = max(1.0, float(mat.abs().max())) if mat.numel() else 1.0
    asym = float((mat - mat.T).abs().max()) if mat.numel() else 0.0
    if asym > 1e-8 * scale:
        raise ValueError(f"{name} is not symmetric (max |R - R'| = {asym:.3g})")


def _as_matrix(R: Any, name: str, device: torch.device) -> Tensor:
    import scipy.sparse as sp

    if sp.issparse(R):
        raise TypeError(
            f"{name} is a scipy.sparse matrix; extract the window's dense block with "
            "window_matrix(R_global, window)")
    if isinstance(R, torch.Tensor):
        mat = R.detach().to(device=device, dtype=_DTYPE)
        # a window tensor is checked once, not on every likelihood evaluation (training calls
        # window_nll on the same tensors every epoch); an in-place change bumps _version
        if _CHECKED.get(R):
            return mat
        _check_square_symmetric(mat, name)
        _CHECKED.set(R, True)
        return mat
    mat = torch.as_tensor(np.asarray(R, dtype=np.float64), device=device)
    _check_square_symmetric(mat, name)
    return mat


class _PerTensor:
    """Values attached to live tensors by identity, valid while the tensor is not modified.

    (``weakref.WeakKeyDictionary`` cannot hold tensors: it compares keys with ``==``.)
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref, int, Any]] = {}

    def get(self, tensor: Tensor) -> Any:
        item = self._items.get(id(tensor))
        if item is None or item[0]() is not tensor or item[1] != tensor._version:
            return None
        return item[2]

    def set(self, tensor: Tensor, value: Any) -> None:
        key = id(tensor)
        self._items[key] = (weakref.ref(tensor, lambda _: self._items.pop(key, None)),
                            tensor._version, value)


#: Window tensors already checked by :func:`_as_matrix`.
_CHECKED = _PerTensor()
#: Banded forms of dense window tensors, per (target, bandwidth, taper, device).
_BANDED = _PerTensor()


def _local_slice(target: slice, m: int) -> slice:
    if not isinstance(target, slice):
        raise TypeError(f"target must be a slice of the window, got {type(target).__name__}")
    start, stop, step = target.indices(m)
    if step != 1 or stop <= start:
        raise ValueError(
            f"target must be a non-empty contiguous slice inside the window of {m} SNPs, "
            f"got {target}")
    return slice(start, stop)


@dataclass
class _Problem:
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


def _check_inputs(
    z_target: Any, log_F: Any, m: int, target: slice, sigma: Any, eps: float,
) -> tuple[Tensor, Tensor, Tensor | float, slice]:
    """Validated ``z`` (float64), ``log_F``, ``sigma`` and the local target slice."""
    device = log_F.device if isinstance(log_F, torch.Tensor) else torch.device("cpu")
    if isinstance(log_F, torch.Tensor):
        log_F_t = log_F if log_F.dtype == _DTYPE else log_F.to(_DTYPE)
    else:
        log_F_t = torch.as_tensor(np.asarray(log_F, dtype=np.float64))
    t = _local_slice(target, m)
    if log_F_t.shape != (m,):
        raise ValueError(
            f"log_F has shape {tuple(log_F_t.shape)}; expected ({m},), one value per SNP of the "
            "window (flanks included)")
    if not torch.isfinite(log_F_t.detach()).all():
        raise ValueError("log_F contains NaN or infinite values")
    if isinstance(z_target, torch.Tensor):
        z = z_target.detach().to(device=device, dtype=_DTYPE)
    else:
        z = torch.as_tensor(np.asarray(z_target, dtype=np.float64), device=device)
    n_t = t.stop - t.start
    if z.shape != (n_t,):
        raise ValueError(
            f"z_target has shape {tuple(z.shape)}; expected ({n_t},) for target {t.start}:{t.stop}")
    if not torch.isfinite(z).all():
        raise ValueError("z_target contains NaN or infinite values")
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
        sig: Tensor | float = sigma.reshape(()).to(device=device, dtype=_DTYPE)
        sig_value = float(sig.detach())
    else:
        sig = float(sigma)
        sig_value = sig
    if not sig_value > 0:
        raise ValueError(f"sigma must be positive, got {sig_value}")
    if not float(eps) >= 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    return z, log_F_t, sig, t


def _prepare_problem(
    z_target: Any, R_window: Any, log_F: Any, target: slice, sigma: Any, eps: float
) -> _Problem:
    device = log_F.device if isinstance(log_F, torch.Tensor) else torch.device("cpu")
    R = _as_matrix(R_window, "R_window", device)
    z, log_F_t, sig, t = _check_inputs(z_target, log_F, R.shape[0], target, sigma, eps)
    U = R[t, :]
    return _Problem(z=z, U=U, R_tt=U[:, t].clone(), log_F=log_F_t, sigma=sig, eps=float(eps),
                    target=t)


# ------------------------------------------------------------------------------------ factors


@dataclass
class WindowFactor:
    """Factorisations of one window that do not depend on ``F`` or ``sigma`` (cache per window).

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
        raise ValueError(
            f"factor was prepared for a window of {factor.n_snps} SNPs with target "
            f"{factor.target.start}:{factor.target.stop}, not {p.m} SNPs with target "
            f"{p.target.start}:{p.target.stop}")
    if spectral and factor.r_eigvals is None:
        raise ValueError("the spectral preconditioner needs prepare_window(..., spectral=True)")
    return factor


# ------------------------------------------------------------------------------------ results


@dataclass
class NLLInfo:
    """Diagnostics of one :func:`window_nll` evaluation.

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


def _nll_from_parts(logdet: Tensor, quad: Tensor, n_t: int, n: float | None) -> Tensor:
    nll = 0.5 / n_t * (logdet + quad + n_t * LOG_2PI)
    if n is not None:
        if not float(n) > 0:
            raise ValueError(f"n (GWAS sample size) must be positive, got {n}")
        nll = nll - 0.5 * math.log(float(n))
    return nll


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
        raise ValueError(f"inner must be 'auto', 'eigen' or 'snps', got {inner!r}")
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
        raise ValueError(
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
        raise ValueError("preconditioner must be 'block', 'tridiagonal' or None for "
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
            raise ValueError(f"logdet must be 'slq' or 'exact', got {state.logdet!r}")
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
        raise ValueError(f"vtol must be >= 0, got {vtol}")
    min_probes, max_probes = int(options.get("min_probes", 16)), int(options.get("max_probes",
                                                                                 1024))
    if not 2 <= min_probes <= max_probes:
        raise ValueError(f"need 2 <= min_probes <= max_probes, got {min_probes}, {max_probes}")
    logdet_tol = options.get("logdet_tol", 5e-3)
    if logdet_tol is not None and not float(logdet_tol) > 0:
        raise ValueError(f"logdet_tol must be positive or None, got {logdet_tol}")
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
            raise ValueError(
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


def _solve_banded(bw: BandedWindow, z: Tensor, log_F: Tensor, sigma: Tensor | float,
                  eps: float) -> tuple[Tensor, Tensor, NLLInfo]:
    """Exact: block-tridiagonal Cholesky of the banded ``C_tt``; autograd throughout."""
    D, B = bw.c_blocks(bw.pad_window(torch.exp(log_F)), sigma, eps)
    L, M = block_cholesky(D, B, "C_tt = U diag(F) U' + sigma R_tt + eps I (banded)")
    zp = bw.pad_targets(z)[:, None]
    quad = (zp * block_solve(L, M, zp)).sum()
    logdet = block_logdet(L)
    return logdet, quad, NLLInfo("banded", float(logdet.detach()), float(quad.detach()))


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
    p = _prepare_problem(np.zeros(t.stop - t.start), R_window, lf, t, sigma, eps)
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
        z, log_F_t, sig, t = _check_inputs(z_target, log_F, m, target, sigma, eps)
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
    p = _prepare_problem(z_target, R_window, log_F, target, sigma, eps)
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
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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
    p = _prepare_problem(z_target, R, torch.zeros(m, dtype=_DTYPE, device=device), t, sigma, eps)
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
        raise ValueError("composite_nll needs at least one window")
    z_all = torch.as_tensor(np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z,
                                       dtype=np.float64))
    if z_all.ndim != 1 or z_all.shape[0] != log_F.shape[0]:
        raise ValueError(
            f"z has shape {tuple(z_all.shape)} and log_F {tuple(log_F.shape)}; both must be (M,)")
    total = torch.zeros((), dtype=_DTYPE, device=log_F.device)
    count = 0
    for w in windows:
        R_w = window_matrix(R_global, w, upper_triangle=upper_triangle)
        nll = window_nll(z_all[w.target_snps], R_w, log_F[w.snps], target=w.target, **options)
        total = total + w.n_targets * nll
        count += w.n_targets
    return total / count
