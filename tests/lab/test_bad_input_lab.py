"""Bad input to the study scripts: each case fails before any training with one line that names
the flag, file or row and the fix, and leaves no record behind."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from glue_data import write_glue
from tenpeft import TenpeftError
from tenpeft.lab import run as run_module
from helpers import load_study, study_flags
import paths

STUDIES = paths.STUDIES
FAST = study_flags() + ["--methods", "lora"]
RANKS = {"rank_ablation": ["--ranks", "2"]}


def study(name: str):
    return load_study(name)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace with tiny GLUE data, and training made to fail the test if it is ever reached."""
    write_glue(tmp_path / "glue")
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite bad input"))
    return tmp_path


def argv(ws: Path, *extra: str, script: str = "rank_ablation") -> list[str]:
    return [*FAST, *RANKS.get(script, []), "--data-dir", str(ws / "glue"), "--results-dir", str(ws / "res"),
            "--figures-dir", str(ws / "fig"), *extra]


def failure(ws: Path, capsys, *extra: str, script: str = "rank_ablation") -> str:
    """The one-line message the script fails with (a TenpeftError, or argparse's exit 2)."""
    try:
        study(script).main(argv(ws, *extra, script=script))
    except TenpeftError as err:
        return str(err)
    except SystemExit as exit_:
        assert exit_.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    pytest.fail("the study ran despite bad input")


def _non_utf8(ws: Path) -> None:
    path = ws / "glue" / "sst2" / "train.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"\"sentence\": \"", b"\"sentence\": \"caf\xe9 ", 1)
    path.write_bytes(b"\n".join(lines))


def _empty_split(ws: Path) -> None:
    (ws / "glue" / "sst2" / "validation.jsonl").write_text("")


def _results_dir_is_a_file(ws: Path) -> None:
    (ws / "res").write_text("not a folder")


CASES = {
    "unknown task": ([], ["--tasks", "sst3"], "unknown task 'sst3'"),
    "empty --tasks": ([], ["--tasks", ","], "--tasks: ',' holds no task name"),
    "empty --seeds": ([], ["--seeds", ","], "--seeds: ',' holds no integer seed"),
    "empty --ranks": ([], ["--ranks", ","], "--ranks: ',' holds no integer rank"),
    "--lrs inf": ([], ["--lrs", "inf"], "--lrs: 'inf': each item must be a finite positive learning rate"),
    "--lrs nan": ([], ["--lrs", "1e-3,nan"], "each item must be a finite positive learning rate"),
    "--lrs 0": ([], ["--lrs", "0"], "each item must be a finite positive learning rate"),
    "--grid-seeds -1": ([], ["--grid-seeds", "-1"], "--grid-seeds: '-1' is not a whole number >= 0"),
    "--set over --ranks": ([], ["--ranks", "2,4", "--set", "lora.rank=8"], "--set lora.rank=... would override"),
    "--set unknown method": ([], ["--set", "lorra.alpha=16"], "method 'lorra' is not in this study"),
    "--set unknown key": ([], ["--set", "lora.rnak=4"], "rnak"),
    "unknown PEFT method": ([], ["--methods", "peft:nosuch"], "PEFT has no method 'nosuch' (peft:nosuch); its methods:"),
    "--import unknown module": ([], ["--import", "no_such_plugin_module"], "cannot import plugin module 'no_such_plugin_module'"),
    "--set without a key": ([], ["--set", "alpha=16"], "write METHOD.KEY=VALUE"),
    "model path": ([], ["--model", "no/such/model/dir"], "model 'no/such/model/dir'"),
    "--max-length": ([], ["--max-length", "1000"], "--max-length 1000 exceeds the 512 positions of tiny-bert"),
    "non-UTF-8 data": ([_non_utf8], [], "train.jsonl' line 5 (byte"),
    "empty split file": ([_empty_split], [], "validation.jsonl' is empty"),
    "unwritable results": ([_results_dir_is_a_file], [], "--results-dir"),
    "unknown --launcher": ([], ["--launcher", "pbs"], "--launcher 'pbs': choose one of local, slurm, debug"),
    "--workers 0": ([], ["--workers", "0"], "--workers 0: give 1 (one run after another) or more"),
    "--workers with slurm": ([], ["--workers", "2", "--launcher", "slurm"],
                             "with --launcher slurm every run is its own task: cap how many run at once with "
                             "--slurm-parallelism 2"),
    "--slurm-* without slurm": ([], ["--slurm-partition", "gpu"], "--slurm-partition applies to --launcher slurm"),
    "--no-wait without slurm": ([], ["--workers", "2", "--no-wait"], "--no-wait applies to --launcher slurm"),
    "unknown --slurm-set": ([], ["--launcher", "debug", "--slurm-set", "partitoin=gpu"],
                            "bad --slurm-* option: Unknown argument 'partitoin' for executor 'slurm'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_study_refuses_bad_input_before_training(ws, capsys, name):
    setups, extra, message = CASES[name]
    for setup in setups:
        setup(ws)
    text = failure(ws, capsys, *extra)
    assert message in text and "\n" not in text
    assert not list(ws.glob("res/*/*.json"))


def test_a_full_disk_is_refused_before_training(ws, capsys, monkeypatch):
    from tenpeft.lab import study as study_module

    monkeypatch.setattr(study_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 2**20))
    assert "on a disk with 1 MB free" in failure(ws, capsys)


def test_forgetting_needs_two_tasks(ws, capsys):
    text = failure(ws, capsys, "--chain", "sst2", script="forgetting")
    assert "forgetting needs at least two tasks" in text


def test_a_record_of_a_newer_schema_is_never_overwritten(ws, capsys):
    from tenpeft.lab.study import base_parser, expand, rank_variants

    args, _ = base_parser("t").parse_known_args(argv(ws))
    spec = expand("rank_ablation", args, rank_variants(["lora"], [2]))[0]
    path = run_module.record_path(spec, ws / "res")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": "tenpeft-run/9", "future": true}')
    text = failure(ws, capsys, "--ranks", "1,2")  # the newer record is the second run's: nothing trains first
    assert "written by a newer tenpeft" in text and str(path) in text
    assert path.read_text() == '{"schema": "tenpeft-run/9", "future": true}'


def test_a_user_error_is_one_line_and_exit_2_from_the_shell(ws):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(STUDIES / "rank_ablation.py"), *argv(ws, "--tasks", "sst3")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: nothing was run: lora on sst3: unknown task 'sst3'; known tasks: cola, sst2")


@pytest.mark.parametrize("launcher", ["slurm", "debug"])
def test_a_launcher_without_submitit_says_which_extra_to_install(ws, capsys, monkeypatch, launcher):
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)
    assert failure(ws, capsys, "--launcher", launcher) == f'--launcher {launcher} needs submitit: pip install "tenpeft[slurm]"'


def test_slurm_away_from_a_cluster_and_workers_under_torchrun_are_refused(ws, capsys, monkeypatch):
    slurm = pytest.importorskip("submitit.slurm.slurm")
    which = slurm.shutil.which
    monkeypatch.setattr(slurm.shutil, "which", lambda name, *a, **k: None if name == "srun" else which(name, *a, **k))
    assert "--launcher slurm: Could not detect \"srun\"" in failure(ws, capsys, "--launcher", "slurm")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "run the study without torchrun or accelerate launch (WORLD_SIZE=2)" in failure(ws, capsys, "--workers", "2")
