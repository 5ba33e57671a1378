"""Entity search (`fastn_search_entities`) fanned out over real connector stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import pytest

from generator.runtime import catalog as c
from generator.runtime.errors import INVALID_ARGUMENTS, GatewayError
from generator.runtime.executor import CallContext, ConnectorExecutor
from tests.runtime.upstreams import SHOP_A, SLACK_A, Fault, StandIns, hubspot_creds

A = CallContext(tenant_id="tenant-a", user_id="user-a1")


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[StandIns]:
    with StandIns() as servers:
        yield servers


@pytest.fixture
def ups(stand_ins: StandIns) -> StandIns:
    stand_ins.reset()
    return stand_ins


@pytest.fixture
async def executor(gateway: c.GatewaySpec, ups: StandIns) -> AsyncIterator[ConnectorExecutor]:
    ex = ConnectorExecutor(
        gateway, base_urls=ups.base_urls(), token_urls=ups.token_urls(), sleep=_no_sleep
    )
    yield ex
    await ex.aclose()


def check_schema(gateway: c.GatewaySpec, result: dict[str, Any]) -> None:
    schema = dict(gateway.tools["fastn_search_entities"].output_schema)
    jsonschema.Draft202012Validator(schema).validate(result)


async def test_contacts_are_found_across_apps_with_their_source(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    creds = ups.credentials("A")
    result = await executor.search_entities(
        entity_type="contact", query="ada", limit=20, connectors=creds, ctx=A
    )
    check_schema(gateway, result)
    # Slack and GitHub hold no contacts: they are not asked and not listed.
    assert result["sources"] == [
        {"connector": "hubspot", "status": "ok", "count": 1, "error": None},
        {"connector": "shopify", "status": "ok", "count": 1, "error": None},
    ]
    assert ups.slack.requests() == [] and ups.github.requests() == []
    by_source = {e["connector"]: e for e in result["entities"]}
    assert by_source["hubspot"] == {
        "type": "contact",
        "connector": "hubspot",
        "id": "100",
        "fields": {
            "email": "ada@portalA.example",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": None,
            "company": "Analytical",
        },
    }
    assert by_source["shopify"] == {
        "type": "contact",
        "connector": "shopify",
        "id": "1000",  # Shopify's integer id, as a string
        "fields": {
            "email": "ada@acme.example",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": None,
        },
    }
    # Each connector was queried server-side with the tenant's own credentials.
    (shop_req,) = ups.shopify.requests("GET", "/customers/search.json")
    assert shop_req.args == {"query": "ada", "limit": "20"}
    assert shop_req.headers["x-shopify-access-token"] == SHOP_A["access_token"]
    (hs_req,) = ups.hubspot.requests("POST", "/search")
    assert hs_req.json()["query"] == "ada" and hs_req.json()["limit"] == 20
    assert hs_req.headers["authorization"] == "Bearer " + creds["hubspot"]["access_token"]


async def test_without_a_server_side_query_records_are_filtered_locally(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    result = await executor.search_entities(
        entity_type="channel", query="ENGIN", limit=10, connectors={"slack": SLACK_A}, ctx=A
    )
    check_schema(gateway, result)
    assert [e["fields"]["name"] for e in result["entities"]] == ["engineering"]
    assert result["entities"][0]["id"] == "CTA002"
    assert result["entities"][0]["fields"]["topic"] == "Topic of engineering for TA"
    # The mapping's own arguments were sent (limit 1000), not the search limit.
    assert ups.slack.requests()[0].args["limit"] == "1000"

    orders = await executor.search_entities(
        entity_type="order", query="#1003", limit=10, connectors={"shopify": SHOP_A}, ctx=A
    )
    assert [(e["id"], e["fields"]["number"]) for e in orders["entities"]] == [("10002", "#1003")]
    # Mapped numbers become strings where the entity type says string.
    assert orders["entities"][0]["fields"]["total"] == "21.90"
    # 250 is the mapping's limit and the capability's maximum; it is sent unchanged.
    assert ups.shopify.requests()[-1].args == {"status": "any", "limit": "250"}


async def test_a_failing_or_slow_connector_degrades_the_answer(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    creds = ups.credentials("A")
    creds["hubspot"] = hubspot_creds("hs-expired", "hs-refresh-revoked")  # refresh will fail
    ups.shopify.fail_next("GET", "/customers/search.json", Fault(None, delay=2.0))
    result = await executor.search_entities(
        entity_type="contact",
        query="grace",
        limit=5,
        connectors=creds,
        ctx=A,
        per_connector_timeout=0.3,
    )
    check_schema(gateway, result)
    assert result["entities"] == []
    assert result["sources"][0]["connector"] == "hubspot"
    assert result["sources"][0]["status"] == "error"
    assert result["sources"][0]["error"].startswith("upstream_auth_failed: ")
    assert result["sources"][1] == {
        "connector": "shopify",
        "status": "timeout",
        "count": 0,
        "error": "No answer within 0.3 s.",
    }
    assert "hs-refresh-revoked" not in str(result)

    # A healthy connector still answers beside a failing one.
    ups.shopify.fail_next("GET", "/customers/search.json", Fault(500, {"errors": "boom"}))
    creds = ups.credentials("A")
    mixed = await executor.search_entities(
        entity_type="contact", query="grace", limit=5, connectors=creds, ctx=A
    )
    check_schema(gateway, mixed)
    assert [(s["connector"], s["status"], s["count"]) for s in mixed["sources"]] == [
        ("hubspot", "ok", 1),
        ("shopify", "ok", 1),
    ]  # the 500 was retried (search is idempotent) and then answered


async def test_limit_interleaves_connectors(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    creds = ups.credentials("A")
    result = await executor.search_entities(
        entity_type="contact", query="example", limit=5, connectors=creds, ctx=A
    )
    check_schema(gateway, result)
    assert [e["connector"] for e in result["entities"]] == [
        "hubspot",
        "shopify",
        "hubspot",
        "shopify",
        "hubspot",
    ]
    counts = {s["connector"]: s["count"] for s in result["sources"]}
    assert counts == {"hubspot": 3, "shopify": 2}


async def test_tickets_from_github_use_the_tenants_token(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    creds_b = ups.credentials("B")
    result = await executor.search_entities(
        entity_type="ticket", query="module 2", limit=10, connectors=creds_b, ctx=A
    )
    check_schema(gateway, result)
    assert [e["fields"]["url"] for e in result["entities"]] == [
        "https://github.com/globex/core/issues/3"
    ]
    assert result["entities"][0]["fields"]["number"] == 3  # ticket.number stays an integer
    (sent,) = ups.github.requests()
    assert sent.headers["authorization"] == "Bearer " + creds_b["github"]["token"]


async def test_unknown_entity_types_and_connectors(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    with pytest.raises(GatewayError) as info:
        await executor.search_entities(
            entity_type="invoice", query="x", limit=5, connectors=ups.credentials("A"), ctx=A
        )
    assert info.value.code == INVALID_ARGUMENTS
    assert "contact" in info.value.message

    empty = await executor.search_entities(
        entity_type="contact", query="x", limit=5, connectors={"not_installed": {}}, ctx=A
    )
    assert empty == {"entities": [], "sources": []}


async def test_a_search_runs_only_capabilities_the_caller_may_run(
    executor: ConnectorExecutor, gateway: c.GatewaySpec, ups: StandIns
) -> None:
    """Defence in depth under the compiler's GEN225: whatever the catalog maps, a capability
    the caller could not call itself is never run for it by a search."""
    creds = ups.credentials("A")
    result = await executor.search_entities(
        entity_type="contact",
        query="ada",
        limit=20,
        connectors=creds,
        ctx=A,
        may_run=lambda tool: tool.connector != "shopify",
    )
    check_schema(gateway, result)
    assert [s["connector"] for s in result["sources"]] == ["hubspot"]
    assert ups.shopify.requests() == []
    assert [e["connector"] for e in result["entities"]] == ["hubspot"]
