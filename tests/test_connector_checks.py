"""Compile-time checks of connector bindings that used to pass and then misbehave at run time:
pagination keys, where the cursor goes, and entity mappings (args and field paths)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, make_project, options

from generator import api

DATA = ROOT / "tests" / "data" / "connectors"


def _compiled(tmp_path: Path, name: str, *edits: tuple[str, str]) -> tuple[Any, str]:
    """The diagnostics of the default manifests plus `name` from tests/data, edited, and the
    edited text."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / name).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / "manifests" / "connectors" / name).write_text(text, encoding="utf-8")
    return api.compile_manifests(options(root)).diagnostics, text


def _diagnostics(tmp_path: Path, name: str, *edits: tuple[str, str]) -> list[str]:
    found, _text = _compiled(tmp_path, name, *edits)
    return [f"{d.span.line}:{d.code}:{d.message}" for d in found if d.span.file.endswith(name)]


def test_a_gateway_manifest_that_fails_its_schema_is_not_echoed_by_the_connectors(
    tmp_path: Path,
) -> None:
    """The connectors' entity mappings name the gateway's entity types: with the gateway
    manifest refused, they are not reported as unknown types (each an echo of its error)."""
    root = make_project(tmp_path, copy_defaults=True)
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text(encoding="utf-8")
    assert "  version: 0.1.0\n" in text
    gateway.write_text(text.replace("  version: 0.1.0\n", "  version: 0.2.0-beta\n"), "utf-8")
    result = api.compile_manifests(options(root))
    assert [(d.span.file, d.code) for d in result.diagnostics] == [
        ("manifests/gateway.yaml", "GEN105")
    ]


def test_the_three_api_connectors_compile_cleanly(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    for path in DATA.glob("*.yaml"):
        shutil.copy(path, root / "manifests" / "connectors" / path.name)
    result = api.compile_manifests(options(root))
    assert result.ok, result.diagnostics


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        (  # the cursor placed twice
            "notion.yaml",
            ("pagination: {style: cursor,", "pagination: {style: cursor, param: start_cursor,"),
            "GEN213:the cursor is placed by {cursor} here and by pagination.param: keep one",
        ),
        (  # nowhere to put the cursor
            "notion.yaml",
            ('        start_cursor: "{cursor}"\n', ""),
            "GEN213:cursor pagination needs `param`, or a {cursor} placeholder",
        ),
        (
            "stripe.yaml",
            ("next: data.-1.id, more: has_more}", "more: has_more}"),
            "GEN213:cursor pagination needs `next`",
        ),
        (
            "stripe.yaml",
            ("more: has_more}", "more: has_more, total: total_count}"),
            "GEN213:cursor pagination does not use `total`",
        ),
        (
            "jira.yaml",
            ("size_param: maxResults", "size_param: max_results"),
            "GEN213:size_param 'max_results' is neither a query parameter nor a top-level body key",
        ),
        (
            "jira.yaml",
            ("path: /search\n", "path: /search/{cursor}\n"),
            "GEN207:{cursor} cannot be in http.path",
        ),
        (
            "jira.yaml",
            ('max_results: "{limit}"}', 'max_results: "{limit}", bogus: 1}'),
            "GEN212:entity args key 'bogus' is not an input property of the capability",
        ),
        (
            "jira.yaml",
            ('args: {query: "{query}"', 'args: {query: "{nothing}"'),
            "GEN207:placeholder {nothing} in entity args is not filled by entity search",
        ),
        (
            "jira.yaml",
            ('args: {query: "{query}", max_results: "{limit}"}', 'args: {max_results: "{limit}"}'),
            "GEN212:entity search would call the capability without its required input 'query'",
        ),
        (
            "jira.yaml",
            ("title: fields.summary", "title: fields.sumary"),
            "GEN213:entity field 'title' reads 'fields.sumary', but the records of the output "
            "schema have no 'sumary' there",
        ),
        (  # an input the binding never sends would be silently dropped
            "jira.yaml",
            (
                "        max_results: {type: integer",
                "        project: {type: string}\n        max_results: {type: integer",
            ),
            "GEN220:input 'project' is never sent: no template of http uses {project}",
        ),
        (  # not an identifier: the runtime would send "{issue-key}" as text
            "jira.yaml",
            [
                ("required: [issue_key, summary]", "required: [issue-key, summary]"),
                ("        issue_key: {type: string", "        issue-key: {type: string"),
                ("path: /issue/{issue_key}", "path: /issue/{issue-key}"),
            ],
            "GEN207:{issue-key} in http.path is not a placeholder",
        ),
        (  # one credential field twice: which value a tenant stores would be a guess, and the
            # second (not secret) would let a secret into the URL's host
            "jira.yaml",
            (
                "    - {name: api_token, title: API token}\n",
                "    - {name: api_token, title: API token}\n"
                "    - {name: site, title: Site, secret: false}\n",
            ),
            "GEN217:credential field 'site' is declared twice in auth.fields",
        ),
        (  # a misspelt filter
            "jira.yaml",
            ("{query|double_quoted}", "{query|double_quote}"),
            "GEN223:{query|double_quote} names no template filter",
        ),
        (  # a filter that is not an identifier: sent as text, the argument dropped
            "jira.yaml",
            ("{query|double_quoted}", "{query|double-quoted}"),
            "GEN207:{query|double-quoted} in http.query is not a placeholder: a filter is "
            "written {name|filter}",
        ),
        (  # spaces inside the braces: sent as text, the argument dropped
            "jira.yaml",
            ("{query|double_quoted}", "{ query|double_quoted }"),
            "GEN207:{ query|double_quoted } in http.query is not a placeholder: a placeholder "
            "has no spaces inside its braces",
        ),
        (  # a token URL placeholder must name a non-secret credential field
            "msgraph.yaml",
            [
                (
                    "type: bearer\n",
                    "type: oauth2\n  refresh_token_field: refresh_token\n"
                    "  client_id_field: client_id\n  client_secret_field: client_secret\n"
                    "  token_url: https://login.microsoftonline.com/{tenant_dir}/oauth2/v2.0/token\n",
                ),
                (
                    "    - {name: access_token, title: Access token}\n",
                    "    - {name: access_token, title: Access token}\n"
                    "    - {name: refresh_token, title: Refresh token}\n"
                    "    - {name: client_id, title: Client id, secret: false}\n"
                    "    - {name: client_secret, title: Client secret}\n",
                ),
            ],
            "GEN207:token_url placeholder {tenant_dir} names no non-secret credential field",
        ),
        (  # a base_url value is a host name label: no quoting applies
            "jira.yaml",
            ("https://{site}.atlassian", "https://{site|json}.atlassian"),
            "GEN223:{site|json}: base_url placeholders take no filter",
        ),
        *(
            (  # a URL that no request could be made under (placeholders filled)
                "jira.yaml",
                ("https://{site}.atlassian.net", bad),
                # (a password in the URL is not repeated in the message)
                f"GEN226:base_url {bad.replace(':pw@', ':***@') + '/rest/api/3'!r} {why}",
            )
            for bad, why in (
                ("https://", "is not an absolute http(s) URL with a host name"),
                ("https://{site}.atlas sian.net", "holds a space or a control character"),
                ("https://{ site }.atlassian.net", "holds a brace that is not a {field}"),
                ("https://user:pw@{site}.atlassian.net", "holds credentials"),
                ("https://{site}.atlassian.net:port", "is not a URL (Port could not be cast"),
            )
        ),
        (
            "jira.yaml",
            ("items: issues\n", "items: issue\n"),
            "GEN213:entity items path 'issue' is not in the output schema (no 'issue' there)",
        ),
        (  # a query written into the path: http.query replaces it once it sends a parameter
            "jira.yaml",
            ("path: /search\n", "path: /search?validateQuery=strict&fields=*all\n"),
            "GEN230:http.path holds the query string '?validateQuery=strict&fields=*all': the "
            "request's query is built from http.query, which replaces it whenever it sends a "
            "parameter",
        ),
        (
            "jira.yaml",
            ("path: /search\n", "path: /search#results\n"),
            "GEN230:http.path holds the fragment '#results', which is never sent to the server",
        ),
        (  # unquoted in a flow mapping, {summary} is YAML's {summary: null}: summary never sent
            "jira.yaml",
            ('body: {fields: {summary: "{summary}"}}', "body: {fields: {summary: {summary}}}"),
            "GEN231:{summary} in http.body is not a placeholder: unquoted, YAML reads it as the "
            "mapping {summary: null}, so the argument would never be sent",
        ),
        (  # the same with a filter, in the query
            "jira.yaml",
            (
                'jql: "text ~ {query|double_quoted} ORDER BY created DESC"',
                "jql: {query|double_quoted}",
            ),
            "GEN231:{query|double_quoted} in http.query is not a placeholder",
        ),
        (  # and in entity args: entity search would pass the capability {"query": null}
            "jira.yaml",
            ('args: {query: "{query}", max', "args: {query: {query}, max"),
            "GEN231:{query} in entity args is not a placeholder: unquoted, YAML reads it as the "
            "mapping {query: null}",
        ),
        (  # the output is the mapped fields only: has_more would be missing from every answer
            "stripe.yaml",
            [
                ("required: [customers]", "required: [customers, has_more]"),
                ("        customers:\n", "        has_more: {type: boolean}\n        customers:\n"),
            ],
            "GEN213:response.fields leaves out the required output property 'has_more': the "
            "output holds the mapped fields only, so every answer would fail the output schema",
        ),
    ],
)
def test_binding_mistakes_are_located_diagnostics(
    tmp_path: Path, name: str, edit: tuple[str, str] | list[tuple[str, str]], expected: str
) -> None:
    found = _diagnostics(tmp_path, name, *(edit if isinstance(edit, list) else [edit]))
    assert len(found) == 1, found
    line, message = found[0].split(":", 1)
    assert int(line) > 1 and message.startswith(expected), found


