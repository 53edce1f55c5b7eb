"""Tokenized datasets get a fingerprint from what they depend on (encode.map_fingerprint), not from
pickling the tokenizer: equal inputs give equal fingerprints in every process, and any change of the
rows, tokenizer or encoding parameters gives another."""
from __future__ import annotations

import subprocess
import sys

import datasets
import pytest

import paths
from tenpeft.lab.models import load_tokenizer, resolve_model
from tenpeft.lab.tasks import encode_classification, get_task
from tenpeft.lab.tasks.encode import map_fingerprint

ROWS = {"sentence": ["a good film", "a bad plot"], "label": [1, 0]}
PRINT = """
import datasets
from tenpeft.lab.models import load_tokenizer, resolve_model
from tenpeft.lab.tasks import encode_classification
rows = datasets.Dataset.from_dict({"sentence": ["a good film", "a bad plot"], "label": [1, 0]})
print(encode_classification("sst2", load_tokenizer(resolve_model("tiny-bert")), rows, 16)._fingerprint)
"""


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("tiny-bert"))


def test_the_fingerprint_is_the_same_in_another_process(tokenizer):
    rows = datasets.Dataset.from_dict(ROWS)
    here = encode_classification("sst2", tokenizer, rows, 16)._fingerprint
    there = subprocess.run([sys.executable, "-c", PRINT], capture_output=True, text=True, timeout=300, cwd=paths.ROOT)
    assert there.returncode == 0, there.stderr[-2000:]
    assert there.stdout.strip().splitlines()[-1] == here


def test_rows_tokenizer_code_and_parameters_each_change_the_fingerprint(tokenizer):
    rows, other = datasets.Dataset.from_dict(ROWS), datasets.Dataset.from_dict({**ROWS, "label": [0, 0]})

    def f(batch):
        return batch

    def g(batch):
        return {**batch}

    base = map_fingerprint(rows, tokenizer, f, get_task("sst2"), 16)
    assert base == map_fingerprint(rows, tokenizer, f, get_task("sst2"), 16)
    changed = [map_fingerprint(other, tokenizer, f, get_task("sst2"), 16),
               map_fingerprint(rows, tokenizer, g, get_task("sst2"), 16),
               map_fingerprint(rows, tokenizer, f, get_task("cola"), 16),
               map_fingerprint(rows, tokenizer, f, get_task("sst2"), 32)]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<x>"]})
    changed.append(map_fingerprint(rows, tokenizer, f, get_task("sst2"), 16))
    assert len({base, *changed}) == 6


def test_a_tokenizer_without_a_fast_backend_leaves_the_hashing_to_datasets():
    class Slow:
        pass

    assert map_fingerprint(datasets.Dataset.from_dict(ROWS), Slow(), lambda b: b) is None
