"""Parameter reports: paper numbers on the meta device, components kept apart, buffers counted."""
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, LlamaConfig, RobertaConfig

import tenpeft
from models import tiny_model

ROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
ROBERTA_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


def _meta(config, cls=AutoModel):
    with torch.device("meta"):
        return cls.from_config(config)


@pytest.mark.parametrize("dims,rank,expected", [(ROBERTA_BASE, 4, 3440), (ROBERTA_LARGE, 8, 9056)])
def test_lorta_paper_counts_on_meta(dims, rank, expected):
    model = tenpeft.inject(_meta(RobertaConfig(**dims)), "lorta", rank=rank)
    report = tenpeft.parameter_report(model)
    assert report.components["shared_factors"] == report.trainable == expected
    assert report.matches_formula
    assert report.base_frozen > 100_000_000  # the base is there, only never allocated


def test_lora_at_roberta_base_dims():
    report = tenpeft.parameter_report(tenpeft.inject(_meta(RobertaConfig(**ROBERTA_BASE)), "lora"))
    assert report.trainable == 12 * 2 * 8 * (768 + 768) == 294_912


def test_loretta_components_at_roberta_base_dims():
    model = _meta(RobertaConfig(**ROBERTA_BASE, num_labels=2), AutoModelForSequenceClassification)
    report = tenpeft.parameter_report(tenpeft.inject(model, "loretta_adp"))
    # 24 adapters: TT(64x768) + TT(768x64), both [8, 8, 12, 8, 8] at rank 5 = 780 each, + biases 64 + 768
    assert report.components["factors"] == 24 * (780 + 780 + 64 + 768) == 57_408
    assert report.components["norms"] == 25 * 2 * 768  # embeddings + 2 per layer
    # head: TT of the 768x768 dense over [8, 8, 12, 12, 8, 8] at rank 5 (1,080) + out_proj 768*2+2
    assert report.components["head"] == 1080 + 1538
    assert report.frozen_stored == 768 * 768 + 768  # the head's frozen dense, saved with the adapter
    assert report.matches_formula
    rep = tenpeft.parameter_report(tenpeft.inject(_meta(RobertaConfig(**ROBERTA_BASE)), "loretta_rep"))
    assert rep.components["factors"] == 12 * 2 * (580 + 580)  # U [8,8,12,8] + V [8,12,8,8] at TT rank 5
    assert rep.trainable == 12 * 2 * (580 + 580) + 25 * 2 * 768  # and the LayerNorms (the official default)


def test_lorta_at_llama_7b_dims_with_gqa():
    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32,
                         intermediate_size=11008, vocab_size=32000)
    for method, fmt_count in [("lorta", 4 * (4096 + 128 + 32 + 32 + 4)), ("loretta_rep", None)]:
        report = tenpeft.parameter_report(tenpeft.inject(_meta(config), method))
        assert report.matches_formula
        if fmt_count:
            assert report.trainable == fmt_count


@pytest.mark.parametrize("method,per_role", [("vera", 256 * (48 + 48)), ("nola", 64 * 8 * (48 + 48))])
def test_seed_regenerable_buffers(method, per_role):
    model = tenpeft.inject(tiny_model("bert"), method)
    report = tenpeft.parameter_report(model)
    assert report.seed_regenerable == 2 * per_role  # q and v: one shared set each, counted once
    assert report.frozen_stored == 0
    assert not any("tenpeft" in k and ("factor_0" in k or "factor_1" in k or ".tensor" in k)
                   for k in model.state_dict()), "frozen random factors must not be stored"


def test_components_are_reported_apart_and_printed():
    model = tenpeft.inject(tiny_model("roberta"), "lora", train_norms=True)
    report = tenpeft.parameter_report(model)
    assert report.components["norms"] == 5 * 2 * 48 and report.components["head"] == 48 * 48 + 48 + 48 * 3 + 3
    assert report.components["factors"] == 2 * 2 * 8 * 96
    text = str(report)
    assert "matches formula: True" in text and "norms" in text and "head" in text
    data = report.to_dict()
    assert data["trainable"] == report.trainable and data["matches_formula"] is True


def test_head_modes():
    frozen = tenpeft.parameter_report(tenpeft.inject(tiny_model("roberta"), "lora", head="frozen"))
    assert frozen.components["head"] == 0
    tt = tenpeft.parameter_report(tenpeft.inject(tiny_model("roberta"), "lora", head="tt"))
    assert 0 < tt.components["head"] < 48 * 48 and tt.matches_formula
    # BERT's head has no square linear: head="tt" trains it densely
    bert = tenpeft.parameter_report(tenpeft.inject(tiny_model("bert"), "lora", head="tt"))
    assert bert.components["head"] == 48 * 3 + 3


def test_bitfit_with_trained_norms_counts_each_parameter_once():
    report = tenpeft.parameter_report(tenpeft.inject(tiny_model("bert"), "bitfit", train_norms=True))
    assert report.matches_formula and report.components["norms"] == 5 * 48  # weights; biases are bitfit's


def test_paper_head_shape():
    model = _meta(RobertaConfig(**ROBERTA_BASE, num_labels=2), AutoModelForSequenceClassification)
    report = tenpeft.parameter_report(tenpeft.inject(model, "loretta_adp", head_shape=[12, 8, 8, 8, 8, 12]))
    assert report.components["head"] == 920 + 1538 and report.matches_formula
    with pytest.raises(tenpeft.TenpeftError, match="head_shape"):
        tenpeft.inject(tiny_model("bert"), "loretta_adp", head_shape=[6, 8, 8, 6])
    with pytest.raises(tenpeft.TenpeftError, match="product"):
        tenpeft.inject(tiny_model("roberta"), "loretta_adp", head_shape=[6, 8, 8, 7])


def test_count_parameters_of_any_model():
    """One counter for a run record's ``params``: a tenpeft model's report, and any other model by name."""
    from tenpeft.report import count_parameters

    model = tenpeft.inject(tiny_model("roberta"), "loretta_adp")
    report, counts = tenpeft.parameter_report(model), count_parameters(model)
    assert counts["components"] == {k: report.components[k] for k in ("factors", "norms", "head")}  # non-zero ones
    assert counts["trainable"] == report.trainable == sum(counts["components"].values())
    assert counts["frozen_stored"] == report.frozen_stored > 0 and counts["seed_regenerable"] == 0
    assert counts["total"] == report.total == sum(p.numel() for p in model.parameters())
    plain = tiny_model("bert")  # e.g. what PEFT returns: its own trainable parameters, the head by name
    for name, p in plain.named_parameters():
        p.requires_grad_(name.startswith("classifier") or name.endswith("query.weight"))
    assert count_parameters(plain) == {"trainable": 48 * 3 + 3 + 2 * 48 * 48,
                                       "components": {"adapter": 2 * 48 * 48, "head": 48 * 3 + 3},
                                       "total": sum(p.numel() for p in plain.parameters())}
