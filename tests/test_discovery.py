"""Which files are manifests: discovery under the manifest directory, through the real `gen`
on real directories (links, permissions, line endings)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import AS_A_USER, MODES_HOLD, ROOT, make_project, tree


def _gen(root: Path, *args: str, as_a_user: bool = False) -> subprocess.CompletedProcess[str]:
    if as_a_user and not MODES_HOLD:
        pytest.skip("running as root without setpriv: modes are not enforced")
    return subprocess.run(
        [*(AS_A_USER if as_a_user else []), sys.executable, "-m", "generator", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _connectors(root: Path) -> list[str]:
    done = _gen(root, "ir")
    assert done.returncode == 0, done.stderr
    return [c["name"] for c in json.loads(done.stdout)["connectors"]]


def _slack_as(name: str) -> str:
    text = (ROOT / "manifests" / "connectors" / "slack.yaml").read_text()
    assert "\nname: slack\n" in text
    return text.replace("\nname: slack\n", f"\nname: {name}\n")


def test_a_linked_directory_is_searched_as_a_linked_file_is(tmp_path: Path) -> None:
    """rglob did not follow a link to a directory (while it followed links to files): the
    connectors kept in one were left out without a word."""
    root = make_project(tmp_path, copy_defaults=True)
    elsewhere = tmp_path / "shared"
    (elsewhere / "deeper").mkdir(parents=True)
    (elsewhere / "deeper" / "x.yaml").write_text(_slack_as("slackx"))
    (root / "manifests" / "extra").symlink_to(elsewhere, target_is_directory=True)
    assert "slackx" in _connectors(root)


def test_a_directory_that_cannot_be_read_stops_the_build(tmp_path: Path) -> None:
    """A directory that could not be listed was skipped in silence, and the build removed the
    generated files of the connectors in it (exit 0, "3 removed")."""
    root = make_project(tmp_path, copy_defaults=True)
    extra = root / "manifests" / "extra"
    extra.mkdir()
    (extra / "x.yaml").write_text(_slack_as("slackx"))
    built = _gen(root, "build", "--no-cache")
    assert built.returncode == 0, built.stderr
    before = tree(root / "generated")
    extra.chmod(0)
    try:
        done = _gen(root, "build", "--no-cache", as_a_user=True)
    finally:
        extra.chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert "manifests/extra:1:1: error[GEN001] cannot read directory: Permission denied" in (
        done.stderr
    )
    assert tree(root / "generated") == before


def test_a_link_back_to_a_holding_directory_is_an_error_not_a_hang(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    (root / "manifests" / "connectors" / "up").symlink_to("..", target_is_directory=True)
    done = _gen(root, "validate")
    assert done.returncode == 1
    assert (
        "manifests/connectors/up:1:1: error[GEN001] directory link loops back to manifests\n"
        in done.stderr
    )
    assert done.stderr.count("error[") == 1  # each manifest was read once


def test_hidden_files_and_directories_are_not_manifests(tmp_path: Path) -> None:
    """An Emacs lock file (a link to nowhere named `.#slack.yaml`) failed the build with
    GEN001, and a backup `.slack.yaml` declared the connector a second time (GEN211)."""
    root = make_project(tmp_path, copy_defaults=True)
    connectors = root / "manifests" / "connectors"
    (connectors / ".#slack.yaml").symlink_to("user@host.1234:1700000000")
    shutil.copy(connectors / "slack.yaml", connectors / ".slack.yaml")
    (connectors / ".backup").mkdir()
    (connectors / ".backup" / "x.yaml").write_text(_slack_as("slackx"))
    done = _gen(root, "validate")
    assert done.returncode == 0, done.stderr
    assert "slackx" not in _connectors(root)


def test_manifests_with_cr_lf_line_endings_generate_the_same_bytes(tmp_path: Path) -> None:
    """Source hashes were taken over the raw bytes: a checkout with CR LF line endings (git's
    core.autocrlf) failed `gen build --check` on every file headed by a manifest's sha256.
    Through the build cache too: its units are keyed by the same digest."""
    root = make_project(tmp_path, copy_defaults=True)
    shutil.copytree(ROOT / "generated", root / "generated")
    manifests = sorted((root / "manifests").rglob("*.yaml"))
    lf = {p: p.read_bytes() for p in manifests}
    for i, p in enumerate(manifests):
        assert b"\r" not in lf[p]
        p.write_bytes(lf[p].replace(b"\n", b"\r" if i == 0 else b"\r\n"))  # one old-Mac file
    expected = tree(root / "generated")
    done = _gen(root, "build", "--check", "--no-cache")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    done = _gen(root, "build")  # fills the cache from the CR LF files
    assert done.returncode == 0, done.stderr
    assert tree(root / "generated") == expected
    for p, raw in lf.items():
        p.write_bytes(raw)
    done = _gen(root, "build", "--check")  # from the cache the CR LF build filled
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
