"""Test support for the gateway runtime: a catalog built from manifests/, a fake upstream,
uvicorn in a thread, and a two-tenant world. Used by conftest.py and launcher.py."""

from __future__ import annotations

import copy
import dataclasses
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
GENERATED = ROOT / "generated"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generator.runtime import catalog as c  # noqa: E402
from generator.runtime.store import Store  # noqa: E402


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _inline(node: Any, types: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/types/"):
            base = _inline(copy.deepcopy(types[ref.removeprefix("#/types/")]), types)
            extra = {k: _inline(v, types) for k, v in node.items() if k != "$ref"}
            return {**base, **extra}
        return {k: _inline(v, types) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, types) for v in node]
    return node


def _annotations(raw: Mapping[str, Any] | None) -> c.Annotations:
    raw = raw or {}
    return c.Annotations(
        read_only=bool(raw.get("read_only", False)),
        destructive=bool(raw.get("destructive", False)),
        idempotent=bool(raw.get("idempotent", False)),
        open_world=bool(raw.get("open_world", False)),
    )


def _http(raw: Mapping[str, Any]) -> c.HttpBinding:
    response = raw.get("response") or {}
    pag = raw.get("pagination")
    return c.HttpBinding(
        method=raw["method"],
        path=raw["path"],
        query=raw.get("query") or {},
        headers=raw.get("headers") or {},
        body=raw.get("body"),
        body_encoding=raw.get("body_encoding", "json"),
        select=response.get("select"),
        fields=response.get("fields") or {},
        pagination=c.Pagination(style=pag["style"], param=pag.get("param"), next=pag.get("next"))
        if pag
        else None,
    )


def build_gateway(
    connectors: tuple[str, ...] = ("slack", "shopify", "github", "hubspot"),
) -> c.GatewaySpec:
    types = _load(MANIFESTS / "types.yaml")["types"]
    gw = _load(MANIFESTS / "gateway.yaml")
    tools: dict[str, c.ToolSpec] = {}
    for kind in ("native", "personalization"):
        doc = _load(MANIFESTS / f"{kind}.yaml")
        for t in doc["tools"]:
            tools[t["name"]] = c.ToolSpec(
                name=t["name"],
                title=t.get("title"),
                description=t["description"],
                family=kind,  # type: ignore[arg-type]
                group=kind,
                connector=None,
                scope=t["scope"],
                annotations=_annotations(t.get("annotations")),
                input_schema=_inline(t["input"], types),
                output_schema=_inline(t["output"], types),
                handler=t["handler"],
                bind=t.get("bind") or {},
            )
    conns: dict[str, c.ConnectorSpec] = {}
    for name in connectors:
        doc = _load(MANIFESTS / "connectors" / f"{name}.yaml")
        names = []
        for cap in doc["capabilities"]:
            tname = f"{name}_{cap['name']}"
            names.append(tname)
            inp = _inline(cap["input"], types)
            out = _inline(cap["output"], types)
            if cap.get("http", {}).get("pagination"):
                inp = {
                    **inp,
                    "properties": {**inp.get("properties", {}), "cursor": {"type": "string"}},
                }
                out = {
                    **out,
                    "properties": {
                        **out.get("properties", {}),
                        "next_cursor": {"type": ["string", "null"]},
                    },
                }
            tools[tname] = c.ToolSpec(
                name=tname,
                title=cap.get("title"),
                description=cap["description"],
                family="connector",
                group=name,
                connector=name,
                scope=cap["scope"],
                annotations=_annotations(cap.get("annotations")),
                input_schema=inp,
                output_schema=out,
                http=_http(cap["http"]),
                entities=tuple(
                    c.EntityMapping(
                        type=e["type"],
                        items=e["items"],
                        args=e.get("args") or {},
                        fields=e["fields"],
                    )
                    for e in cap.get("entities") or ()
                ),
            )
        auth = doc["auth"]
        conns[name] = c.ConnectorSpec(
            name=name,
            title=doc["title"],
            description=doc["description"],
            base_url=doc["base_url"],
            auth=c.ConnectorAuth(
                type=auth["type"],
                fields=tuple(
                    c.AuthField(
                        name=f["name"],
                        title=f.get("title"),
                        description=f.get("description"),
                        secret=f.get("secret", True),
                        required=f.get("required", True),
                    )
                    for f in auth.get("fields") or ()
                ),
                token_field=auth.get("token_field"),
                header=auth.get("header"),
                key_field=auth.get("key_field"),
                token_url=auth.get("token_url"),
                refresh_token_field=auth.get("refresh_token_field"),
                client_id_field=auth.get("client_id_field"),
                client_secret_field=auth.get("client_secret_field"),
            ),
            errors=c.ErrorShape(
                ok_field=(doc.get("errors") or {}).get("ok_field"),
                message_field=(doc.get("errors") or {}).get("message_field"),
                auth_errors=tuple((doc.get("errors") or {}).get("auth_errors") or ()),
            ),
            timeout_seconds=float(doc.get("timeout_seconds", 20)),
            retries=int(doc.get("retries", 2)),
            tools=tuple(sorted(names)),
        )
    plans = {
        n: c.QuotaPlan(
            name=n,
            period=p["period"],
            calls=p.get("calls"),
            per_connector=p.get("per_connector") or {},
        )
        for n, p in gw["quotas"]["plans"].items()
    }
    plans["tiny"] = c.QuotaPlan(name="tiny", period="day", calls=3)
    plans["tiny_slack"] = c.QuotaPlan(
        name="tiny_slack", period="month", calls=100, per_connector={"slack": 1}
    )
    resources = tuple(
        c.ResourceSpec(
            name=r["name"],
            description=r["description"],
            handler=r["handler"],
            uri=r.get("uri"),
            uri_template=r.get("uri_template"),
            title=r.get("title"),
        )
        for r in gw["resources"]
    )
    memory = _load(MANIFESTS / "personalization.yaml").get("memory") or {}
    return c.GatewaySpec(
        package_name=gw["package"]["name"],
        import_name=gw["package"]["import_name"],
        version=gw["package"]["version"],
        server_name=gw["server"]["name"],
        title=gw["server"].get("title"),
        instructions=gw["server"].get("instructions"),
        scopes=gw["auth"]["scopes"],
        key_ttl_days=gw["auth"]["key_ttl_days"],
        default_plan=gw["quotas"]["default_plan"],
        plans=plans,
        entity_types={
            n: c.EntityType(name=n, description=e.get("description"), fields=e["fields"])
            for n, e in gw["entities"].items()
        },
        resources=resources,
        connectors=dict(sorted(conns.items())),
        tools=dict(sorted(tools.items())),
        memory=c.MemorySettings(**memory),
    )


