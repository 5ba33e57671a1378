"""A tool's input `default`s, applied to its validated arguments at every depth.

`compile_defaults(schema)` reads a tool's input schema once and returns a `Defaults` (or None
when no default can apply) whose `apply(arguments)` gives the arguments with each default
filled in where its property is absent: a top-level argument left out, and a property left out
of an object that is present, at any depth, inside a nested object, a map's values
(`additionalProperties`, `patternProperties`) or the items of a list (`items`,
`prefixItems`). A default is filled in as given and then gets the defaults inside it too.
Without this a nested default was shown to the model (tools/list, the typed client's field
default) yet never sent, and the upstream applied its own: Zendesk's `comment.public`, which
is true, for a comment the caller's schema said would be internal.

What it follows: `$ref` and `$dynamicRef` (a tool's schema is a whole document, so both resolve
in it: `#/$defs/Name` or an anchor), and `allOf`, whose branches all apply; where two of them
give one property different defaults, the first in document order wins. What it leaves alone:
`anyOf`, `oneOf`, `if`/`then`/`else`, `dependentSchemas` and `not`. Which of their branches
holds for a value depends on the value itself, possibly on the very property a default would
add, and a default of a branch the value does not match could make it match another, or none
(a valid call made invalid after validation); so no default inside them is applied.

The work per call is a walk over the parts of the arguments a default can reach: a schema
without defaults costs nothing (None), and the arguments are never modified (the objects and
lists on the way to a default are copied).
"""

# Schemas and arguments are JSON (Any), and isinstance() narrows them to Mapping[Unknown,
# Unknown] or list[Unknown], which pyright's strict mode reports at every later use (as in
# executor.py). mypy --strict holds the annotations.
# pyright: reportUnknownArgumentType=false
# pyright: reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from referencing import Registry
from referencing.jsonschema import DRAFT202012

from .fastschema import ecma_regex

# The compiler refuses recursive schemas (GEN203), and limits their depth (GEN227); this only
# keeps a schema that slipped past both from looping.
_MAX_DEPTH: Final = 64
_REFS: Final = ("$ref", "$dynamicRef")

# A schema, and the resolver its references resolve with (`referencing` keeps its Resolver class
# private: it is what `Registry.resolver_with_root` and `Resolved.resolver` give).
_Part = tuple[Mapping[str, Any], Any]


@dataclass(frozen=True, slots=True)
class Defaults:
    """The defaults that apply to one JSON value and to the values inside it."""

    fill: tuple[tuple[str, Any], ...]  # property -> its default, filled in when absent
    properties: tuple[tuple[str, Defaults], ...]  # property -> the defaults inside its value
    patterns: tuple[tuple[re.Pattern[str], Defaults | None], ...]  # every patternProperties
    named: frozenset[str]  # every property the object's schema names
    additional: Defaults | None  # inside values neither named nor matched by a pattern
    prefix: tuple[Defaults | None, ...]  # inside the first items of a list, one by one
    items: Defaults | None  # inside the other items
    keyed: bool  # a pattern or additionalProperties reaches a default: every key is looked at
    listed: bool  # `prefix` or `items` reaches a default

    def apply(self, value: Any) -> Any:
        """`value` with the defaults filled in (in copies: `value` itself is left as it is)."""
        if isinstance(value, dict):  # what JSON decodes to; Mapping is slower to test
            out = dict(value)
            for name, default in self.fill:
                if name not in out:  # a default is shared by every call: copied if mutable
                    out[name] = (
                        copy.deepcopy(default) if isinstance(default, dict | list) else default
                    )
            for name, inner in self.properties:
                if name in out:
                    out[name] = inner.apply(out[name])
            if self.keyed:
                for key in list(out):
                    matched = False
                    for pattern, inside in self.patterns:
                        if pattern.search(key):
                            matched = True
                            if inside is not None:
                                out[key] = inside.apply(out[key])
                    if not matched and key not in self.named and self.additional is not None:
                        out[key] = self.additional.apply(out[key])
            return out
        if self.listed and isinstance(value, list):
            return [self._item(i).apply(item) for i, item in enumerate(value)]
        return value

    def _item(self, index: int) -> Defaults:
        inner = self.prefix[index] if index < len(self.prefix) else self.items
        return _NOTHING if inner is None else inner


