"""Preference tasks (pairs of a chosen and a rejected reply to one prompt) for DPO with trl.

A task is read from a local folder ``<data_dir>/<task>/{train,test}.jsonl`` (rows with ``chosen`` and
``rejected`` dialogues, as ``../shared/data/preference`` holds them), or from the Hub. Each dialogue is
split at its last ``"\\n\\nAssistant:"`` into the prompt (everything up to and including the marker) and the
reply, which gives trl's ``prompt`` / ``chosen`` / ``rejected`` columns.

``orca_dpo`` is the LoRTA paper's DPO data, ``argilla/distilabel-intel-orca-dpo-pairs`` (one ``train`` split
of ``system``/``input``/``chosen``/``rejected`` strings), filtered as its dataset card recommends (no ties,
``chosen_score >= 8``, no GSM8K train questions); its test pairs are carved from train by the fixed split
seed, and each pair is written in HH's markers, ``"\n\nHuman: {system}\n\n{input}\n\nAssistant:"`` then
``" {reply}"`` (the paper does not publish its formatting).

Every task gives the lab's three disjoint splits (``splits.make_splits`` on the prompt, chosen and rejected
texts): train, validation carved from train (the checkpoint is chosen on it) and test (reported once).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tenpeft.errors import TenpeftError
from tenpeft.lab.records import make_score
from tenpeft.lab.tasks.data import read_split
from tenpeft.lab.tasks.kinds import TaskKind
from tenpeft.lab.tasks.splits import Splits, make_splits

ASSISTANT = "\n\nAssistant:"
METRICS = ("reward_accuracy", "dpo_loss", "reward_margin")  # the headline first
COLUMNS = ("prompt", "chosen", "rejected")  # the texts that identify a pair (fingerprints, disjoint splits)


@dataclass(frozen=True)
class PreferenceTask:
    """A preference dataset: its name, where the Hub keeps it (``hub``, ``hub_dir``), its splits (``eval_split``
    None: test pairs carved from train), the columns a row must have, how a row becomes trl's
    ``prompt``/``chosen``/``rejected`` (``pair(row, where)``) and which rows are kept (``keep(row)``)."""

    name: str
    hub: str
    hub_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    columns: tuple[str, ...] = ("chosen", "rejected")
    pair: Callable[[dict, str], dict] | None = None
    keep: Callable[[dict], bool] | None = None
    headline_metric: str = METRICS[0]


def _dialogue_pair(row: dict, where: str) -> dict:
    """An HH row: both dialogues cut after their last assistant marker (the prompt is the chosen one's)."""
    prompt, chosen = split_dialogue(row["chosen"], where)
    _, rejected = split_dialogue(row["rejected"], where)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _orca_pair(row: dict, where: str) -> dict:
    """An orca row in HH's markers: the system message (if any) and the input as the human turn."""
    turn = f"{row['system']}\n\n{row['input']}" if row.get("system") else row["input"]
    return {"prompt": f"\n\nHuman: {turn}{ASSISTANT}", "chosen": f" {row['chosen']}", "rejected": f" {row['rejected']}"}


def _orca_keep(row: dict) -> bool:
    """The dataset card's recommended filter."""
    return row["status"] != "tie" and row["chosen_score"] >= 8 and not row["in_gsm8k_train"]


PREFERENCE_TASKS = {t.name: t for t in (
    PreferenceTask("hh_harmless", "Anthropic/hh-rlhf", "harmless-base", pair=_dialogue_pair),
    PreferenceTask("orca_dpo", "argilla/distilabel-intel-orca-dpo-pairs", eval_split=None,
                   columns=("system", "input", "chosen", "rejected", "status", "chosen_score", "in_gsm8k_train"),
                   pair=_orca_pair, keep=_orca_keep),
)}


def split_dialogue(text: str, where: str) -> tuple[str, str]:
    """``(prompt, reply)``: the dialogue cut after its last ``ASSISTANT`` marker."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise TenpeftError(f"{where}: a dialogue without {ASSISTANT!r}: {text[:60]!r}...; each row's chosen and "
                           f"rejected must be Human/Assistant dialogues ending in an assistant reply")
    cut += len(ASSISTANT)
    return text[:cut], text[cut:]


def _as_pairs(task: PreferenceTask, rows, where: str):
    """``rows`` as trl's ``prompt``, ``chosen``, ``rejected`` columns."""
    _check_columns(task, rows, where)
    return rows.map(lambda row: task.pair(row, where), remove_columns=rows.column_names)


def _check_columns(task: PreferenceTask, rows, where: str) -> None:
    missing = set(task.columns) - set(rows.column_names)
    if missing:
        raise TenpeftError(f"{where} has no column(s) {sorted(missing)} (it has {rows.column_names}); a "
                           f"{task.name} file holds {', '.join(task.columns)}")


def _read(task: PreferenceTask, data_dir: str | None):
    """``{split: (rows, where)}`` of the task's splits (train only when its held-out pairs are carved)."""
    import datasets

    splits = [s for s in (task.train_split, task.eval_split) if s]
    if data_dir is None:
        found = datasets.load_dataset(task.hub, data_dir=task.hub_dir)
        where = f"hub:{task.hub}" + (f"/{task.hub_dir}" if task.hub_dir else "")
        return {s: (found[s], f"{where} split {s}") for s in splits}
    return {split: read_split(Path(data_dir) / task.name / f"{split}.jsonl",
                              f"a preference task reads <data-dir>/{task.name}/{split}.jsonl (e.g. --data-dir "
                              f"../shared/data/preference)") for split in splits}


def _kept(task: PreferenceTask, rows, where: str):
    if task.keep is None:
        return rows
    _check_columns(task, rows, where)
    kept = rows.filter(task.keep)
    if len(kept) == 0:
        raise TenpeftError(f"{where}: none of its {len(rows)} pairs passes {task.name}'s filter; check the file")
    return kept


def load_preference(name: str, data_dir: str | os.PathLike | None, train_size: int | None = None,
                    validation_size: int | None = None, test_size: int | None = None, data_seed: int = 0) -> Splits:
    """The three splits of ``prompt``/``chosen``/``rejected`` pairs of task ``name`` (``splits.make_splits``
    with the given sizes; None: every training or test pair, a tenth of train for validation; a task without
    an evaluation split: a tenth of train carved as test)."""
    if name not in PREFERENCE_TASKS:
        raise TenpeftError(f"unknown preference task {name!r}; known: {', '.join(PREFERENCE_TASKS)}")
    task = PREFERENCE_TASKS[name]
    read = _read(task, None if data_dir is None else os.fspath(data_dir))
    rows, where = read[task.train_split]
    test, test_where = None, None
    if task.eval_split is not None:
        held, test_where = read[task.eval_split]
        test = _as_pairs(task, _kept(task, held, test_where), test_where)
    return make_splits(_as_pairs(task, _kept(task, rows, where), where), test, COLUMNS, task=name,
                       train_source=where, test_source=test_where, train_size=train_size,
                       validation_size=validation_size, test_size=test_size, data_seed=data_seed)


class PreferenceKind(TaskKind, name="preference"):
    """Chosen and rejected replies to one prompt (:data:`PREFERENCE_TASKS`), trained by the ``dpo`` runner and
    scored by held-out reward accuracy."""

    objective = "dpo"
    replies = ("chosen", "rejected")
    columns = COLUMNS

    @classmethod
    def owns(cls, ref: str) -> bool:
        return ref in PREFERENCE_TASKS

    @classmethod
    def known(cls) -> list[str]:
        return list(PREFERENCE_TASKS)

    def check(self, spec, config) -> None:
        """Nothing beyond the pairs the runner reads and screens."""

    def rows(self, spec, tokenizer) -> Splits:
        """The three splits of ``prompt``/``chosen``/``rejected`` pairs for run ``spec``."""
        return load_preference(self.ref, spec.data.data_dir, spec.data.train_size, spec.data.validation_size,
                               spec.data.test_size, spec.data.data_seed)

    def score(self, best: dict | None, test: dict | None) -> dict:
        """The record's score: reward accuracy on test (``value``) and on validation at the chosen checkpoint."""
        return make_score(PREFERENCE_TASKS[self.ref].headline_metric, best, test)
