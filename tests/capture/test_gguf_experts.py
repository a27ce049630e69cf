"""Mixtral GGUFs with one tensor per expert (converted before llama.cpp stacked them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model.export import write_gguf
from pv.capture.model.gguf import read_gguf
from pv.capture.model.load import load_model
from pv.errors import PvError

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def mixtral() -> Any:
    return load_model("synthetic:mixtral")


def test_per_expert_tensors_load_as_the_stacked_ones(mixtral: Any, tmp_path: Path) -> None:
    write_gguf(mixtral.config, dict(mixtral.state_dict), tmp_path / "stacked.gguf")
    write_gguf(mixtral.config, dict(mixtral.state_dict), tmp_path / "split.gguf", per_expert=True)
    names = [t.name for t in gguf.GGUFReader(tmp_path / "split.gguf").tensors]
    assert "blk.0.ffn_gate.3.weight" in names and not any(n.endswith("_exps.weight") for n in names)
    stacked, split = read_gguf(tmp_path / "stacked.gguf"), read_gguf(tmp_path / "split.gguf")
    assert split.config == stacked.config
    assert split.state_dict.keys() == stacked.state_dict.keys()
    for name, values in stacked.state_dict.items():
        assert np.array_equal(split.state_dict[name], values), name
    assert split.quant_types["model.layers.0.mlp.experts.gate_proj.weight"] == "F32"
    assert load_model(str(tmp_path / "split.gguf")).fingerprint == mixtral.fingerprint


def test_per_expert_layout_is_mixtral_only(tmp_path: Path) -> None:
    qwen = load_model("synthetic:qwen3_moe")
    with pytest.raises(PvError, match="Mixtral only, not qwen3_moe"):
        write_gguf(qwen.config, dict(qwen.state_dict), tmp_path / "q.gguf", per_expert=True)


def _write_edited(mixtral: Any, path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any) -> Path:
    real_add = gguf.GGUFWriter.add_tensor

    def add_tensor(self: Any, name: str, tensor: np.ndarray, *args: Any, **kwargs: Any) -> None:
        for out_name, out_tensor in edit(name, tensor):
            real_add(self, out_name, out_tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", add_tensor)
    write_gguf(mixtral.config, dict(mixtral.state_dict), path, per_expert=True)
    monkeypatch.undo()
    return path


def test_a_missing_expert_is_one_line(mixtral: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_edited(mixtral, tmp_path / "gap.gguf", monkeypatch,
                         lambda n, t: [] if n == "blk.1.ffn_up.2.weight" else [(n, t)])
    with pytest.raises(PvError, match=r"gap.gguf: per-expert tensors of blk\.1\.ffn_up skip expert 2$"):
        read_gguf(path)


def test_fewer_experts_than_the_metadata_says(mixtral: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    last = mixtral.config.num_experts - 1
    path = _write_edited(mixtral, tmp_path / "few.gguf", monkeypatch,
                         lambda n, t: [] if n.endswith(f".{last}.weight") and ".ffn_" in n else [(n, t)])
    with pytest.raises(PvError, match="few.gguf: weight 'model.layers.0.mlp.experts.gate_proj.weight' "
                                      "has shape \\[3, 48, 64\\], expected \\[4, 48, 64\\]"):
        read_gguf(path)


def test_experts_stored_both_ways(mixtral: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stacked = np.asarray(mixtral.state_dict["model.layers.0.mlp.experts.up_proj.weight"], dtype=np.float32)

    def twice(name: str, tensor: np.ndarray) -> list[tuple[str, np.ndarray]]:
        if name == "blk.0.ffn_up.0.weight":
            return [(name, tensor), ("blk.0.ffn_up_exps.weight", stacked)]
        return [(name, tensor)]

    path = _write_edited(mixtral, tmp_path / "both.gguf", monkeypatch, twice)
    with pytest.raises(PvError, match="experts of model.layers.0.mlp.experts.up_proj.weight are stored both stacked"):
        read_gguf(path)
