"""A reference writer of pv's capture files for engines that are not pv: numpy only, no pv import.

An engine in any language can write what ``pv diff`` and ``pv bisect`` read
by porting the three pieces below; nothing else of pv is needed.

1. **An APRT v1 file** holds one float32 tensor, row-major::

       bytes 0-3   b"APRT"
       bytes 4-7   u32 little-endian: the layer (0 for embedding, 0xFFFFFFFF for final_norm and lm_head)
       bytes 8-11  u32 little-endian: the element count N
       bytes 12-   N float32 values, little-endian

2. **A capture directory** puts each stage where pv looks for it:
   ``layer-N/<stage>.bin`` for the per-layer stages, ``layer-0/embedding.bin``,
   and ``final_norm.bin``, ``lm_head.bin`` at the top. The values are in pv's
   canonical layouts (docs/capture.md, "Stages"): ``[S, H]`` rows for the
   hidden states, ``[S, NH, D]`` for the queries after RoPE, ``[S, KVH, D]``
   for the keys, ``[NH, S, P + S]`` for ``attn_scores`` (after the scale,
   before the mask) and ``attn_softmax``, ``[S, V]`` for the logits (or the
   last row alone). No manifest is needed.

3. **A generation** (the prefill, then one decode step per new token) is one
   capture directory per step, ``step-0/``, ``step-1/``, ..., and a
   ``generate.json`` written last::

       {"format": "pv-generate",
        "steps": [{"step": 0, "input": [5, 9, 33], "predicted": 50},
                  {"step": 1, "input": [50], "predicted": 26}]}

   Required per step: ``step`` (0, 1, ... in order), ``input`` (the token ids
   this step was fed: the prompt at step 0, then one token), ``predicted`` (the
   step's greedy next token). Optional: ``position`` (how many positions the
   KV cache held before the step; when given it must be where the steps
   before it left off), ``logprob`` (of the predicted token). pv reads S and P
   of every step from these, so a decode step's ``[NH, 1, P + 1]`` attention
   rows are laid out right without a manifest.

Usage::

    gen = GenerationWriter("out")
    step = gen.begin([5, 9, 33])                 # the prefill's input
    step.write("attn_scores", 0, scores)          # [NH, 3, 3]
    gen.end(predicted=50)
    step = gen.begin([50])                        # a decode step at position 3
    step.write("attn_scores", 0, scores)          # [NH, 1, 4]
    gen.end(predicted=26)
    gen.close()                                   # writes generate.json

Then ``pv bisect out reference --generate 2`` against ``pv trace --engine hf
--generate 2`` of the same prompt (``--model`` checks every size).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"APRT"
#: The layer an APRT header carries for final_norm and lm_head.
WHOLE_MODEL_LAYER = 0xFFFFFFFF
#: pv's stage names (a name pv does not know is never read, so a typo would go unnoticed).
STAGES = (
    "embedding", "attn_norm", "qkv_matmul", "qkv_bias", "q_norm", "k_norm", "q_post_rope", "k_post_rope",
    "attn_scores", "attn_softmax", "attention", "attn_out", "post_attn_norm", "post_attn_residual", "ffn_norm",
    "ffn_gate", "ffn_up", "ffn_silu", "ffn_swiglu", "ffn_out", "router_logits", "moe_experts", "moe_weights",
    "moe_out", "post_ffn_norm", "post_ffn_residual", "final_norm", "lm_head",
)
WHOLE_MODEL = ("embedding", "final_norm", "lm_head")


def write_aprt(path: str | os.PathLike[str], layer: int, array: Any) -> None:
    """One APRT v1 file: the 12-byte header, then the values as little-endian float32."""
    values = np.ascontiguousarray(array, dtype="<f4")
    if not 0 <= layer <= WHOLE_MODEL_LAYER:
        raise ValueError(f"layer {layer} does not fit a u32")
    with open(path, "wb") as f:
        f.write(struct.pack("<4sII", MAGIC, layer, values.size))
        f.write(values.tobytes())


def stage_path(stage: str, layer: int | None) -> str:
    """Where a stage lives inside a capture directory, and which layer its header carries."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; pv's stages are {', '.join(STAGES)}")
    if stage == "embedding":
        return "layer-0/embedding.bin"
    if stage in WHOLE_MODEL:
        return f"{stage}.bin"
    if layer is None or layer < 0:
        raise ValueError(f"stage {stage} needs a layer number")
    return f"layer-{layer}/{stage}.bin"


def header_layer(stage: str, layer: int | None) -> int:
    if stage == "embedding":
        return 0
    if stage in WHOLE_MODEL:
        return WHOLE_MODEL_LAYER
    assert layer is not None
    return layer


class StepWriter:
    """One capture directory (a step of a generation, or a single forward)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []

    def write(self, stage: str, layer: int | None, array: Any) -> None:
        rel = stage_path(stage, layer)
        if rel in self.written:
            raise ValueError(f"{rel} written twice")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_aprt(path, header_layer(stage, layer), array)
        self.written.append(rel)


class GenerationWriter:
    """``step-K/`` directories and, once every step is written, ``generate.json``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"{self.root}: must be a new or empty directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.steps: list[dict[str, Any]] = []
        self.position = 0
        self._open: list[int] | None = None

    def begin(self, input_ids: list[int]) -> StepWriter:
        """Start the next step, fed ``input_ids`` (the prompt at step 0, then one token a step)."""
        if self._open is not None:
            raise ValueError("end() the previous step first")
        if not input_ids:
            raise ValueError("a step is fed at least one token")
        self._open = [int(i) for i in input_ids]
        return StepWriter(self.root / f"step-{len(self.steps)}")

    def end(self, predicted: int, logprob: float | None = None) -> None:
        """Finish the step: the token it predicts (greedy) and, optionally, that token's log-probability."""
        if self._open is None:
            raise ValueError("begin() a step first")
        record: dict[str, Any] = {"step": len(self.steps), "input": self._open, "position": self.position,
                                  "predicted": int(predicted)}
        if logprob is not None:
            record["logprob"] = float(logprob)
        self.steps.append(record)
        self.position += len(self._open)
        self._open = None

    def close(self) -> Path:
        """Write ``generate.json`` (last: it is what makes the folders a generation)."""
        if self._open is not None:
            raise ValueError("the last step was begun but not ended")
        tmp = self.root / ".generate.json.tmp"
        tmp.write_text(json.dumps({"format": "pv-generate", "version": 1, "steps": self.steps}, indent=1) + "\n")
        os.replace(tmp, self.root / "generate.json")
        return self.root
