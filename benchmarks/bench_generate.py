"""Capture overhead over a generation: every stage of every step vs plain generation, one run.

    python benchmarks/bench_generate.py [--new 64] [--repeat 3] [--model SPEC] [--threads N]

For pv's engine (SmolLM2-135M when present, else the synthetic model) and,
when ``llama_cpp`` is importable and the GGUF is present, for llama.cpp on
the same file, prints the best wall time over ``--repeat`` interleaved runs of

- plain greedy generation of ``--new`` tokens with the engine's KV cache,
- ``pv trace --generate`` as a library call: the same generation with every
  stage of every layer captured at every step (prefill + one decode step per
  token) and written to a fresh directory,

and the ratio of the two per engine. For pv's engine it also times greedy
generation by full recomputation (no cache), to show what the cache saves.
Contenders run in alternation so that each sees the same load from other
processes; only ratios from one run mean anything. Deleting the capture
directories happens outside the timed region.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = Path(os.environ.get("PV_SMOLLM2_GGUF", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
PROMPT = "The capital of France is"


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int,
                     cleanup: Callable[[], None]) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
        cleanup()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            cleanup()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", type=int, default=64, help="tokens to generate")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=None, help="default: SmolLM2 if present, else synthetic")
    parser.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pv trace does
    import torch

    from pv.capture.engine.runner import Engine
    from pv.capture.generate import capture_generation
    from pv.capture.model.load import load_model
    from pv.capture.trace import make_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.model or (str(SMOLLM2) if SMOLLM2.is_file() else "synthetic")
    model = load_model(spec)
    prompt = (list(model.tokenizer.encode(PROMPT)) if model.tokenizer is not None and spec != "synthetic"
              else [5, 9, 33, 120, 77, 3, 8, 250])
    tmp = Path(tempfile.mkdtemp(prefix="pv-bench-gen-"))
    counter = [0]

    def fresh() -> Path:
        counter[0] += 1
        return tmp / f"cap-{counter[0]}"

    def cleanup() -> None:
        for child in tmp.iterdir():
            shutil.rmtree(child, ignore_errors=True)

    engine = Engine(model)
    fns: dict[str, Callable[[], object]] = {
        "pv: generate (KV cache)": lambda: engine.generate(prompt, args.new),
        "pv: generate + capture all": lambda: capture_generation(
            make_plan(spec, model.config, tokens=prompt, output=fresh()), model, args.new),
        "pv: generate by recomputation": lambda: engine.generate_recompute(prompt, args.new),
    }
    lc_ok = spec.lower().endswith(".gguf")
    if lc_ok:
        try:
            from pv.capture.llamacpp.runner import LlamaCppRunner
        except ImportError:
            lc_ok = False
    if lc_ok:
        try:
            # Plain generation as users run it: a context without the graph callback.
            runner = LlamaCppRunner(spec, model.config, threads=args.threads, capture=False)
        except Exception as exc:  # noqa: BLE001 - report and go on with pv's engine only
            print(f"llama.cpp: skipped ({exc})")
            lc_ok = False
    if lc_ok:
        fns["llama.cpp: generate (KV cache)"] = lambda: runner.generate(prompt, args.new)
        fns["llama.cpp: generate + capture all"] = lambda: capture_generation(
            make_plan(spec, model.config, tokens=prompt, engine="llama.cpp", output=fresh()),
            model, args.new)
    try:
        best = interleaved_best(fns, args.repeat, cleanup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: {spec}  prompt: {len(prompt)} tokens  new: {args.new}  repeat: {args.repeat}  "
          f"torch threads: {torch.get_num_threads()}")
    for name, secs in best.items():
        print(f"  {name:<36} {secs * 1000:9.1f} ms")
    pv_ratio = best["pv: generate + capture all"] / best["pv: generate (KV cache)"]
    print(f"ratio pv capture / plain:              {pv_ratio:.2f}x")
    print(f"ratio pv recomputation / KV cache:     "
          f"{best['pv: generate by recomputation'] / best['pv: generate (KV cache)']:.2f}x")
    if lc_ok:
        lc_ratio = best["llama.cpp: generate + capture all"] / best["llama.cpp: generate (KV cache)"]
        print(f"ratio llama.cpp capture / plain:       {lc_ratio:.2f}x")
        print(f"ratio pv plain / llama.cpp plain:      "
              f"{best['pv: generate (KV cache)'] / best['llama.cpp: generate (KV cache)']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
