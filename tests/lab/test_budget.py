"""Fitting a method's rank to a parameter budget (tenpeft.lab.budget) and the equal-budget study's flags."""
from __future__ import annotations

import math

import pytest

import tenpeft
from tenpeft.lab.budget import adapter_count, fit_rank

ARGS = {"head": "dense", "train_norms": False}


@pytest.mark.parametrize("method", ["lora", "lorta", "lotr", "fact_tk", "tenslora", "loretta_rep"])
@pytest.mark.parametrize("budget", [500, 3000])
def test_the_fitted_rank_is_the_closest_by_ratio(method, budget):
    fit = fit_rank("tiny-bert", method, budget, ARGS)
    assert fit.count == adapter_count("tiny-bert", method, {**ARGS, "rank": fit.rank})

    def distance(rank):
        return abs(math.log(adapter_count("tiny-bert", method, {**ARGS, "rank": rank}) / budget))

    assert all(distance(fit.rank) <= distance(r) for r in range(1, 3 * fit.rank + 3))


def test_a_count_that_stops_growing_is_reported_at_the_first_rank_reaching_it():
    """krona on tiny-bert's 32 x 32 Q and V (4 x 8 factors): B is full (32 per matrix) from rank 4 on."""
    fit = fit_rank("tiny-bert", "krona", 100_000, ARGS)
    assert (fit.rank, fit.count) == (4, 4 * (16 + 64))
    assert adapter_count("tiny-bert", "krona", {**ARGS, "rank": 3}) < fit.count


@pytest.mark.parametrize("method, budget, message", [
    ("peft_lora", 1000, "peft_lora has no tenpeft rank to fit"),
    ("quanta", 1000, "quanta has no tenpeft rank to fit"),
    ("lora", 0, "a budget must be a positive int, got 0"),
])
def test_bad_input(method, budget, message):
    with pytest.raises(tenpeft.TenpeftError, match=message):
        fit_rank("tiny-bert", method, budget, ARGS)


@pytest.mark.parametrize("flags, message", [
    (["--tolerance", "0.5"], "--tolerance: invalid"),
    (["--budgets", "0,1000"], "every budget must be a positive number of parameters"),
    (["--budgets", ","], "holds no integer parameter budget"),
])
def test_bad_study_flags_exit_2_before_anything_trains(flags, message, capsys):
    from helpers import load_study

    module = load_study("equal_budget")
    with pytest.raises(SystemExit) as exit_info:
        module.main(flags + ["--model", "tiny-bert"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
