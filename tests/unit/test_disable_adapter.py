"""``tenpeft.disable_adapter``: inside the block the model is its base bit for bit; outside it is adapted
again, and base parameters trained in place (head, norms, biases) hold their untrained values inside;
``full`` (no copy kept) and merged models are refused."""
from __future__ import annotations

import pytest
import torch

import tenpeft
from helpers import logits, perturbed
from models import tiny_batch, tiny_model

ADAPTERS = sorted(m for m, spec in tenpeft.METHODS.items() if spec.uses_targets)
ONLY_ADAPTER = dict(head="frozen", train_norms=False)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
@pytest.mark.parametrize("method", ADAPTERS)
def test_disabled_outputs_are_the_base_outputs(family, method):
    base = tiny_model(family)
    batch = tiny_batch(base)
    expected = logits(base, batch)
    model = perturbed(tenpeft.inject(tiny_model(family), method, **ONLY_ADAPTER))
    adapted = logits(model, batch)
    assert not torch.allclose(adapted, expected, atol=1e-6)
    with tenpeft.disable_adapter(model) as same:
        assert same is model
        assert torch.equal(logits(model, batch), expected)
    assert torch.equal(logits(model, batch), adapted)


def test_the_adapter_comes_back_after_an_error_and_nested_blocks():
    model = perturbed(tenpeft.inject(tiny_model("llama"), "lorta"))
    batch = tiny_batch(model)
    adapted = logits(model, batch)
    with pytest.raises(ZeroDivisionError):
        with tenpeft.disable_adapter(model):
            1 / 0
    assert torch.equal(logits(model, batch), adapted)
    with tenpeft.disable_adapter(model):
        with tenpeft.disable_adapter(model):
            pass
        assert not torch.equal(logits(model, batch), adapted)  # the outer block still disables
    assert torch.equal(logits(model, batch), adapted)


def test_no_gradient_reaches_the_factors_while_disabled():
    model = perturbed(tenpeft.inject(tiny_model("llama"), "lora"))
    with tenpeft.disable_adapter(model):
        loss = model(**tiny_batch(model)).loss
    assert not loss.requires_grad  # the factors are not in the graph (a DPO reference pass costs no backward)


IN_PLACE = sorted(m for m in tenpeft.METHODS if m != "full")


@pytest.mark.parametrize("method", IN_PLACE)
def test_base_parameters_trained_in_place_get_their_untrained_values_back(method):
    """Default settings (the head, norms and biases trained in place): inside the block those hold the
    values from before training, so the outputs are still the base's; after it the trained ones are back."""
    base = tiny_model("bert")
    batch = tiny_batch(base)
    expected = logits(base, batch)
    model = perturbed(tenpeft.inject(tiny_model("bert"), method))
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    adapted = logits(model, batch)
    with tenpeft.disable_adapter(model):
        assert torch.equal(logits(model, batch), expected)
    assert torch.equal(logits(model, batch), adapted)
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_adapters_only_keeps_the_trained_values():
    model = perturbed(tenpeft.inject(tiny_model("bert"), "loretta_rep"))  # trains norms and the head
    batch = tiny_batch(model)
    adapted = logits(model, batch)
    with tenpeft.disable_adapter(model, adapters_only=True):
        skipped = logits(model, batch)
    assert not torch.equal(skipped, adapted) and not torch.equal(skipped, logits(tiny_model("bert"), batch))
    assert torch.equal(logits(model, batch), adapted)


def test_full_fine_tuning_keeps_no_copy_and_is_refused_unless_adapters_only():
    model = perturbed(tenpeft.inject(tiny_model("bert"), "full"))
    assert model.tenpeft_state.originals is None  # the whole model was not copied
    with pytest.raises(tenpeft.TenpeftError, match=r"full trains so many base parameters in place.*adapters_only=True"):
        with tenpeft.disable_adapter(model):
            pytest.fail("the block must not run")
    with tenpeft.disable_adapter(model, adapters_only=True):
        pass


def test_merged_models_are_refused_and_no_merge_inside_the_block():
    model = perturbed(tenpeft.inject(tiny_model("llama"), "lora"))
    tenpeft.merge(model)
    with pytest.raises(tenpeft.TenpeftError, match=r"the model is merged .*tenpeft.unmerge\(model\) before disable_adapter"):
        with tenpeft.disable_adapter(model):
            pass
    tenpeft.unmerge(model)
    with tenpeft.disable_adapter(model):
        with pytest.raises(tenpeft.TenpeftError, match="the adapter is disabled"):
            tenpeft.merge(model)
    assert not any(w.merged for w in model.modules() if hasattr(w, "merged"))


def test_a_model_without_an_adapter_is_refused():
    with pytest.raises(tenpeft.TenpeftError):
        with tenpeft.disable_adapter(tiny_model("bert")):
            pass
