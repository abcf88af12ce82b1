"""Run the numbered notebooks (``notebooks/NN_topic.ipynb``) in order with papermill.

Each notebook has a cell tagged ``parameters`` whose typed defaults are the quick settings
(``quick: bool = True``). The runner injects ``quick``, the figure folder and the results
store folder (to notebooks that declare them), plus any user parameters, and writes executed copies to ``build/notebooks/``. A failure raises
:class:`NotebookError` naming the notebook and the failing cell; the executed copy is kept for
inspection. papermill is imported only when a notebook runs.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysislib.errors import InvalidArgumentError, NotebookError

__all__ = [
    "NotebookError",
    "NotebookRun",
    "declared_parameters",
    "find_notebooks",
    "format_runs",
    "load_parameters_file",
    "parse_parameter",
    "run_notebooks",
    "strip_outputs",
]

_NUMBERED = re.compile(r"^\d\d_.+\.ipynb$")


@dataclass(frozen=True)
class NotebookRun:
    """Outcome of one notebook execution."""

    notebook: Path
    output: Path
    status: str
    seconds: float
    error: str | None = None


def find_notebooks(directory: str | os.PathLike[str], only: str | None = None) -> list[Path]:
    """Numbered notebooks in ``directory`` in run order, optionally filtered by a glob pattern.

    ``only`` matches the file name (``"00_*"``) or any substring of it (``"data_tour"``).
    """
    found = sorted(p for p in Path(directory).glob("*.ipynb") if _NUMBERED.match(p.name))
    if only:
        pattern = only if any(ch in only for ch in "*?[") else f"*{only}*"
        found = [p for p in found if fnmatch.fnmatch(p.name, pattern)]
    return found


def declared_parameters(notebook: str | os.PathLike[str]) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (empty if there is none)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            names = {node.target.id for node in tree.body
                     if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
            names |= {target.id for node in tree.body if isinstance(node, ast.Assign)
                      for target in node.targets if isinstance(target, ast.Name)}
            return names
    return set()


def load_parameters_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a YAML parameters file for a batch run.

    The key ``all`` holds parameters for every notebook; any other key is a notebook name, stem
    or glob pattern (``00_data_tour``, ``1?_*``) whose parameters apply to matching notebooks and
    override ``all``::

        all: {seed: 3}
        10_dias_fig1_tiling: {box_sim: 50}

    Returns
    -------
    tuple
        ``(for_all, per_notebook)``.
    """
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise InvalidArgumentError(f"{path}: expected a mapping of 'all' or notebook patterns to parameter mappings")
    for_all = dict(raw.pop("all", {}) or {})
    return for_all, {str(k): dict(v) for k, v in raw.items()}


