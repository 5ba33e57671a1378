"""`gen breaking`: which changes to the manifests break agents already using the tools?

Both sides are compiled to IR and compared, like buf's breaking rules but for MCP tools. Each
change has a stable rule ID (BRK0xx break callers, BRK1xx are safe), a location (in the new
manifests; for a removal, where the old manifests had it) and a hint.

The rules follow who is hurt. An agent *sends* inputs, so an input may accept more but not
less: a removed property, a narrower type, a removed enum value, a tighter constraint or a
new required property break calls that worked. An agent *reads* outputs, so an output may
promise more but not less: a removed property, a property made optional, a type, an enum or
a constraint (a bound, pattern or format) that now allows values the agent never saw break
the code that reads them.

A breaking change is allowed (reported, exit 0) by an exception in the new manifests:

    breaking:
      allow:
        - {rule: BRK003, target: "slack_send_message.input.unfurl_links", reason: "..."}

or when it removes a tool or property whose deprecation's sunset date has passed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import api, ir
from .diagnostics import (
    CODES,
    Diagnostic,
    ErrorFormat,
    Severity,
    Span,
    error,
    github_message,
    github_property,
    has_errors,
    normalise,
    printable,
    shortened,
    warning,
)
from .diagnostics import render as render_diagnostics
from .load import discover
from .locate import Pointer, Sources


class BreakingError(Exception):
    """The comparison cannot start (an unknown git ref, git missing...): a usage error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    rule: str
    span: Span
    target: str  # what changed, as exceptions name it: tool, tool.input.a.b, resource:x
    message: str
    hint: str | None = None
    allowed: str | None = None  # why a breaking change is accepted

    @property
    def breaking(self) -> bool:
        return self.rule.startswith("BRK0")

    @property
    def severity(self) -> str:
        return "breaking" if self.breaking else "safe"

    @property
    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.rule, self.message)

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "allowed": self.allowed,
            "target": self.target,
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class BreakingResult:
    changes: tuple[Change, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    # The prefix of locations on the baseline's side ("REF:" for a git ref, a directory
    # outside the project): those files are not in the checkout.
    baseline_label: str = ""

    @property
    def unallowed(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking and not c.allowed)

    @property
    def ok(self) -> bool:
        return not self.unallowed and not has_errors(self.diagnostics)


@dataclass
class _Side:
    project: ir.Project | None
    sources: Sources
    label: str = ""  # "REF:" for a git ref: old locations then read REF:manifests/x.yaml

    def span(self, span: Span | None) -> Span:
        span = span or Span(file="?")
        return replace(span, file=self.label + span.file) if self.label else span


@dataclass
class _Ctx:
    old: _Side
    new: _Side
    today: dt.date
    changes: list[Change] = field(default_factory=list)

    def add(
        self,
        rule: str,
        span: Span,
        target: str,
        message: str,
        hint: str | None = None,
        allowed: str | None = None,
    ) -> None:
        assert rule in CODES, rule
        self.changes.append(
            Change(rule=rule, span=span, target=target, message=message, hint=hint, allowed=allowed)
        )


# ---------------------------------------------------------------------------- schemas

_WIDER = {"number": {"integer"}}
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_EXACT = ("pattern", "format")  # `const` is compared with `enum`, as the values allowed
# A format to one that accepts every value the first accepts (and more): each grammar holds the
# other's. RFC 3986: a URI is a URI reference; RFC 3987: a URI is an IRI, a URI reference an IRI
# reference, an IRI an IRI reference; RFC 6531 extends RFC 5321's addresses with UTF-8. (Not
# hostname -> idn-hostname: an `xn--` label that is no valid punycode is a hostname only.)
_WIDER_FORMATS = {
    "uri": frozenset({"uri-reference", "iri", "iri-reference"}),
    "uri-reference": frozenset({"iri-reference"}),
    "iri": frozenset({"iri-reference"}),
    "email": frozenset({"idn-email"}),
}
# Keywords that constrain values but that the comparison does not reason about: any change to
# one (annotations inside left aside) is reported as possibly breaking, to be checked by hand
# and allowed, rather than passed as no change.
_UNCOMPARED = (
    "$ref",
    "$defs",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "propertyNames",
    "prefixItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
    }
)


_NO_DEFAULT = object()


def _canonical(value: Any) -> str:
    """A JSON value as text that tells `1`, `1.0` and `true` apart (Python's == does not)."""
    if value is _NO_DEFAULT:
        return ""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _shown(value: Any) -> str:
    return shortened(json.dumps(value, ensure_ascii=False, default=str))


def _semantic(value: Any) -> Any:
    """`value` without annotations (descriptions, titles, `x-` keys...) at any depth: what
    decides which values a schema accepts. (Within `properties` and `$defs` the keys are
    names, kept.)"""
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k: _semantic(v)
        for k, v in value.items()
        if k not in _ANNOTATIONS and not (isinstance(k, str) and k.startswith("x-"))
    }


def _multiple_relaxed(old: Any, new: Any) -> bool:
    """Whether `multipleOf: new` accepts every multiple of `old` (new divides old)."""
    if type(old) is int and type(new) is int:  # exactly (a float quotient rounds, overflows)
        return new != 0 and old % new == 0
    try:
        ratio = old / new
    except (TypeError, ZeroDivisionError, OverflowError):  # not numbers; 0; past a float
        return False
    return isinstance(ratio, int | float) and math.isfinite(ratio) and float(ratio).is_integer()


