"""What the stored results say: metrics per method and stratum, paired comparisons, wins, costs.

Plain pandas over results-store rows (:mod:`analysislib.results.store`), with no plotting
import: the dashboard (:mod:`analysislib.dashboard.app`) draws these tables, and notebooks and
scripts use them directly, e.g. per-tile wins of one method over another::

    rows = ResultsStore().read("genotype_imputation", latest=True, scenario="array_omni15")
    pairs = compare_methods(rows, "r2", "tile", "dae", "beagle")
    win_counts(pairs, "r2", "dae", "beagle")  # {'dae': 3, 'beagle': 10, 'ties': 0}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from analysislib.results.store import ResultsStore

__all__ = [
    "best_methods",
    "categoricals_as_strings",
    "compare_methods",
    "costs",
    "leader_verdict",
    "list_tasks",
    "lower_is_better",
    "metric_label",
    "ordered_strata",
    "run_provenance",
    "runtime_phases",
    "summarise",
    "two_proportion_p",
    "win_counts",
    "win_percentages",
]

# A bin label such as "[0.01,0.05)": sorted by its bounds.
_BIN_LABEL = re.compile(r"^[\[(]\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*[\])]$")


def list_tasks(store: ResultsStore) -> list[str]:
    """Tasks that have at least one run in the store."""
    return store.tasks()


def _stratum_key(label: str) -> tuple[Any, ...]:
    match = _BIN_LABEL.match(label)
    if match:
        return (0, float(match[1]), float(match[2]), label)
    try:
        return (0, float(label), float(label), label)
    except ValueError:
        parts = re.split(r"(\d+)", label)
        return (1, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), label)


def ordered_strata(labels: Iterable[str]) -> list[str]:
    """Unique stratum labels in reading order.

    Bin labels (``[0.01,0.05)``) sort by their bounds, numbers numerically, and other labels
    naturally (``tile2`` before ``tile10``).
    """
    return sorted({str(label) for label in labels}, key=_stratum_key)


def lower_is_better(metric: str) -> bool:
    """True for error-like metrics (RMSE, MSE, MAE, loss, error and standard errors)."""
    name = metric.lower()
    return name.endswith("_se") or any(word in name for word in ("mse", "mae", "error", "loss"))


def metric_label(metric: str) -> str:
    """Readable metric name for axes and titles (``aggregate_r2`` -> ``aggregate r²``)."""
    words = []
    for word in metric.split("_"):
        words.append({"r2": "r²", "iqs": "IQS", "f1": "F1", "rmse": "RMSE", "mse": "MSE",
                      "mae": "MAE", "se": "SE", "auc": "AUC"}.get(word, word))
    return " ".join(words)


def categoricals_as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with categorical columns turned back into strings (for output tables)."""
    return frame.astype({c: "string" for c in frame.columns
                         if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _metric_per_run(rows: pd.DataFrame, metric: str, stratum_kind: str) -> pd.DataFrame:
    """One row per (method, stratum, run): value, its stored SE and n."""
    rows = rows[rows["stratum_kind"] == stratum_kind]
    keys = ["method", "stratum", "run_id"]
    values = rows.loc[rows["metric"] == metric, [*keys, "value", "n"]]
    errors = rows.loc[rows["metric"] == f"{metric}_se", [*keys, "value"]]
    values = categoricals_as_strings(values)
    errors = categoricals_as_strings(errors).rename(columns={"value": "se"})
    return values.merge(errors, on=keys, how="left")


def summarise(rows: pd.DataFrame, metric: str, stratum_kind: str) -> pd.DataFrame:
    """A metric per method and stratum, with its standard error: what the curves and bars show.

    Parameters
    ----------
    rows
        Results-store rows (any subset; usually one dataset and scenario).
    metric
        Metric name; its standard error is read from the ``<metric>_se`` rows when stored.
    stratum_kind
        Which strata (``maf_bin``, ``population``...).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, stratum, position, value, se, n, runs``; ``position`` is the stratum's
        place in :func:`ordered_strata`. With one run per method, ``se`` is the stored SE; when
        several runs are kept, ``value`` is their mean and ``se`` the standard error of that mean
        across runs. Strata a method lacks are simply absent.
    """
    columns = ["method", "stratum", "position", "value", "se", "n", "runs"]
    per_run = _metric_per_run(rows, metric, stratum_kind)
    if per_run.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "se") else "object")
                             for c in columns})
    grouped = per_run.groupby(["method", "stratum"], sort=False).agg(
        value=("value", "mean"), spread=("value", "std"), stored_se=("se", "first"),
        n=("n", "mean"), runs=("run_id", "nunique")).reset_index()
    several = grouped["runs"] > 1
    grouped["se"] = np.where(several, grouped["spread"] / np.sqrt(grouped["runs"]),
                             grouped["stored_se"])
    grouped["n"] = grouped["n"].round().astype("int64")
    order = {label: i for i, label in enumerate(ordered_strata(grouped["stratum"]))}
    grouped["position"] = grouped["stratum"].map(order).astype("int64")
    grouped = grouped.sort_values(["method", "position"], kind="stable")
    return grouped[columns].reset_index(drop=True)


