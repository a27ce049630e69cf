"""What a contract claims, as data, and which edits make the claim weaker.

A status answers a claim. Raising a status needs evidence; weakening the claim
it answers must not be a way around that. This module reads the claim-bearing
parts of a contract into a plain, comparable view (``claim_view``) and lists
every way a new version claims less than an old one (``weakenings``):

- a falsifier, proof obligation or equation removed;
- a falsifier's ``rule`` or ``prediction`` replaced (text cannot be judged
  stronger or weaker, so any change counts), a test it named dropped, a cited
  file dropped from ``algorithm_evidence.file_paths`` (changes there would no
  longer make its evidence stale);
- a live requirement removed or loosened (its new values are not a subset of the
  old ones: ``device: cuda`` -> ``cpu`` or -> ``[cpu, cuda]``);
- a ``discharge.matrix`` target that no new target implies, or an artifact
  dropped;
- an obligation's ``tolerance`` widened or removed, its ``property`` or
  ``formal`` replaced; an equation's ``formula`` replaced.

Adding requirements, tests, files, falsifiers or obligations, or narrowing a
requirement, is never a weakening. ``claim_digest`` is the sha256 of the view:
an acknowledgement (``claim_changes``, written by ``pv acknowledge``) names the
digest of the claim it accepts, so it covers that claim and no later edit.
Plain data in, plain data out: no file access, no git.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pv.digest import sha256_json

#: The top-level key holding acknowledgements of weakened claims.
CHANGES_KEY = "claim_changes"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: A pytest node id in a ``test:`` field, parameters left off (as the binding reads it).
_NODE_ID = re.compile(r"[\w./-]+\.py(?:::[A-Za-z_]\w*)+")


def _text(value: Any) -> str | None:
    """Prose as a claim: whitespace runs collapsed (re-wrapping a paragraph changes nothing)."""
    if value is None:
        return None
    return " ".join(str(value).split())


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return []


def _tests(value: Any) -> list[str]:
    found = {m.group(0) for text in _strings(value) for m in _NODE_ID.finditer(text)}
    return sorted(found)


def _values(value: Any) -> list[Any]:
    """A requirement's accepted values, normalised as the fact matcher compares them."""
    items = value if isinstance(value, list) else [value]
    out = {str(v).strip().lower() if isinstance(v, str) else json.dumps(v) for v in items}
    return sorted(out)


def _requirements(value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _values(v) for k, v in value.items()}


def _falsifier(raw: Mapping[str, Any]) -> dict[str, Any]:
    evidence = raw.get("algorithm_evidence")
    discharge = raw.get("discharge")
    matrix = discharge.get("matrix") if isinstance(discharge, dict) else None
    return {
        "rule": _text(raw.get("rule")),
        "prediction": _text(raw.get("prediction")),
        "tests": _tests(raw.get("test")),
        "live_requirements": _requirements(raw.get("live_requirements")),
        "files": sorted(set(_strings(evidence.get("file_paths")))) if isinstance(evidence, dict) else [],
        "matrix": [_requirements(t) for t in matrix if isinstance(t, dict)] if isinstance(matrix, list) else [],
        "artifacts": sorted(set(_strings(discharge.get("artifacts")))) if isinstance(discharge, dict) else [],
    }


