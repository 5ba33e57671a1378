"""Schema shapes that Python types awkwardly, from manifest to typed caller and back.

tests/data/typing/probe.yaml (enums of several JSON types, object and array defaults, output
properties with defaults) is built into a package of its own; a caller is type-checked against
its client with mypy --strict and with pyright's strict mode, its models are exercised
directly, and the generated server (in process, its connector pointed at a loopback stand-in)
is driven by the generated client.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import ROOT, make_project, mypy_strict, options, pyright_strict

from generator import api
from generator.compile import for_output_models, without_defaults
from tests.runtime.upstreams import Received, Reply, Upstream

PKG = "probe_gw"
GATEWAY = textwrap.dedent(f"""\
    version: 1
    kind: gateway
    package: {{name: probe-gw, import_name: {PKG}, version: 0.1.0}}
    server: {{name: probe}}
    quotas: {{default_plan: free, plans: {{free: {{period: day, calls: 1000}}}}}}
    """)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The probe package, built and importable: its root, client class and models module."""
    probe = (ROOT / "tests" / "data" / "typing" / "probe.yaml").read_text(encoding="utf-8")
    root = make_project(
        tmp_path_factory.mktemp("typing"),
        {"gateway.yaml": GATEWAY, "connectors/probe.yaml": probe},
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    sys.path.insert(0, str(out))
    try:
        yield SimpleNamespace(
            out=out,
            client=importlib.import_module(f"{PKG}.client").GatewayClient,
            models=importlib.import_module(f"{PKG}.models.probe"),
        )
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PKG or n.startswith(f"{PKG}.")]:
            del sys.modules[name]


CALLER_OK = f"""\
from {PKG}.client import GatewayClient
from {PKG}.models.probe import ProbeMixedInputOpts, ProbeMixedInputRow


async def main(gw: GatewayClient) -> None:
    await gw.probe_mixed(need=1)
    await gw.probe_mixed(need="a", mode=True, level="a", flag="auto", zero=False)
    await gw.probe_mixed(need=None, mode="auto", level=None, flag=True, zero=0)
    await gw.probe_mixed(need=1, zero="off", opts=ProbeMixedInputOpts(a=2))
    await gw.probe_mixed(need=1, tags=["z"], meta={{"b": 2}}, rows=[ProbeMixedInputRow(a=3)])
    await gw.probe_mixed(need=1, opts=None, tags=None, meta=None, rows=None)
    out = await gw.probe_mixed(need=1)
    count: int | None = out.count
    total: int = out.total
    print(count, total)
"""

# Each line after the first four is one mistake a type checker must catch.
CALLER_BAD = f"""\
from {PKG}.client import GatewayClient


async def main(gw: GatewayClient) -> None:
    await gw.probe_mixed(need=2)
    await gw.probe_mixed(need="1")
    await gw.probe_mixed(need=True)
    await gw.probe_mixed(need=1, mode=False)
    await gw.probe_mixed(need=1, mode=1)
    await gw.probe_mixed(need=1, flag="true")
    await gw.probe_mixed(need=1, zero=1)
    await gw.probe_mixed(need=1, zero=True)
    await gw.probe_mixed(need=1, opts={{"a": 1}})
    out = await gw.probe_mixed(need=1)
    count: int = out.count
"""


def test_a_caller_type_checks_exactly_against_enums_and_defaults(
    built: SimpleNamespace, tmp_path: Path
) -> None:
    """The models and client modules are mypy --strict clean with list, dict and model
    defaults; enum parameters accept exactly the enum's values (None: not given)."""
    methods = built.out / PKG / "client_methods" / "probe.py"
    models = built.out / PKG / "models" / "probe.py"
    (tmp_path / "ok.py").write_text(CALLER_OK)
    ok = mypy_strict(models, methods, tmp_path / "ok.py", cwd=built.out)
    assert ok.returncode == 0, ok.stdout[-5000:]
    (tmp_path / "bad.py").write_text(CALLER_BAD)
    bad = mypy_strict(tmp_path / "bad.py", cwd=built.out)
    lines = {
        int(line.split(":")[1])
        for line in bad.stdout.splitlines()
        if "bad.py" in line and ": error:" in line
    }
    assert lines == set(range(5, 14)) | {15}, bad.stdout


