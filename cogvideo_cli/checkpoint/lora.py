"""Merge a LoRA into its base checkpoint, shard by shard: ``W += scale * alpha / r * B @ A``.

Two pairs are supported:

* a MindSpeed-MM (MM) LoRA run (``*.lora_A.default.weight`` / ``*.lora_B.default.weight``
  on ``proj_qkv`` and ``proj_out``, saved in Megatron folders of any TP/PP layout) into an
  MM base checkpoint of any TP/PP layout;
* a diffusers / PEFT LoRA (``pytorch_lora_weights.safetensors``) into a diffusers
  transformer folder.

The LoRA factors are small, so they are read whole (TP parts merged, replicated parts
checked to be identical); the base is never assembled: each base rank file (or shard) is
read, its targeted weights merged with that rank's part of the factors, and written.
For a Megatron layer split over TP ranks, with ``W_t`` rank t's part::

    column-parallel / fused QKV (proj_qkv):  W_t += s * B_t @ A    (B cut like W, A whole)
    row-parallel (proj_out):                 W_t += s * B @ A_t    (A cut along its input)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cogvideo_cli.checkpoint import sharding
from cogvideo_cli.checkpoint.mapping import TPKind, spec_of
from cogvideo_cli.core.errors import CheckpointError, NotSupportedError, UsageError
from cogvideo_cli.core.fsutil import atomic_dir, check_target, write_text_atomic
from cogvideo_cli.core.progress import SILENT, Reporter

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HF_LORA_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
COGVX_LORA_RECORD = "lora.json"  # written beside the weights by cogvx's diffusers LoRA runs
MERGE_RECORD = "merge.json"
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_PREFIXES = ("base_model.model.", "transformer.", "predictor.", "module.")


# --- the math ----------------------------------------------------------------------------

def merged_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """``weight + scale * b @ a`` computed in float32, cast back to ``weight``'s dtype.

    Shapes: weight ``[out, in]``, b ``[out, r]``, a ``[r, in]``.
    """
    import torch

    delta = b.to(torch.float32) @ a.to(torch.float32)
    return (weight.to(torch.float32) + scale * delta).to(weight.dtype)


def factor_kinds(kind: TPKind) -> tuple[TPKind, TPKind]:
    """How A and B split over TP ranks when the base weight splits as ``kind``."""
    if kind in (TPKind.COLUMN, TPKind.QKV):
        return TPKind.REPLICATED, kind
    if kind is TPKind.ROW:
        return TPKind.ROW, TPKind.REPLICATED
    return TPKind.REPLICATED, TPKind.REPLICATED


@dataclass
class Scaling:
    """Rank, alpha and the user's extra scale, with where rank and alpha came from."""

    rank: int
    alpha: float
    scale: float = 1.0
    origin: str = "flags"

    @property
    def effective(self) -> float:
        return self.scale * self.alpha / self.rank


@dataclass
class Stats:
    """Per-module sums that give how much merging changed each weight."""

    delta_sq: dict[str, float] = field(default_factory=dict)
    weight_sq: dict[str, float] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def add(self, module: str, before: torch.Tensor, after: torch.Tensor) -> None:
        """Count one part of ``module``'s weight (every part exactly once)."""
        import torch

        old = before.to(torch.float32)
        diff = after.to(torch.float32) - old
        self.delta_sq[module] = self.delta_sq.get(module, 0.0) + float((diff * diff).sum())
        self.weight_sq[module] = self.weight_sq.get(module, 0.0) + float((old * old).sum())
        if not torch.equal(before, after):
            self.changed.add(module)

    def largest(self) -> tuple[str | None, float]:
        """(module, ||dW|| / ||W||) of the largest relative change."""
        best, value = None, 0.0
        for module, dsq in self.delta_sq.items():
            rel = math.sqrt(dsq) / max(math.sqrt(self.weight_sq[module]), 1e-30)
            if best is None or rel > value:
                best, value = module, rel
        return best, value


# --- LoRA names and factors --------------------------------------------------------------

