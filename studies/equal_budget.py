"""Equal-budget comparison: every method at every parameter budget, score against realised parameters.

For each budget (trainable adapter parameters: the factors and shared factors, not the head) each
method's rank is set to the one whose count comes closest (``tenpeft.lab.budget.fit_rank``); a
method whose closest count is further than ``--tolerance`` times from a budget skips that budget
(printed). Every method trains with the same task head (dense), no norms, the same learning-rate
sweep and seeds; the figure is score against realised trainable parameters with the Pareto front.

Default: MiniLM, SST-2 with 1,000 training examples drawn by each seed, 200 steps, budgets 1K, 4K, 16K,
64K, seeds 0-4, the nine tensor methods below, each method and budget at its own grid of three rates on
seed 0 and at the rate chosen on its validation loss for seeds 1-4 (``--one-lr``: one default rate each);
methods are compared per budget with paired tests. Up to 36 configurations x 7 runs; a run took 25-27 s
on 2 CPU cores (docs/results.md times four methods at two budgets: 49 runs, 23 min).

    python studies/equal_budget.py --data-dir ../shared/data/glue
    python studies/equal_budget.py --budgets 2000,20000 --methods lora,lorta,fact_tt --lrs 1e-3,3e-3,1e-2
"""
from __future__ import annotations

import copy

from tenpeft.lab.budget import fit_rank
from tenpeft.lab.plots import frontier_figure
from tenpeft.lab.study import Variant, base_parser, conclude, csv_list, expand, run_all, script

METHODS = ["lora", "loretta_rep", "lorta", "lotr", "fact_tt", "fact_tk", "metatt", "tenslora", "krona"]
BUDGETS = [1000, 4000, 16000, 64000]
PAPER = {"train_size": 0, "test_size": 0, "max_steps": 2000, "eval_every": 100}
SAME_FOR_ALL = {"head": "dense", "train_norms": False}  # only the adapter differs between methods


def variants(model: str, methods: list[str], budgets: list[int], tolerance: float) -> list[Variant]:
    """One variant per (method, budget) that the method can come within ``tolerance`` of; prints
    the fitted rank and realised count of each, and what was skipped."""
    out = []
    print("\nbudget | method | rank | adapter parameters | ratio")
    for budget in budgets:
        for method in methods:
            fit = fit_rank(model, method, budget, SAME_FOR_ALL)
            kept = fit.ratio <= tolerance
            print(f"{budget:,} | {method} | {fit.rank} | {fit.count:,} | {fit.ratio:.2f}"
                  + ("" if kept else f" (skipped: beyond --tolerance {tolerance})"))
            if kept:
                out.append(Variant(method, {**SAME_FOR_ALL, "rank": fit.rank}, {"budget": budget, "rank": fit.rank}))
    return out


def figure(records: list[dict]):
    """The frontier of these runs (the common head/norm settings left out of the labels), unannotated."""
    shown = copy.deepcopy(records)
    for record in shown:
        record["config"]["method_args"] = {"rank": record["config"]["method_args"]["rank"]}
    return frontier_figure(shown, annotate=False)  # nine methods x four budgets: the table gives the ranks


def _tolerance(text: str) -> float:
    value = float(text)
    if not value >= 1.0:
        raise ValueError(text)
    return value


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, lr_grid=True)
    parser.add_argument("--methods", type=csv_list(str, "method name"), default=METHODS)
    parser.add_argument("--budgets", type=csv_list(int, "integer parameter budget"), default=BUDGETS)
    parser.add_argument("--tolerance", type=_tolerance, default=2.0,
                        help="largest factor between a method's closest count and a budget that still runs (>= 1)")
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    if any(b < 1 for b in args.budgets):
        parser.error(f"--budgets {args.budgets}: every budget must be a positive number of parameters")
    runs = variants(args.model, args.methods, args.budgets, args.tolerance)
    records = run_all(expand("equal_budget", args, runs), args)
    return conclude(records, ["task", "method", "axis_budget", "axis_rank"], figure, "equal_budget",
                    args.figures_dir, within=["task", "axis_budget"])


if __name__ == "__main__":
    script(main)
