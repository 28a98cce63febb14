"""Reading a run's log as it streams: silent-failure lines and step times.

Megatron starts from random weights with only a warning when the checkpoint tracker is
missing, and several checkpoint-load failures exit with status 0. The watcher recognises
those lines so the run stops with a clear error instead of training noise for hours.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WatchRule:
    """A log line that means the run is not doing what was asked."""

    pattern: re.Pattern
    message: str
    fix: str


def _rule(pattern: str, message: str, fix: str) -> WatchRule:
    return WatchRule(re.compile(pattern, re.IGNORECASE), message, fix)


_LOAD_FIX = ("check --load with `cogvx checkpoint verify` (tracker file "
             "latest_checkpointed_iteration.txt and one mp_rank_* folder per TP x PP rank)")

SILENT_FAILURES: tuple[WatchRule, ...] = (
    _rule(r"will start from random", "the model is starting from random weights: "
          "the checkpoint was not found", _LOAD_FIX),
    _rule(r"exit-on-missing-checkpoint' set", "the checkpoint was not found "
          "(Megatron exits with status 0 here)", _LOAD_FIX),
    _rule(r"could not load the checkpoint", "the checkpoint could not be loaded", _LOAD_FIX),
    _rule(r"invalid metadata file", "the checkpoint tracker file is unreadable", _LOAD_FIX),
    _rule(r"missing[_ ]keys?[=:(\s]+\[?\s*['\"]", "the model is missing weights from the "
          "checkpoint; those layers start from random values",
          "convert the checkpoint for this variant and TP/PP layout, then verify it"),
)

_STEP = re.compile(r"elapsed time per iteration \(ms\):\s*([0-9.]+)")
# the diffusers workers' step line: "step 3/10 loss 0.52 lr 1.000e-04 step_time 0.412s ..."
_STEP_S = re.compile(r"\bstep \d+/\d+ loss \S+ .*\bstep_time ([0-9.]+)s")
# torchrun's failure summary: "rank      : 1 (local_rank: 1)" then "exitcode  : 3 (pid: ..)"
_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_ROOT_CAUSE = re.compile(r"Root Cause")


@dataclass
class LogWatcher:
    """Feed it lines; it reports the first silent-failure line and collects step times."""

    rules: tuple[WatchRule, ...] = SILENT_FAILURES
    step_times_ms: list[float] = field(default_factory=list)
    hit: tuple[WatchRule, str] | None = None
    failures: list[tuple[int | None, int]] = field(default_factory=list)
    _rank: int | None = None
    _root_cause_at: int | None = None

    def feed(self, line: str) -> WatchRule | None:
        """Look at one line; returns the rule it breaks, the first time one is broken."""
        step = _STEP.search(line)
        if step:
            self.step_times_ms.append(float(step.group(1)))
        seconds = None if step else _STEP_S.search(line)
        if seconds:
            self.step_times_ms.append(float(seconds.group(1)) * 1000.0)
        self._failure_summary(line)
        if self.hit is not None:
            return None
        for rule in self.rules:
            if rule.pattern.search(line):
                self.hit = (rule, line.strip())
                return rule
        return None

    def _failure_summary(self, line: str) -> None:
        if _ROOT_CAUSE.search(line):
            self._root_cause_at = len(self.failures)
        rank = _RANK.match(line)
        if rank:
            self._rank = int(rank.group(1))
        code = _EXITCODE.match(line)
        if code:
            self.failures.append((self._rank, int(code.group(1))))

    def failed_rank(self) -> tuple[int | None, int] | None:
        """(rank, exit code) of the first failure torchrun reported, the root cause first."""
        if not self.failures:
            return None
        at = self._root_cause_at
        return self.failures[at] if at is not None and at < len(self.failures) \
            else self.failures[0]

    def step_time_ms(self) -> float | None:
        """Mean step time as the official scripts compute it (iterations 101-200).

        Shorter runs use every iteration after the first, which includes start-up costs.
        """
        times = self.step_times_ms
        if len(times) >= 200:
            window = times[100:200]
        elif len(times) > 1:
            window = times[1:]
        else:
            window = times
        return statistics.fmean(window) if window else None

    def throughput(self, global_batch: int) -> dict[str, float] | None:
        """Step time and samples per second (``GBS * 1000 / step_ms``)."""
        step = self.step_time_ms()
        if not step:
            return None
        return {"step_time_ms": round(step, 3),
                "samples_per_second": round(global_batch * 1000.0 / step, 3),
                "iterations": len(self.step_times_ms)}