def split_key(key: str) -> tuple[str, str] | None:
    """``X.lora_A.default.weight`` -> (``X``, ``A``); None for a key that is not LoRA.

    LoRA keys cogvx cannot merge (biases, DoRA magnitudes, kohya ``lora_up``) are refused.
    """
    match = _FACTOR.match(key)
    if match:
        module = match.group("module")
        for prefix in _PREFIXES:
            module = module.removeprefix(prefix)
        return module, match.group("factor")
    if "lora" in key.lower():
        raise NotSupportedError(
            f"the LoRA holds {key}, a kind of LoRA tensor cogvx cannot merge (only plain "
            "lora_A / lora_B weights: no LoRA biases, DoRA or kohya-style keys)", value=key,
            fix="merge it with the tool that trained it")
    return None


@dataclass
class LoraSet:
    """The whole A and B factors of every LoRA module, keyed by the base module name."""

    path: Path
    format: str
    factors: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # module -> a LoRA key, for messages
    layout: str = ""

    def tensor_rank(self) -> int:
        """The rank every module shares; mismatched factors are refused."""
        ranks = {}
        for module, (a, b) in self.factors.items():
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise CheckpointError(
                    f"the LoRA factors of {module} do not fit: lora_A is {list(a.shape)}, "
                    f"lora_B is {list(b.shape)} (A must be [r, in] and B [out, r])",
                    value=module, fix="the LoRA checkpoint is damaged or mixed; use another")
            ranks.setdefault(int(a.shape[0]), module)
        if len(ranks) > 1:
            shown = ", ".join(f"rank {r} ({m})" for r, m in sorted(ranks.items()))
            raise CheckpointError(f"the LoRA modules have different ranks: {shown}",
                                  value=sorted(ranks),
                                  fix="cogvx merges one rank for every module; merge it with "
                                      "the tool that trained it")
        return next(iter(ranks))


def _pair(found: dict[str, dict[str, Any]], keys: dict[str, str], path: Path) -> dict:
    """(A, B) per module; a module with one factor is refused."""
    pairs = {}
    for module, parts in found.items():
        if set(parts) != {"A", "B"}:
            have = next(iter(parts))
            missing = "B" if have == "A" else "A"
            raise CheckpointError(
                f"{path}: {keys[module]} has no lora_{missing} partner, so {module} cannot "
                "be merged", value=keys[module],
                fix="the LoRA checkpoint is incomplete; save or copy it again")
        pairs[module] = (parts["A"], parts["B"])
    if not pairs:
        raise CheckpointError(f"{path} holds no LoRA factors (no *.lora_A / *.lora_B weights)",
                              fix="pass the save folder of a LoRA run as --lora")
    return pairs


# --- reading an MM LoRA ------------------------------------------------------------------

def _mm_parts(source) -> tuple[dict, dict, list[str]]:
    """{(module, factor): {tp rank: (tensor, file)}}, a key per module, non-LoRA keys."""
    layout = source.layout
    parts: dict[tuple[str, str], dict[int, tuple[Any, str]]] = {}
    keys: dict[str, str] = {}
    other: list[str] = []
    for pp_rank, tp_rank, rel in layout.rank_files():
        for key, value in source.models[(pp_rank, tp_rank)].items():
            if key.endswith("._extra_state") or not hasattr(value, "shape"):
                continue
            split = split_key(key)
            if split is None:
                other.append(key)
                continue
            module = sharding.globalize(split[0], pp_rank, layout.pp_layers)
            keys.setdefault(module, key)
            parts.setdefault((module, split[1]), {})[tp_rank] = (value, rel)
    return parts, keys, other


def _join(module: str, factor: str, ranks: dict[int, tuple[Any, str]], kind: TPKind,
          tp: int, path: Path):
    """The whole factor from its TP parts; replicated parts must be identical."""
    import torch

    missing = [r for r in range(tp) if r not in ranks]
    if missing:
        raise CheckpointError(
            f"{path}: lora_{factor} of {module} is in TP rank {min(ranks)} but missing from "
            f"TP rank {missing[0]}", value=module, fix="the LoRA checkpoint is incomplete")
    if kind is not TPKind.REPLICATED:
        return sharding.merge([ranks[r][0] for r in range(tp)], kind)
    first, file0 = ranks[0]
    for r in range(1, tp):
        other, file_r = ranks[r]
        if other.shape != first.shape or not torch.equal(other, first):
            raise CheckpointError(
                f"lora_{factor} of {module} should be identical on every TP rank (it is "
                f"replicated), but {file_r} differs from {file0}", value=module,
                fix="the LoRA run's TP ranks diverged or the files are mixed from different "
                    "runs; use a consistent save")
    return first


