"""Rank ablation (as LoRETTA Table 6): headline score vs rank for each method, over seeds.

Default (42 runs of about 18 s each on 2 CPU cores; the README gives the measured wall time): MiniLM,
SST-2 with 1,000 training examples drawn by each seed, 500 validation rows carved from train (checkpoint
and rate chosen there), the 872 official validation sentences as the test split; LoRA, LoRETTA_rep and
LoRTA at ranks 2 and 8, 120 steps, seeds 0-4. Each method and rank sweeps its own grid of three rates on
seed 0 and trains seeds 1-4 at the rate seed 0's validation loss chose (``--grid-seeds 0``: every seed at
every rate; ``--one-lr``: its default rate alone). Methods without a rank (full, bitfit, peft_ia3,
peft_prompt, ...) run once per seed and rate and appear as reference lines.

    python studies/rank_ablation.py --data-dir ../shared/data/glue
    python studies/rank_ablation.py --tasks sst2,mrpc,rte --methods lora,lorta,peft_lora,full --ranks 1,4,16
    python studies/rank_ablation.py --paper          # whole splits, 2,000 steps, ranks 2..16
"""
from __future__ import annotations

from tenpeft.lab.plots import rank_ablation_figure
from tenpeft.lab.study import base_parser, conclude, csv_list, expand, rank_variants, run_all, script

PAPER = {"train_size": 0, "test_size": 0, "max_steps": 2000, "eval_every": 100, "ranks": [2, 4, 8, 16]}


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, lr_grid=True, max_steps=120, eval_every=40)
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=["lora", "loretta_rep", "lorta"])
    parser.add_argument("--ranks", type=csv_list(int, "integer rank"), default=[2, 8])
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    records = run_all(expand("rank_ablation", args, rank_variants(args.methods, args.ranks)), args)
    return conclude(records, ["task", "method", "axis_rank"], rank_ablation_figure, "rank_ablation", args.figures_dir)


if __name__ == "__main__":
    script(main)
