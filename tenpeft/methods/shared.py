"""Shared-tensor methods: one factorized tensor holds the updates of a group of matrix types across
all layers (``tenpeft.layouts.shared``). ``lorta`` (CP), ``lorta_tucker`` and ``lorta_tt`` hold the
attention group as ``(d, d_H, H, L, M)``; ``shared_ffn`` holds the FFN group as ``(d, d_ff, L, M)``.

A new preset is a config subclass (its ``roles``, ``format``, and the class attributes
``head_mode`` and ``shared_key``) registered with ``build_shared`` and ``shared_formula``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..errors import TenpeftError
from ..formats import RankSpec, get_format
from ..layouts.shared import SharedTensorUpdate, lorta_init, shared_group
from ..layouts.stack import StackLayout
from ..structure import ATTENTION_ROLES
from .base import BuildContext, MethodConfig, Plan, check_alpha_or_scale, check_positive, parallel_plan, scale_from_alpha

SHARED_INITS = ("default", "std", "lorta")


@dataclass
class SharedTensorConfig(MethodConfig):
    """One tensor in ``format`` of rank ``rank`` (int, per-mode tuple, fraction or budget) over the
    ``roles``' updates in every layer (M = the number of roles present); every update is multiplied
    by ``alpha / rank`` when ``alpha`` is given (LoRA's rule; the CP rank once resolved), else by
    ``scale``. The zeroed factor is ``zero_factor`` (default: for CP the second factor, the head-dim /
    other-side one, as LoRA's B; else the format's default: the Tucker core, the last TT core).
    ``init``: ``"std"`` draws the other factors so the reconstruction has std 0.02 (tltorch's rule);
    ``"lorta"`` (CP only) is the official LoRTA code's: the model-dim factor ``A`` Kaiming-uniform
    ``U(±1/sqrt(r))``, the index factors ``C_H, C_L, C_M`` ``U(±sqrt(6/r))``; ``"default"``:
    ``"lorta"`` for CP, ``"std"`` for any other format.
    Class attributes (not saved hyperparameters): ``head_mode`` (a head mode, attention only) and
    ``shared_key`` (the name under ``model.tenpeft_shared``)."""

    head_mode: ClassVar[bool] = False
    shared_key: ClassVar[str] = "shared"

    roles: Sequence[str] = ("ffn",)
    rank: RankSpec = 4
    format: str = "cp"
    scale: float = 1.0
    alpha: float | None = None
    init: str = "std"
    zero_factor: str | None = "default"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")
        check_alpha_or_scale(self)
        if self.init not in SHARED_INITS:
            raise TenpeftError(f"init={self.init!r} is not one of {SHARED_INITS}")
        if self.init == "lorta" and self.format != "cp":
            raise TenpeftError(f"init='lorta' is the official LoRTA init of a CP tensor; format={self.format!r} "
                               f"needs init='std'")


@dataclass
class SharedFFNConfig(SharedTensorConfig):
    """``shared_ffn``: every FFN update (gate, up/in, down/out) as slices of one ``(d, d_ff, L, M)`` tensor."""

    shared_key: ClassVar[str] = "ffn"


@dataclass
class LortaConfig(SharedTensorConfig):
    """LoRTA: the attention updates as one ``(d, d_H, H, L, M)`` tensor, by default as the official
    code builds it: CP of rank 4, ``alpha=8`` (scale ``alpha / rank``), the official init."""

    head_mode: ClassVar[bool] = True
    shared_key: ClassVar[str] = "attention"

    roles: Sequence[str] = ATTENTION_ROLES
    alpha: float | None = 8.0
    init: str = "default"


@dataclass
class LortaTuckerConfig(LortaConfig):
    """The LoRTA layout in Tucker format (tenpeft's; no official code): scale 1, the 0.02-std init."""

    format: str = "tucker"
    alpha: float | None = None
    init: str = "std"


@dataclass
class LortaTTConfig(LortaConfig):
    """The LoRTA layout in TT format (tenpeft's; no official code): scale 1, the 0.02-std init."""

    format: str = "tt"
    alpha: float | None = None
    init: str = "std"


def _group(ctx: BuildContext) -> tuple[StackLayout, tuple[int, ...]]:
    """The layout of the one shared tensor and its shape."""
    layout = shared_group(ctx.structure, ctx.targets, type(ctx.config).head_mode)
    return layout, layout.shape(ctx.targets[0].role)


def _zero_factor(c: SharedTensorConfig) -> str | None:
    if c.zero_factor == "default" and c.format == "cp":
        return "factor_1"  # the head-dim (other-side) factor B, as LoRA's B
    return c.zero_factor


def _scale(c: SharedTensorConfig, shape) -> float:
    """``alpha / rank`` (the CP rank once resolved: a budget or fraction gives one int) or ``scale``."""
    rank = c.rank
    if c.alpha is not None and c.format == "cp" and not isinstance(rank, int):
        rank = get_format("cp").resolve_rank(shape, rank)[0]
    return scale_from_alpha(c.alpha, rank, c.scale)


def build_shared(ctx: BuildContext) -> Plan:
    """The shared tensor (registered once as ``plan.shared[shared_key]``) and one update per target."""
    c, (layout, shape) = ctx.config, _group(ctx)
    scale = _scale(c, shape)
    shared = get_format(c.format)(shape, c.rank, zero_factor=_zero_factor(c), seed=c.seed,
                                  **ctx.placement(ctx.targets[0]))
    if c.init == "lorta" or (c.init == "default" and c.format == "cp"):
        lorta_init(shared)
    plan = parallel_plan(ctx, lambda t: SharedTensorUpdate(shared, layout, t, scale))
    plan.shared = {type(c).shared_key: shared}
    return plan


def shared_formula(ctx: BuildContext) -> dict[str, int]:
    """``count(format, shape, rank)``: CP ``r (d + d_H + H + L + M)`` or ``r (d + n + L + M)``."""
    fmt, shape = get_format(ctx.config.format), _group(ctx)[1]
    return {"shared_factors": fmt.count(shape, fmt.resolve_rank(shape, ctx.config.rank))}
