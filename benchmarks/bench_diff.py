"""How fast is ``pv diff`` compared with just reading the same bytes?

Writes two capture directories (engine under test and reference, >= 2 GB in
all) into a temporary directory, makes sure they are in the page cache, then
measures side by side in one run, the four taking turns:

* raw: reading every file of both captures with ``readinto`` into one reused
  buffer (the ceiling for anything that looks at every byte);
* pv diff: ``diff_captures`` on the two directories, every metric included
  (sums per position, max and top-K, NaN/Inf bookkeeping), each file's BLAKE3
  checked against its manifest on the bytes the metrics read; on one thread,
  then with the default worker threads;
* pv diff --no-verify: the same without that check (what the check costs).

It prints each throughput from the fastest and from the median repetition,
and their ratio to raw's (target: >= 0.8x with the check on), then deletes
the captures. Memory stays bounded: tensors are generated and written one at
a time, and the diff reads in chunks.

    python benchmarks/bench_diff.py [--gb 2.1] [--repeat 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pv.capture.store import aprt
from pv.capture.store.writer import CaptureWriter
from pv.compare.diff import default_workers, diff_captures

S, H = 4096, 4096  # one [S, H] float32 stage tensor = 64 MiB
STAGES = ("attn_norm", "post_attn_residual", "ffn_norm", "post_ffn_residual")


def write_pair(root: Path, total_bytes: float) -> tuple[Path, Path, int]:
    """Two captures of identical layout; B = A + small noise. Returns their paths and byte count."""
    per_tensor = S * H * 4
    n_tensors = int(np.ceil(total_bytes / (2 * per_tensor)))
    rng = np.random.default_rng(0)
    a_dir, b_dir = root / "a", root / "b"
    written = 0
    with (
        CaptureWriter(a_dir, {"dtype": "float32"}) as wa,
        CaptureWriter(b_dir, {"dtype": "float32"}) as wb,
    ):
        for i in range(n_tensors):
            layer, stage = divmod(i, len(STAGES))
            ref = rng.standard_normal((S, H), dtype=np.float32)
            test = ref + np.float32(1e-6) * rng.standard_normal((S, H), dtype=np.float32)
            wa.write(STAGES[stage], layer, test, dtype_captured="float32")
            wb.write(STAGES[stage], layer, ref, dtype_captured="float32")
            written += 2 * (aprt.HEADER_SIZE + per_tensor)
            del ref, test
    return a_dir, b_dir, written


def files_of(*roots: Path) -> list[Path]:
    return sorted(p for r in roots for p in r.rglob("*.bin"))


def raw_read(files: list[Path], buf: bytearray) -> int:
    view = memoryview(buf)
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(repeat: int, runs: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Each run timed ``repeat`` times, the runs taking turns (a burst of load on
    the shared machine then hits all of them, not one)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--gb", type=float, default=2.1, help="total size of both captures, GB (default 2.1)"
    )
    ap.add_argument("--repeat", type=int, default=7, help="timed repetitions; min and median are reported")
    ap.add_argument("--dir", default=None, help="where to create the temporary captures")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="pv-bench-diff-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        a_dir, b_dir, nbytes = write_pair(root, args.gb * 1e9)
        print(f"wrote {nbytes / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s under {root}")
        files = files_of(a_dir, b_dir)
        buf = bytearray(4 << 20)
        raw_read(files, buf)  # warm the page cache
        report = diff_captures(a_dir, b_dir)
        assert report.ok, "the benchmark captures should agree within float32 tolerance"
        workers = default_workers()
        times = interleaved(args.repeat, {
            "raw": lambda: raw_read(files, buf),
            "one": lambda: diff_captures(a_dir, b_dir, workers=1),
            "diff": lambda: diff_captures(a_dir, b_dir),
            "nover": lambda: diff_captures(a_dir, b_dir, verify=False),
        })
        labels = {
            "raw": "raw readinto (one thread, reused 4 MiB buffer)",
            "one": "pv diff, one thread",
            "diff": f"pv diff, default ({workers} worker threads)",
            "nover": "pv diff --no-verify, default threads",
        }
        print(f"{args.repeat} interleaved repetitions; GB/s from the min / median time; ratio to raw's")
        raw_min, raw_med = min(times["raw"]), statistics.median(times["raw"])
        for name, label in labels.items():
            t_min, t_med = min(times[name]), statistics.median(times[name])
            line = f"{label + ':':48s} {nbytes / t_min / 1e9:6.2f} / {nbytes / t_med / 1e9:6.2f} GB/s"
            if name != "raw":
                line += f"  ratio {raw_min / t_min:.2f}x / {raw_med / t_med:.2f}x"
            print(line)
        check = statistics.median(times["diff"]) / statistics.median(times["nover"]) - 1
        print(f"the digest check costs {check:+.0%} (median diff against median --no-verify); "
              f"target: pv diff with the check >= 0.8x raw")
        print(f"pairs compared: {report.summary()['pairs']}, cpus: {os.cpu_count()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
