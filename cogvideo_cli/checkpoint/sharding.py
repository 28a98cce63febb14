"""Split and merge tensors over tensor-parallel ranks and pipeline stages, once per kind.

Tensor parallel (TP) kinds are those of :class:`~cogvideo_cli.checkpoint.mapping.TPKind`.
Pipeline parallel (PP) placement renames layer ``g`` of the whole model to layer
``g - start`` of the stage that holds it. Splits return views; callers that save a shard
must make it own its bytes (:func:`owned`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogvideo_cli.checkpoint.mapping import Stage, TPKind, layer_name, spec_of, split_layer
from cogvideo_cli.core.errors import CheckpointError

if TYPE_CHECKING:
    import torch


def _check_divisible(name: str, size: int, tp: int, dim: int) -> int:
    if size % tp:
        raise CheckpointError(
            f"{name}: dimension {dim} has {size} rows, which {tp} tensor-parallel ranks "
            f"cannot share evenly", value=size,
            fix="choose a --tp that divides the head count, hidden size and MLP width")
    return size // tp


def shard_shape(shape: tuple[int, ...], kind: TPKind, tp: int,
                name: str = "tensor") -> tuple[int, ...]:
    """The shape one rank holds of a tensor of ``shape``."""
    if kind is TPKind.REPLICATED or tp == 1:
        return tuple(shape)
    dim = 1 if kind is TPKind.ROW else 0
    if kind is TPKind.QKV:
        _check_divisible(name, shape[0], 3 * tp, 0)
    out = list(shape)
    out[dim] = _check_divisible(name, shape[dim], tp, dim)
    return tuple(out)


def take(tensor: torch.Tensor, kind: TPKind, tp: int, rank: int,
         name: str = "tensor") -> torch.Tensor:
    """Rank ``rank``'s part of a whole tensor (a view where the layout allows one).

    Fused QKV, e.g. hidden 6, tp 2 (Q, K, V rows of 6 each)::

        weight [18, 6] = [Q0 Q1; K0 K1; V0 V1]   (each block [3, 6])
        rank 0 gets [Q0; K0; V0] -> [9, 6], rank 1 gets [Q1; K1; V1]
    """
    if kind is TPKind.REPLICATED or tp == 1:
        return tensor
    if kind is TPKind.QKV:
        part = _check_divisible(name, tensor.shape[0], 3 * tp, 0)
        blocks = tensor.reshape(3, tp, part, *tensor.shape[1:])
        return blocks[:, rank].reshape(3 * part, *tensor.shape[1:])
    dim = 1 if kind is TPKind.ROW else 0
    size = _check_divisible(name, tensor.shape[dim], tp, dim)
    return tensor.narrow(dim, rank * size, size)


def merge(parts: list[torch.Tensor], kind: TPKind) -> torch.Tensor:
    """The whole tensor from every rank's part, in rank order (inverse of :func:`take`)."""
    import torch

    if kind is TPKind.REPLICATED or len(parts) == 1:
        return parts[0]
    if kind is TPKind.QKV:
        rest = parts[0].shape[1:]
        stacked = torch.stack([p.reshape(3, -1, *rest) for p in parts], dim=1)
        return stacked.reshape(-1, *rest)
    return torch.cat(parts, dim=1 if kind is TPKind.ROW else 0)


