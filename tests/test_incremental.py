"""The build's speed-ups change nothing but speed: builds from the cache equal builds without
it, cached connector units give the same IR and diagnostics, the metaschema pre-check never
accepts what the metaschema rejects, and lazily completed source maps give the same spans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema_specifications
import pytest
import yaml
from helpers import ROOT, make_project, tree

from generator import api, datamodel, emit, ir, write
from generator.compile import _META, _META_KEYWORDS, _meta_valid
from generator.load import SPAN_DEPTH, _Builder, _Loader, load_text
from generator.names import ClassName


def _cached(root: Path) -> api.Options:
    return api.Options.for_project(root, cache=True)


def _compile(root: Path, *, cache: bool) -> api.CompileResult:
    options = api.Options.for_project(root, cache=False)
    return api.compile_manifests(options, cache=emit.Cache(root / api.CACHE_DIR if cache else None))


def _same_compile(root: Path) -> api.CompileResult:
    """Compile with the cache (filling it) and without; both must agree exactly."""
    with_cache = _compile(root, cache=True)
    without = _compile(root, cache=False)
    assert with_cache.diagnostics == without.diagnostics
    assert with_cache.project == without.project
    if without.project is not None:
        assert with_cache.project is not None
        assert ir.to_data(with_cache.project, spans=True) == ir.to_data(without.project, spans=True)
    return with_cache


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_builds_from_the_cache_equal_builds_without_it(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(_cached(root)).ok  # cold: fills the cache
    assert api.build(_cached(root)).ok  # everything from the cache
    slack = root / "manifests" / "connectors" / "slack.yaml"
    _edit(slack, "Post a message to a Slack channel", "Post one message to a Slack channel")
    result = api.build(_cached(root))
    assert result.ok and result.plan is not None
    assert any("slack" in p for p in result.plan.changed)
    fresh = api.build(api.Options.for_project(root, out=tmp_path / "fresh", cache=False))
    assert fresh.ok
    assert tree(root / "generated") == tree(tmp_path / "fresh")


def test_cached_units_give_the_same_ir_and_diagnostics(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    manifests = root / "manifests"
    assert _same_compile(root).ok
    assert list((root / api.CACHE_DIR / "unit").rglob("*.pickle"))
    assert _same_compile(root).ok  # connectors now come from the cache

    # a shared type changes: connectors using it are compiled again
    _edit(
        manifests / "types.yaml",
        "  ShopifyCustomer:\n    type: object\n",
        "  ShopifyCustomer:\n    type: object\n    description: A customer of the shop.\n",
    )
    assert _same_compile(root).ok
    # an entity type loses a field an (unchanged, cached) connector maps
    gateway = (manifests / "gateway.yaml").read_text(encoding="utf-8")
    _edit(manifests / "gateway.yaml", ", customer_email: string}", "}")
    assert [d.code for d in _same_compile(root).diagnostics] == ["GEN212"]
    (manifests / "gateway.yaml").write_text(gateway, encoding="utf-8")
    assert _same_compile(root).ok

    # a new file declares the name of a cached connector, and sorts before it
    text = (manifests / "connectors" / "slack.yaml").read_text(encoding="utf-8")
    (manifests / "connectors" / "a_slack.yaml").write_text(text, encoding="utf-8")
    codes = {d.code for d in _same_compile(root).diagnostics}
    assert "GEN211" in codes
    (manifests / "connectors" / "a_slack.yaml").unlink()

    # a broken file next to cached ones: the same located diagnostics
    _edit(manifests / "connectors" / "github.yaml", "scope: write", "scope: admin")
    assert [d.code for d in _same_compile(root).diagnostics] == ["GEN104"]
    _edit(manifests / "connectors" / "github.yaml", "scope: admin", "scope: write")

    # a shared type only a cached connector uses, valid only inside its tool's schema (it
    # refers to the tool's own $defs): still used, so not checked on its own
    with (manifests / "types.yaml").open("a", encoding="utf-8") as fh:
        fh.write(
            '  Labelled:\n    type: object\n    properties: {label: {$ref: "#/$defs/Label"}}\n'
        )
    _edit(
        manifests / "connectors" / "github.yaml",
        "        assignees: {type: array, items: {type: string}}\n",
        "        assignees: {type: array, items: {type: string}}\n"
        '        extra: {$ref: "#/types/Labelled"}\n'
        "      $defs: {Label: {type: string}}\n",
    )
    _edit(
        manifests / "connectors" / "github.yaml",
        'assignees: "{assignees}"',
        'assignees: "{assignees}", extra: "{extra}"',
    )
    assert _same_compile(root).ok
    assert _same_compile(root).ok  # github from the cache

    # no gateway: the error points at the first manifest, cached or not
    (manifests / "gateway.yaml").unlink()
    assert {d.code for d in _same_compile(root).diagnostics} >= {"GEN210"}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_building_groups_in_worker_processes_gives_the_same_files(
    monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    result = api.compile_manifests(api.Options.for_project(ROOT, cache=False))
    assert result.project is not None
    serial, diags = emit.emit(result.project, jobs=1)
    assert not diags
    monkeypatch.setattr(emit, "START_METHOD", start_method)
    monkeypatch.setattr(emit, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(emit, "BATCH_TOOLS", 4)  # several batches: this process takes some
    parallel, diags = emit.emit(result.project, jobs=2)
    assert not diags
    assert parallel == serial


def models_worker_scenario() -> None:
    """Run by the test below in a fresh interpreter: `ModelsWorkers` fork, and forking is safe
    only without other threads (which earlier tests of a session may leave behind)."""
    result = api.compile_manifests(api.Options.for_project(ROOT, cache=False))
    assert result.project is not None
    serial, diags = emit.emit(result.project, jobs=1)
    assert not diags
    workers = emit.ModelsWorkers.start(jobs=2)
    assert workers is not None
    try:
        assert emit.emit(result.project, jobs=2, workers=workers) == (serial, [])
        emit.BATCH_TOOLS = 2  # many batches: each worker takes several
        assert emit.emit(result.project, jobs=2, workers=workers) == (serial, [])
        # a failing group: the same located error as when built here
        broken = replace(
            result.project,
            tools=tuple(
                replace(t, output_model=ClassName("Missing"))
                if t.name == "slack_send_message"
                else t
                for t in result.project.tools
            ),
        )
        here = emit.emit(broken, jobs=1)
        there = emit.emit(broken, jobs=2, workers=workers)
        assert here == there and [d.code for d in there[1]] == ["GEN301"]
    finally:
        workers.close()
    # one worker died: the other builds its share; both died: the groups are built here
    workers = emit.ModelsWorkers(2)
    try:
        for w in workers.workers:
            w.ready()
        assert workers.workers[1].pid is not None
        os.kill(workers.workers[1].pid, signal.SIGKILL)
        assert emit.emit(result.project, jobs=2, workers=workers) == (serial, [])
        workers.kill()
        assert emit.emit(result.project, jobs=2, workers=workers) == (serial, [])
    finally:
        workers.close()
    # datamodel-code-generator failing on a group: the same located error as when built here
    real = datamodel.generate

    def failing(payload: dict[str, Any], header: str | None = None, **kw: Any) -> str:
        if any(t["name"] == "shopify_list_orders" for t in payload["tools"]):
            raise ValueError("unsupported schema\nsecond line")
        return real(payload, header, **kw)

    datamodel.generate = failing  # type: ignore[assignment]  # the workers fork with it
    workers = emit.ModelsWorkers(2)
    try:
        here = emit.emit(result.project, jobs=1)
        there = emit.emit(result.project, jobs=2, workers=workers)
        assert here == there and [d.code for d in there[1]] == ["GEN301"]
        assert there[1][0].message.endswith("ValueError: unsupported schema")
    finally:
        workers.close()
        datamodel.generate = real  # type: ignore[assignment]


def test_groups_built_by_the_models_worker_give_the_same_files() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import test_incremental as t; t.models_worker_scenario()"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_cache_keeps_what_the_last_builds_used(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    slack = root / "manifests" / "connectors" / "slack.yaml"
    cache_dir = root / api.CACHE_DIR
    original = slack.read_text(encoding="utf-8")

    def entries(kind: str) -> set[str]:
        return {p.stem for p in (cache_dir / kind).rglob("*.pickle")}

    def build(variant: int) -> tuple[set[str], set[str]]:
        slack.write_text(
            original.replace("Post a message", f"Post a message ({variant})", 1), encoding="utf-8"
        )
        before = entries("group"), entries("unit")
        assert api.build(_cached(root)).ok
        return entries("group") - before[0], entries("unit") - before[1]

    build(0)
    first_groups, first_units = build(1)  # slack's entries only
    assert len(first_groups) == 1 and len(first_units) == 1
    build(2)
    build(3)
    assert first_groups <= entries("group") and first_units <= entries("unit")
    assert build(1) == (set(), set())  # back to a recent variant: everything from the cache
    build(4)
    build(5)
    build(6)  # variant 1 was last used three builds ago
    assert not first_groups & entries("group")
    assert not first_units & entries("unit")
    assert build(6) == (set(), set())


def test_damaged_cache_entries_are_misses(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert _same_compile(root).ok
    entries = list((root / api.CACHE_DIR).rglob("*.pickle"))
    assert entries
    for i, entry in enumerate(entries):
        entry.write_bytes(b"not a pickle" if i % 2 else b"\x80\x05K\x01.")  # junk, an int
    assert _same_compile(root).ok


def test_an_entry_damaged_in_place_is_a_miss_not_wrong_output(tmp_path: Path) -> None:
    """One byte changed inside a cached pickle can still load, as a wrong value (the text of a
    generated file, a compiled connector): each entry's checksum makes it a miss."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(_cached(root)).ok
    entries = sorted((root / api.CACHE_DIR).rglob("*.pickle"))
    assert {e.relative_to(root / api.CACHE_DIR).parts[0] for e in entries} >= {
        "group",
        "project-files",
        "unit",
    }
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0x01  # inside the pickle
        entry.write_bytes(bytes(data))
    assert api.build(_cached(root)).ok
    fresh = api.build(api.Options.for_project(root, out=tmp_path / "fresh", cache=False))
    assert fresh.ok and tree(root / "generated") == tree(tmp_path / "fresh")


