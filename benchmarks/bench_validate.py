"""Benchmark: ``pv validate`` against a bare libyaml parse of the same files.

Three sets of N contracts (default 2,000) in a temporary directory: generated
ones (10-15 KB, valid, few findings), and real-shaped ones copied from the corpus
of real contracts beside the checkout, once with ids made unique per copy (about
2.4 findings per file) and once with ids repeating across copies (every copy
after the first has a duplicate-id finding per falsifier). For each set, side
by side in one run:

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
from gen_contracts import copy_corpus, generate

from pv.contract.validate import validate_paths

#: Real contracts beside the checkout (read-only), copied to make real-shaped sets.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "contracts-in-the-wild"


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


def measure(label: str, folder: Path, paths: list[Path], repeat: int, clean: bool) -> float:
    """Print one table for one set of files; return the wall ratio (default workers / bare)."""
    total = sum(p.stat().st_size for p in paths)
    findings = len(validate_paths([folder], check_evidence=False).findings)

    def bare_parse() -> None:
        for p in paths:
            yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)

    def pv_default() -> None:
        report = validate_paths([folder], check_evidence=False)
        assert report.files == len(paths) and (report.ok or not clean), report.summary()

    def pv_one_worker() -> None:
        validate_paths([folder], check_evidence=False, jobs=1)

    def pv_subprocess() -> None:
        done = subprocess.run([sys.executable, "-m", "pv.cli", "validate", "--no-check-evidence",
                               str(folder)], capture_output=True, text=True, check=False)
        assert done.returncode in ((0,) if clean else (0, 1)), done.stderr[-500:]

    names = ["bare CSafeLoader parse (1 process)",
             "pv validate, library call, default workers",
             "pv validate, library call, 1 worker",
             "pv validate, subprocess (start-up included)"]
    timings = interleaved_best(repeat, [bare_parse, pv_default, pv_one_worker, pv_subprocess])
    base, base_cpu = timings[0]
    print(f"{label}: {len(paths)} contracts, {total / 1e6:.1f} MB, {findings} findings, "
          f"best of {repeat}")
    print(f"  {'':<46} {'wall':>9} {'MB/s':>6} {'ratio':>6}  {'CPU':>8} {'ratio':>6}")
    for name, (wall, cpu) in zip(names, timings):
        print(f"  {name:<46} {wall:7.3f} s {total / wall / 1e6:6.1f} {wall / base:5.2f}x  "
              f"{cpu:6.3f} s {cpu / base_cpu:5.2f}x")
    return timings[1][0] / base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="real contracts to copy for the real-shaped sets [default: %(default)s]")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cores} cores, load average {load:.1f} at start")
    ratios: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        folder = Path(tmp) / "generated"
        ratios.append(("generated", measure("generated", folder, generate(folder, args.files),
                                            args.repeat, clean=True)))
        if args.corpus.is_dir():
            for unique in (True, False):
                label = f"real-shaped, ids {'unique per copy' if unique else 'repeating'}"
                folder = Path(tmp) / ("unique" if unique else "repeating")
                paths = copy_corpus(args.corpus, folder, args.files, unique_ids=unique)
                ratios.append((label, measure(label, folder, paths, args.repeat, clean=False)))
        else:
            print(f"(no corpus at {args.corpus}: real-shaped sets skipped)")
    for label, ratio in ratios:
        print(f"ratio pv validate / bare parse (wall, default workers), {label}: {ratio:.2f}x "
              "(target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
