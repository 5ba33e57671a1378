"""`ModelsWorkers`: processes that run datamodel-code-generator for a build.

One is forked at the very start of a build and warms datamodel-code-generator up (about half a
second of imports) on another core while the build compiles; once warm, it forks the others,
which start warm at no cost. They are sent models requests and send the outcomes back while the
build does everything else.

Deliberately light to import: the command line starts them before importing the rest of the
generator, and they load nothing of the generator but `generator.datamodel`. Messages are
plain data (`datamodel.Request`, `datamodel.Outcome`) pickled on pipes.
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys

# Imports are kept to what the fork needs (multiprocessing alone takes ~20 ms, typing ~10 ms):
# the sooner the first worker starts, the sooner datamodel-code-generator is ready.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .datamodel import Outcome, Request

MAX_WORKERS = 8  # datamodel-code-generator processes (at most one per core)


def fork_is_safe() -> bool:
    """Whether this process may fork workers: the platform can, and this process runs a single
    thread (forking a threaded process can deadlock the child on a lock another thread held)."""
    threading = sys.modules.get("threading")  # not imported: no other thread was started
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)


class WorkerGone(Exception):
    """A worker process died (or could not be reached): build here instead."""


# A worker's pipes, as (requests read end, outcomes write end); the build holds the other ends.
_Ends = tuple[int, int]


def _family(ends: list[_Ends]) -> None:
    """The first worker process: warm up, fork one sibling per further pair of `ends` (they
    start warm), then serve the first pair."""
    import pickle  # noqa: F401  (imported before forking: the siblings inherit it)
    import signal

    os.setpgid(0, 0)  # the build stops the whole family with one signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle: it kills us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held back by the build
    from .datamodel import warm_up

    warm_up()
    siblings = []
    for k in range(1, len(ends)):
        try:
            pid = os.fork() if fork_is_safe() else -1
        except OSError:  # out of processes: fewer workers
            pid = -1
        if pid == 0:
            for j in (0, *range(k + 1, len(ends))):  # the ends still open here but not ours
                os.close(ends[j][0])
                os.close(ends[j][1])
            _serve(ends[k])
            return
        if pid > 0:
            siblings.append(pid)
        os.close(ends[k][0])  # the sibling's (or, when it could not start, nobody's: the
        os.close(ends[k][1])  # build reads end-of-file and goes on without it)
    _serve(ends[0])
    for pid in siblings:  # they end as we did, when the build closed their pipes: reaping
        os.waitpid(pid, 0)  # them here accounts their CPU time to the build


def _serve(ends: _Ends) -> None:
    """Say who we are when warm, then answer each batch of requests received with one outcome
    per request, each sent as soon as it is made."""
    import pickle

    from .datamodel import outcome

    requests, outcomes = os.fdopen(ends[0], "rb"), os.fdopen(ends[1], "wb")
    pickle.dump(os.getpid(), outcomes)
    outcomes.flush()
    while True:
        try:
            batch: list[Request] = pickle.load(requests)
        except EOFError:  # the build is over
            return
        for request in batch:
            pickle.dump(outcome(request), outcomes, protocol=pickle.HIGHEST_PROTOCOL)
            outcomes.flush()


class Worker:
    """The build's end of one worker process."""

    def __init__(self, requests: int, outcomes: int) -> None:
        self._requests = os.fdopen(requests, "wb")
        self._outcomes = os.fdopen(outcomes, "rb")
        self._lock = _thread.allocate_lock()
        self.pid: int | None = None

    def ready(self) -> None:
        """Wait until the worker is warm (it says so first thing); `WorkerGone` if it never
        will be."""
        import pickle

        with self._lock:
            if self.pid is not None:
                return
            try:
                self.pid = int(pickle.load(self._outcomes))
            except (EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
                raise WorkerGone(f"{type(exc).__name__}: {exc}") from exc

    def generate(
        self, requests: Sequence[Request], deliver: Callable[[int, Outcome], None]
    ) -> None:
        """Have the worker run `datamodel.outcome` on each request; `deliver(index, outcome)`
        is called as each comes back, in order. `WorkerGone` when the worker is gone (the
        requests not delivered yet are lost)."""
        import pickle

        self.ready()
        with self._lock:
            try:
                pickle.dump(list(requests), self._requests, protocol=pickle.HIGHEST_PROTOCOL)
                self._requests.flush()
                for i in range(len(requests)):
                    deliver(i, pickle.load(self._outcomes))
            except (EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
                raise WorkerGone(f"{type(exc).__name__}: {exc}") from exc

    @property
    def idle(self) -> bool:
        """Warm and waiting for requests."""
        return self.pid is not None and not self._lock.locked()

    def close(self) -> None:
        """Close the pipes: the worker reads end-of-file and ends (when it is idle)."""
        for stream in (self._requests, self._outcomes):
            try:
                stream.close()
            except OSError:  # a request left unsent in the buffer: nobody reads it now
                continue


class ModelsWorkers:
    """Up to `MAX_WORKERS` processes (one per core) running datamodel-code-generator for a
    build: the first is forked at once and warms up (about half a second) on another core while
    the build compiles, then forks the others. The build sends them models requests while it
    goes on with everything else: compiling, the project files, the groups' other files. Closing
    kills them all, whatever they are doing."""

    def __init__(self, processes: int) -> None:
        import signal

        pairs = [(os.pipe(), os.pipe()) for _ in range(max(1, processes))]
        # Ctrl-C is held back until the workers are on the list that exit handlers stop: a
        # KeyboardInterrupt between the fork and that would leave them running.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
            if pid == 0:  # the first worker: never returns, nor runs the build's exit handlers
                code = 1
                try:
                    for (_, req_w), (out_r, _) in pairs:
                        os.close(req_w)
                        os.close(out_r)
                    _family([(req_r, out_w) for (req_r, _), (_, out_w) in pairs])
                    code = 0
                finally:
                    os._exit(code)
            self._pgid = pid
            self._closed = self._reaped = False
            self.workers: list[Worker] = []
            _live.append(self)
            from contextlib import suppress  # (after the fork: not on the worker's way)

            with suppress(OSError):
                os.setpgid(pid, pid)  # also done by the child: whichever runs first
            for (req_r, req_w), (out_r, out_w) in pairs:
                os.close(req_r)
                os.close(out_w)
                self.workers.append(Worker(req_w, out_r))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    @classmethod
    def start(cls, jobs: int | None) -> ModelsWorkers | None:
        """Workers when forking is possible and there is more than one core, else None. The
        ones `prestart` started, if any, are handed over (once)."""
        global _prestarted
        if _prestarted is not None:
            workers, _prestarted = _prestarted, None
            return workers
        cores = jobs or os.cpu_count() or 1
        if cores <= 1 or not fork_is_safe():
            return None
        try:
            return cls(min(cores, MAX_WORKERS))
        except OSError:
            return None

    def kill(self) -> None:
        """Stop every worker now (and reap the first; the others are its children)."""
        import signal
        from contextlib import suppress

        if self._reaped:  # its pid (and group id) may belong to another process by now
            return
        self._reaped = True
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, signal.SIGKILL)
        with suppress(ProcessLookupError):
            os.kill(self._pgid, signal.SIGKILL)  # in case it had not made its group yet
        with suppress(ChildProcessError):  # reaped already
            os.waitpid(self._pgid, 0)

    def close(self) -> None:
        """End the workers: idle ones are let go (they end on end-of-file, the first reaping the
        others), otherwise (busy, still warming up, or not ending in time) they are killed."""
        if self._closed:
            return
        self._closed = True
        if self in _live:
            _live.remove(self)
        idle = all(w.idle for w in self.workers)
        for worker in self.workers:
            worker.close()
        if not (idle and self._ended(timeout=1.0)):
            self.kill()

    def _ended(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self._pgid, os.WNOHANG)[0]:
                    self._reaped = True
                    return True
            except ChildProcessError:
                self._reaped = True
                return True
            time.sleep(0.001)
        return False


_prestarted: ModelsWorkers | None = None
_live: list[ModelsWorkers] = []  # started and not closed yet


def prestart(jobs: int | None) -> None:
    """Start the workers the next `ModelsWorkers.start` hands over (the `gen` command calls
    this before importing anything else)."""
    global _prestarted
    _prestarted = ModelsWorkers.start(jobs)


def stop_all() -> None:
    """Kill every worker not closed yet (a build that ended early, by an error or Ctrl-C)."""
    global _prestarted
    _prestarted = None
    while _live:
        _live[-1].close()


atexit.register(stop_all)
