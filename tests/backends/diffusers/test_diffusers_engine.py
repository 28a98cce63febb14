"""Planning runs: every check before a byte is written, and what the run directory holds."""

from __future__ import annotations

import json
import sys

import pytest

from cogvideo_cli.backends.diffusers import engine
from cogvideo_cli.core.errors import CheckError, DataError, UsageError


def test_plan_train_writes_config_and_exact_command(tiny_model, clips, tmp_path):
    plan = engine.plan_train(model=tiny_model("t2v-1.5"), data_path=clips / "data.jsonl",
                             run_dir=tmp_path / "run", steps=3, nproc=2, master_port=29999,
                             lora_rank=4, lora_alpha=8)
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["frames"] == 13 and (config["height"], config["width"]) == (32, 48)
    assert config["lora"] == {"rank": 4, "alpha": 8.0,
                              "targets": ["to_q", "to_k", "to_v", "to_out.0"]}
    assert config["data_folder"] == str(clips) and config["random_weights"] is True
    command = json.loads((tmp_path / "run" / "command.json").read_text())
    assert command["argv"] == plan.argv == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes",
        "1", "--master_addr", "127.0.0.1", "--master_port", "29999", "-m",
        "cogvideo_cli.backends.diffusers.train_worker", "--config",
        str(tmp_path / "run" / "run_config.json")]


def test_dry_plan_writes_nothing(tiny_model, clips, tmp_path):
    plan = engine.plan_train(model=tiny_model("t2v-1.0"), data_path=clips / "data.jsonl",
                             run_dir=tmp_path / "run", write=False)
    assert not (tmp_path / "run").exists() and plan.config["frames"] == 9


@pytest.mark.parametrize("kwargs, error, words", [
    ({"frames": 10}, UsageError, r"4k\+1"),
    ({"frames": 9}, UsageError, "even"),  # 1.5 training needs an even latent count
    ({"height": 40}, UsageError, "multiple of 16"),
    ({"variant": "t2v-1.0"}, UsageError, "does not match"),
    ({"nproc": 3}, CheckError, "cannot fill one step"),
    ({"kind": "dpo"}, UsageError, "lora or train"),
    ({"steps": 0}, UsageError, "--steps"),
])
def test_plan_train_rejects(tiny_model, clips, tmp_path, kwargs, error, words):
    with pytest.raises(error, match=words):
        engine.plan_train(**{"model": tiny_model("t2v-1.5"), "data_path": clips / "data.jsonl",
                             "run_dir": tmp_path / "run", **kwargs})
    assert not (tmp_path / "run").exists()


def test_plan_rejects_a_folder_that_is_no_pipeline(tmp_path, clips):
    with pytest.raises(CheckError, match="model_index.json"):
        engine.plan_train(model=tmp_path, data_path=clips / "data.jsonl",
                          run_dir=tmp_path / "run")


def test_learned_position_table_fixes_the_size(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    image = tmp_path / "i.png"
    _png(image)
    with pytest.raises(UsageError, match="learned position table fixed at 32x48"):
        engine.plan_infer(model=tiny_model("i2v-1.0"), prompts=prompts, images=image,
                          run_dir=tmp_path / "run", height=48, width=48)


def test_plan_infer_checks_frames_and_images(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n\na dog\n")
    with pytest.raises(UsageError, match="8k\\+1"):
        engine.plan_infer(model=tiny_model("t2v-1.0"), prompts=prompts,
                          run_dir=tmp_path / "r", frames=13)
    with pytest.raises(UsageError, match="one image per prompt"):
        engine.plan_infer(model=tiny_model("i2v-1.5"), prompts=prompts, run_dir=tmp_path / "r")
    images = tmp_path / "images.txt"
    images.write_text("a.png\n")
    with pytest.raises(UsageError, match="1 images for 2 prompts"):
        engine.plan_infer(model=tiny_model("i2v-1.5"), prompts=prompts, images=images,
                          run_dir=tmp_path / "r")
    plan = engine.plan_infer(model=tiny_model("t2v-1.5"), prompts=prompts,
                             run_dir=tmp_path / "r", write=False)
    assert plan.config["prompts"] == ["a cat", "a dog"] and plan.config["frames"] == 17


def test_pick_backend_says_why(tmp_path):
    name, why = engine.pick_backend(None)
    assert name == "diffusers" and "MindSpeed-MM checkout" in why


def test_plan_train_names_missing_videos(tiny_model, clips, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text((clips / "data.jsonl").read_text()
                    + json.dumps({"file": "videos/gone.mp4", "captions": "x"}) + "\n")
    with pytest.raises(DataError, match="line 3: .*gone.mp4 does not exist"):
        engine.plan_train(model=tiny_model("t2v-1.0"), data_path=data, data_folder=clips,
                          run_dir=tmp_path / "run")


def _png(path):
    from PIL import Image

    Image.new("RGB", (48, 32), (200, 10, 10)).save(path)


def test_plan_infer_opens_every_image(tiny_model, tmp_path):
    """A text file listed as an image fails while planning, named; not in the worker."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    _png(tmp_path / "a.png")
    (tmp_path / "notes.png").write_text("not a picture\n")
    images = tmp_path / "images.txt"
    images.write_text("a.png\nnotes.png\n")
    with pytest.raises(DataError, match="notes.png cannot be read as an image"):
        engine.plan_infer(model=tiny_model("i2v-1.5"), prompts=prompts, images=images,
                          run_dir=tmp_path / "r", write=False)
    images.write_text("a.png\na.png\n")
    plan = engine.plan_infer(model=tiny_model("i2v-1.5"), prompts=prompts, images=images,
                             run_dir=tmp_path / "r", write=False)
    assert plan.config["images"] == [str(tmp_path / "a.png")] * 2
