"""pv graph, pv coverage and pv scaffold: the depends_on graph, what is left uncovered, test skeletons."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pv.cli import run
from pv.contract.coverage import coverage, marked_tests
from pv.contract.graph import build, load_set, to_dot, to_mermaid


def _contract(folder: Path, stem: str, deps: list[str], cid: str | None = None) -> Path:
    meta = {"version": "1", "description": "d", "depends_on": deps}
    if cid:
        meta["id"] = cid
    path = folder / f"{stem}.yaml"
    path.write_text(json.dumps({"metadata": meta, "falsification_tests": [
        {"id": f"F-{stem}", "rule": "r", "prediction": "p", "test": "t", "if_fails": "f"}]}),
        encoding="utf-8")
    return path


def test_graph_edges_missing_nodes_and_cycles(tmp_path):
    _contract(tmp_path, "a", ["b (the base)", "ghost"])
    _contract(tmp_path, "b", ["c"], cid="B-ID")
    _contract(tmp_path, "c", ["B-ID"])
    _contract(tmp_path, "d", ["d"])
    docs, skipped = load_set(sorted(tmp_path.glob("*.yaml")))
    graph = build(docs, skipped)
    assert set(graph.edges) == {("a", "B-ID"), ("a", "ghost"), ("B-ID", "c"), ("c", "B-ID"),
                                ("d", "d")}
    assert graph.missing == ("ghost",)
    assert graph.cycles == (("B-ID", "c"), ("d",))
    dot = to_dot(graph)
    assert '"B-ID" [color=red, penwidth=2];' in dot and '"ghost" [style=dashed' in dot
    mermaid = to_mermaid(graph)
    assert mermaid.startswith("graph LR") and "class " in mermaid and ":::missing" in mermaid


def test_graph_of_a_long_chain_needs_no_recursion(tmp_path):
    for i in range(3000):
        _contract(tmp_path, f"c{i:04d}", [f"c{i + 1:04d}"] if i < 2999 else ["c0000"])
    docs, _ = load_set(sorted(tmp_path.glob("*.yaml")))
    [cycle] = build(docs).cycles
    assert len(cycle) == 3000


def test_graph_command_exit_codes(tmp_path, capsys):
    _contract(tmp_path, "a", ["b"])
    _contract(tmp_path, "b", [])
    assert run(["graph", str(tmp_path)]) == 0
    assert '"a" -> "b";' in capsys.readouterr().out
    _contract(tmp_path, "b", ["a"])
    assert run(["graph", "--format", "text", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "a [cycle] -> b" in captured.out and "dependency cycle: a -> b -> a" in captured.err


CONTRACT = textwrap.dedent("""\
    metadata: {id: demo, version: "1", description: d}
    proof_obligations:
      - {id: OB-1, type: invariant, property: finite}
      - {id: OB-2, type: bound, property: bounded}
      - {type: invariant, property: no id}
    falsification_tests:
      - id: F-1
        rule: r
        prediction: "outputs are finite"
        test: "falsifiers/test_demo.py::test_one"
        if_fails: f
        algorithm_evidence: {invariants_enforced: [OB-1]}
      - id: F-2
        rule: r
        prediction: "outputs stay below 1"
        test: "falsifiers/test_demo.py::test_two"
        if_fails: "the bound is wrong"
      - {id: F-3, rule: r, prediction: "p3", if_fails: f}
    """)
TESTS = textwrap.dedent("""\
    import pytest

    @pytest.mark.falsifies("F-1")
    def test_one(): ...

    def test_two(): ...

    class TestMore:
        @pytest.mark.falsifies("F-9")
        def test_orphan(self): ...

        @pytest.mark.falsifies("F-2")
        def test_unnamed(self): ...
    """)


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "falsifiers").mkdir()
    (tmp_path / "contracts" / "demo.yaml").write_text(CONTRACT, encoding="utf-8")
    (tmp_path / "falsifiers" / "test_demo.py").write_text(TESTS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_coverage_finds_each_kind_of_gap(project):
    docs, _ = load_set([project / "contracts" / "demo.yaml"])
    result = coverage(docs, marked_tests([project / "falsifiers"], project))
    [c] = result.contracts
    assert c.unenforced == ("OB-2", "proof_obligations[2] (no id, so no falsifier can cite it)")
    assert dict(c.untested).keys() == {"F-2", "F-3"}
    assert "carries a falsifies marker" in dict(c.untested)["F-2"]
    assert dict(c.untested)["F-3"] == "names no test"
    assert c.bound["F-1"] == ("falsifiers/test_demo.py::test_one",)
    orphans = {t.node_id: why for t, why in result.orphans}
    assert "no contract defines" in orphans["falsifiers/test_demo.py::TestMore::test_orphan"]
    assert "does not name it" in orphans["falsifiers/test_demo.py::TestMore::test_unnamed"]
    assert not result.complete


def test_coverage_command(project, capsys):
    assert run(["coverage"]) == 1
    out = capsys.readouterr().out
    assert "demo: 1/3 obligations enforced, 1/3 falsifiers with a bound test" in out
    assert out.strip().endswith("coverage incomplete; 1 orphan marker(s), an error")
    assert run(["coverage", "--strict", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is False and len(data["tests_without_falsifier"]) == 2


def test_scaffold_writes_failing_skeletons_once(project, capsys):
    assert run(["scaffold", "demo", "-o", "falsifiers/test_new.py"]) == 0
    out = capsys.readouterr().out
    assert 'F-2: test: "falsifiers/test_new.py::test_f_2"' in out
    assert 'F-3: test: "falsifiers/test_new.py::test_f_3"' in out and "F-1" not in out
    text = (project / "falsifiers" / "test_new.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert names == ["test_f_2", "test_f_3"]
    assert ast.get_docstring(tree.body[-2]).startswith("outputs stay below 1")  # type: ignore[arg-type]
    assert "If this fails: the bound is wrong" in text
    # The skeletons fail until written.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(project / "falsifiers" / "test_new.py")],
                          capture_output=True, text=True, cwd=project, check=False)
    assert "2 failed" in done.stdout, done.stdout[-800:]
    # Run again: nothing new to write, nothing duplicated.
    assert run(["scaffold", "demo", "-o", "falsifiers/test_new.py"]) == 0
    assert (project / "falsifiers" / "test_new.py").read_text(encoding="utf-8") == text


def test_scaffold_unknown_contract_is_a_usage_error(project, capsys):
    assert run(["scaffold", "nope"]) == 2
    assert "no such contract" in capsys.readouterr().err


def test_scaffold_writes_valid_python_whatever_the_text(tmp_path):
    from pv.contract.load import load_document
    from pv.contract.scaffold import scaffold

    contract = tmp_path / "odd.yaml"
    contract.write_text(
        'metadata: {version: "1", description: d}\nfalsification_tests:\n'
        '  - id: "F-\\"q\\"-1"\n    rule: "a \\\\ b"\n'
        '    prediction: "nul \\0 accent \\u00e9 quotes \\"\\"\\" tab \\t end\\\\"\n'
        "    if_fails: f\n", encoding="utf-8")
    target = tmp_path / "test_odd.py"
    [skeleton] = scaffold(load_document(contract), target, [])
    tree = ast.parse(target.read_text(encoding="utf-8"))
    fn = tree.body[-1]
    assert isinstance(fn, ast.FunctionDef) and fn.name == skeleton.function
    doc = ast.get_docstring(fn) or ""
    assert doc.startswith("nul \\x00 accent é quotes \"\"\" tab")
    marker = fn.decorator_list[0]
    assert isinstance(marker, ast.Call) and ast.literal_eval(marker.args[0]) == 'F-"q"-1'
