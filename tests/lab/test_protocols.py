"""The papers' protocols (--paper NAME) and the head's own learning rate (--head-lr)."""
from __future__ import annotations

import math

import pytest
import tenpeft
from tenpeft import TenpeftError
from tenpeft.lab.loop import TrainConfig, make_optimizer
from tenpeft.lab.models import load_model, resolve_model
from tenpeft.lab.protocols import PROTOCOLS, get_protocol
from tenpeft.lab.run import RunSpec, DataConfig, check_spec
from tenpeft.lab.study import Variant, base_parser, expand

FAST = ["--model", "tiny-bert", "--seeds", "0", "--eval-every", "2", "--train-size", "8", "--validation-size", "4", "--test-size", "8",
        "--no-progress", "--one-lr"]


def test_lorta_protocol_is_the_official_config():
    """ihounie/lorta nlu/glue/create_json_config.py: RoBERTa-base SST-2 60 epochs, both rates 4e-3;
    RTE 160 epochs, classifier 1e-2; batch 64, max length 512, warm-up 0.06, max_grad_norm 1000."""
    sst2, rte = get_protocol("lorta-base", "sst2"), get_protocol("lorta-base", "rte")
    assert (sst2.epochs, sst2.lr, sst2.head_lr, sst2.batch_size, sst2.max_length) == (60, 4e-3, 4e-3, 64, 512)
    assert (rte.epochs, rte.lr, rte.head_lr, rte.warmup_ratio, rte.grad_clip) == (160, 1e-2, 1e-2, 0.06, 1000.0)
    assert get_protocol("lorta-large", "mrpc").max_length == 128
    settings = sst2.train_settings(67_349)
    assert settings["max_steps"] == 60 * math.ceil(67_349 / 64)
    assert TrainConfig(**settings).head_lr == 4e-3  # every field is a TrainConfig field


def test_paper_flag_applies_the_protocol_per_task(glue, tmp_path):
    args = base_parser("t").parse_args(FAST + ["--data-dir", str(glue), "--tasks", "sst2,rte", "--paper", "lorta-base"])
    specs = {s.task: s for s in expand("unit", args, [Variant("lorta")])}
    for task, epochs in (("sst2", 60), ("rte", 160)):
        train = specs[task].train
        p = PROTOCOLS["lorta-base"][task]
        assert (train.lr, train.head_lr, train.batch_size) == (p.lr, p.head_lr, 64)
        assert train.max_steps == epochs * math.ceil(8 / 64)  # 8 training examples: one batch per epoch
    alone = base_parser("t").parse_args(FAST + ["--data-dir", str(glue), "--paper"])
    assert alone.paper == "study" and expand("unit", alone, [Variant("lora")])[0].train.head_lr is None


@pytest.mark.parametrize("argv, message", [
    (["--paper", "nosuch"], "unknown --paper protocol 'nosuch'"),
    (["--paper", "lorta-base", "--tasks", "mnli"], "has no settings for task 'mnli'"),
])
def test_bad_protocol_is_one_clear_error(glue, argv, message):
    args = base_parser("t").parse_args(FAST + ["--data-dir", str(glue), *argv])
    with pytest.raises(TenpeftError, match=message):
        expand("unit", args, [Variant("lora")])


def test_head_lr_gives_the_head_its_own_group():
    model = load_model(resolve_model("tiny-bert"), num_labels=2)
    tenpeft.inject(model, "lora", rank=2)
    optimizer, scheduler = make_optimizer(model, TrainConfig(lr=1e-3, head_lr=5e-2, max_steps=10, warmup_ratio=0))
    adapter, head = optimizer.param_groups
    assert adapter["lr"] == 1e-3 and head["lr"] == 5e-2
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in head["params"]} == set(model.tenpeft_state.head)
    assert all("lora" in names[id(p)] or "updates" in names[id(p)] for p in adapter["params"])
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(5e-2 * 0.9)  # the schedule scales both groups


def test_head_lr_on_a_model_without_a_head_is_refused_before_training(glue):
    spec = RunSpec("unit", "tiny-llama", "sst2", "lora", {}, train=TrainConfig(head_lr=1e-2, max_steps=2),
                   data=DataConfig(train_size=8, validation_size=8, test_size=8, data_dir=str(glue)))
    with pytest.raises(TenpeftError, match="trains no task head"):
        check_spec(spec)
    with pytest.raises(TenpeftError, match="head_lr must be a finite rate"):
        TrainConfig(head_lr=0.0)
