"""LD windows of the DeepWAS likelihood: planning, extraction, PSD clipping, input checks.

The full GWAS likelihood of Amin, Potapczynski & Wilson (ICML 2025, arXiv 2506.19598, section 3)
is a composite over non-overlapping *target* segments of the genome, each with flanking LD
context (DeepWAS uses the middle 1 Mb of 3 Mb windows). This module cuts the genome into such
windows (:func:`plan_windows`), extracts a window's dense LD block from a genome-wide matrix
(:func:`window_matrix`), clips an indefinite LD matrix to positive semi-definite as DeepWAS's
``make_psd`` does (:func:`make_psd`), and checks window matrices once per tensor. The likelihood
itself is in :mod:`analysislib.gwas.likelihood`, its solvers in :mod:`analysislib.gwas.solvers`.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analysislib.errors import InvalidArgumentError

__all__ = [
    "Window",
    "make_psd",
    "plan_windows",
    "window_matrix",
]

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
            raise InvalidArgumentError(
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
        raise InvalidArgumentError(f"contigs has shape {labels.shape}; expected ({n_snps},)")
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = [0, *change.tolist(), n_snps]
    runs = list(itertools.pairwise(bounds))
    seen = [labels[a] for a, _ in runs]
    if len(set(seen)) != len(seen):
        raise InvalidArgumentError("contigs must be sorted: each contig's SNPs must be contiguous")
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
        raise InvalidArgumentError(f"plan_windows needs at least one SNP, got n_snps={n_snps}")
    snp_units = target_size is not None or flank is not None
    bp_units = target_bp is not None or flank_bp is not None
    if snp_units == bp_units:
        raise InvalidArgumentError(
            "plan_windows: give either target_size and flank (SNP counts) or target_bp and "
            "flank_bp (base pairs, with positions)")
    runs = _contig_runs(n_snps, contigs)
    windows: list[Window] = []
    if snp_units:
        if target_size is None or flank is None:
            raise InvalidArgumentError("plan_windows: target_size and flank must be given together")
        if int(target_size) < 1 or int(flank) < 0:
            raise InvalidArgumentError(
                f"plan_windows: target_size must be >= 1 and flank >= 0, got {target_size}, "
                f"{flank}")
        step, fl = int(target_size), int(flank)
        for a, b in runs:
            for ts in range(a, b, step):
                te = min(ts + step, b)
                windows.append(Window(max(a, ts - fl), min(b, te + fl), ts, te))
        return windows
    if target_bp is None or flank_bp is None:
        raise InvalidArgumentError("plan_windows: target_bp and flank_bp must be given together")
    if positions is None:
        raise InvalidArgumentError("plan_windows: base-pair units need positions")
    if not target_bp > 0 or not flank_bp >= 0:
        raise InvalidArgumentError(
            f"plan_windows: target_bp must be > 0 and flank_bp >= 0, got {target_bp}, {flank_bp}")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n_snps,):
        raise InvalidArgumentError(f"positions has shape {pos.shape}; expected ({n_snps},)")
    if not np.all(np.isfinite(pos)):
        raise InvalidArgumentError("positions contain NaN or infinite values")
    for a, b in runs:
        p = pos[a:b]
        bad = np.flatnonzero(np.diff(p) < 0)
        if bad.size:
            raise InvalidArgumentError(
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
            raise InvalidArgumentError(f"R_global must be 2-D, got shape {arr.shape}")
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
        raise InvalidArgumentError(f"R_global must be square, got shape {tuple(shape)}")
    if window.stop > shape[0]:
        raise InvalidArgumentError(
            f"window [{window.start}, {window.stop}) runs past R_global with {shape[0]} SNPs")


def _block_diagonal_window(blocks: Sequence[Any], window: Window) -> np.ndarray:
    out = np.zeros((window.size, window.size), dtype=np.float64)
    offset = 0
    for i, blk in enumerate(blocks):
        b = np.asarray(blk, dtype=np.float64)
        if b.ndim != 2 or b.shape[0] != b.shape[1]:
            raise InvalidArgumentError(f"LD block {i} must be square, got shape {b.shape}")
        lo, hi = max(offset, window.start), min(offset + b.shape[0], window.stop)
        if lo < hi:
            out[lo - window.start:hi - window.start, lo - window.start:hi - window.start] = (
                b[lo - offset:hi - offset, lo - offset:hi - offset])
        offset += b.shape[0]
    if window.stop > offset:
        raise InvalidArgumentError(
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


# ------------------------------------------------------------------------------------ checks


def _check_square_symmetric(mat: Tensor, name: str) -> None:
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise InvalidArgumentError(f"{name} must be a square matrix, got shape {tuple(mat.shape)}")
    if not torch.isfinite(mat).all():
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    scale = max(1.0, float(mat.abs().max())) if mat.numel() else 1.0
    asym = float((mat - mat.T).abs().max()) if mat.numel() else 0.0
    if asym > 1e-8 * scale:
        raise InvalidArgumentError(f"{name} is not symmetric (max |R - R'| = {asym:.3g})")


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
