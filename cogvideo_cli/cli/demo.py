"""``cogvx demo``: the whole pipeline on a tiny model, on this machine, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.cli.options import Force

_STAGE_COUNT = 7  # len(cogvideo_cli.demo.pipeline.STAGES), without importing it for --help


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes.",
                                      file_okay=False)] = Path("demo-out"),
    variant: Annotated[str, typer.Option(
        "--variant", help="t2v-1.0 or t2v-1.5 (the tiny model's layout).")] = "t2v-1.0",
    force: Force = False,
) -> None:
    """Build a tiny model, prepare videos, convert, train LoRA, merge and sample: on CPU."""
    from cogvideo_cli.demo.pipeline import run_demo

    state = output.STATE
    summary = run_demo(out, variant=variant, force=force, on_stage=_show_stage,
                       on_line=_show_line if not (state.quiet or state.json) else None)
    output.emit(summary, _render)


def _say(text: str) -> None:
    """A progress line on stderr, unwrapped (paths stay whole in logs)."""
    state = output.STATE
    if not (state.quiet or state.json):
        state.err.print(text, markup=False, highlight=False, soft_wrap=True)


def _show_stage(event: str, name: str, index: int, row: dict[str, Any] | None) -> None:
    if event == "start":
        _say(f"[demo {index}/{_STAGE_COUNT}] {name} ...")
    elif row is not None:
        _say(f"[demo {index}/{_STAGE_COUNT}] {name} done in {row['seconds']:.1f} s: "
             f"{_brief(name, row['result'])}")


def _show_line(line: str) -> None:
    """The workers' own lines (steps, losses, videos); all of torchrun's with -v."""
    if output.STATE.verbose or line.startswith("[cogvx-"):
        _say(f"    {line}")


def _brief(name: str, r: dict[str, Any]) -> str:
    """One line per stage, the facts that show it worked."""
    if name == "tiny model":
        c = r["clip"]
        return (f"{r['parameters']['transformer']:,} transformer parameters, clip "
                f"{c['frames']} frames at {c['height']}x{c['width']}")
    if name == "videos":
        v = r["videos"][0]
        return (f"{len(r['videos'])} mp4s of {v['frames']} frames at {v['width']}x"
                f"{v['height']}, {v['fps']:g} fps")
    if name == "prepare-data":
        return f"{r['accepted']} accepted, {r['rejected']} rejected -> {r['data_path']}"
    if name == "convert":
        stages = " ".join(map(str, r["pp_layers"]))
        return (f"TP {r['tp']} / PP stages {stages}: {r['rank_files']} rank files verified; "
                f"round trip {'bit-exact' if r['exact'] else 'DIFFERENT'} over "
                f"{r['tensors']} tensors")
    if name == "lora":
        losses = " ".join(f"{x:.4f}" for x in r["losses"])
        return f"{r['processes']} processes, loss {losses}"
    if name == "merge-lora":
        scale = f"rank {r['rank']}, alpha {r['alpha']:g}: " if r.get("rank") else ""
        return (f"{scale}{r['changed_tensors']} of {r['tensors']} tensors changed (max "
                f"{r['max_change']:.2e})")
    if name == "sample":
        return ", ".join(f"{v['frames']} frames {v['width']}x{v['height']}"
                         for v in r["videos"])
    return ""


def _render(summary: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = output.STATE.out
    table = Table(title=f"cogvx demo {summary['variant']} in {summary['out']} "
                        f"({summary['seconds']:.1f} s)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result", overflow="fold")
    for row in summary["stages"]:
        table.add_row(Text(row["stage"]), f"{row['seconds']:.1f}",
                      Text(_brief(row["stage"], row["result"])))
    out.print(table)
    out.print("sampled videos (RANDOM-WEIGHT model: noise, read back from the files):",
              markup=False)
    for video in summary["videos"]:
        out.print(f"  {video['path']}: {video['frames']} frames, {video['width']}x"
                  f"{video['height']}, {video['fps']:g} fps, {video['bytes']:,} bytes",
                  markup=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(output.guarded(demo))
