"""``pv bisect --model`` without writing a capture: both runners compared while they run.

The engine under test and the reference run side by side on their own threads
(``pv.compare.stream``); each pair of stages is compared in memory as soon as
both exist and then dropped, so nothing reaches the disk and memory stays near
a few stages per side at any sequence length or depth. The walk, the
transitions, every row's metrics and verdict, ``--plot``, ``--report`` and the
JSON are those of the exhaustive walk over two full captures (only the file
paths, which do not exist, differ). ``--isolate`` reruns each layer of the
engine under test from the reference's input as soon as the reference has
finished that layer, keeping one layer of the reference at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.compare.bisect import BisectResult, walk
from pv.compare.bisect_plan import BisectPlan
from pv.compare.isolate import IsolateResult, LayerIsolation, isolate_layer, layer_input
from pv.compare.stream import Comparison, Key, Streamed
from pv.compare.tolerances import Tolerances
from pv.errors import PvError


def labels(plan: BisectPlan) -> tuple[str, str]:
    return f"{plan.engine} (under test, in memory)", f"{plan.reference} (reference, in memory)"


def trace_plans(plan: BisectPlan, loaded: Any) -> tuple[Any, Any]:
    """The two runs (engine under test, reference), checked, writing nowhere."""
    from pv.capture.trace import make_plan as trace_plan

    common: dict[str, Any] = {"tokens": plan.tokens, "prompt": plan.prompt if plan.tokens is None else None,
                              "device": plan.device, "dtype": plan.dtype, "output": None}
    return (trace_plan(loaded.source, loaded.config, engine=plan.engine, fault=plan.fault, **common),
            trace_plan(loaded.source, loaded.config, engine=plan.reference, **common))


def open_runners(p_test: Any, p_ref: Any, loaded: Any, ids: list[int],
                 opened: list[Any]) -> tuple[Any, Any, tuple[dict[str, Any], dict[str, Any]]]:
    """Both sides' runners (the reference loaded first), each added to ``opened`` for the caller to
    close, and their manifest run blocks for ``ids``."""
    from pv.capture.trace import describe_run, make_runner

    r_ref = make_runner(p_ref, loaded)
    opened.append(r_ref)
    r_test = make_runner(p_test, loaded)
    opened.append(r_test)
    return r_test, r_ref, (describe_run(p_test, loaded, ids, r_test), describe_run(p_ref, loaded, ids, r_ref))


def missing(streamed_side: Any, trace: Any, fired: set[Key], not_applicable: Mapping[str, str]) -> None:
    """The exhaustive capture's check: every requested stage fired or was declared not applicable."""
    from pv.capture.plan import stage_keys

    gone = [k for k in trace.expected if k not in fired and k[0] not in not_applicable]
    if gone:
        names = stage_keys(gone)
        raise PvError(f"{streamed_side}: requested stages never fired: {', '.join(names[:8])}"
                      + (f" (+{len(names) - 8} more)" if len(names) > 8 else ""))


