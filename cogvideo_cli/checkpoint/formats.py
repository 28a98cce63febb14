"""Tell a checkpoint's format from the names on disk, and name the subcommand that reads it.

No tensor is read: the tracker file marks MindSpeed-MM, ``iter_*/model_<rank>.pt`` a
LayerZero save, ``latest`` or ``mp_rank_00_model_states.pt`` SAT, and ``*.safetensors`` or a
``CogVideoXTransformer3DModel`` config diffusers. SAT and diffusers downloads keep the weights
in ``transformer/`` (SAT 1.5 also in ``transformer_*``), so a download root is looked into.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cogvideo_cli.checkpoint.layout import MISSPELLED_TRACKERS, RANK_FILE, TRACKER
from cogvideo_cli.core.errors import UsageError

SAT_FILE = "mp_rank_00_model_states.pt"
HF_CLASS = "CogVideoXTransformer3DModel"
_ITER_DIR = re.compile(r"^iter_\d+$")
_ZERO_RANK_FILE = re.compile(r"^model_\d+\.pt$")

WHAT = {"sat": "a SAT checkpoint", "diffusers": "a diffusers transformer folder",
        "mm": "a MindSpeed-MM checkpoint folder", "layerzero": "a LayerZero training save"}
# the subcommand that reads each format (MM has two: a new layout, or diffusers)
READER = {"sat": "sat-to-mm", "diffusers": "hf-to-mm", "mm": "resplit",
          "layerzero": "layerzero-to-mm"}


def _is_hf_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("_class_name") == HF_CLASS
    except (OSError, ValueError, AttributeError):
        return False


def _zero_iteration(folder: Path) -> bool:
    return any(_ZERO_RANK_FILE.match(p.name) for p in folder.iterdir())


def _folder_format(folder: Path) -> str | None:
    names = {p.name for p in folder.iterdir()}
    # LayerZero saves have iter_* folders too, but model_<rank>.pt where MM has mp_rank_*/
    if _ITER_DIR.match(folder.name) and _zero_iteration(folder):
        return "layerzero"
    iterations = sorted(n for n in names if _ITER_DIR.match(n) and (folder / n).is_dir())
    if iterations and _zero_iteration(folder / iterations[-1]):
        return "layerzero"
    if TRACKER in names or names & set(MISSPELLED_TRACKERS) or "release" in names \
            or iterations:
        return "mm"
    if "latest" in names or SAT_FILE in names:
        return "sat"
    if any(n.endswith(".safetensors") for n in names) or _is_hf_config(folder / "config.json"):
        return "diffusers"
    return None


def _file_format(path: Path) -> tuple[str, Path] | None:
    if path.name == SAT_FILE:
        return "sat", path
    if path.name == RANK_FILE:  # DIR/release/mp_rank_00/model_optim_rng.pt
        return "mm", path.parent.parent.parent
    if _ZERO_RANK_FILE.match(path.name) and _ITER_DIR.match(path.parent.name):
        return "layerzero", path.parent
    if path.suffix == ".safetensors":
        return "diffusers", path.parent
    return None


def sniff(path: Path) -> tuple[str, Path] | None:
    """(format, where it lies) of the checkpoint at ``path``; None when no format fits.

    ``where`` is ``path`` itself, the ``transformer/`` folder of a download root, or for one
    file of a checkpoint its folder (a rank file's MM folder, a shard's diffusers folder).
    """
    path = Path(path)
    if path.is_file():
        return _file_format(path)
    if not path.is_dir():
        return None
    found = _folder_format(path)
    if found:
        return found, path
    inner = [path / "transformer"] + sorted(path.glob("transformer_*"))
    for folder in inner:
        if folder.is_dir() and (found := _folder_format(folder)):
            return found, folder
    if (path / "model_index.json").is_file():
        return "diffusers", path  # a pipeline without its transformer/: the reader says so
    return None


def _advice(found: str, where: Path, command: str) -> tuple[str, str]:
    """(what to do, the command line to run) for a ``found`` source given to ``command``."""
    if found == "mm":
        return ("use cogvx convert resplit (another TP/PP) or mm-to-hf (to diffusers)",
                (f"cogvx convert resplit --source {where} --tp N, or "
                 f"cogvx convert mm-to-hf --source {where}"))
    reader = f"cogvx convert {READER[found]}"
    if command == "verify":
        return (f"convert it with {reader} first, then verify what that writes",
                f"{reader} --source {where}, then cogvx convert verify TARGET")
    if command == "mm-to-hf" and found == "diffusers":
        return (f"it is in diffusers form already ({reader} turns it into MindSpeed-MM)",
                f"{reader} --source {where}")
    if command == "mm-to-hf":
        return (f"use {reader}, then mm-to-hf on its output",
                (f"{reader} --source {where} --target MM, then "
                 "cogvx convert mm-to-hf --source MM"))
    return f"use {reader}", f"{reader} --source {where}"


def require_format(path: Path, wanted: str, command: str | None = None) -> None:
    """Refuse ``path`` when it holds a checkpoint of another known format than ``wanted``.

    Giving a subcommand a checkpoint it does not read is a usage error (exit 2): the
    message names the format found and the subcommand that reads it. Unknown, missing or
    incomplete sources pass, for the reader to explain.
    """
    path = Path(path)
    command = command or READER[wanted]
    found = sniff(path)
    if found is None or found[0] == wanted:
        return
    fmt, where = found
    if where == path:
        subject = f"{path} is {WHAT[fmt]}"
    elif path.is_file():
        subject = f"{path} is one file of {WHAT[fmt]} ({where})"
    else:
        subject = f"{path} holds {WHAT[fmt]} ({where.relative_to(path)}/)"
    advice, fix = _advice(fmt, where, command)
    raise UsageError(f"{subject}, not {WHAT[wanted]}; {advice}", value=str(path), fix=fix)
