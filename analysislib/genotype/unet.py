"""BiU-Net and SCDA: segment models, the hybrid loss, curriculum training and the imputers.

Follows the BiU-Net paper (Methods 5.3 "Model", 5.4 "Model training"; Discussion), the model
code the authors made public (``model/unet.py`` and ``model/ae.py`` in ``learnslowly/BiU-Net``)
and SCDA (Chen and Shi 2019; ``SCDA_train.ipynb`` in ``work-hard-play-harder/SCDA``).
Segmentation, the positional channel and reassembly are in :mod:`analysislib.genotype.segments`.

The networks (torch modules) are in :mod:`analysislib.genotype.unet_model`, the losses and the
training run in :mod:`analysislib.genotype.unet_training`; this module holds their configuration
and presets, inference (:func:`predict_segments`) and the imputers, and imports torch only inside
the functions that need it. The training names are re-exported here; import the networks
(:class:`~analysislib.genotype.unet_model.BiUNet`, :class:`~analysislib.genotype.unet_model.SCDA`)
from :mod:`analysislib.genotype.unet_model` (their old path here still works for one release,
with a FutureWarning).

Models
------
:class:`BiUNet` follows the authors' ``model/unet.py``: the input is the one-hot code of every
token (:data:`~analysislib.genotype.segments.VOCAB_SIZE` = 6 channels: mask, four phased
genotypes, padding) plus one positional channel; encoder level ``i`` is
Conv1d(-> ``channels * 2**i``, ``kernel_size``, same padding) + ReLU, followed (except at the
deepest level) by MaxPool1d(2) and Dropout, its pre-pool output kept as the skip; each decoder
level is Upsample(x2, nearest) -> Conv1d(halving channels) -> ReLU -> **additive** skip ->
Dropout; a last Conv1d maps to the classes. The authors' last layer has one output per token and
sets the mask token's logit to -inf; we emit the four genotype classes only (0|0, 0|1, 1|0,
1|1), which is the same softmax with mask and padding never predicted. Segment lengths must be
divisible by ``2**(depth - 1)``.

:class:`SCDA` is the published sparse convolutional denoising autoencoder (the authors' Keras
notebook): Conv(32, 5, ReLU) -> MaxPool 2 -> Dropout 0.25 -> Conv(64) -> MaxPool ->
Dropout -> Conv(128) | Conv(64) -> Upsample 2 -> Dropout -> Conv(32) -> Upsample -> Dropout ->
Conv(classes, 5) + softmax, with an L1 penalty of 1e-4 on every convolution kernel (Keras
``kernel_regularizer``: a sum of absolute weights added to the loss). ``depth=3`` is exactly that
network; larger ``depth`` adds encoder levels (channels doubling) and mirrored decoder levels,
the paper's "extended the original SCDA to six layers" (``depth=6``). SCDA has no positional
channel and, as in the paper, is trained by default on full-length genotypes (one "segment"
covering the contig, padded to a multiple of ``2**(depth - 1)``) with its published categorical
cross-entropy (``loss="ce"``); its segment length, overlap and loss can be changed.

Parameter counts
----------------
The paper reports 9.7 million parameters for BiU-Net and 17 million for SCDA but not the depth,
base channels or kernel size. The authors' BiU-Net structure with ``depth=6``, ``channels=32``
(SCDA's first width) and ``kernel_size=7`` has 9,782,628 parameters, the closest of the
natural configurations to 9.7 M (:func:`paper_parameter_counts`); this is the ``full`` preset.
The published SCDA layers extended to six levels (kernel 5, 32 base channels) have about
7.0 M parameters, not 17 M: the paper's SCDA configuration cannot be recovered from its text.

Site prior
----------
A convolution applies the same weights at every SNP, and the paper's positional channel only
tells a segment's SNPs apart by their relative spacing, so neither network can know that one
column is a monomorphic site and the next a common one. Trained as published at CPU scale, both
scored *below the allele-frequency floor*: on real 1000 Genomes chr22 (first 2,000 array SNPs,
450 reference / 50 target samples, 5% random missingness, 10 epochs) BiU-Net's aggregate r² was
0.14 against the floor's 0.25, with genotype accuracy 0.80 at MAF < 1% where the floor gets
0.99. Each (segment, column) therefore carries its phased-genotype frequencies in the training
panel (:func:`site_prior`, ``site_prior=True``, the default for both models): they enter as four
extra input channels and, as log-probabilities, are added to the output logits, so that an
untrained network predicts exactly the allele-frequency floor and training learns the
haplotype-context correction to it. Same run with the prior: aggregate r² 0.44, accuracy 0.99
at MAF < 1%. A learned site embedding (``site_channels``, 8 by default) adds trainable input
channels per (segment, column), a learned form of the paper's positional "watermark": with it a
held-out SNP planted in perfect LD with its neighbour was imputed with r² 0.95 instead of 0.84
(128 real SNPs, 48 training samples, 400 epochs). ``site_prior=False, site_channels=0`` gives
the networks exactly as published (their parameter counts, :func:`paper_parameter_counts`).

Hybrid loss
-----------
:func:`hybrid_loss` = ``(1 - lam) * focal + lam * dosage_mse`` with ``lam = 0.5`` (Eq. 8; lam = 1
is pure dosage loss). The focal term (Eq. 2-4) is ``-(1 - p_t)**gamma * S[y, y_hat] * log p_t``
with ``gamma = 2`` and ``S`` the dosage-penalty score matrix of Table 2 (:data:`PENALTY_MATRIX`),
``y`` the true and ``y_hat`` the predicted phased genotype. The paper ("the penalty applied when
the true phased genotype (rows) is predicted as (columns)") leaves open whether ``y_hat`` is the
hard arg-max or the predicted distribution. We use the expected penalty ``sum_j S[y, j] p_j``
(``penalty_mode="expected"``, the default): it is 0 only when the true class has probability 1.
With the arg-max reading (``penalty_mode="argmax"``, a weight without gradient) every correct
arg-max weighs 0, so nothing holds the majority genotype's probability up while every error
pushes away from it: the network settles at the decision boundary and over-calls the minor
allele (our earlier default; on real chr22 BiU-Net's ALT precision was 0.67 at recall 0.997,
and with the site prior below, aggregate r² after 10 epochs was 0.437 against 0.467 with the
expected penalty on 2,000 SNPs). The dosage term (Eq. 5-7) is the mean squared error of
``p(0|1) + p(1|0) + 2 p(1|1)`` against the true dosage. Both terms average over the scored
positions: by default (``loss_on="masked"``) the genotypes masked in the batch, which are the
ones imputation is asked for (observed genotypes are copied through at inference, and scoring
them trains the full-resolution skip connection to copy its input); ``loss_on="all"`` scores
every known position, as SCDA's published training does.

Near a correct call the focal term's gradient fades as ``(1 - p_t)**(gamma + 1)`` (the expected
penalty is itself about ``3 (1 - p_t)``) and the dosage term's as ``(1 - p_t)``, so the network
stops at soft probabilities even where the answer is certain. The ``full`` preset keeps the
paper's loss; ``quick`` and ``standard`` train BiU-Net with cross-entropy, which learns the
planted-LD test and scores higher on real chr22 (:data:`BIUNET_PRESETS`).

Haplotype rows
--------------
The paper's token is a sample's phased genotype at a SNP (0|0, 0|1, 1|0, 1|1), so a row of
tokens is a *pair* of haplotypes. A target sample's pair is almost never a pair the reference
panel holds, even when each of its haplotypes closely matches a reference haplotype, which is
what the HMM tools copy from: the network has to learn to take every pairing apart. With
``unit="haplotype"`` each of a sample's haplotypes is its own row, written as homozygous codes
(allele ``a`` as ``a|a``, :func:`~analysislib.genotype.segments.haplotype_tokens`), and the
network, site prior and loss run unchanged on twice the rows; at imputation a haplotype's ALT
probability is ``P(1|1) / (P(0|0) + P(1|1))`` and the sample's phased-genotype probabilities are
the products over its two haplotypes
(:func:`~analysislib.genotype.segments.haplotype_probabilities_to_phased`). A masked genotype
masks the site on both haplotypes, as before. This is our change, not the paper's; the ``full``
presets of both networks keep the paper's genotype rows (SCDA's ``quick`` and ``standard`` use
haplotype rows too, :data:`SCDA_PRESETS`). On real chr22 (first 2,000 array SNPs, 450 reference /
50 target samples, 5% random missingness, the ``quick`` settings, one torch thread) aggregate
r² went from 0.715 to 0.821 (seed 0; seeds 1 and 2: 0.728 → 0.812, 0.720 → 0.814), and on the
planted-LD learning test memorisation of masked training genotypes rose from 0.94 to 0.97 and
the planted SNP's r² to 1.00 (seed 0).

Training
--------
Every batch of segments is masked afresh (each non-padding, non-missing token hidden with
probability ``rate``); ``rate`` rises linearly from 5% in the first epoch to 25% in the last
(:func:`~analysislib.training.linear_curriculum`). Training runs through
:func:`analysislib.training.fit` (checkpoints, exact resume, mixed precision on CUDA via
autocast, DDP under ``torchrun`` with each rank taking a stride of every epoch's permutation),
with Adam. Optimiser, learning rate, batch size and dropout of BiU-Net are not published; we
use SCDA's Adam at 1e-3 and its dropout 0.25, and the paper's epoch counts (about 160 for
BiU-Net, 600 for SCDA) as the ``full`` maxima, with early stopping (patience 10, SCDA's) on a
validation split when one is given. The ``quick`` presets are small and short for CPU minutes.

Imputers
--------
:class:`BiUNetImputer` and :class:`SCDAImputer` answer
:class:`~analysislib.genotype.imputer.GenotypeImputer`: ``fit`` trains on the reference panel
(holding out ``validation_fraction`` of it for early stopping), ``impute`` encodes the target on
the reference sites (untyped sites and missing calls become the mask token), predicts every
segment, reassembles by highest softmax probability, and returns phased best-guess genotypes (the likeliest unphased genotype, phased by the likelier heterozygote order),
unphased genotype probabilities ``(P(0|0), P(0|1) + P(1|0), P(1|1))`` and dosages. Observed
target genotypes are copied through as hard calls (as :class:`~analysislib.genotype.dae.DAEImputer`
and the HMM tools do). One contig per reference panel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import xarray as xr

from analysislib.errors import InvalidArgumentError, NotFittedError
from analysislib.genotype.imputer import (
    GenotypeImputer,
    ImputationRun,
    imputed_dataset,
    sites_key,
    warn_if_unphased,
)
from analysislib.genotype.segments import (
    GENOTYPE_CODES,
    MISSING,
    N_CLASSES,
    SegmentLayout,
    decode_phased,
    encode_phased,
    haplotype_probabilities_to_phased,
    haplotype_tokens,
    positional_channel,
    reassemble_probabilities,
    segment_codes,
    variant_coordinates,
)
from analysislib.genotype.unet_training import (
    PENALTY_MATRIX,
    TrainedSegmentModel,
    build_model,
    count_parameters,
    dosage_mse_loss,
    focal_penalty_loss,
    hybrid_loss,
    site_prior,
    train_segment_model,
)
from analysislib.presets import Presets
from analysislib.results.provenance import peak_memory_mb
from analysislib.runtime import RunOptions, renamed_keywords

logger = logging.getLogger(__name__)

__all__ = [
    "BIUNET_PRESETS",
    "PENALTY_MATRIX",
    "SCDA_PRESETS",
    "BiUNetImputer",
    "SCDAImputer",
    "SegmentModelConfig",
    "TrainedSegmentModel",
    "build_model",
    "count_parameters",
    "dosage_mse_loss",
    "focal_penalty_loss",
    "hybrid_loss",
    "paper_parameter_counts",
    "predict_segments",
    "site_prior",
    "train_segment_model",
]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SegmentModelConfig:
    """Architecture, segmentation, loss and training settings of a BiU-Net or SCDA run.

    Attributes
    ----------
    model
        ``"biunet"`` or ``"scda"``.
    depth, channels, kernel_size, dropout
        Architecture (see the module docstring).
    positional
        Append the positional channel (BiU-Net); SCDA has none.
    site_prior
        Give the network each site's phased-genotype frequencies in the training panel
        (:func:`site_prior`): as four extra input channels, and as log-probabilities added to
        the output logits, so that the network learns a correction to the allele-frequency
        prior instead of having to rediscover each site's frequency (module docstring).
    site_channels
        Channels of a learned per-site input embedding (0: none): each (segment, column) gets
        its own trainable vector, a learned form of the paper's positional "watermark" that
        lets shared convolutions act differently at different sites (module docstring).
    l1
        L1 penalty on convolution kernels (sum of absolute weights; SCDA 1e-4).
    segment_length, overlap
        Segmentation; ``segment_length=None`` means one full-length segment per sample.
    position, normalise
        Positional channel (:func:`~analysislib.genotype.segments.positional_channel`).
    loss
        ``"hybrid"`` (:func:`hybrid_loss`) or ``"ce"`` (cross-entropy, SCDA's).
    gamma, lam, penalty_mode, loss_on
        Hybrid-loss settings.
    mask_start, mask_end
        Curriculum masking rates of the first and last epoch.
    epochs, batch_size, learning_rate
        Adam training; ``epochs`` is the maximum when early stopping is on.
    lr_step_at, lr_step_factor
        After this fraction of ``epochs`` (``None``: never) the learning rate is multiplied by
        ``lr_step_factor`` once, for the rest of training.
    patience
        Early-stopping patience in epochs on the validation loss (None: never stop).
    unit
        What one row of tokens is: ``"genotype"``, a sample's phased genotypes (the paper's
        input), or ``"haplotype"``, one haplotype (each of a sample's two haplotypes becomes a
        row of homozygous codes, :func:`~analysislib.genotype.segments.haplotype_tokens`; the
        network, prior and loss are unchanged, and a sample's phased-genotype probabilities are
        the products of its two haplotypes' allele probabilities). See the module docstring,
        "Haplotype rows".
    seed
        Seeds initialisation, data order and masks.
    """

    model: Literal["biunet", "scda"] = "biunet"
    depth: int = 6
    channels: int = 32
    kernel_size: int = 7
    dropout: float = 0.25
    positional: bool = True
    site_prior: bool = True
    site_channels: int = 8
    l1: float = 0.0
    segment_length: int | None = 128
    overlap: int = 16
    position: Literal["physical", "genetic"] = "physical"
    normalise: Literal["segment", "global"] = "segment"
    loss: Literal["hybrid", "ce"] = "hybrid"
    gamma: float = 2.0
    lam: float = 0.5
    penalty_mode: Literal["argmax", "expected"] = "expected"
    loss_on: Literal["all", "masked"] = "masked"
    mask_start: float = 0.05
    mask_end: float = 0.25
    epochs: int = 160
    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_step_at: float | None = None
    lr_step_factor: float = 0.1
    patience: int | None = 10
    unit: Literal["genotype", "haplotype"] = "genotype"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("biunet", "scda"):
            raise InvalidArgumentError(f"model must be 'biunet' or 'scda', got {self.model!r}")
        if self.unit not in ("genotype", "haplotype"):
            raise InvalidArgumentError(f"unit must be 'genotype' or 'haplotype', got {self.unit!r}")
        if int(self.site_channels) != self.site_channels or self.site_channels < 0:
            raise InvalidArgumentError(f"site_channels must be a non-negative integer, got {self.site_channels!r}")
        for name in ("depth", "channels", "kernel_size", "epochs", "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise InvalidArgumentError(f"kernel_size must be odd (same padding), got {self.kernel_size}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgumentError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.lam <= 1:
            raise InvalidArgumentError(f"lam must be in [0, 1], got {self.lam}")
        if not 0 <= self.mask_start <= 1 or not 0 <= self.mask_end <= 1:
            raise InvalidArgumentError("mask_start and mask_end must be in [0, 1]")
        if self.lr_step_at is not None and not 0 < self.lr_step_at < 1:
            raise InvalidArgumentError(f"lr_step_at must be in (0, 1) or None, got {self.lr_step_at}")
        if not 0 < self.lr_step_factor <= 1:
            raise InvalidArgumentError(f"lr_step_factor must be in (0, 1], got {self.lr_step_factor}")
        if self.loss not in ("hybrid", "ce"):
            raise InvalidArgumentError(f"loss must be 'hybrid' or 'ce', got {self.loss!r}")
        if self.loss_on not in ("all", "masked"):
            raise InvalidArgumentError(f"loss_on must be 'all' or 'masked', got {self.loss_on!r}")
        if self.penalty_mode not in ("argmax", "expected"):
            raise InvalidArgumentError(f"penalty_mode must be 'argmax' or 'expected', got {self.penalty_mode!r}")
        if self.segment_length is not None:
            SegmentLayout(1, self.segment_length, self.overlap)  # validates both
            if self.segment_length % self.granularity:
                raise InvalidArgumentError(f"segment_length {self.segment_length} must be divisible by "
                                 f"2**(depth - 1) = {self.granularity}")

    @property
    def granularity(self) -> int:
        """Segment lengths must be multiples of this (``2**(depth - 1)``)."""
        return 2 ** (self.depth - 1)

    def replace(self, **changes: Any) -> SegmentModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


#: BiU-Net presets: ``full`` is the paper's scale (architecture matching its 9.7 M parameters,
#: 128/16 segments, up to 160 epochs); ``standard`` (about 20 CPU-minutes on the 10,490
#: 1000 Genomes chr22 array SNPs with 450 samples) and ``quick`` (a few CPU-minutes) train a
#: 4-level, 16-channel network with the site prior and embedding. Measured on the first 2,000 of
#: those SNPs (450 reference / 50 target samples, 5% random missingness, one torch thread):
#: 20 epochs at batch 128 and learning rate 2e-3 reached aggregate r² 0.69 (batch 32 at 1e-3:
#: 0.70, 25% slower) against the allele-frequency floor's 0.25, above the floor in every MAF bin.
#: ``standard`` and ``quick`` train with cross-entropy, ``full`` with the paper's hybrid loss,
#: whose gradient fades near a correct call (module docstring, "Hybrid loss"): a held-out SNP
#: planted in perfect LD with its neighbour (the learning test) got r² 0.84 / 0.97 / 0.89 / 0.82
#: over seeds 0-3 with it and 0.997 / 0.968 / 0.975 / 0.988 with cross-entropy, and on the
#: first 2,000 chr22 SNPs the quick preset's aggregate r² over seeds 0-2 went from 0.587 /
#: 0.547 / 0.592 to 0.592 / 0.622 / 0.620 (gamma 1: 0.615 / 0.575 / 0.616). Cross-entropy then trains well at a higher learning rate: quick's aggregate
#: r² over seeds 0-2 was 0.671 at 4e-3, 0.689 at 6e-3, 0.721 at 8e-3 (0.715-0.728), 0.692 at
#: 1.1e-2 (0.606-0.757) and 0.512 at 1.6e-2; at 40 epochs 8e-3 gave 0.781 / 0.797 (seeds 0, 1)
#: against 0.782 / 0.772 at 2e-3. Both now run on haplotype rows (module docstring, "Haplotype
#: rows"), without dropout: on the first 2,000 chr22 SNPs, quick's aggregate r² over seeds 0-2
#: went from 0.715 / 0.728 / 0.720 (genotype rows, dropout 0.1) to 0.821 / 0.812 / 0.814
#: (haplotype rows, dropout 0.1) and 0.837 / 0.816 / 0.830 (haplotype rows, no dropout); at 30
#: epochs 0.843 without dropout and 0.839 with 0.1 (seed 0). Haplotype rows double the rows per
#: epoch, so ``standard`` trains 30 epochs instead of 40 to stay within about 20 minutes. Its
#: learning rate then falls tenfold for the last third (``lr_step_at``): on the first 2,000
#: chr22 SNPs aggregate r² 0.847 -> 0.855 (seed 0; a step at 80 %: 0.855) and 0.843 -> 0.848
#: (seed 1), one torch thread; at ``quick``'s 10 epochs the same step gave 0.834 -> 0.837 with
#: a lower accuracy (0.925 -> 0.922), so ``quick`` keeps a constant rate. Neither stores its
#: training panel: on hidden entries of its own training haplotypes ``standard`` is barely more
#: accurate than on new targets, and a lookup of the nearest reference haplotype within ±8 SNPs
#: beats it on the targets (``benchmarks/biunet_capacity.py``; BENCHMARKS.md).
_SMALL_BIUNET = SegmentModelConfig(depth=4, channels=16, dropout=0.0, batch_size=128,
                                   learning_rate=8e-3, patience=None, loss="ce", unit="haplotype")
BIUNET_PRESETS: Presets[SegmentModelConfig] = Presets("BiU-Net", {
    "full": SegmentModelConfig(),
    "standard": _SMALL_BIUNET.replace(epochs=30, lr_step_at=2 / 3),
    "quick": _SMALL_BIUNET.replace(epochs=10),
})


#: SCDA presets: ``full`` is the paper's six-level SCDA on full-length genotypes (up to 600
#: epochs, batch 32 as published); ``standard`` and ``quick`` are the published three-level
#: network, trained shorter (one full-length genotype per item makes an epoch few steps: batch 8).
#: All three carry the site prior and embedding and no L1 penalty (``site_prior=False,
#: site_channels=0, l1=1e-4, loss_on="all"`` is SCDA exactly as published). With the prior the cross-entropy
#: left to learn is small, and the published L1 of 1e-4 x sum|W| outweighed it: every kernel
#: shrank to zero and the network returned the prior alone (on 128 real chr22 SNPs x 48 samples,
#: 400 epochs: accuracy on masked training genotypes 0.70 with L1, 0.96 without). They also
#: score only the masked genotypes (published: every position): scoring all of them, the quick
#: preset's genotype accuracy fell below the floor's at MAF 1-5% and 5-10% (0.933 vs 0.958 and
#: 0.828 vs 0.858; first 1,000 chr22 SNPs, 5% random missingness), and not with masked scoring.
#: ``standard`` and ``quick`` train on haplotype rows, as BiU-Net's do (module docstring,
#: "Haplotype rows"); ``full`` keeps the published genotype rows. On the first 2,000 chr22 SNPs
#: (450 reference / 50 target samples, 5% random missingness, one torch thread) quick's
#: aggregate r² went from 0.556 to 0.744, and 20 epochs on genotype rows, the same number of
#: steps, gave 0.655; on all 10,490 SNPs from 0.539 to 0.784, above the floor in every MAF bin.
#: On the planted-LD learning test genotype rows imputed the held-out SNP with r² 0.61-0.94,
#: haplotype rows with 1.000.
_SCDA = SegmentModelConfig(model="scda", depth=3, channels=32, kernel_size=5, dropout=0.25,
                           positional=False, l1=0.0, segment_length=None, loss="ce", loss_on="masked",
                           batch_size=8, learning_rate=1e-3, patience=None)
SCDA_PRESETS: Presets[SegmentModelConfig] = Presets("SCDA", {
    "full": _SCDA.replace(depth=6, epochs=600, batch_size=32, patience=10),
    "standard": _SCDA.replace(epochs=25, unit="haplotype"),
    "quick": _SCDA.replace(epochs=10, unit="haplotype"),
})


# ----------------------------------------------------------------------------- models


def __getattr__(name: str) -> Any:
    # The old path of the torch networks, kept for one release without importing torch here.
    if name in ("BiUNet", "SCDA"):
        import warnings

        from analysislib.genotype import unet_model

        warnings.warn(f"analysislib.genotype.unet.{name} is now analysislib.genotype.unet_model."
                      f"{name}; the old path will be removed in the next release", FutureWarning,
                      stacklevel=2)
        return getattr(unet_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def paper_parameter_counts() -> dict[str, int]:
    """Parameters of the ``full`` presets: BiU-Net (paper: 9.7 M) and six-level SCDA (paper: 17 M)."""
    # the networks as published, without the site prior's and site embedding's input channels
    published = {"site_prior": False, "site_channels": 0}
    return {"biunet": count_parameters(build_model(BIUNET_PRESETS["full"].replace(**published))),
            "scda": count_parameters(build_model(SCDA_PRESETS["full"].replace(**published)))}


# ----------------------------------------------------------------------------- inference


def predict_segments(model: Any, tokens: Any, positional: Any, *, prior: Any = None, batch_size: int = 512,
                     device: str = "cpu", use_positional: bool | None = None) -> np.ndarray:
    """Softmax class probabilities for segments.

    Parameters
    ----------
    model
        A BiU-Net or SCDA.
    tokens
        (samples, n_segments, length) codes (mask token 0 where unknown).
    positional
        (n_segments, length) positional channel.
    prior
        (n_segments, 4, length) site prior (:func:`site_prior`), for models trained with one.
    batch_size
        Segments per forward pass.
    device
        Where to run.
    use_positional
        Whether the model takes the channel (default: the model's setting).

    Returns
    -------
    numpy.ndarray
        float32 (samples, n_segments, length, 4).
    """
    import torch

    tok = np.asarray(tokens)
    n, s, length = tok.shape
    use_pos = getattr(model, "use_positional", True) if use_positional is None else use_positional
    flat = torch.from_numpy(np.ascontiguousarray(tok.reshape(n * s, length)))
    pos = torch.from_numpy(np.ascontiguousarray(np.asarray(positional, dtype=np.float32)))
    seg_index = torch.arange(n * s) % s
    use_prior = getattr(model, "use_site_prior", False)
    if use_prior and prior is None:
        raise InvalidArgumentError("this model was trained with a site prior: pass prior=")
    pri = torch.from_numpy(np.ascontiguousarray(np.asarray(prior, dtype=np.float32))) if use_prior else None
    out = np.empty((n * s, length, N_CLASSES), dtype=np.float32)
    model = model.to(device).eval()
    with torch.inference_mode():
        for lo in range(0, n * s, batch_size):
            hi = min(n * s, lo + batch_size)
            seg = seg_index[lo:hi].to(device)
            logits = model(flat[lo:hi].to(device), pos[seg].to(device) if use_pos else None,
                           pri[seg].to(device) if pri is not None else None,
                           seg if getattr(model, "site_embedding", None) is not None else None)
            out[lo:hi] = torch.softmax(logits.float(), dim=1).transpose(1, 2).cpu().numpy()
    return out.reshape(n, s, length, N_CLASSES)


# ----------------------------------------------------------------------------- imputers


class _SegmentImputer(GenotypeImputer):
    """Shared fit/impute of the segment models (see the module docstring, "Imputers")."""

    presets: ClassVar[Presets[SegmentModelConfig]]

    @renamed_keywords(num_threads="threads")
    def __init__(self, *, preset: str = "quick", config: SegmentModelConfig | None = None,
                 validation_fraction: float = 0.0, device: str = "auto", amp: bool = True,
                 checkpoint_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                 batch_size_predict: int = 512, sample_chunk: int = 64, progress: bool | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        # PresetError here, at construction, for an unknown preset or setting
        self.preset = self.presets.canonical(preset) if config is None else preset
        self.config = self.presets.resolve(self.preset if config is None else config, **overrides)
        if not 0 <= validation_fraction < 1:
            raise InvalidArgumentError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        self.validation_fraction = float(validation_fraction)
        # one value for training and inference; a bad device or thread count fails here
        self.options = RunOptions(device=device, threads=threads, progress=progress)
        self.amp, self.checkpoint_dir = amp, checkpoint_dir
        self.batch_size_predict, self.sample_chunk = int(batch_size_predict), int(sample_chunk)
        self.trained: TrainedSegmentModel | None = None

    def parameters(self) -> dict[str, Any]:
        """Preset and full configuration, recorded with results."""
        out: dict[str, Any] = {"preset": self.preset, **self.config.to_dict(),
                               "validation_fraction": self.validation_fraction}
        if self.trained is not None:
            out["n_parameters"] = self.trained.details["n_parameters"]
            out["epochs_completed"] = self.trained.epochs_completed
        return out

    def fit(self, reference: xr.Dataset) -> _SegmentImputer:
        """Train the network on the reference panel (one contig)."""
        from analysislib.genotype.masking import split_samples

        reference = reference.compute() if any(v.chunks for v in reference.data_vars.values()) else reference
        _warn_if_unphased(reference, self.name, "reference panel")
        self.reference = reference
        train, validation = reference, None
        if self.validation_fraction > 0:
            train, validation = split_samples(reference, target_fraction=self.validation_fraction,
                                              seed=self.config.seed)
        self.trained = train_segment_model(train, self.config, validation=validation, amp=self.amp,
                                           checkpoint_dir=self.checkpoint_dir, options=self.options)
        return self

    def _codes_on_reference(self, target: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Target codes (samples, reference variants), 0 at untyped sites; and typed rows."""
        assert self.reference is not None
        ref_index = {key: i for i, key in enumerate(sites_key(self.reference))}
        keys = sites_key(target)
        unknown = [k for k in keys if k not in ref_index]
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} target sites are not in the reference panel, e.g. {unknown[0]}")
        rows = np.fromiter((ref_index[k] for k in keys), dtype=np.int64, count=len(keys))
        gt = np.asarray(target["call_genotype"].values)
        codes = np.zeros((target.sizes["samples"], self.reference.sizes["variants"]), dtype=np.uint8)
        codes[:, rows] = encode_phased(gt)
        return codes, rows

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Impute ``target`` to every reference variant (module docstring, "Imputers")."""
        from analysislib.training import select_device

        if self.trained is None or self.reference is None:
            raise NotFittedError("call fit(reference) before impute(target)")
        started = time.perf_counter()
        reference, trained = self.reference, self.trained
        _warn_if_unphased(target, self.name, "target")
        codes, _ = self._codes_on_reference(target)
        layout = trained.layout
        coords = variant_coordinates(reference, trained.config.position)
        positional = positional_channel(coords, layout, trained.config.normalise)
        device = str(select_device(self.options.device))
        n = codes.shape[0]
        phased = np.empty((n, layout.n_variants, N_CLASSES), dtype=np.float32)
        by_haplotype = trained.config.unit == "haplotype"
        for lo in range(0, n, self.sample_chunk):
            hi = min(n, lo + self.sample_chunk)
            tokens = segment_codes(codes[lo:hi], layout)
            probs = predict_segments(trained.model, haplotype_tokens(tokens) if by_haplotype else tokens,
                                     positional, prior=trained.prior,
                                     batch_size=self.batch_size_predict, device=device,
                                     use_positional=trained.config.positional)
            probs = reassemble_probabilities(probs, layout)
            phased[lo:hi] = haplotype_probabilities_to_phased(probs) if by_haplotype else probs
        trained.model.cpu()
        observed = codes != MISSING
        best = np.where(observed, codes, _best_guess_codes(phased))
        onehot = np.eye(N_CLASSES, dtype=np.float32)[np.clip(codes.astype(np.int64) - 1, 0, N_CLASSES - 1)]
        phased = np.where(observed[..., None], onehot, phased)
        gp = np.stack([phased[..., 0], phased[..., 1] + phased[..., 2], phased[..., 3]], axis=-1)
        gp = gp.transpose(1, 0, 2)  # (variants, samples, 3)
        genotypes = decode_phased(best)
        imputed = imputed_dataset(reference, target, genotypes, gp, phased=True,
                                  attrs={"source": f"{self.name} imputation"})
        seconds = time.perf_counter() - started
        self.last_run = ImputationRun(
            seconds=seconds, peak_memory_mb=peak_memory_mb(),
            details={"fit_seconds": trained.seconds, "epochs_completed": trained.epochs_completed,
                     "n_parameters": trained.details["n_parameters"],
                     "segments_per_second_inference": n * layout.n_segments / max(seconds, 1e-9),
                     "segments_per_second_training": trained.segments_seen / max(trained.seconds, 1e-9)})
        return imputed


def _warn_if_unphased(ds: xr.Dataset, model: str, role: str) -> None:
    """:func:`~analysislib.genotype.imputer.warn_if_unphased` for a dataset (``role`` when it has no source)."""
    if "call_genotype_phased" in ds:
        warn_if_unphased(ds["call_genotype"].values, ds["call_genotype_phased"].values, model=model,
                         where=ds.attrs.get("source", f"the {role}"))


def _best_guess_codes(phased: np.ndarray) -> np.ndarray:
    """Phased best guess: the most probable unphased genotype, phased by the likelier het order.

    Taking the arg-max of the four phased classes would split a heterozygote's probability
    between 0|1 and 1|0 and call a homozygote where the heterozygote is likelier.
    """
    unphased = np.stack([phased[..., 0], phased[..., 1] + phased[..., 2], phased[..., 3]], axis=-1)
    call = unphased.argmax(-1)
    het = np.where(phased[..., 1] >= phased[..., 2], GENOTYPE_CODES[1], GENOTYPE_CODES[2])
    return np.choose(call, [GENOTYPE_CODES[0], het, GENOTYPE_CODES[3]]).astype(np.uint8)


class BiUNetImputer(_SegmentImputer):
    """BiU-Net behind the common imputer interface (name ``"biunet"``).

    Parameters
    ----------
    preset
        ``"quick"``, ``"standard"`` or ``"full"`` (:data:`BIUNET_PRESETS`).
    config
        A :class:`SegmentModelConfig` to use instead of the preset.
    validation_fraction
        Share of the reference samples held out for early stopping (0: train on all, no
        early stopping).
    device, threads, progress
        Run-time options, kept as one :class:`~analysislib.runtime.RunOptions` in ``.options``
        (checked here) and passed to :func:`train_segment_model`; ``device`` also runs inference.
    amp, checkpoint_dir
        See :func:`train_segment_model`.
    batch_size_predict, sample_chunk
        Segments per forward pass and samples reassembled at a time at inference.
    **overrides
        Any :class:`SegmentModelConfig` field, applied over the preset (``epochs=3``).
    """

    name = "biunet"
    presets = BIUNET_PRESETS


class SCDAImputer(_SegmentImputer):
    """SCDA (Chen and Shi 2019), re-implemented (no installable form), as name ``"scda"``.

    Same parameters as :class:`BiUNetImputer`, with presets :data:`SCDA_PRESETS`: full-length
    rows, no positional channel and cross-entropy as published. Every preset adds the site prior
    and embedding and drops the L1 penalty; ``standard`` and ``quick`` also train on haplotype
    rows, where ``full`` keeps the published genotype rows.
    """

    name = "scda"
    presets = SCDA_PRESETS
