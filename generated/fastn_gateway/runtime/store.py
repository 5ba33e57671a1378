"""The gateway's storage: one interface over SQLite (embedded default) and PostgreSQL.

SQLAlchemy Core only. Every timestamp is an integer of microseconds since the Unix epoch
(UTC), which sorts and compares the same way on every backend; `iso()` renders it.

Tables
    tenants      workspace, quota plan, `generation` (bumped whenever the tenant's
                 connections change or a user is removed, so caches keyed on it are never
                 stale)
    users        end users of a tenant, by the host application's external id
    api_keys     sha256 of the key only, display prefix, scopes, bound user, host-app flag,
                 expiry, revocation
    connections  tenant x connector: state, Fernet-sealed credentials, health timestamps
    flows        automation flows, one row per version
    events       append-only log (tool calls, connects, ...), ids sort by time; old events
                 are deleted only by `prune_events` (`admin events prune`)
    usage        call / error counters per tenant, UTC day and tool (a month is the sum of
                 its days; see `usage_rows`)

All methods are synchronous and thread-safe (the engine pools connections): the server
calls the slow ones from a worker thread. Write transactions on SQLite start with
`BEGIN IMMEDIATE` so concurrent writers wait on the busy timeout instead of failing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .catalog import ConnectorSpec, GatewaySpec
from .crypto import CredentialCipher, CredentialKeyError, load_cipher
from .templating import DNS_LABEL, PLACEHOLDER

# What the database's data means, written by each gateway that opens it: a gateway refuses a
# database of a newer version, which it would misread (an older build saw no usage counted by
# day, so its quota started again, and recreated memory's old shared full-text index empty).
# Raise it whenever the meaning of stored data changes. 1: the first; 2: usage counted per UTC
# day, and (SQLite) one memory full-text index per tenant; 3: memory's full-text index holds
# CJK runs as bigrams, through a `memory_search_text` SQL function older gateways lack; 4: it
# holds the text in NFKC, through `memory_search_text_v2` (the old function is dropped).
SCHEMA_VERSION = 4
KEY_PREFIX = "gwk"
SCOPES = ("read", "write")
STATES = ("active", "needs_reauth", "disconnected")
EVENT_TYPES = (
    "tool_call",
    "connect",
    "disconnect",
    "flow_created",
    "memory_update",
    "quota_exceeded",
)

US = 1_000_000
# The longest a key may live, as the gateway manifest's key_ttl_days allows: a longer one
# (3,000,000 days) was stored, then could not be shown (past the year 9999), nor listed.
MAX_KEY_TTL_DAYS = 3650
DAY_US = 86_400 * US
# `Store.prune_events`: events deleted per transaction, and the least pause between two.
PRUNE_BATCH = 2000
PRUNE_PAUSE = 0.01
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    """Whether `text` holds a control character: none belongs in a name or an id, and
    PostgreSQL cannot store a NUL."""
    return _CONTROL.search(text) is not None


def latin1_reading(text: str) -> str | None:
    """The other id `text` reads as when a client sends it in a header as Latin-1 bytes, or
    None: the gateway reads header bytes as UTF-8 first (`auth.header_text`), so an id whose
    Latin-1 bytes are also UTF-8 (`Ã¼` is 0xC3 0xBC, which is `ü`) could name another user."""
    try:
        other = text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    return other if other != text else None


class StoreError(Exception):
    """A store operation was refused; the message is safe to show to an operator."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


# --------------------------------------------------------------------------- time helpers


