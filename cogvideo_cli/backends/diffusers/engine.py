"""The diffusers backend's engine: plan, check and launch training and inference runs.

Torch-free at import: the CLI calls these to build the tiny model, to plan a run (every
check happens here, before any process starts) and to launch it under torchrun with an
argument list. The work itself happens in ``train_worker`` and ``infer_worker``.

A run directory holds ``run_config.json`` (what the worker reads), ``command.json`` (the
exact torchrun argument list and the environment it adds), ``<kind>.log`` (the merged
output) and what the run produces (``metrics.jsonl``, ``checkpoints/``, ``lora/`` or
``transformer/``, or the videos).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shlex
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import CheckError, DataError, UsageError
from cogvideo_cli.core.fsutil import atomic_dir, check_target, write_text_atomic
from cogvideo_cli.core.variants import (VARIANTS, Variant, check_frames, check_resolution,
                                        get_variant, require)

log = logging.getLogger(__name__)

TRAIN_MODULE = "cogvideo_cli.backends.diffusers.train_worker"
INFER_MODULE = "cogvideo_cli.backends.diffusers.infer_worker"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LENGTH = 226  # the tokenizer length of the diffusers CogVideoX releases
CHECKPOINT_META = "checkpoint.json"  # what a checkpoint was trained with (resume checks)


@dataclass
class RunPlan:
    """One diffusers-backend run, fully resolved.

    Attributes:
        kind: ``lora``, ``train`` or ``infer``.
        variant: the variant name.
        run_dir: the run directory.
        config: what the worker reads (``run_config.json``).
        argv: the exact torchrun command as an argument list.
        env: variables added to the caller's environment for the launch.
        outputs: what the run produces, name -> path.
        notes: derived values and choices worth telling the user.
    """

    kind: str
    variant: str
    run_dir: Path
    config: dict[str, Any]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.run_dir / "run_config.json"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.kind}.log"

    def command_line(self) -> str:
        """The command as a shell would show it (for people; launches use ``argv``)."""
        return shlex.join(self.argv)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "backend": "diffusers", "variant": self.variant,
                "run_dir": str(self.run_dir), "argv": self.argv, "env": self.env,
                "command": self.command_line(), "outputs": self.outputs,
                "notes": self.notes, "config": self.config}


# --- choosing the backend ------------------------------------------------------------------

def pick_backend(mindspeed_path: Path | None) -> tuple[str, str]:
    """The backend to use when none is given, and why (torch-free probes only)."""
    has_npu = importlib.util.find_spec("torch_npu") is not None
    has_checkout = mindspeed_path is not None and Path(mindspeed_path).is_dir()
    if has_npu and has_checkout:
        return "mindspeed", f"torch_npu is installed and MindSpeed-MM is at {mindspeed_path}"
    missing = [what for what, ok in (("torch_npu", has_npu),
                                     ("a MindSpeed-MM checkout", has_checkout)) if not ok]
    return "diffusers", f"{' and '.join(missing)} not found, so diffusers runs the work"


# --- the tiny model ------------------------------------------------------------------------

def build_tiny_model(out: Path, variant: str, seed: int = 0,
                     force: bool = False) -> dict[str, Any]:
    """Build a random-weight CogVideoX pipeline folder at ``out`` (atomically).

    Returns:
        The summary also written to ``out/cogvx_tiny.json``, plus ``path``.
    """
    from cogvideo_cli.backends.diffusers import tiny

    chosen = get_variant(variant)
    if seed < 0:
        raise UsageError("--seed must not be negative", value=seed, fix="use e.g. --seed 0")
    out = Path(out)
    check_target(out, force, "model folder")
    _require_modules(("torch", "diffusers", "transformers", "sentencepiece"))
    with atomic_dir(out, force=force, what="model folder") as tmp:
        summary = tiny.build_pipeline_folder(tmp, chosen, seed)
        tiny.write_labels(tmp, summary)
    return {**summary, "path": str(out.absolute())}


def _require_modules(names: tuple[str, ...]) -> None:
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise CheckError(f"the diffusers backend needs {', '.join(missing)}",
                         value=missing, fix="pip install 'cogvx[diffusers]'")


# --- reading a model folder ----------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckError(f"cannot read {path}: {exc}", value=str(path),
                         fix="rebuild or re-download the model folder") from exc


def model_facts(model: Path, transformer: Path | None = None) -> dict[str, Any]:
    """What a diffusers pipeline folder is: variant, transformer config, tiny marker."""
    model = Path(model)
    if not (model / "model_index.json").is_file():
        raise CheckError(f"{model} is not a diffusers pipeline folder (no model_index.json)",
                         value=str(model),
                         fix="build one with `cogvx tiny-model --out DIR` or download one "
                             "with `cogvx download --format diffusers`")
    tdir = Path(transformer) if transformer else model / "transformer"
    config = _read_json(tdir / "config.json")
    task = "i2v" if config.get("in_channels") == 32 else "t2v"
    version = "1.5" if config.get("patch_size_t") else "1.0"
    marker = model / "cogvx_tiny.json"
    return {"variant": f"{task}-{version}", "transformer": config,
            "tiny": _read_json(marker) if marker.is_file() else None}


def _resolve_variant(facts: dict[str, Any], variant: str | None) -> Variant:
    found = facts["variant"]
    if variant is not None and get_variant(variant).name != found:
        raise UsageError(f"--variant {variant} does not match the model, which is {found}",
                         value=variant, fix=f"pass --variant {found}, or another model")
    return VARIANTS[found]


def _check_size(variant: Variant, facts: dict[str, Any], height: int, width: int) -> None:
    """Multiples of 16; a learned position table (i2v-1.0) fixes the size it was built for."""
    config = facts["transformer"]
    if not config.get("use_learned_positional_embeddings"):
        problem = check_resolution(VARIANTS["t2v-1.0"], height, width)
        require(problem)
        return
    fixed = (config["sample_height"] * 8, config["sample_width"] * 8)
    if (height, width) != fixed:
        raise UsageError(
            f"{variant.name} has a learned position table fixed at {fixed[0]}x{fixed[1]}; "
            f"{height}x{width} does not fit it", value=(height, width),
            fix=f"use --height {fixed[0]} --width {fixed[1]}")


def _clip_defaults(variant: Variant, facts: dict[str, Any], training: bool) -> dict[str, int]:
    if facts["tiny"]:
        d = facts["tiny"]["defaults"]
        # 1.5 inference needs an odd latent count (8k+1 frames), training an even one
        frames = d["frames"] if training or variant.version == "1.0" else d["frames"] + 4
        return {"frames": frames, "height": d["height"], "width": d["width"], "fps": d["fps"]}
    preset = variant.train if training else variant.infer
    return {"frames": preset.frames, "height": preset.height, "width": preset.width,
            "fps": getattr(preset, "fps", 8)}


def _positive(**values: float) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive", value=value,
                             fix=f"pass --{name.replace('_', '-')} 1 or more")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for torchrun's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_argv(module: str, config: Path, nproc: int, port: int,
                  python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m <worker> --config <file>`` as a list."""
    return [python or sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(nproc), "--nnodes", "1", "--master_addr", "127.0.0.1",
            "--master_port", str(port), "-m", module, "--config", str(config)]


