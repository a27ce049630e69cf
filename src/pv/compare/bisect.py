"""Name the first stage where two captures diverge, and every later good-to-bad step.

Bisection here is a walk, not a binary search: the captures are already on
disk and the walk is cheap, while the cosine of stages downstream of a bug is
not monotone (a residual add can wash an error out, the next projection can
bring it back), so halving would jump over the stage that matters. The walk
follows computation order (embedding, layer 0 stages, layer 1 ..., final
norm, logits) over the records of :func:`pv.compare.diff.diff_captures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import stages as stage_table
from pv.capture import aprt
from pv.compare.diff import DiffReport, StageRecord, diff_captures
from pv.compare.tolerances import Tolerances


@dataclass(frozen=True)
class Transition:
    """A good stage followed (skipping one-sided ones) by a bad one."""

    good: StageRecord | None
    bad: StageRecord

    def to_dict(self) -> dict[str, Any]:
        return {"from": _where(self.good), "to": _where(self.bad)}


def _where(r: StageRecord | None) -> dict[str, Any] | None:
    if r is None:
        return None
    whole = r.stage is not None and stage_table.BY_NAME[r.stage].whole_model
    return {"layer": None if whole else r.layer, "stage": r.stage}


@dataclass(frozen=True)
class BisectResult:
    report: DiffReport
    first: StageRecord | None
    last_good: StageRecord | None
    transitions: tuple[Transition, ...]

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        return _where(self.first)

    @property
    def ok(self) -> bool:
        return self.report.ok

    def summary(self) -> dict[str, Any]:
        return {
            **self.report.summary(),
            "first_divergence": self.first_divergence,
            "last_good": _where(self.last_good),
            "transitions": [t.to_dict() for t in self.transitions],
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out["summary"] = self.summary()
        return out


def walk(report: DiffReport) -> BisectResult:
    """Find the first bad record, the good one before it, and all good-to-bad steps."""
    first: StageRecord | None = None
    last_good: StageRecord | None = None
    previous: StageRecord | None = None
    transitions: list[Transition] = []
    for rec in report.records:
        if not (rec.compared or rec.bad):
            continue  # one-sided: reported in the table, no verdict
        if rec.bad:
            if first is None:
                first, last_good = rec, previous
            if previous is None or not previous.bad:
                transitions.append(Transition(previous, rec))
        previous = rec
    return BisectResult(report, first, last_good, tuple(transitions))


def bisect(
    a: str | Path | aprt.Capture,
    b: str | Path | aprt.Capture,
    *,
    model: Any = None,
    tolerances: Tolerances | None = None,
) -> BisectResult:
    """Compare capture ``a`` (under test) with ``b`` (reference) and walk to the first divergence."""
    return walk(diff_captures(a, b, model=model, tolerances=tolerances))
