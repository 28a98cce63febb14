"""``cogvx prepare-data``: raw videos and captions in, a data.jsonl training can trust out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cogvideo_cli.cli import output
from cogvideo_cli.cli.options import Force, VariantName
from cogvideo_cli.core.errors import UsageError

DEFAULT_OUT = Path("prepared-data")
_SHOWN_REJECTS = 15

Source = Annotated[Path, typer.Argument(
    help="A folder with videos/ + labels/, a folder with prompt.txt + videos.txt, a folder "
         "of videos with a .txt caption beside each, or a data.jsonl / .csv to check again.",
    show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder for data.jsonl, "
                                   "report.json and first_frames/.")]
Frames = Annotated[Optional[int], typer.Option(
    "--frames", help="num_frames of the clips (default: the variant's preset, 17 or 37).")]
TrainFps = Annotated[Optional[int], typer.Option(
    "--train-fps", help="train_fps (default 8).")]
SkipFrames = Annotated[Optional[int], typer.Option(
    "--skip-frames", help="skip_frame_num: frames skipped at the start, and at the end of "
                          "clips shorter than the window (default 3).")]
Height = Annotated[Optional[int], typer.Option("--height", help="max_height (default 480).")]
Width = Annotated[Optional[int], typer.Option("--width", help="max_width (default 720).")]
AllowPad = Annotated[bool, typer.Option(
    "--allow-pad", help="Accept clips MindSpeed-MM pads by repeating their last frame.")]
MinSide = Annotated[Optional[int], typer.Option(
    "--min-side", min=1, help="Reject videos whose shorter side is below this many pixels.")]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="Probe processes at once (default: one per CPU).")]
Timeout = Annotated[float, typer.Option(
    "--timeout", min=0.1, help="Seconds one video may take to probe before it is stopped.")]
I2vImages = Annotated[bool, typer.Option(
    "--i2v-images", help="Also save each clip's first frame (the image-to-video condition) "
                         "as PNG under first_frames/.")]
DataFolder = Annotated[Optional[Path], typer.Option(
    "--data-folder", help="For a .jsonl / .csv SOURCE: the folder its file entries are "
                          "relative to (default: the file's folder).")]
Tokenizer = Annotated[Optional[Path], typer.Option(
    "--tokenizer", help="T5 tokenizer folder to check caption lengths (default: the "
                        "workspace's, if any).")]
NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Probe every video again instead of using the probe cache.")]


def prepare_data(
    source: Source,
    out: Out = DEFAULT_OUT,
    variant: VariantName = None,
    frames: Frames = None,
    train_fps: TrainFps = None,
    skip_frames: SkipFrames = None,
    height: Height = None,
    width: Width = None,
    allow_pad: AllowPad = False,
    min_side: MinSide = None,
    workers: Workers = None,
    timeout: Timeout = 120.0,
    i2v_images: I2vImages = False,
    data_folder: DataFolder = None,
    tokenizer: Tokenizer = None,
    no_cache: NoCache = False,
    force: Force = False,
) -> None:
    """Check videos and captions against MindSpeed-MM's rules; write data.jsonl and a report."""
    from cogvideo_cli.core.variants import get_variant
    from cogvideo_cli.data import prepare as engine
    from cogvideo_cli.data.rules import Policy, SamplingSettings

    state = output.STATE
    ws = state.load_workspace()
    chosen, variant_from = _variant(variant, ws)
    if variant_from:
        state.hint(f"checking the videos for {chosen.name} ({variant_from}); pass --variant to "
                   "choose another")
    settings = SamplingSettings.for_variant(
        chosen, frames=frames, train_fps=train_fps, skip_frames=skip_frames,
        height=height, width=width)
    options = engine.PrepareOptions(
        variant=chosen.name, settings=settings, policy=Policy(allow_pad, min_side),
        workers=workers, timeout=timeout, i2v_images=i2v_images,
        cache=None if no_cache else _cache(), data_folder=data_folder,
        count_tokens=_token_counter(tokenizer or ws.path_value("weights", "tokenizer"),
                                    explicit=tokenizer is not None),
        text_length=chosen.train.text_length)
    report = engine.prepare_data(source, out, options, force=force, workspace=ws,
                                 reporter=state.reporter(), raise_if_unusable=False)
    if report["summary"]["accepted"] or not state.json:
        output.emit(_result(report), _render)
    engine.check_usable(report)
    state.hint("next: cogvx train (data_path and data_folder are in cogvx.toml)")


