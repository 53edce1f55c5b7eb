"""Instruction tasks (a prompt and the reply to learn) for supervised fine-tuning with trl's SFTTrainer.

Each task gives trl's ``prompt`` / ``completion`` columns (trl appends the EOS token to the completion):

* ``alpaca_cleaned``: ``yahma/alpaca-cleaned`` from the Hub (instruction, input, output); it has only a
  train split, so its test rows are carved from it by the fixed split seed (``tenpeft.lab.tasks.splits``).
* ``hh_chosen``: the ``chosen`` dialogues of the local ``hh_harmless`` pairs (``<data_dir>/hh_harmless/
  {train,test}.jsonl``, as ``../shared/data/preference`` holds them); the prompt is the dialogue up to and
  including its last ``"\\n\\nAssistant:"``, the completion the last assistant reply.
* ``local:PATH``: a JSON / JSONL file of ``instruction`` / ``input`` (optional) / ``output`` rows, or of chat
  ``messages`` ending in an assistant turn; test rows carved as for ``alpaca_cleaned``.

Every task gives the lab's three disjoint splits (``splits.make_splits`` on the prompt and completion texts):
train, validation carved from train (the checkpoint is chosen on it) and test (reported once, at that
checkpoint).

Instruction rows are rendered with the tokenizer's chat template when it has one, else the Alpaca template.
:func:`screen` tokenizes every row before training: a row whose prompt alone fills ``max_length`` (it would
train on nothing) is skipped and counted; a row without a reply, or no row left, is a TenpeftError.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tenpeft.errors import TenpeftError
from tenpeft.lab.records import make_score
from tenpeft.lab.tasks.data import read_data_file, read_split
from tenpeft.lab.tasks.encode import map_fingerprint
from tenpeft.lab.tasks.kinds import TaskKind
from tenpeft.lab.tasks.preference import split_dialogue
from tenpeft.lab.tasks.splits import Splits, make_splits

LOCAL = "local:"
ALPACA = ("Below is an instruction that describes a task{context}. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n{input}### Response:\n")
METRICS = ("completion_ce", "perplexity")  # the headline first; lower is better for both
COLUMNS = ("prompt", "completion")  # the texts that identify a row (fingerprints, disjoint splits)


@dataclass(frozen=True)
class InstructionTask:
    """An instruction dataset: where it is (``hub`` id, or a local preference ``folder`` task), its labelled
    held-out split (``eval_split``; None: test rows carved from the train split)."""

    name: str
    hub: str | None = None
    folder: str | None = None
    eval_split: str | None = None
    headline_metric: str = METRICS[0]


INSTRUCTION_TASKS = {t.name: t for t in (InstructionTask("alpaca_cleaned", hub="yahma/alpaca-cleaned"),
                                         InstructionTask("hh_chosen", folder="hh_harmless", eval_split="test"))}


def _instruction_prompt(row: dict, tokenizer) -> str:
    extra = (row.get("input") or "").strip()
    if getattr(tokenizer, "chat_template", None):
        user = row["instruction"] + (f"\n\n{extra}" if extra else "")
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    return ALPACA.format(context=", paired with an input that provides further context" if extra else "",
                         instruction=row["instruction"], input=f"### Input:\n{extra}\n\n" if extra else "")


def _messages_pair(messages, tokenizer, where: str) -> tuple[str, str]:
    if not messages or messages[-1].get("role") != "assistant":
        raise TenpeftError(f"{where}: a messages row that does not end in an assistant turn; the last message is the "
                           f"reply that is trained")
    context = messages[:-1]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True), messages[-1]["content"]
    turns = "".join(f"\n\n{m['role'].capitalize()}: {m['content']}" for m in context)
    return f"{turns}\n\nAssistant:", " " + messages[-1]["content"]


def _pairs(rows, where: str, tokenizer, dialogue: bool):
    """``rows`` as ``prompt``/``completion`` columns; a TenpeftError for missing columns."""
    columns = set(rows.column_names)
    if dialogue:
        need = {"chosen"}
    else:
        need = {"messages"} if "messages" in columns else {"instruction", "output"}
    if need - columns:
        raise TenpeftError(f"{where} has no column(s) {sorted(need - columns)} (it has {rows.column_names}); an "
                           f"instruction file holds instruction/input/output rows or chat messages")

    def convert(row):
        if dialogue:
            prompt, reply = split_dialogue(row["chosen"], where)
        elif "messages" in need:
            prompt, reply = _messages_pair(row["messages"], tokenizer, where)
        else:
            prompt, reply = _instruction_prompt(row, tokenizer), row["output"] or ""
        return {"prompt": prompt, "completion": reply}

    return rows.map(convert, remove_columns=rows.column_names,
                    new_fingerprint=map_fingerprint(rows, tokenizer, convert, where, dialogue, sorted(need)))


def _read(name: str, data_dir: str | None):
    """``{split: (rows, where)}`` of a named or ``local:`` task: ``train`` and, where it has one, ``eval``."""
    import datasets

    if name.startswith(LOCAL):
        path = Path(name[len(LOCAL):]).expanduser()
        return {"train": read_split(path, f"task {name!r} (local:PATH) reads a JSON or JSONL file")}
    task = INSTRUCTION_TASKS[name]
    if task.hub:
        return {"train": (datasets.load_dataset(task.hub, split="train"), f"hub:{task.hub}")}
    if data_dir is None:
        raise TenpeftError(f"task {name!r} reads the local {task.folder} pairs: pass --data-dir (e.g. "
                           f"../shared/data/preference)")
    return {key: read_split(Path(data_dir) / task.folder / f"{split}.jsonl",
                            f"task {name!r} reads <data-dir>/{task.folder}/{split}.jsonl")
            for split, key in (("train", "train"), (task.eval_split, "eval"))}


def _read_task_file(file):
    """An ``lm`` task file's splits with its columns renamed to the standard roles."""
    out = {}
    for key, path in (("train", file.train), ("eval", file.eval)):
        if path is None:
            continue
        rows, renames = read_data_file(Path(path)), {column: role for role, column in file.columns if column != role}
        missing = sorted(set(renames) - set(rows.column_names))
        if missing:
            raise TenpeftError(f"{path} lacks column(s) {missing} that task file {file.source!r} maps; columns found: "
                               f"{rows.column_names}")
        clashes = sorted(set(renames.values()) & (set(rows.column_names) - set(renames)))
        rows = rows.remove_columns(clashes).rename_columns(renames)
        out[key] = (rows, path)
    return out


