"""What size of error each tolerance class can see, measured on real noise.

    python benchmarks/bench_tolerance_reach.py [--model GGUF] [--prompt TEXT]

Captures SmolLM2 (or ``--model``) four ways against pv's float32 engine: the
transformers oracle in float32 (class ``float32``), pv's engine in float16 and
bfloat16 (those classes, with the shipped measured per-stage tolerances) and
llama.cpp on the quantized weights (class ``quantized``). Every stage of every
layer of each clean pair is then judged again with an error planted in memory
on top of its own noise: the candidate times (1 + s), or plus c times the
reference's RMS, for s and c on a grid from 0.01% to 100%. Per class the table
gives the smallest planted size the verdict flags at every stage ("seen
everywhere from") and the largest it still passes at some stage ("can hide up
to"), with and without the systematic tests. A bias is not planted in the
stages a softmax reads (``tolerances.SHIFT_FREE``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pv.capture.store import aprt, directory
from pv.capture.trace import capture
from pv.compare.diff import compare_arrays
from pv.compare.tolerances import SHIFT_FREE, Tolerances

GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
RUNS = (("float32", {"engine": "hf"}), ("float16", {"dtype": "float16"}), ("bfloat16", {"dtype": "bfloat16"}),
        ("quantized", {"engine": "llama.cpp"}))


def pairs(a: Path, b: Path) -> list[tuple[str, int | None, np.ndarray, np.ndarray]]:
    ea, eb = directory.open_capture(a).by_key(), directory.open_capture(b).by_key()
    out = []
    for key in sorted(set(ea) & set(eb), key=str):
        sa, sb = ea[key], eb[key]
        if sa.shape is None or sa.shape != sb.shape:
            continue
        out.append((key[0], key[1], aprt.read(sa.path, tuple(sa.shape))[1], aprt.read(sb.path, tuple(sb.shape))[1]))
    return out


def reach(stages: list[tuple[str, int | None, np.ndarray, np.ndarray]], klass: str,
          systematic: bool) -> tuple[str, str, str, str]:
    """Seen-everywhere-from and can-hide-up-to, for a scale and for a bias."""
    tols = Tolerances()
    out: list[str] = []
    for kind in ("scale", "bias"):
        worst_pass, first_all = 0.0, None
        for size in GRID:
            seen_all = True
            for stage, layer, a, b in stages:
                if kind == "bias" and stage in SHIFT_FREE:
                    continue
                tol = tols.for_stage(stage, klass)
                if not systematic:
                    tol = replace(tol, scale_error=0.0, bias_error=0.0)
                rms = float(np.sqrt(np.mean(b.astype(np.float64) ** 2)))
                planted = a * (1.0 + size) if kind == "scale" else a + size * rms
                if compare_arrays(planted, b, stage, layer, tolerance=tol).status == "pass":
                    seen_all = False
                    worst_pass = size
            if seen_all and first_all is None:
                first_all = size
        out += ["-" if first_all is None else f"{first_all:.2%}", f"{worst_pass:.2%}" if worst_pass else "-"]
    return out[0], out[1], out[2], out[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompt", default="The capital of France is")
    args = ap.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: no such file (scripts/fetch_smollm2.py fetches SmolLM2)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pv-reach-") as tmp:
        ref = Path(tmp) / "ref"
        capture(args.model, prompt=args.prompt, output=ref)
        for klass, how in RUNS:
            t0 = time.perf_counter()
            out = Path(tmp) / klass
            capture(args.model, prompt=args.prompt, output=out, **how)  # type: ignore[arg-type]
            stages = pairs(out, ref)
            for systematic in ((False, True) if klass == "quantized" else (False,)):
                rows.append((klass + (" + systematic" if systematic else ""), str(len(stages)),
                             *reach(stages, klass, systematic)))
            print(f"# {klass}: {time.perf_counter() - t0:.0f} s", flush=True)
    head = ("class", "stages", "scale seen everywhere from", "scale can hide up to",
            "bias seen everywhere from", "bias can hide up to")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"(model {Path(args.model).name}, prompt {args.prompt!r}; reference: pv's float32 engine; "
          f"bias in units of the stage's RMS; grid {', '.join(f'{g:g}' for g in GRID)})")


if __name__ == "__main__":
    main()
