"""The evidence store on disk: where each record lies, how it is written and read, its chain.

Files: ``evidence/<contract-id>/<falsifier-id>/<utc-timestamp>-<host>-<pid>-<random>.json``,
created atomically under a name no other run can take (``pv.files.create_bytes``),
read through the one bounded reader. Records of one falsifier form a chain: each
names the sha256 of the file of the record before it (``previous``); ``chain_order``
puts them in that order and ``head`` says what the next one must name. What a
record holds and how its digest and signature are made is ``pv.falsify.records``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pv import files
from pv.errors import one_line, show_path
from pv.falsify import reading
from pv.falsify.records import (
    MAX_RECORD_BYTES,
    PRUNE,
    EvidenceError,
    EvidenceRecord,
    from_dict,
    parse_json,
    validate,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Ids that may name an evidence folder: what ``pv validate`` accepts as a safe id.


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("-", part).strip(".-")
    return cleaned or "x"


def record_name(ts: datetime, host: str, pid: int) -> str:
    stamp = ts.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{_safe(host)[:40]}-{pid}-{secrets.token_hex(4)}.json"


def check_id(part: str, what: str = "id") -> str:
    """``part`` if it can name an evidence folder (letters, digits, ``._-``; at most 128)."""
    if not files.is_safe_name(part):
        raise EvidenceError(f"{what} {part!r:.80} cannot name an evidence folder "
                            "(letters, digits, '.', '_', '-'; at most 128 characters)")
    return part


def record_dir(evidence_root: Path, contract_id: str, falsifier_id: str) -> Path:
    return evidence_root / check_id(contract_id, "contract id") / check_id(falsifier_id, "falsifier id")


def check_inside(evidence_root: Path, folder: Path, root: Path | None) -> None:
    """Refuse an evidence folder that a symlink leads out of where it lexically lies.

    An evidence root inside the repository (the default) must stay inside the
    repository once symlinks are resolved; one given outside it must contain the
    contract's folder. Records are repository data: a committed symlink must not
    make ``pv falsify`` write anywhere else.
    """
    base = evidence_root
    if root is not None:
        try:
            Path(os.path.abspath(evidence_root)).relative_to(Path(os.path.abspath(root)))
            base = root
        except ValueError:
            pass
    base_abs = Path(os.path.abspath(base))
    target = Path(os.path.abspath(folder))
    try:
        parts = target.relative_to(base_abs).parts
    except ValueError:
        raise EvidenceError(f"{folder} is not inside {base_abs}; refusing to write evidence there") from None
    if not base_abs.exists():
        return
    real_base = base_abs.resolve()
    step = base_abs
    for part in parts:
        step = step / part
        if not os.path.lexists(step):
            return
        try:
            step.resolve().relative_to(real_base)
        except (ValueError, OSError, RuntimeError):
            raise EvidenceError(f"{step} resolves outside {real_base} (a symlink?); refusing to write "
                                "evidence there") from None


def payload(record: EvidenceRecord) -> bytes:
    """The bytes a record is stored as: its file's sha256 is what the next record's ``previous`` names."""
    return record.to_json().encode("utf-8")


def write_record(evidence_root: Path, record: EvidenceRecord, *, root: Path | None = None) -> Path:
    """Validate and write a sealed ``record``; returns its path. Never overwrites another record."""
    data = record.to_dict()
    validate(data)
    if record.digest != record.content_digest():
        raise EvidenceError("refusing to write a record whose digest does not match its content")
    folder = record_dir(evidence_root, record.contract_id, record.falsifier_id)
    check_inside(evidence_root, folder, root)
    data_bytes = payload(record)
    ts = datetime.strptime(record.finished_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    for _ in range(8):
        path = folder / record_name(ts, record.host, record.pid)
        try:
            files.create_bytes(path, data_bytes)
            return path
        except FileExistsError:
            continue
    raise EvidenceError(f"could not find a free record name in {folder}")


@dataclass(frozen=True)
class StoredRecord:
    """A record with where it lies and the sha256 of its file (what ``previous`` names).

    Read from a file, it also carries the file's git blob id (what a commit's tree names, for
    ``pv gate``'s comparison with a baseline) and the digest of its content as read
    (``pv.falsify.reading``), so neither is computed again from the dataclass.
    """

    record: EvidenceRecord
    path: Path
    file_sha256: str
    git_blob: str | None = None
    content_digest: str | None = None
    #: Read from a regular file that is no symlink (``path`` is where its bytes lie).
    plain: bool = False


def blob_id(data: bytes) -> str:
    """The id git gives a blob with these bytes (``pv.repo.blob_sha1``, without copying them)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def read_stored(path: Path) -> StoredRecord:
    shown = show_path(path)
    try:
        raw = files.read_regular(path, MAX_RECORD_BYTES)
    except files.NotRegularFileError:
        raise EvidenceError(f"{shown}: not a regular file") from None
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{shown}: cannot read evidence: {one_line(str(exc), 200)}") from None
    return stored_from_bytes(path, raw)


