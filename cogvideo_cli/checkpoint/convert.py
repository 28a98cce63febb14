"""Conversions as read -> check -> plan -> write, atomic and one output file at a time.

Public entry points: :func:`sat_to_mm`, :func:`hf_to_mm`, :func:`resplit` (all write the
MindSpeed-MM layout) and :func:`mm_to_hf`. Each checks everything before writing a byte,
builds the output under a temporary name beside the target, renames it when complete, and
returns a JSON-ready report. ``dry_run`` returns the plan instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cogvideo_cli import __version__
from cogvideo_cli.checkpoint import detect
from cogvideo_cli.checkpoint.formats import require_format
from cogvideo_cli.checkpoint.layout import (
    SIDECAR_KIND,
    Layout,
    layout_suffix,
    read_sidecar,
    sidecar_path,
)
from cogvideo_cli.checkpoint.mapping import UNUSED_BY_MM
from cogvideo_cli.checkpoint.source import Source
from cogvideo_cli.core.errors import CheckpointError, UsageError
from cogvideo_cli.core.fsutil import atomic_dir, check_target, free_bytes, write_text_atomic
from cogvideo_cli.core.progress import SILENT, Reporter
from cogvideo_cli.core.variants import (
    Variant,
    balanced_split,
    check_pp_layers,
    check_tensor_parallel,
    require,
)

log = logging.getLogger(__name__)

DTYPES = {"keep": None, "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
          "float16": "float16", "half": "float16", "fp32": "float32", "float32": "float32"}
# torch.save adds a few hundred bytes per tensor and per file (zip headers, pickle)
_FILE_OVERHEAD, _TENSOR_OVERHEAD = 4096, 320


def parse_dtype(name: str | None):
    """``--dtype`` to a torch dtype, or None to keep each tensor's own."""
    import torch

    if name is None:
        return None
    key = name.strip().lower()
    if key not in DTYPES:
        raise UsageError(f"unknown --dtype {name!r}", value=name,
                         fix="use keep, bf16, fp16 or fp32")
    return None if DTYPES[key] is None else getattr(torch, DTYPES[key])


def open_source(fmt: str, path: Path, *, trust: bool = False,
                options: dict | None = None) -> Source:
    """Open a checkpoint of format ``sat``, ``diffusers``, ``mm`` or ``layerzero``.

    ``options`` go to the reader (LayerZero: ``iteration``, ``ema``).
    """
    if fmt == "layerzero":
        from cogvideo_cli.checkpoint.layerzero import LayerZeroSource

        return LayerZeroSource(path, trust=trust, **(options or {}))
    if fmt == "sat":
        from cogvideo_cli.checkpoint.sat import SatSource

        return SatSource(path, trust=trust)
    if fmt == "diffusers":
        from cogvideo_cli.checkpoint.diffusers import HFSource

        return HFSource(path)
    from cogvideo_cli.checkpoint.megatron import MMSource

    source = MMSource(path, trust=trust)
    sidecar = read_sidecar(path) or {}
    source.meta["hf_config"] = sidecar.get("hf_config")
    source.meta["sidecar_variant"] = sidecar.get("variant")
    return source


def target_layout(variant: Variant, tp: int = 1, pp_layers: list[int] | None = None,
                  pp: int | None = None) -> Layout:
    """The output layout, checked against the model: TP divides, stages sum to the layers."""
    require(check_tensor_parallel(variant, tp))
    if pp_layers and pp and pp != len(pp_layers):
        raise UsageError(f"--pp {pp} and --pp-layers with {len(pp_layers)} stages disagree",
                         value=pp, fix="pass only one of them")
    if not pp_layers and pp:
        if pp < 1 or pp > variant.num_layers:
            raise UsageError(f"--pp {pp} is not between 1 and the {variant.num_layers} layers",
                             value=pp, fix="use --pp 1, 2, 4 ...")
        pp_layers = balanced_split(variant.num_layers, pp)
    pp_layers = list(pp_layers or [])
    if pp_layers:
        require(check_pp_layers(variant, pp_layers))
    return Layout(tp=tp, pp_layers=pp_layers if len(pp_layers) > 1 else [],
                  iteration="release", variant=variant.name)


