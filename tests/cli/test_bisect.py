"""``pv bisect``: captures, with --model, the fault, JSON summary, isolate, plot, report, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv.cli import run

pytest.importorskip("torch")

TOKENS = "5,9,33,120,77,3,8,250"


def test_model_fault_json_isolate_plot_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    png, md = tmp_path / "b.png", tmp_path / "b.md"
    code = run(
        [
            "bisect",
            "--model",
            "synthetic",
            "--reference",
            "pv",
            "--tokens",
            TOKENS,
            "--inject-fault",
            "score_scale_1_over_d@2",
            "--isolate",
            "--plot",
            str(png),
            "--report",
            str(md),
            "--format",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["summary"]["first_divergence"] == {"layer": 2, "stage": "attn_scores"}
    assert data["summary"]["last_good"] == {"layer": 2, "stage": "k_post_rope"}
    assert data["isolate"]["introduced_in"] == [2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text(encoding="utf-8")
    assert "**first divergence: layer 2 attn_scores**" in text and "](b.png)" in text
    assert "Local vs cumulative" in text


def test_model_clean_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            "bisect",
            "--model",
            "synthetic",
            "--reference",
            "pv",
            "--tokens",
            TOKENS,
            "--keep",
            str(tmp_path / "keep"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "no divergence" in out
    assert (tmp_path / "keep/test/manifest.json").is_file()
    assert (tmp_path / "keep/reference/manifest.json").is_file()
    # the kept captures bisect the same way from the directories
    assert (
        run(
            [
                "bisect",
                str(tmp_path / "keep/test"),
                str(tmp_path / "keep/reference"),
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["summary"]["first_divergence"] is None


def test_default_reference_is_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    code = run(
        [
            "bisect",
            "--model",
            "synthetic",
            "--tokens",
            TOKENS,
            "--inject-fault",
            "final_norm_skipped",
            "--format",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["summary"]["first_divergence"] == {
        "layer": None,
        "stage": "final_norm",
    }


def test_text_names_first_divergence_and_transitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        [
            "bisect",
            "--model",
            "synthetic",
            "--reference",
            "pv",
            "--tokens",
            TOKENS,
            "--inject-fault",
            "embedding_scaled",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence: embedding" in out and "last good stage:  none" in out
    assert (
        "later good->bad transitions" in out
    )  # the attention norm hides the scale, the residual shows it


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give two capture directories A B, or --model"),
        (["{d}"], "give two capture directories A B, or --model"),
        (["{d}", "{missing}"], "not a capture directory"),
        (
            ["{d}", "{d}", "--inject-fault", "mask_off_by_one"],
            "--inject-fault only applies with --model",
        ),
        (["{d}", "{d}", "--isolate"], "--isolate needs --model"),
        (
            ["--model", "synthetic", "--tokens", "1", "--prompt", "x"],
            "at most one of --tokens and --prompt",
        ),
        (["--model", "synthetic", "--plot", "{d}/x.jpg"], "must end in .png"),
        (["--model", "synthetic", "--report", "{missing}/r.md"], "does not exist"),
        (
            ["--model", "synthetic", "--inject-fault", "no_such_fault"],
            "unknown fault 'no_such_fault'",
        ),
        (["--model", "synthetic", "--inject-fault", "mask_off_by_one@9"], "out of range"),
        (["--model", "synthetic", "--keep", "{d}"], "must be a new or empty directory"),
        (["--model", "synthetic", "--tokens", "1,x"], "bad token id"),
        (["--model", "nowhere.gguf"], "not found"),
        (["{d}", "{d}", "--plot-metric", "psnr"], "Invalid value"),
        (["--model", "synthetic", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_arguments_are_exit_2_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("occupied", encoding="utf-8")
    paths = {"d": str(d), "missing": str(tmp_path / "missing")}
    code = run(["bisect", *(x.format(**paths) for x in args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_isolate_on_existing_captures_reruns_the_engine_that_wrote_a(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "keep"
    assert (
        run(
            [
                "bisect",
                "--model",
                "synthetic",
                "--reference",
                "pv",
                "--tokens",
                TOKENS,
                "--inject-fault",
                "attn_residual_dropped@0",
                "--keep",
                str(keep),
            ]
        )
        == 1
    )
    capsys.readouterr()
    code = run(
        [
            "bisect",
            str(keep / "test"),
            str(keep / "reference"),
            "--model",
            "synthetic",
            "--isolate",
            "--format",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["summary"]["first_divergence"] == {
        "layer": 0,
        "stage": "post_attn_residual",
    }
    # Isolation reruns what wrote A (pv, with the fault its manifest records), not a clean engine.
    assert data["isolate"]["introduced_in"] == [0]
    code = run(["bisect", str(keep / "test"), str(keep / "reference"), "--model", "synthetic"])
    out = capsys.readouterr().out
    assert "engine under test: pv with fault attn_residual_dropped@0; reference: pv" in out
    assert f"input: tokens {TOKENS} (" in out and "input: None" not in out
    # B was written by a clean pv: isolating the reference side is isolating a clean engine.
    code = run(["bisect", str(keep / "reference"), str(keep / "reference"), "--model", "synthetic", "--isolate",
                "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["isolate"]["introduced_in"] == []


def test_isolate_refuses_a_capture_pv_cannot_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, oracle = tmp_path / "ref", tmp_path / "oracle"
    for engine, out in (("pv", ref), ("hf", oracle)):
        assert run(["trace", "--model", "synthetic", "--engine", engine, "--tokens", TOKENS,
                    "--save-tensor", "all", "--output", str(out)]) == 0
    capsys.readouterr()
    assert run(["bisect", str(oracle), str(ref), "--model", "synthetic", "--isolate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pv: error: --isolate reruns the engine that wrote A layer by layer: A was written by "
                          "the transformers oracle, which pv cannot rerun one layer at a time")
    assert run(["bisect", str(oracle), str(ref), "--model", "synthetic"]) == 0
    assert "engine under test: hf; reference: pv" in capsys.readouterr().out


@pytest.mark.cuda
def test_bisect_on_cuda_finds_the_fault(capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device available")
    code = run(
        [
            "bisect",
            "--model",
            "synthetic",
            "--reference",
            "pv",
            "--device",
            "cuda",
            "--tokens",
            TOKENS,
            "--inject-fault",
            "swiglu_silu_on_up@2",
            "--format",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["summary"]["first_divergence"] == {"layer": 2, "stage": "ffn_silu"}


@pytest.mark.parametrize(("args", "words"), [
    (["bisect", "--model", "synthetic", "--tokens", ",".join(["5"] * 513)], "--tokens needs 513 positions"),
    (["bisect", "--model", "synthetic", "--tokens", ",".join(["5"] * 510), "--generate", "4"],
     "--tokens and 4 generated token(s) needs 513 positions"),
    (["trace", "--model", "synthetic", "--tokens", ",".join(["5"] * 513), "--save-tensor", "all", "--output", "x"],
     "--tokens needs 513 positions"),
])
def test_more_tokens_than_the_context_is_one_line(args: list[str], words: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(args) == 2
    err = capsys.readouterr().err
    assert words in err and "more than the model's context of 512" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
