"""Shared fixtures: the offline data mirror, a guard that keeps tests off the network, and a loader
for the scripts of ``benchmarks/``."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def _is_local(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = "" if address[0] is None else str(address[0])
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return True  # unix sockets


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a non-loopback address."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        if not _is_local(address):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local((host,)):
            raise RuntimeError(f"test tried to resolve a network host: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline mirror of real datasets (../shared/data beside the project)."""
    if not (SHARED_DATA / "SHA256SUMS").exists():
        pytest.skip(f"offline data mirror {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
def data_mirror(shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the catalog at the offline mirror, with an empty private cache."""
    from analysislib.catalog import CACHE_ENV, MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, str(shared_data))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return shared_data


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test (small kernels; no oversubscription), then restore.

    Test modules with many small torch models opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """Import a script of ``benchmarks/`` (a folder of scripts, not a package) by its stem:
    ``benchmark_script("genotype_accuracy")``."""

    def load(stem: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{stem}_benchmark",
                                                      PROJECT_ROOT / "benchmarks" / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
