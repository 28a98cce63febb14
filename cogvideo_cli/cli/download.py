"""``cogvx download``: every weight a variant needs, laid out for MindSpeed-MM, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.cli.options import DryRun
from cogvideo_cli.core.errors import DownloadError, UsageError

_WEIGHT_KEYS = ("root", "format", "variant", "transformer", "vae", "t5", "tokenizer",
                "diffusers")


def download(
    variant: Annotated[Optional[str], typer.Argument(
        help="t2v-1.0, i2v-1.0, t2v-1.5 or i2v-1.5 (default: from the workspace).",
        show_default=False)] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="sat (MindSpeed-MM) or diffusers (LoRA from diffusers weights, "
                         "the diffusers backend).")] = "sat",
    components: Annotated[Optional[str], typer.Option(
        "--components", help="Comma list of transformer,vae,t5,tokenizer (default: all).",
        show_default=False)] = None,
    target: Annotated[Optional[Path], typer.Option(
        "--target", "-o", file_okay=False, show_default=False,
        help="Weights folder (default: weights/<variant>-<format> in the workspace).")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint", show_default=False,
        help="Hub endpoint or mirror (default: HF_ENDPOINT, else huggingface.co).")] = None,
    cloud_url: Annotated[Optional[str], typer.Option(
        "--cloud-url", show_default=False,
        help="Base URL of the Tsinghua cloud shares, for the 1.0 SAT weights (default: "
             "COGVX_CLOUD_URL, else https://cloud.tsinghua.edu.cn).")] = None,
    verify_only: Annotated[bool, typer.Option(
        "--verify-only", help="Reread an existing folder against its record; fetch "
                              "nothing.")] = False,
    dry_run: DryRun = False,
) -> None:
    """Fetch every weight a variant needs, laid out as MindSpeed-MM expects, and verify it."""
    state = output.STATE
    ws = state.load_workspace()
    if verify_only:
        _verify_only(ws, variant, fmt, target)
        return
    name = variant or ws.get("workspace", "variant")
    if not name:
        raise UsageError("no variant given and none in the workspace",
                         fix="name one: cogvx download t2v-1.5")
    from cogvideo_cli.hub.download import plan_download, run_download

    plan = plan_download(name, fmt, components, target, workspace_root=ws.root,
                         endpoint=endpoint, cloud_url=cloud_url)
    for note in plan.notes:
        state.hint(f"note: {note}")
    if dry_run:
        output.emit(plan.to_dict(), _render_plan)
        return
    result = run_download(plan, state.reporter())
    _record_workspace(ws, result)
    output.emit(result, _render_result)


def _verify_only(ws: Any, variant: str | None, fmt: str, target: Path | None) -> None:
    from cogvideo_cli.hub.download import verify_download
    from cogvideo_cli.hub.manifest import check_format, default_target
    from cogvideo_cli.core.variants import get_variant

    if target is None and variant is None:
        target = ws.path_value("weights", "root")
    if target is None:
        name = variant or ws.get("workspace", "variant")
        if not name:
            raise UsageError("--verify-only needs a folder",
                             fix="pass --target <weights folder> or a variant name")
        target = default_target(ws.root, get_variant(name), check_format(fmt))
    result = verify_download(target, output.STATE.reporter())
    if not result["ok"]:
        bad = "; ".join(f"{b['path']} ({b['reason']})" for b in result["bad"])
        fix_fmt = result["format"] or fmt
        raise DownloadError(
            f"{len(result['bad'])} of {result['checked']} files in {result['target']} are "
            f"damaged or missing: {bad}",
            fix=f"run `cogvx download {result['variant'] or '<variant>'} --format {fix_fmt} "
                f"--target {result['target']}`; only those files are fetched again")
    output.emit(result, _render_verified)


def _record_workspace(ws: Any, result: dict[str, Any]) -> None:
    """Point ``[weights]`` of cogvx.toml at the folder, keeping components from earlier runs."""
    values: dict[str, Any] = dict(result["workspace"])
    values["variant"] = result["variant"]
    same = (ws.get("weights", "root") == values["root"]
            and ws.get("weights", "format") == values["format"]
            and ws.get("weights", "variant") == values["variant"])
    if not same:
        values = {key: values.get(key) for key in _WEIGHT_KEYS}
    ws.record("weights", **values)


def _render_plan(plan: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from cogvideo_cli.hub.download import human_size

    table = Table(title=f"cogvx download {plan['variant']} --format {plan['format']} "
                        f"(dry run)")
    for column in ("file", "size", "verify", "status", "source"):
        table.add_column(column, overflow="fold")
    for row in plan["files"]:
        size = human_size(row["size"]) if row["size"] is not None else "?"
        status = row["status"] + (f" from {human_size(row['resume_from'])}"
                                  if row["resume_from"] else "")
        table.add_row(Text(row["path"]), Text(size), Text(row["verify"]), Text(status),
                      Text(row["source"]))
    out = output.STATE.out
    out.print(table)
    unknown = f" (+{plan['unknown_sizes']} of unknown size)" if plan["unknown_sizes"] else ""
    out.print(Text(f"{len(plan['files'])} files into {plan['target']}; "
                   f"{human_size(plan['fetch_bytes'])} to download{unknown}. "
                   "Nothing was written."))


def _render_result(result: dict[str, Any]) -> None:
    from rich.text import Text

    out = output.STATE.out
    fetched = len(result["fetched"])
    line = f"{result['files']} files verified in {result['target']}; {fetched} downloaded"
    if result["repaired"]:
        line += f", {len(result['repaired'])} repaired ({', '.join(result['repaired'])})"
    out.print(Text(line + "."))
    out.print(Text(f"recorded in cogvx.toml [weights] and {result['record']}"))


def _render_verified(result: dict[str, Any]) -> None:
    from rich.text import Text

    from cogvideo_cli.hub.download import human_size

    output.STATE.out.print(Text(
        f"all {result['checked']} files in {result['target']} match their record "
        f"({human_size(result['bytes'])} read)."))


def register(app: typer.Typer) -> None:
    app.command("download")(output.guarded(download))
