from __future__ import annotations

import pytest

from analysislib.cli import main
from analysislib.notebooks import declared_parameters, find_notebooks, parse_parameter


def test_catalog_list_prints_every_dataset(capsys):
    assert main(["catalog", "list"]) == 0
    out = capsys.readouterr().out
    assert "1kg_chr22_array500" in out and "simulated" in out


def test_catalog_fetch_prints_local_paths(capsys, data_mirror):
    assert main(["catalog", "fetch", "1kg_chr22_array500"]) == 0
    assert str(data_mirror / "genotypes/1kg_phase3_chr22_array500.vcf.gz") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [("quick=false", ("quick", False)), ("n=300", ("n", 300)), ("name=E003", ("name", "E003")),
     ("rate=1e-3", ("rate", 1e-3))],
)
def test_parse_parameter_reads_yaml_values(text, expected):
    assert parse_parameter(text) == expected


def test_parse_parameter_rejects_garbage():
    with pytest.raises(ValueError, match="name=value"):
        parse_parameter("no equals sign")


def test_run_without_matching_notebooks_fails_cleanly(tmp_path, capsys):
    assert main(["notebooks", "run", "--notebooks", str(tmp_path), "--only", "99_*"]) == 1
    assert "no notebooks matching 99_*" in capsys.readouterr().err


def test_find_notebooks_filters_and_orders(tmp_path):
    for name in ["10_b.ipynb", "02_a.ipynb", "notes.ipynb", "01_data_x.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks(tmp_path)] == ["01_data_x.ipynb", "02_a.ipynb", "10_b.ipynb"]
    assert [p.name for p in find_notebooks(tmp_path, "data")] == ["01_data_x.ipynb"]
    assert [p.name for p in find_notebooks(tmp_path, "1?_*")] == ["10_b.ipynb"]


def test_declared_parameters_reads_the_tagged_cell(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick: bool = True\nseed = 3  # comment\nx, y = 1, 2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("z = 1"), params]
    nbformat.write(nb, tmp_path / "01_p.ipynb")
    assert declared_parameters(tmp_path / "01_p.ipynb") == {"quick", "seed"}
