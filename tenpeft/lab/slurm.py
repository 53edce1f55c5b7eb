"""A study's runs as a SLURM job array through submitit (the ``slurm`` extra), one run per task:
``--launcher slurm``, or ``--launcher debug`` (submitit's DebugExecutor: the same tasks, run one
after another in this process; what the tests use).

Each task calls :class:`RunTask` on one spec: the run is claimed, trained and its record written
exactly as in the sequential loop. On preemption or timeout SLURM signals the task, submitit
calls ``RunTask.checkpoint``, which resubmits the same run, and requeues it: the run starts again
from scratch (the claim dies with the preempted process; its record path is the same). The
parent prints the job ids, then either follows the tasks to the end and concludes, or with
``--no-wait`` exits; every finished record is on disk for a rerun or ``studies/summarize.py``.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tenpeft.assign import parse_assignments
from tenpeft.errors import TenpeftError
from tenpeft.lab.run import RunSpec
from tenpeft.lab.outcomes import POLL_S, Progress, fail, quiet, work

DEFAULTS = {"timeout_min": 180, "gpus_per_node": 1}
REQUEUES = 3  # timeouts a task may be requeued after (preemptions do not count)
RUNNING = ("RUNNING", "COMPLETING")


class RunTask:
    """One run as a submitit task. ``task(spec)`` runs it (waiting while another process holds its
    claim) and returns how it ended, never raising for a failed run; ``checkpoint(spec)``, called
    by submitit on preemption or timeout, resubmits the same run."""

    def __init__(self, results_dir: str, mixed_precision: str = "no", imports: list[str] | None = None):
        self.results_dir, self.mixed_precision, self.imports = results_dir, mixed_precision, list(imports or [])

    def __call__(self, spec: RunSpec) -> dict:
        from tenpeft.plugins import import_plugins

        import_plugins(self.imports)
        quiet(False)
        return work(spec, self.results_dir, self.mixed_precision, wait_busy=True)

    def checkpoint(self, spec: RunSpec):
        """The same run, submitted again (submitit requeues it)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec)


def parameters(args) -> dict:
    """submitit's parameters from the ``--slurm-*`` options (generic names, SLURM ones prefixed)."""
    given = {"timeout_min": args.slurm_time, "gpus_per_node": args.slurm_gpus, "cpus_per_task": args.slurm_cpus,
             "mem_gb": args.slurm_mem_gb, "slurm_partition": args.slurm_partition,
             "slurm_array_parallelism": args.slurm_parallelism}
    params = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    if not params["gpus_per_node"]:
        del params["gpus_per_node"]  # --slurm-gpus 0: ask for none
    return {**params, **{f"slurm_{k}": v for k, v in parse_assignments(args.slurm_set, "--slurm-set", "account=lab").items()}}


def executor(args, study: str):
    """The submitit executor of ``args.launcher``, its logs in ``<results>/<study>/.submitit/``;
    a bad ``--slurm-*`` option or a machine without SLURM is one TenpeftError."""
    import submitit

    folder = Path(args.results_dir).resolve() / study / ".submitit" / "%j"
    cluster = "debug" if args.launcher == "debug" else "slurm"
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=REQUEUES)
    except RuntimeError as err:  # no srun on PATH
        raise TenpeftError(f"--launcher slurm: {err} (run the study on a SLURM login node)") from None
    try:
        ex.update_parameters(name=study, **parameters(args))
    except (NameError, ValueError, TypeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TenpeftError(f"bad --slurm-* option: {first}") from None
    return ex


def run_submitit(todo: list[RunSpec], args, progress: Progress) -> dict[str, dict]:
    """Submit ``todo`` as one job array (one run per task), print the job ids, and follow the tasks
    to the end (or with ``--no-wait`` exit). Returns each run's outcome by run id."""
    ex = executor(args, todo[0].study if todo else "study")
    if not todo:
        return {}
    task = RunTask(str(Path(args.results_dir).resolve()), args.mixed_precision, getattr(args, "imports", []))
    try:
        jobs = ex.map_array(task, todo)
    except (OSError, subprocess.SubprocessError) as err:
        raise TenpeftError(f"--launcher {args.launcher}: submitting failed ({type(err).__name__}: {err})") from None
    for spec, job in zip(todo, jobs):
        progress.set(spec.run_id, "queued", f"job {job.job_id}")
    ids = job_ids(jobs)
    print(f"submitted {len(jobs)} run(s) to {args.launcher}: {ids}; submitit's logs in "
          f"{Path(args.results_dir).resolve() / todo[0].study / '.submitit'}")
    if getattr(args, "no_wait", False):
        progress.close()
        print(f"not waiting (--no-wait): records appear in {Path(args.results_dir) / todo[0].study} as tasks end; "
              f"once {ids} is over, rerun this command (it keeps every finished run; a rate grid's other seeds "
              f"are submitted then, at the rates chosen) for the summary and figures, or run "
              f"studies/summarize.py --results-dir {args.results_dir}")
        raise SystemExit(0)
    return follow(list(zip(todo, jobs)), args, progress)


def job_ids(jobs) -> str:
    """``job array 123`` for the tasks ``123_0`` .. ``123_<n-1>`` of one array, else ``job(s) a, b, ...``."""
    heads = {job.job_id.rpartition("_")[0] for job in jobs}
    tails = [job.job_id.rpartition("_")[2] for job in jobs]
    if len(jobs) > 1 and len(heads) == 1 and tails == [str(i) for i in range(len(jobs))]:
        return f"job array {heads.pop()}"
    return f"job{'s' if len(jobs) > 1 else ''} " + ", ".join(job.job_id for job in jobs)


def follow(pending: list, args, progress: Progress) -> dict[str, dict]:
    """Wait for every ``(spec, job)``, printing state changes; a task that died outside the run
    (node failure, killed, out of requeues) fails its run with a log holding submitit's error."""
    outcomes: dict[str, dict] = {}
    while pending:
        waiting = []
        for spec, job in pending:
            if args.launcher == "debug":
                progress.set(spec.run_id, "running", f"job {job.job_id}")  # debug jobs run inside done()
            if job.done():
                try:
                    outcome = job.result()
                except Exception as err:  # submitit's FailedJobError / UncompletedJobError
                    outcome = fail(spec, args.results_dir, f"job {job.job_id}: {type(err).__name__}: {err}\n")
                outcomes[spec.run_id] = outcome
                progress.set(spec.run_id, outcome["state"], outcome["detail"])
                continue
            if job.state in RUNNING:
                progress.set(spec.run_id, "running", f"job {job.job_id}")
            waiting.append((spec, job))
        pending = waiting
        if pending:
            time.sleep(POLL_S)
    return outcomes
