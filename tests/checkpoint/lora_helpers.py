"""Helpers for LoRA merge tests: MindSpeed-MM LoRA saves and diffusers LoRA files.

The MM writer cuts the factors by hand, as the issue describes MindSpeed-MM's PEFT layers
(it does not reuse cogvx's sharding code, so the two can disagree):

* ``proj_qkv`` (column-parallel, fused QKV): A replicated, B cut like the fused weight
  (each of Q, K, V chunked, rank t gets Q_t; K_t; V_t);
* ``proj_out`` (row-parallel): A cut along its input (dim 1), B replicated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SAT_T2V = SHARED / "golden" / "convert" / "fixtures" / "sat-t2v-1.5" / "transformer"
MODULES = ("self_atten.proj_qkv", "self_atten.proj_out")


def random_factors(layers: int, hidden: int, rank: int, seed: int = 0,
                   modules=MODULES) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Whole (A, B) per MM module name, fp32."""
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for i in range(layers):
        for rest in modules:
            out = 3 * hidden if rest.endswith("proj_qkv") else hidden
            a = torch.randn(rank, hidden, generator=gen) * 0.5
            b = torch.randn(out, rank, generator=gen) * 0.5
            factors[f"videodit_blocks.{i}.{rest}"] = (a, b)
    return factors


def _cut(module: str, a: torch.Tensor, b: torch.Tensor, tp: int, rank: int):
    if tp == 1:
        return a, b
    if module.endswith("proj_qkv"):
        pieces = [part.chunk(tp, dim=0)[rank] for part in b.chunk(3, dim=0)]
        return a, torch.cat(pieces, dim=0)
    if module.endswith("proj_out"):
        return a.chunk(tp, dim=1)[rank], b
    raise AssertionError(module)


def _stage(index: int, pp_layers: list[int]) -> tuple[int, int]:
    start = 0
    for stage, size in enumerate(pp_layers or [10 ** 9]):
        if index < start + size:
            return stage, index - start
        start += size
    raise AssertionError(index)


def write_mm_lora(path: Path, factors: dict, tp: int = 1, pp_layers: list[int] | None = None,
                  iteration: int = 5000, edit=None) -> Path:
    """A LoRA save as MindSpeed-MM writes it: ``iter_*/mp_rank_*`` with args, tracker."""
    pp_layers = list(pp_layers or [])
    stages = max(1, len(pp_layers))
    for pp_rank in range(stages):
        for tp_rank in range(tp):
            model = {}
            for module, (a, b) in factors.items():
                index = int(module.split(".")[1])
                stage, local = _stage(index, pp_layers)
                if stage != pp_rank:
                    continue
                name = f"videodit_blocks.{local}." + module.split(".", 2)[2]
                part_a, part_b = _cut(module, a, b, tp, tp_rank)
                model[f"{name}.lora_A.default.weight"] = part_a.clone().to(torch.bfloat16)
                model[f"{name}.lora_B.default.weight"] = part_b.clone().to(torch.bfloat16)
            if edit:
                edit(model, pp_rank, tp_rank)
            rank_dir = f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if stages > 1 else "")
            file = path / f"iter_{iteration:07d}" / rank_dir / "model_optim_rng.pt"
            file.parent.mkdir(parents=True)
            torch.save({"model": model, "iteration": iteration, "checkpoint_version": 3.0,
                        "args": argparse.Namespace(lora_r=4, tensor_model_parallel_size=tp)},
                       file)
    (path / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    return path


def as_stored(factors: dict) -> dict:
    """The factors as the LoRA files hold them (bf16), back in fp32."""
    return {m: (a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float())
            for m, (a, b) in factors.items()}


def reference(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    """W + s * B @ A in float32, cast back: the float32 reference the issue names."""
    return (weight.float() + s * (b.float() @ a.float())).to(weight.dtype)


def write_hf_lora(folder: Path, factors: dict, rank: int, alpha: float | None,
                  cogvx_record: bool = True) -> Path:
    """A diffusers LoRA written as cogvx's diffusers training worker writes it.

    The file comes from diffusers' own ``CogVideoXPipeline.save_lora_weights`` with the
    metadata the worker passes (``train_worker.save_weights``), so its keys
    (``transformer.<module>.lora_A.weight``) and metadata (``transformer.r``,
    ``transformer.lora_alpha``) are what real runs hold. ``cogvx_record`` adds the
    worker's ``lora.json``; ``alpha=None`` leaves both records out.
    """
    from diffusers import CogVideoXPipeline

    folder.mkdir(parents=True, exist_ok=True)
    layers = {}
    for module, (a, b) in factors.items():
        layers[f"{module}.lora_A.weight"] = a.contiguous()
        layers[f"{module}.lora_B.weight"] = b.contiguous()
    metadata = None
    if alpha is not None:
        targets = sorted({m.split(".", 3)[-1] for m in factors})
        metadata = {"r": rank, "lora_alpha": alpha, "target_modules": targets}
    CogVideoXPipeline.save_lora_weights(str(folder), transformer_lora_layers=layers,
                                        transformer_lora_adapter_metadata=metadata)
    if cogvx_record and alpha is not None:
        (folder / "lora.json").write_text(json.dumps({"rank": rank, "alpha": alpha}))
    return folder
