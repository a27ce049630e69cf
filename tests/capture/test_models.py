"""load_model: the synthetic model, Hugging Face directories, GGUF delegation, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pv.capture.model import load as models
from pv.capture.model.config import SYNTHETIC
from pv.errors import PvError


def hf_config(**overrides: object) -> dict[str, object]:
    c = SYNTHETIC
    data: dict[str, object] = {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim, "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps, "tie_word_embeddings": False, "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
    }
    data.update(overrides)
    return data


def write_hf_dir(root: Path, config: dict[str, object], state_dict: dict[str, np.ndarray], shards: int = 1) -> Path:
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    names = sorted(state_dict)
    for k in range(shards):
        part = {n: np.ascontiguousarray(state_dict[n]) for n in names[k::shards]}
        save_file(part, str(root / f"model-{k:05d}-of-{shards:05d}.safetensors"))
    return root


def test_synthetic_model() -> None:
    m = models.load_model("synthetic")
    assert m.config == SYNTHETIC and m.architecture == "qwen2"
    assert m.weights == "synthetic" and m.source == "synthetic"
    assert all(v.dtype == np.float32 for v in m.state_dict.values())
    assert "lm_head.weight" in m.state_dict  # untied
    assert m.fingerprint == models.load_model("synthetic").fingerprint
    assert m.describe()["config"]["num_hidden_layers"] == 4


def test_byte_tokenizer_round_trip() -> None:
    tok = models.load_model("synthetic").tokenizer
    ids = tok.encode("héllo")
    assert ids == list("héllo".encode()) and max(ids) < 256
    assert tok.decode(ids) == "héllo"


def test_fingerprint_sees_names_shapes_and_bytes() -> None:
    a = {"w": np.arange(6, dtype=np.float32)}
    base = models.fingerprint(a)
    assert models.fingerprint({"w": np.arange(6, dtype=np.float32)}) == base
    assert models.fingerprint({"v": np.arange(6, dtype=np.float32)}) != base
    assert models.fingerprint({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}) != base
    b = np.arange(6, dtype=np.float32)
    b[3] = np.nextafter(b[3], np.float32(10))
    assert models.fingerprint({"w": b}) != base
    neg = np.zeros(6, dtype=np.float32)
    assert models.fingerprint({"w": neg}) != models.fingerprint({"w": -neg})


def test_hf_directory_round_trip(tmp_path: Path) -> None:
    syn = models.load_model("synthetic")
    root = write_hf_dir(tmp_path / "m", hf_config(), dict(syn.state_dict), shards=3)
    m = models.load_model(root)
    assert m.config == SYNTHETIC
    assert m.fingerprint == syn.fingerprint
    assert m.weights == "real" and m.tokenizer is None
    assert models.model_config(str(root)) == SYNTHETIC


def test_hf_directory_bfloat16_and_tied_embeddings(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    syn = models.load_model("synthetic")
    sd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in syn.state_dict.items()}
    root = tmp_path / "bf16"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(hf_config(model_type="llama", attention_bias=True,
                                                           tie_word_embeddings=True)))
    save_file(sd, str(root / "model.safetensors"))
    m = models.load_model(str(root))
    assert m.config.architecture == "llama" and m.config.tie_word_embeddings
    assert "lm_head.weight" not in m.state_dict
    emb = m.state_dict["model.embed_tokens.weight"]
    assert emb.dtype == np.float32
    assert np.array_equal(emb, sd["model.embed_tokens.weight"].float().numpy())


def test_llama_without_bias_and_transformers5_rope_parameters(tmp_path: Path) -> None:
    cfg = hf_config(model_type="llama", rope_parameters={"rope_type": "default", "rope_theta": 5e5})
    del cfg["head_dim"]
    c = models.config_from_hf(cfg, "x")
    assert c.attention_bias is False and c.rope_theta == 5e5
    assert c.head_dim == SYNTHETIC.hidden_size // SYNTHETIC.num_attention_heads


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model_type": "gpt2"}, "unsupported architecture 'gpt2'"),
    ({"model_type": None}, "unsupported architecture"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling 'yarn'"),
    ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ({"hidden_size": None}, "config.json lacks or garbles"),
])
def test_unsupported_configs(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(hf_config(**overrides)))
    with pytest.raises(PvError, match=message):
        models.load_model(root)


def test_missing_and_misshapen_weights(tmp_path: Path) -> None:
    sd = dict(models.load_model("synthetic").state_dict)
    del sd["model.layers.2.mlp.up_proj.weight"]
    with pytest.raises(PvError, match="'model.layers.2.mlp.up_proj.weight' is missing"):
        models.load_model(write_hf_dir(tmp_path / "a", hf_config(), sd))
    sd = dict(models.load_model("synthetic").state_dict)
    sd["model.norm.weight"] = np.ones(3, dtype=np.float32)
    with pytest.raises(PvError, match=r"has shape \[3\], expected \[64\]"):
        models.load_model(write_hf_dir(tmp_path / "b", hf_config(), sd))


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(PvError, match="not found"):
        models.load_model(tmp_path / "absent")
    with pytest.raises(PvError, match="no config.json"):
        models.load_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(PvError, match="not a model directory or a .gguf"):
        models.load_model(tmp_path / "weights.bin")
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(PvError, match="unreadable"):
        models.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config()))
    with pytest.raises(PvError, match="no \\*.safetensors"):
        models.load_model(tmp_path)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(hf_config()))
    (root / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(PvError, match="cannot read safetensors"):
        models.load_model(root)


def test_gguf_goes_to_the_gguf_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pv.capture.model import gguf as gguf_model

    seen: list[Path] = []
    syn = models.load_model("synthetic")

    def fake(path: Path) -> models.LoadedModel:
        seen.append(Path(path))
        return syn

    monkeypatch.setattr(gguf_model, "load_gguf", fake)
    f = tmp_path / "tiny.GGUF"
    f.write_bytes(b"GGUF")
    assert models.load_model(str(f)) is syn
    assert models.load_model(str(f)) is syn  # cached per path, mtime, size
    assert seen == [f]


@pytest.mark.slow
def test_smollm2_gguf_loads(smollm2_gguf: Path) -> None:
    m = models.load_model(str(smollm2_gguf))
    assert m.architecture == "llama" and m.weights == "real"
    assert m.config.tie_word_embeddings and "lm_head.weight" not in m.state_dict
    assert m.config.num_hidden_layers == 30 and m.config.num_key_value_heads == 3
    assert m.tokenizer is not None and m.tokenizer.decode(m.tokenizer.encode("Hello")) == "Hello"
