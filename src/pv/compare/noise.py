"""Measured tolerances: how far the reference itself moves per stage in half precision.

``measure`` runs the transformers oracle twice on the same tokens, in float32
and in the half-precision dtype, captures every stage of every layer, and
compares the two captures with ``pv diff``'s own metrics (cosine over the stage,
per-position relative RMS error). The noise floor of a stage is the worst value
over its layers. A tolerance is that floor times a margin (default 4): a
faithful half-precision engine lands near the floor, a bug lands far above it.

The result is a tolerance file (``dtypes: {bfloat16: {stages: {...}}}``) that
``pv diff --tolerances FILE`` reads; the defaults pv ships were measured this
way (``measured_tolerances.json``, see ``docs/compare.md``).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pv.errors import PvError

#: Floors so that a stage the dtype happens not to move (exact in both) still
#: gets a usable tolerance: one half-precision rounding of the value.
_FLOOR_REL = {"bfloat16": 4e-3, "float16": 5e-4}


def measure(model: Any, tokens: Sequence[int], dtype: str, *, margin: float = 4.0,
            device: str = "cpu") -> dict[str, Any]:
    """Per-stage noise floor of the oracle between float32 and ``dtype``, and the tolerances from it."""
    from pv.capture.trace import capture
    from pv.compare.diff import diff_paths

    if dtype not in _FLOOR_REL:
        raise PvError(f"measure a half-precision dtype ({', '.join(_FLOOR_REL)}), not '{dtype}'")
    if not margin >= 1.0:
        raise PvError(f"--margin must be at least 1, not {margin}")
    with tempfile.TemporaryDirectory(prefix="pv-noise-") as tmp:
        root = Path(tmp)
        capture(model, tokens=list(tokens), output=root / "f32", engine="hf", device=device)
        capture(model, tokens=list(tokens), output=root / "half", engine="hf", device=device, dtype=dtype)
        report = diff_paths(root / "half", root / "f32")
    floor: dict[str, dict[str, float]] = {}
    for rec in report.records:
        m = rec.metrics
        if m is None or rec.stage is None:
            continue
        rel = max((d / r for d, r in zip(m.position_rms, m.position_ref_rms) if r > 0), default=0.0)
        cos = m.cosine if math.isfinite(m.cosine) else 1.0
        slot = floor.setdefault(rec.stage, {"cosine": 1.0, "rel": 0.0})
        slot["cosine"] = min(slot["cosine"], cos)
        slot["rel"] = max(slot["rel"], rel)
    stages = {}
    for stage, f in floor.items():
        rel = max(f["rel"], _FLOOR_REL[dtype])
        stages[stage] = {
            "cosine": round(max(0.0, 1.0 - margin * max(1.0 - f["cosine"], 1e-6)), 6),
            "rtol": float(f"{margin * rel:.3g}"),
            "atol": 1e-5 if dtype == "float16" else 1e-4,
        }
    return {
        "measured": {"model": getattr(model, "source", str(model)), "tokens": len(tokens), "dtype": dtype,
                     "margin": margin, "floor": floor},
        "dtypes": {dtype: {"stages": stages}},
    }


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several measurements (models, dtypes) in one file: per stage the loosest of them."""
    out: dict[str, Any] = {"measured": [r["measured"] for r in results], "dtypes": {}}
    for r in results:
        for dtype, block in r["dtypes"].items():
            into = out["dtypes"].setdefault(dtype, {"stages": {}})["stages"]
            for stage, tol in block["stages"].items():
                if stage not in into:
                    into[stage] = dict(tol)
                else:
                    old = into[stage]
                    into[stage] = {"cosine": min(old["cosine"], tol["cosine"]),
                                   "rtol": max(old["rtol"], tol["rtol"]), "atol": max(old["atol"], tol["atol"])}
    return out


def write(result: dict[str, Any], path: str | Path) -> Path:
    from pv.files import replace_text

    p = Path(path)
    replace_text(p, json.dumps(result, indent=1, sort_keys=True) + "\n")
    return p
