"""Generate realistic contract files (10-15 KB each) for the validate benchmark.

Each file looks like a hand-written contract: comments, block scalars, a few
equations with invariants, a dozen proof obligations, falsifiers with rules and
predictions, kani harnesses, a qa gate and a verification summary. Content is
seeded per file so runs are reproducible. Files are valid contracts, so the
benchmark measures the path every clean CI run takes.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import yaml

OPS = ["softmax", "rmsnorm", "rope", "matmul", "silu", "swiglu", "gelu", "layernorm",
       "attention", "embedding", "argmax", "topk", "dequant", "kv-cache", "sampler"]
TYPES = ["invariant", "equivalence", "bound", "monotonicity", "idempotency", "linearity",
         "symmetry", "conservation", "ordering", "determinism", "precondition", "postcondition"]
STATUSES = ["PROPOSED", "PROPOSED", "PARTIAL_ALGORITHM_LEVEL", "BLOCKER_FIXTURE_ABSENT"]
WORDS = ["tensor", "row", "column", "head", "token", "layer", "scale", "bias", "weight", "input", "output",
         "finite", "bounded", "monotone", "stable", "reference", "candidate", "kernel", "tolerance", "cosine",
         "relative", "error", "shape", "causal", "mask", "order", "sum", "product", "norm", "epsilon", "vector",
         "matrix", "batch", "sequence"]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def contract_text(index: int, target: int) -> str:
    rng = random.Random(index)
    op = OPS[index % len(OPS)]
    stem = f"{op}-bench-{index:05d}-v1"
    prefix = f"B{index:05d}"
    out = [
        "# yaml-language-server: $schema=../schemas/contract.schema.json",
        f"# Benchmark contract {index}: {op}. Generated; not a real claim.",
        "metadata:",
        f"  id: {stem}",
        f'  version: "1.{index % 7}.0"',
        "  kind: kernel",
        "  status: PROPOSED",
        f'  created: "2026-{1 + index % 12:02d}-{1 + index % 28:02d}"',
        "  author: benchmark",
        "  description: >",
        f"    {_sentence(rng, 14)}.",
        f"    {_sentence(rng, 12)}.",
        "  references:",
        f'    - "{_sentence(rng, 6)} (2024)"',
        f'    - "{_sentence(rng, 5)} (2023)"',
        "  depends_on: []",
        "equations:",
    ]
    for e in range(4):
        out += [
            f"  {op.replace('-', '_')}_{e}:",
            f'    formula: "y_{e}[i] = f_{e}(x[i]) / sqrt(Σ_j x[j]² / n + ε)"',
            "    domain: \"x ∈ ℝ^n, ε > 0\"",
            "    codomain: \"ℝ^n\"",
            "    invariants:",
            f"      - \"{_sentence(rng, 8)}\"",
            f"      - \"{_sentence(rng, 7)}\"",
            "    preconditions:",
            "      - \"x.len() > 0\"",
            "      - \"x.iter().all(|v| v.is_finite())\"",
        ]
    out.append("proof_obligations:")
    for o in range(12):
        out += [
            f"  - id: {prefix}-OB-{o:03d}",
            f"    type: {TYPES[(index + o) % len(TYPES)]}",
            f"    property: \"{_sentence(rng, 9)}\"",
            f"    formal: \"∀ x: |f(x) − g(x)| ≤ {rng.choice(['1e-5', '1e-6', '4 ULP'])}\"",
            f"    tolerance: {rng.choice([1.0e-5, 1.0e-6, 4.0])}",
            "    applies_to: all",
        ]
    out.append("falsification_tests:")
    f = 0
    body = "\n".join(out)
    tail_reserve = 400
    while len(body.encode()) < target - tail_reserve or f < 5:
        block = [
            f"  - id: FALSIFY-{prefix}-{f:03d}",
            f"    rule: \"{_sentence(rng, 7)}\"",
            "    prediction: >",
            f"      {_sentence(rng, 16)}.",
            f"      {_sentence(rng, 10)}.",
            f"    test: \"tests/test_{op.replace('-', '_')}.py::test_case_{f}\"",
            f"    if_fails: \"{_sentence(rng, 9)}\"",
            f"    status: {STATUSES[(index + f) % len(STATUSES)]}",
        ]
        if f % 3 == 0:
            block += ["    live_requirements:", "      device: cuda", "      weights: real"]
        out += block
        body = "\n".join(out)
        f += 1
    out += [
        "kani_harnesses:",
        f"  - id: KANI-{prefix}-001",
        f"    obligation: {prefix}-OB-000",
        "    bound: 16",
        "    strategy: exhaustive",
        "qa_gate:",
        f"  id: QA-{prefix}",
        "  checks:",
        "    - \"all falsifiers bound\"",
        "    - \"no evidence older than the code\"",
        "verification_summary:",
        "  total_obligations: 12",
        "  l2_property_tested: 12",
        "  l3_kani_proved: 1",
        "enforcement:",
        "  ci: \"pv validate --strict contracts/\"",
        "",
    ]
    return "\n".join(out)


def generate(folder: Path, count: int, low: int = 10_000, high: int = 15_000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        target = low + 400 + (i * 7919) % (high - low - 1200)
        path = folder / f"bench-{i:05d}-v1.yaml"
        path.write_text(contract_text(i, target), encoding="utf-8")
        paths.append(path)
    return paths


def _ids(text: str) -> list[str]:
    """Falsifier ids and the contract id written in one contract, longest first."""
    data = yaml.load(text, Loader=yaml.CSafeLoader)
    found: set[str] = set()
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("id"), str):
        found.add(meta["id"])
    tests = data.get("falsification_tests") if isinstance(data, dict) else None
    for test in tests if isinstance(tests, list) else []:
        if isinstance(test, dict) and isinstance(test.get("id"), str):
            found.add(test["id"])
    return sorted(found, key=len, reverse=True)


def copy_corpus(source: Path, folder: Path, count: int, unique_ids: bool) -> list[Path]:
    """``count`` real-shaped contracts: the files of ``source``, copied round-robin.

    ``unique_ids``: each copy's falsifier and contract ids get a ``-C<copy>``
    suffix (a large repository written by many hands); otherwise ids repeat across
    copies, so every copy after the first has a PV015/PV024 finding per id, the
    worst case for set-level findings.
    """
    originals = sorted(source.glob("*.yaml"))
    if not originals:
        raise SystemExit(f"{source}: no *.yaml contracts to copy")
    texts = [(p.stem, p.read_text(encoding="utf-8")) for p in originals]
    ids = [_ids(text) for _, text in texts]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        stem, text = texts[i % len(texts)]
        if unique_ids:
            pattern = re.compile("|".join(re.escape(x) for x in ids[i % len(texts)]) or "(?!)")
            text = pattern.sub(lambda m, i=i: f"{m.group(0)}-C{i:05d}", text)  # type: ignore[misc]
        path = folder / f"{stem}-c{i:05d}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    files = generate(out, n)
    print(f"wrote {len(files)} contracts to {out}")
