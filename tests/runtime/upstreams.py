"""Real HTTP stand-ins for the connectors' upstream APIs, served on 127.0.0.1.

Each stand-in is a Starlette app served by uvicorn in a background thread. It imitates the
parts of the real API the manifests use, including its authentication and its error shapes:

* `SlackUpstream`   - bearer bot tokens; HTTP 200 with `{"ok": false, "error": ...}` failures
  (`not_authed`, `invalid_auth`, `channel_not_found`); cursor pagination in
  `response_metadata.next_cursor` ("" at the end); 429 `ratelimited` with `Retry-After`.
* `ShopifyUpstream` - one shop per path prefix (`/{shop}/admin/api/2024-10`, since loopback has
  no subdomains), `X-Shopify-Access-Token`, `{"errors": ...}` bodies, Link header pagination
  with `page_info` (and `fields`, a comma-separated list kept in the links as Shopify does).
* `GitHubUpstream`  - bearer tokens, `{"message": "Bad credentials"}` 401s, page-number
  pagination with GitHub's Link header (optional), 201 on issue creation.
* `HubSpotUpstream` - OAuth2: access tokens that can be expired, a token endpoint at
  `/oauth/v1/token` (form-encoded refresh grant), cursor pagination in `paging.next.after`.

Every request is recorded (`received`) so tests can assert what was sent. `fail_next()` queues
scripted replies (status, body, headers, delay) for a method and path suffix, ahead of the
normal behaviour; a `Fault` with `status=None` only delays and then answers normally.

Usage::

    with SlackUpstream({"xoxb-a": "T_A"}) as slack:
        slack.url  # http://127.0.0.1:<port>; the API root is slack.url + "/api"
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.runtime.support import free_port

JsonBody = Any


@dataclass(frozen=True)
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str  # decoded
    raw_path: str  # as sent on the wire (percent-encoding kept)
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def args(self) -> dict[str, str]:
        """Query parameters, last value wins."""
        return dict(self.query)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


@dataclass
class Fault:
    """A scripted reply. `status=None`: wait `delay` seconds, then answer normally. `hold`:
    first wait until the test sets it."""

    status: int | None = 500
    body: JsonBody = None
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: threading.Event | None = None


@dataclass
class Reply:
    status: int = 200
    body: JsonBody = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class Upstream:
    """Base class: serve `handle()` on 127.0.0.1, record requests, inject faults."""

    DATA: tuple[str, ...] = ()

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self.received: list[Received] = []
        self._faults: dict[tuple[str, str], deque[Fault]] = {}
        self._lock = threading.Lock()
        self.port = free_port()
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._endpoint,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 15
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests and faults, and restore the stand-in's data to its initial state."""
        with self._lock:
            self.received.clear()
            self._faults.clear()
            self.restore()

    def snapshot(self) -> None:
        """Remember the current data (the subclass's `DATA` attributes) for `reset()`."""
        self._initial = {name: copy.deepcopy(getattr(self, name)) for name in self.DATA}

    def restore(self) -> None:
        for name, value in getattr(self, "_initial", {}).items():
            setattr(self, name, copy.deepcopy(value))

    def fail_next(self, method: str, path_suffix: str, *faults: Fault) -> None:
        """Answer the next requests to `method` + a path ending in `path_suffix` with `faults`."""
        with self._lock:
            self._faults.setdefault((method.upper(), path_suffix), deque()).extend(faults)

    def requests(self, method: str | None = None, path_suffix: str | None = None) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if (method is None or r.method == method.upper())
                and (path_suffix is None or r.path.endswith(path_suffix))
            ]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for (m, suffix), queue in self._faults.items():
                if m == method and path.endswith(suffix) and queue:
                    return queue.popleft()
        return None

    # -- HTTP ----------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        received = Received(
            method=request.method,
            path=request.url.path,
            raw_path=raw_path,
            query=tuple(parse_qsl(request.url.query, keep_blank_values=True)),
            headers=_joined(request.headers.items()),
            body=await request.body(),
        )
        if self.record:
            with self._lock:
                self.received.append(received)
        fault = self._take_fault(received.method, received.path)
        if fault is not None:
            if fault.hold is not None:
                await anyio.to_thread.run_sync(fault.hold.wait)
            if fault.delay:
                await anyio.sleep(fault.delay)
            if fault.status is not None:
                return self._respond(
                    Reply(fault.status, fault.body, dict(fault.headers), fault.raw)
                )
        return self._respond(self.handle(received))

    @staticmethod
    def _respond(reply: Reply) -> Response:
        headers = dict(reply.headers)
        if reply.raw is not None:
            headers.setdefault("content-type", "application/octet-stream")
            return Response(reply.raw, status_code=reply.status, headers=headers)
        if reply.body is None:
            return Response(b"", status_code=reply.status, headers=headers)
        headers.setdefault("content-type", "application/json; charset=utf-8")
        return Response(json.dumps(reply.body), status_code=reply.status, headers=headers)

    def handle(self, req: Received) -> Reply:  # pragma: no cover - overridden
        return Reply(404, {"error": "not_found"})


