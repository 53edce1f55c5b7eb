"""What a method is: a config dataclass, a ``build`` that plans new modules without touching the
model, and a closed-form ``formula`` for its trainable parameter count."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import TenpeftError
from ..placements import ParallelUpdate, Update
from ..structure import ModelStructure, Target

HEAD_MODES = ("dense", "tt", "frozen")  # what MethodConfig.head takes; tenpeft.heads plans each


@dataclass
class MethodConfig:
    """Hyperparameters every method takes.

    ``roles``: which linears to adapt by role (q, k, v, o, ffn_gate, ffn_in, ffn_out; aliases attn,
    ffn, all) on a known family. ``target_modules``: names/suffixes (list) or one regex (str)
    instead of roles; ``exclude_modules`` the same form. ``train_norms``: train LayerNorm/RMSNorm.
    ``head``: for task heads, ``dense`` (train it), ``tt`` (square head linear gets a TT update of
    rank ``head_rank`` over ``head_shape``, default automatic; the rest is trained) or ``frozen``
    (the head and norm strategy: ``tenpeft.heads``). ``seed``: frozen random factors.
    ``adapter_dtype``: dtype of adapter factors (``auto`` = the base weight's dtype).
    ``__post_init__`` checks these fields only; a subclass checks its own in its ``__post_init__``
    (``super().__post_init__()``, then e.g. ``check_positive(self, "rank")``).
    """

    roles: Sequence[str] = ("q", "v")
    target_modules: Sequence[str] | str | None = None
    exclude_modules: Sequence[str] | str | None = None
    train_norms: bool = False
    head: str = "dense"
    head_rank: int = 5
    head_shape: Sequence[int] | None = None
    seed: int = 0
    adapter_dtype: str = "float32"

    def __post_init__(self):
        if self.head not in HEAD_MODES:
            raise TenpeftError(f"head={self.head!r} is not one of {HEAD_MODES}")
        if isinstance(self.roles, str):
            self.roles = (self.roles,)
        self.roles = tuple(self.roles)
        check_positive(self, "head_rank")
        if self.head_shape is not None and not _positive_ints(self.head_shape):
            raise TenpeftError(f"head_shape must be a list of positive ints, got {self.head_shape!r}")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str) and not all(isinstance(v, str) for v in value):
                raise TenpeftError(f"{name} must be a list of module names or one regex string, got {value!r}")
        if self.adapter_dtype != "auto" and not isinstance(getattr(torch, self.adapter_dtype, None), torch.dtype):
            raise TenpeftError(f"adapter_dtype={self.adapter_dtype!r} is not a torch dtype name (or 'auto')")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BuildContext:
    """Everything a method's build needs; ``structure`` is None for an unknown family."""

    model: nn.Module
    config: MethodConfig
    structure: ModelStructure | None
    targets: list[Target]
    modules: dict[str, nn.Module]
    head: list[str] = field(default_factory=list)  # top-level modules of a task head
    norms: list[str] = field(default_factory=list)  # LayerNorm/RMSNorm modules outside the head

    def placement(self, target: Target) -> dict:
        """``dtype``/``device`` for the adapter of one target (fp32 factors by default)."""
        return self.placement_of(self.modules[target.name])

    def placement_of(self, module: nn.Module) -> dict:
        weight = module.weight
        dtype = getattr(torch, self.config.adapter_dtype) if self.config.adapter_dtype != "auto" else weight.dtype
        return {"dtype": dtype, "device": weight.device}


@dataclass
class Plan:
    """New modules and trainable flags, applied all at once by the engine (or not at all)."""

    replacements: dict[str, nn.Module] = field(default_factory=dict)
    shared: dict[str, nn.Module] = field(default_factory=dict)
    trainable: dict[str, str] = field(default_factory=dict)  # base parameter name -> component
    stored: list[str] = field(default_factory=list)  # frozen base parameters saved with the adapter


def check_positive(config, *names: str) -> None:
    """For a config's own fields: each named field that holds an int must be >= 1 (other values,
    e.g. a rank tuple or budget, are left to the format). Call it from the config's ``__post_init__``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise TenpeftError(f"{name} must be an int >= 1, got {value}")


def _positive_ints(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)


@dataclass(frozen=True)
class Method:
    """A registered method. ``formula(ctx)`` gives the closed-form trainable count per component.
    ``needs_structure``: needs layers/heads (a known family); ``uses_targets``: selects modules to
    adapt; ``trains_norms``: its own plan decides about the norms, so ``train_norms`` adds none."""

    name: str
    config: type[MethodConfig]
    build: Callable[[BuildContext], Plan]
    formula: Callable[[BuildContext], dict[str, int]]
    placement: str  # parallel | serial | base
    needs_structure: bool = False
    uses_targets: bool = True
    trains_norms: bool = False


def parallel_plan(ctx: BuildContext, make_update: Callable[[Target], Update]) -> Plan:
    """Wrap every targeted module in a ParallelUpdate holding one update per target (slice)."""
    plan = Plan()
    grouped: dict[str, list[Target]] = {}
    for target in ctx.targets:
        grouped.setdefault(target.name, []).append(target)
    for name, targets in grouped.items():
        updates = [make_update(t) for t in targets]
        plan.replacements[name] = ParallelUpdate(ctx.modules[name], updates, [t.out_slice for t in targets])
    return plan


def check_alpha_or_scale(config) -> None:
    """A config with both ``alpha`` and ``scale`` takes one of them (``alpha=None`` frees ``scale``)."""
    if config.alpha is not None and config.scale != 1.0:
        raise TenpeftError(f"give alpha (scale = alpha / rank) or scale, not both: alpha={config.alpha}, "
                           f"scale={config.scale}; set alpha=None to use scale")


def scale_from_alpha(alpha: float | None, rank, scale: float) -> float:
    """LoRA scaling ``alpha / rank`` when ``alpha`` is given (int rank only), else ``scale``."""
    if alpha is None:
        return scale
    if not isinstance(rank, int):
        raise TenpeftError(f"alpha needs an int rank (scale = alpha / rank); with rank={rank!r} give scale=")
    return alpha / rank
