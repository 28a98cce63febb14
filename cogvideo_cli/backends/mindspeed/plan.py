"""Plan a MindSpeed-MM run: resolve settings, render configs, gather the rule facts.

``plan_run`` is the backend's one entry point: settings and workspace in, a
:class:`~cogvideo_cli.launch.plan.LaunchPlan` and the :class:`~cogvideo_cli.core.rules.Facts`
to check out. It reads files (workspace, checkpoint layout) but writes nothing.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvideo_cli.backends.mindspeed import args as margs
from cogvideo_cli.backends.mindspeed.checkout import ENTRIES, locate_checkout
from cogvideo_cli.backends.mindspeed.render import (OPTIONAL_KEYS, InferValues, TrainValues,
                                                    render_extract, render_infer,
                                                    render_train)
from cogvideo_cli.core.config import RunSettings, apply_overrides, parse_overrides
from cogvideo_cli.core.errors import CogvxError, UsageError
from cogvideo_cli.core.rules import Facts, check_values, pp_layers_for
from cogvideo_cli.core.templates import dump_json, load_text
from cogvideo_cli.core.variants import Variant, get_variant
from cogvideo_cli.core.workspace import Workspace
from cogvideo_cli.launch.plan import LaunchPlan, Torchrun

NAME = "mindspeed"
DEFAULT_PORTS = {"train": 29505, "lora": 6000, "infer": 6000, "extract": 29505}
LORA_RANK, LORA_ALPHA = 128, 64.0  # the LoRA defaults of `cogvx lora`
DEFAULT_NPROC = {"train": 8, "lora": 8, "infer": 1, "extract": 1}


@dataclass
class _Paths:
    root: Path | None
    load: Path | None
    save: Path
    vae: Path | None
    t5: Path | None
    tokenizer: Path | None
    data_path: Path | None
    data_folder: Path | None
    features: Path | None


def _path(value: str | Path | None, workspace: Workspace, section: str,
          key: str) -> Path | None:
    if value:
        return Path(value).expanduser().absolute()
    return workspace.path_value(section, key)


def _resolve_paths(s: RunSettings, ws: Workspace, run_dir: Path) -> _Paths:
    features = _path(s.features, ws, "data", "features") if s.features else None
    data_path = _path(s.data_path, ws, "data", "data_path")
    data_folder = _path(s.data_folder, ws, "data", "data_folder")
    if features is not None:
        data_path, data_folder = features / "data.jsonl", features
    elif data_path is not None and data_folder is None:
        data_folder = data_path.parent
    return _Paths(
        root=locate_checkout(s.mindspeed, ws),
        load=_path(s.load, ws, "checkpoint", "path"),
        save=Path(s.save).expanduser().absolute() if s.save else run_dir / "checkpoints",
        vae=_path(s.vae, ws, "weights", "vae"), t5=_path(s.t5, ws, "weights", "t5"),
        tokenizer=_path(s.tokenizer, ws, "weights", "tokenizer"),
        data_path=data_path, data_folder=data_folder, features=features)


def default_run_dir(kind: str, variant: str, ws: Workspace) -> Path:
    """``<workspace>/runs/<kind>-<variant>-<time>``."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ws.root / "runs" / f"{kind}-{variant}-{stamp}"


def _checkpoint_layout(load: Path | None) -> tuple[int | None, list[int]]:
    """(tp, pp_layers) of the checkpoint, or (None, []) when it cannot be read (yet)."""
    if load is None or not load.is_dir():
        return None, []
    try:
        from cogvideo_cli.checkpoint.layout import read_layout

        layout = read_layout(load)
    except (ImportError, CogvxError, OSError, ValueError):
        return None, []
    return layout.tp, list(layout.pp_layers or [])


def _given(value: Any, default: Any) -> Any:
    """The chosen value, or the default when none was chosen; an explicit 0 stays 0."""
    return default if value is None else value


def _torchrun(s: RunSettings) -> Torchrun:
    return Torchrun(nproc_per_node=_given(s.nproc_per_node, DEFAULT_NPROC[s.kind]),
                    nnodes=s.nnodes, node_rank=s.node_rank, master_addr=s.master_addr,
                    master_port=_given(s.master_port, DEFAULT_PORTS[s.kind]),
                    python=s.python or sys.executable)


def _env(kind: str, extra: dict[str, str]) -> dict[str, str]:
    base = margs.INFER_ENV if kind == "infer" else margs.TRAIN_ENV
    return {**base, **margs.STREAM_ENV, **extra}