def _parameters_for(notebook: Path, per_notebook: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for pattern, values in per_notebook.items():
        if notebook.stem == pattern or notebook.name == pattern or fnmatch.fnmatch(notebook.name, pattern) \
                or fnmatch.fnmatch(notebook.stem, pattern):
            chosen.update(values)
    return chosen


def run_notebooks(  # noqa: PLR0913 - papermill's run controls
    directory: str | os.PathLike[str] = "notebooks",
    *,
    out_dir: str | os.PathLike[str] = "build/notebooks",
    figure_dir: str | os.PathLike[str] = "build/figures",
    results_dir: str | os.PathLike[str] = "results",
    quick: bool = True,
    parameters: Mapping[str, Any] | None = None,
    notebook_parameters: Mapping[str, Mapping[str, Any]] | None = None,
    only: str | None = None,
    jobs: int = 1,
    raise_on_error: bool = True,
    kernel_name: str = "python3",
    timeout: int | None = 1800,
    progress: bool = True,
) -> list[NotebookRun]:
    """Execute the numbered notebooks and return one :class:`NotebookRun` each, in run order.

    Parameters
    ----------
    directory
        Folder holding ``NN_*.ipynb``.
    out_dir, figure_dir
        Where executed copies and figures go (created if absent).
    results_dir
        The results store the notebooks append to and read from (:mod:`analysislib.results`).
    quick
        Injected as the ``quick`` parameter: small presets when True, paper scale when False.
    parameters
        Extra parameters for every notebook (``{"seed": 3}``).
    notebook_parameters
        Parameters for named notebooks: notebook name, stem or glob -> mapping (see
        :func:`load_parameters_file`); they override ``parameters``.
    only
        Run only notebooks whose names match this pattern.
    jobs
        Notebooks run at once. The notebooks are independent (each reads the catalog and
        writes its own figures and results), so any order gives the same outputs.
    raise_on_error
        Raise :class:`NotebookError` once every notebook has finished if any failed; with False,
        failures are only reported in the returned runs' ``status`` and ``error``.
    kernel_name, timeout
        Jupyter kernel and per-cell timeout in seconds.

    Raises
    ------
    NotebookError
        Naming each failed notebook and its failing cell.
    FileNotFoundError
        If no notebook matches.
    """
    from concurrent.futures import ThreadPoolExecutor

    notebooks = find_notebooks(directory, only)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {directory}")
    out, figures = Path(out_dir).resolve(), Path(figure_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    defaults = {"quick": quick, "figure_dir": str(figures), "results_dir": str(Path(results_dir).resolve())}

    def execute(notebook: Path) -> NotebookRun:
        declared = declared_parameters(notebook)
        injected = {k: v for k, v in defaults.items() if k in declared}
        injected.update(parameters or {})
        injected.update(_parameters_for(notebook, notebook_parameters or {}))
        return _execute_one(notebook, out / notebook.name, injected, kernel_name=kernel_name,
                            timeout=timeout, progress=progress and jobs == 1)

    if jobs > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(execute, notebooks))
    else:
        runs = []
        for notebook in notebooks:
            runs.append(execute(notebook))
            if runs[-1].status != "ok" and raise_on_error:
                break
    failed = [r for r in runs if r.status != "ok"]
    if failed and raise_on_error:
        raise NotebookError("; ".join(r.error or r.notebook.name for r in failed))
    return runs


def _execute_one(notebook: Path, target: Path, parameters: dict[str, Any], *, kernel_name: str,
                 timeout: int | None, progress: bool) -> NotebookRun:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(target), parameters=parameters, kernel_name=kernel_name,
            cwd=str(notebook.parent.resolve()), progress_bar=progress, execution_timeout=timeout)
    except PapermillExecutionError as err:
        message = (f"{notebook.name} failed in cell {err.cell_index} of the executed copy "
                   f"(In [{err.exec_count}]): {err.ename}: {err.evalue}. Executed copy: {target}")
        return NotebookRun(notebook, target, "failed", time.perf_counter() - started, message)
    return NotebookRun(notebook, target, "ok", time.perf_counter() - started)


def parse_parameter(text: str) -> tuple[str, Any]:
    """Parse ``name=value`` from the command line; the value is read as YAML (``3``, ``true``)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise InvalidArgumentError(f"parameter {text!r} is not of the form name=value")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "1e-3" as text
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    return name, parsed


def format_runs(runs: Sequence[NotebookRun]) -> str:
    """A plain-text summary table of notebook runs."""
    lines = [f"{'notebook':<32} {'status':<7} {'seconds':>8}  output path"]
    lines += [f"{r.notebook.name:<32} {r.status:<7} {r.seconds:>8.1f}  {r.output}" for r in runs]
    return "\n".join(lines)


def strip_outputs(path: str | os.PathLike[str]) -> bool:
    """Remove outputs and execution counts from a notebook in place; True if it changed.

    Notebooks are committed without outputs; executed copies live in ``build/notebooks``.
    """
    from analysislib.io.atomic import atomic_output

    notebook_path = Path(path)
    notebook = json.loads(notebook_path.read_text())
    changed = False
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            changed = True
        cell["outputs"], cell["execution_count"] = [], None
    if changed:
        with atomic_output(notebook_path) as tmp:
            tmp.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return changed
