"""llama-cpp-python itself: loading it, its ggml functions, its log, and models shared by runners.

Loading a GGUF into llama.cpp (``llama_model_load_from_file``) takes about
0.2-0.6 s for SmolLM2 on this machine, about half of a whole 64-token plain
generation, and a process that captures several times (``pv bisect``, the
falsifiers, benchmarks) would pay it for every runner. The weights are only
read once loaded (planted faults change node values in a context's own
buffers, never the model), so runners of one process share one loaded model
per file (``open_model``), each with a context of its own; a model no runner
uses stays loaded until a runner asks for another file (or the same path after
the file changed), so at most one idle model is kept.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pv.capture.llamacpp.ggml import Ggml
from pv.errors import PvError


def load_library() -> Any:
    """The ``llama_cpp`` module, or a clear error naming the extra."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise PvError(f"--engine llama.cpp needs llama-cpp-python: pip install 'pv[llamacpp]' ({exc})") \
            from None
    return llama_cpp


def ggml_functions(llama_cpp: Any) -> Ggml:
    """The ggml functions pv calls, checked against the struct pv declares."""
    from llama_cpp import _ggml as ggml_module

    g = Ggml(ggml_module.libggml)
    g.check_layout()
    return g


_QUIET: list[Any] = []


def silence(llama_cpp: Any) -> None:
    """Route llama.cpp's log lines to nowhere (pv prints its own)."""
    if _QUIET:
        return
    cb = llama_cpp.llama_log_callback(lambda level, text, data: None)
    _QUIET.append(cb)  # keep the callback alive for the process
    llama_cpp.llama_log_set(cb, None)


def file_type(description: str) -> str | None:
    """The file type in ``llama_model_desc`` ("ARCH SIZE FTYPE"): ``Q4_1``, ``Q4_K - Medium``, ``F32``."""
    parts = description.split(maxsplit=2)
    if len(parts) < 3:
        return None
    ftype = " ".join(parts[2].replace("(guessed)", " ").split())  # llama.cpp's guess when the file says none
    return ftype.removeprefix("all ").strip() or None


#: Loaded models by file (resolved path, size, mtime, inode): [model handle, runners using it].
_MODELS: dict[tuple[str, int, int, int], list[Any]] = {}
_LOCK = threading.Lock()


def _key(path: Path) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def open_model(llama_cpp: Any, path: Path) -> tuple[Any, tuple[str, int, int, int]]:
    """A CPU-loaded model of ``path`` (None if llama.cpp cannot load it) and the key ``close_model`` takes."""
    key = _key(path)
    with _LOCK:
        held = _MODELS.get(key)
        if held is None:
            for other in [k for k, v in _MODELS.items() if v[1] == 0]:  # idle: another file, or this one changed
                llama_cpp.llama_model_free(_MODELS.pop(other)[0])
            mparams = llama_cpp.llama_model_default_params()
            mparams.n_gpu_layers = 0
            handle = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
            if not handle:
                return None, key
            held = _MODELS[key] = [handle, 0]
        held[1] += 1
        return held[0], key


def close_model(key: tuple[str, int, int, int]) -> None:
    """One runner less on the model; it stays loaded for the next runner on the same file."""
    with _LOCK:
        held = _MODELS.get(key)
        if held is not None and held[1] > 0:
            held[1] -= 1
