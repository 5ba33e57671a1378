"""Per-user personalization memory: versioned observations, full-text retrieval, answers.

Every observation is stored as a new row with a per-user version (1, 2, 3...). A correction
(explicit `supersedes` ids, or a new observation on the topic of an active item) marks the
earlier rows superseded (`superseded_by`, `superseded_at`) and never deletes them: the log
keeps every version, retrieval only sees active items. On a topic, the observation observed
last is the fact, whatever order they arrive in: one observed before the topic's active item
is stored already superseded by it (in the log, never retrieved). `observed_at` may not be
ahead of the gateway's clock by more than `CLOCK_SKEW_US` (a fact from the future would win
its topic forever); less is taken as the time of recording.

Ranking is the database's own full-text search:

* SQLite: one external-content FTS5 table (`porter unicode61`) per tenant, over text, topic
  and tags, whose content is a view of the tenant's ACTIVE items (a superseded item leaves the
  index when it is superseded, so a search never pays for old versions). The tenant's first
  write creates it, numbered in `memory_search_indexes`. Its rowid is the item's integer key,
  `owner << 32 | version` with a small integer per (tenant, user): one user's items are one
  rowid range, which FTS5 applies inside the index, so a search needs no join to scope it.
  Score = -bm25() (text weighs 1, topic and tags 0.5), higher is better; only the rows that
  can reach the top k are scored (see MemoryStore._search_sqlite), with results identical to
  scoring every match.
* PostgreSQL: a stored generated `tsvector` column (text weight A, topic and tags B) with a
  partial GIN index over active items; score = ts_rank_cd(vector, query, 1).

Callers see each score rounded to 4 decimal places and at least 0.0001 (`shown_score`: FTS5
floors the idf of common words at 1e-6, which would otherwise show as 1e-06); the order is
decided on the engine's unrounded scores.

Both scope every query by tenant AND user (SQLite: the rowid range, and every returned row is
checked against tenant_id/user_id), break score ties by recency (observed_at, then version) and
OR the query's terms so partial matches rank. The user's query never reaches the engine's query
syntax: it is cut into plain words, which are quoted (FTS5) or `|`-joined (tsquery), so quotes,
operators and punctuation cannot raise. Words go to the engine as typed (A-Z lower-cased), and
it folds them as it folded the text. Both indexes hold each run of Chinese, Japanese or Korean
letters as its overlapping bigrams, and queries are cut the same way (see search_text()).

Why an index per tenant (SQLite): bm25's statistics (row count, each word's document
frequency, average length) are computed over the whole FTS5 table. Over one table for every
tenant, scores, and so the order of partial matches, would shift as other tenants' memories
grow, and a caller watching its own scores could estimate how common a word is in other
tenants' memories. Per tenant, nothing another tenant stores moves them. Known limit: within a
tenant the statistics cover all its users, so the same estimate is possible across the users
of one tenant (never their text, which no search returns). PostgreSQL's ts_rank_cd uses no
collection statistics and has no such channel. A database written with the earlier single
index is split per tenant by migrate().

Timestamps are integers of microseconds since the Unix epoch (UTC), as in the gateway's main
store: they sort and compare the same way on both backends.

Concurrency: a write transaction starts by bumping the user's version counter (an upsert on
`memory_user_state`), so its first statement takes the write lock (SQLite) or the user's row
lock (PostgreSQL): concurrent updates for one user serialise, lose nothing and get unique
versions. All checks run inside that transaction; a failed check writes nothing. One of them,
when the store is given `registered` (the gateway's user registry), is that the user is still
registered: `admin user forget` erases the user in one transaction that starts by deleting the
same counter row (`erase_user`), so a write that passed the gateway's registration check before
the erasure but takes the lock after it is refused (`UserNotRegistered`) instead of leaving
items of a user who no longer exists.
"""

# MemoryStore's entry points check their arguments at run time, whatever the annotations say:
# they receive tool arguments, and Python callers that no type checker has seen.
# pyright: reportUnnecessaryIsInstance=false

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from .answer import NOTHING_FOUND, Answerer, ExtractiveAnswerer
from .catalog import (
    MAX_OBSERVATIONS_PER_CALL,
    MAX_SOURCE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TOP_K,
    MAX_TOPIC_CHARS,
    MemorySettings,
)
from .errors import (
    CONFLICT,
    FORBIDDEN,
    INVALID_ARGUMENTS,
    NOT_FOUND,
    GatewayError,
    internal_error,
)
from .store import parse_datetime

__all__ = [
    "MAX_TOP_K",
    "MemoryStore",
    "UserNotRegistered",
    "porter_stem",
    "fts5_match_expression",
    "query_terms",
    "search_text",
    "tsquery_expression",
]

MAX_QUERY_TERMS: Final = 24
LOG_PAGE_LIMIT: Final = 1000
# The log reads its rows in batches of this many, so that a page cut short by its size (see
# MemoryStore.log) fetches few more rows than it shows.
_LOG_BATCH: Final = 50
_REKEY_BATCH: Final = 1000  # rows per read of MemoryStore._rekey
PROFILE_FACTS_LIMIT: Final = 200
PROFILE_RECENT_LIMIT: Final = 20
PROFILE_TAGS_LIMIT: Final = 50
# search_or_ask considers this many candidates before applying its relevance floor.
ANSWER_CANDIDATES: Final = 8
# A question term found in more than this share of the user's active items is not evidence of
# relevance on its own (e.g. the user's name in every item). Applied from this many items on.
COMMON_TERM_SHARE: Final = 0.5
COMMON_TERM_MIN_ITEMS: Final = 8
# SQLite retrieval pruning (see MemoryStore._search_sqlite): counting a term the vocabulary
# lacks stops at max(PRUNE_COUNT_MIN, rows / 10); no pruning when the terms match
# PRUNE_MIN_ROWS rows or fewer; the probe reads up to PRUNE_PROBE_ROWS rows.
PRUNE_COUNT_MIN: Final = 2000
PRUNE_MIN_ROWS: Final = 2000
PRUNE_PROBE_ROWS: Final = 200
# SQLite retrieval fetches this many rows beyond top_k so ties on the k-th score can be
# ordered by recency (see MemoryStore._search).
TIE_MARGIN: Final = 16
# Scores as callers see them: rounded to SCORE_DECIMALS places, and at least SCORE_FLOOR for
# any item returned (see shown_score). Ranking and the answerer use the engine's own scores.
SCORE_DECIMALS: Final = 4
SCORE_FLOOR: Final = 0.0001
_WRITE_ATTEMPTS: Final = 5
# How far ahead of the gateway's clock an observed_at may be: clocks of hosts that sync with
# NTP agree within a second, but a client's (a phone, a laptop, a time a model read) can be
# off by minutes; 5 minutes is Kerberos' default tolerance. Further ahead is refused.
CLOCK_SKEW_US: Final = 5 * 60 * 1_000_000

_log: Final = logging.getLogger(__name__)
_DEFAULT_SETTINGS: Final = MemorySettings()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# A database row as a mapping (SQLAlchemy RowMapping keys are str or Column).
_Row = Mapping[Any, Any]
_OBSERVATION_KEYS: Final = frozenset(
    {"text", "source", "topic", "tags", "observed_at", "supersedes"}
)

# ---------------------------------------------------------------------------------------------
# Query sanitising
# ---------------------------------------------------------------------------------------------

# Plain words: letters and digits only (underscore and all punctuation separate words), the same
# split FTS5's unicode61 tokenizer makes. A word can never carry query syntax.
_WORD: Final = re.compile(r"[^\W_]+")

# Function words dropped from queries: they match nearly every item and cost the most to rank.
_STOPWORD_TEXT: Final = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t don"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

# Words that frame a question about a person rather than name its subject. They still take part
# in retrieval, but matching only them is not enough for search_or_ask to claim an answer.
_FRAMING_TEXT: Final = """
    user users person people someone they prefer prefers preferred preference preferences like
    likes liked usually typically normally generally often always never tell know known remember
    remembered memory anything something thing things favorite favourite favorites favourites
    kind sort type want wants wanted think thinks say says said ask asks asked get gets
    much many"""
FRAMING_WORDS: Final = frozenset(_FRAMING_TEXT.split())
# The same for Chinese, Japanese and Korean, as the letter pairs query_terms() makes of them:
# "like" (好き, 喜欢, 좋아), with which "favourite" is written (好きな, 最喜欢, 좋아하는).
CJK_FRAMING_TERMS: Final = frozenset({"好き", "喜欢", "最喜", "좋아"})


# Chinese, Japanese and Korean are written without spaces between words, and FTS5's unicode61
# and PostgreSQL's parser keep an unbroken run of their letters as one token: a word inside a
# sentence ("寿司" in "寿司が大好きです") matched nothing. Both indexes hold text rewritten by
# search_text(): each run of two or more such letters becomes its overlapping bigrams, set
# apart by spaces ("寿司が好き" -> " 寿司 司が が好 好き "); a lone letter stays as it is.
# query_terms() reads the query through the same function, so any word of two letters or more
# matches the bigrams of every place it occurs. In SQL the function is memory_search_text()
# (SQLite: search_text() registered on each connection; PostgreSQL: an SQL function making
# the same two replacements, with the same expressions). Its name stands for the rewriting: a
# different rewriting needs a new name, so that migrate() sees the indexes built with the old
# one and rebuilds them (memory_search_text: the bigrams; memory_search_text_v2: the text in
# NFKC and without Arabic and Hebrew vowel marks first).
#
# NFKC: the same letters can be written as different code points, one letter and its accent
# or one precomposed letter (NFD and NFC: "Réunion" typed on a Mac, Hangul or kana from some
# input methods), or a full-width or half-width form (ＦＵＬＬＷＩＤＴＨ, ﾗｰﾒﾝ). Neither engine
# unifies them, so text stored one way was not found by a query typed the other way (SQLite
# split an NFD query at its accents; PostgreSQL kept NFD letters as other words). Both
# indexes and every query read the text in NFKC (PostgreSQL's normalize(), from version 13).
_CJK_LETTERS: Final = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x3038, 0x303C),
    (0x3041, 0x3096),  # Hiragana
    (0x309D, 0x309F),
    (0x30A1, 0x30FA),  # Katakana (not the middle dot ・, punctuation)
    (0x30FC, 0x30FF),  # ー and iteration marks
    (0x3131, 0x318E),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7A3),  # Hangul syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0xFFA0, 0xFFDC),  # halfwidth Hangul
    (0x20000, 0x3FFFF),  # CJK ideographs of planes 2 and 3
)
_SEARCH_TEXT: Final = "memory_search_text_v2"  # the SQL name of search_text(): see above
_OLD_SEARCH_TEXT: Final = "memory_search_text"  # the bigrams alone (dropped by migrate())

