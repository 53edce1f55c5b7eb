"""Tensor-shape search at an equal parameter budget (as LoRETTA Table 7).

LoRETTA_rep's ``d x b`` factor matrices are tensorized under several shapes of ``d`` (fewer,
larger modes to many small ones: ``tenpeft.factorize(d, target)`` for each target mode size);
every shape gets the largest TT rank whose count fits the budget of the default shape at TT
rank 5, so the comparison is at (nearly) equal parameters; the counts are recorded.

    python studies/shape_search.py --data-dir ../shared/data/glue
    python studies/shape_search.py --method loretta_adp --targets 2,4,8,16,32
"""
from __future__ import annotations

import tenpeft
from tenpeft.lab.plots import shape_search_figure
from tenpeft.lab.models import load_config, resolve_model
from tenpeft.lab.study import Variant, base_parser, conclude, csv_list, expand, run_all, script

BOTTLENECK = {"loretta_rep": 8, "loretta_adp": 64}
PAPER = {"train_size": 0, "test_size": 0, "max_steps": 2000, "eval_every": 100}


def candidate_shapes(d: int, targets: list[int]) -> list[tuple[int, ...]]:
    """Distinct factorizations of ``d`` near each target mode size, most modes first."""
    shapes = {tenpeft.factorize(d, t) for t in targets}
    return sorted(shapes, key=lambda s: (-len(s), s))


def variants(method: str, d: int, targets: list[int], rank: int) -> list[Variant]:
    b = BOTTLENECK[method]
    tt, b_shape = tenpeft.get_format("tt"), tenpeft.factorize(b)
    default = tenpeft.factorize(d) + tuple(reversed(b_shape))
    budget = tt.count(default, tt.resolve_rank(default, rank))
    out = []
    for shape in candidate_shapes(d, targets):
        shapes = {f"{d}x{b}": list(shape) + list(reversed(b_shape)), f"{b}x{d}": list(b_shape) + list(reversed(shape))}
        out.append(Variant(method, {"rank": {"budget": budget}, "shapes": shapes},
                           {"shape": "x".join(map(str, shape)), "budget": budget}))
    return out


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__)
    parser.add_argument("--method", default="loretta_rep", choices=sorted(BOTTLENECK))
    parser.add_argument("--targets", type=csv_list(int, "integer mode size"), default=[2, 4, 8, 16], help="target mode sizes")
    parser.add_argument("--budget-rank", type=int, default=5, help="TT rank of the default shape fixing the budget")
    args = parser.parse_args(argv)
    if args.paper:
        vars(args).update(PAPER)
    d = load_config(resolve_model(args.model)).hidden_size
    grid = variants(args.method, d, args.targets, args.budget_rank)
    records = run_all(expand("shape_search", args, grid), args)
    return conclude(records, ["task", "method", "axis_shape"], shape_search_figure, "shape_search", args.figures_dir)


if __name__ == "__main__":
    script(main)
