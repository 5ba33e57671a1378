"""The gateway over streamable HTTP on 127.0.0.1 (uvicorn in a thread), through the SDK client."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from generator.runtime import app as app_module
from generator.runtime.app import build_http_app
from generator.runtime.store import Store, api_keys, now_us
from tests.runtime.support import UvicornThread, leaf_exception

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
INIT = {  # a 2025-11-25 client's first request, which opens a stateful session
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


@pytest.fixture(params=["stateful", "stateless"])
def http(request: pytest.FixtureRequest, world) -> Iterator[str]:
    app = build_http_app(world.runtime, stateless=request.param == "stateless", watch_interval=0.1)
    with UvicornThread(app, world.runtime) as srv:
        yield srv.url


@pytest.fixture(params=["json", "sse"])
def stateful(request: pytest.FixtureRequest, world) -> Iterator[str]:
    app = build_http_app(
        world.runtime, stateless=False, json_response=request.param == "json", watch_interval=0.1
    )
    with UvicornThread(app, world.runtime) as srv:
        yield srv.url


@asynccontextmanager
async def connect(
    base: str, key: str | None, *, mode: str = "auto", user: str | None = None, **kw: Any
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if user:
        headers["X-Gateway-User"] = user
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as h,
        Client(streamable_http_client(f"{base}/mcp", http_client=h), mode=mode, **kw) as c,
    ):
        yield c


async def names(c: Client) -> set[str]:
    out: set[str] = set()
    cursor = None
    while True:
        page = await c.list_tools(cursor=cursor, cache_mode="bypass")
        out |= {t.name for t in page.tools}
        cursor = page.next_cursor
        if not cursor:
            return out


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_two_tenants_over_http(http: str, world, upstream, mode: str) -> None:
    async with connect(http, world.a_rw, mode=mode) as c:
        a = await names(c)
        r = await c.call_tool("slack_send_message", {"channel": "C9", "text": "over http"})
        assert not r.is_error and r.structured_content["channel"] == "C9"
        assert upstream.requests[-1] == ("/slack/chat.postMessage", "xoxb-acme")
    async with connect(http, world.b_rw, mode=mode) as c:
        b = await names(c)
        with pytest.raises(MCPError) as exc:
            await c.call_tool("shopify_list_orders", {})
        assert exc.value.message == "Unknown tool: shopify_list_orders"
        r = await c.call_tool("fastn_get_event_history", {"limit": 200})
        assert all(e["tool"] != "slack_send_message" for e in r.structured_content["events"])
    assert "shopify_list_orders" in a and "shopify_list_orders" not in b


async def test_auth_failures_are_http_401(http: str, world, sqlite_store: Store) -> None:
    revoked = sqlite_store.issue_key(world.a.id)
    sqlite_store.revoke_key(revoked.info.id)
    expired = sqlite_store.issue_key(world.a.id)
    with sqlite_store.write() as conn:
        conn.execute(
            api_keys.update()
            .where(api_keys.c.id == expired.info.id)
            .values(expires_at=now_us() - 1)
        )
    cases = {
        "missing": {},
        "unknown": {"Authorization": "Bearer gwk_not-a-real-key"},
        "expired": {"Authorization": f"Bearer {expired.token}"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "not bearer": {"Authorization": f"Basic {world.a_rw}"},
    }
    async with httpx2.AsyncClient() as h:
        for label, headers in cases.items():
            r = await h.post(f"{http}/mcp", json=LIST, headers={**ACCEPT, **headers})
            assert r.status_code == 401, label
            assert r.headers["www-authenticate"].startswith("Bearer"), label
            assert "gwk_" not in r.text
        ok = await h.post(
            f"{http}/mcp",
            json=LIST,
            headers={
                **ACCEPT,
                "Authorization": f"Bearer {world.a_rw}",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
        assert ok.status_code != 401  # stateful mode wants an initialize first (400)
    with pytest.raises(BaseException) as exc:  # noqa: B017 - the SDK raises an ExceptionGroup
        async with connect(http, revoked.token) as c:
            await c.list_tools()
    assert isinstance(leaf_exception(exc.value), MCPError)


async def test_scopes_over_http(http: str, world) -> None:
    async with connect(http, world.a_read) as c:
        visible = await names(c)
        with pytest.raises(MCPError, match="Unknown tool: fastn_create_flow"):
            await c.call_tool(
                "fastn_create_flow",
                {
                    "name": "x",
                    "trigger": {"type": "manual"},
                    "steps": [{"tool": "fastn_list_integrations"}],
                },
            )
    assert "fastn_create_flow" not in visible and "fastn_list_integrations" in visible


async def test_invalid_arguments_and_quota_over_http(http: str, world, sqlite_store: Store) -> None:
    sqlite_store.set_plan(world.a.id, "tiny")
    async with connect(http, world.a_rw, mode="legacy") as c:
        r = await c.call_tool("fastn_get_event_history", {"limit": 0})
        err = json.loads(r.content[0].text)["error"]
        assert r.is_error and err["code"] == "invalid_arguments"
        assert err["details"]["errors"][0]["path"] == "/limit"
        for _ in range(3):
            assert not (await c.call_tool("fastn_list_integrations", {})).is_error
        r = await c.call_tool("fastn_list_integrations", {})
        err = json.loads(r.content[0].text)["error"]
        assert (
            err["code"] == "quota_exceeded" and err["retryable"] and err["retry_after_seconds"] > 0
        )


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


LONE = "<lone surrogate>"  # written into the raw JSON as the escape \\ud800


async def raw_call(h: httpx2.AsyncClient, base: str, key: str, name: str, arguments: Any) -> Any:
    """A 2026-07-28 tools/call sent as raw JSON, each LONE in `arguments` as "\\ud800": the
    SDK's modern transport parses it with the standard library, so it reaches the server as a
    lone surrogate. Returns the tool's error envelope, or None when the call succeeded."""
    params = {"name": name, "arguments": arguments, "_meta": MODERN_META}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    r = await h.post(
        f"{base}/mcp",
        content=body.replace(LONE, "\\ud800").encode(),
        headers={
            **ACCEPT,
            "Authorization": f"Bearer {key}",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": name,
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    return json.loads(result["content"][0]["text"])["error"] if result.get("isError") else None


async def test_text_that_is_not_unicode_is_invalid_arguments_before_any_work(
    http: str, world, upstream
) -> None:
    """A lone surrogate is valid JSON but no text: refused with its path before an upstream
    request or a database write is made (it was internal_error), and not counted."""
    sent = len(upstream.requests)
    flow = {"name": "x" + LONE, "trigger": {"type": "manual"}, "steps": [{"tool": "x"}]}
    async with httpx2.AsyncClient() as h:
        for name, arguments, path in (
            ("slack_send_message", {"channel": "C1" + LONE, "text": "hi"}, "/channel"),
            (
                "update_memory",
                {"observations": [{"text": "t", "tags": [LONE]}]},
                "/observations/0/tags/0",
            ),
            ("fastn_create_flow", flow, "/name"),
        ):
            err = await raw_call(h, http, world.a_rw, name, arguments)
            assert err is not None and err["code"] == "invalid_arguments", (name, err)
            assert err["details"]["errors"][0]["path"] == path
            assert "surrogate" in err["details"]["errors"][0]["message"]
        assert await raw_call(h, http, world.a_rw, "fastn_list_integrations", {}) is None
        r = await h.post(
            f"{http}/register",
            content=json.dumps({"user": "a" + LONE}).replace(LONE, "\\ud800").encode(),
            headers={"Authorization": f"Bearer {world.a_host}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_arguments"
    assert len(upstream.requests) == sent
    await world.runtime.flush_records()
    assert world.runtime.memory.profile(world.a.id, "ash")["last_version"] == 0
    used = {r.tool: r.calls for r in world.runtime.store.usage_rows(world.a.id, _period())}
    assert used == {"fastn_list_integrations": 1}


async def test_arguments_a_handler_refuses_are_not_counted(
    http: str, world, sqlite_store: Store
) -> None:
    """Arguments refused after the schema check (a cursor that is not one, a flow step naming
    no tool) are refused like those the schema refuses: nothing counts toward the quota."""
    sqlite_store.set_plan(world.a.id, "tiny")  # 3 calls
    async with connect(http, world.a_rw) as c:
        for _ in range(4):
            r = await c.call_tool("fastn_get_event_history", {"cursor": "!!!"})
            assert r.is_error and "invalid_arguments" in r.content[0].text, r.content
            deep = base64.urlsafe_b64encode(b"[" * 1000).decode()
            r = await c.call_tool("fastn_get_event_history", {"cursor": deep})
            assert r.is_error and "invalid_arguments" in r.content[0].text, r.content
        for _ in range(3):
            assert not (await c.call_tool("fastn_list_integrations", {})).is_error
        r = await c.call_tool("fastn_list_integrations", {})
        assert r.is_error and "quota_exceeded" in r.content[0].text
    await world.runtime.flush_records()
    used = {r.tool: r.calls for r in sqlite_store.usage_rows(world.a.id, _period("day"))}
    assert used == {"fastn_list_integrations": 3}


async def test_register_and_assert_user(http: str, world) -> None:
    async with httpx2.AsyncClient() as h:
        r = await h.post(f"{http}/register", json={"user": "newbie"})
        assert r.status_code == 401
        r = await h.post(
            f"{http}/register",
            json={"user": "newbie"},
            headers={"Authorization": f"Bearer {world.a_read}"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        # ash's write key acts as ash: it may not add other users to the tenant
        r = await h.post(
            f"{http}/register",
            json={"user": "newbie"},
            headers={"Authorization": f"Bearer {world.a_rw}"},
        )
        assert r.status_code == 403 and "not bound to a user" in r.json()["error"]["message"]
        auth = {"Authorization": f"Bearer {world.a_host}"}
        r = await h.post(f"{http}/register", json={"nope": 1}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_arguments"
        r = await h.post(f"{http}/register", json={"user": "newbie"}, headers=auth)
        assert (
            r.status_code == 201 and r.json()["user"] == "newbie" and r.json()["tenant"] == "acme"
        )
        r = await h.post(f"{http}/register", json={"user": "newbie"}, headers=auth)
        assert r.status_code == 200 and r.json()["created"] is False
        health = await h.get(f"{http}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
    obs = {"observations": [{"text": "Newbie prefers email over calls", "topic": "channel"}]}
    async with connect(http, world.a_host, user="newbie") as c:
        assert not (await c.call_tool("update_memory", obs)).is_error
        r = await c.call_tool("search_or_ask", {"question": "Does the user prefer email?"})
        assert r.structured_content["found"] is True
    async with connect(http, world.a_host, user="ghost") as c:
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "email"})
        assert json.loads(r.content[0].text)["error"]["code"] == "forbidden"
    async with connect(http, world.b_rw, user="newbie") as c:  # B's key may not name users
        r = await c.call_tool("retrieve_relevant_chunks", {"query": "email"})
        assert json.loads(r.content[0].text)["error"]["code"] == "forbidden"


async def test_an_id_that_latin1_would_turn_into_another_is_refused(http: str, world) -> None:
    """The gateway reads X-Gateway-User as UTF-8 first, so `Ã¼` sent as Latin-1 bytes
    (0xC3 0xBC) reads as `ü`: registering `Ã¼` would let that header name `ü`, another user.
    Such an id is refused; ids whose Latin-1 bytes are not UTF-8 (`ü`, `日本`) are kept."""
    auth = {"Authorization": f"Bearer {world.a_host}"}
    async with httpx2.AsyncClient() as h:
        r = await h.post(f"{http}/register", json={"user": "Ã¼"}, headers=auth)
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "invalid_arguments", r.text
        assert "reads as the user 'ü'" in error["message"]
        for fine in ("ü", "日本", "Ã"):
            r = await h.post(f"{http}/register", json={"user": fine}, headers=auth)
            assert r.status_code == 201, r.text
    assert world.runtime.store.get_user(world.a.id, "Ã¼") is None


async def test_resources_are_tenant_scoped(http: str, world) -> None:
    async with connect(http, world.a_rw) as c:
        await c.call_tool("update_memory", {"observations": [{"text": "Ash likes tea"}]})
        listed = {r.uri for r in (await c.list_resources()).resources}
        assert {"gateway://integrations", "gateway://usage", "gateway://events/recent"} <= listed
        assert {"gateway://integrations/slack", "gateway://integrations/shopify"} <= listed
        assert "memory://users/ash/profile" in listed
        templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
        assert "gateway://integrations/{connector}" in templates
        integ = json.loads((await c.read_resource("gateway://integrations")).contents[0].text)
        assert [i["connector"] for i in integ["integrations"]] == ["shopify", "slack"]
        status = json.loads(
            (await c.read_resource("gateway://integrations/shopify")).contents[0].text
        )
        assert status["state"] == "active"
        profile = json.loads((await c.read_resource("memory://users/ash/profile")).contents[0].text)
        assert profile["items"]["active"] == 1
        log = json.loads((await c.read_resource("memory://users/ash/log")).contents[0].text)
        assert [e["text"] for e in log["entries"]] == ["Ash likes tea"]
        recent = json.loads((await c.read_resource("gateway://events/recent")).contents[0].text)
        assert any(e["tool"] == "update_memory" for e in recent["events"])
        usage = json.loads((await c.read_resource("gateway://usage")).contents[0].text)
        assert usage["calls"] >= 1
        with pytest.raises(MCPError) as other_user:
            await c.read_resource("memory://users/alex/profile")
    async with connect(http, world.b_rw) as c:
        errors = []
        for uri in (
            "gateway://integrations/shopify",  # A's connector
            "memory://users/ash/profile",  # A's user
            "memory://users/ash/log",
            "gateway://nope",
        ):
            with pytest.raises(MCPError) as exc:
                await c.read_resource(uri)
            errors.append(exc.value)
        recent = json.loads((await c.read_resource("gateway://events/recent")).contents[0].text)
        assert all(e["tool"] != "update_memory" for e in recent["events"])
    for e in [other_user.value, *errors]:
        assert e.error.data["error"]["code"] == "not_found"
        assert e.message.startswith("Resource not found: ")
    async with connect(http, world.a_host) as c:  # a host key reads any user of its tenant
        profile = json.loads((await c.read_resource("memory://users/ash/profile")).contents[0].text)
        assert profile["items"]["active"] == 1


async def test_the_memory_log_is_read_page_by_page(http: str, world) -> None:
    """A page holds at most 1,000 versions, and ends early where the next would take it over
    the 100,000 bytes a read may take (`max_result_bytes`); `next_uri` reads on from the last
    version shown, to the end."""
    memory = world.runtime.memory
    for batch in range(51):  # 1,020 versions, written as update_memory writes them
        observations = [{"text": f"fact {batch}.{i}"} for i in range(20)]
        memory.update_memory(world.a.id, "ash", observations)
    pages = []
    async with connect(http, world.a_rw) as c:
        uri: str | None = "memory://users/ash/log"
        while uri is not None:
            text = (await c.read_resource(uri)).contents[0].text
            assert len(json.dumps(text, ensure_ascii=False).encode()) <= 100_000
            pages.append(json.loads(text))
            uri = pages[-1]["next_uri"]
        last = pages[0]["entries"][-1]["version"]
        assert pages[0]["next_uri"] == f"memory://users/ash/log?after_version={last}"
        bad = []
        for query in ("?after_version=x", "?after_version=-1", "?after_version=", "?limit=5"):
            with pytest.raises(MCPError) as exc:
                await c.read_resource("memory://users/ash/log" + query)
            bad.append(exc.value.error.data["error"]["code"])
        assert bad == ["invalid_arguments"] * 3 + ["not_found"]  # limit: taken by no resource
        with pytest.raises(MCPError) as twice:
            await c.read_resource("memory://users/ash/log?after_version=1&after_version=2")
        assert twice.value.error.data["error"]["code"] == "not_found"
    assert len(pages) > 2 and all(len(p["entries"]) <= 1000 for p in pages)
    versions = [e["version"] for p in pages for e in p["entries"]]
    assert versions == list(range(1, 1021))
    async with connect(http, world.b_rw) as c:  # another tenant's link is not found
        with pytest.raises(MCPError) as other:
            await c.read_resource("memory://users/ash/log?after_version=1000")
        assert other.value.error.data["error"]["code"] == "not_found"


async def test_resources_need_the_read_scope(http: str, world) -> None:
    """Resources show what the read tools show: a write-only key sees and reads none."""
    async with connect(http, world.a_rw) as c:
        await c.call_tool("update_memory", {"observations": [{"text": "Ash likes tea"}]})
    async with connect(http, world.a_write) as c:
        assert (await c.list_resources()).resources == []
        assert (await c.list_resource_templates()).resource_templates == []
        for uri in ("gateway://events/recent", "gateway://usage", "memory://users/ash/log"):
            with pytest.raises(MCPError) as exc:
                await c.read_resource(uri)
            assert exc.value.error.data["error"]["code"] == "not_found"


async def test_a_host_key_bound_to_a_user_reads_only_that_users_memory(
    http: str, world, sqlite_store: Store
) -> None:
    async with connect(http, world.a_host, user="alex") as c:
        await c.call_tool("update_memory", {"observations": [{"text": "Alex likes jazz"}]})
    bound = sqlite_store.issue_key(world.a.id, scopes=["read"], host_app=True, user="ash").token
    async with connect(http, bound) as c:
        assert json.loads((await c.read_resource("memory://users/ash/log")).contents[0].text)
        with pytest.raises(MCPError) as exc:
            await c.read_resource("memory://users/alex/log")
        assert exc.value.error.data["error"]["code"] == "not_found"


async def test_a_host_key_bound_to_a_user_may_not_register_other_users(
    http: str, world, sqlite_store: Store
) -> None:
    """A key bound to one user acts as that user, whatever else it may do: it adds no other
    users to the tenant."""
    bound = sqlite_store.issue_key(
        world.a.id, scopes=["read", "write"], host_app=True, user="ash"
    ).token
    async with httpx2.AsyncClient() as h:
        r = await h.post(
            f"{http}/register",
            json={"user": "intruder"},
            headers={"Authorization": f"Bearer {bound}"},
        )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert sqlite_store.get_user(world.a.id, "intruder") is None


@pytest.mark.parametrize("user", ["nul\x00byte", "line\nbreak", "\x7f"])
async def test_register_refuses_a_user_id_with_control_characters(
    http: str, world, user: str
) -> None:
    """A user id is the host application's name for a person: control characters in it are a
    mistake (and PostgreSQL cannot store a NUL), refused with the JSON error, never stored."""
    async with httpx2.AsyncClient() as h:
        r = await h.post(
            f"{http}/register",
            json={"user": user},
            headers={"Authorization": f"Bearer {world.a_host}"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_arguments"
    assert "control characters" in r.json()["error"]["message"]
    assert world.runtime.store.get_user(world.a.id, user) is None


async def test_register_has_the_same_host_and_origin_checks_as_mcp(
    http: str, world, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="generator.runtime.app")
    auth = {"Authorization": f"Bearer {world.a_host}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as h:
        for headers, status, code, says in (
            ({"Host": "evil.example"}, 421, "forbidden", "host name 'evil.example'"),
            ({"Origin": "http://evil.example"}, 403, "forbidden", "--allowed-origin"),
            ({"Content-Type": "text/plain"}, 400, "invalid_arguments", "application/json"),
        ):
            r = await h.post(
                f"{http}/register", content=b'{"user": "rebound"}', headers={**auth, **headers}
            )
            mcp = await h.post(
                f"{http}/mcp", content=b"{}", headers={**auth, "Accept": "*/*", **headers}
            )
            for reply in (r, mcp):  # the SDK's plain-text refusal, as a JSON error with a reason
                assert reply.status_code == status, headers
                assert reply.headers["content-type"] == "application/json", headers
                error = reply.json()["error"]
                assert error["code"] == code and says in error["message"], error
    assert world.runtime.store.get_user(world.a.id, "rebound") is None
    # The operator learns, once, which option admits the refused name.
    hints = [r.getMessage() for r in caplog.records if "--allowed-host" in r.getMessage()]
    assert hints == [
        "refused requests for Host 'evil.example' (DNS-rebinding protection): if clients reach "
        "the gateway under that name, start it with --allowed-host evil.example"
    ]


async def test_an_oversized_body_gets_a_json_error_and_other_errors_pass_untouched(
    http: str, world
) -> None:
    from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

    auth = {"Authorization": f"Bearer {world.a_rw}", **ACCEPT}
    async with httpx2.AsyncClient() as h:
        big = await h.post(
            f"{http}/mcp", content=b" " * (DEFAULT_MAX_REQUEST_BODY_SIZE + 1), headers=auth
        )
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "invalid_arguments"
        # The gateway's own 403 (a user-bound key may not register users) is left as it is.
        bound = world.runtime.store.issue_key(world.a.id, scopes=["write"], user="ash").token
        own = await h.post(
            f"{http}/register",
            json={"user": "other"},
            headers={"Authorization": f"Bearer {bound}"},
        )
        assert own.status_code == 403
        assert "host application key" in own.json()["error"]["message"]
        # A JSON body that does not parse is JSON-RPC's own parse error, which clients read.
        for broken in (b"nope", b'{"jsonrpc": "2.0", "id": 1,'):
            garbled = await h.post(f"{http}/mcp", content=broken, headers=auth)
            assert garbled.status_code == 400
            assert garbled.json()["error"]["code"] == -32700, garbled.text
        garbled = await h.post(
            f"{http}/register",
            content=b"nope",
            headers={"Authorization": f"Bearer {world.a_host}", "Content-Type": "application/json"},
        )
        assert garbled.status_code == 400, garbled.text
        assert garbled.json()["error"]["code"] == "invalid_arguments"


async def test_json_that_is_no_request_gets_invalid_request_not_silence(http: str, world) -> None:
    """JSON-RPC's -32600 with id null and the reason: a request whose id is no string or
    integer was read as a notification and answered 202, and the client waited for ever."""
    headers = {
        **ACCEPT,
        "Authorization": f"Bearer {world.a_rw}",
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with httpx2.AsyncClient() as h:
        opened = await h.post(f"{http}/mcp", json=INIT, headers=headers)
        assert opened.status_code == 200, opened.text
        if "mcp-session-id" in opened.headers:
            headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        bad_id = "a request's id must be a string or an integer"
        for body, why in (
            ({**LIST, "id": {"n": 1}}, bad_id),
            ({**LIST, "id": None}, bad_id),
            ({**LIST, "id": 1.5}, bad_id),
            ({**LIST, "id": True}, bad_id),
            ([LIST], "a batch (a JSON array) is not accepted: send one message per request"),
            (
                {**LIST, "jsonrpc": "1.0"},
                "the body is not a JSON-RPC request, notification or response",
            ),
        ):
            r = await h.post(f"{http}/mcp", json=body, headers=headers)
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert r.json() == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": f"Invalid Request: {why}"},
            }
        # the session still answers a well-formed request, and a notification is still 202
        listed = await h.post(f"{http}/mcp", json={**LIST, "id": "x"}, headers=headers)
        assert listed.status_code == 200 and listed.json()["id"] == "x"
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await h.post(f"{http}/mcp", json=note, headers=headers)).status_code == 202


async def test_clean_shutdown_writes_every_record(world, sqlite_store: Store) -> None:
    world.runtime.recorder.interval = 3600  # no background flush: only shutdown can write
    app = build_http_app(world.runtime, stateless=True)
    with UvicornThread(app) as srv:
        async with connect(srv.url, world.b_rw) as c:
            for _ in range(25):
                assert not (await c.call_tool("slack_list_channels", {})).is_error
    events = sqlite_store.query_events(world.b.id, type_="tool_call", limit=100)
    assert len(events) == 25
    assert sqlite_store.usage_totals(world.b.id, _period())[0] == 25


def _period(period: str = "month") -> str:
    from generator.runtime.store import period_bounds

    return period_bounds(period, now_us())[0]


async def test_list_changed_over_stateful_http(stateful: str, world, sqlite_store: Store) -> None:
    got: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            got.append(method)

    async with connect(stateful, world.b_rw, mode="legacy", message_handler=on_message) as c:
        assert "shopify_list_orders" not in await names(c)
        # as the admin CLI would: another writer, straight to the database
        sqlite_store.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        with anyio.fail_after(10):
            while "notifications/tools/list_changed" not in got:
                await anyio.sleep(0.05)
        assert "shopify_list_orders" in await names(c)


async def test_list_changed_over_http_listen(stateful: str, world, sqlite_store: Store) -> None:
    async with connect(stateful, world.b_rw) as c, c.listen(tools_list_changed=True) as sub:
        sqlite_store.connect(world.b.id, "shopify", {"shop": "bravo", "access_token": "t"})
        with anyio.fail_after(10):
            async for event in sub:
                assert type(event).__name__ == "ToolsListChanged"
                break


async def test_resource_update_over_http_listen(stateful: str, world) -> None:
    profile = "memory://users/bo/profile"
    async with (
        connect(stateful, world.b_rw) as c,
        c.listen(resource_subscriptions=[profile]) as sub,
    ):
        r = await c.call_tool("update_memory", {"observations": [{"text": "Bo reads at night"}]})
        assert not r.is_error, r.content
        with anyio.fail_after(10):
            async for event in sub:
                assert event.uri == profile
                break
        assert "Bo reads at night" in (await c.read_resource(profile)).contents[0].text


async def test_a_revoked_keys_listen_stream_ends(stateful: str, world) -> None:
    """Revocation applies to every request at once; a listen stream opened before it is
    ended by the next poll (here every 0.1 s), before it hears of anything more."""
    principal = await world.runtime.verifier.verify(world.b_rw)
    profile = "memory://users/bo/profile"
    async with (
        connect(stateful, world.b_rw) as c,
        c.listen(resource_subscriptions=[profile]) as sub,
    ):
        await anyio.to_thread.run_sync(world.runtime.store.revoke_key, principal.key_id)
        with anyio.fail_after(10):
            async for event in sub:
                raise AssertionError(f"a revoked key's stream heard {event}")
        # ended: the client is told the stream is over, and may not open another
        with pytest.raises(MCPError):
            async with c.listen(resource_subscriptions=[profile]):
                pass


async def test_a_stopping_server_ends_its_listen_streams(world) -> None:
    """A listen stream never ends by itself, and uvicorn waits for open responses before the
    app's shutdown: the server hung (and the shutdown that writes the last records never
    ran)."""
    app = build_http_app(world.runtime, stateless=False, watch_interval=0.1)
    srv = UvicornThread(app, world.runtime).__enter__()
    try:
        async with connect(srv.url, world.b_rw) as c, c.listen(tools_list_changed=True) as sub:
            r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "bye"})
            assert not r.is_error, r.content
            srv.server.should_exit = True
            with anyio.fail_after(10):
                async for event in sub:
                    raise AssertionError(f"unexpected {event}")
        await anyio.to_thread.run_sync(srv.thread.join, 10)
        assert not srv.thread.is_alive()
    finally:
        srv.__exit__(None, None, None)
    events = world.runtime.store.query_events(world.b.id, limit=10)
    assert any(e.tool == "slack_send_message" for e in events)


async def test_one_key_cannot_hold_every_session(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions opened and never used live until their idle timeout: past its share, a key
    is refused more (with the gateway's envelope) while other keys still get theirs, and
    ending one (DELETE) makes room again."""
    monkeypatch.setattr(app_module, "MAX_SESSIONS_PER_KEY", 3)
    app = build_http_app(world.runtime)

    def headers(key: str) -> dict[str, str]:
        return {**ACCEPT, "Authorization": f"Bearer {key}", "MCP-Protocol-Version": "2025-11-25"}

    with UvicornThread(app) as srv:
        async with httpx2.AsyncClient() as h:
            opened = [await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.a_rw))]
            opened += [await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.a_rw))]
            opened += [await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.a_rw))]
            assert [r.status_code for r in opened] == [200, 200, 200]
            refused = await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.a_rw))
            assert refused.status_code == 503
            error = refused.json()["error"]
            assert error["code"] == "rate_limited" and "one API key may hold 3" in error["message"]
            other = await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.b_rw))
            assert other.status_code == 200  # another tenant's key is not locked out
            session = opened[0].headers["mcp-session-id"]
            ended = await h.delete(
                f"{srv.url}/mcp", headers={**headers(world.a_rw), "Mcp-Session-Id": session}
            )
            assert ended.status_code == 200
            again = await h.post(f"{srv.url}/mcp", json=INIT, headers=headers(world.a_rw))
            assert again.status_code == 200


async def test_allowed_hosts(world) -> None:
    app = build_http_app(world.runtime, host="0.0.0.0", allowed_hosts=["gw.example.com"])
    with UvicornThread(app) as srv:
        headers = {
            **ACCEPT,
            "Authorization": f"Bearer {world.a_rw}",
            "MCP-Protocol-Version": "2025-11-25",
        }
        async with httpx2.AsyncClient() as h:
            good = await h.post(
                f"{srv.url}/mcp", json=INIT, headers={**headers, "Host": "gw.example.com"}
            )
            evil = await h.post(
                f"{srv.url}/mcp", json=INIT, headers={**headers, "Host": "evil.example"}
            )
            shouted = await h.post(  # host names are case-insensitive
                f"{srv.url}/mcp", json=INIT, headers={**headers, "Host": "GW.Example.COM"}
            )
    assert good.status_code == 200
    assert evil.status_code == 421
    assert shouted.status_code == 200


async def test_a_loopback_gateway_answers_the_loopback_names_without_a_port(world) -> None:
    """On port 80 clients send `Host: 127.0.0.1` with no port (and any client may): the
    loopback names were admitted only with one, so a gateway on port 80 refused every request
    from its own machine (421). Without a port they are as safe from DNS rebinding; another
    name is still refused."""
    app = build_http_app(world.runtime)  # host 127.0.0.1, no --allowed-host
    with UvicornThread(app) as srv:
        headers = {
            **ACCEPT,
            "Authorization": f"Bearer {world.a_rw}",
            "MCP-Protocol-Version": "2025-11-25",
        }
        async with httpx2.AsyncClient() as h:
            served = {}
            for host in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST", "evil.example"):
                r = await h.post(f"{srv.url}/mcp", json=INIT, headers={**headers, "Host": host})
                served[host] = r.status_code
            # A browser on port 80 sends its Origin without a port too.
            origin = await h.post(
                f"{srv.url}/mcp",
                json=INIT,
                headers={**headers, "Host": "localhost", "Origin": "http://localhost"},
            )
    assert served == {
        "127.0.0.1": 200,
        "localhost": 200,
        "[::1]": 200,
        "LOCALHOST": 200,
        "evil.example": 421,
    }
    assert origin.status_code == 200


async def test_a_stateless_gateway_opens_no_stream_and_promises_no_notifications(world) -> None:
    """Stateless HTTP has no channel to the client. A handshake-era GET opened an SSE stream
    that never carried anything and stayed open (no per-key limit), and `initialize`
    advertised tools and resources `listChanged`, which could never be delivered. Now GET and
    DELETE get 405 with `Allow: POST` (as the 2026-07-28 revision's do), after the same key and
    Host checks as POST, and `initialize` promises no list-changed notifications."""
    stateless = build_http_app(world.runtime, stateless=True)
    stateful = build_http_app(world.runtime)
    key = {"Authorization": f"Bearer {world.a_rw}"}
    get = {**key, "Accept": "text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    with UvicornThread(stateless) as srv, UvicornThread(stateful) as full:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(5)) as h:
            stream = await h.get(f"{srv.url}/mcp", headers=get)
            modern = await h.get(
                f"{srv.url}/mcp", headers={**get, "MCP-Protocol-Version": "2026-07-28"}
            )
            ended = await h.delete(f"{srv.url}/mcp", headers=get)
            keyless = await h.get(f"{srv.url}/mcp", headers={"Accept": "text/event-stream"})
            rebound = await h.get(f"{srv.url}/mcp", headers={**get, "Host": "evil.example"})
            init = {**ACCEPT, **key, "MCP-Protocol-Version": "2025-06-18"}
            hello = {**INIT, "params": {**INIT["params"], "protocolVersion": "2025-06-18"}}
            told = await h.post(f"{srv.url}/mcp", json=hello, headers=init)
            told_full = await h.post(f"{full.url}/mcp", json=hello, headers=init)
        # The SDK client, which opens the GET stream after initialize, works as before.
        async with connect(srv.url, world.a_rw, mode="legacy") as c:
            assert "slack_list_channels" in await names(c)
    for refused in (stream, modern, ended):
        assert refused.status_code == 405, refused.text
        assert refused.headers["allow"] == "POST"
    assert keyless.status_code == 401 and rebound.status_code == 421
    capabilities = told.json()["result"]["capabilities"]
    assert not capabilities["tools"].get("listChanged")
    assert not capabilities["resources"].get("listChanged")
    full_capabilities = told_full.json()["result"]["capabilities"]
    assert full_capabilities["tools"]["listChanged"] is True
    assert full_capabilities["resources"]["listChanged"] is True
