"""LayerZero saves (MindSpeed ``mga_checkpoint``): rebuild whole parameters from rank slices.

A save is ``SAVE/iter_%07d/model_<global rank>.pt``, one file per rank and no tracker. Each
file holds ``model`` (parameter name -> this rank's 1-D fp32 slice, empty when it holds
none), ``shard_state_dict`` (clean name -> ``ShardFlattenInfo``: in_shard, numel, inclusive
start / end in the flattened parameter, whole shape) and ``parallel_state``. Within a
pipeline stage, concatenating the slices in global-rank order and reshaping gives the
parameter, e.g. a [4, 8] weight over two ranks::

    model_0.pt: in_shard, numel 22, start 0, end 21   -> flat[0:22]
    model_1.pt: in_shard, numel 10, start 22, end 31  -> flat[22:32]   => cat, view(4, 8)

``model`` key names depend on the MindSpeed-MM version that trained: raw wrapper names
(2.0 / 2.1: ``_zero3_wrapped_module.predictor.videodit_blocks.0._zero3_wrapped_module.
norm1.weight``), predictor-relative names (26.x: ``videodit_blocks.0._zero3_wrapped_module.
norm1.weight``), or nothing at all (2.3.0 saves an empty ``model``). Files are read through
the weights-only allowlist, which stands in for MindSpeed's and torch_npu's classes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.checkpoint import sharding
from cogvideo_cli.checkpoint.mapping import spec_of, split_layer
from cogvideo_cli.checkpoint.safeload import load
from cogvideo_cli.checkpoint.source import Source, TensorInfo
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError, UsageError

log = logging.getLogger(__name__)

_RANK_FILE = re.compile(r"^model_(\d+)\.pt$")
_ITER_DIR = re.compile(r"^iter_(\d+)$")
_WRAPPERS = ("_zero3_wrapped_module.", "_checkpoint_wrapped_module.")
PREDICTOR = "predictor."
_OTHER_MODULES = ("ae.", "text_encoder.", "diffusion.")
EMPTY_SAVE_FIX = (
    "the weights are not in this save and cannot be recovered from it. Fix MindSpeed-MM "
    "first: in mindspeed_mm/models/sora_model.py make SoRAModel.state_dict fill the "
    "destination it is given (destination.update(self.predictor.state_dict()), as "
    "MindSpeed-MM 26.x does), or train without LayerZero; then run again from your last "
    "usable checkpoint and convert the new save")


# --- finding the files -------------------------------------------------------------------

def find_iteration(source: Path, iteration: int | None = None) -> tuple[int, Path, list[int]]:
    """(iteration, its folder, every iteration present) of a save folder or iter_* folder."""
    source = Path(source)
    # as in the other convert commands: a missing path is a failure (1), an existing path
    # of the wrong kind a usage error (2)
    if not source.exists():
        raise CheckpointError(f"the LayerZero save {source} does not exist",
                              fix="pass the run's save folder (it holds iter_* folders)")
    if not source.is_dir():
        raise UsageError(f"the LayerZero save {source} is a file, not a folder",
                         value=str(source),
                         fix="pass the run's save folder (it holds iter_* folders)")
    match = _ITER_DIR.match(source.name)
    if match and any(_RANK_FILE.match(p.name) for p in source.iterdir()):
        found = int(match.group(1))
        if iteration is not None and iteration != found:
            raise UsageError(f"--iteration {iteration} contradicts --source {source}",
                             value=iteration, fix="drop --iteration, or pass the save folder")
        return found, source, [found]
    folders = {int(m.group(1)): p for p in source.iterdir()
               if p.is_dir() and (m := _ITER_DIR.match(p.name))}
    if not folders:
        hint = " (it holds mp_rank_* folders: a Megatron save)" \
            if any(source.glob("mp_rank_*")) or any(source.glob("*/mp_rank_*")) else ""
        raise UsageError(f"{source} holds no iter_* folders of a LayerZero save{hint}",
                         value=str(source), fix="pass the LayerZero run's save folder; "
                                                "convert Megatron saves with cogvx convert "
                                                "resplit")
    if iteration is None:
        iteration = max(folders)
    elif iteration not in folders:
        raise UsageError(f"{source} has no iteration {iteration}", value=iteration,
                         fix=f"pick one of {', '.join(map(str, sorted(folders)))}")
    return iteration, folders[iteration], sorted(folders)


def rank_files(folder: Path) -> list[Path]:
    """``model_0.pt`` .. ``model_<N-1>.pt``, required to be contiguous."""
    ranks: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _RANK_FILE.match(path.name)
        if not (match and path.is_file()):
            continue
        rank = int(match.group(1))
        if rank in ranks:
            raise CheckpointError(f"{path} and {ranks[rank]} both claim rank {rank}",
                                  value=path.name, fix="remove the stray copy")
        ranks[rank] = path
    if not ranks:
        raise CheckpointError(f"{folder} holds no model_<rank>.pt files",
                              fix="pass a LayerZero save (every rank writes model_<rank>.pt)")
    missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
    if missing:
        raise CheckpointError(
            f"{folder} has rank files up to model_{max(ranks)}.pt but no "
            f"model_{missing[0]}.pt: the ranks are not contiguous", value=f"model_{missing[0]}.pt",
            fix="copy the missing rank files; every rank of the run writes one")
    return [ranks[r] for r in range(len(ranks))]


# --- one rank file -----------------------------------------------------------------------

@dataclass
class ShardInfo:
    """The fields of MindSpeed's ``ShardFlattenInfo`` that rebuilding needs."""

    in_shard: bool
    numel: int | None
    start: int | None
    end: int | None
    shape: tuple[int, ...]

    @property
    def total(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def shard_info(value: Any, path: Path, fqn: str) -> ShardInfo:
    """Read a ``ShardFlattenInfo`` (stand-in object or dict); name file and parameter."""
    def get(name: str) -> Any:
        return value.get(name) if isinstance(value, dict) else getattr(value, name, None)

    shape = get("shape")
    if shape is None or get("in_shard") is None:
        raise CheckpointError(f"{path.name}: the shard info of {fqn} has no shape or "
                              "in_shard field", value=fqn,
                              fix="the file is not a MindSpeed LayerZero save, or is damaged")
    in_shard = bool(get("in_shard"))
    start, end, numel = get("intra_param_start_idx"), get("intra_param_end_idx"), get("numel")
    if in_shard and (start is None or end is None):
        raise CheckpointError(f"{path.name}: {fqn} is in this rank's shard but has no start "
                              "or end index", value=fqn, fix="the file is damaged")
    return ShardInfo(in_shard, None if numel is None else int(numel),
                     None if start is None else int(start), None if end is None else int(end),
                     tuple(int(s) for s in shape))


@dataclass
class RankFile:
    """What one rank file contributes: its slices, shard infos and parallel state."""

    path: Path
    rank: int
    model: dict
    shards: dict
    parallel: dict = field(default_factory=dict)

    @property
    def pp_rank(self) -> int:
        return int(self.parallel.get("pp_rank", 0))


def read_rank(path: Path, rank: int, iteration: int, ema: bool, trust: bool) -> RankFile:
    """Load one rank file (memory-mapped), keeping only what rebuilding needs."""
    ckpt = load(path, trust=trust)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("shard_state_dict"), dict):
        raise CheckpointError(f"{path} is not a LayerZero rank file (no shard_state_dict)",
                              fix="pass a save written with --layerzero")
    key = "ema_model" if ema else "model"
    if ema and key not in ckpt:
        raise CheckpointError(
            f"{path} holds no EMA weights (ema_model): LayerZero saves them only with "
            "optimizer saving on and --optimizer-selection fused_ema_adamw", value=path.name,
            fix="convert without --ema")
    saved = ckpt.get("iteration")
    if saved is not None and int(saved) != iteration:
        raise CheckpointError(
            f"{path} is from iteration {saved}, but it lies in the folder of iteration "
            f"{iteration}: the folder mixes saves", value=saved,
            fix="keep only the rank files of one save in an iter_* folder")
    parallel = ckpt.get("parallel_state") or {}
    if int(parallel.get("global_rank", rank)) != rank:
        raise CheckpointError(f"{path} says it is global rank {parallel['global_rank']}",
                              value=path.name, fix="the rank files were renamed; restore "
                                                   "their names")
    model = ckpt.get(key)
    return RankFile(path, rank, model if isinstance(model, dict) else {},
                    ckpt["shard_state_dict"], parallel)


