"""The public API: light import, complete exports, documented functions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import analysislib

HEAVY = ("torch", "panel", "papermill", "xarray", "dask", "holoviews", "msprime")


def test_import_is_light():
    code = f"import sys, analysislib; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_top_level_names_resolve():
    for name in analysislib.__all__:
        assert getattr(analysislib, name) is not None


def _public_modules():
    for info in pkgutil.walk_packages(analysislib.__path__, "analysislib."):
        if ".dashboard" in info.name:  # needs panel; checked in its own tests
            continue
        yield importlib.import_module(info.name)


def test_every_module_has_docstring_and_all():
    for module in _public_modules():
        assert module.__doc__ and module.__doc__.strip(), module.__name__
        if not module.__name__.endswith("__init__") and hasattr(module, "__all__"):
            for name in module.__all__:
                assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


def test_every_public_function_is_documented():
    undocumented = []
    for module in _public_modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{module.__name__}.{name}")
    assert undocumented == []