def load_instruction(name: str, data_dir, tokenizer, train_size: int | None = None,
                     validation_size: int | None = None, test_size: int | None = None, data_seed: int = 0,
                     file=None) -> Splits:
    """The three splits of ``prompt``/``completion`` rows of task ``name`` (an ``lm`` task file: its ``file``):
    ``splits.make_splits`` with the given sizes (None: every training or test row, a tenth of train for
    validation; a train-only source: a tenth of train carved as test)."""
    if file is None and name not in INSTRUCTION_TASKS and not name.startswith(LOCAL):
        raise TenpeftError(f"unknown instruction task {name!r}; known: {', '.join(INSTRUCTION_TASKS)} or local:PATH")
    read = _read_task_file(file) if file is not None else _read(name, None if data_dir is None else os.fspath(data_dir))
    dialogue = name == "hh_chosen"
    (train, where), held = read["train"], read.get("eval")
    test, test_where = (None, None) if held is None else (_pairs(held[0], held[1], tokenizer, dialogue), held[1])
    return make_splits(_pairs(train, where, tokenizer, dialogue), test, COLUMNS, task=name, train_source=where,
                       test_source=test_where, train_size=train_size, validation_size=validation_size,
                       test_size=test_size, data_seed=data_seed)


def screen(rows, tokenizer, max_length: int, where: str, replies: tuple[str, ...] = ("completion",)):
    """``(rows, skipped)``: the rows whose prompt leaves room for a reply token within ``max_length`` tokens,
    and how many were skipped (trl would truncate their replies away). A row with an empty reply column (of
    ``replies``), or no row left, is a TenpeftError."""
    keep = []
    for i, row in enumerate(rows):
        empty = [c for c in replies if not row[c].strip()]
        if empty:
            raise TenpeftError(f"{where}: row {i} has no reply (empty {empty[0]}), so nothing of it would be "
                               f"trained or scored; fill or drop it")
        keep.append(len(tokenizer(row["prompt"])["input_ids"]) < max_length)
    if not any(keep):
        raise TenpeftError(f"{where}: every prompt fills --max-length {max_length} tokens, leaving no reply token to "
                           f"train or score; raise --max-length")
    return rows.select([i for i, k in enumerate(keep) if k]), keep.count(False)


class InstructionKind(TaskKind, name="instruction"):
    """Prompt and reply rows (a named instruction task, ``local:PATH`` or an ``lm`` task file), trained by
    the ``sft`` runner on the reply tokens and scored by the held-out completion cross-entropy (lower is
    better)."""

    objective = "sft"
    replies = ("completion",)
    columns = COLUMNS

    def __init__(self, ref: str, *, task=None, **kwargs):
        super().__init__(ref, **kwargs)
        self.file = task.file if task is not None else None

    @classmethod
    def owns(cls, ref: str) -> bool:
        return ref in INSTRUCTION_TASKS or ref.startswith(LOCAL)

    @classmethod
    def known(cls) -> list[str]:
        return [*INSTRUCTION_TASKS, f"{LOCAL}PATH"]

    def check(self, spec, config) -> None:
        """Nothing beyond the rows the runner reads and screens."""

    def rows(self, spec, tokenizer) -> Splits:
        """The three splits of ``prompt``/``completion`` rows for run ``spec``."""
        return load_instruction(self.ref, spec.data.data_dir, tokenizer, spec.data.train_size,
                                spec.data.validation_size, spec.data.test_size, spec.data.data_seed, file=self.file)

    def scorer(self, spec, tokenizer, rows):
        """``(rows trl reads, scorer or None)`` of one held-out split: no score beyond the completion
        cross-entropy."""
        return rows, None

    def score(self, best: dict | None, test: dict | None) -> dict:
        """The record's score: the completion cross-entropy on test (``value``) and on validation at the chosen
        checkpoint (``validation``); lower is better."""
        return make_score(METRICS[0], best, test, higher_is_better=False)

