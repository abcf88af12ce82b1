"""BiU-Net and SCDA training: the hybrid loss, curriculum masking and the training run.

Follows the BiU-Net paper (Methods 5.4 "Model training": the focal loss weighted by the
dosage-penalty matrix of Table 2, Eq. 2-4, the dosage loss of Eq. 5-7 and their mix, Eq. 8) and
SCDA's published training (cross-entropy and an L1 penalty on the kernels; Chen and Shi 2019).
:func:`train_segment_model` builds a network (:func:`build_model`,
:mod:`analysislib.genotype.unet_model`) and trains it through :func:`analysislib.training.fit`;
the losses, the site prior, haplotype rows and the curriculum are described in
:mod:`analysislib.genotype.unet` ("Hybrid loss", "Site prior", "Haplotype rows", "Training").
torch is imported inside the functions that use it, so importing this module does not.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.segments import (
    GENOTYPE_CODES,
    MISSING,
    N_CLASSES,
    PAD,
    SegmentedGenotypes,
    SegmentLayout,
    haplotype_tokens,
    segment_dataset,
)
from analysislib.runtime import RunOptions, options_from_keywords, renamed_keywords, torch_threads

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from analysislib.genotype.unet import SegmentModelConfig

__all__ = [
    "PENALTY_MATRIX",
    "TrainedSegmentModel",
    "build_model",
    "count_parameters",
    "dosage_mse_loss",
    "focal_penalty_loss",
    "hybrid_loss",
    "site_prior",
    "train_segment_model",
]

#: Table 2 of the paper: penalty when the true phased genotype (rows: 0|0, 0|1, 1|0, 1|1) is
#: predicted as the column genotype.
PENALTY_MATRIX: np.ndarray = np.array([
    [0.0, 3.0, 3.0, 3.0],
    [3.0, 0.0, 1.0, 3.0],
    [3.0, 1.0, 0.0, 3.0],
    [3.0, 3.0, 3.0, 0.0],
])
_CLASS_DOSAGE = (0.0, 1.0, 1.0, 2.0)


def _torch() -> Any:
    import torch

    return torch


# ----------------------------------------------------------------------------- models


def build_model(config: SegmentModelConfig, layout: SegmentLayout | None = None) -> torch.nn.Module:
    """The (untrained) network a configuration describes (``layout`` sizes the site embedding)."""
    from analysislib.genotype.unet_model import SCDA, BiUNet

    cls = BiUNet if config.model == "biunet" else SCDA
    sites = None if layout is None else (layout.n_segments, layout.segment_length)
    return cls(config.depth, config.channels, config.kernel_size, dropout=config.dropout,
               positional=config.positional, site_prior=config.site_prior,
               site_channels=config.site_channels, sites=sites)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _l1_kernels(model: torch.nn.Module) -> torch.Tensor:
    torch = _torch()
    inner = getattr(model, "module", model)
    return sum((m.weight.abs().sum() for m in inner.modules() if isinstance(m, torch.nn.Conv1d)),
               torch.zeros((), device=next(inner.parameters()).device))


# ----------------------------------------------------------------------------- losses


def _class_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class index 0..3 of codes 1..4, and the mask of positions with a known genotype."""
    target = target.long()
    known = (target >= GENOTYPE_CODES[0]) & (target <= GENOTYPE_CODES[-1])
    return (target - GENOTYPE_CODES[0]).clamp(0, N_CLASSES - 1), known


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def focal_penalty_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                       penalty: Any = PENALTY_MATRIX, penalty_mode: str = "expected",
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss weighted by the dosage-penalty matrix (paper Eq. 2-4, Table 2).

    Parameters
    ----------
    logits
        (batch, 4, length) class logits (0|0, 0|1, 1|0, 1|1).
    target
        (batch, length) codes; positions not in 1..4 (mask, padding) are ignored.
    gamma
        Focusing parameter (2 in the paper).
    penalty
        4 x 4 score matrix, rows true and columns predicted genotype.
    penalty_mode
        ``"argmax"``: weight ``S[y, argmax]`` (no gradient); ``"expected"``: ``sum_j S[y, j] p_j``.
    weight
        Optional (batch, length) 0/1 selection of scored positions (combined with the known ones).

    Returns
    -------
    torch.Tensor
        Mean over scored positions (0 when none).
    """
    torch = _torch()
    logits = logits.float()
    cls, known = _class_targets(target)
    logp = torch.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, cls.unsqueeze(1)).squeeze(1)
    p_t = logp_t.exp()
    matrix = torch.as_tensor(penalty, dtype=logits.dtype, device=logits.device)
    if penalty_mode == "argmax":
        w = matrix[cls, logits.argmax(dim=1)].detach()
    elif penalty_mode == "expected":
        w = (matrix[cls] * logp.exp().transpose(1, 2)).sum(-1)
    else:
        raise InvalidArgumentError(f"penalty_mode must be 'argmax' or 'expected', got {penalty_mode!r}")
    values = -((1 - p_t) ** gamma) * w * logp_t
    scored = known if weight is None else known & weight.bool()
    return _weighted_mean(values, scored)


def dosage_mse_loss(logits: torch.Tensor, target: torch.Tensor, *,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of the expected dosage ``p(0|1) + p(1|0) + 2 p(1|1)`` (paper Eq. 5-7)."""
    torch = _torch()
    cls, known = _class_targets(target)
    probs = torch.softmax(logits.float(), dim=1)
    dose = torch.as_tensor(_CLASS_DOSAGE, dtype=probs.dtype, device=probs.device)
    predicted = (probs * dose.view(1, -1, 1)).sum(1)
    scored = known if weight is None else known & weight.bool()
    return _weighted_mean((predicted - dose[cls]) ** 2, scored)


