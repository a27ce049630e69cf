"""``pv trace --dry-run --prompt`` prints the token ids the run would use, from the model's
tokenizer alone, checked as a run checks them; nothing runs and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv.cli import run


def _tokens_line(out: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("tokens:")]
    assert len(lines) == 1, out
    return lines[0]


def test_dry_run_prints_the_ids_a_run_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "Hi, pv é"
    assert run(["trace", "--prompt", prompt, "--save-tensor", "lm_head", "-o", str(tmp_path / "dry"),
                "--dry-run"]) == 0
    line = _tokens_line(capsys.readouterr().out)
    expected = list(prompt.encode("utf-8"))
    assert line == f"tokens:  {','.join(map(str, expected))} ({len(expected)})"
    assert not (tmp_path / "dry").exists()
    pytest.importorskip("torch")
    assert run(["trace", "--prompt", prompt, "--save-tensor", "lm_head", "-o", str(tmp_path / "real")]) == 0
    assert json.loads((tmp_path / "real" / "manifest.json").read_text())["run"]["token_ids"] == expected


def test_dry_run_with_tokens_prints_no_second_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["trace", "--tokens", "1,2,3", "--save-tensor", "lm_head", "-o", str(tmp_path / "o"),
                "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "input:   tokens 1,2,3" in out and "tokens:" not in out.replace("input:   tokens", "")


def test_model_without_tokenizer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pv.capture.model.config import SYNTHETIC
    from pv.capture.model.export import write_hf_directory
    from pv.capture.model.synthetic import synthetic_state_dict

    model = write_hf_directory(SYNTHETIC, synthetic_state_dict(SYNTHETIC), tmp_path / "m")
    (model / "tokenizer.json").unlink(missing_ok=True)
    assert run(["trace", "--model", str(model), "--prompt", "hi", "--save-tensor", "lm_head",
                "-o", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer; pass --tokens instead of --prompt" in err and len(err.strip().splitlines()) == 1
