"""SQuAD and DROP as generation tasks (issue 13 item 3): MeZO's prompts, SQuAD's exact match and F1,
greedy answers, bad rows refused, and the instruction-tuning study end to end on tiny-llama scored by F1."""
from __future__ import annotations

import json

import pytest
import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.models import load_model, resolve_model
from tenpeft.lab.tasks.generation import (GENERATION_TASKS, generate_answers, load_generation, normalize_answer,
                                          qa_metrics, qa_scores)
from tenpeft.lab.runners.trl import tokenizer_for
from helpers import load_study, study_flags

SQUAD = {"title": "Broncos", "context": "The Denver Broncos won Super Bowl 50.", "question": " Who won? ",
         "answers": {"text": ["Denver Broncos", "the Broncos"], "answer_start": [0, 4]}}
DROP = {"passage": "Ann scored 3 goals and Bo 2.", "question": "How many goals in all?",
        "answers_spans": {"spans": ["5"], "types": ["number"]}}


def write_folder(root, task: str, row: dict, n: int = 8):
    """``root/task/{train,validation}.jsonl`` of ``n`` rows each: ``row`` first in validation, the others
    with their split and number after the question (the splits must not share a text)."""
    (root / task).mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = [row if split == "validation" and i == 0 else {**row, "question": f"{row.get('question')} ({split} {i})"}
                for i in range(n)]
        (root / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_prompts_and_completions_are_mezos(tmp_path):
    # MeZO large_models/templates.py SQuADv2Template / DROPTemplate: encode() and verbalize() minus encode()
    squad = load_generation("squad", write_folder(tmp_path, "squad", SQUAD)).test
    assert squad[0]["prompt"] == ("Title: Broncos\nContext: The Denver Broncos won Super Bowl 50.\nQuestion: Who won?\n"
                                  "Answer:")
    assert squad[0]["completion"] == " Denver Broncos\n" and squad[0]["answers"] == ["Denver Broncos", "the Broncos"]
    drop = load_generation("drop", write_folder(tmp_path, "drop", DROP)).test
    assert drop[0]["prompt"] == "Passage: Ann scored 3 goals and Bo 2.\nQuestion: How many goals in all?\nAnswer:"
    assert drop[0]["completion"] == " 5\n" and GENERATION_TASKS["drop"].eval_split == "validation"


@pytest.mark.parametrize("prediction, answers, expected", [
    ("the Denver Broncos!", ["Denver Broncos"], (1.0, 1.0)),
    ("Broncos won", ["Denver Broncos"], (0.0, 0.5)),  # 1 common token of 2 predicted and 2 gold
    ("Broncos", ["Denver Broncos", "the Broncos"], (1.0, 1.0)),  # the best gold answer counts
    ("Carolina", ["Denver Broncos"], (0.0, 0.0)),
])
def test_exact_match_and_f1_are_squads(prediction, answers, expected):
    assert qa_scores(prediction, answers) == pytest.approx(expected)


def test_normalization_and_an_empty_generation():
    assert normalize_answer("  The Cat,  sat an hour! ") == "cat sat hour"
    assert qa_metrics(["", "Broncos"], [["x"], ["Denver Broncos"]]) == {"em": 0.0, "f1": pytest.approx(1 / 3),
                                                                       "empty_generations": 1}


@pytest.mark.parametrize("row, message", [({"title": "t", "context": "c", "question": "q"}, "no column\\(s\\) \\['answers'\\]"),
                                          ({**SQUAD, "answers": {"text": [" "], "answer_start": [0]}},
                                           "row 0 has no gold answer")])
def test_bad_rows_are_one_clear_error(tmp_path, row, message):
    with pytest.raises(TenpeftError, match=message):
        load_generation("squad", write_folder(tmp_path, "squad", row))


def test_answers_are_greedy_and_bounded():
    tokenizer = tokenizer_for(resolve_model("tiny-llama"))  # as the SFT run has it: an EOS and a pad token
    model = load_model(resolve_model("tiny-llama"), 2, seed=0).eval()
    prompt = "Question: what colour is the sky?\nAnswer:"
    (answer,) = generate_answers(model, tokenizer, [prompt], max_length=64)
    ids = tokenizer(prompt)["input_ids"][:-1]  # tiny-llama's BERT tokenizer: [CLS] text, its [SEP] left off
    with torch.no_grad():
        for _ in range(min(50, 64 - len(ids))):  # the greedy loop by hand (no newline token in this vocabulary)
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            ids.append(nxt)
    n_prompt = len(tokenizer(prompt)["input_ids"]) - 1
    assert answer == tokenizer.decode(ids[n_prompt:], skip_special_tokens=True).strip().split("\n")[0].strip()
    assert generate_answers(model, tokenizer, [prompt], max_length=n_prompt) == [""]  # no room: an empty answer


def test_the_instruction_study_trains_squad_and_scores_f1(tmp_path):
    argv = [*study_flags("tiny-llama", eval_every=1, test=3, max_length=96), "--ranks", "1",
            "--methods", "lora", "--tasks", "squad", "--data-dir", str(write_folder(tmp_path / "data", "squad", SQUAD)),
            "--results-dir", str(tmp_path / "res"), "--figures-dir", str(tmp_path / "fig")]
    (record,) = load_study("instruction_tuning").main(argv)
    assert record["status"] == "ok" and record["score"]["metric"] == "f1" and record["score"]["higher_is_better"]
    assert record["splits"]["squad"]["test"]["source"].endswith("squad/validation.jsonl") and record["sft"]["generation"]
    assert record["splits"]["squad"]["validation"]["source"].endswith("(validation rows carved by split seed 1234)")
    for entry in record["history"]:
        metrics = entry["metrics"]
        assert 0 <= metrics["em"] <= metrics["f1"] <= 1 and 0 <= metrics["empty_generations"] <= 3
        assert metrics["completion_ce"] > 0
    assert record["score"]["validation"] == record["best"]["metrics"]["f1"]
    test = record["test"]["metrics"]
    assert record["score"]["value"] == test["f1"] and 0 <= test["em"] <= test["f1"] <= 1 and test["completion_ce"] > 0
    assert (tmp_path / "fig" / "instruction_tuning_tiny-llama.png").stat().st_size > 1000
