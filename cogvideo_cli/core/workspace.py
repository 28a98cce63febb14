"""The workspace file ``cogvx.toml``: what earlier commands produced, so commands chain.

A plain TOML file a person can read and edit. Every command that produces something records
it here (weights, converted checkpoints, prepared data, runs, the MindSpeed-MM checkout);
later commands take their defaults from it, and every value can be overridden on the
command line. Unknown sections or keys, and values of the wrong type, are errors that name
the key and the line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import ConfigError
from cogvideo_cli.core.fsutil import write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

FILENAME = "cogvx.toml"

# section -> key -> (python type, one-line meaning). The single source of truth for what a
# workspace may hold; `env-check` shows it and `load` validates against it.
SCHEMA: dict[str, dict[str, tuple[type, str]]] = {
    "workspace": {
        "variant": (str, "default variant for every command"),
        "backend": (str, "mindspeed or diffusers"),
    },
    "weights": {
        "root": (str, "folder `cogvx download` filled"),
        "format": (str, "sat or diffusers"),
        "variant": (str, "variant the weights belong to"),
        "transformer": (str, "SAT transformer folder or diffusers transformer/"),
        "vae": (str, "VAE file (3d-vae.pt) or diffusers vae/ folder"),
        "t5": (str, "T5 text encoder folder"),
        "tokenizer": (str, "T5 tokenizer folder"),
        "diffusers": (str, "a whole diffusers pipeline folder"),
    },
    "checkpoint": {
        "path": (str, "MindSpeed-MM checkpoint folder (the --load of train)"),
        "variant": (str, "variant of that checkpoint"),
        "tp": (int, "its tensor-parallel size"),
        "pp_layers": (list, "its pipeline stage sizes"),
        "hf": (str, "last diffusers transformer written by convert mm-to-hf or merge-lora"),
    },
    "data": {
        "data_path": (str, "data.jsonl prepare-data wrote"),
        "data_folder": (str, "folder the jsonl's file entries are relative to"),
        "report": (str, "report.json of the last prepare-data"),
        "features": (str, "feature folder for train --features"),
        "variant": (str, "variant the data was checked against"),
    },
    "mindspeed": {
        "path": (str, "MindSpeed-MM checkout (the launch root)"),
    },
    "runs": {
        "last": (str, "run directory of the last train / lora / infer"),
        "last_train": (str, "run directory of the last train"),
        "last_lora": (str, "run directory of the last lora run"),
        "lora_save": (str, "where the last lora run saved its checkpoints"),
        "lora_base": (str, "the model the last lora run trained (merge-lora's --base)"),
        "lora_rank": (int, "LoRA rank of the last lora run"),
        "lora_alpha": (float, "LoRA alpha of the last lora run"),
        "last_infer": (str, "run directory of the last inference"),
    },
}

_HEADER = (
    "# cogvx workspace: what earlier cogvx commands produced, so later ones need no flags.\n"
    "# Edit freely; every value can also be overridden on the command line.\n"
)


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """1-based line of ``[section]`` or of ``key`` inside it, for error messages."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1).strip().strip('"')
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section:
            match = re.match(r'^"?([A-Za-z0-9_.-]+)"?\s*=', stripped)
            if match and match.group(1) == key:
                return number
    return None


