"""The tasks a study can name: the eight GLUE tasks, SuperGLUE's fixed-answer and multiple-choice tasks
(decoder prompt tasks in the MeZO format LoRETTA's LLaMA runs use) and task-file tasks."""
from __future__ import annotations

from dataclasses import dataclass

from tenpeft.errors import TenpeftError

DEFAULT_EVAL_SPLITS = ("validation", "test")


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
    (headline first), evaluation splits in order of preference, and for a task-file task its file.

    ``answers`` names a multiple-choice task whose candidates vary per row (ReCoRD): its
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


GLUE_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", ("sentence",), 2, ("matthews", "accuracy")),
    TaskSpec("sst2", ("sentence",), 2, ("accuracy",)),
    TaskSpec("mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy")),
    TaskSpec("qqp", ("question1", "question2"), 2, ("f1", "accuracy")),
    TaskSpec("stsb", ("sentence1", "sentence2"), 1, ("spearman", "pearson")),
    TaskSpec("mnli", ("premise", "hypothesis"), 3, ("accuracy",),
             ("validation_matched", "validation", "test_matched", "test")),
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
             hub=(SUPERGLUE_HUB, "copa")),  # multiple choice: tenpeft.lab.tasks.choices
    TaskSpec("multirc", ("paragraph", "question", "answer"), 2, ("accuracy",), ("validation",),
             hub=(SUPERGLUE_HUB, "multirc")),
    TaskSpec("record", ("passage", "query"), 0, ("accuracy",), ("validation",), hub=(SUPERGLUE_HUB, "record"),
             answers=("entities", "answers")),  # multiple choice over each passage's entities
)}
TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **SUPERGLUE_TASKS}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` for a GLUE or SuperGLUE task name (case-insensitive, ``sst-2`` spelled either way)
    or a task file (``.json``/``.toml``, see ``tenpeft.lab.tasks.custom``); a TaskSpec is returned as is."""
    if isinstance(name, TaskSpec):
        return name
    from tenpeft.lab.tasks.custom import is_task_file, load_task_file

    if is_task_file(name):
        return load_task_file(name)
    if not isinstance(name, str):
        raise TenpeftError(f"task must be a GLUE task name or a TaskSpec, not {type(name).__name__}; "
                           f"known tasks: {', '.join(TASKS)} or a task file (.json, .toml)")
    key = name.strip().lower().replace("-", "")
    if key not in TASKS:
        raise TenpeftError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}, or a task file "
                           f"(.json, .toml; see tenpeft.lab.tasks.custom)")
    return TASKS[key]
