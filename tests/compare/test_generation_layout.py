"""Generation steps written without manifests, laid out from what ``generate.json`` says of each step.

A decode step's attention matrices are ``[NH, 1, P + 1]``: with ``P + 1`` a
square (8 cached positions here) their element count also fits a square
``[NH, 3, 3]`` prefill, which is what reading them by count alone made of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model.load import model_config
from pv.capture.store import steps as gen_steps
from pv.cli import run
from pv.compare.bisect import bisect_generation
from pv.errors import PvError
from tests.compare.conftest import write_capture

CONFIG = model_config("synthetic")  # NH 4, KVH 2, D 16, H 64, V 256
NH, KVH, D, H, V = 4, 2, 16, 64, 256
PROMPT = [5, 9, 33, 120, 77, 3, 17, 42]  # 8 tokens: step 1 sees 9 keys, a square


def _tensors(rng: np.random.Generator, n_new: int, past: int) -> dict[tuple[str, int | None], np.ndarray]:
    keys = past + n_new
    out: dict[tuple[str, int | None], np.ndarray] = {}
    for layer in (0, 1):
        out[("attn_norm", layer)] = rng.standard_normal((n_new, H))
        out[("q_post_rope", layer)] = rng.standard_normal((n_new, NH, D))
        out[("k_post_rope", layer)] = rng.standard_normal((n_new, KVH, D))
        out[("attn_scores", layer)] = rng.standard_normal((NH, n_new, keys))
        soft = np.exp(rng.standard_normal((NH, n_new, keys)))
        out[("attn_softmax", layer)] = soft / soft.sum(-1, keepdims=True)
    out[("lm_head", None)] = rng.standard_normal((n_new, V))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def write_generation(root: Path, steps: list[dict[str, Any]], *, manifest: bool,
                     edit: Any = None, record: Any = None) -> Path:
    """Two steps of made-up values (the same seed, so two writes agree); ``edit(t, tensors)`` plants a change."""
    rng = np.random.default_rng(7)
    for t, rec in enumerate(steps):
        tensors = _tensors(rng, len(rec["input"]), rec["position"])
        if edit is not None:
            edit(t, tensors)
        write_capture(root / f"step-{t}", tensors, manifest=manifest)
    doc = {"format": "pv-generate", "steps": [record(r) if record else r for r in steps]}
    (root / "generate.json").write_text(json.dumps(doc))
    return root


STEPS = [{"step": 0, "input": PROMPT, "position": 0, "predicted": 7},
         {"step": 1, "input": [7], "position": 8, "predicted": 11}]


def _minimal(rec: dict[str, Any]) -> dict[str, Any]:
    """What another engine must write at least: no position (it follows from the inputs)."""
    return {k: rec[k] for k in ("step", "input", "predicted")}


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    return write_generation(tmp_path / "ref", STEPS, manifest=True)


def _scores(result: Any) -> list[Any]:
    return [r for r in result.stage.report.records if r.stage == "attn_scores"]


@pytest.mark.parametrize("model", [CONFIG, None], ids=["with --model", "sizes from B's manifest"])
def test_a_bare_decode_step_is_laid_out_from_generate_json(tmp_path: Path, ref: Path, model: Any) -> None:
    bare = write_generation(tmp_path / "bare", STEPS, manifest=False, record=_minimal)
    result = bisect_generation(bare, ref, model=model)
    assert result.ok, result.summary()
    assert [s.position for s in result.steps] == [0, 8]
    assert result.steps[0].logits is not None  # the prefill's [8, V] logits: all rows, last compared
    # A changed key the newest query sees (key 8) is found; the rows are [NH, 1, 9], not [NH, 3, 3].
    def newest_key(t: int, tensors: dict[tuple[str, int | None], np.ndarray]) -> None:
        if t == 1:
            tensors[("attn_scores", 1)][:, 0, 8] += 5.0

    planted = write_generation(tmp_path / "planted", STEPS, manifest=False, record=_minimal, edit=newest_key)
    result = bisect_generation(planted, ref, model=model)
    assert result.stage_step == 1 and result.stage is not None
    assert result.stage.first_divergence == {"layer": 1, "stage": "attn_scores"}
    first = result.stage.first
    assert first is not None and first.metrics is not None
    assert first.metrics.count == NH * 9 and first.metrics.max_index == {"head": 0, "query": 0, "key": 8}


def test_two_bare_generations_lay_out_attention_from_generate_json_alone(tmp_path: Path) -> None:
    a = write_generation(tmp_path / "a", STEPS, manifest=False, record=_minimal)

    def newest_key(t: int, tensors: dict[tuple[str, int | None], np.ndarray]) -> None:
        if t == 1:
            tensors[("attn_softmax", 0)][:, 0, 8] += 0.5

    b = write_generation(tmp_path / "b", STEPS, manifest=False, edit=newest_key)
    result = bisect_generation(a, b)
    assert result.stage is not None and result.stage.first_divergence == {"layer": 0, "stage": "attn_softmax"}
    first = result.stage.first
    assert first is not None and first.metrics is not None and first.metrics.count == NH * 9
    assert first.metrics.max_index == {"head": 0, "query": 0, "key": 8}


def test_a_file_generate_json_cannot_lay_out_is_named_not_guessed(tmp_path: Path, ref: Path) -> None:
    def dropped_key(t: int, tensors: dict[tuple[str, int | None], np.ndarray]) -> None:
        if t == 1:  # the newest key never reached the scores: [NH, 1, 8]
            tensors[("attn_scores", 0)] = tensors[("attn_scores", 0)][:, :, :8].copy()

    bare = write_generation(tmp_path / "bare", STEPS, manifest=False, record=_minimal, edit=dropped_key)
    result = bisect_generation(bare, ref, model=CONFIG)
    assert result.stage_step == 1 and result.stage is not None and result.stage.first is not None
    assert result.stage.first_divergence == {"layer": 0, "stage": "attn_scores"}
    (why,) = result.stage.first.reasons
    assert why == ("A's layer-0/attn_scores.bin cannot be laid out from generate.json: 32 values are not "
                   "attn_scores [NH, S, S] = [4, 1, 9] at step 1 (position 8, 1 new token(s))")


def test_the_reported_case_on_the_command_line(tmp_path: Path, ref: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = write_generation(tmp_path / "bare", STEPS, manifest=False, record=_minimal)
    code = run(["bisect", str(bare), str(ref), "--generate", "2", "--model", "synthetic"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "shapes differ" not in out and "no divergence over 2 steps" in out


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"step": 0, "input": [1, 2], "predicted": 3}, {"step": 1, "input": [3], "position": 3, "predicted": 4}],
         "steps[1] is malformed: 'position' is 3, but the steps before it were fed 2 token(s)"),
        ([{"step": 0, "input": [], "predicted": 3}], "steps[0] is malformed: 'input' must be a non-empty list"),
        ([{"step": 0, "input": [1], "predicted": True}], "'predicted' must be a token id"),
        ([{"step": 1, "input": [1], "predicted": 2}], "steps[0] is malformed: 'step' must be 0"),
        ([], "'steps' is empty"),
    ],
)
def test_malformed_generate_json_is_one_line(tmp_path: Path, ref: Path, steps: list[Any], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "generate.json").write_text(json.dumps({"format": "pv-generate", "steps": steps}))
    with pytest.raises(PvError, match=re.escape(message)):
        gen_steps.load(bad)
    assert run(["bisect", str(bad), str(ref), "--generate", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_positions_are_filled_in_from_the_inputs(tmp_path: Path) -> None:
    root = tmp_path / "g"
    root.mkdir()
    (root / "generate.json").write_text(json.dumps({"format": "pv-generate", "steps": [
        {"step": 0, "input": [1, 2, 3], "predicted": 4}, {"step": 1, "input": [4], "predicted": 5},
        {"step": 2, "input": [5], "position": 4, "predicted": 6}]}))
    assert [s["position"] for s in gen_steps.load(root)["steps"]] == [0, 3, 4]


def test_step_shape_rules() -> None:
    sizes = {"NH": 4, "H": 64, "V": 256}
    assert gen_steps.step_shape("attn_scores", 36, 1, 8, sizes) == ((4, 1, 9), None)
    assert gen_steps.step_shape("attn_scores", 36, 1, 8, {}) == ((4, 1, 9), None)  # NH from the count
    assert gen_steps.step_shape("attn_norm", 64 * 3, 3, 0, {}) == ((3, 64), None)
    assert gen_steps.step_shape("lm_head", 256, 5, 0, sizes) == ((1, 256), None)  # the last row alone
    assert gen_steps.step_shape("lm_head", 5 * 256, 5, 0, {}) == (None, None)  # the vocabulary is needed
    assert gen_steps.step_shape("q_post_rope", 64, 1, 3, {}) == (None, None)  # NH and D both unknown
    shape, why = gen_steps.step_shape("attn_norm", 65, 1, 0, {"H": 64})
    assert shape is None and why == "65 values are not attn_norm [S, H] = [1, 64]"


def test_an_earlier_step_whose_output_passes_is_walked_first(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A bug whose effect reaches the output one step late is still named at the step it starts."""
    three = [*STEPS, {"step": 2, "input": [11], "position": 9, "predicted": 13}]
    ref = write_generation(tmp_path / "ref", three, manifest=True)

    def late(t: int, tensors: dict[tuple[str, int | None], np.ndarray]) -> None:
        if t == 1:
            tensors[("attn_softmax", 1)][:, 0, 8] += 0.25  # a stage moves, the logits do not
        if t == 2:
            tensors[("lm_head", None)][0, 3] += 4.0

    bare = write_generation(tmp_path / "bare", three, manifest=False, record=_minimal, edit=late)
    result = bisect_generation(bare, ref, model=CONFIG)
    assert result.first_step is not None and result.first_step.step == 2
    assert result.stage_step == 1 and result.stage is not None
    assert result.stage.first_divergence == {"layer": 1, "stage": "attn_softmax"}
    assert "step 1 already has a diverging stage" in " ".join(result.notes)
    assert run(["bisect", str(bare), str(ref), "--generate", "3"]) == 1
    text = capsys.readouterr().out
    assert "first divergent step: 2 (position 9)" in text
    assert "first step with a diverging stage: 1" in text and "inside step 1:" in text


def test_pv_diff_of_one_step_lays_it_out_too(tmp_path: Path, ref: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = write_generation(tmp_path / "bare", STEPS, manifest=False, record=_minimal)
    code = run(["diff", str(bare / "step-1"), str(ref / "step-1"), "--model", "synthetic", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    scores = [r for r in out["records"] if r["stage"] == "attn_scores"]
    assert scores and all(r["status"] == "pass" and r["metrics"]["count"] == NH * 9 for r in scores)
    # a folder named step-K outside a generation is an ordinary capture
    plain = write_capture(tmp_path / "plain" / "step-1", {("attn_norm", 0): np.zeros((1, H), np.float32)})
    assert gen_steps.step_of(plain) is None
    # step numbers past what generate.json lists are one line
    (bare / "step-5").mkdir()
    with pytest.raises(PvError, match=r"lists 2 step\(s\), not step 5"):
        gen_steps.step_of(bare / "step-5")
