"""Connectors added in YAML only (tests/data/connectors), modelled on Stripe, Notion, Jira,
Spotify, Pipedrive and others, run by the executor against real HTTP stand-ins on 127.0.0.1 that
check what they receive.

They cover what the four default connectors do not: a cursor that is the last record's id with
`has_more`, a cursor in a JSON body, offset pagination with a declared page size and a total
(at the top level, or beside records one level down) or a has-more flag, from upstreams that
cap the page size below what was asked, form bodies with nested objects, optional nested
objects, 204 No Content, error messages given as a list, entity fields converted to the entity
type's field types, and a write made safe to retry by an idempotency key (Stripe's refunds).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import Response

from generator.runtime import catalog as c
from generator.runtime.errors import INVALID_ARGUMENTS, UPSTREAM_ERROR, UPSTREAM_TIMEOUT
from generator.runtime.executor import (
    ConnectorCallError,
    ConnectorExecutor,
)
from tests.runtime.support import CTX, ROOT, Sleeps, call, catalog_with
from tests.runtime.upstreams import Fault, HangUp, Received, Reply, Upstream

STRIPE = {"secret_key": "sk_test_4eC39HqLyjWDarjtT1zdp7dc"}
SQUARE = {"access_token": "EAAAl-square-sandbox-token-1234"}
NOTION = {"token": "secret_notion_integration_token_1"}
JIRA = {"site": "acme", "email": "ops@acme.test", "api_token": "jira-api-token-xyz-123"}
JIRA_BASIC = base64.b64encode(b"ops@acme.test:jira-api-token-xyz-123").decode()
SPOTIFY = {"access_token": "spotify-access-token-123"}
PIPEDRIVE = {"company": "acme", "access_token": "pipedrive-access-token-123"}

CUSTOMERS = [
    {"id": f"cus_{i:04d}", "email": f"c{i}@shop.test", "name": f"Customer {i}"} for i in range(7)
]
PAGES = [{"id": f"pg{i}", "object": "page", "url": f"https://notion.test/pg{i}"} for i in range(5)]
ISSUES = [
    {
        "id": str(10000 + i),
        "key": f"OPS-{i + 1}",
        "fields": {"summary": f"Printer {i} jams", "status": {"name": "Open"}},
    }
    for i in range(7)
] + [
    {
        "id": "10100",
        "key": "OPS-100",
        "fields": {"summary": 'Tray says "load A4" \\ then OR stops', "status": {"name": "Open"}},
    }
]
TRACKS = [
    {"id": f"trk{i}", "name": f"Blue Song {i}", "artists": [{"name": "The Blues"}]}
    for i in range(7)
]
PERSONS = [
    {"id": i + 1, "name": f"Person {i + 1}", "primary_email": f"p{i + 1}@acme.test"}
    for i in range(5)
]
PEOPLE = [  # directory users and CRM contacts: names a query language must quote
    {"id": f"u{i}", "name": name, "mail": f"p{i}@acme.test"}
    for i, name in enumerate(
        ["O'Brien", "O'Brien-Smith", "O'Brien \\ Jr", "Obi", "Müller", "' OR Name != '"]
    )
]
# OData (Microsoft Graph): 'text' with '' for a quote. SOQL: 'text' with \' and \\ escaped.
ODATA_STARTSWITH = re.compile(r"startswith\(displayName,'((?:[^']|'')*)'\)")
SOQL_BY_LAST_NAME = re.compile(
    r"SELECT Id, Name, Email FROM Contact WHERE LastName = '((?:[^'\\]|\\.)*)'"
)
JQL_TEXT_SEARCH = re.compile(r'text ~ "((?:[^"\\]|\\.)*)" ORDER BY created DESC')


def rack_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form or query pairs as Rack (Rails) and Stripe read them: `a[b]=1` nests, `a[]=1`
    appends to a list, a key repeated without `[]` keeps its last value, and an object whose
    keys are all indexes (`a[0][b]=1`) is a list in index order. A key used both ways is a
    ValueError (Rack's ParameterTypeError)."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        head = name.partition("[")[0]
        keys = [head, *re.findall(r"\[([^\]]*)\]", name[len(head) :])]
        appends = len(keys) > 1 and keys[-1] == ""
        if appends:
            keys.pop()
        node = params
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(name)
        if appends:
            items = node.setdefault(keys[-1], [])
            if not isinstance(items, list):
                raise ValueError(name)
            items.append(value)
        elif isinstance(node.get(keys[-1]), dict | list):
            raise ValueError(name)
        else:
            node[keys[-1]] = value

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            if value and all(key.isdigit() for key in value):
                return [lists(value[key]) for key in sorted(value, key=int)]
            return {key: lists(item) for key, item in value.items()}
        return value

    return lists(params)


class ApiStandIns(Upstream):
    """Stripe under /stripe/v1, Notion under /notion/v1, Jira under /jira/<site>/rest/api/3,
    Square under /square/v2, Spotify under /spotify/v1, Pipedrive under /pipedrive/<company>/v1.

    `page_cap`, when set, is the most records a Jira or Pipedrive page holds whatever the
    request asks for, as those APIs cap the page size (Jira Cloud's search may return fewer
    issues than maxResults, Pipedrive at most 500 items).

    Stripe creates a refund once per `Idempotency-Key`: a request repeating a key gets the
    first one's refund back (with Stripe's `Idempotent-Replayed: true`), and `replayed` counts
    those. A refund of the charge `ch_in_flight` gets Stripe's 409 for a key whose first
    request is still running, whose message quotes the key.

    Square takes the key in the JSON body (`idempotency_key`, required) and also applies a
    payment once per key; a key repeated with other parameters is its 400
    IDEMPOTENCY_KEY_REUSED.
    """

    DATA = ("refunds", "keys", "replayed", "payments", "payment_keys", "page_cap")

    def __init__(self) -> None:
        super().__init__()
        self.page_cap: int | None = None
        self.refunds: list[dict[str, Any]] = []
        self.keys: dict[str, dict[str, Any]] = {}  # idempotency key -> its refund
        self.replayed = 0
        self.payments: list[dict[str, Any]] = []
        self.payment_keys: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # body, payment
        self.in_flight = 0  # requests received and not yet answered
        self.snapshot()

    async def _endpoint(self, request: Request) -> Response:
        self.in_flight += 1
        try:
            return await super()._endpoint(request)
        finally:
            self.in_flight -= 1

    def handle(self, req: Received) -> Reply:
        if req.path.startswith("/stripe/v1/"):
            return self._stripe(req, req.path.removeprefix("/stripe/v1"))
        if req.path.startswith("/notion/v1/"):
            return self._notion(req, req.path.removeprefix("/notion/v1"))
        if req.path.startswith("/jira/acme/rest/api/3/"):
            return self._jira(req, req.path.removeprefix("/jira/acme/rest/api/3"))
        if req.path.startswith("/square/v2/"):
            return self._square(req, req.path.removeprefix("/square/v2"))
        if req.path.startswith("/spotify/v1/"):
            return self._spotify(req, req.path.removeprefix("/spotify/v1"))
        if req.path.startswith("/pipedrive/acme/v1/"):
            return self._pipedrive(req, req.path.removeprefix("/pipedrive/acme/v1"))
        if req.path.startswith("/msgraph/v1.0/"):
            return self._graph(req, req.path.removeprefix("/msgraph/v1.0"))
        if req.path.startswith("/salesforce/acme/services/data/v60.0/"):
            return self._salesforce(req, req.path.removeprefix("/salesforce/acme"))
        return Reply(404, {"error": "not_found"})

    def _graph(self, req: Received, path: str) -> Reply:
        """/users?$filter=startswith(displayName,'...')&$top=N, the next page's absolute URL
        in @odata.nextLink (with a $skiptoken), as Graph pages."""
        parsed = ODATA_STARTSWITH.fullmatch(req.args.get("$filter", ""))
        if path != "/users" or parsed is None:
            return Reply(400, {"error": {"code": "BadRequest", "message": "Invalid filter clause"}})
        prefix = parsed.group(1).replace("''", "'")
        found = [p for p in PEOPLE if p["name"].startswith(prefix)]
        skip, top = int(req.args.get("$skiptoken", "0")), int(req.args.get("$top", "100"))
        page = [{"id": p["id"], "displayName": p["name"], "mail": p["mail"]} for p in found]
        body: dict[str, Any] = {"value": page[skip : skip + top]}
        if skip + top < len(found):
            query = urlencode({**req.args, "$skiptoken": str(skip + top)})
            body["@odata.nextLink"] = f"{self.url}/msgraph/v1.0/users?{query}"
        return Reply(200, body)

    def _salesforce(self, req: Received, path: str) -> Reply:
        """/services/data/v60.0/query?q=SOQL, one record a page, the rest behind
        nextRecordsUrl: a path on the instance, as Salesforce gives it."""
        if path.startswith("/services/data/v60.0/query/01g-"):
            last_name, start = path.removeprefix("/services/data/v60.0/query/01g-").split("-")
            last_name = bytes.fromhex(last_name).decode()
        elif path == "/services/data/v60.0/query":
            parsed = SOQL_BY_LAST_NAME.fullmatch(req.args.get("q", ""))
            if parsed is None:
                message = "MALFORMED_QUERY: unexpected token"
                return Reply(400, [{"message": message, "errorCode": "MALFORMED_QUERY"}])
            last_name, start = re.sub(r"\\(.)", r"\1", parsed.group(1)), "0"
        else:
            return Reply(404, [{"message": "The requested resource does not exist"}])
        found = [
            p for p in PEOPLE if p["name"] == last_name or p["name"].startswith(last_name + "-")
        ]
        offset = int(start)
        records = [{"Id": p["id"], "Name": p["name"], "Email": p["mail"]} for p in found]
        body: dict[str, Any] = {
            "totalSize": len(found),
            "done": offset + 1 >= len(found),
            "records": records[offset : offset + 1],
        }
        if not body["done"]:
            locator = f"01g-{last_name.encode().hex()}-{offset + 1}"
            body["nextRecordsUrl"] = f"/salesforce/acme/services/data/v60.0/query/{locator}"
        return Reply(200, body)

    def _capped(self, size: int) -> int:
        return size if self.page_cap is None else min(size, self.page_cap)

    @staticmethod
    def _spotify(req: Received, path: str) -> Reply:
        """/search?q=...&type=track&limit=&offset=: the page and the total inside `tracks`."""
        if req.headers.get("authorization") != "Bearer " + SPOTIFY["access_token"]:
            return Reply(401, {"error": {"status": 401, "message": "Invalid access token"}})
        if path != "/search" or req.args.get("type") != "track":
            return Reply(400, {"error": {"status": 400, "message": "Bad search type field"}})
        term = req.args.get("q", "").lower()
        found = [t for t in TRACKS if term in t["name"].lower()]
        offset, limit = int(req.args.get("offset", "0")), int(req.args.get("limit", "20"))
        tracks = {"items": found[offset : offset + limit], "offset": offset, "limit": limit}
        return Reply(200, {"tracks": {**tracks, "total": len(found)}})

    def _pipedrive(self, req: Received, path: str) -> Reply:
        """/persons?start=&limit=: says whether more items follow, never how many."""
        if req.headers.get("authorization") != "Bearer " + PIPEDRIVE["access_token"]:
            return Reply(401, {"success": False, "error": "unauthorized access"})
        if path != "/persons":
            return Reply(404, {"success": False, "error": "Unknown method ."})
        start = int(req.args.get("start", "0"))
        limit = self._capped(int(req.args.get("limit", "100")))
        more = start + limit < len(PERSONS)
        pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
        return Reply(
            200,
            {
                "success": True,
                "data": PERSONS[start : start + limit],
                "additional_data": {"pagination": pagination},
            },
        )

    def _square(self, req: Received, path: str) -> Reply:
        def error(status: int, code: str, detail: str) -> Reply:
            category = "AUTHENTICATION_ERROR" if status == 401 else "INVALID_REQUEST_ERROR"
            return Reply(
                status, {"errors": [{"category": category, "code": code, "detail": detail}]}
            )

        if req.headers.get("authorization") != "Bearer " + SQUARE["access_token"]:
            return error(401, "UNAUTHORIZED", "This request could not be authorized.")
        if not req.headers.get("square-version"):
            return error(400, "INVALID_VALUE", "Square-Version header missing")
        if req.method != "POST" or path != "/payments":
            return error(404, "NOT_FOUND", "Resource not found.")
        body = req.json()
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not key:
            return error(400, "MISSING_REQUIRED_PARAMETER", "Field must be set: idempotency_key")
        if key in self.payment_keys:
            first, payment = self.payment_keys[key]
            if first != body:
                return error(400, "IDEMPOTENCY_KEY_REUSED", "The idempotency key was reused.")
            self.replayed += 1
            return Reply(200, {"payment": payment})
        payment = {
            "id": f"pay_{len(self.payments) + 1}",
            "status": "COMPLETED",
            "amount_money": body["amount_money"],
            "source_type": "CARD",
        }
        self.payments.append(payment)
        self.payment_keys[key] = (body, payment)
        return Reply(200, {"payment": payment})

    def _stripe(self, req: Received, path: str) -> Reply:
        if req.headers.get("authorization") != "Bearer " + STRIPE["secret_key"]:
            return Reply(401, {"error": {"message": "Invalid API Key provided"}})
        if req.method == "GET" and path == "/customers":
            limit = int(req.args.get("limit", "10"))
            after = req.args.get("starting_after")
            start = 0 if after is None else [c["id"] for c in CUSTOMERS].index(after) + 1
            page = CUSTOMERS[start : start + limit]
            more = start + limit < len(CUSTOMERS)
            return Reply(200, {"object": "list", "data": page, "has_more": more})
        if (req.method, path) in (("POST", "/checkout/sessions"), ("GET", "/invoices/upcoming")):
            return self._stripe_items(req, path)
        if req.method == "POST" and path == "/refunds":
            if req.headers.get("content-type") != "application/x-www-form-urlencoded":
                return Reply(400, {"error": {"message": "Invalid request"}})
            form = req.form()
            if any(value.startswith("{") for value in form.values()):
                return Reply(400, {"error": {"message": "Invalid object"}})
            key = req.headers.get("idempotency-key")
            if form.get("charge") == "ch_in_flight":
                message = (
                    "There is currently another in-progress request using this idempotent key "
                    "(that probably means you submitted twice, and the other request is still "
                    f"going through): {key}. Please try again later."
                )
                return Reply(409, {"error": {"type": "idempotency_error", "message": message}})
            if key is not None and key in self.keys:
                self.replayed += 1
                return Reply(200, self.keys[key], {"idempotent-replayed": "true"})
            refund = {"id": f"re_{len(self.refunds) + 1}", "status": "succeeded", "amount": 500}
            self.refunds.append(refund)
            if key is not None:
                self.keys[key] = refund
            return Reply(200, refund)
        return Reply(404, {"error": {"message": "Unrecognized request URL"}})

    @staticmethod
    def _stripe_items(req: Received, path: str) -> Reply:
        """A Checkout session (form body `line_items[...]`) or an invoice preview (query
        `subscription_details[items][...]`) whose items echo what Stripe read: a list given as
        a repeated key it reads as its last value, which is no array."""
        invalid = Reply(
            400, {"error": {"type": "invalid_request_error", "message": "Invalid array"}}
        )
        sent = parse_qsl(req.body.decode(), keep_blank_values=True) if req.body else req.query
        try:
            params = rack_params(list(sent))
        except ValueError:
            return invalid
        if path == "/checkout/sessions":
            items = params.get("line_items")
        else:
            items = (params.get("subscription_details") or {}).get("items")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return invalid
        lines: list[dict[str, Any]] = []
        for item in items:
            rates = item.get("tax_rates", [])
            if not isinstance(rates, list):
                return invalid
            line: dict[str, Any] = {"price": item.get("price"), "tax_rates": rates}
            if "quantity" in item:
                line["quantity"] = int(item["quantity"])
            lines.append(line)
        if path == "/checkout/sessions":
            return Reply(200, {"id": "cs_test_1", "line_items": {"data": lines}})
        return Reply(200, {"object": "invoice", "lines": {"data": lines}})

    @staticmethod
    def _notion(req: Received, path: str) -> Reply:
        if req.headers.get("notion-version") != "2022-06-28":
            return Reply(400, {"object": "error", "message": "Notion-Version header missing"})
        if req.method == "POST" and path == "/search":
            body = req.json()
            if req.query:
                return Reply(400, {"object": "error", "message": "search takes no query string"})
            kind = (body.get("filter") or {}).get("value", "page")
            if "filter" in body and kind not in ("page", "database"):
                return Reply(400, {"message": "body.filter.value should be page or database"})
            size = body.get("page_size", 100)
            start = 0 if "start_cursor" not in body else int(body["start_cursor"].removeprefix("c"))
            page = PAGES[start : start + size]
            more = start + size < len(PAGES)
            cursor = f"c{start + size}" if more else None
            return Reply(200, {"results": page, "has_more": more, "next_cursor": cursor})
        return Reply(404, {"object": "error", "message": "not found"})

    def _jira(self, req: Received, path: str) -> Reply:
        if req.headers.get("authorization") != "Basic " + JIRA_BASIC:
            return Reply(401, {"errorMessages": ["Unauthorized"], "errors": {}})
        if req.method == "GET" and path == "/search":
            jql = req.args.get("jql", "")
            if "Bogus" in jql:
                messages = ["Field 'Bogus' does not exist.", "The query is invalid."]
                return Reply(400, {"errorMessages": messages, "errors": {}})
            # JQL as Jira parses it: a string literal in double quotes, `\"` and `\\` escaped.
            parsed = JQL_TEXT_SEARCH.fullmatch(jql)
            if parsed is None:
                return Reply(400, {"errorMessages": [f"Error in the JQL Query: {jql}"]})
            term = re.sub(r"\\(.)", r"\1", parsed.group(1)).lower()
            found = [i for i in ISSUES if term in i["fields"]["summary"].lower()]
            start = int(req.args.get("startAt", "0"))
            size = self._capped(int(req.args.get("maxResults", "50")))
            page = found[start : start + size]
            body = {"startAt": start, "maxResults": size, "total": len(found), "issues": page}
            return Reply(200, body)
        if req.method == "PUT" and path.startswith("/issue/"):
            if not req.json().get("fields", {}).get("summary"):
                return Reply(400, {"errorMessages": ["summary is required"], "errors": {}})
            return Reply(204, None)
        return Reply(404, {"errorMessages": ["not found"], "errors": {}})


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> c.GatewaySpec:
    data = sorted((ROOT / "tests" / "data" / "connectors").glob("*.yaml"))
    return catalog_with(tmp_path_factory.mktemp("apis"), *data)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ApiStandIns]:
    server = ApiStandIns()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def executor(
    catalog: c.GatewaySpec, upstream: ApiStandIns
) -> AsyncIterator[ConnectorExecutor]:
    upstream.reset()
    base_urls = {
        "stripe": upstream.url + "/stripe/v1",
        "notion": upstream.url + "/notion/v1",
        "jira": upstream.url + "/jira/{site}/rest/api/3",
        "square": upstream.url + "/square/v2",
        "msgraph": upstream.url + "/msgraph/v1.0",
        "salesforce": upstream.url + "/salesforce/{instance}/services/data/v60.0",
        "spotify": upstream.url + "/spotify/v1",
        "pipedrive": upstream.url + "/pipedrive/{company}/v1",
    }
    ex = ConnectorExecutor(catalog, base_urls=base_urls)
    yield ex
    await ex.aclose()


async def test_stripe_pages_by_the_last_records_id_until_has_more_is_false(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    seen: list[str] = []
    cursors: list[str | None] = []
    cursor = None
    for _ in range(5):
        args = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        result = await call(executor, catalog, "stripe_list_customers", STRIPE, **args)
        seen += [customer["id"] for customer in result.output["customers"]]
        cursor = result.output["next_cursor"]
        cursors.append(cursor)
        if cursor is None:
            break
    assert seen == [customer["id"] for customer in CUSTOMERS]  # every one, once
    assert cursors == ["cus_0002", "cus_0005", None]
    sent = [r.args.get("starting_after") for r in upstream.requests("GET", "/customers")]
    assert sent == [None, "cus_0002", "cus_0005"]


async def test_stripe_form_body_spells_nested_objects_and_lists_with_brackets(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    result = await call(
        executor,
        catalog,
        "stripe_create_refund",
        STRIPE,
        charge="ch_1",
        metadata={"order": "1001", "reason": "damaged"},
        expand=["charge", "payment_intent"],
    )
    assert result.output == {"id": "re_1", "status": "succeeded", "amount": 500}
    (request,) = upstream.requests("POST", "/refunds")
    assert request.body.decode() == (
        "charge=ch_1&metadata%5Border%5D=1001&metadata%5Breason%5D=damaged"
        "&expand%5B%5D=charge&expand%5B%5D=payment_intent"
    )


async def test_a_list_inside_a_form_bodys_list_reaches_stripe_whole(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    """`line_items[0][tax_rates]` repeated is one tax rate to Stripe, Rack and PHP (the last):
    a list inside an object or list is written `[]` after its key."""
    items = [
        {"price": "price_a", "quantity": 2, "tax_rates": ["txr_1", "txr_2"]},
        {"price": "price_b", "tax_rates": ["txr_3"]},
    ]
    result = await call(
        executor,
        catalog,
        "stripe_create_checkout_session",
        STRIPE,
        line_items=items,
        payment_method_types=["card", "link"],
    )
    assert result.output == {"id": "cs_test_1", "line_items": items}
    (request,) = upstream.requests("POST", "/checkout/sessions")
    assert unquote(request.body.decode()) == (
        "mode=payment&line_items[0][price]=price_a&line_items[0][quantity]=2"
        "&line_items[0][tax_rates][]=txr_1&line_items[0][tax_rates][]=txr_2"
        "&line_items[1][price]=price_b&line_items[1][tax_rates][]=txr_3"
        "&payment_method_types[]=card&payment_method_types[]=link"
    )


async def test_a_list_inside_a_query_strings_object_reaches_stripe_whole(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    items = [{"price": "price_a", "tax_rates": ["txr_1", "txr_2"]}]
    result = await call(
        executor, catalog, "stripe_preview_invoice", STRIPE, customer="cus_0001", items=items
    )
    assert result.output == {"lines": items}
    (request,) = upstream.requests("GET", "/invoices/upcoming")
    assert request.query == (
        ("customer", "cus_0001"),
        ("subscription_details[items][0][price]", "price_a"),
        ("subscription_details[items][0][tax_rates][]", "txr_1"),
        ("subscription_details[items][0][tax_rates][]", "txr_2"),
    )


async def test_notion_sends_the_cursor_in_the_json_body_and_never_half_a_filter(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    first = await call(executor, catalog, "notion_search", NOTION, query="Pa", page_size=2)
    second = await call(
        executor,
        catalog,
        "notion_search",
        NOTION,
        query="Pa",
        page_size=2,
        cursor=first.output["next_cursor"],
    )
    third = await call(
        executor,
        catalog,
        "notion_search",
        NOTION,
        page_size=2,
        kind="page",
        cursor=second.output["next_cursor"],
    )
    ids = [r["id"] for out in (first, second, third) for r in out.output["results"]]
    assert ids == [page["id"] for page in PAGES]
    assert third.output["next_cursor"] is None
    bodies = [r.json() for r in upstream.requests("POST", "/search")]
    assert bodies == [
        {"query": "Pa", "page_size": 2},  # no cursor on the first page, no half filter
        {"query": "Pa", "page_size": 2, "start_cursor": "c2"},
        {"filter": {"property": "object", "value": "page"}, "page_size": 2, "start_cursor": "c4"},
    ]
    assert all(not r.query for r in upstream.requests("POST", "/search"))


async def test_jira_offset_pagination_walks_every_issue_once_and_stops_at_the_total(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    keys: list[str] = []
    cursor = None
    for _ in range(6):
        args: dict[str, Any] = {"query": "printer", "max_results": 3}
        if cursor is not None:
            args["cursor"] = cursor
        result = await call(executor, catalog, "jira_search_issues", JIRA, **args)
        keys += [issue["key"] for issue in result.output["issues"]]
        cursor = result.output["next_cursor"]
        if cursor is None:
            break
    assert keys == [f"OPS-{i}" for i in range(1, 8)]
    sent = [r.args.get("startAt") for r in upstream.requests("GET", "/search")]
    assert sent == [None, "3", "6"]  # no extra, empty request after the last page


async def test_a_page_shorter_than_asked_is_not_the_last_while_the_total_says_more_remain(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    """Jira Cloud may return fewer issues than maxResults asks for: the total, not the short
    page, says when the issues end, and each offset counts the issues actually returned."""
    upstream.page_cap = 3
    issues, _ = await pages(executor, catalog, "jira_search_issues", JIRA, query="printer")
    assert [issue["key"] for issue in issues] == [f"OPS-{i}" for i in range(1, 8)]
    sent = [(r.args.get("startAt"), r.args["maxResults"]) for r in upstream.requests("GET")]
    assert sent == [(None, "50"), ("3", "50"), ("6", "50")]


async def test_records_and_total_one_level_down_page_to_the_end(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    """Spotify's search answers {"tracks": {"items": [...], "total": 7}}: the output keeps
    `tracks` whole, and the records counted are its items."""
    names: list[str] = []
    cursor = None
    for _ in range(6):
        args: dict[str, Any] = {"query": "blue", "limit": 2}
        if cursor is not None:
            args["cursor"] = cursor
        result = await call(executor, catalog, "spotify_search_tracks", SPOTIFY, **args)
        names += [track["name"] for track in result.output["tracks"]["items"]]
        cursor = result.output["next_cursor"]
        if cursor is None:
            break
    assert names == [f"Blue Song {i}" for i in range(7)]
    sent = [r.args.get("offset") for r in upstream.requests("GET", "/search")]
    assert sent == [None, "2", "4", "6"]


async def test_a_short_page_is_not_the_last_while_the_body_says_more_items_follow(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    """Pipedrive caps the page size and says whether more items follow: that flag, not a page
    shorter than the limit asked for, ends the paging."""
    upstream.page_cap = 2
    persons, _ = await pages(executor, catalog, "pipedrive_list_persons", PIPEDRIVE)
    assert [p["id"] for p in persons] == [1, 2, 3, 4, 5]
    sent = [(r.args.get("start"), r.args["limit"]) for r in upstream.requests("GET")]
    assert sent == [(None, "100"), ("2", "100"), ("4", "100")]


async def test_quotes_and_backslashes_in_an_argument_stay_inside_the_jql_string(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    # `text ~ {query|double_quoted}`: without the filter this text would end the JQL string
    # at its first quote, and its `OR` would become an operator.
    query = 'says "load A4" \\ then OR'
    result = await call(executor, catalog, "jira_search_issues", JIRA, query=query)
    assert [issue["key"] for issue in result.output["issues"]] == ["OPS-100"]
    (request,) = upstream.requests("GET", "/search")
    assert request.args["jql"] == ('text ~ "says \\"load A4\\" \\\\ then OR" ORDER BY created DESC')


async def test_an_offset_cursor_must_be_an_offset(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    with pytest.raises(ConnectorCallError) as info:
        await call(executor, catalog, "jira_search_issues", JIRA, query="x", cursor="OPS-1")
    assert info.value.code == INVALID_ARGUMENTS
    assert info.value.details == {"argument": "cursor"}
    assert upstream.requests() == []


async def test_a_204_no_content_is_a_success(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    result = await call(
        executor, catalog, "jira_update_summary", JIRA, issue_key="OPS-1", summary="Fixed"
    )
    assert (result.status, result.output) == (204, {})
    (request,) = upstream.requests("PUT", "/issue/OPS-1")
    assert request.json() == {"fields": {"summary": "Fixed"}}


async def test_an_error_message_list_reaches_the_details_as_text(
    executor: ConnectorExecutor, catalog: c.GatewaySpec
) -> None:
    with pytest.raises(ConnectorCallError) as info:
        await call(executor, catalog, "jira_search_issues", JIRA, query="Bogus")
    assert info.value.code == UPSTREAM_ERROR
    assert info.value.details["upstream_error"] == (
        "Field 'Bogus' does not exist.; The query is invalid."
    )


async def test_entity_search_converts_values_to_the_entity_field_types(
    executor: ConnectorExecutor, catalog: c.GatewaySpec
) -> None:
    found = await executor.search_entities(
        query="printer",
        entity_type="ticket",
        connectors={"jira": JIRA},
        limit=2,
        ctx=CTX,
    )
    assert found["entities"] == [
        {
            "type": "ticket",
            "connector": "jira",
            "id": "OPS-1",
            "fields": {"number": 10000, "title": "Printer 0 jams", "state": "Open"},
        },
        {
            "type": "ticket",
            "connector": "jira",
            "id": "OPS-2",
            "fields": {"number": 10001, "title": "Printer 1 jams", "state": "Open"},
        },
    ]


def test_the_connectors_of_this_test_are_valid_yaml_only_connectors() -> None:
    """They are plain connector manifests: nothing but YAML was added for them."""
    names = sorted(p.name for p in (Path(__file__).parents[1] / "data" / "connectors").iterdir())
    assert names == [
        "crm_owned.yaml",
        "github_graphql.yaml",
        "jira.yaml",
        "linear.yaml",
        "msgraph.yaml",
        "notion.yaml",
        "pipedrive.yaml",
        "salesforce.yaml",
        "shopify_admin.yaml",
        "spotify.yaml",
        "square.yaml",
        "stripe.yaml",
    ]


# ------------------------------------------------------------------------- idempotency keys

REFUND = "stripe_create_refund"  # declares idempotency_key: {header: Idempotency-Key}
FAULT_503 = Fault(503, {"error": {"message": "Service unavailable"}})


def one_connector(
    catalog: c.GatewaySpec, name: str, url: str, sleeps: Sleeps | None = None, **connector: Any
) -> ConnectorExecutor:
    """An executor for the connector `name` at `url`, its settings changed by `connector`,
    that records its backoff waits in `sleeps` instead of sleeping."""
    connectors = dict(catalog.connectors)
    connectors[name] = dataclasses.replace(connectors[name], **connector)
    return ConnectorExecutor(
        dataclasses.replace(catalog, connectors=connectors),
        base_urls={name: url},
        sleep=sleeps or Sleeps(),
    )


def stripe_only(
    catalog: c.GatewaySpec, url: str, sleeps: Sleeps | None = None, **connector: Any
) -> ConnectorExecutor:
    return one_connector(catalog, "stripe", url, sleeps, **connector)


@pytest.fixture
async def stripe(upstream: ApiStandIns) -> AsyncIterator[ApiStandIns]:
    """The stand-ins, reset; afterwards, requests the executor gave up on are waited for, so
    that they cannot land in the next test's data."""
    upstream.reset()
    yield upstream
    await until(lambda: upstream.in_flight == 0)


