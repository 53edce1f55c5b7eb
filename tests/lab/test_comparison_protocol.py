"""The comparison protocol: three disjoint splits (choices on validation, scores on test), the seed drawing
the training rows, per-method learning-rate grids chosen on validation, t-intervals, paired tests with
Holm's correction, and a front that calls a point dominated only where the difference is significant."""
from __future__ import annotations

import math

import datasets
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tenpeft.errors import TenpeftError
from tenpeft.lab.flags import base_parser
from tenpeft.lab.plots.frontier import significant_front
from tenpeft.lab.rates import GRID_FACTORS, choice_lines, lr_choices, method_grid, rates_for
from tenpeft.lab.spec import DataConfig, RunSpec
from tenpeft.lab.stats import compare, holm, paired_bootstrap, paired_test, t_half_width
from tenpeft.lab.tasks.splits import SPLIT_SEED, fingerprint, make_splits

from helpers import load_study, study_flags


def rows(n: int, start: int = 0, repeat: int = 0) -> datasets.Dataset:
    """``n`` labelled rows with texts numbered from ``start``; the first ``repeat`` texts appear twice."""
    texts = [f"text {start + i}" for i in range(n)] + [f"text {start + i}" for i in range(repeat)]
    return datasets.Dataset.from_dict({"sentence": texts, "label": [i % 2 for i in range(len(texts))]})


def split(train, test=None, **sizes):
    return make_splits(train, test, ("sentence",), task="t", train_source="train.jsonl",
                       test_source=None if test is None else "test.jsonl", **sizes)


def texts(ds) -> set:
    return set(ds["sentence"])


# ---------------------------------------------------------------- splits

def test_the_three_splits_are_disjoint_and_only_the_training_rows_follow_the_seed():
    one = split(rows(200, repeat=50), rows(40, start=1000), train_size=60, validation_size=30, test_size=20, data_seed=0)
    two = split(rows(200, repeat=50), rows(40, start=1000), train_size=60, validation_size=30, test_size=20, data_seed=1)
    for s in (one, two):
        assert (len(s.train), len(s.validation), len(s.test)) == (60, 30, 20)
        assert not (texts(s.train) & texts(s.validation) or texts(s.train) & texts(s.test)
                    or texts(s.validation) & texts(s.test))
    assert one.validation["sentence"] == two.validation["sentence"] and one.test["sentence"] == two.test["sentence"]
    assert one.train["sentence"] != two.train["sentence"]
    described = one.describe(("sentence",))
    assert described["test"] == {"size": 20, "source": "test.jsonl", "fingerprint": fingerprint(one.test, ("sentence",))}
    assert f"split seed {SPLIT_SEED}" in described["validation"]["source"]


def test_a_training_row_repeating_a_validation_text_is_not_trained_on():
    s = split(rows(100, repeat=100), rows(10, start=1000), validation_size=10)  # every text twice in train
    assert len(s.validation) == 10 and len(s.train) == 200 - 10 - 10  # each carved text's twin leaves train too
    assert not texts(s.train) & texts(s.validation)


def test_without_a_held_out_split_test_and_validation_are_both_carved_from_train():
    s = split(rows(100), test_size=20, validation_size=10)
    assert (len(s.train), len(s.validation), len(s.test)) == (70, 10, 20)
    assert "test rows carved" in s.sources["test"] and len(texts(s.train) | texts(s.validation) | texts(s.test)) == 100


def test_a_test_split_sharing_a_text_with_train_is_refused_in_one_line():
    with pytest.raises(TenpeftError, match=r"^task 't': its train split \(train.jsonl\) and test split \(test.jsonl\) "
                                           r"share \d text\(s\), e.g. \[\"text 4\d\"\]; splits must be disjoint") as err:
        split(rows(50), rows(10, start=45), validation_size=5)
    assert "\n" not in str(err.value)


def test_a_validation_size_the_train_split_cannot_give_is_refused():
    with pytest.raises(TenpeftError, match="a train split of 10 rows cannot give 10 validation rows.*--validation-size"):
        split(rows(10), rows(5, start=100), validation_size=10)


def test_the_fingerprint_changes_with_a_text_or_a_label_and_not_with_a_copy():
    base = rows(5)
    assert fingerprint(base, ("sentence",)) == fingerprint(rows(5), ("sentence",))
    relabelled = base.map(lambda r, i: {"label": 1 - r["label"] if i == 0 else r["label"]}, with_indices=True)
    assert len({fingerprint(base, ("sentence",)), fingerprint(relabelled, ("sentence",)),
                fingerprint(rows(5, start=1), ("sentence",))}) == 3


def test_the_training_rows_are_drawn_by_the_run_seed_unless_a_data_seed_is_given():
    shared = DataConfig(train_size=8)
    specs = [RunSpec("s", "tiny-bert", "sst2", "lora", seed=seed, data=shared) for seed in (3, 4)]
    assert [s.config()["data"]["data_seed"] for s in specs] == [3, 4] and shared.data_seed is None
    fixed = RunSpec("s", "tiny-bert", "sst2", "lora", seed=3, data=DataConfig(data_seed=0))
    assert fixed.config()["data"]["data_seed"] == 0


