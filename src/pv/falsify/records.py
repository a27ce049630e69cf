"""Evidence records: what one run of one falsifier showed, kept as JSON under ``evidence/``.

A record is an attestation (in the in-toto sense): its ``subjects`` are the
bytes it covers, each by sha256 (the falsifier's claim, the files it cites, its
test files); its predicate is the outcome and, per test, the facts the plugin
*measured* (``measured``), kept apart from what the test merely *declared*
(``declared``), and the environment of the process that ran it.

Records of one falsifier form a chain: each names the sha256 of the file of the
record before it (``previous``) and carries the sha256 of its own canonical
content (``digest``); with ``PV_EVIDENCE_KEY`` set, an HMAC of that digest
(``signature``). Nothing here decides what a record proves: ``judge`` does,
from the measured facts and the contract's current claim.

Format 1 records (written before measured facts existed) are still read, as
legacy: their facts all count as declared, so they back no status.

Files: ``evidence/<contract-id>/<falsifier-id>/<utc-timestamp>-<host>-<pid>-<random>.json``,
validated against ``schemas/evidence.schema.json`` on write and on read, created
atomically under a name no other run can take.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from pv import bounded, environment, files
from pv.bounded import one_line, show_path
from pv.digest import sha256_json
from pv.errors import PvError

FORMAT_VERSION = 2
PASSED, FAILED, SKIPPED, DISCHARGED = "passed", "failed", "skipped", "discharged"
#: A test that raised something other than a failed prediction (an ``AssertionError`` or
#: ``pytest.fail`` in its call phase): a broken test, not a refutation.
ERROR = "error"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED)
RUN, DISCHARGE = "run", "discharge"
#: Environment variable holding the key that signs (and verifies) records.
KEY_ENV = "PV_EVIDENCE_KEY"
#: No record is anywhere near this; a bigger file is refused before parsing.
MAX_RECORD_BYTES = 2 << 20
#: Deepest JSON nesting a record may have (facts are small JSON values).
MAX_DEPTH = 64
#: Values (scalars and containers) a record may hold in all.
MAX_VALUES = 200_000
#: The claim subject of a record: ``contract:<contract-id>#<falsifier-id>``.
CLAIM_PREFIX = "contract:"
#: How ``stale_subjects`` names a changed claim.
CLAIM_CHANGED = "the falsifier's claim in the contract"

versions = environment.versions
sha256_file = files.sha256_file


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
    #: Facts read by the plugin from what the test handed over (see ``pv.falsify.facts``).
    measured: Mapping[str, Any] = field(default_factory=dict)
    #: Facts the test stated; kept for people, never matched against requirements.
    declared: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    #: The process the test ran in: GPU, driver, CUDA, TF32 and determinism settings.
    environment: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvidenceRecord:
    """One run of one falsifier (all its bound tests), or one discharge of it."""

    contract_id: str
    contract_version: str | None
    falsifier_id: str
    outcome: str
    reason: str | None
    fixture_absent: bool
    tests: tuple[TestResult, ...]
    metrics: Mapping[str, float | None]
    started_at: str
    finished_at: str
    duration_s: float
    host: str
    pid: int
    versions: Mapping[str, str | None]
    #: ``commit`` (HEAD) and ``dirty``: the covered files that differed from HEAD (or were
    #: untracked) when the run started; null outside a checkout.
    git: Mapping[str, Any]
    #: sha256 of every covered file (null: missing) and of the claim (``contract:<cid>#<fid>``).
    subjects: Mapping[str, str | None]
    #: What the falsifier claimed when it ran: the named tests and the live requirements.
    claim: Mapping[str, Any]
    promotion: Mapping[str, Any]
    kind: str = RUN
    #: For ``kind: discharge``: who, why, artifact hashes, and the records it rests on.
    discharge: Mapping[str, Any] | None = None
    previous: str | None = None
    digest: str | None = None
    signature: Mapping[str, str] | None = None
    pv_evidence: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tests"] = [asdict(t) for t in self.tests]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def legacy(self) -> bool:
        return self.pv_evidence < FORMAT_VERSION

    def content_digest(self) -> str:
        """sha256 of the canonical JSON of everything but ``digest`` and ``signature``."""
        body = {k: v for k, v in self.to_dict().items() if k not in ("digest", "signature")}
        return sha256_json(body)

    def sealed(self, key: bytes | None) -> EvidenceRecord:
        """This record with its digest set and, given a key, signed."""
        digest = self.content_digest()
        sig = None if key is None else {"alg": "hmac-sha256", "key_id": key_id(key), "value": _mac(key, digest)}
        return replace(self, digest=digest, signature=sig)


def claim_subject(contract_id: str, falsifier_id: str) -> str:
    return f"{CLAIM_PREFIX}{contract_id}#{falsifier_id}"


# --------------------------------------------------------------------------- signing


def key_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    value = (env if env is not None else os.environ).get(KEY_ENV, "")
    return value.encode("utf-8") if value else None


def key_id(key: bytes) -> str:
    """A public name for a key (a prefix of its sha256), so a verifier can tell keys apart."""
    return hashlib.sha256(b"pv-evidence-key:" + key).hexdigest()[:16]


def _mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def signature_ok(record: EvidenceRecord, key: bytes) -> bool | None:
    """True/False when ``record`` is signed with ``key``; None when unsigned or signed by another key."""
    sig = record.signature
    if not sig or sig.get("key_id") != key_id(key) or record.digest is None:
        return None
    return hmac.compare_digest(str(sig.get("value", "")), _mac(key, record.digest))


# --------------------------------------------------------------------------- schema


@functools.lru_cache(maxsize=2)
def _validator(name: str) -> Any:
    import jsonschema  # type: ignore[import-untyped]

    text = resources.files("pv").joinpath("schemas", name).read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _schema_name(data: Any) -> str:
    version = data.get("pv_evidence") if isinstance(data, dict) else None
    return "evidence-v1.schema.json" if version == 1 else "evidence.schema.json"


#: Schema violations collected per record (the first ones say enough; a hostile record may hold
#: thousands).
MAX_SCHEMA_ERRORS = 20
#: Entries a record's lists and objects may hold before the schema is even asked.
MAX_ENTRIES = 2000


def schema_errors(data: Any) -> list[str]:
    """The first schema violations as one-line ``path: message`` strings, most specific first."""
    crowded = _crowded(data)
    if crowded:
        return [crowded]
    found = itertools.islice(_validator(_schema_name(data)).iter_errors(data), MAX_SCHEMA_ERRORS)
    errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    return [one_line(f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}", 300)
            for e in errors]


def _crowded(data: Any) -> str | None:
    """A list or object with more entries than any record has, named before validation walks it."""
    stack: list[tuple[Any, str]] = [(data, "<root>")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, (dict, list)):
            if len(item) > MAX_ENTRIES:
                return f"{one_line(where, 100)}: {len(item)} entries, over the bound of {MAX_ENTRIES}"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((v, f"{where}/{k}") for k, v in pairs)
    return None


def validate(data: Any) -> None:
    problems = schema_errors(data)
    if problems:
        raise EvidenceError("evidence record does not follow the schema: " + "; ".join(problems[:3]))


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_json(raw: bytes, what: str, limit_depth: int = MAX_DEPTH) -> Any:
    """JSON from bytes through pv's bounded reader (depth, integer length, value count)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = bounded.parse_json(text, what, max_depth=limit_depth, max_items=MAX_VALUES)
    except bounded.DataFileError as exc:
        raise EvidenceError(str(exc)) from None
    stack = [data]
    while stack:  # NaN and Infinity are not JSON, and no digest can be made of them
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise EvidenceError(f"{what}: not valid JSON (NaN or Infinity)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return data


def from_dict(data: Mapping[str, Any]) -> EvidenceRecord:
    validate(data)
    if data.get("pv_evidence") == 1:
        return _from_v1(data)
    kwargs = {k: v for k, v in data.items() if k != "tests"}
    return EvidenceRecord(tests=tuple(TestResult(**t) for t in data["tests"]), **kwargs)


def _from_v1(data: Mapping[str, Any]) -> EvidenceRecord:
    """A format-1 record: every fact it holds was declared by its test."""
    tests = tuple(TestResult(nodeid=t["nodeid"], outcome=t["outcome"], reason=t.get("reason"),
                             fixture_absent=t["fixture_absent"], duration_s=t["duration_s"],
                             declared=t.get("facts", {}), metrics=t.get("metrics", {}))
                  for t in data["tests"])
    git = data["git"]
    return EvidenceRecord(
        contract_id=data["contract_id"], contract_version=data["contract_version"],
        falsifier_id=data["falsifier_id"], outcome=data["outcome"], reason=data["reason"],
        fixture_absent=data["fixture_absent"], tests=tests, metrics=data["metrics"],
        started_at=data["started_at"], finished_at=data["finished_at"], duration_s=data["duration_s"],
        host=data["host"], pid=data["pid"], versions=data["versions"],
        git={"commit": git.get("commit"), "dirty": None},
        subjects=dict(data["file_hashes"]),
        claim={"live_requirements": data["live_requirements"], "tests": []},
        promotion=data["promotion"], pv_evidence=1)


# --------------------------------------------------------------------------- environment


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_files(root: Path, rel_paths: Iterable[str]) -> dict[str, str | None]:
    """sha256 of each repository file; None when it is missing, not a regular file, or outside
    the repository (records are repository data: they never make pv read ``/proc`` or a FIFO)."""
    out: dict[str, str | None] = {}
    base = root.resolve()
    for rel in rel_paths:
        out[rel] = _hash_inside(base, rel)
    return out


def _hash_inside(base: Path, rel: str) -> str | None:
    if not rel or "\0" in rel or os.path.isabs(rel):
        return None
    try:
        target = (base / rel).resolve()
        target.relative_to(base)
    except (OSError, ValueError, RuntimeError):
        return None
    if not files.is_regular(target):
        return None
    try:
        return sha256_file(target)
    except OSError:
        return None


def stale_subjects(record: EvidenceRecord, root: Path, claim_digest: str | None) -> list[str]:
    """Subjects of ``record`` whose content changed since (files, or the claim itself)."""
    paths = {name: d for name, d in record.subjects.items() if not name.startswith(CLAIM_PREFIX)}
    now = hash_files(root, paths)
    changed = [p for p, digest in paths.items() if now[p] != digest]
    claim = claim_subject(record.contract_id, record.falsifier_id)
    if claim_digest is not None and claim in record.subjects and record.subjects[claim] != claim_digest:
        changed.append(CLAIM_CHANGED)
    return changed


# --------------------------------------------------------------------------- files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Ids that may name an evidence folder: what ``pv validate`` accepts as a safe id.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("-", part).strip(".-")
    return cleaned or "x"


def record_name(ts: datetime, host: str, pid: int) -> str:
    stamp = ts.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{_safe(host)[:40]}-{pid}-{secrets.token_hex(4)}.json"


def check_id(part: str, what: str = "id") -> str:
    """``part`` if it can name an evidence folder (letters, digits, ``._-``; at most 128)."""
    if not isinstance(part, str) or not _SAFE_ID.match(part) or part in (".", ".."):
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


def write_record(evidence_root: Path, record: EvidenceRecord, *, root: Path | None = None) -> Path:
    """Validate and write a sealed ``record``; returns its path. Never overwrites another record."""
    data = record.to_dict()
    validate(data)
    if record.digest != record.content_digest():
        raise EvidenceError("refusing to write a record whose digest does not match its content")
    folder = record_dir(evidence_root, record.contract_id, record.falsifier_id)
    check_inside(evidence_root, folder, root)
    payload = record.to_json().encode("utf-8")
    ts = datetime.strptime(record.finished_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    for _ in range(8):
        path = folder / record_name(ts, record.host, record.pid)
        try:
            files.create_bytes(path, payload)
            return path
        except FileExistsError:
            continue
    raise EvidenceError(f"could not find a free record name in {folder}")


@dataclass(frozen=True)
class StoredRecord:
    """A record with where it lies and the sha256 of its file (what ``previous`` names)."""

    record: EvidenceRecord
    path: Path
    file_sha256: str


def read_stored(path: Path) -> StoredRecord:
    shown = show_path(path)
    try:
        raw = files.read_regular(path, MAX_RECORD_BYTES)
    except files.NotRegularFileError:
        raise EvidenceError(f"{shown}: not a regular file") from None
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{shown}: cannot read evidence: {one_line(str(exc), 200)}") from None
    data = parse_json(raw, shown)
    if not isinstance(data, dict):
        raise EvidenceError(f"{shown}: an evidence record must be a JSON object")
    try:
        record = from_dict(data)
    except EvidenceError as exc:
        raise EvidenceError(f"{shown}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"{shown}: malformed evidence: {one_line(str(exc), 200)}") from None
    return StoredRecord(record, path, hashlib.sha256(raw).hexdigest())


def read_record(path: Path) -> EvidenceRecord:
    return read_stored(path).record


def iter_record_paths(evidence_root: Path, contract_id: str, falsifier_id: str) -> Iterator[Path]:
    folder = record_dir(evidence_root, contract_id, falsifier_id)
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def chain_order(stored: Sequence[StoredRecord]) -> list[StoredRecord]:
    """Records oldest first: legacy ones by finish time, then the chain from its start.

    Records off the chain (a broken or forked link) follow, by finish time, so a
    reader still sees them; ``pv gate`` reports the break.
    """
    legacy = sorted((s for s in stored if s.record.legacy), key=lambda s: (s.record.finished_at, s.path.name))
    chained = [s for s in stored if not s.record.legacy]
    by_previous: dict[str | None, list[StoredRecord]] = {}
    for s in chained:
        by_previous.setdefault(s.record.previous, []).append(s)
    known = {s.file_sha256 for s in stored}
    starts = [s for s in chained if s.record.previous is None or s.record.previous not in known
              or s.record.previous in {x.file_sha256 for x in legacy}]
    ordered: list[StoredRecord] = []
    seen: set[str] = set()
    frontier = sorted(starts, key=lambda s: (s.record.finished_at, s.path.name))
    while frontier:
        node = frontier.pop(0)
        if node.file_sha256 in seen:
            continue
        seen.add(node.file_sha256)
        ordered.append(node)
        nxt = sorted(by_previous.get(node.file_sha256, []), key=lambda s: (s.record.finished_at, s.path.name))
        frontier = nxt + frontier
    rest = sorted((s for s in chained if s.file_sha256 not in seen), key=lambda s: (s.record.finished_at, s.path.name))
    return legacy + ordered + rest


def load_stored(evidence_root: Path, contract_id: str, falsifier_id: str) -> list[StoredRecord]:
    """Every record of one falsifier in chain order (oldest first)."""
    return chain_order([read_stored(p) for p in iter_record_paths(evidence_root, contract_id, falsifier_id)])


def head(stored: Sequence[StoredRecord]) -> str | None:
    """The file sha256 the next record must name as ``previous``."""
    return stored[-1].file_sha256 if stored else None


def default_host() -> str:
    return socket.gethostname() or "unknown-host"


def current_pid() -> int:
    return os.getpid()
