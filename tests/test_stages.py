"""Unit tests per stage: load (source map), validate (located schema errors), compile, names,
render (escaping), diagnostics rendering, and docs freshness."""

from __future__ import annotations

import ast
import gc
import inspect
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import ROOT, make_project, options

from generator import api, docs
from generator.cli import main as cli_main
from generator.compile import compile_project
from generator.diagnostics import (
    CODES,
    UNSAFE_IN_NAMES,
    Span,
    error,
    github_message,
    normalise,
    render,
)
from generator.load import declared_kind, load_text
from generator.names import ClassName, PyIdent, is_valid_tool_name
from generator.render import docstring, literal
from generator.validate import manifest_schema, validate_one


def test_source_map_points_at_values_and_keys() -> None:
    doc, diags = load_text("m.yaml", b"version: 1\nkind: types\ntypes:\n  A:\n    type: object\n")
    assert doc is not None and not diags
    assert doc.span(("types", "A", "type")) == Span(file="m.yaml", line=5, col=11)
    assert doc.key_span(("types", "A")) == Span(file="m.yaml", line=4, col=3)
    # an unknown path falls back to its nearest known ancestor
    assert doc.span(("types", "A", "nope", 3)) == Span(file="m.yaml", line=5, col=5)


def test_yaml_scalars_stay_json_scalars() -> None:
    doc, _ = load_text("m.yaml", b"a: 2026-12-31\nb: true\nc: 1.5\nd: ~\ne: '.nan'\n")
    assert doc is not None
    assert doc.data == {"a": "2026-12-31", "b": True, "c": 1.5, "d": None, "e": ".nan"}


def test_booleans_are_yaml_1_2s() -> None:
    # YAML 1.1 (PyYAML's default) read Norway's code in `enum: [SE, NO, DK]` as false
    text = b"enum: [SE, NO, DK]\nb: [yes, No, ON, off, y, N]\non: 1\nt: [true, True, TRUE, False]\n"
    doc, diags = load_text("m.yaml", text)
    assert doc is not None and not diags
    assert doc.data == {
        "enum": ["SE", "NO", "DK"],
        "b": ["yes", "No", "ON", "off", "y", "N"],
        "on": 1,
        "t": [True, True, True, False],
    }


def test_a_yaml_1_1_boolean_is_a_located_type_error_with_a_hint() -> None:
    text = (
        "version: 1\nkind: connector\nname: c\ntitle: C\ndescription: C.\n"
        "base_url: https://api.example.com\nauth: {type: none}\ncapabilities:\n"
        "  - name: get\n    description: Get.\n    scope: read\n"
        "    annotations: {read_only: yes}\n"
        "    input: {type: object}\n    output: {type: object}\n"
        "    http: {method: GET, path: /x}\n"
    )
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    found = [(d.code, d.span.line, d.span.col, d.message, d.hint) for d in validate_one(doc)]
    assert found == [
        (
            "GEN103",
            12,
            30,
            "capabilities/0/annotations/read_only: expected boolean, got string",
            "manifests are YAML 1.2: write true or false (yes is text)",
        )
    ]


def test_an_unquoted_placeholder_where_text_belongs_is_told_to_be_quoted() -> None:
    """`X-Ticket: {ticket_id}` in a flow mapping is YAML's `{ticket_id: null}`, an object where
    a header value is text: the hint says why and how to write it."""
    text = (
        "version: 1\nkind: connector\nname: c\ntitle: C\ndescription: C.\n"
        "base_url: https://api.example.com\nauth: {type: none}\ncapabilities:\n"
        "  - name: get\n    description: Get.\n    scope: read\n"
        "    input: {type: object, properties: {ticket_id: {type: string}}}\n"
        "    output: {type: object}\n"
        "    http: {method: GET, path: /x, headers: {X-Ticket: {ticket_id}}}\n"
    )
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    found = [(d.code, d.span.line, d.span.col, d.message, d.hint) for d in validate_one(doc)]
    assert found == [
        (
            "GEN103",
            14,
            55,
            "capabilities/0/http/headers/X-Ticket: expected string, got object",
            "unquoted, YAML reads {ticket_id} as the mapping {ticket_id: null}: quote it, "
            '"{ticket_id}"',
        )
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # YAML 1.2 core schema integers: decimal (a leading zero is not octal), 0o, 0x
        ("017", 17),
        ("-017", -17),
        ("+017", 17),
        ("08", 8),
        ("0o17", 15),
        ("0x1F", 31),
        ("0xff", 255),
        # floats: a dot or an exponent, a sign before either
        ("1.5", 1.5),
        ("1.", 1.0),
        (".5", 0.5),
        ("+.5", 0.5),
        ("-.5", -0.5),
        ("1e3", 1000.0),
        ("1.0e5", 100000.0),
        ("-2E-2", -0.02),
        # YAML 1.1's sexagesimal, underscores, binary, signed hex and capital prefixes are text
        ("1:30", "1:30"),
        ("1:30.5", "1:30.5"),
        ("1_000", "1_000"),
        ("1_000.5", "1_000.5"),
        ("0b101", "0b101"),
        ("-0x1F", "-0x1F"),
        ("0X1F", "0X1F"),
        ("0O17", "0O17"),
        ("0o8", "0o8"),
        ("+.nan", "+.nan"),
    ],
)
def test_numbers_are_yaml_1_2s(text: str, value: object) -> None:
    doc, diags = load_text("m.yaml", f"a: {text}\n{text}: k\n".encode())
    assert doc is not None and not diags
    assert doc.data == {"a": value, str(value): "k"}
    assert type(doc.data["a"]) is type(value)


