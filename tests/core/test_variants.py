"""Variant registry and its rules: values that pass, values that fail, and the messages."""

from __future__ import annotations

import pytest

from cogvideo_cli.core import variants as v
from cogvideo_cli.core.errors import UsageError


def test_registry_dimensions():
    t10, i10, t15, i15 = (v.get_variant(n) for n in ("t2v-1.0", "i2v-1.0", "t2v-1.5", "i2v-1.5"))
    assert (t10.num_layers, t10.num_heads, t10.head_dim, t10.hidden_size) == (42, 48, 64, 3072)
    assert t10.patch_size == (1, 2, 2) and t10.patch_type == "2D"
    assert t15.patch_size == (2, 2, 2) and t15.patch_type == "3D"
    assert (i10.in_channels, i15.in_channels, t15.in_channels) == (32, 32, 16)
    assert i10.learnable_pos_embed and not i15.learnable_pos_embed
    assert i15.ofs_embed_dim == 512 and t15.ofs_embed_dim is None
    assert (t10.train.frames, t15.train.frames) == (17, 37)
    assert (t10.infer.text_length, t15.infer.text_length) == (226, 224)
    infer = t15.infer
    assert (infer.frames, infer.height, infer.width, infer.fps) == (81, 768, 1360, 16)


def test_unknown_variant_lists_known_ones():
    with pytest.raises(UsageError) as err:
        v.get_variant("t2v-2.0")
    assert "t2v-2.0" in str(err.value)
    assert "t2v-1.0, i2v-1.0, t2v-1.5, i2v-1.5" in err.value.fix
    assert err.value.exit_code == 2


def test_custom_size_15b():
    big = v.get_variant("t2v-1.5").with_size(num_layers=64, num_heads=32, head_dim=128)
    assert (big.num_layers, big.hidden_size, big.mlp_hidden_size) == (64, 4096, 16384)
    assert v.check_tensor_parallel(big, 8) is None
    assert v.check_pp_layers(big, [16, 16, 16, 16]) is None
    with pytest.raises(UsageError, match="at least 1"):
        v.get_variant("t2v-1.0").with_size(num_layers=0)


@pytest.mark.parametrize("frames", [17, 49, 81])
def test_frames_4k_plus_1_pass_for_1_0(frames):
    assert v.check_frames(v.get_variant("t2v-1.0"), frames) is None


def test_frames_not_4k_plus_1():
    problem = v.check_frames(v.get_variant("t2v-1.0"), 50)
    assert "50 frames is not 4k+1" in problem.message
    assert problem.fix == "use 49 or 53"


@pytest.mark.parametrize("frames", [5, 13, 37, 45, 53, 77, 85])
def test_frames_1_5_training_even_latents_pass(frames):
    assert v.check_frames(v.get_variant("t2v-1.5"), frames) is None


def test_frames_1_5_training_odd_latents_fail_with_neighbours():
    problem = v.check_frames(v.get_variant("i2v-1.5"), 49)
    assert str(problem) == ("49 frames give 13 latent frames; CogVideoX 1.5 training needs an "
                            "even count; use 45 or 53")
    # inference pads the latents itself, so 81 frames are fine there
    assert v.check_frames(v.get_variant("t2v-1.5"), 81, training=False) is None
    assert v.check_frames(v.get_variant("t2v-1.5"), 81) is not None


def test_resolution():
    t15 = v.get_variant("t2v-1.5")
    assert v.check_resolution(t15, 768, 1360) is None
    problem = v.check_resolution(t15, 480, 730)
    assert "width 730 is not a multiple of 16" in problem.message
    assert problem.fix == "use 720 or 736"
    problem = v.check_resolution(v.get_variant("i2v-1.0"), 768, 1360)
    assert "480x720" in problem.message and problem.fix == "use --height 480 --width 720"
    assert v.check_resolution(v.get_variant("i2v-1.0"), 480, 720) is None


def test_text_length_must_match_tokenizer():
    t15 = v.get_variant("t2v-1.5")
    assert v.check_text_length(t15, 226, 226) is None
    problem = v.check_text_length(t15, 226, 224)
    assert "226" in problem.message and problem.fix == "set text_length to 224"


def test_sequence_and_latent_shape():
    t10, t15 = v.get_variant("t2v-1.0"), v.get_variant("t2v-1.5")
    assert v.sequence_length(t10, 17, 480, 720, 226) == 6976
    assert v.sequence_length(t15, 37, 480, 720, 226) == 6976
    assert v.sequence_length(t10, 49, 480, 720, 226) == 17776
    assert v.latent_shape(t15, 37, 480, 720) == (10, 60, 90)
    assert v.latent_shape(t10, 17, 480, 720) == (5, 60, 90)


def test_tensor_parallel_rule():
    t10 = v.get_variant("t2v-1.0")
    for tp in (1, 2, 4, 8, 16):
        assert v.check_tensor_parallel(t10, tp) is None
    problem = v.check_tensor_parallel(t10, 5)
    assert "--tp 5 does not divide the 48 attention heads" in problem.message
    assert "1, 2, 3, 4, 6, 8" in problem.fix


def test_pp_layers_rule_and_balanced_split():
    t10 = v.get_variant("t2v-1.0")
    assert v.balanced_split(42, 4) == [10, 11, 11, 10]
    assert v.balanced_split(42, 2) == [21, 21]
    assert sum(v.balanced_split(64, 5)) == 64
    assert v.check_pp_layers(t10, [10, 11, 11, 10]) is None
    problem = v.check_pp_layers(t10, [10, 11, 11, 9])
    assert str(problem) == ("--pp-layers 10 11 11 9 sums to 41, but the model has 42 layers; "
                            "try 10 11 11 10")
    assert "fewer than 1" in v.check_pp_layers(t10, [42, 0]).message
    assert v.check_pp_layers(t10, []) is not None
    with pytest.raises(UsageError):
        v.require(v.check_pp_layers(t10, [1, 2]))
    v.require(None)
