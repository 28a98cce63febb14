"""Fixtures for the diffusers backend: tiny models and short real clips, built once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

VIDEOS = Path(__file__).resolve().parents[3].parent / "shared" / "media" / "videos"
CLIP_SOURCES = {"car.mp4": ("carphone_pristine.mp4", "a man talks in a car"),
                "horse.mp4": ("horse.mp4", "a horse runs in a field")}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Build (once per variant and session) a tiny random-weight pipeline folder."""
    from cogvideo_cli.backends.diffusers.engine import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            build_tiny_model(root / variant, variant, seed=0)
            built[variant] = root / variant
        return built[variant]

    return get


def make_clip(source: Path, target: Path, frames: int = 32, fps: int = 16,
              width: int = 64, height: int = 48) -> None:
    """The first ``frames`` frames of a real video, downscaled, re-encoded with H.264."""
    import av
    import numpy as np

    from cogvideo_cli.backends.diffusers.media import write_mp4

    taken = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            taken.append(frame.reformat(width=width, height=height, format="rgb24")
                         .to_ndarray())
            if len(taken) == frames:
                break
    write_mp4(target, np.stack(taken), fps)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    """A data folder with two short real clips and the data.jsonl prepare-data writes."""
    if not VIDEOS.is_dir():
        pytest.fail(f"{VIDEOS} is missing: the training tests need ../shared/media/videos")
    folder = tmp_path_factory.mktemp("data")
    (folder / "videos").mkdir()
    lines = []
    for name, (source, caption) in CLIP_SOURCES.items():
        make_clip(VIDEOS / source, folder / "videos" / name)
        lines.append(json.dumps({"file": f"videos/{name}", "captions": caption}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
