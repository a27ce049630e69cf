"""Falsifiers of contracts/bisect-streaming-v1.yaml: the streamed bisection equals the walk over two
full captures, writes nothing without --keep, and holds a bounded number of stages whatever the depth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pv.falsify.plugin import FalsifierRecord

torch = pytest.importorskip("torch")

TOKENS = "3,17,42,101,7,250,64,9,33,120,77,5"


def _cases() -> list[tuple[str, str | None, int]]:
    """(family, fault, --generate): the clean model and every fault each family can express."""
    from pv.capture import faults
    from pv.capture.model import arch
    from pv.capture.model.synthetic import family_config

    out: list[tuple[str, str | None, int]] = []
    for family in arch.FAMILIES:
        features = family_config(family).features
        out.append((family, None, 0))
        for fault in faults.CATALOGUE:
            if fault.runner != "pv" or (fault.requires and not features.get(fault.requires, False)):
                continue
            name = f"{fault.name}@1" if fault.per_layer else fault.name
            out.append((family, name, 4 if fault.decode else 0))
    return out


def _without_paths(part: dict[str, Any]) -> None:
    part["summary"].pop("a", None)
    part["summary"].pop("b", None)
    for rec in part.get("records", []):
        rec.pop("path_a")
        rec.pop("path_b")


def _comparable(run: Any) -> dict[str, Any]:
    """A run's JSON without what only written captures have (file paths and folder names)."""
    data: dict[str, Any] = json.loads(json.dumps(run.to_dict()))
    data.pop("files", None)
    _without_paths(data)
    if data.get("stage_bisect") is not None:
        _without_paths(data["stage_bisect"])
    return data


@pytest.mark.falsifies("FALSIFY-BSTREAM-001")
def test_streaming_equals_the_exhaustive_walk(falsifier_record: FalsifierRecord, tmp_path: Path) -> None:
    import pv

    cases = _cases()
    for i, (family, fault, generate) in enumerate(cases):
        args: dict[str, Any] = {"model": f"synthetic:{family}", "tokens": TOKENS[:11] if generate else TOKENS,
                                "fault": fault, "generate": generate}
        streamed = pv.bisect_run(**args)
        kept = pv.bisect_run(**args, keep=tmp_path / f"keep-{i}")
        assert _comparable(streamed) == _comparable(kept), f"{family} {fault}: streamed and exhaustive differ"
        if generate:
            walked = streamed.generation
            assert walked is not None and walked.first_step is not None and walked.stage is not None, (family, fault)
            assert walked.stage.first_divergence is not None and walked.stage.first_divergence["layer"] == 1
    falsifier_record.metric("cases", len(cases))
    args = {"model": "synthetic", "tokens": TOKENS, "fault": "attn_residual_dropped@2", "isolate": True}
    streamed, kept = pv.bisect_run(**args), pv.bisect_run(**args, keep=tmp_path / "keep-isolate")
    assert streamed.isolate is not None and kept.isolate is not None
    assert streamed.isolate.to_dict() == kept.isolate.to_dict() and streamed.isolate.introduced == [2]


_WRITES = r"""
import json, sys
def wchar():
    return next(int(l.split()[1]) for l in open("/proc/self/io") if l.startswith("wchar:"))
import pv
before = wchar()
run = pv.bisect_run(model=sys.argv[1], tokens=sys.argv[2], fault=sys.argv[3], keep=sys.argv[4] or None)
print(json.dumps({"written": wchar() - before, "first": run.result.first_divergence}))
"""


