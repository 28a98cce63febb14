"""Load ``.pt`` files without running code from them: ``weights_only`` plus an allowlist.

Megatron and MindSpeed training saves pickle an ``argparse.Namespace`` (``args``), Megatron
enums and numpy RNG state. Those names are allowed here, the Megatron / MindSpeed ones as
inert stand-ins so that neither package is needed. Anything else is refused with the name
of the object, unless the caller trusts the file (``--trust-checkpoint``).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import CheckpointError, UsageError

log = logging.getLogger(__name__)

TRUST_FIX = ("if you trust where this file came from, rerun with --trust-checkpoint "
             "(it lets the file run code while loading)")


class Stub:
    """Inert stand-in for a class of Megatron, MindSpeed or MindSpeed-MM."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.args!r}>"


def _stub(qualified: str) -> type:
    # one subclass per name, so a loaded object still says what it stood for
    return type(qualified.rsplit(".", 1)[-1], (Stub,), {"__qualname__": qualified})


# Objects that MindSpeed-MM / Megatron / LayerZero saves are known to pickle (reference
# checkpoints-layerzero-megatron.md, section 5).
_STUB_NAMES = (
    "megatron.core.enums.ModelType",
    "megatron.core.transformer.enums.AttnBackend",
    "megatron.core.rerun_state_machine.RerunMode",
    "megatron.core.rerun_state_machine.RerunState",
    "megatron.core.rerun_state_machine.RerunDiagnostic",
    "mindspeed.core.distributed.layerzero.state.fqn.ShardFlattenInfo",
    "mindspeed_mm.configs.config.MMConfig",
    "mindspeed_mm.configs.config.ConfigReader",
    "torch_npu.npu._format.Format",
)


def _rebuild_npu_tensor(storage, storage_offset, size, stride, requires_grad=False,
                        backward_hooks=None, npu_storage_info=None):
    """torch_npu's tensor rebuild, on the CPU: the layout info is not needed there."""
    import torch

    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def allowlist() -> list:
    """Globals allowed inside checkpoints, for ``torch.serialization.safe_globals``."""
    import numpy

    entries: list = [argparse.Namespace, set]
    entries += [(_stub(name), name) for name in _STUB_NAMES]
    entries.append((_rebuild_npu_tensor, "torch_npu.utils.storage._rebuild_npu_tensor"))
    # numpy RNG state in Megatron's rng_state, written by numpy 1.x or 2.x
    reconstruct = numpy._core.multiarray._reconstruct if hasattr(numpy, "_core") \
        else numpy.core.multiarray._reconstruct
    entries += [(reconstruct, "numpy.core.multiarray._reconstruct"),
                (reconstruct, "numpy._core.multiarray._reconstruct"),
                numpy.ndarray, numpy.dtype, type(numpy.dtype(numpy.uint32))]
    return entries


class _LenientUnpickler(pickle.Unpickler):
    """For trusted files: classes whose package is missing become stubs, not errors."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _stub(f"{module}.{name}")


class _LenientPickle:
    """A ``pickle_module`` for ``torch.load`` that uses :class:`_LenientUnpickler`."""

    Unpickler = _LenientUnpickler
    load = staticmethod(pickle.load)
    __name__ = "cogvx_lenient_pickle"


def check_file(path: Path, what: str = "checkpoint file") -> Path:
    """A readable file, or a clear error for a missing path or a folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"the {what} {path} does not exist",
                              fix="check the path (tab-completion helps)")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, but a {what} is needed here", value=str(path),
                         fix="pass the .pt file inside it")
    return path


def _explain(path: Path, exc: Exception) -> CheckpointError:
    text = str(exc)
    if path.stat().st_size == 0:
        return CheckpointError(f"{path} is empty (0 bytes)",
                               fix="copy or download it again; compare its size with the original")
    unsafe = re.search(r"(?:Unsupported global|GLOBAL)\W+(?:GLOBAL\s+)?([\w.]+)", text)
    if isinstance(exc, pickle.UnpicklingError) and unsafe:
        return CheckpointError(
            f"{path} holds a pickled object cogvx does not load by default: {unsafe.group(1)}",
            fix=TRUST_FIX)
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "zip archive" in text \
            or "central directory" in text or "unexpected EOF" in text.lower():
        first = (text.splitlines() or [type(exc).__name__])[0][:120]
        return CheckpointError(f"{path} is truncated or is not a torch checkpoint ({first})",
                               fix="copy or download it again; compare its size with the original")
    return CheckpointError(f"cannot load {path}: {type(exc).__name__}: {text[:200]}",
                           fix="the file may be damaged: copy it again")


def load(path: Path, *, trust: bool = False, mmap: bool = True) -> Any:
    """``torch.load`` a file on the CPU, memory-mapped where the format allows.

    With ``mmap`` the tensors' bytes stay in the file (page cache), so loading a large
    checkpoint costs almost no memory until a tensor is used.
    """
    import torch

    path = check_file(path)
    use_mmap = mmap and zipfile.is_zipfile(path)  # legacy (non-zip) files cannot be mapped
    try:
        if trust:
            # the user's explicit --trust-checkpoint: full pickle, which can run code
            return torch.load(path, map_location="cpu", weights_only=False, mmap=use_mmap,
                              pickle_module=_LenientPickle)
        with torch.serialization.safe_globals(allowlist()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except (CheckpointError, UsageError):
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # torch raises many types for bad files; explain them once
        raise _explain(path, exc) from exc
