"""Sparse denoising autoencoder of Dias et al. 2022: model, losses, masking and one-tile training.

Follows Dias et al. 2022 (eLife 11:e75600), Methods "Genotype encoding", "Data augmentation",
"Loss function" (Equations 1-4) and "Hyperparameter tuning", and the authors' PyTorch code
(``autoencoder_tuning_pipeline/DSAE_TORCH_ARG.py`` in ``TorkamaniLab/Imputation_Autoencoder``).
Genotypes are encoded as allele presence (:mod:`analysislib.genotype.encoding`); one fully
connected, symmetric autoencoder with sigmoid outputs is trained per genome tile
(:mod:`analysislib.tiling`) by :func:`train_tile` through the shared loop
:func:`analysislib.training.fit` (cycles, early stopping, learning-rate decay, exact resume, AMP,
DDP).

Where the paper and the authors' code differ, this module does the following:

* **L1 term** (Eq. 3): the paper writes ``λ1 ||W||1``; the code sums ``mean|W|`` over the weight
  matrices (biases excluded) and adds it *without* multiplying by ``λ1`` whenever ``λ1 > 0``.
  We use the code's per-matrix mean (the λ1 values it selected, 0.1 in 198 of 256 tiles, only
  make sense with it) multiplied by ``λ1`` as Eq. 3 states.
* **L2 term**: the paper writes ``λ2 ||W||2`` in the loss; the code, and this module, use the
  optimizer's ``weight_decay = λ2`` (coupled L2, biases included).
* **Sparsity term** (Eq. 4): the paper averages each hidden node's activation over a batch; the
  code averages ``sigmoid(encoder(x_clean))`` over the hidden units of each sample, where the
  encoder output already carries the layer activation, and adds the KL divergence *without* ``β``.
  We follow the code's ``ρ̂`` and multiply by ``β`` (Eq. 3). ``ρ̂`` is clipped to
  ``[1e-6, 1 - 1e-6]`` so an all-saturated ReLU bottleneck cannot give an infinite loss.
* **Focal loss** (Eq. 2): ``α_t = y α + (1 - y)(1 - α)`` with ``α`` the per-node allele-presence
  frequency of the training set, "the truth class frequency" in both paper and code (so the
  common class is weighted up; the authors' later phased pipeline divides by ``α_t`` instead).
  Cross entropy is computed from logits (numerically stable and safe under autocast) instead of
  ``BCELoss`` on sigmoid outputs; the two agree except where a sigmoid saturates in float32.
* **Architecture**: Table 1 lists 1 hidden layer and ``softplus``; the code accepts only even
  layer counts and has no softplus. Even counts ``>= 2`` are accepted and ``softplus`` is offered.
  Layer widths are ``int(previous * size_ratio)`` as in the code, floored at 1 unit. Parameter
  names match the code's ``Autoencoder`` (``encoder.0.weight`` ... ``decoder.N.bias``), so its
  state dicts load.
* **Masking curriculum**: one rate per epoch from ``linspace(min_mask, (V - 5) / V, n)`` rounded
  to 4 decimals, cycling; the code fixes ``n = 500`` next to 500-epoch checkpoints, here ``n`` is
  ``cycle_epochs``. ``max_mask`` (default 1, the code's curriculum) caps the end rate: on
  1000 Genomes chr22 array sites with one SNP in three typed, training at 80-99 % masking while
  inference hides 67 % cost r² (issue 12; 200-variant tiles: 0.634 / 0.450 aggregate / mean
  per-variant r² at 50 % masking against 0.592 / 0.401 at the code's 80 % start), so the
  ``quick`` and ``standard`` presets of :mod:`analysislib.genotype.dae` train from 50 % to
  90 %. Tiles too small for the curriculum (``(V - 5) / V < min_mask``, i.e. V < 25)
  mask at the all-but-5 rate throughout; tiles of at most 5 variants mask one variant.
* **Batches**: the code runs ``int(n / batch_size - 0.5)`` batches per epoch, dropping the last
  partial batch (and training on nothing when ``n < 1.5 batch_size``); every sample is used here.
* **Resume**: the code's resume restarts the masking curriculum and the optimizer state; here a
  resumed run is bit-identical to an uninterrupted one.
* **Offspring**: the paper merged 30,000 sim1000G offspring with HRC once before fine-tuning;
  ``offspring`` children are formed once per training run by
  :func:`analysislib.simulate.genotypes.form_offspring` (phased parents needed) and appended to
  the training samples before de-duplication.

Early stopping (stop at the first 500-epoch cycle whose mean loss does not improve, keep the best
cycle's weights) and learning-rate decay (``lr × decay_rate`` at every cycle end, 0 = off) are
as in the code.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib.errors import CheckpointError
from analysislib.genotype.encoding import (
    allele_presence,
    dosage_from_probabilities,
    genotype_probabilities_from_presence,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from analysislib.training.schedules import CurriculumSchedule

__all__ = [  # noqa: F822 - SparseDenoisingAutoencoder comes from the module __getattr__
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "DAEHyperparameters",
    "SparseDenoisingAutoencoder",
    "TrainedTile",
    "focal_alpha",
    "impute_masked",
    "kl_sparsity",
    "l1_penalty",
    "layer_sizes",
    "linear_layers",
    "mask_count",
    "mask_presence",
    "mask_rate_schedule",
    "numpy_forward",
    "predict_presence",
    "reconstruction_loss",
    "train_tile",
    "validation_r2",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leakyrelu", "softplus")
"""Hidden-layer activations (Table 1 plus the code's ``leakyrelu``)."""
OPTIMIZERS = ("adam", "rmsprop", "sgd", "adagrad", "adadelta")
"""Optimizers of the authors' code (Table 1 lists the first three)."""
LOSSES = ("CE", "FL")
"""Reconstruction losses: binary cross entropy or focal loss (Eq. 2)."""

MODEL_NAME = "dias2022_sparse_denoising_autoencoder"
_RHO_HAT_EPS = 1e-6
_SMALL_BATCH_ELEMENTS = 2**17  # below this many input values per batch, one CPU thread is faster
# Stream ids for derive_seed; fit uses 1 (loader) and 2 (per-batch masks).
_INIT_STREAM = 11
_OFFSPRING_STREAM = 12
_VALIDATION_STREAM = 13


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class DAEHyperparameters:
    """Hyperparameters of one tile's autoencoder (defaults: the authors' ``DSAE_TORCH_ARG.py``).

    Attributes
    ----------
    n_layers
        Number of Linear layers, even (half encoder, half decoder).
    size_ratio
        Width of each encoder layer relative to the previous one (decoder mirrors).
    activation
        Hidden activation, one of :data:`ACTIVATIONS`.
    loss
        ``"CE"`` binary cross entropy or ``"FL"`` focal loss.
    gamma
        Focal-loss modulating exponent γ (Eq. 2; 0 = cross entropy weighted by α_t).
    l1
        λ1 of the L1 term (Σ over weight matrices of mean |W|).
    l2
        λ2, the optimizer's weight decay.
    beta, rho
        Weight β and target activation ρ of the KL sparsity term (Eq. 4); β = 0 switches it off.
    learning_rate
        Initial learning rate.
    optimizer
        One of :data:`OPTIMIZERS`.
    batch_size
        Samples per optimizer step.
    decay_rate
        Learning rate × ``decay_rate`` at the end of every cycle; 0 disables decay.
    cycle_epochs
        Epochs per masking/training cycle (checkpoint, early-stopping check, curriculum period).
    max_epochs
        Maximum number of epochs.
    min_mask
        First masking rate of the curriculum.
    max_mask_keep
        The curriculum ends with all but this many variants masked per sample.
    max_mask
        Upper bound of the curriculum's masking rate (1 = the authors' all-but-``max_mask_keep``
        end). Lower values keep training close to the share of untyped sites that inference
        sees (for example 2/3 when one SNP in three is typed).
    offspring
        Number of offspring formed once from the (phased) training panel and added to it before
        de-duplication (0 = no augmentation).
    seed
        Seed of initialisation, shuffling, masking and offspring formation.
    """

    n_layers: int = 4
    size_ratio: float = 0.5
    activation: str = "tanh"
    loss: str = "CE"
    gamma: float = 0.0
    l1: float = 1e-9
    l2: float = 1e-5
    beta: float = 0.0
    rho: float = 0.05
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 256
    decay_rate: float = 0.0
    cycle_epochs: int = 500
    max_epochs: int = 20000
    min_mask: float = 0.80
    max_mask_keep: int = 5
    max_mask: float = 1.0
    offspring: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"DAEHyperparameters.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("n_layers", "batch_size", "cycle_epochs", "max_epochs", "max_mask_keep",
                     "offspring", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise bad(name, "an integer")
            object.__setattr__(self, name, int(value))
        for spec in fields(self):
            if spec.type == "float":
                value = getattr(self, spec.name)
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise bad(spec.name, "a number")
                if not math.isfinite(value):
                    raise bad(spec.name, "finite")
                object.__setattr__(self, spec.name, float(value))
        if self.n_layers < 2 or self.n_layers % 2:
            raise bad("n_layers", "an even integer >= 2")
        if self.size_ratio <= 0:
            raise bad("size_ratio", "positive")
        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"one of {ACTIVATIONS}")
        if self.loss not in LOSSES:
            raise bad("loss", f"one of {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {OPTIMIZERS}")
        for name in ("gamma", "l1", "l2", "beta"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        if not 0 < self.rho < 1:
            raise bad("rho", "in (0, 1)")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "positive")
        if not 0 <= self.decay_rate <= 1:
            raise bad("decay_rate", "in [0, 1]")
        if not 0 <= self.min_mask <= 1:
            raise bad("min_mask", "in [0, 1]")
        if not 0 < self.max_mask <= 1:
            raise bad("max_mask", "in (0, 1]")
        for name in ("batch_size", "cycle_epochs", "max_epochs"):
            if getattr(self, name) < 1:
                raise bad(name, ">= 1")
        for name in ("max_mask_keep", "offspring", "seed"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DAEHyperparameters:
        """Build from a dict such as :meth:`to_dict` wrote; missing keys take the defaults.

        Raises
        ------
        ValueError
            On unknown keys or invalid values.
        """
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DAE hyperparameters {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> DAEHyperparameters:
        """A copy with some fields changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def layer_sizes(n_variants: int, n_layers: int = 4, size_ratio: float = 0.5) -> list[int]:
    """Widths of the encoder, input first: ``2V, int(2V r), int(2V r²), ...`` (``n_layers/2 + 1``).

    As in the authors' ``Autoencoder``, each width is the previous one times ``size_ratio``
    truncated to an integer; widths are floored at 1 here. The decoder mirrors this list.

    Examples
    --------
    >>> layer_sizes(10, 4, 0.5)
    [20, 10, 5]
    """
    if int(n_variants) != n_variants or n_variants < 1:
        raise ValueError(f"n_variants must be a positive integer, got {n_variants!r}")
    if n_layers < 2 or n_layers % 2:
        raise ValueError(f"n_layers must be an even integer >= 2, got {n_layers!r}")
    sizes = [2 * int(n_variants)]
    for _ in range(n_layers // 2):
        sizes.append(max(1, int(sizes[-1] * size_ratio)))
    return sizes


# --------------------------------------------------------------------------- model


def _activation(name: str) -> Any:
    from torch import nn

    return {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leakyrelu": nn.LeakyReLU,
        "softplus": nn.Softplus,
    }[name]()


_MODEL_CLASS: type | None = None


def _model_class() -> type:
    """Define the torch module on first use, so importing this module does not load torch."""
    global _MODEL_CLASS
    if _MODEL_CLASS is not None:
        return _MODEL_CLASS
    import torch
    from torch import nn

    class SparseDenoisingAutoencoder(nn.Module):
        """Symmetric fully connected autoencoder over ``2 V`` allele-presence nodes.

        Encoder: ``n_layers / 2`` Linear layers of widths :func:`layer_sizes`, each followed by
        the activation; decoder: the mirror image, the last Linear back to ``2 V`` followed by a
        sigmoid (Dias et al. 2022, Figure 1D; the authors' ``Autoencoder`` class).

        Parameters
        ----------
        n_variants
            Number of variants ``V`` of the tile.
        hparams
            :class:`DAEHyperparameters` (only ``n_layers``, ``size_ratio`` and ``activation``
            shape the network); defaults if omitted.

        Notes
        -----
        ``model(x)`` returns sigmoid outputs. ``model(x, return_logits=True)`` returns the
        pre-sigmoid values, and ``model(x, return_logits=True, sparsity_input=clean)`` also
        returns ``encode(clean)``; the trainer calls it that way so that every parameter use
        goes through ``forward`` (as DDP requires).
        """

        def __init__(self, n_variants: int, hparams: DAEHyperparameters | None = None) -> None:
            super().__init__()
            hp = hparams if hparams is not None else DAEHyperparameters()
            self.n_variants = int(n_variants)
            self.hparams = hp
            self.sizes = layer_sizes(self.n_variants, hp.n_layers, hp.size_ratio)
            encoder: list[nn.Module] = []
            for width_in, width_out in itertools.pairwise(self.sizes):
                encoder += [nn.Linear(width_in, width_out), _activation(hp.activation)]
            mirrored = self.sizes[::-1]
            decoder: list[nn.Module] = []
            for k, (width_in, width_out) in enumerate(itertools.pairwise(mirrored)):
                decoder.append(nn.Linear(width_in, width_out))
                if k < len(mirrored) - 2:
                    decoder.append(_activation(hp.activation))
            self.encoder = nn.Sequential(*encoder)
            self.decoder = nn.Sequential(*decoder)  # logits; sigmoid applied in forward

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            """Bottleneck activations (after the encoder's last activation)."""
            return self.encoder(x)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            """Pre-sigmoid outputs ``(batch, 2 V)``."""
            return self.decoder(self.encoder(x))

        def forward(
            self,
            x: torch.Tensor,
            *,
            return_logits: bool = False,
            sparsity_input: torch.Tensor | None = None,
        ) -> Any:
            """Reconstruct allele presence from (masked) input ``x`` of shape ``(batch, 2 V)``."""
            out = self.logits(x)
            if not return_logits:
                out = torch.sigmoid(out)
            if sparsity_input is None:
                return out
            return out, self.encoder(sparsity_input)

        def extra_repr(self) -> str:
            return f"n_variants={self.n_variants}, sizes={self.sizes}"

    SparseDenoisingAutoencoder.__module__ = __name__
    SparseDenoisingAutoencoder.__qualname__ = "SparseDenoisingAutoencoder"
    _MODEL_CLASS = SparseDenoisingAutoencoder
    return _MODEL_CLASS


def __getattr__(name: str) -> Any:
    if name == "SparseDenoisingAutoencoder":
        cls = _model_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _new_model(n_variants: int, hparams: DAEHyperparameters) -> torch.nn.Module:
    """Build a model with weights drawn from the hyperparameters' seed alone.

    The weights come from a private generator, never from torch's global one: tiles trained
    at the same time in threads of one process (a dask worker) would otherwise race on the
    global generator and start from different weights than in a serial run. The draws follow
    ``nn.Linear``'s default initialisation (Kaiming-uniform weights with ``a = sqrt(5)``,
    uniform biases in ``±1/sqrt(fan_in)``).
    """
    import torch

    from analysislib.training import make_generator

    generator = make_generator(hparams.seed, _INIT_STREAM)
    with torch.device("meta"):  # no global-generator draws while the layers are built
        model = _model_class()(n_variants, hparams)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


# --------------------------------------------------------------------------- losses


def reconstruction_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: str = "CE",
    gamma: float = 0.0,
    alpha: torch.Tensor | np.ndarray | None = None,
    *,
    from_logits: bool = False,
) -> torch.Tensor:
    """Reconstruction loss of allele-presence outputs (Dias et al. Eq. 2), mean over all nodes.

    ``CE``: mean binary cross entropy ``-[y log p + (1 - y) log(1 - p)]`` (``alpha`` and ``gamma``
    unused, as in the code). ``FL``: mean of ``(1 - p_t)^γ α_t BCE`` with
    ``p_t = y p + (1 - y)(1 - p)`` and ``α_t = y α + (1 - y)(1 - α)`` (``α_t = 1`` when ``alpha`` is
    None).

    Parameters
    ----------
    pred
        Sigmoid outputs (or logits with ``from_logits``), ``(batch, 2 V)``.
    target
        Clean allele presence, same shape, values in {0, 1}.
    kind
        ``"CE"`` or ``"FL"``.
    gamma
        Focal exponent γ >= 0.
    alpha
        Per-node class weight α ``(2 V,)``, see :func:`focal_alpha`.
    from_logits
        ``pred`` holds logits (stable, and allowed under autocast).

    Returns
    -------
    torch.Tensor
        Scalar float32 loss.
    """
    import torch
    import torch.nn.functional as F

    if kind not in LOSSES:
        raise ValueError(f"loss kind must be one of {LOSSES}, got {kind!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred = pred.float()
        target = target.float()
        if from_logits:
            bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        else:
            bce = F.binary_cross_entropy(pred, target, reduction="none")
        if kind == "CE":
            return bce.mean()
        p = torch.sigmoid(pred) if from_logits else pred
        weighted = bce
        if gamma:
            p_t = target * p + (1 - target) * (1 - p)
            weighted = weighted * (1 - p_t).pow(gamma)
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=torch.float32, device=pred.device)
            if a.shape[-1] != pred.shape[-1]:
                raise ValueError(f"alpha has {a.shape[-1]} nodes, outputs have {pred.shape[-1]}")
            weighted = weighted * (target * a + (1 - target) * (1 - a))
        return weighted.mean()


def focal_alpha(training_presence: Any) -> np.ndarray:
    """Per-node focal-loss weight α: the mean allele presence of each output node.

    Parameters
    ----------
    training_presence
        ``(samples, 2 V)`` allele presence of the training set (NumPy or torch).

    Returns
    -------
    numpy.ndarray
        float32 ``(2 V,)``, each node's frequency of presence (``calculate_alpha`` in the code).
    """
    if hasattr(training_presence, "detach"):
        training_presence = training_presence.detach().cpu().numpy()
    x = np.asarray(training_presence, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected (samples, 2 * variants) presence, got shape {x.shape}")
    return x.mean(axis=0).astype(np.float32)


def l1_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Σ over the weight matrices of ``mean |W|`` (biases excluded; the code's ``l1_loss``).

    Multiply by λ1 for the loss term of Eq. 3.
    """
    import torch

    from analysislib.training import unwrap_model

    terms = [p.abs().mean() for name, p in unwrap_model(model).named_parameters()
             if name.endswith("weight")]
    if not terms:
        raise ValueError("model has no weight parameters")
    return torch.stack(terms).sum()


def _kl_from_hidden(hidden: torch.Tensor, rho: float) -> torch.Tensor:
    import torch

    with torch.autocast(device_type=hidden.device.type, enabled=False):
        rho_hat = torch.sigmoid(hidden.float()).mean(dim=1)
        rho_hat = rho_hat.clamp(_RHO_HAT_EPS, 1 - _RHO_HAT_EPS)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return kl.mean()


def kl_sparsity(model: torch.nn.Module, clean_input: torch.Tensor, rho: float) -> torch.Tensor:
    """KL sparsity penalty ``mean_s [ρ log(ρ/ρ̂_s) + (1-ρ) log((1-ρ)/(1-ρ̂_s))]`` (Eq. 4, code form).

    ``ρ̂_s`` is the mean over bottleneck units of ``sigmoid(encode(clean_input))`` for sample ``s``
    (the encoder is applied to the unmasked data, as in the code). Multiply by β for Eq. 3.
    """
    from analysislib.training import unwrap_model

    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho!r}")
    return _kl_from_hidden(unwrap_model(model).encode(clean_input), rho)


# --------------------------------------------------------------------------- masking


def mask_count(n_variants: int, rate: float) -> int:
    """Variants masked per sample at ``rate``: ``round(V * rate)`` (halves to even, as the code)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"masking rate must be in [0, 1], got {rate!r}")
    return round(n_variants * rate)


def _variant_mask(n_samples: int, n_variants: int, rate: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Bool ``(samples, variants)``: exactly :func:`mask_count` True per row, uniformly chosen."""
    import torch

    k = mask_count(n_variants, rate)
    mask = torch.zeros((n_samples, n_variants), dtype=torch.bool)
    if k == 0 or n_samples == 0:
        return mask
    if k == n_variants:
        return mask.fill_(True)
    noise = torch.rand((n_samples, n_variants), generator=generator)
    chosen = noise.argsort(dim=1)[:, :k]
    return mask.scatter_(1, chosen, True)


def mask_presence(presence: Any, rate: float, generator: torch.Generator | None = None) -> Any:
    """Set exactly ``round(V * rate)`` randomly chosen variants of every sample to ``[0, 0]``.

    Parameters
    ----------
    presence
        ``(samples, 2 V)`` allele presence, torch tensor (any device) or NumPy array.
    rate
        Fraction of variants to mask per sample.
    generator
        CPU ``torch.Generator`` for the choice (the training step uses the per-epoch generator of
        :class:`~analysislib.training.StepContext`, so a resumed run draws the same masks).

    Returns
    -------
    torch.Tensor or numpy.ndarray
        A masked copy of the same type, device and dtype.
    """
    import torch

    as_numpy = not isinstance(presence, torch.Tensor)
    x = torch.from_numpy(np.asarray(presence)) if as_numpy else presence
    if x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"expected (samples, 2 * variants) presence, got shape {tuple(x.shape)}")
    n_samples, n_variants = x.shape[0], x.shape[1] // 2
    keep = ~_variant_mask(n_samples, n_variants, rate, generator).to(x.device)
    out = (x.reshape(n_samples, n_variants, 2) * keep.unsqueeze(-1).to(x.dtype)).reshape(x.shape)
    return out.numpy() if as_numpy else out


def mask_rate_schedule(n_variants: int, hparams: DAEHyperparameters) -> CurriculumSchedule:
    """The per-epoch masking curriculum of a tile: ``min_mask`` up to all but ``max_mask_keep``.

    ``linspace(min_mask, min((V - k) / V, max_mask), cycle_epochs)``, cycling, with
    ``k = min(max_mask_keep, V - 1)``; if the end rate is below ``min_mask`` (small tiles) the
    schedule is flat at the end rate. :func:`train_tile` rounds each value to 4 decimals as the
    authors' code does.
    """
    from analysislib.training import CurriculumSchedule, all_but_k_rate

    keep = min(hparams.max_mask_keep, n_variants - 1)
    end = min(all_but_k_rate(n_variants, keep), hparams.max_mask)
    start = min(hparams.min_mask, end)
    return CurriculumSchedule(start, end, n_steps=hparams.cycle_epochs, cycle=True)


# --------------------------------------------------------------------------- inference helpers


@contextlib.contextmanager
def _cpu_threads(num_threads: int | Literal["auto"] | None, device: torch.device,
                 batch_elements: int) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them afterwards.

    ``"auto"`` uses one thread on the CPU when a batch holds fewer than 2**17 input values: for
    such small matrix products OpenMP's start-up and spinning cost more than the arithmetic
    (100-fold on a loaded 2-core machine). ``None`` leaves torch's setting alone.
    """
    import torch

    if num_threads == "auto":
        small = device.type == "cpu" and batch_elements < _SMALL_BATCH_ELEMENTS
        num_threads = 1 if small else None
    if num_threads is None:
        yield
        return
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1, 'auto' or None, got {num_threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def predict_presence(
    model: torch.nn.Module,
    presence: Any,
    batch_size: int = 1024,
    *,
    device: str | torch.device = "cpu",
    num_threads: int | Literal["auto"] | None = "auto",
) -> np.ndarray:
    """Sigmoid outputs of ``model`` for ``(samples, 2 V)`` allele-presence inputs, in batches.

    Parameters
    ----------
    model
        A trained :class:`SparseDenoisingAutoencoder` (left on its device and mode afterwards).
    presence
        Inputs with masked/untyped variants at ``[0, 0]``.
    batch_size
        Samples per forward pass.
    device
        Device to run on (``"auto"`` allowed, see :func:`analysislib.training.select_device`).
    num_threads
        CPU threads for torch during the call (``"auto"``: one for small batches; ``None``:
        unchanged).

    Returns
    -------
    numpy.ndarray
        float32 ``(samples, 2 V)``.
    """
    import torch

    from analysislib.training import select_device, unwrap_model

    inner = unwrap_model(model)
    x = np.asarray(presence, dtype=np.float32)
    width = 2 * inner.n_variants if hasattr(inner, "n_variants") else x.shape[-1]
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"model expects (samples, {width}) inputs, got shape {x.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = select_device(device)
    original = next(inner.parameters()).device
    was_training = inner.training
    inner.to(target).eval()
    out = np.empty_like(x)
    elements = min(batch_size, max(x.shape[0], 1)) * width
    try:
        with torch.no_grad(), _cpu_threads(num_threads, target, elements):
            for start in range(0, x.shape[0], batch_size):
                chunk = torch.from_numpy(x[start:start + batch_size]).to(target)
                out[start:start + batch_size] = inner(chunk).float().cpu().numpy()
    finally:
        inner.to(original).train(was_training)
    return out


def linear_layers(state: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Linear layers of a :class:`SparseDenoisingAutoencoder` state dict, in forward order.

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
    import re

    pattern = re.compile(r"^(encoder|decoder)\.(\d+)\.(weight|bias)$")
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = pattern.match(key)
        if match is None:
            raise ValueError(f"state dict key {key!r} is not a Linear layer of the autoencoder")
        part = 0 if match.group(1) == "encoder" else 1
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        found.setdefault((part, int(match.group(2))), {})[match.group(3)] = array
    layers = []
    for key in sorted(found):
        pair = found[key]
        if set(pair) != {"weight", "bias"}:
            raise ValueError(f"layer {key} lacks its weight or bias")
        weight, bias = pair["weight"], pair["bias"]
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"layer {key}: weight {weight.shape} and bias {bias.shape} do not fit")
        if layers and layers[-1][0].shape[0] != weight.shape[1]:
            raise ValueError(f"layer {key}: {weight.shape[1]} inputs after {layers[-1][0].shape[0]} outputs")
        layers.append((weight, bias))
    if len(layers) < 2 or layers[0][0].shape[1] != layers[-1][0].shape[0]:
        raise ValueError("the layers do not map 2 V nodes back to 2 V nodes")
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
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


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

    Computes what :class:`SparseDenoisingAutoencoder` computes (each Linear layer but the last
    followed by ``activation``, the last by a sigmoid) in float32 without importing torch, so
    inference from a bundle's packed weights (:mod:`analysislib.genotype.dae`) starts in a
    fraction of torch's import time. Results agree with torch to float32 rounding (the matrix
    products run through NumPy's BLAS instead of torch's).

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
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    x = np.asarray(presence, dtype=np.float32)
    width = layers[0][0].shape[1]
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=np.intp)
        if inputs.ndim != 1 or (len(inputs) and (inputs.min() < 0 or inputs.max() >= width)):
            raise ValueError(f"inputs must be indices into the model's {width} inputs")
        width = len(inputs)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"model expects (samples, {width}) inputs, got shape {x.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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


def _check_genotypes(genotypes: Any, what: str = "genotypes") -> np.ndarray:
    """(variants, samples, 2) biallelic allele indices as int8; clear error otherwise."""
    if hasattr(genotypes, "data_vars"):  # an xarray Dataset
        genotypes = genotypes["call_genotype"].values
    gt = np.asarray(genotypes)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise ValueError(f"{what}: expected diploid (variants, samples, 2) genotypes, "
                         f"got shape {gt.shape}")
    if gt.shape[0] < 1 or gt.shape[1] < 1:
        raise ValueError(f"{what}: need at least one variant and one sample, got shape {gt.shape}")
    if gt.dtype.kind not in "iu":
        raise ValueError(f"{what}: allele indices must be integers, got dtype {gt.dtype}")
    bad = (gt < -1) | (gt > 1)
    if bad.any():
        v, s, h = np.argwhere(bad)[0]
        raise ValueError(
            f"{what}: allele index {int(gt[v, s, h])} at variant {v}, sample {s}; the "
            "autoencoder takes biallelic variants only (0 = REF, 1 = ALT, -1 = missing)")
    return gt.astype(np.int8, copy=False)


def _masked_matrix(masked: Any, n_variants: int, n_samples: int) -> np.ndarray:
    """Expand a (variants,) or (variants, samples) bool mask to (variants, samples)."""
    m = np.asarray(masked)
    if m.dtype != bool:
        raise ValueError(f"masked must be boolean, got dtype {m.dtype}")
    if m.shape == (n_variants,):
        return np.repeat(m[:, None], n_samples, axis=1)
    if m.shape == (n_variants, n_samples):
        return m
    raise ValueError(f"masked must have shape ({n_variants},) or ({n_variants}, {n_samples}), "
                     f"got {m.shape}")


def _validation_mask(genotypes: np.ndarray, mask_rate: float | None, masked: Any | None,
                     seed: int) -> np.ndarray:
    from analysislib.training import make_generator

    n_variants, n_samples = genotypes.shape[:2]
    if masked is not None:
        return _masked_matrix(masked, n_variants, n_samples)
    if mask_rate is None:
        raise ValueError("give mask_rate or masked")
    generator = make_generator(seed, _VALIDATION_STREAM)
    return _variant_mask(n_samples, n_variants, mask_rate, generator).numpy().T.copy()


def impute_masked(
    model: torch.nn.Module,
    genotypes: Any,
    masked: Any,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Hide the ``masked`` entries, run the model and decode every entry.

    Parameters
    ----------
    model
        Trained autoencoder of the tile.
    genotypes
        ``(variants, samples, 2)`` allele indices (-1 missing) or a Dataset with
        ``call_genotype``.
    masked
        Bool ``(variants,)`` (variants absent for everyone, e.g. not on the array) or
        ``(variants, samples)``: entries set to ``[0, 0]`` before the forward pass.
    batch_size, device
        See :func:`predict_presence`.

    Returns
    -------
    dosage : numpy.ndarray
        float64 ``(variants, samples)`` alternate-allele dosage.
    probabilities : numpy.ndarray
        float64 ``(variants, samples, 3)`` normalised genotype probabilities.
    """
    gt = _check_genotypes(genotypes)
    n_variants, n_samples = gt.shape[:2]
    hidden = _masked_matrix(masked, n_variants, n_samples)
    presence = allele_presence(gt)
    keep = (~hidden.T).astype(np.float32)
    presence = (presence.reshape(n_samples, n_variants, 2) * keep[:, :, None]).reshape(n_samples, -1)
    gp = genotype_probabilities_from_presence(
        predict_presence(model, presence, batch_size=batch_size, device=device))
    gp = gp.transpose(1, 0, 2)
    return dosage_from_probabilities(gp), gp


def validation_r2(
    model: torch.nn.Module,
    genotypes: Any,
    mask_rate: float | None = None,
    *,
    masked: Any | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    per_variant: bool = False,
) -> Any:
    """Mean per-variant r² between imputed dosage and true allele count at masked entries.

    The model-selection metric of Dias et al. (Methods, "Hyperparameter initialization"):
    squared Pearson correlation per variant over the masked, called entries; variants whose
    masked truth is monomorphic are left out (the authors' Optuna pipeline), variants with a
    constant imputed dosage count as 0. An allele-frequency imputer scores 0.

    Parameters
    ----------
    model
        Trained autoencoder.
    genotypes
        Validation genotypes ``(variants, samples, 2)`` (not used for training).
    mask_rate
        Mask exactly ``round(V * mask_rate)`` variants per sample, drawn from ``seed`` (the same
        mask on every call).
    masked
        Explicit bool mask ``(variants,)`` or ``(variants, samples)`` instead of ``mask_rate``.
    seed
        Seed of the random mask.
    batch_size, device
        See :func:`predict_presence`.
    per_variant
        Return the per-variant r² array (NaN where left out) instead of the mean.

    Returns
    -------
    float or numpy.ndarray
        NaN when no variant can be scored.
    """
    from analysislib.genotype.metrics import allele_count, per_variant_r2

    gt = _check_genotypes(genotypes, "validation genotypes")
    hidden = _validation_mask(gt, mask_rate, masked, seed)
    dosage, _ = impute_masked(model, gt, hidden, batch_size=batch_size, device=device)
    truth = allele_count(gt)
    scored = hidden & (truth >= 0)
    r2 = per_variant_r2(dosage, truth, scored, monomorphic="zero")
    big = np.iinfo(np.int8).max
    low = np.where(scored, truth, big).min(axis=1)
    high = np.where(scored, truth, -1).max(axis=1)
    r2 = np.where(scored.any(axis=1) & (low != high), r2, np.nan)
    if per_variant:
        return r2
    return float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan")


# --------------------------------------------------------------------------- training


@dataclass
class TrainedTile:
    """One tile's trained autoencoder and how it got there.

    Attributes
    ----------
    model
        The best cycle's weights, on the CPU, in eval mode.
    hparams
        Hyperparameters used.
    history
        One row per epoch: ``epoch`` (1-based), ``loss`` (total), ``reconstruction``, ``l1``,
        ``kl`` (the weighted terms), ``lr``, ``mask_rate``; cycle ends add ``metric`` (the
        monitored value), ``improved`` and, with validation data, ``val_r2``.
    n_variants
        Variants of the tile.
    best_epoch
        Epoch (1-based) whose cycle end gave the kept weights.
    epochs_completed
        Epochs trained (including any before a resume).
    stopped_early
        True if a cycle failed to improve before ``epochs``.
    best_metric
        Monitored value at ``best_epoch``.
    val_r2
        Validation r² of the kept weights (NaN without validation data).
    n_training_samples
        Distinct training diplotypes after augmentation and de-duplication.
    n_offspring
        Offspring added before de-duplication.
    checkpoint_dir
        Where checkpoints were written, if anywhere.
    resumed_from
        Checkpoint this run continued from, if any.
    """

    model: Any
    hparams: DAEHyperparameters
    history: pd.DataFrame
    n_variants: int
    best_epoch: int | None
    epochs_completed: int = 0
    stopped_early: bool = False
    best_metric: float | None = None
    val_r2: float = float("nan")
    n_training_samples: int = 0
    n_offspring: int = 0
    checkpoint_dir: str | None = None
    resumed_from: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description: hyperparameters and the training outcome."""
        def plain(value: Any) -> Any:
            if value is None:
                return None
            value = float(value)
            return value if math.isfinite(value) else None

        return {
            "model": MODEL_NAME,
            "n_variants": self.n_variants,
            "hyperparameters": self.hparams.to_dict(),
            "epochs_completed": self.epochs_completed,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "best_metric": plain(self.best_metric),
            "val_r2": plain(self.val_r2),
            "final_loss": plain(self.history["loss"].iloc[-1]) if len(self.history) else None,
            "n_training_samples": self.n_training_samples,
            "n_offspring": self.n_offspring,
        }


class _EpochBatches:
    """One epoch's shuffled batches of a device-resident tensor (sharded by rank under DDP)."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator,
                 rank: int, world_size: int) -> None:
        import torch

        n = data.shape[0]
        order = torch.randperm(n, generator=generator)
        batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
        if world_size > 1:  # every rank takes its slice of each global batch
            batches = [b.tensor_split(world_size)[rank] for b in batches if len(b) >= world_size]
        self._data = data
        self._batches = [b.to(data.device) for b in batches]

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in self._batches:
            yield self._data[index]


def _make_optimizer(parameters: Any, hparams: DAEHyperparameters) -> torch.optim.Optimizer:
    import torch

    factory = {
        "adam": torch.optim.Adam,
        "rmsprop": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "adadelta": torch.optim.Adadelta,
    }[hparams.optimizer]
    return factory(parameters, lr=hparams.learning_rate, weight_decay=hparams.l2)


def _offspring(genotypes: Any, hparams: DAEHyperparameters, genetic_map: Any) -> np.ndarray:
    """Children of the training panel (variants, children, 2), formed once per run."""
    from analysislib.genotype.dataset import create_genotype_dataset
    from analysislib.simulate.genotypes import form_offspring
    from analysislib.training import derive_seed

    if hasattr(genotypes, "data_vars"):
        ds = genotypes
        if "call_genotype_phased" in ds and not bool(np.asarray(ds["call_genotype_phased"]).all()):
            raise ValueError("offspring augmentation needs phased genotypes; the dataset has "
                             "unphased calls")
    else:
        if genetic_map is None:
            raise ValueError("offspring augmentation from a genotype array needs genetic_map "
                             "(genetic position in cM of every variant, or an msprime RateMap "
                             "with positions given through a Dataset)")
        gt = np.asarray(genotypes)
        n_variants, n_samples = gt.shape[:2]
        ds = create_genotype_dataset(
            contigs=["tile"],
            variant_contig=np.zeros(n_variants, dtype=np.int16),
            variant_position=np.arange(1, n_variants + 1, dtype=np.int64),
            variant_allele=np.tile(np.array(["A", "C"], dtype=object), (n_variants, 1)),
            sample_id=[f"parent_{k}" for k in range(n_samples)],
            call_genotype=gt,
        )
    children = form_offspring(ds, hparams.offspring, genetic_map=genetic_map,
                              seed=derive_seed(hparams.seed, _OFFSPRING_STREAM))
    return np.asarray(children["call_genotype"].values, dtype=np.int8)


def _check_resume_metadata(directory: Any, metadata: Mapping[str, Any]) -> None:
    """Refuse to resume a run trained on other data or other hyperparameters."""
    from analysislib.training import latest_checkpoint, read_checkpoint_header

    latest = latest_checkpoint(directory)
    if latest is None:
        return
    saved = read_checkpoint_header(latest).get("extra", {}).get("metadata", {})
    if saved.get("model") != MODEL_NAME:
        raise CheckpointError(f"{latest}: not a checkpoint of {MODEL_NAME} "
                              f"(model {saved.get('model')!r}); use another checkpoint_dir")
    ignore = {"max_epochs"}
    old_hp, new_hp = saved.get("hparams", {}), metadata["hparams"]
    changed = sorted(k for k in set(old_hp) | set(new_hp)
                     if k not in ignore and old_hp.get(k) != new_hp.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old_hp.get(k)!r} -> {new_hp.get(k)!r}" for k in changed)
        raise CheckpointError(f"{latest}: checkpoint was trained with other hyperparameters "
                              f"({detail}); use another checkpoint_dir or resume=False")
    for key in ("n_variants", "training_sha256"):
        if saved.get(key) != metadata[key]:
            raise CheckpointError(f"{latest}: checkpoint was trained on other data ({key} "
                                  f"{saved.get(key)!r}, now {metadata[key]!r}); use another "
                                  "checkpoint_dir or resume=False")


def train_tile(
    genotypes: Any,
    hparams: DAEHyperparameters | None = None,
    *,
    epochs: int | None = None,
    validation: Any | None = None,
    validation_mask: float | np.ndarray | None = None,
    monitor: Literal["loss", "val_r2"] = "loss",
    patience: int | None = 1,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    checkpoint_every: int | None = None,
    device: str | torch.device = "auto",
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    num_threads: int | Literal["auto"] | None = "auto",
    genetic_map: Any = None,
    progress: bool | None = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainedTile:
    """Train one tile's sparse denoising autoencoder (Dias et al. 2022, Methods).

    Training set: the allele presence of ``genotypes`` plus ``hparams.offspring`` offspring,
    de-duplicated. Every epoch draws a fresh mask per sample at the curriculum's rate
    (:func:`mask_rate_schedule`) from the per-epoch generator of the training loop; the loss is
    reconstruction (CE or FL) + λ1 L1 + β KL on the clean input, with L2 as weight decay. At the
    end of every ``cycle_epochs`` cycle the mean loss is compared with the best so far: a
    checkpoint is written, the learning rate is multiplied by ``decay_rate``, and training stops
    after ``patience`` cycles without improvement, keeping the best cycle's weights.

    Parameters
    ----------
    genotypes
        Training genotypes ``(variants, samples, 2)`` int (0/1 alleles, -1 missing), phased or
        unphased, or a genotype Dataset (its ``call_genotype``; offspring use its
        ``variant_genetic_position``).
    hparams
        Hyperparameters (defaults if omitted).
    epochs
        Epochs to train at most (default ``hparams.max_epochs``).
    validation
        Held-out genotypes of the same variants; their r² (:func:`validation_r2`) is logged at
        every cycle end and reported.
    validation_mask
        Masking of the validation data: a rate (default: the curriculum's last rate, all but
        ``max_mask_keep`` variants masked) or a bool mask ``(variants,)`` / ``(variants,
        samples)``; fixed for the whole run.
    monitor
        ``"loss"`` (the paper: mean training loss of a cycle) or ``"val_r2"`` (the authors'
        Optuna pipeline; needs ``validation``) decides improvement and early stopping.
    patience
        Cycles without improvement before stopping (1 as in the paper; None never stops).
    checkpoint_dir
        Checkpoint folder (every cycle end, plus ``best.pt``); resumable. None keeps everything
        in memory.
    resume
        Continue from the latest checkpoint in ``checkpoint_dir`` (it must come from the same
        data and hyperparameters, ``max_epochs`` aside).
    checkpoint_every
        Also checkpoint every this many epochs (default: only at cycle ends).
    device
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"`` (:func:`~analysislib.training.select_device`).
        Inside a ``torchrun`` job the process group's device is used and the model is wrapped
        in DDP; each rank takes a slice of every global batch.
    amp, amp_dtype
        Mixed precision (fp16 on CUDA by default, bf16 on the CPU only if asked).
    num_threads
        torch CPU threads while training (``"auto"``: one thread when a batch holds fewer than
        2**17 input values, where threading only adds overhead; ``None``: torch's setting).
        Restored afterwards.
    genetic_map
        Genetic positions (cM per variant, or an ``msprime.RateMap`` with a Dataset) for
        offspring formation when ``genotypes`` is an array.
    progress
        Show progress bars (None: follow ``ANALYSISLIB_PROGRESS``).
    on_epoch_end
        Called with each epoch's history record (after this module's fields are added).

    Returns
    -------
    TrainedTile

    Raises
    ------
    ValueError
        On malformed genotypes (the first offending variant and sample are named) or options.
    CheckpointError
        If ``checkpoint_dir`` holds a run of other data or hyperparameters, or is damaged.
    """
    import pandas as pd
    import torch

    from analysislib.results import array_checksum  # imports pandas: not at module level
    from analysislib.training import EarlyStopping, fit, is_distributed, select_device, wrap_ddp

    hp = hparams if hparams is not None else DAEHyperparameters()
    if not isinstance(hp, DAEHyperparameters):
        hp = DAEHyperparameters.from_dict(hp)
    total_epochs = hp.max_epochs if epochs is None else int(epochs)
    if total_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if monitor not in ("loss", "val_r2"):
        raise ValueError(f"monitor must be 'loss' or 'val_r2', got {monitor!r}")
    if monitor == "val_r2" and validation is None:
        raise ValueError("monitor='val_r2' needs validation genotypes")

    gt = _check_genotypes(genotypes)
    n_variants = gt.shape[0]
    n_offspring = 0
    if hp.offspring:
        children = _offspring(genotypes, hp, genetic_map)
        gt = np.concatenate([gt, children], axis=1)
        n_offspring = children.shape[1]
    presence = np.unique(allele_presence(gt), axis=0)  # distinct training diplotypes
    alpha = focal_alpha(presence) if hp.loss == "FL" else None

    schedule = mask_rate_schedule(n_variants, hp)

    def rate_at(epoch: int) -> float:
        return round(schedule(epoch), 4)

    val_gt = val_mask = None
    if validation is not None:
        val_gt = _check_genotypes(validation, "validation genotypes")
        if val_gt.shape[0] != n_variants:
            raise ValueError(f"validation has {val_gt.shape[0]} variants, training {n_variants}")
        rate = schedule.end if validation_mask is None else validation_mask
        if isinstance(rate, (int, float, np.floating)) and not isinstance(rate, bool):
            val_mask = _validation_mask(val_gt, float(rate), None, hp.seed)
        else:
            val_mask = _masked_matrix(rate, n_variants, val_gt.shape[1])

    if is_distributed():
        from analysislib.training import init_distributed

        run_device = init_distributed(str(device)).device
    else:
        run_device = select_device(device)
    model = wrap_ddp(_new_model(n_variants, hp), run_device)
    inner = model.module if hasattr(model, "module") else model
    optimizer = _make_optimizer(model.parameters(), hp)
    scheduler = None
    if 0 < hp.decay_rate < 1:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=hp.decay_rate)
    data = torch.from_numpy(presence).to(run_device)
    alpha_t = torch.from_numpy(alpha).to(run_device) if alpha is not None else None

    def make_loader(epoch: int, generator: torch.Generator) -> _EpochBatches:
        from analysislib.training import get_rank, get_world_size

        return _EpochBatches(data, hp.batch_size, generator, get_rank(), get_world_size())

    def train_step(net: torch.nn.Module, batch: torch.Tensor, ctx: Any) -> dict[str, torch.Tensor]:
        masked = mask_presence(batch, rate_at(ctx.epoch), ctx.generator)
        if hp.beta > 0:
            logits, hidden = net(masked, return_logits=True, sparsity_input=batch)
        else:
            logits, hidden = net(masked, return_logits=True), None
        recon = reconstruction_loss(logits, batch, hp.loss, hp.gamma, alpha_t, from_logits=True)
        loss = recon
        logs = {"reconstruction": recon.detach()}
        if hp.l1 > 0:
            l1_term = hp.l1 * l1_penalty(net)
            loss = loss + l1_term
            logs["l1"] = l1_term.detach()
        if hidden is not None:
            kl_term = hp.beta * _kl_from_hidden(hidden, hp.rho)
            loss = loss + kl_term
            logs["kl"] = kl_term.detach()
        return {"loss": loss, **logs}

    def current_val_r2() -> float:
        return validation_r2(inner, val_gt, masked=val_mask, device=run_device)

    best_state: dict[str, Any] = {}

    def epoch_end(record: dict[str, Any]) -> None:
        record["mask_rate"] = rate_at(record["epoch"] - 1)
        if "metric" in record:
            if val_gt is not None:
                record["val_r2"] = (record["metric"] if monitor == "val_r2"
                                    else current_val_r2())
            if record["improved"] and checkpoint_dir is None:
                best_state["weights"] = copy.deepcopy(inner.state_dict())
                best_state["epoch"] = record["epoch"]
        if on_epoch_end is not None:
            on_epoch_end(record)

    def validate(net: torch.nn.Module, epoch: int) -> float:
        return current_val_r2()

    metadata = {
        "model": MODEL_NAME,
        "n_variants": n_variants,
        "hparams": hp.to_dict(),
        "training_sha256": array_checksum(presence),
    }
    if checkpoint_dir is not None and resume:
        _check_resume_metadata(checkpoint_dir, metadata)

    with _cpu_threads(num_threads, run_device, hp.batch_size * 2 * n_variants):
        result = fit(
            model,
            optimizer,
            train_step,
            make_loader,
            epochs=total_epochs,
            seed=hp.seed,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            checkpoint_every=checkpoint_every or hp.cycle_epochs,
            cycle_length=hp.cycle_epochs,
            validate=validate if monitor == "val_r2" else None,
            early_stopping=EarlyStopping(patience=patience,
                                         mode="max" if monitor == "val_r2" else "min"),
            scheduler=scheduler,
            scheduler_interval="cycle",
            amp=amp,
            amp_dtype=amp_dtype,
            keep_last=1,
            restore_best=True,
            metadata=metadata,
            on_epoch_end=epoch_end,
            progress=progress,
        )
    if checkpoint_dir is None and best_state and best_state["epoch"] != result.epochs_completed:
        inner.load_state_dict(best_state["weights"])

    history = pd.DataFrame(result.history)
    for column in ("metric", "improved", "val_r2"):
        if column not in history:
            history[column] = np.nan if column != "improved" else None
    val_r2 = float("nan")
    if result.best_epoch is not None and "val_r2" in history:
        at_best = history.loc[history["epoch"] == result.best_epoch, "val_r2"]
        if len(at_best) and pd.notna(at_best.iloc[0]):
            val_r2 = float(at_best.iloc[0])
    inner.cpu().eval()
    return TrainedTile(
        model=inner,
        hparams=hp,
        history=history,
        n_variants=n_variants,
        best_epoch=result.best_epoch,
        epochs_completed=result.epochs_completed,
        stopped_early=result.stopped_early,
        best_metric=result.best_metric,
        val_r2=val_r2,
        n_training_samples=int(presence.shape[0]),
        n_offspring=n_offspring,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        resumed_from=None if result.resumed_from is None else os.fspath(result.resumed_from),
    )
