"""The executor's fast output check agrees with jsonschema (Draft 2020-12).

Differential test: every input and output schema of the default manifests, checked against
valid instances built from the schema and hundreds of mutations of them (wrong types, missing
required properties, extra properties, out-of-range numbers, strings off the enum, bools where
integers belong). The fast check may only ever say "valid" when jsonschema does; for these
schemas it must also agree on "invalid" (so jsonschema's slow path runs only for bad data).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Iterator
from typing import Annotated, Any

import pydantic
import pytest

from generator.runtime import catalog as c
from generator.runtime.fastschema import (
    FORMAT_EXAMPLES,
    compile_check,
    ecma_pattern,
    validator_class,
)
from generator.runtime.server import ToolIndex


def sample(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A valid instance (mostly) of a schema of the supported subset."""
    if schema is True or not isinstance(schema, dict):
        return "anything"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        out = {}
        for name, sub in props.items():
            if name in required or rng.random() < 0.7:
                out[name] = sample(sub, rng, depth + 1)
        return out
    if kind == "array":
        n = max(schema.get("minItems", 0), rng.randint(0, 3))
        return [sample(schema.get("items", True), rng, depth + 1) for _ in range(n)]
    if kind == "integer":
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", lo + 100)
        return rng.randint(int(lo), int(hi))
    if kind == "number":
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", 1)
        return rng.uniform(lo, hi)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if schema.get("format") in FORMAT_EXAMPLES:
        return FORMAT_EXAMPLES[schema["format"]]
    n = max(schema.get("minLength", 0), 3)
    return "x" * min(n, schema.get("maxLength", n))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


REPLACEMENTS: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    10**9,
    "",
    "zz-not-in-enum",
    "2024-01-31T09:00:00",  # a date-time without an offset
    [],
    [1],
    {},
    {"unexpected": 1},
]


def mutations(instance: Any, rng: random.Random, count: int) -> Iterator[Any]:
    spots = list(paths(instance))
    for _ in range(count):
        mutant = copy.deepcopy(instance)
        where = rng.choice(spots)
        action = rng.random()
        if not where:
            yield rng.choice(REPLACEMENTS)
            continue
        parent: Any = mutant
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(REPLACEMENTS))
        elif action < 0.8 and isinstance(parent, dict):
            del parent[last]
        elif isinstance(parent, dict):
            parent["zz_extra"] = 1
        else:
            parent.append(copy.deepcopy(rng.choice(REPLACEMENTS)))
        yield mutant


def tool_schemas(gateway: c.GatewaySpec) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for tool in gateway.tools.values():
        out.append((tool.name + ":input", dict(tool.input_schema)))
        out.append((tool.name + ":output", dict(tool.output_schema)))
    return out


def test_every_default_schema_is_in_the_fast_subset(gateway: c.GatewaySpec) -> None:
    unsupported = [name for name, schema in tool_schemas(gateway) if compile_check(schema) is None]
    assert unsupported == []


def test_fast_check_agrees_with_jsonschema_on_every_tool_schema(gateway: c.GatewaySpec) -> None:
    rng = random.Random(20240611)
    compared = invalid = 0
    for name, schema in tool_schemas(gateway):
        check = compile_check(schema)
        assert check is not None, name
        reference = validator_class()(schema)
        for _ in range(10):
            base = sample(schema, rng)
            for instance in [base, *mutations(base, rng, 40)]:
                expected = reference.is_valid(instance)
                assert check(instance) is expected, (name, instance)
                compared += 1
                invalid += not expected
    assert compared > 5000 and invalid > 1000  # the mutations do produce invalid data


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "integer"}, [1, 2.0, -3], [True, 1.5, "1", None]),
        ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, [0, 0.5], [1, -0.1, False]),
        ({"type": ["string", "null"], "maxLength": 2}, [None, "ab", "ü"], ["abc", 1]),
        ({"enum": ["a", "b"]}, ["a"], ["c", None, 1]),
        ({"const": "x"}, ["x"], ["y"]),
        ({"pattern": "^C[0-9]+$"}, ["C12", 5], ["c12", "C", "C12\n"]),
        ({"pattern": "^C[$]|x$"}, ["C$1", "ax", "C$\n"], ["C", "ax\n"]),
        (
            {"type": "object", "required": ["a"], "additionalProperties": {"type": "integer"}},
            [{"a": 1}, {"a": 2, "b": 3}],
            [{}, {"a": "x"}, []],
        ),
        (
            {"properties": {"a": {"type": "string"}}, "additionalProperties": False},
            [{"a": "x"}, {}, "not an object"],
            [{"a": 1}, {"b": 1}],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
            [["a"], ["a", "b"]],
            [[], ["a", "b", "c"], [1]],
        ),
        ({"minProperties": 1, "maxProperties": 1}, [{"a": 1}, 3], [{}, {"a": 1, "b": 2}]),
        ({"type": "string", "e.g. slack.": None, "x-vendor": {}}, ["a"], [1]),  # ignored keys
        (
            {"type": ["string", "null"], "format": "date-time"},
            ["2024-01-31T09:00:00Z", None],
            ["2024-01-31T09:00:00", "2024-02-30T09:00:00Z", 5],
        ),
        ({"format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000", 5], ["123e4567"]),
        ({"type": "string", "format": "email"}, ["root@localhost", "x"], [1]),  # annotation
        ({"type": "string", "format": "phone"}, ["x"], []),  # unknown: an annotation
        (True, [1, None], []),
        (False, [], [1, None]),
    ],
)
def test_keywords(schema: Any, good: list[Any], bad: list[Any]) -> None:
    check = compile_check(schema)
    assert check is not None
    reference = validator_class()(schema)
    for value in good:
        assert reference.is_valid(value) and check(value), value
    for value in bad:
        assert not reference.is_valid(value) and not check(value), value


