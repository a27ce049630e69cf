"""A catalogue of realistic porting bugs the engine can inject, to prove the instruments.

Each fault is a mistake people make when porting a decoder forward pass:
a forgotten norm weight, swapped projections, a wrong RoPE base, a GQA head
mapping that interleaves instead of groups, 1/D instead of 1/sqrt(D), a mask
that lets a query see one future key, softmax over the wrong axis, SiLU on the
wrong SwiGLU branch, a dropped residual. Each declares ``stage``: the first
stage, in computation order, whose tensor differs from a clean run (comparing
only the causal part of the attention matrices). Every stage before it, in its
layer and in earlier layers, stays byte-identical; a test pins both facts, and
``pv bisect`` must name exactly that stage and layer.

Per-layer faults hit one layer (``name@LAYER``, default layer 1); whole-model
faults (embedding, final norm) take no layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pv import stages as stage_table
from pv.errors import PvError

#: The layer a per-layer fault hits when ``@LAYER`` is not given.
DEFAULT_LAYER = 1


@dataclass(frozen=True)
class Fault:
    name: str
    #: The first stage whose values differ from a clean run.
    stage: str
    description: str
    #: Model feature the fault needs (``"qkv_bias"``), or None.
    requires: str | None = None

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


_CATALOGUE = (
    Fault("embedding_scaled", "embedding",
          "embedding rows multiplied by sqrt(hidden_size), as Gemma does but these models do not"),
    Fault("attn_norm_no_weight", "attn_norm",
          "the RMSNorm before attention forgets to multiply by its weight"),
    Fault("kv_weights_swapped", "qkv_matmul",
          "the k and v projection weights are loaded into each other's slot"),
    Fault("qkv_bias_dropped", "qkv_bias",
          "the q/k/v bias is never added", requires="qkv_bias"),
    Fault("rope_theta_wrong", "q_post_rope",
          "RoPE uses a base 10x smaller than config.rope_theta"),
    Fault("rope_interleaved", "q_post_rope",
          "RoPE rotates adjacent pairs (GPT-J style) instead of the two halves (NeoX style)"),
    Fault("gqa_head_mapping", "attn_scores",
          "query head h reads kv head h % KVH instead of h // (NH/KVH)"),
    Fault("score_scale_1_over_d", "attn_scores",
          "scores scaled by 1/D instead of 1/sqrt(D)"),
    Fault("mask_off_by_one", "attn_softmax",
          "the causal mask lets each query see one future key"),
    Fault("softmax_wrong_axis", "attn_softmax",
          "softmax normalises over queries instead of keys"),
    Fault("attn_residual_dropped", "post_attn_residual",
          "the attention block's output replaces the residual stream instead of adding to it"),
    Fault("ffn_norm_attn_weight", "ffn_norm",
          "the RMSNorm before the MLP uses the attention norm's weight"),
    Fault("swiglu_silu_on_up", "ffn_silu",
          "SiLU applied to the up projection instead of the gate", requires="dense_ffn"),
    Fault("ffn_residual_dropped", "post_ffn_residual",
          "the MLP output replaces the residual stream instead of adding to it"),
    Fault("final_norm_skipped", "final_norm",
          "the final RMSNorm is skipped before lm_head"),
    # Families beyond Llama/Qwen2: at least one fault per stage they add.
    Fault("norm_weight_no_offset", "attn_norm",
          "RMSNorm multiplies by w instead of Gemma's (1 + w)", requires="norm_offset"),
    Fault("q_norm_no_weight", "q_norm",
          "the per-head query RMSNorm forgets its weight", requires="qk_norm"),
    Fault("k_norm_q_weight", "k_norm",
          "the per-head key RMSNorm uses the query norm's weight", requires="qk_norm"),
    Fault("sliding_window_ignored", "attn_softmax",
          "a sliding-window layer attends to every earlier key (needs more tokens than the window)",
          requires="sliding_window"),
    Fault("post_attn_norm_skipped", "post_attn_norm",
          "the sandwich norm after attention is skipped", requires="sandwich_norm"),
    Fault("gelu_exact", "ffn_silu",
          "GeGLU uses exact (erf) GELU instead of the tanh approximation", requires="gelu_tanh"),
    Fault("post_ffn_norm_skipped", "post_ffn_norm",
          "the sandwich norm after the MLP is skipped", requires="sandwich_norm"),
    Fault("router_unnormed_input", "router_logits",
          "the MoE router reads the residual stream instead of the normed hidden state", requires="moe"),
    Fault("moe_topk_smallest", "moe_experts",
          "top-k picks the least likely experts (ascending sort)", requires="moe"),
    Fault("moe_weights_not_renormalised", "moe_weights",
          "the chosen experts' weights are not renormalised to sum to 1", requires="norm_topk_prob"),
    Fault("moe_weights_unapplied", "moe_out",
          "expert outputs are summed without their routing weights", requires="moe"),
)

FAULTS: dict[str, Fault] = {f.name: f for f in _CATALOGUE}

#: Faults that change the attention arithmetic itself; the engine runs its
#: explicit (materialised scores) attention path in the layer they hit.
ATTENTION_FAULTS = frozenset({"gqa_head_mapping", "score_scale_1_over_d", "mask_off_by_one",
                              "softmax_wrong_axis"})


def valid_faults() -> str:
    return ", ".join(FAULTS)


def parse_fault(text: str) -> FaultSpec:
    """``name`` or ``name@LAYER``; names are trimmed and case-insensitive."""
    raw = text.strip()
    name, sep, layer_text = raw.partition("@")
    key = name.strip().lower()
    fault = FAULTS.get(key)
    if fault is None:
        raise PvError(f"unknown fault '{name.strip()}'; valid faults: {valid_faults()}")
    if not fault.per_layer:
        if sep:
            raise PvError(f"fault {fault.name} hits the whole model and takes no @LAYER")
        return FaultSpec(fault, None)
    if not sep:
        return FaultSpec(fault, DEFAULT_LAYER)
    return FaultSpec(fault, fault_layer(layer_text, raw, fault.name))


def fault_layer(layer_text: str, raw: str, name: str | None = None) -> int:
    """The layer after ``@`` in a fault spec: a whole number from 0 (every catalogue parses it so)."""
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