def _top_level_line(text: str, key: str) -> int | None:
    """1-based line of a ``key = value`` written before any [section]."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            return None
        match = re.match(r'^"?([A-Za-z0-9_.-]+)"?\s*=', stripped)
        if match and match.group(1) == key:
            return number
    return None


def _value_problem(section: str, key: str, value: Any) -> str | None:
    """What is wrong with a well-typed value, or None: caught here, not mid-run."""
    if key == "variant":
        from cogvideo_cli.core.variants import VARIANTS

        if value not in VARIANTS:
            return f"unknown variant {value!r}; use one of {', '.join(VARIANTS)}"
    elif key in ("tp", "lora_rank") and value < 1:
        return f"{key} must be at least 1, not {value}"
    elif key == "lora_alpha" and not value > 0:
        return f"lora_alpha must be positive, not {value}"
    elif key == "pp_layers" and not all(isinstance(v, int) and not isinstance(v, bool)
                                        and v >= 1 for v in value):
        return f"pp_layers must list stage sizes of at least 1 layer, not {value}"
    elif (section, key) == ("workspace", "backend") and value not in ("mindspeed", "diffusers"):
        return f"backend must be mindspeed or diffusers, not {value!r}"
    elif (section, key) == ("weights", "format") and value not in ("sat", "diffusers"):
        return f"format must be sat or diffusers, not {value!r}"
    return None


def _near(word: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_type(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@dataclass
class Workspace:
    """The parsed workspace of one folder."""

    root: Path
    data: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / FILENAME

    @classmethod
    def load(cls, root: Path | None = None) -> Workspace:
        """Read ``cogvx.toml`` from ``root`` (default: the working directory), if present."""
        root = Path(root or Path.cwd()).absolute()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"the workspace {root} is a file, not a folder",
                              fix="pass --workspace a folder")
        path = root / FILENAME
        if not path.exists():
            return cls(root=root)
        try:
            text = path.read_text(encoding="utf-8")
            parsed = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})",
                              fix=f"repair or delete {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}",
                              fix=f"repair the line it names, or delete {path} to start "
                                  "a new workspace") from exc
        return cls(root=root, data=cls._validate(path, text, parsed))

    @staticmethod
    def _validate(path: Path, text: str, parsed: dict) -> dict[str, dict[str, Any]]:
        for section, values in parsed.items():
            line = _line_of(text, section, None) or _top_level_line(text, section)
            where = f"{path}:{line}" if line else str(path)
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: {section!r} is set outside any [section]",
                                  fix=f"move it under one of: {', '.join(SCHEMA)}")
            if section not in SCHEMA:
                raise ConfigError(
                    f"{where}: unknown section [{section}]",
                    fix=f"{_near(section, list(SCHEMA))}known sections: {', '.join(SCHEMA)}")
            for key, value in values.items():
                line = _line_of(text, section, key)
                where = f"{path}:{line}" if line else str(path)
                if key not in SCHEMA[section]:
                    known = list(SCHEMA[section])
                    raise ConfigError(
                        f"{where}: unknown key {key!r} in [{section}]",
                        fix=f"{_near(key, known)}known keys: {', '.join(known)}")
                expected = SCHEMA[section][key][0]
                if not _check_type(value, expected):
                    raise ConfigError(
                        f"{where}: [{section}] {key} must be {expected.__name__}, "
                        f"not {type(value).__name__}", value=value,
                        fix=f"edit line {line} of {path}")
                problem = _value_problem(section, key, value)
                if problem:
                    raise ConfigError(f"{where}: [{section}] {problem}", value=value,
                                      fix=f"edit line {line} of {path}")
        return {k: dict(v) for k, v in parsed.items()}

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """A recorded value, or ``default``."""
        return self.data.get(section, {}).get(key, default)

    def path_value(self, section: str, key: str) -> Path | None:
        """A recorded path, resolved against the workspace folder."""
        value = self.get(section, key)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def record(self, section: str, **values: Any) -> None:
        """Set values (``None`` removes a key) and write the file atomically."""
        for key, value in values.items():
            if key not in SCHEMA.get(section, {}):
                raise ConfigError(f"internal: no workspace key [{section}] {key}")
            if value is None:
                self.data.get(section, {}).pop(key, None)
                continue
            if isinstance(value, Path):
                value = str(value.absolute())
            self.data.setdefault(section, {})[key] = value
        self.save()

    def dumps(self) -> str:
        """The file's text: sections in schema order, one comment line per key."""
        parts = [_HEADER]
        for section, keys in SCHEMA.items():
            values = self.data.get(section)
            if not values:
                continue
            parts.append(f"\n[{section}]\n")
            for key in keys:
                if key in values:
                    parts.append(f"{key} = {_toml_value(values[key])}  # {keys[key][1]}\n")
        return "".join(parts)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, self.dumps())

    def rows(self) -> list[tuple[str, str, Any]]:
        """(section, key, value) for every recorded value, in schema order."""
        return [(s, k, self.data[s][k]) for s in SCHEMA for k in SCHEMA[s]
                if k in self.data.get(s, {})]
