"""The MindSpeed-MM / Megatron checkpoint folder: names, tracker file, layout, sidecar.

::

    DIR/latest_checkpointed_iteration.txt      "release" or an iteration, no newline
    DIR/release/ or DIR/iter_0000010/
        mp_rank_TT/model_optim_rng.pt          without pipeline parallelism
        mp_rank_TT_PPP/model_optim_rng.pt      with it (TT = TP rank, PPP = PP rank)
    DIR.cogvx.json                             cogvx's sidecar: variant, layout, digests
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cogvideo_cli.core.errors import CheckpointError, UsageError

TRACKER = "latest_checkpointed_iteration.txt"
# The MindSpeed-MM README spells it with an "s"; Megatron then starts from random weights.
MISSPELLED_TRACKERS = ("latest_checkpointed_iterations.txt", "latest_checkpoint_iteration.txt",
                       "latest_checkpointed_iteration", "latest_checkpointed_iteration.txt.txt")
RANK_FILE = "model_optim_rng.pt"
SIDECAR_SUFFIX = ".cogvx.json"
SIDECAR_KIND = "cogvx-mm-checkpoint"
_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_LAYOUT_SUFFIX = re.compile(r"(?:-tp\d+)?(?:-pp\d+(?:-\d+)*)?$")


@dataclass
class Layout:
    """Tensor- and pipeline-parallel layout of an MM checkpoint."""

    tp: int = 1
    pp_layers: list[int] = field(default_factory=list)  # [] = no pipeline split
    iteration: str = "release"
    variant: str | None = None

    @property
    def pp(self) -> int:
        return max(1, len(self.pp_layers))

    def rank_dir(self, tp_rank: int, pp_rank: int) -> str:
        """``mp_rank_TT`` or ``mp_rank_TT_PPP`` (Megatron's ``get_checkpoint_name``)."""
        if len(self.pp_layers) > 1:
            return f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"
        return f"mp_rank_{tp_rank:02d}"

    @property
    def iteration_dir(self) -> str:
        return iteration_dir_name(self.iteration)

    def rank_files(self) -> list[tuple[int, int, str]]:
        """(pp rank, tp rank, relative path) of every rank file, stage by stage."""
        return [(p, t, f"{self.iteration_dir}/{self.rank_dir(t, p)}/{RANK_FILE}")
                for p in range(self.pp) for t in range(self.tp)]

    def describe(self) -> str:
        pp = " ".join(map(str, self.pp_layers)) if len(self.pp_layers) > 1 else "none"
        return f"TP {self.tp}, PP stages {pp}"


def layout_suffix(tp: int, pp_layers: list[int] | None = None) -> str:
    """``-tp2`` or ``-tp2-pp10-11-11-10``: the layout part of cogvx's checkpoint names."""
    stages = list(pp_layers or [])
    return f"-tp{tp}" + ("-pp" + "-".join(map(str, stages)) if len(stages) > 1 else "")


def relayout_name(name: str, tp: int, pp_layers: list[int] | None = None) -> str:
    """``name`` with its layout suffix replaced: ``t2v-mm-tp2-pp21-21`` -> ``t2v-mm-tp4``."""
    base = _LAYOUT_SUFFIX.sub("", name) or name
    return base + layout_suffix(tp, pp_layers)


def iteration_dir_name(iteration: str) -> str:
    """``release`` or ``iter_%07d``."""
    return "release" if iteration == "release" else f"iter_{int(iteration):07d}"


def parse_tracker(text: str, path: Path) -> str:
    """The iteration a tracker names: ``release`` or a positive integer, as Megatron reads it."""
    value = text.strip()
    if value == "release":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise CheckpointError(
            f"{path} holds {value[:40]!r}; Megatron accepts only 'release' or an iteration "
            f"above 0 (anything else exits with status 0 and loads nothing)", value=value[:40],
            fix=f"write 'release' (no newline) into {path}")
    return str(number)


def find_tracker(root: Path) -> Path:
    """The tracker file of an MM folder; a misspelled or missing one is an error with a fix."""
    root = Path(root)
    if not root.exists():
        raise CheckpointError(f"the checkpoint folder {root} does not exist",
                              fix="check the path, or convert a checkpoint into it first")
    if not root.is_dir():
        raise UsageError(f"{root} is a file, but a MindSpeed-MM checkpoint folder is needed",
                         value=str(root), fix=f"pass the folder that holds {TRACKER}")
    tracker = root / TRACKER
    if tracker.is_file():
        return tracker
    for wrong in MISSPELLED_TRACKERS:
        if (root / wrong).exists():
            raise CheckpointError(
                f"the tracker file is misspelled {wrong!r}; Megatron looks for {TRACKER!r} "
                f"and, not finding it, silently starts from random weights", value=wrong,
                fix=f"mv {root / wrong} {tracker}")
    iterations = sorted(p.name for p in root.iterdir()
                        if p.is_dir() and (p.name == "release" or p.name.startswith("iter_")))
    fix = f"create it: printf release > {tracker}" if "release" in iterations else (
        f"create it: printf {int(iterations[-1][5:])} > {tracker}" if iterations
        else "point at a MindSpeed-MM checkpoint folder (it holds release/ or iter_*/)")
    raise CheckpointError(f"{root} has no {TRACKER}; Megatron would start from random "
                          "weights without an error", fix=fix)


def read_iteration(root: Path) -> tuple[str, Path]:
    """(iteration, iteration folder) named by the tracker."""
    tracker = find_tracker(root)
    iteration = parse_tracker(tracker.read_text(encoding="utf-8", errors="replace"), tracker)
    folder = Path(root) / iteration_dir_name(iteration)
    if not folder.is_dir():
        raise CheckpointError(f"{tracker} names iteration {iteration}, but {folder} is missing",
                              value=iteration, fix="fix the tracker or restore the folder")
    return iteration, folder


def scan_ranks(folder: Path) -> tuple[int, int]:
    """(TP, PP) from the ``mp_rank_*`` folders; every combination must be present."""
    ranks = set()
    for entry in folder.iterdir():
        match = _RANK_DIR.match(entry.name)
        if match and entry.is_dir():
            ranks.add((int(match.group(1)), -1 if match.group(2) is None else int(match.group(2))))
    if not ranks:
        raise CheckpointError(f"{folder} holds no mp_rank_* folders",
                              fix="convert the checkpoint again; the folder is empty or foreign")
    tp = max(t for t, _ in ranks) + 1
    with_pp = {p for _, p in ranks if p >= 0}
    if with_pp and any(p < 0 for _, p in ranks):
        raise CheckpointError(f"{folder} mixes mp_rank_TT and mp_rank_TT_PPP folders",
                              fix="remove the stale folders of the other layout")
    pp = max(with_pp) + 1 if with_pp else 1
    want = {(t, p if with_pp else -1) for t in range(tp) for p in range(pp)}
    if want - ranks:
        gone = min(want - ranks)
        name = f"mp_rank_{gone[0]:02d}" + (f"_{gone[1]:03d}" if gone[1] >= 0 else "")
        raise CheckpointError(f"{folder} lacks {name} of a TP {tp} / PP {pp} layout",
                              value=name, fix="the checkpoint is incomplete; convert it again")
    return tp, pp


def sidecar_path(root: Path) -> Path:
    """``DIR.cogvx.json`` beside the folder ``DIR``."""
    root = Path(root)
    return root.with_name(root.name + SIDECAR_SUFFIX)


def read_sidecar(root: Path) -> dict | None:
    """The sidecar of an MM folder, or None when there is none (or it is not ours)."""
    path = sidecar_path(root)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}",
                              fix=f"delete {path}; cogvx then checks the tensors instead")
    return data if isinstance(data, dict) and data.get("kind") == SIDECAR_KIND else None


