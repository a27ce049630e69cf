"""The ``depends_on`` graph of a set of contracts, with its cycles (``pv graph``).

Nodes are contracts (by id); an edge A -> B means A's ``metadata.depends_on``
names B, by contract id or file stem (a note in parentheses after the name is
ignored). A name that matches no contract of the set becomes a ``missing`` node.
Cycles are the strongly connected components with more than one node, or a
contract that depends on itself: a dependency cycle means no contract in it can
be established first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv.contract.discover import find_contracts
from pv.contract.findings import ERROR, Finding
from pv.contract.load import ContractLoadError, Document, load_document
from pv.contract.references import bare
from pv.contract.registry import is_binding_registry
from pv.repo import repo_root

if TYPE_CHECKING:
    from pv.contract.model import Contract, Located

CYCLE_RULE = "PV035"


@dataclass(frozen=True)
class Graph:
    nodes: tuple[str, ...]  # contract ids, in file order
    edges: tuple[tuple[str, str], ...]  # (dependent, dependency)
    missing: tuple[str, ...] = ()  # dependency names no contract matches
    cycles: tuple[tuple[str, ...], ...] = ()
    skipped: tuple[str, ...] = field(default=())  # files that could not be read as contracts

    @property
    def in_cycle(self) -> frozenset[str]:
        return frozenset(n for cycle in self.cycles for n in cycle)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "edges": [list(e) for e in self.edges], "missing": list(self.missing),
                "cycles": [list(c) for c in self.cycles], "skipped": list(self.skipped)}


def graph_of(paths: Iterable[str | os.PathLike[str]] = (), root: Path | None = None) -> Graph:
    """``pv graph``: the depends_on graph of the contracts under ``paths`` (default
    ``<repo>/contracts``); files that cannot be read as contracts are listed in ``skipped``."""
    docs, skipped = load_set(find_contracts(list(paths) or [(root or repo_root()) / "contracts"]))
    return build(docs, skipped)


def load_set(paths: Iterable[Path]) -> tuple[list[Document], list[str]]:
    """The readable contracts among ``paths`` (binding registries left out), and the rest."""
    docs: list[Document] = []
    skipped: list[str] = []
    for path in paths:
        try:
            doc = load_document(path)
        except ContractLoadError as exc:
            skipped.append(exc.finding.format())
            continue
        if not is_binding_registry(doc):
            docs.append(doc)
    return docs, skipped


def resolver(named: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Name -> contract id, from (contract id, file stem) pairs: a dependency may be written
    as either; an id wins over another file's stem."""
    named = list(named)
    by_name: dict[str, str] = {}
    for cid, stem in named:
        by_name.setdefault(stem, cid)
    for cid, _ in named:
        by_name[cid] = cid
    return by_name


def build(docs: Iterable[Document], skipped: Iterable[str] = ()) -> Graph:
    docs = list(docs)
    by_name = resolver((doc.contract_id, doc.stem) for doc in docs)
    nodes = list(dict.fromkeys(doc.contract_id for doc in docs))
    edges: dict[tuple[str, str], None] = {}
    missing: dict[str, None] = {}
    for doc in docs:
        meta = doc.data.get("metadata")
        deps = meta.get("depends_on") if isinstance(meta, dict) else None
        for dep in deps if isinstance(deps, list) else []:
            if not isinstance(dep, str) or not bare(dep):
                continue
            name = bare(dep)
            target = by_name.get(name)
            if target is None:
                missing[name] = None
                target = name
            edges[(doc.contract_id, target)] = None
    return Graph(tuple(nodes), tuple(edges), tuple(missing), cycles(nodes, list(edges)),
                 tuple(skipped))