def test_check_reads_the_cache_and_writes_none(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(api.Options.for_project(root, cache=False)).ok
    checked = api.build(_cached(root), check=True)
    assert checked.ok and checked.plan is not None and not checked.plan.changed
    assert not (root / api.CACHE_DIR).exists()  # a first check fills nothing
    lock = root / f".generated{write.LOCK}"
    lock.unlink()  # left by the build
    assert api.build(_cached(root), check=True).ok and not lock.exists()  # nor locks anything
    assert api.build(_cached(root)).ok  # fills it
    before = {p: p.stat().st_mtime_ns for p in (root / api.CACHE_DIR).rglob("*")}
    assert api.build(_cached(root), check=True).ok
    assert {p: p.stat().st_mtime_ns for p in (root / api.CACHE_DIR).rglob("*")} == before


# ---------------------------------------------------------------------------- metaschema


def _metaschema_keywords() -> set[str]:
    base = "https://json-schema.org/draft/2020-12/"
    uris = [
        f"{base}schema",
        *(
            f"{base}meta/{v}"
            for v in (
                "core",
                "applicator",
                "unevaluated",
                "validation",
                "meta-data",
                "format-annotation",
                "content",
            )
        ),
    ]
    names: set[str] = set()
    for uri in uris:
        names |= set(jsonschema_specifications.REGISTRY.contents(uri).get("properties", {}))
    return names


def test_the_precheck_transcribes_every_metaschema_keyword() -> None:
    assert set(_META_KEYWORDS) == _metaschema_keywords()


def _default_schemas() -> list[Any]:
    schemas: list[Any] = []
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for tool in [*data.get("tools", []), *data.get("capabilities", [])]:
            schemas += [tool["input"], tool["output"]]
        schemas += list(data.get("types", {}).values())
    return schemas


_BAD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    1.0,
    "",
    "strin",
    [],
    ["string", "string"],
    ["a", 1],
    {},
    {"type": "bogus"},
    [{}],
    [{"type": 3}],
    "#x",
    {"a": ["x", "x"]},
    {"a": {"type": 1}},
]


