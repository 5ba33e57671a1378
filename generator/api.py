"""The generator's API: what the CLI and the tests call.

    load -> validate -> compile -> emit -> write (or check)

Each function returns diagnostics as data; nothing here prints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import ir
from .compile import ConnectorUnit, compile_project, connector_context
from .diagnostics import Diagnostic, Span, error, has_errors, normalise
from .emit import Cache, FileSet, ModelsWorkers, emit, generator_fingerprint
from .load import (
    Loaded,
    declared_kind,
    discover,
    display_path,
    load_files,
    load_text,
    source_digest,
)
from .runtime.catalog import GatewaySpec
from .validate import validate_one
from .write import JOURNAL, OWNED_LIST, Plan, diff, interrupted, locked, plan, write

CACHE_DIR = ".mcpforge-cache"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    root: Path  # paths in diagnostics are relative to it
    manifests: Path
    out: Path
    cache: bool = True
    jobs: int | None = None

    @classmethod
    def for_project(
        cls,
        root: Path,
        *,
        manifests: Path | None = None,
        out: Path | None = None,
        cache: bool = True,
        jobs: int | None = None,
    ) -> Options:
        root = root.resolve()
        return cls(
            root=root,
            manifests=(manifests or root / "manifests").resolve(),
            out=(out or root / "generated").resolve(),
            cache=cache,
            jobs=jobs,
        )


@dataclass(frozen=True, slots=True)
class CompileResult:
    project: ir.Project | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.project is not None and not has_errors(self.diagnostics)


@dataclass(frozen=True, slots=True)
class BuildResult:
    diagnostics: tuple[Diagnostic, ...]
    plan: Plan | None = None
    diff: str = ""
    files: FileSet = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


def relative(root: Path, path: Path) -> str:
    """How diagnostics and messages name `path`: relative to the project root when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass(frozen=True, slots=True)
class _CachedUnit:
    context: str  # `connector_context` it was compiled in
    unit: ConnectorUnit


def _unit_key(rel: str, sha256: str) -> str:
    return hashlib.sha256(f"{generator_fingerprint()}\0{rel}\0{sha256}".encode()).hexdigest()


def no_manifests(options: Options) -> Diagnostic:
    """GEN005, saying whether the directory is missing or only holds no manifest."""
    where = relative(options.root, options.manifests)
    if not options.manifests.is_dir():
        what = "is not a directory" if options.manifests.exists() else "does not exist"
        return error(
            "GEN005",
            Span(file=where),
            f"the manifest directory {options.manifests} {what}",
            "run gen from the project's root (the directory holding manifests/), or pass "
            "--project or --manifests",
        )
    return error("GEN005", Span(file=where), f"no *.yaml manifests under {where}")


def compile_manifests(
    options: Options, *, cache: Cache | None = None, overlay: Mapping[Path, bytes] | None = None
) -> CompileResult:
    """load -> validate -> compile. With a `cache` (builds), connector manifests whose bytes
    compiled cleanly before in the same context are taken from the cache as compiled units;
    results and diagnostics are the same as without it. `overlay`: manifests as if the files
    held these bytes (`gen new` compiles a file before it writes it)."""
    files, found = discover(options.root, options.manifests)
    if overlay:
        files = sorted({*files, *overlay}, key=lambda p: display_path(p, options.root))
    if not files and not found:
        return CompileResult(None, (no_manifests(options),))
    cache = cache or Cache(None)
    pending: list[Path] = []
    candidates: list[tuple[_CachedUnit, str, bytes]] = []  # (entry, rel path, bytes)
    if cache.directory is not None:
        for path in files:
            rel = relative(options.root, path)
            try:
                raw = overlay[path] if overlay and path in overlay else path.read_bytes()
            except OSError:
                pending.append(path)  # load_files reports it
                continue
            entry = cache.load("unit", _unit_key(rel, source_digest(raw)), _CachedUnit)
            if entry is not None and entry.unit.path == rel:
                candidates.append((entry, rel, raw))
            else:
                pending.append(path)
    else:
        pending = files
    docs, diags, unloaded = load_files(options.root, pending, overlay)
    diags.extend(found)
    valid: list[Loaded] = []
    # a directory that could not be searched may hold manifests of any kind (None)
    failed: list[Loaded | str | None] = [*unloaded, *(None for _d in found)]

    def check(new_docs: list[Loaded]) -> None:
        for doc in new_docs:
            problems = validate_one(doc)
            diags.extend(problems)
            if has_errors(problems):
                failed.append(doc)
            else:
                valid.append(doc)

    check(docs)
    units: list[ConnectorUnit] = []
    if candidates:
        context = connector_context(valid)
        stale: list[Loaded] = []
        for entry, rel, raw in candidates:
            if entry.context == context:
                units.append(entry.unit)
                continue
            doc, problems = load_text(rel, raw)
            diags.extend(problems)
            if doc is not None:
                stale.append(doc)
            else:
                failed.append(declared_kind(raw))
        check(stale)
        valid.sort(key=lambda d: d.path)
    project, compile_diags = compile_project(valid, failed=failed, units=units)
    diags.extend(compile_diags)
    all_diags = _without_echoes(diags)
    if cache.directory is not None and project is not None and not all_diags:
        _store_units(cache, project, valid)
    return CompileResult(project if not has_errors(all_diags) else None, all_diags)