def test_pyright_sees_the_same_types(built: SimpleNamespace, tmp_path: Path) -> None:
    """pyright (strict, the package installed as a library) agrees: the models and client
    modules are clean, the caller above is, and each mistake is reported on its line."""
    methods = built.out / PKG / "client_methods" / "probe.py"
    models = built.out / PKG / "models" / "probe.py"
    ok, bad = tmp_path / "ok.py", tmp_path / "bad.py"
    ok.write_text(CALLER_OK)
    bad.write_text(CALLER_BAD)
    found = pyright_strict(models, methods, ok, bad, site=built.out, project=tmp_path)
    assert [d for d in found if d.file != bad.resolve()] == []
    reported = [(d.line, d.rule) for d in found if d.severity == "error"]
    assert {line for line, _rule in reported} == set(range(5, 14)) | {15}, found
    assert (5, "reportArgumentType") in reported  # need=2 is not in the enum


def test_defaults_are_none_in_the_signature_and_documented(built: SimpleNamespace) -> None:
    """Every optional argument defaults to None (left out: the gateway applies the schema's
    default), or NOT_GIVEN where the schema takes null, so a value written equal to the default
    is still sent; the docstring gives the default."""
    params = inspect.signature(built.client.probe_mixed).parameters
    names = ("opts", "tags", "meta", "rows", "flag")
    assert {n: params[n].default for n in names} == dict.fromkeys(names)
    not_given = importlib.import_module(f"{PKG}.client").NOT_GIVEN
    assert params["level"].default is not_given  # it takes null: None sends null
    doc = inspect.getdoc(built.client.probe_mixed) or ""
    assert 'opts: Default: {"a": 1}.' in doc and 'rows: Default: [{"a": 1}].' in doc
    assert "level: None sends null; left out (NOT_GIVEN), it is not sent. Default: 1." in doc
    assert "flag: Default: true." in doc


def test_model_defaults_are_right_and_never_shared(built: SimpleNamespace) -> None:
    model = built.models.ProbeMixedInput
    first, second = model(need=1), model(need=1)
    assert first.model_dump(mode="json", exclude={"need", "mode", "zero"}) == {
        "level": 1,
        "flag": True,
        "opts": {"a": 1},
        "tags": ["x", "y"],
        "meta": {"a": 1},
        "rows": [{"a": 1}],
    }
    assert isinstance(first.opts, built.models.ProbeMixedInputOpts)
    first.tags.append("z")
    first.meta["b"] = 2
    first.rows[0].a = 9
    first.opts.a = 9
    assert second.model_dump(mode="json", include={"opts", "tags", "meta", "rows"}) == {
        "opts": {"a": 1},
        "tags": ["x", "y"],
        "meta": {"a": 1},
        "rows": [{"a": 1}],
    }
    assert model(need=1).model_dump(mode="json")["tags"] == ["x", "y"]


MEMBERS = [
    ("need", [1, "a", None]),
    ("mode", [True, "auto"]),
    ("zero", [0, False, "off"]),
]


@pytest.mark.parametrize(("field", "values"), MEMBERS)
def test_every_enum_member_round_trips_with_its_json_type(
    built: SimpleNamespace, field: str, values: list[Any]
) -> None:
    """model_validate then model_dump(mode="json") gives the same JSON text back (1 stays 1,
    true stays true, 0 and false stay apart), in the input and in the output model."""
    for model, base in (
        (built.models.ProbeMixedInput, {"need": 1}),
        (built.models.ProbeMixedOutput, {"id": "r", "total": 0}),
    ):
        for value in values:
            data = {**base, field: value}
            dumped = model.model_validate(data).model_dump(mode="json", exclude_unset=True)
            assert json.dumps(dumped[field]) == json.dumps(value), (model.__name__, value)


def test_an_output_default_is_not_invented(built: SimpleNamespace) -> None:
    """A property the upstream left out reads as None, not as the schema's default."""
    out = built.models.ProbeMixedOutput.model_validate({"id": "r", "total": 3, "nested": {}})
    assert (out.count, out.label, out.nested.flag) == (None, None, None)
    assert out.model_dump(mode="json", exclude_unset=True) == {"id": "r", "total": 3, "nested": {}}
    with pytest.raises(ValueError):  # required, default or not
        built.models.ProbeMixedOutput.model_validate({"id": "r"})


