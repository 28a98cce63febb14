"""The demo's stages, run in order on a tiny model: cogvx's main job on any machine.

Each stage calls the engine function of the real command (``tiny-model``,
``prepare-data``, ``convert hf-to-mm`` / ``verify`` / ``mm-to-hf``, ``lora``,
``merge-lora``, ``infer``), chaining through a workspace (``cogvx.toml``) in the demo
folder exactly as the commands do, and returns facts read back from what it wrote: the
round trip compared tensor by tensor, the merged weights compared with the base, the
sampled videos decoded and counted. Nothing is printed here; ``on_stage`` and ``on_line``
tell the caller what happens.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import CheckError, CogvxError, NotSupportedError, UsageError
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.core.workspace import Workspace

log = logging.getLogger(__name__)

MARKER = "cogvx-demo.json"
PROMPTS = ("a red square slides from left to right over a dark blue background",
           "a green disc grows from the centre of a black frame")
TP, PP = 2, 2
LORA_PROCESSES = 2
# A rank-4 LoRA with a large learning rate: a few steps visibly move the tiny model.
LORA = {"steps": 4, "rank": 4, "alpha": 8.0, "lr": 1e-2}
SAMPLE_STEPS = 4
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}

StageCallback = Callable[[str, int, int, "dict[str, Any] | None"], None]


@dataclass
class DemoContext:
    """What the stages share: the folder, its workspace, the variant, what came before."""

    out: Path
    variant: str
    workspace: Workspace
    on_line: Callable[[str], None] | None = None
    python: str | None = None
    made: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


# --- the folder -----------------------------------------------------------------------------

def prepare_folder(out: Path, force: bool) -> Path:
    """Create the demo folder; with ``force`` empty one an earlier demo made (only that).

    A folder that holds anything but an earlier demo is refused even with ``force``, so
    ``--out ~ --force`` cannot delete a home directory.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file", value=str(out), fix="pass a folder to --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(f"{out} is not empty and no cogvx demo made it", value=str(out),
                             fix="pass a new or empty folder to --out")
        if not force:
            what = "an interrupted demo (it stopped before its last stage)" \
                if _unfinished(out) else "an earlier demo"
            raise UsageError(f"{out} holds {what}", value=str(out),
                             fix="pass --force to replace it, or another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n", encoding="utf-8")
    return out


def _unfinished(out: Path) -> bool:
    """True when the demo marker still says running: the demo was stopped or failed."""
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("status") == "running"


# --- stages ---------------------------------------------------------------------------------

def stage_model(ctx: DemoContext) -> dict[str, Any]:
    """``cogvx tiny-model``: a random-weight pipeline in real diffusers format."""
    from cogvideo_cli.backends.diffusers.engine import build_tiny_model

    result = build_tiny_model(ctx.path("model"), ctx.variant, seed=0)
    ctx.workspace.record("weights", diffusers=result["path"], format="diffusers",
                         variant=result["variant"])
    ctx.made["model"] = Path(result["path"])
    ctx.made["clip"] = result["defaults"]
    return {"path": result["path"], "parameters": result["parameters"],
            "clip": result["defaults"]}


def stage_videos(ctx: DemoContext) -> dict[str, Any]:
    """Captioned H.264 clips drawn with numpy (a user's machine has no sample media)."""
    from cogvideo_cli.backends.diffusers.media import video_facts
    from cogvideo_cli.demo.videos import write_videos

    made = write_videos(ctx.path("videos"))
    for item in made:
        item.update(video_facts(Path(item["path"])))
    ctx.made["videos"] = ctx.path("videos")
    return {"folder": str(ctx.path("videos")), "videos": made}


def stage_prepare(ctx: DemoContext) -> dict[str, Any]:
    """``cogvx prepare-data``: probe, judge and write data.jsonl for the tiny clip size."""
    from cogvideo_cli.data.prepare import PrepareOptions, prepare_data
    from cogvideo_cli.data.rules import SamplingSettings

    clip = ctx.made["clip"]
    variant = get_variant(ctx.variant)
    settings = SamplingSettings.for_variant(variant, frames=clip["frames"],
                                            height=clip["height"], width=clip["width"])
    options = PrepareOptions(variant=variant.name, settings=settings, workers=1,
                             text_length=variant.train.text_length)
    report = prepare_data(ctx.made["videos"], ctx.path("data"), options,
                          workspace=ctx.workspace)
    summary = report["summary"]
    return {"data_path": report["data_path"], "accepted": summary["accepted"],
            "rejected": summary["rejected"], "settings": report["settings"]}


