"""Backends that turn run settings into a launch: MindSpeed-MM and diffusers.

A backend module exposes ``NAME`` and ``plan_run(settings, workspace) -> (LaunchPlan,
Facts)``; everything after planning (rules, run directory, torchrun, supervision) is shared.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cogvideo_cli.core.errors import UsageError

BACKENDS = {
    "mindspeed": "cogvideo_cli.backends.mindspeed.plan",
    "diffusers": "cogvideo_cli.backends.diffusers.plan",
}


def get_backend(name: str) -> ModuleType:
    """The planning module of a backend."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}", value=name,
                         fix="use --backend mindspeed or --backend diffusers (or leave it "
                             "out to let cogvx choose)")
    return importlib.import_module(BACKENDS[name])


def choose_backend(settings, workspace) -> tuple[str, str]:
    """The backend for a run that names none, and why: torch-free probes only.

    The workspace's ``[workspace] backend`` wins; otherwise MindSpeed-MM when torch_npu and
    a MindSpeed-MM checkout are present, else diffusers.
    """
    from cogvideo_cli.backends.diffusers.engine import pick_backend
    from cogvideo_cli.backends.mindspeed.checkout import locate_checkout

    recorded = workspace.get("workspace", "backend")
    if recorded:
        get_backend(recorded)
        return recorded, f"{workspace.path} sets [workspace] backend = {recorded!r}"
    return pick_backend(locate_checkout(settings.mindspeed, workspace))
