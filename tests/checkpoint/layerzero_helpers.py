"""Synthetic LayerZero saves, built as the reference's recipe describes (section 6).

Flattening (MindSpeed ``FlatParamHandle``): one flat unit for the root and one per
``videodit_blocks`` layer; before each parameter, zeros pad the total to a multiple of
``aligned`` (8 for bf16) when ``0 < pad < aligned``; the tail is padded to a multiple of
the stage's rank count; rank r keeps ``[r*S, (r+1)*S)``. Pipeline stages have their own
units, stage-local layer names and a contiguous block of global ranks.

NPU pickling: the real class names (``mindspeed...ShardFlattenInfo``,
``torch_npu.utils.storage._rebuild_npu_tensor``, ``torch_npu.npu._format.Format``,
``megatron.core.enums.ModelType``) are pickled through throw-away modules, removed again
after saving, so the reader must load them without MindSpeed, torch_npu or Megatron.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import sys
import types
from pathlib import Path

import torch

ROOT_RAW = "_zero3_wrapped_module."
FQN_MODULE = "mindspeed.core.distributed.layerzero.state.fqn"


@dataclasses.dataclass
class ShardFlattenInfo:
    in_shard: bool
    numel: int | None
    intra_param_start_idx: int | None
    intra_param_end_idx: int | None
    shape: torch.Size
    tensor_model_parallel: bool
    partition_dim: int | tuple
    partition_stride: int | tuple


class Format(enum.IntEnum):
    ND = 2


class ModelType(enum.Enum):
    encoder_or_decoder = 1


def _rebuild_npu_tensor(storage, storage_offset, size, stride, requires_grad,
                        backward_hooks, npu_storage_info):
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


class NpuTensor:
    """Pickles like a torch_npu 7.x tensor: a call to ``_rebuild_npu_tensor``."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.clone()  # torch_npu saves self.cpu(): a fresh storage, offset 0

    def __reduce__(self):
        t = self.tensor
        return (_rebuild_npu_tensor, (t._typed_storage(), 0, tuple(t.size()), t.stride(),
                                      False, collections.OrderedDict(), Format.ND))


_FAKES = {
    FQN_MODULE: {"ShardFlattenInfo": ShardFlattenInfo},
    "torch_npu.utils.storage": {"_rebuild_npu_tensor": _rebuild_npu_tensor},
    "torch_npu.npu._format": {"Format": Format},
    "megatron.core.enums": {"ModelType": ModelType},
}


class fake_modules:
    """Register the throw-away modules while saving; restore ``sys.modules`` after."""

    def __enter__(self):
        self.created = []
        for module, names in _FAKES.items():
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    self.created.append(name)
            for attr, obj in names.items():
                setattr(sys.modules[module], attr, obj)
                obj.__module__, obj.__qualname__ = module, attr
        return self

    def __exit__(self, *exc):
        for name in self.created:
            sys.modules.pop(name, None)


# --- flattening ----------------------------------------------------------------------------

def flat_ranges(sizes: list[int], world: int, aligned: int = 8) -> tuple[list, int]:
    """Inclusive [start, end] of each parameter in the padded flat unit, and S."""
    ranges, total = [], 0
    for numel in sizes:
        pad = aligned - total % aligned
        if 0 < pad < aligned:
            total += pad
        ranges.append((total, total + numel - 1))
        total += numel
    pad = world - total % world
    if 0 < pad < world:
        total += pad
    return ranges, total // world


def slice_infos(shape, span, rank: int, size: int) -> tuple[int, int] | None:
    """(intra start, intra end) of a parameter at ``span`` on ``rank``, or None."""
    start, end = span
    lo, hi = rank * size, (rank + 1) * size - 1
    if end < lo or start > hi:
        return None
    return max(lo, start) - start, min(end, hi) - start


def _tp_flags(name: str, tuple_fallback: bool):
    if ".proj_qkv." in name:
        return True, 0, 1
    if name.endswith("proj_out.weight"):
        return True, 1, 1
    return (False, (-1,), (1,)) if tuple_fallback else (False, -1, 1)


def stage_units(state: dict, layers: list[int], stage: int, pp: int):
    """(raw prefix, [(unit-relative name, tensor)]) of each unit of one stage."""
    start = sum(layers[:stage])
    root, blocks = [], {}
    for name, tensor in state.items():
        if name.startswith("videodit_blocks."):
            _, index, rest = name.split(".", 2)
            local = int(index) - start
            if 0 <= local < layers[stage]:
                blocks.setdefault(local, []).append((rest, tensor))
            continue
        first = not name.startswith(("norm_final", "norm_out", "proj_out_linear",
                                     "adaLN_modulation"))
        if (first and stage == 0) or (not first and stage == pp - 1):
            root.append((name, tensor))
    units = [(ROOT_RAW + "predictor.", "predictor.", root)]
    for local in sorted(blocks):
        units.append((f"{ROOT_RAW}predictor.videodit_blocks.{local}.{ROOT_RAW}",
                      f"predictor.videodit_blocks.{local}.", blocks[local]))
    return units


