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
scope (resources show what the read tools show; without it there are none). A memory resource
is readable by the user itself (the key's bound user, or the user a host key names with
X-Gateway-User) or by a host application key that is bound to no user, for any registered
user of its tenant. Whatever the reason a read is refused (another tenant's connector or user,
no access, no scope, unknown URI), the answer is the same `not_found`, so nothing about other
tenants leaks.

A 2026-07-28 client can subscribe to resources on a `subscriptions/listen` stream;
`updated_uris` says which resources a happening changed (`UPDATES` below), and `watcher`
decides which of them a stream may hear about: the same resources its session may read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote

import mcp.types as types

from .catalog import GatewaySpec, ResourceSpec
from .errors import INVALID_ARGUMENTS, NOT_FOUND, GatewayError
from .fastschema import has_surrogate
from .handler_names import URI_VARIABLE
from .native import NativeCall, event_history, integration_status, list_integrations, usage_summary

UserFn = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Read:
    """One resource read: the URI without its query, the template's values and the query's."""

    uri: str
    params: dict[str, str]
    query: dict[str, str]


Reader = Callable[[NativeCall, Read, UserFn], Awaitable[Any]]

RECENT_EVENTS = 50
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
    return await event_history(call, limit=RECENT_EVENTS)


async def _memory_user(call: NativeCall, wanted: str, user: UserFn) -> str:
    """`wanted` if the caller may read that user's memory; NotFound otherwise."""
    principal = call.principal
    rt = call.runtime
    try:
        current = await user()
    except GatewayError:
        current = None
    if current is not None and current == wanted:
        return wanted
    if principal.can_assert_user and principal.user is None:
        known = await rt.run_db(rt.store.get_user, principal.tenant_id, wanted)
        if known is not None:
            return wanted
    raise GatewayError(NOT_FOUND, "no such user")


async def _memory_profile(call: NativeCall, read: Read, user: UserFn) -> Any:
    who = await _memory_user(call, read.params["user"], user)
    memory = call.runtime.memory
    if memory is None:
        raise GatewayError(NOT_FOUND, "memory is not enabled")
    return await call.runtime.run_db(memory.profile, call.principal.tenant_id, who)


async def _memory_log(call: NativeCall, read: Read, user: UserFn) -> Any:
    """A page of the log; `next_uri` reads the next one (the same URI, `?after_version=N`)."""
    who = await _memory_user(call, read.params["user"], user)
    memory = call.runtime.memory
    if memory is None:
        raise GatewayError(NOT_FOUND, "memory is not enabled")
    after = read.query.get("after_version", "0")
    if not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise GatewayError(
            INVALID_ARGUMENTS,
            "after_version must be a version number (0 or more).",
            details={"argument": "after_version"},
        )
    page = await call.runtime.run_db(memory.log, call.principal.tenant_id, who, int(after))
    following = page["next_after_version"]
    page["next_uri"] = None if following is None else f"{read.uri}?after_version={following}"
    return page


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


def canonical(gateway: GatewaySpec, uri: str) -> str:
    """The URI a resource's updates are announced under, as `resources/list` gives it: without
    a query, its template values percent-encoded one way. A subscription to `...%61sh/profile`
    or to a log page (`...log?after_version=N`) hears of its resource. A URI of no resource is
    kept as it is (no session may watch it)."""
    found = _match(gateway, uri.partition("?")[0])
    if found is None:
        return uri
    spec, values = found
    return spec.uri or _expand(spec.uri_template or "", **values)


async def watcher(call: NativeCall, user: UserFn) -> Callable[[str], bool]:
    """Whether the caller may hear that the resource at a URI changed: whether it could read
    it (its tenant's resources only ever change for it; a memory resource is its own, or any
    user's for a host application key bound to no user)."""
    principal = call.principal
    if not principal.has_scope(SCOPE):
        return lambda uri: False
    try:
        me = await user()
    except GatewayError:
        me = None
    any_user = principal.can_assert_user and principal.user is None
    gateway = call.runtime.gateway

    def may_watch(uri: str) -> bool:
        found = _match(gateway, uri)
        if found is None:
            return False
        owner = found[1].get("user")
        return owner is None or any_user or owner == me

    return may_watch


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
    base, _, query_text = uri.partition("?")
    found = _match(call.runtime.gateway, base)
    spec, params = found if found is not None else (None, {})
    reader = READERS.get(spec.handler) if spec is not None else None
    if spec is None or reader is None or not call.principal.has_scope(SCOPE):
        raise not_found(uri)
    pairs = parse_qsl(query_text, keep_blank_values=True)
    query = dict(pairs)
    if len(query) < len(pairs) or not set(query) <= QUERY_PARAMS.get(spec.handler, frozenset()):
        raise not_found(uri)  # a parameter given twice, or one the resource does not take
    try:
        data = await reader(call, Read(uri=base, params=params, query=query), user)
    except GatewayError as exc:
        if exc.code == NOT_FOUND:
            raise not_found(uri) from None
        raise
    return _json(data), spec.mime_type
