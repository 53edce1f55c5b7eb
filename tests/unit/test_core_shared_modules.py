"""An update declares the shared modules it reads (``Update.shared_modules``), and the stale-merge check
uses that declaration, whatever attribute the update keeps them under."""
import dataclasses
import math

import pytest
import torch
from torch import nn

import tenpeft
from helpers import logits, train_steps
from models import tiny_batch, tiny_model
from tenpeft import Method, MethodConfig
from tenpeft.formats import CP
from tenpeft.methods.base import parallel_plan
from tenpeft.placements import ParallelUpdate, Update


class PooledUpdate(Update):
    """``ΔW = diag(s) B A`` with ``B``, ``A`` one CP pool shared by every target of one size (a user layout
    that keeps the shared factor under an unusual attribute name)."""

    def __init__(self, pool: CP, declare: bool = True):
        super().__init__()
        object.__setattr__(self, "_the_pool_of_factors", pool)  # a reference, not a child: stored once
        self.declare = declare
        self.out_features, self.in_features = pool.shape
        self.s = nn.Parameter(torch.zeros(self.out_features))

    def shared_modules(self):
        return (self._the_pool_of_factors,) if self.declare else ()

    def forward(self, x):
        pool = self._the_pool_of_factors
        return (x @ pool.factor_1) @ (pool.factor_0 * self.s[:, None]).T

    def delta_weight(self):
        return self._the_pool_of_factors.reconstruct() * self.s[:, None]


@dataclasses.dataclass
class PooledConfig(MethodConfig):
    rank: int = 2
    declare: bool = True


def _build(ctx):
    pools = {}
    for t in ctx.targets:
        key = f"pool_{t.out_features}x{t.in_features}"
        if key not in pools:
            pools[key] = CP((t.out_features, t.in_features), ctx.config.rank, zero_factor=None,
                            factor_std=1 / math.sqrt(t.in_features))
    plan = parallel_plan(ctx, lambda t: PooledUpdate(pools[f"pool_{t.out_features}x{t.in_features}"],
                                                     ctx.config.declare))
    plan.shared = pools
    return plan


def _formula(ctx):
    pools = {(t.out_features, t.in_features) for t in ctx.targets}
    return {"factors": sum(t.out_features for t in ctx.targets),
            "shared_factors": sum(ctx.config.rank * (o + i) for o, i in pools)}


@pytest.fixture
def pooled():
    method = tenpeft.register_method(Method("pooled", PooledConfig, _build, _formula, "parallel"))
    yield method
    tenpeft.METHODS.pop(method.name)


def test_a_user_update_with_an_oddly_named_shared_factor_detects_a_stale_merge(pooled):
    model = tenpeft.inject(tiny_model("llama"), "pooled")
    batch = tiny_batch(model)
    train_steps(model, batch, steps=2)
    assert tenpeft.parameter_report(model).matches_formula
    tenpeft.merge(model)
    logits(model, batch)  # merged and unchanged: fine
    with torch.no_grad():
        next(iter(model.tenpeft_shared.values())).factor_0.add_(1.0)  # the shared factor, in place
    with pytest.raises(RuntimeError, match="merged weights are stale"):
        logits(model, batch)
    with pytest.raises(tenpeft.TenpeftError, match="changed while merged"):
        tenpeft.unmerge(model)


def test_a_shared_module_no_update_declares_is_refused_at_injection(pooled):
    from helpers import assert_untouched, fingerprint

    model = tiny_model("llama")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match=r"pooled keeps shared module\(s\) \['pool_.*'\] that no update "
                                                   r"declares in Update.shared_modules\(\)"):
        tenpeft.inject(model, "pooled", declare=False)
    assert_untouched(model, before)


def test_a_declared_shared_module_must_be_registered(pooled):
    orphan = CP((48, 48), 2)

    def build(ctx):
        plan = _build(ctx)
        first = next(iter(plan.replacements.values())).updates[0]
        object.__setattr__(first, "_the_pool_of_factors", orphan)
        return plan

    tenpeft.register_method(dataclasses.replace(pooled, build=build))
    with pytest.raises(tenpeft.TenpeftError, match=r"declares a shared CP module that the plan does not register"):
        tenpeft.inject(tiny_model("llama"), "pooled", roles=("q",))


def test_the_default_declares_nothing_and_built_in_layouts_declare_theirs():
    assert Update().shared_modules() == ()
    for method in ("lorta", "vera", "nola"):
        model = tenpeft.inject(tiny_model("llama"), method)
        shared = {id(m) for m in model.tenpeft_shared.values()}
        declared = [s for w in model.modules() if isinstance(w, ParallelUpdate) for u in w.updates
                    for s in u.shared_modules()]
        assert declared and {id(s) for s in declared} == shared, method