def clean(name: str) -> str:
    """A raw ``model`` key without LayerZero's and torch's wrapper names."""
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


# --- checks over all files ---------------------------------------------------------------

def _check_empty(files: list[RankFile], ema: bool) -> None:
    """The MindSpeed-MM 2.3.0 save: ``model`` empty while ``shard_state_dict`` is full."""
    empty = [f for f in files if not f.model and f.shards]
    if not empty:
        return
    key = "ema_model" if ema else "model"
    if len(empty) == len(files):
        folder = files[0].path.parent
        raise CheckpointError(
            f"the LayerZero save {folder} was written by MindSpeed-MM 2.3.0: '{key}' is empty "
            f"in all {len(files)} rank files while shard_state_dict lists "
            f"{len(files[0].shards)} parameters (2.3.0's SoRAModel.state_dict drops what "
            "LayerZero asks it to save); nothing was written", value=str(folder),
            fix=EMPTY_SAVE_FIX)
    raise CheckpointError(f"{empty[0].path.name}: '{key}' is empty while other rank files "
                          "hold weights", value=empty[0].path.name,
                          fix="the folder mixes saves; keep the files of one save")


def _check_parallel(files: list[RankFile]) -> dict[int, list[RankFile]]:
    """Stages by pp_rank (global-rank order inside); TP 1 only; degrees agree."""
    first = files[0].parallel
    for name in ("tp_degree", "pp_degree"):
        for rf in files[1:]:
            if rf.parallel.get(name) != first.get(name):
                raise CheckpointError(
                    f"{rf.path.name} says {name} {rf.parallel.get(name)}, "
                    f"{files[0].path.name} says {first.get(name)}", value=rf.path.name,
                    fix="the folder mixes saves of different runs; keep one run's files")
    if int(first.get("tp_degree", 1)) > 1:
        raise NotSupportedError(
            f"this LayerZero save uses tensor parallelism (TP {first['tp_degree']}); cogvx "
            "rebuilds TP 1 LayerZero saves (MindSpeed-MM supports LayerZero for CogVideoX "
            "without TP only)", value=first["tp_degree"])
    stages: dict[int, list[RankFile]] = {}
    for rf in files:
        stages.setdefault(rf.pp_rank, []).append(rf)
    pp = int(first.get("pp_degree", 1))
    if sorted(stages) != list(range(pp)):
        raise CheckpointError(f"the rank files cover pipeline stages {sorted(stages)}, but "
                              f"the save has {pp}", value=sorted(stages),
                              fix="copy the rank files of every stage")
    return {p: sorted(stages[p], key=lambda f: f.rank) for p in range(pp)}