def _accepts_more(kw: str, a: Any, b: Any) -> bool:
    """Whether `kw: b` accepts every value `kw: a` does, and more (for `multipleOf` and
    `format`; a pattern is never known to)."""
    if kw == "multipleOf":
        return _multiple_relaxed(a, b)
    return (
        kw == "format"
        and isinstance(a, str)
        and isinstance(b, str)
        and b in _WIDER_FORMATS.get(a, ())
    )


def _constraint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """How the constraints of schema `old` on values (bounds, `pattern`, `format`,
    `multipleOf`, `uniqueItems`, `additionalProperties: false`) changed in `new`, as
    (keyword, way, text) in keyword order. `way` says which values the new schema allows:
    "tightened" (fewer), "relaxed" (more), or "changed" (neither holds every value of the
    other as far as the comparison knows: a pattern replaced, a format by an unrelated one).
    The caller reads the direction as its side is hurt: a tightened input refuses calls, a
    relaxed output returns values its readers refuse; "changed" may do either."""
    out: list[tuple[str, str, str]] = []
    for kw in (*_UPPER, *_LOWER, *_EXACT, "multipleOf", "uniqueItems"):
        a, b = old.get(kw), new.get(kw)
        if kw == "uniqueItems":  # false is the same as absent
            a, b = a or None, b or None
        if a == b:
            continue
        if b is None:
            out.append((kw, "relaxed", f"{kw} {a!r} dropped"))
        elif a is None:
            out.append((kw, "tightened", f"{kw} {b!r} added"))
        elif kw in (*_EXACT, "multipleOf"):
            if _accepts_more(kw, a, b):
                out.append((kw, "relaxed", f"{kw} {a!r} -> {b!r}"))
            else:
                way = "tightened" if _accepts_more(kw, b, a) else "changed"
                out.append((kw, way, f"{kw} {b!r} (was {a!r})"))
        elif (kw in _UPPER) == (b < a):
            out.append((kw, "tightened", f"{kw} {a!r} -> {b!r}"))
        else:
            out.append((kw, "relaxed", f"{kw} {a!r} -> {b!r}"))
    closed_before = old.get("additionalProperties") is False
    closed_after = new.get("additionalProperties") is False
    if closed_after and not closed_before:
        out.append(("additionalProperties", "tightened", "additionalProperties: false added"))
    elif closed_before and not closed_after:
        out.append(("additionalProperties", "relaxed", "additionalProperties opened"))
    return out


def _values(s: dict[str, Any]) -> list[Any] | None:
    """The values `enum` and `const` limit a schema to (None: any value). `const: x` is
    `enum: [x]`: a change between the two is a change of the values allowed."""
    values = s["enum"] if isinstance(s.get("enum"), list) else None
    if "const" in s:
        values = [s["const"]] if values is None else [v for v in values if v == s["const"]]
    return values


def _values_key(s: dict[str, Any]) -> str:
    """The keyword that says which values a schema allows, to point at."""
    return "enum" if "enum" in s or "const" not in s else "const"


def _types(s: Any) -> set[str] | None:
    """The JSON types a schema allows (None: any)."""
    if not isinstance(s, dict):
        return None
    t = s.get("type")
    if t is None:
        return None
    names = {t} if isinstance(t, str) else set(t)
    for wide, narrow in _WIDER.items():
        if wide in names:
            names |= narrow
    return names


def _show(t: set[str] | None) -> str:
    if t is None:
        return "any"
    return "|".join(sorted(t - ({"integer"} if "number" in t else set())))


def _dotted(path: tuple[str, ...]) -> str:
    out = ""
    for p in path:
        out += p if p == "[]" else (f".{p}" if out else p)
    return out


def _sunset_passed(schema: Any, today: dt.date) -> str | None:
    if isinstance(schema, dict) and schema.get("deprecated") is True:
        sunset = schema.get("x-sunset")
        if isinstance(sunset, str) and sunset <= today.isoformat():
            return f"deprecated, sunset {sunset} has passed"
    return None


