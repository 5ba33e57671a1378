"""Per-tenant call quotas from the manifest's plans, checked without a database read per call.

For each (tenant, period key) the tracker keeps the persisted totals as last read from the
`usage` table (`base`) and the calls counted in this process since then (`unsettled`).
`used = base + unsettled`. When the recorder has written a batch it reads the totals back
and calls `settle()`, which replaces `base` and subtracts what the batch carried, so calls
made by other processes are seen after at most one flush (or `max_age` seconds).

Usage is a fact independent of the plan: every call counts in its UTC day and in that day's
month (`store.usage_day`; the table holds days, a month is their sum), whatever the tenant's
plan, and a plan checks the key of its own period. A tenant switched from a monthly plan to a
daily one is held to every call of the day, and back, to every call of the month.

Every tool call that passes validation counts toward the plan's `calls` (native and memory
tools included); connector tools also count toward the plan's `per_connector` limit.
Refused calls are not counted: a call refused after `check_and_count` counted it (its
arguments, or its caller: `GatewayError.refused`) is taken back (`uncount`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .catalog import GatewaySpec, QuotaPlan
from .errors import QUOTA_EXCEEDED, GatewayError
from .store import iso, month_of, now_us, period_bounds, usage_day

Key = tuple[str, str]  # (tenant id, period key)
Loader = Callable[[str, str], tuple[int, dict[str, int]]]


@dataclass(slots=True)
class _Counts:
    calls: int = 0
    per_connector: dict[str, int] = field(default_factory=dict)

    def add(self, connector: str | None, n: int = 1) -> None:
        self.calls += n
        if connector:
            self.per_connector[connector] = self.per_connector.get(connector, 0) + n


@dataclass(slots=True)
class _Entry:
    base: _Counts
    loaded_at: float
    unsettled: _Counts = field(default_factory=_Counts)


class QuotaTracker:
    def __init__(self, gateway: GatewaySpec, loader: Loader, *, max_age: float = 30.0) -> None:
        self.gateway = gateway
        self._loader = loader
        self._max_age = max_age
        self._entries: dict[Key, _Entry] = {}
        # Settlements per key: a `load` that read the totals before a settlement must not
        # apply them after it (they lack the batch that settlement already subtracted).
        self._settlements: dict[Key, int] = {}
        self._lock = threading.Lock()

    def plan(self, name: str) -> QuotaPlan:
        return self.gateway.plans.get(name) or self.gateway.plans[self.gateway.default_plan]

    def _entry(self, key: Key) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.loaded_at > self._max_age:
            return None
        return entry

    def needs_load(self, tenant_id: str, plan_name: str, at_us: int) -> str | None:
        """The period key to load first (in a worker thread) when no fresh base is held."""
        plan = self.plan(plan_name)
        if plan.calls is None and not plan.per_connector:
            return None
        period_key, _, _ = period_bounds(plan.period, at_us)
        return None if self._entry((tenant_id, period_key)) else period_key

    def load(self, tenant_id: str, period_key: str) -> None:
        """Read the persisted totals (blocking: call from a worker thread or at startup)."""
        key = (tenant_id, period_key)
        with self._lock:
            settled_before = self._settlements.get(key, 0)
        total, per = self._loader(tenant_id, period_key)
        with self._lock:
            if self._settlements.get(key, 0) != settled_before:
                return  # a settlement meanwhile set newer totals than these
            old = self._entries.get((tenant_id, period_key))
            entry = _Entry(_Counts(total, dict(per)), time.monotonic())
            if old is not None:
                entry.unsettled = old.unsettled
            self._entries[(tenant_id, period_key)] = entry
            self._gc(period_key)

    def _gc(self, current: str) -> None:
        if len(self._entries) > 10_000:
            today = usage_day(now_us())
            keep = {current, month_of(current), today, month_of(today)}
            for key in [k for k in self._entries if k[1] not in keep]:
                del self._entries[key]
                self._settlements.pop(key, None)

    def check_and_count(
        self, tenant_id: str, plan_name: str, connector: str | None, at_us: int
    ) -> None:
        """Refuse (GatewayError quota_exceeded) or count one call, in its day and its month.
        Never touches the DB: call `needs_load`/`load` first."""
        plan = self.plan(plan_name)
        period_key, _, end = period_bounds(plan.period, at_us)
        limited = plan.calls is not None or (connector and connector in plan.per_connector)
        day = usage_day(at_us)
        with self._lock:
            entries = [self._counted(tenant_id, key) for key in (day, month_of(day))]
            if limited:
                entry = self._counted(tenant_id, period_key)
                used = entry.base.calls + entry.unsettled.calls
                if plan.calls is not None and used >= plan.calls:
                    raise self._refusal(plan, used, plan.calls, None, end, at_us)
                if connector and connector in plan.per_connector:
                    limit = plan.per_connector[connector]
                    c_used = entry.base.per_connector.get(
                        connector, 0
                    ) + entry.unsettled.per_connector.get(connector, 0)
                    if c_used >= limit:
                        raise self._refusal(plan, c_used, limit, connector, end, at_us)
            for entry in entries:
                entry.unsettled.add(connector)

    def _counted(self, tenant_id: str, key: str) -> _Entry:
        """The entry of (tenant, key), made empty (and stale: loaded before a check) if none."""
        entry = self._entries.get((tenant_id, key))
        if entry is None:
            entry = self._entries[(tenant_id, key)] = _Entry(_Counts(), 0.0)
        return entry

    def uncount(self, tenant_id: str, day: str, connector: str | None) -> None:
        """Take back a call `check_and_count` counted on `day` (`store.usage_day`) that was
        then refused for its arguments (it is recorded without counting)."""
        with self._lock:
            for key in (day, month_of(day)):
                entry = self._entries.get((tenant_id, key))
                if entry is not None:
                    entry.unsettled.add(connector, -1)

    @staticmethod
    def _refusal(
        plan: QuotaPlan, used: int, limit: int, connector: str | None, end: int, at_us: int
    ) -> GatewayError:
        what = f"calls to {connector}" if connector else "tool calls"
        return GatewayError(
            QUOTA_EXCEEDED,
            f"The workspace has used all {limit} {what} of its {plan.name} plan for this "
            f"{plan.period}; the quota resets at {iso(end)}.",
            details={
                "plan": plan.name,
                "period": plan.period,
                "limit": limit,
                "used": used,
                "connector": connector,
                "resets_at": iso(end),
            },
            retryable=True,
            retry_after=max(0.0, (end - at_us) / 1_000_000),
        )

    def settle(
        self,
        tenant_id: str,
        day: str,
        written: Mapping[str | None, int],
        fresh: Mapping[str, tuple[int, dict[str, int]]],
    ) -> None:
        """After a batch carrying `written` calls of `day` (per connector, None = no
        connector) was persisted and the totals `fresh` of that day and of its month were read
        back (`Store.usage_day_totals`)."""
        with self._lock:
            for key in (day, month_of(day)):
                self._settle((tenant_id, key), written, fresh[key])

    def _settle(
        self, key: Key, written: Mapping[str | None, int], fresh: tuple[int, dict[str, int]]
    ) -> None:
        self._settlements[key] = self._settlements.get(key, 0) + 1
        entry = self._counted(*key)
        for connector, n in written.items():
            entry.unsettled.calls -= n
            if connector:
                left = entry.unsettled.per_connector.get(connector, 0) - n
                if left:
                    entry.unsettled.per_connector[connector] = left
                else:
                    entry.unsettled.per_connector.pop(connector, None)
        entry.base = _Counts(fresh[0], dict(fresh[1]))
        entry.loaded_at = time.monotonic()
