"""GLUE tasks: specs, loading (Hub or a local folder), metrics, encoding for classifiers and decoder prompts."""
from __future__ import annotations

from .data import TaskData, load_task_data
from .encode import encode_classification, make_collator
from .metrics import compute_metrics
from .prompts import PROMPTS, PromptTemplate, encode_prompt, get_prompt, label_word_ids
from .specs import TASKS, TaskSpec, get_task

__all__ = ["PROMPTS", "PromptTemplate", "TASKS", "TaskData", "TaskSpec", "compute_metrics", "encode_classification",
           "encode_prompt", "get_prompt", "get_task", "label_word_ids", "load_task_data", "make_collator"]
