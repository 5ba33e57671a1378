"""The gateway's catalog: every tool, connector, resource and plan, as immutable data.

The generated package builds one `GatewaySpec` from the manifests (see `catalog/` in the
generated package); every other runtime module reads it. Nothing here imports the MCP SDK,
so the catalog can be loaded cheaply by tools that only need the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

Scope = Literal["read", "write"]
Family = Literal["native", "connector", "personalization"]
SessionSource = Literal["session.tenant", "session.user"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotations:
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Pagination:
    """How an upstream list endpoint pages. Model-facing: `cursor` in, `next_cursor` out."""

    style: Literal["cursor", "page", "offset", "link"]
    param: str | None = None  # cursor / page / offset: upstream query parameter receiving it
    next: str | None = None  # cursor style: dotted path of the next cursor in the body
    more: str | None = None  # dotted path of a boolean: anything but true means no next page
    size_param: str | None = None  # page / offset: the query or body key holding the page size
    total: str | None = None  # offset style: dotted path of the total number of records
    # link style: the cursor is the rel=next URL of the Link header (same origin only)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyKey:
    """The upstream deduplicates a write by a key the client chooses: the executor makes one
    random key per tool call, sends it on every attempt, and so may retry it. Exactly one of
    the three says where the key goes: a header, a top-level body key or a query parameter."""

    header: str | None = None
    body: str | None = None
    query: str | None = None

    @property
    def place(self) -> tuple[Literal["header", "body", "query"], str]:
        if self.header is not None:
            return "header", self.header
        if self.body is not None:
            return "body", self.body
        if self.query is not None:
            return "query", self.query
        raise ValueError("an idempotency key declares no place")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpBinding:
    """A capability's HTTP request, as templates over the validated arguments.

    Template rules (query, headers, body): a string that is exactly `{name}` takes the
    argument's JSON value and is dropped when the argument is absent; other strings are
    interpolated. `path` placeholders are always percent-encoded.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    query: Mapping[str, Any] = field(default_factory=dict[str, Any])
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    body: Any = None  # a GraphQL request's variables
    body_encoding: Literal["json", "form"] = "json"
    # A GraphQL document, sent as it is: the body is {"query": graphql, "variables": body}.
    graphql: str | None = None
    graphql_partial: bool = False  # data that comes with errors is a result (queries only)
    select: str | None = None  # dotted path of the result in the response body
    # output property -> dotted path
    fields: Mapping[str, str] = field(default_factory=dict[str, str])
    pagination: Pagination | None = None
    idempotency_key: IdempotencyKey | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityMapping:
    """How records returned by a capability map onto a common-data-model entity type."""

    type: str
    items: str  # dotted path of the record list in the tool's output; "" = one record
    args: Mapping[str, Any]  # arguments for the search call; {query} and {limit} are filled in
    fields: Mapping[str, str]  # entity field -> dotted path in one record


@dataclass(frozen=True, slots=True, kw_only=True)
class Deprecation:
    reason: str
    replacement: str | None = None
    sunset: str | None = None  # ISO date


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    name: str
    title: str | None
    description: str
    family: Family
    group: str  # module the tool's models live in: "native", "personalization", or a connector
    connector: str | None
    scope: Scope
    annotations: Annotations
    input_schema: Mapping[str, Any]  # model-visible: session-bound parameters are not in it
    output_schema: Mapping[str, Any]
    handler: str | None = None  # native / personalization: runtime handler name
    bind: Mapping[str, SessionSource] = field(default_factory=dict[str, SessionSource])
    http: HttpBinding | None = None  # connector tools
    entities: tuple[EntityMapping, ...] = ()
    input_model: str = ""  # class names in models/<group>.py
    output_model: str = ""
    tags: tuple[str, ...] = ()
    deprecated: Deprecation | None = None

    @property
    def acts_for_user(self) -> bool:
        """Whether a call needs the session's user (a parameter bound to session.user)."""
        return "session.user" in self.bind.values()