def _tolerance(value: Any) -> float | str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else str(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return _text(value)
    return number if math.isfinite(number) else _text(value)


def claim_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """The claim-bearing parts of a contract's data, normalised for comparison (JSON-able)."""
    falsifiers: dict[str, Any] = {}
    tests = data.get("falsification_tests")
    for raw in tests if isinstance(tests, list) else []:
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            falsifiers.setdefault(raw["id"], _falsifier(raw))
    obligations: dict[str, Any] = {}
    items = data.get("proof_obligations")
    for i, raw in enumerate(items if isinstance(items, list) else []):
        if not isinstance(raw, dict):
            continue
        key = raw["id"] if isinstance(raw.get("id"), str) else f"#{i + 1} {_text(raw.get('property')) or ''}".strip()
        obligations.setdefault(key, {"property": _text(raw.get("property")), "formal": _text(raw.get("formal")),
                                     "tolerance": _tolerance(raw.get("tolerance"))})
    equations: dict[str, Any] = {}
    eqs = data.get("equations")
    for name, raw in eqs.items() if isinstance(eqs, dict) else ():
        formula = raw.get("formula") if isinstance(raw, dict) else None
        equations[str(name)] = {"formula": _text(formula)}
    return {"falsifiers": falsifiers, "obligations": obligations, "equations": equations}


_TEXT_FIELDS = ("rule", "prediction", "property", "formal", "formula")
_LIST_FIELDS = ("tests", "files", "artifacts")


def _requirements_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "is not an object"
    for key, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, (str, int, float, bool)) or v is None
                                                   for v in values):
            return f"{key} is not a list of values"
    return None


def _field_problem(key: str, value: Any) -> str | None:
    if key in _TEXT_FIELDS:
        return None if value is None or isinstance(value, str) else "is not text"
    if key == "tolerance":
        return None if value is None or isinstance(value, (str, int, float)) else "is not a number or text"
    if key in _LIST_FIELDS:
        return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "is not a list of text"
    if key == "live_requirements":
        return _requirements_problem(value)
    if key == "matrix":
        if not isinstance(value, list):
            return "is not a list"
        return next((f"[{i}] {p}" for i, t in enumerate(value) if (p := _requirements_problem(t))), None)
    return None


def view_problem(view: Any) -> str | None:
    """Why ``view`` is not shaped as ``claim_view`` shapes a claim, or None when it is.

    A baseline snapshot is a file anyone can write; ``weakenings`` trusts the shape
    it compares, so a snapshot's claims are checked first and a malformed one is
    refused in one line instead of failing halfway through a comparison.
    """
    if not isinstance(view, dict):
        return "the claim is not an object"
    for section in ("falsifiers", "obligations", "equations"):
        entries = view.get(section, {})
        if not isinstance(entries, dict):
            return f"{section} is not an object"
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                return f"{section}.{_key(name)} is not an object"
            for key, value in entry.items():
                problem = _field_problem(key, value)
                if problem:
                    return f"{section}.{_key(name)}.{_key(key)} {problem}"
    return None


def _key(name: object) -> str:
    """A snapshot's key as it reads in a one-line refusal (anything unprintable quoted and escaped)."""
    text = str(name)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def claim_digest(view: Mapping[str, Any]) -> str:
    """sha256 of a claim view's canonical JSON: what an acknowledgement names."""
    return sha256_json(view)


@dataclass(frozen=True)
class Weakening:
    """One way the new claim says less than the old: ``where`` is a falsifier, obligation or
    equation, ``what`` the change in a few words."""

    where: str
    what: str
    #: A whole falsifier went away (the gate reports it as ``falsifier-removed``).
    removed_falsifier: bool = False

    def format(self) -> str:
        return f"{self.where}: {self.what}"


def _shown(values: list[Any]) -> str:
    return values[0] if len(values) == 1 else "[" + ", ".join(map(str, values)) + "]"


def _short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return "(none)"
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


def _requirement_changes(old: Mapping[str, list[Any]], new: Mapping[str, list[Any]], label: str) -> Iterator[str]:
    for key, was in old.items():
        now = new.get(key)
        if now is None:
            yield f"{label}.{key} ({_shown(was)}) removed"
        elif not set(now) <= set(was):
            yield f"{label}.{key} loosened: {_shown(was)} -> {_shown(now)}"


def _implies(stronger: Mapping[str, list[Any]], weaker: Mapping[str, list[Any]]) -> bool:
    return all(k in stronger and set(stronger[k]) <= set(v) for k, v in weaker.items())