class _Compare:
    """Compares one tool's input (or output) schemas, recursing into properties and items."""

    def __init__(self, ctx: _Ctx, tool: str, which: str) -> None:
        self.ctx, self.tool, self.which = ctx, tool, which

    def target(self, path: tuple[str, ...]) -> str:
        return f"{self.tool}.{self.which}" + (f".{_dotted(path)}" if path else "")

    def new_span(self, pointer: Pointer) -> Span:
        side = self.ctx.new
        return side.span(
            side.sources.schema_span(self.tool, self.which, pointer)
            or side.sources.tool_span(self.tool)
        )

    def old_span(self, pointer: Pointer) -> Span:
        side = self.ctx.old
        return side.span(
            side.sources.schema_span(self.tool, self.which, pointer)
            or side.sources.tool_span(self.tool)
        )

    def where(self, path: tuple[str, ...]) -> str:
        return f"{self.tool}: {self.which}" + (f" {_dotted(path)!r}" if path else " root")

    def run(self, old: Any, new: Any, path: tuple[str, ...] = (), pointer: Pointer = ()) -> None:
        # The schema `true` accepts (or promises) anything, as `{}` does: `id: true` becoming
        # `id: {type: string}` narrows the input. (`false`, nothing at all, is left out.)
        old, new = ({} if s is True else s for s in (old, new))
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        if self.which == "input":
            self.input_node(old, new, path, pointer)
        else:
            self.output_node(old, new, path, pointer)
        self.uncompared(old, new, path, pointer)
        self.properties(old, new, path, pointer)
        for key, part in (("items", "[]"), ("additionalProperties", "*")):
            o, n = old.get(key, True), new.get(key, True)
            if o is True and n is True:
                continue
            # A missing schema allows anything: compared as `{}`, so gaining one narrows it
            # and losing one widens it. (`false`, no value at all, is left to the node.)
            if o is not False and n is not False:
                self.run(o, n, (*path, part), (*pointer, key))

    def uncompared(
        self, old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...], pointer: Pointer
    ) -> None:
        changed = [kw for kw in _UNCOMPARED if _semantic(old.get(kw)) != _semantic(new.get(kw))]
        if not changed:
            return
        where, kws = self.where(path), ", ".join(changed)
        if self.which == "input":
            self.ctx.add(
                "BRK013",
                self.new_span(pointer),
                self.target(path),
                f"{where}: {kws} changed, which gen breaking does not compare: calls that "
                "passed before may fail now",
                "check that it accepts every value it accepted, then allow it",
            )
        else:
            self.ctx.add(
                "BRK008",
                self.new_span(pointer),
                self.target(path),
                f"{where}: {kws} changed, which gen breaking does not compare: values it "
                "returned before may not be returned now",
                "check that readers of the old values keep working, then allow it",
            )

    # -- inputs: may accept more, never less
    def input_node(
        self, old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...], pointer: Pointer
    ) -> None:
        add, span, target, where = (
            self.ctx.add,
            self.new_span(pointer),
            self.target(path),
            self.where(path),
        )
        if (
            path
            and "default" in old
            and _canonical(old["default"]) != _canonical(new.get("default", _NO_DEFAULT))
        ):
            # The value a call that leaves it out is made with (the runtime fills it in).
            now = "no default" if "default" not in new else _shown(new["default"])
            add(
                "BRK015",
                self.new_span((*pointer, "default") if "default" in new else pointer),
                target,
                f"{where} default changed from {_shown(old['default'])} to {now}: calls "
                "that leave it out now do something else",
                "keep the default, or add a new property with the new one",
            )
        ot, nt = _types(old), _types(new)
        if ot != nt:
            if nt is not None and (ot is None or not ot <= nt):
                add(
                    "BRK004",
                    self.new_span((*pointer, "type")),
                    target,
                    f"{where} type narrowed from {_show(ot)} to {_show(nt)}",
                    "accept the old type too (a type list), or add a new property",
                )
            else:
                add("BRK104", span, target, f"{where} type widened from {_show(ot)} to {_show(nt)}")
        oe, ne = _values(old), _values(new)
        if ne is not None:
            values_span = self.new_span((*pointer, _values_key(new)))
            gone = [v for v in oe if v not in ne] if oe is not None else None
            if gone is None:
                add(
                    "BRK005",
                    values_span,
                    target,
                    f"{where} is now restricted to {ne}",
                    "accept every value it accepted",
                )
            elif gone:
                add(
                    "BRK005",
                    values_span,
                    target,
                    f"{where} no longer accepts {', '.join(json.dumps(v) for v in gone)}",
                    "keep the value and map it to its replacement in the handler, or "
                    "deprecate it first",
                )
            added = [v for v in ne if oe is not None and v not in oe]
            if added:
                add(
                    "BRK105",
                    values_span,
                    target,
                    f"{where} accepts {', '.join(json.dumps(v) for v in added)} too",
                )
        elif oe is not None:
            add("BRK104", span, target, f"{where} accepts any value, not only {oe}")
        changes = _constraint_changes(old, new)
        # A change of unknown direction (a pattern or a format replaced) may refuse a call
        # that passed: as tightened.
        tightened = [text for _, way, text in changes if way != "relaxed"]
        relaxed = [text for _, way, text in changes if way == "relaxed"]
        if tightened:
            add(
                "BRK013",
                span,
                target,
                f"{where} constraint tightened: {'; '.join(tightened)}",
                "calls that passed the old constraint now fail: relax it, or version the tool",
            )
        if relaxed:
            add("BRK104", span, target, f"{where} constraint relaxed: {'; '.join(relaxed)}")

    # -- outputs: may promise more, never less
    def output_node(
        self, old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...], pointer: Pointer
    ) -> None:
        add, target, where = self.ctx.add, self.target(path), self.where(path)
        ot, nt = _types(old), _types(new)
        if ot != nt:
            if ot is not None and (nt is None or not nt <= ot):
                add(
                    "BRK008",
                    self.new_span((*pointer, "type")),
                    target,
                    f"{where} type changed from {_show(ot)} to {_show(nt)}",
                    "readers of the old type break: add a new property with the new type",
                )
            else:
                add(
                    "BRK110",
                    self.new_span((*pointer, "type")),
                    target,
                    f"{where} type narrowed from {_show(ot)} to {_show(nt)}",
                )
        oe, ne = _values(old), _values(new)
        if oe is not None:
            values_span = self.new_span((*pointer, _values_key(new)))
            added = [v for v in ne if v not in oe] if ne is not None else None
            if added is None:
                add(
                    "BRK014",
                    self.new_span(pointer),
                    target,
                    f"{where} is no longer limited to {oe}",
                    "readers that switch on the value break: keep the enum",
                )
            elif added:
                add(
                    "BRK014",
                    values_span,
                    target,
                    f"{where} may now be {', '.join(json.dumps(v) for v in added)}",
                    "readers that switch on the value break: add a new property, or make "
                    "sure readers have a default branch and allow it",
                )
            gone = [v for v in oe if ne is not None and v not in ne]
            if gone:
                add(
                    "BRK110",
                    values_span,
                    target,
                    f"{where} is no longer {', '.join(json.dumps(v) for v in gone)}",
                )
        span = self.new_span(pointer)
        changes = _constraint_changes(old, new)
        # A change of unknown direction (a pattern or a format replaced) may return values
        # the old constraint refused: as relaxed. An object opened is left to BRK103 below.
        looser = [
            (way, text)
            for kw, way, text in changes
            if way != "tightened" and kw != "additionalProperties"
        ]
        if looser:
            verb = "relaxed" if all(way == "relaxed" for way, _ in looser) else "changed"
            add(
                "BRK016",
                span,
                target,
                f"{where} constraint {verb}: {'; '.join(text for _, text in looser)}",
                "readers' typed models may refuse the new values: keep the constraint, or add "
                "a new property",
            )
        tighter = [text for _, way, text in changes if way == "tightened"]
        if tighter:
            add("BRK110", span, target, f"{where} constraint tightened: {'; '.join(tighter)}")
        if ("additionalProperties", "relaxed") in {(kw, way) for kw, way, _ in changes}:
            # Properties it does not declare may now appear: to its readers the change a
            # declared property added is (BRK103), and the generated output models ignore
            # properties they do not know (emit/models.py), whatever the schema said.
            add("BRK103", span, target, f"{where} may now hold properties it does not declare")

    def properties(
        self, old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...], pointer: Pointer
    ) -> None:
        op, np_ = old.get("properties") or {}, new.get("properties") or {}
        if not isinstance(op, dict) or not isinstance(np_, dict):
            return
        oreq, nreq = set(old.get("required") or ()), set(new.get("required") or ())
        inp = self.which == "input"
        for name in op:
            sub, subp = (*path, name), (*pointer, "properties", name)
            target, where = self.target(sub), self.where(sub)
            if name not in np_:
                self.ctx.add(
                    "BRK003" if inp else "BRK006",
                    self.old_span(subp),
                    target,
                    f"{where} removed",
                    "keep it (deprecated, with x-replacement and x-sunset) until its sunset date"
                    if inp
                    else "keep returning it (deprecated) until its sunset date",
                    allowed=_sunset_passed(op[name], self.ctx.today),
                )
                continue
            if name in nreq and name not in oreq:
                if inp:
                    self.ctx.add(
                        "BRK002",
                        self.new_span(subp),
                        target,
                        f"{where} is now required",
                        "give it a default and keep it optional, or add a new tool",
                    )
                else:
                    self.ctx.add(
                        "BRK110", self.new_span(subp), target, f"{where} is now always present"
                    )
            elif name in oreq and name not in nreq:
                if inp:
                    self.ctx.add("BRK104", self.new_span(subp), target, f"{where} is now optional")
                else:
                    self.ctx.add(
                        "BRK007",
                        self.new_span(subp),
                        target,
                        f"{where} is no longer always present",
                        "readers that rely on it break: keep it required",
                    )
            if (
                isinstance(np_[name], dict)
                and np_[name].get("deprecated") is True
                and not (isinstance(op[name], dict) and op[name].get("deprecated") is True)
            ):
                repl = np_[name].get("x-replacement")
                self.ctx.add(
                    "BRK107",
                    self.new_span(subp),
                    target,
                    f"{where} deprecated" + (f" in favour of {repl!r}" if repl else ""),
                )
            self.run(op[name], np_[name], sub, subp)
        for name in np_:
            if name in op:
                continue
            sub, subp = (*path, name), (*pointer, "properties", name)
            target, where = self.target(sub), self.where(sub)
            if not inp:
                self.ctx.add("BRK103", self.new_span(subp), target, f"{where} added")
            elif name in nreq:
                self.ctx.add(
                    "BRK002",
                    self.new_span(subp),
                    target,
                    f"{where} added as required",
                    "make it optional with a default, or add a new tool",
                )
            else:
                self.ctx.add("BRK102", self.new_span(subp), target, f"{where} added (optional)")


