"""Overfitting curves (as LoRETTA Fig. 4): validation loss every N steps per method, smoothed
with a moving window, mean and a ±1 std band over seeds.

Default (about 15 minutes on 2 CPU cores): MiniLM on 200 SST-2 training examples (300
validation sentences), 300 steps (24 epochs), validation every 25 steps, LoRA, LoRETTA_rep,
LoRTA and full fine-tuning, seeds 0 and 1. Few examples and many epochs are what make methods
overfit; the question is whether fewer trainable parameters delay or damp the rise (LoRETTA's claim).

    python studies/overfitting.py --data-dir ../shared/data/glue
    python studies/overfitting.py --tasks rte --methods lora,loretta_adp,adapter,full --window 7
"""
from __future__ import annotations

from tenpeft.lab.plots import overfitting_figure
from tenpeft.lab.study import Variant, base_parser, conclude, csv_list, expand, run_all, script

PAPER = {"train_size": 1000, "test_size": 0, "max_steps": 3000, "eval_every": 100}


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, train_size=200, test_size=300, max_steps=300, eval_every=25)
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=["lora", "loretta_rep", "lorta", "full"])
    parser.add_argument("--window", type=int, default=5, help="moving-average window, in evaluations")
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    specs = expand("overfitting", args, [Variant(m) for m in args.methods], train_overrides={"eval_at_start": True})
    figure = lambda records: overfitting_figure(records, window=args.window)  # noqa: E731
    return conclude(run_all(specs, args), ["task", "method"], figure, "overfitting", args.figures_dir)


if __name__ == "__main__":
    script(main)
