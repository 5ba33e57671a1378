"""The generated typed client, statically: its methods mirror the models and the catalog, it is
mypy --strict clean, and both mypy and pyright (strict) catch misuse in a caller's code; names
cannot collide, manifest text stays inert. End-to-end calls are in test_client_e2e.py."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, make_project, mypy_strict, options, pyright_strict
from pydantic import BaseModel

from generator import api, names
from generator.emit import client as client_emit
from generator.runtime import client_base
from generator.runtime.auth import api_key_env

GENERATED = ROOT / "generated"
PKG = "fastn_gateway"
CASES = ROOT / "tests" / "cases"


@pytest.fixture(scope="module")
def gateway_client(generated_on_path: Path) -> Any:
    return importlib.import_module(f"{PKG}.client").GatewayClient


@pytest.fixture(scope="module")
def catalog(generated_on_path: Path) -> Any:
    return importlib.import_module(f"{PKG}.catalog").GATEWAY


# ---------------------------------------------------------------------------- shape


def test_one_method_per_catalog_tool_typed_from_the_models(
    gateway_client: Any, catalog: Any
) -> None:
    assert dict(gateway_client.TOOL_METHODS) == {n: n for n in catalog.tools}
    for name, spec in catalog.tools.items():
        method = getattr(gateway_client, gateway_client.TOOL_METHODS[name])
        assert inspect.iscoroutinefunction(method)
        models = importlib.import_module(f"{PKG}.models.{spec.group}")
        model = getattr(models, spec.input_model)
        params = list(inspect.signature(method).parameters.values())[1:]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
        assert [p.name for p in params] == list(model.model_fields)
        required = {p.name for p in params if p.default is inspect.Parameter.empty}
        assert required == {k for k, f in model.model_fields.items() if f.is_required()}
        wire_required = {model.model_fields[p].alias or p for p in required}
        assert wire_required == set(spec.input_schema.get("required", ()))
        # every optional argument defaults to None (not sent: the gateway's default applies),
        # so a value written equal to the model's default is told apart and sent; one whose
        # schema takes null to NOT_GIVEN (not sent), where None is sent as null
        takes_null = {p[0] for p in client_emit.nullable_paths(spec.input_schema) if len(p) == 1}
        client = importlib.import_module(f"{PKG}.client")
        for p in params:
            if p.name not in required:
                wire = model.model_fields[p.name].alias or p.name
                assert p.default is (client.NOT_GIVEN if wire in takes_null else None), p
        assert inspect.signature(method).return_annotation == spec.output_model
        doc = inspect.getdoc(method) or ""
        assert " ".join(doc.split()).startswith(" ".join(spec.description.split())[:60])


def test_resource_readers_follow_the_declared_resources(gateway_client: Any, catalog: Any) -> None:
    for r in catalog.resources:
        reader = getattr(gateway_client, f"read_{r.name}")
        params = list(inspect.signature(reader).parameters)[1:]
        template = r.uri_template or r.uri
        assert params == [p for p in ("connector", "user") if "{" + p + "}" in template]


def test_base_names_list_is_exact() -> None:
    public = {n for n in vars(client_base.ClientBase) if not n.startswith("_")}
    assert public == set(names.CLIENT_BASE_NAMES)


def test_client_reads_the_same_env_names_as_the_server() -> None:
    assert f"{client_base.env_prefix('fastn_gateway')}_API_KEY" == api_key_env("fastn_gateway")
    params = client_base.ClientBase.stdio.__func__(  # type: ignore[attr-defined]
        type("C", (client_base.ClientBase,), {"PACKAGE": "not_imported_gateway"}),
        api_key="k",
        user="u",
        env={"X": "1"},
    )._target
    assert params.env == {
        "X": "1",
        "NOT_IMPORTED_GATEWAY_API_KEY": "k",
        "NOT_IMPORTED_GATEWAY_USER": "u",
    }
    assert params.args == ["-m", "not_imported_gateway", "serve", "--transport", "stdio"]


def test_stdio_puts_the_imported_package_first_on_the_childs_path(gateway_client: Any) -> None:
    import os

    alone = gateway_client.stdio(api_key="k")._target.env
    assert alone["PYTHONPATH"] == str(GENERATED)
    given = os.pathsep.join(["/opt/lib", str(GENERATED), "/srv/lib"])
    merged = gateway_client.stdio(env={"PYTHONPATH": given, "X": "1"})._target.env
    assert merged == {
        "PYTHONPATH": os.pathsep.join([str(GENERATED), "/opt/lib", "/srv/lib"]),
        "X": "1",
    }
    # An installed package (here pydantic, in the environment's site-packages) is found by
    # the child's interpreter itself.
    import pydantic

    assert "site-packages" in pydantic.__file__
    assert client_base.package_root("pydantic") is None
    assert client_base.package_root("not_imported_gateway") is None


def test_urls_in_messages_lose_their_credentials() -> None:
    assert (
        client_base.public_url("https://u:p@gw.example.com:8443/mcp?key=k#f")
        == "https://gw.example.com:8443/mcp"
    )
    assert client_base.public_url("http://127.0.0.1:8000/mcp") == "http://127.0.0.1:8000/mcp"


def test_error_envelope_parsing() -> None:
    parse = client_base.GatewayClientError.from_envelope
    err = parse(
        {
            "error": {
                "code": "rate_limited",
                "message": "later",
                "details": {"a": 1},
                "retryable": True,
                "retry_after_seconds": 2.5,
            }
        }
    )
    assert err is not None
    assert (err.code, err.message, err.details, err.retryable, err.retry_after) == (
        "rate_limited",
        "later",
        {"a": 1},
        True,
        2.5,
    )
    assert err.envelope()["error"]["retry_after_seconds"] == 2.5
    for junk in (None, "x", {"error": "x"}, {"error": {"code": 1, "message": "m"}}, []):
        assert parse(junk) is None


# ---------------------------------------------------------------------------- typing


USER_CODE_OK = """\
from datetime import UTC, datetime

