"""``cogvx prepare-data`` through the CLI: exit codes, messages, output, workspace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO.parent / "shared" / "media" / "videos"


@pytest.fixture
def dataset(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COGVX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    root.mkdir()
    for stem in ("horse", "kitten"):
        shutil.copy(MEDIA / f"{stem}.mp4", root / f"{stem}.mp4")
        (root / f"{stem}.txt").write_text(f"a {stem} in black and white", encoding="utf-8")
    return root


def test_prepare_data_writes_outputs_and_records_the_workspace(cli, dataset, tmp_path):
    result = cli("prepare-data", dataset, "--out", "prepared", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "accepted" in result.stdout and "2" in result.stdout
    rows = (tmp_path / "prepared" / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["file"] for r in rows] == ["horse.mp4", "kitten.mp4"]
    toml = (tmp_path / "cogvx.toml").read_text(encoding="utf-8")
    assert f'data_folder = "{dataset}"' in toml and "prepared/data.jsonl" in toml


def test_json_output_lists_rejections(cli, dataset, tmp_path):
    (dataset / "kitten.txt").unlink()
    result = cli("--json", "prepare-data", dataset, "--variant", "t2v-1.5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["accepted"] == 1 and data["settings"]["num_frames"] == 37
    assert data["rejected"][0]["reasons"][0]["code"] == "caption_missing"


def test_existing_output_without_force_is_a_usage_error(cli, dataset, tmp_path):
    (tmp_path / "prepared-data").mkdir()
    result = cli("prepare-data", dataset)
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--force" in result.stderr


@pytest.mark.parametrize("args, text", [
    (["--frames", "18"], "not 4k+1"),
    (["--variant", "t2v-9"], "unknown variant"),
    (["--workers", "0"], "--workers"),
])
def test_bad_options_exit_2(cli, dataset, args, text):
    result = cli("prepare-data", dataset, *args)
    assert result.exit_code == 2 and text in result.output


def test_nothing_usable_exits_1_with_the_report(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGVX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.mp4").write_text("not a video", encoding="utf-8")
    (root / "a.txt").write_text("a caption", encoding="utf-8")
    result = cli("prepare-data", root, "--out", "o")
    assert result.exit_code == 1
    assert "none of the 1 videos is usable (unreadable: 1)" in result.stderr
    assert "report.json" in result.stderr and (tmp_path / "o" / "report.json").exists()
    assert not (tmp_path / "cogvx.toml").exists()


def test_mismatched_disney_lists_exit_1(cli, tmp_path):
    (tmp_path / "prompt.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "videos.txt").write_text("a.mp4\n", encoding="utf-8")
    result = cli("prepare-data", tmp_path)
    assert result.exit_code == 1 and "prompt.txt has 2 lines but videos.txt has 1" in (
        result.stderr)


def test_the_model_variant_is_the_default_and_is_named(cli, dataset, tmp_path):
    """After `cogvx tiny-model --variant t2v-1.5` only [weights] variant is recorded."""
    from cogvideo_cli.core.workspace import Workspace

    Workspace.load(tmp_path).record("weights", variant="t2v-1.5")
    result = cli("--json", "prepare-data", dataset)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["variant"] == "t2v-1.5"
    shown = cli("prepare-data", dataset, "--out", "again")
    assert "checking the videos for t2v-1.5 (the workspace's [weights] variant)" in \
        shown.stderr
