"""Stage 5, write: the only code that touches the output directory.

The generator owns exactly the files listed in `<out>/.mcpforge-files` (itself generated).
`plan` compares a FileSet with the directory; `write` applies the plan all or nothing (new and
changed files staged, then renamed into place with the old ones kept until every rename has
succeeded; unchanged files left untouched, stale owned files removed); `check` renders the
plan as unified diffs and writes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

OWNED_LIST = ".mcpforge-files"
FileSet = dict[str, str]


@dataclass(frozen=True, slots=True)
class Plan:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    old_text: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def clean(self) -> bool:
        return not (self.added or self.changed or self.stale)


def with_owned_list(files: FileSet) -> FileSet:
    listing = "".join(f"{p}\n" for p in sorted(files) if p != OWNED_LIST)
    header = "# Files owned by mcpforge; `gen build` rewrites or removes exactly these.\n"
    return {**files, OWNED_LIST: header + listing}


def owned_files(out_dir: Path) -> set[str]:
    try:
        text = (out_dir / OWNED_LIST).read_text(encoding="utf-8")
    except OSError:
        return set()
    owned = set()
    for line in text.splitlines():
        rel = line.strip()
        if rel and not rel.startswith("#") and _safe_relative(rel):
            owned.add(rel)
    return owned


def _safe_relative(rel: str) -> bool:
    """A listed path may only ever name a file inside the output directory."""
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel == p.as_posix()


def plan(out_dir: Path, files: FileSet) -> Plan:
    files = with_owned_list(files)
    added, changed, unchanged = [], [], []
    old_text: dict[str, str] = {}
    for rel, text in sorted(files.items()):
        target = out_dir / rel
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            added.append(rel)
            continue
        except OSError:
            changed.append(rel)
            continue
        if current == text.encode("utf-8"):
            unchanged.append(rel)
        else:
            changed.append(rel)
            old_text[rel] = current.decode("utf-8", errors="replace")
    stale = sorted(rel for rel in owned_files(out_dir) - set(files) if (out_dir / rel).is_file())
    return Plan(
        added=tuple(added),
        changed=tuple(changed),
        stale=tuple(stale),
        unchanged=tuple(unchanged),
        old_text=old_text,
    )


def write(out_dir: Path, files: FileSet) -> Plan:
    """Apply a build, all or nothing. Raises OSError when the directory cannot be written.

    New contents are staged next to their targets first (an error or Ctrl-C while staging
    leaves the previous output as it was). Then they are swapped in with the previous files
    kept as backups; a failure part-way restores every file already swapped, and SIGINT or
    SIGTERM arriving during the swap (milliseconds) is acted on once it is complete. Only a
    hard kill or a power cut in those milliseconds can leave old and new files mixed.
    """
    files = with_owned_list(files)
    the_plan = plan(out_dir, files)
    _remove_leftovers(out_dir)
    staged: list[tuple[Path, Path]] = []
    try:
        for rel in (*the_plan.added, *the_plan.changed):
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}{_TMP}")
            staged.append((tmp, target))
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(files[rel])
    except BaseException:
        for tmp, target in staged:
            tmp.unlink(missing_ok=True)
            _prune_empty_dirs(out_dir, target.parent)
        raise
    with _signals_deferred():
        _swap(out_dir, staged, [out_dir / rel for rel in the_plan.stale])
    return the_plan


_TMP = ".mcpforge-tmp"
_OLD = ".mcpforge-old"


def _swap(out_dir: Path, staged: list[tuple[Path, Path]], stale: list[Path]) -> None:
    replaced: list[tuple[Path, Path | None]] = []  # (target, backup of its old content)
    removed: list[tuple[Path, Path]] = []  # (stale file, where it waits to be deleted)
    try:
        for tmp, target in staged:
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}{_OLD}")
                try:
                    os.link(target, backup)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, backup)
            os.replace(tmp, target)
            replaced.append((target, backup))
        for target in stale:
            if target.exists():
                backup = target.with_name(f".{target.name}{_OLD}")
                os.replace(target, backup)
                removed.append((target, backup))
    except BaseException:
        for target, backup in reversed(removed):
            os.replace(backup, target)
        for target, maybe in reversed(replaced):
            if maybe is None:
                target.unlink(missing_ok=True)
                _prune_empty_dirs(out_dir, target.parent)
            else:
                os.replace(maybe, target)
        for tmp, target in staged:
            tmp.unlink(missing_ok=True)
            target.with_name(f".{target.name}{_OLD}").unlink(missing_ok=True)
            _prune_empty_dirs(out_dir, target.parent)
        raise
    for _target, maybe in replaced:
        if maybe is not None:
            maybe.unlink(missing_ok=True)
    for target, backup in removed:
        backup.unlink(missing_ok=True)
        _prune_empty_dirs(out_dir, target.parent)


def _remove_leftovers(out_dir: Path) -> None:
    """Staging and backup files of a build that was killed outright."""
    if out_dir.is_dir():
        for pattern in (f".*{_TMP}", f".*{_OLD}"):
            for leftover in out_dir.rglob(pattern):
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM received inside the block take effect when it ends (main thread
    only: elsewhere signal handlers cannot be changed, and the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def defer(signum: int, _frame: object) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, defer) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _prune_empty_dirs(root: Path, directory: Path) -> None:
    root = root.resolve()
    d = directory.resolve()
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def diff(out_dir: Path, files: FileSet, the_plan: Plan) -> str:
    files = with_owned_list(files)
    chunks: list[str] = []
    for rel in the_plan.changed:
        old = the_plan.old_text.get(rel, "").splitlines(keepends=True)
        new = files[rel].splitlines(keepends=True)
        chunks.extend(difflib.unified_diff(old, new, f"a/{rel}", f"b/{rel}", n=2))
    for rel in the_plan.added:
        chunks.append(f"missing: {out_dir.name}/{rel}\n")
    for rel in the_plan.stale:
        chunks.append(f"stale: {out_dir.name}/{rel}\n")
    return "".join(c if c.endswith("\n") else c + "\n" for c in chunks)
