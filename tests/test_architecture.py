"""The layering of ARCHITECTURE.md: no module imports from a layer below its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "analysislib"

#: ARCHITECTURE.md's layers, top (imported by everything) to bottom; a module belongs to the
#: longest prefix listed.
LAYERS = [
    ("foundations", ["errors", "variables", "io.atomic", "io.checksum", "io.bgzf", "external", "registry", "presets", "runtime",
                     "results", "results.provenance", "results.store"]),
    ("data model", ["genotype.dataset", "genotype.encoding", "genotype.stats", "genotype.imputer",
                    "epigenome.tensor", "epigenome.imputer", "io", "io.vcf", "io.tracks", "catalog",
                    "simulate", "genotype", "epigenome"]),
    ("shared computation", ["ld", "tiling", "training"]),
    ("scoring", ["genotype.masking", "genotype.metrics", "epigenome.metrics", "epigenome.peaks"]),
    ("methods", ["genotype.autoencoder", "genotype.dae", "genotype.tuning", "genotype.segments",
                 "genotype.unet", "genotype.unet_model", "genotype.unet_training", "genotype.hmm",
                 "epigenome.edice", "epigenome.factorisation",
                 "epigenome.chromimpute", "epigenome.wasserstein", "epigenome.differential",
                 "epigenome.occupancy", "epigenome.transfer", "gwas"]),
    ("evaluation", ["evaluate", "epigenome.evaluate", "epigenome.downstream", "gwas.evaluate"]),
    ("front ends", ["results.summary", "genotype.report", "gwas.report", "epigenome.report", "cli", "notebooks", "dashboard",
                    "plotting", "testing"]),
]
#: (importer, imported) pairs allowed against the layering, each imported inside a function.
ALLOWED = {("simulate.gwas", "gwas.ldsc")}


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            out[name] = path
    return out


def test_every_module_has_a_layer():
    assert [m for m in _modules() if _layer(m) is None] == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_from_a_layer_below(module: str):
    path = _modules()[module]
    own = _layer(module)
    below = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysislib."):
            imported = node.module.removeprefix("analysislib.")
            rank = _layer(imported)
            if rank is not None and own is not None and rank > own and (module, imported) not in ALLOWED:
                below.append(f"{imported} ({LAYERS[rank][0]}), line {node.lineno}")
    assert not below, f"{module} ({LAYERS[own][0]}) imports from a lower layer: {below}"


def test_exception_and_warning_types_are_defined_in_errors_only():
    defined = []
    for module, path in _modules().items():
        if module == "errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")).endswith(("Error", "Exception", "Warning"))
                    for base in node.bases):
                defined.append(f"{module}.{node.name}")
    assert defined == [], "define exception types in analysislib/errors.py"


#: Built-in exceptions the package may not raise itself: each has an analysislib type in
#: errors.py (InvalidArgumentError for ValueError, NotFittedError for "call fit first").
BARE = {"ValueError"}


def test_errors_come_from_errors_py():
    raised = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = call.id if isinstance(call, ast.Name) else None
                text = ast.unparse(node.exc)
                if name in BARE or (name == "RuntimeError" and "fit" in text and "before" in text):
                    raised.append(f"{module}:{node.lineno}: raise {text[:60]}")
    assert raised == [], "raise the analysislib type from errors.py:\n" + "\n".join(raised)


def test_old_import_paths_of_moved_exception_types_still_work():
    from analysislib import errors
    from analysislib.genotype.dae import BundleChecksumError, BundleError
    from analysislib.gwas.ldsc import LdscNotFoundError
    from analysislib.notebooks import NotebookError
    from analysislib.results import UnverifiedResultsWarning
    from analysislib.training import DeviceUnavailableError

    assert (BundleError, BundleChecksumError, LdscNotFoundError, NotebookError, UnverifiedResultsWarning,
            DeviceUnavailableError) == (errors.BundleError, errors.BundleChecksumError, errors.LdscNotFoundError,
                                        errors.NotebookError, errors.UnverifiedResultsWarning,
                                        errors.DeviceUnavailableError)
