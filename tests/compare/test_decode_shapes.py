"""Decode-step attention matrices [NH, S_new, P + S_new]: the causal rule follows the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pv.capture.store import aprt
from pv.compare import align
from pv.compare.diff import compare_arrays, diff_captures
from pv.compare.tolerances import DEFAULTS


def _side(stage: str, shape: tuple[int, ...]) -> align.Side:
    count = int(np.prod(shape))
    return align.Side(Path("x"), stage, 0, aprt.Header(0, count), shape, ("NH", "S", "S"))


def test_view_of_a_decode_step_keeps_the_causal_rule() -> None:
    view = align.plan_view(_side("attn_scores", (4, 2, 7)), _side("attn_scores", (4, 2, 7)))
    assert view.causal and not view.notes
    # Two new queries at positions 5 and 6 see keys 0..5 and 0..6.
    assert view.row_counts().tolist() == [6, 7] * 4
    square = align.plan_view(_side("attn_softmax", (2, 3, 3)), _side("attn_softmax", (2, 3, 3)))
    assert square.row_counts().tolist() == [1, 2, 3] * 2
    wide = align.plan_view(_side("attn_scores", (2, 4, 3)), _side("attn_scores", (2, 4, 3)))
    assert not wide.causal and "without the causal rule" in wide.notes[0]


def test_masked_keys_of_a_decode_step_are_ignored_and_visible_ones_count() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 2, 7)).astype(np.float32)
    hidden = ref.copy()
    hidden[:, 0, 6] += 100.0  # query at position 5 cannot see key 6: not compared
    rec = compare_arrays(hidden, ref, "attn_scores", 0, tolerance=DEFAULTS["float32"])
    assert rec.status == "pass" and rec.metrics is not None and rec.metrics.max_abs == 0.0
    seen = ref.copy()
    seen[:, 1, 6] += 100.0  # the newest query sees the newest key
    rec = compare_arrays(seen, ref, "attn_scores", 0, tolerance=DEFAULTS["float32"])
    assert rec.status == "fail" and rec.metrics is not None and abs(rec.metrics.max_abs - 100.0) < 1e-4
    assert rec.metrics.count == 4 * (6 + 7) and rec.metrics.max_index == {"head": 0, "query": 1, "key": 6}


def test_decode_step_captures_diff_on_their_causal_part(tmp_path: Path) -> None:
    """Two generation steps of the engine and the oracle compare stage by stage."""
    import pytest

    pytest.importorskip("torch")
    from pv.capture.generate import capture_generation
    from pv.capture.model.load import load_model
    from pv.capture.trace import make_plan

    model = load_model("synthetic")
    tokens = [5, 9, 33, 120]
    out = {}
    for engine in ("pv", "hf"):
        plan = make_plan("synthetic", model.config, tokens=tokens, engine=engine,
                         stages="attn_scores,attn_softmax,lm_head", output=tmp_path / engine)
        out[engine] = capture_generation(plan, model, 3)
    report = diff_captures(tmp_path / "pv" / "step-2", tmp_path / "hf" / "step-2")
    assert report.ok
    scores = [r for r in report.records if r.stage == "attn_scores"]
    for rec in scores:
        assert rec.metrics is not None
        assert rec.metrics.count == model.config.num_attention_heads * (len(tokens) + 2)
