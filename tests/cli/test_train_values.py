"""Option values of train / lora / infer / extract-features: bounds, zeros, --set sizes."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from cogvideo_cli.core.config import RunSettings
from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.core.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
import standin  # noqa: E402
from standin import Tree  # noqa: E402

OUT_OF_RANGE = [
    ("train", "--mbs", "0"), ("train", "--tp", "0"), ("train", "--tp", "-1"),
    ("train", "--pp", "0"), ("train", "--cp", "0"), ("train", "--gbs", "0"),
    ("train", "--grad-acc", "0"), ("train", "--iters", "-5"), ("train", "--frames", "0"),
    ("train", "--height", "-16"), ("train", "--width", "8"),
    ("train", "--nproc-per-node", "0"), ("train", "--nnodes", "0"),
    ("train", "--node-rank", "-1"), ("train", "--lr", "-1"), ("train", "--min-lr", "-1"),
    ("train", "--save-interval", "-1"), ("train", "--seed", "-3"),
    ("train", "--master-port", "99999"), ("train", "--master-port", "0"),
    ("lora", "--lora-r", "0"), ("lora", "--lora-alpha", "-1"), ("lora", "--lora-dropout", "2"),
    ("lora", "--lora-dropout", "1"), ("lora", "--lora-dropout", "nan"),
    ("infer", "--steps", "0"), ("infer", "--fps", "0"), ("infer", "--guidance", "-1"),
    ("extract-features", "--mbs", "0"), ("extract-features", "--frames", "0"),
]


@pytest.mark.parametrize("command,option,value", OUT_OF_RANGE)
def test_out_of_range_options_exit_2_naming_the_option(cli, command, option, value):
    result = cli(command, option, value, "--dry-run")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output


NOT_FINITE = [
    ("train", "--lr", "nan", "--lr nan is not a positive number"),
    ("train", "--lr", "0", "--lr 0.0 is not a positive number"),
    ("train", "--min-lr", "inf", "--min-lr inf is not a number of 0 or more"),
    ("lora", "--lora-alpha", "0", "--lora-alpha 0.0 is not a positive number"),
    ("infer", "--guidance", "nan", "--guidance nan is not a number of 0 or more"),
]


@pytest.mark.parametrize("backend", ["mindspeed", "diffusers"])
@pytest.mark.parametrize("command,option,value,expected", NOT_FINITE)
def test_values_typer_cannot_bound_are_refused_before_planning(cli, backend, command, option,
                                                               value, expected):
    result = cli(command, "--variant", "t2v-1.0", "--backend", backend, option, value,
                 "--dry-run")
    assert result.exit_code == 2, result.output
    assert expected in result.output


def _plan(ws: Path, **values):
    from cogvideo_cli.backends import get_backend

    settings = RunSettings(**{"backend": "mindspeed", **values})
    return get_backend(settings.backend).plan_run(settings, Workspace.load(ws))


@pytest.mark.parametrize("values,expected", [
    (dict(tp=0), "--tp 0"), (dict(gbs=0), "--gbs 0"), (dict(grad_acc=0), "--grad-acc 0"),
    (dict(frames=0), "--frames 0"), (dict(nproc_per_node=0), "--nproc-per-node 0"),
    (dict(kind="infer", steps=0), "--steps 0"), (dict(kind="infer", fps=0), "--fps 0"),
    (dict(kind="extract", mbs=0), "--mbs 0"),
    (dict(backend="diffusers", nproc_per_node=0), "--nproc-per-node 0"),
])
def test_explicit_zeros_are_never_replaced_by_defaults(tmp_path, values, expected):
    with pytest.raises(UsageError) as err:
        _plan(tmp_path, **values)
    assert f"{expected} is not positive" in str(err.value)


def test_pp_balances_the_layers_of_the_model_after_set(tmp_path):
    plan, facts = _plan(tmp_path, overrides=["predictor.num_layers=4"], pp=3, tp=1,
                        nproc_per_node=3)
    model = json.loads(plan.files["model.json"])
    assert model["predictor"]["pipeline_num_layers"] == [1, 2, 1]
    assert facts.pp_layers == [1, 2, 1] and facts.variant.num_layers == 4
    assert plan.args["recompute-num-layers"] == 4


@pytest.mark.parametrize("key,value,field", [
    ("time_embed_dim", "16", 16), ("in_channels", "32", 32), ("out_channels", "8", 8),
    ("text_hidden_size", "64", 64), ("ofs_embed_dim", "16", 16),
    ("patch_size", "[2,2,2]", (2, 2, 2)),
])
def test_every_shape_set_reaches_the_checkpoint_check(tmp_path, key, value, field):
    _, facts = _plan(tmp_path, overrides=[f"predictor.{key}={value}"], tp=1)
    assert getattr(facts.variant, key) == field


def test_a_size_that_is_not_a_positive_integer_is_refused(tmp_path):
    with pytest.raises(UsageError) as err:
        _plan(tmp_path, overrides=["predictor.time_embed_dim=0"])
    assert "predictor.time_embed_dim 0 is not a positive integer" in str(err.value)


def _checkpoint(root: Path, **sizes) -> Path:
    """A TP 1 MM checkpoint of t2v-1.0 with any Variant sizes changed."""
    import torch

    from cogvideo_cli.checkpoint.mapping import expected_shapes

    model = dataclasses.replace(get_variant("t2v-1.0"), **sizes)
    state = {name: torch.zeros(1).expand(shape)
             for name, shape in expected_shapes(model).items()
             if name != "patch_embed.proj.bias" and not name.startswith("pos_embed.freqs")}
    (root / "release" / "mp_rank_00").mkdir(parents=True)
    torch.save({"model": state}, root / "release" / "mp_rank_00" / "model_optim_rng.pt")
    (root / "latest_checkpointed_iteration.txt").write_text("release")
    return root


def _train_options(tree: Tree, load: Path) -> list[str]:
    return [o if o != str(tree.ckpt) else str(load) for o in tree.train_options()]


def test_set_time_embed_dim_matches_a_checkpoint_of_that_size(cli, tmp_path):
    tree = Tree(tmp_path / "tree")
    small = _checkpoint(tmp_path / "te16", time_embed_dim=16)
    opts = _train_options(tree, small)
    result = cli("train", *opts, "--tp", "1", "--set", "predictor.time_embed_dim=16",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    unset = cli("train", *opts, "--tp", "1", "--dry-run")
    assert unset.exit_code == 1 and "the model expects [512, " in unset.output


def test_checkpoint_stages_of_another_size_suggest_set(cli, tmp_path):
    tree = Tree(tmp_path / "tree")
    four = standin.make_checkpoint(tmp_path / "ck4", tp=1, pp_layers=[2, 2],
                                   sizes={"num_layers": 4})
    opts = _train_options(tree, four)
    result = cli("train", *opts, "--tp", "1", "--nproc-per-node", "2", "--dry-run")
    assert result.exit_code == 2
    assert "has 4 layers" in result.output and "--pp-layers" not in result.output
    assert "--set predictor.num_layers=4" in result.output
    fixed = cli("train", *opts, "--tp", "1", "--nproc-per-node", "2",
                "--set", "predictor.num_layers=4", "--dry-run")
    assert fixed.exit_code == 0, fixed.output


def test_infer_of_a_tp2_checkpoint_suggests_resplit(cli, tmp_path):
    tree = Tree(tmp_path / "tree", tp=2)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    result = cli("infer", *tree.options(), "--prompts", prompts, "--dry-run")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"cogvx convert resplit --source {tree.ckpt} --target {tree.ckpt}-tp1 --tp 1" in text
    assert "pass --tp" not in text


def test_lora_dropout_help_and_range_agree(cli):
    result = cli("lora", "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "0 <= p < 1" in result.stdout and "0.0<=x<=1.0" not in result.stdout