def _raw_key(raw_prefix: str, rest: str, naming: str) -> str:
    key = raw_prefix + rest
    if naming == "v26":  # predictor-relative: drop the root wrapper and "predictor."
        key = key[len(ROOT_RAW):][len("predictor."):]
    return key


def build_stage_files(state: dict, ema: dict | None, layers: list[int], stage: int,
                      pp: int, world: int, naming: str, tuple_fallback: bool):
    """Per rank of one stage: (model, ema_model, shard_state_dict)."""
    files = [({}, {}, {}) for _ in range(world)]
    for raw_prefix, fqn_prefix, params in stage_units(state, layers, stage, pp):
        ranges, size = flat_ranges([t.numel() for _, t in params], world)
        for (rest, tensor), span in zip(params, ranges):
            fqn = fqn_prefix + rest
            key = _raw_key(raw_prefix, rest, naming)
            for rank, (model, ema_model, shards) in enumerate(files):
                found = slice_infos(tensor.shape, span, rank, size)
                tp, pdim, pstride = _tp_flags(fqn, tuple_fallback)
                if found is None:
                    shards[fqn] = ShardFlattenInfo(False, None, None, None, tensor.shape, tp,
                                                   pdim, pstride)
                    model[key] = torch.empty(0)
                    ema_model[key] = torch.empty(0)
                    continue
                lo, hi = found
                shards[fqn] = ShardFlattenInfo(True, hi - lo + 1, lo, hi, tensor.shape, tp,
                                               pdim, pstride)
                model[key] = tensor.flatten()[lo:hi + 1].float()
                if ema is not None:
                    ema_model[key] = ema[fqn_to_mm(fqn, layers, stage)].flatten()[
                        lo:hi + 1].float().clone()
            if rest.startswith("self_atten.proj_qkv.weight"):
                for model, _, _ in files:
                    model[_raw_key(raw_prefix, "self_atten.proj_qkv._extra_state",
                                   naming)] = None
    return files


def fqn_to_mm(fqn: str, layers: list[int], stage: int) -> str:
    name = fqn[len("predictor."):]
    if name.startswith("videodit_blocks."):
        _, index, rest = name.split(".", 2)
        return f"videodit_blocks.{int(index) + sum(layers[:stage])}.{rest}"
    return name


def write_layerzero(root: Path, state: dict, *, ranks: int, layers: list[int],
                    iteration: int = 20, naming: str = "raw", npu: bool = False,
                    ema: dict | None = None, tuple_fallback: bool = False,
                    extra_buffers: bool = True, edit=None) -> Path:
    """``root/iter_%07d/model_<rank>.pt`` for ``ranks`` ranks over ``len(layers)`` stages.

    ``naming``: ``raw`` (MM 2.0 / 2.1), ``v26`` (predictor-relative) or ``v230`` (the
    empty ``model`` of MM 2.3.0). ``edit(rank, ckpt)`` may change a file before saving.
    """
    pp = len(layers)
    per_stage = ranks // pp
    folder = root / f"iter_{iteration:07d}"
    folder.mkdir(parents=True)
    with fake_modules():
        for stage in range(pp):
            files = build_stage_files(state, ema, layers, stage, pp, per_stage, naming,
                                      tuple_fallback)
            for local_rank, (model, ema_model, shards) in enumerate(files):
                rank = stage * per_stage + local_rank
                if extra_buffers and naming == "raw":
                    model[ROOT_RAW + "ae.encoder.scale"] = torch.ones(3)
                    model[ROOT_RAW + "predictor.rope.freqs_grid"] = torch.arange(6.0)
                if naming == "v230":
                    model, ema_model = {}, {}
                wrap = NpuTensor if npu else (lambda t: t)
                ckpt = {
                    "args": argparse.Namespace(num_layers=sum(layers),
                                               params_dtype=torch.bfloat16,
                                               model_type=ModelType.encoder_or_decoder,
                                               pipeline_model_parallel_size=pp),
                    "checkpoint_version": 3.0, "iteration": iteration,
                    "model": {k: v if v is None else wrap(v) for k, v in model.items()},
                    "shard_state_dict": shards,
                    "parallel_state": {"tp_rank": 0, "pp_rank": stage,
                                       "dp_rank": local_rank, "tp_degree": 1,
                                       "pp_degree": pp, "dp_degree": per_stage,
                                       "global_rank": rank},
                    "num_floating_point_operations_so_far": 0,
                }
                if ema is not None:
                    ckpt["ema_model"] = ema_model
                if edit:
                    edit(rank, ckpt)
                torch.save(ckpt, folder / f"model_{rank}.pt")
    return root
