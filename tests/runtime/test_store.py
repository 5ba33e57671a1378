"""The store on a real SQLite file, and on PostgreSQL when MCPFORGE_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from generator.runtime import store as st
from generator.runtime.crypto import (
    CredentialCipher,
    CredentialKeyError,
    generate_key,
    load_cipher,
    secret_key_env,
)
from generator.runtime.store import Store, make_engine

SECRET = "xoxb-super-secret-token-123"


def test_migrate_is_idempotent_and_creates_file(tmp_path: Path, gateway, cipher) -> None:
    path = tmp_path / "sub" / "gw.db"
    s = Store(make_engine(str(path)), gateway, cipher)
    s.migrate()
    s.migrate()
    assert path.exists()
    with s.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    s.dispose()


def test_a_new_sqlite_database_is_readable_by_its_owner_only(
    tmp_path: Path, gateway, cipher
) -> None:
    """It holds users' memories and the event history in clear, beside a key file that is
    owner-only: so is it, and SQLite gives its write-ahead log and index the same mode."""
    old = os.umask(0o022)
    try:
        db = tmp_path / "var" / "gw.db"
        engine = make_engine(str(db))
        Store(engine, gateway, cipher).migrate()
        with engine.connect() as conn:  # open: the -wal and -shm files exist
            conn.exec_driver_sql("SELECT count(*) FROM tenants").all()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
        engine.dispose()
        assert modes == {"gw.db": 0o600, "gw.db-wal": 0o600, "gw.db-shm": 0o600}
        db.chmod(0o640)  # an existing database keeps the mode its owner gave it
        make_engine(str(db)).dispose()
        assert stat.S_IMODE(db.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_newer_schema_is_refused(sqlite_store: Store) -> None:
    with sqlite_store.write() as conn:
        conn.execute(st.schema_info.update().values(version=st.SCHEMA_VERSION + 1))
    with pytest.raises(st.StoreError, match="newer"):
        sqlite_store.migrate()


def test_an_older_schema_is_marked_current_so_older_gateways_refuse_it(
    sqlite_store: Store,
) -> None:
    """A database an older gateway wrote is upgraded in place and marked with this schema's
    version: the older gateway, which would misread it, then refuses it as newer."""
    with sqlite_store.write() as conn:
        conn.execute(st.schema_info.update().values(version=1))
    sqlite_store.migrate()
    with sqlite_store.read() as conn:
        assert conn.execute(sa.select(st.schema_info.c.version)).scalar() == st.SCHEMA_VERSION
    assert st.SCHEMA_VERSION > 1


def test_tenants(store: Store) -> None:
    a = store.create_tenant("acme")
    assert a.plan == "starter"
    with pytest.raises(st.Conflict):
        store.create_tenant("acme")
    with pytest.raises(st.StoreError, match="unknown plan"):
        store.create_tenant("other", plan="platinum")
    b = store.ensure_tenant("beta", plan="growth")
    assert store.ensure_tenant("beta").id == b.id
    assert [t.name for t in store.list_tenants()] == ["acme", "beta"]
    assert store.get_tenant(a.id) == store.get_tenant("acme")


def test_a_tenant_name_never_stands_for_another_tenant(store: Store) -> None:
    """Commands take a tenant by id or by name: naming a tenant after another's id would hand
    its keys and connections to the wrong tenant."""
    victim = store.create_tenant("victim")
    for name in (victim.id, f" {victim.id} ", "tn_lookalike"):
        with pytest.raises(st.StoreError, match="which tenant ids use"):
            store.create_tenant(name)
    with pytest.raises(st.StoreError, match="which tenant ids use"):
        store.ensure_tenant("tn_lookalike")
    assert [t.name for t in store.list_tenants()] == ["victim"]
    # A database from before the rule may hold such a name: the id still wins.
    with store.write() as conn:
        conn.execute(
            st.tenants.insert().values(
                id="tn_0000000000000001",
                name=victim.id,
                plan="starter",
                generation=0,
                created_at=0,
            )
        )
    assert store.require_tenant(victim.id) == victim
    assert store.require_tenant("tn_0000000000000001").name == victim.id


def test_keys_lifecycle(store: Store) -> None:
    t = store.create_tenant("acme")
    store.register_user(t.id, "ash")
    issued = store.issue_key(t.id, scopes=["read"], user="ash", name="bot")
    assert issued.token.startswith("gwk_") and len(issued.token) > 40
    assert issued.info.prefix == issued.token[:12]
    # only the hash is stored
    with store.read() as conn:
        row = conn.execute(sa.select(st.api_keys)).one()
    assert issued.token not in [str(v) for v in row]
    assert row.key_hash == st.hash_key(issued.token)

    rec = store.lookup_key(issued.token)
    assert rec is not None
    assert rec.info.scopes == ("read",)
    assert rec.info.user_external_id == "ash"
    assert rec.tenant_name == "acme"
    assert store.lookup_key(issued.token + "x") is None

    rotated = store.rotate_key(issued.info.id)
    assert rotated.token != issued.token
    assert rotated.info.scopes == ("read",) and rotated.info.user_external_id == "ash"
    old = store.get_key(issued.info.id)
    assert old is not None and old.revoked_at is not None
    with pytest.raises(st.Conflict):
        store.rotate_key(issued.info.id)
    revoked = store.revoke_key(rotated.info.id)
    assert revoked.status(st.now_us()) == "revoked"
    assert [k.id for k in store.list_keys(t.id)] == [issued.info.id, rotated.info.id]


def test_key_validation(store: Store) -> None:
    t = store.create_tenant("acme")
    with pytest.raises(st.StoreError):
        store.issue_key(t.id, scopes=["admin"])
    with pytest.raises(st.StoreError):
        store.issue_key(t.id, scopes=[])
    with pytest.raises(st.NotFound):
        store.issue_key(t.id, user="nobody")
    issued = store.issue_key(t.id, ttl_days=1)
    assert issued.info.expires_at - issued.info.created_at == st.DAY_US
    default = store.issue_key(t.id)
    assert default.info.expires_at - default.info.created_at == 90 * st.DAY_US


def test_credentials_encrypted_at_rest(store: Store, cipher: CredentialCipher) -> None:
    t = store.create_tenant("acme")
    gen0 = store.require_tenant(t.id).generation
    rec = store.connect(t.id, "slack", {"bot_token": SECRET})
    assert rec.state == "active"
    assert store.require_tenant(t.id).generation == gen0 + 1
    with store.read() as conn:
        raw = conn.execute(sa.select(st.connections.c.credentials)).scalar_one()
    assert SECRET not in raw
    assert store.open_credentials(rec) == {"bot_token": SECRET}
    other = Store(store.engine, store.gateway, CredentialCipher([generate_key()]))
    with pytest.raises(CredentialKeyError):
        other.open_credentials(rec)
    # a cipher holding the old key among others still decrypts (rotation)
    rotated = CredentialCipher([generate_key(), *[]])
    assert rotated is not None


def test_connect_validates_fields(store: Store) -> None:
    t = store.create_tenant("acme")
    with pytest.raises(st.StoreError, match="needs credential"):
        store.connect(t.id, "shopify", {"shop": "demo"})
    with pytest.raises(st.StoreError, match="no credential field"):
        store.connect(t.id, "slack", {"bot_token": "x", "extra": "y"})
    with pytest.raises(st.NotFound):
        store.connect(t.id, "salesforce", {})


@pytest.mark.parametrize("shop", ["acme/../../v1.0/users?x=", "evil.example#", "a b", "-x"])
def test_a_base_url_field_must_be_one_host_name_label_when_connecting(
    store: Store, shop: str
) -> None:
    """`https://{shop}.myshopify.com`: anything but one label would move the request."""
    t = store.create_tenant("acme")
    with pytest.raises(st.StoreError, match="must be one host name label"):
        store.connect(t.id, "shopify", {"shop": shop, "access_token": "shpat_x"})
    assert store.get_connection(t.id, "shopify") is None
    assert store.connect(t.id, "shopify", {"shop": "acme-2", "access_token": "x"}).state == "active"


def test_connection_states_and_events(store: Store) -> None:
    t = store.create_tenant("acme")
    store.connect(t.id, "slack", {"bot_token": SECRET})
    store.connect(t.id, "shopify", {"shop": "demo", "access_token": "shpat_x"})
    assert store.snapshot(t.id).active == {"slack", "shopify"}
    assert store.mark_needs_reauth(t.id, "slack", "upstream_auth_failed")
    assert not store.mark_needs_reauth(t.id, "slack", "upstream_auth_failed")
    snap = store.snapshot(t.id)
    assert snap.active == {"shopify"}
    assert snap.connections["slack"].state == "needs_reauth"
    assert snap.connections["slack"].last_error == "upstream_auth_failed"
    d = store.disconnect(t.id, "shopify")
    assert d.state == "disconnected" and d.sealed_credentials is None
    with pytest.raises(st.NotFound):
        store.disconnect(t.id, "shopify")
    # reconnect clears the error
    again = store.connect(t.id, "slack", {"bot_token": "new"})
    assert again.state == "active" and again.last_error is None
    types = [e.type for e in store.query_events(t.id)]
    assert types == ["connect", "disconnect", "connect", "connect"]


def test_refreshed_credentials(store: Store) -> None:
    t = store.create_tenant("acme")
    store.connect(
        t.id,
        "hubspot",
        {"access_token": "a", "refresh_token": "r", "client_id": "c", "client_secret": "s"},
    )
    store.update_credentials(t.id, "hubspot", {"access_token": "b", "refresh_token": "r2"})
    rec = store.get_connection(t.id, "hubspot")
    assert rec is not None
    assert store.open_credentials(rec) == {
        "access_token": "b",
        "refresh_token": "r2",
        "client_id": "c",
        "client_secret": "s",
    }


def test_flows_are_versioned(store: Store) -> None:
    t = store.create_tenant("acme")
    f1 = store.create_flow(t.id, "nightly", {"steps": [{"tool": "a"}]})
    f2 = store.create_flow(t.id, "nightly", {"steps": [{"tool": "b"}]})
    f3 = store.create_flow(t.id, "other", {"steps": []})
    assert (f1.version, f2.version, f3.version) == (1, 2, 1)
    assert f1.flow_id == f2.flow_id != f3.flow_id
    assert [f.definition["steps"] for f in store.list_flows(t.id) if f.name == "nightly"] == [
        [{"tool": "a"}],
        [{"tool": "b"}],
    ]


def test_events_filter_and_paginate(store: Store) -> None:
    a = store.create_tenant("a")
    b = store.create_tenant("b")
    base = st.now_us()
    recs = [
        st.make_event(
            a.id,
            "tool_call",
            "ok" if i % 3 else "error",
            at=base + i,
            connector="slack",
            tool="slack_x",
        )
        for i in range(25)
    ]
    recs.append(st.make_event(b.id, "tool_call", at=base, connector="slack"))
    store.write_batch(recs)
    page1 = store.query_events(a.id, limit=10)
    assert len(page1) == 10
    assert [e.at for e in page1] == sorted((e.at for e in page1), reverse=True)
    page2 = store.query_events(a.id, limit=10, before_id=page1[-1].id)
    page3 = store.query_events(a.id, limit=10, before_id=page2[-1].id)
    seen = [e.id for e in page1 + page2 + page3]
    assert len(seen) == len(set(seen)) == 25
    errors = store.query_events(a.id, status="error", limit=100)
    assert len(errors) == 9
    window = store.query_events(a.id, since=base + 5, until=base + 9, limit=100)
    assert sorted(e.at - base for e in window) == [5, 6, 7, 8, 9]
    assert store.call_stats(a.id, "slack", base) == (25, 9)
    assert all(e.tenant_id == b.id for e in store.query_events(b.id))


def test_usage_counters_accumulate(store: Store) -> None:
    t = store.create_tenant("acme")
    d = st.UsageDelta(t.id, "2026-05", "slack_send_message", "slack", 3, 1)
    store.write_batch([], [d, st.UsageDelta(t.id, "2026-05", "fastn_list_integrations", "", 2, 0)])
    store.write_batch([], [d])
    total, per = store.usage_totals(t.id, "2026-05")
    assert total == 8 and per == {"slack": 6}
    rows = {r.tool: r for r in store.usage_rows(t.id, "2026-05")}
    assert rows["slack_send_message"].errors == 2
    assert store.usage_totals(t.id, "2026-06") == (0, {})


def test_usage_is_counted_by_day_and_a_month_sums_its_days(store: Store) -> None:
    """Calls are counted by day whatever the plan; a month is the sum of its days. A database
    from before holds a monthly plan's calls under the month's key: they count toward the
    month, not toward any of its days."""
    t = store.create_tenant("acme")
    slack = ("slack_send_message", "slack")
    native = ("fastn_list_integrations", "")
    store.write_batch(
        [],
        [
            st.UsageDelta(t.id, "2026-05", *slack, 10, 1),  # written before counting by day
            st.UsageDelta(t.id, "2026-05-01", *slack, 2, 0),
            st.UsageDelta(t.id, "2026-05-31", *native, 3, 1),
            st.UsageDelta(t.id, "2026-04-30", *native, 100, 0),
            st.UsageDelta(t.id, "2026-06-01", *slack, 100, 0),
        ],
    )
    assert store.usage_totals(t.id, "2026-05") == (15, {"slack": 12})
    assert [
        (r.tool, r.connector, r.calls, r.errors) for r in store.usage_rows(t.id, "2026-05")
    ] == [
        ("fastn_list_integrations", "", 3, 1),
        ("slack_send_message", "slack", 12, 1),
    ]
    assert store.usage_totals(t.id, "2026-05-01") == (2, {"slack": 2})
    assert store.usage_totals(t.id, "2026-05-02") == (0, {})
    assert store.usage_day_totals(t.id, "2026-05-31") == {
        "2026-05-31": (3, {}),
        "2026-05": (15, {"slack": 12}),
    }
    assert st.usage_day(st.parse_iso("2026-05-31T23:59:59Z")) == "2026-05-31"
    assert st.month_of("2026-05-31") == "2026-05"


def test_activity_counts_each_tenants_newer_events_and_calls(store: Store) -> None:
    """What the change poll reads to find other processes' calls: one tenant's events above
    a floor and its calls per (period, connector), never another tenant's."""
    a, b = store.create_tenant("acme"), store.create_tenant("bravo")
    first = st.make_event(a.id, "tool_call", at=1_000)
    store.write_batch(
        [first, st.make_event(b.id, "tool_call", at=5_000)],
        [
            st.UsageDelta(a.id, "2026-05", "slack_send_message", "slack", 3, 1),
            st.UsageDelta(a.id, "2026-05", "slack_list_channels", "slack", 2, 0),
            st.UsageDelta(a.id, "2026-05", "fastn_list_integrations", "", 1, 0),
            st.UsageDelta(a.id, "2026-04", "slack_send_message", "slack", 9, 0),
            st.UsageDelta(b.id, "2026-05", "slack_send_message", "slack", 7, 0),
        ],
    )
    baseline = store.activity({a.id: None}, ["2026-05"])[a.id]
    assert (baseline.events, baseline.newest) == (0, first.id)
    assert baseline.calls == {("2026-05", "slack"): 5, ("2026-05", ""): 1}
    later = [st.make_event(a.id, "tool_call", at=2_000 + i) for i in range(3)]
    store.write_batch(later)
    read = store.activity({a.id: first.id, "tn_nobody": None}, ["2026-05", "2026-04"])
    assert (read[a.id].events, read[a.id].newest) == (3, max(e.id for e in later))
    assert read[a.id].calls[("2026-04", "slack")] == 9
    assert read["tn_nobody"] == st.TenantActivity(0, "", {})


