"""Falsifiers of ``contracts/trace-attn-sub-stages-v1.yaml``.

Each test asserts the prediction of the falsifier it is bound to, against this
project's engine and the transformers oracle, and records the facts (device,
dtype, weights, model fingerprint) that decide how far a pass promotes it.
The algorithm-level tests run on the built-in synthetic model on the CPU. The
live tests repeat the prediction on the real target: SmolLM2's real weights
(all of 002-005) on CUDA (002, 004, 005; the diff of 003 is numpy-only and
needs only real captures). Each skips, saying which fixture is absent, on a
machine without it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pv import stages as stage_table
from pv.errors import PvError
from pv.falsify.plugin import FalsifierRecord, fixture_absent

#: Eight token ids of the synthetic vocabulary (256): short enough to be fast,
#: long enough for a causal matrix with structure.
TOKENS = [3, 17, 42, 101, 7, 250, 64, 9]
SMOLLM2_PROMPT = "The capital of France is"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synthetic() -> Any:
    from pv.capture.model.load import load_model

    return load_model("synthetic")


def _capture(model: Any, out: Path, **kwargs: Any) -> Any:
    from pv.capture.trace import capture

    kwargs.setdefault("tokens", TOKENS)
    return capture(model, output=out, **kwargs)


@pytest.fixture(scope="module")
def pv_clean(synthetic: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _capture(synthetic, tmp_path_factory.mktemp("pv-clean") / "cap")


@pytest.fixture(scope="module")
def hf_reference(synthetic: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _capture(synthetic, tmp_path_factory.mktemp("hf-ref") / "cap", engine="hf")


def _record_run(rec: FalsifierRecord, model: Any, *captures: Any) -> None:
    """Hand the model and the captures to the record: the plugin measures weights, device, dtype."""
    rec.model(model)
    rec.capture(*captures)


def _entries(root: Path) -> list[Any]:
    from pv.capture.store import directory
    return list(directory.open_capture(root).entries)


def _array(entry: Any) -> np.ndarray:
    from pv.capture.store import aprt
    _, values = aprt.read(entry.path, tuple(entry.shape))
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------- 001


@pytest.mark.falsifies("FALSIFY-ATTN-SUB-001")
def test_registry(falsifier_record: FalsifierRecord) -> None:
    names = [s.name for s in stage_table.STAGES]
    for name in ("attn_scores", "attn_softmax"):
        assert name in names
        st = stage_table.BY_NAME[name]
        assert st.layout == ("NH", "S", "S")
        assert st.mask == "causal"
        assert st.scope == "layer"
    # Computation order: k_post_rope < attn_scores < attn_softmax < attention, adjacent.
    order = stage_table.ORDER
    assert order["k_post_rope"] + 1 == order["attn_scores"]
    assert order["attn_scores"] + 1 == order["attn_softmax"]
    assert order["attn_softmax"] + 1 == order["attention"]
    for layer in (0, 3):
        keys = [stage_table.sort_key(s, layer) for s in ("k_post_rope", "attn_scores", "attn_softmax", "attention")]
        assert keys == sorted(keys) and len(set(keys)) == 4
    # Parsing: any case, surrounding spaces, result in computation order.
    parsed = stage_table.parse_stages(" ATTN_SOFTMAX , attn_Scores")
    assert [s.name for s in parsed] == ["attn_scores", "attn_softmax"]
    assert {"attn_scores", "attn_softmax"} <= {s.name for s in stage_table.parse_stages("all")}
    dims = stage_table.Dims(S=5, H=64, NH=4, KVH=2, D=16, I=128, V=256)
    assert stage_table.BY_NAME["attn_scores"].shape(dims) == (4, 5, 5)
    # A misspelt name fails and lists the valid ones.
    with pytest.raises(PvError) as err:
        stage_table.parse_stages("attn_score")
    assert "attn_scores" in str(err.value) and "attn_softmax" in str(err.value)
    falsifier_record.fact("stages", len(names))
    falsifier_record.fact("scope", "registry")


# --------------------------------------------------------------------------- real weights


def _cuda_or_absent() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        fixture_absent("no CUDA device (the live run needs SmolLM2 on CUDA)")
    return torch


@functools.lru_cache(maxsize=1)
def _load_smollm2(path: Path) -> tuple[Any, list[int]]:
    """SmolLM2-135M-Instruct's real weights (the root conftest's ``smollm2_gguf``) and the
    prompt's token ids, loaded once, after the CUDA check of the tests that need a device."""
    from pv.capture.model.load import load_model

    model = load_model(str(path))
    tokens = model.tokenizer.encode(SMOLLM2_PROMPT) if model.tokenizer else list(range(1, 9))
    return model, list(tokens)


