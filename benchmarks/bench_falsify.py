"""Time `pv falsify --contract trace-attn-sub-stages-v1` on the CPU with the default model.

Target: under 30 s. Side by side in one run, for scale: the same falsifier tests
run by plain pytest (no binding, no evidence, no promotion), so the ratio is the
cost pv adds around the tests. Evidence goes to a temporary folder and the
contract is not rewritten (--no-update), so the working tree is left as it was.

    python benchmarks/bench_falsify.py [--repeat N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = "trace-attn-sub-stages-v1"
#: The contract's own test file: plain pytest runs exactly the tests pv falsify selects.
TESTS = "falsifiers/test_attn_sub_stages.py"
TARGET_S = 30.0


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0,):
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    pv_times, pytest_times = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="pv-bench-evidence-") as ev:
            pv_times.append(timed([sys.executable, "-m", "pv.cli", "falsify", "--contract", CONTRACT,
                                   "--no-update", "--evidence", ev]))
        pytest_times.append(timed([sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider"]))
    pv_s, py_s = min(pv_times), min(pytest_times)
    print(f"pv falsify --contract {CONTRACT} (CPU, synthetic model): {pv_s:.1f} s "
          f"(target < {TARGET_S:.0f} s: {'met' if pv_s < TARGET_S else 'MISSED'})")
    print(f"plain pytest {TESTS} (same tests, no evidence): {py_s:.1f} s")
    print(f"ratio pv falsify / plain pytest:                           {pv_s / py_s:.2f}x")


if __name__ == "__main__":
    main()
