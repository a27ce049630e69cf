"""CapturePlan and the Tap: what is wanted, what is written, what is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from pv.capture.disktap import DiskTap
from pv.capture.plan import CapturePlan, stage_keys
from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter
from pv.errors import PvError

torch = pytest.importorskip("torch")


def test_plan_is_frozen_and_parsed() -> None:
    plan = CapturePlan.parse("lm_head, attn_scores", "1,3", n_layers=4)
    assert [s.name for s in plan.stages] == ["attn_scores", "lm_head"]
    assert plan.layers == (1, 3)
    with pytest.raises(AttributeError):
        plan.layers = None  # type: ignore[misc]
    with pytest.raises(PvError):
        CapturePlan.parse("all", "4", n_layers=4)


def test_wants() -> None:
    plan = CapturePlan.parse("embedding,attn_norm,final_norm", "1")
    assert plan.wants("attn_norm", 1) and not plan.wants("attn_norm", 0)
    assert plan.wants("embedding", 0) and plan.wants("final_norm", None)
    assert not plan.wants("ffn_out", 1)
    every = CapturePlan.parse("attn_norm", "all")
    assert every.layers is None and every.wants("attn_norm", 99)


def test_expected_in_computation_order() -> None:
    plan = CapturePlan.parse("lm_head,embedding,ffn_out,attn_norm", "0,2")
    assert plan.expected(3) == [("embedding", 0), ("attn_norm", 0), ("ffn_out", 0),
                                ("attn_norm", 2), ("ffn_out", 2), ("lm_head", None)]
    assert len(CapturePlan.parse("all", "all").expected(4)) == 3 + 25 * 4
    assert len(CapturePlan.parse("all", "all").expected(4, {"qkv_bias": True})) == 3 + 17 * 4
    assert len(CapturePlan.parse("all", "all").expected(4, {"qkv_bias": False})) == 3 + 16 * 4
    assert stage_keys([("lm_head", None), ("ffn_out", 2)]) == ["lm_head", "ffn_out@2"]


def make_tap(tmp_path: Path, stage_spec: str = "all", layers: str = "all") -> tuple[DiskTap, CaptureWriter]:
    writer = CaptureWriter(tmp_path / "cap", {"engine": "test"})
    return DiskTap(CapturePlan.parse(stage_spec, layers), writer, dtype_captured="bfloat16"), writer


def test_tap_copies_and_writes_in_the_background(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "attn_norm", "0")
    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    tap("attn_norm", 0, t)
    t.mul_(0)  # the engine may reuse its buffer: the file must hold the values at tap time
    tap.finish()
    path = tmp_path / "cap" / "layer-0" / "attn_norm.bin"
    assert path.exists()
    _, values = aprt.read(path, (2, 3))
    assert values.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert writer.files[0]["dtype_captured"] == "bfloat16" and writer.files[0]["shape"] == [2, 3]


def test_tap_ignores_unwanted_and_rejects_twice(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "attn_norm", "0")
    tap("attn_norm", 1, torch.ones(2))
    tap("ffn_out", 0, torch.ones(2))
    assert writer.files == []
    tap("attn_norm", 0, torch.ones(2))
    with pytest.raises(PvError, match="captured twice"):
        tap("attn_norm", 0, torch.ones(2))
    tap.finish()
    assert len(writer.files) == 1


def test_memory_in_flight_is_bounded_and_order_kept(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "all", "all")
    tap.MAX_IN_FLIGHT = 1000  # bytes: every stage waits for the one before
    tap.INLINE_BELOW = 0  # every stage through the writer thread
    for layer in range(5):
        tap("ffn_up", layer, torch.full((10, 30), float(layer)))
        assert tap._inflight_bytes <= 1200
    tap.finish()
    assert [f["layer"] for f in writer.files] == [0, 1, 2, 3, 4]
    for layer in range(5):
        assert aprt.read(tmp_path / "cap" / f"layer-{layer}" / "ffn_up.bin")[1].tolist() == [float(layer)] * 300


def test_several_writers_keep_the_tap_order_and_report_progress_in_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    writer = CaptureWriter(tmp_path / "cap", {"engine": "test"})
    seen: list[tuple[str, int | None]] = []
    tap = DiskTap(CapturePlan.parse("all", "all"), writer, writers=4, on_write=lambda s, l: seen.append((s, l)))
    tap.INLINE_BELOW = 0
    real_store = writer.store

    def slow_early_layers(stage: str, layer: int | None, array: object, **meta: object) -> dict[str, object]:
        time.sleep(0.002 * (12 - (layer or 0)))  # later stages finish first
        return real_store(stage, layer, array, **meta)

    monkeypatch.setattr(writer, "store", slow_early_layers)
    keys = [(stage, layer) for layer in range(12) for stage in ("attn_norm", "ffn_up")]
    for stage, layer in keys:
        tap(stage, layer, torch.full((4, 8), float(layer)))
    tap.finish()
    writer.close()
    assert tap.writers == 4
    assert [(f["stage"], f["layer"]) for f in writer.files] == keys
    assert seen == keys
    capture = directory.open_capture(tmp_path / "cap")
    for entry in capture.entries:
        assert entry.meta["blake3"] == aprt.digest_file(entry.path)
        assert aprt.read(entry.path)[1].tolist() == [float(entry.layer or 0)] * 32


def test_default_writers_leave_the_forward_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture import disktap

    monkeypatch.setattr(disktap.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert disktap.default_writers(cuda=False) == DiskTap.MAX_WRITERS  # 8 idle cores, capped
    monkeypatch.setattr(torch, "get_num_threads", lambda: 14)
    assert disktap.default_writers(cuda=False) == 2
    assert disktap.default_writers(cuda=True) == DiskTap.MAX_WRITERS  # the GPU computes; one thread launches
    monkeypatch.setattr(disktap.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert disktap.default_writers(cuda=False) == 1  # never none


def test_a_write_error_reaches_the_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tap, writer = make_tap(tmp_path, "all", "all")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise PvError("write failed: No space left on device")

    monkeypatch.setattr(writer, "store", full_disk)
    with pytest.raises(PvError, match="No space left"):  # a small stage is written inline
        tap("attn_norm", 0, torch.ones(4))
    tap.abort()
    tap2, writer2 = make_tap(tmp_path / "second", "all", "all")
    monkeypatch.setattr(writer2, "store", full_disk)
    big = torch.ones(DiskTap.INLINE_BELOW // 4 + 1)  # goes through the writer thread
    with pytest.raises(PvError, match="No space left"):
        for layer in range(1000):  # the error surfaces at a later tap call, not only at finish
            tap2("attn_norm", layer, big)
            time.sleep(0.001)
    tap2.abort()
    tap3, writer3 = make_tap(tmp_path / "third", "all", "all")
    monkeypatch.setattr(writer3, "store", full_disk)
    tap3("attn_norm", 0, big)
    with pytest.raises(PvError, match="No space left"):
        tap3.finish()


def test_tap_passes_metadata_to_the_manifest(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "attn_scores", "0,1")
    tap("attn_scores", 0, torch.zeros(1, 2, 2), provenance="recomputed")
    tap("attn_scores", 1, torch.zeros(1, 2, 2))
    tap.finish()
    writer.close()
    manifest = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert [f["provenance"] for f in manifest["files"]] == ["recomputed", "observed"]
    assert manifest["files"][0]["mask"] == "causal"
    assert manifest["files"][0]["dtype_captured"] == "bfloat16"


def test_not_applicable_and_missing(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "embedding,qkv_bias,attn_norm,lm_head", "0,1")
    tap("embedding", 0, torch.zeros(2, 4))
    tap("attn_norm", 0, torch.zeros(2, 4))
    tap.not_applicable("qkv_bias", "the model has no q/k/v bias")
    tap.not_applicable("ffn_up", "not requested, so not recorded")
    tap.finish()
    assert tap.missing(2) == [("attn_norm", 1), ("lm_head", None)]
    assert writer.not_applicable == [{"stage": "qkv_bias", "reason": "the model has no q/k/v bias"}]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_copies_are_asynchronous_and_exact(tmp_path: Path) -> None:
    tap, writer = make_tap(tmp_path, "all", "all")
    tap.MAX_IN_FLIGHT = 1 << 12  # force the bounded-memory path too
    expected = {}
    for layer in range(3):
        t = torch.randn(64, 32, device="cuda", dtype=torch.bfloat16)
        expected[layer] = t.float().cpu().numpy()
        tap("attn_norm", layer, t)
        del t  # the allocator must not hand this memory out before the side-stream copy is done
        torch.zeros(64, 32, device="cuda", dtype=torch.bfloat16).add_(1)
    tap.finish()
    for layer in range(3):
        _, v = aprt.read(tmp_path / "cap" / f"layer-{layer}" / "attn_norm.bin", (64, 32))
        assert np.array_equal(v, expected[layer])
    assert len(writer.files) == 3


class _FakeEvent:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def record(self, stream: object) -> None:
        self.log.append(f"record {self.name} on {stream}")

    def synchronize(self) -> None:
        self.log.append(f"synchronize {self.name}")


class _FakeStream:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def wait_event(self, event: _FakeEvent) -> None:
        self.log.append(f"side waits for {event.name}")

    def __str__(self) -> str:
        return "side"


class _FakeCopier:
    """The CUDA copy path's calls, on the CPU: what a CUDA run would do, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.events = 0
        self.in_side_stream = False

    def stream(self, device: object) -> _FakeStream:
        self.log.append(f"side stream on {device}")
        return _FakeStream(self.log)

    def current_stream(self, device: object) -> str:
        return "compute"

    def event(self) -> _FakeEvent:
        self.events += 1
        return _FakeEvent(self.log, "ready" if self.events % 2 else "done")

    def use(self, stream: object) -> object:
        import contextlib

        copier = self

        @contextlib.contextmanager
        def ctx():  # type: ignore[no-untyped-def]
            copier.in_side_stream = True
            copier.log.append("enter side")
            yield
            copier.log.append("leave side")
            copier.in_side_stream = False
        return ctx()

    def host_buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        self.log.append(f"host buffer {list(shape)}")
        return torch.empty(shape, dtype=torch.float32)

    def keep_alive(self, tensor: torch.Tensor, stream: object) -> None:
        self.log.append(f"keep alive {tensor.dtype} for {stream}")