def _same_keys(files: list[RankFile], what: str) -> None:
    """Every file of a stage has the same ``model`` / ``shard_state_dict`` key set."""
    first = files[0]
    want = set(getattr(first, what))
    for rf in files[1:]:
        have = set(getattr(rf, what))
        if have != want:
            extra, lack = sorted(have - want), sorted(want - have)
            detail = (f"has {extra[0]}, which {first.path.name} lacks" if extra else
                      f"lacks {lack[0]}, which {first.path.name} has")
            raise CheckpointError(
                f"{rf.path.name}: its {'model' if what == 'model' else what} {detail}; the "
                "rank files of one stage must list the same parameters",
                value=(extra or lack)[0], fix="the folder mixes saves; keep one save's files")


def _check_tiling(files: list[RankFile], key: str, fqn: str) -> ShardInfo:
    """The slices of one parameter tile it, in rank order, with no gap or overlap."""
    expected, info = 0, None
    for rf in files:
        info = shard_info(rf.shards[fqn], rf.path, fqn)
        held = rf.model[key].numel() if hasattr(rf.model[key], "numel") else -1
        if not info.in_shard:
            if held != 0:
                raise CheckpointError(f"{rf.path.name}: {fqn} holds {held} values, but its "
                                      "shard info says this rank holds none", value=fqn,
                                      fix="the file is damaged")
            continue
        count = info.end - info.start + 1
        if held != count or (info.numel is not None and info.numel != count):
            raise CheckpointError(
                f"{rf.path.name}: {fqn} holds {held} values, but its shard info says "
                f"{info.numel} (indices {info.start}..{info.end})", value=fqn,
                fix="the file is damaged or from another save")
        if info.start > expected:
            raise CheckpointError(
                f"{fqn}: values {expected}..{info.start - 1} are in no rank file "
                f"({rf.path.name} starts at {info.start}): a gap", value=fqn,
                fix="a rank file is missing or from another save")
        if info.start < expected:
            raise CheckpointError(
                f"{fqn}: {rf.path.name} starts at {info.start}, but earlier ranks already "
                f"hold values up to {expected - 1}: an overlap", value=fqn,
                fix="the folder mixes saves; keep one save's files")
        expected = info.end + 1
    if expected != info.total:
        raise CheckpointError(
            f"{fqn}: the rank files hold values 0..{expected - 1} of {info.total} "
            f"(shape {list(info.shape)}); {files[-1].path.name} is the last", value=fqn,
            fix="a rank file is missing or truncated")
    return info


