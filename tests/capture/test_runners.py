"""The runner registry and the tap protocol: every runner hands its stages, in computation order,
to any tap, and the commands ask the registry, not an engine's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pv import stages as stage_table
from pv.capture import runners
from pv.capture.model.load import load_model
from pv.capture.runners import Exposure, Settings
from pv.capture.tap import NULL_TAP, InOrder
from pv.errors import PvError

torch = pytest.importorskip("torch")

TOKENS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10]
FAMILIES = ["synthetic", "synthetic:qwen3", "synthetic:gemma3", "synthetic:qwen3_moe", "synthetic:mixtral",
            "synthetic:mistral"]


class Stream:
    """A tap that keeps nothing on disk: the (stage, layer) keys in the order a runner handed them over,
    as a comparator fed while two runners run would see them."""

    borrow = False

    def __init__(self) -> None:
        self.keys: list[tuple[str, int | None]] = []
        self.missing: dict[str, str] = {}

    def wants(self, stage: str, layer: int | None) -> bool:
        return True

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        assert stage not in self.missing, f"{stage} was declared not applicable, then handed over"
        self.keys.append((stage, layer))

    def not_applicable(self, stage: str, reason: str) -> None:
        self.missing[stage] = reason


def in_order(keys: list[tuple[str, int | None]]) -> bool:
    order = [stage_table.sort_key(*k) for k in keys]
    return order == sorted(order) and len(set(order)) == len(order)


def test_registry_rows_answer_what_the_commands_ask() -> None:
    assert runners.names() == ("pv", "hf", "llama.cpp")
    assert runners.get(" LLAMA.CPP ").name == "llama.cpp"
    with pytest.raises(PvError, match="unknown engine 'vllm'; choose one of pv, hf, llama.cpp"):
        runners.get("vllm")
    assert [k.name for k in runners.RUNNERS.values() if k.isolates] == ["pv"]
    assert runners.with_faults() == ["pv", "llama.cpp"]
    assert [k.name for k in runners.RUNNERS.values() if k.device_map] == ["hf"]
    with pytest.raises(PvError, match="runs GGUF files"):
        runners.get("llama.cpp").check_plan("synthetic", "cpu", "float32")
    runners.get("pv").check_plan("synthetic", "cpu", "float32")  # nothing to refuse


def test_a_runner_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine pv does not ship: registered, it is loaded through its row like the others."""
    monkeypatch.setattr(runners, "RUNNERS", dict(runners.RUNNERS))
    runners.register(runners.RunnerKind("pv-copy", "pv.capture.engine.runner:load", "a second pv engine",
                                        isolates=True))
    with pytest.raises(PvError, match="already registered"):
        runners.register(runners.RunnerKind("PV", "x:y", "another"))
    runner = runners.get("pv-copy").load(load_model("synthetic"), Settings())
    assert runner.forward(TOKENS).shape == (len(TOKENS), 256)
    broken = runners.RunnerKind("broken", "pv.capture.no_such_module:load", "a missing engine")
    with pytest.raises(PvError, match="--engine broken: a missing engine is not available"):
        broken.load(load_model("synthetic"), Settings())


def test_a_row_plants_only_its_own_faults() -> None:
    pv, hf, lc = runners.get("pv"), runners.get("hf"), runners.get("llama.cpp")
    assert pv.fault(None, 4, {}) is None
    assert str(pv.fault("stale_cache_entry@2", 4, {})) == "stale_cache_entry@2"
    with pytest.raises(PvError, match="works with --engine pv or llama.cpp only"):
        hf.fault("mask_off_by_one", 4, {})
    with pytest.raises(PvError, match="unknown llama.cpp fault 'mask_off_by_one'"):
        lc.fault("mask_off_by_one", 4, {})
    with pytest.raises(PvError, match="is planted in llama.cpp, not in --engine pv"):
        pv.fault(lc.fault("ffn_up_scaled", 4, {}), 4, {})
    with pytest.raises(PvError, match="layer 9 out of range"):
        lc.fault("ffn_up_scaled@9", 4, {})


@pytest.mark.parametrize("engine", ["pv", "hf"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_runner_hands_its_stages_over_in_computation_order(engine: str, family: str) -> None:
    model = load_model(family)
    runner = runners.get(engine).load(model, Settings())
    stream = Stream()
    runner.forward(TOKENS, stream)
    exposure = runner.stages()
    assert in_order(stream.keys), [k for k in stream.keys if k[1] in (None, 0)]
    assert stream.missing == dict(exposure.missing)
    n = model.config.num_hidden_layers
    expected = {(s, 0 if s == "embedding" else None if stage_table.get(s).whole_model else i)
                for s in exposure.stages for i in range(n)}
    assert set(stream.keys) == expected
    state = runner.start()  # a prefill and a decode step through the same protocol
    runner.decode(TOKENS[:5], state, NULL_TAP)
    step = Stream()
    runner.decode([7], state, step)
    assert in_order(step.keys) and set(step.keys) == expected
    runner.close()


@pytest.mark.parametrize("family", ["synthetic", "synthetic:qwen3", "synthetic:gemma3", "synthetic:qwen3_moe"])
def test_llama_cpp_hands_its_stages_over_in_computation_order(family: str, tmp_path: Path) -> None:
    """llama.cpp computes the query branch, RoPE included, before the value projection: the runner
    holds those stages until the fused q|k|v row is complete."""
    pytest.importorskip("llama_cpp")
    from pv.capture.model.export import write_gguf

    source = load_model(family)
    path = tmp_path / "m.gguf"
    write_gguf(source.config, dict(source.state_dict), path)
    model = load_model(str(path))
    runner = runners.get("llama.cpp").load(model, Settings())
    try:
        state = runner.start()
        for ids in (TOKENS, [7]):
            stream = Stream()
            runner.decode(ids, state, stream)
            assert in_order(stream.keys)
            assert {k[0] for k in stream.keys} == set(runner.stages().stages)
    finally:
        runner.close()


def test_the_null_tap_wants_nothing_and_the_forward_is_the_same_without_it() -> None:
    model = load_model("synthetic:gemma3")
    engine = runners.get("pv").load(model, Settings())
    assert not any(NULL_TAP.wants(s.name, layer) for s in stage_table.STAGES for layer in (None, 0, 5))
    stream = Stream()
    assert torch.equal(engine.forward(TOKENS), engine.forward(TOKENS, stream))
    assert stream.keys  # the same straight line, with a tap that wants everything


def test_in_order_holds_the_branch_and_hands_it_on_sorted() -> None:
    stream = Stream()
    tap = InOrder(stream)
    for key in [("attn_norm", 0), ("q_norm", 0), ("q_post_rope", 0), ("k_norm", 0), ("qkv_matmul", 0),
                ("attn_scores", 0), ("qkv_matmul", 1), ("k_post_rope", 1)]:
        tap(*key, None)
    assert stream.keys == [("attn_norm", 0), ("qkv_matmul", 0), ("q_norm", 0), ("k_norm", 0),
                           ("q_post_rope", 0), ("attn_scores", 0)]
    tap.flush()
    assert stream.keys[-2:] == [("qkv_matmul", 1), ("k_post_rope", 1)]


def test_exposure_is_the_stage_table_less_what_is_missing() -> None:
    exposure = Exposure({"qkv_bias": "no bias", "ffn_silu": "fused"})
    assert exposure.stages[:3] == ("embedding", "attn_norm", "qkv_matmul")
    assert "qkv_bias" not in exposure.stages and "ffn_silu" not in exposure.stages
    assert exposure.layout("attn_scores") == stage_table.get("attn_scores").layout
