"""Stage 5, write: the only code that touches the output directory.

The generator owns exactly the files listed in `<out>/.mcpforge-files` (itself generated).
`plan` compares a FileSet with the directory; `write` applies the plan all or nothing (new and
changed files staged, then renamed into place with the old ones kept until every rename has
succeeded; unchanged files left untouched, stale owned files removed); `diff` renders the
plan as unified diffs and writes nothing.

A file the build would replace that is not the generator's (`Plan.foreign`: someone's own
README.md in the directory `--out` names) makes `write` write nothing. A file is the
generator's when the previous build listed it, or a killed build's journal does, or it
begins with the header generated files carry, or it lies in a package directory whose
`__init__.py` does (the runtime modules, copied verbatim, have none of their own), so that
an earlier build's output whose list was lost is still rebuilt over.

The swap is journalled: before its first rename, `<out>/.mcpforge-journal` lists every file it
is about to replace, add or remove, and it is deleted once every rename has succeeded (the
commit point). Staged files are flushed to disk before their renames, and the renames before
the journal is deleted, so a power cut leaves either the journal (rolled back) or a whole new
output. A build killed outright in between (SIGKILL, OOM killer) leaves the journal
behind, and `recover`, which the next write runs first, puts the previous output back from it
and the backups. Every step of that roll-back is decided from what is on disk, so a roll-back
that is itself killed is finished by the next one.

One build writes a directory at a time: `write` holds an exclusive lock on `.<out>.mcpforge-lock`
beside it (a second build waits, then plans against the first one's output), so a live
build's journal and staged files are never taken for a killed build's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import json
import os
import re
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

OWNED_LIST = ".mcpforge-files"
LOCK = ".mcpforge-lock"
FileSet = dict[str, str]


@dataclass(frozen=True, slots=True)
class LinkOut:
    """A symbolic link among the directories of the output that leads out of it."""

    link: str  # relative to the output directory
    target: str  # what the link says
    paths: tuple[str, ...]  # what the build would write or remove through it


@dataclass(frozen=True, slots=True)
class Plan:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    old_text: dict[str, str] = field(default_factory=dict, repr=False)
    recovered: bool = False  # a killed build's swap was rolled back first
    # of `changed`: files in the way that are not the generator's; `write` writes nothing
    foreign: tuple[str, ...] = ()
    # files the build would write or remove through a link out of the output directory: they
    # are in none of the lists above, and `write` writes nothing
    outside: tuple[LinkOut, ...] = ()
    # staging and backup files a build killed outright left (the next write removes them)
    leftovers: tuple[str, ...] = ()
    # of `changed`: paths that are no readable file, with why (a directory, Permission denied)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.added or self.changed or self.stale or self.outside or self.leftovers)


def with_owned_list(files: FileSet) -> FileSet:
    listing = "".join(f"{p}\n" for p in sorted(files) if p != OWNED_LIST)
    header = "# Files owned by mcpforge; `gen build` rewrites or removes exactly these.\n"
    return {**files, OWNED_LIST: header + listing}


def owned_files(out_dir: Path) -> set[str]:
    """The files the previous build listed. Raises OSError when the list is not UTF-8."""
    path = out_dir / OWNED_LIST
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return set()
    except UnicodeDecodeError as exc:  # not what a build wrote: which files are owned is lost
        raise OSError(
            errno.EILSEQ,
            f"not UTF-8 ({exc.reason} at byte {exc.start}); restore it from version control, "
            "or delete it (gen build then knows its files by their header)",
            str(path),
        ) from exc
    owned = set()
    for line in text.splitlines():
        rel = line.strip()
        if rel and not rel.startswith("#") and _safe_relative(rel):
            owned.add(rel)
    return owned


# How every file the generator heads begins: `python_header` and `text_header` (Python, TOML,
# Markdown in an HTML comment), and tools.json's "$comment".
_HEADER = re.compile(rb'\A(?:# |<!-- |\{\n  "\$comment": ")Generated by mcpforge from ')


def _headed(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return _HEADER.match(fh.read(64)) is not None
    except OSError:
        return False


def _journalled(out_dir: Path) -> set[str]:
    """The files a killed build's journal names (it may have swapped them in already)."""
    try:
        journal = json.loads((out_dir / JOURNAL).read_text(encoding="utf-8"))
        return {rel for v in journal.values() for rel in v if isinstance(rel, str)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _client_config(path: Path) -> bool:
    """A client config the generator writes at the top of its output, which carries no header
    (users paste it into their client's config): a JSON object of `mcpServers` alone."""
    try:
        value = json.loads(path.read_bytes()[:1_000_000])
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and list(value) == ["mcpServers"]


def _generators(out_dir: Path, rel: str, owned: set[str]) -> bool:
    """Whether the file at `rel`, which the build would replace, is the generator's."""
    if rel == OWNED_LIST or rel in owned or _headed(out_dir / rel):
        return True
    if "/" not in rel and rel.endswith(".json") and _client_config(out_dir / rel):
        return True
    parents = Path(rel).parents
    return any(str(d) != "." and _headed(out_dir / d / "__init__.py") for d in parents)


def _plain_file(path: Path) -> bool:
    """Generated files are plain, not executable files: a symbolic link (even to the same
    text) or an executable bit, which git records, is a difference `write` undoes."""
    return not path.is_symlink() and not path.stat().st_mode & 0o111


def _safe_relative(rel: str) -> bool:
    """A listed path may only ever name a file inside the output directory (as text; what the
    disk makes of it is `_link_out`'s)."""
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel == p.as_posix()


def _real(out_dir: Path) -> Path:
    """The output directory with its links resolved, which every path is judged against (the
    directory may itself be a link; what lies inside it may not lead out)."""
    return Path(os.path.realpath(out_dir))


def _link_out(root: Path, rel: str) -> str | None:
    """The symbolic link among the directories of `rel` through which it lies outside `root`
    (the real output directory), or None when its directory is inside. A link as the file
    itself is not one: a rename replaces the link, an unlink removes it, never its target."""
    real = Path(os.path.realpath((root / rel).parent))
    if real == root or root in real.parents:
        return None
    parents = Path(rel).parent.parts
    for depth in range(1, len(parents) + 1):
        if (root.joinpath(*parents[:depth])).is_symlink():
            return "/".join(parents[:depth])
    return "/".join(parents)  # pragma: no cover - only a link resolves out of `root`


def _links_out(root: Path, found: dict[str, list[str]]) -> tuple[LinkOut, ...]:
    return tuple(
        LinkOut(link=link, target=os.readlink(root / link), paths=tuple(paths))
        for link, paths in sorted(found.items())
    )


def plan(out_dir: Path, files: FileSet) -> Plan:
    files = with_owned_list(files)
    root = _real(out_dir)
    added, changed, unchanged, lost = [], [], [], []
    old_text: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    outside: dict[str, list[str]] = {}  # link -> the paths behind it
    for rel, text in sorted(files.items()):
        link = _link_out(root, rel)
        if link is not None:
            outside.setdefault(link, []).append(rel)
            continue
        target = out_dir / rel
        try:
            mode = target.stat().st_mode
            if not stat.S_ISREG(mode):  # not read: a FIFO would block
                what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
                raise IsADirectoryError(errno.EISDIR, what)
            current = target.read_bytes()
        except FileNotFoundError:
            added.append(rel)
            continue
        except OSError as exc:
            changed.append(rel)
            unreadable[rel] = exc.strerror or str(exc)
            continue
        same = current == text.encode("utf-8")
        if same and _plain_file(target):
            unchanged.append(rel)
        else:
            changed.append(rel)
            old_text[rel] = current.decode("utf-8", errors="replace")
            if not same:  # the same text, executable or behind a link, loses nothing
                lost.append(rel)
    owned = owned_files(out_dir)
    stale = []
    for rel in sorted(owned - set(files)):
        if (out_dir / rel).is_file():
            link = _link_out(root, rel)
            if link is None:
                stale.append(rel)
            else:
                outside.setdefault(link, []).append(rel)
    if lost:
        owned |= _journalled(out_dir)
    return Plan(
        added=tuple(added),
        changed=tuple(changed),
        stale=tuple(stale),
        unchanged=tuple(unchanged),
        old_text=old_text,
        unreadable=unreadable,
        foreign=tuple(rel for rel in lost if not _generators(out_dir, rel, owned)),
        outside=_links_out(root, outside),
        leftovers=tuple(sorted(p.relative_to(out_dir).as_posix() for p in _leftovers(out_dir))),
    )


def write(out_dir: Path, files: FileSet) -> Plan:
    """Apply a build, all or nothing. Raises OSError when the directory cannot be written.

    New contents are staged next to their targets first (an error, Ctrl-C or SIGTERM while
    staging leaves the previous output as it was). Then they are swapped in with the previous files
    kept as backups, under a journal: a failure part-way restores every file already swapped,
    SIGINT or SIGTERM arriving during the swap (milliseconds) is acted on once it is complete,
    and a process killed outright during it is rolled back by the next write (`recover`).
    When a file that is not the generator's is in the way (`Plan.foreign`), or a file would
    be written or removed through a link out of the output directory (`Plan.outside`: a
    link committed in its place must not make a build write or delete files elsewhere),
    nothing is written, and the plan says which.
    """
    files = with_owned_list(files)
    with locked(out_dir), _terminated_like_interrupted():
        recovered = recover(out_dir)
        the_plan = dataclasses.replace(plan(out_dir, files), recovered=recovered)
        if the_plan.foreign or the_plan.outside:
            return the_plan
        staged: list[tuple[Path, Path]] = []
        try:
            for rel in (*the_plan.added, *the_plan.changed):
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = _sibling(target, _TMP)
                staged.append((tmp, target))
                with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                    fh.write(files[rel])
                    fh.flush()
                    os.fsync(fh.fileno())  # on disk before its rename can be
            if the_plan.added or the_plan.changed or the_plan.stale:  # else the directory is
                with _signals_deferred():  # left as it was, its modification time included
                    _swap(out_dir, the_plan)
        except BaseException:  # staged files not swapped in go (none once the swap is done)
            for tmp, target in staged:
                tmp.unlink(missing_ok=True)
                _prune_empty_dirs(out_dir, target.parent)
            raise
    return the_plan


@contextlib.contextmanager
def locked(out_dir: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the output directory's lock: exclusive to write, `shared` to read it whole
    (`gen build --check`). A shared hold creates nothing: with no lock file, no build has
    ever written here. Where `fcntl` does not exist (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere this is tested
        yield
        return
    path = _sibling(out_dir, LOCK)
    if shared and not path.exists():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r" if shared else "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)  # released on close
        yield


_TMP = ".mcpforge-tmp"
_OLD = ".mcpforge-old"
JOURNAL = ".mcpforge-journal"


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}{suffix}")


def interrupted(out_dir: Path) -> bool:
    """Whether a build was killed while swapping files in (the output may be mixed)."""
    return (out_dir / JOURNAL).is_file()


def _swap(out_dir: Path, the_plan: Plan) -> None:
    journal = {
        "added": list(the_plan.added),
        "changed": list(the_plan.changed),
        "stale": list(the_plan.stale),
    }
    _write_durably(out_dir / JOURNAL, json.dumps(journal, indent=0, sort_keys=True) + "\n")
    try:
        for rel in the_plan.added:
            target = out_dir / rel
            os.replace(_sibling(target, _TMP), target)
        for rel in the_plan.changed:
            target = out_dir / rel
            if target.exists():
                backup = _sibling(target, _OLD)
                try:
                    os.link(target, backup)
                except OSError:  # a file system without hard links: copy, then rename
                    partial = _sibling(target, _TMP + "-copy")
                    shutil.copy2(target, partial)
                    os.replace(partial, backup)
            os.replace(_sibling(target, _TMP), target)
        for rel in the_plan.stale:
            target = out_dir / rel
            if target.exists():
                os.replace(target, _sibling(target, _OLD))
    except BaseException:
        _roll_back(out_dir, journal)
        raise
    # The renames reach the disk before the journal goes: a power cut in between leaves the
    # journal, and the next build rolls back to a whole previous output.
    touched = {
        (out_dir / rel).parent for rel in (*the_plan.added, *the_plan.changed, *the_plan.stale)
    }
    for directory in sorted(touched | {out_dir}):
        _fsync_dir(directory)
    (out_dir / JOURNAL).unlink()  # the commit point: from here on the new output stands
    _fsync_dir(out_dir)  # and stays gone before any backup is deleted
    for rel in (*the_plan.changed, *the_plan.stale):
        _sibling(out_dir / rel, _OLD).unlink(missing_ok=True)
    for rel in the_plan.stale:
        _prune_empty_dirs(out_dir, (out_dir / rel).parent)


def recover(out_dir: Path) -> bool:
    """Put back the previous output if a build was killed during its swap, and remove the
    staging and backup files a killed build left. True when there was a swap to roll back."""
    journal_path = out_dir / JOURNAL
    try:
        journal = json.loads(journal_path.read_text(encoding="utf-8"))
        if not (
            isinstance(journal, dict)
            and all(isinstance(v, list) for v in journal.values())
            and all(isinstance(rel, str) for v in journal.values() for rel in v)
        ):
            raise ValueError("not a journal written by mcpforge")
    except FileNotFoundError:
        _remove_leftovers(out_dir)
        return False
    except (OSError, ValueError) as exc:
        raise OSError(
            f"{journal_path}: the journal of an interrupted build cannot be read ({exc}); "
            "restore the directory from version control and delete the journal"
        ) from exc
    with _signals_deferred():
        _roll_back(out_dir, journal)
    return True


def _roll_back(out_dir: Path, journal: dict[str, list[str]]) -> None:
    """Undo a swap from the state of the disk alone, so that running it again (after it was
    itself interrupted) is safe: a staged file that is still there was never swapped in."""

    root = _real(out_dir)

    def entries(kind: str) -> list[tuple[Path, Path, Path]]:  # (target, staged, backup)
        targets = [
            out_dir / rel
            for rel in journal.get(kind, [])
            if _safe_relative(rel) and _link_out(root, rel) is None
        ]
        return [(t, _sibling(t, _TMP), _sibling(t, _OLD)) for t in targets]

    for target, _staged, backup in entries("stale"):
        if backup.exists():
            os.replace(backup, target)
    for target, staged, backup in entries("changed"):
        if not staged.exists() and backup.exists():
            os.replace(backup, target)
    for target, staged, _backup in entries("added"):
        if not staged.exists():
            target.unlink(missing_ok=True)
    _remove_leftovers(out_dir)
    for target, _staged, _backup in entries("added"):
        _prune_empty_dirs(out_dir, target.parent)
    # What was put back reaches the disk before the journal that says to put it back goes.
    touched = {t.parent for kind in ("stale", "changed", "added") for t, _s, _b in entries(kind)}
    for directory in sorted(d for d in touched | {out_dir} if d.is_dir()):
        _fsync_dir(directory)
    (out_dir / JOURNAL).unlink(missing_ok=True)


def _write_durably(path: Path, text: str) -> None:
    """Write a small file atomically and flush it and its directory entry to disk."""
    tmp = _sibling(path, _TMP)
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (renames, new and removed names) to disk."""
    with contextlib.suppress(OSError):  # directories cannot be opened on some platforms
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _leftovers(out_dir: Path) -> list[Path]:
    """Staging and backup files of a build that was killed outright (links to directories
    are not followed)."""
    if not out_dir.is_dir():
        return []
    return [
        p
        for pattern in (f".*{_TMP}", f".*{_TMP}-copy", f".*{_OLD}")
        for p in out_dir.rglob(pattern)
    ]


def _remove_leftovers(out_dir: Path) -> None:
    for leftover in _leftovers(out_dir):
        leftover.unlink(missing_ok=True)
        _prune_empty_dirs(out_dir, leftover.parent)  # made for files never swapped in


class _Terminated(BaseException):
    """SIGTERM, raised (like KeyboardInterrupt for SIGINT) where a write can clean up."""


@contextlib.contextmanager
def _terminated_like_interrupted() -> Iterator[None]:
    """SIGTERM inside the block raises `_Terminated`, so that a write stopped while staging
    removes its staged files as it does for Ctrl-C (SIGTERM's default action ended the process
    on the spot and left them in the output); once they are gone, the process ends by SIGTERM
    as it would have. Only where SIGTERM has its default action: a program's own handler, or
    SIG_IGN, is left alone (and in the main thread only, where handlers can be set)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return

    def terminate(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one does not cut the clean-up
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # ends the process
        raise  # pragma: no cover - not reached
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
        if rel in the_plan.unreadable:  # nothing to diff against
            chunks.append(f"not a readable file: {out_dir.name}/{rel} ({the_plan.unreadable[rel]})")
            continue
        old = the_plan.old_text.get(rel, "").splitlines(keepends=True)
        new = files[rel].splitlines(keepends=True)
        if old == new:  # the text is right; the file is not a plain one (`_plain_file`)
            chunks.append(f"not a plain file: {out_dir.name}/{rel} (a link, or executable)\n")
        chunks.extend(difflib.unified_diff(old, new, f"a/{rel}", f"b/{rel}", n=2))
    for rel in the_plan.added:
        chunks.append(f"missing: {out_dir.name}/{rel}\n")
    for rel in the_plan.stale:
        chunks.append(f"stale: {out_dir.name}/{rel}\n")
    for rel in the_plan.leftovers:
        chunks.append(f"left by a killed build: {out_dir.name}/{rel}\n")
    return "".join(c if c.endswith("\n") else c + "\n" for c in chunks)
