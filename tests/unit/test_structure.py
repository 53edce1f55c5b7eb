"""Model structure discovery for every supported family, and the unknown-family error."""
import pytest
from transformers import AutoModelForCausalLM, GPTNeoXConfig

import tenpeft
from models import CONFIGS, tiny_model
from tenpeft.structure import TINY_SIZES

KV_HEADS = {"bert": 4, "roberta": 4, "deberta": 4, "deberta-v2": 4, "gpt2": 4, "llama": 2, "mistral": 2, "qwen2": 2, "qwen3": 2}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_discover(family):
    model = tiny_model(family)
    s = tenpeft.discover(model)
    assert (s.family, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim, s.hidden_size) == (
        family, 2, 4, KV_HEADS[family], 12, 48)
    modules = dict(model.named_modules())
    for i, layer in enumerate(s.layers):
        assert {"q", "k", "v", "o", "ffn_in", "ffn_out"} <= set(layer)
        for target in layer.values():
            assert target.layer == i and target.name in modules
        assert layer["k"].out_features == KV_HEADS[family] * 12
    assert s.norms, "norms (LayerNorm or RMSNorm) must be found"
    assert all("norm" in type(modules[n]).__name__.lower() for n in s.norms)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_tiny_config_has_the_tiny_sizes(family):
    """``TINY_SIZES`` is the one home of the tiny models' sizes (GPT-2's FFN is its own 4 x n_embd)."""
    config = CONFIGS[family]()
    sizes = {k: v for k, v in TINY_SIZES.items() if family != "gpt2" or k != "intermediate_size"}
    assert {k: getattr(config, k) for k in sizes} == sizes


def test_gpt2_fused_qkv_slices():
    s = tenpeft.discover(tiny_model("gpt2"))
    q, k, v = (s.layers[0][r] for r in "qkv")
    assert q.name == k.name == v.name == "transformer.h.0.attn.c_attn"
    assert (q.out_slice, k.out_slice, v.out_slice) == ((0, 48), (48, 96), (96, 144))


def test_heads_of_task_models():
    assert tenpeft.discover(tiny_model("bert")).head == ["classifier"]
    assert tenpeft.discover(tiny_model("deberta-v2")).head == ["pooler", "classifier"]
    assert tenpeft.discover(tiny_model("llama")).head == []
    assert tenpeft.discover(tiny_model("llama", classification=True)).head == ["score"]


def _neox():
    config = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           vocab_size=50)
    return AutoModelForCausalLM.from_config(config)


def test_unknown_family_error_says_how_to_fix():
    with pytest.raises(tenpeft.TenpeftError, match=r"'gpt_neox'.*target_modules.*register_family"):
        tenpeft.discover(_neox())


def test_unknown_family_works_with_named_modules_and_registration():
    model = _neox()
    tenpeft.inject(model, "lora", target_modules=["query_key_value"])
    assert tenpeft.parameter_report(model).matches_formula
    with pytest.raises(tenpeft.TenpeftError, match="needs the attention structure"):
        tenpeft.inject(_neox(), "lorta")


def test_register_family():
    # GPT-NeoX interleaves Q/K/V per head, so only O and the FFN are registered by role here
    spec = tenpeft.FamilySpec(r"layers\.(\d+)", {"o": "attention.dense", "ffn_in": "mlp.dense_h_to_4h",
                                                 "ffn_out": "mlp.dense_4h_to_h"})
    tenpeft.register_family("gpt_neox", spec)
    try:
        s = tenpeft.discover(_neox())
        assert s.num_layers == 2 and s.layers[1]["o"].name == "gpt_neox.layers.1.attention.dense"
        model = tenpeft.inject(_neox(), "adapter")
        assert tenpeft.parameter_report(model).matches_formula
    finally:
        tenpeft.FAMILIES.pop("gpt_neox")


@pytest.mark.parametrize("method", ["vera", "nola", "lora"])
def test_stacked_methods_on_hand_named_modules_of_an_unknown_family(method):
    model = tenpeft.inject(_neox(), method, target_modules=["query_key_value", "dense_4h_to_h"])
    assert len(model.tenpeft_shared) == (2 if method != "lora" else 0)
    assert tenpeft.parameter_report(model).matches_formula


def test_discover_sees_through_adapters():
    model = tenpeft.inject(tiny_model("gpt2"), "lorta")
    assert tenpeft.discover(model).layers[1]["v"].out_slice == (96, 144)
