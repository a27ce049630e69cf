"""Model configs no model can have, and ``config.json`` files that are not small JSON objects.

Each case once ended in ``pv: internal error`` (zero heads divided by zero,
``int(Infinity)`` overflowed) or a hang (a FIFO named ``config.json``); now
each is one ``PvError`` line that names the file, and ``pv diff --model``
exits 2 with that line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.model.config import SYNTHETIC, ConfigValueError, check_values
from pv.capture.model.load import model_config
from pv.capture.store import aprt
from pv.cli import run
from pv.errors import PvError

IMPOSSIBLE = {
    "zero heads": {"num_attention_heads": 0},
    "zero kv heads": {"num_key_value_heads": 0},
    "heads not a multiple of kv heads": {"num_attention_heads": 4, "num_key_value_heads": 3},
    "negative hidden size": {"hidden_size": -64},
    "zero layers": {"num_hidden_layers": 0},
    "a boolean vocabulary": {"vocab_size": True},
    "a float head_dim": {"head_dim": 16.0},
    "a dimension past int32": {"vocab_size": 2**40},
    "NaN rope theta": {"rope_theta": float("nan")},
    "negative rope theta": {"rope_theta": -1.0},
    "infinite eps": {"rms_norm_eps": float("inf")},
    "zero sliding window": {"sliding_window": 0},
    "layer_types of the wrong length": {"layer_types": ("full_attention",)},
    "an unknown layer type": {"layer_types": ("full_attention", "x", "x", "x")},
    "more experts per token than experts": {"num_experts_per_tok": 2},
    "zero intermediate size without experts": {"intermediate_size": 0},
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_impossible_values_are_refused(case: str) -> None:
    with pytest.raises(ConfigValueError) as info:
        dataclasses.replace(SYNTHETIC, **IMPOSSIBLE[case])
    message = str(info.value)
    assert "\n" not in message and message.startswith("model config: ")
    assert isinstance(info.value, PvError) and isinstance(info.value, ValueError)


def test_the_shipped_configs_are_possible() -> None:
    check_values(SYNTHETIC)


def hf_config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_type": "llama",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def model_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(text, encoding="utf-8")
    return d


def test_a_good_config_json_loads(tmp_path: Path) -> None:
    cfg = model_config(str(model_dir(tmp_path, json.dumps(hf_config()))))
    assert cfg.num_attention_heads == 4 and cfg.head_dim == 16


BAD_CONFIG_JSON = {
    "zero heads": json.dumps(hf_config(num_attention_heads=0)),
    "zero heads with head_dim": json.dumps(hf_config(num_attention_heads=0, head_dim=16)),
    "negative kv heads": json.dumps(hf_config(num_key_value_heads=-2)),
    "Infinity hidden size": json.dumps(hf_config()).replace('"hidden_size": 64', '"hidden_size": Infinity'),
    "NaN rope theta": json.dumps(hf_config()).replace('"rope_theta": 10000.0', '"rope_theta": NaN'),
    "heads as a string": json.dumps(hf_config(num_attention_heads="many")),
    "heads as a list": json.dumps(hf_config(num_attention_heads=[4])),
    "an integer of 5000 digits": json.dumps(hf_config()).replace('"vocab_size": 256', '"vocab_size": ' + "9" * 5000),
    "nested 100,000 deep": '{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "a newline in model_type": json.dumps(hf_config(model_type="llama\nx")),
    "a newline in hidden_act": json.dumps(hf_config(hidden_act="silu\r\nx")),
    "a list, not an object": "[1, 2, 3]",
    "not JSON": "{oops",
}


@pytest.mark.parametrize("case", list(BAD_CONFIG_JSON))
def test_bad_config_json_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    d = model_dir(tmp_path, BAD_CONFIG_JSON[case])
    with pytest.raises(PvError) as info:
        model_config(str(d))
    message = str(info.value)
    assert "\n" not in message and str(d) in message


@pytest.mark.parametrize("family", ["mistral", "mixtral"])
def test_q_k_v_biases_a_family_cannot_have_are_refused(tmp_path: Path, family: str) -> None:
    extra = {"num_local_experts": 4, "num_experts_per_tok": 2} if family == "mixtral" else {}
    d = model_dir(tmp_path, json.dumps(hf_config(model_type=family, attention_bias=True, **extra)))
    with pytest.raises(PvError, match="attention_bias is set, but .* has no q/k/v biases"):
        model_config(str(d))
    (d / "config.json").write_text(json.dumps(hf_config(model_type=family, attention_bias=False, **extra)))
    assert not model_config(str(d)).attention_bias


def test_q_k_v_biases_follow_the_config_where_the_family_has_them(tmp_path: Path) -> None:
    d = model_dir(tmp_path, json.dumps(hf_config(model_type="qwen3", attention_bias=True)))
    assert model_config(str(d)).attention_bias


def _alarm(seconds: int) -> Any:
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError("hang")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    return previous


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_config_json_does_not_hang(tmp_path: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    os.mkfifo(d / "config.json")
    previous = _alarm(20)
    try:
        with pytest.raises(PvError, match="not a regular file"):
            model_config(str(d))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_gguf_model_does_not_hang(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "model.gguf")
    for side in ("a", "b"):
        path = tmp_path / side / "layer-0" / "attn_norm.bin"
        path.parent.mkdir(parents=True)
        aprt.write(path, 0, np.ones(64, np.float32))
    previous = _alarm(20)
    try:
        code = run(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(tmp_path / "model.gguf")])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "not a regular file" in err, err


@pytest.mark.parametrize("case", ["zero heads", "Infinity hidden size", "nested 100,000 deep"])
def test_pv_diff_with_a_bad_model_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    d = model_dir(tmp_path, BAD_CONFIG_JSON[case])
    for side in ("a", "b"):
        path = tmp_path / side / "layer-0" / "attn_norm.bin"
        path.parent.mkdir(parents=True)
        aprt.write(path, 0, np.ones(64, np.float32))
    code = run(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(d)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "internal error" not in err and str(d) in err
