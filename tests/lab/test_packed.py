"""Packed runs: K runs in one process, frozen base held once, each record equal to its solo run's."""
from __future__ import annotations

import pytest
from accelerate import Accelerator

from tenpeft import TenpeftError
from tenpeft.lab.loop import TrainConfig
from tenpeft.lab.models import load_model, resolve_model
from tenpeft.lab.packed import FrozenPool, execute_packed, pack_groups, run_pack
from tenpeft.lab.records import read_record
from tenpeft.lab.run import DataConfig, RunSpec, execute, record_path
from tenpeft.lab.study import Variant, base_parser, expand, run_all

from helpers import study_flags

TINY = dict(max_steps=4, batch_size=4, eval_batch_size=8, eval_every=2, max_length=16)
SAME = ("status", "diverged", "config", "params", "history", "best", "score", "splits", "test", "predictions", "stages")


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def spec(glue, method, args=None, model="minilm", task="sst2", seed=0, **train) -> RunSpec:
    return RunSpec("packed", model, task, method, args or {}, seed=seed, train=TrainConfig(**{**TINY, **train}),
                   data=DataConfig(train_size=16, validation_size=8, test_size=8, data_dir=str(glue)))


def assert_same_as_solo(specs, accelerator):
    packed = execute_packed(specs, accelerator, progress=False)
    for one, record in zip(specs, packed):
        solo = execute(one, accelerator, progress=False)
        assert {k: record[k] for k in SAME} == {k: solo[k] for k in SAME}, one.run_id
        assert record["run_id"] == solo["run_id"] and record["packed"]["size"] == len(specs)
    return packed


def test_packed_records_equal_solo_records_with_dropout_seeds_rates_and_tasks(glue, accelerator):
    # MiniLM keeps its 0.1 dropout, so each run's random stream must be its own for the records to match
    specs = [spec(glue, "lora", {"rank": 2}), spec(glue, "lorta", {"rank": 2}, seed=1),
             spec(glue, "lora", {"rank": 2}, lr=3e-3, max_steps=6), spec(glue, "peft_lora", {"r": 2}, task="stsb"),
             spec(glue, "loretta_adp", seed=2, eval_at_start=True)]
    packed = assert_same_as_solo(specs, accelerator)
    frozen = sum(p.numel() * p.element_size() for p in load_model(resolve_model("minilm"), 2).parameters())
    # every run but the first freed (nearly) all of its base: only the embeddings' and norms' share
    # that a method trains (loretta_adp's norms) or that a head replaces stays per run
    assert packed[0]["packed"]["shared_frozen_bytes"] > 0.9 * (len(specs) - 1) * frozen


def test_packed_decoder_runs_share_their_random_init_base_and_match_solo(glue, accelerator):
    specs = [spec(glue, "lora", {"rank": 2}, model="tiny-llama"), spec(glue, "lorta", {"rank": 2}, model="tiny-llama"),
             spec(glue, "lora", {"rank": 2}, model="tiny-llama", seed=1)]
    packed = assert_same_as_solo(specs, accelerator)
    assert packed[0]["packed"]["shared_frozen_bytes"] > 0  # seed 0's two runs share; seed 1's init differs


def test_frozen_pool_shares_only_equal_frozen_tensors_and_keeps_ties():
    import torch
    from torch import nn

    def model(value):
        m = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 4, bias=False), nn.Linear(3, 3))
        with torch.no_grad():
            m[0].weight.fill_(value)
        m[1].weight = m[0].weight  # tied
        m[0].weight.requires_grad_(False)
        return m

    pool, a, b, c = FrozenPool(), model(1.0), model(1.0), model(2.0)
    for m in (a, b, c):
        pool.share(m)
    assert b[0].weight is a[0].weight and b[1].weight is a[0].weight  # equal: shared, tie kept
    assert c[0].weight is not a[0].weight and c[1].weight is c[0].weight  # different values: its own
    assert b[2].weight is not a[2].weight  # trainable: never shared
    assert pool.shared_bytes == 12 * 4


def test_a_pack_refuses_mixed_models_and_chains_before_training(glue, accelerator):
    with pytest.raises(TenpeftError, match="shares one base model"):
        execute_packed([spec(glue, "lora"), spec(glue, "lora", model="tiny-bert")], accelerator)
    with pytest.raises(TenpeftError, match="a chain of tasks, which trains alone"):
        execute_packed([spec(glue, "lora", task="sst2>mrpc")], accelerator)
    chain, runs = spec(glue, "lora", task="sst2>mrpc"), [spec(glue, "lora", seed=s) for s in range(3)]
    other = spec(glue, "lora", model="tiny-bert")
    groups = pack_groups([runs[0], chain, other, runs[1], runs[2]], 2)
    assert groups == [[runs[0], runs[1]], [chain], [other], [runs[2]]]


def test_run_pack_writes_each_record_and_reads_finished_ones_back(glue, accelerator, tmp_path):
    specs = [spec(glue, "lora", {"rank": 2}, model="tiny-bert", seed=s) for s in (0, 1)]
    first = run_pack(specs, tmp_path, accelerator, progress=False)
    assert [how for _, how in first] == ["ran", "ran"]
    assert [read_record(record_path(s, tmp_path)) for s in specs] == [r for r, _ in first]
    assert [how for _, how in run_pack(specs, tmp_path, accelerator, progress=False)] == ["kept", "kept"]


def test_study_pack_flag_matches_the_sequential_study(glue, tmp_path):
    fast = study_flags(seeds="0,1") + ["--data-dir", str(glue)]
    variants = [Variant("lora", {"rank": 2}), Variant("lorta", {"rank": 2})]
    records = {}
    for flags in ([], ["--pack", "3"]):
        args = base_parser("test").parse_args(fast + flags + ["--results-dir", str(tmp_path / str(len(flags)))])
        records[len(flags)] = run_all(expand("unit", args, variants), args)
    assert [r.get("packed", {}).get("size") for r in records[2]] == [3, 3, 3, None]  # the 4th trains alone
    assert [{k: r[k] for k in SAME} for r in records[2]] == [{k: r[k] for k in SAME} for r in records[0]]


@pytest.mark.parametrize("flags, message", [(["--pack", "0"], "--pack 0"),
                                             (["--pack", "2", "--workers", "2"], "--pack 2 trains")])
def test_bad_pack_flags_fail_before_any_run(glue, tmp_path, flags, message):
    args = base_parser("test").parse_args(["--model", "tiny-bert", "--data-dir", str(glue), "--no-progress", "--one-lr",
                                           "--results-dir", str(tmp_path)] + flags)
    with pytest.raises(TenpeftError, match=message):
        run_all(expand("unit", args, [Variant("lora")]), args)
    assert not any(tmp_path.rglob("*.json"))
