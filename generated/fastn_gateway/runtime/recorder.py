"""Events, usage counters and connection health, recorded without a database write per call.

`record_*` only appends to in-memory buffers (a lock-protected list and dicts: no I/O, no
await). A daemon thread writes the buffers in one transaction every `interval` seconds, or
sooner when `max_pending` records are waiting. `flush()` writes synchronously (readers call it
first so they see their own calls), and `close()` stops the thread and writes whatever is left,
so a clean shutdown never loses a record; an `atexit` hook is a last safety net.
`on_recorded(event, counted)` hears of each record as it is buffered, on the recording thread
(the gateway records on its event loop only), and `on_written(events, usage)` of what each
committed transaction held, under the write lock (`writing()`); neither may raise.

A batch that fails to write is put back and retried on the next flush; after `close()` gives
up, the number of lost records is logged (never their content). While writes fail (a read-only
database, a full disk) every flush fails alike, four times a second: the first failure is
logged with its traceback, then one line per `failure_log_interval` with the backlog, and one
line when writing works again; `failure()` says why and how many records wait (`/healthz`).
A batch the database refuses (a record it cannot store, not an outage) is written record by
record instead, and the records it refuses are dropped and counted in the log: one bad
record must not stop every tenant's events and usage from being stored.

A refused call (`record_call` of a call that does not count, `record_event(refused=True)`)
costs its caller nothing, and its event says so (`"refused": true` in its details), so it is
stored only while its tenant's budget of the window
lasts (`REFUSALS_STORED` per `REFUSAL_WINDOW_US`); the others are counted, and once the window
has ended `summarize_refusals()` buffers one summary event per event type with their count per
error code. The gateway calls it from its change poll and before it reads events (on the
recording thread, like `record_*`), and `close()` writes every summary still open.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from sqlalchemy.exc import DataError, IntegrityError

from .errors import INVALID_ARGUMENTS
from .quota import QuotaTracker
from .store import (
    EventRecord,
    HealthDelta,
    Store,
    UsageDelta,
    db_reason,
    iso,
    make_event,
    now_us,
)

logger = logging.getLogger(__name__)

UsageKey = tuple[str, str, str]  # tenant, day, tool
# What a database raises for a record it will not store (as opposed to being unreachable);
# the drivers encode text themselves, and raise UnicodeEncodeError for a lone surrogate.
REFUSED: tuple[type[Exception], ...] = (DataError, IntegrityError, UnicodeEncodeError)

# Refused calls (an unknown tool, refused arguments, a caller refused before the tool ran, a
# call over the quota) count toward nothing, so nothing bounds how many a client makes, and
# each would be one more event row, kept for ever: 1,000 rows in 4 seconds from one client.
# Per tenant and per UTC minute, the first REFUSALS_STORED are stored in full: a model that
# gets a call wrong more than once a second is looping, and a minute of its calls shows what
# it gets wrong. The others are counted in one summary event per event type (tool_call,
# quota_exceeded) when the minute ends, so a tenant's refusals add at most
# REFUSALS_STORED + 2 rows a minute however fast they come, and never use another tenant's.
REFUSAL_WINDOW_US: Final = 60_000_000
REFUSALS_STORED: Final = 60
# How often a write failure that goes on is logged again (one line, with the backlog).
FAILURE_LOG_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """Why records cannot be written now, and how many wait in memory."""

    reason: str  # the database's one-line reason (never a record's content)
    seconds: float  # since the first failed write
    unwritten: int


@dataclass(slots=True)
class _LeftOut:
    """The refused calls of one event type a window did not store, for its summary."""

    first_at: int
    last_at: int
    codes: Counter[str] = field(default_factory=Counter)
    # Distinct tools and connectors, up to two: one means every call named it.
    tools: set[str | None] = field(default_factory=set)
    connectors: set[str | None] = field(default_factory=set)

    def add(self, event: EventRecord) -> None:
        self.last_at = max(self.last_at, event.at)
        self.codes[event.error_code or ""] += 1
        for seen, value in ((self.tools, event.tool), (self.connectors, event.connector)):
            if len(seen) < 2:
                seen.add(value)

    def summary(self, tenant_id: str, type_: str) -> EventRecord:
        calls = sum(self.codes.values())
        return make_event(
            tenant_id,
            type_,
            "error",
            at=self.last_at,  # after the calls it sums up, in the history's order
            connector=_shared(self.connectors),
            tool=_shared(self.tools),
            error_code=_shared(set(self.codes)) or None,
            details={
                "refused": True,
                "refused_calls": calls,
                "codes": dict(sorted(self.codes.items())),
                "first_at": iso(self.first_at),
                "last_at": iso(self.last_at),
                "note": f"{calls} refused calls counted, not stored one by one: each minute "
                f"stores the first {REFUSALS_STORED} refused calls of the workspace.",
            },
        )


def _shared(values: set[str | None]) -> str | None:
    return next(iter(values)) if len(values) == 1 else None


@dataclass(slots=True)
class _Refusals:
    """One tenant's refused calls in its current window."""

    window: int  # the clock's microseconds // REFUSAL_WINDOW_US
    stored: int = 0
    left_out: dict[str, _LeftOut] = field(default_factory=dict)  # by event type

    def leave_out(self, event: EventRecord) -> None:
        entry = self.left_out.get(event.type)
        if entry is None:
            entry = self.left_out[event.type] = _LeftOut(event.at, event.at)
        entry.add(event)

    def summaries(self, tenant_id: str) -> list[EventRecord]:
        return [entry.summary(tenant_id, t) for t, entry in sorted(self.left_out.items())]


