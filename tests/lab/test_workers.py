"""A study's runs over worker processes (``--workers``) and submitit (``--launcher debug``, and a
SLURM array with stand-in ``sbatch``/``srun``): the records equal the sequential run's, a failed
run leaves its traceback and stops nothing else, a run claimed elsewhere is waited for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glue_data import write_glue
from tenpeft.lab import workers
from tenpeft.lab.claims import try_claim
from helpers import load_study, study_flags
import paths

FAST = study_flags(steps=4, eval_every=2) + ["--ranks", "1"]  # every use gives its own --seeds
GRID = ["--methods", "lora,lorta", "--seeds", "0,1"]
SAME = ("run_id", "status", "config", "params", "history", "best", "score", "splits", "test", "predictions", "stages")


def rank_ablation():
    return load_study("rank_ablation")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    write_glue(root / "glue")
    return root


def argv(ws: Path, name: str, *extra: str) -> list[str]:
    return [*FAST, *(GRID if "--methods" not in extra else ["--seeds", "0"]), "--data-dir", str(ws / "glue"),
            "--results-dir", str(ws / name), "--figures-dir", str(ws / f"{name}_fig"), *extra]


def rounded(value):
    """``value`` with every float to 6 significant digits: a worker's process sums a batch's loss with its
    own torch thread count, which moves the last float32 digits (3e-8 seen), not what it trained."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return [rounded(v) for v in value] if isinstance(value, list) else value


def records(folder: Path) -> dict[str, dict]:
    """Every record under ``folder``, by run id, without timings and provenance (host, pid, time)."""
    out = {}
    for path in folder.glob("*/*.json"):
        record = json.loads(path.read_text())
        out[record["run_id"]] = rounded({k: record.get(k) for k in SAME})
    return out


@pytest.fixture(scope="module")
def sequential(ws):
    rank_ablation().main(argv(ws, "seq"))
    return records(ws / "seq")


def test_two_workers_write_the_sequential_records_wait_for_a_claimed_run_and_resume(ws, sequential, capsys,
                                                                                    monkeypatch):
    claimed = sorted(sequential)[0]  # held by "another process" until a worker has handed it back
    claim, report = try_claim(ws / "w2" / "rank_ablation" / f"{claimed}.json"), workers.Progress.set

    def release_once_waiting(progress, run_id, state, detail=""):
        report(progress, run_id, state, detail)
        if run_id == claimed and state == "waiting":
            claim.release()

    monkeypatch.setattr(workers.Progress, "set", release_once_waiting)
    rank_ablation().main(argv(ws, "w2", "--workers", "2"))
    out = capsys.readouterr().out
    assert len(sequential) == 4 and records(ws / "w2") == sequential
    for run_id in sequential:
        states = [line.split()[0] for line in out.splitlines() if run_id in line]
        expected = ["queued", "waiting", "running", "done"] if run_id == claimed else ["queued", "running", "done"]
        assert states == expected, (run_id, states)
    assert out.count("wrote ") == 2 and (ws / "w2_fig" / "rank_ablation_tiny-bert.png").stat().st_size > 1000
    assert not list((ws / "w2").rglob("*.claim")) and not list((ws / "w2").rglob("*.log"))
    monkeypatch.setattr(workers, "ProcessPoolExecutor", lambda *a, **k: pytest.fail("a finished study started workers"))
    rank_ablation().main(argv(ws, "w2", "--workers", "2"))
    assert capsys.readouterr().out.count("kept ") == 4


def test_the_submitit_debug_executor_writes_the_sequential_records(ws, sequential, capsys):
    pytest.importorskip("submitit")
    rank_ablation().main(argv(ws, "debug", "--launcher", "debug", "--slurm-time", "5", "--slurm-partition", "any"))
    out = capsys.readouterr().out
    assert records(ws / "debug") == sequential
    assert "submitted 4 run(s) to debug: jobs DEBUG_" in out and out.count("done ") == 4
    assert (ws / "debug_fig" / "rank_ablation_tiny-bert.pdf").exists()


