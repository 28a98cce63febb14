"""SAT (CogVideo / DeepSpeed) transformer checkpoints: find the file, read it as MM names.

Layout of a download: ``transformer/latest`` (text naming the iteration) beside
``transformer/<iter>/mp_rank_00_model_states.pt``, whose ``module`` dict holds the weights
under ``model.diffusion_model.``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cogvideo_cli.checkpoint.mapping import SAT_DUMMIES, SAT_MAP, SAT_PREFIX
from cogvideo_cli.checkpoint.safeload import check_file, load
from cogvideo_cli.checkpoint.source import Source, info_of
from cogvideo_cli.core.errors import CheckpointError, UsageError

log = logging.getLogger(__name__)

SAT_FILE = "mp_rank_00_model_states.pt"


def find_sat_file(path: Path) -> Path:
    """The ``.pt`` file of a SAT checkpoint given as the file, its folder or ``transformer/``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"the SAT checkpoint {path} does not exist", fix="check the path")
    if path.is_file():
        return check_file(path)
    if (path / "latest").is_file():
        iteration = (path / "latest").read_text(encoding="utf-8", errors="replace").strip()
        candidate = path / iteration / SAT_FILE
        if not candidate.is_file():
            raise CheckpointError(f"{path / 'latest'} names {iteration!r}, but {candidate} "
                                  "is missing", fix="pass the .pt file with --source")
        return candidate
    if (path / SAT_FILE).is_file():
        return path / SAT_FILE
    subs = [p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("transformer")]
    if subs:
        raise UsageError(f"{path} looks like a SAT download root, not a transformer folder",
                         value=str(path), fix="pass --source " + " or ".join(
                             str(path / s) for s in sorted(subs)))
    raise UsageError(f"{path} holds no SAT checkpoint (no 'latest' and no {SAT_FILE})",
                     value=str(path), fix=f"pass the {SAT_FILE} file or its transformer/ folder")


def _module(ckpt: object, path: Path) -> dict:
    if isinstance(ckpt, dict) and isinstance(ckpt.get("module"), dict):
        return ckpt["module"]
    if isinstance(ckpt, dict) and any(str(k).startswith(SAT_PREFIX) for k in ckpt):
        return ckpt  # a bare state dict
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        folder = path.resolve().parent.parent.parent
        raise UsageError(f"{path} is one rank file of a MindSpeed-MM checkpoint, not SAT",
                         value=str(path), fix=f"pass its checkpoint folder {folder}")
    raise CheckpointError(f"{path} is not a SAT checkpoint: no 'module' dict with "
                          f"{SAT_PREFIX}* weights", fix="use the converter for its format")


class SatSource(Source):
    """A SAT transformer checkpoint, memory-mapped; tensors read on demand."""

    def __init__(self, path: Path, *, trust: bool = False) -> None:
        file = find_sat_file(path)
        super().__init__(path=file, format="sat")
        module = _module(load(file, trust=trust), file)
        self._names: dict[str, str] = {}  # MM name -> SAT key
        unknown = []
        for key, value in module.items():
            short = key.removeprefix(SAT_PREFIX)
            mm = SAT_MAP.to_mm(short)
            if mm is None or not hasattr(value, "shape"):
                self.dropped.append(key)
                if short not in SAT_DUMMIES:
                    unknown.append(key)
                continue
            self._names[mm] = key
            self.tensors[mm] = info_of(value)
        self._module = module
        if unknown:
            log.warning("dropped %d SAT tensors no MindSpeed-MM model has, e.g. %s",
                        len(unknown), ", ".join(unknown[:3]))

    def get(self, name: str):
        return self._module[self._names[name]]

    def close(self) -> None:
        self._module = {}
