from __future__ import annotations

import pandas as pd
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


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def tiny_vcf(tmp_path_factory):
    """A small simulated panel (3 populations x 20 samples, about 800 SNPs) as a VCF."""
    from analysislib.io.vcf import write_vcf
    from analysislib.simulate.genotypes import simulate_genotypes

    ds = simulate_genotypes("quick", seed=5, samples_per_population=20,
                            sequence_length=150_000).ds.compute()
    path = tmp_path_factory.mktemp("cli") / "tiny.vcf.gz"
    write_vcf(ds, path)
    return path


def _summary_header(out: str) -> list[str]:
    """Column names of the printed headline table."""
    line = next(line for line in out.splitlines() if line.split()[:1] == ["stratum"])
    return line.split()


def test_evaluate_random_scenario_leads_with_aggregate_r2(tiny_vcf, tmp_path, capsys):
    from analysislib.results import ResultsStore

    args = ["evaluate", "--method", "allele_frequency", "--dataset", str(tiny_vcf),
            "--scenario", "random_05_seed1", "--results", str(tmp_path), "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _summary_header(out) == ["stratum", "aggregate_r2", "r2", "genotype_accuracy",
                                    "variants", "calls"]
    assert "genotypes per scored variant on average" in out and "aggregate r²" in out
    assert "fit " in out and "impute " in out
    run = ResultsStore(tmp_path).runs().iloc[0]
    assert run.fit_seconds > 0 and run.impute_seconds > 0
    assert run.runtime_s == pytest.approx(run.fit_seconds + run.impute_seconds)


def test_evaluate_typed_scenario_leads_with_r2_and_metric_moves_first(tiny_vcf, tmp_path, capsys):
    base = ["evaluate", "--method", "allele_frequency", "--dataset", str(tiny_vcf),
            "--scenario", "typed_1in3", "--results", str(tmp_path)]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert _summary_header(out)[:3] == ["stratum", "r2", "aggregate_r2"]
    assert "per scored variant on average" not in out
    assert main([*base, "--metric", "iqs"]) == 0
    assert _summary_header(capsys.readouterr().out)[:4] == ["stratum", "iqs", "r2", "aggregate_r2"]


