"""pv: contract-driven falsification of ML inference engines.

The package reads as a flow: ``contract`` (load and validate claims) ->
``capture`` (run an engine or the reference and save named stages) ->
``compare`` (diff and bisect captures) -> ``falsify`` (run bound tests, record
evidence, promote statuses) -> ``report`` (status and the CI gate).

This module only hands names on: the public API is ``pv.api``'s, whatever its
``__all__`` lists. Importing ``pv`` is cheap all the same: ``pv.api`` imports
each layer inside the function that needs it, so nothing here pulls in torch,
transformers or numpy.
"""

from pv import api
from pv.api import *
from pv.errors import ExitCode, MissingExtraError, PvError
from pv.version import __version__

__all__ = ["ExitCode", "MissingExtraError", "PvError", "__version__"]
__all__ += api.__all__
