"""Tenant-scoped MCP resources declared in the gateway manifest.

Handlers (by the manifest's `handler` name):

    resources.integrations        gateway://integrations              the tenant's connections
    resources.integration_status  gateway://integrations/{connector}  one connection's health
    resources.usage               gateway://usage                     quota period usage
    resources.recent_events       gateway://events/recent             50 newest events
    resources.memory_profile      memory://users/{user}/profile       what memory holds
    resources.memory_log          memory://users/{user}/log           every memory version,
                                  in pages: `?after_version=N` reads on from version N

Everything is read for the caller's tenant only, and only with a key that has the `read`
scope (resources show what the read tools show; without it there are none). A connector's
status is readable for a connection the tenant made. A memory resource is readable by the user
itself (the key's bound user, or the user a host key names with X-Gateway-User) or by a host
application key that is bound to no user, for any registered user of its tenant. Whatever the
reason a read is refused (another tenant's connector or user, no access, no scope, unknown
URI), the answer is the same `not_found`, so nothing about other tenants leaks.

`resolve` is the one place that decides what a URI names and whether the caller may read it:
`read_resource` reads what it resolves, and a 2026-07-28 client's `subscriptions/listen`
stream is acknowledged, and told of, exactly the resources it resolves, under the URI
`resources/list` gives them. `updated_uris` says which resources a happening changed
(`UPDATES` below).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote

import mcp.types as types

from .catalog import GatewaySpec, ResourceSpec
from .errors import INVALID_ARGUMENTS, NOT_FOUND, GatewayError
from .fastschema import has_surrogate
from .handler_names import URI_VARIABLE
from .native import (
    NativeCall,
    event_cursor,
    event_history,
    integration_status,
    list_integrations,
    usage_summary,
)

if TYPE_CHECKING:
    from .memory import MemoryStore

UserFn = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Read:
    """One resource read: the URI without its query, the template's values and the query's."""

    uri: str
    params: dict[str, str]
    query: dict[str, str]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A URI the caller may read: its resource, the read it asks for, and the URI the resource
    is listed and announced under (without a query, template values percent-encoded one way:
    `...%61sh/profile` and a log page's `...log?after_version=N` are its resource's URI)."""

    spec: ResourceSpec
    read: Read
    uri: str


Reader = Callable[[NativeCall, Read, UserFn], Awaitable[Any]]

RECENT_EVENTS = 50
# What the profile's lists hold, for the note saying how many of each it left out.
_PROFILE_LISTS: Final = {"recent": "recent items", "facts": "facts", "tags": "tags"}
SCOPE: Final = "read"  # what a key needs to see and read resources


@dataclass(frozen=True, slots=True)
class _Route:
    spec: ResourceSpec
    pattern: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    out = ""
    pos = 0
    for m in URI_VARIABLE.finditer(template):
        out += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>[^/?#]+)"
        pos = m.end()
    return re.compile("^" + out + re.escape(template[pos:]) + "$")


_routes_cache: dict[int, tuple[dict[str, ResourceSpec], list[_Route]]] = {}


def _routes(gateway: GatewaySpec) -> tuple[dict[str, ResourceSpec], list[_Route]]:
    found = _routes_cache.get(id(gateway))
    if found is None:
        static = {r.uri: r for r in gateway.resources if r.uri}
        templated = [
            _Route(r, _compile(r.uri_template)) for r in gateway.resources if r.uri_template
        ]
        found = _routes_cache[id(gateway)] = (static, templated)
    return found


def _match(gateway: GatewaySpec, base: str) -> tuple[ResourceSpec, dict[str, str]] | None:
    """The resource at `base` (a URI without its query) and its template's values, decoded.
    A URI holding a lone surrogate is no URI (no UTF-8 text holds one): none."""
    if has_surrogate(base):
        return None
    static, templated = _routes(gateway)
    spec = static.get(base)
    if spec is not None:
        return spec, {}
    for route in templated:
        m = route.pattern.match(base)
        if m:
            return route.spec, {k: unquote(v) for k, v in m.groupdict().items()}
    return None


def not_found(uri: str) -> GatewayError:
    shown = uri if len(uri) <= 200 else uri[:197] + "..."
    return GatewayError(NOT_FOUND, f"Resource not found: {shown}", details={"uri": shown})


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False)


