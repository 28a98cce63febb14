"""Check an MM checkpoint the way MindSpeed-MM will load it, before anything is launched.

Megatron loads with ``strict=False`` and exits with status 0 on several load failures, so
a checkpoint that does not fit the run silently trains from random weights. This module
checks the tracker, the rank folders against TP/PP, and in every rank file every key the
rank's model expects, with its shape, and no key it does not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cogvideo_cli.checkpoint import detect, sharding
from cogvideo_cli.checkpoint.formats import require_format
from cogvideo_cli.checkpoint.layout import (
    SIDECAR_SUFFIX,
    TRACKER,
    Layout,
    read_layout,
    read_sidecar,
    relayout_name,
)
from cogvideo_cli.checkpoint.mapping import UNUSED_BY_MM, expected_shapes, spec_of
from cogvideo_cli.core.errors import CheckpointError
from cogvideo_cli.core.variants import Variant


def _root(path: Path) -> Path:
    path = Path(path)
    if path.name.endswith(SIDECAR_SUFFIX) and path.is_file():
        return path.with_name(path.name[:-len(SIDECAR_SUFFIX)])
    return path


def _resplit_fix(path: Path, tp: int, pp_layers: list[int] | None) -> str:
    pp = f" --pp-layers {' '.join(map(str, pp_layers))}" if pp_layers else ""
    named = path if path.name else path.resolve()  # "." has no name to build on
    target = named.with_name(relayout_name(named.name, tp, pp_layers))
    return (f"convert it: cogvx convert resplit --source {path} --target {target} "
            f"--tp {tp}{pp}, or train with the checkpoint's layout")


def _check_layout(path: Path, layout: Layout, tp: int | None,
                  pp_layers: list[int] | None) -> None:
    want_pp = list(pp_layers or [])
    want_pp = want_pp if len(want_pp) > 1 else []
    if tp is not None and tp != layout.tp:
        raise CheckpointError(
            f"{path} is split for TP {layout.tp}, but the run uses TP {tp}; Megatron would "
            f"look for mp_rank folders that do not exist and exit with status 0",
            value=tp, fix=_resplit_fix(path, tp, want_pp or None))
    if pp_layers is not None and want_pp != layout.pp_layers:
        has = " ".join(map(str, layout.pp_layers)) or "none (one stage)"
        raise CheckpointError(
            f"{path} has pipeline stages {has}, but the run uses "
            f"{' '.join(map(str, want_pp)) or 'none'}",
            fix=_resplit_fix(path, tp or layout.tp, want_pp or None))


def _expected_ranks(variant: Variant, layout: Layout, present: set[str]):
    """Per (pp, tp) rank: local name -> shard shape, from the variant's whole shapes."""
    whole = expected_shapes(variant)
    whole = {n: s for n, s in whole.items() if n != "patch_embed.proj.bias" or n in present}
    stages: list[dict] = [{} for _ in range(layout.pp)]
    for name, shape in whole.items():
        stage, local = sharding.place(name, layout.pp_layers)
        stages[stage][local] = sharding.shard_shape(shape, spec_of(name).tp, layout.tp, name)
    return stages


def _check_rank(file: str, model: dict, expected: dict, stage: int, layout: Layout) -> int:
    """Compare one rank file's keys and shapes with what its model expects."""
    tensors = {k: v for k, v in model.items()
               if not k.endswith("._extra_state") and hasattr(v, "shape")}
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(
            f"{file} lacks {len(missing)} tensors its model expects, e.g. "
            f"{', '.join(missing[:3])}; MindSpeed-MM would leave them random", value=len(missing),
            fix="convert the checkpoint again for this variant and layout")
    for key, value in tensors.items():
        spec = spec_of(key)
        if key not in expected and (spec is None or not spec.optional):
            raise CheckpointError(
                f"{file} holds {key}, which this rank's model does not have (ignored by "
                f"MindSpeed-MM's strict=False load)", value=key,
                fix="convert the checkpoint again for this variant and layout")
        want = expected.get(key)
        if want is not None and tuple(value.shape) != tuple(want):
            raise CheckpointError(
                f"{file}: {key} has shape {list(value.shape)}, the model expects {list(want)}",
                value=list(value.shape), fix="convert the checkpoint again for this variant, "
                                             "TP and PP")
        if spec is not None and spec.optional and key not in expected:
            place = sharding.place(sharding.globalize(key, stage, layout.pp_layers),
                                   layout.pp_layers)[0]
            if place != stage:
                raise CheckpointError(f"{file} holds {key}, which belongs to stage {place}",
                                      value=key, fix="convert the checkpoint again")
    return len(tensors)


