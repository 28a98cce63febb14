"""The diffusers training worker: CogVideoX LoRA or full fine-tuning under torchrun.

Run as ``torchrun --nproc_per_node N -m cogvideo_cli.backends.diffusers.train_worker
--config run_config.json``; ``engine.plan_train`` writes that file. One process per device:
DDP over gloo on CPU and NCCL on CUDA; bf16 autocast and gradient checkpointing on CUDA
only. The objective is diffusers' CogVideoX one: v-prediction through
``CogVideoXDPMScheduler`` (zero-terminal-SNR betas), the prediction turned into x0 with
``get_velocity`` and weighted by ``1 / (1 - alpha_bar_t)``, which equals the plain MSE on
the velocity. Clips are sampled with MindSpeed-MM's frame rule (``data.rules``).

Rank 0 writes its log lines to stdout on purpose (cogvx streams them into the run's log),
and appends one JSON object per step to ``metrics.jsonl`` in the run directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cogvideo_cli.backends.diffusers import media
from cogvideo_cli.checkpoint.safeload import load as safe_load
from cogvideo_cli.core.errors import CogvxError, DataError
from cogvideo_cli.core.fsutil import atomic_dir
from cogvideo_cli.data.rules import SamplingSettings

LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_META = "lora.json"
STATE_FILE = "training_state.pt"
CHECKPOINT_META = "checkpoint.json"  # engine.CHECKPOINT_META: read when planning a resume


def say(text: str) -> None:
    """A rank-0 log line on stdout (the only output channel of a torchrun worker)."""
    if dist.get_rank() == 0:
        sys.stdout.write(f"[cogvx-train] {text}\n")
        sys.stdout.flush()


# --- setup ---------------------------------------------------------------------------------

def init_distributed() -> torch.device:
    """Join the torchrun group: NCCL with one GPU per process, else gloo on CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_components(cfg: dict[str, Any], device: torch.device):
    """The pipeline (frozen T5 and VAE on ``device``) and its trainable transformer."""
    from diffusers import CogVideoXTransformer3DModel, DiffusionPipeline

    transformer_dir = cfg.get("transformer") or str(Path(cfg["model"]) / "transformer")
    transformer = CogVideoXTransformer3DModel.from_pretrained(transformer_dir)
    pipe = DiffusionPipeline.from_pretrained(cfg["model"], transformer=transformer)
    frozen = torch.bfloat16 if device.type == "cuda" else torch.float32
    for module in (pipe.text_encoder, pipe.vae):
        module.requires_grad_(False)
        module.eval()
        module.to(device, dtype=frozen)
    transformer.to(device)
    return pipe, transformer


def add_lora(transformer, lora: dict[str, Any]) -> None:
    """Attach a peft LoRA adapter to the attention projections; only it trains."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(
        r=lora["rank"], lora_alpha=lora["alpha"], init_lora_weights=True,
        target_modules=list(lora["targets"])))


def trainable_state(transformer) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (the LoRA matrices, or every weight)."""
    return {name: p.detach().cpu().clone() for name, p in transformer.named_parameters()
            if p.requires_grad}


def lr_lambda(warmup: int):
    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    return factor


# --- data ----------------------------------------------------------------------------------

