"""Preference optimisation in the lab (issue 13, item 2): preference data from a local folder, one run
through trl's DPO as a lab record, and studies/preference.py end to end on a tiny decoder, with resume
and bad input refused before any compute."""
from __future__ import annotations

import json

import pytest

from tenpeft import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab.records import REQUIRED, SCHEMA
from tenpeft.lab.tasks.preference import load_preference, split_dialogue
from helpers import load_study, study_flags

pytest.importorskip("trl")
FAST = study_flags("tiny-llama", eval_every=1, test=4, max_length=32) + ["--ranks", "1,2"]


def write_pairs(folder, rows: dict[str, int] | None = None, row=None):
    """``folder/hh_harmless/{train,test}.jsonl`` of made-up Human/Assistant pairs (or ``row(i)``), each text
    led by its split's name."""
    task = folder / "hh_harmless"
    task.mkdir(parents=True, exist_ok=True)
    for split, n in (rows or {"train": 12, "test": 6}).items():
        with open(task / f"{split}.jsonl", "w") as f:
            for i in range(n):
                ask = f"\n\nHuman: question {i} about the weather"
                pair = row(i) if row else {"chosen": f"{ask}\n\nAssistant: a kind helpful answer {i}",
                                           "rejected": f"{ask}\n\nAssistant: go away {i}"}
                pair = {key: f"[{split}] {text}" for key, text in pair.items()}  # the splits share no text
                f.write(json.dumps(pair) + "\n")
    return folder


def test_dialogues_split_at_the_last_assistant_turn():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant: sure thing"
    assert split_dialogue(text, "x") == ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant:", " sure thing")


def test_load_preference_gives_trl_columns_in_three_disjoint_splits(tmp_path):
    splits = load_preference("hh_harmless", write_pairs(tmp_path), train_size=5, validation_size=2)
    train, validation, test = splits.train, splits.validation, splits.test
    assert (len(train), len(validation), len(test)) == (5, 2, 6)
    assert sorted(train.column_names) == ["chosen", "prompt", "rejected"]
    assert not set(train["prompt"]) & set(validation["prompt"])  # validation is carved out of train
    assert splits.sources["validation"].endswith("(validation rows carved by split seed 1234)")
    row = test[0]
    assert row["prompt"].endswith("\n\nAssistant:") and row["chosen"] == " a kind helpful answer 0"


