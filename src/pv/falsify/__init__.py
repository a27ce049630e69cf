"""Falsify: bind pytest tests to falsifier ids, record evidence, promote statuses.

``pv.falsify`` is both this package and the function ``pv.falsify(...)`` that
``pv.api`` hands on (``falsify.campaign.falsify_contracts``): importing any
``pv.falsify.*`` module makes Python bind the package to the name ``falsify`` of
``pv``, where the function was. So the package answers a call with that same
function, and ``pv.falsify(...)`` works whichever of the two the name holds.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from pv.falsify.campaign import falsify_contracts

        return falsify_contracts(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
