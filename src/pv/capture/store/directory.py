"""Capture directories: stage files in their places, and the manifest that makes them a capture.

A capture directory holds ``layer-<N>/<stage>.bin`` for per-layer stages (and
``embedding`` in ``layer-0/``), ``<stage>.bin`` for ``final_norm`` and ``lm_head``
(each an APRT file, ``pv.capture.store.aprt``), and optionally ``manifest.json``
describing shapes, layouts, digests and the run. Files written by other engines
come without a manifest; readers cope with that. Writing one is
``pv.capture.store.writer``. A packed capture (``pv.capture.store.pack``)
keeps the same files as members of one ``stages.pack``, each manifest record
naming its ``pack`` and ``offset``; its stages are read through a
``PackedPath`` and compare like stage files.

Only numpy and blake3 are needed here, so comparing captures never imports torch.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv import bounded
from pv import stages as stage_table
from pv.capture.store.aprt import DIGESTS, AprtError, Header, read_header
from pv.capture.store.member import PackedPath
from pv.errors import PvError

#: A tensor's place in a capture: (stage, layer), the layer None for final_norm and lm_head.
Key = tuple[str, int | None]

MANIFEST = "manifest.json"


MANIFEST_FORMAT = "pv-capture"


MANIFEST_VERSION = 1


_LAYER_DIR = re.compile(r"^layer-(\d+)$")


_HEX64 = re.compile(r"[0-9a-f]{64}")


#: A pack sits beside its manifest; a member's path is where the stage file would be.
_PACK_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PACKED_PATH = re.compile(r"(?:layer-[0-9]{1,9}/)?[A-Za-z0-9_]{1,64}\.bin")


def relpath_for(stage: str, layer: int | None) -> str:
    """Where a stage lives inside a capture directory."""
    st = stage_table.get(stage)
    if st.name == "embedding":
        return f"layer-0/{st.name}.bin"
    if st.whole_model:
        return f"{st.name}.bin"
    if layer is None:
        raise ValueError(f"stage {st.name} needs a layer")
    return f"layer-{layer}/{st.name}.bin"



@dataclass(frozen=True)
class Entry:
    """One tensor of a capture directory."""

    stage: str
    layer: int | None  # None for final_norm / lm_head; 0 for embedding
    path: Path
    header: Header
    #: From the manifest when there is one; else None (flat comparison or --model dims).
    shape: tuple[int, ...] | None = None
    layout: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.stage, self.layer)


@dataclass(frozen=True)
class Capture:
    """A capture directory: its tensors in computation order, and its manifest if any."""

    root: Path
    entries: tuple[Entry, ...]
    manifest: dict[str, Any] | None
    #: Stages the engine declared not applicable (e.g. qkv_bias without a bias).
    not_applicable: tuple[str, ...] = ()

    def by_key(self) -> dict[tuple[str, int | None], Entry]:
        return {e.key: e for e in self.entries}


#: Bounds on a manifest: a 100-layer capture of every stage writes ~1 MiB, and
#: parsed JSON takes ~15x its text in memory, so 16 MiB caps a manifest near 250 MiB.
MANIFEST_MAX_BYTES = 16 * 1024 * 1024


MANIFEST_MAX_DEPTH = 32


MANIFEST_MAX_FILES = 100_000


#: Dimensions a manifest shape may have, and the largest one: an APRT count is a u32.
MAX_RANK = 8


MAX_DIM = 0xFFFFFFFF


def load_manifest(root: Path) -> dict[str, Any] | None:
    """``manifest.json`` of a capture directory, checked field by field; None if absent.

    Only the fields pv reads are checked, and each before it is used: a
    manifest written by another tool may carry more.
    """
    path = root / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        data = bounded.load_json(
            path,
            "manifest",
            limit=MANIFEST_MAX_BYTES,
            max_depth=MANIFEST_MAX_DEPTH,
            max_items=16 * MANIFEST_MAX_FILES,
        )
    except bounded.DataFileError as exc:
        raise AprtError(f"unreadable manifest: {exc}") from None
    shown = bounded.show_path(path)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise AprtError(f"{shown}: not a pv capture manifest (format != {MANIFEST_FORMAT!r})")
    check_manifest(data, shown)
    return data


def _manifest_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's fields, or None."""
    run = data.get("run")
    if run is not None and not isinstance(run, dict):
        return f"'run' must be an object, not {bounded.brief(run)}"
    for key in ("dtype", "weights_dtype", "quantization"):
        value = (run or {}).get(key)
        if value is not None and not isinstance(value, str):
            return f"'run.{key}' must be a string, not {bounded.brief(value)}"
    records = data.get("files", [])
    if not isinstance(records, list):
        return f"'files' must be a list, not {bounded.brief(records)}"
    if len(records) > MANIFEST_MAX_FILES:
        return f"'files' lists {len(records)} entries (at most {MANIFEST_MAX_FILES})"
    for i, rec in enumerate(records):
        problem = _file_record_problem(rec)
        if problem:
            return f"files[{i}]: {problem}"
    na = data.get("not_applicable", [])
    if not isinstance(na, list):
        return f"'not_applicable' must be a list, not {bounded.brief(na)}"
    for i, rec in enumerate(na):
        if not isinstance(rec, dict) or not isinstance(rec.get("stage"), str):
            return f"not_applicable[{i}] must be an object with a string 'stage'"
    return None


