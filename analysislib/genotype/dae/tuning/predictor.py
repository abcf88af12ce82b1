"""The XGBoost predictor of a tile's autoencoder r² from hyperparameters and tile features.

Dias et al. 2022, "Hyperparameter tuning": categorical hyperparameters one-hot encoded, numeric
ones and the tile features as they are, checked by 10-fold cross-validation (the paper reports
r² = 0.935 ± 0.002 of predicted against observed); the fitted model ranks new hyperparameter sets
per tile (:meth:`HyperparameterPredictor.top_k`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysislib.errors import InvalidArgumentError, NotFittedError
from analysislib.genotype.dae.tuning.features import TILE_FEATURES
from analysislib.genotype.dae.tuning.space import (
    AUTHORS_CODE_SEARCH_SPACE,
    CATEGORICAL_HYPERPARAMETERS,
    SEARCH_SPACE,
)
from analysislib.runtime import renamed_keywords

__all__ = ["CrossValidationResult", "HyperparameterPredictor"]

log = logging.getLogger(__name__)


@dataclass
class CrossValidationResult:
    """k-fold cross-validation of the hyperparameter predictor.

    Attributes
    ----------
    folds
        One row per fold: ``fold``, ``n_train``, ``n_test``, ``r2`` (coefficient of determination
        of predicted against observed r²) and ``pearson_r2`` (squared correlation).
    predictions
        Out-of-fold prediction for every row of the table (same index).
    """

    folds: pd.DataFrame
    predictions: pd.Series

    @property
    def r2(self) -> float:
        """Mean over folds of the coefficient of determination."""
        return float(self.folds["r2"].mean())

    @property
    def r2_se(self) -> float:
        """Standard error over folds of :attr:`r2`."""
        return float(self.folds["r2"].std(ddof=1) / np.sqrt(len(self.folds)))

    @property
    def pearson_r2(self) -> float:
        """Mean over folds of the squared Pearson correlation (predicted vs observed)."""
        return float(self.folds["pearson_r2"].mean())

    @property
    def pearson_r2_se(self) -> float:
        """Standard error over folds of :attr:`pearson_r2`."""
        return float(self.folds["pearson_r2"].std(ddof=1) / np.sqrt(len(self.folds)))


class HyperparameterPredictor:
    """XGBoost regression of a tile's autoencoder r² on hyperparameters and tile features.

    As in the paper: categorical hyperparameters (activation, optimizer, loss) one-hot
    encoded, numeric ones and the tile features as they are, XGBoost with default settings.

    Parameters
    ----------
    hyperparameters
        Hyperparameter columns used as predictors (default: every key of :data:`SEARCH_SPACE`).
    features
        Tile-feature columns (default: those of :data:`TILE_FEATURES` in the fitted table).
    target
        Column to predict.
    seed
        ``random_state`` of XGBoost.
    threads
        XGBoost threads (its ``n_jobs``; ``n_jobs``, the old name here, is accepted for one
        release).
    **xgb_params
        Further ``xgboost.XGBRegressor`` settings (none in the paper).
    """

    @renamed_keywords(n_jobs="threads")
    def __init__(
        self,
        hyperparameters: Sequence[str] | None = None,
        features: Sequence[str] | None = None,
        *,
        target: str = "val_r2",
        seed: int = 0,
        threads: int = 1,
        **xgb_params: Any,
    ) -> None:
        self.hyperparameters = list(hyperparameters) if hyperparameters is not None else list(SEARCH_SPACE)
        self.features = list(features) if features is not None else None
        self.target = target
        self.seed = int(seed)
        self.threads = int(threads)
        self.xgb_params = dict(xgb_params)
        self.categories: dict[str, list[Any]] = {}
        self.columns: list[str] = []
        self.model: Any = None

    # -- design matrix

    def _learn_layout(self, table: pd.DataFrame) -> None:
        absent = [c for c in [*self.hyperparameters, self.target] if c not in table.columns]
        if absent:
            raise InvalidArgumentError(f"the trial table lacks columns {absent}")
        if self.features is None:
            self.features = [name for name in TILE_FEATURES if name in table.columns]
        absent = [c for c in self.features if c not in table.columns]
        if absent:
            raise InvalidArgumentError(f"the trial table lacks feature columns {absent}")
        self.categories = {}
        for name in self.hyperparameters:
            if name in CATEGORICAL_HYPERPARAMETERS:
                known = [*SEARCH_SPACE.get(name, ()), *AUTHORS_CODE_SEARCH_SPACE.get(name, ())]
                seen = pd.unique(table[name].astype(str)).tolist()
                self.categories[name] = list(dict.fromkeys([*map(str, known), *sorted(seen)]))
        columns = []
        for name in self.hyperparameters:
            if name in self.categories:
                columns += [f"{name}_{value}" for value in self.categories[name]]
            else:
                columns.append(name)
        self.columns = columns + list(self.features)

    def design_matrix(self, table: pd.DataFrame) -> pd.DataFrame:
        """Predictor matrix of a table with hyperparameter and feature columns (float32).

        Categories not seen at fit time (nor in the search spaces) get all-zero indicators.
        """
        if not self.columns:
            raise NotFittedError("the predictor has not been fitted")
        absent = [c for c in [*self.hyperparameters, *self.features] if c not in table.columns]
        if absent:
            raise InvalidArgumentError(f"the table lacks predictor columns {absent}")
        parts = {}
        for name in self.hyperparameters:
            if name in self.categories:
                values = table[name].astype(str).to_numpy()
                for category in self.categories[name]:
                    parts[f"{name}_{category}"] = (values == category).astype(np.float32)
            else:
                parts[name] = pd.to_numeric(table[name], errors="raise").to_numpy(dtype=np.float32)
        for name in self.features:
            parts[name] = pd.to_numeric(table[name], errors="raise").to_numpy(dtype=np.float32)
        return pd.DataFrame(parts, index=table.index)[self.columns]

    def _new_model(self) -> Any:
        import xgboost

        return xgboost.XGBRegressor(random_state=self.seed, n_jobs=self.threads, **self.xgb_params)

    def _scored(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows with a finite target (unscored trials carry no information)."""
        y = pd.to_numeric(table[self.target], errors="raise")
        keep = np.isfinite(y.to_numpy(dtype=np.float64))
        if not keep.all():
            log.warning("leaving out %d of %d trials without a finite %r", int((~keep).sum()),
                        len(table), self.target)
        return table[keep]

    def _targets(self, table: pd.DataFrame) -> np.ndarray:
        return pd.to_numeric(table[self.target], errors="raise").to_numpy(dtype=np.float64)

    # -- fitting and prediction

    def fit(self, trials: pd.DataFrame) -> HyperparameterPredictor:
        """Fit on a trial table. Returns ``self``.

        The table is the output of
        :func:`~analysislib.genotype.dae.tuning.trials.run_random_search`. Rows whose target is NaN
        (``status == "unscored"``) are left out.
        """
        trials = self._scored(trials)
        if len(trials) < 2:
            raise InvalidArgumentError(f"need at least 2 trials to fit the predictor, got {len(trials)}")
        self._learn_layout(trials)
        self.model = self._new_model()
        self.model.fit(self.design_matrix(trials), self._targets(trials))
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted r² of each row (hyperparameters plus the tile's features)."""
        if self.model is None:
            raise NotFittedError("the predictor has not been fitted")
        return np.asarray(self.model.predict(self.design_matrix(table)), dtype=np.float64)

    def cross_validate(
        self, trials: pd.DataFrame, k: int = 10, *, seed: int | None = None, group_by_tile: bool = False,
    ) -> CrossValidationResult:
        """k-fold cross-validation on a trial table (the paper's check: 10 folds).

        Each fold fits a fresh model with this predictor's settings on the other folds and
        predicts the held-out rows. ``group_by_tile`` keeps all trials of a tile in one fold
        (a harder test: prediction for unseen tiles); the paper's folds are random rows.
        Does not change this predictor's fitted model. Rows with a NaN target are left out.
        """
        from sklearn.metrics import r2_score
        from sklearn.model_selection import GroupKFold, KFold

        trials = self._scored(trials)
        k = int(k)
        if k < 2:
            raise InvalidArgumentError(f"cross-validation needs k >= 2, got {k}")
        if len(trials) < k:
            raise InvalidArgumentError(f"cannot split {len(trials)} trials into {k} folds")
        layout = HyperparameterPredictor(self.hyperparameters, self.features, target=self.target,
                                         seed=self.seed, threads=self.threads, **self.xgb_params)
        layout._learn_layout(trials)  # one column layout for every fold
        x = layout.design_matrix(trials)
        y = layout._targets(trials)
        shuffle_seed = self.seed if seed is None else int(seed)
        if group_by_tile:
            groups = trials["tile"].astype(str).to_numpy()
            if len(set(groups)) < k:
                raise InvalidArgumentError(f"cannot split {len(set(groups))} tiles into {k} folds")
            splitter = GroupKFold(n_splits=k, shuffle=True, random_state=shuffle_seed)
            folds = splitter.split(x, y, groups)
        else:
            folds = KFold(n_splits=k, shuffle=True, random_state=shuffle_seed).split(x, y)
        predictions = np.full(len(y), np.nan)
        rows = []
        for fold, (train_idx, test_idx) in enumerate(folds):
            model = layout._new_model()
            model.fit(x.iloc[train_idx], y[train_idx])
            predicted = np.asarray(model.predict(x.iloc[test_idx]), dtype=np.float64)
            predictions[test_idx] = predicted
            observed = y[test_idx]
            rows.append({"fold": fold, "n_train": len(train_idx), "n_test": len(test_idx),
                         "r2": float(r2_score(observed, predicted)) if len(test_idx) > 1 else math.nan,
                         "pearson_r2": _pearson_r2(observed, predicted)})
        return CrossValidationResult(folds=pd.DataFrame(rows),
                                     predictions=pd.Series(predictions, index=trials.index, name="predicted"))

    def top_k(
        self,
        tile_features: pd.DataFrame,
        candidates: pd.DataFrame,
        k: int = 10,
        *,
        observed: pd.DataFrame | None = None,
        batch_size: int = 200_000,
    ) -> pd.DataFrame:
        """The ``k`` candidate hyperparameter sets with the highest predicted r², per tile.

        Parameters
        ----------
        tile_features
            One row per tile (index = tile id), :data:`TILE_FEATURES` columns
            (:func:`~analysislib.genotype.dae.tuning.features.tile_feature_table`).
        candidates
            Hyperparameter sets to rank, e.g. ``sample_hyperparameters(500_000, seed)``.
        k
            Sets kept per tile (10 in the paper). Ties keep the earlier candidate.
        observed
            A trial table (:func:`~analysislib.genotype.dae.tuning.trials.run_random_search`); if
            given, each tile's best tested set is added as well (the paper's "single best initially
            tested" combination), marked ``source = "observed"``, unless it is already among the top
            ``k``.
        batch_size
            Candidates predicted at a time.

        Returns
        -------
        pandas.DataFrame
            ``tile``, ``rank`` (1 = best), ``source`` (``"predicted"`` or ``"observed"``),
            ``candidate`` (row label in ``candidates``, or the trial number), the hyperparameter
            columns, ``predicted_r2`` and ``observed_r2`` (for observed rows).
        """
        if self.model is None:
            raise NotFittedError("the predictor has not been fitted")
        k = int(k)
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        if candidates.empty:
            raise InvalidArgumentError("no candidate hyperparameter sets")
        _check_feature_rows_subset(tile_features, self.features)
        hyper = candidates[self.hyperparameters].reset_index(drop=True)
        labels = candidates.index.to_numpy()
        keep = min(k, len(hyper))
        frames = []
        for tile, feature_row in tile_features.iterrows():
            best_scores = np.empty(0)
            best_index = np.empty(0, dtype=np.int64)
            for start in range(0, len(hyper), int(batch_size)):
                chunk = hyper.iloc[start:start + int(batch_size)]
                table = chunk.assign(**{name: feature_row[name] for name in self.features})
                scores = self.predict(table)
                best_scores = np.concatenate([best_scores, scores])
                best_index = np.concatenate([best_index, np.arange(start, start + len(chunk))])
                order = np.lexsort((best_index, -best_scores))[:keep]  # score desc, then candidate order
                best_scores, best_index = best_scores[order], best_index[order]
            chosen = hyper.iloc[best_index].reset_index(drop=True)
            chosen.insert(0, "candidate", labels[best_index])
            chosen.insert(0, "source", "predicted")
            chosen.insert(0, "rank", np.arange(1, keep + 1))
            chosen.insert(0, "tile", tile)
            chosen["predicted_r2"] = best_scores
            chosen["observed_r2"] = np.nan
            if observed is not None:
                extra = self._best_observed(tile, observed, chosen, feature_row)
                if extra is not None:
                    chosen = pd.concat([chosen, extra], ignore_index=True)
            frames.append(chosen)
        return pd.concat(frames, ignore_index=True)

    def _best_observed(self, tile: Hashable, observed: pd.DataFrame, chosen: pd.DataFrame,
                       feature_row: pd.Series) -> pd.DataFrame | None:
        rows = observed[observed["tile"] == tile]
        if rows.empty:
            return None
        best = rows.loc[[rows[self.target].idxmax()]]
        hyper = best[self.hyperparameters].reset_index(drop=True)
        already = (chosen[self.hyperparameters].astype(str).to_numpy()
                   == hyper.astype(str).to_numpy()).all(axis=1).any()
        if already:
            return None
        predicted = self.predict(hyper.assign(**{name: feature_row[name] for name in self.features}))
        extra = hyper.copy()
        extra.insert(0, "candidate", best["trial"].to_numpy() if "trial" in best else best.index.to_numpy())
        extra.insert(0, "source", "observed")
        extra.insert(0, "rank", len(chosen) + 1)
        extra.insert(0, "tile", tile)
        extra["predicted_r2"] = predicted
        extra["observed_r2"] = best[self.target].to_numpy(dtype=np.float64)
        return extra


def _check_feature_rows_subset(tile_features: pd.DataFrame, features: Sequence[str] | None) -> None:
    lacking = [name for name in (features or ()) if name not in tile_features.columns]
    if lacking:
        raise InvalidArgumentError(f"the tile feature table lacks columns {lacking}")


def _pearson_r2(observed: np.ndarray, predicted: np.ndarray) -> float:
    if len(observed) < 2 or np.std(observed) == 0 or np.std(predicted) == 0:
        return math.nan
    return float(np.corrcoef(observed, predicted)[0, 1] ** 2)
