"""Transports: streamable HTTP (a Starlette app) and stdio.

HTTP routes:
    /mcp        streamable HTTP, both protocol revisions the SDK speaks; bearer API key
                required (missing, unknown, expired or revoked -> 401 before any handler);
                stateless: POST only (GET, DELETE -> 405), there is no stream or session
    /register   POST {"user": "<external id>"}: registers an end user in the key's tenant
                (a host application key, or a write key not bound to a user); idempotent;
                the same Host/Origin/Content-Type checks as /mcp
    /healthz    GET: 200 {"status": "ok"} when the database answers and takes the records,
                else 503 (with the reason and the backlog while records cannot be written)

The app's lifespan runs the SDK session manager, the connection-change watcher, and on
shutdown flushes every buffered event and usage record (`GatewayRuntime.aclose`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Self, cast

import anyio
import mcp.types as types
import sqlalchemy as sa
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.settings import AuthSettings
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import DEFAULT_MAX_SESSIONS
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import GatewayTokenVerifier, principal_from_access_token
from .errors import FORBIDDEN, INVALID_ARGUMENTS, RATE_LIMITED, UNAUTHENTICATED, GatewayError
from .fastschema import has_surrogate
from .server import GatewayRuntime, UserSource
from .store import StoreError, iso

logger = logging.getLogger(__name__)

MAX_REGISTER_BODY = 16 * 1024
# The loopback names, with any port and with none: clients leave the port out on port 80 (a
# Host, an Origin), and a name that resolves to this machine only is as safe without one.
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
LOCAL_HOSTS = [form for name in _LOOPBACK for form in (name, f"{name}:*")]
LOCAL_ORIGINS = [f"http://{host}" for host in LOCAL_HOSTS]


def _error(status: int, err: GatewayError, **headers: str) -> JSONResponse:
    return JSONResponse(err.envelope(), status_code=status, headers=headers or None)


def transport_security(
    host: str, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]
) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: on for loopback (SDK default) and whenever hosts are given."""
    if not allowed_hosts and not allowed_origins:
        if host in ("127.0.0.1", "localhost", "::1"):
            return TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=list(LOCAL_HOSTS),
                allowed_origins=list(LOCAL_ORIGINS),
            )
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*LOCAL_HOSTS, *allowed_hosts],
        allowed_origins=[*LOCAL_ORIGINS, *allowed_origins],
    )


