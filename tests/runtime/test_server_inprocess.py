"""The gateway server through the real SDK client, in-process (both protocol eras)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError

from generator.runtime import native
from generator.runtime.errors import MAX_ERRORS
from generator.runtime.store import (
    EVENT_TYPES,
    Store,
    UsageDelta,
    make_engine,
    now_us,
    period_bounds,
    usage_day,
)
from tests.runtime.support import ROOT, make_runtime, populate, updates_until

MODES = ["auto", "legacy"]
BASE_TOOLS = {
    "fastn_list_integrations",
    "fastn_get_integration_status",
    "fastn_create_flow",
    "fastn_get_event_history",
    "fastn_get_usage_summary",
    "fastn_search_entities",
    "retrieve_relevant_chunks",
    "search_or_ask",
    "update_memory",
}


def envelope(result: Any) -> dict[str, Any]:
    assert result.is_error, result
    assert result.structured_content is None
    return json.loads(result.content[0].text)["error"]


async def all_tools(client: Client) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        names.extend(t.name for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return names


@pytest.mark.parametrize("mode", MODES)
async def test_tenants_see_their_own_tools(world, mode: str) -> None:
    async with Client(world.server(world.a_rw), mode=mode) as ca:
        a = set(await all_tools(ca))
    async with Client(world.server(world.b_rw), mode=mode) as cb:
        b = set(await all_tools(cb))
    assert a >= BASE_TOOLS and b >= BASE_TOOLS
    assert {"slack_send_message", "shopify_list_orders"} <= a
    assert "slack_send_message" in b
    assert not any(n.startswith(("shopify_", "github_", "hubspot_")) for n in b)
    assert not any(n.startswith(("github_", "hubspot_")) for n in a)
    assert a - b == {n for n in world.runtime.gateway.tools if n.startswith("shopify_")}


@pytest.mark.parametrize("mode", MODES)
async def test_scopes_filter_listing_and_calls(world, mode: str) -> None:
    async with Client(world.server(world.a_read), mode=mode) as c:
        names = set(await all_tools(c))
        specs = world.runtime.gateway.tools
        assert names and all(specs[n].scope == "read" for n in names)
        assert "slack_send_message" not in names and "fastn_create_flow" not in names
        with pytest.raises(MCPError) as hidden:
            await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
        with pytest.raises(MCPError) as unknown:
            await c.call_tool("no_such_tool", {"channel": "C1", "text": "hi"})
    assert hidden.value.code == unknown.value.code == -32602
    assert hidden.value.message == "Unknown tool: slack_send_message"
    assert unknown.value.message == "Unknown tool: no_such_tool"
    assert hidden.value.error.data["error"]["code"] == "unknown_tool"
    assert set(hidden.value.error.data["error"]) == {"code", "message", "details", "retryable"}
    async with Client(world.server(world.a_write), mode=mode) as c:
        names = set(await all_tools(c))
        assert names and all(world.runtime.gateway.tools[n].scope == "write" for n in names)
        assert "slack_send_message" in names


async def test_other_tenants_connector_is_unknown(world) -> None:
    async with Client(world.server(world.b_rw)) as c:
        with pytest.raises(MCPError) as exc:
            await c.call_tool("shopify_list_orders", {})
    assert exc.value.message == "Unknown tool: shopify_list_orders"


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_arguments_envelope(world, mode: str) -> None:
    async with Client(world.server(world.a_rw), mode=mode) as c:
        r = await c.call_tool("slack_send_message", {"channel": "", "text": 5, "bogus": True})
    err = envelope(r)
    assert err["code"] == "invalid_arguments"
    assert err["retryable"] is False
    paths = {e["path"] for e in err["details"]["errors"]}
    assert {"/channel", "/text", "/"} <= paths


async def test_invalid_arguments_quote_values_as_json(world) -> None:
    """A JSON client sent null, true and an object: the messages said None, True and
    {'x': 1}, Python's spellings, and quoted a long value whole."""
    long_text = "x" * 5000
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool(
            "slack_send_message",
            {"channel": None, "text": {"x": 1}, "thread_ts": True, "bogus": 1},
        )
        long = await c.call_tool("slack_send_message", {"channel": [long_text], "text": "t"})
        flow = await c.call_tool("fastn_create_flow", {"name": "f", "trigger": {"type": "at"}})
    errors = {e["path"]: e["message"] for e in envelope(r)["details"]["errors"]}
    (cut,) = [e["message"] for e in envelope(long)["details"]["errors"]]
    assert cut.startswith('["xxx') and cut.endswith('xx... is not of type "string"')
    assert len(cut) < 120
    assert errors["/channel"] == 'null is not of type "string"'
    assert errors["/text"] == '{"x": 1} is not of type "string"'
    assert errors["/thread_ts"] == 'true is not of type "string"'
    assert errors["/"] == 'Additional properties are not allowed ("bogus" was unexpected)'
    flow_errors = [e["message"] for e in envelope(flow)["details"]["errors"]]
    assert '"steps" is a required property' in flow_errors
    assert any(m.startswith('"at" is not one of ["') for m in flow_errors), flow_errors


async def test_invalid_arguments_do_no_work(world, upstream) -> None:
    before = len(upstream.requests)
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("slack_send_message", {"channel": "C1"})
    assert envelope(r)["code"] == "invalid_arguments"
    assert len(upstream.requests) == before


async def test_values_no_json_peer_could_send_are_invalid_arguments(world) -> None:
    """An in-process caller can pass what no wire format carries: an integer of thousands of
    digits (Python will not even print it in an error message) or a string holding a lone
    surrogate. Each is invalid_arguments with its path, not internal_error."""
    async with Client(world.server(world.a_rw)) as c:
        for name, arguments, path in (
            ("fastn_get_event_history", {"limit": 10**5000}, "/limit"),
            ("shopify_get_customer", {"customer_id": 10**5000}, "/customer_id"),
            ("fastn_get_event_history", {"connector": "sl\ud800ck"}, "/connector"),
        ):
            err = envelope(await c.call_tool(name, arguments))
            assert err["code"] == "invalid_arguments", (name, err)
            assert err["details"]["errors"][0]["path"] == path
        # No URI holds one; the acknowledgement of a subscription to it could not be sent.
        with pytest.raises(MCPError) as listen:
            async with c.listen(resource_subscriptions=["memory://users/a\ud800/profile"]):
                pass
        assert listen.value.error.data["error"]["code"] == "invalid_arguments"


@pytest.mark.parametrize("mode", MODES)
async def test_connector_call_uses_the_tenants_own_credentials(world, upstream, mode: str) -> None:
    async with Client(world.server(world.a_rw), mode=mode) as c:
        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "hello"})
        assert not r.is_error, r.content
        assert r.structured_content["channel"] == "C1"
        assert json.loads(r.content[0].text) == r.structured_content
    assert upstream.requests[-1] == ("/slack/chat.postMessage", "xoxb-acme")
    async with Client(world.server(world.b_rw), mode=mode) as c:
        r = await c.call_tool("slack_list_channels", {})
        assert not r.is_error
    assert upstream.requests[-1] == ("/slack/conversations.list", "xoxb-bravo")


async def test_new_credentials_are_used_on_the_next_call(
    world, upstream, sqlite_store: Store
) -> None:
    """Decrypted credentials are kept between calls, never past a change of them (here made
    directly in the database, as the admin CLI of another process does)."""
    upstream.slack_tokens.add("xoxb-acme-2")
    async with Client(world.server(world.a_rw)) as c:
        for _ in range(2):
            assert not (await c.call_tool("slack_list_channels", {})).is_error
            assert upstream.requests[-1] == ("/slack/conversations.list", "xoxb-acme")
        sqlite_store.connect(world.a.id, "slack", {"bot_token": "xoxb-acme-2"})
        assert not (await c.call_tool("slack_list_channels", {})).is_error
        assert upstream.requests[-1] == ("/slack/conversations.list", "xoxb-acme-2")


async def test_upstream_auth_failure_marks_needs_reauth_and_hides_tools(world, upstream) -> None:
    upstream.shopify_tokens.discard("shpat-acme")
    before = len(upstream.requests)
    try:
        async with Client(world.server(world.a_rw)) as c:
            r = await c.call_tool("shopify_list_orders", {})
            err = envelope(r)
            assert err["code"] == "upstream_auth_failed"
            assert "shpat-acme" not in r.content[0].text
            names = set(await all_tools(c))
            assert not any(n.startswith("shopify_") for n in names)
            again = envelope(await c.call_tool("shopify_list_orders", {}))
            assert again["code"] == "not_connected" and again["retryable"] is False
            assert again["details"] == {
                "connector": "shopify",
                "state": "needs_reauth",
                "tool": "shopify_list_orders",
            }
            assert "reconnect Shopify" in again["message"]
            assert len(upstream.requests) == before + 1
            status = await c.call_tool("fastn_get_integration_status", {"connector": "shopify"})
            assert status.structured_content["state"] == "needs_reauth"
            assert status.structured_content["last_error"] == "upstream_auth_failed"
            # The call that ran; the retry refused as not_connected counts as no call, as in
            # usage.
            assert status.structured_content["calls_24h"] == 1
            assert status.structured_content["errors_24h"] == 1
    finally:
        upstream.shopify_tokens.add("shpat-acme")


async def test_a_disconnected_connectors_tool_says_so_only_to_its_tenant(world, upstream) -> None:
    """A model holding an older listing calls a tool of a connection its tenant has since
    disconnected: the error names the reason. Keys without the tool's scope, and tenants that
    never connected the connector, still get an unknown tool."""
    await world.runtime.disconnect(world.a.id, "shopify")
    await world.runtime.disconnect(world.a.id, "slack")
    before = len(upstream.requests)
    async with Client(world.server(world.a_rw)) as c:
        err = envelope(await c.call_tool("shopify_list_orders", {}))
        events = await c.call_tool(
            "fastn_get_event_history", {"type": "tool_call", "status": "error"}
        )
    assert err["code"] == "not_connected"
    assert err["details"]["state"] == "disconnected"
    assert "connect Shopify" in err["message"]
    assert len(upstream.requests) == before
    assert any(
        e["error_code"] == "not_connected" and e["connector"] == "shopify"
        for e in events.structured_content["events"]
    )
    async with Client(world.server(world.a_read)) as c:
        with pytest.raises(MCPError, match="Unknown tool: slack_send_message"):
            await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
    async with Client(world.server(world.b_rw)) as c:
        with pytest.raises(MCPError, match="Unknown tool: shopify_list_orders"):
            await c.call_tool("shopify_list_orders", {})


async def test_quota_refusal(world, sqlite_store: Store) -> None:
    with sqlite_store.write() as conn:
        from generator.runtime.store import tenants

        conn.execute(tenants.update().where(tenants.c.id == world.a.id).values(plan="tiny"))
    async with Client(world.server(world.a_rw)) as c:
        for _ in range(3):
            r = await c.call_tool("fastn_list_integrations", {})
            assert not r.is_error
        r = await c.call_tool("fastn_list_integrations", {})
        err = json.loads(r.content[0].text)["error"]
        assert r.is_error and err["code"] == "quota_exceeded"
        assert err["retryable"] is True
        assert 0 < err["retry_after_seconds"] <= 86400
        assert err["details"]["limit"] == 3
    # the refusal is an event, and tenant B is unaffected
    world.runtime.recorder.flush()
    events = sqlite_store.query_events(world.a.id, type_="quota_exceeded")
    assert len(events) == 1
    async with Client(world.server(world.b_rw)) as c:
        for _ in range(5):
            assert not (await c.call_tool("fastn_list_integrations", {})).is_error


