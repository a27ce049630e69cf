"""The fault catalogue: realistic porting bugs pv can plant, to prove that its instruments find them.

Each fault is a mistake people make when porting a decoder forward pass (a
forgotten norm weight, swapped projections, a wrong RoPE base, a GQA head
mapping that interleaves instead of groups, 1/D instead of 1/sqrt(D), a mask
that lets a query see one future key, softmax over the wrong axis, SiLU on the
wrong SwiGLU branch, a dropped residual), a cache bug that only shows when
decoding, or a change planted inside llama.cpp's own graph. Each declares
``stage``: the first stage, in computation order, whose tensor differs from a
clean run (comparing only the causal part of the attention matrices). Every
stage before it, in its layer and in earlier layers, stays byte-identical; the
tests pin both facts, and ``pv bisect`` must name exactly that stage and layer.

One table serves every runner: ``runner`` says whose computation the fault is
planted in (pv's engine or llama.cpp), ``decode`` that it acts only at decode
steps (the prefill stays bit-identical), ``acts_on`` where it acts. A fault
that changes a stage's output carries the small function that makes the
change (``perturb``), which the runner calls at that stage's capture point;
the others are planted by the runner where they act (pv's engine:
``pv.capture.engine.layers``). Plan checks read this module before anything
loads, so it imports neither torch nor numpy.

Per-layer faults hit one layer (``name@LAYER``, default layer 1); whole-model
faults (embedding, final norm) take no layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pv import stages as stage_table
from pv.errors import PvError

#: The layer a per-layer fault hits when ``@LAYER`` is not given.
DEFAULT_LAYER = 1

#: What the changed output is, given the stage's output and the input of the step
#: that produced it (a tensor or an array: only operators and indexing are used).
Perturb = Callable[[Any, Any], Any]

#: Where a fault acts: ``output`` (a stage's output, through ``perturb``), ``weights``
#: (what a layer loads), ``rope``, ``attention`` (head mapping, scale, mask or softmax
#: axis of the explicit attention path), ``window`` (a layer's sliding window), ``mlp``,
#: ``moe``, ``residual`` (what a residual branch is scaled by before it is added), ``cache``
#: (what a decode step writes to the KV cache), ``node`` (a llama.cpp graph node, rewritten
#: in its evaluation callback).
PLACES = ("output", "weights", "rope", "attention", "window", "mlp", "moe", "residual", "cache", "node")

#: What the faults of each runner are called in messages.
_NOUN = {"pv": "fault", "llama.cpp": "llama.cpp fault"}


def skipped(out: Any, inp: Any) -> Any:
    """The step is skipped: its input goes on instead of its output."""
    return inp


def scaled_by_sqrt_width(out: Any, inp: Any) -> Any:
    """The output times sqrt of its last dimension (the embedding scale Gemma has and others lack)."""
    return out * math.sqrt(out.shape[-1])


def scaled_by_1_5(out: Any, inp: Any) -> Any:
    return out * 1.5


def scaled_by_1_05(out: Any, inp: Any) -> Any:
    return out * 1.05


def shifted_by_1pct_of_rms(out: Any, inp: Any) -> Any:
    """Every value shifted by 1% of the whole array's RMS: one constant wrongly added."""
    return out + 0.01 * float((out * out).mean()) ** 0.5


def heads_0_1_swapped(out: Any, inp: Any) -> Any:
    """Heads 0 and 1 of a ``[..., NH, D]`` array exchanged, in a copy (the node's own array is read-only)."""
    changed = out.copy()
    changed[..., 0, :] = out[..., 1, :]
    changed[..., 1, :] = out[..., 0, :]
    return changed


def key_head_0_zeroed(out: Any, inp: Any) -> Any:
    """Key head 0 set to zero in a ``[..., KVH, D]`` array, in a copy (the node's own array is read-only)."""
    changed = out.copy()
    changed[..., 0, :] = 0.0
    return changed


