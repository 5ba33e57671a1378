"""Personalization memory on a real SQLite file, and on PostgreSQL when MCPFORGE_TEST_POSTGRES_URL
is set (the `db_url` fixture of conftest.py runs each test on both).

What a user of the gateway relies on: facts learnt in conversation are found again, a correction
wins over the fact it corrects without erasing it, one user's memory never reaches another user
or tenant, nothing is half-written, and every answer fits the tool's declared output schema.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import jsonschema
import pytest
import sqlalchemy as sa

from generator.runtime import catalog as c
from generator.runtime import memory as memory_module
from generator.runtime.answer import NOTHING_FOUND, Answer, Answerer, ExtractiveAnswerer
from generator.runtime.errors import (
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_ARGUMENTS,
    NOT_FOUND,
    GatewayError,
)
from generator.runtime.memory import (
    SCORE_FLOOR,
    MemoryStore,
    fts5_match_expression,
    query_terms,
    search_text,
    shown_score,
    tsquery_expression,
)
from generator.runtime.store import make_engine, now_us, parse_iso

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.engine.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def memory(engine: sa.engine.Engine) -> MemoryStore:
    store = MemoryStore(engine)
    store.migrate()
    return store


def check_output(gateway: c.GatewaySpec, tool: str, value: Mapping[str, Any]) -> None:
    """`value` validates against the tool's output schema from manifests/ (formats checked)."""
    schema = gateway.tools[tool].output_schema
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    for chunk in value.get("chunks", value.get("citations", [])):
        assert RFC3339.match(chunk["observed_at"]), chunk["observed_at"]


def remember(memory: MemoryStore, text: str, tenant: str = "acme", user: str = "ash", **kw: Any):
    return memory.update_memory(tenant, user, [{"text": text, **kw}])["stored"][0]


def texts(result: Mapping[str, Any]) -> list[str]:
    return [chunk["text"] for chunk in result.get("chunks", result.get("citations", []))]


# ------------------------------------------------------------------------------ conversation


def test_conversation_learns_corrects_and_answers_from_the_corrected_fact(
    memory: MemoryStore, gateway: c.GatewaySpec
) -> None:
    # Turn 1: the agent learns two preferences.
    first = memory.update_memory(
        "acme",
        "ash",
        [
            {
                "text": "Prefers concise async replies; no calls before lunch.",
                "source": "chat",
                "topic": "reply_style",
                "tags": ["communication"],
                "observed_at": "2026-10-01T09:00:00Z",
            },
            {
                "text": "Takes meetings in the morning, 9 to 11 AM.",
                "source": "chat",
                "topic": "meeting_time",
                "tags": ["schedule"],
                "observed_at": "2026-10-01T09:01:00Z",
            },
        ],
    )
    check_output(gateway, "update_memory", first)
    assert [s["version"] for s in first["stored"]] == [1, 2]
    old_id = first["stored"][1]["id"]

    asked = memory.search_or_ask("acme", "ash", "When does Ash usually take meetings?")
    check_output(gateway, "search_or_ask", asked)
    assert asked["found"] is True
    assert "9 to 11 AM" in asked["answer"]
    assert [c["id"] for c in asked["citations"]] == [old_id]

    # Turn 2: the user corrects it; same topic, so the old fact is superseded.
    second = memory.update_memory(
        "acme",
        "ash",
        [
            {
                "text": "Moved meetings to 2 PM; mornings are now for deep work.",
                "source": "chat",
                "topic": "meeting_time",
                "observed_at": "2026-11-02T10:00:00Z",
            }
        ],
    )
    check_output(gateway, "update_memory", second)
    new = second["stored"][0]
    assert new["version"] == 3 and new["superseded"] == [old_id]

    # Turn 3: the question is answered from the corrected fact, not the old one.
    asked = memory.search_or_ask("acme", "ash", "When does Ash take meetings?")
    check_output(gateway, "search_or_ask", asked)
    assert asked["found"] is True
    assert "2 PM" in asked["answer"] and "9 to 11" not in asked["answer"]
    assert "(noted 2026-11-02)" in asked["answer"]
    assert [c["id"] for c in asked["citations"]] == [new["id"]]

    chunks = memory.retrieve_relevant_chunks("acme", "ash", "meetings morning")
    check_output(gateway, "retrieve_relevant_chunks", chunks)
    assert old_id not in [c["id"] for c in chunks["chunks"]]
    assert texts(chunks)[0].startswith("Moved meetings to 2 PM")

    # The old fact is still in the log, marked superseded by the new one.
    log = memory.log("acme", "ash")
    assert [e["version"] for e in log["entries"]] == [1, 2, 3]
    old = log["entries"][1]
    assert old["id"] == old_id and old["active"] is False
    assert old["superseded_by"] == new["id"] and RFC3339.match(old["superseded_at"])
    assert log["entries"][2]["active"] is True and log["entries"][2]["superseded_by"] is None

    profile = memory.profile("acme", "ash")
    assert profile["items"] == {"active": 2, "superseded": 1, "total": 3}
    assert profile["last_version"] == 3 and RFC3339.match(profile["last_updated"])
    facts = {f["topic"]: f["text"] for f in profile["facts"]}
    assert facts == {
        "meeting_time": "Moved meetings to 2 PM; mornings are now for deep work.",
        "reply_style": "Prefers concise async replies; no calls before lunch.",
    }
    assert profile["tags"] == [{"tag": "communication", "items": 1}]  # "schedule" went with v2
    assert [r["version"] for r in profile["recent"]] == [3, 1]


def test_explicit_supersedes_corrects_a_fact_without_topic(memory: MemoryStore) -> None:
    wrong = remember(memory, "Allergic to shellfish.")
    other = remember(memory, "Allergic to cats as well.")
    fixed = memory.update_memory(
        "acme",
        "ash",
        [{"text": "Allergic to peanuts, not shellfish.", "supersedes": [wrong["id"]]}],
    )["stored"][0]
    assert fixed["superseded"] == [wrong["id"]]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "allergic shellfish")) == [
        "Allergic to peanuts, not shellfish.",
        "Allergic to cats as well.",
    ]
    assert memory.log("acme", "ash")["entries"][0]["superseded_by"] == fixed["id"]
    assert other["id"] in [e["id"] for e in memory.log("acme", "ash")["entries"] if e["active"]]


def test_topic_correction_is_case_and_space_insensitive(memory: MemoryStore) -> None:
    old = remember(memory, "Home airport is LIS.", topic="Home Airport")
    new = remember(memory, "Home airport is OPO now.", topic="  home   airport ")
    assert new["superseded"] == [old["id"]]


def test_topics_and_tags_are_keyed_by_lower_case(memory: MemoryStore) -> None:
    """Keys were casefolded: Masse (mass) and Maße (measures) were one topic, the later
    superseding the other, and a key could outgrow its column (ß -> ss): on PostgreSQL a valid
    120-letter topic or 60-letter tag was an internal_error."""
    mass = remember(memory, "Körpermasse: 72 kg", topic="Masse", tags=["Masse"])
    remember(memory, "Schrankmaße: 2 m x 1 m", topic="Maße", tags=["Maße"])
    assert memory.profile("acme", "ash")["items"]["active"] == 2
    for tag, text in (("Masse", "Körpermasse: 72 kg"), ("MAßE", "Schrankmaße: 2 m x 1 m")):
        assert texts(memory.retrieve_relevant_chunks("acme", "ash", "m kg", tags=[tag])) == [text]
    # Case and blanks still do not make another topic.
    remember(memory, "Körpermasse: 70 kg", topic="  MASSE ")
    assert memory.profile("acme", "ash")["items"]["active"] == 2
    first = memory.log("acme", "ash")["entries"][0]
    assert first["id"] == mass["id"] and first["superseded_by"] is not None
    # The longest topic and tag, each letter of which casefolds to two (ß, ﬃ), or İ.
    for letter in ("ß", "ﬃ", "İ"):
        topic, tag = letter * 120, letter * 60
        stored = remember(memory, f"Long {letter}.", topic=topic, tags=[tag])
        got = memory.retrieve_relevant_chunks("acme", "ash", "long", tags=[tag])
        assert texts(got) == [f"Long {letter}."] and stored["superseded"] == []


def test_same_topic_twice_in_one_call_keeps_the_later(memory: MemoryStore) -> None:
    out = memory.update_memory(
        "acme",
        "ash",
        [
            {"text": "Drinks black coffee.", "topic": "coffee"},
            {"text": "Drinks oat flat whites.", "topic": "coffee"},
        ],
    )["stored"]
    assert out[0]["superseded"] == [] and out[1]["superseded"] == [out[0]["id"]]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "coffee")) == [
        "Drinks oat flat whites."
    ]


