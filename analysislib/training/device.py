"""Device choice and mixed precision for every torch trainer in analysislib.

Code is device-agnostic: it picks CUDA, then Apple MPS, then the CPU, and turns on mixed
precision only where it pays off (fp16 with a gradient scaler on CUDA; bf16 on CPU or MPS only
when asked for explicitly).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from analysislib.errors import DeviceUnavailableError, InvalidArgumentError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DeviceUnavailableError",
    "amp_dtype_for",
    "autocast_context",
    "make_grad_scaler",
    "move_to_device",
    "select_device",
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """Return the torch device to train on.

    Parameters
    ----------
    preference
        ``"auto"`` picks ``cuda`` if available, then ``mps``, then ``cpu``. ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` and ``"mps"`` ask for that device and fail if it is missing.

    Returns
    -------
    torch.device

    Raises
    ------
    DeviceUnavailableError
        If an explicitly requested device does not exist on this machine.
    ValueError
        If ``preference`` is not one of the forms above.
    """
    import torch

    text = str(preference).strip().lower()
    match = _DEVICE_PATTERN.match(text)
    if match is None:
        raise InvalidArgumentError(
            f"unknown device {preference!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if index is not None:
            raise InvalidArgumentError(f"unknown device {preference!r}; 'auto' takes no index")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "device 'mps' was requested but Apple Metal (MPS) is not available here; "
                "use 'auto' or 'cpu'"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {text!r} was requested but CUDA is not available "
            f"(torch {torch.__version__} built with CUDA {torch.version.cuda}); use 'auto' or 'cpu'"
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise DeviceUnavailableError(
            f"device {text!r} was requested but only {count} CUDA device(s) exist "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device(text)


def amp_dtype_for(
    device: torch.device | str, dtype: torch.dtype | None = None
) -> torch.dtype | None:
    """The autocast dtype used on ``device``, or ``None`` where mixed precision stays off.

    Parameters
    ----------
    device
        Target device.
    dtype
        Explicit choice (``torch.float16`` or ``torch.bfloat16``); overrides the default.

    Returns
    -------
    torch.dtype or None
        ``torch.float16`` on CUDA by default; ``None`` on CPU and MPS unless ``dtype`` is given
        (bf16 autocast on CPU is slower than fp32 on most CPUs without native bf16 support).
    """
    import torch

    device = torch.device(device)
    if dtype is not None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise InvalidArgumentError(f"autocast dtype must be float16 or bfloat16, got {dtype}")
        if device.type == "cpu" and dtype == torch.float16:
            raise InvalidArgumentError("float16 autocast is not supported on the CPU; use torch.bfloat16")
        return dtype
    return torch.float16 if device.type == "cuda" else None


def autocast_context(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None
) -> contextlib.AbstractContextManager[Any]:
    """Context manager running the forward pass in mixed precision where supported.

    Parameters
    ----------
    device
        Device the model runs on.
    enabled
        ``False`` gives a no-op context (full fp32).
    dtype
        Autocast dtype; see :func:`amp_dtype_for` for the defaults.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast`` or ``contextlib.nullcontext``.
    """
    import torch

    device = torch.device(device)
    amp_dtype = amp_dtype_for(device, dtype) if enabled else None
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def make_grad_scaler(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None
) -> torch.amp.GradScaler:
    """A gradient scaler that is active only for fp16 autocast on CUDA.

    Elsewhere the returned scaler is disabled: ``scale(loss)`` returns ``loss`` unchanged,
    ``step(optimizer)`` calls ``optimizer.step()`` and ``update()`` does nothing, so the training
    loop can use one code path on every device.

    Parameters
    ----------
    device
        Device the model runs on.
    enabled
        Whether mixed precision is requested at all.
    dtype
        Autocast dtype; bf16 needs no scaling.

    Returns
    -------
    torch.amp.GradScaler
    """
    import torch

    device = torch.device(device)
    active = enabled and device.type == "cuda" and amp_dtype_for(device, dtype) == torch.float16
    return torch.amp.GradScaler("cuda" if active else "cpu", enabled=active)


def move_to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in a (nested) batch of tuples, lists and dicts to ``device``.

    Parameters
    ----------
    batch
        A tensor, or a tuple, list or dict holding tensors and other values.
    device
        Destination device.

    Returns
    -------
    object
        The same structure with tensors on ``device`` (other values are passed through).
    """
    import torch

    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(value, device) for value in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch
