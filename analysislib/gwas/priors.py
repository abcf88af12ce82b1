"""Functional priors for GWAS: models from annotations to log prior variance, two objectives.

The DeepWAS models and trainers (Amin, Potapczynski & Wilson, ICML 2025, arXiv 2506.19598),
following the authors' DeepWAS repository:

Models (all map a SNP's annotations to ``log F_N``, the log prior variance on the z scale):

* :class:`ConstantPrior` - one shared value (DeepWAS ``Constant``).
* :class:`LinearPrior` - linear in the window means of the tracks and the scalar scores
  (DeepWAS ``Linear``: "mean over the window + linear on annotations"; the S-LDSC-like model).
* :class:`MLPPrior` - a small multilayer perceptron on the same inputs.
* :class:`ConvAttentionPrior` - a reduced Enformer-style network over the whole annotation
  window (DeepWAS ``enformer.py``): stem ``Conv1d(k=15)`` -> residual conv block -> attention
  pooling (2); a conv tower with ``log2(window / target_length) - 1`` more pooled stages; a
  transformer (depth 2, 2 heads); a centre crop to ``target_length``; a pointwise conv to
  ``2 dim``; ``Linear(2 dim target_length -> 1)``. Scalar scores are broadcast along the window
  and concatenated to the tracks, as in DeepWAS. Reductions (documented choices): Enformer's
  relative positional basis functions are replaced by a learned relative-position bias per head
  (T5-style), and the quick width is ``dim = 16`` (384 in the authors' simulation config,
  ``size="full"``).

Objectives (``objective=`` of :func:`train_prior`):

* ``"likelihood"`` - the full marginal likelihood: per-target-SNP NLL of each LD window
  (:func:`analysislib.gwas.likelihood.window_nll`, ``C = R diag(F) R + σ R + εI`` with
  ``σ = 1`` fixed and ``ε = 1e-4`` as in the ``basic_ukbb`` config);
* ``"ldsr"`` - the LD-score-regression weighted least squares of the authors' LDSR trainer:
  ``χ̂_j = Σ_k R²_jk F_k + σ R_jj``, ``loss = mean_j[((χ̂_j − z_j²)/s_j)² / ℓ_j]`` with
  ``s_j = N ℓ_j h²/M + R_jj``, ``ℓ_j = Σ_k R²_jk`` and ``h² = 0.5`` (``herit``)
  (:func:`ldsr_loss`).

Training (:func:`train_prior`): LD windows from :func:`~analysislib.gwas.windows.plan_windows`
are the mini-batches; ``windows_per_step`` windows are accumulated per optimizer step (DeepWAS:
one window per batch, ``accumulate_grad_batches = 12``; the loss of a step is the mean of its
window losses, as Lightning's accumulation gives). float64 throughout, AdamW with lr 2e-4 (the
simulation config), gradient-norm clipping at 0.2 and a linear warm-up of 100 steps, through
:func:`analysislib.training.fit` (checkpoints, exact resume, seeds). DeepWAS warms up with
transformers' ``get_linear_schedule_with_warmup``, which then decays the rate linearly over a
given number of steps; here the rate stays constant after the warm-up (a documented choice).
Windows never cross the boundary of a held-out segment (the simulation's LD is block-diagonal
with whole blocks per segment, so nothing is lost).

Evaluation (:func:`evaluate_prior`): held-out per-SNP NLL of the full likelihood, the null
model's (``F -> 0``) and their difference (DeepWAS ``val_delta_loss``; negative is better), and
the error of ``log F`` against the simulated truth (MAE, RMSE, Pearson r; DeepWAS
``compare_against_truth``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from analysislib.errors import InvalidArgumentError
from analysislib.gwas.likelihood import null_nll, window_nll
from analysislib.gwas.windows import Window, plan_windows, window_matrix

if TYPE_CHECKING:
    from analysislib.simulate.gwas import SimulatedGwas
    from analysislib.training.loop import FitResult

__all__ = [
    "OBJECTIVES",
    "PRIOR_KINDS",
    "RESULT_METRICS",
    "ConstantPrior",
    "ConvAttentionPrior",
    "FeatureSet",
    "LinearPrior",
    "MLPPrior",
    "PriorTrainingConfig",
    "TrainedPrior",
    "evaluate_prior",
    "feature_set",
    "initial_log_f",
    "ldsr_loss",
    "likelihood_loss",
    "make_prior",
    "predict_log_f",
    "prepare_windows",
    "result_rows",
    "train_prior",
]

logger = logging.getLogger(__name__)

#: Training objectives.
OBJECTIVES = ("likelihood", "ldsr")
#: Model kinds of :func:`make_prior`.
PRIOR_KINDS = ("constant", "linear", "mlp", "conv")

Objective = Literal["likelihood", "ldsr"]
_DTYPE = torch.float64


# ------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class FeatureSet:
    """Which annotations a model sees: indices of tracks and of scalar scores.

    Attributes
    ----------
    name
        Label used in results (``"all"``, ``"few"``).
    tracks, scalars
        Indices into ``SimulatedGwas.track_names`` / ``scalar_names``.
    """

    name: str
    tracks: tuple[int, ...]
    scalars: tuple[int, ...]

    def select(self, sim: SimulatedGwas) -> tuple[np.ndarray, np.ndarray]:
        """Track windows ``(snps, tracks, window)`` and scalars ``(snps, scalars)``."""
        return (sim.annotations[:, list(self.tracks)],
                sim.scalar_annotations[:, list(self.scalars)])


def feature_set(sim: SimulatedGwas, name: str = "all") -> FeatureSet:
    """A named feature set.

    ``"all"``: every track and scalar score. ``"few"``: the tracks of the first cell type only,
    without scalar scores (the "few features" arm of the DeepWAS ablation; with the default
    truth it misses the conservation score and the second cell type's promoter peaks).
    """
    if name == "all":
        return FeatureSet("all", tuple(range(len(sim.track_names))),
                          tuple(range(len(sim.scalar_names))))
    if name == "few":
        first = sim.track_names[0].split(":")[0]
        tracks = tuple(k for k, t in enumerate(sim.track_names) if t.split(":")[0] == first)
        return FeatureSet("few", tracks, ())
    raise InvalidArgumentError(f"unknown feature set {name!r}; use 'all' or 'few'")


def initial_log_f(z: Any, ld_scores: Any) -> float:
    """Moment start for ``log F``: ``log((mean χ² − 1) / mean ℓ)``, floored at ``log 1e-3``.

    Under the model ``E[χ²_j] = 1 + Σ_k r²_jk F_k``, so a constant ``F`` is about this value.
    """
    chi2 = np.asarray(z, dtype=np.float64) ** 2
    ell = np.asarray(ld_scores, dtype=np.float64)
    return float(np.log(max((chi2.mean() - 1.0) / max(ell.mean(), 1.0), 1e-3)))


# ------------------------------------------------------------------------------ models


class _PriorBase(nn.Module):
    """Common interface: ``forward(tracks (m, T, W), scalars (m, S)) -> log F (m,)``."""

    def _summary(self, tracks: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        parts = [tracks.mean(dim=-1)] if tracks.shape[1] else []
        if scalars.shape[1]:
            parts.append(scalars)
        if not parts:
            return tracks.new_zeros((tracks.shape[0], 0))
        return torch.cat(parts, dim=1)


class ConstantPrior(_PriorBase):
    """``log F_j = b`` for every SNP (DeepWAS ``Constant``)."""

    def __init__(self, n_tracks: int = 0, n_scalars: int = 0, window: int = 1, *,
                 init_log_f: float = 0.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(init_log_f)))

    def forward(self, tracks: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Log prior variance of each SNP: the learned constant."""
        return self.bias.expand(tracks.shape[0])


class LinearPrior(_PriorBase):
    """``log F_j = b + wᵀ [mean_window(tracks_j), scalars_j]`` (DeepWAS ``Linear``)."""

    def __init__(self, n_tracks: int, n_scalars: int, window: int = 1, *,
                 init_log_f: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_tracks + n_scalars, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.constant_(self.linear.bias, float(init_log_f))

    def forward(self, tracks: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Log prior variance of each SNP from its summarised annotations."""
        return self.linear(self._summary(tracks, scalars))[:, 0]


class MLPPrior(_PriorBase):
    """A small MLP on the window means of the tracks and the scalar scores.

    Parameters
    ----------
    hidden
        Hidden layer widths (SiLU activations).
    """

    def __init__(self, n_tracks: int, n_scalars: int, window: int = 1, *,
                 hidden: Sequence[int] = (64, 64), init_log_f: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_tracks + n_scalars
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        out = nn.Linear(width, 1)
        nn.init.normal_(out.weight, std=1e-3)
        nn.init.constant_(out.bias, float(init_log_f))
        self.net = nn.Sequential(*layers, out)

    def forward(self, tracks: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Log prior variance of each SNP from its summarised annotations."""
        return self.net(self._summary(tracks, scalars))[:, 0]


class _ConvBlock(nn.Module):
    """Enformer conv block: BatchNorm -> GELU -> Conv1d (same padding)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int = 1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim_in)
        self.conv = nn.Conv1d(dim_in, dim_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.gelu(self.norm(x)))


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class _AttentionPool(nn.Module):
    """Enformer attention pooling: softmax-weighted sum over ``pool`` neighbouring positions."""

    def __init__(self, dim: int, pool: int = 2) -> None:
        super().__init__()
        self.pool = pool
        self.logits = nn.Conv1d(dim, dim, 1, bias=False)
        with torch.no_grad():  # start close to average pooling tilted to the maximum
            self.logits.weight.copy_(2.0 * torch.eye(dim)[:, :, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, n = x.shape
        if n % self.pool:
            x = nn.functional.pad(x, (0, self.pool - n % self.pool))
            n = x.shape[-1]
        logits = self.logits(x).reshape(b, d, n // self.pool, self.pool)
        return (x.reshape(b, d, n // self.pool, self.pool) * logits.softmax(dim=-1)).sum(-1)


class _RelativeAttention(nn.Module):
    """Multi-head self-attention with a learned relative-position bias per head."""

    def __init__(self, dim: int, heads: int, length: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise InvalidArgumentError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.length = heads, length
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(heads, 2 * length - 1))
        self.dropout = nn.Dropout(dropout)
        idx = torch.arange(length)
        self.register_buffer("rel", (idx[None, :] - idx[:, None]) + length - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        scores = scores + self.bias[:, self.rel[:n, :n]][None]
        attn = self.dropout(scores.softmax(dim=-1))
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class _TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, length: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _RelativeAttention(dim, heads, length, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Dropout(dropout), nn.ReLU(),
                                nn.Linear(2 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class ConvAttentionPrior(_PriorBase):
    """Reduced Enformer-style network over the annotation window (DeepWAS ``enformer.py``).

    Parameters
    ----------
    n_tracks, n_scalars
        Input tracks and scalar scores (scalars are broadcast along the window).
    window
        Bins per annotation window (a power of two times ``target_length``).
    dim
        Channels after the conv tower and in the transformer (384 in the authors' simulation
        config, 1536 for UKBB).
    target_length
        Positions kept by the centre crop (2 in the simulation config, 32 for UKBB).
    depth, heads
        Transformer layers and attention heads (2 and 2 in DeepWAS).
    stem_kernel
        Width of the stem convolution (15 in Enformer and DeepWAS).
    dropout
        Dropout in the transformer and before the head.
    init_log_f
        Initial bias of the output layer.
    """

    def __init__(self, n_tracks: int, n_scalars: int, window: int, *, dim: int = 32,
                 target_length: int = 2, depth: int = 2, heads: int = 2, stem_kernel: int = 15,
                 dropout: float = 0.05, init_log_f: float = 0.0) -> None:
        super().__init__()
        ratio = window / target_length
        n_down = round(math.log2(ratio)) if ratio >= 1 else -1
        if n_down < 1 or 2 ** n_down != ratio:
            raise InvalidArgumentError(f"window ({window}) must be target_length ({target_length}) times a "
                             "power of two of at least 2")
        c_in = n_tracks + n_scalars
        if c_in < 1:
            raise InvalidArgumentError("ConvAttentionPrior needs at least one input feature")
        half = max(dim // 2, 1)
        self.stem = nn.Sequential(
            nn.Conv1d(c_in, half, stem_kernel, padding=stem_kernel // 2),
            _Residual(_ConvBlock(half, half, 1)),
            _AttentionPool(half, 2),
        )
        widths = np.linspace(half, dim, n_down).round().astype(int).tolist()
        tower: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            tower += [_ConvBlock(w_in, w_out, 5), _Residual(_ConvBlock(w_out, w_out, 1)),
                      _AttentionPool(w_out, 2)]
        self.tower = nn.Sequential(*tower)
        length = window // 2 ** n_down
        self.project = nn.Linear(widths[-1], dim) if widths[-1] != dim else nn.Identity()
        self.transformer = nn.Sequential(
            *[_TransformerLayer(dim, heads, length, dropout) for _ in range(depth)])
        self.target_length = target_length
        self.pointwise = _ConvBlock(dim, 2 * dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * dim * target_length, 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, float(init_log_f))

    def forward(self, tracks: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Log prior variance of each SNP from its annotation window ``(m, tracks, width)`` and scalars."""
        m, _, width = tracks.shape
        x = torch.cat([tracks, scalars[:, :, None].expand(m, scalars.shape[1], width)], dim=1)
        x = self.tower(self.stem(x))                       # (m, C, L)
        x = self.transformer(self.project(x.transpose(1, 2))).transpose(1, 2)
        length = x.shape[-1]
        crop = (length - self.target_length) // 2
        x = x[:, :, crop:crop + self.target_length]
        x = self.dropout(nn.functional.gelu(self.pointwise(x)))
        return self.head(x.flatten(1))[:, 0]


#: Model sizes for :func:`make_prior` (``"quick"`` and ``"full"`` widths).
_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"mlp": {"hidden": (32, 32)}, "conv": {"dim": 16}},
    "full": {"mlp": {"hidden": (128, 128)}, "conv": {"dim": 384}},
}


def make_prior(kind: str, n_tracks: int, n_scalars: int, window: int, *,
               size: str = "quick", init_log_f: float = 0.0, **kwargs: Any) -> nn.Module:
    """Build a float64 prior model.

    Parameters
    ----------
    kind
        ``"constant"``, ``"linear"``, ``"mlp"`` or ``"conv"`` (:data:`PRIOR_KINDS`).
    n_tracks, n_scalars, window
        Input shape: tracks, scalar scores and bins per window.
    size
        ``"quick"`` (MLP 32x32, conv ``dim=16``) or ``"full"`` (MLP 128x128, conv ``dim=384``
        as in the authors' simulation config).
    init_log_f
        Initial output bias (see :func:`initial_log_f`).
    **kwargs
        Passed to the model class.
    """
    classes = {"constant": ConstantPrior, "linear": LinearPrior, "mlp": MLPPrior,
               "conv": ConvAttentionPrior}
    if kind not in classes:
        raise InvalidArgumentError(f"unknown prior kind {kind!r}; choose from {PRIOR_KINDS}")
    if size not in _SIZES:
        raise InvalidArgumentError(f"unknown size {size!r}; use {sorted(_SIZES)}")
    options = {**_SIZES[size].get(kind, {}), **kwargs}
    model = classes[kind](n_tracks, n_scalars, window, init_log_f=init_log_f, **options)
    return model.to(_DTYPE)


def _n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------ windows


def prepare_windows(
    sim: SimulatedGwas,
    split: str | Sequence[str],
    *,
    target_size: int = 250,
    flank: int = 250,
    ldsr_h2: float = 0.5,
) -> list[dict[str, Any]]:
    """Tensors of every LD window whose targets lie in ``split``.

    Windows are planned per contiguous run of the split (targets of ``target_size`` SNPs with
    ``flank`` SNPs of context on each side, clipped at the run's ends).

    Returns
    -------
    list of dict
        Per window: ``z`` (targets), ``R`` (dense window LD), ``target`` (local
        ``[start, stop)`` as a 2-vector), ``snps`` (global ``[start, stop)``), ``true_log_f``
        (targets), and the LDSR constants ``r2_t`` (target rows of ``R²``), ``ell``
        (``Σ_k R²_jk``) and ``s`` (``N ℓ h²/M + R_jj``, with ``M`` the number of SNPs).
        Annotations are not copied: models read them by the ``snps`` range.
    """
    runs = sim.segment_bounds(split)
    if not runs:
        raise InvalidArgumentError(f"the simulation has no SNPs in split {split!r}")
    out = []
    for a, b in runs:
        for w in plan_windows(b - a, target_size=target_size, flank=flank):
            glob = Window(a + w.start, a + w.stop, a + w.target_start, a + w.target_stop)
            R = window_matrix(sim.R, glob)
            t = glob.target
            r2_t = R[t] ** 2
            ell = r2_t.sum(axis=1)
            s = sim.n_gwas * ell * ldsr_h2 / sim.n_snps + np.diag(R)[t]
            out.append({
                "z": torch.as_tensor(sim.z[glob.target_snps], dtype=_DTYPE),
                "R": torch.as_tensor(R, dtype=_DTYPE),
                "target": torch.tensor([t.start, t.stop]),
                "snps": torch.tensor([glob.start, glob.stop]),
                "true_log_f": torch.as_tensor(sim.true_log_f[glob.target_snps], dtype=_DTYPE),
                "r2_t": torch.as_tensor(r2_t, dtype=_DTYPE),
                "ell": torch.as_tensor(ell, dtype=_DTYPE),
                "s": torch.as_tensor(s, dtype=_DTYPE),
            })
    return out


def _feature_tensors(sim: SimulatedGwas, features: FeatureSet, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    tracks, scalars = features.select(sim)
    return (torch.as_tensor(tracks, dtype=_DTYPE, device=device),
            torch.as_tensor(scalars, dtype=_DTYPE, device=device))


def _window_log_f(model: nn.Module, windows: Sequence[dict[str, Any]], tracks: torch.Tensor,
                  scalars: torch.Tensor) -> list[torch.Tensor]:
    """``log F`` of each window's SNPs, running the model once on the union of their SNPs."""
    ranges = [(int(w["snps"][0]), int(w["snps"][1])) for w in windows]
    index = np.unique(np.concatenate([np.arange(a, b) for a, b in ranges]))
    where = torch.as_tensor(index, device=tracks.device)
    log_f = model(tracks[where], scalars[where])
    return [log_f[int(np.searchsorted(index, a)):int(np.searchsorted(index, a)) + (b - a)]
            for a, b in ranges]


def _target(batch: dict[str, Any]) -> slice:
    t = batch["target"]
    return slice(int(t[0]), int(t[1]))


# ------------------------------------------------------------------------------ objectives


def likelihood_loss(log_f: torch.Tensor, batch: dict[str, Any], *, sigma: float = 1.0,
                    eps: float = 1e-4, method: str = "cholesky",
                    bandwidth: int | None = None) -> torch.Tensor:
    """Full-likelihood loss of one window: per-target-SNP NLL (:func:`window_nll`).

    ``bandwidth`` is required by the banded methods (``"banded"``, ``"banded_cg"``); each window
    is banded (Bartlett-tapered) once and reused across steps.
    """
    options = {} if bandwidth is None else {"bandwidth": bandwidth}
    return window_nll(batch["z"], batch["R"], log_f, target=_target(batch), sigma=sigma,
                      eps=eps, method=method, **options)


def ldsr_loss(log_f: torch.Tensor, batch: dict[str, Any], *, sigma: float = 1.0
              ) -> torch.Tensor:
    """LD-score-regression loss of the DeepWAS LDSR trainer for one window.

    ``χ̂_j = Σ_k R²_jk F_k + σ R_jj`` over the window SNPs ``k``, ``χ_j = z_j²``, and
    ``loss = mean_j[((χ̂_j − χ_j)/s_j)² / ℓ_j]`` over the targets, with the constants ``s`` and
    ``ℓ`` of :func:`prepare_windows` (``s_j = N ℓ_j h²/M + R_jj``, ``ℓ_j = Σ_k R²_jk``).
    """
    t = _target(batch)
    r_diag = torch.diagonal(batch["R"])[t]
    chi_hat = batch["r2_t"] @ torch.exp(log_f) + sigma * r_diag
    resid = (chi_hat - batch["z"] ** 2) / batch["s"]
    return (resid ** 2 / batch["ell"]).mean()


# ------------------------------------------------------------------------------ training


@dataclass
class PriorTrainingConfig:
    """Settings of :func:`train_prior` (defaults: the DeepWAS simulation config where known).

    Attributes
    ----------
    objective
        ``"likelihood"`` or ``"ldsr"``.
    epochs
        Passes over the training windows.
    lr, weight_decay
        AdamW settings (lr 2e-4 in the simulation config; torch's default weight decay 0.01).
    grad_clip
        Gradient-norm clip (0.2).
    warmup_steps
        Linear warm-up of the learning rate (100 steps).
    windows_per_step
        Windows accumulated per optimizer step (12 in DeepWAS).
    target_size, flank
        LD windows in SNPs: targets and context per side.
    sigma, eps
        Residual scale (fixed) and diagonal jitter of the likelihood.
    method
        Solver of :func:`window_nll` (``"cholesky"``, ``"woodbury"``, ``"cg"``, ``"banded"``,
        ``"banded_cg"``).
    bandwidth
        LD band in SNPs for the banded solvers (required by them, ignored by the others).
    ldsr_h2
        ``h²`` in the LDSR weights (``herit = 0.5``).
    seed
        Seeds weight initialisation and window order.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    checkpoint_dir
        Checkpoints for exact resume (``None``: none).
    progress
        Show progress bars.
    keep_best
        Return the weights of the epoch with the best validation delta NLL instead of the last
        ones, when the simulation has a ``valid`` split. With ``checkpoint_dir`` the best
        weights go to ``best.pt`` and the best metric and epoch into every checkpoint, so a run
        interrupted and resumed returns the same weights and ``best_epoch`` as an uninterrupted
        one, even when the best epoch came before the interruption. Selecting on the held-out
        likelihood is our choice, not taken from DeepWAS; it is the usual Lightning
        ``ModelCheckpoint`` practice.
    """

    objective: Objective = "likelihood"
    epochs: int = 30
    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 0.2
    warmup_steps: int = 100
    windows_per_step: int = 12
    target_size: int = 250
    flank: int = 250
    sigma: float = 1.0
    eps: float = 1e-4
    method: str = "cholesky"
    bandwidth: int | None = None
    ldsr_h2: float = 0.5
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None
    progress: bool | None = False
    keep_best: bool = True


@dataclass
class TrainedPrior:
    """A trained model with its features, settings and training history.

    Attributes
    ----------
    model
        The model (eval mode).
    features
        The :class:`FeatureSet` it reads.
    config
        The :class:`PriorTrainingConfig` used.
    fit
        The :class:`~analysislib.training.loop.FitResult`.
    n_parameters
        Trainable parameters.
    seconds
        Wall time of training (after the windows were prepared).
    kind
        Model label.
    epoch_seconds
        Wall time of each epoch trained in this call (validation included).
    best_epoch
        With ``config.keep_best``, the epoch (1-based) whose weights were kept.
    """

    model: nn.Module
    features: FeatureSet
    config: PriorTrainingConfig
    fit: FitResult
    n_parameters: int
    seconds: float = 0.0
    kind: str = ""
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None

    def parameters(self) -> dict[str, Any]:
        """JSON-ready description for the results store."""
        return {"kind": self.kind, "features": self.features.name,
                "n_parameters": self.n_parameters, **asdict(self.config)}


def _batches(windows: list[dict[str, Any]], per_step: int, generator: torch.Generator
             ) -> list[list[dict[str, Any]]]:
    order = torch.randperm(len(windows), generator=generator).tolist()
    return [[windows[i] for i in order[k:k + per_step]] for k in range(0, len(order), per_step)]


def train_prior(
    model: nn.Module,
    sim: SimulatedGwas,
    config: PriorTrainingConfig | None = None,
    *,
    features: FeatureSet | None = None,
    kind: str = "",
    validate: bool = True,
) -> TrainedPrior:
    """Train a prior on the ``train`` split of a simulation.

    Parameters
    ----------
    model
        From :func:`make_prior` (its inputs must match ``features``).
    sim
        The simulation (:func:`analysislib.simulate.gwas.simulate_gwas`).
    config
        Training settings (default :class:`PriorTrainingConfig`).
    features
        Feature set (default all features).
    kind
        Label stored with the result.
    validate
        Record the ``valid`` split's full-likelihood delta NLL at the end of each epoch (when the
        simulation has a validation split).

    Returns
    -------
    TrainedPrior
    """
    from analysislib.training import fit, read_checkpoint_header, select_device

    config = config or PriorTrainingConfig()
    if config.objective not in OBJECTIVES:
        raise InvalidArgumentError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
    if config.method.startswith("banded") and config.bandwidth is None:
        raise InvalidArgumentError(f"method={config.method!r} needs PriorTrainingConfig(bandwidth=...)")
    features = features or feature_set(sim, "all")
    device = select_device(config.device)
    model = model.to(device=device, dtype=_DTYPE)
    tracks, scalars = _feature_tensors(sim, features, device)
    try:
        with torch.no_grad():
            model.eval()
            model(tracks[:2], scalars[:2])
    except RuntimeError as err:
        raise InvalidArgumentError(
            f"the model does not accept feature set {features.name!r} ({len(features.tracks)} "
            f"tracks x {tracks.shape[2]} bins, {len(features.scalars)} scalars); build it with "
            f"make_prior(kind, {len(features.tracks)}, {len(features.scalars)}, "
            f"{tracks.shape[2]})") from err
    windows = prepare_windows(sim, "train", target_size=config.target_size, flank=config.flank,
                              ldsr_h2=config.ldsr_h2)
    valid = (prepare_windows(sim, "valid", target_size=config.target_size, flank=config.flank)
             if validate and (sim.split == "valid").any() else None)

    def step(net: nn.Module, batch: list[dict[str, Any]], ctx: Any) -> torch.Tensor:
        losses = []
        for w, log_f in zip(batch, _window_log_f(net, batch, tracks, scalars), strict=True):
            if config.objective == "likelihood":
                losses.append(likelihood_loss(
                    log_f, w, sigma=config.sigma, eps=config.eps, method=config.method,
                    bandwidth=config.bandwidth if config.method.startswith("banded") else None))
            else:
                losses.append(ldsr_loss(log_f, w, sigma=config.sigma))
        return torch.stack(losses).mean()

    def check(net: nn.Module, epoch: int) -> float:
        if valid is None:
            return float("nan")
        return _evaluate_windows(net, valid, tracks, scalars, sigma=config.sigma,
                                 eps=config.eps)["delta_nll"]

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    warmup = max(int(config.warmup_steps), 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    epoch_seconds: list[float] = []
    clock = [time.perf_counter()]

    # Best weights (by the validation delta NLL, which ``fit`` monitors): with a checkpoint
    # directory ``fit`` keeps them in ``best.pt`` (and the best metric and epoch in every
    # checkpoint), so they survive an interruption and resume, and loads them back at the end;
    # without one, an in-memory copy is enough (the same split as in eDICE's trainer).
    selecting = config.keep_best and valid is not None
    in_memory = selecting and config.checkpoint_dir is None
    best: dict[str, Any] = {"state": None, "epoch": None}

    def lap(record: dict[str, Any]) -> None:
        now = time.perf_counter()
        epoch_seconds.append(now - clock[0])
        clock[0] = now
        if in_memory and record.get("improved"):
            best.update(epoch=record["epoch"],
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})

    started = clock[0]
    result = fit(
        model, optimizer, step,
        lambda epoch, gen: _batches(windows, config.windows_per_step, gen),
        epochs=config.epochs, seed=config.seed, checkpoint_dir=config.checkpoint_dir,
        scheduler=scheduler, scheduler_interval="step", grad_clip_norm=config.grad_clip,
        validate=check if valid is not None else None,
        save_best=selecting, restore_best=selecting,
        metadata={"objective": config.objective, "kind": kind, "features": features.name},
        progress=config.progress, on_epoch_end=lap,
    )
    seconds = time.perf_counter() - started
    best_epoch = None
    if in_memory:
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        best_epoch = best["epoch"]
    elif selecting and result.best_epoch is not None:
        if result.best_checkpoint is not None:  # fit has loaded best.pt into the model
            best_epoch = read_checkpoint_header(result.best_checkpoint)["epoch"]
        else:  # a checkpoint directory written without best.pt (older analysislib)
            logger.warning("%s holds no best.pt; returning the last weights (epoch %d), not "
                           "those of the best epoch %d", config.checkpoint_dir,
                           result.epochs_completed, result.best_epoch)
    model.eval()
    return TrainedPrior(model=model, features=features, config=config, fit=result,
                        n_parameters=_n_parameters(model), seconds=seconds, kind=kind,
                        epoch_seconds=epoch_seconds, best_epoch=best_epoch)


# ------------------------------------------------------------------------------ evaluation


def _evaluate_windows(model: nn.Module, windows: list[dict[str, Any]], tracks: torch.Tensor,
                      scalars: torch.Tensor, *, sigma: float, eps: float) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total = total_null = 0.0
    errors, preds, truths = [], [], []
    n = 0
    device = tracks.device
    with torch.no_grad():
        for w in windows:
            w = {k: v.to(device) for k, v in w.items()}
            (log_f,) = _window_log_f(model, [w], tracks, scalars)
            n_t = int(w["z"].shape[0])
            total += n_t * float(likelihood_loss(log_f, w, sigma=sigma, eps=eps))
            total_null += n_t * float(null_nll(w["z"], w["R"], target=_target(w), sigma=sigma,
                                               eps=eps))
            pred = log_f[_target(w)].cpu().numpy()
            truth = w["true_log_f"].cpu().numpy()
            preds.append(pred)
            truths.append(truth)
            errors.append(pred - truth)
            n += n_t
    model.train(was_training)
    err = np.concatenate(errors)
    pred, truth = np.concatenate(preds), np.concatenate(truths)
    corr = float(np.corrcoef(pred, truth)[0, 1]) if pred.std() > 0 else float("nan")
    f_err = float(np.abs(np.exp(pred) - np.exp(truth)).sum() / np.exp(truth).sum())
    return {"nll": total / n, "null_nll": total_null / n, "delta_nll": (total - total_null) / n,
            "log_f_mae": float(np.abs(err).mean()), "log_f_rmse": float(np.sqrt((err ** 2).mean())),
            "log_f_r": corr, "f_rel_l1": f_err, "n_snps": n}


def evaluate_prior(
    trained: TrainedPrior | nn.Module,
    sim: SimulatedGwas,
    split: str | Sequence[str] = "test",
    *,
    features: FeatureSet | None = None,
    target_size: int | None = None,
    flank: int | None = None,
    sigma: float = 1.0,
    eps: float = 1e-4,
) -> dict[str, float]:
    """Held-out full-likelihood and log-F accuracy of a prior.

    Parameters
    ----------
    trained
        A :class:`TrainedPrior` (its features and window sizes are reused) or a bare model.
    sim
        The simulation.
    split
        SNPs to score (``"test"`` by default).
    features, target_size, flank
        Override what ``trained`` carries (required for a bare model: features default to all,
        windows to 250 + 250).
    sigma, eps
        Likelihood settings.

    Returns
    -------
    dict
        ``nll`` and ``null_nll`` (per SNP), ``delta_nll`` (``nll − null_nll``, DeepWAS
        ``val_delta_loss``; negative is better), ``log_f_mae``, ``log_f_rmse``, ``log_f_r``
        (against ``sim.true_log_f``), ``f_rel_l1`` (``Σ|F̂ − F| / Σ F`` on the variance scale,
        dominated by the large-effect SNPs the likelihood can see, whereas log-scale errors
        weigh every SNP equally) and ``n_snps``.
    """
    if isinstance(trained, TrainedPrior):
        model = trained.model
        features = features or trained.features
        target_size = target_size or trained.config.target_size
        flank = flank if flank is not None else trained.config.flank
    else:
        model = trained
    features = features or feature_set(sim, "all")
    windows = prepare_windows(sim, split, target_size=target_size or 250,
                              flank=250 if flank is None else flank)
    device = next(iter(model.parameters())).device
    tracks, scalars = _feature_tensors(sim, features, device)
    return _evaluate_windows(model, windows, tracks, scalars, sigma=sigma, eps=eps)


def predict_log_f(model: nn.Module, sim: SimulatedGwas, features: FeatureSet | None = None, *,
                  batch_size: int = 4096) -> np.ndarray:
    """Predicted ``log F_N`` for every SNP of a simulation."""
    features = features or feature_set(sim, "all")
    tracks, scalars = features.select(sim)
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for a in range(0, sim.n_snps, batch_size):
            t = torch.as_tensor(tracks[a:a + batch_size], dtype=_DTYPE, device=device)
            s = torch.as_tensor(scalars[a:a + batch_size], dtype=_DTYPE, device=device)
            out.append(model(t, s).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


#: Metrics of :func:`evaluate_prior` written by :func:`result_rows`.
RESULT_METRICS = ("nll", "null_nll", "delta_nll", "log_f_mae", "log_f_rmse", "log_f_r",
                  "f_rel_l1")


def result_rows(
    trained: TrainedPrior,
    evaluation: dict[str, float],
    sim: SimulatedGwas,
    *,
    dataset: str,
    split: str = "test",
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for :class:`analysislib.results.ResultsStore` (task ``"gwas_priors"``).

    ``method`` is ``"<objective>_<kind>"`` (``likelihood_conv``), ``scenario`` is
    ``"features_<name>"``, ``stratum_kind`` is ``"split"`` and ``stratum`` the evaluated split;
    one row per metric of :data:`RESULT_METRICS`. ``runtime_s`` is the training time and
    ``peak_memory_mb`` the peak resident memory of the process so far.
    """
    from analysislib.results import array_checksum, peak_memory_mb, run_stamp

    common = run_stamp(
        task="gwas_priors", dataset=dataset, scenario=f"features_{trained.features.name}",
        method=f"{trained.config.objective}_{trained.kind or 'model'}", parameters=trained.parameters(),
        data_checksum=array_checksum(sim.z, sim.true_log_f, sim.split), runtime_s=trained.seconds,
        peak_memory_mb=peak_memory_mb(), run_id=run_id)
    return [{**common, "stratum_kind": "split", "stratum": split, "n": int(evaluation["n_snps"]),
             "metric": name, "value": float(evaluation[name])} for name in RESULT_METRICS]
