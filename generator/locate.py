"""Where things of a compiled project came from, finer than the IR keeps.

The IR carries one span per tool; `gen lint` and `gen breaking` point at properties inside a
tool's schemas, at a connector's `auth`, at a file's `lint`/`breaking` settings. `Sources`
re-reads the (already validated) manifests' source maps and answers those questions. Paths
through a shared type (`$ref: '#/types/Name'`) continue in the types manifest, so a finding
inside a shared type points at the line to edit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import api
from .compile import TYPE_REF_PREFIX
from .diagnostics import Span
from .load import JsonPath, Loaded, discover, load_files

Pointer = tuple[str | int, ...]  # a path inside a JSON Schema (keywords and property names)


@dataclass(frozen=True, slots=True)
class ToolSource:
    doc: Loaded
    path: JsonPath  # of the tool's mapping in doc


class Sources:
    """Source maps of the manifests of one project, indexed by tool, connector and file."""

    def __init__(self, docs: Iterable[Loaded]) -> None:
        self.docs: dict[str, Loaded] = {}
        self.tools: dict[str, ToolSource] = {}
        self.connectors: dict[str, Loaded] = {}
        self.types: dict[str, tuple[Loaded, JsonPath]] = {}
        self.gateway: Loaded | None = None
        for doc in docs:
            self.docs[doc.path] = doc
            data = doc.data if isinstance(doc.data, dict) else {}
            kind = data.get("kind")
            if kind in ("native", "personalization"):
                for i, raw in enumerate(data.get("tools") or ()):
                    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                        self.tools.setdefault(raw["name"], ToolSource(doc, ("tools", i)))
            elif kind == "connector" and isinstance(data.get("name"), str):
                self.connectors.setdefault(data["name"], doc)
                for i, raw in enumerate(data.get("capabilities") or ()):
                    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                        name = f"{data['name']}_{raw['name']}"
                        self.tools.setdefault(name, ToolSource(doc, ("capabilities", i)))
            elif kind == "types":
                for name in data.get("types") or {}:
                    self.types.setdefault(name, (doc, ("types", name)))
            elif kind == "gateway" and self.gateway is None:
                self.gateway = doc

    @classmethod
    def of(cls, options: api.Options) -> Sources:
        files, _problems = discover(options.root, options.manifests)
        docs, _diags, _unloaded = load_files(options.root, files)
        return cls(docs)

    def raw_tool(self, name: str) -> dict[str, Any]:
        src = self.tools.get(name)
        if src is None:
            return {}
        node: Any = src.doc.data
        for part in src.path:
            node = node[part]
        return node if isinstance(node, dict) else {}

    def tool_span(self, name: str, *keys: str | int, key: bool = False) -> Span | None:
        src = self.tools.get(name)
        if src is None:
            return None
        path = (*src.path, *keys)
        return src.doc.key_span(path) if key else src.doc.span(path)

    def schema_span(self, tool: str, which: str, pointer: Pointer) -> Span | None:
        """Span of `pointer` inside the tool's `input`/`output` schema as the manifest wrote it
        (the key for a property, the value otherwise; the nearest ancestor when the compiler
        added it, e.g. a pagination cursor)."""
        src = self.tools.get(tool)
        if src is None:
            return None
        doc, base = src.doc, (*src.path, which)
        node: Any = self.raw_tool(tool).get(which)
        depth = 0
        for _hop in range(16):  # shared types may nest; cycles are compile errors anyway
            ref = node.get("$ref") if isinstance(node, dict) else None
            if isinstance(ref, str) and ref.startswith(TYPE_REF_PREFIX) and depth < len(pointer):
                target = self.types.get(ref[len(TYPE_REF_PREFIX) :])
                if target is None or pointer[depth] in node:
                    break
                doc, base = target
                node = doc.data
                for part in base:
                    node = node[part]
                continue
            if depth == len(pointer):
                break
            part = pointer[depth]
            if isinstance(node, dict) and part in node:  # noqa: SIM114 - dict vs list index
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                break
            base = (*base, part)
            depth += 1
        if depth == len(pointer) and len(base) >= 2 and base[-2] == "properties":
            return doc.key_span(base)
        return doc.span(base)

    def connector_span(self, name: str, *keys: str | int) -> Span | None:
        doc = self.connectors.get(name)
        return None if doc is None else doc.key_span(keys) if keys else doc.span(("name",))

    def file_settings(self, path: str, section: str, key: str) -> list[tuple[dict[str, Any], Span]]:
        """Entries of `<section>.<key>` (e.g. lint.disable) of one file, with their spans."""
        doc = self.docs.get(path)
        if doc is None or not isinstance(doc.data, dict):
            return []
        entries = (doc.data.get(section) or {}).get(key) or []
        return [
            (e, doc.span((section, key, i))) for i, e in enumerate(entries) if isinstance(e, dict)
        ]
