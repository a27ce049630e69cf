"""Packed captures: a capture's stage files as members of one file, ``stages.pack``.

A decode step of ``pv trace --generate`` hands over one row per stage, about
480 small tensors for SmolLM2, and creating that many files costs more than the
step itself: 0.1-1 ms per file on this machine's ext4 (the kernel's work, on
one core, whatever the number of threads), against about 25 ms for the whole
decode step. ``PackWriter`` writes the same APRT v1 files back to back into
one pack instead, gathered in memory and written a few MiB at a time, and the
manifest gives each its usual ``path`` (``layer-3/attn_scores.bin``, the key
every reader uses) plus ``pack`` and ``offset``, the byte where its header
starts. A member's bytes are exactly the file it would have been, so its
``blake3`` is the same digest, and ``dd if=stages.pack bs=1 skip=OFFSET
count=$((12 + 4 * N))`` gives that file back. ``open_capture`` reads members
in place (``pv.capture.store.member.PackedPath``); ``unpack`` turns a packed
capture into one file per stage, for tools that want files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from pv import files
from pv import stages as stage_table
from pv.capture.store import aprt
from pv.capture.store.aprt import DIGEST
from pv.capture.store.directory import MANIFEST, open_capture, relpath_for
from pv.capture.store.member import location
from pv.capture.store.writer import CaptureWriter, manifest_text
from pv.errors import PvError

#: The pack's name, beside the manifest.
PACK = "stages.pack"

#: (stage, layer) -> what its record and header say besides the values: path, stage, layer,
#: layout, mask, header layer (the stage table's answers, looked up once per process).
_KNOWN: dict[tuple[str, int | None], tuple[str, str, int | None, tuple[str, ...], str | None, int]] = {}

#: Stages up to this many bytes are copied into one buffer with their header; larger ones are
#: written from the array itself.
_COPY_BELOW = 64 << 10

#: Buffers one ``os.writev`` takes at most (POSIX's IOV_MAX is at least 16; Linux's 1024).
_IOV = 1024


class PackWriter(CaptureWriter):
    """A ``CaptureWriter`` whose stages go into one pack instead of one file each.

    ``store`` may be called from several threads at once, like the file
    writer's: a stage's place in the pack is taken under a lock, in the order
    the stages arrive, and its bytes are written in that order; hashing happens
    outside the lock. Bytes wait in memory up to ``FLUSH_BYTES`` (the
    tensors themselves, no copy: ``DiskTap`` hands over tensors nothing
    modifies afterwards), then go out in one ``writev``.
    """

    #: Bytes gathered before they are written.
    FLUSH_BYTES = 4 << 20

    def __init__(self, root: str | os.PathLike[str], run: dict[str, Any], overwrite: bool = False):
        super().__init__(root, run, overwrite)
        self.pack = self.root / PACK
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._offset = 0
        self._fd: int | None = None

    def store(
        self,
        stage: str,
        layer: int | None,
        array: Any,
        *,
        dtype_captured: str,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add one stage to the pack and return its manifest record, without listing it."""
        known = _KNOWN.get((stage, layer))
        if known is None:
            st = stage_table.get(stage)
            known = _KNOWN[(stage, layer)] = (relpath_for(st.name, layer), st.name, None if st.whole_model else layer,
                                              st.layout, st.mask, st.header_layer(layer) & 0xFFFFFFFF)
        arr = np.asarray(array)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr, dtype="<f4")
        header = aprt.HEADER.pack(aprt.MAGIC, known[5], arr.size)
        bufs: tuple[Any, ...]
        if arr.nbytes <= _COPY_BELOW:  # one small buffer: cheaper than a byte view of the array (7 us)
            bufs = (header + arr.tobytes(),)
            digest = blake3.blake3(bufs[0])
        else:
            bufs = (header, memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]
            digest = blake3.blake3(header)
            digest.update(bufs[1])
        size = aprt.HEADER_SIZE + arr.nbytes
        with self._lock:
            offset = self._offset
            self._offset += size
            self._pending += bufs
            self._pending_bytes += size
            if self._pending_bytes >= self.FLUSH_BYTES:
                self._flush()
        return {
            "path": known[0],
            "pack": PACK,
            "offset": offset,
            "stage": known[1],
            "layer": known[2],
            "shape": list(arr.shape),
            "layout": list(known[3]),
            "dtype_captured": dtype_captured,
            "mask": known[4],
            DIGEST: digest.hexdigest(),
            **extra,
        }

    def close(self) -> Path:
        """Write what is pending, close the pack, then the manifest (a temp file renamed into place).

        Without the fsync ``files.replace_text`` makes: the pack's bytes are not
        synced either (no stage file ever is), so syncing the manifest alone would
        make nothing durable, and it cost 1-20 ms a step here, up to most of a
        decode step. The rename still shows the manifest whole or not at all.
        """
        target = self.root / MANIFEST
        if self._closed:
            return target
        with self._lock:
            self._flush()
            self._close_pack()
        self._closed = True
        tmp = self.root / f".{MANIFEST}.tmp"
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, aprt._CREATE, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(manifest_text(self.manifest()).encode("utf-8"))
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PvError(f"{target}: write failed: {exc.strerror or exc}") from None
        return target

    def abort(self) -> None:
        """A failed capture: no manifest, and no pack either (nothing else would remove it)."""
        with self._lock:
            self._pending, self._pending_bytes = [], 0
            self._close_pack()
            if self._offset:
                self.pack.unlink(missing_ok=True)
        super().abort()

    def _flush(self) -> None:
        """Write the pending bytes (under the lock), in the order their offsets were given."""
        bufs, self._pending, self._pending_bytes = self._pending, [], 0
        if not bufs:
            return
        try:
            fd, i = self._open(), 0
            while i < len(bufs):
                done = os.writev(fd, bufs[i:i + _IOV])
                while i < len(bufs) and done >= len(bufs[i]):
                    done -= len(bufs[i])
                    i += 1
                if done:  # a short write: the rest of that buffer next
                    bufs[i] = memoryview(bufs[i])[done:]
        except OSError as exc:
            raise PvError(f"{self.pack}: write failed: {exc.strerror or exc}") from None

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.pack, aprt._CREATE, 0o644)
            except FileExistsError:  # --force over an earlier capture: a new file, never written through
                self.pack.unlink()
                self._fd = os.open(self.pack, aprt._CREATE, 0o644)
        return self._fd

    def _close_pack(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def unpack(root: str | os.PathLike[str]) -> int:
    """Write every member of a packed capture as its own stage file; returns how many.

    The manifest then lists files (the same records without ``pack`` and
    ``offset``) and the pack is removed; a capture with no pack is left as it is.
    """
    capture = open_capture(root)
    if capture.manifest is None:
        return 0
    packs: set[Path] = set()
    done = 0
    for entry in capture.entries:
        where, _, member = location(entry.path)
        if not member:
            continue
        aprt.require_digest(entry.path, entry.meta)  # a member changed since stays refused, never resealed
        header, values = aprt.read(entry.path)
        target = capture.root / str(entry.meta["path"])
        target.parent.mkdir(parents=True, exist_ok=True)
        aprt.create(target, header.layer, values)  # the same bytes: the recorded digest still holds
        for key in ("pack", "offset"):
            entry.meta.pop(key, None)  # the manifest's own record: ``open_capture`` shares it
        packs.add(Path(where))
        done += 1
    files.replace_text(capture.root / MANIFEST, manifest_text(capture.manifest))
    for pack in packs:
        pack.unlink(missing_ok=True)
    return done
