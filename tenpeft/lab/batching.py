"""Batches of rows of similar length, so that padding to a batch's longest row costs little.

A shuffled batch of 16 of the default study's SST-2 training rows pads to 2.65 times its tokens, a
length-grouped one to 1.06 times (``python benchmarks/padding.py``). Training: :class:`LengthGroupedBatches` shuffles the
rows (seeded), sorts each group of ``GROUP_BATCHES`` batches' worth by length, cuts it into batches and
shuffles the batches, so every epoch is a new seeded order and batch lengths do not trend within it
(transformers' ``LengthGroupedSampler`` keeps each group's batches longest first, a curriculum inside
every group). Evaluation: :func:`sorted_loader` batches rows in length order and tags each batch with
its rows' indices (:data:`ROW_INDEX`), so predictions can be put back in the rows' own order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

GROUP_BATCHES = 50  # as transformers' megabatch_mult
ROW_INDEX = "row_index"  # the batch key holding each row's index in its split


def row_tokens(rows) -> np.ndarray:
    """Tokens per row of an encoded split: the length of ``input_ids``, summed over the candidates of a
    multiple-choice row (whose ``input_ids`` is one list per candidate)."""
    column = (rows[i]["input_ids"] for i in range(len(rows)))
    return np.array([sum(len(c) for c in ids) if len(ids) and isinstance(ids[0], list) else len(ids) for ids in column],
                    dtype=np.int64)


class LengthGroupedBatches(Sampler):
    """Seeded batches of ``batch_size`` row indices of similar length (the module's docstring says how);
    a new order each epoch, drawn from ``generator``. With ``processes`` > 1 the rows are grouped into
    global batches of ``batch_size * processes``, each yielded as ``processes`` consecutive batches, one
    per process (accelerate deals them out in turn): so N processes of batch b train on the batches one
    process of batch N*b does. ``len``: the batches per epoch."""

    def __init__(self, lengths, batch_size: int, generator: torch.Generator, processes: int = 1):
        self.lengths, self.batch_size, self.generator = np.asarray(lengths), batch_size, generator
        self.processes = processes

    def __len__(self) -> int:
        return -(-len(self.lengths) // (self.batch_size * self.processes)) * self.processes

    def _global_batches(self, order: np.ndarray) -> list[np.ndarray]:
        size = self.batch_size * self.processes
        batches = []
        for start in range(0, len(order), size * GROUP_BATCHES):
            chunk = order[start:start + size * GROUP_BATCHES]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        return batches

    def __iter__(self):
        batches = self._global_batches(torch.randperm(len(self.lengths), generator=self.generator).numpy())
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            rows = batches[k]
            for part in np.array_split(rows, self.processes):
                yield part.tolist()


class _Indexed(Dataset):
    """``rows`` whose item ``i`` is ``(i, rows[i])``."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return i, self.rows[i]


@dataclass
class IndexedCollate:
    """``collate`` of the rows, plus :data:`ROW_INDEX`: the rows' indices (a module-level class so
    DataLoader workers can pickle it)."""

    collate: Callable

    def __call__(self, items: list) -> dict:
        batch = self.collate([row for _, row in items])
        batch[ROW_INDEX] = torch.tensor([i for i, _ in items], dtype=torch.long)
        return batch


def sorted_loader(rows, collate, batch_size: int) -> DataLoader:
    """An evaluation loader over ``rows`` longest first, in batches of ``batch_size``, each batch tagged
    with its rows' indices (:data:`ROW_INDEX`)."""
    order = np.argsort(-row_tokens(rows), kind="stable").tolist()
    return DataLoader(_Indexed(rows), batch_size=batch_size, sampler=order, collate_fn=IndexedCollate(collate))


def grouped_loader(rows, collate, batch_size: int, seed: int, processes: int = 1) -> DataLoader:
    """A training loader over ``rows`` in seeded, length-grouped batches (:class:`LengthGroupedBatches`)
    for each of ``processes`` processes."""
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedBatches(row_tokens(rows), batch_size, generator, processes)
    return DataLoader(rows, batch_sampler=sampler, collate_fn=collate)