def with_filler_tools(gateway: c.GatewaySpec, count: int, per_connector: int = 50) -> c.GatewaySpec:
    """A copy of `gateway` whose catalog holds `count` extra connector tools."""
    tools = dict(gateway.tools)
    conns = dict(gateway.connectors)
    schema_in = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"q": {"type": "string"}},
    }
    schema_out = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    for i in range(0, count, per_connector):
        cname = f"filler{i // per_connector:04d}"
        names = []
        for j in range(i, min(i + per_connector, count)):
            tname = f"{cname}_tool_{j:05d}"
            names.append(tname)
            tools[tname] = c.ToolSpec(
                name=tname,
                title=None,
                description=f"Filler tool {j}.",
                family="connector",
                group=cname,
                connector=cname,
                scope="read",
                annotations=c.Annotations(read_only=True),
                input_schema=schema_in,
                output_schema=schema_out,
                http=c.HttpBinding(method="GET", path="/x"),
            )
        conns[cname] = c.ConnectorSpec(
            name=cname,
            title=cname,
            description="filler",
            base_url="http://127.0.0.1:9",
            auth=c.ConnectorAuth(type="none"),
            tools=tuple(sorted(names)),
        )
    return dataclasses.replace(
        gateway, tools=dict(sorted(tools.items())), connectors=dict(sorted(conns.items()))
    )


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def generated_available() -> bool:
    return (GENERATED / "fastn_gateway" / "catalog" / "__init__.py").exists()


