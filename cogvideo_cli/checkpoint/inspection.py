"""Say what a checkpoint is: format, variant, layout, dtype, size and a key summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cogvideo_cli.checkpoint import detect
from cogvideo_cli.checkpoint.formats import sniff
from cogvideo_cli.checkpoint.layout import read_sidecar
from cogvideo_cli.checkpoint.source import Source
from cogvideo_cli.core.errors import CheckpointError, CogvxError


def locate(path: Path) -> tuple[str, Path]:
    """(``mm``, ``diffusers``, ``sat`` or ``layerzero``, the path to open) of a checkpoint.

    The path to open is ``path``, or what it leads to: a download root's ``transformer/``
    folder, a rank file's checkpoint folder (see :func:`formats.sniff`).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist", fix="check the path")
    found = sniff(path)
    if found is not None:
        return found
    if path.is_file():
        return "sat", path  # a single .pt of another name: SAT, or refused with a fix
    raise CheckpointError(f"{path} is not a checkpoint cogvx knows (SAT, diffusers or "
                          "MindSpeed-MM)", value=str(path),
                          fix="pass a SAT .pt or transformer/ folder, a diffusers transformer/ "
                              "folder or a MindSpeed-MM checkpoint folder")


def detect_format(path: Path) -> str:
    """``mm``, ``diffusers``, ``sat`` or ``layerzero`` from what is on disk (no tensor read)."""
    return locate(path)[0]


def _stored(source: Source) -> int:
    """Tensors in all rank files of an MM checkpoint (replicated ones counted per rank)."""
    return sum(1 for model in source.models.values() for key, value in model.items()
               if hasattr(value, "shape") and not key.endswith("._extra_state"))


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _groups(source: Source) -> dict[str, int]:
    """Tensor counts by top-level module (layers counted together)."""
    counts = Counter(name.split(".")[0] for name in source.tensors)
    return dict(sorted(counts.items()))


def inspect_checkpoint(path: Path, *, trust: bool = False) -> dict:
    """A JSON-ready description of a checkpoint of any supported format."""
    from cogvideo_cli.checkpoint.convert import open_source

    path = Path(path)
    fmt, where = locate(path)
    source = open_source(fmt, where, trust=trust)
    try:
        report = {"path": str(path), "format": fmt, "file": str(source.path),
                  "bytes_on_disk": _disk_bytes(where), "tensor_bytes": source.nbytes,
                  "tensors": len(source.tensors), "dtypes": source.dtypes(),
                  "dropped": len(source.dropped), "groups": _groups(source)}
        try:
            variant = detect.detect_variant(source.shapes())
            report["variant"] = variant.name
            report["dims"] = detect.dims(variant)
            detect.check_complete(source.shapes(), variant)
            report["complete"] = True
        except CogvxError as exc:
            report.setdefault("variant", None)
            report["complete"] = False
            report["problem"] = exc.message
        if fmt == "mm":
            layout = source.layout
            report.update(tp=layout.tp, pp_layers=layout.pp_layers,
                          iteration=layout.iteration, rank_files=len(source.models),
                          stored_tensors=_stored(source),
                          sidecar=read_sidecar(where) is not None,
                          unknown=source.unknown[:10])
        return report
    finally:
        source.close()