def _variants(schema: Any) -> list[Any]:
    """The schema with each metaschema keyword set, in turn, to each odd value, at the root and
    inside its first property."""
    out = []
    keywords = sorted(_META_KEYWORDS)
    for value in _BAD_VALUES:
        for keyword in keywords:
            out.append({**schema, keyword: value})
            props = schema.get("properties") if isinstance(schema, dict) else None
            if props:
                first = next(iter(props))
                if isinstance(props[first], dict):
                    out.append(
                        {**schema, "properties": {**props, first: {**props[first], keyword: value}}}
                    )
    return out


def test_the_precheck_accepts_the_default_schemas() -> None:
    for schema in _default_schemas():
        assert _meta_valid(schema) and _META.is_valid(schema)


def test_the_precheck_never_accepts_an_invalid_schema() -> None:
    small = sorted(_default_schemas(), key=lambda s: len(json.dumps(s)))
    bases = [{"type": "object", "properties": {"a": {"type": "string"}}}, small[0], small[10]]
    checked = 0
    for schema in bases:
        for variant in _variants(schema):
            if _meta_valid(variant):
                checked += 1
                assert _META.is_valid(variant), json.dumps(variant)[:500]
    assert checked > 100


# ---------------------------------------------------------------------------- source maps


def test_lazily_completed_source_maps_equal_full_ones() -> None:
    paths = sorted(
        [*(ROOT / "manifests").rglob("*.yaml"), *(ROOT / "tests" / "cases").rglob("*.yaml")]
    )
    deep = 0
    for path in paths:
        raw = path.read_bytes()
        doc, diags = load_text(path.name, raw)
        if doc is None:
            continue
        full = _Builder(path.name, depth=None)
        assert full.build(yaml.compose(raw.decode(), Loader=_Loader), ()) == doc.data
        assert [str(d) for d in full.diagnostics] == [str(d) for d in diags]
        shallow = [p for p in full.value_spans if len(p) <= SPAN_DEPTH]
        for p in shallow:  # answered from the map recorded while loading
            assert doc.span(p) == full.value_spans[p]
            assert doc.span((*p, "missing", 0)) == full.value_spans[p]
        for p, span in full.key_spans.items():
            assert doc.key_span(p) == span
        for p, span in full.value_spans.items():
            deep += len(p) > SPAN_DEPTH
            assert doc.span(p) == span
    assert deep > 1000


