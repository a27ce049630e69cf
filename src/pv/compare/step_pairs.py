"""Step folders of two generations, laid out for comparison however they were written.

``pv bisect --generate`` compares step ``t`` of two generations, and ``pv diff
GEN/step-K OTHER/step-K`` one step of each. A step another engine wrote
without a manifest is laid out from what its ``generate.json`` says of the
step (``pv.capture.store.steps.lay_out``), with the sizes of ``--model``, else
of either side's manifest (the reference's first), so that a decode step's
``[NH, 1, P + 1]`` rows are never read as a square by their element count.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pv.capture.model.config import ModelConfig
from pv.capture.store import directory
from pv.capture.store import steps as gen_steps


def model_sizes(config: ModelConfig | None) -> dict[str, int]:
    """The named sizes of a model's stage layouts (``H``, ``NH``, ``QKV``, ...), S left out."""
    if config is None:
        return {}
    dims = config.dims(1)
    return {name: dims.size(name) for name in gen_steps.SIZE_NAMES if dims.size(name) > 0}


def open_pair(a: Path, b: Path, rec_a: Mapping[str, Any] | None, rec_b: Mapping[str, Any] | None,
              config: ModelConfig | None) -> tuple[directory.Capture, directory.Capture]:
    """Both step folders opened, each laid out from its step record (None: left as it is)."""
    ca, cb = directory.open_capture(a), directory.open_capture(b)
    sizes = {**gen_steps.sizes_of(ca), **gen_steps.sizes_of(cb), **model_sizes(config)}
    return (ca if rec_a is None else gen_steps.lay_out(ca, rec_a, sizes),
            cb if rec_b is None else gen_steps.lay_out(cb, rec_b, sizes))


__all__ = ["model_sizes", "open_pair"]
