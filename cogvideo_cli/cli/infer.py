"""``cogvx infer``: sample videos with MindSpeed-MM's inference_sora.py or diffusers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cogvideo_cli.cli import launch_options as o
from cogvideo_cli.cli.output import guarded
from cogvideo_cli.cli.train import _settings

Prompts = Annotated[Optional[Path], typer.Option(
    "--prompts", help="Text file, one prompt a line (at most 100).")]
Images = Annotated[Optional[Path], typer.Option(
    "--images", help="i2v: text file with one image path a line, or one image.")]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Sampling steps (preset 50).")]
Guidance = Annotated[Optional[float], typer.Option(
    "--guidance", min=0.0, help="Classifier-free guidance scale (preset 6.0, always dynamic).")]
Fps = Annotated[Optional[int], typer.Option("--fps", min=1, help="Frames per second of the mp4.")]
LoraPath = Annotated[Optional[Path], typer.Option(
    "--lora", help="diffusers: a LoRA folder (lora/ of a run) applied on the fly.")]
Out = Annotated[Optional[Path], typer.Option(
    "--out", help="Folder for the videos (default: RUN_DIR/samples).")]


def infer(
    variant: o.Variant = None, backend: o.Backend = None,
    prompts: Prompts = None, images: Images = None, load: o.Load = None,
    steps: Steps = None, guidance: Guidance = None, frames: o.Frames = None,
    height: o.Height = None, width: o.Width = None, fps: Fps = None, seed: o.Seed = None,
    out: Out = None, lora_path: LoraPath = None, vae: o.Vae = None, t5: o.T5 = None,
    tokenizer: o.Tokenizer = None,
    mindspeed: o.MindSpeed = None, nproc_per_node: o.Nproc = None,
    master_port: o.MasterPort = None, python: o.Python = None, env: o.Env = None,
    overrides: o.Set = None, run_dir: o.RunDir = None, force: o.Force = False,
    dry_run: o.DryRun = False,
) -> None:
    """Generate videos from prompts (and images for i2v) with a trained checkpoint."""
    values = dict(locals())
    force, dry_run = values.pop("force"), values.pop("dry_run")
    values["features"] = None
    for key in ("prompts", "images"):
        values[key] = None if values[key] is None else str(values[key])
    o.execute(_settings("infer", values), force, dry_run)


def register(app: typer.Typer) -> None:
    """Add infer to the root app."""
    app.command("infer")(guarded(infer))
