"""A study's runs over many processes: ``--workers N`` on this machine, ``--launcher slurm`` on a
cluster (``tenpeft.lab.slurm``), both on an existing engine, with records, resume and figures as
in the sequential loop of ``study.run_all``.

Local workers are a ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method:
in the standard library (no extra to install), ``max_workers`` bounds how many runs go at once,
its initializer gives each worker process a fixed slot (its GPU, or its share of the CPU threads)
before CUDA starts, and ``spawn`` keeps a worker free of the parent's threads and CUDA state.
submitit's LocalExecutor would start every run at once with no bound. Every run is claimed
(``claims.py``) before it trains, so workers, and other processes on the same results folder,
never train one twice; the parent reads the records back from disk and draws the summary and
figures once, after the last run. A run that raises leaves its traceback in
``<results>/<study>/<run_id>.log`` and the other runs go on; the study exits 1 after concluding.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.outcomes import (POLL_S, Progress, describe, fail, failure_log, quiet, report_starts,  # noqa: F401
                                  work)
from tenpeft.lab.provenance import git_commit
from tenpeft.lab.records import read_record
from tenpeft.lab.run import RunSpec, finished, record_path
from tenpeft.lab.slurm import run_submitit
from tenpeft.plugins import import_plugins

LAUNCHERS = ("local", "slurm", "debug")
SLURM_FLAGS = ("slurm_partition", "slurm_time", "slurm_gpus", "slurm_cpus", "slurm_mem_gb", "slurm_parallelism",
               "slurm_set")
_FAILED: list[tuple[str, str]] = []  # (run_id, log) of this study's launches; study.script exits 1 if any


def add_launch_flags(parser) -> None:
    """``--workers``, ``--launcher``, ``--no-wait`` and the ``--slurm-*`` options (every study takes them)."""
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at once, each in its own process: its own GPU when CUDA has that many "
                             "(else shared in turn), else its own cores // N CPU threads")
    parser.add_argument("--pack", type=int, default=1, metavar="K",
                        help="train up to K runs of the same model at once in this process, the frozen base held "
                             "once (tenpeft.lab.packed): less memory and set-up than K processes, no less compute; "
                             "chains and DPO/SFT runs still train alone")
    parser.add_argument("--launcher", default="local",
                        help=f"where runs go: {', '.join(LAUNCHERS)} (slurm and debug: pip install 'tenpeft[slurm]')")
    parser.add_argument("--no-wait", action="store_true",
                        help="--launcher slurm: exit once submitted; rerun the command after the array ends "
                             "(or studies/summarize.py) for the summary and figures")
    slurm = parser.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES",
                       help="time limit per run (default 180); a run longer than this restarts, up to 3 times")
    slurm.add_argument("--slurm-gpus", type=int, default=None, help="GPUs per run (default 1; 0 for none)")
    slurm.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per run")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None)
    slurm.add_argument("--slurm-parallelism", type=int, default=None, metavar="N",
                       help="at most N runs of the array at once")
    slurm.add_argument("--slurm-set", action="append", default=None, metavar="KEY=VALUE",
                       help="any submitit SLURM parameter, e.g. account=lab, qos=high, constraint=a100 (repeatable; "
                            "VALUE parsed as JSON)")


def uses_launcher(args) -> bool:
    """Whether the runs go to worker processes or a cluster (else the sequential loop, in process)."""
    return getattr(args, "workers", 1) != 1 or getattr(args, "launcher", "local") != "local"


def check_launch(args) -> None:
    """The launch flags make sense together and their engine is installed; else one TenpeftError."""
    launcher, workers = getattr(args, "launcher", "local"), getattr(args, "workers", 1)
    pack = getattr(args, "pack", 1)
    if pack < 1:
        raise TenpeftError(f"--pack {pack}: give 1 (each run alone) or the number of runs to train together")
    if pack > 1 and uses_launcher(args):
        raise TenpeftError(f"--pack {pack} trains its runs in this process; drop --workers/--launcher (or --pack)")
    if pack > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TenpeftError(f"--pack {pack} trains its runs in one process: run the study without torchrun or "
                           f"accelerate launch (WORLD_SIZE={os.environ['WORLD_SIZE']}), or drop --pack")
    if launcher not in LAUNCHERS:
        raise TenpeftError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if workers < 1:
        raise TenpeftError(f"--workers {workers}: give 1 (one run after another) or more runs at once")
    given = [name for name in SLURM_FLAGS if getattr(args, name, None) is not None]
    if launcher == "local" and given:
        raise TenpeftError(f"--{given[0].replace('_', '-')} applies to --launcher slurm; add it or drop the option")
    if launcher != "local" and workers != 1:
        raise TenpeftError(f"--workers {workers} starts processes on this machine; with --launcher {launcher} every "
                           f"run is its own task: cap how many run at once with --slurm-parallelism {workers}")
    if getattr(args, "no_wait", False) and launcher != "slurm":
        raise TenpeftError("--no-wait applies to --launcher slurm (other launchers end with the study)")
    if uses_launcher(args) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TenpeftError(f"--workers/--launcher start processes of their own: run the study without torchrun or "
                           f"accelerate launch (WORLD_SIZE={os.environ['WORLD_SIZE']})")
    if launcher != "local":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise TenpeftError(f"--launcher {launcher} needs submitit: pip install \"tenpeft[slurm]\"") from None


def failed_runs() -> list[tuple[str, str]]:
    """``(run_id, log file)`` of every run that failed in the last launch of this process."""
    return list(_FAILED)


def forget_failures() -> None:
    """Start a study with no failed runs on the books (``run_all`` calls it first)."""
    _FAILED.clear()


def launch(specs: list[RunSpec], args) -> list[dict]:
    """Run ``specs`` on the workers or launcher ``args`` names (checked already) and return the
    records on disk, in spec order; finished runs are read back, failed ones left out (and named,
    with their logs, for :func:`failed_runs`). Ctrl-C keeps every finished record (exit 130)."""
    results, todo, seen = Path(args.results_dir), [], set()
    progress = Progress(len({s.run_id for s in specs}), specs[0].study, not args.no_progress)
    for spec in specs:
        if spec.run_id in seen:
            continue
        seen.add(spec.run_id)
        record = finished(spec, results)
        if record is not None:
            progress.set(spec.run_id, "kept", describe(record))
        else:
            todo.append(spec)
    try:
        if args.launcher == "local":
            outcomes = run_pool(todo, args, progress)
        else:
            outcomes = run_submitit(todo, args, progress)
    except KeyboardInterrupt:
        kept = sum(read_record(record_path(s, results)) is not None for s in specs)
        print(f"\ninterrupted: {kept} finished run(s) kept in {results / specs[0].study}; rerun to continue",
              file=sys.stderr)
        raise SystemExit(130)
    progress.close()
    failed = [(o["run_id"], o["log"]) for o in outcomes.values() if o["state"] == "failed"]
    _FAILED.extend(failed)  # forget_failures clears them at the start of a study
    if failed:
        print(f"{len(failed)} of {len(progress.states)} run(s) failed (left out of the summary); their tracebacks:\n  "
              + "\n  ".join(log for _, log in failed))
    records = [read_record(record_path(spec, results)) for spec in specs]
    return [r for r in records if r is not None]


def _gpus() -> list[str]:
    """The GPUs workers are pinned to, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def run_pool(todo: list[RunSpec], args, progress: Progress) -> dict[str, dict]:
    """Run ``todo`` on ``args.workers`` spawned processes; a run claimed by another process is
    handed back and submitted again ``POLL_S`` later. Returns each run's outcome by run id."""
    import multiprocessing

    if not todo:
        return {}
    ctx = multiprocessing.get_context("spawn")
    slots, events = ctx.Queue(), ctx.Queue()
    for slot in range(args.workers):
        slots.put(slot)
    init = (slots, events, args.workers, _gpus(), list(getattr(args, "imports", [])))
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=start_worker, initargs=init) as pool, \
            _sigterm_interrupts():
        submit = functools.partial(pool.submit, work, results_dir=str(args.results_dir),
                                   mixed_precision=args.mixed_precision)
        try:
            return _follow_pool(submit, todo, events, args.results_dir, progress)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():  # the workers: their runs stop, unrecorded
                child.terminate()
            raise


