"""Prompt templates for decoder LMs (MeZO's, as in LoRETTA's LLaMA runs) and prompt encoding."""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable, Mapping

import datasets
import numpy as np

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.encode import check_encodable, map_fingerprint
from tenpeft.lab.tasks.specs import get_task


@dataclass(frozen=True)
class PromptTemplate:
    """A ``str.format`` template over a task's text columns and one label word per class index;
    the model is scored on the first token of each label word right after the prompt."""

    template: str
    label_words: tuple[str, ...]
    prepare: Callable[[dict], dict] | None = None  # rewrites an example's columns before formatting

    @property
    def columns(self) -> tuple[str, ...]:
        """The text columns the template reads, in order."""
        return tuple(field for _, field, _, _ in string.Formatter().parse(self.template) if field)

    @property
    def tail(self) -> str:
        """The fixed text after the last column: what the prompt always ends with."""
        return self.template.rsplit("}", 1)[-1]

    def format(self, example: Mapping) -> str:
        """The prompt for one example (a mapping with the template's columns); no label word appended."""
        missing = [c for c in self.columns if c not in example]
        if missing:
            raise TenpeftError(f"example lacks column(s) {missing} that the prompt template needs")
        values = {c: example[c] for c in self.columns}
        return self.template.format(**(self.prepare(values) if self.prepare else values))


def _as_question(example: dict) -> dict:
    """MeZO's BoolQ question: first letter upper-cased, ending in a question mark."""
    question = example["question"]
    question = question if question.endswith("?") else question + "?"
    return {**example, "question": question[:1].upper() + question[1:]}


def _lower_pronoun(example: dict) -> dict:
    """MeZO's WSC: the pronoun (``span2_text``) lower-cased."""
    return {**example, "span2_text": example["span2_text"].lower()}


YES_NO = (" Yes", " No")
PROMPTS: dict[str, PromptTemplate] = {
    "sst2": PromptTemplate("{sentence} It was", (" terrible", " great")),
    "rte": PromptTemplate("{sentence1}\nDoes this mean that \"{sentence2}\" is true? Yes or No?\n", YES_NO),
    "mrpc": PromptTemplate("{sentence1}\n{sentence2}\nDo both sentences mean the same thing? Yes or No?\n",
                           YES_NO[::-1]),
    "qqp": PromptTemplate("{question1}\n{question2}\nDo both questions ask the same thing? Yes or No?\n",
                          YES_NO[::-1]),
    "qnli": PromptTemplate("{question}\n{sentence}\nDoes the sentence answer the question? Yes or No?\n", YES_NO),
    "mnli": PromptTemplate("{premise}\nDoes this mean that \"{hypothesis}\" is true? Yes, Maybe or No?\n",
                           (" Yes", " Maybe", " No")),
    "cola": PromptTemplate("{sentence}\nIs this sentence grammatically correct? Yes or No?\n", YES_NO[::-1]),
    # SuperGLUE as MeZO (large_models/templates.py) writes it: the answer follows the newline, no space
    "boolq": PromptTemplate("{passage} {question}\n", ("No", "Yes"), _as_question),
    "cb": PromptTemplate("Suppose {premise} Can we infer that \"{hypothesis}\"? Yes, No, or Maybe?\n",
                         ("Yes", "No", "Maybe")),
    "wic": PromptTemplate("Does the word \"{word}\" have the same meaning in these two sentences? Yes, No?\n"
                          "{sentence1}\n{sentence2}\n", ("No", "Yes")),
    "wsc": PromptTemplate("{text}\nIn the previous sentence, does the pronoun \"{span2_text}\" refer to {span1_text}? "
                          "Yes or No?\n", ("No", "Yes"), _lower_pronoun),
    "multirc": PromptTemplate("{paragraph}\nQuestion: {question}\nI found this answer \"{answer}\". Is that correct? "
                              "Yes or No?\n", ("No", "Yes")),
}


