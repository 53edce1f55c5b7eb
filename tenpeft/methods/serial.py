"""Serial bottleneck adapters after the attention and FFN outputs (Houlsby positions):
``adapter`` (dense) and ``loretta_adp`` (TT-tensorized down/up maps, trained norms)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import TenpeftError
from ..layouts.bottleneck import TensorizedLinear
from ..placements import ACTIVATIONS, SerialAdapter
from ..shapes import check_explicit_shapes, check_shapes_used
from .base import BuildContext, MethodConfig, Plan, check_positive
from .per_target import tensorized_count


@dataclass
class AdapterConfig(MethodConfig):
    """Houlsby adapter: ``h + up(act(down(h)))`` after each targeted output linear; ``up`` is zero
    at init. ``format="dense"`` is the classic adapter; any format tensorizes both maps."""

    roles: Sequence[str] = ("o", "ffn_out")
    bottleneck: int = 64
    activation: str = "relu"
    format: str = "dense"
    rank: int = 1
    shapes: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "bottleneck", "rank")
        if self.activation not in ACTIVATIONS:
            raise TenpeftError(f"activation={self.activation!r} is not one of {ACTIVATIONS}")
        check_explicit_shapes(self.shapes)


@dataclass
class LorettaAdpConfig(AdapterConfig):
    """LoRETTA_adp: TT-tensorized adapters (768->64->768, TT rank 5, shape [8,8,12,8,8]),
    trained LayerNorms, tensorized classifier head."""

    format: str = "tt"
    rank: int = 5
    train_norms: bool = True
    head: str = "tt"


def build_serial(ctx: BuildContext) -> Plan:
    c, plan = ctx.config, Plan()
    if c.format != "dense":
        check_shapes_used(c.shapes, {m for t in ctx.targets for m in ((c.bottleneck, t.out_features),
                                                                        (t.out_features, c.bottleneck))})
    elif c.shapes:
        raise TenpeftError("shapes= only applies to tensorized formats; the dense adapter has none")
    for t in ctx.targets:
        if t.out_slice is not None:
            raise TenpeftError(f"a serial adapter goes after a whole output linear, not a slice of {t.name}; "
                               f"use roles like 'o' and 'ffn_out'")
        common = dict(shapes=c.shapes, **ctx.placement(t))
        down = TensorizedLinear(t.out_features, c.bottleneck, c.format, c.rank, zero=False, **common)
        up = TensorizedLinear(c.bottleneck, t.out_features, c.format, c.rank, zero=True, **common)
        plan.replacements[t.name] = SerialAdapter(ctx.modules[t.name], down, up, c.activation)
    return plan


def serial_formula(ctx: BuildContext) -> dict[str, int]:
    c = ctx.config
    return {"factors": sum(tensorized_count(c.format, c.bottleneck, t.out_features, c.rank, c.shapes)
                           + tensorized_count(c.format, t.out_features, c.bottleneck, c.rank, c.shapes)
                           + c.bottleneck + t.out_features for t in ctx.targets)}
