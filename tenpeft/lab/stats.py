"""The statistics every comparison of runs uses (scipy.stats): a 95% t-interval of a mean over seeds, a
paired test of two configurations on the seeds they share, Holm's correction across a table of tests, and a
paired bootstrap over test examples (records keep each run's test predictions).

A seed pairs two runs: the same seed draws the same training rows and the same initial state of what the
methods share, so the paired difference removes the seed's own effect."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from tenpeft.errors import TenpeftError

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
TESTS = ("t", "wilcoxon")


def t_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half the width of the ``confidence`` t-interval of the mean of ``values`` (NaN for fewer than 2)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * stats.sem(values))


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A against B on ``n`` shared seeds: the mean difference A - B, its 95%
    t-interval ``(low, high)`` and the two-sided p-value of ``test``."""

    n: int
    diff: float
    low: float
    high: float
    p: float
    test: str


def paired_test(a: dict, b: dict, test: str = "t") -> Paired:
    """Compare scores ``a`` and ``b`` (``{seed: score}``) on their shared seeds: a paired t-test, or
    ``"wilcoxon"`` (signed ranks; the interval stays the t-interval). Fewer than 2 shared seeds is a
    TenpeftError saying why."""
    if test not in TESTS:
        raise TenpeftError(f"paired test {test!r} is not one of {', '.join(TESTS)}")
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise TenpeftError(f"a paired test needs at least 2 seeds run by both configurations; they share "
                           f"{len(seeds)} ({seeds}); run more seeds (e.g. --seeds 0,1,2,3,4)")
    diff = np.array([a[s] - b[s] for s in seeds], dtype=float)
    half, mean = t_half_width(diff), float(diff.mean())
    if not diff.any():
        p = 1.0
    elif test == "t":
        p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    else:
        p = float(stats.wilcoxon(diff).pvalue)
    return Paired(len(seeds), mean, mean - half, mean + half, 1.0 if math.isnan(p) else p, test)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the table), in the given order."""
    order = np.argsort(pvalues)
    adjusted, running, m = [0.0] * len(pvalues), 0.0, len(pvalues)
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def paired_bootstrap(pred_a: Sequence, pred_b: Sequence, gold: Sequence, score: Callable, *, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``score(pred_a, gold) - score(pred_b, gold)`` and its 95% percentile
    interval over ``resamples`` resamplings of the test examples (the same resample for both runs)."""
    pred_a, pred_b, gold = (np.asarray(x) for x in (pred_a, pred_b, gold))
    if not len(pred_a) == len(pred_b) == len(gold) or not len(gold):
        raise TenpeftError(f"a paired bootstrap needs predictions of both runs on the same test examples; got "
                           f"{len(pred_a)}, {len(pred_b)} predictions for {len(gold)} examples")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        index = rng.integers(0, len(gold), len(gold))
        draws.append(score(pred_a[index], gold[index]) - score(pred_b[index], gold[index]))
    low, high = np.percentile(draws, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(score(pred_a, gold) - score(pred_b, gold)), float(low), float(high)


def compare(frame, by: Sequence[str], between: str = "method", test: str = "t"):
    """Every pair of ``between`` values (A before B in sorted order) within each group of the other columns of
    ``by``, tested on their shared seeds (:func:`paired_test` on ``frame``'s ``seed`` and ``score``), Holm-adjusted
    across the whole table: a DataFrame of the group's columns, ``a``, ``b``, ``seeds``, ``diff`` (A - B),
    ``low``, ``high``, ``p``, ``p_holm`` and ``significant`` (``p_holm`` < ``ALPHA``). Pairs sharing fewer than
    2 seeds are left out; a TenpeftError says so when none has 2."""
    import itertools

    import pandas as pd

    keys = [c for c in by if c != between]
    rows, pairs = [], 0
    for group, part in (frame.groupby(keys, dropna=False, sort=True) if keys else [((), frame)]):
        group = group if isinstance(group, tuple) else (group,)
        scores = {v: dict(zip(g["seed"], g["score"])) for v, g in part.dropna(subset=["score"]).groupby(between)}
        for a, b in itertools.combinations(sorted(scores, key=str), 2):
            pairs += 1
            if len(set(scores[a]) & set(scores[b])) >= 2:
                result = paired_test(scores[a], scores[b], test)
                rows.append({**dict(zip(keys, group)), "a": a, "b": b, "seeds": result.n, "diff": result.diff,
                             "low": result.low, "high": result.high, "p": result.p})
    if not pairs:
        raise TenpeftError(f"nothing to compare: each group of {keys or 'the runs'} holds one {between} value")
    if not rows:
        raise TenpeftError(f"no two configurations share 2 seeds, so no paired test can be made (one seed, or "
                           f"seeds that differ); run every configuration with the same seeds, e.g. --seeds 0,1,2,3,4")
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(list(out["p"]))
    out["significant"] = out["p_holm"] < ALPHA
    return out


__all__ = ["ALPHA", "CONFIDENCE", "Paired", "compare", "holm", "paired_bootstrap", "paired_test", "t_half_width"]