def db_reason(exc: BaseException) -> str:
    """The database's own one-line reason for a failure: SQLAlchemy's text adds the statement
    and its parameters, which hold the records' content."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def storage_failure(exc: BaseException) -> str | None:
    """What keeps the database from serving, when `exc` is an operational failure of it (not
    a bug, nor a record it refuses): "disk_full", "read_only" or "unavailable" (an outage, a
    lock held too long, an I/O error). None for any other exception."""
    if not isinstance(exc, OperationalError):
        return None
    reason = str(exc.orig)
    if getattr(exc.orig, "sqlstate", None) == "53100" or "disk is full" in reason:
        return "disk_full"  # SQLITE_FULL; PostgreSQL's disk_full
    if re.search(r"read-?only", reason, re.I):
        return "read_only"
    return "unavailable"


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return _iso_seconds(us // US) + f".{us % US:06d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (a naive one is taken as UTC); ValueError
    when it is none. RFC 3339 lets `T` and `Z` be written in lowercase, as the gateway's
    date-time check does: Python 3.11's fromisoformat takes a `t` but no `z`."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def parse_iso(value: str) -> int:
    """RFC 3339 -> microseconds. Naive timestamps are taken as UTC."""
    delta = parse_datetime(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


_PERIODS: dict[str, tuple[str, int, int]] = {}


def period_bounds(period: str, at_us: int) -> tuple[str, int, int]:
    """(period key, start, end) of the quota period containing `at_us` (UTC calendar)."""
    cached = _PERIODS.get(period)
    if cached is not None and cached[1] <= at_us < cached[2]:
        return cached
    found = _PERIODS[period] = _period_bounds(period, at_us)
    return found


def _period_bounds(period: str, at_us: int) -> tuple[str, int, int]:
    dt = datetime.fromtimestamp(at_us / US, tz=UTC)
    if period == "day":
        start = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        key = start.strftime("%Y-%m-%d")
        end_us = int(start.timestamp()) * US + DAY_US
        return key, int(start.timestamp()) * US, end_us
    start = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.strftime("%Y-%m"), int(start.timestamp()) * US, int(nxt.timestamp()) * US


def usage_day(at_us: int) -> str:
    """The key of the `usage` rows a call at `at_us` counts in: its UTC day, whatever the
    tenant's plan. A plan's period is read from them (`Store.usage_rows`), so usage stays a
    fact independent of the plan: switching plans loses no call."""
    return period_bounds("day", at_us)[0]


def month_of(day: str) -> str:
    """The month key (`2026-05`) of a day key (`2026-05-03`)."""
    return day[:7]


_MONTH_KEY = re.compile(r"\d{4}-\d{2}")


TENANT_ID_PREFIX = "tn_"  # the ids new_id("tn") makes


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event_id(at_us: int) -> str:
    """Ids that sort by time (fixed-width hex microseconds) with a random suffix (uniqueness
    only, not secrecy: the fast non-cryptographic generator is enough)."""
    return f"ev_{at_us:014x}{random.getrandbits(32):08x}"


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- schema

metadata = sa.MetaData()

schema_info = sa.Table(
    "gateway_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("tenant_id", "external_id", name="uq_users_tenant_external"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=True),
    sa.Column("can_assert_user", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("replaced_by", sa.String(40), nullable=True),
    sa.Index("ix_api_keys_tenant", "tenant_id"),
)

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("credentials", sa.Text, nullable=True),
    sa.Column("connected_at", sa.BigInteger, nullable=True),
    sa.Column("disconnected_at", sa.BigInteger, nullable=True),
    sa.Column("last_success_at", sa.BigInteger, nullable=True),
    sa.Column("last_error_at", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("flow_id", sa.String(40), nullable=False),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(40), nullable=True),
    sa.UniqueConstraint("tenant_id", "name", "version", name="uq_flows_tenant_name_version"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("connector", sa.String(64), nullable=True),
    sa.Column("tool", sa.String(64), nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("details", sa.Text, nullable=True),
    sa.Index("ix_events_tenant_id", "tenant_id", "id"),
    sa.Index("ix_events_tenant_connector_at", "tenant_id", "connector", "at"),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("tool", sa.String(64), primary_key=True),
    sa.Column("connector", sa.String(64), nullable=False, default=""),
    sa.Column("calls", sa.BigInteger, nullable=False, default=0),
    sa.Column("errors", sa.BigInteger, nullable=False, default=0),
)


# --------------------------------------------------------------------------- engine


def normalise_url(url: str) -> str:
    """Accept a SQLAlchemy URL, a postgres URL, or a plain SQLite file path."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" in url:
        return url
    return "sqlite:///" + str(Path(url).expanduser().resolve())


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory SQLite)."""
    parsed = sa.engine.make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database or "")


def make_engine(url: str) -> Engine:
    """An engine for `url` (SQLite file path or URL, or PostgreSQL URL).

    SQLite: the parent directory is created, and a new database file is readable by its owner
    only (it holds users' memories and the event history; SQLite gives its -wal and -shm files
    the same mode), WAL journal, foreign keys on, 30 s busy timeout, and write transactions
    use BEGIN IMMEDIATE (see `Store.write`).
    """
    full = normalise_url(url)
    parsed = sa.engine.make_url(full)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(full)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # an existing file keeps its mode
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = sa.create_engine(
            full, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if path is not None:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("gateway_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return sa.create_engine(full, pool_pre_ping=True, pool_size=10, max_overflow=20)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    plan: str
    generation: int
    created_at: int


@dataclass(frozen=True, slots=True)
class User:
    id: str
    tenant_id: str
    external_id: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """Everything about a key except the key itself."""

    id: str
    tenant_id: str
    name: str | None
    prefix: str
    scopes: tuple[str, ...]
    user_id: str | None
    user_external_id: str | None
    can_assert_user: bool
    created_at: int
    expires_at: int
    revoked_at: int | None

    def status(self, at_us: int) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= at_us:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    token: str  # shown once, never stored
    info: ApiKeyInfo


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key looked up by its hash, with what a request needs about its tenant."""

    info: ApiKeyInfo
    tenant_name: str
    plan: str
    generation: int


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    tenant_id: str
    connector: str
    state: str
    sealed_credentials: str | None
    connected_at: int | None
    disconnected_at: int | None
    last_success_at: int | None
    last_error_at: int | None
    last_error: str | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class TenantSnapshot:
    tenant: Tenant
    connections: Mapping[str, ConnectionRecord]
    active: frozenset[str] = field(init=False)  # connectors whose connection is active

    def __post_init__(self) -> None:
        active = frozenset(n for n, c in self.connections.items() if c.state == "active")
        object.__setattr__(self, "active", active)

    def connected_at(self, connector: str) -> int:
        """When `connector`'s connection was made (0 if unknown): a call's outcome concerns
        that connection only, not a reconnection made meanwhile."""
        return self.connections[connector].connected_at or 0


@dataclass(frozen=True, slots=True)
class FlowRecord:
    id: str
    flow_id: str
    tenant_id: str
    name: str
    version: int
    definition: Mapping[str, Any]
    created_at: int


# How the details of a refused call's event (or of a summary of refused calls) mark it, as
# stored (EventRecord.to_row: json.dumps): `"refused": true`.
_REFUSED: Final = json.dumps({"refused": True})[1:-1]


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    tenant_id: str
    type: str
    status: str
    at: int
    connector: str | None = None
    tool: str | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    details: Mapping[str, Any] | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "type": self.type,
            "status": self.status,
            "at": self.at,
            "connector": self.connector,
            "tool": self.tool,
            "duration_ms": self.duration_ms,
            "error_code": self.error_code,
            "details": json.dumps(dict(self.details), sort_keys=True) if self.details else None,
        }

    def to_tuple(self) -> tuple[Any, ...]:
        """The row in `_EVENT_COLUMNS` order."""
        return (
            self.id,
            self.tenant_id,
            self.type,
            self.status,
            self.at,
            self.connector,
            self.tool,
            self.duration_ms,
            self.error_code,
            json.dumps(dict(self.details), sort_keys=True) if self.details else None,
        )

    def to_wire(self) -> dict[str, Any]:
        """The `Event` shape of the manifests' types."""
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "at": iso(self.at),
            "connector": self.connector,
            "tool": self.tool,
            "duration_ms": self.duration_ms,
            "error_code": self.error_code,
            "details": dict(self.details or {}),
        }


_EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "type",
    "status",
    "at",
    "connector",
    "tool",
    "duration_ms",
    "error_code",
    "details",
)
_SQLITE_EVENT_INSERT = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})"
)


def storable(text: str | None) -> str | None:
    """`text` as every backend can store it: PostgreSQL's text columns refuse NUL, which a
    client can put in what it sends (an unknown tool's name, recorded in its event log)."""
    return None if text is None else text.replace("\x00", "\ufffd")


def make_event(
    tenant_id: str,
    type_: str,
    status: str = "ok",
    *,
    at: int | None = None,
    connector: str | None = None,
    tool: str | None = None,
    duration_ms: float | None = None,
    error_code: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> EventRecord:
    when = now_us() if at is None else at
    return EventRecord(
        id=event_id(when),
        tenant_id=tenant_id,
        type=type_,
        status=status,
        at=when,
        connector=storable(connector),
        tool=storable(tool),
        duration_ms=duration_ms,
        error_code=storable(error_code),
        details=details,
    )


@dataclass(frozen=True, slots=True)
class UsageRow:
    tool: str
    connector: str
    calls: int
    errors: int


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Counters accumulated in memory, added to the `usage` table in one batch."""

    tenant_id: str
    period: str
    tool: str
    connector: str
    calls: int
    errors: int


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What `Store.forget_user` erased."""

    registered: bool  # the user's registration was deleted
    keys: int  # keys bound to the user, now revoked and bound to no user
    items: int  # memory items, every version


@dataclass(frozen=True, slots=True)
class HealthDelta:
    """Latest outcome of calls through one connection, written in one batch."""

    tenant_id: str
    connector: str
    last_success_at: int | None
    last_error_at: int | None
    last_error: str | None


# --------------------------------------------------------------------------- the store


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.name, row.plan, row.generation, row.created_at)