def test_on_a_topic_the_latest_observed_fact_wins_whatever_the_order(
    memory: MemoryStore, gateway: c.GatewaySpec
) -> None:
    """A backfilled observation (observed before the topic's current fact) is logged, not made
    the fact: it is stored already superseded by the current fact, which stays retrieved."""
    lisbon = remember(memory, "Numbat lives in Lisbon.", topic="city")
    out = memory.update_memory(
        "acme",
        "ash",
        [{"text": "Numbat lives in Oslo.", "topic": "city", "observed_at": "2001-01-01T00:00:00Z"}],
    )
    check_output(gateway, "update_memory", out)
    oslo = out["stored"][0]
    assert oslo["superseded"] == [] and oslo["superseded_by"] == lisbon["id"]
    assert lisbon["superseded_by"] is None
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "numbat lives")) == [
        "Numbat lives in Lisbon."
    ]
    log = {e["id"]: e for e in memory.log("acme", "ash")["entries"]}
    assert log[oslo["id"]]["active"] is False and log[oslo["id"]]["superseded_by"] == lisbon["id"]
    assert log[oslo["id"]]["observed_at"] == "2001-01-01T00:00:00Z"
    assert log[lisbon["id"]]["active"] is True
    assert memory.profile("acme", "ash")["items"] == {"active": 1, "superseded": 1, "total": 2}
    # A later observation supersedes the fact (the backfill stays superseded by Lisbon).
    porto = remember(memory, "Numbat lives in Porto.", topic="city")
    assert porto["superseded"] == [lisbon["id"]] and porto["superseded_by"] is None
    # In one call the order of the observations does not matter either.
    out = memory.update_memory(
        "acme",
        "ash",
        [
            {"text": "Numbat lives in Faro.", "topic": "city"},
            {
                "text": "Numbat lives in Bergen.",
                "topic": "city",
                "observed_at": "2002-01-01T00:00:00Z",
            },
        ],
    )["stored"]
    assert out[0]["superseded"] == [porto["id"]] and out[0]["superseded_by"] is None
    assert out[1]["superseded"] == [] and out[1]["superseded_by"] == out[0]["id"]
    # The same time: the later recorded wins, as before.
    same = remember(
        memory, "Numbat lives in Braga.", topic="other", observed_at="2003-01-01T00:00:00Z"
    )
    again = remember(
        memory, "Numbat lives in Évora.", topic="other", observed_at="2003-01-01T00:00:00Z"
    )
    assert again["superseded"] == [same["id"]] and again["superseded_by"] is None
    # An explicit correction is one whatever the times.
    fixed = memory.update_memory(
        "acme",
        "ash",
        [
            {
                "text": "Numbat lives in Faro, Algarve.",
                "topic": "city",
                "observed_at": "2000-01-01T00:00:00Z",
                "supersedes": [out[0]["id"]],
            }
        ],
    )["stored"][0]
    assert fixed["superseded"] == [out[0]["id"]] and fixed["superseded_by"] is None
    assert sorted(texts(memory.retrieve_relevant_chunks("acme", "ash", "numbat lives"))) == [
        "Numbat lives in Faro, Algarve.",
        "Numbat lives in Évora.",
    ]
    assert memory.profile("acme", "ash")["items"] == {"active": 2, "superseded": 6, "total": 8}
    if memory.engine.dialect.name == "sqlite":
        check_indexes(memory.engine)  # the backfills never entered the search index


def test_observed_at_in_the_future_is_refused_beyond_the_clock_skew(memory: MemoryStore) -> None:
    from datetime import UTC, datetime, timedelta

    def at(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).isoformat()

    for future in ("9999-12-31T00:00:00Z", at(timedelta(minutes=6))):
        with pytest.raises(GatewayError) as err:
            memory.update_memory(
                "acme",
                "ash",
                [
                    {"text": "Lives in Lisbon.", "topic": "city"},
                    {"text": "X.", "observed_at": future},
                ],
            )
        assert err.value.code == INVALID_ARGUMENTS
        (problem,) = err.value.details["errors"]
        assert problem["path"] == "/observations/1/observed_at"
        assert "future" in problem["message"]
    assert log_versions(memory) == []
    # Within the skew: accepted, and taken as the time of recording (never after it), so that
    # it does not outrank an observation made just after.
    before = now_us()
    ahead = remember(memory, "Lives in Oslo.", topic="city", observed_at=at(timedelta(minutes=4)))
    (entry,) = memory.log("acme", "ash")["entries"]
    assert entry["observed_at"] == entry["recorded_at"]
    assert parse_iso(entry["observed_at"]) >= before
    after = remember(memory, "Lives in Lisbon.", topic="city", observed_at=at(timedelta(0)))
    assert after["superseded"] == [ahead["id"]] and after["superseded_by"] is None
    # A fact stored from the future before such times were refused does not win for good: an
    # observation made now (no observed_at) is the fact.
    with memory.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE memory_items SET observed_at = :t WHERE id = :id"),
            {"t": parse_iso("9999-12-31T00:00:00Z"), "id": after["id"]},
        )
    past = remember(memory, "Lives in Faro.", topic="city", observed_at="2001-01-01T00:00:00Z")
    assert past["superseded_by"] == after["id"]
    now = remember(memory, "Lives in Porto.", topic="city")
    assert now["superseded"] == [after["id"]] and now["superseded_by"] is None
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "lives")) == ["Lives in Porto."]


# ------------------------------------------------------------------ errors: all or nothing


def log_versions(
    memory: MemoryStore, tenant: str = "acme", user: str = "ash"
) -> list[tuple[int, bool]]:
    return [(e["version"], e["active"]) for e in memory.log(tenant, user)["entries"]]


def test_supersedes_foreign_or_unknown_ids_is_not_found_and_writes_nothing(
    memory: MemoryStore,
) -> None:
    mine = remember(memory, "Likes window seats.")
    other_user = remember(memory, "Likes aisle seats.", user="bo")
    other_tenant = remember(memory, "Likes exit rows.", tenant="globex")
    before = log_versions(memory)
    for foreign in (other_user["id"], other_tenant["id"], "mem_doesnotexist"):
        with pytest.raises(GatewayError) as err:
            memory.update_memory(
                "acme",
                "ash",
                [
                    {"text": "A fact written first in the same call.", "topic": "x"},
                    {"text": "Likes middle seats.", "supersedes": [mine["id"], foreign]},
                ],
            )
        assert err.value.code == NOT_FOUND
        assert err.value.details == {"ids": [foreign], "missing": 1}
        # The same message whether the id is unknown or someone else's: nothing leaks.
        assert "bo" not in err.value.message and "globex" not in err.value.message
    assert log_versions(memory) == before
    # The failed calls did not consume versions either.
    assert remember(memory, "Next fact.")["version"] == 2
    assert log_versions(memory, user="bo") == [(1, True)]
    assert log_versions(memory, tenant="globex") == [(1, True)]


def test_a_not_found_answer_names_ten_unknown_ids_at_most(memory: MemoryStore) -> None:
    """The answer does not echo every id a caller made up."""
    unknown = [f"mem_{i:020x}" for i in range(15)]
    with pytest.raises(GatewayError) as err:
        memory.update_memory("acme", "ash", [{"text": "t", "supersedes": unknown}])
    assert err.value.details == {"ids": unknown[:10], "missing": 15}
    assert err.value.message.endswith(unknown[9] + " and 5 more")


def test_superseding_an_already_corrected_fact_is_a_conflict(memory: MemoryStore) -> None:
    v1 = remember(memory, "Lives in Porto.")
    v2 = memory.update_memory(
        "acme", "ash", [{"text": "Lives in Lisbon.", "supersedes": [v1["id"]]}]
    )
    with pytest.raises(GatewayError) as err:
        memory.update_memory("acme", "ash", [{"text": "Lives in Braga.", "supersedes": [v1["id"]]}])
    assert err.value.code == CONFLICT
    assert err.value.details["superseded_by"] == v2["stored"][0]["id"]
    assert len(memory.log("acme", "ash")["entries"]) == 2


@pytest.mark.parametrize(
    ("observations", "fragment"),
    [
        ([], "at least one"),
        ([{"text": "   "}], "non-empty"),
        ([{"text": "x" * 101}], "longer than 100"),
        ([{"text": "ok", "colour": "red"}], "unknown fields"),
        ([{"text": "ok", "observed_at": "yesterday"}], "RFC 3339"),
        ([{"text": "ok", "observed_at": "9999-12-31T23:59:59-14:00"}], "out of range"),
        ([{"text": "ok", "observed_at": "0001-01-01T00:00:00+14:00"}], "out of range"),
        ([{"text": "ok", "tags": "not-a-list"}], "tags"),
        ([{"text": "ok", "tags": ["t" * 61]}], "tag over 60"),
        ([{"text": "ok", "supersedes": ["a", "a"]}], "twice"),
        ([{"text": "nul\x00byte"}], "NUL"),
        ([{"text": "ok", "topic": "t" * 121}], "longer than 120"),
        ("text", "list"),
    ],
)
def test_invalid_observations_are_refused_and_nothing_is_written(
    engine: sa.engine.Engine, observations: Any, fragment: str
) -> None:
    memory = MemoryStore(engine, settings=c.MemorySettings(max_observation_chars=100))
    memory.migrate()
    memory.update_memory("acme", "ash", [{"text": "x" * 100}])  # exactly the limit is fine
    with pytest.raises(GatewayError) as err:
        memory.update_memory("acme", "ash", observations)
    assert err.value.code == INVALID_ARGUMENTS
    assert fragment in err.value.message
    assert log_versions(memory) == [(1, True)]


