"""The fast evidence reader against the careful one, on the fuzz suite's records.

``pv.falsify.reading`` must never accept what the careful reader (``records.parse_json`` +
``from_dict``) refuses, must read exactly the record it would, and must compute the digest
``content_digest()`` computes; the compiled schema (``pv.falsify.schema_fast``) must agree
with ``jsonschema`` on every document. Drawn from the committed records (or a demo record),
mutated as data and as text, always rendered in pv's own layout so the fast path is taken.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pv.falsify import reading, schema_fast
from pv.falsify import records as rec

from .strategies import encode_any, mutate_data, mutate_text
from .targets_repo import evidence_base


def _layout(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@functools.lru_cache(maxsize=1)
def _base() -> dict[str, Any]:
    record = evidence_base()[2]
    if record.get("pv_evidence") == 2:
        return record
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "falsify"))
    from tests_falsify_records import make_record

    return make_record().to_dict()


@functools.lru_cache(maxsize=1)
def _compiled() -> schema_fast.Check:
    return schema_fast.compile_schema(rec._validator("evidence.schema.json").schema)


def _careful(raw: bytes) -> tuple[rec.EvidenceRecord | None, str]:
    try:
        data = rec.parse_json(raw, "r.json")
        if not isinstance(data, dict):
            return None, "not an object"
        return rec.from_dict(data), ""
    except (rec.EvidenceError, TypeError, ValueError) as exc:
        return None, str(exc)


def _docs() -> st.SearchStrategy[bytes]:
    base = _base()
    as_data = mutate_data(base).map(lambda d: encode_any(_layout(d)))
    as_text = mutate_text(_layout(base)).map(encode_any)
    return st.one_of(st.just(_layout(base).encode()), as_data, as_text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_docs())
def test_fast_reader_accepts_only_what_the_careful_reader_accepts(raw: bytes) -> None:
    fast = reading.parse(raw)
    careful, why = _careful(raw)
    if fast is None:
        return
    assert careful is not None, f"the fast reader accepted what the careful one refuses: {why}"
    record, digest = fast
    assert record == careful
    assert digest == careful.content_digest()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutate_data(_base()))
def test_compiled_schema_agrees_with_jsonschema(doc: Any) -> None:
    expected = not list(rec._validator("evidence.schema.json").iter_errors(doc))
    assert _compiled()(doc) == expected


def test_the_unmutated_record_takes_the_fast_path() -> None:
    raw = _layout(_base()).encode()
    fast = reading.parse(raw)
    assert fast is not None and fast[0] == _careful(raw)[0]