# ---------------------------------------------------------------------------- tools


def _tool_changes(ctx: _Ctx, old: ir.Tool, new: ir.Tool) -> None:
    nsrc = ctx.new.sources
    name = new.name

    def at(*keys: str) -> Span:
        return ctx.new.span(nsrc.tool_span(name, *keys) or new.span)

    oa, na = old.annotations, new.annotations
    flips = [
        (f, o, n)
        for f, o, n in (
            ("read_only", oa.read_only, na.read_only),
            ("destructive", oa.destructive, na.destructive),
            ("idempotent", oa.idempotent, na.idempotent),
        )
    ]
    worse = [
        f"{f} {json.dumps(o)} -> {json.dumps(n)}"
        for f, o, n in flips
        if (f == "destructive" and n and not o) or (f != "destructive" and o and not n)
    ]
    better = [
        f"{f} {json.dumps(o)} -> {json.dumps(n)}"
        for f, o, n in flips
        if o != n and f"{f} {json.dumps(o)} -> {json.dumps(n)}" not in worse
    ]
    if worse:
        ctx.add(
            "BRK009",
            at("annotations"),
            name,
            f"{name}: {', '.join(worse)}",
            "clients that run it without confirmation, or retry it, now risk data: "
            "add a new tool instead",
        )
    if better:
        ctx.add("BRK109", at("annotations"), name, f"{name}: {', '.join(better)}")
    if old.scope != new.scope:
        if new.scope == "write":
            ctx.add(
                "BRK010",
                at("scope"),
                name,
                f"{name}: scope raised from read to write",
                "read-only API keys lose the tool: add a new write tool instead",
            )
        else:
            ctx.add("BRK109", at("scope"), name, f"{name}: scope lowered from write to read")
    if new.deprecated is not None and old.deprecated is None:
        d = new.deprecated
        ctx.add(
            "BRK107",
            ctx.new.span(nsrc.tool_span(name, "deprecated", key=True) or new.span),
            name,
            f"{name}: deprecated"
            + (f" in favour of {d.replacement}" if d.replacement else "")
            + (f", sunset {d.sunset}" if d.sunset else ""),
        )
    _Compare(ctx, name, "input").run(old.input_schema.value, new.input_schema.value)
    _Compare(ctx, name, "output").run(old.output_schema.value, new.output_schema.value)


