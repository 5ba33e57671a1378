"""Request templates of connector HTTP bindings, compiled once and rendered per call.

Rules (the manifest schema documents them for authors):

* A string that is exactly ``{name}`` takes the named value as is (its JSON type is kept) and
  the key or list item holding it is dropped when the value is absent.
* Any other string with ``{name}`` placeholders is interpolated; when one of its placeholders is
  absent (or null) the whole key is dropped, so a half-filled value is never sent.
* Objects and lists recurse; every other value is a constant. A nested object or list that
  refers to placeholders, none of which has a value, is dropped as a whole (so
  ``filter: {property: object, value: "{kind}"}`` is not sent half-filled without ``kind``);
  one without placeholders is a constant and always sent. The root of a query, header map or
  body is never dropped.
* Path placeholders are always percent-encoded (``/`` included) and must be present.
* Query strings and form bodies (`pairs`) spell nested objects with brackets
  (``metadata[order]=1001``, ``items[0][price]=p_1``). A top-level list repeats its key for
  each item (``ids=1&ids=2``); a list inside an object or list writes ``[]`` after its key
  (``line_items[0][tax_rates][]=txr_a``), since a bracket-reading server keeps only the last of
  a repeated bracketed key.
* A placeholder may name a filter, ``{name|filter}``, that writes the value as a literal of the
  query language the string is in (JQL, SOQL, OData ``$filter``...), so that a quote in the
  value cannot end the literal early. ``double_quoted`` (``"a \\"b\\""``) and ``single_quoted``
  (``'O\\'Brien'``) escape the quote and the backslash with a backslash, ``sql_quoted``
  (``'O''Brien'``) doubles the quote, ``json`` writes the JSON text of the value. A list is
  written item by item, joined with ``", "`` (``labels in ({labels|double_quoted})``), except by
  ``json``, which writes a JSON array. A filtered value is always text.

Only ``{identifier}`` and ``{identifier|filter}`` are placeholders: other braces (JSON-looking
text) are literal.
"""

# Templates and the values rendered into them are JSON (Any), and isinstance() narrows them to
# list[Unknown] or dict[Unknown, Unknown], which pyright's strict mode reports at every later
# use. mypy --strict holds the annotations; a cast per narrowing would say nothing more.
# pyright: reportUnknownArgumentType=false
# pyright: reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

# A value a base URL's placeholder may take: one DNS label (a shop or site name), so that it
# cannot move the request to another host or path.
DNS_LABEL: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Group 1 is the parameter's name, group 2 the filter's (None without one).
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([A-Za-z_][A-Za-z0-9_]*))?\}")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class MissingPlaceholder(Exception):
    """A required placeholder (path, base URL) had no value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class DotSegment(Exception):
    """A path placeholder's value was, or held, a dot segment (`climbs`): as a path segment it
    would move the request to another endpoint (clients and servers resolve dot segments,
    percent-encoded or not)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


_SEPARATORS: Final = re.compile(r"[/\\]")


def climbs(segment: str) -> bool:
    """Whether one decoded path segment holds a dot segment: `.` or `..` on its own, between
    the slashes or backslashes it holds (which a server that decodes `%2F` or `%5C` before
    resolving the path splits it at), or before a `;parameter` (`..;`, as servlet containers
    read it)."""
    return any(part.partition(";")[0] in (".", "..") for part in _SEPARATORS.split(segment))


