"""``pv trace`` and the library ``capture()``: files, manifest, determinism, every error path."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pv import cli, stages
from pv.capture import trace
from pv.capture.model.load import load_model
from pv.capture.store import aprt, directory
from pv.errors import PvError

torch = pytest.importorskip("torch")

def pv_trace(*args: str) -> int:
    return cli.run(["trace", *args])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pv: error: "), err
    return err[0]


def test_full_capture_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--prompt", "Hello, pv!", "--save-tensor", "all", "--output", str(out)) == 0
    stdout = capsys.readouterr().out
    assert "wrote 71 files" in stdout and str(out) in stdout
    cap = directory.open_capture(out)
    assert len(cap.entries) == 71
    dims = load_model("synthetic").config.dims(len("Hello, pv!"))
    for e in cap.entries:
        assert e.shape == stages.get(e.stage).shape(dims)
    run = cap.manifest["run"]  # type: ignore[index]
    assert run["model"]["path"] == "synthetic" and run["model"]["architecture"] == "qwen2"
    assert run["model"]["fingerprint"] == load_model("synthetic").fingerprint
    assert run["model"]["config"]["num_key_value_heads"] == 2
    assert run["token_ids"] == list(b"Hello, pv!") and run["prompt"] == "Hello, pv!"
    assert (run["device"], run["dtype"], run["engine"], run["fault"]) == ("cpu", "float32", "pv", None)
    assert set(run["versions"]) >= {"pv", "python", "numpy", "torch"}
    assert run["provenance"]["recomputed"] == ["attn_scores", "attn_softmax"]
    assert "attention" in run["provenance"]["observed"]
    assert sorted(os.listdir(out)) == ["final_norm.bin", "layer-0", "layer-1", "layer-2", "layer-3",
                                       "lm_head.bin", "manifest.json"]


def test_selected_stages_and_layers(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--tokens", "1, 2,3", "--save-tensor", "ATTN_SCORES,layer_output", "--layers", "1..3",
                    "-o", str(out)) == 0
    cap = directory.open_capture(out)
    assert [e.key for e in cap.entries] == [("attn_scores", 1), ("post_ffn_residual", 1),
                                            ("attn_scores", 2), ("post_ffn_residual", 2)]
    assert cap.by_key()["attn_scores", 1].shape == (4, 3, 3)
    assert cap.manifest["run"]["layers"] == [1, 2]  # type: ignore[index]


def test_library_capture_is_deterministic_and_returns_logits(tmp_path: Path) -> None:
    a = trace.capture("synthetic", tokens=[5, 6, 7, 8, 9], output=tmp_path / "a")
    b = trace.capture(load_model("synthetic"), tokens="5,6,7,8,9", output=tmp_path / "b")
    assert a.files == b.files == 71 and a.token_ids == [5, 6, 7, 8, 9]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.bin"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.bin"))
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert a.manifest["files"] == b.manifest["files"]
    _, logits = aprt.read(tmp_path / "a" / "lm_head.bin", (5, 256))
    assert np.array_equal(a.logits, logits)
    assert a.bytes_written == sum(p.stat().st_size for p in (tmp_path / "a").rglob("*.bin"))


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--prompt", "hi", "--save-tensor", "all", "--layers", "0,2", "-o", str(out),
                    "--inject-fault", "gqa_head_mapping@2", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "dry run" in text and "gqa_head_mapping@2" in text and "up to 37" in text
    assert not out.exists()


def test_fault_injection_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--tokens", "1,2,3,4", "--save-tensor", "attn_softmax", "-o", str(out),
                    "--inject-fault", "mask_off_by_one@2") == 0
    run = directory.open_capture(out).manifest["run"]  # type: ignore[index]
    assert run["fault"] == {"name": "mask_off_by_one", "layer": 2, "stage": "attn_softmax"}


def test_force_replaces_only_the_old_capture(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--tokens", "1,2", "--save-tensor", "all", "-o", str(out)) == 0
    (out / "notes.txt").write_text("mine")
    assert pv_trace("--tokens", "1,2", "--save-tensor", "lm_head", "-o", str(out), "--force") == 0
    cap = directory.open_capture(out)
    assert [e.key for e in cap.entries] == [("lm_head", None)]
    assert sorted(os.listdir(out)) == ["lm_head.bin", "manifest.json", "notes.txt"]


def test_force_over_a_generation_replaces_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--tokens", "1,2", "--save-tensor", "lm_head", "-o", str(out), "--generate", "2") == 0
    assert (out / "generate.json").is_file() and (out / "step-1").is_dir()
    (out / "notes.txt").write_text("mine")
    (out / "step-notes").mkdir()  # not a step folder: stays
    assert pv_trace("--tokens", "1,2", "--save-tensor", "lm_head", "-o", str(out), "--force") == 0
    assert sorted(os.listdir(out)) == ["lm_head.bin", "manifest.json", "notes.txt", "step-notes"]


def test_a_failed_capture_takes_back_every_file_its_writer_threads_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.disktap import DiskTap

    real_create = aprt.create
    calls = [0]

    def fails_late(path: Path, layer: int, array: object) -> str:
        calls[0] += 1
        if calls[0] == 40:  # slow to fail: the writes after it finish first
            time.sleep(0.3)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_create(path, layer, array)

    monkeypatch.setattr(aprt, "create", fails_late)
    monkeypatch.setattr(DiskTap, "INLINE_BELOW", 0)  # every stage through the writer threads
    monkeypatch.setattr(trace, "DiskTap", lambda *a, **k: DiskTap(*a, **{**k, "writers": 3}))
    out = tmp_path / "cap"
    assert pv_trace("--tokens", "1,2,3", "--save-tensor", "all", "-o", str(out)) == 2
    assert calls[0] >= 40
    assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--save-tensor", "attn_norm,,ffn_up"], "empty stage name"),
    (["--save-tensor", "attn_sofmax"], "unknown stage 'attn_sofmax'; valid names"),
    (["--save-tensor", "all", "--layers", "2..9"], "layer 4 out of range: the model has 4 layers"),
    (["--save-tensor", "all", "--layers", "x"], "bad layer spec"),
    (["--save-tensor", "all", "--tokens", "1,2"], "exactly one of --prompt TEXT or --tokens IDS"),
    (["--save-tensor", "all", "--prompt", ""], "--prompt is empty"),
    (["--save-tensor", "all", "--model", "/no/such/model"], "model '/no/such/model' not found"),
    (["--save-tensor", "all", "--inject-fault", "bogus"], "unknown fault 'bogus'"),
    (["--save-tensor", "all", "--inject-fault", "mask_off_by_one@7"], "layer 7 out of range"),
    (["--save-tensor", "all", "--inject-fault", "mask_off_by_one", "--engine", "hf"], "--engine pv or llama.cpp only"),
    (["--save-tensor", "all", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], message: str) -> None:
    out = tmp_path / "cap"
    full = ["-o", str(out), *args]
    no_input = "--prompt" not in args and "--tokens" not in args
    if no_input or "--tokens" in args and "--prompt" not in args and "exactly one" in message:
        full += ["--prompt", "hi"]
    assert pv_trace(*full) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_bad_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for tokens, message in (("1,,2", "bad token id ''"), ("1,x", "bad token id 'x'"),
                            ("1,256", "token id 256 out of range for a vocabulary of 256"), ("-3", "out of range")):
        assert pv_trace("--tokens", tokens, "--save-tensor", "all", "-o", str(tmp_path / "c")) == 2
        assert message in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pv_trace("--prompt", "hi", "--save-tensor", "all", "--device", "cuda", "-o", str(tmp_path / "c")) == 2
    assert "no CUDA device is available" in one_error_line(capsys)


def test_output_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    assert pv_trace("--prompt", "hi", "--save-tensor", "all", "-o", str(busy)) == 2
    assert "not empty" in one_error_line(capsys)
    assert (busy / "x").read_text() == "keep me"
    afile = tmp_path / "file"
    afile.write_text("")
    assert pv_trace("--prompt", "hi", "--save-tensor", "all", "-o", str(afile)) == 2
    assert "not a directory" in one_error_line(capsys)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert pv_trace("--prompt", "hi", "--save-tensor", "all", "-o", str(locked / "cap")) == 2
            assert "not writable" in one_error_line(capsys)
        finally:
            locked.chmod(0o700)


def test_unsupported_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "gpt2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert pv_trace("--model", str(model), "--prompt", "hi", "--save-tensor", "all", "-o", str(tmp_path / "c")) == 2
    assert "unsupported architecture 'gpt2'" in one_error_line(capsys)


def test_disk_full_leaves_no_manifest_and_no_partial_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = aprt.create
    calls = [0]

    def filling_disk(path: os.PathLike[str], layer: int, array: object) -> str:
        calls[0] += 1
        if calls[0] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_create(path, layer, array)

    monkeypatch.setattr(aprt, "create", filling_disk)
    out = tmp_path / "cap"
    assert pv_trace("--prompt", "hi", "--save-tensor", "all", "-o", str(out)) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert not out.exists() or list(out.rglob("*")) == []


def test_a_requested_stage_that_never_fires_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.disktap import DiskTap

    real_wants = DiskTap.wants

    def forgetful(self: DiskTap, stage: str, layer: int | None) -> bool:
        return False if (stage, layer) == ("ffn_up", 2) else real_wants(self, stage, layer)

    monkeypatch.setattr(DiskTap, "wants", forgetful)
    out = tmp_path / "cap"
    assert pv_trace("--prompt", "hi", "--save-tensor", "ffn_gate,ffn_up", "-o", str(out)) == 2
    assert "requested stages never fired: ffn_up@2" in one_error_line(capsys)
    assert not (out / "manifest.json").exists()


def test_not_applicable_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from pv.capture.model import load as models

    syn = models.load_model("synthetic")
    cfg = dataclasses.replace(syn.config, attention_bias=False, architecture="llama")
    sd = {k: v for k, v in syn.state_dict.items() if not k.endswith("_proj.bias")}
    nobias = models.LoadedModel(cfg, sd, "nobias", "synthetic", models.fingerprint(sd), syn.tokenizer)
    result = trace.capture(nobias, prompt="hi", stages="qkv_bias,qkv_matmul", output=tmp_path / "c")
    assert result.not_applicable == {"qkv_bias": "the model has no q/k/v bias"}
    assert result.manifest["not_applicable"] == [{"stage": "qkv_bias", "reason": "the model has no q/k/v bias"}]
    assert result.files == 4


def test_library_errors_are_pverrors(tmp_path: Path) -> None:
    with pytest.raises(PvError, match="unknown engine"):
        trace.capture("synthetic", tokens=[1], output=tmp_path / "c", engine="vllm")
    with pytest.raises(PvError, match="unknown dtype"):
        trace.capture("synthetic", tokens=[1], output=tmp_path / "c", dtype="int8")
    assert not (tmp_path / "c").exists()


def test_hf_engine_through_the_same_tap(tmp_path: Path) -> None:
    pytest.importorskip("pv.capture.oracle.runner")
    result = trace.capture("synthetic", tokens=list(range(30, 46)), engine="hf", output=tmp_path / "hf")
    ours = trace.capture("synthetic", tokens=list(range(30, 46)), output=tmp_path / "pv")
    assert result.manifest["run"]["engine"] == "hf"
    assert {(f["stage"], f["layer"]) for f in result.manifest["files"]} == \
        {(f["stage"], f["layer"]) for f in ours.manifest["files"]}
    cos = float(np.dot(result.logits.ravel(), ours.logits.ravel())
                / np.linalg.norm(result.logits) / np.linalg.norm(ours.logits))
    assert cos > 0.99999


@pytest.mark.slow
def test_smollm2_prompt_capture(smollm2_gguf: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cap"
    assert pv_trace("--model", str(smollm2_gguf), "--prompt", "The capital of France is", "--save-tensor",
                    "qkv_bias,attn_softmax,layer_output,lm_head", "--layers", "0,29", "-o", str(out)) == 0
    stdout = capsys.readouterr().out
    assert "not applicable: qkv_bias" in stdout
    cap = directory.open_capture(out)
    run = cap.manifest["run"]  # type: ignore[index]
    assert run["model"]["architecture"] == "llama" and "gguf" in run["versions"]
    s = len(run["token_ids"])
    assert cap.by_key()["attn_softmax", 29].shape == (9, s, s)
    assert cap.by_key()["lm_head", None].shape == (s, 49152)
    _, logits = aprt.read(cap.by_key()["lm_head", None].path, (s, 49152))
    tok = load_model(str(smollm2_gguf)).tokenizer
    assert tok.decode([int(logits[-1].argmax())]).strip() == "Paris"
