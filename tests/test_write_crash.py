"""A build killed outright (SIGKILL) while it swaps files into `generated/` is rolled back.

The kills are real: a child process runs the write stage and sends itself SIGKILL just before
its n-th rename, for every n, so each test sees every state a killed swap can leave on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, make_project, options, tree

from generator import api, write

# The child: write `files` (JSON on stdin) into the directory argv[1], dying by SIGKILL just
# before the argv[2]-th call of os.replace; argv[3] == "recover" rolls back instead of writing.
_CHILD = """
import json, os, signal, sys
from pathlib import Path
from typing import Any
from generator import write
real, calls = os.replace, [0]
def replace(src, dst):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
if sys.argv[3] == "recover":
    write.recover(Path(sys.argv[1]))
else:
    write.write(Path(sys.argv[1]), json.loads(sys.stdin.read()))
print(calls[0])
"""

OLD = {
    "pkg/__init__.py": "old init\n",
    "pkg/changed.py": "old content\n",
    "pkg/same.py": "unchanged\n",
    "pkg/gone/stale.py": "stale, removed by the new build\n",
    "top.json": "{}\n",
}
NEW = {
    "pkg/__init__.py": "new init\n",
    "pkg/changed.py": "new content\n",
    "pkg/same.py": "unchanged\n",
    "pkg/fresh/added.py": "added by the new build\n",
    "top.json": '{"new": true}\n',
}


def _child(out: Path, die_at: int, mode: str, files: dict[str, str] | None = None) -> int | None:
    """Run the child; the number of renames it made, or None when it was killed."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), str(die_at), mode],
        input=json.dumps(files or {}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode == -signal.SIGKILL:
        return None
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def _old_output(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "generated"
    write.write(out, OLD)
    (out / "user-notes.txt").write_text("not the generator's\n")
    return out, tree(out)


def _renames_of_a_whole_write(tmp_path: Path) -> int:
    out, _ = _old_output(tmp_path / "count")
    renames = _child(out, 0, "write", NEW)
    assert renames is not None and tree(out)["pkg/fresh/added.py"] == b"added by the new build\n"
    return renames


def test_every_kill_during_the_swap_is_rolled_back_by_the_next_write(tmp_path: Path) -> None:
    renames = _renames_of_a_whole_write(tmp_path)
    assert renames >= 6  # the journal, five new or changed files (owned list included), stale
    for die_at in range(1, renames + 1):
        out, before = _old_output(tmp_path / str(die_at))
        assert _child(out, die_at, "write", NEW) is None
        assert write.interrupted(out) == (die_at > 1)  # the journal's own rename is first
        assert write.recover(out) == (die_at > 1)
        assert tree(out) == before, f"killed before rename {die_at}"
        assert not write.interrupted(out)
        the_plan = write.write(out, NEW)
        assert not the_plan.recovered
        assert tree(out) == {
            **{k: v.encode() for k, v in write.with_owned_list(NEW).items()},
            "user-notes.txt": b"not the generator's\n",
        }


def test_a_roll_back_that_is_itself_killed_is_finished_by_the_next_one(tmp_path: Path) -> None:
    renames = _renames_of_a_whole_write(tmp_path)
    kill_write_at = renames - 1  # old and new files mixed, the stale file moved aside
    out, before = _old_output(tmp_path / "first")
    assert _child(out, kill_write_at, "write", NEW) is None
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    restores = _child(out, 0, "recover")
    assert restores and tree(out) == before
    for die_at in range(1, restores + 1):
        again = tmp_path / f"again{die_at}"
        shutil.copytree(mixed, again)
        assert _child(again, die_at, "recover") is None
        assert write.interrupted(again)
        assert write.write(again, OLD).recovered
        assert tree(again) == before


def test_a_write_after_a_kill_puts_the_old_output_back_first(tmp_path: Path) -> None:
    out, _ = _old_output(tmp_path)
    assert _child(out, 3, "write", NEW) is None  # two files swapped in, the rest not
    the_plan = write.write(out, NEW)
    assert the_plan.recovered
    assert set(the_plan.changed) >= {"pkg/__init__.py", "pkg/changed.py", "top.json"}
    assert the_plan.added == ("pkg/fresh/added.py",)
    assert tree(out) == {
        **{k: v.encode() for k, v in write.with_owned_list(NEW).items()},
        "user-notes.txt": b"not the generator's\n",
    }


def test_a_file_a_killed_build_swapped_in_is_the_generators(tmp_path: Path) -> None:
    """Killed after renaming a new file in, before the owned list that names it: the journal
    names it, so neither --check's plan nor the next write takes it for someone's own file
    in the way; a file no list or journal names is (`write` then writes nothing)."""
    out, _ = _old_output(tmp_path)
    assert _child(out, 3, "write", NEW) is None  # the journal, then pkg/fresh/added.py
    assert (out / "pkg/fresh/added.py").exists()
    assert "pkg/fresh/added.py" not in write.owned_files(out)
    other = {**NEW, "pkg/fresh/added.py": "added differently\n"}
    assert write.plan(out, other).foreign == ()
    theirs = {**other, "user-notes.txt": "the generator's now?\n"}
    assert write.plan(out, theirs).foreign == ("user-notes.txt",)
    the_plan = write.write(out, other)
    assert the_plan.recovered and the_plan.foreign == ()
    assert tree(out) == {
        **{k: v.encode() for k, v in write.with_owned_list(other).items()},
        "user-notes.txt": b"not the generator's\n",
    }
    before = tree(out)
    assert write.write(out, theirs).foreign == ("user-notes.txt",)
    assert tree(out) == before


def test_a_second_write_waits_for_the_one_writing_and_leaves_its_swap_alone(
    tmp_path: Path,
) -> None:
    """A build in the middle of its swap has a journal and backups on disk, exactly as a
    killed one leaves them: a second build must not roll them back under it. It waits for
    the lock, then writes over the first build's finished output."""
    out, before = _old_output(tmp_path)
    journal = out / write.JOURNAL
    with write.locked(out):  # this process is "the build writing"
        journal.write_text('{"added": [], "changed": ["top.json"], "stale": []}\n')
        second = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(out), "0", "write"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert second.stdin is not None
        second.stdin.write(json.dumps(NEW))
        second.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=1.5)  # waiting for the lock, touching nothing
        assert journal.exists() and tree(out) == {**before, write.JOURNAL: journal.read_bytes()}
        journal.unlink()  # the first build's commit point
    assert second.wait(timeout=60) == 0
    assert tree(out) == {
        **{k: v.encode() for k, v in write.with_owned_list(NEW).items()},
        "user-notes.txt": b"not the generator's\n",
    }


def test_directories_made_for_staged_files_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    """Killed while staging (no journal yet): its staged files and the new directories made
    for them go, and the output is the previous one exactly."""
    out, before = _old_output(tmp_path)
    staged = out / "newpkg" / "models" / ".slack.py.mcpforge-tmp"
    staged.parent.mkdir(parents=True)
    staged.write_text("half a file")
    assert not write.recover(out)
    assert tree(out) == before and not (out / "newpkg").exists()


def test_an_unreadable_journal_is_an_error_and_nothing_is_touched(tmp_path: Path) -> None:
    out, before = _old_output(tmp_path)
    (out / write.JOURNAL).write_text('["not", "a", "journal"]')
    with pytest.raises(OSError, match="journal of an interrupted build cannot be read"):
        write.write(out, NEW)
    assert tree(out) == {**before, write.JOURNAL: b'["not", "a", "journal"]'}


def test_a_roll_back_never_acts_through_a_link_out_of_the_output(tmp_path: Path) -> None:
    """A journal is read from the disk: one naming files behind a directory linked out of
    the output (a killed build's, or one committed with the link) rolled them back there,
    deleting a file it said was added and renaming backups over others."""
    out, before = _old_output(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "added.py").write_text("precious\n")
    (elsewhere / "changed.py").write_text("mine\n")
    (elsewhere / ".changed.py.mcpforge-old").write_text("not a backup\n")
    (out / "linked").symlink_to(elsewhere)
    journal = {"added": ["linked/added.py"], "changed": ["linked/changed.py"], "stale": []}
    (out / write.JOURNAL).write_text(json.dumps(journal))
    outside = tree(elsewhere)
    assert write.recover(out)
    assert tree(elsewhere) == outside
    assert tree(out) == before and (out / "linked").is_symlink()


def _built_then_edited(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A project of the default manifests, built, then one connector edited: its root, its
    output directory and that output's files."""
    root = make_project(tmp_path, copy_defaults=True)
    assert api.build(options(root)).ok
    out = root / "generated"
    before = tree(out)
    slack = root / "manifests" / "connectors" / "slack.yaml"
    slack.write_text(slack.read_text().replace("description: ", "description: Edited. ", 1))
    return root, out, before


def test_check_reports_a_killed_build_and_gen_build_repairs_it(tmp_path: Path) -> None:
    root, out, before = _built_then_edited(tmp_path)
    files = api.build(options(root), check=True).files
    assert _child(out, 3, "write", files) is None
    check = subprocess.run(
        [sys.executable, "-m", "generator", "build", "--check", "--project", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert check.returncode == 1
    assert "generated/.mcpforge-journal:1:1: error[GEN306]" in check.stderr
    built = subprocess.run(
        [sys.executable, "-m", "generator", "build", "--project", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "put back the output that a killed build had left half-written" in built.stderr
    after = tree(out)
    assert after != before and not write.interrupted(out)
    assert after == {k: v.encode() for k, v in write.with_owned_list(files).items()}


# `gen build` with a slow disk (each fsync takes a tenth of a second), so that a signal sent
# once the first staged file shows lands while the files are being staged.
_SLOW_DISK_GEN = """
import os, sys, time
real = os.fsync
def fsync(fd):
    time.sleep(0.1)
    real(fd)
os.fsync = fsync
sys.argv = ["gen", *sys.argv[1:]]
from generator.__main__ import main
main()
"""


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 1)], ids=["TERM", "INT"]
)
def test_a_signal_while_staging_leaves_the_previous_output_without_staged_files(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """SIGTERM while staging ended the process on the spot and left the staged files in
    generated/ (which `--check` then took for up to date); Ctrl-C removed them. Now both do,
    and SIGTERM still ends the process as SIGTERM."""
    root, out, before = _built_then_edited(tmp_path)
    with (tmp_path / "stderr").open("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_DISK_GEN, "build", "--project", str(root)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            while not any(out.rglob(f"*{write._TMP}")):
                assert proc.poll() is None, "the build ended before it staged a file"
                time.sleep(0.001)
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == status
        finally:
            proc.kill()
        stderr.seek(0)
        assert "Traceback" not in stderr.read()
    assert tree(out) == before  # no staged file left, nothing swapped in


def test_check_reports_what_a_killed_build_left_and_gen_build_removes_it(tmp_path: Path) -> None:
    """A build killed outright while staging leaves staged files, and one killed after its
    commit point backups: `--check` said the output was up to date."""
    out, before = _old_output(tmp_path)
    (out / "pkg" / ".changed.py.mcpforge-tmp").write_text("half a new file")
    (out / ".top.json.mcpforge-old").write_text("{}\n")
    the_plan = write.plan(out, OLD)
    assert not the_plan.clean
    assert the_plan.leftovers == (".top.json.mcpforge-old", "pkg/.changed.py.mcpforge-tmp")
    assert write.diff(out, OLD, the_plan) == (
        "left by a killed build: generated/.top.json.mcpforge-old\n"
        "left by a killed build: generated/pkg/.changed.py.mcpforge-tmp\n"
    )
    assert write.write(out, OLD).clean and tree(out) == before
    assert write.plan(out, OLD).clean


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds through /proc")
def test_the_swap_reaches_the_disk_in_an_order_a_power_cut_cannot_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut cannot be staged in a test; the order of the real flushes can be checked.
    Every staged file is on disk before its rename, every rename (its directory flushed)
    before the journal goes, and the journal's removal before any backup is deleted."""
    out = tmp_path / "out"
    write.write(out, OLD)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("unlink", str(path)))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    write.write(out, NEW)
    monkeypatch.undo()

    def first(kind: str, path: str) -> int:
        return events.index((kind, path))

    staged = [path for kind, path in events if kind == "replace" and path.endswith("-tmp")]
    assert staged, events
    for path in staged:  # flushed before renamed
        assert first("fsync", path) < first("replace", path)
    journal = first("unlink", str(out / write.JOURNAL))
    last_rename = max(i for i, (kind, _path) in enumerate(events) if kind == "replace")
    assert last_rename < journal
    flushed_dirs = {path for kind, path in events[last_rename:journal] if kind == "fsync"}
    assert {str(out), str(out / "pkg"), str(out / "pkg" / "fresh")} <= flushed_dirs
    backups = [i for i, (kind, path) in enumerate(events) if kind == "unlink" and "-old" in path]
    assert backups and ("fsync", str(out)) in events[journal : min(backups)]
    assert tree(out) == {k: v.encode() for k, v in write.with_owned_list(NEW).items()}
