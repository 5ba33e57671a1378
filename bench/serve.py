"""Gateway serving overhead next to the SDK's bare low-level server (the floor), same run.

    .venv/bin/python bench/serve.py                      # defaults: 1000 calls, 5000 filler tools
    .venv/bin/python bench/serve.py --calls 300 --list-reps 100 --modes auto

What runs (servers always in their own process, the client is the SDK's `Client`):

  tools/call   N sequential calls of the native tool `fastn_list_integrations` over stdio and
               over streamable HTTP (stateless, JSON responses) on 127.0.0.1, per protocol era
               (`auto` lands on 2026-07-28, `legacy` is the 2025-11-25 handshake).
               gateway: the full runtime (API key verified against the database on every
               request, tenant snapshot, JSON Schema argument validation, quota, the handler,
               output-schema validation, event + usage recording by the batching recorder,
               SQLite file). floor: a bare `mcp.server.Server` answering the same tool with a
               fixed, identical result (HTTP: static bearer-token verifier, like the SDK's own
               benchmark).
  tools/list   one tenant with 30 visible tools (6 native + 3 memory + 16 of its 4 connectors
               + 5 of one filler connector) while the catalog holds 5,000 extra filler tools.
               Client-observed latency over stdio and HTTP (gateway vs a floor server listing
               the same 30 tools), and server-side time measured in-process: the tools/list
               handler plus the JSON serialisation of its result, which is what the SDK does
               with it.

Prints a table with ratios (gateway / floor) and writes JSON to bench/results/serve.json.
Uses the generated package's catalog when `generated/fastn_gateway` has a serving runtime,
else the test catalog built from manifests/ (tests/runtime/support.py); says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx2  # noqa: E402
import mcp.types as types  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

TOOL = "fastn_list_integrations"
FLOOR_TOKEN = "floor-token"
REAL_CONNECTORS = ("github", "hubspot", "shopify", "slack")


# ============================================================================ catalog


def _generated_ready() -> bool:
    if os.environ.get("BENCH_SOURCE") == "source":
        return False
    rt = GENERATED / "fastn_gateway" / "runtime"
    return all((rt / f).exists() for f in ("server.py", "app.py", "cli.py"))


VISIBLE = 30


def load_gateway(filler: int) -> tuple[Any, str]:
    """(GatewaySpec with `filler` extra tools, source description).

    The filler tools come in connectors sized so that the bench tenant (all real connectors
    plus one filler connector) sees exactly VISIBLE tools."""
    from tests.runtime.support import build_gateway, with_filler_tools

    if _generated_ready():
        sys.path.insert(0, str(GENERATED))
        from fastn_gateway.catalog import GATEWAY  # type: ignore[import-not-found]

        base, source = GATEWAY, "generated/fastn_gateway"
    else:
        base, source = build_gateway(), "tests/runtime/support.py (manifests/)"
    real = sum(1 for t in base.tools.values() if t.connector in (None, *REAL_CONNECTORS))
    return with_filler_tools(base, filler, per_connector=max(1, VISIBLE - real)), source


def runtime_module() -> Any:
    """The runtime package matching `load_gateway` (generated copy or generator/runtime)."""
    if _generated_ready():
        import fastn_gateway.runtime as rt  # type: ignore[import-not-found]

        return rt
    import generator.runtime as rt

    return rt


# ============================================================================ servers


def floor_server(tools: list[types.Tool], output: dict[str, Any]) -> Any:
    from mcp.server import Server

    text = json.dumps(output, separators=(",", ":"))
    schemas = {t.name: t.input_schema for t in tools}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content=output
        )

    return Server(
        "floor",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=schemas.get,
    )


def floor_fixture(gateway: Any, visible: list[str]) -> tuple[list[types.Tool], dict[str, Any]]:
    import importlib

    server_mod = importlib.import_module(runtime_module().__name__ + ".server")
    tools = [server_mod._mcp_tool(gateway.tools[n]) for n in visible]
    output = {
        "integrations": [
            {
                "connector": c,
                "title": gateway.connectors[c].title,
                "state": "active",
                "connected_at": "2026-01-01T00:00:00.000000Z",
                "tool_count": len(gateway.connectors[c].tools),
            }
            for c in sorted(_tenant_connectors(gateway))
        ]
    }
    return tools, output


def _tenant_connectors(gateway: Any) -> list[str]:
    filler = sorted(c for c in gateway.connectors if c.startswith("filler"))[0]
    return [c for c in REAL_CONNECTORS if c in gateway.connectors] + [filler]


def serve(kind: str, transport: str, db: str, port: int, filler: int) -> None:
    """Entry point of the server subprocesses."""
    import logging

    logging.basicConfig(level="WARNING")
    gateway, _ = load_gateway(filler)
    rt = runtime_module()
    import importlib

    if kind == "gateway":
        # exactly what `python -m <package> serve` does (HTTP: stateless, JSON responses)
        cli = importlib.import_module(rt.__name__ + ".cli")
        argv = ["serve", "--transport", transport, "--db", db, "--port", str(port)]
        cli.main(gateway, [*argv, "--stateless"] if transport == "http" else argv)
        return
    visible = json.loads(os.environ["BENCH_VISIBLE"])
    tools, output = floor_fixture(gateway, visible)
    server = floor_server(tools, output)
    if transport == "stdio":
        from mcp.server.stdio import stdio_server

        async def run() -> None:
            async with stdio_server() as (r, w):
                await server.run(r, w, server.create_initialization_options())

        anyio.run(run)
        return
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings

    class Static:
        async def verify_token(self, token: str) -> AccessToken | None:
            if token != FLOOR_TOKEN:
                return None
            return AccessToken(token=token, client_id="floor", scopes=["read"])

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        auth=AuthSettings(
            issuer_url="http://127.0.0.1",  # type: ignore[arg-type]
            resource_server_url=None,
            required_scopes=[],
        ),
        token_verifier=Static(),
    )
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ============================================================================ client side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def find_pid(*markers: str) -> int:
    """The pid of the child process whose command line holds `markers` in order."""
    needle = "\0".join(markers).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    return -1


async def interleaved(
    clients: dict[str, Client], n: int, rounds: int, op: str, pids: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Run `n` sequential requests per client in `rounds` alternating batches, so both
    servers see the same machine load. calls/s is the median over rounds. CPU time per call
    of the server process and of this (client) process is measured too: unlike wall-clock
    rates it barely depends on what else the machine is doing."""
    lat: dict[str, list[float]] = {k: [] for k in clients}
    rates: dict[str, list[float]] = {k: [] for k in clients}
    server_cpu: dict[str, float] = {k: 0.0 for k in clients}
    client_cpu: dict[str, float] = {k: 0.0 for k in clients}
    count: dict[str, int] = {}
    for c in clients.values():  # warm-up: schemas cached, validators built, pools open
        await c.list_tools()
        for _ in range(30):
            await c.call_tool(TOOL, {})
    per = max(1, n // rounds)
    order = list(clients)
    for i in range(rounds):
        for kind in order if i % 2 == 0 else order[::-1]:
            c = clients[kind]
            cpu0, own0 = proc_cpu(pids[kind]), time.process_time()
            t0 = time.perf_counter()
            for _ in range(per):
                s = time.perf_counter()
                if op == "call":
                    r = await c.call_tool(TOOL, {})
                    assert not r.is_error and r.structured_content is not None
                else:
                    res = await c.list_tools(cache_mode="bypass")
                    count[kind] = len(res.tools)
                lat[kind].append(time.perf_counter() - s)
            rates[kind].append(per / (time.perf_counter() - t0))
            server_cpu[kind] += proc_cpu(pids[kind]) - cpu0
            client_cpu[kind] += time.process_time() - own0
    out: dict[str, dict[str, float]] = {}
    for kind in clients:
        total = per * rounds
        row: dict[str, float] = {
            "calls_per_s": round(statistics.median(rates[kind]), 1),
            "p50_ms": round(statistics.median(lat[kind]) * 1000, 3),
            "p99_ms": round(pct(lat[kind], 0.99) * 1000, 3),
            "server_cpu_us": round(server_cpu[kind] / total * 1e6, 1),
            "client_cpu_us": round(client_cpu[kind] / total * 1e6, 1),
        }
        if op == "list":
            row["tools"] = count[kind]
            del row["calls_per_s"]
        out[kind] = row
    return out


class HttpServer:
    def __init__(self, kind: str, db: str, filler: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_serve", kind, "http", db, str(self.port), str(filler)],
            env=env,
        )
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{kind} HTTP server did not start") from None
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def server_side_list(
    gateway: Any, db: str, key: str, visible: list[str], reps: int
) -> dict[str, Any]:
    """Handler + serialisation time of tools/list, in-process, gateway vs floor."""
    import importlib

    from mcp.server import ServerRequestContext

    rt = runtime_module()
    server_mod = importlib.import_module(rt.__name__ + ".server")
    runtime = server_mod.GatewayRuntime.open(gateway, db, environ=os.environ)
    gw_server = runtime.build_server(api_key=key)
    tools, output = floor_fixture(gateway, visible)
    fl_server = floor_server(tools, output)

    def ctx() -> Any:
        return ServerRequestContext(
            session=None,  # type: ignore[arg-type]
            lifespan_context={},
            protocol_version="2026-07-28",
            method="tools/list",
        )

    async def measure(server: Any) -> dict[str, float]:
        handler = server.get_request_handler("tools/list").handler
        lat: list[float] = []
        count = 0
        for i in range(reps + 20):
            s = time.perf_counter()
            res = await handler(ctx(), None)
            res.model_dump(by_alias=True, mode="json", exclude_none=True)
            if i >= 20:
                lat.append(time.perf_counter() - s)
            count = len(res.tools)
        return {
            "tools": count,
            "p50_ms": round(statistics.median(lat) * 1000, 3),
            "p99_ms": round(pct(lat, 0.99) * 1000, 3),
        }

    async def both() -> dict[str, Any]:
        try:
            return {"gateway": await measure(gw_server), "floor": await measure(fl_server)}
        finally:
            await runtime.aclose()

    out: dict[str, Any] = anyio.run(both)
    runtime.store.dispose()
    out["catalog_tools"] = len(gateway.tools)
    return out


def setup_db(gateway: Any, db: str) -> tuple[str, list[str]]:
    import importlib

    server_mod = importlib.import_module(runtime_module().__name__ + ".server")
    store = server_mod.open_store(gateway, db, environ=os.environ)
    tenant = store.create_tenant("bench")
    for c in _tenant_connectors(gateway):
        fields = {f.name: f"bench-{f.name}" for f in gateway.connectors[c].auth.fields}
        store.connect(tenant.id, c, fields)
    store.register_user(tenant.id, "bench-user")
    key = store.issue_key(tenant.id, user="bench-user").token
    snap = store.snapshot(tenant.id)
    index = server_mod.ToolIndex(gateway)
    visible = list(index.listing(snap.active, frozenset({"read", "write"})).names)
    store.dispose()
    return key, visible


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    gateway, source = load_gateway(args.tools)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    db = str(tmp / "gateway.db")
    key, visible = setup_db(gateway, db)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(GENERATED)])}
    env["BENCH_VISIBLE"] = json.dumps(visible)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "catalog": source,
        "catalog_tools": len(gateway.tools),
        "visible_tools": len(visible),
        "calls": args.calls,
        "load_average_at_start": os.getloadavg(),
        "rows": [],
    }
    print(
        f"# catalog: {source}, {len(gateway.tools)} tools; tenant sees {len(visible)}", flush=True
    )

    def row(**kw: Any) -> None:
        report["rows"].append(kw)
        print(json.dumps(kw), flush=True)

    # ---- stdio
    for mode in modes:
        async with AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for kind in ("floor", "gateway"):
                params = StdioServerParameters(
                    command=sys.executable,
                    args=[__file__, "_serve", kind, "stdio", db, "0", str(args.tools)],
                    env={**env, "FASTN_GATEWAY_API_KEY": key},
                )
                clients[kind] = await stack.enter_async_context(Client(params, mode=mode))
            pids = {kind: find_pid("_serve", kind, "stdio", db) for kind in clients}
            calls = await interleaved(clients, args.calls, args.rounds, "call", pids)
            lists = await interleaved(clients, args.list_reps, args.rounds, "list", pids)
        for kind in clients:
            row(transport="stdio", mode=mode, server=kind, bench="tools/call", **calls[kind])
            row(transport="stdio", mode=mode, server=kind, bench="tools/list", **lists[kind])

    # ---- HTTP
    servers = {kind: HttpServer(kind, db, args.tools, env) for kind in ("floor", "gateway")}
    try:
        for mode in modes:
            async with AsyncExitStack() as stack:
                clients = {}
                for kind, srv in servers.items():
                    token = FLOOR_TOKEN if kind == "floor" else key
                    h = await stack.enter_async_context(
                        httpx2.AsyncClient(
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=httpx2.Timeout(30, read=120),
                        )
                    )
                    clients[kind] = await stack.enter_async_context(
                        Client(streamable_http_client(srv.url, http_client=h), mode=mode)
                    )
                pids = {kind: srv.proc.pid for kind, srv in servers.items()}
                calls = await interleaved(clients, args.calls, args.rounds, "call", pids)
                lists = await interleaved(clients, args.list_reps, args.rounds, "list", pids)
            for kind in clients:
                row(transport="http", mode=mode, server=kind, bench="tools/call", **calls[kind])
                row(transport="http", mode=mode, server=kind, bench="tools/list", **lists[kind])
    finally:
        for srv in servers.values():
            srv.close()

    report["server_side_list"] = await anyio.to_thread.run_sync(
        lambda: server_side_list(gateway, db, key, visible, args.list_reps)
    )
    print(json.dumps({"server_side_list": report["server_side_list"]}), flush=True)
    return report


