"""prepare_data end to end on real files: every broken input rejected for its own reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import videomaker as vm
from videomaker import CAPTIONS

from cogvideo_cli.core.errors import DataError, UsageError
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.core.workspace import Workspace
from cogvideo_cli.data.cache import ProbeCache
from cogvideo_cli.data.prepare import PrepareOptions, prepare_data
from cogvideo_cli.data.rules import Policy, SamplingSettings

GOOD_CAPTION = "A horse gallops along a beach at sunset."

# file stem in videos/ -> (how it is made, expected first rejection code or None)
BROKEN = {
    "truncated": ("truncated", "unreadable"),
    "zero byte": ("zero_byte", "unreadable"),
    "text": ("text", "unreadable"),
    "claims more": ("claims_more", "frames_missing"),
    "rotated": ("rotated", "rotated"),
    "six fps": ("six_fps", "fps_below_train_fps"),
    "short window": ("short_window", "too_short"),
    "short pad": ("short_pad", "would_pad"),
}


def options(variant: str = "t2v-1.0", **changes) -> PrepareOptions:
    chosen = get_variant(variant)
    values = dict(variant=chosen.name, settings=SamplingSettings.for_variant(chosen),
                  workers=2, timeout=3.0)
    values.update(changes)
    return PrepareOptions(**values)


@pytest.fixture
def messy_dataset(tmp_path, media, broken_videos) -> Path:
    """The real videos, every broken kind, caption faults, odd names and a hanging file."""
    root = tmp_path / "messy"
    videos, labels = root / "videos", root / "labels"
    videos.mkdir(parents=True)
    labels.mkdir()
    for stem, caption in CAPTIONS.items():
        shutil.copy(media / f"{stem}.mp4", videos / f"{stem}.mp4")
        (labels / f"{stem}.txt").write_text(caption, encoding="utf-8")
    for stem, (kind, _code) in BROKEN.items():
        shutil.copy(broken_videos[kind], videos / f"{stem}.mp4")
        (labels / f"{stem}.txt").write_text(GOOD_CAPTION + " " + stem, encoding="utf-8")
    for stem in ("no caption", "empty caption", "latin1 caption", "crlf bom",
                 "espace é 日本"):
        shutil.copy(media / "horse.mp4", videos / f"{stem}.mp4")
    (labels / "empty caption.txt").write_text(" \n", encoding="utf-8")
    (labels / "latin1 caption.txt").write_bytes("Un cheval au caf\u00e9".encode("latin-1"))
    (labels / "crlf bom.txt").write_bytes(b"\xef\xbb\xbfA horse, CRLF and BOM.\r\n")
    (labels / "espace é 日本.txt").write_text("Un cheval galope, é 日本.", encoding="utf-8")
    vm.fifo(videos / "hangs.mp4")
    (labels / "hangs.txt").write_text("never read", encoding="utf-8")
    return root


def _by_file(report: dict) -> dict[str, dict]:
    return {Path(v["file"]).stem: v for v in report["videos"]}


def test_every_broken_input_is_rejected_for_its_reason(messy_dataset, tmp_path):
    ws = Workspace.load(tmp_path / "ws")
    out = tmp_path / "out"
    report = prepare_data(messy_dataset, out, options(), workspace=ws)
    rows = _by_file(report)

    for stem, (_kind, code) in BROKEN.items():
        assert rows[stem]["reasons"][0]["code"] == code, stem
        assert rows[stem]["reasons"][0]["fix"], stem
    assert rows["hangs"]["reasons"][0]["code"] == "timeout"
    assert rows["no caption"]["reasons"][0]["code"] == "caption_missing"
    assert rows["empty caption"]["reasons"][0]["code"] == "caption_empty"
    latin = rows["latin1 caption"]["reasons"][0]
    assert latin["code"] == "caption_not_utf8" and "offset 16" in latin["message"]

    accepted = {stem for stem, row in rows.items() if row["accepted"]}
    assert accepted == set(CAPTIONS) | {"crlf bom", "espace é 日本"}
    lines = (out / "data.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert [r["file"] for r in written] == [v["file"] for v in report["videos"]
                                            if v["accepted"]]
    assert all(set(r) == {"file", "captions"} for r in written)
    by_stem = {Path(r["file"]).stem: r for r in written}
    assert by_stem["crlf bom"]["captions"] == "A horse, CRLF and BOM."
    assert by_stem["espace é 日本"]["file"] == "videos/espace é 日本.mp4"
    assert "é 日本.mp4" in "".join(lines)  # written as UTF-8, not \u escapes

    assert report["summary"]["accepted"] == len(accepted)
    assert report["summary"]["rejected_by_reason"]["unreadable"] == 3
    assert ws.get("data", "data_path") == str(out / "data.jsonl")
    assert ws.get("data", "data_folder") == str(messy_dataset)
    assert json.loads((out / "report.json").read_text())["variant"] == "t2v-1.0"


def test_real_videos_accepted_for_both_presets(real_dataset, tmp_path):
    for variant, frames, last in (("t2v-1.0", 17, {"horse": 19, "bigbuckbunny": 51}),
                                  ("t2v-1.5", 37, {"horse": 39, "bigbuckbunny": 111})):
        report = prepare_data(real_dataset, tmp_path / variant, options(variant))
        rows = _by_file(report)
        assert report["summary"]["accepted"] == 4, variant
        for stem, index in last.items():
            assert len(rows[stem]["sampling"]["indices"]) == frames
            assert rows[stem]["sampling"]["indices"][-1] == index
        assert rows["carphone_pristine"]["sampling"]["case"] == (1 if frames == 17 else 2)


def test_allow_pad_and_min_side(tmp_path, broken_videos, media):
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(broken_videos["short_pad"], root / "pad.mp4")
    shutil.copy(media / "carphone_pristine.mp4", root / "small.mp4")
    for stem in ("pad", "small"):
        (root / f"{stem}.txt").write_text("a caption " + stem, encoding="utf-8")
    report = prepare_data(root, tmp_path / "o", options(
        policy=Policy(allow_pad=True, min_side=160)))
    rows = _by_file(report)
    assert rows["pad"]["accepted"] and rows["pad"]["sampling"]["padded"] == 16
    assert rows["small"]["reasons"][0]["code"] == "too_small"


def test_i2v_first_frames_are_the_clips_first_frame_at_training_size(real_dataset, tmp_path):
    from PIL import Image

    report = prepare_data(real_dataset, tmp_path / "o", options("i2v-1.0", i2v_images=True))
    for row in report["videos"]:
        image = Image.open(tmp_path / "o" / row["first_frame"])
        assert image.size == (720, 480)


def test_nothing_usable_exits_1_but_keeps_the_report(tmp_path, broken_videos):
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(broken_videos["text"], root / "a.mp4")
    (root / "a.txt").write_text("caption", encoding="utf-8")
    with pytest.raises(DataError, match="none of the 1 videos is usable") as err:
        prepare_data(root, tmp_path / "o", options())
    assert err.value.exit_code == 1
    assert not (tmp_path / "o" / "data.jsonl").exists()
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["videos"][0]["reasons"][0]["code"] == "unreadable"


def test_existing_output_needs_force_and_is_checked_first(real_dataset, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError, match="already exists"):
        prepare_data(real_dataset, out, options())
    assert (out / "keep.txt").exists()
    prepare_data(real_dataset, out, options(), force=True)
    assert not (out / "keep.txt").exists() and (out / "data.jsonl").exists()


def test_second_run_comes_from_the_cache(real_dataset, tmp_path):
    cache = tmp_path / "c.json"
    first = prepare_data(real_dataset, tmp_path / "a", options(cache=ProbeCache(cache)))
    second = prepare_data(real_dataset, tmp_path / "b", options(cache=ProbeCache(cache)))
    assert (first["summary"]["probed"], second["summary"]["probed"]) == (4, 0)
    assert second["summary"]["cached"] == 4
    assert (tmp_path / "a" / "data.jsonl").read_text() == (tmp_path / "b" / "data.jsonl"
                                                            ).read_text()


def test_disney_source_end_to_end(tmp_path, media):
    root = tmp_path / "disney"
    (root / "videos").mkdir(parents=True)
    shutil.copy(media / "horse.mp4", root / "videos" / "00000.mp4")
    (root / "prompt.txt").write_text("a horse\nmissing one\n", encoding="utf-8")
    (root / "videos.txt").write_text("videos/00000.mp4\nvideos/00001.mp4\n", "utf-8")
    report = prepare_data(root, tmp_path / "o", options())
    assert [v["accepted"] for v in report["videos"]] == [True, False]
    assert report["videos"][1]["reasons"][0]["code"] == "video_missing"


def test_failed_output_is_replaced_by_the_next_run(tmp_path, broken_videos, media):
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(broken_videos["text"], root / "a.mp4")
    (root / "a.txt").write_text("caption", encoding="utf-8")
    with pytest.raises(DataError):
        prepare_data(root, tmp_path / "o", options())
    # the user repairs the video and runs the same command again: no --force needed
    shutil.copy(media / "horse.mp4", root / "a.mp4")
    report = prepare_data(root, tmp_path / "o", options())
    assert report["summary"]["accepted"] == 1 and (tmp_path / "o" / "data.jsonl").exists()


def test_own_data_jsonl_checks_again_from_its_recorded_folder(real_dataset, tmp_path):
    first = prepare_data(real_dataset, tmp_path / "a", options())
    again = prepare_data(tmp_path / "a" / "data.jsonl", tmp_path / "b", options())
    assert again["summary"]["accepted"] == first["summary"]["accepted"] == 4
    assert again["data_folder"] == str(real_dataset.absolute())
