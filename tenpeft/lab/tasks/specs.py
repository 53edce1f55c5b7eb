"""The eight GLUE tasks: text columns, label count, metrics and evaluation splits."""
from __future__ import annotations

from dataclasses import dataclass

from tenpeft.errors import TenpeftError

DEFAULT_EVAL_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: its ``glue`` config name, text columns, label count, metrics (headline first)
    and evaluation splits in order of preference."""

    name: str
    text_columns: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    eval_splits: tuple[str, ...] = DEFAULT_EVAL_SPLITS

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose labels are similarity scores rather than classes."""
        return self.num_labels == 1

    @property
    def headline_metric(self) -> str:
        """The metric the LoRETTA paper reports for this task."""
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
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


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` for a GLUE task name (case-insensitive, ``sst-2`` spelled either way);
    a TaskSpec is returned as is."""
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TenpeftError(f"task must be a GLUE task name or a TaskSpec, not {type(name).__name__}; "
                           f"known tasks: {', '.join(TASKS)}")
    key = name.strip().lower().replace("-", "")
    if key not in TASKS:
        raise TenpeftError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]
