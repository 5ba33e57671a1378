"""Input schema defaults are applied by the gateway at every depth, before templating.

A default on a property of a nested object or of a list's items was shown to the model (tools/
list, the typed client's field defaults, TOOLS.md) yet never sent: the upstream applied its
own. Zendesk makes a comment public unless told otherwise, so a note whose schema said
`public: {default: false}` was posted for the customer to read. These tests call through the
MCP SDK client and the gateway to a help desk stand-in that behaves as Zendesk does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from generator.runtime import catalog as c
from generator.runtime.crypto import CredentialCipher
from generator.runtime.executor import ConnectorExecutor
from generator.runtime.store import Store, make_engine
from tests.runtime.support import catalog_with
from tests.runtime.upstreams import Received, Reply, Upstream

TOKEN = "helpdesk-api-token-123"

HELPDESK = """\
version: 1
kind: connector
name: helpdesk
title: Helpdesk
description: A Zendesk-like help desk. Tickets and their comments.
base_url: https://helpdesk.example.com/api/v2
auth:
  type: bearer
  token_field: token
  fields: [{name: token, title: API token}]
errors: {message_field: error}
capabilities:
  - name: create_ticket
    title: Create a ticket
    description: Create a ticket with its first comment, line items and labels.
    scope: write
    annotations: {destructive: false, open_world: true}
    input:
      type: object
      additionalProperties: false
      required: [subject, comment]
      $defs:
        Line:
          type: object
          required: [sku]
          properties:
            sku: {type: string}
            quantity: {type: integer, minimum: 1, default: 1}
      properties:
        subject: {type: string}
        type: {type: string, enum: [question, problem], default: question}
        comment:
          type: object
          additionalProperties: false
          required: [body]
          properties:
            body: {type: string}
            public: {type: boolean, default: false, description: "Internal unless true."}
            via:
              type: object
              properties:
                channel: {type: string, default: api}
        lines: {type: array, items: {$ref: "#/$defs/Line"}}
        labels:
          type: object
          additionalProperties:
            allOf:
              - type: object
                properties: {color: {type: string, default: grey}}
        routing:
          description: Either a group or an agent; which one decides what applies.
          oneOf:
            - type: object
              required: [group]
              properties: {group: {type: string}, notify: {type: boolean, default: true}}
            - {type: object, required: [agent], properties: {agent: {type: integer}}}
    output:
      type: object
      required: [id]
      properties: {id: {type: integer}}
    http:
      method: POST
      path: /tickets.json
      body:
        ticket:
          subject: "{subject}"
          type: "{type}"
          comment: "{comment}"
          lines: "{lines}"
          labels: "{labels}"
          routing: "{routing}"
      response: {select: ticket}
