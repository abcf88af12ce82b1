"""The methods dashboard: a Panel app over the results store.

It reads :class:`analysislib.results.ResultsStore` and nothing else, so a new task, method or
dataset appears as soon as its rows are stored. The user picks a task, dataset, scenario, methods
and metric, and sees

* the metric per stratum (MAF bin by default) as curves with ± 1 SE error bars,
* one method against another per tile (or per variant), with the identity line and win counts,
* the metric per population (or any other stratum kind) as grouped bars,
* runtime per method, split into fit and impute time where recorded, and peak memory,
* the underlying rows, with CSV download, and the provenance of any run (parameters, data
  checksum, code version).

The aggregation is plain pandas in :mod:`analysislib.results.summary` (:func:`summarise`,
:func:`compare_methods`, :func:`costs`, :func:`runtime_phases`, :func:`run_provenance`), applied
before anything is plotted, so a store with millions of per-variant rows still draws a few dozen
glyphs.
:class:`Dashboard` is a ``pn.viewable.Viewer`` whose state lives in parameters, so tests set
parameters and check its tables.

Serve with ``analysislib dashboard`` or ``panel serve analysislib/dashboard/app.py`` (store:
``$ANALYSISLIB_RESULTS`` or ``./results``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh
import pandas as pd
import panel as pn
import param

from analysislib.results.store import COLUMNS, RESULTS_ENV, ResultsStore
from analysislib.results.summary import (
    categoricals_as_strings,
    compare_methods,
    costs,
    list_tasks,
    lower_is_better,
    metric_label,
    ordered_strata,
    run_provenance,
    runtime_phases,
    summarise,
    win_counts,
)

__all__ = ["Dashboard"]

# Bokeh is the plotting backend (the import above registers its renderer and options).
hv.Store.set_current_backend("bokeh")

PLOT_HEIGHT = 340
# Above this many points the method-vs-method plot bins them into hexagons instead.
MAX_SCATTER_POINTS = 5000
# Tableau 10: one fixed colour per method, the same in every plot.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
# Metrics listed first in the metric menu, when present.
PREFERRED_METRICS = ("r2", "aggregate_r2", "concordance", "iqs", "f1", "genotype_accuracy")
KIND_LABELS = {"maf_bin": "MAF bin", "all": "all", "tile": "tile", "population": "population",
               "variant": "variant", "sample": "sample", "assay": "assay"}
# Stratum kinds the plots choose by default, in order of preference.
CURVE_KINDS = ("maf_bin",)
GROUP_KINDS = ("population",)
SCATTER_KINDS = ("tile", "variant")
# Runtime bars: one colour per phase of a run (total where fit and impute were not recorded).
PHASE_COLORS = {"fit": "#4e79a7", "impute": "#f28e2b", "total": "#9c755f"}
TABLE_COLUMNS = ("run_id", "dataset", "scenario", "method", "metric", "stratum_kind", "stratum",
                 "value", "n")
_HOW_TO = """\
**The results store at `{root}` holds no results yet.**

The dashboard shows what evaluations wrote there. Produce some with, for example,

```bash
analysislib evaluate --method allele_frequency --dataset sim_genotypes_quick --scenario typed_1in3 --results {root}
analysislib evaluate --method beagle --dataset 1kg_chr22_array500 --scenario array_omni15 --results {root}
```