from fastn_gateway.client import GatewayClient, GatewayClientError
from fastn_gateway.models.native import FastnCreateFlowInputStep, FastnCreateFlowInputTrigger
from fastn_gateway.models.personalization import UpdateMemoryInputObservation
from fastn_gateway.models.slack import SlackSendMessageOutput


async def main(key: str) -> str:
    async with GatewayClient.http("http://127.0.0.1:8000/mcp", api_key=key) as gw:
        sent: SlackSendMessageOutput = await gw.slack_send_message(channel="C1", text="hi")
        await gw.fastn_get_event_history(since=datetime.now(UTC), limit=10)
        await gw.fastn_create_flow(
            name="x", trigger=FastnCreateFlowInputTrigger(type="manual"),
            steps=[FastnCreateFlowInputStep(tool="fastn_get_usage_summary")],
        )
        status: object = await gw.read_integration_status("slack")
        usage = await gw.read_usage()
        used: object = usage.get("calls")
        note = UpdateMemoryInputObservation(text="prefers mornings", tags=["calendar", "prefs"])
        stored = await gw.update_memory(observations=[note])
        first_tag: str | None = note.tags[0] if note.tags else None
        try:
            await gw.fastn_list_integrations(status="active")
        except GatewayClientError as err:
            return err.code + str(err.retry_after)
        return sent.ts + str(status) + str(stored) + str(first_tag) + str(used)
"""

USER_CODE_BAD = """\
from fastn_gateway.client import GatewayClient


async def main(gw: GatewayClient) -> None:
    await gw.slack_send_message(channel="C1")  # text missing
    await gw.slack_send_message(channel=1, text="x")  # wrong type
    await gw.fastn_list_integrations(status="sometimes")  # not in the Literal
    await gw.slack_send_message("C1", "x")  # positional
    out = await gw.slack_list_channels()
    out.no_such_field
    usage: list[str] = await gw.read_usage()  # a JSON object, not Any
