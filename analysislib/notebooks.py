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

from analysislib.errors import AnalysisLibError

__all__ = [
    "NotebookError",
    "NotebookRun",
    "declared_parameters",
    "find_notebooks",
    "run_notebooks",
    "strip_outputs",
]

_NUMBERED = re.compile(r"^\d\d_.+\.ipynb$")


class NotebookError(AnalysisLibError, RuntimeError):
    """A notebook failed; names the notebook, the cell and where the executed copy is."""


@dataclass(frozen=True)
class NotebookRun:
    """Outcome of one notebook execution."""

    notebook: Path
    output: Path
    status: str
    seconds: float


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


def run_notebooks(
    directory: str | os.PathLike[str] = "notebooks",
    *,
    out_dir: str | os.PathLike[str] = "build/notebooks",
    figure_dir: str | os.PathLike[str] = "build/figures",
    results_dir: str | os.PathLike[str] = "results",
    quick: bool = True,
    parameters: Mapping[str, Any] | None = None,
    only: str | None = None,
    kernel_name: str = "python3",
    timeout: int | None = 1800,
    progress: bool = True,
) -> list[NotebookRun]:
    """Execute the numbered notebooks in order and return one :class:`NotebookRun` each.

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
    only
        Run only notebooks whose names match this pattern.
    kernel_name, timeout
        Jupyter kernel and per-cell timeout in seconds.

    Raises
    ------
    NotebookError
        On the first failing notebook, naming it and the failing cell.
    FileNotFoundError
        If no notebook matches.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebooks = find_notebooks(directory, only)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {directory}")
    out, figures = Path(out_dir).resolve(), Path(figure_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    runs = []
    for notebook in notebooks:
        declared = declared_parameters(notebook)
        defaults = {"quick": quick, "figure_dir": str(figures),
                    "results_dir": str(Path(results_dir).resolve())}
        injected = {k: v for k, v in defaults.items() if k in declared}
        injected.update(parameters or {})
        target = out / notebook.name
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(notebook), str(target), parameters=injected, kernel_name=kernel_name,
                cwd=str(notebook.parent.resolve()), progress_bar=progress,
                execution_timeout=timeout)
        except PapermillExecutionError as err:
            raise NotebookError(
                f"{notebook.name} failed in cell {err.cell_index} of the executed copy "
                f"(In [{err.exec_count}]): {err.ename}: {err.evalue}. Executed copy: {target}"
            ) from err
        runs.append(NotebookRun(notebook, target, "ok", time.perf_counter() - started))
    return runs


def parse_parameter(text: str) -> tuple[str, Any]:
    """Parse ``name=value`` from the command line; the value is read as YAML (``3``, ``true``)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"parameter {text!r} is not of the form name=value")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "1e-3" as text
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    return name, parsed


def format_runs(runs: Sequence[NotebookRun]) -> str:
    """A plain-text summary table of notebook runs."""
    lines = [f"{'notebook':<32} {'status':<7} {'seconds':>8}  output"]
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
