"""The four SOURCE kinds and the caption checks."""

from __future__ import annotations

import json
import shutil

import pytest

from cogvideo_cli.core.errors import DataError, UsageError
from cogvideo_cli.data.captions import decode_caption, length_warning
from cogvideo_cli.data.sources import open_source


def test_videos_and_labels_layout(real_dataset):
    source = open_source(real_dataset)
    assert source.kind == "videos-labels" and source.data_folder == real_dataset
    assert [e.file for e in source.entries] == [
        "videos/bigbuckbunny.mp4", "videos/carphone_pristine.mp4", "videos/horse.mp4",
        "videos/kitten.mp4"]
    assert all(e.caption.text and not e.caption.problem for e in source.entries)


def test_captioned_folder_sorts_naturally_and_notes_missing_captions(tmp_path, media):
    for name in ("10.mp4", "2.mp4"):
        shutil.copy(media / "horse.mp4", tmp_path / name)
    (tmp_path / "2.txt").write_text("two", encoding="utf-8")
    source = open_source(tmp_path)
    assert source.kind == "captioned-folder"
    assert [e.file for e in source.entries] == ["2.mp4", "10.mp4"]
    assert source.entries[1].caption.problem.code == "caption_missing"


def test_disney_layout_pairs_lines(tmp_path):
    (tmp_path / "prompt.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n\r\n")
    (tmp_path / "videos.txt").write_text("videos/00000.mp4\nvideos/00001.mp4\n", "utf-8")
    source = open_source(tmp_path)
    assert source.kind == "disney"
    assert [(e.file, e.caption.text) for e in source.entries] == [
        ("videos/00000.mp4", "one"), ("videos/00001.mp4", "two")]
    assert [n.code for n in source.entries[0].caption.notes] == ["caption_bom"]


def test_disney_line_counts_must_match(tmp_path):
    (tmp_path / "prompt.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "videos.txt").write_text("a.mp4\nb.mp4\n", encoding="utf-8")
    with pytest.raises(DataError, match="prompt.txt has 3 lines but videos.txt has 2") as err:
        open_source(tmp_path)
    assert err.value.exit_code == 1 and "same order" in err.value.fix


def test_disney_needs_both_files(tmp_path):
    (tmp_path / "prompt.txt").write_text("one\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no videos.txt"):
        open_source(tmp_path)


def test_jsonl_rows_keep_their_file_and_flag_bad_lines(tmp_path):
    rows = [{"file": "a b/é.mp4", "captions": ["x", "y"]}, {"file": "c.mp4", "captions": ""}]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n"
    (tmp_path / "data.jsonl").write_text(text, encoding="utf-8")
    source = open_source(tmp_path / "data.jsonl")
    first, second, third = source.entries
    assert first.file == "a b/é.mp4" and first.path == tmp_path / "a b" / "é.mp4"
    assert first.caption.text == ["x", "y"]
    assert second.caption.problem.code == "caption_empty"
    assert third.problems[0].code == "bad_row" and "data.jsonl:3" in third.where


def test_csv_source_with_a_data_folder(tmp_path):
    (tmp_path / "list.csv").write_text("file,captions\nclip.mp4,a dog runs\n", "utf-8")
    source = open_source(tmp_path / "list.csv", data_folder=tmp_path / "root")
    assert source.kind == "csv" and source.entries[0].path == tmp_path / "root" / "clip.mp4"


def test_unknown_sources_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        open_source(tmp_path / "nope")
    with pytest.raises(UsageError, match="no videos found"):
        open_source(tmp_path)


def test_latin1_caption_names_the_byte_offset():
    caption = decode_caption("Un caf\u00e9 au bord".encode("latin-1"), "labels/1.txt")
    assert caption.problem.code == "caption_not_utf8"
    assert "labels/1.txt" in caption.problem.message
    assert "byte 0xe9 at offset 6" in caption.problem.message


def test_offset_counts_the_bom_too():
    caption = decode_caption(b"\xef\xbb\xbfab\xff", "x.txt")
    assert "offset 5" in caption.problem.message


def test_empty_and_whitespace_captions():
    assert decode_caption(b"  \r\n\n", "x.txt").problem.code == "caption_empty"
    assert decode_caption(b"line one\nline two\n", "x.txt").text == "line one line two"


def test_length_warning_uses_the_token_count():
    count = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    assert length_warning("a " * 300, count, 226).code == "caption_too_long"
    assert length_warning("short caption", count, 226) is None
