"""``pv falsify``: only a failed prediction refutes; a broken test or file is reported as itself."""

from __future__ import annotations

import pytest
import yaml
from demo_project import DemoProject

from pv.cli import run
from pv.falsify.store import read_record

pytestmark = pytest.mark.slow

#: More behaviours for the demo's ``act`` and a fixture that can break in setup or teardown.
EXTRA_BEHAVIOURS = '''    elif what == "type-error":
        record.observe("not a tensor")  # misusing the fixture: a broken test
    elif what == "np-fail":
        np.testing.assert_allclose(np.zeros(3), np.ones(3))  # an AssertionError subclass's home
    elif what == "pytest-fail":
        pytest.fail("refuted by hand")
    elif what == "skip":'''

TROUBLE_FIXTURE = '''

@pytest.fixture
def trouble():
    if BEHAVIOUR.get("setup") == "raise":
        raise RuntimeError("fixture broke in setup")
    if BEHAVIOUR.get("setup") == "assert":
        assert False, "an assertion in a fixture is no prediction"
    yield
    if BEHAVIOUR.get("teardown") == "raise":
        raise OSError("fixture broke in teardown")
'''


def broken_demo(demo: DemoProject) -> DemoProject:
    text = demo.tests.read_text().replace('    elif what == "skip":', EXTRA_BEHAVIOURS)
    text = text.replace("def test_one(falsifier_record):", "def test_one(falsifier_record, trouble):")
    demo.tests.write_text(text + TROUBLE_FIXTURE)
    demo.commit("behaviours that break")
    return demo


def statuses(demo: DemoProject) -> dict[str, str | None]:
    data = yaml.safe_load(demo.contract.read_text())
    return {f["id"]: f.get("status") for f in data["falsification_tests"]}


def latest(demo: DemoProject, fid: str):
    return max((read_record(p) for p in demo.records(fid)), key=lambda r: r.finished_at)


def test_an_exception_that_is_no_failed_prediction_is_an_error(demo, capsys) -> None:
    broken_demo(demo)
    assert run(demo.args()) == 0
    assert statuses(demo)["FALSIFY-DEMO-003"] == "FUNCTIONAL"
    capsys.readouterr()
    demo.behave(three="type-error")
    assert run(demo.args()) == 1  # a broken falsifier is no success either
    out = capsys.readouterr().out
    # The status stays where it was, and the table says why.
    assert statuses(demo)["FALSIFY-DEMO-003"] == "FUNCTIONAL"
    assert "FALSIFY-DEMO-003  error " in out
    assert ("FALSIFY-DEMO-003: status not moved: falsifiers/test_demo.py::test_three errored: "
            "TypeError: cannot measure facts from a str") in out
    assert "1 errored" in out
    rec = latest(demo, "FALSIFY-DEMO-003")
    assert rec.outcome == "error" and rec.tests[0].outcome == "error"
    assert rec.reason.startswith("TypeError: cannot measure facts from a str")
    assert rec.promotion["old"] == rec.promotion["new"] == "FUNCTIONAL"
    assert rec.promotion["why"].startswith("falsifiers/test_demo.py::test_three errored: TypeError")
    # The next pass still stands on the earlier live record: an error voided nothing.
    demo.behave()
    assert run(demo.args()) == 0
    assert statuses(demo)["FALSIFY-DEMO-003"] == "FUNCTIONAL"


@pytest.mark.parametrize(("behaviour", "reason"), [
    ({"setup": "raise"}, "RuntimeError: fixture broke in setup"),
    ({"setup": "assert"}, "AssertionError: an assertion in a fixture is no prediction"),
    ({"teardown": "raise"}, "OSError: fixture broke in teardown"),
])
def test_setup_and_teardown_exceptions_are_errors(demo, capsys, behaviour, reason) -> None:
    broken_demo(demo)
    demo.behave(**behaviour)
    assert run(demo.args()) == 1
    assert statuses(demo)["FALSIFY-DEMO-001"] == "PROPOSED"
    rec = latest(demo, "FALSIFY-DEMO-001")
    assert rec.outcome == "error" and rec.reason == reason
    assert "FALSIFY-DEMO-001  error " in capsys.readouterr().out


