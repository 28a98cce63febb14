"""Atomic outputs: nothing half-written survives a failure; --force is needed to replace."""

from __future__ import annotations

import pytest

from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.fsutil import TEMP_MARK, atomic_dir, atomic_file


def test_atomic_dir_success_and_refusal(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "new"
    with pytest.raises(UsageError, match="already exists") as err:
        with atomic_dir(target):
            pass
    assert "--force" in err.value.fix


def test_atomic_dir_failure_leaves_old_target(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target, force=True) as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_force_replaces(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target, force=True) as tmp:
        (tmp / "fresh.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert not any(TEMP_MARK in p.name for p in tmp_path.iterdir())


def test_atomic_file_failure(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write("partial")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "d") as tmp:
            pass
        with atomic_file(tmp_path / "f.txt") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644


def test_force_never_destroys_inputs_or_the_working_folder(tmp_path, monkeypatch):
    source = tmp_path / "nest" / "source"
    source.mkdir(parents=True)
    (source / "w.pt").write_text("weights")
    for target in (tmp_path / "nest", source, source / "inside"):
        with pytest.raises(UsageError, match="overlaps the input"):
            with atomic_dir(target, force=True, protect=(source,)):
                pass
    assert (source / "w.pt").read_text() == "weights"
    monkeypatch.chdir(source)
    for target in (source, tmp_path / "nest", __import__("pathlib").Path(".")):
        with pytest.raises(UsageError, match="working folder"):
            with atomic_dir(target, force=True):
                pass
    assert (source / "w.pt").exists()
