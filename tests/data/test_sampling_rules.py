"""sample_frames against an independent transcription of MindSpeed-MM's CogVideoXProcessor."""

from __future__ import annotations

import numpy as np
import pytest

from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.data.rules import Policy, SamplingSettings, judge, sample_frames

T10 = SamplingSettings(num_frames=17)
T15 = SamplingSettings(num_frames=37)


def mindspeed_indices(length: int, fps: float, n: int, skip: int, train_fps: int):
    """CogVideoXProcessor.__call__ on index arrays instead of frames (None when it raises).

    Mirrors MindSpeed-MM 2.3.0 line by line: numpy arange, the same int() truncations, the
    IndexError of indexing past the decoded range, then _pad_last_frame.
    """
    try:
        if length / fps * train_fps > n:
            start = int(skip)
            end = int(start + n / train_fps * fps)
            end_safety = min(int(start + n / train_fps * fps), int(length))
            indices = np.arange(start, end, (end - start) // n).astype(int)
            decoded = np.arange(start, end_safety)
            frames = decoded[indices - start]  # raises IndexError past the end
        elif length > n:
            start, end = int(skip), int(length - skip)
            indices = np.arange(start, end, max((end - start) // n, 1)).astype(int)
            frames = np.arange(start, end)[indices - start]
        else:
            start, end = int(skip), int(length - skip)
            rem = (end - start) % 4
            count = (end - start) - 3 if rem == 0 else (end - start) - rem + 1
            frames = np.arange(start, int(start + count))
        if len(frames) == 0:
            raise IndexError("empty clip")
    except (ZeroDivisionError, IndexError, ValueError):
        return None
    frames = list(frames[:n])
    return tuple(frames + [frames[-1]] * (n - len(frames)))


@pytest.mark.parametrize("settings", [T10, T15, SamplingSettings(53, skip_frames=0),
                                      SamplingSettings(17, train_fps=16, skip_frames=5)])
def test_matches_mindspeed_on_a_grid(settings):
    fps_values = [5.0, 6.0, 7.99, 8.0, 12.0, 15.0, 23.976, 24.0, 25.0, 29.97002997, 30.0, 60.0]
    checked = 0
    for fps in fps_values:
        for length in range(1, 260, 3):
            expected = mindspeed_indices(length, fps, settings.num_frames,
                                         settings.skip_frames, settings.train_fps)
            got = sample_frames(length, fps, settings)
            assert (got.indices if got.ok else None) == expected, (length, fps)
            checked += 1
    assert checked > 1000


def test_real_video_numbers_t2v_10():
    horse = sample_frames(49, 8.0, T10)
    assert (horse.case, horse.indices, horse.step) == (1, tuple(range(3, 20)), 1)
    bunny = sample_frames(132, 25.0, T10)
    assert bunny.indices == tuple(range(3, 52, 3)) and bunny.decoded == (3, 56)
    assert bunny.effective_fps == pytest.approx(25 / 3)
    car = sample_frames(120, 30000 / 1001, T10)
    assert car.case == 1 and car.indices[-1] == 51 and car.padded == 0


def test_real_video_numbers_t2v_15():
    assert sample_frames(49, 8.0, T15).indices == tuple(range(3, 40))
    assert sample_frames(132, 25.0, T15).indices == tuple(range(3, 112, 3))
    car = sample_frames(120, 30000 / 1001, T15)  # 32 frames at 8 fps: case 2
    assert (car.case, car.step, car.decoded) == (2, 3, (3, 117))
    assert car.indices == tuple(range(3, 112, 3))


def test_fps_below_train_fps_fails():
    result = sample_frames(49, 6.0, T10)
    assert not result.ok and result.code == "fps_below_train_fps"
    assert "6 fps is below train_fps 8" in result.problem.message


def test_too_short_for_the_window_fails():
    result = sample_frames(19, 8.0, T10)  # needs frame 19 (skip 3 + 17 frames)
    assert result.code == "too_short" and "frame 19" in result.problem.message
    assert sample_frames(20, 8.0, T10).ok


def test_short_clip_is_padded_with_its_last_frame():
    result = sample_frames(10, 8.0, T10)  # case 3: 4 frames from [3, 7) -> 1 (4k+1)
    assert result.case == 3 and result.indices == (3,) * 17 and result.padded == 16
    assert sample_frames(6, 8.0, T10).code == "too_short"


def test_no_frames_or_fps():
    assert sample_frames(0, 8.0, T10).code == "no_frames"
    assert sample_frames(49, 0.0, T10).code == "no_fps"


def test_settings_follow_the_variant_and_are_checked():
    assert SamplingSettings.for_variant(get_variant("t2v-1.5")).num_frames == 37
    assert SamplingSettings.for_variant(get_variant("t2v-1.0"), frames=49).num_frames == 49
    with pytest.raises(UsageError, match="not 4k\\+1"):
        SamplingSettings.for_variant(get_variant("t2v-1.0"), frames=18)
    with pytest.raises(UsageError, match="even count"):
        SamplingSettings.for_variant(get_variant("t2v-1.5"), frames=33)
    with pytest.raises(UsageError, match="train-fps"):
        SamplingSettings.for_variant(get_variant("t2v-1.0"), train_fps=0)


def _facts(**changes):
    facts = {"status": "ok", "frames": 49, "fps": 8.0, "frames_decoded": 49, "width": 720,
             "height": 480, "rotation": 0, "vfr": False}
    facts.update(changes)
    return facts


def test_judge_padding_needs_allow_pad():
    facts = _facts(frames=10, frames_decoded=10)
    assert [r.code for r in judge(facts, T10).reasons] == ["would_pad"]
    allowed = judge(facts, T10, Policy(allow_pad=True))
    assert allowed.accepted and "padded" in [w.code for w in allowed.warnings]


def test_judge_missing_frames_only_matter_when_training_needs_them():
    assert [r.code for r in judge(_facts(frames_decoded=11), T10).reasons] == [
        "frames_missing"]
    tail = judge(_facts(frames_decoded=28), T10)
    assert tail.accepted and "frames_missing_tail" in [w.code for w in tail.warnings]


def test_judge_min_side_and_rotation():
    assert judge(_facts(width=176, height=144), T10).accepted
    small = judge(_facts(width=176, height=144), T10, Policy(min_side=256))
    assert [r.code for r in small.reasons] == ["too_small"]
    assert [r.code for r in judge(_facts(rotation=90), T10).reasons] == ["rotated"]
