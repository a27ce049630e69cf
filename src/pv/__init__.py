"""pv: contract-driven falsification of ML inference engines.

The package reads as a flow: ``contract`` (load and validate claims) ->
``capture`` (run an engine or the reference and save named stages) ->
``compare`` (diff and bisect captures) -> ``falsify`` (run bound tests, record
evidence, promote statuses) -> ``report`` (status and the CI gate).

Importing ``pv`` is cheap: nothing here pulls in torch or transformers.
"""

from pv.errors import ExitCode, MissingExtraError, PvError

__version__ = "0.1.0"

__all__ = ["ExitCode", "MissingExtraError", "PvError", "__version__"]
