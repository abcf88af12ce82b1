"""Torch training helpers shared by the autoencoder, U-Net, eDICE and DeepWAS trainers.

Holds device choice and mixed precision (:mod:`.device`), seeding and RNG capture
(:mod:`.randomness`), atomic verified checkpoints (:mod:`.checkpoint`), masking curricula,
early stopping and learning-rate decay (:mod:`.schedules`), the training loop :func:`fit` with
exact resume (:mod:`.loop`), and DDP through ``torchrun`` (:mod:`.ddp`). The same code trains
on the CPU or on several GPUs; only the device and the launcher change. The schedules follow the
papers and the authors' code (Dias et al. 2022, ``TorkamaniLab/Imputation_Autoencoder``; BiU-Net;
eDICE, ``alex-hh/eDICE``).

Names are loaded on first access, so ``from analysislib.training import EarlyStopping`` does not
import torch; the torch-based helpers load it when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "PROGRESS_ENV",
    "Checkpoint",
    "CurriculumSchedule",
    "DeviceUnavailableError",
    "DistributedContext",
    "EarlyStopping",
    "FitResult",
    "ShardedSampler",
    "StepContext",
    "all_but_k_rate",
    "all_gather_objects",
    "all_reduce_mean",
    "amp_dtype_for",
    "autocast_context",
    "barrier",
    "broadcast_object",
    "capture_rng_state",
    "checkpoint_path",
    "cleanup_distributed",
    "decay_learning_rate",
    "derive_seed",
    "distributed_sampler",
    "fit",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "latest_checkpoint",
    "linear_curriculum",
    "list_checkpoints",
    "load_checkpoint",
    "make_generator",
    "make_grad_scaler",
    "move_to_device",
    "numpy_generator",
    "progress_enabled",
    "read_checkpoint_header",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "step_curriculum",
    "unwrap_model",
    "wrap_ddp",
]

_SUBMODULES = ("schedules", "device", "randomness", "checkpoint", "ddp", "loop")


def _home_of(name: str) -> str:
    for submodule in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{submodule}")
        if name in module.__all__:
            return submodule
    raise AttributeError(name)


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_home_of(name)}"), name)
    globals()[name] = value  # cache for the next access
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
