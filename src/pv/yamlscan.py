"""The structure scan of the one YAML loader (``pv.safeyaml``): alias bombs and deep nesting
are refused before anything is composed.

libyaml composes and pv builds data only after this scan, so the bounds here are
what keeps a hostile file from costing more than its size: libyaml's composer
recurses in C (tens of thousands of levels crash the interpreter), and aliases
can describe exponentially large data in a few lines (billion laughs).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Collections nested deeper than this are refused: libyaml's composer recurses in C
#: and a few tens of thousands of levels crash the interpreter. Real files nest ~10.
MAX_DEPTH = 512
#: Alias uses allowed per file. Real files use a handful (merge keys), if any.
MAX_ALIASES = 256
#: Nodes added by expanding every alias: billion-laughs grows exponentially past this.
MAX_EXPANDED_NODES = 200_000
DEPTH, ALIASES, EXPANSION, RECURSIVE = "depth", "aliases", "expansion", "recursive"
#: The scan reads events only (no constructor runs): libyaml's parser.
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Refused(yaml.YAMLError):
    """A structural bound the event scan found exceeded: ``kind`` is one of ``DEPTH``,
    ``ALIASES``, ``EXPANSION``, ``RECURSIVE``; ``problem`` says it in one line."""

    def __init__(self, kind: str, problem: str, mark: Any, anchor: str | None = None) -> None:
        super().__init__(problem)
        self.kind = kind
        self.problem = problem
        self.problem_mark = mark
        self.anchor = anchor


#: An anchor (``&name``) or an alias (``*name``): the indicator and a name character.
#: Either counts only where a node may start (see ``_at_node_start``); ``&mut`` in
#: a Rust formula or ``**bold**`` in prose does not. Without both, no alias bomb and
#: no recursive structure can exist.
_ANCHOR_RE = re.compile(r"&[^\s\[\]{},]")
_ALIAS_RE = re.compile(r"\*[^\s\[\]{},]")
#: Nesting depth is bounded by what the text can express. A block collection nested
#: in another starts at a greater column, which comes from a line's indentation or
#: from a compact indicator that follows another on the same line (``- - x``,
#: ``? - x``); a zero-indented list under a key shares its parent's column, so each
#: column holds at most two levels; flow brackets add one each. Depth is at most
#: brackets + 2 * (indentation + indicator pairs + 1): with brackets under 96,
#: indentation under 64 and pairs under 64 that is under 512 (MAX_DEPTH), so the
#: event scan is skipped. Ordinary files are far below all three.
_SCAN_BOUND = 96
_DEEP_INDENT = "\n" + " " * 64
_PAIR_BOUND = 64
_COMPACT_PAIR = re.compile(r"[-?][ \t]+[-?](?:[ \t]|$)", re.MULTILINE)


def _at_node_start(pattern: re.Pattern[str], text: str) -> bool:
    """Does ``pattern`` match where a YAML node may start: at a line's indentation,
    after ``: ``, ``- ``, ``? ``, or after a flow ``[``, ``{``, ``,``?

    A plain C-speed search finds the candidates; only those are looked at.
    """
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 64):match.start()]
        stripped = before.rstrip(" \t")
        if not stripped or stripped[-1] in "\n[{,":
            return True
        if stripped[-1] in ":-?" and len(stripped) < len(before):
            return True
    return False


def may_be_hostile(text: str) -> bool:
    """Cheap test: could this text hold an alias, or nest past MAX_DEPTH?"""
    if "&" in text and "*" in text and _at_node_start(_ANCHOR_RE, text) \
            and _at_node_start(_ALIAS_RE, text):
        return True
    if text.count("[") + text.count("{") >= _SCAN_BOUND or _DEEP_INDENT in text:
        return True
    for pairs, _ in enumerate(_COMPACT_PAIR.finditer(text), 1):
        if pairs >= _PAIR_BOUND:
            return True
    return False


def check_structure(text: str) -> None:
    """Refuse alias bombs and pathological nesting before anything is composed (``Refused``).

    libyaml's event parser is iterative, so it is safe on any input. Each
    anchored node's expanded size is recorded when it closes and an alias adds
    that size: exponential growth (billion laughs) trips the bound after a few
    dozen events, long before anything is allocated. Only texts that the cheap
    pre-test flags pay for this scan; ordinary files never do. Syntax errors are
    left to the parse that follows, which locates them.
    """
    if not may_be_hostile(text):
        return
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []  # [anchor, size] per open collection
    aliases = expanded = 0
    open_anchors: list[str] = []
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([event.anchor, 1])
                if event.anchor is not None:
                    open_anchors.append(event.anchor)
                if len(stack) > MAX_DEPTH:
                    raise Refused(DEPTH, f"collections nested more than {MAX_DEPTH} deep; refused",
                                  event.start_mark)
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, size = stack.pop()
                if anchor is not None:
                    sizes[anchor] = size
                    open_anchors.remove(anchor)
                if stack:
                    stack[-1][1] += size
                continue
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if event.anchor in open_anchors:
                    # The node would contain itself: every reader that walks it
                    # (the schema, JSON output, a status rewrite) recurses forever.
                    raise Refused(RECURSIVE, f"alias *{event.anchor} refers to a node that contains it "
                                  "(a recursive structure); refused", event.start_mark, event.anchor)
                size = sizes.get(event.anchor or "", 1)
                expanded += size
                if aliases > MAX_ALIASES:
                    raise Refused(ALIASES, f"more than {MAX_ALIASES} YAML aliases; refused (alias bomb guard)",
                                  event.start_mark)
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            if stack:
                stack[-1][1] += size
            if expanded > MAX_EXPANDED_NODES:
                raise Refused(EXPANSION, f"YAML aliases expand past {MAX_EXPANDED_NODES} nodes; refused "
                              "(alias bomb guard)", event.start_mark)
    except Refused:
        raise
    except yaml.YAMLError:
        return


__all__ = ["ALIASES", "DEPTH", "EXPANSION", "MAX_ALIASES", "MAX_DEPTH", "MAX_EXPANDED_NODES", "RECURSIVE",
           "Refused", "check_structure", "may_be_hostile"]
