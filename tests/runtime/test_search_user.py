"""`fastn_search_entities` acts as the session's user, as a direct call of the capability does.

The catalog adds tests/data/connectors/crm_owned.yaml, whose contact search binds
`owner: session.user`; a real HTTP stand-in on 127.0.0.1 answers with the contacts of the
owner it is sent. Driven through the real SDK client over a real SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from generator.runtime import catalog as c
from generator.runtime.crypto import CredentialCipher
from generator.runtime.executor import ConnectorExecutor
from generator.runtime.server import GatewayRuntime
from generator.runtime.store import Store, make_engine
from tests.runtime.support import ROOT, UvicornThread, catalog_with

MANIFEST = ROOT / "tests" / "data" / "connectors" / "crm_owned.yaml"
SEARCH = {"entity_type": "contact", "query": "a"}


class CrmStandIn:
    """GET /contacts?q=&owner=: the owner's one contact; every request's owner is logged."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.owners: list[str | None] = []

        async def contacts(request: Request) -> JSONResponse:
            if request.headers.get("authorization") != "Bearer crm-token":
                return JSONResponse({"message": "bad token"}, status_code=401)
            owner = request.query_params.get("owner")
            self.owners.append(owner)
            return JSONResponse({"results": [{"id": f"c-{owner}", "email": f"{owner}@x.test"}]})

        self.server = UvicornThread(Starlette(routes=[Route("/contacts", contacts)]))


@dataclass
class Crm:
    runtime: GatewayRuntime
    upstream: CrmStandIn
    bound: str  # bound to the registered user "ash"
    unbound: str  # read + write, no user
    host: str  # a host application key: names its user per session


@pytest.fixture(scope="module")
def crm_gateway(tmp_path_factory: pytest.TempPathFactory) -> c.GatewaySpec:
    return catalog_with(tmp_path_factory.mktemp("crm"), MANIFEST)


@pytest.fixture(scope="module")
def crm_upstream() -> Iterator[CrmStandIn]:
    fake = CrmStandIn()
    with fake.server:
        yield fake


@pytest.fixture
async def crm(
    crm_gateway: c.GatewaySpec, crm_upstream: CrmStandIn, cipher: CredentialCipher, tmp_path: Path
) -> AsyncIterator[Crm]:
    store = Store(make_engine(str(tmp_path / "gateway.db")), crm_gateway, cipher)
    store.migrate()
    tenant = store.create_tenant("acme")
    store.register_user(tenant.id, "ash")
    store.connect(tenant.id, "crm_owned", {"access_token": "crm-token"})
    executor = ConnectorExecutor(
        crm_gateway, base_urls={"crm_owned": crm_upstream.server.url}, backoff_base=0.01
    )
    runtime = GatewayRuntime(crm_gateway, store, executor=executor, recorder_interval=0.05)
    yield Crm(
        runtime=runtime,
        upstream=crm_upstream,
        bound=store.issue_key(tenant.id, user="ash").token,
        unbound=store.issue_key(tenant.id).token,
        host=store.issue_key(tenant.id, host_app=True).token,
    )
    await runtime.aclose()
    store.dispose()


async def _direct_and_search(server: Any) -> tuple[Any, Any]:
    async with Client(server) as client:
        direct = await client.call_tool("crm_owned_search_contacts", {"query": "a"})
        search = await client.call_tool("fastn_search_entities", SEARCH)
    assert not search.is_error, search.content
    return direct, search.structured_content


@pytest.mark.parametrize("who", ["bound", "host"])
async def test_search_sends_the_user_a_direct_call_sends(crm: Crm, who: str) -> None:
    """A key bound to ash, and a host key naming ash: the search reaches the stand-in as ash,
    as the direct call does, and finds ash's contact."""
    server = (
        crm.runtime.build_server(api_key=crm.bound)
        if who == "bound"
        else crm.runtime.build_server(api_key=crm.host, asserted_user="ash")
    )
    sent = len(crm.upstream.owners)
    direct, search = await _direct_and_search(server)
    assert not direct.is_error, direct.content
    assert direct.structured_content["results"][0]["id"] == "c-ash"
    assert crm.upstream.owners[sent:] == ["ash", "ash"]
    assert [(e["connector"], e["id"]) for e in search["entities"]] == [("crm_owned", "c-ash")]
    assert search["sources"] == [
        {"connector": "crm_owned", "status": "ok", "count": 1, "error": None}
    ]


@pytest.mark.parametrize(
    ("who", "named"),
    [("unbound", None), ("host", None), ("host", "zed"), ("unbound", "ash")],
    ids=["no-user", "host-names-none", "not-registered", "may-not-name"],
)
async def test_search_without_the_user_fails_that_source_as_a_direct_call_fails(
    crm: Crm, who: str, named: str | None
) -> None:
    """No user (a key bound to none, a host key naming none), a user not registered, a key
    that may not name one: the source fails with the direct call's code and message, and
    nothing is sent upstream."""
    key = crm.bound if who == "bound" else crm.unbound if who == "unbound" else crm.host
    sent = len(crm.upstream.owners)
    direct, search = await _direct_and_search(
        crm.runtime.build_server(api_key=key, asserted_user=named)
    )
    assert direct.is_error
    err = json.loads(direct.content[0].text)["error"]
    assert err["code"] == "forbidden"
    assert search["entities"] == []
    assert search["sources"] == [
        {
            "connector": "crm_owned",
            "status": "error",
            "count": 0,
            "error": f"{err['code']}: {err['message']}",
        }
    ]
    assert crm.upstream.owners[sent:] == []


async def test_over_http_the_search_acts_for_the_user_the_header_names(crm: Crm) -> None:
    """Over streamable HTTP a host key names its user with X-Gateway-User: the search acts for
    that user, and one not registered fails the source with the direct call's error, which
    names the header and POST /register."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from generator.runtime.app import build_http_app

    async def over_http(base: str, user: str) -> tuple[Any, Any]:
        headers = {"Authorization": f"Bearer {crm.host}", "X-Gateway-User": user}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            direct = await client.call_tool("crm_owned_search_contacts", {"query": "a"})
            search = await client.call_tool("fastn_search_entities", SEARCH)
        return direct, search.structured_content

    with UvicornThread(build_http_app(crm.runtime), crm.runtime) as srv:
        sent = len(crm.upstream.owners)
        _, found = await over_http(srv.url, "ash")
        assert crm.upstream.owners[sent:] == ["ash", "ash"]
        assert [e["id"] for e in found["entities"]] == ["c-ash"]
        direct, refused = await over_http(srv.url, "zed")
    err = json.loads(direct.content[0].text)["error"]
    assert "X-Gateway-User header" in err["message"] and "POST /register" in err["message"]
    assert refused["sources"][0]["error"] == f"forbidden: {err['message']}"
