"""Step time of a trl SFT run on a tenpeft LoRA policy (the lab's ``sft.py`` path) with and without
gradient checkpointing (trl's configs turn it on by default), against a plain forward + backward + AdamW step
of the same model on the same batches.

    python benchmarks/sft_step.py                        # the lab's tiny-llama, batch 8 x 96 tokens
    python benchmarks/sft_step.py --model smollm2 --steps 8

Packing and padding-free batching stay off in every variant (as in ``sft.py``). Prints the median step
time of each variant (the first ``--warmup`` steps dropped) and its ratio to the plain step.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _rows(n: int):
    import datasets

    return datasets.Dataset.from_list([{"prompt": f"Question {i}: what colour is the sky on day {i}? Answer:",
                                        "completion": f" it is blue, as on every day, number {i}."} for i in range(n)])


def _spec(model: str, steps: int, batch: int, length: int):
    from tenpeft.lab.loop import TrainConfig
    from tenpeft.lab.run import RunSpec

    return RunSpec("bench", model, "local:none", "lora", {"rank": 4},
                   train=TrainConfig(max_steps=steps, batch_size=batch, eval_every=steps, max_length=length))


def trl_steps(spec, checkpointing: bool) -> list[float]:
    """Seconds per optimizer step of trl's SFTTrainer (``gradient_checkpointing`` as given)."""
    import trl
    from transformers import TrainerCallback

    from tenpeft.lab.models import resolve_model
    from tenpeft.lab.runners.trl import adapted_policy, tokenizer_for, trl_arguments

    source = resolve_model(spec.model)
    tokenizer, (model, _) = tokenizer_for(source), adapted_policy(spec, source)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as scratch:
        kwargs = {**trl_arguments(spec, scratch, False), "gradient_checkpointing": checkpointing}
        config = trl.SFTConfig(**kwargs, completion_only_loss=True, packing=False, padding_free=False, eval_strategy="no")
        trainer = trl.SFTTrainer(model=model, args=config, train_dataset=_rows(spec.train.max_steps * spec.train.batch_size),
                                 processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
    return times


def plain_steps(spec) -> list[float]:
    """Seconds per step of a plain forward + backward + AdamW step on trl's batches of the same rows."""
    import torch
    import trl

    from tenpeft.lab.models import resolve_model
    from tenpeft.lab.runners.trl import adapted_policy, tokenizer_for, trl_arguments

    source = resolve_model(spec.model)
    tokenizer, (model, _) = tokenizer_for(source), adapted_policy(spec, source)
    with tempfile.TemporaryDirectory() as scratch:
        config = trl.SFTConfig(**trl_arguments(spec, scratch, False), completion_only_loss=True, eval_strategy="no")
        trainer = trl.SFTTrainer(model=model, args=config, train_dataset=_rows(spec.train.max_steps * spec.train.batch_size),
                                 processing_class=tokenizer)
        batches = list(trainer.get_train_dataloader())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.train.lr)
    model.train()
    times = []
    for batch in batches[:spec.train.max_steps]:
        start = time.perf_counter()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=96)
    args = parser.parse_args(argv)
    import torch
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    spec = _spec(args.model, args.steps, args.batch_size, args.max_length)
    medians = {name: statistics.median(run()[args.warmup:]) for name, run in (
        ("plain forward+backward", lambda: plain_steps(spec)),
        ("trl SFT, gradient checkpointing off", lambda: trl_steps(spec, False)),
        ("trl SFT, gradient checkpointing on", lambda: trl_steps(spec, True)))}
    plain = medians["plain forward+backward"]
    print(f"{args.model}, lora r=4, batch {args.batch_size} x <= {args.max_length} tokens, {torch.get_num_threads()} threads, "
          f"median of steps {args.warmup + 1}-{args.steps}")
    for name, seconds in medians.items():
        print(f"{name:38s} {1000 * seconds:8.1f} ms/step  x{seconds / plain:.2f}")
    return medians


if __name__ == "__main__":
    main()
