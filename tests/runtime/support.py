"""Test support for the gateway runtime: a catalog built from manifests/, a fake upstream,
uvicorn in a thread, and a two-tenant world. Used by conftest.py and launcher.py."""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
GENERATED = ROOT / "generated"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from generator.runtime import catalog as c  # noqa: E402
from generator.runtime.executor import (  # noqa: E402
    CallContext,
    ConnectorCallError,
    ConnectorExecutor,
    ExecResult,
)
from generator.runtime.store import Store  # noqa: E402

# The caller of the executor tests that call connectors directly (no server in between).
CTX = CallContext(tenant_id="tenant-a", user_id="user-a1")


def catalog_with(root: Path, *manifests: Path) -> c.GatewaySpec:
    """The gateway of the default manifests plus the connector `manifests`, built in `root`."""
    shutil.copytree(ROOT / "manifests", root / "manifests")
    for path in manifests:
        shutil.copy(path, root / "manifests" / "connectors" / path.name)
    from generator import api

    spec, diagnostics = api.gateway_spec(api.Options.for_project(root, cache=False))
    assert spec is not None, diagnostics
    return spec


async def call(
    ex: ConnectorExecutor, catalog: c.GatewaySpec, tool: str, creds: dict[str, str], **args: Any
) -> ExecResult:
    """Run `tool` with `args` as CTX's tenant with `creds`."""
    return await ex.call(catalog.tools[tool], args, credentials=creds, ctx=CTX)


async def fails(
    ex: ConnectorExecutor, catalog: c.GatewaySpec, tool: str, creds: dict[str, str], **args: Any
) -> ConnectorCallError:
    """The error of a `call` that must fail."""
    with pytest.raises(ConnectorCallError) as caught:
        await call(ex, catalog, tool, creds, **args)
    return caught.value


def build_gateway(
    connectors: tuple[str, ...] = ("slack", "shopify", "github", "hubspot"),
) -> c.GatewaySpec:
    """The catalog of manifests/ compiled by the real compiler (the same expressions a build
    writes into generated/), restricted to `connectors`, plus the quota plans the tests use:
    two tiny ones for refusals and a daily one for plan switches."""
    from generator import api

    full, diagnostics = api.gateway_spec(api.Options.for_project(ROOT, cache=False))
    assert full is not None, diagnostics
    keep = {name: spec for name, spec in full.connectors.items() if name in connectors}
    tools = {n: t for n, t in full.tools.items() if t.connector is None or t.connector in keep}
    plans = {
        **full.plans,
        "tiny": c.QuotaPlan(name="tiny", period="day", calls=3),
        "daily": c.QuotaPlan(name="daily", period="day", calls=1000),
        "tiny_slack": c.QuotaPlan(
            name="tiny_slack", period="month", calls=100, per_connector={"slack": 1}
        ),
    }
    return dataclasses.replace(full, connectors=keep, tools=tools, plans=plans)


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


class Sleeps:
    """Records backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, runtime: Any = None) -> None:
        """With the gateway's `runtime`, served as `serve` serves it (`uvicorn_server`)."""
        import uvicorn

        from generator.runtime.app import uvicorn_server

        self.port = free_port()
        config = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", "lifespan": "on"}
        self.server = (
            uvicorn.Server(uvicorn.Config(app, **config))
            if runtime is None
            else uvicorn_server(app, runtime, **config)
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
        self.slack_delay = 0.0  # seconds conversations.list and chat.postMessage take to answer
        self.slack_channels = 1  # channels conversations.list holds (it sends `limit` of them)

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
            if self.slack_delay:
                await anyio.sleep(self.slack_delay)
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
            if self.slack_delay:
                await anyio.sleep(self.slack_delay)
            channels: list[dict[str, Any]] = [
                {
                    "id": "C1",
                    "name": "general",
                    "is_private": False,
                    "topic": {"value": "all hands"},
                }
            ]
            limit = int(request.query_params.get("limit") or 100)
            for i in range(2, min(limit, self.slack_channels) + 1):
                channels.append(
                    {
                        "id": f"C{i:08d}",
                        "name": f"team-{i}",
                        "is_private": False,
                        "is_archived": False,
                        "num_members": i % 300,
                        "topic": {"value": f"Channel {i}: weekly sync, decisions and notes"},
                        "purpose": {"value": "Discuss the project and share its updates."},
                    }
                )
            more = "next" if limit < self.slack_channels else ""
            return JSONResponse(
                {"ok": True, "channels": channels, "response_metadata": {"next_cursor": more}}
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

    memory = MemoryStore(store.engine, settings=gateway.memory, registered=store.user_registered)
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


async def updates_until(sub: Any, wanted: set[str], timeout: float = 5) -> set[str]:
    """The URIs a listen stream announces until it has announced all of `wanted` (the client
    merges an event into one still waiting, so counting them would prove nothing)."""
    got: set[str] = set()
    with anyio.fail_after(timeout):
        async for event in sub:
            got.add(event.uri)
            if wanted <= got:
                break
    return got
