"""The lab's three disjoint splits of every task: ``train`` (trains), ``validation`` (every choice: the
checkpoint, the learning rate, a searched rank or shape) and ``test`` (reported, never used for a choice).

The test split is the task's labelled held-out split (GLUE keeps its test labels private, so GLUE reports on
the official validation split; MRPC's labelled test is reported where the data has it). The validation
split is carved out of train, the same rows for every run: ``SPLIT_SEED`` shuffles train, the first
``validation_size`` rows (default ``VALIDATION_SHARE`` of train) are validation, and every training row
whose text equals a validation row's is dropped, so no validation text is trained on. A source with no
labelled held-out split gives its test rows the same way, before validation. The test subsample is drawn
by ``SPLIT_SEED`` too; only the training subset depends on the run's ``data_seed``.

Each split is described by its size, where it came from and a content fingerprint (a hash of its rows'
texts and labels, in order), and splits that share a text are refused."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import datasets
import numpy as np

from tenpeft.errors import TenpeftError

SPLIT_SEED = 1234  # fixed: validation (and carved test) rows are the same whatever the run's seed
VALIDATION_SHARE = 0.1  # of train, when no validation_size is given
SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    """A task's three disjoint splits and, per split, where its rows came from."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    sources: dict

    def describe(self, columns) -> dict:
        """``{split: {size, source, fingerprint}}`` (what a record keeps of the data it used)."""
        return {name: {"size": len(getattr(self, name)), "source": self.sources[name],
                       "fingerprint": fingerprint(getattr(self, name), columns)} for name in SPLITS}


def text_keys(rows: datasets.Dataset, columns) -> list[str]:
    """One key per row: its text columns as JSON (equal texts, equal keys)."""
    values = [rows[c] for c in columns]
    return [json.dumps(texts, ensure_ascii=False) for texts in zip(*values)]


def fingerprint(rows: datasets.Dataset, columns) -> str:
    """A content hash of ``rows`` in order: their ``columns`` (and ``label`` where there is one), 16 hex digits."""
    digest = hashlib.sha256()
    labels = rows["label"] if "label" in rows.column_names else [None] * len(rows)
    for key, label in zip(text_keys(rows, columns), labels):
        digest.update(json.dumps([key, label], default=str).encode())
    return digest.hexdigest()[:16]


def carve(rows: datasets.Dataset, size: int | None, columns, what: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(rest, carved)``: ``size`` rows of ``rows`` (None: ``VALIDATION_SHARE`` of them) drawn by
    ``SPLIT_SEED``, and the others less every row whose text equals a carved row's."""
    count = size or max(1, round(VALIDATION_SHARE * len(rows)))
    if count >= len(rows):
        raise TenpeftError(f"a train split of {len(rows)} rows cannot give {count} {what} rows and keep rows to "
                           f"train on; lower --{what}-size")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
    carved = rows.select(order[:count])
    taken, keys = set(text_keys(carved, columns)), text_keys(rows, columns)
    rest = [int(i) for i in order[count:] if keys[i] not in taken]
    if not rest:
        raise TenpeftError(f"the {len(rows) - count} rows of train outside its {count} {what} rows all repeat their "
                           f"texts, so none is left to train on; give the train split distinct rows")
    return rows.select(sorted(rest)), carved


def draw(rows: datasets.Dataset, size: int | None, seed: int) -> datasets.Dataset:
    """``size`` rows of ``rows`` in the order of a shuffle by ``seed`` (None or at least its length: all, as they are)."""
    if size is None or size >= len(rows):
        return rows
    return rows.select(np.random.default_rng(seed).permutation(len(rows))[:size])


def check_disjoint(splits: Splits, columns, task: str) -> None:
    """Refuse splits that share a text (a row trained on and scored, or chosen on and reported)."""
    keys = {name: set(text_keys(getattr(splits, name), columns)) for name in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            shared = keys[first] & keys[second]
            if shared:
                raise TenpeftError(
                    f"task {task!r}: its {first} split ({splits.sources[first]}) and {second} split "
                    f"({splits.sources[second]}) share {len(shared)} text(s), e.g. {sorted(shared)[0][:80]}; "
                    f"splits must be disjoint: remove those rows from one of the files")


def make_splits(train: datasets.Dataset, test: datasets.Dataset | None, columns, *, task: str, train_source: str,
                test_source: str | None, train_size: int | None = None, validation_size: int | None = None,
                test_size: int | None = None, data_seed: int = 0) -> Splits:
    """The three splits of a task from its ``train`` rows and labelled held-out ``test`` rows (None: carved
    from train by ``SPLIT_SEED``, ``test_size`` rows or a tenth): validation carved from the rest of train,
    ``train_size`` training rows drawn by ``data_seed``, ``test_size`` test rows by ``SPLIT_SEED``; checked
    disjoint."""
    if test is None:
        train, test = carve(train, test_size, columns, "test")
        test_source = f"{train_source} (test rows carved by split seed {SPLIT_SEED})"
    else:
        test = draw(test, test_size, SPLIT_SEED)
    rest, validation = carve(train, validation_size, columns, "validation")
    splits = Splits(draw(rest, train_size, data_seed), validation, test,
                    {"train": train_source, "test": test_source,
                     "validation": f"{train_source} (validation rows carved by split seed {SPLIT_SEED})"})
    check_disjoint(splits, columns, task)
    return splits


__all__ = ["SPLITS", "SPLIT_SEED", "VALIDATION_SHARE", "Splits", "carve", "check_disjoint", "draw", "fingerprint",
           "make_splits", "text_keys"]
