"""The one comparison of a stage pair: plan the view, measure, judge.

Files (``pv diff``), tensors in memory (a bisection comparing two runners
while they run, ``--isolate``) and stages that arrive in parts (the attention
matrices at long S, measured by ``pv.compare.feed.Feed``) all go through
``open_pair`` and ``close_pair``, so a stage gets the same metrics and the
same verdict whichever way its values arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pv.capture.model.config import ModelConfig
from pv.capture.store import aprt
from pv.compare import align, metrics
from pv.compare.records import ERROR, FAIL, PASS, StageRecord
from pv.compare.tolerances import Tolerance, Tolerances, dtype_class, judge, looser
from pv.errors import PvError


def side_dtype(entry_meta: dict[str, Any], manifest: dict[str, Any] | None) -> str | None:
    """The dtype class a side's stage is judged in: its run's quantization, else its captured dtype."""
    run = (manifest or {}).get("run") or {}
    for value in (run.get("weights_dtype"), run.get("quantization")):
        if dtype_class(value) == "quantized":
            return "quantized"
    # A float32 tensor of a half-precision run (Mixtral's routing weights) carries the
    # run's rounding from its inputs: it is judged by the looser of the two classes.
    return looser(dtype_class(entry_meta.get("dtype_captured")), dtype_class(run.get("dtype")))


@dataclass(frozen=True)
class OpenPair:
    """A pair that can be measured: the view of its values and the tolerance that judges it."""

    stage: str | None
    layer: int | None
    view: align.View
    tolerance: Tolerance
    dtype: str | None
    paths: tuple[str | None, str | None]

    def close(self, measured: metrics.Metrics | None, problem: str | None = None) -> StageRecord:
        """The record: an error when ``problem`` says why the values could not be measured, else judged."""
        pa, pb = self.paths
        if problem or measured is None:
            return StageRecord(self.stage, self.layer, ERROR, reasons=(problem or "not measured",), path_a=pa,
                               path_b=pb, dtype=self.dtype)
        verdict = judge(measured, self.tolerance)
        return StageRecord(self.stage, self.layer, PASS if verdict.ok else FAIL, measured, self.tolerance,
                           self.dtype, verdict.reasons, pa, pb)


def open_pair(a: align.Side, b: align.Side, *, config: ModelConfig | None, tolerances: Tolerances | None = None,
              tolerance: Tolerance | None = None,
              paths: tuple[str | None, str | None] = (None, None)) -> OpenPair | StageRecord:
    """The pair's view and tolerance, or an error record when the two cannot be compared (shapes,
    layouts or layers differ)."""
    stage = a.stage or b.stage
    dtype = looser(a.dtype, b.dtype)
    try:
        view = align.plan_view(a, b, config)
    except align.PairError as exc:
        return StageRecord(stage, a.layer, ERROR, reasons=(str(exc),), path_a=paths[0], path_b=paths[1], dtype=dtype)
    tol = tolerance if tolerance is not None else (tolerances or Tolerances()).for_stage(stage, dtype)
    return OpenPair(stage, a.layer, view, tol, dtype, paths)


def compare_values(
    a: align.Side,
    b: align.Side,
    values: Callable[[], tuple[metrics.Values, metrics.Values]],
    *,
    config: ModelConfig | None,
    tolerances: Tolerances | None = None,
    tolerance: Tolerance | None = None,
    top_k: int = 5,
    chunk: int = metrics.CHUNK,
    paths: tuple[str | None, str | None] = (None, None),
) -> StageRecord:
    """Compare a pair whose values are at hand: ``values()`` (called only once the pair can be
    compared) gives arrays or chunked readers; ``tolerance`` (else ``tolerances.for_stage``) judges
    it. Never raises for a bad pair."""
    opened = open_pair(a, b, config=config, tolerances=tolerances, tolerance=tolerance, paths=paths)
    if isinstance(opened, StageRecord):
        return opened
    m: metrics.Metrics | None = None
    try:
        va, vb = values()
        try:
            m = metrics.compare(va, vb, opened.view, top_k=top_k, chunk=chunk)
            problem = aprt.verified(va, vb)  # readers' digests end with the pass; a failed one drops m
        finally:
            aprt.close_readers(va, vb)
    except PvError as exc:
        problem = str(exc) or type(exc).__name__
    return opened.close(None if problem else m, problem)


__all__ = ["OpenPair", "compare_values", "open_pair", "side_dtype"]
