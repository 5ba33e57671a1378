"""`gen lint`: client profiles, quality rules, per-file disabling, tenants' tool counts.

Each tests/lint/<case>/ is a project (manifests/) and the expected diagnostics
(expected.txt); regenerate with `pytest tests/test_lint.py --update-golden` (refused in CI).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, make_project

from generator import api, lint
from generator.diagnostics import Severity, render
from generator.emit.package import mcp_tool

CASES_DIR = ROOT / "tests" / "lint"
CASES = sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
TODAY = dt.date(2026, 4, 1)


def _lint(root: Path, **kw: object) -> lint.LintResult:
    return lint.lint(api.Options.for_project(root, cache=False), today=TODAY, **kw)  # type: ignore[arg-type]


def _codes(result: lint.LintResult) -> list[tuple[str, str]]:
    return [(d.code, str(d.span)) for d in result.diagnostics]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, update_golden: bool) -> None:
    actual = render(_lint(case).diagnostics)
    expected = case / "expected.txt"
    if update_golden:
        expected.write_text(actual, encoding="utf-8")
    assert actual == expected.read_text(encoding="utf-8")


def test_project_manifests_pass_their_own_profiles() -> None:
    result = lint.lint(api.Options.for_project(ROOT, cache=False))
    assert [p.name for p in result.profiles] == ["claude", "openai", "gemini", "cursor", "vscode"]
    assert result.ok, render(result.diagnostics)
    assert {t.tenant for t in result.tokens} == {"support_desk", "full_stack"}
    assert all(t.budget == 20_000 and not t.over for t in result.tokens)


def test_70_character_tool_name_fails() -> None:
    result = _lint(CASES_DIR / "name_70_characters")
    assert not result.ok
    assert _codes(result) == [("GEN202", "manifests/crm.yaml:9:11")]


def test_prefixed_name_and_first_character_depend_on_the_profile() -> None:
    case = CASES_DIR / "names"
    assert _codes(_lint(case, profiles=("claude",))) == []
    assert _codes(_lint(case, profiles=("cursor",))) == [("LNT002", "manifests/crm.yaml:21:11")]
    assert _codes(_lint(case, profiles=("gemini",))) == [("LNT001", "manifests/native.yaml:4:11")]


def test_top_level_one_of_fails_for_every_profile() -> None:
    for profiles in (("claude",), ("gemini",), ("openai-strict",)):
        result = _lint(CASES_DIR / "top_level_oneof", profiles=profiles)
        assert _codes(result) == [("GEN204", "manifests/crm.yaml:15:7")]


def test_nested_one_of_fails_only_where_rejected() -> None:
    case = CASES_DIR / "schema_features"
    assert _lint(case, profiles=("claude",)).ok
    gemini = _lint(case, profiles=("gemini",))
    assert ("LNT004", "manifests/crm.yaml:23:13") in _codes(gemini)
    assert {c for c, _ in _codes(gemini)} == {"LNT003", "LNT004", "LNT005", "LNT006"}
    strict = _lint(case, profiles=("openai-strict",))
    assert {c for c, _ in _codes(strict)} == {"LNT004", "LNT007", "LNT008"}


def _many_tools(tmp_path: Path, n: int) -> Path:
    caps = "".join(
        f"""
  - name: action_{i:03d}
    description: Run action number {i} of the big CRM and return what it produced, as JSON.
    scope: read
    annotations: {{read_only: true}}
    input: {{type: object, additionalProperties: false, properties: {{}}}}
    output: {{type: object, properties: {{}}}}
    http: {{method: GET, path: /actions/{i}}}"""
        for i in range(n)
    )
    return make_project(
        tmp_path,
        {
            "gateway.yaml": """version: 1
kind: gateway
package: {name: big, import_name: big, version: 1.0.0}
server: {name: big}
tenants:
  - {name: everything, connectors: [big], scopes: [read]}
  - {name: nothing, connectors: [], scopes: [read]}
lint: {profiles: [claude, cursor, vscode], token_budget: 100000}
""",
            "big.yaml": """version: 1
