"""Question answering by generation (SQuAD and DROP, as MeZO formats them for LoRETTA's LLaMA runs).

A row becomes trl's ``prompt`` / ``completion`` (MeZO's ``SQuADv2Template`` / ``DROPTemplate``: the prompt ends
in ``"Answer:"``, the completion is ``" <first answer>\\n"``) and keeps every gold answer in ``answers``. It is
trained like an instruction task (``tenpeft.lab.runners.sft``: the loss on the completion tokens only) and scored by
greedy generation: at most ``MAX_NEW_TOKENS`` new tokens, stopped at a newline or EOS, compared with each gold
answer after SQuAD's normalization (lower case, no punctuation, no articles, single spaces); a prediction's
exact match and token F1 are its best over the gold answers (MeZO's ``metrics.py``). F1 is the headline.

Data: ``<data_dir>/<task>/{train,validation}.jsonl`` with the Hub's columns, else the Hub (``rajpurkar/squad``,
``ucinlp/drop``). The official validation split is the test split (its answers are public, the test's are not);
the lab's validation split, on which the checkpoint is chosen, is carved from train (``splits.make_splits``).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.records import make_score
from tenpeft.lab.tasks.data import read_split
from tenpeft.lab.tasks.instruction import COLUMNS, InstructionKind
from tenpeft.lab.tasks.prompts import leading_special_ids
from tenpeft.lab.tasks.splits import Splits, make_splits

MAX_NEW_TOKENS = 50  # MeZO's --max_new_tokens
METRICS = ("f1", "em", "completion_ce", "perplexity")  # the headline first; higher is better for f1 and em
_PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class GenerationTask:
    """A generation dataset: its Hub id, the columns a row needs, the prompt and the gold answers of a row."""

    name: str
    hub: str
    columns: tuple[str, ...]
    prompt: Callable[[Mapping], str]
    answers: Callable[[Mapping], list[str]]
    eval_split: str = "validation"
    headline_metric: str = METRICS[0]


def _squad_prompt(row: Mapping) -> str:
    return f"Title: {row['title']}\nContext: {row['context']}\nQuestion: {row['question'].strip()}\nAnswer:"


def _drop_prompt(row: Mapping) -> str:
    return f"Passage: {row['passage']}\nQuestion: {row['question'].strip()}\nAnswer:"


GENERATION_TASKS = {t.name: t for t in (
    GenerationTask("squad", "rajpurkar/squad", ("title", "context", "question", "answers"), _squad_prompt,
                   lambda row: list(row["answers"]["text"])),
    GenerationTask("drop", "ucinlp/drop", ("passage", "question", "answers_spans"), _drop_prompt,
                   lambda row: list(row["answers_spans"]["spans"])),
)}


def _read(task: GenerationTask, data_dir: str | None) -> dict:
    import datasets

    if data_dir is None:
        found = datasets.load_dataset(task.hub)
        return {s: (found[s], f"hub:{task.hub} split {s}") for s in ("train", task.eval_split)}
    return {split: read_split(Path(data_dir) / task.name / f"{split}.jsonl",
                              f"task {task.name!r} reads <data-dir>/{task.name}/{split}.jsonl (the Hub's {task.hub} "
                              f"columns {list(task.columns)})") for split in ("train", task.eval_split)}


def _as_rows(task: GenerationTask, rows, where: str):
    missing = sorted(set(task.columns) - set(rows.column_names))
    if missing:
        raise TenpeftError(f"{where} has no column(s) {missing} (it has {rows.column_names}); task {task.name!r} "
                           f"needs {list(task.columns)}, as {task.hub} has them")

    def convert(row, index):
        answers = [a for a in task.answers(row) if a.strip()]
        if not answers:
            raise TenpeftError(f"{where}: row {index} has no gold answer, so it can be neither trained nor scored; "
                               f"drop it")
        return {"prompt": task.prompt(row), "completion": f" {answers[0]}\n", "answers": answers}

    return rows.map(convert, with_indices=True, remove_columns=rows.column_names)


def load_generation(name: str, data_dir, train_size: int | None = None, validation_size: int | None = None,
                    test_size: int | None = None, data_seed: int = 0) -> Splits:
    """The three splits of ``prompt``/``completion``/``answers`` rows of task ``name``: test from its
    ``eval_split``, validation carved from train (``splits.make_splits``, the given sizes; None: every
    training or test row, a tenth of train for validation)."""
    task = GENERATION_TASKS[name]
    read = _read(task, None if data_dir is None else str(data_dir))
    (train, where), (test, test_where) = read["train"], read[task.eval_split]
    return make_splits(_as_rows(task, train, where), _as_rows(task, test, test_where), COLUMNS, task=name,
                       train_source=where, test_source=test_where, train_size=train_size,
                       validation_size=validation_size, test_size=test_size, data_seed=data_seed)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def qa_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """``(exact match, token F1)`` of ``prediction``, each the best over the gold ``answers``."""
    pred = normalize_answer(prediction)
    golds = [normalize_answer(a) for a in answers]
    f1 = 0.0
    for gold in golds:
        same = sum((Counter(pred.split()) & Counter(gold.split())).values())
        if same:
            precision, recall = same / len(pred.split()), same / len(gold.split())
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return max(float(pred == gold) for gold in golds), f1


def _stop_ids(tokenizer) -> list[int]:
    """The newline's token (if the tokenizer has one) and EOS: where MeZO's generation stops."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return [i for i in (newline[-1] if newline else None, tokenizer.eos_token_id) if i is not None]


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_length: int) -> list[str]:
    """Greedy answers to ``prompts``, one at a time: at most ``MAX_NEW_TOKENS`` new tokens within
    ``max_length``, stopped at a newline or EOS, decoded without special tokens, first line, stripped."""
    was_training, device, prefix = model.training, next(model.parameters()).device, leading_special_ids(tokenizer)
    model.eval()
    out = []
    for prompt in prompts:
        ids = torch.tensor([prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
        budget = min(MAX_NEW_TOKENS, max_length - ids.shape[1])
        if budget < 1:
            out.append("")
            continue
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=budget,
                                eos_token_id=_stop_ids(tokenizer) or None, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(tokens[0, ids.shape[1]:], skip_special_tokens=True)
        out.append(text.strip().split("\n")[0].strip())
    model.train(was_training)
    return out


def qa_metrics(predictions: list[str], answers: list[list[str]]) -> dict:
    """Mean exact match and F1 over the held-out rows, and how many predictions were empty (scored 0)."""
    scores = [qa_scores(p, a) if p else (0.0, 0.0) for p, a in zip(predictions, answers)]
    return {"em": sum(s[0] for s in scores) / len(scores), "f1": sum(s[1] for s in scores) / len(scores),
            "empty_generations": sum(1 for p in predictions if not p)}


class GenerationKind(InstructionKind, name="generation"):
    """Question answering by generation (:data:`GENERATION_TASKS`): trained as an instruction task (``sft``),
    scored by greedy answers' exact match and F1 against the gold answers (F1 the headline, higher is better)."""

    @classmethod
    def owns(cls, ref: str) -> bool:
        return ref in GENERATION_TASKS

    @classmethod
    def known(cls) -> list[str]:
        return list(GENERATION_TASKS)

    def rows(self, spec, tokenizer) -> Splits:
        """The three splits of ``prompt``/``completion``/``answers`` rows for run ``spec``."""
        return load_generation(self.ref, spec.data.data_dir, spec.data.train_size, spec.data.validation_size,
                               spec.data.test_size, spec.data.data_seed)

    def scorer(self, spec, tokenizer, rows):
        """``(rows without answers, scorer)`` of one held-out split: the rows trl reads, and the function that
        answers their prompts by greedy generation and scores them against the gold answers."""
        prompts, answers = rows["prompt"], rows["answers"]

        def score(model) -> dict:
            return qa_metrics(generate_answers(model, tokenizer, prompts, spec.train.max_length), answers)

        return rows.remove_columns("answers"), score

    def score(self, best: dict | None, test: dict | None) -> dict:
        """The record's score: F1 on test (``value``) and on validation at the chosen checkpoint."""
        return make_score(GENERATION_TASKS[self.ref].headline_metric, best, test, higher_is_better=True)
