"""Instruction tuning in the lab (issue 13, item 1): instruction rows from a local file, one run through trl's
SFT as a lab record scored by the token-weighted held-out completion cross-entropy (lower is better), the
loss on the reply tokens only, and bad input refused before any compute with nothing written."""
from __future__ import annotations

import json
import math

import pytest

from tenpeft.lab import run as run_module
from tenpeft.lab.records import REQUIRED, SCHEMA
from helpers import load_study, study_flags

pytest.importorskip("trl")
FAST = study_flags("tiny-llama", eval_every=1, test=4, max_length=96) + ["--ranks", "1,2"]


def write_rows(path, n: int = 12, row=None):
    """A JSONL file of ``n`` made-up instruction rows (or ``row(i)``)."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(row(i) if row else {"instruction": f"name colour {i}", "input": "" if i % 2 else "sky",
                                                   "output": f"blue number {i}"}) + "\n")
    return path


def _argv(tmp_path, rows):
    return FAST + ["--tasks", f"local:{rows}", "--results-dir", str(tmp_path / "res"), "--figures-dir", str(tmp_path / "fig")]


def test_instruction_study_records_a_lower_is_better_score_and_resumes(tmp_path, monkeypatch):
    study = load_study("instruction_tuning")
    argv = _argv(tmp_path, write_rows(tmp_path / "rows.jsonl", n=16))
    records = study.main(argv)
    files = sorted((tmp_path / "res" / "instruction_tuning").glob("*.json"))
    assert len(files) == len(records) == 4  # lora and lorta at ranks 1 and 2
    for path in files:
        record = json.loads(path.read_text())
        assert record["schema"] == SCHEMA and all(k in record for k in REQUIRED)
        score = record["score"]
        assert score["metric"] == "completion_ce" and score["higher_is_better"] is False
        assert math.isfinite(score["value"]) and score["value"] > 0 and score["value"] == record["test"]["loss"]
        assert [e["step"] for e in record["history"]] == [1, 2]
        best, test = record["best"]["metrics"], record["test"]["metrics"]
        assert score["validation"] == best["completion_ce"] == min(e["val_loss"] for e in record["history"])
        assert best["perplexity"] == pytest.approx(math.exp(best["completion_ce"])) and best["eval_tokens"] > 0
        assert test["perplexity"] == pytest.approx(math.exp(test["completion_ce"])) and test["eval_tokens"] > 0
        assert record["sft"]["gradient_checkpointing"] is False
        assert record["sft"]["rows"] == {"train": 8, "validation": 4, "test": 4}
        splits = record["splits"][record["config"]["task"]]
        assert {split: entry["size"] for split, entry in splits.items()} == record["sft"]["rows"]
        assert splits["test"]["source"].endswith("(test rows carved by split seed 1234)")
    assert (tmp_path / "fig" / "instruction_tuning_tiny-llama.png").stat().st_size > 1000
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert sorted(r["run_id"] for r in study.main(argv)) == sorted(r["run_id"] for r in records)


def test_only_the_reply_tokens_are_labelled_and_scored(tmp_path):
    import torch

    from tenpeft.lab.models import resolve_model
    from tenpeft.lab.run import RunSpec, DataConfig
    from tenpeft.lab.loop import TrainConfig
    from tenpeft.lab.runners.sft import IGNORE, build_trainer, completion_ce
    from tenpeft.lab.runners.trl import adapted_policy, kind_rows, tokenizer_for
    from tenpeft.lab.tasks import task_kind

    spec = RunSpec("t", "tiny-llama", f"local:{write_rows(tmp_path / 'rows.jsonl')}", "lora", {"rank": 1},
                   train=TrainConfig(max_steps=1, batch_size=2, max_length=96), data=DataConfig(train_size=4, test_size=2))
    tokenizer = tokenizer_for(resolve_model(spec.model))
    splits, skipped = kind_rows(spec, task_kind(spec.task), tokenizer)
    train = splits.train
    assert (len(train), len(splits.test), skipped) == (4, 2, {"train": 0, "validation": 0, "test": 0})
    model, _ = adapted_policy(spec, resolve_model(spec.model))
    held = {"validation": splits.validation, "test": splits.test}
    trainer = build_trainer(spec, model, tokenizer, train, held, str(tmp_path / "out"), False)
    for raw, done in zip(train, trainer.train_dataset):
        prompt_ids, labels, ids = tokenizer(raw["prompt"])["input_ids"], done["labels"], done["input_ids"]
        prompt = next(i for i, (a, b) in enumerate(zip(prompt_ids + [None], ids)) if a != b)  # where they part
        assert prompt >= len(prompt_ids) - 1  # at most the prompt's own end token ([SEP]) is not in the sequence
        assert labels[:prompt] == [IGNORE] * prompt and labels[prompt:] == ids[prompt:] and len(ids) > prompt
    batch = next(iter(trainer.get_eval_dataloader("test")))
    ce, tokens = completion_ce(model, [batch])
    labels = batch["labels"][:, 1:]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    keep = labels != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])  # only the reply positions
    assert tokens == int(keep.sum()) < labels.numel() and ce == pytest.approx(expected.item(), rel=1e-5)


BAD = {
    "missing columns": (lambda i: {"question": "q", "answer": "a"}, "no column(s) ['instruction', 'output']"),
    "no reply": (lambda i: {"instruction": f"say {i}", "output": ""}, "has no reply (empty completion)"),
    "every prompt too long": (lambda i: {"instruction": "word " * 120 + str(i), "output": "ok"}, "every prompt fills --max-length 96"),
    "messages without a reply": (lambda i: {"messages": [{"role": "user", "content": "hi"}]},
                                 "does not end in an assistant turn"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_instruction_data_fails_before_any_compute(case, tmp_path, capsys, monkeypatch):
    make, message = BAD[case]
    study = load_study("instruction_tuning")
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite bad input"))
    argv = _argv(tmp_path, write_rows(tmp_path / "rows.jsonl", row=make))
    with pytest.raises(SystemExit) as exit_info:
        study.script(lambda: study.main(argv))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "res" / "instruction_tuning").exists()


def test_a_prompt_too_long_skips_that_row_only(tmp_path):
    from tenpeft.lab.models import resolve_model
    from tenpeft.lab.tasks.instruction import load_instruction, screen
    from tenpeft.lab.runners.trl import tokenizer_for

    rows = write_rows(tmp_path / "rows.jsonl", row=lambda i: {"instruction": "word " * (80 if i % 3 == 0 else 1) + str(i),
                                                               "output": "ok"})
    tokenizer = tokenizer_for(resolve_model("tiny-llama"))
    train = load_instruction(f"local:{rows}", None, tokenizer, test_size=1).train
    long = sum(len(tokenizer(p)["input_ids"]) >= 96 for p in train["prompt"])
    kept, skipped = screen(train, tokenizer, 96, "rows")
    assert long >= 2 and skipped == long and len(kept) == len(train) - long
    assert all(len(tokenizer(p)["input_ids"]) < 96 for p in kept["prompt"])


def test_hh_chosen_trains_the_last_assistant_reply_of_the_chosen_dialogue(tmp_path):
    from tenpeft import TenpeftError
    from tenpeft.lab.tasks.instruction import load_instruction

    task = tmp_path / "hh_harmless"
    task.mkdir()
    for split, places in (("train", ("Paris", "Rome", "Oslo")), ("test", ("Lima",))):
        dialogues = [f"\n\nHuman: hi\n\nAssistant: hello\n\nHuman: weather in {place}?\n\nAssistant: sunny today"
                     for place in places]
        (task / f"{split}.jsonl").write_text("".join(json.dumps({"chosen": d, "rejected": "x"}) + "\n" for d in dialogues))
    splits = load_instruction("hh_chosen", tmp_path, tokenizer=None, validation_size=1)
    rows = sorted([*splits.train, *splits.validation], key=lambda r: r["prompt"])
    assert rows[0] == {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: weather in Oslo?\n\nAssistant:",
                       "completion": " sunny today"}
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 1, 1)
    with pytest.raises(TenpeftError, match="pass --data-dir"):
        load_instruction("hh_chosen", None, tokenizer=None)


def test_a_lower_is_better_score_has_its_own_front_and_table():
    import pandas as pd

    from tenpeft.lab.plots import pareto_front

    points = pd.DataFrame({"trainable": [10, 20, 30], "score": [2.0, 1.5, 1.8]})
    assert list(pareto_front(points, higher_is_better=False)["trainable"]) == [10, 20]
    assert list(pareto_front(points)["trainable"]) == [10]
    records = [{"schema": SCHEMA, "run_id": f"r{rank}", "study": "s", "params": {"trainable": 10 * rank},
                "history": [], "best": None, "timings": {"total_s": 1.0}, "provenance": {},
                "config": {"model": "m", "task": "t", "method": "lora", "seed": 0, "method_args": {"rank": rank}},
                "score": {"metric": "completion_ce", "value": 1.23456, "higher_is_better": False}} for rank in (1, 2)]
    table = load_study("summarize").score_table(records, ["task", "method"])
    assert "test (lower is better; mean, 95% CI)" in table and "completion_ce 1.235 [1.235, 1.235]" in table and "123.5" not in table
