"""LoRTA and its siblings: one factorized 5th-order tensor ``(d, d_H, H, L, M)`` holds every
attention update; ``lorta`` (CP), ``lorta_tucker`` and ``lorta_tt`` differ only in the format."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import TenpeftError
from ..formats import RankSpec, get_format
from ..layouts.shared import SharedTensorUpdate, shared_tensor_shape
from ..structure import ATTENTION_ROLES
from .base import BuildContext, MethodConfig, Plan, check_positive, parallel_plan


@dataclass
class LortaConfig(MethodConfig):
    """LoRTA: ``T`` in ``format`` of rank ``rank`` (int, per-mode tuple, fraction or budget) over
    the attention ``roles`` (M = their number); ``scale`` multiplies every update. The zeroed
    factor is ``zero_factor`` (default: the head-dim factor for CP, the core for Tucker, the last
    core for TT)."""

    roles: Sequence[str] = ATTENTION_ROLES
    rank: RankSpec = 4
    format: str = "cp"
    scale: float = 1.0
    zero_factor: str | None = "default"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")


@dataclass
class LortaTuckerConfig(LortaConfig):
    format: str = "tucker"


@dataclass
class LortaTTConfig(LortaConfig):
    format: str = "tt"


def _matrix_types(ctx: BuildContext) -> tuple[str, ...]:
    """The M mode: the attention roles present, in Q, K, V, O order."""
    roles = {t.role for t in ctx.targets}
    bad = sorted(roles - set(ATTENTION_ROLES))
    if bad:
        raise TenpeftError(f"the shared attention tensor holds Q/K/V/O updates only; targets of type {bad} "
                           f"cannot join it (use roles from {ATTENTION_ROLES})")
    return tuple(r for r in ATTENTION_ROLES if r in roles)


def _zero_factor(c: LortaConfig) -> str | None:
    if c.zero_factor == "default" and c.format == "cp":
        return "factor_1"  # the head-dim factor B, as LoRA's B
    return c.zero_factor


def build_shared(ctx: BuildContext) -> Plan:
    c, s = ctx.config, ctx.structure
    types = _matrix_types(ctx)
    shape = shared_tensor_shape(s, len(types))
    shared = get_format(c.format)(shape, c.rank, zero_factor=_zero_factor(c), seed=c.seed,
                                  **ctx.placement(ctx.targets[0]))
    plan = parallel_plan(ctx, lambda t: SharedTensorUpdate(shared, s, t.role, t.layer, types.index(t.role),
                                                           c.scale))
    plan.shared = {"attention": shared}
    return plan


def shared_formula(ctx: BuildContext) -> dict[str, int]:
    fmt = get_format(ctx.config.format)
    shape = shared_tensor_shape(ctx.structure, len(_matrix_types(ctx)))
    return {"shared_factors": fmt.count(shape, fmt.resolve_rank(shape, ctx.config.rank))}