def read_mm_lora(path: Path, *, trust: bool = False) -> LoraSet:
    """An MM LoRA save (any TP/PP, ``release`` or ``iter_*``) as whole factors."""
    from cogvideo_cli.checkpoint.megatron import MMSource

    source = MMSource(path, trust=trust)
    layout = source.layout
    parts, keys, other = _mm_parts(source)
    if other:
        raise CheckpointError(
            f"{path} holds {len(other)} tensors that are not LoRA factors, e.g. "
            f"{', '.join(other[:3])}: it looks like a whole checkpoint, not a LoRA save",
            value=len(other), fix="pass the LoRA run's save folder as --lora and the base "
                                  "checkpoint as --base")
    found: dict[str, dict[str, Any]] = {}
    for (module, factor), ranks in parts.items():
        spec = spec_of(module + ".weight")
        if spec is None:
            raise CheckpointError(
                f"the LoRA key {keys[module]} matches no base weight: no CogVideoX "
                f"MindSpeed-MM layer is called {module}", value=keys[module],
                fix="is this a LoRA of another model? pass the matching --lora")
        a_kind, b_kind = factor_kinds(spec.tp)
        kind = a_kind if factor == "A" else b_kind
        found.setdefault(module, {})[factor] = _join(module, factor, ranks, kind,
                                                     layout.tp, Path(path))
    lora = LoraSet(Path(path), "mm", _pair(found, keys, Path(path)), keys,
                   f"TP {layout.tp}, PP stages {' '.join(map(str, layout.pp_layers)) or 'none'}"
                   f", iteration {layout.iteration}")
    return lora


# --- reading a diffusers / PEFT LoRA -----------------------------------------------------