def keys_sent(requests: list[Received]) -> list[str | None]:
    return [r.headers.get("idempotency-key") for r in requests]


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Wait for a stand-in to finish a request the executor gave up on."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the stand-in never finished the request"
        await anyio.sleep(0.02)


def test_the_declaration_reaches_the_runtime_catalog(catalog: c.GatewaySpec) -> None:
    http = catalog.tools[REFUND].http
    assert http is not None and http.idempotency_key == c.IdempotencyKey(header="Idempotency-Key")
    assert "Idempotency-Key" not in json.dumps(catalog.tools[REFUND].input_schema)


async def test_a_keyed_write_is_retried_after_a_503_with_the_same_key(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    stripe.fail_next("POST", "/refunds", FAULT_503)
    sleeps = Sleeps()
    ex = stripe_only(catalog, stripe.url + "/stripe/v1", sleeps)
    try:
        result = await ex.call(
            catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX
        )
    finally:
        await ex.aclose()
    assert result.output["id"] == "re_1" and result.attempts == 2
    first, second = keys_sent(stripe.requests("POST", "/refunds"))
    assert first is not None and first == second
    assert uuid.UUID(first).version == 4  # random, so no caller can guess another's key
    assert len(sleeps.calls) == 1  # one jittered backoff


async def test_each_call_of_a_keyed_write_gets_a_new_key(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    one = await call(executor, catalog, REFUND, STRIPE, charge="ch_1")
    two = await call(executor, catalog, REFUND, STRIPE, charge="ch_1")
    first, second = keys_sent(upstream.requests("POST", "/refunds"))
    assert first and second and first != second
    # Two tool calls are two refunds, as the model asked: the key only joins one call's attempts.
    assert (one.output["id"], two.output["id"]) == ("re_1", "re_2") and upstream.replayed == 0


async def test_only_the_declaration_makes_a_write_retryable(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    tool = catalog.tools[REFUND]
    assert tool.http is not None
    plain = dataclasses.replace(tool, http=dataclasses.replace(tool.http, idempotency_key=None))
    ex = stripe_only(catalog, stripe.url + "/stripe/v1")
    try:
        stripe.fail_next("POST", "/refunds", FAULT_503, FAULT_503, FAULT_503)
        with pytest.raises(ConnectorCallError) as unkeyed:
            await ex.call(plain, {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
        once = stripe.requests("POST", "/refunds")
        stripe.reset()
        stripe.fail_next("POST", "/refunds", FAULT_503, FAULT_503, FAULT_503)
        with pytest.raises(ConnectorCallError) as keyed:
            await ex.call(tool, {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
        thrice = stripe.requests("POST", "/refunds")
    finally:
        await ex.aclose()
    # Without the declaration the write is sent once, with no key.
    assert keys_sent(once) == [None] and unkeyed.value.attempts == 1
    # With it, 1 + retries attempts, one key; every answer was a 503, so nothing is in doubt
    # and the error is retryable where an idempotent call's would be.
    assert len(thrice) == 3 and len(set(keys_sent(thrice))) == 1 and None not in keys_sent(thrice)
    assert keyed.value.attempts == 3 and keyed.value.status == 503
    assert keyed.value.code == UPSTREAM_ERROR and keyed.value.retryable is True
    assert "may have applied" not in keyed.value.message


async def test_a_keyed_write_answered_with_a_5xx_is_repeated_then_left_in_doubt(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    """A 502 may come after Stripe applied the refund: the key makes a repeat safe within the
    call, but a new tool call would carry a new key, so the final error is not retryable."""
    bad_gateway = Fault(502, {"error": {"message": "Bad gateway"}})
    stripe.fail_next("POST", "/refunds", bad_gateway)
    ex = stripe_only(catalog, stripe.url + "/stripe/v1")
    try:
        result = await ex.call(
            catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX
        )
        assert result.output["id"] == "re_1" and result.attempts == 2
        stripe.reset()
        stripe.fail_next("POST", "/refunds", bad_gateway, FAULT_503, FAULT_503)
        with pytest.raises(ConnectorCallError) as failed:
            await ex.call(catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
    finally:
        await ex.aclose()
    assert len(set(keys_sent(stripe.requests("POST", "/refunds")))) == 1
    assert failed.value.code == UPSTREAM_ERROR and failed.value.status == 503
    assert failed.value.attempts == 3 and failed.value.retryable is False
    assert failed.value.message.endswith(
        "It may have applied the request anyway: check before repeating it."
    )


async def test_a_keyed_write_that_timed_out_is_repeated_under_its_key(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    stripe.fail_next("POST", "/refunds", Fault(None, delay=2.0))  # answers after we gave up
    ex = stripe_only(catalog, stripe.url + "/stripe/v1", timeout_seconds=0.5)
    try:
        result = await ex.call(
            catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX
        )
    finally:
        await ex.aclose()
    assert result.output["id"] == "re_1" and result.attempts == 2
    first, second = keys_sent(stripe.requests("POST", "/refunds"))
    assert first is not None and first == second
    # The slow first request arrives after the retry and is answered with the same refund:
    # the upstream applied the write once, though it received it twice.
    await until(lambda: stripe.replayed == 1)
    assert stripe.refunds == [result.output]


async def test_a_keyed_write_whose_connection_broke_is_repeated_under_its_key(
    catalog: c.GatewaySpec,
) -> None:
    hang = HangUp(hang_ups=1, reply=Reply(200, {"id": "re_9", "status": "succeeded"}))
    ex = stripe_only(catalog, hang.url)
    try:
        result = await ex.call(
            catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX
        )
    finally:
        await ex.aclose()
        hang.close()
    assert result.output == {"id": "re_9", "status": "succeeded"} and result.attempts == 2
    assert hang.requests == [b"POST /refunds HTTP/1.1"] * 2
    first, second = (h.get("idempotency-key") for h in hang.headers)
    assert first is not None and first == second


async def test_a_keyed_write_left_in_doubt_is_not_called_retryable(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    """Only this call could repeat the write safely (a new tool call has a new key), so once
    an attempt may have been applied unseen, the final error says so, whatever it is."""
    # The connection broke after sending, then two 503s.
    hang = HangUp(hang_ups=1, reply=Reply(503, {"error": {"message": "Service unavailable"}}))
    dropped = stripe_only(catalog, hang.url)
    try:
        with pytest.raises(ConnectorCallError) as broke:
            await dropped.call(
                catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX
            )
    finally:
        await dropped.aclose()
        hang.close()
    assert len(hang.requests) == 3 and len({h["idempotency-key"] for h in hang.headers}) == 1
    assert broke.value.code == UPSTREAM_ERROR and broke.value.status == 503
    assert broke.value.retryable is False
    assert "may have applied the request" in broke.value.message

    # Timed out, then two 503s: a 503 alone is retryable, but the first attempt was in doubt.
    busy = Fault(503, {"error": {"message": "Service unavailable"}}, headers={"retry-after": "1"})
    stripe.fail_next("POST", "/refunds", Fault(None, delay=2.0), busy, busy)
    slow = stripe_only(catalog, stripe.url + "/stripe/v1", timeout_seconds=0.5)
    try:
        with pytest.raises(ConnectorCallError) as failed:
            await slow.call(catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
    finally:
        await slow.aclose()
    assert failed.value.code == UPSTREAM_ERROR and failed.value.status == 503
    assert failed.value.retryable is False and failed.value.attempts == 3
    assert failed.value.message.endswith("check before repeating it.")
    assert "retry_after_seconds" not in failed.value.envelope()["error"]  # though it said 1 s
    # And rightly: the upstream did apply it.
    await until(lambda: len(stripe.refunds) == 1)


async def test_a_keyed_write_that_always_times_out_is_not_called_retryable(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    stripe.fail_next("POST", "/refunds", *[Fault(None, delay=1.0)] * 3)
    ex = stripe_only(catalog, stripe.url + "/stripe/v1", timeout_seconds=0.3, retries=2)
    try:
        with pytest.raises(ConnectorCallError) as info:
            await ex.call(catalog.tools[REFUND], {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
    finally:
        await ex.aclose()
    assert info.value.code == UPSTREAM_TIMEOUT and info.value.attempts == 3
    assert info.value.retryable is False and "may have applied the request" in info.value.message
    assert len(set(keys_sent(stripe.requests("POST", "/refunds")))) == 1
    await until(lambda: stripe.replayed == 2)  # three arrivals, one refund
    assert len(stripe.refunds) == 1


async def test_the_idempotency_key_never_reaches_the_model_or_the_log(
    executor: ConnectorExecutor,
    catalog: c.GatewaySpec,
    upstream: ApiStandIns,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="generator.runtime.executor")
    await call(executor, catalog, REFUND, STRIPE, charge="ch_1")
    with pytest.raises(ConnectorCallError) as info:
        await call(executor, catalog, REFUND, STRIPE, charge="ch_in_flight")
    keys = keys_sent(upstream.requests("POST", "/refunds"))
    assert all(keys) and len(set(keys)) == 2
    # Stripe's 409 quotes the key: it is redacted like a credential.
    envelope = json.dumps(info.value.envelope())
    assert info.value.status == 409 and "[redacted]" in info.value.details["upstream_error"]
    assert "in-progress request" in info.value.details["upstream_error"]
    for key in keys:
        assert key is not None
        assert key not in envelope and key[:8] not in envelope
        assert all(key not in record.getMessage() for record in caplog.records)
    assert caplog.records  # the calls were logged, without their keys


# An idempotency key in the body (Square) or the query string: the same rules, another place.

PAYMENT = "square_create_payment"  # declares idempotency_key: {body: idempotency_key}
PAY = {"source_id": "cnon:card-nonce-ok", "amount": 1250, "currency": "USD"}


async def test_a_body_key_is_a_top_level_field_of_the_json_body_new_for_each_call(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    one = await call(executor, catalog, PAYMENT, SQUARE, **PAY, note="table 4")
    two = await call(executor, catalog, PAYMENT, SQUARE, **PAY)
    first, second = (r.json() for r in upstream.requests("POST", "/payments"))
    assert first == {
        "source_id": "cnon:card-nonce-ok",
        "amount_money": {"amount": 1250, "currency": "USD"},
        "note": "table 4",
        "idempotency_key": first["idempotency_key"],
    }
    keys = [first["idempotency_key"], second["idempotency_key"]]
    assert uuid.UUID(keys[0]).version == 4 and keys[0] != keys[1]
    assert (one.output["id"], two.output["id"]) == ("pay_1", "pay_2")
    assert "idempotency_key" not in json.dumps(catalog.tools[PAYMENT].input_schema)


async def test_a_body_keyed_payment_that_timed_out_is_repeated_under_its_key_and_made_once(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    stripe.fail_next("POST", "/payments", Fault(None, delay=2.0))  # answers after we gave up
    ex = one_connector(catalog, "square", stripe.url + "/square/v2", timeout_seconds=0.5)
    try:
        result = await ex.call(catalog.tools[PAYMENT], dict(PAY), credentials=SQUARE, ctx=CTX)
    finally:
        await ex.aclose()
    assert result.output == {"id": "pay_1", "status": "COMPLETED", "amount": 1250}
    assert result.attempts == 2
    first, second = (r.json() for r in stripe.requests("POST", "/payments"))
    assert first == second  # the same body, key included
    await until(lambda: stripe.replayed == 1)
    assert len(stripe.payments) == 1


async def test_a_query_key_is_one_parameter_sent_on_every_attempt(
    catalog: c.GatewaySpec, stripe: ApiStandIns
) -> None:
    tool = catalog.tools[REFUND]
    assert tool.http is not None
    in_query = dataclasses.replace(
        tool, http=dataclasses.replace(tool.http, idempotency_key=c.IdempotencyKey(query="idem"))
    )
    stripe.fail_next("POST", "/refunds", FAULT_503)
    ex = stripe_only(catalog, stripe.url + "/stripe/v1")
    try:
        result = await ex.call(in_query, {"charge": "ch_1"}, credentials=STRIPE, ctx=CTX)
    finally:
        await ex.aclose()
    assert result.attempts == 2
    sent = stripe.requests("POST", "/refunds")
    first, second = (r.args.get("idem") for r in sent)
    assert first is not None and first == second and uuid.UUID(first).version == 4
    assert keys_sent(sent) == [None, None]  # not in a header as well
    assert all("idem" not in r.form() for r in sent)


# Pages whose next URL is in the body (link pagination with `next`), and arguments quoted for
# the query language they are written into.

GRAPH = {"access_token": "graph-token-1234567"}
SALESFORCE = {"instance": "acme", "access_token": "sf-token-1234567"}


def sealed_url(cursor: str) -> str:
    """The next page's URL a link cursor carries (beside the MAC that seals it)."""
    encoded = cursor.rpartition(".")[0]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


async def pages(
    executor: ConnectorExecutor,
    catalog: c.GatewaySpec,
    tool: str,
    creds: dict[str, str],
    **args: Any,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record of a paged tool, and the cursors it handed out."""
    records: list[dict[str, Any]] = []
    cursors: list[str] = []
    cursor = None
    for _ in range(6):
        result = await call(
            executor, catalog, tool, creds, **args, **({"cursor": cursor} if cursor else {})
        )
        records += next(v for k, v in result.output.items() if isinstance(v, list))
        cursor = result.output["next_cursor"]
        if cursor is None:
            return records, cursors
        cursors.append(cursor)
    raise AssertionError("never reached the last page")


async def test_graph_pages_by_the_bodys_odata_next_link(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    users, cursors = await pages(executor, catalog, "msgraph_find_users", GRAPH, name="O'Brien")
    assert [u["displayName"] for u in users] == ["O'Brien", "O'Brien-Smith", "O'Brien \\ Jr"]
    # The cursor seals the @odata.nextLink itself (a key with a dot in it), on the base URL.
    assert len(cursors) == 1
    assert sealed_url(cursors[0]).startswith(upstream.url + "/msgraph/v1.0/users?")
    first = upstream.requests("GET", "/users")[0]
    assert first.args["$filter"] == "startswith(displayName,'O''Brien')"
    # Text that would end the literal early stays inside it.
    users, _ = await pages(executor, catalog, "msgraph_find_users", GRAPH, name="' OR Name != '")
    assert [u["id"] for u in users] == ["u5"]


async def test_salesforce_pages_by_a_relative_next_records_url(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    contacts, cursors = await pages(
        executor, catalog, "salesforce_query_contacts", SALESFORCE, last_name="O'Brien"
    )
    assert [c["Name"] for c in contacts] == ["O'Brien", "O'Brien-Smith"]
    # nextRecordsUrl is a path: the cursor is that path on the instance the request went to.
    assert [sealed_url(cursor) for cursor in cursors] == [
        upstream.url + "/salesforce/acme/services/data/v60.0/query/01g-" + b"O'Brien".hex() + "-1"
    ]
    contacts, _ = await pages(
        executor, catalog, "salesforce_query_contacts", SALESFORCE, last_name="O'Brien \\ Jr"
    )
    assert [c["Id"] for c in contacts] == ["u2"]
    sent = upstream.requests("GET", "/services/data/v60.0/query")[-1].args["q"]
    assert sent.endswith("WHERE LastName = 'O\\'Brien \\\\ Jr'")


async def test_an_error_body_that_is_a_list_gives_its_message(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, upstream: ApiStandIns
) -> None:
    """Salesforce answers errors as a JSON list: `message_field: 0.message` reads it."""
    tool = catalog.tools["salesforce_query_contacts"]
    assert tool.http is not None
    unquoted = {"q": "SELECT Id FROM Contact WHERE LastName = {last_name}"}
    broken = dataclasses.replace(tool, http=dataclasses.replace(tool.http, query=unquoted))
    with pytest.raises(ConnectorCallError) as info:
        await executor.call(broken, {"last_name": "x"}, credentials=SALESFORCE, ctx=CTX)
    assert info.value.status == 400
    assert info.value.details["upstream_error"] == "MALFORMED_QUERY: unexpected token"
