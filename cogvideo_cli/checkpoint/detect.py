"""Tell the variant of a checkpoint from its tensors' shapes, and check it is complete.

Works on MM names and whole-model shapes (what every reader reports before loading a
byte): the patch embedding's rank and width give the version and input channels,
``ofs_embed`` marks i2v 1.5, the blocks give the layer count and the q-norm the head size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cogvideo_cli.checkpoint.mapping import expected_shapes, spec_of, split_layer
from cogvideo_cli.core.errors import CheckpointError, UsageError
from cogvideo_cli.core.variants import VARIANTS, Variant, get_variant

Shapes = Mapping[str, tuple[int, ...]]


def _need(shapes: Shapes, name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise CheckpointError(
            f"the checkpoint has no {name}, so it is not a whole CogVideoX transformer",
            fix="point --source at the transformer weights (not a LoRA, VAE or text encoder)")
    return tuple(shapes[name])


def layer_indices(shapes: Shapes) -> list[int]:
    """Sorted layer indices present among the names."""
    return sorted({i for i in (split_layer(n)[0] for n in shapes) if i is not None})


def _layer_count(shapes: Shapes) -> int:
    indices = layer_indices(shapes)
    if not indices:
        raise CheckpointError("the checkpoint holds no transformer layers (videodit_blocks)",
                              fix="point --source at the whole transformer checkpoint")
    count = indices[-1] + 1
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise CheckpointError(
            f"layers {shown} are missing: the checkpoint has {len(indices)} layers numbered "
            f"up to {count - 1}", value=len(indices),
            fix="the file is incomplete; convert from a complete checkpoint")
    return count


def base_name(shapes: Shapes) -> str:
    """t2v-1.0 / i2v-1.0 / t2v-1.5 / i2v-1.5 from the patch embedding and ofs_embed."""
    patch = _need(shapes, "patch_embed.proj.weight")
    if len(patch) == 4:
        version, channels = "1.0", patch[1]
    elif len(patch) == 2:
        version, channels = "1.5", patch[1] // 8
    else:
        raise CheckpointError(f"patch_embed.proj.weight has shape {list(patch)}, neither a "
                              "Conv2d (1.0) nor a Linear (1.5) patch embedding")
    task = "i2v" if channels == 2 * VARIANTS["t2v-1.0"].in_channels else "t2v"
    if "ofs_embed.0.weight" in shapes:
        task = "i2v"
    return f"{task}-{version}"


def detect_variant(shapes: Shapes) -> Variant:
    """The variant of a checkpoint, sized from its tensors (any layer count or width)."""
    base = get_variant(base_name(shapes))
    hidden = _need(shapes, "patch_embed.proj.weight")[0]
    head_dim = _need(shapes, "videodit_blocks.0.self_atten.q_norm.weight")[0]
    if hidden % head_dim:
        raise CheckpointError(f"hidden size {hidden} is not a multiple of the head size "
                              f"{head_dim}", value=hidden)
    patch = _need(shapes, "patch_embed.proj.weight")
    patch_numel = 8 if base.version == "1.5" else 4
    channels = patch[1] // patch_numel if len(patch) == 2 else patch[1]
    ofs = shapes.get("ofs_embed.0.weight")
    return dataclasses.replace(
        base, num_layers=_layer_count(shapes), num_heads=hidden // head_dim,
        head_dim=head_dim, in_channels=channels,
        out_channels=_need(shapes, "proj_out_linear.weight")[0] // patch_numel
        if "proj_out_linear.weight" in shapes else base.out_channels,
        time_embed_dim=_need(shapes, "time_embed.time_embed.0.weight")[0],
        text_hidden_size=_need(shapes, "caption_projection.weight")[1],
        ofs_embed_dim=ofs[1] if ofs else None)


def resolve_variant(shapes: Shapes, override: str | None) -> Variant:
    """The detected variant; an override must agree with the tensors."""
    found = detect_variant(shapes)
    if override is None:
        return found
    wanted = get_variant(override)
    if wanted.name != found.name:
        patch = list(shapes["patch_embed.proj.weight"])
        raise UsageError(
            f"--variant {wanted.name} contradicts the tensors, which are {found.name} "
            f"(patch embedding {patch}, {found.in_channels} input channels, "
            f"{'with' if found.ofs_embed_dim else 'no'} ofs_embed)",
            value=override, fix=f"drop --variant, or pass --variant {found.name}")
    return found


def check_complete(shapes: Shapes, variant: Variant, where: str = "the checkpoint") -> None:
    """Every tensor ``variant`` needs is present with its shape; nothing unknown is."""
    expected = expected_shapes(variant)
    unknown = [n for n in shapes if n not in expected and spec_of(n) is None]
    if unknown:
        raise CheckpointError(
            f"{where} has {len(unknown)} tensors no CogVideoX {variant.name} model has, "
            f"e.g. {', '.join(unknown[:3])}", value=len(unknown),
            fix="point --source at the transformer weights alone")
    missing = [n for n in expected if n not in shapes and n != "patch_embed.proj.bias"]
    if missing:
        raise CheckpointError(
            f"{where} lacks {len(missing)} tensors {variant.name} needs, "
            f"e.g. {', '.join(missing[:3])}", value=len(missing),
            fix="the checkpoint is incomplete or of another model; convert a complete one")
    for name, shape in shapes.items():
        want = expected.get(name)
        if want is not None and tuple(shape) != tuple(want):
            raise CheckpointError(
                f"{name} in {where} has shape {list(shape)}, but {variant.name} with "
                f"hidden size {variant.hidden_size} needs {list(want)}", value=list(shape),
                fix="the checkpoint mixes tensors of different models; use a consistent one")


def dims(variant: Variant) -> dict:
    """The sizes that pin a variant down, for the sidecar and reports."""
    return {"num_layers": variant.num_layers, "num_heads": variant.num_heads,
            "head_dim": variant.head_dim, "hidden_size": variant.hidden_size,
            "in_channels": variant.in_channels, "out_channels": variant.out_channels,
            "time_embed_dim": variant.time_embed_dim,
            "text_hidden_size": variant.text_hidden_size,
            "ofs_embed_dim": variant.ofs_embed_dim}


def from_dims(name: str, values: Mapping) -> Variant:
    """A variant from its name and :func:`dims` (as a sidecar records them)."""
    keep = {k: values[k] for k in ("num_layers", "num_heads", "head_dim", "in_channels",
                                   "out_channels", "time_embed_dim", "text_hidden_size",
                                   "ofs_embed_dim") if k in values}
    return dataclasses.replace(get_variant(name), **keep)
