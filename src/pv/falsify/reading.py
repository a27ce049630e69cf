"""Reading many evidence records fast, with every check of the one careful reader kept.

``pv status`` and ``pv gate`` read every record of every falsifier: thousands, where CI runs
``pv falsify`` on every merge. The careful reader (``pv.falsify.store.read_stored``) parses
each file with hooks for every bound, walks it twice, validates it with ``jsonschema`` and
leaves the digest to be recomputed from the dataclass. This module is a faster way to the
same verdict, never a looser one; whatever it is not sure of goes to the careful reader,
which also words every refusal, so each message stays what it was.

* **Listing and reading** (``read_folder``): one ``os.scandir`` per folder; a record that
  the listing shows as a regular file (not a symlink) is opened with ``O_NOFOLLOW`` and
  ``O_NONBLOCK`` and checked on its descriptor (a regular file, within the size bound).
  The ``/proc``/``/sys`` check is made once for the folder: a file that is no symlink lies
  where its folder lies. Anything else (a symlink, a FIFO, an error) takes the careful path.
* **Parsing by member** (``parse``): pv writes records with ``json.dumps(indent=2,
  sort_keys=True)``, so each top-level member starts a line ``,\\n  "name": ``. The text is
  split there and each member's value is parsed, bounded (depth, values, entries per
  container, integer length, NaN, repeated keys) and checked against its property's schema
  (``pv.falsify.schema_fast``) once per process per distinct text: the records of a chain
  repeat most members (claim, subjects, versions, often tests). The split is safe whatever
  the text: when every piece parses as one whole JSON value, the whole text is one JSON
  object with exactly those members (a cut inside a nested value would leave a bracket
  open, and a JSON string holds no raw line break); otherwise the careful path reads it.
* **The digest** is computed from the members' canonical texts, joined as
  ``pv.digest.canonical_json`` joins them: the parsed fields are exactly the dataclass's
  (the schema requires every field and allows no other), so this equals
  ``EvidenceRecord.content_digest()`` (tested on every record the tests write).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from pv import files
from pv.bounded import _bounded_int, _unique_object
from pv.falsify import schema_fast
from pv.falsify.records import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_RECORD_BYTES,
    MAX_VALUES,
    EvidenceRecord,
    TestResult,
    load_schema,
)

_HEAD, _SEP, _TAIL = '{\n  "', ',\n  "', "\n}\n"
#: One member as read: (name, parsed value, ``"name":canonical JSON`` ("" for a member the digest
#: leaves out), values it holds, dataclass field value).
Entry = tuple[str, Any, str, int, Any]
#: Distinct member texts remembered per process (most repeat along a chain), and the characters they
#: may hold in all: a text longer than ``MAX_REMEMBERED_TEXT`` is read but never remembered, so a store
#: of hostile records with huge members cannot make the memory grow past the bound.
MAX_REMEMBERED = 500_000
MAX_REMEMBERED_CHARS = 64 << 20
MAX_REMEMBERED_TEXT = 64 << 10
_MISSING = object()
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
_remembered: dict[str, Entry | None] = {}
_held_chars = 0
#: The record-level check's verdict by the texts of the members it reads (``_SHELL_READS``, their
#: positions in a record; every position when ``schema_fast.members_read`` cannot tell).
_shapes: dict[tuple[str, ...], bool] = {}
_SHELL_READS: list[int] = []
#: Members the content digest leaves out.
_UNSIGNED = frozenset({"digest", "signature"})
#: A JSON string that holds no escape and no control character.
_PLAIN_STRING = re.compile(r'"[^"\\\x00-\x1f]*"')


class _Constant(ValueError):
    """NaN or Infinity: not JSON, and no digest can be made of them."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


#: ``json.loads`` with the bounded reader's hooks: integer length, unique keys; and no NaN.
_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_refuse_constant,
                            object_pairs_hook=_unique_object)


@functools.lru_cache(maxsize=1)
def _checks() -> tuple[Callable[[Any], bool], Mapping[str, Callable[[Any], bool]], frozenset[str]] | None:
    """The format-2 schema compiled: one check for the record's own shape (its members' values
    allowed anything), one per member, and the members every record has; None when the schema
    cannot be compiled or does not describe the dataclass's fields."""
    schema = load_schema("evidence.schema.json")
    props = schema.get("properties", {})
    required = frozenset(schema.get("required", ()))
    fields = {f.name: f for f in dataclasses.fields(EvidenceRecord)}
    optional = {name for name, f in fields.items() if name not in required}
    if set(props) != set(fields) or any(fields[name].default is not None for name in optional):
        return None  # the dataclass and the schema disagree: only the careful path can tell
    try:
        shape = {**schema, "properties": {name: True for name in props}}
        shell = schema_fast.compile_schema(shape, schema)
        members = {name: schema_fast.compile_schema(sub, schema) for name, sub in props.items()}
    except schema_fast.Unsupported:
        return None
    reads = schema_fast.members_read(shape)
    order = sorted(required)
    _SHELL_READS[:] = [order.index(name) for name in sorted(reads or ()) if name in required] if reads is not None \
        else list(range(len(order)))
    return shell, members, required


@functools.lru_cache(maxsize=1)
def _optional() -> dict[str, None]:
    """Fields a record may leave out (each None when it does; ``_checks`` makes sure)."""
    checks = _checks()
    return {f.name: None for f in dataclasses.fields(EvidenceRecord) if checks and f.name not in checks[2]}


