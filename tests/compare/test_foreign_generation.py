"""Another engine's generation, written without manifests, bisected against pv's transformers oracle.

The engine is ``numpy_decoder.NumpyDecoder`` (numpy only, its own KV cache),
writing through ``examples/aprt_writer.py``. Clean, every step and stage agrees
with ``pv trace --engine hf --generate``; with a decode-only bug planted in one
layer, ``pv bisect --generate`` names step 1, that layer and the stage where
the bug first shows. The prompt has 8 tokens, so step 1's attention rows
``[NH, 1, 9]`` also fit a square ``[NH, 3, 3]`` by their element count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.aprt_writer import GenerationWriter
from pv.cli import run
from pv.compare.bisect import bisect_generation
from tests.compare.numpy_decoder import BUGS, FIRST_STAGE, STEPS, NumpyDecoder, oracle_generation

pytest.importorskip("torch")

LAYER = 2


@pytest.fixture(scope="module")
def model() -> Any:
    from pv.capture.model.load import load_model

    return load_model("synthetic")


@pytest.fixture(scope="module")
def reference(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return oracle_generation(model, tmp_path_factory.mktemp("gen") / "hf")


def decode(model: Any, reference: Path, out: Path, bug: str | None = None) -> Path:
    """The numpy engine fed the reference's inputs step by step (teacher forcing), written bare."""
    steps = json.loads((reference / "generate.json").read_text())["steps"]
    engine = NumpyDecoder(model.state_dict, model.config, bug=bug, bug_layer=LAYER)
    gen = GenerationWriter(out)
    for rec in steps:
        step = gen.begin(rec["input"])
        logits = engine.step(rec["input"], step.write)
        gen.end(predicted=int(np.argmax(logits[-1])))
    gen.close()
    return out


def test_the_writer_writes_no_manifest_and_the_minimal_record(model: Any, reference: Path, tmp_path: Path) -> None:
    out = decode(model, reference, tmp_path / "np")
    assert not list(out.rglob("manifest.json"))
    doc = json.loads((out / "generate.json").read_text())
    assert [(s["step"], s["position"], len(s["input"])) for s in doc["steps"]] == [(0, 0, 8), (1, 8, 1), (2, 9, 1)]
    assert (out / "step-1" / "layer-0" / "attn_scores.bin").stat().st_size == 12 + 4 * 4 * 9


@pytest.mark.parametrize("with_model", [True, False], ids=["--model", "sizes from the oracle's manifests"])
def test_clean_numpy_engine_passes_against_the_oracle(model: Any, reference: Path, tmp_path: Path,
                                                      with_model: bool) -> None:
    out = decode(model, reference, tmp_path / "np")
    result = bisect_generation(out, reference, model=model.config if with_model else None)
    assert result.ok, result.summary()
    assert [s.token_a for s in result.steps] == [s.token_b for s in result.steps]
    assert all(s.logits is not None and not s.logits.bad for s in result.steps)
    # every step's stages, decode rows included, were compared on their causal part
    walked = bisect_generation(out, reference, model=model.config if with_model else None)
    assert walked.stage is None
    from pv.capture.store import directory
    from pv.capture.store import steps as gen_steps
    from pv.compare.bisect import bisect

    doc = gen_steps.load(out)
    ca = gen_steps.lay_out(directory.open_capture(out / "step-1"), doc["steps"][1],
                           gen_steps.sizes_of(directory.open_capture(reference / "step-1")))
    report = bisect(ca, reference / "step-1").report
    scores = [r for r in report.records if r.stage == "attn_scores"]
    assert len(scores) == model.config.num_hidden_layers
    assert all(r.status == "pass" and r.metrics is not None and r.metrics.count == 4 * 9 for r in scores)


def test_clean_numpy_engine_on_the_command_line(model: Any, reference: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = decode(model, reference, tmp_path / "np")
    code = run(["bisect", str(out), str(reference), "--generate", str(STEPS), "--model", "synthetic"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"no divergence over {STEPS} steps" in text and "shapes differ" not in text


@pytest.mark.parametrize("bug", BUGS)
def test_each_decode_bug_is_named_at_its_step_layer_and_stage(model: Any, reference: Path, tmp_path: Path,
                                                               bug: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = decode(model, reference, tmp_path / bug, bug)
    code = run(["bisect", str(out), str(reference), "--generate", str(STEPS), "--model", "synthetic",
                "--format", "json"])
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert code == 1
    # the step whose stages are walked: its output may stay within tolerance a step longer
    assert summary["stage_step"] == 1, summary
    assert summary["first_divergence"] == {"layer": LAYER, "stage": FIRST_STAGE[bug]}, summary
    # the prefill is untouched by a decode-only bug
    prefill = bisect_generation(out, reference, model=model.config, max_steps=1)
    assert prefill.ok


def test_the_writer_knows_pv_s_stage_names() -> None:
    from examples import aprt_writer
    from pv import stages

    assert aprt_writer.STAGES == tuple(s.name for s in stages.STAGES)
    assert aprt_writer.stage_path("embedding", None) == "layer-0/embedding.bin"
    assert aprt_writer.stage_path("lm_head", None) == "lm_head.bin"
    assert aprt_writer.stage_path("attn_scores", 3) == "layer-3/attn_scores.bin"
    with pytest.raises(ValueError, match="unknown stage 'attn_score'"):
        aprt_writer.stage_path("attn_score", 0)


def test_writer_files_read_back_as_pv_reads_them(tmp_path: Path) -> None:
    from examples.aprt_writer import write_aprt
    from pv.capture.store import aprt

    values = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    write_aprt(tmp_path / "x.bin", 5, values)
    header, back = aprt.read(tmp_path / "x.bin")
    assert header.layer == 5 and header.count == 12
    assert np.array_equal(back, values.astype(np.float32).reshape(-1))