@pytest.mark.parametrize(("behaviour", "reason"), [
    ("fail", "AssertionError: three refuted"),
    ("np-fail", "AssertionError: "),
    ("pytest-fail", "Failed: refuted by hand"),
])
def test_assertions_and_pytest_fail_refute(demo, capsys, behaviour, reason) -> None:
    broken_demo(demo)
    demo.behave(three=behaviour)
    assert run(demo.args()) == 1
    assert statuses(demo)["FALSIFY-DEMO-003"] == "FALSIFIED"
    rec = latest(demo, "FALSIFY-DEMO-003")
    assert rec.outcome == "failed" and rec.reason.startswith(reason)


def test_a_failure_outweighs_a_teardown_error_and_errors_show_under_xdist(demo, capsys) -> None:
    broken_demo(demo)
    demo.behave(one="fail", teardown="raise", three="type-error")
    assert run(demo.args("--format", "json", "--", "-n", "2")) == 1
    import json

    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["falsifiers"]}
    assert rows["FALSIFY-DEMO-001"]["outcome"] == "failed"  # the prediction failed; teardown broke after
    assert rows["FALSIFY-DEMO-003"]["outcome"] == "error"
    assert rows["FALSIFY-DEMO-003"]["new"] == "PROPOSED"
    assert rows["FALSIFY-DEMO-003"]["why"].startswith("falsifiers/test_demo.py::test_three errored: TypeError")


# --------------------------------------------------------------------------- collection errors


@pytest.mark.parametrize("xdist", [(), ("--", "-n", "2")])
def test_an_import_error_is_reported_as_itself(demo, capsys, xdist) -> None:
    demo.tests.write_text("import foo_nope_missing\n" + demo.tests.read_text())
    before = demo.contract.read_bytes()
    assert run(demo.args(*xdist)) == 2
    err = capsys.readouterr().err
    assert err == ("pv: error: falsifiers/test_demo.py cannot be collected: "
                   "ModuleNotFoundError: No module named 'foo_nope_missing'\n")
    assert demo.records() == [] and demo.contract.read_bytes() == before


def test_a_syntax_error_in_another_file_is_named(demo, capsys) -> None:
    demo.add_test("import pytest\n\n\ndef test_broken(:\n    pass\n", name="test_broken.py")
    assert run(demo.args()) == 2
    err = capsys.readouterr().err
    assert err == ("pv: error: falsifiers/test_broken.py cannot be collected: "
                   "SyntaxError: invalid syntax (line 4)\n")
    assert demo.records() == []


def test_error_line_picks_pytests_own_line() -> None:
    from pv.falsify.plugin import error_line

    assert error_line("Traceback:\nx.py:1: in <module>\n    import foo\n"
                      "E   ModuleNotFoundError: No module named 'foo'") == \
        "ModuleNotFoundError: No module named 'foo'"
    assert error_line("E   pkg.errors.ConfigError: bad") == "pkg.errors.ConfigError: bad"
    assert error_line("E   something odd\nE   more") == "something odd"
    assert error_line("\nUsing pytest.skip outside of a test will skip the entire module.") == \
        "Using pytest.skip outside of a test will skip the entire module."


def test_a_missing_fixture_and_an_expected_failure_that_raises_otherwise_are_errors(demo, capsys) -> None:
    text = demo.tests.read_text().replace("def test_three(falsifier_record):",
                                          "def test_three(falsifier_record, no_such_fixture):")
    text = text.replace("def test_one(falsifier_record):",
                        "@pytest.mark.xfail(reason='known')\ndef test_one(falsifier_record):\n"
                        "    raise KeyError('k')\n\n\ndef _unused(falsifier_record):")
    demo.tests.write_text(text)
    demo.commit("a missing fixture and an xfail that raises a KeyError")
    assert run(demo.args()) == 1
    assert latest(demo, "FALSIFY-DEMO-003").reason == "fixture 'no_such_fixture' not found"
    assert latest(demo, "FALSIFY-DEMO-001").outcome == "error"
    assert latest(demo, "FALSIFY-DEMO-001").reason == "KeyError: 'k'"
    assert statuses(demo)["FALSIFY-DEMO-001"] == statuses(demo)["FALSIFY-DEMO-003"] == "PROPOSED"