@pytest.mark.parametrize("method", ["allele_frequency", "beagle", "minimac4", "biunet", "scda", "dae"])
def test_evaluate_threads_works_for_every_imputer(method, tiny_vcf, tmp_path, capsys):
    import json
    import shutil

    from analysislib.results import ResultsStore

    if method in ("beagle", "minimac4") and shutil.which(method) is None:
        pytest.skip(f"{method} is not installed")
    threads = "1" if method == "allele_frequency" else "2"
    args = ["evaluate", "--method", method, "--dataset", str(tiny_vcf), "--scenario",
            "random_05_seed1", "--results", str(tmp_path), "--threads", threads]
    if method in ("biunet", "scda", "dae"):
        args += ["-p", "epochs=1", "-p", "progress=false"]
    assert main(args) == 0, capsys.readouterr().err
    run = ResultsStore(tmp_path).runs().iloc[0]
    assert run.method == method
    recorded = json.loads(run.parameters)
    if method in ("beagle", "minimac4", "dae"):
        assert recorded["threads"] == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "allele_frequency", "--threads", "2"], "runs on one thread"),
    (["--method", "beagle", "--threads", "0"], "at least 1"),
    (["--method", "beagle", "-p", "bogus=1"], "takes no parameter 'bogus'"),
    (["--method", "biunet", "-p", "bogus=1"], "bogus"),
    (["--method", "magic"], "unknown genotype imputer"),
    (["--method", "beagle", "--metric", "nonsense"], "unknown metric"),
])
def test_evaluate_refuses_bad_options_in_one_line(extra, message, tmp_path, capsys):
    args = ["evaluate", "--dataset", str(tmp_path / "never_read.vcf.gz"), "--scenario",
            "typed_1in3", "--results", str(tmp_path), *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "edice", "-p", "bogus=1"], "bogus"),
    (["--method", "magic"], "unknown epigenomic imputer 'magic'"),
    (["--method", "avg", "--scenario", "typed_1in3"], "--scenario applies to --task genotype only"),
    (["--method", "avg", "--protocol", "sideways"], "unknown protocol 'sideways'"),
    (["--method", "avg", "--protocol", "holdout"], "needs --tracks"),
    (["--method", "avg", "--keep", "H3K4me3"], "apply to --protocol reduced_cell"),
    (["--method", "avg", "--bins", "0"], "--bins must be at least 1"),
])
def test_evaluate_epigenome_refuses_bad_options_in_one_line(extra, message, tmp_path, capsys):
    args = ["evaluate", "--task", "epigenome", "--dataset", "never_read", "--results", str(tmp_path), *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(tmp_path.rglob("*.parquet"))


def test_genotype_options_are_refused_for_epigenome_and_back(tmp_path, capsys):
    assert main(["evaluate", "--method", "beagle", "--dataset", "x", "--protocol", "split"]) == 1
    assert "--protocol applies to --task epigenome only" in capsys.readouterr().err
    assert main(["evaluate", "--method", "beagle", "--dataset", "x"]) == 1
    assert "needs --scenario" in capsys.readouterr().err


def test_evaluate_epigenome_stores_the_same_rows_as_the_python_harness(tmp_path, capsys):
    from analysislib.epigenome.evaluate import evaluate_epigenome
    from analysislib.results import ResultsStore

    assert main(["evaluate", "--task", "epigenome", "--method", "avg", "--dataset", "sim_epigenome_quick",
                 "--protocol", "reduced_cell", "--cells", "cell000,cell001", "--bins", "3000",
                 "--results", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "avg on sim_epigenome_quick, reduced_cell" in out and "pearson" in out
    cli_rows = ResultsStore(tmp_path / "cli").read("epigenome_imputation")
    python = evaluate_epigenome("avg", "sim_epigenome_quick", "reduced_cell", cells=["cell000", "cell001"],
                                keep="H3K4me3", bins=slice(0, 3000), store=ResultsStore(tmp_path / "py"))
    key = ["metric", "stratum_kind", "stratum"]
    left = cli_rows.sort_values(key)[[*key, "value"]].reset_index(drop=True)
    right = python.rows.sort_values(key)[[*key, "value"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


# ----------------------------------------------------------------------------- README


def readme_command_lines() -> list[str]:
    """Every ``analysislib ...`` line of the README's shell blocks, comments stripped."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", readme, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("analysislib "):
                lines.append(line)
    return lines


def test_readme_documents_command_lines():
    commands = {line.split()[1] for line in readme_command_lines()}
    assert {"notebooks", "catalog", "evaluate", "impute"} <= commands


@pytest.mark.parametrize("line", readme_command_lines())
def test_readme_command_lines_parse_and_name_real_things(line):
    import shlex
    from pathlib import Path

    from analysislib.catalog import load_catalog
    from analysislib.cli import build_parser
    from analysislib.evaluate import IMPUTERS, thread_parameters
    from analysislib.genotype.masking import parse_scenario
    from analysislib.notebooks import find_notebooks

    args = build_parser().parse_args(shlex.split(line)[1:])  # exits (SystemExit) if it cannot
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    if args.command == "notebooks" and getattr(args, "only", None):
        assert find_notebooks(notebooks, args.only), f"--only {args.only} matches no notebook"
    if args.command == "evaluate" and args.task == "gwas":
        from analysislib.gwas.evaluate import GWAS_TRAINING, parse_method

        parse_method(args.method)
        assert args.dataset.removeprefix("sim_gwas_") in GWAS_TRAINING
    elif args.command == "evaluate" and args.task == "epigenome":
        from analysislib.epigenome.evaluate import PROTOCOLS
        from analysislib.registry import IMPUTERS as REGISTRIES

        assert args.method in REGISTRIES["epigenome"] and (args.protocol or "leave_one_out") in PROTOCOLS
        assert args.dataset in load_catalog()
    elif args.command == "evaluate":
        assert args.method in IMPUTERS
        parse_scenario(args.scenario)
        thread_parameters(args.method, args.threads)
        assert args.dataset in load_catalog() or args.dataset.endswith((".vcf.gz", ".vcf", ".bcf"))
    if args.command == "catalog" and args.catalog_command == "fetch":
        assert args.name in load_catalog()
