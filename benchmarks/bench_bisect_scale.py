"""pv bisect --model at long contexts: wall, peak RSS and bytes written, against the two plain runs.

    python benchmarks/bench_bisect_scale.py                       # SmolLM2 at S = 128 .. 8192
    python benchmarks/bench_bisect_scale.py --lengths 128,512 --keep-upto 512
    python benchmarks/bench_bisect_scale.py --model synthetic:llama-1b --lengths 512,2048 --keep-upto 512

``synthetic:llama-1b`` is a 1.04B-parameter Llama (hidden 2048, 16 layers, 32
heads, 8 KV heads, FFN 8192) whose weights each side draws tensor by tensor
while it loads, so each holds one float32 copy (4.2 GB) and no third exists.
Every figure comes from a fresh process (so peak RSS is that run's), measured
side by side in one invocation: the engine's plain forward and the oracle's
plain forward (each with its model load, no capture), then ``pv bisect`` as it
runs by default (both sides compared while they run, nothing written), and,
up to ``--keep-upto`` tokens, ``pv bisect --keep`` (both captures written, then
walked: what bisection cost before it streamed). The fault is planted two
thirds of the way down (layer 20 of SmolLM2), so each row shows what it named.
Bytes written are the process's write(2) bytes (``wchar`` in /proc/self/io);
peak RSS is ``ru_maxrss``, what ``/usr/bin/time -v`` reports as the maximum
resident set size. ``--keep`` is skipped, with a note, at a length whose two
captures (the formula in docs/compare.md) would not fit in half the free space
of the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

CHILD = r"""
import json, os, resource, sys, time
mode, model, n, fault, keep = sys.argv[1:6]
import numpy as np
def wchar():
    for line in open("/proc/self/io"):
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0
w0 = wchar()
t0 = time.perf_counter()
from pv.capture.model.load import load_model
loaded = load_model(model)
rng = np.random.Generator(np.random.PCG64(7))
ids = [int(x) for x in rng.integers(3, loaded.config.vocab_size, int(n))]
found = None
if mode in ("pv", "hf"):
    from pv.capture import runners
    from pv.capture.runners import Settings
    runner = runners.get(mode).load(loaded, Settings())
    runner.forward(ids)
    runner.close()
else:
    import pv
    run = pv.bisect_run(model=model, tokens=",".join(map(str, ids)), fault=fault,
                        keep=keep if mode == "keep" else None)
    found = run.result.first_divergence if run.result is not None else None
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall": wall, "rss": rss, "written": wchar() - w0, "found": found}))
"""


def measure(mode: str, model: str, n: int, fault: str, keep: Path | None) -> dict[str, object]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run([sys.executable, "-c", CHILD, mode, model, str(n), fault, str(keep or "")],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def capture_bytes(cfg: object, n: int) -> int:
    """Both captures' size at ``n`` tokens, by docs/compare.md's formula for a dense decoder."""
    c: Any = cfg
    h, i, nh, kvh, d, v = (c.hidden_size, c.intermediate_size, c.num_attention_heads,
                           c.num_key_value_heads, c.head_dim, c.vocab_size)
    per = 4 * (c.num_hidden_layers * n * (6 * h + 4 * i + 3 * (nh + kvh) * d)
               + 2 * c.num_hidden_layers * nh * n * n + 2 * n * h + n * v)
    return 2 * per


def gib(x: object) -> str:
    return f"{float(x) / (1 << 30):.2f}" if isinstance(x, (int, float)) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(SMOLLM2))
    ap.add_argument("--lengths", default="128,512,2048,4096,8192")
    ap.add_argument("--fault", default=None, help="default: mask_off_by_one two thirds of the way down")
    ap.add_argument("--keep-upto", type=int, default=2048, help="measure --keep up to this many tokens")
    args = ap.parse_args()
    if args.model == str(SMOLLM2) and not SMOLLM2.is_file():
        sys.exit(f"{SMOLLM2} is missing: python scripts/fetch_smollm2.py")
    from pv.capture.model.load import model_config

    cfg = model_config(args.model)
    fault = args.fault or f"mask_off_by_one@{cfg.num_hidden_layers * 2 // 3}"
    print(f"model {args.model}: {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads "
          f"({cfg.num_key_value_heads} KV), hidden {cfg.hidden_size}, FFN {cfg.intermediate_size}; fault {fault}")
    head = (f"{'S':>6}  {'mode':<10} {'wall s':>8} {'x plain':>8} {'peak RSS GiB':>13} {'written GiB':>12}  answer")
    print(head)
    print("-" * len(head))
    for n in (int(x) for x in args.lengths.split(",")):
        plain = {m: measure(m, args.model, n, fault, None) for m in ("pv", "hf")}
        both = sum(float(r["wall"]) for r in plain.values() if "wall" in r)  # type: ignore[arg-type]
        rows = [("plain pv", plain["pv"]), ("plain hf", plain["hf"]), ("stream", measure("stream", args.model, n,
                                                                                          fault, None))]
        need, free = capture_bytes(cfg, n), shutil.disk_usage(tempfile.gettempdir()).free
        if n <= args.keep_upto and need > free // 2:
            rows.append(("--keep", {"error": f"skipped: both captures take {gib(need)} GiB, "
                                             f"{gib(free)} GiB free in {tempfile.gettempdir()}"}))
        elif n <= args.keep_upto:
            tmp = Path(tempfile.mkdtemp(prefix="pv-bench-keep-"))
            try:
                rows.append(("--keep", measure("keep", args.model, n, fault, tmp / "keep")))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        for mode, r in rows:
            if "error" in r:
                print(f"{n:>6}  {mode:<10} {'' if str(r['error']).startswith('skipped') else 'error: '}{r['error']}")
                continue
            ratio = f"{float(r['wall']) / both:.2f}" if mode in ("stream", "--keep") and both else ""  # type: ignore[arg-type]
            found = r.get("found")
            answer = "" if mode.startswith("plain") else (
                f"layer {found['layer']} {found['stage']}" if isinstance(found, dict) else "no divergence")
            print(f"{n:>6}  {mode:<10} {float(r['wall']):>8.1f} {ratio:>8} {gib(r['rss']):>13} "  # type: ignore[arg-type]
                  f"{gib(r['written']):>12}  {answer}")
        sys.stdout.flush()
    print(f"\nmeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs; 'x plain' is the wall time over the "
          "sum of the two plain runs (loads included), all in this one invocation")


if __name__ == "__main__":
    main()
