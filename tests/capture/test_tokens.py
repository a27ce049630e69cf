"""One token-id check: every runner and ``--tokens`` refuse the same ids with the same words."""

from __future__ import annotations

from pathlib import Path

import pytest

from pv.capture import runners
from pv.capture.model.load import load_model
from pv.capture.runners import Settings
from pv.capture.tokens import check_ids, parse_tokens
from pv.errors import PvError


def test_check_ids() -> None:
    assert check_ids((3, 255), 256) == [3, 255]
    with pytest.raises(PvError, match="^no tokens to run$"):
        check_ids([], 256)
    with pytest.raises(PvError, match="^token id 256 out of range for a vocabulary of 256$"):
        check_ids([1, 256, 300], 256)
    with pytest.raises(PvError, match="^token id -1 out of range for a vocabulary of 256$"):
        check_ids([-1], 256)
    with pytest.raises(PvError, match="^token id -1 is negative$"):  # no vocabulary to name
        check_ids([-1], None)


def test_parse_tokens() -> None:
    assert parse_tokens(" 1, 2 ,3", 256) == (1, 2, 3)
    assert parse_tokens([4, 5]) == (4, 5)
    with pytest.raises(PvError, match="bad token id 'x' in --tokens '1,x'"):
        parse_tokens("1,x")
    with pytest.raises(PvError, match="^--tokens is empty$"):
        parse_tokens([])
    with pytest.raises(PvError, match="^token id 256 out of range for a vocabulary of 256$"):
        parse_tokens("1,256", 256)


@pytest.mark.parametrize("engine", ["pv", "hf", "llama.cpp"])
def test_every_runner_refuses_the_same_ids_the_same_way(engine: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model = load_model("synthetic")
    if engine == "llama.cpp":  # llama.cpp runs GGUF files: the same model, exported
        pytest.importorskip("llama_cpp")
        from pv.capture.model.export import write_gguf

        write_gguf(model.config, dict(model.state_dict), tmp_path / "m.gguf")
        model = load_model(str(tmp_path / "m.gguf"))
    runner = runners.get(engine).load(model, Settings())
    try:
        with pytest.raises(PvError, match="^token id 256 out of range for a vocabulary of 256$"):
            runner.forward([1, 256])
        with pytest.raises(PvError, match="^no tokens to run$"):
            runner.decode([], runner.start())
    finally:
        runner.close()