async def test_per_connector_quota(world, sqlite_store: Store) -> None:
    sqlite_store.set_plan(world.a.id, "tiny_slack")
    async with Client(world.server(world.a_rw)) as c:
        assert not (await c.call_tool("slack_list_channels", {})).is_error
        r = await c.call_tool("slack_list_channels", {})
        assert envelope(r)["code"] == "quota_exceeded"
        assert envelope(r)["details"]["connector"] == "slack"
        assert not (await c.call_tool("shopify_list_orders", {})).is_error
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
    assert usage["plan"] == "tiny_slack"
    slack = next(x for x in usage["by_connector"] if x["connector"] == "slack")
    assert slack == {"connector": "slack", "calls": 1, "errors": 0, "limit": 1}


async def test_quota_counts_survive_a_restart(
    world, sqlite_store: Store, gateway, upstream
) -> None:
    from tests.runtime.support import make_runtime

    sqlite_store.set_plan(world.a.id, "tiny")
    async with Client(world.server(world.a_rw)) as c:
        for _ in range(2):
            assert not (await c.call_tool("fastn_list_integrations", {})).is_error
    await world.runtime.aclose()
    rt2 = make_runtime(sqlite_store, gateway, upstream)
    try:
        async with Client(rt2.build_server(api_key=world.a_rw)) as c:
            assert not (await c.call_tool("fastn_list_integrations", {})).is_error
            r = await c.call_tool("fastn_list_integrations", {})
            assert envelope(r)["code"] == "quota_exceeded"
    finally:
        await rt2.aclose()


async def test_usage_survives_a_plan_switch(world, sqlite_store: Store, gateway, upstream) -> None:
    """Usage is a fact independent of the plan: a daily plan counts every call of the day,
    those made under a monthly plan too, and back on the monthly plan every call of the month
    counts, those made under the daily plan too (the resource, the summary and the quota)."""

    async def calls(n: int) -> dict[str, Any]:
        async with Client(world.server(world.a_rw)) as c:
            for _ in range(n):
                assert not (await c.call_tool("fastn_list_integrations", {})).is_error
            return json.loads((await c.read_resource("gateway://usage")).contents[0].text)

    month = await calls(5)
    assert (month["period"], month["calls"]) == ("month", 5)
    sqlite_store.set_plan(world.a.id, "daily")
    day = await calls(3)
    assert (day["plan"], day["period"], day["calls"]) == ("daily", "day", 8)
    assert day["by_tool"] == [{"tool": "fastn_list_integrations", "calls": 8, "errors": 0}]
    sqlite_store.set_plan(world.a.id, "starter")
    async with Client(world.server(world.a_rw)) as c:
        month = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
    assert (month["plan"], month["period"], month["calls"]) == ("starter", "month", 8)
    # The quota too, in this process (counted in memory) and in a new one (read back).
    sqlite_store.set_plan(world.a.id, "tiny")  # 3 calls a day: used up already
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("fastn_list_integrations", {})
        assert envelope(r)["details"]["used"] == 9
    await world.runtime.aclose()
    rt2 = make_runtime(sqlite_store, gateway, upstream)
    try:
        async with Client(rt2.build_server(api_key=world.a_rw)) as c:
            r = await c.call_tool("fastn_list_integrations", {})
            assert envelope(r)["details"]["used"] == 9
    finally:
        await rt2.aclose()


async def test_native_tools_end_to_end(world) -> None:
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("fastn_list_integrations", {})
        integ = r.structured_content["integrations"]
        assert [i["connector"] for i in integ] == ["shopify", "slack"]
        assert all(i["state"] == "active" and i["tool_count"] > 0 for i in integ)
        await c.call_tool("slack_send_message", {"channel": "C1", "text": "x"})
        st = (
            await c.call_tool("fastn_get_integration_status", {"connector": "slack"})
        ).structured_content
        assert st["calls_24h"] == 1 and st["errors_24h"] == 0 and st["error_rate_24h"] == 0
        assert st["last_success_at"] is not None and st["connected_since"] is not None
        missing = await c.call_tool("fastn_get_integration_status", {"connector": "github"})
        assert envelope(missing)["code"] == "not_found"

        flow = {
            "name": "notify",
            "trigger": {"type": "schedule", "cron": "0 9 * * 1"},
            "steps": [
                {"tool": "shopify_list_orders"},
                {"tool": "slack_send_message", "arguments": {"channel": "C1", "text": "hi"}},
            ],
        }
        f1 = (await c.call_tool("fastn_create_flow", flow)).structured_content
        f2 = (await c.call_tool("fastn_create_flow", flow)).structured_content
        assert (f1["version"], f2["version"]) == (1, 2) and f1["flow_id"] == f2["flow_id"]
        bad = await c.call_tool(
            "fastn_create_flow",
            {**flow, "steps": [{"tool": "github_create_issue"}], "trigger": {"type": "schedule"}},
        )
        err = envelope(bad)
        assert err["code"] == "invalid_arguments"
        assert {e["path"] for e in err["details"]["errors"]} == {"/steps/0/tool", "/trigger/cron"}

        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        assert usage["plan"] == "starter" and usage["limit"] == 10000
        # list_integrations, send_message, status x2, create_flow x2 (the invalid one's
        # arguments were refused: it does not count); the calls completed before the summary
        assert usage["calls"] == 6
        assert usage["remaining"] == 10000 - 6
        by_tool = {t["tool"]: t for t in usage["by_tool"]}
        assert by_tool["fastn_create_flow"] == {
            "tool": "fastn_create_flow",
            "calls": 2,
            "errors": 0,
        }

        hist = (await c.call_tool("fastn_get_event_history", {"limit": 3})).structured_content
        assert len(hist["events"]) == 3 and hist["next_cursor"]
        types_seen = []
        cursor = None
        while True:
            args: dict[str, Any] = {"limit": 4}
            if cursor:
                args["cursor"] = cursor
            page = (await c.call_tool("fastn_get_event_history", args)).structured_content
            types_seen.extend(e["type"] for e in page["events"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert types_seen.count("connect") == 2
        assert types_seen.count("flow_created") == 2
        assert "tool_call" in types_seen
        only = (
            await c.call_tool(
                "fastn_get_event_history", {"type": "tool_call", "connector": "slack"}
            )
        ).structured_content["events"]
        assert [e["tool"] for e in only] == ["slack_send_message"]
        bad_cursor = await c.call_tool("fastn_get_event_history", {"cursor": "nope"})
        assert envelope(bad_cursor)["code"] == "invalid_arguments"


async def test_events_and_usage_are_tenant_scoped(world) -> None:
    async with Client(world.server(world.a_rw)) as c:
        await c.call_tool("slack_send_message", {"channel": "C1", "text": "secret plans"})
    async with Client(world.server(world.b_rw)) as c:
        hist = (await c.call_tool("fastn_get_event_history", {"limit": 200})).structured_content
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        integ = (await c.call_tool("fastn_list_integrations", {})).structured_content
    assert all(e["tool"] != "slack_send_message" for e in hist["events"])
    assert [e["type"] for e in hist["events"]].count("connect") == 1
    assert {t["tool"] for t in usage["by_tool"]} <= {
        "fastn_get_event_history",
        "fastn_get_usage_summary",
    }
    assert [i["connector"] for i in integ["integrations"]] == ["slack"]


async def test_search_entities(world) -> None:
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("fastn_search_entities", {"entity_type": "order", "query": "1001"})
        assert not r.is_error, r.content
        out = r.structured_content
        assert [e["connector"] for e in out["entities"]] == ["shopify"]
        assert out["entities"][0]["fields"]["number"] == "#1001"
        r = await c.call_tool(
            "fastn_search_entities",
            {"entity_type": "channel", "query": "gen", "connectors": ["slack", "github"]},
        )
        srcs = {s["connector"]: s for s in r.structured_content["sources"]}
        assert srcs["slack"]["status"] == "ok" and srcs["github"]["error"] == "not_connected"
        bad = await c.call_tool("fastn_search_entities", {"entity_type": "spaceship", "query": "x"})
        assert envelope(bad)["code"] == "invalid_arguments"
    async with Client(world.server(world.b_rw)) as c:
        r = await c.call_tool("fastn_search_entities", {"entity_type": "order", "query": "1001"})
        assert r.structured_content["entities"] == []


async def test_a_search_is_a_call_of_each_connector_it_searches(
    world, sqlite_store: Store, upstream
) -> None:
    """Searching a connector runs one of its tools with the tenant's credentials: that call is
    on the quota (its connector's limit included) and in the history like a direct one, and
    a connector over its limit is not searched at all."""
    sqlite_store.set_plan(world.a.id, "tiny_slack")  # one Slack call a month
    channels = {"entity_type": "channel", "query": "gen"}
    async with Client(world.server(world.a_rw)) as c:
        first = await c.call_tool("fastn_search_entities", channels)
        assert first.structured_content["sources"][0]["status"] == "ok"
        sent = len(upstream.requests)
        second = await c.call_tool("fastn_search_entities", channels)
        (source,) = second.structured_content["sources"]
        assert source["status"] == "error" and source["error"].startswith("quota_exceeded: ")
        assert len(upstream.requests) == sent  # nothing went to Slack
        direct = await c.call_tool("slack_list_channels", {})
        assert envelope(direct)["code"] == "quota_exceeded"
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        hist = (await c.call_tool("fastn_get_event_history", {"limit": 50})).structured_content
    slack = next(x for x in usage["by_connector"] if x["connector"] == "slack")
    assert slack["calls"] == 1 and slack["limit"] == 1
    assert {"tool": "fastn_search_entities", "calls": 2, "errors": 0} in usage["by_tool"]
    via = [e for e in hist["events"] if e["tool"] == "slack_list_channels" and e["status"] == "ok"]
    assert [e["details"] for e in via] == [{"via": "fastn_search_entities"}]


async def test_a_backfilled_observation_is_logged_not_made_the_fact(world) -> None:
    """Through the MCP server: an observation dated before its topic's current fact is stored
    superseded by that fact (the result says which), retrieval keeps the current fact, and an
    observed_at in the future is invalid_arguments at its JSON pointer."""

    def update(*observations: dict[str, Any]) -> dict[str, Any]:
        return {"observations": list(observations)}

    async with Client(world.server(world.a_rw)) as c:
        lisbon = await c.call_tool(
            "update_memory", update({"text": "Lives in Lisbon", "topic": "city"})
        )
        oslo = await c.call_tool(
            "update_memory",
            update(
                {"text": "Lives in Oslo", "topic": "city", "observed_at": "2001-01-01T00:00:00Z"}
            ),
        )
        (current,) = lisbon.structured_content["stored"]
        (backfill,) = oslo.structured_content["stored"]
        assert backfill["superseded"] == [] and backfill["superseded_by"] == current["id"]
        found = await c.call_tool("retrieve_relevant_chunks", {"query": "lives", "top_k": 10})
        assert [ch["text"] for ch in found.structured_content["chunks"]] == ["Lives in Lisbon"]
        r = await c.call_tool(
            "update_memory",
            update({"text": "Lives in Rome", "observed_at": "9999-12-31T23:59:59Z"}),
        )
        err = envelope(r)
        assert err["code"] == "invalid_arguments"
        assert [e["path"] for e in err["details"]["errors"]] == ["/observations/0/observed_at"]


async def test_observed_at_may_be_written_with_a_lowercase_t_and_z(world) -> None:
    """RFC 3339 allows `t` and `z` in lowercase, and the gateway's date-time check let them
    through, but the memory store read observed_at with Python's fromisoformat, which takes no
    `z`: `2024-01-01t00:00:00z` was refused as "not an RFC 3339 timestamp". Now it is stored
    as the time it names."""
    written = ["2024-01-01t00:00:00z", "2024-01-02T00:00:00z", "2024-01-03t01:00:00+01:00"]
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool(
            "update_memory",
            {
                "observations": [
                    {"text": f"Fact {n}", "observed_at": t} for n, t in enumerate(written)
                ]
            },
        )
        assert not r.is_error, r.content
        log = json.loads((await c.read_resource("memory://users/ash/log")).contents[0].text)
    assert [e["observed_at"] for e in log["entries"]] == [
        "2024-01-01T00:00:00Z",
        "2024-01-02T00:00:00Z",
        "2024-01-03T00:00:00Z",
    ]


async def test_the_profiles_last_update_is_never_before_its_newest_version(
    world, sqlite_store: Store
) -> None:
    """An update took its time before it waited for the write lock and stamped the user's
    last_updated with it, while its versions were recorded at a time read under the lock: an
    update that waited for another writer showed last_updated earlier than the recorded_at of
    the newest version. Both are now the time read under the lock."""
    import sqlite3

    path = sqlite_store.engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    async with Client(world.server(world.a_rw)) as c, anyio.create_task_group() as tg:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        results: list[Any] = []

        async def update() -> None:
            results.append(
                await c.call_tool("update_memory", {"observations": [{"text": "Likes tea"}]})
            )

        tg.start_soon(update)
        await anyio.sleep(0.3)
        holder.execute("ROLLBACK")
    holder.close()
    assert not results[0].is_error, results[0].content
    async with Client(world.server(world.a_rw)) as c:
        profile = json.loads((await c.read_resource("memory://users/ash/profile")).contents[0].text)
        log = json.loads((await c.read_resource("memory://users/ash/log")).contents[0].text)
    (entry,) = log["entries"]
    assert profile["last_updated"] == entry["recorded_at"]


async def test_memory_tools_need_a_user(world) -> None:
    obs = {"observations": [{"text": "Ash takes meetings after 2pm", "topic": "meeting_time"}]}
    async with Client(world.server(world.a_rw)) as c:
        stored = await c.call_tool("update_memory", obs)
        assert not stored.is_error, stored.content
        found = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert found.structured_content["chunks"][0]["text"] == "Ash takes meetings after 2pm"
        # One memory: every word is common, bm25's raw score would be 1e-06-ish. The model
        # reads a plain decimal, in the structured result and in the text alike.
        assert found.structured_content["chunks"][0]["score"] == 0.0001
        assert '"score":0.0001' in found.content[0].text and "e-0" not in found.content[0].text
    async with Client(world.server(world.a_read)) as c:
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert envelope(r)["code"] == "forbidden"
    # a host key names the user; another user's memory stays separate
    async with Client(world.server(world.a_host, asserted_user="alex")) as c:
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert r.structured_content["chunks"] == []
    async with Client(world.server(world.a_host, asserted_user="ash")) as c:
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert len(r.structured_content["chunks"]) == 1
    async with Client(world.server(world.a_host, asserted_user="bo")) as c:  # B's user
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert envelope(r)["code"] == "forbidden"
    async with Client(world.server(world.a_read, asserted_user="ash")) as c:  # not a host key
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert envelope(r)["code"] == "forbidden"
    async with Client(world.server(world.b_rw)) as c:
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "meetings"})
        assert r.structured_content["chunks"] == []