# --------------------------------------------------------------------------- 002


def _v_heads(by_key: dict[Any, Any], layer: int, cfg: Any) -> np.ndarray:
    """Values [S, KVH, D], cut from the captured projection (after the bias when there is one)."""
    entry = by_key.get(("qkv_bias", layer)) or by_key[("qkv_matmul", layer)]
    qkv = _array(entry)
    nh, kvh, d = cfg.num_attention_heads, cfg.num_key_value_heads, _head_dim(cfg)
    v = qkv[:, (nh + kvh) * d:]
    return v.reshape(qkv.shape[0], kvh, d)


def _head_dim(cfg: Any) -> int:
    return int(cfg.hidden_size // cfg.num_attention_heads if getattr(cfg, "head_dim", None) is None else cfg.head_dim)


def _check_capture(root: Path, cfg: Any, *, full_scores: bool, s: int = len(TOKENS)) -> dict[str, float]:
    """Every sub-stage against what it must be, recomputed in float64 from its captured inputs.

    scores = q.k^T/sqrt(D) from the captured q/k (GQA mapping); softmax = softmax of the
    masked scores, exactly zero above the diagonal, rows summing to one; attention = p.v
    with v cut from the captured projection. A softmax of wrongly scaled scores, a mask
    off by one or a fused attention kernel that disagrees with its own probabilities
    each break one of these.
    """
    entries = _entries(root)
    keys = [(e.stage, e.layer) for e in entries]
    nh, kvh = cfg.num_attention_heads, cfg.num_key_value_heads
    d = _head_dim(cfg)
    causal = np.tril(np.ones((s, s), dtype=bool))
    worst = {"score_rel_err": 0.0, "softmax_err": 0.0, "row_sum_err": 0.0, "attention_rel_err": 0.0}
    by_key = {(e.stage, e.layer): e for e in entries}
    group = nh // kvh
    heads = np.arange(nh) // group
    for layer in range(cfg.num_hidden_layers):
        seq = [keys.index((name, layer)) for name in ("k_post_rope", "attn_scores", "attn_softmax", "attention")]
        assert seq == sorted(seq), f"layer {layer}: sub-stages out of computation order"
        assert seq[1] + 1 == seq[2], f"layer {layer}: attn_softmax does not follow attn_scores"
        scores_e, probs_e = by_key[("attn_scores", layer)], by_key[("attn_softmax", layer)]
        assert tuple(scores_e.shape) == (nh, s, s) == tuple(probs_e.shape)
        scores, probs = _array(scores_e), _array(probs_e)
        q = _array(by_key[("q_post_rope", layer)])   # [S, NH, D]
        k = _array(by_key[("k_post_rope", layer)])   # [S, KVH, D]
        expect = np.einsum("ihd,jhd->hij", q, k[:, heads, :]) / np.sqrt(d)
        mask = np.broadcast_to(causal, scores.shape) if not full_scores else np.ones(scores.shape, bool)
        err = np.abs(scores - expect)[mask].max() / max(1.0, np.abs(expect[mask]).max())
        assert err < 1e-5, f"layer {layer}: attn_scores differ from q.k^T/sqrt(D) by {err:.3g} (relative)"
        # softmax(mask(scores)), from the captured scores
        masked = np.where(causal, scores, -np.inf)
        ref_p = np.exp(masked - masked.max(axis=-1, keepdims=True))
        ref_p /= ref_p.sum(axis=-1, keepdims=True)
        soft_err = float(np.abs(probs - ref_p).max())
        assert soft_err <= 1e-5, f"layer {layer}: attn_softmax is not softmax(mask(attn_scores)): {soft_err:.3g}"
        upper = probs[np.broadcast_to(~causal, probs.shape)]
        assert not upper.size or float(np.abs(upper).max()) == 0.0, f"layer {layer}: softmax nonzero above the diagonal"
        rows = probs.sum(axis=-1)
        row_err = float(np.abs(rows - 1.0).max())
        assert row_err <= 1e-5, f"layer {layer}: softmax rows sum to 1 within {row_err:.3g} only"
        assert np.all(probs >= 0.0)
        # attention = p . v, heads concatenated
        v = _v_heads(by_key, layer, cfg)
        ref_att = np.einsum("hij,jhd->ihd", probs, v[:, heads, :]).reshape(s, nh * d)
        att = _array(by_key[("attention", layer)]).reshape(s, nh * d)
        att_err = float(np.abs(att - ref_att).max() / max(1.0, np.abs(ref_att).max()))
        assert att_err <= 1e-5, f"layer {layer}: attention differs from softmax . v by {att_err:.3g} (relative)"
        for name, value in (("score_rel_err", float(err)), ("softmax_err", soft_err),
                            ("row_sum_err", row_err), ("attention_rel_err", att_err)):
            worst[name] = max(worst[name], value)
    return worst


def _engines_agree(candidate: Path, reference: Path, model: Any) -> float:
    """The engine's sub-stages against the oracle's, under pv diff's stage verdict; min cosine."""
    from pv.compare.diff import diff_captures

    report = diff_captures(candidate, reference, model=model, stages=["attn_scores", "attn_softmax", "attention"])
    bad = [r.label for r in report.records if r.bad]
    assert report.ok and not bad, f"engine and oracle disagree on {', '.join(bad) or 'nothing compared'}"
    return min(float(r.metrics.cosine) for r in report.compared if r.metrics is not None)


@pytest.mark.falsifies("FALSIFY-ATTN-SUB-002")
def test_capture_emits_sub_stages(synthetic: Any, pv_clean: Any, hf_reference: Any,
                                  falsifier_record: FalsifierRecord) -> None:
    cfg = synthetic.config
    pv_m = _check_capture(pv_clean.output, cfg, full_scores=True)
    hf_m = _check_capture(hf_reference.output, cfg, full_scores=False)
    cosine = _engines_agree(pv_clean.output, hf_reference.output, synthetic)
    _record_run(falsifier_record, synthetic, pv_clean, hf_reference)
    falsifier_record.fact("engines", ["pv", "hf"])
    for side, values in (("pv", pv_m), ("hf", hf_m)):
        for name, value in values.items():
            falsifier_record.metric(f"{side}_{name}", value)
    falsifier_record.metric("min_cosine_pv_vs_hf", cosine)


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.falsifies("FALSIFY-ATTN-SUB-002")
def test_capture_emits_sub_stages_live(smollm2_gguf: Path, tmp_path: Path,
                                      falsifier_record: FalsifierRecord) -> None:
    _cuda_or_absent()
    model, tokens = _load_smollm2(smollm2_gguf)
    cap = _capture(model, tmp_path / "pv", tokens=tokens, device="cuda")
    ref = _capture(model, tmp_path / "hf", tokens=tokens, device="cuda", engine="hf")
    pv_m = _check_capture(cap.output, model.config, full_scores=True, s=len(tokens))
    _check_capture(ref.output, model.config, full_scores=False, s=len(tokens))
    cosine = _engines_agree(cap.output, ref.output, model)
    _record_run(falsifier_record, model, cap, ref)
    for name, value in pv_m.items():
        falsifier_record.metric(f"pv_{name}", value)
    falsifier_record.metric("min_cosine_pv_vs_hf", cosine)


# --------------------------------------------------------------------------- 003


def _diff_sub_stages(candidate: Path, reference: Path, n_layers: int, workdir: Path,
                     capsys: pytest.CaptureFixture[str]) -> list[float]:
    """pv diff on both sub-stages: every layer reported, cosine in [-1, 1], masked part ignored."""
    import shutil

    from pv.capture.store import aprt, directory
    from pv.capture.store.writer import reseal
    from pv.cli import run

    sub = "attn_scores,attn_softmax"
    code = run(["diff", str(candidate), str(reference), "--stages", sub, "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    seen = {(r["stage"], r["layer"]) for r in data["records"]}
    assert seen == {(s, layer) for s in sub.split(",") for layer in range(n_layers)}
    cosines = []
    by_key_a = {(e.stage, e.layer): e for e in directory.open_capture(candidate).entries}
    by_key_b = {(e.stage, e.layer): e for e in directory.open_capture(reference).entries}
    for r in data["records"]:
        cos, rel = r["metrics"]["cosine"], r["metrics"]["rel_err"]
        assert -1.0 <= cos <= 1.0 and np.isfinite(rel), r
        # The reported cosine is the cosine of the causal parts, recomputed here in float64.
        key = (r["stage"], r["layer"])
        a, b = _array(by_key_a[key]), _array(by_key_b[key])
        keep = np.broadcast_to(np.tril(np.ones(a.shape[-2:], dtype=bool)), a.shape)
        want = float(a[keep] @ b[keep] / (np.linalg.norm(a[keep]) * np.linalg.norm(b[keep])))
        assert abs(cos - want) <= 1e-9, f"{key}: pv diff says cosine {cos}, the causal part has {want}"
        cosines.append(cos)
    # A planted scale error in one layer's scores (cosine stays 1) must fail exactly there.
    scaled = workdir / "scaled"
    shutil.copytree(candidate, scaled)
    target = by_key_a[("attn_scores", n_layers - 1)]
    moved = scaled / Path(target.path).relative_to(candidate)
    _, values = aprt.read(moved, tuple(target.shape))
    aprt.write(moved, target.header.layer, np.array(values, dtype=np.float32).reshape(target.shape) * 1.5)
    reseal(scaled)  # as if the engine had written it: pv diff compares only files that match their digests
    code = run(["diff", str(scaled), str(reference), "--stages", sub, "--format", "json"])
    scaled_data = json.loads(capsys.readouterr().out)
    failed = {(r["stage"], r["layer"]) for r in scaled_data["records"] if r["status"] == "fail"}
    assert code == 1 and failed == {("attn_scores", n_layers - 1)}, scaled_data["summary"]
    # Masked positions (key after query) must not count: garbage there changes nothing.
    noisy = workdir / "noisy"
    shutil.copytree(candidate, noisy)
    for e in directory.open_capture(noisy).entries:
        if e.stage == "attn_softmax":
            _, probs = aprt.read(e.path, tuple(e.shape))
            probs = np.array(probs, dtype=np.float32).reshape(e.shape)
            upper = ~np.tril(np.ones(probs.shape[-2:], dtype=bool))
            probs[:, upper] = 123.0
            aprt.write(e.path, e.header.layer, probs)
    reseal(noisy)
    code = run(["diff", str(noisy), str(reference), "--stages", sub, "--format", "json"])
    noisy_data = json.loads(capsys.readouterr().out)
    assert code == 0, noisy_data["summary"]
    noisy_cos = [r["metrics"]["cosine"] for r in noisy_data["records"]]
    assert noisy_cos == cosines
    return cosines


@pytest.mark.falsifies("FALSIFY-ATTN-SUB-003")
def test_diff_reads_sub_stages(synthetic: Any, pv_clean: Any, hf_reference: Any, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], falsifier_record: FalsifierRecord) -> None:
    n_layers = synthetic.config.num_hidden_layers
    cosines = _diff_sub_stages(pv_clean.output, hf_reference.output, n_layers, tmp_path, capsys)
    _record_run(falsifier_record, synthetic, pv_clean, hf_reference)
    falsifier_record.metric("min_cosine", min(cosines))
    falsifier_record.metric("pairs", len(cosines))


@pytest.mark.slow
@pytest.mark.falsifies("FALSIFY-ATTN-SUB-003")
def test_diff_reads_sub_stages_live(smollm2_gguf: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    falsifier_record: FalsifierRecord) -> None:
    """Real weights: the engine's and the transformers oracle's SmolLM2 sub-stages, every layer.

    The diff itself is numpy on the host, so the real target here is real
    captures; they are made on CUDA when there is one, else on the CPU.
    """
    import torch

    model, tokens = _load_smollm2(smollm2_gguf)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stages = "q_post_rope,k_post_rope,attn_scores,attn_softmax"
    cand = _capture(model, tmp_path / "pv", tokens=tokens, device=device, stages=stages)
    ref = _capture(model, tmp_path / "hf", tokens=tokens, device=device, stages=stages, engine="hf")
    cosines = _diff_sub_stages(cand.output, ref.output, model.config.num_hidden_layers, tmp_path, capsys)
    _record_run(falsifier_record, model, cand, ref)
    falsifier_record.metric("min_cosine", min(cosines))
    falsifier_record.metric("pairs", len(cosines))


# --------------------------------------------------------------------------- 004


def _predecessor(stage: str, features: dict[str, bool]) -> str:
    """The stage right before ``stage`` in computation order that the model has."""
    present = [s.name for s in stage_table.LAYER_STAGES if stage_table.applies(s, features)]
    return present[present.index(stage) - 1]


def _localise_all(model: Any, reference: Path, workdir: Path, device: str, tokens: Any) -> tuple[dict[str, Any], Any]:
    """Inject each attention fault; bisect against the reference; return what was found and the
    clean capture.

    Determinism (ATTN-SUB-DET-005): the first fault is captured and bisected a second
    time; both captures must be byte-identical and both bisections name the same stage.
    """
    from pv.capture.faults import ATTENTION_FAULTS, FAULTS, FaultSpec
    from pv.compare.bisect import bisect

    n_layers = model.config.num_hidden_layers
    features = dict(model.config.features)
    found: dict[str, Any] = {}
    for i, name in enumerate(sorted(ATTENTION_FAULTS)):
        fault = FAULTS[name]
        layer = (1 + i) % n_layers  # spread the faults over several layers
        cap = _capture(model, workdir / f"fault-{name}", tokens=tokens, device=device,
                       fault=FaultSpec(fault, layer))
        result = bisect(cap.output, reference, model=model)
        expected = {"layer": layer, "stage": fault.stage}
        assert result.first_divergence == expected, (
            f"{name}@{layer}: bisect named {result.first_divergence}, expected {expected}")
        assert result.last_good is not None and result.last_good.stage == _predecessor(fault.stage, features), (
            f"{name}@{layer}: last good stage {result.last_good and result.last_good.stage}")
        found[f"{name}@{layer}"] = f"{result.last_good.stage}->{fault.stage}"
        if i == 0:
            again = _capture(model, workdir / f"fault-{name}-again", tokens=tokens, device=device,
                             fault=FaultSpec(fault, layer))
            first_files = {e["path"]: e["blake3"] for e in cap.manifest["files"]}
            assert first_files == {e["path"]: e["blake3"] for e in again.manifest["files"]}, \
                f"{name}@{layer}: two captures of the same faulted run differ"
            repeat = bisect(again.output, reference, model=model)
            where = (result.first_divergence, result.last_good.stage, result.last_good.layer)
            assert repeat.last_good is not None and \
                (repeat.first_divergence, repeat.last_good.stage, repeat.last_good.layer) == where, \
                f"{name}@{layer}: a second bisection named {repeat.first_divergence}"
    stages = {FAULTS[n].stage for n in ATTENTION_FAULTS}
    assert {"attn_scores", "attn_softmax"} <= stages, "the catalogue must hit both sub-stages"
    clean = _capture(model, workdir / "clean", tokens=tokens, device=device)
    result = bisect(clean.output, reference, model=model)
    assert result.first_divergence is None and result.ok, f"clean run diverged at {result.first_divergence}"
    return found, clean


@pytest.mark.falsifies("FALSIFY-ATTN-SUB-004")
def test_bisect_localises_faults(synthetic: Any, hf_reference: Any, tmp_path: Path,
                                 falsifier_record: FalsifierRecord) -> None:
    found, clean = _localise_all(synthetic, hf_reference.output, tmp_path, "cpu", TOKENS)
    _record_run(falsifier_record, synthetic, clean, hf_reference)
    falsifier_record.fact("localised", found)
    falsifier_record.metric("faults", len(found))


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.falsifies("FALSIFY-ATTN-SUB-004")
def test_bisect_localises_faults_live(smollm2_gguf: Path, tmp_path: Path,
                                      falsifier_record: FalsifierRecord) -> None:
    _cuda_or_absent()
    model, tokens = _load_smollm2(smollm2_gguf)
    reference = _capture(model, tmp_path / "hf", tokens=tokens, engine="hf", device="cuda")
    found, clean = _localise_all(model, reference.output, tmp_path, "cuda", tokens)
    _record_run(falsifier_record, model, clean, reference)
    falsifier_record.fact("localised", found)
    falsifier_record.metric("faults", len(found))


# --------------------------------------------------------------------------- 005


def _assert_additive(model: Any, tokens: list[int], device: str, workdir: Path, steps: int,
                     rec: FalsifierRecord) -> None:
    """Logits and greedy tokens are byte-identical with no plan and with every stage captured."""
    from pv.capture.engine.runner import Engine

    engine = Engine(model, device=device)
    plain = engine.forward(tokens).cpu().numpy()
    captured = _capture(model, workdir / "full", tokens=tokens, device=device)
    assert captured.files > 0
    assert plain.dtype == captured.logits.dtype and plain.tobytes() == captured.logits.tobytes(), \
        f"logits differ with a full capture plan on {device}"
    greedy = engine.generate(tokens, steps)
    ids: list[int] = []
    for step in range(steps):  # the same greedy loop, every forward fully captured
        out = _capture(model, workdir / f"step-{step}", tokens=tokens + ids, device=device)
        ids.append(int(np.argmax(out.logits[-1])))
    assert ids == greedy, f"greedy tokens differ with capture on {device}: {ids} vs {greedy}"
    _record_run(rec, model, captured)
    rec.fact("greedy_tokens", greedy)
    rec.metric("stage_files", captured.files)


@pytest.mark.falsifies("FALSIFY-ATTN-SUB-005")
def test_capture_is_additive(synthetic: Any, tmp_path: Path, falsifier_record: FalsifierRecord) -> None:
    _assert_additive(synthetic, TOKENS, "cpu", tmp_path, 4, falsifier_record)


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.falsifies("FALSIFY-ATTN-SUB-005")
def test_capture_is_additive_live(smollm2_gguf: Path, tmp_path: Path,
                                  falsifier_record: FalsifierRecord) -> None:
    _cuda_or_absent()
    model, tokens = _load_smollm2(smollm2_gguf)
    _assert_additive(model, tokens, "cuda", tmp_path, 3, falsifier_record)
