"""Score vs trainable parameters across methods, with the Pareto front per task."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import pareto_front, runs_frame, summarize
from tenpeft.lab.plots.style import metric_label, method_styles, panel_grid, shared_legend, styled
from tenpeft.lab.stats import ALPHA, holm, paired_test


FRONT = "front (not significantly dominated)"


def frontier_points(records: list[dict]) -> pd.DataFrame:
    """Per (task, method, label): score mean/std/ci/count over seeds and the median trainable count."""
    frame = runs_frame(records)
    keys = ["task", "method", "label"]
    params = frame.groupby(keys, sort=True)["trainable"].median().reset_index()
    points = summarize(frame, keys).merge(params, on=keys).dropna(subset=["mean"])
    if points.empty:
        raise TenpeftError("no run has a score value (all null); the frontier needs scored runs")
    return points


def task_higher_is_better(frame: pd.DataFrame, task: str) -> bool:
    """Whether ``task``'s score is better higher; a TenpeftError if its runs disagree."""
    values = set(frame.loc[frame["task"] == task, "higher_is_better"])
    if len(values) > 1:
        raise TenpeftError(f"the runs of {task} mix higher- and lower-is-better scores; plot them apart")
    return values.pop()


def significant_front(runs: pd.DataFrame, points: pd.DataFrame, higher_is_better: bool, key: str = "label") -> pd.DataFrame:
    """The ``points`` (one per ``key``, with ``trainable`` and ``mean``) that no other point dominates
    significantly, sorted by ``trainable``. A point is dominated only by one with no more trainable parameters,
    a better mean and a paired difference on their shared seeds (``runs``: ``key``, ``seed``, ``score``) that
    is significant: paired t-test, Holm-corrected across the candidate pairs of these points. Pairs with
    fewer than 2 shared seeds cannot be significant."""
    sign = 1.0 if higher_is_better else -1.0
    scores = {k: dict(zip(g["seed"], g["score"])) for k, g in runs.dropna(subset=["score"]).groupby(key)}
    candidates = []
    for p in points.itertuples(index=False):
        for q in points.itertuples(index=False):
            a, b = getattr(q, key), getattr(p, key)
            if a != b and q.trainable <= p.trainable and sign * (q.mean - p.mean) > 0 \
                    and len(set(scores.get(a, {})) & set(scores.get(b, {}))) >= 2:
                candidates.append((b, paired_test(scores[a], scores[b]).p))
    adjusted = holm([p for _, p in candidates]) if candidates else []
    dominated = {b for (b, _), p in zip(candidates, adjusted) if p < ALPHA}
    return points[~points[key].isin(dominated)].sort_values("trainable", kind="stable")


def draw_front(ax, points: pd.DataFrame, x: str, y: str, higher_is_better: bool, front: pd.DataFrame | None = None,
               label: str = "Pareto front") -> None:
    """A front of ``points`` (default: their Pareto front by means; fewer ``x`` is better) as a dashed line
    through ringed points."""
    front = pareto_front(points, x=x, y=y, higher_is_better=higher_is_better) if front is None else front
    ax.step(front[x], front[y], where="post", color="0.2", lw=1.1, ls="--", alpha=0.8, marker="o", markersize=11,
            markerfacecolor="none", markeredgewidth=1.0, label=label, zorder=1)  # rings: a one-point front shows


def _annotate(ax, group, method: str) -> None:
    """Each point's distinguishing args (e.g. ``r=4``), alternately below and above it, so labels
    of neighbouring points do not overlap."""
    for i, row in enumerate(group.sort_values("trainable").itertuples(index=False)):
        suffix = row.label[len(method):].strip()
        if suffix:
            ax.annotate(suffix, (row.trainable, row.mean), xytext=(4, -10 if i % 2 == 0 else 5),
                        textcoords="offset points", fontsize=6.5, color="0.3")


@styled
def frontier_figure(records: list[dict], annotate: bool = True) -> Figure:
    """Test score (mean and 95% t-interval over seeds) vs trainable parameters (log x): a point per
    (method, label), a colour and marker per method, and the front of the points no other point dominates
    significantly (``significant_front``) as a dashed line; a panel per task. ``annotate`` writes each label's
    distinguishing args (e.g. ``r=4``) next to its point."""
    frame = runs_frame(records)
    points = frontier_points(records)
    tasks = sorted(points["task"].unique())
    styles = method_styles(points["method"])
    fig, axes = panel_grid(len(tasks), size=(5.0, 3.8))
    for ax, task in zip(axes, tasks):
        part = points[points["task"] == task]
        for method, group in part.groupby("method", sort=True):
            ax.errorbar(group["trainable"], group["mean"], yerr=group["ci"].fillna(0.0), linestyle="none", capsize=3,
                        markersize=6, label=method, **styles[method])
            if annotate:
                _annotate(ax, group, method)
        higher = task_higher_is_better(frame, task)
        front = significant_front(frame[frame["task"] == task], part, higher)
        draw_front(ax, part, "trainable", "mean", higher, front, label=FRONT)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: no overlapping ticks
        ax.set(title=task, xlabel="trainable parameters (log scale)",
               ylabel=f"{metric_label(frame, task)} (mean, 95% CI)")
    counts = points["count"]
    seeds = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
    fig.suptitle(f"Score vs trainable parameters ({seeds} seeds per point)\n{protocol(records)}")
    shared_legend(fig, axes, last=(FRONT,))
    return fig
