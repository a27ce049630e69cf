"""pv trace --generate: a prefill and one capture per decode step, for every engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv.cli import run
from pv.errors import PvError

torch = pytest.importorskip("torch")

TOKENS = "5,9,33,120,77"


def test_generation_layout_and_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen"
    assert run(["trace", "--tokens", TOKENS, "--save-tensor", "k_post_rope,attn_scores,lm_head",
                "--generate", "3", "-o", str(out)]) == 0
    assert "wrote 3 steps" in capsys.readouterr().out
    doc = json.loads((out / "generate.json").read_text())
    assert doc["format"] == "pv-generate" and [s["step"] for s in doc["steps"]] == [0, 1, 2]
    assert doc["steps"][0]["input"] == [5, 9, 33, 120, 77]
    assert doc["steps"][1]["input"] == [doc["steps"][0]["predicted"]]
    assert doc["steps"][2]["position"] == 6
    assert doc["tokens"] == [s["predicted"] for s in doc["steps"]]
    for step, keys in ((0, 5), (1, 6), (2, 7)):
        man = json.loads((out / f"step-{step}" / "manifest.json").read_text())
        assert man["run"]["step"] == step
        shapes = {(f["stage"], f["layer"]): f["shape"] for f in man["files"]}
        q = 5 if step == 0 else 1
        assert shapes[("attn_scores", 0)] == [4, q, keys]
        assert shapes[("k_post_rope", 3)] == [q, 2, 16]
        assert shapes[("lm_head", None)] == [q, 256]


@pytest.mark.parametrize("engine", ["pv", "hf"])
def test_decode_steps_record_the_sliding_window(engine: str, tmp_path: Path) -> None:
    """A windowed layer's attention files carry their window at every step, as the prefill's do
    (pv's decode steps used to record 'causal', so a diff against them ignored the window)."""
    out = tmp_path / engine
    assert run(["trace", "--model", "synthetic:mistral", "--engine", engine, "--tokens", "5,9,33,120,77,1,2",
                "--save-tensor", "attn_scores,attn_softmax", "--generate", "3", "-o", str(out)]) == 0
    for step in range(3):
        man = json.loads((out / f"step-{step}" / "manifest.json").read_text())
        assert {f["mask"] for f in man["files"]} == {"sliding_window:4"}, (engine, step)


def test_generate_matches_the_engines_own_generate(tmp_path: Path) -> None:
    from pv.capture.engine.runner import Engine
    from pv.capture.model.load import load_model

    model = load_model("synthetic")
    ids = [int(t) for t in TOKENS.split(",")]
    for engine in ("pv", "hf"):
        out = tmp_path / engine
        assert run(["trace", "--engine", engine, "--tokens", TOKENS, "--save-tensor", "lm_head",
                    "--generate", "6", "-o", str(out)]) == 0
        doc = json.loads((out / "generate.json").read_text())
        assert doc["tokens"] == Engine(model).generate(ids, 6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inject-fault", "stale_cache_entry@1"], "only acts at decode steps"),
        (["--inject-fault", "stale_cache_entry@1", "--generate", "1"], "only acts at decode steps"),
    ],
)
def test_bad_generation_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                              message: str) -> None:
    code = run(["trace", "--tokens", TOKENS, "--save-tensor", "lm_head", "-o", str(tmp_path / "o"),
                *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.engine import runner as engine_module

    calls = {"n": 0}
    real = engine_module.Engine.decode

    def flaky(self, token_ids, cache, tap=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk gone")
        return real(self, token_ids, cache, tap)

    monkeypatch.setattr(engine_module.Engine, "decode", flaky)
    code = run(["trace", "--tokens", TOKENS, "--save-tensor", "lm_head", "--generate", "4",
                "-o", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o").exists()


def _generate(out: Path, n: int, *extra: str) -> int:
    return run(["trace", "--tokens", TOKENS, "--save-tensor", "lm_head", "--generate", str(n),
                "-o", str(out), *extra])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_generate_refuses_a_non_empty_directory_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    assert _generate(out, 3) == 0
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    capsys.readouterr()
    assert _generate(out, 2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--force" in err[0]
    assert _snapshot(out) == before


def test_generate_force_replaces_the_earlier_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    assert _generate(out, 3) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _generate(out, 2, "--force", "--inject-fault", "embedding_scaled") == 0
    assert f"wrote 2 steps (2 files) and generate.json to {out}" in capsys.readouterr().out
    # The old step-2 is gone with the rest of the old generation; the user's file stays;
    # no staging folder is left behind.
    assert sorted(p.name for p in out.iterdir()) == ["generate.json", "notes.txt", "step-0", "step-1"]
    assert (out / "notes.txt").read_text() == "mine"
    doc = json.loads((out / "generate.json").read_text())
    assert len(doc["steps"]) == 2 and doc["run"]["fault"]["name"] == "embedding_scaled"
    man = json.loads((out / "step-1" / "manifest.json").read_text())
    assert man["run"]["fault"]["name"] == "embedding_scaled" and man["run"]["step"] == 1


def test_generate_force_replaces_a_single_capture(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert run(["trace", "--tokens", TOKENS, "--save-tensor", "embedding,attn_norm",
                "--layers", "0", "-o", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert _generate(out, 2, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["generate.json", "notes.txt", "step-0", "step-1"]


def test_generate_force_that_fails_leaves_the_earlier_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pv.capture.engine import runner as engine_module

    out = tmp_path / "gen"
    assert _generate(out, 3) == 0
    before = _snapshot(out)
    real = engine_module.Engine.decode
    calls = {"n": 0}

    def flaky(self, token_ids, cache, tap=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise PvError("disk gone")
        return real(self, token_ids, cache, tap)

    monkeypatch.setattr(engine_module.Engine, "decode", flaky)
    capsys.readouterr()
    assert _generate(out, 4, "--force") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk gone" in err[0]
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["generate.json", "step-0", "step-1", "step-2"]


def test_generate_force_dry_run_changes_nothing(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen"
    assert _generate(out, 2) == 0
    before = _snapshot(out)
    assert _generate(out, 3, "--force", "--dry-run") == 0
    assert "replacing the capture there" in capsys.readouterr().out
    assert _snapshot(out) == before


def test_failed_decode_step_leaves_the_cache_as_it_was() -> None:
    from pv.capture.engine.runner import Engine
    from pv.capture.model.load import load_model

    engine = Engine(load_model("synthetic"))
    cache = engine.start()
    engine.decode([5, 9, 33], cache)
    with pytest.raises(PvError):
        engine.decode([999], cache)  # out of the vocabulary

    class FailAtLayer2:
        def wants(self, stage: str, layer: int | None) -> bool:
            return stage == "attn_norm"

        def __call__(self, stage: str, layer: int | None, tensor: object, **meta: object) -> None:
            if layer == 2:  # layers 0 and 1 have already appended to the cache
                raise PvError("disk gone")

        def not_applicable(self, stage: str, reason: str) -> None:
            pass

    with pytest.raises(PvError):
        engine.decode([7], cache, FailAtLayer2())
    assert cache.length == 3 and all(k.shape[0] == 3 for k in cache.keys.values())
    assert all(v.shape[0] == 3 for v in cache.values.values())
    again = engine.decode([7], cache)
    assert torch.allclose(again[-1], engine.forward([5, 9, 33, 7])[-1], atol=1e-5)


def test_llama_cpp_generation(smollm2_gguf: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / "lc"
    assert run(["trace", "--engine", "llama.cpp", "--model", str(smollm2_gguf), "--prompt",
                "The capital of France is", "--save-tensor", "k_post_rope,attn_scores,attn_softmax,lm_head",
                "--layers", "0,29", "--generate", "3", "-o", str(out)]) == 0
    doc = json.loads((out / "generate.json").read_text())
    s = len(doc["steps"][0]["input"])
    man = json.loads((out / "step-2" / "manifest.json").read_text())
    shapes = {(f["stage"], f["layer"]): f["shape"] for f in man["files"]}
    assert shapes[("attn_scores", 29)] == [9, 1, s + 2]
    assert shapes[("k_post_rope", 0)] == [1, 3, 64]
    assert shapes[("lm_head", None)] == [1, 49152]
    # Capture is additive: llama.cpp without the graph callback picks the same tokens.
    from pv.capture.llamacpp.runner import LlamaCppRunner
    from pv.capture.model.load import model_config

    runner = LlamaCppRunner(smollm2_gguf, model_config(str(smollm2_gguf)), capture=False)
    assert runner.generate(doc["steps"][0]["input"], 3) == doc["tokens"]
    class Everything:  # a tap that wants every stage: this context cannot hand any over
        borrow = False

        def wants(self, stage: str, layer: int | None) -> bool:
            return True

        def __call__(self, stage: str, layer: int | None, tensor: object, **meta: object) -> None:
            raise AssertionError("no stage can arrive without the graph callback")

        def not_applicable(self, stage: str, reason: str) -> None:
            pass

    with pytest.raises(PvError, match="without capture"):
        runner.forward([1, 2], tap=Everything())
