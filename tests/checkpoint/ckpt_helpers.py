"""Helpers for checkpoint tests: golden fixtures, synthetic SAT / diffusers / training saves.

Imported by the tests as ``ckpt_helpers`` (pytest puts this folder on sys.path); the
fixtures built on them are in conftest.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import types
from enum import Enum
from pathlib import Path

import torch

from cogvideo_cli.checkpoint.mapping import SAT_MAP, SAT_PREFIX, expected_shapes
from cogvideo_cli.core.variants import get_variant

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GOLDEN = SHARED / "golden" / "convert"
FIXTURES = GOLDEN / "fixtures"


def summarize(obj):
    """The golden form: tensors -> [dtype, shape, sha256[:20]], other values -> repr[:60]."""
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().contiguous().cpu().view(torch.uint8)
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:20]
        return [str(obj.dtype).removeprefix("torch."), list(obj.shape), digest]
    if isinstance(obj, dict):
        return {k: summarize(v) for k, v in obj.items()}
    return repr(obj)[:60]


def load_pt(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def tiny_variant(name: str, layers: int = 4, heads: int = 2, head_dim: int = 8,
                 time_dim: int = 8, text_dim: int = 16):
    """A small variant of ``name`` (the real structure, narrow)."""
    base = get_variant(name)
    return dataclasses.replace(base, num_layers=layers, num_heads=heads, head_dim=head_dim,
                               time_embed_dim=time_dim, text_hidden_size=text_dim,
                               ofs_embed_dim=time_dim if base.ofs_embed_dim else None)


def random_mm_state(variant, dtype=torch.bfloat16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Whole-model MM-named tensors of ``variant`` with random values."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen).to(dtype)
            for name, shape in expected_shapes(variant).items()}


def write_sat(path: Path, state: dict[str, torch.Tensor], extra: dict | None = None) -> Path:
    """A SAT download: ``path/latest`` + ``path/1000/mp_rank_00_model_states.pt``."""
    module = {SAT_PREFIX + SAT_MAP.from_mm(name)[0]: t for name, t in state.items()}
    module[SAT_PREFIX + "transformer.position_embeddings.weight"] = torch.zeros(4, 4)
    (path / "1000").mkdir(parents=True)
    (path / "latest").write_text("1000")
    torch.save({"module": module, "global_steps": 1000, **(extra or {})},
               path / "1000" / "mp_rank_00_model_states.pt")
    return path


def tiny_diffusers(folder: Path, *, i2v: bool, version: str, layers: int = 2,
                   seed: int = 0, dtype=torch.float32) -> Path:
    """Save a tiny diffusers CogVideoXTransformer3DModel (random weights) to ``folder``."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    is_15 = version == "1.5"
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=32 if i2v else 16,
        out_channels=16, num_layers=layers, sample_width=8, sample_height=8,
        sample_frames=9, patch_size=2, patch_size_t=2 if is_15 else None,
        temporal_compression_ratio=4, max_text_seq_length=8, text_embed_dim=16,
        time_embed_dim=8, ofs_embed_dim=8 if (i2v and is_15) else None,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=i2v and not is_15)
    with torch.no_grad():  # diffusers zero-inits some heads; make every weight count
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2)
    model.to(dtype).save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    return folder


def forward(model, i2v: bool, version: str, seed: int = 1):
    """One deterministic forward pass of a tiny model."""
    gen = torch.Generator().manual_seed(seed)
    frames = 3 if version == "1.0" else 4
    hidden = torch.randn(1, frames, 32 if i2v else 16, 8, 8, generator=gen)
    text = torch.randn(1, 8, 16, generator=gen)
    rotary = None
    kwargs = {}
    if model.config.ofs_embed_dim:
        kwargs["ofs"] = torch.tensor([2.0])
    with torch.no_grad():
        return model(hidden_states=hidden, encoder_hidden_states=text,
                     timestep=torch.tensor([500]), image_rotary_emb=rotary,
                     return_dict=False, **kwargs)[0]


class _FakeRerunMode(Enum):
    DISABLED = "disabled"


def make_training_checkpoint(release_dir: Path, out: Path, iteration: int = 10) -> Path:
    """Rewrite a converted MM folder as Megatron training saves it (iter dir, args, RNG).

    The Megatron enum is pickled under its real name through a throwaway module, so loading
    needs cogvx's allowlist exactly as a real training save does.
    """
    import numpy as np

    modules = ["megatron", "megatron.core", "megatron.core.rerun_state_machine"]
    saved = {m: sys.modules.get(m) for m in modules}
    fake = types.ModuleType(modules[-1])
    fake.RerunMode = _FakeRerunMode
    _FakeRerunMode.__module__, _FakeRerunMode.__qualname__ = modules[-1], "RerunMode"
    for m in modules:
        sys.modules[m] = fake if m == modules[-1] else types.ModuleType(m)
    try:
        folder = out / f"iter_{iteration:07d}"
        for rank_file in sorted((release_dir / "release").glob("*/model_optim_rng.pt")):
            model = load_pt(rank_file)["model"]
            model["videodit_blocks.0.self_atten.proj_qkv._extra_state"] = None
            ckpt = {"args": argparse.Namespace(num_layers=42, tensor_model_parallel_size=2),
                    "checkpoint_version": 3.0, "iteration": iteration, "model": model,
                    "rerun_state_machine": {"mode": _FakeRerunMode.DISABLED},
                    "rng_state": [{"np_rng_state": np.random.get_state()}],
                    "num_floating_point_operations_so_far": 0}
            target = folder / rank_file.parent.name / "model_optim_rng.pt"
            target.parent.mkdir(parents=True)
            torch.save(ckpt, target)
        (out / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    finally:
        for m, module in saved.items():
            if module is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = module
    return out


def whole_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an MM folder as whole MM-named tensors (through cogvx's reader)."""
    from cogvideo_cli.checkpoint.megatron import MMSource

    source = MMSource(path)
    return {name: source.get(name).clone() for name in source.tensors}


def hf_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def golden_cases() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text())["cases"]


class Foreign:
    """A class no allowlist holds, to pickle into a checkpoint."""

    def __init__(self) -> None:
        self.payload = 1