def hybrid_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, lam: float = 0.5,
                penalty: Any = PENALTY_MATRIX, penalty_mode: str = "expected",
                weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``(1 - lam) * focal_penalty + lam * dosage_mse`` (paper Eq. 8).

    Returns
    -------
    dict
        ``loss`` (the total), ``focal`` and ``dosage`` (detached, for logging).
    """
    focal = focal_penalty_loss(logits, target, gamma=gamma, penalty=penalty,
                               penalty_mode=penalty_mode, weight=weight)
    dosage = dosage_mse_loss(logits, target, weight=weight)
    return {"loss": (1 - lam) * focal + lam * dosage, "focal": focal.detach(), "dosage": dosage.detach()}


def _ce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    torch = _torch()
    cls, known = _class_targets(target)
    values = torch.nn.functional.cross_entropy(logits.float(), cls, reduction="none")
    scored = known if weight is None else known & weight.bool()
    return _weighted_mean(values, scored)


# ----------------------------------------------------------------------------- data


def _as_haplotype_rows(segs: SegmentedGenotypes) -> SegmentedGenotypes:
    """``segs`` with one row per haplotype (:func:`~analysislib.genotype.segments.haplotype_tokens`)."""
    ids = np.asarray(segs.sample_id, dtype=str)
    return dataclasses.replace(segs, tokens=haplotype_tokens(segs.tokens),
                               sample_id=np.stack([np.char.add(ids, "_1"), np.char.add(ids, "_2")],
                                                  axis=1).ravel().astype(object))


def _layout_for(n_variants: int, config: SegmentModelConfig) -> SegmentLayout:
    """The segmentation of a contig; full length (padded to the granularity) when length is None."""
    if config.segment_length is not None:
        return SegmentLayout(n_variants, config.segment_length, config.overlap)
    length = -(-n_variants // config.granularity) * config.granularity
    return SegmentLayout(n_variants, length, 0)


def _segment(ds: xr.Dataset, config: SegmentModelConfig) -> SegmentedGenotypes:
    layout = _layout_for(ds.sizes["variants"], config)
    return segment_dataset(ds, segment_length=layout.segment_length, overlap=layout.overlap,
                           position=config.position, normalise=config.normalise)


def site_prior(tokens: Any, pseudocount: float = 0.5) -> np.ndarray:
    """Log-frequencies of the four phased genotypes at every segment column.

    Parameters
    ----------
    tokens
        (samples, n_segments, length) codes of the training panel.
    pseudocount
        Added to each class count (so an unseen class keeps a small probability).

    Returns
    -------
    numpy.ndarray
        float32 (n_segments, 4, length) log-probabilities; columns with no known genotype
        (padding) get the uniform ``log(1/4)``.
    """
    tok = np.asarray(tokens)
    counts = np.stack([(tok == code).sum(axis=0) for code in GENOTYPE_CODES], axis=1).astype(np.float64)
    probs = (counts + pseudocount) / (counts.sum(axis=1, keepdims=True) + N_CLASSES * pseudocount)
    return np.log(probs).astype(np.float32)


class _EpochBatches:
    """One epoch of (tokens, positional, prior) batches over all (sample, segment) items of a rank."""

    def __init__(self, tokens: torch.Tensor, positional: torch.Tensor, prior: torch.Tensor, *,
                 batch_size: int, generator: torch.Generator, rank: int, world_size: int) -> None:
        torch = _torch()
        self.tokens, self.positional, self.prior, self.batch_size = tokens, positional, prior, batch_size
        n = tokens.shape[0] * tokens.shape[1]
        order = torch.randperm(n, generator=generator)
        per_rank = -(-n // world_size)
        order = torch.cat([order, order[: per_rank * world_size - n]])  # pad by wrapping
        self.order = order[rank::world_size]

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        n_seg = self.tokens.shape[1]
        for lo in range(0, len(self.order), self.batch_size):
            items = self.order[lo:lo + self.batch_size]
            sample, segment = items // n_seg, items % n_seg
            yield self.tokens[sample, segment], self.positional[segment], self.prior[segment], segment


def _mask_batch(tokens: torch.Tensor, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide each known genotype with probability ``rate``; returns (input, hidden mask)."""
    torch = _torch()
    draw = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    known = (tokens != PAD) & (tokens != MISSING)
    hidden = (draw < rate) & known
    return torch.where(hidden, torch.zeros_like(tokens), tokens), hidden


