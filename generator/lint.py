"""`gen lint`: does the compiled catalog fit the clients and context windows it is meant for?

Checks the compiled IR against client profiles (`profiles.py`): tool names (with the prefix a
client adds), schema features a client rejects, tool counts per representative tenant, plus
quality rules (descriptions, annotations, deprecations) and each tenant's token budget
(`tokens.py`). Every finding is a located `Diagnostic` with an LNT code and a fix hint.

A file may switch a rule off for the findings located in it, with a reason:

    lint:
      disable:
        - {rule: LNT013, reason: "annotations are set by the upstream's own MCP server"}

An entry that suppresses nothing is reported (LNT018), so suppressions do not outlive their
cause. Schema checks look at input schemas only: clients hand those to the model; output
schemas are validated by the client SDK, not shown to the model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import api, ir
from .compile import binding_templates, template_strings
from .diagnostics import CODES, Diagnostic, Severity, Span, error, has_errors, normalise, warning
from .locate import Pointer, Sources
from .profiles import DEFAULT_PROFILES, PROFILES, Profile, known_names, profile
from .runtime.templating import PLACEHOLDER
from .tokens import TenantTokens, measure

MIN_DESCRIPTION = 40  # characters; below this a model cannot tell when to pick the tool
DUPLICATE_RATIO = 0.85  # difflib ratio of two descriptions' words, different connectors
_WORD = re.compile(r"[a-z0-9]+")
_CONFIRM = re.compile(
    r"\b(confirm\w*|irreversibl\w*|cannot be undone|can't be undone|permanent\w*|ask the user)\b",
    re.IGNORECASE,
)
_COMBINATORS = ("anyOf", "oneOf", "allOf", "not")
# A placeholder without a filter written between two quotes of the same kind: `"{q}"`, `'{q}'`.
_QUOTED_PLACEHOLDER = re.compile(r"([\"'])\{([A-Za-z_][A-Za-z0-9_]*)\}\1")
# ...or bare, as an operand of a query language: `LastName = {name}`, `text ~ {q}`,
# `name eq {n}`, `startswith(displayName,{name})`.
_OPERAND_PLACEHOLDER = re.compile(
    r"(?:(?:[=~]|\b(?:eq|ne|gt|lt|ge|le|like|in)\b)\s*|\w\([^(){}]*?)"
    r"\{([A-Za-z_][A-Za-z0-9_]*)\}",
    re.IGNORECASE,
)

# Another syntax for a path into JSON, where the manifest takes keys joined by dots: JSONPath's
# root (`$.meta.next`, `$['x']`), a subscript (`data[0].id`), or a JSON Pointer or slash path
# (`/meta/next`, `meta/has_more`; a slash after a dot may be in a key, `kubernetes.io/name`).
_OTHER_PATH_SYNTAX = re.compile(r"^\$(?:$|[.\[])|\[(?:-?\d+|\*|'[^']*'|\"[^\"]*\")\]|^[^.]*/")


@dataclass(frozen=True, slots=True)
class Suppressed:
    diagnostic: Diagnostic
    reason: str


@dataclass(frozen=True, slots=True)
class LintResult:
    diagnostics: tuple[Diagnostic, ...]
    profiles: tuple[Profile, ...] = ()
    tokens: tuple[TenantTokens, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


@dataclass
class _Findings:
    """Collects findings; the same finding from several profiles becomes one diagnostic that
    names them all."""

    items: dict[tuple[str, Span, str], tuple[Severity, str | None, list[str]]] = field(
        default_factory=dict
    )

    def add(
        self,
        code: str,
        span: Span,
        message: str,
        hint: str | None = None,
        *,
        profile: Profile | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None:
        key = (code, span, message)
        sev, old_hint, names = self.items.setdefault(key, (severity, hint, []))
        if profile is not None and profile.name not in names:
            names.append(profile.name)

    def diagnostics(self) -> list[Diagnostic]:
        out = []
        for (code, span, message), (sev, hint, names) in self.items.items():
            text = f"{message} [{', '.join(names)}]" if names else message
            out.append(Diagnostic(code=code, severity=sev, span=span, message=text, hint=hint))
        return out


# ---------------------------------------------------------------------------- profiles


def resolve_profiles(
    project: ir.Project, sources: Sources, names: tuple[str, ...] | None, f: _Findings
) -> tuple[Profile, ...]:
    """Profiles to check: `names` (CLI) or the gateway's `lint.profiles`, with the gateway's
    `lint.token_budget` as every profile's budget, then its per-profile `lint.limits`
    overrides applied (so one profile's budget can differ from the rest). Unknown names are
    LNT017."""
    g = project.gateway
    gdoc = sources.gateway
    chosen = names if names is not None else (g.lint_profiles or DEFAULT_PROFILES)
    known = ", ".join(known_names())
    out: list[Profile] = []
    for i, name in enumerate(chosen):
        p = profile(name)
        if p is None:
            span = gdoc.span(("lint", "profiles", i)) if gdoc and names is None else g.span
            f.add("LNT017", span, f"unknown client profile {name!r}", f"known profiles: {known}")
        elif p not in out:
            out.append(p)
    if g.token_budget is not None:
        out = [dataclasses.replace(q, token_budget=g.token_budget) for q in out]
    raw = ((gdoc.data.get("lint") or {}).get("limits") or {}) if gdoc else {}
    for key, limits in raw.items():
        p = profile(key)
        if p is None:
            assert gdoc is not None
            f.add(
                "LNT017",
                gdoc.key_span(("lint", "limits", key)),
                f"lint.limits names unknown client profile {key!r}",
                f"known profiles: {known}",
            )
            continue
        span = gdoc.key_span(("lint", "limits", key)) if gdoc else g.span
        if names is None and p.name not in {q.name for q in out}:
            f.add(
                "LNT023",
                span,
                f"lint.limits sets {key!r}, a profile this project does not check",
                "add it to lint.profiles, or remove the entry",
                severity=Severity.WARNING,
            )
        out = [dataclasses.replace(q, **limits) if q.name == p.name else q for q in out]
        q = dataclasses.replace(p, **limits)
        if q.warn_tools is not None and q.max_tools is not None and q.warn_tools >= q.max_tools:
            f.add(
                "LNT023",
                span,
                f"lint.limits for {key!r}: warn_tools {q.warn_tools} is not below max_tools "
                f"{q.max_tools}, so the warning can never come first",
                "set warn_tools below max_tools",
            )
    return tuple(out)


# ---------------------------------------------------------------------------- schema walk


def _walk(schema: Any, pointer: Pointer = ()) -> Iterator[tuple[Pointer, dict[str, Any]]]:
    """Every subschema of a JSON Schema with its pointer (keywords and property names)."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, s in sub.items():
                yield from _walk(s, (*pointer, key, name))
    for key in (
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
    ):
        yield from _walk(schema.get(key), (*pointer, key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, s in enumerate(sub):
                yield from _walk(s, (*pointer, key, i))


def _is_object(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    return t == "object" or (isinstance(t, list) and "object" in t) or "properties" in schema


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return schema is True
    t = schema.get("type")
    if t == "null" or (isinstance(t, list) and "null" in t):
        return True
    if None in (schema.get("enum") or ()):
        return True
    return any(_nullable(s) for s in schema.get("anyOf") or ())


def _where(pointer: Pointer) -> str:
    return "/" + "/".join(map(str, pointer)) if pointer else "the root"


def _schema_checks(
    t: ir.Tool, sources: Sources, profiles: tuple[Profile, ...], f: _Findings
) -> None:
    schema = t.input_schema.value

    def at(pointer: Pointer) -> Span:
        return sources.schema_span(t.name, "input", pointer) or t.span

    for pointer, s in _walk(schema):
        for p in profiles:
            if p.rejects_refs:
                for key in ("$ref", "$defs", "definitions"):
                    if key in s:
                        f.add(
                            "LNT003",
                            at((*pointer, key)),
                            f"{t.name}: input schema uses {key} at {_where(pointer)}",
                            "inline the definition (shared types `#/types/Name` are inlined "
                            "by the compiler)",
                            profile=p,
                        )
            for key in p.rejects_combinators:
                if key in s:
                    f.add(
                        "LNT004",
                        at((*pointer, key)),
                        f"{t.name}: input schema uses {key} at {_where(pointer)}",
                        "flatten the alternatives into one object with optional properties "
                        "(or anyOf, where accepted), and explain the choice in descriptions",
                        profile=p,
                    )
            if p.rejects_type_arrays and isinstance(s.get("type"), list):
                f.add(
                    "LNT005",
                    at((*pointer, "type")),
                    f"{t.name}: input schema has a type array {json.dumps(s['type'])} at "
                    f"{_where(pointer)}",
                    "use one type; make the property optional instead of accepting null",
                    profile=p,
                )
            ap = s.get("additionalProperties")
            if p.additional_properties == "boolean" and isinstance(ap, dict):
                f.add(
                    "LNT006",
                    at((*pointer, "additionalProperties")),
                    f"{t.name}: schema-valued additionalProperties at {_where(pointer)}",
                    "declare the known keys under properties, or take a list of "
                    "{key, value} objects",
                    profile=p,
                )
            if p.strict and _is_object(s):
                if ap is not False:
                    f.add(
                        "LNT007",
                        at(pointer),
                        f"{t.name}: object at {_where(pointer)} is not closed",
                        "add `additionalProperties: false`",
                        profile=p,
                    )
                required = set(s.get("required") or ())
                for name, prop in (s.get("properties") or {}).items():
                    if name not in required:
                        nullable = "" if _nullable(prop) else " and make it nullable"
                        f.add(
                            "LNT008",
                            at((*pointer, "properties", name)),
                            f"{t.name}: property {name!r} at {_where(pointer)} is not in required",
                            f"list it in required{nullable} (e.g. type: [string, 'null'])",
                            profile=p,
                        )


# ---------------------------------------------------------------------------- per tool


def _name_checks(t: ir.Tool, server: str, profiles: tuple[Profile, ...], f: _Findings) -> None:
    for p in profiles:
        if not p.name_pattern.match(t.name):
            f.add(
                "LNT001",
                t.span,
                f"tool name {t.name!r} ({len(t.name)} characters) does not match {p.name_rule}",
                "rename the tool (for a connector tool: its capability name)",
                profile=p,
            )
        if p.prefix and p.max_prefixed_name is not None:
            shown = p.prefix.format(server=server, tool=t.name)
            if len(shown) > p.max_prefixed_name:
                f.add(
                    "LNT002",
                    t.span,
                    f"{shown!r} is {len(shown)} characters; the client allows "
                    f"{p.max_prefixed_name} for server prefix + tool name",
                    f"shorten the tool name by {len(shown) - p.max_prefixed_name} characters "
                    "or the server name (server.name in the gateway manifest)",
                    profile=p,
                )


def _hints(a: ir.Annotations, keys: Sequence[str]) -> str:
    """`read_only false, destructive true`: the values of some hints, as sent."""
    return ", ".join(f"{key} {json.dumps(getattr(a, key))}" for key in keys)


def _quality_checks(t: ir.Tool, sources: Sources, today: dt.date, f: _Findings) -> None:
    raw = sources.raw_tool(t.name)
    own = str(raw.get("description", t.description)).strip()
    if not own:
        f.add(
            "LNT011",
            sources.tool_span(t.name, "description") or t.span,
            f"{t.name}: description is empty",
            "say what the tool does, when to use it and what it returns",
        )
    elif len(own) < MIN_DESCRIPTION:
        f.add(
            "LNT011",
            sources.tool_span(t.name, "description") or t.span,
            f"{t.name}: description is {len(own)} characters; models pick tools by it",
            "say what the tool does, when to use it and what it returns",
            severity=Severity.WARNING,
        )
    ann: dict[str, Any] = raw.get("annotations") or {}
    a = t.annotations
    if raw and not ann:
        f.add(
            "LNT013",
            t.span,
            f"{t.name}: no annotations; it is sent with MCP's defaults: "
            + _hints(a, ("read_only", "destructive", "idempotent", "open_world")),
            "add annotations: {read_only: ..., destructive: ..., idempotent: ..., open_world: ...}",
            severity=Severity.WARNING,
        )
    elif raw:
        # What a client decides by: is it safe to run unasked (read_only, else destructive),
        # and, for a tool of the gateway's own, whether it reaches outside (a connector tool
        # does: MCP's default, true, is right for it).
        unsaid = [
            key
            for key, wanted in (
                ("read_only", t.scope == "read"),
                ("destructive", not a.read_only),
                ("open_world", t.family != "connector"),
            )
            if wanted and key not in ann
        ]
        if unsaid:
            one = len(unsaid) == 1
            f.add(
                "LNT013",
                sources.tool_span(t.name, "annotations") or t.span,
                f"{t.name}: annotations do not say {' or '.join(unsaid)}; "
                + ("it is" if one else "they are")
                + " sent as MCP's "
                + ("default" if one else "defaults")
                + ": "
                + _hints(a, unsaid),
                f"state `{unsaid[0]}: true` or `{unsaid[0]}: false` explicitly"
                if one
                else "state " + " and ".join(f"`{key}`" for key in unsaid) + " explicitly",
                severity=Severity.WARNING,
            )
    # A tool destructive by default is LNT013's finding: said once, by what to declare.
    if a.destructive and "destructive" in ann and not _CONFIRM.search(t.description):
        f.add(
            "LNT014",
            t.span,
            f"{t.name} is destructive but its description asks for no confirmation",
            "say what is lost and that the user should confirm first "
            "(e.g. 'Deletes permanently; confirm with the user before calling')",
            severity=Severity.WARNING,
        )
    if a.read_only and a.destructive:
        f.add(
            "LNT016",
            sources.tool_span(t.name, "annotations") or t.span,
            f"{t.name} is annotated both read_only and destructive",
            "a read-only tool cannot destroy anything: drop one of them",
        )
    elif a.read_only and t.scope == "write":
        f.add(
            "LNT016",
            sources.tool_span(t.name, "scope") or t.span,
            f"{t.name} is read_only but needs the write scope",
            "use scope: read, or drop read_only",
            severity=Severity.WARNING,
        )
    elif t.scope == "read" and not a.read_only and ann:
        f.add(
            "LNT016",
            sources.tool_span(t.name, "scope") or t.span,
            f"{t.name} has the read scope but is not read_only: read-only API keys could "
            "change data through it",
            "use scope: write, or annotate read_only: true",
            severity=Severity.WARNING,
        )
    if t.deprecated is not None:
        d = t.deprecated
        past = d.sunset is not None and d.sunset <= today.isoformat()
        when = (
            f"its sunset {d.sunset} has passed: remove it"
            if past
            else f"sunset {d.sunset}"
            if d.sunset
            else "no sunset date"
        )
        f.add(
            "LNT015",
            sources.tool_span(t.name, "deprecated", key=True) or t.span,
            f"{t.name} is deprecated and still served ({when})",
            f"move callers to {d.replacement}"
            if d.replacement
            else "name a replacement and a sunset date",
            severity=Severity.WARNING,
        )
    for pointer, s in _walk(t.input_schema.value):
        for name, prop in (s.get("properties") or {}).items():
            if isinstance(prop, dict) and prop.get("deprecated") is True:
                sunset = prop.get("x-sunset")
                past = isinstance(sunset, str) and sunset <= today.isoformat()
                req = " and still required" if name in (s.get("required") or ()) else ""
                when = (
                    f"sunset {sunset} has passed: remove it"
                    if past
                    else f"sunset {sunset}"
                    if sunset
                    else "no x-sunset"
                )
                f.add(
                    "LNT015",
                    sources.schema_span(t.name, "input", (*pointer, "properties", name)) or t.span,
                    f"{t.name}: input property {name!r} is deprecated{req} ({when})",
                    f"move callers to {prop['x-replacement']!r}"
                    if prop.get("x-replacement")
                    else "name a replacement with x-replacement",
                    severity=Severity.WARNING,
                )


def _binding_checks(t: ir.Tool, sources: Sources, f: _Findings) -> None:
    http = t.http
    if http is None:
        return
    _quoted_placeholders(t, sources, f)
    _path_syntax(t, sources, f)
    if http.idempotency_key is None:
        return
    span = http.idempotency_key.span
    # Harmless (the key is sent, and the call is retried as it would be anyway): a warning.
    if t.annotations.idempotent:
        f.add(
            "LNT021",
            span,
            f"{t.name} is annotated idempotent, so its idempotency_key changes nothing",
            "remove idempotency_key, or the idempotent annotation if repeating the request "
            "without the key is not safe",
            severity=Severity.WARNING,
        )
    elif http.method == "GET":
        f.add(
            "LNT021",
            span,
            f"{t.name} sends an idempotency key with a GET, which upstreams ignore",
            "a read is safe to repeat: annotate it idempotent: true and remove idempotency_key",
            severity=Severity.WARNING,
        )


def _dotted(path: str) -> str:
    """`path` written as keys joined by dots: `$.meta.next`, `/meta/next`, `meta/has_more` ->
    `meta.next`...; `data[0].id`, `$['data'][-1]` -> `data.0.id`, `data.-1`."""
    path = re.sub(r"\[(?:'([^']*)'|\"([^\"]*)\"|(-?\d+|\*))\]", r".\1\2\3", path)
    return ".".join(part for part in re.split(r"[./]", path.removeprefix("$")) if part)


def _path_syntax(t: ir.Tool, sources: Sources, f: _Findings) -> None:
    """A response or pagination path written in another syntax looks for a key named `$`,
    `data[0]` or `meta/has_more`, which answers do not have: nothing is read, so a `more` or
    `next` written so ends the paging after the first page, silently."""
    raw = sources.raw_tool(t.name)
    http = raw.get("http", {})
    found: list[tuple[tuple[str | int, ...], Any]] = []
    response = http.get("response", {})
    found.append((("http", "response", "select"), response.get("select")))
    found += [
        (("http", "response", "fields", name), path)
        for name, path in (response.get("fields") or {}).items()
    ]
    pagination = http.get("pagination", {})
    found += [
        (("http", "pagination", key), pagination.get(key)) for key in ("next", "more", "total")
    ]
    for i, mapping in enumerate(raw.get("entities") or []):
        found.append((("entities", i, "items"), mapping.get("items")))
        found += [
            (("entities", i, "fields", name), path)
            for name, path in (mapping.get("fields") or {}).items()
        ]
    for where, path in found:
        if not isinstance(path, str) or not _OTHER_PATH_SYNTAX.search(path):
            continue
        what = ".".join(str(part) for part in where)
        dotted = _dotted(path)
        f.add(
            "LNT024",
            sources.tool_span(t.name, *where) or t.span,
            f"{t.name}: {what} {path!r} is not a dotted path: it looks for a key named "
            f"{path.split('.')[0]!r}, which answers seldom have, and reads nothing",
            (f"write {dotted!r}" if dotted else "leave it out (the whole body)")
            + ": keys joined by dots, a list index as a key (`data.0.id`, `-1` the last)",
            severity=Severity.WARNING,
        )


def _quoted_placeholders(t: ir.Tool, sources: Sources, f: _Findings) -> None:
    """`text ~ "{query}"` and `LastName = {name}`: a quote (or, bare, a space or keyword) in
    the argument ends the literal, and what follows it is read as query syntax. The filters
    write the quotes and escape the value. Query languages live in the query, the body (a
    GraphQL request's variables too) and the path (an OData key, `/Customers('{id}')`); not in
    headers, whose `name=value` pairs (`Prefer: odata.maxpagesize={n}`, `Cookie`) and quoted
    strings (an entity tag, `If-Match: "{etag}"`) are no query a quote could change."""
    raw = sources.raw_tool(t.name).get("http", {})
    properties = t.input_schema.value.get("properties", {})
    for where, value in binding_templates(raw):
        if where == ("headers",):
            continue
        part = ".".join(where)
        for sub, text in template_strings(value):
            span = sources.tool_span(t.name, "http", *where, *sub) or t.span
            for m in _QUOTED_PLACEHOLDER.finditer(text):
                quote, name = m.groups()
                fix = (
                    f"{{{name}|double_quoted}}"
                    if quote == '"'
                    else f"{{{name}|single_quoted}} (backslash escapes, as SOQL) or "
                    f"{{{name}|sql_quoted}} (the quote doubled, as OData and SQL)"
                )
                f.add(
                    "LNT022",
                    span,
                    f"{t.name}: {m.group(0)} in http.{part} is a quoted literal that a quote "
                    f"in {name!r} would end early",
                    f"write {fix} without the quotes: the filter adds them and escapes the value",
                    severity=Severity.WARNING,
                )
            if PLACEHOLDER.fullmatch(text):
                continue  # the whole value: no query language around it
            for m in _OPERAND_PLACEHOLDER.finditer(text):
                name = m.group(1)
                prop = properties.get(name, {})
                types = prop.get("type") if isinstance(prop, dict) else None
                if types != "string" and not (isinstance(types, list) and "string" in types):
                    continue
                f.add(
                    "LNT022",
                    span,
                    f"{t.name}: {{{name}}} in http.{part} is a bare operand of a query: a "
                    f"quote, a space or a keyword in {name!r} would change the query",
                    f"quote it with the filter of that language: {{{name}|double_quoted}}, "
                    f"{{{name}|single_quoted}} or {{{name}|sql_quoted}}",
                    severity=Severity.WARNING,
                )


def _duplicates(tools: tuple[ir.Tool, ...], sources: Sources, f: _Findings) -> None:
    """Near-identical descriptions in different connectors make models pick at random.

    Similarity is difflib's ratio over the descriptions' words (case and punctuation folded).
    Two cheap upper bounds of that ratio (lengths, then shared words) skip most pairs, so a
    catalog of hundreds of templated tools stays fast; each tool is reported once, against the
    first earlier tool (in manifest order) it duplicates."""
    items = []
    for t in sorted(tools, key=lambda t: (t.span.file, t.span.line, t.span.col)):
        text = str(sources.raw_tool(t.name).get("description", t.description)).lower()
        words = _WORD.findall(text)
        items.append((t, words, Counter(words)))
    for j, (b, wb, cb) in enumerate(items):
        for a, wa, ca in items[:j]:
            if (a.connector or a.family) == (b.connector or b.family):
                continue
            total = len(wa) + len(wb)
            if not total or 2 * min(len(wa), len(wb)) < DUPLICATE_RATIO * total:
                continue
            if 2 * sum((ca & cb).values()) < DUPLICATE_RATIO * total:
                continue
            ratio = difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()
            if ratio >= DUPLICATE_RATIO:
                f.add(
                    "LNT012",
                    b.span,
                    f"{b.name}'s description is {ratio:.0%} like {a.name}'s ({a.span})",
                    "say what differs: the app, the records, when to pick this one",
                    severity=Severity.WARNING,
                )
                break


# ---------------------------------------------------------------------------- tenants


def _tenant_checks(project: ir.Project, profiles: tuple[Profile, ...], f: _Findings) -> None:
    from .tokens import tenant_tools

    tenants: tuple[ir.Tenant | None, ...] = project.gateway.tenants or (None,)
    for tenant in tenants:
        n = len(tenant_tools(project, tenant))
        who = f"tenant {tenant.name!r}" if tenant else "a tenant with every connector"
        span = tenant.span if tenant else project.gateway.span
        for p in profiles:
            if p.max_tools is not None and n > p.max_tools:
                f.add(
                    "LNT009",
                    span,
                    f"{who} sees {n} tools; {p.title} accepts at most {p.max_tools}",
                    "split the catalog into toolsets or servers, or give "
                    "this tenant fewer connectors or scopes",
                    profile=p,
                )
            elif p.warn_tools is not None and n > p.warn_tools:
                f.add(
                    "LNT010",
                    span,
                    f"{who} sees {n} tools; tool selection degrades above {p.warn_tools}",
                    "3-15 tools per session is considered ideal: trim or split the catalog",
                    profile=p,
                    severity=Severity.WARNING,
                )


def _budget(project: ir.Project, profiles: tuple[Profile, ...], override: int | None) -> int:
    """The budget a tenant's tools/list must fit: `--token-budget`, else the smallest of the
    checked profiles' (`resolve_profiles` applied the manifest's budget and overrides)."""
    if override is not None:
        return override
    default = project.gateway.token_budget or PROFILES["claude"].token_budget
    return min((p.token_budget for p in profiles), default=default)


def _token_checks(results: tuple[TenantTokens, ...], f: _Findings) -> None:
    for r in results:
        if not r.over:
            continue
        biggest = ", ".join(f"{g.group} {g.tokens:,}" for g in r.groups[:3])
        hints = "; ".join(s.text for s in r.savings[:2])
        f.add(
            "LNT020",
            r.span,
            f"tenant {r.tenant!r}: tools/list takes {r.tokens:,} tokens, "
            f"over the budget of {r.budget:,} (largest: {biggest})",
            hints or "give the tenant fewer connectors or trim descriptions",
        )


# ---------------------------------------------------------------------------- suppression


def _suppress(
    diags: list[Diagnostic], sources: Sources
) -> tuple[list[Diagnostic], list[Suppressed]]:
    kept: list[Diagnostic] = []
    suppressed: list[Suppressed] = []
    entries: dict[str, list[tuple[dict[str, Any], Span]]] = {}
    for path in sources.docs:
        section = sources.file_settings(path, "lint", "disable")
        if section:
            entries[path] = section
    used: set[Span] = set()
    for d in diags:
        match = next(
            ((e, s) for e, s in entries.get(d.span.file, ()) if e.get("rule") == d.code), None
        )
        if match is None or not d.code.startswith("LNT"):
            kept.append(d)
        else:
            used.add(match[1])
            suppressed.append(Suppressed(d, str(match[0].get("reason", ""))))
    for _path, section in entries.items():
        for e, span in section:
            rule = e.get("rule")
            if rule not in CODES or not str(rule).startswith("LNT") or rule == "LNT018":
                kept.append(
                    error(
                        "LNT018",
                        span,
                        f"lint.disable names unknown rule {rule!r}",
                        "rules: see docs/lint.md",
                    )
                )
            elif span not in used:
                kept.append(
                    warning(
                        "LNT018",
                        span,
                        f"lint.disable of {rule} suppresses no finding in this file",
                        "remove the entry",
                    )
                )
    return kept, suppressed


# ---------------------------------------------------------------------------- entry points


def lint_project(
    project: ir.Project,
    sources: Sources,
    *,
    profiles: tuple[str, ...] | None = None,
    token_budget: int | None = None,
    today: dt.date | None = None,
) -> LintResult:
    """Lint a compiled project. `profiles` / `token_budget` override the gateway manifest's."""
    today = today or dt.date.today()
    f = _Findings()
    chosen = resolve_profiles(project, sources, profiles, f)
    server = project.gateway.server_name
    for t in project.tools:
        _name_checks(t, server, chosen, f)
        _schema_checks(t, sources, chosen, f)
        _quality_checks(t, sources, today, f)
        _binding_checks(t, sources, f)
    _duplicates(project.tools, sources, f)
    _tenant_checks(project, chosen, f)
    results = measure(project, _budget(project, chosen, token_budget))
    _token_checks(results, f)
    kept, suppressed = _suppress(f.diagnostics(), sources)
    return LintResult(normalise(kept), chosen, results, tuple(suppressed))


def lint(
    options: api.Options,
    *,
    profiles: tuple[str, ...] | None = None,
    token_budget: int | None = None,
    today: dt.date | None = None,
) -> LintResult:
    """Compile the manifests and lint them; compile errors are returned as they are."""
    result = api.compile_manifests(options)
    if result.project is None:
        return LintResult(result.diagnostics)
    linted = lint_project(
        result.project,
        Sources.of(options),
        profiles=profiles,
        token_budget=token_budget,
        today=today,
    )
    return dataclasses.replace(
        linted, diagnostics=normalise((*result.diagnostics, *linted.diagnostics))
    )


def rules_markdown() -> str:
    """docs/lint.md: the profiles as a table, generated from `profiles.PROFILES`."""
    lines = [
        "# `gen lint`: client profiles and rules",
        "",
        "`gen lint` compiles the manifests and checks the catalog against the client profiles",
        "the gateway manifest selects (`lint.profiles`; `--profile` overrides), then measures",
        "each representative tenant's `tools/list` payload in tokens. Generated from",
        "`generator/profiles.py` and `generator/diagnostics.py` (`python -m generator.docs`).",
        "",
        "## Profiles",
        "",
        "Numbers are defaults: override them per profile in the gateway manifest's",
        "`lint.limits` (`warn_tools`, `max_tools`, `max_prefixed_name`, `token_budget`).",
        "`lint.token_budget` sets every profile's budget, and a profile's own in `lint.limits`",
        "wins over it; a tenant's tools/list must fit the smallest budget of the profiles checked.",
        "An entry for a profile that `lint.profiles` does not list is a warning, and a",
        "`warn_tools` not below `max_tools` an error (LNT023).",
        "",
        "| profile | client | tool name | prefixed name | tools warn / max | rejects | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in PROFILES.values():
        rejects = [
            x
            for x, on in (
                ("$ref/$defs", p.rejects_refs),
                ("type arrays", p.rejects_type_arrays),
                ("schema additionalProperties", p.additional_properties == "boolean"),
                ("non-strict objects", p.strict),
            )
            if on
        ]
        rejects += list(p.rejects_combinators)
        names = ", ".join(f"`{n}`" for n in (p.name, *p.aliases))
        prefixed = f"`{p.prefix}` <= {p.max_prefixed_name}" if p.prefix else ""
        tools = f"{p.warn_tools or '-'} / {p.max_tools or '-'}"
        lines.append(
            f"| {names} | {p.title} | `{p.name_rule}` | {prefixed} | {tools} | "
            f"{', '.join(rejects)} | {p.token_budget:,} |"
        )
    lines += ["", "## Rules", "", "| rule | meaning |", "|---|---|"]
    lines += [f"| `{c.code}` | {c.title} |" for c in CODES.values() if c.stage == "lint"]
    lines += [
        "",
        "Top-level `anyOf`/`oneOf`/`allOf` and a root that is not `type: object` are compile",
        "errors (GEN204) for every client, so `gen lint` reports them before any profile runs.",
        "",
        "## Disabling a rule for one file",
        "",
        "```yaml",
        "lint:",
        "  disable:",
        "    - rule: LNT013",
        "      reason: annotations come from the upstream's own MCP server",
        "```",
        "",
        "The entry applies to findings located in that file. An entry that suppresses nothing",
        "is a warning (LNT018); an unknown rule is an error.",
        "",
    ]
    return "\n".join(lines)
