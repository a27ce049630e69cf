"""depends_on cycles (PV035), repeated ids by line (PV014), id-shaped references (PV030),
the version hint from the text written (PV011)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pv.contract.graph import build, load_set
from pv.contract.rulebase import ID_SHAPE
from pv.contract.validate import validate_files


def _contract(folder: Path, stem: str, deps: list[str], cid: str | None = None) -> Path:
    meta: dict[str, Any] = {"version": "1", "description": "d", "depends_on": deps}
    if cid:
        meta["id"] = cid
    path = folder / f"{stem}.yaml"
    path.write_text(json.dumps({"metadata": meta, "falsification_tests": [
        {"id": f"F-{stem}", "rule": "r", "prediction": "p", "test": "t", "if_fails": "f"}]},
        indent=1), encoding="utf-8")
    return path


def _cycles(paths: list[Path]) -> list[tuple[str, int, str]]:
    report = validate_files(paths, check_evidence=False)
    return [(Path(f.file).name, f.line, f.message) for f in report.findings if f.rule == "PV035"]


def test_a_two_contract_cycle_is_one_error_at_the_first_contract(tmp_path):
    a = _contract(tmp_path, "a", ["x-base", "b (for the scale)"])
    b = _contract(tmp_path, "b", ["a"])
    x = _contract(tmp_path, "x-base", [])
    report = validate_files([a, b, x], check_evidence=False)
    [hit] = [f for f in report.findings if f.rule == "PV035"]
    assert hit.severity == "error" and Path(hit.file).name == "a.yaml"
    assert hit.path == ("metadata", "depends_on", 1)
    line = a.read_text(encoding="utf-8").splitlines()[hit.line - 1]
    assert line[hit.column - 1:].startswith('"b (for the scale)"')
    assert hit.message == ("depends_on cycle a -> b -> a: no contract in it can be established "
                           "first; remove one of the depends_on entries that close it")


def test_a_cycle_through_ids_and_stems_names_every_contract(tmp_path):
    paths = [_contract(tmp_path, "one", ["two-file"], cid="ONE"),
             _contract(tmp_path, "two-file", ["three"], cid="TWO"),
             _contract(tmp_path, "three", ["ONE"])]
    assert _cycles(paths) == [("one.yaml", 6, ("depends_on cycle ONE -> TWO -> three -> ONE: no "
                               "contract in it can be established first; remove one of the "
                               "depends_on entries that close it"))]


def test_a_contract_that_depends_on_itself(tmp_path):
    assert _cycles([_contract(tmp_path, "solo", ["solo"])]) == [
        ("solo.yaml", 6, ("depends_on cycle solo -> solo: the contract depends on itself, so it "
         "can never be established; remove this entry"))]


def test_every_member_of_a_tangled_cycle_is_named(tmp_path):
    paths = [_contract(tmp_path, "a", ["b"]), _contract(tmp_path, "b", ["a", "c"]),
             _contract(tmp_path, "c", ["b"])]
    [(name, _, message)] = _cycles(paths)
    assert name == "a.yaml" and message.startswith("depends_on cycle a -> b -> a: ")
    assert "; c is in the same cycle;" in message


def test_chains_and_missing_names_are_no_cycle(tmp_path):
    paths = [_contract(tmp_path, "a", ["b"]), _contract(tmp_path, "b", ["c", "ghost"]),
             _contract(tmp_path, "c", [])]
    assert _cycles(paths) == []


def test_validate_and_graph_find_the_same_cycles(tmp_path):
    paths = [_contract(tmp_path, "a", ["b"]), _contract(tmp_path, "b", ["a"]),
             _contract(tmp_path, "c", ["d"], cid="C"), _contract(tmp_path, "d", ["C"]),
             _contract(tmp_path, "e", ["e"]), _contract(tmp_path, "f", ["a"])]
    graph = build(load_set(paths)[0])
    assert len(_cycles(paths)) == len(graph.cycles) == 3


def test_duplicate_ids_name_the_first_line(write):
    text = ("metadata: {version: '1', description: d}\n"
            "proof_obligations:\n"
            "  - {id: PO-X-001, type: bound, property: p}\n"
            "  - {id: PO-X-002, type: bound, property: q}\n"
            "  - {id: PO-X-001, type: bound, property: r}\n"
            "falsification_tests:\n"
            "  - {id: F-1, rule: r, prediction: p, test: t, if_fails: f}\n"
            "  - {id: F-1, rule: r, prediction: p, test: t, if_fails: f}\n")
    found = [(f.line, f.path, f.message) for f in validate_files([write(text)]).findings
             if f.rule == "PV014"]
    assert found == [
        (5, ("proof_obligations", 2, "id"), "duplicate proof obligation id PO-X-001 (first at line 3)"),
        (8, ("falsification_tests", 1, "id"), "duplicate falsifier id F-1 (first at line 7)")]


@pytest.mark.parametrize("value", ["PO-SM-RFE", "FALSIFY-SM-A", "AP-INV-001", "ATTN_SUB_2",
                                   "FALSIFY-AP-001", "X-1"])
def test_id_shaped(value):
    assert ID_SHAPE.match(value)


@pytest.mark.parametrize("value", ["scale", "SOFTMAX", "output is finite", "Po-Sm", "PO-", "-PO",
                                   "PO--SM", "PO SM"])
def test_not_id_shaped(value):
    assert not ID_SHAPE.match(value)


def test_an_id_without_digits_must_resolve(write):
    text = ("metadata: {version: '1', description: d}\n"
            "proof_obligations: [{id: PO-SM-RFE, type: bound, property: p}]\n"
            "falsification_tests:\n"
            "  - id: FALSIFY-SM-A\n    rule: r\n    prediction: p\n    test: t\n    if_fails: f\n"
            "    binds_to: [PO-SM-RFE, PO-SM-RFX, some free text]\n"
            "    algorithm_evidence: {invariants_enforced: [PO-SM-RFE, PO-SM-RFF]}\n"
            "kani_harnesses: [{id: K-1, obligation: FALSIFY-SM-B}, {id: K-2, obligation: FALSIFY-SM-A}]\n")
    found = sorted((f.path, f.severity) for f in validate_files([write(text)]).findings
                   if f.rule == "PV030")
    assert found == [
        (("falsification_tests", 0, "algorithm_evidence", "invariants_enforced", 1), "error"),
        (("falsification_tests", 0, "binds_to", 1), "error"),
        (("kani_harnesses", 0, "obligation"), "error")]


@pytest.mark.parametrize("written, read", [("1.10", "1.1"), ("2.0", "2.0"), ("1.250", "1.25"),
                                           ("3", "3"), ("1.0e+3", "1000.0")])
def test_version_hint_quotes_the_text_written(write, written, read):
    text = f"metadata:\n  version: {written}\n  description: d\nfalsification_tests: []\n"
    [hit] = [f for f in validate_files([write(text)]).findings if f.rule == "PV011"]
    assert f"read as the number {read}:" in hit.message
    assert hit.message.endswith(f'quote it, e.g. version: "{written}"')