def _variant(given: str | None, ws):
    """The variant to check for and where it came from (None: --variant).

    The workspace's own choice first, then the model's (``[weights]``, e.g. after
    ``cogvx tiny-model``), then the checkpoint's, then t2v-1.0.
    """
    from cogvideo_cli.core.variants import get_variant

    if given:
        return get_variant(given), None
    for section in ("workspace", "weights", "checkpoint"):
        value = ws.get(section, "variant")
        if value:
            return get_variant(value), f"the workspace's [{section}] variant"
    return get_variant("t2v-1.0"), "the default: the workspace records no variant"


def _cache():
    from cogvideo_cli.data.cache import ProbeCache, default_cache_dir
    from cogvideo_cli.data.probe import PROBE_VERSION, decord_available

    reader = "decord" if decord_available() else "pyav"
    return ProbeCache(default_cache_dir() / "probe-cache.json",
                      tag=f"probe{PROBE_VERSION}:{reader}")


def _token_counter(folder: Path | None, explicit: bool):
    """A caption token counter from a tokenizer folder, or None when there is none."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        if explicit:
            raise UsageError(f"--tokenizer {folder} is not a folder", value=folder,
                             fix="pass the T5 tokenizer folder (spiece.model, "
                                 "tokenizer_config.json)")
        return None
    from cogvideo_cli.core.errors import DataError
    from cogvideo_cli.data.captions import token_counter

    try:
        return token_counter(Path(folder))
    except DataError as exc:
        if explicit:
            raise
        output.STATE.hint(f"caption lengths not checked: {exc.message}")
        return None


def _result(report: dict) -> dict:
    """What --json prints: the report without the per-video facts of accepted videos."""
    rejected = [v for v in report["videos"] if not v["accepted"]]
    return {"out": report["out"], "data_path": report["data_path"],
            "data_folder": report["data_folder"], "variant": report["variant"],
            "settings": report["settings"], "summary": report["summary"],
            "rejected": [{"file": v["file"], "reasons": v["reasons"]} for v in rejected],
            "notes": report["notes"]}


def _spread_text(spread: dict | None, fmt: str = "{:g}") -> str:
    if not spread:
        return "-"
    return " / ".join(fmt.format(spread[k]) for k in ("min", "median", "max"))


def _render(result: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    out, summary = output.STATE.out, result["summary"]
    table = Table(title=f"prepare-data ({result['variant']}, {result['settings']['num_frames']}"
                        f" frames at {result['settings']['train_fps']} fps)", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("videos", f"{summary['videos']}  ({summary['probed']} probed, "
                            f"{summary['cached']} from cache, {summary['probe_seconds']:.2f} s)")
    table.add_row("accepted", Text(str(summary["accepted"]), style="green"))
    table.add_row("rejected", Text(str(summary["rejected"]),
                                   style="red" if summary["rejected"] else ""))
    for code, count in summary["rejected_by_reason"].items():
        table.add_row(f"  {code}", str(count))
    table.add_row("duration", f"{summary['duration_seconds']:.1f} s accepted")
    table.add_row("frames", _spread_text(summary["frames"]) + "  (min / median / max)")
    table.add_row("fps", _spread_text(summary["fps"], "{:.3g}"))
    table.add_row("resolution", ", ".join(f"{k} ({v})" for k, v in
                                          summary["resolutions"].items()) or "-")
    if summary["warnings_by_kind"]:
        table.add_row("warnings", ", ".join(f"{k} ({v})" for k, v in
                                            summary["warnings_by_kind"].items()))
    out.print(table)
    _render_rejects(result["rejected"])
    for note in result["notes"]:
        out.print(Text(f"note: {note}"))
    if result["data_path"]:
        out.print(Text(f"wrote {result['data_path']}  (data_folder {result['data_folder']})"))
    out.print(Text(f"report: {Path(result['out']) / 'report.json'}"))


def _render_rejects(rejected: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rejected:
        return
    table = Table(title="rejected")
    for column in ("file", "reason", "fix"):
        table.add_column(column, overflow="fold")
    for item in rejected[:_SHOWN_REJECTS]:
        first = item["reasons"][0]
        table.add_row(Text(item["file"] or "-"), Text(first["message"]), Text(first["fix"]))
    output.STATE.out.print(table)
    if len(rejected) > _SHOWN_REJECTS:
        output.STATE.out.print(Text(f"... and {len(rejected) - _SHOWN_REJECTS} more in "
                                    "report.json"))


def register(app: typer.Typer) -> None:
    app.command("prepare-data")(output.guarded(prepare_data))
