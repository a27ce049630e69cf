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

Records are validated against ``schemas/evidence.schema.json`` on write and on
read; where they lie on disk and how they chain is ``pv.falsify.store``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from pv import bounded, environment, files
from pv.bounded import one_line
from pv.digest import sha256_json
from pv.errors import PvError
from pv.falsify import schema_fast

FORMAT_VERSION = 2
PASSED, FAILED, SKIPPED, DISCHARGED = "passed", "failed", "skipped", "discharged"
#: A test that raised something other than a failed prediction (an ``AssertionError`` or
#: ``pytest.fail`` in its call phase): a broken test, not a refutation.
ERROR = "error"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED)
RUN, DISCHARGE = "run", "discharge"
#: A prune record (``pv evidence prune``): lists the records removed from its chain; outcome ``pruned``.
PRUNE, PRUNED = "prune", "pruned"
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
    #: For ``kind: prune``: the cut-off and, per removed record, its file name, sha256, git blob id,
    #: finish time and the ``previous`` it named. Absent from every other record (and its digest).
    prune: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tests"] = [asdict(t) for t in self.tests]
        if data["prune"] is None:
            del data["prune"]
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
def load_schema(name: str) -> Any:
    """A shipped evidence schema (``schemas/<name>``) as data."""
    return json.loads(resources.files("pv").joinpath("schemas", name).read_text("utf-8"))


@functools.lru_cache(maxsize=2)
def _validator(name: str) -> Any:
    import jsonschema  # type: ignore[import-untyped]

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


@functools.lru_cache(maxsize=2)
def _compiled(name: str) -> schema_fast.Check | None:
    """The schema as one yes-or-no function (``pv.falsify.schema_fast``); None if it cannot be."""
    try:
        return schema_fast.compile_schema(load_schema(name))
    except schema_fast.Unsupported:
        return None


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
    name = _schema_name(data)
    fast = _compiled(name)
    if fast is not None and fast(data):  # jsonschema only to word what is wrong
        return []
    found = itertools.islice(_validator(name).iter_errors(data), MAX_SCHEMA_ERRORS)
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


def stale_subjects(record: EvidenceRecord, root: Path, claim_digest: str | None,
                   hashes: dict[str, str | None] | None = None) -> list[str]:
    """Subjects of ``record`` whose content changed since (files, or the claim itself).

    ``hashes`` (path -> sha256 now) is a memo for one call over many records of one
    repository: each covered file is hashed once, not once per record."""
    paths = {name: d for name, d in record.subjects.items() if not name.startswith(CLAIM_PREFIX)}
    if hashes is None:
        now = hash_files(root, paths)
    else:
        missing = [p for p in paths if p not in hashes]
        if missing:
            hashes.update(hash_files(root, missing))
        now = hashes
    changed = [p for p, digest in paths.items() if now[p] != digest]
    claim = claim_subject(record.contract_id, record.falsifier_id)
    if claim_digest is not None and claim in record.subjects and record.subjects[claim] != claim_digest:
        changed.append(CLAIM_CHANGED)
    return changed


def default_host() -> str:
    return socket.gethostname() or "unknown-host"


def current_pid() -> int:
    return os.getpid()