# --- training ------------------------------------------------------------------------------

def _data_rows(data_path: Path, data_folder: Path) -> int:
    """Count data.jsonl rows; every row must be JSON with a ``file`` that exists."""
    if not Path(data_path).is_file():
        raise CheckError(f"the data file {data_path} does not exist", value=str(data_path),
                         fix="run `cogvx prepare-data` first, or pass --data")
    rows, problems = 0, []
    lines = Path(data_path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rows += 1
        try:
            name = json.loads(line)["file"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number} is not a JSON object with a \"file\"")
            continue
        if not (Path(data_folder) / name).is_file():
            problems.append(f"line {number}: {Path(data_folder) / name} does not exist")
    if problems:
        raise DataError(f"{data_path}: " + "; ".join(problems[:3])
                        + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
                        value=str(data_path),
                        fix="rerun `cogvx prepare-data`, or pass the right --data-folder")
    return rows


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete ``checkpoints/step-*`` folder of a run, if any."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(p for p in folder.glob("step-*") if (p / "training_state.pt").is_file())
    return found[-1] if found else None


def checkpoint_folder(resume: Path) -> Path:
    """The checkpoint a --resume path means: itself, or a run directory's newest one."""
    resume = Path(resume)
    if (resume / "training_state.pt").is_file():
        return resume.absolute()
    latest = latest_checkpoint(resume)
    if latest is None:
        raise CheckError(f"{resume} is neither a checkpoint nor a run with checkpoints",
                         value=str(resume),
                         fix="pass a checkpoints/step-NNNNNN folder or a run directory")
    return latest.absolute()