async def test_a_call_refused_before_its_tool_runs_counts_nothing(world, upstream) -> None:
    """A call the gateway refuses for who is calling (no user, a user the key may not name or
    that is not registered) never ran: like one refused for its arguments, it counts toward
    neither usage nor the quota, though it is an event. A call the upstream refused ran."""
    world.runtime.store.set_plan(world.a.id, "tiny")  # 3 calls a day
    query = {"query": "meetings"}
    for key, user in (
        (world.a_read, None),  # no user
        (world.a_read, "ash"),  # a key that may not name a user
        (world.a_rw, "alex"),  # bound to another user
        (world.a_host, "nobody"),  # not registered
        (world.a_host, "bo"),  # tenant B's user
    ):
        async with Client(world.server(key, asserted_user=user)) as c:
            for _ in range(2):
                r = await c.call_tool("retrieve_relevant_chunks", query)
                assert envelope(r)["code"] == "forbidden", (key, user)
    world.runtime.store.connect(world.a.id, "slack", {"bot_token": "xoxb-revoked"})
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("slack_list_channels", {})  # sent, and refused upstream
        assert envelope(r)["code"] == "upstream_auth_failed"
        assert not (await c.call_tool("retrieve_relevant_chunks", query)).is_error
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        r = await c.call_tool("retrieve_relevant_chunks", query)  # the 4th counted call
        assert envelope(r)["code"] == "quota_exceeded"
    assert usage["by_tool"] == [
        {"tool": "retrieve_relevant_chunks", "calls": 1, "errors": 0},
        {"tool": "slack_list_channels", "calls": 1, "errors": 1},
    ]
    world.runtime.recorder.flush()
    events = world.runtime.store.query_events(world.a.id, status="error", limit=200)
    codes = [e.error_code for e in events]
    assert codes == ["quota_exceeded", "upstream_auth_failed", *["forbidden"] * 10]


