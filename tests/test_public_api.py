"""Conventions of the public signatures (in the manner of scanpy's ``test_public_api``).

Public functions and classes take few positional parameters, and the run-time options
(device, threads, jobs, progress, dask client) are keyword-only, so call sites read the same
everywhere and options can be added without breaking anyone. A thread count is called
``threads`` (CPU threads of one process) and a number of worker processes ``jobs``
(:mod:`analysislib.runtime`), never by another name. Dataclasses (records of settings
or results) are exempt; the allow-lists name what predates the rule.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import analysislib

MAX_POSITIONAL = 5
RUN_TIME_OPTIONS = {"device", "progress", "client", "threads", "jobs"}
#: Other names of ``threads`` and ``jobs``, which no public signature may use.
OTHER_THREAD_AND_JOB_NAMES = {"num_threads", "threads_per_job", "n_jobs", "n_threads", "nthreads"}
#: More positional parameters than MAX_POSITIONAL (none left: every public signature keeps to it).
MANY_POSITIONAL: set[str] = set()
#: Where the option is the subject of the call (a device helper is about its device).
OPTION_IS_THE_SUBJECT = {
    "analysislib.evaluate.thread_parameters", "analysislib.training.loop.progress_enabled",
    "analysislib.runtime.torch_threads",
    *(f"analysislib.training.device.{n}" for n in ("amp_dtype_for", "autocast_context", "make_grad_scaler",
                                                   "move_to_device")),
    *(f"analysislib.training.ddp.{n}" for n in ("all_reduce_mean", "init_distributed", "wrap_ddp")),
}


def _public_callables() -> list[tuple[str, inspect.Signature]]:
    out = []
    for info in pkgutil.walk_packages(analysislib.__path__, "analysislib."):
        if info.name.startswith("analysislib.dashboard"):  # needs panel; its API is the Dashboard app
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if getattr(obj, "__module__", None) != info.name or dataclasses.is_dataclass(obj):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            try:
                signature = inspect.signature(obj)  # a class's: its constructor's, without self
            except (TypeError, ValueError):  # builtin-backed classes
                continue
            out.append((f"{info.name}.{name}", signature))
    return out


PUBLIC = _public_callables()


def _positional(signature: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "cls")]


def test_the_walk_finds_the_public_api():
    names = {name for name, _ in PUBLIC}
    assert len(PUBLIC) > 150
    assert {"analysislib.genotype.dae.streaming.impute_vcf", "analysislib.results.store.ResultsStore",
            "analysislib.genotype.unet.BiUNetImputer"} <= names


@pytest.mark.parametrize(("name", "signature"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_few_positional_parameters(name, signature):
    if name in MANY_POSITIONAL:
        pytest.skip("allow-listed")
    assert len(_positional(signature)) <= MAX_POSITIONAL, str(signature)


@pytest.mark.parametrize(("name", "signature"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_run_time_options_are_keyword_only(name, signature):
    if name in OPTION_IS_THE_SUBJECT:
        pytest.skip("allow-listed")
    positional = [p.name for p in _positional(signature) if p.name in RUN_TIME_OPTIONS]
    assert positional == [], f"make {positional} keyword-only: {signature}"


@pytest.mark.parametrize(("name", "signature"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_one_name_for_threads_and_one_for_jobs(name, signature):
    other = sorted(OTHER_THREAD_AND_JOB_NAMES & set(signature.parameters))
    assert other == [], f"call {other} 'threads' (threads of one process) or 'jobs' (worker processes)"


def test_allow_lists_name_only_what_exists():
    names = {name for name, _ in PUBLIC}
    assert names >= MANY_POSITIONAL and names >= OPTION_IS_THE_SUBJECT
