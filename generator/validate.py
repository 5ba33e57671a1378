"""Stage 2, validate: each loaded manifest against the published JSON Schema.

Every violation becomes a located diagnostic: the instance path of a jsonschema error is looked
up in the document's source map, so the user sees `file:line:col` of the offending value (or of
the offending key, for unknown properties).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from .diagnostics import Diagnostic, did_you_mean, error, listed, printable, shortened
from .load import Loaded
from .runtime.fastschema import additional_properties, json_type, validator_class
from .runtime.templating import PLACEHOLDER

SCHEMA_PATH = Path(__file__).parent / "schema" / "manifest.v1.schema.json"

_KEYWORD_CODES = {
    "required": "GEN101",
    "additionalProperties": "GEN102",
    "unevaluatedProperties": "GEN102",
    "type": "GEN103",
    "enum": "GEN104",
    "const": "GEN104",
    "propertyNames": "GEN105",
    "pattern": "GEN105",
    "format": "GEN105",
    "minimum": "GEN106",
    "maximum": "GEN106",
    "exclusiveMinimum": "GEN106",
    "exclusiveMaximum": "GEN106",
    "minLength": "GEN106",
    "maxLength": "GEN106",
    "minItems": "GEN106",
    "maxItems": "GEN106",
    "minProperties": "GEN106",
    "uniqueItems": "GEN106",
}


# Booleans in YAML 1.1 (PyYAML's default), text in YAML 1.2, which the loader follows.
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})
# YAML 1.1's resolver, which also read `1:30` (90), `1_000` and `0b101` as numbers; text in 1.2
_YAML11 = yaml.resolver.Resolver()
_YAML11_NUMBERS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def _yaml11_number(text: str) -> bool:
    return _YAML11.resolve(yaml.ScalarNode, text, (True, False)) in _YAML11_NUMBERS


@functools.cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def manifest_kinds() -> frozenset[str]:
    """The values of a manifest's `kind`."""
    return frozenset(manifest_schema()["properties"]["kind"]["enum"])


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = manifest_schema()
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator
    # `pattern` as JSON Schema means it: `^[0-9.]+$` refuses a version "0.1.0\n"
    cls = validator_class()
    # JSON Schema counts 1.0 as an integer; a manifest's counts, limits and `version: 1` are
    # written as YAML integers, and a float there would reach the generated code as `1.0`.
    strict = cls.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    # `format` is an annotation here, as in Draft 2020-12 (`validator_class` asserts the formats
    # of tool schemas): the manifest schema's one format, a sunset's `date`, has its pattern,
    # and asserting it would load pydantic into every build of a manifest with a sunset.
    annotation = {"format": jsonschema.Draft202012Validator.VALIDATORS["format"]}
    return jsonschema.validators.extend(cls, annotation, type_checker=strict)(schema)


def validate_one(doc: Loaded) -> list[Diagnostic]:
    found = [
        d for err in _leaf_errors(_validator().iter_errors(doc.data)) for d in _convert(doc, err)
    ]
    refused = {d.span for d in found}  # a value the schema refused is not reported again
    return found + [d for d in control_characters(doc) if d.span not in refused]


# C0 controls but tab and line feed, DEL and the C1 controls. The loader refuses them raw in
# the file (GEN002), but a double-quoted scalar writes any as an escape ("\0", "\e", "\x85"):
# in a title or a description they reached README.md, TOOLS.md, docstrings and the terminal
# as they are (a NUL made git read the files as binary, ESC sequences recoloured or retitled
# the terminal). A carriage return too: YAML turns the line breaks of the text into line
# feeds, so one is only ever an escape, and it moves a terminal's cursor back over the line.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# DEL and the C1 controls, which JSON text keeps as they are.
_ABOVE_ASCII_CONTROL = re.compile(r"[\x7f-\x9f]")
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x0D: "CR", 0x1B: "ESC", 0x7F: "DEL"}


