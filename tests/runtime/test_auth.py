"""API key verification (HTTP 401 behaviour is covered in test_server_http.py)."""

from __future__ import annotations

import sqlalchemy as sa

from generator.runtime import store as st
from generator.runtime.auth import (
    GatewayTokenVerifier,
    KeyVerifier,
    api_key_env,
    principal_from_access_token,
)
from generator.runtime.store import Store


async def test_verifier_accepts_only_live_keys(store: Store) -> None:
    t = store.create_tenant("acme")
    store.register_user(t.id, "ash")
    live = store.issue_key(t.id, scopes=["read"], user="ash")
    expired = store.issue_key(t.id)
    revoked = store.issue_key(t.id)
    store.revoke_key(revoked.info.id)
    with store.write() as conn:
        conn.execute(
            st.api_keys.update()
            .where(st.api_keys.c.id == expired.info.id)
            .values(expires_at=st.now_us() - 1)
        )
    v = KeyVerifier(store)
    p = await v.verify(live.token)
    assert p is not None
    assert (p.tenant_id, p.tenant_name, p.user, p.scopes) == (
        t.id,
        "acme",
        "ash",
        frozenset({"read"}),
    )
    assert await v.verify(expired.token) is None
    assert await v.verify(revoked.token) is None
    assert await v.verify("gwk_unknown") is None
    assert await v.verify("") is None
    assert await v.verify("x" * 10_000) is None


async def test_token_verifier_round_trips_principal(store: Store) -> None:
    t = store.create_tenant("acme")
    issued = store.issue_key(t.id, scopes=["read", "write"], host_app=True)
    tv = GatewayTokenVerifier(KeyVerifier(store))
    tok = await tv.verify_token(issued.token)
    assert tok is not None
    assert tok.token == ""  # the secret is not carried around
    assert issued.token not in repr(tok)
    assert tok.client_id == issued.info.id
    assert tok.expires_at == issued.info.expires_at // 1_000_000
    p = principal_from_access_token(tok)
    assert p is not None and p.can_assert_user and p.scopes == {"read", "write"}
    assert await tv.verify_token("gwk_nope") is None


async def test_generation_tracks_connection_changes(store: Store) -> None:
    t = store.create_tenant("acme")
    issued = store.issue_key(t.id)
    v = KeyVerifier(store)
    p1 = await v.verify(issued.token)
    store.connect(t.id, "slack", {"bot_token": "x"})
    p2 = await v.verify(issued.token)
    assert p1 is not None and p2 is not None
    assert p2.generation == p1.generation + 1


def test_env_names() -> None:
    assert api_key_env("fastn_gateway") == "FASTN_GATEWAY_API_KEY"


def test_only_hashes_in_database(sqlite_store: Store) -> None:
    t = sqlite_store.create_tenant("acme")
    issued = sqlite_store.issue_key(t.id)
    with sqlite_store.read() as conn:
        dump = [tuple(r) for r in conn.execute(sa.select(st.api_keys)).all()]
    assert issued.token not in repr(dump)


async def test_cached_lookups_see_other_writers_at_once(
    sqlite_store: Store, gateway, cipher
) -> None:
    """Key lookups are cached until the database changes; a change made through another
    engine (as the admin CLI in another process does) is seen on the next lookup."""
    from generator.runtime.store import make_engine

    t = sqlite_store.create_tenant("acme")
    issued = sqlite_store.issue_key(t.id)
    v = KeyVerifier(sqlite_store)
    for _ in range(3):
        assert await v.verify(issued.token) is not None
    other = Store(make_engine(str(sqlite_store.engine.url.database)), gateway, cipher)
    fresh = other.issue_key(t.id)
    assert await v.verify(fresh.token) is not None
    other.revoke_key(issued.info.id)
    assert await v.verify(issued.token) is None
    other.connect(t.id, "slack", {"bot_token": "x"})
    p = await v.verify(fresh.token)
    assert p is not None and p.generation == 1
    other.dispose()
