"""The tokenizer rebuilt from a GGUF file's vocabulary: byte-level BPE and SentencePiece.

Byte-level BPE is checked against transformers on SmolLM2; SentencePiece
against llama.cpp's own tokenizer on small files written here and on the real
Gemma 3 file (a fixed set of prompts and random text).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pv.capture.model.config import SYNTHETIC
from pv.capture.model.gguf import load_gguf
from pv.capture.model.synthetic import synthetic_state_dict
from pv.capture.model.tokenizer import BYTE_TOKENS, PRE_TOKENIZERS, load_gguf_tokenizer
from pv.errors import PvError

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


def test_byte_level_token_types_of_another_length_are_one_line_error(
        tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = write_small(tmp_path, gguf_writer, types=[1] * 5)
    with pytest.raises(PvError) as exc:
        load_gguf_tokenizer(path)
    text = str(exc.value)
    assert "\n" not in text and f"tokenizer.ggml.token_type has 5 entries for {len(small_vocab()['tokens'])}" in text


def test_no_vocabulary_gives_no_tokenizer(tmp_path: Path, gguf_writer: Callable[..., Path]) -> None:
    path = gguf_writer(tmp_path / "bare.gguf", LLAMA, synthetic_state_dict(LLAMA))
    assert load_gguf(path).tokenizer is None


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf_tokenizer(smollm2_gguf: Path, smollm2: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
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


# ------------------------------------------------------------ SentencePiece ("llama")

#: A small SentencePiece vocabulary: unknown, BOS, EOS, the 256 byte tokens,
#: four characters, four joins (scored), a control and a user-defined token.
SPM_PIECES = ["a", "b", "c", "\u2581", "ab", "\u2581a", "\u2581ab", "bc", "<eot>", "  "]
SPM_TOKENS = ["<unk>", "<s>", "</s>", *BYTE_TOKENS, *SPM_PIECES]
SPM_TYPES = [2, 3, 3] + [6] * 256 + [1] * 8 + [3, 4]
SPM_SCORES = [0.0] * 259 + [-100.0, -101.0, -102.0, -103.0, -1.0, -2.0, -3.0, -4.0, 0.0, 0.0]


def write_spm(path: Path, **changes: Any) -> Path:
    """A GGUF holding only tokenizer metadata; ``changes`` replace or add keys (None drops one)."""
    gguf = pytest.importorskip("gguf")
    keys: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": SPM_TOKENS,
        "tokenizer.ggml.token_type": SPM_TYPES,
        "tokenizer.ggml.scores": SPM_SCORES,
    }
    keys.update(changes)
    w = gguf.GGUFWriter(str(path), "llama")
    for name, value in [("llama.block_count", 1), ("llama.context_length", 64),
                        ("llama.embedding_length", 8), ("llama.feed_forward_length", 8),
                        ("llama.attention.head_count", 1)]:
        w.add_uint32(name, value)
    for key, value in keys.items():
        if value is None:
            continue
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_array(key, value)  # ints as int32, floats as float32, as llama.cpp's converter
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def pieces(ids: list[int]) -> list[str]:
    return [SPM_TOKENS[i] for i in ids]


def llama_cpp_vocab(path: Path) -> Any:
    """llama.cpp's tokenizer for ``path`` (skipped when llama-cpp-python is absent)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_cpp_ids(vocab: Any, text: str) -> list[int]:
    """llama.cpp's ids as pv's ``encode`` means them: BOS as the file says, special tokens parsed."""
    return [int(i) for i in vocab.tokenize(text.encode(), add_bos=True, special=True)]


#: Text -> pieces with llama.cpp's defaults (BOS added, a space prefix after every special token).
SPM_EXPECTED = {
    "ab ab": ["<s>", "\u2581ab", "\u2581ab"],
    "abc<eot>ab": ["<s>", "\u2581ab", "c", "<eot>", "\u2581ab"],
    "a  b": ["<s>", "\u2581a", "  ", "\u2581", "b"],
    "x": ["<s>", "\u2581", "<0x78>"],
    "é": ["<s>", "\u2581", "<0xC3>", "<0xA9>"],
    "<unk>a": ["<s>", "<unk>", "\u2581a"],
    " a": ["<s>", "\u2581", "\u2581a"],
    "": ["<s>"],
}


def test_sentencepiece_small_vocabulary(tmp_path: Path) -> None:
    tok = load_gguf_tokenizer(write_spm(tmp_path / "spm.gguf"))
    assert tok is not None and tok.model == "llama"
    assert (tok.bos_token_id, tok.eos_token_id, tok.add_bos) == (1, 2, True)  # llama.cpp's defaults
    for text, expected in SPM_EXPECTED.items():
        assert pieces(tok.encode(text)) == expected, text
    for text in ("ab ab", "x", "é", " a"):
        assert tok.decode(tok.encode(text)[1:]) == " " + text  # the prefix space stays, as in llama.cpp


