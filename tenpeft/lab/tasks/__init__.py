"""GLUE and SuperGLUE tasks: specs, loading (Hub or a local folder), metrics, encoding for classifiers and decoder prompts."""
from __future__ import annotations

from tenpeft.lab.tasks.data import TaskData, load_task_data
from tenpeft.lab.tasks.encode import encode_classification, make_collator
from tenpeft.lab.tasks.metrics import compute_metrics
from tenpeft.lab.tasks.prompts import PROMPTS, PromptTemplate, encode_prompt, get_prompt, label_word_ids
from tenpeft.lab.tasks.specs import GLUE_TASKS, SUPERGLUE_TASKS, TASKS, TaskSpec, get_task

__all__ = ["GLUE_TASKS", "PROMPTS", "PromptTemplate", "SUPERGLUE_TASKS", "TASKS", "TaskData", "TaskSpec", "compute_metrics", "encode_classification",
           "encode_prompt", "get_prompt", "get_task", "label_word_ids", "load_task_data", "make_collator"]
