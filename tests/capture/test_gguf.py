"""GGUF loading: names, the Q/K row order, config from metadata, quantisation, refusals.

Small files are written here with the ``gguf`` package in llama.cpp's layout
(its tensor names, Q/K rows permuted for Llama), so the loader is checked
against known float32 weights; the real SmolLM2 file is checked against
transformers' own GGUF loader, an independent implementation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model.config import SYNTHETIC
from pv.capture.model.gguf import hf_name, load_gguf, read_gguf, unpermute_rope_rows
from pv.capture.model.load import load_model
from pv.capture.model.loaded import fingerprint
from pv.capture.model.synthetic import synthetic_state_dict
from pv.errors import PvError

pytest.importorskip("gguf")

#: The synthetic model as a Llama: no bias, tied embeddings, GQA.
LLAMA = dataclasses.replace(SYNTHETIC, architecture="llama", attention_bias=False,
                            tie_word_embeddings=True, rope_theta=50000.0, rms_norm_eps=1e-5)


def test_names_map_to_hugging_face() -> None:
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output_norm.weight") == "model.norm.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias"
    assert hf_name("blk.12.attn_output.weight") == "model.layers.12.self_attn.o_proj.weight"
    assert hf_name("blk.3.ffn_norm.weight") == "model.layers.3.post_attention_layernorm.weight"
    assert hf_name("blk.3.ffn_down.weight") == "model.layers.3.mlp.down_proj.weight"
    assert hf_name("blk.3.ffn_gate_exps.weight") is None
    assert hf_name("rope_freqs.weight") is None


@pytest.mark.parametrize("heads", [1, 3, 9])
def test_unpermute_inverts_llama_cpp(heads: int, llama_permute: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(heads)
    w = rng.standard_normal((heads * 64, 40)).astype(np.float32)
    permuted = llama_permute(w, heads)
    assert not np.array_equal(permuted, w)  # the permutation really moves rows
    assert np.array_equal(unpermute_rope_rows(permuted, heads), w)
    bias = rng.standard_normal(heads * 64).astype(np.float32)
    assert np.array_equal(unpermute_rope_rows(llama_permute(bias, heads), heads), bias)


def test_unpermute_refuses_odd_head_size() -> None:
    with pytest.raises(PvError, match="rope rows"):
        unpermute_rope_rows(np.zeros((9, 4), np.float32), 3)


def test_llama_round_trip_is_exact(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    sd = synthetic_state_dict(LLAMA)
    assert "lm_head.weight" not in sd
    path = gguf_writer(tmp_path / "llama.gguf", LLAMA, sd)
    model = load_gguf(path)
    assert model.config == LLAMA
    assert model.weights == "real"
    assert model.source == str(path)
    assert set(model.state_dict) == set(sd)
    for name, value in sd.items():
        got = model.state_dict[name]
        assert got.dtype == np.float32 and got.flags.c_contiguous, name
        assert np.array_equal(got, value), name
    assert model.fingerprint == fingerprint(sd)


def test_qwen2_keeps_row_order_and_bias(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    sd = synthetic_state_dict(SYNTHETIC)
    path = gguf_writer(tmp_path / "qwen2.gguf", SYNTHETIC, sd)
    model = load_gguf(path)
    assert model.config == SYNTHETIC
    assert model.config.attention_bias and not model.config.tie_word_embeddings
    assert all(np.array_equal(model.state_dict[k], v) for k, v in sd.items())


@pytest.mark.parametrize("qtype, tol", [("F16", 1e-3), ("Q8_0", 0.02), ("Q4_1", 0.2)])
def test_quantised_weights_dequantise_close(tmp_path: Path, gguf_writer: Callable[..., Path],
                                            qtype: str, tol: float) -> None:
    sd = synthetic_state_dict(LLAMA)
    model = load_gguf(gguf_writer(tmp_path / f"{qtype}.gguf", LLAMA, sd, qtype=qtype))
    contents = read_gguf(tmp_path / f"{qtype}.gguf", with_tokenizer=False)
    assert contents.quant_types["model.layers.0.self_attn.q_proj.weight"] == qtype
    assert contents.quant_types["model.norm.weight"] == "F32"
    for name, value in sd.items():
        err = np.abs(model.state_dict[name] - value).max()
        assert err <= tol * np.abs(value).max(), (name, err)
        # a wrong row order would show as errors of the size of the weights themselves
    q = model.state_dict["model.layers.1.self_attn.q_proj.weight"]
    ref = sd["model.layers.1.self_attn.q_proj.weight"]
    assert np.corrcoef(q.ravel(), ref.ravel())[0, 1] > 0.95


def test_load_model_dispatches_gguf(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "m.gguf", LLAMA, synthetic_state_dict(LLAMA))
    assert load_model(str(path)).config == LLAMA


# ---------------------------------------------------------------------- refusals


def one_line(err: PvError) -> str:
    text = str(err)
    assert "\n" not in text and text
    return text


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n")
    with pytest.raises(PvError) as exc:
        load_gguf(path)
    assert "not a GGUF file" in one_line(exc.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(PvError, match="not found"):
        load_gguf(tmp_path / "absent.gguf")
    with pytest.raises(PvError, match="directory"):
        load_gguf(tmp_path)


def test_truncated_file(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "full.gguf", LLAMA, synthetic_state_dict(LLAMA))
    cut = tmp_path / "cut.gguf"
    data = path.read_bytes()
    for keep in (8, 200, len(data) // 2):
        cut.write_bytes(data[:keep])
        with pytest.raises(PvError) as exc:
            load_gguf(cut)
        one_line(exc.value)


def test_unsupported_architecture(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "gpt2.gguf", LLAMA, synthetic_state_dict(LLAMA), arch="gpt2")
    with pytest.raises(PvError) as exc:
        load_gguf(path)
    assert "unsupported architecture 'gpt2'" in one_line(exc.value)


def test_unsupported_quant_type(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    sd = synthetic_state_dict(LLAMA)
    name = "model.layers.2.mlp.up_proj.weight"
    ints = np.zeros(sd[name].shape, dtype=np.int32)
    path = gguf_writer(tmp_path / "i32.gguf", LLAMA, sd, drop=(name,),
                       raw={"blk.2.ffn_up.weight": (ints, "I32")})
    with pytest.raises(PvError) as exc:
        load_gguf(path)
    text = one_line(exc.value)
    assert "blk.2.ffn_up.weight" in text and "I32" in text


def test_missing_tensor(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "short.gguf", LLAMA, synthetic_state_dict(LLAMA),
                       drop=("model.layers.1.mlp.gate_proj.weight",))
    with pytest.raises(PvError) as exc:
        load_gguf(path)
    assert "model.layers.1.mlp.gate_proj.weight" in one_line(exc.value)


def test_unknown_tensor(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    extra = np.zeros((4, 64), np.float32)
    path = gguf_writer(tmp_path / "moe.gguf", LLAMA, synthetic_state_dict(LLAMA),
                       raw={"blk.0.ffn_gate_inp.weight": (extra, "F32")})
    with pytest.raises(PvError, match="ffn_gate_inp"):
        load_gguf(path)


# ---------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_smollm2_config_from_metadata(smollm2: Any) -> None:
    cfg = smollm2.config
    assert (cfg.architecture, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (
        "llama", 30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (9, 3, 64)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.vocab_size) == (100000.0, 1e-5, 49152)
    assert cfg.tie_word_embeddings and not cfg.attention_bias
    assert cfg.max_position_embeddings == 8192
    assert "lm_head.weight" not in smollm2.state_dict
    assert smollm2.weights == "real"
    assert smollm2.fingerprint == fingerprint(smollm2.state_dict)
    assert len(smollm2.state_dict) == 2 + 30 * 9


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf_loader(smollm2_gguf: Path, smollm2: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-equal weights and the same config as transformers' own GGUF reader.

    ``from_pretrained(..., gguf_file=...)`` needs ``accelerate``; the tensors it
    would load come from ``load_gguf_checkpoint``, called here directly.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    ref_cfg = transformers.AutoConfig.from_pretrained(str(smollm2_gguf.parent),
                                                      gguf_file=smollm2_gguf.name)
    cfg = smollm2.config
    assert ref_cfg.model_type == cfg.architecture
    for ours, theirs in [("hidden_size", "hidden_size"), ("num_hidden_layers", "num_hidden_layers"),
                         ("intermediate_size", "intermediate_size"), ("head_dim", "head_dim"),
                         ("num_attention_heads", "num_attention_heads"), ("vocab_size", "vocab_size"),
                         ("num_key_value_heads", "num_key_value_heads"),
                         ("tie_word_embeddings", "tie_word_embeddings"),
                         ("max_position_embeddings", "max_position_embeddings")]:
        assert getattr(cfg, ours) == getattr(ref_cfg, theirs), ours
    theta = (getattr(ref_cfg, "rope_parameters", None) or {}).get("rope_theta",
                                                                 getattr(ref_cfg, "rope_theta", None))
    assert cfg.rope_theta == theta
    assert np.float32(cfg.rms_norm_eps) == np.float32(ref_cfg.rms_norm_eps)

    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(ref_cfg)
    ref = load_gguf_checkpoint(str(smollm2_gguf), return_tensors=True, model_to_load=skeleton)["tensors"]
    assert set(ref) == set(smollm2.state_dict)
    for name, value in smollm2.state_dict.items():
        theirs = ref[name]
        theirs = theirs.numpy() if hasattr(theirs, "numpy") else np.asarray(theirs)
        assert np.array_equal(value, theirs), name


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "qwen3_moe"])
def test_pvs_reader_reads_what_gguf_reads_without_copying_weights(family: str, tmp_path: Path) -> None:
    """The faster reader (a plain ndarray view of the mapping) gives gguf's own fields and
    tensors, value for value, and the tensors still point into the file's mapping."""
    import mmap

    import gguf

    from pv.capture.model.export import write_gguf
    from pv.capture.model.gguf_reader import open_gguf

    model = load_model(f"synthetic:{family}")
    path = write_gguf(model.config, dict(model.state_dict), tmp_path / "m.gguf")
    ours, stock = open_gguf(path), gguf.GGUFReader(str(path), "r")
    assert list(ours.fields) == list(stock.fields)
    for name, field in stock.fields.items():
        mine = ours.fields[name]
        assert (mine.types, mine.data, mine.offset) == (field.types, field.data, field.offset), name
        assert all(np.array_equal(a, b) for a, b in zip(mine.parts, field.parts, strict=True)), name
    assert [t.name for t in ours.tensors] == [t.name for t in stock.tensors]
    for mine, theirs in zip(ours.tensors, stock.tensors, strict=True):
        assert mine.tensor_type == theirs.tensor_type and np.array_equal(mine.data, theirs.data), mine.name
        base = mine.data
        while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
            base = base.base
        assert isinstance(base, mmap.mmap), mine.name  # mapped, not copied


def test_pvs_reader_refuses_a_damaged_file_in_one_line(tmp_path: Path) -> None:
    from pv.capture.model.gguf_reader import open_gguf

    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(PvError, match=r"cut.gguf: unreadable GGUF file \(") as info:
        open_gguf(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(PvError, match="model file not found"):
        open_gguf(tmp_path / "absent.gguf")
