"""The ``pv import`` mappings for llama.cpp dumps, rendered from the live capture's node tables.

One mapping per node table of :data:`pv.capture.llamacpp.nodes.TABLES`
(``llama.cpp`` for the llama graph, ``llama.cpp-ARCH`` for the others, and
``llama.cpp-mixtral`` for the llama graph's MoE branch), each written from it
so that the node names, the layout conversions and the stages they feed have
one source: the table ``--engine llama.cpp`` reads. The shipped YAML files are
this module's output (``scripts/gen_llamacpp_mappings.py`` rewrites them; a
test checks they are current).

What a dump must hold, since a mapping sees names and arrays only (no op, no
sources, no graph order):

- A node is keyed by its ggml name (``Qcur-3``) or by name and op
  (``Qcur-3:ROPE``). A name-only key means the last node of that name, which
  for ``Qcur``/``Kcur`` is the ROPE output; the Q/K/V projections (MUL_MAT)
  and biases (ADD) are read only from ``:MUL_MAT`` / ``:ADD`` keys.
- The output projection has no name outside the llama graph (ggml calls it
  ``node_N``): the dump keys the MUL_MAT whose second source is ``kqv_out-N``
  as ``attn_out-N``, the llama graph's name for the same node.
- Each array is the node with ggml's dims reversed and trailing size-1 dims
  dropped (``ne = [D, NH, S, 1]`` is ``[S, NH, D]``), from a prefill of one
  sequence (two tokens or more) from an empty KV cache, flash attention off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pv.capture.llamacpp.nodes import LLAMA_MOE, TABLES, Graph, Rule, graph_for
from pv.errors import PvError

#: mapping key (a node table, ``nodes.TABLES``) -> mapping name; the llama graph's mapping
#: keeps the name it always had.
NAMES: dict[str, str] = {**{key: f"llama.cpp-{key}" for key in TABLES}, "llama": "llama.cpp"}
#: Names a name-only key stands for: the last node of that name is this op.
_LAST_OP = {"Qcur": "ROPE", "Kcur": "ROPE"}
#: Older llama.cpp called the embedding rows ``inp_embd``.
_ALIASES = {"embd": "(inp_)?embd"}
#: Stages whose per-head layout is [S, heads, D], with the heads of Q or of K.
_HEADS = {"q_post_rope": "NH", "q_norm": "NH", "k_post_rope": "KVH", "k_norm": "KVH"}


def families(arch: str) -> list[str]:
    """pv model families whose GGUFs llama.cpp runs with this table."""
    from pv.capture.model.arch import FAMILIES

    out = []
    for fam in FAMILIES.values():
        try:
            if graph_for(fam) is TABLES[arch]:
                out.append(fam.name)
        except PvError:
            continue
    return out


def _node_name(rule: Rule) -> str:
    """The dump name of a rule's node: the unnamed output projection is keyed ``attn_out-N``."""
    return "attn_out" if rule.via_src is not None else rule.name


def _match(graph: Graph, rule: Rule) -> str:
    name = _node_name(rule)
    base = _ALIASES.get(name, name)
    layer = r"-(?P<layer>\d+)" if rule.per_layer else ""
    ops = {r.op for r in graph.rules if _node_name(r) == name}
    last = graph.last_ops.get(name, _LAST_OP.get(name))
    bare_ok = (len(ops) == 1 and last in (None, rule.op)) or last == rule.op
    return f"{base}{layer}(:{rule.op})?" if bare_ok else f"{base}{layer}:{rule.op}"


def _transforms(graph: Graph, rule: Rule) -> list[Any]:
    stage, _, part = rule.stage.partition(":")
    if part in ("q", "k") and graph.pairs:
        heads = "NH" if part == "q" else "KVH"
        return [{"reshape": ["S", heads, "D"]}, "halves_from_pairs", {"reshape": ["S", -1]}]
    if part:
        return [{"reshape": ["S", -1]}]
    if stage in _HEADS:
        return [{"reshape": ["S", _HEADS[stage], "D"]}] + (["halves_from_pairs"] if graph.pairs else [])
    if stage == "attn_scores":
        return ["crop_keys"] if graph.q_scaled else ["crop_keys", {"scale": "attention_scale"}]
    if stage == "attn_softmax":
        return ["crop_keys"]
    return []


def _title(arch: str) -> str:
    return "llama graph's MoE branch" if TABLES[arch] is LLAMA_MOE else f"{arch} graph"


