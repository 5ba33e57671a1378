"""Wiring artifacts: Claude Desktop configuration snippets and TOOLS.md.

* `claude_desktop_config.stdio.json`: an `mcpServers` entry that starts the installed server
  over stdio with the API key in `<PACKAGE>_API_KEY`;
* `claude_desktop_config.http.json`: the same for the server's streamable HTTP URL with an
  `Authorization: Bearer` header. Claude Desktop's config file only starts local (stdio)
  processes, so the entry runs the `mcp-remote` bridge, which sends the header;
* `TOOLS.md`: every tool (description, arguments, output, scope, annotations, an example call),
  grouped by family and connector.

Placeholders (`<your API key>`, `/ABSOLUTE/PATH/TO/...`) stand where a deployment's values go:
output depends on the manifests only. Manifest text reaching Markdown goes through `md_text`
/ `md_cell`, and JSON through `json.dumps`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import ir
from ..compile import resolve_reference
from ..names import PyIdent, reader_method
from ..render import render, text_header
from ..runtime.fastschema import FORMAT_EXAMPLES
from . import FileSet, Output, fragment
from .client import CLIENT_CLASS, client_example

API_KEY_PLACEHOLDER = "<your API key>"
HTTP_URL = "http://localhost:8000/mcp"
MAX_DEPTH = 3

_FAMILY_TITLES = {"native": "Built-in tools", "personalization": "Memory tools"}


def env_prefix(import_name: str) -> str:
    """Same rule as `runtime/auth.py` (`fastn_gateway` -> `FASTN_GATEWAY`)."""
    return re.sub(r"[^A-Za-z0-9]", "_", import_name).upper()


def _dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- Claude Desktop


def stdio_config(project: ir.Project) -> dict[str, Any]:
    g = project.gateway
    prefix = env_prefix(str(g.import_name))
    return {
        "mcpServers": {
            g.server_name: {
                "command": g.package_name,
                "args": [
                    "serve",
                    "--transport",
                    "stdio",
                    "--db",
                    f"/ABSOLUTE/PATH/TO/{g.import_name}.db",
                ],
                "env": {f"{prefix}_API_KEY": API_KEY_PLACEHOLDER},
            }
        }
    }


def http_config(project: ir.Project, url: str = HTTP_URL) -> dict[str, Any]:
    g = project.gateway
    var = f"{env_prefix(str(g.import_name))}_AUTH_HEADER"
    return {
        "mcpServers": {
            g.server_name: {
                "command": "npx",
                # "Authorization:${VAR}" without a space: some clients split arguments on spaces.
                "args": ["-y", "mcp-remote", url, "--header", f"Authorization:${{{var}}}"],
                "env": {var: f"Bearer {API_KEY_PLACEHOLDER}"},
            }
        }
    }


def claude_configs(project: ir.Project, out: Output) -> FileSet:
    return {
        "claude_desktop_config.stdio.json": _dump(stdio_config(project)),
        "claude_desktop_config.http.json": _dump(http_config(project)),
    }


# ---------------------------------------------------------------------------- Markdown helpers

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md_text(text: str) -> str:
    """Manifest prose as Markdown text: no accidental markup, raw HTML or table breaks."""
    lines = [_MD_SPECIAL.sub(r"\\\1", line.strip()) for line in text.strip().splitlines()]
    return "\n".join(lines)


def md_cell(text: str) -> str:
    """One table cell: a single line."""
    return md_text(" ".join(text.split()))


# A full stop, then a capital: "(e.g. Slack)" and "i.e. Shopify" are not sentence ends.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!e\.g\.)(?<!i\.e\.)(?<!etc\.)\s+(?=[A-Z0-9])")


def first_sentence(text: str, limit: int = 160) -> str:
    """A description's first sentence on one line, cut at a word to `limit` characters."""
    one = " ".join(text.split())
    found = _SENTENCE_END.search(one)
    if found is not None:
        one = one[: found.start()]
    if len(one) > limit:
        one = one[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return one


def md_code(text: str) -> str:
    """Inline code that holds any text (backticks and pipes included)."""
    text = " ".join(text.split()).replace("|", "\\|")
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def shown(node: Any, root: Any) -> Any:
    """`node` as the docs describe it: a local `$ref` or `$dynamicRef` (into `root`, the tool's
    input or output schema) stands for the schema it names, with the keywords written beside
    it (a description, a default) over that schema's own."""
    if not isinstance(node, dict) or not isinstance(root, dict):
        return node
    target = resolve_reference(node, root)
    if target is node:
        return node
    beside = {k: v for k, v in node.items() if k not in ("$ref", "$dynamicRef")}
    return {**target, **beside} if isinstance(target, dict) else beside


def type_text(schema: Any, root: Any = None, depth: int = 0) -> str:
    schema = shown(schema, root)
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return "any"
    if "const" in schema:
        return "const " + json.dumps(schema["const"], ensure_ascii=False)
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list):
            return " or ".join(type_text(s, root, depth + 1) for s in schema[key])
    t = schema.get("type")
    types = t if isinstance(t, list) else [t] if t else []
    parts = []
    for one in types:
        if one == "array":
            parts.append(f"array of {type_text(schema.get('items', {}), root, depth + 1)}")
        elif one == "string" and isinstance(schema.get("format"), str):
            parts.append(f"string ({schema['format']})")
        else:
            parts.append(str(one))
    return " or ".join(parts) or "any"


