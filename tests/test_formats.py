"""String formats: the gateway and the typed client agree on every value.

JSON Schema 2020-12 leaves `format` an annotation. The generated models type five formats as a
class (date-time, date, uuid, ipv4, ipv6), which the gateway asserts with the models' own
types (`fastschema.format_check`); every other format is a plain `str` (or the JSON type) in the
models, and an annotation for the gateway. Checked here on the models and the gateway's
validators directly, and end to end: a package built from a probe connector, served over
streamable HTTP on 127.0.0.1, its connector pointed at a loopback stand-in, driven by its
generated client.
"""

from __future__ import annotations

import datetime as dt
import importlib
import ipaddress
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import make_project, mypy_strict, options
from pydantic import BaseModel, ValidationError

from generator import api
from generator.compile import for_models
from generator.datamodel import generate
from generator.runtime.fastschema import TYPED_FORMATS, compile_check, validator_class
from tests.runtime.support import UvicornThread
from tests.runtime.upstreams import Received, Reply, Upstream

PKG = "formats_gw"
GATEWAY = textwrap.dedent(f"""\
    version: 1
    kind: gateway
    package: {{name: formats-gw, import_name: {PKG}, version: 0.1.0}}
    server: {{name: formats}}
    quotas: {{default_plan: free, plans: {{free: {{period: day, calls: 1000}}}}}}
    """)
# One property per format: the typed ones, the ones whose pydantic types refused or rewrote
# values (email, uri, hostname, duration, password, byte), and formats on numbers.
TYPES = textwrap.dedent("""\
    version: 1
    kind: types
    types:
      Record:
        type: object
        properties:
          when: {type: [string, "null"], format: date-time}
          day: {type: string, format: date}
          at: {type: string, format: time}
          uid: {type: string, format: uuid}
          ip4: {type: string, format: ipv4}
          ip6: {type: string, format: ipv6}
          email: {type: [string, "null"], format: email}
          home: {type: string, format: uri}
          host: {type: string, format: hostname, pattern: "^[a-z_.]+$"}
          span: {type: string, format: duration}
          secret: {type: string, format: password}
          blob: {type: string, format: byte}
          amount: {type: number, format: decimal}
          epoch: {type: integer, format: date-time}
    """)
CONNECTOR = textwrap.dedent("""\
    version: 1
    kind: connector
    name: probe
    title: Probe
    description: Records with a property of each format.
    base_url: https://probe.example.com
    auth: {type: bearer, token_field: token, fields: [{name: token, title: Token}]}
    capabilities:
      - name: get_record
        description: Read the record the upstream holds.
        scope: read
        annotations: {read_only: true, open_world: true}
        input: {type: object, properties: {}}
        output:
          type: object
          required: [record]
          properties:
            record: {$ref: "#/types/Record"}
        http:
          method: GET
          path: /record
          response: {fields: {record: record}}
      - name: put_record
        description: Send a record; the upstream answers with what it was sent.
        scope: write
        annotations: {idempotent: true, open_world: true}
        input:
          type: object
          required: [record]
          properties:
            record: {$ref: "#/types/Record"}
        output:
          type: object
          required: [record]
          properties:
            record: {$ref: "#/types/Record"}
        http:
          method: POST
          path: /record
          body: {record: "{record}"}
          response: {fields: {record: record}}
    """)


# ------------------------------------------------------------------ which formats are typed


def test_only_the_asserted_formats_are_typed_as_a_class() -> None:
    """Every format datamodel-code-generator knows, on each JSON type it knows it for (and one
    it does not know): the models type the asserted ones as their class, everything else as the
    plain JSON type, so a datamodel-code-generator upgrade that types a new format cannot make
    the client stricter than the gateway."""
    from datamodel_code_generator.parser.jsonschema import json_schema_data_formats

    plain = {"string": "str", "integer": "int", "number": "float"}
    classes = {**TYPED_FORMATS, "date-time": "AwareDatetime"}
    props: dict[str, Any] = {}
    expected: dict[str, str] = {}
    for kind, formats in json_schema_data_formats.items():
        for fmt in [*formats, "phone-number"]:
            if kind in plain and fmt != "default":
                name = f"f{len(props)}"
                props[name] = {"type": kind, "format": fmt}
                typed = kind == "string" and fmt in TYPED_FORMATS
                expected[name] = classes[fmt] if typed else plain[kind]
    schema = for_models({"type": "object", "properties": props})
    source = generate({"tools": [{"name": "t", "inputSchema": schema, "outputSchema": schema}]})
    got = {
        line.split(":")[0].strip(): line.split(":")[1].split("|")[0].strip()
        for line in source.split("class TOutput")[0].splitlines()
        if line.startswith("    f")
    }
    assert got == expected
    assert len(expected) > 40 and sum(v not in plain.values() for v in expected.values()) == 5


