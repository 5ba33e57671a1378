"""A top-level argument whose schema takes null, through the typed client.

Its method parameter defaults to `NOT_GIVEN` (exported by the generated `client` module): left
out, nothing is sent and the gateway applies its own default, if any; None is sent as null.
Every other optional parameter defaults to None, which is not sent. Checked on a package built
from a YAML-only connector, served over streamable HTTP on 127.0.0.1 with the connector pointed
at a loopback stand-in, driven by its generated client; callers' code is type-checked against
that package with mypy and pyright (strict).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import make_project, mypy_strict, options, pyright_strict

from generator import api
from tests.runtime.support import UvicornThread
from tests.runtime.upstreams import Received, Reply, Upstream

PKG = "nullable_gw"
GATEWAY = textwrap.dedent(f"""\
    version: 1
    kind: gateway
    package: {{name: nullable-gw, import_name: {PKG}, version: 0.1.0}}
    server: {{name: nullable}}
    quotas: {{default_plan: free, plans: {{free: {{period: day, calls: 1000}}}}}}
    """)
# assignee_id and due take null (due has a default); priority and reason do not, and reason is
# required; note takes null and is required.
CONNECTOR = textwrap.dedent("""\
    version: 1
    kind: connector
    name: desk
    title: Desk
    description: Tickets of a help desk.
    base_url: https://desk.example.com
    auth: {type: bearer, token_field: token, fields: [{name: token, title: Token}]}
    capabilities:
      - name: update_ticket
        description: Change a ticket's assignee, due date or priority.
        scope: write
        annotations: {idempotent: true, open_world: true}
        input:
          type: object
          additionalProperties: false
          required: [ticket_id, note]
          properties:
            ticket_id: {type: integer, minimum: 1}
            note: {type: [string, "null"], description: "A note; null for none."}
            assignee_id: {type: [integer, "null"], description: "New assignee; null unassigns."}
            due: {type: [string, "null"], default: "next week"}
            priority: {type: string, enum: [low, high], default: low}
        output:
          type: object
          required: [id]
          properties:
            id: {type: integer}
        http:
          method: PUT
          path: /tickets/{ticket_id}
          body:
            ticket:
              note: "{note}"
              assignee_id: "{assignee_id}"
              due: "{due}"
              priority: "{priority}"
    """)


class DeskUpstream(Upstream):
    """PUT /tickets/<id> answers with the ticket's id."""

    def handle(self, req: Received) -> Reply:
        if req.method == "PUT" and req.path.startswith("/tickets/"):
            return Reply(200, {"id": int(req.path.rsplit("/", 1)[1])})
        return Reply(404, {"error": "not found"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = make_project(
        tmp_path_factory.mktemp("nullable"),
        {"gateway.yaml": GATEWAY, "connectors/desk.yaml": CONNECTOR},
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    sys.path.insert(0, str(out))
    try:
        catalog = importlib.import_module(f"{PKG}.catalog")
        server = importlib.import_module(f"{PKG}.runtime.server")
        app = importlib.import_module(f"{PKG}.runtime.app")
        with DeskUpstream() as upstream:
            runtime = server.GatewayRuntime.open(
                catalog.GATEWAY,
                str(root / "gateway.db"),
                environ={},
                base_urls={"desk": upstream.url},
                recorder_interval=0.05,
            )
            tenant = runtime.store.create_tenant("acme")
            runtime.store.connect(tenant.id, "desk", {"token": "t0ken-desk"})
            key = runtime.store.issue_key(tenant.id, scopes=["read", "write"]).token
            with UvicornThread(app.build_http_app(runtime, watch_interval=0.2)) as srv:
                yield SimpleNamespace(
                    out=out,
                    url=f"{srv.url}/mcp",
                    key=key,
                    upstream=upstream,
                    client=importlib.import_module(f"{PKG}.client"),
                )
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PKG or n.startswith(f"{PKG}.")]:
            del sys.modules[name]


async def _sent(served: SimpleNamespace, **arguments: Any) -> dict[str, Any]:
    """The ticket the upstream received for one call of the typed method."""
    before = len(served.upstream.requests("PUT"))
    async with served.client.GatewayClient.http(served.url, api_key=served.key) as gw:
        result = await gw.desk_update_ticket(**arguments)
    assert result.id == arguments["ticket_id"]
    received = served.upstream.requests("PUT")
    assert len(received) == before + 1
    ticket: dict[str, Any] = received[-1].json()["ticket"]
    return ticket


async def test_none_for_an_argument_that_takes_null_is_sent_as_null(
    served: SimpleNamespace,
) -> None:
    """`assignee_id=None` (null unassigns) reached the upstream as nothing: the client dropped
    every optional None at the top level, while a raw MCP call's null got through."""
    sent = await _sent(served, ticket_id=3, note="n", assignee_id=None)
    assert sent == {"note": "n", "assignee_id": None, "due": "next week", "priority": "low"}
    sent = await _sent(served, ticket_id=3, note="n", assignee_id=7, due=None)
    assert sent == {"note": "n", "assignee_id": 7, "due": None, "priority": "low"}


async def test_left_out_nothing_is_sent_and_none_elsewhere_is_not_sent(
    served: SimpleNamespace,
) -> None:
    not_given = served.client.NOT_GIVEN
    # left out, or NOT_GIVEN written: not sent (due's default is the gateway's to apply)
    sent = await _sent(served, ticket_id=4, note="n")
    assert sent == {"note": "n", "due": "next week", "priority": "low"}
    sent = await _sent(served, ticket_id=4, note="n", assignee_id=not_given, due=not_given)
    assert sent == {"note": "n", "due": "next week", "priority": "low"}
    # None for an argument whose schema takes no null still means "not sent"
    sent = await _sent(served, ticket_id=4, note="n", priority=None)
    assert sent == {"note": "n", "due": "next week", "priority": "low"}
    # a required argument that takes null is sent as null
    sent = await _sent(served, ticket_id=4, note=None, priority="high")
    assert sent == {"note": None, "due": "next week", "priority": "high"}


def test_signature_and_docstring(served: SimpleNamespace) -> None:
    method = served.client.GatewayClient.desk_update_ticket
    params = inspect.signature(method).parameters
    not_given = served.client.NOT_GIVEN
    assert isinstance(not_given, served.client.NotGiven)
    assert not not_given and repr(not_given) == "NOT_GIVEN"
    assert {n: p.default for n, p in params.items() if n != "self"} == {
        "ticket_id": inspect.Parameter.empty,
        "note": inspect.Parameter.empty,
        "assignee_id": not_given,
        "due": not_given,
        "priority": None,
    }
    assert params["assignee_id"].annotation == "int | None | NotGiven"
    assert params["priority"].annotation == "Literal['low', 'high'] | None"
    doc = " ".join((inspect.getdoc(method) or "").split())
    assert (
        "assignee_id: New assignee; null unassigns. None sends null; left out (NOT_GIVEN), "
        "it is not sent." in doc
    )
    assert (
        'due: None sends null; left out (NOT_GIVEN), it is not sent. Default: "next week".' in doc
    )
    assert 'priority: Default: "low".' in doc


USER_CODE_OK = """\
from nullable_gw.client import NOT_GIVEN, GatewayClient, NotGiven


async def main(gw: GatewayClient, who: int | None | NotGiven) -> int:
    a = await gw.desk_update_ticket(ticket_id=1, note=None, assignee_id=None)
    b = await gw.desk_update_ticket(ticket_id=1, note="n", assignee_id=7, due=None)
    c = await gw.desk_update_ticket(ticket_id=1, note="n")
    d = await gw.desk_update_ticket(ticket_id=1, note="n", assignee_id=NOT_GIVEN)
    e = await gw.desk_update_ticket(ticket_id=1, note="n", assignee_id=who, priority=None)
    return a.id + b.id + c.id + d.id + e.id
"""

USER_CODE_BAD = """\
from nullable_gw.client import NOT_GIVEN, GatewayClient, NotGiven


async def main(gw: GatewayClient) -> None:
    await gw.desk_update_ticket(ticket_id=1, note="n", assignee_id="7")  # not an int
    await gw.desk_update_ticket(ticket_id=1, note="n", priority=NOT_GIVEN)  # takes no null
    await gw.desk_update_ticket(ticket_id=1, note="n", assignee_id=NotGiven)  # the class
    await gw.desk_update_ticket(ticket_id=1, note=NOT_GIVEN)  # required
"""


def test_mypy_and_pyright_check_callers_code(served: SimpleNamespace, tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok.py", tmp_path / "bad.py"
    ok.write_text(USER_CODE_OK, encoding="utf-8")
    bad.write_text(USER_CODE_BAD, encoding="utf-8")
    passed = mypy_strict(ok, cwd=served.out)
    assert passed.returncode == 0, passed.stdout[-5000:]
    refused = mypy_strict(bad, cwd=served.out)
    lines = [x for x in refused.stdout.splitlines() if "bad.py" in x and "error" in x]
    assert {int(x.split(":")[1]) for x in lines} == {5, 6, 7, 8}, refused.stdout
    found = pyright_strict(ok, bad, site=served.out, project=tmp_path)
    assert [d for d in found if d.file == ok.resolve()] == []
    reported = {(d.line, d.rule) for d in found if d.file == bad.resolve()}
    assert reported == {(n, "reportArgumentType") for n in (5, 6, 7, 8)}, found


def test_a_model_class_named_not_given_is_refused(tmp_path: Path) -> None:
    """The client methods import `NotGiven` from the runtime beside the models' classes: an
    `allOf` property named not_given makes a class of that name, which one would hide."""
    priority = "        priority: {type: string, enum: [low, high], default: low}\n"
    connector = CONNECTOR.replace(
        priority,
        priority
        + "        not_given: {allOf: [{type: object, properties: {x: {type: string}}}]}\n",
    ).replace('priority: "{priority}"', 'priority: "{priority}"\n          other: "{not_given}"')
    root = make_project(tmp_path, {"gateway.yaml": GATEWAY, "connectors/desk.yaml": connector})
    result = api.build(options(root))
    assert [(d.code, d.span.line if d.span else None) for d in result.diagnostics] == [
        ("GEN208", 9)  # the tool
    ], result.diagnostics
    assert "class NotGiven" in result.diagnostics[0].message
    # without an argument that takes null, the class is no trouble
    connector = connector.replace('{type: [integer, "null"]', "{type: integer").replace(
        'due: {type: [string, "null"]', "due: {type: string"
    )
    (root / "manifests" / "connectors" / "desk.yaml").write_text(connector, encoding="utf-8")
    assert api.build(options(root)).ok
