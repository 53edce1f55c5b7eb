"""Forgetting under sequential training (as LoRETTA Table 4): one adapter trained on SST-2, then
MRPC, then RTE; after each stage every task's score on its evaluation split.

Default (about 15 minutes on 2 CPU cores): MiniLM, 500 training examples and 100 steps per
stage, 200 evaluation examples per task, LoRA, LoRETTA_rep, LoRTA and full fine-tuning, seeds 0
and 1. The adapter is shared by the chain; an encoder gets one classification head per task
(each starts from the same initial head and is trained in its own stage; each task is scored with
its own head), as a decoder has its own label words per task, so forgetting measures what the
shared adapter lost rather than a head re-mapped to another task's labels. Forgetting of a task =
its score right after its own stage minus its score at the end.

    python studies/forgetting.py --data-dir ../shared/data/glue
    python studies/forgetting.py --chain sst2,rte --methods lora,loretta_adp
"""
from __future__ import annotations

from tenpeft.lab.plots import figure_name, forgetting_figure, forgetting_rows, save_figure
from tenpeft.lab.study import Variant, base_parser, best_lr_only, csv_list, expand, main_process, run_all, script, task_list

PAPER = {"train_size": 0, "test_size": 0, "max_steps": 1000, "eval_every": 100}


def print_forgetting(rows: list[dict]) -> None:
    print(f"{'method':<14}{'task':<7}{'after own stage':>17}{'at end':>9}{'forgetting':>12}  (mean over seeds)")
    keys = sorted({(r["method"], r["task"]) for r in rows})
    for method, task in keys:
        sel = [r for r in rows if (r["method"], r["task"]) == (method, task)]
        mean = {k: sum(r[k] for r in sel) / len(sel) for k in ("after_own_stage", "at_end", "forgetting")}
        print(f"{method:<14}{task:<7}{mean['after_own_stage']:>17.4f}{mean['at_end']:>9.4f}{mean['forgetting']:>12.4f}")


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, train_size=500, test_size=200, max_steps=100, eval_every=50)
    parser.add_argument("--chain", type=task_list, default=["sst2", "mrpc", "rte"], help="tasks in training order")
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=["lora", "loretta_rep", "lorta", "full"])
    args = parser.parse_args(argv)
    if len(args.chain) < 2:
        parser.error(f"--chain {','.join(args.chain)}: forgetting needs at least two tasks in order, e.g. sst2,mrpc")
    if args.paper:
        vars(args).update(PAPER)
    specs = expand("forgetting", args, [Variant(m) for m in args.methods], task_chains=[">".join(args.chain)])
    records = best_lr_only(run_all(specs, args))
    if not main_process():
        return records
    if not records:
        print("every run diverged: no table or figure; try smaller learning rates (--lrs)")
        return []
    print_forgetting(forgetting_rows(records))
    for path in save_figure(forgetting_figure(records), args.figures_dir, figure_name("forgetting", records)):
        print(f"wrote {path}")
    return records


if __name__ == "__main__":
    script(main)
