"""A JSON Schema as one Python function that only says yes or no, for the evidence schema's hot path.

Every record pv reads is checked against ``schemas/evidence.schema.json``. ``jsonschema``
walks the schema afresh for every instance (about a millisecond per record), which
dominates ``pv status`` on a store of thousands. This compiles the schema once into the
source of a plain function (type tests, set comparisons of keys, precompiled patterns)
that answers ``valid or not`` in microseconds. It is never the last word on a refusal: a
record it rejects goes through ``jsonschema`` again, which words the message as before, so
the two must agree on every instance (``tests/falsify/test_schema_fast.py`` checks them
against each other on the fuzz suite's records and on mutations of every field).

Only the keywords the evidence schemas use are compiled, with ``jsonschema``'s semantics
for instances parsed from JSON (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``): ``type`` (``integer`` includes floats such as ``2.0``; booleans are no numbers),
``enum``/``const`` of strings, numbers and null, ``pattern`` (``re.search``), lengths,
``minimum``/``maximum``, ``required``, ``properties``, ``additionalProperties``,
``propertyNames``, ``items`` (one schema), ``minItems``/``maxItems``, local ``$ref``,
``allOf``/``anyOf``/``oneOf``/``not``, ``if``/``then``/``else``. Anything else raises
:class:`Unsupported`, and the caller keeps using ``jsonschema`` alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

#: Keywords that describe and never constrain.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment", "examples", "default"})
_TYPES = {
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
    "string": "type({v}) is str",
    "boolean": "type({v}) is bool",
    "null": "{v} is None",
    "number": "type({v}) in (int, float)",
    "integer": "(type({v}) is int or (type({v}) is float and {v}.is_integer()))",
}
_STRING, _NUMBER = ("pattern", "minLength", "maxLength"), ("minimum", "maximum")
_ARRAY, _OBJECT = ("items", "minItems", "maxItems"), ("required", "properties", "additionalProperties",
                                                      "propertyNames")


class Unsupported(ValueError):
    """A schema that uses a keyword (or a form of one) this compiler does not handle."""


Check = Callable[[Any], bool]


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.out: list[str] = []
        self.names: dict[str, Any] = {}
        self.functions: dict[int, str] = {}
        self.count = 0

    def constant(self, value: Any) -> str:
        name = f"k{len(self.names)}"
        self.names[name] = value
        return name

    def var(self) -> str:
        self.count += 1
        return f"x{self.count}"

    def function(self, schema: Any) -> str:
        """The name of a function ``name(v) -> bool`` for ``schema`` (made once per schema object)."""
        if id(schema) in self.functions:
            return self.functions[id(schema)]
        name = f"f{len(self.functions)}"
        self.functions[id(schema)] = name
        body: list[str] = []
        self.emit(schema, "v", 1, body)
        self.out += [f"def {name}(v):", *body, "    return True", ""]
        return name

    def resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r:.60}: only local references are compiled")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise Unsupported(f"$ref {ref!r:.60} names nothing in the schema")
            node = node[part]
        return node

    def emit(self, schema: Any, v: str, ind: int, out: list[str]) -> None:
        """Statements (at indent ``ind``) that ``return False`` when ``v`` does not follow ``schema``."""
        pad = "    " * ind
        if schema is True or schema == {}:
            return
        if schema is False:
            out.append(f"{pad}return False")
            return
        if not isinstance(schema, Mapping):
            raise Unsupported(f"schema {schema!r:.60} is neither an object nor a boolean")
        unknown = set(schema) - _ANNOTATIONS - {"$ref", "type", "enum", "const", "allOf", "anyOf", "oneOf",
                                                "not", "if", "then", "else", *_STRING, *_NUMBER, *_ARRAY,
                                                *_OBJECT}
        if unknown:
            raise Unsupported(f"keyword(s) {', '.join(sorted(unknown))} not compiled")
        if "$ref" in schema:
            out.append(f"{pad}if not {self.function(self.resolve(schema['$ref']))}({v}): return False")
        if "type" in schema:
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not kinds or any(k not in _TYPES for k in kinds):
                raise Unsupported(f"type {schema['type']!r:.60}")
            out.append(f"{pad}if not ({' or '.join(_TYPES[k].format(v=v) for k in kinds)}): return False")
        if "enum" in schema:
            out.append(f"{pad}if not ({self.members(list(schema['enum']), v)}): return False")
        if "const" in schema:
            out.append(f"{pad}if not ({self.members([schema['const']], v)}): return False")
        self.strings(schema, v, ind, out)
        self.numbers(schema, v, ind, out)
        self.arrays(schema, v, ind, out)
        self.objects(schema, v, ind, out)
        for sub in schema.get("allOf", ()):
            self.emit(sub, v, ind, out)
        if "anyOf" in schema:
            out.append(f"{pad}if not ({' or '.join(f'{self.function(s)}({v})' for s in schema['anyOf'])}): "
                       "return False")
        if "oneOf" in schema:
            out.append(f"{pad}if ({' + '.join(f'{self.function(s)}({v})' for s in schema['oneOf'])}) != 1: "
                       "return False")
        if "not" in schema:
            out.append(f"{pad}if {self.function(schema['not'])}({v}): return False")
        if "if" in schema:
            then: list[str] = []
            other: list[str] = []
            self.emit(schema.get("then", True), v, ind + 1, then)
            self.emit(schema.get("else", True), v, ind + 1, other)
            out += [f"{pad}if {self.function(schema['if'])}({v}):", *(then or [f"{pad}    pass"]),
                    f"{pad}else:", *(other or [f"{pad}    pass"])]

    def members(self, values: list[Any], v: str) -> str:
        """A test that ``v`` equals one of ``values`` as ``jsonschema`` compares (no bool is a number)."""
        tests: list[str] = []
        strings = [x for x in values if isinstance(x, str)]
        numbers = [x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(strings) + len(numbers) + sum(x is None for x in values) != len(values):
            raise Unsupported("enum or const of something other than strings, numbers and null")
        if strings:
            tests.append(f"(type({v}) is str and {v} in {self.constant(frozenset(strings))})")
        if numbers:
            tests.append(f"(type({v}) in (int, float) and {v} in {self.constant(tuple(numbers))})")
        if None in values:
            tests.append(f"{v} is None")
        return " or ".join(tests) or "False"

    def strings(self, schema: Mapping[str, Any], v: str, ind: int, out: list[str]) -> None:
        if not any(k in schema for k in _STRING):
            return
        pad = "    " * ind
        out.append(f"{pad}if type({v}) is str:")
        if "pattern" in schema:
            out.append(f"{pad}    if {self.constant(re.compile(schema['pattern']))}.search({v}) is None: "
                       "return False")
        if "minLength" in schema:
            out.append(f"{pad}    if len({v}) < {int(schema['minLength'])}: return False")
        if "maxLength" in schema:
            out.append(f"{pad}    if len({v}) > {int(schema['maxLength'])}: return False")

    def numbers(self, schema: Mapping[str, Any], v: str, ind: int, out: list[str]) -> None:
        if not any(k in schema for k in _NUMBER):
            return
        pad = "    " * ind
        out.append(f"{pad}if type({v}) in (int, float):")
        if "minimum" in schema:
            out.append(f"{pad}    if {v} < {self.constant(schema['minimum'])}: return False")
        if "maximum" in schema:
            out.append(f"{pad}    if {v} > {self.constant(schema['maximum'])}: return False")

    def arrays(self, schema: Mapping[str, Any], v: str, ind: int, out: list[str]) -> None:
        if not any(k in schema for k in _ARRAY):
            return
        pad = "    " * ind
        out.append(f"{pad}if type({v}) is list:")
        if "minItems" in schema:
            out.append(f"{pad}    if len({v}) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            out.append(f"{pad}    if len({v}) > {int(schema['maxItems'])}: return False")
        if "items" in schema:
            if not isinstance(schema["items"], (Mapping, bool)):
                raise Unsupported("items as a list (prefixItems) is not compiled")
            item = self.var()
            body: list[str] = []
            self.emit(schema["items"], item, ind + 2, body)
            if body:
                out += [f"{pad}    for {item} in {v}:", *body]

    def objects(self, schema: Mapping[str, Any], v: str, ind: int, out: list[str]) -> None:
        if not any(k in schema for k in _OBJECT):
            return
        pad = "    " * ind
        out.append(f"{pad}if type({v}) is dict:")
        if schema.get("required"):
            out.append(f"{pad}    if not {v}.keys() >= {self.constant(frozenset(schema['required']))}: "
                       "return False")
        props: Mapping[str, Any] = schema.get("properties", {})
        for name, sub in props.items():
            item = self.var()
            body: list[str] = []
            self.emit(sub, item, ind + 2, body)
            if body:
                out += [f"{pad}    if {name!r} in {v}:", f"{pad}        {item} = {v}[{name!r}]", *body]
        extra = schema.get("additionalProperties", True)
        known = self.constant(frozenset(props))
        if extra is False:
            out.append(f"{pad}    if not {v}.keys() <= {known}: return False")
        elif extra is not True:
            key, item = self.var(), self.var()
            body = []
            self.emit(extra, item, ind + 3, body)
            if body:
                out += [f"{pad}    for {key}, {item} in {v}.items():", f"{pad}        if {key} not in {known}:",
                        *body]
        if "propertyNames" in schema:
            key = self.var()
            body = []
            self.emit(schema["propertyNames"], key, ind + 2, body)
            if body:
                out += [f"{pad}    for {key} in {v}:", *body]


#: Root keywords whose verdict on an object depends on its set of keys alone.
_KEY_SET = frozenset({"type", "required", "additionalProperties", "properties"})


def members_read(schema: Mapping[str, Any]) -> frozenset[str] | None:
    """For objects that all have the same keys: the members whose values ``schema``'s verdict
    depends on, or None when that cannot be told. Holds when the root's own keywords look at
    the keys only (``type``, ``required``, ``additionalProperties: false``, ``properties`` that
    are all ``true``) and its ``allOf``/``anyOf``/``oneOf``/``not``/``if``/``then``/``else``
    name members through ``properties`` and ``required`` and nothing else."""
    names: set[str] = set()

    def branch(node: Any) -> bool:
        if isinstance(node, bool):
            return True
        if not isinstance(node, Mapping):
            return False
        for key, value in node.items():
            if key in _ANNOTATIONS:
                continue
            if key in ("properties", "required"):
                names.update(value)
            elif key in ("allOf", "anyOf", "oneOf"):
                if not all(branch(x) for x in value):
                    return False
            elif key not in ("not", "if", "then", "else") or not branch(value):
                return False
        return True

    for key, value in schema.items():
        if key in _ANNOTATIONS or (key in _KEY_SET and key != "properties" and key != "additionalProperties"):
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue
        if key == "properties" and all(v is True for v in value.values()):
            continue
        if key in ("allOf", "anyOf", "oneOf") and all(branch(x) for x in value):
            continue
        if key in ("not", "if", "then", "else") and branch(value):
            continue
        return None
    return frozenset(names)


def compile_schema(schema: Any, root: Mapping[str, Any] | None = None) -> Check:
    """``schema`` as a function ``check(instance) -> bool`` (``$ref`` resolved in ``root``, by
    default the schema itself). Raises :class:`Unsupported` for keywords it does not compile."""
    compiler = _Compiler(root if root is not None else schema)
    main = compiler.function(schema)
    namespace: dict[str, Any] = dict(compiler.names)
    exec(compile("\n".join(compiler.out), "<pv.falsify.schema_fast>", "exec"), namespace)  # noqa: S102
    check: Check = namespace[main]
    return check


__all__ = ["Check", "Unsupported", "compile_schema", "members_read"]
