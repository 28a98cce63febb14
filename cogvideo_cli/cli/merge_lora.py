"""``cogvx merge-lora``: fold a trained LoRA into its base checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cogvideo_cli.cli.options import DryRun, Force
from cogvideo_cli.cli.output import STATE, emit, guarded
from cogvideo_cli.core.errors import UsageError

Base = Annotated[Path | None, typer.Option(
    "--base", help="MindSpeed-MM checkpoint folder or diffusers transformer/ folder "
                   "(default: the base the LoRA's run recorded, else the workspace's; "
                   "never a merge-lora output).")]
Lora = Annotated[Path | None, typer.Option(
    "--lora", help="LoRA save folder of a MindSpeed-MM run, or a diffusers / PEFT LoRA "
                   "file or folder (default: the workspace's last LoRA run).")]
Target = Annotated[Path | None, typer.Option(
    "--target", help="Output folder (default: checkpoints/<base>-merged in the workspace).")]
Rank = Annotated[int | None, typer.Option(
    "--lora-rank", help="The run's LoRA rank r, when no record of the run says it.")]
Alpha = Annotated[float | None, typer.Option(
    "--lora-alpha", help="The run's LoRA alpha, when no record of the run says it.")]
Scale = Annotated[float, typer.Option(
    "--scale", help="Multiplies alpha / r (0.5 merges half the LoRA).")]
Trust = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Load files with full pickle (runs code from the file).")]


def _recorded(lora: Path | None):
    """(LoRA folder, the workspace's record of it) for the last cogvx LoRA run."""
    from cogvideo_cli.checkpoint.lora import Record

    ws = STATE.load_workspace()
    saved = ws.path_value("runs", "lora_save")
    if lora is None:
        if saved is None:
            raise UsageError("no --lora given, and the workspace records no LoRA run",
                             fix="pass --lora PATH (the LoRA run's save folder or file)")
        lora = saved
    rank, alpha = ws.get("runs", "lora_rank"), ws.get("runs", "lora_alpha")
    same = saved is not None and Path(lora).resolve() == saved.resolve()
    if same and rank and alpha:
        return lora, Record(int(rank), float(alpha), f"the workspace ({ws.path})")
    return lora, None


def _base(base: Path | None, lora: Path) -> tuple[Path, str]:
    """The base to merge into and where it came from: --base, the LoRA's own run, the
    workspace's last LoRA run, then the workspace's checkpoint."""
    from cogvideo_cli.checkpoint.lora import recorded_base

    if base is not None:
        return base, "--base"
    found = recorded_base(lora)
    if found is not None:
        return _existing(*found)

    ws = STATE.load_workspace()
    saved, trained_on = ws.path_value("runs", "lora_save"), ws.path_value("runs", "lora_base")
    if trained_on is not None:
        if saved is not None and Path(lora).resolve() == saved.resolve():
            return _existing(trained_on, f"[runs] lora_base in {ws.path}")
        # another LoRA's base: likely the same model, but it may be a merge output
        return _not_merged(*_existing(trained_on, f"[runs] lora_base in {ws.path} (the "
                                                  "base of the workspace's last LoRA run)"))
    found = ws.path_value("checkpoint", "path")
    if found is None:
        raise UsageError(f"no --base given, and neither {lora}'s run nor the workspace "
                         "records the checkpoint it was trained on", value=str(lora),
                         fix="pass --base PATH (the checkpoint the LoRA was trained on)")
    return _not_merged(*_existing(found, f"[checkpoint] path in {ws.path}"))


def _existing(base: Path, origin: str) -> tuple[Path, str]:
    if not base.exists():
        raise UsageError(f"no --base given, and the base {origin} names, {base}, does not "
                         "exist", value=str(base),
                         fix="pass --base PATH (the checkpoint the LoRA was trained on)")
    return base, origin


def _not_merged(base: Path, origin: str) -> tuple[Path, str]:
    """A default base that is itself a merge output would stack one LoRA on another."""
    from cogvideo_cli.checkpoint.lora import merge_record

    found = merge_record(base)
    if found is None:
        return base, origin
    record, original = found
    raise UsageError(
        f"no --base given, and the default base {base} (from {origin}) is itself a "
        f"merge-lora output ({record}): merging into it would add this LoRA on top of "
        "the one already merged", value=str(base),
        fix=f"pass --base {original or 'PATH'} (the checkpoint the LoRA was trained on); "
            "pass the merged folder as --base only to stack LoRAs on purpose")


def _render(result: dict) -> None:
    head = "Plan" if result["dry_run"] else "Merged"
    STATE.out.print(f"{head}: {result['lora']} into {result['base']} -> {result['target']}",
                    markup=False)
    STATE.out.print(f"  base from {result['base_from']}", markup=False)
    STATE.out.print(f"  effective scale {result['effective_scale']:g} = scale "
                    f"{result['scale']:g} x alpha {result['alpha']:g} / rank "
                    f"{result['rank']} (rank and alpha from {result['rank_alpha_from']})",
                    markup=False)
    if result["dry_run"]:
        STATE.out.print(f"  {result['modules']} LoRA modules would be merged", markup=False)
        return
    largest = result["largest_change"]
    STATE.out.print(f"  {result['modules_changed']} of {result['modules']} modules changed; "
                    f"largest relative change {largest['relative']:.3g} "
                    f"({largest['module']})", markup=False)
    if result["format"] == "mm":
        STATE.out.print(f"  checked like convert verify: {result['variant']}, TP "
                        f"{result['tp']}, PP stages "
                        f"{' '.join(map(str, result['pp_layers'])) or 'none'}", markup=False)


def _record(result: dict) -> None:
    if result["dry_run"]:
        return
    ws = STATE.load_workspace()
    if result["format"] == "mm":
        ws.record("checkpoint", path=Path(result["target"]), variant=result["variant"],
                  tp=result["tp"], pp_layers=result["pp_layers"])
    else:
        ws.record("checkpoint", hf=Path(result["target"]))


@guarded
def merge_lora(base: Base = None, lora: Lora = None, target: Target = None,
               lora_rank: Rank = None, lora_alpha: Alpha = None, scale: Scale = 1.0,
               dry_run: DryRun = False, force: Force = False,
               trust_checkpoint: Trust = False) -> None:
    """Merge a LoRA into its base: W += scale * alpha / r * B @ A, shard by shard."""
    from cogvideo_cli.checkpoint import lora as engine

    lora_path, record = _recorded(lora)
    base_path, base_from = _base(base, lora_path)
    out = target or STATE.load_workspace().root / "checkpoints" / f"{base_path.name}-merged"
    result = engine.merge_lora(base_path, lora_path, out, rank=lora_rank, alpha=lora_alpha,
                               scale=scale, record=record, force=force, dry_run=dry_run,
                               trust=trust_checkpoint, reporter=STATE.reporter())
    result["base_from"] = base_from
    _record(result)
    emit(result, _render)
    for note in result.get("notes", []):
        STATE.hint(f"Note: {note}")


def register(root: typer.Typer) -> None:
    """Add ``merge-lora`` to the root application."""
    root.command("merge-lora")(merge_lora)
