"""What each variant and format needs, where it comes from, and where it lands on disk.

Pure data, no network. Section 3.0 of the reference lists the sources and section 11 the
folder MindSpeed-MM expects::

    <root>/text_encoder/  tokenizer/  transformer/<iteration>/mp_rank_00_model_states.pt
    <root>/transformer/latest  vae/3d-vae.pt

The diffusers format is the hub repository's own layout (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cogvideo_cli.core.errors import UsageError
from cogvideo_cli.core.variants import Variant

FORMATS = ("sat", "diffusers")
COMPONENTS = ("transformer", "vae", "t5", "tokenizer")

SAT_15_REPO = "THUDM/CogVideoX1.5-5B-SAT"
T5_REPO = "THUDM/CogVideoX-5b"
DEFAULT_CLOUD_URL = "https://cloud.tsinghua.edu.cn"

# Tsinghua cloud shares (Seafile). A file share ``/f/<token>/?dl=1`` answers with the file;
# a folder share's single file is ``/d/<token>/files/?p=<path>&dl=1``.
VAE_ZIP_SHARE = "/f/fdba7608a49c463ba754/?dl=1"
SAT_10_SHARES = {
    "t2v": ("/d/fcef5b3904294a6885e5/files/?p=%2F1000%2Fmp_rank_00_model_states.pt&dl=1",
            "1000"),
    "i2v": ("/d/5cc62a2d6e7d45c0a2f6/files/?p=%2F1%2Fmp_rank_00_model_states.pt&dl=1", "1"),
}
SAT_STATES = "mp_rank_00_model_states.pt"
VAE_FILE = "vae/3d-vae.pt"

# the local folder of each component in each format
_SAT_PATHS = {"transformer": "transformer", "vae": VAE_FILE, "t5": "text_encoder",
              "tokenizer": "tokenizer"}
_DIFFUSERS_FOLDERS = {"transformer": "transformer", "vae": "vae", "t5": "text_encoder",
                      "tokenizer": "tokenizer"}


@dataclass(frozen=True)
class HubPart:
    """Files of one hub repository, picked by patterns and renamed by a folder prefix.

    ``rename=("transformer_t2v/", "transformer/")`` puts the repository's
    ``transformer_t2v/1000/mp_rank_00_model_states.pt`` at
    ``transformer/1000/mp_rank_00_model_states.pt``.
    """

    component: str
    repo: str
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    rename: tuple[str, str] = ("", "")

    def local_name(self, path_in_repo: str) -> str:
        """Where a repository file goes, relative to the weights folder."""
        old, new = self.rename
        if old and path_in_repo.startswith(old):
            return new + path_in_repo[len(old):]
        return path_in_repo


@dataclass(frozen=True)
class CloudPart:
    """One download from the Tsinghua cloud: a single file, or a zip and the members kept.

    For a zip, ``members`` maps a file name looked for inside the archive (matched on its
    last path parts, since the archive's top folder is not documented) to its local path.
    """

    component: str
    share: str
    kind: str  # "file" or "zip"
    dest: str = ""
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TextPart:
    """A small file cogvx writes itself (the ``latest`` tracker of a SAT checkpoint)."""

    component: str
    dest: str
    text: str


Part = HubPart | CloudPart | TextPart


def parse_components(text: str | None) -> tuple[str, ...]:
    """``"transformer,vae"`` -> ``("transformer", "vae")``; ``None`` or ``"all"`` -> all."""
    if text is None or text.strip().lower() in ("", "all"):
        return COMPONENTS
    chosen = [c.strip().lower() for c in text.split(",") if c.strip()]
    if not chosen:  # "," or " , ": downloading nothing is never what was meant
        raise UsageError(f"--components {text!r} names no component", value=text,
                         fix="use a comma list of: " + ",".join(COMPONENTS)
                             + " (or leave --components out for all)")
    unknown = [c for c in chosen if c not in COMPONENTS]
    if unknown:
        raise UsageError(f"unknown component {unknown[0]!r} in --components",
                         value=text, fix="use a comma list of: " + ",".join(COMPONENTS))
    return tuple(c for c in COMPONENTS if c in chosen)


def check_format(fmt: str) -> str:
    """Normalise ``--format``; an unknown value lists the known ones."""
    key = fmt.strip().lower()
    if key not in FORMATS:
        raise UsageError(f"unknown weights format {fmt!r}",
                         fix="use --format sat (MindSpeed-MM) or --format diffusers")
    return key


def parts_for(variant: Variant, fmt: str, components: tuple[str, ...]) -> list[Part]:
    """Every part a variant needs in a format, for the chosen components, in fetch order."""
    fmt = check_format(fmt)
    parts = _diffusers_parts(variant, components) if fmt == "diffusers" else \
        _sat_parts(variant, components)
    return [p for p in parts if p.component in components or p.component == "pipeline"]


def _sat_parts(variant: Variant, components: tuple[str, ...]) -> list[Part]:
    parts: list[Part] = []
    if variant.version == "1.5":
        folder = f"transformer_{variant.task}/"
        parts.append(HubPart("transformer", SAT_15_REPO, allow=(folder + "*",),
                             rename=(folder, "transformer/")))
        parts.append(HubPart("vae", SAT_15_REPO, allow=(VAE_FILE,)))
    else:
        share, iteration = SAT_10_SHARES[variant.task]
        parts.append(CloudPart("transformer", share, "file",
                               dest=f"transformer/{iteration}/{SAT_STATES}"))
        parts.append(TextPart("transformer", "transformer/latest", iteration))
        parts.append(CloudPart("vae", VAE_ZIP_SHARE, "zip",
                               members={"vae/3d-vae.pt": VAE_FILE}))
    parts.append(HubPart("t5", T5_REPO, allow=("text_encoder/*",)))
    parts.append(HubPart("tokenizer", T5_REPO, allow=("tokenizer/*",)))
    return parts


def _diffusers_parts(variant: Variant, components: tuple[str, ...]) -> list[Part]:
    folders = [f"{folder}/*" for folder in _DIFFUSERS_FOLDERS.values()]
    # everything that is not a component folder: model_index.json, scheduler/, README ...
    parts: list[Part] = [HubPart("pipeline", variant.hf_repo, ignore=tuple(folders))]
    for component, folder in _DIFFUSERS_FOLDERS.items():
        parts.append(HubPart(component, variant.hf_repo, allow=(f"{folder}/*",)))
    return parts


@dataclass(frozen=True)
class WeightsLayout:
    """Where each component lives in a weights folder ``cogvx download`` filled.

    Other commands (convert, train, the diffusers backend) take their paths from here.
    """

    root: Path
    format: str

    def component_path(self, component: str) -> Path:
        """The folder (or, for the SAT VAE, the file) of a component."""
        table = _SAT_PATHS if self.format == "sat" else _DIFFUSERS_FOLDERS
        return self.root / table[component]

    @property
    def pipeline(self) -> Path | None:
        """The diffusers pipeline folder (``from_pretrained`` target), or None for SAT."""
        return self.root if self.format == "diffusers" else None

    def sat_checkpoint_file(self) -> Path:
        """``transformer/<latest>/mp_rank_00_model_states.pt``: what ``source_to_mm`` reads."""
        tracker = self.root / "transformer" / "latest"
        iteration = tracker.read_text(encoding="utf-8").strip()
        return self.root / "transformer" / iteration / SAT_STATES

    def workspace_values(self, components: tuple[str, ...]) -> dict[str, str]:
        """The ``[weights]`` keys of ``cogvx.toml`` for the components present."""
        keys = {"transformer": "transformer", "vae": "vae", "t5": "t5",
                "tokenizer": "tokenizer"}
        values = {"root": str(self.root), "format": self.format}
        for component in components:
            values[keys[component]] = str(self.component_path(component))
        if self.format == "diffusers":
            values["diffusers"] = str(self.root)
        return values


def default_target(root: Path, variant: Variant, fmt: str) -> Path:
    """``<workspace>/weights/<variant>-<format>``, e.g. ``weights/t2v-1.5-sat``."""
    return root / "weights" / f"{variant.name}-{fmt}"
