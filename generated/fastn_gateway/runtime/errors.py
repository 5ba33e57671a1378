"""The one error envelope every failure of the gateway is reported in.

A tool error reaches the client as a `CallToolResult` with `is_error=True` whose text content
is `{"error": {"code", "message", "details", "retryable"}}` (plus `retry_after_seconds` when
known) and whose structured content is absent. Protocol errors (an unknown tool, an unknown
resource) use the same envelope as JSON-RPC error data.

Messages are written for the model and the operator: never exception text, stack traces,
upstream bodies verbatim or credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# Stable codes. Documented in the README; clients may branch on them.
INVALID_ARGUMENTS: Final = "invalid_arguments"
UNKNOWN_TOOL: Final = "unknown_tool"
NOT_FOUND: Final = "not_found"
CONFLICT: Final = "conflict"
NOT_CONNECTED: Final = "not_connected"
QUOTA_EXCEEDED: Final = "quota_exceeded"
UPSTREAM_ERROR: Final = "upstream_error"
UPSTREAM_AUTH_FAILED: Final = "upstream_auth_failed"
UPSTREAM_TIMEOUT: Final = "upstream_timeout"
UPSTREAM_INVALID_RESPONSE: Final = "upstream_invalid_response"
RATE_LIMITED: Final = "rate_limited"
UNAUTHENTICATED: Final = "unauthenticated"
FORBIDDEN: Final = "forbidden"
INTERNAL_ERROR: Final = "internal_error"
# A result larger than the gateway sends (`GatewaySpec.max_result_bytes`): the call ran.
RESULT_TOO_LARGE: Final = "result_too_large"
# Recorded in event history only: a request the client cancelled (or gave up on) gets no answer.
CANCELLED: Final = "cancelled"
# The gateway's database takes no writes or answers no queries now (a full disk, a read-only
# file, an outage): the call could not complete, and may once the database recovers.
STORAGE_UNAVAILABLE: Final = "storage_unavailable"

# The most problems one invalid_arguments error lists in details.errors.
MAX_ERRORS: Final = 20

RETRYABLE_BY_DEFAULT: Final = frozenset(
    {QUOTA_EXCEEDED, RATE_LIMITED, UPSTREAM_TIMEOUT, INTERNAL_ERROR, STORAGE_UNAVAILABLE}
)


class GatewayError(Exception):
    """A failure with a stable code, safe to show to the caller.

    `refused`: the gateway refused the call before its tool ran, for who is calling (no user,
    a user the key may not name): like a call whose arguments were refused
    (`invalid_arguments`), it counts toward neither usage nor the quota. The same code from a
    tool that ran (an upstream's refusal) is not `refused`: that call counts."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retryable = code in RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.retry_after = retry_after
        self.refused = refused

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            body["retry_after_seconds"] = round(self.retry_after, 3)
        return {"error": body}

    def __repr__(self) -> str:
        return f"GatewayError({self.code!r}, {self.message!r})"


def internal_error() -> GatewayError:
    """The envelope for anything unexpected: nothing about the cause leaks."""
    return GatewayError(INTERNAL_ERROR, "The gateway failed to complete the call.", retryable=True)
