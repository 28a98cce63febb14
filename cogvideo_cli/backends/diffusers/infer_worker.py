"""The diffusers inference worker: prompts (and images for i2v) to one mp4 each.

Run as ``torchrun --nproc_per_node N -m cogvideo_cli.backends.diffusers.infer_worker
--config infer_config.json``; ``engine.plan_infer`` writes that file. Prompts are shared
round-robin over the processes; prompt ``i`` is sampled with seed ``seed + i``, so a
video does not depend on how many processes ran. Beside each ``video_NNN.mp4`` a
``video_NNN.json`` records every setting that made it. A LoRA is applied on the fly with
``load_lora_weights``; a merged model is a transformer folder passed as ``transformer``.

Each rank writes one line per video it saved to stdout, on purpose (cogvx streams the
output into the run's log); no other module of the engine prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cogvideo_cli.backends.diffusers import media
from cogvideo_cli.core.errors import CogvxError


def say(text: str) -> None:
    """A rank-0 log line on stdout."""
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(f"[cogvx-infer] {text}\n")
        sys.stdout.flush()


def pick_device():
    import torch

    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_pipeline(cfg: dict[str, Any], device=None, dtype=None):
    """The pipeline of ``cfg["model"]``, with a merged transformer or a LoRA if given."""
    import torch
    from diffusers import CogVideoXTransformer3DModel, DiffusionPipeline

    device = device or torch.device("cpu")
    dtype = dtype or torch.float32
    # float32 is every component's stored dtype; passing it would only trigger warnings
    typed = {} if dtype == torch.float32 else {"torch_dtype": dtype}
    extra = {}
    if cfg.get("transformer"):
        extra["transformer"] = CogVideoXTransformer3DModel.from_pretrained(
            cfg["transformer"], **typed)
    pipe = DiffusionPipeline.from_pretrained(cfg["model"], **typed, **extra)
    if cfg.get("lora"):
        pipe.load_lora_weights(cfg["lora"], adapter_name="cogvx")
        pipe.set_adapters(["cogvx"], [cfg.get("lora_scale", 1.0)])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def sample(pipe, cfg: dict[str, Any], prompt: str, image: str | None, seed: int,
           output_type: str = "np"):
    """One video as float frames [T, H, W, 3] in [0, 1] (``output_type="np"``)."""
    import torch

    kwargs: dict[str, Any] = {}
    if image is not None:
        from PIL import Image

        kwargs["image"] = Image.open(image).convert("RGB")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    result = pipe(prompt=prompt, num_inference_steps=cfg["steps"],
                  guidance_scale=cfg["guidance"], use_dynamic_cfg=cfg["dynamic_cfg"],
                  num_frames=cfg["frames"], height=cfg["height"], width=cfg["width"],
                  max_sequence_length=cfg["text_length"], generator=generator,
                  output_type=output_type, **kwargs)
    return result.frames[0]


def settings_record(cfg: dict[str, Any], index: int, prompt: str, image: str | None,
                    video, seconds: float) -> dict[str, Any]:
    keys = ("variant", "model", "transformer", "lora", "lora_scale", "steps", "guidance",
            "dynamic_cfg", "height", "width", "fps", "text_length")
    return {**{k: cfg.get(k) for k in keys}, "index": index, "prompt": prompt,
            "image": image, "seed": cfg["seed"] + index, "frames": int(video.shape[0]),
            "requested_frames": cfg["frames"], "seconds": round(seconds, 3),
            "random_weights": cfg.get("random_weights", False)}


def run(cfg: dict[str, Any]) -> list[Path]:
    """Sample this process's share of the prompts; returns the videos it wrote."""
    import numpy as np

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device, dtype = pick_device()
    pipe = load_pipeline(cfg, device, dtype)
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    images = cfg.get("images") or [None] * len(cfg["prompts"])
    written = []
    for index in range(rank, len(cfg["prompts"]), world):
        began = time.perf_counter()
        prompt, image = cfg["prompts"][index], images[index]
        frames = sample(pipe, cfg, prompt, image, cfg["seed"] + index)
        video = (np.clip(frames, 0, 1) * 255).round().astype("uint8")
        path = out_dir / f"video_{index:03d}.mp4"
        media.write_mp4(path, video, cfg["fps"])
        seconds = time.perf_counter() - began
        media.write_json(path.with_suffix(".json"),
                         settings_record(cfg, index, prompt, image, video, seconds))
        written.append(path)
        sys.stdout.write(f"[cogvx-infer] rank {rank}: {path} ({video.shape[0]} frames "
                         f"{video.shape[2]}x{video.shape[1]}, {seconds:.2f}s)\n")
        sys.stdout.flush()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="infer_config.json")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    try:
        written = run(cfg)
    except CogvxError as exc:
        sys.stderr.write(f"[cogvx-infer] error: {exc}\n")
        return 1
    say(f"done: {len(written)} videos on rank 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
