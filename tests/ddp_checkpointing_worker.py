"""Three DDP steps (2 gloo ranks, different batches) of LoRTA on a tiny LLaMA with non-reentrant gradient
checkpointing; rank 0 prints the sum of the trainable parameters on each rank (they must agree).
``reentrant`` goes past tenpeft's refusal to show why it refuses: the two sums differ.

    PYTHONPATH=tests:. python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_checkpointing_worker.py [reentrant]
"""
import os
import sys

import torch
import torch.distributed as dist

import tenpeft
from models import tiny_model


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tenpeft.inject(tiny_model("llama"), "lorta")
    torch.manual_seed(2)
    with torch.no_grad():  # a non-zero start, so every factor gets a gradient
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.train()
    if sys.argv[1:] == ["reentrant"]:  # the class's own method: what tenpeft's guard refuses
        type(model).gradient_checkpointing_enable(model, {"use_reentrant": True})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1 + rank)
    for _ in range(3):
        ids = torch.randint(3, model.config.vocab_size, (4, 12), generator=gen)
        optimizer.zero_grad()
        ddp(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    total = torch.tensor([sum(p.double().sum() for p in model.parameters() if p.requires_grad).item()])
    sums = [torch.zeros_like(total) for _ in range(2)]
    dist.all_gather(sums, total)
    if rank == 0:
        print("SUMS", *[s.item() for s in sums], flush=True)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # see fsdp_worker.py: gloo may abort in a C++ destructor at exit


if __name__ == "__main__":
    main()
