"""Option types of the commands that launch torchrun (train, lora, infer, extract-features).

Also the shared steps of those commands: turning options into settings, showing a dry
run, running the launch and showing its result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cogvideo_cli.cli.output import STATE, emit
from cogvideo_cli.core.errors import plural

_P = "Parallel layout"
_B = "Batch and schedule"
_C = "Clip"
_D = "Paths (default: from the workspace)"
_N = "Processes"
_R = "Run"
MAX_SEED = 2**32 - 1  # numpy's seed range; Megatron seeds numpy with it

Backend = Annotated[Optional[str], typer.Option(
    "--backend", help="mindspeed or diffusers (default: MindSpeed-MM when torch_npu and a "
    "checkout are present, else diffusers).", rich_help_panel=_R)]
Variant = Annotated[Optional[str], typer.Option(
    "--variant", help="t2v-1.0, i2v-1.0, t2v-1.5 or i2v-1.5 (default: the workspace's).",
    rich_help_panel=_R)]
TP = Annotated[Optional[int], typer.Option(
    "--tp", min=1, help="Tensor-parallel size (default: the checkpoint's, else the preset).",
    rich_help_panel=_P)]
PP = Annotated[Optional[int], typer.Option(
    "--pp", min=1, help="Pipeline stages (sizes from the checkpoint or a balanced split).",
    rich_help_panel=_P)]
PPLayers = Annotated[Optional[str], typer.Option(
    "--pp-layers", help='Layers per pipeline stage, e.g. "10,11,11,10".',
    rich_help_panel=_P)]
CP = Annotated[int, typer.Option("--cp", min=1, help="Context-parallel (Ulysses) size.",
                                 rich_help_panel=_P)]
SP = Annotated[Optional[bool], typer.Option(
    "--sp/--no-sp", help="Sequence parallel (default: on when TP > 1 for train).",
    rich_help_panel=_P)]
VaeCP = Annotated[int, typer.Option("--vae-cp", min=1, help="VAE context-parallel size.",
                                    rich_help_panel=_P)]
EncoderDP = Annotated[Optional[bool], typer.Option(
    "--encoder-dp/--no-encoder-dp", help="Encoder data parallel (default: the preset's, "
    "off where it cannot work).", rich_help_panel=_P)]
LayerZero = Annotated[bool, typer.Option("--layerzero", help="MindSpeed LayerZero (ZeRO-3).",
                                         rich_help_panel=_P)]
Zero3 = Annotated[Optional[int], typer.Option("--zero3-size", min=1, help="LayerZero group size.",
                                              rich_help_panel=_P)]
MBS = Annotated[int, typer.Option("--mbs", min=1, help="Micro-batch size.", rich_help_panel=_B)]
GBS = Annotated[Optional[int], typer.Option(
    "--gbs", min=1, help="Global batch size (default: MBS x grad-acc x DP).", rich_help_panel=_B)]
GradAcc = Annotated[Optional[int], typer.Option(
    "--grad-acc", min=1, help="Gradient accumulation steps (preset: 4; LoRA: 1).",
    rich_help_panel=_B)]
Iters = Annotated[Optional[int], typer.Option("--iters", min=1, help="Training iterations.",
                                              rich_help_panel=_B)]
LR = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate.",
                                             rich_help_panel=_B)]
MinLR = Annotated[Optional[float], typer.Option("--min-lr", min=0.0, help="Minimum learning rate.",
                                                rich_help_panel=_B)]
Seed = Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed.",
                                             rich_help_panel=_B)]
SaveInterval = Annotated[Optional[int], typer.Option(
    "--save-interval", min=1, help="Save every N iterations (and at the end).", rich_help_panel=_B)]
Resume = Annotated[Optional[Path], typer.Option(
    "--resume", help="diffusers: continue from a checkpoints/step-N folder or a run "
    "directory's newest one; its model, LoRA rank and alpha and process count are kept.",
    rich_help_panel=_B)]
Frames = Annotated[Optional[int], typer.Option("--frames", min=1, help="Frames per clip (4k+1).",
                                               rich_help_panel=_C)]
Height = Annotated[Optional[int], typer.Option("--height", min=16, help="Height (multiple of 16).",
                                               rich_help_panel=_C)]
Width = Annotated[Optional[int], typer.Option("--width", min=16, help="Width (multiple of 16).",
                                              rich_help_panel=_C)]
Load = Annotated[Optional[Path], typer.Option(
    "--load", help="MindSpeed-MM: a checkpoint folder; diffusers: a pipeline folder, or a "
    "transformer folder (convert / merge-lora / train output).", rich_help_panel=_D)]
Save = Annotated[Optional[Path], typer.Option(
    "--save", help="Where checkpoints go (default: RUN_DIR/checkpoints).", rich_help_panel=_D)]
Data = Annotated[Optional[Path], typer.Option("--data", help="data.jsonl.",
                                              rich_help_panel=_D)]
DataFolder = Annotated[Optional[Path], typer.Option(
    "--data-folder", help="Folder the jsonl's file entries are relative to.",
    rich_help_panel=_D)]
Features = Annotated[Optional[Path], typer.Option(
    "--features", help="Train from pre-extracted VAE/T5 features in DIR.",
    rich_help_panel=_D)]
UseFeatures = Annotated[bool, typer.Option(
    "--use-features", help="Train from the features extract-features recorded.",
    rich_help_panel=_D)]
Vae = Annotated[Optional[Path], typer.Option("--vae", help="VAE file (3d-vae.pt).",
                                             rich_help_panel=_D)]
T5 = Annotated[Optional[Path], typer.Option("--t5", help="T5 text-encoder folder.",
                                            rich_help_panel=_D)]
Tokenizer = Annotated[Optional[Path], typer.Option("--tokenizer", help="T5 tokenizer folder.",
                                                   rich_help_panel=_D)]
MindSpeed = Annotated[Optional[Path], typer.Option(
    "--mindspeed-mm", help="MindSpeed-MM checkout (the launch root).", rich_help_panel=_D)]
Nproc = Annotated[Optional[int], typer.Option(
    "--nproc-per-node", min=1, help="Processes (devices) per node.", rich_help_panel=_N)]
Nnodes = Annotated[int, typer.Option("--nnodes", min=1, help="Number of nodes.",
                                     rich_help_panel=_N)]
NodeRank = Annotated[int, typer.Option("--node-rank", min=0, help="This node's rank.",
                                       rich_help_panel=_N)]
MasterAddr = Annotated[str, typer.Option("--master-addr", help="Node 0's address.",
                                         rich_help_panel=_N)]
MasterPort = Annotated[Optional[int], typer.Option(
    "--master-port", min=1, max=65535,
    help="Rendezvous port (preset: 29505 train, 6000 LoRA / infer).", rich_help_panel=_N)]
SingleHost = Annotated[bool, typer.Option(
    "--single-host", help="All nodes run on this machine (testing): allows a loopback "
    "master address.", rich_help_panel=_N)]
Python = Annotated[Optional[str], typer.Option(
    "--python", help="Python that runs torchrun (default: this one).", rich_help_panel=_N)]
Env = Annotated[Optional[list[str]], typer.Option(
    "--env", help="KEY=VALUE for the launched processes (repeatable).", rich_help_panel=_R)]
Set = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Config override, e.g. predictor.num_layers=64 or args.log-interval=10.",
    rich_help_panel=_R)]
RunDir = Annotated[Optional[Path], typer.Option(
    "--run-dir", help="Run directory (default: WORKSPACE/runs/KIND-VARIANT-TIME).",
    rich_help_panel=_R)]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing run directory.",
                                     rich_help_panel=_R)]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Check everything and show the command and configs; run nothing.",
    rich_help_panel=_R)]


def int_list(text: str | None, option: str) -> list[int] | None:
    """Parse "10,11,11,10" or "10 11 11 10"."""
    if text is None:
        return None
    from cogvideo_cli.core.errors import UsageError

    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a list of integers",
                         fix=f'write e.g. {option} "10,11,11,10"') from None


def word_list(values: list[str] | None) -> list[str] | None:
    """Flatten repeated and comma/space separated words."""
    if not values:
        return None
    return [w for v in values for w in re.split(r"[,\s]+", v.strip()) if w]


def default_variant(given: str | None, workspace) -> str:
    """The variant: given, else the workspace's, else the checkpoint's or weights'."""
    return variant_and_source(given, workspace)[0]