"""


def test_generated_client_is_mypy_strict_clean() -> None:
    targets = [
        f"{PKG}/client.py",
        f"{PKG}/runtime/client_base.py",
        *sorted(
            str(p.relative_to(GENERATED)) for p in (GENERATED / PKG / "client_methods").glob("*.py")
        ),
    ]
    proc = mypy_strict(*targets, cwd=GENERATED)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_mypy_checks_user_code_against_the_client(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(USER_CODE_OK)
    (tmp_path / "bad.py").write_text(USER_CODE_BAD)
    env_cwd = GENERATED
    ok = mypy_strict(str(tmp_path / "ok.py"), cwd=env_cwd)
    assert ok.returncode == 0, ok.stdout[-5000:]
    bad = mypy_strict(str(tmp_path / "bad.py"), cwd=env_cwd)
    lines = [line for line in bad.stdout.splitlines() if "bad.py" in line and "error" in line]
    assert {int(line.split(":")[1]) for line in lines} == {5, 6, 7, 8, 10, 11}, bad.stdout


def test_pyright_checks_user_code_against_the_client(tmp_path: Path) -> None:
    """The same code as a Pylance user in strict mode sees it, with the package installed (so
    pyright's py.typed rules apply: a partially unknown type or a name a module does not
    export would be an error in ok.py too)."""
    ok, bad = tmp_path / "ok.py", tmp_path / "bad.py"
    ok.write_text(USER_CODE_OK)
    bad.write_text(USER_CODE_BAD)
    found = pyright_strict(ok, bad, site=GENERATED, project=tmp_path)
    assert [d for d in found if d.file == ok.resolve()] == []
    reported = [(d.line, d.rule) for d in found if d.file == bad.resolve()]
    assert {line for line, _rule in reported} == {5, 6, 7, 8, 10, 11}, found
    assert (6, "reportArgumentType") in reported  # channel=1 where a str is wanted


# ---------------------------------------------------------------------------- emitter


def test_signatures_come_from_the_models_source() -> None:
    source = textwrap.dedent("""\
        from __future__ import annotations
        from typing import Annotated, Literal
        from datetime import date
        from pydantic import BaseModel, ConfigDict, Field
        import decimal

        class Nested(BaseModel):
            x: int

        class ToolInput(BaseModel):
            model_config = ConfigDict(populate_by_name=True)
            plain: str
            aliased: Annotated[str | None, Field(alias="aliasedName")] = None
            old_style: int = Field(3, alias="oldStyle")
            required_field: int = Field(..., alias="requiredField")
            listed: Annotated[list[Nested], Field(default_factory=list)]
            when: date | None = None
            kind: Literal["a", "b"] = "a"
            amount: decimal.Decimal | None = None
        """)
    module = client_emit.parse_models(source)
    fields = {f.name: f for f in module.fields["ToolInput"]}
    assert list(fields) == [
        "plain",
        "aliased",
        "old_style",
        "required_field",
        "listed",
        "when",
        "kind",
        "amount",
    ]
    assert fields["aliased"].wire == "aliasedName"
    assert ast.unparse(fields["aliased"].annotation) == "str | None"
    assert fields["old_style"].wire == "oldStyle"
    assert ast.unparse(fields["old_style"].default) == "3"  # type: ignore[arg-type]
    assert fields["required_field"].default is None and not fields["required_field"].factory
    assert fields["listed"].factory and fields["listed"].default is None
    assert module.imports["date"] == "from datetime import date"
    assert module.imports["decimal"] == "import decimal"
    assert module.defined == {"Nested", "ToolInput"}


def _project(tmp_path: Path, native: str, gateway_extra: str = "") -> Path:
    gateway = (
        textwrap.dedent("""\
        version: 1
        kind: gateway
        package: {name: t-gw, import_name: t_gw, version: 0.1.0}
        server: {name: t}
        quotas: {default_plan: free, plans: {free: {period: day, calls: 10}}}
        """)
        + gateway_extra
    )
    return make_project(tmp_path, {"gateway.yaml": gateway, "native.yaml": native})


def _native_tool(name: str) -> str:
    return textwrap.dedent(f"""\
        version: 1
        kind: native
        tools:
          - name: {name}
            description: A tool.
            scope: read
            handler: native.get_usage_summary
            input: {{type: object, properties: {{}}}}
            output: {{type: object, properties: {{calls: {{type: integer}}}}}}
        """)


def test_a_tool_named_like_a_client_method_is_a_located_error(tmp_path: Path) -> None:
    root = _project(tmp_path, _native_tool("connect"))
    _result, files, diags = api.generate(options(root))
    assert [d.code for d in diags] == ["GEN208"] and not files
    assert diags[0].span.file == "manifests/native.yaml" and diags[0].span.line > 1
    assert "'connect'" in diags[0].message and "ClientBase" in diags[0].message


def test_a_resource_reader_colliding_with_a_tool_is_a_located_error(tmp_path: Path) -> None:
    resources = textwrap.dedent("""\
        resources:
          - {name: usage, uri: "gateway://usage", description: Usage., handler: resources.usage}
        """)
    root = _project(tmp_path / "a", _native_tool("read_usage"), resources)
    _result, _files, diags = api.generate(options(root))
    assert [d.code for d in diags] == ["GEN208"]
    assert "read_usage" in diags[0].message and "resource 'usage'" in diags[0].message
    ok = _project(tmp_path / "b", _native_tool("usage_now"), resources)
    assert api.generate(options(ok))[2] == ()


def _validate_then_build(root: Path) -> list[str]:
    """What `gen validate` reports, as `file:line:col:code`, after checking that a build
    reports the same and writes nothing."""
    found = [f"{d.span}:{d.code}" for d in api.compile_manifests(options(root)).diagnostics]
    out = root / "generated"
    built = api.build(options(root, out=out))
    assert [f"{d.span}:{d.code}" for d in built.diagnostics] == found
    assert not out.exists()
    return found


def test_client_method_collisions_are_reported_by_validate_at_the_tool(tmp_path: Path) -> None:
    """A tool named like a ClientBase attribute or a resource's reader, and a reader named
    like another or like a ClientBase attribute: compile errors at the name, all at once,
    not only when `gen build` reaches the client emitter."""
    resources = textwrap.dedent("""\
        resources:
          - {name: usage, uri: "gateway://usage", description: Usage., handler: resources.usage}
          - {name: list, uri: "gateway://events", description: E.,
             handler: resources.recent_events}
          - {name: list_, uri: "gateway://events/2", description: E.,
             handler: resources.recent_events}
          - {name: resource, uri: "gateway://i", description: I.,
             handler: resources.integrations}
        """)
    native = _native_tool("stdio") + textwrap.indent(
        textwrap.dedent("""\
        - name: read_usage
          description: A tool.
          scope: read
          handler: native.get_usage_summary
          input: {type: object, properties: {}}
          output: {type: object, properties: {}}
        - name: http
          description: A tool.
          scope: read
          handler: native.get_usage_summary
          input: {type: object, properties: {}}
          output: {type: object, properties: {}}
        """),
        "  ",
    )
    root = _project(tmp_path, native, resources)
    assert _validate_then_build(root) == [
        "manifests/gateway.yaml:10:12:GEN208",  # list_: read_list_, as list's reader
        "manifests/gateway.yaml:12:12:GEN208",  # resource: read_resource is ClientBase's
        "manifests/native.yaml:4:11:GEN208",  # stdio
        "manifests/native.yaml:10:11:GEN208",  # read_usage: the reader of usage
        "manifests/native.yaml:16:11:GEN208",  # http
    ]


def _tool(name: str, inp: str = "{}", out: str = "{}") -> str:
    return textwrap.indent(
        textwrap.dedent(f"""\
        - name: {name}
          description: A tool.
          scope: read
          handler: native.get_usage_summary
          input: {{type: object, properties: {inp}}}
          output: {{type: object, properties: {out}}}
        """),
        "  ",
    )


def test_a_model_named_like_a_nested_class_is_reported_by_validate(tmp_path: Path) -> None:
    """datamodel-code-generator names a nested object <Tool><Input|Output><Property...> and
    gives a digit to the later of two classes of one name: a tool whose model takes such a
    name got the digit (or took it from the nested class), found by the client emitter at
    build time only. `gen validate` reports each, at the tool whose model it is."""
    obj = "{type: object, properties: {a: {type: string}}}"
    native = "version: 1\nkind: native\ntools:\n" + "".join(
        [
            _tool(
                "orders",
                out=f"{{input: {obj}}}",
                inp=f"{{line_inputs: {{type: array, items: {obj}}}}}",
            ),
            _tool("orders_output"),  # OrdersOutputInput: orders' output property `input`
            _tool("orders_input_line"),  # OrdersInputLineInput: an item of line_inputs
            _tool(
                "refs", inp=f"{{a: {{$ref: '#/$defs/cart_output'}}}}, $defs: {{cart_output: {obj}}}"
            ),
            _tool("refs_input_cart"),  # RefsInputCartOutput: the $defs entry
        ]
    )
    root = _project(tmp_path, native)
    assert _validate_then_build(root) == [
        "manifests/native.yaml:10:11:GEN208",
        "manifests/native.yaml:16:11:GEN208",
        "manifests/native.yaml:28:11:GEN208",
    ]


def test_a_model_only_prefixed_like_a_nested_class_builds(tmp_path: Path) -> None:
    """A tool named after another plus _input_/_output_ is refused only when that tool has
    properties the name could be made of."""
    obj = "{type: object, properties: {a: {type: string}}}"
    native = "version: 1\nkind: native\ntools:\n" + "".join(
        [
            _tool("orders", out=f"{{csv: {obj}, input_rows: {{type: string}}}}"),
            _tool("orders_output_json"),
            _tool("orders_input"),
        ]
    )
    root = _project(tmp_path, native)
    assert api.compile_manifests(options(root)).diagnostics == ()
    result = api.build(options(root, out=root / "generated"))
    assert result.ok, result.diagnostics


def test_hostile_manifest_text_stays_inert_in_the_client(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = api.build(api.Options.for_project(CASES / "escaping", out=out, cache=False))
    assert result.ok, result.diagnostics
    sys.path.insert(0, str(out))
    try:
        mod = importlib.import_module("esc_gateway.client")
        method = mod.GatewayClient.fastn_list_integrations
        doc = inspect.getdoc(method) or ""
        assert '"""' in doc and "{{ template }}" in doc and "a \\n" in doc
        assert 'a closing quote"' in doc and "日本語, emoji 🚀" in doc
        assert "os.system('rm -rf /')" in doc  # text in the docstring, not code
        hint = inspect.signature(method).parameters["weird"].annotation
        assert hint == "Literal['a\"b', 'c\\\\d', '{{e}}'] | None"
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "esc_gateway" or n.startswith("esc_gateway.")]:
            del sys.modules[name]