def test_sentencepiece_small_vocabulary_matches_llama_cpp(tmp_path: Path) -> None:
    path = write_spm(tmp_path / "spm.gguf")
    tok, ref = load_gguf_tokenizer(path), llama_cpp_vocab(path)
    assert tok is not None
    for text in SPM_EXPECTED:
        ids = tok.encode(text)
        assert ids == llama_cpp_ids(ref, text), text
        assert tok.decode(ids) == ref.detokenize(ids, special=True).decode(), text


def test_scores_decide_which_pair_joins_first(tmp_path: Path) -> None:
    """"bc" scored above "ab": "abc" becomes ▁a + bc instead of ▁ab + c."""
    scores = list(SPM_SCORES)
    scores[SPM_TOKENS.index("bc")] = -0.5
    path = write_spm(tmp_path / "bc.gguf", **{"tokenizer.ggml.scores": scores})
    tok = load_gguf_tokenizer(path)
    assert tok is not None
    assert pieces(tok.encode("abc")) == ["<s>", "\u2581a", "bc"]
    plain = load_gguf_tokenizer(write_spm(tmp_path / "ab.gguf"))
    assert plain is not None and pieces(plain.encode("abc")) == ["<s>", "\u2581ab", "c"]
    assert tok.encode("abc") == llama_cpp_ids(llama_cpp_vocab(path), "abc")


def test_no_space_prefix_no_bos_and_eos(tmp_path: Path) -> None:
    path = write_spm(tmp_path / "flags.gguf", **{
        "tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": True})
    tok = load_gguf_tokenizer(path)
    assert tok is not None
    assert pieces(tok.encode("ab ab<eot>ab")) == ["ab", "\u2581ab", "<eot>", "ab", "</s>"]
    assert tok.decode(tok.encode("ab ab")[:-1]) == "ab ab"
    assert tok.encode("ab ab<eot>ab") == llama_cpp_ids(llama_cpp_vocab(path), "ab ab<eot>ab")


@pytest.mark.parametrize("change", [
    {"tokenizer.ggml.model": "bert"},  # a tokenizer model pv does not rebuild
    {"tokenizer.ggml.scores": None},  # llama.cpp scores every token 0: ties everywhere
    {"tokenizer.ggml.scores": SPM_SCORES[:-4] + [-1.0, -2.0, -3.0, -4.0]},  # "bc" ties with "ab"
    {"tokenizer.ggml.tokens": [t if t != "<0x41>" else "A" for t in SPM_TOKENS]},  # no byte 0x41
    {"tokenizer.ggml.tokens": None},
], ids=["model", "no-scores", "tied-scores", "no-byte-fallback", "no-tokens"])
def test_what_cannot_be_rebuilt_faithfully_gets_no_tokenizer(tmp_path: Path, change: dict[str, Any]) -> None:
    assert load_gguf_tokenizer(write_spm(tmp_path / "x.gguf", **change)) is None


@pytest.mark.parametrize(("change", "message"), [
    ({"tokenizer.ggml.scores": SPM_SCORES[:-1]}, "tokenizer.ggml.scores has 268 entries for 269 tokens"),
    ({"tokenizer.ggml.token_type": SPM_TYPES + [1]}, "tokenizer.ggml.token_type has 270 entries for 269"),
    ({"tokenizer.ggml.scores": [str(v) for v in SPM_SCORES]}, "scores is array/string, not an array of float32"),
    ({"tokenizer.ggml.token_type": [float(v) for v in SPM_TYPES]}, "token_type is array/float32, not an array"),
    ({"tokenizer.ggml.tokens": list(range(len(SPM_TOKENS)))}, "tokens is array/int32, not an array of string"),
    ({"tokenizer.ggml.scores": 1.5}, "scores is float32, not an array of float32"),
    ({"tokenizer.ggml.scores": SPM_SCORES[:-1] + [float("nan")]}, "scores holds NaN"),
    ({"tokenizer.ggml.add_bos_token": "yes"}, "add_bos_token is string, not bool"),
    ({"tokenizer.ggml.add_space_prefix": 1}, "add_space_prefix is uint32, not bool"),
    ({"tokenizer.ggml.bos_token_id": 9999}, "bos_token_id 9999 is outside the vocabulary of 269 tokens"),
    ({"tokenizer.ggml.eos_token_id": "2"}, "eos_token_id is string, not uint8 or"),
], ids=["scores-short", "types-long", "scores-str", "types-float", "tokens-int", "scores-scalar",
        "scores-nan", "bos-flag-str", "prefix-flag-int", "bos-range", "eos-str"])
