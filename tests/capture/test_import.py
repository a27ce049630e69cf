"""``pv import``: dumps in other engines' names and layouts (and split over ranks) come back
as captures equal to pv's own; bad dumps and bad mappings are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture import aprt, dumps, mapping
from pv.capture.config import SYNTHETIC
from pv.capture.importer import import_dumps
from pv.cli import run
from pv.compare.diff import diff_captures

TOKENS = [5, 9, 33, 120, 77, 3, 8, 250]
#: The Qwen2/Llama stages every engine here computes (the stage table may grow new families').
CLASSIC = ("embedding,attn_norm,qkv_matmul,qkv_bias,q_post_rope,k_post_rope,attn_scores,attn_softmax,"
           "attention,attn_out,post_attn_residual,ffn_norm,ffn_gate,ffn_up,ffn_silu,ffn_swiglu,ffn_out,"
           "post_ffn_residual,final_norm,lm_head")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, Any], np.ndarray]]:
    """A pv-engine capture of the synthetic model, and its tensors by (stage, layer)."""
    pytest.importorskip("torch")
    from pv.capture.trace import capture

    out = tmp_path_factory.mktemp("ref") / "cap"
    capture("synthetic", tokens=TOKENS, stages=CLASSIC, output=out)
    cap = aprt.open_capture(out)
    return out, {e.key: aprt.read(e.path, e.shape)[1] for e in cap.entries}


def _exact(a: Path, b: Path) -> None:
    report = diff_captures(a, b, tolerances=None)
    assert report.ok, [r.to_dict() for r in report.records if r.bad]
    for rec in report.records:
        assert rec.status == "pass", rec.label
        assert rec.metrics is not None and rec.metrics.max_abs == 0.0, rec.label


def _pairs(x: np.ndarray, d: int) -> np.ndarray:
    """transformers' halves order -> ggml's pair order, per head of size d."""
    shape = x.shape
    h = x.reshape(*shape[:-1], -1, 2, d // 2).swapaxes(-1, -2)
    return h.reshape(shape)


def test_llama_cpp_names_and_layouts(reference: Any, tmp_path: Path) -> None:
    ref_dir, t = reference
    cfg = SYNTHETIC
    d, s = cfg.head_dim, len(TOKENS)
    out: dict[str, np.ndarray] = {"inp_embd": t[("embedding", 0)], "result_norm": t[("final_norm", None)],
                                  "result_output": t[("lm_head", None)]}
    names = {"attn_norm": "attn_norm", "kqv_out": "attention", "attn_out": "attn_out",
             "ffn_inp": "post_attn_residual", "ffn_norm": "ffn_norm", "ffn_gate": "ffn_gate",
             "ffn_up": "ffn_up", "ffn_swiglu": "ffn_swiglu", "ffn_out": "ffn_out",
             "l_out": "post_ffn_residual"}
    for layer in range(cfg.num_hidden_layers):
        for ggml, stage in names.items():
            out[f"{ggml}-{layer}"] = t[(stage, layer)]
        out[f"Qcur-{layer}:ROPE"] = _pairs(t[("q_post_rope", layer)], d)
        out[f"Kcur-{layer}"] = _pairs(t[("k_post_rope", layer)], d).reshape(s, -1)
        pad = np.full((cfg.num_attention_heads, s, 32), 7.0, np.float32)  # padded KV cells
        kq = t[("attn_scores", layer)] * np.float32(math.sqrt(d))
        out[f"kq-{layer}"] = np.concatenate([kq, pad], axis=-1)
        out[f"kq_soft_max-{layer}"] = np.concatenate([t[("attn_softmax", layer)], pad * 0], axis=-1)
    np.savez(tmp_path / "llama.npz", **out)
    # The dump is in the llama graph's pair order, so the sizes come from the synthetic
    # llama (the same sizes as the qwen2 reference): the mapping refuses other families.
    code = run(["import", str(tmp_path / "llama.npz"), "--mapping", "llama.cpp", "--model",
                "synthetic:llama", "-o", str(tmp_path / "imp")])
    assert code == 0
    report = diff_captures(tmp_path / "imp", ref_dir)
    assert report.ok
    bad = [r.label for r in report.records if r.status not in ("pass", "only_b")]
    assert not bad
    only_ref = {r.stage for r in report.records if r.status == "only_b"}
    assert only_ref == {"qkv_matmul", "qkv_bias", "ffn_silu"}


def test_transformer_lens_names(reference: Any, tmp_path: Path) -> None:
    ref_dir, t = reference
    cfg = SYNTHETIC
    s, q_w, k_w = len(TOKENS), cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    out: dict[str, np.ndarray] = {"hook_embed": t[("embedding", 0)][None]}
    simple = {"attn.hook_rot_q": "q_post_rope", "attn.hook_rot_k": "k_post_rope",
              "attn.hook_pattern": "attn_softmax", "hook_attn_out": "attn_out",
              "hook_resid_mid": "post_attn_residual", "mlp.hook_pre": "ffn_gate",
              "mlp.hook_pre_linear": "ffn_up", "mlp.hook_post": "ffn_swiglu",
              "hook_mlp_out": "ffn_out", "hook_resid_post": "post_ffn_residual"}
    for layer in range(cfg.num_hidden_layers):
        for hook, stage in simple.items():
            out[f"blocks.{layer}.{hook}"] = t[(stage, layer)][None]
        qkv = t[("qkv_bias", layer)]
        out[f"blocks.{layer}.attn.hook_q"] = qkv[:, :q_w].reshape(1, s, -1, cfg.head_dim)
        out[f"blocks.{layer}.attn.hook_k"] = qkv[:, q_w:q_w + k_w].reshape(1, s, -1, cfg.head_dim)
        out[f"blocks.{layer}.attn.hook_v"] = qkv[:, q_w + k_w:].reshape(1, s, -1, cfg.head_dim)
        scores = t[("attn_scores", layer)].copy()
        scores[:, np.triu(np.ones((s, s), bool), 1)] = -np.inf  # TransformerLens masks first
        out[f"blocks.{layer}.attn.hook_attn_scores"] = scores[None]
        out[f"blocks.{layer}.attn.hook_z"] = t[("attention", layer)].reshape(1, s, -1, cfg.head_dim)
    out["blocks.0.hook_resid_pre"] = t[("embedding", 0)][None]  # not a pv stage: ignored
    np.savez(tmp_path / "tl.npz", **out)
    mp = mapping.load("transformer_lens")
    result = import_dumps([tmp_path / "tl.npz"], mp, tmp_path / "imp", config=cfg)
    assert result.ignored == ["blocks.0.hook_resid_pre"]
    report = diff_captures(tmp_path / "imp", ref_dir)
    assert report.ok
    assert {r.stage for r in report.records if r.status == "only_b"} == {
        "attn_norm", "qkv_matmul", "ffn_norm", "ffn_silu", "final_norm", "lm_head"}


TP_MAPPING = """
format: pv-mapping
version: 1
name: vllm-tp2
tensor_parallel: {rank: 'rank(?P<rank>\\d+)', size: 2}
rules:
  - {match: 'embed', stage: embedding}
  - {match: 'l(?P<layer>\\d+)\\.qkv', stage: qkv_bias}
  - {match: 'l(?P<layer>\\d+)\\.qkv_nobias', stage: qkv_matmul}
  - {match: 'l(?P<layer>\\d+)\\.q', stage: q_post_rope, transform: [{reshape: [S, -1, 16]}]}
  - {match: 'l(?P<layer>\\d+)\\.k', stage: k_post_rope, transform: [{reshape: [S, -1, 16]}]}
  - {match: 'l(?P<layer>\\d+)\\.scores', stage: attn_scores}
  - {match: 'l(?P<layer>\\d+)\\.probs', stage: attn_softmax}
  - {match: 'l(?P<layer>\\d+)\\.attn', stage: attention}
  - {match: 'l(?P<layer>\\d+)\\.o_proj', stage: attn_out}
  - {match: 'l(?P<layer>\\d+)\\.gate', stage: ffn_gate}
  - {match: 'l(?P<layer>\\d+)\\.up', stage: ffn_up}
  - {match: 'l(?P<layer>\\d+)\\.act', stage: ffn_silu}
  - {match: 'l(?P<layer>\\d+)\\.swiglu', stage: ffn_swiglu}
  - {match: 'l(?P<layer>\\d+)\\.out', stage: post_ffn_residual}
  - {match: 'logits', stage: lm_head}
