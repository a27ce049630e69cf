"""What a comparison's records suggest beyond their verdicts, read from the records alone.

Two kinds of line, both printed by ``pv diff`` and ``pv bisect`` and kept in
their JSON:

- **hints**: a pattern of verdicts that names a likely cause. Today one: q/k
  stages of a layer fail while that layer's ``attn_scores`` passes. Permuting
  q and k alike within each head (rotary pairs ``2i, 2i+1`` against halves
  ``i, i + D/2``) changes every q/k value and no dot product, so this is the
  signature of a RoPE layout mismatch, such as a mapping missing
  ``halves_from_pairs``.
- **tolerance notes**: an option of the tolerance file that no compared pair
  could use, said in one line instead of ignored: ``assume_dtype`` when every
  pair records its dtype, per-dtype tolerances when no pair was judged in any
  of their classes, per-stage ones when no pair of that stage was compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class StageRecord(Protocol):
    """What a hint reads of a ``pv.compare.records.StageRecord`` (which reads the hints: this keeps
    the two modules out of an import circle)."""

    @property
    def stage(self) -> str | None: ...
    @property
    def layer(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def dtype(self) -> str | None: ...
    @property
    def compared(self) -> bool: ...

#: Stages that hold q or k (and change under a permutation within each head) before the scores.
QK_STAGES = ("qkv_matmul", "qkv_bias", "q_norm", "k_norm", "q_post_rope", "k_post_rope")


def _layers(layers: Sequence[int]) -> str:
    return ", ".join(map(str, layers[:6])) + (f" (+{len(layers) - 6} more)" if len(layers) > 6 else "")


def rope_layout(records: Iterable[StageRecord]) -> list[str]:
    """The RoPE layout signature (module docstring), one line for every layer that shows it."""
    by_layer: dict[int, dict[str, str]] = {}
    for r in records:
        if r.stage is not None and r.layer is not None:
            by_layer.setdefault(r.layer, {})[r.stage] = r.status
    shown = [layer for layer, status in sorted(by_layer.items())
             if status.get("attn_scores") == "pass" and any(status.get(s) == "fail" for s in QK_STAGES)]
    if not shown:
        return []
    failing = [s for s in QK_STAGES if by_layer[shown[0]].get(s) == "fail"]
    line = (f"layer(s) {_layers(shown)}: {', '.join(failing)} fail while attn_scores of the same layer passes: "
            "looks like a RoPE layout mismatch (pairs vs halves): q and k permuted alike within each head "
            "keep every q.k; if one engine keeps rotary pairs (2i, 2i+1), its mapping's q/k rules need "
            "halves_from_pairs (docs/engines.md)")
    return [line]


def unapplied_tolerances(tolerances: Mapping[str, Any], records: Iterable[StageRecord]) -> list[str]:
    """Options of a tolerance file (``Tolerances.to_dict()``) that no compared pair used."""
    compared = [r for r in records if r.compared]
    if not compared:
        return []
    assume = str(tolerances.get("assume") or "float32")
    judged = sorted({r.dtype or assume for r in compared})
    out = []
    if assume != "float32" and all(r.dtype is not None for r in compared):
        out.append(f"assume_dtype {assume} not applied: every compared pair records its dtype "
                   f"({', '.join(judged)}); it applies to captures that record none (an import declares "
                   "its engine's dtype with pv import --dtype)")
    given = sorted({k for key in ("per_dtype", "per_dtype_stage")
                    for k, v in (tolerances.get(key) or {}).items() if v})
    if given and not set(given) & set(judged):
        out.append(f"the tolerance file's {', '.join(given)} tolerances not applied: every pair was judged "
                   f"in the {', '.join(judged)} class, from the captures' dtypes (an import declares its "
                   "engine's dtype with pv import --dtype)")
    stages = {r.stage for r in compared}
    unused = [s for s in (tolerances.get("per_stage") or {}) if s not in stages]
    if unused:
        out.append(f"the tolerance file's entries for {', '.join(unused)} not applied: no pair of "
                   f"{'that stage' if len(unused) == 1 else 'those stages'} was compared")
    return out


__all__ = ["QK_STAGES", "rope_layout", "unapplied_tolerances"]