@pytest.mark.parametrize("top_k", [0, 51, -1, True, "5"])
def test_top_k_out_of_range_is_invalid(memory: MemoryStore, top_k: Any) -> None:
    with pytest.raises(GatewayError) as err:
        memory.retrieve_relevant_chunks("acme", "ash", "coffee", top_k=top_k)
    assert err.value.code == INVALID_ARGUMENTS


# ------------------------------------------------------------------------------ isolation


def test_memory_is_isolated_between_users_and_tenants(memory: MemoryStore) -> None:
    remember(memory, "Ash's locker code is 4471.", topic="locker")
    # Same user id in another tenant, and another user of the same tenant.
    remember(memory, "Prefers email.", tenant="globex", user="ash")
    remember(memory, "Prefers phone calls.", user="bo")

    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "locker code")) == [
        "Ash's locker code is 4471."
    ]
    for tenant, user in (("globex", "ash"), ("acme", "bo"), ("acme", "nobody"), ("globex", "bo")):
        assert memory.retrieve_relevant_chunks(tenant, user, "locker code") == {"chunks": []}
        asked = memory.search_or_ask(tenant, user, "What is Ash's locker code?")
        assert asked == {"answer": NOTHING_FOUND, "found": False, "citations": []}
        assert all("4471" not in e["text"] for e in memory.log(tenant, user)["entries"])
        assert "locker" not in str(memory.profile(tenant, user))
    # Tenant and user are not confused when concatenated differently.
    remember(memory, "Secret plan A.", tenant="ab", user="c")
    assert memory.retrieve_relevant_chunks("a", "bc", "secret plan") == {"chunks": []}
    assert memory.profile("acme", "nobody")["items"] == {"active": 0, "superseded": 0, "total": 0}


MY_ITEMS = (
    "Lunch with Priya on Tuesdays, usually ramen near the office.",
    "Priya leads the Apollo project budget review.",
    "Prefers ramen over sushi; allergic to peanuts.",
    "Flies to Berlin for the Apollo launch in March.",
    "Weekly budget summary goes to Priya on Fridays.",
    "Ramen place on 5th closes early on Mondays.",
)
MY_QUERIES = ("ramen lunch", "Apollo budget Priya", "Berlin launch", "sushi peanuts office")


def test_versions_since_names_the_users_updated_lately(memory: MemoryStore) -> None:
    """What the change poll reads to find memory updates made by other processes."""
    remember(memory, "tea", user="ash")
    remember(memory, "cake", user="ash")
    remember(memory, "email", user="alex")
    remember(memory, "other tenant", tenant="bravo", user="bo")
    found = {(t, u): v for t, u, v, _at in memory.versions_since(["acme"], 0)}
    assert found == {("acme", "ash"): 2, ("acme", "alex"): 1}
    assert memory.versions_since(["acme"], now_us() + 1_000_000) == []


def scores_seen(memory: MemoryStore) -> list[list[tuple[str, float]]]:
    """Every query's ids and unrounded scores, retrieval and search_or_ask."""
    seen = []
    for query in MY_QUERIES:
        got = memory.retrieve_relevant_chunks("acme", "ash", query, top_k=10)["chunks"]
        seen.append([(c["id"], c["score"]) for c in got])
        asked = memory.search_or_ask("acme", "ash", query)
        seen.append([(c["id"], c["score"]) for c in asked["citations"]])
    return seen


def test_other_tenants_memories_never_move_a_users_scores(
    memory: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking statistics are per tenant: what other tenants store, however much and whatever
    words it holds, changes neither the scores (to the last bit) nor the order a user sees, so
    they cannot be used to learn how common a word is in other tenants' memories."""
    from generator.runtime import memory as mem

    monkeypatch.setattr(mem, "shown_score", float)  # compare the engine's unrounded scores
    memory.update_memory("acme", "ash", [{"text": t} for t in MY_ITEMS])
    before = scores_seen(memory)
    assert all(before[::2]), "every query finds something"
    # Other tenants: the same words at very different rates, many rows, longer texts, and a
    # correction (rows leave their index) and a user named like ours.
    for tenant in ("globex", "initech"):
        for user in ("ash", "bo"):
            memory.update_memory(
                tenant,
                user,
                [
                    {"text": f"ramen ramen lunch {n} Priya budget " + "filler words " * (n % 7)}
                    for n in range(60)
                ],
            )
        old = remember(memory, "Apollo Berlin launch.", tenant=tenant, topic="trip")
        remember(memory, "Apollo Berlin launch moved.", tenant=tenant, topic="trip")
        got = memory.retrieve_relevant_chunks(tenant, "ash", "Apollo")["chunks"]
        assert old["id"] not in [c["id"] for c in got]
    assert scores_seen(memory) == before


def test_old_databases_get_one_index_per_tenant(tmp_path: Any) -> None:
    """A SQLite file written before per-tenant indexes (one FTS5 index for every tenant) is
    moved to per-tenant indexes by migrate(), losing nothing, and the old index is dropped."""
    engine = make_engine(str(tmp_path / "old.db"))
    memory = MemoryStore(engine)
    memory.migrate()
    memory.update_memory("acme", "ash", [{"text": t} for t in MY_ITEMS])
    remember(memory, "Ramen is fine; prefers udon now.", topic="noodles")
    remember(memory, "Prefers soba.", topic="noodles")  # supersedes the udon item
    memory.update_memory("globex", "ash", [{"text": f"ramen {n}"} for n in range(30)])
    expected = scores_seen(memory)
    with engine.begin() as conn:  # the layout of those databases, with their data
        for n in (1, 2):
            for kind, name in (("TABLE", "_vocab"), ("TABLE", ""), ("VIEW", "_content")):
                conn.execute(sa.text(f"DROP {kind} memory_fts_{n}{name}"))
        conn.execute(sa.text("DROP TABLE memory_search_indexes"))
        for statement in (
            "CREATE VIEW memory_items_active AS SELECT pk, text, topic, tags "
            "FROM memory_items WHERE superseded_by IS NULL",
            "CREATE VIRTUAL TABLE memory_items_fts USING fts5(text, topic, tags, "
            "content='memory_items_active', content_rowid='pk', tokenize='porter unicode61')",
            "CREATE VIRTUAL TABLE memory_items_fts_vocab USING fts5vocab(memory_items_fts, 'row')",
            "CREATE TABLE memory_items_fts_rows (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "n INTEGER NOT NULL)",
            "INSERT INTO memory_items_fts_rows (id, n) "
            "SELECT 1, count(*) FROM memory_items WHERE superseded_by IS NULL",
            "INSERT INTO memory_items_fts(memory_items_fts) VALUES ('rebuild')",
        ):
            conn.execute(sa.text(statement))
    upgraded = MemoryStore(make_engine(str(tmp_path / "old.db")))
    upgraded.migrate()
    upgraded.migrate()
    assert scores_seen(upgraded) == expected
    assert check_indexes(upgraded.engine) == {"acme": 7, "globex": 30}
    with upgraded.engine.connect() as conn:
        names = set(conn.execute(sa.text("SELECT name FROM sqlite_master")).scalars())
    assert not {n for n in names if n.startswith("memory_items_fts")} | (
        names & {"memory_items_active"}
    )
    remember(upgraded, "Ramen again on Friday.")
    assert "Ramen again on Friday." in texts(
        upgraded.retrieve_relevant_chunks("acme", "ash", "ramen")
    )
    upgraded.engine.dispose()
    engine.dispose()


