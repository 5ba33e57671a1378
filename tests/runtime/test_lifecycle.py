"""Data lifecycle commands: `admin events prune` and `admin user forget`, through the real CLI
(a subprocess), a real database (a SQLite file, or PostgreSQL with MCPFORGE_TEST_POSTGRES_URL)
and real MCP clients of a gateway serving the same database meanwhile."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mcp import Client, StdioServerParameters

from generator.runtime.crypto import generate_key
from generator.runtime.memory import MemoryStore, items_table, state_table
from generator.runtime.store import (
    DAY_US,
    EventRecord,
    UsageDelta,
    events,
    make_event,
    now_us,
    open_store,
    parse_iso,
    sqlite_path,
)
from tests.runtime.support import ROOT

LAUNCHER = str(ROOT / "tests" / "runtime" / "launcher.py")
# The credential key every process of a test uses (PostgreSQL has no key file beside it).
KEY = {"FASTN_GATEWAY_SECRET_KEY": generate_key()}


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTN_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(KEY, **extra)
    return env


def admin(db: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The admin CLI as a subprocess, stdin not a terminal."""
    return subprocess.run(
        [sys.executable, LAUNCHER, "admin", "--db", db, *argv],
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ----------------------------------------------------------------------------- events prune


def _event(tenant_id: str, at: int, n: int) -> EventRecord:
    return make_event(tenant_id, "tool_call", at=at, tool=f"tool_{n}", connector="slack")


def test_prune_deletes_old_events_in_batches_and_leaves_usage(gateway, db_url: str) -> None:
    """Events recorded before the cutoff go (one tenant's, or everyone's), in transactions of
    at most `batch` rows; newer events, and the usage counts the quota reads, stay."""
    store = open_store(gateway, db_url, environ=KEY)
    try:
        acme = store.create_tenant("acme")
        bravo = store.create_tenant("bravo")
        cutoff = parse_iso("2026-03-01T00:00:00Z")
        old = [_event(t.id, cutoff - (n + 1) * DAY_US, n) for t in (acme, bravo) for n in range(9)]
        new = [_event(t.id, cutoff + n * 1000, n) for t in (acme, bravo) for n in range(3)]
        usage = [UsageDelta(t.id, "2026-02-10", "tool_1", "slack", 40, 2) for t in (acme, bravo)]
        store.write_batch([*old, *new], usage)
        before_usage = {t.id: store.usage_rows(t.id, "2026-02") for t in (acme, bravo)}

        def left(tenant_id: str) -> int:
            return len(store.query_events(tenant_id, limit=1000))

        dry = admin(db_url, "events", "prune", "--before", "2026-03-01", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("would delete 18 events of every tenant recorded before ")
        assert (left(acme.id), left(bravo.id)) == (12, 12)

        one = admin(db_url, "events", "prune", "--before", "2026-03-01", "--tenant", "acme")
        assert one.returncode == 0, one.stderr
        assert one.stdout.startswith("deleted 9 events of tenant acme recorded before 2026-03-01")
        assert (left(acme.id), left(bravo.id)) == (3, 12)

        pauses: list[float] = []
        assert store.prune_events(cutoff, batch=4, pause=pauses.append) == 9
        assert len(pauses) == 2  # batches of 4, 4 and 1: a pause between each two
        assert {e.at for e in store.query_events(bravo.id, limit=1000)} == {e.at for e in new[3:]}
        assert left(acme.id) == 3
        assert admin(db_url, "events", "prune", "--before", "1d").stdout.startswith(
            "deleted 6 events of every tenant"
        )
        assert (left(acme.id), left(bravo.id)) == (0, 0)
        assert {t.id: store.usage_rows(t.id, "2026-02") for t in (acme, bravo)} == before_usage
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("before", "says"),
    [
        ("2999-01-01T00:00:00Z", "is in the future"),
        ("90x", "neither an ISO 8601 date-time"),
        ("last tuesday", "neither an ISO 8601 date-time"),
        ("2026-13-01", "neither an ISO 8601 date-time"),
        ("999999d", "reaches back before the year 1"),
        ("999999w", "reaches back before the year 1"),
    ],
)
def test_prune_refuses_a_future_or_unreadable_cutoff(
    gateway, tmp_path: Path, before: str, says: str
) -> None:
    db = str(tmp_path / "gw.db")
    store = open_store(gateway, db, environ=KEY)
    acme = store.create_tenant("acme")
    store.write_batch([_event(acme.id, now_us() - DAY_US, 1)])
    store.dispose()
    done = admin(db, "events", "prune", "--before", before)
    assert done.returncode == 2 and done.stdout == ""
    assert says in done.stderr, done.stderr
    assert admin(db, "events", "prune", "--before", "0h", "--dry-run").stdout.startswith(
        "would delete 1 events"
    )


# ----------------------------------------------------------------------------- user forget

MARK = "zephyrquokka"  # a word only the forgotten user's memory holds
GONE = "ursula-forgotten"


def _serve(db: str, key: str, user: str | None = None) -> StdioServerParameters:
    env = _env(FASTN_GATEWAY_API_KEY=key)
    if user is not None:
        env["FASTN_GATEWAY_USER"] = user
    return StdioServerParameters(
        command=sys.executable,
        args=[LAUNCHER, "serve", "--transport", "stdio", "--db", db],
        env=env,
    )


async def _tool(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    body = json.loads(result.content[0].text)
    return {"error": body["error"]} if result.is_error else body


async def _write(client: Client, *texts: str, topic: str | None = None) -> None:
    observations = [{"text": t, "tags": ["food", MARK]} for t in texts]
    if topic is not None:
        for obs in observations:
            obs["topic"] = topic
    done = await _tool(client, "update_memory", {"observations": observations})
    assert "error" not in done, done


async def _texts(client: Client, query: str) -> list[str]:
    found = await _tool(client, "retrieve_relevant_chunks", {"query": query, "top_k": 20})
    assert "error" not in found, found
    return sorted(c["text"] for c in found["chunks"])


def _fts_checks(db: str, tenant_id: str) -> tuple[int, int, int]:
    """SQLite: FTS5's integrity-check of the tenant's index against its content (raises on a
    mismatch); then its row count as kept, the tenant's active items, and the index's rows
    holding MARK."""
    from generator.runtime.memory import _INDEXES, _fts, _register_sqlite_functions

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            _register_sqlite_functions(conn.connection.driver_connection)
            n, kept = conn.execute(
                sa.text(f"SELECT n, row_count FROM {_INDEXES} WHERE tenant_id = :t"),
                {"t": tenant_id},
            ).one()
            fts = _fts(n)
            conn.execute(sa.text(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)"))
            active = conn.execute(
                sa.select(sa.func.count()).where(
                    items_table.c.tenant_id == tenant_id, items_table.c.superseded_by.is_(None)
                )
            ).scalar_one()
            matches = conn.execute(
                sa.text(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH :m"), {"m": f'"{MARK}"'}
            ).scalar_one()
    finally:
        engine.dispose()
    return int(kept), int(active), int(matches)


async def test_forget_erases_one_users_memory_while_a_gateway_serves(gateway, db_url: str) -> None:
    """`admin user forget` removes the user's items (every version), its search index rows
    (SQLite: the index checks out, its row count is right) and registration, revokes its keys,
    and a gateway serving meanwhile neither serves that memory nor takes the user any more,
    over a session opened before (which had found the user registered). Another user of the
    tenant, and the same user id in another tenant, keep everything."""
    store = open_store(gateway, db_url, environ=KEY)
    acme, bravo = store.create_tenant("acme"), store.create_tenant("bravo")
    for tenant, user in ((acme, GONE), (acme, "bea"), (bravo, GONE)):
        store.register_user(tenant.id, user)
    bound = store.issue_key(acme.id, user=GONE).token
    host = store.issue_key(acme.id, host_app=True).token
    bea = store.issue_key(acme.id, user="bea").token
    other = store.issue_key(bravo.id, user=GONE).token
    store.dispose()

    async with contextlib.AsyncExitStack() as stack:
        as_host = await stack.enter_async_context(Client(_serve(db_url, host, GONE)))
        as_bound = await stack.enter_async_context(Client(_serve(db_url, bound)))
        as_bea = await stack.enter_async_context(Client(_serve(db_url, bea)))
        in_bravo = await stack.enter_async_context(Client(_serve(db_url, other)))
        await _write(as_host, f"Ursula likes {MARK} sushi", f"Ursula drinks {MARK} tea")
        await _write(as_bound, f"Ursula lives in Oslo {MARK}", topic="home")
        await _write(as_bound, f"Ursula lives in Bergen {MARK}", topic="home")  # a correction
        await _write(as_bea, "Bea likes sushi and tea", f"Bea reads {MARK} novels")
        await _write(in_bravo, f"Bravo's Ursula likes {MARK} sushi")
        assert len(await _texts(as_host, f"{MARK} sushi")) == 3
        bea_before = await _texts(as_bea, f"{MARK} sushi tea")
        bravo_before = await _tool(in_bravo, "retrieve_relevant_chunks", {"query": "sushi"})
        profile = f"memory://users/{GONE}/profile"
        log = json.loads(
            (await as_host.read_resource(f"memory://users/{GONE}/log")).contents[0].text
        )
        assert len(log["entries"]) == 4

        refused = admin(db_url, "user", "forget", "acme", GONE)  # not a terminal, no --yes
        assert refused.returncode == 2 and "pass --yes" in refused.stderr
        assert len(await _texts(as_host, f"{MARK} sushi")) == 3  # nothing erased

        done = admin(db_url, "user", "forget", "acme", GONE, "--yes")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            f"forgot {GONE} of tenant acme: 4 memory items (every version) erased, its "
            "registration deleted, 1 API keys bound to it revoked"
        ), done.stdout

        # The sessions opened before: the host key's user is no longer registered, the key
        # bound to the user is revoked; neither reads the memory, nor writes it anew.
        for name, args in (
            ("retrieve_relevant_chunks", {"query": f"{MARK} sushi"}),
            ("search_or_ask", {"question": f"What does Ursula like, {MARK}?"}),
            ("update_memory", {"observations": [{"text": "back again"}]}),
        ):
            assert (await _tool(as_host, name, args))["error"]["code"] == "forbidden"
            with pytest.raises(Exception, match="(?i)unauthenticated|api key|401"):
                await as_bound.call_tool(name, args)
        with pytest.raises(Exception, match="not found"):
            await as_host.read_resource(profile)

        # Others keep theirs.
        assert await _texts(as_bea, f"{MARK} sushi tea") == bea_before
        bravo_after = await _tool(in_bravo, "retrieve_relevant_chunks", {"query": "sushi"})
        assert bravo_after == bravo_before  # its own index: not even a score moved

    store = open_store(gateway, db_url, environ=KEY)
    try:
        assert [u.external_id for u in store.list_users(acme.id)] == ["bea"]
        assert [u.external_id for u in store.list_users(bravo.id)] == [GONE]
        keys = {k.id: k for k in store.list_keys(acme.id)}
        assert sorted(k.user_external_id or "" for k in keys.values()) == ["", "", "bea"]
        assert [
            k.status(now_us()) for k in keys.values() if k.user_id is None and not k.can_assert_user
        ] == ["revoked"]
        with store.engine.connect() as conn:
            for table in (items_table, state_table):
                left = conn.execute(
                    sa.select(sa.func.count()).where(
                        table.c.tenant_id == acme.id, table.c.user_id == GONE
                    )
                ).scalar_one()
                assert left == 0, table.name
            details = conn.execute(sa.select(events.c.details)).scalars().all()
        assert not any(MARK in (d or "") or GONE in (d or "") for d in details)
    finally:
        store.dispose()

    path = sqlite_path(db_url)
    if path is not None:
        assert _fts_checks(str(path), acme.id) == (2, 2, 2)  # bea's, both tagged MARK
        assert _fts_checks(str(path), bravo.id) == (1, 1, 1)
        # Nothing of the user's text or id is left in the database's files, not even in free
        # pages, the search index's old segments or the write-ahead log.
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for secret in ("Ursula lives in", "Ursula drinks", "oslo", "bergen", "drink"):
            assert secret.lower().encode() not in stored.lower(), secret


def test_forget_erases_nothing_when_it_fails_midway(gateway, db_url: str) -> None:
    """One transaction: when erasing fails after the memory rows are deleted, the user, its
    memory and its search index rows are all still there."""
    store = open_store(gateway, db_url, environ=KEY)
    memory = MemoryStore(store.engine, settings=gateway.memory)
    memory.migrate()
    try:
        acme = store.create_tenant("acme")
        store.register_user(acme.id, GONE)
        memory.update_memory(acme.id, GONE, [{"text": f"likes {MARK}", "tags": ["x"]}])

        def erase_then_fail(conn: Any, tenant_id: str, user: str) -> int:
            assert memory.erase_user(conn, tenant_id, user) == 1
            raise RuntimeError("crash")

        with pytest.raises(RuntimeError):
            store.forget_user(acme.id, GONE, erase_memory=erase_then_fail)
        assert store.get_user(acme.id, GONE) is not None
        found = memory.retrieve_relevant_chunks(acme.id, GONE, MARK)["chunks"]
        assert [c["text"] for c in found] == [f"likes {MARK}"]
        assert memory.profile(acme.id, GONE)["items"]["active"] == 1
        path = sqlite_path(db_url)
        if path is not None:
            assert _fts_checks(str(path), acme.id) == (1, 1, 1)
        done = admin(db_url, "user", "forget", "acme", "nobody", "--yes")
        assert done.returncode == 1 and "no user 'nobody'" in done.stderr
    finally:
        store.dispose()


def _on_a_terminal(db: str, answer: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The admin CLI with a terminal for stdin, where `answer` is typed."""
    import os

    main_fd, term_fd = os.openpty()
    try:
        os.write(main_fd, answer.encode() + b"\n")
        return subprocess.run(
            [sys.executable, LAUNCHER, "admin", "--db", db, *argv],
            env=_env(),
            stdin=term_fd,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(term_fd)
        os.close(main_fd)


def test_forget_asks_on_a_terminal(gateway, tmp_path: Path) -> None:
    db = str(tmp_path / "gw.db")
    store = open_store(gateway, db, environ=KEY)
    acme = store.create_tenant("acme")
    store.register_user(acme.id, GONE)
    store.dispose()
    kept = _on_a_terminal(db, "n", "user", "forget", "acme", GONE)
    assert kept.returncode == 1, kept.stderr
    assert "This cannot be undone. [y/N]" in kept.stdout
    assert kept.stdout.endswith("nothing was erased\n")
    assert f"  {GONE}  " in admin(db, "user", "list", "acme").stdout
    gone = _on_a_terminal(db, "y", "user", "forget", "acme", GONE)
    assert gone.returncode == 0, gone.stderr
    assert f"forgot {GONE} of tenant acme: 0 memory items" in gone.stdout
    assert admin(db, "user", "list", "acme").stdout == ""


def test_forget_refuses_a_memory_write_that_waited_for_its_lock(gateway, db_url: str) -> None:
    """A memory write that passed the gateway's registration check before `forget_user` and
    takes the lock after it (waiting on it meanwhile) writes nothing and is refused as an
    unregistered user is: the check runs again inside the write's transaction."""
    import threading

    from generator.runtime.memory import UserNotRegistered

    store = open_store(gateway, db_url, environ=KEY)
    memory = MemoryStore(store.engine, settings=gateway.memory, registered=store.user_registered)
    memory.migrate()
    try:
        acme = store.create_tenant("acme")
        store.register_user(acme.id, GONE)
        memory.update_memory(acme.id, GONE, [{"text": f"likes {MARK}"}])
        erasing, release = threading.Event(), threading.Event()

        def erase_and_hold(conn: Any, tenant_id: str, user: str) -> int:
            n = memory.erase_user(conn, tenant_id, user)
            erasing.set()
            assert release.wait(30)  # the write below starts meanwhile, and waits
            return n

        forget = threading.Thread(
            target=store.forget_user, args=(acme.id, GONE), kwargs={"erase_memory": erase_and_hold}
        )
        forget.start()
        assert erasing.wait(30)
        outcome: list[object] = []

        def write() -> None:
            try:
                outcome.append(memory.update_memory(acme.id, GONE, [{"text": f"late {MARK}"}]))
            except Exception as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(0.5)  # waiting for the lock the erasure holds
        release.set()
        forget.join(30)
        writer.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], UserNotRegistered), outcome
        assert (outcome[0].code, outcome[0].refused) == ("forbidden", True)
        with store.engine.connect() as conn:
            for table in (items_table, state_table):
                left = conn.execute(
                    sa.select(sa.func.count()).where(
                        table.c.tenant_id == acme.id, table.c.user_id == GONE
                    )
                ).scalar_one()
                assert left == 0, table.name
        # Registered again, the user starts afresh, and may write.
        store.register_user(acme.id, GONE)
        assert memory.retrieve_relevant_chunks(acme.id, GONE, MARK)["chunks"] == []
        memory.update_memory(acme.id, GONE, [{"text": f"new {MARK}"}])
        found = memory.retrieve_relevant_chunks(acme.id, GONE, MARK)["chunks"]
        assert [c["text"] for c in found] == [f"new {MARK}"]
    finally:
        store.dispose()


async def test_forget_leaves_nothing_of_memory_writes_in_flight(gateway, tmp_path: Path) -> None:
    """Writers loop update_memory for a user over a serving gateway while `admin user forget`
    erases it: once forget is done, no item of the user exists, not even after the user is
    registered again; the writes after it are refused (forbidden)."""
    import anyio

    db = str(tmp_path / "gw.db")
    store = open_store(gateway, db, environ=KEY)
    acme = store.create_tenant("acme")
    store.register_user(acme.id, GONE)
    host = store.issue_key(acme.id, host_app=True).token
    store.dispose()
    codes: list[str] = []
    forgotten = anyio.Event()

    async def writer(client: Client, i: int) -> None:
        n = 0
        while not forgotten.is_set() or n < 3:
            n += 1
            done = await _tool(
                client, "update_memory", {"observations": [{"text": f"{MARK} {i} {n}"}]}
            )
            codes.append(done["error"]["code"] if "error" in done else "ok")

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(_serve(db, host, GONE))) for _ in range(2)
        ]
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(writer, clients[i % 2], i)
            await anyio.sleep(1)
            done = await anyio.to_thread.run_sync(
                lambda: admin(db, "user", "forget", "acme", GONE, "--yes")
            )
            forgotten.set()
        assert done.returncode == 0, done.stderr
        assert "ok" in codes and set(codes) <= {"ok", "forbidden"}, codes
        assert codes[-6:] == ["forbidden"] * 6

    store = open_store(gateway, db, environ=KEY)
    try:
        with store.engine.connect() as conn:
            for table in (items_table, state_table):
                left = conn.execute(
                    sa.select(sa.func.count()).where(
                        table.c.tenant_id == acme.id, table.c.user_id == GONE
                    )
                ).scalar_one()
                assert left == 0, table.name
    finally:
        store.dispose()


