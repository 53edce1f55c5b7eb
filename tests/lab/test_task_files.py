"""Your own task from a file (issue 13, item 4): a JSON or TOML task file names its data files, columns,
kind and metrics, and every study takes it as ``--tasks FILE`` with no Python; its definition is part of
each run's identity, and a bad task file is refused before any compute with nothing written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tenpeft.errors import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab.run import RunSpec, check_spec
from tenpeft.lab.tasks import compute_metrics, get_prompt, get_task, load_task_data
from tenpeft.lab.tasks.custom import record_task_label, task_ref
from helpers import load_study, study_flags

FAST = study_flags(None, test=6, max_length=32)
WORDS = "good bad great awful film plot fine dull".split()


pytestmark = pytest.mark.usefixtures("isolated_data")


def write_reviews(path: Path, n: int = 16, labels=("bad", "good"), start: int = 0) -> Path:
    """A CSV of ``n`` reviews numbered from ``start`` with string class names in a ``stars`` column and a stray
    column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "stars", "author"])
        for i in range(n):
            writer.writerow([f"{WORDS[i % 8]} {WORDS[(3 * i) % 8]} review {start + i}", labels[i % len(labels)], f"a{i}"])
    return path


def write_task(folder: Path, filename: str = "reviews.json", **fields) -> Path:
    """A task file in ``folder`` (JSON, or TOML for a .toml name) over reviews/{train,dev}.csv."""
    write_reviews(folder / "data" / "train.csv")
    write_reviews(folder / "data" / "dev.csv", n=8, start=100)  # texts of its own: splits must be disjoint
    task = {"name": "reviews", "kind": "classification", "train": "data/train.csv", "eval": "data/dev.csv",
            "text_columns": ["review"], "label_column": "stars", "labels": ["bad", "good"],
            "metrics": ["accuracy", "f1"], "prompt": "{review} It was", "label_words": [" bad", " good"], **fields}
    task = {k: v for k, v in task.items() if v is not None}
    path = folder / filename
    if path.suffix == ".toml":
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in task.items()))
    else:
        path.write_text(json.dumps(task))
    return path


def test_a_classification_task_file_loads_with_its_labels_as_indices(tmp_path):
    path = write_task(tmp_path)
    spec = get_task(str(path))
    assert (spec.name, spec.text_columns, spec.num_labels, spec.metrics) == ("reviews", ("review",), 2, ("accuracy", "f1"))
    assert spec.ref == str(path.resolve()) and task_ref(str(path)) == spec.ref
    data = load_task_data(str(path), train_size=10, validation_size=3, test_size=None)
    assert Path(data.test_split).name == "dev.csv" and data.source == spec.ref
    assert data.train.column_names == ["review", "label"] and (len(data.train), len(data.validation)) == (10, 3)
    assert data.test["label"] == [i % 2 for i in range(8)]  # "bad" -> 0, "good" -> 1, in file order
    assert get_prompt(spec).format({"review": "fine film"}) == "fine film It was"
    assert compute_metrics(spec, [0, 1, 1, 1], [0, 1, 0, 1]) == {"accuracy": 0.75, "f1": pytest.approx(0.8)}


def test_toml_and_json_define_the_same_task(tmp_path):
    json_spec = get_task(str(write_task(tmp_path / "j")))
    toml_spec = get_task(str(write_task(tmp_path / "t", "reviews.toml")))
    assert toml_spec.name == json_spec.name and toml_spec.metrics == json_spec.metrics
    assert toml_spec.file.label_names == json_spec.file.label_names and toml_spec.file.prompt == json_spec.file.prompt


def test_without_an_eval_file_the_held_out_rows_are_carved_from_train(tmp_path):
    path = write_task(tmp_path, eval=None)
    data = load_task_data(str(path), train_size=None, validation_size=2, test_size=4, data_seed=3)
    assert "test rows carved by split seed" in data.test_split
    assert (len(data.train), len(data.validation), len(data.test)) == (10, 2, 4)
    texts = [set(split["review"]) for split in (data.train, data.validation, data.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    again = load_task_data(str(path), train_size=None, validation_size=2, test_size=4, data_seed=7)
    assert again.test["review"] == data.test["review"] and again.validation["review"] == data.validation["review"]


def test_a_regression_task_file_with_integer_free_scores(tmp_path):
    rows = [{"a": f"{WORDS[i % 8]} one", "b": f"{WORDS[(i + 1) % 8]} two", "score": i * 0.5} for i in range(10)]
    (tmp_path / "sim.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"name": "sim", "kind": "regression", "train": "sim.jsonl", "text_columns": ["a", "b"],
                                "label_column": "score"}))
    spec = get_task(str(path))
    assert spec.is_regression and spec.metrics == ("spearman", "pearson")
    data = load_task_data(str(path), train_size=None, test_size=2)
    assert data.train.features["label"].dtype == "float32" and sorted(data.train.column_names) == ["a", "b", "label"]


