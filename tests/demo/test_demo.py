"""``cogvx demo`` end to end on CPU: every stage runs, and what it wrote is read back.

The demo runs once per module (about half a minute on two cores); the tests then check
its files independently of the demo's own checks: videos decoded with PyAV, tensors
compared with torch, the merge recomputed from the LoRA factors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cogvideo_cli.cli.app import app
from cogvideo_cli.core.workspace import Workspace

STAGES = ("tiny model", "videos", "prepare-data", "convert", "lora", "merge-lora", "sample")


def _cogvx(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _decode(path: Path) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a video, decoded frame by frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return (frames, stream.codec_context.width, stream.codec_context.height,
                float(stream.average_rate))


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    found = {}
    for shard in sorted(folder.glob("*.safetensors")):
        found.update(load_file(str(shard)))
    assert found, f"no weights in {folder}"
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = _cogvx("demo", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_every_stage_is_shown_with_its_time(demo):
    out, result = demo
    for index, name in enumerate(STAGES, start=1):
        assert f"[demo {index}/7] {name} ..." in result.stderr
        assert f"[demo {index}/7] {name} done in " in result.stderr
    assert "[cogvx-train] step 4/4 loss" in result.stderr
    summary = json.loads((out / "cogvx-demo.json").read_text())
    assert [row["stage"] for row in summary["stages"]] == list(STAGES)
    assert all(row["seconds"] >= 0 for row in summary["stages"])
    for name in STAGES:
        assert name in result.stdout
    assert "round trip bit-exact over 64 tensors" in result.stderr


def test_the_sampled_videos_are_real_mp4s_of_the_asked_shape(demo):
    out, result = demo
    videos = sorted((out / "runs" / "sample" / "videos").glob("video_*.mp4"))
    assert len(videos) == 2
    for index, path in enumerate(videos):
        assert _decode(path) == (9, 48, 32, 8.0)
        assert f"{path}: 9 frames, 48x32, 8 fps" in result.stdout
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["transformer"] == str(out / "checkpoints" / "t2v-1.0-merged")
        assert record["steps"] == 4 and record["seed"] == index


def test_the_training_videos_were_encoded_and_prepared(demo):
    out, _ = demo
    sources = sorted((out / "videos").glob("*.mp4"))
    assert len(sources) == 4
    for path in sources:
        assert _decode(path) == (48, 96, 64, 16.0)
        assert path.with_suffix(".txt").read_text().strip()
    rows = [json.loads(line) for line in (out / "data" / "data.jsonl").read_text().splitlines()]
    assert sorted(row["file"] for row in rows) == sorted(p.name for p in sources)
    assert json.loads((out / "data" / "report.json").read_text())["summary"]["rejected"] == 0


def test_the_conversion_round_trip_is_bit_exact(demo):
    import torch

    out, _ = demo
    mm = out / "checkpoints" / "t2v-1.0-mm-tp2-pp2"
    ranks = sorted(p.name for p in (mm / "release").iterdir())
    assert ranks == ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]
    before = _weights(out / "model" / "transformer")
    after = _weights(out / "checkpoints" / "t2v-1.0-hf-roundtrip")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name


def test_two_processes_trained_the_lora_with_finite_loss(demo):
    out, _ = demo
    run = out / "runs" / "lora"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    assert "2 processes on cpu" in (run / "lora.log").read_text()
    assert (run / "launch.sh").is_file()


def test_the_merge_changes_exactly_the_lora_targets_by_alpha_over_r_b_a(demo):
    import torch
    from safetensors.torch import load_file

    out, _ = demo
    base = _weights(out / "model" / "transformer")
    merged = _weights(out / "checkpoints" / "t2v-1.0-merged")
    lora = load_file(str(out / "runs" / "lora" / "lora" / "pytorch_lora_weights.safetensors"))
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    targets = {"to_q", "to_k", "to_v", "to_out.0"}
    assert changed and all(name.rsplit(".", 2)[-2] in targets or
                           name.endswith("to_out.0.weight") for name in changed)
    name = "transformer_blocks.0.attn1.to_q.weight"
    a = lora[f"transformer.{name[:-len('.weight')]}.lora_A.weight"]
    b = lora[f"transformer.{name[:-len('.weight')]}.lora_B.weight"]
    expected = base[name].float() + 8.0 / 4 * (b.float() @ a.float())
    assert name in changed
    torch.testing.assert_close(merged[name].float(), expected, rtol=0, atol=1e-6)


def test_the_workspace_chains_the_stages(demo):
    out, _ = demo
    ws = Workspace.load(out)
    assert ws.get("weights", "diffusers") == str(out / "model")
    assert ws.get("data", "data_path") == str(out / "data" / "data.jsonl")
    assert ws.get("checkpoint", "tp") == 2 and ws.get("checkpoint", "pp_layers") == [1, 1]
    assert ws.get("runs", "lora_rank") == 4 and ws.get("runs", "lora_alpha") == 8.0
    assert ws.get("runs", "lora_save") == str(out / "runs" / "lora" / "lora")


def test_the_demo_folder_is_protected(demo, tmp_path):
    out, _ = demo
    again = _cogvx("demo", "--out", out)
    assert again.exit_code == 2 and "holds an earlier demo" in again.stderr
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = _cogvx("demo", "--out", other, "--force")
    assert refused.exit_code == 2 and "no cogvx demo made it" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"
    i2v = _cogvx("demo", "--out", tmp_path / "i2v", "--variant", "i2v-1.0")
    assert i2v.exit_code == 1 and "text-to-video" in i2v.stderr


def test_an_interrupted_demo_is_named_so(tmp_path):
    """A demo stopped mid-way leaves its marker at "running"; no stage needs to run here."""
    from cogvideo_cli.demo.pipeline import MARKER, prepare_folder

    out = prepare_folder(tmp_path / "out", force=False)
    (out / "model").mkdir()  # as if the first stage had started writing
    again = _cogvx("demo", "--out", out)
    assert again.exit_code == 2, again.output
    assert "holds an interrupted demo" in again.stderr
    assert json.loads((out / MARKER).read_text()) == {"status": "running"}
