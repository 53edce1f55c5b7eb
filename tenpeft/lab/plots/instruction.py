"""Instruction tuning against trainable parameters (LoRTA Fig. 2's shape): a panel per task with its
test score (completion cross-entropy, lower is better; a generation task's F1, higher is better)
and the Pareto front in the score's direction."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tenpeft.lab.plots.frontier import task_higher_is_better
from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import pareto_front, runs_frame, summarize
from tenpeft.lab.plots.style import method_styles, metric_label, panel_grid, shared_legend, styled

CE_LABEL = "test completion cross-entropy (nats/token)"


@styled
def instruction_figure(records: list[dict]) -> Figure:
    """Per task, the test score at the checkpoint chosen on validation (mean and 95% t-interval over seeds) against trainable parameters
    (log x): one line per method over its ranks, the Pareto front dashed."""
    frame = runs_frame(records)
    styles = method_styles(frame["method"])
    tasks = sorted(frame["task"].unique())
    fig, axes = panel_grid(len(tasks), ncols=min(len(tasks), 2), size=(5.0, 3.8))
    for ax, task in zip(axes, tasks):
        part = frame[frame["task"] == task]
        higher = task_higher_is_better(frame, task)
        points = summarize(part, ["method", "label"]).merge(
            part.groupby(["method", "label"])["trainable"].median().reset_index(), on=["method", "label"])
        for method, group in points.groupby("method", sort=True):
            group = group.sort_values("trainable")
            ax.errorbar(group["trainable"], group["mean"], yerr=group["ci"].fillna(0.0), capsize=3, markersize=6, label=method,
                        **styles[method])
        front = pareto_front(points, x="trainable", y="mean", higher_is_better=higher)
        ax.step(front["trainable"], front["mean"], where="post", color="0.2", lw=1.1, ls="--", alpha=0.8,
                label="Pareto front", zorder=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="trainable parameters (log scale)", ylabel=f"test {metric_label(frame, task)}" if higher
               else CE_LABEL, title=f"{task}: {'higher' if higher else 'lower'} is better")
    fig.suptitle(f"Instruction tuning on {', '.join(tasks)} vs trainable parameters\n{protocol(records)}")
    shared_legend(fig, axes, last=("Pareto front",))
    return fig