def scalar_text(value: Any) -> str:
    """The text form of a JSON value in a URL, header or form field."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _backslashed(quote_char: str) -> Callable[[str], str]:
    def literal(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace(quote_char, "\\" + quote_char)
        return quote_char + escaped + quote_char

    return literal


def _sql_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_QUOTING: Final[Mapping[str, Callable[[str], str]]] = {
    "double_quoted": _backslashed('"'),
    "single_quoted": _backslashed("'"),
    "sql_quoted": _sql_quoted,
}
FILTERS: Final = frozenset((*_QUOTING, "json"))


class UnknownFilter(ValueError):
    """A placeholder named a filter that does not exist (the compiler reports it as GEN223)."""


class Slot:
    """One placeholder inside a text: the parameter's name and how its value is written."""

    __slots__ = ("name", "filter")

    def __init__(self, name: str, filter_name: str | None) -> None:
        if filter_name is not None and filter_name not in FILTERS:
            raise UnknownFilter(filter_name)
        self.name = name
        self.filter = filter_name

    def text(self, value: Any) -> str:
        """`value` (neither absent nor null) as the text that replaces the placeholder."""
        if self.filter is None:
            return scalar_text(value)
        if self.filter == "json":
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        literal = _QUOTING[self.filter]
        if isinstance(value, list):
            return ", ".join(literal(scalar_text(item)) for item in value)
        return literal(scalar_text(value))


class Node:
    """A compiled template value; `render` returns MISSING when it must be dropped."""

    __slots__ = ()

    def render(self, ns: Mapping[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def names(self) -> frozenset[str]:
        return frozenset()


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def render(self, ns: Mapping[str, Any]) -> Any:
        return self.value


class Ref(Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def render(self, ns: Mapping[str, Any]) -> Any:
        return ns.get(self.name, MISSING)

    def names(self) -> frozenset[str]:
        return frozenset((self.name,))


Parts = tuple[str | Slot, ...]  # literal text and placeholders, in order


class Interp(Node):
    __slots__ = ("parts",)

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def render(self, ns: Mapping[str, Any]) -> Any:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, Slot):
                value = ns.get(part.name, MISSING)
                if value is MISSING or value is None:
                    return MISSING
                out.append(part.text(value))
            else:
                out.append(part)
        return "".join(out)

    def names(self) -> frozenset[str]:
        return frozenset(part.name for part in self.parts if isinstance(part, Slot))


class _Container(Node):
    """An object or list with placeholders inside. Nested ones (`droppable`) are dropped when
    none of their placeholders has a value."""

    __slots__ = ("_names", "droppable")

    def __init__(self, names: frozenset[str], droppable: bool) -> None:
        self._names = names
        self.droppable = droppable

    def names(self) -> frozenset[str]:
        return self._names

    def _unfilled(self, ns: Mapping[str, Any]) -> bool:
        return self.droppable and not any(name in ns for name in self._names)


class Obj(_Container):
    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[str, Node], ...], *, droppable: bool = False) -> None:
        super().__init__(frozenset().union(*(node.names() for _, node in items)), droppable)
        self.items = items

    def render(self, ns: Mapping[str, Any]) -> Any:
        if self._unfilled(ns):
            return MISSING
        out: dict[str, Any] = {}
        for key, node in self.items:
            value = node.render(ns)
            if value is not MISSING:
                out[key] = value
        return out


class Arr(_Container):
    __slots__ = ("items",)

    def __init__(self, items: tuple[Node, ...], *, droppable: bool = False) -> None:
        super().__init__(frozenset().union(*(node.names() for node in items)), droppable)
        self.items = items

    def render(self, ns: Mapping[str, Any]) -> Any:
        if self._unfilled(ns):
            return MISSING
        out: list[Any] = []
        for node in self.items:
            value = node.render(ns)
            if value is not MISSING:
                out.append(value)
        return out