def test_versions_are_per_user_and_monotonic(memory: MemoryStore) -> None:
    got = []
    for n in range(3):
        got.append(remember(memory, f"Ash fact {n}.")["version"])
        got.append(remember(memory, f"Bo fact {n}.", user="bo")["version"])
    assert got == [1, 1, 2, 2, 3, 3]
    batch = memory.update_memory("acme", "ash", [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    assert [s["version"] for s in batch["stored"]] == [4, 5, 6]


# ------------------------------------------------------------------------------ retrieval


def test_partial_matches_rank_below_fuller_matches(memory: MemoryStore) -> None:
    remember(memory, "Enjoys hiking in the Alps in summer.")
    remember(memory, "Vegetarian; enjoys Italian food, especially pizza.")
    remember(memory, "Italian lessons on Wednesday evenings.")
    got = memory.retrieve_relevant_chunks("acme", "ash", "favourite Italian food?")["chunks"]
    assert [c["text"] for c in got] == [
        "Vegetarian; enjoys Italian food, especially pizza.",
        "Italian lessons on Wednesday evenings.",
    ]
    assert got[0]["score"] > got[1]["score"] > 0


def test_scores_are_plain_decimals_and_the_order_is_the_engines(memory: MemoryStore) -> None:
    """FTS5's bm25 floors the idf of a word that half the index or more contains at 1e-6; in a
    small index every word is that common, and the raw scores read 1e-06. Callers get 4
    decimals and 0.0001 at the least; the order is still the engine's (fuller match first)."""
    remember(memory, "Drinks coffee every morning at 7.", observed_at="2026-01-02T00:00:00Z")
    remember(memory, "Prefers oat milk in coffee.", observed_at="2026-01-01T00:00:00Z")

    def plain(chunks: list[dict[str, Any]]) -> list[float]:
        scores = [chunk["score"] for chunk in chunks]
        assert all(s >= SCORE_FLOOR and round(s, 4) == s for s in scores), scores
        assert "e-" not in json.dumps(chunks)
        return scores

    got = memory.retrieve_relevant_chunks("acme", "ash", "coffee milk")["chunks"]
    assert texts({"chunks": got}) == [
        "Prefers oat milk in coffee.",  # older, but it holds both words
        "Drinks coffee every morning at 7.",
    ]
    plain(got)
    asked = memory.search_or_ask("acme", "ash", "coffee with milk?")
    assert asked["found"] and plain(asked["citations"])
    # With more memories the common-word floor no longer applies: real, ordered scores.
    for n in range(10):
        remember(memory, f"Unrelated note number {n} about the garden.")
    got = memory.retrieve_relevant_chunks("acme", "ash", "coffee milk")["chunks"]
    scores = plain(got)
    assert texts({"chunks": got})[0] == "Prefers oat milk in coffee."
    assert scores[0] > scores[1] > SCORE_FLOOR


def test_shown_scores_round_and_floor() -> None:
    assert [shown_score(x) for x in (1e-06, 2.07725e-06, 0.00004, 0.000151, 0.5, 7.123456)] == [
        SCORE_FLOOR,
        SCORE_FLOOR,
        SCORE_FLOOR,
        0.0002,
        0.5,
        7.1235,
    ]


def test_recency_breaks_ties(memory: MemoryStore) -> None:
    older = remember(memory, "Uses the standing desk.", observed_at="2026-01-01T00:00:00Z")
    newer = remember(memory, "Uses the standing desk.", observed_at="2026-06-01T00:00:00Z")
    same_time = remember(memory, "Uses the standing desk.", observed_at="2026-06-01T00:00:00Z")
    got = memory.retrieve_relevant_chunks("acme", "ash", "standing desk")["chunks"]
    assert [c["id"] for c in got] == [same_time["id"], newer["id"], older["id"]]
    assert len({c["score"] for c in got}) == 1


def test_top_k_and_default(engine: sa.engine.Engine) -> None:
    memory = MemoryStore(engine, settings=c.MemorySettings(default_top_k=2))
    memory.migrate()
    memory.update_memory(
        "acme", "ash", [{"text": f"Book number {n} about sailing."} for n in range(8)]
    )
    assert len(memory.retrieve_relevant_chunks("acme", "ash", "sailing")["chunks"]) == 2
    assert len(memory.retrieve_relevant_chunks("acme", "ash", "sailing", top_k=6)["chunks"]) == 6
    # A default the store cannot serve refused every call that left top_k out: now the store
    # does not start (the compiler refuses such a manifest: GEN106).
    for default in (0, c.MAX_TOP_K + 1):
        with pytest.raises(ValueError, match=f"default_top_k must be from 1 to {c.MAX_TOP_K}"):
            MemoryStore(engine, settings=c.MemorySettings(default_top_k=default))


def test_tags_filter_requires_every_tag(memory: MemoryStore) -> None:
    remember(memory, "Flies TAP to Berlin.", tags=["Travel", "work"])
    remember(memory, "Flies Ryanair to Berlin on holidays.", tags=["travel"])
    remember(memory, "Berlin office is in Mitte.", tags=["work"])
    query = "Berlin"
    assert len(memory.retrieve_relevant_chunks("acme", "ash", query)["chunks"]) == 3
    got = memory.retrieve_relevant_chunks("acme", "ash", query, tags=["travel"])
    assert sorted(texts(got)) == ["Flies Ryanair to Berlin on holidays.", "Flies TAP to Berlin."]
    got = memory.retrieve_relevant_chunks("acme", "ash", query, tags=["work", "TRAVEL"])
    assert texts(got) == ["Flies TAP to Berlin."]
    assert got["chunks"][0]["tags"] == ["Travel", "work"]  # returned as given
    assert memory.retrieve_relevant_chunks("acme", "ash", query, tags=["travel", "x"]) == {
        "chunks": []
    }
    for blank in ("", "  \t"):  # matches nothing: refused rather than dropped, which would widen
        with pytest.raises(GatewayError) as err:
            memory.retrieve_relevant_chunks("acme", "ash", query, tags=["travel", blank])
        assert err.value.code == INVALID_ARGUMENTS
        assert "tags must be non-empty strings" in err.value.message


def test_topic_and_tags_are_searchable(memory: MemoryStore) -> None:
    remember(memory, "Size EU 43.", topic="shoe_size", tags=["clothing"])
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "shoe")) == ["Size EU 43."]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "clothing")) == ["Size EU 43."]


def test_stemming_matches_word_forms(memory: MemoryStore) -> None:
    remember(memory, "Runs along the river before work.")
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "running")) == [
        "Runs along the river before work."
    ]


HOSTILE = [
    '"',
    '""',
    "'",
    "'; DROP TABLE memory_items; --",
    '" OR 1=1 --',
    'meeting" OR "x',
    "NEAR(meeting time)",
    "NEAR/3",
    "meeting AND",
    "OR",
    "AND OR NOT",
    "NOT meeting",
    "*",
    "meet*",
    "^meeting",
    "text:meeting",
    "{text topic}: meeting",
    "((meeting",
    "meeting))",
    "-meeting",
    "+meeting",
    ":",
    "\\",
    "\x00",
    "\u200b",
    "🙂🙂",
    "a & b | !c <-> d",
    "meeting:*",
    "'meeting':A",
    "%_%",
    "m" * 1000,
    " ".join(["meeting"] * 400),
    " ".join(f"w{n}" for n in range(300)),
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_queries_never_raise(
    memory: MemoryStore, gateway: c.GatewaySpec, query: str
) -> None:
    remember(memory, "Takes meetings after 2 PM.", topic="meeting_time")
    result = memory.retrieve_relevant_chunks("acme", "ash", query)
    check_output(gateway, "retrieve_relevant_chunks", result)
    if "meeting" in query and query != "m" * 1000:
        assert texts(result) == ["Takes meetings after 2 PM."], query
    asked = memory.search_or_ask("acme", "ash", query)
    check_output(gateway, "search_or_ask", asked)


def test_query_sanitising_emits_only_quoted_words() -> None:
    terms = query_terms('What "is" NEAR(x y) the user\'s time_zone? AND OR NOT Café ß 🙂 x:*')
    assert terms == ["near", "x", "y", "user", "time", "zone", "café", "ß"]
    assert fts5_match_expression(terms) == (
        '"near" OR "x" OR "y" OR "user" OR "time" OR "zone" OR "café" OR "ß"'
    )
    assert tsquery_expression(terms) == "near | x | y | user | time | zone | café | ß"
    # Anything that is not a plain word is dropped rather than passed on.
    assert fts5_match_expression(['a"b', "ok", "x y", ""]) == '"ok"'
    assert query_terms("the and of what") == []


WORDS_AS_TYPED = {
    "Hauptstraße": "Lives on the Hauptstraße in Berlin.",
    "İstanbul": "Visited İstanbul last spring.",
    "Οδυσσέας": "Has a cat called Οδυσσέας.",
    "Ελλάς": "Grew up in Ελλάς.",
}


@pytest.mark.parametrize("word", list(WORDS_AS_TYPED))
def test_a_word_is_found_as_it_was_stored(memory: MemoryStore, word: str) -> None:
    """The query's words reach the engine as the user typed them, so the engine folds them as
    it folded the text (casefold() made ß "ss", İ "i" + "stanbul", ς "σ": found nothing)."""
    memory.update_memory("acme", "ash", [{"text": t} for t in WORDS_AS_TYPED.values()])
    expected = [WORDS_AS_TYPED[word]]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", word)) == expected
    assert texts(memory.search_or_ask("acme", "ash", f"Where is {word}?")) == expected
    (term,) = query_terms(word)
    assert term.lower() == word.lower()


@pytest.mark.parametrize(
    ("query", "sqlite", "postgresql"),
    [
        ("cafe", True, False),  # SQLite drops Latin accents
        ("CAFÉ", True, True),
        ("οδυσσεας", False, False),  # neither drops Greek ones
        ("ΟΔΥΣΣΈΑΣ", True, False),  # final sigma: see test_a_word_is_found_as_it_was_stored
    ],
)
def test_which_accents_the_engines_drop(
    memory: MemoryStore, query: str, sqlite: bool, postgresql: bool
) -> None:
    """As the README says (it said SQLite drops accents: not Greek ones)."""
    memory.update_memory("acme", "ash", [{"text": "Likes café."}, {"text": "Has Οδυσσέας."}])
    found = bool(memory.retrieve_relevant_chunks("acme", "ash", query)["chunks"])
    assert found is (sqlite if memory.engine.dialect.name == "sqlite" else postgresql)


# No punctuation in 76 letters: one token of the engines before CJK runs became bigrams.
JAPANESE_SENTENCE = (
    "私は毎朝七時に起きてコーヒーを飲みながら新聞を読みそれから会社まで自転車で通勤しています"
    "が雨の日はバスに乗ることにしていますし週末は家族と公園に行きます"
)
CJK_ITEMS = {
    "sushi": "Loves sushi: 寿司が大好きです",
    "tea": "喜欢喝绿茶",
    "seoul": "서울에서 살아요",
    "routine": JAPANESE_SENTENCE,
}


@pytest.mark.parametrize(
    ("query", "item"),
    [
        ("寿司", "sushi"),
        ("大好き", "sushi"),
        ("寿司が好き", "sushi"),  # 寿司 and が好 would do; 好き is in the item too
        ("绿茶", "tea"),
        ("喝", None),  # one letter inside a run: no bigram holds it alone
        ("서울", "seoul"),
        ("自転車", "routine"),
        (JAPANESE_SENTENCE, "routine"),
        (f"「{JAPANESE_SENTENCE}」?", "routine"),
    ],
)
def test_cjk_words_are_found_inside_a_run(
    memory: MemoryStore, query: str, item: str | None
) -> None:
    """Chinese, Japanese and Korean runs are indexed and searched as overlapping bigrams, so a
    word inside a sentence is found (a run was one token: only the whole run matched, and a
    query term over 64 letters was dropped, so a long sentence was not found even by itself)."""
    memory.update_memory("acme", "ash", [{"text": t} for t in CJK_ITEMS.values()])
    remember(memory, "Size 27.", topic="靴のサイズ", tags=["服装"])
    got = texts(memory.retrieve_relevant_chunks("acme", "ash", query))
    assert got[:1] == ([CJK_ITEMS[item]] if item else [])
    asked = memory.search_or_ask("acme", "ash", query)
    assert asked["found"] is bool(item)
    assert texts(asked)[:1] == got[:1]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "サイズ")) == ["Size 27."]
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "服装")) == ["Size 27."]