class TransportRefusals:
    """Gives the SDK's plain-text transport refusals (Host, Origin, Content-Type, body size)
    the gateway's JSON error envelope with the reason, and says in the log, once per host
    name, which option admits a refused Host: the operator needs it, and without it the
    client only shows "Invalid Host header"."""

    MAX_NAMED = 64  # host names are the clients' text: remember a bounded number
    # The SDK's refusals, by status and exact body: anything else passes through untouched.
    TOO_MANY_SESSIONS: Final = (
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Too many open sessions"}}'
    )
    PLAIN: Final = {
        (421, b"Invalid Host header"),
        (403, b"Invalid Origin header"),
        (400, b"Invalid Content-Type header"),
        (413, b"Request body too large"),
        (503, TOO_MANY_SESSIONS),
    }

    HELD: Final = frozenset(status for status, _ in PLAIN)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.named: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Host names (and an Origin's scheme and host) are case-insensitive: the SDK compares
        # them as written, so `LOCALHOST` was refused where `localhost` is served.
        raw: list[tuple[bytes, bytes]] = scope.get("headers") or []
        if any(k in (b"host", b"origin") and v != v.lower() for k, v in raw):
            lowered = [(k, v.lower() if k in (b"host", b"origin") else v) for k, v in raw]
            scope = {**scope, "headers": lowered}
        held: Message | None = None
        body = bytearray()

        async def watch(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] in self.HELD:
                held = message  # wait for the body: is it one of the SDK's refusals?
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            status: int = held["status"]
            if (status, bytes(body)) not in self.PLAIN:
                await send(held)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            await _error(status, self._explain(status, Headers(scope=scope)))(scope, receive, send)

        await self.app(scope, receive, watch)

    def _explain(self, status: int, headers: Headers) -> GatewayError:
        if status == 421:
            host = headers.get("host", "")[:200]
            self._log_host(host)
            return GatewayError(
                FORBIDDEN,
                f"This gateway does not answer to the host name {host!r} (DNS-rebinding "
                "protection). If it should, its operator can start it with --allowed-host.",
            )
        if status == 403:
            origin = headers.get("origin", "")[:200]
            return GatewayError(
                FORBIDDEN,
                f"Requests from the web origin {origin!r} are refused (DNS-rebinding "
                "protection). If it should be admitted, the gateway's operator can start it "
                "with --allowed-origin.",
            )
        if status == 400:
            return GatewayError(
                INVALID_ARGUMENTS,
                "Send the request body as JSON, with Content-Type: application/json.",
            )
        if status == 503:
            return GatewayError(
                RATE_LIMITED,
                f"Too many open sessions: one API key may hold {MAX_SESSIONS_PER_KEY}, the "
                f"gateway {SDK_MAX_SESSIONS:,}. End "
                "sessions that are no longer used (HTTP DELETE with their Mcp-Session-Id), or "
                "retry once idle ones have expired.",
                retryable=True,
            )
        return GatewayError(
            INVALID_ARGUMENTS, "The request body is larger than the gateway accepts."
        )

    def _log_host(self, host: str) -> None:
        if host in self.named or len(self.named) >= self.MAX_NAMED:
            return
        self.named.add(host)
        logger.warning(
            "refused requests for Host %r (DNS-rebinding protection): if clients reach the "
            "gateway under that name, start it with --allowed-host %s",
            host,
            host,
        )


# Open streamable HTTP sessions one API key may hold. The SDK's own limit (10,000) is for the
# whole server, and a session that is opened and never used again lives until its idle
# timeout (30 minutes): without this, one key could fill the server and lock every tenant out.
MAX_SESSIONS_PER_KEY: Final = 100
SDK_MAX_SESSIONS: Final = DEFAULT_MAX_SESSIONS  # the same refusal, for the whole server


def _limit_sessions_per_key(manager: Any, limit: int) -> None:
    """Refuse a new session to a key that holds `limit` open ones, as the SDK refuses one over
    its own limit (503, which `TransportRefusals` explains). Wraps the session manager's
    admission, a private method of mcp 2.x (a test pins the behaviour)."""
    admit = manager._admit_session

    def admit_for_key(requestor: Any) -> Any:
        if requestor is not None:
            key = requestor["client_id"]
            held = sum(1 for owner in manager._session_owners.values() if owner["client_id"] == key)
            if held >= limit:
                logger.warning("refused a new session: key %s holds %d open sessions", key, held)
                return None
        return admit(requestor)

    manager._admit_session = admit_for_key


def _post_only(app: ASGIApp, guard: TransportSecurityMiddleware) -> ASGIApp:
    """`/mcp` of a stateless gateway (inside the bearer check): POST only, as the 2026-07-28
    revision's requests are. The SDK opened a stream for a handshake-era GET that nothing
    could ever be sent on, held open as long as the client liked (one key held 400), and
    had no session to end on DELETE: both get 405 with `Allow: POST`, which the spec gives
    a server that offers no stream. The Host and Origin checks come first, as for POST."""

    async def post_only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "POST":
            await app(scope, receive, send)
            return
        refused = await guard.validate_request(Request(scope, receive))
        response = refused or Response(status_code=405, headers={"Allow": "POST"})
        await response(scope, receive, send)

    return post_only


def _invalid_request(body: bytes) -> str | None:
    """Why a POSTed body that is JSON is not one JSON-RPC message MCP accepts, or None (also
    for a body that is not JSON, which the SDK answers with -32700)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list):
        return "a batch (a JSON array) is not accepted: send one message per request"
    try:
        types.jsonrpc_message_adapter.validate_python(data, by_name=False)
    except ValidationError:
        return "the body is not a JSON-RPC request, notification or response"
    fields = cast("dict[str, Any]", data)  # validated: a JSON object
    if "method" in fields and "id" in fields and type(fields["id"]) not in (str, int):
        return "a request's id must be a string or an integer"
    return None


def _answer_invalid_requests(app: ASGIApp, guard: TransportSecurityMiddleware) -> ASGIApp:
    """A POSTed body that is JSON but no message gets JSON-RPC's -32600 (Invalid Request) with
    id null and the reason, as the stdio transport answers such a line. The SDK read a request
    whose id was an object, a float or null as a notification (pydantic drops the id) and
    answered 202 with nothing to follow, so the client waited for ever; other bodies got
    -32602 (Invalid params) and pydantic's validation report, over a kilobyte of it. Runs
    behind the SDK's body size limit, which hands the whole body on as one message; the Host,
    Origin and Content-Type checks still come first."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        first = await receive()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return first

        why = _invalid_request(first.get("body", b"")) if first["type"] == "http.request" else None
        if why is None or await guard.validate_request(Request(scope), is_post=True) is not None:
            await app(scope, replay, send)
            return
        error = types.ErrorData(code=types.INVALID_REQUEST, message=f"Invalid Request: {why}")
        answer = types.JSONRPCError(jsonrpc="2.0", id=None, error=error)
        await JSONResponse(
            answer.model_dump(mode="json", by_alias=True, exclude_unset=True), status_code=400
        )(scope, replay, send)

    return answer


def build_http_app(
    runtime: GatewayRuntime,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    stateless: bool = False,
    json_response: bool = True,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    watch_interval: float = 2.0,
) -> Starlette:
    server = runtime.build_server(list_changed=not stateless)
    verifier = GatewayTokenVerifier(runtime.verifier)
    security = transport_security(host, allowed_hosts, allowed_origins)
    if security is None:
        logger.warning(
            "serving on %s without --allowed-host: DNS-rebinding protection is off; "
            "pass the public host name(s) clients use",
            host,
        )

    guard = TransportSecurityMiddleware(security)

    async def register(request: Request) -> Response:
        # The same Host, Origin and JSON Content-Type checks as /mcp (DNS rebinding).
        refused = await guard.validate_request(request, is_post=True)
        if refused is not None:
            return refused
        user = request.scope.get("user")
        principal = (
            principal_from_access_token(user.access_token)
            if isinstance(user, AuthenticatedUser)
            else None
        )
        if principal is None:
            return _error(
                401,
                GatewayError(UNAUTHENTICATED, "A valid API key is required."),
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        # A key bound to one user acts as that user, a host application's key included: it
        # may not add others to the tenant.
        if principal.user is not None or not (
            principal.can_assert_user or principal.has_scope("write")
        ):
            return _error(
                403,
                GatewayError(
                    FORBIDDEN,
                    "Registering users needs a key that is not bound to a user: a host "
                    "application key, or a write key.",
                ),
            )
        body = await request.body()
        external: Any = None
        if len(body) <= MAX_REGISTER_BODY:
            try:
                data = json.loads(body or b"null")
            except ValueError:
                data = None
            if isinstance(data, dict):
                fields = cast("dict[str, Any]", data)  # a JSON object: its keys are strings
                external = fields.get("user", fields.get("external_id"))
        if (
            not isinstance(external, str)
            or not external.strip()
            or len(external) > 200
            or has_surrogate(external)
        ):
            return _error(
                400,
                GatewayError(
                    INVALID_ARGUMENTS,
                    'Send a JSON body {"user": "<id of the user in your application>"} '
                    "(1-200 characters).",
                ),
            )
        try:
            record, created = await runtime.run_db(
                runtime.store.register_user, principal.tenant_id, external
            )
        except StoreError as exc:
            return _error(400, GatewayError(INVALID_ARGUMENTS, str(exc)))
        return JSONResponse(
            {
                "user": record.external_id,
                "id": record.id,
                "tenant": principal.tenant_name,
                "created_at": iso(record.created_at),
                "created": created,
            },
            status_code=201 if created else 200,
        )

    async def healthz(request: Request) -> Response:
        def ping() -> None:
            with runtime.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        try:
            await runtime.run_db(ping)
        except Exception:
            logger.exception("health check: database unavailable")
            return JSONResponse({"status": "unavailable"}, status_code=503)
        # A database that answers but takes no writes (read-only, a full disk) loses every
        # call's record: the backlog grows in memory until writing works again.
        failure = runtime.recorder.failure()
        if failure is not None:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "reason": f"records cannot be written: {failure.reason}",
                    "unwritten_records": failure.unwritten,
                    "failing_seconds": round(failure.seconds),
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "version": runtime.gateway.version})

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        json_response=json_response,
        host=host,
        transport_security=security,
        auth=AuthSettings(
            issuer_url=f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",  # type: ignore[arg-type]
            resource_server_url=None,
            required_scopes=[],
        ),
        token_verifier=verifier,
        custom_starlette_routes=[
            Route("/register", register, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
    )

    entry = server.session_manager.asgi_app  # the body size limit, then the transports
    entry.app = _answer_invalid_requests(entry.app, guard)
    if stateless:
        entry.app = _post_only(entry.app, guard)
    else:
        _limit_sessions_per_key(server.session_manager, MAX_SESSIONS_PER_KEY)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncGenerator[None, None]:
        try:
            async with server.session_manager.run(), anyio.create_task_group() as tg:
                tg.start_soon(runtime.watch_changes, watch_interval)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await runtime.aclose()

    app.router.lifespan_context = lifespan
    app.add_middleware(TransportRefusals)
    return app


# How long a stopping HTTP server waits for open requests (a long tool call) before it drops
# them and shuts down: the app's shutdown, which writes the last records, runs after.
GRACEFUL_SHUTDOWN_SECONDS = 10


def uvicorn_server(app: Starlette, runtime: GatewayRuntime, **config: Any) -> Any:
    """A `uvicorn.Server` for the gateway's app (`config`: `uvicorn.Config` arguments).

    A listen stream is a response that never ends by itself, and uvicorn waits for every
    response before it runs the app's shutdown: with one open, a stopping server hung, and
    the records it buffered were never written. This server ends the listen streams first
    (gracefully: each client is told the stream is over), and waits at most
    `GRACEFUL_SHUTDOWN_SECONDS` for the rest."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            runtime.notifier.close()
            await super().shutdown(sockets)

    config.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_SECONDS)
    server = _Server(uvicorn.Config(app, **config))  # the Config sets uvicorn's logging up
    logging.getLogger("uvicorn.access").addFilter(_QUERY_REDACTED)
    return server


class _RedactQuery(logging.Filter):
    """uvicorn's access log names each request by its path and query string: a client that
    put its API key in the query (`/mcp?api_key=gwk_...`, which the gateway refuses) had the
    key written to the operator's log. The gateway's routes take no query, so the log keeps
    each parameter's name (a short plain one; any other is replaced too) and never a value."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's arguments: client address, method, path with query, HTTP version, status
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str):
            path, mark, query = args[2].partition("?")
            if mark:
                record.args = (*args[:2], f"{path}?{_redacted(query)}", *args[3:])
        return True


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_QUERY_REDACTED: Final = _RedactQuery()