def variant_and_source(given: str | None, workspace) -> tuple[str, str | None]:
    """The variant and where it came from (None: --variant), for messages that say so."""
    from cogvideo_cli.core.errors import UsageError

    if given:
        return given, None
    for section in ("workspace", "checkpoint", "weights"):
        value = workspace.get(section, "variant")
        if value:
            return value, f"the workspace's [{section}] variant"
    raise UsageError("no variant given and none recorded in the workspace",
                     fix="pass --variant t2v-1.0 (or i2v-1.0, t2v-1.5, i2v-1.5)")


def show_dry_run(info: dict) -> None:
    """Human dry run: summary, launch.sh, then each rendered config."""
    out = STATE.out
    out.print(f"{info['summary']}", markup=False)
    out.print(f"run directory: {info['run_dir']}", markup=False)
    for note in info["notes"]:
        out.print(f"note: {note}", markup=False)
    for rank, command in info["other_nodes"].items():
        out.print(f"node {rank} runs: {command}", markup=False)
    out.print("--- launch.sh ---", markup=False)
    out.print(info["launch_sh"], markup=False, end="")
    for name, text in info["configs"].items():
        out.print(f"--- {name} ---", markup=False)
        out.print(text, markup=False, end="")


def summary_line(plan) -> str:
    """One line: what runs where, with the parallel layout."""
    s, run = plan.settings, plan.torchrun
    where = (f"{plural(run.world_size, 'process')} ({plural(run.nnodes, 'node')} x "
             f"{run.nproc_per_node}), node rank {run.node_rank}")
    if plan.kind in ("train", "lora") and plan.backend == "diffusers":
        where += f"; DDP {s['dp']}, MBS {s['mbs']}, GBS {s['gbs']}, {s['iters']} steps"
    elif plan.kind in ("train", "lora"):
        pp = len(s["pp_layers"]) or 1
        where += (f"; TP {s['tp']}, PP {pp}, CP {s['cp']}, DP {s['dp']}, "
                  f"MBS {s['mbs']}, GBS {s['gbs']}")
    return f"cogvx {plan.kind} {plan.variant} on {plan.backend}: {where}"


