"""Round trips are bit-exact; outputs load in diffusers and MindSpeed-MM's way."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_helpers import (
    FIXTURES,
    forward,
    hf_state,
    load_pt,
    make_training_checkpoint,
    summarize,
    tiny_diffusers,
    tiny_variant,
    whole_state,
)

from cogvideo_cli.checkpoint import convert
from cogvideo_cli.checkpoint.layout import read_layout, read_sidecar
from cogvideo_cli.checkpoint.verify import verify_checkpoint


def _summaries(folder):
    return {p.relative_to(folder).as_posix(): summarize(load_pt(p))
            for p in sorted(folder.rglob("*.pt"))}


def test_hf_to_mm_to_hf_is_bit_exact(tmp_path):
    source = FIXTURES / "hf-i2v-1.5" / "transformer"
    convert.hf_to_mm(source, tmp_path / "mm", tp=2, pp_layers=[20, 22])
    convert.mm_to_hf(tmp_path / "mm", tmp_path / "hf")
    before, after = hf_state(source), hf_state(tmp_path / "hf")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config == json.loads((source / "config.json").read_text())


def test_resplit_there_and_back_is_bit_exact(tmp_path):
    convert.sat_to_mm(FIXTURES / "sat-i2v-1.5" / "transformer", tmp_path / "a", tp=2,
                      pp_layers=[21, 21])
    convert.resplit(tmp_path / "a", tmp_path / "b", tp=4, pp_layers=[10, 11, 11, 10])
    convert.resplit(tmp_path / "b", tmp_path / "c", tp=1, pp=3)
    convert.resplit(tmp_path / "c", tmp_path / "d", tp=2, pp_layers=[21, 21])
    assert _summaries(tmp_path / "d") == _summaries(tmp_path / "a")
    assert read_layout(tmp_path / "c").pp_layers == [14, 14, 14]
    assert verify_checkpoint(tmp_path / "b")["keys"]["found"] == 4 * 776


def test_training_save_reads_back(tmp_path):
    convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "rel", tp=2)
    trained = make_training_checkpoint(tmp_path / "rel", tmp_path / "train", iteration=10)
    layout = read_layout(trained)
    assert (layout.tp, layout.pp_layers, layout.iteration) == (2, [], "10")
    report = verify_checkpoint(trained, tp=2)
    assert report["iteration"] == "10"
    convert.resplit(trained, tmp_path / "back", tp=1)
    convert.resplit(tmp_path / "rel", tmp_path / "ref", tp=1)
    assert _summaries(tmp_path / "back") == _summaries(tmp_path / "ref")


def test_training_save_needs_no_trust_but_foreign_objects_do(tmp_path):
    from ckpt_helpers import Foreign

    from cogvideo_cli.core.errors import CheckpointError

    convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "rel", tp=1)
    rank = tmp_path / "rel" / "release" / "mp_rank_00" / "model_optim_rng.pt"
    ckpt = load_pt(rank)
    ckpt["args"] = Foreign()
    torch.save(ckpt, rank)
    (tmp_path / "rel.cogvx.json").unlink()  # its recorded sizes no longer hold
    with pytest.raises(CheckpointError, match="ckpt_helpers.Foreign") as err:
        verify_checkpoint(tmp_path / "rel")
    assert "--trust-checkpoint" in err.value.fix
    assert verify_checkpoint(tmp_path / "rel", trust=True)["ok"]


CASES = [("t2v", "1.0"), ("i2v", "1.0"), ("t2v", "1.5"), ("i2v", "1.5")]


@pytest.mark.parametrize("task,version", CASES)
def test_mm_to_hf_gives_the_same_forward_as_the_original(tmp_path, task, version):
    from diffusers import CogVideoXTransformer3DModel

    i2v = task == "i2v"
    original = tiny_diffusers(tmp_path / "orig", i2v=i2v, version=version, layers=3)
    report = convert.hf_to_mm(original, tmp_path / "mm", tp=2, pp_layers=[1, 2])
    assert report["variant"] == f"{task}-{version}"
    verify_checkpoint(tmp_path / "mm", tp=2, pp_layers=[1, 2])
    convert.mm_to_hf(tmp_path / "mm", tmp_path / "back")
    a = CogVideoXTransformer3DModel.from_pretrained(original).eval()
    b = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "back").eval()
    assert torch.equal(forward(a, i2v, version), forward(b, i2v, version))


def test_mm_to_hf_without_sidecar_derives_a_loadable_config(tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    original = tiny_diffusers(tmp_path / "orig", i2v=True, version="1.5", layers=2)
    convert.hf_to_mm(original, tmp_path / "mm", tp=2)
    (tmp_path / "mm.cogvx.json").unlink()
    convert.mm_to_hf(tmp_path / "mm", tmp_path / "back")
    a = CogVideoXTransformer3DModel.from_pretrained(original).eval()
    b = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "back").eval()
    assert torch.equal(forward(a, True, "1.5"), forward(b, True, "1.5"))


def test_sixty_four_layers_any_layout(sat_factory, tmp_path):
    variant = tiny_variant("t2v-1.5", layers=64, heads=4)
    sat, state = sat_factory(variant)
    report = convert.sat_to_mm(sat, tmp_path / "mm", tp=4, pp_layers=[16, 16, 16, 16])
    assert report["dims"]["num_layers"] == 64
    assert verify_checkpoint(tmp_path / "mm", tp=4, pp_layers=[16, 16, 16, 16])["ok"]
    merged = whole_state(tmp_path / "mm")
    assert merged.keys() == state.keys()
    assert all(torch.equal(merged[k], state[k]) for k in state)


def test_each_file_holds_only_its_own_bytes(tmp_path):
    convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "mm", tp=2,
                      pp_layers=[10, 11, 11, 10])
    for path in (tmp_path / "mm").rglob("*.pt"):
        tensors = load_pt(path)["model"].values()
        payload = sum(t.numel() * t.element_size() for t in tensors)
        overhead = path.stat().st_size - payload
        # torch.save's own cost is ~320 B a tensor (zip header, 64-byte alignment, pickle);
        # a saved view would add its whole storage, i.e. its siblings' bytes
        assert 0 < overhead < 400 * len(tensors) + 4096, (path, overhead)


def test_dtype_cast_and_sidecar(tmp_path):
    report = convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "mm",
                               dtype="fp32")
    model = load_pt(tmp_path / "mm" / "release" / "mp_rank_00" / "model_optim_rng.pt")
    assert {t.dtype for t in model["model"].values()} == {torch.float32}
    sidecar = read_sidecar(tmp_path / "mm")
    assert sidecar["variant"] == "t2v-1.5" and sidecar["dtype"] == "float32"
    assert sidecar["source"]["format"] == "sat" and sidecar["tp"] == 1
    assert set(sidecar["files"]) == {"release/mp_rank_00/model_optim_rng.pt"}
    assert report["files"][0]["sha256"] == sidecar["files"][report["files"][0]["path"]]["sha256"]
    assert verify_checkpoint(tmp_path / "mm", digests=True)["digests_checked"]


def test_dry_run_plans_without_writing(tmp_path):
    report = convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "mm",
                               tp=2, pp=2, dry_run=True)
    assert not (tmp_path / "mm").exists()
    assert report["pp_layers"] == [21, 21]
    assert len(report["files"]) == 4
    real = convert.sat_to_mm(FIXTURES / "sat-t2v-1.5" / "transformer", tmp_path / "mm",
                             tp=2, pp=2)
    planned = {f["path"]: f["bytes"] for f in report["files"]}
    for item in real["files"]:
        assert abs(planned[item["path"]] - item["bytes"]) < 16384
