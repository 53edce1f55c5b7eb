"""ReCoRD (issue 13 item 3) as MeZO runs it for LoRETTA's LLaMA table: multiple choice over each passage's
entities, scored by candidate likelihood, correct when the chosen entity is any of the row's answers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab import run as run_module
from tenpeft.lab.models import load_tokenizer, resolve_model
from tenpeft.lab.tasks import get_task, load_task_data
from tenpeft.lab.tasks.choices import ChoiceCollator, encode_choices, get_choices
from helpers import load_study

pytestmark = pytest.mark.usefixtures("isolated_data")

ROW = {"passage": "Ann met Bob in Paris.\n@highlight\nAnn is a painter\n@highlight\nBob sings",
       "query": "@placeholder paints in Paris.", "entities": ["Ann", "Bob", "Paris"], "answers": ["Ann"]}


def write_record(root: Path, n: int = 8) -> Path:
    """``root/record/{train,validation}.jsonl``: rows of 2 to 4 entities, some with two correct answers."""
    (root / "record").mkdir(parents=True, exist_ok=True)
    for number, split in enumerate(("train", "validation")):
        rows = []
        for i in range(n):
            entities = ["Ann", "Bob", "Paris", "Cy"][:2 + i % 3]
            rows.append({**ROW, "passage": f"Day {100 * number + i}. " + ROW["passage"], "entities": entities,
                         "answers": entities[i % 2:i % 2 + 1 + (i % 4 == 3)],
                         "idx": {"passage": i, "query": i}})
        (root / "record" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_record_candidates_are_mezos():
    prompt = get_choices("record")
    # MeZO ReCoRDTemplateGPT3: encode() and verbalize() of each entity, written out by hand
    passage = "Ann met Bob in Paris.\n- Ann is a painter\n- Bob sings"
    assert prompt.context(ROW) == passage + "\n-"
    assert prompt.verbalize(ROW) == [f"{passage}\n- Ann paints in Paris.", f"{passage}\n- Bob paints in Paris.",
                                     f"{passage}\n- Paris paints in Paris."]
    spec = get_task("record")
    assert spec.hub_source == ("aps/super_glue", "record") and not spec.encoder_ready


def test_record_loads_with_its_first_answer_as_label_and_every_answer_as_gold(tmp_path):
    data = load_task_data("record", write_record(tmp_path))
    assert Path(data.test_split).name == "validation.jsonl"  # every row, in file order
    assert data.test.column_names == ["passage", "query", "label", "entities", "answers"]
    assert data.test["label"] == [0, 1, 0, 1, 0, 1, 0, 1]  # entities.index(answers[0])
    encoded = encode_choices("record", load_tokenizer(resolve_model("tiny-llama")), data.test, max_length=96)
    assert [len(ids) for ids in encoded["input_ids"]] == [2, 3, 4, 2, 3, 4, 2, 3]
    assert encoded["gold"][7] == [1, 2] and encoded["gold"][0] == [0] and encoded["labels"][7] == 1


def test_a_prediction_of_any_correct_candidate_counts_as_correct():
    rows = [{"input_ids": [[1, 5, 6], [1, 5, 7], [1, 5, 8]], "option_lens": [1, 1, 1], "labels": 0, "gold": [0, 2]},
            {"input_ids": [[1, 5, 6], [1, 5, 7]], "option_lens": [1, 1], "labels": 1, "gold": [1]}]
    batch = ChoiceCollator(0)(rows)
    assert batch["gold"].tolist() == [[True, False, True], [False, True, False]]
    logits = torch.tensor([[0.1, 0.2, 0.9], [0.8, 0.1, -1e9]])  # row 0 picks gold 2, row 1 picks wrong 0
    spec = get_task("record")
    assert spec.predict(logits, batch)[0].tolist() == [0, 0]  # row 0 counts as its label
    assert spec.predict(logits, {"labels": batch["labels"]})[0].tolist() == [2, 0]


@pytest.mark.parametrize("edit, message", [
    ({"answers": ["Zed"]}, "answer 'Zed' is not among its entities"),
    ({"entities": []}, "expected a non-empty list of strings"),
    ({"answers": "Ann"}, "expected a non-empty list of strings"),
])
def test_a_bad_record_row_is_refused_with_its_row(tmp_path, edit, message):
    root = write_record(tmp_path)
    path = root / "record" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), **edit})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TenpeftError, match=rf"row 2 .*{message}"):
        load_task_data("record", root)


def test_a_record_without_its_answers_column_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "record").mkdir(parents=True)
    for split in ("train", "validation"):
        (root / "record" / f"{split}.jsonl").write_text(json.dumps({k: v for k, v in ROW.items() if k != "answers"}) + "\n")
    with pytest.raises(TenpeftError, match=r"lacks column\(s\) \['answers'\]"):
        load_task_data("record", root)


def test_a_decoder_study_runs_record_end_to_end_and_an_encoder_is_refused(tmp_path):
    data = write_record(tmp_path / "data")
    argv = ["--model", "tiny-llama", "--seeds", "0", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
            "--max-length", "96", "--no-progress", "--one-lr", "--tasks", "record", "--methods", "lora", "--ranks", "1",
            "--validation-size", "2",
            "--data-dir", str(data), "--results-dir", str(tmp_path / "res"), "--figures-dir", str(tmp_path / "fig")]
    (record,) = load_study("rank_ablation").main(argv)
    assert record["status"] == "ok" and record["score"]["metric"] == "accuracy"
    assert Path(record["splits"]["record"]["test"]["source"]).name == "validation.jsonl"
    assert 0.0 <= record["score"]["value"] <= 1.0
    assert record["history"][0]["val_loss"] > 0
    spec = run_module.RunSpec(study="t", model="tiny-bert", task="record", method="lora",
                              data=run_module.DataConfig(data_dir=str(data)))
    with pytest.raises(TenpeftError, match="prompt task for decoders"):
        run_module.check_spec(spec)
