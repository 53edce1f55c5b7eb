"""Model families, one home: ``FamilySpec.decoder`` and ``FamilySpec.tiny`` decide, for the CLI's
builder, the lab and the test models alike, whether a family is an encoder or a decoder."""
import copy
import dataclasses

import pytest
import torch

import models
from helpers import perturbed
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


# the same electra config registered as an encoder and as a decoder: a rule that read the config would get one wrong
KINDS = [("electra", ENCODER_SPEC), ("electra", dataclasses.replace(ENCODER_SPEC, decoder=True)), ("granite", DECODER_SPEC)]
ENCODER_FAMILIES = ("bert", "roberta", "deberta-v2", "deberta")


@pytest.fixture(params=KINDS, ids=["electra-encoder", "electra-decoder", "granite-decoder"])
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
    assert is_decoder(spec.tiny()) == spec.decoder  # the one rule (the lab's too: test_the_lab_uses_the_core_rule)
    assert _kind(build_on_meta(spec.tiny())) == kind  # the CLI's builder
    model = models.tiny_model(name)  # the test models
    assert _kind(model) == kind
    batch = models.tiny_batch(model)
    tenpeft.inject(model, "lorta", rank=2)
    assert tenpeft.discover(model).family == name
    assert tenpeft.parameter_report(model).matches_formula
    loss = model(**batch).loss  # the loss of the kind built: next-token cross-entropy or the class labels'
    assert loss.dim() == 0 and torch.isfinite(loss)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert logits.shape[-1] == (model.config.vocab_size if spec.decoder else model.config.num_labels)


def test_the_lab_uses_the_core_rule():
    """One encoder/decoder rule: the lab's ``is_decoder`` is the core's, not a copy that could drift."""
    assert lab_is_decoder is is_decoder


@pytest.mark.parametrize("family", sorted(models.CONFIGS))
def test_every_built_in_family_agrees(family):
    spec = FAMILIES[family]
    assert spec.decoder == (family not in ENCODER_FAMILIES)
    assert (family in models.ENCODERS) == (family in ENCODER_FAMILIES)  # the test models' list, from the specs
    assert _kind(build_on_meta(spec.tiny())) == _kind(models.tiny_model(family)) == (
        "decoder" if spec.decoder else "encoder")
    assert is_decoder(spec.tiny()) == spec.decoder


def test_tiny_configs_keep_their_dimensions():
    for family in ("bert", "roberta", "deberta-v2", "deberta", "llama", "mistral", "qwen2"):
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
    assert is_decoder(config) == decoder


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


def _deberta_attention(model, layer: int = 0):
    return model.deberta.encoder.layer[layer].attention.self


def test_deberta_v1_structure_and_fused_in_proj():
    s = tenpeft.discover(models.tiny_model("deberta"))
    assert (s.family, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim) == ("deberta", 2, 4, 4, 12)
    assert s.head == ["pooler", "classifier"]
    for i, layer in enumerate(s.layers):
        assert set(layer) == {"q", "k", "v", "o", "ffn_in", "ffn_out"}
        prefix = f"deberta.encoder.layer.{i}."
        assert {r: (t.name, t.out_slice, t.in_features, t.out_features) for r, t in layer.items() if r in "qkv"} == {
            r: (prefix + "attention.self.in_proj", (j * 12, j * 12 + 12, 36), 48, 48) for j, r in enumerate("qkv")}
        assert layer["o"].name == prefix + "attention.output.dense" and layer["o"].out_slice is None
        assert (layer["ffn_in"].name, layer["ffn_out"].name) == (prefix + "intermediate.dense", prefix + "output.dense")


@pytest.mark.parametrize("index, role", list(enumerate("qkv")))
def test_deberta_v1_role_changes_exactly_its_projection(index, role):
    """transformers' own split (``transpose_for_scores(in_proj(x)).chunk(3, -1)``): the update on
    ``role`` moves exactly that projection, head by head in q_bias/v_bias's order."""
    model = perturbed(tenpeft.inject(models.tiny_model("deberta"), "lora", roles=[role], rank=2))
    attention = _deberta_attention(model)
    x = torch.randn(2, 5, 48)
    with torch.no_grad():
        adapted = attention.transpose_for_scores(attention.in_proj(x)).chunk(3, dim=-1)
        base = attention.transpose_for_scores(attention.in_proj.base(x)).chunk(3, dim=-1)
        update = attention.transpose_for_scores(attention.in_proj.updates[0](x))
    for j in range(3):
        if j == index:
            assert torch.allclose(adapted[j] - base[j], update, atol=1e-6) and update.abs().max() > 0
        else:
            assert torch.equal(adapted[j], base[j])


def test_deberta_v1_updates_equal_editing_the_rows_transformers_uses():
    """The adapted model equals the base with ΔW_q/k/v added to the in_proj rows that transformers
    reads for them (``ws = in_proj.weight.chunk(3 * heads)``; head h of q/k/v is ``ws[3h + 0/1/2]``)."""
    base = models.tiny_model("deberta")
    edited = copy.deepcopy(base)
    model = perturbed(tenpeft.inject(base, "lora", roles=["q", "k", "v", "o"], rank=2, head="frozen"))
    batch = models.tiny_batch(model)
    with torch.no_grad():
        for layer in range(2):
            wrapper = _deberta_attention(model, layer).in_proj
            ws = _deberta_attention(edited, layer).in_proj.weight.chunk(3 * 4, dim=0)
            for k, update in enumerate(wrapper.updates):
                for h, rows in enumerate(update.delta_weight().chunk(4, dim=0)):
                    ws[3 * h + k].add_(rows)
            edited.deberta.encoder.layer[layer].attention.output.dense.weight.add_(
                model.deberta.encoder.layer[layer].attention.output.dense.delta_weight())
        out = model(**batch).logits
        assert torch.allclose(out, edited(**batch).logits, atol=1e-5)
        tenpeft.merge(model)
        assert torch.allclose(model(**batch).logits, out, atol=1e-5)


def test_deberta_v1_lora_q_v_count_is_the_closed_form():
    model = tenpeft.inject(models.tiny_model("deberta"), "lora", roles=["q", "v"], rank=4)
    report = tenpeft.parameter_report(model)
    assert report.matches_formula
    assert report.components["factors"] == 2 * 2 * 4 * (48 + 48)  # layers x roles x rank (in + out)
    assert report.components["head"] == (48 * 48 + 48) + (48 * 3 + 3)  # pooler.dense + classifier


@pytest.mark.parametrize("family", ["deberta", "deberta-v2"])
def test_deberta_tt_head_is_the_pooler_dense(family):
    """Like LoRETTA's code: the square head linear of DeBERTa is ``pooler.dense``."""
    from tenpeft.placements import ParallelUpdate

    model = tenpeft.inject(models.tiny_model(family), "lora", head="tt")
    assert isinstance(model.pooler.dense, ParallelUpdate) and not isinstance(model.classifier, ParallelUpdate)
    assert tenpeft.parameter_report(model).matches_formula


def test_deberta_v1_bad_inputs():
    model = models.tiny_model("deberta")
    model.config.num_key_value_heads = 2  # a per-head interleaved in_proj cannot hold grouped KV heads
    with pytest.raises(tenpeft.TenpeftError, match="interleaved per head, which needs as many KV heads"):
        tenpeft.discover(model)
    with pytest.raises(tenpeft.TenpeftError, match="not a slice of .*in_proj"):
        tenpeft.inject(models.tiny_model("deberta"), "adapter", roles=["q"])
