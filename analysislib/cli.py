"""The ``analysislib`` command line: run notebooks, run the demo, inspect the data catalog.

Examples
--------
``analysislib demo``  runs every notebook in quick mode into ``build/notebooks``.
``analysislib notebooks run --full --only 00_*``  runs one notebook at paper scale.
``analysislib catalog list``  lists the datasets; ``analysislib catalog fetch NAME`` resolves one.
``analysislib evaluate --method beagle --dataset 1kg_chr22_array500 --scenario typed_1in3``
scores an imputer and appends the rows to the results store.
``analysislib impute --models BUNDLE in.vcf.gz out.vcf.gz --threads 4`` imputes a VCF with a trained
autoencoder bundle (Dias et al. 2022) and writes GT:DS:GP with a tabix index.
``analysislib dashboard --results results --port 5006``  serves the methods dashboard over the
results store on http://127.0.0.1:5006.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", dest="quick", action="store_true", default=True,
                       help="small presets that run in minutes on 2 cores (default)")
    scale.add_argument("--full", dest="quick", action="store_false", help="paper-scale presets")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="set a notebook parameter (value read as YAML); repeatable")
    parser.add_argument("-f", "--parameters-file", metavar="PARAMS.yaml",
                        help="YAML of parameters: key 'all' for every notebook, or notebook names")
    parser.add_argument("--only", metavar="PATTERN", help="run only notebooks matching PATTERN")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run in parallel (default 1)")
    parser.add_argument("--notebooks", default="notebooks", help="folder of NN_*.ipynb")
    parser.add_argument("--out", default="build/notebooks", help="folder for executed copies")
    parser.add_argument("--figures", default="build/figures", help="folder for figures")
    parser.add_argument("--results", default="results", help="results store folder")


def _run(args: argparse.Namespace) -> int:
    from analysislib.notebooks import (
        format_runs,
        load_parameters_file,
        parse_parameter,
        run_notebooks,
    )

    for_all, per_notebook = ({}, {})
    if args.parameters_file:
        for_all, per_notebook = load_parameters_file(args.parameters_file)
    for_all.update(dict(parse_parameter(p) for p in args.parameter))
    runs = run_notebooks(args.notebooks, out_dir=args.out, figure_dir=args.figures,
                         results_dir=args.results, quick=args.quick, parameters=for_all,
                         notebook_parameters=per_notebook, only=args.only, jobs=args.jobs,
                         raise_on_error=False)
    print(format_runs(runs))
    for run in runs:
        if run.error:
            print(f"error: {run.error}", file=sys.stderr)
    return 0 if all(r.status == "ok" for r in runs) else 1


def _catalog(args: argparse.Namespace) -> int:
    from analysislib.catalog import load_catalog

    catalog = load_catalog()
    if args.catalog_command == "list":
        for name, entry in catalog.items():
            origin = "simulated" if entry.simulated else f"{len(entry.files)} file(s)"
            print(f"{name:<24} {entry.kind:<10} {origin}")
        return 0
    for rel, path in catalog.fetch(args.name).items():
        print(f"{rel}\t{path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import logging

    import pandas as pd

    from analysislib.evaluate import evaluate, make_imputer, thread_parameters
    from analysislib.genotype.masking import parse_scenario
    from analysislib.genotype.metrics import PER_VARIANT_METRICS, POOLED_METRICS
    from analysislib.notebooks import parse_parameter
    from analysislib.results import ResultsStore

    # Refuse bad names, parameters and thread counts before any data is loaded.
    known = [*PER_VARIANT_METRICS, *(f"{m}_se" for m in PER_VARIANT_METRICS), *POOLED_METRICS]
    if args.metric is not None and args.metric not in known:
        raise ValueError(f"unknown metric {args.metric!r}; choose from {', '.join(known)}")
    scenario = parse_scenario(args.scenario)
    params = dict(parse_parameter(p) for p in args.parameter)
    params.update(thread_parameters(args.method, args.threads))
    imputer = make_imputer(args.method, **params)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = evaluate(imputer, args.dataset, scenario, target_fraction=args.target_fraction,
                      seed=args.seed, store=ResultsStore(args.results))
    print(f"run {result.run_id}: {len(result.rows)} rows in {result.store_path}")
    run = result.rows.iloc[0]
    memory = ("not measured" if pd.isna(run.peak_memory_mb)
              else f"{run.peak_memory_mb:.0f} MB")
    print(f"{run.method} on {run.dataset}, {run.scenario}: fit {run.fit_seconds:.2f} s, "
          f"impute {run.impute_seconds:.2f} s (total {run.runtime_s:.2f} s), peak memory {memory}")
    metrics = list(result.headline_metrics())
    if args.metric:
        metrics = [args.metric] + [m for m in metrics if m != args.metric]
    table = result.headline(metrics)
    if scenario.kind == "random" and len(table) and table["variants"].iloc[0]:
        per_variant = table["calls"].iloc[0] / table["variants"].iloc[0]
        print(f"random missingness hides {per_variant:.1f} genotypes per scored variant on average, "
              "so per-variant r² (r2) rests on a handful of genotypes and is 0 wherever they "
              "agree; aggregate r² (pooled over hidden genotypes, minor-allele dosage) leads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _impute(args: argparse.Namespace) -> int:
    from analysislib.genotype.dae import impute_vcf

    if args.threads < 1:
        raise ValueError("--threads must be at least 1")
    report = impute_vcf(args.models, args.input, args.output, threads=args.threads,
                        strand_ambiguous=args.strand_ambiguous, verify=not args.no_verify)
    print(report.summary())
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import panel as pn

    from analysislib.dashboard.app import Dashboard
    from analysislib.results import ResultsStore

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    store = ResultsStore(args.results)
    print(f"dashboard over {store.root.resolve()} at http://{args.address}:{args.port}/ "
          "(Ctrl-C stops it)")
    pn.extension("tabulator")
    # Pages may connect back from any host name when listening on every interface.
    wildcard = args.address in ("0.0.0.0", "::")
    origins = "*" if wildcard else [f"{args.address}:{args.port}", f"localhost:{args.port}"]
    # A factory, so each browser session gets its own app state.
    pn.serve(lambda: Dashboard(results_dir=str(store.root)), port=args.port, address=args.address,
             show=args.show, title="analysislib methods", verbose=False, websocket_origin=origins)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``analysislib`` command."""
    parser = argparse.ArgumentParser(prog="analysislib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run all notebooks in quick mode")
    _add_run_options(demo)
    notebooks = commands.add_parser("notebooks", help="notebook batch execution")
    nb_commands = notebooks.add_subparsers(dest="notebooks_command", required=True)
    _add_run_options(nb_commands.add_parser("run", help="execute notebooks in order"))
    strip = nb_commands.add_parser("strip", help="remove outputs from notebooks in place")
    strip.add_argument("paths", nargs="+")
    catalog = commands.add_parser("catalog", help="the data catalog")
    cat_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    cat_commands.add_parser("list", help="list datasets")
    fetch = cat_commands.add_parser("fetch", help="resolve a dataset's files")
    fetch.add_argument("name")
    evaluation = commands.add_parser("evaluate", help="score a genotype imputer, store the rows")
    evaluation.add_argument("--method", required=True, help="beagle, minimac4, ...")
    evaluation.add_argument("--dataset", required=True, help="catalog name or biallelic VCF path")
    evaluation.add_argument("--scenario", required=True,
                            help="array_<density>, typed_1in<k> or random_<pct>_seed<s>")
    evaluation.add_argument("--target-fraction", type=float, default=0.1,
                            help="share of samples held out as targets (default 0.1)")
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the sample split")
    evaluation.add_argument("--threads", type=int,
                            help="threads for the imputer (Beagle/Minimac4 threads, torch threads "
                                 "of biunet/scda training, autoencoder threads; the "
                                 "allele-frequency floor runs on one)")
    evaluation.add_argument("-p", "--parameter", action="append", default=[],
                            metavar="NAME=VALUE", help="imputer parameter; repeatable")
    evaluation.add_argument("--results", default=None, help="results store folder")
    evaluation.add_argument("--metric", default=None,
                            help="metric to lead the printed summary (default: aggregate_r2 for "
                                 "random_* scenarios, r2 otherwise; both are always shown)")
    impute = commands.add_parser("impute", help="impute a VCF with a trained autoencoder bundle")
    impute.add_argument("--models", required=True, metavar="BUNDLE", help="model bundle folder")
    impute.add_argument("input", help="target VCF/BCF (typed genotypes)")
    impute.add_argument("output", help="imputed VCF (.vcf.gz gets a .tbi index)")
    impute.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    impute.add_argument("--strand-ambiguous", choices=("keep", "drop"), default="keep",
                        help="A/T and C/G SNPs: use as written (keep, default) or leave untyped")
    impute.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of the bundle files")
    dashboard = commands.add_parser("dashboard", help="serve the methods dashboard (Panel)")
    dashboard.add_argument("--results", default=None,
                           help="results store folder (default $ANALYSISLIB_RESULTS or ./results)")
    dashboard.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    dashboard.add_argument("--address", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--show", action=argparse.BooleanOptionalAction, default=False,
                           help="open a browser tab (default --no-show)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``analysislib`` console script.

    Expected failures (bad input, missing data or tools, unknown names, unreadable or
    unwritable files) print one ``error:`` line naming the file (and record) and exit 1; set
    ``ANALYSISLIB_DEBUG=1`` for the traceback.
    """
    import os

    from analysislib.errors import AnalysisLibError

    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (AnalysisLibError, OSError, EOFError, KeyError, ValueError) as err:
        if os.environ.get("ANALYSISLIB_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "notebooks" and args.notebooks_command == "strip":
        from analysislib.notebooks import strip_outputs

        for path in args.paths:
            if strip_outputs(path):
                print(f"stripped {path}")
        return 0
    if args.command in ("demo", "notebooks"):
        return _run(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "impute":
        return _impute(args)
    if args.command == "dashboard":
        return _dashboard(args)
    return _catalog(args)


if __name__ == "__main__":
    sys.exit(main())
