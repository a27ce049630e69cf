"""Benchmark: ``pv validate`` against a bare libyaml parse of the same files.

Generates N realistic contracts (10-15 KB, default 2,000) into a temporary
directory, then measures, side by side in one run:

- baseline: read each file and ``yaml.load(text, Loader=yaml.CSafeLoader)``, one
  process: the parse floor every validator pays;
- ``validate_paths`` as a library call in this process (default workers: one
  per core), the figure the target (<= 1.5x the baseline) applies to;
- the same with one worker, to show the single-core cost;
- ``pv validate DIR`` as a subprocess, start-up and imports included.

Each figure is the best of ``--repeat`` runs. Usage:
    python benchmarks/bench_validate.py [--files 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_contracts import generate

from pv.contract.validate import validate_paths


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        folder = Path(tmp) / "contracts"
        paths = generate(folder, args.files)
        total = sum(p.stat().st_size for p in paths)

        def bare_parse() -> None:
            for p in paths:
                yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)

        def pv_default() -> None:
            report = validate_paths([folder], check_evidence=False)
            assert report.ok and report.files == len(paths), report.summary()

        def pv_one_worker() -> None:
            validate_paths([folder], check_evidence=False, jobs=1)

        def pv_subprocess() -> None:
            done = subprocess.run([sys.executable, "-m", "pv.cli", "validate", str(folder)],
                                  capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]

        base = best_of(args.repeat, bare_parse)
        rows = [
            ("bare CSafeLoader parse (1 process)", base),
            ("pv validate, library call, default workers", best_of(args.repeat, pv_default)),
            ("pv validate, library call, 1 worker", best_of(args.repeat, pv_one_worker)),
            ("pv validate, subprocess (start-up included)", best_of(args.repeat, pv_subprocess)),
        ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(paths)} contracts, {total / 1e6:.1f} MB, {cores} cores, best of {args.repeat}")
    for name, seconds in rows:
        print(f"  {name:<46} {seconds:7.3f} s  {total / seconds / 1e6:6.1f} MB/s  "
              f"{seconds / base:5.2f}x")
    ratio = rows[1][1] / base
    print(f"ratio pv validate / bare parse: {ratio:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
