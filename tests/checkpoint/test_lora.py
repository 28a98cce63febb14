"""LoRA merge: the float32 reference on the golden fixtures, TP/PP, refusals, diffusers."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_helpers import tiny_diffusers, whole_state
from lora_helpers import (
    SAT_T2V,
    as_stored,
    random_factors,
    reference,
    write_hf_lora,
    write_mm_lora,
)

from cogvideo_cli.checkpoint import convert, lora
from cogvideo_cli.checkpoint.verify import verify_checkpoint
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError, UsageError

LAYERS, HIDDEN, RANK, ALPHA = 42, 64, 4, 8.0
S = ALPHA / RANK


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The golden SAT t2v-1.5 fixture converted to MM at TP 1 and at TP 2 / PP 21 21."""
    root = tmp_path_factory.mktemp("bases")
    convert.sat_to_mm(SAT_T2V, root / "tp1")
    convert.sat_to_mm(SAT_T2V, root / "tp2pp2", tp=2, pp_layers=[21, 21])
    return {"tp1": root / "tp1", "tp2pp2": root / "tp2pp2",
            "whole": whole_state(root / "tp1")}


@pytest.fixture(scope="module")
def factors():
    return random_factors(LAYERS, HIDDEN, RANK)


@pytest.fixture(scope="module")
def merged_tp1(bases, factors, tmp_path_factory):
    root = tmp_path_factory.mktemp("merged")
    lora_dir = write_mm_lora(root / "lora", factors)
    report = lora.merge_mm(bases["tp1"], lora_dir, root / "out", rank=RANK, alpha=ALPHA)
    return root / "out", report


def test_merge_is_the_float32_reference(bases, factors, merged_tp1):
    out, report = merged_tp1
    merged, base, stored = whole_state(out), bases["whole"], as_stored(factors)
    assert merged.keys() == base.keys()
    for name, tensor in base.items():
        module = name.removesuffix(".weight")
        if module in stored:
            want = reference(tensor, *stored[module], S)
            assert merged[name].dtype == torch.bfloat16 and torch.equal(merged[name], want), name
        else:
            assert torch.equal(merged[name], tensor), name
    assert report["modules"] == report["modules_changed"] == 2 * LAYERS
    assert report["effective_scale"] == S and report["rank_alpha_from"].startswith("--lora")
    assert 0 < report["largest_change"]["relative"] < 10
    assert verify_checkpoint(out)["ok"]


def test_tp2_pp2_merge_equals_merge_then_split(bases, factors, merged_tp1, tmp_path):
    """Base TP 2 / PP 2 with the LoRA in its own layout, TP 1 or TP 2 / PP 2."""
    expected = whole_state(merged_tp1[0])
    same = write_mm_lora(tmp_path / "lora-tp2pp2", factors, tp=2, pp_layers=[21, 21])
    single = write_mm_lora(tmp_path / "lora-tp1", factors)
    for name, lora_dir in (("same", same), ("resharded", single)):
        report = lora.merge_mm(bases["tp2pp2"], lora_dir, tmp_path / name, rank=RANK,
                               alpha=ALPHA)
        assert report["tp"] == 2 and report["pp_layers"] == [21, 21]
        got = whole_state(tmp_path / name)
        assert all(torch.equal(got[k], expected[k]) for k in expected), name
        assert verify_checkpoint(tmp_path / name, tp=2, pp_layers=[21, 21])["ok"]


def test_lora_split_over_tp_merges_into_tp1(bases, factors, merged_tp1, tmp_path):
    lora_dir = write_mm_lora(tmp_path / "lora", factors, tp=2, pp_layers=[20, 22])
    lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA)
    expected, got = whole_state(merged_tp1[0]), whole_state(tmp_path / "out")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_scale_multiplies_and_record_beside_the_save(bases, tmp_path):
    factors = random_factors(2, HIDDEN, RANK, seed=3)
    run = tmp_path / "run"
    lora_dir = write_mm_lora(run / "checkpoints", factors)
    (run / "settings.json").write_text(json.dumps({
        "kind": "lora", "lora_r": RANK, "lora_alpha": 2.0,
        "resolved_paths": {"save": str(lora_dir)}}))
    report = lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", scale=0.5)
    assert report["effective_scale"] == 0.5 * 2.0 / RANK
    assert report["rank_alpha_from"].endswith("settings.json")
    name = "videodit_blocks.1.self_atten.proj_out.weight"
    a, b = as_stored(factors)["videodit_blocks.1.self_atten.proj_out"]
    want = reference(bases["whole"][name], a, b, 0.25)
    assert torch.equal(whole_state(tmp_path / "out")[name], want)
    with pytest.raises(UsageError, match="contradicts"):
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "o2", alpha=64.0)