def test_the_cuda_copy_path_runs_its_steps_in_order_on_a_cpu(tmp_path: Path) -> None:
    """Side stream, events, host buffer and allocator hint in the order CUDA needs them."""
    copier = _FakeCopier()
    writer = CaptureWriter(tmp_path / "cap", {"engine": "test"})
    tap = DiskTap(CapturePlan.parse("attn_norm", "all"), writer, copier=copier)
    tap.MAX_IN_FLIGHT = 1 << 10  # force the bounded-memory wait as well
    expected = {}
    for layer in range(3):
        t = torch.randn(64, 32, dtype=torch.bfloat16)
        expected[layer] = t.float().numpy()
        tap("attn_norm", layer, t)
    tap.finish()
    writer.close()
    for layer in range(3):
        _, v = aprt.read(tmp_path / "cap" / f"layer-{layer}" / "attn_norm.bin", (64, 32))
        assert np.array_equal(v, expected[layer])  # bf16 -> f32 widening is exact
    log = copier.log
    assert log[0] == "side stream on cpu" and log.count("side stream on cpu") == 1  # one stream, reused
    first = log[1:8]
    assert first == ["record ready on compute", "host buffer [64, 32]", "enter side", "side waits for ready",
                     "record done on side", "leave side", "keep alive torch.bfloat16 for side"]
    # the writer thread waits for each copy's event before it reads the host buffer
    assert log.count("synchronize done") == 3
    assert all(r["dtype_captured"] == "bfloat16" for r in writer.files)


