"""Short captioned videos made on the spot, so the demo needs no download and no media.

Each clip is a simple moving scene drawn with numpy (a square crossing the frame, a
growing disc, scrolling stripes, a colour sweep) and encoded to H.264 mp4 with PyAV, the
same encoder as every video cogvx writes. A caption file sits beside each video: the
"folder of videos with a .txt caption beside each" layout ``prepare-data`` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

SCENES = (
    ("red_square", "a red square slides from left to right over a dark blue background"),
    ("green_disc", "a green disc grows from the centre of a black frame"),
    ("stripes", "white and orange vertical stripes scroll slowly to the left"),
    ("sunset", "the colour of the sky fades from yellow to deep purple"),
)


def _red_square(t: float, grid: tuple[Any, Any]) -> Any:
    import numpy as np

    height, width = grid[0].shape
    frame = np.zeros((height, width, 3), np.uint8)
    frame[...] = (20, 30, 110)
    side = height // 3
    left = int(t * (width - side))
    top = (height - side) // 2
    frame[top:top + side, left:left + side] = (220, 40, 40)
    return frame


def _green_disc(t: float, grid: tuple[Any, Any]) -> Any:
    import numpy as np

    ys, xs = grid
    height, width = ys.shape
    radius = 2 + t * min(height, width) / 2
    inside = (ys - height / 2) ** 2 + (xs - width / 2) ** 2 <= radius ** 2
    frame = np.zeros((height, width, 3), np.uint8)
    frame[inside] = (40, 200, 60)
    return frame


def _stripes(t: float, grid: tuple[Any, Any]) -> Any:
    import numpy as np

    xs = grid[1]
    period = max(8, xs.shape[1] // 6)
    phase = (xs + t * 2 * period) % period < period / 2
    frame = np.empty(xs.shape + (3,), np.uint8)
    frame[phase] = (240, 240, 240)
    frame[~phase] = (240, 140, 20)
    return frame


def _sunset(t: float, grid: tuple[Any, Any]) -> Any:
    import numpy as np

    ys = grid[0]
    top = np.array([250, 220, 60]) * (1 - t) + np.array([70, 20, 110]) * t
    bottom = top * 0.5
    mix = (ys / max(1, ys.shape[0] - 1))[..., None]
    return (top * (1 - mix) + bottom * mix).astype(np.uint8)


_DRAW: dict[str, Callable[[float, tuple[Any, Any]], Any]] = {
    "red_square": _red_square, "green_disc": _green_disc, "stripes": _stripes,
    "sunset": _sunset,
}


def render_scene(name: str, frames: int, height: int, width: int) -> Any:
    """The uint8 frames [T, H, W, 3] of one scene."""
    import numpy as np

    grid = np.mgrid[0:height, 0:width].astype(np.float32)
    draw = _DRAW[name]
    return np.stack([draw(i / max(1, frames - 1), (grid[0], grid[1]))
                     for i in range(frames)])


def write_videos(folder: Path, *, count: int = 4, frames: int = 48, fps: int = 16,
                 height: int = 64, width: int = 96) -> list[dict[str, Any]]:
    """Write ``count`` captioned mp4s into ``folder``; returns name, caption and path each.

    Args:
        folder: an empty or new folder.
        count: how many scenes (at most ``len(SCENES)``).
        frames, fps, height, width: the encoded clips' shape (even sizes: H.264 4:2:0).
    """
    from cogvideo_cli.backends.diffusers.media import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, caption in SCENES[:count]:
        path = folder / f"{name}.mp4"
        write_mp4(path, render_scene(name, frames, height, width), fps)
        (folder / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        made.append({"name": name, "caption": caption, "path": str(path)})
    return made
