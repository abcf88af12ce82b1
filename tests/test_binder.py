"""The Binder files agree with pyproject.toml and the Makefile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def test_python_version_matches_pyproject():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    assert (BINDER / "runtime.txt").read_text().strip() == f"python-{minimum}"


def test_requirements_install_the_package_with_existing_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = [ln.strip() for ln in (BINDER / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    local = [ln for ln in lines if ln.startswith("-e .")]
    assert len(local) == 1
    wanted = re.search(r"\[(.*)\]", local[0]).group(1).split(",")
    assert set(wanted) <= set(extras)
    assert "jupyter-panel-proxy" in lines


def test_apt_lists_the_makefile_tools():
    makefile = (ROOT / "Makefile").read_text()
    pairs = re.search(r"^DEB_TOOLS\s*:=\s*((?:.*\\\n)*.*)$", makefile, re.MULTILINE).group(1)
    tools = [pair.split(":")[0] for pair in pairs.replace("\\", " ").split()]
    assert "beagle" in tools and "chromimpute" in tools
    apt = (BINDER / "apt.txt").read_text().split()
    assert set(tools) <= set(apt)


def test_post_build_is_strict_and_no_index_hosts_are_named():
    post = (BINDER / "postBuild").read_text()
    assert post.startswith("#!/usr/bin/env bash") and "set -e" in post
    for path in BINDER.iterdir():
        text = path.read_text()
        assert "index-url" not in text and "://" not in text, path


def test_panel_proxy_serves_the_dashboard():
    config = (ROOT / "jupyter-panel-proxy.yml").read_text()
    app = re.search(r"-\s*(\S+\.py)", config).group(1)
    assert (ROOT / app).is_file()
