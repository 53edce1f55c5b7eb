"""Multiple-choice prompt tasks for decoder LMs (COPA and ReCoRD, as MeZO formats them for LoRETTA's LLaMA
runs): each example has its own candidate texts (ReCoRD: one per entity of its passage, any of several correct), and a candidate's score is the mean log-likelihood of its tokens after
the shared context (MeZO's ``one_step_pred`` and ``--train_as_classification``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import datasets
import numpy as np
import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.classification import ClassificationKind
from tenpeft.lab.tasks.encode import check_encodable, check_encoder_task, map_fingerprint, pad_id
from tenpeft.lab.tasks.prompts import leading_special_ids
from tenpeft.lab.tasks.specs import get_task


@dataclass(frozen=True)
class ChoicePrompt:
    """``context(example)`` is the text every candidate continues (MeZO's ``encode``); ``verbalize(example)``
    the full text of each candidate, context included (MeZO's ``verbalize``), one per class index."""

    context: Callable[[Mapping], str]
    verbalize: Callable[[Mapping], list[str]]


def _copa_context(example: Mapping) -> str:
    """MeZO's CopaTemplate.get_prompt: the premise without its final period, then " so " or " because "."""
    premise = example["premise"].rstrip()
    premise = premise[:-1] if premise.endswith(".") else premise
    if example["question"] not in ("cause", "effect"):
        raise TenpeftError(f"COPA's question must be 'cause' or 'effect', not {example['question']!r}")
    return premise + (" because " if example["question"] == "cause" else " so ")


def _lower_first_word(text: str) -> str:
    """MeZO's ``capitalization="correct"``: the first word lower-cased unless it is "I"."""
    words = text.split(" ")
    if words[0] != "I":
        words[0] = words[0].lower()
    return " ".join(words)


def _copa_candidates(example: Mapping) -> list[str]:
    return [_copa_context(example) + _lower_first_word(example[c]) for c in ("choice1", "choice2")]


def _record_passage(example: Mapping) -> str:
    return example["passage"].replace("@highlight\n", "- ")


def _record_context(example: Mapping) -> str:
    """MeZO's ReCoRDTemplateGPT3.encode: the passage with its highlights as "- " lines, then a new "-" line."""
    return f"{_record_passage(example)}\n-"


def _record_candidates(example: Mapping) -> list[str]:
    """MeZO's ReCoRDTemplateGPT3.verbalize: the query with ``@placeholder`` replaced by each entity."""
    return [f"{_record_passage(example)}\n- {example['query'].replace('@placeholder', entity)}"
            for entity in example["entities"]]


CHOICES: dict[str, ChoicePrompt] = {"copa": ChoicePrompt(_copa_context, _copa_candidates),
                                    "record": ChoicePrompt(_record_context, _record_candidates)}


def get_choices(task) -> ChoicePrompt:
    """The :class:`ChoicePrompt` of ``task``; TenpeftError for a task that has none."""
    spec = get_task(task)
    if spec.file is not None or spec.name not in CHOICES:
        raise TenpeftError(f"task {spec.name!r} is not a multiple-choice task; those are {', '.join(CHOICES)}")
    return CHOICES[spec.name]


def _encode_row(prompt: ChoicePrompt, tokenizer, row: Mapping, prefix: list[int], budget: int, index: int):
    """(candidate token ids, option lengths) of one example: MeZO's option length is the tokens the
    candidate's full text has beyond its context; long texts keep their last ``budget`` tokens."""
    context = prompt.context(row).strip(" ")
    fulls = [text.strip(" ") for text in prompt.verbalize(row)]
    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    lens = [len(full) - n_context for full in ids]
    bad = [k for k, n in enumerate(lens) if not 0 < n < min(budget, len(prefix) + len(ids[k]))]
    if bad:
        k = bad[0]
        raise TenpeftError(f"example {index}: candidate {k} ({fulls[k]!r}) has {lens[k]} token(s) after its context; "
                           f"a candidate needs at least 1, fewer than the {budget} that --max-length leaves, and a "
                           f"token before it; fix the row or raise --max-length")
    return [prefix + full[-budget:] for full in ids], lens


def encode_choices(task, tokenizer, dataset: datasets.Dataset, max_length: int = 256) -> datasets.Dataset:
    """``dataset`` as candidate texts for a decoder LM: columns input_ids (one token list per candidate,
    after the tokenizer's leading special tokens), option_lens (the scored tokens at the end of each) and
    ``labels`` (the correct candidate's index; for a task with several correct answers (ReCoRD) the first's,
    and a ``gold`` column of every correct candidate's index); scored by :class:`tenpeft.lab.models.ChoiceScorer`."""
    spec = get_task(task)
    prompt = get_choices(spec)
    check_encodable(spec, dataset, max_length)
    prefix = leading_special_ids(tokenizer)
    budget = max_length - len(prefix)

    def tokenize(batch: dict, indices: list[int]) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        encoded = [_encode_row(prompt, tokenizer, row, prefix, budget, i) for row, i in zip(rows, indices)]
        out = {"input_ids": [e[0] for e in encoded], "option_lens": [e[1] for e in encoded],
               "labels": np.asarray(batch["label"], dtype=np.int64)}
        if spec.answers:
            out["gold"] = [_gold(row, *spec.answers) for row in rows]
        return out

    return dataset.map(tokenize, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       desc=f"candidates of {spec.name}",
                       new_fingerprint=map_fingerprint(dataset, tokenizer, tokenize, spec, max_length))


def _gold(row: Mapping, candidates: str, answers: str) -> list[int]:
    """The indices of every candidate that is a correct answer (MeZO: a prediction among them is correct)."""
    correct = set(row[answers])
    return [k for k, option in enumerate(row[candidates]) if option in correct]


@dataclass
class ChoiceCollator:
    """Pads a batch of :func:`encode_choices` rows to ``[batch, candidates, tokens]`` (right padding; a
    missing candidate has option length 0), with ``gold`` a ``[batch, candidates]`` mask of the correct
    candidates when the rows have one; a module-level class so DataLoader workers can pickle it."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise TenpeftError("cannot collate an empty batch; use a batch size of at least 1")
        b, c = len(features), max(len(f["option_lens"]) for f in features)
        t = max(len(ids) for f in features for ids in f["input_ids"])
        input_ids = torch.full((b, c, t), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((b, c, t), dtype=torch.long)
        option_lens = torch.zeros((b, c), dtype=torch.long)
        for i, f in enumerate(features):
            for k, ids in enumerate(f["input_ids"]):
                input_ids[i, k, :len(ids)] = torch.as_tensor(ids)
                attention_mask[i, k, :len(ids)] = 1
            option_lens[i, :len(f["option_lens"])] = torch.as_tensor(f["option_lens"])
        labels = torch.as_tensor([f["labels"] for f in features], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "option_lens": option_lens, "labels": labels}
        if "gold" in features[0]:
            batch["gold"] = torch.zeros((b, c), dtype=torch.bool)
            for i, f in enumerate(features):
                batch["gold"][i, f["gold"]] = True
        return batch


class ChoiceKind(ClassificationKind, name="multiple_choice"):
    """A multiple-choice task (:data:`CHOICES`) for decoders: each candidate scored by its mean token
    log-likelihood (:class:`tenpeft.lab.models.ChoiceScorer`), trained by cross-entropy over the candidates."""

    def check_model(self, decoder: bool) -> None:
        if not decoder:
            check_encoder_task(self.task)  # refuses it: a prompt task for decoders
        get_choices(self.task)

    def encoder(self, decoder: bool):
        return encode_choices

    def label_ids(self, tokenizer, decoder: bool) -> None:
        return None

    def collator(self, tokenizer):
        return ChoiceCollator(pad_id(tokenizer))

    def scorer(self, lm, prepared):
        from tenpeft.lab.models import ChoiceScorer

        return ChoiceScorer(lm)
