"""Calls and memory updates made by other gateway processes on the same database.

A process announces its own calls and memory updates to its listen streams as it makes them
(`GatewayRuntime._recorded`). When several processes share one database, a stream must also
hear of what the others did: `ForeignActivity.poll`, run by the change poll for the tenants
with open listen streams, reads what the database holds and subtracts what this process wrote
itself, so that nothing is announced twice:

* calls: the tenant's usage counters per (day, connector), of today and yesterday (a call
  made just before midnight may commit after it), and of their months (which only a gateway
  from before daily counting writes, during a rolling upgrade). A counted call of another
  process moves one, whatever order the processes' batches commit in; it updates the usage,
  the events and the connector's status. This process's own batches are added up as its
  recorder writes them (`written`, under the recorder's write lock, which `poll` also holds
  while it reads, so a batch is always either in both or in neither).
* other events (refused calls, memory updates): the number of events newer than the newest
  one seen at the previous poll, less this process's own. An event another process commits
  later than a newer one can be missed; a counted call never is (its counter moves).
* memory: each user's last version, read for the users updated in the last `WINDOW_US`
  (the user state rows carry their update time). This process's own updates raise the
  version remembered (`memory_written`) after announcing themselves.

The first poll of a tenant only takes its baseline. A tenant no longer listened to is
forgotten, and its next first poll starts again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from . import resources
from .store import DAY_US, EventRecord, Store, TenantActivity, UsageDelta, now_us, usage_day

# How far back a memory update is looked for: far more than a commit can lag its timestamp.
WINDOW_US = 60_000_000


@dataclass(slots=True)
class _Tenant:
    """What the previous poll saw of one tenant, less this process's own writes."""

    newest: str = ""  # the newest event id seen
    others: dict[tuple[str, str], int] = field(default_factory=dict)  # calls made elsewhere
    own_calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # written here
    own_events: list[str] = field(default_factory=list)  # event ids written since last poll
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)  # user -> (v, at)


