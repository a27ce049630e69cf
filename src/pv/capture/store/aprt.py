"""APRT v1 tensor files: the interface between engines.

One file holds one float32 tensor::

    bytes 0-3   b"APRT"
    bytes 4-7   u32 LE layer (0xFFFFFFFF for final_norm and lm_head; 0 for embedding)
    bytes 8-11  u32 LE element count N
    bytes 12-   N little-endian float32 values, bit-exact (NaN payloads, Inf, -0.0)

A file's digest is BLAKE3 of its bytes (header included, what ``b3sum``
prints): as collision-resistant as sha256 and about 4x faster, which matters
when a capture hashes a few hundred MiB beside a forward. Manifests written
before record ``sha256`` instead; ``digest_problem`` checks either. How files
make up a capture directory, with its manifest: ``pv.capture.store.directory``.
Every reader here also takes a ``PackedPath`` (``pv.capture.store.member``):
one such file stored as a member of a pack, read in place.

Only numpy and blake3 are needed here, so comparing captures never imports torch.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import numpy as np

from pv import bounded, files
from pv.capture.store.member import location
from pv.errors import PvError

MAGIC = b"APRT"
HEADER = struct.Struct("<4sII")
HEADER_SIZE = HEADER.size  # 12


class AprtError(PvError):
    """A file that is not a well-formed APRT v1 tensor."""


@dataclass(frozen=True)
class Header:
    layer: int
    count: int

    @property
    def nbytes(self) -> int:
        return HEADER_SIZE + 4 * self.count


def _checked_open(path: str | os.PathLike[str]) -> tuple[BinaryIO, Header]:
    """Open a regular file, read its header and check it against the file's real size.

    The size comes from the opened descriptor, so the values read afterwards
    through the returned file are the ones the header was checked against.
    Never allocates what the header claims: a header that promises more data
    than the file holds, or a size that disagrees with the count, is refused.
    The file is positioned at the first value. A pack member (``PackedPath``)
    is followed by other members: its pack must hold it, and may hold more.
    """
    p = bounded.show_path(path)
    where, offset, member = location(path)
    try:
        f = bounded.open_data(where, "APRT file")
    except bounded.DataFileError as exc:
        raise AprtError(str(exc)) from None
    try:
        try:
            if offset:
                f.seek(offset)
            raw = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size - offset
        except OSError as exc:
            raise AprtError(f"{p}: cannot read: {exc.strerror or exc}") from None
        if len(raw) < HEADER_SIZE:
            raise AprtError(f"{p}: truncated APRT header ({len(raw)} of {HEADER_SIZE} bytes)")
        magic, layer, count = HEADER.unpack(raw)
        if magic != MAGIC:
            raise AprtError(f"{p}: bad magic {magic!r}, expected {MAGIC!r}")
        expected = HEADER_SIZE + 4 * count
        if size < expected:
            raise AprtError(
                f"{p}: header claims {count} float32 values ({expected} bytes) "
                f"but the file holds {size} bytes (truncated)"
            )
        if size > expected and not member:
            raise AprtError(
                f"{p}: file is {size} bytes but its header claims {count} values "
                f"({expected} bytes): length disagrees with the header"
            )
    except BaseException:
        f.close()
        raise
    return f, Header(layer=layer, count=count)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check a header (see ``_checked_open``); FIFOs and devices are refused."""
    f, header = _checked_open(path)
    f.close()
    return header


def read(path: str | os.PathLike[str], shape: tuple[int, ...] | None = None) -> tuple[Header, np.ndarray]:
    """Read a whole APRT file into a float32 array (reshaped when ``shape`` is given)."""
    f, header = _checked_open(path)
    with f:
        if shape is not None and math.prod(shape) != header.count:
            raise AprtError(f"{path}: {header.count} values do not fit shape {list(shape)}")
        data = np.fromfile(f, dtype="<f4", count=header.count)
    if data.size != header.count:  # the file shrank under us
        raise AprtError(f"{path}: truncated while reading")
    arr = data.astype(np.float32, copy=False)
    return header, (arr.reshape(shape) if shape is not None else arr)


def memmap(path: str | os.PathLike[str]) -> tuple[Header, np.ndarray]:
    """Map the values read-only, without reading them (for chunked comparison)."""
    f, header = _checked_open(path)
    with f:
        if header.count == 0:
            return header, np.zeros(0, dtype="<f4")
        arr = np.memmap(f, dtype="<f4", mode="r", offset=f.tell(), shape=(header.count,))
    return header, arr


def _as_f32le(array: Any) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr, dtype="<f4")


