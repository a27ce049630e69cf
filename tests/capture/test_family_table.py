"""A model family is a row in the table (``pv.capture.model.arch``), not a branch in the code.

No module of ``src/pv`` but the table itself compares anything with a family's name
(its ``model_type`` spellings, its GGUF architecture, its llama.cpp node table): what
differs between families is a field of their row.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pv.capture.model import arch

SRC = Path(__file__).resolve().parents[2] / "src" / "pv"
TABLE = SRC / "capture" / "model" / "arch.py"


def family_words() -> frozenset[str]:
    """Every name a family goes by."""
    words: set[str] = set()
    for f in arch.FAMILIES.values():
        words.update(f.model_types)
        words.update(w for w in (f.gguf_arch, f.llamacpp_graph) if w)
    return frozenset(words)


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def family_comparisons(source: str, words: frozenset[str]) -> list[tuple[int, str]]:
    """(line, the name) of each comparison (==, !=, in, not in, a match case) with a family's name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                found.extend((node.lineno, s) for s in _strings(side) if s in words)
        elif isinstance(node, ast.MatchValue):
            found.extend((node.lineno, s) for s in _strings(node.value) if s in words)
    return found


def test_no_module_but_the_table_compares_with_a_family_name() -> None:
    words = family_words()
    offenders = [f"{path.relative_to(SRC)}:{line}: '{name}'"
                 for path in sorted(SRC.rglob("*.py")) if path != TABLE
                 for line, name in family_comparisons(path.read_text(encoding="utf-8"), words)]
    assert offenders == [], "a family check outside the family table: " + "; ".join(offenders)


@pytest.mark.parametrize("code", [
    'if family.name == "gemma3_text":\n    pass',
    'x = cfg.architecture in ("llama", "mistral")',
    'ok = "qwen3moe" != arch',
    'match family.name:\n    case "mixtral":\n        pass',
])
def test_the_guard_sees_a_family_check(code: str) -> None:
    assert family_comparisons(code, family_words())


def test_the_guard_leaves_other_strings_alone() -> None:
    assert family_comparisons('if stage.name == "embedding" and kind in ("gpt2", "bpe"):\n    pass',
                              family_words()) == []


def test_every_family_names_what_the_loaders_read() -> None:
    """Each row is complete: a transformers class pair, a known activation and mask, weight roles
    for attention and a feed-forward block, and a small synthetic shape that builds."""
    from pv.capture.model.synthetic import family_config

    for f in arch.FAMILIES.values():
        assert f.activation in arch.ACTIVATIONS.values() and f.mask in arch.MASKS, f.name
        assert {"attn_norm", "q", "k", "v", "o", "ffn_norm"} <= set(f.layer_weights), f.name
        assert ({"router", "experts_gate"} if f.moe else {"gate", "up", "down"}) <= set(f.layer_weights)
        assert family_config(f.name).family is f
        for alias in f.model_types:
            assert arch.get(alias) is f
