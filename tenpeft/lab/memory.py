"""Peak memory of a stretch of work in this process: CUDA's allocator peak, or on Linux the resident-set
high-water mark reset at the start (shared by the efficiency study and ``benchmarks/``)."""
from __future__ import annotations

import torch


def status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the baseline RSS is what is really live."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory increase over a baseline taken at ``start()``.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory).
    CPU: the process's resident-set high-water mark. Linux lets a process reset its own high-water
    mark (``echo 5 > /proc/self/clear_refs``); after that, ``VmHWM`` in ``/proc/self/status`` is
    the peak RSS from ``start()`` on, and the increase is ``VmHWM - VmRSS(at start)``. Where the reset
    is refused, ``getrusage(RUSAGE_SELF).ru_maxrss`` (peak since process start) is used instead and
    the method is recorded as ``ru_maxrss`` (an upper bound that also covers the model build).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = None
        self.baseline_bytes = None

    def start(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated - memory_allocated at start"
            return
        malloc_trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at start"
            self.baseline_bytes = status_kb("VmRSS") * 1024
        except OSError:
            import resource

            self.method = "ru_maxrss - VmRSS at start (high-water mark could not be reset)"
            self.baseline_bytes = (status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def peak_increase(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.baseline_bytes
        if self.method.startswith("VmHWM"):
            return status_kb("VmHWM") * 1024 - self.baseline_bytes
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.baseline_bytes
