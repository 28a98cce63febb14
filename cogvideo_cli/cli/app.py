"""The root ``cogvx`` application: global options, command registration, entry point."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from cogvideo_cli import __version__
from cogvideo_cli.cli import output

app = typer.Typer(
    name="cogvx",
    help="From nothing to trained and sampled CogVideoX models, on Ascend NPUs "
         "(MindSpeed-MM) or anywhere through diffusers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module registers its commands with `register(app)`; only commands that work are
# listed here. Modules import nothing heavy at the top, so `--help` stays light.
COMMAND_MODULES = [
    "cogvideo_cli.cli.env_check",
    "cogvideo_cli.cli.download",
    "cogvideo_cli.cli.prepare_data",
    "cogvideo_cli.cli.convert",
    "cogvideo_cli.cli.merge_lora",
    "cogvideo_cli.cli.demo",
    "cogvideo_cli.cli.train",
    "cogvideo_cli.cli.infer",
    "cogvideo_cli.cli.tiny_model",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cogvx {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More log output (-vv for debug logs).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Only errors and results.")] = False,
    json_output: Annotated[bool, typer.Option("--json",
                                              help="Machine-readable results on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug",
                                        help="Show tracebacks for errors.")] = False,
    workspace: Annotated[Optional[Path], typer.Option(
        "--workspace", "-w", help="Folder holding cogvx.toml (default: current folder).",
        envvar="COGVX_WORKSPACE", file_okay=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Shared options for every command."""
    output.reset_state(verbose=verbose, quiet=quiet, json=json_output, debug=debug,
                       workspace=workspace)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cogvx")