def leaf_exception(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


TOKEN_RE = re.compile(r"gwk_[A-Za-z0-9_-]{20,}")


# ----------------------------------------------------------------------------- fake upstream APIs


class FakeUpstream:
    """Real HTTP endpoints on 127.0.0.1 standing in for Slack and Shopify.

    Valid credentials: Slack bot tokens in `slack_tokens`, Shopify tokens in `shopify_tokens`.
    Every request's path and credential are logged in `requests`.
    """

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.slack_tokens: set[str] = set()
        self.shopify_tokens: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []

        def slack_auth(request: Request) -> JSONResponse | None:
            token = (request.headers.get("authorization") or "").removeprefix("Bearer ")
            self.requests.append((request.url.path, token))
            if token not in self.slack_tokens:
                return JSONResponse({"ok": False, "error": "invalid_auth"})
            return None

        async def post_message(request: Request) -> JSONResponse:
            denied = slack_auth(request)
            if denied:
                return denied
            body = await request.json()
            return JSONResponse(
                {
                    "ok": True,
                    "channel": body["channel"],
                    "ts": "1700000000.000100",
                    "message": {"text": body["text"], "ts": "1700000000.000100"},
                }
            )

        async def list_channels(request: Request) -> JSONResponse:
            denied = slack_auth(request)
            if denied:
                return denied
            return JSONResponse(
                {
                    "ok": True,
                    "channels": [
                        {
                            "id": "C1",
                            "name": "general",
                            "is_private": False,
                            "topic": {"value": "all hands"},
                        }
                    ],
                    "response_metadata": {"next_cursor": ""},
                }
            )

        async def history(request: Request) -> JSONResponse:
            denied = slack_auth(request)
            if denied:
                return denied
            return JSONResponse(
                {"ok": True, "messages": [{"ts": "1.0", "text": "hi"}], "has_more": False}
            )

        async def orders(request: Request) -> JSONResponse:
            token = request.headers.get("x-shopify-access-token")
            self.requests.append((request.url.path, token))
            if token not in self.shopify_tokens:
                return JSONResponse(
                    {"errors": "[API] Invalid API key or access token"}, status_code=401
                )
            return JSONResponse(
                {
                    "orders": [
                        {
                            "id": 1,
                            "name": "#1001",
                            "created_at": "2026-01-01T00:00:00Z",
                            "total_price": "10.00",
                            "currency": "EUR",
                            "email": "ash@example.com",
                            "financial_status": "paid",
                        }
                    ]
                }
            )

        self.app = Starlette(
            routes=[
                Route("/slack/chat.postMessage", post_message, methods=["POST"]),
                Route("/slack/conversations.list", list_channels),
                Route("/slack/conversations.history", history),
                Route("/shopify/orders.json", orders),
            ]
        )
        self.server = UvicornThread(self.app)

    def base_urls(self) -> dict[str, str]:
        return {"slack": f"{self.server.url}/slack", "shopify": f"{self.server.url}/shopify"}


# ----------------------------------------------------------------------------- a two-tenant world


@dataclass
class World:
    runtime: Any
    a: Any
    b: Any
    a_rw: str  # tenant A, read+write, bound to user "ash"
    a_read: str  # tenant A, read only, no user
    a_write: str  # tenant A, write only
    a_host: str  # tenant A, host application key (may name users)
    b_rw: str  # tenant B, read+write, bound to user "bo"

    def server(self, key: str, **kw: Any) -> Any:
        return self.runtime.build_server(api_key=key, **kw)


def make_runtime(store: Store, gateway: c.GatewaySpec, upstream: FakeUpstream, **kw: Any) -> Any:
    from generator.runtime.executor import ConnectorExecutor
    from generator.runtime.memory import MemoryStore
    from generator.runtime.server import GatewayRuntime

    memory = MemoryStore(store.engine, settings=gateway.memory)
    memory.migrate()
    executor = ConnectorExecutor(
        gateway, base_urls=upstream.base_urls(), backoff_base=0.01, backoff_max=0.05
    )
    kw.setdefault("recorder_interval", 0.05)
    return GatewayRuntime(gateway, store, executor=executor, memory=memory, **kw)


def populate(store: Store, upstream: FakeUpstream, runtime: Any) -> World:
    a = store.create_tenant("acme")
    b = store.create_tenant("bravo")
    upstream.slack_tokens |= {"xoxb-acme", "xoxb-bravo"}
    upstream.shopify_tokens |= {"shpat-acme"}
    store.connect(a.id, "slack", {"bot_token": "xoxb-acme"})
    store.connect(a.id, "shopify", {"shop": "acme", "access_token": "shpat-acme"})
    store.connect(b.id, "slack", {"bot_token": "xoxb-bravo"})
    store.register_user(a.id, "ash")
    store.register_user(a.id, "alex")
    store.register_user(b.id, "bo")
    return World(
        runtime=runtime,
        a=a,
        b=b,
        a_rw=store.issue_key(a.id, scopes=["read", "write"], user="ash").token,
        a_read=store.issue_key(a.id, scopes=["read"]).token,
        a_write=store.issue_key(a.id, scopes=["write"]).token,
        a_host=store.issue_key(a.id, scopes=["read", "write"], host_app=True).token,
        b_rw=store.issue_key(b.id, scopes=["read", "write"], user="bo").token,
    )