@dataclass(slots=True)
class _Usage:
    connector: str
    calls: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Health:
    last_success_at: int | None = None
    last_error_at: int | None = None
    last_error: str | None = None


@dataclass(slots=True)
class _Batch:
    events: list[EventRecord] = field(default_factory=list)
    usage: dict[UsageKey, _Usage] = field(default_factory=dict)
    health: dict[tuple[str, str], _Health] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events) + len(self.usage) + len(self.health)

    @classmethod
    def of(
        cls, events: list[EventRecord], usage: list[UsageDelta], health: list[HealthDelta]
    ) -> _Batch:
        return cls(
            events=list(events),
            usage={
                (d.tenant_id, d.period, d.tool): _Usage(d.connector, d.calls, d.errors)
                for d in usage
            },
            health={
                (h.tenant_id, h.connector): _Health(
                    h.last_success_at, h.last_error_at, h.last_error
                )
                for h in health
            },
        )

    def merge_back(self, newer: _Batch) -> None:
        """Put a failed batch (self) in front of what arrived since (newer)."""
        self.events.extend(newer.events)
        for key, u in newer.usage.items():
            mine = self.usage.get(key)
            if mine is None:
                self.usage[key] = u
            else:
                mine.calls += u.calls
                mine.errors += u.errors
        for hkey, h in newer.health.items():
            mine_h = self.health.get(hkey)
            if mine_h is None:
                self.health[hkey] = h
            else:
                if h.last_success_at is not None:
                    mine_h.last_success_at = h.last_success_at
                if h.last_error_at is not None:
                    mine_h.last_error_at, mine_h.last_error = h.last_error_at, h.last_error


_live: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for rec in list(_live):
        try:
            rec.close()
        except Exception:  # pragma: no cover - last resort at interpreter exit
            logger.exception("recorder: final flush at exit failed")


