"""Tool schemas the compiler used to crash on or to pass into broken generated code: boolean
subschemas, long or exponential shared-type expansions, 2020-12 keywords, references into a
schema's own root, and defaults that do not match their schema. Each goes through the real
pipeline (load, validate, compile) on a project holding the default manifests."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import make_project, options

from generator import api
from generator.breaking import breaking

PROBE = """\
version: 1
kind: connector
name: probe
title: Probe
description: Probe connector.
base_url: https://api.example.com
auth: {{type: none}}
capabilities:
  - name: get_thing
    description: Get a thing by its id.
    scope: read
    annotations: {{read_only: true}}
    input:
      type: object
      required: [id]
      properties:
        id: {input_id}
{input_extra}\
    output:
      type: object
      properties:
        name: {{type: string}}
{output_extra}\
    http:
      method: GET
      path: /things/{{id}}
      query: {query}
"""


def _project(
    tmp_path: Path,
    *,
    input_id: str = "{type: string}",
    input_extra: str = "",
    output_extra: str = "",
    query: str = "{}",
    types: str = "",
) -> Path:
    files = {
        "connectors/probe.yaml": PROBE.format(
            input_id=input_id, input_extra=input_extra, output_extra=output_extra, query=query
        )
    }
    if types:
        files["zz_types.yaml"] = f"version: 1\nkind: types\ntypes:\n{types}"
    return make_project(tmp_path, files, copy_defaults=True)


def _diagnostics(root: Path) -> list[str]:
    """`file:line:col:CODE:message` of every diagnostic."""
    result = api.compile_manifests(options(root))
    assert (result.project is None) == any(d.severity == "error" for d in result.diagnostics)
    return [
        f"{d.span.file.rsplit('/', 1)[-1]}:{d.span.line}:{d.span.col}:{d.code}:{d.message}"
        for d in result.diagnostics
    ]


def test_boolean_subschemas_compile(tmp_path: Path) -> None:
    # `true` and `false` are schemas wherever a schema goes in 2020-12.
    root = _project(
        tmp_path,
        input_extra=(
            "        whatever: true\n"
            "        tags: {type: array, items: true}\n"
            "        meta: {type: object, additionalProperties: false, "
            "properties: {a: true, b: false}}\n"
            "        extra: {allOf: [true, {type: string}]}\n"
            "        any: {anyOf: [true, false]}\n"
        ),
        output_extra=(
            "        list: {type: array, items: false}\n"
            "        m: {type: object, additionalProperties: true}\n"
            "        n: {not: true}\n"
        ),
        query='{whatever: "{whatever}", tags: "{tags}", meta: "{meta}", extra: "{extra}", '
        'any: "{any}"}',
    )
    assert _diagnostics(root) == []


def test_every_2020_12_keyword_is_known(tmp_path: Path) -> None:
    # then/else (read by `if`'s validator) and maxContains/minContains (by `contains`'s) are
    # not in jsonschema's VALIDATORS; annotation keywords are in no validator at all.
    root = _project(
        tmp_path,
        input_id=(
            "{type: string, if: {minLength: 3}, then: {pattern: '^a'}, else: {maxLength: 1}, "
            "$comment: c, deprecated: false, readOnly: false, writeOnly: false, examples: [abc], "
            "contentMediaType: text/plain, contentEncoding: base64, contentSchema: true, "
            "$anchor: a, title: T}"
        ),
        input_extra="        tags: {type: array, contains: {type: integer}, maxContains: 2, "
        "minContains: 1}\n",
        query='{tags: "{tags}"}',
    )
    assert _diagnostics(root) == []


def test_references_into_the_schema_itself_are_refused(tmp_path: Path) -> None:
    # `$ref: "#"` was typed as an empty model and its data dropped; recursion is unsupported.
    root = _project(
        tmp_path,
        output_extra=(
            '        parent: {$ref: "#"}\n'
            '        alias: {$ref: "#/properties/name"}\n'
            '        tree: {$ref: "#/$defs/Node"}\n'
            '        flat: {$ref: "#/$defs/Leaf"}\n'
            "      $defs:\n"
            "        Node: {type: object, properties: {child: {$ref: '#/$defs/Node'}}}\n"
            "        Leaf: {type: string}\n"
        ),
    )
    not_supported = ": recursive and self-referencing schemas are not supported"
    recursive = (
        "GEN203:$ref '#/$defs/Node' is recursive ($defs entry 'Node' refers back to itself): "
        "recursive schemas are not supported"
    )
    assert _diagnostics(root) == [
        "probe.yaml:22:24:GEN203:$ref '#' refers to this schema's own root" + not_supported,
        "probe.yaml:23:23:GEN203:$ref '#/properties/name' refers to this schema's own part "
        "'/properties/name'" + not_supported,
        "probe.yaml:24:22:" + recursive,
        "probe.yaml:27:57:" + recursive,
    ]


def test_dynamic_refs_resolve_in_the_schema_or_are_located_errors(tmp_path: Path) -> None:
    """A `$dynamicRef` with no `$dynamicAnchor` in scope resolves as a `$ref` (2020-12): one
    to an anchor or a pointer that names nothing is an invalid schema, reported by `gen
    validate` at the keyword. It failed datamodel-code-generator at emit only, located at the
    group's first tool (GEN301), or, by pointer, was typed as a class of nothing. Recursion
    through one is refused like a recursive `$ref`."""
    root = _project(
        tmp_path,
        output_extra=(
            "        lost: {$dynamicRef: '#nowhere'}\n"
            "        gone: {$dynamicRef: '#/$defs/Gone'}\n"
            "        ref: {$ref: '#nowhere'}\n"
            "        tree: {$dynamicRef: '#node'}\n"
            "      $defs:\n"
            "        Node: {$dynamicAnchor: node, type: object,\n"
            "               properties: {kids: {type: array, items: {$dynamicRef: '#node'}}}}\n"
        ),
    )
    no_anchor = "names no $anchor or $dynamicAnchor of this schema"
    recursive = (
        "GEN203:$dynamicRef '#node' is recursive ($defs entry 'Node' refers back to itself): "
        "recursive schemas are not supported"
    )
    assert _diagnostics(root) == [
        "probe.yaml:22:29:GEN203:$dynamicRef '#nowhere' " + no_anchor,
        "probe.yaml:23:29:GEN203:$dynamicRef '#/$defs/Gone' points to nothing in this schema",
        "probe.yaml:24:21:GEN203:$ref '#nowhere' names no $anchor of this schema",
        "probe.yaml:25:29:" + recursive,
        "probe.yaml:28:70:" + recursive,
    ]
    out = root / "generated"
    assert [d.code for d in api.build(options(root, out=out)).diagnostics] == ["GEN203"] * 5
    assert not out.exists()


def test_a_dynamic_ref_to_an_anchor_builds(tmp_path: Path) -> None:
    """With its anchor declared, a `$dynamicRef` (or a `$ref` by `$anchor`) is a reference to
    the `$defs` entry: it compiles and the models type it. A `$ref` to a `$dynamicAnchor`,
    which datamodel-code-generator cannot resolve, is refused at compile time."""
    root = _project(
        tmp_path,
        output_extra=(
            "        owner: {$dynamicRef: '#person'}\n"
            "        author: {$ref: '#human'}\n"
            "        editor: {$ref: '#person'}\n"
            "      $defs:\n"
            "        Person: {$dynamicAnchor: person, $anchor: human, type: object,\n"
            "                 properties: {login: {type: string}}}\n"
        ),
    )
    assert _diagnostics(root) == [
        "probe.yaml:24:24:GEN203:$ref '#person' names no $anchor of this schema"
    ]
    probe = root / "manifests" / "connectors" / "probe.yaml"
    probe.write_text(probe.read_text().replace("        editor: {$ref: '#person'}\n", ""))
    assert _diagnostics(root) == []
    _result, files, diags = api.generate(options(root, out=root / "generated"))
    assert not diags
    models = next(t for p, t in files.items() if p.endswith("models/probe.py"))
    assert "owner: ProbeGetThingOutputPerson | None" in models
    assert "author: ProbeGetThingOutputPerson | None" in models


def test_an_unknown_type_hides_no_other_problem_of_its_schema(tmp_path: Path) -> None:
    # Fixing the unknown type must not reveal errors that were there all along: the rest of the
    # schema is checked too, and a schema the metaschema refuses still reports unknown types.
    root = _project(
        tmp_path,
        input_extra=(
            '        owner: {$ref: "#/types/Nope"}\n'
            "        code: {type: string, pattern: '('}\n"
            '        remote: {$ref: "https://example.com/x.json"}\n'
        ),
        output_extra=('        kind: {$ref: "#/types/Gone"}\n        size: {type: intger}\n'),
        query='{owner: "{owner}", code: "{code}", remote: "{remote}"}',
    )
    found = _diagnostics(root)
    assert [line.split(":", 4)[3] for line in found] == [
        "GEN205",
        "GEN203",
        "GEN203",
        "GEN205",
        "GEN203",
    ], found
    assert "invalid regular expression '('" in found[1]
    assert "$ref 'https://example.com/x.json' points to nothing" in found[2]
    assert "'intger' is not a type" in found[4]


def _chain(count: int, refs_per_type: int) -> str:
    """Shared types T0..T{count}, each an object whose properties refer to the next."""
    lines = []
    for i in range(count):
        props = ", ".join(f"p{j}: {{$ref: '#/types/T{i + 1}'}}" for j in range(refs_per_type))
        lines.append(f"  T{i}: {{type: object, properties: {{{props}}}}}\n")
    return "".join(lines) + f"  T{count}: {{type: string}}\n"


def test_a_long_shared_type_chain_is_bounded_not_a_crash(tmp_path: Path) -> None:
    # 200 types each referring to the next overflowed Python's stack (RecursionError).
    root = _project(
        tmp_path, output_extra="        deep: {$ref: '#/types/T0'}\n", types=_chain(200, 1)
    )
    assert _diagnostics(root) == [
        "probe.yaml:22:22:GEN227:shared type 'T0' nests 401 levels deep (limit 100) once inlined",
        "zz_types.yaml:154:3:GEN227:shared type 'T150' nests 101 levels deep (limit 100) once "
        "the shared types it refers to are inlined",
    ]


def test_shared_types_cannot_expand_exponentially(tmp_path: Path) -> None:
    # Two references to the next type at each of 22 levels: 4 million values, 45 s, 500 MB.
    root = _project(
        tmp_path, output_extra="        big: {$ref: '#/types/T0'}\n", types=_chain(22, 2)
    )
    start = time.monotonic()
    got = _diagnostics(root)
    assert time.monotonic() - start < 10
    assert got == [
        "probe.yaml:22:21:GEN227:shared type 'T0' holds more than 20,000 values once inlined",
        "zz_types.yaml:14:3:GEN227:shared type 'T10' holds more than 20,000 values once the "
        "shared types it refers to are inlined",
    ]
    # Each type within the bounds (T0 holds 10,237 values), one tool past them: reported at
    # the tool's schema.
    root = _project(
        tmp_path / "2",
        output_extra="".join(f"        big{i}: {{$ref: '#/types/T0'}}\n" for i in range(3)),
        types=_chain(11, 2),
    )
    assert _diagnostics(root) == [
        "probe.yaml:19:7:GEN227:the output schema, its shared types included, holds more than "
        "20,000 values",
    ]


def test_gen_breaking_reports_a_baseline_past_the_bounds(tmp_path: Path) -> None:
    old = _project(
        tmp_path / "old", output_extra="        deep: {$ref: '#/types/T0'}\n", types=_chain(200, 1)
    )
    new = _project(tmp_path / "new")
    result = breaking(options(new), str(old / "manifests"))
    assert {d.code for d in result.diagnostics} == {"GEN227"}, result.diagnostics


def test_defaults_must_match_their_schema(tmp_path: Path) -> None:
    # `limit: int | None = "ten"` in the models: mypy refused the generated package.
    bad = (
        "        d1: {type: integer, default: ten}\n"
        "        d2: {type: string, enum: [a, b], default: c}\n"
        "        d3: {type: object, properties: {x: {type: integer}}, default: {x: 'no'}}\n"
        "        d4: {type: array, items: {type: integer}, default: [1, x]}\n"
        "        d5: {type: string, default: null}\n"
        "        d6: {type: boolean, default: 1}\n"
        "        d7: {type: string, format: date-time, default: '2024-01-01T00:00:00'}\n"
        "        d8: {type: string, format: uuid, default: not-a-uuid}\n"
        "        d9: {$ref: '#/types/Short', default: toolong}\n"
    )
    good = (
        "        g1: {type: integer, default: 10}\n"
        "        g2: {type: string, format: email, default: a@example.com}\n"
        "        g3: {type: object, additionalProperties: {type: integer}, default: {a: 1}}\n"
        "        g4: {$ref: '#/$defs/Small', default: 3}\n"
        "        g5: {type: [string, 'null'], default: null}\n"
        "      $defs:\n"
        "        Small: {type: integer, maximum: 5, default: 9}\n"
    )
    root = _project(
        tmp_path, output_extra=bad + good, types="  Short: {type: string, maxLength: 2}\n"
    )
    got = _diagnostics(root)
    assert [g.split(":GEN203:")[1] for g in got] == [
        "default \"ten\" does not match its schema: 'ten' is not of type 'integer'",
        "default \"c\" does not match its schema: 'c' is not one of ['a', 'b']",
        "default {\"x\": \"no\"} does not match its schema at /x: 'no' is not of type 'integer'",
        "default [1, \"x\"] does not match its schema at /1: 'x' is not of type 'integer'",
        "default null does not match its schema: None is not of type 'string'",
        "default 1 does not match its schema: 1 is not of type 'boolean'",
        "default \"2024-01-01T00:00:00\" does not match its schema: '2024-01-01T00:00:00' is "
        "not a 'date-time'",
        "default \"not-a-uuid\" does not match its schema: 'not-a-uuid' is not a 'uuid'",
        "default \"toolong\" does not match its schema: 'toolong' is too long",
        "default 9 does not match its schema: 9 is greater than the maximum of 5",
    ], got
    assert [g.split(":GEN203:")[0] for g in got][:2] == ["probe.yaml:22:38", "probe.yaml:23:51"]


def test_defaults_the_models_cannot_type_are_refused(tmp_path: Path) -> None:
    """Valid, but written as the text they are in a field typed as a class: mypy refused
    `since: AwareDatetime | None = "2024-01-01T00:00:00Z"` in the models and the client. (An
    object default is fine: the models build it with a default factory.)"""
    extra = (
        "        u1: {type: string, format: date-time, default: '2024-01-01T00:00:00Z'}\n"
        "        u2: {type: string, format: date, default: '2024-02-29'}\n"
        "        u3: {type: string, format: uuid, default: 12345678-1234-5678-1234-567812345678}\n"
        "        ok: {type: object, properties: {x: {type: integer}}, default: {x: 1}}\n"
        "        u6: {type: array, items: {$ref: '#/types/Day'}, default: ['2024-01-01']}\n"
    )
    root = _project(tmp_path, output_extra=extra, types="  Day: {type: string, format: date}\n")
    got = _diagnostics(root)
    assert [g.split(":GEN203:")[1] for g in got] == [
        'default "2024-01-01T00:00:00Z" cannot be written in the generated models, which type '
        "a date-time string as datetime",
        'default "2024-02-29" cannot be written in the generated models, which type a date '
        "string as date",
        'default "12345678-1234-5678-1234-567812345678" cannot be written in the generated '
        "models, which type a uuid string as UUID",
        'default ["2024-01-01"] cannot be written in the generated models, which type a date '
        "string as date",
    ], got


def test_defaults_through_a_dynamic_ref_are_checked_as_through_a_ref(tmp_path: Path) -> None:
    """A `$dynamicRef` resolves as a `$ref` in a tool's schema: a default the models cannot
    type through one passed, and the generated client declared `since: ProbeGetThingInputTS
    | None = "2024-01-01T00:00:00Z"` (a datetime with a text default), which mypy refuses."""
    extra = (
        "        r1: {$ref: '#day', default: '2024-01-01'}\n"
        "        d1: {$dynamicRef: '#when', default: '2024-01-02'}\n"
        "        d2: {type: array, items: {$dynamicRef: '#when'}, default: ['2024-01-03']}\n"
        "        ok: {$dynamicRef: '#when'}\n"
        "      $defs:\n"
        "        Day: {$anchor: day, $dynamicAnchor: when, type: string, format: date}\n"
    )
    got = _diagnostics(_project(tmp_path, output_extra=extra))
    assert got == [
        f"probe.yaml:{line}:GEN203:default {value} cannot be written in the generated models, "
        "which type a date string as date"
        for line, value in (
            ("22:37", '"2024-01-01"'),
            ("23:45", '"2024-01-02"'),
            ("24:67", '["2024-01-03"]'),
        )
    ], got


def test_what_the_compiler_used_to_crash_on_is_a_located_diagnostic(tmp_path: Path) -> None:
    """Found by fuzzing the manifests: a pattern nested past the regex parser's recursion, a
    length bound past 64 bits (the generated models failed on import) and a number past
    Python's printable integers (YAML's hex integers have no digit limit) each crashed a stage
    or the generated package."""
    nested = "(" * 1000 + "a" + ")" * 1000
    root = _project(
        tmp_path / "a",
        input_id=f"{{type: string, pattern: '{nested}', maxLength: 100000000000000000000}}",
    )
    assert [g.split(":", 3)[3] for g in _diagnostics(root)] == [
        "GEN203:invalid regular expression '" + "(" * 57 + "...': nested too deeply",
        "GEN203:maxLength 100000000000000000000 is beyond what the generated models can hold "
        "(2^63 - 1)",
    ]
    root = _project(
        tmp_path / "b", input_extra=f"        n: {{type: integer, maximum: 0x{'f' * 3600}}}\n"
    )
    # Once: the schema check does not refuse again the text left in the number's place.
    [only] = _diagnostics(root)
    assert only.startswith("probe.yaml:18:37:GEN002:'0xfff") and only.endswith(
        "...' is too large a number (more than 1024 bits)"
    )


def test_a_tag_the_loader_refuses_leaves_the_structure_around_it_checked(tmp_path: Path) -> None:
    """Only what is said about a value the loader could not read is dropped as its echo: a
    capability whose `name:` line became a tag is still missing its name."""
    root = make_project(tmp_path, copy_defaults=True)
    slack = root / "manifests" / "connectors" / "slack.yaml"
    slack.write_text(
        slack.read_text(encoding="utf-8").replace("  - name: send_message", "  - !foo", 1),
        encoding="utf-8",
    )
    found = api.compile_manifests(options(root)).diagnostics
    assert [(d.code, d.message) for d in found] == [
        ("GEN002", "unsupported YAML tag '!foo': manifests are plain YAML (no tags)"),
        ("GEN101", "capabilities/0 is missing required property 'name'"),
    ]


def test_collections_nested_past_what_yaml_can_compose_are_one_diagnostic(
    tmp_path: Path,
) -> None:
    """libyaml composes in C and crashed the process (SIGSEGV) at some 26,000 levels of `[`:
    a subprocess, so that the old crash fails this test instead of the run."""
    import subprocess
    import sys

    root = make_project(tmp_path, {"deep.yaml": "a: " + "[" * 100_000 + "]" * 100_000 + "\n"})
    run = subprocess.run(
        [sys.executable, "-m", "generator", "validate"], cwd=root, capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr
    assert "manifests/deep.yaml:1:104: error[GEN002] YAML nesting deeper than 100 levels" in (
        run.stdout + run.stderr
    )


def test_multiple_of_past_a_floats_range_is_compared_exactly() -> None:
    from generator.breaking import _multiple_relaxed

    assert _multiple_relaxed(2**1024 - 1, 1) is True  # the float quotient overflowed
    assert _multiple_relaxed(2**1024 - 1, 2) is False
    assert _multiple_relaxed(2**1024 - 1, 0.5) is False
    assert _multiple_relaxed(1.0, 0.1) is True  # as jsonschema divides


def test_a_patterns_end_anchor_refuses_a_trailing_newline(tmp_path: Path) -> None:
    """JSON Schema's `$` (ECMA-262) is the end of the text; Python's `re.search`, under
    jsonschema, also matched it before a final newline: a package version "0.1.0\\n" passed
    `^...$` into pyproject.toml, and a default the models' pattern refuses compiled."""
    root = _project(tmp_path / "a")
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text(encoding="utf-8")
    assert "\n  version: 0.1.0\n" in text
    gateway.write_text(text.replace("\n  version: 0.1.0\n", '\n  version: "0.1.0\\n"\n'))
    got = _diagnostics(root)
    assert len(got) == 1, got
    assert got[0].startswith(
        "gateway.yaml:7:12:GEN105:package/version: invalid value '0.1.0\\n': a version is "
    )
    root = _project(
        tmp_path / "b",
        output_extra="        code: {type: string, pattern: '^[a-z]+$', default: \"abc\\n\"}\n"
        "        fine: {type: string, pattern: '^[a-z]+$', default: abc}\n",
    )
    assert _diagnostics(root) == [
        "probe.yaml:22:60:GEN203:default \"abc\\n\" does not match its schema: 'abc\\n' does "
        "not match '^[a-z]+$'"
    ]


