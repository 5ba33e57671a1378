"""`gen build` end to end, through the api (and a few CLI runs for wiring and exit codes)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, make_project, options, tree

from generator import api, load, write
from generator.diagnostics import UNSAFE_IN_NAMES, Severity, printable
from generator.runtime.catalog import MAX_TAG_CHARS, MAX_TAGS, MAX_TOP_K, MAX_TOPIC_CHARS

CASES = ROOT / "tests" / "cases"


def test_committed_generated_package_is_fresh() -> None:
    result = api.build(api.Options.for_project(ROOT, cache=False), check=True)
    assert result.ok, result.diagnostics
    assert result.plan is not None and result.plan.clean, result.diff[:4000]


def test_ten_mistakes_give_ten_located_diagnostics_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = api.build(api.Options.for_project(CASES / "ten_mistakes", out=out, cache=False))
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert len(errors) == 10
    assert len({d.code for d in errors}) == 10  # ten different mistakes
    assert all(d.span.line > 1 and d.span.col >= 1 for d in errors)
    assert all(d.span.file.startswith("manifests/") for d in errors)
    assert not out.exists()


def test_failed_build_leaves_previous_output_untouched(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    before = tree(root / "generated")
    slack = root / "manifests" / "connectors" / "slack.yaml"
    slack.write_text(slack.read_text().replace("scope: write", "scope: admin", 1))
    result = api.build(options(root))
    assert not result.ok
    assert [d.code for d in result.diagnostics] == ["GEN104"]
    assert tree(root / "generated") == before


def test_a_resource_uri_must_hold_what_its_handler_reads(tmp_path: Path) -> None:
    """A resource handler reads its values from the URI: a memory resource needs {user}, a
    status resource {connector}, the others none. Anything else failed on every read."""
    root = make_project(tmp_path, copy_defaults=True)
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text()
    for old, new in [
        ("uri_template: memory://users/{user}/profile", "uri: memory://me/profile"),
        ("uri_template: gateway://integrations/{connector}", "uri_template: gateway://i/{name}"),
        ("uri_template: memory://users/{user}/log", "uri_template: memory://{user}/{user}/log"),
        ("uri: gateway://usage", "uri_template: gateway://usage/{connector}"),
    ]:
        assert old in text
        text = text.replace(old, new)
    gateway.write_text(text)
    result = api.build(options(root))
    found = sorted((d.code, d.span.line, d.message) for d in result.diagnostics)
    lines = text.splitlines()

    def line_of(fragment: str) -> int:
        return next(n for n, line in enumerate(lines, 1) if fragment in line)

    p = "handler resources."
    assert found == sorted(
        [
            (
                "GEN228",
                line_of("gateway://i/{name}"),
                p + "integration_status reads {connector} "
                "from the URI, but this uri_template has {name}",
            ),
            (
                "GEN228",
                line_of("gateway://usage/"),
                p + "usage takes no URI variables, but this uri_template has {connector}",
            ),
            (
                "GEN228",
                line_of("memory://me/"),
                p + "memory_profile reads {user} from the URI, but this uri has no variables",
            ),
            (
                "GEN228",
                line_of("memory://{user}/{user}"),
                p + "memory_log reads {user} from the "
                "URI, but this uri_template has {user}, {user}",
            ),
        ]
    )
    assert not result.ok


def test_memory_tool_schemas_must_say_what_the_memory_settings_do(tmp_path: Path) -> None:
    """The personalization manifest's memory settings decide what the store does; its tools'
    schemas tell clients. They were never compared: with default_top_k: 10 and
    max_observation_chars: 100, tools/list still advertised top_k's default 5 and a 4,000
    character text, and default_top_k: 60 (the schema allowed up to 100) built a server that
    refused every retrieval without top_k (the store returns at most 50). Each disagreement is
    now a located GEN232 (and a default_top_k over 50 a GEN106), and nothing is built."""
    root = make_project(tmp_path, copy_defaults=True)
    manifest = root / "manifests" / "personalization.yaml"
    text = manifest.read_text()
    for old, new in [
        ("default_top_k: 5", "default_top_k: 10"),
        ("max_observation_chars: 4000", "max_observation_chars: 100"),
        ("maximum: 50, default: 5}", "maximum: 80, default: 5}"),
    ]:
        assert old in text
        text = text.replace(old, new)
    manifest.write_text(text)
    result = api.build(options(root))
    lines = text.splitlines()

    def at(fragment: str, value: str | None = None) -> tuple[int, int]:
        """Line and column of `value` (else `fragment`) on the line holding `fragment`."""
        n, line = next((n, line) for n, line in enumerate(lines, 1) if fragment in line)
        return n, line.index(value or fragment) + 1

    setting = "manifests/personalization.yaml:{}:{}".format
    found = sorted(
        (d.code, (d.span.line, d.span.col), d.message, d.hint) for d in result.diagnostics
    )
    assert found == sorted(
        [
            (
                "GEN232",
                at("default: 5}", "5}"),
                "retrieve_relevant_chunks: top_k's default is 5, but a call without top_k "
                f"gets memory.default_top_k, 10 ({setting(*at('default_top_k', '10'))})",
                "make them equal: the memory settings decide what the store does, the tool's "
                "schema what clients are told",
            ),
            (
                "GEN232",
                at("maximum: 80", "80"),
                "retrieve_relevant_chunks: top_k may be up to 80, but the memory store returns "
                "at most 50 chunks and refuses a larger top_k",
                "set its maximum to 50 or less",
            ),
            (
                "GEN232",
                at("text: {", "4000"),
                "update_memory: an observation's text may be 4000 characters long, but the "
                f"store refuses one longer than memory.max_observation_chars, 100 "
                f"({setting(*at('max_observation_chars', '100'))})",
                "make them equal: the memory settings decide what the store does, the tool's "
                "schema what clients are told",
            ),
        ]
    )
    assert not result.ok and not (root / "generated").exists()
    # Over the store's cap, default_top_k is out of the manifest schema's range.
    schema = json.loads((ROOT / "generator" / "schema" / "manifest.v1.schema.json").read_text())
    memory = schema["$defs"]["personalization"]["properties"]["memory"]["properties"]
    assert memory["default_top_k"]["maximum"] == MAX_TOP_K
    manifest.write_text(manifest.read_text().replace("default_top_k: 10", "default_top_k: 60"))
    result = api.build(options(root))
    assert [(d.code, d.span.line) for d in result.diagnostics] == [
        ("GEN106", at("default_top_k")[0])
    ]


def test_update_memorys_schema_may_not_allow_more_than_the_store_takes(tmp_path: Path) -> None:
    """A topic's maxLength of 300 passed `gen validate` and the schema check of every call, and
    the store then refused anything over 120 characters; tags without a maxItems the same. Each
    limit of update_memory's schema over the store's is a located GEN232; a smaller one (the
    shipped 20 observations a call, where the store takes 100) is the schema's to ask."""
    root = make_project(tmp_path, copy_defaults=True)
    manifest = root / "manifests" / "personalization.yaml"
    text = manifest.read_text()
    for old, new in [
        ("topic: {type: string, maxLength: 120,", "topic: {type: string, maxLength: 300,"),
        ("items: {type: string, maxLength: 60}, maxItems: 20}", "items: {type: string}}"),
    ]:
        assert old in text
        text = text.replace(old, new)
    manifest.write_text(text)
    result = api.build(options(root))
    lines = text.splitlines()
    topic = next(n for n, line in enumerate(lines, 1) if "maxLength: 300" in line)
    tags = next(n for n, line in enumerate(lines, 1) if "items: {type: string}}" in line)
    assert sorted((d.code, d.span.line, d.message, d.hint) for d in result.diagnostics) == [
        (
            "GEN232",
            topic,
            "update_memory: the schema allows 300 characters for a topic, but the memory store "
            f"refuses more than {MAX_TOPIC_CHARS}",
            f"set maxLength to {MAX_TOPIC_CHARS} or less",
        ),
        (
            "GEN232",
            tags,
            "update_memory: the schema allows any number of characters for a tag, but the "
            f"memory store refuses more than {MAX_TAG_CHARS}",
            f"set maxLength to {MAX_TAG_CHARS} or less",
        ),
        (
            "GEN232",
            tags,
            "update_memory: the schema allows any number of items for tags, but the memory "
            f"store refuses more than {MAX_TAGS}",
            f"set maxItems to {MAX_TAGS} or less",
        ),
    ]
    assert not result.ok and not (root / "generated").exists()


