"""How the oracle sees transformers compute: forward hooks and a registered attention function.

Every stage but the attention internals comes from forward hooks on the
family's modules (outputs, and inputs where a stage is one: ``embedding`` is the
input of the first layer's norm, ``post_attn_residual`` the input of the pre-MLP
norm, ``ffn_swiglu`` the input of ``down_proj``; ``lm_head`` is the model's own
output, the logits it returns).
The attention internals come from ``capturing_attention``, registered under
``ATTN_IMPLEMENTATION`` with ``transformers.AttentionInterface`` (and the eager
causal mask under the same name with ``AttentionMaskInterface``) and chosen
with ``attn_implementation``: it calls the family's own
``eager_attention_forward`` for the values the model uses and reports its
arguments and results to the active ``Capture``. No transformers module or
method is replaced. Which values are observed and which recomputed:
``provenance``, and ``docs/oracle.md``.

At long sequences (``pv.capture.tap.split_heads``) the eager function's
[B, NH, S, S] weights would not fit beside everything else; there the output
comes from torch's scaled dot-product attention with ``is_causal`` (the kernel
transformers' own ``sdpa`` implementation calls, which never materialises the
matrices) on a causal layer, and the scores and probabilities are recomputed
one head at a time from the oracle's own q and k with the eager formula and
handed over as parts (both ``recomputed``). A layer with a sliding window
computes its output from those same per-head probabilities (pv's eager
formula: scaled q·kᵀ plus transformers' mask, float32 softmax).
"""

from __future__ import annotations

import contextvars
import sys
from dataclasses import dataclass, field
from typing import Any

from pv.capture import causal
from pv.capture.model.config import ModelConfig
from pv.capture.tap import Part, Tap, parts
from pv.errors import PvError

#: The name under which pv's capturing attention is registered with transformers.
ATTN_IMPLEMENTATION = "pv_capture"

OBSERVED = "observed"
RECOMPUTED = "recomputed"

#: The capture that the attention function reports to; set only while the oracle captures.
ACTIVE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("pv_oracle_capture", default=None)


def provenance(config: ModelConfig) -> dict[str, str]:
    """Stage name -> ``observed`` or ``recomputed`` for the oracle on a model like ``config``."""
    from pv import stages

    out = {s.name: OBSERVED for s in stages.STAGES if stages.applies(s, config.features)}
    out["attn_scores"] = RECOMPUTED
    if config.attention_bias:
        out["qkv_matmul"] = RECOMPUTED
    return out


def capturing_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         scaling: float, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, Any]:
    """transformers' eager attention for this model family, with its inputs and outputs tapped.

    ``query`` is [B, NH, S, D] and ``key`` [B, KVH, S, D], both after RoPE; the
    returned weights are the post-mask, post-softmax probabilities that produced
    the returned output [B, S, NH, D].
    """
    capture = ACTIVE.get()
    groups = int(module.num_key_value_groups)
    split = parts(query.shape[1], query.shape[2], key.shape[2])
    if split is not None:
        if capture is not None:
            capture.qk(int(module.layer_idx), query, key)
        out = _long(module, query, key, value, attention_mask, scaling, groups, capture, split)
        if capture is not None:
            capture.output(int(module.layer_idx), out)
        return out, None
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = eager(module, query, key, value, attention_mask, scaling=scaling,
                         dropout=dropout, **kwargs)
    if capture is not None:
        capture.attention(int(module.layer_idx), query, key, scaling, weights, out, groups)
    return out, weights


