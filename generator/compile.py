"""Stage 3, compile: schema-valid manifests -> `ir.Project`, checking meaning across files.

Every check reports a located diagnostic and compilation goes on, so one run shows every
problem. The IR is only returned when there is no error.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import math
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import jsonschema

from . import ir
from .diagnostics import Diagnostic, Span, did_you_mean, error, has_errors, listed, shortened
from .load import MAX_NESTING, JsonPath, Loaded
from .names import (
    CLIENT_BASE_NAMES,
    MAX_TOOL_NAME,
    ClassName,
    PyIdent,
    could_name_nested,
    import_name_problem,
    is_valid_tool_name,
    nested_name_parts,
    reader_method,
    unscoped_names,
)
from .patterns import hazard as regex_hazard
from .runtime.catalog import (
    DEFAULT_MAX_RESULT_BYTES,
    MAX_OBSERVATIONS_PER_CALL,
    MAX_SOURCE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TOP_K,
    MAX_TOPIC_CHARS,
    credential_header,
)
from .runtime.fastschema import TYPED_FORMATS, validator_class
from .runtime.handler_names import (
    RESOURCE_HANDLERS,
    RESOURCE_VARIABLES,
    TOOL_HANDLERS,
    URI_VARIABLE,
)
from .runtime.templating import FILTERS, PLACEHOLDER, list_index, scalar_text, split_path
from .validate import manifest_kinds

TYPE_REF_PREFIX = "#/types/"
# Text in braces that is not a placeholder: sent as is, so an error when it names an input.
# Spaces just inside the braces are allowed here (`{ name }`), and reported as such.
_BRACED = re.compile(r"\{ *([^{}\s\"':,]+) *\}")
_META = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
CURSOR_INPUT = {
    "type": "string",
    "description": "Opaque cursor from a previous call's next_cursor.",
}
CURSOR_OUTPUT = {
    "type": ["string", "null"],
    "description": "Pass as cursor to get the next page; null when there is no more.",
}
RESERVED_GROUPS = {"native", "personalization"}


@dataclass
class _SharedType:
    name: str
    schema: Any
    doc: Loaded
    path: JsonPath


@dataclass
class _Ctx:
    diags: list[Diagnostic] = field(default_factory=list)
    types: dict[str, _SharedType] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)  # shared type -> inlined schema
    measures: dict[str, tuple[int, int]] = field(default_factory=dict)  # -> (depth, values)
    type_refs: dict[str, list[tuple[JsonPath, str]]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # types that could not be inlined
    # Types that manifests which failed an earlier stage may declare (None: any name): a
    # reference to one is not GEN205, which would only echo that failure.
    failed_types: frozenset[str] | None = frozenset()
    oversize: set[str] = field(default_factory=set)  # ... because they exceed the bounds
    used: set[str] = field(default_factory=set)  # types the compiled tools refer to
    tool_names: set[str] = field(default_factory=set)  # of every tool compiled, built or not

    def err(self, code: str, span: Span, message: str, hint: str | None = None) -> None:
        self.diags.append(error(code, span, message, hint))


@dataclass(frozen=True, slots=True)
class ConnectorUnit:
    """What compiling one connector manifest yields: a function of its bytes, of the generator
    and of `connector_context` only. A build stores the units of a clean compile in its cache
    and passes them back for unchanged files, which then are not loaded, validated or compiled
    again (only the checks across files run, on the IR)."""

    source: ir.Source
    name: str
    connector: ir.Connector
    tools: tuple[ir.Tool, ...]

    @property
    def path(self) -> str:
        return self.source.path


def _by_kind(docs: Sequence[Loaded]) -> dict[str, list[Loaded]]:
    by_kind: dict[str, list[Loaded]] = {}
    for doc in docs:
        by_kind.setdefault(doc.data["kind"], []).append(doc)
    return by_kind


def connector_context(docs: Sequence[Loaded]) -> str:
    """Digest of what other manifests contribute to compiling a connector: the shared types
    (first definition of each name wins, as in `_collect_types`) and the entity types of the
    first gateway manifest. `docs` are the schema-valid manifests given to `compile_project`."""
    by_kind = _by_kind(docs)
    types: dict[str, Any] = {}
    for doc in by_kind.get("types", []):
        for name, schema in doc.data["types"].items():
            types.setdefault(name, schema)
    gateways = by_kind.get("gateway", [])
    entities = gateways[0].data.get("entities", {}) if gateways else {}
    text = json.dumps([types, entities], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def compile_project(
    docs: list[Loaded],
    *,
    failed: Sequence[Loaded | str | None] = (),
    units: Sequence[ConnectorUnit] = (),
) -> tuple[ir.Project | None, list[Diagnostic]]:
    """`failed` are the manifests that failed an earlier stage, as loaded, or for one that
    could not be, the kind it declares (`load.declared_kind`; None when unreadable): checks
    that need the whole project (a gateway exists, referenced connectors, tools and shared
    types exist) then skip what those could have declared, so the user is not shown errors
    that are only echoes of the first ones. `units` are connectors compiled by an earlier
    build from the same bytes in the same `connector_context` (never also in `docs`)."""
    partial = bool(failed)
    ctx = _Ctx(failed_types=_failed_types(failed))
    by_kind = _by_kind(docs)

    _collect_types(ctx, by_kind.get("types", []))
    _resolve_types(ctx)
    gateways = by_kind.get("gateway", [])
    gateway_doc = gateways[0] if gateways else None
    if len(gateways) > 1:
        for extra in gateways[1:]:
            ctx.err(
                "GEN210",
                extra.span(("kind",)),
                f"a project has one gateway manifest; {gateway_doc.path if gateway_doc else ''}"
                " is already one",
            )
    elif not gateways and not partial:
        first = min([d.path for d in docs[:1]] + [u.path for u in units], default="manifests")
        ctx.err(
            "GEN210",
            Span(file=first),
            "no gateway manifest (`kind: gateway`) found",
            "add manifests/gateway.yaml with the package and server settings",
        )
    # None: the gateway manifest failed an earlier stage, so its entity types are unknown and
    # connectors' mappings are not checked against them (each would be an echo of its error).
    entity_types = _entity_types(gateway_doc) if gateway_doc is not None or not partial else None

    tools: list[ir.Tool] = []
    connectors: list[ir.Connector] = []
    groups: dict[str, dict[str, Any]] = {}
    memory = ir.Memory()
    memory_doc: Loaded | None = None  # the manifest that sets `memory`, if any
    handler_tools: list[tuple[Loaded, JsonPath, ir.Tool]] = []
    for kind in ("native", "personalization"):
        for doc in by_kind.get(kind, []):
            if kind == "personalization" and "memory" in doc.data:
                memory = ir.Memory(**doc.data["memory"])
                memory_doc = doc
            for i, raw in enumerate(doc.data["tools"]):
                tool = _handler_tool(ctx, doc, ("tools", i), raw, kind)
                if tool is not None:
                    tools.append(tool)
                    _add_to_group(groups, tool, doc.path)
                    handler_tools.append((doc, ("tools", i), tool))
    _check_memory_schemas(ctx, memory, memory_doc, handler_tools)
    seen_connectors: dict[str, str] = {}  # name -> path of the manifest declaring it
    entries: list[Loaded | ConnectorUnit] = [*by_kind.get("connector", []), *units]
    for entry in sorted(entries, key=lambda e: e.path):
        if isinstance(entry, ConnectorUnit):
            name, name_span = entry.name, entry.connector.span
        else:
            name, name_span = entry.data["name"], entry.span(("name",))
        if name in seen_connectors:
            ctx.err(
                "GEN211",
                name_span,
                f"connector {name!r} is also declared in {seen_connectors[name]}",
            )
            continue
        if name in RESERVED_GROUPS:
            ctx.err("GEN211", name_span, f"connector name {name!r} is reserved")
            continue
        seen_connectors[name] = entry.path
        if isinstance(entry, ConnectorUnit):
            connector, conn_tools = entry.connector, list(entry.tools)
            ctx.used.update(connector.types)  # not unused: they are not checked on their own
        else:
            connector, conn_tools = _connector(ctx, entry, entity_types)
        connectors.append(connector)
        for tool in conn_tools:
            tools.append(tool)
            _add_to_group(groups, tool, entry.path)

    _check_tool_names(ctx, tools)
    _check_nested_models(ctx, tools)
    _check_unused_types(ctx)
    # A replacement that is a tool with errors of its own, or may be one of a manifest that
    # failed, is not reported missing.
    tool_names = ctx.tool_names | {t.name for t in tools}
    for t in tools:
        if (
            t.deprecated
            and t.deprecated.replacement
            and t.deprecated.replacement not in tool_names
            and not partial
        ):
            ctx.err(
                "GEN218",
                t.span,
                f"tool {t.name!r} names replacement "
                f"{t.deprecated.replacement!r}, which is not a tool of this project",
            )

    gateway = None
    if gateway_doc is not None:
        gateway = _gateway(ctx, gateway_doc, {c.name for c in connectors}, partial)
    _check_client_methods(ctx, tools, gateway.resources if gateway is not None else ())

    if has_errors(ctx.diags) or gateway is None:
        return None, ctx.diags
    project = ir.Project(
        gateway=gateway,
        tools=tuple(sorted(tools, key=lambda t: t.name)),
        connectors=tuple(sorted(connectors, key=lambda c: c.name)),
        groups=tuple(
            ir.Group(
                name=PyIdent(name),
                family=g["family"],
                sources=tuple(sorted(g["sources"])),
                tools=tuple(sorted(g["tools"])),
            )
            for name, g in sorted(groups.items())
        ),
        memory=memory,
        sources=tuple(
            sorted(
                [
                    *(ir.Source(path=d.path, sha256=d.sha256) for d in docs),
                    *(u.source for u in units),
                ],
                key=lambda s: s.path,
            )
        ),
    )
    return project, ctx.diags


def _add_to_group(groups: dict[str, dict[str, Any]], tool: ir.Tool, source: str) -> None:
    g = groups.setdefault(tool.group, {"family": tool.family, "sources": set(), "tools": []})
    g["sources"].add(source)
    g["tools"].append(tool.name)


# ---------------------------------------------------------------------------- shared types


def _failed_types(failed: Sequence[Loaded | str | None]) -> frozenset[str] | None:
    """The shared types that manifests which failed an earlier stage may declare, None for
    any name. One that was loaded declares the keys of its `types` if it is of kind `types`
    or has a `types` key (its kind misspelt, say), and any name when that `types` is not a
    mapping. One that could not be loaded declares none if the kind it declares is another
    manifest kind, and any name if it declares `types`, no kind or a kind that is none."""
    names: set[str] = set()
    for doc in failed:
        if not isinstance(doc, Loaded):
            if doc in manifest_kinds() - {"types"}:
                continue
            return None
        if doc.data.get("kind") == "types" or "types" in doc.data:
            types = doc.data.get("types")
            if not isinstance(types, dict):
                return None
            names.update(types)
    return frozenset(names)


def _collect_types(ctx: _Ctx, docs: list[Loaded]) -> None:
    for doc in docs:
        for name, schema in doc.data["types"].items():
            path = ("types", name)
            if name in ctx.types:
                other = ctx.types[name]
                ctx.err(
                    "GEN215",
                    doc.key_span(path),
                    f"shared type {name!r} is also defined at {other.doc.key_span(other.path)}",
                )
                continue
            _check_meta(ctx, doc, path, schema)
            ctx.types[name] = _SharedType(name, schema, doc, path)


# Bounds on a schema once its shared types are inlined. Each `$ref` copies the type it names,
# so types that each refer to the next twice double at every step: 22 of them made one tool
# schema of 4 million values (45 s, 500 MB), as YAML aliases would if the loader did not cap
# them, and a chain of 200 overflowed Python's stack. The depth bound is the loader's (no
# schema nests deeper than a manifest may). The size bound is far above a real tool schema
# (the bundled ones hold at most a few dozen values; it is sent whole in every tools/list and
# read by the model), and keeps the build in seconds: one of 40,000 values took 20 s, most of
# it in the models generator. Both are computed per shared type, once, never by expanding.
MAX_SCHEMA_DEPTH = MAX_NESTING
MAX_SCHEMA_VALUES = 20_000


def _describe_size(height: int, size: int) -> str:
    """What exceeds the bounds: `nests 240 levels deep` and/or `holds more than 20,000 values`."""
    parts = []
    if height > MAX_SCHEMA_DEPTH:
        parts.append(f"nests {height} levels deep (limit {MAX_SCHEMA_DEPTH})")
    if size > MAX_SCHEMA_VALUES:
        parts.append(f"holds more than {MAX_SCHEMA_VALUES:,} values")
    return " and ".join(parts)


def _type_refs(value: Any, path: JsonPath) -> list[tuple[JsonPath, str]]:
    """Every `$ref: '#/types/Name'` in `value` (a type's own schema), with its path."""
    found: list[tuple[JsonPath, str]] = []
    todo: list[tuple[JsonPath, Any]] = [(path, value)]
    while todo:
        where, node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(TYPE_REF_PREFIX):
                found.append((where, ref[len(TYPE_REF_PREFIX) :]))
            todo.extend(((*where, k), v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            todo.extend(((*where, i), v) for i, v in reversed(list(enumerate(node))))
    return found


def _resolve_types(ctx: _Ctx) -> None:
    """Inline every shared type, each after the types it refers to (a depth-first walk of the
    references kept on a list, not on Python's stack), so that inlining one never recurses into
    another. A reference back to a type still being walked is a cycle (GEN215). A type that
    cannot be inlined (a cycle, an unknown type, beyond the bounds) is `broken`, and so is every
    type that refers to it; only the first of a chain past the bounds is reported, at its name."""
    for name, shared in ctx.types.items():
        ctx.type_refs[name] = _type_refs(shared.schema, shared.path)
    state: dict[str, bool] = {}  # name -> done (False: still being walked)
    for first in sorted(ctx.types):
        if first in state:
            continue
        state[first] = False
        stack = [(first, iter(ctx.type_refs[first]))]
        while stack:
            name, refs = stack[-1]
            for path, target in refs:
                if target not in ctx.types:
                    continue  # GEN205 when the type is inlined
                if state.get(target) is False:
                    chain = [n for n, _ in stack]
                    ctx.err(
                        "GEN215",
                        ctx.types[name].doc.span((*path, "$ref")),
                        "shared types refer to each other in a cycle: "
                        + " -> ".join((*chain[chain.index(target) :], target)),
                    )
                elif target not in state:
                    state[target] = False
                    stack.append((target, iter(ctx.type_refs[target])))
                    break
            else:
                stack.pop()
                state[name] = True
                _resolve_type(ctx, name)


def _resolve_type(ctx: _Ctx, name: str) -> None:
    shared = ctx.types[name]
    value, height, size, ok = _inline(ctx, shared.schema, shared.doc, shared.path, tool=False)
    ctx.resolved[name] = value
    ctx.measures[name] = (height, size)
    if not ok:
        ctx.broken.add(name)
    if height > MAX_SCHEMA_DEPTH or size > MAX_SCHEMA_VALUES:
        ctx.broken.add(name)
        ctx.oversize.add(name)
        if not any(target in ctx.oversize for _path, target in ctx.type_refs[name]):
            ctx.err(
                "GEN227",
                shared.doc.key_span(shared.path),
                f"shared type {name!r} {_describe_size(height, size)} once the shared types "
                "it refers to are inlined",
                "refer to fewer or smaller types: every $ref copies the whole type",
            )


def _check_unused_types(ctx: _Ctx) -> None:
    """A shared type that no tool compiled here uses is checked all the same (unknown types,
    cycles, bad patterns, dangling `$ref`s): it is part of the published language, and the
    next manifest that uses it must not be the first to learn it is broken."""
    used: set[str] = set()
    todo = list(ctx.used)
    while todo:
        name = todo.pop()
        if name not in used and name in ctx.types:
            used.add(name)
            todo.extend(target for _path, target in ctx.type_refs[name])
    for name, shared in sorted(ctx.types.items()):
        resolved = ctx.resolved[name]
        if name not in used and name not in ctx.broken and isinstance(resolved, dict):
            _check_subschemas(ctx, shared.doc, shared.path, resolved, resolved)


def _inline(
    ctx: _Ctx, value: Any, doc: Loaded, path: JsonPath, *, tool: bool
) -> tuple[Any, int, int, bool]:
    """Replace `$ref: '#/types/Name'` by the type's inlined schema (`_resolve_types` has
    inlined every type first). Sibling keywords of the `$ref` (a description, say) override the
    type's own. Returns the schema, its nesting depth and number of values (capped just past
    MAX_SCHEMA_VALUES), and False when it refers to a type that could not be inlined (reported
    at the type, or at the reference for a `tool` schema's reference to a type past the
    bounds)."""
    if isinstance(value, list):
        items, height, size, ok = [], 0, 1, True
        for i, v in enumerate(value):
            item, h, n, o = _inline(ctx, v, doc, (*path, i), tool=tool)
            items.append(item)
            height, size, ok = max(height, h), size + n, ok and o
        return items, height + 1, min(size, MAX_SCHEMA_VALUES + 1), ok
    if not isinstance(value, dict):
        return value, 0, 1, True
    ref = value.get("$ref")
    name = (
        ref[len(TYPE_REF_PREFIX) :]
        if isinstance(ref, str) and ref.startswith(TYPE_REF_PREFIX)
        else None
    )
    rest, height, size, ok = {}, 0, 1, True
    for k, v in value.items():
        if not (name is not None and k == "$ref"):
            rest[k], h, n, o = _inline(ctx, v, doc, (*path, k), tool=tool)
            height, size, ok = max(height, h), size + n, ok and o
    height, size = height + 1, min(size, MAX_SCHEMA_VALUES + 1)
    if name is None:
        return rest, height, size, ok
    if name not in ctx.types:
        if ctx.failed_types is None or name in ctx.failed_types:
            return rest, height, size, False  # an echo of the manifest that failed
        known = ", ".join(sorted({*ctx.types, *ctx.failed_types})) or "none declared"
        ctx.err(
            "GEN205",
            doc.span((*path, "$ref")),
            f"unknown shared type {name!r}",
            f"shared types: {known}",
        )
        return rest, height, size, False
    if tool:
        ctx.used.add(name)
    if name not in ctx.resolved:  # a type of a cycle, still being walked
        return rest, height, size, False
    resolved = ctx.resolved[name]
    type_height, type_size = ctx.measures[name]
    if name in ctx.oversize:  # what it would have been: the referring type is past them too
        if tool:
            ctx.err(
                "GEN227",
                doc.span((*path, "$ref")),
                f"shared type {name!r} {_describe_size(type_height, type_size)} once inlined",
                "refer to fewer or smaller types: every $ref copies the whole type",
            )
        size = min(type_size + size - 1, MAX_SCHEMA_VALUES + 1)
        return rest, max(type_height, height), size, False
    if name in ctx.broken:
        return rest, height, size, False
    if not isinstance(resolved, dict):
        return resolved, type_height, type_size, ok
    size = min(type_size + size - 1, MAX_SCHEMA_VALUES + 1)
    return {**resolved, **rest}, max(type_height, height), size, ok


# ---------------------------------------------------------------------------- metaschema
#
# `_META.iter_errors` walks the 2020-12 metaschema through `$dynamicRef`s and costs ~10 ms per
# tool schema (over a minute for 5,000 tools). `_meta_valid` is a direct transcription of that
# metaschema (its seven vocabularies, formats not asserted, as `_META` does not assert them)
# used as a pre-check: it only ever answers True for a schema the metaschema accepts, and any
# doubt (a keyword it does not transcribe, an unusual value) sends the schema to `_META`, which
# then produces the diagnostics exactly as before.

_SIMPLE_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_nni(v: Any) -> bool:  # nonNegativeInteger (ints only; 2.0 is left to _META)
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_string_array(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and len(set(v)) == len(v)


def _is_type(v: Any) -> bool:
    if isinstance(v, str):
        return v in _SIMPLE_TYPES
    return (
        isinstance(v, list)
        and len(v) >= 1
        and all(isinstance(x, str) and x in _SIMPLE_TYPES for x in v)
        and len(set(v)) == len(v)
    )


def _is_schema_map(v: Any) -> bool:
    return isinstance(v, dict) and all(_meta_valid(s) for s in v.values())


def _is_schema_array(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 1 and all(_meta_valid(s) for s in v)


def _unsure(v: Any) -> bool:
    return False


def _anything(v: Any) -> bool:
    return True


_META_KEYWORDS: dict[str, Any] = {
    # core
    "$id": _unsure,
    "$schema": _is_str,
    "$ref": _is_str,
    "$anchor": _unsure,
    "$dynamicRef": _is_str,
    "$dynamicAnchor": _unsure,
    "$vocabulary": _unsure,
    "$comment": _is_str,
    "$defs": _is_schema_map,
    # applicator
    "prefixItems": _is_schema_array,
    "items": lambda v: _meta_valid(v),
    "contains": lambda v: _meta_valid(v),
    "additionalProperties": lambda v: _meta_valid(v),
    "properties": _is_schema_map,
    "patternProperties": _is_schema_map,
    "dependentSchemas": _is_schema_map,
    "propertyNames": lambda v: _meta_valid(v),
    "if": lambda v: _meta_valid(v),
    "then": lambda v: _meta_valid(v),
    "else": lambda v: _meta_valid(v),
    "allOf": _is_schema_array,
    "anyOf": _is_schema_array,
    "oneOf": _is_schema_array,
    "not": lambda v: _meta_valid(v),
    # unevaluated
    "unevaluatedItems": lambda v: _meta_valid(v),
    "unevaluatedProperties": lambda v: _meta_valid(v),
    # validation
    "type": _is_type,
    "const": _anything,
    "enum": lambda v: isinstance(v, list),
    "multipleOf": lambda v: _is_number(v) and v > 0,
    "maximum": _is_number,
    "exclusiveMaximum": _is_number,
    "minimum": _is_number,
    "exclusiveMinimum": _is_number,
    "maxLength": _is_nni,
    "minLength": _is_nni,
    "pattern": _is_str,
    "maxItems": _is_nni,
    "minItems": _is_nni,
    "uniqueItems": lambda v: isinstance(v, bool),
    "maxContains": _is_nni,
    "minContains": _is_nni,
    "maxProperties": _is_nni,
    "minProperties": _is_nni,
    "required": _is_string_array,
    "dependentRequired": lambda v: isinstance(v, dict) and all(map(_is_string_array, v.values())),
    # meta-data
    "title": _is_str,
    "description": _is_str,
    "default": _anything,
    "deprecated": lambda v: isinstance(v, bool),
    "readOnly": lambda v: isinstance(v, bool),
    "writeOnly": lambda v: isinstance(v, bool),
    "examples": lambda v: isinstance(v, list),
    # format-annotation, content
    "format": _is_str,
    "contentEncoding": _is_str,
    "contentMediaType": _is_str,
    "contentSchema": lambda v: _meta_valid(v),
    # the metaschema's own legacy keywords
    "definitions": _is_schema_map,
    "dependencies": _unsure,
    "$recursiveAnchor": _unsure,
    "$recursiveRef": _unsure,
}


def _meta_valid(schema: Any) -> bool:
    """True only if the 2020-12 metaschema accepts `schema` (False: not known to)."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        check = _META_KEYWORDS.get(key)
        if check is not None and not check(value):
            return False
    return True


_ANNOTATION_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$comment",
        "$defs",
        "$vocabulary",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)
# jsonschema's VALIDATORS has one entry per keyword that it validates on its own: keywords read
# by another's validator (then/else by `if`, maxContains/minContains by `contains`) are not in
# it, yet are 2020-12 keywords all the same.
_READ_BY_OTHERS = frozenset({"then", "else", "maxContains", "minContains"})
SCHEMA_KEYWORDS = (
    frozenset(jsonschema.Draft202012Validator.VALIDATORS) | _READ_BY_OTHERS | _ANNOTATION_KEYWORDS
)
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMAS = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
)


def _check_keywords(ctx: _Ctx, doc: Loaded, path: JsonPath, schema: Any) -> bool:
    """Unknown keywords are legal JSON Schema but almost always a mistake: a typo
    (`minLenght`), or YAML splitting an unquoted flow-mapping value at a comma
    (`{description: Name, e.g. slack}` makes a key `e.g. slack`). Extensions use `x-`."""
    if not isinstance(schema, dict):
        return True
    ok = True
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
            ok = False
            if value is None:  # `{description: a, b}` parses as {description: a, b: null}
                hint = "a comma inside {...} splits the value: quote the whole string"
            else:
                close = did_you_mean(key, SCHEMA_KEYWORDS)
                hint = (f"{close} " if close else "") + "extension keywords start with x-"
            ctx.err(
                "GEN219",
                doc.key_span((*path, key)),
                f"unknown JSON Schema keyword {key!r} at {'/'.join(map(str, path))}",
                hint,
            )
    for sub_path, sub in _subschemas(path, schema):
        ok &= _check_keywords(ctx, doc, sub_path, sub)
    return ok


def _subschemas(path: JsonPath, schema: dict[str, Any]) -> Iterator[tuple[JsonPath, Any]]:
    """The direct subschemas of `schema` (maps, lists and single ones), with their paths."""
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield (*path, key, name), sub
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield (*path, key, i), sub
    for key in _SUBSCHEMAS:
        if key in schema:
            yield (*path, key), schema[key]


def _rewritten(schema: Any, node: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of `schema` with `node` applied to it and to every subschema (a new dict from
    each; values such as `const`, `enum` or `examples`, and property names, are not schemas)."""
    if not isinstance(schema, dict):
        return schema
    out = node(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _rewritten(sub, node) for name, sub in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_rewritten(sub, node) for sub in out[key]]
    for key in _SUBSCHEMAS:
        if key in out:
            out[key] = _rewritten(out[key], node)
    return out


def without_defaults(schema: Any) -> Any:
    """A copy of `schema` without the `default` of it or of any subschema (values such as
    `const`, `enum` or `examples`, and properties named "default", are kept)."""
    return _rewritten(schema, lambda n: {k: v for k, v in n.items() if k != "default"})


def _typed_format(node: dict[str, Any]) -> bool:
    """Whether `node` is a string (or null) whose `format` the models type as a class."""
    kind = node.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    fmt = node.get("format")
    return (
        isinstance(fmt, str) and fmt in TYPED_FORMATS and kinds in ({"string"}, {"string", "null"})
    )


def for_models(schema: Any) -> Any:
    """A copy of `schema` as the models are made from it: a `format` is kept only where the
    models type it as a class that the gateway asserts (`TYPED_FORMATS` on a string: date-time,
    date, time, uuid, ipv4, ipv6), and removed everywhere else, so the field is its plain JSON
    type (str, int, float).

    The gateway checks arguments and results against the JSON Schema, where any other format
    is an annotation, and the typed client parses results with the models: a class there that
    the gateway does not assert refused results the gateway passed, and some rewrote what the
    client sent. Email (EmailStr) refused `root@localhost` and addresses at `.local` or `.test`
    domains, which upstreams hold (email validators disagree on such edge cases: the upstream's
    reading stands), and rewrote the domain it sent; uri (AnyUrl) rewrote case, default ports
    and escapes; hostname took a regex of its own in place of the property's `pattern`;
    duration (timedelta) read P1M as 30 days and sent P30D; password (SecretStr) was sent as
    "**********"; byte (Base64Str) was decoded; ulid needed a package the generated package does
    not install; and a format on an integer or a number (date-time, decimal) was sent as a
    string, which the gateway refuses."""
    return _rewritten(schema, _model_node)


def for_input_models(schema: Any) -> Any:
    """A copy of the input schema `schema` as the models are made from it: as `for_models`
    does, and with `additionalProperties: true` made explicit on every nested object with
    properties that does not say. JSON Schema admits other properties there, and so does the
    gateway, but datamodel-code-generator made such a model ignore them (pydantic's default),
    so the typed client dropped them from what it sent without a word: a Stripe-style
    `metadata` object kept its declared keys only. Now the model keeps them (`extra="allow"`).
    The root is left as it is: the client's method takes its properties as keyword arguments,
    which mypy checks, and an open root would add `**extra` and let a misspelt one through."""
    out = _rewritten(schema, _input_model_node)
    if isinstance(out, dict) and isinstance(schema, dict) and "additionalProperties" not in schema:
        out.pop("additionalProperties", None)
    return out


def _input_model_node(node: dict[str, Any]) -> dict[str, Any]:
    out = _model_node(node)
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = True
    return out


def _model_node(node: dict[str, Any]) -> dict[str, Any]:
    """One schema node as `for_models` gives it (its subschemas left to `_rewritten`)."""
    if "format" not in node or _typed_format(node):
        return node.copy()
    return {k: v for k, v in node.items() if k != "format"}


_CLOSING = ("additionalProperties", "unevaluatedProperties")  # false: no other properties


def for_output_models(schema: Any) -> Any:
    """A copy of the output schema `schema` as the models are made from it: as `for_models`
    does, and without any `default` (`emit.models.request` says why) or any
    `additionalProperties: false` or `unevaluatedProperties: false`, at every depth.

    Output models are tolerant readers: they ignore properties they do not declare.
    datamodel-code-generator turns a closed object into `extra="forbid"`, and then a client
    built from one release refused every result of the next one that returned a property
    more (BRK103, "output property added", is safe: agents ignore what they do not know),
    with `invalid_response`. The gateway still holds each result to the full JSON Schema,
    closed objects included; input models keep refusing undeclared arguments, as the gateway
    does. (An input and an output never share a model class: datamodel-code-generator names
    every class after its tool and side, `<Tool>Input...` and `<Tool>Output...`, shared
    types included, as they are inlined into each schema.)"""
    return _rewritten(
        schema,
        lambda n: {
            k: v
            for k, v in _model_node(n).items()
            if k != "default" and not (k in _CLOSING and v is False)
        },
    )


def _check_meta(ctx: _Ctx, doc: Loaded, path: JsonPath, schema: Any) -> bool:
    if not _check_keywords(ctx, doc, path, schema):
        return False
    if _meta_valid(schema):
        return True
    ok = True
    for err in _META.iter_errors(schema):
        ok = False
        where = (*path, *err.absolute_path)
        message, hint = _type_problem(err) or (err.message, None)
        ctx.err(
            "GEN203",
            doc.span(where),
            f"{'/'.join(map(str, where))} is not valid JSON Schema 2020-12: {message}",
            hint,
        )
    return ok


_TYPES_TEXT = listed(sorted(_SIMPLE_TYPES), "or")


def _type_problem(err: jsonschema.ValidationError) -> tuple[str, str | None] | None:
    """What is wrong with a `type` the metaschema refuses, which it says as "not valid under any
    of the given schemas" (of its anyOf: a type name, or a list of them)."""
    if tuple(err.absolute_schema_path)[-3:] != ("properties", "type", "anyOf"):
        return None
    value = err.instance
    names = value if isinstance(value, list) else [value]
    for name in names:
        if not isinstance(name, str) or name not in _SIMPLE_TYPES:
            shown = json.dumps(name) if not isinstance(name, str) else repr(name)
            hint = did_you_mean(name, sorted(_SIMPLE_TYPES)) if isinstance(name, str) else None
            return f"{shown} is not a type (the types are {_TYPES_TEXT})", hint
    if isinstance(value, list) and not value:
        return "an empty type list allows nothing", "name at least one type"
    if isinstance(value, list) and len(set(value)) < len(value):
        twice = next(n for i, n in enumerate(value) if n in value[:i])
        return f"the type list names {twice!r} twice", None
    return None


# ---------------------------------------------------------------------------- tools


def _schema(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: Any,
    what: str,
    implicit: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """`implicit`: properties the compiler adds to the root (a paginated tool's cursor and
    next_cursor), which its `required` may name."""
    meta_ok = _check_meta(ctx, doc, path, raw)
    before = len(ctx.diags)
    schema, height, size, ok = _inline(ctx, raw, doc, path, tool=True)
    if not meta_ok or len(ctx.diags) > before or not ok:
        # Not built, but every other problem is reported now, so that fixing these reveals no
        # new ones: unknown types (GEN205) also in a schema the metaschema refused, and in one
        # with an unresolved type, what the metaschema cannot see in the rest of it (the
        # root's checks would only echo a missing type).
        if meta_ok and height <= MAX_SCHEMA_DEPTH and size <= MAX_SCHEMA_VALUES:
            _check_subschemas(ctx, doc, path, schema, schema, implicit=implicit)
        return None
    if height > MAX_SCHEMA_DEPTH or size > MAX_SCHEMA_VALUES:
        ctx.err(
            "GEN227",
            doc.span(path),
            f"the {what} schema, its shared types included, {_describe_size(height, size)}",
            "refer to fewer or smaller types: every $ref copies the whole type",
        )
        return None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        got = schema.get("type") if isinstance(schema, dict) else None
        ctx.err(
            "GEN204",
            doc.span(path),
            f"the {what} schema's root must be `type: object` (got {got!r})",
            "MCP clients need an object at the root: wrap the value in a property",
        )
        return None
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            ctx.err(
                "GEN204",
                doc.key_span((*path, combinator)),
                f"the {what} schema's root may not use {combinator}",
                "several clients reject top-level combinators: move it into a property",
            )
            return None
    before = len(ctx.diags)
    _check_subschemas(ctx, doc, path, schema, schema, implicit=implicit)
    return schema if len(ctx.diags) == before else None


# Length and size bounds the models pass to pydantic-core, which holds them in 64 bits.
_SIZE_KEYWORDS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)
_MAX_SIZE = 2**63 - 1


def _check_subschemas(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    node: Any,
    root: dict[str, Any],
    *,
    asserted: bool = True,
    implicit: frozenset[str] = frozenset(),
) -> None:
    """What the metaschema cannot see, in every subschema: regular expressions that do not
    compile and size bounds past 64 bits (the generated models and the server's validation
    would fail on import), `$ref`s that point nowhere, property names that Python reads as
    another name, and (where a value must match the subschema: `asserted`, not under `not`,
    `if` or `propertyNames`) required properties no object can have."""
    if not isinstance(node, dict):
        return
    if asserted:
        _check_required(ctx, doc, path, node, implicit)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        _check_regex(ctx, doc, (*path, "pattern"), pattern)
    for keyword in _SIZE_KEYWORDS:
        size = node.get(keyword)
        if type(size) is int and size > _MAX_SIZE:
            ctx.err(
                "GEN203",
                doc.span((*path, keyword)),
                f"{keyword} {size} is beyond what the generated models can hold (2^63 - 1)",
                f"leave {keyword} out: no value is that large",
            )
    for key in node.get("patternProperties") or {}:
        _check_regex(ctx, doc, (*path, "patternProperties", key), key)
    for keyword in _REF_KEYWORDS:
        ref = node.get(keyword)
        if isinstance(ref, str):
            _check_ref(ctx, doc, (*path, keyword), ref, root, keyword)
    if "default" in node:
        _check_default(ctx, doc, (*path, "default"), node, root)
    if isinstance(node.get("examples"), list):
        _check_examples(ctx, doc, (*path, "examples"), node, root)
    if "const" in node:
        _check_typable(ctx, doc, (*path, "const"), node["const"], "const")
    for i, value in enumerate(node.get("enum") or []):
        _check_typable(ctx, doc, (*path, "enum", i), value, "enum value")
    props = node.get("properties")
    if isinstance(props, dict):
        for name in props:
            normal = unicodedata.normalize("NFKC", name)
            if normal != name and normal.isidentifier():
                ctx.err(
                    "GEN208",
                    doc.key_span((*path, "properties", name)),
                    f"Python reads property name {name!r} as {normal!r} (it normalises "
                    "Unicode identifiers, NFKC): the generated code would break or merge fields",
                    f"name it {normal!r}",
                )
    for sub_path, sub in _subschemas(path, node):
        applicator = sub_path[len(path)]
        _check_subschemas(
            ctx, doc, sub_path, sub, root, asserted=asserted and applicator not in _NOT_ASSERTED
        )


# Subschemas a valid value need not match: one that nothing can match has a meaning there.
_NOT_ASSERTED = frozenset({"not", "if", "propertyNames"})
# Keywords beside `unevaluatedProperties` whose subschemas may evaluate a property.
_IN_PLACE = (
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "$ref",
    "$dynamicRef",
)


def _may_match(pattern: Any, name: str) -> bool:
    """Whether a `patternProperties` regex may match `name` (True when it cannot tell)."""
    if not isinstance(pattern, str) or regex_hazard(pattern) is not None:
        return True
    try:
        return re.search(pattern, name) is not None
    except (re.error, RecursionError, OverflowError):
        return True


def _check_required(
    ctx: _Ctx, doc: Loaded, path: JsonPath, node: dict[str, Any], implicit: frozenset[str]
) -> None:
    """GEN203 for a `required` name that the object schema `node` forbids: not among its
    `properties`, matched by none of its `patternProperties`, where `additionalProperties:
    false` refuses any other (or `unevaluatedProperties: false`, with no subschema beside it
    that could evaluate the name). No object can be valid: an input no call could give, an
    output no answer could pass (a typo, `coment` for `comment`, built)."""
    required = node.get("required")
    declared = node.get("type")
    if not isinstance(required, list) or (
        declared is not None
        and "object" not in (declared if isinstance(declared, list) else [declared])
    ):
        return
    if node.get("additionalProperties") is False:
        closed = "additionalProperties: false"
    elif (
        node.get("unevaluatedProperties") is False
        and "additionalProperties" not in node
        and not any(keyword in node for keyword in _IN_PLACE)
    ):
        closed = "unevaluatedProperties: false"
    else:
        return
    props = node.get("properties")
    names = list(props) if isinstance(props, dict) else []
    patterns = node.get("patternProperties")
    for i, name in enumerate(required):
        if not isinstance(name, str) or name in names or name in implicit:
            continue
        if isinstance(patterns, dict) and any(_may_match(p, name) for p in patterns):
            continue
        hint = did_you_mean(name, names) or (
            "declared: " + ", ".join(names) if names else "declare it under properties"
        )
        ctx.err(
            "GEN203",
            doc.span((*path, "required", i)),
            f"required property {name!r} is not among the properties, and {closed} refuses "
            "any other: no object can match this schema",
            hint,
        )


def _has_hazard(schema: Any, root: dict[str, Any]) -> bool:
    """Whether `schema`, a subschema, or (when it refers to any) `root` holds a `pattern` or
    `patternProperties` key that can backtrack exponentially (`patterns.hazard`; GEN203 on its
    own). jsonschema would match a default against it (`^(a+)+$` against thirty `a`s and a `!`
    took 25 s), by `pattern` itself or for a property name under `additionalProperties`."""
    todo, refers = [schema], False
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        regexes = [node.get("pattern"), *(node.get("patternProperties") or {})]
        if any(isinstance(r, str) and regex_hazard(r) is not None for r in regexes):
            return True
        refers = refers or any(keyword in node for keyword in _REF_KEYWORDS)
        todo.extend(sub for _path, sub in _subschemas((), node))
    return refers and schema is not root and _has_hazard(root, root)


class _Unchecked(Exception):
    """A value cannot be matched against its schema: a dangling `$ref` or a bad pattern
    (reported by their own checks), or a pattern that can backtrack exponentially (GEN203 on
    its own; matching `^(a+)+$` against thirty `a`s and a `!` took 25 s)."""


def _refusal(node: dict[str, Any], root: dict[str, Any], value: Any) -> str | None:
    """Why `node`, a subschema of `root`, refuses `value` (where in the value, and
    jsonschema's best message, as ` at /a/0: ...` or `: ...`), or None when it accepts it.
    Checked after shared types are inlined, against the schema without its defaults, `$ref`s
    resolved in the root. Raises `_Unchecked`."""
    if _has_hazard(node, root):
        raise _Unchecked
    try:
        # the formats the models type are asserted as the gateway asserts them (`validator_class`)
        validator = validator_class()(without_defaults(root)).evolve(schema=without_defaults(node))
        problem = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Exception:
        raise _Unchecked from None
    if problem is None:
        return None
    where = "/".join(map(str, problem.absolute_path))
    return f"{' at /' + where if where else ''}: {problem.message}"


def _check_default(
    ctx: _Ctx, doc: Loaded, path: JsonPath, node: dict[str, Any], root: dict[str, Any]
) -> None:
    """GEN203 for a `default` its own schema refuses: the models would declare a field of one
    type with a default of another (`limit: int | None = "ten"`), which type checkers refuse,
    and a client omitting the argument would send the bad value."""
    default = node["default"]
    try:
        problem = _refusal(node, root, default)
    except _Unchecked:
        return
    if problem is not None:
        ctx.err(
            "GEN203",
            doc.span(path),
            f"default {json.dumps(default, ensure_ascii=False)} does not match its schema{problem}",
            "give a value the schema accepts, or remove the default",
        )
        return
    untypable = _untypable_default(node, default, root)
    if untypable is not None:
        ctx.err(
            "GEN203",
            doc.span(path),
            f"default {json.dumps(default, ensure_ascii=False)} cannot be written in the "
            f"generated models, which type {untypable}",
            "remove the default and say in the description what leaving the value out means",
        )


def _check_examples(
    ctx: _Ctx, doc: Loaded, path: JsonPath, node: dict[str, Any], root: dict[str, Any]
) -> None:
    """GEN203 at each item of `examples` its own schema refuses, as for a `default`: a model
    choosing arguments takes the examples in the tool's schema for values it may send, and
    TOOLS.md shows a call with the first one, which the gateway would refuse."""
    for i, example in enumerate(node["examples"]):
        try:
            problem = _refusal(node, root, example)
        except _Unchecked:
            return
        if problem is not None:
            ctx.err(
                "GEN203",
                doc.span((*path, i)),
                f"example {shortened(json.dumps(example, ensure_ascii=False))} does not match "
                f"its schema{problem}",
                "give an example the schema accepts, or remove it",
            )


def _untypable_default(node: Any, value: Any, root: dict[str, Any], depth: int = 0) -> str | None:
    """What in a valid `value` the models cannot declare as a default, or None: the models and
    the client write a string default as the text it is (`since: datetime | None =
    "2024-01-01T00:00:00Z"`), which type checkers refuse where a format types the field as a
    class. (Object defaults are fine: the models build them with a default factory.)"""
    if depth < MAX_NESTING and (target := _referent(node, root)) is not node:
        return _untypable_default(target, value, root, depth + 1)
    if not isinstance(node, dict):
        return None
    if isinstance(value, str) and _typed_format(node):
        fmt = node["format"]
        return f"a {fmt} string as {TYPED_FORMATS[fmt]}"
    if isinstance(value, list) and depth < MAX_NESTING:
        for item in value:
            found = _untypable_default(node.get("items"), item, root, depth + 1)
            if found is not None:
                return found
    return None


# The one form of local `$ref` left after shared types are inlined: a `$defs` entry of the root.
_DEFS_REF = re.compile(r"#/\$defs/([^/]+)")


def _defs_name(ref: str) -> str | None:
    """The `$defs` entry a `$ref` names (`#/$defs/Name`), else None."""
    m = _DEFS_REF.fullmatch(unquote(ref))
    return m[1].replace("~1", "/").replace("~0", "~") if m else None


def _check_ref(
    ctx: _Ctx, doc: Loaded, path: JsonPath, ref: str, root: dict[str, Any], keyword: str
) -> None:
    """A `$ref` or `$dynamicRef` left after inlining must name a `$defs` entry of the tool's
    schema (`#/$defs/Name`, or `#name` for the entry that declares `$anchor` or
    `$dynamicAnchor` `name`) that does not lead back to itself. Any other reference into the
    schema (`#`, `#/properties/...`) or a `$defs` entry reaching itself makes the schema
    recursive or aliases part of it, which is not supported (nor are cycles of shared types,
    GEN215): the models generator typed `$ref: "#"` as an empty model, and the data was
    dropped. A tool's schema is the whole document, so a `$dynamicRef` has no outer schema to
    bring another `$dynamicAnchor` into scope: it resolves as a `$ref` does (JSON Schema
    2020-12, 8.2.3.2), and one that resolves nowhere is an invalid schema (the models
    generator failed on it, reported at emit and at the group's first tool)."""
    hint = "declare the type under `types:` and refer to it as #/types/Name (it is inlined)"
    pointer = _local_pointer(root, ref, keyword)
    if pointer is None:
        if ref.startswith("#") and not unquote(ref[1:]).startswith("/"):
            name = unquote(ref[1:])
            anchors = _ANCHORS[keyword]
            ctx.err(
                "GEN203",
                doc.span(path),
                f"{keyword} {ref!r} names no {' or '.join(anchors)} of this schema",
                f"declare `{anchors[-1]}: {name}` on a $defs entry of this schema, or refer "
                "to the entry as #/$defs/Name",
            )
            return
        ctx.err(
            "GEN203",
            doc.span(path),
            f"{keyword} {ref!r} points to nothing in this schema",
            "refer to a shared type as #/types/Name, or to a $defs entry of this schema",
        )
        return
    target = _follow(root, pointer)  # `pointer` leads somewhere (`_local_pointer`)
    start = _defs_name(pointer)
    if start is None:
        where = "root" if pointer in ("#", "#/") else f"part {pointer[1:]!r}"
        ctx.err(
            "GEN203",
            doc.span(path),
            f"{keyword} {ref!r} refers to this schema's own {where}: recursive and "
            "self-referencing schemas are not supported",
            hint,
        )
        return
    # Follow `$defs` references from the target: reaching it again is a cycle.
    seen: set[str] = set()
    todo = [target]
    while todo:
        for name in _defs_refs(todo.pop(), root):
            if name == start:
                ctx.err(
                    "GEN203",
                    doc.span(path),
                    f"{keyword} {ref!r} is recursive ($defs entry {start!r} refers back to "
                    "itself): recursive schemas are not supported",
                    hint,
                )
                return
            if name not in seen and isinstance(root["$defs"].get(name), dict | bool):
                seen.add(name)
                todo.append(root["$defs"][name])


_REF_KEYWORDS = ("$ref", "$dynamicRef")
# The anchors each reference finds by plain name. 2020-12 lets a `$ref` find a `$dynamicAnchor`
# too, but datamodel-code-generator does not ("Unresolved $id reference"), so that one is
# refused here rather than at emit.
_ANCHORS = {"$ref": ("$anchor",), "$dynamicRef": ("$anchor", "$dynamicAnchor")}


def _defs_refs(schema: Any, root: dict[str, Any]) -> Iterator[str]:
    """The `$defs` entries that `schema` and its subschemas refer to (`$ref` or `$dynamicRef`,
    by pointer or anchor)."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            pointer = _local_pointer(root, ref, keyword) if isinstance(ref, str) else None
            name = _defs_name(pointer) if pointer is not None else None
            if name is not None:
                yield name
        todo.extend(sub for _path, sub in _subschemas((), node))


def _check_typable(ctx: _Ctx, doc: Loaded, path: JsonPath, value: Any, what: str) -> None:
    """A `const` or `enum` value becomes a `Literal[...]` of the models and the client, and a
    Literal holds only strings, integers, booleans and None. datamodel-code-generator turns an
    object or a list into its plain type (`dict[str, str]`, `list[int]`), and a `const` number
    into `float`: the models would accept any such value, and an optional one got a `None`
    default its type does not admit. Refused, with a spelling that can be typed. (Numbers in
    an `enum` are typed `float`, wider than the enum but not wrong: they pass.)"""
    if isinstance(value, dict):
        kind = "an object"
        fields = [f"{k}: {{const: {json.dumps(v)}}}" for k, v in value.items()]
        hint = (
            "give the object its properties, each with its own const: {type: object, "
            f"required: [{', '.join(value)}], properties: {{{', '.join(fields)}}}}}"
        )
    elif isinstance(value, list):
        kind = "a list"
        items = ", ".join(f"{{const: {json.dumps(v)}}}" for v in value)
        hint = (
            "give the list one const per item: {type: array, "
            f"prefixItems: [{items}], minItems: {len(value)}, maxItems: {len(value)}}}"
        )
    elif isinstance(value, float) and what == "const":
        kind = "a floating-point number"
        hint = (
            f"write it as the integer {int(value)}"
            if value.is_integer()
            else f"use {{type: number, minimum: {value!r}, maximum: {value!r}}}"
        )
    else:
        return
    ctx.err(
        "GEN222",
        doc.span(path),
        f"{what} {json.dumps(value, ensure_ascii=False)} is {kind}: the generated models "
        "cannot type it (a Literal holds only strings, integers, booleans and null) and "
        "would accept any such value",
        hint,
    )


def _check_regex(ctx: _Ctx, doc: Loaded, path: JsonPath, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        ctx.err("GEN203", doc.span(path), f"invalid regular expression {pattern!r}: {exc}")
    except (RecursionError, OverflowError):  # groups nested past what the parser handles
        shown = shortened(pattern)
        ctx.err(
            "GEN203", doc.span(path), f"invalid regular expression {shown!r}: nested too deeply"
        )
    else:
        why = regex_hazard(pattern)
        if why is not None:
            ctx.err(
                "GEN203",
                doc.span(path),
                f"regular expression {shortened(pattern)!r} can take exponential time to refuse "
                f"a text ({why}): a caller could hold the gateway for minutes with one argument",
                "let each character have one place to go: a separator the repeated part cannot "
                "take (^[a-z]+(-[a-z]+)*$), or no repetition inside a repetition (^a+$ for "
                "^(a+)+$)",
            )


def _referent(node: Any, root: dict[str, Any]) -> Any:
    """The node in `root` that `node`'s local `$ref` or `$dynamicRef` names, as `_check_ref`
    resolves them (`#`, `#/a/b`, or `#name` for the node that declares the anchor `name`), or
    None when it names nothing; `node` itself when it is no reference."""
    if isinstance(node, dict):
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str):
                pointer = _local_pointer(root, ref, keyword)
                return None if pointer is None else _follow(root, pointer)
    return node


def _follow(root: dict[str, Any], pointer: str) -> Any:
    """The node a JSON pointer fragment (`#`, `#/a/b`) names in `root`, else None."""
    fragment = unquote(pointer[1:])
    if fragment and not fragment.startswith("/"):
        return None  # `#name` is an anchor, not the root (a `$ref: "#nowhere"` read as "#")
    node: Any = root
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _local_pointer(root: dict[str, Any], ref: str, keyword: str) -> str | None:
    """The JSON pointer fragment of the node a local `keyword` reference names in `root`, else
    None: a pointer that leads somewhere as it is, a plain name (`#node`) as the place of the
    subschema that declares `$anchor: node` (or, for `$dynamicRef`, `$dynamicAnchor: node`)."""
    if not ref.startswith("#"):
        return None
    name = unquote(ref[1:])
    if not name or name.startswith("/"):
        return ref if _follow(root, ref) is not None else None
    todo: deque[tuple[JsonPath, Any]] = deque([((), root)])  # breadth first
    while todo:
        path, node = todo.popleft()
        if not isinstance(node, dict):
            continue
        if any(node.get(anchor) == name for anchor in _ANCHORS[keyword]):
            return "#" + "".join(
                "/" + quote(str(p).replace("~", "~0").replace("/", "~1"), safe="~") for p in path
            )
        todo.extend(_subschemas(path, node))
    return None


def _annotations(raw: dict[str, Any] | None) -> ir.Annotations:
    """The manifest's annotations, a hint it does not give taking MCP's default (the
    ToolAnnotations of the specification): not read-only, destructive unless read-only, not
    idempotent, open world. The safe reading of silence: a client confirms a tool that may
    destroy and treats one that may reach outside as such. (They were all false: a write tool
    that did not say was shown as non-destructive, a connector tool as closed-world.)"""
    given = raw or {}
    read_only = bool(given.get("read_only", False))
    return ir.Annotations(
        read_only=read_only,
        destructive=bool(given.get("destructive", not read_only)),
        idempotent=bool(given.get("idempotent", False)),
        open_world=bool(given.get("open_world", True)),
    )


def _deprecation(raw: dict[str, Any] | None) -> ir.Deprecation | None:
    return ir.Deprecation(**raw) if raw else None


_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def deprecation_note(reason: str | None, replacement: str | None, sunset: str | None) -> str:
    """What the model reads about a deprecated tool or property (appended to its description):
    `Deprecated: use X instead (sunset 2027-01-31). <reason>`."""
    when = f" (sunset {sunset})" if sunset else ""
    note = f"Deprecated: use {replacement} instead{when}." if replacement else f"Deprecated{when}."
    reason = (reason or "").strip()
    if reason:
        note += " " + reason + ("" if reason.endswith((".", "!", "?")) else ".")
    return note


def _with_note(description: str, deprecated: dict[str, Any] | None) -> str:
    if not deprecated:
        return description
    note = deprecation_note(
        deprecated.get("reason"), deprecated.get("replacement"), deprecated.get("sunset")
    )
    return f"{description}\n\n{note}" if description else note


def _property_deprecations(ctx: _Ctx, doc: Loaded, path: JsonPath, schema: Any) -> Any:
    """A copy of an input schema in which each property marked `deprecated: true` (JSON Schema
    2020-12) has the deprecation note appended to its description; `x-replacement` names the
    sibling property to use instead, `x-sunset` the date after which it may be removed. The
    schema may share nodes with inlined shared types, so nothing is mutated."""
    if isinstance(schema, list):
        return [_property_deprecations(ctx, doc, (*path, i), v) for i, v in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out = {k: _property_deprecations(ctx, doc, (*path, k), v) for k, v in schema.items()}
    props = out.get("properties")
    if not isinstance(props, dict):
        return out
    new_props = {}
    for name, prop in props.items():
        if isinstance(prop, dict) and prop.get("deprecated") is True:
            where = (*path, "properties", name)
            repl, sunset = prop.get("x-replacement"), prop.get("x-sunset")
            if repl is not None and (
                not isinstance(repl, str) or repl not in props or repl == name
            ):
                ctx.err(
                    "GEN218",
                    doc.span((*where, "x-replacement")),
                    f"property {name!r} names replacement {repl!r}, which is not another "
                    "property of the same object",
                )
            if sunset is not None and not (isinstance(sunset, str) and _DATE.match(sunset)):
                ctx.err(
                    "GEN218",
                    doc.span((*where, "x-sunset")),
                    f"x-sunset of property {name!r} must be a date YYYY-MM-DD",
                )
            note = deprecation_note(
                prop.get("x-deprecation-reason"),
                repl if isinstance(repl, str) else None,
                sunset if isinstance(sunset, str) else None,
            )
            text = str(prop.get("description", "")).strip()
            prop = {**prop, "description": f"{text} {note}" if text else note}
        new_props[name] = prop
    out["properties"] = new_props
    return out


def _bind(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, str] | None,
    input_schema: dict[str, Any] | None,
) -> ir.Pairs:
    pairs = tuple(sorted((raw or {}).items()))
    props = (input_schema or {}).get("properties", {})
    for param, _source in pairs:
        if param in props:
            ctx.err(
                "GEN209",
                doc.key_span((*path, "bind", param)),
                f"{param!r} is bound from the session, so it must not appear in the input schema",
                "remove it from input.properties: the model must never fill it",
            )
    return pairs


# What pagination adds to a tool's schemas when the tool does not declare it (see _http).
_IMPLICIT_INPUT: frozenset[str] = frozenset({"cursor"})
_IMPLICIT_OUTPUT: frozenset[str] = frozenset({"next_cursor"})
_NONE: frozenset[str] = frozenset()


def _common(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, Any],
    name: str,
    family: str,
    group: str,
    connector: str | None,
) -> dict[str, Any] | None:
    ctx.tool_names.add(name)
    span = doc.span((*path, "name"))
    if not is_valid_tool_name(name):
        hint = None
        if len(name) > MAX_TOOL_NAME:
            hint = f"{len(name)} characters; the limit is {MAX_TOOL_NAME} including the prefix"
        ctx.err("GEN202", span, f"tool name {name!r} does not match ^[A-Za-z0-9_-]{{1,64}}$", hint)
    paged = isinstance(raw.get("http"), dict) and "pagination" in raw["http"]
    input_schema = _schema(
        ctx, doc, (*path, "input"), raw["input"], "input", _IMPLICIT_INPUT if paged else _NONE
    )
    if input_schema is not None:
        input_schema = _property_deprecations(ctx, doc, (*path, "input"), input_schema)
    output_schema = _schema(
        ctx, doc, (*path, "output"), raw["output"], "output", _IMPLICIT_OUTPUT if paged else _NONE
    )
    bind = _bind(ctx, doc, path, raw.get("bind"), input_schema)
    for part, schema in (("input", input_schema), ("output", output_schema)):
        if schema is not None:
            _check_property_names(ctx, doc, (*path, part), schema)
    return {
        "name": name,
        "family": family,
        "group": PyIdent(group),
        "connector": connector,
        "title": raw.get("title"),
        "description": _with_note(raw["description"].strip(), raw.get("deprecated")),
        "scope": raw["scope"],
        "annotations": _annotations(raw.get("annotations")),
        "bind": bind,
        "tags": tuple(raw.get("tags", ())),
        "deprecated": _deprecation(raw.get("deprecated")),
        "py_name": PyIdent(name),
        "input_model": ClassName(f"{name}_input"),
        "output_model": ClassName(f"{name}_output"),
        "source": doc.path,
        "span": span,
        "_input": input_schema,
        "_output": output_schema,
    }


def _snake(name: str) -> str:
    return PyIdent(_CAMEL.sub("_", name).lower())


def _check_property_names(ctx: _Ctx, doc: Loaded, path: JsonPath, schema: dict[str, Any]) -> None:
    """GEN208 for two properties of one object, at any depth of the input or output schema at
    `path` (shared types inlined), that become one Python field name (`userName` and
    `user_name`). The models would name the second `user_name_1` with the alias `user_name`,
    and a model that also takes fields by name read the key `user_name` as the first's: it
    refused valid data."""
    root = len(path) - 1  # where "input" or "output" is

    def check(at: JsonPath, node: Any) -> None:
        if not isinstance(node, dict):
            return
        properties = node.get("properties")
        seen: dict[str, str] = {}
        for prop in properties if isinstance(properties, dict) else ():
            py = _snake(prop)
            if py in seen:
                ctx.err(
                    "GEN208",
                    doc.key_span((*at, "properties", prop)),
                    f"properties {seen[py]!r} and {prop!r} of {'/'.join(map(str, at[root:]))} "
                    f"both become the Python name {py!r}",
                    "rename one of them (a connector's response.fields can give an upstream's "
                    "field another name in the output)",
                )
            seen[py] = prop
        for sub_path, sub in _subschemas(at, node):
            check(sub_path, sub)

    check(path, schema)


def _finish(common: dict[str, Any], **extra: Any) -> ir.Tool | None:
    input_schema, output_schema = common.pop("_input"), common.pop("_output")
    if input_schema is None or output_schema is None:
        return None
    return ir.Tool(
        input_schema=ir.Json.of(input_schema),
        output_schema=ir.Json.of(output_schema),
        **common,
        **extra,
    )


def _handler_tool(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], kind: str
) -> ir.Tool | None:
    common = _common(ctx, doc, path, raw, raw["name"], kind, kind, None)
    if raw["handler"] not in TOOL_HANDLERS:
        prefix = raw["handler"].split(".")[0] + "."
        options = sorted(h for h in TOOL_HANDLERS if h.startswith(prefix)) or sorted(TOOL_HANDLERS)
        ctx.err(
            "GEN206",
            doc.span((*path, "handler")),
            f"unknown handler {raw['handler']!r}",
            "available: " + ", ".join(options),
        )
    if common is None:
        return None
    return _finish(common, handler=raw["handler"], http=None, entities=())


_SAME_AS_SETTINGS = (
    "make them equal: the memory settings decide what the store does, the tool's schema what "
    "clients are told"
)


def _check_memory_schemas(
    ctx: _Ctx,
    memory: ir.Memory,
    memory_doc: Loaded | None,
    found: Sequence[tuple[Loaded, JsonPath, ir.Tool]],
) -> None:
    """GEN232 where a memory tool's input schema tells clients other than what the memory store
    does: top_k's default other than `memory.default_top_k` (what a call without top_k gets),
    top_k without a maximum, or with one over the store's MAX_TOP_K or under default_top_k,
    and an observation's text without a maxLength or with one other than
    `memory.max_observation_chars`. The settings are the one source of what the store does:
    tools/list advertised top_k's default 5 while calls got 10, and a 4,000-character text
    the store refused past 100 characters. A schema that leaves top_k or the text out has
    nothing to disagree about."""

    def setting(name: str) -> str:
        value = getattr(memory, name)
        if memory_doc is None or name not in memory_doc.data["memory"]:
            return f"memory.{name}, {value} (the default)"
        return f"memory.{name}, {value} ({memory_doc.span(('memory', name))})"

    for doc, path, tool in found:
        properties = tool.input_schema.value.get("properties") or {}
        top_k = properties.get("top_k")
        if tool.handler == "memory.retrieve_relevant_chunks" and isinstance(top_k, dict):
            at = (*path, "input", "properties", "top_k")
            default = top_k.get("default", memory.default_top_k)
            if isinstance(default, bool) or default != memory.default_top_k:
                ctx.err(
                    "GEN232",
                    doc.span((*at, "default")),
                    f"{tool.name}: top_k's default is {json.dumps(default)}, but a call without "
                    f"top_k gets {setting('default_top_k')}",
                    _SAME_AS_SETTINGS,
                )
            most = _largest_integer(top_k)
            bound = doc.span((*at, "maximum" if "maximum" in top_k else "exclusiveMaximum"))
            if most is None or most > MAX_TOP_K:
                ctx.err(
                    "GEN232",
                    bound,
                    f"{tool.name}: top_k may be "
                    + ("any number" if most is None else f"up to {most}")
                    + f", but the memory store returns at most {MAX_TOP_K} chunks and refuses "
                    "a larger top_k",
                    f"set its maximum to {MAX_TOP_K} or less",
                )
            elif most < memory.default_top_k:
                ctx.err(
                    "GEN232",
                    bound,
                    f"{tool.name}: top_k may be up to {most}, but a call without top_k gets "
                    f"{setting('default_top_k')}",
                    "raise the maximum, or lower memory.default_top_k",
                )
        observations = properties.get("observations")
        items = observations.get("items") if isinstance(observations, dict) else None
        fields = items.get("properties") if isinstance(items, dict) else None
        text = fields.get("text") if isinstance(fields, dict) else None
        if tool.handler == "memory.update_memory" and isinstance(text, dict):
            at = (*path, "input", "properties", "observations", "items", "properties", "text")
            longest = text.get("maxLength")
            if longest != memory.max_observation_chars:
                ctx.err(
                    "GEN232",
                    doc.span((*at, "maxLength")),
                    f"{tool.name}: an observation's text may be "
                    + ("of any length" if longest is None else f"{longest} characters long")
                    + f", but the store refuses one longer than {setting('max_observation_chars')}",
                    _SAME_AS_SETTINGS,
                )
        if tool.handler == "memory.update_memory" and isinstance(observations, dict):
            _check_memory_limits(ctx, doc, (*path, "input", "properties"), tool.name, properties)


# What update_memory's schema may allow at most: the memory store refuses more.
_MEMORY_LIMITS: Final = (
    (("observations",), "maxItems", MAX_OBSERVATIONS_PER_CALL, "observations in one call"),
    (("observations", "items", "properties", "source"), "maxLength", MAX_SOURCE_CHARS, "a source"),
    (("observations", "items", "properties", "topic"), "maxLength", MAX_TOPIC_CHARS, "a topic"),
    (("observations", "items", "properties", "tags"), "maxItems", MAX_TAGS, "tags"),
    (("observations", "items", "properties", "tags", "items"), "maxLength", MAX_TAG_CHARS, "a tag"),
)


def _check_memory_limits(
    ctx: _Ctx, doc: Loaded, at: JsonPath, tool: str, properties: dict[str, Any]
) -> None:
    """GEN232 where update_memory's schema lets a client send more than the store takes (a
    topic's maxLength of 300: the call passed the schema and the store refused it); less is
    the schema's to ask. A schema that leaves the property out has nothing to disagree about."""
    for where, keyword, limit, what in _MEMORY_LIMITS:
        schema: Any = properties
        for key in where:
            schema = schema.get(key) if isinstance(schema, dict) else None
        if not isinstance(schema, dict):
            continue
        bound = schema.get(keyword)
        if isinstance(bound, int) and not isinstance(bound, bool) and bound <= limit:
            continue
        unit = "items" if keyword == "maxItems" else "characters"
        ctx.err(
            "GEN232",
            doc.span((*at, *where, keyword)) if keyword in schema else doc.span((*at, *where)),
            f"{tool}: the schema allows "
            + (f"{bound} {unit}" if bound is not None else f"any number of {unit}")
            + f" for {what}, but the memory store refuses more than {limit}",
            f"set {keyword} to {limit} or less",
        )


def _largest_integer(schema: dict[str, Any]) -> int | None:
    """The largest integer a schema's `maximum` and `exclusiveMaximum` allow (None: no bound)."""
    bounds = []
    if isinstance(schema.get("maximum"), (int, float)):
        bounds.append(math.floor(schema["maximum"]))
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        bounds.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    return min(bounds, default=None)


def _check_tool_names(ctx: _Ctx, tools: list[ir.Tool]) -> None:
    by_name: dict[str, ir.Tool] = {}
    by_py: dict[str, ir.Tool] = {}
    by_class: dict[str, ir.Tool] = {}
    for t in sorted(tools, key=lambda t: (t.span.file, t.span.line, t.span.col)):
        if t.name in by_name:
            ctx.err("GEN201", t.span, f"tool {t.name!r} is also defined at {by_name[t.name].span}")
            continue
        by_name[t.name] = t
        for table, key, what in (
            (by_py, t.py_name, "Python name"),
            (by_class, t.input_model, "model class"),
        ):
            other = table.get(key)
            if other is not None:
                ctx.err(
                    "GEN208",
                    t.span,
                    f"tools {other.name!r} ({other.span}) and {t.name!r} both get the {what} "
                    f"{key!r}",
                    "rename one of them",
                )
                break  # one collision report per pair of tools
            table[key] = t


def _check_nested_models(ctx: _Ctx, tools: list[ir.Tool]) -> None:
    """GEN208 for a tool whose model class may be the name datamodel-code-generator gives an
    object nested in another tool's model of the same group (one models module): tool
    `orders`' output property `input` (an object) becomes `OrdersOutputInput`, the input model
    of a tool `orders_output`. The first class met keeps the name and the other takes a digit,
    so the client imported the wrong class (the emitter found it, at build time only). The
    names are `names.could_name_nested`'s, which the emitter's own check stands behind."""
    by_group: dict[str, dict[str, ir.Tool]] = {}
    for t in tools:
        by_group.setdefault(t.group, {}).setdefault(t.name, t)  # a repeated name is GEN201
    for group in by_group.values():
        # Sorted, the names a model's name begins form one run from where it would go: found
        # by bisection (each model against every other took 18 s for 4,000 tools).
        models = sorted(
            ((m, u) for u in group.values() for m in (u.input_model, u.output_model)),
            key=lambda pair: pair[0],
        )
        names = [m for m, _u in models]
        for t in group.values():
            for model, schema in (
                (t.input_model, t.input_schema.value),
                (t.output_model, t.output_schema.value),
            ):
                taken = []
                for m, u in itertools.islice(models, bisect.bisect_left(names, model), None):
                    if not m.startswith(model):
                        break
                    if u is not t:
                        taken.append((m, u))
                if not taken:
                    continue
                parts = nested_name_parts(schema)
                for m, u in taken:
                    if could_name_nested(model, m, parts):
                        ctx.err(
                            "GEN208",
                            u.span,
                            f"the model class {m} of tool {u.name!r} is also the name of a class "
                            f"the models give an object nested in {model}, of tool {t.name!r} "
                            f"({t.span}): they are named <Tool><Input|Output><Property>",
                            "rename the tool, or that property",
                        )
        models_of: dict[str, ir.Tool] = {str(m): u for m, u in models}
        for t in group.values():
            for side, schema in (
                ("input", t.input_schema.value),
                ("output", t.output_schema.value),
            ):
                for name in sorted(unscoped_names(schema) & models_of.keys()):
                    u = models_of[name]
                    ctx.err(
                        "GEN208",
                        t.span,
                        f"an allOf property of the {side} of tool {t.name!r} gets the class "
                        f"name {name}, the model class of tool {u.name!r}"
                        + ("" if u is t else f" ({u.span})")
                        + ": the models name an allOf's class after its property alone",
                        "rename that property, or the tool",
                    )


def _check_client_methods(
    ctx: _Ctx, tools: list[ir.Tool], resources: Sequence[ir.Resource]
) -> None:
    """GEN208 for two methods of the generated client with one name: a tool's method (its
    `py_name`) named like an attribute of the client's base class, which it would replace
    (`stdio`, `http`...), or like a resource's reader (`read_<resource>`); and two readers of
    one name (`a-b` and `a_b`). Tools that share a name among themselves are `_check_tool_names`'
    to report. Each collision is reported at the tool, or at the later resource."""
    owners: dict[str, tuple[str, Span]] = {}  # reader name -> its resource
    methods = [("resource", r.name, reader_method(r.name), r.span) for r in resources]
    methods += [("tool", t.name, str(t.py_name), t.span) for t in tools]
    for kind, raw, name, span in methods:
        what = f"{kind} {raw!r} gets the client {'reader' if kind == 'resource' else 'method'}"
        if name in CLIENT_BASE_NAMES:
            ctx.err(
                "GEN208",
                span,
                f"{what} {name!r}, which the generated client inherits from ClientBase",
                f"rename the {kind}",
            )
        elif name in owners:
            other, at = owners[name]
            ctx.err(
                "GEN208",
                span,
                f"{what} {name!r}, the reader of {other} ({at})",
                f"rename the {kind} or that resource",
            )
        elif kind == "resource":
            owners[name] = (f"resource {raw!r}", span)


# ---------------------------------------------------------------------------- connectors


def _template_nodes(value: Any) -> Iterator[tuple[JsonPath, Any]]:
    """Every value of a template (the root, mappings, lists, strings...), with its path in the
    template, in document order.

    One loop over an explicit stack: a recursive generator hands each value up through one
    frame per level, which made a deep template cost its depth times its size."""
    stack: list[tuple[JsonPath, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if isinstance(item, dict):
            stack.extend(((*path, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*path, i), item[i]) for i in range(len(item) - 1, -1, -1))


def template_strings(value: Any) -> Iterator[tuple[JsonPath, str]]:
    """Every string of a template, with its path in the template, in document order."""
    return ((path, item) for path, item in _template_nodes(value) if isinstance(item, str))


def _placeholders(value: Any) -> Iterator[tuple[JsonPath, str]]:
    """The `{name}` placeholders of a template, by the runtime's own rule (identifiers only)."""
    for sub, text in template_strings(value):
        for m in PLACEHOLDER.finditer(text):
            yield sub, m.group(1)


def _not_placeholders(value: Any, names: set[str]) -> Iterator[tuple[JsonPath, str]]:
    """`{item-id}`-like text naming one of `names` that is not a placeholder (not an
    identifier, or a filter that is not one: `{q|}`): the runtime would send it as literal
    text and drop the argument."""
    for sub, text in template_strings(value):
        for m in _BRACED.finditer(text):
            name = m.group(1).split("|")[0]
            if name in names and not PLACEHOLDER.fullmatch(m.group(0)):
                yield sub, m.group(0)[1:-1]


def _check_filters(ctx: _Ctx, doc: Loaded, path: JsonPath, value: Any) -> None:
    """GEN223 for every `{name|filter}` whose filter does not exist."""
    for sub, text in template_strings(value):
        for m in PLACEHOLDER.finditer(text):
            if m.group(2) is not None and m.group(2) not in FILTERS:
                ctx.err(
                    "GEN223",
                    doc.span((*path, *sub)),
                    f"{m.group(0)} names no template filter",
                    "filters: " + ", ".join(sorted(FILTERS)),
                )


def _check_url_fields(
    ctx: _Ctx, span: Span, key: str, url: str, fields: Sequence[ir.AuthField]
) -> None:
    """The `{field}` placeholders of a connector URL (base_url, auth.token_url): each names a
    non-secret credential field (GEN207), whose value it takes as it is (no filter: GEN223)."""
    public = sorted(f.name for f in fields if not f.secret)
    for m in PLACEHOLDER.finditer(url):
        if m.group(2) is not None:
            ctx.err(
                "GEN223",
                span,
                f"{m.group(0)}: {key} placeholders take no filter (they take a credential "
                "field's value as it is)",
                f"write {{{m.group(1)}}}",
            )
        if m.group(1) not in public:
            ctx.err(
                "GEN207",
                span,
                f"{key} placeholder {m.group(0)} names no non-secret credential field",
                "declare it under auth.fields with `secret: false`"
                + (f" (non-secret now: {', '.join(public)})" if public else ""),
            )
    problem = _url_problem(PLACEHOLDER.sub("x", url))
    if problem is not None:
        shown = _without_password(url)
        ctx.err("GEN226", span, f"{key} {shown!r} {problem}", "e.g. https://api.example.com/v1")


def _without_password(url: str) -> str:
    """`url` for a message: a password in it (a mistake GEN226 reports) shown as ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#@]*@", r"\1***@", url)


def _url_problem(url: str) -> str | None:
    """Why a connector URL (placeholders filled) is not an absolute http(s) URL that requests
    can be made under, or None."""
    if "{" in url or "}" in url:
        return "holds a brace that is not a {field} placeholder (a field name, nothing else)"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an absolute http(s) URL with a host name"
    if parts.username is not None or parts.password is not None:
        return "holds credentials: declare them as the connector's auth instead"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "has a query or fragment: a base URL ends with its path"
    return None


def _connector(
    ctx: _Ctx, doc: Loaded, entity_types: dict[str, ir.EntityType] | None
) -> tuple[ir.Connector, list[ir.Tool]]:
    data = doc.data
    name = data["name"]
    auth = _auth(ctx, doc, data["auth"])
    _check_url_fields(ctx, doc.span(("base_url",)), "base_url", data["base_url"], auth.fields)
    used_elsewhere, ctx.used = ctx.used, set()  # the shared types of this connector's tools
    tools: list[ir.Tool] = []
    for i, raw in enumerate(data["capabilities"]):
        path: JsonPath = ("capabilities", i)
        tool_name = f"{name}_{raw['name']}"
        common = _common(ctx, doc, path, raw, tool_name, "connector", name, name)
        if common is None:
            continue
        input_schema, output_schema = common["_input"], common["_output"]
        http = _http(
            ctx,
            doc,
            (*path, "http"),
            raw["http"],
            input_schema,
            output_schema,
            dict(common["bind"]),
            auth,
        )
        if http.graphql is not None:
            _check_graphql_operation(ctx, doc, path, raw, http.graphql)
        _check_effects(ctx, doc, path, raw)
        entities = tuple(
            _entity(ctx, doc, (*path, "entities", j), e, input_schema, output_schema, entity_types)
            for j, e in enumerate(raw.get("entities", []))
        )
        tool = _finish(common, handler=None, http=http, entities=entities)
        if tool is not None:
            tools.append(tool)
    errors = data.get("errors", {})
    for key in ("ok_field", "message_field"):
        if key in errors:
            _check_dotted(ctx, doc, ("errors", key), errors[key], f"errors.{key}", None)
    connector = ir.Connector(
        name=name,
        title=data["title"],
        description=data["description"].strip(),
        base_url=data["base_url"],
        auth=auth,
        errors=ir.ErrorShape(
            ok_field=errors.get("ok_field"),
            message_field=errors.get("message_field"),
            auth_errors=tuple(errors.get("auth_errors", ())),
            rate_limit_errors=tuple(errors.get("rate_limit_errors", ())),
            not_found_errors=tuple(errors.get("not_found_errors", ())),
            rate_limit_reset_header=errors.get("rate_limit_reset_header"),
        ),
        timeout_seconds=float(data.get("timeout_seconds", 20)),
        retries=int(data.get("retries", 2)),
        tools=tuple(sorted(t.name for t in tools)),
        types=tuple(sorted(ctx.used)),
        source=doc.path,
        span=doc.span(("name",)),
    )
    ctx.used |= used_elsewhere
    return connector, tools


_AUTH_NEEDS = {
    "bearer": ("token_field",),
    "api_key": ("header", "key_field"),
    "basic": ("username_field", "password_field"),
    "oauth2": ("token_field",),
    "none": (),
}
# The keys of `auth` each type reads (`type` and `fields` aside): another is a mistake, such as
# a token_field on basic auth, which sends a user name and a password.
_AUTH_USES = {
    "bearer": ("token_field",),
    "api_key": ("header", "key_field"),
    "basic": ("username_field", "password_field"),
    "oauth2": (
        "token_field",
        "token_url",
        "refresh_token_field",
        "client_id_field",
        "client_secret_field",
    ),
    "none": (),
}
_FIELD_REFS = (
    "token_field",
    "key_field",
    "username_field",
    "password_field",
    "refresh_token_field",
    "client_id_field",
    "client_secret_field",
)


def _auth(ctx: _Ctx, doc: Loaded, raw: dict[str, Any]) -> ir.ConnectorAuth:
    fields = tuple(
        ir.AuthField(
            name=f["name"],
            title=f.get("title"),
            description=f.get("description"),
            secret=f.get("secret", True),
            required=f.get("required", True),
        )
        for f in raw.get("fields", [])
    )
    names: set[str] = set()
    for i, f in enumerate(fields):
        if f.name in names:  # one value per name: which one a tenant stores would be a guess
            ctx.err(
                "GEN217",
                doc.span(("auth", "fields", i, "name")),
                f"credential field {f.name!r} is declared twice in auth.fields",
                "declare it once; a URL placeholder takes a field with secret: false",
            )
        names.add(f.name)
    kind = raw["type"]
    for need in _AUTH_NEEDS[kind]:
        if need not in raw:
            ctx.err("GEN217", doc.span(("auth",)), f"auth type {kind!r} needs `{need}`")
    unused = sorted(set(raw) - {"type", "fields", *_AUTH_USES[kind]})
    for key in unused:
        uses = _AUTH_USES[kind]
        ctx.err(
            "GEN217",
            doc.key_span(("auth", key)),
            f"auth type {kind!r} does not use `{key}`",
            "remove it: "
            + (f"{kind} auth reads " + ", ".join(uses) if uses else "no credentials are sent"),
        )
    for ref in _FIELD_REFS:
        if ref in raw and ref not in unused and raw[ref] not in names:
            ctx.err(
                "GEN217",
                doc.span(("auth", ref)),
                f"auth.{ref} names {raw[ref]!r}, which is not one of auth.fields",
                "declared fields: " + (", ".join(sorted(names)) or "none"),
            )
    if kind == "api_key" and "header" in raw:
        problem = _own_header_problem(raw["header"], "X-API-Key")
        if problem is not None:
            what, hint = problem
            ctx.err(
                "GEN217",
                doc.span(("auth", "header")),
                f"auth.header {raw['header']!r} {what}",
                hint,
            )
    if "token_url" in raw and "token_url" not in unused:
        for need in ("refresh_token_field", "client_id_field", "client_secret_field"):
            if need not in raw:
                ctx.err("GEN217", doc.span(("auth", "token_url")), f"token_url needs `{need}` too")
        span = doc.span(("auth", "token_url"))
        _check_url_fields(ctx, span, "token_url", raw["token_url"], fields)
    return ir.ConnectorAuth(
        type=kind, fields=fields, **{k: raw.get(k) for k in (*_FIELD_REFS, "header", "token_url")}
    )


def _http(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, Any],
    input_schema: dict[str, Any] | None,
    output_schema: dict[str, Any] | None,
    bind: dict[str, str],
    auth: ir.ConnectorAuth,
) -> ir.HttpBinding:
    params = set((input_schema or {}).get("properties", {})) | set(bind)
    pagination = None
    if "pagination" in raw:
        p = raw["pagination"]
        pagination = ir.Pagination(
            style=p["style"],
            **{k: p.get(k) for k in ("param", "next", "more", "size_param", "total")},
        )
        _check_pagination(ctx, doc, path, raw)
        required = input_schema.get("required") if input_schema is not None else None
        if isinstance(required, list) and "cursor" in required:
            ctx.err(
                "GEN213",
                doc.span((*path[:-1], "input", "required", required.index("cursor"))),
                "a paginated tool's cursor may not be required: the first page is asked for "
                "without one, so no call could ever start",
                "remove cursor from required",
            )
        # Replace (never mutate) `properties`: it may be shared with an inlined type.
        for schema, prop, default in (
            (input_schema, "cursor", CURSOR_INPUT),
            (output_schema, "next_cursor", CURSOR_OUTPUT),
        ):
            if schema is not None:
                props = dict(schema.get("properties", {}))
                if prop in props:
                    _check_cursor_property(ctx, doc, path[:-1], prop, props[prop], schema)
                props.setdefault(prop, default)
                schema["properties"] = props
        if p["style"] != "link":  # a link cursor is a whole URL: it is never templated
            params.add("cursor")
    for where, value in binding_templates(raw):
        _check_filters(ctx, doc, (*path, *where), value)
    _check_path_query(ctx, doc, path, raw["path"])
    _check_path_placeholders(ctx, doc, path, raw, input_schema, bind)
    unquoted = _check_unquoted_placeholders(ctx, doc, path, raw, params)
    if input_schema is not None:
        used: set[str] = set(unquoted)  # reported as unquoted, not again as unused
        unknown = False  # a placeholder naming no input: likely the unused input, misspelt
        for where, value in binding_templates(raw):
            part = ".".join(where)
            for sub, ph in _placeholders(value):
                used.add(ph)
                if ph not in params:
                    unknown = True
                    ctx.err(
                        "GEN207",
                        doc.span((*path, *where, *sub)),
                        f"placeholder {{{ph}}} in http.{part} names no input property or "
                        "bound parameter",
                        "known: " + (", ".join(sorted(params)) or "none"),
                    )
            for sub, word in _not_placeholders(value, params):
                name, bar, _filter = word.strip().partition("|")
                used.add(name)  # reported here, not again as unused
                if word != word.strip():
                    why = "a placeholder has no spaces inside its braces"
                    hint = f"write {{{word.strip()}}}"
                elif bar:
                    why = "a filter is written {name|filter}, its name an identifier"
                    hint = "filters: " + ", ".join(sorted(FILTERS))
                elif re.fullmatch("[0-9][A-Za-z0-9_]*", name):  # ASCII, but no identifier
                    why = "a placeholder name does not start with a digit"
                    renamed = PyIdent(name)
                    hint = f"rename the input property to start with a letter or _, e.g. {renamed}"
                else:
                    why = "placeholder names are ASCII identifiers (A-Z, a-z, 0-9, _)"
                    hint = "rename the input property to an ASCII identifier" + (
                        f", e.g. {PyIdent(name)}" if re.search("[A-Za-z0-9]", name) else ""
                    )
                ctx.err(
                    "GEN207",
                    doc.span((*path, *where, *sub)),
                    f"{{{word}}} in http.{part} is not a placeholder: {why}, so it would be "
                    "sent as literal text",
                    hint,
                )
        unused = set(input_schema.get("properties", {})) - used - {"cursor"}
        for name in sorted(unused) if not unknown else ():
            ctx.err(
                "GEN220",
                doc.key_span((*path[:-1], "input", "properties", name)),
                f"input {name!r} is never sent: no template of http uses {{{name}}}",
                "use it in the path, query, headers or "
                + ("GraphQL variables" if "graphql" in raw else "body")
                + ", or remove it",
            )
        # A session value bound for no template: the author meant the upstream to get it.
        for name in sorted(set(bind) - used) if not unknown else ():
            ctx.err(
                "GEN220",
                doc.key_span((*path[:-1], "bind", name)),
                f"bound parameter {name!r} is never sent: no template of http uses {{{name}}}",
                "use it in the path, query, headers or "
                + ("GraphQL variables" if "graphql" in raw else "body")
                + ", or remove it from bind",
            )
    response = raw.get("response", {})
    fields = tuple(response.get("fields", {}).items())
    if "select" in response:
        at: JsonPath = (*path, "response", "select")
        _check_dotted(ctx, doc, at, response["select"], "response.select", "the whole body")
    for prop, dotted in fields:
        at = (*path, "response", "fields", prop)
        whole = "the whole body" + (", as select picks it" if "select" in response else "")
        _check_dotted(ctx, doc, at, dotted, f"response field {prop!r} reads", whole)
    out_props = (output_schema or {}).get("properties", {})
    if output_schema is not None:
        for prop, _where in fields:
            if prop not in out_props:
                ctx.err(
                    "GEN213",
                    doc.key_span((*path, "response", "fields", prop)),
                    f"response field {prop!r} is not a property of the output schema",
                )
        _check_fields_give_required(ctx, doc, path, fields, output_schema, pagination)
    _check_headers(ctx, doc, path, raw, auth)
    return ir.HttpBinding(
        method=raw["method"],
        path=raw["path"],
        query=ir.Json.of(raw.get("query", {})),
        headers=tuple(raw.get("headers", {}).items()),
        body=ir.Json.of(_body(raw)),
        body_encoding=raw.get("body_encoding", "json"),
        graphql=_graphql(ctx, doc, path, raw, _always_given(input_schema, bind)),
        select=response.get("select"),
        fields=fields,
        pagination=pagination,
        idempotency_key=_idempotency_key(ctx, doc, path, raw, auth),
        span=doc.span(path),
        graphql_partial=bool(raw.get("graphql", {}).get("partial", False)),
    )


def _check_path_placeholders(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, Any],
    input_schema: dict[str, Any] | None,
    bind: dict[str, str],
) -> None:
    """GEN233 for a placeholder of http.path that a valid call may leave without a path
    segment. The path takes each value whole, as one segment, and has no way to leave one
    out: an optional input without a default, or one that may be null, failed every call
    without it ("Argument 'id' is required") although tools/list and the typed client said it
    could be left out; an object or a list was sent as its percent-encoded JSON text. A bound
    parameter always has a value (a string); a paginated tool's `{cursor}` is GEN207."""
    if input_schema is None:
        return
    props: dict[str, Any] = input_schema.get("properties", {})
    required = set(input_schema.get("required", ()))
    paginated = "pagination" in raw
    at = doc.span((*path, "path"))
    seen: set[str] = set()
    for _sub, name in _placeholders(raw["path"]):
        if name in seen or name in bind:
            continue
        seen.add(name)
        prop = props.get(name)
        if prop is None or (paginated and name == "cursor"):  # GEN207 for both
            continue
        elsewhere = "send it in http.query or the body instead"
        if name not in required and not (isinstance(prop, dict) and "default" in prop):
            ctx.err(
                "GEN233",
                at,
                f"http.path holds {{{name}}}, but input {name!r} is optional and has no "
                "default: a call that leaves it out cannot build the path",
                f"add {name!r} to required, give it a default, or {elsewhere}",
            )
        if _admits(prop, input_schema, "null"):
            ctx.err(
                "GEN233",
                at,
                f"http.path holds {{{name}}}, but input {name!r} may be null: a call that "
                "gives null cannot build the path",
                f"give {name!r} a type without null, or {elsewhere}",
            )
        wholes = [k for k in ("object", "array") if _admits(prop, input_schema, k)]
        if wholes:
            ctx.err(
                "GEN233",
                at,
                f"http.path holds {{{name}}}, but input {name!r} may be "
                f"{' or '.join('an ' + k for k in wholes)}: its JSON text would be sent as "
                "one path segment",
                f"give {name!r} a scalar type (string, integer, number or boolean), or {elsewhere}",
            )


# Text YAML reads as the same text when written plain in a flow mapping (`{sort_by: x}`).
_PLAIN_FLOW = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def _flow_text(text: str) -> str:
    """`text` as a key or value of a flow mapping: plain, or quoted where YAML would read it
    as something else (a number, null, a boolean) or not at all."""
    plain = _PLAIN_FLOW.fullmatch(text) and text.lower() not in ("null", "true", "false")
    return text if plain else json.dumps(text, ensure_ascii=False)


def _check_path_query(ctx: _Ctx, doc: Loaded, path: JsonPath, text: str) -> None:
    """GEN230: a query string or fragment written into http.path (`/search.json?sort_by=x`).
    The request's query is built from http.query (and the cursor's parameter), which replaces
    the path's own whenever it sends a parameter, so the literal one reached the upstream on
    some calls only; and a fragment is never sent to the server at all."""
    start = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
    if start < 0:
        return
    at = doc.span((*path, "path"))
    if text[start] == "?":
        query, hash_mark, fragment = text[start + 1 :].partition("#")
        pairs = parse_qsl(query, keep_blank_values=True)
        moved = ", ".join(f"{_flow_text(k)}: {_flow_text(v)}" for k, v in pairs)
        ctx.err(
            "GEN230",
            at,
            f"http.path holds the query string {'?' + query!r}: the request's query is built "
            "from http.query, which replaces it whenever it sends a parameter"
            + (f", and the fragment {'#' + fragment!r} is never sent" if hash_mark else ""),
            (f"move it into http.query: {{{moved}}}" if moved else "remove the '?'")
            + (", and remove the fragment" if hash_mark else ""),
        )
    else:
        ctx.err(
            "GEN230",
            at,
            f"http.path holds the fragment {text[start:]!r}, which is never sent to the server",
            "remove it",
        )


def _check_unquoted_placeholders(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], params: set[str]
) -> set[str]:
    """GEN231: `body: {ticket: {id: {ticket_id}}}`. In YAML's flow style an unquoted
    `{ticket_id}` is a mapping, `{ticket_id: null}`: the upstream got `{"id": {"ticket_id":
    null}}` and the argument was never sent. The names so found are returned (they are used,
    only misquoted)."""
    found: set[str] = set()
    for where, value in binding_templates(raw):
        if where != ("path",):
            found |= _unquoted(ctx, doc, (*path, *where), value, params, "http." + ".".join(where))
    return found


def _unquoted(
    ctx: _Ctx, doc: Loaded, path: JsonPath, value: Any, names: Collection[str], where: str
) -> set[str]:
    """GEN231 for each one-key mapping of `value` whose value is null and whose key is a
    placeholder naming one of `names`: YAML's reading of an unquoted `{name}`."""
    found: set[str] = set()
    for sub, mapping in _template_nodes(value):
        if not isinstance(mapping, dict) or len(mapping) != 1:
            continue
        ((key, item),) = mapping.items()
        placeholder = PLACEHOLDER.fullmatch(f"{{{key}}}")
        if item is not None or placeholder is None or placeholder.group(1) not in names:
            continue
        found.add(placeholder.group(1))
        ctx.err(
            "GEN231",
            doc.span((*path, *sub)),
            f"{{{key}}} in {where} is not a placeholder: unquoted, YAML reads it as the "
            f"mapping {{{key}: null}}, so the argument would never be sent",
            f'quote it: "{{{key}}}"',
        )
    return found


def _check_fields_give_required(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    fields: tuple[tuple[str, str], ...],
    output_schema: dict[str, Any],
    pagination: ir.Pagination | None,
) -> None:
    """GEN213 at response.fields when it leaves out a property the output requires: the
    output is the mapped fields only (and a paginated tool's next_cursor), so such a property
    is never there, whatever the upstream sends, and every answer fails the output schema."""
    if not fields:  # no mapping: the (selected) body is the output, as the upstream sends it
        return
    given = {prop for prop, _path in fields} | (_IMPLICIT_OUTPUT if pagination else _NONE)
    required = output_schema.get("required", [])
    missing = [repr(name) for name in required if isinstance(name, str) and name not in given]
    if missing:
        one = len(missing) == 1
        them, what = ("it", "property") if one else ("them", "properties")
        ctx.err(
            "GEN213",
            doc.span((*path, "response", "fields")),
            f"response.fields leaves out the required output {what} {listed(missing)}: the "
            "output holds the mapped fields only, so every answer would fail the output schema",
            f"map {them} in response.fields (name: dotted.path), or remove {them} from "
            "output.required",
        )


# An HTTP field name is an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the HTTP client writes on every request, from the request itself.
_CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# Those and the headers of one hop (RFC 9110 7.6.1): the client sets or refuses them, so a
# value declared in http.headers would not be the one sent.
_TRANSPORT_HEADERS = _CLIENT_HEADERS | {"proxy-connection", "keep-alive", "te", "upgrade"}
# Headers the executor or the HTTP client write on every request: a key there would be lost.
_GATEWAY_HEADERS = _CLIENT_HEADERS | {"accept", "content-type", "user-agent"}


def _own_header_problem(name: str, example: str) -> tuple[str, str] | None:
    """Why a header the gateway fills with a value of its own on every request (an idempotency
    key, an API key) cannot be named `name`, as (what it is, hint), or None: it must be a valid
    field name (GEN105 for a name of http.headers) that neither the gateway nor the HTTP client
    writes (GEN229 for http.headers): the value would replace theirs (an API key in
    `Content-Type`, sent in place of the body's type) or be lost. `example` is a name to use."""
    if not _TOKEN.fullmatch(name):
        return (
            "is not a valid HTTP header name",
            f"a header name is letters, digits and !#$%&'*+-.^_`|~, e.g. {example}",
        )
    hint = f"name the header the upstream reads the key from, e.g. {example}"
    folded = name.lower()
    if folded in _GATEWAY_HEADERS:
        return "is a header the gateway sets on every request", hint
    if folded in _TRANSPORT_HEADERS:
        return "is a header of one hop, which the HTTP client sets or refuses", hint
    return None


def _credentials_header(auth: ir.ConnectorAuth) -> str | None:
    """The header that carries the connector's credentials, lower-cased as the names it is
    compared with (header names ignore case), or None."""
    name = credential_header(auth.type, auth.header)
    return None if name is None else name.lower()


def _check_headers(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], auth: ir.ConnectorAuth
) -> None:
    """GEN229 for an http.headers name the request would not carry as declared. (The schema
    has checked that each name is an HTTP token and each value one line of ASCII text.)"""
    credentials = _credentials_header(auth)
    sends_body = "graphql" in raw or raw.get("body") is not None
    seen: dict[str, str] = {}
    for name in raw.get("headers", {}):
        folded = name.lower()
        span = doc.key_span((*path, "headers", name))
        problem = hint = None
        if folded in seen:
            first = doc.key_span((*path, "headers", seen[folded]))
            problem = f"repeats {seen[folded]!r} (at {first}): header names ignore case"
            hint = "keep one of the two: both would be sent"
        elif folded in _TRANSPORT_HEADERS:
            problem = "is a header the HTTP client sets from the request (or one of one hop)"
            hint = "remove it: the client sends its own value"
        elif folded == credentials:
            problem = f"carries the connector's credentials ({auth.type} auth)"
            hint = "remove it: the gateway sends the tenant's credentials in it"
        elif folded == "content-type" and sends_body:
            encoding = "graphql" if "graphql" in raw else raw.get("body_encoding", "json")
            problem = f"is set by the gateway for the {encoding} body it sends"
            hint = "remove it (body_encoding chooses the body's type)"
        seen.setdefault(folded, name)
        if problem is not None:
            ctx.err("GEN229", span, f"http.headers {name!r} {problem}", hint)


def _idempotency_key(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], auth: ir.ConnectorAuth
) -> ir.IdempotencyKey | None:
    """The declared key's place, checked: nothing else of the request may write there (the
    executor would otherwise send one of the two values, not both)."""
    declared = raw.get("idempotency_key")
    if declared is None:
        return None
    ((place, name),) = declared.items()  # the schema allows exactly one
    span = doc.span((*path, "idempotency_key", place))
    what = f"idempotency_key.{place} {name!r}"

    def clash(message: str, hint: str) -> None:
        ctx.err("GEN221", span, f"{what} {message}", hint)

    if place == "header":
        _check_key_header(clash, doc, path, raw, auth, name)
    elif place == "query":
        if name in raw.get("query", {}):
            clash(
                f"is also set by http.query at {doc.key_span((*path, 'query', name))}",
                "the key parameter carries the gateway's key: remove one of the two",
            )
        if raw.get("pagination", {}).get("param") == name:
            clash(
                "is also the pagination parameter",
                "name the parameter the upstream reads the key from",
            )
    elif "graphql" in raw:
        clash(
            "cannot go in a GraphQL request's body (its query and variables)",
            "carry the key in a header",
        )
    else:
        body = raw.get("body")
        if body is not None and not isinstance(body, dict):
            clash(
                "needs an object body: http.body is not one",
                "write the body as an object, or carry the key in a header",
            )
        elif isinstance(body, dict) and name in body:
            clash(
                f"is also set by http.body at {doc.key_span((*path, 'body', name))}",
                "the key field carries the gateway's key: remove it from the body template",
            )
    return ir.IdempotencyKey(
        header=name if place == "header" else None,
        body=name if place == "body" else None,
        query=name if place == "query" else None,
        span=span,
    )


def _check_key_header(
    clash: Callable[[str, str], None],
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, Any],
    auth: ir.ConnectorAuth,
    header: str,
) -> None:
    """A valid field name that no other header of the request uses."""
    upstream_name = "name the header the upstream reads the key from, e.g. Idempotency-Key"
    problem = _own_header_problem(header, "Idempotency-Key")
    if problem is not None:
        clash(*problem)
    folded = header.lower()
    for name in raw.get("headers", {}):
        if name.lower() == folded:
            clash(
                f"is also set by http.headers at {doc.key_span((*path, 'headers', name))}",
                "the key header carries the gateway's key: remove one of the two",
            )
    if folded == _credentials_header(auth):
        clash(
            f"is the header that carries the connector's credentials ({auth.type} auth)",
            upstream_name,
        )


# Which pagination keys each style uses ("param" is needed unless the templates place {cursor}).
_PAGINATION_KEYS = {
    "cursor": {"param", "next", "more"},
    "page": {"param", "more", "size_param"},
    "offset": {"param", "more", "size_param", "total"},
    "link": {"next", "more"},
}


def _body(raw: dict[str, Any]) -> Any:
    """The body template of a binding: a GraphQL request's variables (its document is not a
    template), else `body`."""
    if "graphql" in raw:
        return raw["graphql"].get("variables", {})
    return raw.get("body")


def binding_templates(raw: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """Each template of a binding with its place under `http` (a GraphQL request's body
    template is `graphql.variables`)."""
    body = ("graphql", "variables") if "graphql" in raw else ("body",)
    return [
        (("path",), raw["path"]),
        (("query",), raw.get("query")),
        (("headers",), raw.get("headers")),
        (body, _body(raw)),
    ]


# GraphQL: a variable definition in an operation's header (`$first: Int!`, `$after: String`).
# Spaces, then brackets and spaces (`[ Int!]`): written `\s*\[*\s*`, the two runs of spaces
# were one when there was no bracket, and a run of n spaces not followed by a type was split in
# every way, n**2 steps (18 s for 40,000).
_GQL_VARIABLE = re.compile(
    r"\$([_A-Za-z][_0-9A-Za-z]*)\s*:\s*(?:\[+\s*)?[_A-Za-z][_0-9A-Za-z]*[\s\]!]*(=)?"
)
# Where a block string, a string or a comment ends (none of them hold definitions or uses).
_GQL_BLOCK_STRING = re.compile(r'"""(?:\\"""|[^"]|"(?!""))*"""')
_GQL_STRING_BODY = re.compile(r'"(?:\\.|[^"\\\n])*')  # a string up to its closing quote
_GQL_SPECIAL = re.compile(r'["#]')
# A variable anywhere in a document: its definition or a use.
_GQL_DOLLAR = re.compile(r"\$([_A-Za-z][_0-9A-Za-z]*)")


@functools.lru_cache(maxsize=64)
def _gql_code(query: str) -> str:
    """A GraphQL document with its strings and comments blanked (both checks read it): each
    block string, string and comment becomes one space, scanning from the left. A string that
    does not end on its line is left as it is, and its text read on (a `#` in it starts a
    comment). One pass: trying each quote of such a string as the start of another (a
    regex's sub) read the rest of the line again each time, n**2 steps for `"\\"\\"\\...`."""
    out: list[str] = []
    pos = 0
    while (special := _GQL_SPECIAL.search(query, pos)) is not None:
        start = special.start()
        out.append(query[pos:start])
        if query[start] == "#":
            out.append(" ")
            newline = query.find("\n", start)
            pos = len(query) if newline < 0 else newline
            continue
        block = _GQL_BLOCK_STRING.match(query, start)
        if block is not None:
            out.append(" ")
            pos = block.end()
            continue
        string = _GQL_STRING_BODY.match(query, start)
        end = string.end() if string is not None else start + 1  # it always matches
        if query.startswith('"', end):
            out.append(" ")
            pos = end + 1
            continue
        # Unterminated. Every quote up to `end` was escaped, so a string started there stops
        # at `end` unterminated too: only a comment can start before it.
        comment = query.find("#", start + 1, end)
        stop = end if comment < 0 else comment
        out.append(query[start:stop])
        pos = stop
    out.append(query[pos:])
    return "".join(out)


def _always_given(input_schema: dict[str, Any] | None, bind: dict[str, str]) -> set[str] | None:
    """The parameters every call has a value for: required inputs, inputs with a default
    (applied when the argument is not given) and bound parameters. None when the input schema
    is unusable (already reported)."""
    if input_schema is None:
        return None
    props: dict[str, Any] = input_schema.get("properties", {})
    required = set(input_schema.get("required", ())) & set(props)
    # A property's schema may be a boolean (`true`: anything), which has no default.
    defaults = {
        name for name, schema in props.items() if isinstance(schema, dict) and "default" in schema
    }
    return required | defaults | set(bind)


def _droppable_by(value: Any, given: set[str]) -> tuple[list[str], bool]:
    """The placeholders without which a body template value is left out of a call, by the
    runtime's rule, and whether it takes all of them missing (a nested object or list, dropped
    only when none of its placeholders has a value) or one (a string). No placeholders: the
    value is sent on every call."""
    names = {ph for _, ph in _placeholders(value)}
    if isinstance(value, str):
        return sorted(names - given), False
    if names & given:
        return [], True
    return sorted(names), True


def _graphql(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], given: set[str] | None
) -> str | None:
    """A GraphQL binding's document, checked against the binding: a POST with no `body`,
    whose `variables` are exactly variables the document declares, and which gives every
    required variable (`$id: ID!` without a default) a value on every call (`given`: the
    parameters every call has, None when unknown). GEN224 for each problem."""
    spec = raw.get("graphql")
    if spec is None:
        return None
    where = (*path, "graphql")
    query: str = spec["query"]
    if raw["method"] != "POST":
        ctx.err(
            "GEN224",
            doc.span((*path, "method")),
            "a GraphQL request is a POST",
            "write method: POST",
        )
    for other in ("body", "body_encoding"):
        if other in raw:
            ctx.err(
                "GEN224",
                doc.key_span((*path, other)),
                f"http.{other} and http.graphql both set the body",
                "a GraphQL request's body is its query and variables: keep graphql",
            )
    text = _gql_code(query)
    if text.count("{") != text.count("}") or text.count("(") != text.count(")"):
        ctx.err(
            "GEN224",
            doc.span((*where, "query")),
            "the GraphQL document's braces or parentheses do not pair up",
            # a plain scalar ends at ` #`, which YAML reads as a comment; no other style loses text
            "in a plain YAML scalar ` #` starts a comment: a block scalar (query: |) keeps "
            "the document as written"
            if doc.scalar_style((*where, "query")) is None
            else None,
        )
    declared: dict[str, bool] = {}  # name -> required (non-null, no default)
    definitions: set[int] = set()
    for m in _GQL_VARIABLE.finditer(text):
        declared[m[1]] = m[2] is None and m[0].rstrip().endswith("!")
        definitions.add(m.start())
    # GraphQL validation refuses the whole document for a variable used without a definition,
    # or defined and never used.
    used = {m[1] for m in _GQL_DOLLAR.finditer(text) if m.start() not in definitions}
    for name in sorted(used - set(declared)):
        ctx.err(
            "GEN224",
            doc.span((*where, "query")),
            f"the GraphQL document uses ${name}, which its operation does not declare",
            "declared: " + (", ".join(f"${v}" for v in sorted(declared)) or "none"),
        )
    for name in sorted(set(declared) - used):
        ctx.err(
            "GEN224",
            doc.span((*where, "query")),
            f"the GraphQL document declares ${name} but never uses it",
            "pass it to a field or directive argument, or remove its definition",
        )
    variables = spec.get("variables", {})
    for key in variables:
        if key not in declared:
            ctx.err(
                "GEN224",
                doc.key_span((*where, "variables", key)),
                f"variable {key!r} is not declared by the GraphQL document",
                "declared: " + (", ".join(f"${v}" for v in sorted(declared)) or "none"),
            )
    for name, required in sorted(declared.items()):
        if required and name not in variables:
            ctx.err(
                "GEN224",
                doc.span((*where, "query")),
                f"the GraphQL document requires ${name}, which graphql.variables does not give",
                f'add variables: {{{name}: "{{argument}}"}}',
            )
        elif required and given is not None:
            missing, all_of = _droppable_by(variables[name], given)
            if missing:
                braced = [f"{{{ph}}}" for ph in missing]
                calls = (
                    "that give neither " + " nor ".join(braced)
                    if all_of and len(braced) > 1
                    else "that do not give " + " or ".join(braced)
                )
                ctx.err(
                    "GEN224",
                    doc.key_span((*where, "variables", name)),
                    f"the GraphQL document requires ${name}, but graphql.variables leaves it "
                    f"out of calls {calls}",
                    "make the input required or give it a default, or declare the variable "
                    f"nullable (${name} without !)",
                )
    return query


def _gql_operations(query: str) -> list[str]:
    """The kind (query, mutation, subscription) of each operation a GraphQL document defines;
    fragments are not operations, and a bare `{ ... }` is a query."""
    text = _gql_code(query)
    kinds: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                words = text[start:i].split()
                head = words[0] if words else "query"
                if head != "fragment":
                    kinds.append(head if head in ("mutation", "subscription") else "query")
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                start = i + 1
    return kinds


# Methods whose request changes the resource it names (RFC 9110 section 9.2.1): never read-only.
WRITING_METHODS = frozenset({"PUT", "PATCH", "DELETE"})


def _check_effects(ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any]) -> None:
    """GEN225: a capability that writes upstream says so. Its HTTP method may not be one that
    changes data when it claims the read scope (read-only API keys would run it) or the
    read_only annotation (clients run read-only tools without asking). And entity mappings
    belong on read capabilities: `fastn_search_entities`, a read tool, runs them for any key
    that may read."""
    method = raw["http"]["method"]
    if method in WRITING_METHODS:
        what = f"the capability sends {method}, which changes data upstream"
        _check_write_claims(ctx, doc, path, raw, "GEN225", what)
    if raw.get("entities") and raw["scope"] != "read":
        ctx.err(
            "GEN225",
            doc.key_span((*path, "entities")),
            "entity mappings on a write capability: fastn_search_entities, a read tool, would "
            "run it for keys that may only read",
            "map the entity type on a capability with scope: read that lists or searches records",
        )


def _check_write_claims(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], code: str, what: str
) -> None:
    """`code` where a capability that writes upstream (`what` says how) claims the read scope
    (read-only API keys would run it) or the read_only annotation (clients run read-only tools
    without asking)."""
    if raw["scope"] == "read":
        ctx.err(
            code,
            doc.span((*path, "scope")),
            f"{what}, and read-only API keys could run it",
            "use scope: write",
        )
    if raw.get("annotations", {}).get("read_only"):
        ctx.err(
            code,
            doc.span((*path, "annotations", "read_only")),
            f"{what}, but the tool is annotated read_only",
            "clients run read-only tools without asking: drop read_only",
        )


def _check_graphql_operation(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], query: str
) -> None:
    """One tool call is one operation: a document defines exactly one (it is sent without an
    operationName), not a subscription, and a mutation changes data, so its tool needs the
    write scope and may not say it is read-only (read-only keys, and clients that run
    read-only tools without asking, would run it)."""
    where = (*path, "http", "graphql", "query")
    kinds = _gql_operations(query)
    if len(kinds) != 1:
        ctx.err(
            "GEN224",
            doc.span(where),
            f"the GraphQL document defines {len(kinds)} operations; a tool sends exactly one",
            "keep one operation (fragments may stay)",
        )
        return
    (kind,) = kinds
    if kind == "subscription":
        ctx.err(
            "GEN224",
            doc.span(where),
            "a GraphQL subscription cannot be a tool: a call is one request and one answer",
        )
    elif kind == "mutation":
        _check_write_claims(ctx, doc, path, raw, "GEN224", "the GraphQL document is a mutation")
    if kind == "mutation" and raw["http"]["graphql"].get("partial"):
        ctx.err(
            "GEN224",
            doc.span((*path, "http", "graphql", "partial")),
            "a GraphQL mutation cannot succeed in part: its errors may mean the write was not "
            "made as asked",
            "remove partial",
        )


