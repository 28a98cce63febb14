"""Option types shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan; write and run nothing.")]
VariantName = Annotated[Optional[str], typer.Option(
    "--variant", help="t2v-1.0, i2v-1.0, t2v-1.5 or i2v-1.5 (default: from the workspace).")]
SourcePath = Annotated[Optional[Path], typer.Option(
    "--source", help="Input path (default: from the workspace).")]
TargetPath = Annotated[Optional[Path], typer.Option(
    "--target", help="Output path (default: from the workspace).")]