@contextlib.contextmanager
def _sigterm_interrupts():
    """While the pool runs, SIGTERM to the parent (``kill``, a scheduler) stops it as Ctrl-C does, so its
    workers are stopped with it instead of left running without a parent; the old handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _follow_pool(submit, todo: list[RunSpec], events, results_dir, progress: Progress) -> dict[str, dict]:
    """Submit every run, print each state change as workers report it, resubmit busy runs."""
    running, later, outcomes = {}, [], {}
    for spec in todo:
        running[submit(spec)] = spec
        progress.set(spec.run_id, "queued")
    while running or later:
        now = time.monotonic()
        running.update({submit(spec): spec for at, spec in later if at <= now})
        later = [(at, spec) for at, spec in later if at > now]
        if running:
            done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
        else:
            done = set()
            time.sleep(0.5)
        _drain(events, progress)
        for future in done:
            spec = running.pop(future)
            outcome = _result(future, spec, results_dir)
            if outcome["state"] == "busy":
                later.append((time.monotonic() + POLL_S, spec))
                progress.set(spec.run_id, "waiting", outcome["detail"])
            else:
                outcomes[spec.run_id] = outcome
                progress.set(spec.run_id, outcome["state"], outcome["detail"])
    return outcomes


def _drain(events, progress: Progress) -> None:
    while not events.empty():
        try:
            run_id, detail = events.get_nowait()
        except Exception:  # queue.Empty, or a queue closed under us
            return
        progress.set(run_id, "running", detail)


def _result(future, spec: RunSpec, results_dir) -> dict:
    """A worker's outcome; a worker that died (killed, out of memory) or an error outside the
    run fails that run with a log saying so."""
    try:
        return future.result()
    except BrokenProcessPool:
        return fail(spec, results_dir, "its worker process died (killed? out of memory?); the other runs of "
                                       "this pool stop too: rerun to continue")
    except Exception:
        return fail(spec, results_dir, traceback.format_exc())


def start_worker(slots, events, workers: int, gpus: list[str], imports: list[str]) -> None:
    """A worker process's start: take a slot, pin it to GPU ``slot`` (in turn when there are fewer
    GPUs than workers) or to ``cores // workers`` threads, import the study's plugins."""
    slot = slots.get()
    report_starts(events)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // workers))
    import_plugins(imports)
    quiet(False)
    git_commit()
    gc.freeze()  # as study.run_all: each run's gc.collect skips the imports
    os.environ["TENPEFT_WORKER"] = f"worker {slot}, pid {os.getpid()}"
