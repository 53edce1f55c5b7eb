"""The task head and trained norms: one strategy, the same for every method, planned by the engine
after the method's own ``build``.

* ``head`` (task heads only: sequence/token classification, QA, multiple choice): ``"dense"`` trains
  the head; ``"frozen"`` leaves it; ``"tt"`` gives every square linear of the head a TT update of
  rank ``head_rank`` over ``head_shape`` (automatic by default; LoRETTA's tensorized classifier),
  zero at init, and trains the rest of the head. The square linear's frozen base weight is stored
  with the adapter (it is new and random, so it cannot be rebuilt).
* ``train_norms``: every LayerNorm/RMSNorm outside the head is trained (component ``norms``),
  unless the method declares ``trains_norms`` (its own plan decides about the norms); a norm
  parameter the method's plan already trains is not added again (BitFit's biases).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .errors import TenpeftError
from .formats import get_format
from .layouts.bottleneck import TensorizedUpdate
from .placements import ParallelUpdate
from .shapes import matrix_shape

if TYPE_CHECKING:
    from .methods.base import BuildContext, Plan


def add_head_and_norms(ctx: BuildContext, plan: Plan, expected: dict[str, int], trains_norms: bool) -> None:
    """Add the trained norms and the task head of ``ctx.config`` to ``plan`` and their closed-form
    counts to ``expected`` (the model is not touched); ``trains_norms``: the method's own property."""
    if ctx.config.train_norms and not trains_norms:
        _add_norms(ctx, plan, expected)
    _add_head(ctx, plan, expected)


def _count(expected: dict[str, int], component: str, n: int) -> None:
    expected[component] = expected.get(component, 0) + n


def _add_norms(ctx: BuildContext, plan: Plan, expected: dict[str, int]) -> None:
    for name in ctx.norms:
        for pname, p in ctx.modules[name].named_parameters(recurse=False):
            if f"{name}.{pname}" not in plan.trainable:  # bitfit already trains norm biases
                plan.trainable[f"{name}.{pname}"] = "norms"
                _count(expected, "norms", p.numel())


def _square_linears(ctx: BuildContext) -> dict[str, nn.Linear]:
    """The head's square linears that ``head="tt"`` tensorizes, by module name."""
    if ctx.config.head != "tt":
        return {}
    return {f"{h}.{n}" if n else h: m for h in ctx.head for n, m in ctx.modules[h].named_modules()
            if isinstance(m, nn.Linear) and m.in_features == m.out_features}


def _add_head(ctx: BuildContext, plan: Plan, expected: dict[str, int]) -> None:
    c = ctx.config
    squares = _square_linears(ctx)
    if c.head_shape is not None and not squares:
        raise TenpeftError(f"head_shape={list(c.head_shape)} applies only with head='tt' on a task head that has "
                           f"a square linear (this model's head: {ctx.head or 'none'}); drop head_shape")
    if not ctx.head or c.head == "frozen":
        return
    for h in ctx.head:
        for pname, p in ctx.modules[h].named_parameters():
            full = f"{h}.{pname}"
            if full.rpartition(".")[0] in squares:
                plan.stored.append(full)
            else:
                plan.trainable[full] = "head"
                _count(expected, "head", p.numel())
    tt = get_format("tt")
    for name, linear in squares.items():
        width = linear.in_features
        shape = matrix_shape(width, width, {f"{width}x{width}": c.head_shape} if c.head_shape else None)
        update = TensorizedUpdate(width, c.head_rank, shape, **ctx.placement_of(linear))
        plan.replacements[name] = ParallelUpdate(linear, [update], [None])
        _count(expected, "head", tt.count(shape, tt.resolve_rank(shape, c.head_rank)))
