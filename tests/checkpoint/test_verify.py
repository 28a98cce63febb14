"""verify_checkpoint and read_layout: what Megatron would load, checked before launching."""

from __future__ import annotations

import shutil

import pytest
import torch
from ckpt_helpers import FIXTURES, load_pt

from cogvideo_cli.checkpoint import convert
from cogvideo_cli.checkpoint.detect import detect_variant
from cogvideo_cli.checkpoint.layout import read_layout, sidecar_path
from cogvideo_cli.checkpoint.verify import verify_checkpoint
from cogvideo_cli.core.errors import CheckpointError

SAT_I2V = FIXTURES / "sat-i2v-1.5" / "transformer"


@pytest.fixture
def mm(tmp_path):
    """An i2v-1.5 checkpoint at TP 2 / PP 21 21, with its sidecar."""
    convert.sat_to_mm(SAT_I2V, tmp_path / "mm", tp=2, pp_layers=[21, 21])
    return tmp_path / "mm"


def _rank(mm, name="mp_rank_00_001"):
    return mm / "release" / name / "model_optim_rng.pt"


def _edit(path, change):
    ckpt = load_pt(path)
    change(ckpt["model"])
    torch.save(ckpt, path)


def test_good_checkpoint_report(mm):
    report = verify_checkpoint(mm, tp=2, pp_layers=[21, 21])
    assert (report["variant"], report["tp"], report["pp_layers"]) == ("i2v-1.5", 2, [21, 21])
    assert report["iteration"] == "release" and report["sidecar"]
    assert report["keys"]["found"] == report["keys"]["expected"] == 2 * 776
    assert report["files"][0]["path"] == "release/mp_rank_00_000/model_optim_rng.pt"
    assert verify_checkpoint(sidecar_path(mm))["ok"]  # the sidecar path is accepted too


def test_read_layout_with_and_without_sidecar(mm):
    layout = read_layout(mm)
    assert (layout.tp, layout.pp_layers, layout.iteration, layout.variant) == \
        (2, [21, 21], "release", "i2v-1.5")
    sidecar_path(mm).unlink()
    layout = read_layout(mm)
    assert (layout.tp, layout.pp_layers, layout.variant) == (2, [21, 21], None)
    assert verify_checkpoint(mm)["sidecar"] is False


def test_layout_mismatch_proposes_resplit(mm):
    with pytest.raises(CheckpointError, match="split for TP 2, but the run uses TP 4") as err:
        verify_checkpoint(mm, tp=4)
    assert "cogvx convert resplit" in err.value.fix and "--tp 4" in err.value.fix
    with pytest.raises(CheckpointError, match="stages 21 21, but the run uses 20 22"):
        verify_checkpoint(mm, pp_layers=[20, 22])
    with pytest.raises(CheckpointError, match="stages 21 21, but the run uses none"):
        verify_checkpoint(mm, pp_layers=[])


def test_resplit_fix_names_the_target_by_the_new_layout_alone(mm):
    named = mm.with_name("i2v-1.5-mm-tp2-pp21-21")
    sidecar_path(mm).rename(sidecar_path(named))
    mm.rename(named)
    with pytest.raises(CheckpointError, match="uses TP 4") as err:
        verify_checkpoint(named, tp=4)
    assert f"--target {named.with_name('i2v-1.5-mm-tp4')} --tp 4," in err.value.fix
    with pytest.raises(CheckpointError, match="uses 20 22") as err:
        verify_checkpoint(named, pp_layers=[20, 22])
    assert f"--target {named.with_name('i2v-1.5-mm-tp2-pp20-22')} --tp 2 " in err.value.fix
    assert "(got" not in str(err.value)  # the stages are in the message already