def _written(model: str, tokens: str, fault: str, keep: Path | None, cwd: Path) -> dict[str, Any]:
    """What a bisection in a fresh process wrote (write(2) bytes), and what it named."""
    import os

    # torch makes its compile cache folder under the temporary directory when transformers is imported
    # (empty; nothing of pv's): kept beside the working directory, which must stay empty.
    env = dict(os.environ, TMPDIR=str(cwd), TORCHINDUCTOR_CACHE_DIR=str(cwd.parent / "torch-cache"))
    done = subprocess.run([sys.executable, "-c", _WRITES, model, tokens, fault, str(keep or "")], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.falsifies("FALSIFY-BSTREAM-002")
def test_nothing_is_written_without_keep(falsifier_record: FalsifierRecord, tmp_path: Path) -> None:
    from pv.capture.model.load import load_model

    falsifier_record.model(load_model("synthetic"))
    work = tmp_path / "work"
    work.mkdir()
    streamed = _written("synthetic", TOKENS, "mask_off_by_one@1", None, work)
    assert streamed["first"] == {"layer": 1, "stage": "attn_softmax"}
    assert list(work.iterdir()) == [], "a streamed bisection left files behind"
    assert streamed["written"] <= 1 << 20, f"{streamed['written']} bytes written without --keep"
    kept = _written("synthetic", TOKENS, "mask_off_by_one@1", tmp_path / "keep", work)
    assert kept["first"] == streamed["first"] and kept["written"] > 10 * streamed["written"]
    falsifier_record.metric("bytes_written_streamed", streamed["written"])
    falsifier_record.metric("bytes_written_keep", kept["written"])


@pytest.mark.slow
@pytest.mark.falsifies("FALSIFY-BSTREAM-002")
def test_nothing_is_written_without_keep_live(falsifier_record: FalsifierRecord, smollm2: Any,
                                              smollm2_gguf: Path, tmp_path: Path) -> None:
    import numpy as np

    falsifier_record.model(smollm2)
    ids = np.random.Generator(np.random.PCG64(7)).integers(3, smollm2.config.vocab_size, 512)
    tokens = ",".join(str(int(i)) for i in ids)
    work = tmp_path / "work"
    work.mkdir()
    streamed = _written(str(smollm2_gguf), tokens, "mask_off_by_one@20", None, work)
    assert streamed["first"] == {"layer": 20, "stage": "attn_softmax"}
    assert list(work.iterdir()) == [] and streamed["written"] <= 1 << 20
    kept = _written(str(smollm2_gguf), tokens, "mask_off_by_one@20", tmp_path / "keep", work)
    assert kept["first"] == streamed["first"] and kept["written"] > 1 << 30
    falsifier_record.metric("bytes_written_streamed", streamed["written"])
    falsifier_record.metric("bytes_written_keep", kept["written"])


def _fake(layers: int, delay: float, blocks: int = 0) -> Any:
    """A runner's forward handing over ``layers`` x two stages of 64 KiB each, ``delay`` s apart, then
    with ``blocks`` an lm_head of that many blocks of 16 rows (64 KiB each) as parts."""
    from pv.capture.tap import Part

    def forward(tap: Any) -> None:
        x = torch.ones(16, 1024)
        tap("embedding", 0, x)
        for layer in range(layers):
            for stage in ("attn_norm", "post_ffn_residual"):
                time.sleep(delay)
                tap(stage, layer, x * (layer + 1))
        tap("final_norm", None, x)
        for i in range(blocks):
            time.sleep(delay)
            tap("lm_head", None, x, part=Part(i, blocks, 0, 16 * i, 16 * (i + 1), (16 * blocks, 1024)))
    return forward


@pytest.mark.falsifies("FALSIFY-BSTREAM-003")
def test_held_values_do_not_grow_with_depth(falsifier_record: FalsifierRecord) -> None:
    from pv.capture.plan import CapturePlan
    from pv.compare.stream import Comparison

    stage_bytes = 16 * 1024 * 4
    held = {}
    for layers in (4, 64):
        plan = CapturePlan.parse("embedding,attn_norm,post_ffn_residual,final_norm")
        comparison = Comparison(plan, config=None)
        streamed = comparison.run(_fake(layers, 0.0), _fake(layers, 0.002))  # A runs ahead of B
        assert all(r.status == "pass" for r in streamed.report.records)
        assert len(streamed.report.records) == 2 + 2 * layers
        held[layers] = comparison.peak_held
    assert held[4] == held[64], f"held values grow with depth: {held}"
    assert held[64] <= 2 * stage_bytes, f"held {held[64]} bytes, more than two stages of {stage_bytes}"
    falsifier_record.metric("held_bytes", held[64])
    plan = CapturePlan.parse("embedding,attn_norm,post_ffn_residual,final_norm,lm_head")
    for blocks in (4, 64):  # a stage in blocks of rows (lm_head at long S): nor with its length
        comparison = Comparison(plan, config=None)
        streamed = comparison.run(_fake(2, 0.0, blocks), _fake(2, 0.002, blocks))
        assert all(r.status == "pass" for r in streamed.report.records)
        held[blocks] = comparison.peak_held
    assert held[64] <= max(held[4], 4 * stage_bytes), f"a stage in blocks: held grows with its length: {held}"
    import pv

    run = pv.bisect_run(model="synthetic", tokens=TOKENS)
    from pv.capture.model.load import load_model

    falsifier_record.model(load_model("synthetic"))
    cfg = load_model("synthetic").config
    largest = cfg.vocab_size * len(TOKENS.split(",")) * 4  # lm_head is the largest stage here
    assert run.held_bytes is not None and run.held_bytes <= 2 * largest