# ----------------------------------------------------------------------------- training


@dataclass
class TrainedSegmentModel:
    """A trained BiU-Net or SCDA with what it was trained on.

    Attributes
    ----------
    model
        The network on the CPU in eval mode.
    config
        Its configuration.
    layout
        Segmentation of the training contig.
    positional
        Positional channel (n_segments, segment_length) of the training contig.
    prior
        Site prior (n_segments, 4, segment_length) of the training panel (:func:`site_prior`).
    history
        One row per epoch (loss, focal/dosage or ce terms, mask rate, validation loss).
    epochs_completed, best_epoch, seconds, segments_seen
        Training summary (``segments_seen`` counts training segments over all epochs).
    """

    model: Any
    config: SegmentModelConfig
    layout: SegmentLayout
    positional: np.ndarray
    prior: np.ndarray
    history: pd.DataFrame
    epochs_completed: int
    best_epoch: int | None
    seconds: float
    segments_seen: int
    details: dict[str, Any] = field(default_factory=dict)


def _batch_loss(net: Any, tokens: torch.Tensor, positional: torch.Tensor, prior: torch.Tensor | None,
                segment: torch.Tensor | None, *, rate: float, generator: torch.Generator,
                config: SegmentModelConfig) -> dict[str, torch.Tensor]:
    masked, hidden = _mask_batch(tokens, rate, generator)
    logits = net(masked, positional if config.positional else None, prior if config.site_prior else None,
                 segment if config.site_channels else None)
    weight = hidden if config.loss_on == "masked" else None
    if config.loss == "hybrid":
        out = hybrid_loss(logits, tokens, gamma=config.gamma, lam=config.lam,
                          penalty_mode=config.penalty_mode, weight=weight)
    else:
        ce = _ce_loss(logits, tokens, weight)
        out = {"loss": ce, "ce": ce.detach()}
    if config.l1 > 0:
        l1 = config.l1 * _l1_kernels(net)
        out = {**out, "loss": out["loss"] + l1, "l1": l1.detach()}
    return out


@renamed_keywords(num_threads="threads")
@options_from_keywords("device", "threads", "progress")
def train_segment_model(
    train: xr.Dataset | SegmentedGenotypes,
    config: SegmentModelConfig,
    *,
    validation: xr.Dataset | SegmentedGenotypes | None = None,
    amp: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    options: RunOptions | None = None,
) -> TrainedSegmentModel:
    """Train a BiU-Net or SCDA on segments with curriculum masking (:mod:`analysislib.genotype.unet`, "Training").

    Parameters
    ----------
    train
        Phased training genotypes (one contig) or their segments.
    config
        Model, loss and training settings.
    validation
        Optional validation genotypes/segments: early stopping (``config.patience``) on their
        loss with a fixed ``mask_end`` mask, and the best epoch's weights are kept.
    amp
        Mixed precision where available (fp16 autocast on CUDA; a no-op on the CPU).
    checkpoint_dir, resume
        Checkpoints (every epoch, plus ``best.pt``) and exact resume through
        :func:`analysislib.training.fit`.
    options
        Run-time options (:class:`~analysislib.runtime.RunOptions`; None: the defaults).
        ``device``: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``; inside ``torchrun`` the
        process group's device is used and the model is wrapped in DDP. ``threads``: torch CPU
        threads while training, restored afterwards (None keeps torch's setting).
        ``progress``: progress bars (None: follow ``ANALYSISLIB_PROGRESS``). The separate
        ``device``, ``threads`` (or ``num_threads``) and ``progress`` keywords of earlier
        releases are accepted for one release.

    Returns
    -------
    TrainedSegmentModel
    """
    import pandas as pd
    import torch

    from analysislib.training import (
        EarlyStopping,
        fit,
        get_rank,
        get_world_size,
        is_distributed,
        linear_curriculum,
        make_generator,
        seed_everything,
        select_device,
        wrap_ddp,
    )

    options = options if options is not None else RunOptions()
    started = time.perf_counter()
    segs = train if isinstance(train, SegmentedGenotypes) else _segment(train, config)
    val = None
    if validation is not None:
        val = validation if isinstance(validation, SegmentedGenotypes) else _segment(validation, config)
        if val.layout != segs.layout:
            raise InvalidArgumentError("validation segments do not share the training segmentation")
    if config.unit == "haplotype":
        segs = _as_haplotype_rows(segs)
        val = None if val is None else _as_haplotype_rows(val)
    if is_distributed():
        from analysislib.training import init_distributed

        run_device = init_distributed(options.device).device
    else:
        run_device = select_device(options.device)
    seed_everything(config.seed)
    model = wrap_ddp(build_model(config, segs.layout), run_device)
    inner = getattr(model, "module", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    lr_step = None
    if config.lr_step_at is not None:
        lr_step = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[max(1, round(config.lr_step_at * config.epochs))], gamma=config.lr_step_factor)
    schedule = linear_curriculum(config.mask_start, config.mask_end, max(1, config.epochs))
    tokens = torch.from_numpy(np.ascontiguousarray(segs.tokens))
    positional = torch.from_numpy(np.ascontiguousarray(segs.positional))
    prior_np = site_prior(segs.tokens)
    prior = torch.from_numpy(prior_np)

    def make_loader(epoch: int, generator: torch.Generator) -> _EpochBatches:
        return _EpochBatches(tokens, positional, prior, batch_size=config.batch_size,
                             generator=generator, rank=get_rank(), world_size=get_world_size())

    def train_step(net: Any, batch: Any, ctx: Any) -> dict[str, torch.Tensor]:
        tok, pos, pri, seg = batch
        return _batch_loss(net, tok, pos, pri, seg, rate=float(schedule(ctx.epoch)),
                           generator=ctx.generator, config=config)

    validate = None
    if val is not None:
        val_tokens = torch.from_numpy(np.ascontiguousarray(val.tokens))
        val_pos = torch.from_numpy(np.ascontiguousarray(val.positional))

        def validate(net: Any, epoch: int) -> float:
            generator = make_generator(config.seed, 97)
            total, count = 0.0, 0
            loader = _EpochBatches(val_tokens, val_pos, prior,
                                   batch_size=max(config.batch_size, 256),
                                   generator=make_generator(config.seed, 98), rank=0, world_size=1)
            for tok, pos, pri, seg in loader:
                out = _batch_loss(net, tok.to(run_device), pos.to(run_device), pri.to(run_device),
                                  seg.to(run_device), rate=config.mask_end, generator=generator,
                                  config=config)
                total += float(out["loss"]) * len(tok)
                count += len(tok)
            return total / max(count, 1)

    best: dict[str, Any] = {}

    def epoch_end(record: dict[str, Any]) -> None:
        record["mask_rate"] = float(schedule(record["epoch"] - 1))
        if val is not None:
            record["val_loss"] = record.get("metric", float("nan"))
            if record.get("improved") and checkpoint_dir is None:
                best["state"] = copy.deepcopy(inner.state_dict())
                best["epoch"] = record["epoch"]

    with torch_threads(options.threads):
        result = fit(
            model, optimizer, train_step, make_loader, epochs=config.epochs, seed=config.seed,
            checkpoint_dir=checkpoint_dir, resume=resume, cycle_length=1,
            validate=validate,
            early_stopping=EarlyStopping(patience=config.patience if val is not None else None),
            scheduler=lr_step, scheduler_interval="epoch",
            amp=amp, keep_last=1, restore_best=val is not None, on_epoch_end=epoch_end,
            metadata={"model": config.model, "config": config.to_dict(),
                      "layout": segs.layout.to_dict()},
            progress=options.progress, checkpoint_prefix=config.model)
    if best and checkpoint_dir is None and best["epoch"] != result.epochs_completed:
        inner.load_state_dict(best["state"])
    inner.cpu().eval()
    return TrainedSegmentModel(
        model=inner, config=config, layout=segs.layout, positional=segs.positional, prior=prior_np,
        history=pd.DataFrame(result.history), epochs_completed=result.epochs_completed,
        best_epoch=result.best_epoch, seconds=time.perf_counter() - started,
        segments_seen=len(segs) * result.epochs_completed,
        details={"n_parameters": count_parameters(inner), "device": str(run_device),
                 "stopped_early": result.stopped_early,
                 "resumed_from": None if result.resumed_from is None else str(result.resumed_from)})