def bigrams_only(value: str | None) -> str | None:
    """memory_search_text() of schema version 3: CJK bigrams, no NFKC."""
    if value is None:
        return None
    return memory_module._CJK_INNER.sub(r"\1 \1", memory_module._CJK_RUN.sub(r" \g<0> ", value))


OLD_LAYOUTS = {
    # Before CJK bigrams: the columns as they are.
    "runs": ("{}", ""),
    # Schema version 3: bigrams through memory_search_text(), no NFKC.
    "bigrams": (
        "memory_search_text({})",
        "CREATE FUNCTION memory_search_text(value text) RETURNS text LANGUAGE sql IMMUTABLE "
        "STRICT AS $$SELECT regexp_replace(regexp_replace(value, "
        f"'{memory_module._CJK_RUN_RE}', ' \\& ', 'g'), '{memory_module._CJK_INNER_RE}', "
        "'\\1 \\1', 'g')$$",
    ),
}


@pytest.mark.parametrize("layout", list(OLD_LAYOUTS))
def test_indexes_from_before_cjk_bigrams_are_rebuilt(db_url: str, layout: str) -> None:
    """A database whose indexes hold CJK runs as single tokens (the layout before bigrams), or
    bigrams of text not in NFKC (schema version 3), is re-indexed by migrate(), once, on both
    stores; nothing else changes."""
    wrap, pg_function = OLD_LAYOUTS[layout]
    engine = make_engine(db_url)
    memory = MemoryStore(engine)
    memory.migrate()
    memory.update_memory("acme", "ash", [{"text": t} for t in CJK_ITEMS.values()])
    remember(memory, "Prefers green tea.", topic="お茶")
    remember(memory, "Prefers oolong.", topic="お茶")  # supersedes the green tea
    memory.update_memory("globex", "bo", [{"text": "喜欢喝绿茶"}, {"text": "Tea at four."}])
    remember(memory, unicodedata.normalize("NFD", "서울에서 살아요"), user="cy")
    remember(memory, "Körpermasse: 72 kg", user="cy", topic="Maße", tags=["Straße", "STRASSE"])
    english = scores_seen(memory)
    with engine.begin() as conn:  # the layout of those databases, with their data
        # Keys were casefolded: one tag row for both tags.
        conn.execute(sa.text("UPDATE memory_items SET topic_key = 'masse' WHERE topic = 'Maße'"))
        conn.execute(sa.text("DELETE FROM memory_item_tags WHERE tag_key = 'straße'"))
        if memory.engine.dialect.name == "sqlite":
            conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
                "memory_search_text", 1, bigrams_only, deterministic=True
            )
            for n in conn.execute(sa.text("SELECT n FROM memory_search_indexes")).scalars():
                fts = f"memory_fts_{n}"
                conn.execute(sa.text(f"DROP VIEW {fts}_content"))
                columns = ", ".join(f"{wrap.format(c)} AS {c}" for c in ("text", "topic", "tags"))
                conn.execute(
                    sa.text(
                        f"CREATE VIEW {fts}_content AS SELECT pk, {columns} "
                        "FROM memory_items WHERE superseded_by IS NULL AND tenant_id = "
                        f"(SELECT tenant_id FROM memory_search_indexes WHERE n = {n})"
                    )
                )
                conn.execute(sa.text(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')"))
        else:
            topic = "coalesce(topic, '')"
            for statement in (
                "ALTER TABLE memory_items DROP COLUMN search_vector",
                f"DROP FUNCTION {memory_module._SEARCH_TEXT}(text)",
                *([pg_function] if pg_function else []),
                "ALTER TABLE memory_items ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
                f"setweight(to_tsvector('english'::regconfig, {wrap.format('text')}), 'A') || "
                "setweight(to_tsvector('english'::regconfig, "
                f"{wrap.format(topic)}), 'B') || "
                f"setweight(to_tsvector('english'::regconfig, {wrap.format('tags')}), 'B')) "
                "STORED",
                "CREATE INDEX memory_items_search ON memory_items USING GIN (search_vector) "
                "WHERE superseded_by IS NULL",
            ):
                conn.execute(sa.text(statement))
    if layout == "runs":
        assert texts(memory.retrieve_relevant_chunks("acme", "ash", "寿司")) == []  # not found
    assert texts(memory.retrieve_relevant_chunks("acme", "cy", "서울")) == []  # not found
    upgraded = MemoryStore(make_engine(db_url))
    upgraded.migrate()
    upgraded.migrate()
    for tenant, user, query, expected in (
        ("acme", "ash", "寿司", CJK_ITEMS["sushi"]),
        ("acme", "ash", "自転車", JAPANESE_SENTENCE),
        ("acme", "ash", "お茶", "Prefers oolong."),
        ("globex", "bo", "绿茶", "喜欢喝绿茶"),
        ("acme", "cy", "서울", unicodedata.normalize("NFD", "서울에서 살아요")),
    ):
        assert texts(upgraded.retrieve_relevant_chunks(tenant, user, query)) == [expected]
    assert scores_seen(upgraded) == english
    if upgraded.engine.dialect.name == "sqlite":
        assert check_indexes(upgraded.engine) == {"acme": 7, "globex": 2}
    # Keys recomputed: Masse is another topic than Maße, the tags are two.
    for tags in (["Straße"], ["strasse"], ["Straße", "strasse"]):
        got = upgraded.retrieve_relevant_chunks("acme", "cy", "kg", tags=tags)
        assert texts(got) == ["Körpermasse: 72 kg"], tags
    remember(upgraded, "Schrank: 2 m", user="cy", topic="Masse")
    assert upgraded.profile("acme", "cy")["items"]["active"] == 3
    remember(upgraded, "寿司よりラーメン。")
    assert len(texts(upgraded.retrieve_relevant_chunks("acme", "ash", "寿司"))) == 2
    upgraded.engine.dispose()
    engine.dispose()


NFD_ITEMS = {
    "Réunion": "Réunion au café",
    "höre": "Ich höre gern Musik",
    "서울": "서울에서 살아요",
    "ぶどう": "ぶどうが大好きです",
    "FULLWIDTH": "ＦＵＬＬＷＩＤＴＨ letters",
    "ラーメン": "ﾗｰﾒﾝが好き",
}


@pytest.mark.parametrize("form", ["NFC", "NFD"])
@pytest.mark.parametrize("word", list(NFD_ITEMS))
def test_a_word_is_found_whatever_its_unicode_form(
    memory: MemoryStore, word: str, form: Literal["NFC", "NFD"]
) -> None:
    """The same letters as other code points (accents apart, NFD, as a Mac types them; Hangul
    or kana from some input methods; full-width and half-width forms) are found both ways:
    text stored in NFD was found by no NFC query, on PostgreSQL not even by itself."""
    memory.update_memory(
        "acme", "ash", [{"text": unicodedata.normalize("NFD", t)} for t in NFD_ITEMS.values()]
    )
    memory.update_memory("acme", "bo", [{"text": t} for t in NFD_ITEMS.values()])
    query = unicodedata.normalize(form, word)
    for user in ("ash", "bo"):
        got = texts(memory.retrieve_relevant_chunks("acme", user, query))
        assert got == [unicodedata.normalize("NFD" if user == "ash" else "NFC", NFD_ITEMS[word])]


VOWELLED = {
    "محمد": "اسمي مُحَمَّد",
    "مُحَمَّد": "اسمي محمد وأنا من القاهرة",
    "שלום": "אמרתי שָׁלוֹם לכולם",
    "שָׁלוֹם": "שלום עליכם",
}


@pytest.mark.parametrize("query", list(VOWELLED))
def test_arabic_and_hebrew_are_found_with_or_without_vowel_marks(
    memory: MemoryStore, query: str
) -> None:
    """A word written with its vowel marks and without them is one word (SQLite did not find
    مُحَمَّد by محمد, and a vowelled query matched letter by letter: ذَهَبْتُ إِلَى الْمَدْرَسَةِ too)."""
    memory.update_memory(
        "acme", "ash", [{"text": t} for t in [*VOWELLED.values(), "ذَهَبْتُ إِلَى الْمَدْرَسَةِ"]]
    )
    got = texts(memory.retrieve_relevant_chunks("acme", "ash", query))
    word = unicodedata.normalize("NFKC", query)
    expected = [t for t in VOWELLED.values() if search_text(word) in search_text(t)]
    assert len(expected) == 2 and sorted(got) == sorted(expected)


def test_search_text_in_postgresql_is_the_same_as_in_python(pg_url: str) -> None:
    """PostgreSQL's memory_search_text() (its index) and search_text() (the query, and
    SQLite's index) rewrite any text alike."""
    import random

    engine = make_engine(pg_url)
    MemoryStore(engine).migrate()
    edges = [
        chr(c)
        for a, b in memory_module._CJK_LETTERS
        for c in (a - 1, a, b, b + 1)
        if not 0xD800 <= c <= 0xDFFF  # surrogates are no text
    ]
    letters = [
        "寿",
        "司",
        "が",
        "。",
        "、",
        "・",
        "x",
        " ",
        "Y",
        "1",
        "_",
        "'",
        "\\",
        "\u0301",
        "🙂",
        "م",
        "\u064f",  # ARABIC DAMMA
        "\u0640",  # ARABIC TATWEEL
        "ש",
        "\u05c1",  # HEBREW POINT SHIN DOT
        "e\u0301",
        "ｶ",
        "\uff9e",  # HALFWIDTH KATAKANA VOICED SOUND MARK
        "\u1100",
        "\u1161",  # HANGUL JUNGSEONG A
    ]
    letters += edges
    r = random.Random(5)
    samples = [
        "",
        "寿",
        "寿司",
        "a寿b",
        *("".join(r.choices(letters, k=r.randint(1, 12))) for _ in range(400)),
    ]
    with engine.connect() as conn:
        got = [
            conn.execute(
                sa.text(f"SELECT {memory_module._SEARCH_TEXT}(:s)"), {"s": sample}
            ).scalar_one()
            for sample in samples
        ]
    assert got == [search_text(sample) for sample in samples]
    engine.dispose()


def test_a_long_word_is_found_by_itself(memory: MemoryStore) -> None:
    """The engines index a word of any length; the query kept none over 64 letters."""
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2
    remember(memory, f"Once spelt {word} in a bee.")
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", word)) == [
        f"Once spelt {word} in a bee."
    ]


def test_only_stop_words_find_nothing(memory: MemoryStore) -> None:
    remember(memory, "What it is, is what it was.")
    assert memory.retrieve_relevant_chunks("acme", "ash", "what is it?") == {"chunks": []}


# ------------------------------------------------------------------------------ answers


def test_search_or_ask_says_plainly_when_memory_has_nothing(memory: MemoryStore) -> None:
    assert memory.search_or_ask("acme", "ash", "What is Ash's favourite colour?") == {
        "answer": NOTHING_FOUND,
        "found": False,
        "citations": [],
    }
    remember(memory, "Prefers window seats on long flights.")
    remember(memory, "Prefers tea to coffee.")
    # Only question-framing words ("prefer", "user") match: not an answer.
    asked = memory.search_or_ask("acme", "ash", "What music does the user prefer?")
    assert asked["found"] is False and asked["citations"] == []
    assert "nothing" in asked["answer"].lower()
    # But a question that is only framing words still gets an answer.
    asked = memory.search_or_ask("acme", "ash", "What does the user prefer?")
    assert asked["found"] is True and len(asked["citations"]) >= 1


def test_a_term_in_most_items_is_not_evidence(memory: MemoryStore) -> None:
    memory.update_memory(
        "acme",
        "ash",
        [{"text": f"Ash said fact number {n} about gardening."} for n in range(10)]
        + [{"text": "Ash drives an electric Renault."}],
    )
    # "ash" is in every item: on its own it does not make an item relevant.
    asked = memory.search_or_ask("acme", "ash", "What is Ash's blood type?")
    assert asked["found"] is False
    asked = memory.search_or_ask("acme", "ash", "What car does Ash drive?")
    assert asked["found"] is True
    assert asked["citations"][0]["text"] == "Ash drives an electric Renault."


JAPANESE_DIARY = [
    "ソウルに住んでいます。",
    "今日は晴れです。",
    "明日は会議があります。",
    "好きな紅茶はアールグレイです。",
    "電車で通勤しています。",
    "妻の名前は花子。",
    "毎朝七時に起きる。",
    "ピアノを習っている。",
    "週末はよく山に登ります。",
    "辛い料理が苦手。",
    "車は持っていない。",
    "仕事はエンジニア。",
    "ぶどうが大好きです。",
]
KOREAN_DIARY = [
    "서울에서 살아요.",
    "오늘은 맑아요.",
    "내일 회의가 있어요.",
    "좋아하는 차는 얼그레이예요.",
    "기차로 출근해요.",
]


@pytest.mark.parametrize(
    ("diary", "question", "answer"),
    [
        (JAPANESE_DIARY, "誕生日はいつですか？", None),  # shared 日は, です with 今日は晴れです
        (JAPANESE_DIARY, "好きな映画は何ですか？", None),  # 好き: "favourite"
        (JAPANESE_DIARY, "兄弟は何人いますか？", None),  # ています, ます
        (JAPANESE_DIARY, "どこで働いていますか？", None),
        (JAPANESE_DIARY, "どこに住んでいますか？", "ソウルに住んでいます。"),
        (JAPANESE_DIARY, "好きな紅茶は？", "好きな紅茶はアールグレイです。"),
        (JAPANESE_DIARY, "妻の名前は？", "妻の名前は花子。"),
        (JAPANESE_DIARY, "車を持っていますか？", "車は持っていない。"),
        (JAPANESE_DIARY, "ぶどう", "ぶどうが大好きです。"),  # hiragana only: all of it
        (JAPANESE_DIARY, "いつですか", None),
        (KOREAN_DIARY, "어디에서 일해요?", None),  # 에서, 해요: endings
        (KOREAN_DIARY, "생일이 언제예요?", None),  # 예요
        (KOREAN_DIARY, "좋아하는 음식이 뭐예요?", None),  # 좋아: "favourite"
        (KOREAN_DIARY, "어디에 살아요?", "서울에서 살아요."),
        (KOREAN_DIARY, "회의는 언제예요?", "내일 회의가 있어요."),
    ],
)
def test_cjk_grammar_is_not_evidence(
    memory: MemoryStore, diary: list[str], question: str, answer: str | None
) -> None:
    """Particles and endings (です, ます, の名, 예요, 에서) matched nearly every Japanese or
    Korean item, so search_or_ask answered unrelated questions from them (6 of 7 found)."""
    memory.update_memory("acme", "ash", [{"text": t} for t in diary])
    asked = memory.search_or_ask("acme", "ash", question)
    assert asked["found"] is (answer is not None), asked["answer"]
    if answer is not None:
        assert texts(asked)[0] == answer


def test_a_long_cjk_question_keeps_its_subject(memory: MemoryStore) -> None:
    """A query keeps 24 terms; they were the first 24, and the particles and endings of a long
    Japanese question filled them before its subject (公園, park) came: only the rain was
    found. Grammar pairs now go first."""
    question = (
        "私が以前あなたに話したことがあると思うのですが、"
        "毎週末によく散歩している近所の公園の名前は何でしたか？"
    )
    terms = query_terms(question)
    assert len(terms) == memory_module.MAX_QUERY_TERMS and "公園" in terms
    memory.update_memory(
        "acme", "ash", [{"text": "近所の公園は代々木公園"}, {"text": "明日は雨です"}]
    )
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", question)) == [
        "近所の公園は代々木公園"
    ]
    assert texts(memory.search_or_ask("acme", "ash", question)) == ["近所の公園は代々木公園"]
    english = " ".join(f"w{n}" for n in range(30))  # no grammar: the first 24, as before
    assert query_terms(english) == [f"w{n}" for n in range(24)]


