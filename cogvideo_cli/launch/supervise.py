"""Run a launch: stream its output to the caller and the log, stop it cleanly.

torchrun starts in its own session so that a terminal's Ctrl-C reaches cogvx alone; cogvx
then stops torchrun (which stops its workers) and, after a grace period, kills whatever
is left of the whole process tree, so an interrupted or failed run leaves no orphans.
SIGTERM and SIGHUP (a batch scheduler's stop, a closed terminal) are handled the same way.
Arguments are passed as lists; no shell is involved.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cogvideo_cli.core.errors import LaunchError
from cogvideo_cli.launch.watch import LogWatcher

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached cogvx during a run: handled like Ctrl-C.

    Attributes:
        signum: the signal; cogvx exits with 128 + signum, as a shell reports it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Stopped` (once; repeats are ignored
    so they cannot cut the clean-up short). Only the main thread can own handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class RunResult:
    """How a launch ended."""

    exit_code: int
    log_path: Path
    throughput: dict[str, float] | None = None
    failed_rank: tuple[int | None, int] | None = None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``); empty where /proc is unavailable."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and brackets: the fields follow the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """Stop a launched process and everything it started.

    torchrun gets SIGTERM first and forwards it to its workers (each in its own session);
    anything still alive after ``grace`` seconds is killed.
    """
    tree = descendants(proc.pid)
    if proc.poll() is None:
        _signal_all([proc.pid], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        tree += [p for p in descendants(proc.pid) if p not in tree]
        if proc.poll() is not None and not _alive(tree):
            break
        time.sleep(0.1)
    _signal_all([p for p in tree if _alive([p])], signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    _reap(tree)


def _alive(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            return True
        if not _is_zombie(pid):
            return True
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].startswith("Z")


def _reap(pids: list[int]) -> None:
    """Wait briefly until the killed processes are gone from the process table."""
    deadline = time.monotonic() + 5
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_supervised(argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path,
                   watcher: LogWatcher | None = None,
                   on_line: Callable[[str], None] | None = None,
                   global_batch: int = 1) -> RunResult:
    """Run ``argv`` to the end, streaming its merged output to ``on_line`` and the log.

    Raises:
        LaunchError: a silent-failure line appeared (the run is stopped first), or the
            command could not start. A non-zero exit code is returned, not raised.
        KeyboardInterrupt: after stopping the whole process tree (Ctrl-C, or
            :class:`Stopped` for SIGTERM / SIGHUP).
    """
    watcher = watcher or LogWatcher()
    full_env = {**os.environ, **env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log_file, stop_signals_interrupt():
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, text=True, errors="replace",
                                    bufsize=1)
        except OSError as exc:
            raise LaunchError(f"could not start {argv[0]}: {exc}", value=argv[0],
                              fix="check the python interpreter and that torch is "
                                  "installed in it") from exc
        try:
            _pump(proc, log_file, watcher, on_line)
            code = proc.wait()
        except BaseException:
            stop_tree(proc)
            raise
        _reap(descendants(proc.pid))
    return RunResult(exit_code=code, log_path=log_path,
                     throughput=watcher.throughput(global_batch),
                     failed_rank=watcher.failed_rank() if code else None)


def _pump(proc: subprocess.Popen, log_file, watcher: LogWatcher,
          on_line: Callable[[str], None] | None) -> None:
    """Copy output lines to the log and the caller until the process closes its output."""
    assert proc.stdout is not None
    for line in proc.stdout:
        log_file.write(line)
        log_file.flush()
        if on_line is not None:
            on_line(line.rstrip("\n"))
        rule = watcher.feed(line)
        if rule is not None:
            log.error("stopping the run: %s", rule.message)
            raise LaunchError(f"stopped the run: {rule.message}",
                              value=line.strip(), fix=rule.fix)