or run the notebooks (`make demo`), then press **Reload**. Another folder can be chosen with
`analysislib dashboard --results DIR` or `${env}`.
"""


# ----------------------------------------------------------------------------- helpers


def _kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " "))


def _pick(current: Any, options: list[Any], preferred: Iterable[Any] = ()) -> Any:
    """Keep the current choice if still offered, else the first preferred option, else the first."""
    if current in options:
        return current
    for choice in preferred:
        if choice in options:
            return choice
    return options[0] if options else None


def _placeholder(title: str, message: str) -> hv.Text:
    return hv.Text(0, 0, message).opts(
        title=title, xaxis=None, yaxis=None, toolbar=None, responsive=True, height=PLOT_HEIGHT,
        text_color="#666666", text_font_size="11pt", xlim=(-1, 1), ylim=(-1, 1))


# ----------------------------------------------------------------------------- the app


class Dashboard(pn.viewable.Viewer):
    """Explore the results store: accuracy by stratum, method against method, cost, provenance.

    Every choice is a parameter, so ``Dashboard(results_dir=..., methods=[...])`` or setting
    ``app.metric = "iqs"`` drives it like the widgets do; the ``*_table`` methods and
    :meth:`provenance` expose what the plots show.

    Parameters
    ----------
    results_dir
        Results store folder; default ``$ANALYSISLIB_RESULTS`` or ``./results``.
    """

    results_dir = param.String(default=None, allow_None=True,
                               doc="Results store folder (None: $ANALYSISLIB_RESULTS or ./results)")
    latest = param.Boolean(default=True, label="Newest run of each experiment only",
                           doc="Keep only the most recent run per task, dataset, scenario and method")
    reload = param.Event(label="Reload", doc="Read the store again")
    task = param.Selector(objects=[], doc="Task (a folder of the store)")
    dataset = param.Selector(objects=[], doc="Dataset")
    scenario = param.Selector(objects=[], doc="Scenario (array density, typed fraction, missingness)")
    methods = param.ListSelector(default=[], objects=[], doc="Methods shown")
    metric = param.Selector(objects=[], doc="Metric shown")
    curve_strata = param.Selector(objects=[], label="Curve strata", doc="Strata of the curves")
    group_strata = param.Selector(objects=[], label="Bar strata", doc="Strata of the grouped bars")
    scatter_strata = param.Selector(objects=[], label="Paired strata",
                                    doc="Strata paired in the method-vs-method plot")
    method_x = param.Selector(objects=[], label="Method on x")
    method_y = param.Selector(objects=[], label="Method on y")
    run_id = param.Selector(objects=[], label="Run", doc="Run whose provenance is shown")
    include_variants = param.Boolean(default=False, label="Include per-variant rows",
                                     doc="List per-variant rows in the table and CSV too")
    revision = param.Integer(default=0, precedence=-1,
                             doc="Bumped once per change of the selection (views depend on it)")

    def __init__(self, **params: Any) -> None:
        self._syncing = False
        self._task_rows = pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})
        self._scenario_rows = self._task_rows
        self._selection = self._task_rows
        self._colors: dict[str, str] = {}
        self._methods_offered: list[str] = []
        self._hidden: set[str] = set()
        self._layout: pn.viewable.Viewable | None = None
        super().__init__(**params)
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(TABLE_COLUMNS)), pagination="remote", page_size=15,
            disabled=True, show_index=False, selectable=1, header_filters=True,
            sizing_mode="stretch_width", formatters={"value": {"type": "money", "precision": 4,
                                                               "symbol": "", "thousand": ""}})
        self._table.param.watch(self._on_row_selected, "selection")
        self._download = pn.widgets.FileDownload(callback=self.csv, filename="results.csv",
                                                 label="Download CSV", width=200)
        self._tabs: pn.Tabs | None = None
        self._sync("store")
        if params.get("methods"):  # an explicit choice at construction hides the rest
            self.methods = [m for m in self._methods_offered if m in params["methods"]]

    # -- state ---------------------------------------------------------------------------

    @property
    def store(self) -> ResultsStore:
        """The results store read."""
        return ResultsStore(self.results_dir)

    @property
    def has_results(self) -> bool:
        """Whether the store holds any task."""
        return self.task is not None

    @property
    def selection(self) -> pd.DataFrame:
        """Stored rows of the chosen task, dataset, scenario and methods (all metrics and strata)."""
        return self._selection

    @param.depends("results_dir", "latest", "reload", watch=True)
    def _on_store(self) -> None:
        self._sync("store")

    @param.depends("task", watch=True)
    def _on_task(self) -> None:
        self._sync("task")

    @param.depends("dataset", watch=True)
    def _on_dataset(self) -> None:
        self._sync("dataset")

    @param.depends("scenario", watch=True)
    def _on_scenario(self) -> None:
        self._sync("scenario")

    @param.depends("methods", watch=True)
    def _on_methods(self) -> None:
        if not self._syncing:
            # Remember what the user hid, so other scenarios and new methods show by default.
            self._hidden = {m for m in self._methods_offered if m not in self.methods}
        self._sync("methods")

    def _read_task(self, task: str | None) -> pd.DataFrame:
        if task is None:
            return self._task_rows.iloc[:0]
        rows = self.store.read(task, latest=self.latest)
        # Categories make the repeated filtering cheap on large stores.
        kinds = ("dataset", "scenario", "method", "metric", "stratum_kind", "run_id")
        return rows.astype({c: "category" for c in kinds})

    def _sync(self, level: str) -> None:
        """Recompute the options below ``level`` and the rows they select; one revision bump."""
        if self._syncing:
            return
        levels = ("store", "task", "dataset", "scenario", "methods")
        start = levels.index(level)
        self._syncing = True
        try:
            with param.parameterized.batch_call_watchers(self):
                if start <= 0:
                    tasks = list_tasks(self.store)
                    self._choose("task", tasks, _pick(self.task, tasks, ["genotype_imputation"]))
                if start <= 1:
                    self._task_rows = self._read_task(self.task)
                    methods_all = sorted(str(m) for m in self._task_rows["method"].unique())
                    self._colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods_all)}
                    datasets = sorted(str(d) for d in self._task_rows["dataset"].unique())
                    self._choose("dataset", datasets, _pick(self.dataset, datasets))
                if start <= 2:
                    rows = self._task_rows[self._task_rows["dataset"] == self.dataset]
                    scenarios = ordered_strata(rows["scenario"].unique())
                    self._choose("scenario", scenarios, _pick(self.scenario, scenarios))
                if start <= 3:
                    self._sync_scenario()
                self._sync_methods()
                self.revision += 1
        finally:
            self._syncing = False

    def _choose(self, name: str, options: list[Any] | dict[str, Any], value: Any) -> None:
        # Value first: an unknown value is appended to the objects, which are then replaced.
        setattr(self, name, value)
        self.param[name].objects = options

    def _sync_scenario(self) -> None:
        rows = self._task_rows
        rows = rows[(rows["dataset"] == self.dataset) & (rows["scenario"] == self.scenario)]
        self._scenario_rows = rows
        methods = sorted(str(m) for m in rows["method"].unique())
        shown = [m for m in methods if m not in self._hidden]
        self._choose("methods", methods, shown or methods)
        summary_rows = rows[rows["stratum_kind"] != "variant"]
        metrics = sorted({str(m) for m in summary_rows["metric"].unique()} or
                         {str(m) for m in rows["metric"].unique()})
        metrics = [m for m in metrics if not m.endswith("_se")]
        metrics = ([m for m in PREFERRED_METRICS if m in metrics]
                   + [m for m in metrics if m not in PREFERRED_METRICS])
        self._choose("metric", metrics, _pick(self.metric, metrics))
        kinds = ordered_strata(str(k) for k in rows["stratum_kind"].unique())
        stratified = [k for k in kinds if k != "all"]
        curve_kinds = [k for k in stratified if k != "variant"]
        self._choose("curve_strata", curve_kinds, _pick(self.curve_strata, curve_kinds, CURVE_KINDS))
        self._choose("group_strata", kinds, _pick(self.group_strata, kinds, (*GROUP_KINDS, "all")))
        self._choose("scatter_strata", stratified,
                     _pick(self.scatter_strata, stratified, SCATTER_KINDS))
        self._methods_offered = methods

    def _sync_methods(self) -> None:
        rows = self._scenario_rows
        self._selection = rows[rows["method"].isin(self.methods)] if self.methods else rows.iloc[:0]
        chosen = [m for m in self._methods_offered if m in self.methods]
        method_x = _pick(self.method_x if self.method_x in chosen else None, chosen)
        others = [m for m in chosen if m != method_x]
        method_y = _pick(self.method_y if self.method_y in others else None, others) or method_x
        self._choose("method_x", chosen, method_x)
        self._choose("method_y", chosen, method_y)
        runs = self._selection.drop_duplicates("run_id").sort_values(["method", "run_id"])
        labels = {f"{r.method} · {r.timestamp} · {r.run_id}": str(r.run_id)
                  for r in runs.itertuples()}
        self._choose("run_id", labels, _pick(self.run_id, list(labels.values())))
        parts = [p for p in (self.task, self.dataset, self.scenario) if p]
        self._download.filename = "_".join([*parts, "results"]).replace("/", "_") + ".csv"
        self._table.value = self.table_rows()[list(TABLE_COLUMNS)]

    @param.depends("include_variants", watch=True)
    def _on_include_variants(self) -> None:
        self._table.value = self.table_rows()[list(TABLE_COLUMNS)]

    # -- tables --------------------------------------------------------------------------

    def curve_table(self) -> pd.DataFrame:
        """What the curves show: :func:`summarise` of the metric over ``curve_strata``."""
        if self.metric is None or self.curve_strata is None:
            return summarise(self._selection.iloc[:0], "", "")
        return summarise(self._selection, self.metric, self.curve_strata)

    def group_table(self) -> pd.DataFrame:
        """What the grouped bars show: :func:`summarise` of the metric over ``group_strata``."""
        if self.metric is None or self.group_strata is None:
            return summarise(self._selection.iloc[:0], "", "")
        return summarise(self._selection, self.metric, self.group_strata)

    def scatter_table(self) -> pd.DataFrame:
        """What the method-vs-method plot shows: :func:`compare_methods`."""
        if None in (self.metric, self.scatter_strata, self.method_x, self.method_y):
            return pd.DataFrame(columns=["stratum", "x", "y", "n_x", "n_y"])
        return compare_methods(self._selection, self.metric, self.scatter_strata,
                               self.method_x, self.method_y)

    def win_counts(self) -> dict[str, int]:
        """Strata won by ``method_x`` and ``method_y`` in :meth:`scatter_table`, and ties."""
        if self.method_x is None or self.metric is None:
            return {}
        return win_counts(self.scatter_table(), self.metric, self.method_x, self.method_y)

    def cost_table(self) -> pd.DataFrame:
        """Runtime and peak memory per chosen method (:func:`costs`)."""
        return costs(self._selection)

    def table_rows(self) -> pd.DataFrame:
        """The rows listed in the table and the CSV (all columns; per-variant rows on request)."""
        rows = self._selection
        if not self.include_variants:
            rows = rows[rows["stratum_kind"] != "variant"]
        return categoricals_as_strings(rows).reset_index(drop=True)

    def csv(self) -> io.StringIO:
        """The table's rows as CSV (the download button's content)."""
        buffer = io.StringIO()
        self.table_rows().to_csv(buffer, index=False)
        buffer.seek(0)
        return buffer

    def provenance(self) -> dict[str, Any]:
        """:func:`run_provenance` of the chosen run (empty when nothing is selected)."""
        if self.run_id is None or self._selection.empty:
            return {}
        return run_provenance(self._selection, self.run_id)

    def _on_row_selected(self, event: param.parameterized.Event) -> None:
        if not event.new:
            return
        row = self._table.value.iloc[event.new[0]]
        if row["run_id"] in self.param.run_id.objects:
            self.run_id = row["run_id"]
            if self._tabs is not None:
                self._tabs.active = len(self._tabs) - 1

    # -- plots ---------------------------------------------------------------------------

    def _shown(self, present: Iterable[str]) -> list[str]:
        """Chosen methods that have rows in ``present``, in menu order."""
        present = set(present)
        return [m for m in self._methods_offered if m in self.methods and m in present]

    def _why_empty(self) -> str:
        if not self.has_results:
            return "No results in the store yet"
        if not self.methods:
            return "Select at least one method"
        return f"No {metric_label(self.metric or '')} rows for these strata"

    @param.depends("revision", "metric", "curve_strata")
    def curve_plot(self) -> hv.Element:
        """The metric per stratum, one line per method, with ± 1 SE error bars."""
        table = self.curve_table()
        kind = _kind_label(self.curve_strata or "stratum")
        title = f"{metric_label(self.metric or 'metric')} by {kind} (± 1 SE)"
        if table.empty:
            return _placeholder(title, self._why_empty())
        labels = ordered_strata(table["stratum"])
        methods = self._shown(table["method"])
        # Dodge the methods a little so their error bars do not hide each other.
        width = 0.25 if len(methods) > 1 else 0.0
        from bokeh.models import TeeHead

        overlays = []
        for i, method in enumerate(methods):
            part = table[table["method"] == method].copy()
            offset = (i / (len(methods) - 1) - 0.5) * width if len(methods) > 1 else 0.0
            part["x"] = part["position"] + offset
            color = self._colors.get(method, PALETTE[0])
            vdims = [hv.Dimension("value", label=metric_label(self.metric)), "se", "stratum",
                     "n", "method"]
            overlays.append(hv.Curve(part, "x", vdims, label=method).opts(color=color, line_width=2))
            caps = {end: TeeHead(line_color=color, size=8) for end in ("upper_head", "lower_head")}
            overlays.append(hv.ErrorBars(part, "x", ["value", "se"]).opts(color=color, **caps))
            overlays.append(hv.Scatter(part, "x", vdims, label=method).opts(
                color=color, size=7, tools=["hover"]))
        return hv.Overlay(overlays).opts(
            title=title, xlabel=kind, ylabel=metric_label(self.metric),
            xticks=list(enumerate(labels)), xlim=(-0.5, len(labels) - 0.5), show_grid=True,
            legend_position="right", responsive=True, height=PLOT_HEIGHT,
            xrotation=30 if len(labels) > 6 else 0)

    @param.depends("revision", "metric", "group_strata")
    def group_plot(self) -> hv.Element:
        """The metric per stratum (population by default) as bars grouped by method."""
        table = self.group_table()
        kind = _kind_label(self.group_strata or "stratum")
        title = f"{metric_label(self.metric or 'metric')} by {kind}"
        if table.empty:
            return _placeholder(title, self._why_empty())
        methods = self._shown(table["method"])
        # Holoviews colours grouped bars in input order but draws them method by method: give
        # it the full grid, method-major, so each colour lands on its method.
        grid = pd.MultiIndex.from_product([methods, ordered_strata(table["stratum"])],
                                          names=["method", "stratum"])
        table = table.set_index(["method", "stratum"]).reindex(grid).reset_index()
        bars = hv.Bars(table, [hv.Dimension("stratum", label=kind), "method"],
                       [hv.Dimension("value", label=metric_label(self.metric)), "se", "n"])
        return bars.opts(
            title=title, color=hv.dim("method").categorize(self._colors, default=PALETTE[0]),
            tools=["hover"], responsive=True, height=PLOT_HEIGHT, show_legend=False,
            ylabel=metric_label(self.metric), xlabel=kind,
            show_grid=True, multi_level=False)

    @param.depends("revision", "metric", "scatter_strata", "method_x", "method_y")
    def scatter_plot(self) -> hv.Element:
        """One method against another per stratum (tile by default), identity line and wins."""
        kind = _kind_label(self.scatter_strata or "stratum")
        label = metric_label(self.metric or "metric")
        title = f"{label} per {kind}: {self.method_y} (y) vs {self.method_x} (x)"
        pairs = self.scatter_table()
        if pairs.empty:
            return _placeholder(title, self._why_empty())
        wins = self.win_counts()
        low = float(min(pairs["x"].min(), pairs["y"].min()))
        high = float(max(pairs["x"].max(), pairs["y"].max()))
        pad = 0.05 * (high - low) if high > low else 0.05
        low, high = low - pad, high + pad
        # Explicit ranges: hexagon sizes come from them, and one method may be constant.
        xdim = hv.Dimension("x", label=f"{label}, {self.method_x}", range=(low, high))
        ydim = hv.Dimension("y", label=f"{label}, {self.method_y}", range=(low, high))
        if len(pairs) > MAX_SCATTER_POINTS:
            points = hv.HexTiles(pairs, [xdim, ydim]).opts(
                cmap="Blues", cnorm="log", colorbar=True, clabel="strata per hexagon",
                tools=["hover"], min_count=1)
        else:
            points = hv.Scatter(pairs, xdim, [ydim, "stratum", "n_x", "n_y"]).opts(
                color="#4e79a7", size=6, alpha=0.7, tools=["hover"])
        identity = hv.Curve([(low, low), (high, high)], xdim, ydim).opts(
            color="#888888", line_dash="dashed", line_width=1)
        if self.method_x == self.method_y:
            summary = f"same method on both axes: {wins.get('ties', 0)} {kind}s"
        else:
            better = "lower" if lower_is_better(self.metric) else "higher"
            summary = (f"{better} is better · {self.method_y} wins {wins[self.method_y]}, "
                       f"{self.method_x} wins {wins[self.method_x]}, ties {wins['ties']}")
        text_y = hv.Text(low + 0.02 * (high - low), high - 0.04 * (high - low),
                         f"{self.method_y} better", halign="left").opts(text_color="#555555",
                                                                       text_font_size="10pt")
        text_x = hv.Text(high - 0.02 * (high - low), low + 0.04 * (high - low),
                         f"{self.method_x} better", halign="right").opts(text_color="#555555",
                                                                        text_font_size="10pt")
        return (identity * points * text_y * text_x).opts(
            title=f"{title}\n{summary}", xlim=(low, high), ylim=(low, high), show_grid=True,
            # About square, so the identity line is the diagonal (plus room for a colour bar).
            width=560 if isinstance(points, hv.Scatter) else 680, height=580)

    def _cost_plot(self, column: str, title: str, ylabel: str, missing: str) -> hv.Element:
        table = self.cost_table()
        if table.empty:
            return _placeholder(title, self._why_empty())
        table = table.dropna(subset=[column])
        table = table[table[column] > 0]
        if table.empty:
            return _placeholder(title, missing)
        log, ylim, title = self._positive_axis(table[column], table["method"], title)
        # The range on the dimension also sets where log-scale bars start.
        bars = hv.Bars(table, "method", [hv.Dimension(column, label=ylabel, range=ylim), "runs"])
        return bars.opts(
            title=title, color="method",
            cmap={m: self._colors.get(m, PALETTE[0]) for m in table["method"]},
            logy=log, tools=["hover"], responsive=True, height=PLOT_HEIGHT,
            show_legend=False, xlabel="method", ylabel=ylabel, show_grid=True)

    def _positive_axis(self, values: pd.Series, methods: pd.Series, title: str
                       ) -> tuple[bool, tuple[float, float], str]:
        """Log or linear y-range for positive values, and the title noting it and unrecorded methods."""
        low, high = float(values.min()), float(values.max())
        # Costs span orders of magnitude (allele frequencies in ms, HMMs in minutes).
        log = high / low > 50
        ylim = (10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high) + 0.1)) \
            if log else (0, high * 1.1)
        unmeasured = sorted(set(self.methods) - set(methods))
        if log:
            title += " · log scale"
        if unmeasured:
            title += f"\nnot recorded: {', '.join(unmeasured)}"
        return log, ylim, title

    @param.depends("revision")
    def runtime_plot(self) -> hv.Element:
        """Wall time of each chosen method on this scenario: fit and impute bars side by side.

        Runs stored without the split show their total runtime instead.
        """
        title = "Runtime"
        table = self.cost_table()
        if table.empty:
            return _placeholder(title, self._why_empty())
        phases = runtime_phases(table)
        phases = phases[phases["seconds"] > 0]
        if phases.empty:
            return _placeholder(title, "No runtime recorded")
        log, ylim, title = self._positive_axis(phases["seconds"], phases["method"], title)
        # Full method x phase grid, method-major (see group_plot), so colours land on phases.
        shown = [p for p in PHASE_COLORS if p in set(phases["phase"])]
        grid = pd.MultiIndex.from_product([self._shown(phases["method"]), shown],
                                          names=["method", "phase"])
        phases = phases.set_index(["method", "phase"]).reindex(grid).reset_index()
        bars = hv.Bars(phases, ["method", "phase"],
                       [hv.Dimension("seconds", label="runtime (s)", range=ylim), "runs"])
        return bars.opts(
            title=title, color=hv.dim("phase").categorize(PHASE_COLORS, default=PALETTE[0]),
            logy=log, tools=["hover"], responsive=True, height=PLOT_HEIGHT, show_legend=False,
            xlabel="method · phase", ylabel="runtime (s)", show_grid=True, multi_level=True)

    @param.depends("revision")
    def memory_plot(self) -> hv.Element:
        """Peak resident memory of each chosen method on this scenario."""
        return self._cost_plot("peak_memory_mb", "Peak memory", "peak memory (MB)",
                               "Peak memory was not measured for these methods")

    # -- text panes ----------------------------------------------------------------------

    @param.depends("revision")
    def status(self) -> str:
        """Markdown: what is shown, or how to produce results when the store is empty."""
        root = self.store.root
        if not self.has_results:
            return _HOW_TO.format(root=root, env=RESULTS_ENV)
        runs = self._task_rows["run_id"].nunique()
        shown = self._selection["run_id"].nunique()
        missing = sorted(set(self.param.methods.objects) - set(self.methods))
        text = (f"Store `{root}` · task **{self.task}**: {runs} run(s) "
                f"({'newest per experiment' if self.latest else 'all runs'}). "
                f"Showing **{self.dataset}** / **{self.scenario}**: "
                f"{len(self.methods)} method(s), {shown} run(s).")
        if missing:
            text += f" Hidden: {', '.join(missing)}."
        return text

    @param.depends("revision", "run_id")
    def provenance_view(self) -> pn.viewable.Viewable:
        """The chosen run's provenance as a table and its parameters as JSON."""
        record = self.provenance()
        if not record:
            return pn.pane.Markdown("No run selected.")
        peak = record["peak_memory_mb"]
        lines = [
            "| field | value |", "|---|---|",
            *(f"| {key} | `{record[key]}` |" for key in
              ("run_id", "timestamp", "task", "dataset", "scenario", "method")),
            f"| runtime | {record['runtime_s']:.4g} s |",
            *(f"| {label} time | "
              f"{'not recorded' if record[key] is None else format(record[key], '.4g') + ' s'} |"
              for label, key in (("fit", "fit_seconds"), ("impute", "impute_seconds"))),
            f"| peak memory | {'not measured' if peak is None else f'{peak:.1f} MB'} |",
            f"| data checksum (sha256) | `{record['data_checksum']}` |",
            f"| code version | `{record['code_version']}` |",
            f"| rows stored | {record['rows']} |",
        ]
        return pn.Column(
            pn.pane.Markdown("\n".join(lines), sizing_mode="stretch_width"),
            pn.pane.Markdown("**Parameters**"),
            pn.pane.JSON(record["parameters"], depth=-1, sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    # -- layout --------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:
            self._layout = self._build_layout()
        return self._layout

    def _build_layout(self) -> pn.viewable.Viewable:
        def plot(view: Any) -> pn.pane.HoloViews:
            # Unlinked: linked axes would keep the factors of a replaced plot.
            return pn.pane.HoloViews(view, sizing_mode="stretch_width", min_height=PLOT_HEIGHT,
                                     linked_axes=False)

        width = 240
        choices = pn.Column(
            pn.widgets.Select.from_param(self.param.task, width=width),
            pn.widgets.Select.from_param(self.param.dataset, width=width),
            pn.widgets.Select.from_param(self.param.scenario, width=width),
            pn.pane.Markdown("**Methods**", margin=(10, 10, 0, 10)),
            pn.widgets.CheckBoxGroup.from_param(self.param.methods, inline=False, name="",
                                                width=width),
            pn.widgets.Select.from_param(self.param.metric, width=width),
            margin=0)
        controls = pn.Column(
            choices,
            pn.widgets.Checkbox.from_param(self.param.latest, width=width),
            pn.widgets.Button.from_param(self.param.reload, width=120),
            width=width + 30, styles={"background": "#f5f6f8", "border-radius": "6px"},
        )
        accuracy = pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.curve_strata, width=160),
                   pn.widgets.Select.from_param(self.param.group_strata, width=160)),
            plot(self.curve_plot),
            pn.Row(plot(self.group_plot), plot(self.runtime_plot), plot(self.memory_plot),
                   sizing_mode="stretch_width"),
            sizing_mode="stretch_width")
        versus = pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.method_x, width=180),
                   pn.widgets.Select.from_param(self.param.method_y, width=180),
                   pn.widgets.Select.from_param(self.param.scatter_strata, width=160)),
            pn.pane.HoloViews(self.scatter_plot, linked_axes=False), sizing_mode="stretch_width")
        table = pn.Column(
            pn.Row(pn.widgets.Checkbox.from_param(self.param.include_variants), self._download),
            pn.pane.Markdown("Select a row to open its run's provenance."),
            self._table, sizing_mode="stretch_width")
        provenance = pn.Column(pn.widgets.Select.from_param(self.param.run_id, width=520),
                               self.provenance_view, sizing_mode="stretch_width")
        self._tabs = pn.Tabs(("Accuracy", accuracy), ("Method vs method", versus),
                             ("Rows", table), ("Provenance", provenance),
                             sizing_mode="stretch_width", dynamic=False)
        # With an empty store only the how-to text, the store options and Reload are shown.
        def show_if_results(*_: Any) -> None:
            self._tabs.visible = choices.visible = self.has_results

        show_if_results()
        self.param.watch(show_if_results, "revision")
        header = pn.pane.Markdown("## analysislib · methods dashboard", margin=(0, 10))
        main = pn.Column(pn.pane.Markdown(self.status, sizing_mode="stretch_width"), self._tabs,
                         sizing_mode="stretch_width")
        return pn.Column(header, pn.Row(controls, main, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")


if pn.state.served:
    pn.extension("tabulator")
    Dashboard().servable(title="analysislib methods")
