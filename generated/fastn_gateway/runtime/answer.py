"""Answering a question about a user from the memory items retrieved for it.

`MemoryStore.search_or_ask` retrieves the user's most relevant memory items, drops those below
its relevance floor and hands the rest, best first, to an `Answerer`. The answerer is a
protocol so a deployment can plug in a language model; the default, `ExtractiveAnswerer`,
needs no model and no network: it quotes the best-matching sentences of the best items.

An answerer must only cite ids of the chunks it was given; the store ignores any other id and
treats an answer that claims `found` without citing anything as "nothing found".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

NOTHING_FOUND = "Memory holds nothing about this for the user, so there is no remembered answer."


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    text: str
    found: bool
    used: tuple[str, ...] = ()  # ids of the memory items the answer relies on, most relevant first


@runtime_checkable
class Answerer(Protocol):
    def answer(self, question: str, chunks: Sequence[Mapping[str, Any]]) -> Answer:
        """Answer `question` from `chunks` (MemoryChunk dicts, best first; may be empty)."""
        ...


_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_SUFFIXES = ("ies", "ing", "ed", "es", "s")


def _stem(word: str) -> str:
    """A deliberately crude stemmer: enough to pair "meetings" with "meeting" in one sentence."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.casefold())}


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractiveAnswerer:
    """Quotes the best sentences of the best items, each with the date it was noted.

    `relative_floor`: a further item is quoted only if its score is at least this fraction of
    the best item's score. `max_items` bounds how many items are quoted.
    """

    max_items: int = 3
    relative_floor: float = 0.6
    max_sentences_per_item: int = 2
    max_chars_per_item: int = 300

    def answer(self, question: str, chunks: Sequence[Mapping[str, Any]]) -> Answer:
        if not chunks:
            return Answer(text=NOTHING_FOUND, found=False)
        best_score = float(chunks[0].get("score") or 0.0)
        chosen: list[Mapping[str, Any]] = []
        seen_texts: set[str] = set()
        for chunk in chunks:
            if len(chosen) >= self.max_items:
                break
            score = float(chunk.get("score") or 0.0)
            if chosen and best_score > 0 and score < best_score * self.relative_floor:
                break
            key = " ".join(str(chunk.get("text", "")).casefold().split())
            if key in seen_texts:
                continue
            seen_texts.add(key)
            chosen.append(chunk)
        wanted = _stems(question)
        parts = [self._quote(chunk, wanted) for chunk in chosen]
        text = "From memory: " + parts[0]
        if len(parts) > 1:
            text += " Also noted: " + " ".join(parts[1:])
        return Answer(text=text, found=True, used=tuple(str(c["id"]) for c in chosen))

    def _quote(self, chunk: Mapping[str, Any], wanted: set[str]) -> str:
        body = str(chunk.get("text", "")).strip()
        sentences = [s.strip() for s in _SENTENCE_END.split(body) if s.strip()]
        if len(sentences) > 1:
            scored = [(len(_stems(s) & wanted), -i) for i, s in enumerate(sentences)]
            ranked = sorted(range(len(sentences)), key=lambda i: scored[i], reverse=True)
            keep = sorted(ranked[: self.max_sentences_per_item])
            if scored[ranked[0]][0] == 0:
                keep = [0]
            body = " ".join(sentences[i] for i in keep)
        body = _shorten(body, self.max_chars_per_item).rstrip(" .;")
        noted = str(chunk.get("observed_at", ""))[:10]
        return f"{body} (noted {noted})." if noted else f"{body}."