def _check_pagination(ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any]) -> None:
    """The pagination keys the style uses, and where the cursor goes. `{cursor}` in a template
    is the page's cursor even where the tool declares its own `cursor` input (the executor
    reads it as the pagination cursor and fills `{cursor}` with it)."""
    p = raw["pagination"]
    style = p["style"]
    where = (*path, "pagination")
    placed = [
        (*where, *sub)
        for where, value in binding_templates(raw)
        if where != ("path",)
        for sub, ph in _placeholders(value)
        if ph == "cursor"
    ]
    if any(ph == "cursor" for _s, ph in _placeholders(raw["path"])):
        ctx.err(
            "GEN207",
            doc.span((*path, "path")),
            "{cursor} cannot be in http.path: the first page is requested without a cursor",
            "put it in the query, a header or the body",
        )
    for key in sorted(set(p) - {"style"} - _PAGINATION_KEYS[style]):
        ctx.err("GEN213", doc.key_span((*where, key)), f"{style} pagination does not use `{key}`")
    for key in ("next", "more", "total"):
        if key in p:
            _check_dotted(ctx, doc, (*where, key), p[key], f"pagination.{key}", None)
    if style == "cursor" and "next" not in p:
        ctx.err("GEN213", doc.span(where), "cursor pagination needs `next`")
    if style != "link" and "param" not in p and not placed:
        ctx.err(
            "GEN213",
            doc.span(where),
            f"{style} pagination needs `param`, or a {{cursor}} placeholder in the query, "
            "headers or body",
        )
    if "param" in p and placed:
        ctx.err(
            "GEN213",
            doc.span((*path, *placed[0])),
            "the cursor is placed by {cursor} here and by pagination.param: keep one",
        )
    param, size = p.get("param"), p.get("size_param")
    if param is not None and style != "link":
        _check_page_param(ctx, doc, path, raw, param)
    if size is not None and style in ("page", "offset"):
        body = _body(raw)
        if size not in raw.get("query", {}) and not (isinstance(body, dict) and size in body):
            ctx.err(
                "GEN213",
                doc.span((*where, "size_param")),
                f"size_param {size!r} is neither a query parameter nor a top-level body key of "
                "this binding",
            )


