"""Per-stage half-precision tolerances pv ships, measured by ``pv tolerances measure``.

How they were made (``docs/compare.md`` has the numbers)::

    pv tolerances measure --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --model models/gemma-3-270m-q4_k_m.gguf -o measured.json

The transformers oracle in float32 against the oracle in the dtype, 16 fixed
tokens, every stage of every layer; per stage the worst layer and position of
either model, times a margin of 4 (per-stage floors: one rounding of the dtype).
Stages neither model has (MoE routing) keep the hand-set dtype default in
``tolerances.DEFAULTS``; so does float32, whose only noise is summation order.
"""

from __future__ import annotations

MEASURED: dict[str, dict[str, dict[str, float]]] = {
    'bfloat16': {
        'attention': {'atol': 0.0001, 'cosine': 0.992637, 'rtol': 0.545},
        'attn_norm': {'atol': 0.0001, 'cosine': 0.99629, 'rtol': 0.356},
        'attn_out': {'atol': 0.0001, 'cosine': 0.993562, 'rtol': 0.497},
        'attn_scores': {'atol': 0.0001, 'cosine': 0.998516, 'rtol': 0.248},
        'attn_softmax': {'atol': 0.0001, 'cosine': 0.99293, 'rtol': 0.627},
        'embedding': {'atol': 0.0001, 'cosine': 0.999991, 'rtol': 0.016},
        'ffn_gate': {'atol': 0.0001, 'cosine': 0.996364, 'rtol': 0.33},
        'ffn_norm': {'atol': 0.0001, 'cosine': 0.996018, 'rtol': 0.364},
        'ffn_out': {'atol': 0.0001, 'cosine': 0.997699, 'rtol': 0.28},
        'ffn_silu': {'atol': 0.0001, 'cosine': 0.996463, 'rtol': 0.331},
        'ffn_swiglu': {'atol': 0.0001, 'cosine': 0.996542, 'rtol': 0.337},
        'ffn_up': {'atol': 0.0001, 'cosine': 0.996367, 'rtol': 0.332},
        'final_norm': {'atol': 0.0001, 'cosine': 0.99845, 'rtol': 0.339},
        'k_norm': {'atol': 0.0001, 'cosine': 0.99607, 'rtol': 0.343},
        'k_post_rope': {'atol': 0.0001, 'cosine': 0.996062, 'rtol': 0.343},
        'lm_head': {'atol': 0.0001, 'cosine': 0.999326, 'rtol': 0.312},
        'post_attn_norm': {'atol': 0.0001, 'cosine': 0.991788, 'rtol': 0.655},
        'post_attn_residual': {'atol': 0.0001, 'cosine': 0.997594, 'rtol': 0.292},
        'post_ffn_norm': {'atol': 0.0001, 'cosine': 0.993349, 'rtol': 0.505},
        'post_ffn_residual': {'atol': 0.0001, 'cosine': 0.995889, 'rtol': 0.434},
        'q_norm': {'atol': 0.0001, 'cosine': 0.996765, 'rtol': 0.265},
        'q_post_rope': {'atol': 0.0001, 'cosine': 0.996756, 'rtol': 0.265},
        'qkv_matmul': {'atol': 0.0001, 'cosine': 0.996865, 'rtol': 0.328},
    },
    'float16': {
        'attention': {'atol': 1e-05, 'cosine': 0.999781, 'rtol': 0.085},
        'attn_norm': {'atol': 1e-05, 'cosine': 0.999952, 'rtol': 0.0428},
        'attn_out': {'atol': 1e-05, 'cosine': 0.999761, 'rtol': 0.0779},
        'attn_scores': {'atol': 1e-05, 'cosine': 0.99993, 'rtol': 0.0407},
        'attn_softmax': {'atol': 1e-05, 'cosine': 0.99984, 'rtol': 0.0602},
        'embedding': {'atol': 1e-05, 'cosine': 0.999996, 'rtol': 0.002},
        'ffn_gate': {'atol': 1e-05, 'cosine': 0.999952, 'rtol': 0.037},
        'ffn_norm': {'atol': 1e-05, 'cosine': 0.999948, 'rtol': 0.0396},
        'ffn_out': {'atol': 1e-05, 'cosine': 0.999676, 'rtol': 0.0657},
        'ffn_silu': {'atol': 1e-05, 'cosine': 0.99995, 'rtol': 0.0397},
        'ffn_swiglu': {'atol': 1e-05, 'cosine': 0.9998, 'rtol': 0.0483},
        'ffn_up': {'atol': 1e-05, 'cosine': 0.999947, 'rtol': 0.037},
        'final_norm': {'atol': 1e-05, 'cosine': 0.999976, 'rtol': 0.0486},
        'k_norm': {'atol': 1e-05, 'cosine': 0.999951, 'rtol': 0.0348},
        'k_post_rope': {'atol': 1e-05, 'cosine': 0.999951, 'rtol': 0.0348},
        'lm_head': {'atol': 1e-05, 'cosine': 0.99999, 'rtol': 0.0385},
        'post_attn_norm': {'atol': 1e-05, 'cosine': 0.999897, 'rtol': 0.0817},
        'post_attn_residual': {'atol': 1e-05, 'cosine': 0.999968, 'rtol': 0.0499},
        'post_ffn_norm': {'atol': 1e-05, 'cosine': 0.999908, 'rtol': 0.0469},
        'post_ffn_residual': {'atol': 1e-05, 'cosine': 0.999947, 'rtol': 0.0564},
        'q_norm': {'atol': 1e-05, 'cosine': 0.999957, 'rtol': 0.0299},
        'q_post_rope': {'atol': 1e-05, 'cosine': 0.999957, 'rtol': 0.0324},
        'qkv_matmul': {'atol': 1e-05, 'cosine': 0.999957, 'rtol': 0.0334},
    },
}
