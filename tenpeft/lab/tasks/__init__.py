"""Tasks: the task kinds (``kinds.py``, one file each, registered here by import), GLUE and SuperGLUE specs,
loading (Hub or a local folder), metrics, encoding for classifiers and decoder prompts."""
from __future__ import annotations

from tenpeft.lab.tasks.kinds import KINDS, TaskKind, canonical_ref, chain_kinds, find_kind, task_kind
from tenpeft.lab.tasks import classification, choices, instruction, generation, preference, custom  # noqa: F401  (the built-in kinds, in the order they claim a task)
from tenpeft.lab.tasks.data import TaskData, load_task_data
from tenpeft.lab.tasks.encode import encode_classification, make_collator
from tenpeft.lab.tasks.metrics import compute_metrics
from tenpeft.lab.tasks.prompts import PROMPTS, PromptTemplate, encode_prompt, get_prompt, label_word_ids
from tenpeft.lab.tasks.specs import GLUE_TASKS, SUPERGLUE_TASKS, TASKS, TaskSpec, get_task

__all__ = ["GLUE_TASKS", "KINDS", "PROMPTS", "PromptTemplate", "SUPERGLUE_TASKS", "TASKS", "TaskData", "TaskKind", "TaskSpec",
           "canonical_ref", "chain_kinds", "compute_metrics", "encode_classification", "encode_prompt", "find_kind",
           "get_prompt", "get_task", "label_word_ids", "load_task_data", "make_collator", "task_kind"]
