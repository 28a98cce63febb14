"""LayerZero saves rebuilt bit-exactly into the MM layout: layouts, NPU pickling, checks."""

from __future__ import annotations

import pytest
import torch
from ckpt_helpers import random_mm_state, tiny_variant, whole_state
from layerzero_helpers import flat_ranges, slice_infos, write_layerzero

from cogvideo_cli.checkpoint import convert, safeload
from cogvideo_cli.checkpoint.verify import verify_checkpoint
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError, UsageError

VARIANT = tiny_variant("t2v-1.5", layers=4)


@pytest.fixture(scope="module")
def state():
    """bf16-representable values, so the fp32 rebuild can be compared exactly."""
    return {k: v.float() for k, v in random_mm_state(VARIANT, torch.bfloat16, 5).items()}


def _same(folder, state):
    rebuilt = whole_state(folder)
    assert rebuilt.keys() == state.keys()
    for name, tensor in state.items():
        assert rebuilt[name].dtype == torch.float32 and torch.equal(rebuilt[name], tensor), name


def test_flattening_reproduces_the_recipe_table():
    """The reference's 2-rank numbers: root unit S 22, block unit S 46."""
    root, size = flat_ranges([32, 4, 4], world=2)
    assert root == [(0, 31), (32, 35), (40, 43)] and size == 22
    block, size = flat_ranges([4, 48, 12, 16, 4], world=2)
    assert block == [(0, 3), (8, 55), (56, 67), (72, 87), (88, 91)] and size == 46
    assert slice_infos((12, 4), block[1], 0, 46) == (0, 37)
    assert slice_infos((12, 4), block[1], 1, 46) == (38, 47)
    assert slice_infos((4,), block[3], 0, 46) is None


def test_two_ranks_raw_names_rebuild_exactly(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=2, layers=[4])
    report = convert.layerzero_to_mm(save, tmp_path / "mm")
    _same(tmp_path / "mm", state)
    assert verify_checkpoint(tmp_path / "mm")["ok"]
    notes = " ".join(report["notes"])
    assert "iteration 20 from 2 rank files" in notes and "raw wrapper names" in notes
    assert "rope.freqs_grid" in notes  # an unknown predictor buffer is named, not kept
    assert report["source_format"] == "layerzero" and report["dtype"] == "keep"


def test_three_ranks_npu_pickled_v26_names_into_tp2_pp2(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=3, layers=[4], naming="v26",
                           npu=True, tuple_fallback=True)
    with pytest.raises(ImportError):
        import torch_npu  # noqa: F401  (the reader must not need it)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(
        save / "iter_0000020" / "model_1.pt")
    assert "torch_npu.utils.storage._rebuild_npu_tensor" in unsafe
    assert any(name.endswith("ShardFlattenInfo") for name in unsafe)
    report = convert.layerzero_to_mm(save, tmp_path / "mm", tp=2, pp_layers=[2, 2])
    assert "predictor-relative names" in " ".join(report["notes"])
    _same(tmp_path / "mm", state)
    assert verify_checkpoint(tmp_path / "mm", tp=2, pp_layers=[2, 2])["ok"]


def test_pipeline_split_save_with_ema(tmp_path, state):
    ema = {k: v * 0.5 for k, v in state.items()}
    save = write_layerzero(tmp_path / "save", state, ranks=4, layers=[1, 3], ema=ema,
                           npu=True)
    convert.layerzero_to_mm(save, tmp_path / "model")
    _same(tmp_path / "model", state)
    report = convert.layerzero_to_mm(save, tmp_path / "ema", ema=True, dtype="bf16")
    assert "EMA weights" in " ".join(report["notes"])
    rebuilt = whole_state(tmp_path / "ema")
    assert all(torch.equal(rebuilt[k], v.to(torch.bfloat16)) for k, v in ema.items())
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        convert.layerzero_to_mm(write_layerzero(tmp_path / "no-ema", state, ranks=2,
                                                layers=[4]), tmp_path / "x", ema=True)


