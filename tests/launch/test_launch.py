"""Real torchrun launches (gloo, CPU, 127.0.0.1) against the stand-in MindSpeed-MM tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from standin import free_port

from cogvideo_cli.launch.supervise import descendants

TIMEOUT = 120


def _cogvx(workspace: Path, *args, env: dict | None = None) -> subprocess.Popen:
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full.pop("COGVX_WORKSPACE", None)
    return subprocess.Popen([sys.executable, "-m", "cogvideo_cli", "-w", str(workspace),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full, cwd=workspace)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def _train_args(tree, run: Path, *extra) -> list:
    return ["train", *tree.train_options(), "--nproc-per-node", 2, "--tp", 1, "--iters", 3,
            "--master-port", free_port(), "--run-dir", run, *extra]


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_train_launches_torchrun_and_records_the_run(tree, tmp_path):
    run = tmp_path / "run"
    code, out, err = _finish(_cogvx(tmp_path, "--json", *_train_args(tree, run)))
    assert code == 0, err
    result = json.loads(out)
    assert result["run_dir"] == str(run)
    assert result["throughput"]["step_time_ms"] == pytest.approx(215.0)  # iterations 2 and 3
    assert result["throughput"]["samples_per_second"] == pytest.approx(8 * 1000 / 215.0,
                                                                        rel=1e-3)
    for name in ("model.json", "data.json", "tools.json", "launch.sh", "command.json",
                 "settings.json", "versions.json", "train.log"):
        assert (run / name).is_file(), name
    log = (run / "train.log").read_text()
    assert "[rank 1] world 2 tp 1 gbs 8" in log
    assert "loaded" in log and "from release/mp_rank_00" in log
    assert (run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text() == "3"
    command = json.loads((run / "command.json").read_text())
    assert command["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert "--exit-on-missing-checkpoint" in command["argv"]
    assert f'last_train = "{run}"' in (tmp_path / "cogvx.toml").read_text()


def test_a_failing_rank_exit_code_reaches_the_user(tree, tmp_path):
    proc = _cogvx(tmp_path, *_train_args(tree, tmp_path / "run"),
                  env={"STANDIN_FAIL_RANK": "1", "STANDIN_EXIT_CODE": "3"})
    code, out, err = _finish(proc)
    assert code == 3, err
    assert "rank 1 failed with exit code 3" in err
    assert "failing on purpose with 3" in (tmp_path / "run" / "train.log").read_text()


def test_a_random_weights_line_stops_the_run(tree, tmp_path):
    pids = tmp_path / "pids"
    proc = _cogvx(tmp_path, *_train_args(tree, tmp_path / "run"),
                  env={"STANDIN_MODE": "random", "STANDIN_PIDS": str(pids)})
    code, out, err = _finish(proc)
    assert code == 1
    assert "starting from random weights" in err and "will start from random" in err
    ranks = [int(p.read_text()) for p in pids.glob("*.pid")]
    assert ranks and _gone(ranks)


def test_a_failed_run_leaves_the_workspace_records_alone(tree, tmp_path):
    """lora_save must never name the folder of a run that did not finish."""
    toml = tmp_path / "cogvx.toml"
    args = ["lora", *tree.train_options(), "--nproc-per-node", 2, "--tp", 1, "--iters", 3,
            "--master-port", free_port(), "--lora-r", 8, "--lora-alpha", 16]
    code, out, err = _finish(_cogvx(tmp_path, *args, "--run-dir", tmp_path / "good"))
    assert code == 0, err
    before = toml.read_text()
    assert f'lora_save = "{tmp_path / "good" / "checkpoints"}"' in before
    assert "lora_rank = 8" in before
    failed = [*args[:-4], "--lora-r", 4, "--lora-alpha", 4, "--run-dir", tmp_path / "bad"]
    code, out, err = _finish(_cogvx(tmp_path, *failed, env={"STANDIN_FAIL_RANK": "0",
                                                            "STANDIN_EXIT_CODE": "3"}))
    assert code == 3, err
    assert toml.read_text() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_leaves_no_process_behind(tree, tmp_path, sig):
    pids = tmp_path / "pids"
    proc = _cogvx(tmp_path, "--json", *_train_args(tree, tmp_path / "run"),
                  env={"STANDIN_MODE": "hang", "STANDIN_PIDS": str(pids)})
    deadline = time.monotonic() + TIMEOUT
    while len(list(pids.glob("*.pid"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    tree_pids = descendants(proc.pid)
    ranks = [int(p.read_text()) for p in pids.glob("*.pid")]
    assert set(ranks) <= set(tree_pids)
    proc.send_signal(sig)
    code, out, err = _finish(proc)
    assert code == 128 + sig, err
    assert "Interrupted; nothing half-written was kept." in err
    assert json.loads(out)["exit_code"] == 128 + sig  # --json: the error object on stdout
    assert _gone(tree_pids), "processes left behind"
    toml = tmp_path / "cogvx.toml"
    assert not toml.exists() or "last_train" not in toml.read_text()


def test_two_nodes_on_one_host(tree, tmp_path):
    run = tmp_path / "run"
    port = free_port()
    node0 = _cogvx(tmp_path, "train", *tree.train_options(), "--nproc-per-node", 1, "--tp", 1,
                   "--iters", 2, "--nnodes", 2, "--node-rank", 0, "--single-host",
                   "--master-port", port, "--run-dir", run)
    script = run / "launch.sh"
    deadline = time.monotonic() + TIMEOUT
    while not script.is_file() and time.monotonic() < deadline:
        assert node0.poll() is None, node0.communicate()
        time.sleep(0.1)
    # node 1 runs the standalone script, as another machine would: no cogvx involved
    node1 = subprocess.run(["bash", str(script)], env={**os.environ, "NODE_RANK": "1"},
                           capture_output=True, text=True, timeout=TIMEOUT)
    code, out, err = _finish(node0)
    assert code == 0, err
    assert node1.returncode == 0, node1.stdout + node1.stderr
    assert "[rank 1] world 2" in (run / "train-launch-node1.log").read_text()
    assert "[rank 0] world 2" in (run / "train-node0.log").read_text()
    assert "start node 1 with: NODE_RANK=1 bash" in err


def test_launch_sh_keeps_a_failing_exit_status(tree, tmp_path):
    """pipefail: torchrun's failure survives the tee, with no cogvx involved."""
    run = tmp_path / "run"
    code, out, err = _finish(_cogvx(tmp_path, *_train_args(tree, run)))
    assert code == 0, err
    done = subprocess.run(["bash", str(run / "launch.sh")], capture_output=True, text=True,
                          env={**os.environ, "STANDIN_FAIL_RANK": "0",
                               "STANDIN_EXIT_CODE": "5"}, timeout=TIMEOUT)
    assert done.returncode != 0
    assert "failing on purpose with 5" in done.stdout


def test_infer_writes_one_video_per_prompt(tree, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\na bird\n")
    out_dir = tmp_path / "videos"
    code, out, err = _finish(_cogvx(
        tmp_path, "--json", "infer", *tree.options(), "--prompts", prompts,
        "--nproc-per-node", 2, "--master-port", free_port(), "--out", out_dir,
        "--run-dir", tmp_path / "run", "--steps", 5))
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [f"video_{i}.mp4" for i in range(3)]
    assert json.loads(out)["outputs"]["samples"] == str(out_dir)
    config = json.loads((tmp_path / "run" / "inference.json").read_text())
    assert config["diffusion"]["num_inference_steps"] == 5
