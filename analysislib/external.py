"""Running external command-line tools (Beagle, Minimac4, bcftools, plink, ...) as subprocesses.

Every wrapper calls its Debian tool as a subprocess, records wall time and peak memory, and
turns a failure into an error that quotes the tool's last stderr lines.

:func:`run_tool` starts one child process, streams its stderr (each line goes to the
``analysislib.external`` logger at DEBUG level and the last lines are kept for error messages),
and reaps the child with :func:`os.wait4`, which returns the resource usage of that child alone.

Peak memory
-----------
``ru_maxrss`` from ``wait4`` is the child's peak resident set size, and also covers the
grandchildren it waited for (a shell wrapper such as Debian's ``beagle`` script is measured with
the JVM it starts); other children of the Python process do not disturb it, unlike a
``getrusage(RUSAGE_CHILDREN)`` difference. It has one flaw: Linux carries the high-water mark of
the address space replaced by ``exec`` into it, and a child started with fork or vfork replaces
a copy of (or the very) Python address space. So ``ru_maxrss`` is really
``max(python_high_water, tool_peak)``. Hence the rule used here:

* if ``ru_maxrss`` exceeds the Python process's own high-water mark (``VmHWM``) taken at launch
  by more than a small slack, it can only come from the tool: it is exact
  (``peak_memory_source="wait4"``). The slack (16 MiB) absorbs the lag of the kernel's per-thread
  RSS counters, which can make ``/proc`` report the parent's mark a few pages low;
* otherwise the tool stayed below that floor, and the peak is the largest ``VmHWM`` read from
  ``/proc`` for the child and its descendants while they ran (``"proc"``). ``VmHWM`` is itself a
  high-water mark, so polling misses only growth in the last few milliseconds before exit;
  A tool that exits within a millisecond or two may be read only once, just after ``exec``;
* without ``/proc`` (not Linux) or when the child exited before it could be read at all,
  ``ru_maxrss`` is returned as an upper bound (``"wait4-upper-bound"``).

The peak is that of the largest single process of the tool, as ``ru_maxrss`` defines it; the
memory of concurrently running descendants is not summed.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from analysislib.errors import ExternalToolError, InvalidArgumentError, ToolNotFoundError
from analysislib.io.atomic import atomic_output

__all__ = [
    "DEBIAN_PACKAGES",
    "JAVA_FATAL_STDERR",
    "ToolRun",
    "check_java_heap",
    "find_tool",
    "java_heap_option",
    "run_tool",
    "tool_version",
]

logger = logging.getLogger(__name__)

#: Debian package providing each command (named in :class:`ToolNotFoundError` messages).
DEBIAN_PACKAGES: dict[str, str] = {
    "beagle": "beagle",
    "bref3": "beagle",
    "minimac4": "minimac4",
    "bcftools": "bcftools",
    "tabix": "tabix",
    "bgzip": "tabix",
    "plink1.9": "plink1.9",
    "macs2": "macs",
    "ChromImpute": "chromimpute",
    "java": "default-jre-headless",
}

# How each tool reports its version: arguments, and whether a non-zero exit is still fine.
_VERSION_ARGS: dict[str, tuple[str, ...]] = {
    "beagle": (),  # prints its usage, whose first line carries the version
    "bref3": (),
    "ChromImpute": (),
}
_VERSION_PATTERN = re.compile(r"\d+(?:\.\d+)+[\w.\-]*")
# A JVM heap size as ``-Xmx`` takes it: bytes, or a number with a k, m or g suffix.
_JAVA_HEAP = re.compile(r"^\d+[kKmMgG]?$")
#: ``fatal_stderr`` of :func:`run_tool` for Java tools (Beagle, ChromImpute): a JVM can stay
#: alive after an uncaught exception in its main thread (its worker threads keep running), so
#: such a line ends the run.
JAVA_FATAL_STDERR = re.compile(r'Exception in thread "main"|thrown from the UncaughtExceptionHandler')


@dataclass(frozen=True)
class ToolRun:
    """What one external-tool run cost and produced.

    Attributes
    ----------
    command
        The command line as run (program resolved to its full path).
    returncode
        Exit status (negative: killed by that signal).
    seconds
        Wall time from start to exit.
    peak_memory_mb
        Peak resident set size (MiB) of the tool's largest process (see the module notes).
    stdout
        Captured standard output (``capture_stdout=True``), otherwise ``None``.
    stderr_tail
        The last ``tail_lines`` lines of standard error.
    peak_memory_source
        How the peak was measured: ``"wait4"`` (exact), ``"proc"`` (polled ``VmHWM``) or
        ``"wait4-upper-bound"``.
    """

    command: list[str]
    returncode: int
    seconds: float
    peak_memory_mb: float
    stdout: str | None
    stderr_tail: str
    peak_memory_source: str = "wait4"


def find_tool(tool: str) -> str:
    """Full path of ``tool`` on ``PATH``.

    Raises
    ------
    ToolNotFoundError
        Naming the Debian package that provides it (from :data:`DEBIAN_PACKAGES`).
    """
    path = shutil.which(tool)
    if path is None:
        raise ToolNotFoundError(tool, DEBIAN_PACKAGES.get(tool))
    return path


def check_java_heap(java_mem: str) -> str:
    """``java_mem`` as a string, if it is a JVM heap size such as ``"2g"`` or ``"512m"``.

    The one check of the Java tools' heap setting (Beagle, ChromImpute): a whole number of
    bytes, or with a ``k``, ``m`` or ``g`` suffix (either case), as ``-Xmx`` takes it.

    >>> check_java_heap("512m")
    '512m'

    Raises
    ------
    ValueError
        For anything else, e.g. ``"lots"`` or ``"1.5g"``.
    """
    if not _JAVA_HEAP.match(str(java_mem)):
        raise InvalidArgumentError(f"java_mem must look like '2g' or '512m', not {java_mem!r}")
    return str(java_mem)


def java_heap_option(java_mem: str) -> str:
    """The JVM option ``-Xmx<java_mem>`` limiting the heap, after :func:`check_java_heap`.

    >>> java_heap_option("2g")
    '-Xmx2g'
    """
    return f"-Xmx{check_java_heap(java_mem)}"


def _maxrss_kib(rusage: Any) -> float:
    """``ru_maxrss`` in KiB (Linux reports KiB, macOS bytes)."""
    return float(rusage.ru_maxrss) / (1024.0 if sys.platform == "darwin" else 1.0)


_FLOOR_SLACK_KIB = 16 * 1024


def _high_water_kib(pid: int | str) -> int | None:
    """``VmHWM`` of a process from ``/proc`` (KiB), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie has no memory lines


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants, from ``/proc/<pid>/task/<tid>/children``."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children", "rb") as handle:
                    todo.extend(int(child) for child in handle.read().split())
            except (OSError, ValueError):
                continue
    return tree


