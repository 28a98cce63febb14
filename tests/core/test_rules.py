"""Every pre-launch rule fails on a small wrong input, with the value and a fix."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from cogvideo_cli.core import rules
from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.errors import CheckError, UsageError, plural
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
        "images-count": (dict(variant=I15, frames=81, images=one), "1 image for 2 prompts"),
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


# --- chosen values and root causes ---------------------------------------------------------

VALUE_CASES = {
    "tp-zero": (dict(tp=0), "--tp 0 is not positive"),
    "gbs-zero": (dict(gbs=0), "--gbs 0 is not positive"),
    "grad-acc-zero": (dict(grad_acc=0), "--grad-acc 0 is not positive"),
    "frames-zero": (dict(frames=0), "--frames 0 is not positive"),
    "nproc-zero": (dict(nproc_per_node=0), "--nproc-per-node 0 is not positive"),
    "iters-negative": (dict(iters=-5), "--iters -5 is not positive"),
    "save-interval": (dict(save_interval=-1), "--save-interval -1 is not positive"),
    "steps-zero": (dict(kind="infer", steps=0), "--steps 0 is not positive"),
    "fps-zero": (dict(kind="infer", fps=0), "--fps 0 is not positive"),
    "lora-r": (dict(kind="lora", lora_r=0), "--lora-r 0 is not positive"),
    "seed": (dict(seed=-3), "--seed -3 is outside 0.."),
    "node-rank": (dict(node_rank=-1), "--node-rank -1 is negative"),
    "port-high": (dict(master_port=99999), "--master-port 99999 is not a TCP port"),
    "port-zero": (dict(master_port=0), "--master-port 0 is not a TCP port"),
    "lr-nan": (dict(lr=float("nan")), "--lr nan is not a positive number"),
    "lr-negative": (dict(lr=-1.0), "--lr -1.0 is not a positive number"),
    "lr-inf": (dict(lr=float("inf")), "--lr inf is not a positive number"),
    "min-lr-nan": (dict(min_lr=float("nan")), "--min-lr nan is not a number of 0 or more"),
    "min-lr-above": (dict(lr=1e-5, min_lr=1e-3), "--min-lr 0.001 exceeds --lr 1e-05"),
    "alpha": (dict(kind="lora", lora_alpha=-1.0), "--lora-alpha -1.0 is not a positive"),
    "dropout-high": (dict(kind="lora", lora_dropout=2.0), "--lora-dropout 2.0 is not a prob"),
    "dropout-one": (dict(kind="lora", lora_dropout=1.0), "--lora-dropout 1.0 is not a prob"),
    "guidance": (dict(kind="infer", guidance=-1.0), "--guidance -1.0 is not a number"),
    "guidance-nan": (dict(kind="infer", guidance=float("nan")), "--guidance nan is not"),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_value_rule_refuses_the_option_by_name(case):
    changes, expected = VALUE_CASES[case]
    with pytest.raises(UsageError) as err:
        rules.check_values(RunSettings(**changes))
    assert expected in str(err.value)
    assert err.value.fix and err.value.exit_code == 2


def test_good_values_pass():
    rules.check_values(RunSettings(kind="lora", tp=1, lr=1e-4, min_lr=0.0, seed=0,
                                   master_port=65535, lora_dropout=0.5, guidance=0.0))


def _only(setup, **changes) -> str:
    """The message of the one usage problem a plan has; fails when there are several."""
    with pytest.raises(UsageError) as err:
        rules.check(_good(setup, **changes))
    text = str(err.value)
    assert "problems before launch" not in text, text
    return text


def test_zero_mbs_is_a_usage_problem_not_a_crash(setup):
    assert "--mbs 0 is not positive" in _only(setup, mbs=0)
    extract = dict(kind="extract", mbs=0, gbs=0, tp=1, sp=False, load=None)
    assert "--mbs 0 is not positive" in _only(setup, **extract)


def test_a_negative_tp_is_reported_once(setup):
    text = _only(setup, tp=-1)
    assert "--tp -1 is not positive" in text and "multiple of -" not in text


def test_zero_nodes_say_nothing_about_node_ranks(setup):
    text = _only(setup, nnodes=0)
    assert "--nnodes 0 is not positive" in text and "0..-1" not in text


def test_a_negative_height_stops_the_derived_checks(setup):
    text = _only(setup, height=-16)
    assert "--height -16 is not positive" in text
    assert "multiple of 16, e.g. --height 480" in text and "tokens" not in text


def test_a_bad_height_is_reported_without_the_sequence_split(setup):
    text = _only(setup, height=479)
    assert "height 479 is not a multiple of 16" in text and "CP x TP" not in text


def test_an_odd_sequence_gets_a_fix_other_than_split_by_1(setup):
    text = _only(setup, text_length=225, model_max_length=225)
    assert "not divisible by CP x TP = 2" in text
    assert "among 1" not in text and "--cp 1 and --no-sp" in text


def test_counts_are_worded_in_the_right_number(setup):
    text = _only(setup, nproc_per_node=1, gbs=1)
    assert "process count 1 (1 per node x 1 node)" in text


def test_stages_from_the_checkpoint_name_the_checkpoint_not_a_flag(setup):
    root = setup[0]
    text = _only(setup, tp=1, sp=False, nproc_per_node=2, gbs=2, pp_layers=[2, 2],
                 pp_from_checkpoint=True, load=root / "ck4", input_size=[5, 60, 90],
                 data_batch_size=1, args=_pp(setup)["args"])
    assert "checkpoint" in text and "has 4 layers" in text and "--pp-layers" not in text
    assert "--set predictor.num_layers=4" in text
    given = _only(setup, **{**_pp(setup), "pp_layers": [2, 2]})
    assert "--pp-layers 2 2 sums to 4, but the model has 42 layers" in given


def test_inference_fix_names_a_command_inference_has(setup):
    root = setup[0]
    for load in (root / "ck2", root / "ckpp"):
        with pytest.raises(CheckError) as err:
            rules.check(_infer(setup, load=load))
        fix = err.value.fix
        assert f"cogvx convert resplit --source {load} --target {load}-tp1 --tp 1" in fix
        assert "--pp-layers" not in fix and "pass --tp" not in fix


def test_an_empty_prompts_file_is_not_told_to_split(setup, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CheckError) as err:
        rules.check(_infer(setup, prompts=empty))
    assert "holds no prompts" in str(err.value) and "split" not in err.value.fix


def test_plural():
    assert plural(1, "process") == "1 process" and plural(2, "process") == "2 processes"
    assert plural(0, "prompt") == "0 prompts" and plural(1, "line") == "1 line"
