"""The architecture registry: one row per model family pv runs.

A ``Family`` says everything about a decoder family that is data rather than
arithmetic: how its Hugging Face ``config.json`` and its GGUF metadata map onto
``ModelConfig``, what its weights are called (Hugging Face names, llama.cpp
names), which optional stages it has (q/k norms, sandwich norms, a MoE block),
its norm convention, its activation, its attention mask policy, the
transformers classes the oracle builds, the llama.cpp graph that runs its GGUF
and the small shape of its ``synthetic:FAMILY`` model. Engine, oracle, loaders,
synthetic weights and the fault catalogue all read this table and never test a
family's name; adding a family is one ``Family`` row here, plus engine code
only where it computes something new (``tests/capture/test_family_table.py``
refuses a comparison with a family's name anywhere else in ``src/pv``).

Weight roles (the keys of ``Family.layer_weights``) name what a tensor does;
each maps to the Hugging Face parameter name inside ``model.layers.N.``:

``attn_norm``, ``q``, ``k``, ``v``, ``o`` (and ``q_bias``/``k_bias``/``v_bias``),
``q_norm``, ``k_norm``, ``post_attn_norm``, ``ffn_norm``, ``post_ffn_norm``,
``gate``, ``up``, ``down`` (dense MLP), ``router``, ``experts_gate``,
``experts_up``, ``experts_down`` (MoE: stacked ``[E, ...]`` tensors).

MoE families differ in data only: the ``config.json`` keys of their expert facts
(``moe_config_keys``; a family without a ``norm_topk_prob`` key always
renormalises the top-k weights, as Mixtral does), whether the routing weights
are cast back to the compute dtype before they scale the expert outputs
(Qwen3-MoE) or stay float32 (Mixtral, ``router_weights_float32``), and how
their checkpoints name the expert block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pv.errors import PvError

#: Mask kinds: every layer causal; every layer causal within a window; a per-layer
#: pattern of windowed ("sliding_attention") and full ("full_attention") layers.
MASKS = ("causal", "sliding_window", "layer_pattern")

#: Activations the engine implements: "silu" (SwiGLU) and "gelu_tanh" (GeGLU).
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}

#: RoPE scaling types the engine implements beside plain RoPE.
ROPE_TYPES = ("default", "linear", "llama3")

_DENSE = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_MOE = {"router": "mlp.gate", "experts_gate": "mlp.experts.gate_proj",
        "experts_up": "mlp.experts.up_proj", "experts_down": "mlp.experts.down_proj"}
#: ModelConfig field -> config.json key, per MoE convention.
_QWEN_MOE_KEYS = {"num_experts": "num_experts", "moe_intermediate_size": "moe_intermediate_size",
                  "norm_topk_prob": "norm_topk_prob"}
_MIXTRAL_MOE_KEYS = {"num_experts": "num_local_experts", "moe_intermediate_size": "intermediate_size"}
_ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
         "o": "self_attn.o_proj"}
_LLAMA_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_QK_NORMS = {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}
_GEMMA_NORMS = {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
                "ffn_norm": "pre_feedforward_layernorm", "post_ffn_norm": "post_feedforward_layernorm"}

#: llama.cpp block tensor name -> weight role (the same in every family).
GGUF_BLOCK_ROLES: dict[str, str] = {
    "attn_norm": "attn_norm", "attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o",
    "attn_q_norm": "q_norm", "attn_k_norm": "k_norm", "post_attention_norm": "post_attn_norm",
    "ffn_norm": "ffn_norm", "post_ffw_norm": "post_ffn_norm", "ffn_gate": "gate", "ffn_up": "up",
    "ffn_down": "down", "ffn_gate_inp": "router", "ffn_gate_exps": "experts_gate",
    "ffn_up_exps": "experts_up", "ffn_down_exps": "experts_down",
}


#: A family's reading of its GGUF metadata beyond the common keys (see ``Family.gguf_config``):
#: ``(field, arch, head_dim)`` -> ModelConfig fields, where ``field(key, default)`` reads one key.
GGUFConfig = Callable[[Callable[[str, Any], Any], str, int], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    """One decoder family; see the module docstring."""

    name: str
    hf_config_class: str
    hf_model_class: str
    #: ``general.architecture`` of its GGUF files, or None when pv reads none. Several
    #: families may share one (llama.cpp writes Llama, Mistral and Mixtral as ``llama``):
    #: ``by_gguf_arch`` tells them apart by their experts and their window.
    gguf_arch: str | None
    #: Other ``model_type`` spellings of its ``config.json`` (Gemma 3's text model: ``gemma3``).
    aliases: tuple[str, ...] = ()
    #: q/k/v biases: "always" (Qwen2), "config" (``attention_bias``), or "never"
    #: (the transformers model has none: a config that asks for them is refused).
    qkv_bias: str = "config"
    qk_norm: bool = False
    sandwich_norm: bool = False
    moe: bool = False
    #: RMSNorm weight convention: ``w * x`` or ``(1 + w) * x`` (Gemma).
    norm_offset: bool = False
    #: Embedding rows multiplied by sqrt(hidden_size) (Gemma).
    embed_scale: bool = False
    activation: str = "silu"
    mask: str = "causal"
    #: llama.cpp stores Q/K rows permuted for its RoPE (Llama, Mistral).
    gguf_permuted_qk: bool = False
    #: llama.cpp adds 1 to Gemma's norm weights when converting.
    gguf_norm_shift: float = 0.0
    layer_weights: Mapping[str, str] = field(default_factory=dict)
    #: ``config.json``: the key that names the activation (Gemma: ``hidden_activation``).
    hf_act_key: str = "hidden_act"
    #: ``config.json``: ModelConfig field -> key, for the family's own scalars.
    config_keys: Mapping[str, str] = field(default_factory=dict)
    #: ``config.json``: ModelConfig field -> value when the file lacks the key (transformers' default).
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Keys with fixed values, written into ``config.json`` and so into transformers' config.
    config_fixed: Mapping[str, Any] = field(default_factory=dict)
    #: MoE: ModelConfig field -> ``config.json`` key (no ``norm_topk_prob``: always renormalised).
    moe_config_keys: Mapping[str, str] = field(default_factory=dict)
    #: MoE: routing weights scale the expert outputs in float32 (else in the compute dtype).
    router_weights_float32: bool = False
    #: MoE checkpoints on the hub: the block's module name and each expert's matrix names
    #: (pv part -> checkpoint part); pv's own names are ``mlp`` and gate/up/down_proj.
    hf_moe_block: str = "mlp"
    hf_expert_parts: Mapping[str, str] = field(default_factory=dict)
    #: transformers applies the q/k norms to [B, NH, S, D] (Gemma 3), not [B, S, NH, D] (Qwen3).
    hf_qk_norm_heads_first: bool = False
    #: Checkpoint tensors that hold several roles (module inside a layer -> the roles, in row
    #: order; Phi-3's ``self_attn.qkv_proj``): split on load, fused for transformers
    #: (``pv.capture.model.fused``).
    hf_fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The MLP's activation module in transformers (Phi-3: ``activation_fn``).
    hf_act_module: str = "act_fn"
    #: GGUF: ModelConfig field -> (metadata key after ``ARCH.``, value when absent; None: required).
    gguf_keys: Mapping[str, tuple[str, float | None]] = field(default_factory=dict)
    #: GGUF: the family's own reading of its metadata, a small function beside its row.
    gguf_config: GGUFConfig | None = None
    #: GGUF block tensors that hold several roles (Phi-3's ``attn_qkv``, and ``ffn_up``, gate|up).
    gguf_fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: GGUF: experts may be stored one tensor each (``blk.N.ffn_gate.E.weight``), the layout
    #: llama.cpp's converter wrote for Mixtral before it stacked them.
    gguf_per_expert: bool = False
    #: The llama.cpp node table its GGUF runs in (``pv.capture.llamacpp.nodes``); None: ``gguf_arch``.
    llamacpp_graph: str | None = None
    #: ``synthetic:FAMILY``: ModelConfig fields that differ from the small base shape
    #: (``pv.capture.model.synthetic``), so that its stages and masks are exercised.
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    def features(self, attention_bias: bool) -> dict[str, bool]:
        """Conditions that switch optional stages on (``pv.stages.Stage.requires``)."""
        fused = set(self.hf_fused.values())
        return {"qkv_bias": attention_bias, "qk_norm": self.qk_norm,
                "sandwich_norm": self.sandwich_norm, "moe": self.moe, "dense_ffn": not self.moe,
                "fused_qkv": ("q", "k", "v") in fused, "fused_gate_up": ("gate", "up") in fused}

    def roles(self, attention_bias: bool) -> dict[str, str]:
        """Weight role -> Hugging Face name suffix of ``.weight``/``.bias`` inside a layer."""
        out = {role: name + ".weight" for role, name in self.layer_weights.items()}
        if attention_bias:
            for x in "qkv":
                out[f"{x}_bias"] = self.layer_weights[x] + ".bias"
        return out

    @property
    def model_types(self) -> tuple[str, ...]:
        """Every ``config.json`` ``model_type`` that names this family (its name first)."""
        return (self.name, *self.aliases)


def _weights(*parts: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out


def _gemma3_gguf(field: Callable[[str, Any], Any], arch: str, head_dim: int) -> dict[str, Any]:
    """Gemma 3's GGUF: scores scaled by ``attention.scale`` when the file gives it, else by
    head_dim**-0.5 (llama.cpp's reading), as a query_pre_attn_scalar. The 27B model scales
    queries by hidden/heads, which pv does not map."""
    if field("general.size_label", None) == "27B":
        raise PvError("Gemma 3 27B scales queries by hidden/heads, which pv does not map")
    scale = field(f"{arch}.attention.scale", None)
    return {"query_pre_attn_scalar": float(head_dim) if scale is None else float(round(float(scale) ** -2, 3))}


#: ``config.json`` keys Qwen's transformers configs read to switch a window on (pv runs none).
_NO_WINDOW = {"use_sliding_window": False}
_GEMMA3_LAYERS = ("sliding_attention", "sliding_attention", "full_attention") * 2

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "LlamaConfig", "LlamaForCausalLM", "llama", gguf_permuted_qk=True,
               layer_weights=_weights(_LLAMA_NORMS, _ATTN, _DENSE), config_fixed={"mlp_bias": False},
               # llama3 RoPE scaling with a short original context, so every frequency band is hit
               synthetic={"tie_word_embeddings": True,
                          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
               doc="Llama 2/3.x: RMSNorm, SwiGLU, GQA, optional llama3/linear RoPE scaling"),
        Family("mistral", "MistralConfig", "MistralForCausalLM", "llama", mask="sliding_window",
               qkv_bias="never", gguf_permuted_qk=True, layer_weights=_weights(_LLAMA_NORMS, _ATTN, _DENSE),
               synthetic={"sliding_window": 4},
               doc="Mistral: Llama's layer with a sliding-window mask on every layer"),
        Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", "qwen2", qkv_bias="always",
               layer_weights=_weights(_LLAMA_NORMS, _ATTN, _DENSE), config_fixed=_NO_WINDOW,
               synthetic={"attention_bias": True},
               doc="Qwen2/2.5: Llama's layer with q/k/v biases"),
        Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", "qwen3", qk_norm=True,
               layer_weights=_weights(_LLAMA_NORMS, _QK_NORMS, _ATTN, _DENSE), config_fixed=_NO_WINDOW,
               synthetic={"tie_word_embeddings": True},
               doc="Qwen3: per-head RMSNorm of q and k before RoPE, biases only if the config asks"),
        Family("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", "qwen3moe",
               qk_norm=True, moe=True, layer_weights=_weights(_LLAMA_NORMS, _QK_NORMS, _ATTN, _MOE),
               moe_config_keys=_QWEN_MOE_KEYS,
               config_fixed={**_NO_WINDOW, "decoder_sparse_step": 1, "mlp_only_layers": [],
                             "output_router_logits": False},
               synthetic={"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 48},
               doc="Qwen3-MoE: Qwen3 attention, top-k routed SwiGLU experts (softmax, renormalised)"),
        Family("mixtral", "MixtralConfig", "MixtralForCausalLM", "llama", qkv_bias="never", moe=True,
               mask="sliding_window", gguf_permuted_qk=True,
               layer_weights=_weights(_LLAMA_NORMS, _ATTN, _MOE), moe_config_keys=_MIXTRAL_MOE_KEYS,
               config_fixed={"output_router_logits": False},
               router_weights_float32=True, hf_moe_block="block_sparse_moe",
               hf_expert_parts={"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
               gguf_per_expert=True, llamacpp_graph="mixtral",
               # one FFN size, the experts'; a 4 key window so the mask is exercised
               synthetic={"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 48,
                          "intermediate_size": 48, "sliding_window": 4},
               doc="Mixtral: Llama attention (Mistral's window when set), top-2 routed SwiGLU experts "
                   "(softmax in float32, always renormalised, float32 routing weights)"),
        Family("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3", aliases=("gemma3",),
               qk_norm=True, sandwich_norm=True, norm_offset=True, embed_scale=True,
               activation="gelu_tanh", mask="layer_pattern", gguf_norm_shift=1.0,
               layer_weights=_weights(_GEMMA_NORMS, _QK_NORMS, _ATTN, _DENSE),
               hf_act_key="hidden_activation", hf_qk_norm_heads_first=True,
               config_keys={"query_pre_attn_scalar": "query_pre_attn_scalar"},
               config_defaults={"query_pre_attn_scalar": 256.0, "tie_word_embeddings": True},
               config_fixed={"final_logit_softcapping": None, "attn_logit_softcapping": None},
               gguf_keys={"rope_local_theta": ("rope.freq_base_swa", 10000.0)}, gguf_config=_gemma3_gguf,
               # every 3rd layer global, a 4 key window, its own local RoPE base and score scale
               synthetic={"tie_word_embeddings": True, "num_hidden_layers": 6, "hidden_act": "gelu_tanh",
                          "sliding_window": 4, "rope_theta": 1_000_000.0, "rope_local_theta": 10000.0,
                          "query_pre_attn_scalar": 24.0, "num_key_value_heads": 1,
                          "layer_types": _GEMMA3_LAYERS},
               doc="Gemma 3: GeGLU, sandwich (1 + w) norms, q/k norms, scaled embedding, "
                   "local sliding-window layers between global ones, two RoPE bases"),
        Family("granite", "GraniteConfig", "GraniteForCausalLM", "granite", gguf_permuted_qk=True,
               layer_weights=_weights(_LLAMA_NORMS, _ATTN, _DENSE), config_fixed={"mlp_bias": False},
               config_keys={"embedding_multiplier": "embedding_multiplier",
                            "residual_multiplier": "residual_multiplier",
                            "attention_multiplier": "attention_multiplier", "logits_scaling": "logits_scaling"},
               config_defaults={"attention_multiplier": 1.0},  # GraniteConfig's default, not D**-0.5
               gguf_keys={"embedding_multiplier": ("embedding_scale", None),
                          "residual_multiplier": ("residual_scale", None),
                          "attention_multiplier": ("attention.scale", None),
                          "logits_scaling": ("logit_scale", None)},
               # every scaling away from 1 (the score scale from D**-0.5 = 0.25), tied as Granite 3 is
               synthetic={"tie_word_embeddings": True, "embedding_multiplier": 4.0, "residual_multiplier": 0.5,
                          "attention_multiplier": 0.125, "logits_scaling": 2.0},
               doc="Granite: Llama's layer with scaled embeddings, residual branches, scores and logits"),
        Family("phi3", "Phi3Config", "Phi3ForCausalLM", "phi3", qkv_bias="never", mask="sliding_window",
               layer_weights=_weights(_LLAMA_NORMS, _ATTN, _DENSE), hf_act_module="activation_fn",
               hf_fused={"self_attn.qkv_proj": ("q", "k", "v"), "mlp.gate_up_proj": ("gate", "up")},
               gguf_fused={"attn_qkv": ("q", "k", "v"), "ffn_up": ("gate", "up")},
               # as many kv heads as query heads, as Phi-3-mini has; a 4 key window
               synthetic={"num_key_value_heads": 4, "sliding_window": 4},
               doc="Phi-3: Llama's layer from fused qkv_proj and gate_up_proj tensors, a sliding window"),
    )
}

#: ``config.json`` ``model_type`` values that name a registered family.
MODEL_TYPES: dict[str, str] = {t: f.name for f in FAMILIES.values() for t in f.model_types}


def names() -> str:
    return ", ".join(FAMILIES)


def get(name: str, source: str = "") -> Family:
    """The family for a ``model_type`` or architecture name; a clear error for anything else."""
    key = MODEL_TYPES.get(str(name).strip().lower())
    if key is None:
        where = f"{source}: " if source else ""
        raise PvError(f"{where}unsupported architecture '{name or '?'}'; supported: {names()}")
    return FAMILIES[key]


def by_gguf_arch(arch: str, source: str = "", moe: bool = False, windowed: bool = False) -> Family:
    """The family a GGUF of ``general.architecture`` ``arch`` holds. llama.cpp writes Llama,
    Mistral and Mixtral all as ``llama``: an expert count above 0 (``moe``) picks the MoE
    family, and among dense ones a sliding window in the metadata (``windowed``) the one
    whose mask has a window."""
    matches = [f for f in FAMILIES.values() if f.gguf_arch == arch and f.moe == moe]
    if len(matches) > 1:
        matches = [f for f in matches if (f.mask != "causal") == windowed] or matches[:1]
    if matches:
        return matches[0]
    if any(f.gguf_arch == arch for f in FAMILIES.values()):
        raise PvError(f"{source}: a {arch} GGUF {'with' if moe else 'without'} experts is not "
                      f"a model pv runs")
    gguf_archs = ", ".join(dict.fromkeys(f.gguf_arch for f in FAMILIES.values() if f.gguf_arch))
    raise PvError(f"{source}: unsupported architecture '{arch}'; pv runs {gguf_archs}")
