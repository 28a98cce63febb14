"""Video in and out for the diffusers workers: read training clips, write mp4 files.

Clips are read the way MindSpeed-MM reads them (reference 4.3): decord when it is
installed (PyAV otherwise), the frame indices of ``cogvideo_cli.data.rules.sample_frames``,
an aspect-preserving bicubic resize that covers the target, a centre crop, and
``(x - 127.5) / 127.5``. Videos are written with PyAV (H.264, yuv420p).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import DataError
from cogvideo_cli.core.fsutil import atomic_file
from cogvideo_cli.data.rules import SamplingSettings, sample_frames


def probe(path: Path) -> tuple[int, float]:
    """(frame count, average fps) as decord reports them (PyAV decodes to count)."""
    try:
        import decord
    except ImportError:
        decord = None
    if decord is not None:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return len(reader), float(reader.get_avg_fps())
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate or 0)


def read_frames(path: Path, indices: list[int]):
    """The frames at ``indices`` as a uint8 array [T, H, W, 3]."""
    import numpy as np

    try:
        import decord
    except ImportError:
        decord = None
    if decord is not None:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return reader.get_batch(list(indices)).asnumpy()
    import av

    wanted = set(indices)
    frames: dict[int, Any] = {}
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                frames[number] = frame.to_ndarray(format="rgb24")
            if number >= max(indices):
                break
    return np.stack([frames[i] for i in indices])


def resize_crop(frames, height: int, width: int):
    """uint8 [T, H, W, 3] -> float [T, 3, height, width] in [-1, 1].

    Bicubic resize keeping the aspect ratio so the frame covers the target, then a centre
    crop, as MindSpeed-MM's CogVideoXProcessor does.
    """
    import torch
    import torch.nn.functional as F

    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    src_h, src_w = video.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    video = F.interpolate(video, size=(new_h, new_w), mode="bicubic", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    video = video[:, :, top:top + height, left:left + width].clamp(0, 255)
    return (video - 127.5) / 127.5


def load_clip(path: Path, settings: SamplingSettings):
    """One training clip: sampled, resized, cropped, normalised; [T, 3, H, W].

    Raises:
        DataError: the video cannot give a clip (MindSpeed-MM would silently swap in
            another sample; cogvx stops and names the file instead).
    """
    try:
        length, fps = probe(path)
    except Exception as exc:  # decord's DECORDError, PyAV's FFmpegError, OSError
        raise _read_error(path, "cannot open it", exc) from exc
    sampling = sample_frames(length, fps, settings)
    if not sampling.ok:
        raise DataError(f"{path}: {sampling.problem.message}", value=str(path),
                        fix=sampling.problem.fix)
    try:
        frames = read_frames(path, list(sampling.indices))
    except Exception as exc:
        raise _read_error(path, "cannot read its frames", exc) from exc
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"{path}: the reader returned frames of shape {list(frames.shape)}, "
                        "not RGB", value=str(path), fix=_REENCODE)
    return resize_crop(frames, settings.height, settings.width)


_REENCODE = ("re-encode it at another size (ffmpeg -i IN -vf scale=-2:480 -c:v libx264 "
             "-pix_fmt yuv420p OUT.mp4), then rerun `cogvx prepare-data`")


def _read_error(path: Path, what: str, exc: Exception) -> DataError:
    """A reader's own exception, turned into an error that names the file."""
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return DataError(f"{path}: the video reader {what}: {type(exc).__name__}: {detail}",
                     value=str(path), fix=_REENCODE)


def write_mp4(path: Path, frames, fps: int) -> None:
    """Write uint8 frames [T, H, W, 3] as an H.264 mp4, atomically.

    H.264 with yuv420p needs even sizes; odd ones are refused rather than silently cropped.
    """
    import av

    count, height, width = frames.shape[:3]
    if height % 2 or width % 2:
        raise DataError(f"cannot encode {width}x{height}: H.264 needs even sizes",
                        value=(width, height), fix="use a height and width divisible by 16")
    with atomic_file(path, mode="wb") as handle:
        with av.open(handle, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for index in range(count):
                frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A small JSON file, written atomically."""
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, indent=2, default=str) + "\n")


def video_facts(path: Path) -> dict[str, Any]:
    """Frames (decoded and counted), width, height and fps of a video file, with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return {"frames": count, "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "fps": float(stream.average_rate or 0)}
