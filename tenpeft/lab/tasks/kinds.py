"""Task kinds, registered by name: what a study's ``--tasks`` argument is and how it is trained.

A kind is one class (a :class:`TaskKind` subclass with ``name=``) in its own module, which registers it
on definition. An instance is one task argument bound to its kind (:func:`task_kind`): it knows the
argument's canonical ``ref`` (how a run stores it), its short ``label`` (run ids, figures), its
``identity`` (what of the task a run id hashes beyond the ref, e.g. a task file's definition), which
``objective`` trains it (a runner of ``tenpeft.lab.runners``) and the checks before any compute.
Code that dispatches asks the kind; it never asks what kind a task is.

The built-in kinds (``tenpeft.lab.tasks``): ``classification`` (GLUE, SuperGLUE fixed-answer tasks,
classification and regression task files), ``choice`` (COPA, ReCoRD), ``instruction`` (SFT rows),
``generation`` (SQuAD, DROP), ``preference`` (DPO pairs) and ``task_file`` (a user's ``.json``/``.toml``
file, bound to the kind its ``kind`` field names). A user's kind is one file imported with ``--import``
(``examples/extensions/token_task.py``).
"""
from __future__ import annotations

from typing import ClassVar

from tenpeft.errors import TenpeftError

KINDS: dict[str, type["TaskKind"]] = {}


class TaskKind:
    """One task argument of one kind. Subclasses set ``name`` (by ``class K(TaskKind, name=...)``),
    ``objective`` (the runner that trains it), whether it may be a stage of a chain (``chainable``),
    a member of a pack (``packable``), a run whose cost the efficiency study measures (``measurable``),
    and implement :meth:`owns`, :meth:`known` and :meth:`check` plus what their runner asks for."""

    name: ClassVar[str] = ""
    objective: ClassVar[str] = ""
    chainable: ClassVar[bool] = False
    packable: ClassVar[bool] = False
    measurable: ClassVar[bool] = False

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            KINDS[name] = cls

    def __init__(self, ref: str, *, label: str | None = None, identity: dict | None = None):
        self.ref, self.label, self.identity = ref, label or ref, identity

    @classmethod
    def owns(cls, ref: str) -> bool:
        """Whether task argument ``ref`` is of this kind."""
        raise NotImplementedError

    @classmethod
    def known(cls) -> list[str]:
        """The task names this kind knows (for error messages; a kind of files may list none)."""
        return []

    @classmethod
    def bind(cls, ref: str) -> "TaskKind":
        """``ref`` bound to this kind (a kind of files may return an instance of another kind)."""
        return cls(ref)

    def check(self, spec, config) -> None:
        """Refuse, with one TenpeftError, what would fail in a run of ``spec`` on this task (before compute);
        ``config`` is the model's transformers config."""
        raise NotImplementedError

    @property
    def task(self):
        """The task's ``TaskSpec`` (kinds trained by the supervised loop); other kinds have none."""
        raise TenpeftError(f"task {self.ref!r} is a {self.name} task, which has no label columns or classes; "
                           f"it is trained by the {self.objective} runner")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ref!r})"


def find_kind(ref) -> TaskKind | None:
    """``ref`` bound to the first registered kind that owns it, or None."""
    if not isinstance(ref, str):
        return None
    for kind in KINDS.values():
        if kind.owns(ref):
            return kind.bind(ref)
    return None


def task_kind(ref) -> TaskKind:
    """``ref`` bound to its kind; a TenpeftError naming every known task if no kind owns it."""
    found = find_kind(ref)
    if found is None:
        known = [name for kind in KINDS.values() for name in kind.known()]
        what = f"a {type(ref).__name__}" if not isinstance(ref, str) else repr(ref)
        raise TenpeftError(f"unknown task {what}; known tasks: {', '.join(known)}, or a task file (.json, .toml; "
                           f"see tenpeft.lab.tasks.custom)")
    return found


def canonical_ref(ref: str) -> str:
    """How a run stores task argument ``ref`` (``SST-2`` as ``sst2``, a task file as its real path); an unknown
    ref as given (the run's checks name it)."""
    found = find_kind(ref)
    return ref if found is None else found.ref


def chain_kinds(refs: list[str]) -> list[TaskKind]:
    """The kinds of a chain's tasks, refused unless every one may chain and all are of one kind."""
    kinds = [task_kind(ref) for ref in refs]
    if len(kinds) > 1:
        alone = [k for k in kinds if not k.chainable]
        if alone:
            raise TenpeftError(f"{alone[0].name} task {alone[0].ref!r} cannot be chained with others; "
                               f"run it alone")
        names = sorted({k.name for k in kinds})
        if len(names) > 1:
            raise TenpeftError(f"the chain {' > '.join(refs)} mixes {' and '.join(names)} tasks, which are trained "
                               f"and scored differently; chain tasks of one kind")
    return kinds


__all__ = ["KINDS", "TaskKind", "canonical_ref", "chain_kinds", "find_kind", "task_kind"]
