"""``synthetic:FAMILY-SIZE``: a real model's shape with weights drawn tensor by tensor when read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pv.capture.model.load import load_model, model_config
from pv.capture.model.loaded import LoadedModel
from pv.capture.model.synthetic import SeededWeights, family_config
from pv.errors import PvError


def test_llama_1b_has_about_a_billion_parameters_in_llama_shapes() -> None:
    model = load_model("synthetic:llama-1b")  # nothing is drawn until a tensor is read
    cfg, sd = model.config, model.state_dict
    assert isinstance(sd, SeededWeights)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.intermediate_size) == (2048, 16, 32, 8, 64, 8192)
    assert sd.parameters == 1_038_682_112
    assert model.source == "synthetic:llama-1b" and model.weights == "synthetic"
    assert model_config("synthetic:llama-1b") == cfg
    assert sd.shapes["model.layers.15.self_attn.k_proj.weight"] == (512, 2048)
    assert sd.shapes["model.layers.0.mlp.down_proj.weight"] == (2048, 8192)
    assert sd.shapes["model.embed_tokens.weight"] == (32000, 2048)
    assert "lm_head.weight" not in sd and len(sd) == 2 + 16 * 9


def _small() -> SeededWeights:
    return SeededWeights(dataclasses.replace(model_config("synthetic:llama-1b"), num_hidden_layers=1))


def test_weights_are_drawn_per_tensor_the_same_every_time_and_per_seed() -> None:
    sd = _small()
    name = "model.layers.0.self_attn.k_proj.weight"
    first = sd[name]
    assert first.dtype == np.float32 and first.shape == (512, 2048)
    _ = sd["model.layers.0.self_attn.q_proj.weight"]  # another tensor read in between changes nothing
    assert np.array_equal(sd[name], first)
    assert np.array_equal(_small()[name], first)
    other = SeededWeights(sd.config, seed=1)
    assert not np.array_equal(other[name], first)
    assert other.fingerprint() != sd.fingerprint() == _small().fingerprint()
    assert abs(float(first.std()) * np.sqrt(2048) - 2.0) < 0.02  # gain 2 over sqrt(fan_in)
    norm = sd["model.layers.0.input_layernorm.weight"]
    assert abs(float(norm.mean()) - 1.0) < 0.01 and 0.09 < float(norm.std()) < 0.11


def test_sizes_apply_to_dense_families_and_refuse_the_rest() -> None:
    gemma = family_config("gemma3-1b")
    assert gemma.num_hidden_layers == 16 and gemma.layer_types[:3] == gemma.layer_types[3:6]
    assert gemma.layer_types[2] == "full_attention" and len(gemma.layer_types) == 16
    with pytest.raises(PvError, match="mixture of experts"):
        family_config("qwen3_moe-1b")
    with pytest.raises(PvError, match=r"unknown synthetic family 'llama-7b'.*\(-1b\)"):
        load_model("synthetic:llama-7b")


def test_the_oracle_loads_drawn_weights_and_agrees_with_the_engine() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pv.capture import runners
    from pv.capture.engine.runner import Engine
    from pv.capture.runners import Settings

    cfg = family_config("llama")  # the small shape, with the sized models' per-tensor weights
    seeded = SeededWeights(cfg)
    loaded = LoadedModel(cfg, seeded, "synthetic:seeded-llama", "synthetic", seeded.fingerprint(), None)
    tokens = [3, 17, 42, 101, 7, 250, 64, 9]
    oracle = runners.get("hf").load(loaded, Settings())
    embed = oracle.model.model.embed_tokens.weight.detach().numpy()
    assert np.array_equal(embed, seeded["model.embed_tokens.weight"])
    torch.testing.assert_close(oracle.forward(tokens), Engine(loaded).forward(tokens), atol=1e-4, rtol=0)


def test_the_cli_plans_the_1b_model_without_drawing_it_and_refuses_bad_sizes_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pv import cli

    out = tmp_path / "cap"
    assert cli.run(["trace", "--model", "synthetic:llama-1b", "--tokens", "1,31999", "--save-tensor", "all",
                    "-o", str(out), "--dry-run"]) == 0
    assert "up to 259" in capsys.readouterr().out and not out.exists()
    for spec in ("synthetic:mixtral-1b", "synthetic:llama-3b"):
        assert cli.run(["trace", "--model", spec, "--tokens", "1", "--save-tensor", "lm_head",
                        "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pv: error: "), err