# Patterns that backtrack exponentially on a near-miss, and patterns of the same look that do not.
_EXPONENTIAL = [
    r"^(a+)+$",
    r"(a*)*b",
    r"^(\w+\s?)*$",
    r"^([a-z]+-?)+$",
    r"(x+x+)+y",
    r"^(aa?)+$",
    r"^(a|aa)+$",
    r"^(a|a?)+$",
    r"^(ab|a|b)+$",
    r"(a+){1,50}",
    r"(?i)(A+a)+",
    r"(?i)^(ß+)+$",  # ß upper-cases to two letters
    r"^(https?://)?([\da-z.-]+)\.([a-z.]{2,6})([/\w .-]*)*/?$",
]
_LINEAR = [
    r"^[a-z0-9]+(-[a-z0-9]+)*$",
    r"^https://[^/]+(/[^/]+)*$",
    r"^\w+(\s\w+)*$",
    r"^([A-Z][a-z]*)+$",
    r"^(\d{1,3}\.){3}\d{1,3}$",
    r"^(\d+,)*\d+$",
    r"^([a-z]+\.)*[a-z]+$",
    r"^v\d+(\.\d+)*$",
    r"^(ab?)+$",
    r"^(ab|a)+$",
    r"^(a+){3}$",
    r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$",
    r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$",
    r"^gid://shopify/Order/[0-9]+$",
    r"(?i)^[a-z]+$",  # its alphabet holds ß, İ and ŉ, whose other case is two characters
    r"(?i)^stra(ß|ss)e$",
    r"a++",
    r"(?>a+)+",
]


