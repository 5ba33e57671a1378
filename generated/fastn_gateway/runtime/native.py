"""The six built-in `fastn_*` tools, implemented on the store.

Each handler takes the call's `NativeCall` (runtime, verified principal, tenant snapshot) and
the already-validated arguments, and returns a dict matching the tool's output schema in
manifests/native.yaml (the server validates it again before it leaves). Failures are
`GatewayError`s with stable codes. Tenant and user come from the principal only.

Handlers that report on calls (`get_integration_status`, `get_event_history`,
`get_usage_summary`) first flush the recorder, so a caller always sees its own calls.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from .auth import Principal
from .catalog import ToolSpec
from .errors import INVALID_ARGUMENTS, MAX_ERRORS, NOT_FOUND, GatewayError
from .store import (
    DAY_US,
    EVENT_TYPES,
    ConnectionRecord,
    TenantSnapshot,
    has_control_chars,
    iso,
    now_us,
    parse_iso,
    period_bounds,
    usage_day,
)

if TYPE_CHECKING:
    from .server import GatewayRuntime


@dataclass(frozen=True, slots=True)
class NativeCall:
    runtime: GatewayRuntime
    principal: Principal
    snapshot: TenantSnapshot
    tool: str | None = None  # the tool called (None: a resource read)
    # The session's user, as a tool that acts for a user gets it: raises the GatewayError such
    # a tool's call fails with when the session has none (None: only the key's bound user).
    require_user: Callable[[], Awaitable[str]] | None = None
    notes: list[str] = field(default_factory=list)  # for the model, beside a tool's result


Handler = Callable[[NativeCall, Mapping[str, Any]], Awaitable[dict[str, Any]]]

_EVENT_ID = re.compile(r"^ev_[0-9a-f]{14}[0-9a-f]{8}$")


# --------------------------------------------------------------------------- helpers


UNSTORED_NOTE: Final = (
    "The gateway cannot store new records just now: the most recent calls and events may be "
    "missing from this answer. They are kept, and stored once it can."
)


async def flush_records(call: NativeCall) -> None:
    """Make the calls recorded so far visible to the read that follows. While they cannot be
    written (a read-only database, a full disk), the read answers from what is stored, and a
    note says that the latest records are missing."""
    if await call.runtime.flush_records() is not None and UNSTORED_NOTE not in call.notes:
        call.notes.append(UNSTORED_NOTE)


def encode_cursor(kind: str, value: str) -> str:
    raw = json.dumps({"k": kind, "v": value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> str:
    """The value of a cursor made by `encode_cursor(kind, ...)`; invalid_arguments otherwise."""
    try:
        pad = "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(cursor + pad))
        if isinstance(data, dict):
            fields = cast("dict[str, object]", data)  # a JSON object: its keys are strings
            value = fields.get("v")
            if fields.get("k") == kind and isinstance(value, str):
                return value
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        pass
    raise GatewayError(
        INVALID_ARGUMENTS,
        "The cursor is not valid here; pass next_cursor from the previous call unchanged.",
        details={"errors": [{"path": "/cursor", "message": "invalid cursor"}]},
    )


def _arg_error(path: str, message: str) -> GatewayError:
    return GatewayError(
        INVALID_ARGUMENTS,
        f"Invalid arguments: {path}: {message}",
        details={"errors": [{"path": path, "message": message}]},
    )


def _timestamp(args: Mapping[str, Any], name: str) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    try:
        return parse_iso(str(value))
    except ValueError:
        raise _arg_error(f"/{name}", "not an RFC 3339 timestamp") from None


def _title(call: NativeCall, connector: str) -> str:
    spec = call.runtime.gateway.connectors.get(connector)
    return spec.title if spec else connector


def _tool_count(call: NativeCall, connector: str) -> int:
    spec = call.runtime.gateway.connectors.get(connector)
    return len(spec.tools) if spec else 0


def _integration(call: NativeCall, rec: ConnectionRecord) -> dict[str, Any]:
    return {
        "connector": rec.connector,
        "title": _title(call, rec.connector),
        "state": rec.state,
        "connected_at": iso(rec.connected_at),
        "tool_count": _tool_count(call, rec.connector),
    }


def _known_connections(call: NativeCall) -> list[ConnectionRecord]:
    """The tenant's connections whose connector this gateway still ships, by name."""
    gw = call.runtime.gateway
    return [rec for name, rec in sorted(call.snapshot.connections.items()) if name in gw.connectors]


