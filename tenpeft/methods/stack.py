"""Stacked-block methods (``tenpeft.layouts.stack``): LoTR, FacT-TT, FacT-TK, MetaTT and TensLoRA.
Each is a config naming its modes, format and official init; ``build_stack`` and ``stack_formula``
are shared. Mode letters below: ``in``/``out`` the block sides, ``N = L * M`` the stack.

* LoTR (daskol/lotr): TT over ``(in, N, out)``: ``ΔW_{l,m} = (alpha / r) A G_{l,m} B^T`` with ``B``
  (input side) and ``A`` (output side) shared by every layer and matrix type, ``G`` zero at init.
* FacT-TT (JieShibo/PETL-ViT): the same TT over ``(in, N, out)`` of every block of every layer,
  ``ΔW_i = s U C_i V^T``, ``V`` zero at init.
* FacT-TK: Tucker over ``(in, out, N)``: ``ΔW_i = s U (C x_3 P[i]) V^T``, ``V`` zero at init.
* MetaTT: one TT over ``(in, layer, type, out)`` (``heads=True``: ``(in, layer, type, head, out)``).
* TensLoRA (ax-le/TensLoRA): Tucker over ``(in, out, [head], [type], [layer])``, the bracketed
  modes chosen by ``layout`` (``att`` heads, ``qkv`` types, ``depth`` layers), one tensor per value
  of every index that is not stacked; core zero at init, factors orthogonal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from ..errors import TenpeftError
from ..formats import RankSpec, get_format
from ..layouts.stack import StackLayout, StackUpdate, stack_layout
from .base import BuildContext, MethodConfig, Plan, check_alpha_or_scale, check_positive, parallel_plan, scale_from_alpha

STACK_INITS = ("default", "std")


@dataclass
class StackConfig(MethodConfig):
    """A tensor in ``format`` of rank ``rank`` (int, per-mode tuple, fraction or budget: per tensor)
    over the blocks of the ``roles`` laid out by ``modes()``; every update is multiplied by
    ``alpha / rank`` when ``alpha`` is given, else by ``scale``. ``init``: ``"default"`` the method's
    official init (``official_init``; in a format other than the method's own, tenpeft's rule),
    ``"std"`` tenpeft's rule (reconstruction std 0.02, the format's default factor zero). Class attributes: ``MODES`` (the modes in order), ``KEY`` (the name
    under ``model.tenpeft_shared``), ``ZERO`` (the factor zeroed at init, None: the format's)."""

    MODES: ClassVar[tuple[str, ...]] = ("in", "stack", "out")
    KEY: ClassVar[str] = "stack"
    ZERO: ClassVar[str | None] = None

    roles: Sequence[str] = ("all",)
    rank: RankSpec = 8
    format: str = "tt"
    alpha: float | None = None
    scale: float = 1.0
    init: str = "default"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rank")
        check_alpha_or_scale(self)
        if self.init not in STACK_INITS:
            raise TenpeftError(f"init={self.init!r} is not one of {STACK_INITS}")

    def modes(self) -> tuple[str, ...]:
        return self.MODES

    def rank_for(self, shape: tuple[int, ...]) -> RankSpec:
        """The rank spec of one tensor of ``shape`` (default: ``rank`` as given)."""
        return self.rank

    def official_init(self, tensor) -> None:
        """Draw the factors as the official code does (default: keep tenpeft's rule)."""


@torch.no_grad()
def _uniform(factor: torch.Tensor, bound: float) -> None:
    if not factor.is_meta:
        factor.uniform_(-bound, bound)


@dataclass
class LotrConfig(StackConfig):
    """LoTR: ``ΔW = (alpha / r) A G B^T``, one ``A``, ``B`` for every adapted matrix (official: Q, V
    of every layer), a zero ``r x r`` core ``G`` per matrix; ``A``, ``B`` ~ N(0, 1), ``alpha = 1``."""

    KEY: ClassVar[str] = "lotr"
    ZERO: ClassVar[str | None] = "core_1"

    roles: Sequence[str] = ("q", "v")
    rank: RankSpec = 8
    alpha: float | None = 1.0

    def official_init(self, tensor) -> None:
        for name in ("core_0", "core_2"):
            if not getattr(tensor, name).is_meta:
                nn.init.normal_(getattr(tensor, name))


@dataclass
class FactTTConfig(StackConfig):
    """FacT-TT: ``ΔW_i = s U C_i V^T`` over every d x d block of every layer (q, k, v, o and the FFN
    in blocks); ``U ~ U(±1/sqrt(d))``, ``C_i ~ U(±1/sqrt(r))`` (nn.Linear's init), ``V = 0``, ``s = 1``."""

    KEY: ClassVar[str] = "fact"

    def official_init(self, tensor) -> None:
        _uniform(tensor.core_0, 1 / math.sqrt(tensor.shape[0]))
        _uniform(tensor.core_1, 1 / math.sqrt(tensor.ranks[1]))


@dataclass
class FactTKConfig(StackConfig):
    """FacT-TK: Tucker over ``(in, out, N)``: ``ΔW_i = s U (C x_3 P[i]) V^T``, rank ``(r, r, r)``
    (official 16 or 32); ``U ~ U(±1/sqrt(d))``, ``C`` and ``P`` Xavier-uniform, ``V = 0``, ``s = 1``."""

    MODES: ClassVar[tuple[str, ...]] = ("in", "out", "stack")
    KEY: ClassVar[str] = "fact"
    ZERO: ClassVar[str | None] = "factor_1"

    rank: RankSpec = 32
    format: str = "tucker"

    def official_init(self, tensor) -> None:
        _uniform(tensor.factor_0, 1 / math.sqrt(tensor.shape[0]))
        for name in ("core", "factor_2"):
            if not getattr(tensor, name).is_meta:
                nn.init.xavier_uniform_(getattr(tensor, name))


@dataclass
class MetaTTConfig(StackConfig):
    """MetaTT: one TT over ``(in, layer, type, out)`` of every block (``heads=True``: attention only,
    ``(in, layer, type, head, out)``). No public code: tenpeft's init (last core zero), scale 1."""

    KEY: ClassVar[str] = "metatt"

    heads: bool = False
    rank: RankSpec = 8

    def modes(self) -> tuple[str, ...]:
        return ("in", "layer", "type", "head", "out") if self.heads else ("in", "layer", "type", "out")


TENSLORA_LAYOUTS = {"att": "head", "qkv": "type", "depth": "layer"}


@dataclass
class TensLoraConfig(StackConfig):
    """TensLoRA: Tucker over ``(in, out)`` and the modes ``layout`` stacks, joined by ``_`` from
    ``att`` (heads), ``qkv`` (matrix types), ``depth`` (layers), e.g. ``qkv_depth`` (one tensor) or
    ``att`` (one per matrix); rank per mode as a tuple. Official: Q, K, V; core zero, factors
    orthogonal, scale 1."""

    KEY: ClassVar[str] = "tenslora"

    roles: Sequence[str] = ("q", "k", "v")
    layout: str = "qkv_depth"
    rank: RankSpec = 4
    format: str = "tucker"

    def __post_init__(self):
        super().__post_init__()
        parts = self.layout.split("_")
        if not parts or any(p not in TENSLORA_LAYOUTS for p in parts) or len(set(parts)) != len(parts):
            raise TenpeftError(f"layout={self.layout!r}: join distinct names from {sorted(TENSLORA_LAYOUTS)} "
                               f"with '_', e.g. 'qkv_depth' or 'att_qkv_depth'")

    def modes(self) -> tuple[str, ...]:
        stacked = {TENSLORA_LAYOUTS[p] for p in self.layout.split("_")}
        return ("in", "out", *(m for m in ("head", "type", "layer") if m in stacked))

    def rank_for(self, shape: tuple[int, ...]) -> RankSpec:
        """An int rank of a Tucker tensor is capped at each mode's size (a larger rank adds parameters
        and nothing it can represent, e.g. rank 8 on the 3 matrix types)."""
        if self.format == "tucker" and isinstance(self.rank, int) and not isinstance(self.rank, bool):
            return tuple(min(self.rank, n) for n in shape)
        return self.rank

    def official_init(self, tensor) -> None:
        for name in tensor.factor_names:
            factor = getattr(tensor, name)
            if name != tensor.zero_factor and name != "core" and not factor.is_meta:
                nn.init.orthogonal_(factor)


def _default_format(c: StackConfig) -> str:
    return type(c).__dataclass_fields__["format"].default


def _layout(ctx: BuildContext) -> StackLayout:
    return stack_layout(ctx.structure, ctx.targets, ctx.config.modes())


def _scale(c: StackConfig, tensor) -> float:
    """``alpha / rank`` (a budget or fraction resolved to its largest rank) or ``scale``."""
    rank = c.rank
    if c.alpha is not None and not isinstance(rank, (int, tuple, list)):
        rank = max(tensor.ranks)
    return scale_from_alpha(c.alpha, rank, c.scale)


def build_stack(ctx: BuildContext) -> Plan:
    """One tensor per group (``plan.shared['<KEY>_<group>']``) and one update per target."""
    c, layout = ctx.config, _layout(ctx)
    fmt, tensors = get_format(c.format), {}
    official = c.init == "default" and c.format == _default_format(c)  # another format: tenpeft's rule
    for name, shape in layout.groups(ctx.targets).items():
        zero = type(c).ZERO if official and type(c).ZERO else "default"
        tensor = fmt(shape, c.rank_for(shape), zero_factor=zero, seed=c.seed, **ctx.placement(ctx.targets[0]))
        if official:
            c.official_init(tensor)
        tensors[name] = tensor
    scale = _scale(c, next(iter(tensors.values())))
    plan = parallel_plan(ctx, lambda t: StackUpdate(tensors[layout.group_of(t)], layout, t, scale))
    plan.shared = {f"{type(c).KEY}_{name}": tensor for name, tensor in tensors.items()}
    return plan


def stack_formula(ctx: BuildContext) -> dict[str, int]:
    """The sum over the groups' tensors of ``count(format, shape, rank)``."""
    fmt = get_format(ctx.config.format)
    groups = _layout(ctx).groups(ctx.targets)
    c = ctx.config
    return {"shared_factors": sum(fmt.count(s, fmt.resolve_rank(s, c.rank_for(s))) for s in groups.values())}