def test_patterns_that_backtrack_exponentially_are_named() -> None:
    from generator.patterns import hazard

    assert [p for p in _EXPONENTIAL if hazard(p) is None] == []
    assert [p for p in _LINEAR if hazard(p) is not None] == []


def test_a_catastrophic_pattern_is_refused_without_matching_it(tmp_path: Path) -> None:
    """`^(a+)+$` against a default of thirty `a`s and a `!` tries 2**30 splits (25 s for 28,
    minutes for 30); at run time any argument could do the same to the gateway. The pattern is
    GEN203 at its place, and defaults are not matched against it (nor against such a
    patternProperties key, which additionalProperties matches every name against); a default
    that misses a sound pattern is still reported."""
    near_miss = "a" * 30 + "!"
    extra = (
        f"        p1: {{type: string, pattern: '^(a+)+$', default: '{near_miss}'}}\n"
        "        p2: {type: object, patternProperties: {'^(a|aa)+$': {type: integer}},\n"
        f"             default: {{'{near_miss}': 1}}}}\n"
        "        p5: {type: object, patternProperties: {'^(a+)+$': {type: integer}},\n"
        f"             additionalProperties: false, default: {{'{near_miss}': 1}}}}\n"
        "        p3: {type: string, pattern: '^[a-z]+(-[a-z]+)*$', default: 'ab-'}\n"
        "        p4: {type: string, pattern: '^[a-z]+(-[a-z]+)*$', default: 'ab-cd'}\n"
    )
    got = _diagnostics(_project(tmp_path, output_extra=extra))
    assert [g.split(":GEN203:")[0] for g in got] == [
        "probe.yaml:22:37",
        "probe.yaml:23:61",
        "probe.yaml:25:59",
        "probe.yaml:27:68",
    ], got
    assert [g.split(":GEN203:")[1].split(" (")[0] for g in got] == [
        "regular expression '^(a+)+$' can take exponential time to refuse a text",
        "regular expression '^(a|aa)+$' can take exponential time to refuse a text",
        "regular expression '^(a+)+$' can take exponential time to refuse a text",
        "default \"ab-\" does not match its schema: 'ab-' does not match '^[a-z]+(-[a-z]+)*$'",
    ], got


