"""Fuzz campaign over every reader of files that other people write.

    python benchmarks/fuzz.py --minutes 10                 # the time split evenly over the readers
    python benchmarks/fuzz.py --cases 10000                # that many cases per reader
    python benchmarks/fuzz.py --cases 2000 --reader capture --reader tolerance
    python benchmarks/fuzz.py --replay .fuzz/findings/capture/0003/case.repr

The readers and their cases are those of the property tests (``tests/fuzz``):
the same Hypothesis strategies and the same judgement (a clean result or a
one-line error; never an internal error, a multi-line message, a hang or a
changed file), here with a budget of minutes instead of seconds. Per reader
it prints the cases run, the findings by kind, the time of the first case
(imports and schema compilation included), the worst CPU time of any later
case with its wall time and size in bytes (that case is kept in
``.fuzz/slowest/<reader>/case.repr`` for ``--replay``) and the worst peak of
Python-level memory of one case (``tracemalloc``, numpy included, on every
10th case by default since tracing doubles a case's time; memory maps are
page cache and not counted) with that case's size (kept in
``.fuzz/heaviest/<reader>/case.repr``).
``--jobs N`` runs the readers in N processes.

Every finding is saved under ``.fuzz/findings/<reader>/<n>/`` (git-ignored):
``case.repr`` (the drawn case as a Python literal, what ``--replay`` reads),
``outcome.txt``, and a copy of the regular files the case put on disk.
"""

from __future__ import annotations

import argparse
import ast
import gc
import os
import shutil
import stat
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzz import harness
from fuzz.readers import TARGETS
from fuzz.readers import cases as case_strategy
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

FINDINGS_DIR = ROOT / ".fuzz" / "findings"


class _Stop(BaseException):
    """The reader's time budget is spent (a BaseException so Hypothesis does not shrink it)."""


@dataclass
class Stats:
    reader: str
    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    first_s: float = 0.0
    #: The case that took the most CPU time (wall time on a shared box includes waiting).
    worst_cpu: float = 0.0
    worst_s: float = 0.0
    slowest: Any = field(default=None, repr=False)
    peak_size: int = 0
    heaviest: Any = field(default=None, repr=False)
    worst_size: int = 0
    worst_peak: int = 0
    total_s: float = 0.0
    saved: list[str] = field(default_factory=list)

    @property
    def findings(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k in harness.FINDINGS)


def _case_size(case: Any) -> int:
    if isinstance(case, (bytes, str)):
        return len(case)
    if isinstance(case, dict):
        return sum(_case_size(v) for v in case.values())
    if isinstance(case, (list, tuple)):
        return sum(_case_size(v) for v in case)
    return 0


def _copy_regular(src: Path, dst: Path) -> None:
    """Regular files and links of a case folder (FIFOs and devices are noted, never opened)."""
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out = dst / p.relative_to(src)
            st_ = os.lstat(p)
            out.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(st_.st_mode):
                out.with_name(out.name + ".link").write_text(os.readlink(p))
            elif stat.S_ISREG(st_.st_mode):
                shutil.copyfile(p, out)
            elif not stat.S_ISDIR(st_.st_mode):
                out.with_name(out.name + ".special").write_text(oct(stat.S_IFMT(st_.st_mode)))


def _save(stats: Stats, case: Any, outcome: harness.Outcome, workdir: Path) -> None:
    n = len(stats.saved)
    while (folder := FINDINGS_DIR / stats.reader / f"{n:04d}").exists():
        n += 1  # earlier campaigns' reproducers are kept
    folder.mkdir(parents=True)
    (folder / "case.repr").write_text(repr({"reader": stats.reader, "case": case}) + "\n")
    (folder / "outcome.txt").write_text(f"{outcome.kind}: {outcome.detail}\n")
    _copy_regular(workdir, folder / "files")
    stats.saved.append(str(folder.relative_to(ROOT)))


def run_reader(name: str, cases: int | None, seconds: float | None, memory_every: int, rng_seed: int) -> Stats:
    target = TARGETS[name]
    stats = Stats(name)
    limit = cases if cases is not None else 10**9
    deadline = time.monotonic() + seconds if seconds is not None else None

    @seed(rng_seed)
    @settings(max_examples=limit, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False, print_blob=False)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise _Stop
        if stats.cases >= limit:
            raise _Stop
        case = data.draw(case_strategy(name))
        traced = memory_every > 0 and stats.cases % memory_every == 0
        with harness.scratch(name) as tmp:
            if traced:
                tracemalloc.start()
            # Hypothesis keeps every case it drew alive; frozen, those objects are not scanned
            # by a garbage collection that happens to fall inside a case (1-2 s late in a run).
            gc.freeze()
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                outcome = target.run(case, Path(tmp))
            finally:
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                gc.unfreeze()
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            else:
                peak = 0
            stats.cases += 1
            if stats.cases % 1000 == 0:
                print(f"  {name}: {stats.cases} cases, {stats.findings} findings", flush=True)
            stats.total_s += dt
            stats.outcomes[outcome.kind] = stats.outcomes.get(outcome.kind, 0) + 1
            if stats.cases == 1:
                stats.first_s = dt  # pays for imports and schema compilation: kept apart
            elif (not traced or memory_every == 1) and cpu > stats.worst_cpu:  # tracing slows a case
                stats.worst_cpu, stats.worst_s, stats.worst_size = cpu, dt, _case_size(case)
                stats.slowest = case
            if peak > stats.worst_peak:
                stats.worst_peak, stats.peak_size, stats.heaviest = peak, _case_size(case), case
            if outcome.finding:
                _save(stats, case, outcome, Path(tmp))
                print(f"  {name}: {outcome.kind}: {outcome.detail[:160]} -> {stats.saved[-1]}",
                      flush=True)

    try:
        one()
    except _Stop:
        pass
    except Exception as exc:  # noqa: BLE001 - Hypothesis' own end (e.g. a replay mismatch)
        if not (deadline is not None and time.monotonic() > deadline) and stats.cases < limit:
            print(f"  {name}: campaign stopped early: {type(exc).__name__}: {exc}", flush=True)
    return stats


