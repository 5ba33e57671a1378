"""Stage 4, emit: `ir.Project` -> files in memory (path -> text), formatted.

Emitters are plain functions in two registries: per tool group (cached by the group's content
hash and built in parallel when there is much to build) and per project. Two emitters producing
one path is an error. Nothing here touches the output directory.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import hashlib
import json
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from .. import ir
from ..datamodel import Outcome
from ..diagnostics import Diagnostic, Span, error, printable
from ..models_worker import ModelsWorkers, Worker, WorkerGone, fork_is_safe
from ..names import PyIdent

FileSet = dict[str, str]


class EmitError(Exception):
    def __init__(self, code: str, span: Span | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.span = span
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, Span | None, str]]:  # crosses processes
        return (type(self), (self.code, self.span, self.message))


@dataclass(frozen=True, slots=True)
class Output:
    """Naming helpers shared by the emitters of one build."""

    import_name: str
    sources: tuple[ir.Source, ...]

    def pkg(self, rel: str) -> str:
        return f"{self.import_name}/{rel}"

    def sources_text(self, paths: Iterable[str]) -> str:
        """The manifests named in a generated header, each path shown with control characters
        escaped (the loader refuses such paths; this keeps any that got through inert)."""
        shas = {s.path: s.sha256 for s in self.sources}
        return ", ".join(f"{printable(p)} (sha256 {shas[p]})" for p in sorted(paths))

    def all_sources_text(self) -> str:
        digest = hashlib.sha256()
        for s in self.sources:
            digest.update(f"{s.path}\0{s.sha256}\n".encode())
        n = len(self.sources)
        return f"{n} manifest{'s' * (n != 1)} (combined sha256 {digest.hexdigest()})"


# A group emitter reads only the group, its tools, its connector and `out`: its output is
# cached under a key of exactly those (`_group_keys`), and worker processes run it on a project
# that holds only the groups they build.
GroupEmitter = Callable[[ir.Project, ir.Group, Output], FileSet]
ProjectEmitter = Callable[[ir.Project, Output], FileSet]


def _registries() -> tuple[Sequence[GroupEmitter], Sequence[ProjectEmitter]]:
    from . import artifacts, catalog, client, models, package

    group: list[GroupEmitter] = [
        client.shares_models(models.group_models),
        catalog.group_catalog,
        client.group_client,
    ]
    project: list[ProjectEmitter] = [
        catalog.catalog_index,
        client.client_module,
        package.package_files,
        package.runtime_files,
        package.tools_json,
        artifacts.artifacts,
    ]
    return group, project


def _merge(into: FileSet, files: FileSet, owner: str, owners: dict[str, str]) -> None:
    for path, text in files.items():
        if path in into:
            raise EmitError(
                "GEN303", None, f"{path} is produced by both {owners[path]} and {owner}"
            )
        into[path] = text
        owners[path] = owner


# ---------------------------------------------------------------------------- cache


# generator/runtime/ is copied into the output verbatim and never cached, so editing it must not
# invalidate the cache; the compiler and the emitters import these of its modules, though (what
# they define shapes compiled units and cached output: tools.json's `_meta`, the typed formats,
# templates' placeholders). A test keeps the list in step with the generator's imports.
_RUNTIME_IMPORTED_BY_GENERATOR = frozenset(
    {"catalog.py", "fastschema.py", "handler_names.py", "templating.py"}
)


@functools.cache
def generator_fingerprint() -> str:
    """Changes whenever the generator's code, templates or pinned tools change (computed once
    per process: a build runs with the code it started with)."""
    from ..render import templates_dir

    root = Path(__file__).resolve().parent.parent
    runtime = root / "runtime"
    digest = hashlib.sha256()
    files = sorted([*root.rglob("*.py"), *root.rglob("*.json"), *templates_dir().rglob("*")])
    for path in files:
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if path.parent == runtime and path.name not in _RUNTIME_IMPORTED_BY_GENERATOR:
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        from importlib.metadata import version

        for dist in ("datamodel-code-generator", "ruff", "pydantic"):
            digest.update(f"{dist}={version(dist)}\n".encode())
    except Exception:  # pragma: no cover - metadata always exists in an install
        pass
    return digest.hexdigest()


class Cache:
    """Content-addressed cache of a build's intermediate results (keyed by hashes, never by
    mtimes), in the project's `.mcpforge-cache/`. Kinds that keep one entry per input
    (compiled connectors, group files) are swept after each build: an entry none of the last
    `KEEP_BUILDS` builds used is removed, so switching between a few branches stays fast and
    the directory does not grow without bound."""

    KEEP_BUILDS = 3
    SWEPT = ("unit", "group")
    _RECENT = "recent-builds.json"
    # An entry: this line, the CRC-32 of the pickle (4 bytes, big-endian), the pickle. A pickle
    # damaged in place can still load, as a wrong value: the checksum makes it a miss instead.
    _MAGIC = b"mcpforge-cache 1\n"

    def __init__(self, directory: Path | None, *, read_only: bool = False) -> None:
        """`read_only`: entries are read but none is stored or removed (`gen build --check`)."""
        self.directory = directory
        self.read_only = read_only
        self.used: dict[str, set[str]] = {}

    # Values are pickled: a pickled string loads as a copy, where JSON text must be scanned
    # (50 MB of cached output at 5,000 tools: 0.3 s as JSON, a few ms pickled).

    def _path(self, kind: str, key: str) -> Path:
        assert self.directory is not None
        return self.directory / kind / key[:2] / f"{key}.pickle"

    def get(self, kind: str, key: str) -> FileSet | None:
        files = self.load(kind, key, dict)
        if files is None or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            return None
        return files

    def put(self, kind: str, key: str, files: FileSet, *, only: bool = False) -> None:
        self.store(kind, key, files, only=only)

    def load(self, kind: str, key: str, of_type: type) -> Any:
        """A pickled object stored by `store`, or None (missing, unreadable or not `of_type`).
        The cache lives in the project (the same trust as its manifests and code)."""
        if self.directory is None:
            return None
        start = len(self._MAGIC) + 4
        try:
            raw = self._path(kind, key).read_bytes()
            data = memoryview(raw)[start:]  # not copied: entries reach tens of megabytes
            if not raw.startswith(self._MAGIC) or zlib.crc32(data) != int.from_bytes(
                raw[start - 4 : start]
            ):
                return None  # damaged, or not an entry of this format
            value = pickle.loads(data)
        except Exception:  # unreadable: a miss
            return None
        if not isinstance(value, of_type):
            return None
        self.used.setdefault(kind, set()).add(key)
        return value

    def store(self, kind: str, key: str, value: object, *, only: bool = False) -> None:
        """Store `value`; with `only`, drop the other entries of this kind (entries that each
        build rewrites whole and only the next build can use: project files, fragments)."""
        if self.directory is None or self.read_only:
            return
        path = self._path(kind, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            with open(tmp, "wb") as fh:
                fh.writelines((self._MAGIC, zlib.crc32(data).to_bytes(4), data))
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError):
            return
        self.used.setdefault(kind, set()).add(key)
        if only:
            for old in (self.directory / kind).glob("*/*.pickle"):
                if old.stem != key:
                    try:
                        old.unlink(missing_ok=True)
                    except OSError:
                        return

    def sweep(self) -> None:
        """After a successful build: remember what it used and remove the entries of the swept
        kinds that none of the last `KEEP_BUILDS` builds used. Best effort: another build
        running at the same time can at worst lose entries (a miss), never see a wrong one."""
        if self.directory is None or self.read_only:
            return
        recent_path = self.directory / self._RECENT
        try:
            recent = json.loads(recent_path.read_text(encoding="utf-8"))
            if not isinstance(recent, list):
                recent = []
        except (OSError, ValueError):
            recent = []
        this = {kind: sorted(self.used.get(kind, ())) for kind in self.SWEPT}
        recent = [*recent[-(self.KEEP_BUILDS - 1) :], this]
        keep: dict[str, set[str]] = {kind: set() for kind in self.SWEPT}
        for build in recent:
            for kind in self.SWEPT:
                if isinstance(build, dict) and isinstance(build.get(kind), list):
                    keep[kind].update(k for k in build[kind] if isinstance(k, str))
        try:
            tmp = recent_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(recent), encoding="utf-8")
            os.replace(tmp, recent_path)
        except OSError:
            return  # not remembered: remove nothing
        for kind in self.SWEPT:
            for entry in (self.directory / kind).glob("*/*.pickle"):
                if entry.stem not in keep[kind]:
                    try:
                        entry.unlink(missing_ok=True)
                    except OSError:  # a read-only cache: it stays as it is
                        return


@functools.cache
def _ir_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _canonical(node: Any, parts: list[str]) -> None:
    """Append an unambiguous text of `node`: what `ir.to_data` holds (spans left out), with
    JSON values kept as their canonical text instead of being parsed and dumped again."""
    if isinstance(node, str):  # Json, names and plain strings
        parts.append(f"s{len(node)}:")
        parts.append(node)
    elif node is None or isinstance(node, bool | int | float):
        parts.append(f"{node!r};")
    elif isinstance(node, tuple | list):
        parts.append(f"[{len(node)}")
        for value in node:
            _canonical(value, parts)
        parts.append("]")
    elif is_dataclass(node) and not isinstance(node, type):
        parts.append(f"{type(node).__name__}{{")
        for name in _ir_fields(type(node)):
            value = getattr(node, name)
            if not isinstance(value, Span):
                parts.append(f"{name}=")
                _canonical(value, parts)
        parts.append("}")
    else:  # pragma: no cover - the IR holds nothing else
        raise TypeError(f"unexpected IR value {type(node).__name__}")


_T = TypeVar("_T")


class Fragments:
    """Pieces of project files derived from one tool (its JSON, its docs), reused from the
    previous build when the tool's group is unchanged, so editing one connector does not
    re-render every tool of a big catalog. A group's cache key covers its tools and its
    connector, so it identifies the piece without hashing the tool again. Only the pieces a
    build uses are kept."""

    def __init__(self, group_keys: dict[str, str], previous: dict[str, Any] | None) -> None:
        self.group_keys = group_keys
        self.previous = previous or {}
        self.used: dict[str, Any] = {}

    def get(self, kind: str, tool: ir.Tool, make: Callable[[], _T]) -> _T:
        key = f"{kind}\0{self.group_keys[tool.group]}\0{tool.name}"
        if key in self.used:
            return cast(_T, self.used[key])
        value = self.previous[key] if key in self.previous else make()
        self.used[key] = value
        return cast(_T, value)


_FRAGMENTS: contextvars.ContextVar[Fragments | None] = contextvars.ContextVar(
    "mcpforge_fragments", default=None
)


def fragment(kind: str, tool: ir.Tool, make: Callable[[], _T]) -> _T:
    """`make()`, or its result from the previous build when the tool's group (tools and
    connector) and the generator are unchanged. `make` may read only the tool and its
    connector. Project emitters call this for per-tool pieces."""
    memo = _FRAGMENTS.get()
    return make() if memo is None else memo.get(kind, tool, make)


def _group_keys(fingerprint: str, project: ir.Project, out: Output) -> dict[str, str]:
    """Cache key of each group: everything a group emitter reads (the group, its tools, its
    connector, the package name and the group's sources)."""
    tools = {t.name: t for t in project.tools}
    connectors = {PyIdent(c.name): c for c in project.connectors}
    keys: dict[str, str] = {}
    for group in project.groups:
        parts = [fingerprint, "\0", out.import_name, "\0", out.sources_text(group.sources), "\0"]
        _canonical(group, parts)
        _canonical(tuple(tools[n] for n in sorted(group.tools) if n in tools), parts)
        _canonical(connectors.get(group.name), parts)
        keys[group.name] = hashlib.sha256("".join(parts).encode()).hexdigest()
    return keys


# ---------------------------------------------------------------------------- emit


def _emit_groups(
    project: ir.Project,
    groups: Sequence[ir.Group],
    out: Output,
    models_outcomes: Mapping[str, Outcome] | None = None,
) -> list[FileSet]:
    """The groups' files (unformatted); `models_outcomes` holds datamodel-code-generator's
    outcome for groups whose models were generated elsewhere (the models workers)."""
    from . import models

    group_emitters, _ = _registries()
    results = []
    with models.provided(models_outcomes or {}):
        for group in groups:
            files: FileSet = {}
            for emitter in group_emitters:
                files.update(emitter(project, group, out))
            results.append(files)
    return results


def _format(files: FileSet) -> FileSet:
    from ..format import format_python

    py = {p: t for p, t in files.items() if p.endswith(".py")}
    return {**files, **format_python(py)}


def _format_groups(emitted: Sequence[FileSet]) -> list[FileSet]:
    """Format the files of many groups in one ruff run."""
    merged = {f"{i}\0{p}": t for i, files in enumerate(emitted) for p, t in files.items()}
    formatted = _format(merged)
    results: list[FileSet] = [{} for _ in emitted]
    for key, text in formatted.items():
        i, path = key.split("\0", 1)
        results[int(i)][path] = text
    return results


def _subproject(project: ir.Project, groups: Sequence[ir.Group]) -> ir.Project:
    """The project cut down to `groups` (what their emitters read), to send to a worker."""
    names = {n for g in groups for n in g.tools}
    wanted = {g.name for g in groups}
    return replace(
        project,
        groups=tuple(groups),
        tools=tuple(t for t in project.tools if t.name in names),
        connectors=tuple(c for c in project.connectors if PyIdent(c.name) in wanted),
    )


def _batches(groups: Sequence[ir.Group], tools: int) -> list[list[ir.Group]]:
    """Consecutive groups in batches of about `tools` tools."""
    batches: list[list[ir.Group]] = []
    current: list[ir.Group] = []
    size = 0
    for g in groups:
        current.append(g)
        size += len(g.tools)
        if size >= tools:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


PARALLEL_THRESHOLD = 150  # tools to rebuild before worker processes pay for themselves
BATCH_TOOLS = 20  # tools per task of the workers (small tasks balance the load)
# How workers start: None picks "fork" where it exists and this process runs a single thread
# (forking a threaded process can deadlock), else "spawn". Forked workers start at once with
# datamodel-code-generator warmed up; the build's objects they inherit are frozen for the
# collector so that their pages stay shared. Either way a worker receives only the groups it
# builds.
START_METHOD: str | None = None


def _start_method() -> str:
    if START_METHOD is not None:
        return START_METHOD
    return "fork" if fork_is_safe() else "spawn"


def _can_spawn() -> bool:
    """Spawned workers re-import the main module: not possible for a script read from stdin."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


_Result = list[FileSet] | BaseException | None  # a batch's files, its failure, or not yet


def _emit_here(
    project: ir.Project,
    batch: Sequence[ir.Group],
    out: Output,
    models_outcomes: Mapping[str, Outcome] | None = None,
) -> _Result:
    """A batch built in this process; a group's `EmitError` is kept as the batch's result."""
    try:
        return _emit_groups(project, batch, out, models_outcomes)
    except EmitError as exc:
        return exc


def _assemble(
    batches: Sequence[Sequence[ir.Group]], results: Sequence[_Result]
) -> dict[str, FileSet]:
    """The groups' files by name; the failure of the first failing batch in order is raised,
    as when every group is built in one process."""
    built: dict[str, FileSet] = {}
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        for g, files in zip(batch, result, strict=True):
            built[g.name] = files
    return built


class _Shared:
    """Groups built with `ModelsWorkers`. One thread per worker sends it the models requests of
    the next batch in the queue (datamodel-code-generator, by far the costliest part) as soon as
    it is warm, while this process goes on; when it comes to wait, this process makes each
    group's files from its models as they come back. Batches no worker could finish (one died)
    are built here."""

    def __init__(
        self,
        workers: ModelsWorkers,
        project: ir.Project,
        groups: Sequence[ir.Group],
        out: Output,
    ) -> None:
        self.project, self.out = project, out
        # batches small enough that every worker gets some
        pending = sum(len(g.tools) for g in groups)
        size = min(BATCH_TOOLS, -(-pending // len(workers.workers)))
        self.batches = _batches(groups, max(1, size))
        self.results: list[_Result] = [None] * len(self.batches)
        self.parts: list[list[FileSet]] = [[] for _ in self.batches]
        # (batch, group in it, models outcome) as the workers send them; None: a feeder is done
        self.inbox: queue.SimpleQueue[tuple[int, int, Outcome] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.next = 0
        self.feeders = [
            threading.Thread(target=self._feed, args=(w,), daemon=True) for w in workers.workers
        ]
        for feeder in self.feeders:
            feeder.start()

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.batches):
                return None
            self.next += 1
            return self.next - 1

    def _feed(self, worker: Worker) -> None:
        from .models import request

        try:
            worker.ready()  # take batches only once warm
            while (i := self._take()) is not None:
                requests = [request(self.project, g, self.out) for g in self.batches[i]]
                worker.generate(requests, functools.partial(self._post, i))
        except WorkerGone:
            pass  # its batch is built by this process
        finally:
            self.inbox.put(None)

    def _post(self, i: int, j: int, got: Outcome) -> None:  # in a feeder thread
        self.inbox.put((i, j, got))

    def _arrive(self, i: int, j: int, got: Outcome) -> None:
        """Group `j` of batch `i` from the models a worker made for it."""
        if self.results[i] is not None:  # an earlier group of the batch failed
            return
        group = self.batches[i][j]
        result = _emit_here(self.project, [group], self.out, {group.name: got})
        if isinstance(result, BaseException):
            self.results[i] = result
            return
        assert result is not None
        self.parts[i].extend(result)
        if len(self.parts[i]) == len(self.batches[i]):
            self.results[i] = self.parts[i]

    def result(self) -> dict[str, FileSet]:
        feeding = len(self.feeders)
        while feeding:
            item = self.inbox.get()
            if item is None:
                feeding -= 1
            else:
                self._arrive(*item)
        for feeder in self.feeders:
            feeder.join()
        for i, result in enumerate(self.results):
            if result is None:  # the workers died before finishing it
                self.results[i] = _emit_here(self.project, self.batches[i], self.out)
        return _assemble(self.batches, self.results)


def _start_groups(
    project: ir.Project,
    misses: Sequence[ir.Group],
    out: Output,
    jobs: int | None,
    workers: ModelsWorkers | None,
) -> Callable[[], dict[str, FileSet]]:
    """Start emitting the groups to rebuild; the returned function waits for their files.
    With `workers`, they generate the models while the caller works on; without,
    `_build_groups` builds the groups (with a pool of worker processes when there are many)
    before this returns."""
    if not misses:
        return dict
    if workers is not None:
        return _Shared(workers, project, misses, out).result
    built = _build_groups(project, misses, out, jobs)
    return lambda: built


def _build_groups(
    project: ir.Project, misses: Sequence[ir.Group], out: Output, jobs: int | None
) -> dict[str, FileSet]:
    """Emit (unformatted) the files of the groups to rebuild: in this process, or shared with
    worker processes when there is much to do (this process takes batches from the end of the
    queue while the workers take them from the front). When groups fail, the error raised is
    the one of the first failing group in order, as when building in one process."""
    workers = min(jobs or os.cpu_count() or 1, len(misses))
    pending_tools = sum(len(g.tools) for g in misses)
    method = _start_method()
    if (
        workers <= 1
        or pending_tools < PARALLEL_THRESHOLD
        or (method != "fork" and not _can_spawn())
    ):
        return {
            g.name: files
            for g, files in zip(misses, _emit_groups(project, misses, out), strict=True)
        }
    batches = _batches(misses, BATCH_TOOLS)
    results: list[_Result] = [None] * len(batches)
    if method == "fork":
        from ..datamodel import warm_up

        warm_up()  # forked workers inherit datamodel-code-generator imported and initialised
        gc.freeze()  # objects inherited by the workers: their collector leaves them (and their
        #              pages, shared with this process) alone
    pool = ProcessPoolExecutor(
        max_workers=workers - 1, mp_context=multiprocessing.get_context(method)
    )
    try:
        try:
            futures: list[Future[list[FileSet]]] = [
                pool.submit(_emit_groups, _subproject(project, b), b, out) for b in batches
            ]
        finally:
            if method == "fork":
                gc.unfreeze()  # the workers exist now
        for i in reversed(range(len(batches))):
            if not futures[i].cancel():
                break  # a worker has it, and so every batch before it
            results[i] = _emit_here(project, batches[i], out)
        for i, fut in enumerate(futures):
            if results[i] is None:
                exc = fut.exception()
                results[i] = exc if exc is not None else fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for i, result in enumerate(results):
        if isinstance(result, BrokenProcessPool):  # workers could not run: build here instead
            results[i] = _emit_here(project, batches[i], out)
    return _assemble(batches, results)


def _runtime_digest() -> str:
    """The runtime modules are copied verbatim and left out of the fingerprint (so editing
    them does not invalidate the group cache); project files depend on them."""
    digest = hashlib.sha256()
    runtime = Path(__file__).resolve().parent.parent / "runtime"
    for path in sorted(runtime.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(
                path.relative_to(runtime).as_posix().encode() + b"\0" + path.read_bytes() + b"\0"
            )
    return digest.hexdigest()


def _project_key(
    fingerprint: str, project: ir.Project, out: Output, group_keys: dict[str, str]
) -> str:
    """Key of every project emitter's (formatted) output: the whole IR (its tools through the
    group keys), the runtime modules and the sources."""
    parts = [
        fingerprint,
        "\0",
        _runtime_digest(),
        "\0",
        out.import_name,
        "\0",
        out.all_sources_text(),
        "\0",
    ]
    _canonical(
        (project.gateway, project.memory, project.connectors, project.groups, project.sources),
        parts,
    )
    parts.extend(f"{name}={key};" for name, key in sorted(group_keys.items()))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _project_files(
    project: ir.Project, out: Output, cache: Cache, fingerprint: str, owners: dict[str, str]
) -> FileSet:
    _, project_emitters = _registries()
    project_files: FileSet = {}
    for emitter in project_emitters:
        _merge(project_files, emitter(project, out), emitter.__name__, owners)
    verbatim = {p: t for p, t in project_files.items() if p.startswith(out.pkg("runtime/"))}
    to_format = {p: t for p, t in project_files.items() if p not in verbatim and p.endswith(".py")}
    fmt_key = hashlib.sha256(
        (fingerprint + json.dumps(to_format, sort_keys=True)).encode()
    ).hexdigest()
    formatted = cache.get("project", fmt_key)
    if formatted is None:
        formatted = _format(to_format)
        cache.put("project", fmt_key, formatted, only=True)
    return {**project_files, **formatted}


def _cached_project_files(
    project: ir.Project,
    out: Output,
    cache: Cache,
    fingerprint: str,
    keys: dict[str, str],
    owners: dict[str, str],
) -> FileSet:
    """The project emitters' files: from the cache when nothing they are made of has changed,
    else made again (from the previous build's per-tool fragments where they still hold)."""
    # (Without a cache directory the cache answers misses and stores nothing: only the key,
    # which costs a pass over the IR, is skipped.)
    project_key = _project_key(fingerprint, project, out, keys) if cache.directory else ""
    project_files = cache.get("project-files", project_key)
    if project_files is not None:
        return project_files
    memo = Fragments(keys, cache.load("fragments", fingerprint, dict))
    token = _FRAGMENTS.set(memo)
    try:
        project_files = _project_files(project, out, cache, fingerprint, owners)
    finally:
        _FRAGMENTS.reset(token)
    cache.put("project-files", project_key, project_files, only=True)
    cache.store("fragments", fingerprint, memo.used, only=True)
    return project_files


def emit(
    project: ir.Project,
    *,
    cache: Cache | None = None,
    jobs: int | None = None,
    workers: ModelsWorkers | None = None,
) -> tuple[FileSet, list[Diagnostic]]:
    """The files of `project`, formatted. The groups to rebuild get their models from
    `workers` when given (the caller closes them); else, when there are many, from worker
    processes started here."""
    out = Output(import_name=str(project.gateway.import_name), sources=project.sources)
    cache = cache or Cache(None)
    fingerprint = generator_fingerprint()
    files: FileSet = {}
    owners: dict[str, str] = {}
    try:
        keys = _group_keys(fingerprint, project, out)
        hits: dict[str, FileSet] = {}
        misses: list[ir.Group] = []
        for g in project.groups:
            cached = cache.get("group", keys[g.name])
            if cached is not None:
                hits[g.name] = cached
            else:
                misses.append(g)
        emitted = _start_groups(project, misses, out, jobs, workers)
        try:
            project_files = _cached_project_files(project, out, cache, fingerprint, keys, owners)
        except Exception:
            emitted()  # a failing group is reported first, as when groups are built first
            raise
        built: dict[str, FileSet] = {}
        if misses:
            new = emitted()
            for g, result in zip(
                misses, _format_groups([new[g.name] for g in misses]), strict=True
            ):
                built[g.name] = result
                cache.put("group", keys[g.name], result)
        for g in project.groups:
            _merge(files, hits.get(g.name) or built[g.name], f"group {g.name}", owners)
        _merge(files, project_files, "the project emitters", owners)
    except EmitError as exc:
        span = exc.span or Span(file=project.gateway.source)
        return {}, [error(exc.code, span, exc.message)]
    except Exception as exc:  # formatting failures and library errors, located as well as we can
        from ..format import FormatError

        if isinstance(exc, FormatError):
            return {}, [
                error(
                    "GEN302",
                    Span(file=project.gateway.source),
                    f"ruff could not format {exc.path}: {exc.message}",
                )
            ]
        raise
    return dict(sorted(files.items())), []
