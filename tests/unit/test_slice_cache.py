"""The shared tensor's slices contracted once per model forward (``tenpeft.layouts.shared.SliceCache``):
one contraction per forward, the same outputs and gradients as each update contracting its own slice,
under gradient checkpointing, two forwards before one backward, and never a stale value (an optimizer
step, a cast, a submodule called alone, a switch of named adapters)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import tenpeft
from tenpeft.formats.base import Factorization
from tenpeft.layouts.shared import SliceCache

from helpers import perturbed
from models import tiny_batch, tiny_model

SHARED = ["lorta", "lorta_tucker", "lorta_tt", "shared_ffn"]
FAMILIES = ["bert", "llama"]  # the tiny llama has grouped-query attention (4 heads, 2 KV heads)


@contextlib.contextmanager
def per_slice():
    """Every update contracts its own slice (the path without the cache)."""
    refresh = SliceCache.refresh
    SliceCache.refresh = lambda self: setattr(self, "value", None)
    try:
        yield
    finally:
        SliceCache.refresh = refresh


@contextlib.contextmanager
def counting_splits():
    """Count the calls of ``Factorization.mode_split`` (one per contraction of a shared tensor's slices)."""
    calls, split = [], Factorization.mode_split

    def counted(self, *args, **kwargs):
        calls.append(args)
        return split(self, *args, **kwargs)

    Factorization.mode_split = counted
    try:
        yield calls
    finally:
        Factorization.mode_split = split


def _adapted(family: str, method: str, seed: int = 3):
    """An adapted tiny model in float64, so the two contraction orders agree to rounding (about 1e-15)."""
    model = tiny_model(family)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    tenpeft.inject(model, method)
    torch.manual_seed(seed)
    return perturbed(model, 0.3).double()


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same(first, second) -> None:
    torch.testing.assert_close(first[0], second[0], atol=1e-12, rtol=0)
    assert first[1].keys() == second[1].keys()
    for name, grad in first[1].items():
        torch.testing.assert_close(grad, second[1][name], atol=1e-12, rtol=0, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", SHARED)
def test_one_contraction_per_forward_with_the_outputs_and_gradients_of_one_per_slice(family, method):
    model = _adapted(family, method)
    batch = tiny_batch(model)
    updates = sum(1 for m in model.modules() if type(m).__name__ == "SharedTensorUpdate")
    with counting_splits() as calls:
        cached = _loss_and_grads(model, batch)
    assert len(calls) == 1 and updates > 1  # one contraction for the whole model, not one per update
    with per_slice(), counting_splits() as calls:
        alone = _loss_and_grads(model, batch)
    assert len(calls) == updates
    _assert_same(cached, alone)
    assert any(g.abs().sum() > 0 for n, g in cached[1].items() if n.startswith("tenpeft_shared."))


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_recomputes_from_the_same_slices(family):
    model = _adapted(family, "lorta").train()
    batch = tiny_batch(model)
    plain = _loss_and_grads(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with counting_splits() as calls:
        checkpointed = _loss_and_grads(model, batch)
    assert len(calls) == 1  # the recomputed layers read the forward's slices
    _assert_same(checkpointed, plain)


def test_two_forwards_before_one_backward():
    model = _adapted("llama", "lorta")
    first, second = tiny_batch(model, seed=1), tiny_batch(model, seed=2)

    def both():
        model.zero_grad(set_to_none=True)
        (model(**first).loss + 2 * model(**second).loss).backward()
        return model(**first).logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                if p.requires_grad}

    cached = both()
    with per_slice():
        _assert_same(cached, both())


def _backbone(model):
    return getattr(model, model.base_model_prefix)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_submodule_called_alone_after_a_step_or_a_cast_reads_the_new_factors(family):
    model = _adapted(family, "lorta")
    ids = tiny_batch(model)["input_ids"]
    model(input_ids=ids)  # fills the cache
    with torch.no_grad():
        for p in model.tenpeft_shared.parameters():
            p.mul_(1.5)  # as an optimizer step: in place
    hidden = _backbone(model)(input_ids=ids).last_hidden_state
    with per_slice():
        expected = _backbone(model)(input_ids=ids).last_hidden_state
    torch.testing.assert_close(hidden, expected, atol=1e-12, rtol=0)

    model(input_ids=ids)
    model.float()
    hidden = _backbone(model)(input_ids=ids).last_hidden_state
    assert hidden.dtype == torch.float32
    with per_slice():
        torch.testing.assert_close(hidden, _backbone(model)(input_ids=ids).last_hidden_state, atol=1e-6, rtol=0)


def test_a_no_grad_forward_does_not_serve_a_training_forward_of_a_submodule():
    model = _adapted("bert", "lorta")
    ids = tiny_batch(model)["input_ids"]
    with torch.no_grad():
        model(input_ids=ids)  # the cache now holds slices without a graph
    _backbone(model)(input_ids=ids).last_hidden_state.sum().backward()
    factors = list(model.tenpeft_shared.parameters())
    assert all(p.grad is not None for p in factors if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in factors if p.requires_grad)


def test_named_adapters_each_read_their_own_slices():
    model = _adapted("llama", "lorta")
    tenpeft.add_adapter(model, "other", "lorta", rank=2)
    batch = tiny_batch(model)
    first = model(**batch).logits.detach()
    tenpeft.set_adapter(model, "other")
    perturbed(model, 0.3).double()  # an adapter kept aside keeps its dtype: cast it now it is active
    with counting_splits() as calls:
        other = model(**batch).logits.detach()
    assert len(calls) == 1
    with per_slice():
        torch.testing.assert_close(other, model(**batch).logits.detach(), atol=1e-12, rtol=0)
    assert not torch.allclose(first, other)


def test_the_hook_is_registered_once_and_removed_with_the_adapter():
    from tenpeft.placements import refresh_per_forward

    model = _adapted("bert", "lorta")
    hooks = lambda: [h for h in model._forward_pre_hooks.values() if h is refresh_per_forward]  # noqa: E731
    assert len(hooks()) == 1
    tenpeft.add_adapter(model, "other", "lorta")
    tenpeft.set_adapter(model, "other")
    assert len(hooks()) == 1
    tenpeft.unload(model)
    assert hooks() == []
    lora = tiny_model("bert")
    tenpeft.inject(lora, "lora")
    assert not [h for h in lora._forward_pre_hooks.values() if h is refresh_per_forward]
