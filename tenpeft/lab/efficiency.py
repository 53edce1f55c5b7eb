"""What one trained run costs (LoRETTA Table 5; PEFT's method_comparison columns), measured after its
training on the trained model with a learning rate of 0, so the run's weights and score are untouched.

One train step is forward + backward + ``AdamW.step`` + ``zero_grad(set_to_none=True)`` on one batch of the
run's training set, ``batch_size`` x its own lengths:

* ``flops_per_step``: ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward (matmuls,
  convolutions and attention kernels; elementwise work is not counted);
* ``step_s``: the median of ``STEPS`` timed steps after one warm-up step;
* ``peak_memory``: the peak over the warm-up and timed steps above the memory held before them (model,
  data), so AdamW's state, the gradients and the activations: CUDA's
  ``max_memory_allocated``; on the CPU the resident-set high-water mark reset first
  (``tenpeft.lab.memory.PeakMemory``), which is per process, so a packed run is not measured;
  ``weights_bytes`` are the model's parameter and buffer bytes held before (the base once);
* ``adapter_file_bytes``: the size of what saving the run keeps: ``tenpeft.save_adapter``'s files for
  a tenpeft model, else its trainable tensors as one safetensors file.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from tenpeft.lab.memory import PeakMemory

STEPS = 5


def _batch(train_set, collate, size: int, device) -> dict:
    return {k: v.to(device) for k, v in collate([train_set[i] for i in range(min(size, len(train_set)))]).items()}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adapter_file_bytes(model) -> tuple[int, str]:
    """``(bytes, how)``: the size of what saving ``model``'s run keeps (see the module)."""
    from safetensors.torch import save_file

    from tenpeft import save_adapter

    lm = getattr(model, "lm", model)  # a decoder's PromptClassifier holds the adapted LM
    with tempfile.TemporaryDirectory() as folder:
        if getattr(lm, "tenpeft_state", None) is not None:
            save_adapter(lm, folder)
            how = "tenpeft.save_adapter"
        else:
            tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(tensors, os.path.join(folder, "trainable.safetensors"))
            how = "trainable tensors, one safetensors file"
        return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)), how


def measure(model, task, train_set, collate, batch_size: int) -> dict:
    """The efficiency block of a record for ``model`` (trained, on its device); see the module."""
    from torch.utils.flop_counter import FlopCounterMode

    from tenpeft.lab.loop import batch_loss

    device = next(model.parameters()).device
    batch = _batch(train_set, collate, batch_size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # lr 0: the trained weights stay as they are
    was_training = model.training
    model.train()

    def backward() -> None:
        batch_loss(model, batch, task).backward()

    def step() -> None:
        backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        backward()
    optimizer.zero_grad(set_to_none=True)
    probe, times = PeakMemory(device), []
    probe.start()
    step()  # warm-up, untimed; AdamW's state is made here and counts in the peak, as in training
    for _ in range(STEPS):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = probe.peak_increase()
    model.train(was_training)
    file_bytes, how = adapter_file_bytes(model)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {"flops_per_step": int(counter.get_total_flops()), "step_s": statistics.median(times),
            "steps_timed": STEPS, "batch": {"size": len(batch["input_ids"]), "tokens": int(batch["input_ids"].numel())},
            "peak_memory_bytes": int(peak), "peak_memory_method": probe.method, "weights_bytes": int(weights),
            "adapter_file_bytes": int(file_bytes), "adapter_file": how, "device": device.type}
