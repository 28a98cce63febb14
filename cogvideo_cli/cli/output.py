"""Output for people and scripts: results on stdout, logs / progress / hints on stderr.

One ``State`` per invocation holds the global options. Commands hand their result to
``emit``: with ``--json`` it is printed as JSON on stdout, otherwise the command's own
renderer draws it. The one error handler, ``guarded``, wraps every command.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cogvideo_cli.core.errors import CogvxError
from cogvideo_cli.core.progress import Reporter


@dataclass
class State:
    """Global options of this invocation."""

    verbose: int = 0
    quiet: bool = False
    json: bool = False
    debug: bool = False
    workspace: Path | None = None
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def load_workspace(self):
        from cogvideo_cli.core.workspace import Workspace

        return Workspace.load(self.workspace)

    def hint(self, text: str) -> None:
        """A hint or note for people, on stderr; silent with --quiet or --json."""
        if not (self.quiet or self.json):
            self.err.print(text, markup=False, highlight=False)

    def reporter(self) -> Reporter:
        """A progress reporter: a Rich bar on a terminal, silent otherwise."""
        if self.quiet or self.json or not self.err.is_terminal:
            return Reporter()
        return RichReporter(self.err)


STATE = State()


def reset_state(**options: Any) -> State:
    """Start a fresh state for a new invocation (the root callback calls this).

    The one ``STATE`` object is updated in place: command modules import it by name at
    start-up, before the root callback has parsed ``--workspace``, ``--json`` and the rest.
    """
    fresh = State(**options)
    STATE.__dict__.update(fresh.__dict__)
    _configure_logging(STATE)
    return STATE


def _configure_logging(state: State) -> None:
    from rich.logging import RichHandler

    if state.debug or state.verbose >= 2:
        level = logging.DEBUG
    elif state.verbose == 1:
        level = logging.INFO
    elif state.quiet or state.json:
        level = logging.ERROR
    else:
        level = logging.WARNING
    root = logging.getLogger("cogvideo_cli")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = RichHandler(console=state.err, markup=False, show_path=False,
                          show_time=state.verbose >= 1 or state.debug, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class RichReporter(Reporter):
    """Progress bars on stderr with sizes and speed where the unit is bytes."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._columns_bytes = (TextColumn("{task.description}"), BarColumn(),
                               DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        self._columns_items = (TextColumn("{task.description}"), BarColumn(),
                               TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                               TimeRemainingColumn())
        self._progress_cls = Progress
        self._console = console
        self._progress = None
        self._open = 0

    def start(self, description: str, total: float | None = None, unit: str = "") -> int:
        if self._progress is None:
            columns = self._columns_bytes if unit == "B" else self._columns_items
            self._progress = self._progress_cls(*columns, console=self._console,
                                                transient=True)
            self._progress.start()
        self._open += 1
        return self._progress.add_task(description, total=total)

    def advance(self, task: int, amount: float = 1.0, description: str | None = None) -> None:
        if self._progress is not None:
            if description is None:
                self._progress.advance(task, amount)
            else:
                self._progress.update(task, advance=amount, description=description)

    def finish(self, task: int) -> None:
        if self._progress is None:
            return
        self._progress.remove_task(task)
        self._open -= 1
        if self._open <= 0:
            self._progress.stop()
            self._progress = None
            self._open = 0


def emit(result: Any, render: Callable[[Any], None] | None = None) -> None:
    """Show a command's result: JSON on stdout with --json, else the renderer."""
    if STATE.json:
        STATE.out.print_json(json.dumps(result, default=str), highlight=False)
    elif render is not None:
        render(result)


def _show_error(exc: CogvxError) -> None:
    from rich.text import Text

    if STATE.json:
        print(json.dumps(exc.to_dict()), file=sys.stdout)
    # Errors always reach stderr, --quiet or not: a failure must never be silent.
    STATE.err.print(Text("Error: ", style="bold red") + Text(str(exc)), soft_wrap=True)


def _signal_name(exc: KeyboardInterrupt) -> str:
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def guarded(func: Callable) -> Callable:
    """The one error handler: exit 2 for usage errors, 1 for failures, 130 on Ctrl-C.

    SIGTERM and SIGHUP during a run exit 143 and 129 (128 + signal), like Ctrl-C otherwise;
    with --json each of these prints a JSON error object on stdout.

    Tracebacks are shown only with --debug.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except CogvxError as exc:
            if STATE.debug:
                traceback.print_exc(file=sys.stderr)
            _show_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            # Ctrl-C, or SIGTERM / SIGHUP during a run (launch.supervise.Stopped)
            code = 128 + getattr(exc, "signum", signal.SIGINT)
            if STATE.json:
                print(json.dumps({"error": "Interrupted", "kind": "interrupted",
                                  "message": f"interrupted ({_signal_name(exc)})",
                                  "value": None, "fix": None, "exit_code": code}),
                      file=sys.stdout, flush=True)
            STATE.err.print("Interrupted; nothing half-written was kept.", markup=False)
            raise typer.Exit(code) from None
        except Exception as exc:  # an internal bug: say so plainly
            if STATE.debug:
                traceback.print_exc(file=sys.stderr)
            wrapped = CogvxError(f"internal error: {type(exc).__name__}: {exc}",
                                 fix="rerun with --debug for the traceback and report it")
            _show_error(wrapped)
            raise typer.Exit(1) from None

    return wrapper
