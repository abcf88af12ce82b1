"""The ``analysislib`` command line: run notebooks, run the demo, inspect the data catalog.

Examples
--------
``analysislib demo``  runs every notebook in quick mode into ``build/notebooks``.
``analysislib notebooks run --full --only 00_*``  runs one notebook at paper scale.
``analysislib catalog list``  lists the datasets; ``analysislib catalog fetch NAME`` resolves one.
``analysislib evaluate --method beagle --dataset 1kg_chr22_array500 --scenario typed_1in3``
scores an imputer and appends the rows to the results store.
``analysislib train reference.vcf.gz --out BUNDLE --preset quick`` trains autoencoders for each LD
tile of a reference panel (Dias et al. 2022) into a model bundle, resuming an interrupted run.
``analysislib impute --models BUNDLE in.vcf.gz out.vcf.gz --threads 4`` imputes a VCF with a trained
autoencoder bundle and writes GT:DS:GP with a tabix index.
``analysislib impute-tracks E003:H3K4me3=a.bw E017:H3K4me3=b.bw E017:H3K27me3=c.bw --impute
E003:H3K27me3 --method avg --out imputed/`` imputes epigenomic tracks from bigWig/bedGraph files
and writes ``imputed/E003.H3K27me3.imputed.bw``.
``analysislib dashboard --results results --port 5006``  serves the methods dashboard over the
results store on http://127.0.0.1:5006.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from analysislib.errors import InvalidArgumentError

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
    if args.task == "epigenome":
        return _evaluate_epigenome(args)
    if args.task == "gwas":
        return _evaluate_gwas(args)
    _refuse_options(args, "genotype")
    if args.scenario is None:
        raise InvalidArgumentError("--task genotype needs --scenario (array_<density>, typed_1in<k> or "
                         "random_<pct>_seed<s>)")
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
        raise InvalidArgumentError(f"unknown metric {args.metric!r}; choose from {', '.join(known)}")
    scenario = parse_scenario(args.scenario)
    params = dict(parse_parameter(p) for p in args.parameter)
    params.update(thread_parameters(args.method, args.threads))
    imputer = make_imputer(args.method, **params)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = evaluate(imputer, args.dataset, scenario,
                      target_fraction=0.1 if args.target_fraction is None else args.target_fraction,
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


def _evaluate_epigenome(args: argparse.Namespace) -> int:
    """``evaluate --task epigenome``: hold tracks out with a protocol, impute, score, store."""
    import logging

    from analysislib.epigenome.evaluate import PROTOCOLS, evaluate_epigenome
    from analysislib.notebooks import parse_parameter
    from analysislib.results import ResultsStore

    # Refuse bad options before any data is loaded (the harness builds the imputer first).
    _refuse_options(args, "epigenome")
    protocol = args.protocol or "leave_one_out"
    if protocol not in PROTOCOLS:
        raise InvalidArgumentError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if args.bins is not None and args.bins < 1:
        raise InvalidArgumentError("--bins must be at least 1")
    params = dict(parse_parameter(p) for p in args.parameter)
    if args.threads is not None:
        raise InvalidArgumentError("--threads is not used by the epigenomic imputers; give torch threads "
                         "with OMP_NUM_THREADS")
    options = {}
    if protocol == "reduced_cell":
        options["keep"] = args.keep.split(",") if args.keep else "H3K4me3"
        if args.cells:
            options["cells"] = args.cells.split(",")
    elif args.keep or args.cells:
        raise InvalidArgumentError("--keep and --cells apply to --protocol reduced_cell")
    if args.tracks:
        if protocol not in ("leave_one_out", "holdout"):
            raise InvalidArgumentError("--tracks applies to --protocol leave_one_out or holdout")
        options["tracks"] = args.tracks.split(",")
    elif protocol == "holdout":
        raise InvalidArgumentError("--protocol holdout needs --tracks (the CELL.ASSAY tracks to hide)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = evaluate_epigenome(args.method, args.dataset, protocol, seed=args.seed,
                                bins=None if args.bins is None else slice(0, args.bins),
                                method_parameters=params, store=ResultsStore(args.results), **options)
    run = result.rows.iloc[0]
    print(f"run {result.run_id}: {len(result.rows)} rows in {result.store_path}")
    print(f"{run.method} on {run.dataset}, {run.scenario}: {run.runtime_s:.2f} s")
    print(result.summary().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


#: Options of ``evaluate`` that belong to one task only.
_TASK_OPTIONS = {"genotype": ("scenario", "target_fraction", "metric"),
                 "epigenome": ("protocol", "keep", "cells", "tracks", "bins"),
                 "gwas": ("features",)}


def _refuse_options(args: argparse.Namespace, task: str) -> None:
    """One error line for an ``evaluate`` option given that belongs to another task."""
    for other, options in _TASK_OPTIONS.items():
        for option in options:
            if other != task and getattr(args, option) is not None:
                raise InvalidArgumentError(f"--{option.replace('_', '-')} applies to --task {other} only")


def _evaluate_gwas(args: argparse.Namespace) -> int:
    """``evaluate --task gwas``: train one functional prior on a simulated GWAS, score, store."""
    import logging

    from analysislib.gwas.evaluate import GWAS_TRAINING, evaluate_gwas, parse_method
    from analysislib.notebooks import parse_parameter
    from analysislib.results import ResultsStore

    _refuse_options(args, "gwas")
    parse_method(args.method)
    if not args.dataset.startswith("sim_gwas_"):
        raise InvalidArgumentError(f"the GWAS harness runs on simulations, where the true prior is known: "
                         f"--dataset sim_gwas_<{'|'.join(GWAS_TRAINING)}>, not {args.dataset!r}")
    scale = args.dataset.removeprefix("sim_gwas_")
    settings = dict(parse_parameter(p) for p in args.parameter)
    GWAS_TRAINING.resolve(scale, **settings)  # unknown scale or setting: one error line
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidArgumentError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for chatty in ("msprime", "stdpopsim"):  # the simulator's per-step log lines
        logging.getLogger(chatty).setLevel(logging.WARNING)
    result = evaluate_gwas(args.method, scale, seed=args.seed, features=args.features or "all",
                           settings=settings, store=ResultsStore(args.results))
    rows = result.rows
    print(f"run {result.run_id}: {len(rows)} rows in {result.store_path}")
    print(f"{args.method} on {rows.dataset.iloc[0]}, {rows.scenario.iloc[0]}: "
          f"trained in {rows.runtime_s.iloc[0]:.1f} s")
    table = rows.pivot_table(index="metric", columns="stratum", values="value", sort=False)
    print(table.rename_axis(columns=None).to_string(float_format=lambda v: f"{v:.5f}"))
    return 0


def _impute(args: argparse.Namespace) -> int:
    from analysislib.genotype.dae import impute_vcf
    from analysislib.runtime import keep_freed_memory

    if args.threads < 1:
        raise InvalidArgumentError("--threads must be at least 1")
    if args.batch_samples < 1:
        raise InvalidArgumentError("--batch-samples must be at least 1")
    keep_freed_memory()  # fewer page faults for the arrays of each chunk (BENCHMARKS.md)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_connect_scheduler(args.scheduler)) if args.scheduler else None
        report = impute_vcf(args.models, args.input, args.output, threads=args.threads,
                            strand_ambiguous=args.strand_ambiguous, verify=not args.no_verify,
                            batch_samples=args.batch_samples, client=client)
    print(report.summary())
    return 0


#: The record ``analysislib train`` keeps in a bundle folder: the reference's sha256 and the
#: settings that shape the weights, so a rerun resumes only the same run.
TRAIN_RECORD_NAME = "analysislib-train.json"
_TRAIN_RECORD_FORMAT = "analysislib-train-run"
_TRAIN_LOCK_NAME = ".analysislib-train.lock"


def _train_settings(args: argparse.Namespace) -> dict:
    """Preset, epochs, hyperparameters and tiling of a ``train`` run (what shapes the weights)."""
    from analysislib.genotype.dae import DAE_PRESETS
    from analysislib.genotype.dae.imputer import _with_typed_masking

    name = DAE_PRESETS.canonical(args.preset)  # PresetError (one error line) for an unknown name
    for option, value, least in (("--threads", args.threads, 1), ("--jobs", args.jobs, 1),
                                 ("--epochs", args.epochs, 1), ("--seed", args.seed, 0),
                                 ("--models-per-tile", args.models_per_tile, 1)):
        if value is not None and value < least:
            raise InvalidArgumentError(f"{option} must be at least {least}, got {value}")
    if args.scheduler and args.jobs is not None:
        raise InvalidArgumentError("--jobs sets local worker processes; with --scheduler the cluster's "
                         "workers train the tiles, so leave --jobs out")
    preset = DAE_PRESETS[name]
    hparams = (preset["hparams"] if args.typed_fraction is None
               else _with_typed_masking(preset["hparams"], None, args.typed_fraction))
    return {"preset": name,
            "epochs": args.epochs if args.epochs is not None else preset["epochs"],
            "hparams": {**hparams, "seed": args.seed},
            "tiling": dict(preset["tiling"]),
            "models_per_tile": (args.models_per_tile if args.models_per_tile is not None
                                else preset["models_per_tile"]),
            "ensemble_layout": "offset",  # an ensemble's models on offset tiles (train_bundle)
            "unit": args.unit}


def _bundle_folder_state(out) -> str:
    """``new``, ``finished`` (a bundle), ``run`` (an interrupted ``train`` run), ``tiles``
    (tiles with no run record) or ``other`` (a folder holding something else)."""
    from analysislib.genotype.dae import MANIFEST_NAME, TILES_DIR

    if not out.exists():
        return "new"
    if not out.is_dir():
        raise InvalidArgumentError(f"{out}: exists and is not a folder; --out takes the bundle folder")
    if (out / MANIFEST_NAME).is_file():
        return "finished"
    if (out / TRAIN_RECORD_NAME).is_file():
        return "run"
    if (out / TILES_DIR).is_dir():
        return "tiles"
    return "other" if any(p.name != _TRAIN_LOCK_NAME for p in out.iterdir()) else "new"


@contextlib.contextmanager
def _training_lock(out):
    """Hold an exclusive lock on ``out`` while ``train`` writes into it (POSIX ``flock``), so two
    runs never train into one folder; the lock file goes once the bundle is finished."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    path = out / _TRAIN_LOCK_NAME
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidArgumentError(f"{out}: another `analysislib train` is writing into this folder; "
                             "wait for it to finish or choose another --out") from None
        yield
        path.unlink(missing_ok=True)  # only after success; a failed run keeps it (harmless)