def _limits(schema: dict[str, Any]) -> str:
    words = []
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in schema:
            words.append(f"{label} {json.dumps(schema[key], ensure_ascii=False)}")
    return ", ".join(words)


@dataclass(frozen=True, slots=True)
class Row:
    name: str  # inline code
    type: str  # cell text
    required: str
    default: str
    description: str


def _object_props(schema: Any, root: Any) -> tuple[dict[str, Any], set[str]]:
    schema = shown(schema, root)
    if not isinstance(schema, dict):
        return {}, set()
    if schema.get("type") == "array" or (
        isinstance(schema.get("type"), list) and "array" in schema["type"]
    ):
        return _object_props(shown(schema.get("items"), root), root)
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}, set()
    req = schema.get("required")
    return props, set(req) if isinstance(req, list) else set()


def rows(schema: Any, prefix: str = "", depth: int = 0, root: Any = None) -> list[Row]:
    """One row per property, nested objects flattened (`trigger.type`, `steps[].tool`)."""
    root = schema if root is None else root
    props, required = _object_props(schema, root)
    out: list[Row] = []
    for name, prop in props.items():
        prop = shown(prop, root)
        prop = prop if isinstance(prop, dict) else {}
        desc = str(prop.get("description", "") or "")
        limits = _limits(prop)
        if limits:
            desc = f"{desc} ({limits})" if desc else f"({limits})"
        out.append(
            Row(
                name=md_code(prefix + name),
                type=md_code(type_text(prop, root)),
                required="yes" if name in required else "",
                default=md_code(json.dumps(prop["default"], ensure_ascii=False))
                if "default" in prop
                else "",
                description=md_cell(desc),
            )
        )
        if depth < MAX_DEPTH:
            is_array = prop.get("type") == "array" or (
                isinstance(prop.get("type"), list) and "array" in prop["type"]
            )
            nested = f"{prefix}{name}{'[]' if is_array else ''}."
            out.extend(rows(prop, nested, depth + 1, root))
    return out


# A value of each format the gateway asserts (FORMAT_EXAMPLES), and of a few it does not.
_FORMAT_SAMPLES = {
    **FORMAT_EXAMPLES,
    "email": "ash@example.com",
    "uri": "https://example.com/",
}


def sample(schema: Any, name: str = "value", depth: int = 0, root: Any = None) -> Any:
    """A small valid value: required properties only, declared examples and defaults first."""
    root = schema if root is None else root
    schema = shown(schema, root)
    if not isinstance(schema, dict) or depth > 12:
        return None
    for key in ("const",):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample(schema[key][0], name, depth + 1, root)
    t = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t == "object":
        props, required = _object_props(schema, root)
        if depth >= 6:
            return {}
        return {k: sample(v, k, depth + 1, root) for k, v in props.items() if k in required}
    if t == "array":
        count = max(1, int(schema.get("minItems", 1)))
        item = schema.get("items", {})
        return [sample(item, name, depth + 1, root) for _ in range(min(count, 2))]
    if t == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[fmt]
        text = f"<{name}>"
        return text + "x" * max(0, int(schema.get("minLength", 0)) - len(text))
    if t == "integer":
        return int(schema.get("minimum", 1))
    if t == "number":
        return schema.get("minimum", 1.0)
    if t == "boolean":
        return True
    return None


# ---------------------------------------------------------------------------- TOOLS.md


@dataclass(frozen=True, slots=True)
class ToolDoc:
    anchor: str
    name: str
    heading: str
    description: str
    facts: tuple[tuple[str, str], ...]
    arguments: tuple[Row, ...]
    output: tuple[Row, ...]
    example: str
    fence: str  # a code fence longer than any backtick run in the example


class RenderedTool(NamedTuple):
    """One tool's section of TOOLS.md, rendered (kept across builds as plain strings)."""

    anchor: str
    name: str
    markdown: str


@dataclass(frozen=True, slots=True)
class Section:
    anchor: str
    title: str
    intro: str
    tools: tuple[RenderedTool, ...]


def _annotations(a: ir.Annotations) -> str:
    words = [
        w
        for w, on in (
            ("read-only", a.read_only),
            ("destructive", a.destructive),
            ("idempotent", a.idempotent),
            ("open world", a.open_world),
        )
        if on
    ]
    return ", ".join(words) or "none"


