"""Connection logic of the generated typed client (`<package>.client.GatewayClient`).

The generated client subclasses `ClientBase` with one typed method per tool and one reader per
declared resource; everything that does not vary with the manifests lives here:

* transports: streamable HTTP (`ClientBase.http(url, api_key)`, the key sent as a bearer token
  by an httpx2 client) and stdio (`ClientBase.stdio(api_key=...)` spawns
  `python -m <package> serve --transport stdio` with the key in `<PACKAGE>_API_KEY`), or any
  server object or transport the SDK's `mcp.Client` accepts (`ClientBase.connect_to(...)`);
* use as an async context manager (one connection for many calls), or without one (each call
  opens and closes its own connection);
* one error type, `GatewayClientError`, carrying the gateway's error envelope (code, message,
  details, retryable, retry_after) for tool errors, for protocol errors such as an unknown
  tool, and for failures on this side (arguments that do not fit the input model, a result
  that does not fit the output model, a connection that cannot be made).

A connection must be opened and closed by the same task (the SDK's transports hold anyio
task groups); `async with` guarantees that.
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import re
import site
import sys
import threading
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TextIO, TypeGuard, TypeVar, cast
from urllib.parse import quote, urlsplit, urlunsplit

import anyio.to_thread
import httpx2
import mcp.types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, RootModel, ValidationError

from .errors import INVALID_ARGUMENTS, UNAUTHENTICATED, GatewayError

OutputT = TypeVar("OutputT", bound=BaseModel)

# Codes raised by the client itself (the server's codes are in `errors.py`).
INVALID_RESPONSE = "invalid_response"  # a result that does not fit the tool's output model
CONNECTION_FAILED = "connection_failed"  # the server could not be reached or went away
TIMEOUT = "timeout"  # no answer within the read timeout
PROTOCOL_ERROR = "protocol_error"  # a JSON-RPC error without the gateway's envelope
TOOL_ERROR = "tool_error"  # a tool error without the gateway's envelope

USER_HEADER = "X-Gateway-User"  # lets a host-application key name the end user of a call
MAX_MESSAGE = 500
# A stdio server's stderr: how much of its end is kept for an error (details) and quoted in
# the message, and how long to wait for the rest of it once the connection failed.
STDERR_TAIL = 2000
STDERR_QUOTED = 300
STDERR_WAIT_SECONDS = 3.0


def env_prefix(package: str) -> str:
    """`fastn_gateway` -> `FASTN_GATEWAY` (same rule as the server's `auth.api_key_env`)."""
    return re.sub(r"[^A-Za-z0-9]", "_", package).upper()


class GatewayClientError(GatewayError):
    """A failed call, with the gateway's error envelope.

    `code` is one of the gateway's stable codes (`unknown_tool`, `invalid_arguments`,
    `not_connected`, `quota_exceeded`, `upstream_error`, ...) or one raised by the client:

    * `connection_failed`: the gateway could not be reached or closed the connection. Over
      HTTP the message and `details["url"]` name the URL tried (without credentials, query
      or fragment); a stdio server that ended before the session started is quoted from
      the end of its stderr (`details["stderr"]` holds more of it).
    * `timeout`: no answer within the read timeout.
    * `invalid_response`: a result that does not fit the tool's output model.
    * `protocol_error`, `tool_error`: a JSON-RPC error or a tool error without the gateway's
      envelope.

    `retry_after` is in seconds when the gateway knows when to retry. The envelope itself is
    the server's (`GatewayError.envelope`).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            code, message, details=details, retryable=retryable, retry_after=retry_after
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def from_envelope(cls, envelope: Any) -> GatewayClientError | None:
        """The error an envelope `{"error": {...}}` describes, or None if it is not one."""
        body = envelope.get("error") if _is_object(envelope) else None
        if not _is_object(body):
            return None
        code, message = body.get("code"), body.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            return None
        details = body.get("details")
        retry_after = body.get("retry_after_seconds")
        return cls(
            code,
            message,
            details=details if _is_object(details) else None,
            retryable=body.get("retryable") is True,
            retry_after=float(retry_after)
            if isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
            else None,
        )

    def __repr__(self) -> str:
        return f"GatewayClientError({self.code!r}, {self.message!r})"


class PartialResultWarning(UserWarning):
    """A call that succeeded with part of the data: the upstream answered with errors beside
    it (a GraphQL query that declares `partial`, such as a search that met items the
    credentials may not read). The result holds what came; `notes` say what was left out, as
    the model reads them (error codes and paths, never the upstream's messages).

    To see it in code rather than in the log::

        with warnings.catch_warnings(record=True, action="always") as seen:
            issues = await client.github_search_issues(query="...")
        partial = [w.message for w in seen if issubclass(w.category, PartialResultWarning)]

    or make it an error with `warnings.simplefilter("error", PartialResultWarning)`.
    """

    def __init__(self, tool: str, notes: Sequence[str]) -> None:
        super().__init__(f"{tool}: {' '.join(notes)}")
        self.tool = tool
        self.notes = tuple(notes)


class NotGiven:
    """The type of `NOT_GIVEN`, the default of a tool method's argument whose schema takes
    null: there None is a value, sent as null, and an argument left out (`NOT_GIVEN`) is not
    sent, so the gateway applies its default, if any. Every other optional argument defaults
    to None, which is not sent. The pattern of openai-python's `NOT_GIVEN`; it is false::

        await gw.helpdesk_add_comment(ticket_id=3, body="hi", assignee_id=None)  # null
        await gw.helpdesk_add_comment(ticket_id=3, body="hi")  # no assignee_id
    """

    __slots__ = ()

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInfo:
    """A tool the caller can see, as `tools/list` reports it."""

    name: str
    title: str | None
    description: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    scope: str | None  # "read" / "write"
    connector: str | None  # None for built-in and memory tools
    deprecated: dict[str, Any] | None
    method: str | None  # the client method calling it (None: unknown to this client)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceInfo:
    uri: str
    name: str
    title: str | None
    description: str | None
    mime_type: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceContent:
    uri: str
    mime_type: str | None
    text: str | None = None
    blob: bytes | None = None

    def json(self) -> Any:
        """The content parsed as JSON."""
        raw = self.text if self.text is not None else (self.blob or b"").decode("utf-8")
        try:
            return json.loads(raw)
        except ValueError:
            raise GatewayClientError(
                INVALID_RESPONSE,
                f"Resource {self.uri} is not valid JSON.",
                details={"uri": self.uri},
            ) from None


@dataclass(frozen=True, slots=True)
class _HttpTarget:
    url: str
    headers: tuple[tuple[bytes, bytes], ...]  # values as UTF-8, which the gateway reads
    timeout: float | None


_Mode = Literal["auto", "legacy"]


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object (or a mapping standing for one: its keys are strings)."""
    return isinstance(value, Mapping)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)  # isinstance() leaves it unknown
        if not group.exceptions:
            return group
        exc = group.exceptions[0]
    return exc


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"path": "/" + "/".join(str(p) for p in e["loc"]), "message": _short(e["msg"])}
        for e in exc.errors(include_url=False, include_input=False)[:20]
    ]


