"""The evaluation harness: run an imputer on a dataset and scenario, score it, store the rows.

One call, :func:`evaluate`, does the whole protocol (the evaluations of Dias et al. 2022 and of
BiU-Net):

1. load the dataset (a catalog name or any biallelic VCF);
2. hold out target samples (stratified by population when known);
3. apply the scenario to the targets (array sites typed, a fraction of sites typed, or random
   missingness) and remember which entries are to be scored;
4. fit the imputer on the reference samples and impute the targets, timing each call here, so
   ``fit_seconds`` (training a network, preparing an HMM's panel) and ``impute_seconds`` mean the
   same for every method, and ``runtime_s`` is their sum;
5. score only hidden entries, overall and per MAF bin, tile, population and variant, with MAF
   bins and the minor-allele coding of pooled metrics taken from the reference samples only
   (:mod:`analysislib.genotype.metrics`);
6. append tidy rows with runtimes, peak memory, parameters, data checksum and code version to the
   results store (:mod:`analysislib.results`).

Imputers are looked up by name in :data:`IMPUTERS`; :func:`register_imputer` adds one.
:func:`thread_parameters` translates one thread count into each imputer's own keyword.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.imputer import GenotypeImputer, check_imputed
from analysislib.registry import IMPUTERS as _REGISTRIES
from analysislib.results import ResultsStore, array_checksum, run_stamp

__all__ = [
    "HEADLINE_METRICS",
    "IMPUTERS",
    "EvaluationResult",
    "evaluate",
    "harness_split",
    "load_genotypes",
    "make_imputer",
    "register_imputer",
    "thread_parameters",
    "timed_fit_impute",
]

log = logging.getLogger(__name__)
TASK = "genotype_imputation"

#: Method name -> ``"module:factory"`` (imported on first use) or a callable returning an imputer:
#: the ``"genotype"`` entry of :data:`analysislib.registry.IMPUTERS`.
IMPUTERS = _REGISTRIES["genotype"]


def register_imputer(name: str, factory: str | Callable[..., GenotypeImputer]) -> None:
    """Make an imputer available to :func:`evaluate` and the CLI under ``name``."""
    IMPUTERS[name] = factory


def make_imputer(name: str, **parameters: Any) -> GenotypeImputer:
    """Instantiate a registered genotype imputer with keyword parameters.

    Raises
    ------
    KeyError
        If no imputer is registered under ``name``.
    ValueError
        If the imputer takes no parameter of a given name.
    """
    return IMPUTERS.make(name, **parameters)


def thread_parameters(name: str, threads: int | None) -> dict[str, int]:
    """The keyword that gives imputer ``name`` a thread count: ``{"threads": n}`` or similar.

    Every imputer with a thread setting calls it ``threads`` (CPU threads of one process; torch
    threads for the deep models). An imputer that also trains in worker processes (``jobs``: the
    autoencoder, hundreds of small tile models) gets one single-threaded worker per thread, which
    trains faster than one process of several torch threads and gives the same weights. An imputer
    with no thread setting (the allele-frequency floor) runs on one thread, so ``threads=1`` asks
    nothing of it and more is refused. ``None`` returns ``{}``.

    Raises
    ------
    ValueError
        For ``threads < 1``, or more than one thread for an imputer without a thread setting.
    """
    if threads is None:
        return {}
    if int(threads) != threads or threads < 1:
        raise InvalidArgumentError(f"threads must be a whole number of at least 1, got {threads}")
    names, _ = IMPUTERS.keywords(name)
    if "threads" in names:
        workers = {"jobs": int(threads)} if "jobs" in names and threads > 1 else {}
        return {"threads": int(threads), **workers}
    if threads == 1:
        return {}
    raise InvalidArgumentError(f"method {name!r} runs on one thread and has no thread setting; "
                     f"drop --threads or use --threads 1 (got {threads})")


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
            raise InvalidArgumentError(f"dataset {name!r} is {entry.kind}, not genotypes")
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


def timed_fit_impute(imputer: GenotypeImputer, reference: xr.Dataset, target: xr.Dataset
                     ) -> tuple[float, float, float, xr.Dataset]:
    """Fit on ``reference`` and impute ``target``, timing each call from outside the imputer.

    Returns
    -------
    tuple
        ``(fit_seconds, impute_seconds, peak_memory_mb, imputed)``. The peak is the larger of
        what the imputer reported for its fit and for its imputation (NaN when it reports none).
    """
    before = imputer.last_run
    started = time.perf_counter()
    imputer.fit(reference)
    fit_seconds = time.perf_counter() - started
    fit_run = imputer.last_run if imputer.last_run is not before else None
    started = time.perf_counter()
    imputed = imputer.impute(target)
    impute_seconds = time.perf_counter() - started
    peaks = np.array([float(run.peak_memory_mb) for run in (fit_run, imputer.last_run)
                      if run is not None], dtype=np.float64)
    peak = float(np.nanmax(peaks)) if np.isfinite(peaks).any() else float("nan")
    return fit_seconds, impute_seconds, peak, imputed


#: Metrics of the headline table, in order, by scenario kind. Under random missingness a
#: variant has a few hidden entries per target set, so its own r² is mostly undefined (0 by the
#: calculator's rule) for every method: the pooled r² leads there.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "random": ("aggregate_r2", "r2", "genotype_accuracy"),
    "array": ("r2", "aggregate_r2", "genotype_accuracy"),
    "typed_fraction": ("r2", "aggregate_r2", "genotype_accuracy"),
}


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced: the stored rows, the imputed data and where they went."""

    run_id: str
    rows: pd.DataFrame
    imputed: xr.Dataset
    store_path: Path | None
    scenario_kind: str | None = None

    def summary(self, metric: str = "r2") -> pd.DataFrame:
        """One metric overall and per MAF bin: ``stratum_kind, stratum, value, n``."""
        rows = self.rows[(self.rows.metric == metric) & self.rows.stratum_kind.isin(["all", "maf_bin"])]
        return rows[["stratum_kind", "stratum", "value", "n"]].reset_index(drop=True)

    def headline_metrics(self) -> tuple[str, ...]:
        """The metrics :meth:`headline` shows by default, for this run's scenario kind."""
        return HEADLINE_METRICS.get(self.scenario_kind or "", HEADLINE_METRICS["array"])

    def headline(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Several metrics side by side, overall then per MAF bin (the CLI's summary).

        Columns: ``stratum``, one per metric (default :meth:`headline_metrics`; absent metrics
        are skipped), then ``variants`` (scored variants, the ``n`` of ``r2``) and ``calls``
        (scored genotypes, the ``n`` of pooled metrics).
        """
        wanted = [m for m in (metrics or self.headline_metrics()) if m in set(self.rows.metric)]
        rows = self.rows[self.rows.stratum_kind.isin(["all", "maf_bin"])]
        strata = list(dict.fromkeys(rows.loc[rows.stratum_kind == "all", "stratum"].tolist()
                                    + rows.loc[rows.stratum_kind == "maf_bin", "stratum"].tolist()))

        def column(metric: str, field: str = "value") -> list[Any]:
            values = rows[rows.metric == metric].drop_duplicates("stratum").set_index("stratum")[field]
            return [values.get(s, np.nan) for s in strata]

        table = pd.DataFrame({"stratum": strata, **{m: column(m) for m in wanted}})
        table["variants"] = pd.array(column("r2", "n"), dtype="Int64")
        table["calls"] = pd.array(column("aggregate_r2", "n"), dtype="Int64")
        return table


def harness_split(ds: xr.Dataset, *, target_fraction: float = 0.1, seed: int = 0
                  ) -> tuple[xr.Dataset, xr.Dataset]:
    """The harness's split of ``ds`` into reference and target samples (stratified by
    population when the dataset has ``sample_population``), as :func:`evaluate` makes it.

    Use it to work on the reference panel an evaluation will see, e.g. to tune before scoring.
    """
    from analysislib.genotype.masking import split_samples

    stratify = "sample_population" if "sample_population" in ds else None
    return split_samples(ds, target_fraction=target_fraction, stratify_by=stratify, seed=seed)


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
    threads: int | None = None,
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
    threads
        Thread count for a named method, passed as its own keyword (:func:`thread_parameters`).

    Returns
    -------
    EvaluationResult
    """
    from analysislib.genotype.masking import apply_scenario, parse_scenario
    from analysislib.genotype.metrics import score_imputation
    from analysislib.genotype.stats import alt_allele_frequency, minor_allele_frequency

    if isinstance(dataset, xr.Dataset):
        ds = dataset
        label = dataset_label or ds.attrs.get("source", "in-memory")
        checksum = array_checksum(ds["call_genotype"].values, ds["variant_position"].values)
    else:
        ds, label, checksum = load_genotypes(dataset)
    from analysislib.io.vcf import check_diploid_panel

    # evaluation holds some samples out as targets, so it needs at least 2
    check_diploid_panel(ds, label if isinstance(dataset, xr.Dataset) else str(dataset),
                        "impute or score", min_samples=2)
    scenario_obj = parse_scenario(scenario) if isinstance(scenario, str) else scenario
    if isinstance(method, str):
        imputer = make_imputer(method, **{**(method_parameters or {}),
                                          **thread_parameters(method, threads)})
    elif threads is not None:
        raise InvalidArgumentError("threads applies to a method given by name; configure an imputer "
                         "instance directly")
    else:
        imputer = method
    log.info("%s on %s (%s): %d variants x %d samples", imputer.name, label, scenario_obj.name,
             ds.sizes["variants"], ds.sizes["samples"])

    reference, truth = harness_split(ds, target_fraction=target_fraction, seed=seed)
    masked = apply_scenario(truth, scenario_obj, reference=reference)

    fit_seconds, impute_seconds, peak_mb, imputed = timed_fit_impute(imputer, reference,
                                                                     masked.target)
    imputed = check_imputed(imputed, reference, masked.target)

    # MAF bins and minor-allele coding from the reference samples only.
    scores = score_imputation(truth, imputed, masked.score_mask,
                              maf=minor_allele_frequency(reference).values,
                              alt_frequency=alt_allele_frequency(reference).values, tiles=tiles)
    stamp = run_stamp(
        task=TASK, dataset=label, scenario=scenario_obj.name, method=imputer.name,
        parameters={**imputer.parameters(), "target_fraction": target_fraction, "split_seed": seed},
        data_checksum=checksum, runtime_s=fit_seconds + impute_seconds, fit_seconds=fit_seconds,
        impute_seconds=impute_seconds, peak_memory_mb=peak_mb)
    rows = scores.assign(**stamp)
    path = (store or ResultsStore()).append(rows)
    log.info("stored %d rows in %s", len(rows), path)
    return EvaluationResult(stamp["run_id"], rows, imputed, path, scenario_obj.kind)
