"""The efficiency study (issue 13, item 5): each run's record gets its measured cost (FLOPs, step time, peak
memory, adapter file size) without changing its training or score, a table and a figure with Pareto fronts,
and what cannot be measured is refused before any compute."""
from __future__ import annotations

import json

import pytest

from tenpeft.errors import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab.plots.efficiency import efficiency_table
from tenpeft.lab.run import DataConfig, RunSpec, check_spec, execute
from tenpeft.lab.loop import TrainConfig
from helpers import load_study, study_flags

FAST = study_flags(None, steps=3)
KEYS = ("flops_per_step", "step_s", "peak_memory_bytes", "weights_bytes", "adapter_file_bytes")


def _argv(tmp_path, glue, *extra):
    return [*FAST, "--data-dir", str(glue), "--results-dir", str(tmp_path / "res"), "--figures-dir",
            str(tmp_path / "fig"), *extra]


def test_the_study_measures_every_run_prints_the_table_and_resumes(tmp_path, glue, monkeypatch, capsys):
    study = load_study("efficiency")
    argv = _argv(tmp_path, glue, "--model", "tiny-bert", "--methods", "lora,lorta,full,peft_lora")
    records = study.main(argv)
    by_method = {r["config"]["method"]: r for r in records}
    assert sorted(by_method) == ["full", "lora", "lorta", "peft_lora"]
    for record in records:
        eff = record["efficiency"]
        assert record["config"]["efficiency"] is True and all(isinstance(eff[k], (int, float)) for k in KEYS)
        assert eff["flops_per_step"] > 0 and eff["step_s"] > 0 and eff["peak_memory_bytes"] >= 0
        assert eff["batch"] == {"size": 4, "tokens": eff["batch"]["tokens"]} and eff["batch"]["tokens"] <= 4 * 16
    full, lora = by_method["full"]["efficiency"], by_method["lora"]["efficiency"]
    assert full["flops_per_step"] > lora["flops_per_step"]  # full fine-tuning also computes every weight gradient
    assert full["adapter_file_bytes"] > 10 * lora["adapter_file_bytes"]
    assert lora["adapter_file"] == full["adapter_file"] == "tenpeft.save_adapter"
    assert by_method["peft_lora"]["efficiency"]["adapter_file"].startswith("trainable tensors")
    out = capsys.readouterr().out
    assert "| task | method | trainable | score | peak MiB | step ms | GFLOPs/step | adapter KiB |" in out
    assert (tmp_path / "fig" / "efficiency_tiny-bert.png").stat().st_size > 1000
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert sorted(r["run_id"] for r in study.main(argv)) == sorted(r["run_id"] for r in records)


def _spec(glue, model="tiny-bert", efficiency=False, method="lorta"):
    return RunSpec("eff", model, "sst2", method, {}, 0, TrainConfig(max_steps=3, eval_every=3, batch_size=4,
                                                                    max_length=16),
                   DataConfig(train_size=8, validation_size=8, test_size=8, data_dir=str(glue)), efficiency=efficiency)


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_measuring_changes_neither_the_training_nor_the_score(glue, model):
    from accelerate import Accelerator

    plain, measured = (execute(_spec(glue, model, flag), Accelerator(cpu=True), progress=False) for flag in (False, True))
    assert "efficiency" not in plain and measured["efficiency"]["flops_per_step"] > 0
    for key in ("history", "best", "score", "params", "status"):
        assert measured[key] == plain[key], key
    assert measured["run_id"] != plain["run_id"]  # a measured run is its own run
    if model == "tiny-llama":
        assert measured["efficiency"]["adapter_file"] == "tenpeft.save_adapter"


def test_what_cannot_be_measured_is_refused(glue):
    spec = RunSpec("eff", "tiny-llama", "hh_harmless", "lora", {}, efficiency=True)
    with pytest.raises(TenpeftError, match="is not measured"):
        check_spec(spec)
    from tenpeft.lab.packed import why_not_packable

    assert "measured" in why_not_packable(_spec(glue, efficiency=True)) and why_not_packable(_spec(glue)) is None


def test_a_record_without_an_efficiency_block_is_named(glue, tmp_path):
    from accelerate import Accelerator

    record = execute(_spec(glue), Accelerator(cpu=True), progress=False)
    with pytest.raises(TenpeftError, match="has no 'efficiency' block"):
        efficiency_table([json.loads(json.dumps(record))])
