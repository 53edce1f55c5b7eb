"""Per-target parallel methods: LoRA (per-matrix CP), KronA/LoKr (per-matrix Kronecker) and LoRETTA_rep
(TT-tensorized bottleneck)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..formats import get_format
from ..formats.kron import kron_factor_pair, lokr_init
from ..layouts.bottleneck import BottleneckUpdate
from ..layouts.per_matrix import MatrixUpdate
from ..shapes import check_explicit_shapes, check_shapes_used, explicit_shape, matrix_shape
from .base import (BuildContext, MethodConfig, Plan, check_alpha_or_scale, check_positive, parallel_plan,
                   scale_from_alpha)


@dataclass
class LoraConfig(MethodConfig):
    """LoRA: ``ΔW = (alpha/rank) B A`` (CP of the matrix). ``format`` may be any registered format.
    ``shapes={"OUTxIN": [o_1, .., i_1, ..]}`` tensorizes the matrices of that size: ``ΔW`` is the
    row-major view of a tensor of that shape (row factors first, product ``OUT``, then column
    factors), held in ``format``; other sizes stay ``(out, in)``."""

    rank: int = 8
    alpha: float | None = None
    scale: float = 1.0
    format: str = "cp"
    shapes: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")
        check_alpha_or_scale(self)
        check_explicit_shapes(self.shapes)

    def default_shape(self, out_features: int, in_features: int) -> tuple[int, ...]:
        """The tensor shape of a matrix whose size ``shapes`` does not name: ``(out, in)``."""
        return (out_features, in_features)

    def official_init(self, tensor) -> None:
        """Draw a non-CP tensor's factors as the method's official code does (LoRA: keep tenpeft's rule)."""


@dataclass
class KronaConfig(LoraConfig):
    """KronA / LoKr: ``ΔW = (alpha / rank) kron(A, B)`` per target (format ``kron``): ``A (o1 x i1)``
    zero at init, ``B (o2 x i2)`` low-rank ``B_a B_b`` when ``rank < max(o2, i2) / 2``; ``out = o1 o2`` and
    ``in = i1 i2`` split by LoKr's rule (``decompose_factor``: -1 the pair closest to the square root)
    unless ``shapes`` names the size. PEFT LoKr's defaults: rank 8, alpha 8, its Kaiming-uniform init."""

    format: str = "kron"
    alpha: float | None = 8.0
    decompose_factor: int = -1

    def default_shape(self, out_features: int, in_features: int) -> tuple[int, ...]:
        (o1, o2), (i1, i2) = (kron_factor_pair(n, self.decompose_factor) for n in (out_features, in_features))
        return (o1, o2, i1, i2)

    def official_init(self, tensor) -> None:
        if self.format == "kron":
            lokr_init(tensor)


def _lora_shape(c: LoraConfig, target) -> tuple[int, ...]:
    """The tensor ``ΔW`` of ``target`` is viewed as: ``shapes``' entry for its size, else ``c.default_shape``."""
    shape = explicit_shape(target.out_features, target.in_features, c.shapes)
    return shape if shape is not None else c.default_shape(target.out_features, target.in_features)


def build_lora(ctx: BuildContext) -> Plan:
    c = ctx.config
    scale = scale_from_alpha(c.alpha, c.rank, c.scale)
    check_shapes_used(c.shapes, {(t.out_features, t.in_features) for t in ctx.targets})

    def make(target):
        shape = _lora_shape(c, target)
        if c.format != "cp" or len(shape) != 2:
            update = MatrixUpdate(target.in_features, target.out_features, c.format, c.rank, scale=scale,
                                  shape=shape, **ctx.placement(target))
            c.official_init(update.factorization)
            return update
        # PEFT's LoRA init: B = factor_0 (out x r) zero, A^T = factor_1 ~ U(-1/sqrt(in), 1/sqrt(in))
        update = MatrixUpdate(target.in_features, target.out_features, "cp", c.rank, scale=scale,
                              zero_factor="factor_0", **ctx.placement(target))
        a = update.factorization.factor_1
        if not a.is_meta:
            with torch.no_grad():
                bound = 1 / math.sqrt(target.in_features)
                a.uniform_(-bound, bound)
        return update

    return parallel_plan(ctx, make)


def lora_formula(ctx: BuildContext) -> dict[str, int]:
    fmt = get_format(ctx.config.format)
    total = 0
    for t in ctx.targets:
        shape = _lora_shape(ctx.config, t)
        total += fmt.count(shape, fmt.resolve_rank(shape, ctx.config.rank))
    return {"factors": total}


@dataclass
class LorettaRepConfig(MethodConfig):
    """LoRETTA_rep: ``ΔW = (alpha / bottleneck) U V``, ``U (out x bottleneck)``, ``V (bottleneck x in)``
    each a TT of rank ``rank`` over an automatic shape (or ``shapes={"768x8": [8, 8, 12, 8], ...}``);
    ``alpha=None`` uses ``scale``. The defaults are the official code's: ``alpha=16`` over bottleneck 8
    (scale 2), the LayerNorms trained and the classifier's square linear tensorized (``head="tt"``)."""

    rank: int = 5
    bottleneck: int = 8
    alpha: float | None = 16.0
    scale: float = 1.0
    format: str = "tt"
    shapes: Mapping[str, Sequence[int]] | None = None
    train_norms: bool = True
    head: str = "tt"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank", "bottleneck")
        check_alpha_or_scale(self)
        check_explicit_shapes(self.shapes)


def build_loretta_rep(ctx: BuildContext) -> Plan:
    c = ctx.config
    check_shapes_used(c.shapes, {m for t in ctx.targets for m in ((t.out_features, c.bottleneck),
                                                                    (c.bottleneck, t.in_features))})
    scale = scale_from_alpha(c.alpha, c.bottleneck, c.scale)
    return parallel_plan(ctx, lambda t: BottleneckUpdate(
        t.in_features, t.out_features, c.format, c.rank, c.bottleneck, scale=scale, shapes=c.shapes,
        **ctx.placement(t)))


def tensorized_count(fmt_name: str, rows: int, cols: int, rank, shapes) -> int:
    """Closed-form parameter count of a ``rows x cols`` matrix held in ``fmt_name``."""
    fmt = get_format(fmt_name)
    shape = matrix_shape(rows, cols, shapes) if fmt_name != "dense" else (rows, cols)
    return fmt.count(shape, fmt.resolve_rank(shape, rank))


def loretta_rep_formula(ctx: BuildContext) -> dict[str, int]:
    c = ctx.config
    return {"factors": sum(tensorized_count(c.format, t.out_features, c.bottleneck, c.rank, c.shapes)
                           + tensorized_count(c.format, c.bottleneck, t.in_features, c.rank, c.shapes)
                           for t in ctx.targets)}