def test_wrong_variant(mm):
    i2v = detect_variant({"patch_embed.proj.weight": (64, 256),
                          "videodit_blocks.0.self_atten.q_norm.weight": (8,),
                          "time_embed.time_embed.0.weight": (16, 64),
                          "caption_projection.weight": (64, 4096)})
    t2v = type(i2v)(**{**i2v.__dict__, "name": "t2v-1.5", "task": "t2v"})
    with pytest.raises(CheckpointError, match="holds a i2v-1.5 model, but the run is t2v-1.5"):
        verify_checkpoint(mm, variant=t2v)


def test_misspelled_and_missing_tracker(mm):
    (mm / "latest_checkpointed_iteration.txt").rename(mm / "latest_checkpointed_iterations.txt")
    with pytest.raises(CheckpointError, match="misspelled") as err:
        verify_checkpoint(mm)
    assert err.value.fix.startswith("mv ") and err.value.fix.endswith(
        "latest_checkpointed_iteration.txt")
    (mm / "latest_checkpointed_iterations.txt").unlink()
    with pytest.raises(CheckpointError, match="random") as err:
        verify_checkpoint(mm)
    assert "printf release" in err.value.fix


def test_bad_tracker_content(mm):
    (mm / "latest_checkpointed_iteration.txt").write_text("0")
    with pytest.raises(CheckpointError, match="only 'release' or an iteration above 0"):
        verify_checkpoint(mm)
    (mm / "latest_checkpointed_iteration.txt").write_text("10")
    with pytest.raises(CheckpointError, match="iter_0000010 is missing"):
        verify_checkpoint(mm)


def test_missing_rank_folder(mm):
    shutil.rmtree(mm / "release" / "mp_rank_01_001")
    with pytest.raises(CheckpointError, match="lacks mp_rank_01_001"):
        verify_checkpoint(mm)


def test_missing_unexpected_and_misshapen_keys(mm):
    sidecar_path(mm).unlink()  # edits change the files; check the tensors, not the sizes
    _edit(_rank(mm), lambda m: m.pop("videodit_blocks.3.norm1.weight"))
    with pytest.raises(CheckpointError, match="lacks 1 tensors.*videodit_blocks.3.norm1"):
        verify_checkpoint(mm)
    _edit(_rank(mm), lambda m: m.update({"videodit_blocks.3.norm1.weight": torch.zeros(64),
                                         "videodit_blocks.3.lora_A.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="lora_A"):
        verify_checkpoint(mm)
    _edit(_rank(mm), lambda m: m.pop("videodit_blocks.3.lora_A.weight"))
    _edit(_rank(mm), lambda m: m.update({"ofs_embed.0.weight": torch.zeros(16, 16)}))
    with pytest.raises(CheckpointError, match="ofs_embed.0.weight, which belongs to stage 0"):
        verify_checkpoint(mm)
    _edit(_rank(mm), lambda m: m.pop("ofs_embed.0.weight"))
    _edit(_rank(mm), lambda m: m.update({"norm_out.weight": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match=r"norm_out.weight has shape \[32\]"):
        verify_checkpoint(mm)


def test_sidecar_catches_changed_files(mm):
    path = _rank(mm)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one tensor byte changed
    path.write_bytes(bytes(data))
    assert verify_checkpoint(mm)["ok"]  # sizes match: fine without digests
    with pytest.raises(CheckpointError, match="digest"):
        verify_checkpoint(mm, digests=True)
    with open(path, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(CheckpointError, match="size"):
        verify_checkpoint(mm)


def test_vpp_and_nested_model_are_refused(mm):
    from cogvideo_cli.core.errors import NotSupportedError

    sidecar_path(mm).unlink()
    path = _rank(mm, "mp_rank_00_000")
    model = load_pt(path)["model"]
    torch.save({"model": {"model": model, "iteration": 0}}, path)
    with pytest.raises(CheckpointError, match="nests the weights one level too deep"):
        verify_checkpoint(mm)
    torch.save({"model0": model, "model1": {}, "checkpoint_version": 3.0}, path)
    with pytest.raises(NotSupportedError, match="VPP"):
        verify_checkpoint(mm)