# One bracket expression for Python's re and PostgreSQL's regular expressions alike.
_CJK: Final = (
    "["
    + "".join(
        f"\\u{a:04x}-\\u{b:04x}" if b <= 0xFFFF else f"\\U{a:08x}-\\U{b:08x}"
        for a, b in _CJK_LETTERS
    )
    + "]"
)
_CJK_RUN_RE: Final = _CJK + "+"  # replaced by " \g<0> ": the run set apart
_CJK_INNER_RE: Final = f"(?<={_CJK})({_CJK})(?={_CJK})"  # replaced by "\1 \1": bigrams
_CJK_RUN: Final = re.compile(_CJK_RUN_RE)
_CJK_INNER: Final = re.compile(_CJK_INNER_RE)


# Arabic and Hebrew write most vowels as optional marks over the letters (مُحَمَّد is محمد,
# שָׁלוֹם is שלום), which most text leaves out. FTS5 and PostgreSQL cut or keep words at them,
# so a word written with its marks and the same word without were different words (and a
# query with marks matched letter by letter). Both indexes and every query drop them: Arabic
# harakat, Quranic marks and the tatweel (ـ, a stretch of the line), Hebrew points and
# cantillation. Letters, and the marks of other scripts, stay.
_VOWEL_MARKS_RE: Final = (
    "[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"  # Hebrew
    "\u0610-\u061a\u0640\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e4"
    "\u06e7\u06e8\u06ea-\u06ed]"  # Arabic
)
_VOWEL_MARKS: Final = re.compile(_VOWEL_MARKS_RE)


def search_text(text: str) -> str:
    """`text` as both indexes hold it: in NFKC, without Arabic and Hebrew vowel marks, every
    run of CJK letters as its overlapping bigrams."""
    text = _VOWEL_MARKS.sub("", unicodedata.normalize("NFKC", text))
    if not _CJK_RUN.search(text):
        return text
    return _CJK_INNER.sub(r"\1 \1", _CJK_RUN.sub(r" \g<0> ", text))


def _indexed(value: str | None) -> str | None:
    """A column's value as the index holds it (SQLite's function named _SEARCH_TEXT)."""
    return None if value is None else search_text(value)


def _unindex(conn: Connection, fts: str, rows: Sequence[_Row]) -> None:
    """Take `rows` (pk, text, topic, tags) out of the SQLite index `fts`. It holds external
    content: removing a row needs the values it was indexed with (search_text() is
    deterministic)."""
    conn.execute(
        sa.text(
            f"INSERT INTO {fts}({fts}, rowid, text, topic, tags) "
            "VALUES ('delete', :pk, :text, :topic, :tags)"
        ),
        [
            {
                "pk": r["pk"],
                "text": _indexed(r["text"]),
                "topic": _indexed(r["topic"]),
                "tags": _indexed(r["tags"]),
            }
            for r in rows
        ],
    )


def _register_sqlite_functions(dbapi_conn: Any, _record: Any = None) -> None:
    """Define search_text() in SQL (_SEARCH_TEXT) on a SQLite connection. Each index reads
    its content through it ('rebuild', 'integrity-check', a scan of the index without MATCH)."""
    dbapi_conn.create_function(_SEARCH_TEXT, 1, _indexed, deterministic=True)


_HIRAGANA: Final = re.compile("[\u3041-\u3096\u309d-\u309f]")
_HANGUL: Final = re.compile(
    "[\u1100-\u11ff\u3131-\u318e\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uffa0-\uffdc]"
)


def grammar_pairs(text: str) -> frozenset[str]:
    """The letter pairs of `text`'s CJK runs that are grammar rather than a word: evidence of
    nothing when they match (search_or_ask), and the first terms dropped from a long query.

    Every pair is searched; this only tells which say what the text is about. Japanese writes
    its particles and endings in hiragana (の, は, です, ます) and its words mostly in kanji
    or katakana: a pair of two hiragana, or a hiragana before the next word ("の名"), is
    grammar; a kanji or katakana before hiragana is a word only where it starts one (猫が,
    好き), not at the end of a longer word whose own pairs say it (日は in 誕生日は). Korean puts
    spaces between words, each a stem then its endings (이름이, 얼그레이예요): the pair that
    starts a word is the word, the rest are grammar. Chinese has neither: all its pairs count.
    A pair that is a word anywhere in `text` is not grammar."""
    grammar: set[str] = set()
    words: set[str] = set()
    for run in _CJK_RUN.findall(unicodedata.normalize("NFKC", text)):
        for i in range(len(run) - 1):
            a, b = run[i], run[i + 1]
            before = run[i - 1] if i else ""
            if _HANGUL.match(a) or _HANGUL.match(b):
                word = not before or not _HANGUL.match(before)
            elif _HIRAGANA.match(a):
                word = False
            elif _HIRAGANA.match(b):
                word = not before or bool(_HIRAGANA.match(before))
            else:
                word = True
            (words if word else grammar).add(a + b)
    return frozenset(grammar - words)


_ASCII_UPPER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def query_terms(text: str) -> list[str]:
    """The content words of `text`, in order, each once; stop words removed; CJK letters as
    the bigrams of search_text().

    A word goes to the engine as typed, but for A-Z lower-cased (which is exact: both engines
    fold ASCII so, and the stop words, framing words and porter_stem expect it): the engine
    folds the rest itself, as it did when indexing. Python's casefold() would not agree with
    it: it turns ß into ss, İ into i + a combining dot (two words here) and ς into σ, none of
    which FTS5 or PostgreSQL does, so such words were never found. lower() only tells
    repeats apart.

    At most MAX_QUERY_TERMS terms: past that, the CJK pairs that are grammar (see
    grammar_pairs()) go first, then the last terms, so that a long question keeps its subject
    (公園 in a long Japanese question, whose particles and endings made the first 24 pairs).
    """
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(search_text(text)):
        term = word.translate(_ASCII_UPPER)
        key = term.lower()
        if key in STOPWORDS or key in seen:
            continue
        seen.add(key)
        terms.append(term)
    if len(terms) <= MAX_QUERY_TERMS:
        return terms
    grammar = grammar_pairs(text)
    words = [t for t in terms if t not in grammar]
    if len(words) >= MAX_QUERY_TERMS:
        return words[:MAX_QUERY_TERMS]
    kept = set(words + [t for t in terms if t in grammar][: MAX_QUERY_TERMS - len(words)])
    return [t for t in terms if t in kept]


def fts5_match_expression(terms: Iterable[str], operator: Literal["OR", "AND"] = "OR") -> str:
    """An FTS5 MATCH expression joining `terms` (plain words), as quoted strings, with OR/AND.

    Each term is re-checked to be a plain word, so nothing but `"word" OR "word"` is emitted.
    """
    words = [t for t in terms if _WORD.fullmatch(t)]
    return f" {operator} ".join(f'"{w}"' for w in words)


def tsquery_expression(terms: Iterable[str]) -> str:
    """A to_tsquery() expression ORing `terms` (plain words): `word | word`."""
    return " | ".join(t for t in terms if _WORD.fullmatch(t))


# ---------------------------------------------------------------------------------------------
# The FTS5 "porter" stemmer, in Python
# ---------------------------------------------------------------------------------------------
# Retrieval pruning looks terms up in the FTS5 vocabulary, which holds stems. This follows the
# Porter (1980) algorithm the way SQLite's FTS5 applies it (its suffix lists include "logi" and
# "bli"; one rule per step, chosen by the last-but-one letter, first listed suffix wins).
# tests/runtime/test_memory.py checks it against the SQLite in use. A word it stems differently
# only loses the pruning shortcut (the vocabulary lookup then misses); results never change.

_STEP2: Final = (
    ("ational", "ate"),
    ("tional", "tion"),
    ("enci", "ence"),
    ("anci", "ance"),
    ("izer", "ize"),
    ("logi", "log"),
    ("bli", "ble"),
    ("alli", "al"),
    ("entli", "ent"),
    ("eli", "e"),
    ("ousli", "ous"),
    ("ization", "ize"),
    ("ation", "ate"),
    ("ator", "ate"),
    ("alism", "al"),
    ("iveness", "ive"),
    ("fulness", "ful"),
    ("ousness", "ous"),
    ("aliti", "al"),
    ("iviti", "ive"),
    ("biliti", "ble"),
)
_STEP3: Final = (
    ("ical", "ic"),
    ("ness", ""),
    ("icate", "ic"),
    ("iciti", "ic"),
    ("ful", ""),
    ("ative", ""),
    ("alize", "al"),
)
_STEP4: Final = (
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
)


def _is_vowel(c: str, y_is_vowel: bool) -> bool:
    return c in "aeiou" or (y_is_vowel and c == "y")