def test_a_pattern_property_names_end_anchor_refuses_a_trailing_newline(tmp_path: Path) -> None:
    """A default is matched against patternProperties keys as JSON Schema reads them: a name
    "abc\\n" does not match `^[a-z]+$`, so `additionalProperties: false` refuses it (Python's
    `$` matched it, and the default compiled into models the gateway's clients would send)."""
    root = _project(
        tmp_path,
        output_extra=(
            "        tags: {type: object, patternProperties: {'^[a-z]+$': {type: integer}},\n"
            '               additionalProperties: false, default: {"abc\\n": 1}}\n'
            "        fine: {type: object, patternProperties: {'^[a-z]+$': {type: integer}},\n"
            "               additionalProperties: false, default: {abc: 1}}\n"
        ),
    )
    assert _diagnostics(root) == [
        "probe.yaml:23:54:GEN203:default {\"abc\\n\": 1} does not match its schema: 'abc\\n' "
        "does not match any of the regexes: '^[a-z]+$'"
    ]


def test_examples_its_schema_refuses_are_reported_at_the_example(tmp_path: Path) -> None:
    """An example is a value the schema says it accepts: one it refuses misleads a model
    choosing arguments and TOOLS.md (which shows a call with the first). GEN203 at each such
    item, saying why, as for a default; a schema holding a pattern that can backtrack
    exponentially is reported for the pattern, and no example is matched against it."""
    near_miss = "a" * 30 + "!"
    root = _project(
        tmp_path,
        input_extra=(
            "        code: {type: string, pattern: '^[a-z]+$', examples: [abc, \"abc\\n\", 7]}\n"
            "        filter:\n"
            "          type: object\n"
            "          properties: {n: {type: integer}}\n"
            "          examples:\n"
            "            - {n: 1}\n"
            "            - {n: two}\n"
            f"        slow: {{type: string, pattern: '^(a+)+$', examples: ['{near_miss}']}}\n"
            "        fine: {type: array, items: {type: string}, examples: [[a, b], []]}\n"
        ),
        query='{code: "{code}", filter: "{filter}", slow: "{slow}", fine: "{fine}"}',
    )
    got = _diagnostics(root)
    assert got[:3] == [
        "probe.yaml:18:67:GEN203:example \"abc\\n\" does not match its schema: 'abc\\n' does "
        "not match '^[a-z]+$'",
        "probe.yaml:18:76:GEN203:example 7 does not match its schema: 7 is not of type 'string'",
        'probe.yaml:24:15:GEN203:example {"n": "two"} does not match its schema at /n: \'two\' '
        "is not of type 'integer'",
    ]
    assert [g.split(" (")[0] for g in got[3:]] == [
        "probe.yaml:25:39:GEN203:regular expression '^(a+)+$' can take exponential time to "
        "refuse a text"
    ]


