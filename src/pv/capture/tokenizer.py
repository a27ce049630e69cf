"""A tokenizer rebuilt from the vocabulary and merges a GGUF file carries.

A GGUF has no ``tokenizer.json``; llama.cpp stores the byte-level BPE vocabulary,
its merges, the token types and the name of the pre-tokenizer (the regex that
cuts text into words before BPE). pv rebuilds the same tokenizer with the
``tokenizers`` library, so ``--prompt`` works for a GGUF model with no hub access.

Only the pre-tokenizers pv knows are rebuilt; a file naming another one gets no
tokenizer (``None``) rather than a tokenizer that splits text differently from
the model's own, and ``--tokens`` still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pv.errors import PvError, require

#: GPT-2's word regex, which ``tokenizers``' ByteLevel pre-tokenizer applies itself.
_GPT2 = "gpt2"

#: llama.cpp pre-tokenizer name -> how words are cut before byte-level BPE.
#: "smollm" isolates every digit first (as the model was trained), then GPT-2's regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": (_GPT2,),
    "gpt2": (_GPT2,),
    "smollm": ("digits", _GPT2),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "llama3": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
}

#: llama.cpp token types.
_CONTROL = 3
_USER_DEFINED = 4


@dataclass
class GGUFTokenizer:
    """Byte-level BPE from GGUF metadata; ``encode``/``decode`` as ``LoadedModel`` expects."""

    backend: Any  # tokenizers.Tokenizer
    pre: str
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    add_bos: bool = False
    special_ids: frozenset[int] = field(default_factory=frozenset)

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; special tokens written in the text stay whole."""
        ids = list(self.backend.encode(text, add_special_tokens=False).ids)
        if self.add_bos and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: list[int]) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=False))

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))


def build_byte_level_bpe(tokens: list[str], merges: list[str], token_types: list[int],
                         pre: str) -> Any:
    """A ``tokenizers.Tokenizer`` for a byte-level BPE vocabulary in llama.cpp's terms."""
    tk = require("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    if pre not in PRE_TOKENIZERS:
        raise PvError(
            f"unknown pre-tokenizer '{pre}'; pv rebuilds {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs: list[tuple[str, str]] = [(a, b) for a, b in (m.split(" ", 1) for m in merges)]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=False)
    tokenizer = tk.Tokenizer(bpe)
    steps: list[Any] = []
    for step in PRE_TOKENIZERS[pre]:
        if step == "digits":
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        elif step == _GPT2:
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        else:
            steps.append(pre_tokenizers.Split(tk.Regex(step), behavior="isolated"))
    if PRE_TOKENIZERS[pre][-1] != _GPT2:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    special = [tk.AddedToken(t, special=True, normalized=False)
               for t, kind in zip(tokens, token_types) if kind == _CONTROL]
    user = [tk.AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, token_types) if kind == _USER_DEFINED]
    if special:
        tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)
    return tokenizer


def _contents(reader: Any, key: str, default: Any = None) -> Any:
    found = reader.fields.get(key)
    return default if found is None else found.contents()


def tokenizer_from_gguf_fields(reader: Any, path: Path | str = "") -> GGUFTokenizer | None:
    """The tokenizer a ``gguf.GGUFReader`` describes, or None when pv cannot rebuild it.

    None (not an error) because a model without a usable tokenizer still runs
    from ``--tokens``; the CLI says so when ``--prompt`` is asked for.
    """
    model = _contents(reader, "tokenizer.ggml.model")
    pre = _contents(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2" or pre not in PRE_TOKENIZERS:
        return None
    tokens = list(_contents(reader, "tokenizer.ggml.tokens", []))
    merges = list(_contents(reader, "tokenizer.ggml.merges", []))
    types = [int(t) for t in _contents(reader, "tokenizer.ggml.token_type", [])]
    if not tokens or not merges:
        return None
    backend = build_byte_level_bpe(tokens, merges, types, pre)
    bos = _contents(reader, "tokenizer.ggml.bos_token_id")
    eos = _contents(reader, "tokenizer.ggml.eos_token_id")
    return GGUFTokenizer(
        backend=backend,
        pre=pre,
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
        add_bos=bool(_contents(reader, "tokenizer.ggml.add_bos_token", False)),
        special_ids=frozenset(i for i, t in enumerate(types) if t == _CONTROL),
    )


def load_gguf_tokenizer(path: str | Path) -> GGUFTokenizer | None:
    """The tokenizer embedded in a GGUF file, without dequantising any weights."""
    gguf = require("gguf")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except FileNotFoundError:
        raise PvError(f"model file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - GGUFReader raises many types on a damaged file
        raise PvError(f"{path}: unreadable GGUF file ({type(exc).__name__}: {exc})") from None
    return tokenizer_from_gguf_fields(reader, path)
