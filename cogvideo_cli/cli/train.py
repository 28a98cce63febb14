"""``cogvx train``, ``cogvx lora`` and ``cogvx extract-features``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cogvideo_cli.cli import launch_options as o
from cogvideo_cli.cli.output import STATE, guarded


def _settings(kind: str, values: dict):
    from cogvideo_cli.core.config import RunSettings, parse_env

    workspace = STATE.load_workspace()
    features = values.pop("features")
    if values.pop("use_features", False) and features is None:
        features = workspace.path_value("data", "features")
        if features is None:
            from cogvideo_cli.core.errors import UsageError

            raise UsageError("--use-features: the workspace records no feature folder",
                             fix="run `cogvx extract-features` first, or pass --features DIR")
    pp_layers = o.int_list(values.pop("pp_layers", None), "--pp-layers")
    targets = o.word_list(values.pop("lora_target_modules", None))
    fields = dict(values)
    fields["backend"] = values["backend"] or "auto"
    variant, variant_source = o.variant_and_source(values["variant"], workspace)
    fields.update(
        kind=kind, variant=variant, variant_source=variant_source,
        pp_layers=pp_layers, features=_s(features), env=parse_env(values["env"] or []),
        overrides=list(values["overrides"] or []))
    for key in ("load", "save", "data_path", "data_folder", "vae", "t5", "tokenizer",
                "mindspeed", "run_dir", "out", "resume", "lora_path"):
        if key in fields:
            fields[key] = _s(fields[key])
    if targets:
        fields["lora_target_modules"] = targets
    return RunSettings.from_mapping(fields)


def _s(value) -> str | None:
    return None if value is None else str(value)


def train(
    variant: o.Variant = None, backend: o.Backend = None,
    tp: o.TP = None, pp: o.PP = None, pp_layers: o.PPLayers = None, cp: o.CP = 1,
    sp: o.SP = None, vae_cp: o.VaeCP = 1, encoder_dp: o.EncoderDP = None,
    layerzero: o.LayerZero = False, zero3_size: o.Zero3 = None,
    mbs: o.MBS = 1, gbs: o.GBS = None, grad_acc: o.GradAcc = None, iters: o.Iters = None,
    lr: o.LR = None, min_lr: o.MinLR = None, seed: o.Seed = None,
    save_interval: o.SaveInterval = None, resume: o.Resume = None,
    frames: o.Frames = None, height: o.Height = None, width: o.Width = None,
    load: o.Load = None, save: o.Save = None, data_path: o.Data = None,
    data_folder: o.DataFolder = None, features: o.Features = None,
    use_features: o.UseFeatures = False, vae: o.Vae = None, t5: o.T5 = None,
    tokenizer: o.Tokenizer = None, mindspeed: o.MindSpeed = None,
    nproc_per_node: o.Nproc = None, nnodes: o.Nnodes = 1, node_rank: o.NodeRank = 0,
    master_addr: o.MasterAddr = "127.0.0.1", master_port: o.MasterPort = None,
    single_host: o.SingleHost = False, python: o.Python = None,
    env: o.Env = None, overrides: o.Set = None, run_dir: o.RunDir = None,
    force: o.Force = False, dry_run: o.DryRun = False,
) -> None:
    """Train a CogVideoX transformer (MindSpeed-MM or diffusers): check, launch torchrun."""
    values = dict(locals())
    force, dry_run = values.pop("force"), values.pop("dry_run")
    o.execute(_settings("train", values), force, dry_run)


LoraR = Annotated[Optional[int], typer.Option(
    "--lora-r", min=1, help="LoRA rank (default 128; with --resume: the resumed run's).",
    show_default=False)]
LoraAlpha = Annotated[Optional[float], typer.Option(
    "--lora-alpha", min=0.0, help="LoRA alpha (default 64; with --resume: the resumed "
    "run's).", show_default=False)]


def _dropout(value: float) -> float:
    """A probability below 1 (click's ranges cannot say "< 1" without a misleading bound)."""
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise typer.BadParameter(f"{value} is not a probability in [0, 1); use e.g. 0.0 or 0.1")
    return value


LoraDropout = Annotated[float, typer.Option(
    "--lora-dropout", callback=_dropout, help="LoRA dropout, 0 <= p < 1.")]
LoraTargets = Annotated[Optional[list[str]], typer.Option(
    "--lora-target-modules", help="Module name suffixes (default: proj_qkv proj_out).")]


def lora(
    variant: o.Variant = None, backend: o.Backend = None,
    lora_r: LoraR = None, lora_alpha: LoraAlpha = None, lora_dropout: LoraDropout = 0.0,
    lora_target_modules: LoraTargets = None,
    tp: o.TP = None, pp: o.PP = None, pp_layers: o.PPLayers = None, cp: o.CP = 1,
    sp: o.SP = None, vae_cp: o.VaeCP = 1, encoder_dp: o.EncoderDP = None,
    mbs: o.MBS = 1, gbs: o.GBS = None, grad_acc: o.GradAcc = None, iters: o.Iters = None,
    lr: o.LR = None, min_lr: o.MinLR = None, seed: o.Seed = None,
    save_interval: o.SaveInterval = None, resume: o.Resume = None,
    frames: o.Frames = None, height: o.Height = None, width: o.Width = None,
    load: o.Load = None, save: o.Save = None, data_path: o.Data = None,
    data_folder: o.DataFolder = None, features: o.Features = None,
    use_features: o.UseFeatures = False, vae: o.Vae = None, t5: o.T5 = None,
    tokenizer: o.Tokenizer = None, mindspeed: o.MindSpeed = None,
    nproc_per_node: o.Nproc = None, nnodes: o.Nnodes = 1, node_rank: o.NodeRank = 0,
    master_addr: o.MasterAddr = "127.0.0.1", master_port: o.MasterPort = None,
    single_host: o.SingleHost = False, python: o.Python = None,
    env: o.Env = None, overrides: o.Set = None, run_dir: o.RunDir = None,
    force: o.Force = False, dry_run: o.DryRun = False,
) -> None:
    """Fine-tune with LoRA (MindSpeed-MM or diffusers); records rank and alpha for merge-lora."""
    values = dict(locals())
    force, dry_run = values.pop("force"), values.pop("dry_run")
    o.execute(_settings("lora", values), force, dry_run)


def extract_features(
    variant: o.Variant = None, backend: o.Backend = None,
    data_path: o.Data = None, data_folder: o.DataFolder = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Feature folder (default: WORKSPACE/features).")] = None,
    frames: o.Frames = None, mbs: o.MBS = 1, vae: o.Vae = None, t5: o.T5 = None,
    tokenizer: o.Tokenizer = None, mindspeed: o.MindSpeed = None,
    nproc_per_node: o.Nproc = None, master_port: o.MasterPort = None,
    python: o.Python = None, env: o.Env = None, overrides: o.Set = None,
    run_dir: o.RunDir = None, force: o.Force = False, dry_run: o.DryRun = False,
) -> None:
    """Extract VAE latents and T5 embeddings with MindSpeed-MM, for train --use-features."""
    values = dict(locals())
    force, dry_run = values.pop("force"), values.pop("dry_run")
    values["features"] = None
    o.execute(_settings("extract", values), force, dry_run)


def register(app: typer.Typer) -> None:
    """Add train, lora and extract-features to the root app."""
    app.command("train")(guarded(train))
    app.command("lora")(guarded(lora))
    app.command("extract-features")(guarded(extract_features))