def compare_methods(rows: pd.DataFrame, metric: str, stratum_kind: str, method_x: str,
                    method_y: str) -> pd.DataFrame:
    """Paired values of two methods on the strata both have (``stratum, x, y, n_x, n_y``).

    Values are averaged over runs when several are kept; strata where either value is missing
    or NaN are dropped.
    """
    per_run = _metric_per_run(rows, metric, stratum_kind)
    means = per_run.groupby(["method", "stratum"], sort=False).agg(
        value=("value", "mean"), n=("n", "mean")).reset_index()
    left = means[means["method"] == method_x].drop(columns="method")
    right = means[means["method"] == method_y].drop(columns="method")
    pairs = left.merge(right, on="stratum", suffixes=("_x", "_y"))
    pairs = pairs.rename(columns={"value_x": "x", "value_y": "y"}).dropna(subset=["x", "y"])
    order = {label: i for i, label in enumerate(ordered_strata(pairs["stratum"]))}
    pairs = pairs.assign(order=pairs["stratum"].map(order)).sort_values("order", kind="stable")
    return pairs[["stratum", "x", "y", "n_x", "n_y"]].reset_index(drop=True)


def win_counts(pairs: pd.DataFrame, metric: str, method_x: str, method_y: str,
               tolerance: float = 1e-12) -> dict[str, int]:
    """How many strata each method wins in :func:`compare_methods` output, and ties.

    Higher is better unless :func:`lower_is_better`. Keys: ``method_x``, ``method_y``, ``"ties"``
    (equal names give only ties).
    """
    diff = (pairs["y"] - pairs["x"]).to_numpy(dtype=float)
    if lower_is_better(metric):
        diff = -diff
    y_wins = int(np.sum(diff > tolerance))
    x_wins = int(np.sum(diff < -tolerance))
    ties = len(diff) - x_wins - y_wins
    if method_x == method_y:
        return {method_x: 0, "ties": len(diff)}
    return {method_x: x_wins, method_y: y_wins, "ties": ties}


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of ``x1 / n1`` against ``x2 / n2``.

    For win counts: does one method win a larger share of strata than the other (or than
    before)? NaN when either ``n`` is 0; 1.0 when the pooled proportion is 0 or 1.

    >>> round(two_proportion_p(30, 50, 15, 50), 4)
    0.0026
    """
    from scipy import stats

    if min(n1, n2) == 0:
        return math.nan
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * stats.norm.sf(abs(x1 / n1 - x2 / n2) / se)) if se > 0 else 1.0


def costs(rows: pd.DataFrame) -> pd.DataFrame:
    """Cost per method, mean over runs.

    Columns ``method, runtime_s, fit_seconds, impute_seconds, peak_memory_mb, runs``;
    ``runtime_s`` is the total (fit plus impute), and the split is NaN for runs stored without it.
    """
    columns = ["runtime_s", "fit_seconds", "impute_seconds", "peak_memory_mb"]
    runs = rows.drop_duplicates("run_id").reindex(columns=["method", "run_id", *columns])
    runs = categoricals_as_strings(runs).astype({c: "float64" for c in columns})
    table = runs.groupby("method", sort=True).agg(
        **{c: (c, "mean") for c in columns}, runs=("run_id", "nunique")).reset_index()
    return table


def runtime_phases(cost_table: pd.DataFrame) -> pd.DataFrame:
    """What the runtime plot draws: ``method, phase, seconds, runs`` from :func:`costs`.

    A method with fit and impute times recorded gives a ``fit`` and an ``impute`` row; one
    without them (runs stored before the split existed) gives its ``total`` runtime. Methods
    with nothing recorded are left out.
    """
    out = []
    for row in cost_table.itertuples(index=False):
        split = {"fit": row.fit_seconds, "impute": row.impute_seconds}
        if all(np.isfinite(v) for v in split.values()):
            out += [(row.method, phase, float(v), row.runs) for phase, v in split.items()]
        elif np.isfinite(row.runtime_s):
            out.append((row.method, "total", float(row.runtime_s), row.runs))
    return pd.DataFrame(out, columns=["method", "phase", "seconds", "runs"])


def run_provenance(rows: pd.DataFrame, run_id: str) -> dict[str, Any]:
    """Everything the store knows about one run: identity, cost, parameters, checksum, code.

    ``parameters`` is parsed from its JSON (kept as text if it is not valid JSON).

    Raises
    ------
    KeyError
        If no row has this ``run_id``.
    """
    match = rows[rows["run_id"] == run_id]
    if match.empty:
        raise KeyError(f"no run {run_id!r} in the results shown")
    first = match.iloc[0]
    try:
        parameters: Any = json.loads(str(first["parameters"]))
    except (TypeError, ValueError):
        parameters = str(first["parameters"])
    record: dict[str, Any] = {key: str(first[key]) for key in
                              ("run_id", "timestamp", "task", "dataset", "scenario", "method")}
    record["runtime_s"] = float(first["runtime_s"])
    for key in ("fit_seconds", "impute_seconds"):
        value = float(first[key]) if key in first.index else math.nan
        record[key] = None if math.isnan(value) else value
    peak = float(first["peak_memory_mb"])
    record["peak_memory_mb"] = None if math.isnan(peak) else peak
    record["parameters"] = parameters
    record["data_checksum"] = str(first["data_checksum"])
    record["code_version"] = str(first["code_version"])
    record["rows"] = len(match)
    record["metrics"] = sorted(str(m) for m in match["metric"].unique())
    return record


def win_percentages(rows: pd.DataFrame, method: str, baselines: Sequence[str], *,
                    metrics: Sequence[str], stratum_kind: str = "track",
                    by: Sequence[str] = ()) -> pd.DataFrame:
    """How often ``method`` beats each baseline, paired by stratum (e.g. eDICE Fig. 2c).

    Per metric (and per group of the ``by`` columns) the strata where both methods have a value
    are paired (:func:`compare_methods`); a win is a better value (:func:`win_counts`: lower for
    :func:`lower_is_better` metrics), and ties are not wins.

    Parameters
    ----------
    rows
        Results-store rows.
    method, baselines
        The method and those it is compared with.
    metrics
        Metrics to compare on.
    stratum_kind
        The strata paired (``track``, ``tile``...).
    by
        Columns of ``rows`` to compare within, e.g. a dataset.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, ``metric``, ``baseline``, ``strata`` (paired), ``wins`` and ``win_pct``
        (NaN without paired strata).
    """
    by = list(by)
    groups = rows.groupby(by, sort=True) if by else [((), rows)]
    out = []
    for key, part in groups:
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        for metric in metrics:
            for baseline in baselines:
                pairs = compare_methods(part, metric, stratum_kind, method, baseline)
                wins = win_counts(pairs, metric, method, baseline)[method]
                out.append({**labels, "metric": metric, "baseline": baseline,
                            "strata": len(pairs), "wins": wins,
                            "win_pct": 100 * wins / len(pairs) if len(pairs) else math.nan})
    return pd.DataFrame(out, columns=[*by, "metric", "baseline", "strata", "wins", "win_pct"])


def _best(column: pd.Series) -> Any:
    values = column.dropna()
    if values.empty:
        return None
    return values.idxmin() if lower_is_better(str(column.name)) else values.idxmax()


def best_methods(means: pd.DataFrame) -> pd.DataFrame:
    """The method ranking first on each metric: lowest if :func:`lower_is_better`, else highest.

    Parameters
    ----------
    means
        One column per metric; the index's ``method`` level (or the index itself) names the
        methods, any other levels are groups ranked apart (e.g. datasets).

    Returns
    -------
    pandas.DataFrame
        One row per group (a single row without groups), one column per metric: the best
        method's name (None where no method has a value).

    Examples
    --------
    >>> means = pd.DataFrame({"mse": [0.2, 0.1], "pearson": [0.9, 0.8]}, index=["a", "b"])
    >>> best_methods(means.rename_axis("method"))
      mse pearson
    0   b       a
    """
    others = [n for n in means.index.names if n != "method"]
    if not others:
        return means.apply(_best).to_frame().T
    return means.groupby(level=others).apply(lambda part: part.droplevel(others).apply(_best))


def leader_verdict(means: pd.DataFrame, method: str, *, name: str | None = None,
                   labels: Mapping[str, str] | None = None, title: str = "") -> str:
    """Whether ``method`` ranks first on most metrics, as a paper claims, in printable lines.

    Parameters
    ----------
    means
        Index the methods, one column per metric (e.g. means over test tracks).
    method
        The method the claim is about.
    name
        Its name in the text (default ``method``).
    labels
        Metric -> name in the text.
    title
        Prefix of the first line (e.g. the dataset).

    Returns
    -------
    str
        A first line saying on how many metrics ``method`` ranks first and whether "first on
        most metrics" holds, then one line per metric: its value and how many of the other
        methods it beats.
    """
    labels = dict(labels or {})
    name = name or method
    firsts, lines = [], []
    for metric in means.columns:
        label = labels.get(metric, metric)
        signed = means[metric] * (-1 if lower_is_better(metric) else 1)
        if _best(means[metric]) == method:
            firsts.append(label)
        beaten = [m for m in means.index if m != method and signed[method] > signed[m]]
        lines.append(f"  {label}: {name} {means.at[method, metric]:.3f}, ahead of "
                     f"{len(beaten)} of {len(means.index) - 1} baselines")
    verdict = "reproduced" if len(firsts) > len(means.columns) / 2 else "NOT reproduced"
    head = (f"{title + ': ' if title else ''}{name} first on {len(firsts)} of "
            f"{len(means.columns)} metrics ({', '.join(firsts) or 'none'}); the paper's "
            f"'first on most metrics' is {verdict}.")
    return "\n".join([head, *lines])
