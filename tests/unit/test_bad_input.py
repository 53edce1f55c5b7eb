"""Bad input: one clear TenpeftError, and the model exactly as it was."""
import pytest
from torch import nn

import tenpeft
from helpers import assert_untouched, fingerprint
from models import tiny_model


CASES = [
    ("bert", "loraa", {}, "unknown method 'loraa'; known methods"),
    ("bert", "lora", {"rnak": 4}, r"lora has no hyperparameter\(s\) \['rnak'\]"),
    ("bert", "lora", {"rank": 0}, "rank must be an int >= 1, got 0"),
    ("llama", "lorta", {"rank": -1}, "rank must be an int >= 1"),
    ("llama", "lorta_tucker", {"rank": (4, 4, 0, 4, 4)}, "every rank must be an int >= 1"),
    ("llama", "lorta_tucker", {"rank": (4, 4)}, "one rank per mode"),
    ("bert", "loretta_rep", {"shapes": {"48x8": [4, 4, 4]}}, "product 64, not 384"),
    ("bert", "loretta_rep", {"shapes": {"768x8": [8, 8, 12, 8]}}, r"match no tensorized matrix"),
    ("bert", "loretta_adp", {"shapes": {"64x48": [4, 4, 4, 4]}}, "product"),
    ("bert", "lora", {"target_modules": ["nonexistent"]}, "matched no linear layer"),
    ("bert", "lora", {"target_modules": r".*\.quer"}, "matched no linear layer"),
    ("bert", "lora", {"exclude_modules": r".*"}, "matched no linear layer"),
    ("bert", "lora", {"roles": ("qq",)}, "unknown role 'qq'"),
    ("bert", "lora", {"roles": ("ffn_gate",)}, "has no 'ffn_gate' linear"),
    ("llama", "lorta", {"rank": {"budget": 10}}, "cannot be met"),
    ("llama", "lorta", {"roles": ("q", "ffn_in")}, "Q/K/V/O updates only"),
    ("bert", "adapter", {"activation": "swishy"}, "activation='swishy'"),
    ("bert", "lora", {"head": "big"}, "head='big'"),
    ("bert", "lora", {"adapter_dtype": "float33"}, "adapter_dtype"),
    ("bert", "lora", {"alpha": 16, "rank": (8,)}, "alpha needs an int rank"),
    ("bert", "lora", {"format": "ttt"}, "unknown tensor format 'ttt'"),
    ("roberta", "lora", {"head_shape": 7}, "head_shape must be a list of positive ints"),
    ("bert", "lora", {"target_modules": [3]}, "target_modules must be"),
    ("bert", "loretta_rep", {"shapes": [8, 8]}, "shapes must map"),
    ("bert", "lora", {"alpha": 16, "scale": 2.0}, "give alpha .* or scale, not both"),
    ("llama", "lorta", {"scale": 0.5}, "set alpha=None to use scale"),
    ("llama", "lorta", {"init": "kaiming"}, "init='kaiming' is not one of"),
    ("llama", "lorta_tt", {"init": "lorta"}, "needs init='std'"),
    ("bert", "loretta_rep", {"alpha": 16, "scale": 0.5}, "not both"),
    ("bert", "adapter", {"roles": ("q",)}, None),  # allowed: adapters may follow any whole linear
    ("gpt2", "adapter", {"roles": ("q",)}, "not a slice"),
]


@pytest.mark.parametrize("family,method,kwargs,message", CASES)
def test_bad_input_raises_and_leaves_model_untouched(family, method, kwargs, message):
    model = tiny_model(family)
    before = fingerprint(model)
    if message is None:
        tenpeft.inject(model, method, **kwargs)
        return
    with pytest.raises(tenpeft.TenpeftError, match=message):
        tenpeft.inject(model, method, **kwargs)
    assert_untouched(model, before)


def test_bitfit_on_a_model_without_biases():
    from transformers import AutoModelForCausalLM, LlamaConfig

    model = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                         num_key_value_heads=2, intermediate_size=64, vocab_size=50))
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match="no bias parameters"):
        tenpeft.inject(model, "bitfit")
    assert_untouched(model, before)


def test_double_injection_refused():
    model = tenpeft.inject(tiny_model("bert"), "lora")
    with pytest.raises(tenpeft.TenpeftError, match="already has tenpeft adapters"):
        tenpeft.inject(model, "vera")


def test_failure_while_applying_is_rolled_back(monkeypatch):
    model = tiny_model("roberta")
    before = fingerprint(model)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after modules were swapped")

    monkeypatch.setattr(nn.ModuleDict, "__init__", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        tenpeft.inject(model, "loretta_adp")
    monkeypatch.undo()
    assert_untouched(model, before)


def test_report_needs_an_injected_model():
    with pytest.raises(tenpeft.TenpeftError, match="call tenpeft.inject"):
        tenpeft.parameter_report(tiny_model("bert"))


@pytest.mark.parametrize("method", ["vera", "nola"])
def test_shared_factors_on_a_sequential_are_refused(method):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match=r"nn.Sequential.*would run.*as a layer"):
        tenpeft.inject(model, method, target_modules=["0", "2"])
    assert_untouched(model, before)