def _removed_tool(ctx: _Ctx, old: ir.Tool, added: list[ir.Tool]) -> None:
    hint = "keep it deprecated (deprecated: {reason, replacement, sunset}) until its sunset"
    twins = [
        t.name
        for t in added
        if t.input_schema == old.input_schema and t.output_schema == old.output_schema
    ]
    if twins:
        hint = f"renamed to {twins[0]}? A rename breaks callers: keep the old name deprecated"
    allowed = None
    d = old.deprecated
    if d is not None and d.sunset is not None and d.sunset <= ctx.today.isoformat():
        allowed = f"deprecated, sunset {d.sunset} has passed"
    elif d is not None:
        hint = (
            f"deprecated with sunset {d.sunset}: removal is allowed from then on"
            if d.sunset
            else "deprecated without a sunset date: add one"
        )
    span = ctx.old.span(ctx.old.sources.tool_span(old.name) or old.span)
    ctx.add("BRK001", span, old.name, f"{old.name}: tool removed", hint, allowed)


# ---------------------------------------------------------------------------- connectors


def _auth_changes(old: ir.ConnectorAuth, new: ir.ConnectorAuth) -> list[str]:
    out = []
    if old.type != new.type:
        out.append(f"auth type {old.type} -> {new.type}")
    # Every setting but the type and the fields (compared below): which field is sent where
    # (an OAuth2 client id and secret swapped would fail every refresh), and where tokens
    # come from.
    for attr in (f.name for f in dataclasses.fields(ir.ConnectorAuth)):
        if attr in ("type", "fields"):
            continue
        a, b = getattr(old, attr), getattr(new, attr)
        if a != b and old.type == new.type:
            out.append(f"{attr} {a!r} -> {b!r}")
    of = {f.name: f for f in old.fields}
    nf = {f.name: f for f in new.fields}
    for name, f in nf.items():
        if f.required and (name not in of or not of[name].required):
            out.append(f"credential field {name!r} now required")
    out.extend(f"credential field {name!r} removed" for name in of if name not in nf)
    return out


def _connector_changes(ctx: _Ctx, old: ir.Project | None, new: ir.Project) -> None:
    olds = {c.name: c for c in (old.connectors if old else ())}
    for c in new.connectors:
        span = ctx.new.span(ctx.new.sources.connector_span(c.name) or c.span)
        if c.name not in olds:
            ctx.add("BRK108", span, f"connector:{c.name}", f"connector {c.name!r} added")
            continue
        diffs = _auth_changes(olds[c.name].auth, c.auth)
        if diffs:
            auth_span = ctx.new.span(ctx.new.sources.connector_span(c.name, "auth") or c.span)
            ctx.add(
                "BRK011",
                auth_span,
                f"connector:{c.name}",
                f"connector {c.name!r}: {'; '.join(diffs)}",
                "every tenant's stored credentials stop working: they must reconnect",
            )


def _resource_changes(ctx: _Ctx, old: ir.Project | None, new: ir.Project) -> None:
    olds = {r.name: r for r in (old.gateway.resources if old else ())}
    news = {r.name: r for r in new.gateway.resources}
    for name, r in olds.items():
        if name not in news:
            ctx.add(
                "BRK012",
                ctx.old.span(r.span),
                f"resource:{name}",
                f"resource {name!r} ({r.uri or r.uri_template}) removed",
                "clients that read it break: keep serving it",
            )
        elif (r.uri, r.uri_template) != (news[name].uri, news[name].uri_template):
            n = news[name]
            ctx.add(
                "BRK012",
                ctx.new.span(n.span),
                f"resource:{name}",
                f"resource {name!r} moved from {r.uri or r.uri_template} to "
                f"{n.uri or n.uri_template}",
                "clients address resources by URI: keep the old one",
            )
    for name, r in news.items():
        if name not in olds:
            ctx.add("BRK106", ctx.new.span(r.span), f"resource:{name}", f"resource {name!r} added")


# ---------------------------------------------------------------------------- exceptions


def _target_matches(target: str, pattern: str) -> bool:
    """`pattern` as a glob of `*` and `?`: brackets are literal, as targets print array items
    (`issues[].labels[].name`), never character classes."""
    return fnmatch.fnmatchcase(target, re.sub(r"[\[\]]", lambda m: f"[{m.group()}]", pattern))


