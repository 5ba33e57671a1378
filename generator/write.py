"""Stage 5, write: the only code that touches the output directory.

The generator owns exactly the files listed in `<out>/.mcpforge-files` (itself generated).
`plan` compares a FileSet with the directory; `write` applies the plan (new and changed files
written through a temporary file and an atomic rename, unchanged files left untouched, stale
owned files removed); `check` renders the plan as unified diffs and writes nothing.
"""

from __future__ import annotations

import difflib
import os
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
    """Apply a build. Raises OSError when the directory cannot be written."""
    files = with_owned_list(files)
    the_plan = plan(out_dir, files)
    # Stage every new content first; only then swap them in, so an I/O error while staging
    # leaves the previous output intact.
    staged: list[tuple[Path, Path]] = []
    try:
        for rel in (*the_plan.added, *the_plan.changed):
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.mcpforge-tmp")
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(files[rel])
            staged.append((tmp, target))
    except OSError:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    for rel in the_plan.stale:
        (out_dir / rel).unlink(missing_ok=True)
        _prune_empty_dirs(out_dir, (out_dir / rel).parent)
    return the_plan


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
