"""What software a run used: versions read from package metadata, never by importing them.

Evidence records and capture manifests both say which versions produced them;
reading ``importlib.metadata`` keeps ``pv status`` free of torch.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

#: Packages whose versions every record names.
DEFAULT_PACKAGES = ("pv", "torch", "transformers", "numpy", "pytest")


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """``python`` and each package's installed version (None when it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


__all__ = ["DEFAULT_PACKAGES", "versions"]