@pytest.mark.parametrize(
    "schema",
    [
        {"anyOf": [{"type": "string"}]},
        {"$ref": "#/$defs/x"},
        {"enum": [1, True]},
        {"const": 1},
        {"type": "decimal"},
        {"properties": {"a": {"oneOf": []}}},
        {"items": [{"type": "string"}]},
        {"multipleOf": 2},
        {"pattern": "("},
    ],
)
def test_anything_else_falls_back_to_jsonschema(schema: Any) -> None:
    assert compile_check(schema) is None


@pytest.mark.parametrize(
    "code",
    [
        {"type": "string", "pattern": "^[a-z]+$"},
        {"type": "string", "pattern": "^[a-z]+$", "not": {"const": "x"}},  # jsonschema alone
    ],
)
def test_a_patterns_end_anchor_refuses_a_trailing_newline(
    gateway: c.GatewaySpec, code: dict[str, Any]
) -> None:
    """JSON Schema's `$` (ECMA-262) is the end of the text, as in the generated models
    (pydantic-core's Rust regex); Python's `re.search` also matches it before a final newline,
    so the gateway accepted arguments the typed client refuses."""
    model = pydantic.TypeAdapter(
        Annotated[str, pydantic.StringConstraints(pattern=code["pattern"])]
    )
    with pytest.raises(pydantic.ValidationError):
        model.validate_python("abc\n")
    schema = {"type": "object", "properties": {"code": code}}
    tool = dataclasses.replace(next(iter(gateway.tools.values())), input_schema=schema)
    index = ToolIndex(dataclasses.replace(gateway, tools={tool.name: tool}))
    assert index.input_errors(tool, {"code": "abc"}) == []
    assert index.input_errors(tool, {"code": "abc\n"}) == [
        {"path": "/code", "message": '"abc\\n" does not match "^[a-z]+$"'}
    ]


@pytest.mark.parametrize(
    ("pattern", "translated"),
    [
        ("^[a-z]+$", r"^[a-z]+\Z"),
        (r"^a\$", r"^a\$"),  # an escaped dollar is a dollar
        ("^[$]x$", r"^[$]x\Z"),  # so is one in a class
        ("^[]$]$", r"^[]$]\Z"),  # `]` first in a class is part of it
        (r"^[^\]$]$", r"^[^\]$]\Z"),
        ("^(a$|b)", r"^(a\Z|b)"),
        ("(?m)^a$", "(?m)^a$"),  # MULTILINE: `$` ends every line, as the pattern asks
        ("(?m:^a$)|b$", "(?m:^a$)|b$"),  # ... or in the group that asks for it
        ("(?i:a)$", r"(?i:a)\Z"),  # another flag's group
        ("(?x) ^a  # [note\n $", "(?x) ^a  # [note\n $"),  # VERBOSE: comments are not read
    ],
)
def test_ecma_pattern_ends_only_at_the_end(pattern: str, translated: str) -> None:
    assert ecma_pattern(pattern) == translated


