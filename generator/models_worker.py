"""`ModelsWorker`: a process forked at the very start of a build to warm datamodel-code-generator
up (about half a second of imports) on another core, then build the groups it is sent.

Deliberately light to import: the command line starts it before importing the rest of the
generator.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from . import ir
    from .emit import FileSet, Output


def fork_is_safe() -> bool:
    """Whether this process may fork workers: the platform can, and this process runs a single
    thread (forking a threaded process can deadlock the child on a lock another thread held)."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


class WorkerGone(Exception):
    """The worker process died (or could not be reached): build here instead."""


def _serve(conn: Any) -> None:
    """A `ModelsWorker` process: warm datamodel-code-generator up, then run the jobs sent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle: it kills us
    from .emit.models import warm_up

    warm_up()
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # sent back and raised there
            reply = (False, exc)
        try:
            conn.send(reply)  # pickled whole before anything is sent
        except Exception:  # a value that does not pickle
            conn.send((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


class ModelsWorker:
    """One forked process that starts importing and warming datamodel-code-generator at once
    (about half a second), then builds groups for the build while it goes on with everything
    else: compiling, the project files, writing. Started at the beginning of a build when a
    core is free; closing it kills it, whatever it is doing."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()

    @classmethod
    def start(cls, jobs: int | None) -> ModelsWorker | None:
        """A worker when forking is possible and there is more than one core, else None."""
        if (jobs or os.cpu_count() or 1) <= 1 or not fork_is_safe():
            return None
        try:
            return cls()
        except OSError:
            return None

    def run(self, project: ir.Project, groups: Sequence[ir.Group], out: Output) -> list[FileSet]:
        """`_emit_groups` in the worker (raising what it raised there); `WorkerGone` when the
        worker is gone."""
        from .emit import _emit_groups, _subproject

        with self._lock:
            try:
                self._conn.send((_emit_groups, (_subproject(project, groups), groups, out)))
                ok, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise WorkerGone(str(exc)) from exc
        if not ok:
            raise value
        return cast("list[FileSet]", value)

    def close(self) -> None:
        self._conn.close()
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
