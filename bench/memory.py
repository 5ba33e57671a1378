"""Benchmark: personalization memory retrieval with 100,000 items for one user on SQLite.

    .venv/bin/python bench/memory.py                 # 100k items, 300 queries
    .venv/bin/python bench/memory.py --items 20000   # quicker

Builds a SQLite file through the gateway's own engine (`store.make_engine`: WAL, busy timeout)
and `MemoryStore.update_memory` (20 observations per call, so the write path is measured too),
with other users' items as noise, then times `retrieve_relevant_chunks` and `search_or_ask`
over a few hundred varied queries next to two baselines run on the same file in the same run:

* raw FTS5: the bare `MATCH ... ORDER BY bm25(...) LIMIT k` on the same index (the tenant's),
  with the same sanitised expression and weights: no user scoping, no superseded filter, no row
  fetch, and no pruning (every matching row is scored, which is what FTS5 itself does; its
  `ORDER BY rank` was slower still when measured here).
* LIKE scan: every row of the user scored by how many query terms it holds
  (`(text LIKE '%term%') + ...`, newest first on ties): what ranked retrieval costs without a
  full-text index.

Finally it reports recall@5 on the labelled set (tests/data/memory_ranking.json). Output is a
markdown block to paste into the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generator.runtime.memory import MemoryStore, fts5_match_expression, query_terms  # noqa: E402
from generator.runtime.store import make_engine  # noqa: E402

TENANT = "acme"
USER = "ash"

# ----------------------------------------------------------------------------- synthetic memory


def words(text: str, sep: str | None = None) -> list[str]:
    return [w.strip() for w in text.split(sep)]


PEOPLE = words(
    "Priya Sam Maya Jonas Aiko Mateus Lena Omar Chloe Ravi Ingrid Tomas Zara Felix Noor Kenji "
    "Ana Bruno Elif Hugo Leila Marco Nadia Oscar Paula Quentin Rosa Stefan Tara Umar"
)
CITIES = words(
    "Lisbon Porto Berlin Madrid Paris London Dublin Amsterdam Warsaw Prague Vienna Milan "
    "Barcelona Seville Munich Zurich Oslo Stockholm Helsinki Copenhagen Boston Austin Toronto "
    "Singapore Tokyo Seoul Sydney Nairobi Lagos Cairo"
)
FOODS = words(
    "ramen sushi falafel pizza tacos curry pho paella risotto dumplings salad burrito "
    "shakshuka bibimbap ceviche gnocchi lasagna hummus croissant pastel bacalhau tapas kimchi"
)
PROJECTS = words(
    "Apollo Borealis Cascade Dynamo Ember Fjord Gazelle Harbor Ion Juniper Kestrel "
    "Lantern Meridian Nimbus Orchid Pioneer Quartz Redwood Sierra Tundra"
)
TOOLS = words(
    "Slack Notion Jira Figma Linear GitHub Obsidian VSCode Vim Zoom Miro Airtable Excel "
    "Docker Terraform Grafana Postgres Kafka Spark Python Rust Go TypeScript"
)
HOBBIES = words(
    "climbing surfing chess pottery running cycling sailing baking photography gardening "
    "painting yoga swimming skiing kayaking birdwatching knitting woodworking"
)
DAYS = words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
TIMES = words("8 AM|9 AM|10 AM|11 AM|noon|1 PM|2 PM|3 PM|4 PM|5 PM|6 PM", "|")
ADJ = words(
    "quiet short detailed early late remote weekly monthly urgent casual formal async "
    "written visual"
)

TEMPLATES: Sequence[Callable[[random.Random], tuple[str, str, list[str]]]] = (
    lambda r: (
        f"Prefers {r.choice(ADJ)} meetings with {r.choice(PEOPLE)} on {r.choice(DAYS)}s "
        f"after {r.choice(TIMES)}.",
        "meetings",
        ["schedule"],
    ),
    lambda r: (
        f"Had {r.choice(FOODS)} for lunch with {r.choice(PEOPLE)} in {r.choice(CITIES)}.",
        "food",
        ["food"],
    ),
    lambda r: (
        f"Flew to {r.choice(CITIES)} for the {r.choice(PROJECTS)} kickoff; "
        f"stayed {r.randint(2, 9)} nights.",
        "travel",
        ["travel", "work"],
    ),
    lambda r: (
        f"Asked for a {r.choice(ADJ)} summary of project {r.choice(PROJECTS)} every "
        f"{r.choice(DAYS)}.",
        "reports",
        ["work", "communication"],
    ),
    lambda r: (
        f"Uses {r.choice(TOOLS)} and {r.choice(TOOLS)} for {r.choice(PROJECTS)} work.",
        "tools",
        ["tools"],
    ),
    lambda r: (
        f"Went {r.choice(HOBBIES)} with {r.choice(PEOPLE)} near {r.choice(CITIES)} on "
        f"{r.choice(DAYS)}.",
        "hobbies",
        ["personal"],
    ),
    lambda r: (
        f"{r.choice(PEOPLE)} is the contact for {r.choice(PROJECTS)} budget questions; "
        f"reply by {r.choice(TIMES)}.",
        "contacts",
        ["work"],
    ),
    lambda r: (
        f"Reminder: call {r.choice(PEOPLE)} about the {r.choice(CITIES)} office move "
        f"before {r.choice(DAYS)}.",
        "reminders",
        ["todo"],
    ),
)


def observation(r: random.Random, n: int) -> dict[str, Any]:
    text, topic_family, tags = r.choice(TEMPLATES)(r)
    # A unique-ish token per item (ticket numbers, codes) keeps the vocabulary realistic.
    text += f" Ref T{r.randint(1000, 99999)}."
    day = 1 + n % 28
    return {
        "text": text,
        "source": "chat",
        "tags": tags,
        # A year that has passed: observed_at ahead of the clock is refused.
        "observed_at": f"2025-{1 + n % 12:02d}-{day:02d}T{n % 24:02d}:00:00Z",
        # No topic: topics would supersede each other and shrink the active set.
        **({"topic": f"{topic_family}_{n}"} if n % 50 == 0 else {}),
    }


QUESTION_FORMS: Sequence[Callable[[random.Random], str]] = (
    lambda r: f"When does Ash meet {r.choice(PEOPLE)}?",
    lambda r: f"{r.choice(FOODS)} lunch",
    lambda r: f"trip to {r.choice(CITIES)} for {r.choice(PROJECTS)}",
    lambda r: f"Who handles the {r.choice(PROJECTS)} budget?",
    lambda r: f"Which tools does Ash use for {r.choice(PROJECTS)}?",
    lambda r: f"{r.choice(HOBBIES)} with {r.choice(PEOPLE)}",
    lambda r: f"office move {r.choice(CITIES)}",
    lambda r: f"T{r.randint(1000, 99999)}",
    lambda r: f"{r.choice(ADJ)} summary {r.choice(DAYS)}",
    lambda r: f"What does Ash prefer on {r.choice(DAYS)}s after {r.choice(TIMES)}?",
)


# ----------------------------------------------------------------------------- measurement


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) * 1000 / repeat


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def load(store: MemoryStore, items: int, noise_users: int, noise_items: int, seed: int) -> float:
    r = random.Random(seed)
    batch = 20
    start = time.perf_counter()
    for first in range(0, items, batch):
        obs = [observation(r, n) for n in range(first, min(first + batch, items))]
        store.update_memory(TENANT, USER, obs)
    for u in range(noise_users):
        tenant = TENANT if u % 2 else "globex"
        for first in range(0, noise_items, batch):
            obs = [observation(r, n) for n in range(first, min(first + batch, noise_items))]
            store.update_memory(tenant, f"noise{u}", obs)
    return time.perf_counter() - start


def recall_on_labelled_set(tmp: Path) -> float:
    data = json.loads((ROOT / "tests" / "data" / "memory_ranking.json").read_text("utf-8"))
    engine = make_engine(str(tmp / "labelled.db"))
    store = MemoryStore(engine)
    store.migrate()
    keys = {}
    for item in data["items"]:
        obs = {k: v for k, v in item.items() if k != "key"}
        keys[store.update_memory(TENANT, USER, [obs])["stored"][0]["id"]] = item["key"]
    total = 0.0
    for q in data["queries"]:
        got = {
            keys[c["id"]]
            for c in store.retrieve_relevant_chunks(TENANT, USER, q["query"], top_k=5)["chunks"]
        }
        total += len(got & set(q["relevant"])) / len(q["relevant"])
    engine.dispose()
    return total / len(data["queries"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items for the measured user")
    parser.add_argument("--noise-users", type=int, default=20)
    parser.add_argument("--noise-items", type=int, default=1_000, help="items per noise user")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", type=Path, help="SQLite file to (re)use; default: a temp file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mcpforge-bench-memory-") as tmpdir:
        tmp = Path(tmpdir)
        db = args.db or tmp / "memory.db"
        engine = make_engine(str(db))
        store = MemoryStore(engine)
        store.migrate()
        existing = store.profile(TENANT, USER)["items"]["total"]
        load_s = 0.0
        if existing < args.items:
            if existing:
                sys.exit(f"{db} holds {existing} items for {USER}; use a fresh --db")
            print(
                f"loading {args.items:,} items (+{args.noise_users} x {args.noise_items:,} noise)",
                file=sys.stderr,
            )
            load_s = load(store, args.items, args.noise_users, args.noise_items, args.seed)
        total_items = store.profile(TENANT, USER)["items"]["active"]

        r = random.Random(args.seed + 1)
        queries = [r.choice(QUESTION_FORMS)(r) for _ in range(args.queries)]
        k = args.top_k

        raw = sqlite3.connect(str(db))
        raw.execute("PRAGMA query_only = 1")
        (index,) = raw.execute(
            "SELECT n FROM memory_search_indexes WHERE tenant_id = ?", (TENANT,)
        ).fetchone()
        fts = f"memory_fts_{int(index)}"

        def raw_fts(q: str) -> list[Any]:
            match = fts5_match_expression(query_terms(q))
            if not match:
                return []
            return raw.execute(
                f"SELECT rowid, -bm25({fts}, 1.0, 0.5, 0.5) AS score "
                f"FROM {fts} WHERE {fts} MATCH ? ORDER BY score DESC LIMIT ?",
                (match, k),
            ).fetchall()

        def like_scan(q: str) -> list[Any]:
            terms = query_terms(q)
            if not terms:
                return []
            # Ranked by how many query terms the text holds, newest first: every row is read.
            score = " + ".join("(text LIKE ?)" for _ in terms)
            return raw.execute(
                f"SELECT id, text, {score} AS score FROM memory_items "
                "WHERE tenant_id = ? AND user_id = ? AND superseded_by IS NULL AND score > 0 "
                "ORDER BY score DESC, observed_at DESC, version DESC LIMIT ?",
                (*[f"%{t}%" for t in terms], TENANT, USER, k),
            ).fetchall()

        def store_retrieve(q: str) -> object:
            return store.retrieve_relevant_chunks(TENANT, USER, q, top_k=k)

        def store_ask(q: str) -> object:
            return store.search_or_ask(TENANT, USER, q)

        candidates: dict[str, Callable[[str], object]] = {
            "retrieve_relevant_chunks (store)": store_retrieve,
            "raw FTS5 MATCH + bm25, tenant's index (baseline)": raw_fts,
            "LIKE scan of the user's rows, ranked by terms matched (baseline)": like_scan,
            "search_or_ask (store, extractive)": store_ask,
        }
        for fn in candidates.values():  # warm caches evenly
            for q in queries[:20]:
                fn(q)
        results: dict[str, tuple[float, float, float]] = {}
        hits = 0
        for name, fn in candidates.items():
            samples = []
            cpu = []
            for q in queries:
                start, start_cpu = time.perf_counter(), time.thread_time()
                out = fn(q)
                cpu.append((time.thread_time() - start_cpu) * 1000)
                samples.append((time.perf_counter() - start) * 1000)
                if fn is store_retrieve and isinstance(out, dict) and out["chunks"]:
                    hits += 1
            results[name] = (*stats(samples), statistics.median(cpu))
        raw.close()
        recall = recall_on_labelled_set(tmp)
        size_mb = db.stat().st_size / 1e6 if db.exists() else 0.0
        engine.dispose()

    store_p50 = results["retrieve_relevant_chunks (store)"][0]
    fts_p50 = results["raw FTS5 MATCH + bm25, tenant's index (baseline)"][0]
    like_p50 = results["LIKE scan of the user's rows, ranked by terms matched (baseline)"][0]
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(f"### Memory retrieval, SQLite, {total_items:,} active items for one user")
    print()
    print(
        f"{args.noise_users} other users x {args.noise_items:,} items as noise; "
        f"{len(queries)} varied queries (top_k={k}, {hits} with hits); "
        f"database {size_mb:.0f} MB; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {loadavg:.1f} at the end (CPU p50: time on the measuring thread's CPU, "
        "which a busy machine inflates less than wall time)."
    )
    print()
    print("| query path | p50 ms | p95 ms | CPU p50 ms |")
    print("|---|---:|---:|---:|")
    for name, (p50, p95, cpu_p50) in results.items():
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {cpu_p50:.2f} |")
    print()
    print(
        f"Store p50 / raw FTS5 p50 = {store_p50 / fts_p50:.2f} (the store scopes by user, "
        f"drops superseded items and fetches the rows, but scores only the rows that can "
        f"reach the top k); LIKE scan p50 / store p50 = {like_p50 / store_p50:.1f}."
    )
    if load_s:
        n_calls = -(-args.items // 20) + args.noise_users * -(-args.noise_items // 20)
        print(
            f"Load: {load_s:.1f} s for {n_calls:,} update_memory calls of up to 20 observations "
            f"({(args.items + args.noise_users * args.noise_items) / load_s:,.0f} items/s)."
        )
    print(f"Ranking: recall@5 = {recall:.3f} on tests/data/memory_ranking.json.")
    target = "meets" if store_p50 < 20 else "MISSES"
    print(f"Target p50 < 20 ms: {target} ({store_p50:.2f} ms).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