@pytest.mark.parametrize(
    ("line", "col", "field", "expected"),
    [
        ("retries: 1:30", 10, "retries", "integer"),
        ("retries: 0b11", 10, "retries", "integer"),
        ("timeout_seconds: 1:30", 18, "timeout_seconds", "number"),
        ("timeout_seconds: 1_000", 18, "timeout_seconds", "number"),
    ],
)
def test_a_yaml_1_1_number_is_a_located_type_error_with_a_hint(
    line: str, col: int, field: str, expected: str
) -> None:
    text = (
        "version: 1\nkind: connector\nname: c\ntitle: C\ndescription: C.\n"
        f"base_url: https://api.example.com\n{line}\nauth: {{type: none}}\ncapabilities:\n"
        "  - name: get\n    description: Get.\n    scope: read\n"
        "    input: {type: object}\n    output: {type: object}\n"
        "    http: {method: GET, path: /x}\n"
    )
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    value = line.split(": ")[1]
    found = [(d.code, d.span.line, d.span.col, d.message, d.hint) for d in validate_one(doc)]
    assert found == [
        (
            "GEN103",
            7,
            col,
            f"{field}: expected {expected}, got string",
            f"manifests are YAML 1.2: write a decimal number ({value} is text)",
        )
    ]


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        (b"a: [1,\n", "GEN002", 2),
        (b"a: 1\na: 2\n", "GEN003", 2),
        (b"- 1\n- 2\n", "GEN004", 1),
        (b"a: 1\n---\nb: 2\n", "GEN004", 3),
        (b"\xff\xfe", "GEN001", 1),
    ],
)
def test_load_errors_are_located(text: bytes, code: str, line: int) -> None:
    _doc, diags = load_text("m.yaml", text)
    assert [(d.code, d.span.line) for d in diags] == [(code, line)]


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        (b"a: !!int abc\n", 1, 4, "not a valid YAML int"),
        (b"a: !!float abc\n", 1, 4, "not a valid YAML float"),
        (b"a: !!int 0x_\n", 1, 4, "not a valid YAML int"),
        # an explicit tag takes YAML 1.2's core schema forms only
        (b"a: !!int 1_000\n", 1, 4, "'1_000' is not a valid YAML int"),
        (b"a: !!int 0b101\n", 1, 4, "'0b101' is not a valid YAML int"),
        (b"a: !!float 1:30.5\n", 1, 4, "'1:30.5' is not a valid YAML float"),
        (b"a: 1e400\n", 1, 4, "'1e400' is not a finite number"),
        (b"a: " + b"9" * 5000 + b"\n", 1, 4, "too large a number"),
        (b"a: {<<: 5}\n", 1, 9, "merge key"),
        (b"a: " + b"[" * 150 + b"]" * 150 + b"\n", 1, 104, "nesting deeper than 100"),
        (b"a: 1\nb: x\x00y\n", 2, 5, "control characters"),
        (b"a: !custom x\n", 1, 4, "unsupported YAML tag '!custom'"),
        (b"a: !!binary aGk=\n", 1, 4, "unsupported YAML tag '!!binary'"),
        (b"a: &s !!set {x, y}\nb: *s\n", 1, 4, "unsupported YAML tag '!!set'"),
        (b"? !k key\n: 1\n", 1, 3, "unsupported YAML tag '!k'"),
        # JSON has no infinities or NaN: no schema, tools.json or module could carry them
        (b"a: {examples: [.inf]}\n", 1, 16, "'.inf' is not a finite number"),
        (b"a: -.Inf\n", 1, 4, "'-.Inf' is not a finite number"),
        (b"a: .nan\n", 1, 4, "'.nan' is not a finite number"),
        (b"a: 1.0e+400\n", 1, 4, "'1.0e+400' is not a finite number"),
    ],
)
def test_malformed_yaml_is_a_located_diagnostic(
    text: bytes, line: int, col: int, fragment: str
) -> None:
    _doc, diags = load_text("m.yaml", text)
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", line, col)]
    assert fragment in diags[0].message and len(diags[0].message) < 120


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("a:\n\t- b\n", 2, 1),  # libyaml: "found character that cannot start any token"
        ("a:\n  b: 1\n\tc: 2\n", 3, 1),  # "found a tab character that violates indentation"
        ("a: |\n\tx\n", 2, 1),  # "... where an indentation space is expected"
        ("a:\n  - x\n  -\t y\n", 3, 4),
        ('a: "\u00e9\u2028\u20ac"\nb:\n\t- 1\n', 3, 1),  # the column read where the editor has it
    ],
)
def test_a_tab_that_indents_says_yaml_indents_with_spaces(text: str, line: int, col: int) -> None:
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line, d.span.col, d.message, d.hint) for d in diags] == [
        (
            "GEN002",
            line,
            col,
            "YAML syntax error: a tab character here; YAML indentation uses spaces, not tabs",
            "replace the tab with spaces",
        )
    ]


def test_a_syntax_error_at_another_character_keeps_yamls_words() -> None:
    _doc, diags = load_text("m.yaml", b"a: [1,\n\tb: x\n")  # a tab in the text, not at the error
    assert [(d.code, d.span.line) for d in diags] == [("GEN002", 3)]
    assert "tab" not in diags[0].message and diags[0].hint is None


_QUOTE_IT = "; unquoted, a ': ' inside it starts a mapping"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (
            "a: 1\ndescription: Get one page: by its id\n",
            'quote the value (description: "Get one page: by its id")' + _QUOTE_IT,
        ),
        ("tools:\n  - title: x: y  # note\r\n", 'quote the value (- title: "x: y")' + _QUOTE_IT),
        (f"d: {'w' * 80}: z\n", "quote the value" + _QUOTE_IT),
        # the same error, another cause: quoting is not the fix
        ("a: b\n  c: d\n", None),  # a key indented under a scalar
        ('k: "q": r\n', None),  # text after a quoted value
    ],
)
def test_a_colon_inside_unquoted_text_is_told_to_quote_it(text: str, hint: str | None) -> None:
    """libyaml's "mapping values are not allowed in this context" came without a hint."""
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.hint) for d in diags] == [("GEN002", hint)]
    assert "mapping values are not allowed" in diags[0].message


def test_the_cli_shows_the_hint_to_quote(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"gateway.yaml": "description: Get one page: by its id\n"})
    result = CliRunner().invoke(cli_main, ["validate", "--project", str(root)])
    assert result.exit_code == 1
    assert result.output.startswith(
        "manifests/gateway.yaml:1:26: error[GEN002] YAML syntax error: mapping values are not "
        "allowed in this context\n"
        '  hint: quote the value (description: "Get one page: by its id")' + _QUOTE_IT + "\n"
    )


