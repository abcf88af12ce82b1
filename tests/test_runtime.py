"""Run-time options and the one task executor (analysislib.runtime)."""

from __future__ import annotations

import os

import pytest

from analysislib.errors import WorkerDiedError
from analysislib.runtime import RunOptions, run_tasks


def _square(x: int) -> int:
    return x * x


def _die(x: int) -> int:
    os._exit(1)


def test_options_validate_and_split_cpus():
    assert RunOptions().device == "auto"
    assert RunOptions(threads=3).threads_per_job() == 3
    assert RunOptions(jobs=os.cpu_count() or 1).threads_per_job() == 1
    assert RunOptions(client=object()).threads_per_job() == 1
    assert RunOptions(device="cuda:1").replace(jobs=2).jobs == 2
    for bad in ({"device": "gpu"}, {"threads": 0}, {"threads": 1.5}, {"jobs": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RunOptions(**bad)


def test_inline_keeps_order_and_reads_lazily():
    taken = []

    def payloads():
        for x in range(4):
            taken.append(x)
            yield x

    results = run_tasks(_square, payloads())
    assert next(results) == 0 and taken == [0]  # one payload read per result inline
    assert list(results) == [1, 4, 9]


def test_process_pool_gives_every_result_with_a_bounded_window():
    taken = []

    def payloads():
        for x in range(6):
            taken.append(x)
            yield x

    results = run_tasks(_square, payloads(), jobs=2, window=2)
    first = next(results)
    assert first in (0, 1) and len(taken) <= 3  # two in flight, at most one more read
    assert sorted([first, *results]) == [0, 1, 4, 9, 16, 25]


def test_dask_client_gives_every_result():
    distributed = pytest.importorskip("distributed")
    # tcp on loopback: the inproc transport looks up the machine's address through the network
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert sorted(run_tasks(_square, range(5), client=client)) == [0, 1, 4, 9, 16]


def test_a_dead_worker_is_one_clear_error():
    with pytest.raises(WorkerDiedError, match="worker process died"):
        list(run_tasks(_die, [1, 2], jobs=2))


def test_renamed_keywords_warn_and_forward():
    from analysislib.runtime import renamed_keywords

    @renamed_keywords(num_threads="threads")
    def fit(x, *, threads=None):
        return x, threads

    assert fit(1, threads=2) == (1, 2)
    with pytest.warns(FutureWarning, match="'num_threads' is now called 'threads'"):
        assert fit(1, num_threads=3) == (1, 3)
    with pytest.raises(TypeError, match="both"):
        fit(1, num_threads=3, threads=2)
    import inspect

    assert "num_threads" not in inspect.signature(fit).parameters


def test_separate_option_keywords_fold_into_options_with_a_warning():
    from analysislib.errors import InvalidArgumentError
    from analysislib.runtime import options_from_keywords

    @options_from_keywords("device", "threads", "progress")
    def train(x, *, options=None):
        return x, options

    assert train(1) == (1, None)
    given = RunOptions(device="cpu", threads=2)
    assert train(1, options=given) == (1, given)
    with pytest.warns(FutureWarning, match=r"pass \['device', 'threads'\] as options=RunOptions"):
        assert train(1, device="cpu", threads=2) == (1, given)
    with pytest.warns(FutureWarning):  # the old "auto" thread setting is the callee's own choice
        assert train(1, threads="auto")[1].threads is None
    with pytest.raises(InvalidArgumentError, match="options= and the separate keywords"):
        train(1, threads=2, options=given)
    with pytest.raises(InvalidArgumentError, match="not run-time options"):
        options_from_keywords("epochs")


def test_torch_threads_sets_and_restores():
    torch = pytest.importorskip("torch")
    from analysislib.errors import InvalidArgumentError
    from analysislib.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(InvalidArgumentError), torch_threads(0):
        pass
    assert torch.get_num_threads() == before


_MALLINFO_PROBE = """
import ctypes, sys
from analysislib.runtime import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
block = bytearray(16 << 20)
print(libc.mallinfo2().hblkhd)  # bytes of blocks that malloc mapped on their own
"""


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                    reason="glibc's malloc only")
def test_keep_freed_memory_serves_large_arrays_from_the_heap():
    import subprocess
    import sys

    def mapped_bytes(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _MALLINFO_PROBE, mode], capture_output=True,
                              text=True, check=True)
        return int(done.stdout)

    assert mapped_bytes("default") >= 16 << 20  # glibc maps a fresh 16 MiB block on its own
    assert mapped_bytes("keep") < 16 << 20  # now it comes from the heap, which keeps freed memory
