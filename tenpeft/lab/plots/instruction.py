"""Instruction tuning against trainable parameters (LoRTA Fig. 2's shape): held-out completion
cross-entropy, lower is better, with the Pareto front of the lower-is-better score."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import pareto_front, runs_frame, summarize
from tenpeft.lab.plots.style import method_styles, panel_grid, shared_legend, styled


@styled
def instruction_figure(records: list[dict]) -> Figure:
    """Held-out completion cross-entropy at the best step (mean ± std over seeds) against trainable
    parameters (log x): one line per method over its ranks, the (lower-is-better) Pareto front dashed."""
    frame = runs_frame(records)
    points = summarize(frame, ["method", "label"]).merge(
        frame.groupby(["method", "label"])["trainable"].median().reset_index(), on=["method", "label"])
    styles = method_styles(frame["method"])
    fig, axes = panel_grid(1, ncols=1, size=(5.0, 3.8))
    ax = axes[0]
    for method, group in points.groupby("method", sort=True):
        group = group.sort_values("trainable")
        ax.errorbar(group["trainable"], group["mean"], yerr=group["std"], capsize=3, markersize=6, label=method,
                    **styles[method])
    front = pareto_front(points, x="trainable", y="mean", higher_is_better=False)
    ax.step(front["trainable"], front["mean"], where="post", color="0.2", lw=1.1, ls="--", alpha=0.8,
            label="Pareto front", zorder=1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="trainable parameters (log scale)", ylabel="held-out completion cross-entropy (nats/token)",
           title="lower is better")
    tasks = ", ".join(sorted(frame["task"].unique()))
    fig.suptitle(f"Instruction tuning on {tasks} vs trainable parameters\n{protocol(records)}")
    shared_legend(fig, axes, last=("Pareto front",))
    return fig