class ForeignActivity:
    """Finds, for the tenants listened to, what other processes recorded (module doc)."""

    def __init__(
        self,
        store: Store,
        versions_since: Callable[[Sequence[str], int], list[tuple[str, str, int, int]]] | None,
        write_lock: Callable[[], AbstractContextManager[object]],
    ) -> None:
        self._store = store
        self._versions_since = versions_since
        self._write_lock = write_lock
        self._lock = threading.Lock()  # guards _tenants
        self._polling = threading.Lock()  # one poll at a time
        self._tenants: dict[str, _Tenant] = {}

    def written(self, events: Sequence[EventRecord], usage: Sequence[UsageDelta]) -> None:
        """The recorder wrote these (called under its write lock, after the commit)."""
        with self._lock:
            for e in events:
                seen = self._tenants.get(e.tenant_id)
                if seen is not None:
                    seen.own_events.append(e.id)
            for d in usage:
                seen = self._tenants.get(d.tenant_id)
                if seen is not None:
                    seen.own_calls[(d.period, d.connector)] += d.calls

    def memory_written(self, tenant_id: str, user: str, version: int) -> None:
        """This process stored `version` of the user's memory (and announced it)."""
        with self._lock:
            seen = self._tenants.get(tenant_id)
            if seen is not None:
                known = seen.versions.get(user, (0, 0))[0]
                seen.versions[user] = (max(known, version), now_us())

    def poll(self, tenant_ids: Sequence[str]) -> list[tuple[str, resources.Change]]:
        """What other processes changed for `tenant_ids` since the last poll (blocking)."""
        with self._polling:
            return self._poll(tenant_ids)

    def _poll(self, tenant_ids: Sequence[str]) -> list[tuple[str, resources.Change]]:
        now = now_us()
        days = [usage_day(now - DAY_US), usage_day(now)]
        # and their months: a gateway from before daily counting (sharing the database during
        # a rolling upgrade) counts a monthly plan's calls under the month's key
        periods = [*days, *dict.fromkeys(d[:7] for d in days)]
        with self._lock:
            for gone in set(self._tenants) - set(tenant_ids):
                del self._tenants[gone]
            floors: dict[str, str | None] = {t: s.newest for t, s in self._tenants.items()}
            floors.update((t, None) for t in tenant_ids if t not in self._tenants)
        if not floors:
            return []
        with self._write_lock():
            read = self._store.activity(floors, periods)
            with self._lock:
                own = {
                    t: self._take_own(t, periods)
                    for t, floor in floors.items()
                    if floor is not None
                }
                for t, floor in floors.items():
                    if floor is None:
                        self._tenants[t] = _Tenant(
                            newest=read[t].newest, others=dict(read[t].calls)
                        )
        versions = self._read_versions(list(floors), now)
        changes: list[tuple[str, resources.Change]] = []
        with self._lock:
            for t, floor in floors.items():
                seen = self._tenants.get(t)
                if seen is None:
                    continue
                if floor is not None:
                    changes.extend(_calls(t, seen, read[t], *own[t]))
                changes.extend(
                    _memory(t, seen, versions.get(t, {}), now, announce=floor is not None)
                )
        return changes

    def _take_own(
        self, tenant_id: str, periods: Sequence[str]
    ) -> tuple[Counter[tuple[str, str]], list[str]]:
        """This process's calls (per day polled and connector) and the events it wrote since
        the last poll."""
        seen = self._tenants[tenant_id]
        for key in [k for k in seen.own_calls if k[0] not in periods]:
            del seen.own_calls[key]
        own_events, seen.own_events = seen.own_events, []
        return Counter(seen.own_calls), own_events

    def _read_versions(
        self, tenant_ids: list[str], now: int
    ) -> dict[str, dict[str, tuple[int, int]]]:
        out: dict[str, dict[str, tuple[int, int]]] = {}
        if self._versions_since is not None:
            for t, user, version, at in self._versions_since(tenant_ids, now - WINDOW_US):
                out.setdefault(t, {})[user] = (version, at)
        return out


def _calls(
    tenant_id: str,
    seen: _Tenant,
    read: TenantActivity,
    own_calls: Counter[tuple[str, str]],
    own_events: list[str],
) -> list[tuple[str, resources.Change]]:
    """The changes that other processes' calls and events made since `seen`, which becomes
    what `read` holds less this process's own writes."""
    others = {key: calls - own_calls[key] for key, calls in read.calls.items()}
    moved = sorted({key[1] for key, n in others.items() if n > seen.others.get(key, 0)})
    other_events = read.events - sum(1 for i in own_events if i > seen.newest)
    seen.newest, seen.others = read.newest, others
    if not moved:
        return [(tenant_id, resources.Change(event=True))] if other_events > 0 else []
    # Counted calls: the usage, the events, and the status of each connector called.
    first, *rest = moved
    return [
        (tenant_id, resources.Change(event=True, usage=True, event_connector=first or None)),
        *((tenant_id, resources.Change(event_connector=c)) for c in rest if c),
    ]


def _memory(
    tenant_id: str,
    seen: _Tenant,
    versions: dict[str, tuple[int, int]],
    now: int,
    *,
    announce: bool,
) -> list[tuple[str, resources.Change]]:
    """The users whose memory another process updated: a version above the one remembered
    (this process's own updates raise it). Users not updated within the window are forgotten."""
    changes: list[tuple[str, resources.Change]] = []
    for user, (version, at) in sorted(versions.items()):
        known = seen.versions.get(user, (0, 0))[0]
        if announce and version > known:
            changes.append((tenant_id, resources.Change(memory_user=user)))
        seen.versions[user] = (max(version, known), at)
    for user, (_version, at) in list(seen.versions.items()):
        if at < now - WINDOW_US:
            del seen.versions[user]
    return changes
