"""Stage 1, load: manifest files -> `Loaded` documents (plain data plus a source map).

YAML is composed into nodes (libyaml when available) and converted by hand so that every value
and every mapping key keeps its line and column. Only JSON-compatible scalars come out: a
timestamp-looking scalar such as `2026-12-31` stays a string, so YAML's implicit typing cannot
surprise the schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .diagnostics import Diagnostic, Span, error

JsonPath = tuple[str | int, ...]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_JSON_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}


@dataclass(frozen=True, slots=True)
class Loaded:
    """One manifest file: its bytes' digest, its data, and where each value came from."""

    path: str  # relative to the project root, with forward slashes
    sha256: str
    data: Any
    value_spans: dict[JsonPath, Span] = field(repr=False)
    key_spans: dict[JsonPath, Span] = field(repr=False)

    def span(self, path: Iterable[str | int] = ()) -> Span:
        """Position of the value at `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.value_spans:
                return self.value_spans[p]
            p = p[:-1]
        return self.value_spans.get((), Span(file=self.path))

    def key_span(self, path: Iterable[str | int]) -> Span:
        """Position of the mapping key that ends `path` (falls back to the value)."""
        p = tuple(path)
        return self.key_spans.get(p) or self.span(p)


def discover(root: Path, manifest_dir: Path) -> list[Path]:
    """Every `*.yaml` / `*.yml` under the manifest directory, in a stable order."""
    if not manifest_dir.is_dir():
        return []
    files = [p for p in manifest_dir.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_text(rel_path: str, raw: bytes) -> tuple[Loaded | None, list[Diagnostic]]:
    """Parse one manifest's bytes. Returns no document when it cannot be parsed at all."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            error("GEN001", Span(file=rel_path), f"file is not UTF-8 (byte {exc.start})")
        ]
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = Span(file=rel_path, line=mark.line + 1, col=mark.column + 1) if mark else Span(
            file=rel_path
        )
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        return None, [error("GEN002", span, f"YAML syntax error: {problem}{context}")]
    except yaml.YAMLError as exc:  # pragma: no cover - libyaml reports marks for all we know of
        return None, [error("GEN002", Span(file=rel_path), f"YAML syntax error: {exc}")]
    if len(nodes) != 1 or not isinstance(nodes[0], yaml.MappingNode):
        where = Span(file=rel_path)
        if len(nodes) > 1:
            m = nodes[1].start_mark
            where = Span(file=rel_path, line=m.line + 1, col=m.column + 1)
            msg = "a manifest holds exactly one YAML document; found several"
        elif not nodes:
            msg = "manifest is empty"
        else:
            m = nodes[0].start_mark
            where = Span(file=rel_path, line=m.line + 1, col=m.column + 1)
            msg = "a manifest must be a mapping (`version: 1`, `kind: ...`)"
        return None, [error("GEN004", where, msg)]
    builder = _Builder(rel_path)
    data = builder.build(nodes[0], ())
    loaded = Loaded(
        path=rel_path,
        sha256=digest,
        data=data,
        value_spans=builder.value_spans,
        key_spans=builder.key_spans,
    )
    return loaded, builder.diagnostics


def load_files(root: Path, files: Sequence[Path]) -> tuple[list[Loaded], list[Diagnostic]]:
    docs: list[Loaded] = []
    diags: list[Diagnostic] = []
    for path in files:
        rel = path.relative_to(root).as_posix() if path.is_absolute() else path.as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            diags.append(error("GEN001", Span(file=rel), f"cannot read file: {exc.strerror}"))
            continue
        doc, problems = load_text(rel, raw)
        diags.extend(problems)
        if doc is not None:
            docs.append(doc)
    return docs, diags


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.value_spans: dict[JsonPath, Span] = {}
        self.key_spans: dict[JsonPath, Span] = {}
        self.diagnostics: list[Diagnostic] = []
        self._constructor = yaml.SafeLoader("")  # only its scalar constructors are used

    def _span(self, node: yaml.Node) -> Span:
        return Span(file=self.file, line=node.start_mark.line + 1, col=node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.value_spans[path] = self._span(node)
        if isinstance(node, yaml.MappingNode):
            self._constructor.flatten_mapping(node)  # YAML merge keys (<<)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.diagnostics.append(
                        error("GEN004", self._span(key_node), "mapping keys must be plain scalars")
                    )
                    continue
                key = str(key).lower() if isinstance(key, bool) else str(key)
                child = (*path, key)
                if key in out:
                    first = self.key_spans[child]
                    self.diagnostics.append(
                        error(
                            "GEN003",
                            self._span(key_node),
                            f"duplicate key {key!r} (first defined at line {first.line})",
                        )
                    )
                    continue
                self.key_spans[child] = self._span(key_node)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag in _JSON_SCALAR_TAGS:
            value = self._constructor.construct_object(node, deep=True)
            if isinstance(value, float) and value != value:  # .nan is not JSON
                return node.value
            return value
        return str(node.value)