# A path to a property inside the arguments: property names, and "*" for any item of a list or
# value of a free-form object.
NullPath = tuple[str, ...]


def _wire_arguments(
    input_model: type[BaseModel], arguments: Mapping[str, Any], nullable: frozenset[NullPath]
) -> dict[str, Any]:
    """Method arguments (field names) as the JSON object to validate and send: without those
    left out (`NOT_GIVEN`), nor the optional ones given as None, unless their schema takes
    null (their one-name paths are in `nullable`): None is sent as null there."""
    if issubclass(input_model, RootModel):  # free-form properties, already by their JSON names
        return dict(arguments)
    fields = input_model.model_fields
    given: dict[str, Any] = {}
    for key, value in arguments.items():
        if isinstance(value, NotGiven):
            continue
        field = fields.get(key)
        if field is None:  # an extra property (the model allows them), by its JSON name
            given[key] = value
            continue
        wire = field.alias or key
        if value is None and not field.is_required() and (wire,) not in nullable:
            continue  # None stands for "not given": the server applies its own default
        given[wire] = value
    return given


def _unsent_nulls(model: Any, data: Any, path: NullPath, nullable: frozenset[NullPath]) -> Any:
    """`data`, the JSON dump of `model`, without the nulls of optional fields set to None: the
    models type every optional field `X | None`, whether or not its schema takes null. Those
    whose schema does (their paths are `nullable`) keep an explicit null."""
    if isinstance(model, RootModel):
        # (the casts give isinstance()'s unknown type arguments a type, for pyright)
        return _unsent_nulls(cast("RootModel[object]", model).root, data, path, nullable)
    if isinstance(model, BaseModel) and isinstance(data, dict):
        out = dict(cast("dict[str, Any]", data))
        for name, field in type(model).model_fields.items():
            key = field.serialization_alias or field.alias or name
            if key not in out:
                continue
            value = getattr(model, name)
            if value is None and not field.is_required() and (*path, key) not in nullable:
                del out[key]
            else:
                out[key] = _unsent_nulls(value, out[key], (*path, key), nullable)
        return out
    if isinstance(model, list | tuple) and isinstance(data, list):
        items = cast("Sequence[object]", model)
        each = (*path, "*")
        return [
            _unsent_nulls(m, d, each, nullable)
            for m, d in zip(items, cast("list[object]", data), strict=True)
        ]
    if isinstance(model, Mapping) and isinstance(data, dict):
        values = cast("Mapping[object, object]", model).values()
        each = (*path, "*")
        return {
            k: _unsent_nulls(m, d, each, nullable)
            for m, (k, d) in zip(values, cast("dict[str, Any]", data).items(), strict=True)
        }
    return data


