"""Tiny random-init models of every supported family (tests only; nothing is downloaded).

The tiny configs and whether a family is an encoder or a decoder come from its ``FamilySpec``
(``tiny``, ``decoder``), so a family added with ``register_family`` works here too."""
from __future__ import annotations

import torch
import transformers

from tenpeft.presets import build_model
from tenpeft.structure import FAMILIES as SPECS, is_decoder

transformers.logging.set_verbosity_error()

CONFIGS = {name: spec.tiny for name, spec in SPECS.items() if spec.tiny is not None}
FAMILIES = ("bert", "roberta", "deberta-v2", "deberta", "llama", "gpt2")  # the invariant matrix runs on these
ENCODERS = tuple(name for name in CONFIGS if not SPECS[name].decoder)
assert set(FAMILIES) <= set(CONFIGS)


def tiny_config(family: str):
    """The tiny config of a registered family (``FamilySpec.tiny``)."""
    spec = SPECS.get(family)
    if spec is None or spec.tiny is None:
        raise KeyError(f"family {family!r} has no tiny config (FamilySpec.tiny); families with one: {sorted(CONFIGS)}")
    return spec.tiny()


def tiny_model(family: str, seed: int = 0, classification: bool | None = None):
    """A tiny random-init model: a sequence classifier for encoders, a causal LM for decoders."""
    torch.manual_seed(seed)
    config = tiny_config(family)
    if classification is None:
        classification = not is_decoder(config)
    if classification:
        config.num_labels = 3
        return build_model(config, "seq-cls").eval()
    return build_model(config, "causal-lm").eval()


def tiny_batch(model, batch: int = 2, length: int = 7, seed: int = 1) -> dict:
    """Random token ids (and labels fitting the model's task)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    labels = (torch.randint(0, model.config.num_labels, (batch,), generator=gen)
              if "Classification" in type(model).__name__ else ids.clone())
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def word_tokenizer(texts, vocab_size: int):
    """A whitespace word-level tokenizer over the words of ``texts`` (ids below ``vocab_size``), with
    ``<pad>`` 0, ``<unk>`` 1 and ``<eos>`` 2 as the tiny decoders' configs expect."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in text.split()})
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2} | {w: i + 3 for i, w in enumerate(words)}
    assert len(vocab) <= vocab_size, (len(vocab), vocab_size)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


class TinyClassification(torch.utils.data.Dataset):
    """16 in-memory rows of random token ids with a class label."""

    def __init__(self, vocab_size: int, num_labels: int, rows: int = 16, length: int = 8, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, vocab_size, (rows, length), generator=gen)
        self.labels = torch.randint(0, num_labels, (rows,), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}
