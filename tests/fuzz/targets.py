"""One fuzz target per reader: how a case is drawn, put on disk and run.

Each :class:`Target` pairs a Hypothesis strategy (drawing a case: the bytes,
or special kind, of each file the reader opens) with ``run(case, workdir)``,
which writes the case under ``workdir`` and judges what the reader did
(``harness``). Bases are real files: pv's own capture and manifest, the
shipped contract, committed evidence records, a ``pv status`` snapshot.

Readers whose fixes belong elsewhere (contract YAML, evidence, baselines)
are fuzzed here all the same; what this finds is filed, not worked around.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import strategies as st

from . import harness
from .files import place
from .strategies import FILE_KINDS, document, encode_any, expand, json_bytes

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    run: Callable[[Any, Path], harness.Outcome]


# --------------------------------------------------------------------------- captures


@functools.lru_cache(maxsize=1)
def capture_base() -> dict[str, Any]:
    """A small pv capture (four stages, manifest) as {relative path: bytes}, plus its manifest."""
    import tempfile

    from pv.capture.store import directory
    from pv.capture.store.writer import CaptureWriter
    rng = np.random.default_rng(0)
    tensors = {
        ("embedding", 0): rng.standard_normal((3, 8)),
        ("attn_norm", 0): rng.standard_normal((3, 8)),
        ("attn_scores", 0): np.tril(rng.standard_normal((2, 3, 3))),
        ("lm_head", None): rng.standard_normal((3, 16)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cap"
        with CaptureWriter(root, {"dtype": "float32", "engine": "pv"}) as w:
            for (stage, layer), arr in tensors.items():
                w.write(stage, layer, arr.astype(np.float32), dtype_captured="float32")
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*.bin"))
        }
        manifest = json.loads((root / directory.MANIFEST).read_text())
    return {"files": files, "manifest": manifest}


@st.composite
def _aprt_bytes(draw: st.DrawFn, good: bytes) -> bytes | str:
    """A stage file: intact, or its header, length or values damaged, or not a file at all."""
    how = draw(st.sampled_from(["good", "count", "magic", "cut", "extra", "empty", "layer", "kind"]))
    body = bytearray(good)
    if how == "count":
        n = draw(st.sampled_from([0, 1, 2**32 - 1, 2**31, (len(good) - 12) // 4 + 1]) | st.integers(0, 2**32 - 1))
        body[8:12] = n.to_bytes(4, "little")
    elif how == "magic":
        body[0:4] = draw(st.binary(min_size=4, max_size=4))
    elif how == "cut":
        del body[draw(st.integers(0, len(body))):]
    elif how == "extra":
        body += draw(st.binary(min_size=1, max_size=64))
    elif how == "empty":
        body = bytearray(good[:8] + b"\0\0\0\0")
    elif how == "layer":
        body[4:8] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    elif how == "kind":
        return draw(st.sampled_from(FILE_KINDS))
    return bytes(body)


@st.composite
def _capture_side(draw: st.DrawFn) -> dict[str, bytes | str | None]:
    base = capture_base()
    side: dict[str, bytes | str | None] = {}
    for rel, good in base["files"].items():
        if draw(st.integers(0, 3)) == 0:
            side[rel] = draw(_aprt_bytes(good))
        else:
            side[rel] = good
    _, manifest = draw(document(base["manifest"]))
    side["manifest.json"] = None if draw(st.integers(0, 9)) == 0 else manifest
    return side


def capture_cases() -> st.SearchStrategy[Any]:
    base = capture_base()
    good = {**base["files"], "manifest.json": json_bytes(base["manifest"])}
    extra = st.sampled_from([[], [], ["--format", "json"], ["--model", "synthetic"], ["-v"]])
    return st.fixed_dictionaries(
        {"a": _capture_side(), "b": st.one_of(st.just(good), _capture_side()), "args": extra}
    )


def _write_side(root: Path, side: dict[str, bytes | str | None]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in side.items():
        if content is not None:
            place(root / rel, content)


def run_capture(case: dict[str, Any], workdir: Path) -> harness.Outcome:
    a, b = workdir / "a", workdir / "b"
    _write_side(a, case["a"])
    _write_side(b, case["b"])
    return harness.run_cli(["diff", str(a), str(b), *case["args"]], watch=(a, b))


# --------------------------------------------------------------------------- tolerance files

#: A hand-written file and a measured one (``pv tolerances measure``) in one document.
TOLERANCE_BASE: dict[str, Any] = {
    "cosine": 0.9999,
    "rtol": 1e-3,
    "stages": {"attn_scores": {"rtol": 0.01, "atol": 1e-5}, "lm_head": {"threshold": 0.999}},
    "dtypes": {
        "bf16": {"atol": 1e-3, "stages": {"attn_softmax": {"cosine": 0.99, "rtol": 0.6}}},
        "float16": {"stages": {"lm_head": {"atol": 1e-5, "rtol": 0.04}}},
    },
    "assume_dtype": "float32",
    "measured": {"models": ["smollm2"], "tokens": 16, "margin": 4},
}


def _yaml_bytes(doc: Any) -> bytes:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        text = json.dumps(doc)  # JSON is YAML too
    return encode_any(expand(text))


def tolerance_cases() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just("tol.yaml"), document(TOLERANCE_BASE, _yaml_bytes)),
        st.tuples(st.just("tol.json"), document(TOLERANCE_BASE, json_bytes)),
    )


def run_tolerance(case: tuple[str, tuple[str, bytes | str]], workdir: Path) -> harness.Outcome:
    name, (_, content) = case
    base = capture_base()
    good = {**base["files"], "manifest.json": json_bytes(base["manifest"])}
    a, b = workdir / "a", workdir / "b"
    _write_side(a, good)
    _write_side(b, good)
    cfg = workdir / "cfg" / name
    place(cfg, content)
    return harness.run_cli(["diff", str(a), str(b), "--config", str(cfg)], watch=(a, b, cfg.parent))


# --------------------------------------------------------------------------- model config.json

HF_CONFIG_BASE: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
}


def model_config_cases() -> st.SearchStrategy[Any]:
    qwen = {**HF_CONFIG_BASE, "model_type": "qwen2"}
    return st.one_of(document(HF_CONFIG_BASE), document(qwen))


def run_model_config(case: tuple[str, bytes | str], workdir: Path) -> harness.Outcome:
    from pv.capture.model.config import check_values
    from pv.capture.model.load import model_config

    d = workdir / "model"
    place(d / "config.json", case[1])

    def call() -> None:
        check_values(model_config(str(d)))  # a config that loads must be a possible one

    return harness.run_library(call)
