"""What a comparison finds, as data: one ``StageRecord`` per stage pair, a ``DiffReport`` per run.

``pv diff`` renders these as a table or JSON, ``pv bisect`` walks them, and a
comparison made while two runners run produces the very same records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import stages as stage_table
from pv.compare import metrics
from pv.compare.systematic import is_systematic
from pv.compare.tolerances import Tolerance

PASS, FAIL, ERROR, ONLY_A, ONLY_B = "pass", "fail", "error", "only_a", "only_b"


@dataclass(frozen=True)
class StageRecord:
    """One stage of one layer: how it compared, or why it could not be."""

    stage: str | None
    layer: int | None
    status: str  # pass | fail | error | only_a | only_b
    metrics: metrics.Metrics | None = None
    tolerance: Tolerance | None = None
    dtype: str | None = None
    reasons: tuple[str, ...] = ()
    path_a: str | None = None
    path_b: str | None = None

    @property
    def compared(self) -> bool:
        return self.status in (PASS, FAIL)

    @property
    def bad(self) -> bool:
        """Counts against the verdict: a failed comparison or a pair that could not be compared."""
        return self.status in (FAIL, ERROR)

    @property
    def failure(self) -> str | None:
        """Why a failed stage failed: ``systematic`` when every reason is a systematic deviation
        (a scale, bias or head under the tolerance's noise, ``pv.compare.systematic``), else
        ``tolerance``; None for any other status."""
        if self.status != FAIL:
            return None
        return "systematic" if self.reasons and all(is_systematic(r) for r in self.reasons) else "tolerance"

    @property
    def label(self) -> str:
        if self.stage is None:
            return Path(self.path_a or self.path_b or "?").name
        name = self.stage
        if self.layer is None or (self.stage and stage_table.BY_NAME[self.stage].whole_model):
            return name
        return f"L{self.layer}.{name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "layer": self.layer,
            "status": self.status,
            "failure": self.failure,
            "dtype": self.dtype,
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "reasons": list(self.reasons),
            "path_a": self.path_a,
            "path_b": self.path_b,
            "metrics": _jsonable(self.metrics.to_dict()) if self.metrics else None,
        }


@dataclass(frozen=True)
class DiffReport:
    a: str
    b: str
    records: tuple[StageRecord, ...]
    notes: tuple[str, ...] = ()
    tolerances: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> list[StageRecord]:
        return [r for r in self.records if r.compared]

    @property
    def ok(self) -> bool:
        return bool(self.compared) and not any(r.bad for r in self.records)

    @property
    def hints(self) -> list[str]:
        """Likely causes the pattern of verdicts suggests (``pv.compare.hints``)."""
        from pv.compare.hints import rope_layout

        return rope_layout(self.records)

    @property
    def tolerance_notes(self) -> list[str]:
        """Tolerance options no compared pair could use, one line each (``pv.compare.hints``)."""
        from pv.compare.hints import unapplied_tolerances

        return unapplied_tolerances(self.tolerances, self.records)

    def summary(self) -> dict[str, Any]:
        counts = {
            s: sum(1 for r in self.records if r.status == s)
            for s in (PASS, FAIL, ERROR, ONLY_A, ONLY_B)
        }
        return {"a": self.a, "b": self.b, "pairs": len(self.compared), **counts, "ok": self.ok}

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "notes": list(self.notes),
            "tolerance_notes": self.tolerance_notes,
            "hints": self.hints,
            "records": [r.to_dict() for r in self.records],
        }


def _jsonable(value: Any) -> Any:
    """Infinities as strings: strict JSON has no Infinity."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
