"""Helpers shared by the benchmark scripts: environment description, robust statistics, device
guards; the peak-memory probe is the lab's (``tenpeft.lab.memory.PeakMemory``, re-exported here)."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from typing import Sequence

import torch

from tenpeft.lab.memory import PeakMemory  # noqa: F401  (the benchmarks measure memory as the efficiency study does)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def check_device(device: str, dtype: str, compile_: bool) -> torch.device:
    """``torch.device`` for ``--device``; a clear SystemExit where the machine cannot run it."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine (torch "
                             f"{torch.__version__}); run on a CUDA machine with a CUDA build of torch, or use --device cpu")
        if dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise SystemExit("--dtype bf16: this GPU does not support bfloat16; use --dtype fp32")
    elif device != "cpu":
        raise SystemExit(f"--device must be cpu or cuda, got {device!r}")
    if compile_ and not hasattr(torch, "compile"):
        raise SystemExit(f"--compile needs torch >= 2.0 (this is {torch.__version__})")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Machine and versions, for the report header and the JSON."""
    import transformers
    import peft

    try:
        import loretta  # noqa: F401
        from importlib.metadata import version

        loretta_version = version("loretta")
    except Exception:  # noqa: BLE001 - optional dependency
        loretta_version = None
    try:
        import tenpeft

        tenpeft_version = tenpeft.__version__
    except Exception:  # noqa: BLE001
        tenpeft_version = None
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "loretta": loretta_version,
        "tenpeft": tenpeft_version,
        "git": _git_state(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda,  # the CUDA version torch was built with (None: a CPU build)
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "loadavg_start": _loadavg(),
    }
    return env


def _git_state():
    """Commit of the repository holding this script and whether ``tenpeft/`` differs from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tenpeft"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return {"commit": commit, "tenpeft_modified": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return None


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def loadavg():
    return _loadavg()


def quantiles(samples: Sequence[float]) -> dict:
    """Median and interquartile range (inclusive quartiles) of ``samples``."""
    xs = sorted(samples)
    if len(xs) == 1:
        return {"median": xs[0], "q1": xs[0], "q3": xs[0], "n": 1}
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "n": len(xs)}


def time_call(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of ``fn``."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


# ----- memory -----------------------------------------------------------------------------------
def mib(n_bytes: float | None) -> str:
    return "–" if n_bytes is None else f"{n_bytes / 2**20:,.0f}"
