"""Provenance of a stored run: its id, time, code version, input checksum, parameters and cost.

Every row a run appends to the results store (:mod:`analysislib.results.store`) carries the
same stamp: :func:`run_stamp` builds it once, so the genotype, epigenome and GWAS evaluations
and the notebooks stamp their rows the same way. This module imports neither pandas nor torch:
bundle writers and the command line use :func:`array_checksum` and :func:`code_version` too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["array_checksum", "code_version", "new_run_id", "parameters_json", "peak_memory_mb", "run_stamp"]


def new_run_id() -> str:
    """A unique, time-sortable run id."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def code_version() -> str:
    """``analysislib <version>`` plus the git commit (with ``+dirty``) when run from a checkout."""
    from analysislib import __version__

    root = Path(__file__).resolve().parents[2]
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


def parameters_json(parameters: Mapping[str, Any]) -> str:
    """Stable JSON for the ``parameters`` column (sorted keys; NumPy values converted)."""
    return json.dumps(parameters, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``); NaN where unknown."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return math.nan
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB elsewhere


def run_stamp(*, task: str, dataset: str, scenario: str, method: str, parameters: Mapping[str, Any],
              data_checksum: str, runtime_s: float, fit_seconds: float = math.nan,
              impute_seconds: float = math.nan, peak_memory_mb: float = math.nan,
              run_id: str | None = None) -> dict[str, Any]:
    """The columns shared by every row of one run (everything but metric, stratum, value and n).

    Parameters
    ----------
    task, dataset, scenario, method
        What was run on what (:data:`~analysislib.results.store.COLUMNS`).
    parameters
        The method's parameters, stored as :func:`parameters_json`.
    data_checksum
        sha256 of the input (:func:`array_checksum` for in-memory data).
    runtime_s, fit_seconds, impute_seconds, peak_memory_mb
        The run's cost (NaN where not measured).
    run_id
        Default: a new :func:`new_run_id`.

    Returns
    -------
    dict
        Column name to value, with the time now and :func:`code_version`.
    """
    return {
        "run_id": run_id or new_run_id(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "task": task, "dataset": dataset, "scenario": scenario, "method": method,
        "runtime_s": float(runtime_s), "fit_seconds": float(fit_seconds),
        "impute_seconds": float(impute_seconds), "peak_memory_mb": float(peak_memory_mb),
        "parameters": parameters_json(parameters), "data_checksum": data_checksum,
        "code_version": code_version(),
    }
