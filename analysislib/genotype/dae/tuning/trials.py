"""Training runs of the tuning: random search over tiles, longer training of candidates, the best.

Dias et al. 2022, Methods "Hyperparameter initialization and grid search" and "Hyperparameter
tuning": :func:`run_random_search` trains every tile with random hyperparameter sets for a short,
fixed number of epochs and scores them on held-out samples; :func:`train_candidates` trains the
sets the predictor picked for longer, with the cycle stop criterion; :func:`best_hyperparameters`
keeps each tile's best. Tasks run inline, on a process pool or on a ``dask.distributed``
cluster (:func:`analysislib.runtime.run_tasks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dae.fit import _check_genotypes
from analysislib.genotype.dae.hyperparameters import DAEHyperparameters
from analysislib.genotype.dae.tuning.features import TILE_FEATURES, tile_feature_table
from analysislib.genotype.dae.tuning.space import (
    _resolve_space,
    sample_hyperparameters,
    to_hyperparameters,
)
from analysislib.runtime import RunOptions, renamed_keywords, run_tasks, torch_threads
from analysislib.training.randomness import derive_seed

__all__ = [
    "best_hyperparameters",
    "run_random_search",
    "split_validation_samples",
    "train_candidates",
]


def split_validation_samples(n_samples: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random split of sample indices into training and validation (sorted index arrays).

    The same split is used for every tile, so validation individuals never train any tile.
    The first ``round(n_samples × fraction)`` samples of a random permutation are held out
    (the rule of :func:`~analysislib.genotype.dae.plan.train_bundle`'s hold-out, with a seed
    derived from ``seed``).
    """
    from analysislib.genotype.masking import _random_holdout  # imports xarray: not at module level

    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"validation fraction must lie in (0, 1), got {fraction}")
    n_val = round(n_samples * fraction)
    if n_val < 1 or n_val >= n_samples:
        raise InvalidArgumentError(f"cannot hold out {fraction:g} of {n_samples} samples for validation")
    return _random_holdout(n_samples, n_val, derive_seed(int(seed), 0x5A11))


# Columns a training run adds to its row.
_RUN_COLUMNS = ("val_r2", "status", "epochs_trained", "best_epoch", "stopped_early", "final_loss",
                "message", "seconds")


@dataclass
class _Task:
    """Trials of one tile run in one process."""

    tile: Hashable
    train: np.ndarray
    validation: np.ndarray
    validation_mask: Any
    runs: list[tuple[Any, dict[str, Any]]]  # (trial id, full hyperparameter dict)
    epochs: int
    options: RunOptions  # device and torch threads of the task's process; no client


def _run_task(task: _Task) -> list[dict[str, Any]]:
    """Train and score each run of a task (top level so process pools can pickle it)."""
    with torch_threads(task.options.threads):
        return [_run_trial(task, trial, values) for trial, values in task.runs]


def _run_trial(task: _Task, trial: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Train and score one run of a task."""
    from analysislib.genotype.dae.fit import train_tile

    hparams = DAEHyperparameters.from_dict(values)
    started = time.perf_counter()
    row: dict[str, Any] = {"tile": task.tile, "trial": trial}
    try:
        trained = train_tile(task.train, hparams, epochs=task.epochs, validation=task.validation,
                             validation_mask=task.validation_mask,
                             options=task.options.replace(threads=None))
    except FloatingPointError as error:  # the training loop stops on a non-finite loss
        row.update(status="diverged", val_r2=0.0, epochs_trained=math.nan, best_epoch=math.nan,
                   stopped_early=False, final_loss=math.nan,
                   message=str(error).splitlines()[0][:200])
    else:
        history = trained.history
        final_loss = float(history["loss"].iloc[-1]) if len(history) else math.nan
        # r² of the weights train_tile keeps, on its fixed validation mask
        r2 = float(trained.val_r2)
        if math.isfinite(r2):
            status, message = "ok", ""
        elif not math.isfinite(final_loss):
            status, message, r2 = "diverged", "non-finite loss", 0.0
        else:
            status, message = "unscored", "no masked validation variant is polymorphic"
        row.update(status=status, val_r2=r2, epochs_trained=int(trained.epochs_completed),
                   best_epoch=trained.best_epoch, stopped_early=bool(trained.stopped_early),
                   final_loss=final_loss, message=message)
    row["seconds"] = time.perf_counter() - started
    return row


def _tile_splits(
    tiles_genotypes: Mapping[Hashable, Any],
    validation: Mapping[Hashable, Any] | None,
    validation_fraction: float,
    seed: int,
) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
    if not tiles_genotypes:
        raise InvalidArgumentError("no tiles given")
    splits = {}
    split_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for tile, genotypes in tiles_genotypes.items():
        gt = _check_genotypes(genotypes, f"tile {tile!r} genotypes", biallelic=False)
        if validation is not None:
            if tile not in validation:
                raise InvalidArgumentError(f"tile {tile!r} has no validation genotypes")
            val = _check_genotypes(validation[tile], f"tile {tile!r} validation genotypes", biallelic=False)
            if val.shape[0] != gt.shape[0]:
                raise InvalidArgumentError(f"tile {tile!r}: {val.shape[0]} validation variants but {gt.shape[0]} training ones")
            splits[tile] = (gt, val)
            continue
        n = gt.shape[1]
        if n not in split_cache:
            split_cache[n] = split_validation_samples(n, validation_fraction, seed)
        train_idx, val_idx = split_cache[n]
        splits[tile] = (np.ascontiguousarray(gt[:, train_idx]), np.ascontiguousarray(gt[:, val_idx]))
    return splits


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _train_all(tasks: list[_Task], jobs: int, client: Any, progress: bool | None, label: str
               ) -> list[dict[str, Any]]:
    """Every task's rows, through :func:`~analysislib.runtime.run_tasks`, with a bar over models."""
    from analysislib.training.loop import progress_enabled

    show = progress_enabled(progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(t.runs) for t in tasks), desc=label, unit="model")
    rows: list[dict[str, Any]] = []
    try:
        # one task runs here, as does jobs=1; at most one process per task
        for result in run_tasks(_run_task, tasks, jobs=min(jobs, len(tasks)), client=client):
            rows += result
            if bar is not None:
                bar.update(len(result))
    finally:
        if bar is not None:
            bar.close()
    return rows