def _discard_training(out) -> None:
    """Remove what ``train`` (or a bundle) put in ``out``: the manifest first, so no half-removed
    folder still reads as a finished bundle. Other files are left alone."""
    import shutil

    from analysislib.genotype.dae import MANIFEST_NAME, PACKED_WEIGHTS_NAME, TILES_DIR

    for name in (MANIFEST_NAME, PACKED_WEIGHTS_NAME, TRAIN_RECORD_NAME):
        (out / name).unlink(missing_ok=True)
    for name in (TILES_DIR, "checkpoints"):
        shutil.rmtree(out / name, ignore_errors=True)


def _check_resumable(out, state: str, record: dict, force: bool) -> bool:
    """Refuse (ValueError) a folder ``train`` must not write into; True when resuming."""
    import json

    if state == "other":
        raise InvalidArgumentError(f"{out}: the folder is not empty and holds no model bundle or "
                         "interrupted training run; choose a new or empty folder")
    if state == "finished" and not force:
        raise InvalidArgumentError(f"{out}: already holds a finished model bundle; pass --force to train "
                         "it again (the bundle is replaced) or choose another --out")
    if state == "tiles" and not force:
        raise InvalidArgumentError(f"{out}: holds tiles of a training run that left no {TRAIN_RECORD_NAME} "
                         "(not started by `analysislib train`), so it cannot be resumed safely; "
                         "pass --force to discard them or choose another --out")
    if state != "run":
        return False
    path = out / TRAIN_RECORD_NAME
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored.get("settings"), dict):  # older records: one model per tile, genotype rows
            stored["settings"].setdefault("models_per_tile", 1)
            stored["settings"].setdefault("unit", "genotype")
            # older ensembles repeated each tile's span; one model per tile has no layout to differ
            older_layout = "repeated" if stored["settings"]["models_per_tile"] > 1 else "offset"
            stored["settings"].setdefault("ensemble_layout", older_layout)
        differs = [key for key in ("reference_sha256", "settings") if stored.get(key) != record[key]]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        if not force:
            raise InvalidArgumentError(f"{path}: unreadable training record ({err}); pass --force to "
                             "discard the interrupted run") from None
        return False
    if not differs:
        return True
    if force:
        return False
    what = []
    if "reference_sha256" in differs:
        what.append(f"another reference ({stored.get('reference', '?')}, sha256 "
                    f"{str(stored.get('reference_sha256'))[:12]}…)")
    if "settings" in differs:
        theirs, ours = _flat(stored.get("settings") or {}), _flat(record["settings"])
        keys = [k for k in dict.fromkeys([*ours, *theirs]) if theirs.get(k) != ours.get(k)]
        what.append("other settings (" + ", ".join(
            f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in keys) + ")")
    raise InvalidArgumentError(f"{out}: holds an interrupted run of {' and '.join(what)}; rerun that "
                     "command to finish it, pass --force to discard it, or choose another --out")


