"""The bisect picture: a layers x stages heatmap and the divergent layer's stage sequence.

Cosine near 1 is unreadable on a linear colour scale (0.99999 and 0.999 look
the same), so the heatmap shows either SQNR in dB or "cosine nines",
``-log10(1 - cosine)``, both of which spread the interesting range. Identical
tensors (SQNR +inf) are clipped to the top of the scale and labelled as such.
matplotlib is imported here only, with the Agg backend, so nothing else pays
for it and no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pv import stages as stage_table
from pv.errors import PvError, require

if TYPE_CHECKING:
    from pv.compare.bisect import BisectResult
    from pv.compare.records import StageRecord

PLOT_METRICS = ("sqnr", "cosine")
#: Top of the colour scale: SQNR dB, or cosine nines.
_CAP = {"sqnr": 140.0, "cosine": 12.0}


def value(rec: StageRecord, metric: str) -> float:
    """The plotted number for one record (NaN when it was not compared)."""
    m = rec.metrics
    if m is None:
        return math.nan
    if metric == "sqnr":
        return min(m.sqnr_db, _CAP["sqnr"]) if m.sqnr_db != -math.inf else -20.0
    gap = 1.0 - m.cosine
    return _CAP["cosine"] if gap <= 10 ** -_CAP["cosine"] else min(-math.log10(gap), _CAP["cosine"])


def _grid(
    result: BisectResult, metric: str
) -> tuple[np.ndarray, list[str], list[str], dict[tuple[int, int], StageRecord]]:
    records = [r for r in result.report.records if r.stage is not None]
    layers = sorted(
        {
            r.layer
            for r in records
            if r.layer is not None and not stage_table.BY_NAME[str(r.stage)].whole_model
        }
    )
    present = {str(r.stage) for r in records}
    columns = [s.name for s in stage_table.STAGES if s.name in present]
    rows = [f"layer {x}" for x in layers]
    has_model = any(stage_table.BY_NAME[s].whole_model for s in present)
    if has_model:
        rows.append("model")
    grid = np.full((len(rows), len(columns)), np.nan)
    where: dict[tuple[int, int], StageRecord] = {}
    for r in records:
        st = stage_table.BY_NAME[r.stage]  # type: ignore[index]
        i = len(rows) - 1 if st.whole_model else layers.index(r.layer)  # type: ignore[arg-type]
        j = columns.index(st.name)
        grid[i, j] = value(r, metric)
        where[(i, j)] = r
    return grid, rows, columns, where


def plot_bisect(
    result: BisectResult, path: str | Path, *, metric: str = "sqnr", title: str | None = None
) -> Path:
    """Write the PNG; returns its path. ``metric`` is ``sqnr`` or ``cosine``."""
    metric = metric.strip().lower()
    if metric not in PLOT_METRICS:
        raise PvError(f"unknown plot metric '{metric}'; choose one of {', '.join(PLOT_METRICS)}")
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = require("matplotlib.pyplot")
    from matplotlib.patches import Rectangle

    grid, rows, columns, where = _grid(result, metric)
    if not columns:
        raise PvError("nothing to plot: no stage was compared")
    cap = _CAP[metric]
    label = "SQNR (dB)" if metric == "sqnr" else "cosine nines  -log10(1 - cos)"
    first = result.first
    n_rows, n_cols = grid.shape
    fig_w = max(9.0, 0.62 * n_cols + 3.0)
    heat_h = max(2.4, 0.42 * n_rows + 1.9)
    fig, (ax, ax2) = plt.subplots(
        2,
        1,
        figsize=(fig_w, heat_h + 4.0),
        dpi=110,
        layout="constrained",
        gridspec_kw={"height_ratios": [heat_h, 3.4]},
    )
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#d9d9d9")
    vmin = -20.0 if metric == "sqnr" else 0.0
    img = ax.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=cap,
        interpolation="nearest",
    )
    cb = fig.colorbar(img, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(rows, fontsize=8)
    for (i, j), rec in where.items():
        if rec.bad:
            ax.text(j, i, "x", ha="center", va="center", fontsize=7, color="black")
    if first is not None:
        for (i, j), rec in where.items():
            if rec is first:
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="blue", linewidth=3)
                )
    heading = title or "pv bisect"
    verdict = "no divergence" if first is None else f"first divergence: {first.label}"
    ax.set_title(
        f"{heading}: {verdict} (blue box)\nx = outside tolerance, grey = not compared", fontsize=9
    )
    _sequence(ax2, result, metric, cap, label)
    out = Path(path)
    try:
        fig.savefig(out)
    except OSError as exc:
        raise PvError(f"{out}: cannot write plot: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def _sequence(ax: Any, result: BisectResult, metric: str, cap: float, label: str) -> None:
    """Per-stage line for the divergent layer (or the last layer when nothing diverged)."""
    first = result.first
    records = [r for r in result.report.records if r.stage is not None and r.metrics is not None]
    layer_records = [r for r in records if not stage_table.BY_NAME[r.stage].whole_model]  # type: ignore[index]
    if (
        first is not None
        and first.stage is not None
        and stage_table.BY_NAME[first.stage].whole_model
    ):
        chosen = [r for r in records if stage_table.BY_NAME[r.stage].whole_model]  # type: ignore[index]
        name = "whole-model stages"
    else:
        layer = (
            first.layer
            if first is not None
            else max((r.layer for r in layer_records if r.layer is not None), default=None)
        )
        chosen = [r for r in layer_records if r.layer == layer]
        name = f"layer {layer}"
    xs = list(range(len(chosen)))
    ys = [value(r, metric) for r in chosen]
    ax.plot(xs, ys, marker="o", color="#1f4e79", linewidth=1.5)
    for x, y, r in zip(xs, ys, chosen):
        if r.bad:
            ax.plot([x], [y], marker="o", color="red", markersize=8)
        if r is first:
            ax.annotate(
                "first divergence",
                xy=(x, y),
                xytext=(x, y + 0.12 * cap),
                ha="center",
                fontsize=8,
                color="red",
                arrowprops={"arrowstyle": "->", "color": "red"},
            )
    tol = next((r.tolerance for r in chosen if r.tolerance is not None), None)
    if tol is not None and metric == "cosine" and tol.cosine < 1.0:
        ax.axhline(-math.log10(1 - tol.cosine), color="grey", linestyle="--", linewidth=1)
        ax.text(
            0,
            -math.log10(1 - tol.cosine),
            " cosine threshold",
            fontsize=7,
            color="grey",
            va="bottom",
        )
    ax.set_xticks(xs)
    ax.set_xticklabels([r.stage for r in chosen], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.set_ylim(-22 if metric == "sqnr" else 0, cap * 1.25)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"{name}: stage by stage (red = outside tolerance; the top of the scale means identical)",
        fontsize=9,
    )
