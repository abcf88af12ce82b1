r"""Atomic, verifiable training checkpoints: save, inspect, find the latest, and resume.

Used by every trainer through :func:`analysislib.training.fit`. Nothing half-written is left
behind, and a bad file gives an error that names it.

File layout (format version 1)::

    ANALYSISLIB-CHECKPOINT\n                 magic line
    {"format_version": 1, "payload_bytes": N,  one line of JSON: sizes, sha256, epoch, step,
     "payload_sha256": "...", ...}\n           creation time, torch version and user metadata
    <N bytes written by torch.save>             model / optimizer / scheduler / scaler / RNG state

The header makes truncation and bit rot detectable before torch ever parses the payload, and
lets :func:`read_checkpoint_header` show what a file holds without loading torch tensors. The
payload is read with ``weights_only=True``, so checkpoints cannot run code when loaded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysislib.errors import CheckpointError
from analysislib.io.atomic import atomic_output
from analysislib.training.randomness import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "Checkpoint",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_checkpoint_header",
    "save_checkpoint",
    "unwrap_model",
]

CHECKPOINT_FORMAT_VERSION = 1
_MAGIC = b"ANALYSISLIB-CHECKPOINT\n"
_MAX_HEADER_BYTES = 1 << 20
_EPOCH_FILE = re.compile(r"^(?P<prefix>.+)_(?P<epoch>\d{6,})\.pt$")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` found in a checkpoint file.

    Attributes
    ----------
    path
        The file that was read.
    epoch
        Number of completed epochs when it was written.
    step
        Number of optimizer steps taken when it was written.
    extra
        The JSON metadata passed to :func:`save_checkpoint`.
    trainer_state
        Plain-Python state of the training loop (early stopping, history, ...).
    created
        ISO-8601 UTC time of writing.
    format_version
        File format version.
    world_size
        Number of processes whose RNG states were saved.
    """

    path: Path
    epoch: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    trainer_state: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = CHECKPOINT_FORMAT_VERSION
    world_size: int = 1


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside ``DistributedDataParallel``, ``DataParallel`` or ``torch.compile``.

    Parameters
    ----------
    model
        A module, possibly wrapped.

    Returns
    -------
    torch.nn.Module
        The innermost module, whose ``state_dict`` keys carry no ``module.`` prefix.
    """
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = model.module
        else:
            return model


def checkpoint_path(directory: str | os.PathLike[str], epoch: int, prefix: str = "epoch") -> Path:
    """The file name used for the checkpoint after ``epoch`` completed epochs.

    Parameters
    ----------
    directory
        Checkpoint directory.
    epoch
        Number of completed epochs.
    prefix
        File name prefix.

    Returns
    -------
    Path
        ``directory / f"{prefix}_{epoch:06d}.pt"``.
    """
    return Path(directory) / f"{prefix}_{int(epoch):06d}.pt"


def list_checkpoints(directory: str | os.PathLike[str], prefix: str = "epoch") -> list[Path]:
    """Periodic checkpoints in ``directory``, oldest epoch first (temporary files are skipped).

    Parameters
    ----------
    directory
        Checkpoint directory (may not exist yet).
    prefix
        File name prefix given to :func:`checkpoint_path`.

    Returns
    -------
    list of Path
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _EPOCH_FILE.match(entry.name)
        if match and match.group("prefix") == prefix and entry.is_file():
            found.append((int(match.group("epoch")), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike[str], prefix: str = "epoch") -> Path | None:
    """The periodic checkpoint with the highest epoch in ``directory``, or ``None``.

    Parameters
    ----------
    directory
        Checkpoint directory.
    prefix
        File name prefix given to :func:`checkpoint_path`.

    Returns
    -------
    Path or None
    """
    found = list_checkpoints(directory, prefix)
    return found[-1] if found else None


def _json_metadata(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    try:
        return json.loads(json.dumps(dict(extra), allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"checkpoint metadata must be JSON-serialisable (str, int, float, bool, None, "
            f"list, dict): {exc}"
        ) from exc


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    step: int,
    rng_states: list[dict[str, Any]] | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: the file appears complete or not at all.

    Parameters
    ----------
    path
        Destination file (its directory is created).
    model
        The model; DDP / compiled wrappers are unwrapped so the file loads into a plain module.
    optimizer, scheduler, scaler
        Optional objects whose ``state_dict()`` is stored.
    epoch
        Number of completed epochs.
    step
        Number of optimizer steps taken.
    rng_states
        One RNG state per process (rank order) as from
        :func:`~analysislib.training.randomness.capture_rng_state`; default: this process's.
    trainer_state
        Plain-Python state of the training loop (tensors, numbers, strings, lists, dicts).
    extra
        JSON-serialisable metadata (configuration, data checksums, code version); stored in
        the header so :func:`read_checkpoint_header` can show it cheaply.

    Returns
    -------
    Path
        The written file.
    """
    import torch

    path = Path(path)
    payload = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": list(rng_states) if rng_states is not None else [capture_rng_state()],
        "trainer_state": dict(trainer_state) if trainer_state is not None else {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "payload_bytes": len(body),
        "payload_sha256": hashlib.sha256(body).hexdigest(),
        "epoch": int(epoch),
        "step": int(step),
        "world_size": len(payload["rng"]),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "model_class": type(unwrap_model(model)).__qualname__,
        "extra": _json_metadata(extra),
    }
    header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(_MAGIC)
        handle.write(header_line)
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _read_header(handle: Any, path: Path) -> dict[str, Any]:
    magic = handle.read(len(_MAGIC))
    if magic != _MAGIC:
        if len(magic) < len(_MAGIC) and _MAGIC.startswith(magic):
            raise CheckpointError(f"{path}: checkpoint is truncated (ends inside the header)")
        raise CheckpointError(f"{path}: not an analysislib checkpoint (missing header line)")
    line = handle.readline(_MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise CheckpointError(
            f"{path}: checkpoint is truncated or corrupt (header line incomplete)"
        )
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint header is corrupt: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: checkpoint header is corrupt (not a JSON object)")
    required = ("format_version", "payload_bytes", "payload_sha256", "epoch", "step")
    missing = [key for key in required if key not in header]
    if missing:
        raise CheckpointError(f"{path}: checkpoint header lacks {missing}")
    if header["format_version"] > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header['format_version']} is newer than this "
            f"analysislib understands ({CHECKPOINT_FORMAT_VERSION}); upgrade analysislib"
        )
    return header


def read_checkpoint_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a checkpoint (epoch, step, metadata, sizes) without loading tensors.

    Parameters
    ----------
    path
        Checkpoint file.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        If the file is missing, is not a checkpoint, or its header is damaged.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read_header(handle, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc


def _read_payload(path: Path, map_location: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    try:
        with open(path, "rb") as handle:
            header = _read_header(handle, path)
            body = handle.read(header["payload_bytes"] + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    expected = header["payload_bytes"]
    if len(body) < expected:
        raise CheckpointError(
            f"{path}: checkpoint is truncated: payload has {len(body)} of {expected} bytes"
        )
    if len(body) > expected:
        raise CheckpointError(f"{path}: checkpoint is corrupt: data after the declared payload")
    digest = hashlib.sha256(body).hexdigest()
    if digest != header["payload_sha256"]:
        raise CheckpointError(
            f"{path}: checkpoint is corrupt: payload sha256 {digest} differs from the "
            f"recorded {header['payload_sha256']}"
        )
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: checkpoint payload cannot be read by torch: {exc}") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path}: checkpoint payload has no model state")
    return header, payload


def _load_into(path: Path, what: str, target: Any, state: Any, strict: bool = True) -> None:
    if state is None:
        raise CheckpointError(f"{path}: checkpoint holds no {what} state to restore")
    try:
        if what == "model":
            target.load_state_dict(state, strict=strict)
        else:
            target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: {what} state does not match the {type(target).__name__} being restored: {exc}"
        ) from exc


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    restore_rng: bool = True,
    rank: int | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> Checkpoint:
    """Verify a checkpoint and restore it into the given objects.

    Parameters
    ----------
    path
        Checkpoint file written by :func:`save_checkpoint`.
    model, optimizer, scheduler, scaler
        Objects to restore (each optional; wrappers around ``model`` are unwrapped).
        Optimizer state is moved onto the devices of the model's parameters by torch.
    restore_rng
        Put back the global Python / NumPy / torch / CUDA RNG states.
    rank
        Whose RNG state to restore when several processes saved theirs; default: the current
        distributed rank (0 outside DDP). If the saved world size differs, rank 0's state is
        used.
    map_location
        Passed to ``torch.load``; the default ``"cpu"`` keeps RNG tensors on the CPU.
    strict
        Require the model's parameter names and shapes to match exactly.

    Returns
    -------
    Checkpoint
        Epoch, step, metadata and trainer state of the file.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupt, or does not match the objects given. The
        message names the file.
    """
    path = Path(path)
    header, payload = _read_payload(path, map_location)
    if model is not None:
        _load_into(path, "model", unwrap_model(model), payload["model"], strict)
    if optimizer is not None:
        _load_into(path, "optimizer", optimizer, payload.get("optimizer"))
    if scheduler is not None:
        _load_into(path, "scheduler", scheduler, payload.get("scheduler"))
    if scaler is not None:
        _load_into(path, "scaler", scaler, payload.get("scaler"))
    rng_states = payload.get("rng") or []
    if restore_rng and rng_states:
        if rank is None:
            from analysislib.training.ddp import get_rank

            rank = get_rank()
        index = rank if 0 <= rank < len(rng_states) else 0
        try:
            restore_rng_state(rng_states[index])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: saved RNG state cannot be restored: {exc}") from exc
    return Checkpoint(
        path=path,
        epoch=int(header["epoch"]),
        step=int(header["step"]),
        extra=header.get("extra", {}),
        trainer_state=payload.get("trainer_state") or {},
        created=header.get("created", ""),
        format_version=int(header["format_version"]),
        world_size=len(rng_states),
    )