# ---------------------------------------------------------------- statistics

def test_the_t_interval_and_the_paired_test_are_scipys():
    values = [0.80, 0.82, 0.79, 0.81, 0.84]
    low, high = scipy_stats.t.interval(0.95, 4, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert t_half_width(values) == pytest.approx((high - low) / 2) and math.isnan(t_half_width([0.8]))
    a = dict(enumerate(values))
    b = dict(enumerate([0.78, 0.80, 0.80, 0.77, 0.81]))
    result = paired_test(a, b)
    assert result.p == pytest.approx(scipy_stats.ttest_rel(values, list(b.values())).pvalue)
    assert result.n == 5 and result.diff == pytest.approx(0.02) and result.low < result.diff < result.high
    assert paired_test(a, b, "wilcoxon").p == pytest.approx(scipy_stats.wilcoxon(
        np.subtract(values, list(b.values()))).pvalue)


def test_a_paired_test_on_one_shared_seed_says_why_not():
    with pytest.raises(TenpeftError, match=r"needs at least 2 seeds run by both.*share 1 \(\[0\]\).*--seeds 0,1,2,3,4"):
        paired_test({0: 0.8, 1: 0.7}, {0: 0.6, 2: 0.5})


def test_holm_is_the_step_down_correction():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_the_paired_bootstrap_resamples_both_runs_alike():
    gold = np.array([0, 1] * 50)
    accuracy = (lambda p, g: float((p == g).mean()))
    assert paired_bootstrap(gold, gold, gold, accuracy, resamples=50) == (0.0, 0.0, 0.0)
    worse = gold.copy()
    worse[:20] = 1 - worse[:20]
    diff, low, high = paired_bootstrap(gold, worse, gold, accuracy, resamples=400)
    assert diff == pytest.approx(0.2) and 0.0 < low < diff < high
    with pytest.raises(TenpeftError, match="same test examples"):
        paired_bootstrap(gold[:3], gold, gold, accuracy)


def frame(scores: dict) -> pd.DataFrame:
    """A runs frame of ``{(method, trainable): [score per seed]}``."""
    out = [{"task": "t", "method": m, "label": m, "trainable": n, "seed": s, "score": v}
           for (m, n), values in scores.items() for s, v in enumerate(values)]
    return pd.DataFrame(out)


def test_compare_tests_every_pair_on_shared_seeds_holm_corrected():
    runs = frame({("a", 10): [0.80, 0.81, 0.82, 0.80, 0.81], ("b", 10): [0.70, 0.72, 0.71, 0.69, 0.70],
                  ("c", 10): [0.80, 0.80, 0.83, 0.79, 0.82]})
    table = compare(runs, ["task", "method"])
    assert list(zip(table["a"], table["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert list(table["p_holm"]) == pytest.approx(holm(list(table["p"])))
    assert list(table["significant"]) == [True, False, True]
    with pytest.raises(TenpeftError, match="no two configurations share 2 seeds"):
        compare(runs[runs["seed"] == 0], ["task", "method"])
    with pytest.raises(TenpeftError, match="nothing to compare: each group of \\['task'\\] holds one method value"):
        compare(runs[runs["method"] == "a"], ["task", "method"])


def test_the_front_drops_a_point_only_when_it_is_significantly_dominated():
    runs = frame({("small", 10): [0.80, 0.81, 0.82, 0.80, 0.81], ("noisy", 100): [0.70, 0.90, 0.75, 0.86, 0.79],
                  ("worse", 100): [0.70, 0.72, 0.71, 0.69, 0.70]})
    points = runs.groupby(["label"]).agg(trainable=("trainable", "first"), mean=("score", "mean")).reset_index()
    front = significant_front(runs, points, higher_is_better=True)
    # "noisy" has the lower mean (0.800 < 0.808) with more parameters, but not significantly: it stays
    assert list(front["label"]) == ["small", "noisy"]


# ---------------------------------------------------------------- learning rates and defaults

def test_a_comparative_study_sweeps_each_methods_own_grid_by_default():
    grid = method_grid("tiny-bert", "lora")
    assert grid == [pytest.approx(3e-3 * f, rel=1e-2) for f in GRID_FACTORS]
    args = base_parser("x", lr_grid=True).parse_args([])
    assert args.lr_grid and args.seeds == [0, 1, 2, 3, 4] and (args.validation_size, args.test_size) == (500, 0)
    args.model = "tiny-bert"
    assert rates_for(args, "lora", {}, {}) == grid and rates_for(args, "full", {}, {}) == method_grid("tiny-bert", "full")
    assert rates_for(base_parser("x", lr_grid=True).parse_args(["--one-lr", "--model", "tiny-bert"]), "lora", {}, {}) == [3e-3]
    assert rates_for(base_parser("x").parse_args(["--lrs", "1e-4", "--model", "tiny-bert"]), "lora", {}, {}) == [1e-4]


@pytest.mark.parametrize("study, grid", [("rank_ablation", True), ("equal_budget", True), ("overfitting", False)])
def test_the_studies_that_compare_methods_sweep_a_grid_by_default(study, grid, capsys):
    with pytest.raises(SystemExit):
        load_study(study).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"chosen on validation (default: {grid})" in text


def record(method: str, lr: float, seed: int, val_loss: float) -> dict:
    return {"config": {"task": "sst2", "method": method, "lr": lr, "seed": seed, "axes": {"rank": 4, "lr": lr},
                       "train": {}, "data": {"train_size": 8, "data_seed": seed}, "model": "m", "method_args": {}},
            "best": {"val_loss": val_loss}, "status": "ok"}


def test_the_rate_is_chosen_per_method_on_mean_validation_loss_and_said():
    records = [record("lora", 1e-3, s, 0.5) for s in (0, 1)] + [record("lora", 3e-3, s, 0.4) for s in (0, 1)]
    records += [record("lorta", 1e-3, s, 0.3) for s in (0, 1)] + [record("lorta", 3e-3, s, 0.6) for s in (0, 1)]
    chosen = {c["method"]: c["chosen"] for c in lr_choices(records)}
    assert chosen == {"lora": 3e-3, "lorta": 1e-3}
    assert choice_lines(records)[0] == "sst2 lora rank=4: chose lr 0.003 (mean validation loss over seed(s) 0,1: " \
                                       "0.001: 0.5000, 0.003: 0.4000; 2 seed(s) at it)"


def test_the_rate_is_chosen_on_the_seeds_every_rate_ran():
    """Seeds 1-2 ran only at 3e-3 (the second phase): their high losses do not undo the choice made on seed 0."""
    records = [record("lora", 1e-3, 0, 0.5), record("lora", 3e-3, 0, 0.4)] + [record("lora", 3e-3, s, 0.9) for s in (1, 2)]
    [choice] = lr_choices(records)
    assert (choice["chosen"], choice["grid_seeds"], choice["seeds"]) == (3e-3, [0], 3)
    assert choice["grid"] == {1e-3: 0.5, 3e-3: 0.4}


def _specs(lrs, seeds, method="lora"):
    from tenpeft.lab.loop import TrainConfig

    return [RunSpec("s", "tiny-bert", "sst2", method, {"rank": 2}, seed, TrainConfig(lr=lr), DataConfig(train_size=8),
                    {"rank": 2, "lr": lr} if len(lrs) > 1 else {"rank": 2}) for lr in lrs for seed in seeds]


def test_the_grid_runs_on_the_first_seeds_and_the_others_at_the_rate_chosen():
    from tenpeft.lab.rates import at_chosen_rates, grid_phases

    swept, fixed = _specs([1e-3, 3e-3, 1e-2], [0, 1, 2]), _specs([3e-3], [0, 1, 2], method="lorta")
    first, rest = grid_phases(swept + fixed, grid_seeds=1)
    assert sorted((s.method, s.seed, s.train.lr) for s in first) == sorted(
        [("lora", 0, lr) for lr in (1e-3, 3e-3, 1e-2)] + [("lorta", s, 3e-3) for s in (0, 1, 2)])
    assert {(s.seed, s.train.lr) for s in rest} == {(s, lr) for s in (1, 2) for lr in (1e-3, 3e-3, 1e-2)}
    done = [{"config": s.config(), "best": {"val_loss": {1e-3: 0.6, 3e-3: 0.5, 1e-2: 0.2}[s.train.lr]}, "status": "ok"}
            for s in first if s.method == "lora"]
    assert [(s.seed, s.train.lr) for s in at_chosen_rates(rest, done)] == [(1, 1e-2), (2, 1e-2)]
    assert grid_phases(swept, grid_seeds=0) == (swept, []) and grid_phases(swept, grid_seeds=3) == (swept, [])


def test_a_study_trains_the_grid_on_the_grid_seeds_only(glue, tmp_path, capsys):
    argv = [*study_flags(seeds="0,1,2", one_lr=False), "--methods", "lora", "--ranks", "2", "--data-dir", str(glue),
            "--results-dir", str(tmp_path / "r"),
            "--figures-dir", str(tmp_path / "f")]
    records = load_study("rank_ablation").main(argv)
    ran = sorted((r["config"]["seed"], r["config"]["lr"]) for r in map(__import__("json").loads,
                 (p.read_text() for p in (tmp_path / "r" / "rank_ablation").glob("*.json"))))
    chosen = records[0]["config"]["lr"]
    assert ran == sorted([(0, lr) for lr in method_grid("tiny-bert", "lora")] + [(1, chosen), (2, chosen)])
    assert sorted(r["config"]["seed"] for r in records) == [0, 1, 2]
    assert "over seed(s) 0:" in capsys.readouterr().out


def test_records_from_before_the_three_splits_are_named_in_the_summary():
    from tenpeft.lab.records import old_protocol_note

    assert old_protocol_note([{"splits": {}}]) is None
    note = old_protocol_note([{"splits": {}}, {"eval_split": {"sst2": "validation"}}])
    assert note.startswith("note: 1 of 2 record(s) predate the three splits") and "chosen on the split they report" in note
