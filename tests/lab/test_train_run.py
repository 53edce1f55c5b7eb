"""Runs on disk: atomic records, resume (finished runs are read back, not rerun), Ctrl-C keeps
finished records, and bad input fails before any training with one clear error."""
from __future__ import annotations

import dataclasses
import json

import pytest

from glue_data import write_glue
from tenpeft import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab import study
from tenpeft.atomic import atomic_write_json
from tenpeft.lab.records import DamagedRecord, load_records, read_record
from tenpeft.lab.study import Variant, base_parser, best_lr_only, check_all, expand, parse_sets, run_all

from helpers import study_flags

FAST = study_flags()


@pytest.fixture
def args(tmp_path):
    glue = write_glue(tmp_path / "glue")
    return base_parser("test").parse_args(FAST + ["--data-dir", str(glue), "--results-dir", str(tmp_path / "res")])



def tmp_path_of(args):
    from pathlib import Path
    return Path(args.results_dir)


def test_write_json_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    path = atomic_write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    with pytest.raises(ValueError):  # NaN is not JSON: the old file stays whole, no temp file remains
        atomic_write_json(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"x": 1} and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_read_record_rejects_truncated_or_foreign_files(tmp_path):
    (tmp_path / "cut.json").write_text('{"schema": "tenpeft-run/1", "stu')
    (tmp_path / "other.json").write_text('{"schema": "something-else"}')
    with pytest.warns(DamagedRecord, match="cut.json is not a readable run record"):
        assert read_record(tmp_path / "cut.json") is None
    with pytest.warns(DamagedRecord, match="other.json has schema 'something-else'"):
        assert read_record(tmp_path / "other.json") is None
    assert read_record(tmp_path / "missing.json") is None


def test_rerun_skips_finished_runs_and_reruns_damaged_ones(args, monkeypatch):
    specs = expand("unit", args, [Variant("lora", {"rank": 2}, {"rank": 2}), Variant("lorta", {"rank": 2})])
    first = run_all(specs, args)
    files = sorted((tmp_path_of(args) / "unit").glob("*.json"))
    assert len(files) == 2 and [r["run_id"] for r in first] == [s.run_id for s in specs]
    calls = []
    real = run_module.execute
    monkeypatch.setattr(run_module, "execute", lambda spec, *a, **k: calls.append(spec.run_id) or real(spec, *a, **k))
    again = run_all(specs, args)
    assert calls == [] and again == first
    files[0].write_text(files[0].read_text()[:50])  # a damaged record is run again
    with pytest.warns(DamagedRecord, match=files[0].name):
        run_all(specs, args)
    assert calls == [files[0].stem]


def test_a_changed_setting_is_a_new_run(args):
    a = expand("unit", args, [Variant("lora")])[0]
    args.max_steps = 3
    b = expand("unit", args, [Variant("lora")])[0]
    assert a.run_id != b.run_id and a.run_id.rsplit("-", 1)[0] == b.run_id.rsplit("-", 1)[0]


def test_interrupt_keeps_finished_records(args, monkeypatch):
    specs = expand("unit", args, [Variant("lora"), Variant("lorta"), Variant("vera")])
    real, calls = run_module.execute, []

    def interrupt_second(spec, *a, **k):
        calls.append(spec)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(spec, *a, **k)

    monkeypatch.setattr(run_module, "execute", interrupt_second)
    with pytest.raises(SystemExit) as exit_info:
        run_all(specs, args)
    assert exit_info.value.code == 130
    records = load_records(args.results_dir)
    assert [r["run_id"] for r in records] == [specs[0].run_id]


@pytest.mark.parametrize("change,message", [
    ({"tasks": ["sst3"]}, "unknown task"),
    ({"model": "no/such/model/dir"}, "model"),
    ({"set": ["lora.rnak=4"]}, "rnak"),
])
def test_bad_input_fails_before_any_training(args, monkeypatch, change, message):
    vars(args).update(change)
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite bad input"))
    with pytest.raises(TenpeftError, match=message):
        run_all(expand("unit", args, [Variant("lora")]), args)
    assert not tmp_path_of(args).exists()


def test_unknown_method_and_training_key_and_bad_data_fail_before_training(args, tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite bad input"))
    with pytest.raises(TenpeftError, match="unknown method 'lroa'"):
        run_all(expand("unit", args, [Variant("lroa")]), args)
    with pytest.raises(TenpeftError, match="unknown training setting"):
        expand("unit", args, [Variant("lora")], train_overrides={"warmpu_ratio": 0.1})
    (tmp_path / "glue" / "rte" / "validation.jsonl").unlink()
    args.tasks = ["sst2", "rte"]
    with pytest.raises(TenpeftError, match="rte"):
        run_all(expand("unit", args, [Variant("lora")]), args)
    bad = tmp_path / "glue" / "sst2" / "train.jsonl"
    bad.write_text(bad.read_text().replace('"label": 1', '"label": 7', 1))
    args.tasks = ["sst2"]
    with pytest.raises(TenpeftError, match="7"):
        check_all(expand("unit", args, [Variant("lora")]))
    assert not tmp_path_of(args).exists()


def test_parse_sets_and_bad_set():
    assert parse_sets(["lora.alpha=16", "lora.format=tt", "lorta.roles=[\"q\"]"]) == {
        "lora": {"alpha": 16, "format": "tt"}, "lorta": {"roles": ["q"]}}
    with pytest.raises(TenpeftError, match="METHOD.KEY=VALUE"):
        parse_sets(["alpha=16"])


def test_best_lr_only_keeps_the_rate_with_the_lowest_mean_validation_loss():
    def rec(lr, seed, loss, rank=2):
        config = {"model": "m", "task": "t", "method": "lora", "method_args": {"rank": rank}, "seed": seed, "lr": lr,
                  "axes": {"rank": rank, "lr": lr}, "train": {"lr": lr}, "data": {}}
        return {"config": config, "best": {"val_loss": loss}}
    records = [rec(1e-3, 0, 0.5), rec(1e-3, 1, 0.7), rec(1e-2, 0, 0.55), rec(1e-2, 1, 0.56), rec(1e-3, 0, 0.9, rank=4)]
    kept = best_lr_only(records)
    assert sorted((r["config"]["lr"], r["config"]["seed"], r["config"]["method_args"]["rank"]) for r in kept) == [
        (1e-3, 0, 4), (1e-2, 0, 2), (1e-2, 1, 2)]


def test_lr_sweep_expands_every_rate(args):
    args.lrs = [1e-3, 1e-2]
    specs = expand("unit", args, [Variant("lora")])
    assert [s.train.lr for s in specs] == [1e-3, 1e-2] and specs[0].axes == {"lr": 1e-3}
    assert study.default_lr("tiny-bert", "lorta") > study.default_lr("tiny-bert", "full")


def test_the_default_rate_follows_what_a_method_trains_not_its_name(monkeypatch):
    """Every adapter, tenpeft's, PEFT's or one registered by a user, gets the same default rate;
    only a method that trains most of the model (full fine-tuning) gets the small one."""
    from tenpeft.methods import METHODS

    monkeypatch.setitem(METHODS, "lora_copy_for_lr_test", dataclasses.replace(METHODS["lora"], name="lora_copy_for_lr_test"))
    rates = {m: study.default_lr("tiny-bert", m) for m in ("lora", "lorta", "vera", "peft_lora", "peft:loha",
                                                             "lora_copy_for_lr_test", "full")}
    assert rates.pop("full") == study.FULL_LR
    assert set(rates.values()) == {study.ADAPTER_LR}