# The cursor properties of a paginated tool: where each is declared and the schema pagination
# gives it when the tool does not. The model's cursor is a string (the executor keeps no other:
# `cursor: 2` was dropped and the first page requested again), and next_cursor is one, or null
# on the last page (an answer with a next page failed a next_cursor declared integer).
_CURSOR_PROPERTIES: dict[str, tuple[str, dict[str, Any]]] = {
    "cursor": ("input", CURSOR_INPUT),
    "next_cursor": ("output", CURSOR_OUTPUT),
}


def _admits(schema: Any, root: dict[str, Any], kind: str, depth: int = 0) -> bool:
    """False when `schema` (followed through local references, with the keywords beside
    them) says that no value of JSON type `kind` is valid: by its `type`, its `enum` or
    `const`, every branch of an `anyOf` or `oneOf` or one of an `allOf`; True when it may be."""
    if depth > MAX_NESTING:
        return True
    for part in _parts(schema, root):
        if part is False:
            return False
        if not isinstance(part, dict):
            continue
        declared = part.get("type")
        if isinstance(declared, str):
            declared = [declared]
        if (
            isinstance(declared, list)
            and kind not in declared
            and not (kind == "integer" and "number" in declared)
        ):
            return False
        values = [part["const"]] if "const" in part else part.get("enum")
        if isinstance(values, list) and not any(_of_kind(v, kind) for v in values):
            return False
        for keyword in ("anyOf", "oneOf"):
            branches = part.get(keyword)
            if isinstance(branches, list) and not any(
                _admits(b, root, kind, depth + 1) for b in branches
            ):
                return False
        branches = part.get("allOf")
        if isinstance(branches, list) and not all(
            _admits(b, root, kind, depth + 1) for b in branches
        ):
            return False
    return True


