"""Reading tensors other engines dumped: ``.npy``, ``.npz`` and safetensors, never pickle.

Every reader returns ``{name: ndarray}``. ``.npy`` files are named by their
stem, ``.npz`` members by their key, safetensors tensors by their header name.
``read_typed`` adds each tensor's dtype as dumped: bfloat16 has no numpy dtype
and is widened to float32 on reading, so the array alone would hide it.
Object arrays (which numpy can only store by pickling) are refused, and the
safetensors header is checked against the file size before anything is read,
so a dump from an unknown source cannot run code or allocate what it claims.
Only numpy is needed.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pv import files
from pv.errors import PvError

SUFFIXES = (".npy", ".npz", ".safetensors")

#: safetensors dtype -> numpy dtype (BF16 is widened by hand, numpy has none).
_ST_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
#: Largest safetensors JSON header accepted (the format's own limit is 100 MB).
MAX_HEADER = 100 << 20


def _numeric(name: str, arr: np.ndarray, where: Path) -> np.ndarray:
    if arr.dtype.hasobject or arr.dtype.kind not in "fiub":
        raise PvError(f"{where}: tensor '{name}' has dtype {arr.dtype}, not a numeric array")
    return arr


def read_npy(path: Path) -> dict[str, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refused
        raise PvError(f"{path}: not a plain .npy array ({exc})") from None
    except OSError as exc:
        raise PvError(f"{path}: cannot read: {exc}") from None
    return {path.stem: _numeric(path.stem, np.asarray(arr), path)}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                out[key] = _numeric(key, np.asarray(z[key]), path)
    except (ValueError, zipfile.BadZipFile) as exc:
        raise PvError(f"{path}: not a plain .npz archive ({exc})") from None
    except OSError as exc:
        raise PvError(f"{path}: cannot read: {exc}") from None
    return out


def read_safetensors(path: Path, dtypes: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Parse the header (u64 LE length + JSON) and read each tensor from its byte range;
    ``dtypes`` (when given) receives the names of the tensors dumped as bfloat16."""
    with files.open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise PvError(f"{path}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise PvError(f"{path}: safetensors header claims {n} bytes; the file holds {size}")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PvError(f"{path}: unreadable safetensors header: {exc}") from None
        if not isinstance(header, dict):
            raise PvError(f"{path}: safetensors header is not a JSON object")
        base = 8 + n
        out: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _ST_DTYPES[str(info["dtype"])]
                shape = tuple(int(x) for x in info["shape"])
                lo, hi = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise PvError(f"{path}: tensor '{name}': bad or unsupported header entry {info!r}") \
                    from None
            count = int(np.prod(shape, dtype=np.int64))
            if lo < 0 or hi < lo or base + hi > size or hi - lo != count * dtype.itemsize:
                raise PvError(f"{path}: tensor '{name}': byte range [{lo}, {hi}) does not fit "
                              f"shape {list(shape)} of {info['dtype']} in a {size}-byte file")
            f.seek(base + lo)
            raw = f.read(hi - lo)
            arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
            if info["dtype"] == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
                if dtypes is not None:
                    dtypes[name] = "bfloat16"
            out[name] = np.array(arr)
        return out


_READERS = {".npy": read_npy, ".npz": read_npz, ".safetensors": read_safetensors}


def read_dump(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of one dump file, by name."""
    return {name: arr for name, (arr, _) in read_typed(path).items()}


def read_typed(path: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, str]]:
    """The tensors of one dump file, by name, each with its dtype as dumped (``float16``,
    ``bfloat16``, ``float32``, ``int32``, ...)."""
    p = Path(path)
    if p.suffix.lower() in (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"):
        raise PvError(f"{p}: pickled tensors are never read (they can run code); "
                      f"save them as .npy, .npz or .safetensors")
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise PvError(f"{p}: unknown dump format; pv imports {', '.join(SUFFIXES)}")
    if not p.exists():
        raise PvError(f"{p}: no such file")
    if not files.is_regular(p):
        raise PvError(f"{p}: not a regular file")
    bf16: dict[str, str] = {}
    try:
        arrays = read_safetensors(p, bf16) if reader is read_safetensors else reader(p)
    except OSError as exc:
        raise PvError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return {name: (arr, bf16.get(name, str(arr.dtype))) for name, arr in arrays.items()}


def expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; a directory stands for the dump files directly inside it, sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in SUFFIXES)
            if not found:
                raise PvError(f"{p}: no {', '.join(SUFFIXES)} files in this directory")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise PvError("no dump files given")
    return out
