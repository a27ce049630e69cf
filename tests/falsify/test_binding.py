"""``binding_for`` on real pytest items, and the orphan/unbound check."""

from __future__ import annotations

import pytest

from pv.falsify.binding import BindingError, binding_for, check


class FakeMark:
    def __init__(self, *args: object) -> None:
        self.args = args


class FakeItem:
    nodeid = "t.py::test_x"

    def __init__(self, *marks: FakeMark) -> None:
        self.marks = marks

    def iter_markers(self, name: str):
        return iter(self.marks) if name == "falsifies" else iter(())


def test_ids_in_order_without_repeats() -> None:
    item = FakeItem(FakeMark("A-1", " B-2 "), FakeMark("A-1"), FakeMark("C-3"))
    assert binding_for(item) == ("A-1", "B-2", "C-3")
    assert binding_for(FakeItem()) == ()


@pytest.mark.parametrize("args", [(), ("",), (3,), ("ok", None)])
def test_bad_markers(args) -> None:
    with pytest.raises(BindingError):
        binding_for(FakeItem(FakeMark(*args)))


def test_check_reports_orphans_and_unbound() -> None:
    report = check({"A": ["t::a"], "Z": ["t::z1", "t::z2"]}, known_ids={"A", "B"}, selected_ids=["A", "B"])
    assert not report.ok
    assert report.orphans == {"Z": ("t::z1", "t::z2")}
    assert report.unbound == ("B",)
    assert report.messages() == [
        "orphan marker: Z is in no contract (named by t::z1, t::z2)",
        "unbound falsifier: B has no test marked @pytest.mark.falsifies('B')",
    ]
    assert check({"A": ["t::a"]}, {"A", "B"}, ["A"]).ok


pytest_plugins = ["pytester"]


def test_binding_for_real_items(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.falsifies("MOD-1")

        @pytest.mark.falsifies("F-1", "F-2")
        def test_a():
            pass

        class TestC:
            @pytest.mark.falsifies("F-3")
            def test_b(self):
                pass
    """)
    items, _ = pytester.inline_genitems()
    assert {i.name: binding_for(i) for i in items} == {
        "test_a": ("F-1", "F-2", "MOD-1"), "test_b": ("F-3", "MOD-1")}


def test_plain_pytest_run_with_the_plugin(pytester: pytest.Pytester) -> None:
    """Without pv options the plugin only provides the marker and the fixture."""
    pytester.makepyfile("""
        import pytest

        @pytest.mark.falsifies("F-1")
        def test_a(falsifier_record):
            falsifier_record.fact("device", "cpu")
            falsifier_record.metric("nan", float("nan"))
            assert falsifier_record.metrics == {"nan": None}
            with pytest.raises(TypeError, match="JSON"):
                falsifier_record.fact("bad", object())
            with pytest.raises(ValueError):
                falsifier_record.weights("fake")
    """)
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)


def test_malformed_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.falsifies()
        def test_a():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs at least one falsifier id*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
