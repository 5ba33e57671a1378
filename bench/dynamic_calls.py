"""Dynamic-tool calls/s: the gateway against a local upstream, next to two baselines.

    .venv/bin/python bench/dynamic_calls.py                    # defaults below
    .venv/bin/python bench/dynamic_calls.py --calls 500 --rounds 1 --quick
    .venv/bin/python bench/dynamic_calls.py --fastmcp-python /tmp/fastmcp-venv/bin/python

Every mode performs the same upstream request: Slack's `conversations.list?limit=5` with a
bearer token, answered by the Slack stand-in of tests/runtime/upstreams.py (Starlette + uvicorn)
running in its OWN process, so the upstream never competes with the client for the GIL.

Modes (all in the same run, rounds interleaved):

  direct     the same HTTP request with one pooled httpx2.AsyncClient, JSON decoded, ok checked
  executor   `ConnectorExecutor.call(slack_list_channels, {"limit": 5})`: templates, auth,
             response shaping, next_cursor and output-schema validation, no MCP
  gateway    the generated gateway's MCP server in-process: the SDK's in-memory `Client`
             calling `slack_list_channels` through `GatewayRuntime.build_server()` (API key
             verification, tenant snapshot, argument validation, quota, executor, event and
             usage recording to a SQLite file, structured-result validation by the client)
  fastmcp    FastMCP 4.1.2 `FastMCP.from_openapi` over an OpenAPI document of the same
             endpoint, called in-process with `fastmcp.Client(server)`; it runs in a separate
             virtual environment (--fastmcp-python; default /tmp/fastmcp-venv/bin/python) so
             it cannot disturb this project's pinned mcp. Create it with
               python3 -m venv /tmp/fastmcp-venv
               /tmp/fastmcp-venv/bin/pip install fastmcp==4.1.2
             Skipped (and said so) when that interpreter is missing.

Each mode runs sequentially (concurrency 1: latency percentiles) and with 8 concurrent callers
(throughput). Reported per mode: calls/s, p50/p95 latency, and the CPU time the calling
process spent per call (time.process_time: the upstream process is excluded; the gateway's
recorder thread is included). Wall-clock numbers move with other load on the machine; the CPU
figure much less, so it is the one to compare on a busy host. Then the p50 overhead over
`direct` and the gateway's calls/s relative to FastMCP. Prints a Markdown table and writes JSON to
bench/results/dynamic_calls.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "xoxb-bench-tenant-token"
QUERY = {"limit": "5", "types": "public_channel", "exclude_archived": "true"}
DEFAULT_FASTMCP = "/tmp/fastmcp-venv/bin/python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- measurement


async def measure(
    call: Callable[[], Awaitable[None]], *, calls: int, warmup: int, concurrency: int
) -> dict[str, Any]:
    """Run `call` `calls` times with `concurrency` callers; latency percentiles and calls/s."""
    for _ in range(warmup):
        await call()
    latencies: list[float] = []
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    latencies.sort()
    return {
        "calls": calls,
        "concurrency": concurrency,
        "seconds": round(elapsed, 4),
        "calls_per_s": round(calls / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 3),
        "cpu_us_per_call": round(cpu / calls * 1e6, 1),
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    channel = {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "is_private": {"type": "boolean"},
            "is_archived": {"type": "boolean"},
            "num_members": {"type": "integer"},
            "topic": {"type": "object", "properties": {"value": {"type": "string"}}},
            "purpose": {"type": "object", "properties": {"value": {"type": "string"}}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Slack (stand-in)", "version": "1.0.0"},
        "servers": [{"url": base_url}],
        "paths": {
            "/conversations.list": {
                "get": {
                    "operationId": "slack_list_channels",
                    "summary": "List the Slack channels the bot can see.",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "types", "in": "query", "schema": {"type": "string"}},
                        {"name": "exclude_archived", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "Channels",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok"],
                                        "properties": {
                                            "ok": {"type": "boolean"},
                                            "channels": {"type": "array", "items": channel},
                                            "response_metadata": {
                                                "type": "object",
                                                "properties": {"next_cursor": {"type": "string"}},
                                            },
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            }
        },
    }


# ------------------------------------------------------------------------------ upstream


def serve_upstream(port: int) -> None:
    """Child process: the Slack stand-in, recording nothing."""
    sys.path.insert(0, str(REPO / "tests" / "runtime"))
    import uvicorn
    from upstreams import SlackUpstream

    upstream = SlackUpstream({TOKEN: "TBENCH"}, channels=5, record=False)
    uvicorn.run(upstream.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class UpstreamProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-upstream", str(self.port)], cwd=REPO
        )
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("the upstream did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------------- modes


def _import_gateway() -> tuple[Any, Any, Any, Any, str]:
    """(GATEWAY, executor module, server module or None, CallContext, label)."""
    generated = REPO / "generated"
    sys.path.insert(0, str(generated))
    sys.path.insert(0, str(REPO))
    from fastn_gateway.catalog import GATEWAY  # type: ignore[import-not-found]

    try:
        from fastn_gateway.runtime import executor as ex_mod  # type: ignore[import-not-found]
        from fastn_gateway.runtime import server as srv_mod  # type: ignore[import-not-found]

        label = "generated/fastn_gateway (runtime copied by gen build)"
    except ImportError:
        from generator.runtime import executor as ex_mod
        from generator.runtime import server as srv_mod

        label = "generator/runtime with the generated catalog (generated runtime has no server)"
    return GATEWAY, ex_mod, srv_mod, ex_mod.CallContext, label


async def run_direct(base: str, calls: int, warmup: int, concurrency: int) -> dict[str, Any]:
    import httpx2

    async with httpx2.AsyncClient() as client:
        url = base + "/api/conversations.list"
        headers = {"Authorization": "Bearer " + TOKEN, "Accept": "application/json"}

        async def call() -> None:
            response = await client.get(url, params=QUERY, headers=headers)
            body = response.json()
            assert response.status_code == 200 and body["ok"] is True

        return await measure(call, calls=calls, warmup=warmup, concurrency=concurrency)


async def run_executor(base: str, calls: int, warmup: int, concurrency: int) -> dict[str, Any]:
    gateway, ex_mod, _srv, call_context, _label = _import_gateway()
    executor = ex_mod.ConnectorExecutor(gateway, base_urls={"slack": base + "/api"})
    tool = gateway.tools["slack_list_channels"]
    creds = {"bot_token": TOKEN}
    ctx = call_context(tenant_id="bench", user_id=None)

    async def call() -> None:
        result = await executor.call(tool, {"limit": 5}, credentials=creds, ctx=ctx)
        assert len(result.output["channels"]) == 5

    try:
        return await measure(call, calls=calls, warmup=warmup, concurrency=concurrency)
    finally:
        await executor.aclose()


async def run_gateway(base: str, calls: int, warmup: int, concurrency: int) -> dict[str, Any]:
    from mcp import Client

    gateway, _ex, srv_mod, _ctx, _label = _import_gateway()
    with tempfile.TemporaryDirectory() as tmp:
        environ = {
            **os.environ,
            f"{gateway.import_name.upper()}_BASE_URL_SLACK": base + "/api",
        }
        runtime = srv_mod.GatewayRuntime.open(
            gateway, str(Path(tmp) / "gateway.db"), environ=environ
        )
        try:
            store = runtime.store
            plans = [name for name, plan in gateway.plans.items() if plan.calls is None]
            tenant = store.create_tenant("bench", plan=plans[0] if plans else None)
            store.connect(tenant.id, "slack", {"bot_token": TOKEN})
            key = store.issue_key(tenant.id, scopes=("read", "write"))
            server = runtime.build_server(api_key=key.token)
            async with Client(server) as client:
                await client.list_tools()

                async def call() -> None:
                    result = await client.call_tool("slack_list_channels", {"limit": 5})
                    assert not result.is_error, result.content
                    assert len(result.structured_content["channels"]) == 5

                return await measure(call, calls=calls, warmup=warmup, concurrency=concurrency)
        finally:
            await runtime.aclose()


async def run_fastmcp_inline(
    base: str, calls: int, warmup: int, concurrency: int
) -> dict[str, Any]:
    """Runs inside the FastMCP virtual environment (see `--fastmcp-driver`)."""
    import httpx2
    from fastmcp import Client, FastMCP

    client = httpx2.AsyncClient(
        base_url=base + "/api", headers={"Authorization": "Bearer " + TOKEN}, timeout=30
    )
    server = FastMCP.from_openapi(openapi_document(base + "/api"), client=client, name="slack")
    async with Client(server) as mcp_client:
        await mcp_client.list_tools()

        async def call() -> None:
            result = await mcp_client.call_tool(
                "slack_list_channels",
                {"limit": 5, "types": "public_channel", "exclude_archived": True},
            )
            assert not result.is_error
            assert len(result.structured_content["channels"]) == 5

        out = await measure(call, calls=calls, warmup=warmup, concurrency=concurrency)
    await client.aclose()
    return out


def run_fastmcp(
    python: str, base: str, calls: int, warmup: int, concurrency: int
) -> dict[str, Any] | None:
    if not Path(python).exists():
        return None
    env = {**os.environ, "FASTMCP_LOG_LEVEL": "WARNING", "FASTMCP_SHOW_CLI_BANNER": "false"}
    done = subprocess.run(
        [python, __file__, "--fastmcp-driver", base, str(calls), str(warmup), str(concurrency)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError("FastMCP driver failed:\n" + done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def fastmcp_version(python: str) -> str | None:
    if not Path(python).exists():
        return None
    done = subprocess.run(
        [python, "-c", "import fastmcp, mcp.server; print(fastmcp.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


# ---------------------------------------------------------------------------------- main


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, the median over rounds."""
    out = dict(rows[0])
    for key in ("seconds", "calls_per_s", "p50_ms", "p95_ms", "cpu_us_per_call"):
        out[key] = round(statistics.median(r[key] for r in rows), 3)
    out["rounds"] = len(rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--fastmcp-python", default=DEFAULT_FASTMCP)
    parser.add_argument("--quick", action="store_true", help="500 calls, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup, args.rounds = 500, 50, 1
    levels = [int(x) for x in args.concurrency.split(",") if x]

    load_before = os.getloadavg()
    upstream = UpstreamProcess()
    gateway_label = _import_gateway()[4]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for round_no in range(args.rounds):
            for level in levels:
                for mode in ("direct", "executor", "gateway", "fastmcp"):
                    if mode == "fastmcp":
                        row = run_fastmcp(
                            args.fastmcp_python, upstream.url, args.calls, args.warmup, level
                        )
                        if row is None:
                            continue
                    else:
                        runner = {
                            "direct": run_direct,
                            "executor": run_executor,
                            "gateway": run_gateway,
                        }[mode]
                        row = asyncio.run(runner(upstream.url, args.calls, args.warmup, level))
                    row["mode"] = mode
                    results.setdefault((mode, level), []).append(row)
                    print(
                        f"round {round_no + 1} c={level} {mode:9s} {row['calls_per_s']:8.1f} "
                        f"calls/s  p50 {row['p50_ms']:.3f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        upstream.close()

    load_after = os.getloadavg()
    rows = {key: _median_row(value) for key, value in results.items()}
    lines = [
        f"Dynamic-tool calls, {args.calls} calls x {args.rounds} round(s) per cell "
        "(median of rounds), Slack stand-in upstream in its own process; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after.",
        "",
        "| mode | concurrency | calls/s | p50 ms | p95 ms | p50 overhead vs direct "
        "| client CPU µs/call | CPU overhead vs direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        direct = rows.get(("direct", level))
        for mode in ("direct", "executor", "gateway", "fastmcp"):
            row = rows.get((mode, level))
            if row is None:
                continue
            overhead = cpu_over = ""
            if direct and mode != "direct":
                overhead = f"{row['p50_ms'] - direct['p50_ms']:+.3f} ms"
                cpu_over = f"{row['cpu_us_per_call'] - direct['cpu_us_per_call']:+.0f} µs"
            lines.append(
                f"| {mode} | {level} | {row['calls_per_s']:.0f} | {row['p50_ms']:.3f} | "
                f"{row['p95_ms']:.3f} | {overhead} | {row['cpu_us_per_call']:.0f} | {cpu_over} |"
            )
    summary: dict[str, Any] = {}
    lines.append("")
    for level in levels:
        gw, fm = rows.get(("gateway", level)), rows.get(("fastmcp", level))
        if gw and fm:
            ratio = gw["calls_per_s"] / fm["calls_per_s"]
            summary[f"gateway_vs_fastmcp_c{level}"] = round(ratio, 2)
            lines.append(f"- c={level}: gateway serves {ratio:.2f}x FastMCP's calls/s")
            cpu_ratio = fm["cpu_us_per_call"] / gw["cpu_us_per_call"]
            summary[f"fastmcp_cpu_over_gateway_cpu_c{level}"] = round(cpu_ratio, 2)
            lines.append(
                f"- c={level}: FastMCP spends {cpu_ratio:.2f}x the gateway's client-process CPU "
                "per call"
            )
        direct, gw = rows.get(("direct", level)), rows.get(("gateway", level))
        if direct and gw:
            over = gw["p50_ms"] - direct["p50_ms"]
            summary[f"gateway_p50_overhead_ms_c{level}"] = round(over, 3)
            lines.append(f"- c={level}: gateway p50 overhead over the direct request {over:.3f} ms")
    if ("fastmcp", levels[0]) not in rows:
        lines.append(f"- FastMCP skipped: {args.fastmcp_python} not found")
    text = "\n".join(lines)
    print(text)

    RESULTS.mkdir(exist_ok=True)
    payload = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "gateway": gateway_label,
        "fastmcp": fastmcp_version(args.fastmcp_python),
        "calls": args.calls,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "rows": list(rows.values()),
        "raw": {f"{m}/c{c}": v for (m, c), v in results.items()},
        "summary": summary,
    }
    (RESULTS / "dynamic_calls.json").write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "--fastmcp-driver":
        _, _, base_url, n, warm, conc = sys.argv
        row = asyncio.run(run_fastmcp_inline(base_url, int(n), int(warm), int(conc)))
        print(json.dumps(row))
    else:
        raise SystemExit(main())
