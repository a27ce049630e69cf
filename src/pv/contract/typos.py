"""Unknown keys that look like known ones: a misspelt claim (PV033) or a misspelt key (PV021).

Contracts may carry sections of their own, so an unknown key is not wrong in
itself. One that is a close match for a key pv reads most likely is that key,
misspelt, and pv does not read it. When that key bears a claim (a falsifier's
``live_requirements``, ``prediction``, ``status``; the top-level
``falsification_tests``...), the claim silently disappears: ``live_requirement:
{device: cuda}`` would leave the falsifier with no live requirement at all. That
is an error (PV033). A close match for any other known key is a warning (PV021).

Each unknown key gets at most one of the two findings; a key that is already
present is never the suggestion (it cannot be the one meant), a known key
extended by a word (``applies_to_phase``) is a key of its own, not a misspelling,
and a status key that PV025 reports (``status_v1``, ``discharge_status``) is left
to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pv.contract.findings import ERROR, WARNING, KeyPath
from pv.contract.hygiene import META_AT_TOP
from pv.contract.load import Document
from pv.contract.rulebase import Issue, RuleContext, close_match, falsifiers, metadata, obligations
from pv.contract.statuses import status_elsewhere

TOP_LEVEL_KEYS = ("metadata", "equations", "proof_obligations", "falsification_tests",
                  "kani_harnesses", "qa_gate", "verification_summary", "enforcement", "claim_changes")
METADATA_KEYS = ("version", "description", "references", "id", "kind", "status", "created",
                 "author", "depends_on", "binds_to", "changelog")
FALSIFIER_KEYS = ("id", "rule", "prediction", "test", "if_fails", "status", "algorithm_evidence",
                  "live_requirements", "discharge", "binds_to")
OBLIGATION_KEYS = ("type", "property", "formal", "tolerance", "applies_to", "id")

#: Claim-bearing keys, per kind of mapping: what pv would believe if the key were not read.
CLAIM_KEYS: dict[str, dict[str, str]] = {
    "contract": {
        "metadata": "the contract would have no metadata: no id, version or status",
        "falsification_tests": "the contract would count as having no falsification tests",
        "proof_obligations": "the contract would count as having no proof obligations",
        "equations": "the contract would count as having no equations",
    },
    "falsifier": {
        "id": "the falsifier would have no id, so no test could bind it",
        "test": "the falsifier would name no test, so pv falsify could not bind it",
        "prediction": "the falsifier would predict nothing",
        "rule": "the falsifier would state no rule",
        "live_requirements": "the falsifier would count as having no live requirements",
        "discharge": "the falsifier would have no discharge matrix or artifacts",
        "algorithm_evidence": "the falsifier would cite no algorithm evidence",
        "status": "the falsifier would count as PROPOSED",
    },
    "obligation": {
        "id": "the obligation would have no id, so nothing could cite it",
        "property": "the obligation would state no property",
        "formal": "the obligation would have no formal statement",
        "tolerance": "the obligation would count as exact, with no tolerance",
    },
    "metadata": {
        "id": "the contract id would default to the file stem",
    },
}


@dataclass(frozen=True)
class Typo:
    path: KeyPath  # of the unknown key
    key: str
    guess: str  # the known key it is close to
    consequence: str | None  # set when ``guess`` bears a claim


def _scopes(doc: Document) -> Iterator[tuple[str, KeyPath, dict[Any, Any], tuple[str, ...]]]:
    yield "contract", (), doc.data, TOP_LEVEL_KEYS
    if isinstance(doc.data.get("metadata"), dict):
        yield "metadata", ("metadata",), metadata(doc), METADATA_KEYS
    for i, ob in obligations(doc):
        yield "obligation", ("proof_obligations", i), ob, OBLIGATION_KEYS
    for i, test in falsifiers(doc):
        yield "falsifier", ("falsification_tests", i), test, FALSIFIER_KEYS


def _spelt_alike(key: str, known: tuple[str, ...]) -> str | None:
    """``Id``, ``STATUS``, ``live-requirements``: a known key but for case and dashes
    (difflib alone misses short ones: ``Id`` and ``id`` share one letter of two)."""
    folded = key.lower().replace("-", "_")
    return next((k for k in known if k == folded), None)


def _extends(key: str, known: str) -> bool:
    """``applies_to_phase``, ``pre_status``: a known key plus a word is a key of its own."""
    return key.startswith(known + "_") or key.endswith("_" + known)


def typos(doc: Document) -> Iterator[Typo]:
    """Every unknown key that is a close match for an absent known key of its mapping."""
    elsewhere = {path for path, *_ in status_elsewhere(doc)}
    for kind, prefix, mapping, known in _scopes(doc):
        claims = CLAIM_KEYS[kind]
        absent = tuple(k for k in known if k not in mapping)
        for key in mapping:
            if not isinstance(key, str) or key in known or prefix + (key,) in elsewhere \
                    or (not prefix and key in META_AT_TOP):
                continue
            guess = _spelt_alike(key, absent) or close_match(key, absent, 0.75)
            if guess is not None and not _extends(key, guess):
                yield Typo(prefix + (key,), key, guess, claims.get(guess))


def rule_claim_key_typos(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """PV033: a misspelt claim-bearing key, which pv would not read."""
    for typo in typos(doc):
        if typo.consequence is not None:
            yield Issue(typo.path, f"unknown key '{typo.key}' where '{typo.guess}' belongs: pv "
                        f"would not read this claim ({typo.consequence}); rename it", ERROR)


def rule_typo_keys(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """PV021: a misspelt key that bears no claim, or a metadata key at the top level."""
    meta = metadata(doc)
    for key in doc.data:
        # Set in both places: PV029 when the values differ, nothing when they agree.
        # A top-level status is PV025's (status written elsewhere).
        if isinstance(key, str) and key in META_AT_TOP and key not in meta and key != "status" \
                and "metadata" in doc.data:
            yield Issue((key,), f"top-level '{key}' is not read; did you mean 'metadata.{key}' "
                        "(which is missing)?", WARNING)
    for typo in typos(doc):
        if typo.consequence is None:
            where = ".".join(str(p) for p in typo.path[:-1])
            shown = f"{where}.{typo.key}" if where else typo.key
            yield Issue(typo.path, f"unknown key '{shown}'; did you mean '{typo.guess}'?", WARNING)
