"""A small random-weight CogVideoX pipeline in real diffusers format, for smoke tests.

Every component is the real class with a real config, only narrow: the transformer
(``CogVideoXTransformer3DModel``: 2 layers, 2 heads of 16, with each variant's features:
3D RoPE everywhere, the learned position table of i2v-1.0, the 2x2x2 patches and
``patch_size_t`` of 1.5, the ``ofs`` embedding of i2v-1.5), the VAE
(``AutoencoderKLCogVideoX``, 8x spatial and 4x temporal compression, 16 latent channels),
a T5 encoder (``T5EncoderModel``, v1.1 gated-GELU), a sentencepiece tokenizer trained here
on a small generated corpus, and ``CogVideoXDPMScheduler`` with the reference's config.
``CogVideoXPipeline.from_pretrained`` / ``CogVideoXImageToVideoPipeline.from_pretrained``
load the folder. Nothing is downloaded. The weights are random and the folder says so
(``README.txt`` and ``cogvx_tiny.json``). The same seed gives the same files' tensors.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from cogvideo_cli.core.variants import Variant

MARKER = "cogvx_tiny.json"

# The tiny model's default clip: small enough for CPU tests, non-square so a swapped
# height and width fails loudly; 1.5 training needs an even latent count, hence 13 frames.
TINY_HEIGHT = 32
TINY_WIDTH = 48
TINY_FPS = 8
TEXT_LENGTH = 226  # the pipelines' default max_sequence_length

TRANSFORMER_SIZE = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16,
                    "time_embed_dim": 32}
T5_SIZE = {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 64, "num_layers": 2}
VAE_CHANNELS = (8, 8, 16, 16)

# CogVideoXDPMScheduler as MindSpeed-MM's inference presets configure it (reference 1.4).
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "clip_sample_range": 1.0, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0, "set_alpha_to_one": True, "snr_shift_scale": 1.0,
    "steps_offset": 0, "timestep_spacing": "trailing", "trained_betas": None,
}

_README = """\
RANDOM WEIGHTS - NOT A TRAINED MODEL

This folder is a tiny CogVideoX pipeline ({variant}) that `cogvx tiny-model` built with
random weights (seed {seed}) for smoke tests. It has the real diffusers layout and real
configs, so every cogvx command and diffusers' CogVideoX pipelines can load it, but its
videos are noise. Download real weights with `cogvx download` for anything else.
"""


def tiny_frames(variant: Variant) -> int:
    """The default clip length: 9 frames (3 latents), 13 for 1.5 (an even 4 latents)."""
    return 13 if variant.patch_size[0] > 1 else 9


def _corpus() -> list[str]:
    """Deterministic caption-like sentences for the tokenizer to learn from."""
    subjects = ["a cat", "a small dog", "the horse", "a kitten", "two birds", "an old man",
                "a young woman", "the rabbit", "a red car", "the train", "a bunny"]
    verbs = ["runs", "walks", "jumps", "sleeps", "plays", "flies", "swims", "drives",
             "dances", "looks around", "eats grass"]
    places = ["in the park", "on a sofa", "by the sea", "through the forest",
              "across a bridge", "under the rain", "at sunset", "in a snowy field",
              "on the beach", "inside a kitchen", "in a green meadow"]
    styles = ["slowly", "happily", "in slow motion", "with the camera panning left",
              "close up", "from above", "at night", "in bright daylight"]
    rows = itertools.product(subjects, verbs, places, styles)
    return [f"{s} {v} {p} {st}." for s, v, p, st in itertools.islice(rows, 0, None, 7)]


def build_tokenizer(folder: Path, work: Path) -> int:
    """Train a unigram sentencepiece model and save it as a T5 tokenizer in ``folder``.

    The ids follow T5: <pad> 0, </s> 1, <unk> 2, the learned pieces, then the 100
    ``<extra_id_*>`` sentinels in reverse order. ``spiece.model`` is kept beside the
    tokenizer files so sentencepiece-based readers (older transformers) load it too.

    Returns:
        The tokenizer's length (pieces plus sentinels).
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(_corpus()) + "\n", encoding="utf-8")
    prefix = work / "spiece"
    # identity normalisation: the fast tokenizer then needs no precompiled charsmap and
    # splits exactly as the sentencepiece model does
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=250, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
        normalization_rule_name="identity", hard_vocab_limit=False, num_threads=1)
    processor = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    vocab = [(processor.id_to_piece(i), processor.get_score(i))
             for i in range(processor.get_piece_size())]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=100, model_max_length=TEXT_LENGTH)
    tokenizer.save_pretrained(str(folder))
    (folder / "spiece.model").write_bytes(Path(str(prefix) + ".model").read_bytes())
    return len(tokenizer)


