"""SARIF 2.1.0, the format code-scanning dashboards read (GitHub, GitLab, Azure DevOps).

One run, tool ``pv``, one ``reportingDescriptor`` per rule that appears (with its
summary when pv documents the rule), one result per annotation. Locations are
URIs relative to the current directory (``uriBaseId`` ``%SRCROOT%``) when the
file is inside it, else absolute ``file://`` URIs; undecodable bytes in a file
name are percent-encoded, so the log is always valid UTF-8 JSON. Checked against
the OASIS schema in ``tests/report/test_formats.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pv.report.annotations import Annotation, relative
from pv.version import __version__

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pv.invalid/docs/contract-format.md"


def _uri(path: str) -> tuple[str, str | None]:
    raw = os.fsencode(path)
    rel = relative(path)
    if not Path(rel).is_absolute():
        return quote(os.fsencode(rel), safe="/"), "%SRCROOT%"
    return "file://" + quote(os.path.abspath(raw), safe="/"), None


def sarif_log(annotations: Iterable[Annotation],
              rules: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The SARIF log as a dict (``json.dumps`` it). ``rules``: rule id -> one-line summary."""
    items = list(annotations)
    order: dict[str, int] = {}
    for a in items:
        order.setdefault(a.rule, len(order))
    descriptors = []
    for rule_id in order:
        descriptor: dict[str, Any] = {"id": rule_id}
        summary = (rules or {}).get(rule_id)
        if summary:
            descriptor["shortDescription"] = {"text": summary}
        descriptors.append(descriptor)
    results = []
    for a in items:
        result: dict[str, Any] = {
            "ruleId": a.rule,
            "ruleIndex": order[a.rule],
            "level": a.level if a.level in ("error", "warning", "note") else "none",
            "message": {"text": a.message},
        }
        if a.file is not None:
            uri, base = _uri(a.file)
            artifact: dict[str, Any] = {"uri": uri}
            if base is not None:
                artifact["uriBaseId"] = base
            result["locations"] = [{"physicalLocation": {
                "artifactLocation": artifact,
                "region": {"startLine": max(1, a.line), "startColumn": max(1, a.column)},
            }}]
        results.append(result)
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "pv", "version": __version__,
                                "informationUri": INFORMATION_URI, "rules": descriptors}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


def validation_rules() -> dict[str, str]:
    """Summaries of pv validate's rules, for SARIF rule descriptors."""
    from pv.contract.rules import RULE_TABLE

    return {rule.id: f"{rule.name}: {rule.summary}" for rule in RULE_TABLE}


#: What each kind of gate failure means (``pv.report.gate`` kinds), for rule descriptors.
GATE_KINDS: dict[str, str] = {
    "invalid": "a contract fails pv validate, so its claim cannot be read as written",
    "weakened": "a contract claims less than the baseline's, without a reviewed acknowledgement",
    "regressed": "a falsifier's status moved down the ladder against the baseline",
    "falsifier-removed": "a falsifier of the baseline is gone",
    "contract-removed": "a contract of the baseline is gone",
    "unsupported": "a status is ahead of what its evidence supports",
    "stale": "the record backing a status covers files changed since it ran",
    "evidence": "an evidence record was edited, moved or deleted, or fails its integrity check",
    "binding": "a test and a falsifier do not name each other, or a test names an id no contract defines",
}


def gate_rules() -> dict[str, str]:
    """Summaries of pv gate's failure kinds, keyed as ``annotations.from_gate_failures`` names them."""
    return {f"gate/{kind}": text for kind, text in GATE_KINDS.items()}