def test_mindspeed_mm_230_empty_save_is_explained_and_nothing_written(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=2, layers=[4], naming="v230")
    with pytest.raises(CheckpointError) as info:
        convert.layerzero_to_mm(save, tmp_path / "mm")
    assert "MindSpeed-MM 2.3.0" in str(info.value) and "empty in all 2 rank files" in str(
        info.value)
    assert "SoRAModel.state_dict" in info.value.fix
    assert not (tmp_path / "mm").exists() and not list(tmp_path.glob(".cogvx-tmp-*"))


def test_missing_last_rank_is_a_gap(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=2, layers=[4])
    (save / "iter_0000020" / "model_1.pt").unlink()
    with pytest.raises(CheckpointError, match="model_0.pt is the last"):
        convert.layerzero_to_mm(save, tmp_path / "mm")


def test_iteration_choice(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=2, layers=[4], iteration=10)
    write_layerzero(tmp_path / "save", state, ranks=3, layers=[4], iteration=30)
    (tmp_path / "save" / "iter_0000030" / "model_1.pt").unlink()
    with pytest.raises(CheckpointError, match="no model_1.pt: the ranks are not contiguous"):
        convert.layerzero_to_mm(save, tmp_path / "a")  # the newest, which is broken
    report = convert.layerzero_to_mm(save, tmp_path / "b", iteration=10, dry_run=True)
    assert report["dry_run"] and not (tmp_path / "b").exists()
    direct = convert.layerzero_to_mm(save / "iter_0000010", tmp_path / "c")
    assert "iteration 10" in direct["notes"][0]
    with pytest.raises(UsageError, match="has no iteration 20"):
        convert.layerzero_to_mm(save, tmp_path / "d", iteration=20)


def _move(fqn_part, delta):
    def edit(rank, ckpt):
        if rank == 1:
            for fqn, info in ckpt["shard_state_dict"].items():
                if fqn.endswith(fqn_part) and info.in_shard:
                    info.intra_param_start_idx += delta
                    info.intra_param_end_idx += delta
    return edit


def _iteration(rank, ckpt):
    if rank == 2:
        ckpt["iteration"] = 30


def _drop_key(rank, ckpt):
    if rank == 1:
        key = next(k for k in ckpt["model"] if k.endswith("videodit_blocks.2."
                                                          "_zero3_wrapped_module.norm2.bias"))
        del ckpt["model"][key]


def _numel(rank, ckpt):
    if rank == 0:
        for key, value in ckpt["model"].items():
            if key.endswith("patch_embed.proj.weight"):
                ckpt["model"][key] = value[:-1].clone()


def _tp2(rank, ckpt):
    ckpt["parallel_state"]["tp_degree"] = 2


@pytest.mark.parametrize("edit, error, words", [
    (_move("ff.net.0.proj.weight", 1), CheckpointError,
     ["videodit_blocks.0.ff.net.0.proj.weight", "model_1.pt", "gap"]),
    (_move("ff.net.0.proj.weight", -1), CheckpointError,
     ["videodit_blocks.0.ff.net.0.proj.weight", "model_1.pt", "overlap"]),
    (_iteration, CheckpointError, ["model_2.pt is from iteration 30", "mixes saves"]),
    (_drop_key, CheckpointError, ["model_1.pt", "lacks", "videodit_blocks.2."]),
    (_numel, CheckpointError, ["model_0.pt", "predictor.patch_embed.proj.weight", "holds"]),
    (_tp2, NotSupportedError, ["TP 2"]),
])
def test_broken_saves_name_the_file_and_parameter(tmp_path, state, edit, error, words):
    save = write_layerzero(tmp_path / "save", state, ranks=3, layers=[4], edit=edit)
    with pytest.raises(error) as info:
        convert.layerzero_to_mm(save, tmp_path / "mm")
    for word in words:
        assert word in str(info.value), str(info.value)
    assert not (tmp_path / "mm").exists()


def test_stand_ins_load_without_trust(tmp_path, state):
    save = write_layerzero(tmp_path / "save", state, ranks=2, layers=[4], npu=True)
    ckpt = safeload.load(save / "iter_0000020" / "model_0.pt")
    info = ckpt["shard_state_dict"]["predictor.patch_embed.proj.weight"]
    assert type(info).__qualname__.endswith("ShardFlattenInfo") and info.in_shard
    assert ckpt["args"].num_layers == 4
