#!/usr/bin/env python
"""Where a method's train step spends its time: torch.profiler op table (self CPU time) and a
cProfile of the Python side, for one or more methods of ``train_step.py``.

    python benchmarks/profile_step.py --regime throughput --methods peft_lora,lorta
    python benchmarks/profile_step.py --regime latency --methods peft_lora,loretta_rep --cprofile

The methods are built exactly as in ``train_step.py`` (same base, same inputs)."""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DTYPES, check_device  # noqa: E402
from bench_methods import make_base  # noqa: E402
from train_step import REGIMES, build_runner  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", choices=sorted(REGIMES), default="throughput")
    p.add_argument("--methods", default="peft_lora,lorta")
    p.add_argument("--steps", type=int, default=3, help="profiled steps per method (after 2 warm-up steps)")
    p.add_argument("--rows", type=int, default=18)
    p.add_argument("--shapes", action="store_true", help="group the op table by input shapes")
    p.add_argument("--cprofile", action="store_true", help="also a cProfile of the Python side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = p.parse_args(argv)
    device = check_device(args.device, args.dtype, False)
    regime = REGIMES[args.regime]
    base = make_base(regime["family"], DTYPES[args.dtype], device)
    for name in args.methods.split(","):
        runner = build_runner(name, base, regime["family"], regime, device, DTYPES[args.dtype], False)
        for _ in range(2):
            runner.step()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities, record_shapes=args.shapes) as prof:
            for _ in range(args.steps):
                runner.step()
        table = prof.key_averages(group_by_input_shape=args.shapes)
        total = sum(e.self_cpu_time_total for e in table) / args.steps / 1e3
        print(f"\n=== {name} ({args.regime}): self CPU time per step {total:.1f} ms over {args.steps} steps; "
              f"op calls per step {sum(e.count for e in table) // args.steps}")
        print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40,
                          max_shapes_column_width=80))
        if args.cprofile:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(args.steps):
                runner.step()
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue()[:6000])
        del runner


if __name__ == "__main__":
    main()
