"""The CogVideoX variants: sizes, patch layout, frame / resolution / text rules, defaults.

Numbers come from MindSpeed-MM 2.3.0's presets and the CogVideoX releases (section 9 of the
reference). Each rule is a plain function that returns ``None`` when the value is fine and
a :class:`Problem` (what is wrong and the fix) when it is not; ``require`` turns a problem
into an error for the callers that must stop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cogvideo_cli.core.errors import UsageError


@dataclass(frozen=True)
class Problem:
    """A rule's verdict: what is wrong with a value and how to fix it."""

    message: str
    fix: str
    value: object = None

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}"


@dataclass(frozen=True)
class TrainDefaults:
    """The official pretrain preset for a variant (MindSpeed-MM 2.3.0)."""

    frames: int
    height: int = 480
    width: int = 720
    train_fps: int = 8
    skip_frames: int = 3
    text_length: int = 226
    input_size: tuple[int, int, int] = (7, 60, 90)
    tp: int = 4
    mbs: int = 1
    grad_acc: int = 4
    lr: float = 1e-5
    iters: int = 5000
    enable_encoder_dp: bool = False


@dataclass(frozen=True)
class InferDefaults:
    """The official inference preset for a variant."""

    frames: int
    height: int
    width: int
    fps: int
    text_length: int
    input_size: tuple[int, int, int]
    steps: int = 50
    guidance: float = 6.0
    dtype: str = "bf16"
    seed: int = 42


@dataclass(frozen=True)
class Variant:
    """One CogVideoX model: its transformer's shape and the rules for its clips."""

    name: str
    task: str  # "t2v" or "i2v"
    version: str  # "1.0" or "1.5"
    num_layers: int = 42
    num_heads: int = 48
    head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    time_embed_dim: int = 512
    text_hidden_size: int = 4096
    ofs_embed_dim: int | None = None
    learnable_pos_embed: bool = False
    vae_scale: float = 0.7
    hf_repo: str = ""
    train: TrainDefaults = field(default_factory=lambda: TrainDefaults(frames=17))
    infer: InferDefaults | None = None

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_hidden_size(self) -> int:
        return 4 * self.hidden_size

    @property
    def patch_type(self) -> str:
        return "3D" if self.patch_size[0] > 1 else "2D"

    @property
    def is_i2v(self) -> bool:
        return self.task == "i2v"

    def with_size(self, num_layers: int | None = None, num_heads: int | None = None,
                  head_dim: int | None = None) -> Variant:
        """A custom-size copy (e.g. the 15B example: 64 layers, 32 heads of 128)."""
        for label, value in (("layers", num_layers), ("heads", num_heads),
                             ("head dim", head_dim)):
            if value is not None and value < 1:
                raise UsageError(f"number of {label} must be at least 1", value=value,
                                 fix="pass a positive integer")
        changes = {k: v for k, v in (("num_layers", num_layers), ("num_heads", num_heads),
                                     ("head_dim", head_dim)) if v is not None}
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict:
        """A JSON-ready description."""
        return {
            "name": self.name, "task": self.task, "version": self.version,
            "num_layers": self.num_layers, "num_heads": self.num_heads,
            "head_dim": self.head_dim, "hidden_size": self.hidden_size,
            "in_channels": self.in_channels, "patch_size": list(self.patch_size),
            "patch_type": self.patch_type, "ofs_embed_dim": self.ofs_embed_dim,
            "learnable_pos_embed": self.learnable_pos_embed,
            "train_frames": self.train.frames, "text_length": self.train.text_length,
        }


_T10_INFER = InferDefaults(frames=49, height=480, width=720, fps=8, text_length=226,
                           input_size=(13, 60, 90), dtype="fp16")
_T15_INFER = InferDefaults(frames=81, height=768, width=1360, fps=16, text_length=224,
                           input_size=(22, 96, 170))

VARIANTS: dict[str, Variant] = {
    "t2v-1.0": Variant(
        name="t2v-1.0", task="t2v", version="1.0", hf_repo="THUDM/CogVideoX-5b",
        train=TrainDefaults(frames=17, input_size=(7, 60, 90)), infer=_T10_INFER),
    "i2v-1.0": Variant(
        name="i2v-1.0", task="i2v", version="1.0", in_channels=32, learnable_pos_embed=True,
        hf_repo="THUDM/CogVideoX-5b-I2V",
        train=TrainDefaults(frames=17, input_size=(7, 60, 90)), infer=_T10_INFER),
    "t2v-1.5": Variant(
        name="t2v-1.5", task="t2v", version="1.5", patch_size=(2, 2, 2),
        hf_repo="THUDM/CogVideoX1.5-5B",
        train=TrainDefaults(frames=37, input_size=(6, 96, 170), enable_encoder_dp=True),
        infer=_T15_INFER),
    "i2v-1.5": Variant(
        name="i2v-1.5", task="i2v", version="1.5", patch_size=(2, 2, 2), in_channels=32,
        ofs_embed_dim=512, hf_repo="THUDM/CogVideoX1.5-5B-I2V",
        train=TrainDefaults(frames=37, input_size=(6, 96, 170), enable_encoder_dp=True),
        infer=_T15_INFER),
}


def get_variant(name: str) -> Variant:
    """Look a variant up by name; an unknown name lists the known ones."""
    key = name.strip().lower()
    if key in VARIANTS:
        return VARIANTS[key]
    raise UsageError(
        f"unknown variant {name!r}",
        fix="use one of: " + ", ".join(VARIANTS),
    )


# --- rules -------------------------------------------------------------------------------