def test_a_format_is_kept_for_the_models_only_on_a_string() -> None:
    schema = {
        "type": "object",
        "properties": {
            "format": {"type": "string", "format": "email"},  # a property named "format"
            "a": {"type": ["string", "null"], "format": "date-time"},
            "b": {"type": ["string", "integer"], "format": "date-time"},
            "c": {"format": "uuid"},
            "d": {"type": "array", "items": {"type": "string", "format": "ipv4"}},
            "e": {"anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}]},
        },
        "$defs": {"T": {"type": "string", "format": "time", "examples": [{"format": "x"}]}},
    }
    before = json.dumps(schema)
    assert for_models(schema) == {
        "type": "object",
        "properties": {
            "format": {"type": "string"},
            "a": {"type": ["string", "null"], "format": "date-time"},
            "b": {"type": ["string", "integer"]},
            "c": {},
            "d": {"type": "array", "items": {"type": "string", "format": "ipv4"}},
            "e": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "$defs": {"T": {"type": "string", "examples": [{"format": "x"}]}},
    }
    assert json.dumps(schema) == before


# ------------------------------------------------ the gateway's check and the models' types

# Strings with each format's syntax or close to it. Those marked True the gateway accepts.
EDGES: dict[str, list[tuple[str, bool]]] = {
    "date-time": [
        ("2024-01-31T09:00:00Z", True),
        ("2024-01-31t09:00:00z", True),
        ("2024-01-31T09:00:00.5+05:30", True),
        ("2024-01-31T09:00:00.123456789-00:00", True),
        ("0001-01-01T00:00:00+23:59", True),
        ("9999-12-31T23:59:59-14:00", True),
        ("2024-02-29T00:00:00Z", True),
        ("2024-01-31T09:00:00", False),  # no offset: ambiguous, AwareDatetime refuses it
        ("2024-01-31 09:00:00Z", False),  # pydantic takes a space, RFC 3339 does not
        ("2024-01-31T09:00Z", False),
        ("2024-01-31T09:00:00+0100", True),  # Jira's and Salesforce's offsets
        ("2024-01-31T09:00:00.000+0000", True),
        ("2024-01-31T09:00:00+0160", False),
        ("2024-01-31T09:00:00+01", False),
        ("1706691600", False),  # pydantic reads a Unix time
        ("2023-02-29T00:00:00Z", False),
        ("2024-01-31T23:59:60Z", False),  # a leap second: RFC 3339 syntax, no datetime
        ("0000-01-01T00:00:00Z", False),
        ("2024-01-31T24:00:00Z", False),
        ("2024-01-31T09:00:00+24:00", False),
        ("2024-01-31T09:00:00+01:60", False),  # Python's fromisoformat takes it
        ("2024-01-31T09:00:00.Z", False),
        ("2024-01-31T09:00:00Z\n", False),
        ("２024-01-31T09:00:00Z", False),
        ("", False),
    ],
    "date": [
        ("2024-01-31", True),
        ("2024-02-29", True),
        ("0001-01-01", True),
        ("2023-02-29", False),
        ("0000-01-01", False),
        ("20240131", False),
        ("2024-1-31", False),
        ("2024-01-31T00:00:00Z", False),  # pydantic takes a midnight date-time
        ("19000", False),
    ],
    "uuid": [
        ("123e4567-e89b-12d3-a456-426614174000", True),
        ("123E4567-E89B-12D3-A456-426614174000", True),
        ("00000000-0000-0000-0000-000000000000", True),
        ("123e4567e89b12d3a456426614174000", False),
        ("urn:uuid:123e4567-e89b-12d3-a456-426614174000", False),
        ("{123e4567-e89b-12d3-a456-426614174000}", False),
        ("123e4567-e89b-12d3-a456-42661417400g", False),
    ],
    "ipv4": [
        ("127.0.0.1", True),
        ("255.255.255.255", True),
        ("0.0.0.0", True),
        ("256.1.1.1", False),
        ("01.2.3.4", False),
        ("1.2.3", False),
        ("2130706433", False),
        ("١.٢.٣.٤", False),
    ],
    "ipv6": [
        ("::1", True),
        ("FE80::1", True),
        ("::ffff:1.2.3.4", True),
        ("2001:db8::8a2e:370:7334", True),
        ("fe80::1%eth0", False),
        ("1::2::3", False),
        ("127.0.0.1", False),
        (":::", False),
    ],
}


def _model(fmt: str) -> type[BaseModel]:
    schema = for_models({"type": "object", "properties": {"v": {"type": "string", "format": fmt}}})
    source = generate({"tools": [{"name": "t", "inputSchema": schema, "outputSchema": schema}]})
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{fmt}>", "exec"), namespace)
    model: type[BaseModel] = namespace["TOutput"]
    model.model_rebuild(_types_namespace=namespace)
    return model


@pytest.mark.parametrize("fmt", sorted(EDGES))
def test_what_the_gateway_accepts_the_models_parse(fmt: str) -> None:
    """A result the gateway lets through always parses in the typed client: the gateway's
    check (jsonschema's validator and the fast check alike) accepts a subset of what the
    models' type parses, and refuses what the models' type refuses."""
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    gateway = validator_class()(schema)
    fast = compile_check(schema)
    assert fast is not None
    model = _model(fmt)
    for value, accepted in EDGES[fmt]:
        assert gateway.is_valid({"v": value}) is accepted, value
        assert fast({"v": value}) is accepted, value
        try:
            model.model_validate({"v": value})
        except ValidationError:
            assert not accepted, value


PYTHON_VALUES: dict[str, list[Any]] = {
    "date-time": [
        dt.datetime(2024, 1, 31, 9, tzinfo=dt.UTC),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-14))),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ],
    "date": [dt.date(2024, 2, 29), dt.date(1, 1, 1)],
    "uuid": [uuid.uuid4(), uuid.UUID(int=0)],
    "ipv4": [ipaddress.IPv4Address("10.0.0.1")],
    "ipv6": [ipaddress.IPv6Address("::ffff:1.2.3.4"), ipaddress.IPv6Address("2001:db8::1")],
}


