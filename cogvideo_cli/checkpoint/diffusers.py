"""diffusers ``CogVideoXTransformer3DModel`` folders: read as MM names, write from MM names.

A folder holds ``config.json`` and either one ``diffusion_pytorch_model.safetensors`` or
shards with a ``diffusion_pytorch_model.safetensors.index.json``. Reading goes through
``safetensors.safe_open`` (one tensor at a time); writing plans the shards from the shapes,
then fills and saves one shard at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from cogvideo_cli.checkpoint.mapping import HF_MAP, Fuse
from cogvideo_cli.checkpoint.source import Source, TensorInfo
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError, UsageError
from cogvideo_cli.core.variants import Variant

log = logging.getLogger(__name__)

WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = WEIGHTS + ".index.json"
CLASS_NAME = "CogVideoXTransformer3DModel"
_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
           "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}
_REPO_PARTS = ("text_encoder", "vae", "tokenizer", "scheduler")


def find_hf_dir(path: Path) -> Path:
    """The diffusers transformer folder; a file or a whole repository is refused with a fix."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"the diffusers folder {path} does not exist", fix="check the path")
    if path.is_file():
        raise UsageError(f"{path} is a file, but a diffusers transformer folder is needed",
                         value=str(path), fix=f"pass --source {path.parent}")
    mixed = [p for p in _REPO_PARTS if (path / p).is_dir()]
    inner = path / "transformer"
    if (path / "model_index.json").exists() or mixed:
        raise UsageError(
            f"{path} is a diffusers repository root (it has {', '.join(mixed) or 'a pipeline'}); "
            "its T5 and VAE shards would be mixed into the transformer", value=str(path),
            fix=f"pass --source {inner}" if inner.is_dir() else
            "this download has no transformer/ folder: fetch it with cogvx download "
            "--components transformer, then pass that folder")
    if not any(path.glob("*.safetensors")) and inner.is_dir():
        raise UsageError(f"{path} holds no weights itself; they are in its transformer/ folder",
                         value=str(path), fix=f"pass --source {inner}")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")):
            raise NotSupportedError(f"{path} holds .bin weights; cogvx reads safetensors only",
                                    fix="re-save the model with safe_serialization=True")
        raise UsageError(f"{path} holds no .safetensors weights", value=str(path),
                         fix="pass the transformer/ folder of a diffusers model")
    return path


def _shard_files(folder: Path) -> list[Path]:
    index = folder / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{index} lists {missing[0]}, which is missing",
                                  value=missing[0], fix="download the missing shard again")
        return [folder / f for f in files]
    return sorted(folder.glob("*.safetensors"))


