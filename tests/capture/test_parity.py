"""Engine against oracle: the evidence that pv's forward computes what transformers computes.

float32 on CPU, at least 16 tokens, every stage of every layer: cosine >= 0.99999
(in float64), the same argmax at every position, and the engine's greedy
continuation of 32 tokens equal to transformers' ``generate``. On the synthetic
Qwen2 model (bias, GQA, untied), its Llama twin (no bias, tied) and the real
SmolLM2-135M weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pv import stages as stage_table
from pv.capture.engine.runner import Engine
from pv.capture.model.config import SYNTHETIC
from pv.capture.model.load import synthetic_model
from pv.capture.model.loaded import LoadedModel, fingerprint
from pv.capture.model.synthetic import synthetic_state_dict
from pv.capture.oracle.runner import HFOracle
from pv.capture.store import aprt, directory

MIN_COSINE = 0.99999
CONTINUATION = 32
TOKENS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 32, 84, 104, 101, 32, 113, 117]
SMOLLM2_PROMPT = (
    "<|im_start|>user\nExplain in two sentences why the sky is blue during the day.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


class Recorder:
    """Keeps every stage of one forward in memory (float32 numpy)."""

    borrow = False

    def __init__(self) -> None:
        self.values: dict[tuple[str, int | None], np.ndarray] = {}
        self.skipped: set[str] = set()

    def wants(self, stage: str, layer: int | None) -> bool:
        return True

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        self.values[(stage, layer)] = tensor.detach().float().cpu().numpy().copy()

    def not_applicable(self, stage: str, reason: str) -> None:
        self.skipped.add(stage)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(x) * np.linalg.norm(y)
    return 1.0 if denom == 0 and not x.any() and not y.any() else float(x @ y / denom)


def compare_everything(model: LoadedModel, tokens: list[int]) -> tuple[dict[str, float], Any, Any]:
    """Worst cosine per stage over all layers; also both logits."""
    engine_tap, oracle_tap = Recorder(), Recorder()
    ours = Engine(model).forward(tokens, engine_tap)
    ref = HFOracle(model).forward(tokens, oracle_tap)
    assert engine_tap.skipped == oracle_tap.skipped
    assert set(engine_tap.values) == set(oracle_tap.values)
    cfg = model.config
    expected_files = sum(
        1 if st.scope == "model" else cfg.num_hidden_layers
        for st in stage_table.STAGES if stage_table.applies(st, cfg.features)
    )
    assert len(engine_tap.values) == expected_files
    worst: dict[str, float] = {}
    for key, mine in engine_tap.values.items():
        theirs = oracle_tap.values[key]
        assert mine.shape == theirs.shape, key
        worst[key[0]] = min(worst.get(key[0], 1.0), cosine(mine, theirs))
    return worst, ours, ref


def assert_parity(worst: dict[str, float], ours: Any, ref: Any) -> None:
    failing = {stage: c for stage, c in worst.items() if not c >= MIN_COSINE}
    assert not failing, f"stages below cosine {MIN_COSINE}: {failing}"
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


LLAMA = dataclasses.replace(SYNTHETIC, architecture="llama", attention_bias=False,
                            tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5)


def synthetic_llama() -> LoadedModel:
    sd = synthetic_state_dict(LLAMA)
    return LoadedModel(LLAMA, sd, "synthetic-llama", "synthetic", fingerprint(sd), None)


@pytest.mark.parametrize("make", [synthetic_model, synthetic_llama], ids=["qwen2", "llama"])
def test_synthetic_every_stage_every_layer(make: Any) -> None:
    model = make()
    worst, ours, ref = compare_everything(model, TOKENS)
    assert_parity(worst, ours, ref)
    assert len(worst) == (20 if model.config.attention_bias else 19)


@pytest.mark.parametrize("make", [synthetic_model, synthetic_llama], ids=["qwen2", "llama"])
def test_synthetic_greedy_continuation(make: Any) -> None:
    model = make()
    ours = Engine(model).generate(TOKENS, CONTINUATION)
    theirs = HFOracle(model).generate(TOKENS, CONTINUATION)
    assert len(ours) == CONTINUATION
    assert ours == theirs


def test_parity_detects_a_fault() -> None:
    """The comparison is not blind: a RoPE fault in the engine fails it from that stage on."""
    model = synthetic_model()
    engine_tap, oracle_tap = Recorder(), Recorder()
    Engine(model, fault="rope_theta_wrong@1").forward(TOKENS, engine_tap)
    HFOracle(model).forward(TOKENS, oracle_tap)
    assert cosine(engine_tap.values[("q_post_rope", 0)], oracle_tap.values[("q_post_rope", 0)]) >= MIN_COSINE
    assert cosine(engine_tap.values[("q_post_rope", 1)], oracle_tap.values[("q_post_rope", 1)]) < MIN_COSINE


def test_capture_files_agree(tmp_path: Path) -> None:
    """Through ``capture`` and the APRT files: both engines write the same set, shapes and layouts."""
    from pv.capture.trace import capture

    a = capture("synthetic", tokens=TOKENS, output=tmp_path / "pv", engine="pv")
    b = capture("synthetic", tokens=TOKENS, output=tmp_path / "hf", engine="hf")
    assert a.files == b.files == 3 + SYNTHETIC.num_hidden_layers * 17
    ca, cb = directory.open_capture(tmp_path / "pv"), directory.open_capture(tmp_path / "hf")
    ea, eb = ca.by_key(), cb.by_key()
    assert set(ea) == set(eb)
    for key, entry in ea.items():
        other = eb[key]
        assert (entry.shape, entry.layout) == (other.shape, other.layout), key
        _, x = aprt.read(entry.path)
        _, y = aprt.read(other.path)
        assert cosine(x, y) >= MIN_COSINE, key
    assert a.manifest["run"]["model"]["fingerprint"] == b.manifest["run"]["model"]["fingerprint"]


@pytest.mark.slow
def test_smollm2_every_stage_every_layer(smollm2: Any) -> None:
    tokens = smollm2.tokenizer.encode(SMOLLM2_PROMPT)
    assert len(tokens) >= 16
    worst, ours, ref = compare_everything(smollm2, tokens)
    assert len(worst) == 19  # no qkv bias in Llama
    assert_parity(worst, ours, ref)


@pytest.mark.slow
def test_smollm2_greedy_continuation(smollm2: Any) -> None:
    tokens = smollm2.tokenizer.encode(SMOLLM2_PROMPT)
    ours = Engine(smollm2).generate(tokens, CONTINUATION)
    theirs = HFOracle(smollm2).generate(tokens, CONTINUATION)
    assert len(ours) == CONTINUATION
    assert ours == theirs, (smollm2.tokenizer.decode(ours), smollm2.tokenizer.decode(theirs))
