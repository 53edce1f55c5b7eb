"""One run of a study: its checks before training, its execution and its JSON record.

A run's task kinds (``tenpeft.lab.tasks.kinds``) name the objective that trains them, and the runner of
that objective (``tenpeft.lab.runners``) checks and trains it; nothing here asks what kind a task is.
A record (schema ``tenpeft-run/3``) is written atomically to ``<results>/<study>/<run_id>.json``;
the ``run_id`` ends in a hash of the full config, so a rerun of the same config finds its file and
skips it, and a run killed midway loses only itself. A run is claimed (``claims.py``) before it
trains, so processes sharing a results folder split the runs and never train one twice."""
from __future__ import annotations

import json
from pathlib import Path

from tenpeft.errors import TenpeftError
from tenpeft.lab.adapt import is_known, known_methods
from tenpeft.lab.claims import Claim, try_claim
from tenpeft.lab.models import load_config, resolve_model
from tenpeft.lab.records import read_record, write_record
from tenpeft.lab.runners import runner_for
from tenpeft.lab.spec import DataConfig, RunSpec, adapt_on_meta, decode_args, trainable_fraction  # noqa: F401  (run's API)
from tenpeft.lab.tasks import chain_kinds


def check_spec(spec: RunSpec) -> None:
    """Everything but training, fast: the method, the tasks' kinds (a chain of one kind that chains, each
    task spelled as its kind stores it), then the runner's checks of model, data and method arguments
    (built on the meta device). Raises a TenpeftError naming the problem."""
    if not is_known(spec.method):
        raise TenpeftError(f"unknown method {spec.method!r}; known: {known_methods()}")
    kinds = chain_kinds(spec.tasks)
    for given, kind in zip(spec.tasks, kinds):
        if given != kind.ref:  # one spelling per task, or the same run gets two ids
            raise TenpeftError(f"task {given!r} is written {kind.ref!r}: pass --tasks {kind.ref} (or --chain)")
    if spec.efficiency and not all(kind.measurable for kind in kinds):
        raise TenpeftError(f"the cost of a {kinds[0].objective} run on {spec.task!r} ({kinds[0].name}) is not "
                           f"measured; the efficiency study takes classification and regression tasks")
    runner_for(kinds).check(spec, kinds, load_config(resolve_model(spec.model)))


def execute(spec: RunSpec, accelerator, progress: bool = True) -> dict:
    """Train ``spec`` with the runner of its tasks' objective (every stage of a chain) and return its record."""
    kinds = chain_kinds(spec.tasks)
    return runner_for(kinds).execute(spec, kinds, accelerator, progress)


def record_path(spec: RunSpec, results_dir: str | Path) -> Path:
    """Where the record of ``spec`` goes: ``<results_dir>/<study>/<run_id>.json``."""
    return Path(results_dir) / spec.study / f"{spec.run_id}.json"


def _finished(path: Path, spec: RunSpec) -> dict | None:
    existing = read_record(path)
    if existing is not None and existing.get("config") == json.loads(json.dumps(spec.config())):
        return existing
    return None


def finished(spec: RunSpec, results_dir: str | Path) -> dict | None:
    """The record of ``spec`` if it is on disk and whole (for its exact config), else None."""
    return _finished(record_path(spec, results_dir), spec)


def _decide(spec: RunSpec, path: Path, accelerator) -> tuple[dict | None, object]:
    """On the main process: the finished record, or a claim to train it, or neither (busy);
    the other processes of a multi-process run follow the main one's decision."""
    existing, claim = None, None
    if accelerator.is_main_process:
        existing = _finished(path, spec)
        claim = None if existing else try_claim(path)
        if claim and (existing := _finished(path, spec)):  # finished while we were claiming
            claim.done()
            claim = None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        existing, held = broadcast_object_list([existing, claim is not None])
        claim = claim or (True if held else None)
    return existing, claim


def run(spec: RunSpec, results_dir: str | Path, accelerator, progress: bool = True,
        started=None) -> tuple[dict | None, str]:
    """Execute ``spec`` unless its record is on disk or another process has claimed it
    (``started()``, if given, is called once the claim is held, before training).

    Returns ``(record, "kept")``, ``(record, "ran")`` or ``(None, "busy")`` (claimed elsewhere:
    ask again later)."""
    path = record_path(spec, results_dir)
    existing, claim = _decide(spec, path, accelerator)
    if existing is not None:
        return existing, "kept"
    if claim is None:
        return None, "busy"
    try:
        if started is not None:
            started()
        record = execute(spec, accelerator, progress)
        if accelerator.is_main_process:
            write_record(path, record)
    except BaseException:
        if isinstance(claim, Claim):
            claim.release()
        raise
    if isinstance(claim, Claim):
        claim.done()
    return record, "ran"


__all__ = ["DataConfig", "RunSpec", "adapt_on_meta", "check_spec", "decode_args", "execute", "finished", "record_path", "run", "trainable_fraction"]