def test_a_query_in_the_path_is_moved_into_http_query_by_the_hint(tmp_path: Path) -> None:
    edit = (
        "path: /search\n",
        'path: "/search?validateQuery=strict&expand=names,schema&maxResults=50&q={query}#top"\n',
    )
    found, text = _compiled(tmp_path, "jira.yaml", edit)
    (diagnostic,) = [d for d in found if d.code == "GEN230"]
    line = text.splitlines()[diagnostic.span.line - 1]
    assert line[diagnostic.span.col - 1 :].startswith('"/search?')  # at the path's value
    assert diagnostic.message.endswith(", and the fragment '#top' is never sent")
    assert diagnostic.hint == (
        'move it into http.query: {validateQuery: strict, expand: "names,schema", '
        'maxResults: "50", q: "{query}"}, and remove the fragment'
    )


JIRA_KEY = "        issue_key: {type: string, minLength: 1}\n"
OPTIONAL = ("required: [issue_key, summary]", "required: [summary]")
PATH_IN = "http.path holds {issue_key}, but input 'issue_key' "
SCALAR = (
    "give 'issue_key' a scalar type (string, integer, number or boolean), or send it in "
    "http.query or the body instead"
)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (  # every call without it failed "Argument 'issue_key' is required"
            [OPTIONAL],
            [
                (
                    "is optional and has no default: a call that leaves it out cannot build "
                    "the path",
                    "add 'issue_key' to required, give it a default, or send it in http.query "
                    "or the body instead",
                )
            ],
        ),
        (  # a call giving null was told the argument it gave is required
            [(JIRA_KEY, '        issue_key: {type: [string, "null"], minLength: 1}\n')],
            [
                (
                    "may be null: a call that gives null cannot build the path",
                    "give 'issue_key' a type without null, or send it in http.query or the body "
                    "instead",
                )
            ],
        ),
        (  # null by a branch of anyOf all the same
            [(JIRA_KEY, '        issue_key: {anyOf: [{type: string}, {type: "null"}]}\n')],
            [
                (
                    "may be null: a call that gives null cannot build the path",
                    "give 'issue_key' a type without null, or send it in http.query or the body "
                    "instead",
                )
            ],
        ),
        (  # sent as its percent-encoded JSON text
            [(JIRA_KEY, "        issue_key: {type: object}\n")],
            [("may be an object: its JSON text would be sent as one path segment", SCALAR)],
        ),
        (
            [(JIRA_KEY, "        issue_key: {type: array, items: {type: string}}\n")],
            [("may be an array: its JSON text would be sent as one path segment", SCALAR)],
        ),
        (  # no type says what it may be: anything, all three at once
            [OPTIONAL, (JIRA_KEY, "        issue_key: {description: The key.}\n")],
            [
                (
                    "is optional and has no default: a call that leaves it out cannot build "
                    "the path",
                    "add 'issue_key' to required, give it a default, or send it in http.query "
                    "or the body instead",
                ),
                (
                    "may be null: a call that gives null cannot build the path",
                    "give 'issue_key' a type without null, or send it in http.query or the body "
                    "instead",
                ),
                (
                    "may be an object or an array: its JSON text would be sent as one path segment",
                    SCALAR,
                ),
            ],
        ),
        # every call has a scalar for it: no diagnostic
        ([OPTIONAL, (JIRA_KEY, "        issue_key: {type: string, default: OPS-1}\n")], []),
        ([(JIRA_KEY, "        issue_key: {enum: [OPS-1, OPS-2]}\n")], []),
        ([(JIRA_KEY, "        issue_key: {type: [string, integer]}\n")], []),
        (
            [
                (JIRA_KEY, '        issue_key: {$ref: "#/$defs/Key"}\n'),
                (
                    "      required: [issue_key, summary]\n",
                    "      required: [issue_key, summary]"
                    "\n      $defs: {Key: {type: string, pattern: '^[A-Z]+-[0-9]+$'}}\n",
                ),
            ],
            [],
        ),
    ],
)
def test_a_path_placeholder_has_a_scalar_on_every_call(
    tmp_path: Path, edits: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    """A path takes each value whole as one segment and cannot leave one out: an input that a
    call may leave out, give as null or give as an object or array is GEN233 at http.path."""
    found, text = _compiled(tmp_path, "jira.yaml", *edits)
    mine = [d for d in found if d.span.file.endswith("jira.yaml")]
    assert sorted((d.code, d.message, d.hint) for d in mine) == sorted(
        ("GEN233", PATH_IN + message, hint) for message, hint in expected
    )
    for d in mine:
        line = text.splitlines()[d.span.line - 1]
        assert line[d.span.col - 1 :] == "/issue/{issue_key}"


def test_a_bound_parameter_may_be_in_the_path(tmp_path: Path) -> None:
    """A session-bound parameter always has a value (the session's tenant or user)."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / "crm_owned.yaml").read_text(encoding="utf-8")
    old = 'path: /contacts\n      query: {q: "{query}", owner: "{owner}"}'
    assert old in text
    text = text.replace(old, 'path: /users/{owner}/contacts\n      query: {q: "{query}"}')
    (root / "manifests" / "connectors" / "crm_owned.yaml").write_text(text, encoding="utf-8")
    assert api.compile_manifests(options(root)).diagnostics == ()


def test_an_unquoted_placeholder_is_located_at_its_brace(tmp_path: Path) -> None:
    """Where the mapping YAML made of it starts, and with the quoted text to write; the input
    it names is not reported again as never sent (GEN220)."""
    edit = ('body: {fields: {summary: "{summary}"}}', "body: {fields: {summary: {summary}}}")
    found, text = _compiled(tmp_path, "jira.yaml", edit)
    assert [d.code for d in found if d.span.file.endswith("jira.yaml")] == ["GEN231"]
    (diagnostic,) = found
    line = text.splitlines()[diagnostic.span.line - 1]
    assert line[diagnostic.span.col - 1 :] == "{summary}}}"
    assert diagnostic.hint == 'quote it: "{summary}"'


def test_a_null_under_a_key_that_names_no_input_is_a_constant(tmp_path: Path) -> None:
    """`{"parent": {"workspace": null}}` may be what an API wants: only a key that names an
    input, a bound parameter or the cursor is taken for an unquoted placeholder."""
    edit = (
        'body: {fields: {summary: "{summary}"}}',
        'body: {fields: {summary: "{summary}", parent: {workspace: null}}}',
    )
    assert _diagnostics(tmp_path, "jira.yaml", edit) == []


def test_response_fields_must_give_every_required_output_property(tmp_path: Path) -> None:
    """With response.fields, a call's output holds the mapped fields only: a required output
    property they leave out failed every answer as upstream_invalid_response, even when the
    upstream sent it. It is GEN213 at response.fields, naming each such property; a paginated
    tool's next_cursor is given by the executor, so it may be required without a mapping."""
    required_more = [
        ("required: [customers]", "required: [customers, has_more, next_cursor, object]"),
        (
            "        customers:\n",
            "        has_more: {type: boolean}\n        object: {type: string}\n"
            "        customers:\n",
        ),
    ]
    assert _diagnostics(tmp_path / "missing", "stripe.yaml", *required_more) == [
        "51:GEN213:response.fields leaves out the required output properties 'has_more' and "
        "'object': the output holds the mapped fields only, so every answer would fail the "
        "output schema"
    ]
    mapped = (
        "fields: {customers: data}",
        "fields: {customers: data, has_more: has_more, object: object}",
    )
    assert _diagnostics(tmp_path / "mapped", "stripe.yaml", *required_more, mapped) == []


# jira's search records' `fields` object, moved to a `$defs` entry that a `$dynamicRef` or a
# `$ref` names by its anchor.
_JIRA_FIELDS = (
    "                type: object\n"
    "                properties:\n"
    "                  summary: {type: string}\n"
    "                  status: {type: object, properties: {name: {type: string}}}\n"
)


@pytest.mark.parametrize(
    ("keyword", "anchor"), [("$dynamicRef", "$dynamicAnchor"), ("$ref", "$anchor")]
)
def test_entity_fields_are_read_through_references_by_anchor(
    tmp_path: Path, keyword: str, anchor: str
) -> None:
    """A `$dynamicRef` resolves as a `$ref` does in a tool's schema: an entity field read
    through one is checked as through a `$ref` (a field it does not have passed unchecked)."""
    moved = [
        (f"              fields:\n{_JIRA_FIELDS}", f"              fields: {{{keyword}: '#f'}}\n"),
        (
            "    output:\n      type: object\n",
            f"    output:\n      $defs:\n        Fields:\n          {anchor}: f\n"
            + _JIRA_FIELDS.replace(" " * 16, " " * 10)
            + "      type: object\n",
        ),
    ]
    assert _diagnostics(tmp_path / "ok", "jira.yaml", *moved) == []
    assert _diagnostics(
        tmp_path / "typo", "jira.yaml", *moved, ("title: fields.summary", "title: fields.sumary")
    ) == [
        "66:GEN213:entity field 'title' reads 'fields.sumary', but the records of the output "
        "schema have no 'sumary' there"
    ]


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_entity_fields_are_read_through_a_reference_and_the_keywords_beside_it(
    tmp_path: Path, keyword: str
) -> None:
    """In 2020-12 a reference's sibling keywords apply with its target: a field declared
    beside the reference is there (it was GEN213, read as the target's alone), one declared in
    neither is not."""
    moved = [
        (
            f"              fields:\n{_JIRA_FIELDS}",
            f"              fields:\n                {keyword}: '#f'\n"
            "                properties: {priority: {type: string}}\n",
        ),
        (
            "    output:\n      type: object\n",
            "    output:\n      $defs:\n        Fields:\n          "
            + ("$dynamicAnchor" if keyword == "$dynamicRef" else "$anchor")
            + ": f\n"
            + _JIRA_FIELDS.replace(" " * 16, " " * 10)
            + "      type: object\n",
        ),
        ("state: fields.status.name}", "state: fields.priority}"),
    ]
    assert _diagnostics(tmp_path / "ok", "jira.yaml", *moved) == []
    assert _diagnostics(
        tmp_path / "typo", "jira.yaml", *moved, ("title: fields.summary", "title: fields.sumary")
    ) == [
        "68:GEN213:entity field 'title' reads 'fields.sumary', but the records of the output "
        "schema have no 'sumary' there"
    ]


ASCII = "placeholder names are ASCII identifiers (A-Z, a-z, 0-9, _)"


@pytest.mark.parametrize(
    ("key", "why", "hint"),
    [
        ("issue-key", ASCII, "rename the input property to an ASCII identifier, e.g. issue_key"),
        (  # only the characters an identifier has: what is wrong is where the digit is
            "9key",
            "a placeholder name does not start with a digit",
            "rename the input property to start with a letter or _, e.g. n_9key",
        ),
        ("課題", ASCII, "rename the input property to an ASCII identifier"),  # nothing to keep
    ],
)
def test_a_placeholder_that_is_not_an_identifier_gets_a_name_that_is(
    tmp_path: Path, key: str, why: str, hint: str
) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / "jira.yaml").read_text(encoding="utf-8")
    text = text.replace("[issue_key, summary]", f"[{key}, summary]", 1)
    text = text.replace("        issue_key: {type: string", f"        {key}: {{type: string", 1)
    text = text.replace("path: /issue/{issue_key}", f"path: /issue/{{{key}}}", 1)
    (root / "manifests" / "connectors" / "jira.yaml").write_text(text, encoding="utf-8")
    found = [d for d in api.compile_manifests(options(root)).diagnostics if d.code == "GEN207"]
    assert [(d.message, d.hint) for d in found] == [
        (
            f"{{{key}}} in http.path is not a placeholder: {why}, so it would be sent as "
            "literal text",
            hint,
        )
    ]