async def test_a_flood_of_refused_calls_stores_a_budget_and_a_summary(world) -> None:
    """Refused calls count toward nothing, so a client can make them as fast as it likes:
    each tenant's first REFUSALS_STORED of a minute are stored in full, the rest are summed up
    in one event per type when the minute ends, which the history and the recent-events
    resource show with its count per code. Another tenant's events of that minute are all
    stored. The minute is the recorder's clock's, moved by hand here."""
    from generator.runtime.recorder import REFUSAL_WINDOW_US, REFUSALS_STORED

    store, a, b = world.runtime.store, world.a.id, world.b.id
    minute = [now_us() // REFUSAL_WINDOW_US * REFUSAL_WINDOW_US]
    world.runtime.recorder.clock = lambda: minute[0]
    extra = 40  # beyond the budget: half unknown tools, half refused arguments
    async with Client(world.server(world.a_rw)) as c:
        for i in range(REFUSALS_STORED + extra):
            if i % 2:
                with pytest.raises(MCPError, match="Unknown tool"):
                    await c.call_tool(f"no_such_tool_{i}", {})
            else:
                r = await c.call_tool("slack_send_message", {"channel": "C1"})
                assert envelope(r)["code"] == "invalid_arguments"
        store.set_plan(a, "tiny")  # 3 calls a day, then 5 quota refusals
        for i in range(8):
            r = await c.call_tool("fastn_list_integrations", {})
            assert r.is_error == (i >= 3)
    async with Client(world.server(world.b_rw)) as c:
        for _ in range(3):
            with pytest.raises(MCPError, match="Unknown tool"):
                await c.call_tool("no_such_tool", {})
    world.runtime.recorder.flush()
    refused = store.query_events(a, status="error", limit=1000)
    assert len(refused) == REFUSALS_STORED
    assert len(store.query_events(b, status="error", limit=1000)) == 3

    minute[0] += REFUSAL_WINDOW_US  # the minute is over: reading the events sums it up
    store.set_plan(a, "starter")
    async with Client(world.server(world.a_rw)) as c:
        hist = await c.call_tool("fastn_get_event_history", {"status": "error", "limit": 3})
        recent = json.loads((await c.read_resource("gateway://events/recent")).contents[0].text)
        quota = await c.call_tool("fastn_get_event_history", {"type": "quota_exceeded"})
        (over,) = quota.structured_content["events"]
    # newest first: the quota refusals came last
    quota_summary, calls, newest_stored = hist.structured_content["events"]
    assert quota_summary == over
    assert (calls["type"], calls["status"], calls["tool"], calls["error_code"]) == (
        "tool_call",
        "error",
        None,
        None,
    )
    details = calls["details"]
    assert details["refused_calls"] == extra
    assert details["codes"] == {"invalid_arguments": extra // 2, "unknown_tool": extra // 2}
    assert details["first_at"] <= details["last_at"] == calls["at"]
    assert "not stored one by one" in details["note"]
    assert newest_stored["id"] == refused[0].id and newest_stored["at"] <= details["first_at"]
    assert (over["tool"], over["error_code"]) == ("fastn_list_integrations", "quota_exceeded")
    assert over["details"]["refused_calls"] == 5
    assert over["details"]["codes"] == {"quota_exceeded": 5}
    assert quota_summary in recent["events"] and calls in recent["events"]
    # At most the budget and one summary per type, whatever the flood.
    assert len(store.query_events(a, status="error", limit=1000)) == REFUSALS_STORED + 2
    assert len(store.query_events(b, status="error", limit=1000)) == 3


async def test_a_full_disk_answers_storage_unavailable_and_logs_once_a_minute(
    world, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that cannot grow (SQLite's own SQLITE_FULL, as on a full disk): each
    update_memory logged a traceback and answered internal_error. It answers
    storage_unavailable (retryable), the first failure is logged with its traceback and the
    next ones once a minute in a line; once the database can grow again, writes work."""
    from sqlalchemy import event

    engine = world.runtime.store.engine

    def cap(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    big = [{"text": f"w{i} " * 900} for i in range(20)]  # 72 KB, distinct words
    caplog.set_level(logging.ERROR, logger="generator.runtime.server")
    event.listen(engine, "connect", cap)
    engine.dispose()  # connections open again, capped
    try:
        clock = [1000.0]  # the failure log's, moved by hand: a second per call
        world.runtime.storage_failures.clock = lambda: clock[0]

        async def write() -> dict[str, Any]:
            clock[0] += 1
            return envelope(await c.call_tool("update_memory", {"observations": big}))

        async with Client(world.server(world.a_rw)) as c:
            errors = [await write() for _ in range(5)]
            assert {(e["code"], e["retryable"]) for e in errors} == {
                ("storage_unavailable", True)
            }, errors
            assert "disk is full" in errors[0]["message"], errors[0]
            assert errors[0]["details"] == {"reason": "disk_full"}
            logged = [r for r in caplog.records if r.name == "generator.runtime.server"]
            assert len(logged) == 1 and logged[0].exc_info is not None, logged
            assert "database or disk is full" in logged[0].getMessage()
            clock[0] += 30
            await write()  # 35 s after the first
            assert len([r for r in caplog.records if r.name == logged[0].name]) == 1
            clock[0] += 24
            await write()  # a minute after the first
            logged = [r for r in caplog.records if r.name == logged[0].name]
            assert len(logged) == 2 and logged[1].exc_info is None, logged
            line = logged[1].getMessage()
            assert "disk is full): 6 more in the last 60 s, failing for 60 s" in line, line
    finally:
        event.remove(engine, "connect", cap)
        engine.dispose()
    async with Client(world.server(world.a_rw)) as c:
        done = await c.call_tool("update_memory", {"observations": big[:1]})
        assert not done.is_error, done


async def test_integration_status_counts_no_refused_call(world) -> None:
    """Refused calls count toward no usage, so fastn_get_integration_status's calls and
    errors leave them out too: those stored one by one and the summary of the rest (which was
    counted as one call and one error, whatever number of calls it sums up)."""
    from generator.runtime.recorder import REFUSAL_WINDOW_US, REFUSALS_STORED

    minute = [now_us() // REFUSAL_WINDOW_US * REFUSAL_WINDOW_US]
    world.runtime.recorder.clock = lambda: minute[0]
    async with Client(world.server(world.a_rw)) as c:
        for _ in range(2):
            r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
            assert not r.is_error, r
        for _ in range(REFUSALS_STORED + 5):
            r = await c.call_tool("slack_send_message", {"channel": "C1"})
            assert envelope(r)["code"] == "invalid_arguments"
        minute[0] += REFUSAL_WINDOW_US  # the summary of the 5 is written
        status = await c.call_tool("fastn_get_integration_status", {"connector": "slack"})
    summaries = [
        e
        for e in world.runtime.store.query_events(world.a.id, status="error", limit=1000)
        if e.details and "refused_calls" in e.details
    ]
    assert [(s.connector, s.details["refused_calls"]) for s in summaries] == [("slack", 5)]
    got = status.structured_content
    assert (got["calls_24h"], got["errors_24h"], got["error_rate_24h"]) == (2, 0, 0.0), got


@pytest.mark.parametrize("mode", MODES)
async def test_handler_exceptions_never_leak(world, monkeypatch, mode: str) -> None:
    async def boom(call: Any, args: Any) -> dict[str, Any]:
        raise ValueError("secret-internal-detail xoxb-acme")

    async def bad_shape(call: Any, args: Any) -> dict[str, Any]:
        return {"integrations": "not-a-list"}

    monkeypatch.setitem(native.HANDLERS, "native.get_usage_summary", boom)
    monkeypatch.setitem(native.HANDLERS, "native.list_integrations", bad_shape)
    async with Client(world.server(world.a_rw), mode=mode) as c:
        r = await c.call_tool("fastn_get_usage_summary", {})
        assert envelope(r)["code"] == "internal_error"
        assert "secret" not in r.content[0].text and "xoxb" not in r.content[0].text
        r = await c.call_tool("fastn_list_integrations", {})
        assert envelope(r)["code"] == "internal_error"


@pytest.mark.parametrize("mode", MODES)
async def test_protocol_handler_exceptions_never_leak(world, monkeypatch, mode: str) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("db password=hunter2")

    monkeypatch.setattr(world.runtime.index, "listing", boom)
    async with Client(world.server(world.a_rw), mode=mode) as c:
        with pytest.raises(MCPError) as exc:
            await c.list_tools(cache_mode="bypass")
    assert "hunter2" not in exc.value.message
    assert exc.value.error.data["error"]["code"] == "internal_error"


async def test_revoked_key_stops_working_mid_session(world, sqlite_store: Store) -> None:
    key_id = sqlite_store.lookup_key(world.a_read).info.id
    async with Client(world.server(world.a_read)) as c:
        assert (await c.list_tools()).tools
        sqlite_store.revoke_key(key_id)
        with pytest.raises(MCPError) as exc:
            await c.list_tools(cache_mode="bypass")
    assert exc.value.error.data["error"]["code"] == "unauthenticated"


async def test_listing_pages_with_cursor(world) -> None:
    world.runtime.page_size = 4
    async with Client(world.server(world.a_rw)) as c:
        first = await c.list_tools(cache_mode="bypass")
        assert len(first.tools) == 4 and first.next_cursor
        names = await all_tools(c)
        with pytest.raises(MCPError) as exc:
            await c.list_tools(cursor="!!garbage!!", cache_mode="bypass")
    assert len(names) == len(set(names)) > 8
    assert names == sorted(names)
    assert exc.value.error.data["error"]["code"] == "invalid_arguments"


async def test_connect_and_disconnect_change_the_next_listing(world) -> None:
    rt = world.runtime
    async with Client(world.server(world.b_rw)) as c:
        assert "shopify_list_orders" not in await all_tools(c)
        await rt.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "shpat-b"})
        assert "shopify_list_orders" in await all_tools(c)
        await rt.disconnect(world.b.id, "shopify")
        assert "shopify_list_orders" not in await all_tools(c)


async def test_changes_from_another_process_are_seen(world, sqlite_store: Store) -> None:
    """The admin CLI writes the database directly; the generation counter exposes it."""
    async with Client(world.server(world.b_rw)) as c:
        assert "shopify_list_orders" not in await all_tools(c)
        sqlite_store.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        assert "shopify_list_orders" in await all_tools(c)


async def test_calls_an_older_gateway_counts_under_the_month_are_announced(
    world, sqlite_store: Store
) -> None:
    """During a rolling upgrade, a gateway from before daily counting shares the database and
    counts a monthly plan's calls under the month's key: a listen stream hears of them too."""
    async with (
        Client(world.server(world.a_rw)) as c,
        c.listen(resource_subscriptions=["gateway://usage"]) as sub,
    ):
        await world.runtime.poll_changes()  # the baseline
        month = usage_day(now_us())[:7]
        older = UsageDelta(world.a.id, month, "slack_send_message", "slack", calls=1, errors=0)
        sqlite_store.write_batch([], [older])
        await world.runtime.poll_changes()
        assert await updates_until(sub, {"gateway://usage"}) == {"gateway://usage"}


async def test_list_changed_notification_legacy(world) -> None:
    got: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            got.append(method)

    async with Client(world.server(world.b_rw), mode="legacy", message_handler=on_message) as c:
        caps = c.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed
        await c.list_tools()
        await world.runtime.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        with anyio.fail_after(5):
            while "notifications/tools/list_changed" not in got:
                await anyio.sleep(0.01)
    assert "notifications/resources/list_changed" in got


async def test_a_revoked_keys_legacy_session_is_told_nothing_more(
    world, sqlite_store: Store
) -> None:
    """A handshake-era session hears that the lists changed while its key is valid: once the
    key is revoked (and the change poll has run), a change of its tenant reaches it no more;
    a session of a valid key still hears it."""
    heard: dict[str, list[str]] = {"revoked": [], "valid": []}

    def recorder(name: str) -> Any:
        async def on_message(message: Any) -> None:
            method = getattr(getattr(message, "root", message), "method", None)
            if method:
                heard[name].append(method)

        return on_message

    revoked = sqlite_store.issue_key(world.b.id, scopes=["read", "write"])
    async with (
        Client(
            world.server(revoked.token), mode="legacy", message_handler=recorder("revoked")
        ) as r,
        Client(world.server(world.b_rw), mode="legacy", message_handler=recorder("valid")) as v,
    ):
        await r.list_tools()
        await v.list_tools()
        sqlite_store.revoke_key(revoked.info.id)
        await world.runtime.poll_changes()
        await world.runtime.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        with anyio.fail_after(5):
            while "notifications/tools/list_changed" not in heard["valid"]:
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)
    assert heard["revoked"] == []


async def test_list_changed_notification_modern(world) -> None:
    async with Client(world.server(world.b_rw)) as c, c.listen(tools_list_changed=True) as sub:
        await world.runtime.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        with anyio.fail_after(5):
            async for event in sub:
                assert type(event).__name__ == "ToolsListChanged"
                break


ASH_PROFILE = "memory://users/ash/profile"
ALEX_PROFILE = "memory://users/alex/profile"
ASH_LOG = "memory://users/ash/log"
WATCHED = (
    ASH_PROFILE,
    ALEX_PROFILE,
    ASH_LOG,
    "gateway://usage",
    "gateway://events/recent",
    "gateway://integrations",
    "gateway://integrations/slack",
    "gateway://integrations/shopify",
)


async def remember(world: Any, key: str, text: str, **kw: Any) -> None:
    async with Client(world.server(key, **kw)) as c:
        r = await c.call_tool("update_memory", {"observations": [{"text": text}]})
        assert not r.is_error, r.content


async def test_subscribed_resources_are_told_when_they_change(world) -> None:
    """A 2026-07-28 client subscribed to resources hears of each change to them, and only of
    what its session could read: its own memory, not another user's of the same tenant."""
    async with (
        Client(world.server(world.a_rw)) as c,
        c.listen(resource_subscriptions=WATCHED) as sub,
    ):
        # Alex's profile is another user's: not acknowledged, as it is never heard.
        assert set(sub.honored.resource_subscriptions or ()) == set(WATCHED) - {ALEX_PROFILE}
        await remember(world, world.a_host, "Alex prefers email", asserted_user="alex")
        await remember(world, world.a_rw, "Ash likes tea")
        # Alex's update came first: had it been announced, it would be announced by now.
        got = await updates_until(sub, {ASH_PROFILE, "memory://users/ash/log"})
        assert ALEX_PROFILE not in got
        assert got <= {*WATCHED} - {"gateway://integrations/slack"}

        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
        assert not r.is_error, r.content
        wanted = {"gateway://events/recent", "gateway://usage", "gateway://integrations/slack"}
        assert await updates_until(sub, wanted) == wanted

        await world.runtime.disconnect(world.a.id, "shopify")
        # The connection's own resources changed (and the events); Slack's did not.
        got = await updates_until(sub, {"gateway://integrations", "gateway://integrations/shopify"})
        assert "gateway://integrations/slack" not in got


async def test_resource_updates_follow_what_the_session_may_read(world) -> None:
    """A host key bound to no user reads every user's memory, so it hears of every user's
    updates; another tenant hears of nothing; a key without the read scope reads no resource
    and hears of none, though it still hears that its tools changed."""
    async with (
        Client(world.server(world.a_host)) as host,
        host.listen(resource_subscriptions=WATCHED) as host_sub,
        Client(world.server(world.b_rw)) as other,
        other.listen(resource_subscriptions=WATCHED) as b,
        Client(world.server(world.a_write)) as writer,
        writer.listen(tools_list_changed=True, resource_subscriptions=WATCHED) as w_sub,
    ):
        await remember(world, world.a_rw, "Ash likes tea")
        await remember(world, world.a_host, "Alex prefers email", asserted_user="alex")
        r = await host.call_tool("shopify_list_orders", {})
        assert not r.is_error, r.content
        assert {ASH_PROFILE, ALEX_PROFILE} <= await updates_until(
            host_sub, {ASH_PROFILE, ALEX_PROFILE}
        )
        await world.runtime.connect(world.a.id, "github", {"token": "ghp-a"})
        with anyio.fail_after(5):
            async for event in w_sub:
                # Tenant A's calls came first: had they been announced, they would be first.
                assert type(event).__name__ == "ToolsListChanged", event
                break
        r = await other.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
        assert not r.is_error, r.content
        # Tenant A's calls came first: B hears only of its own.
        got = await updates_until(b, {"gateway://integrations/slack"})
        assert not got & {ASH_PROFILE, ALEX_PROFILE, "gateway://integrations/shopify"}


async def test_a_stream_is_acknowledged_only_what_it_will_hear(world) -> None:
    """The acknowledgement names the resources the session may read: not another user's
    memory, nor a URI of no resource; a key without the read scope is acknowledged none (it
    still hears its list changes). A stream subscribes to a bounded number of resources."""
    from generator.runtime.server import MAX_STREAM_SUBSCRIPTIONS

    asked = (*WATCHED, "gateway://nothing", "memory://users/ash/elsewhere")
    async with Client(world.server(world.a_rw)) as c:
        async with c.listen(resource_subscriptions=asked) as sub:
            assert set(sub.honored.resource_subscriptions or ()) == set(WATCHED) - {ALEX_PROFILE}
        async with c.listen(resource_subscriptions=[ALEX_PROFILE]) as sub:
            assert not sub.honored.resource_subscriptions
        many = [f"{ASH_LOG}?after_version={i}" for i in range(MAX_STREAM_SUBSCRIPTIONS + 1)]
        with pytest.raises(MCPError) as refused:
            async with c.listen(resource_subscriptions=many):
                pass
        err = refused.value.error.data["error"]
        assert err["code"] == "invalid_arguments" and err["details"]["limit"] == 1000, err
        async with c.listen(resource_subscriptions=many[:-1]) as sub:
            assert sub.honored.resource_subscriptions == [ASH_LOG]
    async with (
        Client(world.server(world.a_write)) as writer,
        writer.listen(tools_list_changed=True, resource_subscriptions=WATCHED) as w_sub,
    ):
        assert not w_sub.honored.resource_subscriptions
        assert w_sub.honored.tools_list_changed


async def test_a_stream_is_acknowledged_and_told_only_what_a_read_resolves(world) -> None:
    """A subscription resolves as a read does: a connector the tenant has not connected (or
    that does not exist), another tenant's user, a user never registered, a query the resource
    does not take are read as not_found and left out of the acknowledgement, and nothing about
    them reaches the stream, even once they would resolve (it hears what it was acknowledged)."""

    async def not_found(c: Client, uri: str) -> None:
        with pytest.raises(MCPError) as refused:
            await c.read_resource(uri)
        assert refused.value.error.data["error"]["code"] == "not_found", uri

    slack, shopify = "gateway://integrations/slack", "gateway://integrations/shopify"
    unreadable = [shopify, "gateway://integrations/nosuchconnector", "gateway://usage?x=1"]
    async with (
        Client(world.server(world.b_rw)) as c,
        c.listen(resource_subscriptions=[slack, *unreadable]) as sub,
    ):
        assert sub.honored.resource_subscriptions == [slack]
        for uri in unreadable:
            await not_found(c, uri)
        await world.runtime.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
        assert not r.is_error, r.content
        # The connection came first: had it been announced, it would be by now.
        assert shopify not in await updates_until(sub, {slack})

    newcomer = "memory://users/newcomer/profile"
    unreadable = ["memory://users/bo/profile", newcomer, f"{ASH_PROFILE}?after_version=1"]
    async with (
        Client(world.server(world.a_host)) as c,
        c.listen(resource_subscriptions=[ALEX_PROFILE, *unreadable]) as sub,
    ):
        assert sub.honored.resource_subscriptions == [ALEX_PROFILE]
        for uri in unreadable:
            await not_found(c, uri)
        await world.runtime.run_db(world.runtime.store.register_user, world.a.id, "newcomer")
        await remember(world, world.a_host, "Newcomer likes jazz", asserted_user="newcomer")
        await remember(world, world.a_host, "Alex prefers email", asserted_user="alex")
        assert newcomer not in await updates_until(sub, {ALEX_PROFILE})


async def test_reconnecting_an_active_connection_updates_its_resources(world) -> None:
    """New credentials for an active connection change when it was connected, its health and
    the events, though not its state: its resources are announced (the lists are not)."""
    async with (
        Client(world.server(world.a_rw)) as c,
        c.listen(resource_subscriptions=WATCHED) as sub,
    ):
        await world.runtime.connect(world.a.id, "slack", {"bot_token": "xoxb-acme"})
        wanted = {"gateway://integrations", "gateway://integrations/slack"}
        assert wanted <= await updates_until(sub, wanted)


async def test_a_quota_refusal_does_not_announce_the_connectors_status(world) -> None:
    """The status counts a connector's calls; a refused call is not one (but it is an event)."""
    await world.runtime.run_db(world.runtime.store.set_plan, world.a.id, "tiny_slack")
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "1"})
        assert not r.is_error, r.content
        async with c.listen(resource_subscriptions=WATCHED) as sub:
            r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "2"})
            assert r.is_error and "quota" in r.content[0].text, r.content
            await remember(world, world.a_rw, "Ash likes tea")  # then something that is
            got = await updates_until(sub, {ASH_PROFILE})
    assert "gateway://integrations/slack" not in got and "gateway://events/recent" in got


