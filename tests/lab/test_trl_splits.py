"""The trl kinds (preference, instruction, generation) under the comparison protocol (issue 31): three
disjoint splits fixed by the split seed, the checkpoint chosen on validation, the test split scored once at
that checkpoint, and overlapping splits refused before any compute."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tenpeft import TenpeftError
from tenpeft.lab.loop import BestCheckpoint
from tenpeft.lab.tasks.instruction import load_instruction
from tenpeft.lab.tasks.preference import load_preference
from helpers import load_study, study_flags
from test_preference import write_pairs

pytest.importorskip("trl")


def test_the_best_checkpoint_is_the_first_lowest_finite_validation_loss():
    model, best = torch.nn.Linear(2, 1), BestCheckpoint()
    with pytest.raises(TenpeftError, match="no finite validation loss"):
        best.restore(model)
    for loss, value in ((2.0, 1.0), (0.5, 2.0), (0.5, 3.0), (math.nan, 4.0), (0.7, 5.0)):
        with torch.no_grad():
            model.weight.fill_(value)
        best.offer(model, loss)
    best.restore(model)
    assert best.loss == 0.5 and torch.all(model.weight == 2.0)  # the first of the two 0.5s, never the NaN


def test_validation_and_test_are_the_same_rows_for_every_data_seed(tmp_path):
    write_pairs(tmp_path, {"train": 30, "test": 6})
    first, second = (load_preference("hh_harmless", tmp_path, train_size=10, validation_size=5, data_seed=seed)
                     for seed in (0, 1))
    columns = ("prompt", "chosen", "rejected")
    one, two = first.describe(columns), second.describe(columns)
    assert one["validation"] == two["validation"] and one["test"] == two["test"]
    assert one["train"]["fingerprint"] != two["train"]["fingerprint"]  # the seed draws the training subset
    assert not set(first.train["prompt"]) & set(first.validation["prompt"])


def test_a_train_only_source_carves_a_fixed_test_split(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"say {i}", "output": f"word {i}"}) + "\n" for i in range(20)))
    first, second = (load_instruction(f"local:{rows}", None, None, validation_size=3, test_size=4, data_seed=seed)
                     for seed in (0, 5))
    assert first.test["prompt"] == second.test["prompt"] and first.validation["prompt"] == second.validation["prompt"]
    assert (len(first.train), len(first.validation), len(first.test)) == (13, 3, 4)
    every = [*first.train["prompt"], *first.validation["prompt"], *first.test["prompt"]]
    assert len(set(every)) == 20


def test_a_pair_in_both_train_and_test_is_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    from tenpeft.lab import run as run_module

    write_pairs(tmp_path / "data")
    task = tmp_path / "data" / "hh_harmless"
    shared = (task / "train.jsonl").read_text().splitlines()[5]
    with open(task / "test.jsonl", "a") as f:
        f.write(shared + "\n")
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite overlapping splits"))
    study = load_study("preference")
    argv = [*study_flags("tiny-llama", test=0, max_length=32), "--ranks", "1", "--methods", "lora",
            "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "res")]
    with pytest.raises(SystemExit) as exit_info:
        study.script(lambda: study.main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "and test split" in err and "share 1 text(s)" in err  # with train or validation
    assert "splits must be disjoint" in err
    assert not (tmp_path / "res" / "preference").exists()


def test_sft_scores_test_once_at_the_checkpoint_chosen_on_validation(tmp_path, monkeypatch):
    """The validation losses are made 1.0, 0.5, 0.9: test must see the step-2 parameters, not the last ones."""
    from tenpeft.lab.runners import sft

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"name {i}", "output": f"blue {i}"}) + "\n" for i in range(16)))
    real, losses, seen = sft.evaluate, iter([1.0, 0.5, 0.9]), []

    def evaluate(trainer, split, scorer=None):
        ce, tokens, extra = real(trainer, split, scorer)
        state = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        seen.append((split, state))
        return (next(losses) if split == "validation" else ce), tokens, extra

    monkeypatch.setattr(sft, "evaluate", evaluate)
    argv = [*study_flags("tiny-llama", steps=3, eval_every=1, test=4, max_length=96), "--ranks", "1",
            "--methods", "lora", "--tasks", f"local:{rows}", "--results-dir", str(tmp_path / "res"),
            "--figures-dir", str(tmp_path / "fig"), "--lrs", "0.05"]
    (record,) = load_study("instruction_tuning").main(argv)
    assert [split for split, _ in seen] == ["validation"] * 3 + ["test"]
    at_step = {i + 1: state for i, (_, state) in enumerate(seen[:3])}
    tested = seen[3][1]
    assert all(torch.equal(a, b) for a, b in zip(tested, at_step[2]))
    assert not all(torch.equal(a, b) for a, b in zip(tested, at_step[3]))  # the last step's parameters differ
    assert record["best"]["step"] == 2 and record["score"]["validation"] == 0.5
    assert record["score"]["value"] == record["test"]["loss"] != 0.5
