"""The batching recorder and the quota tracker on a real SQLite file."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from generator.runtime.errors import GatewayError
from generator.runtime.quota import QuotaTracker
from generator.runtime.recorder import REFUSAL_WINDOW_US, REFUSALS_STORED, Recorder
from generator.runtime.store import EventRecord, Store, make_event, now_us, period_bounds


def _call(rec: Recorder, tenant: str, tool: str = "slack_send_message", status: str = "ok") -> None:
    rec.record_call(
        tenant_id=tenant,
        tool=tool,
        connector="slack" if tool.startswith("slack_") else None,
        day="2026-05-03",
        status=status,
        duration_ms=1.5,
        error_code=None if status == "ok" else "upstream_error",
    )


def test_nothing_is_written_per_call_and_flush_writes_everything(sqlite_store: Store) -> None:
    t = sqlite_store.create_tenant("acme")
    sqlite_store.connect(t.id, "slack", {"bot_token": "x"})
    rec = Recorder(sqlite_store, interval=3600)
    for i in range(10):
        _call(rec, t.id, status="error" if i == 3 else "ok")
    rec.record_event(make_event(t.id, "memory_update"))
    assert sqlite_store.query_events(t.id, type_="tool_call") == []
    assert rec.flush() == 11
    assert len(sqlite_store.query_events(t.id, type_="tool_call", limit=100)) == 10
    rows = sqlite_store.usage_rows(t.id, "2026-05")
    assert [(r.tool, r.connector, r.calls, r.errors) for r in rows] == [
        ("slack_send_message", "slack", 10, 1)
    ]
    conn = sqlite_store.get_connection(t.id, "slack")
    assert conn is not None and conn.last_success_at and conn.last_error == "upstream_error"
    assert rec.flush() == 0
    rec.close()


def test_background_thread_flushes(sqlite_store: Store) -> None:
    t = sqlite_store.create_tenant("acme")
    rec = Recorder(sqlite_store, interval=0.02)
    _call(rec, t.id, tool="fastn_list_integrations")
    deadline = time.time() + 10
    while not sqlite_store.query_events(t.id):
        assert time.time() < deadline
        time.sleep(0.01)
    assert rec.settled()
    rec.close()


def test_failed_write_is_retried_and_close_writes_the_rest(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = sqlite_store.create_tenant("acme")
    rec = Recorder(sqlite_store, interval=3600)
    real = sqlite_store.write_batch
    calls = {"n": 0}

    def flaky(*args: object, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_store, "write_batch", flaky)
    for _ in range(3):
        _call(rec, t.id)
    with pytest.raises(RuntimeError):
        rec.flush()
    assert rec.pending() > 0
    for _ in range(2):
        _call(rec, t.id)
    rec.close()
    assert len(sqlite_store.query_events(t.id, limit=100)) == 5
    assert sqlite_store.usage_totals(t.id, "2026-05")[0] == 5


def test_a_record_the_database_refuses_is_dropped_and_the_others_are_stored(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """One record the database will not store (here an event whose id is taken: SQLite's
    IntegrityError; on PostgreSQL also a DataError) must not keep every tenant's records out
    of the database, batch after batch."""
    a, b = sqlite_store.create_tenant("acme"), sqlite_store.create_tenant("bravo")
    rec = Recorder(sqlite_store, interval=3600)
    first = make_event(a.id, "memory_update")
    rec.record_event(first)
    assert rec.flush() == 1
    _call(rec, a.id)
    rec.record_event(first)  # refused: its id is stored already
    _call(rec, b.id)
    assert rec.flush() == 2
    assert rec.pending() == 0
    assert len(sqlite_store.query_events(a.id, type_="tool_call")) == 1
    assert len(sqlite_store.query_events(b.id, type_="tool_call")) == 1
    assert sqlite_store.usage_totals(a.id, "2026-05")[0] == 1
    assert sqlite_store.usage_totals(b.id, "2026-05")[0] == 1
    # 3 events, 2 usage rows, 2 connection outcomes (Slack calls)
    assert "the database refused 1 of 7 records" in caplog.text
    _call(rec, b.id)
    assert rec.flush() == 1  # the next batch is written whole
    assert sqlite_store.usage_totals(b.id, "2026-05")[0] == 2


def test_a_record_holding_text_no_database_stores_is_dropped(store: Store) -> None:
    """A lone surrogate in a record's text (arguments are checked for them, but a record must
    never stop the recorder) fails the driver's encoding: that record is dropped, the rest of
    its batch is stored, and the recorder does not retry it forever."""
    t = store.create_tenant("acme")
    rec = Recorder(store, interval=3600)
    rec.record_event(make_event(t.id, "tool_call", tool="sl\ud800ck"))
    _call(rec, t.id)
    assert rec.flush() == 1
    assert rec.pending() == 0
    assert [e.tool for e in store.query_events(t.id)] == ["slack_send_message"]


def test_an_outage_while_writing_record_by_record_puts_the_rest_back(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = sqlite_store.create_tenant("acme")
    rec = Recorder(sqlite_store, interval=3600)
    first = make_event(t.id, "memory_update")
    rec.record_event(first)
    rec.flush()
    rec.record_event(first)  # refused: the batch is then written record by record...
    for _ in range(3):
        _call(rec, t.id)
    real = sqlite_store.write_batch
    singles = {"n": 0}

    def down_after_two(events: list[Any], *rest: Any) -> None:
        if len(events) > 1:  # the whole batch
            real(events, *rest)
            return
        singles["n"] += 1
        if singles["n"] == 3:  # ...and the database goes away midway
            raise RuntimeError("connection lost")
        real(events, *rest)

    monkeypatch.setattr(sqlite_store, "write_batch", down_after_two)
    with pytest.raises(RuntimeError):
        rec.flush()
    monkeypatch.setattr(sqlite_store, "write_batch", real)
    rec.flush()
    # Every call is stored exactly once: nothing written before the outage is written again.
    assert len(sqlite_store.query_events(t.id, type_="tool_call", limit=10)) == 3
    assert sqlite_store.usage_totals(t.id, "2026-05")[0] == 3


def test_concurrent_close_waits_for_the_final_flush(sqlite_store: Store) -> None:
    t = sqlite_store.create_tenant("acme")
    rec = Recorder(sqlite_store, interval=3600)
    for _ in range(500):
        _call(rec, t.id)
    closers = [threading.Thread(target=rec.close) for _ in range(3)]
    for th in closers:
        th.start()
    rec.close()
    assert len(sqlite_store.query_events(t.id, limit=1000)) == 500
    for th in closers:
        th.join()


def _refusal(rec: Recorder, tenant: str, n: int) -> None:
    for _ in range(n):
        rec.record_event(
            make_event(tenant, "tool_call", "error", tool="nope", error_code="unknown_tool"),
            refused=True,
        )


def _summary(event: EventRecord) -> bool:
    return event.details is not None and "refused_calls" in event.details


def test_refused_calls_beyond_the_budget_are_summed_up_once_their_window_ends(
    sqlite_store: Store,
) -> None:
    """Each tenant's window stores REFUSALS_STORED refused calls; the rest are one summary,
    buffered when the window is over (by the next refusal or `summarize_refusals`) or, for a
    window still open, at close. A window with nothing left out writes no summary."""
    a, b = sqlite_store.create_tenant("acme"), sqlite_store.create_tenant("bravo")
    clock = [5 * REFUSAL_WINDOW_US]
    rec = Recorder(sqlite_store, interval=3600, clock=lambda: clock[0])
    _refusal(rec, a.id, REFUSALS_STORED + 7)
    _refusal(rec, b.id, 2)
    assert rec.summarize_refusals() == 0  # still the same window
    assert rec.flush() == REFUSALS_STORED + 2
    clock[0] += REFUSAL_WINDOW_US - 1
    _refusal(rec, a.id, 1)
    assert rec.flush() == 0  # left out: the window has not ended
    clock[0] += 1
    _refusal(rec, a.id, REFUSALS_STORED + 3)  # the first one sums up the previous window
    assert rec.flush() == 1 + REFUSALS_STORED
    (summary,) = [e for e in sqlite_store.query_events(a.id, limit=1000) if _summary(e)]
    assert summary.details is not None and summary.details["refused_calls"] == 8
    assert (summary.tool, summary.error_code) == ("nope", "unknown_tool")
    assert rec.summarize_refusals() == 0  # bravo's window is over, with nothing left out
    clock[0] += REFUSAL_WINDOW_US  # ended, but nobody summed it up: close does
    _refusal(rec, b.id, REFUSALS_STORED + 1)  # a window still open: close sums it up too
    rec.close()
    summaries = [
        e.details["refused_calls"]
        for t in (a.id, b.id)
        for e in sqlite_store.query_events(t, limit=1000)
        if _summary(e)
    ]
    assert summaries == [3, 8, 1]
    assert len(sqlite_store.query_events(a.id, limit=1000)) == 2 * REFUSALS_STORED + 2
    assert len(sqlite_store.query_events(b.id, limit=1000)) == REFUSALS_STORED + 3


def _allowed_call(quota: QuotaTracker, rec: Recorder, tenant: str, day: str, at: int) -> None:
    """A call of the "tiny" plan, as the server makes it: checked and counted, then recorded."""
    quota.check_and_count(tenant, "tiny", None, at)
    rec.record_call(
        tenant_id=tenant,
        tool="fastn_list_integrations",
        connector=None,
        day=day,
        status="ok",
        duration_ms=1,
    )


def test_quota_counts_local_calls_and_settles_after_flush(sqlite_store: Store, gateway) -> None:
    t = sqlite_store.create_tenant("acme", plan="tiny")  # 3 calls a day
    quota = QuotaTracker(gateway, sqlite_store.usage_totals)
    rec = Recorder(sqlite_store, quota, interval=3600)
    at = now_us()
    day = period_bounds("day", at)[0]
    assert quota.needs_load(t.id, "tiny", at) == day
    quota.load(t.id, day)
    assert quota.needs_load(t.id, "tiny", at) is None
    for _ in range(2):
        _allowed_call(quota, rec, t.id, day, at)
    rec.flush()  # base := 2 from the database, nothing unsettled
    # another process used the last call of the day
    sqlite_store.write_batch([], [_delta(t.id, day)])
    quota.check_and_count(t.id, "tiny", None, at)  # base 2 + 1 local = 3: allowed
    quota.load(t.id, day)  # the refreshed base (3) counts the other process's call
    with pytest.raises(GatewayError) as exc:
        quota.check_and_count(t.id, "tiny", None, at)
    assert exc.value.code == "quota_exceeded" and exc.value.retryable
    assert exc.value.retry_after is not None and 0 < exc.value.retry_after <= 86400
    rec.close()


def _delta(tenant: str, period: str):  # type: ignore[no-untyped-def]
    from generator.runtime.store import UsageDelta

    return UsageDelta(tenant, period, "fastn_get_usage_summary", "", 1, 0)


def test_unlimited_plan_never_loads(sqlite_store: Store, gateway) -> None:
    t = sqlite_store.create_tenant("big", plan="enterprise")
    quota = QuotaTracker(gateway, sqlite_store.usage_totals)
    assert quota.needs_load(t.id, "enterprise", now_us()) is None
    for _ in range(1000):
        quota.check_and_count(t.id, "enterprise", "slack", now_us())


def test_a_reload_that_read_before_a_flush_does_not_undo_it(sqlite_store: Store, gateway) -> None:
    """A reload reads the totals, a flush of this process's calls lands and settles, then the
    reload applies what it read: those totals lack the flushed calls, which are no longer
    unsettled either, and would be forgotten (a fourth call allowed on a 3-call plan)."""
    t = sqlite_store.create_tenant("acme", plan="tiny")  # 3 calls a day
    rec: Recorder

    def load_racing_a_flush(tenant_id: str, period: str) -> tuple[int, dict[str, int]]:
        stale = sqlite_store.usage_totals(tenant_id, period)
        rec.flush()  # lands between the read and its application
        return stale

    quota = QuotaTracker(gateway, load_racing_a_flush)
    rec = Recorder(sqlite_store, quota, interval=3600)
    at = now_us()
    day = period_bounds("day", at)[0]
    for _ in range(3):
        _allowed_call(quota, rec, t.id, day, at)
    quota.load(t.id, day)
    with pytest.raises(GatewayError) as exc:
        quota.check_and_count(t.id, "tiny", None, at)
    assert exc.value.code == "quota_exceeded"
    assert sqlite_store.usage_totals(t.id, day)[0] == 3
    rec.close()


def test_a_write_failure_that_lasts_is_logged_once_then_once_an_interval(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that takes no writes (here the same SQLite file opened read-only) failed
    every flush alike, and each was logged with its traceback: 100 tracebacks in 20 s. Now the
    first failure is logged with its traceback, then one line per interval with the backlog,
    and one line when writing works again; `failure()` says why meanwhile."""
    import sqlalchemy as sa

    t = sqlite_store.create_tenant("acme")
    path = sqlite_store.engine.url.database
    read_only = Store(
        sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true"),
        sqlite_store.gateway,
        sqlite_store.cipher,
    )
    rec = Recorder(read_only, interval=3600, failure_log_interval=0.3)
    assert rec.failure() is None
    started = time.monotonic()
    for _ in range(20):  # 20 failed writes over about 0.6 s
        _call(rec, t.id)
        with pytest.raises(sa.exc.OperationalError):
            rec.flush()
        time.sleep(0.03)
    failure = rec.failure()
    assert failure is not None and failure.unwritten > 0
    assert failure.reason == "attempt to write a readonly database"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].exc_info is not None and "cannot be written" in errors[0].getMessage()
    later = errors[1:]
    assert 1 <= len(later) <= (time.monotonic() - started) / 0.3, [r.getMessage() for r in later]
    assert all(r.exc_info is None and "records waiting" in r.getMessage() for r in later)
    rec.store = sqlite_store  # writable again
    _call(rec, t.id)
    assert rec.flush() == 21 and rec.failure() is None
    assert sum("written again" in r.getMessage() for r in caplog.records) == 1
    rec.close()
    read_only.dispose()
    assert len(sqlite_store.query_events(t.id, limit=100)) == 21
