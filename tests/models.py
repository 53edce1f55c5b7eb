"""Tiny random-init models of every supported family (tests only; nothing is downloaded)."""
from __future__ import annotations

import torch
import transformers
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, DebertaV2Config,
                          GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, RobertaConfig)

transformers.logging.set_verbosity_error()

_ENCODER = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=101,
                max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_DECODER = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, vocab_size=101, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                eos_token_id=2)

CONFIGS = {
    "bert": lambda: BertConfig(**_ENCODER),
    "roberta": lambda: RobertaConfig(**_ENCODER, pad_token_id=1),
    "deberta-v2": lambda: DebertaV2Config(**_ENCODER, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                          position_buckets=8, max_relative_positions=16),
    "llama": lambda: LlamaConfig(**_DECODER, attention_bias=True),
    "gpt2": lambda: GPT2Config(n_embd=48, n_layer=2, n_head=4, vocab_size=101, n_positions=40, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "mistral": lambda: MistralConfig(**_DECODER),
    "qwen2": lambda: Qwen2Config(**_DECODER),
}
FAMILIES = ("bert", "roberta", "deberta-v2", "llama", "gpt2")
ENCODERS = ("bert", "roberta", "deberta-v2")


def tiny_model(family: str, seed: int = 0, classification: bool | None = None):
    """A tiny random-init model: a sequence classifier for encoders, a causal LM for decoders."""
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    if classification is None:
        classification = family in ENCODERS
    if classification:
        config.num_labels = 3
        return AutoModelForSequenceClassification.from_config(config).eval()
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_batch(model, batch: int = 2, length: int = 7, seed: int = 1) -> dict:
    """Random token ids (and labels fitting the model's task)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    labels = (torch.randint(0, model.config.num_labels, (batch,), generator=gen)
              if "Classification" in type(model).__name__ else ids.clone())
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
