"""A stand-in MindSpeed-MM checkout, weights, data and checkpoints for launch tests.

The entry scripts parse the real flag set (an unknown flag fails as Megatron's parser
does), read the rendered configs and the checkpoint, join a gloo process group, log
iterations the way Megatron does and exit with the code the test chose (environment
variables ``STANDIN_*``).
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

VALUE_FLAGS = [
    "tensor-model-parallel-size", "pipeline-model-parallel-size", "context-parallel-size",
    "context-parallel-algo", "micro-batch-size", "global-batch-size", "lr", "min-lr",
    "adam-beta1", "adam-beta2", "adam-eps", "lr-decay-style", "weight-decay",
    "lr-warmup-init", "lr-warmup-iters", "clip-grad", "train-iters", "load",
    "recompute-granularity", "recompute-method", "recompute-num-layers", "num-workers",
    "seed", "optimization-level", "layerzero-config", "mm-data", "mm-model", "mm-tool",
    "log-interval", "save-interval", "eval-interval", "eval-iters", "save", "ckpt-format",
    "distributed-backend", "lora-r", "lora-alpha", "lora-dropout",
]
BARE_FLAGS = [
    "no-gradient-accumulation-fusion", "no-load-optim", "no-load-rng", "no-save-optim",
    "no-save-rng", "bf16", "fp16", "qk-layernorm", "use-distributed-optimizer",
    "overlap-grad-reduce", "overlap-param-gather", "allow-tf32", "sequence-parallel",
    "use-multiparameter-pipeline-model-parallel", "layerzero", "exit-on-missing-checkpoint",
]

COMMON = r'''
import argparse, json, os, signal, sys, time
from pathlib import Path

VALUE_FLAGS = __VALUE__
BARE_FLAGS = __BARE__


def parse():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for name in VALUE_FLAGS:
        parser.add_argument("--" + name)
    for name in BARE_FLAGS:
        parser.add_argument("--" + name, action="store_true")
    parser.add_argument("--lora-target-modules", nargs="+")
    return parser.parse_args()


RANK = int(os.environ["RANK"])
WORLD = int(os.environ["WORLD_SIZE"])
MODE = os.environ.get("STANDIN_MODE", "ok")


def log(text):
    print(f"[rank {RANK}] {text}", flush=True)


def note_pid():
    folder = os.environ.get("STANDIN_PIDS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        Path(folder, f"{RANK}.pid").write_text(str(os.getpid()))


def join_group():
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.ones(1)
    dist.all_reduce(value)
    assert int(value.item()) == WORLD, value
    return dist


def load_checkpoint(load, tp, pp):
    tracker = Path(load, "latest_checkpointed_iteration.txt")
    if not tracker.is_file():
        log(f"WARNING: could not find the metadata file {tracker}")
        log("    will not load any checkpoints and will start from random")
        return None
    name = tracker.read_text()
    sub = "release" if name == "release" else f"iter_{int(name):07d}"
    tp_rank = RANK % tp
    rank_dir = f"mp_rank_{tp_rank:02d}" if pp == 1 else f"mp_rank_{tp_rank:02d}_000"
    import torch

    state = torch.load(Path(load, sub, rank_dir, "model_optim_rng.pt"), weights_only=False)
    log(f"loaded {len(state['model'])} tensors from {sub}/{rank_dir}")
    return state


def finish(dist):
    code = int(os.environ.get("STANDIN_EXIT_CODE", "0"))
    fail_rank = int(os.environ.get("STANDIN_FAIL_RANK", "-1"))
    if RANK == fail_rank and code:
        log(f"failing on purpose with {code}")
        os._exit(code)
    dist.barrier()
    dist.destroy_process_group()


def hang():
    while True:
        time.sleep(0.2)
'''

PRETRAIN = r'''
args = parse()
note_pid()
model = json.loads(Path(args.mm_model).read_text())
data = json.loads(Path(args.mm_data).read_text())
json.loads(Path(args.mm_tool).read_text())
predictor = model["predictor"]
tokenizer = data["dataset_param"]["tokenizer_config"]
assert predictor["text_length"] == tokenizer["model_max_length"]
assert Path(data["dataset_param"]["basic_parameters"]["data_path"]).is_file()
if args.lora_r:
    log(f"lora r={args.lora_r} alpha={args.lora_alpha} targets={args.lora_target_modules}")
if MODE == "random":
    log("WARNING: could not find the metadata file x")
    log("    will not load any checkpoints and will start from random")
    hang()
load_checkpoint(args.load, int(args.tensor_model_parallel_size),
                int(args.pipeline_model_parallel_size))
dist = join_group()
log(f"world {WORLD} tp {args.tensor_model_parallel_size} gbs {args.global_batch_size}")
if MODE == "hang":
    log("training forever")
    hang()
for it in range(int(args.train_iters) if RANK == WORLD - 1 else 0):  # Megatron: last rank
    log(f" iteration {it + 1}/{args.train_iters} | elapsed time per iteration (ms): "
        f"{200.0 + 10 * it:.1f} | lm loss: 0.5")
if RANK == 0:
    iteration = f"iter_{int(args.train_iters):07d}"
    folder = Path(args.save, iteration, "mp_rank_00")
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    torch.save({"model": {}, "iteration": int(args.train_iters)},
               folder / "model_optim_rng.pt")
    Path(args.save, "latest_checkpointed_iteration.txt").write_text(args.train_iters)
finish(dist)
'''

INFERENCE = r'''
args = parse()
note_pid()
config = json.loads(Path(args.mm_model).read_text())
prompts = Path(config["prompt"]).read_text().splitlines()
if "image" in config:
    images = Path(config["image"]).read_text().splitlines()
    assert len(images) == len(prompts) and all(Path(i).is_file() for i in images)
load_checkpoint(args.load, 1, 1)
dist = join_group()
out = Path(config["save_path"])
out.mkdir(parents=True, exist_ok=True)
for index in range(RANK, len(prompts), WORLD):
    (out / f"video_{index}.mp4").write_bytes(b"stand-in")
    log(f"wrote video_{index}.mp4 for {prompts[index][:30]!r}")
finish(dist)
'''

EXTRACT = r'''
args = parse()
config = json.loads(Path(args.mm_tool).read_text())
save = Path(config["sorafeature"]["save_path"])
(save / "features").mkdir(parents=True, exist_ok=True)
dist = join_group()
if RANK == 0:
    data = json.loads(Path(args.mm_data).read_text())
    source = Path(data["dataset_param"]["basic_parameters"]["data_path"])
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    with open(save / "data.jsonl", "w") as handle:
        for row in rows:
            row["file"] = "features/" + row["file"].replace(".", "_") + ".pt"
            handle.write(json.dumps(row) + "\n")
finish(dist)
'''


def _script(body: str) -> str:
    common = (COMMON.replace("__VALUE__", repr(VALUE_FLAGS))
              .replace("__BARE__", repr(BARE_FLAGS)))
    return common + body


def make_checkout(root: Path) -> Path:
    """A MindSpeed-MM-shaped folder with the three entry scripts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pretrain_sora.py").write_text(_script(PRETRAIN))
    (root / "inference_sora.py").write_text(_script(INFERENCE))
    extract = root / "mindspeed_mm" / "tools" / "feature_extraction" / "get_sora_feature.py"
    extract.parent.mkdir(parents=True, exist_ok=True)
    extract.write_text(_script(EXTRACT))
    return root


