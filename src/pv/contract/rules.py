"""Semantic rules: what the schema cannot say about one contract.

Each rule is a generator ``rule(doc, ctx) -> Iterator[Issue]`` registered under a
stable id (``PV0xx``) in ``RULES``; ``check_document`` turns issues into located
``Finding`` values. Rules read plain data defensively: a file that breaks the
schema still gets every semantic finding that can be computed. Rules that need
the whole validated set (ids unique across files) live in ``validate.py`` and
are listed in ``RULE_TABLE`` with the load-time ones, which the docs mirror.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pv.contract import hygiene, ladder, references, requirements, statuses, typos
from pv.contract.evidence import is_defined
from pv.contract.findings import ERROR, WARNING, Finding, KeyPath
from pv.contract.load import Document
from pv.contract.rulebase import (
    Issue,
    Rule,
    RuleContext,
    close_match,
    falsifiers,
    metadata,
    obligations,
)
from pv.contract.statuses import contract_status

#: The issue's list plus the Hoare/Dafny-style kinds real contracts use
#: (pre/postconditions, frames, loop (in)variants, ``old`` state, termination...).
KNOWN_OBLIGATION_TYPES: frozenset[str] = frozenset({
    "invariant", "equivalence", "bound", "monotonicity", "idempotency", "linearity",
    "symmetry", "associativity", "commutativity", "conservation", "ordering", "completeness",
    "soundness", "determinism", "precondition", "postcondition", "frame", "loop_invariant",
    "loop_variant", "old_state", "termination", "liveness", "safety",
    # provable-contracts' canonical kinds beyond those
    "involution", "roundtrip", "state_machine", "classification", "independence", "subcontract",
})

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_ID_LENGTH = 128


_falsifiers = falsifiers
_metadata = metadata


def id_problem(value: str) -> str | None:
    """Why ``value`` is unsafe as a file name (ids name evidence files), or None."""
    if "\x00" in value:
        return "contains a NUL byte"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if ".." in value:
        return "contains '..'"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if not _SAFE_ID.match(value):
        return "must start with a letter or digit and use only letters, digits, '.', '_', '-'"
    return None


def rule_version_float(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    version = _metadata(doc).get("version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        shown = repr(version) if not (isinstance(version, float) and math.isnan(version)) else "nan"
        # The text as written (1.10), which the float (1.1) has lost: what to quote.
        written = doc.scalar_text(("metadata", "version"))
        quoted = written if written is not None and 0 < len(written) <= 40 else shown
        yield Issue(("metadata", "version"),
                    f"metadata.version was read as the number {shown}: YAML turns an unquoted "
                    f"1.0 into a float (and 1.10 into 1.1); quote it, e.g. version: \"{quoted}\"",
                    WARNING)


def rule_empty_formula(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    equations = doc.data.get("equations")
    if isinstance(equations, dict):
        for name, eq in equations.items():
            formula = eq.get("formula") if isinstance(eq, dict) else None
            if isinstance(formula, str) and not formula.strip():
                yield Issue(("equations", name, "formula"), f"equation '{name}' has an empty formula")


def rule_empty_prediction(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    for i, test in _falsifiers(doc):
        prediction = test.get("prediction")
        if isinstance(prediction, str) and not prediction.strip():
            yield Issue(("falsification_tests", i, "prediction"),
                        f"falsifier {test.get('id', i)!s} has an empty prediction: a test that "
                        "predicts nothing cannot be falsified")


def _repeated_ids(doc: Document, section: str, items: Iterator[tuple[int, dict[str, Any]]],
                  what: str) -> Iterator[Issue]:
    seen: dict[str, int] = {}
    for i, item in items:
        ident = item.get("id")
        if not isinstance(ident, str):
            continue
        if ident in seen:
            first_line, _ = doc.locate((section, seen[ident], "id"))
            yield Issue((section, i, "id"), f"duplicate {what} id {ident} (first at line {first_line})")
        else:
            seen[ident] = i


def rule_duplicate_ids(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    yield from _repeated_ids(doc, "falsification_tests", _falsifiers(doc), "falsifier")
    yield from _repeated_ids(doc, "proof_obligations", obligations(doc), "proof obligation")


def rule_safe_ids(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    cid = _metadata(doc).get("id")
    if isinstance(cid, str) and (why := id_problem(cid)):
        yield Issue(("metadata", "id"), f"contract id {cid!r} is not safe as a file name: {why}")
    for i, test in _falsifiers(doc):
        fid = test.get("id")
        if isinstance(fid, str) and (why := id_problem(fid)):
            yield Issue(("falsification_tests", i, "id"),
                        f"falsifier id {fid!r} is not safe as a file name: {why}")


def rule_obligation_types(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    obligations = doc.data.get("proof_obligations")
    if not isinstance(obligations, list):
        return
    for i, ob in enumerate(obligations):
        kind = ob.get("type") if isinstance(ob, dict) else None
        if not isinstance(kind, str) or kind in KNOWN_OBLIGATION_TYPES:
            continue
        guess = close_match(kind.lower().replace("-", "_"), KNOWN_OBLIGATION_TYPES, 0.7)
        hint = f"; did you mean '{guess}'?" if guess else " (see docs/contract-format.md)"
        yield Issue(("proof_obligations", i, "type"), f"unknown obligation type '{kind}'{hint}")


def rule_status_vocabulary(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """A falsifier status off the ladder, flagged once per distinct value (at its first use)."""
    uses: dict[str, list[int]] = {}
    for i, test in _falsifiers(doc):
        status = test.get("status")
        if isinstance(status, str) and ladder.normalize(status) is None:
            uses.setdefault(status, []).append(i)
    for status, where in uses.items():
        rung = ladder.interpret(status)
        if rung is not None:
            hint = f"; it means {rung}: write that"
        else:
            rungs = [r for r in ladder.RUNGS if r != "BLOCKER_*"]
            guess = close_match(str(status).upper().replace("-", "_"), tuple(rungs), 0.6)
            hint = f"; did you mean {guess}?" if guess else ""
        more = f" (and {len(where) - 1} more falsifier{'s' if len(where) > 2 else ''})" \
            if len(where) > 1 else ""
        yield Issue(("falsification_tests", where[0], "status"),
                    f"status {status!r}{more} is not on the ladder ({', '.join(ladder.RUNGS)}); "
                    f"pv falsify and pv gate count it as PROPOSED{hint}", WARNING)


def rule_status_mismatch(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """The contract stands where its weakest falsifier stands; say so when metadata disagrees."""
    written = contract_status(doc)
    claimed = ladder.interpret(written[1]) if written is not None else None
    if written is None or claimed is None:
        return
    statuses = []
    for _, test in _falsifiers(doc):
        canon = ladder.normalize(test.get("status", ladder.PROPOSED))
        if canon is not None:
            statuses.append(canon)
    if not statuses:
        return
    weakest = min(statuses, key=ladder.rank)
    if ladder.rank(claimed) == ladder.rank(weakest):
        return
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ladder.rank(kv[0])))
    direction = "ahead of" if ladder.rank(claimed) > ladder.rank(weakest) else "behind"
    where = ".".join(written[0])
    as_read = claimed if claimed == written[1] else f"{written[1]!r} (read as {claimed})"
    yield Issue(written[0],
                f"{where} {as_read} is {direction} its falsifiers ({shown}; unset counts "
                f"as PROPOSED): the contract stands at {weakest}", WARNING)


def _evidence(doc: Document, ctx: RuleContext) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    if not ctx.check_evidence or ctx.repo_root is None:
        return
    for i, test in _falsifiers(doc):
        evidence = test.get("algorithm_evidence")
        if isinstance(evidence, dict):
            yield ("falsification_tests", i, "algorithm_evidence"), evidence


def _cited_files(root: Path, evidence: dict[str, Any]) -> Iterator[tuple[int, str, Path | None]]:
    """(index, path as written, resolved file or None when it is not an existing relative file)."""
    paths = evidence.get("file_paths")
    for j, rel in enumerate(paths if isinstance(paths, list) else []):
        if not isinstance(rel, str):
            continue
        bad = Path(rel).is_absolute() or ".." in Path(rel).parts
        target = root / rel
        yield j, rel, (target if not bad and _probe(target) == "file" else None)


def _probe(path: Path) -> str:
    """``file``, ``other`` (exists, not a regular file) or ``absent``.

    The path comes from a contract: a NUL byte or a name longer than the file
    system allows (ENAMETOOLONG) names nothing, and is never pv's error.
    """
    try:
        if path.is_file():
            return "file"
        return "other" if path.exists() else "absent"
    except (OSError, ValueError):
        return "absent"


def rule_evidence_files(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """Evidence drift: every cited file exists, relative to the repository root."""
    for base, evidence in _evidence(doc, ctx):
        assert ctx.repo_root is not None
        for j, rel, target in _cited_files(ctx.repo_root, evidence):
            if target is not None:
                continue
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                why = "must be relative to the repository root, without '..'"
            elif _probe(ctx.repo_root / rel) == "other":
                why = "is not a regular file"
            else:
                why = f"does not exist (repository root {ctx.repo_root})"
            yield Issue(base + ("file_paths", j), f"evidence file '{rel}' {why}")


def rule_evidence_functions(doc: Document, ctx: RuleContext) -> Iterator[Issue]:
    """Evidence drift: every cited function is defined in the cited files that exist.

    Python files are read with ``ast`` (functions and classes, nested ones by
    qualified name); other languages match the name as a whole word.
    """
    for base, evidence in _evidence(doc, ctx):
        assert ctx.repo_root is not None
        files = [t for _, _, t in _cited_files(ctx.repo_root, evidence) if t is not None]
        names = evidence.get("function_names")
        if not files or not isinstance(names, list):
            continue
        for j, name in enumerate(names):
            if isinstance(name, str) and not any(is_defined(name, f) for f in files):
                cited = ", ".join(f.relative_to(ctx.repo_root).as_posix() for f in files)
                yield Issue(base + ("function_names", j),
                            f"function '{name}' is not defined in {cited}")


RULE_TABLE: tuple[Rule, ...] = (
    Rule("PV001", "unreadable", ERROR, "the file cannot be read (missing, permissions, not a file)"),
    Rule("PV002", "too-large", ERROR, "the file is over the size bound for a contract (2 MiB)"),
    Rule("PV003", "binary", ERROR, "the file is binary or not UTF-8 text"),
    Rule("PV004", "yaml-syntax", ERROR, "invalid YAML or a repeated mapping key, located"),
    Rule("PV005", "several-documents", ERROR, "more than one YAML document in the file"),
    Rule("PV006", "not-a-mapping", ERROR, "the file is empty, or its document is a list or scalar"),
    Rule("PV007", "alias-bomb", ERROR, "too many YAML aliases or too large an expansion"),
    Rule("PV008", "unsafe-tag", ERROR, "a !!python/* or other unsupported tag (never constructed)"),
    Rule("PV009", "too-deep", ERROR, "collections nested deeper than 512 levels"),
    Rule("PV010", "schema", ERROR, "structure per schemas/contract.schema.json"),
    Rule("PV011", "version-float", WARNING, "metadata.version was read as a number", rule_version_float),
    Rule("PV012", "empty-formula", ERROR, "an equation's formula is empty", rule_empty_formula),
    Rule("PV013", "empty-prediction", ERROR, "a falsifier's prediction is empty", rule_empty_prediction),
    Rule("PV014", "duplicate-id", ERROR, "a falsifier or proof obligation id repeats within the "
         "contract", rule_duplicate_ids),
    Rule("PV015", "duplicate-id-across-set", WARNING, "a falsifier id repeats across validated files"),
    Rule("PV016", "unsafe-id", ERROR, "a falsifier or contract id is not safe as a file name", rule_safe_ids),
    Rule("PV017", "obligation-type", ERROR, "unknown proof obligation type", rule_obligation_types),
    Rule("PV018", "status-vocabulary", WARNING, "falsifier status not on the ladder", rule_status_vocabulary),
    Rule("PV019", "status-mismatch", WARNING, "metadata.status disagrees with the falsifiers", rule_status_mismatch),
    Rule("PV020", "depends-on", WARNING, "a depends_on entry names no validated contract and no "
         "file next to this one"),
    Rule("PV021", "typo-key", WARNING, "an unknown key looks like a known one that bears no claim "
         "(did you mean)", typos.rule_typo_keys),
    Rule("PV022", "evidence-file", ERROR, "a cited evidence file does not exist", rule_evidence_files),
    Rule("PV023", "evidence-function", ERROR, "a cited function is not defined in the cited files",
         rule_evidence_functions),
    Rule("PV024", "duplicate-contract-id", ERROR, "two validated files have the same contract id"),
    Rule("PV025", "status-elsewhere", WARNING, "a status written under another key, which pv does "
         "not read (--fix renames it)", statuses.rule_status_elsewhere),
    Rule("PV026", "contract-status", WARNING, "a contract status with no clear rung on the ladder",
         statuses.rule_contract_status),
    Rule("PV027", "no-falsifiers", WARNING, "the contract has no falsification tests",
         hygiene.rule_no_falsifiers),
    Rule("PV028", "placeholder", WARNING, "TBD/TODO/FIXME/XXX in a formula or prediction",
         hygiene.rule_placeholders),
    Rule("PV029", "set-twice", WARNING, "a key set at the top level and in metadata, differently",
         hygiene.rule_set_twice),
    Rule("PV030", "dangling-reference", ERROR, "a cited obligation, falsifier or contract id does "
         "not exist (Kani obligation, invariants_enforced, binds_to)", references.rule_references),
    Rule("PV031", "no-test", WARNING, "a falsifier names no test, so pv falsify cannot bind it",
         hygiene.rule_test_missing),
    Rule("PV032", "binding-registry", ERROR, "a binding.yaml entry lacks what it binds"),
    Rule("PV033", "claim-key-typo", ERROR, "an unknown key where a claim-bearing key belongs (a "
         "misspelt live_requirements, falsification_tests...): pv would not read the claim",
         typos.rule_claim_key_typos),
    Rule("PV034", "unmeasurable-requirement", ERROR, "a live requirement names a fact pv does not "
         "measure, so no run could meet it", requirements.rule_unmeasurable),
    Rule("PV035", "depends-on-cycle", ERROR, "contracts depend on each other in a cycle "
         "(metadata.depends_on)"),
)
RULES: dict[str, Rule] = {rule.id: rule for rule in RULE_TABLE}


def check_document(doc: Document, ctx: RuleContext) -> Iterator[Finding]:
    """Run every per-document semantic rule and locate what they find."""
    for rule in RULE_TABLE:
        if rule.fn is None:
            continue
        for issue in rule.fn(doc, ctx):
            line, col = doc.locate(issue.path)
            yield Finding(str(doc.path), line, col, issue.path, rule.id, issue.message,
                          issue.severity)
