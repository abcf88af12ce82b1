"""Training one tile's autoencoder (Dias et al. 2022, Methods), its masking and its validation r².

Follows Dias et al. 2022 (eLife 11:e75600), Methods "Genotype encoding", "Data augmentation",
"Loss function" (Equations 1-4) and "Hyperparameter tuning", and the authors' PyTorch code
(``autoencoder_tuning_pipeline/DSAE_TORCH_ARG.py`` in ``TorkamaniLab/Imputation_Autoencoder``).
Genotypes are encoded as allele presence (:mod:`analysislib.genotype.encoding`); one fully
connected, symmetric autoencoder with sigmoid outputs
(:mod:`~analysislib.genotype.dae.model`) is trained per genome tile (:mod:`analysislib.tiling`)
by :func:`train_tile` through the shared loop :func:`analysislib.training.fit` (cycles, early
stopping, learning-rate decay, exact resume, AMP, DDP), with the losses of
:mod:`~analysislib.genotype.dae.losses`.

Where the paper and the authors' code differ, this module does the following:

* **Masking curriculum**: one rate per epoch from ``linspace(min_mask, (V - 5) / V, n)`` rounded
  to 4 decimals, cycling; the code fixes ``n = 500`` next to 500-epoch checkpoints, here ``n`` is
  ``cycle_epochs``. ``max_mask`` (default 1, the code's curriculum) caps the end rate: on
  1000 Genomes chr22 array sites with one SNP in three typed, training at 80-99 % masking while
  inference hides 67 % cost r² (issue 12; 200-variant tiles: 0.634 / 0.450 aggregate / mean
  per-variant r² at 50 % masking against 0.592 / 0.401 at the code's 80 % start), so the
  ``quick`` and ``standard`` presets of :mod:`analysislib.genotype.dae.imputer` train from 50 % to
  90 %, or, for targets of a known density (``DAEImputer(typed_fraction=...)``), around the
  share they lack (:func:`~analysislib.genotype.dae.hyperparameters.masking_for_typed_fraction`).
  Tiles too small for the curriculum (``(V - 5) / V < min_mask``, i.e. V < 25) mask at the
  all-but-5 rate throughout; tiles of at most 5 variants mask one variant.
* **Which variants are masked**: uniformly chosen, as in the paper and the code, so a bundle
  serves any array. For targets of a known array, ``train_tile(untyped=...)`` (from
  ``DAEImputer(typed_sites=...)`` and ``analysislib train --typed-sites``) masks the sites the
  array lacks first, so each network is trained on the problem it will be given: on the first
  2,000 chr22 array SNPs with one in three typed, aggregate / mean per-variant r² at untyped
  sites went from 0.803 / 0.666 to 0.834 / 0.699 (Minimac4 0.785 / 0.657; BENCHMARKS.md).
* **Batches**: the code runs ``int(n / batch_size - 0.5)`` batches per epoch, dropping the last
  partial batch (and training on nothing when ``n < 1.5 batch_size``); every sample is used here.
* **Resume**: the code's resume restarts the masking curriculum and the optimizer state; here a
  resumed run is bit-identical to an uninterrupted one.
* **Offspring**: the paper merged 30,000 sim1000G offspring with HRC once before fine-tuning;
  ``offspring`` children are formed once per training run by
  :func:`analysislib.simulate.genotypes.form_offspring` (phased parents needed) and appended to
  the training samples before de-duplication.
* **De-duplication**: the code trains on the distinct rows (``np.unique``); ``deduplicate=False``
  keeps repeated rows, and with them each row's frequency in the panel.

Early stopping (stop at the first 500-epoch cycle whose mean loss does not improve, keep the best
cycle's weights) and learning-rate decay (``lr × decay_rate`` at every cycle end, 0 = off) are
as in the code.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib.errors import CheckpointError, InvalidArgumentError
from analysislib.genotype.dae.hyperparameters import DAEHyperparameters, stored_hyperparameters
from analysislib.genotype.dae.losses import (
    _kl_from_hidden,
    focal_alpha,
    l1_penalty,
    reconstruction_loss,
)
from analysislib.genotype.encoding import (
    allele_presence,
    dosage_from_probabilities,
    genotype_probabilities_from_presence,
)
from analysislib.runtime import RunOptions, options_from_keywords, renamed_keywords, torch_threads

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from analysislib.training.schedules import CurriculumSchedule

__all__ = [
    "TrainedTile",
    "impute_masked",
    "mask_count",
    "mask_presence",
    "mask_rate_schedule",
    "predict_presence",
    "train_tile",
    "validation_r2",
]

MODEL_NAME = "dias2022_sparse_denoising_autoencoder"
_SMALL_BATCH_ELEMENTS = 2**17  # below this many input values per batch, one CPU thread is faster
# Stream ids for derive_seed; fit uses 1 (loader) and 2 (per-batch masks), the model's initial
# weights 11 (analysislib.genotype.dae.model).
_OFFSPRING_STREAM = 12
_VALIDATION_STREAM = 13


# --------------------------------------------------------------------------- masking


def mask_count(n_variants: int, rate: float) -> int:
    """Variants masked per sample at ``rate``: ``round(V * rate)`` (halves to even, as the code)."""
    if not 0 <= rate <= 1:
        raise InvalidArgumentError(f"masking rate must be in [0, 1], got {rate!r}")
    return round(n_variants * rate)


def _variant_mask(n_samples: int, n_variants: int, rate: float,
                  generator: torch.Generator | None, first: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``(samples, variants)``: exactly :func:`mask_count` True per row, uniformly chosen,
    from the variants flagged in ``first`` (bool ``(variants,)``) before any other."""
    import torch

    k = mask_count(n_variants, rate)
    mask = torch.zeros((n_samples, n_variants), dtype=torch.bool)
    if k == 0 or n_samples == 0:
        return mask
    if k == n_variants:
        return mask.fill_(True)
    noise = torch.rand((n_samples, n_variants), generator=generator)
    if first is not None:  # draws in [-1, 0) for them: every row's k smallest start with them
        noise[:, first] -= 1.0
    # The k smallest draws of each row, unsorted: a third of a full argsort's time at tile widths
    # (argsort was a tenth of a training run). The set is argsort's first k unless two draws tie
    # at the cut, where either choice is as uniform.
    chosen = noise.topk(k, dim=1, largest=False, sorted=False).indices
    return mask.scatter_(1, chosen, True)


