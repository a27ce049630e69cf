"""Tokenizers: UTF-8 bytes (the synthetic model), a ``tokenizer.json``, and one rebuilt from a GGUF.

A GGUF has no ``tokenizer.json``; llama.cpp stores the vocabulary, the token
types and what its own tokenizer needs besides: for byte-level BPE
(``tokenizer.ggml.model`` "gpt2") the merges and the name of the pre-tokenizer
(the regex that cuts text into words before BPE), for SentencePiece ("llama",
as Gemma and Llama 2 use) a score per token. pv rebuilds the same tokenizer
with the ``tokenizers`` library, so ``--prompt`` works for a GGUF model with no
hub access.

Only what pv can rebuild faithfully is rebuilt; a file naming another
pre-tokenizer or tokenizer model, or a SentencePiece vocabulary whose scores
leave llama.cpp's merge order undecided, gets no tokenizer (``None``) rather
than one that splits text differently from the model's own, and ``--tokens``
still works. Metadata of the wrong type or length is a one-line ``PvError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pv.errors import PvError, require


class Tokenizer(Protocol):
    """What ``--prompt`` needs of a model's tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as token ids: the tokenizer of the 256-token synthetic model."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizer.json`` read with the ``tokenizers`` package (no special tokens added)."""

    def __init__(self, path: Path):
        tokenizers = require("tokenizers")
        self._tok = tokenizers.Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


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
_UNKNOWN = 2
_CONTROL = 3
_USER_DEFINED = 4

#: Cut out of the text before the model sees it (``special=True`` in llama.cpp's terms).
_CUT_OUT = (_UNKNOWN, _CONTROL, _USER_DEFINED)

#: SentencePiece's byte tokens, for characters the vocabulary lacks.
BYTE_TOKENS = tuple(f"<0x{byte:02X}>" for byte in range(256))

#: What llama.cpp's SentencePiece tokenizer writes for a space.
_SPACE = "\u2581"

_INTEGER_TYPES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64")


@dataclass
class GGUFTokenizer:
    """A tokenizer from GGUF metadata; ``encode``/``decode`` as ``LoadedModel`` expects.

    ``model`` is the file's ``tokenizer.ggml.model``: "gpt2" (byte-level BPE) or
    "llama" (SentencePiece).
    """

    backend: Any  # tokenizers.Tokenizer
    pre: str
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    add_bos: bool = False
    special_ids: frozenset[int] = field(default_factory=frozenset)
    model: str = "gpt2"
    add_eos: bool = False

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; special tokens written in the text stay whole."""
        ids = list(self.backend.encode(text, add_special_tokens=False).ids)
        if self.add_bos and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        if self.add_eos and self.eos_token_id is not None:
            ids.append(self.eos_token_id)
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
    _add_tokens(tokenizer, tk, tokens, token_types, special_kinds=(_CONTROL,))
    return tokenizer


def spm_merges(tokens: list[str], scores: list[float],
               token_types: list[int]) -> list[tuple[str, str]] | None:
    """Every join llama.cpp's SentencePiece tokenizer can make, as BPE merges in its order.

    llama.cpp starts from single characters and keeps joining the adjacent pair
    whose joined text is the best-scored token, the leftmost on a tie. BPE
    applies the lowest-ranked merge first, so ranking each pair by its token's
    score reproduces that order, as long as no two tokens that can be formed
    share a score: the tie would then be broken by position, which BPE cannot
    do, and the answer is None. So is a vocabulary that forms a byte token or
    joins one to something else, as only llama.cpp's fallback writes them.
    Tokens cut out of the text beforehand (control, user-defined, unknown) take
    no part.
    """
    ids = {token: index for index, token in enumerate(tokens)}  # the last one wins, as in llama.cpp
    pieces = {token for token, index in ids.items() if token_types[index] not in _CUT_OUT}
    ranked: list[tuple[float, int, int]] = []
    for token in pieces:
        index = ids[token]
        for cut in range(1, len(token)):
            if token[:cut] in pieces and token[cut:] in pieces:
                ranked.append((-scores[index], index, cut))
    formed = {index for _, index, _ in ranked}
    if len({scores[index] for index in formed}) < len(formed):
        return None
    byte_tokens = set(BYTE_TOKENS)
    if any(tokens[index] in byte_tokens for index in formed) or any(
            tokens[index][:cut] in byte_tokens or tokens[index][cut:] in byte_tokens
            for _, index, cut in ranked):
        return None
    ranked.sort()
    return [(tokens[index][:cut], tokens[index][cut:]) for _, index, cut in ranked]


def build_sentencepiece_bpe(tokens: list[str], scores: list[float], token_types: list[int],
                            *, add_space_prefix: bool) -> Any | None:
    """A ``tokenizers.Tokenizer`` that tokenizes as llama.cpp does a "llama" (SentencePiece) vocabulary.

    Spaces become ``\u2581``; with ``add_space_prefix`` each stretch of text
    between special tokens starts with one, as llama.cpp adds it after every
    special token; a character not in the vocabulary falls back to its UTF-8
    bytes (``<0xE4>``...). None when the vocabulary lacks a byte token or
    ``spm_merges`` finds the order undecided.
    """
    tk = require("tokenizers")
    from tokenizers import decoders, models, normalizers

    vocab = {token: index for index, token in enumerate(tokens)}
    if any(byte not in vocab for byte in BYTE_TOKENS):
        return None
    merges = spm_merges(tokens, scores, token_types)
    if merges is None:
        return None
    bpe = models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=False,
                     ignore_merges=False)
    tokenizer = tk.Tokenizer(bpe)
    spaces = normalizers.Replace(" ", _SPACE)
    tokenizer.normalizer = (normalizers.Sequence([normalizers.Prepend(_SPACE), spaces])
                            if add_space_prefix else spaces)
    # Decoding keeps the prefix space, as llama.cpp's detokenizer does.
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    _add_tokens(tokenizer, tk, tokens, token_types, special_kinds=(_UNKNOWN, _CONTROL))
    return tokenizer


def _add_tokens(tokenizer: Any, tk: Any, tokens: list[str], token_types: list[int],
                special_kinds: tuple[int, ...]) -> None:
    """Register the vocabulary's special tokens (``special_kinds``) and user-defined ones, never split."""
    special = [tk.AddedToken(t, special=True, normalized=False)
               for t, kind in zip(tokens, token_types) if kind in special_kinds]
    user = [tk.AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, token_types) if kind == _USER_DEFINED]
    if special:
        tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)


def _contents(reader: Any, key: str, default: Any = None) -> Any:
    found = reader.fields.get(key)
    return default if found is None else found.contents()


def _where(path: Path | str) -> str:
    return f"{path}: " if str(path) else ""


def _kinds(found: Any) -> list[str]:
    return [str(getattr(kind, "name", kind)) for kind in found.types]


def _array(reader: Any, key: str, kind: str, path: Path | str) -> list[Any] | None:
    """The array stored under ``key``, None when absent; a PvError when its items are not ``kind``."""
    found = reader.fields.get(key)
    if found is None:
        return None
    kinds = _kinds(found)
    if kinds not in (["ARRAY"], ["ARRAY", kind]):  # an empty array names no item type
        raise PvError(f"{_where(path)}{key} is {'/'.join(kinds).lower()}, not an array of {kind.lower()}")
    return list(found.contents())


def _scalar(reader: Any, key: str, kinds: tuple[str, ...], default: Any, path: Path | str) -> Any:
    found = reader.fields.get(key)
    if found is None:
        return default
    found_kinds = _kinds(found)
    if len(found_kinds) != 1 or found_kinds[0] not in kinds:
        raise PvError(f"{_where(path)}{key} is {'/'.join(found_kinds).lower()}, "
                      f"not {' or '.join(kind.lower() for kind in kinds)}")
    return found.contents()


def _token_id(reader: Any, key: str, default: int | None, size: int, path: Path | str) -> int | None:
    value = _scalar(reader, key, _INTEGER_TYPES, default, path)
    if value is not None and not 0 <= int(value) < size:
        raise PvError(f"{_where(path)}{key} {value} is outside the vocabulary of {size} tokens")
    return None if value is None else int(value)


def _per_token(values: list[Any] | None, key: str, size: int, path: Path | str) -> None:
    if values is not None and len(values) != size:
        raise PvError(f"{_where(path)}{key} has {len(values)} entries for {size} tokens")