# --------------------------------------------------------------------------- readers


async def _integrations(call: NativeCall, read: Read, user: UserFn) -> Any:
    return await list_integrations(call, {"status": "all"})


async def _integration_status(call: NativeCall, read: Read, user: UserFn) -> Any:
    return await integration_status(call, read.params["connector"])


async def _usage(call: NativeCall, read: Read, user: UserFn) -> Any:
    return await usage_summary(call)


async def _recent_events(call: NativeCall, read: Read, user: UserFn) -> Any:
    """The newest events, within the bytes a tool result may take (`max_result_bytes`): an
    event of refused arguments holds their errors, so 50 can take more. Over them, the oldest
    are left out, a note says so, and `next_cursor` goes on in `fastn_get_event_history`."""
    history = await event_history(call, limit=RECENT_EVENTS)
    events: list[dict[str, Any]] = history["events"]
    limit = call.runtime.gateway.max_result_bytes

    def build(n: int) -> dict[str, Any]:
        if n == len(events):
            return history
        return {
            "events": events[:n],
            "next_cursor": event_cursor(str(events[n - 1]["id"])),
            "note": f"The oldest {len(events) - n} of the {len(events)} most recent events are "
            f"left out to stay within the {limit:,} bytes this gateway returns in one read; the "
            "event history tool goes on from next_cursor.",
        }

    return build(_most_that_fit(build, min(1, len(events)), len(events), limit))


def _memory(call: NativeCall) -> MemoryStore:
    memory = call.runtime.memory
    if memory is None:
        raise GatewayError(NOT_FOUND, "memory is not enabled")
    return memory


def _wire_bytes(data: Any) -> int:
    """The bytes `data` takes read as a resource: its text (`_json`) as a JSON string, in
    UTF-8, as server.result_bytes counts a tool result's text."""
    return len(json.dumps(_json(data), ensure_ascii=False).encode())


def largest_that_fits(fits: Callable[[int], bool], low: int, high: int) -> int:
    """The largest n in [low, high] that `fits` (`low` when none does); a larger n never fits
    where a smaller one does not. Also cuts a tool result's list (`server.shorten_to_fit`)."""
    if fits(high):
        return high
    while low < high - 1:  # `low` fits, or is the least allowed; `high` does not
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def _most_that_fit(build: Callable[[int], Any], low: int, high: int, limit: int) -> int:
    """The largest n in [low, high] whose `build(n)` takes at most `limit` bytes (`low` when
    none does); a larger n never takes fewer bytes."""
    return largest_that_fits(lambda n: _wire_bytes(build(n)) <= limit, low, high)


async def _memory_profile(call: NativeCall, read: Read, user: UserFn) -> Any:
    """The profile, within the bytes a tool result may take (`max_result_bytes`): over them, it
    leaves out its oldest recent items, then its last facts, then its least used tags, and a
    note says what it left out (the log holds every item)."""
    memory = _memory(call)
    who = read.params["user"]
    profile = await call.runtime.run_db(memory.profile, call.principal.tenant_id, who)
    limit = call.runtime.gateway.max_result_bytes
    if _wire_bytes(profile) <= limit:
        return profile
    kept = {key: len(profile[key]) for key in ("recent", "facts", "tags")}
    log = next(
        (
            r.uri_template
            for r in call.runtime.gateway.resources
            if r.handler == "resources.memory_log"
        ),
        None,
    )
    where = "" if log is None else f" The log ({_expand(log, user=who)}) holds every item."

    def build(key: str, n: int) -> dict[str, Any]:
        counts = {**kept, key: n}
        shown = {**profile, **{k: profile[k][: counts[k]] for k in counts}}
        left = [
            f"{len(profile[k]) - counts[k]} of {len(profile[k])} {_PROFILE_LISTS[k]}"
            for k in counts
            if counts[k] < len(profile[k])
        ]
        shown["facts_truncated"] = profile["facts_truncated"] or counts["facts"] < len(
            profile["facts"]
        )
        shown["note"] = (
            f"Left out to stay within the {limit:,} bytes this gateway returns in one read: "
            + ", ".join(left)
            + "."
            + where
        )
        return shown

    for key in kept:  # the least needed first: the recent items are the log's newest
        kept[key] = _most_that_fit(functools.partial(build, key), 0, kept[key], limit)
        if _wire_bytes(build(key, kept[key])) <= limit:
            break
    return build("recent", kept["recent"])


