"""pv status and pv gate on an evidence store that has grown: 1,000 and 10,000 records.

    python benchmarks/bench_evidence.py [--counts 1000,10000] [--repeat 3] [--distinct]

A repository that runs ``pv falsify`` in CI on every merge gathers thousands of
records. This builds a small project (three falsifiers), runs ``pv falsify`` once
for real records, then extends each falsifier's chain to the requested number of
records in all (each a sealed copy of a real one, chained to the one before,
committed), and times ``pv status`` and ``pv gate`` (against the commit before
the records, so the gate also checks every record of its history) in fresh
processes. Target: both within 1 s at 10,000 records.

Each figure is the median wall time, with the median CPU time (user + system) of the
process beside it: on a shared machine the wall time also counts the other processes.
The copies differ from their original in their chain link and times only, so a reader
that parses each distinct member text once sees the rest repeat; ``--distinct`` gives
every copy its own test durations too (as real runs have), so that member differs from
record to record. No cache outlives a process: every figure is a cold run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "falsify"))

from demo_project import make_demo

from pv.falsify import store
from pv.falsify.records import iso


def grow(root: Path, total: int, distinct: bool = False) -> int:
    """Extend the demo's chains to ``total`` records in all; returns how many were added.
    ``distinct``: every copy's tests get their own durations (a member that then never repeats)."""
    folders = sorted(p for p in (root / "evidence" / "demo-v1").iterdir() if p.is_dir())
    per = max(1, total // len(folders))
    added = 0
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    for folder in folders:
        chain = store.load_stored(root / "evidence", "demo-v1", folder.name)
        base, prev = chain[-1].record, chain[-1].file_sha256
        for i in range(per - len(chain)):
            ts = start + timedelta(seconds=i)
            rec = replace(base, previous=prev, started_at=iso(ts), finished_at=iso(ts))
            if distinct:
                rec = replace(rec, tests=tuple(replace(t, duration_s=t.duration_s + i * 1e-6) for t in rec.tests))
            rec = rec.sealed(None)
            data = rec.to_json().encode("utf-8")
            (folder / store.record_name(ts, "bench", 1)).write_bytes(data)
            prev = hashlib.sha256(data).hexdigest()
            added += 1
    return added


def timed(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, float, int]:
    """Median wall seconds, median CPU seconds (user + system) and the last exit code."""
    times, cpus, code = [], [], 0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False,
                              env=dict(os.environ, PV_EVIDENCE_KEY=""))
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        code = done.returncode
    return statistics.median(times), statistics.median(cpus), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--distinct", action="store_true", help="give every copy its own test durations")
    args = ap.parse_args()
    pv = [sys.executable, "-m", "pv.cli"]
    print(f"{'records':>8}  {'pv status s':>11}  {'(cpu s)':>7}  {'pv gate s':>9}  {'(cpu s)':>7}  {'gate exit':>9}")
    for total in (int(x) for x in args.counts.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="pv-bench-evidence-"))
        try:
            (tmp / "repo").mkdir()
            demo = make_demo(tmp / "repo")
            demo.behave(two_live="skip-absent", three="skip-absent")
            done = subprocess.run([*pv, *demo.args()], cwd=demo.root, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"pv falsify failed: {done.stdout[-400:]} {done.stderr[-400:]}")
            demo.commit("first evidence")
            grow(demo.root, total, args.distinct)
            demo.commit(f"{total} records")
            n = sum(1 for _ in (demo.root / "evidence").rglob("*.json"))
            status, status_cpu, _ = timed([*pv, "status"], demo.root, args.repeat)
            gate, gate_cpu, code = timed([*pv, "gate", "--baseline", "HEAD~1"], demo.root, args.repeat)
            print(f"{n:>8}  {status:>11.2f}  {status_cpu:>7.2f}  {gate:>9.2f}  {gate_cpu:>7.2f}  {code:>9}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
