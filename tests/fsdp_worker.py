"""Three AdamW steps of a tenpeft adapter on a tiny LLaMA, then ``save_adapter`` into ``OUT``: plain (one
process, global batch 8) or under torchrun with 2 gloo processes, each decoder layer and the root
``fully_shard``-ed (FSDP2, batch 4 per rank). Under FSDP2 every rank also writes ``OUT/rank<R>.json``: the
checksums of its whole adapter tensors after training (they must agree across ranks).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp_worker.py OUT METHOD
"""
import json
import os
import sys

import torch
import torch.distributed as dist

import tenpeft
from models import tiny_model


def _batch(model, rank: int, world: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (8, 12), generator=gen)
    mine = ids.chunk(world)[rank]
    return {"input_ids": mine, "attention_mask": torch.ones_like(mine), "labels": mine}


def main(out: str, method: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    model = tenpeft.inject(tiny_model("llama"), method)
    torch.manual_seed(2)
    with torch.no_grad():  # a non-zero start, so every factor gets a gradient
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    rank = 0
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(model, rank, world)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    tenpeft.save_adapter(model, out, is_main_process=rank == 0)
    if world > 1:
        sums = {n: p.full_tensor().double().sum().item() for n, p in model.named_parameters() if p.requires_grad}
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(sums, f)
        dist.barrier()
        dist.destroy_process_group()
        # torch 2.13 + gloo on the CPU: after FSDP2, about one exit in three aborts in a C++ destructor
        # ("terminate called without an active exception") once everything is written; skip the teardown
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