def _consonant_flags(stem: str) -> list[bool]:
    flags: list[bool] = []
    cons = False
    for c in stem:
        cons = not _is_vowel(c, cons)
        flags.append(cons)
    return flags


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in the stem."""
    m = 0
    prev_vowel = False
    for cons in _consonant_flags(stem):
        if cons and prev_vowel:
            m += 1
        prev_vowel = not cons
    return m


def _has_vowel(stem: str) -> bool:
    return any(_is_vowel(c, i > 0) for i, c in enumerate(stem))


def _ends_cvc(stem: str) -> bool:
    if not stem or stem[-1] in "wxy":
        return False
    flags = _consonant_flags(stem)
    return len(flags) >= 3 and flags[-3] and not flags[-2] and flags[-1]


def _by_last_but_one(rules: Sequence[str]) -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for suffix in rules:
        table.setdefault(suffix[-2], []).append(suffix)
    return {k: tuple(v) for k, v in table.items()}


_STEP2_MAP: Final = dict(_STEP2)
_STEP3_MAP: Final = dict(_STEP3)
_STEP2_BY: Final = _by_last_but_one([s for s, _ in _STEP2])
_STEP3_BY: Final = _by_last_but_one([s for s, _ in _STEP3])
_STEP4_BY: Final = _by_last_but_one(_STEP4)


def _replace(word: str, by: Mapping[str, tuple[str, ...]], out: Mapping[str, str], m: int) -> str:
    """Steps 2-4: the first listed suffix for the last-but-one letter, if its stem has m > `m`."""
    for suffix in by.get(word[-2], ()):
        if len(word) > len(suffix) and word.endswith(suffix):
            stem = word[: -len(suffix)]
            if _measure(stem) > m and (suffix != "ion" or stem[-1] in "st"):
                return stem + out.get(suffix, "")
            return word
    return word


def porter_stem(word: str) -> str:
    """The stem FTS5's porter tokenizer gives a lower-case ASCII word of 3 to 64 letters."""
    if not 3 <= len(word) <= 64:
        return word
    w = word
    # Step 1a
    if w.endswith("s"):
        cut = 0
        if w[-2] == "e":
            sses_or_ies = (len(w) > 4 and w[-4:-2] == "ss") or (len(w) > 3 and w[-3] == "i")
            cut = 2 if sses_or_ies else 1
        elif w[-2] != "s":
            cut = 1
        w = w[: len(w) - cut]
    # Step 1b
    undone = False
    if w[-2] == "e" and len(w) > 3 and w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    elif w[-2] == "e" and len(w) > 2 and w.endswith("ed") and _has_vowel(w[:-2]):
        w, undone = w[:-2], True
    elif w[-2] == "n" and len(w) > 3 and w.endswith("ing") and _has_vowel(w[:-3]):
        w, undone = w[:-3], True
    if undone:
        if len(w) > 2 and w[-2:] in ("at", "bl", "iz"):
            w += "e"
        elif len(w) > 1 and not _is_vowel(w[-1], False) and w[-1] not in "lsz" and w[-1] == w[-2]:
            w = w[:-1]
        elif _measure(w) == 1 and _ends_cvc(w):
            w += "e"
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # Steps 2 to 4
    if len(w) > 1:
        w = _replace(w, _STEP2_BY, _STEP2_MAP, 0)
    if len(w) > 1:
        w = _replace(w, _STEP3_BY, _STEP3_MAP, 0)
    if len(w) > 1:
        w = _replace(w, _STEP4_BY, {}, 1)
    # Step 5a
    if w.endswith("e"):
        stem = w[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _ends_cvc(stem)):
            w = stem
    # Step 5b
    if len(w) > 1 and w.endswith("ll") and _measure(w[:-1]) > 1:
        w = w[:-1]
    return w


# ---------------------------------------------------------------------------------------------
# Tables (own MetaData; the engine is shared with the gateway's main store)
# ---------------------------------------------------------------------------------------------


_PK_TYPE: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# pk = owner << 32 | version: one user's items form one contiguous range of integer keys, so
# SQLite's FTS5 (keyed by rowid = pk) can restrict a search to one user by a rowid range.
_OWNER_SHIFT: Final = 32
_MAX_VERSION: Final = (1 << _OWNER_SHIFT) - 1
_MAX_OWNER: Final = (1 << 31) - 1


def _pk(owner: int, version: int) -> int:
    return (owner << _OWNER_SHIFT) | version


def _pk_range(owner: int) -> tuple[int, int]:
    """The first and last key of one user's items (both included)."""
    return _pk(owner, 0), _pk(owner, _MAX_VERSION)


metadata: Final = sa.MetaData()

items_table: Final = sa.Table(
    "memory_items",
    metadata,
    # Integer primary key (SQLite's rowid, which keys the FTS5 index to the row): _pk().
    sa.Column("pk", _PK_TYPE, primary_key=True, autoincrement=False),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(MAX_SOURCE_CHARS)),
    sa.Column("topic", sa.String(MAX_TOPIC_CHARS)),
    sa.Column("topic_key", sa.String(MAX_TOPIC_CHARS)),
    sa.Column("tags", sa.Text, nullable=False, default="[]"),  # JSON array, as given
    sa.Column("observed_at", sa.BigInteger, nullable=False),  # µs since epoch, UTC
    sa.Column("recorded_at", sa.BigInteger, nullable=False),  # µs since epoch, UTC
    sa.Column("superseded_by", sa.String(32)),
    sa.Column("superseded_at", sa.BigInteger),
    sa.UniqueConstraint("tenant_id", "user_id", "version", name="memory_items_user_version"),
    sa.Index(
        "memory_items_active_topic",
        "tenant_id",
        "user_id",
        "topic_key",
        sqlite_where=sa.text("superseded_by IS NULL"),
        postgresql_where=sa.text("superseded_by IS NULL"),
    ),
)