class _Deprecated(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def replacement(self) -> str | None: ...
    @property
    def sunset(self) -> str | None: ...


def tool_meta(
    scope: str, family: str, connector: str | None, deprecated: _Deprecated | None
) -> dict[str, Any]:
    """A tool's `_meta` as `tools/list` shows it, and tools.json, which the generator writes
    with this same function."""
    meta: dict[str, Any] = {"io.mcpforge/scope": scope, "io.mcpforge/family": family}
    if connector:
        meta["io.mcpforge/connector"] = connector
    if deprecated is not None:
        d = deprecated
        meta["io.mcpforge/deprecated"] = {
            k: v
            for k, v in (("reason", d.reason), ("replacement", d.replacement), ("sunset", d.sunset))
            if v
        }
    return meta


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthField:
    name: str
    title: str | None = None
    description: str | None = None
    secret: bool = True
    required: bool = True


DEFAULT_API_KEY_HEADER = "X-API-Key"


def credential_header(auth_type: str, header: str | None) -> str | None:
    """The header that carries a connector's credentials (None for auth type none)."""
    if auth_type == "none":
        return None
    if auth_type == "api_key":
        return header or DEFAULT_API_KEY_HEADER
    return "Authorization"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorAuth:
    type: Literal["none", "bearer", "api_key", "basic", "oauth2"]
    fields: tuple[AuthField, ...] = ()
    token_field: str | None = None
    header: str | None = None
    key_field: str | None = None
    username_field: str | None = None
    password_field: str | None = None
    token_url: str | None = None
    refresh_token_field: str | None = None
    client_id_field: str | None = None
    client_secret_field: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorShape:
    ok_field: str | None = None
    message_field: str | None = None
    auth_errors: tuple[str, ...] = ()
    rate_limit_errors: tuple[str, ...] = ()
    not_found_errors: tuple[str, ...] = ()
    rate_limit_reset_header: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorSpec:
    name: str
    title: str
    description: str
    base_url: str
    auth: ConnectorAuth
    errors: ErrorShape = ErrorShape()
    timeout_seconds: float = 20.0
    retries: int = 2
    tools: tuple[str, ...] = ()  # tool names, sorted


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceSpec:
    name: str
    description: str
    handler: str
    uri: str | None = None
    uri_template: str | None = None
    title: str | None = None
    mime_type: str = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaPlan:
    name: str
    period: Literal["day", "month"]
    calls: int | None = None  # None = unlimited
    per_connector: Mapping[str, int] = field(default_factory=dict[str, int])


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityType:
    name: str
    description: str | None
    fields: Mapping[str, str]  # field -> JSON type name


# The most memory chunks one retrieval returns, whatever top_k asks (the compiler holds the
# personalization manifest's default_top_k and top_k's schema to it).
MAX_TOP_K: Final = 50
# What the memory store takes in one update_memory call, whatever its schema says (the
# compiler holds the schema to them, GEN232): observations, and each one's source, topic, tags.
MAX_OBSERVATIONS_PER_CALL: Final = 100
MAX_SOURCE_CHARS: Final = 200
MAX_TOPIC_CHARS: Final = 120
MAX_TAG_CHARS: Final = 60
MAX_TAGS: Final = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class MemorySettings:
    default_top_k: int = 5
    max_observation_chars: int = 4000


# The most bytes one tool result may take by default (`GatewaySpec.max_result_bytes`), for
# Claude Code's limit of 25,000 tokens a tool result. A result carries its data twice (text and
# structuredContent) and a model reads one copy, at most about 50 KB: 13,000-16,000 tokens of
# JSON at the 3.2-3.9 bytes a token that o200k_base gives tool results (a list of channels, an
# event history), which leaves room for a tokenizer that counts more (Claude's runs higher).
DEFAULT_MAX_RESULT_BYTES: Final = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySpec:
    package_name: str
    import_name: str
    version: str
    server_name: str
    title: str | None
    instructions: str | None
    scopes: Mapping[str, str]
    key_ttl_days: int
    default_plan: str
    plans: Mapping[str, QuotaPlan]
    entity_types: Mapping[str, EntityType]
    resources: tuple[ResourceSpec, ...]
    connectors: Mapping[str, ConnectorSpec]
    tools: Mapping[str, ToolSpec]  # by name, sorted
    memory: MemorySettings = MemorySettings()
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a larger tool result: result_too_large

    def connector_tools(self, connector: str) -> tuple[ToolSpec, ...]:
        return tuple(self.tools[name] for name in self.connectors[connector].tools)
