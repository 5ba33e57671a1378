"""What `gen` does when its output cannot be written: one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

_GEN = [sys.executable, "-m", "generator"]
_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        ["ir"],
        ["validate", "--error-format", "json"],
        ["breaking", "--against", "manifests/connectors"],  # a baseline other than itself
    ],
)
def test_a_full_disk_is_one_line_on_stderr(args: list[str]) -> None:
    """`gen ir > /dev/full` ended in an OSError traceback (ENOSPC): click.echo was unguarded."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*_GEN, *args], cwd=ROOT, env=_ENV, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert proc.returncode == 1
    assert proc.stderr.endswith("error: cannot write to stdout: No space left on device\n")
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--help"], ["build", "--help"]])
def test_help_to_a_full_disk_is_one_line_on_stderr(args: list[str]) -> None:
    """click writes the help itself, outside the commands' guarded output: `gen --help >
    /dev/full` ended in an OSError traceback."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*_GEN, *args], cwd=ROOT, env=_ENV, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert proc.returncode == 1
    assert proc.stderr == "error: cannot write output: No space left on device\n"


def test_a_pipe_its_reader_closed_ends_quietly() -> None:
    """`gen ir | head -1`: the reader goes away; gen says nothing about it (click ends the
    command on EPIPE; the guard on full disks must not turn it into a message)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [*_GEN, "ir", "--spans"], cwd=ROOT, env=_ENV, stdout=write, stderr=subprocess.PIPE
        )
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == b""