@pytest.mark.parametrize("breaker", ["\u2028", "\u2029", "\x85", "\u2028\r\n\u2029"])
def test_positions_count_only_the_line_breaks_an_editor_shows(breaker: str) -> None:
    # YAML 1.1 (PyYAML, libyaml) ends a line at NEL, LS and PS too; editors do not, and every
    # diagnostic after such a character pointed lines too far down.
    lines = breaker.count("\n")
    text = (
        f'version: 1\nkind: types\ntypes:\n  A: {{description: "a{breaker}b"}}\n  B: {{}}\nx: 1\n'
    )
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    found = [(d.code, d.span.line, d.span.col) for d in validate_one(doc)]
    assert found == [("GEN102", 6 + lines, 1)]
    assert doc.key_span(("types", "B")) == Span(file="m.yaml", line=5 + lines, col=3)
    # a deep position, found by re-reading the text
    doc, _ = load_text("m.yaml", f'a: "{breaker}"\nb: {{c: {{d: {{e: {{f: 1}}}}}}}}\n'.encode())
    assert doc is not None
    assert doc.span(("b", "c", "d", "e", "f")) == Span(file="m.yaml", line=2 + lines, col=20)
    # after the character, on its own line: the column counts from the editor's line start
    _doc, diags = load_text("m.yaml", f'a: "x{breaker}y"\nb: [1, !t 2]\n'.encode())
    assert [(d.span.line, d.span.col) for d in diags] == [(2 + lines, 8)]
    _doc, diags = load_text("m.yaml", f'a: "x{breaker}y"\nb: [1,\n'.encode())
    assert [(d.code, d.span.line) for d in diags] == [("GEN002", 3 + lines)]
    _doc, diags = load_text("m.yaml", f'a: "é{breaker}€"\nb: x\x00y\n'.encode())
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", 2 + lines, 5)]


def test_reader_errors_count_characters_not_bytes() -> None:
    # libyaml reports a disallowed character at its byte offset; the column counts characters
    for text in ("é€: 1\nb: x\x00y\n", "\ufeffé€: 1\nb: x\x00y\n"):
        _doc, diags = load_text("m.yaml", text.encode())
        assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", 2, 5)], text


_MERGES = """\
a: &a {x: 1, y: 1}
b: &b {x: 3, z: 3}
c: {<<: [*a, *b]}
m: &m {<<: *b, x: 2}
d: {<<: *m}
e: {<<: [*b, *a], y: 9}
f: {<<: [*m, *a]}
"""


@pytest.mark.parametrize("deep", [False, True])
def test_merge_keys_give_yamls_values_in_pyyamls_order(deep: bool) -> None:
    """An earlier mapping of a merge list overrides a later one, and a merged mapping's own
    key what it merged itself: `<<: [*a, *b]` took b's x, and merging `{<<: *b, x: 2}` gave
    b's x. Deep (past the source-mapped depth) the loader builds values another way."""
    import yaml

    text = _MERGES
    if deep:
        text = "p:\n  q:\n    r:\n      s:\n        t:\n" + "".join(
            " " * 10 + line + "\n" for line in _MERGES.splitlines()
        )
    doc, diagnostics = load_text("m.yaml", text.encode())
    assert doc is not None and diagnostics == []
    assert json.dumps(doc.data) == json.dumps(yaml.safe_load(text))
    merged = doc.data["p"]["q"]["r"]["s"]["t"] if deep else doc.data
    assert (merged["c"]["x"], merged["d"]["x"], merged["f"]["x"]) == (1, 2, 2)


def test_merge_keys_agree_with_pyyaml_on_random_documents() -> None:
    """Chains and lists of merges over overlapping keys, shallow and deep: the data (values
    and key order) is PyYAML's. 219 of 3,000 such documents differed before."""
    import random

    import yaml

    rng = random.Random(7)
    for _ in range(600):
        lines: list[str] = []
        for i in range(rng.randint(1, 4)):
            parts = []
            if i and rng.random() < 0.6:
                merged = rng.sample(range(i), rng.randint(1, i))
                parts.append("<<: [" + ", ".join(f"*n{m}" for m in merged) + "]")
            parts += [f"{k}: {rng.randint(0, 9)}" for k in rng.sample("xyzw", rng.randint(0, 3))]
            lines.append(f"n{i}: &n{i} {{{', '.join(parts)}}}")
        if rng.random() < 0.5:  # past the source-mapped depth
            lines = ["p:", "  q:", "    r:", "      s:", "        t:"] + [
                " " * 10 + x for x in lines
            ]
        text = "\n".join(lines) + "\n"
        doc, diagnostics = load_text("m.yaml", text.encode())
        assert doc is not None and diagnostics == [], text
        assert json.dumps(doc.data) == json.dumps(yaml.safe_load(text)), text


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("a: &a {x: 1, <<: *a}\n", (1, 14), "merge key (<<) merges the mapping that holds it"),
        ("a: &a {x: 1, <<: [*a]}\n", (1, 14), "merge key (<<) merges the mapping that holds it"),
        ("a: &a {x: 1, b: {<<: *a}}\n", (1, 18), "merge key (<<) merges the mapping that holds"),
        # through merged inline mappings (reported as a duplicate key 'k', or not at all)
        ("a: &a {k: 1, <<: {<<: *a}}\n", (1, 19), "merge key (<<) merges the mapping that holds"),
        ("a: &a {k: 1, <<: [{j: 2}, {<<: *a}]}\n", (1, 28), "merge key (<<) merges the mapping"),
        ("a: &a {k: 1, b: {<<: {<<: *a}}}\n", (1, 23), "merge key (<<) merges the mapping"),
        ("x: {<<: &p {k: 1, <<: {<<: *p}}}\n", (1, 24), "merge key (<<) merges the mapping"),
        ("x: {<<: &p {<<: *p}}\n", (1, 13), "merge key (<<) merges the mapping that holds it"),
        ("x: &r [*r]\n", (1, 4), "alias inside this anchored node refers to the node itself"),
        ("a:\n  b: &a {x: 1, y: [2, *a]}\n", (2, 6), "alias inside this anchored node refers"),
    ],
)
def test_a_recursive_alias_is_named(text: str, where: tuple[int, int], what: str) -> None:
    """A node that holds an alias of itself never ends: it was reported as nesting past the
    limit, or (merged into itself) as a duplicate key."""
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", *where)]
    assert what in diags[0].message


