"""Merge, unmerge, unload for every parallel method x family; serial adapters refuse to merge."""
import pytest
import torch
from torch import nn

import tenpeft
from helpers import logits, methods_placed, snapshot, trained
from models import FAMILIES, tiny_model
from tenpeft.placements import AdapterWrapper

PARALLEL, SERIAL = methods_placed("parallel"), methods_placed("serial")


def _trained(family, method):
    """A trained model, its batch and the base parameters before injection."""
    return (*trained(family, method), snapshot(tiny_model(family)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PARALLEL)
def test_merge_unmerge_unload(family, method):
    model, batch, base = _trained(family, method)
    adapted = logits(model, batch)
    tenpeft.merge(model)
    assert (logits(model, batch) - adapted).abs().max() <= 1e-5
    merged_weights = snapshot(model)
    tenpeft.merge(model)  # idempotent
    assert all(torch.equal(v, snapshot(model)[k]) for k, v in merged_weights.items())
    tenpeft.unmerge(model)
    restored = snapshot(model)
    for name, value in base.items():
        trained = name in model.tenpeft_state.components  # trained heads keep their values
        if not trained:
            key = next(k for k in restored if k.replace(".base.", ".") == name)
            assert (restored[key] - value).abs().max() <= 1e-6, name
    assert (logits(model, batch) - adapted).abs().max() <= 1e-5
    plain = tenpeft.merge_and_unload(model)
    assert not any(isinstance(m, AdapterWrapper) for m in plain.modules())
    assert not any(type(m).__module__.startswith("tenpeft") for m in plain.modules())
    assert not hasattr(plain, "tenpeft_state") and "tenpeft_shared" not in dict(plain.named_children())
    assert (logits(plain, batch) - adapted).abs().max() <= 1e-5
    assert set(dict(plain.named_parameters())) == set(base)


@pytest.mark.parametrize("method", SERIAL)
def test_serial_adapters_refuse_to_merge(method):
    model, batch, _ = _trained("bert", method)
    before = logits(model, batch)
    with pytest.raises(tenpeft.TenpeftError, match="cannot be merged"):
        tenpeft.merge(model)
    with pytest.raises(tenpeft.TenpeftError, match="cannot be merged"):
        tenpeft.merge_and_unload(model)
    assert torch.equal(logits(model, batch), before)


def test_stale_merge_is_refused():
    model, batch, _ = _trained("llama", "lorta")
    tenpeft.merge(model)
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).add_(1.0)
    with pytest.raises(RuntimeError, match="stale"):
        logits(model, batch)
    with pytest.raises(tenpeft.TenpeftError, match="changed while merged"):
        tenpeft.unmerge(model)


def test_unload_restores_flags_and_modules():
    model = tiny_model("gpt2")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    types = [(n, type(m)) for n, m in model.named_modules()]
    tenpeft.unload(tenpeft.inject(model, "vera"))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert [(n, type(m)) for n, m in model.named_modules()] == types


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def test_training_a_merged_model_is_refused():
    model, batch, _ = _trained("llama", "lora")
    tenpeft.merge(model)
    model.train()
    with pytest.raises(RuntimeError, match=r"merged.*tenpeft.unmerge\(model\) before training.*model.eval\(\)"):
        model(**batch).loss.backward()
    with torch.no_grad():  # inference in train mode without grad works
        no_grad = model(**_inputs(batch)).logits
    model.eval()  # and so does an eval-mode forward with grad enabled
    eval_mode = model(**_inputs(batch)).logits
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # with every factor frozen there is no gradient to lose
        p.requires_grad_(False)
        p.grad = None
    model.train()
    all_frozen = model(**_inputs(batch)).logits
    for p in trainable:
        p.requires_grad_(True)
    unmerged = logits(tenpeft.unmerge(model), batch)
    for out in (no_grad, eval_mode, all_frozen):
        assert (out.detach() - unmerged).abs().max() <= 1e-5
    model.train()
    model(**batch).loss.backward()  # unmerged, training works again
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_training_a_merged_model_is_refused_under_compile():
    from tenpeft.placements import ParallelUpdate

    wrapper = next(m for m in tenpeft.merge(_trained("llama", "lora")[0]).modules() if isinstance(m, ParallelUpdate))
    torch._dynamo.reset()
    compiled = torch.compile(wrapper, backend="eager")
    x = torch.randn(2, wrapper.in_features)
    try:
        with torch.no_grad():
            assert torch.equal(compiled(x), wrapper.base(x))
        wrapper.train()
        with pytest.raises(RuntimeError, match="before training"):
            compiled(x)
    finally:
        torch._dynamo.reset()


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.mark.parametrize("method", ["lora", "loretta_rep", "adapter", "loretta_adp"])
def test_a_sequential_model_injects_trains_merges_saves_and_unloads(method, tmp_path):
    model, x = _mlp(), torch.randn(5, 8)
    base_out, types = model(x), [(n, type(m)) for n, m in model.named_modules()]
    tenpeft.inject(model, method, target_modules=["0", "2"])
    assert "tenpeft_shared" not in model._modules  # a child of a Sequential would run as a layer
    assert torch.allclose(model(x), base_out, atol=1e-6, rtol=0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    adapted = model(x).detach()
    assert not torch.allclose(adapted, base_out, atol=1e-4)
    tenpeft.save_adapter(model, tmp_path)
    assert torch.allclose(tenpeft.from_pretrained(_mlp(), tmp_path)(x), adapted, atol=1e-6)
    if tenpeft.METHODS[method].placement == "parallel":
        assert torch.allclose(tenpeft.merge(model).eval()(x), adapted, atol=1e-5)
        tenpeft.unmerge(model)
    tenpeft.unload(model)
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert torch.allclose(model(x), base_out, atol=1e-6)
