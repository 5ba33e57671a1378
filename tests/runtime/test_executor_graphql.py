"""A GraphQL connector added in YAML only (tests/data/connectors/shopify_admin.yaml, modelled on
Shopify's GraphQL Admin API), run by the executor against a stand-in on 127.0.0.1.

The stand-in answers only the manifest's documents, byte for byte, and reads every argument from
the variables, as a GraphQL server does. It reports failures the GraphQL way, HTTP 200 with an
`errors` list (`THROTTLED` when over the rate limit), and a bad token as HTTP 401.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml

from generator.runtime import catalog as c
from generator.runtime.errors import RATE_LIMITED, UPSTREAM_AUTH_FAILED, UPSTREAM_ERROR
from generator.runtime.executor import (
    ConnectorExecutor,
)
from tests.runtime.support import ROOT, Sleeps, call, catalog_with, fails
from tests.runtime.upstreams import Received, Reply, Upstream

MANIFEST = ROOT / "tests" / "data" / "connectors" / "shopify_admin.yaml"
ACME = {"shop": "acme", "access_token": "shpat_admin_acme_secret_1"}
ENDPOINT = "/shopify-admin/acme/admin/api/2024-10/graphql.json"
OPERATION = re.compile(r"\s*(query|mutation)\s+(\w+)")


def _documents() -> dict[str, str]:
    """Operation name -> the document the manifest declares for it."""
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    docs = [cap["http"]["graphql"]["query"] for cap in manifest["capabilities"]]
    return {OPERATION.match(d)[2]: d for d in docs}  # type: ignore[index]


def _order(i: int) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/Order/{1001 + i}",
        "name": f"#{1001 + i}",
        "totalPriceSet": {"shopMoney": {"amount": f"{20 + i}.50", "currencyCode": "EUR"}},
        "financial_status": "paid" if i % 2 == 0 else "pending",
    }


class ShopifyGraphQL(Upstream):
    """Shopify's GraphQL Admin API for the shop `acme`: `ListOrders` (newest first, pages of
    `$first` after the cursor `$after`, `$query` in its search syntax, `financial_status:` only)
    and `AddOrderTags` (userErrors for an unknown order). `throttle` answers that many requests
    with THROTTLED first."""

    DATA = ("orders", "tags")

    def __init__(self) -> None:
        super().__init__()
        self.documents = _documents()
        self.orders = [_order(i) for i in range(7)]
        self.tags: dict[str, list[str]] = {}
        self.throttle = 0
        self.snapshot()

    def reset(self) -> None:
        super().reset()
        self.throttle = 0

    def handle(self, req: Received) -> Reply:
        if req.method != "POST" or req.path != ENDPOINT:
            return Reply(404, {"errors": "Not Found"})
        if req.headers.get("x-shopify-access-token") != ACME["access_token"]:
            return Reply(401, {"errors": "[API] Invalid API key or access token"})
        if not req.headers.get("content-type", "").startswith("application/json"):
            return Reply(415, {"errors": "Content-Type must be application/json"})
        body = req.json()
        if set(body) != {"query", "variables"}:
            return error(f"unexpected request keys: {sorted(body)}")
        op = OPERATION.match(body["query"])
        if op is None or self.documents.get(op[2]) != body["query"]:
            return error("not one of the connector's documents")
        if self.throttle:
            self.throttle -= 1
            return Reply(
                200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}
            )
        variables: dict[str, Any] = body["variables"]
        if op[2] == "ListOrders":
            return self._list_orders(variables)
        return self._add_tags(variables)

    def _list_orders(self, v: dict[str, Any]) -> Reply:
        first = v.get("first")
        if not isinstance(first, int) or isinstance(first, bool):
            return error(f"Variable $first of type Int! was provided invalid value {first!r}")
        rows = list(reversed(self.orders))
        search = v.get("query")
        if search is not None:
            field, _, value = search.partition(":")
            if field != "financial_status":
                return error(f"Invalid search field for orders: {field}", data=True)
            rows = [r for r in rows if r["financial_status"] == value]
        start = int(v["after"].removeprefix("cursor:")) if v.get("after") is not None else 0
        page = rows[start : start + first]
        end = start + len(page)
        return Reply(
            200,
            {
                "data": {
                    "orders": {
                        "nodes": [{k: r[k] for k in ("id", "name", "totalPriceSet")} for r in page],
                        "pageInfo": {
                            "hasNextPage": end < len(rows),
                            "endCursor": f"cursor:{end}" if page else None,
                        },
                    }
                },
                "extensions": {"cost": {"requestedQueryCost": 12}},
            },
        )

    def _add_tags(self, v: dict[str, Any]) -> Reply:
        if not any(o["id"] == v["id"] for o in self.orders):
            result: dict[str, Any] = {
                "node": None,
                "userErrors": [{"field": ["id"], "message": "Order does not exist"}],
            }
        else:
            have = self.tags.setdefault(v["id"], [])
            have.extend(t for t in v["tags"] if t not in have)
            result = {"node": {"id": v["id"]}, "userErrors": []}
        return Reply(200, {"data": {"tagsAdd": result}})


def error(message: str, *, data: bool = False) -> Reply:
    """A GraphQL failure: HTTP 200, an `errors` list (no code), `data` null when asked."""
    body: dict[str, Any] = {
        "errors": [{"message": message, "locations": [{"line": 2, "column": 3}]}]
    }
    if data:
        body["data"] = None
    return Reply(200, body)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> c.GatewaySpec:
    return catalog_with(tmp_path_factory.mktemp("graphql"), MANIFEST)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ShopifyGraphQL]:
    with ShopifyGraphQL() as server:
        yield server


@pytest.fixture
async def executor(
    catalog: c.GatewaySpec, upstream: ShopifyGraphQL, sleeps: Sleeps
) -> AsyncIterator[ConnectorExecutor]:
    upstream.reset()
    base = {"shopify_admin": upstream.url + "/shopify-admin/{shop}/admin/api/2024-10"}
    ex = ConnectorExecutor(catalog, base_urls=base, sleep=sleeps)
    yield ex
    await ex.aclose()


LIST = "shopify_admin_list_orders"
TAG = "shopify_admin_add_order_tags"


async def test_arguments_travel_as_variables_and_pages_follow_end_cursor(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ShopifyGraphQL
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        out = (await call(executor, catalog, LIST, ACME, **args)).output
        seen += [o["name"] for o in out["orders"]]
        cursor = out["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"#{n}" for n in range(1007, 1000, -1)]  # all seven, newest first, once
    sent = [r.json() for r in upstream.requests("POST", "/graphql.json")]
    assert [r["variables"] for r in sent] == [  # an absent argument is an absent variable
        {"first": 3},
        {"first": 3, "after": "cursor:3"},
        {"first": 3, "after": "cursor:6"},
    ]
    assert {r["query"] for r in sent} == {upstream.documents["ListOrders"]}


async def test_search_text_cannot_change_the_document(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ShopifyGraphQL
) -> None:
    paid = await call(executor, catalog, LIST, ACME, search="financial_status:paid")
    assert [o["name"] for o in paid.output["orders"]] == ["#1007", "#1005", "#1003", "#1001"]
    hostile = 'x") { id } } mutation { tagsAdd(id: "gid://shopify/Order/1001", tags: ["pwned"]) {'
    exc = await fails(executor, catalog, LIST, ACME, search=hostile)
    # The stand-in accepted the document (it is the manifest's) and refused the search text,
    # which arrived as one variable; nothing was tagged.
    assert exc.code == UPSTREAM_ERROR and exc.status == 200
    assert exc.message == "Shopify Admin reported an error."
    field = hostile.partition(":")[0]
    assert exc.details["upstream_error"] == f"Invalid search field for orders: {field}"
    assert upstream.tags == {}
    assert upstream.requests()[-1].json()["variables"] == {"first": 10, "query": hostile}


async def test_throttled_is_retried_then_reported_as_rate_limited(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ShopifyGraphQL, sleeps: Sleeps
) -> None:
    upstream.throttle = 1
    out = await call(executor, catalog, LIST, ACME, limit=2)
    assert len(out.output["orders"]) == 2 and out.attempts == 2 and len(sleeps.calls) == 1

    upstream.throttle = 100
    exc = await fails(executor, catalog, LIST, ACME, limit=2)
    assert exc.code == RATE_LIMITED and exc.retryable is True
    assert exc.attempts == catalog.connectors["shopify_admin"].retries + 1
    assert exc.details["upstream_error"] == "THROTTLED"


async def test_a_refused_token_is_an_auth_failure(
    executor: ConnectorExecutor, catalog: c.GatewaySpec
) -> None:
    exc = await fails(executor, catalog, LIST, {**ACME, "access_token": "shpat_revoked"})
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.status == 401


async def test_a_mutation_and_its_user_errors(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ShopifyGraphQL
) -> None:
    order = "gid://shopify/Order/1003"
    for _ in range(2):  # tagsAdd is idempotent: the same tags twice are kept once
        out = await call(executor, catalog, TAG, ACME, order_id=order, tags=["vip", "gift"])
        assert out.output == {"order_id": order, "user_errors": []}
    assert upstream.tags == {order: ["vip", "gift"]}
    sent = upstream.requests()[-1].json()
    assert sent == {
        "query": upstream.documents["AddOrderTags"],
        "variables": {"id": order, "tags": ["vip", "gift"]},
    }
    # Shopify's userErrors are the mutation's answer, not a failure of the call: the model
    # reads them in the result.
    missing = await call(
        executor, catalog, TAG, ACME, order_id="gid://shopify/Order/9", tags=["vip"]
    )
    assert missing.output == {  # `node` is null: the order_id it would give is absent
        "user_errors": [{"field": ["id"], "message": "Order does not exist"}]
    }


def test_the_catalog_carries_the_documents_as_written(catalog: c.GatewaySpec) -> None:
    http = catalog.tools[LIST].http
    assert http is not None and http.graphql == _documents()["ListOrders"]
    assert catalog.connectors["shopify_admin"].errors.rate_limit_errors == ("THROTTLED",)