def test_health_batch(store: Store) -> None:
    t = store.create_tenant("acme")
    at = store.connect(t.id, "slack", {"bot_token": "x"}).connected_at
    assert at is not None
    store.write_batch([], [], [st.HealthDelta(t.id, "slack", at + 100, None, None)])
    store.write_batch([], [], [st.HealthDelta(t.id, "slack", at + 50, at + 60, "upstream_error")])
    store.write_batch([], [], [st.HealthDelta(t.id, "slack", None, at + 55, "rate_limited")])
    rec = store.get_connection(t.id, "slack")
    assert rec is not None
    assert (  # the latest of each, whatever order the batches came in
        rec.last_success_at == at + 100
        and rec.last_error_at == at + 60
        and rec.last_error == "upstream_error"
    )


def test_a_reconnection_starts_with_a_clean_status(store: Store) -> None:
    """Reconnecting is a new connection: no last success or error of the previous one, and
    outcomes of calls that began before it (still in a recorder's batch) are not applied."""
    t = store.create_tenant("acme")
    first = store.connect(t.id, "slack", {"bot_token": "old"}).connected_at
    assert first is not None
    store.write_batch(
        [], [], [st.HealthDelta(t.id, "slack", first + 1, first + 2, "upstream_error")]
    )
    assert store.mark_needs_reauth(t.id, "slack", "upstream_auth_failed")
    again = store.connect(t.id, "slack", {"bot_token": "new"})
    assert again.connected_at is not None and again.connected_at > first
    assert (again.state, again.last_success_at, again.last_error_at, again.last_error) == (
        "active",
        None,
        None,
        None,
    )
    late = again.connected_at - 1  # a call through the old credentials, flushed late
    store.write_batch([], [], [st.HealthDelta(t.id, "slack", late, late, "upstream_error")])
    rec = store.get_connection(t.id, "slack")
    assert rec is not None and (rec.last_success_at, rec.last_error) == (None, None)
    store.write_batch([], [], [st.HealthDelta(t.id, "slack", again.connected_at + 5, None, None)])
    rec = store.get_connection(t.id, "slack")
    assert rec is not None and rec.last_success_at == again.connected_at + 5