def mask_presence(presence: Any, rate: float, generator: torch.Generator | None = None, *,
                  first: Any = None) -> Any:
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
    first
        Optional bool ``(V,)``: variants chosen before any other (uniformly among them while
        the rate covers fewer, then all of them and a uniform choice of the rest). Training for
        known targets passes their untyped sites (``train_tile(untyped=...)``).

    Returns
    -------
    torch.Tensor or numpy.ndarray
        A masked copy of the same type, device and dtype.
    """
    import torch

    as_numpy = not isinstance(presence, torch.Tensor)
    x = torch.from_numpy(np.asarray(presence)) if as_numpy else presence
    if x.ndim != 2 or x.shape[1] % 2:
        raise InvalidArgumentError(f"expected (samples, 2 * variants) presence, got shape {tuple(x.shape)}")
    n_samples, n_variants = x.shape[0], x.shape[1] // 2
    if first is not None:
        first = (first.bool().cpu() if isinstance(first, torch.Tensor)
                 else torch.from_numpy(np.asarray(first, dtype=bool)))
        if first.shape != (n_variants,):
            raise InvalidArgumentError(f"first must be a bool array of {n_variants} variants, got shape "
                                       f"{tuple(first.shape)}")
    keep = ~_variant_mask(n_samples, n_variants, rate, generator, first).to(x.device)
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
def _cpu_threads(threads: int | Literal["auto"] | None, device: torch.device,
                 batch_elements: int) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them afterwards.

    ``"auto"`` uses one thread on the CPU when a batch holds fewer than 2**17 input values: for
    such small matrix products OpenMP's start-up and spinning cost more than the arithmetic
    (100-fold on a loaded 2-core machine). ``None`` leaves torch's setting alone.
    """
    if threads == "auto":
        small = device.type == "cpu" and batch_elements < _SMALL_BATCH_ELEMENTS
        threads = 1 if small else None
    with torch_threads(threads):  # checks the count
        yield


