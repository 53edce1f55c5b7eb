"""Merge, unmerge, unload for every parallel method x family; serial adapters refuse to merge."""
import pytest
import torch

import tenpeft
from helpers import logits, snapshot, train_steps
from models import FAMILIES, tiny_batch, tiny_model
from tenpeft.placements import AdapterWrapper

PARALLEL = sorted(m for m, spec in tenpeft.METHODS.items() if spec.placement == "parallel")
SERIAL = sorted(m for m, spec in tenpeft.METHODS.items() if spec.placement == "serial")


def _trained(family, method):
    model = tiny_model(family)
    base = snapshot(model)
    tenpeft.inject(model, method)
    batch = tiny_batch(model)
    train_steps(model, batch, steps=3)
    return model, batch, base


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
