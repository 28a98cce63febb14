"""Templates: every one loads; defaults reproduce the official 2.3.0 examples except paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogvideo_cli.backends.mindspeed.render import (PATH_KEYS, InferValues, TrainValues,
                                                    render_infer, render_train)
from cogvideo_cli.core.config import dotted_keys
from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.templates import all_templates, load_json, load_text, write_run_dir
from cogvideo_cli.core.variants import get_variant

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / \
    "mindspeed-mm-2.3.0" / "examples" / "cogvideox"
OFFICIAL = {
    "t2v-1.0": ("t2v_1.0", "model_cogvideox_t2v.json", "inference_model_t2v.json"),
    "i2v-1.0": ("i2v_1.0", "model_cogvideox_i2v.json", "inference_model_i2v.json"),
    "t2v-1.5": ("t2v_1.5", "model_cogvideox_t2v_1.5.json", "inference_model_t2v_1.5.json"),
    "i2v-1.5": ("i2v_1.5", "model_cogvideox_i2v_1.5.json", "inference_model_i2v_1.5.json"),
}


def _official(name: str, which: int) -> dict:
    folder, model, infer = OFFICIAL[name]
    file = {0: model, 1: "data.json", 2: infer}[which]
    path = REFERENCE / folder / file
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests need ../shared/reference")
    return json.loads(path.read_text())


def _leaves(doc, prefix=""):
    out = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def _compare(rendered: dict, official: dict, paths: set[str]) -> None:
    mine, theirs = _leaves(rendered), _leaves(official)
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        if key in paths:
            assert mine[key] != value or value in ("", None), f"{key} kept the example path"
            continue
        assert mine[key] == value, f"{key}: {mine[key]!r} != official {value!r}"


def _train_values(name: str, **changes) -> TrainValues:
    variant = get_variant(name)
    values = dict(frames=variant.train.frames, height=480, width=720, text_length=226, mbs=1,
                  pp_layers=[], vae_cp=1, encoder_dp=variant.train.enable_encoder_dp,
                  vae="/w/vae/3d-vae.pt", t5="/w/t5", tokenizer="/w/tok",
                  data_path="/d/data.jsonl", data_folder="/d")
    values.update(changes)
    return TrainValues(**values)


def test_every_template_loads():
    names = all_templates()
    assert len(names) == 4 * 3 + 3 + 2  # per variant, feature extraction, tools + yaml
    for name in names:
        if name.endswith(".json"):
            assert isinstance(load_json(name), dict)
        else:
            assert "zero3_size" in load_text(name)


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_train_defaults_equal_the_official_examples(name):
    docs = render_train(get_variant(name), _train_values(name))
    _compare(docs["model"], _official(name, 0), PATH_KEYS["model"])
    _compare(docs["data"], _official(name, 1), PATH_KEYS["data"])


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_infer_defaults_equal_the_official_examples(name):
    variant = get_variant(name)
    p = variant.infer
    docs = render_infer(variant, InferValues(
        frames=p.frames, height=p.height, width=p.width, steps=50, guidance=6.0, fps=p.fps,
        vae="/w/vae", t5="/w/t5", tokenizer="/w/t5", prompts="/p.txt",
        images="/i.txt" if variant.is_i2v else None, save_path="/out/"))
    _compare(docs["inference"], _official(name, 2), PATH_KEYS["inference"])


def test_pipeline_parallel_derives_exact_shapes():
    docs = render_train(get_variant("t2v-1.5"), _train_values(
        "t2v-1.5", pp_layers=[11, 10, 11, 10], mbs=2, encoder_dp=False))
    predictor = docs["model"]["predictor"]
    assert predictor["pipeline_num_layers"] == [11, 10, 11, 10]
    assert predictor["input_size"] == [10, 60, 90]  # 37 frames at 480x720, not [6,96,170]
    assert docs["data"]["dataloader_param"]["batch_size"] == 2


def test_features_use_the_switches_mindspeed_reads():
    docs = render_train(get_variant("t2v-1.0"), _train_values("t2v-1.0", features=True))
    assert docs["model"]["load_video_features"] and docs["model"]["load_text_features"]
    assert docs["data"]["dataset_param"]["dataset_type"] == "feature"
    assert "use_feature_data" not in dotted_keys(docs["data"])


def test_infer_pads_the_latent_count_for_1_5():
    variant = get_variant("t2v-1.5")
    docs = render_infer(variant, InferValues(
        frames=85, height=480, width=720, steps=5, guidance=3.0, fps=16, vae="v", t5="t",
        tokenizer="t", prompts="p", images=None, save_path="o"))
    assert docs["inference"]["predictor"]["input_size"] == [22, 60, 90]
    assert docs["inference"]["diffusion"]["num_inference_steps"] == 5
    assert docs["inference"]["pipeline_config"]["guidance_scale"] == 3.0


def test_run_dir_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "run"
    write_run_dir(target, {"a.json": "{}", "launch.sh": "#!/bin/sh\n"})
    assert (target / "a.json").read_text() == "{}"
    assert (target / "launch.sh").stat().st_mode & 0o111
    with pytest.raises(UsageError):
        write_run_dir(target, {"b.json": "{}"})
    assert not (target / "b.json").exists()
