"""MindSpeed-MM's frame sampling (``CogVideoXProcessor``) and the verdict on one video.

``sample_frames`` reproduces, step for step and with the same float arithmetic, which frames
MindSpeed-MM 2.3.0 takes from a video of ``L`` frames at ``f`` fps (reference section 4.3).
The training backends reuse it, so every reader of a clip agrees on its frames. ``judge``
turns a video's probed facts and its caption check into accepted / rejected with reasons.

Let N = num_frames, s = skip_frame_num, r = train_fps:

- case 1, ``L / f * r > N``: window [s, int(s + N / r * f)), step ``(end - s) // N``.
  Step 0 (f < r) and a window index at or past L (too short) raise in MindSpeed-MM.
- case 2, else if ``L > N``: [s, L - s) with step ``max((L - 2s) // N, 1)``.
- case 3, else: the largest 4k+1 run from [s, L - s).

The result is cut to N frames, or padded to N by repeating the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.variants import (Problem, Variant, check_frames, check_resolution,
                                        require)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")  # what MindSpeed-MM reads as video


@dataclass(frozen=True)
class SamplingSettings:
    """The data settings of a MindSpeed-MM data.json that decide which frames are taken."""

    num_frames: int
    train_fps: int = 8
    skip_frames: int = 3
    height: int = 480
    width: int = 720

    @classmethod
    def for_variant(cls, variant: Variant, *, frames: int | None = None,
                    train_fps: int | None = None, skip_frames: int | None = None,
                    height: int | None = None, width: int | None = None) -> SamplingSettings:
        """A variant's preset values, each overridable; checked before any work starts."""
        train = variant.train
        settings = cls(
            num_frames=train.frames if frames is None else frames,
            train_fps=train.train_fps if train_fps is None else train_fps,
            skip_frames=train.skip_frames if skip_frames is None else skip_frames,
            height=train.height if height is None else height,
            width=train.width if width is None else width)
        settings.validate(variant)
        return settings

    def validate(self, variant: Variant) -> None:
        """Raise a usage error for settings no training run can use."""
        require(check_frames(variant, self.num_frames))
        require(check_resolution(variant, self.height, self.width))
        if self.train_fps < 1:
            raise UsageError("--train-fps must be at least 1", value=self.train_fps,
                             fix="use the preset value 8")
        if self.skip_frames < 0:
            raise UsageError("--skip-frames cannot be negative", value=self.skip_frames,
                             fix="use the preset value 3, or 0")

    def to_dict(self) -> dict:
        """The settings under the names MindSpeed-MM's data.json uses."""
        return {"num_frames": self.num_frames, "train_fps": self.train_fps,
                "skip_frame_num": self.skip_frames, "max_height": self.height,
                "max_width": self.width}


@dataclass(frozen=True)
class Sampling:
    """Which frames MindSpeed-MM takes from one video, or why it cannot take any.

    Attributes:
        case: 1 (long enough at train_fps), 2 (longer than N frames) or 3 (N or fewer).
        indices: the N frame indices of the training clip, padding repeats included;
            empty when ``problem`` is set.
        decoded: [start, stop) of the frames MindSpeed-MM decodes to build the clip; all of
            them must decode.
        step: the stride between taken frames.
        padded: how many trailing entries of ``indices`` repeat the last real frame.
        effective_fps: the frame rate the clip really has (``fps / step``).
        problem: why MindSpeed-MM would fail on this video and silently swap in another.
        code: a short name for the problem (``fps_below_train_fps``, ``too_short``, ...).
    """

    case: int
    indices: tuple[int, ...] = ()
    decoded: tuple[int, int] = (0, 0)
    step: int = 0
    padded: int = 0
    effective_fps: float = 0.0
    problem: Problem | None = None
    code: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict:
        """A JSON-ready form (indices shortened to first..last when long)."""
        return {"case": self.case, "indices": list(self.indices),
                "decoded": list(self.decoded), "step": self.step, "padded": self.padded,
                "effective_fps": round(self.effective_fps, 3), "code": self.code or None,
                "problem": None if self.problem is None else self.problem.message}


def _fail(case: int, code: str, message: str, fix: str, value: object = None) -> Sampling:
    return Sampling(case=case, problem=Problem(message, fix, value), code=code)


def _finish(case: int, taken: list[int], decoded: tuple[int, int], step: int, fps: float,
            num_frames: int) -> Sampling:
    """Cut the taken frames to N or pad them by repeating the last (``_pad_last_frame``)."""
    taken = taken[:num_frames]
    padded = num_frames - len(taken)
    indices = tuple(taken + [taken[-1]] * padded)
    return Sampling(case=case, indices=indices, decoded=decoded, step=step, padded=padded,
                    effective_fps=fps / step if step else 0.0)


