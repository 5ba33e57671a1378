"""A fast yes/no check for the JSON Schema subset tool schemas use, with jsonschema behind it.

`jsonschema` walks a schema anew for every instance; for a list of a few records with nested
objects that costs a few hundred microseconds, more than the rest of a connector call. This
module compiles a schema once into nested closures that answer "valid?" only. It covers the
keywords manifests use (type, properties, required, additionalProperties, items, enum/const of
strings, numeric and length bounds, pattern, min/maxItems, min/maxProperties, and the formats
the generated models type (`TYPED_FORMATS`); annotations such as description, default and any
other format are ignored, as Draft 2020-12 does by default).

`compile_check()` returns None for any schema with another assertion or applicator keyword
(anyOf, $ref, uniqueItems, ...): callers then use jsonschema alone. Unknown keywords are
ignored, as jsonschema ignores them. When the check says "invalid", callers ask jsonschema for
the error to report, so error details always come from the reference implementation; the fast
path only ever decides "valid", and it accepts nothing jsonschema's Draft 2020-12 validator
rejects (the tests compare both on every schema of the default manifests and on mutated
instances). Both read patterns as JSON Schema does (`validator_class`, `ecma_pattern`), and
both assert the typed formats with one function (`format_check`).
"""

# Schemas and instances are JSON values (Any), and isinstance() narrows them to list[Unknown]
# or dict[Unknown, Unknown], which pyright's strict mode reports at every later use. mypy
# --strict holds the annotations; a cast per narrowing, inside checks that run on every call,
# would cost time and say nothing more.
# pyright: reportUnknownArgumentType=false
# pyright: reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # jsonschema is imported when a validator is first made (load does not need it)
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator

Check = Callable[[Any], bool]

# Keywords of Draft 2020-12 (and older drafts) that constrain instances but are not compiled
# here: a schema using any of them is left to jsonschema. Every other keyword the fast check
# does not know is an annotation or unknown, and, as in Draft 2020-12, ignored.
_UNSUPPORTED: Final = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "prefixItems",
        "additionalItems",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "patternProperties",
        "propertyNames",
        "dependentSchemas",
        "dependentRequired",
        "dependencies",
        "multipleOf",
        "contentSchema",
    }
)


class _Unsupported(Exception):
    pass


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value (`true` is a boolean, not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


# The largest magnitude up to which every whole float is exactly an integer (2**53).
_EXACT: Final = float(2**53)


def whole_numbers(value: Any) -> Any:
    """`value` (validated arguments) with every float that is a whole number within 2**53
    written as an int, at any depth. JSON Schema counts 5.0 and 1e2 as integers, so they pass
    an `integer`, but templates wrote them as `5.0` and `100.0`: a path `/customers/5.0.json`,
    a query `per_page=30.0` (whose page size paging could not read back), and a memory tool
    refused `top_k: 5.0` though the schema had accepted it. The same number either way."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT else value
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


_TYPES: Final[dict[str, Check]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


# A lone UTF-16 surrogate: Python strings may hold one (the stdlib JSON parser decodes
# "\\ud800" into it), but no UTF-8 text can, so it would fail in every encoder downstream.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# Integers beyond a double's range are not portable JSON, and past about 4,300 digits Python
# will not even print them (an error message included).
MAX_INTEGER_BITS: Final = 1024


def has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def unencodable(value: Any) -> tuple[list[str | int], str] | None:
    """The path to the first part of a JSON value that is not text or a portable number (a
    string or key holding a lone surrogate, an integer too large), and what is wrong with it;
    None when there is none. Iterative: the value may be nested deeper than Python recurses."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if has_surrogate(v):
                return path, "contains a lone UTF-16 surrogate, which is not valid text"
        elif isinstance(v, dict):
            for k, item in v.items():
                if isinstance(k, str) and has_surrogate(k):
                    return path, "has a key holding a lone UTF-16 surrogate"
                stack.append((item, [*path, k]))
        elif isinstance(v, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(v))
        elif type(v) is int and v.bit_length() > MAX_INTEGER_BITS:
            return path, f"is a number too large (more than {MAX_INTEGER_BITS} bits)"
    return None


def compile_check(schema: Any) -> Check | None:
    """A function instance -> bool, or None when the schema uses an unsupported keyword."""
    try:
        return _compile(schema)
    except _Unsupported:
        return None


def _strings(values: Any) -> frozenset[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise _Unsupported  # enum/const of other JSON types: leave equality rules to jsonschema
    return frozenset(values)


def _number(value: Any) -> float | int:
    if not _is_number(value):
        raise _Unsupported
    return value  # type: ignore[no-any-return]


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Unsupported
    return value


def _compile(schema: Any) -> Check:
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, Mapping):
        raise _Unsupported
    if not _UNSUPPORTED.isdisjoint(schema):
        raise _Unsupported
    checks: list[Check] = []

    if "type" in schema:
        kind = schema["type"]
        names = [kind] if isinstance(kind, str) else kind
        if not isinstance(names, list | tuple) or not names:
            raise _Unsupported
        try:
            tests = tuple(_TYPES[name] for name in names)
        except (KeyError, TypeError):
            raise _Unsupported from None
        if len(tests) == 1:
            checks.append(tests[0])
        else:
            checks.append(lambda v, tests=tests: any(t(v) for t in tests))  # type: ignore[misc]

    if "enum" in schema:
        allowed = _strings(schema["enum"])
        checks.append(lambda v: isinstance(v, str) and v in allowed)
    if "const" in schema:
        if not isinstance(schema["const"], str):
            raise _Unsupported
        const = schema["const"]
        checks.append(lambda v: isinstance(v, str) and v == const)

    checks.extend(_number_checks(schema))
    checks.extend(_string_checks(schema))
    checks.extend(_array_checks(schema))
    checks.extend(_object_checks(schema))

    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)
    return lambda v: all(c(v) for c in frozen)


