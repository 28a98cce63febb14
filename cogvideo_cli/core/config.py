"""Typed, strict run settings and dotted ``key=value`` overrides of rendered configs.

``RunSettings`` holds what a person chose for one train / lora / infer run; it is flat so
that it records as one JSON object and reloads strictly (an unknown key fails and names the
nearest known one). Overrides (``--set predictor.num_layers=64``) address the documents a
backend renders (``model``, ``data``, ``inference``, ``tools``, ``args``); a key that does
not exist fails the same way, and a value of the wrong type is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cogvideo_cli.core.errors import UsageError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARG_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass
class RunSettings:
    """Everything one run was asked for; ``None`` means "take the default"."""

    kind: str = "train"  # train, lora, infer or extract
    backend: str = "mindspeed"  # mindspeed, diffusers, or auto (chosen at planning)
    variant: str = "t2v-1.0"
    # where ``variant`` came from when nobody passed --variant, e.g. "the workspace's
    # [workspace] variant"; None: --variant (or the Python caller) chose it
    variant_source: str | None = None
    # parallel layout
    tp: int | None = None
    pp: int | None = None
    pp_layers: list[int] | None = None
    cp: int = 1
    sp: bool | None = None
    vae_cp: int = 1
    encoder_dp: bool | None = None
    layerzero: bool = False
    zero3_size: int | None = None
    # batch and schedule
    mbs: int = 1
    gbs: int | None = None
    grad_acc: int | None = None
    iters: int | None = None
    lr: float | None = None
    min_lr: float | None = None
    seed: int | None = None
    save_interval: int | None = None
    resume: str | None = None  # diffusers: a checkpoint or run directory to continue
    # clip
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    # paths
    load: str | None = None
    save: str | None = None
    data_path: str | None = None
    data_folder: str | None = None
    features: str | None = None
    vae: str | None = None
    t5: str | None = None
    tokenizer: str | None = None
    mindspeed: str | None = None
    run_dir: str | None = None
    # processes
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    single_host: bool = False
    python: str | None = None
    # LoRA
    lora_r: int | None = None  # default 128 (diffusers --resume: the resumed run's)
    lora_alpha: float | None = None  # default 64 (diffusers --resume: the resumed run's)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["proj_qkv", "proj_out"])
    # inference
    prompts: str | None = None
    images: str | None = None
    steps: int | None = None
    guidance: float | None = None
    fps: int | None = None
    out: str | None = None
    lora_path: str | None = None  # diffusers: a LoRA applied on the fly
    # free-form
    env: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        """Processes over all nodes."""
        return (self.nproc_per_node or 1) * self.nnodes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RunSettings:
        """Build settings from a mapping; an unknown key fails and suggests the nearest."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise UsageError(f"unknown setting {key!r}", value=key,
                                 fix=suggest(key, known))
        return cls(**values)


def suggest(word: str, options: list[str]) -> str:
    """A fix line naming the nearest option, or listing a few when none is close."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys include: " + ", ".join(sorted(options)[:12])


# --- overrides ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Override:
    """One ``--set`` item: a dotted key and its parsed value."""

    key: str
    value: Any
    raw: str


def parse_value(text: str) -> Any:
    """JSON where it parses (numbers, true/false/null, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(items: list[str]) -> list[Override]:
    """Parse ``key=value`` items; a missing ``=`` or an empty key is a usage error."""
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set {item!r} is not key=value with a dotted key",
                             fix="write e.g. --set predictor.num_layers=64")
        parsed.append(Override(key=key, value=parse_value(value.strip()), raw=item))
    return parsed


def parse_env(items: list[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` items for the launched processes' environment."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise UsageError(f"--env {item!r} is not KEY=VALUE with a valid variable name",
                             fix="write e.g. --env HCCL_CONNECT_TIMEOUT=1800")
        env[key] = value
    return env


def dotted_keys(doc: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a nested dict, leaves and inner tables alike."""
    keys = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}{key}"
            keys.append(path)
            keys.extend(dotted_keys(value, path + "."))
    return keys


def _lookup(doc: dict, parts: list[str]) -> tuple[dict, str] | None:
    """The table holding the last part, when every part before it exists."""
    table = doc
    for part in parts[:-1]:
        table = table.get(part) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            return None
    return table, parts[-1]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a JSON list such as [1,2]"
    if isinstance(value, dict):
        return "a table (set its keys one by one)"
    return "a string"


def _same_kind(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float))
    if isinstance(old, dict):
        return False
    return isinstance(new, type(old))


def _resolve_doc(docs: dict[str, dict], key: str, default: str,
                 optional: dict[str, set[str]]) -> tuple[str, str]:
    """Which document a dotted key addresses: an explicit prefix, or the one holding it."""
    head, _, rest = key.partition(".")
    if head in docs and rest:
        return head, rest
    holders = [name for name, doc in docs.items() if name != "args"
               and (key in dotted_keys(doc) or key in optional.get(name, set()))]
    if len(holders) == 1:
        return holders[0], key
    if len(holders) > 1:
        raise UsageError(f"--set {key} exists in several configs: {', '.join(holders)}",
                         fix=f"prefix it, e.g. --set {holders[0]}.{key}=...")
    return default, key


def apply_override(docs: dict[str, dict], item: Override, default: str,
                   optional: dict[str, set[str]] | None = None) -> str:
    """Apply one override in place; returns the full key it changed (``doc.key``).

    ``optional`` names keys a document may gain though its template lacks them
    (``predictor.seq_length``); the ``args`` document accepts any flag name.
    """
    optional = optional or {}
    name, key = _resolve_doc(docs, item.key, default, optional)
    doc = docs[name]
    if name == "args":
        if not _ARG_NAME.match(key):
            raise UsageError(f"--set args.{key}: not a command-line flag name",
                             fix="write the flag without dashes, e.g. args.log-interval=10")
        doc[key] = item.value
        return f"args.{key}"
    found = _lookup(doc, key.split("."))
    exists = found is not None and found[1] in found[0]
    if not exists and key not in optional.get(name, set()):
        options = dotted_keys(doc) + sorted(optional.get(name, set()))
        raise UsageError(f"--set {item.key}: the {name} config has no key {key!r}",
                         value=item.raw, fix=suggest(key, options))
    table, leaf = found if found is not None else _make_tables(doc, key.split("."))
    old = table.get(leaf)
    if not _same_kind(old, item.value):
        raise UsageError(f"--set {item.key}: expects {_type_name(old)}", value=item.raw,
                         fix=f"the template has {json.dumps(old)}")
    table[leaf] = item.value
    return f"{name}.{key}"


def _make_tables(doc: dict, parts: list[str]) -> tuple[dict, str]:
    table = doc
    for part in parts[:-1]:
        table = table.setdefault(part, {})
    return table, parts[-1]


def apply_overrides(docs: dict[str, dict], items: list[Override], default: str,
                    optional: dict[str, set[str]] | None = None) -> list[str]:
    """Apply every override in order; returns the keys changed."""
    return [apply_override(docs, item, default, optional) for item in items]
