"""The one place pv touches files at the byte level: atomic writes, hashing, safe reads.

Atomic writes serve evidence records, rewritten contracts, capture files and
manifests: a reader (or a crash) must only ever see the old file or the new one: data goes
to a temporary file in the destination folder, is flushed to disk, and then
takes the final name in one ``rename``/``link`` system call. Same folder means
same filesystem, so the rename cannot degrade into a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def replace_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, keeping the file's permission bits."""
    target = Path(path)
    tmp = _write_temp(target, data)
    try:
        try:
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        except FileNotFoundError:
            pass
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(target.parent)


def create_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with ``data`` atomically; FileExistsError if the name is taken.

    ``os.link`` refuses an existing destination, so two writers that somehow
    chose the same name can never overwrite each other's record.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(target, data)
    try:
        os.link(tmp, target)
    finally:
        _unlink_quietly(tmp)
    _fsync_dir(target.parent)


def replace_text(path: str | os.PathLike[str], text: str) -> None:
    """``replace_bytes`` for UTF-8 text."""
    replace_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file's bytes (FIFOs and devices are refused, see ``open_regular``)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Pseudo-filesystems whose "regular" files are not data (size 0, generated on read, may
#: block): refused by resolved path. Devices anywhere are refused by their file type.
PSEUDO_ROOTS = ("/proc", "/sys")
#: Largest source or test file pv parses or searches (``ast``, a word search): no
#: hand-written module comes near it, and nothing bigger is read whole.
MAX_SOURCE_BYTES = 16 << 20


class NotRegularFileError(OSError):
    """A path that is a FIFO, device, socket or folder where a data file is expected."""


class PseudoFileError(NotRegularFileError):
    """A ``/proc`` or ``/sys`` path: it claims to be a regular file but is generated on read."""


class TooLargeError(ValueError):
    """A regular file over the reader's bound; ``size`` is its size when known before reading."""

    def __init__(self, path: str | os.PathLike[str], limit: int, size: int | None = None) -> None:
        super().__init__(f"{os.fspath(path)}: larger than {limit} bytes")
        self.limit = limit
        self.size = size


def _is_pseudo(path: str | os.PathLike[str]) -> bool:
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    return any(real == root or real.startswith(root + os.sep) for root in PSEUDO_ROOTS)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading only if it is a regular file (and no ``/proc`` or ``/sys`` one).

    The check is made on the opened descriptor (``O_NONBLOCK`` so a FIFO with no
    writer cannot block the open itself), so a path swapped between a check and
    the open cannot smuggle in a FIFO or a device.
    """
    if _is_pseudo(path):
        raise PseudoFileError(f"{os.fspath(path)}: a /proc or /sys path, not a data file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{os.fspath(path)}: not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int, chunk: int = 1 << 20) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes: the one way pv reads a file whole.

    Opened first, then checked on the descriptor (``open_regular``); the size the
    descriptor reports is refused up front (``TooLargeError`` with ``size``), and
    the read itself stops one byte past ``limit``, so a file that grows while it is
    read is refused too (``size`` None). Read in pieces: ``read(limit + 1)`` would
    allocate the whole bound up front, whatever the file's size. Errors: ``OSError``
    (``NotRegularFileError``, ``PseudoFileError``, ``FileNotFoundError``...) and
    ``TooLargeError`` (a ``ValueError``).
    """
    parts: list[bytes] = []
    size = 0
    with open_regular(path) as f:
        claimed = os.fstat(f.fileno()).st_size
        if claimed > limit:
            raise TooLargeError(path, limit, claimed)
        while size <= limit:
            block = f.read(min(chunk, limit + 1 - size))
            if not block:
                break
            parts.append(block)
            size += len(block)
    if size > limit:
        raise TooLargeError(path, limit)
    return b"".join(parts)


def read_text(path: str | os.PathLike[str], limit: int = MAX_SOURCE_BYTES) -> str:
    """``read_regular`` decoded as UTF-8, undecodable bytes replaced (for ``ast`` and word searches)."""
    return read_regular(path, limit).decode("utf-8", errors="replace")


def is_regular(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file (following symlinks), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` body.

    Serialises read-modify-write cycles between processes (two ``pv falsify`` runs on
    one contract). Where ``fcntl`` is missing the body runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target}: still locked by another process after {timeout_s:.0f} s") \
                        from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


#: Names that may be a folder under ``evidence/`` (a contract or falsifier id): letters,
#: digits, ``._-``, at most 128; what ``pv validate`` accepts as a safe id.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_safe_name(part: object) -> bool:
    """Whether ``part`` can name a folder without leaving its parent (no ``/``, no ``..``)."""
    return isinstance(part, str) and bool(SAFE_NAME.match(part)) and part not in (".", "..")


@contextlib.contextmanager
def contract_locked(evidence_dir: str | os.PathLike[str], contract_id: str,
                    timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock every rewrite of contract ``contract_id`` takes, ``<evidence>/<id>/.lock``.

    ``pv falsify``, ``pv discharge``, ``pv acknowledge`` and ``pv validate --fix`` each read
    the contract, decide and write it back; one lock per contract keeps two of them from
    interleaving (the second waits, then reads what the first wrote). Refused, in one line
    (``PvError``), for an id that cannot name a folder and when the lock stays taken.
    """
    from pv.errors import PvError

    if not is_safe_name(contract_id):
        raise PvError(f"contract id {contract_id!r:.80} cannot name a lock folder under {os.fspath(evidence_dir)} "
                      "(letters, digits, '.', '_', '-'; at most 128 characters)")
    try:
        with locked(Path(evidence_dir) / contract_id / ".lock", timeout_s):
            yield
    except TimeoutError as exc:
        raise PvError(str(exc)) from None
