"""Streamed bisection: what happens when a side fails (the equality with the exhaustive walk, and
that nothing is written, are the falsifiers of contracts/bisect-streaming-v1.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pv

TOKENS = "3,17,42,101,7,250,64,9,33,120,77,5"


def _oom(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise MemoryError("simulated: cannot allocate 2.4 GiB")


def test_a_side_out_of_memory_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.engine.runner import Engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Engine, "forward", _oom)
    with pytest.raises(pv.PvError, match=r"^pv \(under test, in memory\) ran out of memory \(MemoryError: simulated"):
        pv.bisect_run(model="synthetic", tokens=TOKENS)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_with_keep_is_marked_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.engine.runner import Engine

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "forward", interrupted)
    keep = tmp_path / "keep"
    with pytest.raises(KeyboardInterrupt):
        pv.bisect_run(model="synthetic", tokens=TOKENS, keep=keep)
    assert (keep / "INCOMPLETE").read_text().startswith("pv bisect stopped before both captures were complete")
    assert (keep / "reference" / "manifest.json").is_file()  # the reference finished; it stays
    assert not (keep / "test").exists() or not any((keep / "test").rglob("*.bin"))
