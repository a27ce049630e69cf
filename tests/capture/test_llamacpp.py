"""llama.cpp captured through cb_eval: layouts match pv's, the quantized tolerance class accepts
llama.cpp's rounding and still localises every fault planted inside its graph; every family's
graph (llama, qwen2, qwen3, qwen3moe, gemma3, granite, phi3) maps each stage to its node or says why not."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv.capture.faults import LLAMA_FAULTS, check_fault, parse_fault
from pv.capture.llamacpp.nodes import GRAPHS, halves_from_pairs, split_name
from pv.cli import run
from pv.errors import PvError

PROMPT_IDS = "504,3575,282,4649,314,7042,30,378,3575,282"
CLASSIC = ("embedding,attn_norm,qkv_matmul,qkv_bias,q_post_rope,k_post_rope,attn_scores,attn_softmax,"
           "attention,attn_out,post_attn_residual,ffn_norm,ffn_gate,ffn_up,ffn_silu,ffn_swiglu,ffn_out,"
           "post_ffn_residual,final_norm,lm_head")


def test_pair_order_is_the_gguf_converters_inverse() -> None:
    """halves_from_pairs undoes the Q/K row permutation llama.cpp's converter applies."""
    d, heads = 8, 3
    hf = np.arange(heads * d, dtype=np.float32)
    # The converter's reorder: per head, (half, i) -> (i, half).
    ggml = hf.reshape(heads, 2, d // 2).swapaxes(1, 2).reshape(heads, d)
    assert not np.array_equal(ggml.reshape(-1), hf)
    np.testing.assert_array_equal(halves_from_pairs(ggml).reshape(-1), hf)


def test_names_and_fault_parsing() -> None:
    assert split_name("attn_norm-12") == ("attn_norm", 12)
    assert split_name("result_norm") == ("result_norm", None)
    assert split_name("Kcur-0 (view)") == ("Kcur-0 (view)", None)
    assert str(parse_fault("ffn_up_scaled@3", "llama.cpp")) == "ffn_up_scaled@3"
    assert parse_fault("attn_norm_scaled", "llama.cpp").layer == 1
    for bad in ("nope", "ffn_up_scaled@x", "ffn_up_scaled@30", "mask_off_by_one@1"):
        with pytest.raises(PvError):
            check_fault(parse_fault(bad, "llama.cpp"), 30, {})


@pytest.fixture(scope="module")
def lc(smollm2_gguf: Path) -> Path:
    pytest.importorskip("llama_cpp")
    return smollm2_gguf


@pytest.fixture(scope="module")
def pv_ref(lc: Path, smollm2: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pv's fp32 engine on the dequantised GGUF: the reference for the llama.cpp captures."""
    from pv.capture.trace import capture

    out = tmp_path_factory.mktemp("lcref") / "pv"
    capture(smollm2, tokens=PROMPT_IDS, stages=CLASSIC, layers="0..4", output=out)
    return out


def test_struct_matches_the_bundled_ggml(lc: Path) -> None:
    from llama_cpp import _ggml

    from pv.capture.llamacpp.ggml import Ggml

    g = Ggml(_ggml.libggml)
    g.check_layout()
    assert g.op_name(0) == "NONE"


def test_capture_layouts_and_manifest(lc: Path, smollm2: Any, pv_ref: Path, tmp_path: Path) -> None:
    from pv.capture.trace import capture
    from pv.compare.diff import diff_captures

    out = tmp_path / "lc"
    result = capture(smollm2, engine="llama.cpp", tokens=PROMPT_IDS, stages=CLASSIC,
                     layers="0..4", output=out)
    s = len(PROMPT_IDS.split(","))
    assert result.logits.shape == (s, smollm2.config.vocab_size)  # every position has logits
    man = json.loads((out / "manifest.json").read_text())
    assert man["run"]["engine"] == "llama.cpp"
    assert man["run"]["quantization"] == "Q4_1"
    assert man["run"]["llama_cpp"]["flash_attn"] is False
    assert "ffn_silu" in man["run"]["not_exposed"]
    assert {x["stage"] for x in man["not_applicable"]} >= {"ffn_silu", "qkv_bias"}
    by = {(f["stage"], f["layer"]): f for f in man["files"]}
    assert by[("attn_scores", 0)]["shape"] == [9, s, s]
    assert "softmax scale 0.125" in by[("attn_scores", 0)]["source"]
    report = diff_captures(out, pv_ref)
    assert report.ok, [r.label for r in report.records if r.bad]
    recs = {(r.stage, r.layer): r for r in report.records if r.metrics is not None}
    assert recs[("embedding", 0)].metrics.max_abs == 0.0  # type: ignore[union-attr]
    # Layout conversions are right only if these agree far better than the tolerance asks:
    # a wrong head-dim order or an unscaled kq would drop the cosine well below 0.99.
    for stage in ("qkv_matmul", "q_post_rope", "k_post_rope", "attn_scores", "attn_softmax",
                  "attention"):
        assert recs[(stage, 0)].metrics.cosine > 0.9998, stage  # type: ignore[union-attr]
    assert recs[("lm_head", None)].metrics.cosine > 0.998  # type: ignore[union-attr]
    assert recs[("lm_head", None)].dtype == "quantized"


LLAMA_GRAPH_FAULTS = sorted(n for n, f in LLAMA_FAULTS.items()
                            if any((r.name, r.op) == f.node for r in GRAPHS["llama"].rules))


@pytest.mark.parametrize("name", LLAMA_GRAPH_FAULTS)
def test_planted_fault_is_localised(lc: Path, pv_ref: Path, tmp_path: Path, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A tensor changed inside llama.cpp's callback is named by pv bisect, stage and layer."""
    from pv.capture.trace import capture
    from pv.compare.bisect import bisect

    out = tmp_path / "faulty"
    capture(str(lc), engine="llama.cpp", tokens=PROMPT_IDS, stages=CLASSIC, layers="0..4",
            output=out, fault=f"{name}@2")
    result = bisect(out, pv_ref)
    assert result.first_divergence == {"layer": 2, "stage": LLAMA_FAULTS[name].stage}
    man = json.loads((out / "manifest.json").read_text())
    assert man["run"]["fault"] == {"name": name, "layer": 2, "stage": LLAMA_FAULTS[name].stage}


def test_k_rope_head_zeroed_zeroes_key_head_0(lc: Path, tmp_path: Path) -> None:
    """The planted bug is what its name says: head 0 of the keys after RoPE, at every position,
    and nothing else of that node (it once zeroed position 0: ggml's array is [1, S, KVH, D])."""
    from pv.capture.store import aprt
    from pv.capture.trace import capture

    keys = {}
    for name, fault in (("clean", None), ("faulty", "k_rope_head_zeroed@2")):
        capture(str(lc), engine="llama.cpp", tokens=PROMPT_IDS, stages="k_post_rope", layers="2",
                output=tmp_path / name, fault=fault)
        keys[name] = aprt.read(tmp_path / name / "layer-2" / "k_post_rope.bin")[1].reshape(10, 3, 64)
    clean, faulty = keys["clean"], keys["faulty"]
    assert clean[:, 0, :].any()  # [S, KVH, D]
    assert not faulty[:, 0, :].any()
    np.testing.assert_array_equal(faulty[:, 1:, :], clean[:, 1:, :])


def test_cli_bisect_llama_cpp_against_pv(lc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["bisect", "--model", str(lc), "--engine", "llama.cpp", "--reference", "pv",
                "--tokens", PROMPT_IDS, "--inject-fault", "ffn_up_scaled@1", "--format", "json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["first_divergence"] == {"layer": 1, "stage": "ffn_up"}


def test_bad_plans_are_one_line_errors(lc: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--model", "synthetic"], "not a .gguf file"),
        (["--model", str(lc), "--device", "cuda"], "CPU only"),
        (["--model", str(lc), "--dtype", "bfloat16"], "--dtype float32"),
        (["--model", str(lc), "--inject-fault", "nope"], "unknown llama.cpp fault"),
    ]
    for i, (args, message) in enumerate(cases):
        code = run(["trace", "--engine", "llama.cpp", "--tokens", "1,2,3", "--save-tensor", "all",
                    "-o", str(tmp_path / f"o{i}"), *args])
        err = capsys.readouterr().err
        if "cuda" in args and "no CUDA device" in err:
            assert code == 2
            continue
        assert code == 2 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_bisect_against_the_oracle_end_to_end(lc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented run: llama.cpp against the fp32 transformers oracle, every layer."""
    code = run(["bisect", "--model", str(lc), "--engine", "llama.cpp", "--prompt",
                "The capital of France is", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["summary"]
    assert out["summary"]["first_divergence"] is None
    assert out["summary"]["pass"] == 453 and out["summary"]["fail"] == 0
    cosines = [r["metrics"]["cosine"] for r in out["records"] if r["metrics"]]
    assert min(cosines) > 0.995  # measured 0.9959: the quantized class (0.99) has room


# --------------------------------------------------------------------------- every family's graph

TOKENS = "1,72,101,108,108,111,44,32,119,111,114,108,100,33"
GEMMA3_TOKENS = "2,818,5279,529,7001,563,496,1651,236764,1144,1217,236761"


def synthetic_gguf(family: str, path: Path, **changes: Any) -> Path:
    from pv.capture.model.export import write_gguf
    from pv.capture.model.load import load_model

    model = load_model(f"synthetic:{family}")
    return write_gguf(replace(model.config, **changes), dict(model.state_dict), path)


def capture_pair(gguf: Path, tokens: str, root: Path, layers: str = "all",
                 fault: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """llama.cpp and pv's engine on the same GGUF, every stage; the two manifests."""
    from pv.capture.model.load import load_model
    from pv.capture.trace import capture

    model = load_model(str(gguf))
    capture(model, engine="llama.cpp", tokens=tokens, stages="all", layers=layers, output=root / "lc",
            fault=fault)
    capture(model, engine="pv", tokens=tokens, stages="all", layers=layers, output=root / "pv")
    return (json.loads((root / "lc" / "manifest.json").read_text()),
            json.loads((root / "pv" / "manifest.json").read_text()))


def check_same_stages(lc_man: dict[str, Any], pv_man: dict[str, Any], masks: bool = True) -> None:
    """Every stage pv's engine wrote, llama.cpp wrote too with the same shape, or declared why not."""
    lc_files = {(f["stage"], f["layer"]): f for f in lc_man["files"]}
    pv_files = {(f["stage"], f["layer"]): f for f in pv_man["files"]}
    declared = {x["stage"]: x["reason"] for x in lc_man["not_applicable"]}
    for key, entry in pv_files.items():
        if key[0] in declared:
            assert key[0] in lc_man["run"]["not_exposed"], (key, declared[key[0]])
            continue
        assert key in lc_files, key
        assert lc_files[key]["shape"] == entry["shape"], key
        assert not masks or lc_files[key].get("mask") == entry.get("mask"), key
    assert set(lc_files) <= set(pv_files)


#: family -> (stages its graph maps beyond the llama graph's common ones, export changes, tokens)
FAMILY_CASES: dict[str, tuple[set[str], dict[str, Any], str]] = {
    "qwen2": ({"qkv_bias"}, {}, TOKENS),
    "qwen3": ({"q_norm", "k_norm"}, {}, TOKENS),
    "qwen3_moe": ({"q_norm", "k_norm", "router_logits", "moe_experts", "moe_weights", "moe_out"}, {},
                  TOKENS),
    # llama.cpp runs Mistral's GGUF in its llama graph, which applies no sliding window:
    # four tokens fit the synthetic window of 4, so both masks agree (see the test below).
    "mistral": (set(), {}, ",".join(TOKENS.split(",")[:4])),
    # Mixtral's GGUF says llama too, and its window goes unapplied as Mistral's does.
    "mixtral": ({"router_logits", "moe_experts", "moe_weights", "moe_out"}, {}, ",".join(TOKENS.split(",")[:4])),
    # llama.cpp scales Gemma 3's scores by head_dim**-0.5 whatever the file says (see below).
    "gemma3": ({"q_norm", "k_norm", "post_attn_norm", "post_ffn_norm"}, {"query_pre_attn_scalar": 16.0},
               TOKENS),
    # Granite's four scalings, read from its GGUF keys by llama.cpp's granite graph.
    "granite": (set(), {}, TOKENS),
    # Phi-3's fused q|k|v and gate|up nodes; llama.cpp's phi3 graph applies no window (as
    # Mistral's llama graph): four tokens fit the synthetic window of 4 (see the test below).
    "phi3": ({"qkv_matmul", "ffn_gate", "ffn_up"}, {}, ",".join(TOKENS.split(",")[:4])),
}


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_synthetic_family_matches_pv_engine(family: str, tmp_path: Path) -> None:
    """F32 GGUFs of each family: every stage pv's engine has is mapped or declared, same shapes,
    float32 agreement (Gemma: float16, for ggml's GELU reads a float16 table)."""
    pytest.importorskip("llama_cpp")
    from pv.compare.diff import diff_captures
    from pv.compare.tolerances import DEFAULTS, Tolerances

    extra, changes, tokens = FAMILY_CASES[family]
    gguf = synthetic_gguf(family, tmp_path / f"{family}.gguf", **changes)
    lc_man, pv_man = capture_pair(gguf, tokens, tmp_path)
    check_same_stages(lc_man, pv_man, masks=family not in ("mistral", "mixtral", "phi3"))
    assert lc_man["run"]["quantization"] == "F32"
    written = {f["stage"] for f in lc_man["files"]}
    assert extra <= written
    assert "attn_out" in written and "attn_scores" in written
    tol = Tolerances(base=asdict(DEFAULTS["float16"])) if family == "gemma3" else None
    report = diff_captures(tmp_path / "lc", tmp_path / "pv", tolerances=tol)
    assert report.ok, [(r.stage, r.layer, r.reasons) for r in report.records if r.bad]
    worst = min(r.metrics.cosine for r in report.records if r.metrics is not None)
    assert worst > (0.99999 if family == "gemma3" else 0.9999999), worst
    if family == "phi3":  # the fused nodes: q|k|v as one row, gate|up split in halves
        by = {(f["stage"], f["layer"]): f["source"] for f in lc_man["files"]}
        assert "wqkv-0 MUL_MAT" in by[("qkv_matmul", 0)] and "ffn_up-0 MUL_MAT" in by[("ffn_gate", 0)]
        assert lc_man["run"]["not_exposed"]["post_attn_residual"]
    if family == "granite":  # pv reads the scaled embedding and logits, and the multiplier's scores
        by = {(f["stage"], f["layer"]): f["source"] for f in lc_man["files"]}
        assert "embd SCALE" in by[("embedding", None)] and "result_output SCALE" in by[("lm_head", None)]
        assert "softmax scale 0.125" in by[("attn_scores", 0)]
    if family == "gemma3":  # the local layers carry the window, and llama.cpp applied it
        masks = {f["layer"]: f.get("mask") for f in lc_man["files"] if f["stage"] == "attn_softmax"}
        assert masks[0] == "sliding_window:4" and masks[2] == "causal"
        probs = np.fromfile(tmp_path / "lc" / "layer-0" / "attn_softmax.bin", dtype="<f4", offset=12)
        probs = probs.reshape(4, 14, 14)
        assert probs[:, 10, :7].max() == 0.0 and probs[:, 10, 7:11].min() > 0.0


def test_mixtral_with_one_tensor_per_expert_is_refused_by_llama_cpp_in_one_line(tmp_path: Path) -> None:
    """The layout Mixtral GGUFs had before llama.cpp stacked the experts: pv's engine reads it
    (test_gguf_experts.py), the llama.cpp pv builds does not, and the error says why."""
    pytest.importorskip("llama_cpp")
    from pv.capture.model.export import write_gguf
    from pv.capture.model.load import load_model
    from pv.capture.trace import capture
    from pv.errors import PvError

    model = load_model("synthetic:mixtral")
    gguf = write_gguf(model.config, dict(model.state_dict), tmp_path / "split.gguf", per_expert=True)
    split = load_model(str(gguf))
    with pytest.raises(PvError, match="llama.cpp could not load this GGUF file \\(experts stored one tensor "
                                      "each, which this llama.cpp no longer reads; pv's engine does\\)$"):
        capture(split, engine="llama.cpp", tokens="1,2,3", stages="all", output=tmp_path / "lc")
    capture(split, engine="pv", tokens="1,2,3", stages="all", output=tmp_path / "pv")


@pytest.mark.parametrize(("family", "tokens", "stage", "layer"), [
    # llama.cpp's llama graph reads no sliding window: past 4 tokens Mistral's softmax differs.
    ("mistral", TOKENS, "attn_softmax", 0),
    # llama.cpp's phi3 graph applies no window either (it turns Phi-3's SWA off).
    ("phi3", TOKENS, "attn_softmax", 0),
    # llama.cpp's Gemma 3 ignores query_pre_attn_scalar (24 here): the scores differ by sqrt(24/16).
    ("gemma3", TOKENS, "attn_scores", 0),
])
def test_known_llama_cpp_differences_are_localised(family: str, tokens: str, stage: str, layer: int,
                                                   tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from pv.compare.bisect import bisect

    gguf = synthetic_gguf(family, tmp_path / f"{family}.gguf")
    capture_pair(gguf, tokens, tmp_path)
    assert bisect(tmp_path / "lc", tmp_path / "pv").first_divergence == {"layer": layer, "stage": stage}
    if family in ("mistral", "phi3"):  # the diagnosis comes with it: the masks each applied
        from pv.compare.diff import diff_captures

        report = diff_captures(tmp_path / "lc", tmp_path / "pv")
        first = next(r for r in report.records if (r.stage, r.layer) == (stage, layer))
        assert "masks differ: A causal, B sliding_window:4" in first.reasons


@pytest.fixture(scope="module")
def gemma3_pair(gemma3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("gemma3lc")
    capture_pair(gemma3_gguf, GEMMA3_TOKENS, root, layers="0..6")
    return root


def test_gemma3_real_weights_every_stage(gemma3_pair: Path) -> None:
    """Gemma 3 270M (Q4_K_M) in llama.cpp's gemma3 graph against pv's fp32 engine on the same
    dequantised weights: every stage mapped or declared, the quantized tolerance class holds."""
    from pv.compare.diff import diff_captures

    lc_man = json.loads((gemma3_pair / "lc" / "manifest.json").read_text())
    pv_man = json.loads((gemma3_pair / "pv" / "manifest.json").read_text())
    check_same_stages(lc_man, pv_man)
    assert lc_man["run"]["quantization"] == "Q4_K - Medium"
    assert lc_man["run"]["graph"] == "gemma3"
    assert set(lc_man["run"]["not_exposed"]) == {"ffn_silu"}
    by = {(f["stage"], f["layer"]): f for f in lc_man["files"]}
    assert "inp_scaled" in by[("embedding", None)]["source"]  # the sqrt(H)-scaled rows
    assert "softmax scale 1" in by[("attn_scores", 0)]["source"]  # 1/16 is applied to Q before kq
    assert by[("attn_softmax", 0)]["mask"] == "sliding_window:512"
    assert by[("attn_softmax", 5)]["mask"] == "causal"  # layer 5 is global
    assert "node_" in by[("attn_out", 0)]["source"]  # unnamed wo output, found through kqv_out
    report = diff_captures(gemma3_pair / "lc", gemma3_pair / "pv")
    assert report.ok, [(r.stage, r.layer, r.reasons) for r in report.records if r.bad]
    recs = {(r.stage, r.layer): r for r in report.records if r.metrics is not None}
    assert recs[("embedding", 0)].metrics.cosine > 0.99999  # type: ignore[union-attr]
    for stage in ("q_norm", "k_norm", "post_attn_norm", "post_ffn_norm", "attn_softmax"):
        assert recs[(stage, 0)].metrics.cosine > 0.995, stage  # type: ignore[union-attr]


@pytest.mark.parametrize(("fault", "stage"), [("post_attn_norm_scaled", "post_attn_norm"),
                                              ("q_norm_scaled", "q_norm")])
def test_gemma3_fault_is_localised(gemma3_gguf: Path, gemma3_pair: Path, tmp_path: Path, fault: str,
                                   stage: str) -> None:
    from pv.capture.trace import capture
    from pv.compare.bisect import bisect

    capture(str(gemma3_gguf), engine="llama.cpp", tokens=GEMMA3_TOKENS, stages="all", layers="0..6",
            output=tmp_path / "faulty", fault=f"{fault}@3")
    result = bisect(tmp_path / "faulty", gemma3_pair / "pv")
    assert result.first_divergence == {"layer": 3, "stage": stage}


def test_a_fault_on_a_fused_node_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Phi-3's ffn_up holds gate and up: scaling it would show at ffn_gate, not at ffn_up."""
    pytest.importorskip("llama_cpp")
    gguf = synthetic_gguf("phi3", tmp_path / "phi3.gguf")
    code = run(["trace", "--engine", "llama.cpp", "--model", str(gguf), "--tokens", "1,2,3",
                "--save-tensor", "all", "--inject-fault", "ffn_up_scaled@1", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "phi3 graph computes ffn_gate and ffn_up in one ffn_up MUL_MAT node" in err, err
    assert len(err.strip().splitlines()) == 1


def test_gemma_fault_on_the_llama_graph_is_a_one_line_error(lc: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["trace", "--engine", "llama.cpp", "--model", str(lc), "--tokens", "1,2,3",
                "--save-tensor", "all", "--inject-fault", "post_attn_norm_scaled@1", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "llama graph has no attn_post_norm MUL node" in err, err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- capture cost


class _Keep:
    """A tap that keeps a copy of every stage."""

    borrow = False

    def __init__(self) -> None:
        self.got: dict[tuple[str, int | None], bytes] = {}

    def wants(self, stage: str, layer: int | None) -> bool:
        return True

    def __call__(self, stage: str, layer: int | None, tensor: Any, **meta: Any) -> None:
        self.got[(stage, layer)] = np.ascontiguousarray(tensor.numpy(), dtype=np.float32).tobytes()

    def not_applicable(self, stage: str, reason: str) -> None:
        pass


def test_one_token_steps_on_one_thread_give_the_same_bytes(lc: Path, smollm2: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A capturing context decodes single tokens on DECODE_THREADS (its graph is cut at every
    captured node, each piece a round trip of the thread pool): every stage of a decode step is
    the same bytes as with two threads; batches (the prefill) keep the threads asked for."""
    from pv.capture.llamacpp.runner import LlamaCppRunner

    ids = [int(x) for x in PROMPT_IDS.split(",")]
    steps: list[list[dict[tuple[str, int | None], bytes]]] = []
    for decode_threads in (1, 2):
        monkeypatch.setattr(LlamaCppRunner, "DECODE_THREADS", decode_threads)
        runner = LlamaCppRunner(lc, smollm2.config, threads=2)
        assert runner.run_info()["llama_cpp"]["threads"] == 2
        assert runner.run_info()["llama_cpp"]["threads_single_token"] == decode_threads
        state, taps = runner.start(), [_Keep(), _Keep(), _Keep()]
        logits = runner.decode(ids, state, taps[0])
        for tap in taps[1:]:
            logits = runner.decode([int(logits[-1].argmax())], state, tap)
        runner.close()
        steps.append([tap.got for tap in taps])
    assert len(steps[0][1]) > 400 and steps[0] == steps[1]
    plain = LlamaCppRunner(lc, smollm2.config, threads=2, capture=False)
    assert plain.decode_threads == 2  # plain generation, as users run it, is left alone
    plain.close()


def test_runners_share_the_loaded_model(lc: Path, smollm2: Any, tmp_path: Path) -> None:
    """Loading the GGUF costs about half a plain generation: runners of one file share one model,
    which stays loaded for the next runner until another file (or this one changed) is asked for."""
    import shutil

    from pv.capture.llamacpp import library
    from pv.capture.llamacpp.runner import LlamaCppRunner

    a = LlamaCppRunner(lc, smollm2.config)
    b = LlamaCppRunner(lc, smollm2.config, capture=False)
    assert a._model == b._model and library._MODELS[a._model_key][1] == 2
    key, handle = a._model_key, a._model
    a.close()
    b.close()
    assert library._MODELS[key] == [handle, 0]  # idle, still loaded
    c = LlamaCppRunner(lc, smollm2.config)
    assert c._model == handle and c.generate([1, 2, 3], 2) == c.generate([1, 2, 3], 2)
    c.close()
    other = tmp_path / "copy.gguf"
    shutil.copyfile(lc, other)
    d = LlamaCppRunner(other, smollm2.config)
    assert key not in library._MODELS  # the idle model of the other file was freed
    d.close()