class Recorder:
    def __init__(
        self,
        store: Store,
        quota: QuotaTracker | None = None,
        *,
        interval: float = 0.25,
        max_pending: int = 2000,
        on_flushed: Callable[[], None] | None = None,
        on_recorded: Callable[[EventRecord, bool], None] | None = None,
        on_written: Callable[[list[EventRecord], list[UsageDelta]], None] | None = None,
        clock: Callable[[], int] = now_us,
        failure_log_interval: float = FAILURE_LOG_INTERVAL,
    ) -> None:
        self.store = store
        self.clock = clock  # microseconds; places refused calls in their window
        self.quota = quota
        self.interval = interval
        self.max_pending = max_pending
        self._on_flushed = on_flushed
        self._on_recorded = on_recorded
        self._on_written = on_written
        self._batch = _Batch()
        self._refusals: dict[str, _Refusals] = {}  # by tenant
        self._lock = threading.Lock()  # guards _batch and _refusals
        self._write_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._close_lock = threading.Lock()  # a second close() waits for the first
        self._close_done = False
        self.flushes = 0
        self.written = 0
        self.failure_log_interval = failure_log_interval
        # Under _write_lock: the reason and time.monotonic() of the first failure of the
        # failing spell, when its last line was logged, and its failed writes.
        self._failing: tuple[str, float] | None = None
        self._failure_logged = 0.0
        self._failed_writes = 0
        _live.add(self)

    # ------------------------------------------------------------------ recording

    def record_event(self, event: EventRecord, *, refused: bool = False) -> None:
        """`refused`: the event of a call refused before its tool ran (see the module doc)."""
        if refused:
            self._refused(event)
            return
        with self._lock:
            self._batch.events.append(event)
            pending = len(self._batch.events)
        self._after_record(pending)
        if self._on_recorded is not None:
            self._on_recorded(event, False)

    def record_call(
        self,
        *,
        tenant_id: str,
        tool: str,
        connector: str | None,
        day: str,
        status: str,
        duration_ms: float,
        error_code: str | None = None,
        details: dict[str, Any] | None = None,
        at: int | None = None,
        count_usage: bool = True,
        refused: bool = False,
    ) -> None:
        """One tool call: an event, a usage increment in `day` (`store.usage_day` of the time
        the quota counted it) and (connector tools) health.

        A call the quota admitted and the gateway then refused before its tool ran
        (`refused`: `GatewayError.refused`), or whose arguments the tool's own checks refused
        (`invalid_arguments`), is refused like one the schema refused: it does not count, and
        the quota takes it back."""
        if count_usage and (refused or error_code == INVALID_ARGUMENTS):
            count_usage = False
            if self.quota is not None:
                self.quota.uncount(tenant_id, day, connector)
        when = now_us() if at is None else at
        event = make_event(
            tenant_id,
            "tool_call",
            status,
            at=when,
            connector=connector,
            tool=tool,
            duration_ms=round(duration_ms, 3),
            error_code=error_code,
            details=details,
        )
        if not count_usage:
            self._refused(event)  # nothing to count, and no connection's health
            return
        with self._lock:
            batch = self._batch
            batch.events.append(event)
            key = (tenant_id, day, tool)
            u = batch.usage.get(key)
            if u is None:
                u = batch.usage[key] = _Usage(connector or "")
            u.calls += 1
            if status == "error":
                u.errors += 1
            if connector and (status == "ok" or _is_upstream(error_code)):
                h = batch.health.get((tenant_id, connector))
                if h is None:
                    h = batch.health[(tenant_id, connector)] = _Health()
                if status == "ok":
                    h.last_success_at = when
                else:
                    h.last_error_at, h.last_error = when, error_code
            pending = len(batch.events)
        self._after_record(pending)
        if self._on_recorded is not None:
            self._on_recorded(event, True)

    def _refused(self, event: EventRecord) -> None:
        """Buffer the event of a refused call while its tenant's window has room, else count
        it toward the window's summary; a window that has ended is summed up first. Its details
        say `"refused": true`, as a summary's do: readers leave them out of the calls made
        (`Store.call_stats`)."""
        event = replace(event, details={**(event.details or {}), "refused": True})
        window = self.clock() // REFUSAL_WINDOW_US
        with self._lock:
            state = self._refusals.get(event.tenant_id)
            recorded = []
            if state is not None and state.window != window:
                recorded = state.summaries(event.tenant_id)
                state = None
            if state is None:
                state = self._refusals[event.tenant_id] = _Refusals(window)
            if state.stored < REFUSALS_STORED:
                state.stored += 1
                recorded.append(event)
            else:
                state.leave_out(event)
            self._batch.events.extend(recorded)
            pending = len(self._batch.events)
        if recorded:
            self._after_record(pending)
        self._heard(recorded)

    def summarize_refusals(self) -> int:
        """Buffer the summaries of the refusal windows that have ended, and forget those
        windows. Returns how many summaries. Call it where `record_*` is called."""
        window = self.clock() // REFUSAL_WINDOW_US
        with self._lock:
            summaries = self._take_summaries(lambda state: state.window != window)
            pending = len(self._batch.events)
        if summaries:
            self._after_record(pending)
        self._heard(summaries)
        return len(summaries)

    def _take_summaries(self, ended: Callable[[_Refusals], bool]) -> list[EventRecord]:
        """Under `_lock`: buffer the summaries of the `ended` windows, and forget them."""
        summaries: list[EventRecord] = []
        for tenant_id, state in list(self._refusals.items()):
            if ended(state):
                del self._refusals[tenant_id]
                summaries.extend(state.summaries(tenant_id))
        self._batch.events.extend(summaries)
        return summaries

    def _heard(self, events: list[EventRecord]) -> None:
        if self._on_recorded is not None:
            for event in events:
                self._on_recorded(event, False)

    def _after_record(self, pending: int) -> None:
        if self._thread is None and not self._closed:
            self.start()
        if pending >= self.max_pending:
            self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="gateway-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:
                continue  # logged by flush (once, then once a minute); retried next time

    def close(self) -> None:
        """Stop the background thread and write everything still buffered. Idempotent; a
        concurrent second call returns only once the first has finished writing."""
        with self._close_lock:
            if self._close_done:
                return
            self._closed = True
            self._stop.set()
            self._wake.set()
            if self._thread is not None:
                self._thread.join(30)
            with self._lock:  # the windows still open too (nobody hears of them now)
                self._take_summaries(lambda state: True)
            for _attempt in range(3):
                try:
                    self.flush()
                    break
                except Exception:
                    continue  # logged by flush
            lost = self.pending()
            if lost:
                failing = self._failing
                logger.error(
                    "recorder: %d records could not be written at shutdown (%s)",
                    lost,
                    failing[0] if failing else "unknown reason",
                )
            self._close_done = True
            _live.discard(self)

    def pending(self) -> int:
        with self._lock:
            return len(self._batch)

    def failure(self) -> WriteFailure | None:
        """Why records cannot be written, since the last write failed (None once one
        succeeds, and before any failed)."""
        failing = self._failing
        if failing is None:
            return None
        reason, since = failing
        return WriteFailure(reason, time.monotonic() - since, self.pending())

    def settled(self) -> bool:
        """True when everything recorded so far is in the database (nothing buffered and no
        batch being written)."""
        return not self._write_lock.locked() and not self.pending()

    # ------------------------------------------------------------------ writing

    def flush(self) -> int:
        """Write everything buffered now (blocking). Returns the number of events written.
        A failure puts the records back, is logged (see the module doc) and raised."""
        with self._write_lock:
            try:
                stored = self._flush()
            except Exception as exc:
                self._failed(exc)
                raise
        if stored is None:
            return 0
        if self._on_flushed is not None:
            self._on_flushed()
        return stored

    def _flush(self) -> int | None:
        """`flush` under the write lock; None when there was nothing to write."""
        with self._lock:
            batch, self._batch = self._batch, _Batch()
        if not len(batch):
            return None
        usage = [
            UsageDelta(t, p, tool, u.connector, u.calls, u.errors)
            for (t, p, tool), u in batch.usage.items()
        ]
        health = [
            HealthDelta(t, c, h.last_success_at, h.last_error_at, h.last_error)
            for (t, c), h in batch.health.items()
        ]
        stored = len(batch.events)
        try:
            self.store.write_batch(batch.events, usage, health)
        except REFUSED:
            stored = self._write_singly(batch.events, usage, health)
        except BaseException:
            self._put_back(batch)
            raise
        else:
            self._written(batch.events, usage)
        self._recovered()
        self.flushes += 1
        self.written += stored
        if self.quota is not None and usage:
            self._settle(usage)
        return stored

    def _failed(self, exc: Exception) -> None:
        """Under the write lock: log a failed write, throttled (see the module doc)."""
        now = time.monotonic()
        reason = db_reason(exc)
        self._failed_writes += 1
        if self._failing is None:
            self._failing = (reason, now)
            self._failure_logged = now
            logger.error(
                "recorder: records cannot be written (%s); they are kept in memory and "
                "retried (HTTP's /healthz answers 503 meanwhile), and this is logged again once a "
                "minute while it lasts",
                reason,
                exc_info=exc,
            )
            return
        since = self._failing[1]
        self._failing = (reason, since)
        if now - self._failure_logged >= self.failure_log_interval:
            self._failure_logged = now
            logger.error(
                "recorder: records still cannot be written (%s) after %.0f s: %d records "
                "waiting, %d failed writes",
                reason,
                now - since,
                self.pending(),
                self._failed_writes,
            )

    def _recovered(self) -> None:
        """Under the write lock: a write succeeded; end a failing spell, saying so."""
        if self._failing is None:
            return
        reason, since = self._failing
        self._failing = None
        logger.warning(
            "recorder: records are written again, after %.0f s in which %d writes failed (%s)",
            time.monotonic() - since,
            self._failed_writes,
            reason,
        )
        self._failed_writes = 0

    def _write_singly(
        self, events: list[EventRecord], usage: list[UsageDelta], health: list[HealthDelta]
    ) -> int:
        """Write each record in its own transaction, dropping those the database refuses, and
        return how many events were stored. On any other failure (an outage meanwhile), the
        records not written yet are put back."""
        parts: list[tuple[list[EventRecord], list[UsageDelta], list[HealthDelta]]] = [
            *(([e], [], []) for e in events),
            *(([], [d], []) for d in usage),
            *(([], [], [h]) for h in health),
        ]
        refused = refused_events = 0
        for i, part in enumerate(parts):
            try:
                self.store.write_batch(*part)
            except REFUSED:
                refused += 1
                refused_events += len(part[0])
                continue
            except BaseException:
                rest = parts[i:]
                self._put_back(
                    _Batch.of(
                        [e for p in rest for e in p[0]],
                        [d for p in rest for d in p[1]],
                        [h for p in rest for h in p[2]],
                    )
                )
                raise
            self._written(part[0], part[1])
        logger.error(
            "recorder: the database refused %d of %d records (dropped; the others are stored)",
            refused,
            len(parts),
        )
        return len(events) - refused_events

    def _written(self, events: list[EventRecord], usage: list[UsageDelta]) -> None:
        if self._on_written is not None and (events or usage):
            self._on_written(events, usage)

    def writing(self) -> threading.Lock:
        """The lock held while a batch is written and `on_written` hears of it: holding it,
        a reader sees each batch both in the database and reported, or in neither."""
        return self._write_lock

    def _put_back(self, unwritten: _Batch) -> None:
        """Put records that could not be written in front of what arrived since."""
        with self._lock:
            unwritten.merge_back(self._batch)
            self._batch = unwritten

    def _settle(self, usage: list[UsageDelta]) -> None:
        assert self.quota is not None
        written: dict[tuple[str, str], dict[str | None, int]] = {}
        for d in usage:
            per = written.setdefault((d.tenant_id, d.period), {})
            per[d.connector or None] = per.get(d.connector or None, 0) + d.calls
        for (tenant_id, day), per in written.items():
            try:
                fresh = self.store.usage_day_totals(tenant_id, day)
            except Exception:
                logger.exception("recorder: reading usage totals failed")
                continue
            self.quota.settle(tenant_id, day, per, fresh)


def _is_upstream(code: str | None) -> bool:
    """Outcomes that say something about the connection's health."""
    return code is not None and (code.startswith("upstream_") or code == "rate_limited")
