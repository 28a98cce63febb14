"""What a launch is, independent of the backend: torchrun settings, entry, args, env.

A backend (MindSpeed-MM, diffusers) turns run settings into a :class:`LaunchPlan`; the
generic code here turns the plan into a torchrun argument list, a standalone ``launch.sh``
and the files of the run directory, and ``supervise`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Torchrun:
    """The torchrun launcher's own options (one node's view)."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29505
    python: str = "python"

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def argv(self, node_rank: int | None = None) -> list[str]:
        """``python -m torch.distributed.run`` with this node's options."""
        rank = self.node_rank if node_rank is None else node_rank
        return [self.python, "-m", "torch.distributed.run",
                "--nproc_per_node", str(self.nproc_per_node), "--nnodes", str(self.nnodes),
                "--node_rank", str(rank), "--master_addr", self.master_addr,
                "--master_port", str(self.master_port)]


@dataclass
class LaunchPlan:
    """One run, fully resolved: enough to write the run directory and start torchrun.

    Attributes:
        kind: train, lora, infer or extract.
        backend: the backend that made the plan.
        variant: the variant name.
        root: the working directory of the launch (MindSpeed-MM's repository root).
        entry: the entry script, relative to ``root``.
        args: the entry script's flags in order, flag name (no dashes) -> value:
            True for a bare flag, False/None to leave it out, a list for several values.
        env: variables exported for the launch (on top of the caller's environment).
        torchrun: the launcher options.
        run_dir: the run directory.
        files: rendered file name (inside ``run_dir``) -> text.
        settings: the resolved settings, JSON-ready.
        outputs: what the run produces, name -> path.
        global_batch: samples per optimizer step (for samples per second).
        notes: derived values worth telling the user.
        module: ``entry`` is a module name run with ``-m`` (a package's worker), not a
            script path.
        backend_reason: why the backend was chosen, when cogvx chose it.
    """

    kind: str
    backend: str
    variant: str
    root: Path
    entry: str
    args: dict[str, Any]
    env: dict[str, str]
    torchrun: Torchrun
    run_dir: Path
    files: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    global_batch: int = 1
    notes: list[str] = field(default_factory=list)
    module: bool = False
    backend_reason: str | None = None

    def entry_argv(self) -> list[str]:
        """What follows torchrun's options: the script, or ``-m`` and the module."""
        return ["-m", self.entry] if self.module else [self.entry]

    def arg_list(self) -> list[str]:
        """The entry script's flags as an argument list."""
        return args_to_list(self.args)

    def argv(self, node_rank: int | None = None) -> list[str]:
        """The full command: torchrun, its options, the entry script and its flags."""
        return self.torchrun.argv(node_rank) + self.entry_argv() + self.arg_list()

    @property
    def log_path(self) -> Path:
        """The log cogvx writes for this node."""
        suffix = "" if self.torchrun.nnodes == 1 else f"-node{self.torchrun.node_rank}"
        return self.run_dir / f"{self.kind}{suffix}.log"


def format_number(value: float | int) -> str:
    """Numbers the way the official scripts write them: ``1e-5``, ``0.95``, ``5000``."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        mantissa, _, exponent = f"{value:e}".partition("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        text = f"{mantissa}e{int(exponent)}"
        if float(text) == value:
            return text
    return repr(value)


def args_to_list(args: dict[str, Any]) -> list[str]:
    """Flag dict -> argument list: ``{"lr": 1e-5, "bf16": True}`` -> ``--lr 1e-5 --bf16``."""
    out: list[str] = []
    for name, value in args.items():
        if value is None or value is False:
            continue
        out.append(f"--{name}")
        if value is True:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend(format_number(v) for v in values)
    return out


def flag_value(args: dict[str, Any], name: str) -> Any:
    """A flag's value, or None when absent or switched off."""
    value = args.get(name)
    return None if value is False else value

