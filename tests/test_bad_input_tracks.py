"""Bad npz track input: every failure is an InputFormatError naming the file (issue 16, fault 5)."""

from __future__ import annotations

import numpy as np
import pytest

from analysislib.errors import InputFormatError
from analysislib.io.tracks import read_roadmap_npz


def _write(path, values):
    np.savez_compressed(path, arr_0=values)
    return path


def test_zero_byte_track_is_named(tmp_path):
    path = tmp_path / "E003.H3K4me3.pilot.npz"
    path.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty file") as info:
        read_roadmap_npz([path])
    assert str(info.value).startswith(str(path))


def test_every_flip_or_cut_of_a_track_is_named_or_harmless(tmp_path):
    values = np.linspace(0, 3, 40, dtype=np.float32)
    good = _write(tmp_path / "E003.H3K4me3.pilot.npz", values)
    data = good.read_bytes()
    damaged = tmp_path / "E004.H3K4me3.pilot.npz"
    copies = [(f"byte {i} flipped", data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1:])
              for i in range(len(data))]
    copies += [(f"cut to {n} bytes", data[:n]) for n in range(len(data))]
    outcomes = {"named": 0, "identical": 0}
    for what, copy in copies:
        damaged.write_bytes(copy)
        try:
            ds = read_roadmap_npz([good, damaged])
        except InputFormatError as err:
            message = str(err)
            assert message.startswith(str(damaged)) and "\n" not in message, (what, message)
            outcomes["named"] += 1
            continue
        signal = ds["signal"] if "signal" in ds else ds[next(iter(ds.data_vars))]
        np.testing.assert_array_equal(signal.sel(cell="E004").values.ravel(),
                                      signal.sel(cell="E003").values.ravel(), err_msg=what)
        outcomes["identical"] += 1
    assert outcomes["named"] > len(data)
