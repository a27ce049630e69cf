"""A causal chunk is measured over the keys its queries see: the same comparison as over whole rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pv.compare import accumulate, triangle
from pv.compare.align import View
from pv.compare.metrics import compare


def _pair(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    b = rng.standard_normal(shape).astype(np.float32)
    a = (b + np.float32(1e-3) * rng.standard_normal(shape).astype(np.float32)).astype(np.float32)
    a[1, 40:] += np.float32(0.5)  # a worst region, so the largest differences are unique
    a[..., 0, 1:] = np.float32(7)  # masked values: never a difference
    return a, b


def _whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triangle, "reach", lambda acc, row_lo, rows: acc.view.row_len)


def _same(got: Any, want: Any) -> None:
    for key, w in want.to_dict().items():
        g = got.to_dict()[key]
        if key == "worst_position":  # (position, its error)
            assert g[0] == w[0] and g[1] == pytest.approx(w[1], rel=1e-6), key
        elif isinstance(w, float) and math.isfinite(w):
            assert g == pytest.approx(w, rel=1e-6, abs=1e-12), key  # float32 partials over other runs
        elif isinstance(w, (list, tuple)) and w and isinstance(w[0], float):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-12, err_msg=key)
        elif key != "systematic":
            assert g == w, key


@pytest.mark.parametrize("case", ["prefill", "window", "decode"])
def test_the_triangle_measures_what_whole_rows_measure(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    nq, keys = (96, 96) if case != "decode" else (8, 104)
    a, b = _pair(rng, (3, nq, keys))
    view = View((3, nq, keys), ("NH", "S", "S"), causal=True, window=24 if case == "window" else None)
    read: list[int] = []
    real = accumulate.measure

    def spy(acc: Any, A: np.ndarray, B: np.ndarray, *args: Any) -> bool:
        read.append(A.size)
        return real(acc, A, B, *args)

    monkeypatch.setattr(accumulate, "measure", spy)
    cut = compare(a.ravel(), b.ravel(), view, chunk=keys * 8)
    if case != "decode":  # a decode step's queries see nearly every key: little to leave out
        assert sum(read) < a.size * 0.7, "the masked keys were read"
    _whole(monkeypatch)
    _same(cut, compare(a.ravel(), b.ravel(), view, chunk=keys * 8))


def test_a_chunk_with_a_value_not_finite_is_measured_whole() -> None:
    rng = np.random.default_rng(6)
    a, b = _pair(rng, (2, 64, 64))
    a[1, 50, 3] = np.nan
    b[0, 10, 60] = np.inf  # masked: left out, not counted
    m = compare(a.ravel(), b.ravel(), View((2, 64, 64), ("NH", "S", "S"), causal=True), chunk=64 * 8)
    assert m.nan_a == 1 and m.nan_mismatch == 1 and m.inf_b == 0


def test_reach_is_the_last_query_of_the_chunk_plus_one() -> None:
    acc = accumulate.Acc(View((2, 64, 64), ("NH", "S", "S"), causal=True), 5)
    assert triangle.reach(acc, 0, 8) == 8
    assert triangle.reach(acc, 56, 8) == 64
    assert triangle.reach(acc, 60, 8) == 64  # wraps into the next head: every key
    assert triangle.reach(acc, 64 + 8, 8) == 16