def test_a_failed_run_leaves_its_traceback_the_others_finish_and_the_study_exits_1(ws, sequential, capsys):
    from tenpeft.lab.study import script

    extra = ("--workers", "2", "--import", "failing_method", "--methods", "lora,failing_lora")
    with pytest.raises(SystemExit) as exit_:
        script(lambda: rank_ablation().main(argv(ws, "fail", *extra)))
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    logs = list((ws / "fail" / "rank_ablation").glob("*.log"))
    assert len(logs) == 1 and "failing_lora" in logs[0].name
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: failing_lora fails on purpose" in text
    assert records(ws / "fail") == {k: v for k, v in sequential.items() if "-lora-" in k and "-s0-" in k}
    assert f"failed   {logs[0].stem}: RuntimeError: failing_lora fails on purpose" in out
    assert "wrote " in out  # concluded with the runs that finished
    assert err.strip().splitlines()[-1] == f"error: 1 run(s) failed, the others finished; tracebacks in: {logs[0]}"


def test_a_slurm_array_is_submitted_and_a_task_runs_its_run_on_a_node(ws, sequential, capsys, monkeypatch, tmp_path):
    """Stand-in ``srun``/``sbatch``: the array's batch file, then task 0 run as SLURM would start it."""
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/batch.sh\necho 'Submitted batch job 777'\n")
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    extra = ["--launcher", "slurm", "--no-wait", "--slurm-partition", "gpu", "--slurm-time", "30",
             "--slurm-parallelism", "2", "--slurm-set", "account=lab"]
    with pytest.raises(SystemExit) as exit_:
        rank_ablation().main(argv(ws, "slurm", *extra))
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "submitted 4 run(s) to slurm: job array 777" in out and "queued   " in out and "job 777_3" in out
    batch = (tmp_path / "batch.sh").read_text()
    for flag in ("--array=0-3%2", "--partition=gpu", "--time=30", "--account=lab", "--gpus-per-node=1",
                 "--signal=USR2@90"):
        assert f"#SBATCH {flag}\n" in batch
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "778", "SLURM_ARRAY_JOB_ID": "777",
           "SLURM_ARRAY_TASK_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "PYTHONPATH": os.pathsep.join([str(paths.ROOT), str(paths.TESTS), os.environ.get("PYTHONPATH", "")])}
    folder = ws / "slurm" / "rank_ablation" / ".submitit" / "%j"
    done = subprocess.run([sys.executable, "-m", "submitit.core._submit", str(folder)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written = records(ws / "slurm")
    assert len(written) == 1 and all(sequential[k] == v for k, v in written.items())


def test_a_preempted_task_resubmits_the_same_run():
    pytest.importorskip("submitit")
    from tenpeft.lab.slurm import RunTask

    task, spec = RunTask("/results", "no", ["failing_method"]), object()
    again = task.checkpoint(spec)
    assert again.function is task and again.args == (spec,) and again.kwargs == {}


def _claim_owners(folder: Path) -> dict[str, int]:
    """run id -> pid of the live owner of each claim file under ``folder``."""
    out = {}
    for path in folder.rglob("*.claim"):
        try:
            out[path.stem] = json.loads(path.read_text())["pid"]
        except (ValueError, KeyError, OSError):  # a claim being written
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_sigterm_to_the_parent_stops_its_workers_and_records_nothing_half_done(ws, tmp_path):
    import signal
    import time

    results = tmp_path / "res"
    cmd = [sys.executable, str(paths.STUDIES / "rank_ablation.py"), *FAST, *GRID, "--max-steps", "100000",
           "--eval-every", "100000", "--data-dir", str(ws / "glue"), "--results-dir", str(results),
           "--figures-dir", str(tmp_path / "fig"), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(owners := _claim_owners(results)) < 2 and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(owners) == 2 and parent.poll() is None, parent.stderr.read() if parent.poll() is not None else owners
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 130 and "interrupted: 0 finished run(s) kept" in parent.stderr.read()
    time.sleep(1)
    assert not [pid for pid in owners.values() if _alive(pid)]  # no worker left running without its parent
    assert not list(results.rglob("*.json"))
    assert all(try_claim(results / "rank_ablation" / f"{run_id}.json") for run_id in owners)  # free to rerun
