"""`gen breaking`: one before/after fixture pair per rule (tests/breaking/<case>/), a real git
repository for `--against REF`, exceptions, the deprecation lifecycle and the CLI.

Each fixture's expected report is tests/breaking/<case>/expected.txt; regenerate with
`pytest tests/test_breaking.py --update-golden` (refused when CI is set).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from generator import api, breaking
from generator.diagnostics import CODES, Span

FIXTURES = ROOT / "tests" / "breaking"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
TODAY = dt.date(2026, 1, 1)  # fixtures' sunset dates are on both sides of it


def _run(case: Path) -> breaking.BreakingResult:
    options = api.Options(root=case, manifests=case / "after", out=case / "out", cache=False)
    return breaking.breaking(options, str(case / "before"), today=TODAY)


def test_every_rule_has_a_fixture_pair() -> None:
    rules = {c for c, code in CODES.items() if code.stage == "breaking" and c != "BRK201"}
    assert rules <= {p.name for p in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fixture_pair(case: Path, update_golden: bool) -> None:
    result = _run(case)
    actual = breaking.render(result) + breaking.summary(result) + "\n"
    expected_file = case / "expected.txt"
    if update_golden:
        expected_file.write_text(actual, encoding="utf-8")
    assert actual == expected_file.read_text(encoding="utf-8")
    if case.name.startswith("BRK"):
        # the rule the fixture is named after is reported, located in after/ or (removals)
        # in before/, and decides the outcome on its own
        hits = [c for c in result.changes if c.rule == case.name]
        assert hits, result.changes
        assert all(c.span.file.split("/")[0] in {"after", "before"} for c in hits)
        assert result.ok is case.name.startswith("BRK1")


def test_required_output_removed_and_required_input_added_are_located() -> None:
    """The issue's acceptance case, spelled out."""
    removed = _run(FIXTURES / "BRK006")
    [c] = removed.unallowed
    assert (c.rule, str(c.span), c.target) == (
        "BRK006",
        "before/crm.yaml:29:9",
        "crm_find_contact.output.total",
    )
    added = _run(FIXTURES / "BRK002")
    [c] = added.unallowed
    assert (c.rule, str(c.span), c.target) == (
        "BRK002",
        "after/crm.yaml:24:9",
        "crm_find_contact.input.owner",
    )


def test_sunset_decides_whether_removal_is_allowed() -> None:
    case = FIXTURES / "sunset_tool_removed"
    options = api.Options(root=case, manifests=case / "after", out=case / "out", cache=False)
    before_sunset = breaking.breaking(options, str(case / "before"), today=dt.date(2025, 6, 29))
    on_sunset = breaking.breaking(options, str(case / "before"), today=dt.date(2025, 6, 30))
    assert not before_sunset.ok and [c.rule for c in before_sunset.unallowed] == ["BRK001"]
    assert on_sunset.ok and on_sunset.changes[0].allowed


def test_exception_needs_matching_rule_and_target(tmp_path: Path) -> None:
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "exception_allows", case)
    crm = case / "after" / "crm.yaml"
    crm.write_text(
        crm.read_text().replace(
            "target: crm_find_contact.input.status", "target: crm_find_contact.input.limit"
        )
    )
    result = _run(case)
    assert [c.rule for c in result.unallowed] == ["BRK003"]
    assert sorted(d.message for d in result.diagnostics) == [
        "breaking.allow entry (BRK001, crm_merge_*) matches no change",
        "breaking.allow entry (BRK003, crm_find_contact.input.limit) matches no change",
    ]


def test_exception_without_reason_is_a_schema_error(tmp_path: Path) -> None:
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK003", case)
    crm = case / "after" / "crm.yaml"
    crm.write_text(crm.read_text() + "breaking:\n  allow:\n    - {rule: BRK003}\n")
    result = _run(case)
    assert not result.ok and [d.code for d in result.diagnostics] == ["GEN101"]


def test_identical_manifests_have_no_changes(tmp_path: Path) -> None:
    options = api.Options.for_project(ROOT, cache=False)
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    result = breaking.breaking(options, str(tmp_path / "manifests"), today=TODAY)
    assert result.ok and result.changes == ()