def test_rank_and_alpha_are_never_guessed(bases, tmp_path):
    lora_dir = write_mm_lora(tmp_path / "lora", random_factors(1, HIDDEN, RANK))
    with pytest.raises(UsageError) as info:
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out")
    assert "--lora-rank 4 --lora-alpha" in info.value.fix
    with pytest.raises(CheckpointError, match="gives rank 8, but the LoRA factors"):
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=8, alpha=16)
    assert not (tmp_path / "out").exists()


def _drop_b(model, pp_rank, tp_rank):
    del model["videodit_blocks.0.self_atten.proj_out.lora_B.default.weight"]


def _bad_rank(model, pp_rank, tp_rank):
    key = "videodit_blocks.0.self_atten.proj_qkv.lora_B.default.weight"
    model[key] = model[key][:, :3].clone()


def _diverge(model, pp_rank, tp_rank):
    if tp_rank == 1:
        key = "videodit_blocks.0.self_atten.proj_qkv.lora_A.default.weight"
        model[key] = model[key] + 1


@pytest.mark.parametrize("edit, tp, error, text", [
    (_drop_b, 1, CheckpointError, "proj_out.lora_A.default.weight has no lora_B partner"),
    (_bad_rank, 1, CheckpointError, "do not fit: lora_A is [4, 64], lora_B is [192, 3]"),
    (_diverge, 2, CheckpointError, "mp_rank_01/model_optim_rng.pt differs from"),
])
def test_broken_loras_are_refused(bases, tmp_path, edit, tp, error, text):
    lora_dir = write_mm_lora(tmp_path / "lora", random_factors(1, HIDDEN, RANK), tp=tp,
                             edit=edit)
    with pytest.raises(error) as info:
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA)
    assert text in str(info.value)
    assert not (tmp_path / "out").exists()


def test_lora_key_without_base_weight_and_unmergeable_keys(bases, tmp_path):
    factors = random_factors(1, HIDDEN, RANK)
    factors["videodit_blocks.42.self_atten.proj_out"] = factors.pop(
        "videodit_blocks.0.self_atten.proj_out")
    lora_dir = write_mm_lora(tmp_path / "lora", factors)
    with pytest.raises(CheckpointError, match="videodit_blocks.42.self_atten.proj_out.lora_"
                                              ".\\.default.weight matches no base weight"):
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA)

    def bias(model, pp_rank, tp_rank):
        model["videodit_blocks.0.self_atten.proj_qkv.lora_B.default.bias"] = torch.zeros(3)
    biased = write_mm_lora(tmp_path / "biased", random_factors(1, HIDDEN, RANK), edit=bias)
    with pytest.raises(NotSupportedError, match="lora_B.default.bias"):
        lora.merge_mm(bases["tp1"], biased, tmp_path / "out", rank=RANK, alpha=ALPHA)


def test_untrained_lora_fails_and_writes_nothing(bases, tmp_path):
    factors = {m: (a, torch.zeros_like(b))
               for m, (a, b) in random_factors(1, HIDDEN, RANK).items()}
    lora_dir = write_mm_lora(tmp_path / "lora", factors)
    with pytest.raises(CheckpointError, match="changed no weight"):
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".cogvx-tmp-*"))


def test_existing_target_needs_force(bases, tmp_path):
    lora_dir = write_mm_lora(tmp_path / "lora", random_factors(1, HIDDEN, RANK))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    lora.merge_mm(bases["tp1"], lora_dir, tmp_path / "out", rank=RANK, alpha=ALPHA,
                  force=True)
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert (tmp_path / "out.cogvx.json").is_file()
    assert json.loads((tmp_path / "out.cogvx.json").read_text())["lora"]["rank"] == RANK


# --- diffusers -----------------------------------------------------------------------------

