"""Exit codes and the one exception type that the CLI turns into a one-line error."""

from __future__ import annotations

import enum


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