@pytest.mark.parametrize("against", ["", ".", "./", "manifests", "manifests/../manifests/"])
def test_a_baseline_that_is_the_project_itself_is_a_usage_error(against: str) -> None:
    """`--against ""` (a CI variable that is not set) and `--against ./` compared the
    manifests with themselves: no change, exit 0, so the gate passed without looking."""
    proc = _gen(ROOT, "breaking", "--against", against)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    what = "--against is empty" if not against else "the project's own manifest directory"
    assert what in proc.stderr


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _gen(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_a_ref_holding_a_file_name_that_is_not_utf8_is_a_located_error(tmp_path: Path) -> None:
    """The names git listed were decoded as UTF-8: a manifest named with a Latin-1 byte in the
    ref (deleted since from the work tree) crashed `gen breaking` with a traceback."""
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "BRK006" / "before", repo / "manifests")
    latin1 = os.fsencode(repo / "manifests") + b"/caf\xe9.yaml"
    with open(latin1, "wb") as f:
        f.write((repo / "manifests" / "crm.yaml").read_bytes())
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v1")
    os.unlink(latin1)
    proc = _gen(repo, "breaking", "--against", "HEAD")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "HEAD:manifests/caf\\udce9.yaml:1:1: error[GEN001]" in proc.stdout + proc.stderr


def test_against_a_git_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "project" / "manifests").mkdir(parents=True)
    for f in ("gateway.yaml", "crm.yaml"):
        shutil.copy(FIXTURES / "BRK006" / "before" / f, repo / "project" / "manifests" / f)
    (repo / "project" / "manifests" / "notes.txt").write_text("not a manifest\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v1")
    _git(repo, "tag", "v1")
    shutil.copy(FIXTURES / "BRK006" / "after" / "crm.yaml", repo / "project/manifests/crm.yaml")
    (repo / "project" / "manifests" / "desk.yaml").write_text(
        (FIXTURES / "BRK108" / "after" / "desk.yaml").read_text()
    )

    project = repo / "project"
    result = breaking.breaking(api.Options.for_project(project, cache=False), "v1", today=TODAY)
    got = {(c.rule, str(c.span)) for c in result.changes}
    assert ("BRK006", "v1:manifests/crm.yaml:29:9") in got  # removal: where v1 had it
    assert ("BRK108", "manifests/desk.yaml:3:7") in got  # addition: in the work tree
    assert not result.ok

    proc = _gen(project, "breaking", "--against", "v1", "--error-format", "github")
    assert proc.returncode == 1, proc.stderr
    # A removal is only in v1: GitHub cannot attach it to a file of the checkout, so the
    # location goes into the message.
    assert "::error title=BRK006::v1:manifests/crm.yaml:29:9: " in proc.stdout
    assert "::notice file=manifests/desk.yaml,line=3,col=7,title=BRK108::" in proc.stdout

    # committing the change makes HEAD the same as the work tree
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v2")
    same = _gen(project, "breaking", "--against", "HEAD")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 breaking (0 allowed), 0 safe" in same.stderr

    unknown = _gen(project, "breaking", "--against", "no-such-ref")
    assert unknown.returncode == 2
    assert "neither a directory nor a git ref" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    # A directory named like the ref: which was meant is not guessed.
    shutil.copytree(project / "manifests", project / "v1")
    ambiguous = _gen(project, "breaking", "--against", "v1")
    assert ambiguous.returncode == 2
    assert "'v1' is both a directory" in ambiguous.stderr and "./v1" in ambiguous.stderr
    assert _gen(project, "breaking", "--against", "./v1").returncode == 0


def test_against_a_git_ref_with_the_manifests_outside_the_project(tmp_path: Path) -> None:
    """`--manifests` need not be inside `--project` (validate and build accept it): the ref's
    manifests are laid out as in the work tree, and removals are named the same way."""
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    (repo / "site").mkdir()
    for f in ("gateway.yaml", "crm.yaml"):
        shutil.copy(FIXTURES / "BRK006" / "before" / f, repo / "manifests" / f)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v1")
    shutil.copy(FIXTURES / "BRK006" / "after" / "crm.yaml", repo / "manifests" / "crm.yaml")
    options = api.Options(
        root=repo / "site", manifests=repo / "manifests", out=repo / "site" / "out", cache=False
    )
    result = breaking.breaking(options, "HEAD", today=TODAY)
    assert [(c.rule, str(c.span)) for c in result.unallowed] == [
        ("BRK006", "HEAD:../manifests/crm.yaml:29:9")
    ]


