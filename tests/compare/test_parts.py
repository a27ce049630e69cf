"""Attention matrices handed over in parts (pv.capture.tap.Part): a block of one head's query rows
at a time, so that neither runner holds [NH, S, S] at long S. Splitting must change no file and no
verdict: the disk tap assembles parts into the same files, and the streamed comparison measures
them part by part (pv.compare.feed.Feed) into the metrics of the whole pair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pv
from pv.capture import tap
from pv.capture.store import directory
from pv.cli import run

torch = pytest.importorskip("torch")

TOKENS = "3,17,42,101,7,250,64,9,33,120,77,5"


@pytest.fixture
def tiny_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split every attention matrix of the synthetic models (one query row per part)."""
    monkeypatch.setattr(tap, "PART_BYTES", 16)


def test_the_split_rule() -> None:
    assert tap.parts(9, 128, 128) is None  # 590 KB: whole
    split = tap.parts(9, 4096, 4096)
    assert split is not None and len(split) == 9 * 16  # 64 MiB a head, 4 MiB a part
    assert [(p.head, p.lo, p.hi) for p in split[15:18]] == [(0, 3840, 4096), (1, 0, 256), (1, 256, 512)]
    assert all(p.count == len(split) and p.shape == (9, 4096, 4096) for p in split)
    whole = tap.parts(9, 4096, 4096, whole_heads=True)
    assert whole is not None and [(p.lo, p.hi) for p in whole] == [(0, 4096)] * 9


def test_parts_assemble_in_order_only() -> None:
    split = tap.parts(2, 3, 4)
    assert split is None
    parts = [tap.Part(i, 3, i, 0, 1, (3, 1, 4)) for i in range(3)]
    values = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    held = tap.Parts()
    assert held.add("attn_scores", 0, values[0:1], parts[0]) is None
    with pytest.raises(pv.PvError, match="part 2 of 3 arrived out of order"):
        held.add("attn_scores", 0, values[2:3], parts[2])
    assert held.add("attn_scores", 0, values[1:2], parts[1]) is None
    assert np.array_equal(held.add("attn_scores", 0, values[2:3], parts[2]), values)


def _trace(out: Path, *args: str) -> directory.Capture:
    assert run(["trace", *args, "--tokens", TOKENS, "--save-tensor", "all", "-o", str(out)]) == 0
    return directory.open_capture(out)


def _values(cap: directory.Capture) -> dict[Any, np.ndarray]:
    from pv.capture.store import aprt

    return {key: aprt.read(entry.path)[1] for key, entry in cap.by_key().items()}


@pytest.mark.parametrize("args", [
    ("--model", "synthetic", "--engine", "pv"),
    ("--model", "synthetic", "--engine", "hf"),
    ("--model", "synthetic:gemma3", "--engine", "pv"),  # sliding-window layers
    ("--model", "synthetic:gemma3", "--engine", "hf"),
    ("--model", "synthetic", "--engine", "pv", "--inject-fault", "softmax_wrong_axis@1"),  # whole heads
    ("--model", "synthetic", "--engine", "hf", "--generate", "2"),  # decode steps: [NH, 1, P + 1]
    ("--model", "synthetic", "--engine", "pv", "--generate", "2"),
], ids=lambda a: "-".join(x.replace("synthetic:", "") for x in a if not x.startswith("--")))
def test_a_capture_in_parts_is_the_capture_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  args: tuple[str, ...]) -> None:
    whole_dir, parted_dir = tmp_path / "whole", tmp_path / "parted"
    assert run(["trace", *args, "--tokens", TOKENS, "--save-tensor", "all", "-o", str(whole_dir)]) == 0
    split: list[tuple[int, int, int]] = []
    real = tap.parts

    def spy(heads: int, rows: int, cols: int, **kw: Any) -> Any:
        out = real(heads, rows, cols, **kw)
        if out is not None:
            split.append((heads, rows, cols))
        return out

    monkeypatch.setattr(tap, "PART_BYTES", 16)
    for module in ("pv.capture.engine.attention", "pv.capture.oracle.hooks"):
        monkeypatch.setattr(f"{module}.parts", spy)
    assert run(["trace", *args, "--tokens", TOKENS, "--save-tensor", "all", "-o", str(parted_dir)]) == 0
    assert split, "nothing was split: the test would prove nothing"
    for whole_cap, parted_cap in _step_pairs(whole_dir, parted_dir):
        a, b = _values(whole_cap), _values(parted_cap)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=2e-5, err_msg=str(key))  # a kernel of its own
            assert parted_cap.by_key()[key].shape == whole_cap.by_key()[key].shape


def _step_pairs(a: Path, b: Path) -> list[tuple[directory.Capture, directory.Capture]]:
    steps = sorted(p.name for p in a.glob("step-*"))
    if not steps:
        return [(directory.open_capture(a), directory.open_capture(b))]
    return [(directory.open_capture(a / s), directory.open_capture(b / s)) for s in steps]


def _verdicts(result: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(result.to_dict()))
    report = data if "records" in data else data.get("report", data)
    rows = {(r["stage"], r["layer"]): r["status"] for r in report.get("records", [])}
    return {"rows": rows, "first": data["summary"].get("first_divergence"),
            "last_good": data["summary"].get("last_good")}


