"""What ``pv diff`` and ``pv bisect`` say beyond verdicts: captures of different tokens refused
through the one token check, a side without ids noted, tolerance options no pair could use
named, and the RoPE layout signature (q/k fail, scores pass) given as a hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv import stages as stage_table
from pv.capture.model.config import SYNTHETIC
from pv.capture.store import aprt, directory
from pv.cli import run

TOKENS = [5, 9, 33, 120, 77, 3, 8, 250]
OTHER = [5, 9, 33, 121, 77, 3, 8, 250]


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    from pv.capture.trace import capture

    root = tmp_path_factory.mktemp("caps")
    capture("synthetic", tokens=TOKENS, output=root / "ref")
    capture("synthetic", tokens=OTHER, output=root / "other")
    capture("synthetic", tokens=TOKENS, output=root / "half", dtype="float16")
    return {name: root / name for name in ("ref", "other", "half")}


def _pairs(x: np.ndarray, d: int) -> np.ndarray:
    """Halves order (i, i + D/2) -> rotary pairs (2i, 2i+1), per head of size d."""
    shape = x.shape
    return x.reshape(*shape[:-1], -1, 2, d // 2).swapaxes(-1, -2).reshape(shape)


def _import(cap: Path, root: Path, *, pairs: bool = False, halves: bool = False, args: tuple[str, ...] = ()) -> Path:
    """``cap`` dumped by a plain-function engine (names ``layers.N.STAGE``), imported through a mapping."""
    c = directory.open_capture(cap)
    cfg = SYNTHETIC
    d, q, k = cfg.head_dim, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    arrays: dict[str, np.ndarray] = {}
    rules = []
    for e in c.entries:
        arr = aprt.read(e.path, e.shape)[1]
        if pairs and e.stage in ("q_post_rope", "k_post_rope"):
            arr = _pairs(arr, d)
        if pairs and e.stage in ("qkv_matmul", "qkv_bias"):
            arr = np.concatenate([_pairs(arr[:, :q], d), _pairs(arr[:, q:q + k], d), arr[:, q + k:]], axis=-1)
        whole = stage_table.get(e.stage).scope == "model"
        arrays[e.stage if whole else f"layers.{e.layer}.{e.stage}"] = arr
    for s in sorted({e.stage for e in c.entries}, key=lambda s: stage_table.get(s).order):
        fix = ", transform: [halves_from_pairs]" if halves and s in ("q_post_rope", "k_post_rope") else ""
        if stage_table.get(s).scope == "model":
            rules.append(f"  - {{match: '{s}', stage: {s}{fix}}}")
        elif halves and s in ("qkv_matmul", "qkv_bias"):
            continue  # the fused row mixes halves of q, k and v: left out of the fixed mapping
        else:
            rules.append(f"  - {{match: 'layers\\.(?P<layer>\\d+)\\.{s}', stage: {s}{fix}}}")
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "dump.npz", **arrays)
    (root / "m.yaml").write_text("format: pv-mapping\nversion: 1\nname: fn\nrules:\n" + "\n".join(rules) + "\n")
    out = root / "imported"
    assert run(["import", str(root / "dump.npz"), "--mapping", str(root / "m.yaml"), "-o", str(out), *args]) == 0
    return out


def test_rope_layout_hint(caps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = _import(caps["ref"], tmp_path / "wrong", pairs=True, args=("--tokens", ",".join(map(str, TOKENS))))
    capsys.readouterr()
    assert run(["diff", str(wrong), str(caps["ref"])]) == 1
    out = capsys.readouterr().out
    hint = [line for line in out.splitlines() if line.startswith("hint: ")]
    assert len(hint) == 1 and "layer(s) 0, 1" in hint[0] and "RoPE layout mismatch (pairs vs halves)" in hint[0]
    assert "qkv_matmul, qkv_bias, q_post_rope, k_post_rope fail" in hint[0]
    assert run(["bisect", str(wrong), str(caps["ref"]), "--format", "json"]) == 1
    walked = json.loads(capsys.readouterr().out)
    assert walked["summary"]["first_divergence"] == {"layer": 0, "stage": "qkv_matmul"}
    assert walked["hints"] and "pairs vs halves" in walked["hints"][0]
    fixed = _import(caps["ref"], tmp_path / "fixed", pairs=True, halves=True)
    capsys.readouterr()
    assert run(["diff", str(fixed), str(caps["ref"])]) == 0
    assert "hint:" not in capsys.readouterr().out


def test_no_hint_when_scores_fail_too() -> None:
    """A real bug in q (a fault) also moves the scores: no layout hint then."""
    from pv.compare.hints import rope_layout
    from pv.compare.records import StageRecord

    records = [StageRecord("q_post_rope", 0, "fail"), StageRecord("attn_scores", 0, "fail")]
    assert rope_layout(records) == []
    assert rope_layout([StageRecord("q_post_rope", 2, "fail"), StageRecord("attn_scores", 2, "pass")])


def test_different_tokens_refused(caps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["diff"], ["bisect"]):
        assert run([*command, str(caps["other"]), str(caps["ref"])]) == 2
        err = capsys.readouterr().err
        assert "A and B ran different tokens" in err and "first at position 3: 121 vs 120" in err
        assert len(err.strip().splitlines()) == 1


def test_side_without_ids_is_noted(caps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = _import(caps["ref"], tmp_path / "bare")
    capsys.readouterr()
    assert run(["diff", str(bare), str(caps["ref"])]) == 0
    assert "note: A records no token ids" in capsys.readouterr().out
    assert run(["bisect", str(bare), str(caps["ref"])]) == 0
    assert "input not checked: A records no token ids" in capsys.readouterr().out
    with_ids = _import(caps["ref"], tmp_path / "ids", args=("--tokens", ",".join(map(str, TOKENS))))
    capsys.readouterr()
    assert run(["diff", str(with_ids), str(caps["ref"])]) == 0
    assert "token ids" not in capsys.readouterr().out
    other = _import(caps["other"], tmp_path / "other", args=("--tokens", ",".join(map(str, OTHER))))
    assert run(["diff", str(other), str(caps["ref"])]) == 2


def _notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("note: ") and "tolerance" in line
            or line.startswith("note: assume_dtype")]


def test_tolerance_options_never_ignored_silently(caps: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assume = tmp_path / "assume.yaml"
    assume.write_text("assume_dtype: float16\n")
    half_only = tmp_path / "half.yaml"
    half_only.write_text("dtypes:\n  float16:\n    stages:\n      ffn_gate: {rtol: 0.25}\n")
    stage = tmp_path / "stage.yaml"
    stage.write_text("stages:\n  router_logits: {rtol: 0.5}\n")
    upcast = _import(caps["half"], tmp_path / "upcast")  # float16 values saved as float32, undeclared
    capsys.readouterr()
    cases: list[tuple[Path, str]] = [
        (assume, "assume_dtype float16 not applied: every compared pair records its dtype (float32)"),
        (half_only, "the tolerance file's float16 tolerances not applied: every pair was judged in the float32"),
        (stage, "the tolerance file's entries for router_logits not applied"),
    ]
    for config, message in cases:
        run(["diff", str(upcast), str(caps["ref"]), "--tolerances", str(config)])
        notes = _notes(capsys.readouterr().out)
        assert len(notes) == 1 and message in notes[0], notes
    declared = _import(caps["half"], tmp_path / "declared", args=("--dtype", "float16"))
    capsys.readouterr()
    assert run(["diff", str(declared), str(caps["ref"]), "--tolerances", str(half_only), "--format", "json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["tolerance_notes"] == []
    gate = [r for r in report["records"] if r["stage"] == "ffn_gate"]
    assert gate and all(r["tolerance"]["rtol"] == 0.25 and r["dtype"] == "float16" for r in gate)


def test_api_checks_the_input_too(caps: dict[str, Path], tmp_path: Path) -> None:
    import pv
    from pv.errors import PvError

    with pytest.raises(PvError, match="ran different tokens"):
        pv.diff(caps["other"], caps["ref"])
    with pytest.raises(PvError, match="ran different tokens"):
        pv.bisect(caps["other"], caps["ref"])
    bare = _import(caps["ref"], tmp_path / "bare")
    assert any("A records no token ids" in n for n in pv.bisect(bare, caps["ref"]).report.notes)
    assert any("A records no token ids" in n for n in pv.diff(bare, caps["ref"]).notes)
