"""Equal parameter budgets: the rank at which a method's adapter comes closest to a budget.

The adapter count is ``parameter_report(model).adapter`` (the ``factors`` and ``shared_factors``
components: not the task head, norms or biases), counted on the meta device: no weights, no compute."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

from tenpeft.errors import TenpeftError
from tenpeft.lab.adapt import rank_arg
from tenpeft.lab.models import load_config, resolve_model
from tenpeft.lab.run import adapt_on_meta
from tenpeft.report import parameter_report

MAX_RANK = 1024


@dataclass(frozen=True)
class BudgetFit:
    """``method`` at ``rank`` holds ``count`` adapter parameters, the closest it comes to ``budget``."""

    method: str
    budget: int
    rank: int
    count: int

    @property
    def ratio(self) -> float:
        """How far the count is from the budget, as a factor >= 1."""
        return max(self.count / self.budget, self.budget / self.count)


@lru_cache(maxsize=4096)
def _count(model: str, method: str, args_json: str) -> int:
    adapted = adapt_on_meta(load_config(resolve_model(model)), model, method, json.loads(args_json), 2)
    return parameter_report(adapted).adapter


def adapter_count(model: str, method: str, method_args: dict) -> int:
    """The adapter parameters ``method`` with ``method_args`` puts on ``model`` (meta device)."""
    return _count(model, method, json.dumps(method_args, sort_keys=True, default=str))


def _largest_within(count, budget: int) -> int:
    """The largest rank (1..MAX_RANK) whose count is <= ``budget`` (1 when even rank 1 exceeds it);
    counts grow with the rank, so a doubling search then bisection."""
    if count(1) > budget:
        return 1
    lo, hi = 1, 2
    while hi <= MAX_RANK and count(hi) <= budget:
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_RANK + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    return lo


def _smallest_with(count, rank: int) -> int:
    """The smallest rank with the same count as ``rank`` (a count that stops growing, e.g. a
    Kronecker factor once full, is reported at the rank where it stops)."""
    target, lo, hi = count(rank), 0, rank
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) == target else (mid, hi)
    return hi


def fit_rank(model: str, method: str, budget: int, method_args: dict | None = None) -> BudgetFit:
    """The rank of ``method`` whose adapter count is closest to ``budget`` (by ratio; the smaller
    rank on a tie), with ``method_args`` fixed; a TenpeftError for a method without a rank."""
    if rank_arg(method) != "rank":
        raise TenpeftError(f"{method} has no tenpeft rank to fit to a budget; compare tenpeft methods "
                           f"(those with a 'rank' hyperparameter)")
    if not isinstance(budget, int) or budget < 1:
        raise TenpeftError(f"a budget must be a positive int, got {budget!r}")
    args = dict(method_args or {})

    def count(rank: int) -> int:
        return adapter_count(model, method, {**args, "rank": rank})

    below = _largest_within(count, budget)
    candidates = {below} | ({below + 1} if below < MAX_RANK else set())
    best = min(sorted(candidates), key=lambda r: abs(math.log(count(r) / budget)))
    best = _smallest_with(count, best)
    return BudgetFit(method, budget, best, count(best))
