"""Where and how a model runs: its device, its dtype, and process settings for capturing runs.

Plan checks call ``resolve_device`` and ``torch_dtype`` before any weight
loads, so a missing GPU or an unknown dtype is one line up front; every runner
that computes with torch resolves its device and dtype through the same two.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> torch.dtype:
    """``float32``, ``float16`` or ``bfloat16`` (trimmed, any case) as a torch dtype."""
    key = name.strip().lower()
    if key not in DTYPES:
        raise PvError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    dtype: torch.dtype = getattr(require("torch"), key)
    return dtype


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; refuse CUDA cleanly when there is none."""
    th = require("torch")
    text = name.strip().lower()
    if text == "cpu":
        cpu: torch.device = th.device("cpu")
        return cpu
    if text == "cuda" or text.startswith("cuda:"):
        if not th.cuda.is_available():
            build = "without CUDA" if th.version.cuda is None else f"with CUDA {th.version.cuda}"
            raise PvError(f"--device {name}: no CUDA device is available (torch {th.__version__} built {build})")
        try:
            device: torch.device = th.device(text)
        except RuntimeError:
            raise PvError(f"bad device '{name}'") from None
        if device.index is not None and device.index >= th.cuda.device_count():
            raise PvError(f"--device {name}: only {th.cuda.device_count()} CUDA device(s) present")
        return device
    raise PvError(f"unknown device '{name}'; use cpu, cuda or cuda:N")


def prefer_passive_openmp() -> None:
    """Let OpenMP workers sleep between kernels, unless the user chose otherwise.

    A capture's writer thread hashes and writes files while torch computes.
    OpenMP workers that spin-wait between kernels starve that thread when torch
    uses every core (full SmolLM2 capture on 2 cores: 3.8x the forward with
    spinning, 2.0x without). The variable is read once, when torch loads, so
    this only acts before the first torch import; a user's own setting wins.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: ``mallopt``'s parameter for the size from which glibc serves an allocation with its own mapping.
_M_MMAP_THRESHOLD = -3
#: The size set by ``return_large_frees``: a block of attention rows, a layer's activations.
LARGE_FREE_BYTES = 16 << 20


@functools.cache
def return_large_frees() -> None:
    """Have glibc map every allocation of ``LARGE_FREE_BYTES`` or more on its own, so that freeing
    it gives the memory back to the system at once.

    By default glibc raises that threshold to the size of the largest block
    freed so far (up to 32 MiB), after which blocks of that size come from its
    heaps, and two runners freeing blocks on their own threads leave those heaps
    full of holes the process keeps (set once per process). A streamed bisection of SmolLM2 at 2,048
    tokens on an idle 2-core machine: 3.39 GB peak RSS in 25.8 s with the
    threshold at 32 MiB, 3.11 GB in 30.8 s at 16 MiB, 2.85 GB in 33.9 s at 4 MiB
    (the kernel zeroes every mapped block: system time 5 s, 18 s, 22 s). A
    user's own ``MALLOC_MMAP_THRESHOLD_`` wins; elsewhere than glibc this does
    nothing.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:  # the process's own symbols: looking libc up by name would run ldconfig
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_FREE_BYTES)
    except (OSError, AttributeError):  # not glibc: nothing to set
        return
