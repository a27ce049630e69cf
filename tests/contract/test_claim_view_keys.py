"""A baseline snapshot's claims are anyone's writing: a refusal names a bad key on one line."""

from __future__ import annotations

import pytest

from pv.contract.claims import view_problem


@pytest.mark.parametrize("name", ["\r\n", "FALSIFY-X-001\n", " ", "", "a\tb", "\x1b[2J"])
def test_an_unprintable_key_is_quoted_in_a_one_line_refusal(name: str) -> None:
    problem = view_problem({"falsifiers": {name: "not an object"}})
    assert problem is not None and problem == f"falsifiers.{name!r} is not an object"
    assert problem.isprintable()
    nested = view_problem({"falsifiers": {name: {"tolerance": {}}}})
    assert nested == f"falsifiers.{name!r}.tolerance is not a number or text"
    plain = view_problem({"falsifiers": {"F-1": {"tolerance": {}}}})
    assert plain == "falsifiers.F-1.tolerance is not a number or text"