def _of_kind(value: Any, kind: str) -> bool:
    """Whether the decoded JSON `value` is of JSON Schema type `kind` (1 and 1.0 are both
    integers and numbers)."""
    if isinstance(value, bool) or value is None:
        return kind == ("null" if value is None else "boolean")
    if isinstance(value, int | float):
        return kind == "number" or (kind == "integer" and float(value).is_integer())
    if isinstance(value, str):
        return kind == "string"
    return kind == ("array" if isinstance(value, list) else "object")


def _check_cursor_property(
    ctx: _Ctx, doc: Loaded, tool: JsonPath, prop: str, schema: Any, root: dict[str, Any]
) -> None:
    """GEN213 for a paginated tool's own `cursor` input or `next_cursor` output whose type
    leaves out what the gateway puts there."""
    where, default = _CURSOR_PROPERTIES[prop]
    kinds = default["type"] if isinstance(default["type"], list) else [default["type"]]
    refused = [kind for kind in kinds if not _admits(schema, root, kind)]
    if not refused:
        return
    at = (*tool, where, "properties", prop)
    written = isinstance(schema, dict) and "type" in schema
    if prop == "cursor":
        why = (
            "the gateway's cursors are strings, and a cursor of another type is not sent (the "
            "call gets the first page again)"
        )
        yaml_type = "string"
    else:
        why = (
            "the gateway sets it to the next page's cursor, a string, or to null on the last "
            "page, and an answer the output schema refuses fails"
        )
        yaml_type = '[string, "null"]'
    ctx.err(
        "GEN213",
        doc.span((*at, "type")) if written else doc.key_span(at),
        f"{where} property {prop!r} of a paginated tool does not admit "
        f"{' or '.join(refused)}: {why}",
        f"declare it with type: {yaml_type}, or leave it out (pagination declares it so)",
    )