class _HighWaterPoller(threading.Thread):
    """Keep the largest ``VmHWM`` seen in a process tree until stopped.

    The main process is read every few milliseconds; the whole tree (for wrappers that start
    other processes) every tenth read.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stopped = threading.Event()

    def note(self, pid: int) -> None:
        hwm = _high_water_kib(pid)
        if hwm is not None and hwm > self.peak_kib:
            self.peak_kib = hwm

    def run(self) -> None:
        reads = 0
        while True:
            if reads % 10 == 0:
                for pid in _process_tree(self.pid):
                    self.note(pid)
            else:
                self.note(self.pid)
            reads += 1
            if self.stopped.wait(0.002 if reads < 50 else 0.01):
                return


def _pump(stream: IO[bytes], tail: collections.deque[str], sink: IO[bytes] | None, *,
          name: str, fatal: re.Pattern[str] | None, on_fatal: Any) -> None:
    """Read ``stream`` line by line: keep the tail, copy to ``sink``, log each line, and call
    ``on_fatal`` at the first line matching ``fatal``."""
    with contextlib.suppress(ValueError, OSError):  # stream closed under us on kill
        for raw in iter(stream.readline, b""):
            if sink is not None:
                sink.write(raw)
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            logger.debug("%s: %s", name, line)
            if fatal is not None and fatal.search(line):
                on_fatal()


def run_tool(
    command: Sequence[str | os.PathLike[str]],
    *,
    stdout: str | os.PathLike[str] | None = None,
    capture_stdout: bool = False,
    stderr_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    tail_lines: int = 20,
    check: bool = True,
    fatal_stderr: str | re.Pattern[str] | None = None,
    fatal_grace: float = 5.0,
) -> ToolRun:
    """Run one external tool, measuring wall time and peak memory; raise on failure.

    Parameters
    ----------
    command
        Program and arguments; the program is looked up on ``PATH``.
    stdout
        Write the tool's standard output to this file. It is written to a temporary sibling and
        renamed into place only if the tool succeeds. None discards it unless ``capture_stdout``.
    capture_stdout
        Keep standard output as text in :attr:`ToolRun.stdout`.
    stderr_path
        Also save the full standard error to this file.
    cwd
        Working directory of the tool.
    env
        Variables added to (or overriding) the current environment.
    timeout
        Seconds after which the tool (and its process group) is killed; that counts as a
        failure.
    tail_lines
        How many trailing stderr lines to keep for the error message.
    check
        Raise :class:`ExternalToolError` on failure; otherwise return the failed run (which
        still leaves no ``stdout`` file behind).
    fatal_stderr
        A regular expression: a stderr line matching it makes the run a failure, and the tool
        is killed if it has not exited ``fatal_grace`` seconds later. For tools that can hang
        after a fatal error, such as Beagle's JVM after an uncaught exception
        (``Exception in thread "main"``) while its worker threads live on.
    fatal_grace
        Seconds a tool gets to exit after a ``fatal_stderr`` line.

    Returns
    -------
    ToolRun

    Raises
    ------
    ToolNotFoundError
        The program is not installed.
    ExternalToolError
        The tool exited with a non-zero status or was killed (``check=True``); the message
        quotes its last ``tail_lines`` stderr lines.
    """
    if not command:
        raise InvalidArgumentError("command is empty")
    if stdout is not None and capture_stdout:
        raise InvalidArgumentError("give either stdout= (a file) or capture_stdout=True, not both")
    argv = [str(part) for part in command]
    argv[0] = find_tool(argv[0])
    run: ToolRun | None = None
    try:
        with contextlib.ExitStack() as stack:
            if stdout is not None:
                out_path = stack.enter_context(atomic_output(stdout))
                out_target: Any = stack.enter_context(open(out_path, "wb"))
            else:
                out_target = subprocess.PIPE if capture_stdout else subprocess.DEVNULL
            err_sink = stack.enter_context(open(stderr_path, "wb")) if stderr_path else None
            fatal = re.compile(fatal_stderr) if isinstance(fatal_stderr, str) else fatal_stderr
            run = _run_child(argv, out_target, capture_stdout=capture_stdout, err_sink=err_sink,
                             cwd=cwd, env=env, timeout=timeout, tail_lines=tail_lines,
                             fatal=fatal, fatal_grace=fatal_grace)
            if run.returncode != 0:
                # Raised inside the block, so atomic_output discards the stdout file.
                raise ExternalToolError(argv, run.returncode, run.stderr_tail)
    except ExternalToolError:
        if check or run is None:
            raise
        return run
    logger.info("%s finished in %.2f s, peak memory %.1f MiB", Path(argv[0]).name,
                run.seconds, run.peak_memory_mb)
    return run


def _run_child(argv: list[str], out_target: Any, *, capture_stdout: bool,
               err_sink: IO[bytes] | None, cwd: str | os.PathLike[str] | None,
               env: Mapping[str, str] | None, timeout: float | None,
               tail_lines: int, fatal: re.Pattern[str] | None, fatal_grace: float) -> ToolRun:
    """Start the child, pump its output, reap it with wait4; never raises for its exit status."""
    child_env = None if env is None else {**os.environ, **env}
    tail: collections.deque[str] = collections.deque(maxlen=max(1, tail_lines))
    name = Path(argv[0]).name
    timed_out, fatal_seen, killed_after_fatal, reaped = (threading.Event() for _ in range(4))
    floor_before = _high_water_kib("self")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_target,
                            stderr=subprocess.PIPE, cwd=cwd, env=child_env,
                            start_new_session=True)  # its own process group, killed whole
    floor_after = _high_water_kib("self")
    poller = _HighWaterPoller(proc.pid)
    poller.note(proc.pid)  # at once: a very short tool may be gone before the thread runs
    poller.start()

    def kill_group() -> None:
        if reaped.is_set():  # the group id may already belong to another process
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def on_timeout() -> None:
        timed_out.set()
        kill_group()

    def kill_after_fatal() -> None:
        killed_after_fatal.set()
        kill_group()

    def on_fatal() -> None:
        if not fatal_seen.is_set():
            fatal_seen.set()
            timers.append(threading.Timer(fatal_grace, kill_after_fatal))
            timers[-1].daemon = True
            timers[-1].start()

    timers: list[threading.Timer] = []
    assert proc.stderr is not None
    readers = [threading.Thread(target=_pump, args=(proc.stderr, tail, err_sink),
                                kwargs={"name": name, "fatal": fatal, "on_fatal": on_fatal},
                                daemon=True)]
    captured: list[bytes] = []
    if capture_stdout:
        assert proc.stdout is not None
        out_stream = proc.stdout
        readers.append(threading.Thread(target=lambda: captured.append(out_stream.read()),
                                        daemon=True))
    for reader in readers:
        reader.start()
    if timeout is not None:
        timers.append(threading.Timer(timeout, on_timeout))
        timers[-1].daemon = True
        timers[-1].start()
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
        reaped.set()
    except BaseException:  # interrupted: do not leave the tool running
        kill_group()
        proc.wait()
        raise
    finally:
        poller.stopped.set()
        for timer in timers:
            timer.cancel()
    seconds = time.perf_counter() - start
    poller.join()
    peak_kib, source = _maxrss_kib(rusage), "wait4"
    floor = None if floor_before is None or floor_after is None else max(floor_before, floor_after)
    if floor is not None and peak_kib <= floor + _FLOOR_SLACK_KIB:  # may be Python's own mark
        peak_kib, source = ((poller.peak_kib, "proc") if poller.peak_kib
                            else (peak_kib, "wait4-upper-bound"))
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
    for reader in readers:
        reader.join(timeout=30)
    for timer in timers:  # a fatal line read after exit may have started one
        timer.cancel()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    stderr_tail = "\n".join(tail)
    returncode = proc.returncode
    if timed_out.is_set():
        stderr_tail += f"\n[killed by analysislib after the {timeout} s timeout]"
        returncode = returncode or -int(signal.SIGKILL)
    elif fatal_seen.is_set():
        if killed_after_fatal.is_set():
            stderr_tail += (f"\n[killed by analysislib: a fatal error was reported and the tool "
                            f"had not exited {fatal_grace} s later]")
        returncode = returncode or 1  # a fatal line fails the run whatever the exit status
    return ToolRun(command=argv, returncode=returncode, seconds=seconds,
                   peak_memory_mb=peak_kib / 1024.0,
                   stdout=captured[0].decode(errors="replace") if captured else None,
                   stderr_tail=stderr_tail, peak_memory_source=source)


@functools.cache
def _version_of(path: str, args: tuple[str, ...]) -> str:
    run = run_tool([path, *args], capture_stdout=True, check=False, timeout=60)
    text = "\n".join(filter(None, [run.stdout or "", run.stderr_tail]))
    for line in text.splitlines():
        if _VERSION_PATTERN.search(line):
            return line.strip()
    raise ExternalToolError([path, *args], run.returncode,
                            "no version number found in the output:\n" + text[-2000:])


def tool_version(tool: str) -> str:
    """The version line a tool prints, for example ``"minimac v4.1.2"``.

    Beagle and bref3 print their version as the first line of their usage text
    (``beagle.22Jul22.46e.jar (version 5.4)``); other tools are asked with ``--version``.
    Results are cached per resolved path.

    Raises
    ------
    ToolNotFoundError
        The tool is not installed.
    ExternalToolError
        Its output holds no version number.
    """
    return _version_of(find_tool(tool), _VERSION_ARGS.get(tool, ("--version",)))