def _stage_layers(root: Path, layout: Layout, trust: bool) -> list[int]:
    """Layers per stage, counted from the key names of each stage's rank-0 file."""
    from cogvideo_cli.checkpoint.mapping import split_layer
    from cogvideo_cli.checkpoint.megatron import model_dict
    from cogvideo_cli.checkpoint.safeload import load

    sizes = []
    for pp_rank in range(layout.pp):
        path = root / layout.iteration_dir / layout.rank_dir(0, pp_rank) / RANK_FILE
        model = model_dict(load(path, trust=trust), path)
        indices = {split_layer(k)[0] for k in model} - {None}
        sizes.append(max(indices) + 1 if indices else 0)
    return sizes


def read_layout(path: Path, *, trust: bool = False) -> Layout:
    """Layout of an MM checkpoint: from the folders, the sidecar, and key names if needed.

    Only the PP stage sizes need a look inside the files (key names, no tensor bytes), and
    only when there is more than one stage and no sidecar.
    """
    root = Path(path)
    iteration, folder = read_iteration(root)
    tp, pp = scan_ranks(folder)
    layout = Layout(tp=tp, iteration=iteration)
    sidecar = read_sidecar(root)
    if sidecar:
        layout.variant = sidecar.get("variant")
        recorded = list(sidecar.get("pp_layers") or [])
        if sidecar.get("tp") == tp and max(1, len(recorded)) == pp:
            layout.pp_layers = recorded
            return layout
    if pp > 1:
        layout.pp_layers = [0] * pp  # rank_dir needs the stage count
        layout.pp_layers = _stage_layers(root, layout, trust)
    return layout
