"""Exit codes, the one exception type that the CLI turns into a one-line error, and the
helpers that keep any value, text or path on that one line."""

from __future__ import annotations

import enum
import os
from typing import Any


class ExitCode(enum.IntEnum):
    """What every ``pv`` command returns, in the diff(1) tradition."""

    OK = 0
    #: The command ran and found a problem: an invalid contract, a diverged
    #: stage, a falsified prediction, a gate regression.
    FINDINGS = 1
    #: The command could not do its job: bad arguments, unreadable input,
    #: a missing dependency or device.
    USAGE = 2


class PvError(Exception):
    """An expected failure with a message fit for one stderr line.

    Library code raises it for bad input; the CLI prints ``str(err)`` and exits
    with ``exit_code`` (2 unless a subclass says otherwise). Never a traceback.
    """

    exit_code: int = ExitCode.USAGE


class MissingExtraError(PvError):
    """An optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str = "engine"):  # type: ignore[no-untyped-def]
    """Import ``module`` or raise a ``MissingExtraError`` naming the pip extra.

    Heavy dependencies (torch, transformers, gguf, matplotlib) are imported only
    through this helper, inside the functions that need them, so that
    ``pv validate``/``status``/``gate`` run with the core dependencies alone.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingExtraError(
            f"this command needs '{top}', which is not installed: "
            f"pip install 'pv[{extra}]' (import failed: {exc})"
        ) from None


def brief(value: Any, limit: int = 60) -> str:
    """A short one-line ``repr`` for messages, safe on any value.

    A huge integer cannot be turned into text at all and a deep list recurses;
    neither may turn an error message into a second error.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple)):
        if len(value) <= 8 and not any(isinstance(x, (list, dict, tuple)) for x in value):
            inner = ", ".join(brief(x, limit) for x in value)
            text = f"[{inner}]"
            return text if len(text) <= limit else text[: limit - 4] + "...]"
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, dict):
        return f"<{type(value).__name__} of {len(value)} items>" if value else "{}"
    try:
        text = repr(value)
    except (ValueError, RecursionError, MemoryError):
        return f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line (runs of whitespace become one space), clipped to ``limit``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_path(path: str | os.PathLike[str]) -> str:
    """A path as one printable line (newlines and undecodable bytes escaped)."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace").replace(
        "\n", "\\n"
    ).replace("\r", "\\r").replace("\t", "\\t")
