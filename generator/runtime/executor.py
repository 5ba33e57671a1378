"""Runs connector capabilities: a tool's declared HTTP binding against the connector's API.

One `ConnectorExecutor` per gateway process. It owns (or borrows) one pooled HTTP client and
compiles each tool's binding lazily, once. A call:

1. fills the binding's templates from the validated arguments (with the input schema's
   defaults filled in at every depth: `defaults.py`), the session-bound parameters
   (`tool.bind`, from the `CallContext` only) and, for list capabilities, the model's `cursor`;
2. authenticates with the calling tenant's own credentials (bearer, API key header, basic, or an
   OAuth2 access token that is refreshed once at the token URL when the upstream answers 401);
3. sends it under the connector's timeout, retrying idempotent capabilities, and those whose
   binding declares an idempotency key (below), on 429, 5xx and connection errors with
   jittered exponential backoff (honouring `Retry-After`). Any other request that is not
   idempotent is never repeated, and when it may have reached the upstream and been applied
   (a timeout, a connection broken after sending, or an answer of HTTP 5xx other than 503,
   which says the request was not processed) the error says so and is not retryable. A
   read-only capability counts as idempotent here: it changes nothing it could change twice;
4. maps failures onto the gateway's error envelope and successes onto the tool's output:
   `select`, then `fields`, then `next_cursor`, then JSON Schema validation. A body that does
   not match the output schema is `upstream_invalid_response`, never passed through; its
   message and details say where (`channels/0`) and why ("the required property 'id' is
   missing", "expected string, got integer"), in the schema's words only: property names,
   types, limits, never the upstream's values (a free-form key shows as `*`).

Pagination (the model sees `cursor` in, `next_cursor` out; null when there is no more). The
first page is requested without a cursor; later ones send it as the query parameter `param`, or
wherever the templates place ``{cursor}`` (a JSON or form body, a header). When the binding
declares `more` (a boolean in the body, such as ``has_more``), anything but true ends.

* ``cursor``: `next` is a dotted path in the body (``-1`` indexes the last item of a list); an
  empty string or null ends.
* ``page``: the cursor is a page number. When the response carries a ``Link`` header, there is
  a next page exactly when it has ``rel="next"`` (GitHub). Otherwise the records (the selected
  body when it is a list, else the output's first list, looked for level by level:
  ``tracks.items`` when the output is ``{"tracks": {"items": [...], "total": 7}}``) decide: an
  empty page ends; without `more`, a page shorter than the page size the request sent ends
  (the `size_param` key of the query or body, else a query parameter named per_page, limit,
  page_size, pagesize, size or count); any other page is followed by ``page + 1``. When the
  page size is unknown and the last page is exactly full, that costs one extra, empty request,
  but no page is ever skipped.
* ``offset``: the cursor is the number of records to skip (Jira's ``startAt``): the next one is
  the offset plus the records this page returned. An empty page ends. When the body gives the
  `total` count, only reaching it ends: a page shorter than the size asked for does not, since
  upstreams cap the page size (Jira Cloud may return fewer issues than maxResults asks). Without
  a total, the same short-page rule as for ``page`` applies.
* ``link``: the next page is the ``rel="next"`` URL of the Link header (or a URL in the body,
  `next`), resolved against the request's URL when it is relative. The model gets it sealed:
  the cursor carries the URL with a MAC over it, the tool and the tenant, so a cursor is
  followed only as this tool gave it to this tenant (a made-up one could reach any other path
  of the API with the tenant's credentials). A cursor is also only
  followed when its URL stays on the connector's base URL (same origin, under its path, no dot
  segments), so it cannot send a tenant's credentials elsewhere.

A successful response with an empty body (``204 No Content``) is the empty object ``{}``, and
then meets the output schema like any other result.

Idempotency keys (`http.idempotency_key: {header: Idempotency-Key}`, or `{body: ...}` or
`{query: ...}`): the upstream applies a write once however often it receives it with the same
key (Stripe, Adyen; Square reads it from the body). Each call makes one
random key (a version 4 UUID) and sends it on every attempt, the one after an OAuth2 refresh
included, so the write is retried like an idempotent capability, and also after a timeout: the
same key is the only safe way to learn what became of it, and only this call holds that key.
For the same reason the final error of such a call is not retryable once an attempt may have
been applied unseen (a timeout, a broken connection, a 5xx other than 503): a new tool call
carries a new key, so repeating it could apply the write twice, and the message says to check
first. Where no
attempt was left in doubt, its errors are retryable exactly where an idempotent call's are.
The key is never logged, and an upstream error text that quotes it is redacted like a
credential before it reaches `details`.

Nothing here logs or returns credentials: upstream error text is shortened and scrubbed of every
credential value before it goes into `details`, and request headers never leave this module.
"""

# Upstream bodies and tool arguments are JSON (Any), and isinstance() narrows them to
# list[Unknown] or dict[Unknown, Unknown], which pyright's strict mode reports at every later
# use. mypy --strict holds the annotations; a cast per narrowing would say nothing more.
# pyright: reportUnknownArgumentType=false
# pyright: reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import anyio
import httpx2
from jsonschema import ValidationError
from jsonschema.protocols import Validator

from .catalog import (
    DEFAULT_API_KEY_HEADER,
    ConnectorSpec,
    EntityMapping,
    GatewaySpec,
    ToolSpec,
    credential_header,
)
from .defaults import Defaults, compile_defaults
from .errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENTS,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHENTICATED,
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_ERROR,
    UPSTREAM_INVALID_RESPONSE,
    UPSTREAM_TIMEOUT,
    GatewayError,
)
from .fastschema import FORMAT_EXAMPLES, Check, compile_check, json_type, validator_class
from .templating import (
    DNS_LABEL,
    MISSING,
    DotSegment,
    MissingPlaceholder,
    Node,
    TextTemplate,
    climbs,
    compile_value,
    digits,
    get_path,
    pairs,
    scalar_text,
    split_path,
)

__all__ = [
    "CallContext",
    "ConnectorCallError",
    "ConnectorConfigError",
    "ConnectorExecutor",
    "ExecResult",
    "base_urls_from_env",
    "check_base_urls",
    "check_url",
    "parse_retry_after",
    "token_urls_from_env",
]

logger = logging.getLogger(__name__)

_SAFE_CODE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_BAD: Final = re.compile(r"[\r\n\x00]")
# What no header value may hold (RFC 9110 5.5: control characters but the tab). h11 refused
# some of them (a vertical tab, a form feed) only when sending, and the call failed as a
# connection that broke after the request went out.
_HEADER_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_SPACE: Final = " \t"  # around a header value: not part of it, and h11 refuses it


def _header_safe(value: str) -> bool:
    """Whether `value` can be sent as it is in a header: ASCII (httpx encodes nothing else; it
    would fail the call as an internal error), no control character but the tab, and no space
    or tab around it."""
    return (
        value.isascii()
        and not _HEADER_CONTROL.search(value)
        and value == value.strip(_HEADER_SPACE)
    )


_NUMBER_TEXT: Final = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?", re.ASCII)
MAX_ERROR_TEXT: Final = 200
_SANITISE_WINDOW: Final = 16 * MAX_ERROR_TEXT
# Page-style pagination: a query parameter with one of these names is taken as the page size.
PAGE_SIZE_PARAMS: Final = frozenset({"per_page", "limit", "page_size", "pagesize", "size", "count"})
_REDACTED: Final = "[redacted]"
# A run of this many characters shared with a credential is redacted, wherever it appears.
SECRET_FRAGMENT: Final = 8
_REFRESH_REUSE_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class CallContext:
    tenant_id: str
    user_id: str | None
    # When the connection whose credentials the call uses was made: a reconnection is a new
    # connection, whose token refreshes are its own.
    connected_at: int = 0


@dataclass(frozen=True, slots=True)
class ExecResult:
    output: dict[str, Any]  # validated against tool.output_schema
    refreshed_credentials: dict[str, str] | None  # OAuth2: new token(s) to store; else None
    status: int  # final upstream HTTP status
    attempts: int
    # For the model, beside the output: what a partial GraphQL answer left out (codes and paths).
    notes: tuple[str, ...] = ()


def _drop_null(items: dict[int, tuple[list[Any], set[int]]]) -> int:
    """Remove the null items at these indexes (id(list) -> (list, indexes)); how many."""
    for parent, indexes in items.values():
        for index in sorted(indexes, reverse=True):
            del parent[index]
    return sum(len(indexes) for _, indexes in items.values())


@dataclass(slots=True)
class _PartialAnswer:
    """What a partial GraphQL answer left out, for its note."""

    title: str  # the connector's
    said: list[str] = field(default_factory=list)  # "CODE at path", one per error
    dropped: int = 0  # list items left out
    # Items kept with a field nulled: id(item) -> (its list, the item).
    incomplete: dict[int, tuple[list[Any], Any]] = field(default_factory=dict)
    elsewhere: bool = False  # an error names no list item

    def drop_incomplete(self) -> bool:
        """Leave out the items kept with a field nulled (for when the output schema does not
        allow that null); False when there are none."""
        if not self.incomplete:
            return False
        for parent in {id(parent): parent for parent, _ in self.incomplete.values()}.values():
            parent[:] = [item for item in parent if id(item) not in self.incomplete]
        self.dropped += len(self.incomplete)
        self.incomplete = {}
        return True

    def note(self) -> str:
        listed = "; ".join(self.said[:_NOTED_ERRORS])
        if len(self.said) > _NOTED_ERRORS:
            listed += f"; and {len(self.said) - _NOTED_ERRORS} more"
        count = len(self.said)
        text = (
            f"{self.title} answered in part: {count} error{'s' if count != 1 else ''} came with "
            f"the data ({listed})."
        )
        kept = len(self.incomplete)
        if self.dropped:
            text += f" {_items(self.dropped)} they name {_are(self.dropped)} left out of the "
            text += "result."
        if kept:
            text += f" {_items(kept)} they name {_are(kept)} kept, with what they name null."
        if self.elsewhere or not (self.dropped or kept):
            text += " What they name may be missing from the result."
        return text


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


