"""Nesting depth, fuzzed: within the YAML loader's bound a contract loads, past it it is PV009.

The harness in ``test_readers`` accepts any one-line refusal, so a file refused
for the wrong reason passes there; this pins the reason. Depth, the kind of
collection and how deep the caller's own stack already is are drawn: the
builder once recursed, so its cut-off moved with the caller's stack and a
file 328 to 511 levels deep came back as PV004 "nested too deeply".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from pv.contract.load import ContractLoadError, load_document
from pv.safeyaml import MAX_DEPTH

from .harness import scratch
from .profiles import fuzz_settings

HEAD = "metadata:\n  version: '1'\n  description: d\n"
#: Open and close of one flow level, and the innermost value.
FLOW = {"list": ("[", "]", ""), "map": ("{a: ", "}", "1"), "mixed": ("[{a: ", "}]", "1")}


def _levels(kind: str, n: int) -> int:
    return 2 * n if kind == "mixed" else n


def _at_stack_depth(frames: int, call: Any) -> Any:
    return call() if frames == 0 else _at_stack_depth(frames - 1, call)


#: Levels drawn: anywhere, and most often near the bound, where the old cut-off lay.
LEVELS = st.integers(1, 600) | st.integers(300, 520) | st.integers(250, 260)


@fuzz_settings()
@given(kind=st.sampled_from(sorted(FLOW)), n=LEVELS, frames=st.integers(0, 700))
@example(kind="list", n=MAX_DEPTH - 1, frames=0)
@example(kind="list", n=330, frames=600)
@example(kind="mixed", n=255, frames=300)
@example(kind="list", n=MAX_DEPTH, frames=0)
def test_depth_within_the_bound_loads_and_past_it_is_pv009(kind: str, n: int, frames: int) -> None:
    open_, close, inner = FLOW[kind]
    depth = 1 + _levels(kind, n)  # the root mapping is a level
    with scratch("nesting") as tmp:
        path = Path(tmp) / "deep.yaml"
        path.write_text(HEAD + "x: " + open_ * n + inner + close * n + "\n", encoding="utf-8")
        try:
            doc = _at_stack_depth(frames, lambda: load_document(path))
        except ContractLoadError as exc:
            assert depth > MAX_DEPTH, f"depth {depth} refused: {exc.finding.format()}"
            assert exc.finding.rule == "PV009", exc.finding.format()
            return
    assert depth <= MAX_DEPTH, f"depth {depth} loaded past the bound of {MAX_DEPTH}"
    assert "x" in doc.data