def stored_from_bytes(path: Path, raw: bytes, *, plain: bool = False) -> StoredRecord:
    """The record in ``raw`` (the bytes of ``path``): the fast reader's when it is sure, else the
    careful one's, which words every refusal (one line naming the file)."""
    sha, blob = hashlib.sha256(raw).hexdigest(), blob_id(raw)
    fast = reading.parse(raw)
    if fast is not None:
        return StoredRecord(fast[0], path, sha, blob, fast[1], plain)
    shown = show_path(path)
    data = parse_json(raw, shown)
    if not isinstance(data, dict):
        raise EvidenceError(f"{shown}: an evidence record must be a JSON object")
    try:
        record = from_dict(data)
    except EvidenceError as exc:
        raise EvidenceError(f"{shown}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"{shown}: malformed evidence: {one_line(str(exc), 200)}") from None
    return StoredRecord(record, path, sha, blob, None, plain)


def read_folder(folder: Path) -> list[StoredRecord | EvidenceError]:
    """Every record file in ``folder`` (``iter_record_paths``'s files, by name), read: a record, or
    the one-line error that reading it gave."""
    out: list[StoredRecord | EvidenceError] = []
    for path, plain in reading.record_entries(folder):
        raw = reading.read_plain(str(path)) if plain else None
        try:
            out.append(read_stored(path) if raw is None else stored_from_bytes(path, raw, plain=True))
        except EvidenceError as exc:
            out.append(exc)
    return out


def as_stored(record: EvidenceRecord) -> StoredRecord:
    """A sealed record not yet written, as a reader will see it once it is (for judging a run
    before its record lands)."""
    data = payload(record)
    return StoredRecord(record, Path("<new>"), hashlib.sha256(data).hexdigest(), blob_id(data))


def read_record(path: Path) -> EvidenceRecord:
    return read_stored(path).record


def iter_record_paths(evidence_root: Path, contract_id: str, falsifier_id: str) -> Iterator[Path]:
    folder = record_dir(evidence_root, contract_id, falsifier_id)
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


#: One link of a falsifier's chain: (file sha256, the ``previous`` it names, finish time, file name,
#: the record when it is here, the prune record that lists it when it was removed).
Link = tuple[str, str | None, str, str, StoredRecord | None, StoredRecord | None]


def links(stored: Sequence[StoredRecord]) -> list[Link]:
    """Every chained (format-2) record as a link, then each removed record a prune record lists
    (a record that is here shadows a listing of the same file): the chain as it was written."""
    out: list[Link] = [(s.file_sha256, s.record.previous, s.record.finished_at, s.path.name, s, None)
                       for s in stored if not s.record.legacy]
    present = {s.file_sha256 for s in stored}
    for s in stored:
        listed = s.record.prune.get("removed", ()) if s.record.kind == PRUNE and s.record.prune else ()
        for entry in listed if isinstance(listed, (list, tuple)) else ():
            sha = entry.get("sha256") if isinstance(entry, Mapping) else None
            if isinstance(sha, str) and sha not in present:
                present.add(sha)
                out.append((sha, entry.get("previous"), str(entry.get("finished_at", "")), str(entry.get("name", "")),
                            None, s))
    return out


def chain_order(stored: Sequence[StoredRecord]) -> list[StoredRecord]:
    """Records oldest first: legacy ones by finish time, then the chain from its start.

    The records that prune records list as removed stand in for themselves (``links``), so a
    record whose ``previous`` names a removed one still follows it. Records off the chain (a
    broken or forked link) follow, by finish time, so a reader still sees them; ``pv gate``
    reports the break.
    """
    legacy = sorted((s for s in stored if s.record.legacy), key=lambda s: (s.record.finished_at, s.path.name))
    legacy_sha = {s.file_sha256 for s in legacy}
    nodes = links(stored)
    by_previous: dict[str | None, list[Link]] = {}
    for node in nodes:
        by_previous.setdefault(node[1], []).append(node)
    known = {node[0] for node in nodes} | legacy_sha
    starts = [n for n in nodes if n[1] is None or n[1] not in known or n[1] in legacy_sha]
    ordered: list[StoredRecord] = []
    seen: set[str] = set()
    frontier = sorted(starts, key=_when)
    while frontier:
        node = frontier.pop(0)
        if node[0] in seen:
            continue
        seen.add(node[0])
        if node[4] is not None:
            ordered.append(node[4])
        frontier = sorted(by_previous.get(node[0], []), key=_when) + frontier
    rest = sorted((s for s in stored if not s.record.legacy and s.file_sha256 not in seen),
                  key=lambda s: (s.record.finished_at, s.path.name))
    return legacy + ordered + rest


def _when(node: Link) -> tuple[str, str]:
    return node[2], node[3]


def load_stored(evidence_root: Path, contract_id: str, falsifier_id: str) -> list[StoredRecord]:
    """Every record of one falsifier in chain order (oldest first); the first unreadable one raises."""
    read = read_folder(record_dir(evidence_root, contract_id, falsifier_id))
    for item in read:
        if isinstance(item, EvidenceError):
            raise item
    return chain_order([s for s in read if isinstance(s, StoredRecord)])


def head(stored: Sequence[StoredRecord]) -> str | None:
    """The file sha256 the next record must name as ``previous``."""
    return stored[-1].file_sha256 if stored else None


__all__ = ["Link", "StoredRecord", "as_stored", "blob_id", "chain_order", "check_id", "check_inside", "head",
           "iter_record_paths", "links",
           "load_stored", "payload", "read_folder", "read_record", "read_stored", "record_dir", "record_name",
           "stored_from_bytes", "write_record"]