def test_duplicate_keys_deep_inside_a_manifest_are_located() -> None:
    text = b"a:\n  b:\n    c:\n      d:\n        e: 1\n        e: 2\n        f: {x: 1, x: 2}\n"
    _doc, diags = load_text("m.yaml", text)
    assert [(d.code, str(d.span), d.message) for d in diags] == [
        ("GEN003", "m.yaml:6:9", "duplicate key 'e' (first defined at line 5)"),
        ("GEN003", "m.yaml:7:19", "duplicate key 'x' (first defined at line 7)"),
    ]


def test_the_cache_fingerprint_covers_every_runtime_module_the_generator_imports() -> None:
    """Editing a runtime module the compiler or an emitter imports (catalog, fastschema,
    templating, handler_names) changes what a build makes: the fingerprint that keys the cache
    must cover it, and every module those import in turn. (It covered handler_names only, so
    a cached tools.json kept an edited catalog.tool_meta's `_meta`.)"""
    import ast

    package = ROOT / "generator"
    runtime = package / "runtime"

    def runtime_imports(path: Path) -> set[str]:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split("."))
            if target.parent == runtime:  # from .runtime.catalog import x
                found.add(f"{target.name}.py")
            elif target == runtime:  # from ..runtime import catalog
                found.update(f"{a.name}.py" for a in node.names)
        return found

    wanted = set().union(
        *(runtime_imports(p) for p in package.rglob("*.py") if runtime not in p.parents)
    )
    assert wanted, "no runtime import found: the scan is wrong"
    pending = list(wanted)
    while pending:  # and what those import from the runtime
        for name in runtime_imports(runtime / pending.pop()) - wanted:
            wanted.add(name)
            pending.append(name)
    assert wanted <= emit._RUNTIME_IMPORTED_BY_GENERATOR
