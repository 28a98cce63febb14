"""Broken and derived videos made from the real ones in ../shared/media/videos.

There is no ffmpeg binary: videos are re-encoded with PyAV (libx264) or damaged by editing
bytes. Also home to ``crash_on_abort``, a probe that kills its own worker process, for the
pool tests (the workers import this module by name).
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "videos"
HORSE = MEDIA / "horse.mp4"

# captions for the real sample videos (from shared/media/CREDITS.md)
CAPTIONS = {
    "horse": "A black-and-white archival film of a jockey riding a galloping horse against "
             "a plain backdrop.",
    "kitten": "A black and white cat walks slowly across a green lawn dotted with clover.",
    "bigbuckbunny": "A large grey cartoon rabbit climbs out of his burrow on a grassy hill "
                    "and stretches.",
    "carphone_pristine": "A man in a suit and bow tie talks animatedly in the back seat of a "
                         "moving car.",
}


def mdat_span(data: bytes) -> tuple[int, int]:
    """Byte range of the first mdat box's payload."""
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            return offset + 8, offset + size
        offset += size
    raise ValueError("no mdat box")


def truncated(target: Path, source: Path = HORSE) -> Path:
    """The first half of the file: the moov box (at the end) is lost."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def zero_byte(target: Path) -> Path:
    target.write_bytes(b"")
    return target


def text_as_video(target: Path) -> Path:
    target.write_text("This is a caption, not a video.\n" * 20, encoding="utf-8")
    return target


def claims_more_frames(target: Path, keep: float, source: Path = HORSE) -> Path:
    """Zero the sample data after ``keep`` of mdat: the index still lists every frame."""
    data = bytearray(source.read_bytes())
    start, end = mdat_span(bytes(data))
    cut = start + int((end - start) * keep)
    data[cut:end] = bytes(end - cut)
    target.write_bytes(bytes(data))
    return target


def rotated(target: Path, degrees: int = 90, source: Path = HORSE) -> Path:
    """A stream copy with a display-matrix rotation."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        out_stream.set_display_rotation(degrees)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            dst.mux(packet)
    return target


def reencoded(target: Path, fps: int, frames: int, size: tuple[int, int] = (240, 160),
              source: Path = HORSE, jitter: bool = False) -> Path:
    """The first ``frames`` frames of ``source`` at ``fps``, small and fast to encode.

    With ``jitter`` the frame durations alternate (a variable frame rate).
    """
    import av

    scale = 100 if jitter else 1
    time_base = Fraction(1, fps * scale)
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        stream.options = {"preset": "ultrafast"}
        for number, frame in enumerate(src.decode(video=0)):
            if number >= frames:
                break
            frame = frame.reformat(width=size[0], height=size[1])
            frame.pts = number * scale + (40 if jitter and number % 2 else 0)
            frame.time_base = time_base
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode())
    return target


def fifo(target: Path) -> Path:
    """A named pipe with the name of a video: opening it blocks until a writer comes."""
    os.mkfifo(target)
    return target


def crash_on_abort(argument: str) -> str:
    """A probe for the pool tests: abort the process for 'abort', fail for 'error'."""
    if argument == "abort":
        os.abort()
    if argument == "error":
        raise ValueError("bad input")
    return argument.upper()
