"""Layer-stacked methods: VeRA and NOLA (frozen random factors shared across layers)."""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from ..errors import TenpeftError
from ..layouts.stacked import NolaBases, NolaUpdate, VeraUpdate, vera_shared
from .base import BuildContext, MethodConfig, Plan, check_positive, parallel_plan


def _role_groups(ctx: BuildContext) -> dict[str, tuple[int, int]]:
    """Matrix type -> (in, out); every target of a type must share its dims."""
    groups: dict[str, tuple[int, int]] = {}
    for t in ctx.targets:
        dims = groups.setdefault(t.role, (t.in_features, t.out_features))
        if dims != (t.in_features, t.out_features):
            raise TenpeftError(f"targets of type {t.role!r} differ in size ({dims} vs {t.name}); "
                               f"name modules of one size per pattern in target_modules")
    return groups


def shared_key(method: str, role: str) -> str:
    """Module name of a matrix type's shared factors (hand-named roles hold dots and ``*``)."""
    return f"{method}_" + re.sub(r"\W", "_", role)


def role_seed(seed: int, role: str) -> int:
    """Seed of the frozen factors of one matrix type (stable across runs and machines)."""
    return seed * 100003 + zlib.crc32(role.encode()) % 100003


def _num_layers(ctx: BuildContext) -> int:
    if ctx.structure is not None:
        return ctx.structure.num_layers
    return 1 + max((t.layer or 0) for t in ctx.targets)


@dataclass
class VeraConfig(MethodConfig):
    """VeRA: shared frozen ``A (rank x in)``, ``B (out x rank)`` per matrix type; trained ``d_l``
    (init ``d_init``) and ``b_l`` (init 0)."""

    rank: int = 256
    d_init: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")


def build_vera(ctx: BuildContext) -> Plan:
    c, layers = ctx.config, _num_layers(ctx)
    shared = {}
    for role, (in_f, out_f) in _role_groups(ctx).items():
        first = next(t for t in ctx.targets if t.role == role)
        shared[role] = vera_shared(in_f, out_f, layers, c.rank, c.d_init, role_seed(c.seed, role),
                                   **ctx.placement(first))
    plan = parallel_plan(ctx, lambda t: VeraUpdate(shared[t.role], t.layer or 0))
    plan.shared = {shared_key("vera", role): s for role, s in shared.items()}
    return plan


def vera_formula(ctx: BuildContext) -> dict[str, int]:
    groups = _role_groups(ctx)
    return {"factors": sum(t.out_features for t in ctx.targets),
            "shared_factors": len(groups) * _num_layers(ctx) * ctx.config.rank}


@dataclass
class NolaConfig(MethodConfig):
    """NOLA: ``ΔW_l = scale * (sum_i α_il A_i)(sum_j β_jl B_j)`` with ``num_bases`` frozen random
    bases of rank ``rank`` per matrix type."""

    rank: int = 8
    num_bases: int = 64
    scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank", "num_bases")


def build_nola(ctx: BuildContext) -> Plan:
    c = ctx.config
    bases = {}
    for role, (in_f, out_f) in _role_groups(ctx).items():
        first = next(t for t in ctx.targets if t.role == role)
        bases[role] = NolaBases(in_f, out_f, c.rank, c.num_bases, role_seed(c.seed, role), **ctx.placement(first))
    plan = parallel_plan(ctx, lambda t: NolaUpdate(bases[t.role], c.scale))
    plan.shared = {shared_key("nola", role): b for role, b in bases.items()}
    return plan


def nola_formula(ctx: BuildContext) -> dict[str, int]:
    return {"factors": 2 * ctx.config.num_bases * len(ctx.targets)}
