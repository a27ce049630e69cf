"""Capture overhead and engine speed, measured side by side in one run.

    python benchmarks/bench_capture.py [--tokens 128] [--repeat 5] [--threads N] [--model SPEC]
                                       [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                       [--writers N]

For the synthetic model and (when present) SmolLM2-135M and Gemma 3 270M, at
128 tokens in float32 on the CPU (or ``--device cuda``), prints for

- the engine's plain forward (no tap),
- the tap alone: every stage tapped and handed to the writer threads, which
  discard it (what a capture costs the forward itself: the floor where the
  writers have cores of their own),
- a full capture (all stages, all layers) streamed to a fresh directory, files
  and manifest included, with the same engine: ratio to the plain forward
  (target <= 1.3x for SmolLM2),
- ``capture()`` end to end as ``pv trace`` runs it (plan checks, engine build),
- transformers' eager forward of the same weights: ratio engine / transformers
  (target <= 1.0x),
- the writer alone (no forward running) on the same tensors with 1, 2 and 4
  threads: how the file work scales where there are cores for it,
- encoding the capture's manifest as pv writes it (a line per file record)
  against ``json.dumps(indent=1)``, and hashing the stages with BLAKE3 (what
  the manifest records) against sha256,

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
GEMMA3 = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"


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

    from pv.capture.oracle.runner import HFOracle

    oracle = HFOracle(model, device=DEVICE, dtype=DTYPE)  # the same weights, loaded as the oracle does
    oracle.model.config._attn_implementation = "eager"
    hf = oracle.model

    def run(ids: list[int]) -> object:
        with torch.inference_mode():
            out = hf(torch.tensor([ids], device=DEVICE)).logits
            _sync()
            return out

    return run


DEVICE, DTYPE = "cpu", "float32"
WRITERS: int | None = None  # None: pv's default (one per core the forward leaves idle)


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench(spec: str, n_tokens: int, repeat: int, scratch: Path) -> None:
    from pv.capture.disktap import DiskTap
    from pv.capture.engine.runner import Engine
    from pv.capture.model.load import load_model
    from pv.capture.plan import CapturePlan
    from pv.capture.store.writer import CaptureWriter
    from pv.capture.trace import capture

    model = load_model(spec)
    engine = Engine(model, device=DEVICE, dtype=DTYPE)
    ids = [(7 * i + 3) % model.config.vocab_size for i in range(n_tokens)]
    plan = CapturePlan.parse("all", "all")
    out = scratch / "cap"

    def full_capture() -> object:
        """The engine's forward with every stage of every layer streamed to disk."""
        writer = CaptureWriter(out, {"bench": True})
        tap = DiskTap(plan, writer, writers=WRITERS)
        logits = engine.forward(ids, tap)
        tap.finish()
        writer.close()
        return logits

    class Discard:
        """A writer that keeps nothing: what the capture costs the forward itself."""

        def store(self, stage, layer, array, **meta):  # type: ignore[no-untyped-def]
            return None

        def add(self, record) -> None:  # type: ignore[no-untyped-def]
            pass

        def mark_not_applicable(self, stage: str, reason: str) -> None:
            pass

    def tap_only() -> object:
        """Every stage tapped and handed to the writer threads, which discard it."""
        tap = DiskTap(plan, Discard(), writers=WRITERS)  # type: ignore[arg-type]
        logits = engine.forward(ids, tap)
        tap.finish()
        return logits

    def plain() -> object:
        logits = engine.forward(ids)
        _sync()
        return logits

    def end_to_end() -> object:
        """``capture()`` as pv trace runs it: plan checks, engine build, files, manifest."""
        return capture(model, tokens=ids, stages="all", layers="all", output=out, device=DEVICE, dtype=DTYPE)

    def cleanup() -> None:
        shutil.rmtree(out, ignore_errors=True)

    hf_run = transformers_forward(model)
    t = interleaved_best({"plain": plain, "tap": tap_only, "full": full_capture,
                          "e2e": end_to_end, "hf": lambda: hf_run(ids)}, repeat, cleanup)
    probe = capture(model, tokens=ids, output=out, device=DEVICE, dtype=DTYPE)
    cleanup()
    (pw, pc), (tw, tc), (fw, fc) = t["plain"], t["tap"], t["full"]
    (ew, ec), (hw, hc) = t["e2e"], t["hf"]
    mib = probe.bytes_written / (1 << 20)
    print(f"\n{Path(spec).name}: {n_tokens} tokens, {model.config.num_hidden_layers} layers, "
          f"{DTYPE} {DEVICE}, best of {repeat}")
    print(f"  {'':34} {'wall ms':>9} {'ratio':>7} {'cpu ms':>9} {'ratio':>7}")
    rows = [("engine forward", pw, pc, None),
            ("tap only (files discarded)", tw, tc, None),
            (f"full capture ({probe.files} files, {mib:.0f} MiB)", fw, fc, "<= 1.3x"),
            ("capture() incl. engine build", ew, ec, None),
            ("transformers eager forward", hw, hc, None)]
    for label, wall, cpu, _ in rows:
        print(f"  {label:34} {wall * 1e3:9.1f} {wall / pw:6.2f}x {cpu * 1e3:9.1f} {cpu / pc:6.2f}x")
    print(f"  full capture / forward: wall {fw / pw:.2f}x, cpu {fc / pc:.2f}x (target <= 1.3x on SmolLM2)")
    print(f"  engine / transformers:  wall {pw / hw:.2f}x, cpu {pc / hc:.2f}x (target <= 1.0x)")
    manifest_encoding(probe.manifest, repeat)
    writer_alone(engine, ids, plan, out, repeat, pw)


