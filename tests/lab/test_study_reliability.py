"""A study never wastes a run or writes a wrong result: diverged runs are results, a run's
identity does not depend on path spelling, files are whole and readable by others, and processes
sharing a results folder train each run once."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from glue_data import write_glue
from tenpeft.atomic import atomic_write_json, sweep_stale
from tenpeft.lab import run as run_module
from tenpeft.lab.records import DamagedRecord, SCHEMA, load_records, read_record
from tenpeft.lab.study import Variant, base_parser, expand, run_all
from helpers import load_study, study_flags
import paths

ROOT = paths.ROOT
FAST = study_flags(steps=4, eval_every=2)


@pytest.fixture
def ws(tmp_path):
    write_glue(tmp_path / "glue")
    return tmp_path


def study_argv(ws: Path, *extra: str) -> list[str]:
    return [*FAST, "--data-dir", str(ws / "glue"), "--results-dir", str(ws / "res"), "--figures-dir",
            str(ws / "fig"), *extra]


def rank_ablation():
    return load_study("rank_ablation")


def test_a_diverged_run_is_recorded_skipped_in_summaries_and_not_retrained(ws, capsys, monkeypatch):
    argv = study_argv(ws, "--methods", "lorta", "--ranks", "2", "--lrs", "1e-2,1e30")
    kept = rank_ablation().main(argv)
    records = load_records(ws / "res")
    by_lr = {r["config"]["lr"]: r for r in records}
    assert sorted(by_lr) == [1e-2, 1e30]
    bad = by_lr[1e30]
    assert bad["status"] == "diverged" and bad["score"]["value"] is None and bad["best"] is None
    assert bad["diverged"]["task"] == "sst2" and bad["diverged"]["step"] >= 1
    assert by_lr[1e-2]["status"] == "ok" and [r["config"]["lr"] for r in kept] == [1e-2]
    out = capsys.readouterr().out
    assert "1 diverged run(s) left out of summaries and figures" in out and bad["run_id"] in out
    assert (ws / "fig" / "rank_ablation_tiny-bert.png").stat().st_size > 1000
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("a finished run was trained again"))
    rank_ablation().main(argv)


def test_every_run_diverged_ends_the_study_with_a_note(ws, capsys):
    assert rank_ablation().main(study_argv(ws, "--methods", "lora", "--ranks", "2", "--lrs", "1e30")) == []
    assert "every run diverged" in capsys.readouterr().out


def test_run_identity_does_not_depend_on_how_the_data_path_is_spelled(ws, monkeypatch):
    args = base_parser("t").parse_args(study_argv(ws))
    first = expand("unit", args, [Variant("lora")])[0]
    monkeypatch.chdir(ws)
    os.symlink(ws / "glue", ws / "link")
    for spelling in ("glue", "./glue/", f"{ws}/glue/../glue", "link"):
        args.data_dir = spelling
        assert expand("unit", args, [Variant("lora")])[0].run_id == first.run_id, spelling


def test_records_and_figures_are_readable_by_others_and_dead_writers_leave_nothing(ws):
    path = atomic_write_json(ws / "res" / "r.json", {"x": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from tenpeft.atomic import host

    stale = ws / "res" / f".rank_ablation.png.{host()}-{int(dead.stdout)}.abc123.tmp"
    live = ws / "res" / f".other.png.{host()}-{os.getpid()}.def456.tmp"
    stale.write_text("half a figure")
    live.write_text("being written")
    assert sweep_stale(ws / "res") == [stale]
    assert not stale.exists() and live.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_damaged_record_is_named_and_its_run_trained_again(ws):
    args = base_parser("t").parse_args(study_argv(ws))
    specs = expand("unit", args, [Variant("lora")])
    run_all(specs, args)
    path = run_module.record_path(specs[0], args.results_dir)
    record = json.loads(path.read_text())
    record["score"] = {"metric": "accuracy", "value": "high"}
    path.write_text(json.dumps(record))
    with pytest.warns(DamagedRecord, match=rf"{path}.*field 'score.value' must be a number or null, got string"):
        assert read_record(path) is None
    with pytest.warns(DamagedRecord):
        again = run_all(specs, args)
    assert again[0]["schema"] == SCHEMA and isinstance(again[0]["score"]["value"], float)


def test_two_processes_on_one_results_dir_train_each_run_once(ws):
    argv = study_argv(ws, "--methods", "lora,lorta", "--ranks", "1,2", "--seeds", "0,1")
    script = ROOT / "studies" / "rank_ablation.py"
    procs = [subprocess.Popen([sys.executable, str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    ran = [line.split()[1].rstrip(":") for out, err in outputs for line in (out + err).splitlines() if line.startswith("ran ")]
    files = sorted((ws / "res" / "rank_ablation").glob("*.json"))
    assert len(files) == 8 and sorted(ran) == sorted(f.stem for f in files)
    assert not list((ws / "res" / "rank_ablation").glob("*.claim"))
    assert all("wrote" in out for out, _ in outputs)  # both finish with the full summary and figure