@dataclass(frozen=True)
class Fault:
    name: str
    #: The first stage whose values differ from a clean run.
    stage: str
    description: str
    #: Where it acts (one of ``PLACES``).
    acts_on: str
    #: Model feature the fault needs (``"qkv_bias"``), or None.
    requires: str | None = None
    #: The runner it is planted in: a name of the runner registry.
    runner: str = "pv"
    #: Acts only at decode steps: the prefill of a generation is untouched.
    decode: bool = False
    #: For ``acts_on == "output"`` and ``"node"``: how the stage's output (or the node's values) changes.
    perturb: Perturb | None = field(default=None, repr=False, compare=False)
    #: For ``acts_on == "node"``: the llama.cpp graph node (base name and op) it rewrites.
    node: tuple[str, str] | None = None

    @property
    def per_layer(self) -> bool:
        return not stage_table.BY_NAME[self.stage].whole_model


@dataclass(frozen=True)
class FaultSpec:
    """A fault and where it is applied (``layer`` None for whole-model faults)."""

    fault: Fault
    layer: int | None

    @property
    def name(self) -> str:
        return self.fault.name

    def __str__(self) -> str:
        return self.fault.name if self.layer is None else f"{self.fault.name}@{self.layer}"


CATALOGUE: tuple[Fault, ...] = (
    Fault("embedding_scaled", "embedding",
          "embedding rows multiplied by sqrt(hidden_size), as Gemma does but these models do not",
          "output", perturb=scaled_by_sqrt_width),
    Fault("attn_norm_no_weight", "attn_norm",
          "the RMSNorm before attention forgets to multiply by its weight", "weights"),
    Fault("kv_weights_swapped", "qkv_matmul",
          "the k and v projection weights are loaded into each other's slot", "weights"),
    Fault("qkv_bias_dropped", "qkv_bias",
          "the q/k/v bias is never added", "output", requires="qkv_bias", perturb=skipped),
    Fault("rope_theta_wrong", "q_post_rope",
          "RoPE uses a base 10x smaller than config.rope_theta", "rope"),
    Fault("rope_interleaved", "q_post_rope",
          "RoPE rotates adjacent pairs (GPT-J style) instead of the two halves (NeoX style)", "rope"),
    Fault("gqa_head_mapping", "attn_scores",
          "query head h reads kv head h % KVH instead of h // (NH/KVH)", "attention"),
    Fault("score_scale_1_over_d", "attn_scores",
          "scores scaled by 1/D instead of 1/sqrt(D)", "attention"),
    Fault("mask_off_by_one", "attn_softmax",
          "the causal mask lets each query see one future key", "attention"),
    Fault("softmax_wrong_axis", "attn_softmax",
          "softmax normalises over queries instead of keys", "attention"),
    Fault("attn_residual_dropped", "post_attn_residual",
          "the attention block's output replaces the residual stream instead of adding to it",
          "output", perturb=skipped),
    Fault("ffn_norm_attn_weight", "ffn_norm",
          "the RMSNorm before the MLP uses the attention norm's weight", "weights"),
    Fault("swiglu_silu_on_up", "ffn_silu",
          "SiLU applied to the up projection instead of the gate", "mlp", requires="dense_ffn"),
    Fault("ffn_residual_dropped", "post_ffn_residual",
          "the MLP output replaces the residual stream instead of adding to it", "output", perturb=skipped),
    Fault("final_norm_skipped", "final_norm",
          "the final RMSNorm is skipped before lm_head", "output", perturb=skipped),
    # Families beyond Llama/Qwen2: at least one fault per stage they add.
    Fault("norm_weight_no_offset", "attn_norm",
          "RMSNorm multiplies by w instead of Gemma's (1 + w)", "weights", requires="norm_offset"),
    Fault("q_norm_no_weight", "q_norm",
          "the per-head query RMSNorm forgets its weight", "weights", requires="qk_norm"),
    Fault("k_norm_q_weight", "k_norm",
          "the per-head key RMSNorm uses the query norm's weight", "weights", requires="qk_norm"),
    Fault("sliding_window_ignored", "attn_softmax",
          "a sliding-window layer attends to every earlier key (needs more tokens than the window)",
          "window", requires="sliding_window"),
    Fault("post_attn_norm_skipped", "post_attn_norm",
          "the sandwich norm after attention is skipped", "output", requires="sandwich_norm",
          perturb=skipped),
    Fault("gelu_exact", "ffn_silu",
          "GeGLU uses exact (erf) GELU instead of the tanh approximation", "mlp", requires="gelu_tanh"),
    Fault("post_ffn_norm_skipped", "post_ffn_norm",
          "the sandwich norm after the MLP is skipped", "output", requires="sandwich_norm", perturb=skipped),
    Fault("router_unnormed_input", "router_logits",
          "the MoE router reads the residual stream instead of the normed hidden state", "moe",
          requires="moe"),
    Fault("moe_topk_smallest", "moe_experts",
          "top-k picks the least likely experts (ascending sort)", "moe", requires="moe"),
    Fault("moe_weights_not_renormalised", "moe_weights",
          "the chosen experts' weights are not renormalised to sum to 1", "moe", requires="norm_topk_prob"),
    Fault("moe_weights_unapplied", "moe_out",
          "expert outputs are summed without their routing weights", "moe", requires="moe"),
    # Granite's four scalings, each dropped where it acts.
    Fault("embedding_multiplier_dropped", "embedding",
          "the embedding rows are not multiplied by embedding_multiplier", "output",
          requires="embedding_multiplier", perturb=skipped),
    Fault("residual_multiplier_dropped", "post_attn_residual",
          "a layer adds its attention and MLP branches without residual_multiplier", "residual",
          requires="residual_multiplier"),
    Fault("attention_multiplier_ignored", "attn_scores",
          "scores scaled by 1/sqrt(D) instead of attention_multiplier", "attention",
          requires="attention_multiplier"),
    Fault("logits_scaling_dropped", "lm_head",
          "the logits are not divided by logits_scaling", "output", requires="logits_scaling",
          perturb=skipped),
    # Phi-3's fused checkpoint tensors, split on load with the parts in each other's place.
    Fault("fused_qkv_split_swapped", "qkv_matmul",
          "q and k taken from each other's rows of the fused qkv_proj (as many kv heads as q heads)",
          "weights", requires="fused_qkv"),
    Fault("fused_gate_up_split_swapped", "ffn_gate",
          "gate and up taken from each other's half of the fused gate_up_proj", "weights",
          requires="fused_gate_up"),
    # Decode only: the three classic cache bugs.
    Fault("rope_position_ignores_cache", "q_post_rope",
          "at decode, RoPE rotates the new token as if at position 0 (ignores the cache offset)",
          "rope", decode=True),
    Fault("stale_cache_entry", "attn_scores",
          "at decode, the new key/value is never written: the newest slot holds a stale copy "
          "of the previous position's entry", "cache", decode=True),
    Fault("mask_off_by_one_decode", "attn_softmax",
          "at decode, the mask hides the newest key from its own query", "attention", decode=True),
    # Inside llama.cpp's graph: a node's values changed in the evaluation callback, before
    # llama.cpp computes the nodes that read it, so the change propagates like a real bug
    # (k_rope_head_zeroed even reaches the KV cache).
    Fault("attn_norm_scaled", "attn_norm", "the attention RMSNorm output multiplied by 1.5", "node",
          runner="llama.cpp", perturb=scaled_by_1_5, node=("attn_norm", "MUL")),
    Fault("k_rope_head_zeroed", "k_post_rope",
          "key head 0 after RoPE set to zero before it enters the KV cache", "node",
          runner="llama.cpp", perturb=key_head_0_zeroed, node=("Kcur", "ROPE")),
    Fault("ffn_up_scaled", "ffn_up", "the MLP up projection multiplied by 1.5", "node",
          runner="llama.cpp", perturb=scaled_by_1_5, node=("ffn_up", "MUL_MAT")),
    # Systematic errors smaller than a quantized engine's rounding noise (docs/compare.md,
    # "Systematic deviations"): the per-position relative error they add is at most 5%.
    Fault("attention_scaled_5pct", "attention",
          "the attention output (heads concatenated, before the output projection) multiplied by 1.05",
          "node", runner="llama.cpp", perturb=scaled_by_1_05, node=("kqv_out", "CONT")),
    Fault("residual_shifted_1pct", "post_ffn_residual",
          "every value of the layer's output (the residual stream) shifted by one constant, 1% of its RMS",
          "node", runner="llama.cpp", perturb=shifted_by_1pct_of_rms, node=("l_out", "ADD")),
    Fault("q_heads_swapped", "q_post_rope", "query heads 0 and 1 exchanged after RoPE", "node",
          runner="llama.cpp", perturb=heads_0_1_swapped, node=("Qcur", "ROPE")),
    # Nodes of some graphs only (the runner refuses them on a graph without the node).
    Fault("post_attn_norm_scaled", "post_attn_norm",
          "Gemma's post-attention (sandwich) RMSNorm output multiplied by 1.5", "node",
          runner="llama.cpp", perturb=scaled_by_1_5, node=("attn_post_norm", "MUL")),
    Fault("q_norm_scaled", "q_norm",
          "the per-head query RMSNorm output multiplied by 1.5 (Gemma 3, Qwen3)", "node",
          runner="llama.cpp", perturb=scaled_by_1_5, node=("Qcur_normed", "MUL")),
)