def _check_dotted(
    ctx: _Ctx, doc: Loaded, at: JsonPath, value: str, what: str, whole: str | None
) -> bool:
    """GEN213 for `value`, the dotted path at `at` (into a response body, or a record of the
    output), when it is dots only (`.`, `..`): it looks for a key made of dots, which answers
    do not have, so it never matched (`"."` written for the whole body). Other empty segments
    may be part of a key that holds dots (`fields.No.` reads the key `No.`: get_path joins
    segments). `whole`: what the empty path reads there, or None where it names nothing (the key
    is then as good as left out: an empty pagination.next never gave a next page). Whether the
    path is fine."""
    if value == "" and whole is None:
        problem = "is empty: it names no value of the response body"
        hint = "leave it out, or name the value's key (a dotted path for a nested one)"
    elif value and not value.strip("."):
        problem = (
            f"{value!r}: a path of dots only looks for a key made of dots, which answers do "
            "not have, and never matches"
        )
        hint = (f'"" reads {whole}' if whole is not None else "name the value's key") + (
            ", and keys are separated by single dots, e.g. data.items"
        )
    else:
        return True
    ctx.err("GEN213", doc.span(at), f"{what} {problem}", hint)
    return False


# The position of the first page, which a binding may send in its query under `param` (an
# upstream that wants it said): the executor replaces that pair from the second page on.
_FIRST_POSITION = {"page": 1, "offset": 0}