@pytest.mark.parametrize("fmt", sorted(EDGES))
def test_what_the_typed_client_sends_the_gateway_accepts(fmt: str) -> None:
    """Arguments go as the models dump them: Python values, and every string the gateway
    accepts (so whatever a caller could send the gateway, it can send through the client)."""
    gateway = validator_class()({"type": "string", "format": fmt})
    model = _model(fmt)
    accepted = [v for v, ok in EDGES[fmt] if ok]
    for value in [*PYTHON_VALUES[fmt], *accepted]:
        sent = model.model_validate({"v": value}).model_dump(mode="json")["v"]
        assert gateway.is_valid(sent), (value, sent)


def test_a_default_is_checked_as_the_gateway_checks_it(tmp_path: Path) -> None:
    """An email default is a string like any other (the gateway does not assert email); a
    date-time default without an offset is refused as the gateway would refuse it."""
    connector = CONNECTOR.replace(
        "input: {type: object, properties: {}}",
        "input: {type: object, properties: {to: {type: string, format: email, "
        "default: root@localhost}, at: {type: string, format: date, default: 2024-02-30}}}",
    )
    root = make_project(
        tmp_path,
        {"gateway.yaml": GATEWAY, "types.yaml": TYPES, "connectors/probe.yaml": connector},
    )
    _result, _files, diags = api.generate(options(root))
    assert [(d.code, d.message) for d in diags] == [
        (
            "GEN203",
            "default \"2024-02-30\" does not match its schema: '2024-02-30' is not a 'date'",
        )
    ]