FREE_FORM = textwrap.dedent("""\
    version: 1
    kind: native
    tools:
      - name: tag_things
        description: Free-form labels.
        scope: write
        handler: native.get_usage_summary
        input:
          type: object
          additionalProperties: {type: string}
        output: {type: object}
      - name: open_things
        description: Declared properties plus any others.
        scope: write
        handler: native.get_usage_summary
        input:
          type: object
          additionalProperties: true
          required: [self]
          properties:
            self: {type: string}
            userName: {type: string}
            limit: {type: integer, default: 10}
        output: {type: object}
    """)


def test_free_form_and_open_inputs(tmp_path: Path) -> None:
    """`additionalProperties` objects become `**arguments` / `**extra`; names are kept safe."""
    root = _project(tmp_path, FREE_FORM)
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    proc = mypy_strict(
        "t_gw/client.py",
        *sorted(str(p.relative_to(out)) for p in (out / "t_gw/client_methods").glob("*.py")),
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    sys.path.insert(0, str(out))
    try:
        mod = importlib.import_module("t_gw.client")
        models = importlib.import_module("t_gw.models.native")
        tag = inspect.signature(mod.GatewayClient.tag_things)
        assert [(p.name, p.kind.name, p.annotation) for p in tag.parameters.values()][1:] == [
            ("arguments", "VAR_KEYWORD", "str")
        ]
        open_ = inspect.signature(mod.GatewayClient.open_things).parameters
        assert list(open_)[1:] == ["self_", "user_name", "limit", "extra"]
        assert open_["extra"].kind is inspect.Parameter.VAR_KEYWORD
        wire = client_base._wire_arguments
        sent = wire(
            models.OpenThingsInput,
            {"self": "me", "user_name": "ash", "limit": 10, "color-code": "red"},
            frozenset(),
        )
        assert sent == {"self": "me", "userName": "ash", "limit": 10, "color-code": "red"}
        model: BaseModel = models.OpenThingsInput.model_validate(sent)
        assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == sent
        assert wire(models.TagThingsInput, {"env": "prod"}, frozenset()) == {"env": "prod"}
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "t_gw" or n.startswith("t_gw.")]:
            del sys.modules[name]