"""


def _shard(stage: str, arr: np.ndarray, rank: int, n: int) -> np.ndarray:
    cfg = SYNTHETIC
    how = mapping.DEFAULT_SHARDING[stage]
    if how == "replicated":
        return arr
    if how == "qkv":
        q_w = cfg.num_attention_heads * cfg.head_dim
        k_w = cfg.num_key_value_heads * cfg.head_dim
        q, k, v = arr[:, :q_w], arr[:, q_w:q_w + k_w], arr[:, q_w + k_w:]
        return np.concatenate([np.array_split(x, n, axis=-1)[rank] for x in (q, k, v)], axis=-1)
    return np.array_split(arr, n, axis=int(how))[rank]


def test_tensor_parallel_unsharding(reference: Any, tmp_path: Path) -> None:
    """A synthetic model dumped as two tensor-parallel ranks comes back whole and exact."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    ref_dir, t = reference
    names = {"qkv_bias": "qkv", "qkv_matmul": "qkv_nobias", "q_post_rope": "q", "k_post_rope": "k",
             "attn_scores": "scores", "attn_softmax": "probs", "attention": "attn",
             "attn_out": "o_proj", "ffn_gate": "gate", "ffn_up": "up", "ffn_silu": "act",
             "ffn_swiglu": "swiglu", "post_ffn_residual": "out"}
    s = len(TOKENS)
    for rank in range(2):
        out = {"embed": t[("embedding", 0)], "logits": _shard("lm_head", t[("lm_head", None)], rank, 2)}
        for (stage, layer), arr in t.items():
            if stage in names:
                x = _shard(stage, arr, rank, 2)
                out[f"l{layer}.{names[stage]}"] = x.reshape(s, -1) if x.ndim == 3 and stage.endswith("rope") else x
        safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
                                    str(tmp_path / f"dump-rank{rank}.safetensors"))
    (tmp_path / "tp.yaml").write_text(TP_MAPPING)
    code = run(["import", str(tmp_path / "dump-rank0.safetensors"), str(tmp_path / "dump-rank1.safetensors"),
                "--mapping", str(tmp_path / "tp.yaml"), "--model", "synthetic", "-o", str(tmp_path / "imp")])
    assert code == 0
    man = json.loads((tmp_path / "imp" / "manifest.json").read_text())
    assert man["run"]["tensor_parallel"] == 2
    report = diff_captures(tmp_path / "imp", ref_dir)
    for rec in report.records:
        if rec.status != "only_b":
            assert rec.status == "pass" and rec.metrics is not None and rec.metrics.max_abs == 0.0, rec.label
    # One rank missing: refused before anything is written.
    code = run(["import", str(tmp_path / "dump-rank0.safetensors"), "--mapping", str(tmp_path / "tp.yaml"),
                "-o", str(tmp_path / "half")])
    assert code == 2 and not (tmp_path / "half").exists()