def test_a_string_default_where_the_models_do_not_type_the_format(tmp_path: Path) -> None:
    """A format on a string-or-integer is not typed in the models (str | int), so its string
    default is writable there: it was refused as "a date-time string as datetime"."""
    connector = CONNECTOR.replace(
        "input: {type: object, properties: {}}",
        "input: {type: object, properties: {at: {type: [string, integer], format: date-time, "
        "default: '2024-01-31T09:00:00Z'}}}",
    ).replace(
        "      path: /record\n      response",
        "      path: /record\n      query: {at: '{at}'}\n      response",
        1,
    )
    root = make_project(
        tmp_path,
        {"gateway.yaml": GATEWAY, "types.yaml": TYPES, "connectors/probe.yaml": connector},
    )
    _result, _files, diags = api.generate(options(root))
    assert diags == ()


# ------------------------------------------------------------------------------ end to end


class RecordUpstream(Upstream):
    """GET /record answers with `held`; POST /record answers with what it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, Any] = {}

    def handle(self, req: Received) -> Reply:
        if req.path == "/record" and req.method == "GET":
            return Reply(200, {"record": self.held})
        if req.path == "/record" and req.method == "POST":
            return Reply(200, {"record": req.json()["record"]})
        return Reply(404, {"error": "not found"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The probe package built and importable, its gateway served over streamable HTTP with
    the probe connector pointed at the stand-in; a key of a tenant connected to it."""
    root = make_project(
        tmp_path_factory.mktemp("formats"),
        {"gateway.yaml": GATEWAY, "types.yaml": TYPES, "connectors/probe.yaml": CONNECTOR},
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    sys.path.insert(0, str(out))
    try:
        catalog = importlib.import_module(f"{PKG}.catalog")
        server = importlib.import_module(f"{PKG}.runtime.server")
        app = importlib.import_module(f"{PKG}.runtime.app")
        with RecordUpstream() as upstream:
            runtime = server.GatewayRuntime.open(
                catalog.GATEWAY,
                str(root / "gateway.db"),
                environ={},
                base_urls={"probe": upstream.url},
                recorder_interval=0.05,
            )
            tenant = runtime.store.create_tenant("acme")
            runtime.store.connect(tenant.id, "probe", {"token": "t0ken-probe"})
            key = runtime.store.issue_key(tenant.id, scopes=["read", "write"]).token
            with UvicornThread(app.build_http_app(runtime, watch_interval=0.2)) as srv:
                yield SimpleNamespace(
                    out=out,
                    url=f"{srv.url}/mcp",
                    key=key,
                    upstream=upstream,
                    client=importlib.import_module(f"{PKG}.client"),
                    models=importlib.import_module(f"{PKG}.models.probe"),
                )
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PKG or n.startswith(f"{PKG}.")]:
            del sys.modules[name]


def _client(served: SimpleNamespace) -> Any:
    return served.client.GatewayClient.http(served.url, api_key=served.key)


# What upstreams hold, that the models typed more strictly than the gateway checks.
LENIENT = {
    "email": "root@localhost",
    "home": "HTTPS://Example.COM:443/a%7Eb",
    "host": "my_host.internal",
    "span": "P1M",
    "secret": "hunter2",
    "blob": "not base64!",
    "amount": 12.5,
    "epoch": 1706691600,
}


