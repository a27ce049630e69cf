"""The fault catalogue: each fault first shows at its declared stage, and nowhere earlier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pv import stages
from pv.capture import faults
from pv.capture.disktap import DiskTap
from pv.capture.engine.runner import Engine
from pv.capture.model.load import load_model
from pv.capture.model.loaded import LoadedModel
from pv.capture.plan import CapturePlan
from pv.capture.store import aprt, directory
from pv.capture.store.writer import CaptureWriter
from pv.errors import PvError

torch = pytest.importorskip("torch")

TOKENS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 80, 86]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_model("synthetic")


@pytest.fixture(scope="module")
def clean(model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    return run(model, None, tmp_path_factory.mktemp("clean"))


#: The synthetic model a fault runs on: the default one when it has what the fault
#: needs, else the first family that does (Gemma 3 for sandwich norms, Qwen3-MoE for
#: routing, Mistral for a window on every layer, Granite for its scalings, Phi-3 for its
#: fused tensors).
FAMILY_FOR = {"qkv_bias": "synthetic", "qk_norm": "synthetic:qwen3", "sandwich_norm": "synthetic:gemma3",
              "norm_offset": "synthetic:gemma3", "gelu_tanh": "synthetic:gemma3",
              "sliding_window": "synthetic:mistral", "moe": "synthetic:qwen3_moe",
              "norm_topk_prob": "synthetic:qwen3_moe", "dense_ffn": "synthetic", None: "synthetic",
              "embedding_multiplier": "synthetic:granite", "residual_multiplier": "synthetic:granite",
              "attention_multiplier": "synthetic:granite", "logits_scaling": "synthetic:granite",
              "fused_qkv": "synthetic:phi3", "fused_gate_up": "synthetic:phi3"}
_CLEAN: dict[str, dict[tuple[str, int | None], np.ndarray]] = {}


def run(model: LoadedModel, fault: str | None, root: Path) -> dict[tuple[str, int | None], np.ndarray]:
    engine = Engine(model, fault=fault)
    writer = CaptureWriter(root, {})
    tap = DiskTap(CapturePlan.parse("all"), writer)
    engine.forward(TOKENS, tap)
    tap.finish()
    writer.close()
    return {e.key: aprt.read(e.path, e.shape)[1] for e in directory.open_capture(root).entries}


def causal_view(stage: str, a: np.ndarray) -> np.ndarray:
    if stages.get(stage).mask == "causal":
        s = a.shape[-1]
        rows, cols = np.tril_indices(s)
        return a[:, rows, cols]
    return a


def test_catalogue_covers_the_usual_bugs() -> None:
    assert len(faults.FAULTS) >= 8
    first_stages = {f.stage for f in faults.FAULTS.values()}
    for needed in ("attn_norm", "qkv_matmul", "qkv_bias", "q_post_rope", "attn_scores", "attn_softmax",
                   "ffn_silu", "post_attn_residual", "post_ffn_residual"):
        assert needed in first_stages
    assert all(f.stage in stages.BY_NAME for f in faults.FAULTS.values())
    assert all(f.description for f in faults.FAULTS.values())


#: Every fault, per-layer ones in the first and the last layer of its synthetic model.
CASES = sorted(
    [f"{f.name}@{layer}" for f in faults.FAULTS.values() if f.per_layer for layer in (0, 3)]
    + [f.name for f in faults.FAULTS.values() if not f.per_layer]
)


@pytest.mark.parametrize("text", CASES)
def test_fault_first_shows_at_its_declared_stage(text: str, tmp_path: Path) -> None:
    spec = faults.parse_fault(text)
    name = FAMILY_FOR[spec.fault.requires]
    model = load_model(name)
    if name not in _CLEAN:
        _CLEAN[name] = run(model, None, tmp_path / "clean")
    clean = _CLEAN[name]
    bad = run(model, str(spec), tmp_path / "bad")
    declared = (spec.fault.stage, 0 if spec.fault.stage == "embedding" else spec.layer)
    order = sorted(clean, key=lambda k: stages.sort_key(*k))
    assert set(bad) == set(clean)
    assert declared in clean, f"{spec}: {declared} is not captured on {name}"
    for key in order:
        if key == declared:
            assert not np.array_equal(causal_view(key[0], bad[key]), causal_view(key[0], clean[key])), \
                f"{spec}: {key} should differ"
            break
        assert bad[key].tobytes() == clean[key].tobytes(), f"{spec}: {key} changed before {declared}"
    # the bug is visible at the logits as well, and later layers carry it
    assert not np.array_equal(bad[("lm_head", None)], clean[("lm_head", None)])


def test_every_new_stage_has_a_fault() -> None:
    first = {f.stage for f in faults.FAULTS.values()}
    for stage in ("q_norm", "k_norm", "post_attn_norm", "post_ffn_norm", "router_logits", "moe_experts",
                  "moe_weights", "moe_out"):
        assert stage in first, stage


def test_every_family_scaling_has_a_fault() -> None:
    """Granite's four scalings: a fault each, planted only where the model has the scaling."""
    needed = {f.requires for f in faults.FAULTS.values()}
    for feature in ("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"):
        assert feature in needed, feature
        assert not load_model("synthetic").config.features[feature]
    with pytest.raises(PvError, match="residual_multiplier_dropped needs a model with residual_multiplier"):
        Engine(load_model("synthetic:llama"), fault="residual_multiplier_dropped@1")


