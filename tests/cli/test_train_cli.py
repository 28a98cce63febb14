"""train / lora / infer through the CLI: dry-run goldens, PP rendering, failures, --help."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from cogvideo_cli import __version__

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
import standin  # noqa: E402
from standin import Tree  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("COGVX_UPDATE_GOLDEN") == "1"


def _normal(text: str, tmp: Path) -> str:
    text = text.replace(" \\\n    ", " ")  # launch.sh line breaks depend on path lengths
    text = text.replace(str(tmp), "<TMP>").replace(sys.executable, "<PYTHON>")
    return text.replace(f"cogvx {__version__}", "cogvx <VERSION>")


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}; run with COGVX_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name in ("t2v-1.0", "i2v-1.0", "t2v-1.5", "i2v-1.5"):
        out[name] = Tree(root / name, tp=4, variant=name)
        standin.make_checkpoint(root / name / "ck1", variant=name, tp=1)
    (root / "prompts.txt").write_text("a cat on the moon\n")
    (root / "image.png").write_bytes(b"png")
    return root, out


@pytest.mark.parametrize("name", ["t2v-1.0", "i2v-1.0", "t2v-1.5", "i2v-1.5"])
def test_train_dry_run_golden(cli, trees, name):
    root, all_trees = trees
    tree = all_trees[name]
    result = cli("train", *tree.train_options(), "--run-dir", root / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert not (root / "run").exists()
    _golden(f"train-{name}.txt", _normal(result.stdout, root))


def test_lora_dry_run_golden(cli, trees):
    root, all_trees = trees
    tree = all_trees["i2v-1.5"]
    opts = [o if o != str(tree.ckpt) else str(tree.root / "ck1") for o in tree.train_options()]
    result = cli("lora", *opts, "--run-dir", root / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--lora-target-modules proj_qkv proj_out" in result.stdout
    _golden("lora-i2v-1.5.txt", _normal(result.stdout, root))


@pytest.mark.parametrize("name", ["t2v-1.0", "i2v-1.5"])
def test_infer_dry_run_golden(cli, trees, name):
    root, all_trees = trees
    tree = all_trees[name]
    opts = [o if o != str(tree.ckpt) else str(tree.root / "ck1") for o in tree.options()]
    extra = ["--images", root / "image.png"] if name.startswith("i2v") else []
    result = cli("infer", *opts, "--prompts", root / "prompts.txt", *extra,
                 "--run-dir", root / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    _golden(f"infer-{name}.txt", _normal(result.stdout, root))


def test_pipeline_parallel_renders_a_consistent_setup(cli, tmp_path):
    tree = Tree(tmp_path / "pp", variant="t2v-1.5")
    standin.make_checkpoint(tmp_path / "ckpp", variant="t2v-1.5", tp=2, pp_layers=[22, 20])
    opts = [o if o != str(tree.ckpt) else str(tmp_path / "ckpp") for o in tree.train_options()]
    result = cli("--json", "train", *opts, "--tp", "2", "--pp", "2", "--cp", "2",
                 "--nproc-per-node", "8", "--dry-run")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    model = json.loads(info["configs"]["model.json"])
    data = json.loads(info["configs"]["data.json"])
    assert model["predictor"]["pipeline_num_layers"] == [22, 20]  # from the checkpoint
    assert model["predictor"]["input_size"] == [10, 60, 90]
    assert model["enable_encoder_dp"] is False  # derived: Encoder-DP asserts with PP
    assert data["dataloader_param"]["batch_size"] == 1
    argv = info["argv"]
    assert argv[argv.index("--pipeline-model-parallel-size") + 1] == "2"
    assert "--use-multiparameter-pipeline-model-parallel" in argv
    assert argv[argv.index("--optimization-level") + 1] == "2"
    assert argv[argv.index("--global-batch-size") + 1] == "4"  # MBS 1 x 4 x DP 1


def test_set_changes_the_config_and_is_checked(cli, trees):
    root, all_trees = trees
    tree = all_trees["t2v-1.0"]
    result = cli("--json", "train", *tree.train_options(), "--set", "args.log-interval=10",
                 "--set", "dataset_param.preprocess_parameters.train_fps=16", "--dry-run")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["argv"][info["argv"].index("--log-interval") + 1] == "10"
    assert '"train_fps": 16' in info["configs"]["data.json"]
    bad = cli("train", *tree.train_options(), "--set", "predictor.text_lenght=224",
              "--dry-run")
    assert bad.exit_code == 2 and "predictor.text_length" in bad.output
    mismatch = cli("train", *tree.train_options(), "--set", "predictor.text_length=224",
                   "--dry-run")
    assert mismatch.exit_code == 2 and "model_max_length 226" in mismatch.output


def test_a_failed_check_writes_nothing(cli, trees):
    root, all_trees = trees
    tree = all_trees["t2v-1.5"]
    run = root / "never"
    result = cli("train", *tree.train_options(), "--frames", "33", "--run-dir", run)
    assert result.exit_code == 2
    assert "33 frames give 9 latent frames" in result.output and "use 29 or 37" in result.output
    assert not run.exists()
    missing = cli("train", *tree.train_options(), "--mindspeed-mm", root / "nope",
                  "--run-dir", run)
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert not run.exists()


def test_multi_node_needs_a_reachable_master(cli, trees):
    root, all_trees = trees
    tree = all_trees["t2v-1.0"]
    result = cli("train", *tree.train_options(), "--nnodes", "2", "--dry-run")
    assert result.exit_code == 2 and "loopback" in result.output
    ok = cli("train", *tree.train_options(), "--nnodes", "2", "--master-addr", "10.0.0.1",
             "--dry-run")
    assert ok.exit_code == 0, ok.output
    assert "node 1 runs: NODE_RANK=1 bash" in ok.stdout