tags_table: Final = sa.Table(
    "memory_item_tags",
    metadata,
    sa.Column(
        "item_pk", _PK_TYPE, sa.ForeignKey("memory_items.pk", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("tag_key", sa.String(MAX_TAG_CHARS), primary_key=True),  # _tag_key()
)

state_table: Final = sa.Table(
    "memory_user_state",
    metadata,
    sa.Column("tenant_id", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("owner_id", sa.Integer, nullable=False, unique=True),  # see _pk()
    sa.Column("last_version", sa.BigInteger, nullable=False),
    sa.Column("active_items", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# SQLite: one FTS5 index per tenant, so that bm25's statistics (row count, each word's document
# frequency, average length) are the tenant's own. memory_search_indexes numbers each tenant's
# index (created by the tenant's first write) and keeps its row count, bm25's N.
_INDEXES: Final = "memory_search_indexes"
_BM25_K1: Final = 1.2  # the constants of FTS5's bm25()
_BM25_B: Final = 0.75
# The change poll reads the users of listening tenants updated in the last minute.
_RECENT_DDL: Final = (
    "CREATE INDEX IF NOT EXISTS memory_user_state_recent ON memory_user_state "
    "(tenant_id, updated_at)"
)
_SQLITE_DDL: Final = (
    f"CREATE TABLE IF NOT EXISTS {_INDEXES} (tenant_id VARCHAR(255) PRIMARY KEY, "
    "n INTEGER NOT NULL UNIQUE, row_count INTEGER NOT NULL)",
    _RECENT_DDL,
)
# The single index of every tenant that databases written before per-tenant indexes hold;
# migrate() moves its tenants to their own indexes and drops it.
_LEGACY_SQLITE: Final = (
    ("table", "memory_items_fts_vocab"),
    ("table", "memory_items_fts"),
    ("table", "memory_items_fts_rows"),
    ("view", "memory_items_active"),
)


class _Scope(NamedTuple):
    """A user's items in SQLite's search: the tenant's index, its row count, the owner id."""

    fts: str
    rows: int
    owner: int


def _fts(n: int) -> str:
    """The name of index number n (an integer, never text from a caller)."""
    return f"memory_fts_{int(n)}"


def _bm25(fts: str) -> str:
    """Score: text weighs 1, topic and tags 0.5 each; negated so that higher is better."""
    return f"-bm25({fts}, 1.0, 0.5, 0.5)"


def _content_view_ddl(n: int) -> str:
    """The index's content: the tenant's active items (superseded items leave the index, see
    _supersede, and this view, so FTS5's 'rebuild' and 'integrity-check' agree), each column
    through search_text() as the writes index them."""
    fts = _fts(n)
    return (
        f"CREATE VIEW {fts}_content AS SELECT pk, {_SEARCH_TEXT}(text) AS text, "
        f"{_SEARCH_TEXT}(topic) AS topic, {_SEARCH_TEXT}(tags) AS tags FROM memory_items "
        f"WHERE superseded_by IS NULL AND tenant_id = "
        f"(SELECT tenant_id FROM {_INDEXES} WHERE n = {int(n)})"
    )


def _index_ddl(n: int) -> tuple[str, ...]:
    fts = _fts(n)
    return (
        _content_view_ddl(n),
        f"CREATE VIRTUAL TABLE {fts} USING fts5(text, topic, tags, content='{fts}_content', "
        "content_rowid='pk', tokenize='porter unicode61')",
        # Per stem: rows holding it and occurrences in all (bounds a term's frequency in a row).
        f"CREATE VIRTUAL TABLE {fts}_vocab USING fts5vocab({fts}, 'row')",
    )


# search_text() in SQL (standard_conforming_strings: the backslashes are the regex's own).
_PG_SEARCH_TEXT: Final = (
    f"CREATE OR REPLACE FUNCTION {_SEARCH_TEXT}(value text) RETURNS text LANGUAGE sql "
    "IMMUTABLE STRICT PARALLEL SAFE AS $$SELECT regexp_replace(regexp_replace(regexp_replace("
    f"normalize(value, NFKC), '{_VOWEL_MARKS_RE}', '', 'g'), "
    f"'{_CJK_RUN_RE}', ' \\& ', 'g'), '{_CJK_INNER_RE}', '\\1 \\1', 'g')$$"
)
_PG_VECTOR: Final = (
    f"setweight(to_tsvector('english'::regconfig, {_SEARCH_TEXT}(text)), 'A') || "
    f"setweight(to_tsvector('english'::regconfig, {_SEARCH_TEXT}(coalesce(topic, ''))), 'B') || "
    f"setweight(to_tsvector('english'::regconfig, {_SEARCH_TEXT}(tags)), 'B')"
)
# Serialises migrate() across gateway processes starting together (any constant will do).
_PG_MIGRATE_LOCK: Final = 0x6D656D6F7279  # "memory"
_PG_DDL: Final = (
    "ALTER TABLE memory_items ADD COLUMN IF NOT EXISTS search_vector tsvector "
    f"GENERATED ALWAYS AS ({_PG_VECTOR}) STORED",
    "CREATE INDEX IF NOT EXISTS memory_items_search ON memory_items USING GIN (search_vector) "
    "WHERE superseded_by IS NULL",
    "CREATE INDEX IF NOT EXISTS memory_items_user_active ON memory_items "
    "(tenant_id, user_id) WHERE superseded_by IS NULL",
    _RECENT_DDL,
)

_CHUNK_COLUMNS: Final = (
    items_table.c.pk,
    items_table.c.id,
    items_table.c.version,
    items_table.c.text,
    items_table.c.source,
    items_table.c.topic,
    items_table.c.tags,
    items_table.c.observed_at,
)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _now_us() -> int:
    return time.time_ns() // 1000


def _to_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _iso(us: int) -> str:
    """RFC 3339 in UTC with a Z, to the second unless there are sub-second digits."""
    value = _EPOCH + timedelta(microseconds=int(us))
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _new_id() -> str:
    return "mem_" + secrets.token_hex(10)


def _invalid(message: str, **details: Any) -> GatewayError:
    return GatewayError(INVALID_ARGUMENTS, message, details=details)


# Topics and tags are compared as keys: lower case (as the search engines fold case), blanks
# collapsed. Not casefold(), which both merged different words (Maße and Masse, a measure and a
# mass) and made a key longer than its text (ß -> ss, ﬃ -> ffi), so a valid 120-letter topic
# did not fit its column (PostgreSQL: internal_error). lower() is one letter for one but for
# İ (i + a combining dot), kept one letter here: a key is never longer than its text.
_ONE_LETTER_LOWER: Final = {0x130: "i"}


def _topic_key(topic: str) -> str:
    return " ".join(topic.translate(_ONE_LETTER_LOWER).lower().split())


def _tag_key(tag: str) -> str:
    return _topic_key(tag)


def _time_error(index: int, message: str) -> GatewayError:
    """invalid_arguments for observation `index`'s observed_at (`field` as before, and the
    JSON pointer that schema errors give)."""
    return _invalid(
        f"observations[{index}].observed_at {message}",
        field=f"observations[{index}].observed_at",
        errors=[{"path": f"/observations/{index}/observed_at", "message": message}],
    )


def _parse_time(value: Any, index: int, now: int) -> int:
    """observed_at in µs, at most CLOCK_SKEW_US ahead of `now` (the write then records it as
    its own time: see MemoryStore._update)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            raise _time_error(index, "is not an RFC 3339 timestamp.") from None
    else:
        raise _time_error(index, "must be a string.")
    try:
        at = _to_us(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is past the last datetime in UTC
        raise _time_error(index, "is out of range.") from None
    if at > now + CLOCK_SKEW_US:
        raise _time_error(
            index,
            f"is in the future ({_iso(now)} now, {CLOCK_SKEW_US // 60_000_000} minutes of "
            "clock skew allowed).",
        )
    return at


class _Observation:
    __slots__ = ("text", "source", "topic", "topic_key", "tags", "observed_at", "supersedes")

    def __init__(
        self,
        *,
        text: str,
        source: str | None,
        topic: str | None,
        tags: list[str],
        observed_at: int | None,
        supersedes: list[str],
    ) -> None:
        self.text = text
        self.source = source
        self.topic = topic
        self.topic_key = _topic_key(topic) if topic else None
        self.tags = tags
        self.observed_at = observed_at
        self.supersedes = supersedes


def _optional_str(obs: Mapping[str, Any], key: str, index: int, limit: int) -> str | None:
    value = obs.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"observations[{index}].{key} must be a string.")
    value = value.strip()
    if len(value) > limit:
        raise _invalid(f"observations[{index}].{key} is longer than {limit} characters.")
    if "\x00" in value:
        raise _invalid(f"observations[{index}].{key} contains a NUL character.")
    return value or None


def _list_field(obs: Mapping[str, Any], key: str, message: str) -> Sequence[object]:
    """`obs[key]` as a list (absent or null: empty); a string or a non-list is `message`."""
    value = obs.get(key) or ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _invalid(message)
    return cast("Sequence[object]", value)  # a sequence of JSON values, not yet checked


def _parse_observations(
    observations: Sequence[Mapping[str, Any]], max_chars: int, now: int
) -> list[_Observation]:
    if isinstance(observations, (str, bytes)) or not isinstance(observations, Sequence):
        raise _invalid("observations must be a list of objects.")
    if not observations:
        raise _invalid("observations must hold at least one observation.")
    if len(observations) > MAX_OBSERVATIONS_PER_CALL:
        raise _invalid(f"At most {MAX_OBSERVATIONS_PER_CALL} observations per call.")
    parsed: list[_Observation] = []
    targets: set[str] = set()
    for index, obs in enumerate(observations):
        if not isinstance(obs, Mapping):
            raise _invalid(f"observations[{index}] must be an object.")
        unknown = sorted(set(obs) - _OBSERVATION_KEYS)
        if unknown:
            raise _invalid(
                f"observations[{index}] has unknown fields: {', '.join(map(str, unknown))}."
            )
        text = obs.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _invalid(f"observations[{index}].text must be a non-empty string.")
        text = text.strip()
        if len(text) > max_chars:
            raise _invalid(
                f"observations[{index}].text is longer than {max_chars} characters.",
                field=f"observations[{index}].text",
                max_chars=max_chars,
            )
        if "\x00" in text:
            raise _invalid(f"observations[{index}].text contains a NUL character.")
        raw_tags = _list_field(
            obs, "tags", f"observations[{index}].tags must be a list of strings."
        )
        if len(raw_tags) > MAX_TAGS:
            raise _invalid(f"observations[{index}] has more than {MAX_TAGS} tags.")
        tags: list[str] = []
        tag_keys: set[str] = set()
        for tag in raw_tags:
            if not isinstance(tag, str) or not tag.strip() or "\x00" in tag:
                raise _invalid(f"observations[{index}].tags must be non-empty strings.")
            tag = tag.strip()
            if len(tag) > MAX_TAG_CHARS:
                raise _invalid(f"observations[{index}] has a tag over {MAX_TAG_CHARS} characters.")
            if _tag_key(tag) not in tag_keys:
                tag_keys.add(_tag_key(tag))
                tags.append(tag)
        raw_supersedes = _list_field(
            obs, "supersedes", f"observations[{index}].supersedes must be a list of ids."
        )
        supersedes: list[str] = []
        for target in raw_supersedes:
            if not isinstance(target, str) or not target:
                raise _invalid(f"observations[{index}].supersedes must hold memory item ids.")
            if target in targets:
                raise _invalid(
                    f"Memory item {target[:40]} is superseded twice in one call.",
                    id=target[:40],
                )
            targets.add(target)
            supersedes.append(target)
        observed_at = obs.get("observed_at")
        parsed.append(
            _Observation(
                text=text,
                source=_optional_str(obs, "source", index, MAX_SOURCE_CHARS),
                topic=_optional_str(obs, "topic", index, MAX_TOPIC_CHARS),
                tags=tags,
                observed_at=None if observed_at is None else _parse_time(observed_at, index, now),
                supersedes=supersedes,
            )
        )
    return parsed


def _tf_bound(most: float | None) -> float:
    """An upper bound of bm25's term-frequency factor f(k1+1) / (f + k1(1 - b + b D/avgdl)).

    It grows with the weighted frequency f (at most `most` occurrences of weight 1 in a row, when
    known) and shrinks with the row's length D; D -> 0 gives f(k1+1) / (f + k1(1 - b)).
    """
    if most is None:
        return _BM25_K1 + 1.0
    return most * (_BM25_K1 + 1.0) / (most + _BM25_K1 * (1.0 - _BM25_B))


def shown_score(score: float) -> float:
    """A score for callers (models): SCORE_DECIMALS places, SCORE_FLOOR at the least.

    FTS5's bm25 floors the idf of a word that at least half the index's rows contain at
    1e-6, so in a small index (every word is common) or for common words, scores come out as
    1e-06 and the like: noise in scientific notation that a model cannot read. Rounded, such
    an item shows the floor, 0.0001 ("matched, but only on common words"), and every shown
    score prints as a plain decimal. The order of the items is decided on the unrounded
    scores, so rounding never reorders; two items may show the same score.
    """
    return max(round(float(score), SCORE_DECIMALS), SCORE_FLOOR)


def _shown(chunks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{**chunk, "score": shown_score(chunk["score"])} for chunk in chunks]


def _chunk(row: _Row, score: float) -> dict[str, Any]:
    """One MemoryChunk (manifests/types.yaml)."""
    return {
        "id": row["id"],
        "text": row["text"],
        "score": float(score),
        "source": row["source"],
        "topic": row["topic"],
        "tags": list(json.loads(row["tags"] or "[]")),
        "observed_at": _iso(row["observed_at"]),
        "version": int(row["version"]),
    }


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class UserNotRegistered(GatewayError):
    """A write for a user who is not registered (any more): `admin user forget` erased it
    while the write waited for the lock. The refusal an unregistered user gets."""

    def __init__(self) -> None:
        super().__init__(
            FORBIDDEN,
            "This user is not registered in this workspace (it was removed); nothing was "
            "written. Register it again to store memory for it.",
            refused=True,
        )


class MemoryStore:
    """Personalization memory for the users of every tenant, on SQLite or PostgreSQL.

    Every method takes the tenant and user from the authenticated session and scopes every
    statement by both. Methods are synchronous (run them in a worker thread).

    `registered(conn, tenant_id, user_id)`, when given, says whether the user is registered,
    read in the write's transaction: every write checks it under its lock (module doc).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        settings: MemorySettings = _DEFAULT_SETTINGS,
        answerer: Answerer | None = None,
        registered: Callable[[Connection, str, str], bool] | None = None,
    ) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"memory store supports sqlite and postgresql, not {dialect}")
        if not 1 <= settings.default_top_k <= MAX_TOP_K:
            # Every retrieval without top_k would be refused.
            raise ValueError(
                f"default_top_k must be from 1 to {MAX_TOP_K}, not {settings.default_top_k}"
            )
        self.engine = engine
        self.settings = settings
        self.answerer: Answerer = answerer if answerer is not None else ExtractiveAnswerer()
        self._registered = registered
        self._sqlite = dialect == "sqlite"
        if self._sqlite and not event.contains(engine, "connect", _register_sqlite_functions):
            event.listen(engine, "connect", _register_sqlite_functions)

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create the memory tables and the full-text index; safe to run again. Indexes built
        without this search_text() (CJK runs as single tokens, text not in NFKC) are rebuilt."""
        metadata.create_all(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            if self._sqlite:
                # A connection the pool opened before this store hooked "connect" lacks it.
                _register_sqlite_functions(conn.connection.driver_connection)
                for statement in _SQLITE_DDL:
                    conn.execute(sa.text(statement))
                split = self._split_legacy_index(conn)
                if self._rebuild_old_indexes(conn) or split:
                    self._rekey(conn)
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
                conn.execute(sa.text(_PG_SEARCH_TEXT))
                vector = conn.execute(
                    sa.text(
                        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
                        "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
                        "WHERE d.adrelid = 'memory_items'::regclass "
                        "AND a.attname = 'search_vector'"
                    )
                ).scalar()
                if vector is not None and f"{_SEARCH_TEXT}(" not in vector:
                    # Generated without this search_text(): recomputed for every row (its index
                    # goes with it and is created again below).
                    conn.execute(sa.text("ALTER TABLE memory_items DROP COLUMN search_vector"))
                    self._rekey(conn)
                conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {_OLD_SEARCH_TEXT}(text)"))
                for statement in _PG_DDL:
                    conn.execute(sa.text(statement))

    def reindex(self) -> int:
        """SQLite: rebuild every tenant's search index from its active items, through
        search_text(), one tenant per transaction, and set its row count; returns how many.
        Repairs the rows a gateway from before search_text() indexed as they were (it went on
        writing after a newer one migrated the database), which nothing tells apart from the
        others. PostgreSQL: nothing to do (the database computes each row's vector), 0."""
        if not self._sqlite:
            return 0
        with self.engine.connect() as conn:
            numbers = [int(n) for n in conn.execute(sa.text(f"SELECT n FROM {_INDEXES}")).scalars()]
            conn.rollback()
        for n in sorted(numbers):
            with self.engine.connect().execution_options(gateway_write=True) as conn, conn.begin():
                _register_sqlite_functions(conn.connection.driver_connection)
                fts = _fts(n)
                conn.execute(sa.text(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')"))
                conn.execute(
                    sa.text(
                        f"UPDATE {_INDEXES} SET row_count = (SELECT count(*) FROM {fts}) "
                        "WHERE n = :n"
                    ),
                    {"n": n},
                )
        return len(numbers)

    @staticmethod
    def _rekey(conn: Connection) -> None:
        """Recompute every topic and tag key with _topic_key()/_tag_key(). Runs with the
        re-indexing of a database from an older gateway (so once per such database): those
        wrote casefolded keys (schema version 3 and before)."""
        i, t = items_table, tags_table
        after: int | None = None
        while True:  # in batches, in key order
            query = sa.select(i.c.pk, i.c.topic, i.c.topic_key, i.c.tags, i.c.superseded_by)
            if after is not None:
                query = query.where(i.c.pk > after)
            rows = conn.execute(query.order_by(i.c.pk).limit(_REKEY_BATCH)).all()
            if not rows:
                return
            after = int(rows[-1][0])
            for pk, topic, topic_key, tags, superseded_by in rows:
                if topic is not None and topic_key != _topic_key(topic):
                    conn.execute(i.update().where(i.c.pk == pk).values(topic_key=_topic_key(topic)))
                if superseded_by is None and tags != "[]":  # active items' tags have rows
                    keys = {_tag_key(tag) for tag in json.loads(tags)}
                    conn.execute(t.delete().where(t.c.item_pk == pk))
                    conn.execute(t.insert(), [{"item_pk": pk, "tag_key": key} for key in keys])

    @staticmethod
    def _rebuild_old_indexes(conn: Connection) -> bool:
        """Rebuild each tenant index whose content view does not read through this
        search_text(); whether there was one."""
        views: dict[int, str | None] = dict(
            conn.execute(
                sa.text(
                    f"SELECT x.n, m.sql FROM {_INDEXES} x LEFT JOIN sqlite_master m "
                    "ON m.type = 'view' AND m.name = 'memory_fts_' || x.n || '_content'"
                )
            ).all()
        )
        rebuilt = False
        for n, sql in sorted(views.items()):
            if sql is not None and f"{_SEARCH_TEXT}(" in sql:
                continue
            rebuilt = True
            fts = _fts(int(n))
            conn.execute(sa.text(f"DROP VIEW IF EXISTS {fts}_content"))
            conn.execute(sa.text(_content_view_ddl(int(n))))
            conn.execute(sa.text(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')"))
        return rebuilt

    @staticmethod
    def _split_legacy_index(conn: Connection) -> bool:
        """Give each tenant of a database with the old shared index its own, then drop it;
        whether there was one."""
        names = {
            str(row[0])
            for row in conn.execute(
                sa.text("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            )
        }
        if not any(name in names for _, name in _LEGACY_SQLITE):
            return False
        tenants = conn.execute(
            sa.text(
                "SELECT DISTINCT tenant_id FROM memory_items WHERE superseded_by IS NULL "
                f"AND tenant_id NOT IN (SELECT tenant_id FROM {_INDEXES}) ORDER BY tenant_id"
            )
        ).scalars()
        for tenant_id in list(tenants):
            n = MemoryStore._create_index(conn, str(tenant_id))
            fts = _fts(n)
            conn.execute(sa.text(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')"))
            conn.execute(
                sa.text(
                    f"UPDATE {_INDEXES} SET row_count = (SELECT count(*) FROM {fts}) WHERE n = :n"
                ),
                {"n": n},
            )
        for kind, name in _LEGACY_SQLITE:
            if name in names:
                conn.execute(sa.text(f"DROP {kind.upper()} IF EXISTS {name}"))
        return True

    @staticmethod
    def _create_index(conn: Connection, tenant_id: str) -> int:
        """Number and create the tenant's (empty) search index; returns its number."""
        n = int(
            conn.execute(
                sa.text(
                    f"INSERT INTO {_INDEXES} (tenant_id, n, row_count) "
                    f"SELECT :tenant, coalesce(max(n), 0) + 1, 0 FROM {_INDEXES} RETURNING n"
                ),
                {"tenant": tenant_id},
            ).scalar_one()
        )
        for statement in _index_ddl(n):
            conn.execute(sa.text(statement))
        return n

    @staticmethod
    def _index_of(conn: Connection, tenant_id: str) -> int | None:
        """The number of the tenant's search index (SQLite), None before its first write."""
        n = conn.execute(
            sa.text(f"SELECT n FROM {_INDEXES} WHERE tenant_id = :tenant"), {"tenant": tenant_id}
        ).scalar()
        return None if n is None else int(n)

    # -- writes -----------------------------------------------------------------------------

    def update_memory(
        self, tenant_id: str, user_id: str, observations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Append observations; returns {"stored": [{"id", "version", "superseded",
        "superseded_by"}]} (`superseded_by`: None, or the topic's fact observed after it)."""
        now = _now_us()
        parsed = _parse_observations(observations, self.settings.max_observation_chars, now)
        # gateway_write: the gateway's SQLite engine then opens the transaction with BEGIN
        # IMMEDIATE (any other engine ignores the option).
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return self._update(tenant_id, user_id, parsed, now)
            except IntegrityError:
                # PostgreSQL: two users written for the first time at once drew the same
                # owner id; the loser retries. Anything else that collides is retried too.
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _update(
        self, tenant_id: str, user_id: str, parsed: Sequence[_Observation], now: int
    ) -> dict[str, Any]:
        with self.engine.connect().execution_options(gateway_write=True) as conn, conn.begin():
            # First statement: takes the write lock / the user's row lock (see module doc).
            owner, first = self._allocate_versions(conn, tenant_id, user_id, len(parsed), now)
            if self._registered is not None and not self._registered(conn, tenant_id, user_id):
                raise UserNotRegistered()  # erased meanwhile: the transaction rolls back
            # Read under the lock, the time of recording follows the order of the versions.
            now = max(now, _now_us())
            fts: str | None = None
            if self._sqlite:
                n = self._index_of(conn, tenant_id)
                fts = _fts(self._create_index(conn, tenant_id) if n is None else n)
            explicit = self._resolve_targets(
                conn, tenant_id, user_id, [t for obs in parsed for t in obs.supersedes]
            )
            stored: list[dict[str, Any]] = []
            done: set[int] = set()  # pks superseded by this call so far
            shelved = 0  # observations of this call stored already superseded
            for offset, obs in enumerate(parsed):
                item_id = _new_id()
                version = first + offset
                targets: dict[int, _Row] = {}
                for target in obs.supersedes:
                    row = explicit[target]
                    targets[row["pk"]] = row
                # An observation without observed_at is observed now: it is the topic's fact
                # (even over a fact stored with a later time, before such times were refused,
                # or when the clock was set back). One with observed_at is compared.
                newer: _Row | None = None  # the topic's fact, if observed after this one
                if obs.topic_key is not None:
                    rivals = [
                        row
                        for row in self._active_on_topic(conn, tenant_id, user_id, obs.topic_key)
                        if row["pk"] not in targets
                    ]
                    observed = None if obs.observed_at is None else min(obs.observed_at, now)
                    later = [
                        row
                        for row in rivals
                        if observed is not None and row["observed_at"] > observed
                    ]
                    if later:
                        newer = max(later, key=lambda row: (row["observed_at"], row["version"]))
                    else:
                        targets.update((row["pk"], row) for row in rivals)
                # An earlier observation of this call may have superseded a target already
                # (by topic): it stays superseded by that one.
                rows = [row for pk, row in targets.items() if pk not in done]
                done.update(row["pk"] for row in rows)
                pk = _pk(owner, version)
                by = None if newer is None else str(newer["id"])
                self._insert_item(
                    conn, fts, tenant_id, user_id, pk, item_id, version, obs, now, superseded_by=by
                )
                shelved += by is not None
                marked = self._supersede(conn, fts, rows, item_id, now)
                stored.append(
                    {"id": item_id, "version": version, "superseded": marked, "superseded_by": by}
                )
            superseded_total = len(done) + shelved
            # The user's last update is the time its versions were recorded at: the one read
            # under the lock, not the earlier one _allocate_versions stamped before it held it.
            conn.execute(
                state_table.update()
                .where(state_table.c.tenant_id == tenant_id, state_table.c.user_id == user_id)
                .values(active_items=state_table.c.active_items - superseded_total, updated_at=now)
            )
            if fts is not None:
                conn.execute(
                    sa.text(
                        f"UPDATE {_INDEXES} SET row_count = row_count + :delta WHERE tenant_id = :t"
                    ),
                    {"delta": len(parsed) - superseded_total, "t": tenant_id},
                )
        return {"stored": stored}

    def _allocate_versions(
        self, conn: Connection, tenant_id: str, user_id: str, count: int, now: int
    ) -> tuple[int, int]:
        """Reserve `count` consecutive versions for the user: (owner id, first version). The
        statement takes the lock (see the module doc), so `now`, read before it, may be before
        the versions' recording: _update stamps updated_at again under the lock."""
        t = state_table
        insert_fn = sqlite_dialect.insert if self._sqlite else pg_dialect.insert
        next_owner = sa.select(sa.func.coalesce(sa.func.max(t.c.owner_id), 0) + 1)
        values = insert_fn(t).values(
            tenant_id=tenant_id,
            user_id=user_id,
            owner_id=next_owner.scalar_subquery(),
            last_version=count,
            active_items=count,
            updated_at=now,
        )
        stmt = values.on_conflict_do_update(
            index_elements=[t.c.tenant_id, t.c.user_id],
            set_={
                "last_version": t.c.last_version + count,
                "active_items": t.c.active_items + count,
                "updated_at": now,
            },
        ).returning(t.c.owner_id, t.c.last_version)
        owner, last = (int(v) for v in conn.execute(stmt).one())
        if last > _MAX_VERSION or owner > _MAX_OWNER:
            raise GatewayError(CONFLICT, "This user's memory is full.")
        return owner, last - count + 1

    def _resolve_targets(
        self, conn: Connection, tenant_id: str, user_id: str, ids: Sequence[str]
    ) -> dict[str, _Row]:
        if not ids:
            return {}
        i = items_table
        rows = (
            conn.execute(
                sa.select(i.c.pk, i.c.id, i.c.text, i.c.topic, i.c.tags, i.c.superseded_by).where(
                    i.c.tenant_id == tenant_id, i.c.user_id == user_id, i.c.id.in_(list(ids))
                )
            )
            .mappings()
            .all()
        )
        found: dict[str, _Row] = {row["id"]: row for row in rows}
        missing = [target for target in ids if target not in found]
        if missing:
            # Same answer for an unknown id and another user's id: nothing leaks.
            shown = [m[:40] for m in missing[:10]]
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise GatewayError(
                NOT_FOUND,
                "No memory item with that id for this user: " + ", ".join(shown) + more,
                details={"ids": shown, "missing": len(missing)},
            )
        for target in ids:
            row = found[target]
            if row["superseded_by"] is not None:
                raise GatewayError(
                    CONFLICT,
                    f"Memory item {target} was already corrected by {row['superseded_by']}; "
                    "supersede that item instead.",
                    details={"id": target, "superseded_by": row["superseded_by"]},
                )
        return found

    def _active_on_topic(
        self, conn: Connection, tenant_id: str, user_id: str, topic_key: str
    ) -> Sequence[_Row]:
        i = items_table
        return (
            conn.execute(
                sa.select(
                    i.c.pk, i.c.id, i.c.version, i.c.text, i.c.topic, i.c.tags, i.c.observed_at
                ).where(
                    i.c.tenant_id == tenant_id,
                    i.c.user_id == user_id,
                    i.c.topic_key == topic_key,
                    i.c.superseded_by.is_(None),
                )
            )
            .mappings()
            .all()
        )

    @staticmethod
    def _insert_item(
        conn: Connection,
        fts: str | None,
        tenant_id: str,
        user_id: str,
        pk: int,
        item_id: str,
        version: int,
        obs: _Observation,
        now: int,
        *,
        superseded_by: str | None = None,
    ) -> None:
        """Insert an observation: active (tag rows, in the search index), or already
        superseded by `superseded_by` (in the log only)."""
        i = items_table
        tags_json = json.dumps(obs.tags, ensure_ascii=False)
        conn.execute(
            i.insert().values(
                pk=pk,
                id=item_id,
                tenant_id=tenant_id,
                user_id=user_id,
                version=version,
                text=obs.text,
                source=obs.source,
                topic=obs.topic,
                topic_key=obs.topic_key,
                tags=tags_json,
                # Never after its recording (a time ahead within the clock skew is taken as now).
                observed_at=now if obs.observed_at is None else min(obs.observed_at, now),
                recorded_at=now,
                superseded_by=superseded_by,
                superseded_at=None if superseded_by is None else now,
            )
        )
        if superseded_by is not None:
            return
        if obs.tags:
            conn.execute(
                tags_table.insert(),
                [{"item_pk": pk, "tag_key": key} for key in {_tag_key(t) for t in obs.tags}],
            )
        if fts is not None:
            conn.execute(
                sa.text(
                    f"INSERT INTO {fts}(rowid, text, topic, tags) "
                    "VALUES (:pk, :text, :topic, :tags)"
                ),
                {
                    "pk": pk,
                    "text": search_text(obs.text),
                    "topic": _indexed(obs.topic),
                    "tags": search_text(tags_json),
                },
            )

    @staticmethod
    def _supersede(
        conn: Connection, fts: str | None, rows: Sequence[_Row], by: str, now: int
    ) -> list[str]:
        if not rows:
            return []
        i = items_table
        conn.execute(
            i.update()
            .where(i.c.pk.in_([row["pk"] for row in rows]), i.c.superseded_by.is_(None))
            .values(superseded_by=by, superseded_at=now)
        )
        # Tag rows serve filtering and counting active items only; the item keeps its tags.
        conn.execute(tags_table.delete().where(tags_table.c.item_pk.in_([r["pk"] for r in rows])))
        if fts is not None:
            _unindex(conn, fts, rows)
        return [str(row["id"]) for row in rows]

    # -- retrieval ---------------------------------------------------------------------------

    def retrieve_relevant_chunks(
        self,
        tenant_id: str,
        user_id: str,
        query: str,
        top_k: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The top_k active items for `query`, best first: {"chunks": [MemoryChunk]}."""
        if not isinstance(query, str):
            raise _invalid("query must be a string.")
        k = self.settings.default_top_k if top_k is None else top_k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
            raise _invalid(f"top_k must be an integer from 1 to {MAX_TOP_K}.")
        tag_keys = self._tag_filter(tags)
        with self.engine.connect() as conn:
            scope = self._sqlite_scope(conn, tenant_id, user_id) if self._sqlite else None
            chunks = self._search(conn, scope, tenant_id, user_id, query_terms(query), k, tag_keys)
        return {"chunks": _shown(chunks)}

    @staticmethod
    def _tag_filter(tags: Sequence[str] | None) -> list[str]:
        if tags is None:
            return []
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise _invalid("tags must be a list of strings.")
        keys: dict[str, None] = {}  # in order, each once
        for tag in tags:
            if not isinstance(tag, str):
                raise _invalid("tags must be a list of strings.")
            key = _tag_key(tag)
            if not key:  # no memory has a blank tag: dropping it would widen the filter
                raise _invalid("tags must be non-empty strings.")
            keys[key] = None
        return list(keys)

    def _search(
        self,
        conn: Connection,
        scope: _Scope | None,
        tenant_id: str,
        user_id: str,
        terms: Sequence[str],
        k: int,
        tag_keys: Sequence[str],
        counts: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """The top k chunks for `terms` (ORed), best first, recency breaking ties.

        `scope`: the user's index on SQLite (None before the user's first write), None on
        PostgreSQL. `counts`, when given, receives the number of rows of the whole index holding
        each term, for the terms where the search learnt it exactly (SQLite).
        """
        if not terms:
            return []
        if self._sqlite:
            if scope is None:
                return []
            hits = self._search_sqlite(conn, scope, tag_keys, terms, k, counts)
        else:
            hits = self._search_postgres(conn, tenant_id, user_id, tag_keys, terms, k)
        if not hits:
            return []
        i = items_table
        rows = {
            int(row["pk"]): row
            for row in conn.execute(
                sa.select(*_CHUNK_COLUMNS, i.c.tenant_id, i.c.user_id, i.c.superseded_by).where(
                    i.c.pk.in_([pk for pk, _ in hits])
                )
            ).mappings()
            # The search is keyed by user already; the rows must agree. (Checked here rather
            # than in SQL, where SQLite would rather scan the user's index than look up pks.)
            if row["tenant_id"] == tenant_id
            and row["user_id"] == user_id
            and row["superseded_by"] is None
        }
        ranked = sorted(
            ((score, rows[pk]) for pk, score in hits if pk in rows),
            key=lambda hit: (-hit[0], -hit[1]["observed_at"], -hit[1]["version"]),
        )
        return [_chunk(row, score) for score, row in ranked[:k]]

    @staticmethod
    def _sqlite_scope(conn: Connection, tenant_id: str, user_id: str) -> _Scope | None:
        """Where the user's items are indexed; None before the user's first write."""
        row = conn.execute(
            sa.text(
                f"SELECT x.n, x.row_count, s.owner_id FROM memory_user_state s JOIN {_INDEXES} x "
                "ON x.tenant_id = s.tenant_id WHERE s.tenant_id = :tenant AND s.user_id = :user"
            ),
            {"tenant": tenant_id, "user": user_id},
        ).first()
        if row is None:
            return None
        return _Scope(fts=_fts(int(row[0])), rows=int(row[1]), owner=int(row[2]))

    @staticmethod
    def _tag_sql(tag_keys: Sequence[str], pk_column: str, params: dict[str, Any]) -> str:
        """` AND <the row holds every tag>`, binding the tags into `params`."""
        if not tag_keys:
            return ""
        names: list[str] = []
        for n, key in enumerate(tag_keys):
            params[f"tag{n}"] = key
            names.append(f":tag{n}")
        params["ntags"] = len(tag_keys)
        return (
            f" AND (SELECT count(*) FROM memory_item_tags t WHERE t.item_pk = {pk_column}"
            f" AND t.tag_key IN ({', '.join(names)})) = :ntags"
        )

    def _search_postgres(
        self,
        conn: Connection,
        tenant_id: str,
        user_id: str,
        tag_keys: Sequence[str],
        terms: Sequence[str],
        k: int,
    ) -> list[tuple[int, float]]:
        params: dict[str, Any] = {
            "tenant": tenant_id,
            "user": user_id,
            "match": tsquery_expression(terms),
            "k": k,
        }
        tag_sql = self._tag_sql(tag_keys, "memory_items.pk", params)
        sql = (
            "SELECT memory_items.pk AS pk, "
            "ts_rank_cd(memory_items.search_vector, q.query, 1) AS score "
            "FROM memory_items, to_tsquery('english'::regconfig, :match) AS q(query) "
            "WHERE memory_items.tenant_id = :tenant AND memory_items.user_id = :user "
            "AND memory_items.superseded_by IS NULL "
            f"AND memory_items.search_vector @@ q.query{tag_sql} "
            "ORDER BY score DESC, memory_items.observed_at DESC, memory_items.version DESC "
            "LIMIT :k"
        )
        return [(int(r[0]), float(r[1])) for r in conn.execute(sa.text(sql), params)]

    def _search_sqlite(
        self,
        conn: Connection,
        scope: _Scope,
        tag_keys: Sequence[str],
        terms: Sequence[str],
        k: int,
        counts: dict[str, int] | None,
    ) -> list[tuple[int, float]]:
        """(pk, score) of at least the top k rows (all rows tied with the k-th included).

        The index holds active items only, and the user's rows are one rowid range, so the
        search needs no join. bm25 costs about a microsecond per row it scores, and an OR of
        common words matches much of a large memory, so the search scores only the rows that
        can reach the top k (MaxScore): a term adds less than idf * tf_bound to bm25; if the
        k-th best score L of some rows exceeds the summed bounds of the most common terms, a
        row holding only those cannot enter the top k, and only rows holding one of the other
        ("essential") terms are scored: `E AND R` and `E NOT R`, whose bm25 is the full query's
        (every term appears once, in the same order). L comes from a cheap probe: up to
        PRUNE_PROBE_ROWS rows holding all of the most common terms. The result equals the
        unpruned query's, scores bit for bit.
        """
        fts, n_rows = scope.fts, scope.rows
        lo, hi = _pk_range(scope.owner)
        params: dict[str, Any] = {"lo": lo, "hi": hi}
        where = f"rowid BETWEEN :lo AND :hi{self._tag_sql(tag_keys, f'{fts}.rowid', params)}"
        cap = max(PRUNE_COUNT_MIN, n_rows // 10)
        df: list[tuple[str, int]] = []  # (term, rows of the whole index holding it; maybe capped)
        most: dict[str, float] = {}  # term -> most occurrences of it in one row, where known
        for term in terms:
            stats = None
            if term.isascii():  # the vocabulary holds stems; porter_stem matches FTS5's
                stats = conn.execute(
                    sa.text(f"SELECT doc, cnt FROM {fts}_vocab WHERE term = :t"),
                    {"t": porter_stem(term)},
                ).first()
            if stats is not None:
                n = int(stats[0])
                most[term] = float(int(stats[1]) - n + 1)
            else:  # not in the vocabulary under that stem: count (up to `cap`) what MATCH finds
                n = int(
                    conn.execute(
                        sa.text(
                            f"SELECT count(*) FROM (SELECT 1 FROM {fts} WHERE {fts} MATCH :m "
                            "LIMIT :cap)"
                        ),
                        {"m": fts5_match_expression([term]), "cap": cap},
                    ).scalar_one()
                )
            if counts is not None and (stats is not None or n < cap):  # exact counts only
                counts[term] = n
            if n:  # a term found nowhere adds nothing to any score
                df.append((term, n))
        if not df:
            return []
        df.sort(key=lambda tn: (tn[1], tn[0]))  # rarest first: the order of the phrases
        essential = self._essential_terms(conn, fts, where, params, df, most, k, n_rows)
        if essential is None:
            arms = [fts5_match_expression(t for t, _ in df)]
        else:
            rest = fts5_match_expression(t for t, _ in df[len(essential) :])
            head = fts5_match_expression(essential)
            arms = [f"({head}) AND ({rest})", f"({head}) NOT ({rest})"]
        inner = " UNION ALL ".join(
            f"SELECT rowid AS pk, {_bm25(fts)} AS score FROM {fts} "
            f"WHERE {fts} MATCH :arm{n} AND {where}"
            for n in range(len(arms))
        )
        params.update({f"arm{n}": arm for n, arm in enumerate(arms)})
        limit = k + TIE_MARGIN
        hits = [
            (int(r[0]), float(r[1]))
            for r in conn.execute(
                sa.text(f"SELECT pk, score FROM ({inner}) ORDER BY score DESC LIMIT :limit"),
                {**params, "limit": limit},
            )
        ]
        if len(hits) == limit and hits[-1][1] >= hits[k - 1][1]:
            # More rows may tie with the k-th than were fetched: order them all by recency.
            hits = [
                (int(r[0]), float(r[1]))
                for r in conn.execute(
                    sa.text(
                        f"SELECT s.pk, s.score FROM ({inner}) AS s CROSS JOIN memory_items "
                        "ON memory_items.pk = s.pk WHERE s.score >= :least "
                        "ORDER BY s.score DESC, memory_items.observed_at DESC, "
                        "memory_items.version DESC LIMIT :k"
                    ),
                    {**params, "least": hits[k - 1][1], "k": k},
                )
            ]
        return hits

    @staticmethod
    def _essential_terms(
        conn: Connection,
        fts: str,
        where: str,
        params: Mapping[str, Any],
        df: Sequence[tuple[str, int]],
        most: Mapping[str, float],
        k: int,
        n_rows: int,
    ) -> list[str] | None:
        """The rarest terms, one of which a top-k row must hold; None when pruning would not
        pay or could not be proven safe. `df` is sorted rarest first."""
        if len(df) < 2 or sum(n for _, n in df) <= PRUNE_MIN_ROWS:
            return None
        common_first = df[::-1]
        floor: float | None = None
        for size in range(len(common_first), 1, -1):
            probe = fts5_match_expression((t for t, _ in common_first[:size]), "AND")
            scores = sorted(
                (
                    float(r[0])
                    for r in conn.execute(
                        sa.text(
                            f"SELECT {_bm25(fts)} FROM {fts} WHERE {fts} MATCH :probe AND {where} "
                            "LIMIT :probe_rows"
                        ),
                        {**params, "probe": probe, "probe_rows": PRUNE_PROBE_ROWS},
                    )
                ),
                reverse=True,
            )
            if len(scores) >= k:
                floor = scores[k - 1]
                break
        if floor is None:
            return None
        bound = 0.0
        skipped = 0
        for _term, n in common_first:
            # FTS5: idf = ln((N - n + 0.5) / (n + 0.5)), at least 1e-6; with n at most the
            # true count (a capped count is lower) this is at least the idf bm25 uses.
            idf = max(1e-6, math.log((n_rows - n + 0.5) / (n + 0.5)))
            term_bound = idf * _tf_bound(most.get(_term))
            if bound + term_bound >= floor:
                break
            bound += term_bound
            skipped += 1
        if skipped == 0 or skipped == len(df):
            return None
        return [t for t, _ in df[: len(df) - skipped]]

    # -- answers -----------------------------------------------------------------------------

    def search_or_ask(self, tenant_id: str, user_id: str, question: str) -> dict[str, Any]:
        """{"answer", "found", "citations": [MemoryChunk]} from the user's memory."""
        if not isinstance(question, str):
            raise _invalid("question must be a string.")
        terms = query_terms(question)
        with self.engine.connect() as conn:
            counts: dict[str, int] = {}
            scope = self._sqlite_scope(conn, tenant_id, user_id) if self._sqlite else None
            candidates = self._search(
                conn, scope, tenant_id, user_id, terms, ANSWER_CANDIDATES, [], counts
            )
            relevant = self._above_floor(
                conn, scope, tenant_id, user_id, question, terms, candidates, counts
            )
        try:
            answer = self.answerer.answer(question, relevant)
        except GatewayError:
            raise
        except Exception as exc:  # a plugged-in answerer failed: nothing about it leaks
            _log.exception("memory answerer %s failed", type(self.answerer).__name__)
            raise internal_error() from exc
        by_id = {chunk["id"]: chunk for chunk in relevant}
        citations: list[dict[str, Any]] = []
        for used in answer.used:
            chunk = by_id.pop(used, None)
            if chunk is not None:
                citations.append(chunk)
        if not answer.found or not citations:
            text = answer.text if not answer.found and answer.text else NOTHING_FOUND
            return {"answer": text, "found": False, "citations": []}
        return {"answer": answer.text, "found": True, "citations": _shown(citations)}

    def _above_floor(
        self,
        conn: Connection,
        scope: _Scope | None,
        tenant_id: str,
        user_id: str,
        question: str,
        terms: Sequence[str],
        candidates: list[dict[str, Any]],
        counts: Mapping[str, int],
    ) -> list[dict[str, Any]]:
        """The candidates that match at least one informative question term.

        Informative: not a question-framing word ("prefer", "usually", "user", 好き...) nor a
        word of the user's own id (it says whom the question is about, not what) unless the
        question has nothing else, nor a CJK letter pair that is grammar (です, の名, 예요: see
        grammar_pairs()), and (once the user has enough items) not present in more than
        COMMON_TERM_SHARE of them, like the user's own name. A question whose informative
        terms are all grammar pairs (one written in hiragana only, ぶどう) is answered only by
        an item holding every one of them.
        """
        if not candidates:
            return []
        own = set(query_terms(user_id))
        informative = [
            t
            for t in terms
            if t not in FRAMING_WORDS and t not in CJK_FRAMING_TERMS and t not in own
        ]
        grammar = grammar_pairs(question)
        key_terms = [t for t in informative if t not in grammar]
        every = not key_terms and bool(informative)
        if not key_terms:
            key_terms = informative or list(terms)
        active = self._active_count(conn, tenant_id, user_id)
        pks = self._pks(conn, [c["id"] for c in candidates])
        evidence: set[str] = set()
        if every:  # all grammar pairs: an item must hold them all
            held = set(pks.values())
            for term in key_terms:
                held &= self._matching(conn, scope, term, list(held))
            return [c for c in candidates if pks.get(c["id"]) in held]
        for term in key_terms:
            matched = self._matching(conn, scope, term, list(pks.values()))
            if not matched:
                continue
            if active >= COMMON_TERM_MIN_ITEMS:
                cap = int(active * COMMON_TERM_SHARE) + 1
                # The index-wide count (when known) bounds the user's: skip the count if it can.
                if counts.get(term, cap) >= cap and (
                    self._term_count(conn, scope, tenant_id, user_id, term, cap) >= cap
                ):
                    continue
            evidence.update(item_id for item_id, pk in pks.items() if pk in matched)
        return [c for c in candidates if c["id"] in evidence]

    def _active_count(self, conn: Connection, tenant_id: str, user_id: str) -> int:
        s = state_table
        value = conn.execute(
            sa.select(s.c.active_items).where(s.c.tenant_id == tenant_id, s.c.user_id == user_id)
        ).scalar()
        return int(value or 0)

    @staticmethod
    def _pks(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
        i = items_table
        rows = conn.execute(sa.select(i.c.id, i.c.pk).where(i.c.id.in_(list(ids))))
        return {str(r[0]): int(r[1]) for r in rows}

    @staticmethod
    def _matching(
        conn: Connection, scope: _Scope | None, term: str, pks: Sequence[int]
    ) -> set[int]:
        """Which of `pks` hold `term`; `scope` on SQLite (the user's index), None on PostgreSQL."""
        if not pks:
            return set()
        params: dict[str, Any] = {f"p{n}": pk for n, pk in enumerate(pks)}
        in_list = ", ".join(f":p{n}" for n in range(len(pks)))
        if scope is not None:
            params["match"] = fts5_match_expression([term])
            fts = scope.fts
            sql = f"SELECT rowid FROM {fts} WHERE {fts} MATCH :match AND rowid IN ({in_list})"
        else:
            params["match"] = tsquery_expression([term])
            sql = (
                f"SELECT pk FROM memory_items WHERE pk IN ({in_list}) "
                "AND search_vector @@ to_tsquery('english'::regconfig, :match)"
            )
        return {int(r[0]) for r in conn.execute(sa.text(sql), params)}

    @staticmethod
    def _term_count(
        conn: Connection, scope: _Scope | None, tenant_id: str, user_id: str, term: str, cap: int
    ) -> int:
        """How many of the user's active items hold `term`, counting no further than `cap`.

        `scope`: the user's index on SQLite, None on PostgreSQL."""
        params: dict[str, Any] = {"tenant": tenant_id, "user": user_id, "cap": cap}
        if scope is not None:
            lo, hi = _pk_range(scope.owner)
            params.update(match=fts5_match_expression([term]), lo=lo, hi=hi)
            sql = (
                f"SELECT count(*) FROM (SELECT 1 FROM {scope.fts} WHERE {scope.fts} "
                "MATCH :match AND rowid BETWEEN :lo AND :hi LIMIT :cap)"
            )
        else:
            params["match"] = tsquery_expression([term])
            sql = (
                "SELECT count(*) FROM (SELECT 1 FROM memory_items WHERE tenant_id = :tenant "
                "AND user_id = :user AND superseded_by IS NULL "
                "AND search_vector @@ to_tsquery('english'::regconfig, :match) LIMIT :cap) s"
            )
        return int(conn.execute(sa.text(sql), params).scalar_one())

    # -- resources ---------------------------------------------------------------------------

    def versions_since(
        self, tenant_ids: Sequence[str], since_us: int
    ) -> list[tuple[str, str, int, int]]:
        """(tenant, user, last version, updated at) of the users of `tenant_ids` whose memory
        gained a version at or after `since_us` (for change announcements)."""
        if not tenant_ids:
            return []
        s = state_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(s.c.tenant_id, s.c.user_id, s.c.last_version, s.c.updated_at).where(
                    s.c.tenant_id.in_(list(tenant_ids)), s.c.updated_at >= since_us
                )
            ).all()
        return [(str(t), str(u), int(v), int(at)) for t, u, v, at in rows]

    def profile(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        """What is known about the user: facts by topic, tag counts, recent items, counts."""
        i, s = items_table, state_table
        mine = (i.c.tenant_id == tenant_id, i.c.user_id == user_id)
        active = (*mine, i.c.superseded_by.is_(None))
        with self.engine.connect() as conn:
            state = (
                conn.execute(
                    sa.select(
                        s.c.owner_id, s.c.last_version, s.c.active_items, s.c.updated_at
                    ).where(s.c.tenant_id == tenant_id, s.c.user_id == user_id)
                )
                .mappings()
                .first()
            )
            facts = [
                _profile_item(row)
                for row in conn.execute(
                    sa.select(*_CHUNK_COLUMNS)
                    .where(*active, i.c.topic_key.is_not(None))
                    .order_by(i.c.topic_key, i.c.version.desc())
                    .limit(PROFILE_FACTS_LIMIT + 1)
                ).mappings()
            ]
            recent = [
                _profile_item(row)
                for row in conn.execute(
                    sa.select(*_CHUNK_COLUMNS)
                    .where(*active)
                    .order_by(i.c.version.desc())
                    .limit(PROFILE_RECENT_LIMIT)
                ).mappings()
            ]
            tag_rows: Sequence[Any] = []
            if state is not None:
                # The tags of the user's active items: one range of the tag table's key.
                tag_count = sa.func.count().label("items")
                tag_rows = conn.execute(
                    sa.select(tags_table.c.tag_key, tag_count)
                    .where(tags_table.c.item_pk.between(*_pk_range(int(state["owner_id"]))))
                    .group_by(tags_table.c.tag_key)
                    .order_by(tag_count.desc(), tags_table.c.tag_key)
                    .limit(PROFILE_TAGS_LIMIT)
                ).all()
        last_version = int(state["last_version"]) if state else 0
        active_items = int(state["active_items"]) if state else 0
        return {
            "user_id": user_id,
            "items": {
                "active": active_items,
                "superseded": last_version - active_items,
                "total": last_version,
            },
            "last_version": last_version,
            "last_updated": _iso(state["updated_at"]) if state else None,
            "facts": facts[:PROFILE_FACTS_LIMIT],
            "facts_truncated": len(facts) > PROFILE_FACTS_LIMIT,
            "tags": [{"tag": str(row[0]), "items": int(row[1])} for row in tag_rows],
            "recent": recent,
        }

    def log(
        self,
        tenant_id: str,
        user_id: str,
        after_version: int = 0,
        *,
        limit: int = LOG_PAGE_LIMIT,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Every version, oldest first, with superseded markers; pages of `limit` entries.
        With `max_bytes`, the page also ends after the entry that makes its entries' compact
        JSON longer than `max_bytes` characters, which no rendering of them fits in: the
        caller cuts it to what its rendering allows (see resources._memory_log) instead of
        this reading up to `limit` long entries it would throw away."""
        limit = max(1, min(int(limit), LOG_PAGE_LIMIT))
        i = items_table
        entries: list[dict[str, Any]] = []
        more = False
        size = 0
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*_CHUNK_COLUMNS, i.c.recorded_at, i.c.superseded_by, i.c.superseded_at)
                .where(
                    i.c.tenant_id == tenant_id,
                    i.c.user_id == user_id,
                    i.c.version > int(after_version),
                )
                .order_by(i.c.version)
                .limit(limit + 1)
                .execution_options(yield_per=_LOG_BATCH)
            ).mappings()
            for row in rows:
                if len(entries) == limit or (max_bytes is not None and size > max_bytes):
                    more = True
                    break
                entry = _profile_item(row)
                entry["recorded_at"] = _iso(row["recorded_at"])
                entry["active"] = row["superseded_by"] is None
                entry["superseded_by"] = row["superseded_by"]
                entry["superseded_at"] = (
                    _iso(row["superseded_at"]) if row["superseded_at"] is not None else None
                )
                entries.append(entry)
                if max_bytes is not None:
                    size += len(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
            rows.close()
        return {
            "user_id": user_id,
            "entries": entries,
            "next_after_version": entries[-1]["version"] if more else None,
        }

    # -- erasure -----------------------------------------------------------------------------

    def erase_user(self, conn: Connection, tenant_id: str, user_id: str) -> int:
        """Delete everything memory holds about one user, in the caller's write transaction
        (`Store.forget_user`): its items, every version, their tags, its version counter and,
        on SQLite, its rows of the tenant's search index (and that index's row count). Returns
        how many items (versions) it removed. Other users' items, and their scores, stay.

        The first statement deletes the user's version counter, which every memory write
        updates first (module doc): on PostgreSQL an update in flight commits before it and
        its items are deleted below; one that starts later waits, then finds the user gone
        (`registered`) and writes nothing. On SQLite the whole transaction holds the write
        lock, so a write runs wholly before it or finds the user gone."""
        s, i = state_table, items_table
        conn.execute(s.delete().where(s.c.tenant_id == tenant_id, s.c.user_id == user_id))
        mine = (i.c.tenant_id == tenant_id, i.c.user_id == user_id)
        if self._sqlite:
            _register_sqlite_functions(conn.connection.driver_connection)
            n = self._index_of(conn, tenant_id)
            if n is not None:
                self._unindex_user(conn, n, tenant_id, user_id)
        conn.execute(
            tags_table.delete().where(tags_table.c.item_pk.in_(sa.select(i.c.pk).where(*mine)))
        )
        return int(conn.execute(i.delete().where(*mine)).rowcount or 0)

    @staticmethod
    def _unindex_user(conn: Connection, n: int, tenant_id: str, user_id: str) -> None:
        """SQLite: take the user's active items out of index n (superseded ones left it when
        they were superseded) and lower its row count; then merge the index's segments
        ('optimize'), which drops the deleted rows' words from it instead of leaving them
        behind delete markers."""
        i = items_table
        rows = (
            conn.execute(
                sa.select(i.c.pk, i.c.text, i.c.topic, i.c.tags).where(
                    i.c.tenant_id == tenant_id,
                    i.c.user_id == user_id,
                    i.c.superseded_by.is_(None),
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        fts = _fts(n)
        _unindex(conn, fts, rows)
        conn.execute(
            sa.text(f"UPDATE {_INDEXES} SET row_count = row_count - :gone WHERE n = :n"),
            {"gone": len(rows), "n": n},
        )
        conn.execute(sa.text(f"INSERT INTO {fts}({fts}) VALUES ('optimize')"))


def _profile_item(row: _Row) -> dict[str, Any]:
    item = _chunk(row, 0.0)
    del item["score"]
    return item
