"""Backends that turn run settings into a launch: MindSpeed-MM now, diffusers later.

A backend module exposes ``NAME`` and ``plan_run(settings, workspace) -> (LaunchPlan,
Facts)``; everything after planning (rules, run directory, torchrun, supervision) is shared.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cogvideo_cli.core.errors import NotSupportedError, UsageError

BACKENDS = {
    "mindspeed": "cogvideo_cli.backends.mindspeed.plan",
    "diffusers": "cogvideo_cli.backends.diffusers.plan",
}


def get_backend(name: str) -> ModuleType:
    """The planning module of a backend."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}", fix="use mindspeed or diffusers")
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as exc:
        if exc.name != BACKENDS[name]:
            raise
        raise NotSupportedError(f"the {name} backend cannot launch train, lora or infer yet",
                                value=name, fix="use --backend mindspeed") from exc