def _check_page_param(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], param: str
) -> None:
    """GEN213 where another query parameter of the binding is pagination.param: from the
    second page on the executor sends the position in place of that parameter, so the page
    size named the same was replaced by the page number (and the page size read back was the
    page number), and an argument or another position sent there moved the first page only,
    while next_cursor counted from the start."""
    p = raw["pagination"]
    style = p["style"]
    at = doc.span((*path, "pagination", "param"))
    position = {"page": "page number", "offset": "offset"}.get(style, "cursor")
    if param == p.get("size_param") and style in _FIRST_POSITION:
        ctx.err(
            "GEN213",
            at,
            f"pagination.param {param!r} is also the size_param: from the second page on, the "
            f"{position} would be sent in place of the page size",
            f"name the query parameter the upstream reads the {position} from",
        )
        return
    query = raw.get("query")
    if not isinstance(query, dict) or param not in query:
        return
    value = query[param]
    first = _FIRST_POSITION.get(style)
    if next(_placeholders(value), None) is None and (
        first is None or scalar_text(value) == str(first)
    ):
        return  # the first page said explicitly: the executor replaces it on the next ones
    ctx.err(
        "GEN213",
        at,
        f"pagination.param {param!r} is also set by http.query at "
        f"{doc.key_span((*path, 'query', param))}: the gateway sends the {position} there from "
        "the second page on, so the query's value would move the first page only",
        "remove it from http.query (the first page is requested without it)",
    )


