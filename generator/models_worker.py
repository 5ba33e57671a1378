"""`ModelsWorker`: a process forked at the very start of a build to warm datamodel-code-generator
up (about half a second of imports) on another core, then run it on the models requests it is
sent while the build does everything else.

Deliberately light to import: the command line starts it before importing the rest of the
generator, and it loads nothing of the generator but `generator.datamodel`. It is sent plain
data and sends plain data back (`datamodel.Request`, `datamodel.Outcome`).
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys

# Imports are kept to what the fork needs (multiprocessing alone takes ~20 ms, typing ~10 ms):
# the sooner the worker starts, the sooner datamodel-code-generator is ready. Messages are
# pickles on pipes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import BinaryIO

    from .datamodel import Outcome, Request


def fork_is_safe() -> bool:
    """Whether this process may fork workers: the platform can, and this process runs a single
    thread (forking a threaded process can deadlock the child on a lock another thread held)."""
    threading = sys.modules.get("threading")  # not imported: no other thread was started
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)


class WorkerGone(Exception):
    """The worker process died (or could not be reached): build here instead."""


def _serve(requests: BinaryIO, outcomes: BinaryIO) -> None:
    """A `ModelsWorker` process: warm datamodel-code-generator up, then answer each batch of
    requests received with one outcome per request, each sent as soon as it is made."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle: it kills us

    from .datamodel import outcome, warm_up

    warm_up()
    while True:
        try:
            batch: list[Request] = pickle.load(requests)
        except EOFError:  # the build is over
            return
        for request in batch:
            pickle.dump(outcome(request), outcomes, protocol=pickle.HIGHEST_PROTOCOL)
            outcomes.flush()


class ModelsWorker:
    """One forked process that starts importing and warming datamodel-code-generator at once
    (about half a second), then generates models modules for the build while it goes on with
    everything else: compiling, the project files, the groups' other files, writing. Started at
    the beginning of a build when a core is free; closing it kills it, whatever it is doing."""

    def __init__(self) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: it never returns, nor runs the build's exit handlers
            code = 1
            try:
                os.close(down_w)
                os.close(up_r)
                _serve(os.fdopen(down_r, "rb"), os.fdopen(up_w, "wb"))
                code = 0
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self._pid = pid
        self._requests = os.fdopen(down_w, "wb")
        self._outcomes = os.fdopen(up_r, "rb")
        self._lock = _thread.allocate_lock()
        self._closed = False

    @classmethod
    def start(cls, jobs: int | None) -> ModelsWorker | None:
        """A worker when forking is possible and there is more than one core, else None. The
        one `prestart` started, if any, is handed over (once)."""
        global _prestarted
        if _prestarted is not None:
            worker, _prestarted = _prestarted, None
            return worker
        if (jobs or os.cpu_count() or 1) <= 1 or not fork_is_safe():
            return None
        try:
            return cls()
        except OSError:
            return None

    def generate(
        self, requests: Sequence[Request], deliver: Callable[[int, Outcome], None]
    ) -> None:
        """Have the worker run `datamodel.outcome` on each request; `deliver(index, outcome)`
        is called as each comes back, in order. `WorkerGone` when the worker is gone (the
        requests not delivered yet are lost)."""
        import pickle

        with self._lock:
            try:
                pickle.dump(list(requests), self._requests, protocol=pickle.HIGHEST_PROTOCOL)
                self._requests.flush()
                for i in range(len(requests)):
                    deliver(i, pickle.load(self._outcomes))
            except (EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
                raise WorkerGone(f"{type(exc).__name__}: {exc}") from exc

    def kill(self) -> None:
        """Stop the worker now (and reap it)."""
        import signal
        from contextlib import suppress

        with suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with suppress(ChildProcessError):  # reaped already
            os.waitpid(self._pid, 0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        for stream in (self._requests, self._outcomes):
            try:
                stream.close()
            except OSError:  # a request left unsent in the buffer: nobody reads it now
                continue


_prestarted: ModelsWorker | None = None


def prestart(jobs: int | None) -> None:
    """Start the worker the next `ModelsWorker.start` hands over (the `gen` command calls this
    before importing anything else); it is killed at exit if nothing took it."""
    global _prestarted
    _prestarted = ModelsWorker.start(jobs)
    if _prestarted is not None:
        atexit.register(discard_prestarted)


def discard_prestarted() -> None:
    """Kill the worker `prestart` started if nothing took it."""
    global _prestarted
    if _prestarted is not None:
        _prestarted.close()
        _prestarted = None
