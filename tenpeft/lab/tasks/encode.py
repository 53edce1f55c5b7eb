"""Tokenize a task's dataset for a sequence classifier, and pad batches of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import hashlib

import datasets
import numpy as np
import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.specs import TaskSpec, get_task

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def map_fingerprint(dataset, tokenizer, function, *params) -> str | None:
    """The fingerprint of ``dataset.map(function)`` where ``function`` closes over ``tokenizer`` and ``params``.

    datasets would hash the function by pickling the tokenizer it holds (0.3 s a map for MiniLM's, half
    of a tiny study run). This hashes what the result depends on instead: the rows' fingerprint, the fast
    tokenizer's serialisation (vocabulary, normalizer, processors), its special tokens and chat template,
    the function's code and ``params`` (their ``repr``). None, for datasets' own hashing, without a fast
    tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(dataset, "_fingerprint"):
        return None
    digest = hashlib.sha256()
    for part in (dataset._fingerprint, backend.to_str(), sorted(tokenizer.special_tokens_map.items()),
                 getattr(tokenizer, "chat_template", None), function.__qualname__, _code_key(function.__code__), *params):
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _code_key(code) -> tuple:
    """A function's bytecode and constants, nested functions' included, without memory addresses."""
    return code.co_code, tuple(_code_key(c) if hasattr(c, "co_code") else c for c in code.co_consts)


def encode_classification(task, tokenizer, dataset: datasets.Dataset, max_length: int = 128) -> datasets.Dataset:
    """``dataset`` tokenized for a sequence classifier: sentence pairs as pairs, truncated to ``max_length``,
    unpadded; columns input_ids, attention_mask, token_type_ids (if the tokenizer makes them) and ``labels``
    (int64 classes, float32 for regression). All other columns are dropped."""
    spec = get_task(task)
    check_encoder_task(spec)
    check_encodable(spec, dataset, max_length)
    label_dtype = np.float32 if spec.is_regression else np.int64

    def tokenize(batch: dict) -> dict:
        out = tokenizer(*(batch[c] for c in spec.text_columns), truncation=True, max_length=max_length)
        encoded = {key: out[key] for key in MODEL_INPUTS if key in out}
        encoded["labels"] = np.asarray(batch["label"], dtype=label_dtype)
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {spec.name}",
                       new_fingerprint=map_fingerprint(dataset, tokenizer, tokenize, spec, max_length))


def check_encoder_task(spec: TaskSpec) -> None:
    """Raise TenpeftError for a task a sequence classifier cannot read (more than two text columns)."""
    if not spec.encoder_ready:
        raise TenpeftError(f"task {spec.name!r} reads {len(spec.text_columns)} text columns {list(spec.text_columns)}; "
                           f"an encoder takes one text or a pair, so it is a prompt task for decoders: "
                           f"use --model smollm2 or tiny-llama (or a hub decoder)")


def check_encodable(spec: TaskSpec, dataset, max_length: int) -> None:
    """Raise TenpeftError unless ``dataset`` is a Dataset with the task's text columns and ``label``."""
    if not isinstance(dataset, datasets.Dataset):
        raise TenpeftError(f"expected a datasets.Dataset (e.g. TaskData.train), got {type(dataset).__name__}")
    needed = [*spec.text_columns, "label"]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise TenpeftError(f"dataset lacks column(s) {missing} needed for {spec.name!r}; columns found: "
                           f"{dataset.column_names}; load it with load_task_data")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise TenpeftError(f"max_length must be a positive integer, not {max_length!r}")


@dataclass
class _PadCollator:
    """Right-pads every sequence field to the batch's longest; a module-level class so DataLoader
    workers can pickle it."""

    pad_token_id: int
    pad_token_type_id: int
    label_dtype: torch.dtype

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise TenpeftError("cannot collate an empty batch; use a batch size of at least 1")
        batch = {}
        for key in features[0]:
            name = "labels" if key == "label" else key
            try:
                values = [torch.as_tensor(f[key]) for f in features]
            except (TypeError, ValueError, RuntimeError):
                raise TenpeftError(f"field {key!r} is not numeric; collate encoded datasets "
                                   f"(encode_classification / encode_prompt)") from None
            if values[0].dim() == 0:
                batch[name] = torch.stack(values).to(self.label_dtype) if name == "labels" else torch.stack(values)
                continue
            pad = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                   "labels": -100}.get(name, 0)
            padded = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=pad)
            batch[name] = padded if padded.is_floating_point() else padded.long()
        return batch


def make_collator(tokenizer, task) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """A collate function that right-pads each batch to its longest sequence and returns torch tensors;
    ``labels`` (or ``label``) come out float32 for regression tasks and int64 otherwise (a multiple-choice
    task's candidates are padded by ``tenpeft.lab.tasks.choices.ChoiceCollator``).

    Tokenizers without a pad token (GPT-2, LLaMA) pad with their eos token; the tokenizer itself is not
    changed. Padded positions have attention_mask 0, so the choice of pad id does not matter to the model.
    """
    spec = get_task(task)
    return _PadCollator(pad_id(tokenizer), int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
                        torch.float32 if spec.is_regression else torch.int64)


def pad_id(tokenizer) -> int:
    """The id a batch is padded with: the pad token, else the eos token; a TenpeftError if it has neither."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise TenpeftError(f"{type(tokenizer).__name__} has neither a pad nor an eos token; "
                           f"set tokenizer.pad_token before making a collator")
    return int(pad)