# --------------------------------------------------------------------------- cron


@dataclass(frozen=True, slots=True)
class _CronField:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # names of lo, lo + 1, ... (jan = 1, sun = 0)


_CRON = (
    _CronField("minute", 0, 59),
    _CronField("hour", 0, 23),
    _CronField("day", 1, 31),
    _CronField(
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    _CronField("weekday", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_DIGITS = re.compile(r"[0-9]+")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month has


class _CronError(ValueError):
    pass


def _cron_value(f: _CronField, text: str) -> int:
    if f.names and text.lower() in f.names:
        return f.lo + f.names.index(text.lower())
    if not _DIGITS.fullmatch(text):
        named = f" or {f.names[0]}-{f.names[-1]}" if f.names else ""
        raise _CronError(f"{text[:20]!r} is not a number{named}")
    if len(text) > 2 or not f.lo <= int(text) <= f.hi:
        raise _CronError(f"{text[:20]} is not in {f.lo}-{f.hi}")
    return int(text)


def _cron_field(f: _CronField, text: str) -> set[int]:
    """The values `text` selects: a comma-separated list of `*`, `a`, `a-b`, `*/n`, `a-b/n`."""
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text) or len(step_text) > 2:
                raise _CronError(f"step {step_text[:20]!r} is not a number")
            step = int(step_text)
            if not 1 <= step <= f.hi - f.lo + 1:
                raise _CronError(f"step {step} is not in 1-{f.hi - f.lo + 1}")
        if base == "*":
            lo, hi = f.lo, f.hi
        elif "-" in base:
            first, _, last = base.partition("-")
            lo, hi = _cron_value(f, first), _cron_value(f, last)
            if lo > hi:
                raise _CronError(f"range {base[:20]} runs backwards")
        elif slash:
            raise _CronError(f"a step applies to * or a range, not {item[:20]!r}")
        else:
            lo = hi = _cron_value(f, base)
        values.update(range(lo, hi + 1, step))
    return values


def cron_problem(cron: str) -> str | None:
    """Why `cron` is not a five-field cron expression that fires, or None.

    Fields are minute 0-59, hour 0-23, day 1-31, month 1-12 or jan-dec, weekday 0-7 or
    sun-sat (0 and 7 are Sunday), each `*`, `a`, `a-b`, `*/n` or `a-b/n`, or a list of these
    joined by commas. A day restricted while the weekday is `*` must fall in one of the
    months (day 30 of February never comes); a restricted weekday also fires the flow, as in
    cron, so 0 0 30 2 1 runs on Mondays in February. A weekday written from `*` (`*/2`) counts
    as `*` here, as in Vixie cron, which then fires only on the days that are in both fields,
    so 0 0 30 2 */2 never runs.
    """
    fields = cron.split()
    if len(fields) != len(_CRON):
        return "a schedule trigger needs a 5-field cron (minute hour day month weekday)"
    chosen: list[set[int]] = []
    for f, text in zip(_CRON, fields, strict=True):
        try:
            chosen.append(_cron_field(f, text))
        except _CronError as e:
            return f"{f.name} field {text[:40]!r}: {e}"
    days, months = chosen[2], chosen[3]
    if fields[4].startswith("*") and not any(min(days) <= _MONTH_DAYS[m - 1] for m in months):
        return f"day {min(days)} never comes in month {' or '.join(map(str, sorted(months)))}"
    return None


# --------------------------------------------------------------------------- handlers


async def list_integrations(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    wanted = args.get("status", "all")
    items = [
        _integration(call, rec)
        for rec in _known_connections(call)
        if wanted == "all" or rec.state == wanted
    ]
    return {"integrations": items}


def integration_status_data(
    call: NativeCall, rec: ConnectionRecord, calls: int, errors: int
) -> dict[str, Any]:
    return {
        "connector": rec.connector,
        "title": _title(call, rec.connector),
        "state": rec.state,
        "connected_since": iso(rec.connected_at) if rec.state != "disconnected" else None,
        "last_success_at": iso(rec.last_success_at),
        "last_error_at": iso(rec.last_error_at),
        "last_error": rec.last_error,
        "calls_24h": calls,
        "errors_24h": errors,
        "error_rate_24h": round(errors / calls, 4) if calls else 0.0,
        "tool_count": _tool_count(call, rec.connector),
    }


async def integration_status(call: NativeCall, connector: str) -> dict[str, Any]:
    """Shared by the tool and the gateway://integrations/{connector} resource."""
    rt = call.runtime
    tenant_id = call.principal.tenant_id
    if connector not in rt.gateway.connectors or connector not in call.snapshot.connections:
        raise GatewayError(
            NOT_FOUND,
            f"This workspace has no integration named {connector!r}.",
            details={"connector": connector},
        )
    await flush_records(call)
    rec = await rt.run_db(rt.store.get_connection, tenant_id, connector)
    if rec is None:  # pragma: no cover - rows are never deleted
        raise GatewayError(NOT_FOUND, f"This workspace has no integration named {connector!r}.")
    calls, errors = await rt.run_db(rt.store.call_stats, tenant_id, connector, now_us() - DAY_US)
    return integration_status_data(call, rec, calls, errors)


async def get_integration_status(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    return await integration_status(call, str(args["connector"]))


# The trigger type each optional field of a trigger belongs to.
_TRIGGER_FIELDS = {"cron": "schedule", "event": "event", "tool": "event"}
# The event types whose events name a tool (the others concern a connection, a flow or memory).
TOOL_EVENT_TYPES = ("tool_call", "quota_exceeded")


def _trigger_problems(trigger: Mapping[str, Any], visible: frozenset[str]) -> list[dict[str, str]]:
    """Why `trigger` could not start its flow: a field of another trigger type (a manual
    trigger with a cron), a cron that never fires, an event type the gateway never records,
    a tool the workspace cannot use."""
    kind = trigger["type"]
    problems = [
        {"path": f"/trigger/{field}", "message": f"{field} applies to {owner} triggers only"}
        for field, owner in _TRIGGER_FIELDS.items()
        if field in trigger and owner != kind
    ]
    if kind == "schedule":
        why = cron_problem(str(trigger.get("cron") or ""))
        if why is not None:
            problems.append({"path": "/trigger/cron", "message": why})
    elif kind == "event":
        event = str(trigger.get("event") or "")
        if not event:
            problems.append(
                {"path": "/trigger/event", "message": "an event trigger needs an event"}
            )
        elif event not in EVENT_TYPES:
            problems.append(
                {
                    "path": "/trigger/event",
                    "message": f"{event[:64]!r} is not an event type the gateway records; "
                    f"one of {', '.join(EVENT_TYPES)}",
                }
            )
        tool = trigger.get("tool")
        if tool is not None and event in EVENT_TYPES and event not in TOOL_EVENT_TYPES:
            problems.append(
                {
                    "path": "/trigger/tool",
                    "message": f"{event} events name no tool, so none would start this flow; "
                    f"a tool applies to {' and '.join(TOOL_EVENT_TYPES)} events",
                }
            )
        elif tool is not None and tool not in visible:
            problems.append(
                {
                    "path": "/trigger/tool",
                    "message": f"{str(tool)[:64]!r} is not a tool this workspace can use",
                }
            )
    return problems


def _step_problems(call: NativeCall, steps: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Why a step could not run: its tool is not one the workspace can use, or its arguments
    are not ones that tool accepts (the validator of a call of the tool, so a flow holds
    only calls the gateway would make)."""
    index = call.runtime.index
    problems: list[dict[str, str]] = []
    for i, step in enumerate(steps):
        spec = index.visible_spec(str(step["tool"]), call.snapshot.active, call.principal.scopes)
        if spec is None:
            problems.append(
                {
                    "path": f"/steps/{i}/tool",
                    "message": f"{step['tool'][:64]!r} is not a tool this workspace can use",
                }
            )
            continue
        for e in index.input_errors(spec, step.get("arguments", {})):
            inner = "" if e["path"] == "/" else e["path"]
            problems.append({"path": f"/steps/{i}/arguments{inner}", "message": e["message"]})
    return problems


async def create_flow(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    rt = call.runtime
    visible = rt.index.visible_names(call.snapshot.active, call.principal.scopes)
    problems: list[dict[str, str]] = []
    if has_control_chars(str(args["name"])):
        problems.append({"path": "/name", "message": "a flow name has no control characters"})
    trigger = dict(args["trigger"])
    problems.extend(_trigger_problems(trigger, visible))
    problems.extend(_step_problems(call, args["steps"]))
    if problems:
        raise GatewayError(
            INVALID_ARGUMENTS,
            "The flow is invalid: "
            + "; ".join(f"{p['path']}: {p['message']}" for p in problems[:3]),
            details={"errors": problems[:MAX_ERRORS]},
        )
    definition = {
        "description": args.get("description"),
        "trigger": trigger,
        "steps": [dict(s) for s in args["steps"]],
    }
    record = await rt.run_db(
        lambda: rt.store.create_flow(
            call.principal.tenant_id,
            str(args["name"]),
            definition,
            created_by=call.principal.key_id,
        )
    )
    return {
        "flow_id": record.flow_id,
        "name": record.name,
        "version": record.version,
        "created_at": iso(record.created_at),
    }


def event_cursor(event_id: str) -> str:
    """The cursor of an event-history page that goes on after the event `event_id`."""
    return encode_cursor("events", event_id)


async def event_history(
    call: NativeCall,
    *,
    type_: str | None = None,
    status: str | None = None,
    connector: str | None = None,
    since: int | None = None,
    until: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    rt = call.runtime
    before: str | None = None
    if cursor is not None:
        before = decode_cursor("events", cursor)
        if not _EVENT_ID.match(before):
            raise _arg_error("/cursor", "invalid cursor")
    await flush_records(call)
    rows = await rt.run_db(
        lambda: rt.store.query_events(
            call.principal.tenant_id,
            type_=type_,
            status=status,
            connector=connector,
            since=since,
            until=until,
            before_id=before,
            limit=limit + 1,
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "events": [r.to_wire() for r in rows],
        "next_cursor": event_cursor(rows[-1].id) if more and rows else None,
    }


async def get_event_history(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    since = _timestamp(args, "since")
    until = _timestamp(args, "until")
    if since is not None and until is not None and since > until:
        raise _arg_error("/until", "until is before since")
    return await event_history(
        call,
        type_=args.get("type"),
        status=args.get("status"),
        connector=args.get("connector"),
        since=since,
        until=until,
        cursor=args.get("cursor"),
        limit=int(args.get("limit", 50)),
    )


async def usage_summary(call: NativeCall) -> dict[str, Any]:
    rt = call.runtime
    plan = rt.quota.plan(call.principal.plan)
    period_key, start, end = period_bounds(plan.period, now_us())
    await flush_records(call)
    rows = await rt.run_db(rt.store.usage_rows, call.principal.tenant_id, period_key)
    total = sum(r.calls for r in rows)
    by_connector: dict[str, list[int]] = {}
    for r in rows:
        if r.connector:
            acc = by_connector.setdefault(r.connector, [0, 0])
            acc[0] += r.calls
            acc[1] += r.errors
    for name in plan.per_connector:
        by_connector.setdefault(name, [0, 0])
    return {
        "plan": plan.name,
        "period": plan.period,
        "period_start": iso(start),
        "period_end": iso(end),
        "calls": total,
        "limit": plan.calls,
        "remaining": max(0, plan.calls - total) if plan.calls is not None else None,
        "by_tool": [{"tool": r.tool, "calls": r.calls, "errors": r.errors} for r in rows],
        "by_connector": [
            {
                "connector": name,
                "calls": v[0],
                "errors": v[1],
                "limit": plan.per_connector.get(name),
            }
            for name, v in sorted(by_connector.items())
        ],
    }


async def get_usage_summary(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    return await usage_summary(call)


async def search_entities(call: NativeCall, args: Mapping[str, Any]) -> dict[str, Any]:
    rt = call.runtime
    entity_type = str(args["entity_type"])
    if entity_type not in rt.gateway.entity_types:
        known = ", ".join(sorted(rt.gateway.entity_types))
        raise GatewayError(
            INVALID_ARGUMENTS,
            f"Unknown entity type {entity_type!r}; known types: {known}.",
            details={"errors": [{"path": "/entity_type", "message": f"one of {known}"}]},
        )
    active = call.snapshot.active
    wanted = args.get("connectors")
    names = sorted(active if wanted is None else set(wanted) & active)
    missing = sorted(set(wanted or ()) - active)
    # Only connectors whose tools this key may use; each is searched with a capability the key
    # could call itself (and the compiler allows entity mappings on read capabilities only).
    scoped = [
        n
        for n in names
        if any(rt.index.tool_visible(t, active, call.principal.scopes) for t in _tools_of(call, n))
    ]
    # A connection whose credentials cannot be opened is a failed source, as a failing
    # upstream is: the other connectors are still searched.
    credentials: dict[str, dict[str, str]] = {}
    unopened: list[dict[str, Any]] = []
    for n in scoped:
        try:
            credentials[n] = await rt.credentials(call.snapshot, n)
        except GatewayError as exc:
            unopened.append({"connector": n, "status": "error", "count": 0, "error": exc.code})
    tenant_id = call.principal.tenant_id
    # The user a direct call of a capability that acts for one would act for; without one,
    # such a capability's source fails as that call would, and nothing is sent.
    user: str | None = call.principal.user
    no_user: GatewayError | None = None
    if call.require_user is not None:
        try:
            user = await call.require_user()
        except GatewayError as exc:
            user, no_user = None, exc

    async def store_refreshed(connector: str, refreshed: dict[str, str]) -> None:
        await rt.store_refreshed(
            tenant_id, connector, refreshed, call.snapshot.connected_at(connector)
        )

    # Searching a connector is a call of one of its tools, on the quota and in the history
    # like any other: a connector over its plan's limit is not searched.
    plan = rt.quota.plan(call.principal.plan)
    at = now_us()
    day = usage_day(at)

    def admit(connector: str, tool: ToolSpec) -> None:
        if no_user is not None and tool.acts_for_user:
            raise no_user
        rt.quota.check_and_count(tenant_id, plan.name, connector, at)

    def searched(connector: str, tool: ToolSpec, code: str | None, ms: float) -> None:
        rt.recorder.record_call(
            tenant_id=tenant_id,
            tool=tool.name,
            connector=connector,
            day=day,
            status="ok" if code is None else "error",
            duration_ms=ms,
            error_code=code,
            details={"via": call.tool},
        )

    result: dict[str, Any]
    if credentials:
        result = await rt.executor_for_search().search_entities(
            entity_type=entity_type,
            query=str(args["query"]),
            limit=int(args.get("limit", 20)),
            connectors=credentials,
            ctx=rt.call_context(call.principal, user),
            store_refreshed=store_refreshed,
            admit=admit,
            searched=searched,
            connected_at={n: call.snapshot.connected_at(n) for n in credentials},
            may_run=lambda tool: rt.index.tool_visible(tool.name, active, call.principal.scopes),
        )
    else:
        result = {"entities": [], "sources": []}
    for src in result.get("sources", []):
        err = src.get("error") or ""
        if isinstance(err, str) and err.startswith("upstream_auth_failed"):
            connector = src["connector"]
            await rt.mark_needs_reauth(tenant_id, connector, call.snapshot.connected_at(connector))
    sources = [*result.get("sources", []), *unopened]
    sources.extend(
        {"connector": n, "status": "error", "count": 0, "error": "not_connected"} for n in missing
    )
    return {"entities": list(result.get("entities", [])), "sources": sources}


def _tools_of(call: NativeCall, connector: str) -> tuple[str, ...]:
    spec = call.runtime.gateway.connectors.get(connector)
    return spec.tools if spec else ()


HANDLERS: dict[str, Handler] = {
    "native.list_integrations": list_integrations,
    "native.get_integration_status": get_integration_status,
    "native.create_flow": create_flow,
    "native.get_event_history": get_event_history,
    "native.get_usage_summary": get_usage_summary,
    "native.search_entities": search_entities,
}