def _str(path: Path | None) -> str:
    return "" if path is None else str(path)


def plan_run(s: RunSettings, ws: Workspace) -> tuple[LaunchPlan, Facts]:
    """Resolve, render and describe one run of kind train, lora, infer or extract."""
    check_values(s)
    _refuse_diffusers_only(s)
    variant = get_variant(s.variant)
    if s.kind in ("train", "lora"):
        return _plan_train(s, ws, variant)
    if s.kind == "infer":
        return _plan_infer(s, ws, variant)
    if s.kind == "extract":
        return _plan_extract(s, ws, variant)
    raise UsageError(f"unknown run kind {s.kind!r}", fix="use train, lora, infer or extract")


def _refuse_diffusers_only(s: RunSettings) -> None:
    """Options only the diffusers backend has: say what MindSpeed-MM does instead."""
    if s.resume:
        raise UsageError("--resume is for the diffusers backend; MindSpeed-MM continues from "
                         "the newest iteration of the checkpoint it loads", value=s.resume,
                         fix="pass the run's checkpoints folder as --load instead")
    if s.lora_path:
        raise UsageError("--lora is for the diffusers backend; MindSpeed-MM samples from a "
                         "merged checkpoint", value=s.lora_path,
                         fix="merge it with `cogvx merge-lora`, then pass the result to --load")


# --- training -----------------------------------------------------------------------------

@dataclass
class _Layout:
    tp: int
    pp_layers: list[int]
    pp_from_checkpoint: bool
    sp: bool
    encoder_dp: bool
    gbs: int
    dp: int
    notes: list[str]


