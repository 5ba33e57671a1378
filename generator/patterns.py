"""Which regular expressions can take exponential time on a short input (catastrophic backtracking).

A `pattern` in a manifest is run by Python's backtracking `re` three times: by the compiler
against a `default` (GEN203), and by the generated gateway against every argument a caller
sends (its fast check, then jsonschema for the error). `^(a+)+$` against thirty `a`s and a `!`
tries 2**30 ways to split the run before it fails: 25 s in the compiler, and at run time any
caller holding a key could hold a server thread for as long.

`hazard()` reads the parsed pattern and names the shapes that cause it, a repetition of
something that can match one text in several ways:

- a part of variable length (`a+`, `a?`, `|a`) that can end (or start) an iteration of an
  unbounded repetition and take a character that could also start (or end) the next:
  `(a+)+`, `(\\w+\\s?)*`, `(a*)*`, `(aa?)+`, `(x+x+)+`; `(\\.[a-z]+)*` and `(\\d+,)*` are
  safe, since a separator that the inner part cannot take marks each iteration;
- an unbounded repetition of alternatives two of which can start with the same character:
  `(a|aa)+`, `(ab|a|b)*` (two ways to split one text must differ in an iteration that starts
  at the same place).

It errs on the side of naming: `([ab]c|bd)+` and `(a?)*` are named though they backtrack
little (`(ac|b[cd])+`, `a*` say the same). It does not claim to find every slow pattern: a
backreference is taken to match anything, and that is all it reads of one. Polynomial
backtracking (`\\s*\\s*$`) is not named: its cost grows with a power of the input's length,
not exponentially.
Character classes are compared on a sample alphabet (ASCII, Latin-1 and Latin Extended, a few
other scripts' letters and digits, and every character the pattern names).
"""

from __future__ import annotations

import functools
import re
import re._constants as c  # the parser's own opcodes (`re._parser.parse` is what `re` runs)
import re._parser as sre
from collections.abc import Iterable, Iterator
from typing import Any

# A repetition that may run this many times or more counts as unbounded: `(a+){1,50}` tries as
# many splits as `(a+)+` for inputs of 50 characters.
_MANY = 10

_SAMPLES = "\u0660\u0966\u00a0\u1680\u2028\u3000\u0391\u03b1\u0430\u05d0\u0627\u4e00\uac00"
_BASE = frozenset(chr(i) for i in range(0x250)) | frozenset(_SAMPLES)


@functools.lru_cache(maxsize=1024)
def hazard(pattern: str) -> str | None:
    """Why `pattern` can backtrack exponentially (naming the part), or None (also for a pattern
    that does not compile: that is reported on its own)."""
    try:
        parsed = sre.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    alphabet = _BASE | frozenset(_literals(parsed.data))
    if parsed.state.flags & re.IGNORECASE:
        alphabet |= frozenset(_swapped(ch) for ch in alphabet)
    try:
        return _Analysis(alphabet, bool(parsed.state.flags & re.IGNORECASE)).scan(parsed.data)
    except RecursionError:  # nested past what the parser itself handles: reported elsewhere
        return None


def _swapped(ch: str) -> str:
    """`ch` in the other case, when that is one character (`ß` upper-cases to `SS`)."""
    other = ch.swapcase()
    return other if len(other) == 1 else ch