async def test_results_the_gateway_passes_parse_in_the_typed_client(
    served: SimpleNamespace,
) -> None:
    """An upstream's `root@localhost`, a URL in capitals, a hostname with an underscore, a
    duration in months and so on pass the gateway, and the typed client reads them as they
    were (it raised invalid_response on the address)."""
    served.upstream.held = {
        **LENIENT,
        "when": "2024-01-31T09:00:00.5+05:30",
        "day": "2024-02-29",
        "at": "09:00:00Z",
        "uid": "123E4567-E89B-12D3-A456-426614174000",
        "ip4": "127.0.0.1",
        "ip6": "::1",
    }
    async with _client(served) as gw:
        got = await gw.probe_get_record()
    record = got.record
    assert record.model_dump(mode="json", include=set(LENIENT)) == LENIENT
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert record.when == dt.datetime(2024, 1, 31, 9, 0, 0, 500000, tzinfo=tz)
    # a time is a string: the models' time took one without an offset, which the gateway refused
    assert (record.day, record.at) == (dt.date(2024, 2, 29), "09:00:00Z")
    assert record.uid == uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
    assert (str(record.ip4), str(record.ip6)) == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("when", "2024-01-31T09:00:00"),
        ("when", "2024-01-31 09:00:00Z"),
        ("day", "2024-02-30"),
        ("uid", "123e4567e89b12d3a456426614174000"),
        ("ip6", "fe80::1%eth0"),
    ],
)
async def test_a_typed_format_the_upstream_breaks_is_its_invalid_response(
    served: SimpleNamespace, field: str, value: str
) -> None:
    """A date-time without an offset (which time zone?) and the like are refused by the
    gateway as the upstream's invalid response, for every client, naming where; the typed
    client used to get the gateway's result and fail on it alone (invalid_response)."""
    served.upstream.held = {field: value}
    async with _client(served) as gw:
        with pytest.raises(served.client.GatewayClientError) as caught:
            await gw.probe_get_record()
        assert caught.value.code == "upstream_invalid_response"
        assert caught.value.details["path"] == f"record/{field}"
        assert f"at record/{field}, is not a valid " in caught.value.message
        assert "(such as " in caught.value.message
        with pytest.raises(served.client.GatewayClientError) as untyped:
            await gw.call_tool("probe_get_record", {})
        assert untyped.value.code == "upstream_invalid_response"


async def test_arguments_reach_the_upstream_as_the_caller_wrote_them(
    served: SimpleNamespace,
) -> None:
    """What the typed client accepts, the gateway accepts, and the upstream receives it as
    written: the password itself (SecretStr sent "**********"), the address as given (EmailStr
    refused it), the duration in months (timedelta sent P30D)."""
    m = served.models
    when = dt.datetime(2024, 1, 31, 9, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    record = m.ProbePutRecordInputRecord(
        **LENIENT,
        when=when,
        day=dt.date(2024, 2, 29),
        at="09:30",
        uid=uuid.UUID(int=1),
        ip4=ipaddress.IPv4Address("10.0.0.1"),
        ip6="2001:DB8::1",
    )
    async with _client(served) as gw:
        got = await gw.probe_put_record(record=record)
    sent = served.upstream.requests("POST", "/record")[-1].json()["record"]
    assert {k: sent[k] for k in LENIENT} == LENIENT
    assert (sent["when"], sent["day"], sent["at"]) == (
        "2024-01-31T09:00:00-03:00",
        "2024-02-29",
        "09:30",
    )
    assert (sent["uid"], sent["ip4"], sent["ip6"]) == (
        str(uuid.UUID(int=1)),
        "10.0.0.1",
        "2001:db8::1",
    )
    assert got.record.when == when and got.record.secret == "hunter2"


async def test_the_gateway_refuses_an_argument_the_typed_client_cannot_send(
    served: SimpleNamespace,
) -> None:
    """A date-time argument without an offset is invalid_arguments from the gateway, for any
    client, before the upstream is called (the typed client refuses it before sending). The
    message says what is wanted, with an example, as the README says (it said only
    "'2024-01-31T09:00:00' is not a 'date-time'")."""
    before = len(served.upstream.requests("POST", "/record"))
    async with _client(served) as gw:
        with pytest.raises(served.client.GatewayClientError) as caught:
            await gw.call_tool("probe_put_record", {"record": {"when": "2024-01-31T09:00:00"}})
        assert caught.value.code == "invalid_arguments"
        wanted = (
            '"2024-01-31T09:00:00" is not a "date-time": write an RFC 3339 date-time with '
            "its offset, such as 2024-01-31T09:00:00Z"
        )
        assert caught.value.details["errors"] == [{"path": "/record/when", "message": wanted}]
        assert wanted in caught.value.message
        with pytest.raises(served.client.GatewayClientError) as typed:
            await gw.probe_put_record(record={"when": "2024-01-31T09:00:00"})
        assert typed.value.code == "invalid_arguments"
        await gw.call_tool("probe_put_record", {"record": {"email": "not an address"}})
    assert len(served.upstream.requests("POST", "/record")) == before + 1


def test_the_probe_models_type_check(served: SimpleNamespace) -> None:
    models = served.out / PKG / "models" / "probe.py"
    methods = served.out / PKG / "client_methods" / "probe.py"
    proc = mypy_strict(models, methods, cwd=served.out)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "EmailStr" not in models.read_text(encoding="utf-8")