def test_ref_without_manifests_reports_everything_as_added(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README").write_text("x\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "empty")
    shutil.copytree(FIXTURES / "BRK001" / "before", repo / "manifests")
    result = breaking.breaking(api.Options.for_project(repo, cache=False), "HEAD", today=TODAY)
    assert result.ok
    assert {c.rule for c in result.changes} == {"BRK101", "BRK106", "BRK108"}
    # Said out loud, in case the ref was the wrong one.
    (note,) = result.diagnostics
    assert (note.code, note.severity.value) == ("GEN005", "warning")
    assert (
        note.message == "HEAD has no *.yaml manifests under manifests/: every tool counts as added"
    )


def _breaking_brk002(against: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`gen breaking` on the BRK002 fixture's new manifests, against another baseline."""
    case = FIXTURES / "BRK002"
    args = ["--project", str(case), "--manifests", str(case / "after"), "--against", str(against)]
    return _gen(ROOT, "breaking", *args, *options)


def test_a_baseline_directory_without_manifests_is_an_error_not_a_pass(tmp_path: Path) -> None:
    """A wrong path in CI must not pass every change as an addition."""
    (tmp_path / "empty").mkdir()
    proc = _breaking_brk002(tmp_path / "empty")
    assert proc.returncode == 1
    assert f"error[GEN005] no *.yaml manifests under {tmp_path / 'empty'}" in proc.stdout
    assert "not compared: 1 error" in proc.stderr
    assert "BRK101" not in proc.stdout


def test_a_baseline_that_does_not_compile_is_not_summarised_as_no_change(tmp_path: Path) -> None:
    broken = tmp_path / "before"
    shutil.copytree(FIXTURES / "BRK002" / "before", broken)
    target = next(broken.glob("*.yaml"))
    target.write_text(target.read_text() + "bogus_key: 1\n")
    proc = _breaking_brk002(broken)
    assert proc.returncode == 1
    assert "error[GEN1" in proc.stdout
    assert "not compared: 1 error" in proc.stderr and "0 breaking" not in proc.stderr
    # The baseline's files are not the checkout's: GitHub gets the location in the message.
    github = _breaking_brk002(broken, "--error-format", "github")
    assert github.returncode == 1
    (line,) = [x for x in github.stdout.splitlines() if "GEN102" in x]
    assert line.startswith(f"::error title=GEN102::{tmp_path.as_posix()}/before/"), line


def _old_checkout(where: Path, case: str) -> Path:
    """A project root as `git archive | tar -x` leaves one: manifests/, and YAML that is not a
    manifest of the project (a test fixture's second gateway, CI configuration)."""
    shutil.copytree(FIXTURES / case / "before", where / "manifests")
    shutil.copytree(FIXTURES / "BRK001" / "after", where / "tests" / "fixture")
    (where / ".github" / "workflows").mkdir(parents=True)
    (where / ".github" / "workflows" / "ci.yaml").write_text("on: [push]\njobs: {}\n")
    return where


def test_a_baseline_project_root_is_read_as_one(tmp_path: Path) -> None:
    """`--against DIR` where DIR holds manifests/ compares with DIR/manifests, as `--project
    DIR` would read them; its other YAML files are no manifests of the baseline (they were
    read, and a fixture's gateway manifest was GEN210 'a project has one gateway manifest')."""
    old = _old_checkout(tmp_path / "old", "BRK002")
    proc = _breaking_brk002(old)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "after/crm.yaml:24:9: breaking[BRK002] crm_find_contact:" in proc.stdout
    assert "GEN2" not in proc.stdout and "GEN1" not in proc.stdout
    assert "1 breaking (0 allowed), 0 safe" in proc.stderr

    # A removal is located in the baseline's manifests, under the directory named.
    old = _old_checkout(tmp_path / "old006", "BRK006")
    case = FIXTURES / "BRK006"
    options = api.Options(root=case, manifests=case / "after", out=tmp_path / "out", cache=False)
    result = breaking.breaking(options, str(old), today=TODAY)
    assert [(c.rule, str(c.span)) for c in result.unallowed] == [
        ("BRK006", f"{old.as_posix()}/manifests/crm.yaml:29:9")
    ]

    # A project root without manifests in its manifests/ is the GEN005 error, naming it.
    (tmp_path / "bare" / "manifests").mkdir(parents=True)
    (tmp_path / "bare" / "ci.yaml").write_text("on: [push]\n")
    bare = _breaking_brk002(tmp_path / "bare")
    assert bare.returncode == 1
    assert f"no *.yaml manifests under {tmp_path / 'bare' / 'manifests'}:" in bare.stdout


def test_a_baseline_directory_at_the_file_system_root_is_labelled_with_one_slash() -> None:
    """The label of a baseline outside the project is its root's path and a slash: for a
    directory directly under `/` that root is `/` itself, and locations read `/srv/x.yaml`,
    not `//srv/x.yaml`."""
    options = api.Options.for_project(ROOT, cache=False)
    top = Path("/mcpforge-baseline")  # not created: whether it holds manifests/ is all it reads
    old, label = breaking.baseline_directory(options, top, Path("/nonexistent/out"))
    assert (old.root, old.manifests, label) == (Path("/"), top, "/")
    assert f"{label}{Span(file='mcpforge-baseline/gateway.yaml', line=3, col=7)}" == (
        "/mcpforge-baseline/gateway.yaml:3:7"
    )


def test_cli_json_and_exit_codes() -> None:
    proc = _breaking_brk002(FIXTURES / "BRK002" / "before", "--error-format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert [(c["rule"], c["file"], c["line"], c["col"], c["severity"]) for c in doc["changes"]] == [
        ("BRK002", "after/crm.yaml", 24, 9, "breaking")
    ]
    safe = FIXTURES / "BRK102"
    ok = _gen(
        ROOT,
        "breaking",
        "--project",
        str(safe),
        "--manifests",
        str(safe / "after"),
        "--against",
        str(safe / "before"),
    )
    assert ok.returncode == 0, ok.stderr
    assert "safe[BRK102]" in ok.stdout


def test_github_annotations_of_changes_escape_the_file_name() -> None:
    """A `,` or `:` in a manifest's name would end the `file=` property (and `%` starts an
    escape): property values escape them the way the workflow-command parser expects."""
    change = breaking.Change(
        rule="BRK001",
        span=Span(file="manifests/connectors/we,ird:na%me.yaml", line=4, col=3),
        target="t",
        message="tool t removed (100%)",
    )
    text = breaking.render(breaking.BreakingResult(changes=(change,)), "github")
    assert text == (
        "::error file=manifests/connectors/we%2Cird%3Ana%25me.yaml,line=4,col=3,"
        "title=BRK001::tool t removed (100%25)\n"
    )


def test_manifest_text_in_a_change_is_shown_escaped() -> None:
    """A property name holding a line break or a terminal escape cannot forge a line of the
    report or reach the terminal raw; JSON keeps the text as it is."""
    change = breaking.Change(
        rule="BRK003",
        span=Span(file="manifests/a.yaml", line=4, col=3),
        target="t.input.a",
        message="input property 'a\nsafe[BRK101] b' removed",
        hint="restore\x1b[2J it",
    )
    result = breaking.BreakingResult(changes=(change,))
    assert breaking.render(result).splitlines()[:2] == [
        "manifests/a.yaml:4:3: breaking[BRK003] input property 'a\\nsafe[BRK101] b' removed",
        "  hint: restore\\x1b[2J it",
    ]
    assert "\\n" in breaking.render(result, "github")
    assert json.loads(breaking.render(result, "json"))["changes"][0]["hint"] == "restore\x1b[2J it"


def test_a_true_schema_narrowed_to_a_type_is_breaking(tmp_path: Path) -> None:
    """`limit: true` accepted anything, as `{}` does: giving it a type narrows the input."""
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK004", case)
    before = case / "before" / "crm.yaml"
    old = "        limit: {type: number, minimum: 1, maximum: 100}\n"
    text = before.read_text(encoding="utf-8")
    assert old in text
    before.write_text(text.replace(old, "        limit: true\n"), encoding="utf-8")
    result = _run(case)
    assert sorted((c.rule, c.message) for c in result.unallowed) == [
        ("BRK004", "crm_find_contact: input 'limit' type narrowed from any to integer"),
        (
            "BRK013",
            "crm_find_contact: input 'limit' constraint tightened: maximum 100 added; "
            "minimum 1 added",
        ),
    ]


_LIMIT = "        limit: {type: number, minimum: 1, maximum: 100}\n"
_ITEMS = (
    "          items:\n            type: object\n            required: [id, email]\n"
    "            properties:\n              id: {type: string}\n"
    "              email: {type: string}\n"
    "              state: {type: string, enum: [active, archived]}\n"
)
_ROOT = "      additionalProperties: false\n      required: [query]\n"
_STATUS = "        status: {type: string, enum: [active, archived]}\n"
_STATUS_DEFAULT = "        status: {type: string, enum: [active, archived], default: active}\n"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (  # an array gains a schema for its items: any element was accepted
            (_LIMIT, "        limit: {type: array}\n"),
            (_LIMIT, "        limit: {type: array, items: {type: integer}}\n"),
            [("BRK004", "input 'limit[]' type narrowed from any to integer")],
        ),
        (  # a branch of anyOf goes: the comparison does not model combinators
            (_LIMIT, "        limit: {anyOf: [{type: number}, {type: boolean}]}\n"),
            (_LIMIT, "        limit: {anyOf: [{type: number}]}\n"),
            [("BRK013", "input 'limit': anyOf changed, which gen breaking does not compare")],
        ),
        (  # only annotations inside the combinator change: nothing to report
            (_LIMIT, "        limit: {anyOf: [{type: number, description: a}]}\n"),
            (_LIMIT, "        limit: {anyOf: [{type: number, description: b, default: 2}]}\n"),
            [],
        ),
        (  # a default goes: a call that leaves it out no longer gets it
            (_LIMIT, "        limit: {type: number, default: 20}\n"),
            (_LIMIT, "        limit: {type: number}\n"),
            [("BRK015", "input 'limit' default changed from 20 to no default")],
        ),
        (  # 1 and true are equal in Python, not in JSON
            (_LIMIT, "        limit: {default: 1}\n"),
            (_LIMIT, "        limit: {default: true}\n"),
            [("BRK015", "input 'limit' default changed from 1 to true")],
        ),
        (  # a default added where there was none, or kept as it was: nothing to report
            (_LIMIT, "        limit: {type: number, default: 20}\n"),
            (_STATUS + _LIMIT, _STATUS_DEFAULT + "        limit: {type: number, default: 20}\n"),
            [],
        ),
        (  # a $defs entry that a $ref uses changes
            (_ROOT, _ROOT + "      $defs: {L: {type: number}}\n"),
            (_ROOT, _ROOT + "      $defs: {L: {type: integer}}\n"),
            [("BRK013", "input root: $defs changed, which gen breaking does not compare")],
        ),
        (  # extra keys' schema narrows from string to integer
            (_ROOT, "      additionalProperties: {type: string}\n      required: [query]\n"),
            (_ROOT, "      additionalProperties: {type: integer}\n      required: [query]\n"),
            [("BRK004", "input '*' type narrowed from string to integer")],
        ),
        (  # uniqueItems added to an input array
            (_LIMIT, "        limit: {type: array}\n"),
            (_LIMIT, "        limit: {type: array, uniqueItems: true}\n"),
            [("BRK013", "input 'limit' constraint tightened: uniqueItems True added")],
        ),
        (  # an output array loses its items' schema: readers lose every promised field
            ("\n", "\n"),
            (_ITEMS, "          items: {}\n"),
            [
                ("BRK006", "output 'contacts[].email' removed"),
                ("BRK006", "output 'contacts[].id' removed"),
                ("BRK006", "output 'contacts[].state' removed"),
                ("BRK008", "output 'contacts[]' type changed from object to any"),
            ],
        ),
    ],
)
def test_schema_changes_the_comparison_used_to_miss_are_reported(
    tmp_path: Path,
    before: tuple[str, str],
    after: tuple[str, str],
    expected: list[tuple[str, str]],
) -> None:
    """Combinators, `$defs`, `items`, `uniqueItems` and schema-valued `additionalProperties`
    were not compared at all: a narrowing there passed as no change."""
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK004", case)
    shutil.copy(case / "before" / "crm.yaml", case / "after" / "crm.yaml")
    for side, (old, new) in (("before", before), ("after", after)):
        path = case / side / "crm.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = _run(case)
    assert not result.diagnostics, result.diagnostics
    found = sorted((c.rule, c.message.split(": ", 1)[1]) for c in result.unallowed)
    assert len(found) == len(expected), found
    assert all(
        m.startswith(e) and r == er for (r, m), (er, e) in zip(found, expected, strict=True)
    ), found