def latent_frames(frames: int) -> int:
    """Latent frames the VAE gives for ``frames`` video frames (4x temporal compression)."""
    return (frames - 1) // 4 + 1


def _nearest(values: list[int]) -> str:
    return " or ".join(str(v) for v in sorted(set(values)))


def check_frames(variant: Variant, frames: int, training: bool = True) -> Problem | None:
    """Frames must be 4k+1; CogVideoX 1.5 training also needs an even latent count."""
    if frames < 1:
        return Problem(f"{frames} frames is not a clip", "use at least 5 frames", frames)
    if (frames - 1) % 4:
        low = frames - (frames - 1) % 4
        high = low + 4
        return Problem(
            f"{frames} frames is not 4k+1, which the VAE's 4x temporal compression needs",
            f"use {_nearest([v for v in (low, high) if v >= 1])}", frames)
    if training and variant.patch_size[0] > 1:
        lat = latent_frames(frames)
        if lat % variant.patch_size[0]:
            options = [f for f in (frames - 4, frames + 4) if f >= 5]
            return Problem(
                f"{frames} frames give {lat} latent frames; CogVideoX {variant.version} "
                f"training needs an even count",
                f"use {_nearest(options)}", frames)
    return None


def check_resolution(variant: Variant, height: int, width: int) -> Problem | None:
    """Height and width must be positive multiples of 16 (VAE x8, patch x2)."""
    for label, value in (("height", height), ("width", width)):
        if value < 16 or value % 16:
            low = max(16, value - value % 16)
            return Problem(
                f"{label} {value} is not a multiple of 16 (the VAE downsamples by 8 and the "
                f"patch embedding by 2)",
                f"use {_nearest([low, low + 16])}", value)
    if variant.name == "i2v-1.0" and (height, width) != (480, 720):
        return Problem(
            f"i2v-1.0 has a learned position table fixed at 480x720; {height}x{width} "
            f"does not fit it",
            "use --height 480 --width 720", (height, width))
    return None


def check_text_length(variant: Variant, text_length: int,
                      model_max_length: int | None) -> Problem | None:
    """``text_length`` must equal the tokenizer's ``model_max_length``."""
    if text_length < 1:
        return Problem(f"text length {text_length} is not positive", "use 226 or 224",
                       text_length)
    if model_max_length is not None and text_length != model_max_length:
        return Problem(
            f"text_length {text_length} differs from the tokenizer's model_max_length "
            f"{model_max_length}; the prompt tokens would be split at the wrong place",
            f"set text_length to {model_max_length}", text_length)
    return None


def latent_shape(variant: Variant, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """[T_latent, H/8, W/8] for a clip: the exact ``input_size`` pipeline parallel needs."""
    return (latent_frames(frames), height // 8, width // 8)


def sequence_length(variant: Variant, frames: int, height: int, width: int,
                    text_length: int) -> int:
    """Tokens one sample puts through the transformer: text + patched video."""
    t_lat = latent_frames(frames)
    pt, ph, pw = variant.patch_size
    return text_length + (t_lat // pt) * (height // 8 // ph) * (width // 8 // pw)


def check_tensor_parallel(variant: Variant, tp: int) -> Problem | None:
    """TP must divide the head count, the hidden size and the MLP width."""
    if tp < 1:
        return Problem(f"tensor-parallel size {tp} is not positive", "use --tp 1 or more", tp)
    for label, size in (("attention heads", variant.num_heads),
                        ("hidden size", variant.hidden_size),
                        ("MLP width", variant.mlp_hidden_size)):
        if size % tp:
            good = [d for d in range(1, variant.num_heads + 1)
                    if variant.num_heads % d == 0 and variant.hidden_size % d == 0]
            return Problem(
                f"--tp {tp} does not divide the {size} {label} of {variant.name}",
                f"use one of --tp {', '.join(map(str, good[:8]))}", tp)
    return None


def balanced_split(num_layers: int, stages: int) -> list[int]:
    """Split layers into ``stages`` near-equal parts, larger parts in the middle.

    42 layers over 4 stages give [10, 11, 11, 10], the split MindSpeed-MM's docs use.
    """
    base, extra = divmod(num_layers, stages)
    sizes = [base] * stages
    # hand the remainder to the middle stages first: the first and last carry embeddings
    order = sorted(range(stages), key=lambda i: (abs(2 * i - (stages - 1)), i))
    for i in order[:extra]:
        sizes[i] += 1
    return sizes


def check_pp_layers(variant: Variant, pp_layers: list[int]) -> Problem | None:
    """Stage sizes: at least one stage, each at least 1 layer, summing to the layer count."""
    n = variant.num_layers
    if not pp_layers:
        example = " ".join(map(str, balanced_split(n, 2)))
        return Problem("--pp-layers is empty", f"use e.g. {example}", pp_layers)
    stages = len(pp_layers)
    if stages > n:
        return Problem(f"{stages} pipeline stages for {n} layers leaves a stage empty",
                       f"use at most {n} stages", pp_layers)
    proposal = " ".join(map(str, balanced_split(n, stages)))
    shown = " ".join(map(str, pp_layers))
    if any(s < 1 for s in pp_layers):
        return Problem(f"--pp-layers {shown} has a stage with fewer than 1 layer",
                       f"try {proposal}", pp_layers)
    if sum(pp_layers) != n:
        return Problem(
            f"--pp-layers {shown} sums to {sum(pp_layers)}, but the model has {n} layers",
            f"try {proposal}", pp_layers)
    return None


def require(problem: Problem | None) -> None:
    """Raise a usage error for a rule's problem; do nothing when there is none."""
    if problem is not None:
        raise UsageError(problem.message, value=problem.value, fix=problem.fix)