def test_replicated_shards_must_agree(tmp_path: Path) -> None:
    a = np.ones((3, 64), np.float32)
    np.savez(tmp_path / "rank0.npz", embed=a)
    np.savez(tmp_path / "rank1.npz", embed=a * 2)
    (tmp_path / "m.yaml").write_text(
        "format: pv-mapping\nversion: 1\ntensor_parallel: {rank: 'rank(?P<rank>\\d)', size: 2}\n"
        "rules:\n  - {match: embed, stage: embedding}\n")
    mp = mapping.load(str(tmp_path / "m.yaml"))
    with pytest.raises(Exception, match="rank 1 differs from rank 0"):
        import_dumps([tmp_path / "rank0.npz", tmp_path / "rank1.npz"], mp, tmp_path / "o")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rules:\n  - {match: x, stage: nope}", "unknown stage 'nope'"),
        ("rules:\n  - {match: 'x', stage: attn_norm}", "needs a named group"),
        ("rules:\n  - {match: '(', stage: embedding}", "not a valid regular expression"),
        ("rules:\n  - {match: x, stage: embedding, transform: [explode]}", "unknown transform 'explode'"),
        ("rules:\n  - {match: x, stage: embedding, transform: [{transpose: [0, 0]}]}", "permutation"),
        ("rules:\n  - {match: 'l(?P<layer>\\d)', stage: qkv_matmul, part: z}", "q, k or v"),
        ("rules: []", "non-empty list"),
        ("rules:\n  - {match: x, stage: lm_head, shard: 5}", "out of range"),
        ("tensor_parallel: {rank: 'r', size: 2}\nrules:\n  - {match: x, stage: lm_head}", "(?P<rank>"),
    ],
)
def test_bad_mapping_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       body: str, message: str) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("format: pv-mapping\nversion: 1\n" + body + "\n")
    code = run(["import", "whatever.npz", "--mapping", str(p), "-o", str(tmp_path / "o"), "--check"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert str(p) in err


def test_shipped_mappings_validate(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("transformer_lens", "llama.cpp"):
        assert run(["import", "x.npz", "--mapping", name, "-o", "unused", "--check"]) == 0
    assert "valid" in capsys.readouterr().out


def test_pickle_and_object_arrays_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.pt").write_bytes(b"\x80\x04not really")
    assert run(["import", str(tmp_path / "t.pt"), "--mapping", "llama.cpp", "-o", str(tmp_path / "o")]) == 2
    assert "pickled tensors are never read" in capsys.readouterr().err
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(Exception, match="not a plain .npy"):
        dumps.read_dump(tmp_path / "obj.npy")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(Exception, match="header claims"):
        dumps.read_dump(bad)


def test_shape_checked_against_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "d.npz", **{"attn_norm-0": np.zeros((4, 63), np.float32)})
    code = run(["import", str(tmp_path / "d.npz"), "--mapping", "llama.cpp", "--model", "synthetic:llama",
                "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "should be [4, 64]" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_import_and_generation_bisect_never_load_torch() -> None:
    """pv import and reading generation captures need numpy only (a fresh interpreter checks)."""
    import subprocess
    import sys

    code = ("import sys; import pv.cli.import_, pv.capture.importer, pv.capture.steps, "
            "pv.compare.bisect; print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
