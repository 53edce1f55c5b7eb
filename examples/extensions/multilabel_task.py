"""A new task kind in one file: multi-label classification (each text carries any number of the task's labels).

``--tasks multilabel:DIR`` reads ``DIR/train.jsonl`` and ``DIR/validation.jsonl``, rows
``{"text": "...", "labels": ["sports", "politics"]}``; the classes are the sorted label names of the train
file. The supervised runner trains it (encoders: a sequence classifier with one logit per class) with a
sigmoid per class (binary cross-entropy averaged over the classes) and scores it by micro-F1 (the headline)
and the exact match of the predicted label set (a class is predicted when its logit is above 0)::

    PYTHONPATH=examples/extensions python studies/rank_ablation.py --import multilabel_task \\
        --tasks multilabel:path/to/dir --model tiny-bert --methods lora --ranks 2 --seeds 0

What a kind gives (``tenpeft.lab.tasks.kinds.TaskKind``): which task arguments it owns, its objective (the
runner), its checks before compute, and for the supervised runner a ``task`` (a ``TaskSpec`` whose ``loss``,
``predict`` and ``score`` the loop calls) and ``prepare`` (the encoded splits).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import datasets
import numpy as np
import torch.nn.functional as F

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks import TaskKind, TaskSpec
from tenpeft.lab.tasks.classification import PreparedTask
from tenpeft.lab.tasks.splits import make_splits
from tenpeft.lab.tasks.encode import make_collator

PREFIX = "multilabel:"


@dataclasses.dataclass(frozen=True)
class MultiLabelSpec(TaskSpec):
    """A task whose label is a 0/1 vector over ``num_labels`` classes."""

    def loss(self, logits, labels, reduction: str = "mean"):
        per_example = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(-1)
        return per_example if reduction == "none" else per_example.mean()

    def predict(self, logits, batch: dict):
        return (logits > 0).long(), batch["labels"].long()

    def score(self, predictions, labels) -> dict[str, float]:
        pred, gold = np.asarray(predictions).astype(bool), np.asarray(labels).astype(bool)
        marked = pred.sum() + gold.sum()
        return {"micro_f1": float(2 * (pred & gold).sum() / marked) if marked else 0.0,
                "exact_match": float((pred == gold).all(axis=1).mean())}


def _read(folder: Path, split: str) -> datasets.Dataset:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise TenpeftError(f"no {path}: a multilabel task reads DIR/train.jsonl and DIR/validation.jsonl")
    rows = datasets.Dataset.from_json(str(path))
    if {"text", "labels"} - set(rows.column_names):
        raise TenpeftError(f"{path} needs columns 'text' and 'labels' (a list of label names); it has {rows.column_names}")
    return rows


class MultiLabelKind(TaskKind, name="multilabel"):
    """``multilabel:DIR`` tasks, trained by the supervised loop on encoders."""

    objective = "supervised"
    packable = measurable = True

    def __init__(self, ref: str, **kwargs):
        folder = Path(os.path.realpath(os.path.expanduser(ref[len(PREFIX):])))
        super().__init__(f"{PREFIX}{folder}", label=folder.name, **kwargs)
        self.folder = folder

    @classmethod
    def owns(cls, ref: str) -> bool:
        return ref.startswith(PREFIX)

    @property
    def task(self) -> MultiLabelSpec:
        return MultiLabelSpec(self.folder.name, ("text",), len(self.classes), ("micro_f1", "exact_match"),
                              ("validation",))

    def check(self, spec, config) -> None:
        from tenpeft.lab.models import is_decoder

        if is_decoder(config):
            raise TenpeftError(f"task {self.ref!r} trains a sequence classifier; use an encoder (e.g. --model tiny-bert)")
        unknown = sorted({n for names in _read(self.folder, "validation")["labels"] for n in names} - set(self.classes))
        if unknown:
            raise TenpeftError(f"{self.folder}/validation.jsonl has label(s) {unknown} that train.jsonl never names")

    @functools.cached_property
    def classes(self) -> list[str]:
        """The sorted label names of the train file (at least 2), read once."""
        classes = sorted({name for names in _read(self.folder, "train")["labels"] for name in names})
        if len(classes) < 2:
            raise TenpeftError(f"{self.folder}/train.jsonl names {len(classes)} label(s); a multilabel task needs 2 or more")
        return classes

    def prepare(self, spec, tokenizer, decoder: bool) -> PreparedTask:
        task, index = self.task, {name: i for i, name in enumerate(self.classes)}

        def encode(batch):
            out = dict(tokenizer(batch["text"], truncation=True, max_length=spec.train.max_length))
            hot = np.zeros((len(batch["text"]), len(index)), dtype=np.float32)
            for row, names in enumerate(batch["labels"]):
                hot[row, [index[n] for n in names]] = 1.0
            return {**out, "labels": hot}

        data = spec.data  # the lab's three disjoint splits: validation carved from train, test = validation.jsonl
        splits = make_splits(_read(self.folder, "train"), _read(self.folder, "validation"), ("text",), task=task.name,
                             train_source=f"{self.folder}/train.jsonl", test_source=f"{self.folder}/validation.jsonl",
                             train_size=data.train_size, validation_size=data.validation_size,
                             test_size=data.test_size, data_seed=data.data_seed)
        train, validation, test = (rows.map(encode, batched=True, remove_columns=rows.column_names)
                                   for rows in (splits.train, splits.validation, splits.test))
        return PreparedTask(task, train, validation, test, make_collator(tokenizer, task), None,
                            splits.describe(("text",)))