def stage_convert(ctx: DemoContext) -> dict[str, Any]:
    """``convert hf-to-mm`` (TP 2, PP 2), ``convert verify``, ``convert mm-to-hf``, compared."""
    from cogvideo_cli.checkpoint.convert import convert_to_mm, mm_to_hf
    from cogvideo_cli.checkpoint.verify import verify_checkpoint

    source = ctx.made["model"] / "transformer"
    mm = ctx.path("checkpoints", f"{ctx.variant}-mm-tp{TP}-pp{PP}")
    to_mm = convert_to_mm("diffusers", source, mm, variant=ctx.variant, tp=TP, pp=PP)
    ctx.workspace.record("checkpoint", path=mm, variant=to_mm["variant"], tp=to_mm["tp"],
                         pp_layers=to_mm["pp_layers"])
    verified = verify_checkpoint(mm, ctx.variant, TP, to_mm["pp_layers"], digests=True)
    back = ctx.path("checkpoints", f"{ctx.variant}-hf-roundtrip")
    mm_to_hf(mm, back, variant=ctx.variant)
    ctx.workspace.record("checkpoint", hf=back)
    same = compare_folders(source, back)
    if not same["exact"]:
        raise CheckError(f"the round trip diffusers -> MM -> diffusers changed "
                         f"{len(same['different'])} tensors, e.g. {same['different'][:3]}",
                         value=same["different"][:3],
                         fix="report this: the conversion tables are wrong for this variant")
    return {"mm": str(mm), "tp": to_mm["tp"], "pp_layers": to_mm["pp_layers"],
            "rank_files": len(verified["files"]), "keys": verified["keys"]["found"],
            "roundtrip": str(back), "tensors": same["tensors"], "exact": same["exact"]}


def stage_lora(ctx: DemoContext) -> dict[str, Any]:
    """``cogvx lora --backend diffusers --nproc-per-node 2``: real DDP training on CPU."""
    from cogvideo_cli.backends.diffusers.engine import read_metrics
    from cogvideo_cli.core.config import RunSettings

    settings = RunSettings(
        kind="lora", backend="diffusers", variant=ctx.variant, seed=0,
        nproc_per_node=LORA_PROCESSES, iters=LORA["steps"], lr=LORA["lr"],
        lora_r=LORA["rank"], lora_alpha=LORA["alpha"], save_interval=LORA["steps"],
        run_dir=str(ctx.path("runs", "lora")), python=ctx.python, env=dict(QUIET_ENV))
    plan, result = _launch(ctx, settings)
    metrics = read_metrics(plan.run_dir)
    ctx.made["lora"] = Path(plan.outputs["lora"])
    return {"run_dir": str(plan.run_dir), "lora": plan.outputs["lora"],
            "processes": plan.torchrun.world_size,
            "losses": [round(m["loss"], 6) for m in metrics],
            "step_time_ms": (result.throughput or {}).get("step_time_ms")}


def _launch(ctx: DemoContext, settings):
    """Plan, check, write the run directory and run torchrun, as the commands do."""
    from cogvideo_cli.launch.run import prepare_run, start_run

    plan = prepare_run(settings, ctx.workspace)
    return plan, start_run(plan, ctx.workspace, force=True, on_line=ctx.on_line)


def stage_merge(ctx: DemoContext) -> dict[str, Any]:
    """``cogvx merge-lora``: fold the LoRA into the transformer; check the weights moved."""
    from cogvideo_cli.checkpoint.lora import merge_lora

    merged = ctx.path("checkpoints", f"{ctx.variant}-merged")
    # rank and alpha come from the run's own lora.json, as `cogvx merge-lora` reads them
    report = merge_lora(ctx.made["model"] / "transformer", ctx.made["lora"], merged)
    ctx.workspace.record("checkpoint", hf=merged)
    ctx.made["merged"] = merged
    moved = compare_folders(ctx.made["model"] / "transformer", merged)
    if moved["exact"]:
        raise CheckError("merging the LoRA left every weight unchanged", value=str(merged),
                         fix="the LoRA is zero: check the training run's loss and lr")
    return {"path": str(merged), "rank": report["rank"], "alpha": report["alpha"],
            "rank_alpha_from": report["rank_alpha_from"],
            "changed_tensors": len(moved["different"]), "tensors": moved["tensors"],
            "max_change": moved["max_abs_diff"]}


