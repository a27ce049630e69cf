"""The stage registry: order, names, aliases, plan parsing, shapes."""

from __future__ import annotations

import pytest

from pv import stages
from pv.errors import PvError

PER_LAYER = [
    "attn_norm", "qkv_matmul", "qkv_bias", "q_norm", "k_norm", "q_post_rope", "k_post_rope",
    "attn_scores", "attn_softmax", "attention", "attn_out", "post_attn_norm", "post_attn_residual",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_silu", "ffn_swiglu", "ffn_out", "router_logits",
    "moe_experts", "moe_weights", "moe_out", "post_ffn_norm", "post_ffn_residual",
]

#: The stages of the first release: their names and relative order never change (APRT files).
ORIGINAL = [
    "embedding", "attn_norm", "qkv_matmul", "qkv_bias", "q_post_rope", "k_post_rope", "attn_scores",
    "attn_softmax", "attention", "attn_out", "post_attn_residual", "ffn_norm", "ffn_gate",
    "ffn_up", "ffn_silu", "ffn_swiglu", "ffn_out", "post_ffn_residual", "final_norm", "lm_head",
]


def test_stages_in_computation_order() -> None:
    names = [s.name for s in stages.STAGES]
    assert names == ["embedding", *PER_LAYER, "final_norm", "lm_head"]
    assert [s.order for s in stages.STAGES] == list(range(28))
    assert [n for n in names if n in ORIGINAL] == ORIGINAL
    assert [s.name for s in stages.LAYER_STAGES] == PER_LAYER
    assert [s.name for s in stages.MODEL_STAGES] == ["embedding", "final_norm", "lm_head"]


def test_only_attention_matrices_are_causal() -> None:
    causal = {s.name for s in stages.STAGES if s.mask == "causal"}
    assert causal == {"attn_scores", "attn_softmax"}


def test_all_selects_everything_in_order() -> None:
    assert stages.parse_stages("all") == stages.STAGES
    assert stages.parse_stages(" ALL ") == stages.STAGES
    assert stages.parse_stages("lm_head,all") == stages.STAGES


def test_names_are_trimmed_case_insensitive_and_sorted_by_computation_order() -> None:
    got = stages.parse_stages("  LM_Head , Attn_Scores,embedding ")
    assert [s.name for s in got] == ["embedding", "attn_scores", "lm_head"]


def test_duplicates_collapse() -> None:
    assert [s.name for s in stages.parse_stages("ffn_up,ffn_up,FFN_UP")] == ["ffn_up"]


@pytest.mark.parametrize(("alias", "target"), [("layer_output", "post_ffn_residual"),
                                                ("ffn_swigl", "ffn_swiglu"),
                                                ("Layer_Output", "post_ffn_residual")])
def test_aliases(alias: str, target: str) -> None:
    assert [s.name for s in stages.parse_stages(alias)] == [target]
    assert stages.get(alias).name == target


def test_iterable_spec() -> None:
    assert [s.name for s in stages.parse_stages(["ffn_out", " embedding"])] == ["embedding", "ffn_out"]


def test_a_double_comma_between_unknown_names_is_an_error() -> None:
    with pytest.raises(PvError, match="valid names: embedding"):
        stages.parse_stages("a,,b")


@pytest.mark.parametrize("spec", ["attn_norm,,ffn_up", "attn_norm,", ",attn_norm", "", "  "])
def test_empty_item_is_an_error_listing_valid_names(spec: str) -> None:
    with pytest.raises(PvError) as err:
        stages.parse_stages(spec)
    assert "empty stage name" in str(err.value)
    assert "attn_softmax" in str(err.value) and "layer_output" in str(err.value)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(PvError) as err:
        stages.parse_stages("attn_norm, attn_sofmax")
    msg = str(err.value)
    assert "unknown stage 'attn_sofmax'" in msg
    for s in stages.STAGES:
        assert s.name in msg
    assert "all" in msg


@pytest.mark.parametrize(("spec", "expected"), [
    ("0", (0,)),
    ("0,3,5", (0, 3, 5)),
    ("5,0,3,3", (0, 3, 5)),
    ("2..6", (2, 3, 4, 5)),
    (" 1 , 2..4 ", (1, 2, 3)),
    ("ALL", (0, 1, 2, 3, 4, 5, 6, 7)),
])
def test_layer_specs(spec: str, expected: tuple[int, ...]) -> None:
    assert stages.parse_layers(spec, 8) == expected