def _check_sidecar(root: Path, sidecar: dict, variant: Variant, layout: Layout,
                   digests: bool) -> None:
    if sidecar.get("variant") not in (None, variant.name):
        raise CheckpointError(f"the sidecar of {root} says {sidecar['variant']}, the tensors "
                              f"are {variant.name}", fix="the folder was changed after "
                              "conversion; convert it again")
    for rel, info in (sidecar.get("files") or {}).items():
        file = root / rel
        if not file.is_file() or file.stat().st_size != info.get("bytes"):
            raise CheckpointError(f"{file} does not match the size the conversion recorded",
                                  value=rel, fix="copy or convert the checkpoint again")
        if digests and info.get("sha256") != _sha256(file):
            raise CheckpointError(f"{file} does not match the digest the conversion recorded",
                                  value=rel, fix="copy or convert the checkpoint again")


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            sha.update(chunk)
    return sha.hexdigest()


def _resolve_variant(source, sidecar: dict | None, variant: Variant | str | None) -> Variant:
    found = detect.detect_variant(source.shapes())
    if isinstance(variant, str):
        return detect.resolve_variant(source.shapes(), variant)
    if variant is not None and variant.name != found.name:
        raise CheckpointError(
            f"{source.path} holds a {found.name} model, but the run is {variant.name}",
            value=found.name, fix=f"use a {variant.name} checkpoint, or run {found.name}")
    return variant or found


def verify_checkpoint(path: Path, variant: Variant | str | None = None, tp: int | None = None,
                      pp_layers: list[int] | None = None, *, trust: bool = False,
                      digests: bool = False) -> dict:
    """Check an MM checkpoint folder against a variant and a TP/PP layout.

    Args:
        path: the folder (the ``--load`` of a run), or its ``.cogvx.json`` sidecar.
        variant: the model the run builds; detected from the tensors when None.
        tp: the run's tensor-parallel size; the checkpoint's own when None.
        pp_layers: the run's stage sizes ([] or one entry = no pipeline); any when None.
        trust: load rank files without the weights-only allowlist.
        digests: also compare each file's SHA-256 with the sidecar's.

    Returns:
        A JSON-ready report: variant, dims, tp, pp_layers, iteration, files, key counts.

    Raises:
        CheckpointError: naming what is wrong, the value and the fix.
        UsageError: ``path`` is a SAT, diffusers or LayerZero checkpoint (convert it first).
    """
    from cogvideo_cli.checkpoint.megatron import MMSource

    root = _root(path)
    require_format(root, "mm", "verify")
    layout = read_layout(root, trust=trust)
    _check_layout(root, layout, tp, pp_layers)
    source = MMSource(root, trust=trust, layout=layout)
    try:
        if source.unknown:
            raise CheckpointError(
                f"{root} holds {len(source.unknown)} tensors no CogVideoX model has, e.g. "
                f"{', '.join(source.unknown[:3])}", value=len(source.unknown),
                fix="a LoRA or foreign checkpoint? merge or convert it first")
        sidecar = read_sidecar(root)
        found = _resolve_variant(source, sidecar, variant)
        stages = _expected_ranks(found, layout, set(source.tensors))
        files, total = [], 0
        for pp_rank, tp_rank, rel in layout.rank_files():
            count = _check_rank(rel, source.models[(pp_rank, tp_rank)], stages[pp_rank],
                                pp_rank, layout)
            size = (root / rel).stat().st_size
            files.append({"path": rel, "tensors": count, "bytes": size})
            total += count
        if sidecar:
            _check_sidecar(root, sidecar, found, layout, digests)
        notes = [text for name, text in UNUSED_BY_MM.items() if text and name in source.tensors]
        tracker_text = (root / TRACKER).read_text(encoding="utf-8", errors="replace")
        if tracker_text != tracker_text.strip():
            notes.append(f"{TRACKER} has surrounding whitespace: Megatron accepts it, "
                         "MindSpeed-MM's own converter does not")
        return {"path": str(root), "ok": True, "variant": found.name,
                "dims": detect.dims(found), "tp": layout.tp, "pp_layers": layout.pp_layers,
                "iteration": layout.iteration, "files": files,
                "keys": {"expected": sum(len(s) for s in stages) * layout.tp,
                         "found": total, "whole_model": len(source.tensors)},
                "sidecar": sidecar is not None, "digests_checked": bool(sidecar and digests),
                "notes": notes}
    finally:
        source.close()