def test_relaxing_multiple_of_to_a_divisor_is_safe(tmp_path: Path) -> None:
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK004", case)
    for side, step in (("before", 4), ("after", 2)):
        path = case / side / "crm.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("minimum: 1, maximum: 100", f"multipleOf: {step}"), "utf-8")
    result = _run(case)
    relaxed = [c for c in result.changes if "multipleOf" in c.message]
    assert [(c.rule, c.message.split(": ", 1)[1]) for c in relaxed] == [
        ("BRK104", "input 'limit' constraint relaxed: multipleOf 4 -> 2")
    ]


def test_an_allow_entry_names_a_target_inside_nested_arrays_as_printed(tmp_path: Path) -> None:
    """`[]` in a target is literal text, not a glob character class (which made every target
    with two of them unmatchable)."""
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK004", case)
    shutil.copy(case / "before" / "crm.yaml", case / "after" / "crm.yaml")
    state = "              state: {type: string, enum: [active, archived]}\n"
    tags = "              tags: {type: array, items: {type: object, properties: {%s}}}\n"
    allow = (
        "breaking:\n  allow:\n    - rule: BRK006\n"
        "      target: crm_find_contact.output.contacts[].tags[].v\n"
        "      reason: dropped upstream\n"
    )
    for side, props, extra in (("before", "v: {type: string}", ""), ("after", "", allow)):
        path = case / side / "crm.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(state, state + tags % props, 1) + extra, encoding="utf-8")
    result = _run(case)
    assert [(c.rule, c.target, c.allowed is not None) for c in result.changes if c.breaking] == [
        ("BRK006", "crm_find_contact.output.contacts[].tags[].v", True)
    ]
    assert result.ok and not result.diagnostics


