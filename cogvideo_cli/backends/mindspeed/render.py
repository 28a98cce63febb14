"""Render MindSpeed-MM's model, data and inference JSON from the 2.3.0 templates.

With default settings the result equals the official example files except for paths.
Values the examples get wrong are derived: the exact ``input_size`` and the data
``batch_size`` under pipeline parallel, ``pipeline_num_layers`` from the stage sizes, and
one text length for the predictor and the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cogvideo_cli.core.templates import load_json
from cogvideo_cli.core.variants import Variant, latent_frames, latent_shape

# Keys a --set may add although the template lacks them.
OPTIONAL_KEYS = {
    "model": {"predictor.patch_type", "predictor.learnable_pos_embed",
              "predictor.ofs_embed_dim", "predictor.seq_length",
              "predictor.max_position_embeddings", "predictor.norm_out_eps"},
    "data": {"dataloader_param.batch_size", "dataloader_param.num_workers",
             "dataset_param.preprocess_parameters.frame_interval", "dataset_param.cfg"},
    "inference": {"predictor.learnable_pos_embed", "pipeline_config.version",
                  "pipeline_config.vae_invert_scale_latents"},
}

# Keys that hold paths: they differ from the official examples by design.
PATH_KEYS = {
    "model": {"text_encoder.from_pretrained", "ae.from_pretrained"},
    "data": {"dataset_param.basic_parameters.data_path",
             "dataset_param.basic_parameters.data_folder",
             "dataset_param.tokenizer_config.from_pretrained"},
    "inference": {"ae.from_pretrained", "text_encoder.from_pretrained",
                  "tokenizer.from_pretrained", "save_path", "prompt", "image"},
}


@dataclass
class TrainValues:
    """What the training configs are rendered from."""

    frames: int
    height: int
    width: int
    text_length: int
    mbs: int
    pp_layers: list[int]
    vae_cp: int
    encoder_dp: bool
    vae: str
    t5: str
    tokenizer: str
    data_path: str
    data_folder: str
    features: bool = False


def render_train(variant: Variant, v: TrainValues) -> dict[str, dict[str, Any]]:
    """The ``model``, ``data`` and ``tools`` documents of a training run."""
    model = load_json(f"{variant.name}/model.json")
    data = load_json(f"{variant.name}/data.json")
    model["frames"] = v.frames
    model["resolution"] = [v.height, v.width]
    model["enable_encoder_dp"] = v.encoder_dp
    model["text_encoder"]["from_pretrained"] = v.t5
    model["ae"]["from_pretrained"] = v.vae
    model["ae"]["cp_size"] = v.vae_cp
    predictor = model["predictor"]
    predictor["text_length"] = v.text_length
    if len(v.pp_layers) > 1:
        # PP stages exchange tensors sized from input_size, so it must be exact
        predictor["pipeline_num_layers"] = list(v.pp_layers)
        predictor["input_size"] = list(latent_shape(variant, v.frames, v.height, v.width))
        data["dataloader_param"]["batch_size"] = v.mbs

    dataset = data["dataset_param"]
    dataset["basic_parameters"]["data_path"] = v.data_path
    dataset["basic_parameters"]["data_folder"] = v.data_folder
    pre = dataset["preprocess_parameters"]
    pre["num_frames"], pre["max_height"], pre["max_width"] = v.frames, v.height, v.width
    dataset["tokenizer_config"]["from_pretrained"] = v.tokenizer
    dataset["tokenizer_config"]["model_max_length"] = v.text_length
    if v.features:
        # the README's use_feature_data flag is read by nothing; these switches are
        model["load_video_features"] = True
        model["load_text_features"] = True
        dataset["dataset_type"] = "feature"
    return {"model": model, "data": data, "tools": load_json("tools.json")}


@dataclass
class InferValues:
    """What the inference config is rendered from."""

    frames: int
    height: int
    width: int
    steps: int
    guidance: float
    fps: int
    vae: str
    t5: str
    tokenizer: str
    prompts: str
    images: str | None
    save_path: str


def infer_input_size(variant: Variant, frames: int, height: int,
                     width: int) -> list[int]:
    """The predictor's latent size at inference: latent T padded to the temporal patch."""
    t = latent_frames(frames)
    pt = variant.patch_size[0]
    t += (-t) % pt
    return [t, height // 8, width // 8]


def render_infer(variant: Variant, v: InferValues) -> dict[str, dict[str, Any]]:
    """The ``inference`` document."""
    doc = load_json(f"{variant.name}/inference.json")
    doc["ae"]["from_pretrained"] = v.vae
    doc["text_encoder"]["from_pretrained"] = v.t5
    doc["tokenizer"]["from_pretrained"] = v.tokenizer
    doc["predictor"]["input_size"] = infer_input_size(variant, v.frames, v.height, v.width)
    doc["diffusion"]["num_inference_steps"] = v.steps
    pipeline = doc["pipeline_config"]
    pipeline["input_size"] = [v.frames, v.height, v.width]
    pipeline["guidance_scale"] = v.guidance
    doc["fps"] = v.fps
    doc["save_path"] = v.save_path
    doc["prompt"] = v.prompts
    if v.images is not None:
        doc["image"] = v.images
    return {"inference": doc}


def render_extract(task: str, *, vae: str, t5: str, tokenizer: str, data_path: str,
                   data_folder: str, save_path: str) -> dict[str, dict[str, Any]]:
    """The feature-extraction ``model``, ``data`` and ``tools`` documents."""
    model = load_json(f"feature_extract/model_{task}.json")
    data = load_json("feature_extract/data.json")
    tools = load_json("tools.json")
    model["text_encoder"]["from_pretrained"] = t5
    model["ae"]["from_pretrained"] = vae
    basic = data["dataset_param"]["basic_parameters"]
    basic["data_path"], basic["data_folder"] = data_path, data_folder
    data["dataset_param"]["tokenizer_config"]["from_pretrained"] = tokenizer
    tools["sorafeature"]["save_path"] = save_path
    return {"model": model, "data": data, "tools": tools}