def encode(layer: int, array: Any) -> bytes:
    """The bytes of one APRT file (small tensors and tests)."""
    arr = _as_f32le(array)
    return HEADER.pack(MAGIC, layer & 0xFFFFFFFF, arr.size) + arr.tobytes()


#: The manifest field holding each file's digest, and the digests a reader accepts.
DIGEST = "blake3"
DIGESTS = ("blake3", "sha256")


def _encoded(layer: int, array: Any) -> tuple[bytes, memoryview, str]:
    """One APRT file's header, its values as bytes (no copy when already float32 LE), and its BLAKE3."""
    arr = _as_f32le(array)
    header = HEADER.pack(MAGIC, layer & 0xFFFFFFFF, arr.size)
    view = memoryview(arr.reshape(-1)).cast("B")  # type: ignore[arg-type]
    digest = blake3.blake3(header)
    digest.update(view)
    return header, view, digest.hexdigest()


def write(path: str | os.PathLike[str], layer: int, array: Any) -> str:
    """Write one APRT file atomically (temp file + rename); returns its BLAKE3 (hex)."""
    p = Path(path)
    header, view, digest = _encoded(layer, array)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(view)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return digest


#: Flags for a stage file: a new name only, never through a symlink (O_NOFOLLOW
#: where the platform has it), binary on Windows.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def create(path: Path, layer: int, array: Any) -> str:
    """Write one APRT file under a fresh name, without a temp file; returns its BLAKE3 (hex).

    Only for the files of a capture directory, which ``directory.CaptureWriter`` owns: the
    manifest, written last, is what makes those files a capture, so a file cut
    short by a crash is never claimed and the temp file + rename of ``write``
    (a third of the writer's time per file) buys nothing there. A name that
    already exists (``--force`` over an earlier capture) is unlinked first, so
    a symlink or a hard link planted under it is replaced, never written through.
    """
    header, view, digest = _encoded(layer, array)
    try:
        fd = os.open(path, _CREATE, 0o644)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, _CREATE, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(view)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return digest


