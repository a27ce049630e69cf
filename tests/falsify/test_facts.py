"""Facts measured from tensors, arrays, captures and models; the real-weights rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pv.falsify import facts


def test_numpy_and_torch_objects() -> None:
    assert facts.observe(np.zeros(2, dtype=np.float16)) == {"device": "cpu", "dtype": "float16"}
    torch = pytest.importorskip("torch")
    assert facts.observe(torch.zeros(2, dtype=torch.bfloat16)) == {"device": "cpu", "dtype": "bfloat16"}
    meta = torch.empty(2, device="meta")
    assert facts.observe(meta)["device"] == "meta"


def test_strings_and_other_objects_are_not_facts() -> None:
    with pytest.raises(TypeError, match="cannot measure facts"):
        facts.observe("cuda")
    with pytest.raises(TypeError, match="cannot measure facts"):
        facts.observe({"device": "cuda"})


def test_capture_facts_come_from_what_the_tap_saw(tmp_path: Path) -> None:
    manifest = {"run": {"device": "cuda", "model": {"fingerprint": "f" * 64}},
                "files": [{"device_captured": "cpu", "dtype_captured": "float32"},
                          {"device_captured": "cpu", "dtype_captured": "float32"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    got = facts.observe(tmp_path)
    # The requested device ("cuda" in run) is not what ran; the tensors say cpu.
    assert got == {"device": "cpu", "dtype": "float32", "model_fingerprint": "f" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps({"run": {"device": "cuda"}, "files": []}))
    with pytest.raises(TypeError, match="no measured device"):
        facts.observe(tmp_path)


def test_real_capture_and_synthetic_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from pv.capture.model.load import load_model
    from pv.capture.trace import capture

    model = load_model("synthetic")
    got = facts.observe(model)
    assert got["weights"] == "synthetic" and "model_sha256" not in got
    result = capture(model, tokens=[1, 2, 3], output=tmp_path / "cap", stages="attn_scores")
    assert facts.observe(result)["device"] == "cpu" and facts.observe(result)["dtype"] == "float32"


def test_weights_from_a_file_are_real_unless_the_generator_made_them(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from pv.capture.model.load import load_model
    from pv.capture.model.synthetic import synthetic_state_dict

    synthetic = load_model("synthetic")
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")

    class Loaded:
        def __init__(self, state_dict: dict, source: str) -> None:
            self.state_dict, self.source, self.fingerprint, self.config = state_dict, source, "x", synthetic.config

    from_file = facts.model_facts(Loaded(synthetic_state_dict(synthetic.config), str(path)))
    assert from_file["weights"] == "synthetic"  # saved to a file, still the generator's weights
    other = synthetic_state_dict(synthetic.config, seed=1)
    real = facts.model_facts(Loaded(other, str(path)))
    assert real["weights"] == "real" and real["model_sha256"] == __import__("hashlib").sha256(b"weights").hexdigest()
    assert facts.model_facts(Loaded(other, "synthetic"))["weights"] == "synthetic"  # no file, no claim


@pytest.mark.parametrize(("measured", "env", "reqs", "misses"), [
    ({"device": "cuda:0"}, {"cuda_available": True, "cuda_devices": 1}, {"device": "cuda"}, 0),
    ({"device": "cuda:0"}, {"cuda_available": False}, {"device": "cuda"}, 1),
    ({"device": "cpu"}, {}, {"device": ["cpu", "cuda"]}, 0),
    ({"dtype": "float32"}, {}, {"dtype": "bfloat16"}, 1),
    ({}, {}, {"weights": "real"}, 1),
    ({"model_sha256": "a" * 64}, {}, {"model_sha256": "a" * 64}, 0),
])
def test_unmet(measured, env, reqs, misses) -> None:
    assert len(facts.unmet(measured, reqs, env)) == misses


def test_environment_is_measured_without_importing_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; from pv.falsify.facts import environment; e = environment(); "
            "assert e['torch'] == 'not imported' and 'torch' not in sys.modules, e")
    subprocess.run([sys.executable, "-c", code], check=True)
