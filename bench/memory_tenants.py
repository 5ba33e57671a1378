"""Benchmark: what per-tenant memory indexes cost a SQLite database as tenants grow.

    .venv/bin/python bench/memory_tenants.py                     # 10, 100, 1,000 tenants
    .venv/bin/python bench/memory_tenants.py --tenants 10,100    # quicker

On SQLite every tenant with memory gets its own FTS5 index (see generator/runtime/memory.py):
seven schema objects, which SQLite reads when a connection opens and again, once per open
connection, after a new tenant's first memory write changes the schema. This measures, through
the gateway's own engine and `MemoryStore.update_memory`, at each tenant count:

* opening a connection and running its first statement (the baseline: the same database with
  no tenant, measured in the same run);
* a tenant's first memory write (which creates its index) against a later write;
* retrieval for one tenant;
* the database's size.

Output is a markdown table to paste into the README.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generator.runtime.memory import MemoryStore  # noqa: E402
from generator.runtime.store import make_engine  # noqa: E402


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def open_and_query(db: Path) -> None:
    conn = sqlite3.connect(str(db))
    try:
        conn.execute("SELECT count(*) FROM memory_items").fetchone()
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="10,100,1000", help="comma-separated tenant counts")
    parser.add_argument("--repeat", type=int, default=7, help="samples per timing (median)")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.tenants.split(",")})

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mcpforge-bench-tenants-") as tmpdir:
        db = Path(tmpdir) / "memory.db"
        engine = make_engine(str(db))
        store = MemoryStore(engine)
        store.migrate()
        baseline = median_ms(lambda: open_and_query(db), args.repeat)
        made = 0
        for count in counts:
            first: list[float] = []
            later: list[float] = []
            while made < count:
                tenant = f"tenant{made}"
                for samples in (first, later):
                    start = time.perf_counter()
                    store.update_memory(tenant, "ash", [{"text": f"Lunch with Priya {made}."}])
                    samples.append((time.perf_counter() - start) * 1000)
                made += 1
            connect = median_ms(lambda: open_and_query(db), args.repeat)
            retrieve = median_ms(
                lambda: store.retrieve_relevant_chunks("tenant0", "ash", "lunch Priya"),
                args.repeat,
            )
            with engine.connect() as conn:
                objects = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one()
            rows.append(
                f"| {count:,} | {objects:,} | {connect:.2f} ({connect / baseline:.0f}x) | "
                f"{statistics.median(first):.2f} | {statistics.median(later):.2f} | "
                f"{retrieve:.2f} | {os.path.getsize(db) / 1e6:.1f} |"
            )
        engine.dispose()

    print(f"### Per-tenant memory indexes on SQLite {sqlite3.sqlite_version}")
    print()
    print(
        f"Opening a connection to the same database with no tenant: {baseline:.2f} ms "
        f"(the baseline of the ratio). Write timings are medians over the tenants added since "
        "the previous row; others are medians of "
        f"{args.repeat} samples."
    )
    print()
    print(
        "| tenants with memory | schema objects | open + first statement, ms | "
        "first write, ms | next write, ms | retrieval, ms | database, MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