# --- naming and indexing -----------------------------------------------------------------

@dataclass
class Stage:
    """One pipeline stage: sharded parameters and whole entries, by stage-local MM name."""

    files: list[RankFile]
    sharded: dict[str, tuple[str, ShardInfo]] = field(default_factory=dict)
    whole: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    raw: bool = False  # raw wrapper names (MindSpeed-MM 2.0 / 2.1)

    @property
    def layers(self) -> int:
        indices = {split_layer(n)[0] for n in self.sharded} - {None}
        return max(indices) + 1 if indices else 0


def _check_whole(files: list[RankFile], key: str, first: Any) -> None:
    """An unsharded entry (a buffer) must have the same shape on every rank."""
    for rf in files[1:]:
        other = rf.model[key]
        if hasattr(other, "shape") and tuple(other.shape) != tuple(first.shape):
            what = ("a 1-D slice of a parameter shard_state_dict does not list"
                    if first.dim() == 1 else "an entry whose shape differs across ranks")
            raise CheckpointError(
                f"{rf.path.name}: {key} has shape {list(other.shape)}, "
                f"{files[0].path.name} has {list(first.shape)}: {what}", value=key,
                fix="cogvx cannot rebuild it; report the save to cogvx")


def _whole_entry(stage: Stage, key: str, name: str, value: Any) -> None:
    if value is None or not hasattr(value, "shape"):
        return  # Megatron's _extra_state entries
    if stage.raw and not name.startswith(PREDICTOR):
        if not name.startswith(_OTHER_MODULES):
            stage.dropped.append(name)
        return  # buffers of the VAE, text encoder and diffusion, never the predictor's
    local = name.removeprefix(PREDICTOR)
    _check_whole(stage.files, key, value)
    if spec_of(local) is None:
        stage.dropped.append(local)  # a buffer MindSpeed-MM recomputes
        return
    stage.whole[local] = value


