"""Runners, one per objective, registered here by import: ``supervised`` (the lab's loop), ``sft`` and
``dpo`` (trl). See ``base.py`` for the interface."""
from __future__ import annotations

from tenpeft.lab.runners.base import RUNNERS, Runner, runner_for
from tenpeft.lab.runners import supervised, sft, dpo  # noqa: F401  (the built-in runners)

__all__ = ["RUNNERS", "Runner", "runner_for"]