"""


class HelpdeskUpstream(Upstream):
    """Zendesk's ticket creation as far as it matters here: a comment whose `public` is not
    given is public, and the ticket is answered with what the upstream made of it."""

    def __init__(self) -> None:
        super().__init__()
        self.tickets: list[dict[str, Any]] = []

    def handle(self, req: Received) -> Reply:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"error": "Couldn't authenticate you"})
        if req.method != "POST" or req.path != "/api/v2/tickets.json":
            return Reply(404, {"error": "InvalidEndpoint"})
        ticket = req.json()["ticket"]
        comment = ticket["comment"]
        made = {"id": len(self.tickets) + 1, **ticket}
        made["comment"] = {**comment, "public": comment.get("public", True)}  # Zendesk's own
        self.tickets.append(made)
        return Reply(201, {"ticket": {"id": made["id"]}})


@pytest.fixture(scope="module")
def upstream() -> Iterator[HelpdeskUpstream]:
    with HelpdeskUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> c.GatewaySpec:
    root = tmp_path_factory.mktemp("defaults")
    manifest = root / "helpdesk.yaml"
    manifest.write_text(HELPDESK, encoding="utf-8")
    return catalog_with(root / "project", manifest)


@asynccontextmanager
async def gateway_client(
    tmp_path: Path, gateway: c.GatewaySpec, upstream: HelpdeskUpstream, cipher: CredentialCipher
) -> AsyncIterator[Any]:
    """An MCP SDK client of a gateway whose tenant has the help desk connected."""
    from mcp import Client

    from generator.runtime.server import GatewayRuntime

    upstream.reset()
    upstream.tickets.clear()
    store = Store(make_engine(str(tmp_path / "gateway.db")), gateway, cipher)
    store.migrate()
    executor = ConnectorExecutor(gateway, base_urls={"helpdesk": upstream.url + "/api/v2"})
    rt = GatewayRuntime(gateway, store, executor=executor, recorder_interval=0.05)
    try:
        tenant = store.create_tenant("acme").id
        store.connect(tenant, "helpdesk", {"token": TOKEN})
        store.disconnect(tenant, "helpdesk")
        store.connect(tenant, "helpdesk", {"token": TOKEN})
        key = store.issue_key(tenant).token
        async with Client(rt.build_server(api_key=key)) as session:
            yield session
    finally:
        await rt.aclose()
        store.dispose()


@pytest.fixture
def opened(
    tmp_path: Path, catalog: c.GatewaySpec, upstream: HelpdeskUpstream, cipher: CredentialCipher
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """`opened()` opens `gateway_client` on the catalog, `opened(gateway)` on another."""
    return lambda gateway=catalog: gateway_client(tmp_path, gateway, upstream, cipher)


async def create(opened: Any, upstream: HelpdeskUpstream, **args: Any) -> dict[str, Any]:
    """The ticket body the upstream received for one create_ticket call with `args`."""
    async with opened() as client:
        result = await client.call_tool("helpdesk_create_ticket", args)
    assert not result.is_error, result.content
    (received,) = upstream.requests("POST", "/tickets.json")
    ticket: dict[str, Any] = received.json()["ticket"]
    return ticket


async def test_a_nested_default_is_sent_so_the_upstream_does_not_apply_its_own(
    opened: Any, upstream: HelpdeskUpstream
) -> None:
    """The comment's `public: false` default reaches the upstream: the note stays internal
    (Zendesk, left to itself, made it public), and the defaults of an object inside the
    comment the caller gave are filled in too; the top-level default still is."""
    sent = await create(opened, upstream, subject="Printer", comment={"body": "on fire", "via": {}})
    assert sent["comment"] == {"body": "on fire", "public": False, "via": {"channel": "api"}}
    assert sent["type"] == "question"
    assert upstream.tickets[-1]["comment"]["public"] is False


async def test_what_the_caller_gives_is_kept_and_absent_objects_stay_absent(
    opened: Any, upstream: HelpdeskUpstream
) -> None:
    """A value the caller gives wins over the default, and an object the caller leaves out
    is not made up to hold defaults (`via`, `lines`, `labels`)."""
    sent = await create(
        opened, upstream, subject="Printer", type="problem", comment={"body": "hi", "public": True}
    )
    assert sent == {
        "subject": "Printer",
        "type": "problem",
        "comment": {"body": "hi", "public": True},
    }
    assert upstream.tickets[-1]["comment"]["public"] is True


async def test_defaults_of_list_items_and_map_values_follow_refs_and_all_of(
    opened: Any, upstream: HelpdeskUpstream
) -> None:
    """Each line item gets `quantity` from its `$defs` entry (through `$ref`), each label's
    value its `color` from an allOf branch."""
    sent = await create(
        opened,
        upstream,
        subject="Order",
        comment={"body": "b", "public": True},
        lines=[{"sku": "A"}, {"sku": "B", "quantity": 3}],
        labels={"vip": {}, "eu": {"color": "blue"}},
    )
    assert sent["lines"] == [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 3}]
    assert sent["labels"] == {"vip": {"color": "grey"}, "eu": {"color": "blue"}}


async def test_a_default_inside_one_of_is_left_to_the_upstream(
    opened: Any, upstream: HelpdeskUpstream
) -> None:
    """Which oneOf branch holds depends on the value: the gateway fills in none of their
    defaults (a default of one branch could make a value match another, or none)."""
    sent = await create(
        opened, upstream, subject="S", comment={"body": "b", "public": True}, routing={"group": "g"}
    )
    assert sent["routing"] == {"group": "g"}


async def test_a_native_tools_default_is_the_schemas_not_its_handlers(
    opened: Any, catalog: c.GatewaySpec
) -> None:
    """Native and memory tools get the same arguments a capability does: a default the
    manifest declares (an event history of 2 by default here, where the handler's own
    fallback is 50) is what the handler runs with."""
    name = "fastn_get_event_history"
    spec = catalog.tools[name]
    schema = dict(spec.input_schema)
    schema["properties"] = {
        **schema["properties"],
        "limit": {**schema["properties"]["limit"], "default": 2},
    }
    gateway = dataclasses.replace(
        catalog,
        tools={**catalog.tools, name: dataclasses.replace(spec, input_schema=schema)},
    )
    async with opened(gateway) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert listed[name].input_schema["properties"]["limit"]["default"] == 2
        every = await client.call_tool(name, {"limit": 50})
        assert len(every.structured_content["events"]) >= 3  # connect, disconnect, connect
        result = await client.call_tool(name, {})
        assert not result.is_error, result.content
        assert len(result.structured_content["events"]) == 2
        assert result.structured_content["next_cursor"] is not None