def _redacted(query: str) -> str:
    """`query` with every value, and every name that is not a short plain one, as `***`."""
    parts: list[str] = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        shown = name if _PLAIN_NAME.fullmatch(name) else "***"
        parts.append(f"{shown}=***" if equals else shown)
    return "&".join(parts)


class _Wrapping:
    """A stream wrapping `_inner`: entering, leaving and closing it are the inner stream's."""

    _inner: Any  # a ReadStream or a WriteStream (the SDK's protocols, not a common base)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        suppressed: bool | None = await self._inner.__aexit__(exc_type, exc_val, exc_tb)
        return suppressed

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AnswerUnreadable(_Wrapping):
    """The stdio transport's read stream, less the lines it could not read as a JSON-RPC
    message: each is answered with JSON-RPC's error, -32700 for a line that is not JSON and
    -32600 for one that is but is no message, with the id null (it cannot be read), as the
    HTTP transport answers such a body (400, -32700). The SDK's server only logged them at
    debug level, and a client waited for an answer that never came (audit finding)."""

    def __init__(
        self,
        inner: ReadStream[SessionMessage | Exception],
        write: WriteStream[SessionMessage],
    ) -> None:
        self._inner: ReadStream[SessionMessage | Exception] = inner
        self._write = write

    @property
    def last_context(self) -> object:  # the sender's contextvars, read by the SDK's dispatcher
        return getattr(self._inner, "last_context", None)

    def __aiter__(self) -> Self:
        return self

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            await self._write.send(SessionMessage(_unreadable(item)))

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


