"""Real runs on CPU: two-process torchrun training, resume, merging, inference, i2v.

The tiny model keeps each torchrun launch to seconds; every launch rendezvouses on
127.0.0.1 at a port picked free at test time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cogvideo_cli.backends.diffusers import engine, infer_worker

SAMPLE = {"steps": 2, "guidance": 6.0, "dynamic_cfg": True, "frames": 9, "height": 32,
          "width": 48, "text_length": 226}


def _run(plan):
    lines: list[str] = []
    code = engine.run(plan, on_line=lines.append)
    assert code == 0, "\n".join(lines[-40:])
    return lines


@pytest.fixture(scope="module")
def lora_run(tiny_model, clips, tmp_path_factory):
    """Two processes, three LoRA steps (rank 4, alpha 8), a checkpoint after each."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    plan = engine.plan_train(model=tiny_model("t2v-1.0"), data_path=clips / "data.jsonl",
                             run_dir=run_dir, steps=3, nproc=2, save_every=1, lr=1e-2,
                             lora_rank=4, lora_alpha=8, seed=7)
    return plan, _run(plan)


def test_two_process_lora_run_logs_finite_loss(lora_run):
    plan, lines = lora_run
    metrics = engine.read_metrics(plan.run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for record in metrics:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert record["lr"] == pytest.approx(1e-2)
        assert record["step_time_s"] > 0 and record["samples_per_s"] > 0
    assert any("2 processes on cpu" in line for line in lines)
    assert "step 3/3 loss" in plan.log_path.read_text()
    lora = plan.run_dir / "lora"
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((lora / "lora.json").read_text())["alpha"] == 8.0
    assert engine.latest_checkpoint(plan.run_dir).name == "step-000003"


def test_saved_lora_changes_the_output(lora_run, tiny_model):
    plan, _ = lora_run
    cfg = {**SAMPLE, "model": str(tiny_model("t2v-1.0"))}
    base = infer_worker.sample(infer_worker.load_pipeline(cfg), cfg, "a horse runs", None, 3)
    tuned_pipe = infer_worker.load_pipeline({**cfg, "lora": str(plan.run_dir / "lora")})
    tuned = infer_worker.sample(tuned_pipe, cfg, "a horse runs", None, 3)
    assert np.abs(base - tuned).max() > 1e-3


def test_resume_continues_from_the_saved_step(lora_run, tmp_path):
    plan, _ = lora_run
    first = engine.read_metrics(plan.run_dir)
    resumed = engine.plan_train(
        model=plan.config["model"], data_path=plan.config["data_path"],
        run_dir=tmp_path / "resumed", steps=3, nproc=2, lr=1e-2, lora_rank=4, lora_alpha=8,
        seed=7, resume=plan.run_dir / "checkpoints" / "step-000001")
    lines = _run(resumed)
    assert any("resumed from" in line and "at step 1" in line for line in lines)
    again = engine.read_metrics(resumed.run_dir)
    assert [m["step"] for m in again] == [2, 3]
    # step 2 needs the weights, RNG and data order back; step 3 also the Adam moments
    for resumed_step, original in zip(again, first[1:]):
        assert resumed_step["loss"] == pytest.approx(original["loss"], rel=1e-5)


def test_merged_lora_matches_lora_on_the_fly(lora_run, tiny_model, tmp_path):
    """Tolerance: 1e-4 absolute on frames in [0, 1] (float32 rounding of W + s*B@A)."""
    from safetensors.torch import load_file

    plan, _ = lora_run
    model = tiny_model("t2v-1.0")
    merged = tmp_path / "merged"
    engine.merge_lora(model=model, lora=plan.run_dir / "lora", out=merged)

    # the recorded alpha is used: W' = W + alpha / rank * B @ A, with alpha 8 and rank 4
    base = load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")
    fused = load_file(merged / "diffusion_pytorch_model.safetensors")
    lora = load_file(plan.run_dir / "lora" / "pytorch_lora_weights.safetensors")
    name = "transformer_blocks.0.attn1.to_q"
    delta = 2.0 * lora[f"transformer.{name}.lora_B.weight"] @ \
        lora[f"transformer.{name}.lora_A.weight"]
    assert np.allclose(fused[f"{name}.weight"] - base[f"{name}.weight"], delta, atol=1e-6)

    cfg = {**SAMPLE, "model": str(model)}
    on_the_fly = infer_worker.sample(
        infer_worker.load_pipeline({**cfg, "lora": str(plan.run_dir / "lora")}),
        cfg, "a man talks in a car", None, 11)
    from_merged = infer_worker.sample(
        infer_worker.load_pipeline({**cfg, "transformer": str(merged)}),
        cfg, "a man talks in a car", None, 11)
    assert np.abs(on_the_fly - from_merged).max() < 1e-4


def test_full_finetune_i2v_15_saves_a_transformer(tiny_model, clips, tmp_path):
    from safetensors.torch import load_file

    model = tiny_model("i2v-1.5")
    plan = engine.plan_train(kind="train", model=model, data_path=clips / "data.jsonl",
                             run_dir=tmp_path / "full", steps=1, nproc=1, lr=1e-3)
    _run(plan)
    assert math.isfinite(engine.read_metrics(plan.run_dir)[0]["loss"])
    # no save_every: the last step still leaves a checkpoint to resume from
    assert engine.latest_checkpoint(plan.run_dir).name == "step-000001"
    meta = json.loads((engine.latest_checkpoint(plan.run_dir) / "checkpoint.json").read_text())
    assert (meta["kind"], meta["world_size"], meta["variant"]) == ("train", 1, "i2v-1.5")
    # launch.sh run again (same run directory, from step 1): a fresh step series
    _run(plan)
    assert [m["step"] for m in engine.read_metrics(plan.run_dir)] == [1]
    name = "diffusion_pytorch_model.safetensors"
    before = load_file(model / "transformer" / name)
    after = load_file(plan.run_dir / "transformer" / name)
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[k], after[k]) for k in before if "ofs_embedding" in k)