def hf_lora_file(path: Path) -> Path:
    """The safetensors file of a diffusers / PEFT LoRA: the file, or the one in a folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"the LoRA {path} does not exist", fix="check the --lora path")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise NotSupportedError(f"{path} is not a .safetensors file",
                                    value=path.name, fix="save the LoRA as safetensors")
        return path
    for name in HF_LORA_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path} holds no {' or '.join(HF_LORA_FILES)}",
                          fix="pass the lora/ folder of a diffusers LoRA run, or the file")


def read_hf_lora(path: Path) -> LoraSet:
    """A diffusers / PEFT LoRA file as whole factors, keyed by diffusers module names."""
    from safetensors import safe_open

    file = hf_lora_file(path)
    found: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    with safe_open(str(file), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            split = split_key(key)
            if split is None:
                raise CheckpointError(
                    f"{file} holds {key}, which is not a LoRA factor", value=key,
                    fix="pass a LoRA file (pytorch_lora_weights.safetensors)")
            if key.startswith(("text_encoder.", "unet.")):
                raise NotSupportedError(f"{file} holds {key}: cogvx merges transformer "
                                        "LoRAs only", value=key)
            keys.setdefault(split[0], key)
            found.setdefault(split[0], {})[split[1]] = handle.get_tensor(key)
    return LoraSet(file, "diffusers", _pair(found, keys, file), keys, "one file")


# --- rank and alpha ----------------------------------------------------------------------

@dataclass
class Record:
    """Rank and alpha as the training run recorded them, and where."""

    rank: int
    alpha: float
    origin: str


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s is not readable JSON; ignoring it", path)
        return None
    return data if isinstance(data, dict) else None


def _unprefixed(config: dict) -> dict:
    """PEFT keys without diffusers' ``transformer.`` prefix.

    ``save_lora_weights(transformer_lora_adapter_metadata=...)`` stores ``{"r": 4}`` as
    ``{"transformer.r": 4}``; PEFT's own ``adapter_config.json`` has no prefix.
    """
    prefixed = {k.removeprefix("transformer."): v for k, v in config.items()
                if k.startswith("transformer.")}
    return {**config, **prefixed}


def _peft_record(config: dict | None, origin: str) -> Record | None:
    config = _unprefixed(config) if isinstance(config, dict) else None
    if not config or config.get("r") is None or config.get("lora_alpha") is None:
        return None
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise NotSupportedError(f"{origin} gives some modules their own rank or alpha "
                                "(rank_pattern / alpha_pattern)",
                                fix="merge it with the tool that trained it")
    return Record(int(config["r"]), float(config["lora_alpha"]), origin)


def hf_record(file: Path) -> Record | None:
    """cogvx's ``lora.json``, else diffusers' metadata, else PEFT's ``adapter_config.json``."""
    from safetensors import safe_open

    cogvx = file.parent / COGVX_LORA_RECORD
    data = _read_json(cogvx) if cogvx.is_file() else None
    if data and data.get("rank") is not None and data.get("alpha") is not None:
        return Record(int(data["rank"]), float(data["alpha"]), str(cogvx))
    with safe_open(str(file), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("lora_adapter_metadata")
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        log.warning("the lora_adapter_metadata of %s is not JSON; ignoring it", file)
        meta = None
    found = _peft_record(meta, f"the metadata of {file}")
    if found:
        return found
    peft = file.parent / "adapter_config.json"
    return _peft_record(_read_json(peft) if peft.is_file() else None, str(peft))


def mm_record(path: Path) -> Record | None:
    """The ``settings.json`` of the cogvx run that saved its LoRA into ``path``."""
    settings = Path(path).parent / "settings.json"
    data = _read_json(settings) if settings.is_file() else None
    if not data or data.get("kind") != "lora":
        return None
    saved = (data.get("resolved_paths") or {}).get("save")
    if not saved or Path(saved).resolve() != Path(path).resolve():
        return None
    return Record(int(data["lora_r"]), float(data["lora_alpha"]), str(settings))


# --- where a LoRA came from ----------------------------------------------------------------

def _save_folder(lora: Path) -> Path:
    """The folder a run saved its LoRA into: the folder itself, or the file's folder."""
    lora = Path(lora)
    return lora.parent if lora.suffix == ".safetensors" else lora


def _same_path(a: Any, b: Path) -> bool:
    return bool(a) and Path(str(a)).expanduser().resolve() == Path(b).resolve()


def recorded_base(lora: Path) -> tuple[Path, str] | None:
    """(base, the record naming it) for a LoRA a cogvx run saved; None when none says.

    The run folder's records are read first: ``settings.json`` (``lora_base``, else the
    MM ``resolved_paths.load``) and the diffusers ``run_config.json`` (``transformer``,
    else ``model``), when they name ``lora``'s folder as the run's output. Then the
    ``lora.json`` beside a diffusers LoRA (``base_model``, the pipeline it trained): it
    travels with a copied LoRA, but it does not know a separately given transformer.
    """
    folder = _save_folder(lora)
    run = folder.parent
    settings = run / "settings.json"
    config = run / "run_config.json"
    data = _read_json(settings) if settings.is_file() else None
    worker = _read_json(config) if config.is_file() else None
    paths = (data or {}).get("resolved_paths") or {}
    ours = _same_path(paths.get("save"), folder) or \
        _same_path((worker or {}).get("output"), folder)
    if ours and data and data.get("kind") == "lora":
        base = data.get("lora_base") or paths.get("load")
        if base:
            return Path(str(base)), str(settings)
    if ours and worker and worker.get("kind") == "lora":
        base = worker.get("transformer") or worker.get("model")
        if base:
            return Path(str(base)), str(config)
    record = folder / COGVX_LORA_RECORD
    data = _read_json(record) if record.is_file() else None
    if data and data.get("base_model"):
        return Path(str(data["base_model"])), str(record)
    return None


def merge_record(base: Path) -> tuple[Path, str | None] | None:
    """(record, the base it was merged into) when ``base`` is a merge-lora output.

    A diffusers output holds ``merge.json`` (``base``); an MM output's sidecar has a
    ``lora`` entry, and its ``source`` names the base.
    """
    from cogvideo_cli.checkpoint.layout import read_sidecar, sidecar_path

    base = Path(base)
    for folder in (base, base / "transformer"):
        record = folder / MERGE_RECORD
        if record.is_file():
            data = _read_json(record) or {}
            original = data.get("base")
            return record, original if isinstance(original, str) else None
    try:
        sidecar = read_sidecar(base)
    except CheckpointError:
        return None  # unreadable: cogvx cannot tell, and checks the tensors later
    if sidecar and sidecar.get("lora"):
        source = sidecar.get("source")
        return sidecar_path(base), source.get("path") if isinstance(source, dict) else None
    return None


def _check_number(flag: str, value: float | None, positive: bool = True) -> None:
    if value is not None and (not math.isfinite(value) or (positive and value <= 0)
                              or value == 0):
        raise UsageError(f"{flag} {value} is not a usable number", value=value,
                         fix=f"pass a finite {'positive' if positive else 'non-zero'} {flag}")


def resolve_scaling(record: Record | None, rank: int | None, alpha: float | None,
                    scale: float, tensor_rank: int, lora: Path) -> Scaling:
    """Rank and alpha from the record, else the flags, else a refusal that says what to pass.

    Flags that contradict the record are refused: ``--scale`` is the way to weaken or
    strengthen a LoRA.
    """
    _check_number("--lora-rank", rank)
    _check_number("--lora-alpha", alpha, positive=False)
    _check_number("--scale", scale, positive=False)
    if record is not None:
        for flag, given, known in (("--lora-rank", rank, record.rank),
                                   ("--lora-alpha", alpha, record.alpha)):
            if given is not None and float(given) != float(known):
                raise UsageError(
                    f"{flag} {given} contradicts {record.origin}, which records "
                    f"{known:g} for this LoRA", value=given,
                    fix=f"drop {flag}; use --scale to weaken or strengthen the LoRA")
        chosen = Scaling(record.rank, record.alpha, scale, record.origin)
    elif rank is not None and alpha is not None:
        chosen = Scaling(int(rank), float(alpha), scale, "--lora-rank/--lora-alpha")
    else:
        missing = " and ".join(f for f, v in (("--lora-rank", rank), ("--lora-alpha", alpha))
                               if v is None)
        raise UsageError(
            f"no record says which rank and alpha {lora} was trained with, and cogvx will "
            f"not guess the scale alpha / r (missing {missing})",
            fix=f"pass the training run's values: --lora-rank {tensor_rank} --lora-alpha "
                "ALPHA (MindSpeed-MM's CogVideoX LoRA scripts use --lora-r 128 "
                "--lora-alpha 64)")
    if chosen.rank != tensor_rank:
        raise CheckpointError(
            f"{chosen.origin} gives rank {chosen.rank}, but the LoRA factors in {lora} have "
            f"rank {tensor_rank}", value=chosen.rank,
            fix=f"pass --lora-rank {tensor_rank} with the run's --lora-alpha, or the LoRA "
                "that matches the record")
    return chosen


# --- merging -----------------------------------------------------------------------------

def _check_paths(base: Path, lora: Path, target: Path, force: bool) -> None:
    check_target(target, force, "target", protect=(Path(base), Path(lora)))


def _check_targets(lora: LoraSet, shapes: dict[str, tuple[int, ...]], base: Path) -> None:
    """Every LoRA module has a base weight of the shape B @ A gives."""
    for module, (a, b) in lora.factors.items():
        name = module + ".weight"
        if name not in shapes:
            raise CheckpointError(
                f"the LoRA key {lora.keys[module]} matches no base weight: {base} has no "
                f"{name}", value=lora.keys[module],
                fix="is --base the model this LoRA was trained on?")
        if (b.shape[0], a.shape[1]) != tuple(shapes[name]):
            raise CheckpointError(
                f"the LoRA of {module} makes a [{b.shape[0]}, {a.shape[1]}] update, but the "
                f"base weight {name} is {list(shapes[name])}", value=module,
                fix="the LoRA was trained on another model size; pass the matching --base")


def _finish(stats: Stats, lora: LoraSet, scaling: Scaling) -> dict:
    """The change summary; merging that changed no weight is a failure."""
    module, relative = stats.largest()
    if not stats.changed:
        raise CheckpointError(
            f"merging {len(lora.factors)} LoRA modules changed no weight (largest relative "
            f"change {relative:.3g}): the LoRA's B factors are zero or too small for the "
            "base dtype, e.g. an untrained LoRA", value=scaling.effective,
            fix="merge a LoRA saved after training steps (or check --scale)")
    return {"modules": len(lora.factors), "modules_changed": len(stats.changed),
            "largest_change": {"module": module, "relative": relative}}


def _base_report(lora: LoraSet, scaling: Scaling, base: Path, target: Path,
                 dry_run: bool) -> dict:
    # absolute, so merge.json and the sidecar still name them when read from elsewhere
    return {"dry_run": dry_run, "base": os.path.abspath(base),
            "lora": os.path.abspath(lora.path), "lora_format": lora.format,
            "lora_layout": lora.layout, "target": os.path.abspath(target),
            "rank": scaling.rank, "alpha": scaling.alpha, "scale": scaling.scale,
            "effective_scale": scaling.effective, "rank_alpha_from": scaling.origin,
            "modules": len(lora.factors), "notes": []}


def _merge_rank(source, lora: LoraSet, scaling: Scaling, stats: Stats, pp_rank: int,
                tp_rank: int) -> dict:
    """One base rank file's model dict with its part of every LoRA update merged in."""
    layout = source.layout
    out = {}
    for local, value in source.models[(pp_rank, tp_rank)].items():
        if not hasattr(value, "shape"):
            out[local] = value  # Megatron's _extra_state entries (None)
            continue
        name = sharding.globalize(local, pp_rank, layout.pp_layers)
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module not in lora.factors:
            out[local] = sharding.owned(value)
            continue
        kind = spec_of(name).tp
        a_kind, b_kind = factor_kinds(kind)
        a, b = lora.factors[module]
        part_a = sharding.take(a, a_kind, layout.tp, tp_rank, name)
        part_b = sharding.take(b, b_kind, layout.tp, tp_rank, name)
        out[local] = merged_weight(value, part_a, part_b, scaling.effective)
        if kind is not TPKind.REPLICATED or tp_rank == 0:  # count each element once
            stats.add(module, value, out[local])
    return out


def merge_mm(base: Path, lora: Path, target: Path, *, rank: int | None = None,
             alpha: float | None = None, scale: float = 1.0, record: Record | None = None,
             force: bool = False, dry_run: bool = False, trust: bool = False,
             reporter: Reporter = SILENT) -> dict:
    """Merge an MM LoRA save into an MM checkpoint, writing ``target`` in the base's layout.

    Args:
        base: MM checkpoint folder (any TP/PP, release or iter_*).
        lora: the LoRA run's save folder (any TP/PP; resharded to the base's on the fly).
        target: the output folder, written atomically as ``release/`` plus a sidecar.
        rank, alpha: the run's LoRA rank and alpha, used when no record knows them.
        scale: multiplies alpha / rank.
        record: rank and alpha the caller knows (e.g. from the workspace); a
            ``settings.json`` beside the LoRA save takes precedence.
        force: replace an existing target.
        dry_run: check everything and return the plan; write nothing.
        trust: load the files without the weights-only allowlist.
        reporter: progress, one step per rank file.

    Returns:
        A JSON-ready report: scaling, modules merged and changed, largest relative change.
    """
    from cogvideo_cli.checkpoint.convert import open_source, resolve

    target = Path(target)
    _check_paths(base, lora, target, force)
    loras = read_mm_lora(lora, trust=trust)
    scaling = resolve_scaling(mm_record(lora) or record, rank, alpha, scale,
                              loras.tensor_rank(), Path(lora))
    source = open_source("mm", base, trust=trust)
    try:
        if source.unknown:
            raise CheckpointError(
                f"{base} holds {len(source.unknown)} tensors no CogVideoX model has, e.g. "
                f"{', '.join(source.unknown[:3])}", value=len(source.unknown),
                fix="pass a whole base checkpoint as --base (the LoRA goes to --lora)")
        variant = resolve(source, None)
        _check_targets(loras, source.shapes(), Path(base))
        report = _base_report(loras, scaling, Path(base), target, dry_run)
        report.update(format="mm", variant=variant.name, tp=source.layout.tp,
                      pp_layers=source.layout.pp_layers, dtype="keep")
        if not dry_run:
            _write_merged_mm(source, loras, scaling, variant, target, force, reporter, report)
        return report
    finally:
        source.close()


def _write_merged_mm(source, lora: LoraSet, scaling: Scaling, variant, target: Path,
                     force: bool, reporter: Reporter, report: dict) -> None:
    import torch

    from cogvideo_cli.checkpoint import convert, detect
    from cogvideo_cli.checkpoint.layout import Layout, sidecar_path
    from cogvideo_cli.checkpoint.megatron import write_tracker
    from cogvideo_cli.checkpoint.verify import verify_checkpoint

    layout = Layout(tp=source.layout.tp, pp_layers=source.layout.pp_layers,
                    variant=variant.name)
    stats = Stats()
    task = reporter.start(f"merging into {target.name}", total=layout.tp * layout.pp)
    try:
        with atomic_dir(target, force=force, what="target") as tmp:
            digests = convert._Digests(tmp)
            for pp_rank, tp_rank, rel in layout.rank_files():
                model = _merge_rank(source, lora, scaling, stats, pp_rank, tp_rank)
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model, "checkpoint_version": 3.0}, tmp / rel)
                del model
                digests.add(tmp / rel)
                reporter.advance(task)
            write_tracker(tmp)
            hashed = digests.result()
            report.update(_finish(stats, lora, scaling))
            verify_checkpoint(tmp, variant, layout.tp, layout.pp_layers)
            old = sidecar_path(target)
            if old.exists():
                old.unlink()  # it describes the folder about to be replaced
        report.update(dims=detect.dims(variant),
                      files=[{"path": r, **i} for r, i in hashed.items()])
        sidecar = convert._sidecar(report, source, hashed)
        sidecar["lora"] = {k: report[k] for k in ("lora", "lora_layout", "rank", "alpha",
                                                  "scale", "effective_scale", "modules")}
        write_text_atomic(sidecar_path(target), json.dumps(sidecar, indent=2) + "\n")
    finally:
        reporter.finish(task)