def _user(row: Any) -> User:
    return User(row.id, row.tenant_id, row.external_id, row.created_at)


def _connection(row: Any) -> ConnectionRecord:
    return ConnectionRecord(
        tenant_id=row.tenant_id,
        connector=row.connector,
        state=row.state,
        sealed_credentials=row.credentials,
        connected_at=row.connected_at,
        disconnected_at=row.disconnected_at,
        last_success_at=row.last_success_at,
        last_error_at=row.last_error_at,
        last_error=row.last_error,
        updated_at=row.updated_at,
    )


def _event(row: Any) -> EventRecord:
    return EventRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        status=row.status,
        at=row.at,
        connector=row.connector,
        tool=row.tool,
        duration_ms=row.duration_ms,
        error_code=row.error_code,
        details=json.loads(row.details) if row.details else None,
    )


class TenantActivity(NamedTuple):
    """A tenant's recorded activity, as `Store.activity` reads it."""

    events: int  # events with an id above the floor asked for
    newest: str  # the newest event id ("" when none)
    calls: dict[tuple[str, str], int]  # (period, connector) -> calls


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.scopes,
    api_keys.c.user_id,
    users.c.external_id.label("user_external_id"),
    api_keys.c.can_assert_user,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)


class _KeyRow(NamedTuple):
    """A row of `Store._key_lookup`, in its column order."""

    id: str
    tenant_id: str
    name: str | None
    prefix: str
    scopes: str
    user_id: str | None
    user_external_id: str | None
    can_assert_user: Any
    created_at: int
    expires_at: int
    revoked_at: int | None
    tenant_name: str
    plan: str
    generation: int


def _key_record(row: Any) -> KeyRecord | None:
    if row is None:
        return None
    return KeyRecord(_key_info(row), row.tenant_name, row.plan, row.generation)


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(s for s in row.scopes.split(",") if s),
        user_id=row.user_id,
        user_external_id=row.user_external_id,
        can_assert_user=bool(row.can_assert_user),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def generate_token() -> tuple[str, str]:
    """A new API key and its display prefix. 32 random bytes, url-safe."""
    token = f"{KEY_PREFIX}_{secrets.token_urlsafe(32)}"
    return token, token[:12]


