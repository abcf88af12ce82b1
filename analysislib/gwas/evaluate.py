"""The GWAS-prior harness: simulate a GWAS, train one functional prior, score it, store the rows.

The DeepWAS comparison (Amin et al. 2025) trains a model from functional annotations to each
SNP's prior variance, either on the full GWAS likelihood with banded LD (objective
``likelihood``, the paper's) or on LD-score regression (``ldsr``, the classic objective), with
four model kinds (:data:`~analysislib.gwas.priors.PRIOR_KINDS`). A method is named
``<objective>_<kind>`` (``likelihood_conv``, ``ldsr_linear``), as in the results store.

:func:`evaluate_gwas` runs one method on one simulated GWAS (:func:`~analysislib.simulate.gwas.simulate_gwas`,
where the true prior is known) and stores its held-out and in-sample scores
(:func:`~analysislib.gwas.priors.result_rows`): the rows notebook 40 plots and the command line's
``analysislib evaluate --task gwas`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysislib.errors import InvalidArgumentError
from analysislib.presets import Presets
from analysislib.results import ResultsStore, new_run_id

__all__ = ["GWAS_TRAINING", "OBJECTIVES", "GwasEvaluation", "evaluate_gwas", "parse_method"]

log = logging.getLogger(__name__)
OBJECTIVES = ("likelihood", "ldsr")

#: Training settings per simulation scale (``PriorTrainingConfig`` fields, plus ``size``, the
#: prior model's size, and ``flank``: None means one LD block). ``full`` is the paper's
#: optimiser (AdamW at 2e-4, 100 warm-up steps, 12 windows per step); ``quick`` and
#: ``standard`` train the small simulations at 1e-2 with a few windows per step.
GWAS_TRAINING: Presets[dict[str, Any]] = Presets("GWAS prior training", {
    "quick": {"epochs": 15, "lr": 1e-2, "warmup_steps": 10, "windows_per_step": 2, "flank": 0,
              "keep_best": False, "size": "quick"},
    "standard": {"epochs": 20, "lr": 1e-2, "warmup_steps": 10, "windows_per_step": 2, "flank": 0,
                 "keep_best": True, "size": "quick"},
    "full": {"epochs": 15, "lr": 2e-4, "warmup_steps": 100, "windows_per_step": 12, "flank": None,
             "keep_best": True, "size": "full"},
}, fields={"epochs", "lr", "weight_decay", "grad_clip", "warmup_steps", "windows_per_step", "flank",
           "sigma", "eps", "method", "bandwidth", "keep_best", "size"})


@dataclass
class GwasEvaluation:
    """What :func:`evaluate_gwas` produced.

    Attributes
    ----------
    run_id
        Id of the stored run.
    rows
        The tidy rows (held-out ``test`` and in-sample ``train`` strata).
    trained
        The trained prior (:class:`~analysislib.gwas.priors.TrainedPrior`).
    scores
        Held-out metrics (:func:`~analysislib.gwas.priors.evaluate_prior` on the test SNPs).
    store_path
        The parquet file written, or None when nothing was stored.
    """

    run_id: str
    rows: pd.DataFrame
    trained: Any
    scores: dict[str, float]
    store_path: Path | None


def parse_method(method: str) -> tuple[str, str]:
    """``(objective, kind)`` of a method name such as ``"likelihood_conv"``.

    Raises
    ------
    ValueError
        For an unknown objective or kind (the message lists both).
    """
    from analysislib.gwas.priors import PRIOR_KINDS

    objective, _, kind = method.partition("_")
    if objective not in OBJECTIVES or kind not in PRIOR_KINDS:
        names = ", ".join(f"{o}_{k}" for o in OBJECTIVES for k in PRIOR_KINDS)
        raise InvalidArgumentError(f"unknown GWAS prior method {method!r}; choose from {names}")
    return objective, kind


def evaluate_gwas(method: str, scale: str = "quick", *, seed: int = 0, features: str = "all",
                  settings: Mapping[str, Any] | None = None, sim: Any = None,
                  store: ResultsStore | None = None, write: bool = True, device: str = "cpu",
                  progress: bool = False) -> GwasEvaluation:
    """Train the prior ``method`` on a simulated GWAS, score it on held-out SNPs, store the rows.

    Parameters
    ----------
    method
        ``<objective>_<kind>``: objective ``likelihood`` or ``ldsr``, kind ``constant``,
        ``linear``, ``mlp`` or ``conv``.
    scale
        Simulation preset (``quick``, ``standard``, ``full``) and the training settings of
        :data:`GWAS_TRAINING` of the same name.
    seed
        Seed of the simulation, the model's initialisation and training.
    features
        ``"all"`` or ``"few"`` (:func:`~analysislib.gwas.priors.feature_set`).
    settings
        Overrides of :data:`GWAS_TRAINING`'s settings (``{"epochs": 3}``).
    sim
        A simulation to use instead of ``simulate_gwas(scale, seed=seed)``.
    store
        Results store; default ``ResultsStore()``.
    write
        Append the rows to the store.
    device, progress
        Where to train, and whether to show progress bars.

    Returns
    -------
    GwasEvaluation

    Raises
    ------
    ValueError
        For an unknown method or feature set; :class:`~analysislib.errors.PresetError` for an
        unknown scale or setting (both before anything is simulated).
    """
    import torch

    from analysislib.gwas.priors import (
        PriorTrainingConfig,
        evaluate_prior,
        feature_set,
        initial_log_f,
        make_prior,
        result_rows,
        train_prior,
    )
    from analysislib.simulate.gwas import simulate_gwas

    objective, kind = parse_method(method)
    chosen = GWAS_TRAINING.resolve(scale, **dict(settings or {}))
    if features not in ("all", "few"):
        raise InvalidArgumentError(f"features must be 'all' or 'few', got {features!r}")
    scale = GWAS_TRAINING.canonical(scale)
    if sim is None:
        sim = simulate_gwas(scale, seed=seed)
    size, flank = chosen.pop("size"), chosen.pop("flank")
    block = sim.params.ld_block_snps
    chosen_features = feature_set(sim, features)
    train = sim.split == "train"
    torch.manual_seed(seed)
    model = make_prior(kind, len(chosen_features.tracks), len(chosen_features.scalars), sim.annotations.shape[2],
                       size=size, init_log_f=initial_log_f(sim.z[train], sim.ld_scores[train]))
    config = PriorTrainingConfig(objective=objective, seed=seed, device=device, progress=progress,
                                 target_size=block, flank=block if flank is None else flank, **chosen)
    trained = train_prior(model, sim, config, features=chosen_features, kind=kind)
    held_out = evaluate_prior(trained, sim, "test")
    in_sample = evaluate_prior(trained, sim, "train")
    run_id = new_run_id()
    dataset = f"sim_gwas_{scale}_seed{seed}"
    rows = pd.DataFrame(result_rows(trained, held_out, sim, dataset=dataset, run_id=run_id)
                        + result_rows(trained, in_sample, sim, dataset=dataset, split="train", run_id=run_id))
    path = None
    if write:
        path = (store or ResultsStore()).append(rows)
        log.info("stored %d rows in %s", len(rows), path)
    return GwasEvaluation(run_id, rows, trained, held_out, path)