async def test_a_subscription_hears_its_resource_however_its_uri_is_written(world) -> None:
    """A value percent-encoded otherwise, or a log page's `next_uri`, reads the same resource:
    the subscription is acknowledged under the URI its updates are announced with."""
    odd = ("memory://users/%61sh/profile", "memory://users/ash/log?after_version=0")
    async with Client(world.server(world.a_rw)) as c, c.listen(resource_subscriptions=odd) as sub:
        assert sub.honored.resource_subscriptions == [ASH_PROFILE, "memory://users/ash/log"]
        await remember(world, world.a_rw, "Ash likes tea")
        wanted = {ASH_PROFILE, "memory://users/ash/log"}
        assert await updates_until(sub, wanted) == wanted


async def test_an_expired_keys_stream_hears_nothing_more(world) -> None:
    """Expiry, like revocation, ends what a key may hear: at once on its stream, and the next
    poll ends the stream."""
    store = world.runtime.store
    short = store.issue_key(world.a.id, scopes=["read"], user="ash", ttl_days=1.0 / 86400)
    async with (
        Client(world.server(short.token)) as c,
        c.listen(resource_subscriptions=WATCHED) as sub,
    ):
        await anyio.sleep(max(0.0, (short.info.expires_at - now_us()) / 1e6) + 0.05)
        await remember(world, world.a_host, "Ash likes tea", asserted_user="ash")
        with anyio.move_on_after(0.5):
            async for event in sub:
                raise AssertionError(f"an expired key's stream heard {event}")
        await world.runtime.poll_changes()
        with anyio.fail_after(5):
            async for event in sub:
                raise AssertionError(f"unexpected {event}")


async def test_a_stream_whose_client_stopped_reading_frees_its_place(world, monkeypatch) -> None:
    """Its writes wait on the client: after LISTEN_WRITE_TIMEOUT the stream ends, and the
    tenant may open another (it used to hold its place until the connection died)."""
    import mcp.types as types
    from mcp.server import ServerRequestContext

    from generator.runtime import resources, server

    monkeypatch.setattr(server, "MAX_LISTEN_STREAMS", 1)
    monkeypatch.setattr(server, "LISTEN_WRITE_TIMEOUT", 0.2)
    notifier = world.runtime.notifier
    principal = await world.runtime.verifier.verify(world.a_rw)
    stuck = anyio.Event()  # never set: the client never reads again

    class Session:
        sent = 0

        async def send_notification(self, *args: Any, **kwargs: Any) -> None:
            Session.sent += 1
            if Session.sent > 1:  # the acknowledgement went out, then the socket filled
                await stuck.wait()

    ctx: Any = ServerRequestContext(
        session=Session(),  # type: ignore[arg-type]
        lifespan_context={},
        protocol_version="2026-07-28",
        method="subscriptions/listen",
        request_id=7,
    )
    params = types.SubscriptionsListenRequestParams(
        notifications=types.SubscriptionFilter(resource_subscriptions=["gateway://usage"])
    )
    async with anyio.create_task_group() as tg:

        async def listen() -> None:
            with pytest.raises(TimeoutError):
                await notifier.listen(principal, ctx, params, lambda uri: True)

        tg.start_soon(listen)
        await anyio.sleep(0.05)
        notifier.updated(world.a.id, resources.Change(usage=True))
        with anyio.fail_after(5):
            while notifier._streams[world.a.id]:  # noqa: SLF001
                await anyio.sleep(0.02)


async def test_no_listen_stream_opens_once_the_gateway_is_stopping(world) -> None:
    async with Client(world.server(world.a_rw)) as c:
        async with c.listen(tools_list_changed=True) as sub:
            await world.runtime.aclose()
            with anyio.fail_after(5):
                async for event in sub:  # ended gracefully
                    raise AssertionError(f"unexpected {event}")
        with pytest.raises(MCPError) as exc:
            async with c.listen(tools_list_changed=True):
                pass
        assert "shutting down" in exc.value.error.message


async def test_a_tenant_cannot_hold_every_listen_stream(world, monkeypatch) -> None:
    from generator.runtime import server

    monkeypatch.setattr(server, "MAX_LISTEN_STREAMS", 2)
    async with Client(world.server(world.a_rw)) as c, c.listen(tools_list_changed=True):
        async with c.listen(tools_list_changed=True):
            with pytest.raises(MCPError) as exc:
                async with c.listen(tools_list_changed=True):
                    pass
            assert exc.value.error.data["error"]["code"] == "rate_limited"
        async with Client(world.server(world.b_rw)) as other, other.listen(tools_list_changed=True):
            pass  # another tenant's streams are its own
        async with c.listen(tools_list_changed=True):
            pass  # a closed stream frees its place


async def test_other_tenant_gets_no_notification(world) -> None:
    got: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            got.append(method)

    async with Client(world.server(world.a_rw), mode="legacy", message_handler=on_message) as c:
        await c.list_tools()
        await world.runtime.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        await anyio.sleep(0.2)
    assert "notifications/tools/list_changed" not in got


async def test_whole_runtime_on_postgres(pg_world) -> None:
    w = pg_world
    async with Client(w.server(w.a_rw)) as c:
        a = set(await all_tools(c))
        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "pg"})
        assert not r.is_error, r.content
        r = await c.call_tool("update_memory", {"observations": [{"text": "Ash drinks green tea"}]})
        assert not r.is_error, r.content
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "tea"})
        assert r.structured_content["chunks"][0]["text"] == "Ash drinks green tea"
        hist = (
            await c.call_tool("fastn_get_event_history", {"type": "tool_call"})
        ).structured_content
        assert {e["tool"] for e in hist["events"]} >= {"slack_send_message", "update_memory"}
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        assert usage["calls"] >= 4
        st = (
            await c.call_tool("fastn_get_integration_status", {"connector": "slack"})
        ).structured_content
        assert st["calls_24h"] == 1 and st["last_success_at"]
    async with Client(w.server(w.b_rw)) as c:
        b = set(await all_tools(c))
        hist = (await c.call_tool("fastn_get_event_history", {})).structured_content
        assert all(e["tool"] != "slack_send_message" for e in hist["events"])
    assert "shopify_list_orders" in a - b
    w.runtime.store.set_plan(w.b.id, "tiny")
    async with Client(w.server(w.b_rw)) as c:
        results = [await c.call_tool("fastn_list_integrations", {}) for _ in range(4)]
    # the tiny plan counts every call of the day, the one made under the monthly plan too
    assert [r.is_error for r in results] == [False, False, True, True]


@pytest.fixture(params=["world", "pg_world"])
def any_world(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


async def test_a_tool_name_the_database_cannot_store_stops_no_one_being_recorded(
    any_world: Any,
) -> None:
    """An unknown tool's name goes into the caller's event log. A name PostgreSQL cannot hold
    in a text column (a NUL character) must not make the batch it is written in unwritable:
    that batch carries every tenant's events and usage."""
    w = any_world
    async with Client(w.server(w.a_rw)) as c:
        with pytest.raises(MCPError, match="Unknown tool"):
            await c.call_tool("no\x00such_tool", {})
    async with Client(w.server(w.b_rw)) as c:
        assert not (await c.call_tool("fastn_list_integrations", {})).is_error
        hist = await c.call_tool("fastn_get_event_history", {"type": "tool_call"})
        assert not hist.is_error, hist.content
        assert [e["tool"] for e in hist.structured_content["events"]] == ["fastn_list_integrations"]
        usage = (await c.call_tool("fastn_get_usage_summary", {})).structured_content
        assert usage["calls"] == 2  # the summary's own call is counted once it is over
    async with Client(w.server(w.a_rw)) as c:
        hist = await c.call_tool("fastn_get_event_history", {"type": "tool_call"})
        (event,) = hist.structured_content["events"]
        assert event["error_code"] == "unknown_tool" and event["tool"] == "no\ufffdsuch_tool"


def test_dispatch_tables_match_the_handler_names_the_compiler_accepts() -> None:
    from generator.runtime import resources
    from generator.runtime.handler_names import RESOURCE_HANDLERS, TOOL_HANDLERS
    from generator.runtime.server import _SHORTENABLE, TOOL_HANDLER_NAMES

    assert set(TOOL_HANDLER_NAMES) == set(TOOL_HANDLERS)
    assert set(_SHORTENABLE) <= set(TOOL_HANDLERS)  # a renamed handler is not forgotten there
    assert set(resources.READERS) == set(resources.UPDATES) == set(RESOURCE_HANDLERS)


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("hubspot_list_contacts", {"limit": 2}),
        # Entity search calls the connector too: a refresh there must be stored just the same.
        ("fastn_search_entities", {"entity_type": "contact", "query": "ada"}),
    ],
)
async def test_refreshed_oauth_credentials_are_stored_back(
    sqlite_store: Store, gateway, tool: str, args: dict[str, Any]
) -> None:
    """HubSpot answers 401 to an expired token; the executor refreshes it at the token URL and
    the server stores the new token (encrypted), so the next call needs no refresh."""
    from tests.runtime.upstreams import HS_APP, hubspot_creds

    async with hubspot_gateway(sqlite_store, gateway) as (rt, hub, tenant_id):
        old = hub.issue("portalA")
        hub.expire(old)
        sqlite_store.connect(tenant_id, "hubspot", hubspot_creds(old))
        key = sqlite_store.issue_key(tenant_id).token
        async with Client(rt.build_server(api_key=key)) as c:
            r = await c.call_tool(tool, args)
            assert not r.is_error, r.content
            assert hub.refreshes == 1
            rec = sqlite_store.get_connection(tenant_id, "hubspot")
            assert rec is not None and rec.state == "active"
            stored = sqlite_store.open_credentials(rec)
            assert (
                stored["access_token"] not in (old, "") and stored["client_id"] == HS_APP.client_id
            )
            assert stored["access_token"] not in (rec.sealed_credentials or "")
            r = await c.call_tool("hubspot_list_contacts", {"limit": 2})
            assert not r.is_error and hub.refreshes == 1