def resumed_run(resume: Path) -> dict[str, Any]:
    """What a checkpoint was trained with: kind, variant, lora, world_size, model, step.

    Read from the checkpoint's ``checkpoint.json``, else from the ``run_config.json`` of
    the run that wrote it (checkpoints of older cogvx versions); keys it cannot tell are
    missing.
    """
    folder = checkpoint_folder(resume)
    step = int(folder.name.rsplit("-", 1)[-1]) if folder.name.startswith("step-") else 0
    meta = folder / CHECKPOINT_META
    if meta.is_file():
        return {**_read_json(meta), "checkpoint": folder}
    config_path = folder.parent.parent / "run_config.json"
    found: dict[str, Any] = {"checkpoint": folder, "step": step}
    if config_path.is_file():
        c = _read_json(config_path)
        found.update({k: c[k] for k in ("kind", "variant", "lora", "model", "transformer")
                      if k in c})
        if "nproc" in c:
            found["world_size"] = c["nproc"]
    return found


def _check_resume(resume: Path | None, steps: int, *, kind: str, variant: str, nproc: int,
                  lora: dict[str, Any] | None) -> Path | None:
    """The checkpoint to resume from, refused before launch when it cannot fit this run."""
    if resume is None:
        return None
    found = resumed_run(resume)
    folder = found["checkpoint"]
    saved = int(found.get("step", 0))
    if saved >= steps:
        raise UsageError(f"the checkpoint is at step {saved}; --steps {steps} leaves nothing "
                         "to train", value=steps, fix=f"pass --steps {saved + 1} or more")
    if found.get("kind") not in (None, kind):
        command = "lora" if found["kind"] == "lora" else "train"
        raise UsageError(f"{folder} is a {found['kind']} checkpoint; a {kind} run cannot "
                         "continue it", value=str(folder),
                         fix=f"resume it with `cogvx {command} --resume {folder}`")
    if found.get("variant") not in (None, variant):
        raise UsageError(f"{folder} was trained on {found['variant']}; this run's model is "
                         f"{variant}", value=variant,
                         fix="drop --load and --variant to resume on the run's own model")
    world = found.get("world_size")
    if world is not None and world != nproc:
        raise UsageError(f"--nproc-per-node {nproc}: the checkpoint {folder} was written by "
                         f"{world} processes, and its optimizer and RNG states are per "
                         "process", value=nproc,
                         fix=f"resume with --nproc-per-node {world} (or leave it out)")
    old = found.get("lora")
    if lora and old:
        for option, key in (("--lora-r", "rank"), ("--lora-alpha", "alpha")):
            if float(old[key]) != float(lora[key]):
                raise UsageError(f"{option} {lora[key]} does not match the checkpoint "
                                 f"{folder}, trained with {key} {old[key]}", value=lora[key],
                                 fix=f"drop {option} to take the checkpoint's, or pass "
                                     f"{option} {old[key]}")
    return folder