def _foreign(graph: Graph) -> list[str]:
    """Node names of other graphs this one never has: finding one means a wrong-graph dump."""
    own = {_node_name(r) for r in graph.rules} | set(graph.other_nodes)
    seen: dict[str, bool] = {}
    for other in TABLES.values():
        for r in other.rules:
            name = _node_name(r)
            if name not in own:
                seen.setdefault(name, r.per_layer)
    return [f"{_ALIASES.get(n, n)}{'-[0-9]+' if per_layer else ''}(:[A-Z_]+)?" for n, per_layer in seen.items()]


def mapping_data(arch: str) -> dict[str, Any]:
    """The pv-mapping document for one graph, as plain data."""
    graph = TABLES.get(arch)
    if graph is None:
        raise PvError(f"llama.cpp has no graph '{arch}' in pv's node tables ({', '.join(TABLES)})")
    rules: list[dict[str, Any]] = []
    for rule in graph.rules:
        if rule.occurrence:  # pragma: no cover - no table uses it; a name cannot say which one
            raise PvError(f"{arch}: {rule.name} {rule.op} occurrence {rule.occurrence} cannot be mapped")
        stage, _, part = rule.stage.partition(":")
        entry: dict[str, Any] = {"match": _match(graph, rule), "stage": stage}
        if part:
            entry["part"] = part
        steps = _transforms(graph, rule)
        if steps:
            entry["transform"] = steps
        rules.append(entry)
    return {
        "format": "pv-mapping",
        "version": 1,
        "name": NAMES[arch],
        "description": f"llama.cpp {_title(arch)} node names ({', '.join(families(arch))} GGUFs)",
        "families": families(arch),
        "foreign": _foreign(graph),
        "rules": rules,
    }


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _flow(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return value if isinstance(value, str) and value.isidentifier() else _scalar(value)


def render(arch: str) -> str:
    """The shipped YAML text of one graph's mapping."""
    data = mapping_data(arch)
    graph = TABLES[arch]
    source = "LLAMA_MOE" if graph is LLAMA_MOE else f"GRAPHS['{arch}']"
    head = [
        f"# Generated from pv.capture.llamacpp.nodes.{source} by pv.capture.llamacpp.mappings",
        "# (scripts/gen_llamacpp_mappings.py); edit the table, not this file.",
        f"# llama.cpp's {_title(arch)}, for a prefill of one sequence from an empty KV cache,",
        "# dumped with flash attention off (e.g. by llama.cpp's eval-callback, one array per node:",
        "# ggml's dims reversed, trailing size-1 dims dropped). A key is NAME-LAYER or NAME-LAYER:OP;",
        "# a name alone is the last node of that name (Qcur/Kcur: the ROPE output); the Q/K/V",
        "# projections and biases need :MUL_MAT / :ADD keys.",
        "# Q and K: " + ("ggml's rotary pair order, put back into transformers' halves per head."
                         if graph.pairs else "already in transformers' halves order (no reordering)."),
        "# kq spans the padded KV cache (cut to the sequence) and is "
        + ("already scaled (Q is scaled before it)." if graph.q_scaled
           else "unscaled (times the model's score scale, 1/sqrt(D) unless it has its own)."),
    ]
    for name, op in graph.last_ops.items():
        head.append(f"# In this graph {name}-N alone is its {op} node: the rules key {name} by name and op.")
    if any(r.via_src is not None for r in graph.rules):
        head.append("# The output projection has no name in this graph: key the MUL_MAT that reads")
        head.append("# kqv_out-N as attn_out-N.")
    for stage, reason in graph.not_exposed.items():
        head.append(f"# Not exposed: {stage} ({reason}).")
    lines = head + [
        f"format: {data['format']}",
        f"version: {data['version']}",
        f"name: {data['name']}",
        f"description: {_scalar(data['description'])}",
        f"families: {_flow(data['families'])}",
        "# Names another graph has and this one never does: a dump holding one is refused.",
        "foreign:",
        *(f"  - {_scalar(p)}" for p in data["foreign"]),
        "rules:",
    ]
    for rule in data["rules"]:
        lines.append(f"  - match: {_scalar(rule['match'])}")
        lines.append(f"    stage: {rule['stage']}")
        if "part" in rule:
            lines.append(f"    part: {rule['part']}")
        if "transform" in rule:
            lines.append(f"    transform: {_flow(rule['transform'])}")
    return "\n".join(lines) + "\n"


def write(directory: Path) -> list[Path]:
    """(Re)write every graph's mapping file into ``directory``."""
    out = []
    for arch in TABLES:
        path = directory / f"{NAMES[arch]}.yaml"
        path.write_text(render(arch))
        out.append(path)
    return out