async def test_a_cancelled_call_is_recorded_as_cancelled(world, upstream) -> None:
    """A client that gives up on a slow call cancels it (notifications/cancelled): the server
    stops waiting for the upstream, and the call's history says it was cancelled, not that
    it succeeded."""
    upstream.slack_delay = 3.0
    try:
        async with Client(world.server(world.b_rw), read_timeout_seconds=0.3) as c:
            with pytest.raises(MCPError):
                await c.call_tool("slack_list_channels", {})
            with anyio.fail_after(5):
                while True:  # the cancellation reaches the server's handler asynchronously
                    hist = await c.call_tool("fastn_get_event_history", {"limit": 20})
                    calls = [
                        e
                        for e in hist.structured_content["events"]
                        if e["tool"] == "slack_list_channels"
                    ]
                    if calls:
                        break
                    await anyio.sleep(0.05)
    finally:
        upstream.slack_delay = 0.0
    assert [(e["status"], e["error_code"]) for e in calls] == [("error", "cancelled")]


@asynccontextmanager
async def hubspot_gateway(
    sqlite_store: Store, gateway, *, rotate_refresh_tokens: bool = False
) -> AsyncIterator[tuple[Any, Any, str]]:
    """A runtime whose HubSpot is the stand-in with two accounts (portals A and B), and the
    tenant `acme`: (runtime, stand-in, tenant id)."""
    from generator.runtime.executor import ConnectorExecutor
    from generator.runtime.server import GatewayRuntime
    from tests.runtime.upstreams import HS_APP, HS_REFRESH_A, HS_REFRESH_B, HubSpotUpstream

    hub = HubSpotUpstream(
        HS_APP,
        {HS_REFRESH_A: "portalA", HS_REFRESH_B: "portalB"},
        rotate_refresh_tokens=rotate_refresh_tokens,
    )
    hub.start()
    try:
        executor = ConnectorExecutor(
            gateway,
            base_urls={"hubspot": hub.url},
            token_urls={"hubspot": f"{hub.url}/oauth/v1/token"},
        )
        rt = GatewayRuntime(gateway, sqlite_store, executor=executor, recorder_interval=0.05)
        try:
            yield rt, hub, sqlite_store.create_tenant("acme").id
        finally:
            await rt.aclose()
    finally:
        hub.stop()


