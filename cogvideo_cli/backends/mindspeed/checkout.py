"""The MindSpeed-MM checkout: where it is and which entry script each job runs."""

from __future__ import annotations

import os
from pathlib import Path

from cogvideo_cli.core.workspace import Workspace

# Entry scripts, relative to the repository root (section 0 of the reference).
ENTRIES = {
    "train": "pretrain_sora.py",
    "lora": "pretrain_sora.py",
    "infer": "inference_sora.py",
    "extract": "mindspeed_mm/tools/feature_extraction/get_sora_feature.py",
}

ENV_VAR = "MINDSPEED_MM_PATH"


def locate_checkout(given: str | Path | None, workspace: Workspace) -> Path | None:
    """The checkout to launch from: ``--mindspeed-mm``, the workspace, then $MINDSPEED_MM_PATH.

    Returns an absolute path, or None when nothing names one. Existence is a rule, checked
    with the others before launch.
    """
    if given:
        return Path(given).expanduser().absolute()
    recorded = workspace.path_value("mindspeed", "path")
    if recorded is not None:
        return recorded.absolute()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser().absolute() if env else None


def entry_script(kind: str) -> str:
    """The entry script of a job kind."""
    return ENTRIES[kind]
