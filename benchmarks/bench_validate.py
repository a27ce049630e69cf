"""Benchmark: ``pv validate`` against a bare libyaml parse of the same files.

Generates N realistic contracts (10-15 KB, default 2,000) into a temporary
directory, then measures, side by side in one run:

- baseline: read each file and ``yaml.load(text, Loader=yaml.CSafeLoader)``, one
  process: the parse floor every validator pays;
- ``validate_paths`` as a library call in this process (default workers: one
  per core), the figure the target (<= 1.5x the baseline) applies to;
- the same with one worker, to show the single-core cost;
- ``pv validate DIR`` as a subprocess, start-up and imports included.

Each figure is the best of ``--repeat`` interleaved rounds, as wall-clock time and as CPU time
(this process and its workers, user + system): on a machine shared with other
work the wall-clock ratio of the pool moves with the load, the CPU ratio does not.
Usage:
    python benchmarks/bench_validate.py [--files 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def interleaved_best(repeat: int, variants: list[Callable[[], object]]) -> list[tuple[float, float]]:
    """(best wall seconds, best CPU seconds) per variant.

    Rounds run every variant once, in rotating order, so a burst of load from
    elsewhere on a shared machine hits all variants alike instead of one.
    """
    walls: list[list[float]] = [[] for _ in variants]
    cpus: list[list[float]] = [[] for _ in variants]
    for r in range(repeat):
        for k in range(len(variants)):
            i = (k + r) % len(variants)
            cpu, start = _cpu(), time.perf_counter()
            variants[i]()
            walls[i].append(time.perf_counter() - start)
            cpus[i].append(_cpu() - cpu)
    return [(min(w), min(c)) for w, c in zip(walls, cpus)]


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

        names = ["bare CSafeLoader parse (1 process)",
                 "pv validate, library call, default workers",
                 "pv validate, library call, 1 worker",
                 "pv validate, subprocess (start-up included)"]
        timings = interleaved_best(args.repeat, [bare_parse, pv_default, pv_one_worker,
                                                 pv_subprocess])
        rows = list(zip(names, timings))
        base, base_cpu = timings[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(paths)} contracts, {total / 1e6:.1f} MB, {cores} cores "
          f"(load average {load:.1f}), best of {args.repeat}")
    print(f"  {'':<46} {'wall':>9} {'MB/s':>6} {'ratio':>6}  {'CPU':>8} {'ratio':>6}")
    for name, (wall, cpu) in rows:
        print(f"  {name:<46} {wall:7.3f} s {total / wall / 1e6:6.1f} {wall / base:5.2f}x  "
              f"{cpu:6.3f} s {cpu / base_cpu:5.2f}x")
    ratio = rows[1][1][0] / base
    print(f"ratio pv validate / bare parse (wall, default workers): {ratio:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
