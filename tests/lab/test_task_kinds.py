"""Task kinds: the registry the lab dispatches through, and a new kind in one user file
(examples/extensions/multilabel_task.py) run end to end by a study with --import."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

import paths
from helpers import study_flags
from tenpeft.errors import TenpeftError
from tenpeft.lab.runners import RUNNERS
from tenpeft.lab.tasks import KINDS, TASKS, chain_kinds, find_kind, task_kind
from tenpeft.lab.tasks.generation import GENERATION_TASKS
from tenpeft.lab.tasks.instruction import INSTRUCTION_TASKS
from tenpeft.lab.tasks.preference import PREFERENCE_TASKS

EXTENSIONS = paths.ROOT / "examples" / "extensions"
NAMED = {**{n: TASKS[n].kind for n in TASKS}, **dict.fromkeys(PREFERENCE_TASKS, "preference"),
         **dict.fromkeys(INSTRUCTION_TASKS, "instruction"), **dict.fromkeys(GENERATION_TASKS, "generation")}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_every_named_task_is_owned_by_exactly_one_kind_and_its_runner_exists(name):
    owners = [kind for kind in KINDS.values() if kind.owns(name)]
    assert [k.name for k in owners] == [NAMED[name]]
    assert task_kind(name).objective in RUNNERS


def test_task_files_and_local_rows_bind_to_the_kind_they_name(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    (tmp_path / "t.json").write_text(json.dumps({"name": "mine", "kind": "classification", "train": "rows.jsonl",
                                                 "text_columns": ["text"], "num_labels": 2}))
    bound = task_kind(str(tmp_path / "t.json"))
    assert bound.name == "classification" and bound.label == "mine" and bound.identity["name"] == "mine"
    assert bound.ref == os.path.realpath(tmp_path / "t.json")
    assert task_kind("local:rows.json").name == "instruction"  # a local: JSON file is rows, not a task file
    assert find_kind("no-such-task") is None
    with pytest.raises(TenpeftError, match="unknown task 'no-such-task'; known tasks: cola"):
        task_kind("no-such-task")


@pytest.mark.parametrize("chain, message", [("hh_harmless>sst2", "preference task 'hh_harmless' cannot be chained"),
                                            ("sst2>copa", "mixes classification and multiple_choice tasks")])
def test_a_chain_is_of_one_kind_that_chains(chain, message):
    assert [k.name for k in chain_kinds(["sst2", "mrpc"])] == ["classification", "classification"]
    with pytest.raises(TenpeftError, match=message):
        chain_kinds(chain.split(">"))


def _multilabel_data(folder, validation_extra: str | None = None):
    words = {"sports": "goal match", "politics": "vote law", "tech": "code chip"}
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, n in (("train", 24), ("validation", 8)):
        rows = []
        for i in range(n):  # each text its own: the lab refuses splits that share a text
            labels = sorted(rng.choice(list(words), size=int(rng.integers(1, 3)), replace=False).tolist())
            rows.append({"text": " ".join(words[label] for label in labels) + f" ({split} {i})", "labels": labels})
        if split == "validation" and validation_extra:
            rows[0]["labels"] = [validation_extra]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _study(data, tmp_path) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(paths.ROOT / "studies" / "rank_ablation.py"), "--import", "multilabel_task",
            "--tasks", f"multilabel:{data}", "--methods", "lora", "--ranks", "2",
            *study_flags(steps=4, eval_every=2, train=16),
            "--results-dir", str(tmp_path / "res"),
            "--figures-dir", str(tmp_path / "fig")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXTENSIONS), str(paths.ROOT / "tests")])}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=paths.ROOT)


def test_a_user_task_kind_runs_a_study_end_to_end(tmp_path):
    done = _study(_multilabel_data(tmp_path / "ml"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = (tmp_path / "res" / "rank_ablation").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["score"]["metric"] == "micro_f1"
    assert record["config"]["task"] == f"multilabel:{os.path.realpath(tmp_path / 'ml')}"
    assert Path(record["splits"]["ml"]["test"]["source"]).name == "validation.jsonl"
    assert record["splits"]["ml"]["validation"]["size"] == 4 and path.name.startswith("ml-tiny-bert-lora")
    assert [e["step"] for e in record["history"]] == [2, 4]
    assert all(set(e["metrics"]) == {"micro_f1", "exact_match"} and e["val_loss"] > 0 for e in record["history"])


def test_a_user_task_kind_refuses_bad_data_before_any_compute(tmp_path):
    done = _study(_multilabel_data(tmp_path / "ml", validation_extra="cooking"), tmp_path)
    assert done.returncode != 0 and "has label(s) ['cooking'] that train.jsonl never names" in done.stderr
    assert not list(tmp_path.glob("res/**/*.json"))


def test_the_user_kind_scores_and_losses_are_the_multilabel_ones(monkeypatch):
    monkeypatch.syspath_prepend(str(EXTENSIONS))
    from multilabel_task import MultiLabelSpec

    spec = MultiLabelSpec("ml", ("text",), 3, ("micro_f1", "exact_match"))
    pred, gold = np.array([[1, 0, 1], [0, 1, 0]]), np.array([[1, 0, 0], [0, 1, 0]])
    assert spec.score(pred, gold) == {"micro_f1": pytest.approx(2 * 2 / 5), "exact_match": 0.5}
    logits, labels = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(spec.loss(logits, labels), expected)
    assert spec.predict(logits, {"labels": labels})[0].tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("name, folder", [("hh_harmless", "hh_harmless"), ("hh_chosen", "hh_harmless"),
                                          ("squad", "squad")])
def test_every_kind_reads_its_local_files_through_the_one_checked_reader(name, folder, tmp_path, isolated_data):
    from tenpeft.lab.loop import TrainConfig
    from tenpeft.lab.run import DataConfig, RunSpec

    (tmp_path / folder).mkdir()
    for split in ("train", "test", "validation"):
        (tmp_path / folder / f"{split}.jsonl").write_text("")
    spec = RunSpec("t", "tiny-llama", name, "lora", train=TrainConfig(max_steps=1),
                   data=DataConfig(data_dir=str(tmp_path), train_size=None, test_size=None))
    with pytest.raises(TenpeftError, match=f"{tmp_path / folder / 'train.jsonl'}' is empty"):
        task_kind(name).rows(spec, tokenizer=None)


def test_a_task_has_one_spelling_the_command_line_writes_and_a_spec_must_use(tmp_path):
    from tenpeft.lab.flags import task_list
    from tenpeft.lab.run import RunSpec, check_spec

    assert task_list("SST-2,sst2,hh_harmless,sst3") == ["sst2", "sst2", "hh_harmless", "sst3"]
    with pytest.raises(TenpeftError, match="task 'SST-2' is written 'sst2': pass --tasks sst2"):
        check_spec(RunSpec("t", "tiny-bert", "SST-2", "lora", {"rank": 1}))