def _run_one(work: tuple[str, int | None, float | None, int, int]) -> Stats:
    name, cases, seconds, memory_every, rng_seed = work
    stats = run_reader(name, cases, seconds, memory_every, rng_seed)
    for kind, case in (("slowest", stats.slowest), ("heaviest", stats.heaviest)):
        if case is not None:
            folder = ROOT / ".fuzz" / kind / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "case.repr").write_text(repr({"reader": name, "case": case}) + "\n")
    stats.slowest = stats.heaviest = None  # not sent back between processes
    print(f"  {name}: done, {stats.cases} cases, {stats.findings} findings", flush=True)
    return stats


def replay(path: Path) -> int:
    data = ast.literal_eval(path.read_text())
    target = TARGETS[data["reader"]]
    with tempfile.TemporaryDirectory(prefix="pv-fuzz-replay-") as tmp:
        outcome = target.run(data["case"], Path(tmp))
    print(f"{data['reader']}: {outcome.kind}: {outcome.detail}")
    return 1 if outcome.finding else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="total time, split over the readers")
    parser.add_argument("--cases", type=int, default=None, help="cases per reader")
    parser.add_argument("--reader", action="append", choices=list(TARGETS), help="repeatable; default all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-every", type=int, default=10, metavar="N",
                        help="trace the memory of every Nth case (tracemalloc doubles a case's "
                             "time); 1: every case, 0: none")
    parser.add_argument("--jobs", type=int, default=1, help="readers run in this many processes")
    parser.add_argument("--replay", type=Path, default=None, help="run one saved case.repr again")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay)
    readers = args.reader or list(TARGETS)
    if args.minutes is None and args.cases is None:
        args.minutes = 1.0
    seconds = args.minutes * 60 / len(readers) if args.minutes is not None else None
    memory = args.memory_every > 0
    jobs = max(1, min(args.jobs, len(readers)))
    if jobs > 1 and seconds is not None:
        seconds *= jobs  # the readers share the minutes in parallel, not one after another
    case_limit = f"{args.cases} cases" if args.cases else "no case limit"
    time_limit = f"{seconds:.0f} s" if seconds else "no time limit"
    print(f"fuzz campaign: readers {', '.join(readers)}; {case_limit} and {time_limit} per reader; "
          f"seed {args.seed}", flush=True)
    t0 = time.monotonic()
    work = [(name, args.cases, seconds, args.memory_every, args.seed) for name in readers]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_run_one, work))
    else:
        results = [_run_one(w) for w in work]
    for stats in results:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats.outcomes.items()))
        print(f"  {stats.reader}: {stats.cases} cases in {stats.total_s:.0f} s ({kinds})", flush=True)
    print(f"  wall time {time.monotonic() - t0:.0f} s with {jobs} process(es)")
    print()
    header = (f"{'reader':<13} {'cases':>7} {'findings':>8} {'hangs':>5} {'first s':>7} "
              f"{'worst cpu s':>11} {'(wall s)':>8} {'(bytes)':>9} {'mean ms':>8} {'peak MiB':>8} "
              f"{'(bytes)':>9}")
    print(header)
    print("-" * len(header))
    for s in results:
        mean = 1000 * s.total_s / max(s.cases, 1)
        print(f"{s.reader:<13} {s.cases:>7} {s.findings:>8} {s.outcomes.get(harness.HANG, 0):>5} "
              f"{s.first_s:>7.3f} {s.worst_cpu:>11.3f} {s.worst_s:>8.3f} {s.worst_size:>9} {mean:>8.1f} "
              f"{(s.worst_peak / 2**20 if memory else float('nan')):>8.1f} {s.peak_size:>9}")
    saved = [p for s in results for p in s.saved]
    if saved:
        print(f"\n{len(saved)} reproducers under {FINDINGS_DIR.relative_to(ROOT)}/ "
              "(python benchmarks/fuzz.py --replay <folder>/case.repr)")
    return 1 if saved else 0


if __name__ == "__main__":
    sys.exit(main())
