"""The metric registry: one row per scalar summary of a comparison, and which way is better.

Reports and plots name metrics by these rows, so adding a summary metric is one
row here (``Metrics`` already carries the sums it is read from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pv.compare.metrics import Metrics


@dataclass(frozen=True)
class MetricDef:
    """One scalar summary metric: how to read it off ``Metrics`` and which way is better."""

    name: str
    label: str
    higher_is_better: bool
    get: Callable[[Metrics], float]
    doc: str


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            "cosine",
            "cosine",
            True,
            lambda m: m.cosine,
            "direction agreement; blind to a uniform scale",
        ),
        MetricDef(
            "sqnr",
            "SQNR dB",
            True,
            lambda m: m.sqnr_db,
            "10 log10(sum b^2 / sum d^2); +inf when identical",
        ),
        MetricDef(
            "rel_err",
            "relative RMS error",
            False,
            lambda m: m.rel_err,
            "RMS(a-b) / RMS(b): sees scale errors that cosine cannot",
        ),
        MetricDef("max_abs", "max |d|", False, lambda m: m.max_abs, "largest absolute difference"),
        MetricDef("rms", "RMS d", False, lambda m: m.rms, "root mean square of the difference"),
        MetricDef("mean_abs", "mean |d|", False, lambda m: m.mean_abs, "mean absolute difference"),
        MetricDef("nmse", "NMSE", False, lambda m: m.nmse, "sum d^2 / sum b^2"),
    )
}


def get_metric(name: str) -> MetricDef:
    """Look a metric up case-insensitively; an unknown name lists the valid ones."""
    from pv.errors import PvError

    key = name.strip().lower()
    if key not in METRICS:
        raise PvError(f"unknown metric '{name}'; valid names: {', '.join(METRICS)}")
    return METRICS[key]
