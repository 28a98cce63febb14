"""The standalone ``launch.sh`` and the run-directory records of a plan.

``launch.sh`` repeats exactly what cogvx runs, for people who want to run it without
cogvx: every path and value is quoted, ``set -o pipefail`` keeps torchrun's exit status
through ``tee``, and ``NODE_RANK`` picks the node on multi-node runs.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from cogvideo_cli import __version__
from cogvideo_cli.launch.plan import LaunchPlan

# Environment variables worth recording beside cogvx's own: they change what runs.
_RECORDED_PREFIXES = ("ASCEND_", "HCCL_", "CUDA_", "NPU_", "PYTORCH_", "TORCH_", "MASTER_",
                      "NCCL_", "OMP_")
_RECORDED_NAMES = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX")
_PACKAGES = ("cogvx", "torch", "torch_npu", "mindspeed", "mindspeed_mm", "megatron_core",
             "transformers", "diffusers", "peft", "decord", "typer", "rich")


def launch_script(plan: LaunchPlan) -> str:
    """The text of ``launch.sh`` for a plan."""
    q = shlex.quote
    run = plan.torchrun
    lines = [
        "#!/usr/bin/env bash",
        f"# {plan.kind} {plan.variant} on {plan.backend}, written by cogvx {__version__}.",
        "# Runs without cogvx. On a multi-node run start it on every node with NODE_RANK set.",
        "set -o pipefail",
        'NODE_RANK="${NODE_RANK:-' + str(run.node_rank) + '}"',
        f'LOG="${{LOG:-{q(str(plan.run_dir))}/{plan.kind}-launch-node$NODE_RANK.log}}"',
    ]
    lines += [f"export {key}={q(value)}" for key, value in plan.env.items()]
    lines.append(f"cd {q(str(plan.root))} || exit 1")
    torchrun = [q(part) for part in run.argv()]
    torchrun[torchrun.index("--node_rank") + 1] = '"$NODE_RANK"'
    command = torchrun + [q(part) for part in plan.entry_argv() + plan.arg_list()]
    lines.append(_wrap(command) + ' 2>&1 | tee -a "$LOG"')
    lines.append("exit ${PIPESTATUS[0]}")
    return "\n".join(lines) + "\n"


def _wrap(words: list[str], width: int = 96) -> str:
    """Join shell words, breaking lines with backslashes before flags."""
    out, line = [], ""
    for word in words:
        if line and word.startswith("--") and len(line) + len(word) + 1 > width:
            out.append(line + " \\")
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


def other_node_command(plan: LaunchPlan, node_rank: int) -> str:
    """What a person runs on another node (the run directory on a shared file system)."""
    script = shlex.quote(str(plan.run_dir / "launch.sh"))
    return f"NODE_RANK={node_rank} bash {script}"


def recorded_environment(plan: LaunchPlan) -> dict[str, str]:
    """The launch environment worth keeping: cogvx's exports plus the relevant inherited."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(_RECORDED_PREFIXES) or k in _RECORDED_NAMES}
    env.update(plan.env)
    return dict(sorted(env.items()))


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter, read without importing them."""
    versions: dict[str, str | None] = {"python": platform.python_version(),
                                       "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def checkout_commit(root: Path) -> str | None:
    """The git commit of a checkout, read from ``.git`` without running git."""
    head = root / ".git" / "HEAD"
    try:
        text = head.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not text.startswith("ref: "):
        return text
    ref = root / ".git" / text[5:]
    try:
        return ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def record_files(plan: LaunchPlan) -> dict[str, str]:
    """Every file of the run directory: configs, launch.sh, command, settings, versions."""
    command = {
        "cwd": str(plan.root),
        "argv": plan.argv(),
        "env": plan.env,
        "environment": recorded_environment(plan),
        "cogvx_argv": sys.argv,
    }
    versions = package_versions()
    versions["checkout_commit"] = checkout_commit(plan.root)
    files = dict(plan.files)
    files["launch.sh"] = launch_script(plan)
    files["command.json"] = json.dumps(command, indent=2) + "\n"
    files["settings.json"] = json.dumps(plan.settings, indent=2, default=str) + "\n"
    files["versions.json"] = json.dumps(versions, indent=2) + "\n"
    return files