def _split(text: str) -> Parts:
    """Raises UnknownFilter."""
    parts: list[str | Slot] = []
    pos = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(Slot(match.group(1), match.group(2)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


def compile_value(template: Any, *, nested: bool = False) -> Node:
    """Compile a query / header / body template (see the module docstring). Raises
    UnknownFilter."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole is not None and whole.group(2) is None:
            return Ref(whole.group(1))
        parts = _split(template)
        if any(isinstance(part, Slot) for part in parts):
            return Interp(parts)
        return Const(template)
    if isinstance(template, Mapping):
        items = tuple(
            (str(key), compile_value(value, nested=True)) for key, value in template.items()
        )
        if all(isinstance(node, Const) for _, node in items):
            return Const({key: node.render({}) for key, node in items})
        return Obj(items, droppable=nested)
    if isinstance(template, Sequence) and not isinstance(template, bytes | bytearray):
        nodes = tuple(compile_value(value, nested=True) for value in template)
        if all(isinstance(node, Const) for node in nodes):
            return Const([node.render({}) for node in nodes])
        return Arr(nodes, droppable=nested)
    return Const(template)


class TextTemplate:
    """A path or URL template whose placeholders are all required. With `encode`, each value
    becomes one percent-encoded path segment, and one holding a dot segment is refused
    (`DotSegment`)."""

    __slots__ = ("parts", "encode")

    def __init__(self, text: str, *, encode: bool) -> None:
        self.parts = _split(text)
        self.encode = encode

    def names(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Slot))

    def render(self, ns: Mapping[str, Any]) -> str:
        out: list[str] = []
        for part in self.parts:
            if not isinstance(part, Slot):
                out.append(part)
                continue
            value = ns.get(part.name, MISSING)
            if value is MISSING or value is None:
                raise MissingPlaceholder(part.name)
            piece = part.text(value)
            if self.encode and climbs(piece):
                raise DotSegment(part.name)
            out.append(quote(piece, safe="") if self.encode else piece)
        return "".join(out)


def pairs(rendered: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query or form pairs from a rendered object, null dropped, as Rails (Rack), PHP, Node's
    qs and Stripe read them: objects nest with brackets (`a[b]=1`, `a[0][b]=1` for an object
    inside a list). A top-level list repeats its key for each scalar item (`a=1&a=2`, what
    servers that read no brackets expect; name the key `a[]` for one that does). A list inside
    an object or list is spelt `a[b][]=1&a[b][]=2`: repeated as `a[b]`, those servers would
    keep only the last item. Its items are indexed instead (`a[b][0]=1`) when any of them is an
    object or list, so that each object's keys stay together."""
    out: list[tuple[str, str]] = []
    for key, value in rendered.items():
        _pairs_into(out, key, value, nested=False)
    return out


def _pairs_into(out: list[tuple[str, str]], key: str, value: Any, *, nested: bool) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _pairs_into(out, f"{key}[{sub}]", item, nested=True)
    elif isinstance(value, list):
        indexed = any(isinstance(item, Mapping | list) for item in value)
        for index, item in enumerate(value):
            if indexed:
                _pairs_into(out, f"{key}[{index}]", item, nested=True)
            elif item is not None:
                out.append((f"{key}[]" if nested else key, scalar_text(item)))
    else:
        out.append((key, scalar_text(value)))


def get_path(data: Any, path: str | tuple[str, ...]) -> Any:
    """Follow a dotted path ("" = the whole value); in a list, `0`, `1`... index from the
    start and `-1`, `-2`... from the end. A key that itself holds dots (OData's
    `@odata.nextLink`) is found too: where a segment names no key, the longest run of
    segments that, joined by dots, names one is taken. MISSING when absent."""
    segments = split_path(path) if isinstance(path, str) else path
    current = data
    i = 0
    while i < len(segments):
        segment = segments[i]
        if isinstance(current, Mapping):
            if segment not in current:
                for end in range(len(segments), i + 1, -1):
                    dotted = ".".join(segments[i:end])
                    if dotted in current:
                        current, i = current[dotted], end
                        break
                else:
                    return MISSING
                continue
            current = current[segment]
        elif isinstance(current, list) and (index := list_index(segment)) is not None:
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
        i += 1
    return current


def digits(text: str | None) -> int | None:
    """The number `text` spells in ASCII digits (str.isdigit alone admits "²" and "١"), or
    None."""
    if text is None or not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    return int(text)


def list_index(segment: str) -> int | None:
    """The list index a path segment spells (ASCII digits, optionally after `-`), else None."""
    magnitude = digits(segment.removeprefix("-"))
    if magnitude is None:
        return None
    return -magnitude if segment.startswith("-") else magnitude


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()
