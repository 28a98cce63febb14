"""The tiny model: real diffusers format, each variant's features, deterministic, labelled."""

from __future__ import annotations

import json

import pytest

from cogvideo_cli.backends.diffusers import tiny
from cogvideo_cli.core.variants import VARIANTS


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_loads_with_its_pipeline_class(tiny_model, variant):
    from diffusers import (CogVideoXImageToVideoPipeline, CogVideoXPipeline,
                           DiffusionPipeline)

    folder = tiny_model(variant)
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    expected = CogVideoXImageToVideoPipeline if "i2v" in variant else CogVideoXPipeline
    assert type(pipe) is expected
    config = pipe.transformer.config
    assert config.in_channels == (32 if "i2v" in variant else 16)
    assert config.patch_size_t == (2 if "1.5" in variant else None)
    assert bool(config.ofs_embed_dim) == (variant == "i2v-1.5")
    assert config.use_learned_positional_embeddings == (variant == "i2v-1.0")
    assert config.use_rotary_positional_embeddings
    assert pipe.vae.config.scaling_factor == pytest.approx(0.7)
    assert pipe.vae.config.invert_scale_latents == (variant == "i2v-1.5")
    sched = pipe.scheduler.config
    assert (sched.prediction_type, sched.rescale_betas_zero_snr, sched.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    # the random-weights labels
    assert "RANDOM WEIGHTS" in (folder / "README.txt").read_text()
    marker = json.loads((folder / tiny.MARKER).read_text())
    assert marker["random_weights"] is True and marker["variant"] == variant


def test_tokenizer_is_the_trained_sentencepiece_model(tiny_model):
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder = tiny_model("t2v-1.0") / "tokenizer"
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    tok = T5Tokenizer.from_pretrained(str(folder))
    for text in ["a small dog runs on the beach at night.", "zebra 42 xylophone!"]:
        assert tok(text).input_ids == sp.encode(text) + [tok.eos_token_id]
    assert tok.model_max_length == 226 and tok.pad_token_id == 0
    assert sp.get_piece_size() > 50  # learned pieces, not the bare special tokens


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    from safetensors.torch import load_file

    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        tiny.build_pipeline_folder(_mkdir(tmp_path / name), VARIANTS["t2v-1.5"], seed)
    weights = {n: load_file(tmp_path / n / "transformer" / "diffusion_pytorch_model.safetensors")
               for n in "abc"}
    assert all((weights["a"][k] == weights["b"][k]).all() for k in weights["a"])
    assert any((weights["a"][k] != weights["c"][k]).any() for k in weights["a"])


def _mkdir(path):
    path.mkdir()
    return path


def test_cli_records_the_workspace_and_refuses_to_overwrite(cli, tmp_path):
    result = cli("tiny-model", "--variant", "t2v-1.0", "--out", "m", "--seed", "1")
    assert result.exit_code == 0, result.output
    from cogvideo_cli.core.workspace import Workspace

    ws = Workspace.load(tmp_path)
    assert ws.get("weights", "diffusers") == str((tmp_path / "m").absolute())
    assert ws.get("weights", "format") == "diffusers"
    assert ws.get("weights", "variant") == "t2v-1.0"
    again = cli("tiny-model", "--variant", "t2v-1.0", "--out", "m")
    assert again.exit_code == 2 and "--force" in again.output
    bad = cli("tiny-model", "--variant", "t2v-2.0", "--out", "x")
    assert bad.exit_code == 2 and "t2v-1.5" in bad.output


def test_cli_names_both_clip_lengths_of_a_15_model(cli):
    """1.5 trains 4k+1 frames with an even latent count; diffusers samples 8k+1."""
    result = cli("tiny-model", "--variant", "t2v-1.5", "--out", "m")
    assert result.exit_code == 0, result.output
    assert "default clip: 13 frames to train, 17 to infer at 32x48" in result.stdout
