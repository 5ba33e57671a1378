"""Data lifecycle commands: `admin events prune` and `admin user forget`, through the real CLI
(a subprocess), a real database (a SQLite file, or PostgreSQL with MCPFORGE_TEST_POSTGRES_URL)
and real MCP clients of a gateway serving the same database meanwhile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from generator.runtime.crypto import generate_key
from generator.runtime.store import (
    DAY_US,
    EventRecord,
    UsageDelta,
    make_event,
    now_us,
    open_store,
    parse_iso,
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
