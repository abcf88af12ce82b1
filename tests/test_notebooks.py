"""Every numbered notebook runs end to end in quick mode, and is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysislib.notebooks import NotebookError, find_notebooks, run_notebooks, strip_outputs

PROJECT_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = find_notebooks(PROJECT_ROOT / "notebooks")


def test_notebooks_are_found_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names == sorted(names) and names and names[0].startswith("00_")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "quick: bool = True" in "".join(tagged[0]["source"])


#: Notebooks call the library; analysis and figure code lives in analysislib.
MAX_CODE_LINES = 80


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_thin(notebook):
    code = [line for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    definitions = [line.strip() for line in code if line.lstrip().startswith(("def ", "class "))]
    assert definitions == [], "move functions and classes into analysislib"
    assert len(code) < MAX_CODE_LINES, f"{len(code)} lines of code; move analysis into analysislib"


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(notebook, data_mirror, tmp_path):
    out = PROJECT_ROOT / "build" / "test-notebooks"
    runs = run_notebooks(notebook.parent, out_dir=out, figure_dir=tmp_path / "figures",
                         results_dir=tmp_path / "results", quick=True, only=notebook.name,
                         progress=False)
    assert [r.status for r in runs] == ["ok"]
    executed = json.loads(runs[0].output.read_text())
    assert any(c.get("outputs") for c in executed["cells"])
    assert any((tmp_path / "figures").iterdir()), "notebook saved no figure"


def test_failure_names_notebook_and_cell(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick: bool = True")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, tmp_path / "07_broken.ipynb")
    with pytest.raises(NotebookError, match=r"07_broken.ipynb failed in cell 3.*ZeroDivisionError"):
        run_notebooks(tmp_path, out_dir=tmp_path / "out", figure_dir=tmp_path / "fig", progress=False)
    assert (tmp_path / "out" / "07_broken.ipynb").exists()


def test_strip_outputs_round_trip(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    cell.execution_count = 1
    nb.cells = [cell]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    assert strip_outputs(path) is True
    assert strip_outputs(path) is False
    stripped = nbformat.read(path, as_version=4)
    assert stripped.cells[0].outputs == [] and stripped.cells[0].source == "print(1)"


def _tiny_notebook(path, source, params="quick: bool = True\nlabel: str = 'x'"):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, path)


def test_batch_run_in_parallel_with_parameters_file(tmp_path):
    from analysislib.cli import main

    folder = tmp_path / "nbs"
    folder.mkdir()
    for name in ("01_a", "02_b", "03_c"):
        _tiny_notebook(folder / f"{name}.ipynb", "print('label=' + label)")
    _tiny_notebook(folder / "04_bad.ipynb", "raise RuntimeError('boom')")
    params = tmp_path / "params.yaml"
    params.write_text("all: {label: common}\n02_b: {label: special}\n")
    code = main(["notebooks", "run", "--notebooks", str(folder), "--out", str(tmp_path / "out"),
                 "--figures", str(tmp_path / "fig"), "-f", str(params), "--jobs", "2"])
    assert code == 1  # 04_bad failed, the others still ran
    outputs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.ipynb")}
    assert set(outputs) == {"01_a", "02_b", "03_c", "04_bad"}

    def printed(stem):
        return "".join("".join(o.get("text", "")) for c in outputs[stem]["cells"] for o in c.get("outputs", []))

    assert "label=common" in printed("01_a") and "label=special" in printed("02_b")
