"""Padding of training and evaluation batches: random batches against the lab's length-grouped ones.

For the SST-2 rows the default rank ablation trains on (seed 0's 1,000 training rows) and evaluates on
(the 500 carved validation rows, the 872 test rows), tokenized by MiniLM: the tokens a batch holds once
padded to its longest row, over the real tokens. Before ``tenpeft.lab.batching`` the loop drew training
batches from a seeded shuffle and evaluated the rows in their stored order; now it draws training batches
with ``LengthGroupedBatches`` and evaluates in ``sorted_loader``'s order, longest first. Takes a few seconds.

    python benchmarks/padding.py --data-dir ../shared/data/glue
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from tenpeft.lab.batching import LengthGroupedBatches, row_tokens
from tenpeft.lab.models import load_tokenizer, resolve_model
from tenpeft.lab.tasks import get_task, load_task_data
from tenpeft.lab.tasks.encode import encode_classification


def padded_over_real(lengths: np.ndarray, batches) -> float:
    return sum(int(lengths[b].max()) * len(b) for b in batches) / int(lengths.sum())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch (evaluation: 64)")
    args = parser.parse_args(argv)
    task, tokenizer = get_task("sst2"), load_tokenizer(resolve_model("minilm"))
    data = load_task_data(task, args.data_dir, train_size=1000, validation_size=500, data_seed=0)
    print("split | rows | batch | padded / real tokens: before | now")
    for split, rows, batch in (("train", data.train, args.batch_size), ("validation", data.validation, 64),
                               ("test", data.test, 64)):
        lengths = row_tokens(encode_classification(task, tokenizer, rows))
        if split == "train":
            before = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).numpy()
            now = list(LengthGroupedBatches(lengths, batch, torch.Generator().manual_seed(0)))
        else:
            before, ordered = np.arange(len(lengths)), np.argsort(-lengths, kind="stable")
            now = [ordered[i:i + batch] for i in range(0, len(ordered), batch)]
        before = [before[i:i + batch] for i in range(0, len(before), batch)]
        print(f"{split} | {len(lengths)} | {batch} | {padded_over_real(lengths, before):.2f} | "
              f"{padded_over_real(lengths, now):.2f}")


if __name__ == "__main__":
    main()