def control_characters(doc: Loaded) -> list[Diagnostic]:
    """GEN108 at each key and string value of `doc` that holds a control character other than
    tab and line feed: manifest text reaches generated files, JSON, docstrings and terminals,
    and none of them should carry one. A JSON Schema `pattern` matches one with a regular
    expression escape (`\\x1b`, a backslash and text), which is allowed."""
    try:  # one pass of the C encoder finds most documents clean (it escapes C0 controls)
        text = json.dumps(doc.data, ensure_ascii=False)
    except (TypeError, ValueError):
        text = None
    # JSON writes a C0 control as an escape: \u00XX, or \r, \b, \f (tab and line feed are \t and
    # \n). A backslash before such text is written \\ and matches too: that costs only the walk.
    if text is not None and not (
        "\\u00" in text
        or "\\r" in text
        or "\\b" in text
        or "\\f" in text
        or _ABOVE_ASCII_CONTROL.search(text)
    ):
        return []
    found: list[Diagnostic] = []

    def check(text: str, path: tuple[str | int, ...], key: bool) -> None:
        chars = sorted(set(_CONTROL.findall(text)))
        if not chars:
            return
        shown = ", ".join(
            printable(c) + (f" ({_CONTROL_NAMES[ord(c)]})" if ord(c) in _CONTROL_NAMES else "")
            for c in chars
        )
        where = "/".join(str(p) for p in path) or "manifest root"
        what = "name" if key else "text"
        found.append(
            error(
                "GEN108",
                doc.key_span(path) if key else doc.span(path),
                f"{where}: the {what} {shortened(text)!r} holds the control "
                f"character{'s' if len(chars) > 1 else ''} {shown}",
                f"remove {'them' if len(chars) > 1 else 'it'}: manifest text may hold tabs and "
                "line breaks, no other control character (a pattern matches one with an escape "
                "such as \\x1b)",
            )
        )

    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc.data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            check(node, path, key=False)
        elif isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str):
                    check(k, (*path, k), key=True)
                stack.append((v, (*path, k)))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return found