class HangUp:
    """An HTTP server on 127.0.0.1 that reads each request whole, then closes the connection
    without a word: the request may have been applied, and the caller cannot know.

    With `hang_ups=n`, only the first n requests are met that way; later ones get `reply`.
    `requests` holds each request line, `headers` each request's headers (lower-case names).
    """

    def __init__(self, *, hang_ups: int | None = None, reply: Reply | None = None) -> None:
        self.requests: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._hang_ups = hang_ups
        self._reply = reply or Reply(200, {})
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode("latin-1")] = value.strip().decode(
                        "latin-1"
                    )
                length = int(headers.get("content-length", "0"))
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append(lines[0])
                self.headers.append(headers)
                if self._hang_ups is not None and len(self.requests) > self._hang_ups:
                    conn.sendall(self._response())

    def _response(self) -> bytes:
        payload = json.dumps(self._reply.body).encode()
        head = (
            f"HTTP/1.1 {self._reply.status} Reply\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("ascii") + payload

    def close(self) -> None:
        self._sock.close()


def _bearer(req: Received) -> str | None:
    value = req.headers.get("authorization", "")
    for scheme in ("Bearer ", "bearer ", "token "):
        if value.startswith(scheme):
            return value[len(scheme) :].strip()
    return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _page_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _page_offset(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not text.startswith("offset:"):
        return None
    return _int(text.removeprefix("offset:"), -1)


# ------------------------------------------------------------------------------------- Slack


class SlackUpstream(Upstream):
    """Slack Web API under `/api`. `tokens`: bot token -> team id."""

    DATA = ("posted", "channels", "revoked")

    def __init__(self, tokens: Mapping[str, str], *, channels: int = 5, record: bool = True):
        super().__init__(record=record)
        self.tokens = dict(tokens)
        self.revoked: set[str] = set()
        self.posted: dict[str, list[dict[str, Any]]] = {team: [] for team in tokens.values()}
        names = ["general", "random", "engineering", "sales", "support", "design", "ops"]
        self.channels: dict[str, list[dict[str, Any]]] = {}
        for team in set(self.tokens.values()):
            self.channels[team] = [
                {
                    "id": f"C{team}{i:03d}",
                    "name": names[i % len(names)] + ("" if i < len(names) else f"-{i}"),
                    "is_private": False,
                    "is_archived": False,
                    "num_members": 3 + i,
                    "topic": {"value": f"Topic of {names[i % len(names)]} for {team}"},
                    "purpose": {"value": ""},
                }
                for i in range(channels)
            ]
        self._ts = 1_700_000_000
        self.snapshot()

    def _team(self, req: Received) -> tuple[str | None, Reply | None]:
        token = _bearer(req)
        if token is None:
            return None, Reply(200, {"ok": False, "error": "not_authed"})
        if token in self.revoked:
            return None, Reply(200, {"ok": False, "error": "token_revoked"})
        team = self.tokens.get(token)
        if team is None:
            return None, Reply(200, {"ok": False, "error": "invalid_auth"})
        return team, None

    def _channel(self, team: str, ref: str) -> dict[str, Any] | None:
        for channel in self.channels[team]:
            if ref in (channel["id"], "#" + channel["name"], channel["name"]):
                return channel
        return None

    def handle(self, req: Received) -> Reply:
        team, denied = self._team(req)
        if denied is not None or team is None:
            return denied or Reply(500)
        method = req.path.removeprefix("/api/")
        if method == "chat.postMessage" and req.method == "POST":
            ctype = req.headers.get("content-type", "")
            args = req.json() if ctype.startswith("application/json") else req.form()
            channel = self._channel(team, str(args.get("channel", "")))
            if channel is None:
                return Reply(200, {"ok": False, "error": "channel_not_found"})
            if not args.get("text"):
                return Reply(200, {"ok": False, "error": "no_text"})
            self._ts += 1
            message = {
                "type": "message",
                "text": args["text"],
                "user": f"U{team}BOT",
                "bot_id": f"B{team}",
                "ts": f"{self._ts}.000100",
            }
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            self.posted[team].append({"channel": channel["id"], **message})
            return Reply(
                200, {"ok": True, "channel": channel["id"], "ts": message["ts"], "message": message}
            )
        if method == "conversations.list" and req.method == "GET":
            args = req.args
            limit = max(1, min(_int(args.get("limit"), 100), 1000))
            offset = 0
            if args.get("cursor"):
                found = _page_offset(args["cursor"])
                if found is None or found < 0:
                    return Reply(200, {"ok": False, "error": "invalid_cursor"})
                offset = found
            items = self.channels[team][offset : offset + limit]
            more = offset + limit < len(self.channels[team])
            return Reply(
                200,
                {
                    "ok": True,
                    "channels": items,
                    "response_metadata": {
                        "next_cursor": _page_cursor(offset + limit) if more else ""
                    },
                },
            )
        if method == "conversations.history" and req.method == "GET":
            channel = self._channel(team, req.args.get("channel", ""))
            if channel is None:
                return Reply(200, {"ok": False, "error": "channel_not_found"})
            messages = [m for m in reversed(self.posted[team]) if m["channel"] == channel["id"]]
            return Reply(
                200,
                {
                    "ok": True,
                    "messages": [{k: v for k, v in m.items() if k != "channel"} for m in messages],
                    "has_more": False,
                    "response_metadata": {"next_cursor": ""},
                },
            )
        return Reply(200, {"ok": False, "error": "unknown_method"})


# ----------------------------------------------------------------------------------- Shopify


SHOPIFY_API = "/admin/api/2024-10"
SHOPIFY_BAD_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


class ShopifyUpstream(Upstream):
    """Shopify Admin REST under `/{shop}/admin/api/2024-10`. `shops`: shop -> access token.

    `next_link`, when set, is the rel="next" URL of every orders page (an upstream sending the
    next page elsewhere). With `relative_links`, the Link URLs are written relative to the
    request's (`orders.json?...`), as RFC 8288 allows.
    """

    DATA = ("customers", "orders", "next_link", "relative_links")

    def __init__(self, shops: Mapping[str, str], *, orders: int = 5, record: bool = True):
        super().__init__(record=record)
        self.shops = dict(shops)
        self.next_link: str | None = None
        self.relative_links = False
        self.customers: dict[str, list[dict[str, Any]]] = {}
        self.orders: dict[str, list[dict[str, Any]]] = {}
        people = [
            ("Ada", "Lovelace"),
            ("Grace", "Hopper"),
            ("Alan", "Turing"),
            ("Edsger", "Dijkstra"),
        ]
        for n, shop in enumerate(sorted(self.shops)):
            base_id = (n + 1) * 1000
            self.customers[shop] = [
                {
                    "id": base_id + i,
                    "email": f"{first.lower()}@{shop}.example",
                    "first_name": first,
                    "last_name": last,
                    "phone": None,
                    "state": "enabled",
                    "orders_count": i,
                    "total_spent": f"{10 * i}.00",
                    "currency": "EUR",
                    "tags": "",
                    "created_at": f"2024-01-0{i + 1}T10:00:00Z",
                }
                for i, (first, last) in enumerate(people)
            ]
            self.orders[shop] = [
                {
                    "id": base_id * 10 + i,
                    "name": f"#{1001 + i}",
                    "email": self.customers[shop][i % len(people)]["email"],
                    "created_at": f"2024-02-{10 + i:02d}T09:00:00Z",
                    "financial_status": "paid" if i % 2 == 0 else "pending",
                    "fulfillment_status": None,
                    "currency": "EUR",
                    "total_price": f"{19 + i}.90",
                    "customer": {"id": self.customers[shop][i % len(people)]["id"]},
                    "line_items": [
                        {
                            "id": i * 7,
                            "title": "Widget",
                            "quantity": 1,
                            "price": "19.90",
                            "sku": None,
                        }
                    ],
                }
                for i in range(orders)
            ]
        self.snapshot()

    def orders_link(
        self,
        shop: str,
        offset: int,
        limit: int,
        fields: str | None = None,
        relative: bool = False,
    ) -> str:
        """The URL of the orders page at `offset`, with Shopify's `fields` list (its commas
        left as they are), absolute or relative to an orders request's URL."""
        root = "orders.json" if relative else f"{self.url}/{shop}{SHOPIFY_API}/orders.json"
        chosen = "" if fields is None else f"&fields={fields}"
        return f"{root}?limit={limit}{chosen}&page_info={_page_cursor(offset)}"

    def handle(self, req: Received) -> Reply:
        shop, _, rest = req.path.lstrip("/").partition("/")
        rest = "/" + rest
        if shop not in self.shops or not rest.startswith(SHOPIFY_API):
            return Reply(404, {"errors": "Not Found"})
        if req.headers.get("x-shopify-access-token") != self.shops[shop]:
            return Reply(
                401,
                {"errors": SHOPIFY_BAD_TOKEN},
            )
        route = rest.removeprefix(SHOPIFY_API)
        args = req.args
        if route == "/orders.json":
            limit = _int(args.get("limit"), 50)
            if not 1 <= limit <= 250:
                return Reply(400, {"errors": {"limit": ["must be between 1 and 250"]}})
            offset = 0
            fields = args.get("fields")
            if "page_info" in args:
                if set(args) - {"page_info", "limit", "fields"}:
                    return Reply(
                        400,
                        {"errors": {"page_info": ["only limit and fields may go with page_info"]}},
                    )
                found = _page_offset(args["page_info"])
                if found is None or found < 0:
                    return Reply(400, {"errors": {"page_info": ["Invalid value."]}})
                offset = found
            items = list(reversed(self.orders[shop]))
            status = args.get("financial_status")
            if status and status != "any":
                items = [o for o in items if o["financial_status"] == status]
            page = items[offset : offset + limit]
            if fields is not None:
                page = [{k: v for k, v in o.items() if k in fields.split(",")} for o in page]
            headers: dict[str, str] = {}
            links = []
            relative = self.relative_links
            if self.next_link is not None:  # an upstream sending the next page elsewhere
                links.append(f'<{self.next_link}>; rel="next"')
            elif offset + limit < len(items):
                following = self.orders_link(shop, offset + limit, limit, fields, relative)
                links.append(f'<{following}>; rel="next"')
            if offset > 0:
                previous = self.orders_link(shop, max(0, offset - limit), limit, fields, relative)
                links.append(f'<{previous}>; rel="previous"')
            if links:
                headers["link"] = ", ".join(links)
            return Reply(200, {"orders": page}, headers)
        if route == "/customers/search.json":
            query = args.get("query", "").lower()
            needle = query.split(":", 1)[-1]
            matches = [
                c
                for c in self.customers[shop]
                if any(
                    needle in str(c.get(k) or "").lower()
                    for k in ("email", "first_name", "last_name")
                )
            ]
            return Reply(200, {"customers": matches[: _int(args.get("limit"), 50)]})
        if route.startswith("/customers/") and route.endswith(".json"):
            ident = route.removeprefix("/customers/").removesuffix(".json")
            for customer in self.customers[shop]:
                if str(customer["id"]) == ident:
                    return Reply(200, {"customer": customer})
            return Reply(404, {"errors": "Not Found"})
        return Reply(404, {"errors": "Not Found"})


# ------------------------------------------------------------------------------------ GitHub


class GitHubUpstream(Upstream):
    """GitHub REST. `tokens`: token -> login; `repos`: "owner/repo" names each login can see."""

    DATA = ("issues", "link_headers")

    def __init__(
        self,
        tokens: Mapping[str, str],
        repos: Mapping[str, Iterable[str]],
        *,
        issues: int = 5,
        link_headers: bool = True,
        record: bool = True,
    ):
        super().__init__(record=record)
        self.tokens = dict(tokens)
        self.link_headers = link_headers
        self.access = {login: set(names) for login, names in repos.items()}
        self.issues: dict[str, list[dict[str, Any]]] = {}
        serial = 0
        for names in self.access.values():
            for full in sorted(names):
                if full in self.issues:
                    continue
                self.issues[full] = []
                for i in range(issues):
                    serial += 1
                    self.issues[full].append(
                        self._issue(full, serial, i + 1, f"Crash in module {i}")
                    )
        self.snapshot()

    def _issue(
        self,
        full: str,
        ident: int,
        number: int,
        title: str,
        body: str | None = None,
        labels: Iterable[str] = (),
        login: str = "octocat",
    ) -> dict[str, Any]:
        return {
            "id": 100_000 + ident,
            "number": number,
            "title": title,
            "state": "open",
            "html_url": f"https://github.com/{full}/issues/{number}",
            "body": body,
            "user": {"login": login},
            "labels": [{"name": name} for name in labels],
            "comments": 0,
            "created_at": f"2024-03-{number % 28 + 1:02d}T12:00:00Z",
            "updated_at": f"2024-03-{number % 28 + 1:02d}T12:00:00Z",
        }

    def _visible(self, login: str, full: str) -> bool:
        return full in self.access.get(login, set()) and full in self.issues

    def handle(self, req: Received) -> Reply:
        token = _bearer(req)
        login = self.tokens.get(token or "")
        if login is None:
            return Reply(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        parts = req.path.strip("/").split("/")
        if parts[:1] == ["search"] and parts[1:] == ["issues"]:
            words = req.args.get("q", "").lower().split()
            repo_filter = [w.removeprefix("repo:") for w in words if w.startswith("repo:")]
            terms = [w for w in words if ":" not in w]
            items = [
                issue
                for full, issues in sorted(self.issues.items())
                if full in self.access.get(login, set())
                and (not repo_filter or full in repo_filter)
                for issue in issues
                if all(t in issue["title"].lower() for t in terms)
            ]
            per_page = _int(req.args.get("per_page"), 30)
            return Reply(
                200,
                {"total_count": len(items), "incomplete_results": False, "items": items[:per_page]},
            )
        if len(parts) == 4 and parts[0] == "repos" and parts[3] == "issues":
            full = f"{parts[1]}/{parts[2]}"
            if not self._visible(login, full):
                return Reply(
                    404,
                    {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
                )
            if req.method == "GET":
                return self._list(req, full)
            if req.method == "POST":
                data = req.json()
                if not isinstance(data, dict) or not data.get("title"):
                    return Reply(
                        422,
                        {
                            "message": "Validation Failed",
                            "errors": [
                                {"resource": "Issue", "field": "title", "code": "missing_field"}
                            ],
                        },
                    )
                number = len(self.issues[full]) + 1
                issue = self._issue(
                    full,
                    900_000 + number,
                    number,
                    data["title"],
                    data.get("body"),
                    data.get("labels") or (),
                    login,
                )
                self.issues[full].append(issue)
                return Reply(201, issue)
        return Reply(
            404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
        )

    def _list(self, req: Received, full: str) -> Reply:
        args = req.args
        state = args.get("state", "open")
        items = [i for i in reversed(self.issues[full]) if state == "all" or i["state"] == state]
        per_page = _int(args.get("per_page"), 30)
        page = _int(args.get("page"), 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        last = max(1, -(-len(items) // per_page))
        if self.link_headers and last > 1:
            root = f"{self.url}{req.path}?state={state}&per_page={per_page}"
            links = []
            if page < last:
                links.append(f'<{root}&page={page + 1}>; rel="next"')
            links.append(f'<{root}&page={last}>; rel="last"')
            headers["link"] = ", ".join(links)
        return Reply(200, chunk, headers)


# ----------------------------------------------------------------------------------- HubSpot


@dataclass
class HubSpotApp:
    client_id: str
    client_secret: str


class HubSpotUpstream(Upstream):
    """HubSpot CRM v3 and its OAuth token endpoint.

    `reset()` restores the contacts; issued access tokens and grants are kept.

    `grants`: refresh token -> portal (tenant) id. Access tokens are issued by the token
    endpoint (`issue()` for a test's starting token) and can be expired with `expire()`.
    """

    DATA = ("contacts",)

    def __init__(
        self,
        app: HubSpotApp,
        grants: Mapping[str, str],
        *,
        contacts: int = 4,
        rotate_refresh_tokens: bool = False,
        record: bool = True,
    ):
        super().__init__(record=record)
        self.app_creds = app
        self.grants = dict(grants)
        self.rotate = rotate_refresh_tokens
        self.access: dict[str, str] = {}  # access token -> portal
        self.refreshes = 0
        self._serial = 0
        people = [
            ("Ada", "Lovelace", "Analytical"),
            ("Grace", "Hopper", "Navy"),
            ("Alan", "Turing", "Bletchley"),
            ("Edsger", "Dijkstra", "Eindhoven"),
            ("Barbara", "Liskov", "MIT"),
            ("Ken", "Thompson", "Bell Labs"),
        ]
        self.contacts: dict[str, list[dict[str, Any]]] = {}
        for n, portal in enumerate(sorted(set(self.grants.values()))):
            self.contacts[portal] = [
                self._contact(
                    f"{(n + 1) * 100 + i}",
                    f"{first.lower()}@{portal}.example",
                    first,
                    last,
                    company,
                )
                for i, (first, last, company) in enumerate(people[:contacts])
            ]
        self.snapshot()

    @staticmethod
    def _contact(
        ident: str,
        email: str,
        first: str | None,
        last: str | None,
        company: str | None,
        phone: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": ident,
            "properties": {
                "email": email,
                "firstname": first,
                "lastname": last,
                "phone": phone,
                "company": company,
            },
            "createdAt": "2024-01-01T00:00:00Z",
            "updatedAt": "2024-01-01T00:00:00Z",
            "archived": False,
        }

    def issue(self, portal: str) -> str:
        self._serial += 1
        token = f"hs-access-{portal}-{self._serial}"
        self.access[token] = portal
        return token

    def expire(self, token: str) -> None:
        self.access.pop(token, None)

    def handle(self, req: Received) -> Reply:
        if req.path == "/oauth/v1/token" and req.method == "POST":
            return self._token(req)
        token = _bearer(req)
        portal = self.access.get(token or "")
        if portal is None:
            return Reply(
                401,
                {
                    "status": "error",
                    "message": "The OAuth token used to make this call expired 2 minute(s) ago.",
                    "correlationId": "4f4c0b1e-0000-4000-8000-000000000000",
                    "category": "EXPIRED_AUTHENTICATION",
                },
            )
        contacts = self.contacts[portal]
        if req.path == "/crm/v3/objects/contacts" and req.method == "GET":
            limit = _int(req.args.get("limit"), 10)
            after = _int(req.args.get("after"), 0)
            page = contacts[after : after + limit]
            body: dict[str, Any] = {"results": page}
            if after + limit < len(contacts):
                body["paging"] = {"next": {"after": str(after + limit), "link": "?after=..."}}
            return Reply(200, body)
        if req.path == "/crm/v3/objects/contacts/search" and req.method == "POST":
            data = req.json()
            needle = str(data.get("query", "")).lower()
            found = [
                c
                for c in contacts
                if any(needle in str(v or "").lower() for v in c["properties"].values())
            ]
            return Reply(
                200, {"total": len(found), "results": found[: _int(str(data.get("limit")), 10)]}
            )
        if req.path == "/crm/v3/objects/contacts" and req.method == "POST":
            props = req.json().get("properties", {})
            for c in contacts:
                if c["properties"]["email"] == props.get("email"):
                    return Reply(
                        409,
                        {
                            "status": "error",
                            "message": f"Contact already exists. Existing ID: {c['id']}",
                            "category": "CONFLICT",
                        },
                    )
            contact = self._contact(
                str(9000 + len(contacts)),
                props.get("email"),
                props.get("firstname"),
                props.get("lastname"),
                props.get("company"),
                props.get("phone"),
            )
            contacts.append(contact)
            return Reply(201, contact)
        return Reply(
            404,
            {"status": "error", "message": "Resource not found", "category": "OBJECT_NOT_FOUND"},
        )

    def _token(self, req: Received) -> Reply:
        form = req.form()
        if (form.get("client_id"), form.get("client_secret")) != (
            self.app_creds.client_id,
            self.app_creds.client_secret,
        ):
            return Reply(
                401, {"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"}
            )
        if form.get("grant_type") != "refresh_token":
            return Reply(400, {"status": "BAD_GRANT_TYPE", "message": "unsupported grant_type"})
        refresh = form.get("refresh_token", "")
        portal = self.grants.get(refresh)
        if portal is None:
            return Reply(
                400, {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}
            )
        self.refreshes += 1
        body = {"token_type": "bearer", "access_token": self.issue(portal), "expires_in": 1800}
        if self.rotate:
            del self.grants[refresh]
            new_refresh = f"hs-refresh-{portal}-{self._serial}"
            self.grants[new_refresh] = portal
            body["refresh_token"] = new_refresh
        else:
            body["refresh_token"] = refresh
        return Reply(200, body)


# ------------------------------------------------------------------------ standard tenants

# Two tenants, A and B, each with its own account at every stand-in. Secrets are distinctive
# strings so tests can assert they never appear where they must not.
SLACK_A = {"bot_token": "xoxb-tenant-a-secret-1111"}
SLACK_B = {"bot_token": "xoxb-tenant-b-secret-2222"}
SHOP_A = {"shop": "acme", "access_token": "shpat_acme_secret_3333"}
SHOP_B = {"shop": "globex", "access_token": "shpat_globex_secret_4444"}
GH_A = {"token": "ghp_tenant_a_secret_5555"}
GH_B = {"token": "ghp_tenant_b_secret_6666"}
HS_APP = HubSpotApp(client_id="hs-client-id-42", client_secret="hs-client-secret-7777")
HS_REFRESH_A = "hs-refresh-a-secret-8888"
HS_REFRESH_B = "hs-refresh-b-secret-9999"

SECRETS = (
    SLACK_A["bot_token"],
    SLACK_B["bot_token"],
    SHOP_A["access_token"],
    SHOP_B["access_token"],
    GH_A["token"],
    GH_B["token"],
    HS_APP.client_secret,
    HS_REFRESH_A,
    HS_REFRESH_B,
)


def hubspot_creds(access: str, refresh: str = HS_REFRESH_A) -> dict[str, str]:
    """HubSpot credentials of a tenant: an access token plus what refreshing it needs."""
    return {
        "access_token": access,
        "refresh_token": refresh,
        "client_id": HS_APP.client_id,
        "client_secret": HS_APP.client_secret,
    }


class StandIns:
    """All four stand-ins with tenants A and B (team TA/TB, shop acme/globex, GitHub alice/bob,
    HubSpot portalA/portalB)."""

    def __init__(self, *, record: bool = True) -> None:
        self.slack = SlackUpstream(
            {SLACK_A["bot_token"]: "TA", SLACK_B["bot_token"]: "TB"}, channels=5, record=record
        )
        self.shopify = ShopifyUpstream(
            {SHOP_A["shop"]: SHOP_A["access_token"], SHOP_B["shop"]: SHOP_B["access_token"]},
            orders=5,
            record=record,
        )
        self.github = GitHubUpstream(
            {GH_A["token"]: "alice", GH_B["token"]: "bob"},
            {"alice": ["acme/api", "acme/web"], "bob": ["globex/core"]},
            issues=5,
            record=record,
        )
        self.hubspot = HubSpotUpstream(
            HS_APP, {HS_REFRESH_A: "portalA", HS_REFRESH_B: "portalB"}, contacts=4, record=record
        )
        self.all: tuple[Upstream, ...] = (self.slack, self.shopify, self.github, self.hubspot)

    def __enter__(self) -> StandIns:
        for upstream in self.all:
            upstream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for upstream in self.all:
            upstream.stop()

    def reset(self) -> None:
        for upstream in self.all:
            upstream.reset()

    def base_urls(self) -> dict[str, str]:
        return {
            "slack": self.slack.url + "/api",
            "shopify": self.shopify.url + "/{shop}" + SHOPIFY_API,
            "github": self.github.url,
            "hubspot": self.hubspot.url,
        }

    def token_urls(self) -> dict[str, str]:
        return {"hubspot": self.hubspot.url + "/oauth/v1/token"}

    def environ(self, import_name: str = "fastn_gateway") -> dict[str, str]:
        """The deployment environment variables that point a gateway at these stand-ins."""
        prefix = import_name.upper()
        env = {f"{prefix}_BASE_URL_{k.upper()}": v for k, v in self.base_urls().items()}
        env.update({f"{prefix}_TOKEN_URL_{k.upper()}": v for k, v in self.token_urls().items()})
        return env

    def credentials(self, tenant: str) -> dict[str, dict[str, str]]:
        """Connector -> credentials of tenant "A" or "B" (HubSpot with a fresh access token)."""
        if tenant not in ("A", "B"):
            raise ValueError(tenant)
        a = tenant == "A"
        portal = "portalA" if a else "portalB"
        return {
            "slack": dict(SLACK_A if a else SLACK_B),
            "shopify": dict(SHOP_A if a else SHOP_B),
            "github": dict(GH_A if a else GH_B),
            "hubspot": hubspot_creds(
                self.hubspot.issue(portal), HS_REFRESH_A if a else HS_REFRESH_B
            ),
        }


def _joined(items: Any) -> dict[str, str]:
    """Request headers by lower-case name, a repeated one's values joined as HTTP combines them."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
