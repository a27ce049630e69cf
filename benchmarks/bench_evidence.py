"""pv status and pv gate on an evidence store that has grown: 1,000 and 10,000 records.

    python benchmarks/bench_evidence.py [--counts 1000,10000] [--repeat 3]

A repository that runs ``pv falsify`` in CI on every merge gathers thousands of
records. This builds a small project (three falsifiers), runs ``pv falsify`` once
for real records, then extends each falsifier's chain to the requested number of
records in all (each a sealed copy of a real one, chained to the one before,
committed), and times ``pv status`` and ``pv gate`` (against the commit before
the records, so the gate also checks every record of its history) in fresh
processes. Target: both within 1 s at 10,000 records.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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


def grow(root: Path, total: int) -> int:
    """Extend the demo's chains to ``total`` records in all; returns how many were added."""
    folders = sorted(p for p in (root / "evidence" / "demo-v1").iterdir() if p.is_dir())
    per = max(1, total // len(folders))
    added = 0
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    for folder in folders:
        chain = store.load_stored(root / "evidence", "demo-v1", folder.name)
        base, prev = chain[-1].record, chain[-1].file_sha256
        for i in range(per - len(chain)):
            ts = start + timedelta(seconds=i)
            rec = replace(base, previous=prev, started_at=iso(ts), finished_at=iso(ts)).sealed(None)
            data = rec.to_json().encode("utf-8")
            (folder / store.record_name(ts, "bench", 1)).write_bytes(data)
            prev = hashlib.sha256(data).hexdigest()
            added += 1
    return added


def timed(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False,
                              env=dict(os.environ, PV_EVIDENCE_KEY=""))
        times.append(time.perf_counter() - t0)
        code = done.returncode
    return statistics.median(times), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pv = [sys.executable, "-m", "pv.cli"]
    print(f"{'records':>8}  {'pv status s':>11}  {'pv gate s':>9}  {'gate exit':>9}")
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
            grow(demo.root, total)
            demo.commit(f"{total} records")
            n = sum(1 for _ in (demo.root / "evidence").rglob("*.json"))
            status, _ = timed([*pv, "status"], demo.root, args.repeat)
            gate, code = timed([*pv, "gate", "--baseline", "HEAD~1"], demo.root, args.repeat)
            print(f"{n:>8}  {status:>11.2f}  {gate:>9.2f}  {code:>9}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
