"""What the quantized class sees: llama.cpp against pv's float32 engine, clean and with small faults.

    python benchmarks/bench_systematic.py [--layer 7] [--prompt TEXT] [--model GGUF ...]

For each real-weights model (SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M when
fetched), captures pv's float32 engine on the dequantised weights (the
reference) and llama.cpp four times: clean, and with each of the catalogue's
small faults planted in layer ``--layer`` (``attention_scaled_5pct``,
``residual_shifted_1pct``, ``q_heads_swapped``). Each llama.cpp capture is
bisected against the reference twice, with the shipped tolerances and with the
systematic tests off (``scale_error`` and ``bias_error`` 0: the per-position
rule alone), and the table says where each walk stops, why, and what the
fitted scale, bias and worst head cosine of the faulty stage are. Then, over
every stage of the clean runs, the largest scale and bias that are also 8
standard errors from zero: how close the clean noise comes to the floors.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pv.capture.faults import LLAMA_FAULTS
from pv.capture.trace import capture
from pv.compare import systematic
from pv.compare.bisect import BisectResult, bisect
from pv.compare.tolerances import SHIFT_FREE, Tolerances, parse_config

MODELS = ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "models/gemma-3-270m-q4_k_m.gguf")
FAULTS = ("attention_scaled_5pct", "residual_shifted_1pct", "q_heads_swapped")
OFF = parse_config({"dtypes": {"quantized": {"scale_error": 0, "bias_error": 0}}}, "systematic tests off")


def where(result: BisectResult) -> str:
    first = result.first
    if first is None:
        return "none"
    return first.label + ("" if first.failure is None else f" ({first.failure})")


def measured(result: BisectResult, stage: str, layer: int) -> str:
    rec = next((r for r in result.report.records if r.stage == stage and r.layer == layer), None)
    m = rec.metrics if rec is not None else None
    if m is None or m.systematic is None:
        return "-"
    s = m.systematic
    heads = f", min head cos {min(m.head_cosine):.4f}" if m.head_cosine else ""
    return (f"scale {s.scale:+.2%} ({s.scale_z:+.0f} SE), bias {s.bias:+.2%} ({s.bias_z:+.0f} SE), "
            f"rel {m.worst_position[1] if m.worst_position else m.rel_err:.3f}{heads}")


def drift(result: BisectResult) -> tuple[float, float]:
    """The largest |scale| and |bias| of any stage that are also systematic.Z standard errors out."""
    scale = bias = 0.0
    for rec in result.report.records:
        s = rec.metrics.systematic if rec.metrics is not None else None
        if s is None:
            continue
        if abs(s.scale_z) >= systematic.Z:
            scale = max(scale, abs(s.scale))
        if abs(s.bias_z) >= systematic.Z and rec.stage not in SHIFT_FREE:
            bias = max(bias, abs(s.bias))
    return scale, bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=7)
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--model", action="append", help="GGUF file (repeatable); default: both real models")
    args = ap.parse_args()
    models = [m for m in (args.model or MODELS) if Path(m).is_file()]
    if not models:
        raise SystemExit("no model found: fetch them (scripts/fetch_smollm2.py, scripts/fetch_gemma3.py)")
    rows: list[tuple[str, ...]] = []
    drifts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pv-systematic-") as tmp:
        for model in models:
            name = Path(model).stem
            t0 = time.perf_counter()
            ref = Path(tmp) / f"{name}-ref"
            capture(model, prompt=args.prompt, output=ref)
            for fault in (None, *FAULTS):
                out = Path(tmp) / f"{name}-{fault or 'clean'}"
                capture(model, prompt=args.prompt, output=out, engine="llama.cpp",
                        fault=None if fault is None else f"{fault}@{args.layer}")
                on = bisect(out, ref, tolerances=Tolerances())
                off = bisect(out, ref, tolerances=OFF)
                stage = LLAMA_FAULTS[fault].stage if fault else ""
                rows.append((name, fault or "clean", where(on), where(off),
                             measured(on, stage, args.layer) if fault else "-"))
                if fault is None:
                    scale, bias = drift(on)
                    drifts.append(f"{name}: clean run, largest scale {scale:.2%} and bias {bias:.2%} "
                                  f"at >= {systematic.Z:g} SE over {len(on.report.compared)} stages")
            print(f"# {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("model", "llama.cpp run", "first divergence", "systematic tests off", "at the faulty stage")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[4])
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    print()
    print("\n".join(drifts))
    print(f"(floors: scale {Tolerances().for_stage('attention', 'quantized').scale_error:.2%}, "
          f"bias {Tolerances().for_stage('attention', 'quantized').bias_error:.2%}; prompt {args.prompt!r}, "
          f"faults in layer {args.layer}, reference: pv's float32 engine on the dequantised weights)")


if __name__ == "__main__":
    main()