class HFSource(Source):
    """A diffusers transformer folder; q/k/v and the adaLN rows are fused on read."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        folder = find_hf_dir(path)
        super().__init__(path=folder, format="diffusers")
        config = folder / "config.json"
        self.meta["hf_config"] = json.loads(config.read_text(encoding="utf-8")) \
            if config.is_file() else None
        if self.meta["hf_config"] and self.meta["hf_config"].get("_class_name") not in (
                None, CLASS_NAME):
            raise CheckpointError(f"{config} describes a {self.meta['hf_config']['_class_name']}"
                                  f", not a {CLASS_NAME}", fix="pass the transformer/ folder")
        self._handles = {}
        self._where: dict[str, object] = {}  # format name -> open handle
        for file in _shard_files(folder):
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as exc:  # a truncated or foreign file
                raise CheckpointError(f"{file} is not a readable safetensors file: {exc}",
                                      fix="download it again") from exc
            self._handles[file.name] = handle
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                self._where[key] = handle
        self._build_names()

    def _info(self, key: str) -> TensorInfo:
        import torch

        piece = self._where[key].get_slice(key)
        return TensorInfo(tuple(piece.get_shape()), getattr(torch, _DTYPES[piece.get_dtype()]))

    def _build_names(self) -> None:
        self._renamed: dict[str, str] = {}
        self._fused: dict[str, dict[int, str]] = {}
        unknown = []
        for key in self._where:
            mm = HF_MAP.to_mm(key)
            if mm is not None:
                self._renamed[mm] = key
                self.tensors[mm] = self._info(key)
                continue
            part = HF_MAP.fused_part(key)
            if part is None:
                unknown.append(key)
                continue
            self._fused.setdefault(part[0], {})[part[1]] = key
        if unknown:
            raise CheckpointError(
                f"{self.path} holds {len(unknown)} tensors that are not part of a CogVideoX "
                f"transformer, e.g. {', '.join(unknown[:3])}", value=len(unknown),
                fix="pass the transformer/ folder alone (no T5 or VAE shards)")
        for mm, parts in self._fused.items():
            fuse = HF_MAP.fusion_of(mm)
            if len(parts) != len(fuse.parts):
                raise CheckpointError(f"{mm} needs {len(fuse.parts)} diffusers tensors, found "
                                      f"{sorted(parts.values())}", fix="the folder is incomplete")
            infos = [self._info(parts[k]) for k in range(len(fuse.parts))]
            rows = sum(i.shape[0] for i in infos)
            self.tensors[mm] = TensorInfo((rows, *infos[0].shape[1:]), infos[0].dtype)

    def get(self, name: str):
        import torch

        if name in self._renamed:
            key = self._renamed[name]
            return self._where[key].get_tensor(key)
        fuse = HF_MAP.fusion_of(name)
        parts = [self._where[k].get_tensor(k) for k in
                 (self._fused[name][i] for i in range(len(fuse.parts)))]
        pieces = [p.chunk(fuse.chunks, dim=0) for p in parts]
        return torch.cat([pieces[p][c] for p, c in fuse.segments], dim=0)

    def close(self) -> None:
        self._handles.clear()
        self._where.clear()


def unfuse(fuse: Fuse, tensor) -> list:
    """The format tensors of a fused MM tensor (inverse of the fusion)."""
    import torch

    pieces = tensor.chunk(len(fuse.segments), dim=0)
    slots: list[list] = [[None] * fuse.chunks for _ in fuse.parts]
    for piece, (part, chunk) in zip(pieces, fuse.segments):
        slots[part][chunk] = piece
    return [torch.cat(s, dim=0) if len(s) > 1 else s[0].clone() for s in slots]


# --- writing -----------------------------------------------------------------------------

def hf_names(mm_names: list[str]) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """(renames MM -> HF, fusions MM -> HF parts, MM names with no diffusers home)."""
    renames, fusions, homeless = {}, {}, []
    for name in mm_names:
        target = HF_MAP.from_mm(name)
        if target is None:
            homeless.append(name)
        elif HF_MAP.fusion_of(name) is not None:
            fusions[name] = list(target)
        else:
            renames[name] = target[0]
    return renames, fusions, homeless


def derive_config(variant: Variant, shapes: dict[str, tuple[int, ...]]) -> dict:
    """A diffusers config.json for ``variant`` (the official values where shapes allow)."""
    import diffusers

    is_15 = variant.version == "1.5"
    config = {
        "_class_name": CLASS_NAME, "_diffusers_version": diffusers.__version__,
        "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": variant.head_dim, "dropout": 0.0, "flip_sin_to_cos": True,
        "freq_shift": 0, "in_channels": variant.in_channels, "max_text_seq_length": 226,
        "norm_elementwise_affine": True, "norm_eps": 1e-5,
        "num_attention_heads": variant.num_heads, "num_layers": variant.num_layers,
        "ofs_embed_dim": variant.ofs_embed_dim, "out_channels": variant.out_channels,
        "patch_bias": "patch_embed.proj.bias" in shapes, "patch_size": variant.patch_size[1],
        "patch_size_t": variant.patch_size[0] if is_15 else None,
        "sample_frames": 81 if is_15 else 49, "sample_height": 300 if is_15 else 60,
        "sample_width": 300 if is_15 else 90, "spatial_interpolation_scale": 1.875,
        "temporal_compression_ratio": 4, "temporal_interpolation_scale": 1.0,
        "text_embed_dim": variant.text_hidden_size, "time_embed_dim": variant.time_embed_dim,
        "timestep_activation_fn": "silu",
        "use_learned_positional_embeddings": "pos_embed.pos_embedding" in shapes,
        "use_rotary_positional_embeddings": True,
    }
    if "pos_embed.pos_embedding" in shapes:
        _fit_pos_table(config, shapes["pos_embed.pos_embedding"][1])
    return config


def _fit_pos_table(config: dict, rows: int) -> None:
    """Choose sample sizes whose learned table has ``rows`` rows (text + patches)."""
    patches = rows - config["max_text_seq_length"]
    p = config["patch_size"]
    official = (config["sample_frames"] - 1) // 4 + 1
    official *= (config["sample_height"] // p) * (config["sample_width"] // p)
    if patches == official:
        return
    if patches < 1:
        raise CheckpointError(f"pos_embed.pos_embedding has {rows} rows, fewer than the "
                              f"{config['max_text_seq_length']} text tokens", value=rows)
    log.warning("the learned position table has %d video patches, not the official %d; "
                "config.json describes one latent frame of %d patches", patches, official,
                patches)
    config.update(sample_frames=1, sample_height=p, sample_width=p * patches)


def plan_shards(items: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Group (name, bytes) in order into shards of at most ``max_bytes`` (one tensor min)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, nbytes in items:
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """File names diffusers uses for ``count`` shards."""
    if count == 1:
        return [WEIGHTS]
    stem = WEIGHTS.removesuffix(".safetensors")
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_shards(folder: Path, shards: list[list[str]], fetch: Callable[[str], object],
                 on_tensor: Callable[[int], None] | None = None) -> list[str]:
    """Save each shard from ``fetch(name)`` (contiguous tensors), one shard in memory."""
    from safetensors.torch import save_file

    files = shard_names(len(shards))
    weight_map, total = {}, 0
    for file, names in zip(files, shards):
        tensors = {}
        for name in names:
            tensors[name] = fetch(name).contiguous()
            total += tensors[name].numel() * tensors[name].element_size()
            weight_map[name] = file
            if on_tensor:
                on_tensor(tensors[name].numel() * tensors[name].element_size())
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        del tensors
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return files
