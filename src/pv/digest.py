"""The one canonical JSON form pv hashes, and its sha256.

A digest names content, so two writers must serialise the same value to the
same bytes: keys sorted, no spaces, text as UTF-8 (not ``\\u`` escapes). Evidence
records (their ``digest``), a falsifier's claim (its subject in every record) and
a contract's claim view (what ``claim_changes`` acknowledges) all hash this form;
a second spelling anywhere would make a record written by one module fail to
verify in another. Values JSON cannot hold (a ``date``) are hashed as their text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON text: sorted keys, compact separators, UTF-8 text kept."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(data: Any) -> str:
    """Hex sha256 of ``data``'s canonical JSON (``canonical_json``) encoded as UTF-8.

    A lone surrogate (JSON can escape one, ``"\\udcff"``; no UTF-8 text holds one) is
    encoded as its three bytes (``surrogatepass``), so such a value still has a digest
    instead of stopping whoever asks for it; every other text hashes as UTF-8."""
    return hashlib.sha256(canonical_json(data).encode("utf-8", "surrogatepass")).hexdigest()


__all__ = ["canonical_json", "sha256_json"]
