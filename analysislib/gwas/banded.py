"""Banded LD for the DeepWAS window likelihood: products in ``O(n b)``, exact solves in ``O(n b^2)``.

The full GWAS likelihood of Amin, Potapczynski & Wilson (ICML 2025, arXiv 2506.19598, section 3)
needs ``C_tt = U diag(F) U' + sigma R_tt + eps I`` with ``U = R[t, :]`` for every window. LD
decays with distance, so DeepWAS's argument for iterative solvers is that ``R`` can be kept to a
band of ``b`` SNPs either side of the diagonal: products with ``U`` then cost ``O(n_t b)`` per
column instead of ``O(n_t m)``, and ``C_tt`` itself has half-bandwidth ``2 b``.

Storage. :class:`BandedWindow` cuts the target rows into blocks of ``s = 2 b`` SNPs and keeps,
for each block, the dense ``s x (s + 2 b)`` *slab* of ``U`` covering every column the block's
rows can reach. Products are then three batched matrix products (BLAS-3, and the same code runs
on a GPU), and ``C_tt`` is block-tridiagonal in blocks of ``s`` (:meth:`BandedWindow.c_blocks`),
so its Cholesky factor, determinant and solves are a short loop of ``s x s`` dense operations
(:func:`block_cholesky`, :func:`block_solve`).

Tapering. Cutting a positive semi-definite ``R`` to a band does not leave it positive
semi-definite: on the simulated 3-population panel of ``benchmarks/gwas_likelihood_solvers.py``
(4,000 SNPs, 3,000 samples) the hard band of 500 SNPs has smallest eigenvalue -18.7, which makes
``C_tt`` indefinite and the likelihood undefined. The default therefore multiplies ``R``
element-wise by the Bartlett taper ``max(0, 1 - |i - j| / (b + 1))``, a positive semi-definite
Toeplitz matrix (its spectrum is the Fejer kernel), so by the Schur product theorem the tapered
band is positive semi-definite whenever ``R`` is (covariance tapering, Furrer, Genton & Nychka
2006, J Comput Graph Stat 15:502). The same panel's tapered band has smallest eigenvalue 1e-3.
``taper=None`` keeps the hard band for LD that is already banded or for comparisons.

Positions are padded so that every block has ``s`` rows and every slab ``s + 2 b`` columns:
padded target rows carry a unit diagonal in ``C`` and zero ``z``, which leaves the determinant
and the solution unchanged; padded columns carry ``F = 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analysislib.errors import InvalidArgumentError, NotPositiveDefiniteError
from analysislib.gwas.windows import _as_matrix

__all__ = [
    "TAPERS",
    "BandedWindow",
    "band_window",
    "block_cholesky",
    "block_jacobi",
    "block_logdet",
    "block_lower_solve",
    "block_solve",
    "block_upper_solve",
    "selected_inverse",
]

Tensor = torch.Tensor
_DTYPE = torch.float64

#: Tapers accepted by :func:`band_window` (``None``: the hard band).
TAPERS = ("bartlett", None)


@dataclass
class BandedWindow:
    """The target rows ``U = R[t, :]`` of one LD window, kept to a band of ``bandwidth`` SNPs.

    Build it with :func:`band_window` (once per window: the symmetry and band checks run there,
    not on every likelihood evaluation).

    Attributes
    ----------
    slabs
        ``(n_blocks, s, s + 2 b)``: block ``i``'s rows of ``U`` over padded window columns
        ``col_index[i]``; ``s = 2 b``, or ``n_t`` when the targets fit in one block.
    col_index
        ``(n_blocks, s + 2 b)`` padded-window column of each slab column.
    bandwidth
        ``b``: entries with ``|i - j| > b`` are zero.
    n_snps
        Window size ``m``.
    target
        Local slice of the targets.
    taper
        ``"bartlett"`` or ``None`` (see the module docstring).
    """

    slabs: Tensor
    col_index: Tensor
    bandwidth: int
    n_snps: int
    target: slice
    taper: str | None

    @property
    def block(self) -> int:
        """Rows per block: ``s = 2 b``, or all targets when there are no more than that."""
        return self.slabs.shape[1]

    @property
    def n_blocks(self) -> int:
        """Number of diagonal blocks."""
        return self.slabs.shape[0]

    @property
    def n_t(self) -> int:
        """Number of target rows (variants of the window's target range)."""
        return self.target.stop - self.target.start

    @property
    def n_rows(self) -> int:
        """Padded number of target rows, ``n_blocks * s``."""
        return self.n_blocks * self.block

    @property
    def pad(self) -> int:
        """Padded column of window SNP 0."""
        return self.bandwidth

    @property
    def n_columns(self) -> int:
        """Padded window length."""
        return max(self.n_snps, self.target.start + self.n_rows + self.bandwidth) + 2 * self.pad

    @property
    def device(self) -> torch.device:
        """Device of the stored blocks."""
        return self.slabs.device

    # -------------------------------------------------------------------- padding helpers

    def pad_targets(self, v: Tensor) -> Tensor:
        """``(n_t, ...)`` target values to the padded ``(n_rows, ...)`` layout (zeros after)."""
        out = v.new_zeros((self.n_rows, *tuple(v.shape[1:])))
        out[: self.n_t] = v
        return out

    def pad_window(self, v: Tensor) -> Tensor:
        """``(m,)`` window values (e.g. ``F``) to padded columns, zeros outside the window.

        Differentiable: built by concatenation, so gradients reach ``v``.
        """
        left = v.new_zeros(self.pad)
        right = v.new_zeros(self.n_columns - self.pad - self.n_snps)
        return torch.cat([left, v, right])

    def real_rows(self) -> Tensor:
        """Boolean ``(n_rows,)``: which padded target rows are real targets."""
        mask = torch.zeros(self.n_rows, dtype=torch.bool, device=self.device)
        mask[: self.n_t] = True
        return mask

    def jitter(self, eps: float) -> Tensor:
        """Diagonal added to ``C_tt``: ``eps`` on target rows, 1 on padded rows (which keeps
        them decoupled and out of the determinant)."""
        return torch.where(self.real_rows(), eps, 1.0).to(_DTYPE)

    # -------------------------------------------------------------------- products

    def u_mul(self, W: Tensor) -> Tensor:
        """``U W`` for padded-column ``W`` of shape ``(n_columns, k)``; returns ``(n_rows, k)``."""
        k = W.shape[1]
        return torch.bmm(self.slabs, W[self.col_index]).reshape(self.n_rows, k)

    def ut_mul(self, V: Tensor) -> Tensor:
        """``U' V`` for padded-row ``V`` of shape ``(n_rows, k)``; returns ``(n_columns, k)``."""
        k = V.shape[1]
        parts = torch.bmm(self.slabs.transpose(1, 2), V.reshape(self.n_blocks, self.block, k))
        out = V.new_zeros((self.n_columns, k))
        out.index_add_(0, self.col_index.reshape(-1), parts.reshape(-1, k))
        return out

    def rtt_mul(self, V: Tensor) -> Tensor:
        """``R_tt V`` (targets by targets) for padded-row ``V``; padded rows of ``V`` must be 0."""
        W = V.new_zeros((self.n_columns, V.shape[1]))
        start = self.pad + self.target.start
        W[start:start + self.n_rows] = V
        return self.u_mul(W)

    def c_operator(self, F_cols: Tensor, sigma: float, eps: float) -> Callable[[Tensor], Tensor]:
        """``V -> C_tt V`` on padded rows, with ``F_cols`` from :meth:`pad_window`."""
        diag = self.jitter(eps)[:, None]

        def matvec(V: Tensor) -> Tensor:
            return (self.u_mul(F_cols[:, None] * self.ut_mul(V)) + sigma * self.rtt_mul(V)
                    + diag * V)

        return matvec

    def c_blocks(self, F_cols: Tensor, sigma: Any, eps: float) -> tuple[Tensor, Tensor]:
        """Blocks of ``C_tt``: diagonal ``(n_blocks, s, s)`` and sub-diagonal ``(n_blocks-1, s, s)``.

        Differentiable in ``F_cols`` and ``sigma``. Sub-diagonal block ``i`` is
        ``C[block i+1, block i]``: the two blocks' slabs overlap in ``2 b`` columns, and
        ``R[block i+1, block i]`` is non-zero only in block ``i``'s last ``b`` columns.
        """
        b, s = self.bandwidth, self.block
        weighted = self.slabs * F_cols[self.col_index][:, None, :]
        r_diag, r_sub = self.rtt_blocks()
        D = weighted @ self.slabs.transpose(1, 2) + sigma * r_diag
        D = D + torch.diag_embed(self.jitter(eps).reshape(self.n_blocks, s))
        if self.n_blocks == 1:
            return D, D.new_zeros((0, s, s))
        B = weighted[1:, :, :2 * b] @ self.slabs[:-1, :, s:s + 2 * b].transpose(1, 2)
        return D, B + sigma * r_sub

    def rtt_blocks(self) -> tuple[Tensor, Tensor]:
        """Diagonal and sub-diagonal ``s x s`` blocks of ``R_tt`` (padded rows zero)."""
        b, s = self.bandwidth, self.block
        # R_tt keeps target columns only: the last block's padded rows are flank SNPs
        real = self.real_rows().reshape(self.n_blocks, 1, s)
        r_diag = self.slabs[:, :, b:b + s] * real
        if self.n_blocks == 1:
            return r_diag, r_diag.new_zeros((0, s, s))
        r_sub = torch.cat([self.slabs.new_zeros((self.n_blocks - 1, s, b)),
                           self.slabs[1:, :, :b]], dim=2)
        return r_diag, r_sub

    def rtt_trace(self, Zd: Tensor, Zs: Tensor | None) -> Tensor:
        """``tr(Z R_tt)`` for ``Z`` known on its block tridiagonal (:func:`selected_inverse`)."""
        r_diag, r_sub = self.rtt_blocks()
        out = (Zd * r_diag).sum()
        if Zs is not None and self.n_blocks > 1:
            out = out + 2.0 * (Zs * r_sub).sum()
        return out

    def quadratic_diag(self, Zd: Tensor, Zs: Tensor | None) -> Tensor:
        """``diag(U' Z U)`` over the window's SNPs, for ``Z`` known on its block tridiagonal.

        ``Zd``/``Zs`` are ``Z``'s diagonal and sub-diagonal blocks (:func:`selected_inverse`;
        ``Zs=None`` for block-diagonal ``Z``). A column of ``U`` spans at most two consecutive
        blocks, so these blocks are all the products need.
        """
        b, s = self.bandwidth, self.block
        out = ((Zd @ self.slabs) * self.slabs).sum(1)  # (n_blocks, s + 2b)
        full = self.slabs.new_zeros(self.n_columns)
        full.index_add_(0, self.col_index.reshape(-1), out.reshape(-1))
        if Zs is not None and self.n_blocks > 1:
            # block i+1's first 2b columns are block i's last 2b
            cross = 2.0 * ((Zs @ self.slabs[:-1, :, s:s + 2 * b]) * self.slabs[1:, :, :2 * b]
                           ).sum(1)
            full.index_add_(0, self.col_index[1:, :2 * b].reshape(-1), cross.reshape(-1))
        return full[self.pad:self.pad + self.n_snps]

    def dense_u(self) -> Tensor:
        """Dense ``(n_t, m)`` ``U`` of the (tapered) band, for tests and small windows."""
        out = self.slabs.new_zeros((self.n_rows, self.n_columns))
        rows = torch.arange(self.n_rows, device=self.device).reshape(self.n_blocks, self.block)
        out[rows[:, :, None], self.col_index[:, None, :]] = self.slabs
        return out[: self.n_t, self.pad:self.pad + self.n_snps]


def band_window(
    R_window: Any = None,
    *,
    target: slice,
    bandwidth: int,
    taper: str | None = "bartlett",
    n_snps: int | None = None,
    block_fn: Callable[[slice, slice], Any] | None = None,
    device: str | torch.device = "cpu",
) -> BandedWindow:
    """Keep the target rows of one LD window to a band of ``bandwidth`` SNPs.

    Parameters
    ----------
    R_window
        Dense ``(m, m)`` LD matrix of the window (NumPy or torch); checked once for symmetry and
        finite values. Give ``block_fn`` and ``n_snps`` instead to build the band without ever
        holding the dense window (e.g. from genotypes, for windows of tens of thousands of SNPs).
    target
        Local slice of the target SNPs inside the window.
    bandwidth
        ``b``: LD between SNPs more than ``b`` apart is set to zero.
    taper
        ``"bartlett"`` (default, keeps a PSD ``R`` PSD) or ``None`` (hard band).
    n_snps
        Window size ``m`` when ``block_fn`` is given.
    block_fn
        ``(rows, cols) -> R[rows, cols]`` (slices of window positions) as a dense array.
    device
        Torch device of the slabs.

    Returns
    -------
    BandedWindow
    """
    if taper not in TAPERS:
        raise InvalidArgumentError(f"taper must be one of {TAPERS}, got {taper!r}")
    b = int(bandwidth)
    if b < 1:
        raise InvalidArgumentError(f"bandwidth must be a positive number of SNPs, got {bandwidth}")
    if (R_window is None) == (block_fn is None):
        raise TypeError("give exactly one of R_window and block_fn")
    if R_window is not None:
        R = _as_matrix(R_window, "R_window", torch.device(device))
        m = R.shape[0]

        def block_fn(rows: slice, cols: slice) -> Tensor:
            return R[rows, cols]
    else:
        if n_snps is None:
            raise TypeError("band_window(block_fn=...) needs n_snps")
        m = int(n_snps)
    start, stop, step = target.indices(m)
    if step != 1 or stop <= start:
        raise InvalidArgumentError(f"target must be a non-empty contiguous slice of the {m}-SNP window, "
                         f"got {target}")
    t = slice(start, stop)
    s = min(2 * b, stop - start)  # one block needs no coupling, so no padding either
    n_blocks = -(-(stop - start) // s)
    width = s + 2 * b
    slabs = torch.zeros((n_blocks, s, width), dtype=_DTYPE, device=device)
    col_index = torch.empty((n_blocks, width), dtype=torch.long, device=device)
    offsets = torch.arange(width, device=device)
    for i in range(n_blocks):
        row0 = start + i * s
        rows = slice(row0, min(row0 + s, stop))
        col0 = row0 - b  # window column of slab column 0
        col_index[i] = col0 + b + offsets  # padded coordinates (window SNP 0 at b)
        cols = slice(max(col0, 0), min(col0 + width, m))
        raw = block_fn(rows, cols)
        if not isinstance(raw, torch.Tensor):
            raw = np.asarray(raw, dtype=np.float64)
        block = torch.as_tensor(raw, dtype=_DTYPE, device=device)
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        if tuple(block.shape) != expected:
            raise InvalidArgumentError(f"block_fn returned shape {tuple(block.shape)} for rows {rows.start}:"
                             f"{rows.stop}, columns {cols.start}:{cols.stop}; expected {expected}")
        if not torch.isfinite(block).all():
            raise InvalidArgumentError(f"LD rows {rows.start}:{rows.stop} contain NaN or infinite values")
        slabs[i, : expected[0], cols.start - col0:cols.stop - col0] = block
    # distance of each slab entry from the diagonal: row r of block i is window SNP row0 + r,
    # slab column c is window SNP row0 - b + c
    dist = (torch.arange(width, device=device)[None, :] - b
            - torch.arange(s, device=device)[:, None]).abs()
    weight = (dist <= b).to(_DTYPE)
    if taper == "bartlett":
        weight = weight * (1.0 - dist.to(_DTYPE) / (b + 1))
    slabs *= weight
    return BandedWindow(slabs=slabs, col_index=col_index, bandwidth=b, n_snps=m, target=t,
                        taper=taper)


def block_cholesky(D: Tensor, B: Tensor, what: str = "C_tt") -> tuple[Tensor, Tensor]:
    """Cholesky factor of a symmetric block-tridiagonal matrix.

    ``D`` holds the ``N`` diagonal blocks, ``B`` the ``N - 1`` sub-diagonal ones. Returns the
    diagonal blocks ``L_i`` (lower triangular) and sub-diagonal blocks ``M_i`` of the
    block-bidiagonal factor: ``L_0 L_0' = D_0``, ``M_i = B_i L_i^-T``,
    ``L_{i+1} L_{i+1}' = D_{i+1} - M_i M_i'``. Differentiable.
    """
    Ls: list[Tensor] = []
    Ms: list[Tensor] = []
    for i in range(D.shape[0]):
        A = D[i] if i == 0 else D[i] - Ms[-1] @ Ms[-1].T
        L, info = torch.linalg.cholesky_ex(0.5 * (A + A.T))
        if int(info) != 0:
            raise NotPositiveDefiniteError(
                f"{what} is not positive definite (block Cholesky failed in block {i}, row "
                f"{int(info)}); the banded LD is probably not PSD: use taper='bartlett' or clip "
                "the window with make_psd(R)")
        Ls.append(L)
        if i < D.shape[0] - 1:
            Ms.append(torch.linalg.solve_triangular(L, B[i].T, upper=False).T)
    M = torch.stack(Ms) if Ms else D.new_zeros((0, *tuple(D.shape[1:])))
    return torch.stack(Ls), M


def block_lower_solve(L: Tensor, M: Tensor | None, Y: Tensor) -> Tensor:
    """``L^-1 Y`` for the block-bidiagonal factor ``(L, M)`` (``M=None``: block-diagonal)."""
    N, s, _ = L.shape
    Yb = Y.reshape(N, s, -1)
    if M is None:
        return torch.linalg.solve_triangular(L, Yb, upper=False).reshape(N * s, -1)
    W: list[Tensor] = []
    for i in range(N):
        rhs = Yb[i] if i == 0 else Yb[i] - M[i - 1] @ W[-1]
        W.append(torch.linalg.solve_triangular(L[i], rhs, upper=False))
    return torch.cat(W, dim=0)


def block_upper_solve(L: Tensor, M: Tensor | None, W: Tensor) -> Tensor:
    """``L^-T W`` for the block-bidiagonal factor ``(L, M)`` (``M=None``: block-diagonal)."""
    N, s, _ = L.shape
    Wb = W.reshape(N, s, -1)
    Lt = L.transpose(1, 2)
    if M is None:
        return torch.linalg.solve_triangular(Lt, Wb, upper=True).reshape(N * s, -1)
    X: list[Tensor] = [W.new_zeros(0)] * N
    for i in range(N - 1, -1, -1):
        rhs = Wb[i] if i == N - 1 else Wb[i] - M[i].T @ X[i + 1]
        X[i] = torch.linalg.solve_triangular(Lt[i], rhs, upper=True)
    return torch.cat(X, dim=0)


def block_solve(L: Tensor, M: Tensor | None, Y: Tensor) -> Tensor:
    """Solve ``C X = Y`` with the factor of :func:`block_cholesky` (or :func:`block_jacobi`,
    ``M=None``, for the block-diagonal part of ``C``); ``Y`` is ``(N s, k)``."""
    return block_upper_solve(L, M, block_lower_solve(L, M, Y))


def selected_inverse(L: Tensor, M: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Diagonal and sub-diagonal blocks of ``C^-1`` from the factor of :func:`block_cholesky`.

    The block form of Takahashi's recursion (Takahashi, Fagan & Chin 1973), from the last block
    up: ``Z_NN = (L_N L_N')^-1``, ``Z_{i+1,i} = -Z_{i+1,i+1} M_i L_i^-1`` and
    ``Z_ii = L_i^-T (L_i^-1 - M_i' Z_{i+1,i})``, in ``O(N s^3)``. With ``M=None`` (a
    block-Jacobi factor) the blocks are simply inverted.
    """
    N, s, _ = L.shape
    if M is None:
        return torch.cholesky_inverse(L), None
    eye = torch.eye(s, dtype=L.dtype, device=L.device)
    Zd: list[Tensor] = [L.new_zeros(0)] * N
    Zs: list[Tensor] = [L.new_zeros(0)] * (N - 1)
    Zd[N - 1] = torch.cholesky_inverse(L[N - 1])
    for i in range(N - 2, -1, -1):
        L_inv = torch.linalg.solve_triangular(L[i], eye, upper=False)
        Zs[i] = -Zd[i + 1] @ M[i] @ L_inv
        Zd[i] = torch.linalg.solve_triangular(L[i].T, L_inv - M[i].T @ Zs[i], upper=True)
    return torch.stack(Zd), (torch.stack(Zs) if N > 1 else L.new_zeros((0, s, s)))


def block_logdet(L: Tensor) -> Tensor:
    """``log|L L'|`` from the diagonal blocks of a block factor."""
    return 2.0 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum()


def block_jacobi(D: Tensor, what: str = "C_tt") -> Tensor:
    """Cholesky factors of the diagonal blocks alone (the block-Jacobi preconditioner)."""
    L, info = torch.linalg.cholesky_ex(0.5 * (D + D.transpose(1, 2)))
    if bool((info != 0).any()):
        bad = int(torch.nonzero(info).flatten()[0])
        raise NotPositiveDefiniteError(
            f"{what}: diagonal block {bad} is not positive definite; the banded LD is probably "
            "not PSD: use taper='bartlett' or clip the window with make_psd(R)")
    return L
