"""The generator's API: what the CLI and the tests call.

    load -> validate -> compile -> emit -> write (or check)

Each function returns diagnostics as data; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import ir
from .compile import compile_project
from .diagnostics import Diagnostic, Span, error, has_errors, normalise
from .emit import FileSet, emit
from .load import discover, load_files
from .validate import validate_one
from .write import Plan, diff, plan, write

CACHE_DIR = ".mcpforge-cache"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    root: Path  # paths in diagnostics are relative to it
    manifests: Path
    out: Path
    cache: bool = True
    jobs: int | None = None

    @classmethod
    def for_project(cls, root: Path, *, manifests: Path | None = None, out: Path | None = None,
                    cache: bool = True, jobs: int | None = None) -> Options:
        root = root.resolve()
        return cls(root=root, manifests=(manifests or root / "manifests").resolve(),
                   out=(out or root / "generated").resolve(), cache=cache, jobs=jobs)


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


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def compile_manifests(options: Options) -> CompileResult:
    files = discover(options.root, options.manifests)
    if not files:
        where = _rel(options.root, options.manifests)
        return CompileResult(None, (error("GEN005", Span(file=where),
                                          f"no *.yaml manifests under {where}"),))
    docs, diags = load_files(options.root, files)
    valid = []
    for doc in docs:
        problems = validate_one(doc)
        diags.extend(problems)
        if not has_errors(problems):
            valid.append(doc)
    partial = len(valid) != len(files)
    project, compile_diags = compile_project(valid, partial=partial)
    diags.extend(compile_diags)
    all_diags = normalise(diags)
    return CompileResult(project if not has_errors(all_diags) else None, all_diags)


def generate(options: Options) -> tuple[CompileResult, FileSet, tuple[Diagnostic, ...]]:
    result = compile_manifests(options)
    if not result.ok or result.project is None:
        return result, {}, result.diagnostics
    cache_dir = options.root / CACHE_DIR if options.cache else None
    files, emit_diags = emit(result.project, cache_dir=cache_dir, jobs=options.jobs)
    return result, files, normalise((*result.diagnostics, *emit_diags))


def build(options: Options, *, check: bool = False) -> BuildResult:
    """Compile and write `generated/` (or, with check, compare and write nothing)."""
    _result, files, diags = generate(options)
    if has_errors(diags):
        return BuildResult(diags)  # all-or-nothing: a failed build writes nothing
    the_plan = plan(options.out, files)
    if check:
        return BuildResult(diags, the_plan, diff(options.out, files, the_plan), files)
    try:
        the_plan = write(options.out, files)
    except OSError as exc:
        where = Span(file=_rel(options.root, options.out))
        return BuildResult((*diags, error("GEN304", where, f"cannot write output: {exc}")))
    return BuildResult(diags, the_plan, "", files)


def ir_data(options: Options, *, spans: bool = False) -> tuple[object | None, tuple[Diagnostic, ...]]:
    result = compile_manifests(options)
    if result.project is None:
        return None, result.diagnostics
    return ir.to_data(result.project, spans=spans), result.diagnostics