def test_every_auth_setting_is_compared(tmp_path: Path) -> None:
    """Swapping the fields an OAuth2 refresh sends as client id and secret fails every
    refresh: a change to any auth setting is BRK011, not only to a few of them."""
    for side in ("before", "after"):
        shutil.copytree(ROOT / "manifests", tmp_path / side)
    hubspot = tmp_path / "after" / "connectors" / "hubspot.yaml"
    text = hubspot.read_text(encoding="utf-8")
    swapped = (
        text.replace("client_id_field: client_id", "client_id_field: @@")
        .replace("client_secret_field: client_secret", "client_secret_field: client_id")
        .replace("client_id_field: @@", "client_id_field: client_secret")
    )
    assert swapped != text
    hubspot.write_text(swapped, encoding="utf-8")
    options = api.Options(
        root=tmp_path, manifests=tmp_path / "after", out=tmp_path / "out", cache=False
    )
    result = breaking.breaking(options, str(tmp_path / "before"), today=TODAY)
    assert [(c.rule, c.target) for c in result.changes] == [("BRK011", "connector:hubspot")]
    assert "client_id_field 'client_id' -> 'client_secret'" in result.changes[0].message


_STATE = "              state: {type: string, enum: [active, archived]}\n"


def _changes(tmp_path: Path, edits: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(rule, after/ location, message) of every change, BRK004's fixture edited per side."""
    case = tmp_path / "case"
    shutil.copytree(FIXTURES / "BRK004", case)
    shutil.copy(case / "before" / "crm.yaml", case / "after" / "crm.yaml")
    for side, old, new in edits:
        path = case / side / "crm.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = _run(case)
    assert not result.diagnostics, result.diagnostics
    return [(c.rule, str(c.span), c.message.split(": ", 1)[1]) for c in result.changes]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("uri", "uri-reference", [("BRK104", "format 'uri' -> 'uri-reference'")]),
        ("uri", "iri", [("BRK104", "format 'uri' -> 'iri'")]),
        ("iri", "iri-reference", [("BRK104", "format 'iri' -> 'iri-reference'")]),
        ("email", "idn-email", [("BRK104", "format 'email' -> 'idn-email'")]),
        # the other way round, or to a format that is no superset: tightened
        ("uri-reference", "uri", [("BRK013", "format 'uri' (was 'uri-reference')")]),
        ("hostname", "idn-hostname", [("BRK013", "format 'idn-hostname' (was 'hostname')")]),
        ("date-time", "date", [("BRK013", "format 'date' (was 'date-time')")]),
    ],
)
def test_a_format_that_accepts_every_value_of_the_old_one_relaxes_an_input(
    tmp_path: Path, old: str, new: str, expected: list[tuple[str, str]]
) -> None:
    query = "        query: {type: string, maxLength: 200}\n"
    found = _changes(
        tmp_path,
        [
            ("before", query, query.replace("}", f", format: {old}}}")),
            ("after", query, query.replace("}", f", format: {new}}}")),
        ],
    )
    verb = "relaxed" if expected[0][0] == "BRK104" else "tightened"
    assert found == [
        (rule, "after/crm.yaml:22:9", f"input 'query' constraint {verb}: {text}")
        for rule, text in expected
    ]


