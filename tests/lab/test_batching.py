"""Length-grouped training batches and length-sorted evaluation (tenpeft.lab.batching)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from tenpeft.lab.batching import ROW_INDEX, LengthGroupedBatches, row_tokens
from tenpeft.lab.loop import TrainConfig, eval_loader, make_loaders, predict_split
from tenpeft.lab.tasks import get_task

LENGTHS = np.random.RandomState(0).randint(2, 60, size=1000)


def _epochs(seed: int, epochs: int = 2) -> list[list[list[int]]]:
    sampler = LengthGroupedBatches(LENGTHS, 16, torch.Generator().manual_seed(seed))
    return [list(sampler) for _ in range(epochs)]


def _padded(batches) -> int:
    return sum(int(LENGTHS[b].max()) * len(b) for b in batches)


def test_each_epoch_is_a_seeded_permutation_of_every_row():
    first, second = _epochs(0)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(len(LENGTHS)))
        assert max(len(b) for b in epoch) == 16 and len(epoch) == 63
    assert first != second, "each epoch draws a new order"
    assert _epochs(0) == [first, second], "the same seed gives the same batches"
    assert _epochs(1)[0] != first


def test_grouped_batches_pad_little_and_do_not_trend():
    epoch = _epochs(0)[0]
    shuffled = np.random.RandomState(0).permutation(len(LENGTHS))
    random_batches = [shuffled[i:i + 16] for i in range(0, len(shuffled), 16)]
    assert _padded(epoch) / LENGTHS.sum() < 1.1 < 1.5 < _padded(random_batches) / LENGTHS.sum()
    longest = [int(LENGTHS[b].max()) for b in epoch]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True), "batches are shuffled"


class _Rows(torch.utils.data.Dataset):
    """Encoded-like rows: ids of varied length, label = whether the first id is even."""

    def __init__(self, n: int):
        rng = np.random.RandomState(1)
        self.rows = [{"input_ids": rng.randint(1, 50, size=rng.randint(1, 12)).tolist()} for _ in range(n)]
        for row in self.rows:
            row["labels"] = row["input_ids"][0] % 2

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _collate(rows):
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(r["input_ids"]) for r in rows], batch_first=True)
    return {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": torch.tensor([r["labels"] for r in rows])}


class _Parity(torch.nn.Module):
    """Logits from the first id alone, so padding cannot change them."""

    def forward(self, input_ids, attention_mask):
        first = input_ids[:, 0].float()
        return type("Out", (), {"logits": torch.stack([torch.cos(first), torch.sin(first)], dim=1)})()


def test_sorted_evaluation_returns_predictions_in_row_order():
    rows, task = _Rows(37), get_task("sst2")
    loader = eval_loader(rows, _collate, TrainConfig(eval_batch_size=8))
    seen = [i for batch in loader for i in batch[ROW_INDEX].tolist()]
    assert sorted(seen) == list(range(37)) and seen != list(range(37)), "batches come in length order"
    assert [len(rows[i]["input_ids"]) for i in seen] == sorted(row_tokens(rows).tolist(), reverse=True)
    _, _, predictions = predict_split(_Parity(), loader, task, Accelerator(cpu=True), progress=False)
    one_by_one = [int(torch.argmax(_Parity()(**{k: v for k, v in _collate([r]).items() if k != "labels"}).logits))
                  for r in rows.rows]
    assert predictions["pred"] == one_by_one
    assert predictions["gold"] == [r["labels"] for r in rows.rows]


@pytest.mark.parametrize("grouped", [True, False])
def test_training_loader_covers_the_rows_either_way(grouped):
    rows = _Rows(40)
    train, _ = make_loaders(rows, rows, _collate, TrainConfig(batch_size=8, group_by_length=grouped), seed=3)
    seen = sorted(int(v) for batch in train for v in batch["labels"])
    assert seen == sorted(r["labels"] for r in rows.rows) and len(train) == 5


def test_choice_rows_count_every_candidate():
    assert row_tokens([{"input_ids": [[1, 2, 3], [4, 5]]}, {"input_ids": [7]}]).tolist() == [5, 1]


def test_two_processes_of_batch_b_get_the_rows_one_process_of_batch_2b_gets():
    one = list(LengthGroupedBatches(LENGTHS, 16, torch.Generator().manual_seed(5)))
    two = list(LengthGroupedBatches(LENGTHS, 8, torch.Generator().manual_seed(5), processes=2))
    assert len(two) == 2 * len(one)
    assert [sorted(a + b) for a, b in zip(two[::2], two[1::2])] == [sorted(b) for b in one]