def test_merges_of_merges_stop_at_the_bound_before_they_are_made() -> None:
    """YAML merge keys copy pairs in as the mapping is read: 400 merges of a mapping of 400
    merges (4 kB of text) made 1.6 million pairs (3.6 s, 251 MB) before the bound on what
    aliases add saw any of them. It now counts the pairs a merge would copy first."""
    fan = 400
    text = "\n".join(
        [
            "l0: &l0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}",
            "l1: &l1 {<<: [" + ", ".join(["*l0"] * fan) + "]}",
            "l2: {<<: [" + ", ".join(["*l1"] * fan) + "]}",
        ]
    )
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", 3, 5)]
    assert "YAML aliases add more than 20,000 values" in diags[0].message
    doc, diags = load_text("m.yaml", "\n".join(text.splitlines()[:2]).encode())
    assert doc is not None and not diags and doc.data["l1"] == doc.data["l0"]


def test_merges_through_inline_mappings_are_counted_before_they_are_made() -> None:
    """A mapping merged inline was flattened by PyYAML, recursively, before the loader counted
    what its merge keys copy: 1 kB merging an inline anchor of 100 merges 100 times copied
    100,000 pairs past the bound."""
    fan = 100
    text = "\n".join(
        [
            "l0: &l0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}",
            "l2: {<<: [&l1 {<<: [" + ", ".join(["*l0"] * fan) + "]}" + ", *l1" * (fan - 1) + "]}",
        ]
    )
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("GEN002", 2, 5)]
    assert "YAML aliases add more than 20,000 values" in diags[0].message


def test_the_keys_a_mapping_merged_inline_merges_are_not_its_own() -> None:
    # m was flattened inside c's merge before its own keys were taken: b's x counted as m's
    # own, and m's own x as a duplicate of it
    doc, diags = load_text("m.yaml", b"b: &b {x: 1}\nc: {<<: &m {<<: *b, x: 2, y: 3}}\nd: *m\n")
    assert doc is not None and not diags
    assert doc.data["d"] == {"x": 2, "y": 3}


def test_a_long_chain_of_merges_loads() -> None:
    # merges no one built first (under a duplicate key): PyYAML flattened them recursively, and
    # RecursionError came out of the loader
    n = 3000
    chain = ", ".join(f"&m{i} {{<<: *m{i - 1}}}" for i in range(1, n))
    text = f"x: 1\nx: [&m0 {{k: 1}}, {chain}]\ny: {{<<: *m{n - 1}}}\n"
    doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line) for d in diags] == [("GEN003", 2)]
    assert doc is not None and doc.data["y"] == {"k": 1}


def test_an_anchor_used_beside_itself_is_no_recursion() -> None:
    doc, diags = load_text("m.yaml", b"a: &a {x: 1}\nb: {<<: *a, y: *a}\nc: [*a, *a]\n")
    assert doc is not None and not diags
    assert doc.data == {"a": {"x": 1}, "b": {"x": 1, "y": {"x": 1}}, "c": [{"x": 1}, {"x": 1}]}


@pytest.mark.parametrize("levels", [9, 5])
def test_an_alias_bomb_stops_at_a_bound(levels: int) -> None:
    """10 ** 9 values, and 10 ** 5, which stayed under MAX_VALUES and was built (and then
    walked by every later stage): what aliases add is bounded on its own."""
    text = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    text += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    _doc, diags = load_text("m.yaml", "\n".join(text).encode())
    assert [d.code for d in diags] == ["GEN002"]
    assert "YAML aliases add more than 20,000 values" in diags[0].message
    assert diags[0].hint is not None and "#/types/Name" in diags[0].hint


def test_a_script_that_dumps_a_large_connector_learns_how_to_write_it() -> None:
    """PyYAML's dump anchors every object it meets twice: a script writing a large connector
    whose tools share schema objects went past the alias bound with no word on why. The hint
    says how to write it; dumped without aliases, the same data loads."""
    shared = {
        "type": "object",
        "properties": {f"f{i}": {"type": "string", "maxLength": 64} for i in range(40)},
    }
    doc = {"tools": [{"name": f"t{i}", "input": shared, "output": shared} for i in range(200)]}
    _doc, diags = load_text("m.yaml", yaml.dump(doc).encode())
    assert [d.code for d in diags] == ["GEN002"], diags
    assert "ignore_aliases" in (diags[0].hint or "")

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    loaded, diags = load_text("m.yaml", yaml.dump(doc, Dumper=NoAliases).encode())
    assert not diags and loaded is not None and loaded.data == doc


@pytest.mark.parametrize(
    "text",
    [
        # a long string, or a mapping with a long key, repeated by few aliases
        "a: &s " + "x" * 10_000 + "\nb: [" + ", ".join(["*s"] * 200) + "]\n",
        'a: &m {"' + "k" * 1_000 + '": 1}\nb: [' + ", ".join(["*m"] * 1_100) + "]\n",
        'a: &m {"' + "k" * 1_000 + '": 1}\nb: [' + ", ".join(["{<<: *m}"] * 1_100) + "]\n",
    ],
)
def test_aliases_repeating_long_text_stop_at_a_bound(text: str) -> None:
    _doc, diags = load_text("m.yaml", text.encode())
    assert [(d.code, d.span.line) for d in diags] == [("GEN002", 1)]
    assert "YAML aliases add more than 1,000,000 characters" in diags[0].message


@pytest.mark.parametrize(("length", "refused"), [(999_999, False), (1_000_000, True)])
def test_merged_keys_count_the_same_at_any_depth(length: int, refused: bool) -> None:
    """Merged pairs whose key is overridden add nothing. build (paths of up to SPAN_DEPTH parts)
    counted their key text toward MAX_ALIASED_CHARS, _plain (deeper) did not: the same merge
    was refused near the root and loaded deeper down, where asking for a deep position (which
    builds the whole map) then raised out of Loaded.span."""
    key = "k" * length  # with its value "1": 1,000,000 characters, or one more
    anchor = f"a: &a\n  ? {key}\n  : 1\n"
    verdicts = []
    holders = [
        ("b: {<<: [*a, *a, *a]}", ("b",)),
        ("x: {y: {z: {w: {v: {<<: [*a, *a, *a]}}}}}", ("x", "y", "z", "w", "v")),
    ]
    for holder, path in holders:
        doc, diags = load_text("m.yaml", f"{anchor}{holder}\n".encode())
        verdicts.append([(d.code, d.span.line, d.span.col) for d in diags])
        if doc is not None:
            assert doc.key_span((*path, key)) == Span(file="m.yaml", line=2, col=5)
    assert verdicts == [[("GEN002", 3, 5)] if refused else []] * 2