async def _memory_log(call: NativeCall, read: Read, user: UserFn) -> Any:
    """A page of the log; `next_uri` reads the next one (the same URI, `?after_version=N`).
    A page ends early where the next version would take it over the bytes a tool result may
    take (`max_result_bytes`); a version larger than that alone is a page of its own."""
    memory = _memory(call)
    who = read.params["user"]
    after = read.query.get("after_version", "0")
    if not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise GatewayError(
            INVALID_ARGUMENTS,
            "after_version must be a version number (0 or more).",
            details={"argument": "after_version"},
        )
    limit = call.runtime.gateway.max_result_bytes
    page = await call.runtime.run_db(
        functools.partial(memory.log, max_bytes=limit),
        call.principal.tenant_id,
        who,
        int(after),
    )
    entries: list[dict[str, Any]] = page["entries"]

    def build(n: int) -> dict[str, Any]:
        following = entries[n - 1]["version"] if n < len(entries) else page["next_after_version"]
        return {
            **page,
            "entries": entries[:n],
            "next_after_version": following,
            "next_uri": None if following is None else f"{read.uri}?after_version={following}",
        }

    return build(_most_that_fit(build, min(1, len(entries)), len(entries), limit))


READERS: dict[str, Reader] = {
    "resources.integrations": _integrations,
    "resources.integration_status": _integration_status,
    "resources.usage": _usage,
    "resources.recent_events": _recent_events,
    "resources.memory_profile": _memory_profile,
    "resources.memory_log": _memory_log,
}
# The query parameters a reader takes (`uri?name=value`); a URI with any other is not found.
QUERY_PARAMS: dict[str, frozenset[str]] = {"resources.memory_log": frozenset({"after_version"})}


# --------------------------------------------------------------------------- access


async def _own_connection(call: NativeCall, params: dict[str, str], user: UserFn) -> bool:
    """A connector's status: of a connection the tenant made (in any state)."""
    name = params["connector"]
    return name in call.runtime.gateway.connectors and name in call.snapshot.connections


async def _memory_user(call: NativeCall, params: dict[str, str], user: UserFn) -> bool:
    """A user's memory: the session's own user, or any registered user of the tenant for a
    host application key bound to no user."""
    if call.runtime.memory is None:
        return False
    wanted = params["user"]
    try:
        current = await user()
    except GatewayError:
        current = None
    if current is not None and current == wanted:
        return True
    principal = call.principal
    if principal.can_assert_user and principal.user is None:
        return await call.runtime.registered(principal.tenant_id, wanted)
    return False


# Who may read the resources of a reader, beyond the `read` scope (none: every such key).
ACCESS: dict[str, Callable[[NativeCall, dict[str, str], UserFn], Awaitable[bool]]] = {
    "resources.integration_status": _own_connection,
    "resources.memory_profile": _memory_user,
    "resources.memory_log": _memory_user,
}


async def resolve(call: NativeCall, uri: str, user: UserFn) -> Resolved:
    """The resource `uri` names, if the caller may read it; GatewayError not_found otherwise,
    whatever the reason (no such resource, a query it does not take, no `read` scope, another
    user's memory, a connector the tenant has not connected)."""
    base, _, query_text = uri.partition("?")
    found = _match(call.runtime.gateway, base)
    if found is None or found[0].handler not in READERS or not call.principal.has_scope(SCOPE):
        raise not_found(uri)
    spec, params = found
    pairs = parse_qsl(query_text, keep_blank_values=True)
    query = dict(pairs)
    if len(query) < len(pairs) or not set(query) <= QUERY_PARAMS.get(spec.handler, frozenset()):
        raise not_found(uri)  # a parameter given twice, or one the resource does not take
    allowed = ACCESS.get(spec.handler)
    if allowed is not None and not await allowed(call, params, user):
        raise not_found(uri)
    listed = spec.uri or _expand(spec.uri_template or "", **params)
    return Resolved(spec, Read(uri=base, params=params, query=query), listed)


