"""Old import path of the Dias et al. 2022 autoencoder, kept for one release.

Its names live in :mod:`analysislib.genotype.dae`: :class:`DAEHyperparameters` and
:func:`layer_sizes` in :mod:`~analysislib.genotype.dae.hyperparameters`, the torch module in
:mod:`~analysislib.genotype.dae.model`, the NumPy forward pass in
:mod:`~analysislib.genotype.dae.forward`, the loss terms in :mod:`~analysislib.genotype.dae.losses`
and one tile's training in :mod:`~analysislib.genotype.dae.fit`.
"""

# Kept for one release: re-exports of the names' new homes.
from __future__ import annotations

from typing import Any

from analysislib.genotype.dae.fit import MODEL_NAME as MODEL_NAME  # noqa: PLC0414 (public)
from analysislib.genotype.dae.fit import (
    TrainedTile,
    impute_masked,
    mask_count,
    mask_presence,
    mask_rate_schedule,
    predict_presence,
    train_tile,
    validation_r2,
)
from analysislib.genotype.dae.forward import linear_layers, numpy_forward
from analysislib.genotype.dae.hyperparameters import (
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    DAEHyperparameters,
    layer_sizes,
)
from analysislib.genotype.dae.losses import (
    focal_alpha,
    kl_sparsity,
    l1_penalty,
    reconstruction_loss,
)

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "DAEHyperparameters",
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


def __getattr__(name: str) -> Any:
    # The old path of the torch module, kept for one release without importing torch here.
    if name == "SparseDenoisingAutoencoder":
        import warnings

        from analysislib.genotype.dae.model import SparseDenoisingAutoencoder

        warnings.warn("analysislib.genotype.autoencoder.SparseDenoisingAutoencoder is now "
                      "analysislib.genotype.dae.model.SparseDenoisingAutoencoder; the old path "
                      "will be removed in the next release", FutureWarning, stacklevel=2)
        return SparseDenoisingAutoencoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