def test_loading_leaves_the_garbage_collector_as_it_found_it() -> None:
    # the loader pauses the collector while it composes (about half of a large file's time)
    bomb = (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b ["
        + b"*a, " * 99
        + b"*a]\nc: ["
        + (b"*b, " * 99)
        + b"*b]\n"
    )
    for text in (b"a: 1\n", b"a: [\n", bomb):
        assert gc.isenabled()
        load_text("m.yaml", text)
        assert gc.isenabled()
        gc.disable()
        try:
            load_text("m.yaml", text)
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_anchors_reused_a_few_times_load_as_copies() -> None:
    text = b"a: &a {x: [1, {y: z}]}\nb: [*a, *a, {<<: *a, w: 2}]\ns: &s hi\nt: {k: *s}\n"
    doc, diags = load_text("m.yaml", text)
    assert diags == [] and doc is not None
    a = {"x": [1, {"y": "z"}]}
    assert doc.data == {"a": a, "b": [a, a, {**a, "w": 2}], "s": "hi", "t": {"k": "hi"}}
    assert doc.data["b"][0] is not doc.data["b"][1]  # copies: a later stage may change one


def test_merge_keys_are_overridden_by_the_mappings_own_keys() -> None:
    text = b"base: &b {x: 1, y: 2}\nover: {<<: *b, y: 3, z: 4}\nagain: {<<: *b, y: 5}\n"
    doc, diags = load_text("m.yaml", text)
    assert diags == [] and doc is not None
    assert doc.data["over"] == {"x": 1, "y": 3, "z": 4}
    assert doc.data["again"] == {"x": 1, "y": 5}
    _doc, diags = load_text("m.yaml", b"b: &b {x: 1}\no: {<<: *b, y: 1, y: 2}\n")
    assert [(d.code, d.span.line) for d in diags] == [("GEN003", 2)]


def _validate(text: str) -> list[tuple[str, int, int]]:
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    return [(d.code, d.span.line, d.span.col) for d in validate_one(doc)]


def test_unknown_keys_holding_quotes_or_line_breaks_are_reported_where_they_are() -> None:
    head = "version: 1\nkind: types\ntypes: {A: {type: object}}\n"
    for key, shown in (("it's", '"it\'s"'), ('"bad\\nkey"', "'bad\\nkey'"), ('"x\'y"', '"x\'y"')):
        doc, diags = load_text("m.yaml", f"{head}ok: 1\n{key}: 2\n".encode())
        assert doc is not None and not diags
        found = [(d.code, d.span.line, d.span.col, d.message) for d in validate_one(doc)]
        assert found == [
            ("GEN102", 4, 1, "unknown property 'ok' in manifest root"),
            ("GEN102", 5, 1, f"unknown property {shown} in manifest root"),
        ], key
    doc, _ = load_text("m.yaml", b'version: 1\nkind: types\n"it\'s": {}\n')
    assert doc is not None
    assert [(d.code, d.message) for d in validate_one(doc)] == [
        ("GEN101", "manifest root is missing required property 'types'"),
        ("GEN102", 'unknown property "it\'s" in manifest root'),
    ]


def test_schema_errors_map_to_lines_and_columns() -> None:
    assert _validate("version: 2\nkind: types\ntypes: {A: {}}\n") == [("GEN104", 1, 10)]
    assert _validate("version: 1\nkind: nope\n") == [("GEN104", 2, 7)]
    assert _validate("version: 1\nkind: types\n") == [("GEN101", 1, 1)]
    assert _validate("version: 1.0\nkind: types\ntypes: {A: {}}\n") == [("GEN103", 1, 10)]
    gateway = "version: 1\nkind: gateway\npackage: {name: p, import_name: p, version: '1'}\n"
    quotas = "server: {name: s}\nquotas: {default_plan: a, plans: {a: {period: day, calls: %s}}}\n"
    assert _validate(gateway + quotas % "10") == []
    assert _validate(gateway + quotas % "10.0") == [("GEN103", 5, 59)]
    assert _validate("version: 1\nkind: types\ntypes: {a: {}}\n") == [("GEN105", 3, 9)]
    urls = gateway.replace("'1'}", "'1', urls: {%s}}") + "server: {name: s}\n"
    assert _validate(urls % "Docs: 'https://d.example/x'") == []
    assert _validate(urls % "Docs: 'ftp://d.example/x'") == [("GEN105", 3, 63)]
    assert _validate(urls % "'9 lives': 'https://d.example/'") == [("GEN105", 3, 57)]
    got = _validate("version: 1\nkind: types\ntypes: {A: {}}\nextra: 1\n")
    assert got == [("GEN102", 4, 1)]


_CONNECTOR = """\
version: 1
kind: connector
name: probe
title: Probe
description: Probe connector.
base_url: https://api.example.com
auth: {type: none}
capabilities:
  - name: get_thing
    description: Get a thing by its id.
    scope: read
    input: {type: object, properties: {id: {type: string}}}
    output: {type: object}
    http:
      method: GET
      path: %s
      headers: {%s}
"""


def _messages(text: str) -> list[tuple[str, int, int, str]]:
    doc, diags = load_text("m.yaml", text.encode())
    assert doc is not None and not diags
    return [(d.code, d.span.line, d.span.col, d.message) for d in validate_one(doc)]


def test_a_value_a_pattern_refuses_is_told_what_the_pattern_asks_for() -> None:
    # the words beside each pattern in the schema, not the regular expression
    found = _messages(_CONNECTOR % ("things/{id}", 'X-Note: "caf\u00e9", X-Multi: "a\\nb"'))
    assert found == [
        (
            "GEN105",
            16,
            13,
            "capabilities/0/http/path: invalid value 'things/{id}': "
            "a path starts with / (it is appended to base_url)",
        ),
        (
            "GEN105",
            17,
            25,
            "capabilities/0/http/headers/X-Note: invalid value 'caf\u00e9': "
            "a header value is one line of printable ASCII: no line breaks or non-ASCII characters",
        ),
        (
            "GEN105",
            17,
            42,
            "capabilities/0/http/headers/X-Multi: invalid value 'a\\nb': "
            "a header value is one line of printable ASCII: no line breaks or non-ASCII characters",
        ),
    ]
    # a key a pattern refuses: propertyNames
    assert _messages(_CONNECTOR % ("/t", '"X Note": v')) == [
        (
            "GEN105",
            17,
            17,
            "capabilities/0/http/headers: invalid name 'X Note': an HTTP header name is a token: "
            "letters, digits and !#$%&'*+-.^_`|~ (no spaces or colons)",
        )
    ]
    assert _messages("version: 1\nkind: types\ntypes: {a: {}}\n") == [
        (
            "GEN105",
            3,
            9,
            "types: invalid name 'a': "
            "a type name is PascalCase: an upper-case letter, then letters or digits",
        )
    ]


def test_a_value_that_differs_from_an_allowed_one_only_in_case_is_suggested() -> None:
    text = (_CONNECTOR % ("/t", "")).replace("method: GET", "method: get")
    doc, _ = load_text("m.yaml", text.encode())
    assert doc is not None
    found = [(d.code, d.span.line, d.span.col, d.message, d.hint) for d in validate_one(doc)]
    assert found == [
        (
            "GEN104",
            15,
            15,
            'capabilities/0/http/method: "get" is not one of '
            '"GET", "POST", "PUT", "PATCH", "DELETE"',
            "did you mean 'GET'?",
        )
    ]


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [
        (
            "{header: K, body: k}",
            "GEN107",
            "declare exactly one of header, body or query, not header and body",
        ),
        ("{}", "GEN106", "declare exactly one of header, body or query"),
    ],
)
def test_an_object_that_takes_one_of_its_properties_says_so(
    key: str, code: str, message: str
) -> None:
    # jsonschema's words were "{'header': 'K', 'body': 'k'} has too many properties"
    text = (_CONNECTOR % ("/t", "")).replace(
        "      headers: {}\n", f"      idempotency_key: {key}\n"
    )
    assert _messages(text) == [(code, 17, 24, f"capabilities/0/http/idempotency_key: {message}")]