def render(report: dict[str, Any]) -> str:
    rows = report["rows"]

    def find(**kw: Any) -> dict[str, Any]:
        return next(r for r in rows if all(r[k] == v for k, v in kw.items()))

    lines = [
        "CPU model: sequential calls spend client CPU + server CPU per call, so on an idle "
        "machine throughput(gateway)/throughput(floor) ~ (c + f) / (c + g); CPU time is "
        "measured from /proc and barely depends on the machine's load, unlike calls/s.",
        "",
        f"Python {report['python']}, {report['cpus']} CPUs; catalog {report['catalog_tools']} "
        f"tools ({report['catalog']}); tenant sees {report['visible_tools']}; "
        f"{report['calls']} sequential calls per server in alternating rounds; load average "
        f"at start {report['load_average_at_start'][0]:.2f}",
        "",
        "| transport | era | bench | floor | gateway | gateway / floor |",
        "|---|---|---|---|---|---|",
    ]
    seen = sorted({(r["transport"], r["mode"]) for r in rows})
    for transport, mode in seen:
        f = find(transport=transport, mode=mode, server="floor", bench="tools/call")
        g = find(transport=transport, mode=mode, server="gateway", bench="tools/call")
        lines.append(
            f"| {transport} | {mode} | tools/call calls/s | {f['calls_per_s']:.0f} | "
            f"{g['calls_per_s']:.0f} | {g['calls_per_s'] / f['calls_per_s']:.2f}x |"
        )
        lines.append(
            f"| {transport} | {mode} | tools/call p50 / p99 ms | {f['p50_ms']:.2f} / "
            f"{f['p99_ms']:.2f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} | "
            f"{g['p50_ms'] / f['p50_ms']:.2f}x p50 |"
        )
        cpu_ratio = (f["client_cpu_us"] + f["server_cpu_us"]) / (
            g["client_cpu_us"] + g["server_cpu_us"]
        )
        lines.append(
            f"| {transport} | {mode} | tools/call CPU us per call, server + client | "
            f"{f['server_cpu_us']:.0f} + {f['client_cpu_us']:.0f} | "
            f"{g['server_cpu_us']:.0f} + {g['client_cpu_us']:.0f} | {cpu_ratio:.2f}x (CPU model) |"
        )
        fl = find(transport=transport, mode=mode, server="floor", bench="tools/list")
        gl = find(transport=transport, mode=mode, server="gateway", bench="tools/list")
        lines.append(
            f"| {transport} | {mode} | tools/list p50 / p99 ms ({gl['tools']} tools) | "
            f"{fl['p50_ms']:.2f} / {fl['p99_ms']:.2f} | {gl['p50_ms']:.2f} / {gl['p99_ms']:.2f} | "
            f"{gl['p50_ms'] / fl['p50_ms']:.2f}x p50 |"
        )
    s = report["server_side_list"]
    lines += [
        "",
        f"tools/list server-side (handler + result serialisation, in-process), catalog "
        f"{s['catalog_tools']} tools, tenant sees {s['gateway']['tools']}: gateway p50 "
        f"{s['gateway']['p50_ms']:.3f} ms / p99 {s['gateway']['p99_ms']:.3f} ms; floor p50 "
        f"{s['floor']['p50_ms']:.3f} ms / p99 {s['floor']['p99_ms']:.3f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        _, _, kind, transport, db, port, filler = sys.argv
        serve(kind, transport, db, int(port), int(filler))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--list-reps", type=int, default=200)
    ap.add_argument("--tools", type=int, default=5000, help="filler tools added to the catalog")
    ap.add_argument("--modes", default="auto,legacy")
    ap.add_argument("--rounds", type=int, default=6, help="alternating floor/gateway batches")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "serve.json"))
    ap.add_argument(
        "--source",
        choices=["auto", "generated", "source"],
        default="auto",
        help="runtime + catalog: the generated package (auto when built) or generator/runtime "
        "with the catalog of tests/runtime/support.py",
    )
    args = ap.parse_args()
    if args.source == "source":
        os.environ["BENCH_SOURCE"] = "source"
    elif args.source == "generated" and not _generated_ready():
        ap.error("generated/fastn_gateway has no serving runtime: run gen build first")
    report = anyio.run(run_all, args)
    table = render(report)
    print()
    print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["table"] = table
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
