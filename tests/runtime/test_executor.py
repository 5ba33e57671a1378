"""Connector execution against real HTTP stand-ins of Slack, Shopify, GitHub and HubSpot.

Each test calls `ConnectorExecutor` the way the gateway server does (validated arguments, the
calling tenant's stored credentials, the session context) and checks both what the upstream
received and what the caller got back. Backoff sleeps are recorded instead of slept, so retry
tests are fast; everything else (HTTP, timeouts, the token endpoint) is real.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.runtime import catalog as c
from generator.runtime.errors import (
    INVALID_ARGUMENTS,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHENTICATED,
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_ERROR,
    UPSTREAM_INVALID_RESPONSE,
    UPSTREAM_TIMEOUT,
    GatewayError,
)
from generator.runtime.executor import (
    MAX_ERROR_TEXT,
    CallContext,
    ConnectorCallError,
    ConnectorConfigError,
    ConnectorExecutor,
    ExecResult,
    _sanitise,
    base_urls_from_env,
    token_urls_from_env,
)
from tests.runtime.support import Sleeps, free_port
from tests.runtime.upstreams import (
    GH_A,
    GH_B,
    HS_APP,
    HS_REFRESH_A,
    HS_REFRESH_B,
    SECRETS,
    SHOP_A,
    SHOP_B,
    SLACK_A,
    SLACK_B,
    Fault,
    GitHubUpstream,
    HangUp,
    HubSpotUpstream,
    ShopifyUpstream,
    SlackUpstream,
    StandIns,
    hubspot_creds,
)

A = CallContext(tenant_id="tenant-a", user_id="user-a1")
B = CallContext(tenant_id="tenant-b", user_id="user-b1")


# Nested past the JSON parser's recursion limit.
DEEP_JSON = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[StandIns]:
    with StandIns() as servers:
        yield servers


@pytest.fixture(scope="module")
def slack_server(stand_ins: StandIns) -> SlackUpstream:
    return stand_ins.slack


@pytest.fixture(scope="module")
def shopify_server(stand_ins: StandIns) -> ShopifyUpstream:
    return stand_ins.shopify


@pytest.fixture(scope="module")
def github_server(stand_ins: StandIns) -> GitHubUpstream:
    return stand_ins.github


@pytest.fixture(scope="module")
def hubspot_server(stand_ins: StandIns) -> HubSpotUpstream:
    return stand_ins.hubspot


@pytest.fixture
def slack(slack_server: SlackUpstream) -> SlackUpstream:
    slack_server.reset()
    return slack_server


@pytest.fixture
def shopify(shopify_server: ShopifyUpstream) -> ShopifyUpstream:
    shopify_server.reset()
    return shopify_server


@pytest.fixture
def github(github_server: GitHubUpstream) -> GitHubUpstream:
    github_server.reset()
    github_server.link_headers = True
    return github_server


@pytest.fixture
def hubspot(hubspot_server: HubSpotUpstream) -> HubSpotUpstream:
    hubspot_server.reset()
    return hubspot_server


@pytest.fixture
async def executor(
    gateway: c.GatewaySpec,
    stand_ins: StandIns,
    slack: SlackUpstream,
    shopify: ShopifyUpstream,
    github: GitHubUpstream,
    hubspot: HubSpotUpstream,
    sleeps: Sleeps,
) -> AsyncIterator[ConnectorExecutor]:
    ex = ConnectorExecutor(
        gateway,
        base_urls=stand_ins.base_urls(),
        token_urls=stand_ins.token_urls(),
        sleep=sleeps,
    )
    yield ex
    await ex.aclose()


def with_connector(gateway: c.GatewaySpec, name: str, **changes: Any) -> c.GatewaySpec:
    connectors = dict(gateway.connectors)
    connectors[name] = dataclasses.replace(connectors[name], **changes)
    return dataclasses.replace(gateway, connectors=connectors)


def with_tool(gateway: c.GatewaySpec, tool: c.ToolSpec) -> c.GatewaySpec:
    tools = {**gateway.tools, tool.name: tool}
    connectors = dict(gateway.connectors)
    assert tool.connector is not None
    conn = connectors[tool.connector]
    connectors[tool.connector] = dataclasses.replace(
        conn, tools=tuple(sorted({*conn.tools, tool.name}))
    )
    return dataclasses.replace(gateway, tools=tools, connectors=connectors)


async def fails(call: Awaitable[ExecResult]) -> ConnectorCallError:
    with pytest.raises(ConnectorCallError) as info:
        await call
    return info.value


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def envelope_text(exc: ConnectorCallError) -> str:
    return json.dumps(exc.envelope())


# -------------------------------------------------------------------------------- Slack


async def test_slack_send_message_sends_the_calling_tenants_token_and_body(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    tool = gateway.tools["slack_send_message"]
    result = await executor.call(
        tool, {"channel": "#general", "text": "Deploy done"}, credentials=SLACK_A, ctx=A
    )

    (sent,) = slack.requests("POST", "/chat.postMessage")
    assert sent.raw_path == "/api/chat.postMessage"
    assert sent.headers["authorization"] == "Bearer " + SLACK_A["bot_token"]
    assert sent.headers["content-type"].startswith("application/json")
    # Absent optional arguments are dropped, not sent as null.
    assert sent.json() == {"channel": "#general", "text": "Deploy done"}
    assert result.status == 200 and result.attempts == 1
    assert result.refreshed_credentials is None
    assert result.output["channel"] == "CTA000"
    assert result.output["message"]["text"] == "Deploy done"
    assert set(result.output) == {"channel", "ts", "message"}
    assert [m["text"] for m in slack.posted["TA"]] == ["Deploy done"]
    assert slack.posted["TB"] == []

    # Tenant B's call uses B's token only, and A's never appears in B's request.
    await executor.call(
        tool,
        {"channel": "CTB001", "text": "Hi B", "thread_ts": "1.2", "unfurl_links": False},
        credentials=SLACK_B,
        ctx=B,
    )
    sent_b = slack.requests("POST", "/chat.postMessage")[1]
    assert sent_b.headers["authorization"] == "Bearer " + SLACK_B["bot_token"]
    assert sent_b.json() == {
        "channel": "CTB001",
        "text": "Hi B",
        "thread_ts": "1.2",
        "unfurl_links": False,
    }
    assert [m["text"] for m in slack.posted["TB"]] == ["Hi B"]
    assert [m["text"] for m in slack.posted["TA"]] == ["Deploy done"]
    for request in slack.received:
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert token == (SLACK_A if request is sent else SLACK_B)["bot_token"]


async def test_slack_ok_false_is_an_error_with_its_code(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    exc = await fails(
        executor.call(
            gateway.tools["slack_send_message"],
            {"channel": "#nope", "text": "x"},
            credentials=SLACK_A,
            ctx=A,
        )
    )
    assert exc.code == NOT_FOUND  # one of the manifest's not_found_errors
    assert exc.retryable is False
    assert exc.status == 200
    assert exc.details == {
        "connector": "slack",
        "status": 200,
        "upstream_error": "channel_not_found",
    }
    assert exc.message == "Slack found nothing for this request (channel_not_found)."
    assert len(slack.requests()) == 1


@pytest.mark.parametrize(
    "credentials",
    [{"bot_token": "xoxb-unknown-token"}, {"bot_token": SLACK_A["bot_token"] + "x"}],
)
async def test_slack_invalid_auth_is_upstream_auth_failed(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    slack: SlackUpstream,
    credentials: dict[str, str],
) -> None:
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=credentials, ctx=A)
    )
    assert exc.code == UPSTREAM_AUTH_FAILED
    assert exc.retryable is False
    assert exc.details["upstream_error"] == "invalid_auth"
    assert credentials["bot_token"] not in envelope_text(exc)
    assert len(slack.requests()) == 1  # an auth failure is never retried


@pytest.mark.parametrize("token", ["xoxb-\u20ac-token", "xoxb-token\r\nX-Injected: 1"])
async def test_a_stored_token_no_header_can_carry_asks_for_a_reconnection(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream, token: str
) -> None:
    exc = await fails(
        executor.call(
            gateway.tools["slack_list_channels"], {}, credentials={"bot_token": token}, ctx=A
        )
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.retryable is False
    assert exc.message == "The stored access token of Slack is malformed; reconnect it."
    assert token not in envelope_text(exc)
    assert slack.requests() == []


async def test_slack_revoked_token_is_an_auth_error_code(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    slack.revoked.add(SLACK_B["bot_token"])
    try:
        exc = await fails(
            executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_B, ctx=B)
        )
    finally:
        slack.revoked.clear()
    assert exc.code == UPSTREAM_AUTH_FAILED
    assert exc.details["upstream_error"] == "token_revoked"


async def test_slack_429_is_retried_after_retry_after(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "2"}),
    )
    result = await executor.call(
        gateway.tools["slack_list_channels"], {"limit": 2}, credentials=SLACK_A, ctx=A
    )
    assert sleeps.calls == [2.0]
    assert result.attempts == 2 and result.status == 200
    assert [ch["id"] for ch in result.output["channels"]] == ["CTA000", "CTA001"]
    sent = slack.requests("GET", "/conversations.list")
    assert len(sent) == 2
    assert all(r.headers["authorization"] == "Bearer " + SLACK_A["bot_token"] for r in sent)


async def test_slack_429_exhausting_retries_surfaces_rate_limited_with_hint(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    limited = Fault(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"})
    slack.fail_next("GET", "/conversations.list", limited, limited, limited, limited)
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
    )
    retries = gateway.connectors["slack"].retries
    assert exc.code == RATE_LIMITED
    assert exc.retryable is True
    assert exc.retry_after == 3.0
    assert exc.envelope()["error"]["retry_after_seconds"] == 3.0
    assert exc.attempts == retries + 1
    assert sleeps.calls == [3.0] * retries
    assert len(slack.requests()) == retries + 1


async def test_retry_after_beyond_the_cap_is_surfaced_not_waited(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "120"}),
    )
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
    )
    assert exc.code == RATE_LIMITED and exc.retry_after == 120.0
    assert sleeps.calls == []
    assert len(slack.requests()) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
        Fault(503, raw=b"upstream unavailable", headers={"content-type": "text/plain"}),
    ],
)
async def test_non_idempotent_send_message_is_never_retried(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    slack: SlackUpstream,
    sleeps: Sleeps,
    fault: Fault,
) -> None:
    slack.fail_next("POST", "/chat.postMessage", fault)
    exc = await fails(
        executor.call(
            gateway.tools["slack_send_message"],
            {"channel": "#general", "text": "once"},
            credentials=SLACK_A,
            ctx=A,
        )
    )
    assert len(slack.requests("POST", "/chat.postMessage")) == 1
    assert sleeps.calls == []
    assert exc.attempts == 1
    assert slack.posted["TA"] == []
    if fault.status == 429:
        assert exc.code == RATE_LIMITED and exc.retry_after == 1.0 and exc.retryable
    else:
        assert exc.code == UPSTREAM_ERROR and exc.status == 503 and exc.retryable
        assert exc.details == {"connector": "slack", "status": 503}


async def test_slack_cursor_pagination_walks_every_page(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    tool = gateway.tools["slack_list_channels"]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            args["cursor"] = cursor
        result = await executor.call(tool, args, credentials=SLACK_A, ctx=A)
        pages += 1
        seen += [ch["id"] for ch in result.output["channels"]]
        cursor = result.output["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"CTA{i:03d}" for i in range(5)]
    sent = slack.requests("GET", "/conversations.list")
    # Schema defaults are applied; the model's cursor goes to the declared parameter.
    assert sent[0].args == {"limit": "2", "types": "public_channel", "exclude_archived": "true"}
    assert "cursor" in sent[1].args and sent[1].args["limit"] == "2"
    assert sent[2].args["cursor"] != sent[1].args["cursor"]


async def test_slack_history_reads_what_was_posted(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    await executor.call(
        gateway.tools["slack_send_message"],
        {"channel": "CTA002", "text": "hello history"},
        credentials=SLACK_A,
        ctx=A,
    )
    result = await executor.call(
        gateway.tools["slack_get_channel_history"],
        {"channel": "CTA002", "oldest": "1700000000"},
        credentials=SLACK_A,
        ctx=A,
    )
    assert [m["text"] for m in result.output["messages"]] == ["hello history"]
    assert result.output["has_more"] is False and result.output["next_cursor"] is None
    sent = slack.requests("GET", "/conversations.history")[0]
    assert sent.args == {"channel": "CTA002", "limit": "50", "oldest": "1700000000"}


# ------------------------------------------------------------------------------ Shopify


async def test_shopify_uses_the_api_key_header_and_the_tenants_shop(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    tool = gateway.tools["shopify_list_orders"]
    result_a = await executor.call(tool, {"limit": 3}, credentials=SHOP_A, ctx=A)
    result_b = await executor.call(tool, {"limit": 3}, credentials=SHOP_B, ctx=B)

    sent_a, sent_b = shopify.requests("GET", "/orders.json")
    assert sent_a.path == "/acme/admin/api/2024-10/orders.json"
    assert sent_a.headers["x-shopify-access-token"] == SHOP_A["access_token"]
    assert "authorization" not in sent_a.headers
    assert sent_a.args == {"status": "any", "limit": "3"}
    assert sent_b.path == "/globex/admin/api/2024-10/orders.json"
    assert sent_b.headers["x-shopify-access-token"] == SHOP_B["access_token"]
    assert [o["name"] for o in result_a.output["orders"]] == ["#1005", "#1004", "#1003"]
    ids_a = {o["id"] for o in result_a.output["orders"]}
    ids_b = {o["id"] for o in result_b.output["orders"]}
    assert ids_a.isdisjoint(ids_b)


async def test_shopify_link_header_pagination(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    tool = gateway.tools["shopify_list_orders"]
    first = await executor.call(tool, {"limit": 2}, credentials=SHOP_A, ctx=A)
    cursor = first.output["next_cursor"]
    assert cursor is not None and shopify.url not in cursor  # sealed, see below
    second = await executor.call(tool, {"limit": 2, "cursor": cursor}, credentials=SHOP_A, ctx=A)
    third = await executor.call(
        tool, {"limit": 2, "cursor": second.output["next_cursor"]}, credentials=SHOP_A, ctx=A
    )
    names = [o["name"] for r in (first, second, third) for o in r.output["orders"]]
    assert names == ["#1005", "#1004", "#1003", "#1002", "#1001"]
    assert third.output["next_cursor"] is None
    followed = shopify.requests("GET", "/orders.json")[1]
    # The Link URL is followed as is: Shopify rejects other filters beside page_info.
    assert set(followed.args) == {"limit", "page_info"}
    assert followed.headers["x-shopify-access-token"] == SHOP_A["access_token"]


async def walk_orders(
    executor: ConnectorExecutor, tool: c.ToolSpec, shopify: ShopifyUpstream
) -> list[str]:
    """The names of every order, two a page, following next_cursor to the end."""
    names: list[str] = []
    cursor = None
    for _ in range(5):
        args: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        result = await executor.call(tool, args, credentials=SHOP_A, ctx=A)
        names += [o["name"] for o in result.output["orders"]]
        cursor = result.output["next_cursor"]
        if cursor is None:
            return names
    raise AssertionError("never reached the last page")


async def test_a_relative_link_is_resolved_against_the_requests_url(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    """RFC 8288: a Link URL may be relative (`<orders.json?...>`); it names the next page
    relative to the request answered, and the cursor is that page's URL."""
    shopify.relative_links = True
    names = await walk_orders(executor, gateway.tools["shopify_list_orders"], shopify)
    assert names == ["#1005", "#1004", "#1003", "#1002", "#1001"]
    followed = shopify.requests("GET", "/orders.json")[1:]
    assert [r.path for r in followed] == ["/acme/admin/api/2024-10/orders.json"] * 2
    assert [set(r.args) for r in followed] == [{"limit", "page_info"}] * 2


