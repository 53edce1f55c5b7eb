"""Model families, one home: ``FamilySpec.decoder`` and ``FamilySpec.tiny`` decide, for the CLI's
builder, the lab and the test models alike, whether a family is an encoder or a decoder."""
import dataclasses

import pytest

import models
import tenpeft
from tenpeft import register_family
from tenpeft.lab.models import is_decoder as lab_is_decoder
from tenpeft.presets import build_model, build_on_meta
from tenpeft.structure import FAMILIES, is_decoder, tiny_config

ENCODER_SPEC = dataclasses.replace(FAMILIES["bert"], tiny=tiny_config(
    "ElectraConfig", hidden_size=48, embedding_size=48, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, vocab_size=101, max_position_embeddings=40, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0))
DECODER_SPEC = dataclasses.replace(FAMILIES["llama"], tiny=tiny_config(
    "GraniteConfig", hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, vocab_size=101, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2))


@pytest.fixture(params=[("electra", ENCODER_SPEC), ("granite", DECODER_SPEC)], ids=["electra", "granite"])
def registered(request):
    name, spec = request.param
    assert name not in FAMILIES
    register_family(name, spec)
    yield name, spec
    FAMILIES.pop(name)


def _kind(model) -> str:
    return "decoder" if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")) else "encoder"


def test_a_registered_family_is_the_same_kind_everywhere(registered):
    name, spec = registered
    kind = "decoder" if spec.decoder else "encoder"
    config = spec.tiny()
    assert is_decoder(config) == lab_is_decoder(config) == spec.decoder  # core and lab
    assert _kind(build_on_meta(spec.tiny())) == kind  # the CLI's builder
    model = models.tiny_model(name)  # the test models
    assert _kind(model) == kind
    batch = models.tiny_batch(model)
    tenpeft.inject(model, "lorta", rank=2)
    assert tenpeft.discover(model).family == name
    assert tenpeft.parameter_report(model).matches_formula
    assert model(**batch).loss is not None


@pytest.mark.parametrize("family", sorted(models.CONFIGS))
def test_every_built_in_family_agrees(family):
    spec = FAMILIES[family]
    assert spec.decoder == (family not in ("bert", "roberta", "deberta-v2"))
    assert (family in models.ENCODERS) == (not spec.decoder)
    assert _kind(build_on_meta(spec.tiny())) == _kind(models.tiny_model(family)) == (
        "decoder" if spec.decoder else "encoder")
    assert lab_is_decoder(spec.tiny()) == spec.decoder


def test_tiny_configs_keep_their_dimensions():
    for family in ("bert", "roberta", "deberta-v2", "llama", "mistral", "qwen2"):
        c = FAMILIES[family].tiny()
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.vocab_size) == (
            48, 2, 4, 64, 101)
    assert FAMILIES["llama"].tiny().attention_bias and FAMILIES["llama"].tiny().num_key_value_heads == 2
    gpt2 = FAMILIES["gpt2"].tiny()
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.n_head, gpt2.n_positions) == (48, 2, 4, 40)


@pytest.mark.parametrize("make, decoder", [
    (lambda t: t.ElectraConfig(), False),  # not a registered family, no causal-LM architecture
    (lambda t: t.GemmaConfig(architectures=["GemmaForCausalLM"]), True),  # a hub config names its class
    (lambda t: t.BertConfig(is_decoder=True), True),  # the config's own flag wins
])
def test_unregistered_model_types_fall_back_to_the_config(make, decoder):
    import transformers

    config = make(transformers)
    assert is_decoder(config) == lab_is_decoder(config) == decoder


def test_build_model_tasks_and_devices():
    config = FAMILIES["llama"].tiny()
    assert type(build_model(config)).__name__ == "LlamaForCausalLM"
    assert build_model(config, "base", device="meta").embed_tokens.weight.is_meta
    assert build_model(FAMILIES["bert"].tiny(), "seq-cls").num_labels == 2
    with pytest.raises(tenpeft.TenpeftError, match="unknown task 'lm'"):
        build_model(config, "lm")


def test_a_family_without_tiny_config_says_so():
    register_family("electra", dataclasses.replace(FAMILIES["bert"], tiny=None))
    try:
        with pytest.raises(KeyError, match="no tiny config"):
            models.tiny_model("electra")
    finally:
        FAMILIES.pop("electra")