def stage_sample(ctx: DemoContext) -> dict[str, Any]:
    """``cogvx infer --backend diffusers --load MERGED``: two prompts, decoded back."""
    from cogvideo_cli.backends.diffusers.media import video_facts
    from cogvideo_cli.core.config import RunSettings

    prompts = ctx.path("prompts.txt")
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    settings = RunSettings(
        kind="infer", backend="diffusers", variant=ctx.variant, seed=0,
        load=str(ctx.made["merged"]), prompts=str(prompts), steps=SAMPLE_STEPS,
        run_dir=str(ctx.path("runs", "sample")), python=ctx.python, env=dict(QUIET_ENV))
    plan, _ = _launch(ctx, settings)
    videos = []
    for name, path in sorted(plan.outputs.items()):
        if name.startswith("video_"):
            facts = video_facts(Path(path))
            videos.append({"path": path, "prompt": PROMPTS[len(videos)],
                           "bytes": Path(path).stat().st_size, **facts})
    return {"run_dir": str(plan.run_dir), "videos": videos}


STAGES: tuple[tuple[str, Callable[[DemoContext], dict[str, Any]]], ...] = (
    ("tiny model", stage_model),
    ("videos", stage_videos),
    ("prepare-data", stage_prepare),
    ("convert", stage_convert),
    ("lora", stage_lora),
    ("merge-lora", stage_merge),
    ("sample", stage_sample),
)


# --- comparing tensors ---------------------------------------------------------------------

def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    found: dict[str, Any] = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        found.update(load_file(str(shard)))
    if not found:
        raise CheckError(f"{folder} holds no .safetensors weights", value=str(folder),
                         fix="rerun the stage that writes it")
    return found


def compare_folders(first: Path, second: Path) -> dict[str, Any]:
    """Compare two diffusers weight folders tensor by tensor (names, dtypes, exact values)."""
    import torch

    a, b = _tensors(first), _tensors(second)
    different = sorted(set(a) ^ set(b))
    max_diff = 0.0
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            different.append(name)
            if x.shape == y.shape:
                diff = (x.float() - y.float()).abs().max().item()
                max_diff = max(max_diff, diff)
    return {"tensors": len(a), "exact": not different, "different": different,
            "max_abs_diff": max_diff}


# --- running -------------------------------------------------------------------------------

def run_demo(out: Path, *, variant: str = "t2v-1.0", force: bool = False,
             on_stage: StageCallback | None = None,
             on_line: Callable[[str], None] | None = None,
             python: str | None = None) -> dict[str, Any]:
    """Run every stage in ``out``; returns the summary also written to ``out/cogvx-demo.json``.

    Args:
        out: the demo folder (new, empty, or an earlier demo's with ``force``).
        variant: a text-to-video variant (the sampling stage has no images).
        force: replace an earlier demo's folder.
        on_stage: called as ``(event, name, index, result)``: ``start`` before a stage
            (result None) and ``done`` after it.
        on_line: each output line of the torchrun launches.
        python: the interpreter that runs torchrun (default: this one).

    Raises:
        CogvxError: the failing stage's error, its message prefixed with the stage.
    """
    chosen = get_variant(variant)
    if chosen.is_i2v:
        raise NotSupportedError(f"the demo samples text-to-video; {chosen.name} needs an "
                                "image per prompt", value=chosen.name,
                                fix="use --variant t2v-1.0 or t2v-1.5")
    out = prepare_folder(out, force)
    ctx = DemoContext(out=out, variant=chosen.name, workspace=Workspace.load(out),
                      on_line=on_line, python=python)
    began = time.perf_counter()
    stages = []
    for index, (name, stage) in enumerate(STAGES, start=1):
        if on_stage:
            on_stage("start", name, index, None)
        start = time.perf_counter()
        result = _run_stage(name, stage, ctx)
        row = {"stage": name, "seconds": round(time.perf_counter() - start, 2),
               "result": result}
        stages.append(row)
        if on_stage:
            on_stage("done", name, index, row)
    summary = {"out": str(out), "variant": chosen.name, "stages": stages,
               "videos": stages[-1]["result"]["videos"],
               "seconds": round(time.perf_counter() - began, 2)}
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _run_stage(name: str, stage: Callable[[DemoContext], dict[str, Any]],
               ctx: DemoContext) -> dict[str, Any]:
    try:
        return stage(ctx)
    except CogvxError as exc:
        # the same error type (and exit code), saying which stage stopped the demo
        exc.message = f"demo stage {name!r} failed: {exc.message}"
        raise
