"""Say what a checkpoint is: format, variant, layout, dtype, size and a key summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cogvideo_cli.checkpoint import detect
from cogvideo_cli.checkpoint.layout import MISSPELLED_TRACKERS, TRACKER, read_sidecar
from cogvideo_cli.checkpoint.source import Source
from cogvideo_cli.core.errors import CheckpointError, CogvxError


def detect_format(path: Path) -> str:
    """``mm``, ``diffusers`` or ``sat`` from what is on disk (no tensor is read)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist", fix="check the path")
    if path.is_file():
        return "sat"  # a single .pt: SAT, or one MM rank file (refused with a fix)
    names = {p.name for p in path.iterdir()}
    if TRACKER in names or names & set(MISSPELLED_TRACKERS) or "release" in names \
            or any(n.startswith("iter_") for n in names):
        return "mm"
    if "latest" in names or "mp_rank_00_model_states.pt" in names:
        return "sat"
    if any(n.endswith(".safetensors") for n in names) or "model_index.json" in names \
            or "transformer" in names:
        return "diffusers"
    if any(n.startswith("transformer_") for n in names):
        return "sat"
    raise CheckpointError(f"{path} is not a checkpoint cogvx knows (SAT, diffusers or "
                          "MindSpeed-MM)", value=str(path),
                          fix="pass a SAT .pt or transformer/ folder, a diffusers transformer/ "
                              "folder or a MindSpeed-MM checkpoint folder")


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
    fmt = detect_format(path)
    source = open_source(fmt, path, trust=trust)
    try:
        report = {"path": str(path), "format": fmt, "file": str(source.path),
                  "bytes_on_disk": _disk_bytes(path), "tensor_bytes": source.nbytes,
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
                          iteration=layout.iteration, sidecar=read_sidecar(path) is not None,
                          unknown=source.unknown[:10])
        return report
    finally:
        source.close()
