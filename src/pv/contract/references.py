"""Cross-references: every id a contract cites names something that exists.

Inside one contract, a Kani harness's ``obligation``, a falsifier's
``algorithm_evidence.invariants_enforced`` and its ``binds_to`` name a proof
obligation (by id, or by its property text), an equation or a falsifier. Across
the validated set, ``metadata.depends_on`` names a contract, and a ``binds_to``
that names nothing in its own file may name a contract or another contract's
falsifier. A note in parentheses after a reference (``silu-kernel-v1 (gate)``) is
the author's comment, not part of the name.

Only id-shaped references (``AP-INV-001``, ``PO-SM-RFE``: at least two upper-case
words joined by dashes or underscores) are errors when they dangle: free text
that names nothing is a warning for Kani obligations (which real contracts cite
by property text) and is left alone elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pv.contract.findings import ERROR, WARNING, Finding, KeyPath
from pv.contract.load import Document
from pv.contract.rulebase import (
    ID_SHAPE,
    Issue,
    RuleContext,
    close_match,
    falsifiers,
    obligations,
    strings,
)

if TYPE_CHECKING:
    from pv.contract.model import Contract

RULE = "PV030"
_NOTE = re.compile(r"\s+(?:\(.*\)|#.*)$")


def bare(reference: str) -> str:
    """``name (a note)`` -> ``name``; ``other.yaml`` -> ``other``."""
    name = _NOTE.sub("", reference.strip()).strip()
    return name[: -len(Path(name).suffix)] if Path(name).suffix in (".yaml", ".yml") else name


class _Names:
    """What a reference inside one contract may name."""

    def __init__(self, doc: Document) -> None:
        self.obligation_ids = {str(ob["id"]) for _, ob in obligations(doc)
                               if isinstance(ob.get("id"), str)}
        self.obligation_count = sum(1 for _ in obligations(doc))
        self.properties = {ob["property"].strip().lower(): ob["property"]
                           for _, ob in obligations(doc) if isinstance(ob.get("property"), str)}
        eqs = doc.data.get("equations")
        self.equations = {str(k) for k in eqs} if isinstance(eqs, dict) else set()
        self.falsifier_ids = {str(t["id"]) for _, t in falsifiers(doc) if isinstance(t.get("id"), str)}

    def ids(self) -> set[str]:
        return self.obligation_ids | self.equations | self.falsifier_ids

    def resolves(self, name: str) -> bool:
        return name in self.ids() or name.strip().lower() in self.properties

    def resolves_raw(self, raw: str) -> bool:
        """The reference as written, or without a trailing note in parentheses."""
        return self.resolves(raw) or self.resolves(bare(raw))


def _hint(name: str, known: Iterable[str], cutoff: float = 0.7) -> str:
    guess = close_match(name, frozenset(known), cutoff)
    return f"; did you mean '{guess}'?" if guess else ""


def _kani(doc: Document, names: _Names) -> Iterator[Issue]:
    harnesses = doc.data.get("kani_harnesses")
    for i, harness in enumerate(harnesses if isinstance(harnesses, list) else []):
        if not isinstance(harness, dict):
            continue
        hid = harness.get("id", f"kani_harnesses[{i}]")
        for j, raw in strings(harness.get("obligation")):
            name = bare(raw)
            if not name or names.resolves_raw(raw):
                continue
            path: KeyPath = ("kani_harnesses", i, "obligation") + ((j,) if j is not None else ())
            if ID_SHAPE.match(name):
                if names.obligation_count and not names.obligation_ids:
                    yield Issue(path, f"Kani harness {hid} cites proof obligation {name} by id, "
                                "but this contract's proof obligations carry no ids (the "
                                "provable-contracts format has none), so the citation cannot be "
                                "checked: give each obligation an 'id' to have it checked", WARNING)
                else:
                    yield Issue(path, f"Kani harness {hid} cites proof obligation {name}, which "
                                f"no proof obligation, equation or falsifier of this contract "
                                f"has as id{_hint(name, names.ids())}", ERROR)
            else:
                guess = close_match(name.lower(), frozenset(names.properties), 0.7)
                hint = f"; did you mean '{names.properties[guess]}'?" if guess else ""
                yield Issue(path, f"Kani harness {hid} cites obligation '{name}', which matches "
                            f"no proof obligation id or property, nor an equation{hint}", WARNING)


def _evidence_refs(doc: Document, names: _Names, ctx: RuleContext) -> Iterator[Issue]:
    open_refs: list[tuple[str, KeyPath, str]] = ctx.extra.setdefault("open_refs", [])
    for i, test in falsifiers(doc):
        fid = test.get("id", f"falsification_tests[{i}]")
        evidence = test.get("algorithm_evidence")
        cited = evidence.get("invariants_enforced") if isinstance(evidence, dict) else None
        for j, raw in strings(cited):
            name = bare(raw)
            if not ID_SHAPE.match(name) or names.resolves(name):
                continue
            path: KeyPath = ("falsification_tests", i, "algorithm_evidence", "invariants_enforced", j)
            if names.obligation_count and not names.obligation_ids:
                yield Issue(path, f"falsifier {fid} enforces {name}, but no proof obligation has "
                            "an id: give each one an 'id'", ERROR)
            else:
                yield Issue(path, f"falsifier {fid} enforces {name}, which no proof obligation "
                            f"of this contract has as id{_hint(name, names.ids())}", ERROR)
        for j, raw in strings(test.get("binds_to")):
            name = bare(raw)
            if ID_SHAPE.match(name) and not names.resolves(name):
                # Maybe another contract or its falsifier: the set-level check decides.
                path = ("falsification_tests", i, "binds_to") + ((j,) if j is not None else ())
                open_refs.append((name, path, f"falsifier {fid} binds_to"))


def rule_references(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    names = _Names(doc)
    yield from _kani(doc, names)
    yield from _evidence_refs(doc, names, ctx)


def set_references(summaries: list[Contract], contracts: dict[str, str]) -> Iterator[Finding]:
    """depends_on and cross-contract binds_to over the whole validated set."""
    known = set(contracts) | {s.stem for s in summaries}
    falsifier_ids = {f.id for s in summaries for f in s.falsifiers}
    folder_stems: dict[Path, frozenset[str]] = {}
    for summary in summaries:
        folder = Path(summary.file).parent
        for raw, (key, line, col) in summary.depends_on:
            name = bare(raw)
            if not name or name in known or _next_to(folder, name):
                continue
            if folder not in folder_stems:
                folder_stems[folder] = _stems(folder)
            hint = _hint(name, known | folder_stems[folder], 0.8)
            yield Finding(summary.file, line, col, key, "PV020",
                          f"depends_on '{raw}': no contract with id or file name {name} in the "
                          f"validated set or next to this file{hint}", WARNING)
        for name, (key, line, col), what in summary.open_refs:
            if name in known or name in falsifier_ids:
                continue
            yield Finding(summary.file, line, col, key, RULE,
                          f"{what} {name}, which names no obligation, equation or falsifier of "
                          f"this contract, nor any validated contract or falsifier"
                          f"{_hint(name, known | falsifier_ids)}", ERROR)


def _next_to(folder: Path, stem: str) -> bool:
    """Is there a file ``<stem>.yaml`` or ``.yml`` next to the contract?

    The name comes from the contract, so it may be anything: a separator, a NUL,
    or more than the file system allows in a name (ENAMETOOLONG). Such a name
    names no file; it is never an error of pv's.
    """
    if "/" in stem or "\x00" in stem or len(stem.encode("utf-8", "surrogateescape")) > 250:
        return False
    for suffix in (".yaml", ".yml"):
        try:
            if (folder / f"{stem}{suffix}").is_file():
                return True
        except (OSError, ValueError):
            return False
    return False


def _stems(folder: Path) -> frozenset[str]:
    try:
        return frozenset(p.stem for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    except OSError:
        return frozenset()


