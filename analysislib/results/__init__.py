"""Results: the store every evaluation appends to, the provenance on its rows, and summaries.

* :mod:`analysislib.results.store`: :class:`ResultsStore`, the append-only parquet table and
  its schema (:data:`COLUMNS`);
* :mod:`analysislib.results.provenance`: the stamp every row of a run carries
  (:func:`run_stamp`: run id, time, parameters, input checksum, code version, cost);
* :mod:`analysislib.results.summary`: metrics per method and stratum, paired comparisons, win
  counts and costs, in plain pandas (the dashboard draws them).

Names are importable from here. The store and summaries import pandas when first used, so
``from analysislib.results import array_checksum`` stays light (provenance needs only NumPy).
"""

from __future__ import annotations

import importlib
from typing import Any

from analysislib.results.provenance import (
    array_checksum,
    code_version,
    new_run_id,
    parameters_json,
    peak_memory_mb,
    run_stamp,
)

_LAZY = {
    **dict.fromkeys(("CHECKSUM_SUFFIX", "COLUMNS", "OPTIONAL_COLUMNS", "RESULTS_ENV", "ResultsStore",
                     "UnverifiedResultsWarning"), "store"),
    **dict.fromkeys(("best_methods", "categoricals_as_strings", "compare_methods", "costs",
                     "leader_verdict", "list_tasks", "lower_is_better", "metric_label", "ordered_strata",
                     "run_provenance", "runtime_phases", "summarise", "two_proportion_p", "win_counts",
                     "win_percentages"), "summary"),
}

__all__ = [  # noqa: RUF022 - grouped by module
    "array_checksum", "code_version", "new_run_id", "parameters_json", "peak_memory_mb", "run_stamp",
    "CHECKSUM_SUFFIX", "COLUMNS", "OPTIONAL_COLUMNS", "RESULTS_ENV", "ResultsStore", "UnverifiedResultsWarning",
    "best_methods", "categoricals_as_strings", "compare_methods", "costs", "leader_verdict", "list_tasks",
    "lower_is_better", "metric_label", "ordered_strata", "run_provenance", "runtime_phases", "summarise",
    "two_proportion_p", "win_counts", "win_percentages",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"analysislib.results.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'analysislib.results' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