def test_an_enum_narrowed_to_a_const_is_one_consistent_change(tmp_path: Path) -> None:
    """`const: x` allows the values `enum: [x]` does: an input enum becoming a const no longer
    accepts the other values (it was BRK013 "const added" beside a safe "accepts any value,
    not only [...]"), and the reverse accepts them again; an output's const is an enum too."""
    status = "        status: {type: string, enum: [active, archived]}\n"
    to_const = status.replace("enum: [active, archived]", "const: active")
    assert _changes(tmp_path / "a", [("after", status, to_const)]) == [
        ("BRK005", "after/crm.yaml:23:39", "input 'status' no longer accepts \"archived\"")
    ]
    assert _changes(tmp_path / "b", [("before", status, to_const)]) == [
        ("BRK105", "after/crm.yaml:23:38", "input 'status' accepts \"archived\" too")
    ]
    state_const = _STATE.replace("enum: [active, archived]", "const: active")
    assert _changes(tmp_path / "c", [("after", _STATE, state_const)]) == [
        ("BRK110", "after/crm.yaml:38:44", "output 'contacts[].state' is no longer \"archived\"")
    ]
    assert _changes(tmp_path / "d", [("before", _STATE, state_const)]) == [
        ("BRK014", "after/crm.yaml:38:43", "output 'contacts[].state' may now be \"archived\"")
    ]


