"""Loss terms of the sparse denoising autoencoder (Dias et al. 2022, Methods "Loss function").

Reconstruction by cross entropy or focal loss (Eq. 2), the L1 term (Eq. 3) and the KL sparsity
term (Eq. 4), as :func:`~analysislib.genotype.dae.fit.train_tile` combines them: reconstruction
+ λ1 L1 + β KL, with L2 as the optimizer's weight decay. Where the paper and the authors' code
(``autoencoder_tuning_pipeline/DSAE_TORCH_ARG.py`` in ``TorkamaniLab/Imputation_Autoencoder``)
differ, this module does the following:

* **L1 term** (Eq. 3): the paper writes ``λ1 ||W||1``; the code sums ``mean|W|`` over the weight
  matrices (biases excluded) and adds it *without* multiplying by ``λ1`` whenever ``λ1 > 0``.
  We use the code's per-matrix mean (the λ1 values it selected, 0.1 in 198 of 256 tiles, only
  make sense with it) multiplied by ``λ1`` as Eq. 3 states.
* **L2 term**: the paper writes ``λ2 ||W||2`` in the loss; the code, and
  :func:`~analysislib.genotype.dae.fit.train_tile`, use the optimizer's ``weight_decay = λ2``
  (coupled L2, biases included).
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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dae.hyperparameters import LOSSES

if TYPE_CHECKING:
    import torch

__all__ = ["focal_alpha", "kl_sparsity", "l1_penalty", "reconstruction_loss"]

_RHO_HAT_EPS = 1e-6


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
        raise InvalidArgumentError(f"loss kind must be one of {LOSSES}, got {kind!r}")
    if pred.shape != target.shape:
        raise InvalidArgumentError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
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
                raise InvalidArgumentError(f"alpha has {a.shape[-1]} nodes, outputs have {pred.shape[-1]}")
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
        raise InvalidArgumentError(f"expected (samples, 2 * variants) presence, got shape {x.shape}")
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
        raise InvalidArgumentError("model has no weight parameters")
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
        raise InvalidArgumentError(f"rho must be in (0, 1), got {rho!r}")
    return _kl_from_hidden(unwrap_model(model).encode(clean_input), rho)
