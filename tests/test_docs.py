"""Documentation hygiene: the package cites papers and public repositories only.

The team's method notes (``research/*.md``) and design guide (``GUIDE.md``) live outside the
repository, so users cannot follow a citation to them. Docstrings, comments and notebooks cite
the papers (section, figure or table) and the authors' public repositories instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folders whose every file (code, markdown, notebooks, data) is scanned.
SCANNED = ("analysislib", "benchmarks", "notebooks")

#: Build and cache folders are not sources.
SKIPPED_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}

#: ``research/<name>.md``, ``GUIDE.md``, and the note files named without their folder.
PRIVATE_REFERENCE = re.compile(
    rb"research/[\w./-]*\.md|GUIDE\.md"
    rb"|\b(?:genotype_imputation|epigenomic_imputation|deepwas_ld_simulation"
    rb"|ecosystem_conventions)\.md"
)


def _files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
    )


def private_references(folder: Path) -> list[str]:
    """``path:line: text`` for every line under ``folder`` that cites a private file."""
    found = []
    for path in _files(folder):
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if PRIVATE_REFERENCE.search(line):
                text = line.decode("utf-8", errors="replace").strip()
                found.append(f"{path.relative_to(ROOT)}:{number}: {text[:120]}")
    return found


def test_pattern_catches_private_citations():
    cited = [
        b"the method notes (research/deepwas_ld_simulation.md section 3)",
        b"``research/genotype_imputation.md`` \xc2\xa71.1",
        b'(GUIDE.md, "One interface")',
        b"genotype_imputation.md section 2.2",
    ]
    clean = [
        b"Dias et al. 2022, Methods \"Genotype encoding\"",
        b"``TorkamaniLab/Imputation_Autoencoder``, ``DSAE_TORCH_ARG.py``",
        b"BENCHMARKS.md and README.md",
        b"the data mirror ../shared/data/README.md",
    ]
    assert all(PRIVATE_REFERENCE.search(line) for line in cited)
    assert not any(PRIVATE_REFERENCE.search(line) for line in clean)


@pytest.mark.parametrize("folder", SCANNED)
def test_no_citations_of_private_notes(folder):
    path = ROOT / folder
    assert path.is_dir()
    found = private_references(path)
    assert not found, (
        "cite the paper (section, figure or table) or the authors' public repository instead "
        "of the team's private notes or design guide:\n" + "\n".join(found)
    )
