"""diff_captures / diff_files: pairing, one-sided stages, pair errors, notes, dtype-derived tolerances."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pv.capture.model.config import SYNTHETIC
from pv.capture.store import aprt
from pv.capture.store.writer import CaptureWriter
from pv.compare.diff import diff_captures, diff_files, diff_paths
from pv.compare.tolerances import Tolerances
from pv.errors import PvError

RNG = np.random.default_rng(7)
S = 3


def base() -> dict[tuple[str, int | None], np.ndarray]:
    return {
        ("embedding", 0): RNG.standard_normal((S, 64)),
        ("attn_norm", 0): RNG.standard_normal((S, 64)),
        ("attn_scores", 0): np.tril(RNG.standard_normal((4, S, S))),
        ("ffn_up", 1): RNG.standard_normal((S, 160)),
        ("lm_head", None): RNG.standard_normal((S, 256)),
    }


def test_identical_captures_pass(make_capture: Callable[..., Path]) -> None:
    t = base()
    rep = diff_captures(make_capture("a", t), make_capture("b", t))
    assert rep.ok and [r.status for r in rep.records] == ["pass"] * 5
    assert [r.label for r in rep.records] == [
        "embedding",
        "L0.attn_norm",
        "L0.attn_scores",
        "L1.ffn_up",
        "lm_head",
    ]
    assert rep.records[0].dtype == "float32"
    json.dumps(rep.to_dict())  # strict JSON (no Infinity)
    assert "inf" in json.dumps(rep.to_dict())


def test_one_bad_stage_fails_with_reasons(make_capture: Callable[..., Path]) -> None:
    t = base()
    u = dict(t)
    u[("ffn_up", 1)] = t[("ffn_up", 1)] * 1.5
    rep = diff_captures(make_capture("a", u), make_capture("b", t))
    bad = [r for r in rep.records if r.status == "fail"]
    assert not rep.ok and [r.label for r in bad] == ["L1.ffn_up"]
    assert bad[0].metrics is not None and bad[0].metrics.rel_err == pytest.approx(0.5, rel=1e-6)


def test_garbage_above_the_diagonal_does_not_count(make_capture: Callable[..., Path]) -> None:
    t = base()
    u = dict(t)
    scores = t[("attn_scores", 0)].copy()
    scores[:, np.triu_indices(S, 1)[0], np.triu_indices(S, 1)[1]] = -1e30
    u[("attn_scores", 0)] = scores
    rep = diff_captures(make_capture("a", u), make_capture("b", t))
    assert rep.ok


def test_one_sided_stages_are_reported_not_compared(make_capture: Callable[..., Path]) -> None:
    t = base()
    u = dict(t)
    del u[("ffn_up", 1)]
    rep = diff_captures(make_capture("a", u), make_capture("b", t))
    statuses = {r.label: r.status for r in rep.records}
    assert statuses["L1.ffn_up"] == "only_b"
    assert rep.ok  # nothing compared disagrees; the table still shows the missing stage
    assert rep.summary()["only_b"] == 1


def test_zero_matched_pairs_is_an_error(make_capture: Callable[..., Path], tmp_path: Path) -> None:
    a = make_capture("a", {("ffn_up", 0): np.ones((S, 160))})
    b = make_capture("b", {("ffn_gate", 0): np.ones((S, 160))})
    with pytest.raises(PvError, match="no stage pairs matched"):
        diff_captures(a, b)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PvError, match="holds no APRT stage files"):
        diff_captures(a, empty)


def test_mismatched_counts_and_shapes_are_pair_errors(make_capture: Callable[..., Path]) -> None:
    a = make_capture(
        "a",
        {
            ("ffn_up", 0): np.ones((S, 160)),
            ("ffn_gate", 0): np.ones((2, 240)),
            ("attn_norm", 0): np.ones((S, 64)),
        },
    )
    b = make_capture(
        "b",
        {
            ("ffn_up", 0): np.ones((S + 1, 160)),
            ("ffn_gate", 0): np.ones((3, 160)),
            ("attn_norm", 0): np.ones((S, 64)),
        },
    )
    rep = diff_captures(a, b)
    by = {r.stage: r for r in rep.records}
    assert by["ffn_up"].status == "error" and "element counts differ" in by["ffn_up"].reasons[0]
    assert by["ffn_gate"].status == "error" and "shapes differ" in by["ffn_gate"].reasons[0]
    assert by["attn_norm"].status == "pass"
    assert not rep.ok


def test_no_manifest_uses_model_config_or_compares_flat(make_capture: Callable[..., Path]) -> None:
    t = base()
    u = dict(t)
    k = RNG.standard_normal((S, 2, 16))
    t[("k_post_rope", 0)] = k
    u[("k_post_rope", 0)] = k.copy()
    u[("k_post_rope", 0)][2, 1, 5] += 1
    a, b = make_capture("a", u, manifest=False), make_capture("b", t, manifest=False)
    named = {r.stage: r for r in diff_captures(a, b, model=SYNTHETIC).records}
    assert named["k_post_rope"].metrics.max_index == {"position": 2, "kv_head": 1, "dim": 5}
    assert named["attn_scores"].metrics.count == 4 * 6  # causal part
    bare = diff_captures(a, b)
    flat = {r.stage: r for r in bare.records}
    assert flat["k_post_rope"].metrics.max_index == {"element": 2 * 32 + 16 + 5}
    assert any("judged with float32" in n for n in bare.notes)


def test_dtype_from_manifest_loosens_tolerances(make_capture: Callable[..., Path]) -> None:
    x = RNG.standard_normal((S, 64)).astype(np.float32)
    y = (x * (1 + 5e-3 * RNG.standard_normal(x.shape))).astype(np.float32)
    strict = diff_captures(
        make_capture("a", {("attn_norm", 0): y}), make_capture("b", {("attn_norm", 0): x})
    )
    assert not strict.ok
    loose = diff_captures(
        make_capture("c", {("attn_norm", 0): y}, dtype="bfloat16"),
        make_capture("d", {("attn_norm", 0): x}),
    )
    assert loose.ok and loose.records[0].tolerance == Tolerances().for_stage("attn_norm", "bfloat16")


def test_not_applicable_and_absent_stages_are_noted(tmp_path: Path) -> None:
    for name in ("a", "b"):
        with CaptureWriter(tmp_path / name, {"dtype": "float32"}) as w:
            w.write("attn_norm", 0, np.ones((S, 64), np.float32), dtype_captured="float32")
            w.mark_not_applicable("qkv_bias", "no bias")
    rep = diff_captures(tmp_path / "a", tmp_path / "b")
    assert any(n.startswith("qkv_bias: not applicable") for n in rep.notes)
    assert any(n.startswith("absent on both sides") and "ffn_up" in n for n in rep.notes)


def test_lm_head_last_row_across_directories(make_capture: Callable[..., Path]) -> None:
    logits = RNG.standard_normal((S, 256))
    a = make_capture("a", {("lm_head", None): logits})
    b = make_capture("b", {("lm_head", None): logits[-1:]}, manifest=False)
    rec = diff_captures(a, b, model=SYNTHETIC).records[0]
    assert rec.status == "pass" and rec.metrics.positions == (S - 1,)
    assert any("last-row rule" in n for n in rec.metrics.notes)


def test_single_files(make_capture: Callable[..., Path]) -> None:
    t = base()
    a, b = make_capture("a", t), make_capture("b", t)
    rep = diff_files(a / "layer-1/ffn_up.bin", b / "layer-1/ffn_up.bin", model=SYNTHETIC)
    assert rep.ok and rep.records[0].label == "L1.ffn_up"
    wrong = diff_files(a / "layer-1/ffn_up.bin", b / "layer-0/attn_norm.bin")
    assert wrong.records[0].status == "error" and "stages differ" in wrong.records[0].reasons[0]
    other = a / "custom.bin"
    aprt.write(other, 1, t[("ffn_up", 1)])
    assert diff_files(other, b / "layer-1/ffn_up.bin").records[0].status == "pass"


def test_diff_paths_errors(make_capture: Callable[..., Path], tmp_path: Path) -> None:
    a = make_capture("a", base())
    with pytest.raises(PvError, match="no such file"):
        diff_paths(a, tmp_path / "nope")
    with pytest.raises(PvError, match="cannot compare a directory"):
        diff_paths(a, a / "lm_head.bin")
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"APRT\x00\x00\x00\x00\x05\x00\x00\x00abc")
    with pytest.raises(PvError, match="truncated"):
        diff_paths(broken, a / "lm_head.bin")


def test_files_without_stage_names_and_empty_tensors(tmp_path: Path) -> None:
    a, b = tmp_path / "x.bin", tmp_path / "y.bin"
    aprt.write(a, 0, np.zeros(0, np.float32))
    aprt.write(b, 0, np.zeros(0, np.float32))
    rec = diff_files(a, b).records[0]
    assert rec.label == "x.bin" and rec.status == "pass"
    assert rec.metrics is not None and rec.metrics.count == 0
    assert any("nothing to measure" in n for n in rec.metrics.notes)


def _softmax_rows(scores: np.ndarray, window: int | None) -> np.ndarray:
    s = scores.shape[-1]
    q, k = np.arange(s)[:, None], np.arange(s)[None, :]
    allowed = (k <= q) & ((k > q - window) if window else True)
    masked = np.where(allowed, scores, -np.inf)
    e = np.exp(masked - masked.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_a_mask_disagreement_is_named_where_it_makes_a_stage_fail(tmp_path: Path) -> None:
    scores = np.random.default_rng(3).standard_normal((2, 6, 6)).astype(np.float32)
    ref = tmp_path / "ref"
    with CaptureWriter(ref, {}) as w:  # the model has a window of 2 on layer 0
        w.write("attn_softmax", 0, _softmax_rows(scores, 2), dtype_captured="float32", mask="sliding_window:2")
        w.write("attn_softmax", 1, _softmax_rows(scores, None), dtype_captured="float32")
    engine = tmp_path / "engine"
    with CaptureWriter(engine, {}) as w:  # an engine that ignores it
        w.write("attn_softmax", 0, _softmax_rows(scores, None), dtype_captured="float32")
        w.write("attn_softmax", 1, _softmax_rows(scores, None), dtype_captured="float32")
    report = diff_captures(engine, ref)
    first, second = report.records
    assert first.bad and "masks differ: A causal, B sliding_window:2" in first.reasons
    assert not second.bad and not any("masks differ" in r for r in second.reasons)
    assert "masks differ at layer(s) 0: A records causal, B sliding_window:2" in report.notes
    same = diff_captures(engine, engine)
    assert not any("masks differ" in n for n in same.notes)
