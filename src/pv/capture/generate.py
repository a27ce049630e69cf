"""``pv trace --generate N``: the prefill and every decode step, each captured as its own capture.

A generation directory holds ``step-0/`` (the prefill of the prompt), then
``step-1/`` ... ``step-(N-1)/`` (one decode step per new token, on top of the
engine's KV cache), each a normal capture directory with its manifest (its
``run`` block adds ``step``, ``position`` and ``input_tokens``), and
``generate.json`` naming, per step, the tokens fed, the token the step
predicts (greedy), its log-probability and the top five. A step's stages are
members of one ``stages.pack`` (``pv.capture.store.pack``): a decode step's
~480 one-row stages as files cost several times the step's own forward. Step ``t`` predicts
new token ``t + 1``; at a decode step the scores are ``[NH, 1, P + 1]``.

With ``forced`` tokens the engine is fed those instead of its own predictions
(teacher forcing), so two engines can be compared step by step on the same
inputs even after their greedy choices part; each step still records what
the engine itself would have chosen.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pv import files
from pv.capture.disktap import DiskTap
from pv.capture.model.loaded import LoadedModel
from pv.capture.plan import stage_keys
from pv.capture.store.pack import PackWriter
from pv.capture.store.steps import FORMAT, GENERATE_FILE, VERSION, step_dir
from pv.capture.tokens import check_context, check_ids, tokenize
from pv.capture.trace import TracePlan, _provenance_summary, describe_run, make_runner
from pv.errors import PvError


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    prompt: list[int]
    tokens: list[int]  # predicted by the engine, one per step
    fed: list[int]  # what was fed after each step (the predictions, or the forced tokens)
    steps: int
    files: int


def _log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    m = float(x.max())
    return x - (m + float(np.log(np.exp(x - m).sum())))


def _top(lp: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-lp, kind="stable")[:k]`` without sorting the whole vocabulary (4 ms a step)."""
    if lp.size > k:
        kth = np.partition(lp, lp.size - k)[lp.size - k]
        cand = np.flatnonzero(lp >= kth)  # every tie of the k-th value, in index order
        if cand.size >= k:
            return cand[np.argsort(-lp[cand], kind="stable")][:k]
    return np.argsort(-lp, kind="stable")[:k]


def capture_generation(
    plan: TracePlan,
    model: LoadedModel,
    n_new: int,
    *,
    forced: Sequence[int] | None = None,
    on_write: Callable[[str, int | None], None] | None = None,
) -> GenerateResult:
    """Generate ``n_new`` tokens greedily (or feed ``forced``), capturing every step."""
    if n_new < 1:
        raise PvError("--generate needs at least 1 new token")
    if forced is not None and len(forced) < n_new - 1:
        raise PvError(f"forced tokens: {len(forced)} given, {n_new - 1} needed")
    prompt = list(plan.tokens) if plan.tokens is not None else tokenize(model, plan.prompt or "")
    check_ids(prompt, model.config.vocab_size)
    check_context(len(prompt) + n_new - 1, model.config, f"the prompt and {n_new} generated token(s)")
    root = plan.destination
    if root.exists() and any(root.iterdir()):
        raise PvError(f"{root}: output directory is not empty; choose a new one")
    runner = make_runner(plan, model)
    base = describe_run(plan, model, prompt, runner)
    state = runner.start()  # the prefill is the first decode call, on an empty cache
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    predicted: list[int] = []
    fed: list[int] = []
    n_files = 0
    ids = prompt
    position = 0
    try:
        for t in range(n_new):
            run = dict(base, step=t, position=position, input_tokens=ids)
            writer = PackWriter(step_dir(root, t), run)
            tap = DiskTap(plan.capture, writer, on_write=on_write)
            try:
                logits = runner.decode(ids, state, tap)
                tap.finish()
            except BaseException:
                tap.abort()
                writer.abort()
                raise
            writer.run.setdefault("provenance", _provenance_summary(writer.files))
            missing = tap.missing(plan.n_layers)
            if missing:
                raise PvError(f"step {t}: requested stages never fired: "
                              f"{', '.join(stage_keys(missing)[:8])}")
            writer.close()
            n_files += len(writer.files)
            last = np.asarray(logits[-1].detach().float().cpu().numpy())
            lp = _log_softmax(last)
            top = _top(lp, 5)
            guess = int(top[0])
            predicted.append(guess)
            nxt = int(forced[t]) if forced is not None and t < len(forced) else guess
            records.append({"step": t, "dir": step_dir(root, t).name, "position": position,
                            "input": list(ids), "predicted": guess, "logprob": float(lp[guess]),
                            "top": [[int(i), float(lp[i])] for i in top], "fed": nxt})
            fed.append(nxt)
            position += len(ids)
            ids = [nxt]
    except BaseException:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                if child.is_dir() and child.name.startswith("step-"):
                    shutil.rmtree(child, ignore_errors=True)
        raise
    finally:
        runner.close()
    doc = {"format": FORMAT, "version": VERSION, "run": base, "prompt_tokens": prompt,
           "forced": forced is not None, "tokens": predicted, "steps": records}
    files.replace_text(root / GENERATE_FILE, json.dumps(doc, indent=1) + "\n")
    return GenerateResult(root, prompt, predicted, fed, n_new, n_files)
