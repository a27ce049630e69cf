"""The JSON schema (2020-12) as the source of truth for structure, and its errors as findings.

``schemas/contract.schema.json`` ships inside the package (``pv/schemas`` links
to it) so editors, the validator and the typed models all read one file.
Messages are written here rather than taken from jsonschema, whose text embeds
the repr of the whole offending value (a falsifier, a section of the file).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from pv.contract.findings import ERROR, KeyPath, dotted

SCHEMA_RESOURCE = "schemas/contract.schema.json"
RULE = "PV010"

_JSON_TYPES = {
    dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
    float: "number", type(None): "null",
}


@functools.lru_cache(maxsize=1)
def contract_schema() -> dict[str, Any]:
    """The contract schema as a dict (read once per process)."""
    text = resources.files("pv").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    return Draft202012Validator(contract_schema())


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(error: Any) -> tuple[KeyPath, str]:
    """A one-line message for one jsonschema error, and the path it points at."""
    path: KeyPath = tuple(error.absolute_path)
    where = dotted(path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        found = re.match(r"^'(.*)' is a required property", error.message)
        name = found.group(1) if found else "?"
        return path, f"{where}: missing required key '{name}'"
    if kind == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join({"object": "mapping", "array": "list"}.get(str(t), str(t)) for t in wanted)
        hint = (" (write equations as a mapping: name -> {formula: ...})"
                if path == ("equations",) and isinstance(instance, list) else "")
        return path, f"{where}: expected {names}, got {_kind(instance)} {_short(instance)}{hint}"
    if kind == "enum":
        return path, f"{where}: {_short(instance)} is not one of {', '.join(map(str, expected))}"
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in allowed)
        key = extra[0] if extra else "?"
        return path + (key,), (f"{dotted(path + (key,))}: unknown key; allowed here: "
                               f"{', '.join(sorted(allowed))}")
    if kind in ("anyOf", "oneOf"):
        # When the value has the right kind for one branch, that branch's complaint is the news.
        inner = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        if inner:
            return _message(max(reversed(inner), key=lambda e: len(e.absolute_path)))
        return path, (f"{where}: {_short(instance)} matches none of the allowed forms "
                      f"({_describe_alternatives(expected)})")
    return path, f"{where}: {error.message if len(error.message) < 120 else kind + ' failed'}"


def _describe_alternatives(options: list[dict[str, Any]]) -> str:
    names = []
    for option in options:
        if "$ref" in option:
            names.append(f"a mapping ({option['$ref'].rsplit('/', 1)[-1]})")
        elif option.get("type") == "array":
            names.append("a list of strings")
        else:
            names.append(str(option.get("type", "value")))
    return " or ".join(names)


def schema_errors(data: Any) -> Iterator[tuple[KeyPath, str, str]]:
    """Yield (path, message, severity) for every schema violation in ``data``.

    Missing required keys of one mapping are reported together, as one finding.
    """
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    missing: dict[KeyPath, list[str]] = {}
    instances: dict[KeyPath, Any] = {}
    for error in errors:
        if error.validator == "required":
            found = re.match(r"^'(.*)' is a required property", error.message)
            missing.setdefault(tuple(error.absolute_path), []).append(found.group(1) if found else "?")
            instances[tuple(error.absolute_path)] = error.instance
    for path, names in missing.items():
        keys = ", ".join(f"'{n}'" for n in names)
        yield path, (f"{dotted(path)}: missing required key{'s' if len(names) > 1 else ''} {keys}"
                     f"{_dialect_hint(instances[path], names)}"), ERROR
    for error in errors:
        error = _best(error)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Every unknown key of the mapping, each at its own line, in one run.
            path = tuple(error.absolute_path)
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(str(k) for k in error.instance if k not in allowed):
                yield path + (key,), (f"{dotted(path + (key,))}: unknown key; allowed here: "
                                      f"{', '.join(sorted(allowed))}"), ERROR
        elif error.validator != "required":
            path, message = _message(error)
            yield path, message, ERROR


def _best(error: Any) -> Any:
    """For anyOf/oneOf, the branch complaint that is the news (as ``_message`` picks it)."""
    while error.validator in ("anyOf", "oneOf"):
        inner = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        if not inner:
            break
        error = max(reversed(inner), key=lambda e: len(e.absolute_path))
    return error


#: Keys other contract dialects use for a required one: canonical key -> its aliases.
DIALECT: dict[str, tuple[str, ...]] = {
    "prediction": ("expected", "expectation", "predicts", "claim"),
    "test": ("method", "test_harness", "harness", "command", "tests"),
    "if_fails": ("fails_if", "failure_means", "on_failure", "if_failed"),
    "rule": ("name", "title", "statement"),
    "property": ("statement", "description", "claim"),
    "type": ("kind", "category"),
    "formula": ("equation", "statement", "expression"),
    "description": ("summary", "title"),
}


def _dialect_hint(instance: Any, missing: list[str]) -> str:
    """`` (this mapping writes 'expected': pv reads 'prediction')`` when another dialect's key is there."""
    if not isinstance(instance, dict):
        return ""
    pairs = []
    for name in missing:
        alias = next((a for a in DIALECT.get(name, ()) if a in instance), None)
        if alias is not None:
            pairs.append((alias, name))
    if not pairs:
        return ""
    written = ", ".join(f"'{a}'" for a, _ in pairs)
    wanted = ", ".join(f"'{n}'" for _, n in pairs)
    return f" (it writes {written}, another dialect: pv reads {wanted})"
