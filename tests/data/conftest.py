"""Fixtures for the data tests: the real videos with captions, and broken variants of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import videomaker as vm
from videomaker import CAPTIONS



@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own probe cache folder."""
    monkeypatch.setenv("COGVX_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def media() -> Path:
    if not vm.MEDIA.is_dir():
        pytest.fail(f"{vm.MEDIA} is missing: tests need the shared/ folder beside the repo")
    return vm.MEDIA


def write_labels_dataset(root: Path, media: Path) -> Path:
    """``root/videos/*.mp4`` (copies of the real videos) and ``root/labels/*.txt``."""
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, caption in CAPTIONS.items():
        shutil.copy(media / f"{stem}.mp4", root / "videos" / f"{stem}.mp4")
        (root / "labels" / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    return root


@pytest.fixture
def real_dataset(tmp_path, media) -> Path:
    return write_labels_dataset(tmp_path / "real", media)


@pytest.fixture(scope="session")
def broken_videos(tmp_path_factory, media) -> dict[str, Path]:
    """One file per broken kind the issue lists, made once per session."""
    folder = tmp_path_factory.mktemp("broken")
    return {
        "truncated": vm.truncated(folder / "truncated.mp4"),
        "zero_byte": vm.zero_byte(folder / "zero_byte.mp4"),
        "text": vm.text_as_video(folder / "text.mp4"),
        "claims_more": vm.claims_more_frames(folder / "claims_more.mp4", keep=0.25),
        "damaged_tail": vm.claims_more_frames(folder / "damaged_tail.mp4", keep=0.6),
        "rotated": vm.rotated(folder / "rotated.mp4"),
        "six_fps": vm.reencoded(folder / "six_fps.mp4", fps=6, frames=49),
        "short_window": vm.reencoded(folder / "short_window.mp4", fps=8, frames=19),
        "short_pad": vm.reencoded(folder / "short_pad.mp4", fps=8, frames=10),
        "vfr": vm.reencoded(folder / "vfr.mp4", fps=8, frames=49, jitter=True),
    }