def test_a_misspelt_type_lists_the_types_and_the_closest_one(tmp_path: Path) -> None:
    """The metaschema's own words were "'strng' is not valid under any of the given schemas"
    (of its anyOf: a type name or a list of them)."""
    types = "array, boolean, integer, null, number, object or string"
    for i, (input_id, shown, hint) in enumerate(
        [
            ("{type: strng}", "'strng'", "did you mean 'string'?"),
            ("{type: Integer}", "'Integer'", "did you mean 'integer'?"),
            ("{type: [string, nul]}", "'nul'", "did you mean 'null'?"),
            ("{type: 3}", "3", None),
        ]
    ):
        root = _project(tmp_path / str(i), input_id=input_id)
        found = [
            (d.span.file, d.span.line, d.span.col, d.code, d.message, d.hint)
            for d in api.compile_manifests(options(root)).diagnostics
        ]
        assert found == [
            (
                "manifests/connectors/probe.yaml",
                17,
                20,
                "GEN203",
                "capabilities/0/input/properties/id/type is not valid JSON Schema 2020-12: "
                f"{shown} is not a type (the types are {types})",
                hint,
            )
        ], input_id
    root = _project(tmp_path / "twice", input_id="{type: [string, string]}")
    [only] = _diagnostics(root)
    assert only.endswith(
        ":GEN203:capabilities/0/input/properties/id/type is not valid JSON "
        "Schema 2020-12: the type list names 'string' twice"
    )