_NAMES = {"^[a-z]+$": {"type": "integer"}}


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        (
            {"patternProperties": _NAMES, "additionalProperties": False},
            {"path": "/tags", "message": '"abc\\n" does not match any of the regexes: "^[a-z]+$"'},
        ),
        (  # an additional property, so a string; not a matching one, an integer
            {"patternProperties": _NAMES, "additionalProperties": {"type": "string"}},
            {"path": "/tags/abc\n", "message": '1 is not of type "string"'},
        ),
        (
            {"patternProperties": _NAMES, "unevaluatedProperties": False},
            {
                "path": "/tags",
                "message": 'Unevaluated properties are not allowed ("abc\\n" was unexpected)',
            },
        ),
        (  # evaluated (or not) in a subschema
            {"allOf": [{"patternProperties": _NAMES}], "unevaluatedProperties": False},
            {
                "path": "/tags",
                "message": 'Unevaluated properties are not allowed ("abc\\n" was unexpected)',
            },
        ),
    ],
)
def test_a_pattern_property_names_end_anchor_refuses_a_trailing_newline(
    gateway: c.GatewaySpec, tags: dict[str, Any], error: dict[str, str]
) -> None:
    """A patternProperties key is a pattern too: jsonschema matched it with Python's `$`, so a
    name "abc\\n" matched `^[a-z]+$` and passed `additionalProperties: false` (and
    `unevaluatedProperties: false`) into the connector. The gateway falls back from its fast
    check to the validator for these schemas, which now reads the key as JSON Schema does."""
    schema = {"type": "object", "properties": {"tags": {"type": "object", **tags}}}
    assert compile_check(schema) is None  # the fast path leaves patternProperties to jsonschema
    tool = dataclasses.replace(next(iter(gateway.tools.values())), input_schema=schema)
    index = ToolIndex(dataclasses.replace(gateway, tools={tool.name: tool}))
    assert index.input_errors(tool, {"tags": {"abc": 1, "xyz": 2}}) == []
    assert index.input_errors(tool, {"tags": {"abc\n": 1}}) == [error]


_PATTERN_SCHEMAS = [
    {"patternProperties": _NAMES, "additionalProperties": False},
    {"patternProperties": _NAMES, "additionalProperties": {"type": "string"}},
    {"patternProperties": {"^a": True, "b$": {"type": "string"}}, "additionalProperties": False},
    {"properties": {"X": True}, "patternProperties": _NAMES, "unevaluatedProperties": False},
    {"allOf": [{"patternProperties": _NAMES}], "unevaluatedProperties": {"type": "string"}},
    {
        "$defs": {"p": {"patternProperties": _NAMES}},
        "$ref": "#/$defs/p",
        "unevaluatedProperties": False,
    },
    {
        "properties": {"x": True},
        "if": {"required": ["x"]},
        "then": {"patternProperties": {"^y": True}},
        "else": {"additionalProperties": {"type": "integer"}},
        "unevaluatedProperties": False,
    },
    {
        "properties": {"x": True},
        "dependentSchemas": {"x": {"properties": {"y": True}}},
        "anyOf": [{"patternProperties": {"^z": True}}, True],
        "oneOf": [{"properties": {"q": {"type": "string"}}}],
        "unevaluatedProperties": False,
    },
]
_PATTERN_INSTANCES = [
    {},
    {"abc": 1},
    {"abc": "s", "X": 1},
    {"ABC": 1, "Q": "s"},
    {"x": 1, "y": 2, "yz": 3},
    {"y": 1, "zz": 2, "q": "s"},
    {"b": "s", "ab": 1, "a": 2},
    "not an object",
]


@pytest.mark.parametrize("schema", _PATTERN_SCHEMAS)
def test_property_keywords_agree_with_jsonschema_on_names_without_a_newline(
    schema: dict[str, Any],
) -> None:
    """patternProperties, additionalProperties and unevaluatedProperties are jsonschema's own
    functions with patterns read by `ecma_regex`: on names that hold no newline, where the two
    readings of `$` agree, they say what jsonschema says, with the same messages."""
    from jsonschema import Draft202012Validator

    ours, reference = validator_class()(schema), Draft202012Validator(schema)
    for instance in _PATTERN_INSTANCES:
        got = sorted((list(e.absolute_path), e.message) for e in ours.iter_errors(instance))
        expected = sorted(
            (list(e.absolute_path), e.message) for e in reference.iter_errors(instance)
        )
        assert got == expected, instance
