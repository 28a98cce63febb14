"""Probing videos: the facts MindSpeed-MM's reader sees, and what really decodes.

One file is probed in a worker process (``pool.run_isolated``) with a wall-clock limit,
because a bad file can hang the decoder or abort the process. For each file:

- decord (MindSpeed-MM's reader, where installed) gives the frame count ``len()`` and
  ``get_avg_fps()`` that its sampling uses; without decord, PyAV's container values stand in;
- PyAV demuxes and decodes every frame (no colour conversion, so it is cheap) to count the
  frames that decode before the first error: decord stops at the same frame;
- codec, pixel format, size, rotation and frame-rate variability come from PyAV.

Results are cached by path, size and modification time (``cache.ProbeCache``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvideo_cli.core.progress import SILENT, Reporter
from cogvideo_cli.data.cache import ProbeCache
from cogvideo_cli.data.pool import Outcome, run_isolated

PROBE_VERSION = 2  # 2: decord get_batch is tried (batch_error)
DEFAULT_TIMEOUT = 120.0


def decord_available() -> bool:
    """Whether decord imports here (MindSpeed-MM needs it on the training hosts too)."""
    import importlib.util

    return importlib.util.find_spec("decord") is not None


def _open_av(path: str):
    import av

    av.logging.set_level(None)
    container = av.open(path, metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise ValueError("the file has no video stream")
    return container


def _rotation(frame) -> int:
    """Display rotation in degrees (0, 90, 180, 270) from the frame's display matrix."""
    angle = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return angle


def _is_variable(pts: Sequence[int]) -> bool:
    """True when frame durations differ by more than 10 % (variable frame rate)."""
    deltas = sorted(b - a for a, b in zip(pts, pts[1:]) if b > a)
    if len(deltas) < 2:
        return False
    median = deltas[len(deltas) // 2]
    return (deltas[-1] - deltas[0]) > 0.1 * median


def _decode_count(container, stream) -> dict:
    """Decode every frame; count those before the first decode error."""
    import av

    decoded, first_error, rotation, pts = 0, "", 0, []
    for packet in container.demux(stream):
        try:
            for frame in packet.decode():
                if decoded == 0:
                    rotation = _rotation(frame)
                if frame.pts is not None:
                    pts.append(frame.pts)
                decoded += 1
        except av.error.FFmpegError as exc:
            first_error = f"frame {decoded}: {_short_error(exc)}"
            break
    return {"frames_decoded": decoded, "decode_error": first_error or None,
            "rotation": rotation, "vfr": _is_variable(sorted(pts))}


def _probe_av(path: str) -> dict:
    container = _open_av(path)
    try:
        stream = container.streams.video[0]
        # one decode thread per worker: the workers are the parallelism
        stream.thread_type, stream.thread_count = "SLICE", 1
        context = stream.codec_context
        facts = {"codec": context.name, "pix_fmt": context.pix_fmt or "",
                 "coded_width": context.width, "coded_height": context.height,
                 "frames_claimed": int(stream.frames or 0),
                 "fps_container": float(stream.average_rate or stream.guessed_rate or 0)}
        facts.update(_decode_count(container, stream))
        return facts
    finally:
        container.close()


def _probe_decord(path: str) -> dict:
    """What MindSpeed-MM's ``DecordVideo`` sees: ``len()``, ``get_avg_fps()``, and whether
    ``get_batch`` (how it reads clips) returns RGB frames.

    Frame sizes come from PyAV: decord 0.6 applies the display rotation, as
    ``_display_size`` does. ``get_batch`` reads the first two frames: at some sizes decord
    decodes 4-channel frames and ``get_batch`` fails or returns the wrong shape, which only
    a read shows. A size problem shows on every frame, and frames later in the file would
    cost a seek and a decode from the previous key frame (a fifth of the probe's time).
    """
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    facts = {"frames": len(reader), "fps": float(reader.get_avg_fps())}
    indices = list(range(min(2, len(reader))))
    if indices:
        try:
            shape = tuple(reader.get_batch(indices).shape)
        except Exception as exc:
            facts["batch_error"] = f"decord's get_batch fails: {_short_error(exc)}"
            return facts
        if len(shape) != 4 or shape[0] != len(indices) or shape[3] != 3:
            facts["batch_error"] = (f"decord's get_batch returns frames of shape "
                                    f"{list(shape[1:])}, not height x width x 3")
    return facts


def _display_size(facts: dict) -> tuple[int, int]:
    width, height = facts["coded_width"], facts["coded_height"]
    return (height, width) if facts["rotation"] in (90, 270) else (width, height)


def _short_error(exc: Exception) -> str:
    """FFmpeg's message without its errno and the path (the report names the file)."""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc))
    text = re.sub(r": '[^']*'$", "", text)
    return f"{type(exc).__name__}: {text}"