BY_NAME: dict[str, Fault] = {f.name: f for f in CATALOGUE}


def for_runner(runner: str) -> dict[str, Fault]:
    """The faults planted in ``runner``, by name, in catalogue order."""
    return {f.name: f for f in CATALOGUE if f.runner == runner}


#: pv's engine, prefill and decode alike.
FAULTS: dict[str, Fault] = {n: f for n, f in for_runner("pv").items() if not f.decode}
#: pv's engine, decode steps only.
DECODE_FAULTS: dict[str, Fault] = {n: f for n, f in for_runner("pv").items() if f.decode}
#: Inside llama.cpp's graph.
LLAMA_FAULTS: dict[str, Fault] = for_runner("llama.cpp")
#: Faults that change the attention arithmetic itself (head mapping, scale, mask, softmax axis)
#: of any model (a family's own scale, e.g. Granite's, needs that family).
ATTENTION_FAULTS = frozenset(n for n, f in FAULTS.items() if f.acts_on == "attention" and f.requires is None)


def parse_fault(text: str, runner: str = "pv") -> FaultSpec:
    """``name`` or ``name@LAYER`` of a fault planted in ``runner``; names are trimmed and case-insensitive."""
    raw = text.strip()
    name, sep, layer_text = raw.partition("@")
    known = for_runner(runner)
    fault = known.get(name.strip().lower())
    if fault is None:
        raise PvError(f"unknown {_NOUN.get(runner, runner + ' fault')} '{name.strip()}'; "
                      f"valid faults: {', '.join(known)}")
    if not fault.per_layer:
        if sep:
            raise PvError(f"fault {fault.name} hits the whole model and takes no @LAYER")
        return FaultSpec(fault, None)
    if not sep:
        return FaultSpec(fault, DEFAULT_LAYER)
    return FaultSpec(fault, fault_layer(layer_text, raw, fault.name))


def fault_layer(layer_text: str, raw: str, name: str | None = None) -> int:
    """The layer after ``@`` in a fault spec: a whole number from 0."""
    try:
        layer = int(layer_text.strip())
        if layer < 0:
            raise ValueError
    except ValueError:
        example = f", e.g. {name}@1" if name else ""
        raise PvError(f"bad fault layer '{layer_text}' in '{raw}'; use NAME@LAYER{example}") from None
    return layer


def check_fault(spec: FaultSpec, n_layers: int, features: dict[str, bool]) -> None:
    """Refuse a fault the model cannot express (layer out of range, missing feature)."""
    if spec.layer is not None and spec.layer >= n_layers:
        raise PvError(
            f"fault {spec}: layer {spec.layer} out of range: the model has {n_layers} layers "
            f"(0..{n_layers - 1})"
        )
    if spec.fault.requires and not features.get(spec.fault.requires, False):
        raise PvError(f"fault {spec.fault.name} needs a model with {spec.fault.requires}; this one has none")


def is_decode_fault(spec: FaultSpec | None) -> bool:
    """Whether ``spec`` acts only at decode steps (a capture needs ``--generate 2`` or more to see it)."""
    return spec is not None and spec.fault.decode
