"""Where a status is written, and what a hand-written status means.

pv reads a falsifier's status from its ``status`` key and a contract's from
``metadata.status``. Real contracts also write ``discharge_status``,
``status_v1_2_0``, ``verdict``, a status inside an ``evidence`` mapping, or a
top-level ``status``: pv would silently count those falsifiers as PROPOSED.
These rules say so (PV025, fixable by ``pv validate --fix`` when the key only
needs renaming) and flag, once per value, a contract status with no clear rung
on the ladder (PV026); ``ladder.interpret`` maps the ones that have one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pv.contract import ladder
from pv.contract.findings import WARNING, KeyPath
from pv.contract.load import Document
from pv.contract.rulebase import Issue, RuleContext, falsifiers, metadata, shown

ELSEWHERE_RULE = "PV025"
#: Keys that hold a status under another name: ``discharge_status``, ``status_v1_2_0``,
#: ``current_status``, ``verdict``. ``status`` itself is the canonical key.
STATUS_KEY = re.compile(r"^(?:[a-z0-9]+_)*status(?:_v?\d+(?:[._]\d+)*)?$|^verdict$", re.IGNORECASE)
_EVIDENCE_KEYS = ("evidence", "discharge", "result", "results")


def _variants(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in mapping.items()
            if isinstance(k, str) and k != "status" and STATUS_KEY.match(k)
            and isinstance(v, str)]


def status_elsewhere(doc: Document) -> Iterator[tuple[KeyPath, str, Any, bool]]:
    """(path of the key, where the canonical key is, value, renamable in place) per variant."""
    meta = metadata(doc)
    for i, test in falsifiers(doc):
        if "status" in test:
            continue
        base: KeyPath = ("falsification_tests", i)
        for key, value in _variants(test)[:1]:
            yield base + (key,), f"falsification_tests[{i}].status", value, True
            break
        else:
            for ev in _EVIDENCE_KEYS:
                nested = test.get(ev)
                if isinstance(nested, dict) and isinstance(nested.get("status"), str):
                    yield (base + (ev, "status"), f"falsification_tests[{i}].status",
                           nested["status"], False)
                    break
    if "status" not in meta:
        for key, value in _variants(meta)[:1]:
            yield ("metadata", key), "metadata.status", value, True
            break
        else:
            top = doc.data.get("status")
            if isinstance(top, str) and "metadata" in doc.data:
                yield ("status",), "metadata.status", top, False


def rule_status_elsewhere(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    for path, canonical, value, renamable in status_elsewhere(doc):
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path)
        where = where.replace(".[", "[")
        fix = " (pv validate --fix renames it)" if renamable else ""
        if ladder.interpret(value) is None and isinstance(value, str):
            # Said here once rather than again by PV026.
            fix += f"; {shown(value)} has no clear rung on the ladder either"
        counted = ("counts as PROPOSED" if canonical != "metadata.status"
                   else "has no status")
        yield Issue(path, f"status written as {where}: {shown(value)}; pv reads only {canonical}, "
                    f"so this {'falsifier' if 'falsification' in canonical else 'contract'} "
                    f"{counted}: move the value to {canonical}{fix}", WARNING)


def contract_status(doc: Document) -> tuple[KeyPath, str] | None:
    """The contract-level status as written, and where: metadata.status, else a top-level one."""
    meta = metadata(doc)
    if isinstance(meta.get("status"), str):
        return ("metadata", "status"), meta["status"]
    top = doc.data.get("status")
    if isinstance(top, str):
        return ("status",), top
    return None


def rule_contract_status(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """A contract status that is neither on the ladder nor a clear synonym of a rung."""
    found = contract_status(doc)
    if found is None or found[0] != ("metadata", "status") or ladder.interpret(found[1]) is not None:
        return  # a top-level status is PV025's finding, which names the rung problem too
    path, status = found
    yield Issue(path, f"contract status {shown(status)} is not on the ladder and has no clear rung "
                f"({', '.join(ladder.RUNGS)}); reports show it as written and compare nothing "
                "against the falsifiers: use a rung, or keep the word in another key", WARNING)
