"""Stage 4, emit: `ir.Project` -> files in memory (path -> text), formatted.

Emitters are plain functions in two registries: per tool group (cached by the group's content
hash and built in parallel when there is much to build) and per project. Two emitters producing
one path is an error. Nothing here touches the output directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from .. import ir
from ..diagnostics import Diagnostic, Span, error
from ..names import PyIdent

FileSet = dict[str, str]


class EmitError(Exception):
    def __init__(self, code: str, span: Span | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.span = span
        self.message = message


@dataclass(frozen=True, slots=True)
class Output:
    """Naming helpers shared by the emitters of one build."""

    import_name: str
    sources: tuple[ir.Source, ...]

    def pkg(self, rel: str) -> str:
        return f"{self.import_name}/{rel}"

    def sources_text(self, paths: Iterable[str]) -> str:
        shas = {s.path: s.sha256 for s in self.sources}
        return ", ".join(f"{p} (sha256 {shas[p]})" for p in sorted(paths))

    def all_sources_text(self) -> str:
        digest = hashlib.sha256()
        for s in self.sources:
            digest.update(f"{s.path}\0{s.sha256}\n".encode())
        n = len(self.sources)
        return f"{n} manifest{'s' * (n != 1)} (combined sha256 {digest.hexdigest()})"


GroupEmitter = Callable[[ir.Project, ir.Group, Output], FileSet]
ProjectEmitter = Callable[[ir.Project, Output], FileSet]


def _registries() -> tuple[Sequence[GroupEmitter], Sequence[ProjectEmitter]]:
    from . import artifacts, catalog, client, models, package

    group: list[GroupEmitter] = [client.shares_models(models.group_models), catalog.group_catalog,
                                 client.group_client]
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
            raise EmitError("GEN303", None,
                            f"{path} is produced by both {owners[path]} and {owner}")
        into[path] = text
        owners[path] = owner


# ---------------------------------------------------------------------------- cache


# generator/runtime/ is copied into the output verbatim and never cached, so editing it must not
# invalidate the cache; the compiler imports these of its modules, though.
_RUNTIME_IMPORTED_BY_GENERATOR = frozenset({"handler_names.py"})


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
    """Content-addressed cache of emitted, formatted files (keyed by hashes, never mtimes)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def get(self, kind: str, key: str) -> FileSet | None:
        if self.directory is None:
            return None
        path = self.directory / kind / key[:2] / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, kind: str, key: str, files: FileSet) -> None:
        if self.directory is None:
            return
        path = self.directory / kind / key[:2] / f"{key}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(files), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:  # a cache that cannot be written only costs time
            pass

    def load(self, kind: str, key: str, of_type: type) -> Any:
        """A pickled object stored by `store`, or None (missing, unreadable or not `of_type`).
        The cache lives in the project (the same trust as its manifests and code)."""
        if self.directory is None:
            return None
        try:
            value = pickle.loads((self.directory / kind / key[:2] / f"{key}.pickle").read_bytes())
        except Exception:  # a damaged entry is a miss
            return None
        return value if isinstance(value, of_type) else None

    def store(self, kind: str, key: str, value: object) -> None:
        if self.directory is None:
            return
        path = self.directory / kind / key[:2] / f"{key}.pickle"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError):
            pass


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


def _group_keys(fingerprint: str, project: ir.Project, out: Output) -> dict[str, str]:
    """Cache key of each group: everything a group emitter reads (the group, its tools, its
    connector, the package name and the group's sources)."""
    tools = {t.name: t for t in project.tools}
    connectors = {PyIdent(c.name): c for c in project.connectors}
    keys = {}
    for group in project.groups:
        parts = [fingerprint, "\0", out.import_name, "\0", out.sources_text(group.sources), "\0"]
        _canonical(group, parts)
        _canonical(tuple(tools[n] for n in sorted(group.tools) if n in tools), parts)
        _canonical(connectors.get(group.name), parts)
        keys[group.name] = hashlib.sha256("".join(parts).encode()).hexdigest()
    return keys


# ---------------------------------------------------------------------------- emit


def _emit_groups(project: ir.Project, groups: Sequence[ir.Group], out: Output) -> list[FileSet]:
    group_emitters, _ = _registries()
    results = []
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


def _emit_and_format_groups(
    project: ir.Project, groups: Sequence[ir.Group], out: Output
) -> list[FileSet]:
    emitted = _emit_groups(project, groups, out)
    merged = {f"{i}\0{p}": t for i, files in enumerate(emitted) for p, t in files.items()}
    formatted = _format(merged)
    results: list[FileSet] = [{} for _ in groups]
    for key, text in formatted.items():
        i, path = key.split("\0", 1)
        results[int(i)][path] = text
    return results


def _chunks(groups: Sequence[ir.Group], n: int) -> list[list[ir.Group]]:
    """Spread groups over n workers, balancing tool counts (largest first)."""
    bins: list[list[ir.Group]] = [[] for _ in range(n)]
    loads = [0] * n
    for g in sorted(groups, key=lambda g: -len(g.tools)):
        i = loads.index(min(loads))
        bins[i].append(g)
        loads[i] += len(g.tools)
    return [b for b in bins if b]


PARALLEL_THRESHOLD = 150  # tools to rebuild before worker processes pay for themselves


def emit(project: ir.Project, *, cache_dir: Path | None = None,
         jobs: int | None = None) -> tuple[FileSet, list[Diagnostic]]:
    out = Output(import_name=str(project.gateway.import_name), sources=project.sources)
    cache = Cache(cache_dir)
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
        built: dict[str, FileSet] = {}
        if misses:
            workers = min(jobs or os.cpu_count() or 1, len(misses))
            pending_tools = sum(len(g.tools) for g in misses)
            if workers > 1 and pending_tools >= PARALLEL_THRESHOLD:
                chunks = _chunks(misses, workers)
                with ProcessPoolExecutor(max_workers=len(chunks)) as pool:
                    futures = [pool.submit(_emit_and_format_groups, project, c, out) for c in chunks]
                    for chunk, fut in zip(chunks, futures, strict=True):
                        for g, result in zip(chunk, fut.result(), strict=True):
                            built[g.name] = result
            else:
                for g, result in zip(misses, _emit_and_format_groups(project, misses, out),
                                     strict=True):
                    built[g.name] = result
            for name, result in built.items():
                cache.put("group", keys[name], result)
        for g in project.groups:
            _merge(files, hits.get(g.name) or built[g.name], f"group {g.name}", owners)

        _, project_emitters = _registries()
        project_files: FileSet = {}
        for emitter in project_emitters:
            _merge(project_files, emitter(project, out), emitter.__name__, owners)
        verbatim = {p: t for p, t in project_files.items() if p.startswith(out.pkg("runtime/"))}
        to_format = {p: t for p, t in project_files.items() if p not in verbatim}
        fmt_key = hashlib.sha256(
            (fingerprint + json.dumps(to_format, sort_keys=True)).encode()).hexdigest()
        formatted = cache.get("project", fmt_key)
        if formatted is None:
            formatted = _format(to_format)
            cache.put("project", fmt_key, formatted)
        files.update(formatted)
        files.update(verbatim)
    except EmitError as exc:
        span = exc.span or Span(file=project.gateway.source)
        return {}, [error(exc.code, span, exc.message)]
    except Exception as exc:  # formatting failures and library errors, located as well as we can
        from ..format import FormatError

        if isinstance(exc, FormatError):
            return {}, [error("GEN302", Span(file=project.gateway.source),
                              f"ruff could not format {exc.path}: {exc.message}")]
        raise
    return dict(sorted(files.items())), []
