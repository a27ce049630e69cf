"""Capture: run an engine (this project's or the transformers reference) and save named stages.

``pv.capture`` is both this subpackage and the API entry point ``pv.capture(...)``
(``pv.api.capture``): once the subpackage is imported, Python makes it the ``capture``
attribute of ``pv``, so the subpackage itself is callable and forwards to the API.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from pv.api import capture

        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