JIRA_UPDATE = "    scope: write\n    annotations: {idempotent: true, open_world: true}\n"


@pytest.mark.parametrize(
    ("edits", "needle", "expected"),
    [
        (  # read-only API keys would run a PUT
            [(JIRA_UPDATE, JIRA_UPDATE.replace("write", "read"))],
            "    scope: read\n    annotations: {idempotent",
            "the capability sends PUT, which changes data upstream, and read-only API keys "
            "could run it",
        ),
        (  # clients run read-only tools without asking
            [(JIRA_UPDATE, JIRA_UPDATE.replace("{idempotent", "{read_only: true, idempotent"))],
            "{read_only: true, idempotent: true, open_world",
            "the capability sends PUT, which changes data upstream, but the tool is annotated "
            "read_only",
        ),
        (  # fastn_search_entities (a read tool) would run the write for read-only keys
            [
                (
                    '      body: {fields: {summary: "{summary}"}}\n',
                    '      body: {fields: {summary: "{summary}"}}\n    entities:\n'
                    '      - type: ticket\n        args: {issue_key: "{query}", summary: x}\n'
                    "        fields: {id: id}\n",
                ),
            ],
            "    entities:\n      - type: ticket\n        args: {issue_key",
            "entity mappings on a write capability: fastn_search_entities, a read tool, would "
            "run it for keys that may only read",
        ),
    ],
)
def test_a_capability_that_writes_upstream_says_so(
    tmp_path: Path, edits: list[tuple[str, str]], needle: str, expected: str
) -> None:
    found = _diagnostics(tmp_path, "jira.yaml", *edits)
    text = (DATA / "jira.yaml").read_text(encoding="utf-8")
    for old, new in edits:
        text = text.replace(old, new, 1)
    at = text.index(needle, text.index("name: update_summary"))
    line = text[:at].count("\n") + 1
    assert [f for f in found if ":GEN225:" in f] == [f"{line}:GEN225:{expected}"], found