def _hf_factors(rank: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(2):
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            out[f"transformer_blocks.{i}.attn1.{name}"] = (
                torch.randn(rank, 16, generator=gen), torch.randn(16, rank, generator=gen))
    return out


def test_diffusers_merge_keeps_shards_and_matches_reference(tmp_path):
    from ckpt_helpers import hf_state

    base = tiny_diffusers(tmp_path / "base", i2v=False, version="1.5",
                          dtype=torch.bfloat16)
    factors = _hf_factors(2)
    lora_dir = write_hf_lora(tmp_path / "lora", factors, rank=2, alpha=1.0,
                             cogvx_record=False)
    report = lora.merge_lora(base, lora_dir, tmp_path / "out", scale=3.0)
    assert report["format"] == "diffusers" and report["effective_scale"] == 1.5
    assert report["modules_changed"] == 8 and report["variant"] == "t2v-1.5"
    before, after = hf_state(base), hf_state(tmp_path / "out")
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        module = key.removesuffix(".weight")
        want = reference(tensor, *factors[module], 1.5) if module in factors else tensor
        assert torch.equal(after[key], want), key
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == \
        sorted(p.name for p in base.glob("*.safetensors"))
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["rank"] == 2


def test_diffusers_lora_for_another_model_is_refused(tmp_path):
    base = tiny_diffusers(tmp_path / "base", i2v=False, version="1.5")
    factors = {"transformer_blocks.7.attn1.to_q": _hf_factors(2)[
        "transformer_blocks.0.attn1.to_q"]}
    lora_dir = write_hf_lora(tmp_path / "lora", factors, rank=2, alpha=4.0)
    with pytest.raises(CheckpointError, match="transformer.transformer_blocks.7.attn1.to_q."
                                              "lora_.\\.weight matches no base weight"):
        lora.merge_lora(base, lora_dir, tmp_path / "out")


def test_lora_of_the_other_format_is_a_usage_error(bases, tmp_path):
    lora_dir = write_hf_lora(tmp_path / "lora", _hf_factors(2), rank=2, alpha=4.0)
    with pytest.raises(UsageError, match="is a diffusers LoRA, but --base"):
        lora.merge_lora(bases["tp1"], lora_dir, tmp_path / "out")


def test_rank_and_alpha_from_the_metadata_diffusers_writes(tmp_path):
    """The LoRA file alone (no lora.json): diffusers stores ``transformer.r`` and
    ``transformer.lora_alpha`` in its metadata, as cogvx's training worker asks it to."""
    import shutil

    base = tiny_diffusers(tmp_path / "base", i2v=False, version="1.5")
    run = write_hf_lora(tmp_path / "run" / "lora", _hf_factors(2), rank=2, alpha=8.0)
    (tmp_path / "lone").mkdir()
    shutil.copy(run / "pytorch_lora_weights.safetensors", tmp_path / "lone")
    report = lora.merge_lora(base, tmp_path / "lone", tmp_path / "out", dry_run=True)
    assert (report["rank"], report["alpha"], report["effective_scale"]) == (2, 8.0, 4.0)
    assert "the metadata of" in report["rank_alpha_from"]


def test_unprefixed_peft_adapter_config_still_gives_rank_and_alpha(tmp_path):
    base = tiny_diffusers(tmp_path / "base", i2v=False, version="1.5")
    lora_dir = write_hf_lora(tmp_path / "lora", _hf_factors(2), rank=2, alpha=None)
    (lora_dir / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 6}))
    report = lora.merge_lora(base, lora_dir, tmp_path / "out", dry_run=True)
    assert report["effective_scale"] == 3.0
    assert report["rank_alpha_from"].endswith("adapter_config.json")


def test_missing_lora_says_it_does_not_exist(bases, tmp_path):
    for base in (bases["tp1"], tiny_diffusers(tmp_path / "hf", i2v=False, version="1.5")):
        with pytest.raises(CheckpointError, match="does not exist") as info:
            lora.merge_lora(base, tmp_path / "nope", tmp_path / "out")
        assert str(tmp_path / "nope") in info.value.message


def test_a_merge_output_is_known_by_its_record(tmp_path):
    base = tiny_diffusers(tmp_path / "base", i2v=False, version="1.5")
    lora_dir = write_hf_lora(tmp_path / "lora", _hf_factors(2), rank=2, alpha=2.0)
    assert lora.merge_record(base) is None
    lora.merge_lora(base, lora_dir, tmp_path / "out")
    assert lora.merge_record(tmp_path / "out") == (tmp_path / "out" / "merge.json",
                                                   str(base))