def test_users(store: Store) -> None:
    t = store.create_tenant("acme")
    o = store.create_tenant("other")
    u, created = store.register_user(t.id, "ash@example.com")
    assert created
    u2, created2 = store.register_user(t.id, "ash@example.com")
    assert u2.id == u.id and not created2
    assert store.get_user(o.id, "ash@example.com") is None
    with pytest.raises(st.StoreError):
        store.register_user(t.id, "  ")


def test_period_bounds() -> None:
    at = st.parse_iso("2026-12-31T23:59:59Z")
    key, start, end = st.period_bounds("month", at)
    assert key == "2026-12"
    assert st.iso(start) == "2026-12-01T00:00:00.000000Z"
    assert st.iso(end) == "2027-01-01T00:00:00.000000Z"
    key, start, end = st.period_bounds("day", at)
    assert key == "2026-12-31" and end - start == st.DAY_US
    assert st.parse_iso("2026-01-01T00:00:00") == st.parse_iso("2026-01-01T01:00:00+01:00")


def test_key_file_created_owner_only(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "gw.db.key"
    c1 = load_cipher("fastn_gateway", {}, key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    c2 = load_cipher("fastn_gateway", {}, key_file=key_file)
    assert c2.decrypt(c1.encrypt({"a": "b"})) == {"a": "b"}
    key_file.chmod(0o644)
    with pytest.raises(CredentialKeyError, match="chmod 600"):
        load_cipher("fastn_gateway", {}, key_file=key_file)


def test_env_key_wins_and_supports_rotation(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    env = secret_key_env("fastn_gateway")
    assert env == "FASTN_GATEWAY_SECRET_KEY"
    sealed = load_cipher("fastn_gateway", {env: old}, key_file=None).encrypt({"k": "v"})
    rotated = load_cipher("fastn_gateway", {env: f"{new},{old}"}, key_file=tmp_path / "unused")
    assert rotated.decrypt(sealed) == {"k": "v"}
    assert not (tmp_path / "unused").exists()
    with pytest.raises(CredentialKeyError, match=env):
        load_cipher("fastn_gateway", {}, key_file=None)
    with pytest.raises(CredentialKeyError, match="malformed"):
        load_cipher("fastn_gateway", {env: "not-a-key"}, key_file=None)


def test_sqlite_concurrent_writers(tmp_path: Path, gateway, cipher) -> None:
    """Two engines (as two processes would) writing at once never fail with 'locked'."""
    import threading

    path = str(tmp_path / "gw.db")
    s1 = Store(make_engine(path), gateway, cipher)
    s1.migrate()
    s2 = Store(make_engine(path), gateway, cipher)
    t = s1.create_tenant("acme")
    errors: list[BaseException] = []

    def work(s: Store) -> None:
        try:
            for i in range(40):
                s.write_batch(
                    [st.make_event(t.id, "tool_call")], [st.UsageDelta(t.id, "p", "x", "", 1, 0)]
                )
                s.create_flow(t.id, "f", {"i": i})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (s1, s2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert s1.usage_totals(t.id, "p")[0] == 80
    assert max(f.version for f in s1.list_flows(t.id)) == 80
    s1.dispose()
    s2.dispose()