def _long(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float, groups: int,
          capture: Capture | None, split: list[Part]) -> Any:
    """The attention of a long sequence, a block of one head's rows at a time (the module docstring)."""
    import torch

    layer = int(module.layer_idx)
    windowed = capture is not None and layer in capture.windows or bool(getattr(module, "sliding_window", None))
    want_scores = capture is not None and capture.wants("attn_scores", layer)
    want_probs = capture is not None and capture.wants("attn_softmax", layer)
    mask = attention_mask[0, 0] if attention_mask is not None else None
    q, k, v = query[0], key[0], value[0]
    out = torch.empty_like(q) if windowed else None
    n_keys = k.shape[1]
    # A causal layer's matrices beside SDPA's output: the keys each block sees only (pv.capture.causal).
    seeing = not windowed and mask is not None
    rest = not (capture is not None and causal.skips_masked(capture.tap))
    for part in split if (want_scores or want_probs or windowed) else ():
        h, rows = part.head, slice(part.lo, part.hi)
        seen = causal.visible(n_keys, q.shape[1], part.hi) if seeing else n_keys
        scores, left = causal.scores(q[h, rows], k[h // groups], scaling, seen, whole=want_scores or not seeing,
                                     rest=rest)
        weights = None
        if want_probs or windowed:
            weights = left if mask is None else left + mask[rows, :seen]
        # Each block is handed over last, as the tap's own (``own``): nothing here reads it afterwards.
        if want_scores and capture is not None and scores is not None:
            capture.emit("attn_scores", layer, scores[None], part=part, own=weights is not scores)
        del scores, left
        if weights is None:
            continue
        probs = torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        if seen < n_keys:
            probs = causal.spread(probs, n_keys)
        del weights
        if out is not None:
            out[h, rows] = torch.matmul(probs, v[h // groups])
        if want_probs and capture is not None:
            capture.emit("attn_softmax", layer, probs[None], part=part, how=RECOMPUTED, own=True)
    if out is None:  # causal from the first position: the square case is_causal means; else the layer's mask
        square = query.shape[2] == key.shape[2]
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=None if square or attention_mask is None else
            attention_mask[:, :, :, : key.shape[2]], is_causal=square and query.shape[2] > 1, scale=scaling,
            enable_gqa=groups > 1)[0]
    return out[None].transpose(1, 2).contiguous()


def register(transformers: Any) -> None:
    """Register pv's attention and its (eager, causal) mask under ``ATTN_IMPLEMENTATION``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, capturing_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


@dataclass
class Capture:
    """Routes hooked tensors to the tap in computation order, with their provenance."""

    tap: Tap
    prov: dict[str, str]
    has_bias: bool
    #: transformers applies q/k norms to [B, NH, S, D] (Gemma 3) or [B, S, NH, D] (Qwen3).
    heads_first: bool = False
    #: Sliding window per windowed layer, recorded with its attention matrices.
    windows: dict[int, int] = field(default_factory=dict)
    pending_silu: dict[int, Any] = field(default_factory=dict)
    qkv: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Set while ``pv.capture.oracle.logits.BlockedHead`` hands lm_head over in blocks.
    logits_in_blocks: bool = False

    def emit(self, stage: str, layer: int | None, tensor: Any, *, part: Part | None = None,
             how: str | None = None, own: bool = False) -> None:
        if not self.tap.wants(stage, layer):
            return
        how = how or self.prov[stage]
        meta: dict[str, Any] = {"provenance": how}
        if part is not None:
            meta["part"] = part
        if own:
            meta["own"] = True
        if stage in ("attn_scores", "attn_softmax") and layer in self.windows:
            meta["mask"] = f"sliding_window:{self.windows[layer]}"
        if how == RECOMPUTED:
            meta["recomputed"] = True
        self.tap(stage, layer, tensor, **meta)

    def wants(self, stage: str, layer: int | None) -> bool:
        return bool(self.tap.wants(stage, layer))

    def qk(self, layer: int, query: Any, key: Any) -> None:
        self.emit("q_post_rope", layer, query[0].transpose(0, 1))
        # With a cache, ``key`` holds every cached position: the stage is this step's keys.
        self.emit("k_post_rope", layer, key[0][:, -query.shape[2]:].transpose(0, 1))

    def attention(self, layer: int, query: Any, key: Any, scaling: float, weights: Any, out: Any,
                  groups: int) -> None:
        import torch

        self.qk(layer, query, key)
        if self.wants("attn_scores", layer):
            k_rep = key[0].repeat_interleave(groups, dim=0) if groups > 1 else key[0]
            self.emit("attn_scores", layer, torch.matmul(query[0], k_rep.transpose(1, 2)) * scaling)
        if weights is not None:
            self.emit("attn_softmax", layer, weights[0])
        elif self.wants("attn_softmax", layer):
            raise PvError("the attention function returned no weights to capture")
        self.output(layer, out)

    def output(self, layer: int, out: Any) -> None:
        """The attention's output [B, S, NH, D] as the ``attention`` stage [S, NH·D]."""
        self.emit("attention", layer, out[0].reshape(out.shape[1], -1))


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


def install(model: Any, config: ModelConfig, cap: Capture, handles: list[Any]) -> None:
    """Forward hooks on ``model``'s modules that hand their tensors to ``cap``; ``handles`` collects them."""
    import torch

    base = model.model

    def out_hook(stage: str, layer: int | None) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            cap.emit(stage, layer, _first(output)[0])
        return hook

    def add(module: Any, hook: Any) -> None:
        handles.append(module.register_forward_hook(hook))

    roles = {role: name.rsplit(".", 1)[0] for role, name in config.family.roles(False).items()}
    #: role -> the module that computes it together with others (Phi-3's qkv_proj, gate_up_proj)
    fused = {role: module for module, held in config.family.hf_fused.items() for role in held}

    def first_input(module: Any, args: Any, output: Any) -> None:
        cap.emit("embedding", 0, args[0][0])

    # The embedding is what enters the first layer: Gemma scales the rows inside its embedding
    # module, Granite after it (embedding_multiplier) in the model's own forward.
    add(base.layers[0].get_submodule(roles["attn_norm"]), first_input)
    for i, layer in enumerate(base.layers):
        attn, mlp = layer.self_attn, layer.mlp
        add(layer.get_submodule(roles["attn_norm"]), out_hook("attn_norm", i))

        def qkv_part(part: str, i: int = i, attn: Any = attn) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                slot = cap.qkv.setdefault(i, {})
                slot[part] = output[0]
                if part != "v":
                    return
                del cap.qkv[i]
                fused = torch.cat([slot["q"], slot["k"], slot["v"]], dim=-1)
                if not cap.has_bias:
                    cap.emit("qkv_matmul", i, fused)
                    return
                if cap.wants("qkv_matmul", i):
                    w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                    cap.emit("qkv_matmul", i, torch.nn.functional.linear(args[0][0], w))
                cap.emit("qkv_bias", i, fused)
            return hook

        def qkv_fused(module: Any, args: Any, output: Any, i: int = i) -> None:
            if cap.has_bias and cap.wants("qkv_matmul", i):
                cap.emit("qkv_matmul", i, torch.nn.functional.linear(args[0][0], module.weight))
            cap.emit("qkv_bias" if cap.has_bias else "qkv_matmul", i, output[0])

        if (cap.wants("qkv_matmul", i) or cap.wants("qkv_bias", i)) and "q" in fused:
            add(layer.get_submodule(fused["q"]), qkv_fused)  # q|k|v already one row (Phi-3)
        elif cap.wants("qkv_matmul", i) or cap.wants("qkv_bias", i):
            for part in "qkv":
                add(getattr(attn, f"{part}_proj"), qkv_part(part))

        def head_norm(stage: str, i: int = i) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                # [B, NH, S, D] (Gemma 3) or [B, S, NH, D] (Qwen3) -> [S, NH, D]
                cap.emit(stage, i, output[0].transpose(0, 1) if cap.heads_first else output[0])
            return hook

        if "q_norm" in roles:
            add(layer.get_submodule(roles["q_norm"]), head_norm("q_norm"))
            add(layer.get_submodule(roles["k_norm"]), head_norm("k_norm"))
        add(attn.o_proj, out_hook("attn_out", i))
        if "post_attn_norm" in roles:
            add(layer.get_submodule(roles["post_attn_norm"]), out_hook("post_attn_norm", i))

        def pre_ffn(module: Any, args: Any, output: Any, i: int = i) -> None:
            cap.emit("post_attn_residual", i, args[0][0])
            cap.emit("ffn_norm", i, output[0])

        add(layer.get_submodule(roles["ffn_norm"]), pre_ffn)
        if "router" in roles:
            _install_moe(cap, add, layer, i)
        else:
            _install_mlp(cap, add, mlp, i, getattr(mlp, config.family.hf_act_module),
                         layer.get_submodule(fused["gate"]) if "gate" in fused else None)
        if "post_ffn_norm" in roles:
            add(layer.get_submodule(roles["post_ffn_norm"]), out_hook("post_ffn_norm", i))
        add(layer, out_hook("post_ffn_residual", i))
    add(base.norm, out_hook("final_norm", None))

    def logits(module: Any, args: Any, output: Any) -> None:
        if not cap.logits_in_blocks:
            cap.emit("lm_head", None, output.logits[0])

    # The logits the model returns: Granite divides lm_head's output by logits_scaling.
    add(model, logits)

def _install_mlp(cap: Capture, add: Any, mlp: Any, i: int, act_fn: Any, gate_up: Any = None) -> None:
    """The dense MLP's stages: from ``gate_proj`` and ``up_proj``, or from the two halves of one
    ``gate_up`` module's output (Phi-3), which runs before the activation."""
    def out_hook(stage: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            cap.emit(stage, i, _first(output)[0])
        return hook

    def act(module: Any, args: Any, output: Any) -> None:
        if gate_up is not None:  # gate and up are out already
            cap.emit("ffn_silu", i, output[0])
        else:
            cap.pending_silu[i] = output[0]  # emitted after ffn_up, in computation order

    def up(module: Any, args: Any, output: Any) -> None:
        cap.emit("ffn_up", i, output[0])
        if i in cap.pending_silu:
            cap.emit("ffn_silu", i, cap.pending_silu.pop(i))

    def halves(module: Any, args: Any, output: Any) -> None:
        gate, up_part = output[0].chunk(2, dim=-1)
        cap.emit("ffn_gate", i, gate)
        cap.emit("ffn_up", i, up_part)

    if gate_up is not None:
        add(gate_up, halves)
    else:
        add(mlp.gate_proj, out_hook("ffn_gate"))
        add(mlp.up_proj, up)
    add(act_fn, act)

    def down(module: Any, args: Any, output: Any) -> None:
        cap.emit("ffn_swiglu", i, args[0][0])
        cap.emit("ffn_out", i, output[0])

    add(mlp.down_proj, down)

def _install_moe(cap: Capture, add: Any, layer: Any, i: int) -> None:
    def router(module: Any, args: Any, output: Any) -> None:
        logits, weights, chosen = output  # [S, E], [S, K], [S, K]: batch and sequence flattened
        cap.emit("router_logits", i, logits)
        if cap.wants("moe_experts", i):
            cap.emit("moe_experts", i, chosen.float())
        cap.emit("moe_weights", i, weights)

    def block(module: Any, args: Any, output: Any) -> None:
        cap.emit("moe_out", i, _first(output)[0])

    add(layer.mlp.gate, router)
    add(layer.mlp, block)
