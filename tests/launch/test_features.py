"""Feature extraction, then training from the features; LoRA bookkeeping."""

from __future__ import annotations

import json
import sys

from standin import free_port
from test_launch import _cogvx, _finish

from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.workspace import Workspace
from cogvideo_cli.launch.run import prepare_run, record_run


def test_extract_then_train_from_features(tree, tmp_path):
    code, out, err = _finish(_cogvx(
        tmp_path, "extract-features", "--variant", "t2v-1.0", "--backend", "mindspeed",
        "--mindspeed-mm", tree.mm,
        "--vae", tree.weights["vae"], "--t5", tree.weights["t5"], "--tokenizer",
        tree.weights["tokenizer"], "--data", tree.data, "--nproc-per-node", 2,
        "--master-port", free_port(), "--python", sys.executable,
        "--run-dir", tmp_path / "extract"))
    assert code == 0, err
    features = tmp_path / "features"
    assert (features / "data.jsonl").is_file()
    assert f'features = "{features}"' in (tmp_path / "cogvx.toml").read_text()

    code, out, err = _finish(_cogvx(
        tmp_path, "--json", "train", "--variant", "t2v-1.0", "--backend", "mindspeed",
        "--mindspeed-mm", tree.mm,
        "--load", tree.ckpt, "--use-features", "--tp", 1, "--nproc-per-node", 2,
        "--dry-run"))
    assert code == 0, err
    configs = json.loads(out)["configs"]
    data, model = json.loads(configs["data.json"]), json.loads(configs["model.json"])
    assert data["dataset_param"]["dataset_type"] == "feature"
    assert data["dataset_param"]["basic_parameters"]["data_path"] == \
        str(features / "data.jsonl")
    assert model["load_video_features"] and model["load_text_features"]


def test_lora_records_rank_and_alpha_for_merge(tree, tmp_path):
    ws = Workspace.load(tmp_path)
    settings = RunSettings(kind="lora", variant="t2v-1.0", nproc_per_node=2, lora_r=64,
                           lora_alpha=32, load=str(tree.ckpt), data_path=str(tree.data),
                           vae=str(tree.weights["vae"]), t5=str(tree.weights["t5"]),
                           tokenizer=str(tree.weights["tokenizer"]), mindspeed=str(tree.mm),
                           run_dir=str(tmp_path / "run"))
    plan = prepare_run(settings, ws)
    assert plan.args["lora-r"] == 64 and plan.args["lora-alpha"] == 32
    assert "recompute-granularity" not in plan.args and not plan.args["sequence-parallel"]
    record_run(plan, ws)
    again = Workspace.load(tmp_path)
    assert again.get("runs", "lora_rank") == 64
    assert again.get("runs", "lora_alpha") == 32.0
    assert again.get("runs", "lora_save") == str(tmp_path / "run" / "checkpoints")
