"""From settings to a finished run, for any backend: plan, check, write, launch.

``prepare_run`` plans and checks (nothing written, nothing started); ``start_run`` writes
the run directory, runs torchrun under supervision, records a run that succeeded in the
workspace and turns a failure into a :class:`LaunchError` that carries torchrun's exit
code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cogvideo_cli.core import rules
from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.errors import LaunchError
from cogvideo_cli.core.templates import write_run_dir
from cogvideo_cli.core.workspace import Workspace
from cogvideo_cli.launch.plan import LaunchPlan
from cogvideo_cli.launch.script import other_node_command, record_files
from cogvideo_cli.launch.supervise import RunResult, run_supervised
from cogvideo_cli.launch.watch import LogWatcher


def prepare_run(settings: RunSettings, workspace: Workspace) -> LaunchPlan:
    """Plan a run with its backend and check every rule; raises on the first bad plan.

    A backend of ``auto`` is chosen here (:func:`~cogvideo_cli.backends.choose_backend`);
    the plan's ``backend_reason`` then says which one and why.
    """
    from cogvideo_cli.backends import choose_backend, get_backend

    reason = None
    if settings.backend == "auto":
        settings.backend, reason = choose_backend(settings, workspace)
    plan, facts = get_backend(settings.backend).plan_run(settings, workspace)
    if reason is not None:
        plan.backend_reason = reason
        plan.notes.insert(0, f"backend {plan.backend}: {reason}")
    rules.check(facts)
    return plan


def describe(plan: LaunchPlan) -> dict[str, Any]:
    """A JSON-ready view of a plan: command, environment, configs, outputs."""
    run = plan.torchrun
    return {
        "kind": plan.kind, "backend": plan.backend, "variant": plan.variant,
        "run_dir": str(plan.run_dir), "cwd": str(plan.root), "argv": plan.argv(),
        "env": plan.env, "world_size": run.world_size, "global_batch": plan.global_batch,
        "files": sorted(record_files(plan)), "configs": plan.files,
        "outputs": plan.outputs, "notes": plan.notes, "backend_reason": plan.backend_reason,
        "other_nodes": {str(rank): other_node_command(plan, rank)
                        for rank in range(run.nnodes) if rank != run.node_rank},
    }


def write_run(plan: LaunchPlan, force: bool = False) -> None:
    """Write the run directory (configs, launch.sh, command, settings, versions)."""
    write_run_dir(plan.run_dir, record_files(plan), force=force)


def record_run(plan: LaunchPlan, workspace: Workspace) -> None:
    """Remember a finished run in the workspace so later commands can chain on it.

    Called only after a run succeeded: the LoRA, checkpoint and feature records must name
    outputs that exist (a failed or interrupted run keeps the previous records).
    """
    values: dict[str, Any] = {"last": str(plan.run_dir), f"last_{plan.kind}": str(plan.run_dir)}
    if plan.kind == "lora":
        # diffusers saves the LoRA apart from its resumable training states
        values.update(lora_save=plan.outputs.get("lora") or plan.outputs.get("checkpoints"),
                      lora_rank=int(plan.settings.get("lora_r", 0)),
                      lora_alpha=float(plan.settings.get("lora_alpha", 0)),
                      lora_base=_lora_base(plan))
    if plan.kind == "extract":
        workspace.record("data", features=plan.outputs["features"])
    values = {k: v for k, v in values.items() if k in _RUN_KEYS}
    workspace.record("runs", **values)


_RUN_KEYS = ("last", "last_train", "last_lora", "last_infer", "lora_save", "lora_rank",
             "lora_alpha", "lora_base")


def _lora_base(plan: LaunchPlan) -> str | None:
    """The weights a LoRA run trained on: merge-lora's default base for that LoRA."""
    base = plan.settings.get("lora_base")
    if base is None:
        base = (plan.settings.get("resolved_paths") or {}).get("load")
    return base or None


def start_run(plan: LaunchPlan, workspace: Workspace, *, force: bool = False,
              on_line: Callable[[str], None] | None = None) -> RunResult:
    """Write the run directory, launch, supervise; raise LaunchError on a failed run.

    The workspace records the run only once it succeeded.
    """
    write_run(plan, force=force)
    result = run_supervised(plan.argv(), cwd=plan.root, env=plan.env,
                            log_path=plan.log_path, watcher=_watcher(plan),
                            on_line=on_line, global_batch=plan.global_batch)
    if result.exit_code != 0:
        raise _failure(result)
    record_run(plan, workspace)
    return result


def _watcher(plan: LaunchPlan) -> LogWatcher:
    """Megatron's silent-failure lines mean nothing in the diffusers workers' output."""
    return LogWatcher() if plan.backend == "mindspeed" else LogWatcher(rules=())


def _failure(result: RunResult) -> LaunchError:
    """The error for a failed run: the failing rank's exit code when torchrun names it."""
    status = _exit_status(result.exit_code)
    message = f"torchrun exited with status {result.exit_code}"
    if result.failed_rank is not None:
        rank, code = result.failed_rank
        message = f"rank {rank} failed with exit code {code}; {message}"
        if code > 0:
            status = code
    return LaunchError(message, value=status,
                       fix=f"read the log {result.log_path} (the failing rank's traceback "
                           "is above torchrun's summary)", exit_code=status)


def _exit_status(code: int) -> int:
    """A process exit status for cogvx itself: signals become 128 + signal number."""
    return 128 - code if code < 0 else code