def _falsifier_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    for field in ("rule", "prediction"):
        if old.get(field) != new.get(field):
            yield f"{field} replaced (was {_short(old.get(field))})"
    for node in sorted(set(old.get("tests", [])) - set(new.get("tests", []))):
        yield f"test {node} no longer named"
    yield from _requirement_changes(old.get("live_requirements", {}), new.get("live_requirements", {}),
                                    "live_requirements")
    for path in sorted(set(old.get("files", [])) - set(new.get("files", []))):
        yield f"algorithm_evidence.file_paths no longer covers {path}"
    for target in old.get("matrix", []):
        if not any(_implies(t, target) for t in new.get("matrix", [])):
            shown = ", ".join(f"{k}: {_shown(v)}" for k, v in target.items()) or "(the live requirements)"
            yield f"discharge.matrix target {{{shown}}} dropped or loosened"
    for path in sorted(set(old.get("artifacts", [])) - set(new.get("artifacts", []))):
        yield f"discharge.artifacts no longer includes {path}"


def _wider(old: float | str | None, new: float | str | None) -> str | None:
    if old is None or old == new:
        return None
    if new is None:
        return f"tolerance ({old}) removed"
    if isinstance(old, float) and isinstance(new, float):
        return f"tolerance widened: {old:g} -> {new:g}" if new > old else None
    return f"tolerance replaced: {old} -> {new}"


def weakenings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Weakening]:
    """Every way ``new`` (a ``claim_view``) claims less than ``old``; empty when it claims as much."""
    out: list[Weakening] = []
    old_f, new_f = old.get("falsifiers", {}), new.get("falsifiers", {})
    for fid, was in old_f.items():
        now = new_f.get(fid)
        if now is None:
            out.append(Weakening(fid, "falsifier removed", removed_falsifier=True))
            continue
        out += [Weakening(fid, what) for what in _falsifier_changes(was, now)]
    old_o, new_o = old.get("obligations", {}), new.get("obligations", {})
    for oid, was in old_o.items():
        now = new_o.get(oid)
        if now is None:
            out.append(Weakening(f"proof obligation {oid}", "removed"))
            continue
        for field in ("property", "formal"):
            if was.get(field) != now.get(field):
                out.append(Weakening(f"proof obligation {oid}", f"{field} replaced (was {_short(was.get(field))})"))
        wider = _wider(was.get("tolerance"), now.get("tolerance"))
        if wider:
            out.append(Weakening(f"proof obligation {oid}", wider))
    old_e, new_e = old.get("equations", {}), new.get("equations", {})
    for name, was in old_e.items():
        now = new_e.get(name)
        if now is None:
            out.append(Weakening(f"equation {name}", "removed"))
        elif was.get("formula") != now.get("formula"):
            out.append(Weakening(f"equation {name}", f"formula replaced (was {_short(was.get('formula'))})"))
    return out


@dataclass(frozen=True)
class Acknowledgement:
    """One entry of ``claim_changes``: who accepted a weaker claim, why, and which claim."""

    by: str
    reason: str
    claim: str
    date: str | None = None
    changes: tuple[str, ...] = ()


def acknowledgements(data: Mapping[str, Any]) -> tuple[Acknowledgement, ...]:
    """The well-formed entries of ``claim_changes`` (the schema reports the others: PV010)."""
    entries = data.get(CHANGES_KEY)
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        by, reason, claim = entry.get("by"), entry.get("reason"), entry.get("claim")
        if not (isinstance(by, str) and by.strip() and isinstance(reason, str) and reason.strip()
                and isinstance(claim, str) and _HEX64.match(claim)):
            continue
        date = entry.get("date")
        out.append(Acknowledgement(by.strip(), " ".join(reason.split()), claim,
                                   str(date) if date is not None else None, tuple(_strings(entry.get("changes")))))
    return tuple(out)
