"""Fixtures for launch tests: a stand-in MindSpeed-MM tree, weights, data, checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standin import Tree  # noqa: E402


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(tmp_path / "setup")
