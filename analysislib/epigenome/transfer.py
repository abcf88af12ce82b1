"""Transfer learning across individuals with eDICE: leave-one-tissue-out imputation (ENTEx task).

Follows the eDICE paper (Results, "eDICE transfers to individual-specific imputation"; Methods,
"Hyperparameters and training details"; Fig. 1b and 5e) and the authors' code in
``alex-hh/eDICE`` (``scripts/entex_LOO_tissue_transfer.py`` and ``TissueLOO_TrainInMemGenerator``).

The task: impute every track of a *target tissue* in a *target individual* that has no
measurement in that tissue, using the target individual's other tissues and a *training
individual* measured in all tissues.

1. **Pre-train** eDICE on all tracks of the training individual with leave-one-tissue-out
   masking: each batch picks one tissue at random, all its tracks become targets and all other
   tracks inputs (:func:`analysislib.epigenome.edice.train_edice`, ``masking="tissue"``).
2. **Fine-tune** a copy on the target individual's tracks outside the target tissue, with the
   same masking, a lower learning rate and early stopping on the training loss, keeping the best
   weights (the code's ``EarlyStopping(patience=5, monitor='loss')``).
3. **Impute** the target tissue's tracks from the target individual's other tissues.

Baselines (paper Fig. 5e): the training individual's own track for the same tissue and assay
("Training Ind. Track"), and the average of the target assay over the target individual's other
tissues (an individualised AVG, :class:`~analysislib.epigenome.imputer.AverageImputer`).

Presets (:data:`TRANSFER_PRESETS`): ``entex`` is the code's configuration (eDICE ``entex``:
embedding 64, decoder 512, 4 heads, seed 43; 20 pre-training epochs at 3e-4; fine-tuning
15 epochs at 3e-5 with patience 5). The paper's text gives 128/512 and 30 pre-training epochs;
the code is followed. ``quick`` is the small eDICE ``quick`` architecture (6 pre-training epochs
at 1e-3, batches of 128, on 10,000 bins, then 4 fine-tuning epochs at 1e-4: the same tenfold rate
reduction), without the quick preset's settings for a new cell type, which would drop the target
tissue's identity embedding.

Scores here are the two of Fig. 5e, MSE and Pearson r on the arcsinh scale, per imputed track;
:func:`analysislib.epigenome.metrics.score_tracks` gives the full set from the same predictions,
and :func:`individual_specific_scores` the AUPRC for individual-specific peaks of Fig. 6c–d.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.edice import (
    EDICEConfig,
    EDICEImputer,
    _dense_signal,
    edice_config,
    train_edice,
)
from analysislib.epigenome.imputer import AverageImputer, prediction_array
from analysislib.epigenome.occupancy import (
    MIN_SPECIFIC_LENGTH,
    individual_specific_auprc,
    individual_specific_regions,
)
from analysislib.epigenome.peaks import call_peaks
from analysislib.epigenome.tensor import hide_tracks, to_arcsinh
from analysislib.errors import InvalidArgumentError, NotFittedError
from analysislib.presets import Presets
from analysislib.training import seed_everything

__all__ = [
    "TRACK_KEYS",
    "TRANSFER_LABELS",
    "TRANSFER_METHODS",
    "TRANSFER_PRESETS",
    "TransferConfig",
    "TransferRun",
    "fine_tune",
    "individual_specific_scores",
    "leave_one_tissue_out",
    "pretrain",
    "run_transfer_experiment",
    "transfer_config",
    "transfer_scores",
]

#: Method names of a :class:`TransferRun`: eDICE with transfer and the two baselines.
TRANSFER_METHODS = ("edice_transfer", "training_individual_track", "individual_avg")
#: Names of the methods (and of the positive-fraction baseline of Fig. 6) in eDICE Figs. 5e, 6.
TRANSFER_LABELS = {"edice_transfer": "eDICE (transfer)",
                   "training_individual_track": "Training Ind. Track",
                   "individual_avg": "AVG (individual)", "positive_fraction": "Pos. Fraction"}
#: Columns that name one imputed track and method in the score tables.
TRACK_KEYS = ("training_individual", "target_individual", "tissue", "assay", "method")


@dataclass(frozen=True)
class TransferConfig:
    """eDICE settings for pre-training plus the fine-tuning schedule.

    Attributes
    ----------
    edice
        Architecture and pre-training settings (``epochs`` and ``lr`` are the pre-training
        ones).
    ft_lr, ft_epochs
        Fine-tuning learning rate and maximum epochs.
    ft_patience
        Early-stopping patience on the fine-tuning loss (``None``: never stop early).
    """

    edice: EDICEConfig
    ft_lr: float = 3e-5
    ft_epochs: int = 15
    ft_patience: int | None = 5

    def __post_init__(self) -> None:
        if not self.ft_lr > 0:
            raise InvalidArgumentError(f"ft_lr must be positive, got {self.ft_lr!r}")
        if int(self.ft_epochs) != self.ft_epochs or self.ft_epochs < 0:
            raise InvalidArgumentError(f"ft_epochs must be a non-negative integer, got {self.ft_epochs!r}")

    def to_dict(self) -> dict[str, Any]:
        """Flat settings for the results store (eDICE fields plus ``ft_*``)."""
        return {**self.edice.to_dict(), "ft_lr": self.ft_lr, "ft_epochs": self.ft_epochs,
                "ft_patience": self.ft_patience}


#: ``entex`` is the paper's ENTEx transfer experiment (also answers to ``full`` and ``paper``).
TRANSFER_PRESETS: Presets[dict[str, Any]] = Presets("eDICE transfer", {
    "entex": {"edice_preset": "entex", "edice": {}, "ft_lr": 3e-5, "ft_epochs": 15,
              "ft_patience": 5},
    # The quick eDICE preset's new-cell-type settings do not apply here: the target tissue's
    # identity embedding, learned on the training individual, is what transfers.
    "quick": {"edice_preset": "quick",
              "edice": {"epochs": 6, "train_bins": 10_000, "lr": 1e-3, "batch_size": 128,
                        "patience": None, "sparse_cell_fraction": 0.0, "identity_min_marks": 0},
              "ft_lr": 1e-4, "ft_epochs": 4, "ft_patience": 5},
}, aliases={"full": "entex", "paper": "entex"})


def transfer_config(preset: str = "entex", *, ft_lr: float | None = None,
                    ft_epochs: int | None = None, ft_patience: int | str | None = "preset",
                    **edice_overrides: Any) -> TransferConfig:
    """Build a :class:`TransferConfig` from :data:`TRANSFER_PRESETS` and overrides.

    Parameters
    ----------
    preset
        ``"entex"`` or ``"quick"``.
    ft_lr, ft_epochs, ft_patience
        Replace the preset's fine-tuning settings (``ft_patience=None`` disables early
        stopping).
    **edice_overrides
        :class:`~analysislib.epigenome.edice.EDICEConfig` fields.
    """
    spec = TRANSFER_PRESETS[preset]  # PresetError for an unknown name
    edice = edice_config(spec["edice_preset"], **{**spec["edice"], **edice_overrides})
    return TransferConfig(
        edice=edice,
        ft_lr=spec["ft_lr"] if ft_lr is None else ft_lr,
        ft_epochs=spec["ft_epochs"] if ft_epochs is None else ft_epochs,
        ft_patience=spec["ft_patience"] if ft_patience == "preset" else ft_patience)


def _individual(ds: xr.Dataset, name: str) -> xr.Dataset:
    if "individual" not in ds.dims:
        raise InvalidArgumentError("transfer learning needs a dataset with an 'individual' dimension "
                         "(simulate_epigenome('personal') makes one)")
    names = [str(i) for i in ds["individual"].values]
    if name not in names:
        raise InvalidArgumentError(f"individual {name!r} is not in the dataset (individuals {names})")
    return ds.sel(individual=name)


def pretrain(individual_ds: xr.Dataset, config: TransferConfig, *, device: str = "auto",
             checkpoint_dir: str | None = None, resume: bool = True,
             progress: bool | None = None) -> EDICEImputer:
    """Pre-train eDICE on one individual's tracks with leave-one-tissue-out masking.

    Parameters
    ----------
    individual_ds
        Signal dataset ``(cell, assay, bin)`` of the training individual.
    config
        Transfer settings; ``config.edice`` gives the model, epochs and learning rate.
    device, checkpoint_dir, resume, progress
        As for :class:`~analysislib.epigenome.edice.EDICEImputer`.

    Returns
    -------
    EDICEImputer
        The fitted imputer (its :attr:`history` holds the pre-training epochs).
    """
    values, observed = _dense_signal(individual_ds, "transfer pre-training")
    imputer = EDICEImputer(device=device, checkpoint_dir=checkpoint_dir, resume=resume,
                           progress=progress, config=config.edice)
    model = imputer.build_model(individual_ds["cell"].values, individual_ds["assay"].values)
    result = train_edice(model, values, observed, config.edice, masking="tissue",
                         monitor="loss", checkpoint_dir=checkpoint_dir, resume=resume,
                         device=imputer._device(), progress=progress,
                         metadata={"stage": "pretrain", "cells": imputer.cells_,
                                   "assays": imputer.assays_})
    imputer.fit_result, imputer.history = result, list(result.history)
    imputer.training_data = to_arcsinh(individual_ds)
    model.eval()
    return imputer


def fine_tune(pretrained: EDICEImputer, target_ds: xr.Dataset, config: TransferConfig, *,
              progress: bool | None = None) -> EDICEImputer:
    """Fine-tune a copy of a pre-trained eDICE on the target individual's observed tracks.

    Parameters
    ----------
    pretrained
        Output of :func:`pretrain` (left unchanged).
    target_ds
        Signal dataset ``(cell, assay, bin)`` of the target individual with the target tissue
        already hidden; its cells and assays must be the pre-trained model's.
    config
        ``ft_lr``, ``ft_epochs`` and ``ft_patience`` set the schedule; the fine-tuning random
        streams use ``edice.seed + 1``.

    Returns
    -------
    EDICEImputer
        A new imputer holding the fine-tuned weights (best epoch by training loss).
    """
    if pretrained.model is None:
        raise NotFittedError("fine_tune needs a pre-trained imputer (call pretrain first)")
    cells = [str(c) for c in target_ds["cell"].values]
    assays = [str(a) for a in target_ds["assay"].values]
    if cells != pretrained.cells_ or assays != pretrained.assays_:
        raise InvalidArgumentError(f"target individual's cells {cells} / assays {assays} differ from the "
                         f"pre-trained model's {pretrained.cells_} / {pretrained.assays_}")
    values, observed = _dense_signal(target_ds, "transfer fine-tuning")
    tuned = copy.copy(pretrained)
    tuned.model = copy.deepcopy(pretrained.model)
    tuned.checkpoint_dir = None
    cfg = replace(config.edice, patience=config.ft_patience, seed=config.edice.seed + 1)
    seed_everything(cfg.seed)  # dropout draws from the global generator: same run, same result
    result = train_edice(tuned.model, values, observed, cfg, masking="tissue", monitor="loss",
                         epochs=config.ft_epochs, lr=config.ft_lr,
                         device=next(tuned.model.parameters()).device, progress=progress)
    tuned.fit_result, tuned.history = result, list(result.history)
    tuned.training_data = to_arcsinh(target_ds)
    tuned.model.eval()
    return tuned


@dataclass
class TransferRun:
    """Outcome of one leave-one-tissue-out transfer.

    Attributes
    ----------
    training_individual, target_individual, target_tissue
        The combination imputed.
    truth
        Arcsinh DataArray ``(track, bin)`` of the target individual's measured tracks.
    predictions
        Method name (:data:`TRANSFER_METHODS`) -> arcsinh DataArray ``(track, bin)``; a
        baseline that cannot be formed for a track holds NaN there.
    pretrain_history, finetune_history
        Per-epoch records of the two training stages.
    """

    training_individual: str
    target_individual: str
    target_tissue: str
    truth: xr.DataArray
    predictions: dict[str, xr.DataArray]
    pretrain_history: list[dict[str, Any]] = field(default_factory=list)
    finetune_history: list[dict[str, Any]] = field(default_factory=list)


def leave_one_tissue_out(
    ds: xr.Dataset,
    *,
    training_individual: str,
    target_individual: str,
    target_tissue: str,
    config: TransferConfig | None = None,
    pretrained: EDICEImputer | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> TransferRun:
    """Impute one tissue of one individual by transfer from another individual.

    Parameters
    ----------
    ds
        Signal dataset with dims ``(individual, cell, assay, bin)``.
    training_individual, target_individual
        Individuals to pre-train on and to impute (must differ).
    target_tissue
        Cell type whose tracks are hidden in the target individual and imputed.
    config
        Transfer settings (default ``transfer_config("entex")``).
    pretrained
        A model pre-trained on ``training_individual`` to reuse (pre-training is the costly
        step and does not depend on the target).
    device, progress
        Torch device preference and progress bars.

    Returns
    -------
    TransferRun
    """
    config = config if config is not None else transfer_config("entex")
    if training_individual == target_individual:
        raise InvalidArgumentError("training and target individual must differ")
    train_ds = _individual(ds, training_individual)
    target_full = _individual(ds, target_individual)
    cells = [str(c) for c in ds["cell"].values]
    if target_tissue not in cells:
        raise InvalidArgumentError(f"tissue {target_tissue!r} is not in the dataset (cells {cells})")
    observed = target_full["observed"].sel(cell=target_tissue)
    assays = [str(a) for a, ok in zip(ds["assay"].values, observed.values, strict=True) if ok]
    if not assays:
        raise InvalidArgumentError(f"{target_individual} has no measured track in {target_tissue} to "
                         "evaluate")
    targets = [(target_tissue, a) for a in assays]
    target_ds = hide_tracks(target_full, targets)
    if pretrained is None:
        pretrained = pretrain(train_ds, config, device=device, progress=progress)
    tuned = fine_tune(pretrained, target_ds, config, progress=progress)
    predictions = {"edice_transfer": tuned.predict(targets, observed=target_ds)}

    truth_ds = to_arcsinh(target_full)
    train_arcsinh = to_arcsinh(train_ds)
    truth = np.stack([truth_ds["signal"].sel(cell=c, assay=a).values for c, a in targets])
    baseline = np.full_like(truth, np.nan, dtype=np.float32)
    for row, (cell, assay) in enumerate(targets):
        if bool(train_ds["observed"].sel(cell=cell, assay=assay)):
            baseline[row] = train_arcsinh["signal"].sel(cell=cell, assay=assay).values
    predictions["training_individual_track"] = prediction_array(
        baseline, targets, target_ds, "training_individual_track")
    average = AverageImputer().fit(target_ds)
    avg = np.full_like(truth, np.nan, dtype=np.float32)
    for row, track in enumerate(targets):
        try:
            avg[row] = average.predict([track], observed=target_ds).values[0]
        except ValueError:  # the assay is measured in no other tissue of this individual
            continue
    predictions["individual_avg"] = prediction_array(avg, targets, target_ds, "individual_avg")
    return TransferRun(
        training_individual=training_individual, target_individual=target_individual,
        target_tissue=target_tissue,
        truth=prediction_array(truth, targets, target_ds, "truth"),
        predictions=predictions, pretrain_history=list(pretrained.history),
        finetune_history=list(tuned.history))


def transfer_scores(run: TransferRun) -> pd.DataFrame:
    """MSE and Pearson r (arcsinh) of every method on every imputed track of a run.

    Returns
    -------
    pandas.DataFrame
        Columns ``training_individual``, ``target_individual``, ``tissue``, ``assay``,
        ``method``, ``mse``, ``pearson``, ``n``; tracks a baseline could not predict are left
        out.
    """
    rows = []
    truth = run.truth.values.astype(np.float64)
    for method, pred in run.predictions.items():
        values = pred.values.astype(np.float64)
        for i, assay in enumerate(run.truth["assay"].values):
            y, p = truth[i], values[i]
            ok = np.isfinite(y) & np.isfinite(p)
            if not ok.any():
                continue
            y, p = y[ok], p[ok]
            pearson = (float(np.corrcoef(y, p)[0, 1]) if y.std() > 0 and p.std() > 0
                       else float("nan"))
            rows.append({"training_individual": run.training_individual,
                         "target_individual": run.target_individual,
                         "tissue": run.target_tissue, "assay": str(assay), "method": method,
                         "mse": float(np.mean((y - p) ** 2)), "pearson": pearson,
                         "n": int(ok.sum())})
    return pd.DataFrame(rows, columns=["training_individual", "target_individual", "tissue",
                                       "assay", "method", "mse", "pearson", "n"])


def run_transfer_experiment(
    ds: xr.Dataset,
    *,
    config: TransferConfig | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    tissues: Sequence[str] | None = None,
    extra_scores: Callable[[TransferRun], pd.DataFrame] | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Score every (training individual, target individual, tissue) combination.

    As in the paper, each ordered pair of individuals and each tissue is one leave-one-tissue-out
    transfer; pre-training is done once per training individual and reused.

    Parameters
    ----------
    ds
        Signal dataset ``(individual, cell, assay, bin)``.
    config
        Transfer settings (default ``transfer_config("entex")``).
    pairs
        ``(training, target)`` individual pairs; default every ordered pair.
    tissues
        Tissues to hold out; default all.
    extra_scores
        More scores of each run, e.g. :func:`individual_specific_scores`: a table keyed by
        track and method, merged (outer) with the :func:`transfer_scores` rows.
    device, progress
        Torch device preference and progress bars.

    Returns
    -------
    pandas.DataFrame
        Rows of :func:`transfer_scores` for every run (with ``extra_scores``' columns).
    """
    config = config if config is not None else transfer_config("entex")
    if "individual" not in ds.dims:
        raise InvalidArgumentError("transfer learning needs a dataset with an 'individual' dimension")
    people = [str(i) for i in ds["individual"].values]
    pairs = list(pairs) if pairs is not None else [(a, b) for a in people for b in people
                                                   if a != b]
    tissues = list(tissues) if tissues is not None else [str(c) for c in ds["cell"].values]
    pretrained: dict[str, EDICEImputer] = {}
    tables = []
    for training, target in pairs:
        if training not in pretrained:
            pretrained[training] = pretrain(_individual(ds, training), config, device=device,
                                            progress=progress)
        for tissue in tissues:
            run = leave_one_tissue_out(ds, training_individual=training,
                                       target_individual=target, target_tissue=tissue,
                                       config=config, pretrained=pretrained[training],
                                       device=device, progress=progress)
            scores = transfer_scores(run)
            if extra_scores is not None:  # an outer join that keeps the tracks' order
                keys = list(TRACK_KEYS)
                scores = pd.concat([scores.set_index(keys), extra_scores(run).set_index(keys)],
                                   axis=1, sort=False).reset_index()
            tables.append(scores)
    return pd.concat(tables, ignore_index=True)