def test_every_pattern_of_the_manifest_schema_says_what_it_asks_for_in_words() -> None:
    def walk(node: object, path: str) -> list[str]:
        if isinstance(node, list):
            return [m for i, v in enumerate(node) for m in walk(v, f"{path}/{i}")]
        if not isinstance(node, dict):
            return []
        missing = [path] if "pattern" in node and "patternErrorMessage" not in node else []
        return missing + [m for k, v in node.items() for m in walk(v, f"{path}/{k}")]

    assert walk(manifest_schema(), "#") == []


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("name", "acme-gw", True),
        ("name", "acme-", False),  # a distribution name ends with a letter or digit
        ("name", "acme.", False),
        ("name", "_acme", False),
        ("version", "1.2.0", True),
        ("version", "2.1.0rc1.post2.dev3", True),
        ("version", "01.2", False),  # published as 1.2: refused rather than renamed
        ("version", "1.0c1", False),  # normal form: 1.0rc1
        ("version", "1.0a", False),  # normal form: 1.0a0
        ("version", "0.2.0-beta", False),
    ],
)
def test_package_name_and_version_are_what_an_index_publishes(
    field: str, value: str, ok: bool
) -> None:
    package = {"name": "p", "import_name": "p", "version": "1", field: value}
    text = "version: 1\nkind: gateway\nserver: {name: s}\npackage: " + json.dumps(package) + "\n"
    assert [code for code, _line, _col in _validate(text)] == ([] if ok else ["GEN105"])


def _compile(*files: tuple[str, str]) -> list[str]:
    docs = []
    for name, text in files:
        doc, _ = load_text(name, text.encode())
        assert doc is not None and not validate_one(doc), validate_one(doc)
        docs.append(doc)
    _project, diags = compile_project(docs)
    return [f"{d.span}:{d.code}" for d in normalise(diags)]


GATEWAY = (
    "g.yaml",
    "version: 1\nkind: gateway\npackage: {name: p, import_name: p, version: '1'}\n"
    "server: {name: s}\n",
)


def test_missing_gateway_is_reported() -> None:
    assert _compile(("t.yaml", "version: 1\nkind: types\ntypes: {A: {type: object}}\n")) == [
        "t.yaml:1:1:GEN210"
    ]


def _defaults_with(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> list[str]:
    """`file:line:col:CODE:message` of each diagnostic of the default manifests, with each
    named file's first `old` text replaced by `new`."""
    files = {}
    for rel, (old, new) in edits.items():
        text = (ROOT / "manifests" / rel).read_text(encoding="utf-8")
        assert old in text
        files[rel] = text.replace(old, new, 1)
    root = make_project(tmp_path, files, copy_defaults=True)
    return [
        f"{d.span}:{d.code}:{d.message}" for d in api.compile_manifests(options(root)).diagnostics
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("version: 1", "version: 2", ["4:10:GEN104:version: 2 is not one of 1"]),
        ("kind: types", "kind: typs", ['5:7:GEN104:kind: "typs" is not one of']),
        (
            "types:\n",
            "typse:\n",
            [
                "4:1:GEN101:manifest root is missing required property 'types'",
                "6:1:GEN102:unknown property 'typse' in manifest root",
            ],
        ),
        (
            "  Cursor:\n",
            "  Cursor: [\n",
            ["13:16:GEN002:YAML syntax error: did not find expected ',' or ']'"],
        ),
    ],
)
def test_a_broken_types_manifest_is_reported_once(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    # Each of the 21 references to its types in other manifests was also "unknown shared type".
    found = _defaults_with(tmp_path, {"types.yaml": (old, new)})
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith("manifests/types.yaml:" + start), found


def test_a_type_the_broken_types_manifest_does_not_declare_is_still_unknown(
    tmp_path: Path,
) -> None:
    edits = {
        "types.yaml": ("version: 1", "version: 2"),
        "native.yaml": ('$ref: "#/types/Timestamp"', '$ref: "#/types/Timestmp"'),
    }
    assert _defaults_with(tmp_path, edits) == [
        "manifests/native.yaml:116:28:GEN205:unknown shared type 'Timestmp'",
        "manifests/types.yaml:4:10:GEN104:version: 2 is not one of 1",
    ]
    (unknown, _) = api.compile_manifests(options(tmp_path / "project")).diagnostics
    assert unknown.hint is not None and "Timestamp" in unknown.hint.split(", "), unknown.hint


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # another kind of manifest: it declares no shared type
        ("connector", ["slack.yaml:5:5:GEN002", "native.yaml:116:28:GEN205"]),
        # a kind that is none, or none read: it may be a types manifest
        ("typs", ["slack.yaml:5:5:GEN002"]),
        ("[connector", ["slack.yaml:4:6:GEN002"]),
    ],
)
def test_a_manifest_that_cannot_be_loaded_hides_unknown_types_only_if_it_may_declare_them(
    tmp_path: Path, kind: str, expected: list[str]
) -> None:
    edits = {
        "connectors/slack.yaml": ("kind: connector\n", f"kind: {kind}\ntitle: [Slack\n"),
        "native.yaml": ('$ref: "#/types/Timestamp"', '$ref: "#/types/Timestmp"'),
    }
    found = [":".join(line.split(":")[:4]) for line in _defaults_with(tmp_path, edits)]
    assert [f.rsplit("/", 1)[-1] for f in found] == expected, found


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (b"version: 1\nkind: connector\nx: [\n", "connector"),
        (b"{version: 1, kind: 'types', x: [}", "types"),
        (b"x: [a, {kind: b}]\nkind: native\ny: [\n", "native"),  # only the top level's
        (b"? [kind]\n: native\nkind: gateway\ny: [\n", "gateway"),  # a key that is a list
        (b"kind: [types]\n", None),
        (b"kind: *a\n", None),
        (b"x: {kind: connector}\ny: [\n", None),
        (b"- kind: connector\n", None),
        (b"x: 1\n---\nkind: connector\n", None),  # the first document's only
        (b"kind\xff: types\n", None),
    ],
)
def test_the_kind_of_a_manifest_that_cannot_be_loaded_is_read_up_to_its_error(
    text: bytes, kind: str | None
) -> None:
    assert declared_kind(text) == kind


