"""Packed runs against sequential and parallel runs: K lab runs of one model, three ways.

- sequential: one process trains the K runs one after another (the lab's default loop);
- parallel: K processes at once, one run each, ``cores // K`` torch threads each (``--workers K``);
- packed: one process trains the K runs as one pack (``--pack K``, ``tenpeft.lab.packed``).

Each way runs in fresh processes and is timed from launch to exit (imports and model loading
included, as a user sees them). Peak memory: the process's peak RSS (``ru_maxrss``) on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA (the CUDA context is not in it); for parallel, the sum
of the K processes' peaks, an upper bound of what they held at once. The runs alternate methods
(lorta, lora, loretta_adp, vera) and seeds over a pretrained MiniLM, so the packed ones share the
whole frozen base; the data is a synthetic SST-2-like set (timing does not depend on the words).
It also checks that every packed record equals its sequential twin (``equal`` in the output).

    python benchmarks/packed_runs.py --k 2,4,8 --json benchmarks/measured/packed.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = [("lorta", {"rank": 8}), ("lora", {"rank": 8}), ("loretta_adp", {}), ("vera", {"rank": 64})]
WORDS = "good bad great awful film movie plot actor fine dull bright dark story day night long short".split()
COMPARED = ("status", "params", "history", "best", "score")


def write_data(root: Path, rows: int, seed: int = 0) -> Path:
    """A synthetic ``sst2`` folder: ``2 * rows`` train rows (``rows`` of them carved as validation) and
    ``rows`` validation rows (the lab's test split), each text numbered so no two splits share one."""
    rng = random.Random(seed)
    (root / "sst2").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 2 * rows), ("validation", rows)):
        lines = [json.dumps({"sentence": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + f" {split}{i}",
                             "label": rng.randint(0, 1), "idx": i}) for i in range(count)]
        (root / "sst2" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def specs(k: int, settings: dict) -> list:
    from tenpeft.lab.loop import TrainConfig
    from tenpeft.lab.run import DataConfig, RunSpec

    train = TrainConfig(max_steps=settings["steps"], batch_size=settings["batch"], eval_every=settings["steps"],
                        eval_batch_size=64, max_length=settings["seq"])
    data = DataConfig(train_size=settings["rows"], validation_size=settings["rows"], test_size=settings["rows"],
                      data_dir=settings["data_dir"])
    picks = [METHODS[i % len(METHODS)] for i in range(k)]
    return [RunSpec("packed-bench", settings["model"], "sst2", method, args, seed=i, train=train, data=data)
            for i, (method, args) in enumerate(picks)]


def child(mode: str, k: int, index: int, settings: dict, out: str) -> None:
    """One process of a mode: train its runs, write their records' compared fields and its peak memory."""
    import torch
    from accelerate import Accelerator

    from tenpeft.lab.packed import execute_packed
    from tenpeft.lab.run import execute

    accelerator = Accelerator(cpu=settings["device"] == "cpu")
    runs = specs(k, settings)
    if mode == "packed":
        records = execute_packed(runs, accelerator, progress=False)
    else:
        mine = runs if mode == "sequential" else [runs[index]]
        records = [execute(spec, accelerator, progress=False) for spec in mine]
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    result = {"records": [{key: r[key] for key in COMPARED} for r in records],
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cuda_peak_bytes": cuda}
    Path(out).write_text(json.dumps(result))


def launch(mode: str, k: int, settings: dict, folder: Path) -> dict:
    """Run ``mode`` for ``k`` runs in fresh processes; wall time, peak memory and the records."""
    count = k if mode == "parallel" else 1
    threads = max(1, (os.cpu_count() or 1) // count)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TENPEFT_BENCH_THREADS": str(threads)}
    outs = [folder / f"{mode}-{k}-{i}.json" for i in range(count)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", mode, "--k", str(k), "--index", str(i),
                               "--settings", json.dumps(settings), "--out", str(out)], env=env)
             for i, out in enumerate(outs)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"{mode} K={k}: a process exited with {codes}")
    parts = [json.loads(out.read_text()) for out in outs]
    peak = "cuda_peak_bytes" if settings["device"] == "cuda" else "peak_rss_bytes"
    return {"wall_s": wall, "peak_bytes": sum(p[peak] for p in parts), "threads": threads,
            "records": [r for p in parts for r in p["records"]]}


def measure(ks: list[int], settings: dict) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            got = {mode: launch(mode, k, settings, Path(tmp)) for mode in ("sequential", "parallel", "packed")}
            seq = got["sequential"]
            row = {"k": k, "equal": got["packed"]["records"] == seq["records"]}
            for mode, r in got.items():
                row[f"{mode}_wall_s"] = r["wall_s"]
                row[f"{mode}_peak_mib"] = r["peak_bytes"] / 2**20
            row["packed_vs_sequential_wall"] = got["packed"]["wall_s"] / seq["wall_s"]
            row["packed_vs_parallel_wall"] = got["packed"]["wall_s"] / got["parallel"]["wall_s"]
            row["packed_vs_parallel_peak"] = got["packed"]["peak_bytes"] / got["parallel"]["peak_bytes"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", default="2,4,8", help="comma-separated pack sizes")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="minilm", help="a lab model alias (minilm: the offline pretrained MiniLM)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64, help="max length (tokens)")
    p.add_argument("--rows", type=int, default=256, help="train, validation and test rows")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny-bert, 2 steps, one K (the first, at most 2): checks the code path")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        if os.environ.get("TENPEFT_BENCH_THREADS"):
            import torch
            torch.set_num_threads(int(os.environ["TENPEFT_BENCH_THREADS"]))
        return child(args.child, int(args.k), args.index, json.loads(args.settings), args.out)
    import torch
    from common import check_device, environment

    device = check_device(args.device, "fp32", False)
    ks = [int(k) for k in args.k.split(",")]
    ks = [min(ks[0], 2)] if args.dry_run else ks  # four process launches in three waves: about 40 s here
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"device": args.device, "model": "tiny-bert" if args.dry_run else args.model,
                    "steps": 2 if args.dry_run else args.steps, "batch": 4 if args.dry_run else args.batch,
                    "seq": 16 if args.dry_run else args.seq, "rows": 16 if args.dry_run else args.rows,
                    "data_dir": str(write_data(Path(tmp), 16 if args.dry_run else args.rows))}
        rows = measure(ks, settings)
    result = {"environment": environment(device), "dry_run": args.dry_run,
              "torch_threads_main": torch.get_num_threads(),
              "settings": {k: v for k, v in settings.items() if k != "data_dir"}, "methods": [m for m, _ in METHODS],
              "peak_memory": "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS (ru_maxrss)",
              "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not all(r["equal"] for r in rows):
        raise SystemExit("a packed record differs from its sequential twin: see the rows above")


if __name__ == "__main__":
    main()
