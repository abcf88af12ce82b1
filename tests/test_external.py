"""Tests for analysislib.external: the subprocess runner, its memory measure and its errors."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from analysislib.errors import ExternalToolError, ToolNotFoundError
from analysislib.external import (
    DEBIAN_PACKAGES,
    JAVA_FATAL_STDERR,
    check_java_heap,
    find_tool,
    java_heap_option,
    run_tool,
    tool_version,
)

PY = sys.executable
MIB = 2**20


def allocate(mib: int, then_sleep: float = 0.0) -> list[str]:
    """A Python child that touches ``mib`` MiB of memory, then sleeps."""
    code = (f"import time; b = bytearray({mib} * {MIB}); b[::4096] = b'x' * len(b[::4096]); "
            f"time.sleep({then_sleep})")
    return [PY, "-c", code]


def own_high_water_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


# ------------------------------------------------------------------------------------------
# Finding tools
# ------------------------------------------------------------------------------------------


def test_missing_tool_names_the_debian_package(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="apt-get install beagle"):
        find_tool("beagle")
    with pytest.raises(ToolNotFoundError, match=r"'macs2'.*apt-get install macs"):
        run_tool(["macs2", "--version"])
    with pytest.raises(ToolNotFoundError) as info:
        find_tool("no-such-tool-xyz")
    assert "apt-get" not in str(info.value)  # unknown package: no wrong hint
    assert isinstance(info.value, FileNotFoundError)


def test_debian_packages_cover_the_guide_tools() -> None:
    for tool in ("beagle", "minimac4", "bcftools", "tabix", "plink1.9", "macs2", "ChromImpute"):
        assert tool in DEBIAN_PACKAGES


# ------------------------------------------------------------------------------------------
# Success: output, environment, measurements
# ------------------------------------------------------------------------------------------


def test_captures_stdout_and_passes_environment() -> None:
    run = run_tool(["sh", "-c", 'echo "$ANALYSISLIB_TEST_VALUE"; echo note >&2'],
                   env={"ANALYSISLIB_TEST_VALUE": "forty-two"}, capture_stdout=True)
    assert run.stdout == "forty-two\n"
    assert run.stderr_tail == "note"
    assert run.returncode == 0
    assert run.command[0] == shutil.which("sh")
    assert run.seconds > 0


def test_stdout_file_and_full_stderr_file(tmp_path: Path) -> None:
    out, err = tmp_path / "sub" / "out.txt", tmp_path / "err.txt"
    run_tool(["sh", "-c", "seq 1 3; for i in $(seq 1 50); do echo e$i >&2; done"],
             stdout=out, stderr_path=err, tail_lines=5)
    assert out.read_text() == "1\n2\n3\n"
    assert err.read_text().splitlines() == [f"e{i}" for i in range(1, 51)]


def test_stderr_lines_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="analysislib.external"):
        run_tool(["sh", "-c", "echo first >&2; echo second >&2"])
    messages = [r.getMessage() for r in caplog.records]
    assert "sh: first" in messages and "sh: second" in messages


@linux_only
def test_peak_memory_of_a_child_allocating_100_mib() -> None:
    run = run_tool(allocate(100, then_sleep=0.3))
    assert 100 <= run.peak_memory_mb < 100 + 60  # plus the interpreter itself


@linux_only
def test_peak_memory_of_a_grandchild_behind_a_shell() -> None:
    inner = shlex.join(allocate(100, then_sleep=0.5))
    run = run_tool(["sh", "-c", f"{inner} && echo done"], capture_stdout=True)
    assert run.stdout == "done\n"  # the shell forked the allocating child, which succeeded
    assert 100 <= run.peak_memory_mb < 100 + 60


@linux_only
def test_peak_memory_is_not_inflated_by_the_parent() -> None:
    ballast = np.ones(300 * MIB // 8)  # the parent's high-water mark is now above 300 MiB
    assert own_high_water_mib() > 300
    run = run_tool(["sleep", "0.3"])
    assert run.peak_memory_source == "proc"
    assert 0 < run.peak_memory_mb < 20
    del ballast


@linux_only
def test_peak_memory_above_the_parent_comes_from_wait4() -> None:
    want = int(own_high_water_mib()) + 100
    run = run_tool(allocate(want))
    assert run.peak_memory_source == "wait4"
    assert want <= run.peak_memory_mb < want + 60


# ------------------------------------------------------------------------------------------
# Failure
# ------------------------------------------------------------------------------------------


FAILING = ["sh", "-c", "for i in $(seq 1 30); do echo line$i >&2; done; echo partial; exit 3"]


def test_failure_quotes_the_last_stderr_lines() -> None:
    with pytest.raises(ExternalToolError) as info:
        run_tool(FAILING)
    error = info.value
    assert error.returncode == 3
    assert error.stderr_tail.splitlines() == [f"line{i}" for i in range(11, 31)]
    assert "exited with status 3" in str(error) and "line30" in str(error)
    assert "line10\n" not in str(error)


def test_failure_leaves_no_stdout_file(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    with pytest.raises(ExternalToolError):
        run_tool(FAILING, stdout=out)
    assert list(tmp_path.iterdir()) == []
    run = run_tool(FAILING, stdout=out, check=False)  # unchecked: still nothing half-written
    assert run.returncode == 3
    assert list(tmp_path.iterdir()) == []


def test_unchecked_failure_returns_the_run() -> None:
    run = run_tool(FAILING, check=False, tail_lines=2)
    assert run.returncode == 3
    assert run.stderr_tail == "line29\nline30"


def test_timeout_kills_the_tool() -> None:
    with pytest.raises(ExternalToolError, match="timeout") as info:
        run_tool(["sh", "-c", "echo started >&2; sleep 30"], timeout=0.5)
    assert info.value.returncode < 0
    assert "started" in info.value.stderr_tail


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        run_tool([])
    with pytest.raises(ValueError, match="not both"):
        run_tool(["true"], stdout=tmp_path / "x", capture_stdout=True)


# ------------------------------------------------------------------------------------------
# Versions
# ------------------------------------------------------------------------------------------


def test_tool_version_of_a_fake_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "faketool"
    fake.write_text("#!/bin/sh\necho 'faketool 1.2.3 (build 7)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert tool_version("faketool") == "faketool 1.2.3 (build 7)"
    silent = tmp_path / "silenttool"
    silent.write_text("#!/bin/sh\necho 'no numbers here'\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ExternalToolError, match="no version number"):
        tool_version("silenttool")


@pytest.mark.tools
@pytest.mark.parametrize(("tool", "expected"), [("beagle", "version 5.4"),
                                                ("minimac4", "v4.1.2"),
                                                ("bcftools", "bcftools 1.")])
def test_tool_version_of_installed_tools(tool: str, expected: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    assert expected in tool_version(tool)


def test_fatal_stderr_line_ends_a_hanging_tool() -> None:
    script = "echo working >&2; echo 'Exception in thread \"main\" boom' >&2; sleep 30"
    with pytest.raises(ExternalToolError, match="fatal error was reported") as info:
        run_tool(["sh", "-c", script], fatal_stderr='Exception in thread "main"',
                 fatal_grace=0.2)
    assert info.value.returncode < 0
    assert "boom" in info.value.stderr_tail
    # a tool that reports a fatal error but exits 0 still fails
    with pytest.raises(ExternalToolError) as info:
        run_tool(["sh", "-c", "echo 'FATAL: no output' >&2"], fatal_stderr="^FATAL")
    assert info.value.returncode == 1


def test_java_heap_is_checked_in_one_place() -> None:
    assert [check_java_heap(m) for m in ("2g", "512M", "64k", "2147483648")] == ["2g", "512M", "64k",
                                                                                  "2147483648"]
    assert java_heap_option("3g") == "-Xmx3g"
    for bad in ("lots", "1.5g", "2gb", "", "-2g"):
        with pytest.raises(ValueError, match="java_mem must look like"):
            java_heap_option(bad)
    assert JAVA_FATAL_STDERR.search('Exception in thread "main" java.lang.OutOfMemoryError')