def test_required_properties_a_closed_object_cannot_have_are_refused(tmp_path: Path) -> None:
    """`required: [coment]` beside `additionalProperties: false` built: no call (input) or no
    answer (output) could ever be valid. Refused where that is certain, at the name, with the
    declared name it is closest to; not where a pattern, `additionalProperties` or (for
    `unevaluatedProperties`) a subschema beside it may admit the name, nor under `not`."""
    bad = (
        "        b1: {type: object, additionalProperties: false, required: [nmae], "
        "properties: {name: {type: string}}}\n"
        "        b2: {type: object, unevaluatedProperties: false, required: [x], "
        "properties: {y: {type: string}}}\n"
        "        b3: {type: [object, 'null'], additionalProperties: false, required: [a]}\n"
        # additionalProperties sees its own schema's properties only, not an allOf sibling's
        "        b4: {allOf: [{properties: {a: {}}}, "
        "{additionalProperties: false, required: [a]}]}\n"
        "        b5: {$ref: '#/types/Closed'}\n"
    )
    good = (
        "        g1: {type: object, additionalProperties: false, required: [x-1], "
        "patternProperties: {'^x-': {}}}\n"
        "        g2: {type: object, unevaluatedProperties: false, required: [a], "
        "allOf: [{properties: {a: {}}}]}\n"
        "        g3: {not: {type: object, additionalProperties: false, required: [a]}}\n"
        "        g4: {type: object, additionalProperties: {type: string}, required: [a]}\n"
        "        g5: {type: object, additionalProperties: false, required: [a], "
        "properties: {a: {}}}\n"
    )
    types = (
        "  Closed: {type: object, additionalProperties: false, required: [id], "
        "properties: {ids: {type: string}}}\n"
        "  Unused: {type: object, additionalProperties: false, required: [z]}\n"
    )
    root = _project(tmp_path, output_extra=bad + good, types=types)
    text = (root / "manifests" / "connectors" / "probe.yaml").read_text(encoding="utf-8")

    def at(needle: str, within: str) -> str:
        start = text.index(within) + within.index(needle)
        line = text[:start].count("\n") + 1
        return f"probe.yaml:{line}:{start - text.rfind(chr(10), 0, start)}"

    closed = "is not among the properties, and additionalProperties: false refuses any other"
    got = _diagnostics(root)
    unmatched = "no object can match this schema"
    b3 = "'null'], additionalProperties: false, required: [a]"
    b4 = "{additionalProperties: false, required: [a]}]"
    assert got == [
        f"{at('nmae', '[nmae]')}:GEN203:required property 'nmae' {closed}: {unmatched}",
        f"{at('x', 'required: [x]')}:GEN203:required property 'x' is not among the "
        f"properties, and unevaluatedProperties: false refuses any other: {unmatched}",
        f"{at('a]', b3)}:GEN203:required property 'a' {closed}: {unmatched}",
        f"{at('a]', b4)}:GEN203:required property 'a' {closed}: {unmatched}",
        # inlined: located at the reference
        f"{at('{$ref', 'b5: {$ref')}:GEN203:required property 'id' {closed}: {unmatched}",
        f"zz_types.yaml:5:66:GEN203:required property 'z' {closed}: {unmatched}",
    ], got
    hints = [d.hint for d in api.compile_manifests(options(root)).diagnostics]
    assert hints == [
        "did you mean 'name'?",
        "declared: y",
        "declare it under properties",
        "declare it under properties",
        "did you mean 'ids'?",
        "declare it under properties",
    ]