def _layout(s: RunSettings, variant: Variant, paths: _Paths, world: int) -> _Layout:
    """Parallel sizes and batch: given, else from the checkpoint, else the preset."""
    ck_tp, ck_layers = _checkpoint_layout(paths.load)
    notes = []
    preset_tp = variant.train.tp if s.kind == "train" else 1
    tp = _given(s.tp, ck_tp or preset_tp)
    if s.tp is None and ck_tp:
        notes.append(f"TP {tp} taken from the checkpoint layout")
    pp_layers = pp_layers_for(variant, s.pp, s.pp_layers, ck_layers)
    from_checkpoint = not s.pp_layers and len(pp_layers) > 1 and pp_layers == ck_layers
    if s.pp and s.pp > 1 and from_checkpoint:
        notes.append(f"stage sizes {pp_layers} taken from the checkpoint layout")
    pp = max(1, len(pp_layers))
    sp = (tp > 1 and s.kind == "train") if s.sp is None else s.sp
    encoder_dp = s.encoder_dp
    if encoder_dp is None:
        encoder_dp = (variant.train.enable_encoder_dp and pp == 1 and not s.features
                      and not s.layerzero and s.vae_cp == 1)
    dp = max(1, world // max(1, tp * pp * s.cp))
    grad_acc = _given(s.grad_acc, variant.train.grad_acc if s.kind == "train" else 1)
    gbs = _given(s.gbs, s.mbs * grad_acc * dp)
    return _Layout(tp, pp_layers, from_checkpoint, sp, bool(encoder_dp), gbs, dp, notes)


def _plan_train(s: RunSettings, ws: Workspace, variant: Variant) -> tuple[LaunchPlan, Facts]:
    run_dir = Path(s.run_dir).absolute() if s.run_dir else default_run_dir(
        s.kind, variant.name, ws)
    paths = _resolve_paths(s, ws, run_dir)
    torchrun = _torchrun(s)
    lay = _layout(s, variant, paths, torchrun.world_size)
    docs = _render_train(s, variant, lay, paths, run_dir)
    sized = _effective_variant(variant, docs["model"]["predictor"])
    if sized != variant:
        # --set changed the model's size: derive the stages and layer counts from it
        variant = sized
        lay = _layout(s, variant, paths, torchrun.world_size)
        docs = _render_train(s, variant, lay, paths, run_dir)
    args = docs.pop("args")
    files = {f"{name}.json": dump_json(doc) for name, doc in docs.items()}
    if s.layerzero:
        files["layerzero.yaml"] = _layerzero_yaml(s.zero3_size)
    env = _env(s.kind, s.env)
    plan = LaunchPlan(
        kind=s.kind, backend=NAME, variant=variant.name, root=paths.root or Path.cwd(),
        entry=ENTRIES[s.kind], args=args, env=env, torchrun=torchrun, run_dir=run_dir,
        files=files, settings=_settings_record(s, lay, paths), global_batch=lay.gbs,
        outputs={"checkpoints": str(paths.save), "log": ""}, notes=lay.notes)
    plan.outputs["log"] = str(plan.log_path)
    facts = _train_facts(s, variant, plan, docs, lay, paths)
    return plan, facts


def _render_train(s: RunSettings, variant: Variant, lay: _Layout, paths: _Paths,
                  run_dir: Path) -> dict[str, dict[str, Any]]:
    """The model, data, tools and args documents, with the --set overrides applied."""
    values = TrainValues(
        frames=_given(s.frames, variant.train.frames),
        height=_given(s.height, variant.train.height),
        width=_given(s.width, variant.train.width), text_length=variant.train.text_length,
        mbs=s.mbs, pp_layers=lay.pp_layers, vae_cp=s.vae_cp, encoder_dp=lay.encoder_dp,
        vae=_str(paths.vae), t5=_str(paths.t5), tokenizer=_str(paths.tokenizer),
        data_path=_str(paths.data_path), data_folder=_str(paths.data_folder),
        features=paths.features is not None)
    docs = render_train(variant, values)
    docs["args"] = _train_args(s, variant, lay, paths, run_dir)
    apply_overrides(docs, parse_overrides(s.overrides), "model", OPTIONAL_KEYS)
    return docs


def _train_args(s: RunSettings, variant: Variant, lay: _Layout, paths: _Paths,
                run_dir: Path) -> dict[str, Any]:
    lr = _given(s.lr, variant.train.lr)
    a = margs.TrainArgs(
        variant=variant.name, tp=lay.tp, pp=max(1, len(lay.pp_layers)), cp=s.cp, mbs=s.mbs,
        gbs=lay.gbs, lr=lr, min_lr=_given(s.min_lr, lr),
        iters=_given(s.iters, variant.train.iters), load=_str(paths.load),
        save=str(paths.save), mm_data=str(run_dir / "data.json"),
        mm_model=str(run_dir / "model.json"), mm_tool=str(run_dir / "tools.json"),
        num_layers=variant.num_layers, sp=lay.sp, seed=s.seed,
        save_interval=_given(s.save_interval, 10000),
        layerzero_config=str(run_dir / "layerzero.yaml") if s.layerzero else None,
        lora={"r": _given(s.lora_r, LORA_RANK), "alpha": _given(s.lora_alpha, LORA_ALPHA),
              "dropout": s.lora_dropout, "target_modules": s.lora_target_modules})
    return margs.lora_args(a) if s.kind == "lora" else margs.pretrain_args(a)


def _layerzero_yaml(zero3_size: int | None) -> str:
    text = load_text("layerzero.yaml")
    if zero3_size is not None:
        text = text.replace("zero3_size: 8", f"zero3_size: {zero3_size}", 1)
    return text


# predictor keys that size the model's tensors: the checkpoint check must see their values
SHAPE_KEYS = ("num_layers", "num_heads", "head_dim", "in_channels", "out_channels",
              "time_embed_dim", "text_hidden_size", "ofs_embed_dim", "patch_size")


def _effective_variant(variant: Variant, predictor: dict[str, Any]) -> Variant:
    """The variant with the sizes the rendered config really has (after --set)."""
    changes = {}
    for key in SHAPE_KEYS:
        if key in predictor:
            value = _shape_value(key, predictor[key])
            if value != getattr(variant, key):
                changes[key] = value
    return dataclasses.replace(variant, **changes) if changes else variant


def _shape_value(key: str, value: Any) -> Any:
    """A size from the config: a positive integer, three for patch_size; else a usage error."""
    if key == "ofs_embed_dim" and value is None:
        return None  # t2v models have no ofs embedding
    if key == "patch_size":
        if isinstance(value, list) and len(value) == 3 and all(map(_positive_int, value)):
            return tuple(value)
        what = "a list of three positive integers"
    elif _positive_int(value):
        return value
    else:
        what = "a positive integer"
    raise UsageError(f"predictor.{key} {value!r} is not {what}", value=value,
                     fix=f"--set predictor.{key}=... with {what}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _dtypes(docs: dict[str, dict]) -> dict[str, Any]:
    found = {}
    for name, doc in docs.items():
        for section, table in doc.items():
            if isinstance(table, dict) and "dtype" in table:
                found[f"{name}.{section}.dtype"] = table["dtype"]
        if "dtype" in doc:
            found[f"{name}.dtype"] = doc["dtype"]
    return found


def _train_facts(s: RunSettings, variant: Variant, plan: LaunchPlan, docs: dict,
                 lay: _Layout, paths: _Paths) -> Facts:
    model, data = docs["model"], docs["data"]
    predictor = model["predictor"]
    pre = data["dataset_param"]["preprocess_parameters"]
    return Facts(
        kind=s.kind, variant=_effective_variant(variant, predictor),
        nproc_per_node=plan.torchrun.nproc_per_node, nnodes=s.nnodes,
        node_rank=s.node_rank, master_addr=s.master_addr, single_host=s.single_host,
        tp=plan.args.get("tensor-model-parallel-size", lay.tp),
        pp_layers=list(predictor.get("pipeline_num_layers") or lay.pp_layers),
        pp_from_checkpoint=(lay.pp_from_checkpoint and predictor.get("pipeline_num_layers")
                            == lay.pp_layers),
        cp=plan.args.get("context-parallel-size", s.cp), sp=bool(plan.args.get(
            "sequence-parallel")), sp_requested=bool(s.sp), vae_cp=model["ae"]["cp_size"],
        encoder_dp=bool(model.get("enable_encoder_dp")), layerzero=s.layerzero,
        zero3_size=s.zero3_size, mbs=plan.args.get("micro-batch-size", s.mbs),
        gbs=plan.args.get("global-batch-size", lay.gbs), frames=pre["num_frames"],
        height=pre["max_height"], width=pre["max_width"],
        text_length=predictor["text_length"],
        model_max_length=data["dataset_param"]["tokenizer_config"]["model_max_length"],
        input_size=predictor.get("input_size"),
        data_batch_size=data["dataloader_param"].get("batch_size"), args=plan.args,
        dtypes=_dtypes({"model": model}), features=paths.features, load=paths.load,
        data_path=paths.data_path, vae=paths.vae, t5=paths.t5, tokenizer=paths.tokenizer,
        root=paths.root, entries=[ENTRIES[s.kind]], env=plan.env,
        lr=_float(plan.args.get("lr")), min_lr=_float(plan.args.get("min-lr")))


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _settings_record(s: RunSettings, lay: _Layout, paths: _Paths) -> dict[str, Any]:
    record = s.to_dict()
    record.update(lora_r=_given(s.lora_r, LORA_RANK),
                  lora_alpha=_given(s.lora_alpha, LORA_ALPHA))
    record.update({"tp": lay.tp, "pp_layers": lay.pp_layers, "sp": lay.sp,
                   "encoder_dp": lay.encoder_dp, "gbs": lay.gbs, "dp": lay.dp})
    record["resolved_paths"] = {k: _str(v) for k, v in vars(paths).items()}
    return record


# --- inference ----------------------------------------------------------------------------

def _plan_infer(s: RunSettings, ws: Workspace, variant: Variant) -> tuple[LaunchPlan, Facts]:
    preset = variant.infer
    run_dir = Path(s.run_dir).absolute() if s.run_dir else default_run_dir(
        "infer", variant.name, ws)
    paths = _resolve_paths(s, ws, run_dir)
    torchrun = _torchrun(s)
    out = Path(s.out).expanduser().absolute() if s.out else run_dir / "samples"
    prompts = Path(s.prompts).expanduser().absolute() if s.prompts else None
    images = Path(s.images).expanduser().absolute() if s.images else None
    values = InferValues(
        frames=_given(s.frames, preset.frames), height=_given(s.height, preset.height),
        width=_given(s.width, preset.width), steps=_given(s.steps, preset.steps),
        guidance=_given(s.guidance, preset.guidance), fps=_given(s.fps, preset.fps),
        vae=_str(paths.vae), t5=_str(paths.t5),
        tokenizer=_str(paths.tokenizer or paths.t5), prompts=str(run_dir / "prompts.txt"),
        images=str(run_dir / "images.txt") if variant.is_i2v else None,
        save_path=str(out) + "/")
    docs = render_infer(variant, values)
    docs["args"] = margs.infer_args(world=torchrun.world_size, load=_str(paths.load),
                                    mm_model=str(run_dir / "inference.json"),
                                    seed=_given(s.seed, preset.seed))
    apply_overrides(docs, parse_overrides(s.overrides), "inference", OPTIONAL_KEYS)
    args = docs.pop("args")
    files = {"inference.json": dump_json(docs["inference"])}
    files.update(_input_lists(prompts, images))
    plan = LaunchPlan(
        kind="infer", backend=NAME, variant=variant.name, root=paths.root or Path.cwd(),
        entry=ENTRIES["infer"], args=args, env=_env("infer", s.env), torchrun=torchrun,
        run_dir=run_dir, files=files, settings=s.to_dict(),
        outputs={"samples": str(out)}, global_batch=torchrun.world_size)
    plan.outputs["log"] = str(plan.log_path)
    return plan, _infer_facts(s, variant, plan, docs["inference"], paths, prompts, images)


def _input_lists(prompts: Path | None, images: Path | None) -> dict[str, str]:
    """Copies of the prompt and image lists, image paths made absolute."""
    files = {}
    if prompts is not None and prompts.is_file():
        files["prompts.txt"] = prompts.read_text(encoding="utf-8")
    if images is not None and images.is_file():
        if images.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff"):
            lines = [str(images)]
        else:
            lines = [str(Path(line.strip()).expanduser().absolute())
                     for line in images.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
        files["images.txt"] = "\n".join(lines) + "\n"
    return files


def _infer_facts(s: RunSettings, variant: Variant, plan: LaunchPlan, doc: dict,
                 paths: _Paths, prompts: Path | None, images: Path | None) -> Facts:
    predictor = doc["predictor"]
    frames, height, width = doc["pipeline_config"]["input_size"]
    return Facts(
        kind="infer", variant=_effective_variant(variant, predictor),
        nproc_per_node=plan.torchrun.nproc_per_node, nnodes=s.nnodes,
        node_rank=s.node_rank, master_addr=s.master_addr, single_host=s.single_host,
        tp=1, cp=1, mbs=1, gbs=plan.torchrun.world_size, frames=frames, height=height,
        width=width, text_length=predictor["text_length"],
        model_max_length=doc["tokenizer"]["model_max_length"], args=plan.args,
        dtypes=_dtypes({"inference": doc}), load=paths.load, vae=paths.vae, t5=paths.t5,
        tokenizer=paths.tokenizer or paths.t5, root=paths.root, entries=[ENTRIES["infer"]],
        prompts=prompts, images=images, env=plan.env)


# --- feature extraction ------------------------------------------------------------------

def _plan_extract(s: RunSettings, ws: Workspace,
                  variant: Variant) -> tuple[LaunchPlan, Facts]:
    run_dir = Path(s.run_dir).absolute() if s.run_dir else default_run_dir(
        "extract", variant.name, ws)
    paths = _resolve_paths(s, ws, run_dir)
    out = Path(s.out).expanduser().absolute() if s.out else ws.root / "features"
    torchrun = _torchrun(s)
    docs = render_extract(variant.task, vae=_str(paths.vae), t5=_str(paths.t5),
                          tokenizer=_str(paths.tokenizer), data_path=_str(paths.data_path),
                          data_folder=_str(paths.data_folder), save_path=str(out))
    pre = docs["data"]["dataset_param"]["preprocess_parameters"]
    frames = _given(s.frames, variant.train.frames if variant.version == "1.5" else None)
    if frames is not None:
        # the 25-frame default gives 7 latents: odd, unusable for 1.5 training
        pre["num_frames"] = docs["model"]["frames"] = frames
    docs["args"] = margs.extract_args(world=torchrun.world_size, mbs=s.mbs,
                                      mm_data=str(run_dir / "data.json"),
                                      mm_model=str(run_dir / "model.json"),
                                      mm_tool=str(run_dir / "tools.json"))
    apply_overrides(docs, parse_overrides(s.overrides), "model", OPTIONAL_KEYS)
    args = docs.pop("args")
    plan = LaunchPlan(
        kind="extract", backend=NAME, variant=variant.name, root=paths.root or Path.cwd(),
        entry=ENTRIES["extract"], args=args, env=_env("extract", s.env), torchrun=torchrun,
        run_dir=run_dir, files={f"{k}.json": dump_json(v) for k, v in docs.items()},
        settings=s.to_dict(), outputs={"features": str(out)},
        global_batch=torchrun.world_size * s.mbs)
    plan.outputs["log"] = str(plan.log_path)
    facts = Facts(
        kind="extract", variant=variant, nproc_per_node=torchrun.nproc_per_node,
        nnodes=s.nnodes, node_rank=s.node_rank, master_addr=s.master_addr,
        single_host=s.single_host, mbs=s.mbs, gbs=torchrun.world_size * s.mbs,
        frames=pre["num_frames"], height=pre["max_height"], width=pre["max_width"],
        dtypes=_dtypes({"model": docs["model"]}), data_path=paths.data_path, vae=paths.vae,
        t5=paths.t5, tokenizer=paths.tokenizer, root=paths.root,
        entries=[ENTRIES["extract"]], env=plan.env, load=None)
    return plan, facts