def _file_record_problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"must be an object, not {bounded.brief(rec)}"
    if not isinstance(rec.get("path"), str):
        return f"'path' must be a string, not {bounded.brief(rec.get('path'))}"
    shape = rec.get("shape")
    if "shape" in rec:
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            return f"'shape' must be a list of at most {MAX_RANK} integers, not {bounded.brief(shape)}"
        for dim in shape:
            if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= MAX_DIM:
                return f"'shape' {bounded.brief(shape)}: {bounded.brief(dim)} is not an integer in 0..{MAX_DIM}"
    if "layout" in rec:
        layout = rec.get("layout")
        if not isinstance(layout, list) or not all(isinstance(x, str) and len(x) <= 16 for x in layout):
            return f"'layout' must be a list of short dimension names, not {bounded.brief(layout)}"
        if isinstance(shape, list) and len(layout) != len(shape):
            return f"'layout' {bounded.brief(layout)} does not match 'shape' {bounded.brief(shape)}"
    if "pack" in rec or "offset" in rec:
        pack, offset = rec.get("pack"), rec.get("offset")
        if not isinstance(pack, str) or not _PACK_NAME.fullmatch(pack) or pack in (".", ".."):
            return f"'pack' must name a file beside the manifest, not {bounded.brief(pack)}"
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return f"'offset' must be a byte offset (an integer >= 0), not {bounded.brief(offset)}"
        if not _PACKED_PATH.fullmatch(rec["path"]):
            return f"'path' of a pack member must be layer-N/STAGE.bin or STAGE.bin, not {bounded.brief(rec['path'])}"
    value = rec.get("dtype_captured")
    if value is not None and not isinstance(value, str):
        return f"'dtype_captured' must be a string, not {bounded.brief(value)}"
    for name in DIGESTS:
        if name in rec and not (isinstance(rec[name], str) and _HEX64.fullmatch(rec[name])):
            return f"'{name}' must be 64 lowercase hex digits, not {bounded.brief(rec[name])}"
    return None


def check_manifest(data: dict[str, Any], where: str) -> None:
    """Raise ``AprtError`` naming the first field of ``data`` that pv cannot use."""
    problem = _manifest_problem(data)
    if problem:
        raise AprtError(f"{where}: {problem}")


def open_capture(root: str | os.PathLike[str]) -> Capture:
    """Scan a capture directory, with or without a manifest.

    Unknown ``*.bin`` names are ignored (other engines may write extras);
    headers are checked as they are found.
    """
    base = Path(root)
    if not base.is_dir():
        raise PvError(f"{base}: not a capture directory")
    manifest = load_manifest(base)
    meta_by_path: dict[str, dict[str, Any]] = {}
    candidates: list[tuple[str, int | None, Path]] = []
    if manifest is not None:
        for rec in manifest.get("files", []):
            meta_by_path[rec["path"]] = rec
    packed = {rel: rec for rel, rec in meta_by_path.items() if "pack" in rec}
    for rel, rec in packed.items():  # a member of a pack: read in place, whatever file has its name
        folder, _, name = rel.rpartition("/")
        member = PackedPath(base / rel, base / rec["pack"], rec["offset"])
        candidates.append((name[:-4], int(folder[6:]) if folder else None, member))
    found: list[Entry] = []
    for child in sorted(base.iterdir()):
        m = _LAYER_DIR.match(child.name)
        if child.is_dir() and m:
            layer_no = int(m.group(1))
            for f in sorted(child.glob("*.bin")):
                if f"{child.name}/{f.name}" not in packed:
                    candidates.append((f.stem, layer_no, f))
        elif not child.is_dir() and child.suffix == ".bin" and child.name not in packed:
            candidates.append((child.stem, None, child))
    for stem, layer, path in candidates:
        key = stem.lower()
        key = stage_table.ALIASES.get(key, key)
        st = stage_table.BY_NAME.get(key)
        if st is None:
            continue
        if st.name == "embedding":
            if layer != 0:
                continue
            layer_key: int | None = 0
        elif st.whole_model:
            if layer is not None:
                continue
            layer_key = None
        else:
            if layer is None:
                continue
            layer_key = layer
        rel = path.relative_to(base).as_posix()
        meta = meta_by_path.get(rel, {})
        shape = tuple(meta["shape"]) if "shape" in meta else None
        layout = tuple(meta["layout"]) if "layout" in meta else None
        header = read_header(path)
        if shape is not None and math.prod(shape) != header.count:
            raise AprtError(
                f"{bounded.show_path(base / MANIFEST)}: shape {list(shape)} of {rel} "
                f"disagrees with {header.count} values in that file"
            )
        found.append(Entry(st.name, layer_key, path, header, shape, layout, meta))
    found.sort(key=lambda e: stage_table.sort_key(e.stage, e.layer))
    na = tuple(x["stage"] for x in (manifest or {}).get("not_applicable", []))
    return Capture(base, tuple(found), manifest, na)
