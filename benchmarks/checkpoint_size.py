"""Bytes on disk of a Trainer checkpoint of a tenpeft model: adapter-only (what tenpeft writes now) against
the full-model save transformers wrote before (the base class's ``save_pretrained``).

    python benchmarks/checkpoint_size.py                     # RoBERTa-base dims (random init), lora and lorta
    python benchmarks/checkpoint_size.py --model tiny         # a 2-layer BERT

Nothing is downloaded: the model is built from its config. Prints one line per method.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

import tenpeft
from tenpeft.structure import TINY_SIZES

TINY = {**TINY_SIZES, "hidden_size": 32, "vocab_size": 100}  # the core's, narrower: the BERT docs/ecosystem.md measured
CONFIGS = {"roberta-base": lambda: RobertaConfig(num_labels=2),  # its defaults are roberta-base's dims
           "tiny": lambda: BertConfig(**TINY, num_labels=2)}


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


def measure(config, method: str) -> tuple[int, int]:
    """(adapter-only bytes, full-model bytes) of ``save_pretrained`` after injecting ``method``."""
    torch.manual_seed(0)
    model = tenpeft.inject(AutoModelForSequenceClassification.from_config(config), method)
    with tempfile.TemporaryDirectory() as adapter, tempfile.TemporaryDirectory() as full:
        model.save_pretrained(adapter)  # what Trainer.save_model and every checkpoint call
        type(model).save_pretrained(model, full)  # the class's own: what was written before
        return folder_bytes(adapter), folder_bytes(full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="roberta-base")
    parser.add_argument("--methods", default="lora,lorta")
    args = parser.parse_args()
    config = CONFIGS[args.model]()
    for method in args.methods.split(","):
        adapter, full = measure(config, method)
        print(f"{args.model} {method}: adapter-only {adapter:,} bytes, full model {full:,} bytes "
              f"({full / adapter:,.0f}x)")


if __name__ == "__main__":
    main()