def read_rows(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """data.jsonl rows as ``{"path": Path, "caption": str}``; every problem raised at once."""
    folder = Path(cfg["data_folder"])
    rows, problems = [], []
    lines = Path(cfg["data_path"]).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        caption = row.get("captions")
        if isinstance(caption, list):
            caption = caption[0] if caption else ""
        path = folder / row["file"]
        if not path.is_file():
            problems.append(f"line {number}: {path} does not exist")
        rows.append({"path": path, "caption": str(caption or "")})
    if problems:
        raise DataError("data.jsonl lists missing videos: " + "; ".join(problems[:5]),
                        fix="rerun `cogvx prepare-data`")
    return rows


def batch_rows(rows: list, step: int, rank: int, world: int, mbs: int) -> list:
    """The rows this rank trains on at ``step`` (1-based): MindSpeed-MM's sequential order.

    Global sample ``(step - 1) * world * mbs + rank * mbs + m`` for micro-sample ``m``; a
    pure function of the step, so a resumed run sees the same data the original would.
    """
    first = (step - 1) * world * mbs + rank * mbs
    return [rows[(first + m) % len(rows)] for m in range(mbs)]


# --- the objective -------------------------------------------------------------------------

def encode_video(pipe, video: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] in [-1, 1] -> scaled latents [B, T_lat, C, h, w]."""
    with torch.no_grad():
        latents = pipe.vae.encode(video.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    return (latents * pipe.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).float()


def image_condition(pipe, video: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """i2v: the first frame, lightly noised, encoded, then zero-padded to the clip length.

    Follows diffusers' I2V training script (log-normal noise, sigma ~ exp(N(-3, 0.5))) and
    the I2V pipeline's latent scaling (1.5 I2V divides by the scale, ``invert_scale_latents``).
    """
    first = video[:, :1].permute(0, 2, 1, 3, 4)  # B, 3, 1, H, W
    sigma = torch.exp(torch.normal(-3.0, 0.5, size=(first.shape[0],), device=first.device))
    noisy = first + torch.randn_like(first) * sigma[:, None, None, None, None]
    with torch.no_grad():
        latents = pipe.vae.encode(noisy).latent_dist.sample().float()
    scale = pipe.vae.config.scaling_factor
    invert = getattr(pipe.vae.config, "invert_scale_latents", False)
    latents = (latents / scale if invert else latents * scale).permute(0, 2, 1, 3, 4)
    padding = latents.new_zeros((latents.shape[0], latent_frames - 1, *latents.shape[2:]))
    return torch.cat([latents, padding], dim=1)


def compute_loss(pipe, model, video: torch.Tensor, captions: list[str],
                 cfg: dict[str, Any], device: torch.device) -> torch.Tensor:
    """One micro-batch of the CogVideoX objective."""
    scheduler = pipe.scheduler
    latents = encode_video(pipe, video)
    with torch.no_grad():
        prompt_embeds, _ = pipe.encode_prompt(
            captions, do_classifier_free_guidance=False,
            max_sequence_length=cfg["text_length"], device=device)
    batch, frames = latents.shape[:2]

    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
    noisy = scheduler.add_noise(latents, noise, t)
    model_input = noisy
    if cfg["task"] == "i2v":
        model_input = torch.cat([noisy, image_condition(pipe, video, frames)], dim=2)
    ofs = None
    if pipe.transformer.config.ofs_embed_dim:
        ofs = noisy.new_full((1,), 2.0)  # fixed at 2.0, as the pipeline and SAT use
    rope = pipe._prepare_rotary_positional_embeddings(
        cfg["height"], cfg["width"], frames, device)

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        output = model(hidden_states=model_input, encoder_hidden_states=prompt_embeds.float(),
                       timestep=t, ofs=ofs, image_rotary_emb=rope, return_dict=False)[0]
    # v-prediction: x0_hat = sqrt(a) x_t - sqrt(1-a) v_hat; weighting by 1/(1-a) makes the
    # x0 error equal the velocity error
    x0 = scheduler.get_velocity(output.float(), noisy, t)
    alphas = scheduler.alphas_cumprod.to(device)[t]
    weights = (1 / (1 - alphas)).view(batch, 1, 1, 1, 1)
    return (weights * (x0 - latents) ** 2).reshape(batch, -1).mean(dim=1).mean()


# --- checkpoints ---------------------------------------------------------------------------

def save_weights(folder: Path, transformer, cfg: dict[str, Any], step: int) -> None:
    """The model files a checkpoint or the final output holds (rank 0 only)."""
    if cfg["kind"] == "lora":
        from diffusers import CogVideoXPipeline
        from peft.utils import get_peft_model_state_dict

        lora = cfg["lora"]
        metadata = {"r": lora["rank"], "lora_alpha": lora["alpha"],
                    "target_modules": list(lora["targets"])}
        CogVideoXPipeline.save_lora_weights(
            str(folder), transformer_lora_layers=get_peft_model_state_dict(transformer),
            transformer_lora_adapter_metadata=metadata)
        meta = {"rank": lora["rank"], "alpha": lora["alpha"], "targets": lora["targets"],
                "variant": cfg["variant"], "step": step, "base_model": cfg["model"],
                "format": "diffusers-lora"}
        (folder / LORA_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    else:
        transformer.save_pretrained(str(folder / "transformer"), safe_serialization=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(cfg: dict[str, Any], step: int, transformer, optimizer, lr_sched,
                    device: torch.device) -> Path:
    """checkpoints/step-NNNNNN: weights, optimizer, step, and each rank's RNG state.

    Built in a temporary folder that every rank writes its RNG file into; rank 0 renames it
    into place once all are done, so a checkpoint folder is always complete.
    """
    rank = dist.get_rank()
    final = Path(cfg["run_dir"]) / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(f".tmp-{final.name}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    torch.save(rng_state(device), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        save_weights(tmp, transformer, cfg, step)
        torch.save({"step": step, "trainable": trainable_state(transformer),
                    "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(),
                    "world_size": dist.get_world_size(), "kind": cfg["kind"]},
                   tmp / STATE_FILE)
        meta = {"step": step, "world_size": dist.get_world_size(), "kind": cfg["kind"],
                "variant": cfg["variant"], "lora": cfg["lora"], "model": cfg["model"],
                "transformer": cfg["transformer"]}
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n",
                                           encoding="utf-8")
    dist.barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        say(f"checkpoint step {step} saved to {final}")
    dist.barrier()
    return final


def load_checkpoint(folder: Path, transformer, optimizer, lr_sched,
                    device: torch.device) -> int:
    """Restore weights, optimizer, scheduler and this rank's RNG; returns the saved step."""
    # weights_only with the checkpoint allowlist: a resumed folder is input like any other
    state = safe_load(folder / STATE_FILE, mmap=False)
    if state["world_size"] != dist.get_world_size():
        raise CogvxError(
            f"the checkpoint was written by {state['world_size']} processes, this run has "
            f"{dist.get_world_size()}", value=str(folder),
            fix=f"resume with --nproc-per-node {state['world_size']}")
    check_fit(state["trainable"], transformer, folder)
    transformer.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_scheduler"])
    set_rng_state(safe_load(folder / f"rng-rank{dist.get_rank()}.pt", mmap=False), device)
    return int(state["step"])


def check_fit(saved: dict[str, torch.Tensor], transformer, folder: Path) -> None:
    """Refuse a checkpoint whose tensors are not this model's, naming the first misfit.

    ``load_state_dict(strict=False)`` skips unknown names but raises a bare RuntimeError on
    a shape mismatch (another LoRA rank), so shapes are compared first.
    """
    current = dict(transformer.named_parameters())
    unknown = [name for name in saved if name not in current]
    if unknown:
        raise CogvxError("the checkpoint's tensors do not fit this model", value=unknown[:3],
                         fix="resume with the same command (lora or train) and variant")
    for name, tensor in saved.items():
        if tuple(tensor.shape) != tuple(current[name].shape):
            hint = ""
            if "lora_A" in name:
                hint = f" (LoRA rank {tensor.shape[0]}, this run has {current[name].shape[0]})"
            raise CogvxError(
                f"{name} is {list(tensor.shape)} in the checkpoint {folder} but "
                f"{list(current[name].shape)} in this model{hint}", value=name,
                fix="resume without --lora-r / --lora-alpha: they come from the checkpoint")


def save_output(cfg: dict[str, Any], transformer, step: int) -> None:
    """The run's final weights, at ``cfg["output"]`` (rank 0, atomically)."""
    if dist.get_rank() == 0:
        with atomic_dir(Path(cfg["output"]), force=True, what="training output") as tmp:
            if cfg["kind"] == "lora":
                save_weights(tmp, transformer, cfg, step)
            else:  # the output itself is the transformer folder (loads as transformer=)
                transformer.save_pretrained(str(tmp), safe_serialization=True)
        say(f"saved {cfg['kind']} weights to {cfg['output']}")
    dist.barrier()


# --- the loop ------------------------------------------------------------------------------

def log_step(cfg: dict[str, Any], record: dict[str, Any]) -> None:
    say(f"step {record['step']}/{cfg['steps']} loss {record['loss']:.6f} "
        f"lr {record['lr']:.3e} step_time {record['step_time_s']:.3f}s "
        f"samples/s {record['samples_per_s']:.3f}")
    if dist.get_rank() == 0:
        with open(Path(cfg["run_dir"]) / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def train_step(cfg, pipe, model, rows, settings, step, device) -> torch.Tensor:
    batch = batch_rows(rows, step, dist.get_rank(), dist.get_world_size(),
                       cfg["micro_batch_size"])
    video = torch.stack([media.load_clip(r["path"], settings) for r in batch]).to(device)
    if device.type == "cuda":
        video = video.to(torch.bfloat16)
    loss = compute_loss(pipe, model, video, [r["caption"] for r in batch], cfg, device)
    loss.backward()
    return loss.detach()


def setup_training(cfg: dict[str, Any], device: torch.device):
    """The pipeline, the transformer made trainable (LoRA or all), optimizer, LR schedule."""
    pipe, transformer = load_components(cfg, device)
    if cfg["kind"] == "lora":
        add_lora(transformer, cfg["lora"])
    else:
        transformer.requires_grad_(True)
    if device.type == "cuda":
        transformer.enable_gradient_checkpointing()
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg["warmup_steps"]))
    return pipe, transformer, params, optimizer, lr_sched