kind: connector
name: big
title: Big
description: A connector with many tools.
base_url: https://big.example.com
auth: {type: none}
capabilities:"""
            + caps
            + "\n",
        },
    )


def test_tenant_with_150_tools_exceeds_the_caps(tmp_path: Path) -> None:
    root = _many_tools(tmp_path, 150)
    result = _lint(root)
    counts = [d for d in result.diagnostics if d.code in {"LNT009", "LNT010"}]
    assert sorted((d.code, str(d.span), d.severity.value, d.message) for d in counts) == [
        (
            "LNT009",
            "manifests/gateway.yaml:6:5",
            "error",
            "tenant 'everything' sees 150 tools; Cursor accepts at most 80 [cursor]",
        ),
        (
            "LNT009",
            "manifests/gateway.yaml:6:5",
            "error",
            "tenant 'everything' sees 150 tools; VS Code / GitHub Copilot accepts at most 128 "
            "[vscode]",
        ),
        (
            "LNT010",
            "manifests/gateway.yaml:6:5",
            "warning",
            "tenant 'everything' sees 150 tools; tool selection degrades above 40 [claude]",
        ),
    ]
    assert not result.ok
    assert _lint(root, profiles=("claude",)).ok  # a warning only


def test_profile_limits_are_configurable(tmp_path: Path) -> None:
    root = _many_tools(tmp_path, 100)
    assert not _lint(root, profiles=("cursor",)).ok
    gateway = root / "manifests" / "gateway.yaml"
    gateway.write_text(
        gateway.read_text().replace(
            "token_budget: 100000}", "token_budget: 100000, limits: {cursor: {max_tools: 120}}}"
        )
    )
    result = _lint(root, profiles=("cursor",))
    assert result.ok and [d.code for d in result.diagnostics] == ["LNT010"]


def test_a_profiles_own_token_budget_wins_over_the_manifests(tmp_path: Path) -> None:
    """`lint.token_budget` is every profile's budget unless `lint.limits` gives one its own:
    the override used to be ignored whenever the global budget was set."""
    root = _many_tools(tmp_path, 3)
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text()

    def budget(limits: str, profiles: tuple[str, ...]) -> int | None:
        gateway.write_text(text.replace("token_budget: 100000}", f"token_budget: 100000{limits}}}"))
        return _lint(root, profiles=profiles).tokens[0].budget

    assert budget("", ("claude", "cursor")) == 100000
    assert budget(", limits: {cursor: {token_budget: 1000}}", ("claude", "cursor")) == 1000
    assert budget(", limits: {cursor: {token_budget: 1000}}", ("claude",)) == 100000
    assert budget(", limits: {cursor: {token_budget: 250000}}", ("cursor",)) == 250000


def test_a_limits_entry_that_cannot_matter_is_reported(tmp_path: Path) -> None:
    """Limits for a profile the project does not check change nothing, and a warn_tools not
    below max_tools means the warning never comes: both used to pass silently."""
    root = _many_tools(tmp_path, 3)
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text()
    limits = ", limits: {openai: {max_tools: 50}, cursor: {warn_tools: 90}}"
    gateway.write_text(text.replace("token_budget: 100000}", f"token_budget: 100000{limits}}}"))
    found = [
        (d.code, d.severity.value, d.message) for d in _lint(root).diagnostics if d.code == "LNT023"
    ]
    assert sorted(found) == [
        (
            "LNT023",
            "error",
            "lint.limits for 'cursor': warn_tools 90 is not below max_tools 80, so the warning "
            "can never come first",
        ),
        (
            "LNT023",
            "warning",
            "lint.limits sets 'openai', a profile this project does not check",
        ),
    ]
    # Named on the command line, the profiles checked are a choice of this run: not reported.
    assert not [d for d in _lint(root, profiles=("claude",)).diagnostics if "openai" in d.message]


def test_disable_needs_the_finding_in_the_same_file() -> None:
    result = _lint(CASES_DIR / "quality")
    assert [(s.diagnostic.code, s.reason) for s in result.suppressed] == [
        ("LNT011", "the tag tool is internal and self-explanatory to our agents.")
    ]
    assert ("LNT018", "manifests/crm.yaml:53:7") in _codes(result)  # suppresses nothing
    assert ("LNT012", "manifests/desk.yaml:9:11") in _codes(result)  # crm.yaml's entry
    assert ("LNT018", "manifests/desk.yaml:18:7") in _codes(result)  # unknown rule: error
    assert not result.ok


def test_disable_without_reason_is_a_schema_error(tmp_path: Path) -> None:
    root = _many_tools(tmp_path, 1)
    big = root / "manifests" / "big.yaml"
    big.write_text(big.read_text() + "lint:\n  disable:\n    - {rule: LNT013}\n")
    result = _lint(root)
    assert [d.code for d in result.diagnostics] == ["GEN101"]


def test_deprecations_are_served_with_a_note_and_warned_about() -> None:
    case = CASES_DIR / "quality"
    project = api.compile_manifests(api.Options.for_project(case, cache=False)).project
    assert project is not None
    wire = mcp_tool(project.tool("crm_count_contacts"))
    assert str(wire["description"]).endswith(
        "\n\nDeprecated: use crm_find_contact instead (sunset 2026-06-30). "
        "Counts come with find_contact now."
    )
    wire_input = mcp_tool(project.tool("crm_delete_contact"))["inputSchema"]
    assert isinstance(wire_input, dict)
    hard = wire_input["properties"]["hard"]
    assert hard["description"] == (
        "Skip the trash. Deprecated: use mode instead (sunset 2026-03-31)."
    )
    assert hard["deprecated"] is True
    warned = [d for d in _lint(case).diagnostics if d.code == "LNT015"]
    assert [str(d.span) for d in warned] == ["manifests/crm.yaml:31:9", "manifests/crm.yaml:45:5"]
    assert all(d.severity is Severity.WARNING for d in warned)


def test_property_replacement_must_exist(tmp_path: Path) -> None:
    root = _many_tools(tmp_path, 1)
    big = root / "manifests" / "big.yaml"
    big.write_text(
        big.read_text()
        .replace(
            "properties: {}}\n    output",
            "properties: {old: {type: string, deprecated: true, x-replacement: nope}}}\n    output",
        )
        .replace("path: /actions/0}", 'path: /actions/0, query: {old: "{old}"}}')
    )
    result = _lint(root)
    assert [d.code for d in result.diagnostics] == ["GEN218"]


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_formats_and_exit_codes() -> None:
    ok = _gen("lint")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Counts depend on the manifests (adding a connector changes them): the format is checked.
    assert re.search(r"full_stack: \d+ tools", ok.stdout), ok.stdout
    assert re.search(r"support_desk: \d+ tools", ok.stdout), ok.stdout
    bad = _gen(
        "lint",
        "--project",
        str(CASES_DIR / "schema_features"),
        "--profile",
        "gemini",
        "--error-format",
        "json",
    )
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["profiles"] == ["gemini"]
    assert {d["code"] for d in doc["diagnostics"]} == {"LNT003", "LNT004", "LNT005", "LNT006"}
    assert doc["tokens"][0]["tenant"] == "small"
    gh = _gen("lint", "--project", str(CASES_DIR / "names"), "--error-format", "github")
    assert gh.returncode == 1
    assert "::error file=tests/lint/names/manifests/crm.yaml,line=21,col=11,title=LNT002::" in (
        gh.stderr
    )
    usage = _gen("lint", "--profile", "netscape")
    assert usage.returncode == 2


def test_an_idempotency_key_where_repeating_is_already_safe_is_a_warning(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "stripe.yaml").read_text(encoding="utf-8")
    edits = [
        (  # a GET not annotated idempotent: upstreams ignore the key; the annotation is missing
            "annotations: {read_only: true, idempotent: true, open_world: true}",
            "annotations: {read_only: true, open_world: true}",
        ),
        (
            "      path: /customers\n",
            "      path: /customers\n      idempotency_key: {header: Idem-Get}\n",
        ),
        (  # annotated idempotent: it would be retried anyway
            "annotations: {destructive: true, open_world: true}",
            "annotations: {destructive: true, idempotent: true, open_world: true}",
        ),
    ]
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    (root / "manifests" / "connectors" / "stripe.yaml").write_text(text, encoding="utf-8")
    lines = text.splitlines()

    def at(needle: str) -> str:
        line = next(i for i, s in enumerate(lines, 1) if needle in s)
        return f"manifests/connectors/stripe.yaml:{line}:{lines[line - 1].index(needle) + 1}"

    result = _lint(root)
    found = [(d.severity, str(d.span), d.message) for d in result.diagnostics if d.code == "LNT021"]
    assert found == [
        (
            Severity.WARNING,
            at("Idem-Get"),
            "stripe_list_customers sends an idempotency key with a GET, which upstreams ignore",
        ),
        (
            Severity.WARNING,
            at("Idempotency-Key"),
            "stripe_create_refund is annotated idempotent, so its idempotency_key changes nothing",
        ),
    ]
    assert not [d for d in result.diagnostics if d.code.startswith("GEN")]  # no compile error


def test_a_placeholder_between_quotes_without_a_filter_is_a_warning(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "jira.yaml").read_text(encoding="utf-8")
    target = root / "manifests" / "connectors" / "jira.yaml"
    target.write_text(text, encoding="utf-8")
    assert not [d for d in _lint(root).diagnostics if d.code == "LNT022"]  # filtered: fine

    for quoted, hint in (
        ('\\"{query}\\"', "{query|double_quoted}"),
        ("'{query}'", "{query|sql_quoted}"),
        ("{query}", "{query|single_quoted}"),  # bare, after the ~ operator
    ):
        edited = text.replace("{query|double_quoted}", quoted, 1)
        target.write_text(edited, encoding="utf-8")
        result = _lint(root)
        (found,) = [d for d in result.diagnostics if d.code == "LNT022"]
        line = next(i for i, s in enumerate(edited.splitlines(), 1) if "jql:" in s)
        assert (found.severity, found.span.line) == (Severity.WARNING, line)
        assert found.message.startswith("jira_search_issues: ")
        assert hint in (found.hint or "")
        assert not [d for d in result.diagnostics if d.code.startswith("GEN")]


@pytest.mark.parametrize(
    "written",
    [
        "$.additional_data.pagination.more_items_in_collection",
        "/additional_data/pagination/more_items_in_collection",
        "additional_data/pagination/more_items_in_collection",
        "$['additional_data']['pagination']['more_items_in_collection']",
    ],
)
def test_a_path_in_another_syntax_than_dotted_keys_is_a_warning(
    tmp_path: Path, written: str
) -> None:
    """`more: $.a.b` looks for a key named `$`, never true: paging would stop after page 1."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "pipedrive.yaml").read_text(encoding="utf-8")
    target = root / "manifests" / "connectors" / "pipedrive.yaml"
    target.write_text(text, encoding="utf-8")
    assert not [d for d in _lint(root).diagnostics if d.code == "LNT024"]  # dotted: fine

    dotted = "additional_data.pagination.more_items_in_collection"
    edited = text.replace(f"more: {dotted}", f'more: "{written}"')
    target.write_text(edited, encoding="utf-8")
    result = _lint(root)
    assert not [d for d in result.diagnostics if d.code.startswith("GEN")]
    (found,) = [d for d in result.diagnostics if d.code == "LNT024"]
    line = next(i for i, s in enumerate(edited.splitlines(), 1) if "more:" in s)
    assert (found.severity, found.span.line) == (Severity.WARNING, line)
    assert found.message.startswith("pipedrive_list_persons: http.pagination.more ")
    assert found.hint is not None and found.hint.startswith(f"write {dotted!r}")


