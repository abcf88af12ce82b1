"""The autoencoder's forward pass in NumPy, over Linear layers from a state dict or ``weights.npy``.

:func:`numpy_forward` computes what
:class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder` computes without importing
torch, so ``analysislib impute`` runs a bundle's packed weights in a fraction of torch's import
time (Dias et al. 2022, "Imputation data format": one model per tile run on the target
genotypes). :func:`linear_layers` takes the layers out of a state dict in forward order, the
order in which :mod:`~analysislib.genotype.dae.bundle` packs them into ``weights.npy``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dae.hyperparameters import ACTIVATIONS

__all__ = ["linear_layers", "numpy_forward"]


def linear_layers(state: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Linear layers of an autoencoder's state dict, in forward order.

    The state dict is that of a
    :class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder`.

    Parameters
    ----------
    state
        ``encoder.<i>.weight`` / ``encoder.<i>.bias`` / ``decoder.<i>.weight`` /
        ``decoder.<i>.bias`` arrays or tensors (CPU), as ``model.state_dict()`` returns.

    Returns
    -------
    list of (weight, bias)
        NumPy arrays, weight ``(out, in)`` and bias ``(out,)``; encoder layers first, then
        decoder layers, each by index.

    Raises
    ------
    ValueError
        Other keys, a weight without its bias, or widths that do not chain from ``2 V`` back
        to ``2 V``.
    """
    pattern = re.compile(r"^(encoder|decoder)\.(\d+)\.(weight|bias)$")
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = pattern.match(key)
        if match is None:
            raise InvalidArgumentError(f"state dict key {key!r} is not a Linear layer of the autoencoder")
        part = 0 if match.group(1) == "encoder" else 1
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        found.setdefault((part, int(match.group(2))), {})[match.group(3)] = array
    layers = []
    for key in sorted(found):
        pair = found[key]
        if set(pair) != {"weight", "bias"}:
            raise InvalidArgumentError(f"layer {key} lacks its weight or bias")
        weight, bias = pair["weight"], pair["bias"]
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise InvalidArgumentError(f"layer {key}: weight {weight.shape} and bias {bias.shape} do not fit")
        if layers and layers[-1][0].shape[0] != weight.shape[1]:
            raise InvalidArgumentError(f"layer {key}: {weight.shape[1]} inputs after {layers[-1][0].shape[0]} outputs")
        layers.append((weight, bias))
    if len(layers) < 2 or layers[0][0].shape[1] != layers[-1][0].shape[0]:
        raise InvalidArgumentError("the layers do not map 2 V nodes back to 2 V nodes")
    return layers


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    """Logistic function in place, without overflow: ``exp(-|x|)`` is at most 1."""
    e = np.exp(-np.abs(x))
    positive = x >= 0
    np.divide(np.where(positive, 1, e), 1 + e, out=x)
    return x


def _numpy_activation_(name: str, x: np.ndarray) -> np.ndarray:
    """Apply a hidden activation of :data:`ACTIVATIONS` in place (torch's definitions)."""
    if name == "tanh":
        return np.tanh(x, out=x)
    if name == "relu":
        return np.maximum(x, 0, out=x)
    if name == "leakyrelu":  # torch.nn.LeakyReLU default slope 0.01
        return np.multiply(x, np.where(x < 0, np.float32(0.01), np.float32(1)), out=x)
    if name == "sigmoid":
        return _sigmoid_(x)
    if name == "softplus":  # torch.nn.Softplus(beta=1, threshold=20): linear above 20
        with np.errstate(over="ignore"):
            soft = np.log1p(np.exp(np.minimum(x, 20)))
        np.copyto(x, np.where(x > 20, x, soft))
        return x
    raise InvalidArgumentError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def numpy_forward(
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    activation: str,
    presence: Any,
    batch_size: int = 4096,
    *,
    inputs: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
) -> np.ndarray:
    """The autoencoder's forward pass in NumPy: sigmoid outputs for ``(samples, 2 V)`` inputs.

    Computes what :class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder` computes (each
    Linear layer but the last followed by ``activation``, the last by a sigmoid) in float32 without
    importing torch, so inference from a bundle's packed weights (:mod:`analysislib.genotype.dae`)
    starts in a fraction of torch's import time. Results agree with torch to float32 rounding (the
    matrix products run through NumPy's BLAS instead of torch's).

    Parameters
    ----------
    layers
        ``(weight (out, in), bias (out,))`` per Linear layer in forward order
        (:func:`linear_layers`).
    activation
        Hidden activation, one of :data:`ACTIVATIONS`.
    presence
        Allele-presence inputs ``(samples, 2 V)``; masked/untyped variants at ``[0, 0]``.
    batch_size
        Samples per pass (bounds the temporaries).
    inputs
        If given, ``presence`` holds only these input columns (sorted indices into the 2 V
        inputs) and every other input is 0 for every sample: the first layer multiplies only
        their weights. At untyped variants (inputs ``[0, 0]`` for everyone) this skips work
        whose result is exactly 0; only the rounding of the sums can differ.
    outputs
        If given, only these output columns (indices into the 2 V outputs) are computed and
        returned, in this order.

    Returns
    -------
    numpy.ndarray
        float32 ``(samples, 2 V)``, or ``(samples, len(outputs))``.
    """
    if activation not in ACTIVATIONS:
        raise InvalidArgumentError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    x = np.asarray(presence, dtype=np.float32)
    width = layers[0][0].shape[1]
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=np.intp)
        if inputs.ndim != 1 or (len(inputs) and (inputs.min() < 0 or inputs.max() >= width)):
            raise InvalidArgumentError(f"inputs must be indices into the model's {width} inputs")
        width = len(inputs)
    if x.ndim != 2 or x.shape[1] != width:
        raise InvalidArgumentError(f"model expects (samples, {width}) inputs, got shape {x.shape}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    layers = list(layers)
    if inputs is not None:  # the columns of the inputs that are not all 0
        first_weight, first_bias = layers[0]
        layers[0] = (first_weight[:, inputs], first_bias)
    if outputs is not None:  # the rows of the outputs asked for
        outputs = np.asarray(outputs, dtype=np.intp)
        last_weight, last_bias = layers[-1]
        layers[-1] = (last_weight[outputs], last_bias[outputs])
    out = np.empty((x.shape[0], layers[-1][0].shape[0]), dtype=np.float32)
    last = len(layers) - 1
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size]
        for k, (weight, bias) in enumerate(layers):
            h = h @ weight.T
            h += bias
            if k < last:
                _numpy_activation_(activation, h)
        out[start:start + batch_size] = _sigmoid_(h)
    return out
