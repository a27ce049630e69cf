"""The tokenizer rebuilt from a GGUF file's vocabulary, merges and pre-tokenizer name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pv.capture.config import SYNTHETIC
from pv.capture.gguf_model import load_gguf
from pv.capture.synthetic import synthetic_state_dict
from pv.capture.tokenizer import PRE_TOKENIZERS, load_gguf_tokenizer

tokenizers = pytest.importorskip("tokenizers")

LLAMA = dataclasses.replace(SYNTHETIC, architecture="llama", attention_bias=False,
                            tie_word_embeddings=True)

#: Ordinary text, chat markup, code, numbers, non-ASCII: must match transformers exactly.
SAMPLES = [
    "Hello, world!",
    "The capital of France is",
    "In 2024 there were 1234567 people, 3.5% more.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces\n\n\ttabs and trailing   ",
    "naïve café – 東京 🚀",
    "it's we'll they'd I'M",
    "def f(x):\n    return x ** 2  # square\n",
]


def small_vocab() -> dict[str, Any]:
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + ["ab", "\u0120ab", "<|end|>"]
    types = [1] * (len(tokens) - 1) + [3]  # the last one is a control token
    return {"tokens": tokens, "types": types, "merges": ["a b", "\u0120 ab"], "pre": "smollm"}


def write_small(tmp_path: Path, writer: Callable[..., Path], **changes: Any) -> Path:
    vocab = {**small_vocab(), **changes}
    cfg = dataclasses.replace(LLAMA, vocab_size=len(vocab["tokens"]))
    return writer(tmp_path / "tok.gguf", cfg, synthetic_state_dict(cfg), tokenizer=vocab)


def test_merges_special_tokens_and_round_trip(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    tok = load_gguf_tokenizer(write_small(tmp_path, gguf_writer))
    assert tok is not None
    vocab = small_vocab()["tokens"]
    ids = tok.encode("ab ab<|end|>")
    assert [vocab[i] for i in ids] == ["ab", "\u0120ab", "<|end|>"]
    assert tok.decode(ids) == "ab ab<|end|>"
    text = "a b  ba 42 é"
    assert tok.decode(tok.encode(text)) == text


def test_load_gguf_attaches_tokenizer(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    model = load_gguf(write_small(tmp_path, gguf_writer))
    assert model.tokenizer is not None
    assert model.tokenizer.encode("ab") == [len(small_vocab()["tokens"]) - 3]


def test_unknown_pre_tokenizer_gives_no_tokenizer(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    assert "made-up" not in PRE_TOKENIZERS
    path = write_small(tmp_path, gguf_writer, pre="made-up")
    assert load_gguf_tokenizer(path) is None
    assert load_gguf(path).tokenizer is None  # weights still load; --tokens still works


def test_no_vocabulary_gives_no_tokenizer(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "bare.gguf", LLAMA, synthetic_state_dict(LLAMA))
    assert load_gguf(path).tokenizer is None


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf_tokenizer(smollm2_path: Path, smollm2: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    tok = smollm2.tokenizer
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(ids) == text
    assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]


@pytest.mark.slow
def test_smollm2_isolates_digits_like_llama_cpp(smollm2: Any) -> None:
    """The file names pre-tokenizer ``smollm``: every digit is cut off before GPT-2's regex.

    So a run of spaces before a number stays one piece ("ĠĠ") instead of lending
    its last space to the number, as plain GPT-2 splitting (and transformers'
    GGUF tokenizer, which ignores the name) would do.
    """
    tok = smollm2.tokenizer
    assert tok.pre == "smollm"
    vocab = tok.backend.get_vocab()
    ids = tok.encode("a  2024")
    assert ids == [vocab["a"], vocab["\u0120\u0120"], vocab["2"], vocab["0"], vocab["2"], vocab["4"]]
