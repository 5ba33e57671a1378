"""Wiring artifacts and package metadata: Claude Desktop snippets, TOOLS.md, pyproject.toml.

Their exact text is pinned by the golden cases (tests/cases/*/expected); these tests check what
the text must mean: the snippets name the real command, variables and endpoint; TOOLS.md has
every tool and argument and example calls that validate; the package declares what it imports.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import ROOT, make_project, options
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from generator import api
from generator.emit import artifacts
from generator.emit.package import POSTGRES_EXTRA, SERVER_DEPENDENCIES
from generator.names import DEPENDENCY_MODULES

GENERATED = ROOT / "generated"
PKG = "fastn_gateway"
CASES = ROOT / "tests" / "cases"


@pytest.fixture(scope="module")
def catalog(generated_on_path: Path) -> Any:
    return importlib.import_module(f"{PKG}.catalog").GATEWAY


def _json(name: str) -> Any:
    return json.loads((GENERATED / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- Claude Desktop


def test_stdio_snippet_runs_the_installed_server(catalog: Any) -> None:
    from fastn_gateway.runtime.auth import api_key_env
    from fastn_gateway.runtime.cli import build_parser

    entry = _json("claude_desktop_config.stdio.json")["mcpServers"][catalog.server_name]
    pyproject = tomllib.loads((GENERATED / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"][entry["command"]] == f"{PKG}.__main__:main"
    args = build_parser(catalog).parse_args(entry["args"])
    assert (args.command, args.transport) == ("serve", "stdio")
    assert args.db and os.path.isabs(args.db)
    assert entry["env"] == {api_key_env(PKG): artifacts.API_KEY_PLACEHOLDER}


def test_http_snippet_sends_the_key_as_a_bearer_header(catalog: Any) -> None:
    entry = _json("claude_desktop_config.http.json")["mcpServers"][catalog.server_name]
    assert entry["command"] == "npx"
    assert entry["args"][:2] == ["-y", "mcp-remote"]
    url = entry["args"][2]
    assert url.endswith("/mcp") and url.startswith("http://localhost:")
    header = entry["args"][entry["args"].index("--header") + 1]
    name, _, value = header.partition(":")
    var = re.fullmatch(r"\$\{(\w+)\}", value)
    assert name == "Authorization" and var is not None
    assert entry["env"] == {var.group(1): f"Bearer {artifacts.API_KEY_PLACEHOLDER}"}


# ---------------------------------------------------------------------------- TOOLS.md


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def _tables_are_well_formed(text: str) -> None:
    width = None
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = _cells(line)
        if width is None:
            width = len(cells)
        assert len(cells) == width, line


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r'<a id="tool-([^"]+)"></a>', text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_tools_md_documents_every_tool(catalog: Any) -> None:
    text = (GENERATED / "TOOLS.md").read_text(encoding="utf-8")
    _tables_are_well_formed(text)
    sections = _sections(text)
    assert sorted(sections) == sorted(catalog.tools)
    for name, spec in catalog.tools.items():
        body = sections[name]
        assert f"### `{name}`" in body
        assert f"| Scope | `{spec.scope}` |" in body
        for row in artifacts.rows(dict(spec.input_schema)) + artifacts.rows(
            dict(spec.output_schema)
        ):
            assert f"| {row.name} |" in body
        example = json.loads(re.search(r"```json\n(.*?)\n```", body, re.S).group(1))
        assert example["name"] == name
        jsonschema.Draft202012Validator(dict(spec.input_schema)).validate(example["arguments"])
    # grouped: built-in, memory, then one section per connector
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[:2] == ["Built-in tools", "Memory tools"]
    assert headings[2:] == [
        *(f"{c.title} connector" for c in catalog.connectors.values()),
        "Resources",
    ]
    for r in catalog.resources:
        assert f"| `{r.uri_template or r.uri}` |" in text and f"gw.read_{r.name}(" in text


def test_tools_md_links_resolve() -> None:
    tools = (GENERATED / "TOOLS.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', tools))
    links = re.findall(r"\(#([^)]+)\)", tools)
    assert links and set(links) <= anchors


def test_readme_reads_whole_on_a_package_index(catalog: Any) -> None:
    """The README is the index page, where relative links lead nowhere: it links no file and
    sums each tool up in its own row."""
    readme = (GENERATED / "README.md").read_text(encoding="utf-8")
    assert not re.findall(r"\]\((?!https?://)[^)]*\)", readme)
    _tables_are_well_formed(readme)
    rows = [[c.strip() for c in _cells(line)] for line in readme.splitlines()]
    by_name = {cells[0]: cells for cells in rows if len(cells) == 4}
    for name, spec in catalog.tools.items():
        summary = by_name[f"`{name}`"][3]
        assert summary and len(summary) <= 170
        assert summary.rstrip(".…").replace("\\", "")[:40] in " ".join(spec.description.split())


def test_first_sentence_keeps_abbreviations_and_cuts_at_a_word() -> None:
    assert artifacts.first_sentence("Search (e.g. `is:open`). More.") == "Search (e.g. `is:open`)."
    assert artifacts.first_sentence("List i.e. Shopify orders. Then") == "List i.e. Shopify orders."
    assert artifacts.first_sentence("Version 2.0 of it.\n Next one.") == "Version 2.0 of it."
    long = artifacts.first_sentence("word " * 60)
    assert len(long) <= 160 and long.endswith("word…")


def test_hostile_text_cannot_break_tools_md_tables() -> None:
    text = (CASES / "escaping" / "expected" / "TOOLS.md").read_text(encoding="utf-8")
    _tables_are_well_formed(text)
    assert "<script" not in text
    hostile = {
        "description": "a | b <script>x</script> `tick` *not bold*",
        "type": "string",
        "enum": ["p|q", "`"],
    }
    row = artifacts.rows({"type": "object", "properties": {"x|y": hostile}})[0]
    line = f"| {row.name} | {row.type} | {row.required} | {row.default} | {row.description} |"
    assert len(_cells(line)) == 5
    assert "<script>" not in line and "\\*not bold\\*" in line


def test_tools_md_follows_local_references(tmp_path: Path) -> None:
    """A property written as a local `$ref` or `$dynamicRef` was documented as `any`, with no
    rows for its fields and no value in the example call; now each stands for the schema it
    names, with the description beside the reference."""
    connector = """\
        version: 1
        kind: connector
        name: shipit
        title: ShipIt
        description: Shipments.
        base_url: https://api.shipit.example/v1
        auth: {type: bearer, token_field: token, fields: [{name: token}]}
        capabilities:
          - name: create_shipment
            description: Create a shipment.
            scope: write
            input:
              type: object
              $defs:
                Address:
                  type: object
                  required: [city]
                  properties: {city: {type: string}, zip: {type: string}}
                Email: {$dynamicAnchor: email, type: string, format: email}
              required: [ship_to, notify]
              properties:
                ship_to: {$ref: "#/$defs/Address", description: Where it goes.}
                notify: {type: array, minItems: 1, items: {$dynamicRef: "#email"}}
            output: {type: object, properties: {id: {type: string}}}
            http: {method: POST, path: /shipments, body: {to: "{ship_to}", cc: "{notify}"}}
        """
    root = make_project(tmp_path, copy_defaults=True)
    (root / "manifests" / "connectors" / "shipit.yaml").write_text(textwrap.dedent(connector))
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    section = _sections((root / "generated" / "TOOLS.md").read_text(encoding="utf-8"))[
        "shipit_create_shipment"
    ]
    found = {
        cells[0]: cells[1:]
        for line in section.splitlines()
        if len(cells := [c.strip() for c in _cells(line)]) == 5
    }
    assert found["`ship_to`"] == ["`object`", "yes", "", "Where it goes."]
    assert found["`ship_to.city`"][:2] == ["`string`", "yes"]
    assert found["`notify`"][:2] == ["`array of string (email)`", "yes"]
    assert "`any`" not in section
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    assert example["arguments"] == {
        "ship_to": {"city": "<city>"},
        "notify": ["ash@example.com"],
    }
    tools = json.loads((root / "generated" / "tools.json").read_text(encoding="utf-8"))
    [schema] = [t["inputSchema"] for t in tools["tools"] if t["name"] == "shipit_create_shipment"]
    jsonschema.Draft202012Validator(schema).validate(example["arguments"])
    # The compiler refuses recursive schemas (GEN210); the docs stop at one all the same.
    part = {"type": "object", "properties": {"sub": {"type": "array", "items": {"$ref": "#"}}}}
    assert [r.name for r in artifacts.rows(part)][:2] == ["`sub`", "`sub[].sub`"]
    assert artifacts.type_text({"anyOf": [{"$ref": "#"}]}, {"anyOf": [{"$ref": "#"}]}) == "any"
    assert artifacts.sample({"oneOf": [{"$ref": "#"}]}) is None


def test_example_calls_pass_the_gateways_format_checks() -> None:
    """TOOLS.md's example of a required uuid, ipv4 or ipv6 argument was "<id>", which the
    gateway refuses now that it asserts those formats."""
    from generator.runtime.fastschema import TYPED_FORMATS, validator_class

    schema = {
        "type": "object",
        "required": sorted(TYPED_FORMATS),
        "properties": {f: {"type": "string", "format": f} for f in TYPED_FORMATS},
    }
    example = artifacts.sample(schema)
    assert set(example) == set(TYPED_FORMATS)
    assert list(validator_class()(schema).iter_errors(example)) == []


def test_markdown_code_spans_hold_any_text() -> None:
    assert artifacts.md_code("a`b") == "``a`b``"
    assert artifacts.md_code("`x") == "`` `x ``"
    assert artifacts.md_code("p|q") == "`p\\|q`"


# ---------------------------------------------------------------------------- determinism


def test_artifacts_are_deterministic_and_gated_by_check(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    names = [
        "TOOLS.md",
        "claude_desktop_config.stdio.json",
        "claude_desktop_config.http.json",
        "README.md",
        "pyproject.toml",
        f"{PKG}/client.py",
    ]
    script = (
        "import sys; from generator import api; from pathlib import Path; "
        "r=api.build(api.Options.for_project(Path(sys.argv[1]), cache=False)); "
        "sys.exit(0 if r.ok else 1)"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, str(root)], check=True, env=env, cwd=ROOT)
        outputs.append({n: (root / "generated" / n).read_bytes() for n in names})
    assert outputs[0] == outputs[1]
    assert outputs[0]["TOOLS.md"] == (GENERATED / "TOOLS.md").read_bytes()
    check = api.build(options(root), check=True)
    assert check.ok and check.plan is not None
    # (only these files: the runtime modules may be edited while the test runs)
    assert not set(names) & {*check.plan.added, *check.plan.changed, *check.plan.stale}
    (root / "generated" / "TOOLS.md").write_text("edited\n", encoding="utf-8")
    (root / "generated" / "claude_desktop_config.http.json").unlink()
    drift = api.build(options(root), check=True)
    assert drift.plan is not None
    assert {"TOOLS.md", "claude_desktop_config.http.json"} <= {
        *drift.plan.changed,
        *drift.plan.added,
    }
    assert "TOOLS.md" in drift.diff and "claude_desktop_config.http.json" in drift.diff


# ---------------------------------------------------------------------------- package metadata


def test_pyproject_comes_from_the_gateway_manifest(catalog: Any) -> None:
    meta = tomllib.loads((GENERATED / "pyproject.toml").read_text(encoding="utf-8"))
    project = meta["project"]
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    assert (project["name"], project["version"]) == (catalog.package_name, catalog.version)
    assert project["license"] == "Apache-2.0" and project["readme"] == "README.md"
    assert project["scripts"] == {catalog.package_name: f"{PKG}.__main__:main"}
    for dep in project["dependencies"]:
        spec = Requirement(dep).specifier
        assert any(s.operator == ">=" for s in spec) and any(s.operator == "<" for s in spec), dep
    include = meta["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert all((GENERATED / path).exists() for path in include)


_DISTRIBUTIONS = {"mcp_types": "mcp-types", "yaml": "pyyaml"}


def _third_party_imports(paths: list[Path]) -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in stdlib and m != "__future__"}


def test_dependencies_cover_every_import_of_the_package() -> None:
    declared = {Requirement(d).name for d in SERVER_DEPENDENCIES}
    modules = _third_party_imports(sorted((GENERATED / PKG).rglob("*.py")))
    needed = {_DISTRIBUTIONS.get(m, m) for m in modules}
    assert needed <= declared, needed - declared
    # No model types a format as EmailStr (generator.compile.for_models): no email extra.
    assert not any(Requirement(d).extras for d in SERVER_DEPENDENCIES if d.startswith("pydantic"))
    assert not any("EmailStr" in p.read_text() for p in (GENERATED / PKG).rglob("*.py"))


def _installed_modules(requirements: list[str], *, transitive: bool = True) -> set[str]:
    """Top-level modules of the distributions `requirements` install here, dependencies of
    dependencies included unless not `transitive` (with their extras; markers evaluated for
    this interpreter)."""
    modules_of: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(canonicalize_name(dist), set()).add(module)
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen and set(req.extras) <= seen[name]:
            continue
        extras = seen.setdefault(name, set())
        extras |= set(req.extras)
        if not transitive:
            continue
        for spec in metadata.distribution(name).requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": e}) for e in ({""} | extras)
            ):
                todo.append(dep)
    return {m for name in seen for m in modules_of.get(name, ())}


def test_import_names_refused_cover_every_module_the_package_installs() -> None:
    """An import_name equal to a module the generated package's dependencies install is
    refused: names.DEPENDENCY_MODULES holds every module of the declared dependencies, and
    those of their dependencies as installed when it was written. Only the first part is
    asserted exactly: the declared ranges let a new release of a dependency bring another
    dependency, which must not fail this project's CI (it would only widen the list)."""
    direct = _installed_modules([*SERVER_DEPENDENCIES, *POSTGRES_EXTRA], transitive=False)
    assert {"mcp", "mcp_types", "pydantic", "sqlalchemy", "httpx2", "psycopg"} <= direct
    assert direct <= DEPENDENCY_MODULES, direct - DEPENDENCY_MODULES
    everything = _installed_modules([*SERVER_DEPENDENCIES, *POSTGRES_EXTRA])
    assert {"pydantic_core", "httpcore2", "h11"} <= everything & DEPENDENCY_MODULES


