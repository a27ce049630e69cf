"""What ``pv gate`` makes of ``pv evidence prune``: a deliberate deletion of baseline records.

Evidence is append-only, so a record of the baseline (or one committed since it) that is
gone fails the gate, unless a prune record added in this change (one the baseline does not
have) lists it, in the same falsifier's folder, with the digest the baseline has for it
(the git blob id; a snapshot baseline's sha256). Then the listing is checked against the
record itself, read back from git, and the status as it stood before the prune (the records
now, with the removed ones back) must not have rested on it (``pv.report.prune.needed``):
pruning may compact a chain, never take away what a status stands on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv import config
from pv.contract.model import Contract
from pv.falsify import records as rec
from pv.falsify import store
from pv.report import prune


@dataclass(frozen=True)
class Removal:
    """A record of the baseline, or committed since it, that a prune record of this change lists."""

    path: str
    blob: str | None
    prune: str
    entry: Mapping[str, Any]
    owner: tuple[str, str | None]


def listed(path: str, digest: str, how: str, pruned: Mapping[str, tuple[str, Mapping[str, Any]]],
           baseline_evidence: Mapping[str, str]) -> tuple[str, Mapping[str, Any]] | None:
    """The prune record (added in this change) that lists ``path`` with this digest, and its entry."""
    hit = pruned.get(path)
    if hit is None or hit[0] in baseline_evidence:
        return None
    want = hit[1].get("blob") if how == "git-blob" else hit[1].get("sha256")
    return hit if want == digest else None


def read_blobs(root: Path, blobs: Sequence[str]) -> dict[str, bytes]:
    """The contents of git blobs by id (``git cat-file --batch``, one process); missing ones left out."""
    if not blobs:
        return {}
    try:
        done = subprocess.run(["git", "-C", str(root), "cat-file", "--batch"], input=("\n".join(blobs) + "\n").encode(),
                              capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, bytes] = {}
    data, at = done.stdout, 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            break
        head = data[at:end].split()
        at = end + 1
        if len(head) == 3 and head[1] == b"blob":
            size = int(head[2])
            out[head[0].decode()] = data[at:at + size]
            at += size + 1
    return out


def backing_problems(removals: Sequence[Removal], *, root: Path, evidence_dir: Path,
                     contracts: Sequence[Contract], settings: config.Settings,
                     key: bytes | None) -> list[tuple[str, str | None, str]]:
    """(contract, falsifier, message) for each removal whose listing is false or that a status
    rested on; nothing to say for removals the baseline holds no contents of (a snapshot)."""
    contents = read_blobs(root, sorted({r.blob for r in removals if r.blob}))
    groups: dict[tuple[str, str | None], list[Removal]] = {}
    for r in removals:
        groups.setdefault(r.owner, []).append(r)
    out: list[tuple[str, str | None, str]] = []
    falsifiers = {(c.id, f.id): f for c in contracts for f in c.falsifiers}
    for (cid, fid), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        back: list[store.StoredRecord] = []
        for r in group:
            raw = contents.get(r.blob or "")
            if raw is None:
                continue
            try:
                old = store.stored_from_bytes(root / r.path, raw)
            except rec.EvidenceError as exc:
                out.append((cid, fid, (f"record {r.path}, removed by the prune record {r.prune}, is unreadable in the "
                            f"baseline ({exc}); restore it")))
                continue
            if old.file_sha256 != r.entry.get("sha256") or old.record.previous != r.entry.get("previous"):
                out.append((cid, fid, (f"the prune record {r.prune} lists {r.path} with a sha256 or previous link that "
                            "are not the baseline record's; restore the record and prune again")))
                continue
            back.append(old)
        f = falsifiers.get((cid, fid or ""))
        if f is None or not back:
            continue
        folder = store.record_dir(evidence_dir, cid, f.id)
        now = [s for s in store.read_folder(folder) if isinstance(s, store.StoredRecord)]
        before = store.chain_order(now + back)
        keep = prune.needed(f, before, root=root, key=key, settings=settings)
        for old in back:
            why = keep.get(old.file_sha256)
            if why is not None:
                gone = next(r for r in group if r.entry.get("sha256") == old.file_sha256)
                out.append((cid, fid, (f"record {gone.path} was removed by the prune record {gone.prune}, but the "
                            f"status rests on it ({why}); restore it from the baseline")))
    return out


__all__ = ["Removal", "backing_problems", "listed", "read_blobs"]