def test_output_schemas_lose_only_their_defaults() -> None:
    """What the output models are made from (`for_output_models`): every subschema's
    `default` removed; a property named "default" and the values of const, enum and examples
    kept; the schema not mutated."""
    schema = {
        "type": "object",
        "default": {},
        "properties": {
            "default": {"type": "string", "default": "x"},
            "k": {"const": {"default": 1}},
            "l": {"type": "array", "items": {"type": "integer", "default": 0}, "default": []},
            "e": {"enum": [{"default": 2}], "examples": [{"default": 3}]},
        },
        "$defs": {"D": {"type": "integer", "default": 1}},
        "additionalProperties": {"anyOf": [{"type": "string", "default": "y"}]},
    }
    before = json.dumps(schema)
    assert without_defaults(schema) == {
        "type": "object",
        "properties": {
            "default": {"type": "string"},
            "k": {"const": {"default": 1}},
            "l": {"type": "array", "items": {"type": "integer"}},
            "e": {"enum": [{"default": 2}], "examples": [{"default": 3}]},
        },
        "$defs": {"D": {"type": "integer"}},
        "additionalProperties": {"anyOf": [{"type": "string"}]},
    }
    assert for_output_models(schema) == without_defaults(schema)  # no format, nothing closed
    assert json.dumps(schema) == before