def _literals(items: Iterable[tuple[Any, Any]]) -> Iterator[str]:
    for op, av in items:
        if op in (c.LITERAL, c.NOT_LITERAL):
            yield chr(av)
        elif op is c.IN:
            for sub_op, sub_av in av:
                if sub_op is c.LITERAL:
                    yield chr(sub_av)
                elif sub_op is c.RANGE:
                    yield chr(sub_av[0])
                    yield chr(sub_av[1])
        else:
            for sub in _children(op, av):
                yield from _literals(sub)


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-sequences of one parsed item."""
    if op is c.SUBPATTERN:
        return [av[3]]
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        return [av[2]]
    if op is c.BRANCH:
        return list(av[1])
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [av[1]]
    if op is c.ATOMIC_GROUP:
        return [av]
    if op is c.GROUPREF_EXISTS:
        return [s for s in av[1:] if s is not None]
    return []


@functools.lru_cache(maxsize=16)
def _category(name: str, alphabet: frozenset[str]) -> frozenset[str]:
    regex = re.compile(
        {
            "CATEGORY_DIGIT": r"\d",
            "CATEGORY_NOT_DIGIT": r"\D",
            "CATEGORY_SPACE": r"\s",
            "CATEGORY_NOT_SPACE": r"\S",
            "CATEGORY_WORD": r"\w",
            "CATEGORY_NOT_WORD": r"\W",
        }.get(name, r"[\s\S]")
    )
    return frozenset(ch for ch in alphabet if regex.fullmatch(ch))


def _unbounded(op: Any, av: Any) -> bool:
    # A possessive repetition never gives back what it took: it does not backtrack.
    return op in (c.MAX_REPEAT, c.MIN_REPEAT) and (av[1] is c.MAXREPEAT or av[1] >= _MANY)


class _Analysis:
    def __init__(self, alphabet: frozenset[str], ignore_case: bool) -> None:
        self.alphabet = alphabet
        self.ignore_case = ignore_case

    def _char(self, ch: str) -> frozenset[str]:
        return frozenset({ch, _swapped(ch)}) if self.ignore_case else frozenset({ch})

    def _one(self, op: Any, av: Any) -> frozenset[str] | None:
        """The characters a one-character item matches (None: not such an item)."""
        if op is c.LITERAL:
            return self._char(chr(av))
        if op is c.NOT_LITERAL:
            return self.alphabet - self._char(chr(av))
        if op is c.ANY:
            return self.alphabet - {"\n"}
        if op is c.IN:
            out: set[str] = set()
            negate = False
            for sub_op, sub_av in av:
                if sub_op is c.NEGATE:
                    negate = True
                elif sub_op is c.LITERAL:
                    out |= self._char(chr(sub_av))
                elif sub_op is c.RANGE:
                    lo, hi = sub_av
                    out |= {ch for ch in self.alphabet if lo <= ord(ch) <= hi}
                    if self.ignore_case:
                        out |= {_swapped(ch) for ch in out}
                elif sub_op is c.CATEGORY:
                    out |= _category(str(sub_av), self.alphabet)
                else:  # an opcode this reading does not know: anything
                    out |= self.alphabet
            return self.alphabet - out if negate else frozenset(out)
        return None

    def nullable(self, seq: Iterable[tuple[Any, Any]]) -> bool:
        return all(self._nullable_item(op, av) for op, av in seq)

    def _nullable_item(self, op: Any, av: Any) -> bool:
        if self._one(op, av) is not None:
            return False
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT, c.GROUPREF):  # zero-width, or may be empty
            return True
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            return av[0] == 0 or self.nullable(av[2])
        if op is c.BRANCH:
            return any(self.nullable(b) for b in av[1])
        if op is c.GROUPREF_EXISTS:
            return any(self.nullable(s) for s in av[1:] if s is not None) or av[2] is None
        return all(self.nullable(s) for s in _children(op, av))

    def edge(self, seq: list[tuple[Any, Any]], last: bool) -> frozenset[str]:
        """The characters that can start (`last`: end) a match of `seq`."""
        out: set[str] = set()
        for op, av in reversed(seq) if last else seq:
            out |= self._edge_item(op, av, last)
            if not self._nullable_item(op, av):
                break
        return frozenset(out)

    def _edge_item(self, op: Any, av: Any, last: bool) -> frozenset[str]:
        one = self._one(op, av)
        if one is not None:
            return one
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return frozenset()
        if op is c.GROUPREF:  # whatever the group took
            return self.alphabet
        out: set[str] = set()
        for sub in _children(op, av):
            out |= self.edge(sub, last)
        return frozenset(out)

    def chars(self, seq: Iterable[tuple[Any, Any]]) -> frozenset[str]:
        """Every character `seq` can consume."""
        out: set[str] = set()
        for op, av in seq:
            one = self._one(op, av)
            if one is not None:
                out |= one
            elif op is c.GROUPREF:
                out |= self.alphabet
            elif op not in (c.AT, c.ASSERT, c.ASSERT_NOT):
                for sub in _children(op, av):
                    out |= self.chars(sub)
        return frozenset(out)

    def edge_repeats(self, seq: list[tuple[Any, Any]], last: bool) -> Iterator[Any]:
        """The parts of variable length that can end (`last`) or start a match of `seq`:
        repetitions (`a+`, `a?`) and alternatives one of which may be empty (`a(|a)`, which is
        how the parser writes `a|aa`)."""
        for op, av in reversed(seq) if last else seq:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] != av[1]:
                yield av[2]
            elif op is c.BRANCH and any(self.nullable(b) for b in av[1]):
                yield [(op, av)]
            if op is not c.POSSESSIVE_REPEAT and op is not c.ATOMIC_GROUP:
                for sub in _children(op, av):
                    if op not in (c.ASSERT, c.ASSERT_NOT):
                        yield from self.edge_repeats(list(sub), last)
            if not self._nullable_item(op, av):
                return

    def scan(self, seq: Iterable[tuple[Any, Any]]) -> str | None:
        for op, av in seq:
            if _unbounded(op, av):
                found = self._ambiguous_body(list(av[2]))
                if found is not None:
                    return found
            for sub in _children(op, av):
                found = self.scan(sub)
                if found is not None:
                    return found
        return None

    def _ambiguous_body(self, body: list[tuple[Any, Any]]) -> str | None:
        """Why the repeated `body` can split one text into iterations in several ways."""
        first, last = self.edge(body, last=False), self.edge(body, last=True)
        for inner in self.edge_repeats(body, last=True):
            if self.chars(inner) & first:
                return "a repeated part can end one iteration or begin the next"
        for inner in self.edge_repeats(body, last=False):
            if self.chars(inner) & last:
                return "a repeated part can end one iteration or begin the next"
        core = [(op, av) for op, av in body if not self._nullable_item(op, av)]
        while len(core) == 1 and core[0][0] is c.SUBPATTERN:
            sub = core[0][1][3]
            core = [(op, av) for op, av in sub if not self._nullable_item(op, av)]
        if len(core) == 1 and core[0][0] is c.BRANCH:
            # `(a|aa)+` splits a run of `a`s into iterations in as many ways as there are sums
            # of 1s and 2s; only alternatives that can start alike let two splits begin alike.
            starts = [self.edge(list(b), last=False) for b in core[0][1][1]]
            for i, a in enumerate(starts):
                if any(a & b for b in starts[i + 1 :]):
                    return "a repetition of alternatives that can start alike"
        return None
