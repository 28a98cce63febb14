"""Fixtures for checkpoint tests; the helpers themselves live in ckpt_helpers.py."""

from __future__ import annotations

import pytest
import torch
from ckpt_helpers import random_mm_state, write_sat


@pytest.fixture
def sat_factory(tmp_path):
    """Build a synthetic SAT checkpoint: ``sat_factory(variant, **kw) -> (path, state)``."""
    def build(variant, name="sat", dtype=torch.bfloat16, seed=0, edit=None):
        state = random_mm_state(variant, dtype, seed)
        if edit:
            edit(state)
        return write_sat(tmp_path / name, state), state
    return build
