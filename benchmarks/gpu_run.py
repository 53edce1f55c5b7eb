#!/usr/bin/env python
"""The two Python ends of ``benchmarks/gpu.sh``: the environment record of the run and its summary.

    python benchmarks/gpu_run.py env OUT [--require-cuda]     # OUT/env.json, OUT/nvidia-smi.txt
    python benchmarks/gpu_run.py summary OUT --dry-run 0|1 --steps NAME...   # OUT/summary.json

``summary`` reads the ``steps.tsv`` that gpu.sh appends one line to per step (name, rc, start, end,
budget, command), writes ``summary.json`` and exits 1 if a step failed or is missing."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SMI_QUERY = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]


def nvidia_smi(out: str) -> list[str] | None:
    """The GPUs as ``nvidia-smi`` lists them (name, driver, memory), its full output in nvidia-smi.txt;
    None where there is no nvidia-smi."""
    path = os.path.join(out, "nvidia-smi.txt")
    if shutil.which("nvidia-smi") is None:
        with open(path, "w") as f:
            f.write("nvidia-smi not found on this machine\n")
        return None
    with open(path, "w") as f:
        subprocess.run(["nvidia-smi"], stdout=f, stderr=subprocess.STDOUT, check=False)
    proc = subprocess.run(SMI_QUERY, capture_output=True, text=True, check=False)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def cuda_record() -> dict:
    import torch

    available = torch.cuda.is_available()
    record = {"cuda_available": available, "cuda_device_count": torch.cuda.device_count() if available else 0}
    if available:
        props = torch.cuda.get_device_properties(0)
        record.update(gpu_memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                      bf16_supported=torch.cuda.is_bf16_supported())
    return record


def write_env(out: str, require_cuda: bool) -> int:
    import torch

    from common import environment

    env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    env.update(cuda_record(), nvidia_smi=nvidia_smi(out))
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(env, f, indent=1)
    print(json.dumps({k: env[k] for k in ("gpu", "torch", "cuda", "cudnn", "cuda_available")}))
    if require_cuda and not env["cuda_available"]:
        print(f"torch.cuda.is_available() is False (torch {env['torch']}, built with CUDA {env['cuda']})")
        return 1
    return 0


def read_steps(out: str) -> list[dict]:
    """steps.tsv -> one dict per step; rc is an int, or None for a skipped step (``note`` says why)."""
    steps = []
    with open(os.path.join(out, "steps.tsv")) as f:
        for line in f:
            name, rc, start, end, budget, limit, command = line.rstrip("\n").split("\t")
            step = {"step": name, "command": command, "budget_s": int(budget), "limit_s": int(limit) if limit else None}
            if rc == "skipped":
                step.update(rc=None, seconds=None, note=f"skipped: {command}", command=None)
            else:
                step.update(rc=int(rc), seconds=round(float(end) - float(start), 2), timed_out=int(rc) in (124, 137))
            steps.append(step)
    return steps


def write_summary(out: str, dry_run: bool, expected: list[str]) -> int:
    steps = read_steps(out)
    ran = [s["step"] for s in steps]
    failed = [s["step"] for s in steps if s["rc"] not in (0, None)]
    summary = {"dry_run": dry_run, "steps": steps, "failed": failed,
               "missing": [name for name in expected if name not in ran],
               "seconds": round(sum(s["seconds"] or 0 for s in steps), 1),
               "budget_s": sum(s["budget_s"] for s in steps)}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for s in steps:
        print(f"{s['step']:20s} rc {s['rc'] if s['rc'] is not None else '-':>4}  "
              f"{s['seconds'] if s['seconds'] is not None else '-':>7} s / {s['budget_s']} s  {s.get('note', '')}")
    print(f"total {summary['seconds']} s; failed: {failed or 'none'}; missing: {summary['missing'] or 'none'}")
    return 1 if failed or summary["missing"] else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("env")
    e.add_argument("out")
    e.add_argument("--require-cuda", action="store_true", help="exit 1 where torch sees no CUDA device")
    s = sub.add_parser("summary")
    s.add_argument("out")
    s.add_argument("--dry-run", type=int, choices=(0, 1), required=True)
    s.add_argument("--steps", nargs="+", required=True, help="the steps gpu.sh runs, in order")
    args = p.parse_args(argv)
    if args.what == "env":
        return write_env(args.out, args.require_cuda)
    return write_summary(args.out, bool(args.dry_run), args.steps)


if __name__ == "__main__":
    sys.exit(main())
