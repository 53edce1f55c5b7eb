"""Model sizes from the papers, built on the meta device: parameter counts without weights."""
from __future__ import annotations

import torch
import transformers

from .errors import TenpeftError

# name -> (transformers config class, arguments)
PRESETS = {
    "roberta-base": ("RobertaConfig", {"num_labels": 2}),
    "roberta-large": ("RobertaConfig", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                        "intermediate_size": 4096, "num_labels": 2}),
    "llama-7b-gqa": ("LlamaConfig", {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                                     "num_key_value_heads": 8, "intermediate_size": 11008, "vocab_size": 32000}),
    "smollm2-135m": ("LlamaConfig", {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                                     "tie_word_embeddings": True}),
    "gpt2": ("GPT2Config", {}),
}
ENCODERS = ("bert", "roberta", "deberta-v2")
TASKS = {"seq-cls": "AutoModelForSequenceClassification", "causal-lm": "AutoModelForCausalLM", "base": "AutoModel"}


def preset_config(name: str):
    """The transformers config of a preset."""
    if name not in PRESETS:
        raise TenpeftError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    cls, kwargs = PRESETS[name]
    return getattr(transformers, cls)(**kwargs)


def build_on_meta(config, task: str = "auto"):
    """The model for ``config`` on the meta device: a classifier for encoders, an LM for decoders
    (``task`` overrides: seq-cls, causal-lm or base)."""
    if task == "auto":
        task = "seq-cls" if config.model_type in ENCODERS else "causal-lm"
    if task == "seq-cls" and not getattr(config, "num_labels", None):
        config.num_labels = 2
    try:
        with torch.device("meta"):
            return getattr(transformers, TASKS[task]).from_config(config)
    except ValueError as err:
        raise TenpeftError(f"cannot build a {task} model for {config.model_type!r}: {err}") from None