@pytest.mark.parametrize(
    ("slack", "expected"),
    [
        # slack's manifest fails: its tools may well exist
        (("version: 1", "version: 2"), "manifests/connectors/slack.yaml:2:10:GEN104:"),
        # the tool exists, with an error of its own
        (
            ("minLength: 1, maxLength: 40000", "pattern: '(['"),
            "manifests/connectors/slack.yaml:37:39:GEN203:invalid regular expression",
        ),
        # no such tool
        (
            ("name: send_message", "name: post_message"),
            "manifests/native.yaml:6:11:GEN218:tool 'fastn_list_integrations' names replacement "
            "'slack_send_message', which is not a tool of this project",
        ),
    ],
)
def test_a_missing_replacement_is_not_an_echo_of_its_tools_error(
    tmp_path: Path, slack: tuple[str, str], expected: str
) -> None:
    deprecated = "    deprecated: {reason: old, replacement: slack_send_message}\n    handler:"
    edits = {"connectors/slack.yaml": slack, "native.yaml": ("    handler:", deprecated)}
    (found,) = _defaults_with(tmp_path, edits)
    assert found.startswith(expected), found


def test_shared_type_cycles_are_reported() -> None:
    types = (
        "t.yaml",
        "version: 1\nkind: types\ntypes:\n  A: {$ref: '#/types/B'}\n  B: {$ref: '#/types/A'}\n",
    )
    native = (
        "n.yaml",
        "version: 1\nkind: native\ntools:\n  - name: t\n    description: d\n"
        "    scope: read\n    handler: native.list_integrations\n    input: {type: object}\n"
        "    output: {$ref: '#/types/A'}\n",
    )
    assert any(d.endswith("GEN215") for d in _compile(GATEWAY, types, native))


def _native_tool(input_schema: str, types: str = "") -> list[str]:
    native = (
        "n.yaml",
        "version: 1\nkind: native\ntools:\n  - name: t\n    description: d\n"
        f"    scope: read\n    handler: native.list_integrations\n    input: {input_schema}\n"
        "    output: {type: object}\n",
    )
    files = [GATEWAY, native]
    if types:
        files.append(("t.yaml", f"version: 1\nkind: types\ntypes:\n{types}"))
    return _compile(*files)


def test_schemas_that_would_break_the_generated_code_are_refused() -> None:
    # A regular expression Python cannot compile.
    assert _native_tool("{type: object, properties: {a: {type: string, pattern: '([a-z'}}}") == [
        "n.yaml:8:67:GEN203"
    ]
    assert _native_tool("{type: object, patternProperties: {'(': {type: string}}}") == [
        "n.yaml:8:52:GEN203"
    ]
    # A local $ref that points nowhere.
    assert _native_tool("{type: object, properties: {a: {$ref: '#/definitions/Nope'}}}") == [
        "n.yaml:8:50:GEN203"
    ]
    assert (
        _native_tool(
            "{type: object, $defs: {D: {type: string}}, properties: {a: {$ref: '#/$defs/D'}}}"
        )
        == []
    )
    # Property names Python reads as other names (NFKC): fullwidth letters, ligatures.
    assert _native_tool("{type: object, properties: {\uff41: {type: string}}}") == [
        "n.yaml:8:40:GEN208"
    ]
    assert _native_tool(
        "{type: object, properties: {x: {type: object, properties: {\ufb01le: {type: string}}}}}"
    ) == ["n.yaml:8:71:GEN208"]
    assert _native_tool("{type: object, properties: {caf\u00e9: {type: string}}}") == []


def test_unused_shared_types_are_checked_too() -> None:
    got = _native_tool(
        "{type: object}",
        "  Used: {type: string}\n"
        "  Unused: {type: object, properties: {a: {$ref: '#/types/Nope'}}}\n"
        "  Loop: {$ref: '#/types/Loop'}\n"
        "  Bad: {type: string, pattern: '(['}\n",
    )
    assert got == ["t.yaml:5:49:GEN205", "t.yaml:6:16:GEN215", "t.yaml:7:32:GEN203"]


def test_connector_auth_and_base_url_checks() -> None:
    conn = (
        "c.yaml",
        "version: 1\nkind: connector\nname: c\ntitle: C\ndescription: d\n"
        "base_url: https://{tenant}.example\nauth: {type: bearer, fields: [{name: k}]}\n"
        "capabilities:\n  - name: x\n    description: d\n    scope: read\n"
        "    input: {type: object}\n    output: {type: object}\n"
        "    http: {method: GET, path: /x, pagination: {style: cursor}}\n",
    )
    codes = {d.split(":")[-1] for d in _compile(GATEWAY, conn)}
    assert codes == {"GEN207", "GEN217", "GEN213"}


