"""The ``classification`` task kind: fixed classes or a regression score per example (GLUE, SuperGLUE's
fixed-answer tasks, classification and regression task files), trained by the supervised loop.

An encoder reads one text or a pair through a sequence-classification head; a decoder scores one label
word per class after the task's prompt (:class:`tenpeft.lab.models.PromptClassifier`)."""
from __future__ import annotations

from typing import NamedTuple

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.data import load_task_data
from tenpeft.lab.tasks.encode import check_encoder_task, encode_classification, make_collator
from tenpeft.lab.tasks.kinds import TaskKind
from tenpeft.lab.tasks.prompts import encode_prompt, get_prompt, label_word_ids
from tenpeft.lab.tasks.specs import TASKS, TaskSpec, find_named, named_task


class PreparedTask(NamedTuple):
    """One task of a run, encoded: its spec, its three splits (``validation`` picks the checkpoint, ``test``
    is reported), collator, label-word ids (decoders scoring label words) and what each split is
    (``TaskData.splits``: size, source, fingerprint)."""

    task: TaskSpec
    train_set: object
    validation_set: object
    test_set: object
    collate: object
    label_ids: list[int] | None
    splits: dict


class ClassificationKind(TaskKind, name="classification"):
    """A task of classes (or a regression score) read from labelled rows; chains and packs."""

    objective = "supervised"
    chainable = packable = measurable = True

    def __init__(self, ref: str, *, task: TaskSpec | None = None, **kwargs):
        self._task = task if task is not None else named_task(ref)
        super().__init__(self._task.ref, **kwargs)  # one spelling: "SST-2" is "sst2"

    @classmethod
    def owns(cls, ref: str) -> bool:
        spec = find_named(ref)
        return spec is not None and spec.kind == cls.name

    @classmethod
    def known(cls) -> list[str]:
        return [name for name, spec in TASKS.items() if spec.kind == cls.name]

    @property
    def task(self) -> TaskSpec:
        return self._task

    def check_model(self, decoder: bool) -> None:
        """Refuse a model that cannot read the task: a decoder needs its prompt, an encoder at most two texts."""
        if decoder:
            get_prompt(self.task)
        else:
            check_encoder_task(self.task)

    def check(self, spec, config) -> None:
        from tenpeft.lab.models import is_decoder

        self.check_model(is_decoder(config))
        self.load(spec)

    def load(self, spec):
        """The task's data for run ``spec``: ``TaskData`` (train, validation, test and what each is)."""
        data = spec.data
        return load_task_data(self.task, data.data_dir, train_size=data.train_size,
                              validation_size=data.validation_size, test_size=data.test_size,
                              data_seed=data.data_seed)

    def encoder(self, decoder: bool):
        """``encode(task, tokenizer, rows, max_length)`` for this model."""
        return encode_prompt if decoder else encode_classification

    def label_ids(self, tokenizer, decoder: bool) -> list[int] | None:
        """The label words' token ids a decoder scores (None for an encoder's head)."""
        return label_word_ids(self.task, tokenizer) if decoder else None

    def collator(self, tokenizer):
        """The function that pads a batch of the encoded rows."""
        return make_collator(tokenizer, self.task)

    def prepare(self, spec, tokenizer, decoder: bool) -> PreparedTask:
        """The task's splits for run ``spec`` encoded for the model (encoder or decoder)."""
        data, encode = self.load(spec), self.encoder(decoder)
        train, validation, test = (encode(self.task, tokenizer, rows, spec.train.max_length)
                                   for rows in (data.train, data.validation, data.test))
        return PreparedTask(self.task, train, validation, test, self.collator(tokenizer),
                            self.label_ids(tokenizer, decoder), data.splits)

    def scorer(self, lm, prepared: PreparedTask):
        """A decoder ``lm`` as the classifier the loop trains: label-word logits after the prompt."""
        from tenpeft.lab.models import PromptClassifier

        if prepared.label_ids is None:
            raise TenpeftError(f"task {self.ref!r} was prepared for an encoder, not a decoder")
        return PromptClassifier(lm, prepared.label_ids)


__all__ = ["ClassificationKind", "PreparedTask"]