# --- diffusers ---------------------------------------------------------------------------

def _hf_handles(folder: Path) -> list[tuple[Path, Any]]:
    from safetensors import safe_open

    from cogvideo_cli.checkpoint.diffusers import _shard_files

    return [(file, safe_open(str(file), framework="pt")) for file in _shard_files(folder)]


def merge_hf(base: Path, lora: Path, target: Path, *, rank: int | None = None,
             alpha: float | None = None, scale: float = 1.0, record: Record | None = None,
             force: bool = False, dry_run: bool = False, reporter: Reporter = SILENT,
             extra: dict | None = None) -> dict:
    """Merge a diffusers / PEFT LoRA into a diffusers transformer folder, shard by shard.

    Args:
        base: the diffusers ``transformer/`` folder (config.json + safetensors).
        lora: ``pytorch_lora_weights.safetensors`` or the folder holding it.
        target: the output transformer folder (written atomically, with ``merge.json``).
        rank, alpha: used when neither ``lora.json``, the file's metadata nor PEFT's
            ``adapter_config.json`` records them.
        scale: multiplies alpha / rank.
        record: rank and alpha the caller knows; the files' own records come first.
        force: replace an existing target.
        dry_run: check everything and return the plan; write nothing.
        reporter: progress, one step per shard.
        extra: more fields for ``merge.json`` and the report.

    Returns:
        A JSON-ready report, as :func:`merge_mm`'s.
    """
    from cogvideo_cli.checkpoint.diffusers import find_hf_dir

    folder = find_hf_dir(base)
    target = Path(target)
    _check_paths(base, lora, target, force)
    loras = read_hf_lora(lora)
    scaling = resolve_scaling(hf_record(loras.path) or record, rank, alpha, scale,
                              loras.tensor_rank(), loras.path)
    handles = _hf_handles(folder)
    shapes = {key: tuple(h.get_slice(key).get_shape())
              for _, h in handles for key in h.keys()}  # noqa: SIM118 (not dicts)
    _check_targets(loras, shapes, folder)
    report = _base_report(loras, scaling, folder, target, dry_run)
    report.update(format="diffusers", **(extra or {}))
    if not dry_run:
        _write_merged_hf(folder, handles, loras, scaling, target, force, reporter, report)
    return report


