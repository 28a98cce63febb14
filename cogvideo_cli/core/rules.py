"""Every cross-field rule checked before a launch, one function each.

A backend gathers the facts of a planned run into :class:`Facts`; :func:`check` runs every
rule and raises one error listing every problem, before any process starts and before any
byte is written. Each rule returns ``None`` or a :class:`Problem` naming the bad value and
the fix. Rules that only read options are usage rules (exit 2); rules that look at files
and folders are checks (exit 1).

Before a backend plans anything, :func:`check_values` runs the value rules on the chosen
:class:`~cogvideo_cli.core.config.RunSettings`: a zero, negative or NaN option is refused by
name instead of being replaced by a default or written into ``launch.sh``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.errors import CheckError, CheckpointError, UsageError, plural
from cogvideo_cli.core.variants import (Problem, Variant, balanced_split, check_frames,
                                        check_pp_layers, check_resolution,
                                        check_tensor_parallel, latent_shape,
                                        sequence_length)

DTYPES = ("int32", "float64", "float32", "float16", "fp32", "fp16", "half", "bf16")
MAX_PROMPTS = 100
T5_WEIGHT_SUFFIXES = (".safetensors", ".bin")
TOKENIZER_FILES = ("spiece.model",)


@dataclass
class Facts:
    """What the rules look at: the resolved options and the rendered configs' values."""

    kind: str
    variant: Variant
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    single_host: bool = False
    tp: int = 1
    pp_layers: list[int] = field(default_factory=list)
    pp_from_checkpoint: bool = False  # stage sizes read from the checkpoint, not given
    cp: int = 1
    sp: bool = False
    sp_requested: bool = False
    vae_cp: int = 1
    encoder_dp: bool = False
    layerzero: bool = False
    zero3_size: int | None = None
    mbs: int = 1
    gbs: int = 1
    frames: int = 17
    height: int = 480
    width: int = 720
    text_length: int = 226
    model_max_length: int | None = None
    input_size: list[int] | None = None
    data_batch_size: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    dtypes: dict[str, Any] = field(default_factory=dict)
    features: Path | None = None
    load: Path | None = None
    data_path: Path | None = None
    vae: Path | None = None
    t5: Path | None = None
    tokenizer: Path | None = None
    root: Path | None = None
    entries: list[str] = field(default_factory=list)
    prompts: Path | None = None
    images: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    lr: float | None = None
    min_lr: float | None = None
    backend: str = "mindspeed"

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def pp(self) -> int:
        return max(1, len(self.pp_layers))

    @property
    def dp(self) -> int:
        return max(1, self.world // (self.tp * self.pp * self.cp))

    @property
    def training(self) -> bool:
        return self.kind in ("train", "lora")


Rule = Callable[[Facts], "Problem | None"]
ValueRule = Callable[[RunSettings], "Problem | None"]


# --- chosen values (usage, before planning) ----------------------------------------------

_COUNTS = (("--tp", "tp"), ("--pp", "pp"), ("--cp", "cp"), ("--vae-cp", "vae_cp"),
           ("--zero3-size", "zero3_size"), ("--mbs", "mbs"), ("--gbs", "gbs"),
           ("--grad-acc", "grad_acc"), ("--iters", "iters"),
           ("--save-interval", "save_interval"), ("--frames", "frames"),
           ("--height", "height"), ("--width", "width"),
           ("--nproc-per-node", "nproc_per_node"), ("--nnodes", "nnodes"),
           ("--lora-r", "lora_r"), ("--steps", "steps"), ("--fps", "fps"))
MAX_SEED = 2**32 - 1  # numpy's seed range; Megatron seeds numpy with it


def value_counts(s: RunSettings) -> Problem | None:
    """Every size, count, interval and rate that was given is at least 1."""
    for label, key in _COUNTS:
        value = getattr(s, key)
        if value is not None and value < 1:
            return Problem(f"{label} {value} is not positive", f"use {label} 1 or more",
                           value)
    return None


def value_ranks(s: RunSettings) -> Problem | None:
    """The node rank and the seed are non-negative; the seed fits numpy's range."""
    if s.node_rank < 0:
        return Problem(f"--node-rank {s.node_rank} is negative",
                       "use --node-rank 0 on the first node, 1 on the next, ...", s.node_rank)
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        return Problem(f"--seed {s.seed} is outside 0..{MAX_SEED}",
                       "use e.g. --seed 42", s.seed)
    return None


def value_port(s: RunSettings) -> Problem | None:
    """The rendezvous port is a TCP port number."""
    if s.master_port is not None and not 1 <= s.master_port <= 65535:
        return Problem(f"--master-port {s.master_port} is not a TCP port (1..65535)",
                       "use e.g. --master-port 29505", s.master_port)
    return None


def value_learning_rate(s: RunSettings) -> Problem | None:
    """``--lr`` is finite and positive; ``--min-lr`` finite, not negative, at most --lr."""
    if s.lr is not None and not (math.isfinite(s.lr) and s.lr > 0):
        return Problem(f"--lr {s.lr} is not a positive number", "use e.g. --lr 1e-5", s.lr)
    if s.min_lr is not None and not (math.isfinite(s.min_lr) and s.min_lr >= 0):
        return Problem(f"--min-lr {s.min_lr} is not a number of 0 or more",
                       "use e.g. --min-lr 0, or leave it out (it follows --lr)", s.min_lr)
    if s.lr is not None and s.min_lr is not None and s.min_lr > s.lr:
        return Problem(f"--min-lr {s.min_lr} exceeds --lr {s.lr}",
                       f"use --min-lr {s.lr} or lower", s.min_lr)
    return None


def value_lora(s: RunSettings) -> Problem | None:
    """LoRA alpha is finite and positive; dropout is a probability below 1."""
    if s.lora_alpha is not None and not (math.isfinite(s.lora_alpha) and s.lora_alpha > 0):
        return Problem(f"--lora-alpha {s.lora_alpha} is not a positive number",
                       "use e.g. --lora-alpha 64 (scale = alpha / rank)", s.lora_alpha)
    if not (math.isfinite(s.lora_dropout) and 0 <= s.lora_dropout < 1):
        return Problem(f"--lora-dropout {s.lora_dropout} is not a probability in [0, 1)",
                       "use e.g. --lora-dropout 0.0 or 0.1", s.lora_dropout)
    return None


def value_guidance(s: RunSettings) -> Problem | None:
    """The guidance scale is a finite number of 0 or more."""
    if s.guidance is not None and not (math.isfinite(s.guidance) and s.guidance >= 0):
        return Problem(f"--guidance {s.guidance} is not a number of 0 or more",
                       "use e.g. --guidance 6.0", s.guidance)
    return None


VALUE_RULES: tuple[ValueRule, ...] = (
    value_counts, value_ranks, value_port, value_learning_rate, value_lora, value_guidance,
)


def check_values(s: RunSettings) -> None:
    """Refuse zero, negative and non-finite options by name before anything is planned.

    The CLI's typed options already refuse most of them; this catches NaN and settings
    that reach the engine another way (recorded runs, Python callers).
    """
    _raise([p for p in (rule(s) for rule in VALUE_RULES) if p is not None], UsageError)


# --- parallel layout (usage) -------------------------------------------------------------

def rule_positive_sizes(f: Facts) -> Problem | None:
    """Every size and count is at least 1; the checks derived from them need it."""
    for label, value in (("--tp", f.tp), ("--cp", f.cp), ("--vae-cp", f.vae_cp),
                         ("--mbs", f.mbs), ("--gbs", f.gbs),
                         ("--nproc-per-node", f.nproc_per_node), ("--nnodes", f.nnodes),
                         ("--frames", f.frames), ("--height", f.height),
                         ("--width", f.width), ("predictor.text_length", f.text_length)):
        if value < 1:
            return Problem(f"{label} {value} is not positive",
                           _POSITIVE_FIXES.get(label, f"use {label} 1 or more"), value)
    return None


_POSITIVE_FIXES = {"--frames": "use 4k+1 frames, e.g. --frames 17",
                   "--height": "use a multiple of 16, e.g. --height 480",
                   "--width": "use a multiple of 16, e.g. --width 720",
                   "predictor.text_length": "use 226 (224 for 1.5 inference)"}


def rule_world_divisible(f: Facts) -> Problem | None:
    """The world size must be divisible by TP x PP x CP."""
    model = f.tp * f.pp * f.cp
    if model < 1 or f.world % model:
        return Problem(
            f"the process count {f.world} ({f.nproc_per_node} per node x "
            f"{plural(f.nnodes, 'node')}) is not divisible by TP x PP x CP = "
            f"{f.tp} x {f.pp} x {f.cp} = {model}",
            f"use a multiple of {model} processes, or smaller parallel sizes", f.world)
    return None


def rule_heads_tp(f: Facts) -> Problem | None:
    """The head count must be divisible by TP."""
    return check_tensor_parallel(f.variant, f.tp)


def rule_sequence_parallel(f: Facts) -> Problem | None:
    """``--sp`` splits the sequence over the TP group; with TP 1 Megatron drops it."""
    if f.sp_requested and f.tp == 1:
        return Problem("--sp needs --tp 2 or more (with TP 1 Megatron silently disables it)",
                       "drop --sp, or raise --tp", f.tp)
    return None


def rule_sequence_divisible(f: Facts) -> Problem | None:
    """CP must divide the token count; with SP, CP x TP must."""
    if not f.training or not _clip_valid(f):
        return None  # a wrong clip is reported by itself; its token count means nothing
    seq = sequence_length(f.variant, f.frames, f.height, f.width, f.text_length)
    split = f.cp * (f.tp if f.sp else 1)
    if split > 1 and seq % split:
        what = "CP x TP" if f.sp else "CP"
        good = [d for d in (1, 2, 4, 8, 16, 32, 64) if seq % d == 0]
        fix = (f"choose {what} among {', '.join(map(str, good))}" if len(good) > 1 else
               "change --frames, --height or --width so the token count is even, or use "
               + ("--cp 1 and --no-sp" if f.sp else "--cp 1"))
        return Problem(
            f"the sequence of {seq} tokens ({f.text_length} text + video for {f.frames} "
            f"frames at {f.height}x{f.width}) is not divisible by {what} = {split}",
            fix, split)
    return None


def _clip_valid(f: Facts) -> bool:
    """Whether the clip passes its own rules, so token counts and shapes mean something."""
    return rule_frames(f) is None and rule_resolution(f) is None


def rule_pp_stages(f: Facts) -> Problem | None:
    """Stage sizes: one per stage, each at least one layer, summing to the layer count."""
    if len(f.pp_layers) <= 1:
        return None
    problem = check_pp_layers(f.variant, f.pp_layers)
    total, wanted = sum(f.pp_layers), f.variant.num_layers
    if problem is None or not f.pp_from_checkpoint or total == wanted:
        return problem
    # the stages came from the checkpoint: say so, not "--pp-layers", which was never given
    stages = " ".join(map(str, f.pp_layers))
    return Problem(
        f"the checkpoint {f.load} has {total} layers (pipeline stages {stages}), but the "
        f"{f.variant.name} model has {wanted}",
        f"pass --set predictor.num_layers={total} to build a {total}-layer model, or load "
        f"a {wanted}-layer checkpoint", total)


def rule_pp_shapes(f: Facts) -> Problem | None:
    """With PP, ``input_size`` must be the exact latent shape and data needs batch_size."""
    if f.pp <= 1 or not f.training or not _clip_valid(f):
        return None
    exact = list(latent_shape(f.variant, f.frames, f.height, f.width))
    if f.features is None and list(f.input_size or []) != exact:
        return Problem(
            f"with pipeline parallel, predictor.input_size must be the exact latent shape "
            f"{exact} for {f.frames} frames at {f.height}x{f.width}",
            f"drop the --set of predictor.input_size (cogvx derives {exact})", f.input_size)
    if f.data_batch_size != f.mbs:
        return Problem(
            f"with pipeline parallel, MindSpeed-MM reads dataloader_param.batch_size; it "
            f"must equal --mbs {f.mbs}", "drop the --set of dataloader_param.batch_size",
            f.data_batch_size)
    for flag in ("optimization-level", "use-multiparameter-pipeline-model-parallel"):
        if not f.args.get(flag):
            return Problem(f"pipeline parallel needs --{flag}; without it the stages "
                           "exchange the wrong tensors", f"drop the --set of args.{flag}",
                           f.args.get(flag))
    return None


def rule_batch(f: Facts) -> Problem | None:
    """The global batch must be a multiple of MBS x DP."""
    step = f.mbs * f.dp
    if step < 1:
        return None  # rule_positive_sizes names the size that is not positive
    if f.gbs % step:
        low = max(step, f.gbs - f.gbs % step)
        return Problem(
            f"--gbs {f.gbs} is not a multiple of MBS x DP = {f.mbs} x {f.dp} = {step}",
            f"use --gbs {low} or {low + step}, or --grad-acc", f.gbs)
    return None


def rule_encoder_dp(f: Facts) -> Problem | None:
    """Encoder-DP works neither with PP, nor with VAE-CP, LayerZero or feature data."""
    if not f.encoder_dp:
        return None
    clashes = [(f.pp > 1, "pipeline parallel (MindSpeed-MM asserts)"),
               (f.vae_cp > 1, "VAE context parallel"), (f.layerzero, "--layerzero"),
               (f.features is not None, "--features (it crashes without the T5 model)")]
    for clash, what in clashes:
        if clash:
            return Problem(f"Encoder-DP cannot be combined with {what}",
                           "pass --no-encoder-dp, or drop the other option", True)
    return None


def rule_layerzero(f: Facts) -> Problem | None:
    """LayerZero needs TP 1 and PP 1, and a ZeRO-3 group dividing world / PP."""
    if not f.layerzero:
        return None
    if f.tp > 1 or f.pp > 1:
        return Problem(f"--layerzero needs --tp 1 and no pipeline parallel "
                       f"(got TP {f.tp}, PP {f.pp})", "use --tp 1 without --pp", f.tp)
    size = min(f.zero3_size or 8, f.world // f.pp)
    if size < 1 or (f.world // f.pp) % size:
        return Problem(f"the LayerZero group size {size} does not divide "
                       f"{plural(f.world, 'process')}",
                       "pick --zero3-size dividing the process count", size)
    return None


def rule_vae_cp(f: Facts) -> Problem | None:
    """VAE-CP k must be a multiple or a divisor of TP x PP x CP, and divide the world."""
    k = f.vae_cp
    if k == 1 or not f.training:
        return None
    groups = f.tp * f.pp * f.cp
    if f.world % k:
        return Problem(f"--vae-cp {k} does not divide {plural(f.world, 'process')}",
                       "pick a divisor of the process count", k)
    if k % groups and groups % k:
        return Problem(
            f"--vae-cp {k} is neither a multiple nor a divisor of TP x PP x CP = {groups}; "
            "the VAE encoder raises NotImplementedError for that ratio",
            f"use --vae-cp {groups}", k)
    return None


def rule_overlap_param_gather(f: Facts) -> Problem | None:
    """``--overlap-param-gather`` needs the distributed optimizer and overlapped reduce."""
    if not f.args.get("overlap-param-gather"):
        return None
    for flag in ("use-distributed-optimizer", "overlap-grad-reduce"):
        if not f.args.get(flag):
            return Problem(f"--overlap-param-gather needs --{flag}",
                           f"drop --set args.overlap-param-gather, or set args.{flag}=true",
                           flag)
    return None


def rule_ckpt_format(f: Facts) -> Problem | None:
    """Training must save ``--ckpt-format torch``; mm-convert cannot read torch_dist."""
    if f.backend != "mindspeed":
        return None
    if f.training and f.args.get("ckpt-format") != "torch":
        return Problem("checkpoints must be saved with --ckpt-format torch (Megatron's "
                       "default torch_dist cannot be converted or merged)",
                       "drop the --set of args.ckpt-format", f.args.get("ckpt-format"))
    return None


def rule_lr(f: Facts) -> Problem | None:
    """The learning rate is finite and positive; the minimum may not exceed it."""
    if f.lr is not None and not (math.isfinite(f.lr) and f.lr > 0):
        return Problem(f"the learning rate {f.lr} is not a positive number",
                       "use e.g. --lr 1e-5", f.lr)
    if f.min_lr is not None and not (math.isfinite(f.min_lr) and f.min_lr >= 0):
        return Problem(f"the minimum learning rate {f.min_lr} is not a number of 0 or more",
                       "use e.g. --min-lr 0", f.min_lr)
    if f.lr is not None and f.min_lr is not None and f.min_lr > f.lr:
        return Problem(f"--min-lr {f.min_lr} exceeds --lr {f.lr}",
                       f"use --min-lr {f.lr} or lower", f.min_lr)
    return None


# --- clip and configs (usage) -------------------------------------------------------------

def rule_frames(f: Facts) -> Problem | None:
    """Frames 4k+1; an even latent count for 1.5 training."""
    if f.features is not None:
        return None
    return check_frames(f.variant, f.frames, training=f.training)


def rule_resolution(f: Facts) -> Problem | None:
    """Height and width multiples of 16."""
    return check_resolution(f.variant, f.height, f.width)


def rule_text_length(f: Facts) -> Problem | None:
    """``predictor.text_length`` must equal the tokenizer's ``model_max_length``."""
    if f.model_max_length is not None and f.text_length != f.model_max_length:
        return Problem(
            f"predictor.text_length {f.text_length} differs from the tokenizer's "
            f"model_max_length {f.model_max_length}; prompts would be cut at the wrong token",
            "set both to the same value (226, or 224 for 1.5 inference)", f.text_length)
    return None


def rule_dtypes(f: Facts) -> Problem | None:
    """Every ``dtype`` in the configs must be a name MindSpeed-MM accepts."""
    for key, value in f.dtypes.items():
        if value not in DTYPES:
            return Problem(f"{key} {value!r} is not a dtype MindSpeed-MM reads",
                           f"use one of {', '.join(DTYPES)}", value)
    return None


def rule_device_connections(f: Facts) -> Problem | None:
    """Megatron refuses TP > 1 (and CP > 1) unless CUDA_DEVICE_MAX_CONNECTIONS is 1."""
    value = f.env.get("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    if (f.tp > 1 or f.cp > 1) and value != "1":
        return Problem(f"CUDA_DEVICE_MAX_CONNECTIONS={value} with TP {f.tp} / CP {f.cp}; "
                       "Megatron requires 1 there", "drop --env CUDA_DEVICE_MAX_CONNECTIONS",
                       value)
    return None


def rule_nodes(f: Facts) -> Problem | None:
    """More than one node: 0 <= node rank < nodes and a master address others can reach."""
    if not 0 <= f.node_rank < f.nnodes:
        return Problem(f"--node-rank {f.node_rank} is outside 0..{f.nnodes - 1}",
                       f"use a node rank from 0 to {f.nnodes - 1}", f.node_rank)
    if f.nnodes > 1 and not f.single_host and _is_loopback(f.master_addr):
        return Problem(
            f"--master-addr {f.master_addr} is a loopback address; the other "
            f"{plural(f.nnodes - 1, 'node')} cannot reach it",
            "pass node 0's address on the cluster network as --master-addr", f.master_addr)
    return None


def _is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# a size that is not positive makes every rule derived from it meaningless: report it alone
ROOT_RULES: tuple[Rule, ...] = (rule_positive_sizes,)

USAGE_RULES: tuple[Rule, ...] = (
    rule_world_divisible, rule_heads_tp, rule_sequence_parallel,
    rule_sequence_divisible, rule_pp_stages, rule_pp_shapes, rule_batch, rule_encoder_dp,
    rule_layerzero, rule_vae_cp, rule_overlap_param_gather, rule_ckpt_format, rule_lr,
    rule_frames, rule_resolution, rule_text_length, rule_dtypes, rule_device_connections,
    rule_nodes,
)


# --- files and folders (checks) -----------------------------------------------------------

def rule_checkout(f: Facts) -> Problem | None:
    """The MindSpeed-MM checkout exists and holds the entry scripts."""
    if f.root is None:
        return Problem("no MindSpeed-MM checkout is known",
                       "pass --mindspeed-mm DIR (the repository root)", None)
    if not f.root.is_dir():
        return Problem(f"the MindSpeed-MM checkout {f.root} does not exist",
                       "pass --mindspeed-mm DIR (the repository root)", str(f.root))
    for entry in f.entries:
        if not (f.root / entry).is_file():
            return Problem(f"{f.root} has no {entry}; it is not a MindSpeed-MM checkout",
                           "pass the repository root as --mindspeed-mm", str(f.root / entry))
    return None


def rule_vae(f: Facts) -> Problem | None:
    """The VAE is one file (``3d-vae.pt``)."""
    if f.features is not None and f.training:
        return None
    if f.vae is None or not f.vae.is_file():
        return Problem("the VAE file is missing", "pass --vae PATH/3d-vae.pt, or run "
                       "`cogvx download`", None if f.vae is None else str(f.vae))
    return None


def rule_t5(f: Facts) -> Problem | None:
    """The T5 folder holds ``config.json`` and weight files."""
    if f.features is not None and f.training:
        return None
    if f.t5 is None or not f.t5.is_dir():
        return Problem("the T5 text-encoder folder is missing",
                       "pass --t5 DIR (CogVideoX's text_encoder folder)",
                       None if f.t5 is None else str(f.t5))
    if not (f.t5 / "config.json").is_file():
        return Problem(f"the T5 folder {f.t5} has no config.json",
                       "pass the folder holding config.json and the weights", str(f.t5))
    if not any(p.suffix in T5_WEIGHT_SUFFIXES for p in f.t5.iterdir()):
        return Problem(f"the T5 folder {f.t5} has no .safetensors or .bin weights",
                       "download the text encoder again", str(f.t5))
    return None


def rule_tokenizer(f: Facts) -> Problem | None:
    """The tokenizer folder holds ``spiece.model``."""
    if f.features is not None and f.training:
        return None
    if f.tokenizer is None or not f.tokenizer.is_dir():
        return Problem("the T5 tokenizer folder is missing",
                       "pass --tokenizer DIR (CogVideoX's tokenizer folder)",
                       None if f.tokenizer is None else str(f.tokenizer))
    for name in TOKENIZER_FILES:
        if not (f.tokenizer / name).is_file():
            return Problem(f"the tokenizer folder {f.tokenizer} has no {name}",
                           "pass the folder holding spiece.model", str(f.tokenizer))
    return None


def rule_data(f: Facts) -> Problem | None:
    """The dataset exists and has at least MBS x data-parallel-group samples."""
    if not f.training and f.kind != "extract":
        return None
    if f.data_path is None or not f.data_path.is_file():
        what = "feature data.jsonl" if f.features is not None else "data.jsonl"
        return Problem(f"the {what} is missing",
                       "run `cogvx prepare-data`, or pass --data FILE",
                       None if f.data_path is None else str(f.data_path))
    count = _count_lines(f.data_path)
    group = f.world if f.encoder_dp else f.dp
    need = f.mbs * group
    if count < need:
        return Problem(
            f"{f.data_path} has {plural(count, 'sample')}, fewer than MBS x data-parallel "
            f"ranks = "
            f"{f.mbs} x {group} = {need}; MindSpeed-MM would hang waiting for a batch",
            "add samples, or lower --mbs / the number of processes", count)
    return None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def rule_prompts(f: Facts) -> Problem | None:
    """Prompts file exists (MM uses a missing path as the prompt), at most 100 prompts."""
    if f.kind != "infer":
        return None
    if f.prompts is None or not f.prompts.is_file():
        return Problem("the prompts file does not exist; MindSpeed-MM would use the path "
                       "itself as the prompt", "pass --prompts FILE, one prompt a line",
                       None if f.prompts is None else str(f.prompts))
    count = len(_lines(f.prompts))
    if count == 0:
        return Problem(f"{f.prompts} holds no prompts (only empty lines)",
                       "write one prompt a line", None)
    if count > MAX_PROMPTS:
        return Problem(f"{f.prompts} has {count} prompts; MindSpeed-MM reads at most "
                       f"{MAX_PROMPTS}", f"split it into files of at most {MAX_PROMPTS}",
                       count)
    if count % f.mbs:
        return Problem(f"{plural(count, 'prompt')} cannot be split into micro-batches of "
                       f"--mbs {f.mbs}", "use --mbs 1", count)
    return None


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rule_images(f: Facts) -> Problem | None:
    """i2v inference: one existing image per prompt."""
    if f.kind != "infer" or not f.variant.is_i2v:
        return None
    if f.images is None or not f.images.is_file():
        return Problem(f"{f.variant.name} inference needs --images FILE (one image path a "
                       "line, or one image)", "pass --images FILE",
                       None if f.images is None else str(f.images))
    if f.images.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff"):
        images = [f.images]
    else:
        images = [Path(line.strip()) for line in _lines(f.images)]
    prompts = len(_lines(f.prompts)) if f.prompts and f.prompts.is_file() else 0
    if len(images) != prompts:
        return Problem(f"{plural(len(images), 'image')} for {plural(prompts, 'prompt')}; "
                       "MindSpeed-MM needs "
                       "one image per prompt", "give as many image lines as prompts",
                       len(images))
    for image in images:
        if not image.is_file():
            return Problem(f"the image {image} does not exist",
                           "fix the path (relative paths are read from the current folder)",
                           str(image))
    return None


def rule_checkpoint(f: Facts) -> Problem | None:
    """The checkpoint matches the layout and covers the model (no silent random weights)."""
    if f.kind == "extract":
        return None
    if f.load is None:
        return Problem("no checkpoint to load; MindSpeed-MM would start from random "
                       "weights", "pass --load DIR, or run `cogvx convert` first", None)
    if not f.load.is_dir():
        return Problem(f"the checkpoint folder {f.load} does not exist",
                       "pass --load DIR, or run `cogvx convert` first", str(f.load))
    try:
        from cogvideo_cli.checkpoint.layout import read_layout
        from cogvideo_cli.checkpoint.verify import verify_checkpoint
    except ImportError:  # pragma: no cover - the checkpoint package is part of cogvx
        return _basic_layout(f)
    try:
        layout = read_layout(f.load)
        problem = _layout_problem(f, layout.tp, list(layout.pp_layers or []))
        if problem is not None:
            return problem
        verify_checkpoint(f.load, variant=f.variant, tp=f.tp,
                          pp_layers=f.pp_layers if f.pp > 1 else None)
    except CheckpointError as exc:
        return Problem(f"the checkpoint {f.load} cannot be used: {exc.message}",
                       exc.fix or "convert it again with `cogvx convert`",
                       exc.value if exc.value is not None else str(f.load))
    return None


def _layout_problem(f: Facts, tp: int, pp_layers: list[int]) -> Problem | None:
    ours = f.pp_layers if f.pp > 1 else []
    theirs = pp_layers if len(pp_layers) > 1 else []
    if tp != f.tp:
        fix = (_resplit_for_inference(f) if f.kind == "infer" else
               f"pass --tp {tp}, or convert it again for TP {f.tp}")
        return Problem(f"the checkpoint {f.load} is split for TP {tp}, the run uses TP "
                       f"{f.tp}", fix, tp)
    if theirs != ours:
        shown = " ".join(map(str, theirs)) or "none (PP 1)"
        if f.kind == "infer":
            fix = _resplit_for_inference(f)
        elif theirs:
            fix = f"pass --pp-layers {' '.join(map(str, theirs))}"
        else:
            fix = "drop --pp / --pp-layers, or convert the checkpoint for them"
        return Problem(f"the checkpoint's pipeline stages are {shown}; the run uses "
                       f"{' '.join(map(str, ours)) or 'none (PP 1)'}", fix, ours)
    return None


def _resplit_for_inference(f: Facts) -> str:
    """Inference has no --tp / --pp: the fix is a TP 1, PP 1 copy of the checkpoint."""
    source = shlex.quote(str(f.load))
    target = shlex.quote(f"{f.load}-tp1")
    return (f"inference runs on TP 1 without pipeline stages; make a copy for it: "
            f"cogvx convert resplit --source {source} --target {target} --tp 1")


def _basic_layout(f: Facts) -> Problem | None:
    """The structural part of the layout check, used only without the checkpoint package."""
    tracker = f.load / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        return Problem(f"{f.load} has no latest_checkpointed_iteration.txt; Megatron would "
                       "start from random weights", "convert the checkpoint again",
                       str(f.load))
    name = tracker.read_text().strip()
    sub = f.load / (name if name == "release" else f"iter_{int(name):07d}")
    for t in range(f.tp):
        for p in range(f.pp):
            rank = f"mp_rank_{t:02d}" + (f"_{p:03d}" if f.pp > 1 else "")
            if not (sub / rank / "model_optim_rng.pt").is_file():
                return Problem(f"{sub} has no {rank}/model_optim_rng.pt for TP {f.tp}, "
                               f"PP {f.pp}", "convert for this layout", str(sub))
    return None


def rule_not_lora_only(f: Facts) -> Problem | None:
    """Inference cannot load a LoRA-only checkpoint: it would run on random weights."""
    if f.kind != "infer" or f.load is None or not f.load.is_dir():
        return None
    meta = f.load / "cogvx.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("lora_only"):
                return _lora_problem(f)
        except ValueError:
            pass
    if lora_only_checkpoint(f.load):
        return _lora_problem(f)
    return None


def _lora_problem(f: Facts) -> Problem:
    return Problem(f"{f.load} holds only LoRA weights; inference would load nothing and "
                   "sample from random weights",
                   "merge it first: cogvx merge-lora, then pass the merged folder to --load",
                   str(f.load))


def lora_only_checkpoint(path: Path) -> bool:
    """Whether the first model file of a checkpoint holds LoRA tensors only."""
    files = sorted(path.glob("*/mp_rank_*/model_optim_rng.pt"))
    if not files:
        return False
    from cogvideo_cli.checkpoint.safeload import load

    state = load(files[0], mmap=True)
    model = state.get("model", {}) if isinstance(state, dict) else {}
    keys = [k for k, v in model.items() if not k.endswith("_extra_state")]
    return bool(keys) and all("lora_" in k for k in keys)


FILE_RULES: tuple[Rule, ...] = (
    rule_checkout, rule_vae, rule_t5, rule_tokenizer, rule_data, rule_prompts, rule_images,
    rule_not_lora_only, rule_checkpoint,
)


def problems(facts: Facts) -> tuple[list[Problem], list[Problem]]:
    """Run every rule; returns (usage problems, file problems).

    File rules run only when the options are consistent: a checkpoint cannot match a
    layout that is itself wrong. They describe MindSpeed-MM's inputs; the diffusers
    backend's engine checks its own files while it plans.
    """
    usage = ([p for p in (rule(facts) for rule in ROOT_RULES) if p is not None]
             or [p for p in (rule(facts) for rule in USAGE_RULES) if p is not None])
    if usage or facts.backend != "mindspeed":
        return usage, []
    return [], [p for p in (rule(facts) for rule in FILE_RULES) if p is not None]


def check(facts: Facts) -> None:
    """Raise one error naming every problem; return quietly when the run can start."""
    usage, files = problems(facts)
    _raise(usage or files, UsageError if usage else CheckError)


def _raise(found: list[Problem], error: type[UsageError] | type[CheckError]) -> None:
    """One error for one problem; one listing every problem for several."""
    if not found:
        return
    if len(found) == 1:
        raise error(found[0].message, value=found[0].value, fix=found[0].fix)
    lines = [f"{len(found)} problems before launch:"]
    lines += [f"  - {p.message}\n    fix: {p.fix}" for p in found]
    raise error("\n".join(lines), fix="fix each problem above and rerun")


def pp_layers_for(variant: Variant, pp: int | None, pp_layers: list[int] | None,
                  checkpoint_layers: list[int] | None) -> list[int]:
    """The stage sizes to use: given, else the checkpoint's, else a balanced split."""
    if pp_layers:
        return list(pp_layers)
    if checkpoint_layers and len(checkpoint_layers) > 1 and pp in (None,
                                                                  len(checkpoint_layers)):
        return list(checkpoint_layers)
    if pp and pp > 1:
        return balanced_split(variant.num_layers, pp)
    return []
