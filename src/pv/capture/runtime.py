"""Process-level settings for commands that run a model while capturing."""

from __future__ import annotations

import os
import sys


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
