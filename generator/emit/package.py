"""The distribution around the code: pyproject, README, entry points, runtime, tools.json."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from .. import ir
from ..render import literal, python_header, render, text_header, toml_string
from ..runtime.catalog import tool_meta
from . import FileSet, Output, fragment
from .artifacts import env_prefix, first_sentence, md_cell, md_text
from .client import CLIENT_CLASS, client_example, session_example

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"

# Dependencies of the generated package: every distribution its code imports, as compatible
# ranges (lower bound: the oldest release the runtime is known to work with; upper bound: the
# next major). cryptography bumps its major version for every few deprecations, so its range
# admits the next one too. A test keeps this list in step with the runtime's imports.
SERVER_DEPENDENCIES = (
    "mcp>=2.3,<3",
    "mcp-types>=2.3,<3",
    "pydantic>=2.12,<3",
    "jsonschema>=4.23,<5",
    "referencing>=0.28.4,<1",
    "sqlalchemy>=2.0,<3",
    "cryptography>=43,<52",
    "uvicorn>=0.31,<1",
    "starlette>=0.40,<2",
    "anyio>=4.9,<5",
    "httpx2>=2.10,<3",
)
POSTGRES_EXTRA = ("psycopg[binary]>=3.2,<4",)
# Files of the distribution besides the package: in the sdist at the top, and (all but the
# README, which is the index page) in the wheel inside the package.
SDIST_FILES = (
    "README.md",
    "TOOLS.md",
    "tools.json",
    "claude_desktop_config.stdio.json",
    "claude_desktop_config.http.json",
)


def runtime_files(project: ir.Project, out: Output) -> FileSet:
    """The fixed runtime modules, copied verbatim (they are linted and tested where they live)."""
    files: FileSet = {}
    for path in sorted(RUNTIME_DIR.glob("*.py")):
        files[out.pkg(f"runtime/{path.name}")] = path.read_text(encoding="utf-8")
    return files


_AUTHOR = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s@]+@[^<>\s@]+)>")


def author_table(author: str) -> str:
    """A `[project] authors` entry: `Name <email>` (or `<email>`) as a name and an email, which
    package indexes show as the author's address; anything else as a name."""
    m = _AUTHOR.fullmatch(author.strip())
    if m is None:
        return f"{{ name = {toml_string(author)} }}"
    name = f"name = {toml_string(m['name'])}, " if m["name"] else ""
    return f"{{ {name}email = {toml_string(m['email'])} }}"


def package_files(project: ir.Project, out: Output) -> FileSet:
    g = project.gateway
    header = python_header(out.all_sources_text())
    script = g.package_name
    files: FileSet = {
        "pyproject.toml": render(
            "pyproject.toml.j2",
            header=text_header(out.all_sources_text()),
            g=g,
            script=script,
            dependencies=SERVER_DEPENDENCIES,
            postgres=POSTGRES_EXTRA,
            toml=toml_string,
            authors=[author_table(a) for a in g.authors],
            sdist=SDIST_FILES + (str(g.import_name),),
            shipped=[f for f in SDIST_FILES if f != "README.md"],
        ),
        "README.md": render(
            "package_readme.md.j2",
            header=text_header(out.all_sources_text(), "<!--").rstrip("\n") + " -->\n",
            g=g,
            project=project,
            script=script,
            title=md_cell(g.title or g.server_name),
            summary=md_text(g.summary),
            env_prefix=env_prefix(str(g.import_name)),
            client_class=CLIENT_CLASS,
            example=client_example(project),
            session_example=session_example(project),
            summaries={t.name: md_cell(first_sentence(t.description)) for t in project.tools},
            partial=[t.name for t in project.tools if t.http and t.http.graphql_partial],
        ),
        out.pkg("__init__.py"): render("package_init.py.j2", header=header, g=g, lit=literal),
        out.pkg("__main__.py"): render("package_main.py.j2", header=header, g=g),
        out.pkg("py.typed"): "",
        out.pkg("models/__init__.py"): render(
            "models_init.py.j2", header=header, groups=[str(gr.name) for gr in project.groups]
        ),
    }
    return files


def mcp_tool(t: ir.Tool) -> dict[str, object]:
    """A tool as MCP `tools/list` shows it (wire names), plus mcpforge metadata in `_meta`."""
    a = t.annotations
    tool: dict[str, object] = {"name": t.name}
    if t.title:
        tool["title"] = t.title
    tool["description"] = t.description
    tool["inputSchema"] = t.input_schema.value
    tool["outputSchema"] = t.output_schema.value
    tool["annotations"] = {
        **({"title": t.title} if t.title else {}),
        "readOnlyHint": a.read_only,
        "destructiveHint": a.destructive,
        "idempotentHint": a.idempotent,
        "openWorldHint": a.open_world,
    }
    tool["_meta"] = tool_meta(t.scope, t.family, t.connector, t.deprecated)  # as tools/list
    return tool


def _tool_json(t: ir.Tool) -> str:
    """One tool as it stands in tools.json's list: indented JSON, two levels deep."""
    # Indented line by line on "\n" only: textwrap.indent would also break at U+2028, U+2029
    # and U+0085, which json.dumps leaves inside strings, and change the text of a description.
    text = json.dumps(mcp_tool(t), indent=2, ensure_ascii=False)
    return "\n".join("    " + line if line else line for line in text.split("\n"))


def tools_json(project: ir.Project, out: Output) -> FileSet:
    # Assembled from per-tool pieces (memoised across builds) into exactly the text of
    # json.dumps(doc, indent=2): indented dumps use Python's slow pure-Python encoder.
    comment = json.dumps(
        f"Generated by mcpforge from {out.all_sources_text()}. Do not edit.", ensure_ascii=False
    )
    pieces = [fragment("tools.json", t, functools.partial(_tool_json, t)) for t in project.tools]
    tools = "[\n" + ",\n".join(pieces) + "\n  ]" if pieces else "[]"
    return {"tools.json": f'{{\n  "$comment": {comment},\n  "tools": {tools}\n}}\n'}