def transformer_config(variant: Variant, height: int = TINY_HEIGHT,
                       width: int = TINY_WIDTH) -> dict[str, Any]:
    """The transformer's config: the real keys of the variant's release, tiny widths.

    i2v-1.0's learned position table is sized for one latent resolution, so it is built
    for ``height`` x ``width`` and only that size runs (as 480x720 for the real model).
    """
    is_15 = variant.patch_size[0] > 1
    config: dict[str, Any] = {
        **TRANSFORMER_SIZE,
        "in_channels": variant.in_channels, "out_channels": variant.out_channels,
        "text_embed_dim": T5_SIZE["d_model"], "max_text_seq_length": TEXT_LENGTH,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": variant.learnable_pos_embed,
        "patch_size": variant.patch_size[1],
        "patch_size_t": variant.patch_size[0] if is_15 else None,
        "patch_bias": not is_15,
        "ofs_embed_dim": TRANSFORMER_SIZE["time_embed_dim"] if variant.ofs_embed_dim else None,
        "sample_frames": 81 if is_15 else 49,
        # RoPE sizes its grid from these; the real releases use 60x90 (1.0) and 300x300 (1.5)
        "sample_height": 300 if is_15 else 60, "sample_width": 300 if is_15 else 90,
        "temporal_compression_ratio": 4,
    }
    if variant.learnable_pos_embed:
        config.update(sample_height=height // 8, sample_width=width // 8,
                      sample_frames=tiny_frames(variant))
    return config


def vae_config(variant: Variant) -> dict[str, Any]:
    """The VAE's config: four 3D blocks (8x space, 4x time), 16 latent channels."""
    is_15 = variant.patch_size[0] > 1
    return {
        "block_out_channels": list(VAE_CHANNELS), "layers_per_block": 1,
        "norm_num_groups": 4, "latent_channels": 16, "temporal_compression_ratio": 4,
        "scaling_factor": variant.vae_scale,
        "sample_height": 768 if is_15 else 480, "sample_width": 1360 if is_15 else 720,
        # CogVideoX1.5-5B-I2V's VAE divides (not multiplies) the image latents by the scale
        "invert_scale_latents": variant.name == "i2v-1.5",
    }


def _t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu",
                    relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    tie_word_embeddings=False, dropout_rate=0.0, **T5_SIZE)


def _pipeline_class(variant: Variant):
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

    return CogVideoXImageToVideoPipeline if variant.is_i2v else CogVideoXPipeline


def build_pipeline_folder(folder: Path, variant: Variant, seed: int) -> dict[str, Any]:
    """Write the whole pipeline into ``folder`` (which must exist and be empty).

    Returns:
        A summary: variant, seed, parameter counts and the default clip.
    """
    import torch
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDPMScheduler,
                           CogVideoXTransformer3DModel)
    from diffusers.utils import logging as diffusers_logging
    from transformers import T5EncoderModel
    from transformers.utils import logging as transformers_logging

    # their "Writing model shards" bars would land in the middle of cogvx's output
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    work = folder / ".tokenizer-work"
    work.mkdir()
    vocab_len = build_tokenizer(tokenizer_dir, work)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()

    # one seed per component, so adding a component never changes the others' weights
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(**transformer_config(variant))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(**vae_config(variant))
    torch.manual_seed(seed + 2)
    text_encoder = T5EncoderModel(_t5_config(vocab_size=(vocab_len + 63) // 64 * 64))
    from transformers import T5Tokenizer

    pipe = _pipeline_class(variant)(
        tokenizer=T5Tokenizer.from_pretrained(str(tokenizer_dir)), text_encoder=text_encoder,
        vae=vae, transformer=transformer,
        scheduler=CogVideoXDPMScheduler.from_config(SCHEDULER_CONFIG))
    pipe.save_pretrained(str(folder), safe_serialization=True)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "random_weights": True, "variant": variant.name, "seed": seed,
        "pipeline": type(pipe).__name__,
        "parameters": {"transformer": count(transformer), "vae": count(vae),
                       "text_encoder": count(text_encoder)},
        "defaults": {"frames": tiny_frames(variant), "height": TINY_HEIGHT,
                     "width": TINY_WIDTH, "fps": TINY_FPS, "text_length": TEXT_LENGTH},
    }


def write_labels(folder: Path, summary: dict[str, Any]) -> None:
    """The random-weights labels: a README for people, a JSON marker for cogvx."""
    (folder / "README.txt").write_text(
        _README.format(variant=summary["variant"], seed=summary["seed"]), encoding="utf-8")
    (folder / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The tiny-model marker of a pipeline folder, or ``None`` for real weights."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