class ConnectorCallError(GatewayError):
    """A failed connector call. Its envelope is a plain `GatewayError` envelope.

    The extra attributes are for the caller only (events, storage), never for the client:
    `status` (last upstream HTTP status, None when no response), `attempts`,
    `refreshed_credentials` when an OAuth2 refresh succeeded before the call failed anyway
    (store them: the old refresh token may have been rotated away), and `upstream`, the
    scheme, host and port the request went to (for the operator's log: an operator's
    `--base-url` may name an internal host that tenants need not learn).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(
            code, message, details=details, retryable=retryable, retry_after=retry_after
        )
        self.status = status
        self.attempts = 0
        self.refreshed_credentials: dict[str, str] | None = None
        self.upstream: str | None = None


# --------------------------------------------------------------------------------------------
# Configuration


class ConnectorConfigError(ValueError):
    """A connector URL override that cannot be used: a value that is not an absolute http(s)
    URL, or a name that matches no connector (no OAuth2 connector, for a token URL). A
    deployment mistake, reported before anything is served or created."""


_URL_EXAMPLE: Final = "http://127.0.0.1:9000"
MAX_SHOWN_URL: Final = 120


def _env_prefix(gateway: GatewaySpec) -> str:
    return re.sub(r"[^A-Z0-9]", "_", gateway.import_name.upper())


def _env_name(connector: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", connector.upper())


def _env_key(gateway: GatewaySpec, kind: str, connector: str) -> str:
    return f"{_env_prefix(gateway)}_{kind}_{_env_name(connector)}"


def masked_url(value: str) -> str:
    """`value` with any user:password@ replaced by `***@` (httpx sends them as Basic auth)."""
    return _USERINFO.sub("***@", value)


_USERINFO = re.compile(r"(?<=//)[^/?#@]*@")


def _shown_url(value: str) -> str:
    """A URL for messages: any user:password@ replaced, control characters escaped, short."""
    shown = masked_url(value)
    shown = shown if len(shown) <= MAX_SHOWN_URL else shown[: MAX_SHOWN_URL - 3] + "..."
    return repr(shown)


def check_url(value: str, where: str, what: str = "a base URL") -> str:
    """`value` (stripped, without a trailing slash) if it is an absolute http(s) URL with a host
    and neither a user:password, a query nor a fragment (a manifest's URL rule, GEN226).

    Else `ConnectorConfigError` saying where the value comes from (`where`: the environment
    variable, or `--base-url slack`) and what is wrong with it. `{field}` placeholders of a
    manifest's base URL may stay (they are filled from the connection's fields).
    """
    text = value.strip()
    problem: str | None = None
    if _CONTROL.search(text) or " " in text:
        problem = "contains spaces or control characters"
    else:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            problem = f"is not a valid URL ({exc})"
        else:
            if "://" not in text:
                problem = "is not an absolute URL (it does not start with http:// or https://)"
            elif parts.scheme.lower() not in ("http", "https"):
                problem = f"uses the scheme {parts.scheme!r}; only http and https are supported"
            elif not parts.hostname:
                problem = "has no host"
            # The rest is the rule of a manifest's URLs (GEN226): a call's path and query are
            # appended to a base URL, after a query or fragment they would be lost (a GET went
            # to `/api?limit=100`, a POST to `/v1?x=1/search`), and a user:password is sent
            # as Basic auth in place of the connection's own credentials.
            elif parts.username is not None or parts.password is not None:
                problem = (
                    "holds a user name or password, which calls would send in place of the "
                    "connection's credentials"
                )
            elif "?" in text:
                problem = f"has a query ({_shown_part('?' + parts.query)})"
            elif "#" in text:
                problem = f"has a fragment ({_shown_part('#' + parts.fragment)})"
    if problem is not None:
        raise ConnectorConfigError(
            f"{where}: {_shown_url(text)} {problem}; {what} must be an absolute http(s) URL "
            f"such as {_URL_EXAMPLE}"
        )
    return text.rstrip("/")


def _shown_part(part: str) -> str:
    return part if len(part) <= 40 else part[:37] + "..."


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none"


def _env_overrides(gateway: GatewaySpec, environ: Mapping[str, str], kind: str) -> dict[str, str]:
    """connector -> raw value of every non-empty `<PREFIX>_<kind>_<CONNECTOR>` variable."""
    prefix = f"{_env_prefix(gateway)}_{kind}_"
    by_env = {_env_name(name): name for name in gateway.connectors}
    out: dict[str, str] = {}
    for key in sorted(environ):
        if not key.startswith(prefix) or not environ[key].strip():
            continue
        name = by_env.get(key[len(prefix) :])
        if name is None:
            example = next(iter(sorted(gateway.connectors)), None)
            spelled = f"; e.g. {_env_key(gateway, kind, example)}" if example else ""
            raise ConnectorConfigError(
                f"{key} names no connector of this gateway "
                f"(known: {_known(gateway.connectors)}{spelled})"
            )
        out[name] = environ[key]
    return out


def base_urls_from_env(gateway: GatewaySpec, environ: Mapping[str, str]) -> dict[str, str]:
    """Base URL overrides: `<IMPORT_NAME>_BASE_URL_<CONNECTOR>=http://127.0.0.1:1234`.

    An override may keep `{field}` placeholders of the manifest's base URL (e.g.
    `http://127.0.0.1:8001/{shop}`); they are filled and checked like the original. A variable
    that names no connector, or whose value is not an absolute http(s) URL, raises
    `ConnectorConfigError`; an empty one is no override.
    """
    return {
        name: check_url(value, _env_key(gateway, "BASE_URL", name))
        for name, value in _env_overrides(gateway, environ, "BASE_URL").items()
    }


def token_urls_from_env(gateway: GatewaySpec, environ: Mapping[str, str]) -> dict[str, str]:
    """OAuth2 token URL overrides: `<IMPORT_NAME>_TOKEN_URL_<CONNECTOR>=http://...`.

    A variable for a connector that does not use OAuth2 (or names none) raises
    `ConnectorConfigError`, as does a value that is not an absolute http(s) URL.
    """
    oauth2 = [n for n, spec in gateway.connectors.items() if spec.auth.type == "oauth2"]
    out: dict[str, str] = {}
    for name, value in _env_overrides(gateway, environ, "TOKEN_URL").items():
        key = _env_key(gateway, "TOKEN_URL", name)
        if name not in oauth2:
            raise ConnectorConfigError(
                f"{key}: {name} does not use OAuth2, so it has no token URL "
                f"(OAuth2 connectors: {_known(oauth2)})"
            )
        out[name] = check_url(value, key, "a token URL")
    return out


def connector_url_variables(gateway: GatewaySpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment's connector URL overrides, as `{variable: value}` (base and token URLs;
    empty ones, which are no override, left out)."""
    return {
        _env_key(gateway, kind, name): value.strip()
        for kind in ("BASE_URL", "TOKEN_URL")
        for name, value in _env_overrides(gateway, environ, kind).items()
    }


def check_base_urls(
    gateway: GatewaySpec, urls: Mapping[str, str], option: str = "--base-url"
) -> dict[str, str]:
    """Base URL overrides given as `connector -> URL` (the `--base-url` option), checked like
    the environment's: each names a connector and is an absolute http(s) URL."""
    unknown = sorted(set(urls) - set(gateway.connectors))
    if unknown:
        raise ConnectorConfigError(
            f"{option} names no connector of this gateway: {', '.join(unknown)} "
            f"(known: {_known(gateway.connectors)})"
        )
    return {name: check_url(value, f"{option} {name}") for name, value in urls.items()}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date); None if absent."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


_NOTED_ERRORS: Final = 5  # errors of a partial GraphQL answer listed in its note


def _graphql_code(conn: _ConnectorPlan, error: Any) -> str | None:
    """One GraphQL error's code: where `message_field` (`errors.0.type`) reads it in the first
    error, else its message."""
    if not isinstance(error, Mapping):
        return None
    path = conn.message_path
    value: Any = MISSING
    if path is not None and path[:2] == ("errors", "0") and len(path) > 2:
        value = get_path(error, path[2:])
    if value is MISSING or value is None:
        value = error.get("message")
    return value if isinstance(value, str) else None


def _graphql_path(path: Any) -> str | None:
    """A GraphQL error's `path` (`["search", "nodes", 3]`) as `search.nodes.3`, when every
    segment is a list index or a plain field name; None otherwise."""
    if not isinstance(path, list) or not path or len(path) > 32:
        return None
    for segment in path:
        if isinstance(segment, bool) or not (
            (isinstance(segment, int) and segment >= 0)
            or (isinstance(segment, str) and _GRAPHQL_NAME.match(segment))
        ):
            return None
    return ".".join(str(segment) for segment in path)


_GRAPHQL_NAME: Final = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,63}$")


# A reset time below this is not a date (it would be in 1973): it is seconds to wait. One above
# the next is not seconds since the epoch (the year 5138): it is milliseconds.
_EPOCH_SECONDS: Final = 100_000_000
_EPOCH_MILLISECONDS: Final = 100_000_000_000
RESET_HEADERS: Final = ("x-ratelimit-reset", "ratelimit-reset")  # read after Retry-After