def test_all_layers_without_a_model_is_none() -> None:
    assert stages.parse_layers("all") is None
    assert stages.parse_layers("0..3") == (0, 1, 2)


@pytest.mark.parametrize("spec", ["", "1,,2", "a", "-1", "3..3", "6..2", "1..", "..4", "1.5", "0x1"])
def test_bad_layer_specs(spec: str) -> None:
    with pytest.raises(PvError):
        stages.parse_layers(spec, 8)


@pytest.mark.parametrize("spec", ["8", "0,8", "6..9"])
def test_out_of_range_layers_once_the_model_is_known(spec: str) -> None:
    assert stages.parse_layers(spec) is not None  # unknown model: syntax only
    with pytest.raises(PvError, match="out of range: the model has 8 layers"):
        stages.parse_layers(spec, 8)


def test_shapes_follow_the_layouts() -> None:
    dims = stages.Dims(S=5, H=64, NH=4, KVH=2, D=16, I=160, V=256)
    shape = {s.name: s.shape(dims) for s in stages.STAGES}
    assert shape["embedding"] == (5, 64)
    assert shape["qkv_matmul"] == shape["qkv_bias"] == (5, 4 * 16 + 2 * 2 * 16)
    assert shape["q_post_rope"] == (5, 4, 16)
    assert shape["k_post_rope"] == (5, 2, 16)
    assert shape["attn_scores"] == shape["attn_softmax"] == (4, 5, 5)
    assert shape["attention"] == (5, 64)
    assert shape["ffn_swiglu"] == (5, 160)
    assert shape["lm_head"] == (5, 256)


def test_header_layers() -> None:
    assert stages.get("embedding").header_layer(None) == 0
    assert stages.get("final_norm").header_layer(None) == stages.MODEL_LAYER == 0xFFFFFFFF
    assert stages.get("lm_head").header_layer(3) == stages.MODEL_LAYER
    assert stages.get("attn_out").header_layer(3) == 3
    with pytest.raises(ValueError):
        stages.get("attn_out").header_layer(None)


def test_sort_key_is_computation_order() -> None:
    keys = [("lm_head", None), ("attn_norm", 1), ("final_norm", None), ("ffn_out", 0),
            ("embedding", 0), ("attn_norm", 0)]
    keys.sort(key=lambda k: stages.sort_key(*k))
    assert keys == [("embedding", 0), ("attn_norm", 0), ("ffn_out", 0), ("attn_norm", 1),
                    ("final_norm", None), ("lm_head", None)]


def test_applies() -> None:
    bias = stages.get("qkv_bias")
    assert stages.applies(bias, {"qkv_bias": True})
    assert not stages.applies(bias, {"qkv_bias": False})
    assert not stages.applies(bias, {})
    assert stages.applies(stages.get("attn_norm"), {})


@pytest.mark.parametrize(("stage", "feature"), [
    ("q_norm", "qk_norm"), ("k_norm", "qk_norm"), ("post_attn_norm", "sandwich_norm"),
    ("post_ffn_norm", "sandwich_norm"), ("router_logits", "moe"), ("moe_experts", "moe"),
    ("moe_weights", "moe"), ("moe_out", "moe"),
])
def test_new_stages_exist_only_with_their_feature(stage: str, feature: str) -> None:
    st = stages.get(stage)
    assert st.requires == feature
    assert not stages.applies(st, {})
    assert stages.applies(st, {feature: True})


def test_dense_mlp_stages_exist_unless_a_model_says_it_has_none() -> None:
    for name in ("ffn_gate", "ffn_up", "ffn_silu", "ffn_swiglu", "ffn_out"):
        assert stages.applies(stages.get(name), {})
        assert not stages.applies(stages.get(name), {"dense_ffn": False, "moe": True})


def test_moe_shapes() -> None:
    dims = stages.Dims(S=3, H=8, NH=2, KVH=1, D=4, I=16, V=32, E=6, K=2)
    assert stages.get("router_logits").shape(dims) == (3, 6)
    assert stages.get("moe_experts").shape(dims) == stages.get("moe_weights").shape(dims) == (3, 2)
    assert stages.get("moe_out").shape(dims) == (3, 8)
    assert stages.get("q_norm").shape(dims) == (3, 2, 4)
    assert stages.get("k_norm").shape(dims) == (3, 1, 4)