_EMAIL = "              email: {type: string}\n"
_CONTACTS = "          type: array\n"


def _output_email(old: str, new: str) -> tuple[str, str, str]:
    """An edit per side of the output property `contacts[].email`: `{type: string, OLD}`
    before, `{type: string, NEW}` after (an empty one: the keyword is absent)."""
    return (
        ("before", _EMAIL, _EMAIL.replace("}", f", {old}}}") if old else _EMAIL),
        ("after", _EMAIL, _EMAIL.replace("}", f", {new}}}") if new else _EMAIL),
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # values the old readers' models refuse may be returned: breaking
        ("format: date-time", "", ("BRK016", "relaxed: format 'date-time' dropped")),
        ("maxLength: 20", "", ("BRK016", "relaxed: maxLength 20 dropped")),
        ("maxLength: 20", "maxLength: 40", ("BRK016", "relaxed: maxLength 20 -> 40")),
        ("minLength: 3", "minLength: 1", ("BRK016", "relaxed: minLength 3 -> 1")),
        ("pattern: '^a'", "", ("BRK016", "relaxed: pattern '^a' dropped")),
        ("pattern: '^a'", "pattern: '^b'", ("BRK016", "changed: pattern '^b' (was '^a')")),
        (
            "format: uri",
            "format: uri-reference",
            ("BRK016", "relaxed: format 'uri' -> 'uri-reference'"),
        ),
        (
            "format: email",
            "format: idn-email",
            ("BRK016", "relaxed: format 'email' -> 'idn-email'"),
        ),
        (
            "format: date-time",
            "format: date",
            ("BRK016", "changed: format 'date' (was 'date-time')"),
        ),
        # the old readers' models accept every value the new schema allows: safe
        ("", "format: date-time", ("BRK110", "tightened: format 'date-time' added")),
        ("maxLength: 40", "maxLength: 20", ("BRK110", "tightened: maxLength 40 -> 20")),
        ("", "pattern: '^a'", ("BRK110", "tightened: pattern '^a' added")),
        (
            "format: uri-reference",
            "format: uri",
            ("BRK110", "tightened: format 'uri' (was 'uri-reference')"),
        ),
        (
            "format: iri-reference",
            "format: uri",
            ("BRK110", "tightened: format 'uri' (was 'iri-reference')"),
        ),
    ],
)
def test_an_output_constraint_relaxed_is_breaking_and_tightened_is_safe(
    tmp_path: Path, old: str, new: str, expected: tuple[str, str]
) -> None:
    """An agent reads outputs: the constraint comparison of inputs, the other way round. A
    constraint dropped or relaxed lets the tool return values the old typed client's models
    refuse (a `posted_at` without its date-time format, a longer `channel`); it was not
    compared at all, and `gen breaking` passed such a change as none."""
    rule, text = expected
    assert _changes(tmp_path, list(_output_email(old, new))) == [
        (rule, "after/crm.yaml:37:15", f"output 'contacts[].email' constraint {text}")
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("minimum: 0", "minimum: -1", ("BRK016", "relaxed: minimum 0 -> -1")),
        ("maximum: 10", "", ("BRK016", "relaxed: maximum 10 dropped")),
        ("multipleOf: 4", "multipleOf: 2", ("BRK016", "relaxed: multipleOf 4 -> 2")),
        ("multipleOf: 4", "multipleOf: 6", ("BRK016", "changed: multipleOf 6 (was 4)")),
        ("multipleOf: 2", "multipleOf: 4", ("BRK110", "tightened: multipleOf 4 (was 2)")),
        ("minimum: -1", "minimum: 0", ("BRK110", "tightened: minimum -1 -> 0")),
    ],
)
def test_an_output_bound_or_multiple_relaxed_is_breaking(
    tmp_path: Path, old: str, new: str, expected: tuple[str, str]
) -> None:
    total = "        total: {type: integer}\n"
    rule, text = expected
    found = _changes(
        tmp_path,
        [
            ("before", total, total.replace("}", f", {old}}}") if old else total),
            ("after", total, total.replace("}", f", {new}}}") if new else total),
        ],
    )
    assert found == [(rule, "after/crm.yaml:29:9", f"output 'total' constraint {text}")]