def _entity(
    ctx: _Ctx,
    doc: Loaded,
    path: JsonPath,
    raw: dict[str, Any],
    input_schema: dict[str, Any] | None,
    output_schema: dict[str, Any] | None,
    entity_types: dict[str, ir.EntityType] | None,
) -> ir.EntityMapping:
    _check_filters(ctx, doc, (*path, "args"), raw.get("args", {}))
    _unquoted(ctx, doc, (*path, "args"), raw.get("args", {}), _ENTITY_ARGS, "entity args")
    if input_schema is not None:
        _check_entity_args(ctx, doc, path, raw, input_schema)
    etype = None if entity_types is None else entity_types.get(raw["type"])
    if etype is None and entity_types is not None:
        ctx.err(
            "GEN212",
            doc.span((*path, "type")),
            f"unknown entity type {raw['type']!r}",
            "entity types of the gateway manifest: " + (", ".join(sorted(entity_types)) or "none"),
        )
    elif etype is not None:
        allowed = {f for f, _t in etype.fields}
        for f in raw["fields"]:
            if f not in allowed:
                ctx.err(
                    "GEN212",
                    doc.key_span((*path, "fields", f)),
                    f"entity type {etype.name!r} has no field {f!r}",
                    "fields: " + ", ".join(sorted(allowed)),
                )
    if "id" not in raw["fields"]:
        # fastn_search_entities returns each record by its id, and drops one without it.
        ctx.err(
            "GEN212",
            doc.key_span((*path, "fields")),
            f"entity mapping to {raw['type']!r} maps no `id`: entity search would drop every "
            "record (and report the source as answering)",
            "map id to the record's identifier, e.g. id: id"
            + (
                f" (and declare id in the fields of entity type {etype.name!r})"
                if etype is not None and "id" not in {f for f, _t in etype.fields}
                else ""
            ),
        )
    items = raw.get("items", "")
    items_ok = _check_dotted(ctx, doc, (*path, "items"), items, "entity items path", "the output")
    paths_ok = {
        name: _check_dotted(
            ctx, doc, (*path, "fields", name), dotted, f"entity field {name!r} reads", "the record"
        )
        for name, dotted in raw["fields"].items()
    }
    if output_schema is not None and items_ok:
        record = _record_schema(ctx, doc, path, items, output_schema)
        if record is not None:
            for field_name, dotted in raw["fields"].items():
                if not paths_ok[field_name]:
                    continue
                walk = _walk(record, split_path(dotted), output_schema)
                if walk.missing is not None:
                    ctx.err(
                        "GEN213",
                        doc.span((*path, "fields", field_name)),
                        f"entity field {field_name!r} reads {dotted!r}, but the records of the "
                        f"output schema have no {walk.missing!r} there",
                        walk.hint,
                    )
    return ir.EntityMapping(
        type=raw["type"],
        items=items,
        args=ir.Json.of(raw.get("args", {})),
        fields=tuple(raw["fields"].items()),
        span=doc.span(path),
    )