def execute(settings, force: bool, dry_run: bool) -> None:
    """Plan, check, then dry-run or launch; the shared body of the launching commands."""
    from cogvideo_cli.launch.run import describe, prepare_run, start_run
    from cogvideo_cli.launch.script import launch_script

    workspace = STATE.load_workspace()
    plan = prepare_run(settings, workspace)
    info = describe(plan)
    info["summary"] = summary_line(plan)
    if dry_run:
        info["launch_sh"] = launch_script(plan)
        emit(info, show_dry_run)
        return
    if plan.backend_reason:
        STATE.hint(f"backend {plan.backend}: {plan.backend_reason}")
    STATE.hint(info["summary"])
    for rank, command in info["other_nodes"].items():
        STATE.hint(f"start node {rank} with: {command}")
    stream = None if (STATE.quiet or STATE.json) else _echo
    result = start_run(plan, workspace, force=force, on_line=stream)
    done = {"run_dir": str(plan.run_dir), "exit_code": result.exit_code,
            "throughput": result.throughput, "outputs": plan.outputs}
    emit(done, _show_done)


def _echo(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _show_done(done: dict) -> None:
    out = STATE.out
    speed = done["throughput"]
    if speed:
        out.print(f"step time {speed['step_time_ms']:.1f} ms, "
                  f"{speed['samples_per_second']:.3f} samples/s "
                  f"(mean over {speed['iterations']} logged iterations)", markup=False)
    for name, path in done["outputs"].items():
        out.print(f"{name}: {path}", markup=False)
    out.print(f"run directory: {done['run_dir']}", markup=False)