def manifest_encoding(manifest: dict[str, object], repeat: int) -> None:
    """The manifest as pv writes it (a line per file record) against json indent=1 throughout."""
    import json

    from pv.capture.store.writer import manifest_text

    t = interleaved_best({"lines": lambda: manifest_text(manifest),  # type: ignore[arg-type]
                          "indent": lambda: json.dumps(manifest, indent=1)}, repeat, lambda: None)
    print(f"  manifest ({len(manifest['files'])} records): a line per record {t['lines'][0] * 1e3:.1f} ms, "  # type: ignore[arg-type]
          f"json indent=1 {t['indent'][0] * 1e3:.1f} ms")


def writer_alone(engine, ids, plan, out: Path, repeat: int, forward_s: float) -> None:  # type: ignore[no-untyped-def]
    """The capture's file work by itself (no forward running): 1 writer thread against 2, 4.

    Every stage of one forward is kept in memory first; then the same tensors
    are hashed and written with each pool size, in alternation. This is the
    floor of a capture on a machine with cores to spare (wall ~ max(forward,
    writer work / threads)), and shows how the writer scales where it has them.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from pv.capture.store.writer import CaptureWriter

    kept: list[tuple[str, int | None, np.ndarray, dict[str, object]]] = []

    class Keep:
        def store(self, stage, layer, array, **meta):  # type: ignore[no-untyped-def]
            kept.append((stage, layer, np.array(array), meta))
            return {"stage": stage}

        def add(self, record) -> None:  # type: ignore[no-untyped-def]
            pass

        def mark_not_applicable(self, stage: str, reason: str) -> None:
            pass

    from pv.capture.disktap import DiskTap

    tap = DiskTap(plan, Keep(), writers=1)  # type: ignore[arg-type]
    engine.forward(ids, tap)
    tap.finish()
    mib = sum(a.nbytes for _, _, a, _ in kept) / (1 << 20)

    def run(n: int) -> Callable[[], object]:
        def go() -> object:
            writer = CaptureWriter(out, {"bench": True})
            with ThreadPoolExecutor(n) as pool:
                records = list(pool.map(lambda k: writer.store(k[0], k[1], k[2], **k[3]), kept))
            for record in records:
                writer.add(record)
            return writer.close()
        return go

    def hash_all(algorithm: str) -> Callable[[], object]:
        def go() -> object:
            for _, _, array, _ in kept:
                digest = blake3.blake3() if algorithm == "blake3" else hashlib.sha256()
                digest.update(memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B"))
            return None
        return go

    import hashlib

    import blake3

    h = interleaved_best({"blake3": hash_all("blake3"), "sha256": hash_all("sha256")}, repeat, lambda: None)
    print(f"  hashing the same {mib:.0f} MiB, one thread: blake3 {h['blake3'][0] * 1e3:.0f} ms, "
          f"sha256 {h['sha256'][0] * 1e3:.0f} ms")
    t = interleaved_best({f"{n}": run(n) for n in (1, 2, 4)}, repeat, lambda: shutil.rmtree(out, ignore_errors=True))
    cells = ", ".join(f"{n} thread{'s' if n != '1' else ''} {w * 1e3:.0f} ms ({w / forward_s:.2f}x the forward)"
                      for n, (w, _) in t.items())
    print(f"  writer alone ({len(kept)} files, {mib:.0f} MiB, blake3 + write + manifest): {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model", action="append",
                        help="model spec (repeatable); default synthetic + SmolLM2 + Gemma 3 where present")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--scratch", default=None, help="directory for the captures (default: a temp dir)")
    parser.add_argument("--writers", type=int, default=None,
                        help="capture writer threads (default: pv's, one per core the forward leaves idle)")
    args = parser.parse_args()
    global DEVICE, DTYPE, WRITERS
    DEVICE, DTYPE, WRITERS = args.device, args.dtype, args.writers
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pv.capture.disktap import default_writers

    writers = args.writers or default_writers(cuda=args.device.startswith("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{writers} capture writer thread{'s' if writers != 1 else ''}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    specs = args.model or ["synthetic"] + [str(p) for p in (SMOLLM2, GEMMA3) if p.is_file()]
    for path in (SMOLLM2, GEMMA3):
        if not args.model and not path.is_file():
            print(f"({path.name} not found under models/; run scripts/fetch_*.py)")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for spec in specs:
            bench(spec, args.tokens, args.repeat, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
