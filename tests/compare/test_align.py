"""Pairing rules: shapes from manifest or config, flat fallback, causal views, the last-row rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pv.capture.model.config import SYNTHETIC
from pv.capture.store import aprt
from pv.compare.align import PairError, Side, View, plan_view


def side(
    stage: str | None,
    count: int,
    *,
    layer: int | None = 0,
    shape: tuple[int, ...] | None = None,
    header_layer: int | None = None,
) -> Side:
    hl = header_layer if header_layer is not None else (layer if layer is not None else 0xFFFFFFFF)
    layout = None
    if shape is not None and stage is not None:
        from pv import stages

        layout = stages.get(stage).layout
    return Side(Path(f"{stage}.bin"), stage, layer, aprt.Header(hl, count), shape, layout)


def test_manifest_shape_wins() -> None:
    v = plan_view(side("ffn_up", 3 * 160, shape=(3, 160)), side("ffn_up", 480, shape=(3, 160)))
    assert v.shape == (3, 160) and v.names == ("position", "feature")


def test_shape_from_config_solves_positions() -> None:
    v = plan_view(side("k_post_rope", 5 * 2 * 16), side("k_post_rope", 160), SYNTHETIC)
    assert v.shape == (5, 2, 16) and v.names == ("position", "kv_head", "dim")


def test_attention_scores_solve_square_and_are_causal() -> None:
    v = plan_view(side("attn_scores", 4 * 7 * 7), side("attn_scores", 4 * 49), SYNTHETIC)
    assert v.shape == (4, 7, 7) and v.causal and v.names == ("head", "query", "key")
    assert list(v.row_counts()[:7]) == [1, 2, 3, 4, 5, 6, 7]


def test_attention_output_is_read_per_head() -> None:
    v = plan_view(side("attention", 3 * 64), side("attention", 192), SYNTHETIC)
    assert v.shape == (3, 4, 16) and v.layout == ("S", "NH", "D")


def test_no_shape_compares_flat_with_a_note() -> None:
    v = plan_view(side("attn_scores", 98), side("attn_scores", 98))
    assert v.shape == (98,) and not v.causal
    assert any("causal" in n for n in v.notes)


def test_counts_that_do_not_fit_the_config_fall_back_to_flat() -> None:
    v = plan_view(side("ffn_up", 161), side("ffn_up", 161), SYNTHETIC)
    assert v.shape == (161,)


def test_mismatched_counts_layers_and_shapes_are_pair_errors() -> None:
    with pytest.raises(PairError, match="element counts differ: A has 10, B has 12"):
        plan_view(side("ffn_up", 10), side("ffn_up", 12))
    with pytest.raises(PairError, match="layers differ"):
        plan_view(side("ffn_up", 10, layer=1), side("ffn_up", 10, layer=2))
    with pytest.raises(PairError, match="header layers differ"):
        plan_view(side("ffn_up", 10, layer=1, header_layer=3), side("ffn_up", 10, layer=1))
    with pytest.raises(PairError, match=r"shapes differ: A is \[2, 6\], B is \[3, 4\]"):
        plan_view(side("ffn_up", 12, shape=(2, 6)), side("ffn_up", 12, shape=(3, 4)))


def test_lm_head_last_row_rule() -> None:
    full = side("lm_head", 5 * 256, layer=None)
    last = side("lm_head", 256, layer=None)
    v = plan_view(full, last, SYNTHETIC)
    assert v.shape == (1, 256) and v.offset_a == 4 * 256 and v.offset_b == 0
    assert v.unravel(3) == {"position": 4, "vocab": 3}
    w = plan_view(last, full)  # without a config: the shorter side is one row
    assert w.offset_b == 4 * 256 and w.offset_a == 0
    with pytest.raises(PairError, match="not one row"):
        plan_view(side("lm_head", 300, layer=None), side("lm_head", 256 * 2, layer=None), SYNTHETIC)
    with pytest.raises(PairError, match="element counts differ"):
        plan_view(side("final_norm", 64, layer=None), side("final_norm", 128, layer=None))


def test_lm_head_last_row_compares_the_right_values() -> None:
    from pv.compare.metrics import compare

    full = np.arange(3 * 4, dtype=np.float32)
    last = full[-4:].copy()
    v = View((1, 4), ("S", "V"), offset_a=8, position_base=2)
    m = compare(full, last, v)
    assert m.max_abs == 0.0 and m.positions == (2,)