def _exact(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor on a storage of exactly its bytes, sharing memory (no copy)."""
    import torch

    size = tensor.numel() * tensor.element_size()
    storage = tensor.untyped_storage()
    if tensor.storage_offset() == 0 and storage.nbytes() == size:
        return tensor
    start = tensor.storage_offset() * tensor.element_size()
    piece = storage[start:start + size]  # a storage slice shares the memory
    return torch.empty(0, dtype=tensor.dtype).set_(piece).view(tensor.shape)


def owned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on a storage of exactly its bytes: shared if contiguous, else copied.

    ``torch.save`` writes a view's whole storage; a shard of a larger tensor would carry
    its siblings' bytes.
    """
    if tensor.is_contiguous():
        return _exact(tensor)
    return tensor.contiguous()


class Arena:
    """One reusable buffer that the copied tensors of one output file are placed in.

    Reusing touched memory is several times faster than fresh allocations, and keeps the
    resident memory at one output file. Each tensor gets its own storage slice, so
    ``torch.save`` writes only its bytes.
    """

    def __init__(self) -> None:
        self._storage = None
        self._used = 0

    def reset(self, nbytes: int) -> None:
        """Start a new file that needs up to ``nbytes`` of copies."""
        import torch

        if self._storage is None or self._storage.nbytes() < nbytes:
            self._storage = None  # free the old buffer before taking the new one
            self._storage = torch.empty(nbytes, dtype=torch.uint8).untyped_storage()
        self._used = 0

    def alloc(self, shape: tuple[int, ...], dtype) -> torch.Tensor:
        """An uninitialised tensor in the buffer (a fresh one if the buffer is full)."""
        import torch

        count = 1
        for size in shape:
            count *= size
        nbytes = count * dtype.itemsize
        start = -(-self._used // 64) * 64
        if self._storage is None or start + nbytes > self._storage.nbytes():
            return torch.empty(shape, dtype=dtype)
        self._used = start + nbytes
        piece = self._storage[start:start + nbytes]
        return torch.empty(0, dtype=dtype).set_(piece).view(shape)


def take_owned(tensor: torch.Tensor, kind: TPKind, tp: int, rank: int, *, dtype=None,
               arena: Arena | None = None, name: str = "tensor") -> torch.Tensor:
    """Rank ``rank``'s part, owning exactly its bytes, copied only when it must be.

    Contiguous parts (replicated, column, pipeline) share the source's memory; row and
    fused-QKV parts, and dtype casts, are copied into ``arena``.
    """
    import torch

    if kind is TPKind.QKV and tp > 1:
        part = _check_divisible(name, tensor.shape[0], 3 * tp, 0)
        view = tensor.reshape(3, tp, part, *tensor.shape[1:])[:, rank]
        shape = (3 * part, *tensor.shape[1:])
    else:
        view = take(tensor, kind, tp, rank, name)
        shape = tuple(view.shape)
    if (dtype is None or dtype == view.dtype) and view.is_contiguous():
        return _exact(view).view(shape)
    out = arena.alloc(shape, dtype or view.dtype) if arena else \
        torch.empty(shape, dtype=dtype or view.dtype)
    out.view(view.shape).copy_(view)
    return out


# --- pipeline stages ---------------------------------------------------------------------

def stage_starts(pp_layers: list[int]) -> list[int]:
    """First global layer of each stage."""
    starts, total = [], 0
    for size in pp_layers:
        starts.append(total)
        total += size
    return starts


def place(name: str, pp_layers: list[int]) -> tuple[int, str]:
    """(stage, stage-local name) of a whole-model MM name. ``[]`` means no pipeline."""
    stages = max(1, len(pp_layers))
    spec = spec_of(name)
    if spec is None:
        raise CheckpointError(f"no MindSpeed-MM parameter is called {name!r}",
                              fix="this tensor cannot be placed; report the checkpoint")
    if spec.stage is Stage.FIRST or stages == 1:
        return 0, name
    if spec.stage is Stage.LAST:
        return stages - 1, name
    index, rest = split_layer(name)
    for stage, start in reversed(list(enumerate(stage_starts(pp_layers)))):
        if index >= start:
            if index >= start + pp_layers[stage]:
                break
            return stage, layer_name(index - start, rest)
    raise CheckpointError(f"{name} is beyond the {sum(pp_layers)} layers of --pp-layers",
                          value=pp_layers, fix="make --pp-layers sum to the layer count")


def globalize(local: str, stage: int, pp_layers: list[int]) -> str:
    """Whole-model name of a stage-local MM name (inverse of :func:`place`)."""
    index, rest = split_layer(local)
    if index is None or not pp_layers:
        return local
    return layer_name(index + stage_starts(pp_layers)[stage], rest)