# What later stages say about a value itself (its type, allowed values, format, range, or its
# validity as a schema keyword's value), as opposed to the structure around it.
_ABOUT_THE_VALUE = frozenset({"GEN103", "GEN104", "GEN105", "GEN106", "GEN203"})


def _without_echoes(diags: list[Diagnostic]) -> tuple[Diagnostic, ...]:
    """`diags` without what later stages said about a value the loader could not read (a
    number too large for JSON, a scalar its tag refuses): the loader reported it (GEN002) and
    left its text in its place, which a schema then refuses again as the wrong type. What
    they say about the structure there (a required property missing) is kept."""
    unreadable = {d.span for d in diags if d.code == "GEN002"}
    return normalise(d for d in diags if d.code not in _ABOUT_THE_VALUE or d.span not in unreadable)


def _store_units(cache: Cache, project: ir.Project, docs: list[Loaded]) -> None:
    """Cache the connectors of a clean compile that were compiled from their manifests."""
    fresh = {d.data["name"]: d for d in docs if d.data["kind"] == "connector"}
    if not fresh:
        return
    context = connector_context(docs)
    by_connector: dict[str, list[ir.Tool]] = {}
    for t in project.tools:
        if t.connector is not None and t.connector in fresh:
            by_connector.setdefault(t.connector, []).append(t)
    for c in project.connectors:
        doc = fresh.get(c.name)
        if doc is None or doc.path != c.source:
            continue
        unit = ConnectorUnit(
            source=ir.Source(path=doc.path, sha256=doc.sha256),
            name=c.name,
            connector=c,
            tools=tuple(by_connector.get(c.name, ())),
        )
        cache.store("unit", _unit_key(doc.path, doc.sha256), _CachedUnit(context, unit))


def generate(
    options: Options, *, workers: ModelsWorkers | None = None, check: bool = False
) -> tuple[CompileResult, FileSet, tuple[Diagnostic, ...]]:
    """Compile and emit. Models take datamodel-code-generator, whose start-up alone is about
    half a second: `ModelsWorkers` pay it on another core while this process compiles. Those
    passed (the command line starts them first thing) or started here are closed (killed if
    nothing needed them) before this returns. With `check`, the cache is only read."""
    cache = Cache(options.root / CACHE_DIR if options.cache else None, read_only=check)
    if workers is None:
        workers = ModelsWorkers.start(options.jobs)
    try:
        result = compile_manifests(options, cache=cache)
        if not result.ok or result.project is None:
            return result, {}, result.diagnostics
        files, emit_diags = emit(result.project, cache=cache, jobs=options.jobs, workers=workers)
    finally:
        if workers is not None:
            workers.close()
    diags = normalise((*result.diagnostics, *emit_diags))
    if not has_errors(diags):
        cache.sweep()
    return result, files, diags


_INTERRUPTED = (
    "a build was killed while swapping its files in, so the output mixes old and new files; "
    "`gen build` puts the previous output back first, then writes"
)