def make_weights(root: Path) -> dict[str, Path]:
    """A VAE file, a T5 folder and a tokenizer folder with the files cogvx checks."""
    vae = root / "vae" / "3d-vae.pt"
    vae.parent.mkdir(parents=True, exist_ok=True)
    vae.write_bytes(b"vae")
    t5 = root / "text_encoder"
    t5.mkdir(parents=True, exist_ok=True)
    (t5 / "config.json").write_text("{}")
    (t5 / "model.safetensors").write_bytes(b"t5")
    tok = root / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        (tok / name).write_text("{}")
    return {"vae": vae, "t5": t5, "tokenizer": tok}


def make_data(root: Path, samples: int = 8) -> Path:
    """A data.jsonl of ``samples`` lines."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "data.jsonl"
    lines = [json.dumps({"file": f"videos/{i}.mp4", "captions": f"clip {i}"})
             for i in range(samples)]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_checkpoint(root: Path, variant: str = "t2v-1.0", tp: int = 1,
                    pp_layers: list[int] | None = None, tracker: str = "release",
                    lora_only: bool = False, sizes: dict | None = None) -> Path:
    """An MM-layout checkpoint with every key and shape of ``variant``.

    Each tensor is a one-element zero expanded to its shard shape, so a 5B layout takes a
    few kilobytes: ``torch.save`` keeps the one-element storage and the shape.
    """
    import torch

    from cogvideo_cli.checkpoint import sharding
    from cogvideo_cli.checkpoint.mapping import expected_shapes, spec_of
    from cogvideo_cli.core.variants import get_variant

    model = get_variant(variant).with_size(**(sizes or {}))
    pp_layers = pp_layers or []
    stages = max(1, len(pp_layers))
    parts: dict[tuple[int, int], dict] = {}
    for name, shape in expected_shapes(model).items():
        if name == "patch_embed.proj.bias" or name.startswith("pos_embed.freqs"):
            continue
        stage, local = sharding.place(name, pp_layers)
        kind = spec_of(name).tp
        for t in range(tp):
            piece = sharding.shard_shape(shape, kind, tp, name)
            parts.setdefault((t, stage), {})[local] = torch.zeros(1).expand(piece)
    sub = root / ("release" if tracker == "release" else f"iter_{int(tracker):07d}")
    for (t, p), state in parts.items():
        if lora_only:
            state = {f"videodit_blocks.{i}.self_atten.proj_qkv.lora_A.default.weight":
                     torch.zeros(2, 2) for i in range(2)}
        folder = sub / (f"mp_rank_{t:02d}" + (f"_{p:03d}" if stages > 1 else ""))
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": state}, folder / "model_optim_rng.pt")
    (root / "latest_checkpointed_iteration.txt").write_text(tracker)
    return root


def free_port() -> int:
    """A port nobody listens on right now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tree:
    """Paths of a stand-in setup and the options that point cogvx at them."""

    def __init__(self, root: Path, tp: int = 1, variant: str = "t2v-1.0") -> None:
        self.root = root
        self.variant = variant
        self.mm = make_checkout(root / "mm")
        self.weights = make_weights(root / "weights")
        self.data = make_data(root / "data")
        self.ckpt = make_checkpoint(root / "ckpt", variant=variant, tp=tp)

    def options(self, *, load: bool = True) -> list[str]:
        # explicit: without torch_npu cogvx would choose the diffusers backend
        opts = ["--variant", self.variant, "--backend", "mindspeed", "--mindspeed-mm", str(self.mm),
                "--vae", str(self.weights["vae"]), "--t5", str(self.weights["t5"]),
                "--tokenizer", str(self.weights["tokenizer"]), "--python", sys.executable]
        if load:
            opts += ["--load", str(self.ckpt)]
        return opts

    def train_options(self) -> list[str]:
        return self.options() + ["--data", str(self.data)]