class LayerIsolator:
    """``--isolate`` while streaming: keeps the reference's current layer and reruns it when done."""

    def __init__(self, engine: Any, *, tolerances: Tolerances, config: Any, run: Mapping[str, Any]) -> None:
        self.engine, self.tols, self.config, self.run = engine, tolerances, config, run
        self.n_layers = int(config.num_hidden_layers)
        self.inputs: dict[tuple[str, int], np.ndarray] = {}
        self.layer: int | None = None
        self.stages: dict[str, tuple[np.ndarray, str | None]] = {}
        self.done: dict[int, LayerIsolation] = {}

    def take(self, key: Key, values: np.ndarray, record: dict[str, Any]) -> None:
        """A reference stage, in computation order."""
        from pv.compare.pair import side_dtype

        stage, layer = key
        st = stage_table.get(stage)
        if st.whole_model or stage == "embedding":
            self.finish()
        elif layer != self.layer:
            self.finish()
            self.layer = layer
        if not st.whole_model and stage != "embedding":
            self.stages[stage] = (values, side_dtype(record, {"run": dict(self.run)}))
        if stage in ("embedding", "post_ffn_residual"):
            self.inputs[(stage, layer or 0)] = values

    def finish(self) -> None:
        """Rerun the layer held, if any, and let its values go."""
        if self.layer is None:
            return
        layer, self.layer, stages, self.stages = self.layer, None, self.stages, {}
        src = layer_input(layer)
        hidden = self.inputs.pop(src, None)
        if hidden is None:
            self.done[layer] = LayerIsolation(layer, (), None, note=f"reference has no {src[0]} for layer "
                                                                     f"{src[1]}: not rerun")
            return
        self.done[layer] = isolate_layer(self.engine, layer, hidden, stages, tolerances=self.tols, config=self.config)

    def result(self, report: Any) -> IsolateResult:
        self.finish()
        cum = {(r.stage, r.layer): r for r in report.records}
        out = []
        for layer in range(self.n_layers):
            found = self.done.get(layer)
            if found is None:
                src = layer_input(layer)
                found = LayerIsolation(layer, (), None, note=f"reference has no {src[0]} for layer {src[1]}: not rerun")
            out.append(replace(found, cumulative=cum.get(("post_ffn_residual", layer))))
        return IsolateResult(tuple(out))


def stream_forward(plan: BisectPlan, loaded: Any, tols: Tolerances,
                   progress: Callable[[str], Any] | None = None) -> tuple[BisectResult, IsolateResult | None, int]:
    """Both sides of ``plan`` run and compared in memory: the walk, ``--isolate``'s layers, and the
    most bytes of stage values the comparison held at once."""
    from pv.capture.tokens import check_context, check_ids, tokenize
    from pv.compare import sides

    p_test, p_ref = trace_plans(plan, loaded)
    ids = list(p_ref.tokens) if p_ref.tokens is not None else tokenize(loaded, p_ref.prompt or "")
    check_ids(ids, loaded.config.vocab_size)
    check_context(len(ids), loaded.config)
    opened: list[Any] = []
    try:
        r_test, r_ref, runs = open_runners(p_test, p_ref, loaded, ids, opened)
        isolator = None
        if plan.isolate:
            from pv.capture.runners import Settings

            again = sides.rerunnable(plan, None, loaded)
            cfg = loaded.config
            engine = again.kind.load(loaded, Settings(device=plan.device, dtype=again.dtype, fault=again.kind.fault(
                again.fault, cfg.num_hidden_layers, cfg.features)))
            opened.append(engine)
            isolator = LayerIsolator(engine, tolerances=tols, config=cfg, run=runs[1])
        from pv.compare.stream import progress_line

        with progress_line(progress, f"pv bisect: comparing {plan.engine} with {plan.reference} while they run",
                           "stages") as line:
            def on_stage(label: str, stage: str, layer: int | None) -> None:
                if label == labels(plan)[1]:
                    line.step(stage, layer)

            def on_take(label: str, key: Key, values: np.ndarray, record: dict[str, Any]) -> None:
                if isolator is not None and label == labels(plan)[1]:
                    isolator.take(key, values, record)

            comparison = Comparison(p_ref.capture, config=plan.config, tolerances=tols, labels=labels(plan),
                                    runs=runs, on_stage=on_stage, on_take=on_take,
                                    whole=None if isolator is None else lambda label, _: label == labels(plan)[1])
            # The logits each runner returns are not read: the last row only, so [S, V] is never whole.
            streamed: Streamed = comparison.run(lambda tap: r_test.forward(ids, tap, last=True),
                                                lambda tap: r_ref.forward(ids, tap, last=True))
        for side, trace, taken in zip(labels(plan), (p_test, p_ref), comparison.sides):
            missing(side, trace, comparison.fired(taken), taken.not_applicable)
        result = walk(streamed.report)
        return result, isolator.result(result.report) if isolator is not None else None, comparison.peak_held
    finally:
        for runner in reversed(opened):
            runner.close()


__all__ = ["LayerIsolator", "labels", "open_runners", "stream_forward", "trace_plans"]