# ----------------------------------------------------------------------------- memory reindex


def test_memory_reindex_repairs_rows_an_older_gateway_indexed(gateway, db_url: str) -> None:
    """An older gateway (from before CJK letter pairs) still running after a newer one
    migrated the database indexes what it writes as it is: its CJK words are never found, and
    the one-time re-index has run already. `admin memory reindex` rebuilds every tenant's
    index from the items, so they are found; the rest is as it was."""
    from generator.runtime.memory import _fts, _indexed

    store = open_store(gateway, db_url, environ=KEY)
    memory = MemoryStore(store.engine, settings=gateway.memory)
    memory.migrate()
    try:
        acme, bravo = store.create_tenant("acme"), store.create_tenant("bravo")
        memory.update_memory(acme.id, "ash", [{"text": "寿司が大好きです", "tags": ["食"]}])
        memory.update_memory(bravo.id, "bo", [{"text": "喜欢喝绿茶"}])
        late = memory.update_memory(acme.id, "ash", [{"text": "ラーメンも好きです"}])
        path = sqlite_path(db_url)
        if path is not None:
            # The older gateway's write: the item, indexed with its values as they are.
            with store.engine.begin() as conn:
                row = conn.execute(
                    sa.select(items_table.c.pk, items_table.c.text, items_table.c.tags).where(
                        items_table.c.id == late["stored"][0]["id"]
                    )
                ).one()
                fts = _fts(memory._index_of(conn, acme.id) or 0)
                values = {"pk": row.pk, "text": row.text, "tags": row.tags}
                conn.execute(
                    sa.text(
                        f"INSERT INTO {fts}({fts}, rowid, text, topic, tags) "
                        "VALUES ('delete', :pk, :text, NULL, :tags)"
                    ),
                    {**values, "text": _indexed(row.text), "tags": _indexed(row.tags)},
                )
                conn.execute(
                    sa.text(
                        f"INSERT INTO {fts}(rowid, text, topic, tags) "
                        "VALUES (:pk, :text, NULL, :tags)"
                    ),
                    values,
                )
            assert memory.retrieve_relevant_chunks(acme.id, "ash", "ラーメン")["chunks"] == []
        done = admin(db_url, "memory", "reindex")
        assert done.returncode == 0, done.stderr
        if path is None:
            assert done.stdout.startswith("nothing to rebuild: PostgreSQL"), done.stdout
        else:
            assert done.stdout == "rebuilt the memory search index of 2 tenants\n", done.stdout
            assert _fts_checks(str(path), acme.id)[:2] == (2, 2)
        for tenant, user, query, text in (
            (acme.id, "ash", "ラーメン", "ラーメンも好きです"),
            (acme.id, "ash", "寿司", "寿司が大好きです"),
            (bravo.id, "bo", "绿茶", "喜欢喝绿茶"),
        ):
            found = memory.retrieve_relevant_chunks(tenant, user, query)["chunks"]
            assert [c["text"] for c in found] == [text], query
    finally:
        store.dispose()
