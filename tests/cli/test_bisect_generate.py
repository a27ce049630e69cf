"""``pv bisect --generate``: first the step, then the stage; captures or --model; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv.cli import run

pytest.importorskip("torch")

TOKENS = "5,9,33,120,77"


def test_model_decode_fault_found_at_step_and_stage(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["bisect", "--model", "synthetic", "--tokens", TOKENS, "--generate", "4",
                "--inject-fault", "mask_off_by_one_decode@3", "--format", "json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    summary = out["summary"]
    assert summary["first_divergent_step"]["step"] == 1
    assert summary["first_divergence"] == {"layer": 3, "stage": "attn_softmax"}
    assert out["steps"][0]["ok"] and not out["steps"][1]["ok"]


def test_text_output_names_step_then_stage(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["bisect", "--model", "synthetic", "--tokens", TOKENS, "--generate", "3",
                "--inject-fault", "rope_position_ignores_cache@0", "--reference", "pv"])
    text = capsys.readouterr().out
    assert code == 1
    assert "first divergent step: 1 (position 5)" in text
    assert "first divergence: layer 0 q_post_rope" in text


def test_two_generation_captures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for engine in ("pv", "hf"):
        assert run(["trace", "--engine", engine, "--tokens", TOKENS, "--save-tensor", "all",
                    "--generate", "4", "-o", str(tmp_path / engine)]) == 0
    capsys.readouterr()
    code = run(["bisect", str(tmp_path / "pv"), str(tmp_path / "hf"), "--generate", "4"])
    assert code == 0
    assert "no divergence over 4 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "synthetic", "--inject-fault", "stale_cache_entry@1"], "only acts at decode steps"),
        (["--model", "synthetic", "--generate", "3", "--isolate"], "--generate works without"),
        (["--model", "synthetic", "--generate", "3", "--engine", "llama.cpp"], "not a .gguf"),
    ],
)
def test_bad_generation_bisects(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code = run(["bisect", "--tokens", TOKENS, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_plain_captures_are_not_generations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        assert run(["trace", "--tokens", TOKENS, "--save-tensor", "lm_head", "-o", str(tmp_path / name)]) == 0
    code = run(["bisect", str(tmp_path / "a"), str(tmp_path / "b"), "--generate", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "not a generation capture" in err


def test_llama_cpp_against_pv_over_a_generation(smollm2_gguf: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    code = run(["bisect", "--model", str(smollm2_gguf), "--engine", "llama.cpp", "--reference", "pv",
                "--prompt", "The capital of France is", "--generate", "3", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["summary"]
    assert out["summary"]["steps"] == 3 and all(s["ok"] for s in out["steps"])
    code = run(["bisect", "--model", str(smollm2_gguf), "--engine", "llama.cpp", "--reference", "pv",
                "--prompt", "The capital of France is", "--generate", "3",
                "--inject-fault", "attn_norm_scaled@4", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    # Scaling one norm's output by 1.5 stays inside the quantized class at the logits
    # (tokens agree), so the step level passes; the stage walk still names the bug.
    summary = out["summary"]
    step = summary["first_divergent_step"]["step"] if summary["first_divergent_step"] else None
    assert (step if step is not None else summary["stage_step"]) == 0
    assert summary["first_divergence"] == {"layer": 4, "stage": "attn_norm"}


def test_step_level_judges_log_probabilities(tmp_path: Path) -> None:
    """A constant added to every logit is no divergence; one token's logit moved is."""
    import shutil

    from pv.capture.store import aprt
    from pv.capture.store.pack import unpack
    from pv.capture.store.writer import reseal
    from pv.compare.bisect import bisect_generation

    ref = tmp_path / "ref"
    assert run(["trace", "--tokens", TOKENS, "--save-tensor", "lm_head", "--generate", "3",
                "-o", str(ref)]) == 0

    def edited(name: str, change: object) -> Path:
        out = tmp_path / name
        shutil.copytree(ref, out)
        unpack(out / "step-1")  # the step's stages as files, to edit one
        path = out / "step-1" / "lm_head.bin"
        header, values = aprt.read(path)
        aprt.write(path, header.layer, change(values.copy()))  # type: ignore[operator]
        reseal(out / "step-1")
        return out

    shifted = edited("shifted", lambda v: v + 3.0)
    result = bisect_generation(shifted, ref)
    assert result.first_step is None  # the same distribution at every step
    # ... yet the raw logits differ, and the stage walk says where.
    assert result.stage_step == 1 and result.stage is not None
    assert result.stage.first_divergence == {"layer": None, "stage": "lm_head"}

    def bump(v: object) -> object:
        v[7] += 2.0  # type: ignore[index]
        return v

    moved = edited("moved", bump)
    result = bisect_generation(moved, ref)
    assert not result.ok and result.first_step is not None and result.first_step.step == 1
    assert any("log-probabilities" in r for r in result.first_step.reasons())
    # An lm_head changed after the capture (no reseal) is refused, not judged; --no-verify judges it.
    unsealed = tmp_path / "unsealed"
    shutil.copytree(moved, unsealed)
    header, values = aprt.read(unsealed / "step-1" / "lm_head.bin")
    aprt.write(unsealed / "step-1" / "lm_head.bin", header.layer, values + 1.0)
    from pv.errors import PvError

    with pytest.raises(PvError, match="step-1/lm_head.bin: contents differ from the blake3 its manifest records"):
        bisect_generation(unsealed, ref)
    assert not bisect_generation(unsealed, ref, verify=False).ok
    assert run(["bisect", str(unsealed), str(ref), "--generate", "3"]) == 2
    assert run(["bisect", str(unsealed), str(ref), "--generate", "3", "--no-verify"]) == 1
