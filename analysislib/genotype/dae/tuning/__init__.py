"""Hyperparameter search for the per-tile denoising autoencoders (Dias et al. 2022).

Follows the paper's Methods ("Hyperparameter initialization and grid search", "Hyperparameter
tuning", Table 1) and the authors' repository ``TorkamaniLab/Imputation_Autoencoder`` (the
search space in ``autoencoder_tuning_pipeline/1000_random_hyperparameters.tsv`` and the MAF bins
of their XGBoost profiling features):

1. random search: every tile is trained with randomly drawn hyperparameter sets for a short,
   fixed number of epochs (500 in the paper, one masking cycle, no stop criterion) and scored by
   the mean per-variant r² on held-out samples (:func:`run_random_search`);
2. per-tile features describe each tile's LD structure (:func:`tile_features`): variant count,
   MAF-bin proportions, mean pairwise |r|, principal components for 90% of the variance,
   variance explained by the first two components, unique haplotypes and diplotypes;
3. an XGBoost regressor predicts a tile's r² from hyperparameters (categoricals one-hot) plus
   tile features, checked by 10-fold cross-validation (:class:`HyperparameterPredictor`; the
   paper reports r² = 0.935 ± 0.002 of predicted against observed);
4. the predictor ranks many new hyperparameter sets per tile (500,000 in the paper) and the
   top k (10) plus the best tested set of each tile go on to longer training with the cycle
   stop criterion (:meth:`HyperparameterPredictor.top_k`, :func:`train_candidates`).

:func:`tune_tiles` runs the four steps with a preset of :data:`TUNING_PRESETS`: ``quick`` for CI
and ``full`` at the paper's scale. Models are trained by
:func:`analysislib.genotype.dae.fit.train_tile`. The modules: search spaces and random draws
(:mod:`~analysislib.genotype.dae.tuning.space`), tile features
(:mod:`~analysislib.genotype.dae.tuning.features`), training runs
(:mod:`~analysislib.genotype.dae.tuning.trials`), the predictor
(:mod:`~analysislib.genotype.dae.tuning.predictor`) and the presets and driver
(:mod:`~analysislib.genotype.dae.tuning.pipeline`).
"""

from __future__ import annotations

from analysislib.genotype.dae.tuning.features import (
    TILE_FEATURES,
    XGB_MAF_BINS,
    dataset_tile_features,
    tile_feature_table,
    tile_features,
    tile_genotypes,
)
from analysislib.genotype.dae.tuning.pipeline import (
    TUNING_PRESETS,
    TuningPreset,
    TuningResult,
    tune_tiles,
)
from analysislib.genotype.dae.tuning.predictor import (
    CrossValidationResult,
    HyperparameterPredictor,
)
from analysislib.genotype.dae.tuning.space import (
    AUTHORS_CODE_SEARCH_SPACE,
    CATEGORICAL_HYPERPARAMETERS,
    SEARCH_SPACE,
    SEARCH_SPACES,
    sample_hyperparameters,
    to_hyperparameters,
)
from analysislib.genotype.dae.tuning.trials import (
    best_hyperparameters,
    run_random_search,
    split_validation_samples,
    train_candidates,
)

__all__ = [
    "AUTHORS_CODE_SEARCH_SPACE",
    "CATEGORICAL_HYPERPARAMETERS",
    "SEARCH_SPACE",
    "SEARCH_SPACES",
    "TILE_FEATURES",
    "TUNING_PRESETS",
    "XGB_MAF_BINS",
    "CrossValidationResult",
    "HyperparameterPredictor",
    "TuningPreset",
    "TuningResult",
    "best_hyperparameters",
    "dataset_tile_features",
    "run_random_search",
    "sample_hyperparameters",
    "split_validation_samples",
    "tile_feature_table",
    "tile_features",
    "tile_genotypes",
    "to_hyperparameters",
    "train_candidates",
    "tune_tiles",
]