def test_grammar_pairs() -> None:
    assert memory_module.grammar_pairs("誕生日はいつですか") == {
        "日は",
        "はい",
        "いつ",
        "つで",
        "です",
        "すか",
    }
    assert memory_module.grammar_pairs("猫が好き。ソウルに") == {"が好", "ルに"}
    assert memory_module.grammar_pairs("고양이 이름이 뭐예요") == {"양이", "름이", "예요"}
    assert memory_module.grammar_pairs("我的猫叫什么名字 ok") == set()


def test_the_users_own_name_is_not_evidence_in_a_small_memory(memory: MemoryStore) -> None:
    """With a few items, no word is common enough to be discounted; the user's own id still
    says only whom the question is about."""
    memory.update_memory(
        "acme",
        "ash",
        [{"text": "Ash prefers meetings in the morning."}, {"text": "Ash drinks oat milk."}],
    )
    for question in ("What is Ash's shoe size?", "Does Ash have a dog?"):
        asked = memory.search_or_ask("acme", "ash", question)
        assert asked["found"] is False, question
    asked = memory.search_or_ask("acme", "ash", "What milk does Ash drink?")
    assert asked["found"] is True
    assert texts(asked) == ["Ash drinks oat milk."]
    # A question about nothing but the user still gets what memory holds.
    assert memory.search_or_ask("acme", "ash", "Tell me about Ash")["found"] is True


