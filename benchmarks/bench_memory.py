"""Peak memory of one method's train steps, each method in a fresh subprocess.

``measure_memory`` (in the benchmark process) starts ``train_step.py --memory-child NAME`` once per
method with the glibc settings of ``MALLOC_ENV``; that child runs ``memory_child``, which builds
the method, measures the peak increase of its train steps with ``common.PeakMemory`` and prints
one ``MEMORY_RESULT {json}`` line that the parent reads back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable

from bench_methods import SkipMethod
from common import DTYPES, PeakMemory, check_device, mib

# glibc: a fixed mmap threshold (no dynamic raise) and trim threshold 0, so a freed tensor goes back
# to the OS at once and RSS follows the live memory. With glibc's defaults, the peak of one and the
# same method varied by +-30 MiB from run to run (llama7b-slice); with these it repeats within 0.3 MiB.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
RESULT_PREFIX = "MEMORY_RESULT "


def memory_child(args, regime: dict, build_runner: Callable, compile_: str | bool = False) -> None:
    """Build one method (``args.memory_child``) in this fresh process with ``build_runner`` (that of
    ``train_step.py``; ``compile_``: False or the dynamo backend), then measure the peak memory increase of ``memory_steps`` train steps over
    the memory right after the build; print one JSON line."""
    device = check_device(args.device, args.dtype, args.compile)
    dtype = DTYPES[args.dtype]
    result = {"method": args.memory_child}
    try:
        runner = build_runner(args.memory_child, None, regime["family"], regime, device, dtype, compile_,
                              share=False)
        probe = PeakMemory(device)
        probe.start()
        for _ in range(args.memory_steps or regime["memory_steps"]):
            runner.step()
        how = probe.method
        if device.type == "cpu" and all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
            how += " (glibc " + ", ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + ")"
        result.update(peak_increase_bytes=probe.peak_increase(), baseline_bytes=probe.baseline_bytes, how=how)
    except SkipMethod as err:
        result["skipped"] = str(err)
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        result["skipped"] = f"{type(err).__name__}: {err}"
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_command(script: str, name: str, args) -> list[str]:
    """The command line of the memory subprocess of method ``name``."""
    cmd = [sys.executable, script, "--regime", args.regime, "--device", args.device,
           "--dtype", args.dtype, "--memory-child", name]
    if args.compile:
        cmd += ["--compile", "--compile-backend", args.compile_backend]
    if args.memory_steps:
        cmd += ["--memory-steps", str(args.memory_steps)]
    if args.tiny_model:
        cmd.append("--tiny-model")
    return cmd


def measure_memory(names, args, script: str) -> dict:
    """{method: the child's result} for each of ``names``; ``script`` is the absolute path of
    ``train_step.py``, whose ``--memory-child`` option runs ``memory_child``."""
    out = {}
    for name in names:
        proc = subprocess.run(child_command(script, name, args), capture_output=True, text=True,
                              env={**os.environ, **MALLOC_ENV})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if lines:
            out[name] = json.loads(lines[-1][len(RESULT_PREFIX):])
        else:
            out[name] = {"method": name, "skipped": f"memory subprocess failed (rc {proc.returncode}): "
                                                    f"{proc.stderr.strip().splitlines()[-1:]}"}
        print(f"  memory {name}: " + (mib(out[name].get("peak_increase_bytes")) + " MiB"
                                      if "peak_increase_bytes" in out[name] else out[name]["skipped"]), flush=True)
    return out