def recorded_digest(record: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """The (algorithm, hex digest) a manifest record names, BLAKE3 first; None when it names none."""
    for algorithm in DIGESTS:
        expected = (record or {}).get(algorithm)
        if isinstance(expected, str):
            return algorithm, expected
    return None


def digest_mismatch(path: str | os.PathLike[str], algorithm: str) -> str:
    """What a file whose bytes lost the digest its manifest records is told."""
    return (f"{bounded.show_path(path)}: contents differ from the {algorithm} its manifest "
            "records (changed after the capture was written; pass --no-verify to compare anyway)")


def digest_problem(path: str | os.PathLike[str], record: Mapping[str, Any]) -> str | None:
    """Why a file's bytes are not the ones its manifest record's digest names, or None.

    None too when the record names no digest (a capture another engine wrote).
    A pass of its own over the file; ``ValueReader`` checks while the values are read.
    """
    recorded = recorded_digest(record)
    if recorded is None or digest_file(path, recorded[0]) == recorded[1]:
        return None
    return digest_mismatch(path, recorded[0])


def require_digest(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """``digest_problem`` as an ``AprtError``, for readers that take one file at a time."""
    problem = digest_problem(path, record)
    if problem:
        raise AprtError(problem)


def digest_file(path: str | os.PathLike[str], algorithm: str = DIGEST, chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes with one of ``DIGESTS`` (what a manifest record holds).

    BLAKE3 reads the file through a memory map (about 5.5 GiB/s from the page
    cache here, against 3 GiB/s through ``read``), with the GIL released.
    """
    if location(path)[2]:
        return _digest_member(path, algorithm, chunk)
    if algorithm == "sha256":
        return files.sha256_file(path, chunk)
    if algorithm != "blake3":
        raise ValueError(f"unknown digest {algorithm!r} (known: {', '.join(DIGESTS)})")
    with files.open_regular(path) as f:  # refuses a FIFO or device by name
        if os.fstat(f.fileno()).st_size == 0:
            return blake3.blake3().hexdigest()  # an empty file cannot be mapped
    return blake3.blake3().update_mmap(path).hexdigest()


def _digest_member(path: str | os.PathLike[str], algorithm: str, chunk: int) -> str:
    """``digest_file`` of a pack member: its header and values, not the rest of the pack."""
    if algorithm not in DIGESTS:
        raise ValueError(f"unknown digest {algorithm!r} (known: {', '.join(DIGESTS)})")
    hasher: Any = blake3.blake3() if algorithm == "blake3" else hashlib.sha256()
    f, header = _checked_open(path)
    with f:
        hasher.update(HEADER.pack(MAGIC, header.layer, header.count))
        left = 4 * header.count
        while left:
            raw = f.read(min(chunk, left))
            if not raw:
                raise AprtError(f"{bounded.show_path(path)}: truncated while reading")
            hasher.update(raw)
            left -= len(raw)
    return str(hasher.hexdigest())


class ValueReader:
    """An APRT file's values, read front to back in chunks, every byte hashed on the way.

    When ``record`` (its manifest record) names a digest, the header and every
    value read go into that hasher as they are read; ``verify`` hashes what was
    not read (values before the first chunk asked for, or after the last) and
    says whether the file still has the digest recorded. The check so costs no
    second pass over the bytes. Values land in one reused buffer
    (``readinto``, no memory map: a file cut short while it is read is an
    error, not a SIGBUS); the array ``take`` returns is valid until the next call.
    """

    def __init__(self, path: str | os.PathLike[str], record: Mapping[str, Any] | None = None,
                 chunk: int = 1 << 18, expect: Header | None = None):
        self.path = path
        self._member = location(path)[2]  # a pack member is followed by others: no growth check
        self._f, self.header = _checked_open(path)
        if expect is not None and self.header != expect:
            self._f.close()
            raise AprtError(f"{bounded.show_path(path)}: header changed since the capture was read "
                            f"(layer {expect.layer}, {expect.count} values; "
                            f"now {self.header.layer}, {self.header.count})")
        self.size = self.header.count
        self.dtype = np.dtype(np.float32)
        self._recorded = recorded_digest(record)
        self._hasher: Any = None
        if self._recorded is not None:
            self._hasher = blake3.blake3() if self._recorded[0] == "blake3" else hashlib.sha256()
            self._hasher.update(HEADER.pack(MAGIC, self.header.layer, self.header.count))
        self._pos = 0  # values read so far
        self._buf = np.empty(max(1, min(chunk, self.size)), dtype="<f4")

    def take(self, start: int, stop: int) -> np.ndarray:
        """Values ``[start, stop)``; calls must move forward (``start`` not before the last ``stop``)."""
        if start < self._pos or stop > self.size:
            raise ValueError(f"values {start}:{stop} of {self.size} read out of order (at {self._pos})")
        self._skip(start)
        if stop - start > self._buf.size:
            self._buf = np.empty(stop - start, dtype="<f4")
        return self._fill(stop - start)

    def _fill(self, n: int) -> np.ndarray:
        out = self._buf[:n]
        raw = out.view(np.uint8)
        got = 0
        while got < raw.size:
            try:
                k = self._f.readinto(raw[got:])  # type: ignore[attr-defined]
            except OSError as exc:
                raise AprtError(f"{bounded.show_path(self.path)}: cannot read: {exc.strerror or exc}") from None
            if not k:
                raise AprtError(f"{bounded.show_path(self.path)}: truncated while reading")
            got += k
        if self._hasher is not None:
            self._hasher.update(raw)
        self._pos += n
        return out

    def _skip(self, stop: int) -> None:
        while self._pos < stop:
            self._fill(min(self._buf.size, stop - self._pos))

    def verify(self) -> str | None:
        """None when the file has the digest its record names (or names none), else why not."""
        if self._recorded is None:
            return None
        self._skip(self.size)
        if not self._member and self._f.read(1):  # grown since its header was read: not the bytes recorded
            return digest_mismatch(self.path, self._recorded[0])
        if self._hasher.hexdigest() != self._recorded[1]:
            return digest_mismatch(self.path, self._recorded[0])
        return None

    def close(self) -> None:
        self._f.close()


def verified(*values: Any) -> str | None:
    """The first problem ``ValueReader.verify`` (or a wrapper's ``verify``) finds among ``values``
    (arrays are skipped)."""
    return next(filter(None, (v.verify() for v in values if callable(getattr(v, "verify", None)))), None)


def close_readers(*values: Any) -> None:
    for v in values:
        if callable(getattr(v, "close", None)) and not isinstance(v, np.ndarray):
            v.close()


def iter_values(path: str | os.PathLike[str], chunk: int = 1 << 20) -> Iterator[np.ndarray]:
    """Yield the values of an APRT file in float32 chunks of at most ``chunk`` elements."""
    f, header = _checked_open(path)
    buf = np.empty(min(chunk, max(header.count, 1)), dtype="<f4")
    remaining = header.count
    with f:
        while remaining:
            n = min(chunk, remaining)
            view = memoryview(buf[:n]).cast("B")  # type: ignore[arg-type]
            got = f.readinto(view)  # type: ignore[attr-defined]
            if got != 4 * n:
                raise AprtError(f"{path}: truncated while reading")
            remaining -= n
            yield buf[:n]
