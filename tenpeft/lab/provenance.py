"""Where a result came from: package versions, project commit, device, processes, time."""
from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("tenpeft", "torch", "transformers", "peft", "accelerate", "datasets", "tensorly", "opt-einsum", "numpy")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = PROJECT_ROOT) -> dict:
    """The project's commit and whether tracked files differ from it (None outside a checkout),
    read once per process, first when a study starts (``run_all`` calls it before any run), so a
    commit made while a study runs is not credited with its results."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def provenance(accelerator) -> dict:
    """Versions, commit, device and process layout of the current run."""
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"versions": versions(), **git_commit(), "device": str(device), "device_name": name,
            "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "host": platform.node(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