def _study(tmp_path, task: Path, *extra: str, script: str = "rank_ablation", model: str = "tiny-bert"):
    argv = ["--model", model, *FAST, "--tasks", str(task), "--results-dir", str(tmp_path / "res"),
            "--figures-dir", str(tmp_path / "fig"), *extra]
    return load_study(script).main(argv)


def test_a_study_runs_a_task_file_and_an_edited_file_is_a_new_run(tmp_path, monkeypatch):
    task = write_task(tmp_path)
    records = _study(tmp_path, task, "--methods", "lora", "--ranks", "1")
    (record,) = records
    assert record["config"]["task"] == str(task.resolve()) and record["run_id"].startswith("reviews-tiny-bert-lora")
    assert record["config"]["task_files"][str(task.resolve())]["labels"] == ["bad", "good"]
    assert record["score"]["metric"] == "accuracy" and Path(record["splits"]["reviews"]["test"]["source"]).name == "dev.csv"
    assert record_task_label(record["config"]) == "reviews"
    assert (tmp_path / "fig" / "rank_ablation_tiny-bert.png").stat().st_size > 1000
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert [r["run_id"] for r in _study(tmp_path, task, "--methods", "lora", "--ranks", "1")] == [record["run_id"]]
    write_task(tmp_path, metrics=["f1", "accuracy"])  # the same path, a new definition
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        _study(tmp_path, task, "--methods", "lora", "--ranks", "1")


def test_a_decoder_scores_a_task_file_by_its_label_words(tmp_path):
    (record,) = _study(tmp_path, write_task(tmp_path), "--methods", "lora", "--ranks", "1", model="tiny-llama")
    assert record["status"] == "ok" and 0.0 <= record["score"]["value"] <= 1.0


def test_an_lm_task_file_trains_the_replies_through_the_instruction_path(tmp_path):
    pytest.importorskip("trl")
    rows = [{"q": f"name colour {i}", "a": f"blue number {i}"} for i in range(12)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "qa.json"
    task.write_text(json.dumps({"name": "qa", "kind": "lm", "train": "qa.jsonl",
                                "columns": {"instruction": "q", "output": "a"}}))
    (record,) = _study(tmp_path, task, "--ranks", "1", "--methods", "lora", "--max-length", "96",
                       script="instruction_tuning", model="tiny-llama")
    assert record["score"]["metric"] == "completion_ce" and record["score"]["value"] > 0
    assert record["run_id"].startswith("qa-tiny-llama-lora") and record["splits"]["qa"]["test"]["source"].endswith(
        "(test rows carved by split seed 1234)")


BAD = {
    "unknown kind": ({"kind": "generation"}, "'kind' must be one of classification, regression, lm"),
    "unknown field": ({"label": "stars"}, "unknown field(s) ['label']"),
    "missing data file": ({"train": "data/nope.csv"}, "does not exist (paths are relative to the task file)"),
    "column not in the data": ({"text_columns": ["text"], "prompt": "{text} It was"}, "lacks column(s) ['text']"),
    "label not a class": ({"labels": ["bad", "fine"]}, "label 'good' in row 1 (0-based)"),
    "f1 on three classes": ({"labels": ["bad", "good", "ok"], "label_words": [" a", " b", " c"]},
                            "metric 'f1' is binary"),
    "metric of another kind": ({"metrics": ["spearman"]}, "metric(s) ['spearman'] do not apply"),
    "prompt without label words": ({"label_words": None}, "'prompt' and 'label_words' go together"),
    "prompt reads another column": ({"prompt": "{text} It was"}, "'prompt' reads columns ['text']"),
    "word count": ({"label_words": [" bad"]}, "1 'label_words' for 2 classes"),
    "name with a slash": ({"name": "my/task"}, "'name' must be a short non-empty name"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_task_file_is_refused_before_any_compute(case, tmp_path, monkeypatch, capsys):
    fields, message = BAD[case]
    task = write_task(tmp_path, **fields)
    monkeypatch.setattr(run_module, "execute", lambda *a, **k: pytest.fail("trained despite a bad task file"))
    with pytest.raises((TenpeftError, SystemExit)) as err:
        _study(tmp_path, task, "--methods", "lora", "--ranks", "1")
    text = str(err.value) if err.type is TenpeftError else capsys.readouterr().err
    assert message in text
    assert not list(tmp_path.glob("res/**/*.json"))


def test_a_missing_task_file_and_invalid_json_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _study(tmp_path, tmp_path / "absent.json", "--methods", "lora", "--ranks", "1")
    assert "no task file" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{\"name\": ")
    with pytest.raises(TenpeftError, match="is not valid JSON"):
        get_task(str(broken))


def test_a_task_file_spelled_by_a_relative_path_is_refused_in_a_spec(tmp_path, monkeypatch):
    task = write_task(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = RunSpec("t", "tiny-bert", "reviews.json", "lora", {"rank": 1})
    with pytest.raises(TenpeftError, match="is written"):
        check_spec(spec)
    check_spec(RunSpec("t", "tiny-bert", str(task.resolve()), "lora", {"rank": 1}))
