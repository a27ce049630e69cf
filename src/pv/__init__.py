"""pv: contract-driven falsification of ML inference engines.

The package reads as a flow: ``contract`` (load and validate claims) ->
``capture`` (run an engine or the reference and save named stages) ->
``compare`` (diff and bisect captures) -> ``falsify`` (run bound tests, record
evidence, promote statuses) -> ``report`` (status and the CI gate).

Importing ``pv`` is cheap: nothing here pulls in torch or transformers.
"""

from typing import Any

from pv.errors import ExitCode, MissingExtraError, PvError

__version__ = "0.1.0"

#: The public API (``pv.api``), loaded on first use so ``import pv`` stays cheap.
_API = ("validate", "trace", "diff", "bisect", "status", "gate")

__all__ = ["ExitCode", "MissingExtraError", "PvError", "__version__", "bisect", "diff", "gate",
           "status", "trace", "validate"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from pv import api

        return getattr(api, name)
    raise AttributeError(f"module 'pv' has no attribute {name!r}")