def test_the_methods_that_write_are_refused_on_read_capabilities_only(tmp_path: Path) -> None:
    """POST reads are common (search endpoints, Slack's Web API): a read capability may POST."""
    found = _diagnostics(
        tmp_path,
        "jira.yaml",
        (JIRA_UPDATE, JIRA_UPDATE.replace("write", "read")),
        ("      method: PUT\n", "      method: POST\n"),
    )
    assert found == [], found


def test_a_misspelt_entity_field_path_names_what_is_there(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / "jira.yaml").read_text().replace("title: fields.sumary", "x")
    text = text.replace("title: fields.summary", "title: fields.sumary")
    (root / "manifests" / "connectors" / "jira.yaml").write_text(text)
    (diag,) = api.compile_manifests(options(root)).diagnostics
    assert diag.hint == "declared there: status, summary"


# ------------------------------------------------------------------------- idempotency keys


def _stripe_project(tmp_path: Path, *edits: tuple[str, str]) -> tuple[Path, str]:
    """The default manifests plus Stripe (its refunds declare an idempotency key), edited."""
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / "stripe.yaml").read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / "manifests" / "connectors" / "stripe.yaml").write_text(text, encoding="utf-8")
    return root, text


def _where(text: str, needle: str) -> str:
    """`file:line:col` of the first `needle` in the Stripe manifest's `text`."""
    before = text[: text.index(needle)]
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    return f"manifests/connectors/stripe.yaml:{line}:{col}"


def test_an_idempotency_key_round_trips_through_the_compiler(tmp_path: Path) -> None:
    root, text = _stripe_project(tmp_path)
    data, diagnostics = api.ir_data(options(root), spans=True)  # what `gen ir --spans` prints
    assert not diagnostics
    assert isinstance(data, dict)
    http = {t["name"]: t["http"] for t in data["tools"] if t["http"] is not None}
    assert http["stripe_create_refund"]["idempotency_key"] == {
        "header": "Idempotency-Key",
        "body": None,
        "query": None,
        "span": _where(text, "Idempotency-Key"),
    }
    assert [name for name, h in http.items() if h["idempotency_key"]] == ["stripe_create_refund"]

    # A build from the compile cache keeps it, and the catalog module carries it; no other
    # binding's catalog text changes.
    for _ in range(2):
        result = api.build(api.Options.for_project(root, cache=True))
        assert result.ok, result.diagnostics
    catalog = root / "generated" / "fastn_gateway" / "catalog"
    stripe = (catalog / "stripe.py").read_text(encoding="utf-8")
    assert stripe.count('idempotency_key=IdempotencyKey(header="Idempotency-Key")') == 1
    others = [p.name for p in catalog.glob("*.py") if "IdempotencyKey" in p.read_text()]
    assert others == ["stripe.py"]
    spec, _ = api.gateway_spec(options(root))
    assert spec is not None
    refund = spec.tools["stripe_create_refund"].http
    assert refund is not None and refund.idempotency_key is not None
    assert refund.idempotency_key.header == "Idempotency-Key"


@pytest.mark.parametrize(
    ("edits", "at", "expected"),
    [
        (
            [("{header: Idempotency-Key}", "{header: Idempotency Key}")],
            "Idempotency Key",
            "idempotency_key.header 'Idempotency Key' is not a valid HTTP header name",
        ),
        (  # the binding sets the same header (in another case) itself
            [
                (
                    "      body_encoding: form\n",
                    "      headers: {idempotency-key: fixed}\n      body_encoding: form\n",
                )
            ],
            "Idempotency-Key",
            "idempotency_key.header 'Idempotency-Key' is also set by http.headers at {headers}",
        ),
        (
            [("{header: Idempotency-Key}", "{header: authorization}")],
            "authorization}",
            "idempotency_key.header 'authorization' is the header that carries the "
            "connector's credentials (bearer auth)",
        ),
        (
            [("{header: Idempotency-Key}", "{header: Content-Type}")],
            "Content-Type}",
            "idempotency_key.header 'Content-Type' is a header the gateway sets on every request",
        ),
        (
            [("{header: Idempotency-Key}", "{header: User-Agent}")],
            "User-Agent}",
            "idempotency_key.header 'User-Agent' is a header the gateway sets on every request",
        ),
        (  # the HTTP client refuses or replaces a hop-by-hop header: the key would be lost
            [("{header: Idempotency-Key}", "{header: Keep-Alive}")],
            "Keep-Alive}",
            "idempotency_key.header 'Keep-Alive' is a header of one hop, which the HTTP client "
            "sets or refuses",
        ),
    ],
)
def test_idempotency_key_mistakes_are_located_errors(
    tmp_path: Path, edits: list[tuple[str, str]], at: str, expected: str
) -> None:
    root, text = _stripe_project(tmp_path, *edits)
    result = api.compile_manifests(options(root))
    assert result.project is None
    (diag,) = result.diagnostics
    assert (diag.code, diag.severity.value, str(diag.span)) == (
        "GEN221",
        "error",
        _where(text, at),
    )
    headers = _where(text, "idempotency-key: fixed") if "headers:" in text else None
    assert diag.message == expected.format(headers=headers), diag.message


def _line_of(name: str, needle: str, edits: list[tuple[str, str]]) -> int:
    text = (DATA / name).read_text(encoding="utf-8")
    for old, new in edits:
        text = text.replace(old, new, 1)
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("edits", "expected", "other"),
    [
        (  # the body template sets the key's field itself
            [('        note: "{note}"\n', '        note: "{note}"\n        idempotency_key: x\n')],
            "GEN221:idempotency_key.body 'idempotency_key' is also set by http.body at "
            "manifests/connectors/square.yaml:{line}:9",
            "idempotency_key: x",
        ),
        (  # a body that is not an object has no top-level field to carry the key
            [
                (
                    '        source_id: "{source_id}"\n'
                    '        amount_money: {amount: "{amount}", currency: "{currency}"}\n',
                    "",
                ),
                ('      body:\n        note: "{note}"\n', '      body: "{note}"\n'),
            ],
            "GEN221:idempotency_key.body 'idempotency_key' needs an object body",
            None,
        ),
        (
            [
                ("{body: idempotency_key}", "{query: idem}"),
                ("      path: /payments\n", "      path: /payments\n      query: {idem: fixed}\n"),
            ],
            "GEN221:idempotency_key.query 'idem' is also set by http.query at "
            "manifests/connectors/square.yaml:{line}:15",
            "idem: fixed",
        ),
        (  # one place only: the schema says so, located
            [("{body: idempotency_key}", "{body: idempotency_key, header: Idempotency-Key}")],
            "GEN10",
            None,
        ),
    ],
)
def test_a_key_in_the_body_or_query_is_checked_against_the_templates(
    tmp_path: Path, edits: list[tuple[str, str]], expected: str, other: str | None
) -> None:
    found = _diagnostics(tmp_path, "square.yaml", *edits)
    if other is not None:
        expected = expected.format(line=_line_of("square.yaml", other, edits))
    matching = [f for f in found if f.split(":", 1)[1].startswith(expected)]
    assert matching, found
    assert int(matching[0].split(":", 1)[0]) == _line_of("square.yaml", "idempotency_key: {", edits)


