"""Run-time options of long computations, and the one executor that runs their tasks.

A method's *settings* (its preset: network sizes, epochs, learning rate) decide what it computes;
its *run-time options* decide only where and how fast: the device, the CPU threads of each
process, the number of worker processes, a dask cluster and whether progress bars show. The
same settings give the same numbers under any run-time options (training seeds derive from
each task's identity, never from the order of work or the process).

:class:`RunOptions` gathers the run-time options in one value, so a caller builds it once and
passes it down instead of threading five keywords through every layer. :func:`run_tasks` is the
one executor: inline, on a process pool (``jobs`` > 1) or on a ``dask.distributed`` client,
with a bounded number of tasks in flight so only their inputs are in memory at once.

Thread counts have one name, ``threads``: CPU threads of *one* process (torch intra-op and
BLAS). ``jobs`` is the number of worker processes. With ``jobs`` workers and ``threads=None``
each worker gets ``cpu_count // jobs`` threads, so the machine is never oversubscribed.

Functions that run long work take ``options: RunOptions | None`` (None: the defaults) and hand
the same value to the layers below; ``torch_threads`` is the one place torch's thread count is
set and restored.

>>> opts = RunOptions(jobs=2, threads=1)
>>> opts.threads_per_job()
1
>>> sorted(run_tasks(abs, [-3, 1, -2]))
[1, 2, 3]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from analysislib.errors import InvalidArgumentError, WorkerDiedError

__all__ = ["RunOptions", "keep_freed_memory", "options_from_keywords", "renamed_keywords", "run_tasks",
           "torch_threads"]

P = TypeVar("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunOptions:
    """Where and how fast a computation runs; never what it computes.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    threads
        CPU threads of each process (torch intra-op and BLAS); ``None``: the CPUs divided among
        the ``jobs`` workers (one per worker on a dask cluster, whose workers share machines).
    jobs
        Worker processes on this machine (1: run inline). Ignored when ``client`` is given.
    progress
        Show progress bars; ``None`` follows the ``ANALYSISLIB_PROGRESS`` environment variable.
    client
        A ``dask.distributed.Client``: tasks run on its cluster instead of local processes.
    """

    device: str = "auto"
    threads: int | None = None
    jobs: int = 1
    progress: bool | None = None
    client: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not (
                self.device in _DEVICES or self.device.startswith("cuda:")):
            raise InvalidArgumentError(f"device must be one of {list(_DEVICES)} or 'cuda:N', "
                             f"got {self.device!r}")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise InvalidArgumentError(f"threads must be a positive integer or None, got {self.threads!r}")
        if int(self.jobs) != self.jobs or self.jobs < 1:
            raise InvalidArgumentError(f"jobs must be a positive integer, got {self.jobs!r}")

    def threads_per_job(self) -> int:
        """CPU threads each worker process (or the inline run) should use."""
        if self.threads is not None:
            return int(self.threads)
        if self.client is not None:
            return 1
        return max(1, (os.cpu_count() or 1) // int(self.jobs))

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with some options changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def run_tasks(function: Callable[[P], R], payloads: Iterable[P], *, jobs: int = 1,
              client: Any = None, window: int | None = None) -> Iterator[R]:
    """Yield ``function(payload)`` for every payload, in the order they finish.

    Parameters
    ----------
    function
        A module-level function (worker processes import it by name).
    payloads
        Task inputs. Read lazily: at most ``window`` are taken ahead of the results, so a
        generator that loads each task's data keeps only the tasks in flight in memory.
    jobs
        Worker processes (``spawn`` context: torch is not fork-safe); 1 runs inline, in order.
    client
        A ``dask.distributed.Client`` to run on instead (``jobs`` is then ignored).
    window
        Tasks in flight at once (default: ``2 × jobs``, or unbounded on a dask client).

    Raises
    ------
    WorkerDiedError
        A worker process died (out of memory, or a script without the
        ``if __name__ == "__main__":`` guard that process pools need).
    """
    if client is None and jobs <= 1:
        for payload in payloads:
            yield function(payload)
        return
    source = iter(payloads)
    limit = window if window is not None else (None if client is not None else 2 * jobs)
    with contextlib.ExitStack() as stack:
        if client is not None:
            import distributed

            def submit(payload: P) -> Any:
                return client.submit(function, payload, pure=False)

            def wait_first(futures: set[Any]) -> set[Any]:
                return set(distributed.wait(futures, return_when="FIRST_COMPLETED").done)

            def cancel(futures: set[Any]) -> None:
                client.cancel(list(futures))
        else:
            import multiprocessing

            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn")))

            def submit(payload: P) -> Any:
                return pool.submit(function, payload)

            def wait_first(futures: set[Any]) -> set[Any]:
                return concurrent.futures.wait(futures, return_when="FIRST_COMPLETED").done

            def cancel(futures: set[Any]) -> None:
                for future in futures:
                    future.cancel()
        running: set[Any] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and (limit is None or len(running) < max(1, limit)):
                    try:
                        running.add(submit(next(source)))
                    except StopIteration:
                        exhausted = True
                if not running:
                    return
                for future in wait_first(running):
                    running.discard(future)
                    yield future.result()
        except concurrent.futures.process.BrokenProcessPool as err:
            raise WorkerDiedError(
                "a worker process died: out of memory, or the calling script lacks the "
                "`if __name__ == '__main__':` guard that process pools need") from err
        finally:
            cancel(running)


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Accept old keyword names for one release, with a ``FutureWarning``.

    ``@renamed_keywords(num_threads="threads")`` lets callers still pass ``num_threads=2``; the
    function receives ``threads=2`` and the caller is told the new name. Passing both is an
    error. The signature shows only the new names.

    >>> @renamed_keywords(n_jobs="jobs")
    ... def run(*, jobs=1):
    ...     return jobs
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     run(n_jobs=3)
    3
    """
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__qualname__}() got both {old!r} and its new "
                                        f"name {new!r}")
                    warnings.warn(f"{function.__qualname__}: {old!r} is now called {new!r}; the "
                                  "old name will be removed in the next release",
                                  FutureWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore torch's setting.

    ``None`` leaves the setting alone.
    """
    if threads is None:
        yield
        return
    if int(threads) != threads or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive integer or None, got {threads!r}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: mallopt(3) parameter numbers of glibc.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Let glibc's malloc reuse freed memory of a command-line process instead of unmapping it.

    By default glibc maps most arrays of more than 128 KiB with ``mmap`` and gives them back to
    the system when freed, and trims the heap whenever its free top exceeds a threshold. A run
    that allocates and frees arrays of a few MiB per chunk (``analysislib impute``) then faults
    every page of every new array in afresh: 61,000 minor page faults for 50 targets on chr22
    against 25,000 with these settings (BENCHMARKS.md). Arrays below ``mmap_threshold`` now come
    from the heap, which keeps up to ``trim_threshold`` free bytes for the next ones.

    The setting holds for the whole process, so only command-line entry points call this;
    library functions leave the allocator alone. Returns False (and changes nothing) where the
    C library is not glibc.
    """
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # no such name: not glibc
        glibc = ""
    if not sys.platform.startswith("linux") or not glibc.startswith("glibc"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def options_from_keywords(*names: str) -> Callable[[F], F]:
    """Accept run-time options as separate keywords for one release, with a ``FutureWarning``.

    ``@options_from_keywords("device", "threads")`` on a function that takes
    ``options: RunOptions | None`` lets callers still pass ``device="cpu", threads=2``: the
    function receives ``options=RunOptions(device="cpu", threads=2)``. Passing both ``options``
    and such a keyword is an error. A ``threads`` of ``"auto"`` becomes ``None`` (the callee's
    own choice), a ``torch.device`` its string.

    >>> @options_from_keywords("threads")
    ... def run(*, options=None):
    ...     return options.threads
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     run(threads=3)
    3
    """
    fields = {field.name for field in dataclasses.fields(RunOptions)}
    unknown = set(names) - fields
    if unknown:
        raise InvalidArgumentError(f"not run-time options: {sorted(unknown)}")

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names if name in kwargs}
            if given:
                if kwargs.get("options") is not None:
                    raise InvalidArgumentError(
                        f"{function.__qualname__}() got options= and the separate keywords "
                        f"{sorted(given)}; pass them inside options")
                warnings.warn(f"{function.__qualname__}: pass {sorted(given)} as "
                              f"options=RunOptions(...); the separate keywords will be removed "
                              "in the next release", FutureWarning, stacklevel=2)
                if given.get("threads") == "auto":
                    given["threads"] = None
                if "device" in given and not isinstance(given["device"], str):
                    given["device"] = str(given["device"])
                kwargs["options"] = RunOptions(**given)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