def resolve(source: Source, variant: str | None) -> Variant:
    """The checked variant of an opened source."""
    found = detect.resolve_variant(source.shapes(), variant)
    detect.check_complete(source.shapes(), found, f"the {source.format} checkpoint")
    return found


def _notes(source: Source, to_mm: bool) -> list[str]:
    notes = list(source.meta.get("notes") or [])  # what the reader wants said
    for name, text in UNUSED_BY_MM.items():
        if text and name in source.tensors and to_mm:
            notes.append(text)
    return notes


def _digest(path: Path) -> dict:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            sha.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


class _Digests:
    """Hash written files on a second thread while the next one is built."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.jobs: dict[str, Future] = {}

    def add(self, path: Path) -> None:
        self.jobs[path.relative_to(self.root).as_posix()] = self.pool.submit(_digest, path)

    def result(self) -> dict[str, dict]:
        try:
            return {rel: job.result() for rel, job in sorted(self.jobs.items())}
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _check_space(target: Path, needed: int) -> None:
    free = free_bytes(target.parent)
    if needed > free:
        raise CheckpointError(f"{target.parent} has {free / 2**30:.1f} GiB free, the output "
                              f"needs {needed / 2**30:.1f} GiB", value=needed,
                              fix="free space or choose another --target")


# --- to MindSpeed-MM ---------------------------------------------------------------------

def plan_mm(source: Source, variant: Variant, layout: Layout, dtype=None) -> list[dict]:
    """Files the MM output will have: path, tensors, bytes (estimated to within KBs)."""
    from cogvideo_cli.checkpoint.megatron import shard_info, stage_names

    stages = stage_names(list(source.tensors), layout.pp_layers)
    files = []
    for pp_rank, tp_rank, rel in layout.rank_files():
        infos = [shard_info(source, name, layout.tp, dtype) for name, _ in stages[pp_rank]]
        size = sum(i.nbytes + _TENSOR_OVERHEAD for i in infos) + _FILE_OVERHEAD
        files.append({"path": rel, "tensors": len(infos), "bytes": size})
    return files


def _report(source: Source, variant: Variant, layout: Layout, target: Path, dtype,
            files: list[dict], notes: list[str], dry_run: bool) -> dict:
    return {
        "dry_run": dry_run, "source": str(source.path), "source_format": source.format,
        "target": str(target), "variant": variant.name, "dims": detect.dims(variant),
        "tp": layout.tp, "pp_layers": layout.pp_layers,
        "dtype": str(dtype).removeprefix("torch.") if dtype else "keep",
        "source_dtypes": source.dtypes(), "tensors": len(source.tensors),
        "dropped": len(source.dropped), "files": files,
        "bytes": sum(f["bytes"] for f in files), "notes": notes,
    }


def _sidecar(report: dict, source: Source, digests: dict) -> dict:
    return {
        "kind": SIDECAR_KIND, "version": 1, "cogvx_version": __version__,
        "variant": report["variant"], "dims": report["dims"], "tp": report["tp"],
        "pp_layers": report["pp_layers"], "iteration": "release", "dtype": report["dtype"],
        "source": {"format": source.format, "path": os.path.abspath(source.path),
                   "iteration": source.meta.get("iteration")},
        "hf_config": source.meta.get("hf_config"), "files": digests, "notes": report["notes"],
    }


def default_target(root: Path, variant: Variant, layout: Layout | None = None) -> Path:
    """``ROOT/checkpoints/<variant>-mm-tp2-pp10-11-11-10`` (or ``<variant>-hf``)."""
    if layout is None:
        return Path(root) / "checkpoints" / f"{variant.name}-hf"
    name = f"{variant.name}-mm{layout_suffix(layout.tp, layout.pp_layers)}"
    return Path(root) / "checkpoints" / name


def convert_to_mm(fmt: str, source_path: Path, target: Path | None, *,
                  variant: str | None = None, tp: int = 1, pp_layers: list[int] | None = None,
                  pp: int | None = None, dtype: str | None = None, force: bool = False,
                  dry_run: bool = False, trust: bool = False, reporter: Reporter = SILENT,
                  default_root: Path | None = None, source_options: dict | None = None) -> dict:
    """Convert a ``sat``, ``diffusers``, ``mm`` or ``layerzero`` checkpoint into an MM layout.

    ``target`` None means :func:`default_target` under ``default_root`` (the workspace);
    ``source_options`` go to the reader (see :func:`open_source`).
    """
    torch_dtype = parse_dtype(dtype)
    require_format(source_path, fmt)
    source = open_source(fmt, source_path, trust=trust, options=source_options)
    try:
        found = resolve(source, variant)
        layout = target_layout(found, tp, pp_layers, pp)
        target = Path(target) if target else default_target(default_root or Path.cwd(),
                                                             found, layout)
        check_target(target, force, "target", protect=(Path(source_path),))
        files = plan_mm(source, found, layout, torch_dtype)
        report = _report(source, found, layout, target, torch_dtype, files,
                         _notes(source, True), dry_run)
        if dry_run:
            return report
        _check_space(target, report["bytes"])
        report["files"] = _write_mm(source, target, layout, torch_dtype, force, reporter,
                                    report)
        return report
    finally:
        source.close()


def _write_mm(source: Source, target: Path, layout: Layout, dtype, force: bool,
              reporter: Reporter, report: dict) -> list[dict]:
    from cogvideo_cli.checkpoint.megatron import write_mm

    task = reporter.start(f"writing {target.name}", total=report["bytes"], unit="B")
    try:
        old_sidecar = sidecar_path(target)
        with atomic_dir(target, force=force, what="target") as tmp:
            digests = _Digests(tmp)
            write_mm(source, tmp, layout, dtype,
                     on_tensor=lambda n: reporter.advance(task, n), on_file=digests.add)
            hashed = digests.result()
            if old_sidecar.exists():
                old_sidecar.unlink()  # it describes the folder about to be replaced
        # beside the folder, not in it: the folder holds exactly what MindSpeed-MM reads
        write_text_atomic(sidecar_path(target),
                          json.dumps(_sidecar(report, source, hashed), indent=2) + "\n")
    finally:
        reporter.finish(task)
    return [{"path": rel, **info} for rel, info in hashed.items()]


def sat_to_mm(source: Path, target: Path, **options) -> dict:
    """SAT (CogVideo) transformer -> MindSpeed-MM. Options as :func:`convert_to_mm`."""
    return convert_to_mm("sat", source, target, **options)


def hf_to_mm(source: Path, target: Path, **options) -> dict:
    """diffusers transformer folder -> MindSpeed-MM. Options as :func:`convert_to_mm`."""
    return convert_to_mm("diffusers", source, target, **options)


def resplit(source: Path, target: Path, **options) -> dict:
    """MindSpeed-MM (any TP/PP, release or iter_*) -> MindSpeed-MM in a new layout."""
    return convert_to_mm("mm", source, target, **options)


# --- to diffusers ------------------------------------------------------------------------

DEFAULT_SHARD_BYTES = 5 * 2**30


def mm_to_hf(source_path: Path, target: Path | None, *, variant: str | None = None,
             dtype: str | None = None, force: bool = False, dry_run: bool = False,
             trust: bool = False, reporter: Reporter = SILENT,
             max_shard_bytes: int = DEFAULT_SHARD_BYTES,
             default_root: Path | None = None) -> dict:
    """MindSpeed-MM (any layout) -> a diffusers ``CogVideoXTransformer3DModel`` folder."""
    from cogvideo_cli.checkpoint import diffusers as hf

    torch_dtype = parse_dtype(dtype)
    require_format(source_path, "mm", "mm-to-hf")
    source = open_source("mm", source_path, trust=trust)
    try:
        found = resolve(source, variant)
        target = Path(target) if target else default_target(default_root or Path.cwd(), found)
        check_target(target, force, "target", protect=(Path(source_path),))
        renames, fusions, homeless = hf.hf_names(list(source.tensors))
        config = source.meta.get("hf_config") or hf.derive_config(found, source.shapes())
        items = _hf_items(source, renames, fusions, torch_dtype)
        shards = hf.plan_shards(items, max_shard_bytes)
        names = hf.shard_names(len(shards))
        sizes = {n: sum(b for k, b in items if k in set(s)) for n, s in zip(names, shards)}
        notes = [f"{', '.join(homeless)} not written: diffusers computes these itself"] \
            if homeless else []
        report = {"dry_run": dry_run, "source": str(source.path), "source_format": "mm",
                  "target": str(target), "variant": found.name, "dims": detect.dims(found),
                  "tp": source.layout.tp, "pp_layers": source.layout.pp_layers,
                  "dtype": str(torch_dtype).removeprefix("torch.") if torch_dtype else "keep",
                  "files": [{"path": "config.json"}] + [{"path": n, "bytes": b}
                                                          for n, b in sizes.items()],
                  "bytes": sum(sizes.values()), "notes": notes}
        if dry_run:
            return report
        _check_space(target, report["bytes"])
        _write_hf(source, target, config, shards, renames, fusions, torch_dtype, force,
                  reporter, report["bytes"])
        return report
    finally:
        source.close()


def _hf_items(source: Source, renames: dict, fusions: dict, dtype) -> list[tuple[str, int]]:
    """(diffusers name, bytes) in a stable order: the MM order, fused parts together."""
    items = []
    for name, info in source.tensors.items():
        size = info.nbytes if dtype is None else info.nbytes // info.dtype.itemsize * \
            dtype.itemsize
        if name in renames:
            items.append((renames[name], size))
        elif name in fusions:
            parts = fusions[name]
            items += [(p, size // len(parts)) for p in parts]
    return items


def _write_hf(source: Source, target: Path, config: dict, shards: list[list[str]],
              renames: dict, fusions: dict, dtype, force: bool, reporter: Reporter,
              total: int) -> None:
    from cogvideo_cli.checkpoint import diffusers as hf
    from cogvideo_cli.checkpoint.mapping import HF_MAP

    back = {v: k for k, v in renames.items()}
    part_of = {p: (mm, i) for mm, parts in fusions.items() for i, p in enumerate(parts)}
    cache: dict[str, list] = {}  # the parts of the fused tensor being written

    def fetch(name: str):
        if name in back:
            tensor = source.get(back[name])
        else:
            mm, index = part_of[name]
            if mm not in cache:
                cache.clear()
                cache[mm] = hf.unfuse(HF_MAP.fusion_of(mm), source.get(mm))
            tensor = cache[mm][index]
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor

    task = reporter.start(f"writing {target.name}", total=total, unit="B")
    try:
        with atomic_dir(target, force=force, what="target") as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True)
                                             + "\n", encoding="utf-8")
            hf.write_shards(tmp, shards, fetch, lambda n: reporter.advance(task, n))
    finally:
        reporter.finish(task)


def layerzero_to_mm(source: Path, target: Path, *, iteration: int | None = None,
                    ema: bool = False, **options) -> dict:
    """LayerZero save (``SAVE/iter_*/model_<rank>.pt``) -> MindSpeed-MM, any TP/PP."""
    return convert_to_mm("layerzero", source, target,
                         source_options={"iteration": iteration, "ema": ema}, **options)
