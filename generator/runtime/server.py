"""The gateway's MCP server: the low-level `mcp.server.Server` with per-tenant tools.

`GatewayRuntime` holds everything shared by every connection of one process (store, key
verifier, tool index, quota tracker, recorder, connector executor, memory, change
notifier). `GatewayRuntime.build_server()` returns the SDK `Server` whose handlers:

* identify the caller from its API key (HTTP: the bearer token the SDK's middleware verified
  for this request; stdio / in-process: the key the server was built with, re-verified on
  every request), so revocation and expiry apply at once;
* list the native and personalization tools plus the tools of the tenant's ACTIVE
  connections, filtered by the key's scopes (a tool is visible iff its scope is one of the
  key's scopes), cursor-paginated, from prebuilt `types.Tool` objects indexed by connector;
* call a tool only if the caller could list it (otherwise it is reported exactly like an
  unknown tool, except a tool of the tenant's own connection that awaits re-authorisation or
  was disconnected: a `not_connected` tool error says so), after validating the arguments
  (JSON Schema 2020-12, cached validators) and the quota, and validate every structured
  result against the tool's output schema;
* report every failure as the one JSON error envelope of `errors.py`: a tool error
  (`is_error`) for tool failures, a JSON-RPC error carrying the envelope as `data` for
  protocol errors (unknown tool, unknown resource, bad cursor). No exception text, stack
  trace or secret reaches the client, on either protocol era;
* record an event and a usage increment per call through the `Recorder` (no database write
  on the call path).

Change notifications (a connection connected, disconnected or marked needs_reauth):

* 2025-11-25 (handshake era) connections that have a standalone channel (stdio, in-process,
  stateful streamable HTTP with its GET stream) get `notifications/tools/list_changed` and
  `notifications/resources/list_changed`; the server advertises `listChanged` for both,
  while the key of the connection's latest request is valid (`poll_changes` forgets
  connections of revoked keys; an expired key's is forgotten when next it would be told).
* 2026-07-28 clients get `ToolsListChanged` / `ResourcesListChanged` events on their
  `subscriptions/listen` streams (one bus per tenant, so tenants never see each other's),
  and `ResourceUpdated` for the resources they subscribed to: a connection's state, each
  recorded call or event (events, usage, the connector's status), a user's memory update.
  A stream is acknowledged, and hears of, only the resources its session may read, as a read
  resolves them (`resources.resolve`), under the URIs `resources/list` gives them, and only
  while its key is valid: nothing once it expires, and `poll_changes` ends the streams of
  revoked and expired keys. A
  tenant holds at most `MAX_LISTEN_STREAMS` streams; one whose client stops reading ends after
  `LISTEN_WRITE_TIMEOUT`. Handshake-era clients have no resource subscriptions
  (`resources/subscribe` is not served, so not advertised).
* Stateless HTTP on 2025-11-25 has no channel to the client: nothing can be sent, so its
  `initialize` advertises no `listChanged` (and `/mcp` answers GET with 405); the next
  `tools/list` is correct and a tool that disappeared is refused when called.
* Changes made by another process (the admin CLI) are noticed by `watch_changes()` (a cheap
  poll of the tenants' generation counters, run by the HTTP app and the stdio runner) or by
  the tenant's next request, whichever comes first. The same poll finds the calls and memory
  updates another gateway process on the database served (`activity.ForeignActivity`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import mcp.types as types
from jsonschema.protocols import Validator
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    ListenHandler,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from . import native, resources
from .activity import ForeignActivity
from .auth import (
    USER_HEADER,
    KeyVerifier,
    Principal,
    header_text,
    principal_from_access_token,
    user_env,
)
from .catalog import GatewaySpec, ToolSpec, tool_meta
from .crypto import CredentialKeyError
from .defaults import Defaults, compile_defaults
from .errors import (
    CANCELLED,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_ARGUMENTS,
    MAX_ERRORS,
    NOT_CONNECTED,
    NOT_FOUND,
    RATE_LIMITED,
    RESULT_TOO_LARGE,
    STORAGE_UNAVAILABLE,
    UNAUTHENTICATED,
    UNKNOWN_TOOL,
    UPSTREAM_AUTH_FAILED,
    GatewayError,
    internal_error,
)
from .executor import (
    CallContext,
    ConnectorExecutor,
    base_urls_from_env,
    check_base_urls,
    token_urls_from_env,
)
from .fastschema import (
    Check,
    argument_message,
    compile_check,
    has_surrogate,
    unencodable,
    validator_class,
    whole_numbers,
)
from .memory import MemoryStore, UserNotRegistered
from .quota import QuotaTracker
from .recorder import FAILURE_LOG_INTERVAL, Recorder, WriteFailure
from .store import (
    ConnectionRecord,
    EventRecord,
    Store,
    TenantSnapshot,
    UsageDelta,
    db_reason,
    default_database_url,
    make_event,
    now_us,
    open_store,
    storage_failure,
    usage_day,
)
from .templating import PLACEHOLDER

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
_UNCOMPILED: Any = object()
MAX_MESSAGE = 300


# ============================================================================ tool index


@dataclass(frozen=True, slots=True)
class Listing:
    tools: tuple[types.Tool, ...]
    names: tuple[str, ...]  # sorted; same order as tools


def _mcp_tool(spec: ToolSpec) -> types.Tool:
    a = spec.annotations
    meta = tool_meta(spec.scope, spec.family, spec.connector, spec.deprecated)
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=dict(spec.input_schema),
        output_schema=dict(spec.output_schema),
        annotations=types.ToolAnnotations(
            title=spec.title,
            read_only_hint=a.read_only,
            destructive_hint=a.destructive,
            idempotent_hint=a.idempotent,
            open_world_hint=a.open_world,
        ),
        _meta=meta,
    )


def _pointer(path: Any) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else "/"


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class ToolIndex:
    """Prebuilt `types.Tool` objects and validators, indexed for per-caller listings.

    A listing is the concatenation of a few prebuilt groups (base tools per scope, each
    active connector's tools per scope), sorted once and cached per (active connectors,
    scopes), so its cost depends on what the caller sees, never on the catalog size.
    """

    def __init__(self, gateway: GatewaySpec, *, cache_size: int = 1024) -> None:
        self.gateway = gateway
        self.specs: Mapping[str, ToolSpec] = gateway.tools
        self.tools: dict[str, types.Tool] = {n: _mcp_tool(s) for n, s in gateway.tools.items()}
        self._base: dict[str, tuple[str, ...]] = {}
        self._by_connector: dict[tuple[str, str], tuple[str, ...]] = {}
        for name, spec in sorted(gateway.tools.items()):
            if spec.connector is None:
                self._base[spec.scope] = (*self._base.get(spec.scope, ()), name)
            else:
                key = (spec.connector, spec.scope)
                self._by_connector[key] = (*self._by_connector.get(key, ()), name)
        self._cache: OrderedDict[tuple[frozenset[str], frozenset[str]], Listing] = OrderedDict()
        self._cache_size = cache_size
        self._inputs: dict[str, Validator] = {}
        self._outputs: dict[str, Validator] = {}
        self._fast_in: dict[str, Check | None] = {}
        self._fast_out: dict[str, Check | None] = {}
        self._defaults: dict[str, Defaults | None] = {}

    def tool_visible(self, name: str, active: frozenset[str], scopes: frozenset[str]) -> bool:
        spec = self.specs.get(name)
        return (
            spec is not None
            and spec.scope in scopes
            and (spec.connector is None or spec.connector in active)
        )

    def visible_spec(
        self, name: str, active: frozenset[str], scopes: frozenset[str]
    ) -> ToolSpec | None:
        return self.specs[name] if self.tool_visible(name, active, scopes) else None

    def listing(self, active: frozenset[str], scopes: frozenset[str]) -> Listing:
        key = (active, scopes)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        names: list[str] = []
        for scope in sorted(scopes):
            names.extend(self._base.get(scope, ()))
            for connector in active:
                names.extend(self._by_connector.get((connector, scope), ()))
        names.sort()
        listing = Listing(tuple(self.tools[n] for n in names), tuple(names))
        self._cache[key] = listing
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return listing

    def visible_names(self, active: frozenset[str], scopes: frozenset[str]) -> frozenset[str]:
        return frozenset(self.listing(active, scopes).names)

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        spec = self.specs.get(name)
        return spec.input_schema if spec is not None else None

    def _validator(
        self, cache: dict[str, Validator], name: str, schema: Mapping[str, Any]
    ) -> Validator:
        v = cache.get(name)
        if v is None:
            v = cache[name] = validator_class()(dict(schema))
        return v

    def input_errors(self, spec: ToolSpec, arguments: Any) -> list[dict[str, str]]:
        bad = unencodable(arguments)
        if bad is not None:
            return [{"path": _short(_pointer(bad[0])), "message": bad[1]}]
        check = self._fast_in.get(spec.name, _UNCOMPILED)
        if check is _UNCOMPILED:
            check = self._fast_in[spec.name] = compile_check(dict(spec.input_schema))
        if check is not None and check(arguments):
            return []
        v = self._validator(self._inputs, spec.name, spec.input_schema)
        # typeshed's jsonschema stub leaves iter_errors' `instance` unannotated, which pyright
        # reports as a partially unknown method.
        found = v.iter_errors(arguments)  # pyright: ignore[reportUnknownMemberType]
        errors = sorted(found, key=lambda e: list(map(str, e.absolute_path)))
        return [
            {"path": _pointer(e.absolute_path), "message": _short(argument_message(e))}
            for e in errors[:MAX_ERRORS]
        ]

    def with_defaults(self, spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validated `arguments` with the input schema's defaults filled in at every depth, as
        the connector executor fills them in for a capability (`defaults.py`), so that a native
        or memory handler gets what tools/list promised whatever its own fallbacks."""
        found = self._defaults.get(spec.name, _UNCOMPILED)
        if found is _UNCOMPILED:
            found = self._defaults[spec.name] = compile_defaults(spec.input_schema)
        return arguments if found is None else found.apply(arguments)

    def output_error(self, spec: ToolSpec, output: Any) -> str | None:
        check = self._fast_out.get(spec.name, _UNCOMPILED)
        if check is _UNCOMPILED:
            check = self._fast_out[spec.name] = compile_check(dict(spec.output_schema))
        if check is not None and check(output):
            return None
        v = self._validator(self._outputs, spec.name, spec.output_schema)
        found = v.iter_errors(output)  # pyright: ignore[reportUnknownMemberType] (see above)
        err = next(iter(found), None)
        return None if err is None else f"{_pointer(err.absolute_path)}: {err.validator}"