def _exceptions(ctx: _Ctx) -> tuple[list[Change], list[Diagnostic]]:
    entries: list[tuple[dict[str, Any], Span]] = []
    for path in ctx.new.sources.docs:
        entries.extend(ctx.new.sources.file_settings(path, "breaking", "allow"))
    diags: list[Diagnostic] = []
    used: set[Span] = set()
    out = []
    for c in ctx.changes:
        if c.breaking and not c.allowed:
            for e, span in entries:
                pattern = e.get("target")
                if e.get("rule") == c.rule and (
                    pattern is None or _target_matches(c.target, pattern)
                ):
                    used.add(span)
                    c = replace(c, allowed=f"exception at {span}: {e.get('reason')}")
                    break
        out.append(c)
    for e, span in entries:
        if e.get("rule") not in CODES:
            diags.append(
                error(
                    "BRK201",
                    span,
                    f"breaking.allow names unknown rule {e.get('rule')!r}",
                    "rules: see docs/breaking.md",
                )
            )
        elif span not in used:
            diags.append(
                warning(
                    "BRK201",
                    span,
                    f"breaking.allow entry ({e.get('rule')}"
                    + (f", {e['target']}" if e.get("target") else "")
                    + ") matches no change",
                    "remove it once the change landed",
                )
            )
    return out, diags


# ---------------------------------------------------------------------------- entry points


def compare(
    old: ir.Project | None,
    new: ir.Project,
    *,
    old_sources: Sources,
    new_sources: Sources,
    today: dt.date | None = None,
    old_label: str = "",
) -> BreakingResult:
    """Compare two compiled projects (`old` None: nothing existed). Locations of removed things
    are prefixed with `old_label` (e.g. `main:` for a git ref)."""
    ctx = _Ctx(
        _Side(old, old_sources, old_label), _Side(new, new_sources), today or dt.date.today()
    )
    olds = {t.name: t for t in (old.tools if old else ())}
    news = {t.name: t for t in new.tools}
    added = [t for n, t in news.items() if n not in olds]
    for name, t in olds.items():
        if name in news:
            _tool_changes(ctx, t, news[name])
        else:
            _removed_tool(ctx, t, added)
    for t in added:
        ctx.add(
            "BRK101",
            ctx.new.span(new_sources.tool_span(t.name) or t.span),
            t.name,
            f"{t.name}: tool added",
        )
    _connector_changes(ctx, old, new)
    _resource_changes(ctx, old, new)
    changes, diags = _exceptions(ctx)
    return BreakingResult(
        tuple(sorted(changes, key=lambda c: c.sort_key)), normalise(diags), old_label
    )


def _git(cwd: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:
        raise BreakingError(f"cannot run git: {exc}") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BreakingError(f"git {' '.join(args)}: {msg[-1] if msg else 'failed'}")
    return proc.stdout


def materialise_ref(options: api.Options, ref: str, dest: Path) -> api.Options:
    """Write the manifests as they are at git `ref` under `dest` (same relative paths) and
    return options that compile them."""
    # Names as the file system has them: a name that is not UTF-8 keeps its bytes (os.fsdecode)
    # and the loader reports it, as it does one in the work tree.
    top = Path(os.fsdecode(_git(options.root, "rev-parse", "--show-toplevel").strip())).resolve()
    if not _is_ref(options, ref):
        raise BreakingError(f"{ref!r} is neither a directory nor a git ref of {top}")
    try:
        rel = options.manifests.relative_to(top).as_posix()
        root_rel = options.root.relative_to(top)
    except ValueError as exc:
        raise BreakingError(f"{options.manifests} is not inside the git work tree {top}") from exc
    listing = _git(top, "ls-tree", "-r", "-z", "--name-only", ref, "--", rel or ".")
    for name in filter(None, os.fsdecode(listing).split("\0")):
        if not name.endswith((".yaml", ".yml")):
            continue
        # The work tree's layout under `dest`: the manifests need not be inside the project.
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(top, "show", f"{ref}:{name}"))
    return api.Options(
        root=dest / root_rel,
        manifests=dest / rel,
        out=dest / root_rel / "generated",
        cache=False,
    )


def _against_dir(options: api.Options, against: str) -> Path | None:
    """The directory `against` names, if any. A bare name (no `/`) that is also a git ref is
    ambiguous: which one was meant cannot be guessed (a wrong guess compares against the wrong
    baseline), so it is a usage error that says how to write each. So is an empty `against`
    (a CI variable that is not set) and a directory that is the project's own manifests:
    comparing the manifests with themselves finds nothing, and the gate would pass unseen."""
    if not against:
        raise BreakingError(
            "--against is empty: name a git ref or a directory of the baseline (a CI variable "
            "that holds the base branch may not be set)"
        )
    for base in (Path.cwd(), options.root):
        p = (base / against).resolve()
        if p.is_dir():
            if "/" not in against and against not in (".", "..") and _is_ref(options, against):
                raise BreakingError(
                    f"{against!r} is both a directory ({p}) and a git ref: write "
                    f"./{against} for the directory, or refs/heads/{against} (or a commit) "
                    "for the ref"
                )
            if options.manifests in (p, (p / "manifests").resolve()):
                raise BreakingError(
                    f"--against {against!r} is the project's own manifest directory "
                    f"({options.manifests}): comparing it with itself finds nothing; name the "
                    "baseline (a git ref such as origin/main, or a checkout of it)"
                )
            return p
    return None


