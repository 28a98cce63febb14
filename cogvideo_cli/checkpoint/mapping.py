"""Declarative name tables: MindSpeed-MM parameters, and SAT / diffusers names for them.

The MindSpeed-MM (MM) name of a parameter, with global layer indices, is the canonical name
every reader produces and every writer consumes. ``MM_PARAMS`` says, for each MM name, how
it splits across tensor-parallel ranks and in which pipeline stage it lives; the format
tables say how a format's names map onto MM names. Nothing here touches a tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from cogvideo_cli.core.variants import Variant

LAYER_PREFIX = "videodit_blocks."
_LAYER_RE = re.compile(r"^videodit_blocks\.(\d+)\.(.+)$")


class TPKind(str, Enum):
    """How a tensor is laid out over tensor-parallel ranks."""

    COLUMN = "column"  # output features split: chunk dim 0
    ROW = "row"  # input features split: chunk dim 1
    QKV = "qkv"  # fused [Q; K; V] rows: each of Q, K, V chunked, rank r gets Q_r;K_r;V_r
    REPLICATED = "replicated"  # every rank holds the whole tensor


class Stage(str, Enum):
    """Where a tensor lives when the layers are split into pipeline stages."""

    FIRST = "first"
    LAST = "last"
    LAYER = "layer"


@dataclass(frozen=True)
class ParamSpec:
    """One MM parameter (a pattern; ``{i}`` is the layer index)."""

    pattern: str
    tp: TPKind
    stage: Stage
    optional: bool = False  # allowed when present, never required


def _spec(pattern: str, tp: TPKind, stage: Stage, optional: bool = False) -> list[ParamSpec]:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return [ParamSpec(f"{base}.weight", tp, stage, optional),
                ParamSpec(f"{base}.bias", tp, stage, optional)]
    return [ParamSpec(pattern, tp, stage, optional)]


_R, _C, _ROW, _QKV = TPKind.REPLICATED, TPKind.COLUMN, TPKind.ROW, TPKind.QKV
_F, _L, _Y = Stage.FIRST, Stage.LAST, Stage.LAYER
_B = "videodit_blocks.{i}."

# MindSpeed-MM 2.3.0's SatDiT (tp_split_mapping and _pp_vpp_split), with ofs_embed and the
# learned position tables kept in the first stage where MM's converter drops them.
MM_PARAMS: list[ParamSpec] = [
    *_spec("time_embed.time_embed.0.*", _R, _F),
    *_spec("time_embed.time_embed.2.*", _R, _F),
    *_spec("patch_embed.proj.weight", _R, _F),
    *_spec("patch_embed.proj.bias", _R, _F, optional=True),
    *_spec("caption_projection.*", _R, _F),
    *_spec("ofs_embed.0.*", _R, _F, optional=True),
    *_spec("ofs_embed.2.*", _R, _F, optional=True),
    *_spec("pos_embed.freqs_cos", _R, _F, optional=True),
    *_spec("pos_embed.freqs_sin", _R, _F, optional=True),
    *_spec("pos_embed.pos_embedding", _R, _F, optional=True),
    *_spec("rope.pos_embedding", _R, _F, optional=True),
    *_spec("norm_final.*", _R, _L),
    *_spec("norm_out.*", _R, _L),
    *_spec("proj_out_linear.*", _R, _L),
    *_spec("adaLN_modulation.1.*", _C, _L),
    *_spec(_B + "norm1.*", _R, _Y),
    *_spec(_B + "norm2.*", _R, _Y),
    *_spec(_B + "self_atten.q_norm.*", _R, _Y),
    *_spec(_B + "self_atten.k_norm.*", _R, _Y),
    *_spec(_B + "self_atten.proj_qkv.*", _QKV, _Y),
    *_spec(_B + "self_atten.proj_out.weight", _ROW, _Y),
    *_spec(_B + "self_atten.proj_out.bias", _R, _Y),
    *_spec(_B + "ff.net.0.proj.*", _C, _Y),
    *_spec(_B + "ff.net.2.weight", _ROW, _Y),
    *_spec(_B + "ff.net.2.bias", _R, _Y),
    *_spec(_B + "scale_shift_table.1.*", _C, _Y),
    # MM registers its learned table in every block too (one module, three names)
    *_spec(_B + "rope.pos_embedding", _R, _Y, optional=True),
    *_spec(_B + "self_atten.rope.pos_embedding", _R, _Y, optional=True),
]

_BY_NAME: dict[tuple[bool, str], ParamSpec] = {
    (True, s.pattern[len(_B):]) if s.pattern.startswith(_B) else (False, s.pattern): s
    for s in MM_PARAMS
}

# Known MM parameters that MindSpeed-MM 2.3.0 builds no module for: written as its
# converter writes them, with a note that they will not be used.
UNUSED_BY_MM = {
    "pos_embed.pos_embedding": (
        "the learned position table of i2v-1.0 (pos_embed.pos_embedding) is written as "
        "MindSpeed-MM's converter writes it, but MindSpeed-MM 2.3.0 never loads it: its "
        "model keeps the table at rope.pos_embedding, sized from input_size"),
    "pos_embed.freqs_cos": None,  # rotary tables MM recomputes; harmless, so no note
    "pos_embed.freqs_sin": None,
}


def split_layer(name: str) -> tuple[int | None, str]:
    """``videodit_blocks.7.norm1.weight`` -> (7, ``norm1.weight``); others -> (None, name)."""
    match = _LAYER_RE.match(name)
    if match:
        return int(match.group(1)), match.group(2)
    return None, name


def layer_name(index: int, rest: str) -> str:
    """The MM name of ``rest`` in layer ``index``."""
    return f"{LAYER_PREFIX}{index}.{rest}"


def spec_of(name: str) -> ParamSpec | None:
    """The spec of an MM name (global or stage-local index), or None if unknown."""
    index, rest = split_layer(name)
    return _BY_NAME.get((index is not None, rest))


# --- expected shapes -------------------------------------------------------------------

def _patch_numel(variant: Variant) -> int:
    pt, ph, pw = variant.patch_size
    return (max(1, pt)) * ph * pw


def _head_shapes(v: Variant) -> dict[str, tuple[int, ...]]:
    h, t = v.hidden_size, v.time_embed_dim
    if v.patch_type == "3D":
        patch = (h, v.in_channels * _patch_numel(v))
    else:
        patch = (h, v.in_channels, v.patch_size[1], v.patch_size[2])
    out = v.out_channels * _patch_numel(v)
    shapes = {
        "time_embed.time_embed.0.weight": (t, h), "time_embed.time_embed.0.bias": (t,),
        "time_embed.time_embed.2.weight": (t, t), "time_embed.time_embed.2.bias": (t,),
        "patch_embed.proj.weight": patch, "patch_embed.proj.bias": (h,),
        "caption_projection.weight": (h, v.text_hidden_size), "caption_projection.bias": (h,),
        "norm_final.weight": (h,), "norm_final.bias": (h,),
        "norm_out.weight": (h,), "norm_out.bias": (h,),
        "proj_out_linear.weight": (out, h), "proj_out_linear.bias": (out,),
        "adaLN_modulation.1.weight": (2 * h, t), "adaLN_modulation.1.bias": (2 * h,),
    }
    if v.ofs_embed_dim:
        shapes.update({"ofs_embed.0.weight": (t, v.ofs_embed_dim), "ofs_embed.0.bias": (t,),
                       "ofs_embed.2.weight": (t, t), "ofs_embed.2.bias": (t,)})
    return shapes


def _layer_shapes(v: Variant) -> dict[str, tuple[int, ...]]:
    h, t, f, d = v.hidden_size, v.time_embed_dim, v.mlp_hidden_size, v.head_dim
    return {
        "norm1.weight": (h,), "norm1.bias": (h,), "norm2.weight": (h,), "norm2.bias": (h,),
        "self_atten.q_norm.weight": (d,), "self_atten.q_norm.bias": (d,),
        "self_atten.k_norm.weight": (d,), "self_atten.k_norm.bias": (d,),
        "self_atten.proj_qkv.weight": (3 * h, h), "self_atten.proj_qkv.bias": (3 * h,),
        "self_atten.proj_out.weight": (h, h), "self_atten.proj_out.bias": (h,),
        "ff.net.0.proj.weight": (f, h), "ff.net.0.proj.bias": (f,),
        "ff.net.2.weight": (h, f), "ff.net.2.bias": (h,),
        "scale_shift_table.1.weight": (12 * h, t), "scale_shift_table.1.bias": (12 * h,),
    }


def expected_shapes(variant: Variant) -> dict[str, tuple[int, ...]]:
    """Every required MM parameter of ``variant`` with its full (unsplit) shape.

    ``patch_embed.proj.bias`` is listed too; it is optional (diffusers' ``patch_bias``).
    """
    shapes = _head_shapes(variant)
    per_layer = _layer_shapes(variant)
    for i in range(variant.num_layers):
        for rest, shape in per_layer.items():
            shapes[layer_name(i, rest)] = shape
    return shapes


# --- format tables ---------------------------------------------------------------------

@dataclass(frozen=True)
class Rename:
    """A format prefix that maps onto an MM prefix (``{i}`` = layer; suffix carried)."""

    source: str
    mm: str


@dataclass(frozen=True)
class Fuse:
    """An MM tensor that is several format tensors cut in chunks and concatenated (dim 0).

    ``segments`` lists, in MM order, (part index, chunk index) with every part cut into
    ``chunks`` equal pieces. Example, diffusers' adaLN rows into MM's scale_shift_table::

        norm1.linear [6h, t] = n1_0..n1_5, norm2.linear [6h, t] = n2_0..n2_5
        scale_shift_table.1 [12h, t] = n1_0 n1_1 n1_2 n2_0 n2_1 n2_2 n1_3 ... n2_5
    """

    mm: str
    parts: tuple[str, ...]
    chunks: int
    segments: tuple[tuple[int, int], ...]


SAT_PREFIX = "model.diffusion_model."

# SAT (CogVideo) -> MM, names after SAT_PREFIX. Section 3.1 of the reference.
SAT_TABLE: list[Rename] = [Rename(s, m) for s, m in [
    ("time_embed.0", "time_embed.time_embed.0"),
    ("time_embed.2", "time_embed.time_embed.2"),
    ("mixins.patch_embed.proj", "patch_embed.proj"),
    ("mixins.patch_embed.text_proj", "caption_projection"),
    ("mixins.pos_embed.freqs_cos", "pos_embed.freqs_cos"),
    ("mixins.pos_embed.freqs_sin", "pos_embed.freqs_sin"),
    ("mixins.pos_embed.pos_embedding", "pos_embed.pos_embedding"),
    ("ofs_embed.0", "ofs_embed.0"),
    ("ofs_embed.2", "ofs_embed.2"),
    ("transformer.final_layernorm", "norm_final"),
    ("mixins.final_layer.norm_final", "norm_out"),
    ("mixins.final_layer.linear", "proj_out_linear"),
    ("mixins.final_layer.adaLN_modulation.1", "adaLN_modulation.1"),
    ("mixins.adaln_layer.adaLN_modulations.{i}.1", _B + "scale_shift_table.1"),
    ("mixins.adaln_layer.query_layernorm_list.{i}", _B + "self_atten.q_norm"),
    ("mixins.adaln_layer.key_layernorm_list.{i}", _B + "self_atten.k_norm"),
    ("transformer.layers.{i}.input_layernorm", _B + "norm1"),
    ("transformer.layers.{i}.attention.query_key_value", _B + "self_atten.proj_qkv"),
    ("transformer.layers.{i}.attention.dense", _B + "self_atten.proj_out"),
    ("transformer.layers.{i}.post_attention_layernorm", _B + "norm2"),
    ("transformer.layers.{i}.mlp.dense_h_to_4h", _B + "ff.net.0.proj"),
    ("transformer.layers.{i}.mlp.dense_4h_to_h", _B + "ff.net.2"),
]]

# SAT placeholders that no CogVideoX model uses (MM's converter drops them as well).
SAT_DUMMIES = ("transformer.position_embeddings.weight", "transformer.word_embeddings.weight")

_HB = "transformer_blocks.{i}."

# diffusers CogVideoXTransformer3DModel -> MM. Section 3.2, plus ofs_embedding and the
# learned position table that MM 2.3.0 leaves under names its model never reads.
HF_TABLE: list[Rename | Fuse] = [
    *[Rename(s, m) for s, m in [
        ("time_embedding.linear_1", "time_embed.time_embed.0"),
        ("time_embedding.linear_2", "time_embed.time_embed.2"),
        ("patch_embed.proj", "patch_embed.proj"),
        ("patch_embed.text_proj", "caption_projection"),
        ("patch_embed.pos_embedding", "pos_embed.pos_embedding"),
        ("ofs_embedding.linear_1", "ofs_embed.0"),
        ("ofs_embedding.linear_2", "ofs_embed.2"),
        ("norm_final", "norm_final"),
        ("norm_out.norm", "norm_out"),
        ("norm_out.linear", "adaLN_modulation.1"),
        ("proj_out", "proj_out_linear"),
        (_HB + "attn1.norm_q", _B + "self_atten.q_norm"),
        (_HB + "attn1.norm_k", _B + "self_atten.k_norm"),
        (_HB + "norm1.norm", _B + "norm1"),
        (_HB + "norm2.norm", _B + "norm2"),
        (_HB + "attn1.to_out.0", _B + "self_atten.proj_out"),
        (_HB + "ff.net.0.proj", _B + "ff.net.0.proj"),
        (_HB + "ff.net.2", _B + "ff.net.2"),
    ]],
    *[Fuse(_B + f"self_atten.proj_qkv.{p}",
           tuple(_HB + f"attn1.to_{x}.{p}" for x in "qkv"), 1, ((0, 0), (1, 0), (2, 0)))
      for p in ("weight", "bias")],
    *[Fuse(_B + f"scale_shift_table.1.{p}",
           (_HB + f"norm1.linear.{p}", _HB + f"norm2.linear.{p}"), 6,
           ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
            (0, 3), (0, 4), (0, 5), (1, 3), (1, 4), (1, 5)))
      for p in ("weight", "bias")],
]


def _compile(pattern: str, tail: bool) -> re.Pattern:
    body = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile("^" + body + (r"(?P<rest>\..+)?$" if tail else "$"))


class NameMap:
    """Translate names between one format's table and MM names, both ways.

    Renames carry the suffix after the prefix (``.weight``, ``.bias``); fusions are exact
    names with ``{i}``.
    """

    def __init__(self, table: list[Rename | Fuse]) -> None:
        self.renames = [r for r in table if isinstance(r, Rename)]
        self.fusions = [f for f in table if isinstance(f, Fuse)]
        self._fwd = [(_compile(r.source, True), r.mm) for r in self.renames]
        self._back = [(_compile(r.mm, True), r.source) for r in self.renames]
        self._fuse_parts = [(_compile(p, False), f, k) for f in self.fusions
                            for k, p in enumerate(f.parts)]
        self._fuse_mm = [(_compile(f.mm, False), f) for f in self.fusions]

    @staticmethod
    def _fill(pattern: str, match: re.Match) -> str:
        index = match.groupdict().get("i")
        return pattern.replace("{i}", index) if index is not None else pattern

    def to_mm(self, name: str) -> str | None:
        """The MM name of a renamed format tensor, or None (fused part or unknown)."""
        for regex, target in self._fwd:
            match = regex.match(name)
            if match:
                return self._fill(target, match) + (match.group("rest") or "")
        return None

    def fused_part(self, name: str) -> tuple[str, int] | None:
        """(MM name, part index) when ``name`` is one part of a fused MM tensor."""
        for regex, fuse, k in self._fuse_parts:
            match = regex.match(name)
            if match:
                return self._fill(fuse.mm, match), k
        return None

    def from_mm(self, mm_name: str) -> tuple[str, ...] | None:
        """The format name(s) of an MM tensor: one for a rename, all parts for a fusion."""
        for regex, fuse in self._fuse_mm:
            match = regex.match(mm_name)
            if match:
                return tuple(self._fill(p, match) for p in fuse.parts)
        for regex, source in self._back:
            match = regex.match(mm_name)
            if match:
                return (self._fill(source, match) + (match.group("rest") or ""),)
        return None

    def fusion_of(self, mm_name: str) -> Fuse | None:
        """The fusion rule that builds ``mm_name``, if any."""
        for regex, fuse in self._fuse_mm:
            if regex.match(mm_name):
                return fuse
        return None


SAT_MAP = NameMap(SAT_TABLE)
HF_MAP = NameMap(HF_TABLE)
