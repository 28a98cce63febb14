"""Format sniffing from names on disk, and sources given to the wrong subcommand."""

from __future__ import annotations

import shutil

import pytest
from ckpt_helpers import FIXTURES

from cogvideo_cli.checkpoint import convert
from cogvideo_cli.checkpoint.formats import require_format, sniff
from cogvideo_cli.checkpoint.layout import relayout_name
from cogvideo_cli.checkpoint.verify import verify_checkpoint
from cogvideo_cli.core.errors import UsageError

SAT_I2V = FIXTURES / "sat-i2v-1.5" / "transformer"
HF_T2V = FIXTURES / "hf-t2v-1.5" / "transformer"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_sniff_tells_layerzero_from_megatron_iterations(tmp_path):
    zero = tmp_path / "zero"
    _touch(zero / "iter_0000010" / "model_0.pt")
    assert sniff(zero) == ("layerzero", zero)
    assert sniff(zero / "iter_0000010") == ("layerzero", zero / "iter_0000010")
    mega = tmp_path / "mega"
    _touch(mega / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt")
    assert sniff(mega) == ("mm", mega)
    assert sniff(mega / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt") == ("mm", mega)


def test_sniff_looks_into_download_roots(tmp_path):
    assert sniff(SAT_I2V.parent) == ("sat", SAT_I2V)
    assert sniff(HF_T2V.parent) == ("diffusers", HF_T2V)
    assert sniff(HF_T2V / "config.json") is None
    assert sniff(tmp_path) is None and sniff(tmp_path / "nope") is None
    (tmp_path / "model_index.json").write_text("{}")
    assert sniff(tmp_path) == ("diffusers", tmp_path)


@pytest.mark.parametrize(("run", "source", "found", "use"), [
    (convert.hf_to_mm, SAT_I2V, "is a SAT checkpoint, not a diffusers", "sat-to-mm"),
    (convert.hf_to_mm, SAT_I2V.parent, "holds a SAT checkpoint (transformer/)", "sat-to-mm"),
    (convert.sat_to_mm, HF_T2V, "is a diffusers transformer folder, not a SAT", "hf-to-mm"),
    (convert.sat_to_mm, HF_T2V.parent, "holds a diffusers transformer folder", "hf-to-mm"),
    (convert.resplit, SAT_I2V, "is a SAT checkpoint, not a MindSpeed-MM", "sat-to-mm"),
    (convert.resplit, HF_T2V, "is a diffusers transformer folder, not a Mind", "hf-to-mm"),
])
def test_wrong_converter_names_the_right_one(tmp_path, run, source, found, use):
    with pytest.raises(UsageError, match="; use cogvx convert ") as err:
        run(source, tmp_path / "out")
    assert found in err.value.message and f"cogvx convert {use}" in err.value.message
    assert err.value.fix.startswith(f"cogvx convert {use} --source ")
    assert err.value.exit_code == 2 and not (tmp_path / "out").exists()


def test_mm_to_hf_and_verify_name_the_conversion_first(tmp_path):
    with pytest.raises(UsageError, match="in diffusers form already") as err:
        convert.mm_to_hf(HF_T2V, tmp_path / "out")
    assert err.value.fix == f"cogvx convert hf-to-mm --source {HF_T2V}"
    with pytest.raises(UsageError, match="sat-to-mm, then mm-to-hf"):
        convert.mm_to_hf(SAT_I2V, tmp_path / "out")
    with pytest.raises(UsageError, match="not a MindSpeed-MM checkpoint folder; convert it "
                                         "with cogvx convert sat-to-mm first") as err:
        verify_checkpoint(SAT_I2V)
    assert "then cogvx convert verify" in err.value.fix


def test_mm_checkpoint_given_to_a_reader_of_another_format(tmp_path):
    convert.sat_to_mm(SAT_I2V, tmp_path / "mm")
    for run in (convert.hf_to_mm, convert.sat_to_mm):
        with pytest.raises(UsageError, match="is a MindSpeed-MM checkpoint folder, not a") \
                as err:
            run(tmp_path / "mm", tmp_path / "out")
        assert "cogvx convert resplit --source" in err.value.fix
        assert "cogvx convert mm-to-hf --source" in err.value.fix
    with pytest.raises(UsageError, match="not a LayerZero training save"):
        convert.convert_to_mm("layerzero", tmp_path / "mm", tmp_path / "out")
    require_format(tmp_path / "mm", "mm")  # the right reader passes


def test_diffusers_download_root_points_at_its_transformer_folder(tmp_path):
    root = tmp_path / "CogVideoX1.5-5B"
    shutil.copytree(HF_T2V.parent, root)
    with pytest.raises(UsageError, match="holds no weights itself") as err:
        convert.hf_to_mm(root, tmp_path / "out")
    assert err.value.fix == f"pass --source {root / 'transformer'}"
    shutil.rmtree(root / "transformer")
    (root / "model_index.json").write_text("{}")
    with pytest.raises(UsageError, match="repository root") as err:
        convert.hf_to_mm(root, tmp_path / "out")
    assert "--components transformer" in err.value.fix


@pytest.mark.parametrize(("name", "tp", "pp", "want"), [
    ("t2v-1.5-mm-tp2-pp21-21", 4, None, "t2v-1.5-mm-tp4"),
    ("t2v-1.5-mm-tp2", 2, [21, 21], "t2v-1.5-mm-tp2-pp21-21"),
    ("t2v-1.5-mm-tp2-pp21-21", 2, [20, 22], "t2v-1.5-mm-tp2-pp20-22"),
    ("t2v-1.5-mm-tp1", 2, [42], "t2v-1.5-mm-tp2"),  # one stage is no pipeline
    ("my-ckpt", 2, None, "my-ckpt-tp2"),
    ("run-pp4", 1, None, "run-tp1"),
])
def test_relayout_name_replaces_the_old_layout(name, tp, pp, want):
    assert relayout_name(name, tp, pp) == want
