"""MindSpeed-MM / Megatron checkpoints: read any TP/PP layout as whole tensors, write one.

Reading maps every rank file (no tensor bytes are read until asked), renames stage-local
layers to global ones and merges tensor-parallel parts on demand. Writing builds one rank
file at a time: ``{"model": {name: tensor}}`` under ``release/``, as MindSpeed-MM's
converter writes it, with every tensor owning exactly its bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cogvideo_cli.checkpoint import sharding
from cogvideo_cli.checkpoint.layout import RANK_FILE, Layout, read_layout
from cogvideo_cli.checkpoint.mapping import TPKind, spec_of
from cogvideo_cli.checkpoint.safeload import load
from cogvideo_cli.checkpoint.source import Source, TensorInfo
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError

log = logging.getLogger(__name__)


def model_dict(ckpt: object, path: Path) -> dict:
    """The ``model`` state dict of one rank file; VPP and foreign files are refused."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict",
                              fix="convert the checkpoint again")
    model = ckpt.get("model")
    if isinstance(model, dict) and isinstance(model.get("model"), dict):
        raise CheckpointError(
            f"{path} nests the weights one level too deep ({{'model': {{'model': ...}}}}, the "
            "output of MindSpeed-MM 2.3.0's layerzero_to_mm); Megatron would load nothing",
            fix="convert the LayerZero checkpoint with cogvx instead")
    if isinstance(model, dict):
        return model
    if any(str(k).startswith("model") and str(k)[5:].isdigit() for k in ckpt):
        raise NotSupportedError(f"{path} is a virtual-pipeline (VPP) checkpoint (model0, "
                                "model1, ...); cogvx reads non-VPP checkpoints only",
                                fix="save it again without --num-layers-per-virtual-"
                                    "pipeline-stage")
    raise CheckpointError(f"{path} has no 'model' dict (keys: {sorted(map(str, ckpt))[:6]})",
                          fix="point at a MindSpeed-MM checkpoint folder")


class MMSource(Source):
    """An MM checkpoint folder of any layout, read as whole tensors in MM naming."""

    def __init__(self, path: Path, *, trust: bool = False, layout: Layout | None = None) -> None:
        super().__init__(path=Path(path), format="mm")
        self.layout = layout or read_layout(self.path, trust=trust)
        self.meta["iteration"] = self.layout.iteration
        self.models: dict[tuple[int, int], dict] = {}
        self.extras: dict[str, object] = {}  # top-level keys of rank 0 besides the model
        for pp_rank, tp_rank, rel in self.layout.rank_files():
            file = self.path / rel
            if not file.is_file():
                raise CheckpointError(f"{file} is missing", value=rel,
                                      fix="the checkpoint is incomplete; convert it again")
            ckpt = load(file, trust=trust)
            self.models[(pp_rank, tp_rank)] = model_dict(ckpt, file)
            if (pp_rank, tp_rank) == (0, 0):
                self.extras = {k: v for k, v in ckpt.items() if k != "model"}
        self.unknown: list[str] = []
        self._index()

    def _index(self) -> None:
        """Whole-model names, specs and shapes from every stage's TP-rank-0 file."""
        self._local: dict[str, tuple[int, str]] = {}
        for pp_rank in range(self.layout.pp):
            model = self.models[(pp_rank, 0)]
            for local, value in model.items():
                if local.endswith("._extra_state") or not hasattr(value, "shape"):
                    self.dropped.append(local)  # Megatron's per-layer metadata, not weights
                    continue
                spec = spec_of(local)
                if spec is None:
                    self.unknown.append(local)
                    continue
                name = sharding.globalize(local, pp_rank, self.layout.pp_layers)
                self._local[name] = (pp_rank, local)
                shape = list(value.shape)
                if spec.tp is not TPKind.REPLICATED and self.layout.tp > 1:
                    shape[1 if spec.tp is TPKind.ROW else 0] *= self.layout.tp
                self.tensors[name] = TensorInfo(tuple(shape), value.dtype)

    def part(self, name: str, tp_rank: int):
        """One TP rank's stored part of ``name``."""
        pp_rank, local = self._local[name]
        model = self.models[(pp_rank, tp_rank)]
        if local not in model:
            raise CheckpointError(f"{local} is in TP rank 0 but missing from TP rank "
                                  f"{tp_rank} of stage {pp_rank}", value=local,
                                  fix="the checkpoint is damaged; convert it again")
        return model[local]

    def get(self, name: str):
        kind = spec_of(name).tp
        if kind is TPKind.REPLICATED:
            return self.part(name, 0)
        return sharding.merge([self.part(name, t) for t in range(self.layout.tp)], kind)

    def close(self) -> None:
        self.models.clear()


def stage_names(names: list[str], pp_layers: list[int]) -> list[list[tuple[str, str]]]:
    """(whole name, stage-local name) per stage, in the order given."""
    stages: list[list[tuple[str, str]]] = [[] for _ in range(max(1, len(pp_layers)))]
    for name in names:
        stage, local = sharding.place(name, pp_layers)
        stages[stage].append((name, local))
    return stages


def shard_info(source: Source, name: str, tp: int, dtype) -> TensorInfo:
    """Shape and dtype one rank file will hold of ``name``."""
    info = source.tensors[name]
    shape = sharding.shard_shape(info.shape, spec_of(name).tp, tp, name)
    return TensorInfo(shape, dtype or info.dtype)


def build_rank(source: Source, entries: list[tuple[str, str]], tp: int, rank: int,
               dtype=None, on_tensor: Callable[[int], None] | None = None,
               arena: sharding.Arena | None = None) -> dict:
    """The state dict of one rank file: each tensor cut for ``rank``, owning its bytes."""
    model = {}
    for name, local in entries:
        whole = source.get(name)
        cast = dtype if dtype is not None and whole.is_floating_point() else None
        model[local] = sharding.take_owned(whole, spec_of(name).tp, tp, rank, dtype=cast,
                                           arena=arena, name=name)
        if on_tensor:
            on_tensor(model[local].numel() * model[local].element_size())
    return model


def write_tracker(folder: Path, iteration: str = "release") -> None:
    """The tracker, with no newline (MindSpeed-MM's own reader does not strip it)."""
    (folder / "latest_checkpointed_iteration.txt").write_text(iteration, encoding="utf-8")


def write_mm(source: Source, folder: Path, layout: Layout, dtype=None,
             on_tensor: Callable[[int], None] | None = None,
             on_file: Callable[[Path], None] | None = None) -> list[str]:
    """Write ``source`` into ``folder`` in ``layout``, one rank file in memory at a time."""
    import torch

    stages = stage_names(list(source.tensors), layout.pp_layers)
    sizes = [sum(shard_info(source, n, layout.tp, dtype).nbytes + 64 for n, _ in stage)
             for stage in stages]
    arena = sharding.Arena()
    written = []
    for pp_rank, tp_rank, rel in layout.rank_files():
        arena.reset(sizes[pp_rank])
        model = build_rank(source, stages[pp_rank], layout.tp, tp_rank, dtype, on_tensor,
                           arena)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model}, path)
        del model
        written.append(rel)
        if on_file:
            on_file(path)
    write_tracker(folder, layout.iteration)
    return written


__all__ = [
    "RANK_FILE",
    "MMSource",
    "build_rank",
    "model_dict",
    "shard_info",
    "stage_names",
    "write_mm",
    "write_tracker",
]
