"""Preference tasks (pairs of a chosen and a rejected reply to one prompt) for DPO with trl.

A task is read from a local folder ``<data_dir>/<task>/{train,test}.jsonl`` (rows with ``chosen`` and
``rejected`` dialogues, as ``../shared/data/preference`` holds them), or from the Hub. Each dialogue is
split at its last ``"\\n\\nAssistant:"`` into the prompt (everything up to and including the marker) and the
reply, which gives trl's ``prompt`` / ``chosen`` / ``rejected`` columns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tenpeft.errors import TenpeftError

ASSISTANT = "\n\nAssistant:"
METRICS = ("reward_accuracy", "dpo_loss", "reward_margin")  # the headline first


@dataclass(frozen=True)
class PreferenceTask:
    """A preference dataset: its name, where the Hub keeps it (``hub``, ``hub_dir``) and its splits."""

    name: str
    hub: str
    hub_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    headline_metric: str = METRICS[0]


PREFERENCE_TASKS = {t.name: t for t in (PreferenceTask("hh_harmless", "Anthropic/hh-rlhf", "harmless-base"),)}


def is_preference(name: str) -> bool:
    """Whether ``name`` is a preference task (these never chain with others)."""
    return name in PREFERENCE_TASKS


def split_dialogue(text: str, where: str) -> tuple[str, str]:
    """``(prompt, reply)``: the dialogue cut after its last ``ASSISTANT`` marker."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise TenpeftError(f"{where}: a dialogue without {ASSISTANT!r}: {text[:60]!r}...; each row's chosen and "
                           f"rejected must be Human/Assistant dialogues ending in an assistant reply")
    cut += len(ASSISTANT)
    return text[:cut], text[cut:]


def _as_pairs(rows, where: str):
    """``rows`` (``chosen``, ``rejected``) as trl's ``prompt``, ``chosen``, ``rejected`` columns."""
    missing = {"chosen", "rejected"} - set(rows.column_names)
    if missing:
        raise TenpeftError(f"{where} has no column(s) {sorted(missing)} (it has {rows.column_names}); a preference "
                           f"file holds chosen and rejected dialogues")

    def split(row):
        prompt, chosen = split_dialogue(row["chosen"], where)
        _, rejected = split_dialogue(row["rejected"], where)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    return rows.map(split, remove_columns=rows.column_names)


def _read(task: PreferenceTask, data_dir: str | None):
    import datasets

    if data_dir is None:
        found = datasets.load_dataset(task.hub, data_dir=task.hub_dir)
        return {s: (found[s], f"hub:{task.hub}/{task.hub_dir} split {s}") for s in (task.train_split, task.eval_split)}
    folder = Path(data_dir) / task.name
    out = {}
    for split in (task.train_split, task.eval_split):
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            raise TenpeftError(f"no {path}: a preference task reads <data-dir>/{task.name}/{split}.jsonl "
                               f"(e.g. --data-dir ../shared/data/preference)")
        out[split] = (datasets.Dataset.from_json(str(path)), str(path))
    return out


def load_preference(name: str, data_dir: str | os.PathLike | None, train_size: int | None = None,
                    eval_size: int | None = None, data_seed: int = 0):
    """``(train, eval)`` datasets of ``prompt``/``chosen``/``rejected`` for task ``name``, each subsampled
    to its size (None: every row) by a shuffle with ``data_seed``."""
    from tenpeft.lab.tasks.data import subsample

    if name not in PREFERENCE_TASKS:
        raise TenpeftError(f"unknown preference task {name!r}; known: {', '.join(PREFERENCE_TASKS)}")
    task = PREFERENCE_TASKS[name]
    read = _read(task, None if data_dir is None else os.fspath(data_dir))
    parts = []
    for split, size in ((task.train_split, train_size), (task.eval_split, eval_size)):
        rows, where = read[split]
        parts.append(_as_pairs(subsample(rows, size, data_seed), where))
    return parts[0], parts[1]
