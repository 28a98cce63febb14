"""cogvx convert through the CLI: option forms, exit codes, messages, workspace chaining."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "golden" / "convert" / "fixtures"
SAT_I2V = FIXTURES / "sat-i2v-1.5" / "transformer"
HF_T2V = FIXTURES / "hf-t2v-1.5" / "transformer"


def _json(result) -> dict:
    return json.loads(result.stdout)


@pytest.mark.parametrize("form", [["10", "11", "11", "10"], ["10,11,11,10"]])
def test_pp_layers_both_forms(cli, tmp_path, form):
    result = cli("--json", "convert", "sat-to-mm", "--source", SAT_I2V, "--target", "out",
                 "--pp-layers", *form, "--tp", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    plan = _json(result)
    assert plan["pp_layers"] == [10, 11, 11, 10] and plan["tp"] == 2
    assert len(plan["files"]) == 8 and not (tmp_path / "out").exists()


def test_convert_records_the_workspace_and_chains(cli, tmp_path):
    result = cli("convert", "hf-to-mm", "--source", HF_T2V, "--tp", "2", "--pp", "2")
    assert result.exit_code == 0, result.output
    assert "Converted: diffusers" in result.stdout
    target = tmp_path / "checkpoints" / "t2v-1.5-mm-tp2-pp21-21"
    assert (target / "latest_checkpointed_iteration.txt").read_text() == "release"
    toml = (tmp_path / "cogvx.toml").read_text()
    assert f'path = "{target}"' in toml and "pp_layers = [21, 21]" in toml

    verify = cli("--json", "convert", "verify", "--tp", "2", "--pp-layers", "21", "21")
    assert verify.exit_code == 0, verify.output
    assert _json(verify)["variant"] == "t2v-1.5"

    back = cli("convert", "mm-to-hf", "--target", "hf")  # source from the workspace
    assert back.exit_code == 0, back.output
    assert (tmp_path / "hf" / "config.json").is_file()
    assert 'hf = "' in (tmp_path / "cogvx.toml").read_text()


def test_verify_path_after_pp_layers(cli, tmp_path):
    assert cli("convert", "sat-to-mm", "--source", SAT_I2V, "--target", "mm", "--tp", "2",
               "--pp-layers", "21", "21").exit_code == 0
    ok = cli("convert", "verify", "--pp-layers", "21", "21", "mm")
    assert ok.exit_code == 0, ok.output
    assert "OK:" in ok.stdout and "PP stages 21 21" in ok.stdout
    bad = cli("convert", "verify", "mm", "--tp", "4")
    assert bad.exit_code == 1
    assert "split for TP 2, but the run uses TP 4" in bad.output and "Fix:" in bad.output


def test_usage_errors_exit_2_with_value_and_fix(cli):
    result = cli("convert", "sat-to-mm", "--source", SAT_I2V, "--target", "o",
                 "--pp-layers", "10", "11", "11", "9")
    assert result.exit_code == 2
    assert "sums to 41, but the model has 42 layers" in result.output
    assert "try 10 11 11 10" in result.output
    wrong = cli("convert", "sat-to-mm", "--source", SAT_I2V, "--target", "o",
                "--variant", "t2v-1.5")
    assert wrong.exit_code == 2 and "--variant i2v-1.5" in wrong.output
    stray = cli("convert", "sat-to-mm", "--source", SAT_I2V, "--target", "o", "7")
    assert stray.exit_code == 2 and "unexpected argument '7'" in stray.output
    words = cli("convert", "sat-to-mm", "--source", SAT_I2V, "--pp-layers", "ten")
    assert words.exit_code == 2


def test_failures_exit_1(cli, tmp_path):
    missing = cli("convert", "sat-to-mm", "--source", tmp_path / "nope.pt", "--target", "o")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "latest_checkpointed_iterations.txt").write_text("release")
    typo = cli("convert", "verify", "ck")
    assert typo.exit_code == 1 and "misspelled" in typo.output
    assert "latest_checkpointed_iteration.txt" in typo.output


def test_no_source_and_empty_workspace(cli):
    result = cli("convert", "resplit", "--tp", "2")
    assert result.exit_code == 2 and "pass --source PATH" in result.output


def test_no_checkpoint_argument_says_what_to_pass(cli):
    for command in ("verify", "inspect"):
        result = cli("convert", command)
        assert result.exit_code == 2
        assert "PATH PATH" not in result.output
        assert f"pass the checkpoint folder, e.g. cogvx convert {command} " in result.output


@pytest.mark.parametrize(("args", "found", "use"), [
    (["hf-to-mm", "--source", SAT_I2V], "a SAT checkpoint", "sat-to-mm"),
    (["sat-to-mm", "--source", HF_T2V], "a diffusers transformer folder", "hf-to-mm"),
    (["mm-to-hf", "--source", SAT_I2V], "a SAT checkpoint", "sat-to-mm"),
    (["resplit", "--source", SAT_I2V, "--tp", "2"], "a SAT checkpoint", "sat-to-mm"),
    (["verify", SAT_I2V], "a SAT checkpoint", "sat-to-mm"),
    (["verify", HF_T2V.parent], "a diffusers transformer folder", "hf-to-mm"),
])
def test_wrong_subcommand_exits_2_naming_the_right_one(cli, args, found, use):
    target = [] if args[0] == "verify" else ["--target", "o"]
    result = cli("convert", *args, *target)
    assert result.exit_code == 2, result.output
    assert found in result.output and f"cogvx convert {use}" in result.output
    assert f"Fix: cogvx convert {use} --source " in result.output
    assert "PosixPath" not in result.output
    data = _json(cli("--json", "convert", *args, *target))
    source = next(a for a in args if isinstance(a, Path))
    assert data["exit_code"] == 2 and data["value"] == str(source)


def _flip_tensor_byte(path: Path) -> None:
    """Change one byte of tensor data in place: same size, still loadable."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename),
                    key=lambda i: i.file_size)
    with open(path, "r+b") as handle:
        handle.seek(entry.header_offset + 26)
        name_len, extra_len = (int.from_bytes(handle.read(2), "little") for _ in range(2))
        handle.seek(entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0xFF]))


