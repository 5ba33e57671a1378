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
* Query strings and form bodies (`pairs`) repeat the key for each item of a list and spell
  nested objects with brackets: ``metadata[order]=1001``, ``items[0][price]=p_1``.

Only ``{identifier}`` is a placeholder: other braces (JSON-looking text) are literal.
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
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
    """A path placeholder's value was `.` or `..`: as a path segment it would move the request
    to another endpoint (clients and servers resolve dot segments, percent-encoded or not)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


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


class Interp(Node):
    __slots__ = ("parts",)

    def __init__(self, parts: tuple[tuple[bool, str], ...]) -> None:
        self.parts = parts  # (is_placeholder, literal text or name)

    def render(self, ns: Mapping[str, Any]) -> Any:
        out: list[str] = []
        for is_name, text in self.parts:
            if is_name:
                value = ns.get(text, MISSING)
                if value is MISSING or value is None:
                    return MISSING
                out.append(scalar_text(value))
            else:
                out.append(text)
        return "".join(out)

    def names(self) -> frozenset[str]:
        return frozenset(text for is_name, text in self.parts if is_name)


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


def _split(text: str) -> tuple[tuple[bool, str], ...]:
    parts: list[tuple[bool, str]] = []
    pos = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > pos:
            parts.append((False, text[pos : match.start()]))
        parts.append((True, match.group(1)))
        pos = match.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    return tuple(parts)


def compile_value(template: Any, *, nested: bool = False) -> Node:
    """Compile a query / header / body template (see the module docstring)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole is not None:
            return Ref(whole.group(1))
        parts = _split(template)
        if any(is_name for is_name, _ in parts):
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
    becomes one percent-encoded path segment, and `.` or `..` are refused (`DotSegment`)."""

    __slots__ = ("parts", "encode")

    def __init__(self, text: str, *, encode: bool) -> None:
        self.parts = _split(text)
        self.encode = encode

    def names(self) -> tuple[str, ...]:
        return tuple(text for is_name, text in self.parts if is_name)

    def render(self, ns: Mapping[str, Any]) -> str:
        out: list[str] = []
        for is_name, text in self.parts:
            if not is_name:
                out.append(text)
                continue
            value = ns.get(text, MISSING)
            if value is MISSING or value is None:
                raise MissingPlaceholder(text)
            piece = scalar_text(value)
            if self.encode and piece in (".", ".."):
                raise DotSegment(text)
            out.append(quote(piece, safe="") if self.encode else piece)
        return "".join(out)


def pairs(rendered: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query or form pairs from a rendered object: null dropped, a list repeats the key for
    each scalar item, objects nest with brackets (`a[b]=1`, and `a[0][b]=1` for an object
    inside a list), as Rails, PHP and Stripe read them."""
    out: list[tuple[str, str]] = []
    for key, value in rendered.items():
        _pairs_into(out, key, value)
    return out


def _pairs_into(out: list[tuple[str, str]], key: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _pairs_into(out, f"{key}[{sub}]", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, Mapping | list):
                _pairs_into(out, f"{key}[{index}]", item)
            elif item is not None:
                out.append((key, scalar_text(item)))
    else:
        out.append((key, scalar_text(value)))


def get_path(data: Any, path: str | tuple[str, ...]) -> Any:
    """Follow a dotted path ("" = the whole value); in a list, `0`, `1`... index from the
    start and `-1`, `-2`... from the end. MISSING when absent."""
    segments = split_path(path) if isinstance(path, str) else path
    current = data
    for segment in segments:
        if isinstance(current, Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list) and (index := list_index(segment)) is not None:
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
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
