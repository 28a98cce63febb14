"""``cogvx train / lora / infer --backend diffusers`` through the CLI, and the auto-pick.

Real launches: one two-process LoRA run, its resume, and one sampling run, each through
the same commands, run directories and workspace records as MindSpeed-MM's. The data is
made on the spot (the demo's generated clips through the prepare-data engine), so these
tests need no ../shared media.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cogvideo_cli.cli.app import app
from cogvideo_cli.core.workspace import Workspace


def _cogvx(workspace: Path, *args):
    """Run cogvx in-process with ``--workspace``; returns the click result."""
    return CliRunner().invoke(app, ["--workspace", str(workspace), *map(str, args)])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """data.jsonl over two generated clips, written by the prepare-data engine."""
    from cogvideo_cli.core.variants import get_variant
    from cogvideo_cli.data.prepare import PrepareOptions, prepare_data
    from cogvideo_cli.data.rules import SamplingSettings
    from cogvideo_cli.demo.videos import write_videos

    root = tmp_path_factory.mktemp("data")
    write_videos(root / "videos", count=2)
    settings = SamplingSettings.for_variant(get_variant("t2v-1.0"), frames=9, height=32,
                                            width=48)
    report = prepare_data(root / "videos", root / "prepared",
                          PrepareOptions(variant="t2v-1.0", settings=settings, workers=1))
    assert report["summary"]["accepted"] == 2
    return Path(report["data_path"])


@pytest.fixture
def workspace(tmp_path, tiny_model, data, monkeypatch) -> Path:
    """A workspace that knows the tiny model and the data, and no MindSpeed-MM checkout."""
    monkeypatch.delenv("MINDSPEED_MM_PATH", raising=False)
    ws = Workspace.load(tmp_path)
    ws.record("weights", diffusers=tiny_model("t2v-1.0"), format="diffusers",
              variant="t2v-1.0")
    ws.record("data", data_path=data, data_folder=data.parent.parent / "videos")
    return tmp_path


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model, data):
    """``cogvx lora`` with no --backend: two processes, two steps, a checkpoint each."""
    root = tmp_path_factory.mktemp("lora")
    ws = Workspace.load(root)
    ws.record("weights", diffusers=tiny_model("t2v-1.0"), format="diffusers",
              variant="t2v-1.0")
    ws.record("data", data_path=data, data_folder=data.parent.parent / "videos")
    result = _cogvx(root, "lora", "--nproc-per-node", 2, "--iters", 2, "--save-interval", 1,
                    "--lora-r", 4, "--lora-alpha", 8, "--lr", "1e-2", "--seed", 3,
                    "--run-dir", root / "run")
    return root, result


def test_lora_runs_two_processes_through_the_command(lora_run):
    root, result = lora_run
    assert result.exit_code == 0, result.output
    run = root / "run"
    for name in ("launch.sh", "command.json", "settings.json", "versions.json",
                 "run_config.json", "lora.log", "metrics.jsonl"):
        assert (run / name).is_file(), name
    config = json.loads((run / "run_config.json").read_text())
    assert config["nproc"] == 2 and config["steps"] == 2 and config["lr"] == 1e-2
    assert config["lora"]["rank"] == 4 and config["lora"]["alpha"] == 8.0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(math.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    assert (run / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "2 processes on cpu" in (run / "lora.log").read_text()
    assert "samples/s" in result.stdout and f"lora: {run / 'lora'}" in result.stdout


def test_lora_records_what_merge_lora_needs(lora_run):
    root, result = lora_run
    assert result.exit_code == 0, result.output
    ws = Workspace.load(root)
    assert ws.get("runs", "lora_save") == str(root / "run" / "lora")
    assert ws.get("runs", "lora_rank") == 4 and ws.get("runs", "lora_alpha") == 8.0
    assert ws.get("runs", "last_lora") == str(root / "run")


def test_merge_lora_needs_no_flags_after_a_diffusers_lora(lora_run, tiny_model):
    root, first = lora_run
    assert first.exit_code == 0, first.output
    result = _cogvx(root, "--json", "merge-lora", "--target", root / "merged")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["base"] == str(tiny_model("t2v-1.0") / "transformer")
    assert (info["rank"], info["alpha"]) == (4, 8.0)
    assert (root / "merged" / "config.json").is_file()


def test_auto_pick_says_which_backend_and_why(lora_run):
    _, result = lora_run
    assert result.exit_code == 0, result.output
    assert "backend diffusers: torch_npu" in result.stderr or \
        "backend diffusers: a MindSpeed-MM checkout not found" in result.stderr
    assert "cogvx lora t2v-1.0 on diffusers: 2 processes" in result.stderr


def test_resume_continues_from_the_saved_step(lora_run):
    root, first = lora_run
    assert first.exit_code == 0, first.output
    result = _cogvx(root, "lora", "--backend", "diffusers", "--nproc-per-node", 2,
                    "--iters", 3, "--lora-r", 4, "--lora-alpha", 8, "--lr", "1e-2",
                    "--resume", root / "run", "--run-dir", root / "resumed")
    assert result.exit_code == 0, result.output
    log = (root / "resumed" / "lora.log").read_text()
    assert f"resumed from {root / 'run' / 'checkpoints' / 'step-000002'} at step 2" in log
    metrics = (root / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [3]


def test_infer_writes_videos_with_the_requested_shape(workspace):
    import av

    prompts = workspace / "prompts.txt"
    prompts.write_text("a red square\na green disc\n")
    result = _cogvx(workspace, "infer", "--backend", "diffusers", "--prompts", prompts,
                    "--steps", 2, "--frames", 9, "--height", 32, "--width", 64, "--fps", 10,
                    "--seed", 1, "--out", workspace / "videos", "--run-dir",
                    workspace / "run")
    assert result.exit_code == 0, result.output
    for index in range(2):
        path = workspace / "videos" / f"video_{index:03d}.mp4"
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            assert (stream.codec_context.width, stream.codec_context.height) == (64, 32)
            assert float(stream.average_rate) == 10.0
        assert frames == 9
        settings = json.loads(path.with_suffix(".json").read_text())
        assert settings["seed"] == 1 + index and settings["prompt"] == prompts.read_text(
        ).splitlines()[index]
        assert (settings["steps"], settings["fps"], settings["frames"]) == (2, 10, 9)
    assert (workspace / "run" / "launch.sh").is_file()
    assert Workspace.load(workspace).get("runs", "last_infer") == str(workspace / "run")


def test_dry_run_shows_the_worker_launch_and_writes_nothing(workspace, tmp_path):
    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    (lora_dir / "pytorch_lora_weights.safetensors").write_bytes(b"")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    result = _cogvx(workspace, "--json", "infer", "--prompts", prompts, "--lora", lora_dir,
                    "--steps", 3, "--run-dir", tmp_path / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["backend"] == "diffusers" and "not found" in info["backend_reason"]
    argv = info["argv"]
    assert argv[argv.index("--master_addr") + 1] == "127.0.0.1"
    assert argv[-4:] == ["-m", "cogvideo_cli.backends.diffusers.infer_worker", "--config",
                         str(tmp_path / "run" / "run_config.json")]
    config = json.loads(info["configs"]["run_config.json"])
    assert config["lora"] == str(lora_dir) and config["steps"] == 3
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, words", [
    (["--tp", 2], "--tp is not supported by the diffusers backend"),
    (["--cp", 2], "--cp is not supported"),
    (["--set", "predictor.num_layers=4"], "--set is not supported"),
    (["--nnodes", 2, "--master-addr", "10.0.0.1"], "2 options are not supported"),
    (["--grad-acc", 4], "--grad-acc is not supported"),
    (["--min-lr", "1e-6"], "--min-lr is not supported"),
])
def test_refused_options_name_the_value_and_the_fix(workspace, extra, words):
    result = _cogvx(workspace, "lora", "--backend", "diffusers", *extra, "--dry-run")
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert "pass --backend mindspeed" in result.stderr
    assert not (workspace / "runs").exists()


def test_train_refuses_layerzero_on_diffusers(workspace):
    result = _cogvx(workspace, "train", "--backend", "diffusers", "--layerzero", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "--layerzero is not supported by the diffusers backend: it has no ZeRO-3 (got " \
        "True)" in result.stderr


def test_a_mindspeed_checkpoint_is_refused_with_the_conversion(workspace, tmp_path):
    mm = tmp_path / "mm"
    mm.mkdir()
    (mm / "latest_checkpointed_iteration.txt").write_text("release")
    result = _cogvx(workspace, "train", "--backend", "diffusers", "--load", mm, "--dry-run")
    assert result.exit_code == 2, result.output
    assert "cogvx convert mm-to-hf" in result.stderr


def test_options_only_diffusers_has_are_refused_on_mindspeed(workspace):
    result = _cogvx(workspace, "lora", "--backend", "mindspeed", "--resume", workspace,
                    "--dry-run")
    assert result.exit_code == 2 and "--resume is for the diffusers backend" in result.stderr
    extract = _cogvx(workspace, "extract-features", "--backend", "diffusers", "--dry-run")
    assert extract.exit_code == 1 and "MindSpeed-MM only" in extract.stderr


def test_auto_pick_chooses_mindspeed_with_torch_npu_and_a_checkout(tmp_path, monkeypatch):
    from cogvideo_cli.backends import choose_backend
    from cogvideo_cli.core.config import RunSettings

    monkeypatch.delenv("MINDSPEED_MM_PATH", raising=False)
    ws = Workspace.load(tmp_path)
    checkout = tmp_path / "MindSpeed-MM"
    checkout.mkdir()
    settings = RunSettings(backend="auto", mindspeed=str(checkout))
    name, why = choose_backend(settings, ws)
    assert name == "diffusers" and why.startswith("torch_npu not found")

    fake = tmp_path / "site"
    (fake / "torch_npu").mkdir(parents=True)
    (fake / "torch_npu" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(fake))
    name, why = choose_backend(settings, ws)
    assert name == "mindspeed" and str(checkout) in why

    ws.record("workspace", backend="diffusers")
    assert choose_backend(settings, ws)[0] == "diffusers"


def test_full_fine_tuning_plans_a_transformer_output(workspace, tmp_path):
    result = _cogvx(workspace, "--json", "train", "--backend", "diffusers", "--iters", 5,
                    "--nproc-per-node", 2, "--save-interval", 2, "--run-dir", tmp_path / "run",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    config = json.loads(info["configs"]["run_config.json"])
    assert config["kind"] == "train" and config["lora"] is None
    assert (config["lr"], config["steps"], config["save_every"]) == (1e-5, 5, 2)
    assert info["outputs"]["weights"] == str(tmp_path / "run" / "transformer")
    assert info["global_batch"] == 2 and info["world_size"] == 2
    assert not (tmp_path / "run").exists()


def test_resume_takes_rank_alpha_and_processes_from_the_checkpoint(lora_run):
    """No --lora-r / --lora-alpha / --nproc-per-node: the checkpoint's 4, 8 and 2 processes
    (the defaults 128 / 64 / 1 would not fit it)."""
    root, first = lora_run
    assert first.exit_code == 0, first.output
    result = _cogvx(root, "lora", "--iters", 3, "--resume", root / "run", "--run-dir",
                    root / "flagless")
    assert result.exit_code == 0, result.output
    config = json.loads((root / "flagless" / "run_config.json").read_text())
    assert config["lora"]["rank"] == 4 and config["lora"]["alpha"] == 8.0
    assert config["nproc"] == 2
    assert "at step 2" in (root / "flagless" / "lora.log").read_text()


@pytest.mark.parametrize("extra, words", [
    (["--lora-r", 8], "--lora-r 8 does not match the checkpoint"),
    (["--lora-alpha", 16], "--lora-alpha 16.0 does not match the checkpoint"),
    (["--nproc-per-node", 1], "Fix: resume with --nproc-per-node 2"),
])
def test_resume_refuses_values_that_do_not_fit_before_launch(lora_run, extra, words):
    root, first = lora_run
    assert first.exit_code == 0, first.output
    result = _cogvx(root, "lora", "--iters", 3, "--resume", root / "run", *extra,
                    "--run-dir", root / "refused", "--dry-run")
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert not (root / "refused").exists()


def test_a_workspace_variant_never_blames_a_flag_nobody_passed(workspace, tmp_path):
    Workspace.load(workspace).record("workspace", variant="t2v-1.5")
    result = _cogvx(workspace, "--json", "lora", "--dry-run", "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["variant"] == "t2v-1.0"
    assert any("the workspace's [workspace] variant is t2v-1.5" in n for n in info["notes"])
    given = _cogvx(workspace, "lora", "--variant", "t2v-1.5", "--dry-run")
    assert given.exit_code == 2
    assert "--variant t2v-1.5 does not match the model, which is t2v-1.0" in given.stderr


def test_load_decides_the_variant_and_the_data_must_fit_its_clip(workspace, tiny_model):
    """The data was checked for 9-frame clips; a t2v-1.5 model trains 13 by default."""
    result = _cogvx(workspace, "lora", "--load", tiny_model("t2v-1.5"), "--dry-run")
    assert result.exit_code == 2, result.output
    assert "was checked for 9-frame clips; this run takes 13" in result.stderr
    assert "--variant t2v-1.5 --frames 13" in result.stderr
    assert "does not match" not in result.stderr