def probe_file(path: str) -> dict:
    """Probe one video (runs in a worker). Never raises for a bad file: says why instead.

    Returns:
        A JSON-ready dict: ``status`` ("ok" or "unreadable", with ``error``), ``reader``,
        ``frames`` and ``fps`` (as MindSpeed-MM's reader sees them), ``frames_claimed``,
        ``frames_decoded``, ``decode_error``, ``width``/``height`` (as frames come out),
        ``coded_width``/``coded_height``, ``codec``, ``pix_fmt``, ``rotation``, ``vfr``,
        ``duration`` and ``seconds`` (probe time).
    """
    started = time.monotonic()
    try:
        facts = _probe_av(path)
    except Exception as exc:  # any decoder complaint means MindSpeed-MM cannot read it
        return {"status": "unreadable", "error": _short_error(exc),
                "seconds": round(time.monotonic() - started, 4)}
    facts["status"] = "ok"
    facts["width"], facts["height"] = _display_size(facts)
    facts["reader"] = "pyav"
    facts["frames"] = facts["frames_claimed"] or facts["frames_decoded"]
    facts["fps"] = facts["fps_container"]
    if decord_available():
        try:
            facts.update(_probe_decord(path), reader="decord")
        except Exception as exc:
            facts.update(status="unreadable", reader="decord",
                         error=f"decord cannot read it: {_short_error(exc)}")
    facts["duration"] = round(facts["frames"] / facts["fps"], 3) if facts["fps"] else 0.0
    facts["seconds"] = round(time.monotonic() - started, 4)
    return facts


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ProbeStats:
    """How a probe run went: files probed, answered from the cache, wall time."""

    probed: int = 0
    cached: int = 0
    seconds: float = 0.0


def _failed(outcome: Outcome, timeout: float) -> dict:
    status = {"timeout": "timeout", "crashed": "crashed"}.get(outcome.status, "unreadable")
    return {"status": status, "error": outcome.error, "timeout": timeout,
            "seconds": round(outcome.seconds, 4)}


def probe_videos(paths: Sequence[Path], *, workers: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, cache: ProbeCache | None = None,
                 reporter: Reporter = SILENT,
                 probe: Callable[[str], dict] = probe_file) -> tuple[dict[Path, dict],
                                                                     ProbeStats]:
    """Probe many videos in parallel worker processes, each within ``timeout`` seconds.

    Args:
        paths: the files (duplicates are probed once).
        workers: processes at once (default: one per usable CPU).
        timeout: wall-clock seconds per file; a worker past it is killed and replaced.
        cache: answers for files whose path, size and mtime are unchanged.
        reporter: progress callback.
        probe: the per-file function (module-level, importable by the workers).

    Returns:
        facts per path, and run statistics.
    """
    started = time.monotonic()
    unique = list(dict.fromkeys(Path(p) for p in paths))
    results: dict[Path, dict] = {}
    todo = []
    for path in unique:
        hit = cache.get(path) if cache else None
        if hit is not None:
            results[path] = hit
        else:
            todo.append(path)
    stats = ProbeStats(probed=len(todo), cached=len(unique) - len(todo))
    task = reporter.start("probing videos", total=len(unique))
    reporter.advance(task, stats.cached)

    def done(path: Path, outcome: Outcome) -> None:
        facts = outcome.value if outcome.status == "ok" else _failed(outcome, timeout)
        results[path] = facts
        if cache is not None and facts.get("status") != "timeout":
            cache.put(path, facts)  # a timeout may be load: ask again next time
        reporter.advance(task, 1)

    try:
        if todo:
            count = min(workers or default_workers(), len(todo))
            run_isolated(probe, [(p, str(p)) for p in todo], workers=count,
                         timeout=timeout, on_done=done)
    finally:
        reporter.finish(task)
        if cache is not None:
            cache.save()
    stats.seconds = time.monotonic() - started
    return results, stats


def _frame_image(path: str, index: int, width: int, height: int):
    """Frame ``index`` resized to cover width x height (bicubic) and centre-cropped."""
    from PIL import Image

    container = _open_av(path)
    try:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                image = frame.to_image()
                break
        else:
            raise ValueError(f"frame {index} does not decode")
    finally:
        container.close()
    # the same geometry as CogVideoXProcessor._resize_for_rectangle_crop (mode "center")
    w, h = image.size
    if w / h > width / height:
        size = (int(w * height / h), height)
    else:
        size = (width, int(h * width / w))
    image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def save_first_frame(job: tuple[str, int, int, int, str]) -> str:
    """Save the first frame of a training clip as PNG (runs in a worker).

    Args:
        job: (video path, frame index, width, height, target .png path).
    """
    path, index, width, height, target = job
    _frame_image(path, index, width, height).save(target, format="PNG")
    return target


def extract_first_frames(jobs: dict[Any, tuple[str, int, int, int, str]], *,
                         workers: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                         reporter: Reporter = SILENT) -> dict[Any, Outcome]:
    """Write the i2v conditioning image of each clip (the clip's first frame) in parallel."""
    outcomes: dict[Any, Outcome] = {}
    if not jobs:
        return outcomes
    task = reporter.start("first frames", total=len(jobs))

    def done(key: Any, outcome: Outcome) -> None:
        outcomes[key] = outcome
        reporter.advance(task, 1)

    try:
        run_isolated(save_first_frame, list(jobs.items()),
                     workers=min(workers or default_workers(), len(jobs)),
                     timeout=timeout, on_done=done)
    finally:
        reporter.finish(task)
    return outcomes
