"""Row sums of squares cut into pieces, and the top-K bound, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from pv.compare.reductions import kth_bound, row_sumsq


@pytest.mark.parametrize(
    "shape",
    [
        (64, 4096),  # 512-long pieces: enough of them for numpy to release the GIL
        (455, 576),  # 256-long pieces and a 64-long tail
        (145, 576),  # too few pieces: one dot per row
        (3, 20_000),  # long rows: 4096-long pieces and a tail, no threaded BLAS call
        (1, 262_144),  # a flat chunk
        (2, 7),
    ],
)
def test_row_sumsq_matches_a_plain_sum(shape: tuple[int, int]) -> None:
    X = np.random.default_rng(3).standard_normal(shape)
    got = row_sumsq(X)
    assert got.shape == (shape[0],)
    assert got == pytest.approx((X * X).sum(axis=1), rel=1e-13)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_kth_bound_is_reached_by_at_least_k_values(k: int) -> None:
    T = np.abs(np.random.default_rng(4).standard_normal(10_000))
    bound = kth_bound(T, k)
    assert int((T >= bound).sum()) >= k
    assert bound <= np.sort(T)[-k]


def test_kth_bound_on_a_short_array_lets_everything_through() -> None:
    T = np.arange(100.0)
    assert kth_bound(T, 5) == -np.inf  # only one 64-block: no bound
    assert kth_bound(np.zeros(640), 3) == 0.0
