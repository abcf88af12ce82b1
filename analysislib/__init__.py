"""analysislib: a Jupyter-centred workbench for deep-learning imputation in genomics.

The top-level names below are loaded on first use, so ``import analysislib`` stays fast and
never imports torch, panel or papermill. Submodules hold the details:

- :mod:`analysislib.catalog`: the data catalog (``data_catalog.yaml``), resolved through pooch;
- :mod:`analysislib.variables`: the registry of dataset variables and ``validate``;
- :mod:`analysislib.genotype`, :mod:`analysislib.io.vcf`: sgkit-style genotype datasets, VCF I/O;
- :mod:`analysislib.epigenome`, :mod:`analysislib.io.tracks`: epigenomic signal tensors, tracks;
- :mod:`analysislib.simulate`: genotype and epigenome simulators;
- :mod:`analysislib.training`: torch training helpers (device, checkpoints, DDP);
- :mod:`analysislib.notebooks`, :mod:`analysislib.cli`: the notebook runner and command line.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "load_catalog": "analysislib.catalog",
    "open_dataset": "analysislib.catalog",
    "fetch": "analysislib.catalog",
    "validate": "analysislib.variables",
    "create_genotype_dataset": "analysislib.genotype.dataset",
    "read_vcf": "analysislib.io.vcf",
    "write_vcf": "analysislib.io.vcf",
    "create_signal_dataset": "analysislib.epigenome.tensor",
    "to_arcsinh": "analysislib.epigenome.tensor",
    "to_neglog10p": "analysislib.epigenome.tensor",
    "read_roadmap_npz": "analysislib.io.tracks",
    "read_bigwig": "analysislib.io.tracks",
    "read_bedgraph": "analysislib.io.tracks",
    "simulate_genotypes": "analysislib.simulate.genotypes",
    "simulate_epigenome": "analysislib.simulate.epigenome",
    "run_notebooks": "analysislib.notebooks",
}

__all__ = [  # noqa: PLE0604 (names are strings; kept in step with _EXPORTS by tests/test_api.py)
    "__version__",
    *sorted(_EXPORTS),
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysislib' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
