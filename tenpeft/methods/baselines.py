"""Baselines: BitFit (train every bias of the backbone) and full fine-tuning."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import TenpeftError
from ..structure import linear_dims
from .base import BuildContext, MethodConfig, Plan


def _outside_head(ctx: BuildContext, name: str) -> bool:
    return not name.startswith(tuple(f"{h}." for h in ctx.head))


def _in_norm(ctx: BuildContext, name: str) -> bool:
    return name.rpartition(".")[0] in ctx.norms


@dataclass
class BitfitConfig(MethodConfig):
    """BitFit: every bias of the backbone (linears and norms) is trained; the task head as ``head``."""

    roles: tuple = ()


def build_bitfit(ctx: BuildContext) -> Plan:
    biases = {n: "biases" for n, p in ctx.model.named_parameters()
              if n.endswith(".bias") and _outside_head(ctx, n)}
    if not biases:
        raise TenpeftError(f"bitfit found no bias parameters in {type(ctx.model).__name__} (e.g. LLaMA has "
                           f"none); pick another method or a model with biases")
    return Plan(trainable=biases)


def bitfit_formula(ctx: BuildContext) -> dict[str, int]:
    """Closed form from module sizes: a biased linear has ``out`` biases, a norm its width."""
    total = 0
    for name, module in ctx.modules.items():
        if not _outside_head(ctx, name + "."):
            continue
        dims = linear_dims(module)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            total += dims[1] if dims else int(getattr(module, "normalized_shape", bias.shape)[0])
    return {"biases": total}


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: every parameter of the model is trained (a baseline)."""

    roles: tuple = ()


def build_full(ctx: BuildContext) -> Plan:
    return Plan(trainable={n: "norms" if _in_norm(ctx, n) else "base"
                           for n, _ in ctx.model.named_parameters() if _outside_head(ctx, n)})


def full_formula(ctx: BuildContext) -> dict[str, int]:
    """Every distinct parameter tensor outside the head (tied weights once)."""
    counts = {"base": 0, "norms": 0}
    for name, p in ctx.model.named_parameters():
        if _outside_head(ctx, name):
            counts["norms" if _in_norm(ctx, name) else "base"] += p.numel()
    return counts