def _nearest_smaller_4k_plus_1(n: int) -> int:
    remainder = n % 4
    return n - 3 if remainder == 0 else n - remainder + 1


def _sample_window(length: int, fps: float, s: SamplingSettings) -> Sampling:
    """Case 1: a window of N / train_fps seconds at the video's own frame rate."""
    n, start = s.num_frames, int(s.skip_frames)
    end = int(start + n / s.train_fps * fps)
    step = (end - start) // n
    if step <= 0:
        return _fail(1, "fps_below_train_fps",
                     f"{fps:g} fps is below train_fps {s.train_fps}: MindSpeed-MM's frame "
                     f"step becomes 0 and the sample fails",
                     f"re-encode the video at {s.train_fps} fps or more, or lower --train-fps",
                     fps)
    taken = list(range(start, end, step))
    if taken[-1] >= length:
        return _fail(1, "too_short",
                     f"{length} frames at {fps:g} fps are too short for the window: "
                     f"MindSpeed-MM reads frame {taken[-1]} (skip {start} + {n} frames at "
                     f"{s.train_fps} fps) and the sample fails",
                     f"use clips of at least {taken[-1] + 1} frames, or lower --frames or "
                     f"--skip-frames", length)
    decoded = (start, min(end, int(length)))
    return _finish(1, taken, decoded, step, fps, n)


