"""Browser-test fixtures: Debian's chromium driven by Playwright, and a dashboard served on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Launch the Debian chromium (``playwright install`` cannot download browsers here)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": executable, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one real run (allele-frequency imputer through the harness, per-tile scores)
    and two runs derived from it, so there are three methods to choose between."""
    from analysislib.evaluate import evaluate
    from analysislib.results import ResultsStore, new_run_id
    from analysislib.simulate.genotypes import simulate_genotypes

    root = tmp_path_factory.mktemp("results")
    store = ResultsStore(root)
    ds = simulate_genotypes("quick", seed=5, samples_per_population=20,
                            sequence_length=300_000).ds.compute()
    position = ds["variant_position"].values
    edges = np.linspace(position.min(), position.max() + 1, 21).astype(int)
    tiles = pd.DataFrame({"tile": [f"tile{i}" for i in range(20)], "start": edges[:-1],
                          "end": edges[1:] - 1})
    floor = evaluate("allele_frequency", ds, "array_omni15", store=store, tiles=tiles,
                     dataset_label="sim_genotypes_quick").rows
    rng = np.random.default_rng(1)
    for method, level, seconds, memory in (("beagle", 0.85, 9.0, 900.0),
                                           ("minimac4", 0.8, 3.0, 450.0)):
        rows = floor.copy()
        is_se = rows["metric"].str.endswith("_se")
        rows.loc[~is_se, "value"] = np.clip(level + rng.normal(0, 0.04, int((~is_se).sum())), 0, 1)
        rows.loc[is_se, "value"] = rng.uniform(0.01, 0.03, int(is_se.sum()))
        rows = rows.assign(run_id=new_run_id(), method=method, runtime_s=seconds,
                           peak_memory_mb=memory, parameters=json.dumps({"ne": 20000}))
        store.append(rows)
    return root


@pytest.fixture
def dashboard_url(results_dir: Path) -> Iterator[str]:
    """The dashboard over ``results_dir``, served by a threaded Panel server on loopback."""
    import panel as pn

    from analysislib.dashboard.app import Dashboard

    port = free_port()
    server = pn.serve(lambda: Dashboard(results_dir=str(results_dir)), port=port,
                      address="127.0.0.1", websocket_origin=[f"127.0.0.1:{port}"],
                      threaded=True, show=False, verbose=False)
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.stop()