def test_answer_quotes_the_matching_sentences_of_a_long_item() -> None:
    answerer = ExtractiveAnswerer()
    chunk = {
        "id": "mem_1",
        "text": "Lives in Lisbon. Has a dog called Pixel. The dog walker comes at noon. Likes jazz",
        "score": 3.0,
        "observed_at": "2026-05-01T10:00:00Z",
    }
    answer = answerer.answer("When does the dog walker come?", [chunk])
    quoted = "Has a dog called Pixel. The dog walker comes at noon (noted 2026-05-01)."
    assert answer == Answer(
        text="From memory: " + quoted,
        found=True,
        used=("mem_1",),
    )
    weak = {**chunk, "id": "mem_2", "text": "Weak.", "score": 1.0}
    strong = {**chunk, "id": "mem_3", "text": "Also strong.", "score": 2.5}
    answer = answerer.answer("dog", [chunk, strong, weak])
    assert answer.used == ("mem_1", "mem_3")
    assert "Also noted: Also strong (noted 2026-05-01)." in answer.text
    assert answerer.answer("anything", []) == Answer(text=NOTHING_FOUND, found=False)


class RecordingAnswerer:
    """A stand-in for a language-model answerer: records what it was given."""

    def __init__(self, reply: Answer | Exception) -> None:
        self.reply = reply
        self.calls: list[tuple[str, list[Mapping[str, Any]]]] = []

    def answer(self, question: str, chunks: Sequence[Mapping[str, Any]]) -> Answer:
        self.calls.append((question, list(chunks)))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_a_plugged_answerer_gets_relevant_chunks_and_can_only_cite_them(
    engine: sa.engine.Engine, gateway: c.GatewaySpec
) -> None:
    plugged = RecordingAnswerer(Answer(text="x", found=True))
    assert isinstance(plugged, Answerer)
    memory = MemoryStore(engine, answerer=plugged)
    memory.migrate()
    coffee = remember(memory, "Coffee: oat flat white.")
    remember(memory, "Tea: green, afternoons only.")

    plugged.reply = Answer(text="Oat flat white.", found=True, used=(coffee["id"], "mem_forged"))
    asked = memory.search_or_ask("acme", "ash", "How does Ash take coffee?")
    check_output(gateway, "search_or_ask", asked)
    assert asked["answer"] == "Oat flat white."
    assert [c["id"] for c in asked["citations"]] == [coffee["id"]]  # the forged id is dropped
    question, chunks = plugged.calls[-1]
    assert question == "How does Ash take coffee?"
    assert [c["id"] for c in chunks] == [coffee["id"]]

    # Claiming an answer without citing a memory item is not an answer.
    plugged.reply = Answer(text="Probably espresso.", found=True, used=("mem_forged",))
    asked = memory.search_or_ask("acme", "ash", "How does Ash take coffee?")
    assert asked == {"answer": NOTHING_FOUND, "found": False, "citations": []}

    # A failing answerer becomes the opaque internal error.
    plugged.reply = RuntimeError("model endpoint said: token sk-secret expired")
    with pytest.raises(GatewayError) as err:
        memory.search_or_ask("acme", "ash", "How does Ash take coffee?")
    assert err.value.code == INTERNAL_ERROR and "sk-secret" not in err.value.message


# ------------------------------------------------------------------------------ resources


def test_log_pages_oldest_first(memory: MemoryStore) -> None:
    memory.update_memory("acme", "ash", [{"text": f"Fact {n}."} for n in range(7)])
    page = memory.log("acme", "ash", limit=3)
    assert [e["version"] for e in page["entries"]] == [1, 2, 3]
    assert page["next_after_version"] == 3
    page = memory.log("acme", "ash", after_version=6, limit=3)
    assert [e["version"] for e in page["entries"]] == [7]
    assert page["next_after_version"] is None


def test_migrate_is_idempotent_and_keeps_data(memory: MemoryStore) -> None:
    remember(memory, "Keeps bees.")
    memory.migrate()
    memory.migrate()
    assert texts(memory.retrieve_relevant_chunks("acme", "ash", "bees")) == ["Keeps bees."]


def test_the_change_polls_read_of_recent_users_is_indexed(memory: MemoryStore) -> None:
    """Each poll reads the users of listening tenants updated in the last minute: an index
    range, not every user of the tenant (a database made before the index gains it)."""
    engine = memory.engine
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX memory_user_state_recent"))
    memory.migrate()
    indexes = sa.inspect(engine).get_indexes("memory_user_state")
    assert {"name": "memory_user_state_recent", "columns": ["tenant_id", "updated_at"]} in [
        {"name": i["name"], "columns": i["column_names"]} for i in indexes
    ]
    remember(memory, "Keeps bees.")
    assert [(t, u, v) for t, u, v, _ in memory.versions_since(["acme"], 0)] == [("acme", "ash", 1)]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = " ".join(
                str(row[-1])
                for row in conn.execute(
                    sa.text(
                        "EXPLAIN QUERY PLAN SELECT user_id FROM memory_user_state "
                        "WHERE tenant_id IN ('acme', 'other') AND updated_at >= 5"
                    )
                )
            )
        assert "memory_user_state_recent" in plan, plan


def test_observed_at_accepts_offsets_and_datetimes(memory: MemoryStore) -> None:
    from datetime import UTC, datetime

    remember(memory, "Offset time.", observed_at="2026-03-01T10:00:00+02:00")
    remember(memory, "Datetime object.", observed_at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC))
    remember(memory, "Fractional.", observed_at="2026-03-03T08:30:00.250Z")
    got = {e["text"]: e["observed_at"] for e in memory.log("acme", "ash")["entries"]}
    assert got == {
        "Offset time.": "2026-03-01T08:00:00Z",
        "Datetime object.": "2026-03-02T08:30:00Z",
        "Fractional.": "2026-03-03T08:30:00.25Z",
    }


# ------------------------------------------------------------------------------ SQLite pruning


