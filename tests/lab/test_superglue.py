"""SuperGLUE's fixed-answer tasks as decoder prompt tasks (issue 13 item 3): specs, MeZO's prompts,
loading from a local folder laid out like GLUE's, label words, and a study end to end on tiny-llama."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tenpeft.errors import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab.models import load_tokenizer, resolve_model
from tenpeft.lab.tasks import (PROMPTS, SUPERGLUE_TASKS, encode_classification, encode_prompt, get_task,
                               label_word_ids, load_task_data)
from helpers import load_study, study_flags

ROW = {"boolq": {"passage": "Cats sleep a lot.", "question": "do cats sleep"},
       "cb": {"premise": "It rained.", "hypothesis": "The ground is wet"},
       "wic": {"word": "bank", "sentence1": "The river bank.", "sentence2": "The bank lent money."},
       "wsc": {"text": "Mark told Pete he was late.", "span1_text": "Mark", "span2_text": "He"},
       "multirc": {"paragraph": "Ann has two cats.", "question": "How many cats?", "answer": "two"}}

# MeZO large_models/templates.py, encode() of each task's template on ROW, written out by hand
MEZO = {"boolq": "Cats sleep a lot. Do cats sleep?\n",
        "cb": 'Suppose It rained. Can we infer that "The ground is wet"? Yes, No, or Maybe?\n',
        "wic": 'Does the word "bank" have the same meaning in these two sentences? Yes, No?\nThe river bank.\n'
               "The bank lent money.\n",
        "wsc": 'Mark told Pete he was late.\nIn the previous sentence, does the pronoun "he" refer to Mark? '
               "Yes or No?\n",
        "multirc": 'Ann has two cats.\nQuestion: How many cats?\nI found this answer "two". Is that correct? '
                   "Yes or No?\n"}
VERBALIZERS = {"boolq": ("No", "Yes"), "cb": ("Yes", "No", "Maybe"), "wic": ("No", "Yes"), "wsc": ("No", "Yes"),
               "multirc": ("No", "Yes")}


pytestmark = pytest.mark.usefixtures("isolated_data")


def write_folder(root: Path, task: str, n: int = 8, test_split: bool = True) -> Path:
    """``root/<task>/{train,validation,test}.jsonl`` of ``ROW`` with cycling labels (test unlabelled, -1), each
    split's texts numbered apart (the lab refuses splits that share a text)."""
    spec = get_task(task)
    (root / task).mkdir(parents=True, exist_ok=True)
    for number, split in enumerate(("train", "validation", *(["test"] if test_split else []))):
        rows = [{**{c: f"{v} {100 * number + i}" for c, v in ROW[task].items()}, "idx": i,
                 "label": -1 if split == "test" else i % spec.num_labels} for i in range(n)]
        (root / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("task", sorted(ROW))
def test_each_prompt_is_mezos_with_its_verbalizer(task):
    spec, template = get_task(task), PROMPTS[task]
    assert spec is SUPERGLUE_TASKS[task] and set(template.columns) == set(spec.text_columns)
    assert template.format(ROW[task]) == MEZO[task]
    assert template.label_words == VERBALIZERS[task] and len(template.label_words) == spec.num_labels
    assert spec.eval_splits == ("validation",) and spec.hub_source[0] == "aps/super_glue"
    assert spec.hub_source[1] == ("wsc.fixed" if task == "wsc" else task)


def test_boolq_keeps_a_question_mark_it_already_has():
    assert PROMPTS["boolq"].format({"passage": "P.", "question": "is it?"}) == "P. Is it?\n"


def test_glue_keeps_its_hub_source():
    assert get_task("sst2").hub_source == ("glue", "sst2") and get_task("rte").encoder_ready


@pytest.mark.parametrize("task", sorted(ROW))
def test_a_local_folder_loads_and_the_unlabelled_test_split_is_not_evaluated(task, tmp_path):
    data = load_task_data(task, write_folder(tmp_path, task), validation_size=2, test_size=4)
    assert Path(data.test_split).name == "validation.jsonl" and data.splits["test"]["size"] == len(data.test) == 4
    assert (len(data.train), len(data.validation)) == (6, 2) and data.splits["train"]["size"] == 6
    assert set(data.train.column_names) >= {*get_task(task).text_columns, "label"}


@pytest.mark.parametrize("task", sorted(ROW))
def test_label_words_are_distinct_first_tokens_with_the_llama_tokenizer(task, tmp_path):
    tokenizer = load_tokenizer(resolve_model("tiny-llama"))
    ids = label_word_ids(task, tokenizer)
    assert len(set(ids)) == len(ids) == get_task(task).num_labels
    data = load_task_data(task, write_folder(tmp_path, task))
    encoded = encode_prompt(task, tokenizer, data.train, max_length=64)
    assert encoded["labels"] == data.train["label"]


def test_an_encoder_cannot_read_three_text_columns(tmp_path):
    data = load_task_data("wsc", write_folder(tmp_path, "wsc"))
    with pytest.raises(TenpeftError, match="prompt task for decoders"):
        encode_classification("wsc", None, data.train)


FAST = study_flags(None, test=6, max_length=64)


def _study(tmp_path, task: str, model: str):
    argv = ["--model", model, *FAST, "--tasks", task, "--methods", "lora", "--ranks", "1",
            "--data-dir", str(write_folder(tmp_path / "data", task)), "--results-dir", str(tmp_path / "res"),
            "--figures-dir", str(tmp_path / "fig")]
    return load_study("rank_ablation").main(argv)


def test_a_decoder_study_runs_cb_end_to_end(tmp_path):
    (record,) = _study(tmp_path, "cb", "tiny-llama")
    assert record["status"] == "ok" and record["score"]["metric"] == "accuracy"
    assert Path(record["splits"]["cb"]["test"]["source"]).name == "validation.jsonl"
    assert record["run_id"].startswith("cb-tiny-llama-lora")


def test_an_encoder_study_of_a_three_column_task_is_refused_before_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained an encoder on wsc"))
    with pytest.raises((TenpeftError, SystemExit)) as err:
        _study(tmp_path, "wsc", "tiny-bert")
    text = str(err.value) if err.type is TenpeftError else capsys.readouterr().err
    assert "prompt task for decoders" in text and not list(tmp_path.glob("res/**/*.json"))


# COPA: multiple choice by candidate likelihood (tenpeft.lab.tasks.choices, tenpeft.lab.models.ChoiceScorer)
COPA = {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
        "choice2": "I cut the grass.", "question": "cause", "label": 0}


def write_copa(root: Path, n: int = 8) -> Path:
    (root / "copa").mkdir(parents=True, exist_ok=True)
    for number, split in enumerate(("train", "validation", "test")):
        rows = [{**COPA, "premise": f"Day {100 * number + i}: my body cast a shadow.", "question": ("cause", "effect")[i % 2],
                 "idx": i, "label": -1 if split == "test" else i % 2} for i in range(n)]
        (root / "copa" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_copa_candidates_are_mezos():
    from tenpeft.lab.tasks.choices import get_choices

    prompt = get_choices("copa")
    # MeZO CopaTemplate (capitalization "correct"): encode() and verbalize() of each choice, by hand
    assert prompt.context(COPA) == "My body cast a shadow over the grass because "
    assert prompt.verbalize(COPA) == ["My body cast a shadow over the grass because the sun was rising.",
                                      "My body cast a shadow over the grass because I cut the grass."]
    assert prompt.context({**COPA, "question": "effect"}).endswith("grass so ")
    assert get_task("copa").hub_source == ("aps/super_glue", "copa") and not get_task("copa").encoder_ready


def test_copa_encodes_each_candidate_with_its_option_length(tmp_path):
    from tenpeft.lab.tasks.choices import encode_choices

    tokenizer = load_tokenizer(resolve_model("tiny-llama"))
    data = load_task_data("copa", write_copa(tmp_path))
    encoded = encode_choices("copa", tokenizer, data.train, max_length=64)
    row = encoded[1]  # question "effect"; choice2 starts with "I", which keeps its capital
    texts = ["Day 1: my body cast a shadow so the sun was rising.", "Day 1: my body cast a shadow so I cut the grass."]
    context = tokenizer("Day 1: my body cast a shadow so", add_special_tokens=False)["input_ids"]
    for ids, n, text in zip(row["input_ids"], row["option_lens"], texts):
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids[-len(full):] == full and n == len(full) - len(context) > 0
    assert encoded["labels"] == data.train["label"]


def test_a_candidate_that_does_not_fit_is_refused_with_its_row(tmp_path):
    from tenpeft.lab.tasks.choices import encode_choices

    data = load_task_data("copa", write_copa(tmp_path))
    with pytest.raises(TenpeftError, match=r"example 0: candidate 0 .* raise --max-length"):
        encode_choices("copa", load_tokenizer(resolve_model("tiny-llama")), data.train, max_length=3)


def test_the_choice_scorer_is_the_mean_log_likelihood_of_each_option():
    import torch

    from tenpeft.lab.models import ChoiceScorer, load_model
    from tenpeft.lab.tasks.choices import ChoiceCollator

    lm = load_model(resolve_model("tiny-llama"), 2, seed=0).eval()
    rows = [{"input_ids": [[1, 5, 6, 7, 8], [1, 5, 6, 9]], "option_lens": [2, 1], "labels": 0},
            {"input_ids": [[1, 11, 12]], "option_lens": [1], "labels": 0}]  # the second has one candidate
    batch = ChoiceCollator(0)(rows)
    with torch.no_grad():
        scores = ChoiceScorer(lm)(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for i, row in enumerate(rows):
            for k, (ids, n) in enumerate(zip(row["input_ids"], row["option_lens"])):
                lp = lm(torch.tensor([ids])).logits[0].log_softmax(-1)
                expected = torch.stack([lp[p - 1, ids[p]] for p in range(len(ids) - n, len(ids))]).mean()
                torch.testing.assert_close(scores[i, k], expected, atol=1e-5, rtol=1e-5)
    assert scores.shape == (2, 2) and scores[1, 1] == ChoiceScorer.MISSING


def test_a_decoder_study_runs_copa_end_to_end(tmp_path):
    argv = ["--model", "tiny-llama", *FAST, "--tasks", "copa", "--methods", "lorta", "--ranks", "2",
            "--data-dir", str(write_copa(tmp_path / "data")), "--results-dir", str(tmp_path / "res"),
            "--figures-dir", str(tmp_path / "fig")]
    (record,) = load_study("rank_ablation").main(argv)
    assert record["status"] == "ok" and record["score"]["metric"] == "accuracy"
    assert Path(record["splits"]["copa"]["test"]["source"]).name == "validation.jsonl"
    assert 0.0 <= record["score"]["value"] <= 1.0
    assert record["history"][0]["train_loss"] > 0 and record["history"][0]["val_loss"] > 0


@pytest.mark.parametrize("model, task, message", [("tiny-bert", "copa", "prompt task for decoders"),
                                                   ("tiny-llama", "copa>cb", "mixes classification and multiple_choice tasks")])
def test_an_encoder_copa_and_a_mixed_decoder_chain_are_refused(tmp_path, model, task, message):
    write_folder(write_copa(tmp_path), "cb")
    spec = run_module.RunSpec(study="t", model=model, task=task, method="lora",
                              data=run_module.DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(TenpeftError, match=message):
        run_module.check_spec(spec)
