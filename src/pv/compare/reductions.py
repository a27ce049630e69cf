"""Reductions the chunked comparison is built from, shaped to run fast in threads.

:func:`pv.compare.metrics.compare` spends its time in a few whole-chunk numpy
passes. Two of them need care beyond calling numpy: the row-wise sums of
squares (a BLAS dot per row, where numpy's GIL rule and OpenBLAS' own threads
both get in the way of the diff's worker threads) and the first top-K
selection of a pair (a partial sort of the whole chunk unless a bound is
known).
"""

from __future__ import annotations

import math

import numpy as np

#: numpy >= 2 has a vectorised row-wise dot (2-3x faster than einsum here);
#: older numpy falls back to einsum.
_VECDOT = getattr(np, "vecdot", None)
#: Longest run handed to one BLAS dot. OpenBLAS splits dots longer than 10000
#: values over its thread pool, whose spinning threads stall for milliseconds
#: when the cores are busy (and fight the diff's own worker threads); shorter
#: dots always run on the calling thread.
SEG = 4096
#: numpy releases the GIL inside a gufunc such as ``vecdot`` only when its
#: outer loop runs more than 500 times; a chunk of 64 rows of 4096 would hold
#: the GIL for the whole pass and serialise the worker threads. Rows are cut
#: into pieces of these lengths (longest first) until there are enough pieces.
_PIECES = (512, 256)
_GIL_FREE_LOOPS = 512
#: Longest run of float32 values summed in float32 (one BLAS dot; longer rows are cut).
F32_RUN = 512
_ONES32 = np.ones(F32_RUN, dtype=np.float32)


def row_sumsq(X: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of a C-contiguous 2-D float32 or float64 array, in float64.

    Rows are cut into equal pieces (a strided view, no copy) plus a tail, so
    that the dot releases the GIL (see ``_PIECES``) and no single BLAS call
    is long enough to go threaded (see ``SEG``); the pieces' sums are added
    per row in float64. A float32 row is never summed in float32 beyond
    ``F32_RUN`` values: each piece's BLAS dot rounds in float32 (relative
    error a few units of 6e-8 on a sum of squares), the pieces' sums are
    combined in float64, so the error does not grow with the row or the tensor.
    """
    r, n = X.shape
    wide = X.dtype != np.float32
    if _VECDOT is None:
        out: np.ndarray = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        return out
    piece = next((p for p in _PIECES if r * (n // p) >= _GIL_FREE_LOOPS), None)
    if piece is None:
        if n <= (2 * SEG if wide else F32_RUN):
            out = _VECDOT(X, X)
            return out if wide else out.astype(np.float64)
        piece = SEG if wide else F32_RUN
    q = n // piece
    body = X[:, : q * piece].reshape(r, q, piece)
    out = _VECDOT(body, body).sum(axis=1, dtype=np.float64)
    if q * piece < n:
        tail = X[:, q * piece :]
        out += _VECDOT(tail, tail)
    return out


def total(T: np.ndarray) -> float:
    """Sum of a flat float32 or float64 array, in float64.

    A float32 array is summed as BLAS dots with ones over runs of ``F32_RUN``
    values (twice as fast as numpy's pairwise sum here), the runs' sums added
    in float64, as :func:`row_sumsq` does; enough runs for numpy to release the GIL.
    """
    n = T.size
    if T.dtype != np.float32 or _VECDOT is None or n < F32_RUN:
        return float(T.sum(dtype=np.float64))
    q = n // F32_RUN
    body = T[: q * F32_RUN].reshape(q, F32_RUN)
    out = float(_VECDOT(body, _ONES32[: F32_RUN]).sum(dtype=np.float64))
    return out + float(T[q * F32_RUN :].sum(dtype=np.float64))


#: Block length for :func:`kth_bound`.
_BLOCK = 64


def kth_bound(T: np.ndarray, k: int) -> float:
    """A value that at least ``k`` elements of ``T`` reach, found without sorting ``T``.

    The k-th largest of the block maxima: each of those k blocks holds an
    element at least that large. On the first chunk (no running top-K yet)
    this leaves a few candidates to sort instead of the whole chunk.
    """
    nb = T.size // _BLOCK
    if nb < k:
        return -math.inf
    maxima = T[: nb * _BLOCK].reshape(nb, _BLOCK).max(axis=1)
    return float(np.partition(maxima, nb - k)[nb - k])