def test_names_are_sanitised() -> None:
    assert PyIdent("class") == "class_"
    assert PyIdent("model_config") == "model_config_"
    assert PyIdent("9lives") == "n_9lives"
    assert PyIdent("slack-send.message") == "slack_send_message"
    assert ClassName("slack_send-message_input") == "SlackSendMessageInput"
    assert is_valid_tool_name("a" * 64) and not is_valid_tool_name("a" * 65)
    assert not is_valid_tool_name("has space")


@pytest.mark.parametrize(
    "text",
    [
        'ends with "',
        'has """ inside',
        "back\\slash\\",
        "{{ jinja }} {% x %}",
        "multi\nline\n",
        "ünïcödé 🚀",
        "'''",
        "\\",
        '"',
        "nul\x00 esc\x1b del\x7f",  # NUL cannot appear in Python source at all
    ],
)
def test_docstring_and_literal_escape_everything(text: str) -> None:
    source = f"def f():\n    {docstring(text, '    ')}\n\nx = {literal({'k': [text, 1, None]})}\n"
    tree = ast.parse(source)
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert ast.get_docstring(fn) == inspect.cleandoc(text)
    namespace: dict[str, object] = {}
    exec(compile(source, "<t>", "exec"), namespace)
    assert namespace["x"] == {"k": [text, 1, None]}


def test_diagnostics_render_sorted_and_deduplicated() -> None:
    a = error("GEN201", Span(file="b.yaml", line=2, col=1), "second")
    b = error("GEN202", Span(file="a.yaml", line=9, col=3), "first", "a hint")
    text = render([a, b, a])
    assert text == (
        "a.yaml:9:3: error[GEN202] first\n  hint: a hint\nb.yaml:2:1: error[GEN201] second\n"
    )


def test_github_annotations_escape_the_file_name_and_the_message() -> None:
    """Workflow commands: a property value escapes `%`, CR, LF, `:` and `,` (else a file named
    `a,line=9.yaml` would set the line); the message escapes `%`. Line breaks quoted in a
    message are shown escaped, as in the text format, so the annotation is one line too."""
    d = error("GEN102", Span(file="we,ird:na%me.yaml", line=3, col=2), "50% off\r\nnext")
    assert render([d], "github") == (
        "::error file=we%2Cird%3Ana%25me.yaml,line=3,col=2,title=GEN102::50%25 off\\r\\nnext\n"
    )
    assert github_message("a%\r\nb") == "a%25%0D%0Ab"  # what the runner unescapes


def test_no_format_prints_a_raw_control_character_of_a_path() -> None:
    name = "x\nprint(1)\x7f\x85\u2028\u202e\udcff.yaml"
    d = error("GEN001", Span(file=name), "m")
    assert render([d]) == "x\\nprint(1)\\x7f\\x85\\u2028\\u202e\\udcff.yaml:1:1: error[GEN001] m\n"
    assert "x\\nprint(1)\\x7f" in render([d], "github")
    js = render([d], "json")
    assert json.loads(js)[0]["file"] == name  # the same path to a JSON reader
    for text in (render([d]), render([d], "github"), js):
        assert not UNSAFE_IN_NAMES.search(text.replace("\n", ""))


def test_every_code_is_documented_and_docs_are_fresh() -> None:
    for name, fn in docs.PAGES.items():
        path = docs.DOCS / name
        assert path.read_text(encoding="utf-8") == fn(), f"run python -m generator.docs ({name})"
    text = (docs.DOCS / "diagnostics.md").read_text(encoding="utf-8")
    assert all(f"`{code}`" in text for code in CODES)


def test_unknown_schema_keywords_and_yaml_comma_splits_are_errors() -> None:
    native = (
        "n.yaml",
        "version: 1\nkind: native\ntools:\n  - name: t\n    description: d\n"
        "    scope: read\n    handler: native.list_integrations\n"
        "    input:\n      type: object\n      properties:\n"
        "        a: {type: string, description: Name, e.g. slack.}\n"
        "        b: {type: string, minLenght: 1, x-ui: wide}\n"
        "    output: {type: object}\n",
    )
    assert _compile(GATEWAY, native) == ["n.yaml:11:46:GEN219", "n.yaml:12:27:GEN219"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("mcp", "depends on"),  # the SDK the package serves with
        ("pydantic", "depends on"),
        ("pydantic_core", "depends on"),  # a dependency's dependency
        ("sqlalchemy", "depends on"),
        ("httpx2", "depends on"),
        ("typing_extensions", "depends on"),
        ("json", "standard library"),
        ("sys", "standard library"),
        ("test", "standard library"),  # not in sys.stdlib_module_names; ahead of site-packages
        ("class", "keyword"),
        ("match", "keyword"),
        ("generator", "mcpforge"),
        ("__init__", "would have to become 'init'"),
        ("models", "would have to become 'models_'"),
    ],
)
def test_an_import_name_that_shadows_or_would_be_renamed_is_refused(name: str, why: str) -> None:
    """The package is installed beside its dependencies and imported by the name as written:
    a name it would shadow (or be shadowed by), or one the sanitiser would change, is an error
    at the value, never a silent rename."""
    gateway = (
        f"version: 1\nkind: gateway\npackage: {{name: p, import_name: {name}, version: '1'}}\n"
    )
    doc, _ = load_text("g.yaml", (gateway + "server: {name: s}\n").encode())
    assert doc is not None and not validate_one(doc)
    _project, diags = compile_project([doc])
    assert [(str(d.span), d.code) for d in diags] == [("g.yaml:3:33", "GEN104")]
    assert repr(name) in diags[0].message and why in diags[0].message


def test_package_license_is_an_spdx_expression() -> None:
    def gateway(license_: str) -> tuple[str, str]:
        package = f"{{name: p, import_name: p, version: '1', license: {license_}}}"
        return ("g.yaml", f"version: 1\nkind: gateway\npackage: {package}\nserver: {{name: s}}\n")

    assert _compile(gateway("Apache-2.0 OR MIT")) == []
    assert _compile(gateway("Apache License 2.0")) == ["g.yaml:3:59:GEN105"]