def test_a_borrowing_tap_writes_the_same_files_as_a_copying_one(tmp_path: Path) -> None:
    """The pv engine lends its tensors (no copy on the forward's thread); the files do not change."""
    base = torch.randn(6, 40)
    tensors = {("attn_norm", 0): base, ("ffn_gate", 0): base[:, :20],  # a non-contiguous view
               ("ffn_up", 0): base[:, 20:].to(torch.bfloat16), ("ffn_out", 0): torch.randn(600, 700)}
    digests = []
    for borrow in (False, True):
        writer = CaptureWriter(tmp_path / f"cap{borrow}", {"engine": "test"})
        tap = DiskTap(CapturePlan.parse("attn_norm,ffn_gate,ffn_up,ffn_out", "0"), writer)
        tap.borrow = borrow
        for (stage, layer), t in tensors.items():
            tap(stage, layer, t)
        tap.finish()
        writer.close()
        digests.append([(r["path"], r["blake3"], r["dtype_captured"]) for r in writer.files])
    assert digests[0] == digests[1]
    assert {p: d for p, _, d in digests[1]}["layer-0/ffn_up.bin"] == "bfloat16"


def test_the_engine_lends_its_tensors_to_the_tap(tmp_path: Path) -> None:
    from pv.capture.engine.runner import Engine
    from pv.capture.model.load import load_model

    writer = CaptureWriter(tmp_path / "cap", {"engine": "test"})
    tap = DiskTap(CapturePlan.parse("attn_norm", "0"), writer)
    Engine(load_model("synthetic")).forward([1, 2, 3], tap)
    tap.finish()
    assert tap.borrow is True
