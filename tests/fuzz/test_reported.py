"""Hostile inputs reported against pv, each pinned as it was reported.

The fuzz harness (``test_readers``) judges crashes, hangs and multi-line errors;
these are the reports its rule does not see: output that is right but comes
with noise a user's terminal should never show.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: A float32 signalling NaN: widening it to float64 raises the "invalid" flag.
SIGNALLING_NAN = 0x7FBFFFFF


def _aprt(path: Path, values: np.ndarray) -> Path:
    """An APRT v1 file: magic, u32 layer, u32 count, little-endian float32 values."""
    path.write_bytes(b"APRT" + struct.pack("<II", 0, values.size) + values.astype("<f4").tobytes())
    return path


@pytest.mark.parametrize("bits", [SIGNALLING_NAN, SIGNALLING_NAN | 0x80000000])
@pytest.mark.parametrize("side", ["candidate", "reference"])
def test_diff_of_a_signalling_nan_prints_no_numpy_warning(tmp_path: Path, bits: int, side: str) -> None:
    hostile = np.ones(64, np.float32)
    hostile.view(np.uint32)[[3, 40]] = bits
    plain = _aprt(tmp_path / "plain.bin", np.ones(64, np.float32))
    odd = _aprt(tmp_path / "nan.bin", hostile)
    a, b = (odd, plain) if side == "candidate" else (plain, odd)
    done = subprocess.run([sys.executable, "-m", "pv.cli", "diff", str(a), str(b)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "", f"pv diff wrote to stderr: {done.stderr!r}"
    assert "NaN" in done.stdout and "disagree 2" in done.stdout
