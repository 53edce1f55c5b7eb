"""Bad input: one clear TenpeftError, and the model exactly as it was."""
import pytest
from torch import nn

import tenpeft
import tenpeft.placements
import torch

from helpers import assert_untouched, fingerprint, perturbed
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


# issue 32: silent losses a new user met, each now refused (or warned) before anything changes

@pytest.mark.parametrize("training", [False, True])
def test_inject_puts_adapters_in_the_model_mode(training):
    model = tiny_model("llama").train(training)
    tenpeft.inject(model, "lorta")
    assert {m.training for m in model.modules()} == {training}


@pytest.mark.parametrize("enable", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_reentrant_checkpointing_of_shared_factors_is_refused_before_and_after_inject(enable):
    kwargs = {"gradient_checkpointing_enable": "gradient_checkpointing_kwargs",
              "activation_checkpointing_enable": "activation_checkpointing_kwargs"}[enable]
    model = tiny_model("llama")
    getattr(model, enable)(**{kwargs: {"use_reentrant": True}})
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match="reentrant gradient checkpointing on; call model.gradient_chec"):
        tenpeft.inject(model, "lorta")
    assert_untouched(model, before)
    assert not hasattr(model, "tenpeft_state")
    fresh = tenpeft.inject(tiny_model("llama"), "lorta")
    with pytest.raises(tenpeft.TenpeftError, match="use_reentrant': False"):
        getattr(fresh, enable)(**{kwargs: {"use_reentrant": True}})
    getattr(fresh, enable)(**{kwargs: {"use_reentrant": False}})  # allowed


class _PackedWeight(torch.Tensor):
    """Stands for a quantization library's weight tensor (its class lives in that library)."""


_PackedWeight.__module__ = "torchao.dtypes.affine"


@pytest.mark.parametrize("quantize", ["hf_quantizer", "int8_weight", "library_tensor"])
def test_merge_onto_a_quantized_base_is_refused_and_changes_nothing(quantize):
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lora"), std=0.1)
    query = model.bert.encoder.layer[0].attention.self.query.base
    if quantize == "hf_quantizer":
        model.hf_quantizer = type("QuantoHfQuantizer", (), {})()
    elif quantize == "int8_weight":
        query.weight = nn.Parameter(query.weight.detach().to(torch.int8), requires_grad=False)
    else:
        query.weight = nn.Parameter(torch.Tensor._make_subclass(_PackedWeight, query.weight.detach()), requires_grad=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(tenpeft.TenpeftError, match="cannot merge into a quantized base .* the adapter lost"):
        tenpeft.merge(model)
    with pytest.raises(tenpeft.TenpeftError, match="cannot merge into a quantized base"):
        tenpeft.merge_and_unload(model)
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(torch.equal(after[n], v) for n, v in before.items())
    assert hasattr(model, "tenpeft_state") and not any(w.merged for _, w in tenpeft.placements.wrappers(model))


def test_a_lossy_lora_export_warns_with_the_exact_rank(tmp_path):
    pytest.importorskip("peft")
    model = perturbed(tenpeft.inject(tiny_model("gpt2"), "lora", rank=8), std=0.1)
    with pytest.warns(UserWarning, match=r"to_lora at rank 2 loses .* export with rank=\d+ to be exact"):
        export = tenpeft.to_lora(model, 2, tmp_path / "lossy")
    assert export.exact_rank > 2 and export.max_error > 0.1
    assert export.exact_rank == 16  # c_attn's fused update: Q and V slices of rank 8 each; float32 noise not counted
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="to_lora")
        exact = tenpeft.to_lora(model, export.exact_rank, tmp_path / "exact")
    assert exact.max_error < 1e-5
    assert not [p for p in (tmp_path / "exact").iterdir() if p.name.startswith(".")]  # no staging folder left
