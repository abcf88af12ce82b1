"""The torch module of Dias et al. 2022: one symmetric, fully connected autoencoder per tile.

Dias et al. 2022 (eLife 11:e75600), Methods "Genotype encoding" and Figure 1D, and the authors'
``Autoencoder`` class (``autoencoder_tuning_pipeline/DSAE_TORCH_ARG.py`` in
``TorkamaniLab/Imputation_Autoencoder``). Where the paper and the authors' code differ:

* **Architecture**: Table 1 lists 1 hidden layer and ``softplus``; the code accepts only even
  layer counts and has no softplus. Even counts ``>= 2`` are accepted and ``softplus`` is offered.
  Layer widths are ``int(previous * size_ratio)`` as in the code, floored at 1 unit. Parameter
  names match the code's ``Autoencoder`` (``encoder.0.weight`` ... ``decoder.N.bias``), so its
  state dicts load.

This is the one module of :mod:`analysislib.genotype.dae` that imports torch when imported; the
torch-free modules (bundles, mapping, inference) import it inside the functions that build a
model, and inference from packed weights never needs it
(:func:`~analysislib.genotype.dae.forward.numpy_forward`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from analysislib.genotype.dae.hyperparameters import DAEHyperparameters, layer_sizes

__all__ = ["SparseDenoisingAutoencoder"]

#: ``derive_seed`` stream of the initial weights (the training streams are listed in
#: :mod:`analysislib.genotype.dae.fit`).
_INIT_STREAM = 11


def _activation(name: str) -> Any:
    return {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leakyrelu": nn.LeakyReLU,
        "softplus": nn.Softplus,
    }[name]()


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
        """Variant count and layer widths, shown in ``repr(model)``."""
        return f"n_variants={self.n_variants}, sizes={self.sizes}"


def _new_model(n_variants: int, hparams: DAEHyperparameters) -> torch.nn.Module:
    """Build a model with weights drawn from the hyperparameters' seed alone.

    The weights come from a private generator, never from torch's global one: tiles trained
    at the same time in threads of one process (a dask worker) would otherwise race on the
    global generator and start from different weights than in a serial run. The draws follow
    ``nn.Linear``'s default initialisation (Kaiming-uniform weights with ``a = sqrt(5)``,
    uniform biases in ``±1/sqrt(fan_in)``).
    """
    from analysislib.training import make_generator

    generator = make_generator(hparams.seed, _INIT_STREAM)
    with torch.device("meta"):  # no global-generator draws while the layers are built
        model = SparseDenoisingAutoencoder(n_variants, hparams)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model
