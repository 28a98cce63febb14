"""``cogvx env-check``: is this machine ready for MindSpeed-MM or the diffusers backend?"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.core.errors import UsageError

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def env_check(
    backend: Annotated[str, typer.Option(
        help="Judge for 'mindspeed' (Ascend), 'diffusers' (CUDA/CPU) or 'auto'.")] = "auto",
    mindspeed_mm: Annotated[Optional[Path], typer.Option(
        "--mindspeed-mm", help="MindSpeed-MM checkout (default: from cogvx.toml).")] = None,
    tp: Annotated[int, typer.Option("--tp", min=1, help="Planned tensor-parallel size.")] = 1,
    cp: Annotated[int, typer.Option("--cp", min=1, help="Planned context-parallel size.")] = 1,
    ascend_root: Annotated[Path, typer.Option(
        "--ascend-root", envvar="COGVX_ASCEND_ROOT",
        help="Where CANN is installed.")] = Path("/usr/local/Ascend"),
    online: Annotated[bool, typer.Option(
        "--online", help="Also check that the hub endpoint answers (network).")] = False,
) -> None:
    """Check Python, torch/torch_npu, CANN, NPUs, MindSpeed-MM and settings, row by row."""
    from cogvideo_cli.core import envcheck

    if backend not in ("auto", "mindspeed", "diffusers"):
        raise UsageError(f"unknown backend {backend!r}", fix="use auto, mindspeed or diffusers")
    state = output.STATE
    ws = state.load_workspace()
    recorded = {kind: ws.path_value(sec, key) for kind, sec, key in (
        ("t5", "weights", "t5"), ("tokenizer", "weights", "tokenizer"),
        ("vae", "weights", "vae"), ("checkpoint", "checkpoint", "path"))}
    ctx = envcheck.Context(
        environ=dict(os.environ), ascend_root=ascend_root, workspace_root=ws.root,
        mindspeed_mm=mindspeed_mm or ws.path_value("mindspeed", "path"), backend=backend,
        tp=tp, cp=cp, online=online,
        recorded={k: v for k, v in recorded.items() if v is not None})
    rows = envcheck.run_checks(ctx)
    result = envcheck.summarize(rows)
    result["backend"] = ctx.backend
    result["workspace"] = {"path": str(ws.path), "exists": ws.path.exists(),
                           "values": {f"{s}.{k}": v for s, k, v in ws.rows()}}
    output.emit(result, _render)
    if not result["ok"]:
        raise typer.Exit(1)


def _render(result: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"cogvx env-check (backend: {result['backend']})", show_lines=False)
    for column in ("check", "status", "found", "expected", "fix"):
        table.add_column(column, overflow="fold")
    for row in result["checks"]:
        table.add_row(Text(row["check"]), Text(row["status"], style=_STYLE[row["status"]]),
                      Text(row["found"]), Text(row["expected"]), Text(row["fix"]))
    out = output.STATE.out
    out.print(table)
    ws = result["workspace"]
    if ws["values"]:
        wtable = Table(title=f"workspace {ws['path']}")
        wtable.add_column("key")
        wtable.add_column("value", overflow="fold")
        for key, value in ws["values"].items():
            wtable.add_row(Text(key), Text(str(value)))
        out.print(wtable)
    else:
        out.print(Text(f"workspace {ws['path']}: nothing recorded yet"))
    counts = result["counts"]
    out.print(Text(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, "
                   f"{counts['skipped']} skipped"))


def register(app: typer.Typer) -> None:
    app.command("env-check")(output.guarded(env_check))
