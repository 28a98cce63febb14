"""The CLI frame: --help stays light, exit codes, --json errors, --debug tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cogvideo_cli import __version__
from cogvideo_cli.cli.app import app

# every command's --help is probed below; no per-command copy of this check is needed
HEAVY = ("torch", "torch_npu", "diffusers", "transformers", "decord", "av", "peft",
         "safetensors", "huggingface_hub", "httpx", "httpx2", "PIL", "numpy")

PROBE = """
import sys
from cogvideo_cli.cli.app import main
sys.argv = ["cogvx", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def _command_names() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


def _subcommand_paths() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():
        paths.append([name])
        for sub in getattr(command, "commands", {}) or {}:
            paths.append([name, sub])
    return paths


@pytest.mark.parametrize("argv", [[]] + _subcommand_paths(), ids=lambda a: " ".join(a) or "root")
def test_help_imports_nothing_heavy(argv):
    code = PROBE.format(heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code, *argv, "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")][-1]
    assert line == "HEAVY=", f"cogvx {' '.join(argv)} --help imported {line[6:]}"


def test_root_help_lists_commands_with_summaries(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in _command_names():
        assert name in result.stdout
    assert "env-check" in result.stdout


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cogvx {__version__}"


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cogvideo_cli", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cogvx {__version__}"


def test_usage_errors_exit_2(cli):
    assert cli("no-such-command").exit_code == 2
    result = cli("env-check", "--tp", "0")
    assert result.exit_code == 2 and "--tp" in result.stderr
    result = cli("env-check", "--backend", "cuda")
    assert result.exit_code == 2
    assert "unknown backend 'cuda'" in result.stderr and "auto, mindspeed or diffusers" in \
        result.stderr


def test_json_error_on_stdout_and_message_on_stderr(cli):
    result = cli("--json", "env-check", "--backend", "cuda")
    assert result.exit_code == 2
    err = json.loads(result.stdout)
    assert err["kind"] == "usage" and err["exit_code"] == 2 and "cuda" in err["message"]
    assert "Error:" in result.stderr


def test_debug_shows_traceback_only_when_asked(cli, tmp_path):
    (tmp_path / "cogvx.toml").write_text("[nope]\n")
    plain = cli("env-check")
    assert plain.exit_code == 1 and "Traceback" not in plain.output
    debug = cli("--debug", "env-check")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


def test_workspace_option(cli, tmp_path):
    ws = tmp_path / "elsewhere"
    ws.mkdir()
    (ws / "cogvx.toml").write_text('[mindspeed]\npath = "/opt/MindSpeed-MM"\n')
    result = cli("--json", "--workspace", ws, "env-check")
    report = json.loads(result.stdout)
    assert report["workspace"]["values"] == {"mindspeed.path": "/opt/MindSpeed-MM"}
    assert report["workspace"]["path"] == str(ws / "cogvx.toml")
