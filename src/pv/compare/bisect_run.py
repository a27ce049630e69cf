"""Running a bisection plan: capture both sides where asked, walk, isolate, draw, report.

``run(plan)`` returns a ``BisectRun`` (data); ``pv bisect`` only renders it.
With a model and no A B, both sides are captured first, into ``keep`` or a
temporary folder removed afterwards: the reference, then the engine under
test (with ``--generate``, the reference generates greedily and the engine
under test is fed the reference's tokens, so both see the same input at every
step). With A B, what each side ran is read from its manifest, so the context
lines name the engines and input that made the files, and ``--isolate`` reruns
the engine that wrote A (with the fault its manifest records) where pv can.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import files
from pv.compare.bisect import BisectResult, GenerationBisect
from pv.compare.bisect_plan import BisectPlan
from pv.compare.isolate import IsolateResult
from pv.compare.stream import Progress, progress_line
from pv.compare.tolerances import Tolerances
from pv.errors import PvError


@dataclass(frozen=True)
class BisectRun:
    """A finished bisection: the stage walk (or the generation walk), isolation, and what was written."""

    plan: BisectPlan
    a: Path
    b: Path
    result: BisectResult | None = None
    generation: GenerationBisect | None = None
    isolate: IsolateResult | None = None
    #: Lines naming the model, the engines and the input (for people; markdown-ready).
    context: tuple[str, ...] = ()
    #: When both sides were compared while they ran: the most bytes of stage values held at once.
    held_bytes: int | None = None

    @property
    def ok(self) -> bool:
        walked = self.generation if self.generation is not None else self.result
        return bool(walked is not None and walked.ok)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = (self.generation.to_dict() if self.generation is not None
                               else self.result.to_dict() if self.result is not None else {})
        if self.isolate is not None:
            out["isolate"] = self.isolate.to_dict()
        kept = [str(self.a), str(self.b)] if self.plan.keep else None
        out["files"] = ({"captures": kept} if self.generation is not None else
                        {"plot": str(self.plan.plot) if self.plan.plot else None,
                         "report": str(self.plan.report) if self.plan.report else None, "captures": kept})
        return out


def capture_both(plan: BisectPlan, loaded: Any, root: Path, progress: Progress | None = None) -> tuple[Path, Path]:
    """The reference into ``root/reference``, then the engine under test into ``root/test``."""
    from pv.capture.trace import capture

    test_dir, ref_dir = root / "test", root / "reference"
    common: dict[str, Any] = {"tokens": plan.tokens, "prompt": plan.prompt if plan.tokens is None else None,
                              "device": plan.device, "dtype": plan.dtype}
    if plan.generate:
        from pv.capture.generate import capture_generation
        from pv.capture.trace import make_plan as trace_plan

        with progress_line(progress, f"pv bisect: generating {plan.generate} token(s) with the reference "
                                 f"({plan.reference})") as shown:
            ref = capture_generation(trace_plan(loaded.source, loaded.config, engine=plan.reference,
                                                output=ref_dir, **common),
                                     loaded, plan.generate, on_write=shown.step)
        with progress_line(progress, f"pv bisect: feeding them to the engine under test ({plan.engine})") as shown:
            capture_generation(trace_plan(loaded.source, loaded.config, engine=plan.engine, output=test_dir,
                                          fault=plan.fault, **common),
                               loaded, plan.generate, forced=ref.fed, on_write=shown.step)
        return test_dir, ref_dir
    with progress_line(progress, f"pv bisect: capturing the reference ({plan.reference})") as shown:
        capture(loaded, engine=plan.reference, output=ref_dir, on_write=shown.step, **common)
    with progress_line(progress, f"pv bisect: capturing the engine under test ({plan.engine})") as shown:
        capture(loaded, engine=plan.engine, output=test_dir, fault=plan.fault, on_write=shown.step, **common)
    return test_dir, ref_dir


#: Written into ``--keep DIR`` when the run stopped before both captures were complete.
INCOMPLETE = "INCOMPLETE"


@contextmanager
def _workspace(plan: BisectPlan) -> Iterator[Path]:
    if plan.keep is not None:
        plan.keep.mkdir(parents=True, exist_ok=True)
        try:
            yield plan.keep
        except BaseException as exc:
            # What was written stays (the caller asked to keep it), marked so nobody takes it for whole.
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            files.replace_text(plan.keep / INCOMPLETE, f"pv bisect stopped before both captures were complete: "
                                                       f"{type(exc).__name__}: {why}\n")
            raise
        return
    tmp = Path(tempfile.mkdtemp(prefix="pv-bisect-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(plan: BisectPlan, tolerances: Tolerances | None = None, *, progress: Progress | None = None) -> BisectRun:
    """Carry out ``plan`` (``pv.compare.bisect_plan.make_plan``); ``PvError`` on trouble."""
    from pv.capture.model.load import load_model

    tols = tolerances or Tolerances()
    if plan.a is not None and plan.b is not None:
        loaded = load_model(plan.model) if plan.isolate and plan.model else None
        return _finish(plan, plan.a, plan.b, tols, loaded)
    loaded = load_model(plan.model or "synthetic")
    if plan.streams:
        return _streamed(plan, loaded, tols, progress)
    with _workspace(plan) as root:
        a, b = capture_both(plan, loaded, root, progress)
        return _finish(plan, a, b, tols, loaded)


def _streamed(plan: BisectPlan, loaded: Any, tols: Tolerances, progress: Progress | None) -> BisectRun:
    """Both sides compared while they run: nothing written (``pv.compare.stream_bisect``)."""
    from pv.compare import sides
    from pv.compare.stream_bisect import labels, stream_forward

    a, b = (Path(x) for x in labels(plan))
    context = tuple(sides.context(plan, a, b))
    if plan.generate:
        from pv.compare.stream_generate import stream_generation

        walked, peak = stream_generation(plan, loaded, tols, progress)
        return BisectRun(plan, a, b, generation=walked, context=context, held_bytes=peak)
    result, iso, peak = stream_forward(plan, loaded, tols, progress)
    done = BisectRun(plan, a, b, result, None, iso, context, peak)
    _write_outputs(done)
    return done


def _finish(plan: BisectPlan, a: Path, b: Path, tols: Tolerances, loaded: Any) -> BisectRun:
    from pv.compare import sides

    context = tuple(sides.context(plan, a, b))
    if plan.generate:
        from pv.compare.bisect import bisect_generation

        walked = bisect_generation(a, b, model=plan.config, tolerances=tols, max_steps=plan.generate,
                                   verify=plan.verify)
        return BisectRun(plan, a, b, generation=walked, context=context)
    from pv.capture.store import directory
    from pv.compare.bisect import bisect

    ref_capture = directory.open_capture(b)
    result = bisect(a, ref_capture, model=plan.config, tolerances=tols, verify=plan.verify)
    iso = _isolate(plan, a, ref_capture, result, tols, loaded) if plan.isolate and loaded is not None else None
    done = BisectRun(plan, a, b, result, None, iso, context)
    _write_outputs(done)
    return done


def _isolate(plan: BisectPlan, a: Path, ref_capture: Any, result: BisectResult, tols: Tolerances,
             loaded: Any) -> IsolateResult:
    """Rerun the engine under test layer by layer from the reference's inputs."""
    from pv.capture.runners import Settings
    from pv.compare import sides
    from pv.compare.isolate import isolate

    again = sides.rerunnable(plan, a, loaded)
    cfg = loaded.config
    engine = again.kind.load(loaded, Settings(device=plan.device, dtype=again.dtype, fault=again.kind.fault(
        again.fault, cfg.num_hidden_layers, cfg.features)))
    try:
        return isolate(engine, ref_capture, cumulative=result.report, tolerances=tols, config=cfg,
                       verify=plan.verify)
    finally:
        engine.close()


def title(plan: BisectPlan) -> str:
    return "pv bisect" + (f" ({plan.fault})" if plan.fault else "")


def _write_outputs(done: BisectRun) -> None:
    """The heatmap and the markdown report the plan asks for."""
    plan = done.plan
    assert done.result is not None
    if plan.plot is not None:
        from pv.compare.plot import plot_bisect

        plot_bisect(done.result, plan.plot, metric=plan.metric, title=title(plan))
    if plan.report is not None:
        from pv.compare.report import markdown

        text = markdown(done.result, title=title(plan), plot=plan.plot, report_path=plan.report,
                        isolate=done.isolate, context=done.context)
        try:
            files.replace_text(plan.report, text)
        except OSError as exc:
            raise PvError(f"{plan.report}: cannot write report: {exc.strerror or exc}") from None


__all__ = ["BisectRun", "Progress", "capture_both", "run", "title"]
