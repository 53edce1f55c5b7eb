"""The runner interface: one runner per objective (``supervised``, ``sft``, ``dpo``), registered by name.

A task kind names the objective that trains it (``TaskKind.objective``); ``run.check_spec`` and
``run.execute`` ask :func:`runner_for` and call the runner, never the kind's name. A runner checks a run
before any compute (``check``) and trains it into a record (``execute``; the record's shape is
``tenpeft.lab.records.make_record``'s)."""
from __future__ import annotations

from typing import ClassVar

from tenpeft.errors import TenpeftError

RUNNERS: dict[str, type["Runner"]] = {}


class Runner:
    """Trains the tasks of one objective. Subclasses register with ``class R(Runner, objective=...)``."""

    objective: ClassVar[str] = ""

    def __init_subclass__(cls, objective: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if objective:
            cls.objective = objective
            RUNNERS[objective] = cls

    def check(self, spec, kinds: list, config) -> None:
        """Raise one TenpeftError for what would fail in ``spec`` (its tasks' ``kinds``, the model's
        ``config``), before any weights are loaded."""
        raise NotImplementedError

    def execute(self, spec, kinds: list, accelerator, progress: bool = True) -> dict:
        """Train ``spec`` and return its record."""
        raise NotImplementedError


def runner_for(kinds: list) -> Runner:
    """The runner of the objective that trains ``kinds`` (the tasks of one run, of one kind)."""
    objective = kinds[0].objective
    if objective not in RUNNERS:
        raise TenpeftError(f"task {kinds[0].ref!r} ({kinds[0].name}) is trained by objective {objective!r}, which no "
                           f"runner implements; known: {', '.join(RUNNERS)}")
    return RUNNERS[objective]()


__all__ = ["RUNNERS", "Runner", "runner_for"]