def test_a_body_key_reaches_the_generated_catalog(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    shutil.copy(DATA / "square.yaml", root / "manifests" / "connectors" / "square.yaml")
    result = api.build(api.Options.for_project(root, cache=False))
    assert result.ok, result.diagnostics
    module = root / "generated" / "fastn_gateway" / "catalog" / "square.py"
    assert 'idempotency_key=IdempotencyKey(body="idempotency_key")' in module.read_text()
    code = (
        "from fastn_gateway.catalog import GATEWAY\n"
        "print(GATEWAY.tools['square_create_payment'].http.idempotency_key.place)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root / "generated",
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "('body', 'idempotency_key')"


# ------------------------------------------------------------------------------- GraphQL


def test_every_mistake_in_graphql_bindings_is_located_at_once(tmp_path: Path) -> None:
    """A GraphQL binding is a POST whose body is its document and variables: each way of
    getting that wrong is a GEN224 at the line that says it, all in one build."""
    edits = [
        (
            'variables: {first: "{limit}", after: "{cursor}", query: "{search}"}',
            'variables: {first: "{limit}", after: "{cursor}", query: "{search}", '
            'status: "{search}"}',
        ),
        (
            "      method: POST\n      path: /graphql.json\n      graphql:\n        query: |\n"
            "          mutation",
            "      method: PUT\n      path: /graphql.json\n      body: {}\n      graphql:\n"
            "        query: |\n          mutation",
        ),
        (
            "tagsAdd(id: $id, tags: $tags) { node { id } userErrors { field message } }",
            "tagsAdd(id: $id, tags: $tags) { node { id } userErrors { field message }",
        ),
        ('variables: {id: "{order_id}", tags: "{tags}"}', 'variables: {tags: "{tags}"}'),
    ]
    found = _diagnostics(tmp_path, "shopify_admin.yaml", *edits)

    def line(needle: str) -> int:
        return _line_of("shopify_admin.yaml", needle, edits)

    document = line("mutation AddOrderTags") - 1  # the `query: |` that holds it
    extra = 'status: "{search}"'
    expected = {
        f"{line(extra)}:GEN224:variable 'status' is not declared by the GraphQL document",
        f"{line('method: PUT')}:GEN224:a GraphQL request is a POST",
        f"{line('body: {}')}:GEN224:http.body and http.graphql both set the body",
        f"{document}:GEN224:the GraphQL document's braces or parentheses do not pair up",
        f"{document}:GEN224:the GraphQL document requires $id, which graphql.variables does "
        "not give",
    }
    assert {f for f in found if ":GEN224:" in f} == expected, found
    # The order_id input that the variables no longer use is reported as never sent.
    assert any(":GEN220:input 'order_id' is never sent" in f for f in found), found


_MUTATION = (
    "        query: |\n"
    "          mutation AddOrderTags($id: ID!, $tags: [String!]!) {\n"
    "            tagsAdd(id: $id, tags: $tags) { node { id } userErrors { field message } }\n"
    "          }\n"
)
_ONE_LINE = (  # no ": ", which a plain scalar cannot hold
    "mutation AddOrderTags($id:ID!, $tags:[String!]!) { "
    "tagsAdd(id:$id, tags:$tags) { node { id } userErrors { field message } } }"
)


@pytest.mark.parametrize(
    ("query", "hint"),
    [
        # a block scalar keeps every brace: the document itself is wrong
        (_MUTATION.replace("message } }", "message }"), None),
        # a double-quoted scalar keeps every brace too
        (f'        query: "{_ONE_LINE.replace("message } }", "message }")}"\n', None),
        # a plain scalar ends at ` #`: YAML dropped the rest of the document
        (
            f"        query: {_ONE_LINE.replace('node { id }', 'node { id #gid')}\n",
            "in a plain YAML scalar ` #` starts a comment: a block scalar (query: |) keeps the "
            "document as written",
        ),
    ],
)
def test_a_block_scalar_is_suggested_only_for_a_plain_graphql_document(
    tmp_path: Path, query: str, hint: str | None
) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    text = (DATA / "shopify_admin.yaml").read_text(encoding="utf-8")
    assert _MUTATION in text
    (root / "manifests" / "connectors" / "shopify_admin.yaml").write_text(
        text.replace(_MUTATION, query), encoding="utf-8"
    )
    found = [
        (d.span.line, d.span.col, d.message, d.hint)
        for d in api.compile_manifests(options(root)).diagnostics
        if d.code == "GEN224"
    ]
    assert found == [(107, 16, "the GraphQL document's braces or parentheses do not pair up", hint)]


def test_graphql_documents_are_not_templates(tmp_path: Path) -> None:
    """Braces in a GraphQL document are GraphQL's: `{ id }` is a selection, never a
    placeholder, and a `{name}` there is not filled in (arguments travel as variables)."""
    found = _diagnostics(
        tmp_path,
        "shopify_admin.yaml",
        ("nodes { id name totalPriceSet", "nodes {id} nodes { id name totalPriceSet"),
    )
    assert found == []
    found = _diagnostics(
        tmp_path / "key",
        "shopify_admin.yaml",
        (
            "      response:\n        select: data.tagsAdd",
            "      idempotency_key: {body: key}\n      response:\n        select: data.tagsAdd",
        ),
    )
    assert any(
        ":GEN221:idempotency_key.body 'key' cannot go in a GraphQL request's body" in f
        for f in found
    ), found


@pytest.mark.parametrize(
    ("edit", "needle", "expected"),
    [
        (  # read-only keys could run it
            ("    scope: write\n", "    scope: read\n"),
            "scope: read",
            "the GraphQL document is a mutation, and read-only API keys could run it",
        ),
        (  # clients run read-only tools without asking
            ("annotations: {destructive: false,", "annotations: {read_only: true,"),
            "annotations: {read_only: true",
            "the GraphQL document is a mutation, but the tool is annotated read_only",
        ),
        (  # sent without an operationName: which one would run?
            (
                "          mutation AddOrderTags",
                "          query Other { shop { name } }\n          mutation AddOrderTags",
            ),
            "query: |",
            "the GraphQL document defines 2 operations; a tool sends exactly one",
        ),
        (
            ("          mutation AddOrderTags(", "          subscription AddOrderTags("),
            "query: |",
            "a GraphQL subscription cannot be a tool: a call is one request and one answer",
        ),
        (  # a write's errors may mean it was not made as asked
            (
                '        variables: {id: "{order_id}", tags: "{tags}"}\n',
                '        variables: {id: "{order_id}", tags: "{tags}"}\n        partial: true\n',
            ),
            "partial: true",
            "a GraphQL mutation cannot succeed in part: its errors may mean the write was not "
            "made as asked",
        ),
    ],
)
def test_a_graphql_operation_matches_what_the_tool_says_it_does(
    tmp_path: Path, edit: tuple[str, str], needle: str, expected: str
) -> None:
    found = _diagnostics(tmp_path, "shopify_admin.yaml", edit)
    old, new = edit
    lines = (DATA / "shopify_admin.yaml").read_text(encoding="utf-8").replace(old, new, 1)
    numbered = list(enumerate(lines.splitlines(), 1))
    start = next(i for i, text in numbered if "name: add_order_tags" in text)
    line = next(i for i, text in numbered if i > start and needle in text)
    assert [f for f in found if ":GEN224:" in f] == [f"{line}:GEN224:{expected}"], found


@pytest.mark.parametrize(
    ("edits", "needle", "expected"),
    [
        (  # an optional input without a default feeds $name: String!
            [("      required: [owner, name]\n", "      required: [owner]\n")],
            'variables: {owner: "{owner}", name: "{name}"}',
            "the GraphQL document requires $name, but graphql.variables leaves it out of "
            "calls that do not give {name}",
        ),
        (  # text around the placeholder: the whole value is dropped without it
            [
                ('name: "{name}"}', 'name: "{name}{suffix}"}'),
                (
                    "        name: {type: string,",
                    "        suffix: {type: string}\n        name: {type: string,",
                ),
            ],
            'variables: {owner: "{owner}", name: "{name}{suffix}"}',
            "the GraphQL document requires $name, but graphql.variables leaves it out of "
            "calls that do not give {suffix}",
        ),
        (  # an input object none of whose placeholders is always given is dropped whole
            [("      required: [subject_id, body]\n", "")],
            'input: {subjectId: "{subject_id}", body: "{body}"}',
            "the GraphQL document requires $input, but graphql.variables leaves it out of "
            "calls that give neither {body} nor {subject_id}",
        ),
        (  # the cursor is never given on the first page
            [("$after: String)", "$after: String!)")],
            'variables: {query: "{query}", first: "{limit}", after: "{cursor}"}',
            "the GraphQL document requires $after, but graphql.variables leaves it out of "
            "calls that do not give {cursor}",
        ),
    ],
)
def test_a_required_graphql_variable_is_sent_on_every_call(
    tmp_path: Path, edits: list[tuple[str, str]], needle: str, expected: str
) -> None:
    """A variable the document requires (`$name: String!`) fed by an argument a call may leave
    out would be absent from that call, which the server refuses: GEN224 at the variable."""
    found = _diagnostics(tmp_path, "github_graphql.yaml", *edits)
    line = _line_of("github_graphql.yaml", needle, edits)
    assert [f for f in found if ":GEN224:" in f] == [f"{line}:GEN224:{expected}"], found


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (  # a typo in a use: the server refuses the whole document
            ("first: $first, after: $after)", "first: $first, after: $afterr)"),
            [
                "the GraphQL document declares $after but never uses it",
                "the GraphQL document uses $afterr, which its operation does not declare",
            ],
        ),
        (  # declared, sent, never used: GraphQL servers refuse that too
            ("first: $first, after: $after)", "first: $first)"),
            ["the GraphQL document declares $after but never uses it"],
        ),
    ],
)
def test_graphql_variables_are_declared_and_used(
    tmp_path: Path, edit: tuple[str, str], expected: list[str]
) -> None:
    """GraphQL validation refuses a whole document that uses a variable it does not define,
    or defines one it never uses: GEN224 rather than an error on every call."""
    found = _diagnostics(tmp_path, "github_graphql.yaml", edit)
    line = _line_of("github_graphql.yaml", "query SearchIssues(", [edit]) - 1  # `query: |`
    assert [f for f in found if ":GEN224:" in f] == [f"{line}:GEN224:{e}" for e in expected]


