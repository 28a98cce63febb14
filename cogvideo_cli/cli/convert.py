"""``cogvx convert``: move weights between SAT, diffusers and MindSpeed-MM, and check them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cogvideo_cli.cli.options import DryRun, Force, SourcePath, TargetPath, VariantName
from cogvideo_cli.cli.output import STATE, emit, guarded
from cogvideo_cli.core.errors import UsageError

app = typer.Typer(
    name="convert",
    help="Convert CogVideoX checkpoints between SAT, diffusers and MindSpeed-MM, exactly.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

# --pp-layers takes "10 11 11 10" as well as "10,11,11,10": click options take one token,
# so the remaining numbers arrive as extra arguments and are joined back here.
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": False}

Tp = Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel size of the output.")]
PpLayers = Annotated[str | None, typer.Option(
    "--pp-layers", help="Layers per pipeline stage: 10 11 11 10 (or 10,11,11,10).")]
Pp = Annotated[int | None, typer.Option(
    "--pp", min=1, help="Pipeline stages, layers split evenly (instead of --pp-layers).")]
Dtype = Annotated[str | None, typer.Option(
    "--dtype", help="keep (default), bf16, fp16 or fp32.")]
Trust = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Load files with full pickle (runs code from the file).")]


def _int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def pp_layers_from(value: str | None, extra: list[str]) -> tuple[list[int] | None, list[str]]:
    """Stage sizes from ``--pp-layers`` and the numbers after it; other tokens returned."""
    rest = [t for t in extra if _int(t) is None]
    numbers = [t for t in extra if _int(t) is not None]
    if value is None:
        if numbers:
            raise UsageError(f"unexpected argument {numbers[0]!r}", value=numbers[0],
                             fix="numbers belong after --pp-layers, e.g. --pp-layers 10 11 11 10")
        return None, rest
    tokens = [t for t in value.replace(",", " ").split() if t] + numbers
    sizes = [_int(t) for t in tokens]
    if not tokens or None in sizes:
        raise UsageError(f"--pp-layers {value!r} is not a list of layer counts", value=value,
                         fix="write e.g. --pp-layers 10 11 11 10 or --pp-layers 10,11,11,10")
    return sizes, rest


def _no_rest(rest: list[str]) -> None:
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r}", value=rest[0],
                         fix="see cogvx convert COMMAND --help")


def _workspace_path(section: str, key: str, what: str, command: str | None = None) -> Path:
    """The path the workspace records; ``command`` names a PATH-argument command for the fix."""
    value = STATE.load_workspace().path_value(section, key)
    if value is None and command is None:
        raise UsageError(f"no --source given, and the workspace records no {what}",
                         fix="pass --source PATH")
    if value is None:
        raise UsageError(f"no checkpoint folder given, and the workspace records no {what}",
                         fix=f"pass the checkpoint folder, e.g. cogvx convert {command} "
                             "checkpoints/t2v-1.5-mm-tp1")
    return value


def _weights_source(fmt: str) -> Path:
    ws = STATE.load_workspace()
    transformer = ws.path_value("weights", "transformer")
    if transformer is not None and ws.get("weights", "format", fmt) == fmt:
        return transformer
    if fmt == "diffusers" and ws.path_value("weights", "diffusers") is not None:
        return ws.path_value("weights", "diffusers") / "transformer"
    raise UsageError(f"no --source given, and the workspace records no {fmt} transformer",
                     fix="pass --source PATH, or run cogvx download first")


def _show_notes(result: dict) -> None:
    for note in result.get("notes", []):
        STATE.hint(f"Note: {note}")


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return str(nbytes)


def _render_convert(result: dict) -> None:
    pp = " ".join(map(str, result["pp_layers"])) or "none"
    head = "Plan" if result["dry_run"] else "Converted"
    STATE.out.print(f"{head}: {result['source_format']} {result['source']} -> "
                    f"{result['target']}", markup=False)
    STATE.out.print(f"  variant {result['variant']} ({result['dims']['num_layers']} layers, "
                    f"hidden {result['dims']['hidden_size']}), TP {result.get('tp')}, "
                    f"PP stages {pp}, dtype {result['dtype']}", markup=False)
    for item in result["files"]:
        size = f"  {_size(item['bytes']):>10}" if "bytes" in item else ""
        STATE.out.print(f"  {item['path']}{size}", markup=False)
    STATE.out.print(f"  total {_size(result['bytes'])}", markup=False)


def _record_mm(result: dict) -> None:
    if not result["dry_run"]:
        STATE.load_workspace().record("checkpoint", path=Path(result["target"]),
                                      variant=result["variant"], tp=result["tp"],
                                      pp_layers=result["pp_layers"])


def _to_mm(fmt: str, ctx: typer.Context, source: Path, target: Path | None, variant,
           tp: int, pp_layers: str | None, pp: int | None, dtype, dry_run: bool, force: bool,
           trust: bool, options: dict | None = None) -> None:
    from cogvideo_cli.checkpoint import convert

    stages, rest = pp_layers_from(pp_layers, list(ctx.args))
    _no_rest(rest)
    result = convert.convert_to_mm(
        fmt, source, target, variant=variant, tp=tp, pp_layers=stages, pp=pp, dtype=dtype,
        force=force, dry_run=dry_run, trust=trust, reporter=STATE.reporter(),
        default_root=STATE.load_workspace().root, source_options=options)
    _record_mm(result)
    emit(result, _render_convert)
    _show_notes(result)


@app.command("sat-to-mm", context_settings=_EXTRA)
@guarded
def sat_to_mm(ctx: typer.Context, source: SourcePath = None, target: TargetPath = None,
              variant: VariantName = None, tp: Tp = 1, pp_layers: PpLayers = None,
              pp: Pp = None, dtype: Dtype = None, dry_run: DryRun = False, force: Force = False,
              trust_checkpoint: Trust = False) -> None:
    """SAT (CogVideo) transformer checkpoint -> MindSpeed-MM layout."""
    _to_mm("sat", ctx, source or _weights_source("sat"), target, variant, tp, pp_layers, pp,
           dtype, dry_run, force, trust_checkpoint)


@app.command("hf-to-mm", context_settings=_EXTRA)
@guarded
def hf_to_mm(ctx: typer.Context, source: SourcePath = None, target: TargetPath = None,
             variant: VariantName = None, tp: Tp = 1, pp_layers: PpLayers = None,
             pp: Pp = None, dtype: Dtype = None, dry_run: DryRun = False, force: Force = False,
             trust_checkpoint: Trust = False) -> None:
    """diffusers transformer/ folder -> MindSpeed-MM layout."""
    _to_mm("diffusers", ctx, source or _weights_source("diffusers"), target, variant, tp,
           pp_layers, pp, dtype, dry_run, force, trust_checkpoint)


@app.command("resplit", context_settings=_EXTRA)
@guarded
def resplit(ctx: typer.Context, source: SourcePath = None, target: TargetPath = None,
            variant: VariantName = None, tp: Tp = 1, pp_layers: PpLayers = None,
            pp: Pp = None, dtype: Dtype = None, dry_run: DryRun = False, force: Force = False,
            trust_checkpoint: Trust = False) -> None:
    """MindSpeed-MM checkpoint (any TP/PP, release or iter_*) -> a new TP/PP layout."""
    src = source or _workspace_path("checkpoint", "path", "MindSpeed-MM checkpoint")
    _to_mm("mm", ctx, src, target, variant, tp, pp_layers, pp, dtype, dry_run, force,
           trust_checkpoint)


@app.command("layerzero-to-mm", context_settings=_EXTRA)
@guarded
def layerzero_to_mm(ctx: typer.Context,
                    source: Annotated[Path | None, typer.Option(
                        "--source", help="The LayerZero run's save folder (holding iter_*/), "
                                         "or one iter_* folder.")] = None,
                    target: TargetPath = None,
                    iteration: Annotated[int | None, typer.Option(
                        "--iteration", min=1, help="Iteration to rebuild (default: the "
                                                   "newest).")] = None,
                    ema: Annotated[bool, typer.Option(
                        "--ema", help="Rebuild the EMA weights (ema_model) instead.")] = False,
                    variant: VariantName = None, tp: Tp = 1, pp_layers: PpLayers = None,
                    pp: Pp = None, dtype: Dtype = None, dry_run: DryRun = False,
                    force: Force = False, trust_checkpoint: Trust = False) -> None:
    """LayerZero save (iter_*/model_<rank>.pt) -> MindSpeed-MM layout, rebuilt exactly."""
    if source is None:
        raise UsageError("no --source given", fix="pass --source SAVE_DIR, the folder a "
                                                  "LayerZero run saved its iter_* folders in")
    _to_mm("layerzero", ctx, source, target, variant, tp, pp_layers, pp, dtype, dry_run,
           force, trust_checkpoint, {"iteration": iteration, "ema": ema})


@app.command("mm-to-hf")
@guarded
def mm_to_hf(source: SourcePath = None, target: TargetPath = None,
             variant: VariantName = None, dtype: Dtype = None, dry_run: DryRun = False,
             force: Force = False, trust_checkpoint: Trust = False) -> None:
    """MindSpeed-MM checkpoint (any TP/PP) -> diffusers transformer folder."""
    from cogvideo_cli.checkpoint import convert

    src = source or _workspace_path("checkpoint", "path", "MindSpeed-MM checkpoint")
    result = convert.mm_to_hf(src, target, variant=variant, dtype=dtype, force=force,
                              dry_run=dry_run, trust=trust_checkpoint,
                              reporter=STATE.reporter(),
                              default_root=STATE.load_workspace().root)
    if not result["dry_run"]:
        STATE.load_workspace().record("checkpoint", hf=Path(result["target"]))
    emit(result, _render_convert)
    _show_notes(result)


def _render_inspect(result: dict) -> None:
    rows: list[tuple[str, Any]] = [
        ("format", result["format"]), ("file", result["file"]),
        ("variant", result.get("variant") or f"unknown ({result.get('problem')})"),
    ]
    if result.get("dims"):
        d = result["dims"]
        rows.append(("size", (f"{d['num_layers']} layers, {d['num_heads']} heads x "
                              f"{d['head_dim']}, hidden {d['hidden_size']}")))
    if result["format"] == "mm":
        pp = " ".join(map(str, result["pp_layers"])) or "none"
        rows.append(("layout", (f"TP {result['tp']}, PP stages {pp}, "
                                f"iteration {result['iteration']}")))
    tensors = (f"{result['tensors']} ({_size(result['tensor_bytes'])}; "
               f"{_size(result['bytes_on_disk'])} on disk)")
    if result["format"] == "mm":  # the same words as verify's, so the counts compare
        tensors = (f"{result['tensors']} unique ({_size(result['tensor_bytes'])}), "
                   f"{result['stored_tensors']} stored across {result['rank_files']} rank "
                   f"files ({_size(result['bytes_on_disk'])} on disk)")
    rows += [("dtype", ", ".join(result["dtypes"])), ("tensors", tensors),
             ("keys", ", ".join(f"{k} {v}" for k, v in result["groups"].items()))]
    if result.get("problem") and result.get("variant"):
        rows.append(("problem", result["problem"]))
    for label, value in rows:
        STATE.out.print(f"{label:>8}  {value}", markup=False)


@app.command("inspect")
@guarded
def inspect(path: Annotated[Path | None, typer.Argument(
                help="Checkpoint: SAT .pt or folder, diffusers folder or MindSpeed-MM folder "
                     "(default: the workspace's checkpoint).")] = None,
            trust_checkpoint: Trust = False) -> None:
    """Format, variant, layout, dtype, size and key summary of a checkpoint."""
    from cogvideo_cli.checkpoint.inspection import inspect_checkpoint

    target = path or _workspace_path("checkpoint", "path", "checkpoint", "inspect")
    emit(inspect_checkpoint(target, trust=trust_checkpoint), _render_inspect)


def _render_verify(result: dict) -> None:
    pp = " ".join(map(str, result["pp_layers"])) or "none"
    STATE.out.print(f"OK: {result['path']} is a complete {result['variant']} checkpoint "
                    f"for TP {result['tp']}, PP stages {pp} (iteration {result['iteration']})",
                    markup=False)
    keys = result["keys"]
    STATE.out.print(f"  {keys['whole_model']} unique tensors, {keys['found']} stored across "
                    f"{len(result['files'])} rank files, every key present with its shape",
                    markup=False)
    STATE.out.print(f"  {_sidecar_check(result)}", markup=False)


def _sidecar_check(result: dict) -> str:
    """What the sidecar comparison covered; without --digests the tensor values are unread."""
    if not result["sidecar"]:
        return ("no sidecar (.cogvx.json): file sizes and tensor values not compared with "
                "the conversion's record")
    if result["digests_checked"]:
        return "sidecar checked: variant, file sizes and SHA-256 digests all match"
    return ("sidecar checked: variant and file sizes match; tensor values not checked "
            "(run with --digests to compare file contents)")


@app.command("verify", context_settings=_EXTRA)
@guarded
def verify(ctx: typer.Context,
           path: Annotated[str | None, typer.Argument(
               help="MindSpeed-MM checkpoint folder (default: the workspace's).")] = None,
           variant: VariantName = None,
           tp: Annotated[int | None, typer.Option(
               "--tp", min=1, help="TP the run uses (default: the checkpoint's).")] = None,
           pp_layers: PpLayers = None,
           digests: Annotated[bool, typer.Option(
               "--digests", help="Also compare SHA-256 digests with the sidecar.")] = False,
           trust_checkpoint: Trust = False) -> None:
    """Check an MM checkpoint against a variant and TP/PP: tracker, folders, keys, shapes."""
    from cogvideo_cli.checkpoint.verify import verify_checkpoint

    # click hands the first loose token to PATH; numbers there belong to --pp-layers
    tokens = ([path] if path is not None else []) + list(ctx.args)
    stages, rest = pp_layers_from(pp_layers, tokens)
    if len(rest) > 1:
        _no_rest(rest[1:])
    target = Path(rest[0]) if rest else _workspace_path("checkpoint", "path",
                                                        "checkpoint", "verify")
    result = verify_checkpoint(target, variant, tp, stages, trust=trust_checkpoint,
                               digests=digests)
    emit(result, _render_verify)
    _show_notes(result)


def register(root: typer.Typer) -> None:
    """Add ``convert`` to the root application."""
    root.add_typer(app, name="convert")