def _measure(value: Any) -> int | None:
    """Values ``value`` holds (itself, keys and all nested values, as ``pv.bounded.check_tree``
    counts them), or None when it nests deeper than a member may or a container is crowded."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 2)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if isinstance(item, dict):
            if depth > MAX_DEPTH or len(item) > MAX_ENTRIES:
                return None
            count += len(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > MAX_DEPTH or len(item) > MAX_ENTRIES:
                return None
            stack.extend((v, depth + 1) for v in item)
    return count if count <= MAX_VALUES else None


def _member(piece: str) -> Entry | None:
    """One member, ``name": value`` as it stands between two separators, parsed and checked."""
    name, sep, text = piece.partition('": ')
    checks = _checks()
    check = checks[1].get(name) if checks is not None and sep else None
    if check is None:
        return None
    if _PLAIN_STRING.fullmatch(text):  # no escape, no control character: its text is its canonical JSON
        value: Any = text[1:-1]
        count, canon = 1, text
    else:
        try:
            value = _DECODER.decode(text)
        except Exception:  # noqa: BLE001 - any trouble at all: the careful reader says what it is
            return None
        measured = _measure(value)
        if measured is None:
            return None
        count, canon = measured, _ENCODER.encode(value)
    if not check(value):
        return None
    field = tuple(TestResult(**t) for t in value) if name == "tests" else value
    return name, value, "" if name in _UNSIGNED else f'"{name}":{canon}', count, field


def _learn(piece: str) -> Entry | None:
    global _held_chars
    if len(piece) > MAX_REMEMBERED_TEXT:
        return _member(piece)
    if len(_remembered) >= MAX_REMEMBERED or len(_shapes) >= MAX_REMEMBERED or \
            _held_chars + len(piece) > MAX_REMEMBERED_CHARS:
        _remembered.clear()
        _shapes.clear()
        _held_chars = 0
    _held_chars += len(piece)
    entry = _remembered[piece] = _member(piece)
    return entry


@functools.lru_cache(maxsize=1)
def _order() -> list[str]:
    """The members of a record as pv writes it (``sort_keys``): every field it must have, sorted."""
    checks = _checks()
    return sorted(checks[2]) if checks is not None else []


def _record(fields: dict[str, Any]) -> EvidenceRecord:
    """``EvidenceRecord(**fields)`` for a complete set of fields, without the frozen ``__init__``'s
    one ``object.__setattr__`` per field (the same instance; the fuzz tests compare them)."""
    record: EvidenceRecord = object.__new__(EvidenceRecord)
    record.__dict__.update(_optional())
    record.__dict__.update(fields)
    return record


def parse(raw: bytes) -> tuple[EvidenceRecord, str] | None:
    """The record in ``raw`` and its content digest, when it is a format-2 record in pv's own
    layout that passes every check; None sends it to the careful reader."""
    checks = _checks()
    if checks is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not (text.startswith(_HEAD) and text.endswith(_TAIL)):
        return None
    pieces = text[len(_HEAD):-len(_TAIL)].split(_SEP)
    get = _remembered.get
    found = [get(piece, _MISSING) for piece in pieces]
    at = 0
    while _MISSING in found:  # the few members this text does not share with another record
        at = found.index(_MISSING, at)
        found[at] = _learn(pieces[at])
    if None in found:
        return None
    entries = cast(list[Entry], found)
    if [e[0] for e in entries] != _order():  # another order, a member missing, repeated or unknown
        return None
    if 1 + len(entries) + sum([e[3] for e in entries]) > MAX_VALUES:
        return None
    shape = tuple([pieces[i] for i in _SHELL_READS])  # the members the record's own shape depends on
    fits = _shapes.get(shape)
    if fits is None:
        fits = checks[0]({e[0]: e[1] for e in entries})
        if all(piece in _remembered for piece in shape):  # keys of texts already held, nothing more
            _shapes[shape] = fits
    if not fits:
        return None
    body = ",".join([e[2] for e in entries if e[2]])
    record = _record({e[0]: e[4] for e in entries})
    return record, hashlib.sha256(("{" + body + "}").encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------- files


def _pseudo(folder: Path) -> bool:
    real = os.path.realpath(folder)
    return any(real == r or real.startswith(r + os.sep) for r in files.PSEUDO_ROOTS)


def read_plain(path: str) -> bytes | None:
    """The bytes of ``path`` when it is a regular file within the record bound (no symlink
    followed); None for anything else, which the careful reader then words."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        data = os.read(fd, info.st_size + 1)  # on a regular file a short read is its end
        return data if len(data) <= info.st_size else None  # grown while read: the careful reader
    except OSError:
        return None
    finally:
        os.close(fd)


def record_entries(folder: Path) -> list[tuple[Path, bool]]:
    """``(path, plain)`` of every record file in ``folder``, by name: ``*.json`` not starting
    with ``.``; ``plain`` when the listing shows a regular file (no symlink) outside ``/proc``."""
    try:
        with os.scandir(folder) as listing:
            found = [(e.name, e.is_file(follow_symlinks=False)) for e in listing
                     if e.name.endswith(".json") and not e.name.startswith(".")]
    except OSError:  # missing, not a folder, unreadable: no records, as a glob finds none
        return []
    pseudo = bool(found) and _pseudo(folder)
    return [(folder / name, plain and not pseudo) for name, plain in sorted(found)]


__all__ = ["MAX_REMEMBERED", "MAX_REMEMBERED_CHARS", "MAX_REMEMBERED_TEXT", "parse", "read_plain", "record_entries"]