def test_parameters_never_shadow_what_the_method_body_uses() -> None:
    """A placeholder named like the helper a reader calls (`expand_uri`), `self`, or a name in
    its signature takes a `_`, and the URI is filled from that argument. (The gateway's own
    handlers read `{user}` and `{connector}` only (GEN228), but the reader is written for any
    template.)"""
    from generator import ir
    from generator.diagnostics import Span

    def reader(template: str) -> Any:
        return client_emit._reader(
            ir.Resource(
                name="r",
                uri=None,
                uri_template=template,
                title=None,
                description="A resource.",
                mime_type="application/json",
                handler="resources.memory_log",
                span=Span(file="manifests/gateway.yaml", line=1, col=1),
            )
        )

    profile = reader("memory://users/{expand_uri}/profile")
    assert profile.params == ("expand_uri_: str",)
    assert profile.uri == "expand_uri('memory://users/{expand_uri}/profile', " + (
        "{'expand_uri': expand_uri_})"
    )
    log = reader("memory://users/{self}/{Any}/{ResourceContent}/{str}/log")
    assert log.params == ("self_: str", "Any_: str", "ResourceContent_: str", "str_: str")
    namespace = {"expand_uri": client_base.expand_uri, **dict.fromkeys(("self_", "Any_"), "a")}
    namespace |= {"ResourceContent_": "r b", "str_": "t"}
    assert eval(log.uri, namespace) == "memory://users/a/a/r%20b/t/log"


