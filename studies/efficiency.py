"""Efficiency (LoRETTA Table 5; PEFT's method_comparison columns): per method its score beside what it costs.

Every run trains as in the other studies; then, with a learning rate of 0 so its weights and score stay as
they are, its record gets an ``efficiency`` block (``tenpeft.lab.efficiency``): peak training memory above
the model (GPU: ``torch.cuda.max_memory_allocated``; CPU: the resident-set high-water mark, reset first),
the median time of a train step, FLOPs per step (``torch.utils.flop_counter``), trainable parameters and
the size of the saved adapter. The table prints them; the figure is score against memory and against
parameters, with the Pareto fronts. Runs are measured one per process (``--pack`` trains them alone).

Default (about 15 minutes on 2 CPU cores): MiniLM, SST-2 with 1,000 training examples, 150 steps,
one seed, the methods below at their defaults and 3e-3 (full fine-tuning at 5e-5).

    python studies/efficiency.py --data-dir ../shared/data/glue
    python studies/efficiency.py --methods lora,lorta --model smollm2 --tasks rte --data-dir ../shared/data/glue
    python studies/efficiency.py --paper --model meta-llama/Llama-2-7b-hf --mixed-precision bf16   # a GPU

``--paper`` is GPU scale (whole splits, 1,000 steps), not the paper's protocol: LoRETTA's Table 5 gives
memory and FLOPs of LLaMA-2 fine-tuning, which this study measures per method on the model you name.
"""
from __future__ import annotations

import dataclasses

from tenpeft.lab.plots.efficiency import efficiency_figure, efficiency_table
from tenpeft.lab.study import base_parser, conclude, csv_list, expand, main_process, run_all, script, Variant

METHODS = ["peft_lora", "lora", "vera", "loretta_rep", "loretta_adp", "lorta", "adapter", "full"]
PAPER = {"train_size": 0, "test_size": 0, "max_steps": 1000, "eval_every": 100, "batch_size": 16, "max_length": 128}


def print_table(records: list[dict]) -> None:
    """The efficiency table, one row per method, in Markdown."""
    table = efficiency_table(records)
    print("\n| task | method | trainable | score | peak MiB | step ms | GFLOPs/step | adapter KiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in table.itertuples(index=False):
        print(f"| {r.task} | {r.label} | {int(r.trainable):,} | {r.score:.4f} | {r.peak_mib:,.0f} | {r.step_ms:,.0f} | "
              f"{r.gflops_per_step:.3g} | {r.adapter_kib:,.1f} |")


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, seeds="0", max_steps=150)
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=METHODS)
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    specs = [dataclasses.replace(s, efficiency=True) for s in
             expand("efficiency", args, [Variant(m) for m in args.methods])]
    records = conclude(run_all(specs, args), ["task", "method"], efficiency_figure, "efficiency", args.figures_dir)
    if records and main_process():
        print_table(records)
    return records


if __name__ == "__main__":
    script(main)