def _write_merged_hf(folder: Path, handles: list, lora: LoraSet, scaling: Scaling,
                     target: Path, force: bool, reporter: Reporter, report: dict) -> None:
    from cogvideo_cli.checkpoint.diffusers import write_shards

    where = {key: h for _, h in handles for key in h.keys()}  # noqa: SIM118 (not dicts)
    stats = Stats()

    def fetch(key: str):
        tensor = where[key].get_tensor(key)
        module = key[:-len(".weight")] if key.endswith(".weight") else None
        if module not in lora.factors:
            return tensor
        merged = merged_weight(tensor, *lora.factors[module], scaling.effective)
        stats.add(module, tensor, merged)
        return merged

    task = reporter.start(f"merging into {target.name}", total=len(handles))
    try:
        with atomic_dir(target, force=force, what="target") as tmp:
            config = folder / "config.json"
            if config.is_file():
                (tmp / "config.json").write_bytes(config.read_bytes())
            shards = [list(h.keys()) for _, h in handles]
            files = write_shards(tmp, shards, fetch, None)
            reporter.advance(task, len(handles))
            report.update(_finish(stats, lora, scaling))
            report["files"] = ["config.json", *files] if config.is_file() else files
            _verify_hf(tmp, report)
            record = {k: v for k, v in report.items() if k not in ("dry_run", "files")}
            (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2) + "\n",
                                            encoding="utf-8")
    finally:
        reporter.finish(task)


