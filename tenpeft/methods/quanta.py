"""QuanTA as a per-target method: every target's ``ΔW`` a circuit of gates (format ``quanta``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..formats import get_format
from ..layouts.per_matrix import MatrixUpdate
from ..shapes import check_explicit_shapes, check_shapes_used, explicit_shape, split_into
from .base import BuildContext, MethodConfig, Plan, check_positive, parallel_plan


@dataclass
class QuantaConfig(MethodConfig):
    """QuanTA: ``ΔW = scale * circuit`` over ``axes`` output and ``axes`` input axes, each side split
    as evenly as its size allows (``split_into``) unless ``shapes={"OUTxIN": [o_1.., i_1..]}`` names
    it (the official LLaMA-7B runs: ``{"4096x4096": [16, 8, 8, 4, 16, 8, 8, 4]}``). Official
    defaults: Q and V, 4 axes, scale 1."""

    axes: int = 4
    scale: float = 1.0
    shapes: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "axes")
        check_explicit_shapes(self.shapes)


def _shape(c: QuantaConfig, target) -> tuple[int, ...]:
    shape = explicit_shape(target.out_features, target.in_features, c.shapes)
    return shape if shape is not None else split_into(target.out_features, c.axes) + split_into(target.in_features, c.axes)


def build_quanta(ctx: BuildContext) -> Plan:
    c = ctx.config
    check_shapes_used(c.shapes, {(t.out_features, t.in_features) for t in ctx.targets})
    return parallel_plan(ctx, lambda t: MatrixUpdate(t.in_features, t.out_features, "quanta", 1, scale=c.scale,
                                                     shape=_shape(c, t), **ctx.placement(t)))


def quanta_formula(ctx: BuildContext) -> dict[str, int]:
    fmt = get_format("quanta")
    return {"factors": sum(fmt.count(_shape(ctx.config, t), (1,)) for t in ctx.targets)}