def _unreadable(exc: Exception) -> types.JSONRPCError:
    """The JSON-RPC error answering a line the SDK could not read (`exc`, pydantic's)."""
    problems = exc.errors() if isinstance(exc, ValidationError) else []
    if any(p["type"] == "json_invalid" for p in problems):
        error = types.ErrorData(code=types.PARSE_ERROR, message="Parse error: the line is not JSON")
    else:
        error = types.ErrorData(
            code=types.INVALID_REQUEST,
            message="Invalid Request: the line is not a JSON-RPC request, notification or response",
        )
    return types.JSONRPCError(jsonrpc="2.0", id=None, error=error)


async def serve_stdio(
    runtime: GatewayRuntime,
    *,
    api_key: str,
    asserted_user: str | None = None,
    user_source: UserSource | None = None,
    watch_interval: float = 2.0,
    exit_on_signal: bool = False,
) -> None:
    """Serve one client on stdin/stdout as the owner of `api_key` until stdin closes.

    With `exit_on_signal` (the CLI), SIGTERM and SIGINT end the process without unwinding:
    the SDK reads stdin in a worker thread that cannot be interrupted, so waiting for a
    graceful unwind would hang until the client closes stdin. First the tool calls in flight
    get `STDIO_GRACE_SECONDS` to finish; the others are stopped (answered and recorded as
    `cancelled`), and every buffered record is written.
    """
    server = runtime.build_server(
        api_key=api_key, asserted_user=asserted_user, user_source=user_source
    )
    try:
        async with stdio_server() as (read, sdk_write), anyio.create_task_group() as tg:
            write = _CountedWrites(sdk_write)
            tg.start_soon(runtime.watch_changes, watch_interval)
            if exit_on_signal:
                tg.start_soon(_exit_on_signal, runtime, write)
            await server.run(
                _AnswerUnreadable(read, write), write, server.create_initialization_options()
            )
            tg.cancel_scope.cancel()
    finally:
        await runtime.aclose()


