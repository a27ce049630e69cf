"""Rendering comparison results: a terminal table and a markdown report.

Both read the same records (:class:`pv.compare.records.StageRecord`); nothing
here computes a metric or a verdict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv.compare.records import PASS, DiffReport, StageRecord

if TYPE_CHECKING:
    from pv.compare.bisect import BisectResult, GenerationBisect
    from pv.compare.isolate import IsolateResult

#: Failing stages whose details are printed without --verbose.
DETAILS = 3

_MARK = {"pass": "ok", "fail": "FAIL", "error": "ERROR", "only_a": "A only", "only_b": "B only"}


def mark(rec: StageRecord) -> str:
    """The verdict column: a stage failed only for a systematic deviation reads ``SYSTEMATIC``."""
    return "SYSTEMATIC" if rec.failure == "systematic" else _MARK[rec.status]


def fmt(x: float, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def fmt_cos(x: float) -> str:
    return f"{x:.6f}" if x > 0.999 else f"{x:.4f}"


def fmt_index(index: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in index.items())


def row(rec: StageRecord) -> list[str]:
    """One table row: stage, status, cosine, worst-position relative error, max |d| at, SQNR."""
    m = rec.metrics
    if m is None:
        return [rec.label, mark(rec), "-", "-", "-", "-", "; ".join(rec.reasons)]
    worst = m.worst_position
    rel = fmt(worst[1]) if worst else fmt(m.rel_err)
    where = f" @{worst[0]}" if worst and worst[1] > 0 and len(m.positions) > 1 else ""
    note = "; ".join(rec.reasons) if rec.status != "pass" else "; ".join(m.notes)
    return [
        rec.label,
        mark(rec),
        fmt_cos(m.cosine),
        rel + where,
        f"{fmt(m.max_abs)} [{fmt_index(m.max_index)}]" if m.max_abs > 0 else "0",
        fmt(m.sqnr_db, 4),
        note,
    ]


HEADERS = ["stage", "verdict", "cosine", "rel.err (worst pos)", "max |d| [at]", "SQNR dB", "why"]


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    widths[-1] = 0  # last column is free text
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * max(w, len(h)) for h, w in zip(headers, widths)))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def diff_text(report: DiffReport, *, verbose: bool = False) -> str:
    """The ``pv diff`` table, followed by notes and a one-line summary."""
    out = [f"A (under test): {report.a}", f"B (reference):  {report.b}", ""]
    out.append(table([row(r) for r in report.records], HEADERS))
    failing = [r for r in report.records if r.metrics is not None and r.status == "fail"]
    details = [r for r in report.records if r.metrics is not None] if verbose else failing[:DETAILS]
    for rec in details:
        out.append("")
        out.extend(detail(rec))
    if not verbose and len(failing) > DETAILS:
        out.append("")
        out.append(
            f"({len(failing) - DETAILS} more failing stages: --verbose shows the details of every stage)"
        )
    notes = [*report.notes, *report.tolerance_notes]
    if notes:
        out.append("")
        out.extend(f"note: {n}" for n in notes)
    hints = report.hints
    if hints:
        out.append("")
        out.extend(f"hint: {h}" for h in hints)
    s = report.summary()
    n_sys = sum(1 for r in report.records if r.failure == "systematic")
    out.append("")
    out.append(
        f"{s['pairs']} pairs compared: {s['pass']} within tolerance, {s['fail']} not"
        + (f" ({n_sys} only for a systematic deviation)" if n_sys else "")
        + f", {s['error']} not comparable, {s['only_a'] + s['only_b']} on one side only"
    )
    return "\n".join(out)


def detail(rec: StageRecord) -> list[str]:
    m = rec.metrics
    assert m is not None
    tol = rec.tolerance
    lines = [
        f"{rec.label}: {mark(rec)}"
        + (
            f" (tolerance cosine>={tol.cosine}, rtol={tol.rtol:g}, atol={tol.atol:g}"
            + (f", systematic scale>={tol.scale_error:g}" if tol.scale_error else "")
            + (f", systematic bias>={tol.bias_error:g}" if tol.bias_error else "")
            + f", dtype {rec.dtype or 'unknown'})"
            if tol
            else ""
        )
    ]
    lines.append(
        f"  n={m.count}  RMS d={fmt(m.rms)}  mean|d|={fmt(m.mean_abs)}  rel={fmt(m.rel_err)}"
        f"  NMSE={fmt(m.nmse)}  RMS ref={fmt(m.ref_rms)}"
    )
    if m.nan_a or m.nan_b or m.inf_a or m.inf_b:
        lines.append(
            f"  NaN A={m.nan_a} B={m.nan_b} (disagree {m.nan_mismatch}); "
            f"Inf A={m.inf_a} B={m.inf_b} (disagree {m.inf_mismatch})"
        )
    for ex in m.nonfinite_examples:
        lines.append(
            f"    non-finite mismatch at [{fmt_index(ex['index'])}]: A={ex['a']} B={ex['b']}"
        )
    for t in m.top:
        lines.append(
            f"    |d|={fmt(t['abs_diff'])} at [{fmt_index(t['index'])}]: A={t['a']:.6g} B={t['b']:.6g}"
        )
    if m.position_cosine and len(m.position_cosine) > 1:
        lines.append(
            "  per-position cosine: "
            + " ".join(fmt_cos(c) for c in m.position_cosine[:32])
            + (" ..." if len(m.position_cosine) > 32 else "")
        )
    if m.head_cosine:
        lines.append("  per-head cosine:     " + " ".join(fmt_cos(c) for c in m.head_cosine))
    for r in rec.reasons:
        lines.append(f"  why: {r}")
    return lines


def _where(d: dict[str, Any] | None) -> str:
    if d is None:
        return "none"
    return d["stage"] if d["layer"] is None else f"layer {d['layer']} {d['stage']}"


def bisect_text(result: BisectResult, *, verbose: bool = False) -> str:
    report = result.report
    out = [diff_text(report, verbose=verbose), ""]
    if result.first is None:
        out.append("no divergence: every compared stage is within tolerance")
    else:
        out.append(f"first divergence: {_where(result.first_divergence)}")
        out.append(f"last good stage:  {_where(result.summary()['last_good'])}")
        if result.first.reasons:
            out.append(f"  because: {'; '.join(result.first.reasons)}")
        later = result.transitions[1:]
        if later:
            out.append(
                "later good->bad transitions: "
                + ", ".join(
                    f"{_where(t.to_dict()['from'])} -> {_where(t.to_dict()['to'])}" for t in later
                )
            )
    return "\n".join(out)


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(
    result: BisectResult,
    *,
    title: str = "pv bisect",
    plot: Path | None = None,
    report_path: Path | None = None,
    isolate: IsolateResult | None = None,
    context: Sequence[str] = (),
) -> str:
    """A self-contained markdown summary: verdict, the picture, the stage table."""
    s = result.summary()
    lines = [f"# {title}", ""]
    lines.extend(f"- {c}" for c in context)
    lines.append(f"- A (under test): `{result.report.a}`")
    lines.append(f"- B (reference): `{result.report.b}`")
    lines.append(
        f"- pairs compared: {s['pairs']} ({s['pass']} within tolerance, {s['fail']} not, "
        f"{s['error']} not comparable)"
    )
    lines.append(f"- **first divergence: {_where(s['first_divergence'])}**")
    lines.append(f"- last good stage: {_where(s['last_good'])}")
    if result.first is not None and result.first.reasons:
        lines.append(f"- why: {_md_escape('; '.join(result.first.reasons))}")
    if len(result.transitions) > 1:
        steps = ", ".join(
            f"{_where(t.to_dict()['from'])} → {_where(t.to_dict()['to'])}"
            for t in result.transitions[1:]
        )
        lines.append(f"- later good→bad transitions: {steps}")
    lines.append("")
    if plot is not None:
        rel = os.path.relpath(plot, report_path.parent) if report_path is not None else str(plot)
        lines += [f"![cosine and error per stage]({Path(rel).as_posix()})", ""]
    if isolate is not None:
        lines += ["## Local vs cumulative error per layer", ""]
        headers, rows = isolate_rows(isolate)
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines.extend("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows)
        lines.append("")
    lines += [
        "## Stages",
        "",
        "| " + " | ".join(_md_escape(h) for h in HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    first = result.first
    for rec in result.report.records:
        cells = [_md_escape(c) for c in row(rec)]
        if first is not None and rec is first:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    said = [f"- note: {_md_escape(n)}" for n in (*result.report.notes, *result.report.tolerance_notes)]
    said += [f"- hint: {_md_escape(h)}" for h in result.report.hints]
    if said:
        lines += ["", *said]
    return "\n".join(lines) + "\n"


def isolate_rows(result: IsolateResult) -> tuple[list[str], list[list[str]]]:
    """Table rows: layer, local verdict and first locally failing stage, local vs cumulative error."""
    headers = [
        "layer",
        "local",
        "first local failure",
        "local cos",
        "local rel.err",
        "cumulative cos",
        "cumulative rel.err",
        "cumulative",
    ]
    rows: list[list[str]] = []
    for x in result.layers:
        out, cum, first = x.output, x.cumulative, x.first_local
        rows.append(
            [
                str(x.layer),
                ("ok" if x.local_ok else "FAIL") if x.records else "-",
                first.stage or "?" if first else ("-" if x.records else x.note),
                fmt_cos(out.metrics.cosine) if out and out.metrics else "-",
                fmt(_worst(out)) if out and out.metrics else "-",
                fmt_cos(cum.metrics.cosine) if cum and cum.metrics else "-",
                fmt(_worst(cum)) if cum and cum.metrics else "-",
                ("ok" if cum.status == PASS else "FAIL") if cum else "-",
            ]
        )
    return headers, rows


def _worst(rec: StageRecord | None) -> float:
    assert rec is not None and rec.metrics is not None
    w = rec.metrics.worst_position
    return w[1] if w else rec.metrics.rel_err


def generation_text(result: GenerationBisect, *, verbose: bool = False) -> list[str]:
    """The per-step table of a generation bisection, then the stage walk inside the step it names."""
    rows = []
    for v in result.steps:
        m = v.logits.metrics if v.logits is not None else None
        rows.append([str(v.step), str(v.position), str(v.token_a), str(v.token_b),
                     "-" if m is None else f"{m.cosine:.6f}", "ok" if v.ok else "FAIL", "; ".join(v.reasons())])
    lines = [table(rows, ["step", "position", "token A", "token B", "log-prob cos", "verdict", "why"])]
    lines.extend(f"note: {n}" for n in result.notes)
    if result.first_step is None and result.stage is not None:
        lines.append(f"outputs within tolerance at every step; first step with a diverging stage: "
                     f"{result.stage_step}")
        lines += ["", f"inside step {result.stage_step}:", bisect_text(result.stage, verbose=verbose)]
    elif result.first_step is None:
        lines.append(f"no divergence over {len(result.steps)} steps")
    else:
        lines.append(f"first divergent step: {result.first_step.step} (position {result.first_step.position})")
        if result.stage is not None and result.stage_step != result.first_step.step:
            lines.append(f"first step with a diverging stage: {result.stage_step}")
        if result.stage is not None:
            lines += ["", f"inside step {result.stage_step}:", bisect_text(result.stage, verbose=verbose)]
    return lines
