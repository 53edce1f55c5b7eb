"""The papers' training protocols as data: per-task settings read off each paper's official scripts,
applied by the studies' ``--paper NAME`` (``studies.expand``). One home for these numbers.

* ``lorta-base`` / ``lorta-large``: the LoRTA code's GLUE configs for RoBERTa-base / -large
  (ihounie/lorta, ``nlu/glue/create_json_config.py``): epochs, adapter and classifier learning
  rates per task, batch 64, max length 512 (base) or 128 (large), warm-up ratio 0.06, linear
  schedule, no weight decay, ``max_grad_norm`` 1000.
* ``loretta``: the LoRETTA code's BERT-family GLUE run (yifanycc/loretta,
  ``bert_model/run_all_bert_exp.sh`` and ``finetune.sh``): 10 epochs, batch 8, lr 1e-4 for every
  trained parameter, max length 128, a constant schedule (transformers' ``constant`` ignores the
  script's ``--warmup_step=500``, so there is no warm-up). Ranks stay the study's (``--ranks``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tenpeft.errors import TenpeftError


@dataclass(frozen=True)
class Protocol:
    """One paper's settings for one task: ``epochs`` over the training split, ``lr`` for the
    adapter, ``head_lr`` for the task head (None: ``lr``), and the rest of the optimisation."""

    epochs: float
    lr: float
    batch_size: int
    max_length: int
    head_lr: float | None = None
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0

    def train_settings(self, train_examples: int) -> dict:
        """TrainConfig fields for a training split of ``train_examples`` (epochs -> optimizer steps)."""
        steps = max(1, math.ceil(self.epochs * math.ceil(train_examples / self.batch_size)))
        return {"lr": self.lr, "head_lr": self.head_lr, "max_steps": steps, "batch_size": self.batch_size,
                "max_length": self.max_length, "warmup_ratio": self.warmup_ratio, "schedule": self.schedule,
                "grad_clip": self.grad_clip, "weight_decay": self.weight_decay}


def _lorta(max_length: int, table: dict[str, tuple[float, float, float]]) -> dict[str, Protocol]:
    return {task: Protocol(epochs, lr, 64, max_length, head_lr=head_lr, warmup_ratio=0.06, grad_clip=1000.0)
            for task, (epochs, head_lr, lr) in table.items()}


# task: (epochs, classifier_lr, learning_rate), as create_json_config.py writes them
PROTOCOLS: dict[str, dict[str, Protocol]] = {
    "lorta-base": _lorta(512, {"sst2": (60, 4e-3, 4e-3), "mrpc": (30, 4e-3, 1e-2), "cola": (80, 1e-3, 1e-2),
                               "qnli": (25, 4e-3, 1e-2), "rte": (160, 1e-2, 1e-2), "stsb": (80, 5e-3, 5e-2)}),
    "lorta-large": _lorta(128, {"sst2": (10, 6e-3, 1e-2), "mrpc": (40, 3e-3, 3e-2), "cola": (40, 6e-3, 1e-2),
                                "qnli": (20, 2e-4, 1e-2), "rte": (40, 2e-3, 2e-2), "stsb": (20, 2e-3, 2e-2)}),
    "loretta": {task: Protocol(10, 1e-4, 8, 128, schedule="constant")
                for task in ("sst2", "mrpc", "cola", "qnli", "rte", "stsb", "mnli", "qqp")},
}


def get_protocol(name: str, task: str) -> Protocol:
    """The settings of paper protocol ``name`` for ``task``; a TenpeftError naming what exists."""
    table = PROTOCOLS.get(name)
    if table is None:
        raise TenpeftError(f"unknown --paper protocol {name!r}; known: {sorted(PROTOCOLS)} "
                           f"(or --paper alone for the study's paper scale)")
    if task not in table:
        raise TenpeftError(f"--paper {name} has no settings for task {task!r}; it covers {sorted(table)}")
    return table[task]
