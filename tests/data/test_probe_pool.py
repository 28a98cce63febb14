"""Probing real and broken videos in isolated workers; timeouts, crashes and the cache."""

from __future__ import annotations

import os
import time

import pytest
import videomaker as vm

from cogvideo_cli.data.cache import ProbeCache
from cogvideo_cli.data.pool import run_isolated
from cogvideo_cli.data.probe import decord_available, probe_file, probe_videos

REAL = {  # name: (frames, fps, width, height), as CREDITS.md describes them
    "horse": (49, 8.0, 720, 480),
    "kitten": (49, 8.0, 720, 480),
    "bigbuckbunny": (132, 25.0, 1280, 720),
    "carphone_pristine": (120, 30000 / 1001, 176, 144),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos_probe_to_their_known_facts(media, name):
    facts = probe_file(str(media / f"{name}.mp4"))
    frames, fps, width, height = REAL[name]
    assert facts["status"] == "ok"
    assert facts["frames"] == facts["frames_decoded"] == facts["frames_claimed"] == frames
    assert facts["fps"] == pytest.approx(fps)
    assert (facts["width"], facts["height"]) == (width, height)
    assert (facts["codec"], facts["pix_fmt"], facts["rotation"], facts["vfr"]) == (
        "h264", "yuv420p", 0, False)
    assert facts["reader"] == ("decord" if decord_available() else "pyav")


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "text"])
def test_unopenable_files_say_why(broken_videos, kind):
    facts = probe_file(str(broken_videos[kind]))
    assert facts["status"] == "unreadable" and "Invalid data" in facts["error"]


def test_container_claims_more_frames_than_decode(broken_videos):
    facts = probe_file(str(broken_videos["claims_more"]))
    assert facts["frames"] == 49 and facts["frames_decoded"] < 20
    assert facts["decode_error"].startswith(f"frame {facts['frames_decoded']}:")


def test_rotation_and_variable_rate_are_seen(broken_videos):
    rotated = probe_file(str(broken_videos["rotated"]))
    assert rotated["rotation"] == 90 and (rotated["coded_width"], rotated["width"]) == (720, 480)
    assert probe_file(str(broken_videos["vfr"]))["vfr"] is True
    assert probe_file(str(broken_videos["six_fps"]))["fps"] == pytest.approx(6.0)


def test_pool_survives_a_crash_and_an_error():
    results = {}
    run_isolated(vm.crash_on_abort, [(1, "a"), (2, "abort"), (3, "error"), (4, "b")],
                 workers=2, timeout=30, on_done=results.__setitem__)
    assert results[1].value == "A" and results[4].value == "B"
    assert results[2].status == "crashed" and "SIGABRT" in results[2].error
    assert results[3].status == "error" and "bad input" in results[3].error


def test_a_hanging_file_is_stopped_at_its_timeout(tmp_path, media):
    """A FIFO named like a video blocks the decoder's open() for ever: a real hang."""
    hang = vm.fifo(tmp_path / "hang.mp4")
    started = time.monotonic()
    facts, stats = probe_videos([hang, media / "horse.mp4", media / "kitten.mp4"],
                                workers=2, timeout=2.0)
    elapsed = time.monotonic() - started
    assert facts[hang]["status"] == "timeout" and facts[hang]["timeout"] == 2.0
    assert facts[media / "horse.mp4"]["frames"] == 49
    assert facts[media / "kitten.mp4"]["frames"] == 49
    assert 2.0 <= elapsed < 20


def test_cache_answers_unchanged_files_and_reprobes_changed_ones(tmp_path, media):
    video = tmp_path / "horse.mp4"
    video.write_bytes((media / "horse.mp4").read_bytes())
    cache_file = tmp_path / "cache.json"
    _, first = probe_videos([video], workers=1, cache=ProbeCache(cache_file))
    facts, second = probe_videos([video], workers=1, cache=ProbeCache(cache_file))
    assert (first.probed, second.probed, second.cached) == (1, 0, 1)
    assert facts[video]["frames"] == 49
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))
    _, third = probe_videos([video], workers=1, cache=ProbeCache(cache_file))
    assert third.probed == 1
    assert ProbeCache(cache_file, tag="other").get(video) is None


def test_a_damaged_cache_is_ignored(tmp_path, media):
    cache_file = tmp_path / "cache.json"
    cache_file.write_text("{not json", encoding="utf-8")
    facts, stats = probe_videos([media / "horse.mp4"], workers=1, cache=ProbeCache(cache_file))
    assert stats.probed == 1 and facts[media / "horse.mp4"]["frames"] == 49
    assert ProbeCache(cache_file).get(media / "horse.mp4")["frames"] == 49


@pytest.mark.skipif(not decord_available(), reason="the get_batch check is decord's")
def test_a_size_decord_get_batch_cannot_read_is_rejected(tmp_path):
    """48x32 H.264: decord decodes 4-channel frames and get_batch fails (6144 vs 4608)."""
    from cogvideo_cli.core.variants import get_variant
    from cogvideo_cli.data.rules import SamplingSettings, judge

    bad = vm.reencoded(tmp_path / "small.mp4", fps=8, frames=40, size=(48, 32))
    good = vm.reencoded(tmp_path / "fine.mp4", fps=8, frames=40, size=(64, 48))
    facts = probe_file(str(bad))
    assert "get_batch" in facts["batch_error"]
    assert "batch_error" not in probe_file(str(good))
    settings = SamplingSettings.for_variant(get_variant("t2v-1.0"), frames=9, height=32,
                                            width=48)
    reason = judge(facts, settings).reasons[0]
    assert reason.code == "decord_batch" and "re-encode it at another size" in reason.fix
    assert judge(probe_file(str(good)), settings).accepted