def test_output_arrays_and_objects_relaxed_or_tightened(tmp_path: Path) -> None:
    """uniqueItems dropped is BRK016; an object closed (`additionalProperties: false`) is a
    narrowing (BRK110); an object opened is reported as BRK103, an output property added: the
    generated output models ignore properties they do not declare, so neither breaks the
    typed client (test_client_e2e.py shows the old client reading the new server)."""
    unique = _CONTACTS + "          uniqueItems: true\n"
    closed = "            type: object\n            additionalProperties: false\n"
    item = "            type: object\n"
    assert _changes(tmp_path / "a", [("before", _CONTACTS, unique)]) == [
        (
            "BRK016",
            "after/crm.yaml:30:9",
            "output 'contacts' constraint relaxed: uniqueItems True dropped",
        )
    ]
    assert _changes(tmp_path / "b", [("after", _CONTACTS, unique)]) == [
        (
            "BRK110",
            "after/crm.yaml:30:9",
            "output 'contacts' constraint tightened: uniqueItems True added",
        )
    ]
    assert _changes(tmp_path / "c", [("after", item, closed)]) == [
        (
            "BRK110",
            "after/crm.yaml:33:13",
            "output 'contacts[]' constraint tightened: additionalProperties: false added",
        )
    ]
    assert _changes(tmp_path / "d", [("before", item, closed)]) == [
        (
            "BRK103",
            "after/crm.yaml:33:13",
            "output 'contacts[]' may now hold properties it does not declare",
        )
    ]
    # closed on both sides, with a property added: the property, as before
    added = _EMAIL + "              phone: {type: string}\n"
    assert _changes(
        tmp_path / "e",
        [("before", item, closed), ("after", item, closed), ("after", _EMAIL, added)],
    ) == [("BRK103", "after/crm.yaml:39:15", "output 'contacts[].phone' added")]


def test_the_audit_repro_an_output_format_and_max_length_dropped_exits_1(tmp_path: Path) -> None:
    """The report that found BRK016 missing: slack_send_message's output loses the date-time
    format of `posted_at` (as the README suggests for an upstream that sends times without an
    offset) and the maxLength of `channel`; `gen breaking` said "0 breaking, 0 safe" and the
    previous release's typed client refused every result (`invalid_response`)."""
    channel = "        channel: {type: string}\n        ts: {type: string}\n"
    fields = "fields: {channel: channel, ts: ts, message: message}"
    for side, extra in (
        (
            "old",
            "        channel: {type: string, maxLength: 20}\n        ts: {type: string}\n"
            "        posted_at: {type: string, format: date-time}\n",
        ),
        (
            "new",
            "        channel: {type: string}\n        ts: {type: string}\n"
            "        posted_at: {type: string}\n",
        ),
    ):
        shutil.copytree(ROOT / "manifests", tmp_path / side / "manifests")
        slack = tmp_path / side / "manifests" / "connectors" / "slack.yaml"
        text = slack.read_text(encoding="utf-8")
        assert channel in text and fields in text
        text = text.replace(channel, extra, 1).replace(
            "required: [channel, ts]", "required: [channel, ts, posted_at]", 1
        )
        slack.write_text(text.replace(fields, fields[:-1] + ", posted_at: ts}"), encoding="utf-8")
    proc = _gen(
        ROOT, "breaking", "--project", str(tmp_path / "new"), "--against", str(tmp_path / "old")
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [line.split(": ", 2)[2] for line in proc.stdout.splitlines() if "[BRK" in line] == [
        "output 'channel' constraint relaxed: maxLength 20 dropped",
        "output 'posted_at' constraint relaxed: format 'date-time' dropped",
    ]
    assert proc.stdout.count("breaking[BRK016] slack_send_message: ") == 2
    assert "2 breaking (0 allowed), 0 safe" in proc.stderr