def baseline_directory(options: api.Options, directory: Path, out: Path) -> tuple[api.Options, str]:
    """Options that compile the baseline in `directory`, and the label its locations carry.

    A directory holding `manifests/` is a project root (an older checkout, unpacked), read as
    `--project` reads one (`Options.for_project`): its manifests only, not the YAML of its
    tests or CI configuration. Any other directory is the manifest directory itself.
    Outside the project, old locations carry the baseline's root, so that they cannot be
    mistaken for the project's own files."""
    if (directory / "manifests").is_dir():
        old = api.Options.for_project(directory, out=out, cache=False)
    else:
        old = api.Options(root=directory.parent, manifests=directory, out=out, cache=False)
    if directory.is_relative_to(options.root):
        return replace(old, root=options.root), ""
    return old, old.root.as_posix().rstrip("/") + "/"  # "/" is a root of its own: no "//"


def _is_ref(options: api.Options, name: str) -> bool:
    try:
        _git(options.root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    except BreakingError:
        return False
    return True


def breaking(options: api.Options, against: str, *, today: dt.date | None = None) -> BreakingResult:
    """Compare the manifests of `options` with `against`: a directory of manifests, or a git
    ref of the repository holding the project. Raises BreakingError when `against` is neither."""
    new = api.compile_manifests(options)
    if new.project is None:
        return BreakingResult((), new.diagnostics)
    new_sources = Sources.of(options)
    directory = _against_dir(options, against)
    with tempfile.TemporaryDirectory(prefix="mcpforge-breaking-") as tmp:
        if directory is not None:
            old_opts, label = baseline_directory(options, directory, Path(tmp) / "out")
        else:
            old_opts = materialise_ref(options, against, Path(tmp).resolve())
            label = f"{against}:"
        files, problems = discover(old_opts.root, old_opts.manifests)
        if not files and not problems:  # what could not be searched, compiling reports
            if directory is not None:  # a directory named on purpose: surely a wrong path
                message = (
                    f"no *.yaml manifests under {old_opts.manifests}: nothing to compare against"
                )
                hint = "pass the directory that holds the baseline's manifests, or a git ref"
                return BreakingResult((), (error("GEN005", Span(file=against), message, hint),))
            # A ref from before the manifests existed: every tool is new, as the warning says.
            result = compare(
                None,
                new.project,
                old_sources=Sources(()),
                new_sources=new_sources,
                today=today,
                old_label=label,
            )
            where = options.manifests.relative_to(options.root).as_posix()
            note = warning(
                "GEN005",
                Span(file=against),
                f"{against} has no *.yaml manifests under {where}/: every tool counts as added",
                "check the ref if the manifests existed there",
            )
            return replace(result, diagnostics=normalise((note, *result.diagnostics)))
        old = api.compile_manifests(old_opts)
        if old.project is None:
            diags = tuple(
                replace(d, span=replace(d.span, file=label + d.span.file)) for d in old.diagnostics
            )
            return BreakingResult((), normalise((*diags, *new.diagnostics)), label)
        result = compare(
            old.project,
            new.project,
            old_sources=Sources.of(old_opts),
            new_sources=new_sources,
            today=today,
            old_label=label,
        )
    return replace(result, diagnostics=normalise((*new.diagnostics, *result.diagnostics)))


# ---------------------------------------------------------------------------- rendering


def _lines(
    changes: tuple[Change, ...], fmt: ErrorFormat, baseline: str, workspace: str
) -> Iterator[str]:
    for c in changes:
        # Escaped as in diagnostics.render: messages quote manifest text.
        message, hint = printable(c.message), c.hint and printable(c.hint)
        allowed = c.allowed and printable(c.allowed)
        if fmt == "github":
            level = (
                "error" if c.breaking and not c.allowed else "warning" if c.breaking else "notice"
            )
            msg = message + (f" ({hint})" if hint and not allowed else "")
            msg += f" [allowed: {allowed}]" if allowed else ""
            if baseline and c.span.file.startswith(baseline):
                # Only in the baseline (a removal): GitHub can attach an annotation to a file
                # of the checkout only, so the location goes into the message.
                msg = f"{c.span}: {msg}"
                where = ""
            else:
                file = github_property(printable(workspace + c.span.file))
                where = f"file={file},line={c.span.line},col={c.span.col},"
            yield f"::{level} {where}title={c.rule}::{github_message(msg)}"
        else:
            yield f"{c.span}: {c.severity}[{c.rule}] {message}"
            if allowed:
                yield f"  allowed: {allowed}"
            elif hint and c.breaking:
                yield f"  hint: {hint}"


def summary(result: BreakingResult) -> str:
    if not result.changes and has_errors(result.diagnostics):
        errors = sum(d.severity is Severity.ERROR for d in result.diagnostics)
        return f"not compared: {errors} error{'s' if errors != 1 else ''}"
    broken = sum(c.breaking for c in result.changes)
    allowed = sum(c.breaking and c.allowed is not None for c in result.changes)
    safe = len(result.changes) - broken
    return f"{broken} breaking ({allowed} allowed), {safe} safe"


def render(result: BreakingResult, fmt: ErrorFormat = "text", workspace: str = "") -> str:
    """`workspace`: as for diagnostics.render, the project's path in the repository."""
    if fmt == "json":
        doc = {
            "changes": [c.as_dict() for c in result.changes],
            "diagnostics": [d.as_dict() for d in result.diagnostics],
            "summary": summary(result),
            "ok": result.ok,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    lines = _lines(result.changes, fmt, result.baseline_label, workspace)
    text = "".join(line + "\n" for line in lines)
    return text + render_diagnostics(
        result.diagnostics, fmt, outside=result.baseline_label, workspace=workspace
    )


def rules_markdown() -> str:
    """docs/breaking.md, generated from the code registry."""
    lines = [
        "# `gen breaking`: rules",
        "",
        "`gen breaking --against REF` compiles the manifests at REF (a git ref, a directory of",
        "manifests, or a project root: a directory holding `manifests/`, of which only those",
        "are read) and the current ones, and reports every change with a stable rule ID.",
        "BRK0xx changes break agents already using the tools (exit 1 unless allowed); BRK1xx",
        "are safe. Generated from `generator/diagnostics.py` (`python -m generator.docs`).",
        "",
        "Inputs may accept more, never less (agents send them); outputs may promise more, never",
        "less (agents read them). Locations point at the new manifests; a removal points at the",
        "old ones (`REF:path:line:col` for a git ref); with `--error-format github` such a",
        "removal is an annotation without a file (none of the checkout's files holds it), its",
        "location in the message.",
        "",
        "A baseline directory without manifests is an error (GEN005), so that a wrong path",
        "cannot pass every change as an addition. A git ref without them (from before the",
        "manifests existed) is compared as an empty catalog, with a GEN005 warning. A bare",
        "name that is both a directory and a git ref is a usage error (exit 2): write `./NAME`",
        "for the directory, `refs/heads/NAME` or a commit for the ref.",
        "",
        "| rule | severity | meaning |",
        "|---|---|---|",
    ]
    for c in CODES.values():
        if c.stage == "breaking" and c.code != "BRK201":
            sev = "breaking" if c.code.startswith("BRK0") else "safe"
            lines.append(f"| `{c.code}` | {sev} | {c.title} |")
    lines += [
        "",
        "## Allowing a breaking change",
        "",
        "Any manifest may carry exceptions; each needs a reason (`BRK201` reports an entry",
        "that matches nothing):",
        "",
        "```yaml",
        "breaking:",
        "  allow:",
        "    - rule: BRK003",
        "      target: slack_send_message.input.unfurl_links  # globs: slack_*",
        "      reason: the upstream API dropped the option; it was ignored since March",
        "```",
        "",
        "Targets read `tool`, `tool.input.a.b`, `tool.output.items[].id` (`[]`: the items of",
        "an array, `.*`: the values of `additionalProperties`), `connector:name`,",
        "`resource:name`, as `gen breaking` prints them. In a target, `*` and `?` are globs;",
        "brackets are literal.",
        "",
        "## What is compared",
        "",
        "Per property and array item: `type`, `enum` and `const` (the values allowed: `const:",
        "x` is `enum: [x]`), `required`, the numeric, length and size bounds, `multipleOf`,",
        "`uniqueItems`, `pattern`, `format` (one that accepts every value of the old one and",
        "more relaxes an input: `uri` to `uri-reference`, `iri` or `iri-reference`,",
        "`uri-reference` or `iri` to `iri-reference`, `email` to `idn-email`), `items` and",
        "`additionalProperties` (a missing schema accepts anything). A change to a keyword it",
        "does not reason about (`anyOf`, `oneOf`, `allOf`, `not`, `if`/`then`/`else`, `$ref`,",
        "`$defs`, `patternProperties`, `propertyNames`, `prefixItems`, `contains`,",
        "`dependentRequired`, `dependentSchemas`, `unevaluated*`) is reported as breaking",
        "(BRK013 for an input, BRK008 for an output), to be checked and allowed, never passed as",
        "no change; a change to annotations alone (descriptions, titles, examples, `x-`",
        "keys) is none. An input property's default is the exception: calls that leave the",
        "property out are made with it, so changing or removing it is BRK015 (adding one where",
        "there was none is not reported).",
        "",
        "Constraints are compared the other way round on an output. A constraint dropped or",
        "relaxed (an upper bound raised, a lower one lowered, `multipleOf` to a divisor, a",
        "`format` widened, say `uri` to `uri-reference`; any bound, `pattern`, `format`, say",
        "`date-time`, `multipleOf` or `uniqueItems` dropped) or replaced by one the comparison",
        "cannot order (another pattern, an unrelated format) lets the tool return values that",
        "its readers refuse: the typed client's models check bounds, patterns and the formats",
        "they type (`date-time`, `date`, `uuid`, `ipv4`, `ipv6`), and other readers may check",
        "any format. That is BRK016; a constraint added or tightened is safe (BRK110).",
        "",
        "An output object is read tolerantly: the generated output models ignore properties",
        "they do not declare, whatever its `additionalProperties: false` says (the gateway",
        "still checks each result against the full JSON Schema; input models keep refusing",
        "undeclared arguments, as the gateway does). So a property added to a closed output is",
        "BRK103, and so is a closed output opened (`additionalProperties: false` removed), which",
        "lets properties it does not declare appear; an output closed is BRK110.",
        "",
        "## Deprecation lifecycle",
        "",
        "Mark a tool `deprecated: {reason, replacement, sunset}`, or an input property",
        "`deprecated: true` with `x-replacement` and `x-sunset`. It keeps being served, its",
        "description tells the model what to use instead, `gen lint` warns (LNT015), and once",
        "the sunset date has passed `gen breaking` allows its removal.",
        "",
    ]
    return "\n".join(lines)
