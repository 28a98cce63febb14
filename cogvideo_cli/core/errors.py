"""The error family of the engine: what was wrong, the value, and what to do.

The engine never prints and never exits. It raises one of these; the CLI's single error
handler turns it into a red ``Error:`` line on stderr (or a JSON object with ``--json``)
and the exit code the error carries: 2 for a usage error, 1 for a failure.
"""

from __future__ import annotations

from typing import Any


class CogvxError(Exception):
    """A problem the user can act on.

    Args:
        message: what was wrong, in one sentence.
        value: the offending value, shown quoted after the message when given.
        fix: what to do about it, ideally the next command to run.
    """

    exit_code = 1
    kind = "failure"

    def __init__(self, message: str, *, value: Any = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.value = value
        self.fix = fix

    def __str__(self) -> str:
        text = self.message
        if self.value is not None and repr(self.value) not in text and str(self.value) not in text:
            # quote plain values; show paths and other objects as people write them
            shown = repr(self.value) if isinstance(self.value, (str, int, float)) else \
                str(self.value)
            text += f" (got {shown})"
        if self.fix:
            text += f"\nFix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for ``--json`` output."""
        return {
            "error": type(self).__name__,
            "kind": self.kind,
            "message": self.message,
            "value": None if self.value is None else str(self.value),
            "fix": self.fix,
            "exit_code": self.exit_code,
        }


class UsageError(CogvxError):
    """Bad command-line input: a value or combination of options that cannot work."""

    exit_code = 2
    kind = "usage"


class ConfigError(CogvxError):
    """A workspace file, template or run config that is malformed or inconsistent."""


class CheckError(CogvxError):
    """A pre-flight rule failed (parallel layout, frames, paths, environment)."""


class CheckpointError(CogvxError):
    """A checkpoint that cannot be read, converted or verified."""


class DataError(CogvxError):
    """A dataset problem: unreadable videos, bad captions, nothing usable."""


class DownloadError(CogvxError):
    """A download that failed, could not be verified, or reached no endpoint."""


class LaunchError(CogvxError):
    """A launched process that failed or showed a silent-failure sign."""

    def __init__(self, message: str, *, value: Any = None, fix: str | None = None,
                 exit_code: int = 1) -> None:
        super().__init__(message, value=value, fix=fix)
        self.exit_code = exit_code


class NotSupportedError(CogvxError):
    """Something cogvx knowingly does not support yet; says what and for which case."""


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 process``, ``2 processes``: a count with its noun in the right number."""
    if count == 1:
        return f"{count} {word}"
    if many is None:
        many = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{count} {many}"
