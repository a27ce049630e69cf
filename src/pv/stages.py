"""The one table of capture stages.

Engine, oracle, APRT reader, diff and bisect all read this table: adding a stage
means adding one ``Stage`` row here (and the code that computes it). Order is
computation order; ``embedding`` comes first, then the per-layer stages, then
the whole-model ``final_norm`` and ``lm_head``.

Layouts are row-major float32 with named dimensions:
S tokens, H hidden, NH query heads, KVH key/value heads, D head dim,
I intermediate, V vocab, E experts, K experts chosen per token.
``QKV`` is ``NH*D + 2*KVH*D`` (each row q|k|v).

Not every family has every stage: ``requires`` names the model feature that
makes a stage exist (``qkv_bias``, ``qk_norm``, ``sandwich_norm``,
``dense_ffn``, ``moe``; see ``pv.capture.model.arch``). A capture marks the stages a
model lacks as not applicable instead of failing. The attention matrices carry
``mask="causal"``; a sliding-window layer's files add its window in the
manifest (``mask: "sliding_window:W"``), which ``pv diff`` applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pv.errors import PvError

#: Layer index written in APRT headers for whole-model stages after the last layer.
MODEL_LAYER = 0xFFFFFFFF


@dataclass(frozen=True)
class Stage:
    name: str
    #: "layer" (one tensor per decoder layer) or "model" (one per forward).
    scope: str
    #: Dimension names, e.g. ("S", "H"); sizes come from ``Dims``.
    layout: tuple[str, ...]
    #: "causal" when only key position <= query position is meaningful.
    mask: str = "none"
    #: Which condition on the model makes the stage exist ("qkv_bias" or None).
    requires: str | None = None
    doc: str = ""

    @property
    def order(self) -> int:
        return ORDER[self.name]

    @property
    def whole_model(self) -> bool:
        return self.scope == "model"

    def shape(self, dims: Dims) -> tuple[int, ...]:
        return tuple(dims.size(d) for d in self.layout)

    def header_layer(self, layer: int | None) -> int:
        """The layer number an APRT header carries for this stage."""
        if self.name == "embedding":
            return 0
        if self.whole_model:
            return MODEL_LAYER
        if layer is None:
            raise ValueError(f"stage {self.name} needs a layer index")
        return layer


STAGES: tuple[Stage, ...] = (
    Stage("embedding", "model", ("S", "H"), doc="token embedding rows"),
    Stage("attn_norm", "layer", ("S", "H"), doc="RMSNorm before attention"),
    Stage("qkv_matmul", "layer", ("S", "QKV"), doc="x @ [Wq|Wk|Wv]^T, before any bias"),
    Stage("qkv_bias", "layer", ("S", "QKV"), requires="qkv_bias", doc="qkv_matmul + bias"),
    Stage("q_norm", "layer", ("S", "NH", "D"), requires="qk_norm",
          doc="per-head RMSNorm of the queries, before RoPE"),
    Stage("k_norm", "layer", ("S", "KVH", "D"), requires="qk_norm",
          doc="per-head RMSNorm of the keys, before RoPE"),
    Stage("q_post_rope", "layer", ("S", "NH", "D"), doc="queries after RoPE"),
    Stage("k_post_rope", "layer", ("S", "KVH", "D"), doc="keys after RoPE, not repeated for GQA"),
    Stage("attn_scores", "layer", ("NH", "S", "S"), mask="causal",
          doc="q.k^T * scale, before the causal mask"),
    Stage("attn_softmax", "layer", ("NH", "S", "S"), mask="causal",
          doc="softmax over keys after the causal mask"),
    Stage("attention", "layer", ("S", "NHD"), doc="softmax @ v, heads concatenated"),
    Stage("attn_out", "layer", ("S", "H"), doc="o_proj(attention)"),
    Stage("post_attn_norm", "layer", ("S", "H"), requires="sandwich_norm",
          doc="RMSNorm of attn_out before the residual add (sandwich norm)"),
    Stage("post_attn_residual", "layer", ("S", "H"), doc="residual + attn_out (or + post_attn_norm)"),
    Stage("ffn_norm", "layer", ("S", "H"), doc="RMSNorm before the MLP"),
    Stage("ffn_gate", "layer", ("S", "I"), requires="dense_ffn", doc="x @ W_gate^T"),
    Stage("ffn_up", "layer", ("S", "I"), requires="dense_ffn", doc="x @ W_up^T"),
    Stage("ffn_silu", "layer", ("S", "I"), requires="dense_ffn",
          doc="act(ffn_gate): SiLU, or tanh-GELU for GeGLU families"),
    Stage("ffn_swiglu", "layer", ("S", "I"), requires="dense_ffn", doc="ffn_silu * ffn_up"),
    Stage("ffn_out", "layer", ("S", "H"), requires="dense_ffn", doc="down_proj(ffn_swiglu)"),
    Stage("router_logits", "layer", ("S", "E"), requires="moe", doc="x @ W_router^T, one logit per expert"),
    Stage("moe_experts", "layer", ("S", "K"), requires="moe",
          doc="indices of the chosen experts (as float32), best first"),
    Stage("moe_weights", "layer", ("S", "K"), requires="moe",
          doc="routing weights of the chosen experts (softmax, top-k, renormalised if the family does)"),
    Stage("moe_out", "layer", ("S", "H"), requires="moe", doc="sum over chosen experts of weight * expert(x)"),
    Stage("post_ffn_norm", "layer", ("S", "H"), requires="sandwich_norm",
          doc="RMSNorm of the MLP output before the residual add (sandwich norm)"),
    Stage("post_ffn_residual", "layer", ("S", "H"), doc="layer output: residual + MLP output"),
    Stage("final_norm", "model", ("S", "H"), doc="RMSNorm after the last layer"),
    Stage("lm_head", "model", ("S", "V"), doc="logits"),
)

ORDER: dict[str, int] = {s.name: i for i, s in enumerate(STAGES)}
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
ALIASES: dict[str, str] = {"layer_output": "post_ffn_residual", "ffn_swigl": "ffn_swiglu"}
LAYER_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.scope == "layer")
MODEL_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.scope == "model")


@dataclass(frozen=True)
class Dims:
    """Sizes of the named dimensions for one model and one token count."""

    S: int
    H: int
    NH: int
    KVH: int
    D: int
    I: int
    V: int
    E: int = 0
    K: int = 0

    def size(self, name: str) -> int:
        if name == "QKV":
            return (self.NH + 2 * self.KVH) * self.D
        if name == "NHD":
            return self.NH * self.D
        return int(getattr(self, name))


def valid_names() -> str:
    names = [s.name for s in STAGES] + sorted(ALIASES) + ["all"]
    return ", ".join(names)


def get(name: str) -> Stage:
    """Look a stage up by name or alias, trimmed and case-insensitively."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    try:
        return BY_NAME[key]
    except KeyError:
        raise PvError(f"unknown stage '{name.strip()}'; valid names: {valid_names()}") from None


