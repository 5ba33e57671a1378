"""The compiled project: frozen, slotted, keyword-only dataclasses holding tuples.

Built only by `compile.compile_project`. Every node that came from a manifest carries the `Span`
it came from. JSON values (schemas, request templates) are stored as canonical JSON text
(`Json`), which is immutable and compares by value; `.value` parses it back.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any, Literal

from .diagnostics import Span
from .frozen import frozen
from .names import ClassName, PyIdent


class Json(str):
    """Canonical JSON text of a value (manifest key order kept: it carries meaning)."""

    __slots__ = ()

    @classmethod
    def of(cls, value: Any) -> Json:
        return cls(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    @property
    def value(self) -> Any:
        return json.loads(self)


Pairs = tuple[tuple[str, str], ...]


@frozen
class Source:
    path: str
    sha256: str


@frozen
class Annotations:
    """A tool's MCP hints, each one resolved: what the manifest says, else MCP's default
    (see compile._annotations), so that every emitter writes the same values."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool


@frozen
class Deprecation:
    reason: str
    replacement: str | None = None
    sunset: str | None = None


@frozen
class Pagination:
    style: Literal["cursor", "page", "offset", "link"]
    param: str | None = None
    next: str | None = None
    more: str | None = None
    size_param: str | None = None
    total: str | None = None


@frozen
class IdempotencyKey:
    """Where a fresh key per tool call goes: exactly one of the three is set."""

    header: str | None  # a request header
    body: str | None  # a top-level key of the (JSON or form) body
    query: str | None  # a query parameter
    span: Span


@frozen
class HttpBinding:
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    query: Json
    headers: Pairs
    body: Json  # JSON `null` when there is no body; a GraphQL request's variables
    body_encoding: Literal["json", "form"]
    graphql: str | None  # a GraphQL document: the body is {"query": it, "variables": body}
    select: str | None
    fields: Pairs
    pagination: Pagination | None
    idempotency_key: IdempotencyKey | None
    span: Span
    graphql_partial: bool = False  # data that comes with errors is a result (queries only)


@frozen
class EntityMapping:
    type: str
    items: str
    args: Json
    fields: Pairs
    span: Span


@frozen
class Tool:
    name: str
    family: Literal["native", "connector", "personalization"]
    group: PyIdent
    connector: str | None
    title: str | None
    description: str
    scope: Literal["read", "write"]
    annotations: Annotations
    input_schema: Json  # model-visible, shared types inlined
    output_schema: Json
    handler: str | None
    bind: Pairs  # (parameter, "session.tenant" | "session.user")
    http: HttpBinding | None
    entities: tuple[EntityMapping, ...]
    tags: tuple[str, ...]
    deprecated: Deprecation | None
    py_name: PyIdent  # client method name
    input_model: ClassName
    output_model: ClassName
    source: str
    span: Span


@frozen
class AuthField:
    name: str
    title: str | None
    description: str | None
    secret: bool
    required: bool


@frozen
class ConnectorAuth:
    type: Literal["none", "bearer", "api_key", "basic", "oauth2"]
    fields: tuple[AuthField, ...]
    token_field: str | None = None
    header: str | None = None
    key_field: str | None = None
    username_field: str | None = None
    password_field: str | None = None
    token_url: str | None = None
    refresh_token_field: str | None = None
    client_id_field: str | None = None
    client_secret_field: str | None = None


@frozen
class ErrorShape:
    ok_field: str | None = None
    message_field: str | None = None
    auth_errors: tuple[str, ...] = ()
    rate_limit_errors: tuple[str, ...] = ()
    not_found_errors: tuple[str, ...] = ()
    rate_limit_reset_header: str | None = None


@frozen
class Connector:
    name: str
    title: str
    description: str
    base_url: str
    auth: ConnectorAuth
    errors: ErrorShape
    timeout_seconds: float
    retries: int
    tools: tuple[str, ...]
    types: tuple[str, ...]  # the shared types its tools refer to by name
    source: str
    span: Span


@frozen
class Resource:
    name: str
    uri: str | None
    uri_template: str | None
    title: str | None
    description: str
    mime_type: str
    handler: str
    span: Span


@frozen
class QuotaPlan:
    name: str
    period: Literal["day", "month"]
    calls: int | None
    per_connector: tuple[tuple[str, int], ...]


@frozen
class EntityType:
    name: str
    description: str | None
    fields: Pairs


@frozen
class Tenant:
    name: str
    connectors: tuple[str, ...]
    scopes: tuple[str, ...]
    span: Span


@frozen
class Memory:
    default_top_k: int = 5
    max_observation_chars: int = 4000


@frozen
class Gateway:
    package_name: str
    import_name: PyIdent
    version: str
    summary: str
    license: str | None
    authors: tuple[str, ...]
    urls: Pairs  # package index links, by label, in the manifest's order
    server_name: str
    title: str | None
    instructions: str | None
    max_result_bytes: int  # the most bytes one tool result may take
    scopes: Pairs
    key_ttl_days: int
    default_plan: str
    plans: tuple[QuotaPlan, ...]
    entity_types: tuple[EntityType, ...]
    resources: tuple[Resource, ...]
    tenants: tuple[Tenant, ...]
    lint_profiles: tuple[str, ...]
    token_budget: int | None
    source: str
    span: Span


@frozen
class Group:
    """Tools emitted together (one models module, one catalog module, one cache entry)."""

    name: PyIdent
    family: Literal["native", "connector", "personalization"]
    sources: tuple[str, ...]
    tools: tuple[str, ...]


@frozen
class Project:
    gateway: Gateway
    tools: tuple[Tool, ...]  # sorted by name
    connectors: tuple[Connector, ...]  # sorted by name
    groups: tuple[Group, ...]  # sorted by name
    memory: Memory
    sources: tuple[Source, ...]  # sorted by path

    def tool(self, name: str) -> Tool:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(name)

    def group_tools(self, group: Group) -> tuple[Tool, ...]:
        wanted = set(group.tools)
        return tuple(t for t in self.tools if t.name in wanted)


def to_data(node: Any, *, spans: bool = False) -> Any:
    """The IR as plain JSON data (for `gen ir`, golden tests and cache keys)."""
    if isinstance(node, Json):
        return node.value
    if isinstance(node, Span):
        return str(node) if spans else None
    if is_dataclass(node) and not isinstance(node, type):
        out = {}
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, Span) and not spans:
                continue
            out[f.name] = to_data(value, spans=spans)
        return out
    if isinstance(node, tuple | list):
        return [to_data(v, spans=spans) for v in node]
    return node