# --------------------------------------------------------------------------- updates


@dataclass(frozen=True, slots=True)
class Change:
    """Something that happened to one tenant, for the resources it updates."""

    connections: frozenset[str] = frozenset()  # connectors whose connection changed state
    event_connector: str | None = None  # the connector of a recorded event
    event: bool = False  # an event was recorded (connection changes record one too)
    usage: bool = False  # a call was counted against the quota
    memory_user: str | None = None  # the user whose memory gained a version


def _integrations_updated(change: Change) -> list[dict[str, str]]:
    return [{}] if change.connections else []


def _status_updated(change: Change) -> list[dict[str, str]]:
    names = set(change.connections)
    if change.event_connector is not None:
        names.add(change.event_connector)  # its calls, errors and last success moved
    return [{"connector": n} for n in sorted(names)]


def _memory_updated(change: Change) -> list[dict[str, str]]:
    return [] if change.memory_user is None else [{"user": change.memory_user}]


# For each reader, the template values of the resources a change updated ({} = the resource).
UPDATES: dict[str, Callable[[Change], list[dict[str, str]]]] = {
    "resources.integrations": _integrations_updated,
    "resources.integration_status": _status_updated,
    "resources.usage": lambda change: [{}] if change.usage else [],
    "resources.recent_events": lambda change: [{}] if change.event or change.connections else [],
    "resources.memory_profile": _memory_updated,
    "resources.memory_log": _memory_updated,
}


def updated_uris(gateway: GatewaySpec, change: Change) -> list[str]:
    """The URIs of the gateway's resources whose content `change` changed."""
    out: list[str] = []
    for r in gateway.resources:
        updates = UPDATES.get(r.handler)
        for values in updates(change) if updates is not None else ():
            out.append(r.uri or _expand(r.uri_template or "", **values))
    return out


# --------------------------------------------------------------------------- MCP surface


def list_templates(gateway: GatewaySpec) -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            name=r.name,
            title=r.title,
            uri_template=r.uri_template,
            description=r.description,
            mime_type=r.mime_type,
        )
        for r in gateway.resources
        if r.uri_template
    ]


def _expand(template: str, **values: str) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", quote(value, safe=""))
    return out


async def list_resources(call: NativeCall, user: UserFn) -> list[types.Resource]:
    """Static resources, plus the concrete resources of this caller: one status resource
    per connection of the tenant and the caller's own memory resources."""
    out: list[types.Resource] = []
    if not call.principal.has_scope(SCOPE):
        return out
    gw = call.runtime.gateway
    try:
        me = await user()
    except GatewayError:
        me = None
    for r in gw.resources:
        if r.uri:
            out.append(
                types.Resource(
                    name=r.name,
                    title=r.title,
                    uri=r.uri,
                    description=r.description,
                    mime_type=r.mime_type,
                )
            )
            continue
        template = r.uri_template or ""
        if "{connector}" in template:
            for name in sorted(call.snapshot.connections):
                if name in gw.connectors:
                    out.append(
                        types.Resource(
                            name=f"{r.name}:{name}",
                            title=f"{r.title or r.name}: {gw.connectors[name].title}",
                            uri=_expand(template, connector=name),
                            description=r.description,
                            mime_type=r.mime_type,
                        )
                    )
        elif "{user}" in template and me is not None:
            out.append(
                types.Resource(
                    name=f"{r.name}:{me}",
                    title=r.title,
                    uri=_expand(template, user=me),
                    description=r.description,
                    mime_type=r.mime_type,
                )
            )
    return out


async def read_resource(call: NativeCall, uri: str, user: UserFn) -> tuple[str, str]:
    """(text, mime type) of `uri` for the caller; GatewayError not_found otherwise."""
    resolved = await resolve(call, uri, user)
    try:
        data = await READERS[resolved.spec.handler](call, resolved.read, user)
    except GatewayError as exc:
        if exc.code == NOT_FOUND:
            raise not_found(uri) from None
        raise
    return _json(data), resolved.spec.mime_type
