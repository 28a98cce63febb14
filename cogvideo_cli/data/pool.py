"""A process pool whose workers can hang or die: each task has a wall-clock limit.

Video decoders (decord above all) can block forever or abort the whole process on a bad
file. ``run_isolated`` runs one task at a time per worker process; a worker that passes its
deadline is killed and one that dies is noticed, and either is replaced, so one bad file
costs its own timeout and nothing else. The function must be importable by name (the
workers are spawned, not forked: the parent may run threads, e.g. a progress bar).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How one task ended: ``status`` is ok, error, timeout or crashed."""

    status: str
    value: Any = None
    error: str = ""
    seconds: float = 0.0


def _silence_stderr() -> None:
    """Decoders write warnings straight to fd 2; keep them off the user's terminal."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _worker_main(conn, func: Callable[[Any], Any], quiet: bool) -> None:
    """Worker loop: receive (key, argument), send back (key, status, value or error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if quiet:
        _silence_stderr()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, argument = message
        try:
            conn.send((key, "ok", func(argument)))
        except Exception as exc:  # the task failed; the worker lives on
            conn.send((key, "error", f"{type(exc).__name__}: {exc}"))


class _Worker:
    """One worker process, its pipe, and the task it runs now."""

    def __init__(self, ctx, func: Callable, quiet: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, func, quiet),
                                   daemon=True)
        self.process.start()
        child.close()
        self.key: Any = None
        self.started = 0.0

    @property
    def busy(self) -> bool:
        return self.key is not None

    def submit(self, key: Any, argument: Any) -> None:
        self.key, self.started = key, time.monotonic()
        self.conn.send((key, argument))

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        self.kill()


def _describe_exit(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Pool:
    def __init__(self, func: Callable, workers: int, timeout: float, quiet: bool) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._func, self._timeout, self._quiet = func, timeout, quiet
        self._size = workers
        self._workers: list[_Worker] = []

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._func, self._quiet)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)

    def _feed(self, pending: deque) -> None:
        """Give a task to every idle worker, starting workers up to the pool size."""
        for worker in self._workers:
            if pending and not worker.busy:
                worker.submit(*pending.popleft())
        while pending and len(self._workers) < self._size:
            worker = self._spawn()
            self._workers.append(worker)
            worker.submit(*pending.popleft())

    def _collect(self, worker: _Worker) -> Outcome | None:
        """A finished task's outcome, or a crash when the worker died with it."""
        elapsed = time.monotonic() - worker.started
        try:
            if worker.conn.poll():
                _key, status, value = worker.conn.recv()
                worker.key = None
                if status == "ok":
                    return Outcome("ok", value=value, seconds=elapsed)
                return Outcome("error", error=value, seconds=elapsed)
        except (EOFError, OSError):
            pass
        if worker.process.is_alive():
            return None
        worker.process.join(1)
        outcome = Outcome("crashed", error=_describe_exit(worker.process), seconds=elapsed)
        self._replace(worker)
        return outcome

    def _expire(self, now: float) -> list[tuple[Any, Outcome]]:
        """Kill the workers whose task passed its deadline."""
        expired = []
        for worker in [w for w in self._workers if w.busy]:
            if now - worker.started >= self._timeout and not worker.conn.poll():
                key = worker.key
                log.info("probe of %s passed %.1f s; killing its worker", key, self._timeout)
                self._replace(worker)
                expired.append((key, Outcome("timeout", error=f"no answer within "
                                             f"{self._timeout:g} s", seconds=self._timeout)))
        return expired

    def _wait_time(self, now: float) -> float:
        deadlines = [w.started + self._timeout for w in self._workers if w.busy]
        return max(0.0, min(deadlines) - now) if deadlines else 0.0

    def run(self, items: Iterable[tuple[Any, Any]],
            on_done: Callable[[Any, Outcome], None]) -> None:
        pending = deque(items)
        try:
            while pending or any(w.busy for w in self._workers):
                self._feed(pending)
                busy = [w for w in self._workers if w.busy]
                handles = [w.conn for w in busy] + [w.process.sentinel for w in busy]
                ready = wait(handles, timeout=self._wait_time(time.monotonic()) + 0.01)
                for worker in [w for w in busy if w.conn in ready
                               or w.process.sentinel in ready]:
                    key = worker.key
                    outcome = self._collect(worker)
                    if outcome is not None:
                        on_done(key, outcome)
                for key, outcome in self._expire(time.monotonic()):
                    on_done(key, outcome)
        finally:
            for worker in list(self._workers):
                if worker.busy:  # interrupted mid-task: no answer is coming
                    worker.kill()
                else:
                    worker.stop()
            self._workers.clear()


def run_isolated(func: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], *,
                 workers: int, timeout: float,
                 on_done: Callable[[Any, Outcome], None], quiet: bool = True) -> None:
    """Run ``func(argument)`` for each ``(key, argument)`` in worker processes.

    Args:
        func: a module-level function (spawned workers import it by name).
        items: (key, argument) pairs; keys identify the results.
        workers: how many processes run at once.
        timeout: wall-clock seconds each call may take before its worker is killed.
        on_done: called in the parent as ``on_done(key, Outcome)`` for every item, in
            completion order.
        quiet: send the workers' stderr to /dev/null (decoder noise).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    _Pool(func, workers, timeout, quiet).run(items, on_done)