def get_prompt(task) -> PromptTemplate:
    """The prompt template of ``task`` (a task file's ``prompt`` and ``label_words``); TenpeftError for
    tasks without one (stsb, a task file without a prompt)."""
    spec = get_task(task)
    if spec.file is not None:
        if spec.file.prompt is None:
            raise TenpeftError(f"task file {spec.file.source!r} has no 'prompt' and 'label_words', which a decoder "
                               f"needs to score its classes; add them (or use an encoder)")
        return PromptTemplate(spec.file.prompt, spec.file.label_words)
    if spec.name not in PROMPTS:
        raise TenpeftError(f"no prompt template for task {spec.name!r}; templates exist for "
                           f"{', '.join(PROMPTS)} (add one to tenpeft.lab.tasks.PROMPTS)")
    template = PROMPTS[spec.name]
    if len(template.label_words) != spec.num_labels or set(template.columns) != set(spec.text_columns):
        raise TenpeftError(f"PROMPTS[{spec.name!r}] must read columns {spec.text_columns} and have "
                           f"{spec.num_labels} label words, one per class; fix the template")
    return template


def encode_prompt(task, tokenizer, dataset: datasets.Dataset, max_length: int = 256) -> datasets.Dataset:
    """``dataset`` as prompts for a decoder LM: columns input_ids, attention_mask (unpadded) and ``labels``
    (the class index, int64; not LM token labels, so pop it before ``model(**batch)``).

    Prompts too long keep their last tokens (the question stays at the end), after the tokenizer's
    leading special tokens (BOS); trailing special tokens (EOS) are left off, as the next token is scored.
    Class logits are the next-token logits at ``attention_mask.sum(1) - 1`` over :func:`label_word_ids`.
    """
    spec = get_task(task)
    template = get_prompt(spec)
    check_encodable(spec, dataset, max_length)
    prefix = leading_special_ids(tokenizer)
    budget = max_length - len(prefix)
    if budget < 1:
        raise TenpeftError(f"max_length {max_length} leaves no room for text after {len(prefix)} special tokens")

    def tokenize(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        ids = tokenizer([template.format(row) for row in rows], add_special_tokens=False)["input_ids"]
        input_ids = [prefix + row_ids[-budget:] for row_ids in ids]
        return {"input_ids": input_ids, "attention_mask": [[1] * len(row) for row in input_ids],
                "labels": np.asarray(batch["label"], dtype=np.int64)}

    prepare = template.prepare.__qualname__ if template.prepare else None
    fingerprint = map_fingerprint(dataset, tokenizer, tokenize, spec, template.template, template.label_words, prepare,
                                  max_length)
    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"prompting {spec.name}",
                       new_fingerprint=fingerprint)


def label_word_ids(task, tokenizer) -> list[int]:
    """The token id of each class's label word (first token, leading space included), tokenized right
    after the template's fixed tail so SentencePiece tokenizers give the in-context token."""
    spec = get_task(task)
    template = get_prompt(spec)
    ids = [_first_token_after(tokenizer, template.tail, word) for word in template.label_words]
    if len(set(ids)) != len(ids):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        where = f"the 'label_words' of {spec.file.source!r}" if spec.file else f"PROMPTS[{spec.name!r}].label_words"
        raise TenpeftError(f"label words {list(template.label_words)} of {spec.name!r} share a first token "
                           f"({tokens}) with this tokenizer; change {where}")
    return ids


def _first_token_after(tokenizer, context: str, word: str) -> int:
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + word, add_special_tokens=False)["input_ids"]
    if len(full) > len(base) and full[:len(base)] == base:
        return full[len(base)]
    alone = tokenizer(word, add_special_tokens=False)["input_ids"]  # the word merged into the context
    if not alone:
        raise TenpeftError(f"label word {word!r} tokenizes to nothing with {type(tokenizer).__name__}")
    return alone[0]


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (e.g. BOS), found by tokenizing a probe."""
    with_special = tokenizer("probe", add_special_tokens=True)["input_ids"]
    plain = tokenizer("probe", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []

