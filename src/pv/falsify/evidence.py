"""Evidence records: what one run of one falsifier showed, kept as JSON under ``evidence/``.

Statuses move only on evidence, and ``pv status``/``pv gate`` recompute from
these files, so a record is frozen, versioned (``pv_evidence``), validated
against ``schemas/evidence.schema.json`` on write and on read, and written
atomically under a name no other run can take:
``evidence/<contract-id>/<falsifier-id>/<utc-timestamp>-<host>-<pid>-<random>.json``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from pv import environment, files
from pv.errors import PvError
from pv.files import create_bytes

FORMAT_VERSION = 1
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
OUTCOMES = (PASSED, FAILED, SKIPPED)


class EvidenceError(PvError):
    """An evidence file that cannot be read or does not follow the schema."""


@dataclass(frozen=True)
class TestResult:
    """The outcome of one pytest test bound to a falsifier."""

    __test__ = False  # not a pytest test class despite the name

    nodeid: str
    outcome: str
    reason: str | None = None
    #: Skipped because a fixture (GPU, model file) is missing on this machine.
    fixture_absent: bool = False
    duration_s: float = 0.0
    facts: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    #: Passed with facts meeting the falsifier's live requirements.
    live: bool = False


@dataclass(frozen=True)
class EvidenceRecord:
    """One run of one falsifier (all its bound tests), as written to disk."""

    contract_id: str
    contract_version: str | None
    falsifier_id: str
    outcome: str
    reason: str | None
    fixture_absent: bool
    live: bool
    live_requirements: Mapping[str, Any]
    facts: Mapping[str, Any]
    metrics: Mapping[str, float | None]
    tests: tuple[TestResult, ...]
    started_at: str
    finished_at: str
    duration_s: float
    host: str
    pid: int
    versions: Mapping[str, str | None]
    git: Mapping[str, Any]
    file_hashes: Mapping[str, str | None]
    promotion: Mapping[str, Any]
    pv_evidence: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tests"] = [asdict(t) for t in self.tests]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvidenceRecord:
        validate(data)
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["tests"] = tuple(TestResult(**t) for t in data["tests"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> EvidenceRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvidenceError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EvidenceError("an evidence record must be a JSON object")
        return cls.from_dict(data)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED


# --------------------------------------------------------------------------- schema


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # type: ignore[import-untyped]

    text = resources.files("pv").joinpath("schemas", "evidence.schema.json").read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_errors(data: Any) -> list[str]:
    """Every schema violation as ``path: message``, most specific first."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


def validate(data: Any) -> None:
    problems = schema_errors(data)
    if problems:
        raise EvidenceError("evidence record does not follow the schema: " + "; ".join(problems[:3]))


# --------------------------------------------------------------------------- environment


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


versions = environment.versions


def git_state(root: Path) -> dict[str, Any]:
    """HEAD commit and whether tracked files differ from it; nulls outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


sha256_file = files.sha256_file


def hash_files(root: Path, rel_paths: Iterable[str]) -> dict[str, str | None]:
    """sha256 of each path (relative to the repository root); None when it does not exist."""
    out: dict[str, str | None] = {}
    for rel in rel_paths:
        p = root / rel
        out[rel] = sha256_file(p) if p.is_file() else None
    return out


def stale_files(record: EvidenceRecord, root: Path) -> list[str]:
    """Files hashed by ``record`` whose content changed (or appeared/vanished) since."""
    now = hash_files(root, record.file_hashes)
    return [p for p, digest in record.file_hashes.items() if now[p] != digest]


# --------------------------------------------------------------------------- files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("-", part).strip(".-")
    return cleaned or "x"


def record_name(ts: datetime, host: str, pid: int) -> str:
    stamp = ts.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{_safe(host)[:40]}-{pid}-{secrets.token_hex(4)}.json"


def record_dir(evidence_root: Path, contract_id: str, falsifier_id: str) -> Path:
    for part in (contract_id, falsifier_id):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise EvidenceError(f"id {part!r} cannot name an evidence folder")
    return evidence_root / contract_id / falsifier_id


def write_record(evidence_root: Path, record: EvidenceRecord) -> Path:
    """Validate and write ``record``; returns its path. Never overwrites another record."""
    data = record.to_dict()
    validate(data)
    folder = record_dir(evidence_root, record.contract_id, record.falsifier_id)
    payload = record.to_json().encode("utf-8")
    ts = datetime.strptime(record.finished_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    for _ in range(8):
        path = folder / record_name(ts, record.host, record.pid)
        try:
            create_bytes(path, payload)
            return path
        except FileExistsError:
            continue
    raise EvidenceError(f"could not find a free record name in {folder}")


def read_record(path: Path) -> EvidenceRecord:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{path}: cannot read evidence: {exc}") from None
    try:
        return EvidenceRecord.from_json(text)
    except EvidenceError as exc:
        raise EvidenceError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"{path}: malformed evidence: {exc}") from None


def iter_record_paths(evidence_root: Path, contract_id: str, falsifier_id: str) -> Iterator[Path]:
    folder = record_dir(evidence_root, contract_id, falsifier_id)
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def load_records(evidence_root: Path, contract_id: str, falsifier_id: str) -> list[EvidenceRecord]:
    """Every record of one falsifier, oldest first (by finish time, then name)."""
    loaded = [(read_record(p), p.name) for p in iter_record_paths(evidence_root, contract_id, falsifier_id)]
    loaded.sort(key=lambda rp: (rp[0].finished_at, rp[1]))
    return [r for r, _ in loaded]


def default_host() -> str:
    return socket.gethostname() or "unknown-host"


def current_pid() -> int:
    return os.getpid()