def test_dotted_paths_with_dollars_and_slashes_inside_keys_are_no_lnt024(tmp_path: Path) -> None:
    """A key may start with `$` (`_id.$oid`) or hold a slash after a dot
    (`metadata.kubernetes.io/name`): only another path syntax is reported."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "spotify.yaml").read_text(encoding="utf-8")
    text = text.replace("fields: {tracks: tracks}", 'fields: {tracks: "tracks.$oid/x"}')
    (root / "manifests" / "connectors" / "spotify.yaml").write_text(text, encoding="utf-8")
    result = _lint(root)
    assert not [d for d in result.diagnostics if d.code.startswith("GEN")]
    assert not [d for d in result.diagnostics if d.code == "LNT024"]


def test_headers_carry_no_query_language_for_lnt022(tmp_path: Path) -> None:
    """`X-Opt: v={query}` was "a bare operand of a query", and an entity tag between quotes a
    quoted literal: a header's `name=value` and quoted strings are no query. The same text in
    the query is still reported, where it was."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "jira.yaml").read_text(encoding="utf-8")
    target = root / "manifests" / "connectors" / "jira.yaml"
    headers = '      headers: {X-Opt: "v={query}", If-Match: \'"{query}"\'}\n'
    target.write_text(
        text.replace("      path: /search\n", "      path: /search\n" + headers), encoding="utf-8"
    )
    result = _lint(root)
    assert not [d for d in result.diagnostics if d.code.startswith("GEN")]
    assert [d for d in result.diagnostics if d.code == "LNT022"] == []
    query = 'maxResults: "{max_results}"}'
    target.write_text(text.replace(query, query[:-1] + ', opt: "v={query}"}'), encoding="utf-8")
    found = [
        (d.span.line, d.span.col, d.message) for d in _lint(root).diagnostics if d.code == "LNT022"
    ]
    assert found == [
        (
            55,
            108,
            "jira_search_issues: {query} in http.query is a bare operand of a query: a quote, a "
            "space or a keyword in 'query' would change the query",
        )
    ]


def test_a_bare_operand_warns_only_for_text_inputs(tmp_path: Path) -> None:
    """`maxResults = {max_results}` is a number: no quote can change the query."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (ROOT / "tests" / "data" / "connectors" / "jira.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "ORDER BY created DESC", "AND votes = {max_results} AND summary ~ {query} ORDER BY created"
    )
    (root / "manifests" / "connectors" / "jira.yaml").write_text(text, encoding="utf-8")
    found = [d.message for d in _lint(root).diagnostics if d.code == "LNT022"]
    assert found == [
        "jira_search_issues: {query} in http.query is a bare operand of a query: a quote, a "
        "space or a keyword in 'query' would change the query"
    ]
