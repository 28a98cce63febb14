"""Split / merge for every tensor-parallel kind, pipeline placement, and the name tables."""

from __future__ import annotations

import pytest
import torch
from ckpt_helpers import tiny_variant

from cogvideo_cli.checkpoint import sharding
from cogvideo_cli.checkpoint.mapping import (
    HF_MAP,
    MM_PARAMS,
    SAT_MAP,
    TPKind,
    expected_shapes,
    spec_of,
)
from cogvideo_cli.core.errors import CheckpointError


@pytest.mark.parametrize("kind", list(TPKind))
@pytest.mark.parametrize("tp", [1, 2, 3])
def test_take_then_merge_is_identity(kind, tp):
    whole = torch.arange(36 * 6).reshape(36, 6).float()
    parts = [sharding.take(whole, kind, tp, r) for r in range(tp)]
    for part in parts:
        assert tuple(part.shape) == sharding.shard_shape(tuple(whole.shape), kind, tp)
    assert torch.equal(sharding.merge(parts, kind), whole)


def test_qkv_rank_gets_its_slice_of_q_k_and_v():
    q, k, v = torch.full((4, 2), 1.0), torch.full((4, 2), 2.0), torch.full((4, 2), 3.0)
    q[2:] += 10
    k[2:] += 10
    v[2:] += 10
    rank1 = sharding.take(torch.cat([q, k, v]), TPKind.QKV, 2, 1)
    assert torch.equal(rank1, torch.cat([q[2:], k[2:], v[2:]]))


def test_row_splits_input_features_and_column_output_features():
    w = torch.arange(8).reshape(2, 4)
    assert torch.equal(sharding.take(w, TPKind.ROW, 2, 1), w[:, 2:])
    assert torch.equal(sharding.take(w, TPKind.COLUMN, 2, 1), w[1:])


def test_uneven_split_is_refused():
    with pytest.raises(CheckpointError, match="cannot share evenly"):
        sharding.take(torch.zeros(10, 3), TPKind.COLUMN, 3, 0)


def test_owned_copies_views_only():
    base = torch.zeros(8, 4)
    assert sharding.owned(base) is base
    view = base[4:]
    copy = sharding.owned(view)
    assert copy.untyped_storage().nbytes() == view.numel() * 4


def test_place_and_globalize_round_trip():
    layers = [3, 4, 3]
    assert sharding.place("videodit_blocks.3.norm1.weight", layers) == \
        (1, "videodit_blocks.0.norm1.weight")
    assert sharding.place("ofs_embed.0.weight", layers) == (0, "ofs_embed.0.weight")
    assert sharding.place("adaLN_modulation.1.bias", layers) == (2, "adaLN_modulation.1.bias")
    for g in range(10):
        stage, local = sharding.place(f"videodit_blocks.{g}.norm2.bias", layers)
        assert sharding.globalize(local, stage, layers) == f"videodit_blocks.{g}.norm2.bias"
    with pytest.raises(CheckpointError, match="beyond"):
        sharding.place("videodit_blocks.10.norm1.weight", layers)


def test_every_mm_name_has_a_spec_and_both_format_names():
    variant = tiny_variant("i2v-1.5", layers=3)
    for name in expected_shapes(variant):
        assert spec_of(name) is not None, name
        sat = SAT_MAP.from_mm(name)
        assert sat and SAT_MAP.to_mm(sat[0]) == name
        hf = HF_MAP.from_mm(name)
        assert hf, name
        if len(hf) == 1:
            assert HF_MAP.to_mm(hf[0]) == name
        else:
            assert {HF_MAP.fused_part(p)[0] for p in hf} == {name}


def test_table_kinds_match_mindspeed_mm():
    kinds = {s.pattern: s.tp for s in MM_PARAMS}
    assert kinds["videodit_blocks.{i}.self_atten.proj_qkv.bias"] is TPKind.QKV
    assert kinds["videodit_blocks.{i}.self_atten.proj_out.weight"] is TPKind.ROW
    assert kinds["videodit_blocks.{i}.self_atten.proj_out.bias"] is TPKind.REPLICATED
    assert kinds["videodit_blocks.{i}.scale_shift_table.1.weight"] is TPKind.COLUMN
    assert kinds["adaLN_modulation.1.weight"] is TPKind.COLUMN
    assert kinds["proj_out_linear.weight"] is TPKind.REPLICATED


def test_hf_adaln_permutation():
    from cogvideo_cli.checkpoint.diffusers import unfuse

    fuse = HF_MAP.fusion_of("videodit_blocks.0.scale_shift_table.1.weight")
    n1 = torch.arange(6).repeat_interleave(2).reshape(12, 1).float()
    n2 = n1 + 100
    pieces = [n1.chunk(6), n2.chunk(6)]
    fused = torch.cat([pieces[p][c] for p, c in fuse.segments])
    # shift, scale, gate of norm1, then of norm2, then the text halves
    assert fused[:, 0].tolist()[::2] == [0, 1, 2, 100, 101, 102, 3, 4, 5, 103, 104, 105]
    back = unfuse(fuse, fused)
    assert torch.equal(back[0], n1) and torch.equal(back[1], n2)