def _leaf_errors(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Replace combinator errors (allOf/oneOf/if-then) by the specific errors inside them."""
    for err in errors:
        if err.validator in {"allOf", "anyOf", "oneOf", "if", "then", "$ref"} and err.context:
            # oneOf/anyOf: the branch that got furthest explains the problem best
            if err.validator in {"oneOf", "anyOf"}:
                yield err
            else:
                yield from _leaf_errors(err.context)
        else:
            yield err


def _convert(doc: Loaded, err: ValidationError) -> list[Diagnostic]:
    path = tuple(err.absolute_path)
    keyword = str(err.validator)
    code = _KEYWORD_CODES.get(keyword, "GEN107")
    where = "/".join(str(p) for p in path) or "manifest root"

    if "propertyNames" in err.absolute_schema_path and isinstance(err.instance, str):
        return [
            error(
                code,
                doc.key_span((*path, err.instance)),
                f"{where}: invalid name {err.instance!r}: {_pattern_rule(err) or err.message}",
            )
        ]
    rule = _pattern_rule(err)
    if rule is not None:
        return [error(code, doc.span(path), f"{where}: invalid value {err.instance!r}: {rule}")]
    if keyword in {"additionalProperties", "unevaluatedProperties"}:
        extras = _extra_properties(err)
        allowed = _allowed_properties(err.schema)
        out = []
        for name in extras:
            hint = did_you_mean(name, allowed)
            if hint is None and allowed:
                hint = "allowed here: " + ", ".join(sorted(allowed))
            out.append(
                error(
                    code, doc.key_span((*path, name)), f"unknown property {name!r} in {where}", hint
                )
            )
        return out
    if keyword == "required":
        given = err.instance if isinstance(err.instance, dict) else {}
        missing = [k for k in err.validator_value if k not in given][:1] or ["?"]
        return [
            error(
                code,
                doc.key_span(path) if path else doc.span(path),
                f"{where} is missing required property {missing[0]!r}",
            )
        ]
    if keyword in {"enum", "const"}:
        options = err.validator_value if keyword == "enum" else [err.validator_value]
        shown = ", ".join(json.dumps(o) for o in options)
        hint = None
        if isinstance(err.instance, str):
            hint = did_you_mean(err.instance, [str(o) for o in options])
        return [
            error(
                code,
                doc.span(path),
                f"{where}: {json.dumps(err.instance)} is not one of {shown}",
                hint,
            )
        ]
    if keyword == "type":
        expected = err.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        hint = None
        if (
            "boolean" in expected
            and isinstance(err.instance, str)
            and err.instance.lower() in _YAML11_BOOLS
        ):
            hint = f"manifests are YAML 1.2: write true or false ({err.instance} is text)"
        elif (
            ("integer" in expected or "number" in expected)
            and isinstance(err.instance, str)
            and _yaml11_number(err.instance)
        ):
            hint = f"manifests are YAML 1.2: write a decimal number ({err.instance} is text)"
        elif "string" in expected and (unquoted := _unquoted_placeholder(err.instance)):
            hint = (
                f"unquoted, YAML reads {unquoted} as the mapping {{{unquoted[1:-1]}: null}}: "
                f'quote it, "{unquoted}"'
            )
        return [
            error(
                code,
                doc.span(path),
                f"{where}: expected {expected_text}, got {json_type(err.instance)}",
                hint,
            )
        ]
    if keyword == "propertyNames":
        # the error sits on the object; point at the key that failed
        bad = err.instance if isinstance(err.instance, str) else None
        span = doc.key_span((*path, bad)) if bad else doc.span(path)
        return [error(code, span, f"{where}: invalid name: {err.message}")]
    if keyword in {"minProperties", "maxProperties"}:
        choice = _exactly_one(err)
        if choice is not None:
            return [error(code, doc.span(path), f"{where}: {choice}")]
    if keyword == "oneOf" and path and isinstance(err.instance, dict):
        return [error(code, doc.span(path), f"{where}: {_one_of_message(err)}")]
    return [error(code, doc.span(path), f"{where}: {err.message}")]


def _unquoted_placeholder(instance: Any) -> str | None:
    """`{name}` when `instance` is what YAML's flow style makes of it unquoted: the one-key
    mapping `{name: null}` (the same for `{name|filter}`)."""
    if isinstance(instance, dict) and len(instance) == 1:
        ((key, value),) = instance.items()
        if value is None and PLACEHOLDER.fullmatch(f"{{{key}}}"):
            return f"{{{key}}}"
    return None


def _pattern_rule(err: ValidationError) -> str | None:
    """What a `pattern` in the manifest schema asks for, in words: the schema keeps it beside the
    pattern as `patternErrorMessage` (the keyword VS Code's and Red Hat's YAML language servers
    show for a failed pattern, so an editor says the same), not the regular expression."""
    if err.validator != "pattern" or not isinstance(err.schema, dict):
        return None
    rule = err.schema.get("patternErrorMessage")
    return rule if isinstance(rule, str) else None


def _exactly_one(err: ValidationError) -> str | None:
    """An object that takes exactly one of its properties (`minProperties` and `maxProperties`
    1), in words: jsonschema says "{...} has too many properties" or "{} should be non-empty"."""
    schema, given = err.schema, err.instance
    if not (
        isinstance(schema, dict)
        and schema.get("minProperties") == 1
        and schema.get("maxProperties") == 1
        and isinstance(schema.get("properties"), dict)
        and isinstance(given, dict)
    ):
        return None
    names = list(schema["properties"])
    if not names:
        return None
    text = "declare exactly one of " + listed(names, "or")
    found = [str(k) for k in given]
    return text + f", not {listed(found)}" if len(found) > 1 else text


def _one_of_message(err: ValidationError) -> str:
    required = [
        v for sub in err.validator_value if isinstance(sub, dict) for v in sub.get("required", [])
    ]
    if required:
        return "exactly one of " + ", ".join(repr(r) for r in required) + " is required"
    return err.message


def _extra_properties(err: ValidationError) -> list[str]:
    """The keys an additionalProperties error is about, in the document's order (read from the
    instance and the schema: jsonschema's message quotes them with repr, which no pattern can
    take apart once a key holds a quote)."""
    if not isinstance(err.instance, dict) or not isinstance(err.schema, dict):
        return []
    return additional_properties(err.instance, err.schema)  # the validator's own reading


def _allowed_properties(schema: Any) -> list[str]:
    names: set[str] = set()

    def walk(s: Any) -> None:
        if not isinstance(s, dict):
            return
        names.update(k for k, v in s.get("properties", {}).items() if v is not True)
        for sub in s.get("allOf", []):
            walk(_resolve(sub))

    walk(schema)
    return sorted(names)


def _resolve(s: Any) -> Any:
    if isinstance(s, dict) and "$ref" in s and s["$ref"].startswith("#/$defs/"):
        return manifest_schema()["$defs"][s["$ref"].split("/")[-1]]
    return s