def expand_uri(template: str, values: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders, each value percent-encoded as one path segment."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", quote(value, safe=""))
    return out


def public_url(url: str) -> str:
    """`url` for messages: without user:password@, query or fragment (they may hold secrets)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def package_root(package: str) -> str | None:
    """The directory the imported `package` was found in, for a child's PYTHONPATH; None when
    it is not imported or lies in one of this interpreter's site directories (found there
    anyway, and better kept behind the standard library)."""
    module = sys.modules.get(package)
    locations = list(getattr(module, "__path__", None) or ())
    if not locations:
        return None
    root = Path(locations[0]).resolve().parent
    try:
        site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # an interpreter whose site module lacks them (virtualenv < 20)
        site_dirs = []
    if any(root == Path(d).resolve() for d in site_dirs):
        return None
    return str(root)


def _with_path(env: Mapping[str, str], root: str) -> dict[str, str]:
    """`env` with `root` first on its PYTHONPATH (the caller's entries kept after it)."""
    given = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {**env, "PYTHONPATH": os.pathsep.join([root, *given])}


class _StderrTee:
    """A stdio server's stderr: passed on to ours as it comes, its end kept for an error.

    `writer` is the pipe end handed to the child; the parent's copy is closed by `spawned()`
    (once the child holds its own), so the pipe ends when the child does. A daemon thread
    reads the other end.
    """

    def __init__(self, sink: TextIO | None) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w", encoding="utf-8")
        self._read_fd = read_fd
        self._sink = sink
        self._tail = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name="gateway-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := os.read(self._read_fd, 65536):
                text = decoder.decode(chunk)
                with self._lock:
                    self._tail = (self._tail + text)[-STDERR_TAIL:]
                if self._sink is not None:
                    try:
                        self._sink.write(text)
                        self._sink.flush()
                    except (OSError, ValueError):  # our stderr is closed: keep the tail only
                        self._sink = None
        except OSError:
            pass
        finally:
            os.close(self._read_fd)

    def spawned(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    def tail(self, wait: float) -> str:
        """What the child wrote last, once its stderr ended (or after `wait` seconds)."""
        self.spawned()
        self._thread.join(wait)
        with self._lock:
            return self._tail.strip()


class ClientBase:
    """Async client of one generated gateway. Subclassed by the generated `GatewayClient`."""

    PACKAGE: ClassVar[str] = ""  # import name of the generated package
    TOOL_METHODS: ClassVar[Mapping[str, str]] = {}  # tool name -> method name
    # Tools annotated read-only or idempotent: a call of one that failed in doubt (no answer in
    # time, the connection lost) may be repeated. A call of any other tool, one unknown to this
    # client included, may have been applied, and its error is not retryable.
    REPEATABLE_TOOLS: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        target: Any,
        *,
        timeout: float | None = 60.0,
        mode: _Mode = "auto",
    ) -> None:
        """Connect to `target`: anything `mcp.Client` accepts (an URL, `StdioServerParameters`,
        a transport, an in-process server). Prefer the `http` and `stdio` constructors."""
        self._target = target
        self._timeout = timeout
        self._mode: _Mode = mode
        self._client: Client | None = None
        self._listed: Client | None = None  # the open connection, once it has listed the tools
        self._stack: AsyncExitStack | None = None
        self._rejected_key = False

    # ------------------------------------------------------------------ constructors

    @classmethod
    def http(
        cls,
        url: str,
        api_key: str | None = None,
        *,
        user: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        mode: _Mode = "auto",
    ) -> Self:
        """A client of the gateway served over streamable HTTP at `url` (e.g.
        `http://127.0.0.1:8000/mcp`), authenticated with `api_key` as a bearer token. `user`
        names the end user (only host-application keys may do so)."""
        all_headers = dict(headers or {})
        if api_key is not None:
            all_headers["Authorization"] = f"Bearer {api_key}"
        if user is not None:
            all_headers[USER_HEADER] = user  # any user id: sent as UTF-8, as the gateway reads it
        encoded = tuple((k.encode("ascii"), v.encode("utf-8")) for k, v in all_headers.items())
        return cls(_HttpTarget(url, encoded, timeout), timeout=timeout, mode=mode)

    @classmethod
    def stdio(
        cls,
        api_key: str | None = None,
        *,
        user: str | None = None,
        command: str | None = None,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float | None = 60.0,
        mode: _Mode = "auto",
    ) -> Self:
        """A client that starts the gateway as a subprocess and talks to it over stdio.

        By default it runs `<this python> -m <package> serve --transport stdio`; `api_key`
        (and `user`) reach the server as `<PACKAGE>_API_KEY` (`<PACKAGE>_USER`). The server
        gets this process's `<PACKAGE>_*` variables (its database, secret key, base URLs, as
        when it is started from the same shell), then `env` (e.g. `<PACKAGE>_DATABASE_URL`),
        which wins; of the other variables, the SDK passes on only a few (PATH, HOME, ...).
        The child runs the package this client was imported from: unless that lies in a site
        directory, its directory goes first on the child's PYTHONPATH, before any PYTHONPATH
        given in `env`.

        The server's stderr is passed on to this process's; when the server ends before the
        session starts (a wrong database, a bad setting), the `connection_failed` error quotes
        the end of it (all of that end is in `details["stderr"]`).
        """
        prefix = env_prefix(cls.PACKAGE)
        all_env = {k: v for k, v in os.environ.items() if k.startswith(f"{prefix}_")}
        all_env.update(env or {})
        root = package_root(cls.PACKAGE)
        if root is not None:
            all_env = _with_path(all_env, root)
        if api_key is not None:
            all_env[f"{prefix}_API_KEY"] = api_key
        if user is not None:
            all_env[f"{prefix}_USER"] = user
        params = StdioServerParameters(
            command=command or sys.executable,
            args=list(args)
            if args is not None
            else ["-m", cls.PACKAGE, "serve", "--transport", "stdio"],
            env=all_env or None,
            cwd=cwd,
        )
        return cls(params, timeout=timeout, mode=mode)

    @classmethod
    def connect_to(cls, target: Any, *, timeout: float | None = 60.0, mode: _Mode = "auto") -> Self:
        """A client of any target `mcp.Client` accepts (e.g. an in-process SDK `Server`)."""
        return cls(target, timeout=timeout, mode=mode)

    # ------------------------------------------------------------------ connection

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self) -> None:
        """Open the connection (done by `async with`). Raises GatewayClientError."""
        if self._client is not None:
            raise RuntimeError("the client is already connected")
        stack = AsyncExitStack()
        try:
            self._client = await self._open(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client, self._listed = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def _open(self, stack: AsyncExitStack) -> Client:
        target = self._target
        self._rejected_key = False
        tee: _StderrTee | None = None
        try:
            if isinstance(target, _HttpTarget):
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        headers=list(target.headers),
                        timeout=httpx2.Timeout(30.0, read=max(target.timeout or 300.0, 30.0)),
                        event_hooks={"response": [self._on_response]},
                    )
                )
                target = streamable_http_client(target.url, http_client=http)
            elif isinstance(target, StdioServerParameters):
                tee = _StderrTee(sys.stderr)
                target = stdio_client(target, errlog=tee.writer)
            client = Client(target, read_timeout_seconds=self._timeout, mode=self._mode)
            opened = await stack.enter_async_context(client)
        except Exception as exc:
            error = self._failure(exc, connecting=True)
            if tee is not None:
                error = await self._ended_early(error, tee)
            raise error from None
        finally:
            if tee is not None:
                tee.spawned()
        return opened

    @staticmethod
    async def _ended_early(error: GatewayClientError, tee: _StderrTee) -> GatewayClientError:
        """A stdio server that ended before the session started: say what it said."""
        if error.code != CONNECTION_FAILED:
            return error
        tail = await anyio.to_thread.run_sync(tee.tail, STDERR_WAIT_SECONDS)
        if not tail:
            return error
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        quoted = lines[-1]
        for line in reversed(lines[:-1]):  # as many whole last lines as fit
            if len(line) + len(quoted) + 3 > STDERR_QUOTED:
                break
            quoted = f"{line} | {quoted}"
        if len(quoted) > STDERR_QUOTED:
            quoted = "..." + quoted[-(STDERR_QUOTED - 3) :]
        return GatewayClientError(
            CONNECTION_FAILED,
            f"The gateway process ended before the session started; its stderr ends: {quoted}",
            details={"stderr": tail},
            retryable=False,
        )

    async def _on_response(self, response: httpx2.Response) -> None:
        if response.status_code == 401:
            self._rejected_key = True

    @asynccontextmanager
    async def _session(self) -> AsyncGenerator[Client, None]:
        """The open connection, or a connection for this one call."""
        if self._client is not None:
            yield self._client
            return
        failure: GatewayClientError | None = None
        async with AsyncExitStack() as stack:
            client = await self._open(stack)
            try:
                yield client
            except GatewayClientError as exc:
                # Raised once the connection is closed: raised inside, it would cross the
                # transport's task group, which wraps it in an ExceptionGroup.
                failure = exc
        if failure is not None:
            raise failure

    def _failure(
        self, exc: BaseException, *, connecting: bool = False, tool: str | None = None
    ) -> GatewayClientError:
        """Translate anything the SDK or transport raised into one GatewayClientError.

        `tool`: the tool whose call was under way. A call sent that got no answer may have
        been applied, so unless the tool is read-only or idempotent (`REPEATABLE_TOOLS`) the
        error says so and is not retryable."""
        leaf = _leaf(exc)
        if isinstance(leaf, GatewayClientError):
            return leaf
        if self._rejected_key:
            self._rejected_key = False
            return GatewayClientError(
                UNAUTHENTICATED,
                "The gateway rejected the API key (missing, unknown, expired or revoked).",
            )
        where = ""
        details: dict[str, Any] | None = None
        if isinstance(self._target, _HttpTarget):
            url = public_url(self._target.url)
            where, details = f" at {url}", {"url": url}
        if isinstance(leaf, MCPError):
            found = GatewayClientError.from_envelope(leaf.data)
            if found is not None:
                return found
            if leaf.code == types.REQUEST_TIMEOUT:
                return self._in_doubt(
                    TIMEOUT, leaf.message or "The gateway did not answer in time.", None, tool
                )
            if leaf.code == types.CONNECTION_CLOSED:
                return self._in_doubt(
                    CONNECTION_FAILED,
                    f"The connection to the gateway{where} was closed.",
                    details,
                    tool,
                )
            return GatewayClientError(
                PROTOCOL_ERROR, _short(leaf.message), details={"jsonrpc_code": leaf.code}
            )
        what = "connect to" if connecting else "talk to"
        return self._in_doubt(
            CONNECTION_FAILED,
            f"Could not {what} the gateway{where}: {type(leaf).__name__}: {leaf}",
            details,
            None if connecting else tool,
        )

    def _in_doubt(
        self, code: str, message: str, details: dict[str, Any] | None, tool: str | None
    ) -> GatewayClientError:
        """A failure that leaves unknown whether the call of `tool` (None: no call was sent)
        was applied: retryable unless the tool may change data."""
        if tool is None or tool in self.REPEATABLE_TOOLS:
            return GatewayClientError(code, _short(message), details=details, retryable=True)
        note = (
            f". The call of {tool} may have been applied (the tool is neither read-only nor "
            "idempotent): check before calling it again."
        )
        return GatewayClientError(
            code,
            message.rstrip(". ")[: MAX_MESSAGE - len(note)] + note,
            details={**(details or {}), "tool": tool},
            retryable=False,
        )

    # ------------------------------------------------------------------ tools

    async def list_tools(self) -> list[ToolInfo]:
        """Every tool the caller can see (all pages), in the server's order."""
        out: list[ToolInfo] = []
        cursor: str | None = None
        async with self._session() as client:
            while True:
                try:
                    page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                except Exception as exc:
                    raise self._failure(exc) from None
                out.extend(self._tool_info(t) for t in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return out

    def _tool_info(self, tool: types.Tool) -> ToolInfo:
        a = tool.annotations
        meta = tool.meta or {}
        scope = meta.get("io.mcpforge/scope")
        connector = meta.get("io.mcpforge/connector")
        deprecated = meta.get("io.mcpforge/deprecated")
        read_only = bool(a and a.read_only_hint)
        return ToolInfo(
            name=tool.name,
            title=tool.title,
            description=tool.description,
            input_schema=dict(tool.input_schema),
            output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
            # a hint the server leaves out has MCP's default: destructive (unless read-only)
            # and open-world are true, read-only and idempotent false
            read_only=read_only,
            destructive=not read_only and (a is None or a.destructive_hint is not False),
            idempotent=bool(a and a.idempotent_hint),
            open_world=a is None or a.open_world_hint is not False,
            scope=scope if isinstance(scope, str) else None,
            connector=connector if isinstance(connector, str) else None,
            deprecated=dict(deprecated) if _is_object(deprecated) else None,
            method=self.TOOL_METHODS.get(tool.name),
        )

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Call any tool by name with wire arguments; returns its structured result as JSON
        data. The typed methods of the generated client are usually the better choice.
        A partial result warns `PartialResultWarning`."""
        return await self._call(name, dict(arguments or {}), stacklevel=3)

    async def _call_tool(
        self,
        name: str,
        input_model: type[BaseModel],
        output_model: type[OutputT],
        arguments: Mapping[str, Any],
        *,
        nullable: frozenset[NullPath] = frozenset(),
    ) -> OutputT:
        """Validate keyword arguments (by field name) with the input model, call the tool with
        what was given, validate the result with the output model.

        An optional argument that is `NOT_GIVEN`, or None, is not sent (the server applies its
        default), unless it is None and its schema takes null (its path, one name long, is in
        `nullable`; the generated method defaults it to `NOT_GIVEN`): None is sent as null
        there. Any other value given is sent, even one equal to the default this client was
        built with (the server's may have changed). In a nested model, an optional field set to
        None is not sent either, unless its schema takes null (its path is in `nullable`).
        """
        given = _wire_arguments(input_model, arguments, nullable)
        try:
            model = input_model.model_validate(given)
        except ValidationError as exc:
            raise GatewayClientError(
                INVALID_ARGUMENTS,
                f"Arguments do not match the input schema of {name}.",
                details={"errors": _errors(exc)},
            ) from None
        dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        payload = cast("dict[str, Any]", _unsent_nulls(model, dumped, (), nullable))
        # the warning points at the line that called the generated method
        data = await self._call(name, payload, stacklevel=4)
        try:
            return output_model.model_validate(data)
        except ValidationError as exc:
            raise GatewayClientError(
                INVALID_RESPONSE,
                f"The result of {name} does not match its output model.",
                details={"errors": _errors(exc)},
            ) from None

    async def _list_before_calling(self, client: Client) -> None:
        """List the tools on a connection that has not, before its first call. The SDK checks a
        result against its tool's output schema, and lists the tools to learn it: after the
        call, where a failure (a gateway shutting down refuses the listing) lost a result
        already received, a write's included, as a retryable connection error. A failure here
        leaves nothing sent. The same round trip, only earlier."""
        if client is self._listed:
            return
        try:
            await client.list_tools()
        except Exception as exc:
            raise self._failure(exc) from None
        if client is self._client:
            self._listed = client

    async def _call(self, name: str, payload: dict[str, Any], *, stacklevel: int) -> Any:
        async with self._session() as client:
            await self._list_before_calling(client)
            try:
                result = await client.call_tool(name, payload)
            except RuntimeError as exc:  # the SDK's output-schema check
                raise GatewayClientError(
                    INVALID_RESPONSE, _short(str(exc)), details={"tool": name}
                ) from None
            except Exception as exc:
                raise self._failure(exc, tool=name) from None
        text = next((c.text for c in result.content if isinstance(c, types.TextContent)), None)
        if result.is_error:
            found = None
            if text is not None:
                try:
                    found = GatewayClientError.from_envelope(json.loads(text))
                except ValueError:
                    found = None
            raise found or GatewayClientError(
                TOOL_ERROR, _short(text or f"{name} failed."), details={"tool": name}
            )
        # The gateway sends the output as JSON text, then each note as its own text.
        notes = [c.text for c in result.content[1:] if isinstance(c, types.TextContent)]
        if notes:
            warnings.warn(PartialResultWarning(name, notes), stacklevel=stacklevel)
        if result.structured_content is not None:
            return result.structured_content
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            raise GatewayClientError(
                INVALID_RESPONSE, f"{name} returned no structured result.", details={"tool": name}
            ) from None

    # ------------------------------------------------------------------ resources

    async def list_resources(self) -> list[ResourceInfo]:
        """The concrete resources the caller can read (all pages)."""
        out: list[ResourceInfo] = []
        cursor: str | None = None
        async with self._session() as client:
            while True:
                try:
                    page = await client.list_resources(cursor=cursor, cache_mode="bypass")
                except Exception as exc:
                    raise self._failure(exc) from None
                out.extend(
                    ResourceInfo(
                        uri=r.uri,
                        name=r.name,
                        title=r.title,
                        description=r.description,
                        mime_type=r.mime_type,
                    )
                    for r in page.resources
                )
                cursor = page.next_cursor
                if not cursor:
                    return out

    async def read_resource(self, uri: str) -> ResourceContent:
        """Read one resource; an unknown or forbidden URI raises `not_found`."""
        async with self._session() as client:
            try:
                result = await client.read_resource(uri, cache_mode="bypass")
            except Exception as exc:
                raise self._failure(exc) from None
        if not result.contents:
            raise GatewayClientError(INVALID_RESPONSE, f"Resource {uri} has no content.")
        first = result.contents[0]
        if isinstance(first, types.TextResourceContents):
            return ResourceContent(uri=first.uri, mime_type=first.mime_type, text=first.text)
        return ResourceContent(
            uri=first.uri, mime_type=first.mime_type, blob=base64.b64decode(first.blob)
        )

    async def _read_json(self, uri: str) -> dict[str, Any]:
        """A JSON resource: every reader of the gateway's answers one JSON object."""
        data = (await self.read_resource(uri)).json()
        if not isinstance(data, dict):
            raise GatewayClientError(
                INVALID_RESPONSE,
                f"Resource {uri} is not a JSON object.",
                details={"uri": uri},
            )
        return cast(dict[str, Any], data)
