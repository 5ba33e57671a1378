"""Request templates of connector HTTP bindings, compiled once and rendered per call.

Rules (the manifest schema documents them for authors):

* A string that is exactly ``{name}`` takes the named value as is (its JSON type is kept) and
  the key or list item holding it is dropped when the value is absent.
* Any other string with ``{name}`` placeholders is interpolated; when one of its placeholders is
  absent (or null) the whole key is dropped, so a half-filled value is never sent.
* Objects and lists recurse; every other value is a constant.
* Path placeholders are always percent-encoded (``/`` included) and must be present.

Only ``{identifier}`` is a placeholder: other braces (JSON-looking text) are literal.
"""

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


class Obj(Node):
    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[str, Node], ...]) -> None:
        self.items = items

    def render(self, ns: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for key, node in self.items:
            value = node.render(ns)
            if value is not MISSING:
                out[key] = value
        return out

    def names(self) -> frozenset[str]:
        return frozenset().union(*(node.names() for _, node in self.items))


class Arr(Node):
    __slots__ = ("items",)

    def __init__(self, items: tuple[Node, ...]) -> None:
        self.items = items

    def render(self, ns: Mapping[str, Any]) -> Any:
        out: list[Any] = []
        for node in self.items:
            value = node.render(ns)
            if value is not MISSING:
                out.append(value)
        return out

    def names(self) -> frozenset[str]:
        return frozenset().union(*(node.names() for node in self.items))


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


def compile_value(template: Any) -> Node:
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
        items = tuple((str(key), compile_value(value)) for key, value in template.items())
        if all(isinstance(node, Const) for _, node in items):
            return Const({key: node.render({}) for key, node in items})
        return Obj(items)
    if isinstance(template, Sequence) and not isinstance(template, bytes | bytearray):
        nodes = tuple(compile_value(value) for value in template)
        if all(isinstance(node, Const) for node in nodes):
            return Const([node.render({}) for node in nodes])
        return Arr(nodes)
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
    """Query or form pairs from a rendered object: null dropped, lists repeat the key."""
    out: list[tuple[str, str]] = []
    for key, value in rendered.items():
        if value is None:
            continue
        if isinstance(value, list):
            out.extend((key, scalar_text(item)) for item in value if item is not None)
        else:
            out.append((key, scalar_text(value)))
    return out


def get_path(data: Any, path: str | tuple[str, ...]) -> Any:
    """Follow a dotted path ("" = the whole value); digits index lists. MISSING when absent."""
    segments = split_path(path) if isinstance(path, str) else path
    current = data
    for segment in segments:
        if isinstance(current, Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()