def _verify_hf(folder: Path, report: dict) -> None:
    """A CogVideoX transformer output must read back complete, as ``convert`` reads it."""
    from cogvideo_cli.checkpoint.convert import resolve
    from cogvideo_cli.checkpoint.diffusers import HFSource

    source = HFSource(folder)
    try:
        report.setdefault("variant", resolve(source, None).name)
    finally:
        source.close()


def base_format(base: Path) -> tuple[str, Path]:
    """(``mm`` or ``diffusers``, folder) of a base; a pipeline root means its transformer/."""
    from cogvideo_cli.checkpoint.layout import MISSPELLED_TRACKERS, TRACKER

    base = Path(base)
    if not base.is_dir():
        raise CheckpointError(f"the base {base} is not a folder" if base.exists() else
                              f"the base {base} does not exist",
                              fix="pass a MindSpeed-MM checkpoint folder or a diffusers "
                                  "transformer/ folder as --base")
    if (base / "model_index.json").is_file() and (base / "transformer").is_dir():
        return "diffusers", base / "transformer"
    if any((base / name).exists() for name in (TRACKER, *MISSPELLED_TRACKERS, "release")) \
            or any(base.glob("iter_*")):
        return "mm", base
    if (base / "config.json").is_file() or any(base.glob("*.safetensors")):
        return "diffusers", base
    raise CheckpointError(f"{base} is neither a MindSpeed-MM checkpoint (no {TRACKER}) nor "
                          "a diffusers transformer folder (no config.json)",
                          fix="pass the folder the conversion or download wrote")


