"""cogvx merge-lora and convert layerzero-to-mm through the CLI: exit codes, output, chaining."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoint"))

from ckpt_helpers import random_mm_state, tiny_diffusers, tiny_variant
from layerzero_helpers import write_layerzero
from lora_helpers import SAT_T2V, random_factors, write_hf_lora, write_mm_lora


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from cogvideo_cli.checkpoint import convert

    out = tmp_path_factory.mktemp("base") / "mm"
    convert.sat_to_mm(SAT_T2V, out, tp=2)
    return out


def test_merge_with_flags_prints_scale_and_verifies(cli, base, tmp_path):
    lora = write_mm_lora(tmp_path / "lora", random_factors(42, 64, 4), tp=2,
                         pp_layers=[21, 21])
    result = cli("merge-lora", "--base", base, "--lora", lora, "--target", "out",
                 "--lora-rank", "4", "--lora-alpha", "8", "--scale", "0.5")
    assert result.exit_code == 0, result.output
    assert "effective scale 1 = scale 0.5 x alpha 8 / rank 4" in result.stdout
    assert "84 of 84 modules changed; largest relative change" in result.stdout
    assert "checked like convert verify: t2v-1.5, TP 2" in result.stdout
    verify = cli("--json", "convert", "verify", "out", "--tp", "2")
    assert verify.exit_code == 0, verify.output
    assert f'path = "{tmp_path / "out"}"' in (tmp_path / "cogvx.toml").read_text()

    again = cli("merge-lora", "--base", base, "--lora", lora, "--target", "out",
                "--lora-rank", "4", "--lora-alpha", "8")
    assert again.exit_code == 2 and "already exists" in again.output
    assert "--force" in again.output


def test_rank_and_alpha_from_the_workspace_record(cli, base, tmp_path):
    lora = write_mm_lora(tmp_path / "run" / "ckpt", random_factors(2, 64, 4))
    missing = cli("merge-lora", "--base", base, "--lora", lora, "--target", "out")
    assert missing.exit_code == 2
    assert "--lora-rank 4 --lora-alpha ALPHA" in missing.output
    (tmp_path / "cogvx.toml").write_text(
        f'[runs]\nlora_save = "{lora}"\nlora_rank = 4\nlora_alpha = 2.0\n')
    result = cli("--json", "merge-lora", "--base", base, "--target", "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["effective_scale"] == 0.5 and "workspace" in report["rank_alpha_from"]
    assert report["modules"] == 4 and report["tp"] == 2


def test_merge_into_a_diffusers_pipeline_folder(cli, tmp_path):
    pipe = tmp_path / "pipe"
    tiny_diffusers(pipe / "transformer", i2v=False, version="1.0")
    (pipe / "model_index.json").write_text("{}")
    gen = torch.Generator().manual_seed(0)
    factors = {"transformer_blocks.0.attn1.to_v": (torch.randn(2, 16, generator=gen),
                                                   torch.randn(16, 2, generator=gen))}
    lora = write_hf_lora(tmp_path / "lora", factors, rank=2, alpha=2.0)
    result = cli("merge-lora", "--base", pipe, "--lora", lora / "pytorch_lora_weights"
                 ".safetensors", "--target", "merged")
    assert result.exit_code == 0, result.output
    assert "lora.json" in result.stdout and "1 of 1 modules changed" in result.stdout
    assert (tmp_path / "merged" / "config.json").is_file()
    assert 'hf = "' in (tmp_path / "cogvx.toml").read_text()


def test_merge_json_names_base_lora_and_target_absolutely(cli, tmp_path):
    tiny_diffusers(tmp_path / "base", i2v=False, version="1.0")
    write_hf_lora(tmp_path / "lora", _factors(), rank=2, alpha=2.0)
    result = cli("merge-lora", "--base", "base", "--lora", "lora", "--target", "merged")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert record["base"] == str(tmp_path / "base")
    assert record["lora"] == str(tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    assert record["target"] == str(tmp_path / "merged")


def test_base_of_an_earlier_lora_run_comes_from_its_settings(cli, base, tmp_path):
    lora = write_mm_lora(tmp_path / "runs" / "l1" / "ckpt", random_factors(2, 64, 4))
    (tmp_path / "runs" / "l1" / "settings.json").write_text(json.dumps(
        {"kind": "lora", "lora_r": 4, "lora_alpha": 8.0,
         "resolved_paths": {"save": str(lora), "load": str(base)}}))
    later = write_mm_lora(tmp_path / "runs" / "l2" / "ckpt", random_factors(2, 64, 4))
    (tmp_path / "cogvx.toml").write_text(f'[runs]\nlora_save = "{later}"\n')
    result = cli("--json", "merge-lora", "--lora", "runs/l1/ckpt", "--target", "out",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["base"] == str(base) and report["base_from"].endswith("settings.json")
    shown = cli("merge-lora", "--lora", "runs/l1/ckpt", "--target", "out", "--dry-run")
    assert "base from runs/l1/settings.json" in shown.stdout


def test_base_of_a_copied_diffusers_lora_comes_from_its_lora_json(cli, tmp_path):
    pipe = tmp_path / "pipe"
    tiny_diffusers(pipe / "transformer", i2v=False, version="1.0")
    (pipe / "model_index.json").write_text("{}")
    lora = write_hf_lora(tmp_path / "lone", _factors(), rank=2, alpha=2.0)
    record = json.loads((lora / "lora.json").read_text())
    (lora / "lora.json").write_text(json.dumps({**record, "base_model": str(pipe)}))
    result = cli("merge-lora", "--lora", "lone", "--target", "m", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"into {pipe / 'transformer'}" in result.stdout
    assert "base from lone/lora.json" in result.stdout


def test_base_falls_back_to_the_last_runs_base_and_says_so(cli, base, tmp_path):
    lora = write_mm_lora(tmp_path / "old", random_factors(2, 64, 4))
    (tmp_path / "cogvx.toml").write_text(
        f'[runs]\nlora_save = "{tmp_path / "new"}"\nlora_base = "{base}"\n')
    result = cli("merge-lora", "--lora", lora, "--target", "out", "--dry-run",
                 "--lora-rank", "4", "--lora-alpha", "4")
    assert result.exit_code == 0, result.output
    assert "base from [runs] lora_base in" in result.stdout
    assert "the base of the workspace's last LoRA run" in result.stdout


def test_a_merged_checkpoint_is_not_the_next_default_base(cli, base, tmp_path):
    first = write_mm_lora(tmp_path / "a", random_factors(2, 64, 4))
    flags = ("--lora-rank", "4", "--lora-alpha", "4")
    done = cli("merge-lora", "--base", base, "--lora", first, "--target", "m1", *flags)
    assert done.exit_code == 0, done.output
    assert f'path = "{tmp_path / "m1"}"' in (tmp_path / "cogvx.toml").read_text()
    sidecar = json.loads((tmp_path / "m1.cogvx.json").read_text())
    assert sidecar["source"]["path"] == str(base.absolute())

    second = write_mm_lora(tmp_path / "b", random_factors(2, 64, 4, seed=1))
    again = cli("merge-lora", "--lora", second, "--target", "m2", *flags)
    assert again.exit_code == 2, again.output
    assert "is itself a merge-lora output" in again.output
    assert f"--base {base}" in again.output and not (tmp_path / "m2").exists()
    stacked = cli("merge-lora", "--base", "m1", "--lora", second, "--target", "m2", *flags)
    assert stacked.exit_code == 0, stacked.output


def test_missing_lora_is_not_called_a_mindspeed_lora(cli, tmp_path):
    pipe = tmp_path / "pipe"
    tiny_diffusers(pipe / "transformer", i2v=False, version="1.0")
    result = cli("merge-lora", "--base", pipe / "transformer", "--lora", "nope",
                 "--target", "m")
    assert result.exit_code == 1 and "the LoRA nope does not exist" in result.output
    assert "MindSpeed-MM LoRA" not in result.output


def _factors():
    gen = torch.Generator().manual_seed(0)
    return {"transformer_blocks.0.attn1.to_v": (torch.randn(2, 16, generator=gen),
                                                torch.randn(16, 2, generator=gen))}


def test_layerzero_to_mm_cli(cli, tmp_path):
    variant = tiny_variant("t2v-1.5", layers=2)
    state = {k: v.float() for k, v in random_mm_state(variant).items()}
    write_layerzero(tmp_path / "save", state, ranks=2, layers=[2], npu=True)
    result = cli("convert", "layerzero-to-mm", "--source", "save", "--target", "mm",
                 "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    assert "Converted: layerzero" in result.stdout and "dtype bfloat16" in result.stdout
    assert "rebuilt iteration 20 from 2 rank files" in result.output
    assert cli("convert", "verify", "mm").exit_code == 0

    write_layerzero(tmp_path / "empty", state, ranks=2, layers=[2], naming="v230")
    bad = cli("convert", "layerzero-to-mm", "--source", "empty", "--target", "mm2")
    assert bad.exit_code == 1 and "MindSpeed-MM 2.3.0" in bad.output
    assert "Fix:" in bad.output and not (tmp_path / "mm2").exists()
    assert cli("convert", "layerzero-to-mm", "--target", "x").exit_code == 2