def parse_stages(spec: str | Iterable[str]) -> tuple[Stage, ...]:
    """Parse ``"attn_scores, ATTN_SOFTMAX"`` or ``"all"`` into stages in computation order.

    An empty item (``a,,b``) or an unknown name is an error listing the valid names.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for raw in items:
        item = raw.strip().lower()
        if not item:
            raise PvError(f"empty stage name in '{spec}'; valid names: {valid_names()}")
        if item == "all":
            chosen.update(BY_NAME)
            continue
        chosen.add(get(item).name)
    return tuple(s for s in STAGES if s.name in chosen)


def parse_layers(spec: str, n_layers: int | None = None) -> tuple[int, ...] | None:
    """Parse ``0``, ``0,3,5``, ``2..6`` (end exclusive) or ``all``.

    Returns ``None`` for ``all`` when ``n_layers`` is unknown. With ``n_layers``
    known, out-of-range layers are an error, raised before any forward work.
    """
    text = spec.strip().lower()
    if text == "all":
        return None if n_layers is None else tuple(range(n_layers))
    layers: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise PvError(f"empty layer item in '{spec}'; use 0 | 0,3,5 | 2..6 | all")
        try:
            if ".." in item:
                lo_s, hi_s = item.split("..", 1)
                lo, hi = int(lo_s), int(hi_s)
                if lo < 0 or hi <= lo:
                    raise ValueError
                layers.update(range(lo, hi))
            else:
                value = int(item)
                if value < 0:
                    raise ValueError
                layers.add(value)
        except ValueError:
            raise PvError(
                f"bad layer spec '{item}' in '{spec}'; use 0 | 0,3,5 | 2..6 (end exclusive) | all"
            ) from None
    result = tuple(sorted(layers))
    if n_layers is not None:
        bad = [x for x in result if x >= n_layers]
        if bad:
            raise PvError(
                f"layer {bad[0]} out of range: the model has {n_layers} layers (0..{n_layers - 1})"
            )
    return result


def sort_key(stage: str, layer: int | None) -> tuple[int, int, int]:
    """Computation order of (stage, layer): embedding, layer 0 stages, layer 1, ..., final."""
    st = get(stage)
    if st.name == "embedding":
        return (0, 0, 0)
    if st.whole_model:
        return (2, 0, st.order)
    return (1, layer or 0, st.order)


#: What a model has when its features do not say: a dense MLP, nothing optional else.
DEFAULT_FEATURES: dict[str, bool] = {"dense_ffn": True}

#: How a missing feature reads in "not applicable" notes.
_FEATURE_WORDS = {"qkv_bias": "q/k/v bias", "qk_norm": "per-head q/k norms", "sandwich_norm": "sandwich norms",
                  "moe": "MoE block", "dense_ffn": "dense MLP (its MLP is a MoE block)"}


def absent(features: Mapping[str, bool]) -> list[tuple[str, str]]:
    """(stage, reason) for every stage a model with ``features`` does not have, in order."""
    return [(st.name, f"the model has no {_FEATURE_WORDS.get(st.requires, st.requires)}")
            for st in STAGES if st.requires and not applies(st, features)]


def applies(stage: Stage, features: Mapping[str, bool]) -> bool:
    """Whether a stage exists for a model with the given features (e.g. qkv_bias)."""
    if stage.requires is None:
        return True
    return bool(features.get(stage.requires, DEFAULT_FEATURES.get(stage.requires, False)))
