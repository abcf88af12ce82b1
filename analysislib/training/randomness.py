"""Seeding, per-epoch random streams and RNG state capture for reproducible, resumable training.

Two rules make an interrupted run end with the same weights as an uninterrupted one (every
trainer relies on them through :func:`analysislib.training.fit`):

1. randomness that defines the data order or masks comes from generators derived from
   ``(seed, stream, epoch, ...)`` (:func:`derive_seed`), so it does not depend on history;
2. randomness drawn from the global generators (dropout, weight init) is captured with
   :func:`capture_rng_state` into each checkpoint and put back by :func:`restore_rng_state`.

RNG states are converted to tensors and plain Python values so checkpoints can be read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from analysislib.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

__all__ = [
    "capture_rng_state",
    "derive_seed",
    "make_generator",
    "numpy_generator",
    "restore_rng_state",
    "seed_everything",
]

_SEED_BITS = (
    63  # torch.Generator.manual_seed accepts any non-negative 64-bit value; stay signed-safe
)


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Parameters
    ----------
    seed
        Non-negative integer seed.
    deterministic
        Also ask torch for deterministic kernels (``torch.use_deterministic_algorithms`` with
        ``warn_only=True``, cuDNN benchmark off). Needed for bit-exact GPU runs; CPU runs are
        deterministic already.

    Returns
    -------
    int
        The seed, for logging.
    """
    import torch

    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global generator, on purpose
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("PYTHONHASHSEED", str(seed % 2**32))  # for child processes
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def derive_seed(seed: int, *keys: int) -> int:
    """A seed for the stream named by integer ``keys`` under ``seed`` (for example ``(stream, epoch)``).

    Uses NumPy's ``SeedSequence`` mixing, so nearby keys give unrelated seeds and the result
    does not depend on anything drawn before.

    Parameters
    ----------
    seed
        Base seed of the run.
    *keys
        Non-negative integers naming the stream (purpose, epoch, rank, ...).

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.
    """
    words = [_check_seed(seed), *(_check_seed(key) for key in keys)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> (64 - _SEED_BITS)


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, *keys)``.

    Parameters
    ----------
    seed
        Base seed of the run.
    *keys
        Integers naming the stream, such as ``(stream_id, epoch)``.
    device
        Device of the generator (``"cpu"`` for DataLoader shuffling).

    Returns
    -------
    torch.Generator
    """
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


def numpy_generator(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy ``Generator`` (PCG64) for the stream ``(seed, *keys)``.

    Parameters
    ----------
    seed
        Base seed of the run.
    *keys
        Integers naming the stream.

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng(derive_seed(seed, *keys))


def capture_rng_state() -> dict[str, Any]:
    """Snapshot the global Python, NumPy, torch CPU and CUDA generators.

    Returns
    -------
    dict
        ``{"python": list, "numpy": dict, "torch": ByteTensor, "cuda": list[ByteTensor]}``, made
        only of tensors and plain Python values (safe for ``torch.load(weights_only=True)``).
    """
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # noqa: NPY002
    cuda_states = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
    return {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda_states,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back generator states captured by :func:`capture_rng_state`.

    CUDA states are restored only when the number of visible CUDA devices matches the number
    saved; a checkpoint written on a GPU machine can still be resumed on a CPU-only one.

    Parameters
    ----------
    state
        The dictionary returned by :func:`capture_rng_state` (possibly after a checkpoint round
        trip).
    """
    import torch

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    saved = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            saved["kind"],
            saved["keys"].cpu().numpy().astype(np.uint32),
            int(saved["pos"]),
            int(saved["has_gauss"]),
            float(saved["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states])
