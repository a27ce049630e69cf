"""Opening a GGUF: the ``gguf`` package's reader against pv's (``pv.capture.model.gguf_reader``).

    python benchmarks/bench_gguf_load.py [--repeat 3] [PATH ...]

For each file (default: the Gemma 3 270M and SmolLM2 GGUFs under models/), opens
it with ``gguf.GGUFReader`` and with ``open_gguf`` in alternation, best wall
time of ``--repeat`` each, and prints the ratio. Both parse the same fields and
tensor descriptions (no dequantisation); the difference is how their slices of
the file are made, which matters most for a large vocabulary (Gemma's 262,144
tokens). Only ratios from one run mean anything: the machine is shared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [ROOT / "models" / "gemma-3-270m-q4_k_m.gguf", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import gguf

    from pv.capture.model.gguf_reader import open_gguf

    paths = args.paths or [p for p in DEFAULT if p.is_file()]
    if not paths:
        print("no GGUF found under models/ (run scripts/fetch_*.py) and none given", file=sys.stderr)
        return 2
    for path in paths:
        best = {"gguf.GGUFReader": float("inf"), "pv open_gguf": float("inf")}
        for _ in range(args.repeat):
            for name, fn in (("gguf.GGUFReader", lambda p=path: gguf.GGUFReader(str(p), "r")),
                             ("pv open_gguf", lambda p=path: open_gguf(p))):
                t0 = time.perf_counter()
                reader = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
                del reader
        fields = len(open_gguf(path).fields)
        stock, ours = best["gguf.GGUFReader"], best["pv open_gguf"]
        print(f"{path.name}: {fields} fields; gguf.GGUFReader {stock:.2f} s, pv open_gguf {ours:.2f} s "
              f"({ours / stock:.2f}x, best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
