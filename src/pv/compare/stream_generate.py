"""``pv bisect --model --generate N`` without writing a capture: every decode step compared live.

The reference decodes greedily; at every step both runners take the same
input (the prompt, then the reference's previous prediction, as the
exhaustive path feeds the engine under test the reference's tokens) on their
own KV caches, and the step's stages are compared while they run
(``pv.compare.stream``). Each step keeps what ``generate.json`` would record
(input, position, greedy prediction and its log-probability) and its stage
records, never its tensors; the step walk and the stage walk inside the step
it names are ``pv.compare.bisect.walk_generation``'s, the exhaustive path's
own. Steps after the first step whose output leaves tolerance are not run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from pv.compare.bisect import (
    BisectResult,
    GenerationBisect,
    compare_logprobs,
    walk,
    walk_generation,
)
from pv.compare.bisect_plan import BisectPlan
from pv.compare.pair import side_dtype
from pv.compare.records import StageRecord
from pv.compare.stream import Comparison, Key
from pv.compare.stream_bisect import labels, missing, open_runners, trace_plans
from pv.compare.tolerances import Tolerances


def _step_record(logits: Any, t: int, ids: list[int], position: int) -> dict[str, Any]:
    """What ``generate.json`` records of one step (``pv.capture.generate``)."""
    last = np.asarray(logits[-1].detach().float().cpu().numpy(), dtype=np.float64)
    m = float(last.max())
    lp = last - (m + float(np.log(np.exp(last - m).sum())))
    guess = int(np.argsort(-lp, kind="stable")[0])
    return {"step": t, "position": position, "input": list(ids), "predicted": guess, "logprob": float(lp[guess])}


def stream_generation(plan: BisectPlan, loaded: Any, tols: Tolerances,
                      progress: Callable[[str], Any] | None = None) -> tuple[GenerationBisect, int]:
    """The generation walk, and the most bytes of stage values any step's comparison held at once."""
    from pv.capture.tokens import check_context, check_ids, tokenize

    p_test, p_ref = trace_plans(plan, loaded)
    prompt = list(p_ref.tokens) if p_ref.tokens is not None else tokenize(loaded, p_ref.prompt or "")
    check_ids(prompt, loaded.config.vocab_size)
    check_context(len(prompt) + plan.generate - 1, loaded.config, f"the prompt and {plan.generate} generated token(s)")
    label_a, label_b = labels(plan)
    opened: list[Any] = []
    steps: list[tuple[dict[str, Any], dict[str, Any]]] = []
    logits: list[StageRecord | None] = []
    walks: list[BisectResult] = []
    peak = 0
    try:
        r_test, r_ref, base = open_runners(p_test, p_ref, loaded, prompt, opened)
        states = (r_test.start(), r_ref.start())
        ids, position = prompt, 0
        from pv.compare.stream import progress_line

        with progress_line(progress, f"pv bisect: decoding {plan.generate} step(s) with {plan.engine} and "
                           f"{plan.reference} while they run", "stages") as line:
            for t in range(plan.generate):
                runs = (dict(base[0], step=t, position=position, input_tokens=ids),
                        dict(base[1], step=t, position=position, input_tokens=ids))
                heads: dict[str, tuple[np.ndarray, list[int], str | None]] = {}

                def on_take(label: str, key: Key, values: np.ndarray, record: dict[str, Any],
                            runs: tuple[dict[str, Any], dict[str, Any]] = runs,
                            heads: dict[str, tuple[np.ndarray, list[int], str | None]] = heads) -> None:
                    if key == ("lm_head", None):
                        run = runs[0] if label == label_a else runs[1]
                        heads[label] = (values, record["shape"], side_dtype(record, {"run": run}))

                def on_stage(label: str, stage: str, layer: int | None) -> None:
                    if label == label_b:
                        line.step(stage, layer)

                comparison = Comparison(p_ref.capture, config=plan.config, tolerances=tols, labels=(label_a, label_b),
                                        runs=runs, on_take=on_take, on_stage=on_stage,
                                        whole=lambda _, key: key == ("lm_head", None))
                streamed = comparison.run(functools.partial(_decode, r_test, ids, states[0]),
                                          functools.partial(_decode, r_ref, ids, states[1]))
                peak = max(peak, comparison.peak_held)
                for side, trace, taken in zip((label_a, label_b), (p_test, p_ref), comparison.sides):
                    missing(f"{side}, step {t}", trace, comparison.fired(taken), taken.not_applicable)
                sa = _step_record(streamed.result_a, t, ids, position)
                sb = _step_record(streamed.result_b, t, ids, position)
                steps.append((sa, sb))
                walks.append(walk(streamed.report))
                ha, hb = heads.get(label_a), heads.get(label_b)
                logits.append(None if ha is None or hb is None else
                              compare_logprobs(ha[:2], hb[:2], ha[2], hb[2], tols))
                if not _step_ok(sa, sb, logits[-1]):
                    break  # the exhaustive walk stops at this step too: later ones are never read
                position += len(ids)
                ids = [sb["predicted"]]  # both sides are fed the reference's greedy choice
    finally:
        for runner in reversed(opened):
            runner.close()
    return walk_generation(label_a, label_b, steps, lambda t: logits[t], lambda t: walks[t], []), peak


def _decode(runner: Any, ids: list[int], state: Any, tap: Any) -> Any:
    return runner.decode(ids, state, tap, last=True)  # a step record reads the last row only


def _step_ok(sa: dict[str, Any], sb: dict[str, Any], compared: StageRecord | None) -> bool:
    return sa["input"] == sb["input"] and sa["predicted"] == sb["predicted"] and (compared is None or not compared.bad)


__all__ = ["stream_generation"]