def _project_metadata(tmp_path: Path, package_lines: str) -> dict[str, Any]:
    """`[project]` of the pyproject built from the default manifests with `package_lines`
    added to the gateway manifest's `package`."""
    gateway = (GENERATED.parent / "manifests" / "gateway.yaml").read_text(encoding="utf-8")
    root = make_project(tmp_path, copy_defaults=True)
    (root / "manifests" / "gateway.yaml").write_text(
        gateway.replace("  license: Apache-2.0\n", "  license: Apache-2.0\n" + package_lines),
        encoding="utf-8",
    )
    assert api.build(options(root)).ok
    text = (root / "generated" / "pyproject.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["project"]


def test_package_urls_become_project_urls(tmp_path: Path) -> None:
    urls = (
        "  urls:\n    Repository: https://git.example.com/acme/gateway\n"
        "    Issue tracker: https://git.example.com/acme/gateway/issues\n"
    )
    assert _project_metadata(tmp_path, urls)["urls"] == {
        "Repository": "https://git.example.com/acme/gateway",
        "Issue tracker": "https://git.example.com/acme/gateway/issues",
    }


def test_authors_written_with_an_email_publish_it_as_the_authors_email(tmp_path: Path) -> None:
    authors = (
        '  authors: ["Ada Lovelace <ada@example.com>", "<ops@example.com>", "Acme Platform Team",'
        ' "Odd <not an email>"]\n'
    )
    assert _project_metadata(tmp_path, authors)["authors"] == [
        {"name": "Ada Lovelace", "email": "ada@example.com"},
        {"email": "ops@example.com"},
        {"name": "Acme Platform Team"},
        {"name": "Odd <not an email>"},
    ]


# (Other control characters than tab and line feed are refused in manifest text: GEN108.)
_AWKWARD_TEXT = [
    "Gateway \U0001f600 for apps.",  # outside the BMP: json.dumps writes a surrogate pair
    'a "quoted" word',
    "back\\slash \\u0041 not an escape",
    "tab\there",
    "two\nlines\n",
    "é, \u2028 kept",
]


@pytest.mark.parametrize("text", _AWKWARD_TEXT)
def test_pyproject_strings_read_back_exactly(tmp_path: Path, text: str) -> None:
    """pyproject.toml is TOML: its strings are TOML basic strings, not JSON ones."""
    # A YAML double-quoted scalar reads JSON's escapes the same (all but surrogate pairs: the
    # emoji is written as itself).
    quoted = json.dumps(text, ensure_ascii=False)
    quoted = quoted.replace("\x7f", "\\u007f").replace("\u2028", "\\u2028")
    gateway = (
        "version: 1\nkind: gateway\n"
        f"package: {{name: t-gw, import_name: t_gw, version: 0.1.0, summary: {quoted},\n"
        f"  authors: [{quoted}]}}\n"
        "server: {name: t}\n"
    )
    native = (
        "version: 1\nkind: native\ntools:\n  - name: usage_now\n    description: A tool.\n"
        "    scope: read\n    handler: native.get_usage_summary\n"
        "    input: {type: object, properties: {}}\n    output: {type: object}\n"
    )
    root = make_project(tmp_path, {"gateway.yaml": gateway, "native.yaml": native})
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    meta = tomllib.loads(result.files["pyproject.toml"])["project"]
    assert meta["description"] == text
    assert meta["authors"] == [{"name": text}]


def test_minimal_gateway_without_license_omits_the_field() -> None:
    text = (CASES / "minimal" / "expected" / "pyproject.toml").read_text(encoding="utf-8")
    meta = tomllib.loads(text)
    assert "license" not in meta["project"]
    assert (meta["project"]["name"], meta["project"]["version"]) == ("tiny-gateway", "1.2.3")
