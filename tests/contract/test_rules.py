"""Each semantic rule: the valid fixture passes it, a contract that breaks it is caught, located."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pv.contract.load import load_document
from pv.contract.rules import (
    KNOWN_OBLIGATION_TYPES,
    RULE_TABLE,
    RULES,
    RuleContext,
    check_document,
    id_problem,
)
from pv.contract.validate import validate_files

REPO = Path(__file__).resolve().parents[2]


def _findings(path: Path, **kwargs: Any) -> list[Any]:
    return list(validate_files([path], **kwargs).findings)


def test_valid_fixture_passes_every_rule(write, valid_text):
    report = validate_files([write(valid_text)], strict=True, check_evidence=False)
    assert report.findings == () and report.ok


def _mutate(valid_text: str, change: Callable[[dict[str, Any]], None]) -> str:
    data = yaml.safe_load(valid_text)
    change(data)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _ft(i: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: d["falsification_tests"][i]


def _set_status(value: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["falsification_tests"][0].__setitem__("status", value)


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, tuple[Any, ...], str]] = [
    ("PV010", lambda d: d["metadata"].pop("description"), "error", ("metadata",),
     "missing required key 'description'"),
    ("PV010", lambda d: d.__setitem__("equations", [{"formula": "x"}]), "error", ("equations",),
     "expected mapping, got list"),
    ("PV010", lambda d: d["falsification_tests"][0].__setitem__("algorithm_evidence",
                                                                {"file_path": ["x"]}),
     "error", ("falsification_tests", 0, "algorithm_evidence", "file_path"), "unknown key"),
    ("PV010", lambda d: d["falsification_tests"][0].__setitem__("live_requirements",
                                                                {"device": "tpu"}),
     "error", ("falsification_tests", 0, "live_requirements", "device"), "not one of cpu, cuda"),
    ("PV010", lambda d: d["falsification_tests"][0].__setitem__("algorithm_evidence", [1]),
     "error", ("falsification_tests", 0, "algorithm_evidence", 0), "expected string, got integer"),
    ("PV010", lambda d: d["falsification_tests"][0].__setitem__("algorithm_evidence", 7),
     "error", ("falsification_tests", 0, "algorithm_evidence"), "matches none of the allowed forms"),
    ("PV011", lambda d: d["metadata"].__setitem__("version", 1.0), "warning", ("metadata", "version"),
     "read as the number 1.0"),
    ("PV012", lambda d: d["equations"]["scale"].__setitem__("formula", "  "), "error",
     ("equations", "scale", "formula"), "empty formula"),
    ("PV013", lambda d: d["falsification_tests"][1].__setitem__("prediction", ""), "error",
     ("falsification_tests", 1, "prediction"), "empty prediction"),
    ("PV014", lambda d: d["falsification_tests"][1].__setitem__("id", "FALSIFY-DEMO-001"), "error",
     ("falsification_tests", 1, "id"), "duplicate falsifier id FALSIFY-DEMO-001"),
    ("PV016", lambda d: d["falsification_tests"][0].__setitem__("id", "../escape"), "error",
     ("falsification_tests", 0, "id"), "not safe as a file name"),
    ("PV016", lambda d: d["metadata"].__setitem__("id", "a/b"), "error", ("metadata", "id"),
     "path separator"),
    ("PV017", lambda d: d["proof_obligations"][0].__setitem__("type", "invarient"), "error",
     ("proof_obligations", 0, "type"), "did you mean 'invariant'"),
    ("PV017", lambda d: d["proof_obligations"][0].__setitem__("type", "vibes"), "error",
     ("proof_obligations", 0, "type"), "unknown obligation type 'vibes'"),
    ("PV018", _set_status("DONE"), "warning", ("falsification_tests", 0, "status"),
     "not on the ladder"),
    ("PV018", _set_status("FUNCTINAL"), "warning", ("falsification_tests", 0, "status"),
     "did you mean FUNCTIONAL"),
    ("PV019", lambda d: d["metadata"].__setitem__("status", "FUNCTIONAL"), "warning",
     ("metadata", "status"), "FUNCTIONAL is ahead of its falsifiers (2 PROPOSED"),
    ("PV020", lambda d: d["metadata"].__setitem__("depends_on", ["no-such-contract-v1"]), "warning",
     ("metadata", "depends_on", 0), ("no contract with id or file name no-such-contract-v1 in the "
                                     "validated set or next to this file")),
    ("PV021", lambda d: _ft(0)(d).__setitem__("if_fail", _ft(0)(d).pop("if_fails")), "warning",
     ("falsification_tests", 0, "if_fail"), "did you mean 'if_fails'"),
    ("PV021", lambda d: d.__setitem__("kani_harness", []), "warning", ("kani_harness",),
     "unknown key 'kani_harness'; did you mean 'kani_harnesses'"),
    ("PV021", lambda d: d["proof_obligations"][0].__setitem__("applies_too", "x"), "warning",
     ("proof_obligations", 0, "applies_too"), "did you mean 'applies_to'"),
    ("PV021", lambda d: d["metadata"].__setitem__("auther", "x"), "warning",
     ("metadata", "auther"), "did you mean 'author'"),
    ("PV021", lambda d: d.__setitem__("author", "me"), "warning", ("author",),
     "did you mean 'metadata.author' (which is missing)"),
    ("PV025", lambda d: _ft(1)(d).__setitem__("discharge_status", "FUNCTIONAL"), "warning",
     ("falsification_tests", 1, "discharge_status"), "pv reads only falsification_tests[1].status"),
    ("PV025", lambda d: _ft(1)(d).__setitem__("evidence", {"status": "FUNCTIONAL"}), "warning",
     ("falsification_tests", 1, "evidence", "status"), "counts as PROPOSED"),
    ("PV025", lambda d: d.__setitem__("status", d["metadata"].pop("status")), "warning",
     ("status",), "pv reads only metadata.status"),
    ("PV026", lambda d: d["metadata"].__setitem__("status", "SHIPPED"), "warning",
     ("metadata", "status"), "'SHIPPED' is not on the ladder and has no clear rung"),
    ("PV027", lambda d: d.pop("falsification_tests"), "warning", (), "no falsification tests"),
    ("PV028", lambda d: d["equations"]["scale"].__setitem__("formula", "y = TBD"), "warning",
     ("equations", "scale", "formula"), "placeholder text (TBD)"),
    ("PV028", lambda d: _ft(0)(d).__setitem__("prediction", "TODO: decide"), "warning",
     ("falsification_tests", 0, "prediction"), "placeholder text (TODO)"),
    ("PV029", lambda d: d.__setitem__("version", "2.0"), "warning", ("version",),
     "'version' is set twice with different values: top-level '2.0' and metadata.version '1.0.0'"),
    ("PV030", lambda d: d.__setitem__("kani_harnesses", [{"id": "K-1", "obligation": "DEMO-OB-2"}]),
     "error", ("kani_harnesses", 0, "obligation"), "did you mean 'DEMO-OB-1'?"),
    ("PV030", lambda d: _ft(0)(d).__setitem__("algorithm_evidence",
                                              {"invariants_enforced": ["DEMO-OB-9"]}),
     "error", ("falsification_tests", 0, "algorithm_evidence", "invariants_enforced", 0),
     "enforces DEMO-OB-9, which no proof obligation"),
    ("PV030", lambda d: _ft(0)(d).__setitem__("binds_to", "FALSIFY-NOPE-001"), "error",
     ("falsification_tests", 0, "binds_to"), "nor any validated contract or falsifier"),
    ("PV031", lambda d: _ft(1)(d).pop("test"), "warning", ("falsification_tests", 1),
     "names no 'test'"),
    ("PV030", lambda d: _ft(0)(d).__setitem__("binds_to", "PO-SM-RFE"), "error",
     ("falsification_tests", 0, "binds_to"), "binds_to PO-SM-RFE, which names no obligation"),
    ("PV030", lambda d: d.__setitem__("kani_harnesses", [{"id": "K-1", "obligation": "DEMO-OB-X"}]),
     "error", ("kani_harnesses", 0, "obligation"), "cites proof obligation DEMO-OB-X, which no"),
    ("PV014", lambda d: d["proof_obligations"].append(dict(d["proof_obligations"][0])), "error",
     ("proof_obligations", 1, "id"), "duplicate proof obligation id DEMO-OB-1 (first at line "),
    ("PV033", lambda d: d.__setitem__("falsification_test", d.pop("falsification_tests")),
     "error", ("falsification_test",), ("unknown key 'falsification_test' where "
     "'falsification_tests' belongs: pv would not read this claim (the contract would count as "
     "having no falsification tests); rename it")),
    ("PV033", lambda d: _ft(0)(d).__setitem__("predicton", _ft(0)(d).pop("prediction")), "error",
     ("falsification_tests", 0, "predicton"), "where 'prediction' belongs"),
    ("PV033", lambda d: _ft(0)(d).__setitem__("live_requirement", {"device": "cuda"}), "error",
     ("falsification_tests", 0, "live_requirement"), ("unknown key 'live_requirement' where "
     "'live_requirements' belongs: pv would not read this claim (the falsifier would count as "
     "having no live requirements); rename it")),
    ("PV033", lambda d: _ft(1)(d).__setitem__("stauts", "FUNCTIONAL"), "error",
     ("falsification_tests", 1, "stauts"), "(the falsifier would count as PROPOSED)"),
    ("PV033", lambda d: d["proof_obligations"][0].__setitem__("tolerence", 1e-5), "error",
     ("proof_obligations", 0, "tolerence"), "where 'tolerance' belongs"),
    ("PV033", lambda d: d["metadata"].__setitem__("ids", d["metadata"].pop("id")), "error",
     ("metadata", "ids"), "(the contract id would default to the file stem)"),
    ("PV034", lambda d: _ft(0)(d).__setitem__("live_requirements", {"backend": "triton"}), "error",
     ("falsification_tests", 0, "live_requirements", "backend"),
     ("live_requirements.backend is not a fact pv measures (device, dtype, weights, model_sha256, "
     "model_fingerprint, architecture): no run could meet it, so the falsifier could never be live")),
    ("PV034", lambda d: _ft(0)(d).__setitem__("live_requirements", {"devices": "cuda"}), "error",
     ("falsification_tests", 0, "live_requirements", "devices"), "; did you mean 'device'?"),
    ("PV034", lambda d: _ft(1)(d).__setitem__("discharge", {"matrix": [{"device": "cuda"},
                                                                      {"gpu": "h100"}]}),
     "error", ("falsification_tests", 1, "discharge", "matrix", 1, "gpu"),
     "discharge.matrix[1].gpu is not a fact pv measures"),
]


@pytest.mark.parametrize("rule, change, severity, path, text", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_catches_and_locates(write, valid_text, rule, change, severity, path, text):
    contract = write(_mutate(valid_text, change))
    findings = _findings(contract, check_evidence=False)
    hits = [f for f in findings if f.rule == rule]
    assert hits, [f.format() for f in findings]
    hit = hits[0]
    assert hit.severity == severity and hit.path == path and text in hit.message, hit.format()
    # The location is the key (or item) the path names.
    expected = load_document(contract).locate(path)
    assert (hit.line, hit.column) == expected
    line = contract.read_text(encoding="utf-8").splitlines()[hit.line - 1]
    if path and isinstance(path[-1], str):
        assert line[hit.column - 1:].startswith(f"{path[-1]}:"), line


def test_every_rule_with_a_function_has_a_case():
    covered = {c[0] for c in CASES} | {"PV022", "PV023"}  # evidence: tests/contract/test_evidence.py
    assert {r.id for r in RULE_TABLE if r.fn is not None} <= covered


def test_depends_on_resolves_siblings(write, valid_text, tmp_path):
    write("metadata: {version: '1', description: base}\n", "base-v1.yaml")
    write("metadata: {version: '1', description: other}\n", "other-v1.yml")
    text = _mutate(valid_text, lambda d: d["metadata"].__setitem__(
        "depends_on", ["base-v1", "other-v1.yml", "base-v2"]))
    findings = [f for f in _findings(write(text), check_evidence=False) if f.rule == "PV020"]
    assert [f.path for f in findings] == [("metadata", "depends_on", 2)]
    assert "did you mean 'base-v1'" in findings[0].message


def test_status_spellings_normalise(write, valid_text):
    text = _mutate(valid_text, lambda d: [
        d["falsification_tests"][0].__setitem__("status", "blocker-upstream-missing"),
        d["falsification_tests"][1].__setitem__("status", "functional"),
        d["metadata"].__setitem__("status", "Blocker_Fixture_Absent")])
    assert _findings(write(text), strict=True, check_evidence=False) == []


def test_status_mismatch_behind(write, valid_text):
    text = _mutate(valid_text, lambda d: [t.__setitem__("status", "FUNCTIONAL")
                                          for t in d["falsification_tests"]])
    hits = [f for f in _findings(write(text), check_evidence=False) if f.rule == "PV019"]
    assert hits and "PROPOSED is behind its falsifiers" in hits[0].message


def test_non_ladder_metadata_status_is_not_compared(write, valid_text):
    # Flagged once (PV026) as having no rung, and never compared with the falsifiers (PV019).
    text = _mutate(valid_text, lambda d: d["metadata"].__setitem__("status", "ACTIVE"))
    assert [f.rule for f in _findings(write(text), check_evidence=False)] == ["PV026"]


@pytest.mark.parametrize("value, ok", [
    ("FALSIFY-ATTN-SUB-001", True), ("a.b_c-1", True), ("x" * 128, True),
    ("x" * 129, False), ("a/b", False), ("a\\b", False), ("a..b", False), ("..", False),
    ("a\x00b", False), (".hidden", False), ("-flag", False), ("with space", False), ("", False),
])
def test_id_safety(value, ok):
    assert (id_problem(value) is None) == ok


def test_rules_survive_malformed_sections(write):
    """Wrong types everywhere: schema findings, and no rule crashes on them."""
    text = ("metadata: {version: [1], description: 3, depends_on: 5, status: [x]}\n"
            "equations: {a: 3, b: {formula: [x]}}\nproof_obligations: [3, {type: 5}]\n"
            "falsification_tests: [3, {id: [x], status: {a: 1}, algorithm_evidence: 7}]\n")
    findings = _findings(write(text), check_evidence=True)
    assert findings and all(f.rule == "PV010" for f in findings)


def test_known_obligation_types_include_the_documented_list():
    issue_list = {"invariant", "equivalence", "bound", "monotonicity", "idempotency", "linearity",
                  "symmetry", "associativity", "conservation", "ordering", "completeness",
                  "soundness", "determinism"}
    assert issue_list <= KNOWN_OBLIGATION_TYPES


def test_rule_ids_are_stable_and_documented():
    ids = [r.id for r in RULE_TABLE]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"PV\d{3}", i) for i in ids)
    assert set(RULES) == set(ids)
    doc = (REPO / "docs" / "contract-format.md").read_text(encoding="utf-8")
    for rule in RULE_TABLE:
        assert re.search(rf"\|\s*{rule.id}\s*\|\s*{re.escape(rule.name)}\s*\|", doc), rule.id
    for kind in KNOWN_OBLIGATION_TYPES:
        assert f"`{kind}`" in doc, kind


def test_check_document_yields_located_findings(write, valid_text):
    doc = load_document(write(_mutate(valid_text, lambda d: d["metadata"].__setitem__("version", 2))))
    found = list(check_document(doc, RuleContext()))
    assert [(f.rule, f.path) for f in found] == [("PV011", ("metadata", "version"))]
    assert found[0].format().startswith(f"{doc.path}:")


def test_references_resolve_with_notes_and_property_text(write, valid_text):
    text = _mutate(valid_text, lambda d: [
        d.__setitem__("kani_harnesses", [
            {"id": "K-1", "obligation": "DEMO-OB-1 (the finite bound)"},
            {"id": "K-2", "obligation": "output is finite"},
            {"id": "K-3", "obligation": "scale"}]),
        _ft(0)(d).__setitem__("algorithm_evidence", {"invariants_enforced": ["DEMO-OB-1"]}),
        _ft(1)(d).__setitem__("binds_to", ["FALSIFY-DEMO-001", "scale"])])
    assert _findings(write(text), strict=True, check_evidence=False) == []


def test_obligations_cited_by_id_need_ids(write, valid_text):
    text = _mutate(valid_text, lambda d: [
        d["proof_obligations"][0].pop("id"),
        d.__setitem__("kani_harnesses", [{"id": "K-1", "obligation": "DEMO-OB-1"}])])
    [hit] = [f for f in _findings(write(text), check_evidence=False) if f.rule == "PV030"]
    assert "proof obligations carry no ids" in hit.message and hit.severity == "warning"


@pytest.mark.parametrize("key", ["discharge_status", "status_v1_2_0", "verdict", "current_status"])
def test_status_key_variants_are_recognised(write, valid_text, key):
    text = _mutate(valid_text, lambda d: _ft(1)(d).__setitem__(key, "FUNCTIONAL"))
    [hit] = [f for f in _findings(write(text), check_evidence=False) if f.rule == "PV025"]
    assert hit.path == ("falsification_tests", 1, key) and "--fix renames it" in hit.message


def test_depends_on_resolves_across_the_set_and_ignores_notes(tmp_path, write, valid_text):
    other = tmp_path / "elsewhere"
    write("metadata: {id: base-contract, version: '1', description: base}\n"
          "falsification_tests: [{id: F-B, rule: r, prediction: p, test: t, if_fails: f}]\n",
          "base.yaml", other)
    text = _mutate(valid_text, lambda d: d["metadata"].__setitem__(
        "depends_on", ["base-contract (for the scale)", "base"]))
    report = validate_files([write(text), other / "base.yaml"], check_evidence=False)
    assert [f for f in report.findings if f.rule == "PV020"] == []


def test_every_unknown_key_of_a_closed_mapping_in_one_run(write, valid_text):
    text = _mutate(valid_text, lambda d: _ft(0)(d).__setitem__(
        "algorithm_evidence", {"file_path": ["x"], "function_name": ["f"], "notes": "n"}))
    hits = [f.path[-1] for f in _findings(write(text), check_evidence=False) if f.rule == "PV010"]
    assert hits == ["file_path", "function_name"]


def test_synonym_statuses_map_to_a_rung(write, valid_text):
    # 'partial' has a clear rung: compared with the falsifiers (PV019), not flagged as unknown.
    text = _mutate(valid_text, lambda d: d["metadata"].__setitem__("status", "partial"))
    rules = {f.rule: f for f in _findings(write(text), check_evidence=False)}
    assert set(rules) == {"PV019"} and "'partial' (read as PARTIAL_ALGORITHM_LEVEL)" in \
        rules["PV019"].message


def test_free_form_falsifier_status_is_flagged_once(write, valid_text):
    text = _mutate(valid_text, lambda d: [t.__setitem__("status", "proved")
                                          for t in d["falsification_tests"]])
    hits = [f for f in _findings(write(text), check_evidence=False) if f.rule == "PV018"]
    assert len(hits) == 1 and "(and 1 more falsifier)" in hits[0].message
