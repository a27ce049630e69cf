"""How each layer of pv's engine computes, and where a planted fault changes that.

The forward (``runner.py``) is one straight line of steps. What may differ from
layer to layer is data in a ``LayerSpec``, built once from the model: the
weights, which RoPE frequencies and which rotation, the attention's head
mapping, scale, window, mask and softmax axis (``Heads``), the MLP's
activation and which branch it gates, the MoE routing, and whether a decode
step's keys and values reach the cache. A fault of the catalogue
(``pv.capture.faults``) is planted by changing that data for the layer it hits
(``PLANTS``), or, when it changes a stage's output, by the catalogue's own
``perturb`` at that stage's capture point (``Points``). The forward therefore
has no branch on a fault's name, and a new fault is a catalogue row plus, where
it acts inside a step, one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pv.capture.engine import blocks
from pv.capture.engine.blocks import Routing
from pv.capture.engine.weights import LayerWeights, Loader
from pv.capture.faults import FaultSpec, Perturb
from pv.capture.model.config import ModelConfig
from pv.capture.tap import Tap
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch")

Rotation = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def gate_first(gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SwiGLU/GeGLU: the activation goes on the gate, the product takes the up projection."""
    return gate, up


def up_first(gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``swiglu_silu_on_up`` bug: the activation on the up projection."""
    return up, gate


@dataclass(frozen=True)
class Step:
    """How one kind of step (a prefill, or a decode step over a cache) masks a layer's attention."""

    #: Key k is visible to the query at position p when k <= p + offset (and inside the window).
    offset: int = 0
    #: The output comes from the explicit path, whose matrices are then the ones used
    #: (a planted fault changed the arithmetic), not from SDPA.
    explicit: bool = False


@dataclass(frozen=True)
class Heads:
    """One layer's attention arithmetic: which kv head each query head reads, scale, window, axis."""

    kv_of: Any  # [NH] long: query head h reads kv head kv_of[h]
    scale: float
    window: int | None = None
    #: The softmax axis (-1: over keys).
    axis: int = -1
    prefill: Step = Step()
    decode: Step = Step()


@dataclass(frozen=True)
class LayerSpec:
    """What layer ``index`` computes with: its weights and every choice a fault may change."""

    index: int
    weights: LayerWeights
    heads: Heads
    act: Callable[[torch.Tensor], torch.Tensor]
    #: Which RoPE frequencies: ("global" or "local", divisor of the configured base).
    rope: tuple[str, float] = ("global", 1.0)
    #: At a decode step, rotate as if the step started at position 0 (the cache offset forgotten).
    rope_from_step: bool = False
    rotate: Rotation = blocks.rotate_halves
    #: (gate, up) -> (the activation's input, the product's other factor).
    gated: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = gate_first
    routing: Routing = field(default_factory=Routing)
    #: A decode step's new keys and values reach the cache (False: the write is lost).
    cache_writes: bool = True
    #: Each residual branch is multiplied by this before it is added (Granite; 1.0 elsewhere).
    residual_scale: float = 1.0


def build(loader: Loader, layers: list[LayerWeights]) -> list[LayerSpec]:
    """Every layer as the model defines it."""
    cfg, device = loader.config, loader.device
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    kv_of = torch.arange(cfg.num_attention_heads, device=device) // group
    act = blocks.activation(cfg.hidden_act)
    return [
        LayerSpec(
            index=i, weights=w, act=act,
            heads=Heads(kv_of=kv_of, scale=cfg.attention_scale, window=cfg.layer_window(i)),
            rope=("local" if cfg.layer_theta(i) != cfg.rope_theta else "global", 1.0),
            residual_scale=cfg.residual_multiplier,
        )
        for i, w in enumerate(layers)
    ]


class Points:
    """The capture points of one forward: each step's output, changed where a planted fault acts on
    it, goes to the tap and on through the forward."""

    def __init__(self, tap: Tap, outputs: dict[tuple[str, int | None], Perturb]) -> None:
        self.tap = tap
        self.outputs = outputs
        self.wants = tap.wants

    def __call__(self, stage: str, layer: int | None, out: torch.Tensor, inp: torch.Tensor | None = None,
                 **meta: Any) -> torch.Tensor:
        """``out``, the output of the step that makes ``stage`` from ``inp``, after any planted change."""
        change = self.outputs.get((stage, layer))
        if change is not None:
            out = change(out, inp)
        self.tap(stage, layer, out, **meta)
        return out


def _explicit(**changes: Any) -> Callable[[LayerSpec, Loader], LayerSpec]:
    """A fault in the attention arithmetic: the layer's ``Heads`` changed, computed on the explicit path."""
    return lambda spec, loader: replace(spec, heads=replace(spec.heads, **changes))


def _weights(**roles: str | None) -> Callable[[LayerSpec, Loader], LayerSpec]:
    """Weight slots filled from another slot (a role name) or left empty (None: no weight)."""
    def plant(spec: LayerSpec, loader: Loader) -> LayerSpec:
        w = spec.weights
        changed = {slot: None if src is None else getattr(w, src) for slot, src in roles.items()}
        return replace(spec, weights=replace(w, **changed))
    return plant


def _window_ignored(spec: LayerSpec, loader: Loader) -> LayerSpec:
    if spec.heads.window is None:
        raise PvError(f"fault sliding_window_ignored@{spec.index}: layer {spec.index} has no sliding window")
    return replace(spec, heads=replace(spec.heads, window=None))


def _gqa_interleaved(spec: LayerSpec, loader: Loader) -> LayerSpec:
    cfg = loader.config
    kv_of = torch.arange(cfg.num_attention_heads, device=loader.device) % cfg.num_key_value_heads
    return replace(spec, heads=replace(spec.heads, kv_of=kv_of, prefill=Step(explicit=True),
                                       decode=Step(explicit=True)))


def _fused_qk_swapped(spec: LayerSpec, loader: Loader) -> LayerSpec:
    cfg = loader.config
    if cfg.num_attention_heads != cfg.num_key_value_heads:
        raise PvError(f"fault fused_qkv_split_swapped@{spec.index}: q and k take rows of different "
                      f"sizes here ({cfg.num_attention_heads} and {cfg.num_key_value_heads} heads)")
    return replace(spec, weights=loader.layer(spec.index, qkv=("k", "q", "v")))


_BOTH = {"prefill": Step(explicit=True), "decode": Step(explicit=True)}

#: How pv's engine plants each catalogued fault that acts inside a step (the rest
#: change a stage's output: ``Fault.perturb``). The layer's spec in, the changed spec out.
PLANTS: dict[str, Callable[[LayerSpec, Loader], LayerSpec]] = {
    "attn_norm_no_weight": _weights(attn_norm=None),
    "kv_weights_swapped": lambda s, ld: replace(s, weights=ld.layer(s.index, qkv=("q", "v", "k"))),
    "ffn_norm_attn_weight": _weights(ffn_norm="attn_norm"),
    "norm_weight_no_offset": lambda s, ld: replace(s, weights=ld.layer(s.index, norm_shift=0.0)),
    "q_norm_no_weight": _weights(q_norm=None),
    "k_norm_q_weight": _weights(k_norm="q_norm"),
    "rope_theta_wrong": lambda s, ld: replace(s, rope=(s.rope[0], 10.0)),
    "rope_interleaved": lambda s, ld: replace(s, rotate=blocks.rotate_pairs),
    "rope_position_ignores_cache": lambda s, ld: replace(s, rope_from_step=True),
    "gqa_head_mapping": _gqa_interleaved,
    "score_scale_1_over_d": lambda s, ld: _explicit(scale=1.0 / ld.config.head_dim, **_BOTH)(s, ld),
    "mask_off_by_one": _explicit(prefill=Step(offset=1, explicit=True)),
    "softmax_wrong_axis": _explicit(axis=-2, **_BOTH),
    "mask_off_by_one_decode": _explicit(decode=Step(offset=-1, explicit=True)),
    "sliding_window_ignored": _window_ignored,
    "stale_cache_entry": lambda s, ld: replace(s, cache_writes=False),
    "swiglu_silu_on_up": lambda s, ld: replace(s, gated=up_first),
    "gelu_exact": lambda s, ld: replace(s, act=blocks.activation(ld.config.hidden_act, exact_gelu=True)),
    "router_unnormed_input": lambda s, ld: replace(s, routing=replace(s.routing, reads_residual=True)),
    "moe_topk_smallest": lambda s, ld: replace(s, routing=replace(s.routing, largest=False)),
    "moe_weights_not_renormalised": lambda s, ld: replace(s, routing=replace(s.routing, renormalise=False)),
    "moe_weights_unapplied": lambda s, ld: replace(s, routing=replace(s.routing, weighted=False)),
    "residual_multiplier_dropped": lambda s, ld: replace(s, residual_scale=1.0),
    "attention_multiplier_ignored": lambda s, ld: _explicit(scale=ld.config.head_dim ** -0.5, **_BOTH)(s, ld),
    "fused_qkv_split_swapped": _fused_qk_swapped,
    "fused_gate_up_split_swapped": lambda s, ld: replace(s, weights=ld.layer(s.index, gate_up=("up", "gate"))),
}


def plant(spec: FaultSpec, layers: list[LayerSpec], loader: Loader,
          outputs: dict[tuple[str, int | None], Perturb]) -> None:
    """Plant ``spec`` where its fault acts: a stage's output (``outputs``) or its layer's spec."""
    fault = spec.fault
    if fault.perturb is not None:
        outputs[(fault.stage, 0 if fault.stage == "embedding" else spec.layer)] = fault.perturb
        return
    if spec.layer is None or fault.name not in PLANTS:  # the catalogue and PLANTS are tested to agree
        raise PvError(f"fault {spec}: pv's engine has no way to plant it")
    layers[spec.layer] = PLANTS[fault.name](layers[spec.layer], loader)


def frequency_sets(config: ModelConfig, layers: list[LayerSpec]) -> dict[tuple[str, float], tuple[float, bool]]:
    """(set, divisor) -> (RoPE base, global) for the frequency sets the layers use."""
    out: dict[tuple[str, float], tuple[float, bool]] = {}
    for spec in layers:
        name, divisor = spec.rope
        base = config.rope_local_theta if name == "local" else config.rope_theta
        assert base is not None  # a "local" set exists only where the config has its base
        out[spec.rope] = (base if divisor == 1.0 else base / divisor, name == "global")
    return out