async def test_a_link_url_with_commas_is_followed_whole(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    """Shopify keeps `fields=id,name,...` in its page links: the commas inside <...> separate
    no links, so the next page is requested with that whole query."""
    fields = "id,name,created_at,total_price,currency"
    shopify.next_link = shopify.orders_link("acme", 2, 2, fields)
    tool = gateway.tools["shopify_list_orders"]
    first = await executor.call(tool, {"limit": 2}, credentials=SHOP_A, ctx=A)
    shopify.next_link = None  # from page 2 on, the links the stand-in writes (fields kept)
    names = [o["name"] for o in first.output["orders"]]
    cursor = first.output["next_cursor"]
    while cursor is not None:
        result = await executor.call(tool, {"cursor": cursor}, credentials=SHOP_A, ctx=A)
        names += [o["name"] for o in result.output["orders"]]
        cursor = result.output["next_cursor"]
        assert len(names) <= 5
    assert names == ["#1005", "#1004", "#1003", "#1002", "#1001"]
    followed = shopify.requests("GET", "/orders.json")[1:]
    assert [(r.args["fields"], r.args["limit"]) for r in followed] == [(fields, "2")] * 2


@pytest.mark.parametrize(
    "cursor",
    [
        "http://evil.example/acme/admin/api/2024-10/orders.json?page_info=x",
        "https://attacker.test/steal",
        "{base_other_shop}/orders.json?page_info=x",
        "{base_root}/other/api/orders.json",
        # Relative references are resolved against the request's URL first (RFC 3986).
        "//evil.example/acme/admin/api/2024-10/orders.json",
        "/globex/admin/api/2024-10/orders.json",
        "../../../globex/admin/api/2024-10/orders.json",
        # Dot segments climb out of the base path once resolved, percent-encoded or not.
        "{base_acme}/../../../globex/admin/api/2024-10/orders.json",
        "{base_acme}/%2e%2e/%2E%2E/%2e%2e/globex/admin/api/2024-10/orders.json",
        "{base_acme}/./orders.json",
        # ... and inside one segment, behind an encoded slash or backslash, or a ;parameter,
        # which servers and proxies that decode the path before resolving it also climb by.
        "{base_acme}/..%2F..%2F..%2Fglobex/admin/api/2024-10/orders.json",
        "{base_acme}/x%2F..%2F..%2F..%2F..%2Fglobex/admin/api/2024-10/orders.json",
        "{base_acme}/..%5C..%5C..%5Cglobex/admin/api/2024-10/orders.json",
        "{base_acme}/..;/..;/..;/globex/admin/api/2024-10/orders.json",
    ],
)
async def test_a_link_off_the_connections_base_url_is_never_followed(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream, cursor: str
) -> None:
    """An upstream's next link that leaves the connection's base URL gives a cursor that is
    refused: the tenant's credentials never go there."""
    shopify.next_link = cursor.format(
        base_other_shop=shopify.url + "/globex/admin/api/2024-10",
        base_root=shopify.url,
        base_acme=shopify.url + "/acme/admin/api/2024-10",
    )
    tool = gateway.tools["shopify_list_orders"]
    first = await executor.call(tool, {}, credentials=SHOP_A, ctx=A)
    exc = await fails(
        executor.call(tool, {"cursor": first.output["next_cursor"]}, credentials=SHOP_A, ctx=A)
    )
    assert exc.code == INVALID_ARGUMENTS
    assert exc.details == {"argument": "cursor"}
    assert len(shopify.requests()) == 1


async def test_a_link_cursor_is_followed_only_as_the_tool_gave_it_to_the_tenant(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    shopify: ShopifyUpstream,
    stand_ins: StandIns,
) -> None:
    """A link cursor is sealed to its tool and tenant: a URL written by the model, even on the
    tenant's own shop (another endpoint of the API), a cursor altered, given to another
    tenant, or sealed with another deployment's key, is refused before any request; an
    executor with the deployment's key (another process) follows it."""
    tool = gateway.tools["shopify_list_orders"]
    first = await executor.call(tool, {"limit": 2}, credentials=SHOP_A, ctx=A)
    cursor = first.output["next_cursor"]
    encoded, _, mac = cursor.rpartition(".")
    base = shopify.url + "/acme/admin/api/2024-10"
    urls = stand_ins.base_urls()
    other = ConnectorExecutor(gateway, base_urls=urls)
    try:
        for forged, ctx, ex in (
            (f"{base}/customers.json", A, executor),
            (f"{base}/orders.json?limit=2&page_info=x", A, executor),
            (encoded + "." + mac[::-1], A, executor),
            (encoded[:-2] + "." + mac, A, executor),
            (cursor, CallContext(tenant_id="tenant-b", user_id="user-b1"), executor),
            (cursor, A, other),
            ("é." + mac, A, executor),
            ("no dot", A, executor),
        ):
            calls = len(shopify.requests())
            args = {"limit": 2, "cursor": forged}
            exc = await fails(ex.call(tool, args, credentials=SHOP_A, ctx=ctx))
            assert exc.code == INVALID_ARGUMENTS and exc.details == {"argument": "cursor"}, forged
            assert len(shopify.requests()) == calls, forged
    finally:
        await other.aclose()
    key = b"k" * 32
    sealing = ConnectorExecutor(gateway, base_urls=urls, cursor_key=key)
    following = ConnectorExecutor(gateway, base_urls=urls, cursor_key=key)
    try:
        page = await sealing.call(tool, {"limit": 2}, credentials=SHOP_A, ctx=A)
        args = {"limit": 2, "cursor": page.output["next_cursor"]}
        second = await following.call(tool, args, credentials=SHOP_A, ctx=A)
        assert [o["name"] for o in second.output["orders"]] == ["#1003", "#1002"]
    finally:
        await sealing.aclose()
        await following.aclose()


@pytest.mark.parametrize(
    "shop", ["evil.example", "acme/../globex", "attacker.test#", "a b", "x@y", "-bad", ""]
)
async def test_a_shop_that_is_not_a_dns_label_never_redirects_the_request(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream, shop: str
) -> None:
    exc = await fails(
        executor.call(
            gateway.tools["shopify_list_orders"],
            {},
            credentials={"shop": shop, "access_token": SHOP_A["access_token"]},
            ctx=A,
        )
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.retryable is False
    assert shopify.requests() == []
    assert SHOP_A["access_token"] not in envelope_text(exc)


async def test_shopify_5xx_then_success_is_retried_with_backoff(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream, sleeps: Sleeps
) -> None:
    shopify.fail_next(
        "GET",
        "/customers/1001.json",
        Fault(502, raw=b"<html>Bad Gateway</html>", headers={"content-type": "text/html"}),
        Fault(500, {"errors": "Internal Server Error"}),
    )
    result = await executor.call(
        gateway.tools["shopify_get_customer"], {"customer_id": 1001}, credentials=SHOP_A, ctx=A
    )
    assert result.attempts == 3 and result.status == 200
    assert result.output["email"] == "grace@acme.example"  # `select: customer`
    assert "customer" not in result.output
    assert len(sleeps.calls) == 2
    assert 0.125 <= sleeps.calls[0] <= 0.25 and 0.25 <= sleeps.calls[1] <= 0.5


async def test_shopify_5xx_on_every_attempt_is_an_upstream_error(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream, sleeps: Sleeps
) -> None:
    retries = gateway.connectors["shopify"].retries
    shopify.fail_next(
        "GET", "/customers/1001.json", *[Fault(500, {"errors": "Internal Server Error"})] * 9
    )
    exc = await fails(
        executor.call(
            gateway.tools["shopify_get_customer"], {"customer_id": 1001}, credentials=SHOP_A, ctx=A
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.retryable is True
    assert exc.details == {
        "connector": "shopify",
        "status": 500,
        "upstream_error": "Internal Server Error",
    }
    assert exc.attempts == retries + 1 == len(shopify.requests())


async def test_shopify_error_bodies_are_mapped(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    tool = gateway.tools["shopify_get_customer"]
    missing = await fails(executor.call(tool, {"customer_id": 999}, credentials=SHOP_A, ctx=A))
    assert missing.code == NOT_FOUND and missing.retryable is False
    assert missing.details == {"connector": "shopify", "status": 404, "upstream_error": "Not Found"}
    assert missing.message == "Shopify found nothing for this request (HTTP 404)."

    bad = await fails(
        executor.call(
            tool,
            {"customer_id": 1001},
            credentials={"shop": "acme", "access_token": "shpat_wrong_0000"},
            ctx=A,
        )
    )
    assert bad.code == UPSTREAM_AUTH_FAILED and bad.status == 401
    assert bad.details["upstream_error"].startswith("[API] Invalid API key")
    assert "shpat_wrong_0000" not in envelope_text(bad)

    shopify.fail_next(
        "GET",
        "/orders.json",
        Fault(422, {"errors": {"created_at_min": ["is invalid"]}}),
    )
    invalid = await fails(
        executor.call(gateway.tools["shopify_list_orders"], {}, credentials=SHOP_A, ctx=A)
    )
    assert invalid.code == UPSTREAM_ERROR and invalid.status == 422
    assert invalid.details["upstream_error"] == '{"created_at_min":["is invalid"]}'


# ------------------------------------------------------------------------------- GitHub


async def test_github_page_pagination_follows_the_link_header(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    tool = gateway.tools["github_list_issues"]
    args = {"owner": "acme", "repo": "api", "per_page": 2}
    first = await executor.call(tool, args, credentials=GH_A, ctx=A)
    assert first.output["next_cursor"] == "2"
    second = await executor.call(tool, {**args, "cursor": "2"}, credentials=GH_A, ctx=A)
    third = await executor.call(tool, {**args, "cursor": "3"}, credentials=GH_A, ctx=A)
    assert second.output["next_cursor"] == "3"
    assert third.output["next_cursor"] is None  # Link has no rel=next on the last page
    numbers = [i["number"] for r in (first, second, third) for i in r.output["issues"]]
    assert numbers == [5, 4, 3, 2, 1]
    sent = github.requests("GET", "/issues")
    assert "page" not in sent[0].args
    assert sent[1].args == {"state": "open", "per_page": "2", "page": "2"}
    assert all(r.headers["authorization"] == "Bearer " + GH_A["token"] for r in sent)
    assert sent[0].headers["accept"] == "application/vnd.github+json"
    assert sent[0].headers["x-github-api-version"] == "2022-11-28"


async def test_github_page_pagination_without_link_header_stops_at_an_empty_page(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    github.link_headers = False
    tool = gateway.tools["github_list_issues"]
    args = {"owner": "acme", "repo": "api", "per_page": 3}
    cursors = []
    cursor = None
    total = 0
    while True:
        result = await executor.call(
            tool, {**args, **({"cursor": cursor} if cursor else {})}, credentials=GH_A, ctx=A
        )
        total += len(result.output["issues"])
        cursor = result.output["next_cursor"]
        cursors.append(cursor)
        if cursor is None:
            break
    assert total == 5
    assert cursors == ["2", None]  # the second page (2 of 3) is short: the last one

    # Without a page size, only an empty page ends the walk.
    github.fail_next("GET", "/acme/api/issues", Fault(200, []))
    http = gateway.tools["github_list_issues"].http
    assert http is not None
    no_size = dataclasses.replace(
        gateway.tools["github_list_issues"],
        http=dataclasses.replace(http, query={"state": "{state}"}),
    )
    last = await executor.call(no_size, {**args, "cursor": "7"}, credentials=GH_A, ctx=A)
    assert last.output == {"issues": [], "next_cursor": None}
    full = await executor.call(no_size, {**args, "cursor": "1"}, credentials=GH_A, ctx=A)
    assert len(full.output["issues"]) == 5 and full.output["next_cursor"] == "2"


@pytest.mark.parametrize("cursor", ["0", "-1", "abc", "2.5", "²", "١٢", "9" * 5000, " 2"])
async def test_a_page_cursor_must_be_a_page_number(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream, cursor: str
) -> None:
    exc = await fails(
        executor.call(
            gateway.tools["github_list_issues"],
            {"owner": "acme", "repo": "api", "cursor": cursor},
            credentials=GH_A,
            ctx=A,
        )
    )
    assert exc.code == INVALID_ARGUMENTS and github.requests() == []


async def test_github_path_placeholders_are_percent_encoded(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    exc = await fails(
        executor.call(
            gateway.tools["github_list_issues"],
            {"owner": "acme/admin", "repo": "a b?c#d"},
            credentials=GH_A,
            ctx=A,
        )
    )
    (sent,) = github.requests()
    assert sent.raw_path == "/repos/acme%2Fadmin/a%20b%3Fc%23d/issues"
    assert exc.code == NOT_FOUND and exc.status == 404
    assert exc.details["upstream_error"] == "Not Found"


async def test_github_create_issue_sends_only_given_fields_and_is_not_retried(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream, sleeps: Sleeps
) -> None:
    tool = gateway.tools["github_create_issue"]
    result = await executor.call(
        tool,
        {"owner": "acme", "repo": "web", "title": "Login broken", "labels": ["bug", "p1"]},
        credentials=GH_A,
        ctx=A,
    )
    assert result.status == 201
    assert result.output["title"] == "Login broken"
    assert result.output["user"] == {"login": "alice"}
    (sent,) = github.requests("POST")
    assert sent.json() == {"title": "Login broken", "labels": ["bug", "p1"]}

    github.fail_next("POST", "/acme/web/issues", Fault(502, {"message": "Server Error"}))
    exc = await fails(
        executor.call(
            tool, {"owner": "acme", "repo": "web", "title": "Again"}, credentials=GH_A, ctx=A
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.status == 502
    assert len(github.requests("POST")) == 2 and sleeps.calls == []


HTML_504 = Fault(
    504,
    raw=b"<html><body>504 Gateway Time-out</body></html>",
    headers={"content-type": "text/html"},
)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(500, {"message": "Server Error"}),
        Fault(502, {"message": "Server Error"}, headers={"Retry-After": "5"}),
        HTML_504,
    ],
)
async def test_a_write_answered_with_a_5xx_may_have_been_applied(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    github: GitHubUpstream,
    sleeps: Sleeps,
    fault: Fault,
) -> None:
    """A 500, or a proxy's 502 or 504, may come after the upstream applied the write: the error
    says so and is not retryable, as after a timeout (calling again could make a second
    issue)."""
    github.fail_next("POST", "/acme/web/issues", fault)
    exc = await fails(
        executor.call(
            gateway.tools["github_create_issue"],
            {"owner": "acme", "repo": "web", "title": "Crash"},
            credentials=GH_A,
            ctx=A,
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.status == fault.status and exc.attempts == 1
    assert exc.retryable is False and exc.retry_after is None
    assert exc.message == (
        f"GitHub failed with HTTP {fault.status}. It may have applied the request anyway: "
        "check before repeating it."
    )
    assert "retry_after_seconds" not in exc.envelope()["error"]
    assert len(github.requests("POST")) == 1 and sleeps.calls == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(503, {"message": "Service Unavailable"}, headers={"Retry-After": "5"}),
        Fault(429, {"message": "Too many requests"}, headers={"Retry-After": "5"}),
    ],
)
async def test_a_write_refused_unprocessed_stays_retryable(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream, fault: Fault
) -> None:
    """A 503 (the upstream could not handle the request now) and a rate limit say the write was
    not processed: calling again later is safe."""
    github.fail_next("POST", "/acme/web/issues", fault)
    exc = await fails(
        executor.call(
            gateway.tools["github_create_issue"],
            {"owner": "acme", "repo": "web", "title": "Crash"},
            credentials=GH_A,
            ctx=A,
        )
    )
    assert exc.status == fault.status and exc.attempts == 1
    assert exc.retryable is True and exc.retry_after == 5.0
    assert "may have applied" not in exc.message


@pytest.mark.parametrize("annotations", ["idempotent", "read_only"])
async def test_a_read_answered_with_a_5xx_stays_retryable(
    gateway: c.GatewaySpec, github: GitHubUpstream, sleeps: Sleeps, annotations: str
) -> None:
    """A read changes nothing it could change twice, whether it says idempotent (then it is
    retried here too) or only read_only (MCP's idempotentHint means nothing beside
    readOnlyHint)."""
    listed = gateway.tools["github_list_issues"]
    assert listed.annotations.read_only and listed.annotations.idempotent
    if annotations == "read_only":
        once = c.Annotations(read_only=True, idempotent=False, open_world=True)
        listed = dataclasses.replace(listed, annotations=once)
    ex = ConnectorExecutor(
        with_tool(gateway, listed), base_urls={"github": github.url}, sleep=sleeps
    )
    github.fail_next("GET", "/acme/api/issues", *[HTML_504] * 5)
    try:
        exc = await fails(
            ex.call(listed, {"owner": "acme", "repo": "api"}, credentials=GH_A, ctx=A)
        )
    finally:
        await ex.aclose()
    attempts = gateway.connectors["github"].retries + 1 if annotations == "idempotent" else 1
    assert exc.code == UPSTREAM_ERROR and exc.status == 504 and exc.attempts == attempts
    assert exc.retryable is True and "may have applied" not in exc.message


async def test_redaction_tells_the_model_nothing_about_its_own_guesses(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    """An upstream that quotes an argument in its error redacted it exactly when it shared 8
    characters with the stored token, so a model could send 7 known characters and a guess
    per call and read the token off one character at a time (audit finding: 22 characters of
    a HubSpot token in 134 calls). What the model wrote is never redacted now, so a right
    guess and a wrong one read the same; the token itself, quoted by the upstream where the
    model did not write it, still is."""
    token = GH_A["token"]
    tool = gateway.tools["github_create_issue"]

    async def upstream_error(title: str, quoted: str) -> str:
        github.fail_next(
            "POST", "/acme/web/issues", Fault(422, {"message": f"title {quoted} is invalid"})
        )
        exc = await fails(
            executor.call(
                tool, {"owner": "acme", "repo": "web", "title": title}, credentials=GH_A, ctx=A
            )
        )
        return str(exc.details["upstream_error"])

    right, wrong = token[:8], token[:7] + "#"
    assert await upstream_error(right, right) == f"title {right} is invalid"
    assert await upstream_error(wrong, wrong) == f"title {wrong} is invalid"
    # A longer run of the token, of which the model wrote only a part, is hidden whole, and
    # reads the same whatever the model wrote.
    for title in (right, wrong, "x"):
        assert await upstream_error(title, token[:12]) == "title [redacted] is invalid"
        assert await upstream_error(title, token) == "title [redacted] is invalid"
        assert (
            await upstream_error(title, f"{title} ({token})")
            == f"title {title} ([redacted]) is invalid"
        )


async def test_github_bad_credentials_and_foreign_repos(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    tool = gateway.tools["github_list_issues"]
    exc = await fails(
        executor.call(
            tool, {"owner": "acme", "repo": "api"}, credentials={"token": "ghp_revoked_1"}, ctx=A
        )
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.status == 401
    assert exc.details["upstream_error"] == "Bad credentials"
    # Tenant B's token cannot see tenant A's repository: the upstream decides, B's token is sent.
    exc_b = await fails(
        executor.call(tool, {"owner": "acme", "repo": "api"}, credentials=GH_B, ctx=B)
    )
    # GitHub answers 404, not 403, for a repository the token may not see.
    assert exc_b.code == NOT_FOUND and exc_b.status == 404
    assert github.requests()[-1].headers["authorization"] == "Bearer " + GH_B["token"]


async def test_github_rate_limit_403_is_rate_limited_not_auth_failed(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream, sleeps: Sleeps
) -> None:
    limited = Fault(
        403,
        {"message": "API rate limit exceeded for user ID 1."},
        headers={"X-RateLimit-Remaining": "0", "Retry-After": "60"},
    )
    github.fail_next("GET", "/search/issues", limited)
    exc = await fails(
        executor.call(
            gateway.tools["github_search_issues"], {"query": "crash"}, credentials=GH_A, ctx=A
        )
    )
    assert exc.code == RATE_LIMITED and exc.retry_after == 60.0


async def test_github_403_refuses_the_request_without_condemning_the_credentials(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    """A 403 without rate-limit headers is a missing permission for this one request (a
    private repository, a scope the token lacks): the connection is not marked for
    re-authorisation, which would hide every GitHub tool of the tenant."""
    github.fail_next(
        "GET",
        "/issues",
        Fault(403, {"message": "Resource not accessible by personal access token"}),
    )
    exc = await fails(
        executor.call(
            gateway.tools["github_list_issues"],
            {"owner": "acme", "repo": "api"},
            credentials=GH_A,
            ctx=A,
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.status == 403 and exc.retryable is False
    assert exc.message == "GitHub refused the request with HTTP 403."


@pytest.mark.parametrize(
    ("owner", "repo"),
    [
        ("..", ".."),
        (".", "api"),
        ("acme", ".."),
        # One encoded segment that a server decoding %2F (or %5C) before resolving climbs by.
        ("../../user", "repos"),
        ("acme", "api/../../../user"),
        ("..\\..\\user", "repos"),
        ("..;", "api"),
    ],
)
async def test_a_dot_segment_argument_never_moves_the_request_path(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    github: GitHubUpstream,
    owner: str,
    repo: str,
) -> None:
    """`owner=".."` would turn /repos/../../issues into /issues, another endpoint, called with
    the tenant's token."""
    exc = await fails(
        executor.call(
            gateway.tools["github_list_issues"],
            {"owner": owner, "repo": repo},
            credentials=GH_A,
            ctx=A,
        )
    )
    assert exc.code == INVALID_ARGUMENTS and exc.details["argument"] in ("owner", "repo")
    assert github.requests() == []


async def test_github_search_maps_fields(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, github: GitHubUpstream
) -> None:
    result = await executor.call(
        gateway.tools["github_search_issues"],
        {"query": "repo:acme/web module 3"},
        credentials=GH_A,
        ctx=A,
    )
    assert result.output["total_count"] == 1
    assert [i["title"] for i in result.output["issues"]] == ["Crash in module 3"]
    assert set(result.output) == {"total_count", "issues"}
    assert github.requests()[0].args == {"q": "repo:acme/web module 3", "per_page": "30"}


async def test_a_binding_header_replaces_the_default_in_any_case(
    gateway: c.GatewaySpec, stand_ins: StandIns, github: GitHubUpstream
) -> None:
    """`accept:` in a binding was sent beside the gateway's `Accept: application/json` (two
    Accept headers, combined by the upstream into one it may not understand)."""
    tool = gateway.tools["github_search_issues"]
    assert tool.http is not None
    headers = {k: v for k, v in tool.http.headers.items() if k != "Accept"}
    http = dataclasses.replace(
        tool.http, headers={**headers, "accept": "application/vnd.github+json", "user-agent": "x"}
    )
    tool = dataclasses.replace(tool, http=http)
    ex = ConnectorExecutor(with_tool(gateway, tool), base_urls=stand_ins.base_urls())
    try:
        await ex.call(tool, {"query": "repo:acme/web module 3"}, credentials=GH_A, ctx=A)
    finally:
        await ex.aclose()
    sent = github.requests()[0].headers
    assert (sent["accept"], sent["user-agent"]) == ("application/vnd.github+json", "x")


# ------------------------------------------------------------------------------ HubSpot


async def test_hubspot_expired_token_is_refreshed_at_the_token_url_and_retried(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    old = hubspot.issue("portalA")
    hubspot.expire(old)
    result = await executor.call(
        gateway.tools["hubspot_list_contacts"], {"limit": 2}, credentials=hubspot_creds(old), ctx=A
    )
    assert result.status == 200 and result.attempts == 2
    assert result.refreshed_credentials is not None
    new = result.refreshed_credentials["access_token"]
    assert new != old and hubspot.access[new] == "portalA"
    assert result.refreshed_credentials == {"access_token": new, "refresh_token": HS_REFRESH_A}
    assert [ct["properties"]["email"] for ct in result.output["contacts"]] == [
        "ada@portalA.example",
        "grace@portalA.example",
    ]
    assert result.output["next_cursor"] == "2"

    first, token_call, retry = hubspot.received
    assert first.headers["authorization"] == "Bearer " + old
    assert token_call.path == "/oauth/v1/token"
    assert token_call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_call.form() == {
        "grant_type": "refresh_token",
        "refresh_token": HS_REFRESH_A,
        "client_id": HS_APP.client_id,
        "client_secret": HS_APP.client_secret,
    }
    assert "authorization" not in token_call.headers
    assert retry.headers["authorization"] == "Bearer " + new
    assert (
        retry.args
        == first.args
        == {
            "limit": "2",
            "properties": "email,firstname,lastname,phone,company",
        }
    )

    # The stored token now works without a refresh; the cursor goes to `after`.
    page2 = await executor.call(
        gateway.tools["hubspot_list_contacts"],
        {"limit": 2, "cursor": "2"},
        credentials=hubspot_creds(new),
        ctx=A,
    )
    assert page2.refreshed_credentials is None and page2.attempts == 1
    assert page2.output["next_cursor"] is None
    assert hubspot.received[-1].args["after"] == "2"


async def test_hubspot_refresh_also_retries_a_non_idempotent_create_once(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    old = hubspot.issue("portalB")
    hubspot.expire(old)
    result = await executor.call(
        gateway.tools["hubspot_create_contact"],
        {"email": "new@portalB.example", "first_name": "Neo"},
        credentials=hubspot_creds(old, HS_REFRESH_B),
        ctx=B,
    )
    assert result.status == 201 and result.attempts == 2
    posts = hubspot.requests("POST", "/crm/v3/objects/contacts")
    assert len(posts) == 2
    assert posts[1].json() == {"properties": {"email": "new@portalB.example", "firstname": "Neo"}}
    assert result.output["properties"]["email"] == "new@portalB.example"
    assert any(
        ct["properties"]["email"] == "new@portalB.example" for ct in hubspot.contacts["portalB"]
    )
    assert all(
        ct["properties"]["email"] != "new@portalB.example" for ct in hubspot.contacts["portalA"]
    )


async def test_a_keyed_write_keeps_its_key_across_the_oauth2_refresh(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    # The default HubSpot manifest declares no key (HubSpot takes none); a catalog that does
    # stands in for any OAuth2 upstream that does.
    tool = gateway.tools["hubspot_create_contact"]
    assert tool.http is not None and tool.http.idempotency_key is None
    keyed = dataclasses.replace(
        tool,
        http=dataclasses.replace(
            tool.http, idempotency_key=c.IdempotencyKey(header="Idempotency-Key")
        ),
    )
    old = hubspot.issue("portalB")
    hubspot.expire(old)
    result = await executor.call(
        keyed,
        {"email": "keyed@portalB.example"},
        credentials=hubspot_creds(old, HS_REFRESH_B),
        ctx=B,
    )
    assert result.status == 201 and result.attempts == 2
    posts = hubspot.requests("POST", "/crm/v3/objects/contacts")
    assert [p.headers["authorization"] == "Bearer " + old for p in posts] == [True, False]
    first, second = (p.headers.get("idempotency-key") for p in posts)
    assert first is not None and first == second


async def test_hubspot_failed_refresh_is_upstream_auth_failed(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    creds = hubspot_creds("hs-access-stale", "hs-refresh-unknown-0000")
    exc = await fails(
        executor.call(gateway.tools["hubspot_list_contacts"], {}, credentials=creds, ctx=A)
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.retryable is False
    assert exc.details == {"connector": "hubspot", "status": 401, "reason": "token_refresh_failed"}
    assert exc.refreshed_credentials is None
    assert "hs-refresh-unknown-0000" not in envelope_text(exc)
    assert [r.path for r in hubspot.received] == ["/crm/v3/objects/contacts", "/oauth/v1/token"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(503, {"status": "error"}),
        Fault(429),
        Fault(200, raw=b"<html>oops</html>"),
        Fault(200, raw=DEEP_JSON, headers={"content-type": "application/json"}),
    ],
)
async def test_a_token_endpoint_that_fails_for_now_does_not_condemn_the_connection(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream, fault: Fault
) -> None:
    """Only a refusal of the refresh token (400 invalid_grant, 401, 403) means re-authorise;
    an unavailable token endpoint is an upstream error worth retrying later."""
    old = hubspot.issue("portalA")
    hubspot.expire(old)
    hubspot.fail_next("POST", "/oauth/v1/token", fault)
    exc = await fails(
        executor.call(
            gateway.tools["hubspot_list_contacts"], {}, credentials=hubspot_creds(old), ctx=A
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.retryable is True
    assert exc.details == {"connector": "hubspot", "reason": "token_endpoint_unavailable"}
    # The next call refreshes and succeeds: the grant was never lost.
    result = await executor.call(
        gateway.tools["hubspot_list_contacts"], {}, credentials=hubspot_creds(old), ctx=A
    )
    assert result.refreshed_credentials is not None


async def test_hubspot_rotated_refresh_token_is_returned_even_when_the_retry_fails(
    gateway: c.GatewaySpec, sleeps: Sleeps
) -> None:
    grants = {"hs-refresh-rot-1234": "portalR"}
    with HubSpotUpstream(HS_APP, grants, rotate_refresh_tokens=True) as hs:
        ex = ConnectorExecutor(
            gateway,
            base_urls={"hubspot": hs.url},
            token_urls={"hubspot": hs.url + "/oauth/v1/token"},
            sleep=sleeps,
        )
        try:
            hs.fail_next(
                "POST",
                "/crm/v3/objects/contacts/search",
                Fault(None),
                Fault(
                    400,
                    {"status": "error", "message": "bad filter", "category": "VALIDATION_ERROR"},
                ),
            )
            old = hs.issue("portalR")
            hs.expire(old)
            exc = await fails(
                ex.call(
                    gateway.tools["hubspot_search_contacts"],
                    {"query": "ada"},
                    credentials=hubspot_creds(old, "hs-refresh-rot-1234"),
                    ctx=A,
                )
            )
        finally:
            await ex.aclose()
    assert exc.code == UPSTREAM_ERROR and exc.status == 400
    assert exc.details["upstream_error"] == "bad filter"
    assert exc.refreshed_credentials is not None
    new_refresh = exc.refreshed_credentials["refresh_token"]
    assert new_refresh != "hs-refresh-rot-1234" and hs.grants == {new_refresh: "portalR"}
    assert "refreshed_credentials" not in envelope_text(exc)
    assert new_refresh not in envelope_text(exc)


async def test_concurrent_calls_with_one_expired_token_refresh_once(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    import anyio

    old = hubspot.issue("portalA")
    hubspot.expire(old)
    before = hubspot.refreshes
    results: list[ExecResult] = []

    async def one() -> None:
        results.append(
            await executor.call(
                gateway.tools["hubspot_list_contacts"], {}, credentials=hubspot_creds(old), ctx=A
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert hubspot.refreshes - before == 1
    tokens = {r.refreshed_credentials["access_token"] for r in results if r.refreshed_credentials}
    assert len(tokens) == 1

    # Another tenant with the same stale token value is refreshed with its own grant.
    other = await executor.call(
        gateway.tools["hubspot_list_contacts"],
        {},
        credentials=hubspot_creds(old, HS_REFRESH_B),
        ctx=B,
    )
    assert other.refreshed_credentials is not None
    assert hubspot.access[other.refreshed_credentials["access_token"]] == "portalB"
    assert other.output["contacts"][0]["properties"]["email"].endswith("@portalB.example")


async def test_hubspot_conflict_message_is_in_details(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    token = hubspot.issue("portalA")
    exc = await fails(
        executor.call(
            gateway.tools["hubspot_create_contact"],
            {"email": "ada@portalA.example"},
            credentials=hubspot_creds(token),
            ctx=A,
        )
    )
    assert exc.code == UPSTREAM_ERROR and exc.status == 409 and not exc.retryable
    assert exc.details["upstream_error"] == "Contact already exists. Existing ID: 100"
    assert "Contact already exists" not in exc.message  # free text stays in details


# ------------------------------------------------------------------------ faults, shapes


async def test_a_write_whose_connection_broke_after_sending_is_not_called_retryable(
    gateway: c.GatewaySpec, sleeps: Sleeps
) -> None:
    hang = HangUp()
    ex = ConnectorExecutor(gateway, base_urls={"github": hang.url}, sleep=sleeps)
    try:
        exc = await fails(
            ex.call(
                gateway.tools["github_create_issue"],
                {"owner": "acme", "repo": "api", "title": "Crash"},
                credentials=GH_A,
                ctx=A,
            )
        )
        listed = await fails(
            ex.call(
                gateway.tools["github_list_issues"],
                {"owner": "acme", "repo": "api"},
                credentials=GH_A,
                ctx=A,
            )
        )
    finally:
        await ex.aclose()
        hang.close()
    # The write reached the upstream once, and was neither repeated nor advertised as safe
    # to repeat; the message does not claim that nothing was sent.
    assert hang.requests[0] == b"POST /repos/acme/api/issues HTTP/1.1"
    assert exc.code == UPSTREAM_ERROR and exc.retryable is False and exc.attempts == 1
    assert exc.details == {"connector": "github", "reason": "connection_dropped"}
    assert "may have applied the request" in exc.message
    assert "Could not connect" not in exc.message
    # A read is retried, then reported as retryable.
    assert hang.requests[1:] == [b"GET /repos/acme/api/issues?state=open&per_page=30 HTTP/1.1"] * 3
    assert listed.code == UPSTREAM_ERROR and listed.retryable is True and listed.attempts == 3


async def test_a_write_that_timed_out_is_not_called_retryable(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    fast = with_connector(gateway, "slack", timeout_seconds=0.3)
    ex = ConnectorExecutor(fast, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        slack.fail_next("POST", "/chat.postMessage", Fault(None, delay=1.5))
        exc = await fails(
            ex.call(
                fast.tools["slack_send_message"],
                {"channel": "C1", "text": "hi"},
                credentials=SLACK_A,
                ctx=A,
            )
        )
    finally:
        await ex.aclose()
    assert exc.code == UPSTREAM_TIMEOUT and exc.retryable is False and exc.attempts == 1
    assert "may have applied the request" in exc.message


async def test_a_read_only_tool_that_timed_out_is_retryable(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    """Read-only but not annotated idempotent: it is not retried here, but it changed nothing,
    so its timeout is no write that may have been applied."""
    fast = with_connector(gateway, "slack", timeout_seconds=0.3)
    listed = fast.tools["slack_list_channels"]
    listed = dataclasses.replace(
        listed, annotations=c.Annotations(read_only=True, idempotent=False, open_world=True)
    )
    ex = ConnectorExecutor(
        with_tool(fast, listed), base_urls={"slack": slack.url + "/api"}, sleep=sleeps
    )
    try:
        slack.fail_next("GET", "/conversations.list", Fault(None, delay=1.5))
        exc = await fails(ex.call(listed, {}, credentials=SLACK_A, ctx=A))
    finally:
        await ex.aclose()
    assert exc.code == UPSTREAM_TIMEOUT and exc.attempts == 1
    assert exc.retryable is True and "may have applied" not in exc.message


async def test_a_slow_upstream_times_out(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    fast = with_connector(gateway, "slack", timeout_seconds=0.3)
    ex = ConnectorExecutor(fast, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        slack.fail_next("GET", "/conversations.list", Fault(None, delay=1.5))
        exc = await fails(
            ex.call(fast.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        )
    finally:
        await ex.aclose()
    assert exc.code == UPSTREAM_TIMEOUT and exc.retryable is True
    assert exc.status is None and exc.attempts == 1
    assert "0.3 s" in exc.message


@pytest.mark.parametrize(
    "fault",
    [
        Fault(
            200,
            raw=b"<html><body>Service page</body></html>",
            headers={"content-type": "text/html"},
        ),
        Fault(200, raw=b'{"ok": true, "channels": [', headers={"content-type": "application/json"}),
        Fault(200, raw=b"", headers={"content-type": "application/json"}),
        Fault(200, {"ok": True, "channels": [{"name": "no-id"}]}),
        Fault(200, {"ok": True, "channels": "not a list"}),
        Fault(200, ["ok"]),
        # Nested past the JSON parser's recursion limit: refused, not an internal error.
        Fault(200, raw=DEEP_JSON, headers={"content-type": "application/json"}),
    ],
)
async def test_malformed_or_mismatching_bodies_are_invalid_responses(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream, fault: Fault
) -> None:
    slack.fail_next("GET", "/conversations.list", fault)
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
    )
    assert exc.code == UPSTREAM_INVALID_RESPONSE
    assert exc.status == 200
    assert len(slack.requests()) == 1
    if fault.body and isinstance(fault.body, dict) and fault.body["channels"] != "not a list":
        assert exc.details["path"] == "channels/0" and exc.details["rule"] == "required"
        assert exc.details["missing"] == ["id"]
        assert "no-id" not in envelope_text(exc)  # upstream data is not echoed


MISMATCHES = [
    # (upstream body, path, rule, reason, further details)
    (
        {"ok": True, "items": [{"id": "C1", "name": "x-secret-name"}]},
        "",
        "required",
        "the required property 'channels' is missing",
        {"missing": ["channels"]},
    ),
    (
        {"ok": True, "channels": [{"id": "C1", "name": "a"}, {"id": 4242, "name": "b"}]},
        "channels/1/id",
        "type",
        "expected string, got integer",
        {"expected": ["string"], "got": "integer"},
    ),
    (
        {"ok": True, "channels": [{"id": "C1", "name": "a", "topic": {"value": ["x-secret"]}}]},
        "channels/0/topic/value",
        "type",
        "expected string, got array",
        {"expected": ["string"], "got": "array"},
    ),
    (
        {"ok": True, "channels": [{}]},
        "channels/0",
        "required",
        "the required properties 'id', 'name' are missing",
        {"missing": ["id", "name"]},
    ),
    (
        {"ok": True, "channels": [{"id": "C1", "name": "a", "is_private": "x-secret"}]},
        "channels/0/is_private",
        "type",
        "expected boolean, got string",
        {"expected": ["boolean"], "got": "string"},
    ),
]


@pytest.mark.parametrize(("body", "path", "rule", "reason", "more"), MISMATCHES)
async def test_an_output_mismatch_says_where_and_why_without_upstream_data(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    slack: SlackUpstream,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    path: str,
    rule: str,
    reason: str,
    more: dict[str, Any],
) -> None:
    caplog.set_level(logging.WARNING, logger="generator.runtime.executor")
    slack.fail_next("GET", "/conversations.list", Fault(200, body))
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
    )
    assert exc.code == UPSTREAM_INVALID_RESPONSE
    where = path or "the top level"
    assert exc.message == (
        "Slack answered with data that does not match the output schema of "
        f"slack_list_channels: at {where}, {reason}."
    )
    assert exc.details == {
        "connector": "slack",
        "status": 200,
        "path": path,
        "rule": rule,
        "reason": reason,
        **more,
    }
    # The operator's log says the same; neither repeats the upstream's values.
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(exc.message in line and "slack_list_channels" in line for line in logged)
    for text in (envelope_text(exc), caplog.text):
        assert "x-secret" not in text and "4242" not in text
        assert_no_secrets(text)


async def test_an_output_mismatch_under_free_form_keys_hides_the_key(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    """A key the schema does not declare (free-form properties) is upstream data: it shows as
    `*` in the path."""
    base = gateway.tools["slack_list_channels"]
    by_id = dataclasses.replace(
        base,
        name="slack_channels_by_id",
        output_schema={
            "type": "object",
            "required": ["channels"],
            "properties": {
                "channels": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "required": ["name"]},
                },
                "next_cursor": {"type": ["string", "null"]},
            },
        },
    )
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(200, {"ok": True, "channels": {"ada@private.example": {"id": "C1"}}}),
    )
    exc = await fails(executor.call(by_id, {}, credentials=SLACK_A, ctx=A))
    assert exc.details["path"] == "channels/*" and exc.details["missing"] == ["name"]
    assert "at channels/*, the required property 'name' is missing" in exc.message
    assert "ada@private" not in envelope_text(exc)


async def test_a_missing_select_path_is_an_invalid_response(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream
) -> None:
    shopify.fail_next("GET", "/customers/1001.json", Fault(200, {"client": {"id": 1}}))
    exc = await fails(
        executor.call(
            gateway.tools["shopify_get_customer"], {"customer_id": 1001}, credentials=SHOP_A, ctx=A
        )
    )
    assert exc.code == UPSTREAM_INVALID_RESPONSE and exc.details["missing"] == "customer"


async def test_connection_errors_are_retried_for_idempotent_tools_only(
    gateway: c.GatewaySpec, sleeps: Sleeps
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ex = ConnectorExecutor(gateway, base_urls={"slack": dead}, sleep=sleeps)
    try:
        exc = await fails(
            ex.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        )
        assert exc.code == UPSTREAM_ERROR and exc.retryable is True
        assert exc.details == {"connector": "slack", "reason": "connection_failed"}
        assert exc.attempts == gateway.connectors["slack"].retries + 1
        assert len(sleeps.calls) == gateway.connectors["slack"].retries

        sleeps.calls.clear()
        exc = await fails(
            ex.call(
                gateway.tools["slack_send_message"],
                {"channel": "#general", "text": "x"},
                credentials=SLACK_A,
                ctx=A,
            )
        )
        assert exc.attempts == 1 and sleeps.calls == []
    finally:
        await ex.aclose()


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("slack_get_channel_history", {"channel": "C" * 70_000}),  # past the query's limit
        ("github_list_issues", {"owner": "acme", "repo": "r" * 70_000}),  # past the URL's
    ],
)
async def test_arguments_too_long_for_a_url_are_invalid_not_a_connection_failure(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    slack: SlackUpstream,
    github: GitHubUpstream,
    sleeps: Sleeps,
    tool: str,
    arguments: dict[str, Any],
) -> None:
    """Nothing can be sent: the model is told to shorten its arguments, with no retry, and
    the error is not an upstream one (so it is not held against the connection's health)."""
    credentials = SLACK_A if tool.startswith("slack") else GH_A
    exc = await fails(executor.call(gateway.tools[tool], arguments, credentials=credentials, ctx=A))
    assert exc.code == INVALID_ARGUMENTS and exc.retryable is False, exc.message
    assert exc.details == {"reason": "request_url_invalid"}
    assert "too long" in exc.message and sleeps.calls == []
    assert slack.requests() == [] and github.requests() == []


async def test_a_deeply_nested_error_body_is_an_upstream_error(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(400, raw=DEEP_JSON, headers={"content-type": "application/json"}),
    )
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
    )
    assert exc.code == UPSTREAM_ERROR and exc.status == 400


def test_error_text_is_cut_to_what_is_shown_before_it_is_redacted() -> None:
    """An upstream may send megabytes of error text: only its start is shown, redacted as
    ever (a secret whole or in part, after any leading whitespace)."""
    secret = "xoxb-SECRET-0123456789"
    tail = "e" * 5_000_000
    shown = _sanitise("\n " * 10_000 + secret + " at " + secret[3:15] + " " + tail, (secret,))
    assert shown.startswith("[redacted] at [redacted] eee") and len(shown) == MAX_ERROR_TEXT
    assert shown.endswith("e…")


async def test_a_failure_to_connect_names_the_host_to_whoever_chose_it(
    gateway: c.GatewaySpec, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's log says where the request went; the tenant hears the host only when its
    own connection fields made it (a mistyped shop), never an operator's internal URL."""
    caplog.set_level(logging.WARNING, logger="generator.runtime.executor")
    port = free_port()  # nothing listens there
    ex = ConnectorExecutor(
        gateway,
        base_urls={
            "slack": f"http://127.0.0.1:{port}/api",
            "shopify": f"http://{{shop}}:{port}/admin",
        },
        sleep=sleeps,
    )
    try:
        slack = await fails(
            ex.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        )
        assert slack.message == "Could not connect to Slack."
        assert slack.upstream == f"http://127.0.0.1:{port}"

        shop = {**SHOP_A, "shop": "localhost"}  # a name that resolves, to a closed port
        exc = await fails(
            ex.call(gateway.tools["shopify_list_orders"], {}, credentials=shop, ctx=A)
        )
        assert exc.details == {"connector": "shopify", "reason": "connection_failed"}
        assert exc.message == "Could not connect to Shopify at localhost."
    finally:
        await ex.aclose()
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        f"upstream=http://127.0.0.1:{port}: Could not connect to Slack." in m for m in logged
    )
    assert any(f"upstream=http://localhost:{port}: " in m for m in logged)
    assert not any("/api" in m or "/admin" in m for m in logged)  # the origin, not the path


async def test_missing_credentials_fail_before_any_request(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    exc = await fails(
        executor.call(gateway.tools["slack_list_channels"], {}, credentials={}, ctx=A)
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and slack.requests() == []


async def test_credentials_never_reach_errors_or_logs(
    executor: ConnectorExecutor,
    gateway: c.GatewaySpec,
    slack: SlackUpstream,
    shopify: ShopifyUpstream,
    hubspot: HubSpotUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ConnectorCallError] = []
    # An upstream that echoes the token back in its error text.
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(200, {"ok": False, "error": f"invalid token {SLACK_A['bot_token']} for team"}),
    )
    errors.append(
        await fails(
            executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        )
    )
    assert errors[-1].details["upstream_error"] == "invalid token [redacted] for team"
    assert "invalid token" not in errors[-1].message

    # Or only part of it: cut short, or run into text of its own.
    token = SLACK_A["bot_token"]
    slack.fail_next(
        "GET",
        "/conversations.list",
        Fault(200, {"ok": False, "error": f"bad token prefix {token[:-2]}; tail x{token[5:]}"}),
    )
    errors.append(
        await fails(
            executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        )
    )
    assert errors[-1].details["upstream_error"] == "bad token prefix [redacted]; tail x[redacted]"

    slack.fail_next(
        "GET",
        "/conversations.list",
        *[Fault(500, {"ok": False, "error": SLACK_B["bot_token"]})] * 3,
    )
    errors.append(
        await fails(
            executor.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_B, ctx=B)
        )
    )
    errors.append(
        await fails(
            executor.call(
                gateway.tools["shopify_list_orders"],
                {},
                credentials={"shop": "acme", "access_token": SHOP_B["access_token"]},
                ctx=B,
            )
        )
    )
    errors.append(
        await fails(
            executor.call(
                gateway.tools["hubspot_list_contacts"],
                {},
                credentials=hubspot_creds("hs-stale-token", HS_REFRESH_B + "-wrong"),
                ctx=B,
            )
        )
    )
    ok = await executor.call(
        gateway.tools["hubspot_list_contacts"],
        {},
        credentials=hubspot_creds("hs-stale-token-2"),
        ctx=A,
    )
    assert ok.refreshed_credentials is not None
    new_token = ok.refreshed_credentials["access_token"]
    for exc in errors:
        assert_no_secrets(envelope_text(exc), repr(exc), str(exc))
    assert_no_secrets(caplog.text)
    assert new_token not in caplog.text
    assert "hs-stale-token" not in caplog.text
    assert any("connector call failed" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------- session binding, form bodies, config


def _bound_tool(gateway: c.GatewaySpec, **http_changes: Any) -> c.ToolSpec:
    """A Slack capability whose text carries the session user (not a model argument)."""
    base = gateway.tools["slack_send_message"]
    assert base.http is not None
    http = dataclasses.replace(
        base.http,
        body={"channel": "{channel}", "text": "{text} (for {user_id})", "unfurl_links": "{unfurl}"},
        **http_changes,
    )
    return dataclasses.replace(
        base,
        name="slack_send_note",
        bind={"user_id": "session.user"},
        http=http,
        input_schema={
            "type": "object",
            "properties": {
                "channel": {"type": "string"},
                "text": {"type": "string"},
                "unfurl": {"type": "boolean"},
            },
        },
    )


async def test_session_bound_parameters_come_from_the_context_only(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    tool = _bound_tool(gateway)
    gw = with_tool(gateway, tool)
    ex = ConnectorExecutor(gw, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        await ex.call(
            tool,
            {"channel": "#general", "text": "Standup", "user_id": "someone-else"},
            credentials=SLACK_A,
            ctx=A,
        )
        assert slack.requests()[-1].json() == {
            "channel": "#general",
            "text": "Standup (for user-a1)",
        }

        exc = await fails(
            ex.call(
                tool,
                {"channel": "#general", "text": "x", "user_id": "forged"},
                credentials=SLACK_A,
                ctx=CallContext(tenant_id="tenant-a", user_id=None),
            )
        )
        assert exc.code == UNAUTHENTICATED
        assert len(slack.requests()) == 1
    finally:
        await ex.aclose()


@pytest.mark.parametrize(
    ("text", "sent"), [("deploy", "deploy"), ("a\r\nX-Evil: 1", None), ("café", None)]
)
async def test_an_argument_in_a_header_is_one_line_of_ascii(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps, text: str, sent: str | None
) -> None:
    base = gateway.tools["slack_send_message"]
    assert base.http is not None
    tool = dataclasses.replace(
        base,
        name="slack_send_tagged",
        http=dataclasses.replace(base.http, headers={"X-Note": "note: {text}"}),
    )
    gw = with_tool(gateway, tool)
    ex = ConnectorExecutor(gw, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        args = {"channel": "#general", "text": text}
        call = ex.call(tool, args, credentials=SLACK_A, ctx=A)
        if sent is not None:
            await call
            assert slack.requests()[-1].headers["x-note"] == "note: " + sent
        else:
            exc = await fails(call)
            assert exc.code == INVALID_ARGUMENTS and slack.requests() == []
    finally:
        await ex.aclose()


async def test_form_encoded_bodies(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    tool = _bound_tool(gateway, body_encoding="form")
    gw = with_tool(gateway, tool)
    ex = ConnectorExecutor(gw, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        result = await ex.call(
            tool,
            {"channel": "#random", "text": "a&b=c ü", "unfurl": True},
            credentials=SLACK_A,
            ctx=A,
        )
    finally:
        await ex.aclose()
    sent = slack.requests()[-1]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.form() == {
        "channel": "#random",
        "text": "a&b=c ü (for user-a1)",
        "unfurl_links": "true",
    }
    assert result.output["message"]["text"] == "a&b=c ü (for user-a1)"


async def test_overrides_from_the_environment(
    gateway: c.GatewaySpec, shopify: ShopifyUpstream, hubspot: HubSpotUpstream, sleeps: Sleeps
) -> None:
    environ = {
        "FASTN_GATEWAY_BASE_URL_SHOPIFY": shopify.url + "/{shop}/admin/api/2024-10/",
        "FASTN_GATEWAY_BASE_URL_HUBSPOT": hubspot.url,
        "FASTN_GATEWAY_TOKEN_URL_HUBSPOT": hubspot.url + "/oauth/v1/token",
        "FASTN_GATEWAY_BASE_URL_GITHUB": "  ",  # empty: no override
        "OTHER_BASE_URL_SLACK": "http://127.0.0.1:1",
    }
    assert base_urls_from_env(gateway, environ) == {
        "shopify": shopify.url + "/{shop}/admin/api/2024-10",
        "hubspot": hubspot.url,
    }
    assert token_urls_from_env(gateway, environ) == {"hubspot": hubspot.url + "/oauth/v1/token"}
    # A bad value, a connector the gateway lacks, a token URL of a connector without OAuth2.
    for bad, said in (
        ({"FASTN_GATEWAY_BASE_URL_SLACK": "ftp://x"}, "FASTN_GATEWAY_BASE_URL_SLACK: 'ftp://x'"),
        ({"FASTN_GATEWAY_BASE_URL_NOPE": "http://127.0.0.1:1"}, "known: github, hubspot"),
        ({"FASTN_GATEWAY_TOKEN_URL_SLACK": "http://127.0.0.1:1"}, "does not use OAuth2"),
    ):
        with pytest.raises(ConnectorConfigError, match=re.escape(said)):
            base_urls_from_env(gateway, bad)
            token_urls_from_env(gateway, bad)

    ex = ConnectorExecutor.from_env(gateway, environ, sleep=sleeps)
    try:
        result = await ex.call(
            gateway.tools["shopify_search_customers"], {"query": "ada"}, credentials=SHOP_A, ctx=A
        )
        assert [cu["email"] for cu in result.output["customers"]] == ["ada@acme.example"]
        old = hubspot.issue("portalA")
        hubspot.expire(old)
        refreshed = await ex.call(
            gateway.tools["hubspot_search_contacts"],
            {"query": "grace"},
            credentials=hubspot_creds(old),
            ctx=A,
        )
        assert refreshed.output["total"] == 1 and refreshed.refreshed_credentials
        search = hubspot.requests("POST", "/search")[-1]
        assert search.json() == {
            "query": "grace",
            "limit": 10,
            "properties": ["email", "firstname", "lastname", "phone", "company"],
        }
    finally:
        await ex.aclose()


async def test_a_borrowed_client_is_not_closed(
    gateway: c.GatewaySpec, slack: SlackUpstream
) -> None:
    import httpx2

    async with httpx2.AsyncClient() as client:
        ex = ConnectorExecutor(gateway, base_urls={"slack": slack.url + "/api"}, client=client)
        await ex.call(gateway.tools["slack_list_channels"], {}, credentials=SLACK_A, ctx=A)
        await ex.aclose()
        response = await client.get(slack.url + "/api/conversations.list")
        assert response.json() == {"ok": False, "error": "not_authed"}


# ------------------------------------------------------------- the compiler's own catalog


def _generated_gateway() -> Any:
    """`GATEWAY` of the generated package, when `gen build` has produced it."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "generated"
    if not (root / "fastn_gateway" / "catalog" / "__init__.py").exists():
        pytest.skip("generated/fastn_gateway not built")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from fastn_gateway.catalog import GATEWAY

    return GATEWAY


async def test_the_generated_catalog_runs_against_the_stand_ins(
    stand_ins: StandIns, sleeps: Sleeps
) -> None:
    generated = _generated_gateway()
    stand_ins.reset()
    ex = ConnectorExecutor(
        generated,
        base_urls=base_urls_from_env(generated, stand_ins.environ(generated.import_name)),
        token_urls=token_urls_from_env(generated, stand_ins.environ(generated.import_name)),
        sleep=sleeps,
    )
    tools = generated.tools
    try:
        sent = await ex.call(
            tools["slack_send_message"],
            {"channel": "#general", "text": "gen"},
            credentials=SLACK_A,
            ctx=A,
        )
        assert sent.output["channel"] == "CTA000"
        first = await ex.call(tools["shopify_list_orders"], {"limit": 4}, credentials=SHOP_B, ctx=B)
        rest = await ex.call(
            tools["shopify_list_orders"],
            {"limit": 4, "cursor": first.output["next_cursor"]},
            credentials=SHOP_B,
            ctx=B,
        )
        assert len(first.output["orders"]) + len(rest.output["orders"]) == 5
        assert rest.output["next_cursor"] is None
        issues = await ex.call(
            tools["github_list_issues"], {"owner": "acme", "repo": "web"}, credentials=GH_A, ctx=A
        )
        assert len(issues.output["issues"]) == 5 and issues.output["next_cursor"] is None
        old = stand_ins.hubspot.issue("portalA")
        stand_ins.hubspot.expire(old)
        contacts = await ex.call(
            tools["hubspot_search_contacts"],
            {"query": "alan"},
            credentials=hubspot_creds(old),
            ctx=A,
        )
        assert contacts.output["total"] == 1 and contacts.refreshed_credentials is not None
        found = await ex.search_entities(
            entity_type="contact",
            query="grace",
            limit=5,
            connectors=stand_ins.credentials("B"),
            ctx=B,
        )
        assert [s["status"] for s in found["sources"]] == ["ok", "ok"]
        assert {e["fields"]["email"] for e in found["entities"]} == {
            "grace@portalB.example",
            "grace@globex.example",
        }
    finally:
        await ex.aclose()


async def test_a_binding_header_cannot_replace_the_tenants_credentials(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    base = gateway.tools["slack_list_channels"]
    assert base.http is not None
    tool = dataclasses.replace(
        base,
        name="slack_list_channels_as",
        http=dataclasses.replace(
            base.http, headers={"authorization": "Bearer {token}", "X-Trace": "t-{token}"}
        ),
        input_schema={"type": "object", "properties": {"token": {"type": "string"}}},
    )
    gw = with_tool(gateway, tool)
    ex = ConnectorExecutor(gw, base_urls={"slack": slack.url + "/api"}, sleep=sleeps)
    try:
        await ex.call(tool, {"token": SLACK_B["bot_token"]}, credentials=SLACK_A, ctx=A)
    finally:
        await ex.aclose()
    (sent,) = slack.requests()
    assert sent.headers["authorization"] == "Bearer " + SLACK_A["bot_token"]
    assert sent.headers["x-trace"] == "t-" + SLACK_B["bot_token"]  # other headers do interpolate


async def test_a_header_argument_with_a_control_character_is_refused_before_sending(
    gateway: c.GatewaySpec, slack: SlackUpstream, sleeps: Sleeps
) -> None:
    """A vertical tab, a form feed or spaces around a header value: the HTTP client refused
    them only as it sent, and the gateway took that for a connection that broke after the
    request went out, retried an idempotent read three times and told a write it may have
    applied (audit finding). Now a control character is invalid_arguments with nothing sent,
    and the spaces and tabs around a value, which HTTP does not count as part of it, are
    left out."""
    base = gateway.tools["slack_list_channels"]
    assert base.http is not None
    tool = dataclasses.replace(
        base,
        name="slack_list_channels_traced",
        http=dataclasses.replace(base.http, headers={"X-Trace": "{trace}"}),
        input_schema={"type": "object", "properties": {"trace": {"type": "string"}}},
    )
    ex = ConnectorExecutor(
        with_tool(gateway, tool), base_urls={"slack": slack.url + "/api"}, sleep=sleeps
    )
    try:
        for bad in ("a\x0bb", "a\x0cb", "a\x01b", "a\x7fb"):
            with pytest.raises(GatewayError) as info:
                await ex.call(tool, {"trace": bad}, credentials=SLACK_A, ctx=A)
            assert info.value.code == INVALID_ARGUMENTS
            assert "control character" in info.value.message
        assert slack.requests() == [] and sleeps.calls == []
        await ex.call(tool, {"trace": " \tt-1 \t"}, credentials=SLACK_A, ctx=A)
        await ex.call(tool, {"trace": "a\tb c"}, credentials=SLACK_A, ctx=A)
    finally:
        await ex.aclose()
    assert [r.headers["x-trace"] for r in slack.requests()] == ["t-1", "a\tb c"]


async def test_retry_after_as_an_http_date_on_a_503(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, shopify: ShopifyUpstream, sleeps: Sleeps
) -> None:
    import email.utils
    import time

    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    shopify.fail_next(
        "GET", "/customers/1002.json", Fault(503, {"errors": "busy"}, headers={"Retry-After": when})
    )
    result = await executor.call(
        gateway.tools["shopify_get_customer"], {"customer_id": 1002}, credentials=SHOP_A, ctx=A
    )
    assert result.attempts == 2
    (waited,) = sleeps.calls
    assert 2.0 <= waited <= 4.0


async def test_a_refreshed_token_that_is_still_refused_is_an_auth_failure(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, hubspot: HubSpotUpstream
) -> None:
    old = hubspot.issue("portalA")
    hubspot.expire(old)
    denied = Fault(
        401, {"status": "error", "message": "missing scopes", "category": "MISSING_SCOPES"}
    )
    hubspot.fail_next("GET", "/crm/v3/objects/contacts", Fault(None), denied)
    exc = await fails(
        executor.call(
            gateway.tools["hubspot_list_contacts"], {}, credentials=hubspot_creds(old), ctx=A
        )
    )
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.attempts == 2
    assert exc.details["upstream_error"] == "missing scopes"
    assert exc.refreshed_credentials is not None  # stored by the caller even so
    assert hubspot.access[exc.refreshed_credentials["access_token"]] == "portalA"
    assert [r.path for r in hubspot.received].count("/oauth/v1/token") == 1


async def test_a_token_url_placeholder_takes_the_connections_own_value(
    gateway: c.GatewaySpec, sleeps: Sleeps
) -> None:
    """Microsoft Entra ID's token URL names the directory: `.../{directory}/oauth2/...`. A
    placeholder of a non-secret field is filled from the connection, percent-encoded."""
    with HubSpotUpstream(HS_APP, {HS_REFRESH_A: "portalA"}) as hs:
        ex = ConnectorExecutor(
            gateway,
            base_urls={"hubspot": hs.url},
            token_urls={"hubspot": hs.url + "/oauth/v1/token?app={client_id}"},
            sleep=sleeps,
        )
        try:
            old = hs.issue("portalA")
            hs.expire(old)
            tool = gateway.tools["hubspot_list_contacts"]
            creds = hubspot_creds(old)
            result = await ex.call(tool, {"limit": 1}, credentials=creds, ctx=A)
            assert result.refreshed_credentials is not None
            (token_call,) = [r for r in hs.received if r.path == "/oauth/v1/token"]
            assert token_call.args == {"app": HS_APP.client_id}

            # A value that would move the URL (a dot segment) is refused, by name.
            hs.expire(result.refreshed_credentials["access_token"])
            lacking = {**creds, **result.refreshed_credentials, "client_id": ".."}
            with pytest.raises(ConnectorCallError) as info:
                await ex.call(tool, {"limit": 1}, credentials=lacking, ctx=A)
            assert info.value.code == "upstream_auth_failed"
            assert "'client_id'" in info.value.message and "token URL" in info.value.message
        finally:
            await ex.aclose()


async def test_a_reconnection_does_not_reuse_the_old_connections_refreshed_token(
    gateway: c.GatewaySpec, sleeps: Sleeps
) -> None:
    """Calls that meet the same expired token share one refresh, but only within one
    connection: reconnected with the same credentials, the connection refreshes for itself."""
    with HubSpotUpstream(HS_APP, {HS_REFRESH_A: "portalA"}) as hs:
        ex = ConnectorExecutor(
            gateway,
            base_urls={"hubspot": hs.url},
            token_urls={"hubspot": hs.url + "/oauth/v1/token"},
            sleep=sleeps,
        )
        try:
            old = hs.issue("portalA")
            hs.expire(old)
            tool = gateway.tools["hubspot_list_contacts"]

            def token_calls() -> int:
                return sum(r.path == "/oauth/v1/token" for r in hs.received)

            first = CallContext(tenant_id=A.tenant_id, user_id=None, connected_at=1)
            one = await ex.call(tool, {"limit": 1}, credentials=hubspot_creds(old), ctx=first)
            again = await ex.call(tool, {"limit": 1}, credentials=hubspot_creds(old), ctx=first)
            assert token_calls() == 1  # the same connection: one refresh served both
            assert one.refreshed_credentials == again.refreshed_credentials

            second = CallContext(tenant_id=A.tenant_id, user_id=None, connected_at=2)
            fresh = await ex.call(tool, {"limit": 1}, credentials=hubspot_creds(old), ctx=second)
            assert token_calls() == 2  # reconnected: its own refresh
            assert fresh.refreshed_credentials is not None

            # Entity search calls each connector with that connection's own date.
            async def search(made: int) -> None:
                out = await ex.search_entities(
                    entity_type="contact",
                    query="ada",
                    limit=5,
                    connectors={"hubspot": hubspot_creds(old)},
                    ctx=first,
                    connected_at={"hubspot": made},
                )
                assert out["sources"][0]["status"] == "ok", out

            await search(2)
            assert token_calls() == 2  # the second connection's refresh, shared
            await search(3)
            assert token_calls() == 3  # a third connection: its own
        finally:
            await ex.aclose()


async def test_gateway_processes_on_one_database_follow_each_others_link_cursors(
    gateway: c.GatewaySpec, shopify: ShopifyUpstream, stand_ins: StandIns, tmp_path: Path
) -> None:
    """The cursor key comes from the deployment's credential key: another gateway process on
    the same database follows a link cursor; a deployment with another key does not."""
    from generator.runtime.server import GatewayRuntime

    urls = stand_ins.base_urls()
    db = str(tmp_path / "gw.db")
    runtimes = [
        GatewayRuntime.open(gateway, path, environ={}, base_urls=urls)
        for path in (db, db, str(tmp_path / "elsewhere" / "gw.db"))
    ]
    try:
        tool = gateway.tools["shopify_list_orders"]
        serving, same, other = (runtime.executor for runtime in runtimes)
        page = await serving.call(tool, {"limit": 2}, credentials=SHOP_A, ctx=A)
        args = {"limit": 2, "cursor": page.output["next_cursor"]}
        second = await same.call(tool, args, credentials=SHOP_A, ctx=A)
        assert [o["name"] for o in second.output["orders"]] == ["#1003", "#1002"]
        exc = await fails(other.call(tool, args, credentials=SHOP_A, ctx=A))
        assert exc.code == INVALID_ARGUMENTS
    finally:
        for runtime in runtimes:
            await runtime.aclose()