async def reconnect_during_first_call(
    rt: Any, key: str, tenant_id: str, hub: Any, waiting_for: tuple[str, str], creds: Any
) -> tuple[Any, Any]:
    """Call hubspot_list_contacts, reconnect HubSpot with `creds` while that call waits for
    the stand-in's `waiting_for` (method, path) request, then call again: both results."""
    results: list[Any] = []
    async with Client(rt.build_server(api_key=key)) as c:

        async def first() -> None:
            results.append(await c.call_tool("hubspot_list_contacts", {"limit": 10}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            with anyio.fail_after(10):
                while not hub.requests(*waiting_for):
                    await anyio.sleep(0.01)
            await rt.connect(tenant_id, "hubspot", creds)
        results.append(await c.call_tool("hubspot_list_contacts", {"limit": 10}))
    return results[0], results[1]


def emails(result: Any) -> set[str]:
    assert not result.is_error, result.content
    return {x["properties"]["email"] for x in result.structured_content["contacts"]}


async def test_a_token_refreshed_by_a_call_begun_before_a_reconnection_is_not_stored(
    sqlite_store: Store, gateway
) -> None:
    """The tenant reconnects HubSpot to another account while a call through the old
    connection is refreshing its expired token: the old account's new token belongs to the
    old connection, and must not replace the new connection's credentials."""
    from tests.runtime.upstreams import HS_REFRESH_A, HS_REFRESH_B, Fault, hubspot_creds

    async with hubspot_gateway(sqlite_store, gateway) as (rt, hub, tenant_id):
        old = hub.issue("portalA")
        hub.expire(old)
        sqlite_store.connect(tenant_id, "hubspot", hubspot_creds(old, HS_REFRESH_A))
        key = sqlite_store.issue_key(tenant_id).token
        hub.fail_next("POST", "/oauth/v1/token", Fault(status=None, delay=0.5))
        new = hubspot_creds(hub.issue("portalB"), HS_REFRESH_B)
        before, after = await reconnect_during_first_call(
            rt, key, tenant_id, hub, ("POST", "/oauth/v1/token"), new
        )
        assert emails(before) and all(e.endswith("@portalA.example") for e in emails(before))
        assert emails(after) and all(e.endswith("@portalB.example") for e in emails(after))
        rec = sqlite_store.get_connection(tenant_id, "hubspot")
        assert rec is not None and sqlite_store.open_credentials(rec) == new


async def test_an_auth_failure_of_a_call_begun_before_a_reconnection_spares_the_new_one(
    sqlite_store: Store, gateway
) -> None:
    """A call through credentials that HubSpot no longer accepts fails after the tenant has
    reconnected with good ones: the new connection stays active and its tools usable."""
    from tests.runtime.upstreams import HS_REFRESH_B, Fault, hubspot_creds

    async with hubspot_gateway(sqlite_store, gateway) as (rt, hub, tenant_id):
        revoked = hubspot_creds("hs-access-revoked", "hs-refresh-revoked")
        sqlite_store.connect(tenant_id, "hubspot", revoked)
        key = sqlite_store.issue_key(tenant_id).token
        hub.fail_next("GET", "/crm/v3/objects/contacts", Fault(status=None, delay=0.5))
        new = hubspot_creds(hub.issue("portalB"), HS_REFRESH_B)
        before, after = await reconnect_during_first_call(
            rt, key, tenant_id, hub, ("GET", "/crm/v3/objects/contacts"), new
        )
        assert json.loads(before.content[0].text)["error"]["code"] == "upstream_auth_failed"
        assert emails(after) and all(e.endswith("@portalB.example") for e in emails(after))
        rec = sqlite_store.get_connection(tenant_id, "hubspot")
        assert rec is not None and rec.state == "active" and rec.last_error is None


async def test_a_rotated_refresh_token_is_stored_even_if_the_call_is_then_cancelled(
    sqlite_store: Store, gateway
) -> None:
    """A provider that rotates refresh tokens invalidates the stored one when it answers a
    refresh. The new one is stored at once: a client that then gives up on the call (the
    retried request is slow) cancels the call, not the stored tokens."""
    from tests.runtime.upstreams import HS_REFRESH_A, Fault, hubspot_creds

    async with hubspot_gateway(sqlite_store, gateway, rotate_refresh_tokens=True) as (
        rt,
        hub,
        tenant_id,
    ):
        old = hub.issue("portalA")
        hub.expire(old)
        sqlite_store.connect(tenant_id, "hubspot", hubspot_creds(old))
        key = sqlite_store.issue_key(tenant_id).token
        # The first request meets the expired token (401); the one after the refresh hangs.
        hub.fail_next("GET", "/crm/v3/objects/contacts", Fault(None), Fault(None, delay=3.0))
        async with Client(rt.build_server(api_key=key), read_timeout_seconds=0.5) as c:
            with pytest.raises(MCPError):
                await c.call_tool("hubspot_list_contacts", {"limit": 2})
        assert hub.refreshes == 1
        rec = sqlite_store.get_connection(tenant_id, "hubspot")
        assert rec is not None and rec.state == "active"
        stored = sqlite_store.open_credentials(rec)
        assert stored["refresh_token"] in hub.grants and stored["refresh_token"] != HS_REFRESH_A
        assert HS_REFRESH_A not in hub.grants  # rotated away: the stored one is the live one
        assert stored["access_token"] != old


async def test_a_flow_name_with_control_characters_is_invalid_arguments(world) -> None:
    """PostgreSQL cannot store a NUL: such a name is refused as the caller's mistake, with
    the same envelope as the flow's other problems, on every store alike."""
    flow = {
        "name": "weekly\x00digest",
        "trigger": {"type": "schedule", "cron": "0 9 * * 1"},
        "steps": [{"tool": "shopify_list_orders"}],
    }
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("fastn_create_flow", flow)
        ok = await c.call_tool("fastn_create_flow", {**flow, "name": "weekly digest"})
    err = envelope(r)
    assert err["code"] == "invalid_arguments"
    assert [e["path"] for e in err["details"]["errors"]] == ["/name"]
    assert ok.structured_content["version"] == 1  # nothing was stored under the bad name


async def test_credentials_sealed_with_another_key_are_a_permanent_not_connected(world) -> None:
    """Credentials the gateway's key cannot open (sealed by an admin shell given another key)
    make that connection's tools answer not_connected, not retryable: no retry opens them. An
    entity search reports the connection as a failed source instead of failing whole, and the
    tenant's other connections keep working."""
    from generator.runtime.crypto import CredentialCipher, generate_key

    runtime = world.runtime
    other = Store(runtime.store.engine, runtime.gateway, CredentialCipher([generate_key()]))
    other.connect(world.a.id, "slack", {"bot_token": "xoxb-acme"})
    async with Client(world.server(world.a_rw)) as c:
        err = envelope(await c.call_tool("slack_list_channels", {}))
        assert (err["code"], err["retryable"]) == ("not_connected", False)
        assert err["details"] == {"connector": "slack", "reason": "credentials_unreadable"}
        found = await c.call_tool("fastn_search_entities", {"entity_type": "channel", "query": "x"})
        assert not found.is_error, found.content
        assert found.structured_content["sources"] == [
            {"connector": "slack", "status": "error", "count": 0, "error": "not_connected"}
        ]
        assert not (await c.call_tool("shopify_list_orders", {})).is_error


async def refused_flow(world: Any, flow: dict[str, Any]) -> dict[str, Any]:
    """The invalid_arguments envelope of creating `flow` as ash: the stores are unchanged
    (no flow, no flow_created event)."""
    async with Client(world.server(world.a_rw)) as c:
        err = envelope(await c.call_tool("fastn_create_flow", flow))
    assert err["code"] == "invalid_arguments", err
    await nothing_stored(world)
    return err


async def nothing_stored(world: Any) -> None:
    """Tenant A has no flow and no flow_created event."""
    await world.runtime.flush_records()
    assert world.runtime.store.list_flows(world.a.id) == []
    assert world.runtime.store.query_events(world.a.id, type_="flow_created") == []


async def created_flow(world: Any, flow: dict[str, Any]) -> dict[str, Any]:
    async with Client(world.server(world.a_rw)) as c:
        r = await c.call_tool("fastn_create_flow", flow)
    assert not r.is_error, r.content
    return r.structured_content


async def test_an_event_trigger_names_an_event_type_the_gateway_records(world) -> None:
    """No event of type nonsense_event is ever recorded, so a flow it triggers could never
    run: refused at /trigger/event, naming the types there are (it was saved as version 1)."""
    flow = {
        "name": "ev",
        "trigger": {"type": "event", "event": "nonsense_event"},
        "steps": [{"tool": "fastn_get_usage_summary"}],
    }
    err = await refused_flow(world, flow)
    [problem] = err["details"]["errors"]
    assert problem["path"] == "/trigger/event" and '"nonsense_event"' in problem["message"]
    assert all(t in problem["message"] for t in EVENT_TYPES)
    for event in EVENT_TYPES:
        ok = await created_flow(world, {**flow, "trigger": {"type": "event", "event": event}})
        assert ok["name"] == "ev"
    assert ok["version"] == len(EVENT_TYPES)


async def test_a_tool_filter_applies_to_events_that_name_a_tool(world) -> None:
    """Only tool_call and quota_exceeded events name a tool: a connect trigger limited to
    slack_send_message was saved, though no connect event names a tool, so it never fired."""
    flow = {
        "name": "ev",
        "trigger": {"type": "event", "event": "connect", "tool": "slack_send_message"},
        "steps": [{"tool": "fastn_get_usage_summary"}],
    }
    for event in sorted(set(EVENT_TYPES) - {"tool_call", "quota_exceeded"}):
        err = await refused_flow(world, {**flow, "trigger": {**flow["trigger"], "event": event}})
        assert err["details"]["errors"] == [
            {
                "path": "/trigger/tool",
                "message": f"{event} events name no tool, so none would start this flow; "
                "a tool applies to tool_call and quota_exceeded events",
            }
        ]
    for event in ("tool_call", "quota_exceeded"):
        trigger = {**flow["trigger"], "event": event}
        assert (await created_flow(world, {**flow, "trigger": trigger}))["name"] == "ev"


def test_every_event_type_enum_is_the_one_the_gateway_records(gateway) -> None:
    """The model reads the event types from the tools' schemas (a flow's trigger.event had
    none: any string was offered); each lists exactly those the store records."""
    history = gateway.tools["fastn_get_event_history"]
    trigger = gateway.tools["fastn_create_flow"].input_schema["properties"]["trigger"]
    enums = [
        history.input_schema["properties"]["type"].get("enum"),
        history.output_schema["properties"]["events"]["items"]["properties"]["type"].get("enum"),
        trigger["properties"]["event"].get("enum"),
    ]
    assert enums == [list(EVENT_TYPES)] * 3


async def test_an_unrecorded_event_is_refused_where_the_schema_lists_none(
    world, sqlite_store: Store, gateway, upstream
) -> None:
    """create_flow does not rely on the manifest for the event types: with a native manifest
    whose trigger.event is any string, nonsense_event is still refused, by the gateway's
    own list."""
    spec = gateway.tools["fastn_create_flow"]
    schema = json.loads(json.dumps(spec.input_schema))
    schema["properties"]["trigger"]["properties"]["event"] = {"type": "string"}
    tools = {**gateway.tools, spec.name: dataclasses.replace(spec, input_schema=schema)}
    rt = make_runtime(sqlite_store, dataclasses.replace(gateway, tools=tools), upstream)
    flow = {
        "name": "ev",
        "trigger": {"type": "event", "event": "nonsense_event"},
        "steps": [{"tool": "fastn_get_usage_summary"}],
    }
    try:
        async with Client(rt.build_server(api_key=world.a_rw)) as c:
            err = envelope(await c.call_tool("fastn_create_flow", flow))
        await rt.flush_records()
    finally:
        await rt.aclose()
    assert err["details"]["errors"] == [
        {
            "path": "/trigger/event",
            "message": "'nonsense_event' is not an event type the gateway records; one of "
            + ", ".join(EVENT_TYPES),
        }
    ]
    await nothing_stored(world)


async def test_a_schedule_trigger_takes_a_cron_that_fires(world) -> None:
    """Only the number of cron fields was checked: 99 99 * * * was saved, though no minute
    99 ever comes. Each field must be in its range and written as cron writes it (`*`, `a`,
    `a-b`, `*/n`, `a-b/n`, lists of these; month and weekday names), and a day restricted
    while the weekday is `*` must come in one of the months."""
    refused = {
        "99 99 * * *": "minute field '99': 99 is not in 0-59",
        "0 24 * * *": "hour field '24': 24 is not in 0-23",
        "0 9 0 * *": "day field '0': 0 is not in 1-31",
        "0 9 * 13 *": "month field '13': 13 is not in 1-12",
        "0 9 * * 8": "weekday field '8': 8 is not in 0-7",
        "0 9 * foo *": "month field 'foo': 'foo' is not a number or jan-dec",
        "0 9 * * fri-mon": "weekday field 'fri-mon': range fri-mon runs backwards",
        "5/10 * * * *": "minute field '5/10': a step applies to * or a range, not '5/10'",
        "*/0 * * * *": "minute field '*/0': step 0 is not in 1-60",
        "1,,2 * * * *": "minute field '1,,2': '' is not a number",
        "0 0 30 2 *": "day 30 never comes in month 2",
        "0 0 31 4,6 */2": "day 31 never comes in month 4 or 6",
        "@daily": "a schedule trigger needs a 5-field cron (minute hour day month weekday)",
    }
    accepted = [
        "0 9 * * 1",
        "*/15 0-23/2 1,15 jan-dec/3 MON-Fri",
        "0 0 29 2 *",
        "0 0 31 2 1",  # Mondays in February: cron ORs a restricted day and weekday
        "*/60 * * * sun",
        "0 0 * * 7",
    ]
    flow: dict[str, Any] = {"name": "ok", "steps": [{"tool": "fastn_get_usage_summary"}]}
    seen: dict[str, list[dict[str, str]]] = {}
    async with Client(world.server(world.a_rw)) as c:
        for cron in refused:
            trigger = {"type": "schedule", "cron": cron}
            err = envelope(await c.call_tool("fastn_create_flow", {**flow, "trigger": trigger}))
            assert err["code"] == "invalid_arguments", err
            seen[cron] = err["details"]["errors"]
        await nothing_stored(world)
        versions = []
        for cron in accepted:
            trigger = {"type": "schedule", "cron": cron}
            r = await c.call_tool("fastn_create_flow", {**flow, "trigger": trigger})
            assert not r.is_error, (cron, r.content)
            versions.append(r.structured_content["version"])
    assert seen == {k: [{"path": "/trigger/cron", "message": m}] for k, m in refused.items()}
    assert versions == list(range(1, len(accepted) + 1))


async def test_a_trigger_takes_only_the_fields_of_its_type(world) -> None:
    """Each optional trigger field belongs to one trigger type (cron: schedule; event and
    tool: event) and is refused on the others at its own path. {type: manual, cron: '* * * *
    *'} was saved with its cron; a stray event or tool was reported at /trigger."""
    only = {
        "cron": "cron applies to schedule triggers only",
        "event": "event applies to event triggers only",
        "tool": "tool applies to event triggers only",
    }
    refused: list[tuple[dict[str, str], list[str]]] = [
        ({"type": "manual", "cron": "* * * * *"}, ["cron"]),
        ({"type": "event", "event": "tool_call", "cron": "0 9 * * 1"}, ["cron"]),
        ({"type": "manual", "event": "tool_call"}, ["event"]),
        ({"type": "manual", "tool": "slack_send_message"}, ["tool"]),
        (
            {"type": "schedule", "cron": "0 9 * * 1", "event": "connect", "tool": "x"},
            ["event", "tool"],
        ),
    ]
    flow: dict[str, Any] = {"name": "ok", "steps": [{"tool": "fastn_get_usage_summary"}]}
    async with Client(world.server(world.a_rw)) as c:
        for trigger, fields in refused:
            err = envelope(await c.call_tool("fastn_create_flow", {**flow, "trigger": trigger}))
            assert err["code"] == "invalid_arguments", err
            assert err["details"]["errors"] == [
                {"path": f"/trigger/{f}", "message": only[f]} for f in fields
            ], trigger
        await nothing_stored(world)
        for trigger in (
            {"type": "manual"},
            {"type": "event", "event": "tool_call", "tool": "slack_send_message"},
        ):
            r = await c.call_tool("fastn_create_flow", {**flow, "trigger": trigger})
            assert not r.is_error, (trigger, r.content)


async def test_a_step_takes_the_arguments_its_tool_accepts(world) -> None:
    """A step's arguments were stored unchecked: {tool: slack_send_message, arguments:
    {channel: 1}} was saved, a call the gateway refuses. They are checked by the validator
    of a call of that tool, each problem at its place in the flow, and the flow's error lists
    at most MAX_ERRORS of them."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("slack_send_message", {"channel": 1, "text": "hi"}),
        ("slack_send_message", {"channel": "C1"}),
        ("shopify_list_orders", {"limit": 0, "nope": True}),
        ("fastn_get_usage_summary", {}),
    ]
    async with Client(world.server(world.a_rw)) as c:
        expected = []
        for i, (tool, arguments) in enumerate(steps):
            r = await c.call_tool(tool, arguments)
            if not r.is_error:
                continue
            for e in envelope(r)["details"]["errors"]:
                inner = "" if e["path"] == "/" else e["path"]
                expected.append({"path": f"/steps/{i}/arguments{inner}", "message": e["message"]})
        assert [e["path"] for e in expected] == [
            "/steps/0/arguments/channel",
            "/steps/1/arguments",
            "/steps/2/arguments",
            "/steps/2/arguments/limit",
        ]
        flow: dict[str, Any] = {
            "name": "ok",
            "trigger": {"type": "manual"},
            "steps": [{"tool": t, "arguments": a} for t, a in steps],
        }
        err = envelope(await c.call_tool("fastn_create_flow", flow))
        assert err["code"] == "invalid_arguments"
        assert err["details"]["errors"] == expected
        assert err["message"] == "The flow is invalid: " + "; ".join(
            f"{e['path']}: {e['message']}" for e in expected[:3]
        )
        # no arguments at all are checked as {}: slack_send_message needs channel and text
        bare = {**flow, "steps": [{"tool": "slack_send_message"}] * 30}
        err = envelope(await c.call_tool("fastn_create_flow", bare))
        assert err["details"]["errors"][:2] == [
            {"path": "/steps/0/arguments", "message": '"channel" is a required property'},
            {"path": "/steps/0/arguments", "message": '"text" is a required property'},
        ]
        assert len(err["details"]["errors"]) == MAX_ERRORS
        await nothing_stored(world)
        ok = {**flow, "steps": [{"tool": t, "arguments": {}} for t, _ in steps[2:]]}
        assert not (await c.call_tool("fastn_create_flow", ok)).is_error


async def test_a_result_larger_than_the_gateway_sends_is_result_too_large(
    world, upstream, sqlite_store: Store
) -> None:
    """Tool results had no size cap: 1,000 Slack channels (the schema allows `limit=1000`) came
    back as 160 KB of text and as much structured content, over what clients accept (Claude
    Code: 25,000 tokens). A result over the gateway's `max_result_bytes` (100,000 by default)
    is a `result_too_large` tool error that asks for a smaller `limit`, recorded as a failed
    call; a smaller page is served."""
    upstream.slack_channels = 1000
    try:
        async with Client(world.server(world.b_rw)) as c:
            big = await c.call_tool("slack_list_channels", {"limit": 1000})
            small = await c.call_tool("slack_list_channels", {"limit": 200})
            await world.runtime.flush_records()
    finally:
        upstream.slack_channels = 1
    error = envelope(big)
    assert error["code"] == "result_too_large" and error["retryable"] is False
    details = error["details"]
    assert details["limit_bytes"] == 100_000 and details["size_bytes"] > 300_000
    assert details["size_input"] == "limit" and details["tool"] == "slack_list_channels"
    assert (
        "Ask for less: a smaller `limit` (the rest comes page by page), or narrower"
        in error["message"]
    )
    # The cap measures what the wire carries: both copies of the data, as JSON.
    assert not small.is_error and len(small.structured_content["channels"]) == 200
    sent = len(small.content[0].text.encode()) * 2
    assert 50_000 < sent < 100_000
    events = sqlite_store.query_events(world.b.id, type_="tool_call", limit=5)
    assert [(e.status, e.error_code) for e in events] == [
        ("ok", None),
        ("error", "result_too_large"),
    ]
    assert (
        events[1].details is not None and events[1].details["result_bytes"] == details["size_bytes"]
    )
    # The upstream was called: the call counts against the quota like any other.
    assert sqlite_store.usage_totals(world.b.id, period_bounds("month", now_us())[0])[0] == 2


async def test_the_result_size_cap_is_the_gateway_manifests(tmp_path, upstream, cipher) -> None:
    """`server.max_result_bytes` in the gateway manifest sets the cap. A tool that may change
    data has run when its result is refused: the error says so, and asks for no repeat."""
    import shutil

    from generator import api

    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    manifest = tmp_path / "manifests" / "gateway.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            "  name: fastn-gateway\n", "  name: fastn-gateway\n  max_result_bytes: 2000\n", 1
        )
    )
    spec, diagnostics = api.gateway_spec(api.Options.for_project(tmp_path, cache=False))
    assert spec is not None, diagnostics
    assert spec.max_result_bytes == 2000
    store = Store(make_engine(str(tmp_path / "gw.db")), spec, cipher)
    store.migrate()
    runtime = make_runtime(store, spec, upstream)
    try:
        w = populate(store, upstream, runtime)
        async with Client(w.server(w.b_rw)) as c:
            short = await c.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
            long = await c.call_tool("slack_send_message", {"channel": "C1", "text": "x" * 1500})
    finally:
        await runtime.aclose()
        store.dispose()
    assert not short.is_error
    error = envelope(long)
    assert error["code"] == "result_too_large" and error["details"]["limit_bytes"] == 2000
    assert error["message"].startswith("slack_send_message ran, but its result is ")
    assert "Do not call it again" in error["message"] and "size_input" not in error["details"]


async def test_the_gateways_own_lists_end_early_to_fit_the_result_size_cap(
    tmp_path, upstream, cipher
) -> None:
    """The gateway's own paged and ranked lists are cut to fit rather than refused: at
    `limit=200` the event history took about 108 KB and was `result_too_large` with the
    default cap, though the schema allows 200, and 50 memory chunks of 4,000 characters could
    never be retrieved. Now a page ends early (its next_cursor goes on after the last event
    shown, so paging reads every event once) and a ranking keeps its best items; a note says
    what was left out, and the call's event counts it."""
    import shutil

    from generator import api

    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    manifest = tmp_path / "manifests" / "gateway.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            "  name: fastn-gateway\n", "  name: fastn-gateway\n  max_result_bytes: 6000\n", 1
        )
    )
    spec, diagnostics = api.gateway_spec(api.Options.for_project(tmp_path, cache=False))
    assert spec is not None, diagnostics
    store = Store(make_engine(str(tmp_path / "gw.db")), spec, cipher)
    store.migrate()
    runtime = make_runtime(store, spec, upstream)
    try:
        w = populate(store, upstream, runtime)
        async with Client(w.server(w.b_rw)) as c:
            for i in range(40):
                await c.call_tool("slack_send_message", {"channel": "C1", "text": f"m{i}"})
            await runtime.flush_records()
            every = [e.id for e in store.query_events(w.b.id, limit=1000)]
            pages: list[Any] = []
            cursor: str | None = None
            while True:
                args: dict[str, Any] = {"limit": 200}
                if cursor is not None:
                    args["cursor"] = cursor
                page = await c.call_tool("fastn_get_event_history", args)
                assert not page.is_error, page.content
                pages.append(page)
                cursor = page.structured_content["next_cursor"]
                if cursor is None:
                    break
            memories = [{"text": f"Bo likes tea number {i}. " + "x" * 1500} for i in range(5)]
            await c.call_tool("update_memory", {"observations": memories})
            chunks = await c.call_tool("retrieve_relevant_chunks", {"query": "tea", "top_k": 5})
            await runtime.flush_records()
    finally:
        await runtime.aclose()
        store.dispose()
    seen = [e["id"] for p in pages for e in p.structured_content["events"]]
    assert len(pages) > 2 and seen == every[: len(seen)]
    assert set(every) - set(seen) <= set(every[-1:])  # this history call's own event, maybe
    first = pages[0]
    assert len(first.content) == 2 and first.content[1].text.startswith(
        f"This result shows the first {len(first.structured_content['events'])} of 41 events:"
    )
    assert "next_cursor goes on from the next event" in first.content[1].text
    assert not chunks.is_error and 1 <= len(chunks.structured_content["chunks"]) < 5
    assert "Those left out rank lowest; ask with a smaller `top_k`" in chunks.content[1].text
    for result in (*pages, chunks):
        wire = sum(len(json.dumps(b.text).encode()) for b in result.content)
        assert wire + len(result.content[0].text.encode()) <= 6000
    # both copies of the data stay equal
    assert json.loads(first.content[0].text) == first.structured_content
    events = {e.tool: e for e in reversed(store.query_events(w.b.id, limit=5))}
    assert events["retrieve_relevant_chunks"].details == {
        "left_out": 5 - len(chunks.structured_content["chunks"])
    }