def test_malformed_metadata_is_one_line_error(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write_spm(tmp_path / "bad.gguf", **change)
    with pytest.raises(PvError) as exc:
        load_gguf_tokenizer(path)
    text = str(exc.value)
    assert "\n" not in text and message in text and str(path) in text


# ------------------------------------------------------------------- Gemma 3


#: Varied text, on the real Gemma 3 vocabulary: ids must equal llama.cpp's.
GEMMA_SAMPLES = [
    "Hello, world!",
    "The capital of France is",
    "  two leading spaces",
    " one leading space",
    "trailing spaces   ",
    "multiple   spaces  between     words",
    " ",
    "    ",
    " " * 40 + "forty spaces",
    "line one\nline two\n\nline four\r\nwindows line",
    "\ttab\tseparated\t\tvalues\n\t",
    "\n\n\n",
    "In 2024 there were 1234567 people, 3.5% more.",
    "3.14159265358979323846264338327950288419716939937510",
    "Punctuation!?... (parens) [brackets] {braces} \"quotes\" 'single' — dash; semi: colon",
    "#$%&*+,-./:;<=>?@\\^_`|~",
    "naïve café résumé Ångström Ελληνικά Русский",
    "東京は日本の首都です。中文测试",
    "한국어 텍스트",
    "🚀🔥👨\u200d👩\u200d👧 🏳️\u200d🌈 🦩",
    "𓀀 𠀀 \u0378 ꙮ ᚠᛇᚻ \U000e0001",  # not in the vocabulary: byte fallback
    "\x00\x01\x7f control bytes",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask><unused0>",
    "<start_of_image><end_of_image>[multimodal]",
    "<table><tr><td>cell</td></tr></table> <b>bold</b> <s>struck</s>",
    "<0x41> is not the byte A",
    "\u2581literal metaspace\u2581\u2581",
    "def f(x):\n    return x ** 2  # square\n",
    "it's we'll they'd I'M",
    "",
]


@pytest.fixture(scope="module")
def gemma3_tokenizer(gemma3_gguf: Path) -> Any:
    tok = load_gguf_tokenizer(gemma3_gguf)
    assert tok is not None
    return tok


@pytest.fixture(scope="module")
def gemma3_llama_cpp(gemma3_gguf: Path, gemma3_tokenizer: Any) -> Any:
    return llama_cpp_vocab(gemma3_gguf)


@pytest.mark.slow
def test_gemma3_metadata(gemma3_tokenizer: Any) -> None:
    tok = gemma3_tokenizer
    assert (tok.model, tok.bos_token_id, tok.eos_token_id, tok.add_bos, tok.add_eos) == ("llama", 2, 1, True, False)
    assert tok.vocab_size == 262144
    assert {105, 106} <= tok.special_ids  # <start_of_turn>, <end_of_turn>


@pytest.mark.slow
def test_gemma3_matches_llama_cpp(gemma3_tokenizer: Any, gemma3_llama_cpp: Any) -> None:
    tok, ref = gemma3_tokenizer, gemma3_llama_cpp
    seen: set[int] = set()
    for text in GEMMA_SAMPLES:
        ids = tok.encode(text)
        assert ids == llama_cpp_ids(ref, text), text
        assert tok.decode(ids) == ref.detokenize(ids, special=True).decode(), text
        if ref.detokenize(ids[1:], special=True) == text.encode():
            assert tok.decode(ids[1:]) == text, text
        seen.update(ids)
    vocab = tok.backend.get_vocab()
    # The samples reach every path: byte fallback, ▁-joined words, user-defined and control tokens.
    assert seen & {vocab[b] for b in BYTE_TOKENS}
    assert vocab["\u2581world"] in seen and vocab["    "] in seen and vocab["\n\n\n"] in seen
    assert vocab["<start_of_turn>"] in seen and vocab["<table>"] in seen


#: Random text for the property test: any character but a lone surrogate (no UTF-8
#: form), mixed with pieces that meet the tokenizer's special paths.
RANDOM_TEXT = st.lists(
    st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
              st.sampled_from([" ", "  ", "\n", "\t", "<start_of_turn>", "<end_of_turn>", "<b>",
                               "\u2581", "<0x41>", "🚀", "𓀀", "1234", "é"])),
    max_size=8).map("".join)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, database=None, derandomize=os.environ.get("CI") == "true")
@given(text=RANDOM_TEXT)
def test_gemma3_random_text_matches_llama_cpp(gemma3_tokenizer: Any, gemma3_llama_cpp: Any, text: str) -> None:
    ids = gemma3_tokenizer.encode(text)
    assert ids == llama_cpp_ids(gemma3_llama_cpp, text)
    if gemma3_llama_cpp.detokenize(ids[1:], special=True) == text.encode():
        assert gemma3_tokenizer.decode(ids[1:]) == text


#: Where transformers' GGUF tokenizer parts from llama.cpp (pv follows llama.cpp, checked
#: above): it cuts 40 spaces as 16 + 24 instead of the longest run first (31 + 9), and
#: matches the user-defined "  " against a literal "▁▁" it normalised from the text.
TRANSFORMERS_DIFFERS = {" " * 40 + "forty spaces", "\u2581literal metaspace\u2581\u2581"}


@pytest.mark.slow
def test_gemma3_matches_transformers_gguf_tokenizer(gemma3_gguf: Path, gemma3_tokenizer: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(str(gemma3_gguf.parent), gguf_file=gemma3_gguf.name)
    differ = {text for text in GEMMA_SAMPLES
              if gemma3_tokenizer.encode(text) != ref.encode(text, add_special_tokens=True)}
    assert differ == TRANSFORMERS_DIFFERS