def test_pruned_ranking_equals_the_full_ranking(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MaxScore-style pruning of SQLite retrieval never changes the result."""
    import random

    from generator.runtime import memory as mem

    # Small thresholds so that a few hundred items exercise pruning and capped counts.
    monkeypatch.setattr(mem, "PRUNE_MIN_ROWS", 10)
    monkeypatch.setattr(mem, "PRUNE_COUNT_MIN", 40)
    pruned_plans: list[list[str]] = []
    real = mem.MemoryStore._essential_terms

    def spy(*args: Any) -> list[str] | None:
        plan = real(*args)
        if plan is not None:
            pruned_plans.append(plan)
        return plan

    monkeypatch.setattr(mem.MemoryStore, "_essential_terms", staticmethod(spy))
    monkeypatch.setattr(mem, "shown_score", float)  # compare the engine's unrounded scores
    engine = make_engine(str(tmp_path / "prune.db"))
    memory = MemoryStore(engine)
    memory.migrate()
    r = random.Random(3)
    common = ["meeting", "lunch", "prefers", "project", "office"]
    rare = [f"{name}{n}" for name in ("ramen", "berlin", "priya", "apollo") for n in range(10)]

    def text() -> str:
        words = [w for w in common if r.random() < 0.3] + r.sample(rare, r.randint(1, 2))
        words += [r.choice(["a", "the", "with", "notes", "later"]) for _ in range(r.randint(0, 6))]
        r.shuffle(words)
        return " ".join(words)

    for user in ("ash", "bo"):
        for _ in range(15):
            memory.update_memory(
                "acme",
                user,
                [
                    {"text": text(), "tags": r.sample(["x", "y"], r.randint(0, 2))}
                    for _ in range(20)
                ],
            )
    queries = [
        " ".join(r.sample(common, r.randint(1, 3)) + r.sample(rare, r.randint(0, 2)))
        for _ in range(60)
    ]
    for query in queries:
        for k, tags in ((5, None), (1, None), (12, ["x"])):
            got = memory.retrieve_relevant_chunks("acme", "ash", query, top_k=k, tags=tags)
            expected = full_ranking(engine, query, k, tags or [])
            assert [c["id"] for c in got["chunks"]] == [e[0] for e in expected], query
            # Same terms, summed in another order: equal to the last bits of a double (the
            # engine's scores, which callers see rounded: see the shown_score patch below).
            for chunk, (_, score) in zip(got["chunks"], expected, strict=True):
                assert chunk["score"] == pytest.approx(score, rel=1e-12, abs=0)
    assert len(pruned_plans) >= 10  # pruning did happen, and often


def full_ranking(
    engine: sa.engine.Engine, query: str, k: int, tags: list[str]
) -> list[tuple[str, float]]:
    """The unpruned reference: every matching row of ash scored, then sorted."""
    tag_sql = "".join(
        " AND EXISTS (SELECT 1 FROM memory_item_tags t "
        f"WHERE t.item_pk = m.pk AND t.tag_key = '{t}')"
        for t in tags
    )
    with engine.connect() as conn:
        fts = index_of(conn, "acme")
        sql = (
            f"SELECT m.id, -bm25({fts}, 1.0, 0.5, 0.5) AS score FROM {fts} "
            f"CROSS JOIN memory_items m ON m.pk = {fts}.rowid "
            f"WHERE {fts} MATCH :q AND m.tenant_id = 'acme' AND m.user_id = 'ash' "
            f"AND m.superseded_by IS NULL{tag_sql} "
            "ORDER BY score DESC, m.observed_at DESC, m.version DESC LIMIT :k"
        )
        rows = conn.execute(
            sa.text(sql), {"q": fts5_match_expression(query_terms(query)), "k": k}
        ).all()
    return [(str(row[0]), float(row[1])) for row in rows]


def test_many_ties_are_ordered_by_observed_at_then_version(memory: MemoryStore) -> None:
    # 40 identical items (one score), observed in shuffled order: the newest observations win,
    # however many rows share the k-th score.
    import random

    days = list(range(1, 41))
    random.Random(5).shuffle(days)
    memory.update_memory(
        "acme",
        "ash",
        [
            {
                "text": "Waters the orchids.",
                "observed_at": f"2026-01-{(d - 1) % 28 + 1:02d}T0{d // 28}:00:00Z",
            }
            for d in days[:20]
        ],
    )
    memory.update_memory(
        "acme",
        "ash",
        [
            {
                "text": "Waters the orchids.",
                "observed_at": f"2026-01-{(d - 1) % 28 + 1:02d}T0{d // 28}:00:00Z",
            }
            for d in days[20:]
        ],
    )
    got = memory.retrieve_relevant_chunks("acme", "ash", "orchids", top_k=5)["chunks"]
    stamps = [c["observed_at"] for c in got]
    everything = [e["observed_at"] for e in memory.log("acme", "ash")["entries"]]
    assert stamps == sorted(everything, reverse=True)[:5]


def index_of(conn: sa.Connection, tenant: str) -> str:
    """The name of the tenant's SQLite search index."""
    n = conn.execute(
        sa.text("SELECT n FROM memory_search_indexes WHERE tenant_id = :t"), {"t": tenant}
    ).scalar_one()
    return f"memory_fts_{n}"


def check_indexes(engine: sa.engine.Engine) -> dict[str, int]:
    """Every tenant's index checked by FTS5 against its content (the tenant's active items, row
    count included: raises if they disagree) and against the row count the store keeps."""
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for tenant, n, kept in conn.execute(
            sa.text("SELECT tenant_id, n, row_count FROM memory_search_indexes")
        ).all():
            fts = f"memory_fts_{n}"
            conn.execute(sa.text(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)"))
            active = conn.execute(
                sa.text(
                    "SELECT count(*) FROM memory_items WHERE superseded_by IS NULL "
                    "AND tenant_id = :t"
                ),
                {"t": tenant},
            ).scalar_one()
            indexed = conn.execute(sa.text(f"SELECT count(*) FROM {fts}")).scalar_one()
            assert kept == active == indexed, tenant
            counts[tenant] = kept
    return counts


def test_fts_row_count_follows_writes(tmp_path: Any) -> None:
    """bm25's N, kept by the store for pruning, always equals the rows in the tenant's index."""
    engine = make_engine(str(tmp_path / "n.db"))
    memory = MemoryStore(engine)
    memory.migrate()
    a = remember(memory, "One.", topic="t")
    remember(memory, "Two.", topic="t")
    memory.update_memory("acme", "bo", [{"text": "Three."}, {"text": "Four.", "topic": "u"}])
    memory.update_memory("acme", "bo", [{"text": "Five.", "topic": "u"}])
    memory.update_memory("globex", "bo", [{"text": "Six."}, {"text": "Seven.", "topic": "u"}])
    with pytest.raises(GatewayError):
        memory.update_memory("acme", "ash", [{"text": "x", "supersedes": [a["id"]]}])
    with pytest.raises(GatewayError):  # a new tenant's failed first write leaves no index
        memory.update_memory("initech", "ash", [{"text": "x", "supersedes": [a["id"]]}])
    memory.migrate()
    assert check_indexes(engine) == {"acme": 3, "globex": 2}


def test_porter_stem_matches_the_fts5_tokenizer_in_use() -> None:
    """Pruning reads FTS5's vocabulary by stem: porter_stem must stem as SQLite does."""
    import random
    import sqlite3

    from generator.runtime.memory import porter_stem

    suffixes = [
        "",
        "s",
        "es",
        "ies",
        "sses",
        "ed",
        "eed",
        "ing",
        "ational",
        "tional",
        "enci",
        "anci",
        "izer",
        "logi",
        "bli",
        "alli",
        "entli",
        "eli",
        "ousli",
        "ization",
        "ation",
        "ator",
        "alism",
        "iveness",
        "fulness",
        "ousness",
        "aliti",
        "iviti",
        "biliti",
        "icate",
        "ative",
        "alize",
        "iciti",
        "ical",
        "ful",
        "ness",
        "al",
        "ance",
        "ence",
        "er",
        "ic",
        "able",
        "ible",
        "ant",
        "ement",
        "ment",
        "ent",
        "ion",
        "ou",
        "ism",
        "ate",
        "iti",
        "ous",
        "ive",
        "ize",
        "y",
        "e",
        "ll",
        "at",
        "bl",
        "iz",
    ]
    r = random.Random(11)
    words = {
        "".join(r.choice("aeiouybcdlmnrstgpzxw") for _ in range(r.randint(1, 7)))
        + r.choice(suffixes)
        for _ in range(6000)
    }
    words |= set(
        [
            "meetings",
            "running",
            "happiness",
            "relational",
            "conditional",
            "generalizations",
            "oscillators",
            "lunches",
            "goes",
            "cases",
            "agreed",
            "plastered",
            "motoring",
            "hopping",
            "falling",
            "filing",
            "sky",
            "ponies",
            "caresses",
        ]
    )
    ordered = sorted(words)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(w, tokenize='porter unicode61')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    conn.executemany("INSERT INTO t(rowid, w) VALUES (?, ?)", enumerate(ordered, 1))
    fts5 = {doc: term for term, doc in conn.execute("SELECT term, doc FROM v")}
    wrong = [
        (w, fts5[n], porter_stem(w)) for n, w in enumerate(ordered, 1) if fts5[n] != porter_stem(w)
    ]
    assert wrong == []


def test_a_fact_corrected_twice_in_one_call_stays_with_the_first_correction(
    memory: MemoryStore,
) -> None:
    old = remember(memory, "Gym on Mondays.", topic="gym")
    out = memory.update_memory(
        "acme",
        "ash",
        [
            {"text": "Gym on Tuesdays.", "topic": "gym"},
            {"text": "Gym on Tuesdays, at 7.", "supersedes": [old["id"]]},
        ],
    )["stored"]
    assert out[0]["superseded"] == [old["id"]] and out[1]["superseded"] == []
    log = {e["id"]: e for e in memory.log("acme", "ash")["entries"]}
    assert log[old["id"]]["superseded_by"] == out[0]["id"]
    assert memory.profile("acme", "ash")["items"] == {"active": 2, "superseded": 1, "total": 3}
    got = texts(memory.retrieve_relevant_chunks("acme", "ash", "gym"))
    assert sorted(got) == ["Gym on Tuesdays, at 7.", "Gym on Tuesdays."]
    if memory.engine.dialect.name == "sqlite":
        check_indexes(memory.engine)  # raises if the index lost count