def _wire_bytes(text: str) -> int:
    """What a resource's text takes on the wire: a JSON string, in UTF-8."""
    return len(json.dumps(text, ensure_ascii=False).encode())


async def test_memory_resources_are_cut_to_the_result_size_cap(
    tmp_path, gateway, upstream, cipher
) -> None:
    """Memory resources had no size cap (a log page of 1,000 long observations read as 12 MB
    in one answer) while tool results are held to `max_result_bytes`. Now a log page ends
    early where the next version would take it over the cap (a version that alone is larger
    is a page of its own), and its next_uri goes on from there: paging reads every version
    exactly once. The profile leaves out its recent items, then facts, and says so."""
    limit = 6000
    spec = dataclasses.replace(gateway, max_result_bytes=limit)
    store = Store(make_engine(str(tmp_path / "gw.db")), spec, cipher)
    store.migrate()
    runtime = make_runtime(store, spec, upstream)
    try:
        w = populate(store, upstream, runtime)
        memory = runtime.memory
        facts = [
            {"text": f"Fact {i}: " + "寿司" * 150, "topic": f"topic {i}", "tags": [f"tag {i}"]}
            for i in range(20)
        ]
        memory.update_memory(w.a.id, "ash", facts)
        memory.update_memory(w.a.id, "ash", [{"text": "Long: " + "寿" * 2000}])  # version 21
        memory.update_memory(w.a.id, "ash", [{"text": f"Short {i}."} for i in range(10)])
        pages: list[tuple[int, dict[str, Any]]] = []
        async with Client(w.server(w.a_rw)) as c:
            uri: str | None = "memory://users/ash/log"
            while uri is not None:
                text = (await c.read_resource(uri)).contents[0].text
                pages.append((_wire_bytes(text), json.loads(text)))
                uri = pages[-1][1]["next_uri"]
            text = (await c.read_resource("memory://users/ash/profile")).contents[0].text
            profile_bytes, profile = _wire_bytes(text), json.loads(text)
    finally:
        await runtime.aclose()
        store.dispose()
    versions = [e["version"] for _size, page in pages for e in page["entries"]]
    assert versions == list(range(1, 32))
    assert len(pages) > 4
    for size, page in pages:
        shown = [e["version"] for e in page["entries"]]
        assert size <= limit or shown == [21], (size, shown)
        if page["next_uri"] is not None:
            assert page["next_uri"] == f"memory://users/ash/log?after_version={shown[-1]}"
    assert pages[-1][1]["next_uri"] is None
    assert profile_bytes <= limit
    assert profile["facts_truncated"] is True and 0 < len(profile["facts"]) < 20
    assert profile["recent"] == [] and profile["items"]["active"] == 31
    assert "memory://users/ash/log" in profile["note"] and "20 recent items" in profile["note"]


async def test_recent_events_are_cut_to_the_result_size_cap(
    tmp_path, gateway, upstream, cipher
) -> None:
    """gateway://events/recent read its 50 events whatever their size, and an event of refused
    arguments holds their errors. Over `max_result_bytes` the oldest are left out, a note says
    so, and the history tool goes on from its next_cursor with the very next event."""
    limit = 6000
    spec = dataclasses.replace(gateway, max_result_bytes=limit)
    store = Store(make_engine(str(tmp_path / "gw.db")), spec, cipher)
    store.migrate()
    runtime = make_runtime(store, spec, upstream)
    try:
        w = populate(store, upstream, runtime)
        async with Client(w.server(w.a_rw)) as c:
            for i in range(30):
                refused = await c.call_tool("slack_list_channels", {"limit": f"{i} " + "x" * 150})
                assert refused.is_error
            text = (await c.read_resource("gateway://events/recent")).contents[0].text
            recent = json.loads(text)
            newest = [e.id for e in store.query_events(w.a.id, limit=50)]  # 30 calls, 2 connects
            after: list[str] = []
            cursor = recent["next_cursor"]
            while cursor is not None:  # the history's pages are cut to the cap too
                page = await c.call_tool("fastn_get_event_history", {"cursor": cursor})
                assert page.structured_content is not None
                after += [e["id"] for e in page.structured_content["events"]]
                cursor = page.structured_content["next_cursor"]
    finally:
        await runtime.aclose()
        store.dispose()
    assert _wire_bytes(text) <= limit
    shown = [e["id"] for e in recent["events"]]
    assert 0 < len(shown) < 30 and len(newest) == 32
    left = len(newest) - len(shown)
    assert f"The oldest {left} of the 32 most recent events are left out" in recent["note"]
    assert shown + after == newest


async def test_a_whole_float_passes_as_the_integer_it_is(world, upstream) -> None:
    """JSON Schema counts 5.0 as an integer, so it passed `limit` and `top_k`, but the upstream
    got `limit=5.0` (Slack, like most APIs, wants digits) and the memory tool refused it
    (audit finding). Arguments reach every tool with whole floats written as integers."""
    upstream.slack_channels = 3
    try:
        async with Client(world.server(world.a_rw)) as c:
            channels = await c.call_tool("slack_list_channels", {"limit": 5.0})
            chunks = await c.call_tool("retrieve_relevant_chunks", {"query": "x", "top_k": 5e0})
            fraction = await c.call_tool("slack_list_channels", {"limit": 2.5})
    finally:
        upstream.slack_channels = 1
    assert not channels.is_error, channels.content
    assert len(channels.structured_content["channels"]) == 3
    assert not chunks.is_error, chunks.content
    assert envelope(fraction)["code"] == "invalid_arguments"


def test_the_page_size_input_is_the_one_that_fills_the_size_param(gateway) -> None:
    from generator.runtime import catalog as c
    from generator.runtime.server import size_input

    spec = gateway.tools["slack_list_channels"]
    assert size_input(spec) == "limit"  # no size_param: the usual name
    paged = dataclasses.replace(
        spec,
        input_schema={"type": "object", "properties": {"rows": {"type": "integer"}}},
        http=dataclasses.replace(
            spec.http,
            query={"maxRows": "{rows}"},
            pagination=c.Pagination(style="offset", param="start", size_param="maxRows"),
        ),
    )
    assert size_input(paged) == "rows"
    assert size_input(gateway.tools["slack_send_message"]) is None


async def test_failure_log_lines_name_the_tenant(
    world, upstream, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "connector call failed: tool=shopify_list_orders code=upstream_auth_failed ..." and
    "tool ... failed" did not say whose call it was, in a log every tenant's calls share: both
    name the tenant by id now (as the other log lines do), never its credentials."""
    upstream.shopify_tokens.discard("shpat-acme")
    caplog.set_level("INFO")
    try:
        async with Client(world.server(world.a_rw)) as c:
            r = await c.call_tool("shopify_list_orders", {})
            assert envelope(r)["code"] == "upstream_auth_failed"

            def broken(*_args: Any) -> Any:
                raise RuntimeError("a bug in the store")

            monkeypatch.setattr(world.runtime.store, "usage_rows", broken)
            r = await c.call_tool("fastn_get_usage_summary", {})
            assert envelope(r)["code"] == "internal_error"
    finally:
        upstream.shopify_tokens.add("shpat-acme")
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    upstream_line = next(m for m in failed if m.startswith("connector call failed"))
    assert f"tenant={world.a.id} tool=shopify_list_orders" in upstream_line, upstream_line
    tool_line = next(m for m in failed if m.startswith("tool fastn_get_usage_summary failed"))
    assert tool_line.endswith(f"for tenant {world.a.id}"), tool_line
    assert "shpat-acme" not in caplog.text