def _make_tasks(
    splits: Mapping[Hashable, tuple[np.ndarray, np.ndarray]],
    runs_per_tile: Mapping[Hashable, list[tuple[Any, dict[str, Any]]]],
    *,
    epochs: int,
    validation_mask: Any,
    device: str,
    jobs: int,
    runs_per_task: int | None,
) -> list[_Task]:
    n_tiles = max(len(runs_per_tile), 1)
    # several workers share the CPUs; one process keeps torch's setting
    options = RunOptions(device=device, threads=RunOptions(jobs=jobs).threads_per_job() if jobs > 1 else None,
                         progress=False)
    tasks = []
    for tile, runs in runs_per_tile.items():
        if not runs:
            continue
        size = runs_per_task or max(1, math.ceil(len(runs) / max(1, math.ceil(jobs / n_tiles))))
        train, val = splits[tile]
        mask = validation_mask.get(tile) if isinstance(validation_mask, Mapping) else validation_mask
        for chunk in _chunks(runs, size):
            tasks.append(_Task(tile=tile, train=train, validation=val, validation_mask=mask, runs=chunk,
                               epochs=int(epochs), options=options))
    return tasks


def _order_rows(rows: list[dict[str, Any]], tiles: Sequence[Hashable]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    rank = {tile: i for i, tile in enumerate(tiles)}
    table["_rank"] = table["tile"].map(rank)
    return table.sort_values(["_rank", "trial"], kind="stable").drop(columns="_rank").reset_index(drop=True)


@renamed_keywords(n_jobs="jobs")
def run_random_search(  # noqa: PLR0913 - the authors' search protocol
    tiles_genotypes: Mapping[Hashable, Any],
    n_trials: int,
    epochs_per_trial: int,
    seed: int = 0,
    *,
    jobs: int = 1,
    space: str | Mapping[str, Sequence[Any]] = "paper",
    base: DAEHyperparameters | None = None,
    shared_trials: bool = True,
    validation: Mapping[Hashable, Any] | None = None,
    validation_fraction: float = 0.2,
    validation_mask: Any = None,
    features: pd.DataFrame | None = None,
    device: str = "cpu",
    trials_per_task: int | None = None,
    client: Any = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Random hyperparameter search over tiles (the paper's coarse-grid search).

    Every tile is trained with ``n_trials`` hyperparameter sets for exactly
    ``epochs_per_trial`` epochs (one masking cycle: ``cycle_epochs = max_epochs =
    epochs_per_trial``, so no stop criterion and no decay step, as in the paper's 500-epoch
    trials) and scored by the mean per-variant r² of the trained model on validation genotypes
    (``TrainedTile.val_r2``: :func:`analysislib.genotype.dae.fit.validation_r2` at the
    validation mask).

    Parameters
    ----------
    tiles_genotypes
        Tile id -> training genotypes ``(variants, samples, 2)``, e.g. from
        :func:`~analysislib.genotype.dae.tuning.features.tile_genotypes`.
    n_trials
        Hyperparameter sets per tile (100 in the paper).
    epochs_per_trial
        Training epochs per trial (500 in the paper).
    seed
        Seeds the draws, the validation split and each model (``hparams.seed`` is derived from
        ``seed``, the tile's position and the trial).
    jobs
        Worker processes (spawned, so a script must call this under
        ``if __name__ == "__main__":``; torch threads are split between them). ``n_jobs``, its
        old name, is accepted for one release.
    space
        Search space (see :func:`sample_hyperparameters`).
    base
        Values of the hyperparameters that are not searched (defaults of
        :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters`).
    shared_trials
        Use the same ``n_trials`` sets on every tile (as the authors' pipeline, whose tiles all
        ran the first 100 of one list); otherwise draw separately per tile.
    validation
        Tile id -> validation genotypes (an independent cohort, as ARIC in the paper). If
        ``None``, ``validation_fraction`` of the samples are held out, the same for every tile.
    validation_mask
        Passed to :func:`~analysislib.genotype.dae.fit.train_tile` and used for the score:
        a masking rate, a boolean array of masked entries (e.g. the off-array variants), a
        mapping tile -> either, or ``None`` for the model's default.
    features
        Precomputed :func:`tile_feature_table` (computed from the training genotypes if
        ``None``; phased input assumed).
    device
        Torch device of the training.
    trials_per_task
        Trials run one after another in a task; by default each tile's trials are split so
        there are at least ``jobs`` tasks.
    client
        A ``dask.distributed`` client to run the tasks on instead of local processes.
    progress
        Show a progress bar over trained models.

    Returns
    -------
    pandas.DataFrame
        One row per (tile, trial): ``tile``, ``trial``, the searched hyperparameters, ``seed``,
        the tile features, ``val_r2``, ``status`` (``"ok"``; ``"diverged"`` when training hit a
        non-finite loss, scored 0 as the authors' accuracy calculator scores an undefined r²;
        ``"unscored"`` with NaN when no masked validation variant is polymorphic),
        ``epochs_trained``, ``best_epoch``, ``stopped_early``, ``final_loss``, ``message`` and
        ``seconds``.
    """
    if int(n_trials) < 1 or int(epochs_per_trial) < 1:
        raise InvalidArgumentError(f"n_trials and epochs_per_trial must be at least 1, got {n_trials}, {epochs_per_trial}")
    base = base if base is not None else DAEHyperparameters()
    base = replace(base, cycle_epochs=int(epochs_per_trial), max_epochs=int(epochs_per_trial))
    splits = _tile_splits(tiles_genotypes, validation, validation_fraction, seed)
    tiles = list(splits)
    if features is None:
        features = tile_feature_table({tile: train for tile, (train, _) in splits.items()})
    _check_feature_rows(features, tiles)

    searched = list(_resolve_space(space))
    runs_per_tile: dict[Hashable, list[tuple[Any, dict[str, Any]]]] = {}
    draws: dict[Hashable, pd.DataFrame] = {}
    for index, tile in enumerate(tiles):
        draw_seed = seed if shared_trials else derive_seed(int(seed), 1, index)
        table = sample_hyperparameters(int(n_trials), draw_seed, space=space)
        draws[tile] = table
        runs = []
        for trial, hparams in zip(table.index, to_hyperparameters(table, base), strict=True):
            hparams = replace(hparams, seed=derive_seed(int(seed), 2, index, int(trial)) % (2**31))
            runs.append((int(trial), hparams.to_dict()))
        runs_per_tile[tile] = runs

    tasks = _make_tasks(splits, runs_per_tile, epochs=int(epochs_per_trial), validation_mask=validation_mask,
                        device=device, jobs=int(jobs), runs_per_task=trials_per_task)
    results = _order_rows(_train_all(tasks, int(jobs), client, progress, "random search"), tiles)

    hyper = pd.concat([draws[tile].assign(tile=tile) for tile in tiles]).rename_axis("trial").reset_index()
    seeds = pd.DataFrame([(tile, trial, values["seed"]) for tile in tiles for trial, values in runs_per_tile[tile]],
                         columns=["tile", "trial", "seed"])
    table = hyper.merge(seeds, on=["tile", "trial"]).merge(results, on=["tile", "trial"])
    table = table.join(features[list(TILE_FEATURES)], on="tile")
    order = ["tile", "trial", *searched, "seed", *TILE_FEATURES, *_RUN_COLUMNS]
    return table[order]


def _check_feature_rows(features: pd.DataFrame, tiles: Sequence[Hashable]) -> None:
    absent = [tile for tile in tiles if tile not in features.index]
    if absent:
        raise InvalidArgumentError(f"the feature table has no rows for tiles {absent[:5]}")
    lacking = [name for name in TILE_FEATURES if name not in features.columns]
    if lacking:
        raise InvalidArgumentError(f"the feature table lacks columns {lacking}")


@renamed_keywords(n_jobs="jobs")
def train_candidates(  # noqa: PLR0913 - the authors' search protocol
    tiles_genotypes: Mapping[Hashable, Any],
    candidates: pd.DataFrame,
    *,
    max_epochs: int,
    cycle_epochs: int,
    seed: int = 0,
    jobs: int = 1,
    base: DAEHyperparameters | None = None,
    validation: Mapping[Hashable, Any] | None = None,
    validation_fraction: float = 0.2,
    validation_mask: Any = None,
    device: str = "cpu",
    client: Any = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Longer training of selected hyperparameter sets (the paper's fine-tuning step).

    Each row of ``candidates`` (a tile and its hyperparameter columns, as
    :meth:`~analysislib.genotype.dae.tuning.predictor.HyperparameterPredictor.top_k` returns) is
    trained for up to ``max_epochs`` epochs in cycles of ``cycle_epochs`` with the stop criterion of
    :func:`~analysislib.genotype.dae.fit.train_tile` (35,000 and 500 in the paper) and scored on the
    validation genotypes. Use the same ``seed``, ``validation`` and ``validation_fraction`` as the
    search so the held-out samples stay the same. ``jobs``, ``device``, ``client`` and
    ``progress`` are as for :func:`run_random_search` (``n_jobs``, the old name of ``jobs``, is
    accepted for one release).

    Returns
    -------
    pandas.DataFrame
        ``candidates`` (row order kept) with the ``seed``, ``cycle_epochs`` and ``max_epochs``
        each run used, and ``val_r2``, ``status``, ``epochs_trained``, ``best_epoch``,
        ``stopped_early``, ``final_loss``, ``message`` and ``seconds``, so
        :func:`best_hyperparameters` returns the settings as trained.
    """
    if "tile" not in candidates.columns:
        raise InvalidArgumentError("candidates need a 'tile' column")
    base = base if base is not None else DAEHyperparameters()
    base = replace(base, cycle_epochs=int(cycle_epochs), max_epochs=int(max_epochs))
    splits = _tile_splits(tiles_genotypes, validation, validation_fraction, seed)
    unknown = set(candidates["tile"]) - set(splits)
    if unknown:
        raise InvalidArgumentError(f"candidates name tiles without genotypes: {sorted(map(str, unknown))[:5]}")
    tiles = list(splits)
    table = candidates.reset_index(drop=True)
    runs_per_tile: dict[Hashable, list[tuple[Any, dict[str, Any]]]] = {tile: [] for tile in tiles}
    used = []
    for row_number, hparams in enumerate(to_hyperparameters(table, base)):
        tile = table.at[row_number, "tile"]
        if "seed" not in table.columns:
            hparams = replace(hparams, seed=derive_seed(int(seed), 3, row_number) % (2**31))
        runs_per_tile[tile].append((row_number, hparams.to_dict()))
        used.append((hparams.seed, hparams.cycle_epochs, hparams.max_epochs))
    table[["seed", "cycle_epochs", "max_epochs"]] = pd.DataFrame(used, index=table.index)
    tasks = _make_tasks(splits, runs_per_tile, epochs=int(max_epochs), validation_mask=validation_mask,
                        device=device, jobs=int(jobs), runs_per_task=1)
    results = pd.DataFrame(_train_all(tasks, int(jobs), client, progress, "candidate training"))
    results = results.set_index("trial").drop(columns="tile").sort_index()
    scored = [*_RUN_COLUMNS]
    return table.drop(columns=[c for c in scored if c in table.columns]).join(results[scored])


def best_hyperparameters(
    results: pd.DataFrame, base: DAEHyperparameters | None = None, *, score: str = "val_r2",
) -> dict[Hashable, DAEHyperparameters]:
    """The highest-scoring hyperparameter set of each tile (ties: first row).

    ``results`` is a table from :func:`run_random_search` or :func:`train_candidates`; the
    mapping it returns can be given to ``analysislib.genotype.dae.train_bundle``.
    """
    if results.empty:
        raise InvalidArgumentError("no results to choose from")
    best_rows = results.loc[results.groupby("tile", sort=False)[score].idxmax()]
    chosen = to_hyperparameters(best_rows, base)
    return dict(zip(best_rows["tile"], chosen, strict=True))