def individual_specific_scores(
    run: TransferRun,
    ds: xr.Dataset,
    *,
    peak_options: Mapping[str, Any] | None = None,
    min_length: int = MIN_SPECIFIC_LENGTH,
) -> pd.DataFrame:
    """AUPRC of every method of a run for individual-specific peaks (eDICE Fig. 6c–d).

    For each imputed track, peaks are called on the measured track of the target individual and
    on the training individual's track of the same tissue and assay; the labels are
    :func:`~analysislib.epigenome.occupancy.individual_specific_regions` and the scores
    :func:`~analysislib.epigenome.occupancy.individual_specific_auprc`. The method
    ``positive_fraction`` is the random scorer's AUPRC, the share of positive bins.

    Parameters
    ----------
    run
        One leave-one-tissue-out transfer.
    ds
        The dataset ``(individual, cell, assay, bin)`` the run was made on. When it holds the
        simulator's ``individual_peak`` truth, the share of positive bins on a planted difference
        of either individual (``planted_share``) and that share among all scored bins
        (``genome_share``) are added.
    peak_options
        :func:`~analysislib.epigenome.peaks.call_peaks` arguments.
    min_length
        Shortest individual-specific peak kept, in bp (paper: 150).

    Returns
    -------
    pandas.DataFrame
        :data:`TRACK_KEYS` and ``auprc``, ``positive_fraction``, ``n_positive``,
        ``n_evaluated`` (and the truth shares), one row per track and method.
    """
    options = dict(peak_options or {})
    people = (run.target_individual, run.training_individual)

    def peaks(person: str, assay: str) -> pd.DataFrame:
        track = ds["signal"].sel(individual=person, cell=run.target_tissue, assay=assay)
        return call_peaks(track.assign_attrs(scale=ds.attrs["scale"]), **options)

    changed = ((ds["individual_peak"].sel(individual=list(people)) != 0).any("individual").values
               if "individual_peak" in ds else None)
    rows = []
    for i, assay in enumerate(str(a) for a in run.truth["assay"].values):
        regions = individual_specific_regions(
            peaks(run.target_individual, assay), peaks(run.training_individual, assay),
            ds["bin_start"].values, int(ds.attrs.get("bin_size", 25)),
            bin_chrom=ds["bin_chrom"].values, min_length=min_length)
        key = {"training_individual": run.training_individual,
               "target_individual": run.target_individual, "tissue": run.target_tissue,
               "assay": assay}
        truth = {} if changed is None else {
            "planted_share": (float(changed[regions.labels].mean()) if regions.n_positive
                              else float("nan")),
            "genome_share": float(changed[regions.evaluated].mean())}
        for method, prediction in run.predictions.items():
            rows.append({**key, "method": method,
                         **individual_specific_auprc(regions, prediction.values[i]), **truth})
        rows.append({**key, "method": "positive_fraction", "auprc": regions.positive_fraction,
                     "positive_fraction": regions.positive_fraction,
                     "n_positive": float(regions.n_positive),
                     "n_evaluated": float(regions.evaluated.sum()), **truth})
    return pd.DataFrame(rows)
