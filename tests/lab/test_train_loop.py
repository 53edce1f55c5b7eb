"""The training loop and one run: determinism, best-checkpoint restore, every kind of method and
model (encoder classifier, decoder prompt classifier, regression), the record's schema."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tenpeft.lab.loop import TrainConfig
from tenpeft.lab.models import PromptClassifier, load_model, resolve_model
from tenpeft.lab.records import REQUIRED, SCHEMA
from tenpeft.lab.run import DataConfig, RunSpec, execute

TINY = dict(max_steps=4, batch_size=4, eval_batch_size=8, eval_every=2, max_length=16)


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator()


def spec(glue, method="lora", model="tiny-bert", task="sst2", args=None, **train) -> RunSpec:
    return RunSpec("unit", model, task, method, args or {}, seed=0, train=TrainConfig(**{**TINY, **train}),
                   data=DataConfig(train_size=16, validation_size=8, test_size=8, data_dir=str(glue)))


def test_record_has_the_schema_and_best_is_the_lowest_validation_loss(glue, accelerator):
    record = execute(spec(glue), accelerator, progress=False)
    assert record["schema"] == SCHEMA and all(k in record for k in REQUIRED)
    assert [h["step"] for h in record["history"]] == [2, 4]
    assert record["best"]["val_loss"] == min(h["val_loss"] for h in record["history"])
    # chosen on validation, reported on test: the two scores of one checkpoint, from disjoint splits
    score, test = record["score"], record["test"]
    assert score == {"metric": "accuracy", "value": test["metrics"]["accuracy"],
                     "validation": record["best"]["metrics"]["accuracy"]}
    splits = record["splits"]["sst2"]
    assert [splits[s]["size"] for s in ("train", "validation", "test")] == [16, 8, 8]
    assert len({splits[s]["fingerprint"] for s in splits}) == 3
    pred, gold = record["predictions"]["pred"], record["predictions"]["gold"]
    assert len(pred) == len(gold) == 8 and sum(p == g for p, g in zip(pred, gold)) / 8 == score["value"]
    assert record["params"]["trainable"] == sum(record["params"]["components"].values()) > 0
    prov = record["provenance"]
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["device"] == "cpu" and prov["num_processes"] == 1 and "commit" in prov


def test_a_seeded_cpu_run_repeats_bit_for_bit(glue, accelerator):
    first = execute(spec(glue, "lorta", args={"rank": 2}), accelerator, progress=False)
    second = execute(spec(glue, "lorta", args={"rank": 2}), accelerator, progress=False)
    assert first["history"] == second["history"]
    other = execute(RunSpec("unit", "tiny-bert", "sst2", "lorta", {"rank": 2}, seed=1, train=TrainConfig(**TINY),
                            data=DataConfig(16, 8, 8, str(glue))), accelerator, progress=False)
    assert other["history"] != first["history"]


def test_best_checkpoint_is_restored(glue, accelerator, monkeypatch):
    """The loop evaluates once more after training; the restored model scores the best entry."""
    from tenpeft.lab import loop
    from tenpeft.lab.runners import supervised

    seen = {}
    real_train = loop.train

    def spy(model, task, train_set, eval_set, collate, cfg, **kw):
        result = real_train(model, task, train_set, eval_set, collate, cfg, **kw)
        loader = loop.eval_loader(eval_set, collate, cfg)
        seen["after"] = loop.evaluate(model, loader, task, kw["accelerator"], progress=False)[0]
        seen["best"] = result.best["val_loss"]
        return result

    monkeypatch.setattr(supervised, "train", spy)
    execute(spec(glue, lr=0.05, max_steps=6), accelerator, progress=False)
    assert seen["after"] == pytest.approx(seen["best"], abs=1e-6)


@pytest.mark.parametrize("method,args", [("full", {}), ("bitfit", {}), ("loretta_adp", {"bottleneck": 4}),
                                         ("peft_lora", {"r": 2}), ("peft_ia3", {}), ("peft_prompt", {}),
                                         ("peft:loha", {"r": 2}), ("peft:lokr", {"r": 2}), ("peft:vera", {"r": 4})])
def test_every_kind_of_method_trains_through_the_same_loop(glue, accelerator, method, args):
    record = execute(spec(glue, method, args=args), accelerator, progress=False)
    assert record["params"]["trainable"] > 0 and len(record["history"]) == 2


def _bert_takes_past_key_values() -> bool:
    import inspect

    from transformers import BertModel

    return "past_key_values" in inspect.signature(BertModel.forward).parameters


def test_prefix_tuning_trains_or_is_refused_before_training(glue, accelerator):
    """PEFT prefix tuning needs ``past_key_values`` in the encoder's forward (gone from BertModel in
    recent transformers): then it trains; else one clear error, raised by the check before any run."""
    run = spec(glue, "peft_prefix", args={"num_virtual_tokens": 4})
    if _bert_takes_past_key_values():
        record = execute(run, accelerator, progress=False)
        assert record["params"]["trainable"] > 0 and len(record["history"]) == 2
        return
    from tenpeft import TenpeftError
    from tenpeft.lab.run import check_spec

    with pytest.raises(TenpeftError, match="peft_prefix needs a model whose forward takes past_key_values"):
        check_spec(run)


def test_regression_task_reports_spearman(glue, accelerator):
    record = execute(spec(glue, task="stsb"), accelerator, progress=False)
    assert record["score"]["metric"] == "spearman"
    assert set(record["best"]["metrics"]) == {"spearman", "pearson"}


@pytest.mark.parametrize("method", ["lorta", "peft_lora"])
def test_decoder_prompt_classification(glue, accelerator, method):
    record = execute(spec(glue, method, model="tiny-llama", task="rte"), accelerator, progress=False)
    assert record["params"]["components"].get("head", 0) == 0  # an LM has no task head to train
    assert 0 <= record["score"]["value"] <= 1


def test_prompt_classifier_scores_label_words_as_the_lm_does():
    lm = load_model(resolve_model("tiny-llama"), num_labels=2).eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = [2000, 3000]
    scores = PromptClassifier(lm, labels)(ids, mask).logits
    full = lm(input_ids=ids, attention_mask=mask).logits
    expected = torch.stack([full[0, 3, labels], full[1, 2, labels]])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_sequential_tasks_score_every_task_after_every_stage(glue, accelerator):
    record = execute(spec(glue, task="sst2>mrpc>rte"), accelerator, progress=False)
    assert [s["task"] for s in record["stages"]] == ["sst2", "mrpc", "rte"]
    assert all(set(s["scores"]) == {"sst2", "mrpc", "rte"} for s in record["stages"])
    tests = {task: Path(splits["test"]["source"]).name for task, splits in record["splits"].items()}
    assert tests == {"sst2": "validation.jsonl", "mrpc": "test.jsonl", "rte": "validation.jsonl"}
    assert record["stages"][-1]["scores"]["rte"] == record["score"]["value"]  # the chain's scores are on test
    assert record["config"]["chain_heads"] == "per_task"


def test_task_heads_give_each_task_of_a_chain_its_own_head():
    import tenpeft
    from tenpeft.lab.runners.supervised import TaskHeads

    model = tenpeft.inject(load_model(resolve_model("tiny-bert"), num_labels=2), "lora", rank=2)
    heads = TaskHeads(model)
    assert sorted(heads.params) == ["classifier.bias", "classifier.weight"]
    weight = model.classifier.weight
    initial = weight.detach().clone()
    heads.start("sst2")
    with torch.no_grad():
        weight.add_(1.0)
    heads.finish("sst2")
    heads.start("mrpc")
    assert torch.equal(weight, initial)
    heads.use("sst2")
    assert torch.equal(weight, initial + 1.0)
    heads.use("rte")  # never trained: the initial head
    assert torch.equal(weight, initial)


def test_a_gguf_tokenizer_is_read_once_per_process_and_each_caller_gets_its_own_copy(monkeypatch):
    """Reading SmolLM2's tokenizer from its GGUF file takes 10-14 s; a study reads it in every run's checks
    and again in the run, so it is read once, and a caller that changes its copy changes no other."""
    import transformers

    from tenpeft.lab import models

    reads = []

    class Stub:
        pad_token, eos_token = None, "</s>"

    def from_pretrained(path, gguf_file=None):
        reads.append((path, gguf_file))
        return Stub()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    models._gguf_tokenizer.cache_clear()
    source = models.ModelSource("stub", "/models/stub", gguf_file="stub.gguf")
    first, second = models.load_tokenizer(source), models.load_tokenizer(source)
    first.pad_token = "changed"
    assert reads == [("/models/stub", "stub.gguf")]
    assert second.pad_token == "</s>" and models.load_tokenizer(source).pad_token == "</s>"
    models.load_tokenizer(models.ModelSource("plain", "/models/plain"))
    models.load_tokenizer(models.ModelSource("plain", "/models/plain"))
    assert reads[1:] == [("/models/plain", None)] * 2  # a directory is read every time (it may change)
    models._gguf_tokenizer.cache_clear()