def plan_train(*, model: Path, data_path: Path, run_dir: Path, kind: str = "lora",
               variant: str | None = None, data_folder: Path | None = None,
               transformer: Path | None = None, steps: int = 100, lr: float | None = None,
               frames: int | None = None, height: int | None = None,
               width: int | None = None, train_fps: int = 8, skip_frames: int = 3,
               micro_batch_size: int = 1, nproc: int = 1, seed: int = 42,
               save_every: int = 0, resume: Path | None = None, lora_rank: int = 64,
               lora_alpha: float | None = None, warmup_steps: int = 0,
               weight_decay: float = 0.0, max_grad_norm: float = 1.0,
               master_port: int | None = None, python: str | None = None,
               force: bool = False, write: bool = True) -> RunPlan:
    """Check a LoRA or full fine-tuning run and (with ``write``) create its run directory.

    Defaults: the tiny model's clip for tiny models, else the variant's training preset;
    lr 1e-4 for LoRA and 1e-5 for full fine-tuning; LoRA alpha = rank.
    """
    if kind not in ("lora", "train"):
        raise UsageError(f"unknown training kind {kind!r}", fix="use lora or train")
    facts = model_facts(model, transformer)
    chosen = _resolve_variant(facts, variant)
    clip = _clip_defaults(chosen, facts, training=True)
    frames, height, width = frames or clip["frames"], height or clip["height"], \
        width or clip["width"]
    lr = lr if lr is not None else (1e-4 if kind == "lora" else 1e-5)
    _positive(steps=steps, lr=lr, micro_batch_size=micro_batch_size, nproc=nproc,
              lora_rank=lora_rank, train_fps=train_fps, max_grad_norm=max_grad_norm)
    require(check_frames(chosen, frames, training=True))
    _check_size(chosen, facts, height, width)
    if skip_frames < 0 or save_every < 0 or warmup_steps < 0:
        raise UsageError("--skip-frames, --save-every and --warmup-steps cannot be negative",
                         value=(skip_frames, save_every, warmup_steps), fix="use 0 or more")
    data_folder = Path(data_folder or Path(data_path).parent)
    rows = _data_rows(data_path, data_folder)
    if rows < nproc * micro_batch_size:
        raise CheckError(f"{rows} videos cannot fill one step of {nproc} processes x "
                         f"{micro_batch_size} clips", value=rows,
                         fix="add videos or lower --nproc / --micro-batch-size")
    lora = _lora_settings(kind, lora_rank, lora_alpha)
    resume = _check_resume(resume, steps, kind=kind, variant=chosen.name, nproc=nproc,
                           lora=lora)
    run_dir = Path(run_dir).absolute()
    check_target(run_dir, force, "run directory")
    _require_modules(("torch", "diffusers", "transformers", "peft"))

    output = run_dir / ("lora" if kind == "lora" else "transformer")
    config = {
        "kind": kind, "variant": chosen.name, "task": chosen.task,
        "model": str(Path(model).absolute()),
        "transformer": str(Path(transformer).absolute()) if transformer else None,
        "data_path": str(Path(data_path).absolute()),
        "data_folder": str(data_folder.absolute()),
        "frames": frames, "height": height, "width": width, "train_fps": train_fps,
        "skip_frames": skip_frames, "text_length": TEXT_LENGTH, "steps": steps, "lr": lr,
        "warmup_steps": warmup_steps, "weight_decay": weight_decay,
        "micro_batch_size": micro_batch_size, "max_grad_norm": max_grad_norm, "seed": seed,
        "save_every": save_every, "resume": str(resume) if resume else None,
        "lora": lora,
        "run_dir": str(run_dir), "output": str(output), "nproc": nproc,
        "random_weights": bool(facts["tiny"]),
    }
    return _finish_train_plan(config, facts, master_port, python, write, force)


def _lora_settings(kind: str, rank: int, alpha: float | None) -> dict[str, Any] | None:
    if kind != "lora":
        return None
    return {"rank": rank, "alpha": float(alpha or rank), "targets": list(LORA_TARGETS)}


def _finish_train_plan(config: dict[str, Any], facts: dict[str, Any], master_port: int | None,
                       python: str | None, write: bool, force: bool) -> RunPlan:
    run_dir, output = Path(config["run_dir"]), config["output"]
    plan = RunPlan(kind=config["kind"], variant=config["variant"], run_dir=run_dir,
                   config=config,
                   argv=torchrun_argv(TRAIN_MODULE, run_dir / "run_config.json",
                                      config["nproc"], master_port or free_port(), python),
                   outputs={"weights": output, "metrics": str(run_dir / "metrics.jsonl"),
                            "checkpoints": str(run_dir / "checkpoints")},
                   notes=_train_notes(config, facts))
    if write:
        write_run_dir(plan, force=force)
    return plan


