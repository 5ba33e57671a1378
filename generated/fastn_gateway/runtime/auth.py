"""Bearer API keys: verification, principals, and the SDK's `TokenVerifier`.

A key is `gwk_<43 url-safe chars>` (32 random bytes). Only its sha256 is stored; the first
12 characters are kept for display. Each key belongs to one tenant, carries scopes
(`read`, `write`), expires (default `gateway.key_ttl_days`), can be revoked, can be bound to
one user, and can be a host-application key (`can_assert_user`) allowed to name the user
of a request with the `X-Gateway-User` header.

Every request re-reads its key (one indexed query that also returns the tenant's
`generation`), so revocation and expiry take effect on the next request, across processes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from .store import KeyRecord, Store, latin1_reading, now_us

if TYPE_CHECKING:  # the SDK is imported lazily so the admin CLI starts fast
    from mcp.server.auth.provider import AccessToken

USER_HEADER = "x-gateway-user"


def header_text(value: str) -> str:
    """A header value as the text its sender meant: HTTP servers hand values over as Latin-1,
    but a user id outside Latin-1 (`日本`) can only be sent as UTF-8 bytes, which clients (the
    typed client too) do. Bytes that are not UTF-8 stay read as Latin-1 (`ü` sent as 0xFC)."""
    return latin1_reading(value) or value


def api_key_env(import_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", import_name).upper() + "_API_KEY"


def user_env(import_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", import_name).upper() + "_USER"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: derived from a verified key, never from tool arguments."""

    tenant_id: str
    tenant_name: str
    key_id: str
    scopes: frozenset[str]
    user: str | None  # external id of the bound user
    can_assert_user: bool
    plan: str
    generation: int
    expires_at: int

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @classmethod
    def from_record(cls, record: KeyRecord) -> Principal:
        info = record.info
        return cls(
            tenant_id=info.tenant_id,
            tenant_name=record.tenant_name,
            key_id=info.id,
            scopes=frozenset(info.scopes),
            user=info.user_external_id,
            can_assert_user=info.can_assert_user,
            plan=record.plan,
            generation=record.generation,
            expires_at=info.expires_at,
        )

    def to_claims(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "tenant_name": self.tenant_name,
            "key_id": self.key_id,
            "user": self.user,
            "can_assert_user": self.can_assert_user,
            "plan": self.plan,
            "generation": self.generation,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], scopes: list[str]) -> Principal:
        return cls(
            tenant_id=str(claims["tenant_id"]),
            tenant_name=str(claims["tenant_name"]),
            key_id=str(claims["key_id"]),
            scopes=frozenset(scopes),
            user=claims.get("user"),
            can_assert_user=bool(claims.get("can_assert_user")),
            plan=str(claims["plan"]),
            generation=int(claims["generation"]),
            expires_at=int(claims["expires_at"]),
        )


class KeyVerifier:
    """Turns a presented key into a `Principal`, or None when it must be refused."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # key id -> (the record it was built from, principal): the store hands back the same
        # record object until the database changes, so the principal can be reused.
        self._memo: dict[str, tuple[KeyRecord, Principal]] = {}

    def verify_sync(self, token: str) -> Principal | None:
        token = token.strip()
        if not token or len(token) > 512:
            return None
        record = self.store.lookup_key(token)
        if record is None:
            return None
        info = record.info
        if info.revoked_at is not None or info.expires_at <= now_us():
            return None
        memo = self._memo.get(info.id)
        if memo is not None and memo[0] is record:
            return memo[1]
        principal = Principal.from_record(record)
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[info.id] = (record, principal)
        return principal

    async def verify(self, token: str) -> Principal | None:
        if self.store.is_sqlite:
            # An indexed read on a local file: cheaper inline than a thread hop.
            return self.verify_sync(token)
        return await anyio.to_thread.run_sync(self.verify_sync, token)


class GatewayTokenVerifier:
    """The SDK's `TokenVerifier` protocol over gateway API keys.

    Missing, unknown, expired and revoked keys all yield None, which the SDK's bearer
    middleware turns into HTTP 401 before any MCP handler runs.
    """

    def __init__(self, verifier: KeyVerifier) -> None:
        self.verifier = verifier
        self._memo: dict[str, tuple[Principal, AccessToken]] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        from mcp.server.auth.provider import AccessToken

        principal = await self.verifier.verify(token)
        if principal is None:
            return None
        memo = self._memo.get(principal.key_id)
        if memo is not None and memo[0] is principal:
            return memo[1]
        access = AccessToken(
            token="",  # never keep the secret around longer than needed
            client_id=principal.key_id,
            scopes=sorted(principal.scopes),
            expires_at=principal.expires_at // 1_000_000,
            subject=principal.tenant_id,
            claims={**principal.to_claims(), PRINCIPAL_CLAIM: principal},
        )
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[principal.key_id] = (principal, access)
        return access


PRINCIPAL_CLAIM = "io.mcpforge/principal"


def principal_from_access_token(token: AccessToken | None) -> Principal | None:
    if token is None or not token.claims:
        return None
    found = token.claims.get(PRINCIPAL_CLAIM)
    if isinstance(found, Principal):
        return found
    if "tenant_id" not in token.claims:
        return None
    return Principal.from_claims(token.claims, token.scopes)


def key_from_environ(import_name: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(api_key_env(import_name), "").strip()
    return value or None
