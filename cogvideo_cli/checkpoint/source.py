"""What every checkpoint reader offers: MM names, whole shapes and dtypes, one tensor at a time.

A reader maps its format onto whole-model MindSpeed-MM names before any tensor is read, so
the converters, the variant detection and the checks work the same for every format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class TensorInfo:
    """Shape and dtype of one whole tensor, known without reading it."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize


@dataclass
class Source:
    """A checkpoint opened for reading. Subclasses fill ``tensors`` and implement ``get``."""

    path: Path
    format: str = ""
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # format names not carried over
    meta: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """The whole tensor ``name`` (MM naming)."""
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}

    def dtypes(self) -> list[str]:
        """Distinct dtypes, most bytes first."""
        totals: dict[str, int] = {}
        for info in self.tensors.values():
            key = str(info.dtype).removeprefix("torch.")
            totals[key] = totals.get(key, 0) + info.nbytes
        return sorted(totals, key=totals.get, reverse=True)

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    def close(self) -> None:
        """Release open files (mapped storages, safetensors handles)."""


def info_of(tensor: torch.Tensor) -> TensorInfo:
    """The :class:`TensorInfo` of a loaded (possibly memory-mapped) tensor."""
    return TensorInfo(tuple(tensor.shape), tensor.dtype)