# How long a stdio gateway stopped by a signal lets its tool calls in flight finish before it
# stops them. Short: a client that sends SIGTERM may kill the process soon after (the SDK's
# client, 2 s later), and then nothing at all would be recorded.
STDIO_GRACE_SECONDS: Final = 1.0


async def _exit_on_signal(runtime: GatewayRuntime, write: _CountedWrites) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            in_flight, sent = len(runtime.calls_in_flight), write.sent
            logger.info(
                "signal %d: finishing %d tool calls in flight, flushing records and exiting",
                signum,
                in_flight,
            )
            with anyio.CancelScope(shield=True):
                stopped = await runtime.calls_in_flight.finish(STDIO_GRACE_SECONDS)
                if stopped:
                    logger.warning(
                        "stopped %d tool calls still running at shutdown (recorded as cancelled)",
                        stopped,
                    )
                if in_flight:
                    await _answers_written(write, sent + in_flight)
                await runtime.aclose()
            sys.stderr.flush()
            os._exit(0)


class _CountedWrites(_Wrapping):
    """The stdio transport's write stream, counting the messages sent on it: a gateway exiting
    on a signal waits for the answers of the calls that were in flight."""

    def __init__(self, inner: WriteStream[SessionMessage]) -> None:
        self._inner: WriteStream[SessionMessage] = inner
        self.sent = 0

    @property
    def sdk_stream(self) -> WriteStream[SessionMessage]:
        return self._inner

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        self.sent += 1


async def _answers_written(write: _CountedWrites, sent: int, limit: float = 1.0) -> None:
    """Wait, `limit` seconds at most, until `sent` messages have been sent on the stdio
    transport (the calls that were in flight have answered: finished or stopped) and its writer
    has written them: it waits for the next message again. The SDK's stream wraps anyio's
    memory stream (`_inner`), whose statistics say so. The calls' answers were lost when the
    process exited between a call's end and its answer (a test under load)."""
    with anyio.move_on_after(limit):
        while write.sent < sent:
            await anyio.sleep(0.01)
    inner = getattr(write.sdk_stream, "_inner", None)
    if not isinstance(inner, MemoryObjectSendStream):
        return
    with anyio.move_on_after(limit):
        while True:
            stats = inner.statistics()
            if stats.tasks_waiting_send == 0 and stats.tasks_waiting_receive > 0:
                return
            await anyio.sleep(0.01)
