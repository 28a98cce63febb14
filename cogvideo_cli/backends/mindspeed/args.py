"""The entry scripts' flags and environment, as the official 2.3.0 scripts pass them.

Each builder returns an ordered ``flag -> value`` dict (see ``launch.plan.args_to_list``);
the order follows the scripts (GPT_ARGS, MM_ARGS, OUTPUT_ARGS) so a dry run reads like
them. cogvx adds ``--exit-on-missing-checkpoint`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Section 1.3.1: exported by the pretrain, LoRA and feature-extraction scripts.
TRAIN_ENV = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "ASCEND_SLOG_PRINT_TO_STDOUT": "0",
    "ASCEND_GLOBAL_LOG_LEVEL": "3",
    "TASK_QUEUE_ENABLE": "1",
    "COMBINED_ENABLE": "1",
    "CPU_AFFINITY_CONF": "1",
    "HCCL_CONNECT_TIMEOUT": "1200",
    "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
}
INFER_ENV = {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}
# cogvx's own: workers print through a pipe, so make them flush each line.
STREAM_ENV = {"PYTHONUNBUFFERED": "1"}


@dataclass
class TrainArgs:
    """The resolved values the training flags are made of."""

    variant: str
    tp: int
    pp: int
    cp: int
    mbs: int
    gbs: int
    lr: float
    min_lr: float
    iters: int
    load: str
    save: str
    mm_data: str
    mm_model: str
    mm_tool: str
    num_layers: int
    sp: bool
    seed: int | None = None
    save_interval: int = 10000
    layerzero_config: str | None = None
    lora: dict[str, Any] = field(default_factory=dict)


def _parallel(a: TrainArgs, algo: bool = True) -> dict[str, Any]:
    return {
        "tensor-model-parallel-size": a.tp,
        "pipeline-model-parallel-size": a.pp,
        "context-parallel-size": a.cp,
        "context-parallel-algo": "ulysses_cp_algo" if algo else None,
        "micro-batch-size": a.mbs,
        "global-batch-size": a.gbs,
    }


def _optimizer(a: TrainArgs) -> dict[str, Any]:
    return {
        "lr": a.lr, "min-lr": a.min_lr, "adam-beta1": "0.9", "adam-beta2": "0.95",
        "adam-eps": "1e-8", "lr-decay-style": "constant", "weight-decay": "1e-4",
        "lr-warmup-init": a.lr, "lr-warmup-iters": 0, "clip-grad": "1.0",
        "train-iters": a.iters, "no-gradient-accumulation-fusion": True, "load": a.load,
        "no-load-optim": True, "no-load-rng": True, "no-save-optim": True,
        "no-save-rng": True, "bf16": True,
    }


def _mm_and_output(a: TrainArgs) -> dict[str, Any]:
    return {
        "mm-data": a.mm_data, "mm-model": a.mm_model, "mm-tool": a.mm_tool,
        "log-interval": 1, "save-interval": a.save_interval, "eval-interval": 10000,
        "eval-iters": 10, "save": a.save, "ckpt-format": "torch",
        "distributed-backend": "nccl", "exit-on-missing-checkpoint": True,
    }


def pretrain_args(a: TrainArgs) -> dict[str, Any]:
    """``pretrain_cogvideox_*.sh`` GPT_ARGS + MM_ARGS + OUTPUT_ARGS."""
    args = {**_parallel(a), **_optimizer(a)}
    args.update({
        "qk-layernorm": True,
        "recompute-granularity": "full", "recompute-method": "block",
        "recompute-num-layers": a.num_layers,
        "use-distributed-optimizer": True, "overlap-grad-reduce": True,
        "overlap-param-gather": a.variant != "t2v-1.0",
        "allow-tf32": True, "num-workers": 8, "sequence-parallel": a.sp,
        "seed": a.seed if a.seed is not None else (42 if a.variant == "i2v-1.0" else None),
    })
    args.update(_pipeline(a))
    args.update(_layerzero(a))
    args.update(_mm_and_output(a))
    return args


def lora_args(a: TrainArgs) -> dict[str, Any]:
    """``finetune_cogvideox_lora_*.sh``: no recompute, distributed optimizer or SP."""
    args = {**_parallel(a), **_optimizer(a)}
    args.update({"allow-tf32": True, "num-workers": 8, "sequence-parallel": a.sp,
                 "seed": a.seed})
    args.update(_pipeline(a))
    args.update({"lora-r": a.lora["r"], "lora-alpha": _whole(a.lora["alpha"]),
                 "lora-dropout": _whole(a.lora["dropout"]),
                 "lora-target-modules": list(a.lora["target_modules"])})
    args.update(_mm_and_output(a))
    return args


def _whole(value: float) -> float | int:
    """64.0 -> 64, as the scripts write it."""
    return int(value) if float(value).is_integer() else value


def _pipeline(a: TrainArgs) -> dict[str, Any]:
    if a.pp <= 1:
        return {}
    return {"optimization-level": 2, "use-multiparameter-pipeline-model-parallel": True}


def _layerzero(a: TrainArgs) -> dict[str, Any]:
    if not a.layerzero_config:
        return {}
    return {"layerzero": True, "layerzero-config": a.layerzero_config}


def infer_args(*, world: int, load: str, mm_model: str, seed: int) -> dict[str, Any]:
    """``inference_cogvideox_*.sh``: the optimizer values are dummies Megatron requires."""
    return {
        "tensor-model-parallel-size": 1, "pipeline-model-parallel-size": 1,
        "context-parallel-size": 1, "micro-batch-size": 1, "global-batch-size": world,
        "lr": "2e-5", "min-lr": "2e-5", "train-iters": 5010, "weight-decay": 0,
        "clip-grad": 1, "adam-beta1": "0.9", "adam-beta2": "0.999",
        "no-gradient-accumulation-fusion": True, "no-load-optim": True,
        "no-load-rng": True, "no-save-optim": True, "no-save-rng": True, "fp16": True,
        "seed": seed, "load": load, "mm-model": mm_model,
        "exit-on-missing-checkpoint": True,
    }


def extract_args(*, world: int, mbs: int, mm_data: str, mm_model: str,
                 mm_tool: str) -> dict[str, Any]:
    """``feature_extraction_*.sh``: TP, PP and CP 1; GBS = world x MBS."""
    return {
        "tensor-model-parallel-size": 1, "pipeline-model-parallel-size": 1,
        "context-parallel-size": 1, "micro-batch-size": mbs,
        "global-batch-size": world * mbs, "num-workers": 8,
        "mm-data": mm_data, "mm-model": mm_model, "mm-tool": mm_tool,
    }