def test_a_deprecated_tool_says_so_once_in_its_docstring_and_in_tools_md(tmp_path: Path) -> None:
    """The description ends with the deprecation note (replacement, sunset, reason); the
    docstring added a second "Deprecated:" paragraph, and TOOLS.md's row read "instead.;"."""
    native = (
        _native_tool("old_usage").replace(
            "    scope: read\n",
            "    scope: read\n"
            "    deprecated: {reason: Use usage_now with period day instead.,"
            ' replacement: usage_now, sunset: "2027-06-30"}\n',
        )
        + _native_tool("usage_now").split("tools:\n", 1)[1]
    )
    root = _project(tmp_path, native)
    _result, files, diags = api.generate(options(root))
    assert diags == (), diags
    tree = ast.parse(files["t_gw/client_methods/native.py"])
    [method] = [
        n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.name == "old_usage"
    ]
    doc = ast.get_docstring(method) or ""
    assert doc.startswith(
        "A tool.\n\nDeprecated: use usage_now instead (sunset 2027-06-30). Use usage_now with "
        "period\nday instead.\n\n"
    ), doc
    assert doc.count("Deprecated") == 1, doc
    rows = [line for line in files["TOOLS.md"].splitlines() if line.startswith("| Deprecated |")]
    assert rows == [
        "| Deprecated | Use usage\\_now with period day instead. Use `usage_now` instead. "
        "Removed after `2027-06-30`. |"
    ]