def train(cfg: dict[str, Any]) -> None:
    """The whole run: setup, optional resume, the step loop, checkpoints, the output."""
    from torch.nn.parallel import DistributedDataParallel

    device = init_distributed()
    world, rank = dist.get_world_size(), dist.get_rank()
    seed_all(cfg["seed"] + rank)
    rows = read_rows(cfg)
    if len(rows) < world * cfg["micro_batch_size"]:
        raise DataError(f"{len(rows)} videos cannot fill one step of {world} processes x "
                        f"{cfg['micro_batch_size']} clips", fix="add videos or use fewer "
                        "processes (MindSpeed-MM would hang here)")
    settings = SamplingSettings(num_frames=cfg["frames"], train_fps=cfg["train_fps"],
                                skip_frames=cfg["skip_frames"], height=cfg["height"],
                                width=cfg["width"])

    pipe, transformer, params, optimizer, lr_sched = setup_training(cfg, device)
    start = 0
    if cfg.get("resume"):
        start = load_checkpoint(Path(cfg["resume"]), transformer, optimizer, lr_sched, device)
        say(f"resumed from {cfg['resume']} at step {start}")
    if start == 0 and rank == 0:
        # a fresh start (launch.sh run again) begins a fresh step series; a resume appends
        (Path(cfg["run_dir"]) / "metrics.jsonl").unlink(missing_ok=True)
    model = DistributedDataParallel(
        transformer, device_ids=[device.index] if device.type == "cuda" else None)
    say(f"{cfg['kind']} {cfg['variant']}: {sum(p.numel() for p in params)} trainable "
        f"parameters, {world} processes on {device.type}, steps {start + 1}..{cfg['steps']}")

    for step in range(start + 1, cfg["steps"] + 1):
        began = time.perf_counter()
        loss = train_step(cfg, pipe, model, rows, settings, step, device)
        torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"])
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        dist.all_reduce(loss)
        loss = loss.item() / world
        if not math.isfinite(loss):
            raise CogvxError(f"the loss became {loss} at step {step}",
                             fix="lower --lr or check the data")
        elapsed = time.perf_counter() - began
        log_step(cfg, {"step": step, "loss": loss, "lr": lr, "step_time_s": elapsed,
                       "samples_per_s": world * cfg["micro_batch_size"] / elapsed})
        # the last step always saves one, so every finished run can be resumed
        if step == cfg["steps"] or (cfg["save_every"] and step % cfg["save_every"] == 0):
            save_checkpoint(cfg, step, transformer, optimizer, lr_sched, device)
    save_output(cfg, transformer, cfg["steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="run_config.json")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    try:
        train(cfg)
    except CogvxError as exc:
        sys.stderr.write(f"[cogvx-train] error: {exc}\n")
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
