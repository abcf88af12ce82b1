"""Multi-process data-parallel training (DDP) launched with ``torchrun``.

Training runs multi-GPU with ``torchrun`` and DDP, and the same script runs as a single plain
process when no launcher is used. ``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and picks NCCL on CUDA, gloo on the CPU.

Typical script::

    ctx = init_distributed()
    model = wrap_ddp(build_model(), ctx.device)
    sampler = distributed_sampler(len(dataset), seed=0)
    ...  # fit(...) checkpoints and shows progress on rank 0 only
    cleanup_distributed()

:func:`distributed_sampler` shards one seeded permutation with a stride, so the global batch at
every step (the union of the ranks' local batches) is the same for any world size; a 2-process
run with local batch ``b`` follows a 1-process run with batch ``2 b`` up to float rounding.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analysislib.errors import InvalidArgumentError
from analysislib.training.device import select_device
from analysislib.training.randomness import derive_seed

if TYPE_CHECKING:
    import torch

__all__ = [
    "DistributedContext",
    "ShardedSampler",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "distributed_sampler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

_SHUFFLE_STREAM = 0x5A4D  # stream id for sampler permutations (any fixed integer)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly single-process) training job.

    Attributes
    ----------
    rank
        Global rank (0 on the main process).
    world_size
        Number of processes.
    local_rank
        Rank on this machine (selects the GPU).
    device
        Device this process trains on.
    backend
        ``"nccl"``, ``"gloo"``, or ``None`` when not distributed.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"environment variable {name}={value!r} is not an integer") from exc


def init_distributed(
    device: str = "auto", *, backend: str | None = None, timeout_seconds: float = 600.0
) -> DistributedContext:
    """Join the process group described by torchrun's environment, or run single-process.

    Parameters
    ----------
    device
        Device preference (see :func:`~analysislib.training.device.select_device`). On CUDA
        each process takes ``cuda:LOCAL_RANK``.
    backend
        Override the backend (default: ``"nccl"`` on CUDA, ``"gloo"`` otherwise).
    timeout_seconds
        Timeout of collective operations.

    Returns
    -------
    DistributedContext

    Raises
    ------
    RuntimeError
        If ``WORLD_SIZE > 1`` but ``MASTER_ADDR`` / ``MASTER_PORT`` are missing (the script was
        not started by torchrun).
    """
    import torch
    import torch.distributed as dist

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = select_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(chosen)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, chosen, None)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; "
            "start the script with `torchrun --nproc_per_node=N script.py`"
        )
    backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=_dt.timedelta(seconds=timeout_seconds),
            device_id=chosen if chosen.type == "cuda" else None,
        )
    return DistributedContext(rank, world_size, local_rank, chosen, backend)


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank of this process (0 outside a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 or outside a process group: the process that writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op outside a process group)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    """Average a number over all processes (returns it unchanged outside a process group).

    Parameters
    ----------
    value
        This process's number.
    device
        Device for the communication tensor (``cuda`` with NCCL, ``cpu`` with gloo).

    Returns
    -------
    float
    """
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to every process and return it.

    Parameters
    ----------
    obj
        The object on ``src`` (ignored elsewhere).
    src
        Sending rank.

    Returns
    -------
    object
    """
    import torch.distributed as dist

    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Collect one picklable object from every process, in rank order.

    Parameters
    ----------
    obj
        This process's object.

    Returns
    -------
    list
        ``[obj]`` outside a process group.
    """
    import torch.distributed as dist

    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(
    model: torch.nn.Module, device: torch.device | str, **ddp_kwargs: Any
) -> torch.nn.Module:
    """Move ``model`` to ``device`` and wrap it in ``DistributedDataParallel`` when distributed.

    Parameters
    ----------
    model
        The plain module (identical initial weights on every rank are not required: DDP
        broadcasts rank 0's parameters when wrapping).
    device
        This process's device (``DistributedContext.device``).
    **ddp_kwargs
        Passed to ``DistributedDataParallel`` (for example ``find_unused_parameters=True``).

    Returns
    -------
    torch.nn.Module
        The wrapped model, or the moved plain model in a single process.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    model = model.to(device)
    if not is_distributed():
        return model
    device_ids = (
        [device.index if device.index is not None else 0] if device.type == "cuda" else None
    )
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def cleanup_distributed() -> None:
    """Leave the process group (no-op if none was joined).

    On gloo the ranks first meet at a barrier (30 s timeout), so that no rank tears down its
    connections while a peer is still using them: without it a rank can abort at exit
    ("terminate called without an active exception"). A peer that died already is not waited
    for beyond the timeout.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
        try:  # not barrier(): it would wait forever for a dead peer
            dist.monitored_barrier(timeout=_dt.timedelta(seconds=30))
        except RuntimeError as err:  # a peer is gone; leave anyway
            logger.warning("leaving the process group without a barrier: %s", err)
    dist.destroy_process_group()


class ShardedSampler:
    """Seeded per-epoch permutation of ``range(n)``, sharded over processes with a stride.

    Rank ``r`` of ``R`` yields positions ``r, r + R, r + 2R, ...`` of the epoch's permutation
    (padded by wrapping around so every rank gets the same count, or cut with ``drop_last``).
    The permutation depends only on ``(seed, epoch)``, never on earlier draws, so a resumed run
    sees the same order. Call :meth:`set_epoch` before each epoch (``fit`` does it for you).

    Parameters
    ----------
    n
        Dataset length.
    num_replicas, rank
        World size and this process's rank (default: the current process group's).
    shuffle
        Permute each epoch; otherwise the order is ``0 .. n-1``.
    seed
        Base seed of the permutation.
    drop_last
        Drop the tail that does not divide evenly instead of padding.
    """

    def __init__(
        self,
        n: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.n = int(n)
        self.num_replicas = get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = get_rank() if rank is None else int(rank)
        if self.n < 1:
            raise InvalidArgumentError(f"cannot sample from an empty dataset (n={n})")
        if not 0 <= self.rank < self.num_replicas:
            raise InvalidArgumentError(f"rank {self.rank} is outside 0..{self.num_replicas - 1}")
        if drop_last and self.n < self.num_replicas:
            raise InvalidArgumentError(
                f"drop_last with {self.n} items leaves nothing for {self.num_replicas} ranks"
            )
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last:
            self.num_samples = self.n // self.num_replicas
        else:
            self.num_samples = math.ceil(self.n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def global_order(self) -> list[int]:
        """The epoch's full (padded or cut) order before sharding."""
        import torch

        if self.shuffle:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, _SHUFFLE_STREAM, self.epoch)
            )
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        if self.total_size > self.n:  # pad by wrapping around
            repeats = math.ceil(self.total_size / self.n)
            order = (order * repeats)[: self.total_size]
        return order[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def distributed_sampler(
    dataset: Sized | int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> ShardedSampler:
    """A :class:`ShardedSampler` for ``dataset`` (or a length), usable as a DataLoader ``sampler``.

    Parameters
    ----------
    dataset
        A sized dataset or its length.
    shuffle, seed, drop_last
        See :class:`ShardedSampler`.
    num_replicas, rank
        Default to the current process group (1 and 0 outside DDP).

    Returns
    -------
    ShardedSampler
    """
    n = dataset if isinstance(dataset, int) else len(dataset)
    return ShardedSampler(
        n, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