def _number_checks(schema: Mapping[str, Any]) -> list[Check]:
    out: list[Check] = []
    if "minimum" in schema:
        lo = _number(schema["minimum"])
        out.append(lambda v: not _is_number(v) or v >= lo)
    if "maximum" in schema:
        hi = _number(schema["maximum"])
        out.append(lambda v: not _is_number(v) or v <= hi)
    if "exclusiveMinimum" in schema:
        xlo = _number(schema["exclusiveMinimum"])
        out.append(lambda v: not _is_number(v) or v > xlo)
    if "exclusiveMaximum" in schema:
        xhi = _number(schema["exclusiveMaximum"])
        out.append(lambda v: not _is_number(v) or v < xhi)
    return out


# A group that turns MULTILINE on for its own part (`(?m:^a$)`), where `$` ends every line.
_SCOPED_MULTILINE: Final = re.compile(r"\(\?[aiLsux]*m[aiLmsux]*(?:-[imsx]*)?:")


def ecma_pattern(pattern: str) -> str:
    """`pattern` for Python's `re` with `$` meaning what it means in JSON Schema (ECMA-262
    without the `m` flag, as in Pydantic's Rust regex, which the generated models use): the end
    of the text. Python's `$` also matches before a final newline, so `^[a-z]+$` accepted
    "abc\\n". `$` becomes `\\Z` outside escapes and character classes; a pattern that turns on
    MULTILINE inline (`(?m)`, or `(?m:...)` for a part), where `$` ends every line, is left as
    it is, and so is a VERBOSE one (`(?x)`), whose comments this reading does not skip."""
    if "$" not in pattern or re.compile(pattern).flags & (re.MULTILINE | re.VERBOSE):
        return pattern
    if _SCOPED_MULTILINE.search(pattern):
        return pattern
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"  # a `]` first in a class is a literal for `re`
            out.append(pattern[i:j])
            i, in_class = j, True
            continue
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled with JSON Schema's `$` (see `ecma_pattern`); raises `re.error`."""
    return re.compile(ecma_pattern(pattern))


