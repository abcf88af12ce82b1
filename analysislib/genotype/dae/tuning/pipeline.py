"""The tuning pipeline of Dias et al. 2022 in one call, and its presets.

:func:`tune_tiles` runs random search, the predictor's cross-validation and fit, top-k selection
and longer training of the selected sets ("Hyperparameter tuning"), at a scale of
:data:`TUNING_PRESETS`; :class:`TuningResult` holds every stage's output.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysislib.genotype.dae.hyperparameters import DAEHyperparameters
from analysislib.genotype.dae.tuning.features import tile_feature_table
from analysislib.genotype.dae.tuning.predictor import CrossValidationResult, HyperparameterPredictor
from analysislib.genotype.dae.tuning.space import _resolve_space, sample_hyperparameters
from analysislib.genotype.dae.tuning.trials import (
    _tile_splits,
    best_hyperparameters,
    run_random_search,
    train_candidates,
)
from analysislib.presets import Presets
from analysislib.runtime import renamed_keywords
from analysislib.training.randomness import derive_seed

__all__ = ["TUNING_PRESETS", "TuningPreset", "TuningResult", "tune_tiles"]


@dataclass(frozen=True)
class TuningPreset:
    """Scale of a tuning run (see :data:`TUNING_PRESETS`).

    Attributes
    ----------
    n_trials
        Random hyperparameter sets trained per tile.
    epochs_per_trial
        Epochs of each random-search trial (one cycle, no stop criterion).
    n_candidates
        New hyperparameter sets ranked by the predictor.
    top_k
        Predicted-best sets per tile that go on to longer training.
    include_best_observed
        Also train each tile's best random-search set.
    final_max_epochs, final_cycle_epochs
        Longer training: epoch limit and cycle length (stop when a cycle does not improve).
    cv_folds
        Folds of the predictor's cross-validation.
    space
        Search space name (:data:`~analysislib.genotype.dae.tuning.space.SEARCH_SPACES`).
    validation_fraction
        Held-out samples when no validation cohort is given.
    include_base
        Also train the ``base`` hyperparameters (the untuned set) among each tile's finalists,
        marked ``source = "base"``, so a tile keeps them unless a tuned set validates better.
        The paper's finalists include the set of its "untuned" model (the best set of the
        coarse search, ``include_best_observed``); when the untuned model is instead a
        default set, this is the same safeguard. Off in both presets.
    """

    n_trials: int
    epochs_per_trial: int
    n_candidates: int
    top_k: int
    include_best_observed: bool
    final_max_epochs: int
    final_cycle_epochs: int
    cv_folds: int
    space: str = "paper"
    validation_fraction: float = 0.2
    include_base: bool = False


#: ``quick`` runs in well under a minute for two small tiles on 2 CPU cores (CI); ``full`` is
#: the paper's scale: 100 trials of 500 epochs per tile, 10-fold CV, 500,000 ranked sets, top 10
#: plus the best tested set trained for up to 35,000 epochs in 500-epoch cycles.
TUNING_PRESETS: Presets[TuningPreset] = Presets("autoencoder tuning", {
    "quick": TuningPreset(n_trials=4, epochs_per_trial=20, n_candidates=2_000, top_k=1,
                          include_best_observed=True, final_max_epochs=60, final_cycle_epochs=20,
                          cv_folds=4),
    "full": TuningPreset(n_trials=100, epochs_per_trial=500, n_candidates=500_000, top_k=10,
                         include_best_observed=True, final_max_epochs=35_000, final_cycle_epochs=500,
                         cv_folds=10),
})


@dataclass
class TuningResult:
    """Everything a :func:`tune_tiles` run produced.

    Attributes
    ----------
    preset
        The scale used.
    features
        :func:`tile_feature_table` of the training genotypes.
    trials
        Random-search table (:func:`run_random_search`).
    predictor
        The :class:`HyperparameterPredictor` fitted on all trials.
    cross_validation
        Its k-fold cross-validation.
    selected
        Candidates chosen per tile (:meth:`HyperparameterPredictor.top_k`).
    finals
        ``selected`` after longer training (:func:`train_candidates`).
    best
        Tile id -> chosen :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters` (the
        ``base`` set itself, seed and schedule included, where it won with ``include_base``).
    """

    preset: TuningPreset
    features: pd.DataFrame
    trials: pd.DataFrame
    predictor: HyperparameterPredictor
    cross_validation: CrossValidationResult
    selected: pd.DataFrame
    finals: pd.DataFrame
    best: dict[Hashable, Any] = field(default_factory=dict)


def _with_base_rows(selected: pd.DataFrame, predictor: HyperparameterPredictor, features: pd.DataFrame,
                    base: DAEHyperparameters | None) -> pd.DataFrame:
    """``selected`` plus one ``source = "base"`` row per tile holding the base set's searched values."""
    base = base if base is not None else DAEHyperparameters()
    values = {name: getattr(base, name) for name in predictor.hyperparameters}
    frames = []
    for tile, rows in selected.groupby("tile", sort=False):
        row = pd.DataFrame([values])
        predicted = predictor.predict(row.assign(**{name: features.loc[tile, name] for name in predictor.features}))
        row.insert(0, "candidate", -1)
        row.insert(0, "source", "base")
        row.insert(0, "rank", int(rows["rank"].max()) + 1)
        row.insert(0, "tile", [tile])
        row["predicted_r2"] = predicted
        row["observed_r2"] = np.nan
        frames += [rows, row]
    return pd.concat(frames, ignore_index=True)


@renamed_keywords(n_jobs="jobs")
def tune_tiles(
    tiles_genotypes: Mapping[Hashable, Any],
    preset: str | TuningPreset = "quick",
    *,
    seed: int = 0,
    jobs: int = 1,
    base: DAEHyperparameters | None = None,
    validation: Mapping[Hashable, Any] | None = None,
    validation_mask: Any = None,
    features: pd.DataFrame | None = None,
    phased: bool = True,
    device: str = "cpu",
    client: Any = None,
    progress: bool | None = False,
) -> TuningResult:
    """The paper's tuning pipeline: random search, predictor, top-k, longer training.

    Parameters
    ----------
    tiles_genotypes
        Tile id -> training genotypes ``(variants, samples, 2)``.
    preset
        A key of :data:`TUNING_PRESETS` or a :class:`TuningPreset`.
    seed, jobs, base, validation, validation_mask, device, client, progress
        As for :func:`run_random_search` (``n_jobs``, the old name of ``jobs``, is accepted for
        one release). The predictor's XGBoost also runs on ``jobs`` threads.
    features
        Precomputed tile features (else computed from the training genotypes with ``phased``).

    Returns
    -------
    TuningResult
    """
    preset = TUNING_PRESETS.resolve(preset)  # PresetError for an unknown name
    splits = _tile_splits(tiles_genotypes, validation, preset.validation_fraction, seed)
    if features is None:
        features = tile_feature_table({tile: train for tile, (train, _) in splits.items()}, phased=phased)
    common: dict[str, Any] = {
        "seed": seed, "jobs": jobs, "base": base, "validation": validation,
        "validation_fraction": preset.validation_fraction, "validation_mask": validation_mask,
        "device": device, "client": client, "progress": progress}
    trials = run_random_search(tiles_genotypes, preset.n_trials, preset.epochs_per_trial,
                               space=preset.space, features=features, **common)
    predictor = HyperparameterPredictor(list(_resolve_space(preset.space)), seed=seed, threads=jobs)
    folds = min(preset.cv_folds, len(trials))
    cross_validation = predictor.cross_validate(trials, k=folds)
    predictor.fit(trials)
    candidates = sample_hyperparameters(preset.n_candidates, derive_seed(int(seed), 4), space=preset.space)
    selected = predictor.top_k(features, candidates, preset.top_k,
                               observed=trials if preset.include_best_observed else None)
    if preset.include_base:
        selected = _with_base_rows(selected, predictor, features, base)
    finals = train_candidates(tiles_genotypes, selected, max_epochs=preset.final_max_epochs,
                              cycle_epochs=preset.final_cycle_epochs, **common)
    return TuningResult(preset=preset, features=features, trials=trials, predictor=predictor,
                        cross_validation=cross_validation, selected=selected, finals=finals,
                        best=_keep_base_where_it_won(best_hyperparameters(finals, base), finals, base))


def _keep_base_where_it_won(best: dict[Hashable, Any], finals: pd.DataFrame,
                            base: DAEHyperparameters | None) -> dict[Hashable, Any]:
    """Tiles whose winning finalist is the ``base`` row get ``base`` itself (its seed and schedule),
    so they reproduce the untuned model instead of retraining its values from another seed."""
    if "source" not in finals.columns or not (finals["source"] == "base").any():
        return best
    base = base if base is not None else DAEHyperparameters()
    winners = finals.loc[finals.groupby("tile", sort=False)["val_r2"].idxmax()]
    return {tile: base if source == "base" else best[tile]
            for tile, source in zip(winners["tile"], winners["source"], strict=True)}