def _unusable(options: Options, exc: OSError, verb: str) -> Diagnostic:
    """GEN304, at the one file the error names (the lock, the list of owned files...), else
    at the output directory with the whole error (a rename names two files)."""
    if isinstance(exc.filename, str) and exc.filename2 is None and exc.strerror:
        where = relative(options.root, Path(exc.filename))
        return error("GEN304", Span(file=where), f"cannot {verb} output: {where}: {exc.strerror}")
    where = relative(options.root, options.out)
    return error("GEN304", Span(file=where), f"cannot {verb} output: {exc}")


def _in_the_way(options: Options, the_plan: Plan) -> tuple[Diagnostic, ...]:
    """GEN307 for each file the build would replace that is not the generator's."""
    out = relative(options.root, options.out)
    return tuple(
        error(
            "GEN307",
            Span(file=f"{out}/{rel}"),
            f"{out}/{rel} is not the generator's (not in {out}/{OWNED_LIST}, no 'Generated "
            "by mcpforge' header), and gen build would replace it with a file it generates",
            f"move it out of {out}/ or delete it, then run gen build again; until then gen "
            "build writes nothing",
        )
        for rel in the_plan.foreign
    )


def _leading_out(options: Options, the_plan: Plan) -> tuple[Diagnostic, ...]:
    """GEN308 for each link in the output directory that the build would write through."""
    out = relative(options.root, options.out)
    diags = []
    for found in the_plan.outside:
        paths = [f"{out}/{rel}" for rel in found.paths]
        named = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        diags.append(
            error(
                "GEN308",
                Span(file=f"{out}/{found.link}"),
                f"{out}/{found.link} is a symbolic link to {found.target}, outside {out}/, "
                f"and gen build would write or remove {named} through it",
                f"replace the link with a directory, or delete it, then run gen build again; "
                f"gen build writes and removes files only inside {out}/, and until then "
                "writes nothing",
            )
        )
    return tuple(diags)


def _refused(options: Options, the_plan: Plan) -> tuple[Diagnostic, ...]:
    return (*_in_the_way(options, the_plan), *_leading_out(options, the_plan))


def build(
    options: Options, *, check: bool = False, workers: ModelsWorkers | None = None
) -> BuildResult:
    """Compile and write `generated/` (or, with check, compare and write nothing). A file of
    someone else's where the build would write one is GEN307, a link that would take a write
    or a removal out of the output directory GEN308, and nothing is written."""
    _result, files, diags = generate(options, workers=workers, check=check)
    if has_errors(diags):
        return BuildResult(diags)  # all-or-nothing: a failed build writes nothing
    if check:
        try:
            with locked(options.out, shared=True):  # not halfway through another build's write
                the_plan = plan(options.out, files)
                stopped = interrupted(options.out)
        except OSError as exc:
            return BuildResult((*diags, _unusable(options, exc, "check")))
        if stopped:
            where = Span(file=f"{relative(options.root, options.out)}/{JOURNAL}")
            diags = (*diags, error("GEN306", where, _INTERRUPTED))
        if the_plan.foreign or the_plan.outside:  # not drift `gen build` fixes: it refuses
            return BuildResult(normalise((*diags, *_refused(options, the_plan))))
        return BuildResult(diags, the_plan, diff(options.out, files, the_plan), files)
    try:  # `write` plans for itself, after putting back what a killed build left
        the_plan = write(options.out, files)
    except OSError as exc:
        return BuildResult((*diags, _unusable(options, exc, "write")))
    if the_plan.foreign or the_plan.outside:  # `write` wrote nothing
        return BuildResult(normalise((*diags, *_refused(options, the_plan))))
    return BuildResult(diags, the_plan, "", files)


def ir_data(
    options: Options, *, spans: bool = False
) -> tuple[object | None, tuple[Diagnostic, ...]]:
    result = compile_manifests(options)
    if result.project is None:
        return None, result.diagnostics
    return ir.to_data(result.project, spans=spans), result.diagnostics


def gateway_spec(options: Options) -> tuple[GatewaySpec | None, tuple[Diagnostic, ...]]:
    """The compiled catalog as the runtime's `GatewaySpec`, without writing anything."""
    from .emit.catalog import runtime_gateway

    result = compile_manifests(options)
    if result.project is None:
        return None, result.diagnostics
    return runtime_gateway(result.project), result.diagnostics