_ENTITY_ARGS = frozenset({"query", "limit"})


def _check_entity_args(
    ctx: _Ctx, doc: Loaded, path: JsonPath, raw: dict[str, Any], input_schema: dict[str, Any]
) -> None:
    """Entity search calls the capability with these arguments: they must be its inputs, may
    only use {query} and {limit}, and must fill every required input that has no default."""
    args = raw.get("args", {})
    props = input_schema.get("properties", {})
    for key in args:
        if key not in props:
            ctx.err(
                "GEN212",
                doc.key_span((*path, "args", key)),
                f"entity args key {key!r} is not an input property of the capability",
                "inputs: " + (", ".join(sorted(props)) or "none"),
            )
    for sub, ph in _placeholders(args):
        if ph not in _ENTITY_ARGS:
            ctx.err(
                "GEN207",
                doc.span((*path, "args", *sub)),
                f"placeholder {{{ph}}} in entity args is not filled by entity search",
                "entity search fills {query} and {limit}",
            )
    for name in input_schema.get("required", []):
        prop = props.get(name)
        if name not in args and not (isinstance(prop, dict) and "default" in prop):
            ctx.err(
                "GEN212",
                doc.span((*path, "args")) if "args" in raw else doc.span(path),
                f"entity search would call the capability without its required input {name!r}",
                "give it in args, e.g. from {query}",
            )


def resolve_reference(schema: Any, root: dict[str, Any]) -> Any:
    """Follow local `$ref`s and `$dynamicRef`s (`#/$defs/...`, `#anchor`); other schemas are
    returned as they are."""
    return _parts(schema, root)[0]


# Keywords that say which properties or items a schema has: beside a reference, they apply
# with its target (2020-12 reads `{$ref: ..., properties: ...}` as both).
_SHAPING = ("properties", "patternProperties", "additionalProperties", "items", "anyOf", "oneOf")


def _parts(schema: Any, root: dict[str, Any]) -> list[Any]:
    """The schemas that together say what `schema` holds: the end of its chain of references,
    and the keywords beside each reference that shape it (up to 32 references deep; None for
    one that names nothing)."""
    parts: list[Any] = []
    for _ in range(32):
        target = _referent(schema, root)
        if target is schema:
            break
        beside = {k: v for k, v in schema.items() if k not in _REF_KEYWORDS}
        if any(k in beside for k in _SHAPING):
            parts.append(beside)
        schema = target
    return [schema, *parts]


def _step(schema: Any, segment: str, root: dict[str, Any]) -> tuple[bool, Any]:
    """One path segment into a schema: (False, None) when the schema says there is nothing
    there; (True, None) when it cannot tell (no properties declared, combinators...)."""
    steps = [_step_one(part, segment) for part in _parts(schema, root)]
    if not any(present for present, _inner in steps):
        return False, None
    # All the parts apply: the segment is there if one says so, and what is there is what
    # each that declares it says.
    inner = [i for _present, i in steps if i is not None]
    return True, (None if not inner else inner[0] if len(inner) == 1 else {"allOf": inner})


def _step_one(schema: Any, segment: str) -> tuple[bool, Any]:
    if not isinstance(schema, dict):
        return True, None
    props = schema.get("properties")
    if isinstance(props, dict) and segment in props:
        return True, props[segment]
    if "items" in schema and list_index(segment) is not None:
        return True, schema["items"]
    if (
        isinstance(props, dict)
        and "patternProperties" not in schema
        and not any(
            k in schema for k in ("anyOf", "oneOf", "allOf", *_REF_KEYWORDS, "additionalProperties")
        )
    ):
        return False, None
    additional = schema.get("additionalProperties")
    return (additional is not False), (additional if isinstance(additional, dict) else None)


@dataclass(frozen=True, slots=True)
class _Walk:
    """Where a dotted path leads in a schema: the schema at its end (None when it cannot
    tell), or the first segment the schema rules out and the hint naming what is there."""

    schema: Any = None
    missing: str | None = None
    hint: str = ""


def _walk(schema: Any, segments: tuple[str, ...], root: dict[str, Any]) -> _Walk:
    for segment in segments:
        present, inner = _step(schema, segment, root)
        if not present:
            props = {
                name
                for part in _parts(schema, root)
                if isinstance(part, dict) and isinstance(part.get("properties"), dict)
                for name in part["properties"]
            }
            return _Walk(
                missing=segment, hint="declared there: " + (", ".join(sorted(props)) or "none")
            )
        if inner is None:
            return _Walk()
        schema = inner
    return _Walk(schema=schema)


def _record_schema(
    ctx: _Ctx, doc: Loaded, path: JsonPath, items: str, output_schema: dict[str, Any]
) -> Any:
    """The schema of one record that entity search maps (None when it cannot tell)."""
    walk = _walk(output_schema, split_path(items), output_schema)
    if walk.missing is not None:
        ctx.err(
            "GEN213",
            doc.span((*path, "items")),
            f"entity items path {items!r} is not in the output schema (no {walk.missing!r} there)",
            walk.hint,
        )
        return None
    schema = resolve_reference(walk.schema, output_schema)
    kind = schema.get("type") if isinstance(schema, dict) else None
    if (
        isinstance(schema, dict)
        and "items" in schema
        and (kind in ("array", None) or (isinstance(kind, list) and "array" in kind))
    ):
        return schema["items"]
    return schema


# ---------------------------------------------------------------------------- gateway


def _entity_types(doc: Loaded | None) -> dict[str, ir.EntityType]:
    if doc is None:
        return {}
    return {
        name: ir.EntityType(
            name=name, description=e.get("description"), fields=tuple(e["fields"].items())
        )
        for name, e in sorted(doc.data.get("entities", {}).items())
    }


def _check_resource_uri(ctx: _Ctx, doc: Loaded, i: int, r: dict[str, Any]) -> None:
    """GEN228: the URI's template variables are exactly those its handler reads, once each."""
    key = "uri_template" if "uri_template" in r else "uri"
    found = URI_VARIABLE.findall(r[key]) if key == "uri_template" else []
    wanted = RESOURCE_VARIABLES[r["handler"]]
    if sorted(found) == sorted(wanted):
        return
    if wanted:
        shape = " and ".join("{" + v + "}" for v in wanted)
        hint = f"declare a uri_template holding {shape} once"
        reads = f"reads {shape} from the URI"
    else:
        hint = "declare a fixed uri: instead"
        reads = "takes no URI variables"
    shown = ", ".join("{" + v + "}" for v in found) or "no variables"
    ctx.err(
        "GEN228",
        doc.span(("resources", i, key)),
        f"handler {r['handler']} {reads}, but this {key} has {shown}",
        hint,
    )


def _check_package_metadata(ctx: _Ctx, doc: Loaded, pkg: dict[str, Any]) -> None:
    """A license that packaging tools refuse when the generated package is built (the
    version's form is checked by the schema)."""
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

    if "license" in pkg:
        try:
            canonicalize_license_expression(pkg["license"])
        except InvalidLicenseExpression:
            ctx.err(
                "GEN105",
                doc.span(("package", "license")),
                f"license {pkg['license']!r} is not an SPDX license expression",
                "e.g. Apache-2.0, MIT, or LicenseRef-Proprietary",
            )


def _gateway(ctx: _Ctx, doc: Loaded, connectors: set[str], partial: bool) -> ir.Gateway:
    d = doc.data
    pkg, server = d["package"], d["server"]
    quotas = d.get("quotas", {"default_plan": "default", "plans": {"default": {"period": "month"}}})
    plans = tuple(
        ir.QuotaPlan(
            name=name,
            period=p["period"],
            calls=p.get("calls"),
            per_connector=tuple(sorted(p.get("per_connector", {}).items())),
        )
        for name, p in sorted(quotas["plans"].items())
    )
    if quotas["default_plan"] not in {p.name for p in plans}:
        ctx.err(
            "GEN214",
            doc.span(("quotas", "default_plan")),
            f"default plan {quotas['default_plan']!r} is not one of the plans",
            "plans: " + ", ".join(p.name for p in plans),
        )
    if not partial:
        for plan in plans:
            for conn, _limit in plan.per_connector:
                if conn not in connectors:
                    ctx.err(
                        "GEN211",
                        doc.key_span(("quotas", "plans", plan.name, "per_connector", conn)),
                        f"unknown connector {conn!r}",
                    )
    resources = []
    seen_res: dict[str, Span] = {}
    for i, r in enumerate(d.get("resources", [])):
        span = doc.span(("resources", i, "name"))
        key_uri = r.get("uri") or r.get("uri_template")
        for key in (r["name"], key_uri):
            if key in seen_res:
                ctx.err("GEN216", span, f"resource {key!r} is also declared at {seen_res[key]}")
            seen_res[key] = span
        if r["handler"] not in RESOURCE_HANDLERS:
            ctx.err(
                "GEN206",
                doc.span(("resources", i, "handler")),
                f"unknown resource handler {r['handler']!r}",
                "available: " + ", ".join(sorted(RESOURCE_HANDLERS)),
            )
        else:
            _check_resource_uri(ctx, doc, i, r)
        resources.append(
            ir.Resource(
                name=r["name"],
                uri=r.get("uri"),
                uri_template=r.get("uri_template"),
                title=r.get("title"),
                description=r["description"].strip(),
                mime_type=r.get("mime_type", "application/json"),
                handler=r["handler"],
                span=span,
            )
        )
    tenants = []
    for i, t in enumerate(d.get("tenants", [])):
        if not partial:
            for j, conn in enumerate(t["connectors"]):
                if conn not in connectors:
                    ctx.err(
                        "GEN211",
                        doc.span(("tenants", i, "connectors", j)),
                        f"tenant {t['name']!r} names unknown connector {conn!r}",
                    )
        tenants.append(
            ir.Tenant(
                name=t["name"],
                connectors=tuple(t["connectors"]),
                scopes=tuple(t.get("scopes", ("read", "write"))),
                span=doc.span(("tenants", i)),
            )
        )
    _check_package_metadata(ctx, doc, pkg)
    if problem := import_name_problem(pkg["import_name"]):
        ctx.err(
            "GEN104",
            doc.span(("package", "import_name")),
            f"import_name {pkg['import_name']!r} {problem}",
            "choose a name of your own, such as acme_gateway",
        )
    auth = d.get("auth", {})
    lint = d.get("lint", {})
    return ir.Gateway(
        package_name=pkg["name"],
        import_name=PyIdent(pkg["import_name"]),
        version=pkg["version"],
        summary=pkg.get("summary", f"MCP gateway {server['name']}"),
        license=pkg.get("license"),
        authors=tuple(pkg.get("authors", ())),
        urls=tuple(pkg.get("urls", {}).items()),
        server_name=server["name"],
        title=server.get("title"),
        instructions=server.get("instructions", "").strip() or None,
        max_result_bytes=server.get("max_result_bytes", DEFAULT_MAX_RESULT_BYTES),
        scopes=tuple(sorted(auth.get("scopes", {"read": "Read", "write": "Write"}).items())),
        key_ttl_days=auth.get("key_ttl_days", 90),
        default_plan=quotas["default_plan"],
        plans=plans,
        entity_types=tuple(_entity_types(doc).values()),
        resources=tuple(sorted(resources, key=lambda r: r.name)),
        tenants=tuple(sorted(tenants, key=lambda t: t.name)),
        lint_profiles=tuple(lint.get("profiles", ())),
        token_budget=lint.get("token_budget"),
        source=doc.path,
        span=doc.span(("kind",)),
    )