def index_stage(files: list[RankFile]) -> Stage:
    """Resolve every ``model`` key of a stage and check every parameter's slices."""
    first = files[0]
    stage = Stage(files, raw=any(clean(k).startswith(PREDICTOR) for k in first.model))
    covered = set()
    for key, value in first.model.items():
        name = clean(key)
        fqn = name if name in first.shards else PREDICTOR + name
        if fqn not in first.shards:
            _whole_entry(stage, key, name, value)
            continue
        covered.add(fqn)
        if not fqn.startswith(PREDICTOR):
            stage.dropped.append(fqn)
            continue
        stage.sharded[fqn[len(PREDICTOR):]] = (key, _check_tiling(files, key, fqn))
    lost = sorted(f for f in first.shards if f.startswith(PREDICTOR) and f not in covered)
    if lost:
        raise CheckpointError(
            f"{first.path.name}: shard_state_dict lists {lost[0]}, but 'model' holds no entry "
            f"for it ({len(lost)} parameters like this)", value=lost[0],
            fix="the save is incomplete or of an unknown layout; report it to cogvx")
    return stage


class LayerZeroSource(Source):
    """A LayerZero save, read as whole MM-named tensors (fp32, as LayerZero keeps them)."""

    def __init__(self, path: Path, *, iteration: int | None = None, ema: bool = False,
                 trust: bool = False) -> None:
        found, folder, present = find_iteration(path, iteration)
        super().__init__(path=Path(path), format="layerzero")
        files = [read_rank(p, r, found, ema, trust) for r, p in enumerate(rank_files(folder))]
        _check_empty(files, ema)
        grouped = _check_parallel(files)
        for members in grouped.values():
            _same_keys(members, "shards")
            _same_keys(members, "model")
        self.stages = [index_stage(grouped[p]) for p in range(len(grouped))]
        self._parts: dict[str, tuple[Stage, str, tuple[int, ...]]] = {}
        self._whole: dict[str, Any] = {}
        self._build(len(files))
        self.meta.update(iteration=found, ema=ema, ranks=len(files), folder=str(folder))
        self.meta["notes"] = self._notes(found, present, iteration is None)

    def _build(self, ranks: int) -> None:
        pp_layers = [s.layers for s in self.stages] if len(self.stages) > 1 else []
        for number, stage in enumerate(self.stages):
            for local, (key, info) in stage.sharded.items():
                name = self._claim(sharding.globalize(local, number, pp_layers), local)
                dtype = next(rf.model[key].dtype for rf in stage.files
                             if rf.model[key].numel())
                self._parts[name] = (stage, key, info.shape)
                self.tensors[name] = TensorInfo(info.shape, dtype)
            for local, value in stage.whole.items():
                name = self._claim(sharding.globalize(local, number, pp_layers), local)
                self._whole[name] = value
                self.tensors[name] = TensorInfo(tuple(value.shape), value.dtype)
            self.dropped += stage.dropped

    def _claim(self, name: str, local: str) -> str:
        if name in self.tensors:
            raise CheckpointError(f"{name} is in two pipeline stages (as {local})",
                                  value=name, fix="the save's stages overlap; report it")
        return name

    def _notes(self, found: int, present: list[int], newest: bool) -> list[str]:
        naming = "raw wrapper names (MindSpeed-MM 2.0 / 2.1)" if self.stages[0].raw else \
            "predictor-relative names (MindSpeed-MM 26.x)"
        notes = [f"rebuilt iteration {found} from {self.meta['ranks']} rank files in "
                 f"{len(self.stages)} pipeline stage(s); {naming}"
                 + ("; EMA weights" if self.meta["ema"] else "")]
        if newest and len(present) > 1:
            notes.append(f"took the newest iteration of {', '.join(map(str, present))}; "
                         "pass --iteration N for another")
        if self.dropped:
            notes.append(f"left out {len(self.dropped)} entries that are not predictor "
                         f"weights, e.g. {', '.join(sorted(self.dropped)[:3])}")
        return notes

    def get(self, name: str):
        import torch

        if name in self._whole:
            return self._whole[name]
        stage, key, shape = self._parts[name]
        pieces = [rf.model[key].reshape(-1) for rf in stage.files if rf.model[key].numel()]
        flat = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return flat.reshape(shape)

    def close(self) -> None:
        self._parts.clear()
        self._whole.clear()
        self.stages = []
