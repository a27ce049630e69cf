"""Which falsifier ids a pytest item is bound to, and what is bound to nothing.

``binding_for`` is a pure function of an item's markers, so the plugin, the
runner and the tests ask the same question the same way. An id is written
exactly as in the contract (``FALSIFY-ATTN-SUB-004``); a marker may name
several, and a test may carry several markers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pv.errors import PvError

MARKER = "falsifies"
#: Skip reasons starting with this mean "this machine lacks a fixture" (GPU, model file).
FIXTURE_ABSENT_PREFIX = "fixture absent: "


class BindingError(PvError):
    """A ``falsifies`` marker that names no usable id."""


def binding_for(item: Any) -> tuple[str, ...]:
    """Falsifier ids named by ``item``'s ``falsifies`` markers, in order, without repeats."""
    ids: list[str] = []
    for mark in item.iter_markers(name=MARKER):
        if not mark.args:
            raise BindingError(f"{item.nodeid}: @pytest.mark.{MARKER}() needs at least one falsifier id")
        for arg in mark.args:
            if not isinstance(arg, str) or not arg.strip():
                raise BindingError(f"{item.nodeid}: falsifier ids are non-empty strings, got {arg!r}")
            fid = arg.strip()
            if fid not in ids:
                ids.append(fid)
    return tuple(ids)


@dataclass(frozen=True)
class BindingReport:
    """The binding problems of one collection: both kinds are errors for ``pv falsify``."""

    #: id -> test node ids naming it, for ids that no contract defines.
    orphans: Mapping[str, tuple[str, ...]]
    #: Falsifier ids of the selected contract that no collected test names.
    unbound: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.unbound

    def messages(self) -> list[str]:
        out = [f"orphan marker: {fid} is in no contract (named by {', '.join(nodes)})"
               for fid, nodes in sorted(self.orphans.items())]
        out += [f"unbound falsifier: {fid} has no test marked @pytest.mark.{MARKER}({fid!r})"
                for fid in self.unbound]
        return out


def check(bound: Mapping[str, Sequence[str]], known_ids: Iterable[str],
          selected_ids: Iterable[str] = ()) -> BindingReport:
    """Orphans among ``bound`` (id -> node ids) and unbound ids among ``selected_ids``."""
    known = set(known_ids)
    orphans = {fid: tuple(nodes) for fid, nodes in bound.items() if fid not in known}
    unbound = tuple(fid for fid in selected_ids if fid not in bound)
    return BindingReport(orphans, unbound)