def test_adding_a_connector_is_one_yaml_file(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    (root / "manifests" / "connectors" / "notion.yaml").write_text(
        textwrap.dedent("""\
        version: 1
        kind: connector
        name: notion
        title: Notion
        description: Workspace pages.
        base_url: https://api.notion.com/v1
        auth: {type: bearer, token_field: token, fields: [{name: token}]}
        capabilities:
          - name: search_pages
            description: Search pages by title.
            scope: read
            annotations: {read_only: true, idempotent: true}
            input:
              type: object
              required: [query]
              properties: {query: {type: string}}
            output:
              type: object
              required: [results]
              properties:
                results: {type: array, items: {type: object}}
            http:
              method: POST
              path: /search
              body: {query: "{query}"}
              response: {fields: {results: results}}
        """)
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    tools = json.loads((out / "tools.json").read_text())["tools"]
    assert "notion_search_pages" in [t["name"] for t in tools]
    assert (out / "fastn_gateway" / "models" / "notion.py").is_file()
    assert "notion_search_pages" in (out / "fastn_gateway" / "catalog" / "notion.py").read_text()
    # the new package imports and exposes the tool
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fastn_gateway.catalog import GATEWAY;"
        "print(GATEWAY.connectors['notion'].tools)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True
    )
    assert "notion_search_pages" in proc.stdout


def _build_in_subprocess(root: Path, seed: str, cwd: Path = ROOT) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run(
        [sys.executable, "-m", "generator", "build", "--project", str(root), "--no-cache"],
        check=True,
        env=env,
        cwd=cwd,
        capture_output=True,
    )


def test_builds_are_byte_identical_whatever_the_input_order(tmp_path: Path) -> None:
    # Same manifests, written to disk in opposite orders, built with different hash seeds, from
    # directories whose pyproject.toml say different things about formatting (formatters that
    # read the nearest one made the output depend on where `gen` ran).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pyproject.toml").write_text(
        "[tool.ruff]\nline-length = 40\n[tool.black]\nline-length = 40\n"
        "[tool.isort]\nline_length = 40\nknown_first_party = ['pydantic']\n"
        "[tool.datamodel-codegen]\nbuiltin-format-line-length = 40\n",
        encoding="utf-8",
    )
    sources = sorted((ROOT / "manifests").rglob("*.yaml"))
    roots = []
    for name, order in (("a", sources), ("b", list(reversed(sources)))):
        root = tmp_path / name
        for src in order:
            dst = root / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
        roots.append(root)
    _build_in_subprocess(roots[0], "1")
    _build_in_subprocess(roots[1], "4242", cwd=elsewhere)
    assert tree(roots[0] / "generated") == tree(roots[1] / "generated")


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds `marker` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _none_left(marker: str, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_gen_build_leaves_no_worker_processes_behind(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    marker = str(root)
    done = _gen("build", "--project", marker, "--no-cache")
    assert done.returncode == 0, done.stderr
    assert _none_left(marker)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_ctrl_c_stops_gen_build_and_its_workers_without_a_traceback(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    marker = str(root)
    with (tmp_path / "stderr").open("w+") as stderr:  # not a pipe: workers share it
        proc = subprocess.Popen(
            [sys.executable, "-m", "generator", "build", "--project", marker, "--no-cache"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 30
        while len(_processes_with(marker)) < 2 and proc.poll() is None:  # a worker forked
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 1
        # killed with the build, not left to finish warming up (about half a second)
        assert _none_left(marker, within=0.3)
        stderr.seek(0)
        text = stderr.read()
    assert "Aborted!" in text and "Traceback" not in text
    assert not (root / "generated").exists()  # interrupted: nothing written


def test_reordering_tools_in_a_manifest_only_changes_source_digests(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    first = tree(root / "generated")
    native = root / "manifests" / "native.yaml"
    data = native.read_text()
    doc = yaml.safe_load(data)
    doc["tools"].reverse()
    native.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    assert api.build(options(root)).ok
    second = tree(root / "generated")
    assert first.keys() == second.keys()
    for rel in first:
        a = [ln for ln in first[rel].splitlines() if b"sha256" not in ln]
        b = [ln for ln in second[rel].splitlines() if b"sha256" not in ln]
        assert a == b, rel


def test_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    # directories too: a no-op build creates nothing in them, not even for a moment
    stamps = {p: p.stat().st_mtime_ns for p in (out, *out.rglob("*"))}
    result = api.build(options(root))
    assert result.plan is not None
    assert not result.plan.added and not result.plan.changed
    assert stamps == {p: p.stat().st_mtime_ns for p in (out, *out.rglob("*"))}


def test_stale_owned_files_are_removed_and_user_files_kept(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    (out / "NOTES.md").write_text("mine")
    (out / "fastn_gateway" / "extra.py").write_text("# mine\n")
    (root / "manifests" / "connectors" / "github.yaml").unlink()
    gateway_path = root / "manifests" / "gateway.yaml"
    gateway = yaml.safe_load(gateway_path.read_text())
    for tenant in gateway.get("tenants", []):
        tenant["connectors"] = [c for c in tenant["connectors"] if c != "github"]
    gateway_path.write_text(yaml.safe_dump(gateway, sort_keys=False))
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    assert result.plan is not None
    assert "fastn_gateway/models/github.py" in result.plan.stale
    assert not (out / "fastn_gateway" / "models" / "github.py").exists()
    assert (out / "NOTES.md").read_text() == "mine"
    assert (out / "fastn_gateway" / "extra.py").exists()


def test_a_file_of_the_users_where_the_build_writes_one_is_refused(tmp_path: Path) -> None:
    """`gen build --out DIR` over someone's own README.md replaced it without a word: the
    generator owns only the files it lists. Now nothing is written and the file is named."""
    root = make_project(tmp_path, copy_defaults=True)
    out = tmp_path / "site"
    out.mkdir()
    (out / "README.md").write_text("# My site\n")
    (out / "NOTES.md").write_text("not in the way\n")
    before = tree(out)
    for check in (False, True):
        result = api.build(options(root, out=out), check=check)
        assert not result.ok and result.plan is None
        [d] = result.diagnostics
        where = f"{out.as_posix()}/README.md"
        assert (d.code, str(d.span), d.message, d.hint) == (
            "GEN307",
            f"{where}:1:1",
            f"{where} is not the generator's (not in {out.as_posix()}/.mcpforge-files, no "
            "'Generated by mcpforge' header), and gen build would replace it with a file it "
            "generates",
            f"move it out of {out.as_posix()}/ or delete it, then run gen build again; until "
            "then gen build writes nothing",
        )
        assert tree(out) == before
    proc = _gen("build", "--project", str(root), "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{out.as_posix()}/README.md:1:1: error[GEN307] ")
    assert tree(out) == before

    # The same bytes as the build's are not in the way: nothing of the user's is lost.
    built = api.build(options(root))
    assert built.ok
    (out / "README.md").write_bytes((root / "generated" / "README.md").read_bytes())
    result = api.build(options(root, out=out))
    assert result.ok and result.plan is not None
    assert "README.md" in result.plan.unchanged
    assert (out / "NOTES.md").read_text() == "not in the way\n"


def test_a_link_out_of_the_output_directory_is_refused_and_nothing_there_is_touched(
    tmp_path: Path,
) -> None:
    """generated/ is committed, so a change can carry a symbolic link: through a directory
    linked elsewhere, `gen build` removed a file it listed there and wrote its models over
    someone's files. Now no path whose directory resolves out of the output is acted on:
    GEN308 at the link, from `gen build` and `--check` alike, and nothing is written."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("precious\n")
    (elsewhere / "slack.py").write_text("mine\n")
    # a listed file behind a link (the build would remove it as stale) ...
    (out / "docs").symlink_to(elsewhere)
    with (out / ".mcpforge-files").open("a") as fh:
        fh.write("docs/secret.txt\n")
    # ... and a generated directory replaced by a link (the build would write into it)
    shutil.rmtree(out / "fastn_gateway" / "models")
    (out / "fastn_gateway" / "models").symlink_to(elsewhere)
    before, outside = tree(out), tree(elsewhere)
    for args in (("build",), ("build", "--check")):
        proc = _gen(*args, "--project", str(root))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        docs, models = [line for line in proc.stderr.splitlines() if "error[" in line]
        assert docs == (
            f"generated/docs:1:1: error[GEN308] generated/docs is a symbolic link to "
            f"{elsewhere}, outside generated/, and gen build would write or remove "
            "generated/docs/secret.txt through it"
        )
        assert models.startswith(
            "generated/fastn_gateway/models:1:1: error[GEN308] generated/fastn_gateway/models "
            f"is a symbolic link to {elsewhere}, outside generated/, and gen build would "
            "write or remove generated/fastn_gateway/models/__init__.py, "
        )
        assert models.endswith(" and 4 more through it")
        assert tree(out) == before and tree(elsewhere) == outside

    # A link inside the output that stays inside is no way out, and the output directory
    # may itself be a link: paths are judged against the directory it resolves to.
    (out / "docs").unlink()
    (out / "fastn_gateway" / "models").unlink()
    (out / "fastn_gateway" / "models").mkdir()
    (out / "docs").symlink_to(out / "fastn_gateway")
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    files = api.build(options(root), check=True).files
    the_plan = write.write(linked, files)
    assert the_plan.outside == () and "fastn_gateway/models/slack.py" in the_plan.added
    assert tree(elsewhere) == outside and (out / "docs").is_symlink()


def test_an_earlier_output_without_its_list_is_still_rebuilt(tmp_path: Path) -> None:
    """Without .mcpforge-files, a file is the generator's by its header (each kind: Markdown,
    Python, TOML, tools.json), by lying in the package whose __init__.py carries it (the
    runtime modules are verbatim copies, with no header of their own), or, for the client
    configs at the top, which have none either, by being an object of `mcpServers` alone."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    (out / ".mcpforge-files").unlink()
    store = out / "fastn_gateway" / "runtime" / "store.py"
    store.write_text(store.read_text() + "# as an older mcpforge copied it\n")
    slack = root / "manifests" / "connectors" / "slack.yaml"
    slack.write_text(slack.read_text() + "# every header changes\n")
    gateway = root / "manifests" / "gateway.yaml"  # and the client configs, which have none
    gateway.write_text(gateway.read_text().replace("  name: fastn-gateway\n", "  name: gw2\n"))
    checked = api.build(options(root), check=True)
    assert checked.ok, checked.diagnostics
    assert checked.plan is not None and checked.plan.foreign == ()
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    assert result.plan is not None
    assert {
        ".mcpforge-files",
        "README.md",
        "TOOLS.md",
        "tools.json",
        "pyproject.toml",
        "fastn_gateway/__init__.py",
        "fastn_gateway/catalog/slack.py",
        "fastn_gateway/models/slack.py",
        "fastn_gateway/runtime/store.py",
        "claude_desktop_config.http.json",
        "claude_desktop_config.stdio.json",
    } <= {*result.plan.changed, *result.plan.added}
    assert api.build(options(root), check=True).plan.clean


def test_check_reports_drift_without_writing(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    target = out / "fastn_gateway" / "catalog" / "slack.py"
    target.write_text(target.read_text() + "# edited by hand\n")
    (out / "tools.json").unlink()
    before = tree(out)
    result = api.build(options(root), check=True)
    assert result.plan is not None and not result.plan.clean
    assert "fastn_gateway/catalog/slack.py" in result.plan.changed
    assert "tools.json" in result.plan.added
    assert "-# edited by hand" in result.diff and "missing: generated/tools.json" in result.diff
    assert tree(out) == before


def test_check_says_what_stands_where_a_file_goes_instead_of_diffing_it(tmp_path: Path) -> None:
    """A directory where a generated file goes showed as that file's whole text added to an
    empty one, with nothing saying why. Now --check names it, in every format."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    (out / "TOOLS.md").unlink()
    (out / "TOOLS.md").mkdir()
    result = api.build(options(root), check=True)
    assert result.plan is not None and result.plan.changed == ("TOOLS.md",)
    assert result.diff == "not a readable file: generated/TOOLS.md (a directory)\n"
    assert result.plan.unreadable == {"TOOLS.md": "a directory"}
    proc = _gen("build", "--check", "--project", str(root), "--error-format", "json")
    assert proc.returncode == 1
    [entry] = json.loads(proc.stdout)
    assert (entry["file"], entry["message"], entry["hint"]) == (
        "generated/TOOLS.md",
        "generated/TOOLS.md is not a readable file (a directory), where gen build writes one",
        "move it away or delete it, then run `gen build` and commit the result",
    )


def test_an_executable_or_linked_generated_file_is_drift_and_rebuilt_plain(
    tmp_path: Path,
) -> None:
    """git records an executable bit, and a link is not the file: the same text is not
    enough. --check names them; a build writes them back as plain files."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    tools_md, tools_json = out / "TOOLS.md", out / "tools.json"
    tools_md.chmod(0o755)
    elsewhere = tmp_path / "tools.json"
    shutil.copy(tools_json, elsewhere)
    tools_json.unlink()
    tools_json.symlink_to(elsewhere)
    checked = api.build(options(root), check=True)
    assert checked.plan is not None and set(checked.plan.changed) == {"TOOLS.md", "tools.json"}
    assert "not a plain file: generated/TOOLS.md (a link, or executable)" in checked.diff
    assert api.build(options(root)).ok
    assert not tools_json.is_symlink() and not tools_md.stat().st_mode & 0o111
    assert api.build(options(root), check=True).plan.clean


def test_check_drift_is_a_diagnostic_in_the_github_and_json_formats(tmp_path: Path) -> None:
    """In CI the drift must show as annotations (github) or entries (json), not only as a
    diff on the console. An annotation names its file from the repository's root
    ($GITHUB_WORKSPACE, else the working directory): a project in a subdirectory (`gen build
    --check --project project`) annotated generated/TOOLS.md, which is no file there."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    (out / "TOOLS.md").write_text("edited\n")
    (out / "tools.json").unlink()
    for cwd, env, prefix in [
        (tmp_path, {}, "project/"),
        (root, {}, ""),
        (ROOT, {"GITHUB_WORKSPACE": str(tmp_path)}, "project/"),
    ]:
        gh = _gen(
            "build", "--check", "--project", str(root), "--error-format", "github", cwd=cwd, env=env
        )
        assert gh.returncode == 1
        assert gh.stderr.splitlines() == [
            f"::error file={prefix}generated/TOOLS.md,line=1,col=1,title=GEN305::generated/"
            "TOOLS.md differs from what the manifests generate (run `gen build` and commit the "
            "result)",
            f"::error file={prefix}generated/tools.json,line=1,col=1,title=GEN305::generated/"
            "tools.json is missing (run `gen build` and commit the result)",
        ]
    js = _gen("build", "--check", "--project", str(root), "--error-format", "json")
    assert js.returncode == 1
    assert [(d["code"], d["file"]) for d in json.loads(js.stdout)] == [
        ("GEN305", "generated/TOOLS.md"),
        ("GEN305", "generated/tools.json"),
    ]
    assert not (out / "tools.json").exists()


def test_manifest_text_cannot_break_generated_code(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = api.build(api.Options.for_project(CASES / "escaping", out=out, cache=False))
    assert result.ok, result.diagnostics
    manifest = yaml.safe_load((CASES / "escaping" / "manifests" / "native.yaml").read_text())
    gateway = yaml.safe_load((CASES / "escaping" / "manifests" / "gateway.yaml").read_text())
    sys.path.insert(0, str(out))
    try:
        catalog = importlib.import_module("esc_gateway.catalog")
        models = importlib.import_module("esc_gateway.models.native")
        tool = catalog.GATEWAY.tools["fastn_list_integrations"]
        assert tool.description == manifest["tools"][0]["description"].strip()
        assert tool.title == manifest["tools"][0]["title"]
        assert catalog.GATEWAY.instructions == gateway["server"]["instructions"].strip()
        weird = manifest["tools"][0]["input"]["properties"]["weird"]
        assert tool.input_schema["properties"]["weird"] == weird
        model = models.FastnListIntegrationsInput
        assert model.model_validate({"weird": 'a"b'}).weird == 'a"b'
        out_model = models.FastnListIntegrationsOutput.model_validate(
            {"class": "x", "model_config": 3}
        )
        assert out_model.model_dump(by_alias=True) == {"class": "x", "model_config": 3}
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith("esc_gateway")]:
            del sys.modules[name]


def _gen(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_constraint_the_typed_models_cannot_take_is_not_a_raw_warning(tmp_path: Path) -> None:
    """datamodel-code-generator warns (on stderr, as Python warnings) when Pydantic cannot
    take a constraint, like a `pattern` on a date-time: on cold builds only, so the output of
    a build depended on the cache. The gateway checks it anyway (the README says so)."""
    root = make_project(tmp_path, copy_defaults=True)
    shopify = root / "manifests" / "connectors" / "shopify.yaml"
    old = "created_at_min: {type: string, format: date-time}"
    text = shopify.read_text()
    assert old in text
    shopify.write_text(text.replace(old, old[:-1] + ", pattern: '^20'}"))
    for run in ("cold", "warm"):
        proc = _gen("build", "--project", str(root))
        assert proc.returncode == 0, proc.stderr
        assert "Warning" not in proc.stderr and "Pydantic" not in proc.stderr, (run, proc.stderr)


def test_cli_exit_codes_and_formats() -> None:
    ok = _gen("validate")
    assert ok.returncode == 0, ok.stderr
    bad = _gen("validate", "--project", str(CASES / "ten_mistakes"))
    assert bad.returncode == 1
    assert "manifests/native.yaml:34:14: error[GEN206]" in bad.stderr
    assert "Traceback" not in bad.stderr
    js = _gen("validate", "--project", str(CASES / "ten_mistakes"), "--error-format", "json")
    assert js.returncode == 1
    assert {d["code"] for d in json.loads(js.stdout)} >= {"GEN201", "GEN202", "GEN003"}
    gh = _gen(
        "build", "--check", "--project", str(CASES / "yaml_syntax"), "--error-format", "github"
    )
    assert gh.returncode == 1
    # an annotation names the file from the repository's root (here the working directory)
    assert (
        "::error file=tests/cases/yaml_syntax/manifests/types.yaml,line=5,col=4,title=GEN002::"
        in gh.stderr
    )
    usage = _gen("build", "--bogus-flag")
    assert usage.returncode == 2
    check = _gen("build", "--check")
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr


def test_ir_is_sorted_json() -> None:
    proc = _gen("ir")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = [t["name"] for t in data["tools"]]
    assert names == sorted(names)
    assert {"fastn_list_integrations", "slack_send_message", "update_memory"} <= set(names)


def test_no_manifests_is_a_located_error_that_says_which(tmp_path: Path) -> None:
    """A missing directory (gen run from the wrong place) and an empty one read differently."""
    result = api.build(api.Options.for_project(tmp_path, cache=False))
    (missing,) = result.diagnostics
    assert missing.code == "GEN005"
    assert missing.message == f"the manifest directory {tmp_path / 'manifests'} does not exist"
    assert missing.hint is not None and "--project" in missing.hint
    (tmp_path / "manifests").mkdir()
    (empty,) = api.build(api.Options.for_project(tmp_path, cache=False)).diagnostics
    assert (empty.code, empty.message) == ("GEN005", "no *.yaml manifests under manifests")
    assert not (tmp_path / "generated").exists()


def test_manifests_outside_the_project_are_named_relative_to_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(ROOT / "manifests", shared)
    (shared / "connectors" / "slack.yaml").write_text(
        (shared / "connectors" / "slack.yaml").read_text().replace("scope: read", "scope: reed", 1)
    )
    root = make_project(tmp_path)
    result = api.compile_manifests(options(root, manifests=shared))
    assert [(d.code, d.span.file) for d in result.diagnostics] == [
        ("GEN104", "../shared/connectors/slack.yaml")
    ]


def _edit_every_connector(root: Path) -> None:
    for path in (root / "manifests" / "connectors").glob("*.yaml"):
        path.write_text(path.read_text().replace("description: ", "description: Edited. ", 1))


def test_a_write_that_fails_part_way_restores_the_previous_output(tmp_path: Path) -> None:
    """The swap of new files for old is all or nothing: here the last file cannot be replaced
    (a directory stands where it goes), and every file already swapped is put back."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    (out / "tools.json").unlink()
    (out / "tools.json").mkdir()
    before = tree(out)
    _edit_every_connector(root)
    result = api.build(options(root))
    assert [d.code for d in result.diagnostics] == ["GEN304"]
    assert tree(out) == before  # no new file, no staging or backup file left behind
    assert (out / "tools.json").is_dir()


def test_an_unreadable_list_or_lock_is_a_located_error_not_a_traceback(tmp_path: Path) -> None:
    """A .mcpforge-files that is not UTF-8 crashed gen build and --check alike, and a lock
    that is a directory crashed --check (gen build said GEN304). Now both are GEN304 at the
    file, whichever the mode, and nothing is written."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    with (out / ".mcpforge-files").open("ab") as fh:
        fh.write(b"\xff\n")
    before = tree(out)
    for verb, args in (("write", ()), ("check", ("--check",))):
        proc = _gen("build", *args, "--project", str(root))
        assert (proc.returncode, proc.stderr.splitlines()[0]) == (
            1,
            f"generated/.mcpforge-files:1:1: error[GEN304] cannot {verb} output: "
            "generated/.mcpforge-files: not UTF-8 (invalid start byte at byte "
            f"{len(before['.mcpforge-files']) - 2}); restore it from version control, or "
            "delete it (gen build then knows its files by their header)",
        )
        assert tree(out) == before
    (out / ".mcpforge-files").write_bytes(before[".mcpforge-files"][:-2])
    lock = root / ".generated.mcpforge-lock"
    lock.unlink()
    lock.mkdir()
    before = tree(out)
    for verb, args in (("write", ()), ("check", ("--check",))):
        proc = _gen("build", *args, "--project", str(root))
        assert (proc.returncode, proc.stderr.splitlines()[0]) == (
            1,
            f".generated.mcpforge-lock:1:1: error[GEN304] cannot {verb} output: "
            ".generated.mcpforge-lock: Is a directory",
        )
        assert tree(out) == before


def test_an_interrupt_in_the_middle_of_the_swap_rolls_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    before = tree(out)
    _edit_every_connector(root)
    real_replace = os.replace
    calls = []

    def interrupted(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 5:  # four files swapped in already
            raise KeyboardInterrupt
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.build(options(root))
    monkeypatch.setattr(os, "replace", real_replace)
    assert tree(out) == before
    assert api.build(options(root)).ok and tree(out) != before


def test_line_separators_in_descriptions_survive_in_tools_json(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    native = root / "manifests" / "native.yaml"
    doc = yaml.safe_load(native.read_text())
    first = doc["tools"][0]
    first["description"] = "Calls\u2028this period\u2029ends here."
    native.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    assert api.build(options(root)).ok
    tools = json.loads((root / "generated" / "tools.json").read_text(encoding="utf-8"))["tools"]
    assert [t["description"] for t in tools if t["name"] == first["name"]] == [first["description"]]


def test_a_tool_model_named_like_a_nested_model_is_a_collision(tmp_path: Path) -> None:
    """Tool zz_a's output property `input` gets the class ZzAOutputInput: the input model of
    tool zz_a_output, which datamodel-code-generator would silently rename."""
    root = make_project(tmp_path, copy_defaults=True)
    tool = (
        "  - name: {name}\n    description: Does a thing for the test.\n    scope: read\n"
        "    handler: native.list_integrations\n    input: {{type: object, properties: {{q: "
        "{{type: {qtype}}}}}}}\n    output: {{type: object, properties: {{input: {{type: object,"
        " properties: {{q: {{type: integer}}}}}}}}}}\n"
    )
    extra = (
        "version: 1\nkind: native\ntools:\n"
        + tool.format(name="zz_a", qtype="integer")
        + tool.format(name="zz_a_output", qtype="string")
    )
    (root / "manifests" / "extra.yaml").write_text(extra)
    result = api.build(options(root))
    assert [(d.code, d.span.file) for d in result.diagnostics] == [
        ("GEN208", "manifests/extra.yaml")
    ]
    assert "ZzAOutputInput" in result.diagnostics[0].message


_TINY_GATEWAY = textwrap.dedent("""\
    version: 1
    kind: gateway
    package: {name: t-gw, import_name: t_gw, version: 0.1.0}
    server: {name: t}
    """)
_TINY_NATIVE = textwrap.dedent("""\
    version: 1
    kind: native
    tools:
      - name: usage_now
        description: A tool.
        scope: read
        handler: native.get_usage_summary
        input: {type: object, properties: {}}
        output: {type: object, properties: {calls: {type: integer}}}
    """)
_HOSTILE_NAMES = [
    "x\nprint('PWNED') #.yaml",
    "x\nimport os.yaml",
    "x\ry.yaml",
    "x\x7fy.yaml",
    "x\x85y.yaml",
    "x\u2028print('PWNED').yaml",
]


@pytest.mark.parametrize("name", _HOSTILE_NAMES)
def test_a_manifest_path_with_control_characters_is_refused(tmp_path: Path, name: str) -> None:
    """A file name is written into generated headers and diagnostics: one holding a line break
    could forge a line of either. The load stage refuses it, naming it escaped."""
    root = make_project(tmp_path, {"gateway.yaml": _TINY_GATEWAY, name: _TINY_NATIVE})
    result = api.build(options(root))
    assert [(d.code, d.span.file) for d in result.diagnostics] == [("GEN001", f"manifests/{name}")]
    assert "control character" in result.diagnostics[0].message
    assert not (root / "generated").exists()
    for fmt in ("text", "github", "json"):
        proc = _gen("build", "--project", str(root), "--error-format", fmt)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = (proc.stdout + proc.stderr).splitlines()
        assert not any(line.startswith(("print(", "import os", "y.yaml")) for line in lines)
        assert not UNSAFE_IN_NAMES.search("".join(lines)), lines
    text = _gen("build", "--project", str(root)).stderr
    assert text.startswith(f"manifests/{printable(name)}:1:1: error[GEN001]")


def test_manifest_text_quoted_in_a_message_is_shown_escaped(tmp_path: Path) -> None:
    """Messages quote manifest text: a key holding a line break and a terminal escape, in a
    diagnostic's path (GEN108 now, which refuses the escape), stays on its diagnostic's line in
    text and GitHub output, while JSON gives the key as it is."""
    key = "zz\nyy\x1b[2J\u2028"
    native = _TINY_NATIVE.replace(
        "properties: {calls: {type: integer}}",
        "properties: {" + json.dumps(key) + ": {type: strin}}",
    )
    root = make_project(tmp_path, {"gateway.yaml": _TINY_GATEWAY, "native.yaml": native})
    proc = _gen("validate", "--project", str(root))
    assert proc.returncode == 1
    first, hint, summary = proc.stderr.splitlines()
    assert first.startswith("manifests/native.yaml:9:")
    assert "[GEN108] tools/0/output/properties/zz\\nyy\\x1b[2J\\u2028: the name " in first
    assert hint.startswith("  hint: remove it:") and summary == "1 error, 0 warnings"
    github = _gen("validate", "--project", str(root), "--error-format", "github").stderr
    assert len(github.splitlines()) == 1 and not UNSAFE_IN_NAMES.search(github.rstrip("\n"))
    found = json.loads(_gen("validate", "--project", str(root), "--error-format", "json").stdout)
    assert f"properties/{key}: the name" in found[0]["message"]


def test_a_hostile_path_that_got_past_the_loader_stays_a_comment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the loader's check switched off, every generated header still
    shows the path escaped, on one line, and the modules hold no code from it."""
    monkeypatch.setattr(load, "UNSAFE_IN_NAMES", re.compile("(?!)"))
    name = "x\nprint('PWNED') #\u2028y\x7f.yaml"
    root = make_project(tmp_path, {"gateway.yaml": _TINY_GATEWAY, name: _TINY_NATIVE})
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    headers = 0
    for rel, text in result.files.items():
        assert not UNSAFE_IN_NAMES.search(text.replace("\n", "")), rel
        if printable(name) not in text:
            continue
        headers += 1
        assert text.splitlines()[0].startswith("# Generated by mcpforge from manifests/x\\n")
        calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)]
        assert "print" not in {n.id for n in calls}, rel
    assert headers >= 3  # the native group's models, catalog and client methods


# Lists the tools of a built package (argv[1]) through the SDK's in-memory client, for a tenant
# with every connector connected: name -> annotations as tools/list sends them.
_LIST_TOOLS = """
import asyncio, json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from mcp import Client
from fastn_gateway.catalog import GATEWAY
from fastn_gateway.runtime.server import GatewayRuntime

async def main():
    db = tempfile.mkdtemp() + "/gateway.db"
    runtime = GatewayRuntime.open(GATEWAY, "sqlite:///" + db, environ={})
    tenant = runtime.store.create_tenant("acme")
    runtime.store.connect(tenant.id, "notes", {"token": "t"})
    key = runtime.store.issue_key(tenant.id, scopes=["read", "write"]).token
    async with Client(runtime.build_server(api_key=key)) as c:
        tools = (await c.list_tools()).tools
    print(json.dumps({t.name: t.annotations.model_dump(by_alias=True) for t in tools}))

asyncio.run(main())
"""


def test_a_hint_the_manifest_leaves_out_is_served_as_mcps_default(tmp_path: Path) -> None:
    """MCP reads a missing destructiveHint or openWorldHint as true: a connector tool that
    did not say open_world was listed as closed-world, a write tool without annotations as
    non-destructive. Now a hint left out is MCP's default (destructive false only for a
    read-only tool), in tools/list as in tools.json."""
    root = make_project(tmp_path, copy_defaults=True)
    capability = """
      - name: {name}
        description: {name} a note of the workspace's notes app.
        scope: {scope}
        {annotations}
        input: {{type: object, additionalProperties: false, properties: {{}}}}
        output: {{type: object, properties: {{}}}}
        http: {{method: {method}, path: /notes}}
    """
    (root / "manifests" / "connectors" / "notes.yaml").write_text(
        textwrap.dedent("""\
        version: 1
        kind: connector
        name: notes
        title: Notes
        description: A notes app.
        base_url: https://notes.example
        auth: {type: bearer, token_field: token, fields: [{name: token}]}
        capabilities:
        """)
        + "".join(
            textwrap.indent(textwrap.dedent(capability).format(**c), "  ")
            for c in (
                {"name": "list", "scope": "read", "method": "GET", "annotations": ""},
                {
                    "name": "read",
                    "scope": "read",
                    "method": "GET",
                    "annotations": "annotations: {read_only: true}",
                },
                {"name": "wipe", "scope": "write", "method": "DELETE", "annotations": ""},
                {
                    "name": "tidy",
                    "scope": "write",
                    "method": "POST",
                    "annotations": "annotations: {destructive: false, open_world: false}",
                },
            )
        ),
        encoding="utf-8",
    )
    result = api.build(options(root))
    assert result.ok, result.diagnostics
    out = root / "generated"
    proc = subprocess.run(
        [sys.executable, "-c", _LIST_TOOLS, str(out)], capture_output=True, text=True, check=True
    )
    listed = json.loads(proc.stdout)
    shipped = json.loads((out / "tools.json").read_text(encoding="utf-8"))["tools"]
    in_json = {t["name"]: t["annotations"] for t in shipped}
    hints = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
    expected = {
        "notes_list": (False, True, False, True),
        "notes_read": (True, False, False, True),
        "notes_wipe": (False, True, False, True),
        "notes_tidy": (False, False, False, False),
    }
    for name, values in expected.items():
        assert tuple(listed[name][h] for h in hints) == values, name
        assert tuple(in_json[name][h] for h in hints) == values, name


def test_control_characters_in_manifest_text_are_located_errors(tmp_path: Path) -> None:
    """A double-quoted YAML scalar writes any control character as an escape: a title, a
    description or a summary holding NUL, BEL or ESC built, and they reached README.md,
    TOOLS.md and the terminal raw (git read the files as binary). Each key or value holding one
    is GEN108 at it; tabs, line breaks and a pattern's escape (backslash and text) are fine."""
    root = make_project(tmp_path, copy_defaults=True)
    slack = root / "manifests" / "connectors" / "slack.yaml"
    gateway = root / "manifests" / "gateway.yaml"
    edits = {
        slack: [
            ("title: Slack\n", 'title: "Sl\\0a\\x1b[31mck"\n'),
            (
                "description: Team chat. Send messages and read channels of the workspace's Slack.",
                'description: "Team chat.\\tSends \\x1b]0;t\\x07 messages,\\n reads \\x85 '
                'channels."',
            ),
        ],
        gateway: [
            (
                "  summary: Multi-tenant MCP gateway for connected apps, generated by mcpforge.",
                '  summary: "Multi-tenant\\0 gateway\\r\\x7f."',
            )
        ],
    }
    for path, pairs in edits.items():
        text = path.read_text(encoding="utf-8")
        for old, new in pairs:
            assert old in text, old
            text = text.replace(old, new, 1)
        path.write_text(text, encoding="utf-8")
    result = api.build(options(root))
    assert not result.ok and not (root / "generated").exists()
    assert [(str(d.span), d.code, d.message) for d in result.diagnostics] == [
        (
            "manifests/connectors/slack.yaml:5:8",
            "GEN108",
            r"title: the text 'Sl\x00a\x1b[31mck' holds the control characters \x00 (NUL), "
            r"\x1b (ESC)",
        ),
        (
            "manifests/connectors/slack.yaml:6:14",
            "GEN108",
            r"description: the text 'Team chat.\tSends \x1b]0;t\x07 messages,\n reads \x85 "
            r"channels.' holds the control characters \x07 (BEL), \x1b (ESC), \x85",
        ),
        (
            "manifests/gateway.yaml:8:12",
            "GEN108",
            r"package/summary: the text 'Multi-tenant\x00 gateway\r\x7f.' holds the control "
            r"characters \x00 (NUL), \r (CR), \x7f (DEL)",
        ),
    ]


def test_control_characters_are_refused_in_names_and_schema_values_too(tmp_path: Path) -> None:
    """Property names and a schema's values (enum, pattern) are manifest text as well; a
    pattern that matches a control character by its escape builds."""
    root = make_project(tmp_path, copy_defaults=True)
    slack = root / "manifests" / "connectors" / "slack.yaml"
    text = slack.read_text(encoding="utf-8")
    old = "        channel: {type: string, minLength: 1"
    assert old in text
    slack.write_text(
        text.replace(
            old,
            '        "ch\\ean": {type: string, enum: [a, "b\\x1f"], pattern: "^[^\\x00]"}\n'
            '        plain: {type: string, pattern: "^[^\\\\x00-\\\\x1f]*$"}\n' + old,
            1,
        ),
        encoding="utf-8",
    )
    found = [
        (d.code, d.message.split(":")[0])
        for d in api.compile_manifests(options(root)).diagnostics
        if d.code == "GEN108"
    ]
    assert found == [
        ("GEN108", "capabilities/0/input/properties/ch\x1ban"),
        ("GEN108", "capabilities/0/input/properties/ch\x1ban/enum/1"),
        ("GEN108", "capabilities/0/input/properties/ch\x1ban/pattern"),
    ]