def tokenizer_from_gguf_fields(reader: Any, path: Path | str = "") -> GGUFTokenizer | None:
    """The tokenizer a ``gguf.GGUFReader`` describes, or None when pv cannot rebuild it.

    None (not an error) because a model without a usable tokenizer still runs
    from ``--tokens``; the CLI says so when ``--prompt`` is asked for.
    """
    build = _BUILDERS.get(str(_contents(reader, "tokenizer.ggml.model")))
    return None if build is None else build(reader, path)


def _byte_level_tokenizer(reader: Any, path: Path | str) -> GGUFTokenizer | None:
    pre = _contents(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        return None
    tokens = _array(reader, "tokenizer.ggml.tokens", "STRING", path) or []
    merges = _array(reader, "tokenizer.ggml.merges", "STRING", path) or []
    types = _array(reader, "tokenizer.ggml.token_type", "INT32", path)
    if not tokens or not merges:
        return None
    _per_token(types, "tokenizer.ggml.token_type", len(tokens), path)
    types = types or []
    backend = build_byte_level_bpe(tokens, merges, types, pre)
    return GGUFTokenizer(
        backend=backend,
        pre=pre,
        bos_token_id=_token_id(reader, "tokenizer.ggml.bos_token_id", None, len(tokens), path),
        eos_token_id=_token_id(reader, "tokenizer.ggml.eos_token_id", None, len(tokens), path),
        add_bos=bool(_scalar(reader, "tokenizer.ggml.add_bos_token", ("BOOL",), False, path)),
        special_ids=frozenset(i for i, t in enumerate(types) if t == _CONTROL),
    )


def _sentencepiece_tokenizer(reader: Any, path: Path | str) -> GGUFTokenizer | None:
    """SentencePiece with llama.cpp's defaults where a key is absent (BOS 1 added, EOS 2, space prefix)."""
    tokens = _array(reader, "tokenizer.ggml.tokens", "STRING", path)
    if not tokens:
        return None
    size = len(tokens)
    scores = _array(reader, "tokenizer.ggml.scores", "FLOAT32", path)
    types = _array(reader, "tokenizer.ggml.token_type", "INT32", path)
    _per_token(scores, "tokenizer.ggml.scores", size, path)
    _per_token(types, "tokenizer.ggml.token_type", size, path)
    if scores is not None and any(math.isnan(score) for score in scores):
        raise PvError(f"{_where(path)}tokenizer.ggml.scores holds NaN")
    types = types if types is not None else [1] * size
    found = GGUFTokenizer(
        backend=None,
        pre=str(_contents(reader, "tokenizer.ggml.pre", "default")),
        bos_token_id=_token_id(reader, "tokenizer.ggml.bos_token_id", 1, size, path),
        eos_token_id=_token_id(reader, "tokenizer.ggml.eos_token_id", 2, size, path),
        add_bos=bool(_scalar(reader, "tokenizer.ggml.add_bos_token", ("BOOL",), True, path)),
        add_eos=bool(_scalar(reader, "tokenizer.ggml.add_eos_token", ("BOOL",), False, path)),
        special_ids=frozenset(i for i, t in enumerate(types) if t == _CONTROL),
        model="llama",
    )
    add_space_prefix = bool(_scalar(reader, "tokenizer.ggml.add_space_prefix", ("BOOL",), True, path))
    found.backend = build_sentencepiece_bpe(
        tokens, scores if scores is not None else [0.0] * size, types, add_space_prefix=add_space_prefix)
    return None if found.backend is None else found


#: ``tokenizer.ggml.model`` -> how pv rebuilds it: byte-level BPE ("gpt2") or SentencePiece ("llama").
_BUILDERS: dict[str, Callable[[Any, Path | str], GGUFTokenizer | None]] = {
    "gpt2": _byte_level_tokenizer, "llama": _sentencepiece_tokenizer}


def load_gguf_tokenizer(path: str | Path) -> GGUFTokenizer | None:
    """The tokenizer embedded in a GGUF file, without dequantising any weights."""
    from pv.capture.model.gguf_reader import open_gguf

    return tokenizer_from_gguf_fields(open_gguf(path), path)