def test_output_schemas_lose_every_closing_false() -> None:
    """`additionalProperties: false` and `unevaluatedProperties: false` go at every depth (the
    output models then ignore undeclared properties); a schema or `true` there, and a property
    named so, are kept."""
    closed = {"type": "object", "additionalProperties": False}
    schema = {
        **closed,
        "unevaluatedProperties": False,
        "properties": {
            "a": {"type": "array", "items": closed},
            "additionalProperties": {"type": "object", "additionalProperties": True},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "u": {"anyOf": [closed, {"type": "null"}]},
        },
        "$defs": {"D": closed},
    }
    assert for_output_models(schema) == {
        "type": "object",
        "properties": {
            "a": {"type": "array", "items": {"type": "object"}},
            "additionalProperties": {"type": "object", "additionalProperties": True},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "u": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "$defs": {"D": {"type": "object"}},
    }
    assert schema["additionalProperties"] is False and closed == {
        "type": "object",
        "additionalProperties": False,
    }


class ProbeUpstream(Upstream):
    """Answers /mixed with what it was sent, and leaves out every defaulted output property."""

    def handle(self, req: Received) -> Reply:
        if req.path == "/mixed":
            return Reply(200, {"id": "r1", "total": 3, "sent": req.json()})
        return Reply(404, {"error": "not found"})


async def test_server_and_typed_client_agree_end_to_end(
    built: SimpleNamespace, tmp_path: Path
) -> None:
    """Enum values reach the upstream with their JSON types and come back the same; object
    defaults are applied by the gateway on every call; a property the upstream left out is
    missing from the structured result and None in the typed result (never the default)."""
    catalog = importlib.import_module(f"{PKG}.catalog")
    server_mod = importlib.import_module(f"{PKG}.runtime.server")
    with ProbeUpstream() as upstream:
        runtime = server_mod.GatewayRuntime.open(
            catalog.GATEWAY,
            str(tmp_path / "gateway.db"),
            environ={},
            base_urls={"probe": upstream.url},
            recorder_interval=0.05,
        )
        try:
            store = runtime.store
            tenant = store.create_tenant("acme")
            store.connect(tenant.id, "probe", {"token": "t0ken-probe"})
            key = store.issue_key(tenant.id, scopes=["read", "write"]).token
            async with built.client.connect_to(runtime.build_server(api_key=key)) as gw:
                raw = await gw.call_tool("probe_mixed", {"need": 1, "mode": True, "zero": False})
                assert raw == {
                    "id": "r1",
                    "total": 3,
                    "need": 1,
                    "mode": True,
                    "zero": False,
                    "opts": {"a": 1},
                    "tags": ["x", "y"],
                }
                typed = await gw.probe_mixed(need="a", mode="auto", zero=0)
                again = await gw.probe_mixed(need=None, zero="off", tags=["z"])
                # Objects that do not close themselves take other properties, in the schema and
                # at the gateway: the client's models dropped them from what it sent.
                opts = built.models.ProbeMixedInputOpts.model_validate({"a": 2, "b": "kept"})
                row = built.models.ProbeMixedInputRow.model_validate({"a": 3, "z": [1]})
                await gw.probe_mixed(need=1, opts=opts, rows=[row])
        finally:
            await runtime.aclose()
        sent = [r.json() for r in upstream.requests("POST", "/mixed")]
    assert json.dumps(sent[0]) == json.dumps(
        {
            "need": 1,
            "mode": True,
            "level": 1,
            "flag": True,
            "zero": False,
            "opts": {"a": 1},
            "tags": ["x", "y"],
            "meta": {"a": 1},
            "rows": [{"a": 1}],
        }
    )
    assert (sent[1]["need"], sent[1]["mode"], sent[1]["zero"]) == ("a", "auto", 0)
    assert json.dumps(sent[1]["zero"]) == "0"
    assert sent[1]["opts"] == {"a": 1} and sent[1]["tags"] == ["x", "y"]
    assert sent[2]["need"] is None and sent[2]["tags"] == ["z"] and sent[2]["meta"] == {"a": 1}
    assert (typed.need, typed.mode, typed.zero) == ("a", "auto", 0)
    assert typed.zero is not False
    assert (typed.count, typed.label, typed.nested) == (None, None, None)
    assert typed.model_dump(mode="json", exclude_unset=True) == {
        "id": "r1",
        "total": 3,
        "need": "a",
        "mode": "auto",
        "zero": 0,
        "opts": {"a": 1},
        "tags": ["x", "y"],
    }
    assert again.need is None and again.tags == ["z"]
    assert sent[3]["opts"] == {"a": 2, "b": "kept"} and sent[3]["rows"] == [{"a": 3, "z": [1]}]


CONSTS = textwrap.dedent("""\
    version: 1
    kind: connector
    name: consts
    title: Consts
    description: Constants of every JSON type.
    base_url: https://consts.example.com
    auth: {type: bearer, token_field: token, fields: [{name: token, title: Token}]}
    capabilities:
      - name: put
        description: Constants and enums the models can type, and some they cannot.
        scope: write
        annotations: {idempotent: true, open_world: true}
        input:
          type: object
          required: [kind]
          properties:
            kind: {const: {kind: x}}
            pair: {const: [1, 2]}
            ratio: {const: 2.5}
            one: {const: 1.0}
            shape: {enum: [a, {b: 1}]}
            items: {type: array, items: {const: {c: true}}}
            word: {const: x}
            count: {const: 3}
            flag: {const: true}
            nothing: {const: null}
            scale: {enum: [0.5, 1, "x", null, false]}
        output:
          type: object
          properties:
            echo: {const: {kind: x}}
        http:
          method: POST
          path: /put
          body: {kind: "{kind}", pair: "{pair}", ratio: "{ratio}", one: "{one}", shape: "{shape}",
            items: "{items}", word: "{word}", count: "{count}", flag: "{flag}",
            nothing: "{nothing}", scale: "{scale}"}
          response: {fields: {echo: echo}}
    """)


def test_a_const_or_enum_value_the_models_cannot_type_is_a_located_error(tmp_path: Path) -> None:
    """Objects, lists and (for const) floats would become dict/list/float types that accept
    any such value, and an optional const got a None default its type does not admit."""
    root = make_project(tmp_path, {"gateway.yaml": GATEWAY, "connectors/consts.yaml": CONSTS})
    _result, files, diags = api.generate(options(root))
    assert not files
    found = [
        (d.code, d.span.file, d.span.line, d.message.partition(": the generated")[0]) for d in diags
    ]
    file = "manifests/connectors/consts.yaml"
    assert found == [
        ("GEN222", file, 17, 'const {"kind": "x"} is an object'),
        ("GEN222", file, 18, "const [1, 2] is a list"),
        ("GEN222", file, 19, "const 2.5 is a floating-point number"),
        ("GEN222", file, 20, "const 1.0 is a floating-point number"),
        ("GEN222", file, 21, 'enum value {"b": 1} is an object'),
        ("GEN222", file, 22, 'const {"c": true} is an object'),
        ("GEN222", file, 31, 'const {"kind": "x"} is an object'),
    ]
    hints = [d.hint for d in diags]
    assert hints[0] == (
        "give the object its properties, each with its own const: "
        '{type: object, required: [kind], properties: {kind: {const: "x"}}}'
    )
    assert hints[2] == "use {type: number, minimum: 2.5, maximum: 2.5}"
    assert hints[3] == "write it as the integer 1"


def test_the_suggested_spellings_are_typed_exactly(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"gateway.yaml": GATEWAY, "connectors/consts.yaml": CONSTS})
    hints = {d.span.line: d.hint for d in api.generate(options(root))[2]}
    fixed = CONSTS
    for line, old in ((17, "{const: {kind: x}}"), (18, "{const: [1, 2]}"), (19, "{const: 2.5}")):
        assert hints[line] is not None
        fixed = fixed.replace(old, hints[line][hints[line].index("{") :], 1)
    fixed = fixed.replace("{const: 1.0}", "{const: 1}").replace("{enum: [a, {b: 1}]}", "{}")
    fixed = fixed.replace("{const: {c: true}}", "{}").replace("{const: {kind: x}}", "{}")
    root = make_project(
        tmp_path / "fixed", {"gateway.yaml": GATEWAY, "connectors/consts.yaml": fixed}
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    source = (root / "generated" / PKG / "models" / "consts.py").read_text(encoding="utf-8")
    assert '    kind: Literal["x"]\n' in source  # the nested model's one field
    assert "pair: tuple[Literal[1], Literal[2]] | None = None" in source
    assert "ratio: Annotated[float | None, Field(ge=2.5, le=2.5)] = None" in source


CLOSED = {
    "types.yaml": textwrap.dedent("""\
        version: 1
        kind: types
        types:
          Item:
            type: object
            additionalProperties: false
            required: [id]
            properties:
              id: {type: string}
              tags:
                type: array
                items:
                  type: object
                  additionalProperties: false
                  properties: {name: {type: string}}
        """),
    "connectors/shop.yaml": textwrap.dedent("""\
        version: 1
        kind: connector
        name: shop
        title: Shop
        description: A shop.
        base_url: https://shop.example.com
        auth: {type: bearer, token_field: token, fields: [{name: token, title: Token}]}
        capabilities:
          - name: put_item
            description: Store one item; returns it, its neighbours and a note.
            scope: write
            input:
              type: object
              additionalProperties: false
              required: [item]
              properties:
                item: {$ref: "#/types/Item"}
            output:
              type: object
              additionalProperties: false
              required: [item]
              $defs:
                Note:
                  type: object
                  additionalProperties: false
                  properties: {text: {type: string}}
              properties:
                item: {$ref: "#/types/Item"}
                near: {type: array, items: {$ref: "#/types/Item"}}
                by_id: {type: object, additionalProperties: {$ref: "#/types/Item"}}
                note: {$ref: "#/$defs/Note"}
                seen: {type: object, unevaluatedProperties: false, properties: {at: {type: string}}}
            http:
              method: POST
              path: /items
              body: {item: "{item}"}
              response: {fields: {item: item, near: near, by_id: by_id, note: note, seen: seen}}
        """),
}


def test_output_models_ignore_undeclared_properties_at_every_level(tmp_path: Path) -> None:
    """A closed output object (`additionalProperties` or `unevaluatedProperties: false`), at
    the root, in a shared type, an array's items, a map's values or a `$defs` entry, is read
    tolerantly by the output model: a property the next release adds (BRK103, safe) is
    ignored, where `extra="forbid"` made the previous release's client refuse every result.
    The input model of the same shared type still refuses undeclared arguments (as the
    gateway does: input and output never share a class), and the gateway's own schema
    (catalog, tools.json) keeps every `additionalProperties: false`."""
    gateway = GATEWAY.replace("probe-gw", "closed-gw").replace(PKG, "closed_gw")
    root = make_project(tmp_path, {"gateway.yaml": gateway, **CLOSED})
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    sys.path.insert(0, str(out))
    try:
        models = importlib.import_module("closed_gw.models.shop")
        catalog = importlib.import_module("closed_gw.catalog").GATEWAY
        item = {"id": "1", "tags": [{"name": "a", "color": "red"}], "price": 3}
        got = models.ShopPutItemOutput.model_validate(
            {
                "item": item,
                "near": [item],
                "by_id": {"x": item},
                "note": {"text": "hi", "lang": "en"},
                "seen": {"at": "now", "by": "ash"},
                "permalink": "https://shop.example.com/items/1",
            }
        )
        assert got.item.id == "1" and got.item.tags[0].name == "a"
        assert got.near[0].tags[0].name == "a" and got.by_id["x"].id == "1"
        assert (got.note.text, got.seen.at) == ("hi", "now")
        assert got.model_dump(exclude_none=True) == {
            "item": {"id": "1", "tags": [{"name": "a"}]},
            "near": [{"id": "1", "tags": [{"name": "a"}]}],
            "by_id": {"x": {"id": "1", "tags": [{"name": "a"}]}},
            "note": {"text": "hi"},
            "seen": {"at": "now"},
        }
        for arguments in ({"item": {"id": "1"}, "more": 1}, {"item": {"id": "1", "price": 3}}):
            with pytest.raises(ValueError, match="Extra inputs are not permitted"):
                models.ShopPutItemInput.model_validate(arguments)
        with pytest.raises(ValueError, match="Extra inputs are not permitted"):
            models.ShopPutItemInput.model_validate({"item": {"id": "1", "tags": [item["tags"][0]]}})
        schema = catalog.tools["shop_put_item"].output_schema
        assert schema["additionalProperties"] is False
        assert schema["properties"]["item"]["additionalProperties"] is False
        assert schema["$defs"]["Note"]["additionalProperties"] is False
        tools = json.loads((out / "tools.json").read_text(encoding="utf-8"))["tools"]
        assert tools[0]["outputSchema"] == schema
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.split(".")[0] == "closed_gw"]:
            del sys.modules[name]
