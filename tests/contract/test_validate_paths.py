"""validate_paths: discovery, set-level rules, strictness, the process pool, the real corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pv.contract import ladder
from pv.contract import validate as validate_mod
from pv.contract.discover import find_contracts, repo_root
from pv.contract.validate import Report, validate_files, validate_paths
from pv.errors import PvError

REPO = Path(__file__).resolve().parents[2]
#: Real-world contracts kept beside the checkout (read-only); tests skip without them.
CORPUS = REPO.parent / "shared" / "corpus" / "contracts-in-the-wild"


def _contract(fid: str, cid: str | None = None) -> str:
    meta = {"version": "1", "description": "d"}
    if cid:
        meta["id"] = cid
    return yaml.safe_dump({"metadata": meta, "falsification_tests": [
        {"id": fid, "rule": "r", "prediction": "p", "test": "t", "if_fails": "f"}]})


def test_discovery_recurses_and_skips_hidden(tmp_path, write):
    write(_contract("A"), "a.yaml")
    write(_contract("B"), "b.yml", tmp_path / "sub")
    write(_contract("C"), "c.yaml", tmp_path / ".hidden")
    write("not yaml", "notes.txt")
    found = find_contracts([tmp_path])
    assert [p.name for p in found] == ["a.yaml", "b.yml"]
    # The same file named twice is validated once.
    assert len(find_contracts([tmp_path, tmp_path / "a.yaml"])) == 2


def test_usage_errors(tmp_path):
    with pytest.raises(PvError, match="no such file or directory"):
        validate_paths([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PvError, match="no contract files"):
        validate_paths([tmp_path / "empty"])


def test_duplicate_falsifier_ids_across_files(tmp_path, write):
    first = write(_contract("F-1"), "a-v1.yaml")
    second = write(_contract("F-1"), "b-v1.yaml")
    report = validate_paths([tmp_path], check_evidence=False)
    dups = [f for f in report.findings if f.rule == "PV015"]
    assert len(dups) == 1 and dups[0].file == str(second) and str(first) in dups[0].message
    assert dups[0].path == ("falsification_tests", 0, "id")
    line = second.read_text(encoding="utf-8").splitlines()[dups[0].line - 1]
    assert line[dups[0].column - 1:].startswith("id: F-1")
    # Unique within a contract is enough for the format; --strict refuses the ambiguity.
    assert dups[0].severity == "warning" and report.ok
    assert not validate_paths([tmp_path], check_evidence=False, strict=True).ok


def test_duplicate_contract_ids(tmp_path, write):
    write(_contract("F-1", "same"), "a-v1.yaml")
    write(_contract("F-2", "same"), "b-v1.yaml")
    report = validate_paths([tmp_path], check_evidence=False)
    assert [(f.rule, f.path) for f in report.findings] == [("PV024", ("metadata", "id"))]


def test_strict_turns_warnings_into_errors(write):
    path = write("metadata: {version: 1.0, description: d}\nfalsification_tests:\n"
                 "- {id: F-1, rule: r, prediction: p, test: t, if_fails: f}\n")
    loose = validate_files([path], check_evidence=False)
    strict = validate_files([path], strict=True, check_evidence=False)
    assert loose.ok and loose.warnings == 1 and loose.errors == 0
    assert not strict.ok and strict.errors == 1 and strict.findings[0].severity == "error"
    assert "(strict)" in strict.summary()


def test_bad_files_do_not_stop_the_others(tmp_path, write):
    write("- a list\n", "a.yaml")
    write(b"\x00\x01", "b.yaml")
    write(_contract("OK-1"), "c.yaml")
    report = validate_paths([tmp_path], check_evidence=False)
    assert report.files == 3
    assert [f.rule for f in report.findings] == ["PV006", "PV003"]
    assert [c.id for c in report.contracts] == ["c"]


def test_pool_gives_the_same_report_as_one_process(tmp_path, write, monkeypatch):
    for i in range(12):
        write(_contract(f"F-{i % 5}"), f"c{i:02d}.yaml")
    write("metadata: [oops]\n", "zz.yaml")
    serial = validate_paths([tmp_path], check_evidence=False, jobs=1)
    monkeypatch.setattr(validate_mod, "PARALLEL_MIN_FILES", 4)
    parallel = validate_paths([tmp_path], check_evidence=False, jobs=2)
    assert parallel == serial and parallel.errors == 1 and parallel.warnings == 8  # 7 repeated ids (PV015) + 1


def test_json_report_shape(write):
    report = validate_files([write(_contract("F-1"))], check_evidence=False)
    data = report.to_json()
    assert data["ok"] is True and data["files"] == 1 and data["findings"] == []
    assert data["contracts"][0]["falsifiers"] == [{"id": "F-1", "status": None, "rung": "PROPOSED"}]


def test_repo_root_is_the_nearest_git_ancestor(tmp_path):
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")  # a worktree has a .git file
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert repo_root(deep) == tmp_path
    assert repo_root(REPO / "contracts") == REPO


def test_repository_contracts_pass_strict_with_evidence():
    report = validate_paths([REPO / "contracts"], strict=True, check_evidence=True)
    assert report.ok and report.findings == (), [f.format() for f in report.findings]


def test_first_contract_says_what_it_must():
    data = yaml.safe_load((REPO / "contracts" / "trace-attn-sub-stages-v1.yaml").read_text("utf-8"))
    assert (REPO / "contracts" / "trace-attn-sub-stages-v1.yaml").read_text("utf-8").startswith(
        "# yaml-language-server: $schema=../schemas/contract.schema.json\n")
    meta = data["metadata"]
    assert meta["id"] == "trace-attn-sub-stages-v1" and isinstance(meta["version"], str)
    assert meta["depends_on"] == []
    tests = data["falsification_tests"]
    assert [t["id"] for t in tests] == [f"FALSIFY-ATTN-SUB-{i:03d}" for i in range(1, 6)]
    # Statuses move with evidence (pv falsify); they must stay on the ladder.
    assert all(ladder.normalize(t["status"]) is not None for t in tests)
    assert ladder.normalize(meta["status"]) is not None
    live = {"device": "cuda", "weights": "real"}
    assert [t.get("live_requirements") for t in tests] == [None, live, {"weights": "real"}, live, live]
    formulas = " ".join(e["formula"] for e in data["equations"].values())
    assert "sqrt(D)" in formulas and "h // (NH / KVH)" in formulas
    types = {o["type"] for o in data["proof_obligations"]}
    assert {"ordering", "equivalence"} <= types


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_every_corpus_file_gets_a_verdict(path):
    report = validate_files([path])
    assert isinstance(report, Report) and report.files == 1
    for finding in report.findings:
        assert finding.line >= 1 and finding.column >= 1 and "\n" not in finding.message


#: What each real contract's author is told, as (rule, line) pairs: every finding
#: here was read against the file and is one its author would agree with; a file
#: absent from this table gets no finding at all.
CORPUS_FINDINGS: dict[str, list[tuple[str, int]]] = {
    # Kani harnesses cite obligations by id, but the obligations have no ids.
    "activation-kernel-v1.yaml": [("PV030", 239), ("PV030", 245)],
    # Kani harnesses cite obligation ids that do not exist (renumbered obligations).
    "adamw-kernel-v1.yaml": [("PV030", 235), ("PV030", 242), ("PV030", 249)],
    "alibi-kernel-v1.yaml": [("PV015", 109), ("PV015", 114), ("PV015", 119), ("PV015", 124),
                             ("PV015", 129), ("PV030", 136), ("PV030", 143)],
    "rmsnorm-kernel-v1.yaml": [("PV030", 222), ("PV030", 228)],
    "silu-kernel-v1.yaml": [("PV030", 204), ("PV030", 211), ("PV030", 218)],
    "swiglu-kernel-v1.yaml": [("PV020", 11), ("PV030", 255), ("PV030", 262)],
    # Status at the top level, and kind/description set twice with different values.
    "apr-audit-ship-two-v1.yaml": [("PV025", 62), ("PV029", 64), ("PV029", 68)],
    # A free-form contract status with no rung.
    "apr-cli-pull-dataset-v1.yaml": [("PV026", 4)],
    # Contracts claiming more than their falsifiers show.
    "apr-cli-tokenize-import-hf-v1.yaml": [("PV019", 4)],
    "apr-pretrain-arch-polymorphic-v1.yaml": [("PV019", 4)],
    # Another dialect: equations as a list, obligations with 'statement', falsifiers with 'name'.
    "apr-contract-enforcement-v1.yaml": [("PV025", 57), ("PV010", 89), ("PV010", 98),
                                         ("PV010", 101), ("PV010", 104), ("PV010", 107),
                                         ("PV010", 115), ("PV010", 120), ("PV010", 126),
                                         ("PV010", 132)],
    # No falsifiers, version set twice, status at the top level.
    "beat-sklearn-iris-v1.yaml": [("PV027", 1), ("PV029", 13), ("PV025", 14)],
    "decode-hot-path-prefix-cache-diagnostic-v1.yaml": [
        ("PV025", 4), ("PV021", 5), ("PV021", 23), ("PV010", 81), ("PV010", 109), ("PV010", 113),
        ("PV010", 117), ("PV010", 125), ("PV031", 125), ("PV010", 134), ("PV031", 134),
        ("PV010", 144), ("PV031", 144)],
}


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
def test_corpus_findings_are_exactly_the_expected_ones():
    report = validate_paths([CORPUS])
    assert report.files == 20
    got: dict[str, list[tuple[str, int]]] = {}
    for f in report.findings:
        got.setdefault(Path(f.file).name, []).append((f.rule, f.line))
    assert {name: sorted(rows) for name, rows in got.items()} == \
        {name: sorted(rows) for name, rows in CORPUS_FINDINGS.items()}


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
def test_corpus_messages_say_what_to_do():
    report = validate_paths([CORPUS])
    text = "\n".join(f.format() for f in report.findings)
    assert "proof obligations carry no ids (the provable-contracts format has none)" in text
    assert "did you mean 'ALD087-BND-001'?" in text
    assert "it writes 'name', 'expected', 'fails_if', another dialect" in text
    assert "'SHIPPED' has no clear rung on the ladder" in text
    assert "'version' is set twice with different values: top-level 1 and metadata.version" in text
    # Kani obligations cited by property text resolve, brackets and all.
    assert "Uncertainty score" not in text


@pytest.mark.parametrize("load, cores, expected", [
    (0.2, 2, 2), (1.0, 2, 2), (1.4, 2, 2), (2.0, 2, 1), (6.5, 2, 1), (3.0, 16, 14), (0.0, 1, 1),
])
def test_default_workers_follow_idle_cores(monkeypatch, load, cores, expected):
    monkeypatch.setattr(validate_mod.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(validate_mod.os, "sched_getaffinity", lambda _pid: set(range(cores)),
                        raising=False)
    assert validate_mod._workers() == expected


def test_validation_note_for_reports(write):
    from pv.contract.validate import validation_note

    good = write(_contract("N-1"), "good.yaml")
    assert validation_note(good) is None
    bad = write("metadata: {version: '1'}\nfalsification_tests: [{id: N-2}]\n", "bad.yaml")
    note = validation_note(bad)
    assert note is not None and note.startswith("fails pv validate: line 1: PV010 ")
    assert note.endswith("(and 1 more)")


def test_validation_note_for_a_shown_path(tmp_path, monkeypatch):
    from pv.contract.validate import validation_note_for

    (tmp_path / ".git").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "bad.yaml").write_text("metadata: {version: '1'}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "contracts")
    note = validation_note_for("contracts/bad.yaml")
    assert note is not None and "missing required key 'description'" in note
    assert validation_note_for(str(tmp_path / "contracts" / "bad.yaml")) == note
    assert validation_note_for("contracts/absent.yaml") is None
