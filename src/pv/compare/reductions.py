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


def row_sumsq(X: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of a C-contiguous 2-D float64 array.

    Rows are cut into equal pieces (a strided view, no copy) plus a tail, so
    that the dot releases the GIL (see ``_PIECES``) and no single BLAS call
    is long enough to go threaded (see ``SEG``); the pieces' sums are added
    per row.
    """
    if _VECDOT is None:
        out: np.ndarray = np.einsum("ij,ij->i", X, X)
        return out
    r, n = X.shape
    piece = next((p for p in _PIECES if r * (n // p) >= _GIL_FREE_LOOPS), None)
    if piece is None:
        if n <= 2 * SEG:
            out = _VECDOT(X, X)
            return out
        piece = SEG
    q = n // piece
    body = X[:, : q * piece].reshape(r, q, piece)
    out = _VECDOT(body, body).sum(axis=1)
    if q * piece < n:
        tail = X[:, q * piece :]
        out += _VECDOT(tail, tail)
    return out


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
