"""Capture overhead and engine speed, measured side by side in one run.

    python benchmarks/bench_capture.py [--tokens 128] [--repeat 5] [--threads N] [--model SPEC]

For the synthetic model and (when present) SmolLM2-135M, at 128 tokens on the
CPU in float32, prints for

- the engine's plain forward (no tap),
- a full capture (all stages, all layers) streamed to a fresh directory, files
  and manifest included, with the same engine: ratio to the plain forward
  (target <= 2x),
- ``capture()`` end to end as ``pv trace`` runs it (plan checks, engine build),
- transformers' eager forward of the same weights: ratio engine / transformers
  (target <= 1.0x),

the best wall time and the best process CPU time (all threads, the capture's
writer thread included) over ``--repeat`` interleaved runs after a warm-up.
Running the contenders in alternation exposes each to the same load from other
processes, and the best run is the least disturbed one; the CPU-time ratio is
the total work and so an upper bound for the wall ratio on an idle machine with
a core to spare for the writer thread. Only ratios from one run mean anything.
Deleting the capture directories happens outside the timed region.

``pv trace`` runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets
it (spinning OpenMP workers starve the capture's writer thread); run this
script with and without that variable to see both.
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


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int,
                     cleanup: Callable[[], None]) -> dict[str, tuple[float, float]]:
    """name -> (best wall seconds, best CPU seconds), contenders run in alternation."""
    for fn in fns.values():
        fn()  # warm-up: allocator, thread pools, page cache
        cleanup()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            cleanup()
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def transformers_forward(model):  # type: ignore[no-untyped-def]
    """transformers' own model of the same weights, eager attention, float32 CPU."""
    import torch
    import transformers

    from pv.capture.oracle import HF_CLASSES, hf_config

    c = model.config
    config = hf_config(c, transformers)
    config._attn_implementation = "eager"
    hf = getattr(transformers, HF_CLASSES[c.architecture][1])(config)
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict.items()}, strict=False)
    if c.tie_word_embeddings:
        hf.tie_weights()
    hf.eval()

    def run(ids: list[int]) -> object:
        with torch.inference_mode():
            return hf(torch.tensor([ids])).logits

    return run


def bench(spec: str, n_tokens: int, repeat: int, scratch: Path) -> None:
    from pv.capture.aprt import CaptureWriter
    from pv.capture.engine import Engine
    from pv.capture.models import load_model
    from pv.capture.plan import CapturePlan, Tap
    from pv.capture.trace import capture

    model = load_model(spec)
    engine = Engine(model)
    ids = [(7 * i + 3) % model.config.vocab_size for i in range(n_tokens)]
    plan = CapturePlan.parse("all", "all")
    out = scratch / "cap"

    def full_capture() -> object:
        """The engine's forward with every stage of every layer streamed to disk."""
        writer = CaptureWriter(out, {"bench": True})
        tap = Tap(plan, writer)
        logits = engine.forward(ids, tap)
        tap.finish()
        writer.close()
        return logits

    def end_to_end() -> object:
        """``capture()`` as pv trace runs it: plan checks, engine build, files, manifest."""
        return capture(model, tokens=ids, stages="all", layers="all", output=out)

    def cleanup() -> None:
        shutil.rmtree(out, ignore_errors=True)

    hf_run = transformers_forward(model)
    t = interleaved_best({"plain": lambda: engine.forward(ids), "full": full_capture,
                          "e2e": end_to_end, "hf": lambda: hf_run(ids)}, repeat, cleanup)
    probe = capture(model, tokens=ids, output=out)
    cleanup()
    (pw, pc), (fw, fc), (ew, ec), (hw, hc) = t["plain"], t["full"], t["e2e"], t["hf"]
    mib = probe.bytes_written / (1 << 20)
    print(f"\n{Path(spec).name}: {n_tokens} tokens, {model.config.num_hidden_layers} layers, "
          f"float32 CPU, best of {repeat}")
    print(f"  {'':34} {'wall ms':>9} {'ratio':>7} {'cpu ms':>9} {'ratio':>7}")
    rows = [("engine forward", pw, pc, None),
            (f"full capture ({probe.files} files, {mib:.0f} MiB)", fw, fc, "<= 2x"),
            ("capture() incl. engine build", ew, ec, None),
            ("transformers eager forward", hw, hc, None)]
    for label, wall, cpu, _ in rows:
        print(f"  {label:34} {wall * 1e3:9.1f} {wall / pw:6.2f}x {cpu * 1e3:9.1f} {cpu / pc:6.2f}x")
    print(f"  full capture / forward: wall {fw / pw:.2f}x, cpu {fc / pc:.2f}x (target <= 2x)")
    print(f"  engine / transformers:  wall {pw / hw:.2f}x, cpu {pc / hc:.2f}x (target <= 1.0x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model", action="append", help="model spec (repeatable); default synthetic + SmolLM2")
    parser.add_argument("--scratch", default=None, help="directory for the captures (default: a temp dir)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    specs = args.model or ["synthetic"] + ([str(SMOLLM2)] if SMOLLM2.is_file() else [])
    if not args.model and not SMOLLM2.is_file():
        print(f"(SmolLM2 not found at {SMOLLM2}; synthetic only)")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for spec in specs:
            bench(spec, args.tokens, args.repeat, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
