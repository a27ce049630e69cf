"""``pv import``: dumps in other engines' names and layouts (and split over ranks) come back
as captures equal to pv's own; bad dumps and bad mappings are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.importer import dumps, mapping
from pv.capture.importer.convert import import_dumps
from pv.capture.model.config import SYNTHETIC
from pv.capture.store import aprt, directory
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
    cap = directory.open_capture(out)
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
    for name in mapping.shipped():
        assert run(["import", "--mapping", name, "--check"]) == 0
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

    code = ("import sys; import pv.cli.import_, pv.capture.importer.convert, pv.capture.store.steps, "
            "pv.compare.bisect; print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- llama.cpp dumps, every graph

LC_TOKENS = "1,72,101,108,108,111,44,32,119,111,114,108,100,33"
GEMMA3_TOKENS = "2,818,5279,529,7001,563,496,1651,236764,1144,1217,236761"


def _eval_callback_dump(gguf: Path, tokens: str, out: Path, bare: bool = False) -> Path:
    """What a user's eval-callback dumper writes for one prefill: every named node under
    NAME:OP (ggml's dims reversed, trailing size-1 dims dropped), and the unnamed output
    projection (the MUL_MAT reading kqv_out-N) under attn_out-N, as the mappings ask.
    ``bare``: keyed by name alone instead, so a later node of a name replaces an earlier one."""
    from pv.capture.llamacpp.ggml import tensor_at
    from pv.capture.llamacpp.nodes import split_name
    from pv.capture.llamacpp.runner import LlamaCppRunner
    from pv.capture.model.load import model_config

    nodes: dict[str, np.ndarray] = {}

    class Dumper(LlamaCppRunner):
        def _on_node(self, ptr: int, ask: bool, user_data: Any) -> bool:
            if ask:  # eval-callback asks for every node
                return True
            t = tensor_at(ptr)
            name, op = t.name.decode(), self.ggml.op_name(int(t.op))
            if name.startswith("node_") and op == "MUL_MAT" and t.src[1]:
                base, layer = split_name(t.src[1].contents.name.decode())
                if base == "kqv_out":
                    name = f"attn_out-{layer}"
            values = self.ggml.read(ptr, t)
            if values is None:
                return True
            ne = [int(x) for x in t.ne]
            n_dims = max([i + 1 for i, n in enumerate(ne) if n != 1] or [1])
            nodes[name if bare else f"{name}:{op}"] = values.reshape(tuple(reversed(ne[:n_dims])))
            return True

    runner = Dumper(gguf, model_config(str(gguf)), capture=True)
    try:
        runner.forward([int(t) for t in tokens.split(",")])
    finally:
        runner.close()
    np.savez(out, **nodes)
    return out


def _synthetic_gguf(family: str, path: Path) -> Path:
    from pv.capture.model.export import write_gguf
    from pv.capture.model.load import load_model

    model = load_model(f"synthetic:{family}")
    return write_gguf(model.config, dict(model.state_dict), path)


def _same_as_live(gguf: Path, tokens: str, mapping_name: str, root: Path) -> Path:
    """Import an eval-callback dump and check it against --engine llama.cpp on the same run:
    the same stages and layers, each within 1e-6. Returns the dump."""
    from pv.capture.trace import capture

    dump = _eval_callback_dump(gguf, tokens, root / "dump.npz")
    capture(str(gguf), engine="llama.cpp", tokens=tokens, stages="all", output=root / "live")
    assert run(["import", str(dump), "--mapping", mapping_name, "--model", str(gguf),
                "-o", str(root / "imp")]) == 0
    live = {e.key: aprt.read(e.path, e.shape)[1] for e in directory.open_capture(root / "live").entries}
    imp = {e.key: aprt.read(e.path, e.shape)[1] for e in directory.open_capture(root / "imp").entries}
    assert set(imp) == set(live), (sorted(set(live) - set(imp)), sorted(set(imp) - set(live)))
    for key, arr in live.items():
        assert imp[key].shape == arr.shape, key
        assert float(np.max(np.abs(imp[key] - arr), initial=0.0)) <= 1e-6, key
    report = diff_captures(root / "imp", root / "live")
    assert report.ok and all(r.status == "pass" for r in report.records)
    return dump


@pytest.mark.parametrize(("family", "mapping_name", "wrong"), [
    ("qwen3", "llama.cpp-qwen3", "llama.cpp-qwen2"),
    ("qwen3_moe", "llama.cpp-qwen3moe", "llama.cpp-qwen3"),
    ("mixtral", "llama.cpp-mixtral", "llama.cpp"),  # the llama graph's MoE branch
])
def test_llama_cpp_dump_of_synthetic_graph_equals_live_capture(
        family: str, mapping_name: str, wrong: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    gguf = _synthetic_gguf(family, tmp_path / f"{family}.gguf")
    dump = _same_as_live(gguf, LC_TOKENS, mapping_name, tmp_path)
    capsys.readouterr()
    # The same dump through another graph's mapping: refused, naming what does not belong.
    code = run(["import", str(dump), "--mapping", wrong, "-o", str(tmp_path / "wrong")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    extra = "Qcur_normed-N:MUL" if family == "qwen3" else "ffn_moe_logits-N:MUL_MAT"
    assert f"not of mapping {wrong}'s graph" in err and extra in err, err
    if family in ("qwen3_moe", "mixtral"):  # the dense MLP nodes the other mapping looked for
        assert "ffn_gate-N (ffn_gate)" in err and "ffn_swiglu-N (ffn_swiglu)" in err, err
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").iterdir())


def test_llama_cpp_dump_of_granite_equals_live_capture(tmp_path: Path) -> None:
    """The granite graph's mapping: its scaled embedding and logits (SCALE nodes) imported."""
    pytest.importorskip("llama_cpp")
    _same_as_live(_synthetic_gguf("granite", tmp_path / "granite.gguf"), LC_TOKENS, "llama.cpp-granite",
                  tmp_path)


def test_llama_cpp_dump_of_phi3_equals_live_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The phi3 graph's mapping: q|k|v from wqkv, gate and up from the halves of one ffn_up node
    (``stage: ffn_gate|ffn_up``), Q keyed by name and op (Qcur-N alone is its SCALE)."""
    pytest.importorskip("llama_cpp")
    gguf = _synthetic_gguf("phi3", tmp_path / "phi3.gguf")
    dump = _same_as_live(gguf, ",".join(LC_TOKENS.split(",")[:4]), "llama.cpp-phi3", tmp_path)
    capsys.readouterr()
    code = run(["import", str(dump), "--mapping", "llama.cpp-qwen2", "-o", str(tmp_path / "wrong")])
    err = capsys.readouterr().err
    assert code == 2 and "not of mapping llama.cpp-qwen2's graph" in err and "wqkv-N:MUL_MAT" in err, err


def test_llama_cpp_dump_keyed_by_name_alone(tmp_path: Path) -> None:
    """A dump keyed NAME-LAYER only holds the last node of each name: Qcur/Kcur are then the
    ROPE outputs, which import as they do from NAME:OP keys; the projections, which need
    :MUL_MAT keys, are simply absent, and nothing is mapped from the wrong node."""
    pytest.importorskip("llama_cpp")
    from pv.capture.trace import capture

    gguf = _synthetic_gguf("qwen3", tmp_path / "qwen3.gguf")
    dump = _eval_callback_dump(gguf, LC_TOKENS, tmp_path / "bare.npz", bare=True)
    capture(str(gguf), engine="llama.cpp", tokens=LC_TOKENS, stages="all", output=tmp_path / "live")
    assert run(["import", str(dump), "--mapping", "llama.cpp-qwen3", "--model", str(gguf),
                "-o", str(tmp_path / "imp")]) == 0
    live = {e.key: aprt.read(e.path, e.shape)[1] for e in directory.open_capture(tmp_path / "live").entries}
    imp = {e.key: aprt.read(e.path, e.shape)[1] for e in directory.open_capture(tmp_path / "imp").entries}
    assert {stage for stage, _ in set(live) - set(imp)} == {"qkv_matmul"}
    assert set(imp) < set(live)
    for key, arr in imp.items():
        assert float(np.max(np.abs(arr - live[key]), initial=0.0)) == 0.0, key


def test_llama_cpp_dump_of_gemma3_equals_live_capture(gemma3_gguf: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Gemma 3 270M Q4_K_M: inp_scaled, q/k norms, sandwich norms, GeGLU, the prescaled kq."""
    pytest.importorskip("llama_cpp")
    dump = _same_as_live(gemma3_gguf, GEMMA3_TOKENS, "llama.cpp-gemma3", tmp_path)
    capsys.readouterr()
    for wrong in ("llama.cpp", "llama.cpp-qwen3"):
        code = run(["import", str(dump), "--mapping", wrong, "-o", str(tmp_path / wrong)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "inp_scaled:SCALE" in err and "attn_post_norm-N:MUL" in err, err
        assert "ffn_inp-N (post_attn_residual)" in err, err
    # --model says which graph the dump came from: another graph's mapping is refused up front.
    code = run(["import", str(dump), "--mapping", "llama.cpp-qwen3", "--model", str(gemma3_gguf),
                "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "reads dumps of qwen3 models; --model is a gemma3_text model" in err, err


def test_shipped_llama_cpp_mappings_are_rendered_from_the_node_tables() -> None:
    """One source: each llama.cpp*.yaml is what the live capture's table renders
    (python scripts/gen_llamacpp_mappings.py rewrites them)."""
    from pv.capture.llamacpp.mappings import NAMES, render

    for arch, name in NAMES.items():
        path = mapping.SHIPPED_DIR / f"{name}.yaml"
        assert path.read_text() == render(arch), f"{path} is stale: run scripts/gen_llamacpp_mappings.py"
        assert mapping.load(name).name == name
