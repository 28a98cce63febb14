"""Bad inputs get clear errors; failures leave nothing behind; targets are never clobbered."""

from __future__ import annotations

import shutil

import pytest
import torch
from ckpt_helpers import FIXTURES, tiny_variant

from cogvideo_cli.checkpoint import convert
from cogvideo_cli.checkpoint.layout import read_layout
from cogvideo_cli.core.errors import CheckpointError, UsageError

SAT_T2V = FIXTURES / "sat-t2v-1.5" / "transformer"
HF_T2V = FIXTURES / "hf-t2v-1.5" / "transformer"


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_truncated_pt(tmp_path):
    data = (SAT_T2V / "1000" / "mp_rank_00_model_states.pt").read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        convert.sat_to_mm(bad, tmp_path / "out")
    assert "again" in err.value.fix
    assert _leftovers(tmp_path) == ["cut.pt"]


def test_empty_pt(tmp_path):
    bad = tmp_path / "empty.pt"
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty") as err:
        convert.sat_to_mm(bad, tmp_path / "out")
    assert "again" in err.value.fix


def test_force_target_holding_the_source_is_refused(tmp_path):
    import shutil

    nest = tmp_path / "nest"
    shutil.copytree(SAT_T2V, nest / "transformer")
    with pytest.raises(UsageError, match="overlaps the input"):
        convert.sat_to_mm(nest / "transformer", nest, force=True)
    assert (nest / "transformer" / "latest").exists()


def test_folder_where_a_file_is_needed_and_the_reverse(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no SAT checkpoint"):
        convert.sat_to_mm(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UsageError, match="is a file, but a diffusers transformer folder"):
        convert.hf_to_mm(HF_T2V / "config.json", tmp_path / "out")
    with pytest.raises(UsageError, match="is a file, but a MindSpeed-MM checkpoint folder"):
        convert.resplit(SAT_T2V / "latest", tmp_path / "out")


def test_diffusers_repository_root_is_refused(tmp_path):
    root = tmp_path / "CogVideoX1.5-5B"
    shutil.copytree(FIXTURES / "hf-t2v-1.5", root)
    (root / "text_encoder").mkdir()
    (root / "vae").mkdir()
    with pytest.raises(UsageError, match="repository root") as err:
        convert.hf_to_mm(root, tmp_path / "out")
    assert err.value.fix == f"pass --source {root / 'transformer'}"


def test_mixed_in_foreign_shards_are_refused(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "transformer"
    shutil.copytree(HF_T2V, folder)
    (folder / "diffusion_pytorch_model.safetensors.index.json").unlink()
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2)},
              str(folder / "t5.safetensors"))
    with pytest.raises(CheckpointError, match="not part of a CogVideoX transformer"):
        convert.hf_to_mm(folder, tmp_path / "out")


def test_wrong_variant_is_refused_with_the_detected_one(tmp_path):
    with pytest.raises(UsageError, match="contradicts the tensors, which are t2v-1.5") as err:
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", variant="i2v-1.5")
    assert "--variant t2v-1.5" in err.value.fix
    assert convert.sat_to_mm(SAT_T2V, tmp_path / "ok", variant="t2v-1.5", dry_run=True)


def test_missing_layer(sat_factory, tmp_path):
    def drop_layer_2(state):
        for name in [n for n in state if n.startswith("videodit_blocks.2.")]:
            del state[name]

    sat, _ = sat_factory(tiny_variant("t2v-1.5"), edit=drop_layer_2)
    with pytest.raises(CheckpointError, match="layers 2 are missing"):
        convert.sat_to_mm(sat, tmp_path / "out")


def test_missing_tensor_and_shape_mismatch(sat_factory, tmp_path):
    def drop(state):
        del state["videodit_blocks.1.norm2.bias"]

    def widen(state):
        state["videodit_blocks.3.ff.net.0.proj.weight"] = torch.zeros(7, 16)

    sat, _ = sat_factory(tiny_variant("t2v-1.5"), name="a", edit=drop)
    with pytest.raises(CheckpointError, match="lacks 1 tensors.*norm2.bias"):
        convert.sat_to_mm(sat, tmp_path / "out")
    sat, _ = sat_factory(tiny_variant("t2v-1.5"), name="b", edit=widen)
    with pytest.raises(CheckpointError, match=r"ff.net.0.proj.weight .* has shape \[7, 16\]"):
        convert.sat_to_mm(sat, tmp_path / "out")


def test_tp_must_divide_and_pp_layers_must_sum(tmp_path):
    with pytest.raises(UsageError, match="--tp 3 does not divide"):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", tp=3)
    with pytest.raises(UsageError, match="sums to 41, but the model has 42") as err:
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", pp_layers=[10, 11, 11, 9])
    assert err.value.fix == "try 10 11 11 10"
    with pytest.raises(UsageError, match="fewer than 1 layer"):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", pp_layers=[42, 0])
    with pytest.raises(UsageError, match="disagree"):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", pp_layers=[21, 21], pp=3)
    assert not (tmp_path / "out").exists()


def test_existing_target_needs_force(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        convert.sat_to_mm(SAT_T2V, target)
    assert (target / "keep.txt").read_text() == "mine"
    convert.sat_to_mm(SAT_T2V, target, force=True)
    assert not (target / "keep.txt").exists()
    assert read_layout(target).tp == 1


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt])
def test_failure_mid_write_leaves_no_target(tmp_path, monkeypatch, error):
    real_save = torch.save
    calls = []

    def failing_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise error
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(type(error) if isinstance(error, Exception) else error):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", tp=2, pp=2)
    assert _leftovers(tmp_path) == []


def test_failed_forced_run_keeps_the_old_target(tmp_path, monkeypatch):
    convert.sat_to_mm(SAT_T2V, tmp_path / "out", tp=1)
    before = sorted(p.name for p in (tmp_path / "out" / "release").iterdir())

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", tp=2, force=True)
    assert sorted(p.name for p in (tmp_path / "out" / "release").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.cogvx.json"]


def test_unknown_dtype(tmp_path):
    with pytest.raises(UsageError, match="unknown --dtype"):
        convert.sat_to_mm(SAT_T2V, tmp_path / "out", dtype="int3")
