"""Shared fixtures: where ../shared lives, and a CLI runner with a clean environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
GOLDEN = SHARED / "golden"


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: tests need the shared/ folder beside the repo")
    return SHARED


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke cogvx in-process with its workspace in a temporary folder."""
    from typer.testing import CliRunner

    from cogvideo_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COGVX_WORKSPACE", raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env, input=input)

    return invoke


def run_env(**extra: str) -> dict[str, str]:
    """A copy of the environment for subprocesses, with overrides."""
    env = dict(os.environ)
    env.update(extra)
    return env