def _train_notes(config: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    notes = [f"clip {config['frames']} frames at {config['height']}x{config['width']}, "
             f"sampled like MindSpeed-MM (train_fps {config['train_fps']}, skip "
             f"{config['skip_frames']})",
             f"global batch {config['nproc'] * config['micro_batch_size']} clips per step"]
    if facts["tiny"]:
        notes.append("the model has random weights (cogvx tiny-model): a smoke test only")
    if config["resume"]:
        notes.append(f"resumes from {config['resume']}")
    return notes


def write_run_dir(plan: RunPlan, force: bool = False) -> None:
    """Create the run directory with ``run_config.json`` and ``command.json``.

    With ``force`` an existing run directory is emptied first (its metrics and
    checkpoints would otherwise mix with the new run's), unless the run resumes from it.
    """
    check_target(plan.run_dir, force, "run directory")
    if plan.run_dir.exists():
        resume = plan.config.get("resume")
        if resume and Path(resume).is_relative_to(plan.run_dir):
            raise UsageError("cannot replace the run directory the run resumes from",
                             value=str(plan.run_dir), fix="choose a new --run-dir")
        shutil.rmtree(plan.run_dir)
    plan.run_dir.mkdir(parents=True)
    write_text_atomic(plan.config_path, json.dumps(plan.config, indent=2) + "\n")
    command = {"argv": plan.argv, "env": plan.env, "command": plan.command_line(),
               "python": sys.version.split()[0]}
    write_text_atomic(plan.run_dir / "command.json", json.dumps(command, indent=2) + "\n")


# --- inference -----------------------------------------------------------------------------

def _read_list(path: Path, what: str) -> list[str]:
    if not Path(path).is_file():
        raise UsageError(f"the {what} file {path} does not exist", value=str(path),
                         fix=f"pass a text file with one {what[:-1]} per line")
    items = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    items = [item for item in items if item]
    if not items:
        raise UsageError(f"the {what} file {path} is empty", value=str(path),
                         fix=f"write one {what[:-1]} per line")
    return items


def _read_images(images: Path | None, count: int, i2v: bool) -> list[str] | None:
    if not i2v:
        if images is not None:
            raise UsageError("--images is for i2v models; this model is text-to-video",
                             value=str(images), fix="drop --images or use an i2v model")
        return None
    if images is None:
        raise UsageError("an i2v model needs one image per prompt",
                         fix="pass --images FILE with one image path per line")
    paths = [Path(images)] if Path(images).suffix.lower() in (".png", ".jpg", ".jpeg") \
        else [Path(images).parent / p for p in _read_list(images, "images")]
    if len(paths) != count:
        raise UsageError(f"{len(paths)} images for {count} prompts", value=len(paths),
                         fix="give exactly one image per prompt, in the same order")
    for path in paths:
        if not path.is_file():
            raise UsageError(f"the image {path} does not exist", value=str(path),
                             fix="fix the path in the images file")
        _check_image(path)
    return [str(p.absolute()) for p in paths]


def _check_image(path: Path) -> None:
    """The image opens as a picture (PIL reads its header and checks the data)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"the image {path} cannot be read as an image: {exc}",
                        value=str(path),
                        fix="list PNG or JPEG files in the images file") from exc


def _check_infer_frames(frames: int) -> None:
    """The VAE decodes an even latent count into 4 more frames, so diffusers needs 8k+1."""
    if frames < 1 or (frames - 1) % 8:
        low = max(1, frames - (frames - 1) % 8)
        raise UsageError(
            f"{frames} frames is not 8k+1: the diffusers CogVideoX pipelines return exactly "
            f"that many only for 8k+1", value=frames, fix=f"use {low} or {low + 8}")


def plan_infer(*, model: Path, prompts: Path, run_dir: Path, variant: str | None = None,
               images: Path | None = None, transformer: Path | None = None,
               lora: Path | None = None, lora_scale: float = 1.0, steps: int = 50,
               guidance: float = 6.0, dynamic_cfg: bool = True, frames: int | None = None,
               height: int | None = None, width: int | None = None, fps: int | None = None,
               seed: int = 42, nproc: int = 1, master_port: int | None = None,
               python: str | None = None, force: bool = False,
               write: bool = True) -> RunPlan:
    """Check a sampling run and (with ``write``) create its run directory.

    Videos go to ``run_dir/videos/video_NNN.mp4`` with ``video_NNN.json`` beside each.
    """
    facts = model_facts(model, transformer)
    chosen = _resolve_variant(facts, variant)
    clip = _clip_defaults(chosen, facts, training=False)
    frames, height, width = frames or clip["frames"], height or clip["height"], \
        width or clip["width"]
    fps = fps or clip["fps"]
    _positive(steps=steps, fps=fps, nproc=nproc)
    if guidance < 0:
        raise UsageError("--guidance cannot be negative", value=guidance, fix="use e.g. 6.0")
    _check_infer_frames(frames)
    _check_size(chosen, facts, height, width)
    prompt_list = _read_list(prompts, "prompts")
    image_list = _read_images(images, len(prompt_list), chosen.is_i2v)
    if lora is not None and not (Path(lora) / "pytorch_lora_weights.safetensors").is_file():
        raise CheckError(f"{lora} holds no pytorch_lora_weights.safetensors",
                         value=str(lora), fix="pass the lora/ folder of a diffusers LoRA run")
    run_dir = Path(run_dir).absolute()
    check_target(run_dir, force, "run directory")
    _require_modules(("torch", "diffusers", "transformers", "av"))

    out_dir = run_dir / "videos"
    config = {
        "kind": "infer", "variant": chosen.name, "model": str(Path(model).absolute()),
        "transformer": str(Path(transformer).absolute()) if transformer else None,
        "lora": str(Path(lora).absolute()) if lora else None, "lora_scale": lora_scale,
        "prompts": prompt_list, "images": image_list, "steps": steps, "guidance": guidance,
        "dynamic_cfg": dynamic_cfg, "frames": frames, "height": height, "width": width,
        "fps": fps, "seed": seed, "text_length": TEXT_LENGTH, "out_dir": str(out_dir),
        "run_dir": str(run_dir), "nproc": nproc, "random_weights": bool(facts["tiny"]),
    }
    plan = RunPlan(kind="infer", variant=chosen.name, run_dir=run_dir, config=config,
                   argv=torchrun_argv(INFER_MODULE, run_dir / "run_config.json", nproc,
                                      master_port or free_port(), python),
                   outputs={f"video_{i:03d}": str(out_dir / f"video_{i:03d}.mp4")
                            for i in range(len(prompt_list))},
                   notes=[f"{len(prompt_list)} prompts, {frames} frames at {height}x{width}, "
                          f"{fps} fps, {steps} steps, guidance {guidance}"])
    if write:
        write_run_dir(plan, force=force)
    return plan


# --- running -------------------------------------------------------------------------------

def run(plan: RunPlan, on_line: Callable[[str], None] | None = None) -> int:
    """Launch the plan's torchrun command, stream its output, return the exit code.

    The output goes line by line to ``on_line`` and to ``<run_dir>/<kind>.log``. Ctrl-C
    stops the whole process tree (``launch.supervise``).
    """
    from cogvideo_cli.launch.supervise import run_supervised
    from cogvideo_cli.launch.watch import LogWatcher

    if not plan.config_path.is_file():
        write_run_dir(plan)
    log.info("launching: %s", plan.command_line())
    # MindSpeed-MM's silent-failure patterns do not apply to this backend's workers
    result = run_supervised(plan.argv, cwd=plan.run_dir, env=plan.env,
                            log_path=plan.log_path, watcher=LogWatcher(rules=()),
                            on_line=on_line)
    return result.exit_code


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step records of a training run (``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


# --- merging a LoRA ------------------------------------------------------------------------

def merge_lora(*, model: Path, lora: Path, out: Path, scale: float = 1.0,
               force: bool = False, rank: int | None = None,
               alpha: float | None = None) -> dict[str, Any]:
    """Fuse a diffusers LoRA into the transformer and save it as a transformer folder.

    The merge is :func:`cogvideo_cli.checkpoint.lora.merge_hf` (W += scale * alpha / r *
    B @ A in float32, shard by shard), with rank and alpha from the run's ``lora.json``.
    The result loads as ``plan_infer(transformer=out)``; it gives the same videos as the
    LoRA applied on the fly, up to float rounding.
    """
    from cogvideo_cli.checkpoint.lora import merge_hf

    facts = model_facts(model)
    if not (Path(lora) / "pytorch_lora_weights.safetensors").is_file():
        raise CheckError(f"{lora} holds no pytorch_lora_weights.safetensors",
                         value=str(lora), fix="pass the lora/ folder of a diffusers LoRA run")
    check_target(Path(out), force, "merged transformer folder")
    record = {"base_model": str(Path(model).absolute()),
              "lora": str(Path(lora).absolute()), "scale": scale,
              "variant": facts["variant"], "random_weights": bool(facts["tiny"])}
    report = merge_hf(Path(model) / "transformer", Path(lora), Path(out), rank=rank,
                      alpha=alpha, scale=scale, force=force, extra=record)
    return {**report, **record, "path": str(Path(out).absolute())}