def merge_lora(base: Path, lora: Path, target: Path, **options) -> dict:
    """Merge into an MM or diffusers base, whichever ``base`` is (see :func:`merge_mm`)."""
    fmt, folder = base_format(base)
    lora = Path(lora)
    if not lora.exists():  # else a missing path reads as "not a diffusers LoRA", i.e. MM
        raise CheckpointError(f"the LoRA {lora} does not exist", value=str(lora),
                              fix="check the --lora path: the LoRA run's save folder "
                                  "or its pytorch_lora_weights.safetensors")
    is_hf = lora.suffix == ".safetensors" or any((lora / n).is_file() for n in HF_LORA_FILES)
    if (fmt == "mm") == is_hf:
        other = "MindSpeed-MM" if fmt == "diffusers" else "diffusers"
        raise UsageError(
            f"--lora {lora} is a {other} LoRA, but --base {base} is a "
            f"{'MindSpeed-MM' if fmt == 'mm' else 'diffusers'} model", value=str(lora),
            fix="merge into a base of the LoRA's own format (cogvx convert mm-to-hf or "
                "hf-to-mm gives one)")
    if fmt == "mm":
        return merge_mm(folder, lora, target, **options)
    options.pop("trust", None)
    return merge_hf(folder, lora, target, **options)
