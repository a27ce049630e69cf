"""Logits over PART_BYTES are computed and handed over in blocks of rows, by pv's engine and the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pv.capture import runners
from pv.capture import tap as tapmod
from pv.capture.model.load import load_model
from pv.capture.runners import Settings
from pv.errors import PvError

FAMILIES = ["synthetic", "synthetic:granite", "synthetic:gemma3", "synthetic:phi3"]


class Blocks:
    """Keeps lm_head as it is handed over: its parts, in order."""

    borrow = False

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.values: list[np.ndarray] = []

    def wants(self, stage: str, layer: int | None) -> bool:
        return stage == "lm_head"

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        if not self.wants(stage, layer):
            return
        self.parts.append(meta.get("part"))
        self.values.append(tensor.detach().float().numpy().copy())

    def not_applicable(self, stage: str, reason: str) -> None:
        pass


def _small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits of more than 4 KiB go in blocks; attention matrices keep their usual rule."""
    real = tapmod.row_blocks

    def small(shape: tuple[int, ...]) -> Any:
        with monkeypatch.context() as m:
            m.setattr(tapmod, "PART_BYTES", 4 << 10)
            return real(shape)

    for module in ("pv.capture.engine.runner", "pv.capture.oracle.runner"):
        monkeypatch.setattr(f"{module}.row_blocks", small)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["pv", "hf"])
def test_logits_in_blocks_are_the_logits_whole(family: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_model(family)
    ids = [int(x) for x in np.random.default_rng(3).integers(3, loaded.config.vocab_size, 40)]
    runner = runners.get(kind).load(loaded, Settings())
    try:
        whole, whole_tap = runner.forward(ids), Blocks()
        runner.forward(ids, whole_tap)
        _small_blocks(monkeypatch)
        tap = Blocks()
        blocked = runner.forward(ids, tap)
        last = runner.forward(ids, last=True)
    finally:
        runner.close()
    assert whole_tap.parts == [None]
    assert len(tap.parts) > 1 and all(p is not None for p in tap.parts), "nothing went in blocks"
    edges = [(p.lo, p.hi) for p in tap.parts]  # the blocks tile the rows, in order
    assert [lo for lo, _ in edges] == [0] + [hi for _, hi in edges[:-1]] and edges[-1][1] == len(ids)
    assert all(p.shape == tuple(whole.shape) for p in tap.parts)
    assert np.array_equal(blocked.numpy(), whole.numpy())
    assert np.array_equal(np.concatenate(tap.values), whole_tap.values[0])
    assert last.shape == (1, whole.shape[1]) and np.array_equal(last.numpy(), whole[-1:].numpy())


def test_the_oracle_refuses_blocks_its_model_would_not_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Granite divides its logits by logits_scaling: a head without that division is caught on the last row."""
    from pv.capture.oracle import logits

    loaded = load_model("synthetic:granite")
    ids = [int(x) for x in np.random.default_rng(3).integers(3, loaded.config.vocab_size, 40)]
    _small_blocks(monkeypatch)
    monkeypatch.setattr(logits.BlockedHead, "post", lambda self, x: x)
    runner = runners.get("hf").load(loaded, Settings())
    try:
        with pytest.raises(PvError, match="cannot be computed in blocks"):
            runner.forward(ids)
    finally:
        runner.close()
