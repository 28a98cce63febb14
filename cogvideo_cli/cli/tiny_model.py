"""``cogvx tiny-model``: build a small random-weight CogVideoX in diffusers format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.cli.options import Force


def tiny_model(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the pipeline into.",
                                      file_okay=False)],
    variant: Annotated[str, typer.Option(
        "--variant", help="t2v-1.0, i2v-1.0, t2v-1.5 or i2v-1.5.")] = "t2v-1.5",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    force: Force = False,
) -> None:
    """Build a tiny random-weight CogVideoX pipeline for smoke tests (nothing downloaded)."""
    from cogvideo_cli.backends.diffusers.engine import build_tiny_model
    from cogvideo_cli.core.variants import get_variant

    variant = get_variant(variant).name
    state = output.STATE
    workspace = state.load_workspace()
    state.hint(f"building a tiny random-weight {variant} pipeline in {out} ...")
    result = build_tiny_model(out, variant, seed=seed, force=force)
    workspace.record("weights", diffusers=result["path"], format="diffusers",
                     variant=result["variant"])
    output.emit(result, _render)


def _render(result: dict) -> None:
    params = result["parameters"]
    clip = result["defaults"]
    output.STATE.out.print(
        f"{result['path']}\n"
        f"  {result['pipeline']} {result['variant']}, RANDOM WEIGHTS (seed {result['seed']})\n"
        f"  parameters: transformer {params['transformer']:,}, vae {params['vae']:,}, "
        f"text encoder {params['text_encoder']:,}\n"
        f"  default clip: {_frames(result['variant'], clip['frames'])} at "
        f"{clip['height']}x{clip['width']}, {clip['fps']} fps", markup=False, highlight=False)
    output.STATE.hint("recorded as [weights] diffusers in cogvx.toml")


def _frames(variant: str, train: int) -> str:
    """1.5 trains on an even latent count (4k+1 frames) but samples 8k+1 (four more)."""
    if variant.endswith("-1.5"):
        return f"{train} frames to train, {train + 4} to infer"
    return f"{train} frames"


def register(app: typer.Typer) -> None:
    app.command("tiny-model")(output.guarded(tiny_model))
