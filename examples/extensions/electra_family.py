"""A new model family in one file: ELECTRA's discriminator (bert-like blocks), an encoder.

``FamilySpec`` says where the blocks live, that the family is an encoder, and how to build its
tiny random-init test config; the CLI, the lab and tests/models.tiny_model then all follow it.
``tiny-electra`` makes it a study model (random init, MiniLM's tokenizer, nothing to download).

    python studies/rank_ablation.py --import electra_family --model tiny-electra --methods lora,lorta ...
"""
from __future__ import annotations

from tenpeft import FamilySpec, register_family
from tenpeft.lab.models import TINY, register_alias, tiny_source
from tenpeft.structure import tiny_config

register_family("electra", FamilySpec(
    layer_pattern=r"encoder\.layer\.(\d+)",
    roles={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
           "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    decoder=False,
    tiny=tiny_config("ElectraConfig", hidden_size=48, embedding_size=48, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, vocab_size=101, max_position_embeddings=40, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)))
register_alias("tiny-electra", lambda: tiny_source("tiny-electra", tiny_config(
    "ElectraConfig", **TINY, embedding_size=TINY["hidden_size"], hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0)))
