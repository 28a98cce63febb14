"""How the engine reports progress without printing: a small callback object.

The engine calls ``task = reporter.start("converting", total=bytes)`` then
``reporter.advance(task, n)`` and ``reporter.finish(task)``. The CLI passes a Rich-backed
reporter; library callers and tests get the silent default.
"""

from __future__ import annotations


class Reporter:
    """Silent progress reporter; subclasses show it."""

    def start(self, description: str, total: float | None = None, unit: str = "") -> int:
        return 0

    def advance(self, task: int, amount: float = 1.0, description: str | None = None) -> None:
        return None

    def finish(self, task: int) -> None:
        return None


SILENT = Reporter()
