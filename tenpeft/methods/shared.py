"""Shared-tensor methods: one factorized tensor holds the updates of a group of matrix types across
all layers (``tenpeft.layouts.shared``). ``lorta`` (CP), ``lorta_tucker`` and ``lorta_tt`` hold the
attention group as ``(d, d_H, H, L, M)``; ``shared_ffn`` holds the FFN group as ``(d, d_ff, L, M)``.

A new preset is a config subclass (its ``roles``, ``format``, and the class attributes
``head_mode`` and ``shared_key``) registered with ``build_shared`` and ``shared_formula``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..formats import RankSpec, get_format
from ..layouts.shared import SharedGroup, SharedTensorUpdate, shared_group
from ..structure import ATTENTION_ROLES
from .base import BuildContext, MethodConfig, Plan, check_positive, parallel_plan


@dataclass
class SharedTensorConfig(MethodConfig):
    """One tensor in ``format`` of rank ``rank`` (int, per-mode tuple, fraction or budget) over the
    ``roles``' updates in every layer (M = the number of roles present); ``scale`` multiplies every
    update. The zeroed factor is ``zero_factor`` (default: for CP the second factor, the head-dim /
    other-side one, as LoRA's B; else the format's default: the Tucker core, the last TT core).
    Class attributes (not saved hyperparameters): ``head_mode`` (a head mode, attention only) and
    ``shared_key`` (the name under ``model.tenpeft_shared``)."""

    head_mode: ClassVar[bool] = False
    shared_key: ClassVar[str] = "shared"

    roles: Sequence[str] = ("ffn",)
    rank: RankSpec = 4
    format: str = "cp"
    scale: float = 1.0
    zero_factor: str | None = "default"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")


@dataclass
class SharedFFNConfig(SharedTensorConfig):
    """``shared_ffn``: every FFN update (gate, up/in, down/out) as slices of one ``(d, d_ff, L, M)`` tensor."""

    shared_key: ClassVar[str] = "ffn"


@dataclass
class LortaConfig(SharedTensorConfig):
    """LoRTA: the attention updates as one ``(d, d_H, H, L, M)`` tensor (default CP of rank 4)."""

    head_mode: ClassVar[bool] = True
    shared_key: ClassVar[str] = "attention"

    roles: Sequence[str] = ATTENTION_ROLES


@dataclass
class LortaTuckerConfig(LortaConfig):
    format: str = "tucker"


@dataclass
class LortaTTConfig(LortaConfig):
    format: str = "tt"


def _group(ctx: BuildContext) -> SharedGroup:
    return shared_group(ctx.structure, ctx.targets, type(ctx.config).head_mode)


def _zero_factor(c: SharedTensorConfig) -> str | None:
    if c.zero_factor == "default" and c.format == "cp":
        return "factor_1"  # the head-dim (other-side) factor B, as LoRA's B
    return c.zero_factor


def build_shared(ctx: BuildContext) -> Plan:
    """The shared tensor (registered once as ``plan.shared[shared_key]``) and one update per target."""
    c, s, group = ctx.config, ctx.structure, _group(ctx)
    shared = get_format(c.format)(group.shape, c.rank, zero_factor=_zero_factor(c), seed=c.seed,
                                  **ctx.placement(ctx.targets[0]))
    plan = parallel_plan(ctx, lambda t: SharedTensorUpdate(shared, s, t.role, t.layer, group.types.index(t.role),
                                                           c.scale, head_mode=group.head_mode))
    plan.shared = {type(c).shared_key: shared}
    return plan


def shared_formula(ctx: BuildContext) -> dict[str, int]:
    """``count(format, shape, rank)``: CP ``r (d + d_H + H + L + M)`` or ``r (d + n + L + M)``."""
    fmt, shape = get_format(ctx.config.format), _group(ctx).shape
    return {"shared_factors": fmt.count(shape, fmt.resolve_rank(shape, ctx.config.rank))}