@renamed_keywords(num_threads="threads")
def predict_presence(
    model: torch.nn.Module,
    presence: Any,
    batch_size: int = 1024,
    *,
    device: str | torch.device = "cpu",
    threads: int | Literal["auto"] | None = "auto",
) -> np.ndarray:
    """Sigmoid outputs of ``model`` for ``(samples, 2 V)`` allele-presence inputs, in batches.

    Parameters
    ----------
    model
        A trained :class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder` (left on its
        device and mode afterwards).
    presence
        Inputs with masked/untyped variants at ``[0, 0]``.
    batch_size
        Samples per forward pass.
    device
        Device to run on (``"auto"`` allowed, see :func:`analysislib.training.select_device`).
    threads
        CPU threads for torch during the call (``"auto"``: one for small batches; ``None``:
        unchanged). ``num_threads``, its old name, is accepted for one release.

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
        raise InvalidArgumentError(f"model expects (samples, {width}) inputs, got shape {x.shape}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    target = select_device(device)
    original = next(inner.parameters()).device
    was_training = inner.training
    inner.to(target).eval()
    out = np.empty_like(x)
    elements = min(batch_size, max(x.shape[0], 1)) * width
    try:
        with torch.no_grad(), _cpu_threads(threads, target, elements):
            for start in range(0, x.shape[0], batch_size):
                chunk = torch.from_numpy(x[start:start + batch_size]).to(target)
                out[start:start + batch_size] = inner(chunk).float().cpu().numpy()
    finally:
        inner.to(original).train(was_training)
    return out


def _check_genotypes(genotypes: Any, what: str = "genotypes", *, biallelic: bool = True) -> np.ndarray:
    """(variants, samples, 2) integer allele indices (-1 missing); a clear error otherwise.

    The one check of a tile's genotypes, for training and scoring here and for the tuning's
    tile features (:mod:`analysislib.genotype.dae.tuning`). With ``biallelic`` (the autoencoder's
    inputs) every index must be 0, 1 or -1 and the array comes back as int8; without it (tile
    features, which count any index above 0 as ALT) the array comes back as given.
    """
    if hasattr(genotypes, "data_vars"):  # an xarray Dataset
        genotypes = genotypes["call_genotype"].values
    gt = np.asarray(genotypes)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise InvalidArgumentError(f"{what}: expected diploid (variants, samples, 2) genotypes, "
                         f"got shape {gt.shape}")
    if gt.shape[0] < 1 or gt.shape[1] < 1:
        raise InvalidArgumentError(f"{what}: need at least one variant and one sample, got shape {gt.shape}")
    if gt.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{what}: allele indices must be integers, got dtype {gt.dtype}")
    if not biallelic:
        return gt
    bad = (gt < -1) | (gt > 1)
    if bad.any():
        v, s, h = np.argwhere(bad)[0]
        raise InvalidArgumentError(
            f"{what}: allele index {int(gt[v, s, h])} at variant {v}, sample {s}; the "
            "autoencoder takes biallelic variants only (0 = REF, 1 = ALT, -1 = missing)")
    return gt.astype(np.int8, copy=False)


def _masked_matrix(masked: Any, n_variants: int, n_samples: int) -> np.ndarray:
    """Expand a (variants,) or (variants, samples) bool mask to (variants, samples)."""
    m = np.asarray(masked)
    if m.dtype != bool:
        raise InvalidArgumentError(f"masked must be boolean, got dtype {m.dtype}")
    if m.shape == (n_variants,):
        return np.repeat(m[:, None], n_samples, axis=1)
    if m.shape == (n_variants, n_samples):
        return m
    raise InvalidArgumentError(f"masked must have shape ({n_variants},) or ({n_variants}, {n_samples}), "
                     f"got {m.shape}")


def _validation_mask(genotypes: np.ndarray, mask_rate: float | None, masked: Any | None,
                     seed: int) -> np.ndarray:
    from analysislib.training import make_generator

    n_variants, n_samples = genotypes.shape[:2]
    if masked is not None:
        return _masked_matrix(masked, n_variants, n_samples)
    if mask_rate is None:
        raise InvalidArgumentError("give mask_rate or masked")
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
        Training rows after augmentation and (``hparams.deduplicate``) de-duplication.
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
    # foreach: one update over all of a tile's tensors per step instead of a loop over them (the
    # default on CUDA only). Bit-identical weights on the CPU, and a sixth less training time for
    # a tile of 54 variants.
    return factory(parameters, lr=hparams.learning_rate, weight_decay=hparams.l2, foreach=True)


def _offspring(genotypes: Any, hparams: DAEHyperparameters, genetic_map: Any) -> np.ndarray:
    """Children of the training panel (variants, children, 2), formed once per run."""
    from analysislib.genotype.dataset import create_genotype_dataset
    from analysislib.simulate.genotypes import form_offspring
    from analysislib.training import derive_seed

    if hasattr(genotypes, "data_vars"):
        ds = genotypes
        if "call_genotype_phased" in ds and not bool(np.asarray(ds["call_genotype_phased"]).all()):
            raise InvalidArgumentError("offspring augmentation needs phased genotypes; the dataset has "
                             "unphased calls")
    else:
        if genetic_map is None:
            raise InvalidArgumentError("offspring augmentation from a genotype array needs genetic_map "
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
    old_hp, new_hp = stored_hyperparameters(saved.get("hparams", {})), metadata["hparams"]
    changed = sorted(k for k in set(old_hp) | set(new_hp)
                     if k not in ignore and old_hp.get(k) != new_hp.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old_hp.get(k)!r} -> {new_hp.get(k)!r}" for k in changed)
        raise CheckpointError(f"{latest}: checkpoint was trained with other hyperparameters "
                              f"({detail}); use another checkpoint_dir or resume=False")
    for key in ("n_variants", "training_sha256", "untyped"):
        if saved.get(key) != metadata[key]:
            raise CheckpointError(f"{latest}: checkpoint was trained on other data ({key} "
                                  f"{saved.get(key)!r}, now {metadata[key]!r}); use another "
                                  "checkpoint_dir or resume=False")


@renamed_keywords(num_threads="threads")
@options_from_keywords("device", "threads", "progress")
def train_tile(  # noqa: PLR0913 - the paper's training controls
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
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    genetic_map: Any = None,
    untyped: Any = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    options: RunOptions | None = None,
) -> TrainedTile:
    """Train one tile's sparse denoising autoencoder (Dias et al. 2022, Methods).

    Training set: the allele presence of ``genotypes`` plus ``hparams.offspring`` offspring,
    de-duplicated unless ``hparams.deduplicate`` is False. Every epoch draws a fresh mask per
    sample at the curriculum's rate (:func:`mask_rate_schedule`) from the per-epoch generator of
    the training loop; the loss is reconstruction (CE or FL) + λ1 L1 + β KL on the clean input,
    with L2 as weight decay. At the end of every ``cycle_epochs`` cycle the mean loss is compared
    with the best so far: a checkpoint is written, the learning rate is multiplied by
    ``decay_rate``, and training stops after ``patience`` cycles without improvement, keeping the
    best cycle's weights.

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
    amp, amp_dtype
        Mixed precision (fp16 on CUDA by default, bf16 on the CPU only if asked).
    genetic_map
        Genetic positions (cM per variant, or an ``msprime.RateMap`` with a Dataset) for
        offspring formation when ``genotypes`` is an array.
    untyped
        Optional bool ``(variants,)``: the sites the targets will lack, when they are known (for
        example the sites off the targets' array). Every training mask then takes them before
        any other (:func:`mask_presence`'s ``first``): at a rate below their share, a random
        subset of them, above it all of them and random typed sites besides. None (default):
        uniform masks, for targets of any array, as Dias et al. train.
    on_epoch_end
        Called with each epoch's history record (after this module's fields are added).
    options
        Run-time options (:class:`~analysislib.runtime.RunOptions`; None: the defaults, no
        progress bar). ``device``: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``; inside a
        ``torchrun`` job the process group's device is used and the model is wrapped in DDP,
        each rank taking a slice of every global batch. ``threads``: torch CPU threads while
        training, restored afterwards (``None``: one thread when a batch holds fewer than 2**17
        input values, where threading only adds overhead, otherwise torch's setting).
        ``progress``: show progress bars. The separate ``device``, ``threads`` (or
        ``num_threads``) and ``progress`` keywords of earlier releases are accepted for one
        release.

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

    from analysislib.genotype.dae.model import _new_model
    from analysislib.results import array_checksum  # imports pandas: not at module level
    from analysislib.training import EarlyStopping, fit, is_distributed, select_device, wrap_ddp

    options = options if options is not None else RunOptions(progress=False)
    hp = hparams if hparams is not None else DAEHyperparameters()
    if not isinstance(hp, DAEHyperparameters):
        hp = DAEHyperparameters.from_dict(hp)
    total_epochs = hp.max_epochs if epochs is None else int(epochs)
    if total_epochs < 1:
        raise InvalidArgumentError(f"epochs must be >= 1, got {epochs!r}")
    if monitor not in ("loss", "val_r2"):
        raise InvalidArgumentError(f"monitor must be 'loss' or 'val_r2', got {monitor!r}")
    if monitor == "val_r2" and validation is None:
        raise InvalidArgumentError("monitor='val_r2' needs validation genotypes")

    gt = _check_genotypes(genotypes)
    n_variants = gt.shape[0]
    n_offspring = 0
    if hp.offspring:
        children = _offspring(genotypes, hp, genetic_map)
        gt = np.concatenate([gt, children], axis=1)
        n_offspring = children.shape[1]
    first = None
    if untyped is not None:
        first = np.asarray(untyped)
        if first.dtype != bool or first.shape != (n_variants,):
            raise InvalidArgumentError(f"untyped must be a bool array of the tile's {n_variants} variants, "
                                       f"got dtype {first.dtype} and shape {first.shape}")
    presence = allele_presence(gt)
    if hp.deduplicate:
        presence = np.unique(presence, axis=0)  # distinct training rows, as the authors' code
    alpha = focal_alpha(presence) if hp.loss == "FL" else None

    schedule = mask_rate_schedule(n_variants, hp)

    def rate_at(epoch: int) -> float:
        return round(schedule(epoch), 4)

    val_gt = val_mask = None
    if validation is not None:
        val_gt = _check_genotypes(validation, "validation genotypes")
        if val_gt.shape[0] != n_variants:
            raise InvalidArgumentError(f"validation has {val_gt.shape[0]} variants, training {n_variants}")
        rate = schedule.end if validation_mask is None else validation_mask
        if isinstance(rate, (int, float, np.floating)) and not isinstance(rate, bool):
            val_mask = _validation_mask(val_gt, float(rate), None, hp.seed)
        else:
            val_mask = _masked_matrix(rate, n_variants, val_gt.shape[1])

    if is_distributed():
        from analysislib.training import init_distributed

        run_device = init_distributed(options.device).device
    else:
        run_device = select_device(options.device)
    model = wrap_ddp(_new_model(n_variants, hp), run_device)
    inner = model.module if hasattr(model, "module") else model
    optimizer = _make_optimizer(model.parameters(), hp)
    scheduler = None
    if 0 < hp.decay_rate < 1:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=hp.decay_rate)
    data = torch.from_numpy(presence).to(run_device)
    mask_first = None if first is None else torch.from_numpy(first)
    alpha_t = torch.from_numpy(alpha).to(run_device) if alpha is not None else None

    def make_loader(epoch: int, generator: torch.Generator) -> _EpochBatches:
        from analysislib.training import get_rank, get_world_size

        return _EpochBatches(data, hp.batch_size, generator, get_rank(), get_world_size())

    def train_step(net: torch.nn.Module, batch: torch.Tensor, ctx: Any) -> dict[str, torch.Tensor]:
        masked = mask_presence(batch, rate_at(ctx.epoch), ctx.generator, first=mask_first)
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
        "untyped": None if first is None else np.flatnonzero(first).tolist(),
    }
    if checkpoint_dir is not None and resume:
        _check_resume_metadata(checkpoint_dir, metadata)

    threads = "auto" if options.threads is None else options.threads
    with _cpu_threads(threads, run_device, hp.batch_size * 2 * n_variants):
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
            progress=options.progress,
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