def compile_defaults(schema: Mapping[str, Any]) -> Defaults | None:
    """What `schema` (a tool's input schema, the whole document its references resolve in)
    fills in; None when it has no default that could apply."""
    resource = DRAFT202012.create_resource(schema)
    resolver = Registry().resolver_with_root(resource)
    return _compile([(schema, resolver)], 0)


def _expand(parts: list[_Part], depth: int) -> list[_Part]:
    """`parts` and every schema that applies to the same value with them: the targets of their
    references and the branches of their allOf, in document order."""
    out: list[_Part] = []
    todo = list(reversed(parts))
    seen = 0
    while todo and seen < 4096:
        seen += 1
        schema, resolver = todo.pop()
        out.append((schema, resolver))
        more: list[_Part] = []
        for keyword in _REFS:
            ref = schema.get(keyword)
            if isinstance(ref, str) and depth < _MAX_DEPTH:
                resolved = resolver.lookup(ref)
                if isinstance(resolved.contents, Mapping):
                    more.append((resolved.contents, resolved.resolver))
        branches = schema.get("allOf")
        if isinstance(branches, list):
            more.extend((b, resolver) for b in branches if isinstance(b, Mapping))
        todo.extend(reversed(more))
    return out


def _compile(parts: list[_Part], depth: int) -> Defaults | None:
    return _compile_expanded(_expand(parts, depth), depth)


def _compile_expanded(parts: list[_Part], depth: int) -> Defaults | None:
    """The defaults of the value that all of `parts` (expanded) describe."""
    if depth > _MAX_DEPTH:
        return None
    by_property: dict[str, list[_Part]] = {}
    by_pattern: dict[str, list[_Part]] = {}
    additional: list[_Part] = []
    prefix: list[list[_Part]] = []
    items: list[_Part] = []
    for schema, resolver in parts:
        props = schema.get("properties")
        if isinstance(props, Mapping):
            for name, sub in props.items():
                if isinstance(sub, Mapping):
                    by_property.setdefault(name, []).append((sub, resolver))
                else:  # `true` or `false`: nothing inside, but a name all the same
                    by_property.setdefault(name, [])
        patterns = schema.get("patternProperties")
        if isinstance(patterns, Mapping):
            for pattern, sub in patterns.items():
                found = by_pattern.setdefault(pattern, [])
                if isinstance(sub, Mapping):
                    found.append((sub, resolver))
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            additional.append((extra, resolver))
        firsts = schema.get("prefixItems")
        if isinstance(firsts, list):
            for i, sub in enumerate(firsts):
                if len(prefix) <= i:
                    prefix.append([])
                if isinstance(sub, Mapping):
                    prefix[i].append((sub, resolver))
        rest = schema.get("items")
        if isinstance(rest, Mapping):
            items.append((rest, resolver))

    fill: list[tuple[str, Any]] = []
    inside: list[tuple[str, Defaults]] = []
    for name, subs in by_property.items():
        expanded = _expand(subs, depth + 1)
        default = next((s["default"] for s, _r in expanded if "default" in s), _NONE)
        if default is not _NONE:
            fill.append((name, default))
        inner = _compile_expanded(expanded, depth + 1)
        if inner is not None:
            inside.append((name, inner))
    compiled_patterns = tuple(
        (ecma_regex(pattern), _compile(subs, depth + 1)) for pattern, subs in by_pattern.items()
    )
    compiled_prefix = tuple(_compile(subs, depth + 1) for subs in prefix)
    compiled_additional = _compile(additional, depth + 1) if additional else None
    compiled_items = _compile(items, depth + 1) if items else None
    keyed = compiled_additional is not None or any(d is not None for _p, d in compiled_patterns)
    listed = compiled_items is not None or any(d is not None for d in compiled_prefix)
    if not (fill or inside or keyed or listed):
        return None
    return Defaults(
        fill=tuple(fill),
        properties=tuple(inside),
        patterns=compiled_patterns,
        named=frozenset(by_property),
        additional=compiled_additional,
        prefix=compiled_prefix,
        items=compiled_items,
        keyed=keyed,
        listed=listed,
    )


_NONE: Final = object()
# Fills in nothing: for the items of a list no default reaches.
_NOTHING: Final = Defaults(
    fill=(),
    properties=(),
    patterns=(),
    named=frozenset(),
    additional=None,
    prefix=(),
    items=None,
    keyed=False,
    listed=False,
)
