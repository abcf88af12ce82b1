"""The results store: one tidy, append-only table of every method's scores (GUIDE.md, "Results").

Every evaluation appends rows with the same columns, whatever the task (genotype imputation,
epigenomic imputation, GWAS priors). Notebooks and the dashboard read only this store, so a new
method shows up everywhere once it writes results.

Layout: ``<root>/<task>/<run_id>.parquet``, one file per run, written atomically; reading
concatenates them. Nothing is ever rewritten, so concurrent runs cannot corrupt each other. The
root is ``$ANALYSISLIB_RESULTS`` or ``results/`` under the current directory.

Schema (:data:`COLUMNS`):

============== ======== =====================================================================
column         type     meaning
============== ======== =====================================================================
run_id         str      unique id of the run that wrote the row
timestamp      str      ISO-8601 UTC time of the run
task           str      ``genotype_imputation``, ``epigenome_imputation``, ``gwas_priors``...
dataset        str      catalog name or file name of the data
scenario       str      masking or hold-out scenario (``array_omni15``, ``random_05_seed1``)
method         str      imputer or model name (``beagle``, ``minimac4``, ``dae``)
metric         str      ``r2``, ``aggregate_r2``, ``concordance``, ``iqs``, ``f1``...
stratum_kind   str      what the stratum is: ``all``, ``maf_bin``, ``tile``, ``population``,
                        ``variant``, ``sample``, ``assay``...
stratum        str      the stratum's label (``[0.01,0.05)``, a variant key, ``CEU``)
value          float    the metric's value
n              int      how many scored units (variants or calls) the value summarises
runtime_s      float    wall time of the method on this run, fit plus impute (same on every
                        row of a run)
fit_seconds    float    wall time of fitting (training a network, preparing an HMM panel);
                        NaN where not measured
impute_seconds float    wall time of imputing (or predicting) the targets; NaN where not
                        measured
peak_memory_mb float    peak resident memory of the method on this run
parameters     str      JSON of the method's parameters
data_checksum  str      sha256 of the input data (files, or arrays for in-memory data)
code_version   str      analysislib version plus git commit when available
============== ======== =====================================================================

``fit_seconds`` and ``impute_seconds`` were added after the first stored runs: they are optional
when appending (NaN when absent) and rows stored without them read back with NaN.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysislib.io.atomic import atomic_output

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "RESULTS_ENV",
    "ResultsStore",
    "array_checksum",
    "code_version",
    "new_run_id",
    "parameters_json",
]

RESULTS_ENV = "ANALYSISLIB_RESULTS"
COLUMNS: dict[str, str] = {
    "run_id": "string", "timestamp": "string", "task": "string", "dataset": "string",
    "scenario": "string", "method": "string", "metric": "string", "stratum_kind": "string",
    "stratum": "string", "value": "float64", "n": "int64", "runtime_s": "float64",
    "fit_seconds": "float64", "impute_seconds": "float64",
    "peak_memory_mb": "float64", "parameters": "string", "data_checksum": "string",
    "code_version": "string",
}
#: Columns added to the schema later: NaN when a writer or a stored file lacks them.
OPTIONAL_COLUMNS: tuple[str, ...] = ("fit_seconds", "impute_seconds")


def new_run_id() -> str:
    """A unique, time-sortable run id."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def code_version() -> str:
    """``analysislib <version>`` plus the git commit (with ``+dirty``) when run from a checkout."""
    from analysislib import __version__

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"analysislib {__version__}"
    return f"analysislib {__version__} ({commit}{'+dirty' if dirty else ''})"


def array_checksum(*arrays: Any) -> str:
    """sha256 over the bytes of NumPy-convertible arrays (for in-memory inputs)."""
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(np.asarray(array))
        digest.update(str((values.dtype.str, values.shape)).encode())
        digest.update(values.tobytes() if values.dtype != object else repr(values.tolist()).encode())
    return digest.hexdigest()


class ResultsStore:
    """Append-only parquet store of tidy result rows.

    Parameters
    ----------
    root
        Folder of the store; default ``$ANALYSISLIB_RESULTS`` or ``./results``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(RESULTS_ENV, "results"))

    def append(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
        """Validate rows against :data:`COLUMNS` and write them as one new parquet file.

        All rows must share one ``run_id`` and ``task``; :data:`OPTIONAL_COLUMNS` may be left
        out (stored as NaN). Returns the file written.

        Raises
        ------
        ValueError
            If a column is missing or unknown, or rows mix runs or tasks.
        """
        frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
        for column in OPTIONAL_COLUMNS:
            if column not in frame.columns:
                frame[column] = np.nan
        missing = [c for c in COLUMNS if c not in frame.columns]
        extra = [c for c in frame.columns if c not in COLUMNS]
        if missing or extra:
            raise ValueError(f"result rows: missing columns {missing}, unknown columns {extra}")
        if frame.empty:
            raise ValueError("result rows: nothing to append")
        for key in ("run_id", "task"):
            if frame[key].nunique() != 1:
                raise ValueError(f"result rows: one append holds one {key}, got {frame[key].unique()}")
        frame = frame[list(COLUMNS)].astype(COLUMNS)
        target = self.root / str(frame["task"].iloc[0]) / f"{frame['run_id'].iloc[0]}.parquet"
        if target.exists():
            raise FileExistsError(f"{target} exists: run ids are written once")
        with atomic_output(target) as tmp:
            frame.to_parquet(tmp, index=False)
        return target

    def read(self, task: str | None = None, *, latest: bool = False, **filters: Any) -> pd.DataFrame:
        """All rows (of one task), optionally filtered by column equality or membership.

        ``store.read("genotype_imputation", method=["beagle", "minimac4"], metric="r2")``

        With ``latest=True`` only the most recent run of each (task, dataset, scenario, method)
        is kept, so re-running an experiment replaces it in summaries without deleting history.
        """
        pattern = f"{task}/*.parquet" if task else "*/*.parquet"
        files = sorted(self.root.glob(pattern))
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        # Files written before a column was added read back with NaN there.
        frame = frame.reindex(columns=list(COLUMNS)).astype(
            {c: COLUMNS[c] for c in OPTIONAL_COLUMNS})
        for column, wanted in filters.items():
            if column not in COLUMNS:
                raise KeyError(f"no column {column!r}; columns: {list(COLUMNS)}")
            values = [wanted] if isinstance(wanted, str) or not isinstance(wanted, Iterable) else list(wanted)
            frame = frame[frame[column].isin(values)]
        if latest and not frame.empty:
            keys = ["task", "dataset", "scenario", "method"]
            newest = frame.groupby(keys)["run_id"].transform("max")  # run ids sort by time
            frame = frame[frame["run_id"] == newest]
        return frame.reset_index(drop=True)

    def tasks(self) -> list[str]:
        """Tasks with at least one run in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and next(p.glob("*.parquet"), None) is not None)

    def runs(self, task: str | None = None) -> pd.DataFrame:
        """One row per run: identity, cost and provenance."""
        keys = ["run_id", "timestamp", "task", "dataset", "scenario", "method", "runtime_s",
                "fit_seconds", "impute_seconds", "peak_memory_mb", "parameters", "data_checksum",
                "code_version"]
        return self.read(task)[keys].drop_duplicates("run_id").reset_index(drop=True)


def parameters_json(parameters: Mapping[str, Any]) -> str:
    """Stable JSON for the ``parameters`` column (sorted keys; NumPy values converted)."""
    return json.dumps(parameters, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