def _sample_range(length: int, fps: float, s: SamplingSettings) -> Sampling:
    """Cases 2 and 3: the whole clip minus ``skip`` frames at each end."""
    n, start = s.num_frames, int(s.skip_frames)
    end = int(length - s.skip_frames)
    if length > n:
        case, step = 2, max((end - start) // n, 1)
        taken = list(range(start, end, step))
        decoded = (start, end)
    else:
        case, step = 3, 1
        stop = int(start + _nearest_smaller_4k_plus_1(end - start))
        taken = list(range(start, stop))
        decoded = (start, max(start, stop))
    if not taken:
        return _fail(case, "too_short",
                     f"{length} frames leave nothing after skipping {start} at each end",
                     f"use clips of more than {2 * start} frames, or lower --skip-frames",
                     length)
    return _finish(case, taken, decoded, step, fps, n)


def sample_frames(length: int, fps: float, settings: SamplingSettings) -> Sampling:
    """The frames MindSpeed-MM's ``CogVideoXProcessor`` takes, or why it fails.

    Args:
        length: frame count as decord's ``len()`` gives it.
        fps: decord's ``get_avg_fps()``.
        settings: num_frames, train_fps and skip_frame_num of the data.json.

    Returns:
        A :class:`Sampling`. For example 49 frames at 8 fps with the t2v-1.0 preset (N 17,
        skip 3, train_fps 8) take frames 3..19 with step 1; 132 frames at 25 fps take
        3, 6, ..., 51 (step 3, an effective 8.33 fps).
    """
    if length <= 0:
        return _fail(0, "no_frames", "the video has no frames", "replace the file", length)
    if not fps or fps <= 0:
        return _fail(0, "no_fps", "the video reports no frame rate; MindSpeed-MM divides "
                     "by it", "re-encode the video with a constant frame rate", fps)
    # the same expression, in the same order, as CogVideoXProcessor.__call__
    if length / fps * settings.train_fps > settings.num_frames:
        return _sample_window(length, fps, settings)
    return _sample_range(length, fps, settings)


# --- the verdict on one video --------------------------------------------------------------

@dataclass(frozen=True)
class Reason:
    """Why a video is rejected (or, as a warning, what to look at)."""

    code: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Policy:
    """What prepare-data accepts beyond what MindSpeed-MM can read."""

    allow_pad: bool = False
    min_side: int | None = None


@dataclass
class Verdict:
    """The decision on one video: accepted or not, with reasons and warnings."""

    reasons: list[Reason] = field(default_factory=list)
    warnings: list[Reason] = field(default_factory=list)
    sampling: Sampling | None = None

    @property
    def accepted(self) -> bool:
        return not self.reasons


_REENCODE = "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"


def _probe_reasons(facts: dict) -> list[Reason]:
    """Reasons that come from the probe alone: unreadable, hung, crashed, rotated."""
    status = facts.get("status", "ok")
    if status == "timeout":
        return [Reason("timeout", f"the decoder did not finish within "
                       f"{facts.get('timeout', '?')} s and was stopped",
                       "check the file; re-encode it, or raise --timeout if it is just long")]
    if status == "crashed":
        return [Reason("crashed", f"the decoder crashed the probe process "
                       f"({facts.get('error', 'no message')})", _REENCODE)]
    if status != "ok":
        return [Reason("unreadable", f"cannot be opened as a video: "
                       f"{facts.get('error', 'unknown error')}", "replace the file; " +
                       _REENCODE)]
    if facts.get("batch_error"):
        return [Reason("decord_batch", f"{facts['batch_error']} (MindSpeed-MM and cogvx "
                       "training read clips with it)",
                       "re-encode it at another size, e.g. ffmpeg -i IN -vf scale=-2:480 "
                       "-c:v libx264 -pix_fmt yuv420p OUT.mp4")]
    if facts.get("rotation"):
        return [Reason("rotated", f"the container asks for a {facts['rotation']} degree "
                       "rotation; readers disagree on applying it (decord 0.6 turns the "
                       "frames, others do not), so training would see the clip in an "
                       "orientation that depends on the build",
                       "bake the rotation into the pixels: ffmpeg -i IN -c:v libx264 OUT.mp4 "
                       "(ffmpeg rotates and clears the flag)")]
    return []


def _sampling_reasons(facts: dict, sampling: Sampling, policy: Policy) -> list[Reason]:
    if not sampling.ok:
        return [Reason(sampling.code, sampling.problem.message, sampling.problem.fix)]
    reasons = []
    decoded = facts.get("frames_decoded", 0)
    if decoded < sampling.decoded[1]:
        reasons.append(Reason(
            "frames_missing",
            f"the container claims {facts.get('frames')} frames but only {decoded} decode; "
            f"MindSpeed-MM needs frames {sampling.decoded[0]}..{sampling.decoded[1] - 1}",
            "replace the file (it is damaged or cut short); " + _REENCODE))
    if sampling.padded and not policy.allow_pad:
        real = len(sampling.indices) - sampling.padded
        reasons.append(Reason(
            "would_pad",
            f"only {real} of {len(sampling.indices)} frames are real: MindSpeed-MM pads the "
            f"clip with {sampling.padded} copies of its last frame",
            "use longer clips, lower --frames, or pass --allow-pad to train on padded clips"))
    return reasons


def _size_reasons(facts: dict, settings: SamplingSettings, policy: Policy) -> list[Reason]:
    side = min(facts.get("width", 0), facts.get("height", 0))
    if policy.min_side and side < policy.min_side:
        return [Reason("too_small", f"the shorter side is {side} px, below --min-side "
                       f"{policy.min_side}", "use larger videos or lower --min-side")]
    return []


def _warnings(facts: dict, sampling: Sampling | None, settings: SamplingSettings) -> list[Reason]:
    notes = []
    if facts.get("vfr"):
        notes.append(Reason("variable_fps", "the frame rate varies; MindSpeed-MM samples by "
                            "the average rate, so clip speed varies",
                            "re-encode at a constant rate: ffmpeg -i IN -r 8 -c:v libx264 OUT.mp4"))
    decoded, claimed = facts.get("frames_decoded", 0), facts.get("frames", 0)
    if facts.get("status") == "ok" and decoded < claimed and sampling and sampling.ok:
        notes.append(Reason("frames_missing_tail", f"only {decoded} of {claimed} frames "
                            "decode; the frames training takes all do", _REENCODE))
    if sampling and sampling.ok and sampling.padded:
        notes.append(Reason("padded", f"padded with {sampling.padded} repeated last frames"))
    if sampling and sampling.ok and abs(sampling.effective_fps - settings.train_fps) > 0.5:
        notes.append(Reason("effective_fps", f"the clip plays at {sampling.effective_fps:.2f} "
                            f"fps, not train_fps {settings.train_fps} (step {sampling.step})"))
    width, height = facts.get("width", 0), facts.get("height", 0)
    if width and height and (height < settings.height or width < settings.width):
        scale = max(settings.height / height, settings.width / width)
        if scale > 1:
            notes.append(Reason("upscaled", f"{width}x{height} is upscaled {scale:.2f}x to "
                                f"cover {settings.width}x{settings.height}"))
    return notes


def judge(facts: dict, settings: SamplingSettings, policy: Policy = Policy()) -> Verdict:
    """Decide whether MindSpeed-MM would train on a probed video as is.

    Args:
        facts: what the probe found (``probe.probe_file``'s result).
        settings: the data settings training will use.
        policy: what to accept beyond MindSpeed-MM's own limits (padding, a minimum size).
    """
    reasons = _probe_reasons(facts)
    if reasons:
        return Verdict(reasons=reasons)
    sampling = sample_frames(facts["frames"], facts["fps"], settings)
    reasons = _sampling_reasons(facts, sampling, policy)
    reasons += _size_reasons(facts, settings, policy)
    return Verdict(reasons=reasons, warnings=_warnings(facts, sampling, settings),
                   sampling=sampling)