def test_inspect_and_verify_count_tensors_alike_and_say_what_was_checked(cli, tmp_path):
    assert cli("convert", "sat-to-mm", "--source", SAT_I2V, "--target", "mm", "--tp", "2",
               "--pp", "2").exit_code == 0
    inspect = cli("convert", "inspect", "mm")
    verify = cli("convert", "verify", "mm")
    assert inspect.exit_code == 0 and verify.exit_code == 0, verify.output
    for words in ("776 unique", "1552 stored across 4 rank files"):
        assert words in inspect.stdout and words in verify.stdout
    assert "tensor values not checked (run with --digests" in verify.stdout

    _flip_tensor_byte(tmp_path / "mm" / "release" / "mp_rank_01_001" / "model_optim_rng.pt")
    unread = cli("convert", "verify", "mm")
    assert unread.exit_code == 0 and "tensor values not checked" in unread.stdout
    assert "sidecar checked\n" not in unread.stdout
    digests = cli("convert", "verify", "mm", "--digests")
    assert digests.exit_code == 1 and "does not match the digest" in digests.output


def test_inspect(cli):
    result = cli("convert", "inspect", FIXTURES / "sat-i2v-1.0" / "transformer")
    assert result.exit_code == 0, result.output
    assert "i2v-1.0" in result.stdout and "float32" in result.stdout
    data = _json(cli("--json", "convert", "inspect", HF_T2V))
    assert data["format"] == "diffusers" and data["variant"] == "t2v-1.5"
    assert data["dims"]["num_layers"] == 42 and data["complete"]


def test_i2v10_note_reaches_stderr_once(cli):
    result = cli("convert", "sat-to-mm", "--source", FIXTURES / "sat-i2v-1.0" / "transformer",
                 "--target", "o", "--tp", "4")
    assert result.exit_code == 0, result.output
    assert result.output.count("never loads it") == 1


def test_convert_help_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "-m", "cogvideo_cli", "convert", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    for name in ("sat-to-mm", "hf-to-mm", "mm-to-hf", "resplit", "inspect", "verify"):
        assert name in proc.stdout


@pytest.mark.parametrize("command", ["sat-to-mm", "hf-to-mm", "layerzero-to-mm"])
def test_sources_missing_or_of_the_wrong_kind_exit_alike(cli, tmp_path, command):
    """A path that does not exist is a failure (1); an existing one of the wrong kind (an
    empty folder, a file where a folder is needed) a usage error (2), in every converter."""
    missing = cli("convert", command, "--source", tmp_path / "nope", "--target", "o")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = cli("convert", command, "--source", tmp_path / "empty", "--target", "o")
    assert empty.exit_code == 2, empty.output
    if command != "sat-to-mm":  # SAT takes a file: an unreadable one is a failure
        (tmp_path / "file.txt").write_text("x")
        file = cli("convert", command, "--source", tmp_path / "file.txt", "--target", "o")
        assert file.exit_code == 2, file.output
    assert not (tmp_path / "o").exists()


def test_the_sidecar_names_the_source_by_its_absolute_path(cli, tmp_path):
    import os

    relative = os.path.relpath(SAT_I2V, tmp_path)
    result = cli("convert", "sat-to-mm", "--source", relative, "--target", "out")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "out.cogvx.json").read_text())
    source = Path(sidecar["source"]["path"])
    assert source.is_absolute() and source.is_relative_to(SAT_I2V.parent), source
