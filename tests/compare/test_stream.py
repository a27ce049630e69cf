"""The streaming bisection equals the exhaustive walk over two full captures.

For every synthetic family and every catalogue fault the family can express,
``pv.bisect_run(model=...)`` (both runners compared while they run, nothing
written) and the same run with ``keep`` (both captures written, then walked)
must give the same answer: first divergence, last good stage, transitions,
every row (status, metrics, tolerance, reasons) and the notes. Only file paths
differ: the streamed run has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pv
from pv.capture import faults
from pv.capture.model import arch
from pv.capture.model.synthetic import family_config

TOKENS = "3,17,42,101,7,250,64,9,33,120,77,5"


def _cases() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for family in arch.FAMILIES:
        cfg = family_config(family)
        out.append((family, None))
        for fault in faults.CATALOGUE:
            if fault.runner != "pv" or fault.decode:
                continue
            if fault.requires and not cfg.features.get(fault.requires, False):
                continue
            out.append((family, f"{fault.name}@1" if fault.per_layer else fault.name))
    return out


def comparable(run: Any) -> dict[str, Any]:
    """The run's JSON without what only a written capture has (file paths, the folders' names)."""
    data = json.loads(json.dumps(run.to_dict()))
    data.pop("files", None)
    for key in ("a", "b"):
        data["summary"].pop(key, None)
    for rec in data["records"]:
        rec.pop("path_a")
        rec.pop("path_b")
    return data


@pytest.mark.slow
@pytest.mark.parametrize(("family", "fault"), _cases(), ids=lambda x: str(x))
def test_streaming_equals_the_exhaustive_walk(family: str, fault: str | None, tmp_path: Path) -> None:
    args: dict[str, Any] = {"model": f"synthetic:{family}", "tokens": TOKENS, "fault": fault}
    streamed = pv.bisect_run(**args)
    kept = pv.bisect_run(**args, keep=tmp_path / "keep")
    assert comparable(streamed) == comparable(kept)
    assert streamed.result is not None and kept.result is not None
    assert streamed.result.first_divergence == kept.result.first_divergence
    assert [r.status for r in streamed.result.report.records] == [r.status for r in kept.result.report.records]


@pytest.mark.slow
def test_isolate_while_streaming_equals_isolate_over_captures(tmp_path: Path) -> None:
    args: dict[str, Any] = {"model": "synthetic", "tokens": TOKENS, "fault": "attn_residual_dropped@2",
                            "isolate": True}
    streamed = pv.bisect_run(**args)
    kept = pv.bisect_run(**args, keep=tmp_path / "keep")
    assert streamed.isolate is not None and kept.isolate is not None
    assert streamed.isolate.to_dict() == kept.isolate.to_dict()
    assert streamed.isolate.introduced == [2]


def test_nothing_is_written_without_keep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.chdir(tmp_path)
    run = pv.bisect_run(model="synthetic", tokens=TOKENS, fault="mask_off_by_one@1")
    assert run.result is not None and run.result.first_divergence == {"layer": 1, "stage": "attn_softmax"}
    assert list(tmp_path.iterdir()) == []
    assert any("nothing written" in line for line in run.context)


def comparable_generation(run: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(run.to_dict()))
    data.pop("files", None)
    for key in ("a", "b"):
        data["summary"].pop(key, None)
    stage = data.get("stage_bisect")
    if stage is not None:
        for key in ("a", "b"):
            stage["summary"].pop(key, None)
        for rec in stage["records"]:
            rec.pop("path_a")
            rec.pop("path_b")
    return data


def _decode_cases() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [("qwen2", None)]
    for family in arch.FAMILIES:
        cfg = family_config(family)
        for fault in faults.CATALOGUE:
            if fault.runner == "pv" and fault.decode and (not fault.requires or cfg.features.get(fault.requires)):
                out.append((family, f"{fault.name}@1"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("family", "fault"), _decode_cases(), ids=lambda x: str(x))
def test_streaming_generation_equals_the_exhaustive_walk(family: str, fault: str | None, tmp_path: Path) -> None:
    args: dict[str, Any] = {"model": f"synthetic:{family}", "tokens": TOKENS[:11], "fault": fault, "generate": 4}
    streamed = pv.bisect_run(**args)
    kept = pv.bisect_run(**args, keep=tmp_path / "keep")
    assert streamed.generation is not None and kept.generation is not None
    assert comparable_generation(streamed) == comparable_generation(kept)
    if fault is not None:  # a decode-only bug is named at its step, layer and stage
        assert streamed.generation.first_step is not None and streamed.generation.first_step.step >= 1
        assert streamed.generation.stage is not None
        assert streamed.generation.stage.first_divergence["layer"] == 1


def _oom(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise MemoryError("simulated: cannot allocate 2.4 GiB")


def test_a_side_out_of_memory_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.engine.runner import Engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Engine, "forward", _oom)
    with pytest.raises(pv.PvError, match=r"^pv \(under test, in memory\) ran out of memory \(MemoryError: simulated"):
        pv.bisect_run(model="synthetic", tokens=TOKENS)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_with_keep_is_marked_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.engine.runner import Engine

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "forward", interrupted)
    keep = tmp_path / "keep"
    with pytest.raises(KeyboardInterrupt):
        pv.bisect_run(model="synthetic", tokens=TOKENS, keep=keep)
    assert (keep / "INCOMPLETE").read_text().startswith("pv bisect stopped before both captures were complete")
    assert (keep / "reference" / "manifest.json").is_file()  # the reference finished; it stays
    assert not (keep / "test").exists() or not any((keep / "test").rglob("*.bin"))
