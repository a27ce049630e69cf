"""Writing a capture directory: stage files as they come, the manifest last.

``CaptureWriter`` streams stages in and writes ``manifest.json`` last, so a
capture cut short never claims files it does not have; ``reseal`` records the
present digests of a capture edited on purpose. The layout it writes is the one
``pv.capture.store.directory`` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

import numpy as np

from pv import bounded, files
from pv import stages as stage_table
from pv.capture.store import aprt
from pv.capture.store.aprt import DIGEST, DIGESTS, AprtError, digest_file
from pv.capture.store.directory import (
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    open_capture,
    relpath_for,
)
from pv.errors import PvError


def manifest_text(manifest: dict[str, Any]) -> str:
    """A manifest as JSON with one line per file record.

    Indented like ``json.dumps(indent=1)`` above the records, which stay
    readable and diffable a line each; encoding them with the C encoder takes
    half the time indenting them does (2.3 ms against 4.5 ms for a full SmolLM2
    capture's 483, ``bench_capture.py``), time the capture pays after its forward.
    """
    parts = []
    for key, value in manifest.items():
        if key == "files" and value:
            # One C encoder call for the whole list, then a line per record: records hold no
            # objects, so '}, {' separates two of them, unless a string holds it too.
            flat = json.dumps(value)[1:-1]
            if flat.count("}, {") == len(value) - 1:
                body = "[\n  " + flat.replace("}, {", "},\n  {") + "\n ]"
            else:
                body = "[\n" + ",\n".join("  " + json.dumps(rec) for rec in value) + "\n ]"
        else:
            body = json.dumps(value, indent=1).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


class CaptureWriter:
    """Streams stages to a capture directory; the manifest is written last.

    Each tensor is written as soon as it is handed over (``aprt.create``: in
    place under a fresh name, its BLAKE3 taken on the way), so memory stays
    bounded by one stage. ``close()`` writes ``manifest.json`` listing exactly
    the files written, with their digests; if the capture fails first,
    ``abort()`` leaves no manifest, so a partial capture never claims files it
    does not have.
    """

    def __init__(self, root: str | os.PathLike[str], run: dict[str, Any], overwrite: bool = False):
        self.root = Path(root)
        self.run = dict(run)
        self.files: list[dict[str, Any]] = []
        self.not_applicable: list[dict[str, str]] = []
        self._closed = False
        self._folders: set[Path] = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PvError(f"{self.root}: cannot create output directory: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise PvError(f"{self.root}: output directory is not writable")
        existing = [p.name for p in self.root.iterdir()]
        if existing and not overwrite:
            raise PvError(
                f"{self.root}: output directory is not empty ({len(existing)} entries); "
                "choose a new directory or pass --force to replace the capture in it"
            )
        if (self.root / MANIFEST).exists():
            # A stale manifest must never describe a new, partial capture.
            (self.root / MANIFEST).unlink()

    def write(
        self,
        stage: str,
        layer: int | None,
        array: Any,
        *,
        dtype_captured: str,
        **extra: Any,
    ) -> Path:
        """Write one stage's file and list it in the manifest."""
        record = self.store(stage, layer, array, dtype_captured=dtype_captured, **extra)
        self.add(record)
        return self.root / str(record["path"])

    def store(
        self,
        stage: str,
        layer: int | None,
        array: Any,
        *,
        dtype_captured: str,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write one stage's file and return its manifest record, without listing it.

        Safe to call from several threads at once for different stages; the
        caller lists the records with ``add`` in the order the manifest should
        have (the order the stages were tapped), whatever order the files were
        finished in.
        """
        st = stage_table.get(stage)
        rel = relpath_for(st.name, layer)
        path = self.root / rel
        arr = np.asarray(array)
        try:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            digest = aprt.create(path, st.header_layer(layer), arr)
        except OSError as exc:
            raise PvError(f"{path}: write failed: {exc.strerror or exc}") from None
        return {
            "path": rel,
            "stage": st.name,
            "layer": layer if not st.whole_model else None,
            "shape": [int(x) for x in arr.shape],
            "layout": list(st.layout),
            "dtype_captured": dtype_captured,
            "mask": st.mask,
            DIGEST: digest,
            **extra,
        }

    def add(self, record: dict[str, Any]) -> None:
        """List a file written by ``store`` in the manifest."""
        self.files.append(record)

    def mark_not_applicable(self, stage: str, reason: str) -> None:
        name = stage_table.get(stage).name
        if all(x["stage"] != name for x in self.not_applicable):
            self.not_applicable.append({"stage": name, "reason": reason})

    def manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "run": self.run,
            "files": self.files,
            "not_applicable": self.not_applicable,
        }

    def close(self) -> Path:
        if self._closed:
            return self.root / MANIFEST
        self._closed = True
        text = manifest_text(self.manifest())
        try:
            files.replace_text(self.root / MANIFEST, text)
        except OSError as exc:
            raise PvError(f"{self.root / MANIFEST}: write failed: {exc.strerror or exc}") from None
        return self.root / MANIFEST

    def abort(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def reseal(root: str | os.PathLike[str]) -> int:
    """Record the present digest of every file a capture's manifest lists; returns how many changed.

    For a capture edited on purpose (a test planting a fault in one stage, a
    file rewritten by another tool): ``pv diff`` and ``pv bisect`` compare a
    listed file only while its bytes have the digest the manifest records.
    """
    capture = open_capture(root)
    if capture.manifest is None:
        raise AprtError(f"{bounded.show_path(root)}: no {MANIFEST} to record digests in")
    changed = 0
    for entry in capture.entries:
        if not entry.meta:  # a stage file the manifest does not list stays unlisted
            continue
        digest = digest_file(entry.path)
        if entry.meta.get(DIGEST) != digest or len([k for k in DIGESTS if k in entry.meta]) > 1:
            for name in DIGESTS:
                entry.meta.pop(name, None)
            entry.meta[DIGEST] = digest  # the manifest's own record: ``open_capture`` shares it
            changed += 1
    files.replace_text(capture.root / MANIFEST, manifest_text(capture.manifest))
    return changed
