"""Load the shipped config templates and write a run directory.

Templates live in ``templates/`` at the top of the source tree and inside the wheel as the
package ``cogvideo_cli.templates``. A run directory holds the rendered configs, the
standalone ``launch.sh``, the exact command and environment, the resolved settings and the
package versions; the log is added while the run goes.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import ConfigError
from cogvideo_cli.core.fsutil import atomic_dir

VARIANT_FILES = ("model.json", "data.json", "inference.json")


@functools.lru_cache(maxsize=1)
def template_root() -> Path:
    """The folder holding the templates: the source tree's, else the installed package's."""
    source = Path(__file__).resolve().parents[2] / "templates"
    if (source / "tools.json").is_file():
        return source
    from importlib import resources

    installed = Path(str(resources.files("cogvideo_cli.templates")))
    if (installed / "tools.json").is_file():
        return installed
    raise ConfigError("the config templates are missing from this installation",
                      value=str(installed), fix="reinstall cogvx")


@functools.lru_cache(maxsize=64)
def _read_json(relative: str) -> dict:
    path = template_root() / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no template {relative}", value=str(path),
                          fix="reinstall cogvx") from exc
    except ValueError as exc:
        raise ConfigError(f"template {relative} is not valid JSON: {exc}",
                          value=str(path), fix="reinstall cogvx") from exc


def load_json(relative: str) -> dict:
    """A fresh, mutable copy of a JSON template, e.g. ``t2v-1.5/model.json``."""
    return copy.deepcopy(_read_json(relative))


def load_text(relative: str) -> str:
    """A text template such as ``layerzero.yaml``."""
    return (template_root() / relative).read_text(encoding="utf-8")


def all_templates() -> list[str]:
    """Every shipped template, relative to the template root."""
    root = template_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.suffix in (".json", ".yaml"))


def dump_json(doc: Any) -> str:
    """The JSON text cogvx writes: 4-space indent, key order kept, final newline."""
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


def write_run_dir(run_dir: Path, files: dict[str, str], force: bool = False) -> Path:
    """Write a run directory atomically: every file or none.

    Args:
        run_dir: the folder to create; it must not exist unless ``force``.
        files: relative file name -> text. Names ending in ``.sh`` become executable.
        force: replace an existing run directory.

    Returns:
        The run directory.
    """
    with atomic_dir(Path(run_dir), force=force, what="run directory") as tmp:
        for name, text in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if name.endswith(".sh"):
                path.chmod(0o755)
    return Path(run_dir)