def cycle_through(start: str, members: Iterable[str],
                  edges: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """A shortest cycle from ``start`` back to it inside one cycle component (``cycles``),
    as the path ``(start, ..., start)``; ``()`` when there is none."""
    inside = set(members)
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        if a in inside and b in inside:
            succ.setdefault(a, []).append(b)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for child in succ.get(node, []):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return (start, *reversed(path[:-1]), start) if node != start else (start, start)
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return ()


def cycles(nodes: list[str], edges: list[tuple[str, str]]) -> tuple[tuple[str, ...], ...]:
    """Strongly connected components that form a cycle (Tarjan, iterative: no recursion limit)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[tuple[str, ...]] = []
    counter = 0
    for start in succ:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in succ[node]:
                    found.append(tuple(sorted(component)))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return tuple(sorted(found))


def cycle_findings(summaries: Iterable[Contract]) -> Iterator[Finding]:
    """PV035 for ``pv validate``: one finding per cycle, at the ``depends_on`` entry of its
    first contract (in file order) that leads into the cycle, naming the whole cycle."""
    summaries = list(summaries)
    by_name = resolver((s.id, s.stem) for s in summaries)
    entry: dict[tuple[str, str], tuple[str, Located]] = {}  # edge -> (file, where it is written)
    for summary in summaries:
        for raw, located in summary.depends_on:
            target = by_name.get(bare(raw))
            if target is not None:
                entry.setdefault((summary.id, target), (summary.file, located))
    nodes = list(dict.fromkeys(s.id for s in summaries))
    for component in cycles(nodes, list(entry)):
        start = next(n for n in nodes if n in component)
        cycle = cycle_through(start, component, entry)
        file, (key, line, col) = entry[(cycle[0], cycle[1])]
        others = [n for n in component if n not in cycle]
        also = f"; {', '.join(map(_flat, others))} {'is' if len(others) == 1 else 'are'} in " \
            "the same cycle" if others else ""
        shown = " -> ".join(map(_flat, cycle))
        why = ("the contract depends on itself, so it can never be established; remove this entry"
               if len(cycle) == 2 else f"no contract in it can be established first{also}; "
               "remove one of the depends_on entries that close it")
        yield Finding(file, line, col, key, CYCLE_RULE, f"depends_on cycle {shown}: {why}", ERROR)


def _flat(name: str) -> str:
    """One printable line: ids come from contracts and may hold anything."""
    return "".join(c if c.isprintable() else " " for c in name)


def _dot_id(name: str) -> str:
    return '"' + _flat(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    lines = ["digraph contracts {", "  rankdir=LR;", "  node [shape=box];"]
    cyc = graph.in_cycle
    for node in graph.nodes:
        style = ' [color=red, penwidth=2]' if node in cyc else ""
        lines.append(f"  {_dot_id(node)}{style};")
    for name in graph.missing:
        lines.append(f"  {_dot_id(name)} [style=dashed, label={_dot_id(name + ' (missing)')}];")
    for a, b in graph.edges:
        style = " [color=red]" if a in cyc and b in cyc else ""
        lines.append(f"  {_dot_id(a)} -> {_dot_id(b)}{style};")
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(graph: Graph) -> str:
    ids = {name: f"n{i}" for i, name in enumerate([*graph.nodes, *graph.missing])}

    def label(name: str) -> str:
        return _flat(name).replace('"', "#quot;")

    lines = ["graph LR"]
    for name in graph.nodes:
        lines.append(f'  {ids[name]}["{label(name)}"]')
    for name in graph.missing:
        lines.append(f'  {ids[name]}["{label(name)} (missing)"]:::missing')
    for a, b in graph.edges:
        lines.append(f"  {ids[a]} --> {ids[b]}")
    if graph.cycles:
        lines.append("  classDef cycle stroke:#d00,stroke-width:3px")
        lines.append(f"  class {','.join(ids[n] for n in sorted(graph.in_cycle))} cycle")
    if graph.missing:
        lines.append("  classDef missing stroke-dasharray: 5 5")
    return "\n".join(lines)


def to_text(graph: Graph) -> str:
    deps: dict[str, list[str]] = {}
    for a, b in graph.edges:
        deps.setdefault(a, []).append(_flat(b) + (" (missing)" if b in graph.missing else ""))
    lines = [f"{_flat(n)}{' [cycle]' if n in graph.in_cycle else ''} -> "
             f"{', '.join(deps.get(n, [])) or '-'}" for n in graph.nodes]
    return "\n".join(lines)


def default_paths(root: Path | None) -> list[Path]:
    return [root / "contracts"] if root is not None else [Path("contracts")]
