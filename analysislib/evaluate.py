"""The evaluation harness: run an imputer on a dataset and scenario, score it, store the rows.

One call, :func:`evaluate`, does the whole protocol (Dias et al. 2022 and BiU-Net evaluations,
genotype_imputation.md section 2):

1. load the dataset (a catalog name or any biallelic VCF);
2. hold out target samples (stratified by population when known);
3. apply the scenario to the targets (array sites typed, a fraction of sites typed, or random
   missingness) and remember which entries are to be scored;
4. fit the imputer on the reference samples and impute the targets;
5. score only hidden entries, overall and per MAF bin, tile, population and variant;
6. append tidy rows with runtime, peak memory, parameters, data checksum and code version to the
   results store (:mod:`analysislib.results`).

Imputers are looked up by name in :data:`IMPUTERS`; :func:`register_imputer` adds one.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.genotype.imputer import GenotypeImputer, check_imputed
from analysislib.results import (
    ResultsStore,
    array_checksum,
    code_version,
    new_run_id,
    parameters_json,
)

__all__ = [
    "IMPUTERS",
    "EvaluationResult",
    "evaluate",
    "load_genotypes",
    "make_imputer",
    "register_imputer",
]

log = logging.getLogger(__name__)
TASK = "genotype_imputation"

# Method name -> "module:factory" (imported on first use) or a callable returning an imputer.
IMPUTERS: dict[str, str | Callable[..., GenotypeImputer]] = {
    "allele_frequency": "analysislib.genotype.imputer:AlleleFrequencyImputer",
    "beagle": "analysislib.genotype.hmm:BeagleImputer",
    "biunet": "analysislib.genotype.unet:BiUNetImputer",
    "dae": "analysislib.genotype.dae:DAEImputer",
    "minimac4": "analysislib.genotype.hmm:Minimac4Imputer",
    "scda": "analysislib.genotype.unet:SCDAImputer",
}


def register_imputer(name: str, factory: str | Callable[..., GenotypeImputer]) -> None:
    """Make an imputer available to :func:`evaluate` and the CLI under ``name``."""
    IMPUTERS[name] = factory


def make_imputer(name: str, **parameters: Any) -> GenotypeImputer:
    """Instantiate a registered imputer with keyword parameters."""
    try:
        factory = IMPUTERS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(IMPUTERS))}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(**parameters)


def load_genotypes(dataset: str | os.PathLike[str]) -> tuple[xr.Dataset, str, str]:
    """Load a genotype dataset by catalog name or VCF path.

    Returns
    -------
    tuple
        ``(dataset, label, sha256)``: the in-memory dataset, the name recorded in the results,
        and a checksum of the input (file bytes for real data, array bytes for simulations).
    """
    from analysislib.catalog import load_catalog, sha256_of
    from analysislib.io.vcf import read_vcf

    catalog = load_catalog()
    name = str(dataset)
    if name in catalog:
        entry = catalog[name]
        if entry.kind != "genotypes":
            raise ValueError(f"dataset {name!r} is {entry.kind}, not genotypes")
        opened = catalog.open(name)
        ds = getattr(opened, "ds", opened).compute()
        if entry.simulated:
            checksum = array_checksum(ds["call_genotype"].values, ds["variant_position"].values)
        else:
            checksum = ";".join(sha256_of(p) for p in catalog.fetch(name).values())
        return ds, name, checksum
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is neither a catalog dataset nor an existing file")
    return read_vcf(path).compute(), path.name, sha256_of(path)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced: the stored rows, the imputed data and where they went."""

    run_id: str
    rows: pd.DataFrame
    imputed: xr.Dataset
    store_path: Path | None

    def summary(self, metric: str = "r2") -> pd.DataFrame:
        """The headline table: one metric overall and per MAF bin."""
        rows = self.rows[(self.rows.metric == metric) & self.rows.stratum_kind.isin(["all", "maf_bin"])]
        return rows[["stratum_kind", "stratum", "value", "n"]].reset_index(drop=True)


def evaluate(
    method: str | GenotypeImputer,
    dataset: str | os.PathLike[str] | xr.Dataset,
    scenario: str | Any,
    *,
    target_fraction: float = 0.1,
    seed: int = 0,
    method_parameters: Mapping[str, Any] | None = None,
    tiles: pd.DataFrame | None = None,
    store: ResultsStore | None = None,
    dataset_label: str | None = None,
) -> EvaluationResult:
    """Run, score and store one imputation experiment.

    Parameters
    ----------
    method
        A registered imputer name (``"beagle"``, ``"minimac4"``...) or an imputer instance.
    dataset
        Catalog name, path of a biallelic VCF, or an in-memory genotype dataset.
    scenario
        Scenario name (see :func:`analysislib.genotype.masking.parse_scenario`) or a
        :class:`~analysislib.genotype.masking.Scenario`.
    target_fraction, seed
        Share of samples held out as targets and the seed of that split.
    method_parameters
        Keyword arguments for the imputer when ``method`` is a name.
    tiles
        Optional tile table (:mod:`analysislib.tiling`) for per-tile scores.
    store
        Results store to append to; ``None`` uses the default store. Pass
        ``ResultsStore(path)`` to write elsewhere.
    dataset_label
        Name recorded for an in-memory dataset.

    Returns
    -------
    EvaluationResult
    """
    from analysislib.genotype.masking import apply_scenario, parse_scenario, split_samples
    from analysislib.genotype.metrics import score_imputation
    from analysislib.genotype.stats import minor_allele_frequency

    if isinstance(dataset, xr.Dataset):
        ds = dataset
        label = dataset_label or ds.attrs.get("source", "in-memory")
        checksum = array_checksum(ds["call_genotype"].values, ds["variant_position"].values)
    else:
        ds, label, checksum = load_genotypes(dataset)
    scenario_obj = parse_scenario(scenario) if isinstance(scenario, str) else scenario
    imputer = make_imputer(method, **(method_parameters or {})) if isinstance(method, str) else method
    log.info("%s on %s (%s): %d variants x %d samples", imputer.name, label, scenario_obj.name,
             ds.sizes["variants"], ds.sizes["samples"])

    stratify = "sample_population" if "sample_population" in ds else None
    reference, truth = split_samples(ds, target_fraction=target_fraction, stratify_by=stratify, seed=seed)
    masked = apply_scenario(truth, scenario_obj, reference=reference)

    started = time.perf_counter()
    imputer.fit(reference)
    imputed = check_imputed(imputer.impute(masked.target), reference, masked.target)
    seconds = imputer.last_run.seconds
    if not np.isfinite(seconds):
        seconds = time.perf_counter() - started

    maf = minor_allele_frequency(ds).values
    scores = score_imputation(truth, imputed, masked.score_mask, maf=maf, tiles=tiles)
    run_id = new_run_id()
    rows = scores.assign(
        run_id=run_id,
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        task=TASK, dataset=label, scenario=scenario_obj.name, method=imputer.name,
        runtime_s=float(seconds), peak_memory_mb=float(imputer.last_run.peak_memory_mb),
        parameters=parameters_json({**imputer.parameters(), "target_fraction": target_fraction,
                                    "split_seed": seed}),
        data_checksum=checksum, code_version=code_version(),
    )
    path = (store or ResultsStore()).append(rows)
    log.info("stored %d rows in %s", len(rows), path)
    return EvaluationResult(run_id, rows, imputed, path)