def parse_rate_limit_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a rate-limit reset header, which APIs spell as epoch seconds
    (GitHub's `X-RateLimit-Reset`), epoch milliseconds (Linear's) or seconds to wait (the IETF
    draft's `RateLimit-Reset`), told apart by size; None if absent or not a number."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii():
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number >= _EPOCH_SECONDS:
        clock = time.time() if now is None else now
        number = (number / 1000 if number >= _EPOCH_MILLISECONDS else number) - clock
    return max(0.0, number)


# --------------------------------------------------------------------------------------------
# Compiled plans


@dataclass(frozen=True, slots=True)
class _ConnectorPlan:
    spec: ConnectorSpec
    base: TextTemplate  # placeholders: non-secret credential fields
    static_base: str | None  # the base URL when it has no placeholders
    tenant_host: bool  # a placeholder chooses the host: a failure to connect names it
    token_url: TextTemplate | None  # placeholders: non-secret credential fields
    can_refresh: bool
    ok_path: tuple[str, ...] | None
    message_path: tuple[str, ...] | None
    auth_errors: frozenset[str]
    rate_limit_errors: frozenset[str]
    not_found_errors: frozenset[str]
    reset_headers: tuple[str, ...]  # lower-case names, in the order they are read
    auth_header: str | None  # lower-case name of the header carrying the credentials


@dataclass(frozen=True, slots=True)
class _ToolPlan:
    tool: ToolSpec
    conn: _ConnectorPlan
    method: str
    path: TextTemplate
    query: Node
    headers: Node
    body: Node | None  # a GraphQL request's variables
    form: bool
    graphql: str | None  # the GraphQL document: the body is {"query": it, "variables": body}
    graphql_partial: bool  # data that comes with errors is a result
    select: tuple[str, ...] | None
    fields: tuple[tuple[str, tuple[str, ...]], ...]
    pagination: str | None
    page_param: str | None  # None when the templates place {cursor} themselves
    next_path: tuple[str, ...] | None
    more_path: tuple[str, ...] | None
    total_path: tuple[str, ...] | None
    size_param: str | None
    templated_cursor: bool  # the templates name {cursor}
    defaults: Defaults | None  # what the input schema fills in, None when nothing
    output_validator: Validator
    output_check: Check | None  # fast "valid?" for the common schema subset
    idempotent: bool  # repeating the request is safe (annotation), so it may be retried
    # Neither idempotent nor read-only (MCP: idempotentHint means nothing beside readOnlyHint,
    # a read changes nothing): a request of it that may have reached the upstream unanswered
    # may have been applied, and a repeat may apply it again.
    writes: bool
    # Where one key per call goes (header, body or query, and its name): repeating that call
    # is safe.
    idempotency: tuple[Literal["header", "body", "query"], str] | None
    max_attempts: int


@dataclass(slots=True)
class _Reply:
    status: int
    headers: httpx2.Headers
    body: bytes
    url: str  # of the request answered: relative next-page links resolve against it


def _compile_connector(spec: ConnectorSpec, base_url: str, token_url: str | None) -> _ConnectorPlan:
    base = TextTemplate(base_url.rstrip("/"), encode=False)
    auth = spec.auth
    can_refresh = bool(
        auth.type == "oauth2"
        and token_url
        and auth.refresh_token_field
        and auth.client_id_field
        and auth.client_secret_field
    )
    return _ConnectorPlan(
        spec=spec,
        base=base,
        static_base=None if base.names() else base_url.rstrip("/"),
        tenant_host="{" in (urlsplit(base_url).hostname or ""),
        token_url=TextTemplate(token_url, encode=True) if token_url else None,
        can_refresh=can_refresh,
        ok_path=split_path(spec.errors.ok_field) if spec.errors.ok_field else None,
        message_path=split_path(spec.errors.message_field) if spec.errors.message_field else None,
        auth_errors=frozenset(spec.errors.auth_errors),
        rate_limit_errors=frozenset(spec.errors.rate_limit_errors),
        not_found_errors=frozenset(spec.errors.not_found_errors),
        reset_headers=tuple(
            dict.fromkeys(
                (
                    *(h.lower() for h in [spec.errors.rate_limit_reset_header] if h),
                    *RESET_HEADERS,
                )
            )
        ),
        auth_header=(
            None if (name := credential_header(auth.type, auth.header)) is None else name.lower()
        ),
    )


def _compile_tool(tool: ToolSpec, conn: _ConnectorPlan) -> _ToolPlan:
    http = tool.http
    if http is None:
        raise ValueError(f"tool {tool.name} has no HTTP binding")
    pagination = http.pagination
    body: Node | None = None if http.body is None else compile_value(http.body)
    query = compile_value(dict(http.query))
    headers = compile_value(dict(http.headers))
    templated = (
        pagination is not None
        and pagination.style != "link"
        and any("cursor" in node.names() for node in (query, headers, body) if node is not None)
    )
    idempotent = tool.annotations.idempotent
    key = http.idempotency_key
    retried = idempotent or key is not None

    def path_of(dotted: str | None) -> tuple[str, ...] | None:
        return split_path(dotted) if dotted else None

    return _ToolPlan(
        tool=tool,
        conn=conn,
        method=http.method,
        path=TextTemplate(http.path, encode=True),
        query=query,
        headers=headers,
        body=body,
        form=http.body_encoding == "form",
        graphql=http.graphql,
        graphql_partial=http.graphql_partial,
        select=split_path(http.select) if http.select else None,
        fields=tuple((name, split_path(path)) for name, path in http.fields.items()),
        pagination=pagination.style if pagination else None,
        page_param=pagination.param if pagination and not templated else None,
        next_path=path_of(pagination.next) if pagination else None,
        more_path=path_of(pagination.more) if pagination else None,
        total_path=path_of(pagination.total) if pagination else None,
        size_param=pagination.size_param if pagination else None,
        templated_cursor=templated,
        defaults=compile_defaults(tool.input_schema),
        output_validator=validator_class()(dict(tool.output_schema)),
        output_check=compile_check(tool.output_schema),
        idempotent=idempotent,
        writes=not (idempotent or tool.annotations.read_only),
        idempotency=key.place if key is not None else None,
        max_attempts=1 + max(0, conn.spec.retries) if retried else 1,
    )


# --------------------------------------------------------------------------------------------
# Helpers


def _sanitise(text: str, secrets: tuple[str, ...], spoken: tuple[str, ...] = ()) -> str:
    """`text` from an upstream, as the model may read it: its start, without the `secrets` or
    any run of SECRET_FRAGMENT characters of one (`_redacted`), on one line."""
    # Only the start is shown: the rest is cut before any per-character work, which on an
    # upstream's megabytes of error text would hold up every call on the event loop. What is
    # kept is 16 times what is shown, room for collapsing whitespace, and holds whole any
    # secret that starts in it (`secrets` come longest first).
    text = text.lstrip()[: _SANITISE_WINDOW + (len(secrets[0]) if secrets else 0)]
    text = _redacted(text, secrets, spoken)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[: MAX_ERROR_TEXT - 1] + "…"
    return text


def _occurrences(text: str, part: str) -> Iterator[int]:
    at = text.find(part)
    while at >= 0:
        yield at
        at = text.find(part, at + 1)


def _redacted(text: str, secrets: tuple[str, ...], spoken: tuple[str, ...] = ()) -> str:
    """`text` with each secret, and each run that shares SECRET_FRAGMENT characters in a row
    with one, redacted: an upstream may echo part of a token (cut short, or with a prefix of
    its own).

    A run that lies within a quote of what the model wrote (`spoken`: the call's argument
    values) is left as it is. An upstream that quotes an argument in its error (HubSpot:
    "Email address ... is invalid") had it redacted exactly when it shared 8 characters with
    a stored token, so a model could send 7 known characters and one guess per call and read
    the token off one character at a time (audit finding). Now a right guess and a wrong one
    read the same. A run that goes on past the quote (the upstream echoing more of a token
    than the model wrote) is redacted whole, the quote included, as it was before."""
    quotes = [
        (at, at + len(said))
        for said in {s for s in spoken if len(s) >= 4}
        for at in _occurrences(text, said)
    ]
    runs: list[list[int]] = [
        [at, at + len(secret)] for secret in secrets for at in _occurrences(text, secret)
    ]
    grams = {
        secret[i : i + SECRET_FRAGMENT]
        for secret in secrets
        for i in range(len(secret) - SECRET_FRAGMENT + 1)
    }
    if grams:
        for i in range(len(text) - SECRET_FRAGMENT + 1):
            if text[i : i + SECRET_FRAGMENT] in grams:
                runs.append([i, i + SECRET_FRAGMENT])
    cuts: list[list[int]] = []
    for start, end in sorted(runs):
        if cuts and start <= cuts[-1][1]:
            cuts[-1][1] = max(cuts[-1][1], end)
        else:
            cuts.append([start, end])
    for start, end in reversed(cuts):
        if not any(a <= start and end <= b for a, b in quotes):
            text = text[:start] + _REDACTED + text[end:]
    return text


def _spoken(arguments: Mapping[str, Any]) -> tuple[str, ...]:
    """The text of every string and number the model wrote in `arguments`, at any depth."""
    out: list[str] = []
    todo: list[Any] = [arguments]
    while todo:
        value = todo.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            todo.extend(cast("Mapping[str, Any]", value).values())
        elif isinstance(value, list):
            todo.extend(cast("list[Any]", value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append(scalar_text(value))
    return tuple(out)


def _unsendable(
    conn: _ConnectorPlan,
    exc: Exception,
    secrets: tuple[str, ...],
    arguments: Mapping[str, Any],
    *,
    url_invalid: bool,
) -> GatewayError:
    """The error of a request the arguments made that the HTTP client will not send (`exc`):
    a URL too long or holding what none may (`url_invalid`), or anything else it refuses.
    Nothing went out, so neither a retry nor a mark on the connection's health."""
    why = _sanitise(str(exc), secrets, _spoken(arguments))
    return GatewayError(
        INVALID_ARGUMENTS,
        f"The arguments make a request to {conn.spec.title} that cannot be sent ({why}); "
        + ("shorten or correct them." if url_invalid else "correct them."),
        details={"reason": "request_url_invalid" if url_invalid else "request_invalid"},
    )


def _secret_values(*credential_maps: Mapping[str, object] | None) -> tuple[str, ...]:
    values: set[str] = set()
    for creds in credential_maps:
        if creds:
            values.update(v for v in creds.values() if isinstance(v, str) and len(v) >= 4)
    # Longest first, so a secret containing another is redacted whole.
    return tuple(sorted(values, key=len, reverse=True))


def _key_map(key: str | None) -> dict[str, str] | None:
    """The idempotency key as one more value to redact: an upstream may quote it in an error
    (Stripe: "another in-progress request using this idempotent key: ..."), and the model
    must not see it."""
    return {"idempotency_key": key} if key else None


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except RecursionError:  # nested deeper than the parser goes: no answer the gateway can use
        raise ValueError("JSON nested too deeply") from None


# Bytes of HMAC-SHA256 kept in a link cursor: 128 bits, beyond guessing.
LINK_MAC_BYTES: Final = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Unpadded URL-safe base64 (ValueError when it is not)."""
    raw = text.encode("ascii")  # UnicodeEncodeError is a ValueError
    if not _B64URL.fullmatch(raw):
        raise ValueError("not url-safe base64")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


_B64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")


# One parameter of a link-value, after its `;`: a name, and a token or a quoted string (read to
# the end of the header when its quote is never closed, so that no quote is scanned twice).
_LINK_PARAM: Final = re.compile(r'\s*([^\s;,="]*)\s*(?:=\s*("(?:[^"\\]|\\.?)*(?:"|$)|[^\s;,]*))?')


def _link_values(header: str) -> list[tuple[str, dict[str, str]]]:
    """The link-values of a Link header (RFC 8288 section 3): each target as written between
    `<` and `>`, and its parameters (lower-case names, quoted values unquoted; a parameter's
    first occurrence counts). The target and a quoted value are read whole, so a comma or a
    semicolon in them (`?fields=id,name`, `title="a, b"`) separates nothing. One pass over
    the header, whatever it holds."""
    values: list[tuple[str, dict[str, str]]] = []
    at = 0
    while (start := header.find("<", at)) >= 0 and (end := header.find(">", start)) >= 0:
        target = header[start + 1 : end].strip()
        params: dict[str, str] = {}
        at = end + 1
        while at < len(header) and header[at] != ",":
            if header[at] != ";":
                at += 1  # not a link-value's syntax: skipped
                continue
            match = _LINK_PARAM.match(header, at + 1)
            if match is None:  # never: every part of it is optional
                break
            name, value = match.group(1).lower(), match.group(2) or ""
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:].removesuffix('"'))
            params.setdefault(name, value)
            at = match.end()
        values.append((target, params))
    return values


def _link_next(headers: httpx2.Headers) -> tuple[bool, str | None]:
    """(has a Link header, the rel=next target as written, maybe relative, or None). Several
    Link fields are one list (`get` joins them with commas); a relation type is compared
    without regard to case, and `rel` may list several (`rel="next last"`)."""
    header = headers.get("link")
    if header is None:
        return False, None
    for target, params in _link_values(header):
        if "next" in params.get("rel", "").lower().split():
            return True, target or None
    return True, None


def _same_base(url: str, base: str) -> bool:
    """Whether `url` (a next-page link given back by the model) stays under the connection's
    base URL: same scheme, host and port, no user info, and a path under the base path with no
    dot segments (which would climb out of it once resolved), percent-encoded or not, even
    inside one segment behind an encoded slash or backslash (`..%2F..`)."""
    target, root = urlsplit(url), urlsplit(base)
    if (target.scheme, target.netloc.lower()) != (root.scheme, root.netloc.lower()):
        return False
    if target.username or target.password:
        return False
    if any(climbs(unquote(segment)) for segment in target.path.split("/")):
        return False
    prefix = root.path.rstrip("/")
    return target.path == prefix or target.path.startswith(prefix + "/")


def _header_text(value: Any) -> str:
    """A rendered header value as it is sent: the spaces and tabs around it, which are not
    part of a header's value in HTTP, left out; no line break or other control character."""
    text = scalar_text(value).strip(_HEADER_SPACE)
    if _HEADER_BAD.search(text):
        raise GatewayError(
            INVALID_ARGUMENTS, "An argument used in a request header contains a line break."
        )
    if _HEADER_CONTROL.search(text):
        raise GatewayError(
            INVALID_ARGUMENTS,
            "An argument used in a request header contains a control character, which HTTP "
            "headers cannot carry.",
        )
    if not text.isascii():
        raise GatewayError(
            INVALID_ARGUMENTS,
            "An argument used in a request header contains non-ASCII characters, which HTTP "
            "headers cannot carry.",
        )
    return text


_MAY_HAVE_APPLIED: Final = " It may have applied the request anyway: check before repeating it."


def _origin(url: str) -> str:
    """`scheme://host[:port]` of `url`: what a log may say of where a request went (never the
    path or query, which can carry a tenant's values or an API key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _may_have_applied(exc: ConnectorCallError) -> None:
    """Mark the final error of a write one of whose attempts may have been applied: the
    caller's own repeat would be a second write (under a new key, if it declares one), so it
    is not safe to advise one."""
    if not exc.message.endswith(_MAY_HAVE_APPLIED):
        exc.message += _MAY_HAVE_APPLIED
        exc.args = (exc.message,)
    exc.retryable = False
    exc.retry_after = None


def _page_number(cursor: str) -> int | None:
    """The page number a `page` cursor holds (at least 1), else None."""
    page = digits(cursor)
    return page if page is not None and page >= 1 else None


def _cursor_value(plan: _ToolPlan, cursor: str) -> str | int:
    """The cursor as the upstream gets it: a page number or an offset is a number (so that a
    JSON body gets `50`, not `"50"`); a token is sent as is."""
    if plan.pagination == "cursor":
        return cursor
    number = _page_number(cursor) if plan.pagination == "page" else digits(cursor)
    if number is None:
        what = "page number" if plan.pagination == "page" else "record offset"
        raise GatewayError(
            INVALID_ARGUMENTS,
            f"The cursor is not a {what} from this tool's next_cursor.",
            details={"argument": "cursor"},
        )
    return number


def _page_size(
    plan: _ToolPlan, query: list[tuple[str, str]], body: Mapping[str, Any] | None
) -> int | None:
    """The page size the request asked for: the declared `size_param` (query or body), else a
    query parameter with a usual page-size name."""
    if plan.size_param is not None:
        for key, value in query:
            if key == plan.size_param:
                return digits(value)
        if body is not None and plan.size_param in body:
            return digits(scalar_text(body[plan.size_param]))
        return None
    for key, value in query:
        if key.lower() in PAGE_SIZE_PARAMS and (size := digits(value)) is not None:
            return size
    return None


def _as_field_type(value: Any, kind: str | None) -> Any:
    """A record's value as the entity field's declared type: numbers become strings for a
    string field, digit strings numbers for an integer or number field (Jira's `"10000"`).
    A value that cannot be read as that type is MISSING (the field is left out)."""
    if value is None or kind is None:
        return value
    if kind == "string":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) else MISSING
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            return MISSING
        if isinstance(value, int) or (kind == "number" and isinstance(value, float)):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            text = value.strip()
            if "." not in text:
                return int(text)
            return float(text) if kind == "number" else MISSING
        return MISSING
    if kind == "boolean":
        return value if isinstance(value, bool) else MISSING
    return value


def _records(data: Any, output: Mapping[str, Any]) -> list[Any] | None:
    """A page's records: the selected body when it is a list, else the output's first list,
    looked for one level at a time (a top-level value first, then one inside an object, as
    Spotify's `tracks.items` beside `tracks.total`), never inside a record."""
    if isinstance(data, list):
        return data
    level: list[Mapping[str, Any]] = [output]
    while level:
        inner: list[Mapping[str, Any]] = []
        for obj in level:
            for value in obj.values():
                if isinstance(value, list):
                    return value
                if isinstance(value, Mapping):
                    inner.append(value)
        level = inner
    return None


def _uses_name(value: Any, name: str) -> bool:
    return name in compile_value(value).names()


# --------------------------------------------------------------------------------------------
# Output-schema mismatches, described without upstream data

# Keywords after which the next schema-path entry is the name (or index) the instance path
# took; and those that descend into items or free-form properties without naming them.
_NAMED_STEPS: Final = frozenset({"properties", "prefixItems"})
_ITEM_STEPS: Final = frozenset({"items", "additionalItems", "unevaluatedItems", "contains"})
_KEYED_STEPS: Final = frozenset({"additionalProperties", "unevaluatedProperties", "propertyNames"})
_BOUNDS: Final = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "more than",
    "exclusiveMaximum": "less than",
}
_SIZES: Final = {
    "minLength": ("at least", "characters"),
    "maxLength": ("at most", "characters"),
    "minItems": ("at least", "items"),
    "maxItems": ("at most", "items"),
    "minProperties": ("at least", "properties"),
    "maxProperties": ("at most", "properties"),
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mismatch_path(error: ValidationError) -> str:
    """Where in the output an error is, as `channels/0/id`: property names the schema declares
    and list indexes; a key the schema does not name (free-form properties) shows as `*`."""
    instance = list(error.absolute_path)
    schema = list(error.absolute_schema_path)
    out: list[str] = []
    i = k = 0
    while i < len(instance) and k < len(schema):
        step = schema[k]
        if step in _NAMED_STEPS and k + 1 < len(schema):
            out.append(str(schema[k + 1]))
            i, k = i + 1, k + 2
        elif step in _ITEM_STEPS:
            out.append(str(instance[i]) if isinstance(instance[i], int) else "*")
            i, k = i + 1, k + 1
        elif step in _KEYED_STEPS or step == "patternProperties":
            out.append("*")
            i, k = i + 1, k + (2 if step == "patternProperties" else 1)
        else:  # $ref, allOf/anyOf/oneOf and their indexes, if/then/else...: no instance step
            k += 1
    out.extend("*" for _ in instance[i:])
    return "/".join(out)


def _mismatch_reason(error: ValidationError) -> tuple[str, dict[str, Any]]:
    """Why the value at the error's path fails, and details to add: the schema's own words
    (property names, types, limits, allowed values), never the upstream's value."""
    rule, limit, value = str(error.validator), error.validator_value, error.instance
    if rule == "required" and isinstance(value, dict) and isinstance(limit, list):
        missing = [str(name) for name in limit if name not in value]
        names = ", ".join(repr(name) for name in missing)
        if len(missing) == 1:
            return f"the required property {names} is missing", {"missing": missing}
        return f"the required properties {names} are missing", {"missing": missing}
    if rule == "type":
        expected = [str(t) for t in limit] if isinstance(limit, list) else [str(limit)]
        got = json_type(value)
        return f"expected {' or '.join(expected)}, got {got}", {"expected": expected, "got": got}
    if rule in ("enum", "const"):
        allowed = limit if rule == "enum" and isinstance(limit, list) else [limit]
        shown = ", ".join(json.dumps(v) for v in allowed[:8]) + (
            ", ..." if len(allowed) > 8 else ""
        )
        return f"is not one of the allowed values ({_cut(shown, 120)})", {}
    if rule in _BOUNDS:
        return f"must be {_BOUNDS[rule]} {limit}", {}
    if rule in _SIZES:
        bound, unit = _SIZES[rule]
        return f"must have {bound} {limit} {unit}", {}
    if rule == "pattern":
        return f"does not match the pattern {_cut(str(limit), 80)!r}", {}
    if rule == "format":
        example = FORMAT_EXAMPLES.get(limit) if isinstance(limit, str) else None
        return f"is not a valid {limit}{f' (such as {example})' if example else ''}", {}
    if rule == "multipleOf":
        return f"must be a multiple of {limit}", {}
    if rule == "uniqueItems":
        return "has duplicate items", {}
    if rule in ("additionalProperties", "unevaluatedProperties"):
        return "has properties the schema does not allow", {}
    if rule == "oneOf" and not error.context:  # valid under several of them
        return "matches more than one of the shapes the schema allows (oneOf)", {}
    if rule in ("anyOf", "oneOf"):
        return f"matches none of the shapes the schema allows ({rule})", {}
    if rule == "not":
        return "has a shape the schema excludes", {}
    return f"does not satisfy the schema's {rule!r}", {}


# --------------------------------------------------------------------------------------------
# The executor


class ConnectorExecutor:
    """Calls connector tools for tenants. Safe to share between concurrent calls."""

    def __init__(
        self,
        gateway: GatewaySpec,
        *,
        base_urls: Mapping[str, str] | None = None,
        client: httpx2.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        token_urls: Mapping[str, str] | None = None,
        max_retry_after: float = 10.0,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_response_bytes: int = 8 * 1024 * 1024,
        cursor_key: bytes | None = None,
    ) -> None:
        self.gateway = gateway
        # Seals link cursors: shared by a deployment's processes (derived from its credential
        # key), else this process's own (a cursor then pages only where it was given).
        self._cursor_key = cursor_key if cursor_key is not None else os.urandom(32)
        self._base_urls = {k: v.rstrip("/") for k, v in (base_urls or {}).items()}
        self._token_urls = dict(token_urls or {})
        self._owns_client = client is None
        self._client = client if client is not None else self._new_client()
        self._sleep: Callable[[float], Awaitable[None]] = sleep or anyio.sleep
        self._max_retry_after = max_retry_after
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_response_bytes = max_response_bytes
        self._user_agent = f"{gateway.package_name}/{gateway.version}"
        self._connectors: dict[str, _ConnectorPlan] = {}
        self._plans: dict[str, _ToolPlan] = {}
        self._input_validators: dict[str, Validator] = {}
        self._refresh_locks: dict[tuple[str, str], anyio.Lock] = {}
        self._refreshed: dict[tuple[str, str, int, str], tuple[float, dict[str, str]]] = {}

    @classmethod
    def from_env(
        cls, gateway: GatewaySpec, environ: Mapping[str, str], **kwargs: Any
    ) -> ConnectorExecutor:
        """An executor with the base URL and token URL overrides of `environ` applied."""
        return cls(
            gateway,
            base_urls=base_urls_from_env(gateway, environ),
            token_urls=token_urls_from_env(gateway, environ),
            **kwargs,
        )

    @staticmethod
    def _new_client() -> httpx2.AsyncClient:
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        # Tenants share the client: it must never keep cookies from one call for the next.
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        return httpx2.AsyncClient(
            cookies=jar,
            follow_redirects=False,
            limits=httpx2.Limits(
                max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0
            ),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- compilation ---------------------------------------------------------------------

    def _connector_plan(self, name: str) -> _ConnectorPlan:
        plan = self._connectors.get(name)
        if plan is None:
            spec = self.gateway.connectors[name]
            base = self._base_urls.get(name, spec.base_url)
            token_url = self._token_urls.get(name, spec.auth.token_url)
            plan = self._connectors[name] = _compile_connector(spec, base, token_url)
        return plan

    def _plan(self, tool: ToolSpec) -> _ToolPlan:
        plan = self._plans.get(tool.name)
        if plan is None or plan.tool is not tool:
            if tool.connector is None or tool.http is None:
                raise ValueError(f"tool {tool.name} is not a connector tool")
            plan = self._plans[tool.name] = _compile_tool(
                tool, self._connector_plan(tool.connector)
            )
        return plan

    # -- public API ----------------------------------------------------------------------

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        *,
        credentials: Mapping[str, str],
        ctx: CallContext,
        on_refresh: Callable[[dict[str, str]], Awaitable[None]] | None = None,
    ) -> ExecResult:
        """Run `tool` for the tenant of `ctx` with that tenant's `credentials`.

        `on_refresh` stores the tokens of an OAuth2 refresh as soon as it succeeds, before the
        call goes on, and shielded from cancellation together with the refresh: a provider
        that rotates refresh tokens has invalidated the stored one by then, so a call
        cancelled afterwards (a client that gave up, a search's time limit) must not lose the
        new one. The refreshed tokens are also on the result or error, as without it.

        Raises `ConnectorCallError` (a `GatewayError`) with a safe envelope on any failure.
        """
        plan = self._plan(tool)
        started = time.perf_counter()
        try:
            result = await self._call(plan, arguments, credentials, ctx, on_refresh)
        except ConnectorCallError as exc:
            # The message is the client's: safe to log (credentials are redacted from it).
            logger.warning(
                "connector call failed: tenant=%s tool=%s code=%s status=%s attempts=%d "
                "upstream=%s: %s",
                ctx.tenant_id,
                tool.name,
                exc.code,
                exc.status,
                exc.attempts,
                exc.upstream or "-",
                exc.message,
            )
            raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "connector call ok: tenant=%s tool=%s status=%d attempts=%d ms=%.1f",
                ctx.tenant_id,
                tool.name,
                result.status,
                result.attempts,
                (time.perf_counter() - started) * 1000,
            )
        return result

    async def search_entities(
        self,
        *,
        entity_type: str,
        query: str,
        limit: int,
        connectors: Mapping[str, Mapping[str, str]],
        ctx: CallContext,
        per_connector_timeout: float = 5.0,
        store_refreshed: Callable[[str, dict[str, str]], Awaitable[None]] | None = None,
        admit: Callable[[str, ToolSpec], None] | None = None,
        searched: Callable[[str, ToolSpec, str | None, float], None] | None = None,
        connected_at: Mapping[str, int] | None = None,
        may_run: Callable[[ToolSpec], bool] | None = None,
    ) -> dict[str, Any]:
        """Search `entity_type` records across `connectors` (name -> that tenant's credentials).

        Output matches `fastn_search_entities`' output schema: `entities` interleaved across
        connectors (at most `limit`), and one `sources` entry per connector that can hold the
        type, with `ok`, `error` or `timeout`. A failing connector never fails the search.
        `store_refreshed(connector, credentials)` is awaited, shielded from the time limit,
        when a connector's OAuth2 token was refreshed, whether or not its search then succeeded:
        the old refresh token may have been rotated away. Each connector's search is a call of
        one of its tools: `admit(connector, tool)` may refuse it (a GatewayError, reported in
        its source; nothing is sent), and `searched(connector, tool, error code or None,
        duration in ms)` is told how each admitted one ended. `connected_at` gives, per
        connector, when its connection was made (`CallContext.connected_at`; default: ctx's).
        Only the capabilities `may_run(tool)` allows (default: all) are run: those the caller
        could call itself.
        """
        if entity_type not in self.gateway.entity_types:
            known = ", ".join(sorted(self.gateway.entity_types))
            raise GatewayError(
                INVALID_ARGUMENTS,
                f"Unknown entity type {entity_type!r}; known types: {known}.",
                details={"entity_type": entity_type},
            )
        targets: list[tuple[str, ToolSpec, EntityMapping]] = []
        for name in sorted(connectors):
            if name not in self.gateway.connectors:
                continue
            choice = self._entity_source(name, entity_type, may_run)
            if choice is not None:
                targets.append((name, *choice))

        results: dict[str, list[dict[str, Any]]] = {}
        sources: dict[str, dict[str, Any]] = {}

        async def one(name: str, tool: ToolSpec, mapping: EntityMapping) -> None:
            if admit is not None:
                try:
                    admit(name, tool)
                except GatewayError as exc:
                    sources[name] = {
                        "connector": name,
                        "status": "error",
                        "count": 0,
                        "error": f"{exc.code}: {exc.message}",
                    }
                    return
            started = time.perf_counter()
            code: str | None = None
            try:
                with anyio.fail_after(per_connector_timeout):
                    made = (connected_at or {}).get(name, ctx.connected_at)
                    records = await self._search_one(
                        name,
                        tool,
                        mapping,
                        query,
                        limit,
                        connectors[name],
                        dataclasses.replace(ctx, connected_at=made),
                        store_refreshed,
                    )
            except TimeoutError:
                code = UPSTREAM_TIMEOUT
                sources[name] = {
                    "connector": name,
                    "status": "timeout",
                    "count": 0,
                    "error": f"No answer within {per_connector_timeout:g} s.",
                }
            except GatewayError as exc:
                code = exc.code
                sources[name] = {
                    "connector": name,
                    "status": "timeout" if exc.code == UPSTREAM_TIMEOUT else "error",
                    "count": 0,
                    "error": f"{exc.code}: {exc.message}",
                }
            except Exception:
                logger.exception(
                    "entity search failed unexpectedly: tenant=%s connector=%s", ctx.tenant_id, name
                )
                code = INTERNAL_ERROR
                sources[name] = {
                    "connector": name,
                    "status": "error",
                    "count": 0,
                    "error": "internal_error: The search of this connector failed.",
                }
            else:
                results[name] = records
                sources[name] = {"connector": name, "status": "ok", "count": 0, "error": None}
            if searched is not None:
                searched(name, tool, code, (time.perf_counter() - started) * 1000)

        async with anyio.create_task_group() as tg:
            for name, tool, mapping in targets:
                tg.start_soon(one, name, tool, mapping)

        # Round-robin across connectors so one app cannot crowd the others out.
        entities: list[dict[str, Any]] = []
        queues = [results[name] for name, _, _ in targets if name in results]
        index = 0
        while len(entities) < limit and any(index < len(q) for q in queues):
            for queue in queues:
                if index < len(queue) and len(entities) < limit:
                    entity = queue[index]
                    entities.append(entity)
                    sources[entity["connector"]]["count"] += 1
            index += 1
        return {
            "entities": entities,
            "sources": [sources[name] for name, _, _ in targets],
        }

    # -- entity search internals ---------------------------------------------------------

    def _entity_source(
        self, connector: str, entity_type: str, may_run: Callable[[ToolSpec], bool] | None
    ) -> tuple[ToolSpec, EntityMapping] | None:
        """The capability that searches `entity_type`, among those `may_run` allows; one that
        queries server-side wins."""
        fallback: tuple[ToolSpec, EntityMapping] | None = None
        for tool in self.gateway.connector_tools(connector):
            if tool.http is None or (may_run is not None and not may_run(tool)):
                continue
            for mapping in tool.entities:
                if mapping.type != entity_type:
                    continue
                if _uses_name(dict(mapping.args), "query"):
                    return tool, mapping
                if fallback is None:
                    fallback = (tool, mapping)
        return fallback

    def _search_args(
        self, tool: ToolSpec, mapping: EntityMapping, query: str, limit: int
    ) -> dict[str, Any]:
        node = compile_value(dict(mapping.args))
        args: dict[str, Any] = node.render({"query": query, "limit": limit})
        props = tool.input_schema.get("properties", {})
        for key, value in list(args.items()):
            prop = props.get(key)
            if isinstance(prop, Mapping) and isinstance(value, int) and not isinstance(value, bool):
                if "maximum" in prop:
                    value = min(value, int(prop["maximum"]))
                if "minimum" in prop:
                    value = max(value, int(prop["minimum"]))
                args[key] = value
        validator = self._input_validators.get(tool.name)
        if validator is None:
            validator = self._input_validators[tool.name] = validator_class()(
                dict(tool.input_schema)
            )
        error = next(iter(validator.iter_errors(args)), None)
        if error is not None:
            raise GatewayError(
                INVALID_ARGUMENTS,
                f"The entity mapping of {tool.name} produced invalid arguments.",
                details={"path": "/".join(str(p) for p in error.absolute_path)},
            )
        return args

    async def _search_one(
        self,
        name: str,
        tool: ToolSpec,
        mapping: EntityMapping,
        query: str,
        limit: int,
        credentials: Mapping[str, str],
        ctx: CallContext,
        store_refreshed: Callable[[str, dict[str, str]], Awaitable[None]] | None,
    ) -> list[dict[str, Any]]:
        args = self._search_args(tool, mapping, query, limit)

        async def stored(refreshed: dict[str, str]) -> None:
            if store_refreshed is not None:
                await store_refreshed(name, refreshed)

        result = await self.call(tool, args, credentials=credentials, ctx=ctx, on_refresh=stored)
        items = get_path(result.output, mapping.items)
        if items is MISSING or items is None:
            records: list[Any] = []
        elif mapping.items == "" or not isinstance(items, list):
            records = [items]
        else:
            records = items
        field_types = self.gateway.entity_types[mapping.type].fields
        server_side = _uses_name(dict(mapping.args), "query")
        needle = query.casefold()
        out: list[dict[str, Any]] = []
        for record in records:
            if not isinstance(record, Mapping):
                continue
            mapped: dict[str, Any] = {}
            for field_name, path in mapping.fields.items():
                value = get_path(record, path)
                if value is MISSING:
                    continue
                value = _as_field_type(value, field_types.get(field_name))
                if value is not MISSING:
                    mapped[field_name] = value
            raw_id = mapped.pop("id", None)
            if raw_id is None:
                continue
            if not server_side and not any(
                isinstance(v, str | int | float) and needle in str(v).casefold()
                for v in (raw_id, *mapped.values())
            ):
                continue
            out.append(
                {"type": mapping.type, "connector": name, "id": str(raw_id), "fields": mapped}
            )
            if len(out) >= limit:
                break
        return out

    # -- the call ------------------------------------------------------------------------

    def _fail(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        connector: str,
    ) -> ConnectorCallError:
        info: dict[str, Any] = {"connector": connector}
        if status is not None:
            info["status"] = status
        info.update(details or {})
        return ConnectorCallError(
            code,
            message,
            details=info,
            retryable=retryable,
            retry_after=retry_after,
            status=status,
        )

    def _base_url(self, conn: _ConnectorPlan, credentials: Mapping[str, str]) -> str:
        if conn.static_base is not None:
            return conn.static_base
        values: dict[str, str] = {}
        for field_name in conn.base.names():
            value = credentials.get(field_name)
            if not isinstance(value, str) or not value:
                raise self._fail(
                    UPSTREAM_AUTH_FAILED,
                    f"The stored connection to {conn.spec.title} lacks {field_name!r}; "
                    "reconnect it.",
                    connector=conn.spec.name,
                    retryable=False,
                )
            if not DNS_LABEL.match(value):
                raise self._fail(
                    UPSTREAM_AUTH_FAILED,
                    f"The stored {field_name!r} of the {conn.spec.title} connection is not a "
                    "valid host name label; reconnect it.",
                    connector=conn.spec.name,
                    retryable=False,
                )
            values[field_name] = value
        return conn.base.render(values)

    def _auth_headers(self, conn: _ConnectorPlan, credentials: Mapping[str, str]) -> dict[str, str]:
        auth = conn.spec.auth

        def need(field_name: str | None, what: str, *, header: bool = True) -> str:
            """The stored value; `header`: sent as it is in a header (`_header_safe`)."""
            value = credentials.get(field_name) if field_name else None
            if not isinstance(value, str) or not value:
                raise self._fail(
                    UPSTREAM_AUTH_FAILED,
                    f"The stored connection to {conn.spec.title} has no {what}; reconnect it.",
                    connector=conn.spec.name,
                    retryable=False,
                )
            if (not _header_safe(value)) if header else _HEADER_BAD.search(value):
                raise self._fail(
                    UPSTREAM_AUTH_FAILED,
                    f"The stored {what} of {conn.spec.title} is malformed; reconnect it.",
                    connector=conn.spec.name,
                    retryable=False,
                )
            return value

        if auth.type in ("bearer", "oauth2"):
            return {"Authorization": "Bearer " + need(auth.token_field, "access token")}
        if auth.type == "api_key":
            key = need(auth.key_field, "API key")
            return {auth.header or DEFAULT_API_KEY_HEADER: key}
        if auth.type == "basic":
            import base64

            user = need(auth.username_field, "user name", header=False)  # sent in base64
            password = need(auth.password_field, "password", header=False)
            raw = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            return {"Authorization": "Basic " + raw}
        return {}

    def _namespace(
        self, plan: _ToolPlan, arguments: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        # Defaults go in before templating, inside nested objects and list items too: a
        # default the model was shown but the request left out would be the upstream's own.
        ns = dict(arguments) if plan.defaults is None else plan.defaults.apply(arguments)
        if plan.pagination is not None:
            ns.pop("cursor", None)
        for param, source in plan.tool.bind.items():
            value = ctx.tenant_id if source == "session.tenant" else ctx.user_id
            if value is None:
                raise GatewayError(
                    UNAUTHENTICATED,
                    f"{plan.tool.name} acts for a user, and this session has none.",
                )
            ns[param] = value
        return ns

    def _build(
        self,
        plan: _ToolPlan,
        ns: Mapping[str, Any],
        base: str,
        cursor: str | None,
        idempotency_key: str | None = None,
    ) -> tuple[str, list[tuple[str, str]], dict[str, str], bytes | None, int | None]:
        """URL, query pairs, binding headers and body of the request (no auth yet), with the
        call's `idempotency_key` where the binding declares it, and the page size it asks for
        (page and offset pagination)."""
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        position = None
        if cursor is not None and plan.pagination not in (None, "link"):
            position = _cursor_value(plan, cursor)
            if plan.templated_cursor:
                ns = {**ns, "cursor": position}
        rendered_headers = plan.headers.render(ns)
        for key, value in rendered_headers.items():
            if value is not None:
                if key not in headers and key.lower() in ("accept", "user-agent"):
                    # the binding's `accept` replaces the default `Accept`, not a second one
                    headers = {k: v for k, v in headers.items() if k.lower() != key.lower()}
                headers[key] = _header_text(value)

        if plan.pagination == "link" and cursor is not None:
            if not _same_base(cursor, base):
                raise GatewayError(
                    INVALID_ARGUMENTS,
                    "The cursor does not belong to this connection; pass a next_cursor "
                    "returned by this tool.",
                    details={"argument": "cursor"},
                )
            return cursor, [], headers, None, None

        try:
            url = base + plan.path.render(ns)
        except MissingPlaceholder as exc:
            raise GatewayError(
                INVALID_ARGUMENTS,
                f"Argument {exc.name!r} is required by {plan.tool.name}.",
                details={"argument": exc.name},
            ) from None
        except DotSegment as exc:
            raise GatewayError(
                INVALID_ARGUMENTS,
                f"Argument {exc.name!r} cannot be {scalar_text(ns[exc.name])!r}: it names one "
                "item in the request path.",
                details={"argument": exc.name},
            ) from None
        query = pairs(plan.query.render(ns))
        if position is not None and plan.page_param:
            query = [pair for pair in query if pair[0] != plan.page_param]
            query.append((plan.page_param, scalar_text(position)))

        content: bytes | None = None
        body: Any = MISSING if plan.body is None else plan.body.render(ns)
        if idempotency_key is not None and plan.idempotency is not None:
            place, name = plan.idempotency
            if place == "header":
                headers[name] = idempotency_key
            elif place == "query":
                query.append((name, idempotency_key))
            else:  # the compiler allows only an object body, or none
                body = {**(body if isinstance(body, Mapping) else {}), name: idempotency_key}
        size = None
        if plan.pagination in ("page", "offset"):
            size = _page_size(plan, query, body if isinstance(body, Mapping) else None)
        if plan.graphql is not None:
            body = {"query": plan.graphql, "variables": {} if body is MISSING else body}
        if body is not MISSING:
            if plan.form:
                if not isinstance(body, Mapping):
                    raise ValueError(f"form body of {plan.tool.name} is not an object")
                content = urlencode(pairs(body)).encode("ascii")
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
                headers["Content-Type"] = "application/json; charset=utf-8"
        return url, query, headers, content, size

    async def _send(
        self,
        method: str,
        url: httpx2.URL | str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> _Reply:
        request = httpx2.Request(
            method,
            url,
            headers=headers,
            content=content,
            extensions={"timeout": httpx2.Timeout(timeout).as_dict()},
        )
        with anyio.fail_after(timeout):
            response = await self._client.send(request, stream=True)
            try:
                declared = digits(response.headers.get("content-length"))
                if declared is not None and declared > self._max_response_bytes:
                    raise _TooLarge
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_response_bytes:
                        raise _TooLarge
                    chunks.append(chunk)
            finally:
                await response.aclose()
        return _Reply(response.status_code, response.headers, b"".join(chunks), str(request.url))

    def _backoff(self, retry_index: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * (2.0**retry_index))
        return ceiling * (0.5 + random.random() / 2)

    async def _call(
        self,
        plan: _ToolPlan,
        arguments: Mapping[str, Any],
        credentials: Mapping[str, str],
        ctx: CallContext,
        on_refresh: Callable[[dict[str, str]], Awaitable[None]] | None,
    ) -> ExecResult:
        conn = plan.conn
        name = conn.spec.name
        creds: dict[str, str] = dict(credentials)
        refreshed: dict[str, str] | None = None
        attempts = 0
        status: int | None = None
        # An idempotency key, and whether an attempt may have been applied unseen (it timed out,
        # its connection broke after sending, or it was answered with a 5xx other than 503).
        key: str | None = None
        in_doubt = False
        upstream: str | None = None
        try:
            base = self._base_url(conn, creds)
            upstream = _origin(base)
            ns = self._namespace(plan, arguments, ctx)
            raw_cursor = arguments.get("cursor") if plan.pagination else None
            cursor = raw_cursor if isinstance(raw_cursor, str) and raw_cursor else None
            if cursor is not None and plan.pagination == "link":
                cursor = self._open_link(plan, ctx, cursor)
            if plan.idempotency is not None:
                key = str(uuid.uuid4())  # one per call, unguessable, the same on every attempt
            url, params, headers, content, page_size = self._build(
                plan, ns, base, cursor, idempotency_key=key
            )
            try:
                # As a request would build it: given params replace the URL's own query, and
                # no params (a link cursor) leave it alone.
                target = (
                    httpx2.URL(url, params=httpx2.QueryParams(tuple(params)))
                    if params
                    else httpx2.URL(url)
                )
            except httpx2.InvalidURL as exc:
                # Arguments too long for a URL (or holding what none may): nothing can be
                # sent, so neither a retry nor a mark on the connection's health.
                raise _unsendable(
                    conn, exc, _secret_values(creds, credentials), arguments, url_invalid=True
                ) from None
            # Auth headers win over anything the binding declares.
            if conn.auth_header is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != conn.auth_header}
            retries = 0
            timeout = conn.spec.timeout_seconds
            while True:
                attempts += 1
                send_headers = {**headers, **self._auth_headers(conn, creds)}
                can_retry = attempts < plan.max_attempts + (1 if refreshed else 0)
                try:
                    reply = await self._send(plan.method, target, send_headers, content, timeout)
                except (TimeoutError, httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.PoolTimeout):
                    if key is not None and can_retry:
                        # Only a repeat under this key can tell what became of the request.
                        in_doubt = True
                        await self._sleep(self._backoff(retries))
                        retries += 1
                        continue
                    raise self._fail(
                        UPSTREAM_TIMEOUT,
                        f"{conn.spec.title} did not answer within {timeout:g} s."
                        + (_MAY_HAVE_APPLIED if plan.writes else ""),
                        connector=name,
                        retryable=False if plan.writes else None,
                    ) from None
                except _TooLarge:
                    raise self._fail(
                        UPSTREAM_INVALID_RESPONSE,
                        f"{conn.spec.title} sent a response larger than the gateway accepts.",
                        connector=name,
                    ) from None
                except httpx2.DecodingError:
                    raise self._fail(
                        UPSTREAM_INVALID_RESPONSE,
                        f"{conn.spec.title} sent a response that could not be decoded.",
                        connector=name,
                    ) from None
                except httpx2.LocalProtocolError as exc:
                    # The client refused to send the request as built: nothing went out.
                    raise _unsendable(
                        conn, exc, _secret_values(creds, credentials), arguments, url_invalid=False
                    ) from None
                except (httpx2.TransportError, OSError) as exc:
                    # Did the request go out before the connection broke, unanswered?
                    sent = isinstance(exc, httpx2.TransportError) and not isinstance(
                        exc, httpx2.ConnectError | httpx2.ConnectTimeout
                    )
                    if can_retry:
                        in_doubt = in_doubt or sent
                        await self._sleep(self._backoff(retries))
                        retries += 1
                        continue
                    if sent:
                        raise self._fail(
                            UPSTREAM_ERROR,
                            f"The connection to {conn.spec.title} broke before it answered."
                            + (_MAY_HAVE_APPLIED if plan.writes else ""),
                            connector=name,
                            details={"reason": "connection_dropped"},
                            retryable=not plan.writes,
                        ) from None
                    # Nothing was sent: trying again is safe whatever the capability does.
                    # A host made from the tenant's own fields is named: a mistyped shop or
                    # subdomain is the usual cause, and the tenant can fix it.
                    at = f" at {urlsplit(base).hostname}" if conn.tenant_host else ""
                    raise self._fail(
                        UPSTREAM_ERROR,
                        f"Could not connect to {conn.spec.title}{at}.",
                        connector=name,
                        details={"reason": "connection_failed"},
                        retryable=True,
                    ) from None
                status = reply.status

                body: Any = MISSING
                if status >= 300 or conn.ok_path is not None or plan.graphql is not None:
                    body = self._try_json(reply.body)
                error_code = self._error_code(conn, status, body, graphql=plan.graphql is not None)
                partial: _PartialAnswer | None = None
                if plan.graphql_partial and status < 300 and error_code is not None:
                    partial = self._partial(plan, body)
                    if partial is not None:
                        error_code = None

                rate_limited = (
                    status == 429
                    or (
                        status == 403
                        and (
                            "retry-after" in reply.headers
                            or reply.headers.get("x-ratelimit-remaining") == "0"
                        )
                    )
                    or (error_code is not None and error_code in conn.rate_limit_errors)
                )
                # 401, or an error code the manifest lists as an auth failure, means the
                # credentials are no good. A 403 is a refusal of this one request (a missing
                # permission or scope): the connection itself stays usable.
                auth_failed = not rate_limited and (
                    status == 401 or (error_code is not None and error_code in conn.auth_errors)
                )
                if auth_failed:
                    if conn.can_refresh and refreshed is None:
                        new: dict[str, str] = {}  # (a shielding scope never swallows errors)
                        with anyio.CancelScope(shield=True):  # bounded by the timeout
                            new = await self._refresh(conn, creds, ctx)
                            if on_refresh is not None:
                                await on_refresh(dict(new))
                        refreshed = new
                        creds.update(new)
                        continue
                    raise self._fail(
                        UPSTREAM_AUTH_FAILED,
                        f"{conn.spec.title} rejected the stored credentials; the connection "
                        "needs to be re-authorised.",
                        status=status,
                        connector=name,
                        details=self._upstream_detail(
                            error_code, creds, credentials, key, arguments
                        ),
                        retryable=False,
                    )
                if rate_limited:
                    wait = parse_retry_after(reply.headers.get("retry-after"))
                    for header in conn.reset_headers:
                        if wait is None:
                            wait = parse_rate_limit_reset(reply.headers.get(header))
                    if can_retry and (wait is None or wait <= self._max_retry_after):
                        await self._sleep(wait if wait is not None else self._backoff(retries))
                        retries += 1
                        continue
                    raise self._fail(
                        RATE_LIMITED,
                        f"{conn.spec.title} is rate limiting this workspace; retry later.",
                        status=status,
                        connector=name,
                        details=self._upstream_detail(
                            error_code, creds, credentials, key, arguments
                        ),
                        retryable=True,
                        retry_after=wait,
                    )
                if status >= 500:
                    # A 503 says the upstream could not handle the request now (RFC 9110
                    # 15.6.4): it was not processed. Any other 5xx may come after it was: a
                    # 500 from a handler that failed halfway, a 502 or 504 from a proxy whose
                    # upstream applied it and then failed or was too slow to answer.
                    if status != 503:
                        in_doubt = True
                    wait = parse_retry_after(reply.headers.get("retry-after"))
                    if can_retry and (wait is None or wait <= self._max_retry_after):
                        await self._sleep(wait if wait is not None else self._backoff(retries))
                        retries += 1
                        continue
                    raise self._fail(
                        UPSTREAM_ERROR,
                        f"{conn.spec.title} failed with HTTP {status}.",
                        status=status,
                        connector=name,
                        details=self._upstream_detail(
                            error_code, creds, credentials, key, arguments
                        ),
                        retryable=True,
                        retry_after=wait,
                    )
                if status >= 300 or error_code is not None:
                    # A short code (Slack's channel_not_found) helps the model; free text and
                    # anything that had to be redacted stay in details only.
                    secrets = _secret_values(creds, credentials, _key_map(key))
                    code = (
                        error_code
                        if error_code
                        and _SAFE_CODE.match(error_code)
                        and _sanitise(error_code, secrets, _spoken(arguments)) == error_code
                        else None
                    )
                    shown = f" ({code})" if code else ""
                    if status in (404, 410) or (
                        error_code is not None and error_code in conn.not_found_errors
                    ):
                        # Nothing there, or nothing this tenant's credentials may see (GitHub
                        # answers 404 for a private repository): the model should not retry
                        # the same call, but look the identifier up again.
                        said = [f"HTTP {status}"] if status >= 300 else []
                        said += [code] if code else []
                        raise self._fail(
                            NOT_FOUND,
                            f"{conn.spec.title} found nothing for this request"
                            + (f" ({', '.join(said)})." if said else "."),
                            status=status,
                            connector=name,
                            details=self._upstream_detail(
                                error_code, creds, credentials, key, arguments
                            ),
                            retryable=False,
                        )
                    raise self._fail(
                        UPSTREAM_ERROR,
                        f"{conn.spec.title} reported an error{shown}."
                        if status < 300
                        else f"{conn.spec.title} refused the request with HTTP {status}{shown}.",
                        status=status,
                        connector=name,
                        details=self._upstream_detail(
                            error_code, creds, credentials, key, arguments
                        ),
                        retryable=False,
                    )
                empty = not reply.body.strip()  # 204 No Content, or a 200 with no body
                if body is MISSING and not empty:
                    body = self._try_json(reply.body)
                if body is MISSING and not empty:
                    raise self._fail(
                        UPSTREAM_INVALID_RESPONSE,
                        f"{conn.spec.title} answered with a body that is not JSON.",
                        status=status,
                        connector=name,
                    )
                try:
                    output = self._shape(
                        plan,
                        {} if empty else body,
                        reply,
                        cursor,
                        status,
                        page_size,
                        ctx,
                        empty=empty,
                    )
                except ConnectorCallError as exc:
                    # A partial answer whose kept items hold a null the output schema does
                    # not allow: those items are left out too.
                    if partial is None or exc.code != UPSTREAM_INVALID_RESPONSE:
                        raise
                    if not partial.drop_incomplete():
                        raise
                    output = self._shape(plan, body, reply, cursor, status, page_size, ctx)
                return ExecResult(
                    output=output,
                    refreshed_credentials=refreshed,
                    status=status,
                    attempts=attempts,
                    notes=(partial.note(),) if partial is not None else (),
                )
        except ConnectorCallError as exc:
            exc.attempts = attempts
            exc.refreshed_credentials = refreshed
            exc.upstream = upstream
            if in_doubt and plan.writes:
                _may_have_applied(exc)
            raise
        except GatewayError as exc:
            out = self._convert(exc, attempts, refreshed)
            out.upstream = upstream
            raise out from None

    @staticmethod
    def _convert(
        exc: GatewayError, attempts: int, refreshed: dict[str, str] | None
    ) -> ConnectorCallError:
        out = ConnectorCallError(
            exc.code,
            exc.message,
            details=exc.details,
            retryable=exc.retryable,
            retry_after=exc.retry_after,
        )
        out.attempts = attempts
        out.refreshed_credentials = refreshed
        return out

    @staticmethod
    def _try_json(body: bytes) -> Any:
        try:
            return _decode_json(body)
        except (ValueError, UnicodeDecodeError):
            return MISSING

    @staticmethod
    def _error_code(
        conn: _ConnectorPlan, status: int, body: Any, *, graphql: bool = False
    ) -> str | None:
        """The upstream's own error code or message, when the body reports a failure. The
        body is an object, or a list when `message_field` reads one (Salesforce's
        `[{"message": ...}]`: `0.message`). A GraphQL answer reports failure with a non-empty
        `errors` list, whatever the status; without `message_field`, the first error's
        message is the code."""
        is_object = isinstance(body, Mapping)
        if not is_object and not (isinstance(body, list) and conn.message_path is not None):
            return None
        ok_false = is_object and conn.ok_path is not None and get_path(body, conn.ok_path) is False
        errors: Any = body.get("errors") if graphql and is_object else None
        failed = isinstance(errors, list) and bool(errors)
        if status < 300 and not ok_false and not failed:
            return None
        value: Any = MISSING
        if conn.message_path is not None:
            value = get_path(body, conn.message_path)
        if (value is MISSING or value is None) and is_object and not failed:
            # No `message_field`, or an answer in another shape than the one it reads (GitHub's
            # GraphQL endpoint answers a bad token with a REST-style `{"message": ...}`).
            value = body.get("error", body.get("message", MISSING))
        if failed and (value is MISSING or value is None):
            first: Any = errors[0]
            value = first.get("message", "") if isinstance(first, Mapping) else ""
        if value is MISSING or value is None:
            return "" if status < 300 else None
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return "; ".join(value)  # Jira's errorMessages
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @staticmethod
    def _partial(plan: _ToolPlan, body: dict[str, Any]) -> _PartialAnswer | None:
        """A GraphQL answer with both data and errors, taken as a result (`graphql.partial`).
        Each list item an error names (the item itself, or a field inside it) that came back
        null is dropped from `body` (GraphQL nulls the nearest nullable field above an error,
        which may be the item); one that came back with a field nulled is kept for now. None
        when it is a failure after all: no selected result, or an error that is about the
        credentials or a rate limit."""
        conn = plan.conn
        data, errors = body.get("data"), body.get("errors")
        if not isinstance(data, dict) or not isinstance(errors, list):
            return None
        selected = get_path(body, plan.select) if plan.select is not None else data
        if selected is MISSING or selected is None:
            return None
        answer = _PartialAnswer(conn.spec.title)
        null: dict[int, tuple[list[Any], set[int]]] = {}  # id(list) -> (list, indexes)
        for error in errors:
            code = _graphql_code(conn, error)
            if code in conn.auth_errors or code in conn.rate_limit_errors:
                return None
            path = error.get("path") if isinstance(error, Mapping) else None
            where = _graphql_path(path)
            shown = code if code is not None and _SAFE_CODE.match(code) else "error"
            answer.said.append(f"{shown} at {where}" if where else shown)
            if where is None:
                answer.elsewhere = True
                continue
            segments = cast(list[str | int], path)  # (valid: names and indexes)
            keys = tuple(str(segment) for segment in segments)
            # The innermost list item on the path.
            at = max((i for i, seg in enumerate(segments) if isinstance(seg, int)), default=None)
            parent = get_path(data, keys[:at]) if at is not None else None
            index = cast(int, segments[at]) if at is not None else 0
            if not isinstance(parent, list) or index >= len(parent):
                answer.elsewhere = True
                continue
            named = get_path(data, keys)
            if named is not None and named is not MISSING:
                continue  # it names data that came: nothing is missing there
            item = parent[index]
            if item is None:
                null.setdefault(id(parent), (parent, set()))[1].add(index)
            else:
                answer.incomplete[id(item)] = (parent, item)
        answer.dropped = _drop_null(null)
        return answer

    @staticmethod
    def _upstream_detail(
        error_code: str | None,
        creds: Mapping[str, str],
        original: Mapping[str, str],
        key: str | None,
        arguments: Mapping[str, Any],
    ) -> dict[str, Any]:
        if not error_code:
            return {}
        secrets = _secret_values(creds, original, _key_map(key))
        return {"upstream_error": _sanitise(error_code, secrets, _spoken(arguments))}

    def _shape(
        self,
        plan: _ToolPlan,
        body: Any,
        reply: _Reply,
        cursor: str | None,
        status: int,
        page_size: int | None,
        ctx: CallContext,
        *,
        empty: bool = False,
    ) -> dict[str, Any]:
        conn = plan.conn
        data = body
        if plan.select is not None and not empty:  # nothing to select from No Content
            data = get_path(body, plan.select)
            if data is MISSING:
                raise self._fail(
                    UPSTREAM_INVALID_RESPONSE,
                    f"{conn.spec.title} answered without the expected result.",
                    status=status,
                    connector=conn.spec.name,
                    details={"missing": ".".join(plan.select)},
                )
        output: dict[str, Any]
        if plan.fields:
            output = {}
            for prop, path in plan.fields:
                value = get_path(data, path)
                if value is not MISSING:
                    output[prop] = value
        elif isinstance(data, dict):
            output = data
        else:
            raise self._fail(
                UPSTREAM_INVALID_RESPONSE,
                f"{conn.spec.title} answered with a result that is not an object.",
                status=status,
                connector=conn.spec.name,
            )

        if plan.pagination is not None:
            following = self._next_cursor(plan, body, data, output, reply, cursor, page_size)
            if following is not None and plan.pagination == "link":
                following = self._seal_link(plan, ctx, following)
            output["next_cursor"] = following

        check = plan.output_check
        error = (
            None
            if check is not None and check(output)
            else next(iter(plan.output_validator.iter_errors(output)), None)
        )
        if error is not None:
            where = _mismatch_path(error)
            reason, more = _mismatch_reason(error)
            raise self._fail(
                UPSTREAM_INVALID_RESPONSE,
                f"{conn.spec.title} answered with data that does not match the output schema "
                f"of {plan.tool.name}: at {where or 'the top level'}, {reason}.",
                status=status,
                connector=conn.spec.name,
                details={"path": where, "rule": str(error.validator), "reason": reason, **more},
            )
        return output

    def _link_mac(self, plan: _ToolPlan, ctx: CallContext, url: str) -> bytes:
        signed = "\0".join((ctx.tenant_id, plan.tool.name, url)).encode("utf-8", "surrogatepass")
        return hmac.new(self._cursor_key, signed, "sha256").digest()[:LINK_MAC_BYTES]

    def _seal_link(self, plan: _ToolPlan, ctx: CallContext, url: str) -> str:
        """The model's cursor for the next page's URL: the URL and a MAC binding it to the
        tool and the tenant (see the module doc)."""
        mac = self._link_mac(plan, ctx, url)
        return f"{_b64(url.encode('utf-8', 'surrogatepass'))}.{_b64(mac)}"

    def _open_link(self, plan: _ToolPlan, ctx: CallContext, cursor: str) -> str:
        """The URL a sealed link cursor holds, when this tool gave it to this tenant."""
        encoded, _, mac = cursor.rpartition(".")
        url = ""
        try:
            url = _unb64(encoded).decode("utf-8")
            valid = hmac.compare_digest(_unb64(mac), self._link_mac(plan, ctx, url))
        except ValueError:  # not base64, not UTF-8, not ASCII
            valid = False
        if not valid:
            raise GatewayError(
                INVALID_ARGUMENTS,
                f"The cursor is not one {plan.tool.name} returned to this workspace (or the "
                "gateway's key has changed since); pass next_cursor unchanged, or start again "
                "without a cursor.",
                details={"argument": "cursor"},
            )
        return url

    @staticmethod
    def _next_cursor(
        plan: _ToolPlan,
        body: Any,
        data: Any,
        output: Mapping[str, Any],
        reply: _Reply,
        cursor: str | None,
        page_size: int | None,
    ) -> str | None:
        if plan.more_path is not None and get_path(body, plan.more_path) is not True:
            return None
        if plan.pagination == "cursor":
            if plan.next_path is None:
                return None
            value = get_path(body, plan.next_path)
            if value is MISSING or value is None or value == "" or isinstance(value, bool):
                return None
            return value if isinstance(value, str) else scalar_text(value)
        if plan.pagination == "link":
            # The next page's URL, in the Link header or in the body (Microsoft Graph's
            # @odata.nextLink, Salesforce's nextRecordsUrl), absolute or relative to this
            # request's URL (RFC 8288 and 3986). It is checked against the base URL when the
            # model hands it back.
            if plan.next_path is None:
                _, url = _link_next(reply.headers)
            else:
                value = get_path(body, plan.next_path)
                url = value if isinstance(value, str) else None
            return urljoin(reply.url, url) if url else None
        records = _records(data, output)
        # A page shorter than the size asked for is the last one only when the upstream says
        # nothing else: upstreams cap the page size below what was asked (Jira Cloud's search,
        # Pipedrive's 500), so a declared total or a `more` flag (true here) decides instead.
        short = (
            plan.more_path is None
            and page_size is not None
            and records is not None
            and len(records) < page_size
        )
        if plan.pagination == "offset":
            if not records:
                return None  # an empty page is the last one (and the offset would not move)
            offset = (digits(cursor) or 0) if cursor is not None else 0
            following = offset + len(records)  # the records returned, not the size asked for
            total = get_path(body, plan.total_path) if plan.total_path is not None else MISSING
            if isinstance(total, int) and not isinstance(total, bool):
                return None if following >= total else str(following)
            return None if short else str(following)
        # page
        page = (_page_number(cursor) or 1) if cursor is not None else 1
        has_link, url = _link_next(reply.headers)
        if has_link:
            return str(page + 1) if url is not None else None
        if not records or short:
            return None  # an empty or short page is the last one
        return str(page + 1)

    def _token_url(self, conn: _ConnectorPlan, creds: Mapping[str, str]) -> str:
        """The token URL with the connection's own values in its placeholders (Microsoft Entra
        ID's `/{directory}/oauth2/v2.0/token`), each one percent-encoded path text."""
        assert conn.token_url is not None
        try:
            return conn.token_url.render(
                {name: creds.get(name) or None for name in conn.token_url.names()}
            )
        except (MissingPlaceholder, DotSegment) as exc:
            raise self._fail(
                UPSTREAM_AUTH_FAILED,
                f"The stored {exc.name!r} of the {conn.spec.title} connection cannot fill its "
                "token URL; reconnect it.",
                connector=conn.spec.name,
                retryable=False,
            ) from None

    async def _refresh(
        self, conn: _ConnectorPlan, creds: Mapping[str, str], ctx: CallContext
    ) -> dict[str, str]:
        """New OAuth2 tokens from the token URL; coalesced per connection and access token
        (calls that met the same expired token share one refresh)."""
        auth = conn.spec.auth
        assert conn.token_url and auth.refresh_token_field and auth.token_field
        assert auth.client_id_field and auth.client_secret_field
        name = conn.spec.name
        old = creds.get(auth.token_field, "")
        digest = hashlib.sha256(old.encode()).hexdigest()
        cache_key = (name, ctx.tenant_id, ctx.connected_at, digest)
        lock = self._refresh_locks.setdefault((name, ctx.tenant_id), anyio.Lock())
        async with lock:
            now = time.monotonic()
            cached = self._refreshed.get(cache_key)
            if cached is not None and now - cached[0] < _REFRESH_REUSE_SECONDS:
                return dict(cached[1])
            stale = [
                k for k, (at, _) in self._refreshed.items() if now - at >= _REFRESH_REUSE_SECONDS
            ]
            for key in stale:
                del self._refreshed[key]

            def field(field_name: str) -> str:
                value = creds.get(field_name)
                if not isinstance(value, str) or not value:
                    raise self._fail(
                        UPSTREAM_AUTH_FAILED,
                        f"{conn.spec.title} rejected the access token and the stored connection "
                        "cannot refresh it; re-authorise the connection.",
                        status=401,
                        connector=name,
                        retryable=False,
                    )
                return value

            form = {
                "grant_type": "refresh_token",
                "refresh_token": field(auth.refresh_token_field),
                "client_id": field(auth.client_id_field),
                "client_secret": field(auth.client_secret_field),
            }
            failure = self._fail(
                UPSTREAM_AUTH_FAILED,
                f"{conn.spec.title} rejected the access token and refreshing it failed; "
                "re-authorise the connection.",
                status=401,
                connector=name,
                details={"reason": "token_refresh_failed"},
                retryable=False,
            )
            # Only a refusal (RFC 6749: 400 invalid_grant, or 401/403) means the connection
            # must be re-authorised; an unreachable, failing or garbled token endpoint is an
            # upstream fault the next call may not meet.
            unavailable = self._fail(
                UPSTREAM_ERROR,
                f"{conn.spec.title} rejected the access token, and its token endpoint could not "
                "refresh it just now; retry later.",
                connector=name,
                details={"reason": "token_endpoint_unavailable"},
                retryable=True,
            )
            try:
                reply = await self._send(
                    "POST",
                    self._token_url(conn, creds),
                    {
                        "Accept": "application/json",
                        "Content-Type": "application/x-www-form-urlencoded",
                        "User-Agent": self._user_agent,
                    },
                    urlencode(form).encode("ascii"),
                    conn.spec.timeout_seconds,
                )
            except (TimeoutError, httpx2.HTTPError, httpx2.InvalidURL, OSError, _TooLarge):
                raise unavailable from None
            if reply.status in (400, 401, 403):
                raise failure
            if reply.status != 200:
                raise unavailable
            parsed = self._try_json(reply.body)
            tokens: Mapping[str, Any] = parsed if isinstance(parsed, Mapping) else {}
            access = tokens.get("access_token")
            if not isinstance(access, str) or not access or not _header_safe(access):
                raise unavailable
            new: dict[str, str] = {auth.token_field: access}
            rotated = tokens.get("refresh_token")
            if isinstance(rotated, str) and rotated:
                new[auth.refresh_token_field] = rotated
            self._refreshed[cache_key] = (now, new)
            logger.info("refreshed OAuth2 access token: connector=%s", name)
            return dict(new)


class _TooLarge(Exception):
    pass
