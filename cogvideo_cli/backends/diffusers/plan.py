"""Plan a diffusers-backend run for ``cogvx train``, ``lora`` and ``infer``.

The shared options of the launching commands map onto the engine's
:func:`~cogvideo_cli.backends.diffusers.engine.plan_train` and
:func:`~cogvideo_cli.backends.diffusers.engine.plan_infer`, which check everything and
build the worker's ``run_config.json``; this module wraps the result in the
:class:`~cogvideo_cli.launch.plan.LaunchPlan` every backend hands to the shared launch code
(run directory with ``launch.sh``, workspace records, supervised torchrun). Options that
only mean something to MindSpeed-MM are refused, each with its value and the fix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cogvideo_cli.backends.diffusers import engine
from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.errors import NotSupportedError, UsageError
from cogvideo_cli.core.rules import Facts, check_values
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.core.workspace import Workspace
from cogvideo_cli.launch.plan import LaunchPlan, Torchrun

NAME = "diffusers"
DEFAULT_LORA_TARGETS = ["proj_qkv", "proj_out"]  # RunSettings' MindSpeed-MM default
_FIX = "drop it, or pass --backend mindspeed"
LORA_RANK, LORA_ALPHA = 128, 64.0  # the LoRA defaults of `cogvx lora`


def plan_run(s: RunSettings, ws: Workspace) -> tuple[LaunchPlan, Facts]:
    """Resolve, check and describe one train, lora or infer run on diffusers."""
    if s.kind == "extract":
        raise NotSupportedError(
            "extract-features runs on MindSpeed-MM only; the diffusers backend encodes "
            "videos and captions on the fly while it trains", value=s.kind,
            fix="train directly with --backend diffusers, or pass --backend mindspeed")
    check_values(s)
    refuse_unsupported(s)
    if s.kind in ("train", "lora"):
        return _plan_train(s, ws)
    if s.kind == "infer":
        return _plan_infer(s, ws)
    raise UsageError(f"unknown run kind {s.kind!r}", fix="use train, lora or infer")


# --- options the backend does not take ----------------------------------------------------

def _unsupported(s: RunSettings) -> list[tuple[str, Any, str]]:
    """(option, value, why) for every MindSpeed-MM-only option that was set."""
    world = _nproc(s)
    found = [
        ("--tp", s.tp, "it trains with plain data parallel (DDP)") if (s.tp or 1) > 1 else None,
        ("--pp", s.pp, "it has no pipeline parallel") if (s.pp or 1) > 1 else None,
        ("--pp-layers", s.pp_layers, "it has no pipeline parallel") if s.pp_layers else None,
        ("--cp", s.cp, "it has no context parallel") if s.cp != 1 else None,
        ("--sp", s.sp, "it has no sequence parallel") if s.sp else None,
        ("--vae-cp", s.vae_cp, "its VAE runs whole on each process") if s.vae_cp != 1
        else None,
        ("--encoder-dp", s.encoder_dp, "every process encodes its own batch")
        if s.encoder_dp else None,
        ("--layerzero", s.layerzero, "it has no ZeRO-3") if s.layerzero else None,
        ("--zero3-size", s.zero3_size, "it has no ZeRO-3") if s.zero3_size else None,
        ("--grad-acc", s.grad_acc, "it takes one micro-batch per step")
        if (s.grad_acc or 1) > 1 else None,
        ("--gbs", s.gbs, f"its global batch is --mbs x processes = {s.mbs * world}")
        if s.gbs is not None and s.gbs != s.mbs * world else None,
        ("--min-lr", s.min_lr, "its learning rate stays constant after warm-up")
        if s.min_lr is not None else None,
        ("--save", s.save, "checkpoints go to RUN_DIR/checkpoints; choose --run-dir")
        if s.save else None,
        ("--features", s.features, "it encodes videos on the fly") if s.features else None,
        ("--vae", s.vae, "the VAE comes from the pipeline folder (--load)") if s.vae
        else None,
        ("--t5", s.t5, "the T5 comes from the pipeline folder (--load)") if s.t5 else None,
        ("--tokenizer", s.tokenizer, "the tokenizer comes from the pipeline folder (--load)")
        if s.tokenizer else None,
        ("--lora-dropout", s.lora_dropout, "its LoRA has no dropout")
        if s.lora_dropout else None,
        ("--lora-target-modules", s.lora_target_modules,
         f"its LoRA targets the attention projections {', '.join(engine.LORA_TARGETS)}")
        if s.lora_target_modules != DEFAULT_LORA_TARGETS else None,
        ("--set", s.overrides, "it renders no MindSpeed-MM configs") if s.overrides else None,
    ]
    found += _process_options(s)
    return [item for item in found if item is not None]


def _process_options(s: RunSettings) -> list[tuple[str, Any, str] | None]:
    """Multi-node options: the backend runs on one machine, rendezvous on 127.0.0.1."""
    loopback = s.master_addr in ("127.0.0.1", "localhost")
    return [
        ("--nnodes", s.nnodes, "it runs on one node") if s.nnodes != 1 else None,
        ("--node-rank", s.node_rank, "it runs on one node") if s.node_rank else None,
        ("--master-addr", s.master_addr, "its rendezvous is on 127.0.0.1")
        if not loopback else None,
        ("--single-host", True, "it runs on one node") if s.single_host else None,
    ]


def _nproc(s: RunSettings) -> int:
    """Processes on the one node: the chosen count (never a silently replaced 0), else 1."""
    return 1 if s.nproc_per_node is None else s.nproc_per_node


def refuse_unsupported(s: RunSettings) -> None:
    """Raise one usage error naming every option the diffusers backend cannot honour."""
    found = _unsupported(s)
    if not found:
        return
    if len(found) == 1:
        option, value, why = found[0]
        raise UsageError(f"{option} is not supported by the diffusers backend: {why}",
                         value=value, fix=_FIX)
    lines = [f"{len(found)} options are not supported by the diffusers backend:"]
    lines += [f"  - {option} {value!r}: {why}" for option, value, why in found]
    raise UsageError("\n".join(lines), fix="drop them, or pass --backend mindspeed")


# --- the model ----------------------------------------------------------------------------

def resolve_model(s: RunSettings, ws: Workspace) -> tuple[Path, Path | None]:
    """(pipeline folder, transformer folder or None) from --load or the workspace.

    ``--load`` may name a whole pipeline folder, or a transformer folder alone (the output
    of ``convert mm-to-hf``, ``merge-lora`` or a full fine-tuning run); the VAE, T5 and
    scheduler then come from the workspace's ``[weights] diffusers`` pipeline.
    """
    pipeline = ws.path_value("weights", "diffusers")
    if not s.load:
        if pipeline is None:
            raise UsageError("no diffusers model given, and the workspace records none",
                             fix="pass --load DIR, or build one with `cogvx tiny-model --out "
                                 "DIR`, or run `cogvx download --format diffusers`")
        return pipeline, None
    load = Path(s.load).expanduser().absolute()
    if (load / "model_index.json").is_file():
        return load, None
    if (load / "latest_checkpointed_iteration.txt").is_file():
        raise UsageError(f"--load {load} is a MindSpeed-MM checkpoint; the diffusers backend "
                         "reads diffusers folders", value=str(load),
                         fix=f"convert it: cogvx convert mm-to-hf --source {load}, then pass "
                             "the result to --load")
    if (load / "config.json").is_file():
        if pipeline is None:
            raise UsageError(f"--load {load} is a transformer folder alone; the VAE, T5 and "
                             "scheduler must come from a pipeline folder, and the workspace "
                             "records none", value=str(load),
                             fix="run `cogvx download --format diffusers` or `cogvx "
                                 "tiny-model` first, or pass a whole pipeline to --load")
        return pipeline, load
    raise UsageError(f"--load {load} is neither a diffusers pipeline folder "
                     "(model_index.json) nor a transformer folder (config.json)",
                     value=str(load), fix="pass a diffusers pipeline or transformer folder")


def _run_dir(s: RunSettings, kind: str, variant: str, ws: Workspace) -> Path:
    from cogvideo_cli.backends.mindspeed.plan import default_run_dir

    return Path(s.run_dir).absolute() if s.run_dir else default_run_dir(kind, variant, ws)


def _data(s: RunSettings, ws: Workspace) -> tuple[Path, Path | None]:
    data_path = Path(s.data_path).expanduser().absolute() if s.data_path else \
        ws.path_value("data", "data_path")
    if data_path is None:
        raise UsageError("no data.jsonl given, and the workspace records none",
                         fix="run `cogvx prepare-data DIR` first, or pass --data FILE")
    folder = Path(s.data_folder).expanduser().absolute() if s.data_folder else \
        ws.path_value("data", "data_folder")
    return data_path, folder


def _resume(s: RunSettings, run_dir: Path) -> Path | None:
    """The --resume path; never inside the run directory a --force would replace."""
    if not s.resume:
        return None
    resume = Path(s.resume).expanduser().absolute()
    if resume == run_dir or resume.is_relative_to(run_dir):
        raise UsageError("--resume points into the run directory this run would replace",
                         value=str(resume), fix="give the new run another --run-dir")
    return resume


def _resumed(s: RunSettings) -> dict[str, Any]:
    """What the --resume checkpoint was trained with ({} without --resume)."""
    if not s.resume:
        return {}
    return engine.resumed_run(Path(s.resume).expanduser().absolute())


def _model_variant(s: RunSettings, facts: dict[str, Any], notes: list[str]) -> str:
    """The run's variant: the model's; a --variant that differs is refused.

    A variant nobody passed (the workspace's) never overrides the model: it is noted.
    """
    found = facts["variant"]
    asked = get_variant(s.variant).name if s.variant else found
    if asked == found:
        return found
    if s.variant_source is None:
        raise UsageError(f"--variant {s.variant} does not match the model, which is {found}",
                         value=s.variant,
                         fix=f"pass --variant {found}, or --load a {asked} model")
    notes.append(f"variant {found}, the model's ({s.variant_source} is {asked})")
    return found


def _data_checked_for(data_path: Path, ws: Workspace) -> tuple[str | None, int | None]:
    """(variant, clip frames) prepare-data checked the data for, where it says."""
    report_path = data_path.parent / "report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            frames = (report.get("settings") or {}).get("num_frames")
            return report.get("variant"), int(frames) if frames else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None, None
    if ws.path_value("data", "data_path") == data_path:
        return ws.get("data", "variant"), None
    return None, None


def _check_data(data_path: Path, variant: str, frames: int, notes: list[str],
                ws: Workspace) -> None:
    """Refuse clips longer than prepare-data checked for; note a different variant."""
    checked_variant, checked_frames = _data_checked_for(data_path, ws)
    fix = f"rerun `cogvx prepare-data SOURCE --variant {variant} --frames {frames}`"
    if checked_frames is not None and frames > checked_frames:
        raise UsageError(f"the data {data_path} was checked for {checked_frames}-frame "
                         f"clips; this run takes {frames}, which some videos may not give",
                         value=frames, fix=f"{fix}, or pass --frames {checked_frames}")
    if checked_variant and checked_variant != variant:
        notes.append(f"the data was checked against {checked_variant}, the run is "
                     f"{variant}; if a video fails to load, {fix}")


# --- training ------------------------------------------------------------------------------

def _train_model(s: RunSettings, ws: Workspace,
                 resumed: dict[str, Any]) -> tuple[Path, Path | None]:
    """--load, else the resumed run's own model (while it exists), else the workspace's."""
    model = resumed.get("model")
    if not s.load and model and (Path(model) / "model_index.json").is_file():
        transformer = resumed.get("transformer")
        return Path(model), Path(transformer) if transformer else None
    return resolve_model(s, ws)


def _resumed_value(given: Any, resumed: dict[str, Any], key: str, default: Any) -> Any:
    """A LoRA value: given, else the resumed checkpoint's, else the default."""
    if given is not None:
        return given
    return (resumed.get("lora") or {}).get(key, default)


def _plan_train(s: RunSettings, ws: Workspace) -> tuple[LaunchPlan, Facts]:
    resumed = _resumed(s)
    model, transformer = _train_model(s, ws, resumed)
    notes: list[str] = []
    variant = _model_variant(s, engine.model_facts(model, transformer), notes)
    run_dir = _run_dir(s, s.kind, variant, ws)
    data_path, data_folder = _data(s, ws)

    # with --resume, the process count and the LoRA shape are the checkpoint's unless given
    nproc = s.nproc_per_node or resumed.get("world_size") or 1
    options: dict[str, Any] = {
        "steps": s.iters, "lr": s.lr, "seed": s.seed, "save_every": s.save_interval,
        "frames": s.frames, "height": s.height, "width": s.width}
    run = engine.plan_train(
        model=model, transformer=transformer, data_path=data_path, data_folder=data_folder,
        run_dir=run_dir, kind=s.kind, variant=variant, micro_batch_size=s.mbs,
        nproc=nproc, resume=_resume(s, run_dir),
        lora_rank=_resumed_value(s.lora_r, resumed, "rank", LORA_RANK),
        lora_alpha=_resumed_value(s.lora_alpha, resumed, "alpha", LORA_ALPHA),
        master_port=s.master_port, python=s.python, force=True, write=False,
        **{k: v for k, v in options.items() if v is not None})
    _check_data(data_path, variant, run.config["frames"], notes, ws)
    run.notes += notes

    plan = _launch_plan(s, run, global_batch=s.mbs * nproc)
    plan.settings.update(tp=1, pp_layers=[], cp=1, dp=nproc, mbs=s.mbs, gbs=s.mbs * nproc,
                         iters=run.config["steps"], lr=run.config["lr"], variant=variant,
                         nproc_per_node=nproc)
    if s.kind == "lora":
        plan.outputs["lora"] = plan.outputs.pop("weights")
        plan.settings.update(lora_r=run.config["lora"]["rank"],
                             lora_alpha=run.config["lora"]["alpha"],
                             lora_base=str(transformer or model / "transformer"))
    return plan, _facts(s, run, nproc)


def _launch_plan(s: RunSettings, run: engine.RunPlan, global_batch: int) -> LaunchPlan:
    """The shared launch description of an engine plan: same command, same run folder."""
    argv = run.argv
    port = int(argv[argv.index("--master_port") + 1])
    torchrun = Torchrun(nproc_per_node=run.config["nproc"], master_addr="127.0.0.1",
                        master_port=port, python=s.python or sys.executable)
    plan = LaunchPlan(
        kind=run.kind, backend=NAME, variant=run.variant, root=run.run_dir,
        entry=argv[argv.index("-m", 3) + 1], module=True,
        args={"config": str(run.config_path)}, env=dict(s.env), torchrun=torchrun,
        run_dir=run.run_dir, files={"run_config.json": json.dumps(run.config, indent=2)
                                    + "\n"},
        settings={**s.to_dict(), "resolved": {"model": run.config["model"],
                                              "transformer": run.config["transformer"]}},
        outputs=dict(run.outputs), global_batch=global_batch, notes=list(run.notes))
    plan.outputs["log"] = str(plan.log_path)
    return plan


def _facts(s: RunSettings, run: engine.RunPlan, nproc: int) -> Facts:
    """The facts the shared rules look at; the engine already checked files and clip."""
    c = run.config
    return Facts(kind=s.kind, variant=get_variant(run.variant), nproc_per_node=nproc,
                 mbs=s.mbs if s.kind != "infer" else 1,
                 gbs=(s.mbs if s.kind != "infer" else 1) * nproc, frames=c["frames"],
                 height=c["height"], width=c["width"], env=dict(s.env),
                 lr=c.get("lr"), backend=NAME)


# --- inference ----------------------------------------------------------------------------

def _plan_infer(s: RunSettings, ws: Workspace) -> tuple[LaunchPlan, Facts]:
    model, transformer = resolve_model(s, ws)
    notes: list[str] = []
    variant = _model_variant(s, engine.model_facts(model, transformer), notes)
    run_dir = _run_dir(s, "infer", variant, ws)
    if not s.prompts:
        raise UsageError("no prompts given", fix="pass --prompts FILE, one prompt a line")
    nproc = _nproc(s)
    options: dict[str, Any] = {"steps": s.steps, "guidance": s.guidance, "seed": s.seed,
                               "frames": s.frames, "height": s.height, "width": s.width,
                               "fps": s.fps}
    run = engine.plan_infer(
        model=model, transformer=transformer, prompts=Path(s.prompts).expanduser(),
        images=Path(s.images).expanduser() if s.images else None,
        lora=Path(s.lora_path).expanduser() if s.lora_path else None, run_dir=run_dir,
        variant=variant, nproc=nproc, master_port=s.master_port, python=s.python,
        force=True, write=False, **{k: v for k, v in options.items() if v is not None})
    run.notes += notes
    if s.out:
        _move_videos(run, Path(s.out).expanduser().absolute())
    plan = _launch_plan(s, run, global_batch=nproc)
    plan.settings["variant"] = variant
    plan.outputs["samples"] = run.config["out_dir"]
    return plan, _facts(s, run, nproc)


def _move_videos(run: engine.RunPlan, out: Path) -> None:
    """Send the videos to ``--out`` instead of RUN_DIR/videos."""
    old = Path(run.config["out_dir"])
    run.config["out_dir"] = str(out)
    run.outputs = {name: str(out / Path(path).relative_to(old))
                   for name, path in run.outputs.items()}