def test_inference_writes_mp4s_with_the_requested_clip(tiny_model, tmp_path):
    import decord

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat sits on a red sofa\na dog runs in the park\n")
    plan = engine.plan_infer(model=tiny_model("t2v-1.5"), prompts=prompts,
                             run_dir=tmp_path / "infer", steps=2, frames=17, height=32,
                             width=64, fps=10, seed=5)
    _run(plan)
    from cogvideo_cli.backends.diffusers.media import video_facts

    for index, prompt in enumerate(["a cat sits on a red sofa", "a dog runs in the park"]):
        video = plan.run_dir / "videos" / f"video_{index:03d}.mp4"
        assert video_facts(video) == {"frames": 17, "width": 64, "height": 32, "fps": 10.0}
        reader = decord.VideoReader(str(video))
        assert (len(reader), reader[0].shape) == (17, (32, 64, 3))
        settings = json.loads(video.with_suffix(".json").read_text())
        assert settings["prompt"] == prompt and settings["seed"] == 5 + index
        assert (settings["steps"], settings["fps"], settings["frames"]) == (2, 10, 17)


@pytest.mark.parametrize("variant, frames", [("i2v-1.0", 9), ("i2v-1.5", 17)])
def test_i2v_uses_its_image(tiny_model, tmp_path, variant, frames):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png"):
        pixels = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    cfg = {**SAMPLE, "frames": frames, "model": str(tiny_model(variant))}
    pipe = infer_worker.load_pipeline(cfg)
    first, second, repeat = (infer_worker.sample(pipe, cfg, "a bunny", image, 0)
                             for image in (paths[0], paths[1], paths[0]))
    assert first.shape == (frames, 32, 48, 3)
    assert np.array_equal(first, repeat)
    assert np.abs(first - second).max() > 1e-3


def test_a_checkpoint_of_another_lora_rank_is_refused_by_name():
    """load_state_dict(strict=False) raises a bare RuntimeError on a shape mismatch."""
    import torch

    from cogvideo_cli.backends.diffusers.train_worker import check_fit
    from cogvideo_cli.core.errors import CogvxError

    model = torch.nn.ModuleDict({"to_q": torch.nn.ModuleDict(
        {"lora_A": torch.nn.Linear(32, 128, bias=False)})})
    saved = {"to_q.lora_A.weight": torch.zeros(4, 32)}
    with pytest.raises(CogvxError, match=r"\[4, 32\] in the checkpoint .* \[128, 32\] in this "
                       r"model \(LoRA rank 4, this run has 128\)") as err:
        check_fit(saved, model, Path("ckpt"))
    assert "--lora-r" in err.value.fix
    with pytest.raises(CogvxError, match="do not fit this model"):
        check_fit({"other.weight": torch.zeros(1)}, model, Path("ckpt"))
    check_fit({"to_q.lora_A.weight": torch.zeros(128, 32)}, model, Path("ckpt"))


def test_a_clip_the_reader_cannot_read_is_a_data_error_naming_it(tmp_path):
    """decord's get_batch fails on 48x32 H.264 (4-channel frames): no raw DECORDError."""
    from cogvideo_cli.backends.diffusers import media
    from cogvideo_cli.core.errors import DataError
    from cogvideo_cli.data.rules import SamplingSettings

    pytest.importorskip("decord")
    frames = np.random.default_rng(0).integers(0, 256, size=(24, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "small.mp4"
    media.write_mp4(path, frames, 8)
    settings = SamplingSettings(num_frames=9, train_fps=8, skip_frames=0, height=32,
                                width=48)
    with pytest.raises(DataError, match="small.mp4: the video reader") as err:
        media.load_clip(path, settings)
    assert "re-encode it at another size" in err.value.fix
