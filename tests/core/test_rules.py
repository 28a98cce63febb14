"""Every pre-launch rule fails on a small wrong input, with the value and a fix."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from cogvideo_cli.core import rules
from cogvideo_cli.core.errors import CheckError, UsageError
from cogvideo_cli.core.variants import get_variant

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
import standin  # noqa: E402

V10, V15, I15 = get_variant("t2v-1.0"), get_variant("t2v-1.5"), get_variant("i2v-1.5")
ARGS = {"ckpt-format": "torch", "use-distributed-optimizer": True,
        "overlap-grad-reduce": True, "overlap-param-gather": True, "lr": 1e-5}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    standin.make_checkout(root / "mm")
    weights = standin.make_weights(root / "w")
    data = standin.make_data(root / "d", samples=4)
    standin.make_checkpoint(root / "ck2", tp=2)
    standin.make_checkpoint(root / "ck1", tp=1)
    standin.make_checkpoint(root / "ckpp", tp=1, pp_layers=[21, 21])
    standin.make_checkpoint(root / "lora", tp=1, lora_only=True)
    (root / "prompts.txt").write_text("a cat\na dog\n")
    (root / "img.png").write_bytes(b"png")
    (root / "images.txt").write_text(f"{root / 'img.png'}\n{root / 'img.png'}\n")
    return root, weights, data


def _good(setup, **changes) -> rules.Facts:
    root, weights, data = setup
    facts = rules.Facts(
        kind="train", variant=V10, nproc_per_node=4, tp=2, sp=True, mbs=1, gbs=4,
        frames=17, height=480, width=720, text_length=226, model_max_length=226,
        input_size=[7, 60, 90], args=dict(ARGS), dtypes={"model.predictor.dtype": "bf16"},
        load=root / "ck2", data_path=data, vae=weights["vae"], t5=weights["t5"],
        tokenizer=weights["tokenizer"], root=root / "mm", entries=["pretrain_sora.py"],
        lr=1e-5, min_lr=1e-5)
    return dataclasses.replace(facts, **changes)


def test_a_good_plan_passes(setup):
    rules.check(_good(setup))


def _pp(setup):
    root = setup[0]
    return dict(tp=1, sp=False, pp_layers=[21, 21], load=root / "ckpp", input_size=[5, 60, 90],
                data_batch_size=1, nproc_per_node=2, gbs=2,
                args={**ARGS, "optimization-level": 2,
                      "use-multiparameter-pipeline-model-parallel": True})


USAGE_CASES = {
    "world": (dict(nproc_per_node=3), "not divisible by TP x PP x CP"),
    "heads": (dict(tp=5, nproc_per_node=5, gbs=5), "does not divide the 48 attention heads"),
    "sp": (dict(tp=1, sp=False, sp_requested=True, load=None), "--sp needs --tp 2"),
    "seq": (dict(cp=3, nproc_per_node=6, gbs=6), "not divisible by CP x TP = 6"),
    "stages-sum": (dict(pp_layers=[20, 21], tp=1, sp=False, nproc_per_node=2, gbs=2),
                   "sums to 41, but the model has 42 layers"),
    "stages-empty": (dict(pp_layers=[42, 0], tp=1, sp=False, nproc_per_node=2, gbs=2),
                     "fewer than 1 layer"),
    "gbs": (dict(gbs=3), "--gbs 3 is not a multiple of MBS x DP"),
    "encoder-dp-pp": (dict(encoder_dp=True, pp_layers=[21, 21], tp=1, sp=False,
                           nproc_per_node=2, gbs=2), "Encoder-DP cannot be combined with "
                                                     "pipeline"),
    "encoder-dp-vae-cp": (dict(encoder_dp=True, vae_cp=2), "VAE context parallel"),
    "layerzero-tp": (dict(layerzero=True), "--layerzero needs --tp 1"),
    "layerzero-size": (dict(layerzero=True, tp=1, sp=False, nproc_per_node=6, gbs=6,
                            zero3_size=4), "LayerZero group size 4"),
    "vae-cp": (dict(vae_cp=3, nproc_per_node=6, tp=2, gbs=3), "neither a multiple nor"),
    "overlap": (dict(args={**ARGS, "use-distributed-optimizer": False}),
                "--overlap-param-gather needs --use-distributed-optimizer"),
    "ckpt-format": (dict(args={**ARGS, "ckpt-format": "torch_dist"}), "--ckpt-format torch"),
    "lr": (dict(min_lr=1e-3), "exceeds --lr"),
    "frames": (dict(frames=18), "18 frames is not 4k+1"),
    "frames-1.5": (dict(variant=V15, frames=33), "needs an even count"),
    "resolution": (dict(height=488), "height 488 is not a multiple of 16"),
    "text-length": (dict(text_length=224), "differs from the tokenizer's model_max_length"),
    "dtype": (dict(dtypes={"model.ae.dtype": "bfloat16"}), "'bfloat16' is not a dtype"),
    "connections": (dict(env={"CUDA_DEVICE_MAX_CONNECTIONS": "8"}), "requires 1"),
    "node-rank": (dict(nnodes=2, node_rank=2, gbs=8), "--node-rank 2 is outside 0..1"),
    "loopback": (dict(nnodes=2, gbs=8), "loopback address"),
    "pp-input-size": ("pp", dict(input_size=[7, 60, 90]), "exact latent shape [5, 60, 90]"),
    "pp-batch": ("pp", dict(data_batch_size=None), "dataloader_param.batch_size"),
    "pp-flags": ("pp", dict(args=dict(ARGS)), "--optimization-level"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_rule_fails(setup, case):
    spec = USAGE_CASES[case]
    if spec[0] == "pp":
        changes, expected = {**_pp(setup), **spec[1]}, spec[2]
    else:
        changes, expected = spec
    with pytest.raises(UsageError) as err:
        rules.check(_good(setup, **changes))
    assert expected in str(err.value)
    assert err.value.fix and err.value.exit_code == 2


def test_pipeline_plan_passes(setup):
    rules.check(_good(setup, **_pp(setup)))


def _files(setup):
    root = setup[0]
    return {
        "no-checkout": (dict(root=root / "nowhere"), "does not exist"),
        "not-a-checkout": (dict(root=root / "w"), "no pretrain_sora.py"),
        "vae": (dict(vae=root / "w" / "missing.pt"), "the VAE file is missing"),
        "t5-config": (dict(t5=root / "w" / "tokenizer"), "has no config.json"),
        "tokenizer": (dict(tokenizer=root / "w" / "text_encoder"), "has no spiece.model"),
        "data-missing": (dict(data_path=root / "none.jsonl"), "data.jsonl is missing"),
        "data-small": (dict(nproc_per_node=16, tp=2, gbs=8), "fewer than MBS x"),
        "no-load": (dict(load=None), "no checkpoint to load"),
        "load-missing": (dict(load=root / "nothing"), "does not exist"),
        "tp-mismatch": (dict(tp=4, nproc_per_node=4, gbs=4), "split for TP 2"),
        "pp-mismatch": ({**_pp(setup), "load": root / "ck1"}, "stages are none (PP 1)"),
        "stages-mismatch": ({**_pp(setup), "pp_layers": [20, 22]},
                            "pipeline stages are 21 21"),
        "variant-mismatch": (dict(variant=V15, frames=37, load=root / "ck2"),
                             "holds a t2v-1.0 model"),
    }


FILE_CASES = ["no-checkout", "not-a-checkout", "vae", "t5-config", "tokenizer",
              "data-missing", "data-small", "no-load", "load-missing", "tp-mismatch",
              "pp-mismatch", "stages-mismatch", "variant-mismatch"]


@pytest.mark.parametrize("case", FILE_CASES)
def test_file_rule_fails(setup, case):
    changes, expected = _files(setup)[case]
    with pytest.raises(CheckError) as err:
        rules.check(_good(setup, **changes))
    assert expected in str(err.value)
    assert err.value.fix


def test_tracker_and_missing_rank(setup, tmp_path):
    ck = standin.make_checkpoint(tmp_path / "ck", tp=2)
    (ck / "latest_checkpointed_iteration.txt").rename(ck / "latest_checkpointed_iterations.txt")
    with pytest.raises(CheckError) as err:
        rules.check(_good(setup, load=ck))
    assert "latest_checkpointed_iteration" in str(err.value)
    ck2 = standin.make_checkpoint(tmp_path / "ck2", tp=2)
    for f in (ck2 / "release" / "mp_rank_01").iterdir():
        f.unlink()
    (ck2 / "release" / "mp_rank_01").rmdir()
    with pytest.raises(CheckError):
        rules.check(_good(setup, load=ck2))


def _infer(setup, **changes):
    root = setup[0]
    base = dict(kind="infer", tp=1, sp=False, nproc_per_node=1, gbs=1, frames=49,
                load=root / "ck1", prompts=root / "prompts.txt", entries=["inference_sora.py"],
                args={}, data_path=None)
    return _good(setup, **{**base, **changes})


def test_inference_plan_passes(setup):
    rules.check(_infer(setup))


@pytest.mark.parametrize("case", ["prompts-missing", "too-many", "lora", "images-missing",
                                  "images-count", "image-absent"])
def test_inference_rule_fails(setup, tmp_path, case):
    root = setup[0]
    many = tmp_path / "many.txt"
    many.write_text("p\n" * 101)
    one = tmp_path / "one.txt"
    one.write_text(f"{root / 'img.png'}\n")
    gone = tmp_path / "gone.txt"
    gone.write_text("nowhere.png\nnowhere.png\n")
    cases = {
        "prompts-missing": (dict(prompts=root / "typo.txt"), "use the path itself"),
        "too-many": (dict(prompts=many), "101 prompts"),
        "lora": (dict(load=root / "lora"), "holds only LoRA weights"),
        "images-missing": (dict(variant=I15, frames=81), "needs --images"),
        "images-count": (dict(variant=I15, frames=81, images=one), "1 images for 2 prompts"),
        "image-absent": (dict(variant=I15, frames=81, images=gone), "does not exist"),
    }
    changes, expected = cases[case]
    facts = _infer(setup, **changes)
    with pytest.raises(CheckError) as err:
        rules.check(facts)
    assert expected in str(err.value)


def test_several_problems_are_reported_together(setup):
    with pytest.raises(UsageError) as err:
        rules.check(_good(setup, frames=18, height=488))
    assert "2 problems" in str(err.value)