def test_variables_in_graphql_strings_and_comments_are_not_uses(tmp_path: Path) -> None:
    """A `$` in a comment or a string literal is text, not a variable."""
    edits = [
        ("              issueCount\n", "              issueCount # and $later\n"),
        (
            "{ totalCount }\n",
            '{ totalCount }\n              readme: object(expression: "HEAD:$R") { id }\n',
        ),
    ]
    found = _diagnostics(tmp_path, "github_graphql.yaml", *edits)
    assert [f for f in found if ":GEN224:" in f] == [], found


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (  # a field name is an RFC 9110 token
            '{"Notion Version": 2022-06-28}',
            "45:GEN105:capabilities/0/http/headers: invalid name 'Notion Version'",
        ),
        (  # a line break would start a header of the arguments' choosing (or end the block)
            '{Notion-Version: "2022-06-28\\r\\nX-Admin: 1"}',
            "45:GEN105:capabilities/0/http/headers/Notion-Version: invalid value "
            "'2022-06-28\\r\\nX-Admin: 1': a header value is one line of printable ASCII",
        ),
        ('{Notion-Version: "2022\\u0000"}', "45:GEN105:capabilities/0/http/headers/Notion-Ver"),
        ('{Notion-Version: "2022\\n"}', "45:GEN105:capabilities/0/http/headers/Notion-Version"),
        (
            "{Authorization: Bearer x}",
            "45:GEN229:http.headers 'Authorization' carries the connector's credentials "
            "(bearer auth)",
        ),
        ("{Host: api.example.com}", "45:GEN229:http.headers 'Host' is a header the HTTP client"),
        ("{content-length: '3'}", "45:GEN229:http.headers 'content-length' is a header the"),
        ("{Transfer-Encoding: chunked}", "45:GEN229:http.headers 'Transfer-Encoding' is a"),
        ("{Connection: close}", "45:GEN229:http.headers 'Connection' is a header the HTTP"),
        ("{te: trailers}", "45:GEN229:http.headers 'te' is a header the HTTP client sets"),
        ("{Upgrade: h2c}", "45:GEN229:http.headers 'Upgrade' is a header the HTTP client"),
        (
            "{Content-Type: text/plain}",
            "45:GEN229:http.headers 'Content-Type' is set by the gateway for the json body",
        ),
        (
            "{X-A: '1', x-a: '2'}",
            "45:GEN229:http.headers 'x-a' repeats 'X-A' (at manifests/connectors/notion.yaml:45:",
        ),
    ],
)
def test_request_headers_are_checked(tmp_path: Path, headers: str, expected: str) -> None:
    """Header names and values reached the request unchecked: a value with a line break
    (header injection, or a request every call fails), a name that is no field name, one the
    credentials or the HTTP client set (the declared value silently not sent)."""
    found = _diagnostics(
        tmp_path, "notion.yaml", ("headers: {Notion-Version: 2022-06-28}", f"headers: {headers}")
    )
    assert len(found) == 1 and found[0].startswith(expected), found


def test_valid_request_headers_compile(tmp_path: Path) -> None:
    edit = "headers: {Notion-Version: 2022-06-28, accept: 'application/json', X-Q: '{query}'}"
    assert (
        _diagnostics(tmp_path, "notion.yaml", ("headers: {Notion-Version: 2022-06-28}", edit)) == []
    )


def _alias_bomb(levels: int, width: int) -> str:
    """A flow mapping whose anchors each repeat the previous one `width` times: `width **
    levels` strings from a few hundred bytes (the "billion laughs")."""
    leaves = ", ".join(['"{query}"'] * width)
    parts = [f"b0: &b0 [{leaves}]"]
    parts += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("notion.yaml", '        query: "{query}"\n', "        query: BOMB\n"),  # http.body
        ("stripe.yaml", 'query: {email: "{email}",', 'query: {bomb: BOMB, email: "{email}",'),
        ("stripe.yaml", 'args: {limit: "{limit}"}', 'args: {limit: "{limit}", bomb: BOMB}'),
        ("linear.yaml", '          first: "{limit}"\n', "          first: BOMB\n"),  # GraphQL
    ],
)
def test_an_alias_bomb_in_a_binding_is_a_located_diagnostic(
    tmp_path: Path, name: str, old: str, new: str
) -> None:
    """A YAML alias bomb that stays under the loader's bound on values (10 ** 5 strings) was
    built, then walked string by string by every placeholder check, once per aliased copy: 10
    to 120 s. What aliases add to a document is bounded on its own now: the bomb is one GEN002
    at its line, and nothing later walks it."""
    edit = (old, new.replace("BOMB", _alias_bomb(levels=5, width=10)))
    found = _diagnostics(tmp_path, name, edit)
    line = _line_of(name, old.strip(), [])
    assert [f.split(":")[:2] for f in found] == [[str(line), "GEN002"]], found[:3]
    assert "YAML aliases add more than 20,000 values" in found[0]


def test_an_anchor_reused_in_a_binding_still_compiles(tmp_path: Path) -> None:
    """The legitimate use of anchors: one template written once, used again elsewhere."""
    edits = [
        (
            '        filter: {property: object, value: "{kind}"}\n',
            '        filter: &f {property: object, value: "{kind}"}\n'
            "        also: [*f, *f, {<<: *f, property: page}]\n",
        )
    ]
    assert _diagnostics(tmp_path, "notion.yaml", *edits) == []


# The two GraphQL scans as they were written before they were made linear: the reference their
# results must stay identical to.
_REFERENCE_VARIABLE = re.compile(
    r"\$([_A-Za-z][_0-9A-Za-z]*)\s*:\s*\[*\s*[_A-Za-z][_0-9A-Za-z]*[\s\]!]*(=)?"
)
_REFERENCE_IGNORED = re.compile(r'"""(?:\\"""|[^"]|"(?!""))*"""|"(?:\\.|[^"\\\n])*"|#[^\n]*')


