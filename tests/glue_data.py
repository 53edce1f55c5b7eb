"""Tiny GLUE-like folders for tests (a few dozen rows per split, written to a temp dir)."""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "good bad great awful film movie plot actor fine dull bright dark story day night".split()
EVAL_SPLIT = {"sst2": "validation", "mrpc": "test", "rte": "validation", "stsb": "validation"}


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def _row(task: str, rng: random.Random, i: int) -> dict:
    if task == "sst2":
        return {"sentence": _text(rng), "label": rng.randint(0, 1), "idx": i}
    label = round(rng.uniform(0, 5), 2) if task == "stsb" else rng.randint(0, 1)
    return {"sentence1": _text(rng), "sentence2": _text(rng), "label": label, "idx": i}


def write_glue(root: Path, tasks=("sst2", "mrpc", "rte"), rows: int = 24, seed: int = 0) -> Path:
    """``root/<task>/{train,<eval split>}.jsonl`` with ``rows`` random rows each."""
    rng = random.Random(seed)
    for task in tasks:
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", EVAL_SPLIT[task]):
            lines = [json.dumps(_row(task, rng, i)) for i in range(rows)]
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root