# ============================================================================ notifications


class _TenantBus:
    """One tenant's fan-out to its open listen streams (the SDK's `SubscriptionBus`), with a
    synchronous `publish_nowait` for code that records what happened and cannot await."""

    def __init__(self) -> None:
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}

    def __len__(self) -> int:
        return len(self._listeners)

    def publish_nowait(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # one stream must not stop the others hearing
                logger.exception("listen stream failed to take an event")

    async def publish(self, event: ServerEvent) -> None:
        self.publish_nowait(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe


class _StreamBus:
    """One listen stream's view of its tenant's bus: only updates of the resources it was
    acknowledged (`may_watch`: those its session may read) reach it, whatever the SDK's own
    filter does, and nothing does once its key has expired (`poll_changes` ends it soon
    after)."""

    def __init__(self, bus: _TenantBus, may_watch: Callable[[str], bool], expires_at: int) -> None:
        self._bus = bus
        self._may_watch = may_watch
        self._expires_at = expires_at

    async def publish(self, event: ServerEvent) -> None:
        await self._bus.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        may_watch, expires_at = self._may_watch, self._expires_at

        def deliver(event: ServerEvent) -> None:
            if now_us() >= expires_at:
                return
            if not isinstance(event, ResourceUpdated) or may_watch(event.uri):
                listener(event)

        return self._bus.subscribe(deliver)


class _TimedWrites:
    """A request's session whose notification writes give up after `seconds`: a listen stream
    whose client stopped reading ends (and frees its place) instead of waiting in a transport
    write until the connection dies."""

    def __init__(self, session: Any, seconds: float) -> None:
        self._session = session
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def send_notification(self, *args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(self._seconds):
            await self._session.send_notification(*args, **kwargs)


# Open `subscriptions/listen` streams per tenant: each holds a request (and, over HTTP, a
# connection) open, so one tenant cannot take them all.
MAX_LISTEN_STREAMS = 256
# Resource URIs one listen stream may subscribe to (each is matched on every update).
MAX_STREAM_SUBSCRIPTIONS = 1000
# How long one event may take to reach a listening client before its stream is ended.
LISTEN_WRITE_TIMEOUT = 30.0


class ChangeNotifier:
    """Per-tenant fan-out of change notifications to open sessions (see module doc)."""

    def __init__(self, gateway: GatewaySpec) -> None:
        self._gateway = gateway
        # Each tenant's handshake-era connections, with the key each last made a request with.
        self._legacy: dict[str, weakref.WeakKeyDictionary[Any, Principal]] = {}
        self._buses: dict[str, _TenantBus] = {}
        # Each tenant's open listen streams, with the key each was opened with.
        self._streams: dict[str, dict[ListenHandler, Principal]] = {}
        self._closed = False

    def register(self, principal: Principal, ctx: ServerRequestContext[Any, Any]) -> None:
        """Remember a handshake-era connection that can receive notifications, while the key
        of its latest request stays valid."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        # The SDK gives handlers a per-message session proxy; the connection behind it
        # lives as long as the client's session and owns the standalone channel.
        connection = getattr(ctx.session, "_connection", None)
        if connection is None or not getattr(connection, "has_standalone_channel", False):
            return
        group = self._legacy.get(principal.tenant_id)
        if group is None:
            group = self._legacy[principal.tenant_id] = weakref.WeakKeyDictionary()
        group[connection] = principal

    async def listen(
        self,
        principal: Principal,
        ctx: ServerRequestContext[Any, Any],
        params: types.SubscriptionsListenRequestParams,
        may_watch: Callable[[str], bool],
    ) -> types.SubscriptionsListenResult:
        """Serve one listen stream of the principal's tenant while its key stays valid;
        `may_watch(uri)` says which resource updates it may hear (those acknowledged)."""
        if self._closed:
            raise GatewayError(INTERNAL_ERROR, "The gateway is shutting down; retry shortly.")
        tenant_id = principal.tenant_id
        streams = self._streams.setdefault(tenant_id, {})
        if len(streams) >= MAX_LISTEN_STREAMS:
            raise GatewayError(
                RATE_LIMITED,
                f"This workspace already has {MAX_LISTEN_STREAMS} open subscription streams; "
                "close one before opening another.",
                details={"limit": MAX_LISTEN_STREAMS},
            )
        bus = self._buses.get(tenant_id)
        if bus is None:
            bus = self._buses[tenant_id] = _TenantBus()
        handler = ListenHandler(
            _StreamBus(bus, may_watch, principal.expires_at), max_subscriptions=1
        )
        streams[handler] = principal
        session = cast(ServerSession, _TimedWrites(ctx.session, LISTEN_WRITE_TIMEOUT))
        timed = dataclasses.replace(ctx, session=session)
        try:
            return await handler(timed, params)
        finally:
            streams.pop(handler, None)

    def watched_tenants(self) -> list[str]:
        legacy = [t for t, group in self._legacy.items() if len(group)]
        return sorted(set(legacy) | set(self.listening_tenants()))

    def listening_tenants(self) -> list[str]:
        """The tenants with open listen streams (the only ones told of resource updates)."""
        return sorted(t for t, streams in self._streams.items() if streams)

    def stream_keys(self) -> set[str]:
        """The keys of the open listen streams and of the handshake-era connections."""
        streams = {p.key_id for group in self._streams.values() for p in group.values()}
        return streams | {p.key_id for group in self._legacy.values() for p in group.values()}

    def end_streams(self, live_keys: set[str]) -> None:
        """End (gracefully) the listen streams whose key is not in `live_keys`: revoked or
        expired since the stream opened; and stop telling handshake-era connections whose
        key is not of anything more (a request with a valid key registers them again)."""
        for streams in self._streams.values():
            for handler, principal in list(streams.items()):
                if principal.key_id not in live_keys:
                    handler.close()
        for group in self._legacy.values():
            for connection, principal in list(group.items()):
                if principal.key_id not in live_keys:
                    group.pop(connection, None)

    def updated(self, tenant_id: str, change: resources.Change) -> None:
        """Tell the tenant's listen streams which resources `change` updated (no await: the
        events wait in each stream's buffer for its own task to send them)."""
        bus = self._buses.get(tenant_id)
        if bus is None or not len(bus):
            return
        for uri in resources.updated_uris(self._gateway, change):
            bus.publish_nowait(ResourceUpdated(uri=uri))

    async def changed(self, tenant_id: str, connectors: frozenset[str]) -> int:
        """Tell the tenant's open sessions that its tools and resources changed (the
        connections of `connectors` changed state). Returns the number of deliveries attempted."""
        sent = 0
        bus = self._buses.get(tenant_id)
        if bus is not None:
            self.updated(tenant_id, resources.Change(connections=connectors))
            await bus.publish(ToolsListChanged())
            await bus.publish(ResourcesListChanged())
            sent += len(self._streams.get(tenant_id, ()))
        group = self._legacy.get(tenant_id)
        if group is None:
            return sent
        for connection, principal in list(group.items()):
            if now_us() >= principal.expires_at:  # its key expired: it hears nothing more
                group.pop(connection, None)
                continue
            try:
                with anyio.fail_after(5):
                    await connection.send_tool_list_changed()
                    await connection.send_resource_list_changed()
                sent += 1
            except Exception:
                # Closed or stuck session: forget it (the weak mapping drops it once collected).
                group.pop(connection, None)
        return sent

    def close(self) -> None:
        """End every listen stream gracefully, and refuse new ones (the gateway is stopping)."""
        self._closed = True
        for streams in self._streams.values():
            for handler in list(streams):
                handler.close()


# ============================================================================ runtime


class CallsInFlight:
    """The tool calls running now, each in a cancel scope of its own. A stdio gateway stopped
    by a signal exits without unwinding (`app.serve_stdio`): `finish` first gives the calls a
    moment, then stops the others, which answer `cancelled` and are recorded so."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()

    def __len__(self) -> int:
        return len(self._scopes)

    @contextlib.contextmanager
    def track(self) -> Generator[anyio.CancelScope, None, None]:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    async def finish(self, grace: float) -> int:
        """Wait up to `grace` seconds for the calls to end, then stop the others and wait (as
        long again at most) for them to unwind. Returns how many were stopped."""
        with anyio.move_on_after(grace):
            while self._scopes:
                await anyio.sleep(0.01)
        stopped = list(self._scopes)
        for scope in stopped:
            scope.cancel()
        with anyio.move_on_after(grace):
            while self._scopes:
                await anyio.sleep(0.01)
        return len(stopped)


class GatewayRuntime:
    """Process-wide state of one gateway. See the module docstring."""

    def __init__(
        self,
        gateway: GatewaySpec,
        store: Store,
        *,
        executor: ConnectorExecutor | None = None,
        memory: MemoryStore | None = None,
        recorder_interval: float = 0.25,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.index = ToolIndex(gateway)
        self.verifier = KeyVerifier(store)
        self.quota = QuotaTracker(gateway, store.usage_totals)
        self.notifier = ChangeNotifier(gateway)
        self.recorder = Recorder(
            store,
            self.quota,
            interval=recorder_interval,
            on_recorded=self._recorded,
            on_written=self._written,
        )
        self._executor = executor
        self.memory = memory
        self.activity = ForeignActivity(
            store, memory.versions_since if memory else None, self.recorder.writing
        )
        self.page_size = page_size
        self._snapshots: dict[str, TenantSnapshot] = {}
        # Decrypted credentials by sealed value (a new encryption is a new key: an update is
        # never served stale). Kept in process memory only, like the key that decrypts them.
        self._opened: dict[tuple[str, str, str], dict[str, str]] = {}
        # tenant -> users found registered; forgotten when the tenant's generation moves
        # (`admin user forget` moves it), see `_install`.
        self._known_users: dict[str, set[str]] = {}
        self.calls_in_flight = CallsInFlight()
        self.storage_failures = FailureLog("tool calls fail: the database cannot serve them")
        self._closed = False

    def storage_error(self, exc: Exception) -> GatewayError | None:
        """The answer to a call the database failed to serve (`storage_failure`: a full disk,
        a read-only file, an outage), logged like the recorder's failed writes (`FailureLog`);
        None for any other exception."""
        kind = storage_failure(exc)
        if kind is None:
            return None
        self.storage_failures.failed(exc)
        what = {
            "disk_full": "its disk is full",
            "read_only": "it is read-only",
        }.get(kind, "it does not answer")
        return GatewayError(
            STORAGE_UNAVAILABLE,
            f"The gateway's database cannot serve this call now ({what}), so it did not "
            "complete. Retry later: the operator has been told in the gateway's log.",
            details={"reason": kind},
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(
        cls,
        gateway: GatewaySpec,
        database_url: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        base_urls: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> GatewayRuntime:
        """Open (creating and migrating) the store at `database_url` and wire everything.

        Connector URL overrides (`base_urls`, which win over the environment's
        `<PREFIX>_BASE_URL_<CONNECTOR>`, and `<PREFIX>_TOKEN_URL_<CONNECTOR>`) are checked
        first: a bad one raises `ConnectorConfigError` before any database is created.
        """
        env = os.environ if environ is None else environ
        urls = {**base_urls_from_env(gateway, env), **check_base_urls(gateway, base_urls or {})}
        token_urls = token_urls_from_env(gateway, env)
        url = database_url or default_database_url(gateway, env)
        store = open_store(gateway, url, environ=env)
        memory = MemoryStore(
            store.engine, settings=gateway.memory, registered=store.user_registered
        )
        memory.migrate()
        executor = ConnectorExecutor(
            gateway,
            base_urls=urls,
            token_urls=token_urls,
            cursor_key=store.derive_key("link cursors"),
        )
        return cls(gateway, store, executor=executor, memory=memory, **kwargs)

    @property
    def executor(self) -> ConnectorExecutor:
        if self._executor is None:
            self._executor = ConnectorExecutor(self.gateway)
        return self._executor

    def executor_for_search(self) -> ConnectorExecutor:
        return self.executor

    async def aclose(self) -> None:
        """Flush every record and release resources (clean shutdown)."""
        if self._closed:
            return
        self._closed = True
        self.notifier.close()
        await anyio.to_thread.run_sync(self.recorder.close)
        if self._executor is not None:
            await self._executor.aclose()

    def close_sync(self) -> None:
        """`aclose` for code without an event loop (the executor's client is left to GC).
        Safe after an interrupted `aclose`: the recorder's close waits for or redoes the
        final flush."""
        self._closed = True
        self.notifier.close()
        self.recorder.close()

    # ------------------------------------------------------------------ helpers

    def _recorded(self, event: EventRecord, counted: bool) -> None:
        # A connector's status counts its tool calls (a quota refusal is not one).
        called = event.connector if event.type == "tool_call" else None
        change = resources.Change(event=True, event_connector=called, usage=counted)
        self.notifier.updated(event.tenant_id, change)

    def _written(self, events: list[EventRecord], usage: list[UsageDelta]) -> None:
        self.activity.written(events, usage)

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def flush_records(self) -> WriteFailure | None:
        """Make every call recorded so far visible to queries (waits for a batch that the
        background thread is writing), the summaries of refused calls whose minute is over
        included. Returns why they cannot be written, when they cannot (a read-only database,
        a full disk): the recorder keeps them and retries, and the caller reads what is
        stored."""
        self.recorder.summarize_refusals()
        if not self.recorder.settled():
            with contextlib.suppress(Exception):  # logged by the recorder
                await anyio.to_thread.run_sync(self.recorder.flush)
        failure = self.recorder.failure()
        return failure if failure is not None and failure.unwritten else None

    def call_context(
        self, principal: Principal, user: str | None, *, connected_at: int = 0
    ) -> CallContext:
        return CallContext(tenant_id=principal.tenant_id, user_id=user, connected_at=connected_at)

    async def tenant_state(self, principal: Principal) -> TenantSnapshot:
        """The tenant's connections, reloaded only when its generation moved."""
        snap = self._snapshots.get(principal.tenant_id)
        if snap is not None and snap.tenant.generation >= principal.generation:
            return snap
        fresh = await self.run_db(self.store.snapshot, principal.tenant_id)
        await self._install(fresh)
        return fresh

    async def _install(self, fresh: TenantSnapshot) -> None:
        old = self._snapshots.get(fresh.tenant.id)
        if old is not None and old.tenant.generation >= fresh.tenant.generation:
            return
        self._snapshots[fresh.tenant.id] = fresh
        self._known_users.pop(fresh.tenant.id, None)
        if old is not None:
            await self._announce(old, fresh)

    async def refresh_tenant(self, tenant_id: str) -> TenantSnapshot:
        """Reload a tenant after a change made in this process, notifying its sessions."""
        fresh = await self.run_db(self.store.snapshot, tenant_id)
        old = self._snapshots.get(tenant_id)
        self._snapshots[tenant_id] = fresh
        self._known_users.pop(tenant_id, None)
        await self._announce(old, fresh)
        return fresh

    async def _announce(self, old: TenantSnapshot | None, fresh: TenantSnapshot) -> None:
        """Tell the tenant's sessions what changed between two snapshots: its tools and
        resources when a connection changed state; a connection's resources alone when it was
        made again without changing state (an active connection given new credentials)."""
        tenant_id = fresh.tenant.id
        touched = _moved(old, fresh, _connection_facts)
        if old is None or _moved(old, fresh, _state):
            await self.notifier.changed(tenant_id, touched)
        elif touched:
            self.notifier.updated(tenant_id, resources.Change(connections=touched))

    async def poll_changes(self) -> None:
        """Detect connection changes made by other processes for tenants with open sessions,
        and calls and memory updates for tenants with listen streams; end the listen streams
        (and forget the handshake-era connections) of keys revoked or expired since; and
        record the summaries of refused calls whose minute is over."""
        self.recorder.summarize_refusals()
        keys = self.notifier.stream_keys()
        if keys:
            self.notifier.end_streams(await self.run_db(self.store.live_keys, sorted(keys)))
        for tenant_id, change in await self.run_db(
            self.activity.poll, self.notifier.listening_tenants()
        ):
            self.notifier.updated(tenant_id, change)
        watched = self.notifier.watched_tenants()
        if not watched:
            return
        generations = await self.run_db(self.store.generations, watched)
        for tenant_id, generation in generations.items():
            snap = self._snapshots.get(tenant_id)
            if snap is None or snap.tenant.generation < generation:
                fresh = await self.run_db(self.store.snapshot, tenant_id)
                await self._install(fresh)

    async def watch_changes(self, interval: float = 2.0) -> None:
        """Run `poll_changes` forever (cancel to stop)."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.poll_changes()
            except Exception:
                logger.exception("polling for connection changes failed")

    async def credentials(self, snapshot: TenantSnapshot, connector: str) -> dict[str, str]:
        record = snapshot.connections[connector]
        if record.sealed_credentials is None:
            return {}
        key = (record.tenant_id, connector, record.sealed_credentials)
        opened = self._opened.get(key)
        if opened is None:
            try:
                opened = self.store.open_credentials(record)
            except CredentialKeyError:
                # The deployment's key is not the one these were sealed with (a changed key,
                # or credentials written by an admin command given another): no retry helps.
                logger.error(
                    "the stored credentials of %s for tenant %s cannot be decrypted with the "
                    "configured key; restore the key they were stored with, or connect again",
                    connector,
                    record.tenant_id,
                )
                raise GatewayError(
                    NOT_CONNECTED,
                    f"The stored credentials of {connector} cannot be read by the gateway; "
                    "the connection must be made again.",
                    details={"connector": connector, "reason": "credentials_unreadable"},
                    retryable=False,
                ) from None
            if len(self._opened) >= 10_000:
                self._opened.clear()
            self._opened[key] = opened
        return dict(opened)

    def lapsed_connection(
        self, name: str, snap: TenantSnapshot, scopes: frozenset[str]
    ) -> GatewayError | None:
        """Why a hidden tool of the tenant's own connector cannot run, or None.

        A tool of a connector the tenant connected once, now awaiting re-authorisation or
        disconnected, is hidden from the listing, but a model holding an older listing may
        still call it: it gets `not_connected` with the reason. The connection is the tenant's
        own, so this reveals nothing; any other hidden tool stays an unknown tool.
        """
        spec = self.index.specs.get(name)
        if spec is None or spec.connector is None or spec.scope not in scopes:
            return None
        record = snap.connections.get(spec.connector)
        if record is None or record.state == "active":
            return None
        title = self.gateway.connectors[spec.connector].title
        if record.state == "needs_reauth":
            message = (
                f"The {title} connection needs to be re-authorised: {title} refused its "
                f"credentials. Ask the user to reconnect {title}, then retry."
            )
        else:
            message = (
                f"{title} is disconnected for this workspace. "
                f"Ask the user to connect {title} to use {name}."
            )
        return GatewayError(
            NOT_CONNECTED,
            message,
            details={"connector": spec.connector, "state": record.state, "tool": name},
            retryable=False,
        )

    # A call's outcome concerns the connection whose credentials it used, made at
    # `connected_at`: a reconnection meanwhile (perhaps to another account) is left alone.
    async def mark_needs_reauth(self, tenant_id: str, connector: str, connected_at: int) -> None:
        changed = await self.run_db(
            partial(
                self.store.mark_needs_reauth,
                tenant_id,
                connector,
                UPSTREAM_AUTH_FAILED,
                connected_at=connected_at,
            )
        )
        if changed:
            await self.refresh_tenant(tenant_id)

    async def store_refreshed(
        self, tenant_id: str, connector: str, credentials: Mapping[str, str], connected_at: int
    ) -> None:
        """Store the OAuth2 tokens a call refreshed (see `mark_needs_reauth`)."""
        await self.run_db(
            partial(
                self.store.update_credentials,
                tenant_id,
                connector,
                credentials,
                connected_at=connected_at,
            )
        )

    # admin operations performed in-process (tests, embedding applications) notify at once
    async def connect(self, tenant_id: str, connector: str, credentials: Mapping[str, str]) -> None:
        await self.run_db(self.store.connect, tenant_id, connector, dict(credentials))
        await self.refresh_tenant(tenant_id)

    async def disconnect(self, tenant_id: str, connector: str) -> None:
        await self.run_db(self.store.disconnect, tenant_id, connector)
        await self.refresh_tenant(tenant_id)

    async def session_user(
        self, principal: Principal, asserted: str | None, source: UserSource
    ) -> str | None:
        """The end user of a request: the key's bound user, or the user a host-application
        key names (must be registered in the key's tenant) with `source`, the transport's
        way of naming one."""
        if asserted is None:
            return principal.user
        asserted = asserted.strip()
        if not principal.can_assert_user:
            raise GatewayError(
                FORBIDDEN,
                f"This API key may not name a user; {source.name} needs a host application key.",
                refused=True,
            )
        if principal.user is not None and asserted != principal.user:
            raise GatewayError(FORBIDDEN, "This API key is bound to another user.", refused=True)
        if not await self.registered(principal.tenant_id, asserted):
            raise GatewayError(
                FORBIDDEN,
                f"The user named by {source.name} is not registered in this workspace; "
                f"register it first ({source.how_to_register(principal, asserted)}).",
                refused=True,
            )
        return asserted

    def forget_known_user(self, tenant_id: str, user: str) -> None:
        """Drop a remembered yes of `registered` (the user was found gone)."""
        known = self._known_users.get(tenant_id)
        if known is not None:
            known.discard(user)

    async def registered(self, tenant_id: str, user: str) -> bool:
        """Whether `user` is registered in the tenant. A yes is remembered until the tenant's
        generation moves, which removing a user (`admin user forget`) does: every request
        loads the tenant again first when its key says so (`tenant_state`)."""
        known = self._known_users.get(tenant_id)
        if known is None or user not in known:
            if await self.run_db(self.store.get_user, tenant_id, user) is None:
                return False
            self._known_users.setdefault(tenant_id, set()).add(user)
        return True

    # ------------------------------------------------------------------ server

    def build_server(
        self,
        *,
        api_key: str | None = None,
        asserted_user: str | None = None,
        user_source: UserSource | None = None,
        list_changed: bool = True,
    ) -> GatewayServer:
        """An SDK `Server` over this runtime.

        `api_key` identifies the caller when the transport carries no bearer token (stdio,
        in-process); `asserted_user` plays the X-Gateway-User header there, and `user_source`
        (default: `stdio_user`) says where it came from in the messages that refuse it.
        `list_changed=False` for a transport that cannot notify handshake-era clients
        (stateless HTTP): their `initialize` then promises no list-changed notifications.
        """
        handlers = _Handlers(
            self,
            api_key=api_key,
            asserted_user=asserted_user,
            user_source=user_source or stdio_user(self.gateway),
            list_changed=list_changed,
        )
        return handlers.server


def _state(rec: ConnectionRecord) -> object:
    return rec.state


def _connection_facts(rec: ConnectionRecord) -> object:
    """What a tenant's connection resources show of a connection, besides its calls."""
    return (rec.state, rec.connected_at, rec.disconnected_at)


def _moved(
    old: TenantSnapshot | None, fresh: TenantSnapshot, facts: Callable[[ConnectionRecord], object]
) -> frozenset[str]:
    """The connectors whose `facts` differ between two snapshots of a tenant."""
    before = {} if old is None else {n: facts(r) for n, r in old.connections.items()}
    after = {n: facts(r) for n, r in fresh.connections.items()}
    return frozenset(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


# ============================================================================ SDK server


class GatewayServer(Server[Any]):
    """The low-level SDK server, advertising list-changed notifications on the handshake era
    when its transport can deliver them (`list_changed`: not over stateless HTTP, which has no
    channel to the client)."""

    def __init__(self, *args: Any, list_changed: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.list_changed = list_changed

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        changed = self.list_changed
        return super().create_initialization_options(
            notification_options
            or NotificationOptions(tools_changed=changed, resources_changed=changed),
            experimental_capabilities,
            extensions,
        )


@dataclass(frozen=True, slots=True)
class UserSource:
    """How a transport names a host application key's user, and how a user is registered
    there, for the messages that refuse one."""

    name: str  # what names the user: "the X-Gateway-User header"
    register: str  # a request, or a command that takes the tenant and the user (`command`)
    command: bool = False

    def how_to_register(self, principal: Principal, user: str) -> str:
        if not self.command:
            return self.register
        return f"{self.register} {shlex.quote(principal.tenant_name)} {shlex.quote(user)}"


HTTP_USER = UserSource(name="the X-Gateway-User header", register="POST /register")


def stdio_user(gateway: GatewaySpec, db: str | None = None) -> UserSource:
    """stdio's user: the `<PREFIX>_USER` variable, registered with the admin command (on the
    database `db` as messages show it, when the server was given one)."""
    on_db = f" --db {shlex.quote(db)}" if db else ""
    return UserSource(
        name=f"the {user_env(gateway.import_name)} variable",
        register=f"python -m {gateway.import_name} admin{on_db} user register",
        command=True,
    )


def _unauthenticated() -> MCPError:
    err = GatewayError(UNAUTHENTICATED, "A valid API key is required.")
    return MCPError(code=types.INVALID_REQUEST, message=err.message, data=err.envelope())


def unknown_tool_error(name: str) -> MCPError:
    shown = name if len(name) <= 100 else name[:97] + "..."
    err = GatewayError(UNKNOWN_TOOL, f"Unknown tool: {shown}", details={"tool": shown})
    return MCPError(code=types.INVALID_PARAMS, message=err.message, data=err.envelope())


def tool_error(err: GatewayError) -> types.CallToolResult:
    text = json.dumps(err.envelope(), ensure_ascii=False, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _json_text(output: Any) -> str:
    return json.dumps(output, ensure_ascii=False, separators=(",", ":"))


def tool_result(
    output: dict[str, Any], notes: Sequence[str] = (), *, text: str | None = None
) -> types.CallToolResult:
    """The output as structured content and as JSON text (`text`, if the caller made it
    already), then each note as its own text (what a partial upstream answer left out: the
    model reads it beside the data)."""
    text = _json_text(output) if text is None else text
    content: list[types.ContentBlock] = [types.TextContent(text=t) for t in (text, *notes)]
    return types.CallToolResult(content=content, structured_content=output)


def result_bytes(text: str, notes: Sequence[str] = ()) -> int:
    """The bytes the result `tool_result(output, notes)` takes on the wire, `text` being the
    output's JSON: each text block as a JSON string, and the structured content (whose JSON is
    `text`), in UTF-8; the JSON-RPC framing around them aside."""
    blocks = sum(len(json.dumps(t, ensure_ascii=False).encode()) for t in (text, *notes))
    return blocks + len(text.encode())


# Names a tool input that sets how many records a call returns goes by, for a tool whose
# manifest does not say it (`pagination.size_param`).
_SIZE_INPUTS = ("limit", "per_page", "page_size", "max_results", "top_k", "first", "count")


def size_input(spec: ToolSpec) -> str | None:
    """The input of `spec` that sets how many records it returns, if it has one: the one that
    fills the upstream's page size key (`pagination.size_param`), else an integer input with
    one of the usual names."""
    properties: Mapping[str, Any] = spec.input_schema.get("properties") or {}
    http = spec.http
    if http is not None and http.pagination is not None and http.pagination.size_param:
        key = http.pagination.size_param
        body: Mapping[str, Any] = (
            cast("Mapping[str, Any]", http.body) if isinstance(http.body, Mapping) else {}
        )
        for template in (http.query.get(key), body.get(key)):
            m = PLACEHOLDER.fullmatch(template) if isinstance(template, str) else None
            if m is not None and m.group(1) in properties:
                return m.group(1)
    for name in _SIZE_INPUTS:
        schema = properties.get(name)
        if (
            isinstance(schema, Mapping)
            and cast("Mapping[str, Any]", schema).get("type") == "integer"
        ):
            return name
    return None


class FailureLog:
    """Logs a failure that repeats for as long as it lasts (the database cannot serve calls),
    as the recorder logs its failed writes: the first of a spell with its traceback, then one
    line per `interval` seconds with how many failed since. A spell ends after `interval`
    seconds without a failure; the next failure starts another."""

    def __init__(
        self,
        what: str,
        *,
        interval: float = FAILURE_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # the first failure of the spell
        self._last = 0.0  # the last failure
        self._logged = 0.0  # the last line logged
        self._count = 0  # failures of the spell not yet logged

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        with self._lock:
            last, self._last = self._last, now
            if self._since is None or now - last >= self.interval:  # a new spell
                self._since = self._logged = now
                self._count = 0
                line = None
            else:
                self._count += 1
                if now - self._logged < self.interval:
                    return
                line = (self._count, now - self._logged, now - self._since)
                self._logged = now
                self._count = 0
        reason = db_reason(exc)
        if line is None:
            logger.error(
                "%s (%s); logged again once a minute while it lasts",
                self.what,
                reason,
                exc_info=exc,
            )
        else:
            logger.error(
                "%s (%s): %d more in the last %.0f s, failing for %.0f s", self.what, reason, *line
            )


def stopped_at_shutdown(spec: ToolSpec) -> GatewayError:
    """The error of a call a stopping stdio gateway cut short (`cancelled`). A read-only or
    idempotent tool may simply be called again (retryable); any other may or may not have done
    what it does, and calling it again could do it twice."""
    where = " upstream" if spec.family == "connector" else ""
    stopped = "The gateway shut down before the call finished"
    if spec.annotations.read_only:
        message = f"{stopped}; it changes nothing, so call it again (once the gateway serves)."
        return GatewayError(CANCELLED, message, retryable=True)
    if spec.annotations.idempotent:
        message = (
            f"{stopped}; it may or may not have taken effect{where}, and as calling it again "
            "has the same effect, call it again (once the gateway serves)."
        )
        return GatewayError(CANCELLED, message, retryable=True)
    message = (
        f"{stopped}; it may or may not have taken effect{where}. Check before calling it "
        "again: a second call could do it twice."
    )
    return GatewayError(CANCELLED, message, retryable=False)


def result_too_large(spec: ToolSpec, size: int, limit: int) -> GatewayError:
    """The error of a call whose result is larger than the gateway sends. The call ran: a tool
    that may change data says its changes stand (calling it again would repeat them); any
    other is asked for less, by its page size input if it has one."""
    name = spec.name
    too_big = f"{size:,} bytes, more than the {limit:,} this gateway returns in one tool result"
    details: dict[str, Any] = {"tool": name, "size_bytes": size, "limit_bytes": limit}
    if not spec.annotations.read_only:
        message = (
            f"{name} ran, but its result is {too_big}, so it is not shown. Do not call it "
            "again to see the result: what it did is done."
        )
        return GatewayError(RESULT_TOO_LARGE, message, details=details, retryable=False)
    ways: list[str] = []
    wanted = size_input(spec)
    if wanted is not None:
        details["size_input"] = wanted
        paged = "cursor" in (spec.input_schema.get("properties") or {})
        ways.append(f"a smaller `{wanted}`" + (" (the rest comes page by page)" if paged else ""))
    ways.append("narrower filters")
    message = f"The result of {name} is {too_big}. Ask for less: " + ", or ".join(ways) + "."
    return GatewayError(RESULT_TOO_LARGE, message, details=details, retryable=False)


# The gateway's own tools whose result ends in a list it may end early rather than refuse the
# whole result as too large: handler -> that list's key. The lists are a page of the event log
# (its cursor then goes on after the last event shown) or ranked best first (what is left out
# ranks lowest), so a shorter list is still a correct answer. A connector's list is the
# upstream's page, which its cursor cannot resume in the middle of: it is refused instead.
_SHORTENABLE: dict[str, str] = {
    "native.get_event_history": "events",
    "native.search_entities": "entities",
    "memory.retrieve_relevant_chunks": "chunks",
    "memory.search_or_ask": "citations",
}


@dataclass(frozen=True)
class Shortened:
    output: dict[str, Any]
    text: str  # the output's JSON
    note: str  # for the model: what was left out and how to get it
    left_out: int


def shorten_to_fit(
    spec: ToolSpec, output: dict[str, Any], notes: Sequence[str], limit: int
) -> Shortened | None:
    """`output` with the fewest items left out of the end of its list (`_SHORTENABLE`) that
    brings the result, `notes` and a note saying so included, within `limit` bytes; None
    when the tool's result has no such list, or when its first item alone is too large."""
    key = _SHORTENABLE.get(spec.handler or "") if spec.family != "connector" else None
    items: object = output.get(key) if key is not None else None
    if key is None or not isinstance(items, list):
        return None
    entries = cast("list[Any]", items)
    total = len(entries)
    if total < 2:
        return None

    def cut(n: int) -> Shortened:
        shown = {**output, key: entries[:n]}
        note = (
            f"This result shows the first {n} of {total} {key}: all {total} would take more "
            f"than the {limit:,} bytes this gateway returns in one tool result. "
        )
        if key == "events":
            shown["next_cursor"] = native.event_cursor(str(entries[n - 1]["id"]))
            note += "next_cursor goes on from the next event."
        elif key == "citations":
            note += "The answer itself is whole."
        else:
            wanted = size_input(spec)
            smaller = f"a smaller `{wanted}` or " if wanted is not None else ""
            note += f"Those left out rank lowest; ask with {smaller}a narrower query for others."
        return Shortened(shown, _json_text(shown), note, total - n)

    @cache
    def fits(n: int) -> Shortened | None:
        shortened = cut(n)
        size = result_bytes(shortened.text, (*notes, shortened.note))
        return shortened if size <= limit else None

    if fits(1) is None:
        return None
    return fits(resources.largest_that_fits(lambda n: fits(n) is not None, 1, total - 1))


def _encode_list_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(b"t:" + name.encode()).decode().rstrip("=")


def _decode_list_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if raw.startswith(b"t:"):
            return raw[2:].decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    err = GatewayError(INVALID_ARGUMENTS, "Invalid cursor.", details={"cursor": cursor[:100]})
    raise MCPError(code=types.INVALID_PARAMS, message=err.message, data=err.envelope())


async def _envelope_middleware(
    ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]
) -> Any:
    """Last line of defence: no handler exception text ever reaches the client."""
    try:
        return await call_next(ctx)
    except (MCPError, ValidationError):
        raise
    except GatewayError as exc:
        code = types.INTERNAL_ERROR if exc.code == INTERNAL_ERROR else types.INVALID_PARAMS
        raise MCPError(code=code, message=exc.message, data=exc.envelope()) from None
    except Exception:
        logger.exception("unhandled error in %s", ctx.method)
        err = internal_error()
        raise MCPError(
            code=types.INTERNAL_ERROR, message=err.message, data=err.envelope()
        ) from None


_MEMORY_CALLS: dict[str, Callable[[MemoryStore, str, str, Mapping[str, Any]], dict[str, Any]]] = {
    "memory.retrieve_relevant_chunks": lambda m, t, u, a: m.retrieve_relevant_chunks(
        t, u, str(a["query"]), a.get("top_k"), a.get("tags")
    ),
    "memory.search_or_ask": lambda m, t, u, a: m.search_or_ask(t, u, str(a["question"])),
    "memory.update_memory": lambda m, t, u, a: m.update_memory(t, u, list(a["observations"])),
}

TOOL_HANDLER_NAMES = frozenset(native.HANDLERS) | frozenset(_MEMORY_CALLS)


class _Handlers:
    def __init__(
        self,
        runtime: GatewayRuntime,
        *,
        api_key: str | None,
        asserted_user: str | None,
        user_source: UserSource,
        list_changed: bool = True,
    ) -> None:
        self.rt = runtime
        self.api_key = api_key
        self.asserted_user = asserted_user
        self.user_source = user_source  # where asserted_user came from, for messages
        gw = runtime.gateway
        self.server = GatewayServer(
            gw.server_name,
            list_changed=list_changed,
            version=gw.version,
            title=gw.title,
            instructions=gw.instructions,
            get_tool_input_schema=runtime.index.input_schema,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_subscriptions_listen=self.listen,
        )
        self.server.middleware.insert(0, _envelope_middleware)

    # ------------------------------------------------------------------ identity

    async def principal(self) -> Principal:
        principal = principal_from_access_token(get_access_token())
        if principal is None and self.api_key is not None:
            principal = await self.rt.verifier.verify(self.api_key)
        if principal is None:
            raise _unauthenticated()
        return principal

    async def session_user(
        self, ctx: ServerRequestContext[Any, Any], principal: Principal
    ) -> tuple[str | None, UserSource]:
        """The request's user (`GatewayRuntime.session_user`) and how its transport names one:
        over HTTP the X-Gateway-User header, else the user the server was built with."""
        headers = getattr(ctx.request, "headers", None)
        if headers is not None:
            value = headers.get(USER_HEADER)
            asserted = header_text(str(value)) if value is not None else None
            source = HTTP_USER
        else:
            asserted, source = self.asserted_user, self.user_source
        return await self.rt.session_user(principal, asserted, source), source

    # ------------------------------------------------------------------ tools

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        principal = await self.principal()
        snap = await self.rt.tenant_state(principal)
        self.rt.notifier.register(principal, ctx)
        listing = self.rt.index.listing(snap.active, principal.scopes)
        start = 0
        if params is not None and params.cursor:
            start = bisect.bisect_right(listing.names, _decode_list_cursor(params.cursor))
        end = start + self.rt.page_size
        page = listing.tools[start:end]
        more = end < len(listing.tools)
        return types.ListToolsResult(
            tools=list(page), next_cursor=_encode_list_cursor(page[-1].name) if more else None
        )

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        rt = self.rt
        principal = await self.principal()
        snap = await rt.tenant_state(principal)
        name = params.name
        spec = rt.index.visible_spec(name, snap.active, principal.scopes)
        started = time.perf_counter()
        at = now_us()
        if spec is None:
            lapsed = rt.lapsed_connection(name, snap, principal.scopes)
            rt.recorder.record_event(
                make_event(
                    principal.tenant_id,
                    "tool_call",
                    "error",
                    at=at,
                    connector=lapsed.details["connector"] if lapsed else None,
                    tool=name[:64],
                    error_code=lapsed.code if lapsed else UNKNOWN_TOOL,
                ),
                refused=True,
            )
            if lapsed is not None:
                return tool_error(lapsed)
            raise unknown_tool_error(name)
        rt.notifier.register(principal, ctx)
        args: dict[str, Any] = dict(params.arguments or {})
        errors = rt.index.input_errors(spec, args)
        if errors:
            err = GatewayError(
                INVALID_ARGUMENTS,
                "Invalid arguments: "
                + "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3]),
                details={"errors": errors},
            )
            self._record(principal, spec, at, started, err, count_usage=False)
            return tool_error(err)
        args = whole_numbers(args)

        plan = rt.quota.plan(principal.plan)
        day = usage_day(at)
        try:
            load = rt.quota.needs_load(principal.tenant_id, principal.plan, at)
            if load is not None:
                await rt.run_db(rt.quota.load, principal.tenant_id, load)
            rt.quota.check_and_count(principal.tenant_id, principal.plan, spec.connector, at)
        except GatewayError as exc:
            rt.recorder.record_event(
                make_event(
                    principal.tenant_id,
                    "quota_exceeded",
                    "error",
                    at=at,
                    connector=spec.connector,
                    tool=spec.name,
                    error_code=exc.code,
                    details={"plan": plan.name, "limit": exc.details.get("limit")},
                ),
                refused=True,
            )
            return tool_error(exc)

        failure: GatewayError | None = None
        extra: dict[str, Any] = {}  # for the event
        notes: list[str] = []  # for the model, beside the output
        try:
            output: dict[str, Any] = {}
            with rt.calls_in_flight.track() as stop:  # stopped when a stdio gateway exits
                output = await self.dispatch(ctx, principal, snap, spec, args, extra, notes)
            if stop.cancelled_caught:
                raise stopped_at_shutdown(spec)
            # The executor validated a connector's output already (a mismatch is the upstream's
            # error, not ours); native and memory handlers are checked here.
            problem = None if spec.family == "connector" else rt.index.output_error(spec, output)
            if problem is not None:
                logger.error(
                    "tool %s returned output violating its schema at %s (tenant %s)",
                    name,
                    problem,
                    principal.tenant_id,
                )
                raise internal_error()
            text = _json_text(output)
            size = result_bytes(text, notes)
            limit = rt.gateway.max_result_bytes
            shortened = shorten_to_fit(spec, output, notes, limit) if size > limit else None
            if shortened is not None:
                output, text = shortened.output, shortened.text
                notes.append(shortened.note)
                extra["left_out"] = shortened.left_out
                size = result_bytes(text, notes)
            if size > limit:
                extra["result_bytes"] = size
                raise result_too_large(spec, size, limit)
            return tool_result(output, notes, text=text)
        except GatewayError as exc:
            failure = exc
            return tool_error(exc)
        except anyio.get_cancelled_exc_class():
            # The client cancelled the request, or gave up waiting: it gets no answer, and the
            # history must not say the call succeeded (nor that it failed upstream).
            failure = GatewayError(CANCELLED, "The client cancelled the call.")
            raise
        except Exception as exc:
            failure = rt.storage_error(exc)
            if failure is None:
                logger.exception("tool %s failed for tenant %s", name, principal.tenant_id)
                failure = internal_error()
            return tool_error(failure)
        finally:
            rt.recorder.record_call(
                tenant_id=principal.tenant_id,
                tool=spec.name,
                connector=spec.connector,
                day=day,
                status="ok" if failure is None else "error",
                duration_ms=(time.perf_counter() - started) * 1000,
                error_code=failure.code if failure is not None else None,
                details=extra or None,
                at=at,
                refused=failure is not None and failure.refused,
            )

    def _record(
        self,
        principal: Principal,
        spec: ToolSpec,
        at: int,
        started: float,
        err: GatewayError,
        *,
        count_usage: bool,
    ) -> None:
        self.rt.recorder.record_call(
            tenant_id=principal.tenant_id,
            tool=spec.name,
            connector=spec.connector,
            day=usage_day(at),
            status="error",
            duration_ms=(time.perf_counter() - started) * 1000,
            error_code=err.code,
            at=at,
            count_usage=count_usage,
        )

    async def dispatch(
        self,
        ctx: ServerRequestContext[Any, Any],
        principal: Principal,
        snap: TenantSnapshot,
        spec: ToolSpec,
        args: dict[str, Any],
        extra: dict[str, Any],
        notes: list[str],
    ) -> dict[str, Any]:
        rt = self.rt
        if spec.family != "connector":  # the executor fills in a capability's defaults
            args = rt.index.with_defaults(spec, args)
        if spec.family == "native":
            handler = native.HANDLERS.get(spec.handler or "")
            if handler is None:
                raise internal_error()
            session = partial(self.require_user, ctx, principal)
            native_call = native.NativeCall(rt, principal, snap, spec.name, session)
            output = await handler(native_call, args)
            notes.extend(native_call.notes)
            return output
        if spec.family == "personalization":
            call = _MEMORY_CALLS.get(spec.handler or "")
            if call is None or rt.memory is None:
                raise internal_error()
            user = await self.require_user(ctx, principal)
            try:
                result = await rt.run_db(call, rt.memory, principal.tenant_id, user, args)
            except UserNotRegistered:
                # `admin user forget` erased the user after require_user found it: asked
                # again, it refuses as it refuses an unregistered user; a key bound to the
                # user (forget revoked it) gets UserNotRegistered's refusal.
                rt.forget_known_user(principal.tenant_id, user)
                await self.require_user(ctx, principal)
                raise
            if spec.handler == "memory.update_memory":
                if result.get("stored"):
                    rt.notifier.updated(principal.tenant_id, resources.Change(memory_user=user))
                    version = max(int(item["version"]) for item in result["stored"])
                    rt.activity.memory_written(principal.tenant_id, user, version)
                rt.recorder.record_event(
                    make_event(
                        principal.tenant_id,
                        "memory_update",
                        details={"items": len(result.get("stored", []))},
                    )
                )
            return result
        return await self.call_connector(ctx, principal, snap, spec, args, extra, notes)

    async def require_user(self, ctx: ServerRequestContext[Any, Any], principal: Principal) -> str:
        user, source = await self.session_user(ctx, principal)
        if user is None:
            raise GatewayError(
                FORBIDDEN,
                "This tool needs a user: use an API key bound to a user, or a host application "
                f"key with {source.name}.",
                refused=True,
            )
        return user

    async def call_connector(
        self,
        ctx: ServerRequestContext[Any, Any],
        principal: Principal,
        snap: TenantSnapshot,
        spec: ToolSpec,
        args: dict[str, Any],
        extra: dict[str, Any],
        notes: list[str],
    ) -> dict[str, Any]:
        rt = self.rt
        assert spec.connector is not None
        user = await self.require_user(ctx, principal) if spec.acts_for_user else principal.user
        credentials = await rt.credentials(snap, spec.connector)
        connected_at = snap.connected_at(spec.connector)
        connector = spec.connector

        async def store_refreshed(refreshed: dict[str, str]) -> None:
            await rt.store_refreshed(principal.tenant_id, connector, refreshed, connected_at)

        try:
            result = await rt.executor.call(
                spec,
                args,
                credentials=credentials,
                ctx=rt.call_context(principal, user, connected_at=connected_at),
                on_refresh=store_refreshed,
            )
        except GatewayError as exc:
            status = getattr(exc, "status", None)
            if status is not None:
                extra["upstream_status"] = status
            if exc.code == UPSTREAM_AUTH_FAILED:
                await rt.mark_needs_reauth(principal.tenant_id, spec.connector, connected_at)
            raise
        extra["upstream_status"] = result.status
        if result.attempts > 1:
            extra["attempts"] = result.attempts
        if result.notes:
            extra["partial"] = True
            notes.extend(result.notes)
        return result.output

    # ------------------------------------------------------------------ resources

    async def _resource_call(
        self, ctx: ServerRequestContext[Any, Any]
    ) -> tuple[native.NativeCall, Callable[[], Awaitable[str | None]]]:
        principal = await self.principal()
        snap = await self.rt.tenant_state(principal)
        self.rt.notifier.register(principal, ctx)

        async def user() -> str | None:
            return (await self.session_user(ctx, principal))[0]

        return native.NativeCall(self.rt, principal, snap), user

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        call, user = await self._resource_call(ctx)
        return types.ListResourcesResult(resources=await resources.list_resources(call, user))

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        principal = await self.principal()
        if not principal.has_scope(resources.SCOPE):
            return types.ListResourceTemplatesResult(resource_templates=[])
        return types.ListResourceTemplatesResult(
            resource_templates=resources.list_templates(self.rt.gateway)
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        call, user = await self._resource_call(ctx)
        text, mime = await resources.read_resource(call, params.uri, user)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=params.uri, text=text, mime_type=mime)]
        )

    # ------------------------------------------------------------------ notifications

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: types.SubscriptionsListenRequestParams,
    ) -> types.SubscriptionsListenResult:
        call, user = await self._resource_call(ctx)
        wanted = params.notifications.resource_subscriptions
        heard: frozenset[str] = frozenset()
        if wanted:
            if len(wanted) > MAX_STREAM_SUBSCRIPTIONS:
                raise GatewayError(
                    INVALID_ARGUMENTS,
                    f"A stream may subscribe to at most {MAX_STREAM_SUBSCRIPTIONS} resources; "
                    f"this one asked for {len(wanted)}.",
                    details={"limit": MAX_STREAM_SUBSCRIPTIONS},
                )
            if any(has_surrogate(u) for u in wanted):
                # No URI holds one, and the acknowledgement could not be encoded to send.
                raise GatewayError(
                    INVALID_ARGUMENTS, "A resource URI holds a lone surrogate, which is not text."
                )
            # Acknowledged are the resources the session could read (resolved as a read
            # resolves them), under their listed URIs; the stream hears of those only.
            uris: dict[str, None] = {}
            for uri in wanted:
                try:
                    uris[(await resources.resolve(call, uri, user)).uri] = None
                except GatewayError as exc:
                    if exc.code != NOT_FOUND:
                        raise
            heard = frozenset(uris)
            notifications = params.notifications.model_copy(
                update={"resource_subscriptions": list(uris)}
            )
            params = params.model_copy(update={"notifications": notifications})
        return await self.rt.notifier.listen(call.principal, ctx, params, heard.__contains__)