def test_graphql_scans_read_documents_as_before() -> None:
    """Random documents over the characters the two scans care about, and the real ones."""
    from generator.compile import _GQL_VARIABLE, _gql_code

    def found(regex: re.Pattern[str], text: str) -> list[tuple[object, ...]]:
        return [(m.start(), m[0], *m.groups()) for m in regex.finditer(text)]

    alphabet = '$aB_1: []!=\n\t"#\\{('
    rng = random.Random(20260728)
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(20_000)]
    texts += [
        path.read_text(encoding="utf-8")
        for path in sorted(DATA.glob("*.yaml"))
        if "graphql:" in path.read_text(encoding="utf-8")
    ]
    for text in texts:
        assert found(_GQL_VARIABLE, text) == found(_REFERENCE_VARIABLE, text), text
        assert _gql_code.__wrapped__(text) == _REFERENCE_IGNORED.sub(" ", text), text


@pytest.mark.parametrize(
    "text",
    [
        "query Q($a:" + " " * 200_000 + ") { x(a: $a) }",  # was n**2 steps: 18 s for 40,000
        '"\\' * 100_000,  # a string that never ends, every quote escaped: as slow
    ],
)
def test_graphql_scans_are_linear(text: str) -> None:
    """Sizes that took minutes (n**2 steps) read in milliseconds; the bound is 100 times that."""
    from generator.compile import _GQL_VARIABLE, _gql_code

    started = time.perf_counter()
    definitions = list(_GQL_VARIABLE.finditer(_gql_code.__wrapped__(text)))
    assert definitions == []
    assert time.perf_counter() - started < 5.0


# ------------------------------------------------ bindings that build but can never work


def _located(tmp_path: Path, name: str, *edits: tuple[str, str]) -> tuple[list[str], str]:
    """As _compiled, the diagnostics as `file:line:col:code:message`."""
    found, text = _compiled(tmp_path, name, *edits)
    return [f"{d.span}:{d.code}:{d.message}" for d in found], text


def _at(name: str, text: str, needle: str, within: str | None = None) -> str:
    """`file:line:col` of `needle` in `text`: its first occurrence, or where it is in the
    first occurrence of `within`."""
    start = text.index(needle) if within is None else text.index(within) + within.index(needle)
    before = text[:start]
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    return f"manifests/connectors/{name}:{line}:{col}"


def _only(found: list[str], expected: str) -> None:
    assert len(found) == 1 and found[0].startswith(expected), (expected, found)


_NOTION_OUTPUT = "              url: {type: string}\n"


@pytest.mark.parametrize(
    ("edits", "at", "expected"),
    [
        (  # the executor keeps only a string cursor: `cursor: 2` paged from the start again
            [
                (
                    "        page_size: {type: integer, m",
                    "        cursor: {type: integer}\n        page_size: {type: integer, m",
                )
            ],
            ("integer", "cursor: {type: integer}"),
            "input property 'cursor' of a paginated tool does not admit string: the gateway's "
            "cursors are strings, and a cursor of another type is not sent",
        ),
        (  # every answer with a next page failed the output schema
            [(_NOTION_OUTPUT, _NOTION_OUTPUT + "        next_cursor: {type: integer}\n")],
            ("integer", "next_cursor: {type: integer}"),
            "output property 'next_cursor' of a paginated tool does not admit string or null",
        ),
        (  # ... and without null, every last page did
            [(_NOTION_OUTPUT, _NOTION_OUTPUT + "        next_cursor: {type: string}\n")],
            ("string", "next_cursor: {type: string}"),
            "output property 'next_cursor' of a paginated tool does not admit null",
        ),
        (  # through a local reference: located at the property
            [
                (
                    "      required: [results]\n",
                    "      required: [results]\n      $defs: {N: {type: integer}}\n",
                ),
                (_NOTION_OUTPUT, _NOTION_OUTPUT + "        next_cursor: {$ref: '#/$defs/N'}\n"),
            ],
            ("next_cursor", "next_cursor: {$ref"),
            "output property 'next_cursor' of a paginated tool does not admit string or null",
        ),
    ],
)
def test_a_declared_cursor_property_takes_the_gateways_cursors(
    tmp_path: Path, edits: list[tuple[str, str]], at: tuple[str, str | None], expected: str
) -> None:
    """Pagination declares `cursor` (a string) and `next_cursor` (a string or null) unless the
    tool does; one declared with another type built, and then never paged."""
    found, text = _located(tmp_path, "notion.yaml", *edits)
    _only(found, f"{_at('notion.yaml', text, *at)}:GEN213:{expected}")


def test_a_paginated_tool_does_not_require_its_cursor(tmp_path: Path) -> None:
    """The first page is asked for without a cursor: `required: [query, cursor]` built a tool
    no call could start. (It was GEN203 "not among the properties", as was a closed output
    requiring the next_cursor that pagination adds and the gateway always sets.)"""
    found, text = _located(
        tmp_path,
        "notion.yaml",
        (
            "      additionalProperties: false\n      properties:\n        query",
            "      additionalProperties: false\n      required: [query, cursor]\n"
            "      properties:\n        query",
        ),
    )
    _only(
        found,
        f"{_at('notion.yaml', text, 'cursor]')}:GEN213:a paginated tool's cursor may not be "
        "required",
    )
    # what pagination adds counts as declared: an answer always carries next_cursor
    found, _text = _located(
        tmp_path / "next",
        "notion.yaml",
        (
            "      required: [results]\n",
            "      additionalProperties: false\n      required: [results, next_cursor]\n",
        ),
    )
    assert found == []


def test_cursor_properties_of_the_gateways_types_compile(tmp_path: Path) -> None:
    found, _text = _located(
        tmp_path,
        "notion.yaml",
        (
            "        page_size: {type: integer, m",
            "        cursor: {type: string, minLength: 1}\n        page_size: {type: integer, m",
        ),
        (_NOTION_OUTPUT, _NOTION_OUTPUT + "        next_cursor: {$ref: '#/types/NextCursor'}\n"),
    )
    assert found == []


_NOTION_AUTH = "  type: bearer\n  token_field: token\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (  # every call failed in the HTTP client
            '"Private Token"',
            "auth.header 'Private Token' is not a valid HTTP header name",
        ),
        (  # the key replaced the JSON body's type, and went out in a header that is logged
            "Content-Type",
            "auth.header 'Content-Type' is a header the gateway sets on every request",
        ),
        ("accept", "auth.header 'accept' is a header the gateway sets on every request"),
        ("Keep-Alive", "auth.header 'Keep-Alive' is a header of one hop, which the HTTP client"),
        ("Host", "auth.header 'Host' is a header the gateway sets on every request"),
    ],
)
def test_an_api_key_header_is_one_the_request_can_carry(
    tmp_path: Path, header: str, expected: str
) -> None:
    """auth.header gets the rules of http.headers names and of an idempotency key's header."""
    auth = f"  type: api_key\n  header: {header}\n  key_field: token\n"
    found, text = _located(tmp_path, "notion.yaml", (_NOTION_AUTH, auth))
    _only(found, f"{_at('notion.yaml', text, header, auth)}:GEN217:{expected}")


@pytest.mark.parametrize("header", ["PRIVATE-TOKEN", "Authorization", "X-API-Key"])
def test_usual_api_key_headers_compile(tmp_path: Path, header: str) -> None:
    auth = f"  type: api_key\n  header: {header}\n  key_field: token\n"
    assert _located(tmp_path, "notion.yaml", (_NOTION_AUTH, auth))[0] == []


_JIRA_QUERY = 'maxResults: "{max_results}"}'


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (  # the offset replaced the page size from the second page on
            [("param: startAt, size_param", "param: maxResults, size_param")],
            "pagination.param 'maxResults' is also the size_param: from the second page on, the "
            "offset would be sent in place of the page size",
        ),
        (  # an argument there moved the first page only; next_cursor counted from 0
            [
                (_JIRA_QUERY, 'maxResults: "{max_results}", startAt: "{start}"}'),
                (
                    "        max_results: {type",
                    "        start: {type: integer}\n        max_results: {type",
                ),
            ],
            "pagination.param 'startAt' is also set by http.query at {query}: the gateway sends "
            "the offset there from the second page on, so the query's value would move the "
            "first page only",
        ),
        (
            [(_JIRA_QUERY, 'maxResults: "{max_results}", startAt: "10"}')],
            "pagination.param 'startAt' is also set by http.query at {query}:",
        ),
    ],
)
def test_the_pagination_parameter_is_the_gateways_own(
    tmp_path: Path, edits: list[tuple[str, str]], expected: str
) -> None:
    found, text = _located(tmp_path, "jira.yaml", *edits)
    param = "maxResults" if "offset, param: maxResults" in text else "startAt"
    query = _at("jira.yaml", text, "startAt", 'startAt: "') if 'startAt: "' in text else ""
    at = _at("jira.yaml", text, param, f"offset, param: {param}")
    _only(found, f"{at}:GEN213:{expected.format(query=query)}")