def _pattern_keyword(
    validator: Validator, pattern: Any, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if (
        isinstance(pattern, str)
        and isinstance(instance, str)
        and not ecma_regex(pattern).search(instance)
    ):
        from jsonschema import ValidationError

        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def additional_properties(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The keys of `instance` that `schema`'s `additionalProperties` applies to, in the
    instance's order: neither in `properties` nor matched by a `patternProperties` key, read
    as JSON Schema reads it (`ecma_regex`: jsonschema's own reading matched "abc\\n" to
    `^[a-z]+$`, so `additionalProperties: false` let that name through)."""
    properties = schema.get("properties", {})
    regexes = [ecma_regex(p) for p in schema.get("patternProperties", {})]
    return [k for k in instance if k not in properties and not any(r.search(k) for r in regexes)]


def _quoted(keys: Iterable[str]) -> tuple[str, str]:
    keys = list(keys)
    return ", ".join(repr(k) for k in keys), "was" if len(keys) == 1 else "were"


# The keyword functions below take jsonschema's own validator class, whose `descend` and
# `_resolver` (what jsonschema's keywords use to go into subschemas and follow `$ref`) the
# Validator protocol does not declare. Each is jsonschema 4's function of the same name with
# every patternProperties key read by `ecma_regex`, and keys visited in the instance's order.


def _pattern_properties_keyword(
    validator: Any, patterns: Any, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = ecma_regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_keyword(
    validator: Any, extra: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = additional_properties(instance, schema)
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif extra is False and extras:
        from jsonschema import ValidationError

        if "patternProperties" in schema:
            joined = ", ".join(repr(k) for k in sorted(extras))
            verb = "does" if len(extras) == 1 else "do"
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            names, verb = _quoted(sorted(extras))
            yield ValidationError(
                f"Additional properties are not allowed ({names} {verb} unexpected)"
            )


def _unevaluated_properties_keyword(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    refused = [
        key
        for key in instance
        if key not in evaluated
        and next(validator.descend(instance[key], unevaluated, path=key, schema_path=key), None)
        is not None
    ]
    if refused:
        from jsonschema import ValidationError

        if unevaluated is False:
            names, verb = _quoted(sorted(refused))
            yield ValidationError(
                f"Unevaluated properties are not allowed ({names} {verb} unexpected)"
            )
        else:
            names, verb = _quoted(refused)
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({names} {verb} unevaluated and invalid)"
            )


def _evaluated_keys(validator: Any, instance: Any, schema: Any) -> set[str]:
    """The keys of `instance` that `schema` evaluates (for `unevaluatedProperties`): jsonschema's
    `find_evaluated_property_keys_by_schema`, with `patternProperties` read by `ecma_regex`."""
    if not isinstance(schema, Mapping):
        return set()
    keys: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)  # noqa: SLF001 - as jsonschema's keywords
            inner = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys |= _evaluated_keys(inner, instance, resolved.contents)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        keys.update(k for k in properties if k in instance)
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        sub = schema.get(keyword)
        if sub is not None:
            keys.update(
                k for k, v in instance.items() if next(validator.descend(v, sub), None) is None
            )
    regexes = [ecma_regex(p) for p in schema.get("patternProperties", {})]
    keys.update(k for k in instance if any(r.search(k) for r in regexes))
    for name, sub in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys |= _evaluated_keys(validator, instance, sub)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if next(validator.descend(instance, sub), None) is None:
                keys |= _evaluated_keys(validator, instance, sub)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


# The string formats the generated models type as a class rather than `str`, by the class's
# name there (the build types every other format as its plain JSON type: compile.for_models). JSON
# Schema 2020-12 leaves `format` an annotation; the gateway asserts these, so that what it lets
# through always parses in the typed client (a result of the upstream's with a date-time
# without an offset, which pydantic's AwareDatetime refuses, is the upstream's invalid
# response, not the caller's) and what the typed client sends always passes (a datetime is sent
# as RFC 3339 with an offset).
TYPED_FORMATS: Final = {
    "date-time": "datetime",
    "date": "date",
    "uuid": "UUID",
    "ipv4": "IPv4Address",
    "ipv6": "IPv6Address",
}

# A value of each typed format, for messages: what the gateway wants instead of what it refused.
FORMAT_EXAMPLES: Final = {
    "date-time": "2024-01-31T09:00:00Z",
    "date": "2024-01-31",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}

# Each typed format's syntax: RFC 3339's date-time (with its offset, which may also be written
# without its colon, +0000, as Jira, Salesforce and other Java services write it, and as ISO 8601
# and the models read it), full-date, RFC 4122's hyphenated UUID, RFC 2673's dotted quad, and
# RFC 4291's address text without a zone (`fe80::1%eth0`) as jsonschema reads ipv6. ASCII
# digits only (`[0-9]`, not `\d`). (`time` is not typed: the models' `time` takes a time without
# an offset, which RFC 3339's full-time has, and no pydantic type requires one.)
_SYNTAX: Final = {
    "date-time": "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.][0-9]+)?"
    "(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})",
    "date": "[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "uuid": "[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}",
    "ipv4": "[0-9]{1,3}(?:[.][0-9]{1,3}){3}",
    "ipv6": "[0-9A-Fa-f:.]+",
}


@functools.cache
def format_check(fmt: str) -> Callable[[str], bool]:
    """Whether a string has the typed format `fmt` (a key of `TYPED_FORMATS`): the format's
    JSON Schema syntax, and the generated models' own type parses it, which is what decides
    the value ranges (no 2024-02-30, no leap second 23:59:60, no offset +01:60 though Python's
    `fromisoformat` takes one, octets up to 255 with no leading zero). A string with that
    syntax is never one of pydantic's laxer readings (a Unix time, a space for the `T`)."""
    import datetime
    import ipaddress
    import uuid

    from pydantic import AwareDatetime, TypeAdapter, ValidationError

    types: dict[str, Any] = {
        "date-time": AwareDatetime,
        "date": datetime.date,
        "uuid": uuid.UUID,
        "ipv4": ipaddress.IPv4Address,
        "ipv6": ipaddress.IPv6Address,
    }
    syntax = re.compile(_SYNTAX[fmt])
    parse = TypeAdapter[Any](types[fmt]).validate_python

    def check(value: str) -> bool:
        if syntax.fullmatch(value) is None:
            return False
        try:
            parse(value)
        except ValidationError:
            return False
        return True

    return check


# What each typed format wants, for the message refusing an argument, beside its example.
_FORMAT_WANTED: Final = {
    "date-time": "an RFC 3339 date-time with its offset",
    "date": "a date",
    "uuid": "a UUID",
    "ipv4": "an IPv4 address",
    "ipv6": "an IPv6 address",
}
_QUOTED_LIMIT: Final = 80  # characters of a value quoted in a message


def _as_json(value: Any, limit: int = _QUOTED_LIMIT) -> str:
    """`value` as JSON writes it (null, true, {"a": 1}), cut to `limit` characters."""
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not decoded JSON: never so for tool arguments
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def argument_message(error: ValidationError) -> str:
    """Why an argument is refused, with values written as the caller wrote them, in JSON:
    jsonschema's own messages quote Python (`None is not of type 'string'` for a null, `True`,
    `{'a': 1}`), and a long value whole. A typed format says what it wants, with an example."""
    rule, limit, value = str(error.validator), error.validator_value, error.instance
    shown = _as_json(value)
    if rule == "type":
        expected = limit if isinstance(limit, list) else [limit]
        return f"{shown} is not of type {' or '.join(_as_json(t) for t in expected)}"
    if rule == "enum":
        return f"{shown} is not one of {_as_json(limit, 2 * _QUOTED_LIMIT)}"
    if rule == "const":
        return f"{shown} is not {_as_json(limit)}"
    if rule == "required" and isinstance(limit, list) and isinstance(value, dict):
        # one error per missing name, which only the message tells apart
        for name in limit:
            if name not in value and error.message == f"{name!r} is a required property":
                return f"{_as_json(name)} is a required property"
    if rule in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        # the keywords' own messages (above) quote property names and patterns with repr
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        patterns = schema.get("patternProperties")
        names = [*value, *(patterns if isinstance(patterns, Mapping) else ())]
        message = str(error.message)
        for name in sorted({str(n) for n in names}, key=lambda n: -len(repr(n))):
            message = message.replace(repr(name), _as_json(name))
        return message
    if rule == "pattern":
        return f"{shown} does not match {_as_json(limit)}"
    if rule == "format" and isinstance(limit, str) and limit in FORMAT_EXAMPLES:
        return (
            f"{shown} is not a {_as_json(limit)}: write {_FORMAT_WANTED[limit]}, "
            f"such as {FORMAT_EXAMPLES[limit]}"
        )
    message = str(error.message)
    quoted = repr(value)
    return shown + message[len(quoted) :] if message.startswith(quoted) else message


def _format_keyword(
    _validator: Validator, fmt: Any, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if (
        isinstance(instance, str)
        and isinstance(fmt, str)
        and fmt in TYPED_FORMATS
        and not format_check(fmt)(instance)
    ):
        from jsonschema import ValidationError

        yield ValidationError(f"{instance!r} is not a {fmt!r}")


@functools.cache
def validator_class() -> type[Validator]:
    """Draft 2020-12 with patterns as JSON Schema means them (see `ecma_pattern`): `pattern`,
    the keys of `patternProperties`, and through them which properties `additionalProperties`
    and `unevaluatedProperties` apply to; and the formats the models type asserted
    (`TYPED_FORMATS`, whatever `format_checker` is given). Every validator of tool arguments
    and results, defaults, examples and the manifest schema is one of these, so that all agree
    with the generated models on what a pattern accepts, and those of tool schemas on what a
    typed format does (the manifest schema's leaves `format` an annotation)."""
    from jsonschema import Draft202012Validator, validators

    cls: type[Validator] = validators.extend(
        Draft202012Validator,
        {
            "pattern": _pattern_keyword,
            "patternProperties": _pattern_properties_keyword,
            "additionalProperties": _additional_properties_keyword,
            "unevaluatedProperties": _unevaluated_properties_keyword,
            "format": _format_keyword,
        },
    )
    return cls


def _string_checks(schema: Mapping[str, Any]) -> list[Check]:
    out: list[Check] = []
    if "minLength" in schema:
        min_len = _count(schema["minLength"])
        out.append(lambda v: not isinstance(v, str) or len(v) >= min_len)
    if "maxLength" in schema:
        max_len = _count(schema["maxLength"])
        out.append(lambda v: not isinstance(v, str) or len(v) <= max_len)
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise _Unsupported
        try:
            regex = ecma_regex(schema["pattern"])
        except re.error:
            raise _Unsupported from None
        out.append(lambda v: not isinstance(v, str) or regex.search(v) is not None)
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in TYPED_FORMATS:
        has_format = format_check(fmt)
        out.append(lambda v: not isinstance(v, str) or has_format(v))
    return out


def _array_checks(schema: Mapping[str, Any]) -> list[Check]:
    out: list[Check] = []
    if "items" in schema:
        item = _compile(schema["items"])
        out.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    if "minItems" in schema:
        min_items = _count(schema["minItems"])
        out.append(lambda v: not isinstance(v, list) or len(v) >= min_items)
    if "maxItems" in schema:
        max_items = _count(schema["maxItems"])
        out.append(lambda v: not isinstance(v, list) or len(v) <= max_items)
    return out


def _object_checks(schema: Mapping[str, Any]) -> list[Check]:
    out: list[Check] = []
    props_raw = schema.get("properties", {})
    if not isinstance(props_raw, Mapping):
        raise _Unsupported
    props = tuple((name, _compile(sub)) for name, sub in props_raw.items())
    if props:

        def properties(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for name, check in props:  # noqa: SIM110 - a plain loop is the fastest form here
                if name in v and not check(v[name]):
                    return False
            return True

        out.append(properties)
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list | tuple) or not all(isinstance(r, str) for r in required):
            raise _Unsupported
        needed = tuple(required)
        if needed:
            out.append(lambda v: not isinstance(v, dict) or all(r in v for r in needed))
    if "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        # `properties` alone says which keys are additional: a schema with patternProperties,
        # which also does, is left to `validator_class` (it is in _UNSUPPORTED).
        known = frozenset(props_raw)
        if extra is False:
            out.append(lambda v: not isinstance(v, dict) or known.issuperset(v))
        elif extra is not True:
            check_extra = _compile(extra)
            out.append(
                lambda v: (
                    not isinstance(v, dict)
                    or all(check_extra(x) for k, x in v.items() if k not in known)
                )
            )
    if "minProperties" in schema:
        min_props = _count(schema["minProperties"])
        out.append(lambda v: not isinstance(v, dict) or len(v) >= min_props)
    if "maxProperties" in schema:
        max_props = _count(schema["maxProperties"])
        out.append(lambda v: not isinstance(v, dict) or len(v) <= max_props)
    return out
