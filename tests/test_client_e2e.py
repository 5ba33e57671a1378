"""The generated typed client against the generated server, end to end.

The committed package in generated/ (rebuild with `gen build`) is served over streamable HTTP
by uvicorn on 127.0.0.1, with a real SQLite file, the connectors pointed at the loopback
stand-ins of tests/runtime/upstreams.py; the client is `fastn_gateway.client.GatewayClient`.
Every tool family is driven through its typed methods: native, connector, personalization.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from helpers import ROOT
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from generator import api
from tests.runtime.support import UvicornThread
from tests.runtime.upstreams import Fault, StandIns

GENERATED = ROOT / "generated"


@dataclass
class Gateway:
    url: str  # the MCP endpoint
    db: Path
    environ: dict[str, str]  # what points a gateway process at the stand-ins
    rw: str  # tenant acme, read+write, bound to user "ash"; slack connected
    read: str  # tenant acme, read only
    bravo: str  # tenant bravo (nothing connected), read+write, user "bo"
    upstreams: StandIns


@pytest.fixture(scope="module")
def gw(generated_on_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    from fastn_gateway.catalog import GATEWAY
    from fastn_gateway.runtime.app import build_http_app
    from fastn_gateway.runtime.server import GatewayRuntime

    db = tmp_path_factory.mktemp("gateway") / "gateway.db"
    with StandIns() as ups:
        environ = ups.environ("fastn_gateway")
        runtime = GatewayRuntime.open(GATEWAY, str(db), environ=environ, recorder_interval=0.05)
        store = runtime.store
        acme = store.create_tenant("acme")
        bravo = store.create_tenant("bravo")
        store.register_user(acme.id, "ash")
        store.register_user(bravo.id, "bo")
        store.connect(acme.id, "slack", ups.credentials("A")["slack"])
        keys = {
            "rw": store.issue_key(acme.id, scopes=["read", "write"], user="ash").token,
            "read": store.issue_key(acme.id, scopes=["read"]).token,
            "bravo": store.issue_key(bravo.id, scopes=["read", "write"], user="bo").token,
        }
        app = build_http_app(runtime, watch_interval=0.2)
        with UvicornThread(app) as srv:
            yield Gateway(url=f"{srv.url}/mcp", db=db, environ=environ, upstreams=ups, **keys)


def client(gw: Gateway, key: str | None = None, **kw: Any) -> Any:
    from fastn_gateway.client import GatewayClient

    return GatewayClient.http(gw.url, api_key=gw.rw if key is None else key, **kw)


# ---------------------------------------------------------------------------- tool families


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_native_tools(gw: Gateway, mode: str) -> None:
    from fastn_gateway.models import native as m

    async with client(gw, mode=mode) as c:
        usage = await c.fastn_get_usage_summary()
        assert isinstance(usage, m.FastnGetUsageSummaryOutput)
        assert usage.plan == "starter" and usage.limit == 10000
        listed = await c.fastn_list_integrations(status="active")
        assert [(i.connector, i.state) for i in listed.integrations] == [("slack", "active")]
        assert listed.integrations[0].tool_count == 3
        name = f"digest-{mode}"
        flow = await c.fastn_create_flow(
            name=name,
            trigger=m.FastnCreateFlowInputTrigger(type="schedule", cron="0 9 * * 1"),
            steps=[
                m.FastnCreateFlowInputStep(
                    tool="slack_send_message", arguments={"channel": "general", "text": "hi"}
                )
            ],
        )
        again = await c.fastn_create_flow(
            name=name,
            trigger=m.FastnCreateFlowInputTrigger(type="manual"),
            steps=[m.FastnCreateFlowInputStep(tool="fastn_get_usage_summary")],
        )
        assert (flow.version, again.version) == (1, 2) and flow.flow_id == again.flow_id
        assert flow.created_at.tzinfo is not None
        since = datetime.now(UTC) - timedelta(minutes=10)
        history = await c.fastn_get_event_history(type="flow_created", since=since, limit=5)
        assert isinstance(history, m.FastnGetEventHistoryOutput)
        assert history.events and all(e.type == "flow_created" for e in history.events)


async def test_connector_tools(gw: Gateway) -> None:
    from fastn_gateway.models import slack as m

    async with client(gw) as c:
        sent = await c.slack_send_message(channel="general", text="Deployed *v2*")
        assert isinstance(sent, m.SlackSendMessageOutput)
        assert sent.channel == "CTA000" and sent.message is not None
        assert sent.message.text == "Deployed *v2*"
        posted = gw.upstreams.slack.requests("POST", "chat.postMessage")[-1]
        assert posted.headers["authorization"] == "Bearer xoxb-tenant-a-secret-1111"
        assert posted.json()["text"] == "Deployed *v2*"
        # pagination: cursor in, next_cursor out
        first = await c.slack_list_channels(limit=2)
        assert [ch.id for ch in first.channels] == ["CTA000", "CTA001"]
        assert first.next_cursor
        second = await c.slack_list_channels(limit=2, cursor=first.next_cursor)
        assert [ch.id for ch in second.channels] == ["CTA002", "CTA003"]
        history = await c.slack_get_channel_history(channel="CTA000")
        assert history.messages[0].text == "Deployed *v2*"


async def test_connector_errors_carry_the_envelope(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClientError

    async with client(gw) as c:
        gw.upstreams.slack.fail_next(
            "POST",
            "chat.postMessage",
            Fault(
                status=429,
                body={"ok": False, "error": "ratelimited"},
                headers={"Retry-After": "30"},
            ),
        )
        with pytest.raises(GatewayClientError) as limited:
            await c.slack_send_message(channel="general", text="again")
        with pytest.raises(GatewayClientError) as missing:
            await c.slack_send_message(channel="no-such-channel", text="x")
    assert limited.value.code == "rate_limited"
    assert limited.value.retryable is True and limited.value.retry_after == 30
    assert missing.value.code == "not_found" and missing.value.retryable is False
    assert missing.value.details.get("connector", "slack") == "slack"
    assert "xoxb" not in json.dumps(missing.value.envelope())


async def test_personalization_tools(gw: Gateway) -> None:
    from fastn_gateway.models import personalization as m

    async with client(gw) as c:
        stored = await c.update_memory(
            observations=[
                m.UpdateMemoryInputObservation(
                    text="Ash takes meetings after 2pm on weekdays", topic="meeting_time"
                ),
                m.UpdateMemoryInputObservation(
                    text="Ash prefers oat milk in coffee", topic="coffee"
                ),
            ]
        )
        assert isinstance(stored, m.UpdateMemoryOutput) and len(stored.stored) == 2
        chunks = await c.retrieve_relevant_chunks(query="when can I schedule a meeting?", top_k=1)
        assert [ch.text for ch in chunks.chunks] == ["Ash takes meetings after 2pm on weekdays"]
        answer = await c.search_or_ask(question="What milk does Ash take in coffee?")
        assert answer.found and "oat milk" in answer.answer
        profile = await c.read_memory_profile("ash")
        assert profile["items"]["active"] >= 2
    async with client(gw, gw.bravo) as c:  # another tenant's user remembers nothing of it
        other = await c.search_or_ask(question="What milk does Ash take in coffee?")
    assert other.found is False and other.citations == []


async def test_none_in_a_nested_model_is_left_out(gw: Gateway) -> None:
    """The models type an optional field `X | None` whether or not its schema takes null, and
    an explicit None in a nested model was sent as null: the gateway refused
    `/observations/0/topic` (a string). It is left out, as a top-level None is."""
    from fastn_gateway.models import native, personalization

    note = personalization.UpdateMemoryInputObservation(
        text="Ash reads the news at 7", topic=None, source=None, tags=None
    )
    async with client(gw) as c:
        stored = await c.update_memory(observations=[note])
        flow = await c.fastn_create_flow(
            name="nested-none",
            trigger=native.FastnCreateFlowInputTrigger(type="manual", cron=None),
            steps=[native.FastnCreateFlowInputStep(tool="fastn_get_usage_summary", arguments=None)],
        )
    assert len(stored.stored) == 1
    assert flow.version == 1


async def test_a_host_key_names_users_whose_ids_are_not_ascii(gw: Gateway) -> None:
    """A user id may be any text (/register took `日本`), and the typed client names it over
    HTTP: it failed with connection_failed (UnicodeEncodeError), and the gateway read raw
    UTF-8 bytes in X-Gateway-User as Latin-1, so no id outside Latin-1 could be named. Bytes
    that are not UTF-8 still read as Latin-1 (`ü` as 0xFC), as before."""
    from fastn_gateway.catalog import GATEWAY
    from fastn_gateway.models import personalization as m
    from fastn_gateway.runtime.store import open_store

    store = open_store(GATEWAY, str(gw.db), environ=gw.environ)
    acme = store.require_tenant("acme")
    store.register_user(acme.id, "日本")
    store.register_user(acme.id, "ü")
    host = store.issue_key(acme.id, scopes=["read", "write"], host_app=True).token
    store.dispose()
    note = m.UpdateMemoryInputObservation(text="Prefers tea", topic="drink")
    async with client(gw, host, user="日本") as c:
        assert len((await c.update_memory(observations=[note])).stored) == 1
        assert (await c.search_or_ask(question="What does the user drink?")).found
    async with client(gw, host, user="ü") as c:  # another user: nothing of it
        assert not (await c.search_or_ask(question="What does the user drink?")).found
    latin1 = {"Authorization": f"Bearer {host}", "X-Gateway-User": "ü".encode("latin-1")}
    async with (
        httpx2.AsyncClient(headers=latin1) as h,
        Client(streamable_http_client(gw.url, http_client=h)) as raw,
    ):
        result = await raw.call_tool("search_or_ask", {"question": "What does the user drink?"})
        assert not result.is_error and result.structured_content["found"] is False


# ---------------------------------------------------------------------------- errors


async def _raw_error(gw: Gateway, key: str, tool: str, args: dict[str, Any]) -> MCPError:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
        Client(streamable_http_client(gw.url, http_client=http)) as raw,
    ):
        with pytest.raises(MCPError) as exc:
            await raw.call_tool(tool, args)
    return exc.value


@pytest.mark.parametrize(
    ("key", "tool"),
    [
        ("bravo", "slack_send_message"),  # a connector the tenant did not connect
        ("read", "slack_send_message"),  # a write tool behind a read-only key
        ("rw", "shopify_list_orders"),  # another connector, not connected
    ],
)
async def test_invisible_tools_raise_the_servers_unknown_tool_error(
    gw: Gateway, key: str, tool: str
) -> None:
    from fastn_gateway.client import GatewayClient, GatewayClientError

    assert tool in GatewayClient.TOOL_METHODS  # the method exists for every catalog tool
    args = {"channel": "general", "text": "hi"} if tool.startswith("slack") else {}
    async with client(gw, getattr(gw, key)) as c:
        with pytest.raises(GatewayClientError) as typed:
            await getattr(c, tool)(**args)
        with pytest.raises(GatewayClientError) as unknown:
            await c.call_tool("no_such_tool", {})
    raw = await _raw_error(gw, getattr(gw, key), tool, args)
    assert typed.value.envelope() == raw.data
    assert typed.value.code == "unknown_tool" and typed.value.message == f"Unknown tool: {tool}"
    assert unknown.value.code == "unknown_tool"
    assert set(unknown.value.envelope()["error"]) == set(raw.data["error"])


async def test_arguments_are_checked_by_the_input_model_before_sending(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClientError

    before = len(gw.upstreams.slack.requests())
    async with client(gw) as c:
        with pytest.raises(GatewayClientError) as exc:
            await c.slack_send_message(channel="", text="x")
    assert exc.value.code == "invalid_arguments" and exc.value.retryable is False
    assert [e["path"] for e in exc.value.details["errors"]] == ["/channel"]
    assert len(gw.upstreams.slack.requests()) == before


async def test_none_is_not_sent_and_the_gateway_applies_its_defaults(gw: Gateway) -> None:
    async with client(gw) as c:
        await c.slack_list_channels(types=None)
        await c.slack_list_channels(limit=3)
    sent = gw.upstreams.slack.requests("GET", "conversations.list")
    assert sent[-2].args == {"limit": "100", "types": "public_channel", "exclude_archived": "true"}
    assert sent[-1].args["limit"] == "3"


async def test_a_value_equal_to_the_clients_default_is_sent(tmp_path: Path) -> None:
    """A gateway built later with another default (slack_list_channels' limit 20, where this
    client's models say 100): `limit=100`, written by the caller, reached it as nothing, and
    the upstream was asked for 20. Now every value given is sent; one left out is the
    gateway's to fill."""
    import dataclasses

    from fastn_gateway.catalog import GATEWAY
    from fastn_gateway.client import GatewayClient
    from fastn_gateway.runtime.app import build_http_app
    from fastn_gateway.runtime.server import GatewayRuntime

    tool = GATEWAY.tools["slack_list_channels"]
    schema = dict(tool.input_schema)
    props = dict(schema["properties"])
    assert props["limit"]["default"] == 100
    props["limit"] = {**props["limit"], "default": 20}
    later = dataclasses.replace(
        GATEWAY,
        tools={
            **GATEWAY.tools,
            tool.name: dataclasses.replace(tool, input_schema={**schema, "properties": props}),
        },
    )
    with StandIns() as ups:
        environ = {k: v for k, v in ups.environ("fastn_gateway").items() if k.endswith("_SLACK")}
        runtime = GatewayRuntime.open(later, str(tmp_path / "gateway.db"), environ=environ)
        tenant = runtime.store.create_tenant("acme")
        runtime.store.connect(tenant.id, "slack", ups.credentials("A")["slack"])
        key = runtime.store.issue_key(tenant.id, scopes=["read"]).token
        with UvicornThread(build_http_app(runtime)) as srv:
            async with GatewayClient.http(f"{srv.url}/mcp", api_key=key) as c:
                await c.slack_list_channels(limit=100)
                await c.slack_list_channels()
        sent = ups.slack.requests("GET", "conversations.list")
    assert [r.args["limit"] for r in sent] == ["100", "20"]


async def test_bad_key_and_unreachable_server(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClient, GatewayClientError

    with pytest.raises(GatewayClientError) as bad:
        async with client(gw, "gwk_not_a_key"):
            pass
    with pytest.raises(GatewayClientError) as one_shot:
        await client(gw, "gwk_not_a_key").fastn_get_usage_summary()
    with pytest.raises(GatewayClientError) as down:
        await GatewayClient.http(
            "http://ops:s3cret@127.0.0.1:9/mcp?token=t0ken#x", api_key=gw.rw
        ).list_tools()
    assert bad.value.code == one_shot.value.code == "unauthenticated"
    assert down.value.code == "connection_failed" and down.value.retryable
    # Where it tried, without the credentials the URL carried.
    assert down.value.message.startswith("Could not connect to the gateway at ")
    assert "http://127.0.0.1:9/mcp:" in down.value.message
    assert down.value.details == {"url": "http://127.0.0.1:9/mcp"}
    for secret in ("s3cret", "ops", "t0ken"):
        assert secret not in str(down.value.envelope())


# ---------------------------------------------------------------------------- listing, resources


async def test_list_tools_is_typed_and_matches_the_server(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClient, ToolInfo

    async with client(gw, gw.read) as c:
        tools = await c.list_tools()
    assert all(isinstance(t, ToolInfo) for t in tools)
    assert {t.scope for t in tools} == {"read"}
    names = {t.name for t in tools}
    assert {"fastn_get_usage_summary", "slack_list_channels", "search_or_ask"} <= names
    assert "slack_send_message" not in names and "fastn_create_flow" not in names
    for t in tools:
        assert t.method is not None and callable(getattr(GatewayClient, t.method))
        assert t.input_schema["type"] == "object" and t.output_schema is not None
    slack = next(t for t in tools if t.name == "slack_list_channels")
    assert (slack.connector, slack.read_only, slack.open_world) == ("slack", True, True)


async def test_list_tools_reads_hints_a_server_leaves_out_as_mcp_defaults() -> None:
    """Against another MCP server, a tool without annotations is what MCP's defaults say it is:
    it may write destructively and reach the outside world (not the opposite)."""
    from fastn_gateway.client import GatewayClient
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    server = MCPServer("other", log_level="WARNING")

    @server.tool()
    def unannotated(text: str) -> str:
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def reader(text: str) -> str:
        return text

    async with GatewayClient.connect_to(server) as c:
        tools = {t.name: t for t in await c.list_tools()}
    u, r = tools["unannotated"], tools["reader"]
    assert (u.read_only, u.destructive, u.idempotent, u.open_world) == (False, True, False, True)
    assert (r.read_only, r.destructive, r.idempotent, r.open_world) == (True, False, False, True)


async def test_tools_list_shows_each_tool_as_tools_json_describes_it(gw: Gateway) -> None:
    """tools.json holds every tool as the server lists it: name, schemas, annotations, _meta."""
    shipped = json.loads((GENERATED / "tools.json").read_text(encoding="utf-8"))["tools"]
    by_name = {t["name"]: t for t in shipped}
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.rw}"}) as http,
        Client(streamable_http_client(gw.url, http_client=http)) as c,
    ):
        listed = (await c.list_tools()).tools
    assert len(listed) > 10
    for tool in listed:
        assert tool.model_dump(by_alias=True, exclude_none=True, mode="json") == by_name[tool.name]


async def test_resources(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClientError, ResourceInfo

    async with client(gw) as c:
        integrations = await c.read_integrations()
        status = await c.read_integration_status("slack")
        usage = await c.read_usage()
        events = await c.read_recent_events()
        listed = await c.list_resources()
        with pytest.raises(GatewayClientError) as hidden:
            await c.read_integration_status("shopify")
        with pytest.raises(GatewayClientError) as odd:
            await c.read_integration_status("a/b?c")
    assert [i["connector"] for i in integrations["integrations"]] == ["slack"]
    assert status["connector"] == "slack" and status["state"] == "active"
    assert usage["plan"] == "starter"
    assert isinstance(events, dict | list)
    assert all(isinstance(r, ResourceInfo) for r in listed)
    assert "gateway://integrations/slack" in {r.uri for r in listed}
    assert hidden.value.code == odd.value.code == "not_found"
    assert odd.value.details["uri"] == "gateway://integrations/a%2Fb%3Fc"


# ---------------------------------------------------------------------------- connection modes


async def test_failures_of_calls_without_a_context_manager_are_gateway_client_errors(
    gw: Gateway,
) -> None:
    """A call outside `async with` opens its own connection; the error it raised inside
    crossed the transport's task group and came out as an ExceptionGroup, over HTTP and stdio
    alike. (A tool error, raised after the connection closed, was not affected.)"""
    from fastn_gateway.client import GatewayClient, GatewayClientError

    for c in (client(gw, gw.read), GatewayClient.stdio(api_key=gw.read, env=_child_env(gw))):
        with pytest.raises(GatewayClientError) as hidden:  # a write tool, read-only key
            await c.slack_send_message(channel="general", text="x")
        with pytest.raises(GatewayClientError) as unknown:
            await c.call_tool("no_such_tool")
        with pytest.raises(GatewayClientError) as missing:
            await c.read_integration_status("no_such_connector")
        assert (hidden.value.code, unknown.value.code) == ("unknown_tool", "unknown_tool")
        assert missing.value.code == "not_found"
        assert not c.connected


async def test_a_write_left_in_doubt_by_a_timeout_is_not_retryable(gw: Gateway) -> None:
    """The client gave up waiting (its `timeout`) while the upstream held the write: the
    write may have been applied, so the error says so and is not retryable (it said
    retryable, whatever the tool). A read-only tool's timeout stays retryable."""
    from fastn_gateway.client import GatewayClientError

    slack = gw.upstreams.slack
    posts = len(slack.requests("POST", "chat.postMessage"))
    held = threading.Event()
    slack.fail_next("POST", "chat.postMessage", Fault(status=None, hold=held))
    slack.fail_next("GET", "conversations.list", Fault(status=None, hold=held))
    try:
        async with client(gw, timeout=1.0) as c:
            with pytest.raises(GatewayClientError) as write:
                await c.slack_send_message(channel="general", text="slow")
            with pytest.raises(GatewayClientError) as read:
                await c.slack_list_channels()
    finally:
        held.set()
    assert write.value.code == "timeout" and write.value.retryable is False
    assert "slack_send_message may have been applied" in write.value.message
    assert write.value.details == {"tool": "slack_send_message"}
    assert read.value.code == "timeout" and read.value.retryable is True
    assert len(slack.requests("POST", "chat.postMessage")) == posts + 1  # it reached Slack


async def test_a_write_answered_while_the_gateway_stops_is_not_lost(
    generated_on_path: Path, tmp_path: Path
) -> None:
    """A gateway told to stop (SIGTERM: uvicorn closes its listener, then finishes the calls
    under way) answered a write on a call's own connection, and the client then asked for the
    tool list (the SDK checks the result against the tool's output schema): refused, it lost
    the result, a retryable connection error for a write that was applied (audit finding).
    The list is asked for before the call now, and the result arrives."""
    from fastn_gateway.catalog import GATEWAY
    from fastn_gateway.client import GatewayClient
    from fastn_gateway.runtime.app import build_http_app
    from fastn_gateway.runtime.server import GatewayRuntime

    with StandIns() as ups:
        environ = {k: v for k, v in ups.environ("fastn_gateway").items() if k.endswith("_SLACK")}
        runtime = GatewayRuntime.open(GATEWAY, str(tmp_path / "gateway.db"), environ=environ)
        tenant = runtime.store.create_tenant("acme")
        runtime.store.connect(tenant.id, "slack", ups.credentials("A")["slack"])
        key = runtime.store.issue_key(tenant.id, scopes=["read", "write"]).token
        held = threading.Event()
        ups.slack.fail_next("POST", "chat.postMessage", Fault(status=None, hold=held))
        with UvicornThread(build_http_app(runtime), runtime) as srv:
            gateway = GatewayClient.http(f"{srv.url}/mcp", api_key=key)  # one call, one connection
            call = asyncio.create_task(gateway.slack_send_message(channel="general", text="hi"))
            while not ups.slack.requests("POST", "chat.postMessage"):
                await asyncio.sleep(0.01)
            srv.server.should_exit = True  # as on SIGTERM
            await asyncio.sleep(0.3)  # the listener closes
            held.set()
            sent = await call
    assert sent.channel and sent.ts
    assert len(ups.slack.requests("POST", "chat.postMessage")) == 1


async def test_calls_without_a_context_manager_and_concurrent_calls(gw: Gateway) -> None:
    c = client(gw)
    assert (await c.fastn_get_usage_summary()).plan == "starter"
    assert not c.connected
    async with c:
        results = await asyncio.gather(*(c.slack_list_channels(limit=1) for _ in range(5)))
    assert [r.channels[0].id for r in results] == ["CTA000"] * 5


def _child_env(gw: Gateway) -> dict[str, str]:
    return {"PYTHONPATH": str(GENERATED), "FASTN_GATEWAY_DATABASE_URL": str(gw.db), **gw.environ}


async def test_stdio_transport(gw: Gateway) -> None:
    from fastn_gateway.client import GatewayClient, GatewayClientError

    async with GatewayClient.stdio(api_key=gw.rw, env=_child_env(gw)) as c:
        usage = await c.fastn_get_usage_summary()
        sent = await c.slack_send_message(channel="random", text="over stdio")
        with pytest.raises(GatewayClientError) as hidden:
            await c.shopify_list_orders()
    assert usage.plan == "starter" and sent.channel == "CTA001"
    assert hidden.value.code == "unknown_tool"


async def test_stdio_passes_on_the_parents_gateway_settings(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server started over stdio gets this process's FASTN_GATEWAY_* variables, as it would
    when started from the same shell (before, it got none of them: a base URL exported for a
    stand-in was ignored and the call went to the real API), and `env` wins over them."""
    from fastn_gateway.client import GatewayClient

    monkeypatch.setenv("FASTN_GATEWAY_DATABASE_URL", str(gw.db.parent / "elsewhere.db"))
    for name, value in gw.environ.items():
        monkeypatch.setenv(name, value)
    database = {"FASTN_GATEWAY_DATABASE_URL": str(gw.db)}
    async with GatewayClient.stdio(api_key=gw.rw, env=database) as c:
        sent = await c.slack_send_message(channel="random", text="settings from the shell")
    assert sent.channel == "CTA001"


def test_stdio_runs_the_package_the_client_was_imported_from(gw: Gateway, tmp_path: Path) -> None:
    """The repository layout: `generated/` is importable only through the parent's
    PYTHONPATH, which the SDK does not pass on to the server process it starts (and an
    unrelated PYTHONPATH given in `env` does not hide the package either)."""
    script = (
        "import asyncio, json, sys\n"
        "from fastn_gateway.client import GatewayClient\n"
        "async def main():\n"
        "    env = json.loads(sys.argv[2])\n"
        "    async with GatewayClient.stdio(api_key=sys.argv[1], env=env) as c:\n"
        "        print((await c.fastn_get_usage_summary()).plan)\n"
        "asyncio.run(main())\n"
    )
    child_env = {
        "FASTN_GATEWAY_DATABASE_URL": str(gw.db),
        "PYTHONPATH": str(tmp_path / "elsewhere"),
        **gw.environ,
    }
    parent_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTN_GATEWAY_")}
    parent_env["PYTHONPATH"] = str(GENERATED)
    proc = subprocess.run(
        [sys.executable, "-c", script, gw.rw, json.dumps(child_env)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repository: nothing to import from the working directory
        env=parent_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "starter"


async def test_a_stdio_server_that_ends_at_once_is_explained(gw: Gateway, tmp_path: Path) -> None:
    """The server's own error reaches the caller, not only the terminal: here it refuses a
    database that does not exist."""
    from fastn_gateway.client import GatewayClient, GatewayClientError

    typo = tmp_path / "no-such.db"
    env = {"FASTN_GATEWAY_DATABASE_URL": str(typo), **gw.environ}
    for client in (GatewayClient.stdio(api_key=gw.rw, env=env), None):
        with pytest.raises(GatewayClientError) as ended:
            if client is not None:
                async with client:
                    pass
            else:  # a call without `async with` opens its own connection
                await GatewayClient.stdio(api_key=gw.rw, env=env).fastn_get_usage_summary()
        err = ended.value
        assert err.code == "connection_failed" and not err.retryable
        assert err.message.startswith(
            "The gateway process ended before the session started; its stderr ends: error: "
            "no gateway database there"
        )
        assert str(typo) in err.message and str(typo) in err.details["stderr"]
        assert gw.rw not in str(err.envelope())
    assert not typo.exists()


def test_readme_example_works_as_written(gw: Gateway) -> None:
    readme = (GENERATED / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    example = blocks[0]
    assert len(example.strip().splitlines()) == 3
    assert "http://127.0.0.1:8000/mcp" in example and "gwk_..." in example
    code = example.replace("http://127.0.0.1:8000/mcp", gw.url).replace("gwk_...", gw.rw)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(GENERATED)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plan='starter'" in proc.stdout


# ---------------------------------------------------------------------------- releases

_SENT_OUTPUT = """\
    output:
      type: object
      required: [channel, ts]
      properties:
        channel: {type: string}
        ts: {type: string}
        message:
          type: object
          properties:
"""
_SENT_FIELDS = "fields: {channel: channel, ts: ts, message: message}"


def _release(tmp_path: Path, name: str, *, gained: bool) -> Path:
    """A one-connector gateway built as the package `name`: Slack, its send_message output
    closed (`additionalProperties: false`) at the root and in `message`; `gained`: the next
    release, whose output has a property more at both levels (BRK103, safe)."""
    root = tmp_path / name
    (root / "manifests" / "connectors").mkdir(parents=True)
    (root / "manifests" / "gateway.yaml").write_text(
        "version: 1\nkind: gateway\n"
        f"package: {{name: {name.replace('_', '-')}, import_name: {name}, version: 1.0.0}}\n"
        "server: {name: evo, title: Evo}\n"
        "quotas: {default_plan: free, plans: {free: {period: day, calls: 100}}}\n"
        "entities:\n  channel:\n"
        "    fields: {id: string, name: string, topic: string, is_private: boolean}\n",
        encoding="utf-8",
    )
    slack = (ROOT / "manifests" / "connectors" / "slack.yaml").read_text(encoding="utf-8")
    assert _SENT_OUTPUT in slack and _SENT_FIELDS in slack
    output = _SENT_OUTPUT.replace(
        "      type: object\n", "      type: object\n      additionalProperties: false\n", 1
    ).replace(
        "          type: object\n",
        "          type: object\n          additionalProperties: false\n",
    )
    output += "            type: {type: string}\n"  # the stand-in's message has one
    fields = _SENT_FIELDS
    if gained:
        output = output.replace(
            "        ts: {type: string}\n",
            "        ts: {type: string}\n        permalink: {type: string}\n",
        )
        output += "            app_id: {type: string}\n"
        fields = fields.replace("}", ", permalink: permalink}")
    slack = slack.replace(_SENT_OUTPUT, output).replace(_SENT_FIELDS, fields)
    (root / "manifests" / "connectors" / "slack.yaml").write_text(slack, encoding="utf-8")
    built = api.build(api.Options.for_project(root, cache=False))
    assert built.ok, built.diagnostics
    return root / "generated"


async def test_the_previous_releases_client_reads_a_closed_output_that_gained_a_property(
    tmp_path: Path,
) -> None:
    """Adding an output property is safe (BRK103), closed output or not: the old client's
    output models ignore what they do not declare. They had `extra="forbid"` where the schema
    said `additionalProperties: false`, and raised `invalid_response` ("Extra inputs are not
    permitted") on every call to the next release. The server still holds results to the
    closed schema, and input models still refuse undeclared arguments."""
    old_out = _release(tmp_path, "evo_old", gained=False)
    new_out = _release(tmp_path, "evo_new", gained=True)
    sys.path[:0] = [str(old_out), str(new_out)]
    try:
        from evo_new.catalog import GATEWAY
        from evo_new.runtime.app import build_http_app
        from evo_new.runtime.server import GatewayRuntime
        from evo_old.client import GatewayClient, GatewayClientError
        from evo_old.models import slack as old_models

        assert GATEWAY.tools["slack_send_message"].output_schema["additionalProperties"] is False
        reply = {
            "ok": True,
            "channel": "CTA000",
            "ts": "1.0001",
            "permalink": "https://acme.slack.com/archives/CTA000/p10001",
            "message": {"type": "message", "text": "hi", "ts": "1.0001", "app_id": "A1"},
        }
        with StandIns() as ups:
            runtime = GatewayRuntime.open(
                GATEWAY,
                str(tmp_path / "gateway.db"),
                environ={k: v for k, v in ups.environ("evo_new").items() if k.endswith("_SLACK")},
            )
            tenant = runtime.store.create_tenant("acme")
            runtime.store.connect(tenant.id, "slack", ups.credentials("A")["slack"])
            key = runtime.store.issue_key(tenant.id, scopes=["read", "write"]).token
            with UvicornThread(build_http_app(runtime)) as srv:
                async with GatewayClient.http(f"{srv.url}/mcp", api_key=key) as c:
                    ups.slack.fail_next("POST", "chat.postMessage", Fault(status=200, body=reply))
                    sent = await c.slack_send_message(channel="general", text="hi")
                    assert isinstance(sent, old_models.SlackSendMessageOutput)
                    assert (sent.channel, sent.ts) == ("CTA000", "1.0001")
                    assert sent.message is not None and sent.message.text == "hi"
                    # an undeclared property is still refused by the server (the schema is
                    # closed), not passed on to readers
                    surprise = {**reply, "message": {**reply["message"], "surprise": 1}}
                    ups.slack.fail_next(
                        "POST", "chat.postMessage", Fault(status=200, body=surprise)
                    )
                    with pytest.raises(GatewayClientError) as refused:
                        await c.slack_send_message(channel="general", text="hi")
                    assert refused.value.code == "upstream_invalid_response", refused.value
        with pytest.raises(Exception, match="Extra inputs are not permitted"):
            old_models.SlackSendMessageInput.model_validate(
                {"channel": "general", "text": "hi", "bogus": 1}
            )
    finally:
        sys.path.remove(str(old_out))
        sys.path.remove(str(new_out))
        for name in [n for n in sys.modules if n.split(".")[0] in ("evo_old", "evo_new")]:
            del sys.modules[name]


_NULLS_GATEWAY = """\
version: 1
kind: gateway
package: {name: t-nulls, import_name: t_nulls, version: 0.1.0}
server: {name: nulls}
quotas: {default_plan: free, plans: {free: {period: day, calls: 100}}}
"""
_NULLS_NATIVE = """\
version: 1
kind: native
tools:
  - name: probe_nulls
    description: Takes a note that must hold at least one property.
    scope: read
    handler: native.get_usage_summary
    input:
      type: object
      properties:
        note:
          type: object
          minProperties: 1
          properties:
            comment: {type: [string, "null"]}
            tag: {type: string}
    output: {type: object}
"""


async def test_none_in_a_nested_model_is_sent_where_the_schema_takes_null(tmp_path: Path) -> None:
    """The models type both nested fields `str | None`; only `comment`'s schema takes null.
    An explicit None there is sent as null (the note then has its one property), and `tag`'s
    None is left out (sent, the gateway refused it)."""
    root = tmp_path / "project"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "gateway.yaml").write_text(_NULLS_GATEWAY, encoding="utf-8")
    (root / "manifests" / "native.yaml").write_text(_NULLS_NATIVE, encoding="utf-8")
    built = api.build(api.Options.for_project(root, cache=False))
    assert built.ok, built.diagnostics
    out = root / "generated"
    stub = (out / "t_nulls" / "client_methods" / "native.py").read_text(encoding="utf-8")
    assert 'nullable=frozenset({("note", "comment")})' in stub
    sys.path.insert(0, str(out))
    try:
        from t_nulls.catalog import GATEWAY
        from t_nulls.client import GatewayClient, GatewayClientError
        from t_nulls.models.native import ProbeNullsInputNote as Note
        from t_nulls.runtime.app import build_http_app
        from t_nulls.runtime.server import GatewayRuntime

        runtime = GatewayRuntime.open(GATEWAY, str(tmp_path / "gateway.db"), environ={})
        tenant = runtime.store.create_tenant("acme")
        key = runtime.store.issue_key(tenant.id, scopes=["read"]).token
        with UvicornThread(build_http_app(runtime)) as srv:
            async with GatewayClient.http(f"{srv.url}/mcp", api_key=key) as c:
                await c.probe_nulls(note=Note(comment=None, tag=None))
                with pytest.raises(GatewayClientError) as empty:  # nothing left to send
                    await c.probe_nulls(note=Note(tag=None))
        assert empty.value.code == "invalid_arguments"
        assert [e["path"] for e in empty.value.details["errors"]] == ["/note"]
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.split(".")[0] == "t_nulls"]:
            del sys.modules[name]