@pytest.mark.parametrize("fault", [None, "mask_off_by_one@1", "softmax_wrong_axis@1", "score_scale_1_over_d@1"])
def test_a_streamed_bisection_in_parts_reaches_the_same_verdicts(monkeypatch: pytest.MonkeyPatch,
                                                                 fault: str | None) -> None:
    whole = pv.bisect_run(model="synthetic", tokens=TOKENS, fault=fault)
    monkeypatch.setattr(tap, "PART_BYTES", 16)
    parted = pv.bisect_run(model="synthetic", tokens=TOKENS, fault=fault)
    assert _verdicts(parted) == _verdicts(whole)
    assert parted.result is not None and whole.result is not None
    by_key = {(r.stage, r.layer): r for r in parted.result.report.records}
    for rec in whole.result.report.records:  # a failing pair's metrics are the fault's, not rounding's
        if rec.metrics is not None and rec.status == "fail":
            other = by_key[(rec.stage, rec.layer)].metrics
            assert other is not None
            assert other.max_abs == pytest.approx(rec.metrics.max_abs, rel=1e-3)
            assert other.cosine == pytest.approx(rec.metrics.cosine, abs=1e-5)
            assert other.rel_err == pytest.approx(rec.metrics.rel_err, rel=1e-3)


def test_parts_are_measured_as_they_come(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 256 tokens one layer's scores are 1 MiB (4 heads): whole, the comparator holds at least
    that; in parts, less than one matrix, though it still compares every stage."""
    tokens = ",".join(str((7 * i) % 250 + 1) for i in range(256))
    matrix = 4 * 256 * 256 * 4
    whole = pv.bisect_run(model="synthetic", tokens=tokens, fault="mask_off_by_one@2")
    monkeypatch.setattr(tap, "PART_BYTES", 64 << 10)
    parted = pv.bisect_run(model="synthetic", tokens=tokens, fault="mask_off_by_one@2")
    assert whole.held_bytes is not None and parted.held_bytes is not None
    assert whole.held_bytes >= matrix > parted.held_bytes
    assert _verdicts(parted) == _verdicts(whole)


def test_a_streamed_generation_in_parts_reaches_the_same_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage split into rows (lm_head too, whose last row decides each step's prediction)."""
    args: dict[str, Any] = {"model": "synthetic", "tokens": TOKENS[:11], "fault": "mask_off_by_one_decode@1",
                            "generate": 3}
    whole = pv.bisect_run(**args)
    monkeypatch.setattr(tap, "PART_BYTES", 16)
    parted = pv.bisect_run(**args)
    assert whole.generation is not None and parted.generation is not None
    assert whole.generation.first_step is not None and parted.generation.first_step is not None
    assert parted.generation.first_step.step == whole.generation.first_step.step
    assert parted.generation.stage is not None and whole.generation.stage is not None
    assert parted.generation.stage.first_divergence == whole.generation.stage.first_divergence


def test_isolate_takes_the_reference_layer_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap, "PART_BYTES", 16)
    result = pv.bisect_run(model="synthetic", tokens=TOKENS, fault="attn_residual_dropped@2", isolate=True)
    assert result.isolate is not None and result.isolate.introduced == [2]


def test_the_feed_equals_one_pass_over_whole_values() -> None:
    from pv.compare import align, metrics
    from pv.compare.feed import Feed

    rng = np.random.default_rng(7)
    shape = (3, 40, 40)
    b = rng.standard_normal(shape).astype(np.float32)
    a = (b + 1e-3 * rng.standard_normal(shape)).astype(np.float32)
    a[1, 5, 7] = np.nan
    from pv import stages as stage_table
    from pv.capture.store import aprt

    st = stage_table.get("attn_scores")
    side = align.Side(Path("x"), st.name, 0, aprt.Header(st.header_layer(0), a.size), shape, tuple(st.layout))
    view = align.plan_view(side, side, None)
    whole = metrics.compare(a.reshape(-1), b.reshape(-1), view, chunk=256)
    for seed in range(5):
        cuts = np.sort(np.random.default_rng(seed).choice(a.size, size=7, replace=False))
        feed = Feed(view, chunk=256)
        pieces_a, pieces_b = np.split(a.reshape(-1), cuts), np.split(b.reshape(-1), np.sort(cuts[:3]))
        for i in range(max(len(pieces_a), len(pieces_b))):
            if i < len(pieces_b):
                feed.add(1, pieces_b[i])
            if i < len(pieces_a):
                feed.add(0, pieces_a[i])
        assert _close(feed.finish().to_dict(), whole.to_dict()), seed
    short = Feed(view, chunk=256)
    short.add(0, a.reshape(-1)[:100])
    short.add(1, b.reshape(-1))
    with pytest.raises(ValueError, match="values ended after"):
        short.finish()


def _close(x: Any, y: Any) -> bool:
    """Equal but for float rounding (a chunk measured in float32 or float64, rows summed in another order)."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y))
    if isinstance(x, float) and isinstance(y, float):
        return bool(x == pytest.approx(y, rel=1e-5, abs=1e-9, nan_ok=True))
    return bool(x == y)
