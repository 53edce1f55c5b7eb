"""One lab run under whatever launched this process (torchrun with N processes, or plain python):
the main process writes the run's history and its final trainable tensors next to ``OUT``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT GLUE METHOD BATCH
"""
import json
import sys

from accelerate import Accelerator
from safetensors.torch import save_file

from tenpeft.lab import run as run_module
from tenpeft.lab.runners import supervised
from tenpeft.lab.loop import TrainConfig
from tenpeft.lab.run import DataConfig, RunSpec


def main(out: str, glue: str, method: str, batch: int) -> None:
    captured = {}
    real = supervised.train

    def keep_model(model, *args, **kwargs):
        captured["model"] = model
        return real(model, *args, **kwargs)

    supervised.train = keep_model
    accelerator = Accelerator(cpu=True)
    train = TrainConfig(lr=1e-2, max_steps=6, batch_size=batch, eval_batch_size=8, eval_every=3, max_length=16)
    spec = RunSpec("ddp", "tiny-bert", "sst2", method, {"rank": 2}, seed=0, train=train,
                   data=DataConfig(train_size=48, validation_size=8, test_size=16, data_dir=glue))
    record = run_module.execute(spec, accelerator, progress=False)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(captured["model"])
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  f"{out}.safetensors")
        with open(f"{out}.json", "w") as handle:
            json.dump({"history": record["history"], "processes": accelerator.num_processes}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
