"""The tasks a study can name: the eight GLUE tasks, SuperGLUE's fixed-answer and multiple-choice tasks
(decoder prompt tasks in the MeZO format LoRETTA's LLaMA runs use) and task-file tasks."""
from __future__ import annotations

from dataclasses import dataclass

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.kinds import task_kind

DEFAULT_EVAL_SPLITS = ("test", "validation")  # a labelled test first; GLUE's is not


@dataclass(frozen=True)
class TaskFile:
    """Where a task file's data is and how to read it (see ``tenpeft.lab.tasks.custom``): the task
    file's real path, its kind, the data files' real paths (``eval`` None: carved from train), the
    label column and class names, the decoder prompt and label words, the instruction column map."""

    source: str
    kind: str
    train: str
    eval: str | None
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    prompt: str | None = None
    label_words: tuple[str, ...] | None = None
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name (a GLUE task's ``glue`` config name), text columns, label count, metrics
    (headline first), the held-out splits that may be reported (``eval_splits``: the first present and
    labelled is the test split; ``tenpeft.lab.tasks.splits``), and for a task-file task its file.

    ``kind`` names the task kind that trains it (``tenpeft.lab.tasks.kinds``). ``answers`` names a
    multiple-choice task whose candidates vary per row (ReCoRD): its
    ``(candidates column, correct-answers column)``, both lists of strings; such a task has no ``label``
    column (its ``label`` is derived: the first correct candidate's index) and ``num_labels`` 0."""

    name: str
    text_columns: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    eval_splits: tuple[str, ...] = DEFAULT_EVAL_SPLITS
    file: TaskFile | None = None
    hub: tuple[str, str] | None = None
    answers: tuple[str, str] | None = None
    kind: str = "classification"

    @property
    def hub_source(self) -> tuple[str, str]:
        """``(dataset id, config)`` of ``datasets.load_dataset`` for this task (GLUE's by default)."""
        return self.hub or ("glue", self.name)

    @property
    def encoder_ready(self) -> bool:
        """Whether a sequence classifier can read it: one text or a pair with fixed classes (more columns,
        or per-row candidates, need a prompt)."""
        return len(self.text_columns) <= 2 and self.answers is None

    @property
    def ref(self) -> str:
        """How a study names this task: the GLUE name, or the task file's real path."""
        return self.file.source if self.file else self.name

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose labels are similarity scores rather than classes."""
        return self.num_labels == 1

    @property
    def headline_metric(self) -> str:
        """The metric the LoRETTA paper reports for this task."""
        return self.metrics[0]

    def loss(self, logits, labels, reduction: str = "mean"):
        """The training loss: cross-entropy over the classes, mean squared error for a regression score
        (``reduction`` as torch's; ``"none"``: one loss per example)."""
        import torch.nn.functional as F

        if self.is_regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction=reduction)
        return F.cross_entropy(logits.float(), labels, reduction=reduction)

    def predict(self, logits, batch: dict):
        """``(predictions, gold)``, one per example: the score (regression) or the argmax class; where the batch
        marks several correct candidates (``gold``, ReCoRD), a prediction among them counts as the label."""
        import torch

        labels = batch["labels"]
        if self.is_regression:
            return logits.squeeze(-1), labels
        pred = logits.argmax(-1)
        if "gold" in batch:
            hit = batch["gold"].gather(-1, pred[:, None]).squeeze(-1)
            pred = torch.where(hit, labels, pred)
        return pred, labels

    def score(self, predictions, labels) -> dict[str, float]:
        """Every metric of :attr:`metrics` (headline first) of gathered ``predictions`` against ``labels``."""
        from tenpeft.lab.tasks.metrics import compute_metrics

        return compute_metrics(self, predictions, labels)


GLUE_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", ("sentence",), 2, ("matthews", "accuracy")),
    TaskSpec("sst2", ("sentence",), 2, ("accuracy",)),
    TaskSpec("mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy")),
    TaskSpec("qqp", ("question1", "question2"), 2, ("f1", "accuracy")),
    TaskSpec("stsb", ("sentence1", "sentence2"), 1, ("spearman", "pearson")),
    TaskSpec("mnli", ("premise", "hypothesis"), 3, ("accuracy",),
             ("test_matched", "validation_matched", "test", "validation")),
    TaskSpec("qnli", ("question", "sentence"), 2, ("accuracy",)),
    TaskSpec("rte", ("sentence1", "sentence2"), 2, ("accuracy",)),
)}
SUPERGLUE_HUB = "aps/super_glue"  # the Hub's SuperGLUE in parquet (the ``super_glue`` loading script is gone)
SUPERGLUE_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (  # test splits are unlabelled: validation
    TaskSpec("boolq", ("passage", "question"), 2, ("accuracy",), ("validation",), hub=(SUPERGLUE_HUB, "boolq")),
    TaskSpec("cb", ("premise", "hypothesis"), 3, ("accuracy",), ("validation",), hub=(SUPERGLUE_HUB, "cb")),
    TaskSpec("wic", ("word", "sentence1", "sentence2"), 2, ("accuracy",), ("validation",), hub=(SUPERGLUE_HUB, "wic")),
    TaskSpec("wsc", ("text", "span1_text", "span2_text"), 2, ("accuracy",), ("validation",),
             hub=(SUPERGLUE_HUB, "wsc.fixed")),
    TaskSpec("copa", ("premise", "choice1", "choice2", "question"), 2, ("accuracy",), ("validation",),
             hub=(SUPERGLUE_HUB, "copa"), kind="multiple_choice"),  # tenpeft.lab.tasks.choices
    TaskSpec("multirc", ("paragraph", "question", "answer"), 2, ("accuracy",), ("validation",),
             hub=(SUPERGLUE_HUB, "multirc")),
    TaskSpec("record", ("passage", "query"), 0, ("accuracy",), ("validation",), hub=(SUPERGLUE_HUB, "record"),
             answers=("entities", "answers"), kind="multiple_choice"),  # over each passage's entities
)}
TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **SUPERGLUE_TASKS}


def find_named(name: str) -> TaskSpec | None:
    """The :class:`TaskSpec` of a GLUE or SuperGLUE task name (case-insensitive, ``sst-2`` spelled either way),
    or None."""
    return TASKS.get(name.strip().lower().replace("-", "")) if isinstance(name, str) else None


def named_task(name: str) -> TaskSpec:
    """:func:`find_named`, or a TenpeftError listing the known tasks."""
    spec = find_named(name)
    if spec is None:
        raise TenpeftError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}, or a task file "
                           f"(.json, .toml; see tenpeft.lab.tasks.custom)")
    return spec


def get_task(name) -> TaskSpec:
    """The :class:`TaskSpec` of a task argument of a supervised kind (a GLUE or SuperGLUE name, a task file;
    ``tenpeft.lab.tasks.kinds``); a TaskSpec is returned as is."""
    return name if isinstance(name, TaskSpec) else task_kind(name).task
