"""The shared training loop: epochs, cycles, checkpoints, exact resume, early stopping, progress.

One function, :func:`fit`, trains the denoising autoencoders of Dias et al. 2022 (cycles of
epochs, stop when a cycle fails to improve, learning-rate decay per cycle; paper Methods,
"Hyperparameter tuning"), the BiU-Net, eDICE (early stopping with patience, as in
``scripts/entex_LOO_tissue_transfer.py`` of ``alex-hh/eDICE``) and the DeepWAS priors. Each
trainer supplies only a ``train_step`` that returns the loss of one batch and a ``make_loader``
that builds an epoch's batches; :func:`fit` does the optimisation, mixed precision, DDP
bookkeeping and checkpointing.

Exact resume: data order and per-batch randomness come from generators derived from
``(seed, epoch)`` (and the rank), and global RNG states are stored in every checkpoint, so a run
killed at any point and resumed from its latest checkpoint ends with bit-identical weights.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib.errors import CheckpointError, InvalidArgumentError
from analysislib.io.atomic import atomic_output
from analysislib.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
    unwrap_model,
)
from analysislib.training.ddp import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
)
from analysislib.training.device import autocast_context, make_grad_scaler, move_to_device
from analysislib.training.randomness import capture_rng_state, make_generator, numpy_generator
from analysislib.training.schedules import EarlyStopping, decay_learning_rate

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROGRESS_ENV",
    "FitResult",
    "StepContext",
    "fit",
    "progress_enabled",
]

logger = logging.getLogger(__name__)

PROGRESS_ENV = "ANALYSISLIB_PROGRESS"
"""Set to ``0`` / ``false`` / ``off`` to hide progress bars when ``progress=None``."""

BEST_CHECKPOINT_NAME = "best.pt"
_LOADER_STREAM = 1  # stream ids for derive_seed
_STEP_STREAM = 2


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show progress bars.

    Parameters
    ----------
    progress
        An explicit choice wins. ``None`` shows them unless the environment variable
        ``ANALYSISLIB_PROGRESS`` is ``0``, ``false``, ``no`` or ``off``. Only the main process
        of a DDP job ever shows them.

    Returns
    -------
    bool
    """
    if get_rank() != 0:
        return False
    if progress is not None:
        return bool(progress)
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class StepContext:
    """What ``train_step`` knows about the current batch.

    Attributes
    ----------
    epoch
        0-based index of the epoch being trained.
    step
        Optimizer steps completed before this batch.
    batch_index
        0-based index of the batch within the epoch.
    device
        Device of the model; the batch has already been moved there.
    generator
        ``torch.Generator`` for this epoch and rank (CPU), for masks and noise that must
        replay identically after a resume.
    rng
        NumPy generator from the same stream, for NumPy-side masking.
    rank, world_size
        Position in a DDP job (0 and 1 otherwise).
    """

    epoch: int
    step: int
    batch_index: int
    device: torch.device
    generator: torch.Generator
    rng: np.random.Generator
    rank: int = 0
    world_size: int = 1


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    epochs_completed
        Epochs trained in total, including those before a resume.
    steps
        Optimizer steps in total.
    history
        One record per epoch: ``epoch`` (1-based), ``loss`` (mean over batches and ranks), any
        extra logged values, ``lr``; records that end a cycle add ``metric`` and ``improved``.
    best_metric, best_epoch
        Best monitored value and the epoch (1-based) it was reached.
    stopped_early
        True if early stopping ended training.
    resumed_from
        Checkpoint the run resumed from, if any.
    last_checkpoint, best_checkpoint
        Files written (``None`` without ``checkpoint_dir``).
    """

    epochs_completed: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    resumed_from: Path | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def _split_step_output(output: Any, where: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    import torch

    if isinstance(output, torch.Tensor):
        loss, logs = output, {}
    elif isinstance(output, Mapping) and "loss" in output:
        loss = output["loss"]
        logs = {key: value for key, value in output.items() if key != "loss"}
    else:
        raise TypeError(
            f"train_step must return a scalar loss tensor or a dict with key 'loss' ({where}), "
            f"got {type(output).__name__}"
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"train_step's loss must be a one-element tensor ({where})")
    return loss.reshape(()), logs


def _epoch_batches(make_loader: Any, epoch: int, generator: torch.Generator) -> Iterable[Any]:
    loader = make_loader(epoch, generator) if callable(make_loader) else make_loader
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if inner is not sampler and hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)
    return loader


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _remove_stale_temporaries(directory: Path, prefix: str) -> None:
    # Left behind only when a process was killed (SIGKILL) inside atomic_output.
    for pattern in (f".{prefix}_*.tmp.pt", f".{BEST_CHECKPOINT_NAME}.*.tmp.pt"):
        for leftover in directory.glob(pattern):
            leftover.unlink(missing_ok=True)


def _atomic_copy(source: Path, destination: Path) -> None:
    with atomic_output(destination) as tmp:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as handle:  # on disk before the rename, as save_checkpoint does
            os.fsync(handle.fileno())


def _sync_best_copy(directory: Path, best_path: Path, best_epoch: int, prefix: str) -> None:
    """On resume, make ``best.pt`` the checkpoint of ``best_epoch`` again if it is not.

    A checkpoint is written first and then copied to ``best.pt``; a process killed between the
    two leaves a checkpoint naming its own epoch as the best beside the previous ``best.pt``
    (and a directory written with ``save_best=False`` has none). The best epoch's checkpoint is
    copied again when it is still there.
    """
    try:
        if read_checkpoint_header(best_path)["epoch"] == best_epoch:
            return
    except CheckpointError:  # missing or damaged
        pass
    source = checkpoint_path(directory, best_epoch, prefix)
    if source.exists():
        _atomic_copy(source, best_path)
        logger.warning(
            "%s did not hold the best epoch %d; copied it from %s", best_path, best_epoch, source
        )
    else:
        logger.warning(
            "%s does not hold the best epoch %d and its checkpoint is gone", best_path, best_epoch
        )


def fit(  # noqa: PLR0913 - the generic training loop's controls
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_step: Callable[[torch.nn.Module, Any, StepContext], Any],
    make_loader: Callable[[int, torch.Generator], Iterable[Any]] | Iterable[Any],
    *,
    epochs: int,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    checkpoint_every: int = 1,
    cycle_length: int = 1,
    validate: Callable[[torch.nn.Module, int], float] | None = None,
    early_stopping: EarlyStopping | None = None,
    lr_decay_factor: float | None = None,
    min_lr: float = 0.0,
    scheduler: Any | None = None,
    scheduler_interval: Literal["step", "epoch", "cycle"] = "epoch",
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip_norm: float | None = None,
    keep_last: int | None = 2,
    save_best: bool = True,
    restore_best: bool = False,
    metadata: Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    nonfinite: Literal["raise", "ignore"] = "raise",
    progress: bool | None = None,
    checkpoint_prefix: str = "epoch",
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs with checkpointing and exact resume.

    Parameters
    ----------
    model
        The model, already on its device (and wrapped by
        :func:`~analysislib.training.ddp.wrap_ddp` in a DDP job).
    optimizer
        Optimizer over ``model``'s parameters.
    train_step
        ``train_step(model, batch, ctx) -> loss`` computes the loss of one batch (forward pass
        only; ``fit`` runs backward and the optimizer step). It may return a dict with key
        ``"loss"`` plus other scalar tensors to log. It runs under autocast when ``amp``.
    make_loader
        ``make_loader(epoch, generator) -> iterable of batches``. Pass ``generator`` to the
        DataLoader (``DataLoader(..., shuffle=True, generator=generator)``) so the order is
        fixed by ``(seed, epoch)``. A DataLoader can be given directly instead; any sampler
        with ``set_epoch`` (such as :func:`~analysislib.training.ddp.distributed_sampler`)
        gets the epoch set automatically.
    epochs
        Total number of epochs (including those done before a resume).
    seed
        Base seed of the loader and per-batch random streams. Seed model initialisation
        yourself with :func:`~analysislib.training.randomness.seed_everything` beforehand.
    checkpoint_dir
        Where checkpoints go (``epoch_000005.pt``, ``best.pt``); ``None`` disables them.
    resume
        Continue from the latest checkpoint in ``checkpoint_dir``; if false, old checkpoints
        there are deleted and training starts afresh.
    checkpoint_every
        Write a checkpoint every this many epochs; the end of each cycle and of training is
        always checkpointed.
    cycle_length
        Epochs per cycle. At the end of a cycle the monitored metric is computed (``validate``,
        or else the mean training loss over the cycle), early stopping and learning-rate decay
        are applied, and ``best.pt`` is updated. Dias et al. use cycles of 500 epochs.
    validate
        ``validate(model, epoch) -> float`` (``epoch`` 0-based), run on the unwrapped model in
        eval mode without gradients at each cycle end; averaged over DDP ranks.
    early_stopping
        Stopping rule on the monitored metric; the default tracks the minimum and never stops.
        Use ``EarlyStopping(mode="max")`` for a metric where larger is better.
    lr_decay_factor
        Multiply the learning rate by this factor after every cycle that fails to improve.
    min_lr
        Floor for ``lr_decay_factor``.
    scheduler
        A torch learning-rate scheduler, stepped every ``scheduler_interval``
        (``ReduceLROnPlateau`` receives the monitored metric at each cycle end).
    scheduler_interval
        ``"step"``, ``"epoch"`` or ``"cycle"``.
    amp, amp_dtype
        Mixed precision (see :func:`~analysislib.training.device.autocast_context`).
    scaler
        Gradient scaler; by default :func:`~analysislib.training.device.make_grad_scaler`.
    grad_clip_norm
        Clip the gradient norm to this value before each step.
    keep_last
        Keep this many periodic checkpoints (``None`` keeps all).
    save_best
        Keep ``best.pt``, a copy of the checkpoint at the best cycle end.
    restore_best
        Load the best weights into ``model`` before returning.
    metadata
        JSON-serialisable run description stored in every checkpoint.
    on_epoch_end
        Called on every rank with each epoch's history record, before the checkpoint.
    nonfinite
        ``"raise"`` raises ``FloatingPointError`` when an epoch's mean loss is NaN or
        infinite (before anything is checkpointed).
    progress
        Show tqdm bars (see :func:`progress_enabled`); only rank 0 shows them.
    checkpoint_prefix
        File name prefix of periodic checkpoints.

    Returns
    -------
    FitResult

    Raises
    ------
    CheckpointError
        If the checkpoint to resume from is damaged or does not fit the model, or was written
        with another ``seed`` or ``cycle_length``.
    """
    import torch
    from tqdm.auto import tqdm

    for name, value in (
        ("epochs", epochs),
        ("checkpoint_every", checkpoint_every),
        ("cycle_length", cycle_length),
    ):
        if int(value) != value or value < (0 if name == "epochs" else 1):
            raise InvalidArgumentError(
                f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'} "
                f"integer, got {value!r}"
            )
    if scheduler_interval not in ("step", "epoch", "cycle"):
        raise InvalidArgumentError(
            f"scheduler_interval must be 'step', 'epoch' or 'cycle', got {scheduler_interval!r}"
        )
    if nonfinite not in ("raise", "ignore"):
        raise InvalidArgumentError(f"nonfinite must be 'raise' or 'ignore', got {nonfinite!r}")

    rank, world_size = get_rank(), get_world_size()
    is_main = rank == 0
    device = next(iter(unwrap_model(model).parameters())).device
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    tracker = early_stopping if early_stopping is not None else EarlyStopping(patience=None)
    if scaler is None:
        scaler = make_grad_scaler(device, enabled=amp, dtype=amp_dtype)
    run_identity = {"seed": int(seed), "cycle_length": int(cycle_length)}
    extra = {"run": run_identity, "metadata": dict(metadata) if metadata is not None else {}}

    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start_epoch, step = 0, 0
    history: list[dict[str, Any]] = []
    cycle_losses: list[float] = []
    stopped_early = False
    best_epoch: int | None = None
    resumed_from: Path | None = None
    last_checkpoint: Path | None = None
    best_path = directory / BEST_CHECKPOINT_NAME if directory is not None else None

    if directory is not None:
        if is_main:
            directory.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(directory, checkpoint_prefix)
            if not resume:
                old = list_checkpoints(directory, checkpoint_prefix)
                if best_path is not None and best_path.exists():
                    old.append(best_path)
                if old:
                    logger.warning(
                        "resume=False: deleting %d old checkpoint(s) in %s", len(old), directory
                    )
                for path in old:
                    path.unlink()
        latest = latest_checkpoint(directory, checkpoint_prefix) if (resume and is_main) else None
        latest = broadcast_object(latest)
        if latest is not None:
            ckpt = load_checkpoint(latest, model, optimizer, scheduler, scaler, restore_rng=True)
            saved_run = ckpt.extra.get("run", {})
            if saved_run and saved_run != run_identity:
                raise CheckpointError(
                    f"{latest}: checkpoint was written with {saved_run}, this run uses "
                    f"{run_identity}; use another checkpoint_dir or resume=False"
                )
            state = ckpt.trainer_state
            tracker.load_state_dict(state["early_stopping"])
            history = list(state.get("history", []))
            cycle_losses = list(state.get("cycle_losses", []))
            stopped_early = bool(state.get("stopped_early", False))
            best_epoch = state.get("best_epoch")
            start_epoch, step = ckpt.epoch, ckpt.step
            resumed_from = last_checkpoint = latest
            if is_main:
                logger.info("resumed from %s (epoch %d, step %d)", latest, ckpt.epoch, ckpt.step)
                if save_best and best_epoch is not None and best_path is not None:
                    _sync_best_copy(directory, best_path, int(best_epoch), checkpoint_prefix)
            barrier()

    def write_checkpoint(completed: int, improved: bool) -> Path | None:
        if directory is None:
            return None
        rng_states = all_gather_objects(capture_rng_state())
        path = checkpoint_path(directory, completed, checkpoint_prefix)
        if is_main:
            trainer_state = {
                "early_stopping": tracker.state_dict(),
                "history": history,
                "cycle_losses": cycle_losses,
                "stopped_early": stopped_early,
                "best_epoch": best_epoch,
            }
            save_checkpoint(
                path,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                epoch=completed,
                step=step,
                rng_states=rng_states,
                trainer_state=trainer_state,
                extra=extra,
            )
            if improved and save_best and best_path is not None:
                _atomic_copy(path, best_path)
            if keep_last is not None:
                for old in list_checkpoints(directory, checkpoint_prefix)[:-keep_last]:
                    old.unlink(missing_ok=True)
        barrier()
        return path

    show = progress_enabled(progress)
    epoch_bar = tqdm(
        total=epochs,
        initial=min(start_epoch, epochs),
        desc="training",
        unit="epoch",
        disable=not show,
        dynamic_ncols=True,
    )
    epoch = start_epoch
    try:
        while epoch < epochs and not stopped_early:
            model.train()
            loader = _epoch_batches(make_loader, epoch, make_generator(seed, _LOADER_STREAM, epoch))
            ctx = StepContext(
                epoch=epoch,
                step=step,
                batch_index=0,
                device=device,
                generator=make_generator(seed, _STEP_STREAM, epoch, rank),
                rng=numpy_generator(seed, _STEP_STREAM, epoch, rank),
                rank=rank,
                world_size=world_size,
            )
            try:
                total = len(loader)  # type: ignore[arg-type]
            except TypeError:
                total = None
            # float64 sums keep epoch means exact enough; MPS has no float64.
            sum_dtype = torch.float32 if device.type == "mps" else torch.float64
            loss_sum = torch.zeros((), dtype=sum_dtype, device=device)
            log_sums: dict[str, torch.Tensor] = {}
            n_batches = 0
            with tqdm(
                total=total,
                desc=f"epoch {epoch + 1}",
                unit="batch",
                leave=False,
                disable=not show,
                dynamic_ncols=True,
            ) as batch_bar:
                for batch_index, batch in enumerate(loader):
                    ctx.step, ctx.batch_index = step, batch_index
                    batch = move_to_device(batch, device)
                    with autocast_context(device, enabled=amp, dtype=amp_dtype):
                        output = train_step(model, batch, ctx)
                    loss, logs = _split_step_output(
                        output, f"epoch {epoch + 1}, batch {batch_index}"
                    )
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss.float()).backward()
                    if grad_clip_norm is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    if scheduler is not None and scheduler_interval == "step":
                        scheduler.step()
                    loss_sum += loss.detach().to(sum_dtype)
                    for key, value in logs.items():
                        value = (
                            torch.as_tensor(value, device=device).detach().to(sum_dtype).reshape(())
                        )
                        log_sums[key] = log_sums.get(key, 0) + value
                    n_batches += 1
                    batch_bar.update(1)
                    if show and batch_index % 10 == 0:
                        batch_bar.set_postfix(loss=f"{loss.item():.4g}")
            if n_batches == 0:
                raise InvalidArgumentError(f"the loader of epoch {epoch} yielded no batches")

            record: dict[str, Any] = {"epoch": epoch + 1}
            record["loss"] = all_reduce_mean(loss_sum.item() / n_batches, comm_device)
            for key, value in log_sums.items():
                record[key] = all_reduce_mean(float(value) / n_batches, comm_device)
            record["lr"] = _current_lr(optimizer)
            if nonfinite == "raise" and not math.isfinite(record["loss"]):
                raise FloatingPointError(
                    f"mean training loss of epoch {epoch + 1} is {record['loss']} (step {step}); "
                    f"the last good checkpoint is {last_checkpoint}"
                )
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            cycle_losses.append(record["loss"])
            completed = epoch + 1

            cycle_end = completed % cycle_length == 0 or completed == epochs
            improved = False
            if cycle_end:
                if validate is not None:
                    inner = unwrap_model(model)
                    inner.eval()
                    with torch.no_grad():
                        metric = float(validate(inner, epoch))
                    inner.train()
                    metric = all_reduce_mean(metric, comm_device)
                else:
                    metric = float(np.mean(cycle_losses))
                improved = tracker.update(metric)
                if improved:
                    best_epoch = completed
                elif lr_decay_factor is not None:
                    decay_learning_rate(optimizer, lr_decay_factor, min_lr=min_lr)
                if scheduler is not None and scheduler_interval == "cycle":
                    if type(scheduler).__name__ == "ReduceLROnPlateau":
                        scheduler.step(metric)
                    else:
                        scheduler.step()
                record.update(metric=metric, improved=improved)
                cycle_losses = []
                stopped_early = tracker.should_stop
            history.append(record)

            if on_epoch_end is not None:  # before the checkpoint, so its RNG use is replayed
                on_epoch_end(record)
            if cycle_end or completed % checkpoint_every == 0 or completed == epochs:
                last_checkpoint = write_checkpoint(completed, improved) or last_checkpoint
            epoch_bar.update(1)
            epoch_bar.set_postfix(loss=f"{record['loss']:.4g}")
            epoch = completed
    finally:
        epoch_bar.close()

    if restore_best and best_path is not None and best_path.exists():
        load_checkpoint(best_path, model, restore_rng=False)
    return FitResult(
        epochs_completed=epoch,
        steps=step,
        history=history,
        best_metric=tracker.best,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        last_checkpoint=last_checkpoint,
        best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
    )