def test_fused_split_faults_need_the_fused_layout() -> None:
    """Phi-3's fused qkv_proj and gate_up_proj: a fault each; q and k swap only where they are one size."""
    from dataclasses import replace

    from pv.capture.model.loaded import LoadedModel as Loaded

    needed = {f.requires for f in faults.FAULTS.values()}
    assert {"fused_qkv", "fused_gate_up"} <= needed
    with pytest.raises(PvError, match="fused_gate_up_split_swapped needs a model with fused_gate_up"):
        Engine(load_model("synthetic"), fault="fused_gate_up_split_swapped@1")
    phi3 = load_model("synthetic:phi3")
    gqa = replace(phi3.config, num_key_value_heads=2)
    sd = {k: (v[: 2 * 16] if ".k_proj." in k or ".v_proj." in k else v) for k, v in phi3.state_dict.items()}
    with pytest.raises(PvError, match="fused_qkv_split_swapped@1: q and k take rows of different sizes"):
        Engine(Loaded(gqa, sd, "x", "synthetic", "f", None), fault="fused_qkv_split_swapped@1")


def test_sliding_window_fault_needs_a_windowed_layer() -> None:
    with pytest.raises(PvError, match="layer 2 has no sliding window"):
        Engine(load_model("synthetic:gemma3"), fault="sliding_window_ignored@2")


def test_default_layer_and_syntax() -> None:
    assert faults.parse_fault("mask_off_by_one").layer == faults.DEFAULT_LAYER == 1
    spec = faults.parse_fault("  Mask_Off_By_One @ 3 ")
    assert spec.name == "mask_off_by_one" and spec.layer == 3 and str(spec) == "mask_off_by_one@3"
    assert faults.parse_fault("final_norm_skipped").layer is None
    assert str(faults.parse_fault("embedding_scaled")) == "embedding_scaled"


@pytest.mark.parametrize(("text", "message"), [
    ("nonsense", "unknown fault 'nonsense'; valid faults: embedding_scaled"),
    ("mask_off_by_one@x", "bad fault layer"),
    ("mask_off_by_one@-1", "bad fault layer"),
    ("mask_off_by_one@", "bad fault layer"),
    ("final_norm_skipped@2", "takes no @LAYER"),
])
def test_bad_fault_specs(text: str, message: str) -> None:
    with pytest.raises(PvError, match=message):
        faults.parse_fault(text)


def test_fault_must_fit_the_model(model: LoadedModel) -> None:
    with pytest.raises(PvError, match="layer 4 out of range"):
        Engine(model, fault="softmax_wrong_axis@4")
    with pytest.raises(PvError, match="needs a model with qkv_bias"):
        faults.check_fault(faults.parse_fault("qkv_bias_dropped"), 4, {"qkv_bias": False})


def test_a_fault_only_touches_its_layer(model: LoadedModel, clean: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    bad = run(model, "attn_norm_no_weight@3", tmp_path)
    for key, value in clean.items():
        if key[1] is not None and key[1] < 3 and key[0] != "embedding":
            assert bad[key].tobytes() == value.tobytes()


def test_one_catalogue_for_every_runner() -> None:
    from pv.capture import runners
    from pv.capture.engine.layers import PLANTS

    assert set(faults.BY_NAME) == set(faults.FAULTS) | set(faults.DECODE_FAULTS) | set(faults.LLAMA_FAULTS)
    for f in faults.CATALOGUE:
        assert runners.get(f.runner).faults, f.name
        assert f.acts_on in faults.PLACES and f.stage in stages.BY_NAME, f.name
        assert (f.perturb is not None) == (f.acts_on in ("output", "node")), f.name
        assert (f.node is not None) == (f.acts_on == "node") == (f.runner == "llama.cpp"), f.name
    # pv's engine plants every one of its faults that does not act on a stage's output
    assert set(PLANTS) == {n for n, f in faults.for_runner("pv").items() if f.perturb is None}
    assert faults.ATTENTION_FAULTS == {"gqa_head_mapping", "score_scale_1_over_d", "mask_off_by_one",
                                       "softmax_wrong_axis"}


def test_the_catalogue_imports_no_torch_and_no_numpy() -> None:
    import subprocess
    import sys

    code = ("import sys, pv.capture.faults, pv.capture.runners; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_decode_faults_parse_with_the_others() -> None:
    spec = faults.parse_fault("stale_cache_entry")
    assert spec.layer == faults.DEFAULT_LAYER and faults.is_decode_fault(spec)
    assert not faults.is_decode_fault(faults.parse_fault("mask_off_by_one"))
    with pytest.raises(PvError, match="valid faults: embedding_scaled, .*, mask_off_by_one_decode$"):
        faults.parse_fault("nope")


def test_key_head_zero_is_zeroed_in_every_position_and_nothing_else() -> None:
    node = np.arange(3 * 4 * 8, dtype=np.float32).reshape(1, 3, 4, 8) + 1  # ggml's [1, S, KVH, D]
    out = faults.key_head_0_zeroed(node, None)
    assert not out[..., 0, :].any() and np.array_equal(out[..., 1:, :], node[..., 1:, :])
    assert node.all()  # the node's own values are left as they were