def _tool_doc(t: ir.Tool, connector: ir.Connector | None) -> ToolDoc:
    facts = [("Scope", md_code(t.scope)), ("Annotations", _annotations(t.annotations))]
    if connector is not None:
        facts.append(("Connector", f"{md_cell(connector.title)} ({md_code(connector.name)})"))
    facts.append(
        (
            "Python",
            f"{md_code(f'await gw.{t.py_name}(...)')} returns "
            f"{md_code(str(t.output_model))}; keyword arguments are the fields "
            f"of {md_code(str(t.input_model))}",
        )
    )
    if t.bind:
        bound = ", ".join(
            f"{md_code(p)} from the caller's {src.removeprefix('session.')}" for p, src in t.bind
        )
        facts.append(("Bound by the server", bound))
    if t.tags:
        facts.append(("Tags", ", ".join(md_code(x) for x in t.tags)))
    if t.deprecated is not None:
        reason = t.deprecated.reason.strip()  # sentences, each ending as the last one does
        note = md_cell(reason + ("" if reason.endswith((".", "!", "?")) else "."))
        if t.deprecated.replacement:
            note += f" Use {md_code(t.deprecated.replacement)} instead."
        if t.deprecated.sunset:
            note += f" Removed after {md_code(t.deprecated.sunset)}."
        facts.append(("Deprecated", note))
    example = json.dumps(
        {"name": t.name, "arguments": sample(t.input_schema.value)}, indent=2, ensure_ascii=False
    )
    heading = md_code(t.name) + (f": {md_cell(t.title)}" if t.title else "")
    longest = max((len(m) for m in re.findall(r"`+", example)), default=0)
    return ToolDoc(
        anchor=f"tool-{t.name}",
        name=t.name,
        heading=heading,
        description=md_text(t.description),
        facts=tuple(facts),
        arguments=tuple(rows(t.input_schema.value)),
        output=tuple(rows(t.output_schema.value)),
        example=example,
        fence="`" * max(3, longest + 1),
    )


def _rendered_tool(t: ir.Tool, connector: ir.Connector | None) -> RenderedTool:
    doc = _tool_doc(t, connector)
    return RenderedTool(doc.anchor, doc.name, render("tools_md_tool.md.j2", t=doc))


def _memo_doc(t: ir.Tool, connector: ir.Connector | None) -> RenderedTool:
    return fragment("TOOLS.md", t, functools.partial(_rendered_tool, t, connector))


def sections(project: ir.Project) -> list[Section]:
    out: list[Section] = []
    for family in ("native", "personalization"):
        tools = [t for t in project.tools if t.family == family]
        if tools:
            intro = (
                "Available to every workspace."
                if family == "native"
                else "Read and update what is known about the current user; the user comes "
                "from the caller's API key, never from arguments."
            )
            out.append(
                Section(
                    anchor=family,
                    title=_FAMILY_TITLES[family],
                    intro=intro,
                    tools=tuple(_memo_doc(t, None) for t in tools),
                )
            )
    for c in project.connectors:
        tools = [t for t in project.tools if t.connector == c.name]
        intro = (
            f"{md_text(c.description)}\n\nThese tools are listed only to workspaces that "
            f"connected {md_cell(c.title)}; authentication: {md_code(c.auth.type)}."
        )
        out.append(
            Section(
                anchor=f"connector-{c.name}",
                title=f"{md_cell(c.title)} connector",
                intro=intro,
                tools=tuple(_memo_doc(t, c) for t in tools),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ResourceDoc:
    uri: str  # inline code
    title: str
    description: str
    mime: str
    reader: str  # inline code


def resource_docs(project: ir.Project) -> list[ResourceDoc]:
    out = []
    for r in project.gateway.resources:
        template = r.uri_template or r.uri or ""
        params = ", ".join(PyIdent(p) for p in dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
        out.append(
            ResourceDoc(
                uri=md_code(template),
                title=md_cell(r.title or r.name),
                description=md_cell(r.description),
                mime=md_code(r.mime_type),
                reader=md_code(f"await gw.{reader_method(r.name)}({params})"),
            )
        )
    return out


def tools_md(project: ir.Project, out: Output) -> FileSet:
    g = project.gateway
    header = text_header(out.all_sources_text(), "<!--").rstrip("\n") + " -->\n"
    text = render(
        "tools_md.md.j2",
        header=header,
        title=md_cell(g.title or g.server_name),
        count=len(project.tools),
        sections=sections(project),
        resources=resource_docs(project),
        client_class=CLIENT_CLASS,
        import_name=str(g.import_name),
        example=client_example(project),
    )
    return {"TOOLS.md": text}


def artifacts(project: ir.Project, out: Output) -> FileSet:
    return {**claude_configs(project, out), **tools_md(project, out)}