class Store:
    """The gateway's persistent state. See the module docstring."""

    def __init__(
        self, engine: Engine, gateway: GatewaySpec, cipher: CredentialCipher | None = None
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self._cipher = cipher
        self._dialect = engine.dialect.name
        self._key_lookup = (
            sa.select(
                *_KEY_COLUMNS,
                tenants.c.name.label("tenant_name"),
                tenants.c.plan,
                tenants.c.generation,
            )
            .select_from(
                api_keys.join(tenants, tenants.c.id == api_keys.c.tenant_id).outerjoin(
                    users, users.c.id == api_keys.c.user_id
                )
            )
            .where(api_keys.c.key_hash == sa.bindparam("h"))
        )

        self._local = threading.local()
        self._held: list[Any] = []
        self._held_lock = threading.Lock()
        compiled = self._key_lookup.compile(dialect=engine.dialect)
        self._key_lookup_sql = str(compiled)
        if self._dialect == "sqlite" and list(compiled.positiontup or ()) != ["h"]:
            raise StoreError("unexpected key lookup statement")  # pragma: no cover

    @property
    def is_sqlite(self) -> bool:
        return self._dialect == "sqlite"

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def write(self) -> Generator[Connection, None, None]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(gateway_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Generator[Connection, None, None]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def migrate(self) -> None:
        """Create missing tables; refuse a database written by a newer schema, and mark an
        older one as this schema's (so no older gateway opens it again and misreads it)."""
        with self.write() as conn:
            metadata.create_all(conn, checkfirst=True)
            current = conn.execute(sa.select(schema_info.c.version)).scalar()
            if current is None:
                conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION))
            elif current > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {current} is newer than this gateway "
                    f"({SCHEMA_VERSION}); upgrade the gateway"
                )
            elif current < SCHEMA_VERSION:
                conn.execute(schema_info.update().values(version=SCHEMA_VERSION))

    def check_writable(self) -> None:
        """Refuse a database this process cannot write (a read-only file, mount, role or
        replica): a gateway records every call, and served on such a database it kept every
        record in memory. Rewrites the schema version as it is (no new data)."""
        try:
            with self.write() as conn:
                conn.execute(
                    schema_info.update()
                    .where(schema_info.c.id == 1)
                    .values(version=schema_info.c.version)
                )
        except DBAPIError as exc:
            lines = str(exc.orig).strip().splitlines()
            reason = lines[0] if lines else type(exc.orig).__name__
            what = "is read-only" if re.search(r"read-?only", reason, re.I) else "cannot be written"
            raise StoreError(
                f"the database {what} ({reason}): the gateway records every call in it; make "
                "it writable for this user"
            ) from None

    def dispose(self) -> None:
        with self._held_lock:
            held, self._held = self._held, []
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()
        self.engine.dispose()

    def _upsert(self, table: sa.Table) -> Any:
        if self._dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    def _bump(self, conn: Connection, tenant_id: str) -> None:
        conn.execute(
            tenants.update()
            .where(tenants.c.id == tenant_id)
            .values(generation=tenants.c.generation + 1)
        )

    # ------------------------------------------------------------------ tenants

    def create_tenant(self, name: str, *, plan: str | None = None) -> Tenant:
        name = name.strip()
        if not name:
            raise StoreError("tenant name must not be empty")
        if name.startswith(TENANT_ID_PREFIX):
            # Commands take a tenant by id or by name: a name shaped like an id could stand for
            # another tenant.
            raise StoreError(
                f"tenant name {name!r} starts with {TENANT_ID_PREFIX!r}, which tenant ids use; "
                "choose another name"
            )
        plan_name = plan or self.gateway.default_plan
        if plan_name not in self.gateway.plans:
            raise StoreError(
                f"unknown plan {plan_name!r}; plans: {', '.join(sorted(self.gateway.plans))}"
            )
        tenant = Tenant(new_id("tn"), name, plan_name, 0, now_us())
        try:
            with self.write() as conn:
                conn.execute(
                    tenants.insert().values(
                        id=tenant.id,
                        name=tenant.name,
                        plan=tenant.plan,
                        generation=0,
                        created_at=tenant.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict(f"a tenant named {name!r} already exists") from None
        return tenant

    def ensure_tenant(self, name: str, *, plan: str | None = None) -> Tenant:
        existing = self.get_tenant(name)
        if existing is not None:
            return existing
        try:
            return self.create_tenant(name, plan=plan)
        except Conflict:
            found = self.get_tenant(name)
            assert found is not None
            return found

    def get_tenant(self, ref: str) -> Tenant | None:
        """A tenant by id, else by name (an id wins: a name never stands for another tenant,
        even in a database from before names shaped like ids were refused)."""
        with self.read() as conn:
            for column in (tenants.c.id, tenants.c.name):
                row = conn.execute(sa.select(tenants).where(column == ref)).first()
                if row is not None:
                    return _tenant(row)
        return None

    def require_tenant(self, ref: str) -> Tenant:
        tenant = self.get_tenant(ref)
        if tenant is None:
            raise NotFound(f"no tenant {ref!r}")
        return tenant

    def list_tenants(self) -> list[Tenant]:
        with self.read() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.name)).all()
        return [_tenant(r) for r in rows]

    def generations(self, tenant_ids: Sequence[str]) -> dict[str, int]:
        """Current `generation` of each tenant (to detect connection changes cheaply)."""
        if not tenant_ids:
            return {}
        with self.read() as conn:
            rows = conn.execute(
                sa.select(tenants.c.id, tenants.c.generation).where(
                    tenants.c.id.in_(list(tenant_ids))
                )
            ).all()
        return {r.id: int(r.generation) for r in rows}

    def activity(
        self, floors: Mapping[str, str | None], periods: Sequence[str]
    ) -> dict[str, TenantActivity]:
        """What each tenant of `floors` has recorded (for change announcements): how many of
        its events have an id above its floor (0 without a floor) and its newest event id, and
        its calls per (period, connector) in `periods` ("" is the native tools)."""
        out: dict[str, TenantActivity] = {}
        if not floors:
            return out
        e, u = events, usage
        with self.read() as conn:
            for tenant_id, floor in floors.items():
                if floor is None:
                    newest = conn.execute(
                        sa.select(sa.func.max(e.c.id)).where(e.c.tenant_id == tenant_id)
                    ).scalar()
                    out[tenant_id] = TenantActivity(0, newest or "", {})
                    continue
                count, newest = conn.execute(
                    sa.select(sa.func.count(), sa.func.max(e.c.id)).where(
                        e.c.tenant_id == tenant_id, e.c.id > floor
                    )
                ).one()
                out[tenant_id] = TenantActivity(int(count), max(newest or "", floor), {})
            rows = conn.execute(
                sa.select(u.c.tenant_id, u.c.period, u.c.connector, sa.func.sum(u.c.calls))
                .where(u.c.tenant_id.in_(list(floors)), u.c.period.in_(list(periods)))
                .group_by(u.c.tenant_id, u.c.period, u.c.connector)
            ).all()
        for tenant_id, period, connector, calls in rows:
            out[tenant_id].calls[(period, connector or "")] = int(calls)
        return out

    def live_keys(self, key_ids: Sequence[str]) -> set[str]:
        """Those of `key_ids` that are neither revoked nor expired (nor gone)."""
        if not key_ids:
            return set()
        with self.read() as conn:
            rows = conn.execute(
                sa.select(api_keys.c.id).where(
                    api_keys.c.id.in_(list(key_ids)),
                    api_keys.c.revoked_at.is_(None),
                    api_keys.c.expires_at > now_us(),
                )
            ).all()
        return {r.id for r in rows}

    def set_plan(self, tenant_id: str, plan: str) -> Tenant:
        if plan not in self.gateway.plans:
            raise StoreError(f"unknown plan {plan!r}")
        with self.write() as conn:
            conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(plan=plan))
            self._bump(conn, tenant_id)
        return self.require_tenant(tenant_id)

    # ------------------------------------------------------------------ users

    def register_user(self, tenant_id: str, external_id: str) -> tuple[User, bool]:
        """Register (idempotently) a user; returns (user, created)."""
        external_id = external_id.strip()
        if not external_id or len(external_id) > 200 or has_control_chars(external_id):
            raise StoreError("user id must be 1-200 characters, without control characters")
        other = latin1_reading(external_id)
        if other is not None:
            raise StoreError(
                f"user id {external_id!r} is refused: sent as Latin-1 in the X-Gateway-User "
                f"header it reads as the user {other!r}"
            )
        existing = self.get_user(tenant_id, external_id)
        if existing is not None:
            return existing, False
        user = User(new_id("usr"), tenant_id, external_id, now_us())
        try:
            with self.write() as conn:
                conn.execute(
                    users.insert().values(
                        id=user.id,
                        tenant_id=tenant_id,
                        external_id=external_id,
                        created_at=user.created_at,
                    )
                )
        except IntegrityError:
            again = self.get_user(tenant_id, external_id)
            if again is None:
                raise NotFound(f"no tenant {tenant_id!r}") from None
            return again, False
        return user, True

    def get_user(self, tenant_id: str, external_id: str) -> User | None:
        if has_control_chars(external_id):  # never registered (and PostgreSQL refuses NUL)
            return None
        with self.read() as conn:
            row = conn.execute(
                sa.select(users).where(
                    users.c.tenant_id == tenant_id, users.c.external_id == external_id
                )
            ).first()
        return _user(row) if row is not None else None

    @staticmethod
    def user_registered(conn: Connection, tenant_id: str, external_id: str) -> bool:
        """Whether the user is registered, read in the caller's transaction: a memory write
        checks it under its lock (`MemoryStore`), so it never outlives `forget_user`."""
        if has_control_chars(external_id):
            return False
        found = conn.execute(
            sa.select(users.c.id).where(
                users.c.tenant_id == tenant_id, users.c.external_id == external_id
            )
        ).first()
        return found is not None

    def list_users(self, tenant_id: str) -> list[User]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(users).where(users.c.tenant_id == tenant_id).order_by(users.c.external_id)
            ).all()
        return [_user(r) for r in rows]

    # ------------------------------------------------------------------ API keys

    def issue_key(
        self,
        tenant_id: str,
        *,
        scopes: Sequence[str] = SCOPES,
        user: str | None = None,
        ttl_days: float | None = None,
        host_app: bool = False,
        name: str | None = None,
    ) -> IssuedKey:
        """Issue a key. `user` is the external id of a registered user of the tenant."""
        clean = tuple(s for s in SCOPES if s in set(scopes))
        unknown = set(scopes) - set(SCOPES)
        if unknown or not clean:
            raise StoreError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
        ttl = self.gateway.key_ttl_days if ttl_days is None else ttl_days
        if not 0 < ttl <= MAX_KEY_TTL_DAYS:  # NaN too
            raise StoreError(
                f"a key's ttl is more than 0 and at most {MAX_KEY_TTL_DAYS:,} days, not {ttl:g}"
            )
        self.require_tenant(tenant_id)
        user_row: User | None = None
        if user is not None:
            user_row = self.get_user(tenant_id, user)
            if user_row is None:
                raise NotFound(f"no user {user!r} in this tenant; register it first")
        token, prefix = generate_token()
        created = now_us()
        info = ApiKeyInfo(
            id=new_id("key"),
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            scopes=clean,
            user_id=user_row.id if user_row else None,
            user_external_id=user_row.external_id if user_row else None,
            can_assert_user=host_app,
            created_at=created,
            expires_at=created + int(ttl * DAY_US),
            revoked_at=None,
        )
        with self.write() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=info.id,
                    tenant_id=tenant_id,
                    name=name,
                    prefix=prefix,
                    key_hash=hash_key(token),
                    scopes=",".join(clean),
                    user_id=info.user_id,
                    can_assert_user=host_app,
                    created_at=created,
                    expires_at=info.expires_at,
                )
            )
        return IssuedKey(token, info)

    def _key_query(self) -> sa.Select[*tuple[Any, ...]]:
        return sa.select(*_KEY_COLUMNS).select_from(
            api_keys.outerjoin(users, users.c.id == api_keys.c.user_id)
        )

    def get_key(self, key_id: str) -> ApiKeyInfo | None:
        with self.read() as conn:
            row = conn.execute(self._key_query().where(api_keys.c.id == key_id)).first()
        return _key_info(row) if row is not None else None

    def list_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        with self.read() as conn:
            rows = conn.execute(
                self._key_query()
                .where(api_keys.c.tenant_id == tenant_id)
                .order_by(api_keys.c.created_at)
            ).all()
        return [_key_info(r) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        with self.write() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_us())
            )
        info = self.get_key(key_id)
        if info is None:
            raise NotFound(f"no key {key_id!r}")
        return info

    def rotate_key(self, key_id: str, *, ttl_days: float | None = None) -> IssuedKey:
        """Issue a replacement with the same tenant, scopes, user and flags; revoke the old."""
        old = self.get_key(key_id)
        if old is None:
            raise NotFound(f"no key {key_id!r}")
        if old.revoked_at is not None:
            raise Conflict(f"key {key_id} is revoked; issue a new key instead")
        issued = self.issue_key(
            old.tenant_id,
            scopes=old.scopes,
            user=old.user_external_id,
            ttl_days=ttl_days,
            host_app=old.can_assert_user,
            name=old.name,
        )
        with self.write() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(revoked_at=now_us(), replaced_by=issued.info.id)
            )
        return issued

    def lookup_key(self, token: str) -> KeyRecord | None:
        """The key whose hash matches `token` (revoked and expired ones included).

        This runs on every request. On SQLite it uses a connection kept by the calling
        thread and a precompiled statement (autocommit: each SELECT sees the latest commit),
        which costs a fraction of a SQLAlchemy round trip; elsewhere it is a plain query.
        """
        if self.is_sqlite:
            return self._lookup_key_raw(hash_key(token))
        with self.engine.connect() as conn:
            row = conn.execute(self._key_lookup, {"h": hash_key(token)}).first()
            conn.rollback()
        return _key_record(row)

    def _lookup_key_raw(self, key_hash: str) -> KeyRecord | None:
        """SQLite: rows are cached per thread until the database changes.

        `PRAGMA data_version` changes whenever another connection (any thread or process)
        commits, so a revocation or a new key is seen on the very next lookup, while lookups
        between commits cost one pragma instead of a query."""
        local = self._local
        cur = getattr(local, "cursor", None)
        if cur is None:
            fairy = self.engine.raw_connection()
            with self._held_lock:
                self._held.append(fairy)
            driver: Any = fairy.driver_connection
            cur = local.cursor = driver.cursor()
            local.cache = dict[str, KeyRecord | None]()
            local.version = None
        # fetchall() runs each statement to completion, so no read snapshot stays open.
        version = cur.execute("PRAGMA data_version").fetchall()[0][0]
        cache: dict[str, KeyRecord | None] = local.cache
        if version != local.version:
            cache.clear()
            local.version = version
        elif key_hash in cache:
            return cache[key_hash]
        rows = cur.execute(self._key_lookup_sql, (key_hash,)).fetchall()
        record = _key_record(_KeyRow(*rows[0]) if rows else None)
        if len(cache) >= 10_000:
            cache.clear()
        cache[key_hash] = record
        return record

    # ------------------------------------------------------------------ connections

    def _connector(self, name: str) -> ConnectorSpec:
        spec = self.gateway.connectors.get(name)
        if spec is None:
            known = ", ".join(sorted(self.gateway.connectors))
            raise NotFound(f"unknown connector {name!r}; connectors: {known}")
        return spec

    def _check_fields(self, spec: ConnectorSpec, credentials: Mapping[str, str]) -> dict[str, str]:
        known = {f.name for f in spec.auth.fields}
        unknown = sorted(set(credentials) - known)
        if unknown:
            raise StoreError(
                f"{spec.name} has no credential field(s) {', '.join(unknown)}; "
                f"fields: {', '.join(sorted(known)) or '(none)'}"
            )
        missing = [f.name for f in spec.auth.fields if f.required and not credentials.get(f.name)]
        if missing:
            raise StoreError(f"{spec.name} needs credential field(s) {', '.join(missing)}")
        for m in PLACEHOLDER.finditer(spec.base_url):  # a part of the upstream's host name
            value = credentials.get(m.group(1))
            if value and not DNS_LABEL.match(str(value)):
                raise StoreError(
                    f"{spec.name} credential field {m.group(1)} must be one host name label "
                    f"(letters, digits and -, as in {spec.base_url}), not {str(value)[:40]!r}"
                )
        return {k: str(v) for k, v in credentials.items()}

    @property
    def cipher(self) -> CredentialCipher:
        if self._cipher is None:
            raise StoreError("no credential encryption key configured")
        return self._cipher

    def derive_key(self, purpose: str) -> bytes | None:
        """A key for `purpose` that every process on this store derives alike (from the
        credential key), or None without one."""
        return None if self._cipher is None else self._cipher.derive(purpose)

    def connect(
        self, tenant_id: str, connector: str, credentials: Mapping[str, str]
    ) -> ConnectionRecord:
        """Connect (or reconnect) a connector with its credentials; logs a `connect` event.

        A reconnection starts a new connection: its health (last success, last error) starts
        empty, and outcomes of calls that began before it are not applied to it
        (`write_batch`).
        """
        spec = self._connector(connector)
        creds = self._check_fields(spec, credentials)
        sealed = self.cipher.encrypt(creds) if creds else None
        self.require_tenant(tenant_id)
        at = now_us()
        values = {
            "state": "active",
            "credentials": sealed,
            "connected_at": at,
            "disconnected_at": None,
            "last_success_at": None,
            "last_error": None,
            "last_error_at": None,
            "updated_at": at,
        }
        stmt = self._upsert(connections).values(tenant_id=tenant_id, connector=connector, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", "connector"], set_=values)
        event = make_event(tenant_id, "connect", connector=connector, at=at)
        with self.write() as conn:
            conn.execute(stmt)
            conn.execute(events.insert().values(**event.to_row()))
            self._bump(conn, tenant_id)
        record = self.get_connection(tenant_id, connector)
        assert record is not None
        return record

    def disconnect(self, tenant_id: str, connector: str) -> ConnectionRecord:
        """Disconnect: credentials are erased, the row stays for history."""
        at = now_us()
        with self.write() as conn:
            result = conn.execute(
                connections.update()
                .where(
                    connections.c.tenant_id == tenant_id,
                    connections.c.connector == connector,
                    connections.c.state != "disconnected",
                )
                .values(state="disconnected", credentials=None, disconnected_at=at, updated_at=at)
            )
            if result.rowcount == 0:
                self._connector(connector)  # an unknown one is said as such, with the known
                raise NotFound(f"{connector} is not connected for this tenant")
            event = make_event(tenant_id, "disconnect", connector=connector, at=at)
            conn.execute(events.insert().values(**event.to_row()))
            self._bump(conn, tenant_id)
        record = self.get_connection(tenant_id, connector)
        assert record is not None
        return record

    @staticmethod
    def _made_at(connected_at: int | None) -> list[sa.ColumnElement[bool]]:
        """The condition that the connection is still the one made at `connected_at` (none
        when None): what a call learnt about its credentials says nothing about a
        reconnection's."""
        if connected_at is None:
            return []
        return [sa.func.coalesce(connections.c.connected_at, 0) == connected_at]

    def mark_needs_reauth(
        self, tenant_id: str, connector: str, error_code: str, *, connected_at: int | None = None
    ) -> bool:
        """Mark an active connection (the one made at `connected_at`, when given) as needing
        new credentials. True if it changed."""
        at = now_us()
        with self.write() as conn:
            result = conn.execute(
                connections.update()
                .where(
                    connections.c.tenant_id == tenant_id,
                    connections.c.connector == connector,
                    connections.c.state == "active",
                    *self._made_at(connected_at),
                )
                .values(
                    state="needs_reauth",
                    last_error=error_code,
                    last_error_at=at,
                    updated_at=at,
                )
            )
            if result.rowcount:
                self._bump(conn, tenant_id)
        return bool(result.rowcount)

    def update_credentials(
        self,
        tenant_id: str,
        connector: str,
        credentials: Mapping[str, str],
        *,
        connected_at: int | None = None,
    ) -> None:
        """Merge refreshed credentials (e.g. a new OAuth access token, perhaps a rotated
        refresh token) into an active connection's stored ones, in one transaction; with
        `connected_at`, only while the connection is still the one made then (a reconnection
        may hold another account's credentials)."""
        # The update repeats the select's conditions: on PostgreSQL a reconnection may commit
        # in between, and the update, which waits for its row, then leaves it alone.
        same = (
            connections.c.tenant_id == tenant_id,
            connections.c.connector == connector,
            connections.c.state == "active",
            *self._made_at(connected_at),
        )
        with self.write() as conn:
            sealed = conn.execute(sa.select(connections.c.credentials).where(*same)).scalar()
            if sealed is None:
                return
            merged = {**self.cipher.decrypt(sealed), **{k: str(v) for k, v in credentials.items()}}
            result = conn.execute(
                connections.update()
                .where(*same)
                .values(credentials=self.cipher.encrypt(merged), updated_at=now_us())
            )
            if result.rowcount:
                self._bump(conn, tenant_id)

    def get_connection(self, tenant_id: str, connector: str) -> ConnectionRecord | None:
        with self.read() as conn:
            row = conn.execute(
                sa.select(connections).where(
                    connections.c.tenant_id == tenant_id, connections.c.connector == connector
                )
            ).first()
        return _connection(row) if row is not None else None

    def list_connections(self, tenant_id: str) -> list[ConnectionRecord]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(connections)
                .where(connections.c.tenant_id == tenant_id)
                .order_by(connections.c.connector)
            ).all()
        return [_connection(r) for r in rows]

    def snapshot(self, tenant_id: str) -> TenantSnapshot:
        """The tenant and all its connections, read in one transaction."""
        with self.read() as conn:
            trow = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
            if trow is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            rows = conn.execute(
                sa.select(connections).where(connections.c.tenant_id == tenant_id)
            ).all()
        return TenantSnapshot(_tenant(trow), {r.connector: _connection(r) for r in rows})

    def key_opens_none(self, sample: int = 20) -> int:
        """How many stored credentials the configured key was tried on and could open none of
        (the `sample` most recently written), or 0 when it opens one of them or none are
        stored. A key that opens none is not the key they were sealed with: credentials it
        seals would be as unreadable to the gateways that use that one."""
        with self.read() as conn:
            sealed = (
                conn.execute(
                    sa.select(connections.c.credentials)
                    .where(connections.c.credentials.is_not(None))
                    .order_by(connections.c.updated_at.desc())
                    .limit(sample)
                )
                .scalars()
                .all()
            )
        for value in sealed:
            try:
                self.cipher.decrypt(value)
            except CredentialKeyError:
                continue
            return 0
        return len(sealed)

    def open_credentials(self, record: ConnectionRecord) -> dict[str, str]:
        if record.sealed_credentials is None:
            return {}
        return self.cipher.decrypt(record.sealed_credentials)

    # ------------------------------------------------------------------ flows

    def create_flow(
        self,
        tenant_id: str,
        name: str,
        definition: Mapping[str, Any],
        *,
        created_by: str | None = None,
    ) -> FlowRecord:
        """Store a flow; a name already used by the tenant gets the next version."""
        body = json.dumps(dict(definition), sort_keys=True)
        for _attempt in range(5):
            at = now_us()
            try:
                with self.write() as conn:
                    latest = conn.execute(
                        sa.select(flows.c.flow_id, flows.c.version)
                        .where(flows.c.tenant_id == tenant_id, flows.c.name == name)
                        .order_by(flows.c.version.desc())
                        .limit(1)
                    ).first()
                    flow_id = latest.flow_id if latest is not None else new_id("flow")
                    version = latest.version + 1 if latest is not None else 1
                    record = FlowRecord(
                        new_id("fv"), flow_id, tenant_id, name, version, dict(definition), at
                    )
                    conn.execute(
                        flows.insert().values(
                            id=record.id,
                            flow_id=flow_id,
                            tenant_id=tenant_id,
                            name=name,
                            version=version,
                            definition=body,
                            created_at=at,
                            created_by=created_by,
                        )
                    )
                    event = make_event(
                        tenant_id,
                        "flow_created",
                        at=at,
                        details={"flow_id": flow_id, "name": name, "version": version},
                    )
                    conn.execute(events.insert().values(**event.to_row()))
                return record
            except IntegrityError:
                continue  # a concurrent writer took this version number
        raise Conflict(f"could not store flow {name!r}: too many concurrent versions")

    def list_flows(self, tenant_id: str) -> list[FlowRecord]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(flows)
                .where(flows.c.tenant_id == tenant_id)
                .order_by(flows.c.name, flows.c.version)
            ).all()
        return [
            FlowRecord(
                r.id,
                r.flow_id,
                r.tenant_id,
                r.name,
                r.version,
                json.loads(r.definition),
                r.created_at,
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ events & usage

    def write_batch(
        self,
        event_records: Sequence[EventRecord],
        usage_deltas: Sequence[UsageDelta] = (),
        health: Sequence[HealthDelta] = (),
    ) -> None:
        """Persist what the recorder accumulated, in one transaction."""
        if not event_records and not usage_deltas and not health:
            return
        with self.write() as conn:
            if event_records and self.is_sqlite:
                # executemany on the driver: a fraction of the per-row cost of Core inserts
                conn.exec_driver_sql(_SQLITE_EVENT_INSERT, [e.to_tuple() for e in event_records])
            elif event_records:
                conn.execute(events.insert(), [e.to_row() for e in event_records])
            for d in usage_deltas:
                stmt = self._upsert(usage).values(
                    tenant_id=d.tenant_id,
                    period=d.period,
                    tool=d.tool,
                    connector=d.connector,
                    calls=d.calls,
                    errors=d.errors,
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "period", "tool"],
                    set_={
                        "calls": usage.c.calls + stmt.excluded.calls,
                        "errors": usage.c.errors + stmt.excluded.errors,
                    },
                )
                conn.execute(stmt)
            for h in health:
                # Each outcome applies only to the connection it was made through (a call that
                # began before the last (re)connection says nothing about the new credentials),
                # and only if it is the latest: batches may arrive out of order after a retry.
                # One statement per outcome, the same on SQLite and PostgreSQL.
                for column, at, extra in (
                    (connections.c.last_success_at, h.last_success_at, {}),
                    (connections.c.last_error_at, h.last_error_at, {"last_error": h.last_error}),
                ):
                    if at is None:
                        continue
                    conn.execute(
                        connections.update()
                        .where(
                            connections.c.tenant_id == h.tenant_id,
                            connections.c.connector == h.connector,
                            sa.func.coalesce(connections.c.connected_at, 0) <= at,
                            sa.func.coalesce(column, 0) <= at,
                        )
                        .values({column: at, **extra})
                    )

    def append_events(self, event_records: Sequence[EventRecord]) -> None:
        self.write_batch(event_records)

    def query_events(
        self,
        tenant_id: str,
        *,
        type_: str | None = None,
        status: str | None = None,
        connector: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        """Events of a tenant, newest first."""
        q = sa.select(events).where(events.c.tenant_id == tenant_id)
        if type_ is not None:
            q = q.where(events.c.type == type_)
        if status is not None:
            q = q.where(events.c.status == status)
        if connector is not None:
            q = q.where(events.c.connector == connector)
        if since is not None:
            q = q.where(events.c.at >= since)
        if until is not None:
            q = q.where(events.c.at <= until)
        if before_id is not None:
            q = q.where(events.c.id < before_id)
        q = q.order_by(events.c.id.desc()).limit(limit)
        with self.read() as conn:
            rows = conn.execute(q).all()
        return [_event(r) for r in rows]

    def call_stats(self, tenant_id: str, connector: str, since: int) -> tuple[int, int]:
        """(tool calls, failed tool calls) through `connector` since `since`. Refused calls
        are not calls here, as in usage: neither their events (`"refused": true` in the
        details) nor the summaries of those not stored one by one (`refused_calls`, which
        earlier gateways wrote without the mark) count."""
        d = events.c.details
        q = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((events.c.status == "error", 1), else_=0)), 0),
        ).where(
            events.c.tenant_id == tenant_id,
            events.c.connector == connector,
            events.c.type == "tool_call",
            events.c.at >= since,
            sa.or_(d.is_(None), ~d.contains(_REFUSED, autoescape=True)),
            sa.or_(d.is_(None), ~d.contains('"refused_calls"', autoescape=True)),
        )
        with self.read() as conn:
            row = conn.execute(q).one()
        return int(row[0]), int(row[1])

    def usage_rows(self, tenant_id: str, period: str) -> list[UsageRow]:
        """The calls and errors per tool in `period`: a day key (`2026-05-03`), or a month key
        (`2026-05`), which sums the month's days. Calls are counted by day; a database from
        before that may hold rows under a month key (the tenant's plan was monthly), which
        count toward that month but toward none of its days."""
        calls = sa.func.sum(usage.c.calls)
        with self.read() as conn:
            rows = conn.execute(
                sa.select(
                    usage.c.tool,
                    sa.func.max(usage.c.connector).label("connector"),
                    calls.label("calls"),
                    sa.func.sum(usage.c.errors).label("errors"),
                )
                .where(usage.c.tenant_id == tenant_id, _usage_in(period))
                .group_by(usage.c.tool)
                .order_by(usage.c.tool)
            ).all()
        return [UsageRow(r.tool, r.connector, int(r.calls), int(r.errors)) for r in rows]

    def usage_totals(self, tenant_id: str, period: str) -> tuple[int, dict[str, int]]:
        """(calls in the period, calls per connector) from the persisted counters; `period`
        as in `usage_rows`."""
        return _totals((r.connector, r.calls) for r in self.usage_rows(tenant_id, period))

    def usage_day_totals(self, tenant_id: str, day: str) -> dict[str, tuple[int, dict[str, int]]]:
        """`usage_totals` of the day key `day` and of its month, in one read (what the quota
        tracker settles after each batch)."""
        month = month_of(day)
        with self.read() as conn:
            rows = conn.execute(
                sa.select(usage.c.period, usage.c.connector, sa.func.sum(usage.c.calls))
                .where(usage.c.tenant_id == tenant_id, _usage_in(month))
                .group_by(usage.c.period, usage.c.connector)
            ).all()
        return {
            day: _totals((connector, int(n)) for period, connector, n in rows if period == day),
            month: _totals((connector, int(n)) for _period, connector, n in rows),
        }

    # ------------------------------------------------------------------ retention and erasure

    def count_events_before(self, before: int, *, tenant_id: str | None = None) -> int:
        """How many events (of `tenant_id`, else of every tenant) were recorded before
        `before` (what `prune_events` would delete)."""
        with self.read() as conn:
            found = conn.execute(
                sa.select(sa.func.count()).select_from(events).where(*_older(before, tenant_id))
            ).scalar()
        return int(found or 0)

    def prune_events(
        self,
        before: int,
        *,
        tenant_id: str | None = None,
        batch: int = PRUNE_BATCH,
        pause: Callable[[float], None] = time.sleep,
    ) -> int:
        """Delete the events (of `tenant_id`, else of every tenant) recorded before `before`,
        oldest first, `batch` rows per transaction; returns how many.

        Each batch is one short write transaction found through an index (event ids sort by
        time: every event recorded before `before` has an id below `ev_<before>`), so a live
        gateway's writes wait for one batch at most: between batches this pauses as long as
        the batch took (at least PRUNE_PAUSE), which lets SQLite writers that are waiting on
        the busy timeout in. Usage counters (the quota) are not events and stay as they are."""
        deleted = 0
        last = ""
        while True:
            started = time.monotonic()
            with self.write() as conn:
                ids = (
                    conn.execute(
                        sa.select(events.c.id)
                        .where(events.c.id > last, *_older(before, tenant_id))
                        .order_by(events.c.id)
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if ids:
                    # The batch's id range, with the same conditions: what it found, no more.
                    conn.execute(
                        events.delete().where(
                            events.c.id > last, events.c.id <= ids[-1], *_older(before, tenant_id)
                        )
                    )
            deleted += len(ids)
            if len(ids) < batch:
                return deleted
            last = ids[-1]
            pause(max(time.monotonic() - started, PRUNE_PAUSE))

    def forget_user(
        self,
        tenant_id: str,
        external_id: str,
        *,
        erase_memory: Callable[[Connection, str, str], int] | None = None,
    ) -> Forgotten:
        """Erase a user: its memory (`erase_memory(conn, tenant_id, user)`, which returns the
        items removed), its registration, and the keys bound to it (revoked, and bound to no
        user: they stay listed as revoked), in one transaction, so a failure erases nothing.
        The tenant's generation moves, so serving gateways forget that the user was registered.
        NotFound when the tenant knows neither the user nor any memory of it.

        Events need nothing: none names a user, and a memory update's records only how many
        items it stored (server.py). On SQLite, secure_delete is on for the transaction, so
        the freed pages are overwritten rather than left holding the user's text (PostgreSQL
        leaves dead rows to VACUUM)."""
        items, keys, user = 0, 0, None
        with self.write() as conn:
            secure = None
            if self.is_sqlite:
                secure = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            try:
                if erase_memory is not None:
                    items = erase_memory(conn, tenant_id, external_id)
                user = conn.execute(
                    sa.select(users.c.id).where(
                        users.c.tenant_id == tenant_id, users.c.external_id == external_id
                    )
                ).scalar()
                if user is not None:
                    keys = conn.execute(
                        api_keys.update()
                        .where(api_keys.c.user_id == user)
                        .values(
                            user_id=None,
                            revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now_us()),
                        )
                    ).rowcount
                    conn.execute(users.delete().where(users.c.id == user))
                if user is None and not items:
                    raise NotFound(f"no user {external_id!r} in this tenant, and no memory of it")
                self._bump(conn, tenant_id)
            finally:
                if secure is not None:
                    conn.exec_driver_sql(f"PRAGMA secure_delete = {int(secure)}")
        return Forgotten(registered=user is not None, keys=keys, items=items)

    def truncate_log(self) -> bool:
        """SQLite: checkpoint the write-ahead log and truncate it to nothing, so that pages
        written before (an erased user's text, say) leave the -wal file too. False when
        readers kept it from completing (the next checkpoint reuses those pages); True on
        other backends."""
        if not self.is_sqlite:
            return True
        with self.engine.connect() as conn:
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            conn.rollback()
        return busy is None or not busy[0]


def _totals(rows: Iterable[tuple[str, int]]) -> tuple[int, dict[str, int]]:
    """(calls, calls per connector) of (connector, calls) pairs ("" is no connector)."""
    total = 0
    per: dict[str, int] = {}
    for connector, calls in rows:
        total += calls
        if connector:
            per[connector] = per.get(connector, 0) + calls
    return total, per


def _older(before: int, tenant_id: str | None) -> list[sa.ColumnElement[bool]]:
    """The events recorded before `before` (of `tenant_id`, when given). The id bound comes
    first: ids sort by time (`event_id`), so an index finds them."""
    found = [events.c.id < f"ev_{max(before, 0):014x}", events.c.at < before]
    if tenant_id is not None:
        found.append(events.c.tenant_id == tenant_id)
    return found


def _usage_in(period: str) -> sa.ColumnElement[bool]:
    """The `usage` rows counted in `period`: the rows of that key, and for a month key the
    rows of its days too (a range on the primary key; digits sort alike in every collation)."""
    if _MONTH_KEY.fullmatch(period):
        return sa.or_(
            usage.c.period == period, usage.c.period.between(f"{period}-01", f"{period}-31")
        )
    return usage.c.period == period


def default_database_url(gateway: GatewaySpec, environ: Mapping[str, str]) -> str:
    """`<IMPORT_NAME>_DATABASE_URL`, else the embedded SQLite file ./var/<import_name>.db."""
    env = gateway.import_name.upper() + "_DATABASE_URL"
    return environ.get(env) or str(Path("var") / f"{gateway.import_name}.db")


def key_file_of(url: str) -> Path | None:
    """The credential key file of the database at `url`: next to a SQLite file, else None."""
    path = sqlite_path(url)
    return path.with_name(path.name + ".key") if path is not None else None


def open_store(gateway: GatewaySpec, url: str, *, environ: Mapping[str, str]) -> Store:
    """The store at `url` (created and migrated), with the deployment's credential key: the
    environment's, else (SQLite) a key file next to the database."""
    cipher = load_cipher(gateway.import_name, environ, key_file=key_file_of(url))
    store = Store(make_engine(url), gateway, cipher)
    store.migrate()
    return store
