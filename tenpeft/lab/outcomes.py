"""What one run's process says about its run: ``work`` runs a spec and returns its outcome (done,
diverged, kept, busy or failed, with a log of the traceback), ``Progress`` prints each run's state
changes, ``describe`` a finished run in one line. The local pool (``workers.py``) and the SLURM array
(``slurm.py``) both run their runs through ``work``."""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tenpeft.atomic import host
from tenpeft.lab.claims import owner
from tenpeft.lab.records import status
from tenpeft.lab.run import RunSpec, record_path, run

FINAL = ("done", "diverged", "failed", "kept")
POLL_S = 2.0
_EVENTS = None  # in a worker process: the queue its "running" messages go to


def report_starts(events) -> None:
    """In a worker process: send ``(run_id, where)`` to ``events`` when a run starts training."""
    global _EVENTS
    _EVENTS = events


def failure_log(spec: RunSpec, results_dir: str | Path) -> Path:
    """Where a failed run's traceback goes: ``<results>/<study>/<run_id>.log``."""
    return record_path(spec, results_dir).with_suffix(".log")


def describe(record: dict) -> str:
    """One line on a finished run: its score, trainable parameters and time (or where it diverged)."""
    if status(record) == "diverged":
        d = record["diverged"]
        return f"DIVERGED ({d['loss']} loss {d['value']} at step {d['step']} of {d['task']}), kept as a result"
    return (f"{record['score']['metric']}={record['score']['value']:.4f}, {record['params']['trainable']:,} trainable, "
            f"{record['timings']['total_s']:.0f} s")


def quiet(progress: bool) -> None:
    """Keep the console to one line per run: no per-load reports (a new task head is expected to be
    missing from every checkpoint) and, without progress bars, none from datasets either."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    if not progress:
        datasets.disable_progress_bars()


class Progress:
    """What a person reads while runs go: one line per run state change (queued, running, waiting,
    done, diverged, failed, kept) and one bar over every run of the study."""

    def __init__(self, total: int, study: str, bar: bool):
        self.bar = tqdm(total=total, desc=study, disable=not bar)
        self.states: dict[str, str] = {}

    def set(self, run_id: str, state: str, detail: str = "") -> None:
        """Print ``state`` for ``run_id`` if it is new (a finished run never goes back)."""
        old = self.states.get(run_id)
        if old == state or old in FINAL:
            return
        self.states[run_id] = state
        tqdm.write(f"{state:8} {run_id}" + (f": {detail}" if detail else ""))
        if state in FINAL:
            self.bar.update()

    def close(self) -> None:
        self.bar.close()


def work(spec: RunSpec, results_dir: str, mixed_precision: str = "no", wait_busy: bool = False) -> dict:
    """Run ``spec`` in this process (its record to disk) and say how it ended, as
    ``{run_id, state, detail, log}``: ``state`` done, diverged, kept, busy (claimed by another
    process; with ``wait_busy``, waited for instead) or failed (the traceback in ``log``). It
    raises only to stop (Ctrl-C, a preemption signal), never for a failed run."""
    from accelerate import Accelerator

    def started():
        if _EVENTS is not None:
            _EVENTS.put((spec.run_id, os.environ.get("TENPEFT_WORKER", f"pid {os.getpid()}")))

    try:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
        record, how = run(spec, results_dir, accelerator, progress=False, started=started)
        while how == "busy" and wait_busy:
            time.sleep(POLL_S)
            record, how = run(spec, results_dir, accelerator, progress=False, started=started)
    except Exception:
        return fail(spec, results_dir, traceback.format_exc())
    if how == "busy":
        return {"run_id": spec.run_id, "state": "busy", "detail": f"{owner(record_path(spec, results_dir))} is "
                                                                  f"training it", "log": None}
    failure_log(spec, results_dir).unlink(missing_ok=True)  # an earlier attempt's
    state = "kept" if how == "kept" else ("diverged" if status(record) == "diverged" else "done")
    return {"run_id": spec.run_id, "state": state, "detail": describe(record), "log": None}


def fail(spec: RunSpec, results_dir, text: str) -> dict:
    """Write ``text`` (a traceback) to the run's log file; the outcome of a failed run naming it."""
    log = failure_log(spec, results_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"run {spec.run_id} failed on {host()}, pid {os.getpid()}, "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\nconfig: {json.dumps(spec.config(), default=str)}\n\n{text}")
    last = text.strip().splitlines()[-1] if text.strip() else "failed"
    return {"run_id": spec.run_id, "state": "failed", "detail": f"{last[:200]} (traceback in {log})", "log": str(log)}
