"""``cogvx demo``: run what cogvx can do end to end on this machine, stage by stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.cli.options import Force


def _stage_env(out: Path) -> dict:
    from cogvideo_cli.core import envcheck

    ctx = envcheck.Context(workspace_root=out)
    report = envcheck.summarize(envcheck.run_checks(ctx))
    return {"backend": ctx.backend, **report["counts"]}


def _stage_variants(out: Path) -> dict:
    from cogvideo_cli.core import variants as v

    rows = {}
    for name, variant in v.VARIANTS.items():
        t = variant.train
        rows[name] = {
            "train_clip": f"{t.frames}x{t.height}x{t.width}",
            "latent": list(v.latent_shape(variant, t.frames, t.height, t.width)),
            "sequence": v.sequence_length(variant, t.frames, t.height, t.width, t.text_length),
            "frames_49_ok": v.check_frames(variant, 49) is None,
        }
    return rows


STAGES: list[tuple[str, Callable[[Path], dict]]] = [
    ("environment", _stage_env),
    ("variant rules", _stage_variants),
]


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes.")]
    = Path("demo-out"),
    force: Force = False,
) -> None:
    """Run the pipeline stages that work on this machine and summarise each."""
    from cogvideo_cli.core.fsutil import check_target

    check_target(out, force, "demo folder")
    out.mkdir(parents=True, exist_ok=True)
    state = output.STATE
    summary = []
    for name, stage in STAGES:
        state.hint(f"[demo] {name} ...")
        start = time.perf_counter()
        result = stage(out)
        summary.append({"stage": name, "seconds": round(time.perf_counter() - start, 2),
                        "result": result})
    output.emit({"out": str(out.absolute()), "stages": summary}, _render)


def _render(result: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"cogvx demo ({result['out']})")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result", overflow="fold")
    for row in result["stages"]:
        table.add_row(Text(row["stage"]), f"{row['seconds']:.2f}", Text(str(row["result"])))
    output.STATE.out.print(table)


def register(app: typer.Typer) -> None:
    app.command("demo")(output.guarded(demo))
