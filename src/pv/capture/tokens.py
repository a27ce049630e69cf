"""Token ids: one check for every runner and for ``--tokens``, ids made from a prompt, and the
one check that two captures ran the same ids.

Each runner (pv's engine, the transformers oracle, llama.cpp) and the plan
checks refuse the same inputs with the same words, because they all call
``check_ids``: an empty input, or an id outside the vocabulary, is one line
before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pv.errors import PvError

if TYPE_CHECKING:
    from pv.capture.model.config import ModelConfig
    from pv.capture.model.loaded import LoadedModel


def check_ids(token_ids: Iterable[int], vocab_size: int | None) -> list[int]:
    """``token_ids`` as ints: at least one, each in ``[0, vocab_size)`` (any id >= 0 without a size)."""
    ids = [int(i) for i in token_ids]
    if not ids:
        raise PvError("no tokens to run")
    for i in ids:
        if i < 0 and vocab_size is None:
            raise PvError(f"token id {i} is negative")
        if i < 0 or (vocab_size is not None and i >= vocab_size):
            raise PvError(f"token id {i} out of range for a vocabulary of {vocab_size}")
    return ids


def check_context(positions: int, config: ModelConfig, what: str = "the input") -> None:
    """Refuse more positions than the model was built for (``max_position_embeddings``).

    RoPE past the trained context is where long-context bugs hide, but a run
    past the configured limit compares two engines on positions neither claims
    to handle; a config whose ``rope_scaling`` extends the context says so in
    ``max_position_embeddings`` already (the original length is in the scaling).
    """
    limit = int(config.max_position_embeddings or 0)
    if limit and positions > limit:
        scaling = config.rope_scaling or {}
        kind = scaling.get("rope_type") or scaling.get("type") if isinstance(scaling, dict) else None
        how = f" (RoPE scaling {kind} included)" if kind else ""
        raise PvError(f"{what} needs {positions} positions, more than the model's context of {limit}{how} "
                      "(max_position_embeddings): give fewer tokens")


def parse_tokens(spec: str | Sequence[int], vocab_size: int | None = None) -> tuple[int, ...]:
    """``--tokens``: ``"1,2,3"`` or a sequence of ints, checked by ``check_ids``."""
    if isinstance(spec, str):
        ids: list[int] = []
        for raw in spec.split(","):
            item = raw.strip()
            try:
                ids.append(int(item))
            except ValueError:
                raise PvError(f"bad token id '{item}' in --tokens '{spec}'; use e.g. 1,2,3") from None
    else:
        ids = [int(x) for x in spec]
    if not ids:
        raise PvError("--tokens is empty")
    return tuple(check_ids(ids, vocab_size))


def tokenize(model: LoadedModel, prompt: str) -> list[int]:
    """``--prompt``: the ids the model's own tokenizer gives (a model without one needs ``--tokens``)."""
    if model.tokenizer is None:
        raise PvError(f"{model.source}: this model has no tokenizer; pass --tokens instead of --prompt")
    ids = [int(i) for i in model.tokenizer.encode(prompt)]
    if not ids:
        raise PvError("the prompt tokenised to zero tokens")
    return ids


def prompt_ids(spec: str, prompt: str) -> list[int]:
    """``--prompt``'s ids from the tokenizer of model ``spec`` alone, no weights loaded
    (``pv trace --dry-run`` prints the ids a run would use): the synthetic models' UTF-8 bytes,
    a HF directory's ``tokenizer.json``, a GGUF file's own vocabulary."""
    from pathlib import Path

    from pv.capture.model import tokenizer as tk

    found: tk.Tokenizer | None
    if spec == "synthetic" or spec.startswith("synthetic:"):
        found = tk.ByteTokenizer()
    elif Path(spec).is_dir():
        found = tk.HFTokenizer(Path(spec) / "tokenizer.json") if (Path(spec) / "tokenizer.json").is_file() else None
    else:
        found = tk.load_gguf_tokenizer(spec)
    if found is None:
        raise PvError(f"{spec}: this model has no tokenizer; pass --tokens instead of --prompt")
    ids = [int(i) for i in found.encode(prompt)]
    if not ids:
        raise PvError("the prompt tokenised to zero tokens")
    return ids


def recorded(run: object) -> list[int] | None:
    """The token ids a capture's manifest ``run`` block records, or None when it records none."""
    ids = run.get("token_ids") if isinstance(run, dict) else None
    if isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return [int(i) for i in ids]
    return None


def first_difference(a: Sequence[int], b: Sequence[int]) -> str:
    """Where two id sequences first part, in words."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first at position {i}: {x} vs {y}"
    return f"one is a prefix of the other ({len(a)} vs {len(b)} ids)"


def same_input(a: Sequence[int] | None, b: Sequence[int] | None) -> str | None:
    """The one check that two captures ran the same tokens (``a`` under test, ``b`` reference).

    Different ids are a ``PvError``: their stages describe different inputs, and
    no tolerance makes them comparable. When only one side records its ids, the
    returned line says that the input could not be checked; None when both agree
    or neither records them.
    """
    if a is not None and b is not None:
        if list(a) != list(b):
            raise PvError(f"A and B ran different tokens ({len(a)} and {len(b)} ids, "
                          f"{first_difference(a, b)}): compare captures of the same input")
        return None
    if a is None and b is None:
        return None
    missing = "A" if a is None else "B"
    return (f"{missing} records no token ids (an import without --tokens?): pv could not check that "
            "both sides ran the same input")