def test_a_query_may_ask_for_the_first_page_explicitly(tmp_path: Path) -> None:
    """The executor replaces that pair from the second page on: an upstream that wants the
    first position said gets it."""
    found, _text = _located(
        tmp_path, "jira.yaml", (_JIRA_QUERY, 'maxResults: "{max_results}", startAt: 0}')
    )
    assert found == []


def test_an_entity_mapping_maps_the_id(tmp_path: Path) -> None:
    """fastn_search_entities drops a record without an id: a mapping without one built, and
    every search of the connector found nothing while reporting it as a source that answered."""
    mapping = "fields: {id: id, email: email, first_name: name}"
    found, text = _located(
        tmp_path, "stripe.yaml", (mapping, "fields: {email: email, first_name: name}")
    )
    at = _at("stripe.yaml", text, "fields", "fields: {email: email, first_name")
    _only(found, f"{at}:GEN212:entity mapping to 'contact' maps no `id`: entity search would drop")


def test_an_entity_type_without_an_id_field_is_named_in_the_hint(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    gateway = root / "manifests" / "gateway.yaml"
    old = "    fields: {id: string, email: string, first_name: string,"
    text = gateway.read_text(encoding="utf-8")
    assert old in text
    gateway.write_text(text.replace(old, "    fields: {email: string, first_name: string,"))
    mapping = "fields: {id: id, email: properties.email,"
    hubspot = root / "manifests" / "connectors" / "hubspot.yaml"
    text = hubspot.read_text(encoding="utf-8")
    assert mapping in text
    hubspot.write_text(text.replace(mapping, "fields: {email: properties.email,"))
    found = [d for d in api.compile_manifests(options(root)).diagnostics if d.code == "GEN212"]
    hints = {d.hint for d in found if d.span.file.endswith("hubspot.yaml")}
    assert hints == {
        "map id to the record's identifier, e.g. id: id (and declare id in the fields of "
        "entity type 'contact')"
    }, found


_DOTS_ONLY = (
    ": a path of dots only looks for a key made of dots, which answers do not have, and never "
    "matches"
)


@pytest.mark.parametrize(
    ("name", "edit", "needle", "expected"),
    [
        (  # gitlab_list_issues failed every call: "issues missing"
            "notion.yaml",
            ("fields: {results: results}", 'fields: {results: "."}'),
            '"."',
            "response field 'results' reads '.'" + _DOTS_ONLY,
        ),
        (
            "notion.yaml",
            ("      response:\n", "      response:\n        select: ..\n"),
            "..\n",
            "response.select '..'" + _DOTS_ONLY,
        ),
        (  # an empty next never gave a next page
            "notion.yaml",
            ("next: next_cursor,", 'next: "",'),
            '"",',
            "pagination.next is empty: it names no value of the response body",
        ),
        (
            "notion.yaml",
            ("more: has_more}", 'more: "."}'),
            '"."}',
            "pagination.more '.'" + _DOTS_ONLY,
        ),
        (
            "jira.yaml",
            ("items: issues\n", "items: .\n"),
            ".\n",
            "entity items path '.'" + _DOTS_ONLY,
        ),
        (  # one diagnostic: the path is not also looked for in the output schema
            "jira.yaml",
            ("title: fields.summary", 'title: ".."'),
            '".."',
            "entity field 'title' reads '..'" + _DOTS_ONLY,
        ),
        (
            "salesforce.yaml",
            ("message_field: 0.message", 'message_field: "."'),
            '"."',
            "errors.message_field '.'" + _DOTS_ONLY,
        ),
    ],
)
def test_dotted_paths_of_dots_only_are_refused(
    tmp_path: Path, name: str, edit: tuple[str, str], needle: str, expected: str
) -> None:
    found, text = _located(tmp_path, name, edit)
    _only(found, f"{_at(name, text, needle, edit[1])}:GEN213:{expected}")


@pytest.mark.parametrize(
    "edit",
    [
        ("fields: {results: results}", "fields: {results: data..results}"),
        ("fields: {results: results}", 'fields: {results: "No."}'),
        ("      response:\n", "      response:\n        select: data.\n"),
        ("more: has_more}", "more: .has_more}"),
    ],
)
def test_a_path_may_name_a_key_that_holds_dots(tmp_path: Path, edit: tuple[str, str]) -> None:
    """A segment that names no key is joined with the next ones (get_path): `fields.No.` reads
    the key `No.` (Airtable's user-named columns), so an empty segment is no mistake in itself
    (it was refused as one)."""
    found, _text = _located(tmp_path, "notion.yaml", edit)
    assert found == []
    from generator.runtime.templating import get_path

    assert get_path({"fields": {"No.": 42, "Qty.": 3.5}}, "fields.No.") == 42


def test_the_empty_path_reads_the_whole_body(tmp_path: Path) -> None:
    """Documented, and the hint says so: `""`, not `.`."""
    found, _text = _located(
        tmp_path, "notion.yaml", ("fields: {results: results}", 'fields: {results: ""}')
    )
    assert found == []
    root = make_project(tmp_path / "hint", copy_defaults=True)
    text = (DATA / "notion.yaml").read_text(encoding="utf-8")
    text = text.replace("fields: {results: results}", 'fields: {results: "."}')
    (root / "manifests" / "connectors" / "notion.yaml").write_text(text, encoding="utf-8")
    (diag,) = api.compile_manifests(options(root)).diagnostics
    assert diag.hint == (
        '"" reads the whole body, and keys are separated by single dots, e.g. data.items'
    )


_NOTION_INPUT = (
    "    annotations: {read_only: true, idempotent: true, open_world: true}\n    input:\n"
)


def test_a_bound_parameter_no_template_sends_is_reported(tmp_path: Path) -> None:
    """As an input no template sends (GEN220): the session value was silently not sent."""
    bound = _NOTION_INPUT.replace("    input:", "    bind: {user_id: session.user}\n    input:")
    found, text = _located(tmp_path, "notion.yaml", (_NOTION_INPUT, bound))
    _only(
        found,
        f"{_at('notion.yaml', text, 'user_id', 'bind: {user_id')}:GEN220:bound parameter "
        "'user_id' is never sent: no template of http uses {user_id}",
    )
    found, _text = _located(
        tmp_path / "used",
        "notion.yaml",
        (_NOTION_INPUT, bound),
        ('        query: "{query}"\n', '        query: "{query}"\n        owner: "{user_id}"\n'),
    )
    assert found == []


@pytest.mark.parametrize(
    ("auth", "key", "expected"),
    [
        (  # basic auth sends a user name and a password: the token field was never read
            "  type: basic\n  username_field: email\n  password_field: api_token\n"
            "  token_field: api_token\n",
            "token_field",
            "auth type 'basic' does not use `token_field`",
        ),
        (
            "  type: basic\n  username_field: email\n  password_field: api_token\n"
            "  header: X-Key\n",
            "header",
            "auth type 'basic' does not use `header`",
        ),
    ],
)
def test_auth_keys_the_type_does_not_read_are_reported(
    tmp_path: Path, auth: str, key: str, expected: str
) -> None:
    old = "  type: basic\n  username_field: email\n  password_field: api_token\n"
    found, text = _located(tmp_path, "jira.yaml", (old, auth))
    _only(found, f"{_at('jira.yaml', text, key, auth)}:GEN217:{expected}")
