"""Concurrent memory updates for one user: nothing lost, versions unique, corrections coherent.

Runs on a real SQLite file through the gateway's engine (WAL, BEGIN IMMEDIATE), on a plain
SQLAlchemy SQLite engine (pysqlite's deferred transactions), and on PostgreSQL when
MCPFORGE_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from generator.runtime.memory import MemoryStore
from generator.runtime.store import make_engine

THREADS = 8
UPDATES = 25


@pytest.fixture(params=["gateway-engine", "plain-sqlite"])
def memory(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[MemoryStore]:
    if request.param == "plain-sqlite":
        if not db_url.endswith(".db"):
            pytest.skip("plain engine variant runs once, with SQLite")
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    else:
        engine = make_engine(db_url)
    store = MemoryStore(engine)
    store.migrate()
    yield store
    engine.dispose()


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def target(n: int) -> None:
        try:
            start.wait()
            work(n)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def all_entries(memory: MemoryStore, tenant: str, user: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = memory.log(tenant, user, after_version=after)
        entries += page["entries"]
        if page["next_after_version"] is None:
            return entries
        after = page["next_after_version"]


def test_concurrent_updates_lose_nothing(memory: MemoryStore) -> None:
    returned: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(UPDATES):
            out = memory.update_memory("acme", "ash", [{"text": f"thread {n} note {i} zebra"}])
            with lock:
                returned.extend(s["version"] for s in out["stored"])
            # Another user written at the same time must not disturb the counter.
            memory.update_memory("acme", f"other{n % 2}", [{"text": f"noise {n} {i}"}])
            memory.retrieve_relevant_chunks("acme", "ash", "zebra note", top_k=3)

    run_threads(THREADS, work)
    total = THREADS * UPDATES
    assert sorted(returned) == list(range(1, total + 1))
    entries = all_entries(memory, "acme", "ash")
    assert [e["version"] for e in entries] == list(range(1, total + 1))
    assert {e["text"] for e in entries} == {
        f"thread {n} note {i} zebra" for n in range(THREADS) for i in range(UPDATES)
    }
    profile = memory.profile("acme", "ash")
    assert profile["items"] == {"active": total, "superseded": 0, "total": total}
    assert len(memory.retrieve_relevant_chunks("acme", "ash", "zebra", top_k=50)["chunks"]) == 50
    others = [all_entries(memory, "acme", f"other{k}") for k in (0, 1)]
    assert sorted(len(o) for o in others) == [total // 2, total // 2]


def test_concurrent_corrections_of_one_topic_leave_exactly_one_active(memory: MemoryStore) -> None:
    def work(n: int) -> None:
        for i in range(10):
            memory.update_memory(
                "acme", "ash", [{"text": f"Meets at {n}:{i:02d} falcon", "topic": "meeting_time"}]
            )

    run_threads(THREADS, work)
    entries = all_entries(memory, "acme", "ash")
    assert len(entries) == THREADS * 10
    active = [e for e in entries if e["active"]]
    assert len(active) == 1 and active[0]["version"] == THREADS * 10
    by_id = {e["id"]: e for e in entries}
    # Each correction superseded exactly its predecessor: a single chain, nothing orphaned.
    for e in entries[:-1]:
        assert by_id[e["superseded_by"]]["version"] == e["version"] + 1
    chunks = memory.retrieve_relevant_chunks("acme", "ash", "falcon meets", top_k=50)["chunks"]
    assert [c["id"] for c in chunks] == [active[0]["id"]]
    assert memory.profile("acme", "ash")["items"]["active"] == 1