BAD_DATA = {
    "no file": (lambda d: write_pairs(d, {"train": 4}), "hh_harmless/test.jsonl"),
    "no column": (lambda d: write_pairs(d, row=lambda i: {"chosen": "\n\nAssistant: x"}), "no column\\(s\\) \\['rejected'\\]"),
    "no assistant turn": (lambda d: write_pairs(d, row=lambda i: {"chosen": "hi", "rejected": "ho"}),
                          "a dialogue without"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_preference_data_is_one_clear_error(case, tmp_path):
    make, message = BAD_DATA[case]
    make(tmp_path)
    with pytest.raises(TenpeftError, match=message):
        load_preference("hh_harmless", tmp_path)


def _study():
    return load_study("preference")


def test_preference_study_writes_records_and_a_figure_and_resumes(tmp_path, monkeypatch):
    argv = FAST + ["--data-dir", str(write_pairs(tmp_path / "data")), "--results-dir", str(tmp_path / "res"),
                   "--figures-dir", str(tmp_path / "fig")]
    records = _study().main(argv)
    files = sorted((tmp_path / "res" / "preference").glob("*.json"))
    assert len(files) == len(records) == 4  # lora and lorta at ranks 1 and 2
    for path in files:
        record = json.loads(path.read_text())
        assert record["schema"] == SCHEMA and all(k in record for k in REQUIRED)
        score, test = record["score"], record["test"]
        assert score["metric"] == "reward_accuracy" and 0 <= score["value"] <= 1
        assert score["value"] == test["metrics"]["reward_accuracy"] and test["loss"] == test["metrics"]["dpo_loss"] > 0
        assert score["validation"] == record["best"]["metrics"]["reward_accuracy"]  # at the chosen checkpoint
        assert [e["step"] for e in record["history"]] == [1, 2]
        assert record["best"]["val_loss"] == min(e["val_loss"] for e in record["history"]) > 0
        assert record["dpo"]["reference"] == "precomputed with the adapter disabled"
        assert record["dpo"]["rows"] == {"train": 8, "validation": 4, "test": 4}
        assert record["dpo"]["skipped_rows"] == {"train": 0, "validation": 0, "test": 0}
        assert {split: entry["size"] for split, entry in record["splits"]["hh_harmless"].items()} == record["dpo"]["rows"]
        assert all(len(entry["fingerprint"]) == 16 for entry in record["splits"]["hh_harmless"].values())
        assert 0 < record["timings"]["eval_s"] < record["timings"]["total_s"]
        assert 0 < record["timings"]["test_s"] < record["timings"]["total_s"]
    by_rank = {(r["config"]["method"], r["config"]["axes"]["rank"]): r["params"]["trainable"] for r in records}
    assert by_rank[("lora", 1)] < by_rank[("lora", 2)] and by_rank[("lorta", 1)] < by_rank[("lorta", 2)]
    for suffix in ("png", "pdf"):
        assert (tmp_path / "fig" / f"preference_tiny-llama.{suffix}").stat().st_size > 1000
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert sorted(r["run_id"] for r in _study().main(argv)) == sorted(r["run_id"] for r in records)


BAD_RUNS = {
    "an encoder": (["--model", "tiny-bert"], "preference optimisation trains a causal LM; tiny-bert is an encoder"),
    "missing data": (["--data-dir", "{tmp}/nowhere"], "nowhere/hh_harmless/train.jsonl"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_runs_fail_before_any_compute(case, tmp_path, capsys, monkeypatch):
    extra, message = BAD_RUNS[case]
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite bad input"))
    argv = FAST + ["--data-dir", str(write_pairs(tmp_path / "data")), "--results-dir", str(tmp_path / "res"),
                   "--figures-dir", str(tmp_path / "fig")] + [e.format(tmp=tmp_path) for e in extra]
    with pytest.raises(SystemExit) as exit_info:
        _study().script(lambda: _study().main(argv))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "res" / "preference").exists()


def _spec(data, max_length: int = 32):
    from tenpeft.lab.loop import TrainConfig
    from tenpeft.lab.run import DataConfig, RunSpec

    return RunSpec(study="preference", model="tiny-llama", task="hh_harmless", method="lora",
                   train=TrainConfig(max_steps=1, batch_size=2, max_length=max_length),
                   data=DataConfig(data_dir=str(data), train_size=None, validation_size=4, test_size=None))


def _long_every_third(i: int) -> dict:
    ask = "\n\nHuman: " + ("a very long question " * 20 if i % 3 == 0 else f"short {i}")
    return {"chosen": f"{ask}\n\nAssistant: yes", "rejected": f"{ask}\n\nAssistant: no"}


def test_pairs_whose_prompt_fills_max_length_are_skipped_and_counted(tmp_path):
    from tenpeft.lab.runners.trl import kind_rows, tokenizer_for
    from tenpeft.lab.tasks import task_kind

    write_pairs(tmp_path, row=_long_every_third)
    tokenizer = tokenizer_for(run_module.resolve_model("tiny-llama"))
    splits, skipped = kind_rows(_spec(tmp_path), task_kind("hh_harmless"), tokenizer)
    train, validation, test = splits.train, splits.validation, splits.test
    # validation: train rows 0, 9, 11, 5 (the split seed's draw). The long rows 0, 3, 6, 9 are one text, so 3 and 6
    # leave train with the validation copies (no validation text is trained on) and 0, 9 are skipped there
    assert skipped == {"train": 0, "validation": 2, "test": 2} and (len(train), len(validation), len(test)) == (6, 2, 4)
    assert all(len(tokenizer(r["prompt"])["input_ids"]) < 32 for r in (*train, *validation, *test))


@pytest.mark.parametrize("row, message", [
    (lambda i: {"chosen": f"\n\nHuman: {i} " + "word " * 60 + "\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: b"},
     "every prompt fills --max-length 32"),
    (lambda i: {"chosen": f"\n\nHuman: hi {i}\n\nAssistant: fine", "rejected": f"\n\nHuman: hi {i}\n\nAssistant: "},
     "row 0 has no reply \\(empty rejected\\)")])
def test_pairs_that_leave_nothing_to_score_are_refused_before_training(tmp_path, row, message):
    from tenpeft.lab.run import check_spec

    write_pairs(tmp_path, row=row)
    with pytest.raises(TenpeftError, match=message):
        check_spec(_spec(tmp_path))


# the LoRTA paper's DPO data, argilla/distilabel-intel-orca-dpo-pairs: one train split, filtered as its card says
def _orca_row(i: int) -> dict:
    return {"system": "" if i % 2 else "You are helpful.", "input": f"What is {i} + 1?", "chosen": f"{i + 1}.",
            "rejected": "No idea.", "status": "tie" if i % 5 == 4 else "swapped", "chosen_score": 7.0 if i % 7 == 6 else 9.0,
            "in_gsm8k_train": i % 11 == 10, "generations": ["a", "b"]}


ORCA_KEPT = [i for i in range(24) if i % 5 != 4 and i % 7 != 6 and i % 11 != 10]  # 15 rows


def write_orca(folder, n: int = 24, row=_orca_row):
    (folder / "orca_dpo").mkdir(parents=True, exist_ok=True)
    (folder / "orca_dpo" / "train.jsonl").write_text("".join(json.dumps(row(i)) + "\n" for i in range(n)))
    return folder


def test_orca_pairs_are_filtered_carved_and_written_in_hh_markers(tmp_path):
    splits = load_preference("orca_dpo", write_orca(tmp_path), validation_size=2, test_size=4)
    parts = (splits.train, splits.validation, splits.test)
    prompts = [p for part in parts for p in part["prompt"]]
    assert tuple(map(len, parts)) == (9, 2, 4) and len(set(prompts)) == 15
    assert sorted(int(p.split("What is ")[1].split(" ")[0]) for p in prompts) == ORCA_KEPT
    by_prompt = {r["prompt"]: r for part in parts for r in part}
    assert by_prompt["\n\nHuman: You are helpful.\n\nWhat is 0 + 1?\n\nAssistant:"]["chosen"] == " 1."
    assert by_prompt["\n\nHuman: What is 1 + 1?\n\nAssistant:"]["rejected"] == " No idea."


def test_orca_from_the_hub_reads_its_one_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, data_dir=None):
        calls.append((name, data_dir))
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([_orca_row(i) for i in range(24)])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_preference("orca_dpo", None, train_size=5, validation_size=2, test_size=3)
    assert calls == [("argilla/distilabel-intel-orca-dpo-pairs", None)]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (5, 2, 3)


@pytest.mark.parametrize("row, message", [
    (lambda i: {**_orca_row(i), "status": "tie"}, "none of its 24 pairs passes orca_dpo's filter"),
    (lambda i: {k: v for k, v in _orca_row(i).items() if k != "chosen_score"}, r"no column\(s\) \['chosen_score'\]")])
def test_bad_orca_data_is_one_clear_error(tmp_path, row, message):
    with pytest.raises(TenpeftError, match=message):
        load_preference("orca_dpo", write_orca(tmp_path, row=row))


def test_a_dpo_run_on_orca_records_its_carved_test_split(tmp_path):
    argv = [*FAST, "--ranks", "1", "--methods", "lora", "--tasks", "orca_dpo", "--data-dir", str(write_orca(tmp_path)),
            "--results-dir", str(tmp_path / "res"), "--figures-dir", str(tmp_path / "fig")]
    (record,) = _study().main(argv)
    splits = record["splits"]["orca_dpo"]
    assert record["status"] == "ok" and splits["test"]["source"].endswith("(test rows carved by split seed 1234)")
    assert splits["validation"]["source"].endswith("(validation rows carved by split seed 1234)")
    assert "selection" not in splits  # the checkpoint is chosen on validation, as in every kind


@pytest.mark.parametrize("extra, task", [([], "orca_dpo"), (["--tasks", "hh_harmless"], "hh_harmless")])
def test_paper_trains_on_the_papers_data_unless_tasks_says_otherwise(monkeypatch, extra, task):
    study, seen = _study(), []
    monkeypatch.setattr(study, "run_all", lambda specs, args: seen.extend(specs) or [])
    monkeypatch.setattr(study, "conclude", lambda *a, **k: [])
    study.main(["--paper", *extra])
    assert seen and {s.task for s in seen} == {task} and {s.train.max_steps for s in seen} == {1000}