def _flat(settings: dict) -> dict:
    """``{"hparams": {"seed": 0}}`` -> ``{"hparams.seed": 0}``, to name what differs."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            flat[key] = value
    return flat


def _read_reference(path):
    """The reference panel of ``train``, checked (InputFormatError naming the file)."""
    from analysislib.errors import InputFormatError
    from analysislib.io.vcf import check_diploid_panel, read_vcf

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such reference VCF/BCF file")
    if not path.is_file():
        raise InputFormatError(path, "is not a file; train takes a VCF, bgzipped VCF or BCF")
    reference = read_vcf(path, multiallelic="split", fields=("GT",))
    check_diploid_panel(reference, path, "train on")
    return reference


def _typed_sites_flags(reference, path):
    """Bool per reference variant, true at the sites of the VCF/BCF at ``path`` (``train --typed-sites``)."""
    from analysislib.errors import InputFormatError
    from analysislib.genotype.dae.plan import _typed_flags
    from analysislib.io.vcf import read_vcf

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VCF/BCF file of typed sites")
    sites = read_vcf(path, multiallelic="split", fields=("GT",), samples=[])  # the sites only, no calls
    try:
        return _typed_flags(reference, sites)
    except ValueError as err:
        raise InputFormatError(path, str(err)) from None


def _connect_scheduler(address: str):
    """A ``dask.distributed`` client of ``address``, or ValueError in one line."""
    try:
        from distributed import Client
    except ImportError:
        raise InvalidArgumentError("--scheduler needs the 'distributed' package (pip install distributed)") from None
    try:
        return Client(address)
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InvalidArgumentError(f"scheduler {address}: cannot connect ({reason})") from None


def _train(args: argparse.Namespace) -> int:
    import datetime
    import json
    import time
    from pathlib import Path

    from analysislib.errors import InputFormatError
    from analysislib.genotype.dae import TILES_DIR, offset_tiles, train_bundle
    from analysislib.io.atomic import atomic_output
    from analysislib.io.checksum import sha256_of
    from analysislib.runtime import RunOptions
    from analysislib.tiling import tile_genome

    started = time.perf_counter()
    settings = _train_settings(args)
    reference_path = Path(args.reference)
    out = Path(args.out).resolve()  # dask workers and worker processes need an absolute path
    state = _bundle_folder_state(out)
    if state != "run":  # refuse before the (possibly long) read of the reference
        _check_resumable(out, state, {}, args.force)
    reference = _read_reference(reference_path)
    typed = None
    if args.typed_sites is not None:
        typed = _typed_sites_flags(reference, Path(args.typed_sites))
        settings["typed_sites"] = {"file": str(Path(args.typed_sites).resolve()),
                                   "sha256": sha256_of(Path(args.typed_sites)), "matched": int(typed.sum())}
        if args.typed_fraction is None:  # centre the curriculum on the share the targets lack
            from analysislib.genotype.dae.imputer import _with_typed_masking

            settings["hparams"] = _with_typed_masking(settings["hparams"], None, float(typed.mean()))
    record = {"format": _TRAIN_RECORD_FORMAT, "format_version": 1,
              "reference": str(reference_path.resolve()),
              "reference_sha256": sha256_of(reference_path), "settings": settings}
    resuming = _check_resumable(out, state, record, args.force)
    try:
        tiling = tile_genome(reference, **settings["tiling"])
    except ValueError as err:
        raise InputFormatError(reference_path, f"cannot tile the panel into LD tiles ({err})") from None
    # a tile's ensemble: tiles of their own, on offset spans
    n_tiles = len(offset_tiles(tiling.tiles["first_variant"].to_numpy(), tiling.tiles["last_variant"].to_numpy(),
                               reference["variant_contig"].values, settings["models_per_tile"])[0])
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_connect_scheduler(args.scheduler)) if args.scheduler else None
        stack.enter_context(_training_lock(out))
        if _bundle_folder_state(out) != state:
            raise InvalidArgumentError(f"{out}: the folder changed while the reference was read (another "
                             "`analysislib train`?); run the command again")
        if state in ("finished", "tiles") or (state == "run" and not resuming):
            _discard_training(out)
        if resuming:
            kept = len(list((out / TILES_DIR).glob("*.json")))
            print(f"resuming the interrupted run in {out}: {kept} of {n_tiles} tiles were written",
                  file=sys.stderr)
        else:
            record["started"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            with atomic_output(out / TRAIN_RECORD_NAME) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n")
        models = settings["models_per_tile"]
        ensemble = f" ({len(tiling.tiles)} LD tiles, {models} models over each variant)" if models > 1 else ""
        print(f"training {n_tiles} tiles{ensemble} of {reference.sizes['variants']} variants, "
              f"{reference.sizes['samples']} samples ({settings['preset']} preset) into {out}",
              file=sys.stderr)
        try:
            options = RunOptions(threads=args.threads, jobs=args.jobs or 1, client=client,
                                 progress=False if args.no_progress else None)
            bundle = train_bundle(reference, tiling, settings["hparams"], out,
                                  epochs=settings["epochs"], resume=True,
                                  models_per_tile=settings["models_per_tile"], unit=settings["unit"],
                                  typed_sites=typed, options=options)
        except KeyboardInterrupt:
            done = len(list((out / TILES_DIR).glob("*.json")))
            print(f"error: {out}: interrupted; {done} of {n_tiles} tiles are kept: run the same "
                  "command again to resume", file=sys.stderr)
            return 130
        except RuntimeError as err:  # a tile failed or a worker died; finished tiles are kept
            raise InvalidArgumentError(f"{out}: {err} (finished tiles are kept: run the same command again "
                             "to resume)") from None
    reused = int(bundle.manifest.get("training", {}).get("tiles_reused", 0))
    trained = f"{n_tiles - reused} trained, {reused} kept from the interrupted run" if reused else "all trained"
    print(f"bundle {out}: {n_tiles} tiles ({trained}), {len(bundle.variants)} variants, "
          f"{time.perf_counter() - started:.1f} s")
    print(f"impute with: analysislib impute --models {out} TARGETS.vcf.gz IMPUTED.vcf.gz")
    return 0


#: Epigenomic imputers that train with torch (``--threads`` sets torch's thread count for them).
_TORCH_TRACK_METHODS = ("edice", "predictd", "avocado")


def _parse_track_spec(text: str) -> tuple[tuple[str, str], str]:
    """``CELL:MARK=PATH`` -> ``((cell, mark), path)``."""
    label, sep, path = text.partition("=")
    cell, colon, mark = label.partition(":")
    if not sep or not colon or not cell or not mark or not path or ":" in mark:
        raise InvalidArgumentError(f"track {text!r}: expected CELL:MARK=PATH, for example "
                         "E003:H3K4me3=E003.H3K4me3.bw")
    return (cell, mark), path


def _parse_targets(values: Sequence[str]) -> list[tuple[str, str]]:
    """``--impute CELL:MARK[,CELL:MARK...]`` (repeatable) -> ordered unique ``(cell, mark)``."""
    targets: list[tuple[str, str]] = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            cell, colon, mark = item.partition(":")
            if not colon or not cell or not mark or ":" in mark or "=" in item:
                raise InvalidArgumentError(f"--impute {item!r}: expected CELL:MARK, for example E003:H3K4me3")
            if (cell, mark) not in targets:
                targets.append((cell, mark))
    if not targets:
        raise InvalidArgumentError("--impute: name at least one CELL:MARK track to impute")
    return targets


def _track_imputer_parameters(args: argparse.Namespace) -> dict:
    """Constructor keywords of ``--method`` from ``--preset`` and ``--seed`` (AVG takes none)."""
    from analysislib.epigenome.imputer import EPIGENOME_IMPUTERS

    if args.method not in EPIGENOME_IMPUTERS:
        raise InvalidArgumentError(f"unknown epigenomic imputer {args.method!r}; choose from "
                         f"{', '.join(sorted(EPIGENOME_IMPUTERS))}")
    if args.method == "avg":
        return {}
    parameters = {"preset": args.preset}
    if args.seed is not None:
        parameters["seed"] = args.seed
    if args.method in _TORCH_TRACK_METHODS:
        parameters["device"] = "cpu"
    return parameters


@contextlib.contextmanager
def _track_threads(method: str, threads: int | None):
    """Limit BLAS/OpenMP threads (and torch's, for the torch methods) to ``threads``."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        if method not in _TORCH_TRACK_METHODS:
            yield
            return
        from analysislib.runtime import torch_threads

        with torch_threads(threads):
            yield


def _impute_tracks(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from analysislib.epigenome.imputer import get_epigenome_imputer
    from analysislib.errors import InputFormatError
    from analysislib.io.tracks import parse_region, read_track_files, write_bigwig

    started = time.perf_counter()
    # Check names, options and targets before any file is read.
    if args.threads is not None and args.threads < 1:
        raise InvalidArgumentError(f"--threads must be at least 1, got {args.threads}")
    if args.bin_size < 1:
        raise InvalidArgumentError(f"--bin-size must be at least 1, got {args.bin_size}")
    if args.seed is not None and args.seed < 0:
        raise InvalidArgumentError(f"--seed must be at least 0, got {args.seed}")
    parameters = _track_imputer_parameters(args)
    tracks: dict[tuple[str, str], Path] = {}
    for spec in args.tracks:
        key, path = _parse_track_spec(spec)
        if key in tracks:
            raise InputFormatError(path, f"second file for track {key[0]}:{key[1]}; the first is "
                                         f"{tracks[key]}")
        tracks[key] = Path(path)
    targets = _parse_targets(args.impute)
    cells, marks = {c for c, _ in tracks}, {m for _, m in tracks}
    for cell, mark in targets:
        if (cell, mark) in tracks:
            raise InputFormatError(tracks[cell, mark], f"--impute {cell}:{mark}: this track is "
                                   "observed (given as input); impute only tracks with no file")
        if cell not in cells:
            raise InvalidArgumentError(f"--impute {cell}:{mark}: no input track of cell {cell} "
                             f"(cells: {', '.join(sorted(cells))})")
        if mark not in marks:
            raise InvalidArgumentError(f"--impute {cell}:{mark}: mark {mark} has no input track in any "
                             f"cell (marks: {', '.join(sorted(marks))})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{out}: exists and is not a folder; --out takes a folder")
    outputs = {target: out / f"{target[0]}.{target[1]}.imputed.bw" for target in targets}
    for destination in outputs.values():
        for source in tracks.values():
            if destination.exists() and source.exists() and os.path.samefile(destination, source):
                raise InvalidArgumentError(f"{destination}: is an input track; choose another --out")
    regions = [parse_region(text) for text in args.regions] if args.regions else None
    imputer = get_epigenome_imputer(args.method, **parameters)

    scale = "neglog10p" if args.transform == "arcsinh" else "arcsinh"
    ds = read_track_files(tracks, regions=regions, bin_size=args.bin_size, scale=scale)
    print(f"read {len(tracks)} tracks ({ds.sizes['cell']} cells × {ds.sizes['assay']} marks, "
          f"{ds.sizes['bin']} bins of {args.bin_size} bp); fitting {args.method}", file=sys.stderr)
    with _track_threads(args.method, args.threads):
        imputer.fit(ds)
        predicted = imputer.predict(targets)
    chrom_sizes = ds.attrs["chrom_sizes"]
    for (cell, mark), destination in outputs.items():
        write_bigwig(predicted.sel(track=f"{cell}.{mark}"), destination, chrom_sizes,
                     scale=scale, bin_size=args.bin_size)
        print(destination)
    print(f"imputed {len(outputs)} tracks with {args.method} in "
          f"{time.perf_counter() - started:.1f} s (written on the input scale: "
          f"{'raw' if scale == 'neglog10p' else 'arcsinh'})", file=sys.stderr)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import panel as pn

    from analysislib.dashboard.app import Dashboard
    from analysislib.results import ResultsStore

    if not 0 < args.port < 65536:
        raise InvalidArgumentError(f"--port must be between 1 and 65535, got {args.port}")
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
    evaluation = commands.add_parser("evaluate", help="score an imputer on held-out data, store the rows")
    evaluation.add_argument("--task", choices=("genotype", "epigenome", "gwas"), default="genotype",
                            help="genotype imputation (default), epigenomic track imputation, or "
                                 "GWAS functional priors")
    evaluation.add_argument("--method", required=True,
                            help="genotype: beagle, minimac4, dae, biunet, scda, allele_frequency; "
                                 "epigenome: avg, edice, predictd, avocado, chromimpute; "
                                 "gwas: <likelihood|ldsr>_<constant|linear|mlp|conv>")
    evaluation.add_argument("--dataset", required=True,
                            help="catalog name, or a biallelic VCF path (genotype); "
                                 "gwas: sim_gwas_<quick|standard|full>")
    evaluation.add_argument("--features", default=None,
                            help="gwas: annotations the prior sees, all (default) or few")
    evaluation.add_argument("--scenario",
                            help="genotype: array_<density>, typed_1in<k> or random_<pct>_seed<s>")
    evaluation.add_argument("--target-fraction", type=float, default=None,
                            help="genotype: share of samples held out as targets (default 0.1)")
    evaluation.add_argument("--protocol", default=None,
                            help="epigenome: leave_one_out (default), reduced_cell, holdout or split")
    evaluation.add_argument("--keep", default=None,
                            help="epigenome, reduced_cell: the mark(s) each target cell keeps, "
                                 "comma-separated (default H3K4me3)")
    evaluation.add_argument("--cells", default=None,
                            help="epigenome, reduced_cell: target cells, comma-separated (default all)")
    evaluation.add_argument("--tracks", default=None,
                            help="epigenome: CELL.ASSAY tracks, comma-separated: those to impute "
                                 "(leave_one_out; default all) or to hide (holdout; required)")
    evaluation.add_argument("--bins", type=int, default=None,
                            help="epigenome: use only the first N bins")
    evaluation.add_argument("--seed", type=int, default=0,
                            help="seed of the sample or track split (gwas: of the simulation and training)")
    evaluation.add_argument("--threads", type=int,
                            help="threads for the imputer (Beagle/Minimac4 threads, torch threads "
                                 "of biunet/scda training; for the autoencoder, as many "
                                 "single-threaded training workers and the inference threads; "
                                 "the allele-frequency floor runs on one)")
    evaluation.add_argument("-p", "--parameter", action="append", default=[],
                            metavar="NAME=VALUE", help="imputer parameter; repeatable")
    evaluation.add_argument("--results", default=None, help="results store folder")
    evaluation.add_argument("--metric", default=None,
                            help="metric to lead the printed summary (default: aggregate_r2 for "
                                 "random_* scenarios, r2 otherwise; both are always shown)")
    train = commands.add_parser(
        "train", help="train an autoencoder bundle on a reference VCF/BCF (resumes a stopped run)")
    train.add_argument("reference", help="reference panel: diploid VCF, bgzipped VCF or BCF")
    train.add_argument("--out", required=True, metavar="BUNDLE",
                       help="bundle folder (new, empty, or holding an interrupted run to resume)")
    train.add_argument("--preset", default="quick",
                       help="quick (default), standard or full: epochs, hyperparameters, tiling")
    train.add_argument("--epochs", type=int, default=None,
                       help="epochs per tile (default: the preset's; full trains to early stopping)")
    train.add_argument("--seed", type=int, default=0, help="seed of weights and masks (default 0)")
    train.add_argument("--models-per-tile", type=int, default=None, metavar="K",
                       help="independently seeded models over each variant, model k on the LD tiles "
                            "offset by (k-1)/K of a tile, averaged when imputing (default: the "
                            "preset's: 2 for quick, 3 for standard, 1 for full)")
    train.add_argument("--typed-fraction", type=float, default=None, metavar="F",
                       help="share of the panel's sites the targets will have typed (e.g. 0.33): train "
                            "for that density (more accurate there, less on sparser arrays; default: "
                            "any density)")
    train.add_argument("--typed-sites", default=None, metavar="VCF",
                       help="VCF/BCF whose sites the targets will have typed (the targets or their "
                            "array; sites-only is enough): train for them, masking the other sites "
                            "first, and, without --typed-fraction, for their share (more accurate "
                            "on that array, much less on others; default: any array)")
    train.add_argument("--unit", choices=("genotype", "haplotype"), default="genotype",
                       help="training rows: each sample's genotypes (default, the paper's; for "
                            "unphased targets) or each of its two haplotypes (more accurate; the "
                            "targets must be phased)")
    train.add_argument("--threads", type=int, default=None,
                       help="torch threads per worker (default: CPU count / --jobs; 1 on a cluster)")
    train.add_argument("--jobs", type=int, default=None,
                       help="local worker processes training tiles in parallel (default 1)")
    train.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="dask.distributed scheduler (tcp://host:8786) whose workers train the "
                            "tiles; they must see --out on a shared file system")
    train.add_argument("--force", action="store_true",
                       help="replace a finished bundle or discard another interrupted run in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    impute = commands.add_parser("impute", help="impute a VCF with a trained autoencoder bundle")
    impute.add_argument("--models", required=True, metavar="BUNDLE", help="model bundle folder")
    impute.add_argument("input", help="target VCF/BCF (typed genotypes)")
    impute.add_argument("output", help="imputed VCF (.vcf.gz gets a .tbi index)")
    impute.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    impute.add_argument("--batch-samples", type=int, default=1000, metavar="N",
                        help="samples imputed and formatted at a time; memory grows with it "
                             "(default 1000)")
    impute.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="dask.distributed scheduler (tcp://host:8786) whose workers impute "
                             "the region chunks; the bundle folder must be readable by the workers")
    impute.add_argument("--strand-ambiguous", choices=("keep", "drop"), default="keep",
                        help="A/T and C/G SNPs: use as written (keep, default) or leave untyped")
    impute.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of the bundle files")
    tracks = commands.add_parser(
        "impute-tracks", help="impute epigenomic tracks (bigWig/bedGraph in, bigWig out)")
    tracks.add_argument("tracks", nargs="+", metavar="CELL:MARK=PATH",
                        help="observed tracks, one bigWig or bedGraph file per cell and mark")
    tracks.add_argument("--impute", action="append", required=True, metavar="CELL:MARK",
                        help="track to impute (repeatable, or comma-separated)")
    tracks.add_argument("--method", default="avg",
                        help="avg (default), edice, predictd, avocado or chromimpute")
    tracks.add_argument("--preset", default="quick",
                        help="the method's preset (default quick; avg has none)")
    tracks.add_argument("--out", required=True, metavar="DIR",
                        help="folder for CELL.MARK.imputed.bw (created if needed)")
    tracks.add_argument("--regions", action="append", default=None, metavar="CHROM:START-END",
                        help="region to read, 0-based half-open (repeatable; default: every "
                             "chromosome of the files)")
    tracks.add_argument("--bin-size", type=int, default=25, help="bin width in bp (default 25)")
    tracks.add_argument("--transform", choices=("arcsinh", "none"), default="arcsinh",
                        help="arcsinh (default): the files hold raw -log10 p, which is "
                             "arcsinh-transformed to fit; none: they already hold arcsinh values. "
                             "Outputs are written on the input scale")
    tracks.add_argument("--threads", type=int, default=None,
                        help="CPU threads (BLAS, and torch for edice/predictd/avocado)")
    tracks.add_argument("--seed", type=int, default=None,
                        help="seed of the trained methods (default: the preset's)")
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
    if args.command == "train":
        return _train(args)
    if args.command == "impute-tracks":
        return _impute_tracks(args)
    if args.command == "dashboard":
        return _dashboard(args)
    return _catalog(args)


if __name__ == "__main__":
    sys.exit(main())
