"""Preference optimisation against trainable parameters (LoRTA Fig. 4's shape)."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import runs_frame, summarize
from tenpeft.lab.plots.style import method_styles, panel_grid, shared_legend, styled

PANELS = (("dpo_loss", "test DPO loss (lower is better)"), ("reward_accuracy", "test reward accuracy"))


@styled
def preference_figure(records: list[dict]) -> Figure:
    """Test DPO loss and reward accuracy at the checkpoint chosen on validation (mean and 95% t-interval over
    seeds) against trainable parameters (log x): one line per method over its ranks, one panel per metric. A
    record from before the three splits has no test entry: its best step's metrics are drawn."""
    frame = runs_frame(records)
    tested = {r["run_id"]: (r.get("test") or r["best"])["metrics"] for r in records}
    for metric, _ in PANELS:
        frame[metric] = frame["run_id"].map(lambda run: tested[run][metric])
    styles = method_styles(frame["method"])
    fig, axes = panel_grid(len(PANELS), ncols=2, size=(5.0, 3.8))
    for ax, (metric, title) in zip(axes, PANELS):
        points = summarize(frame, ["method", "label"], value=metric).merge(
            frame.groupby(["method", "label"])["trainable"].median().reset_index(), on=["method", "label"])
        for method, group in points.groupby("method", sort=True):
            group = group.sort_values("trainable")
            ax.errorbar(group["trainable"], group["mean"], yerr=group["ci"].fillna(0.0), capsize=3, markersize=6,
                        label=method, **styles[method])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(title=title, xlabel="trainable parameters (log scale)", ylabel=metric.replace("_", " "))
    tasks = ", ".join(sorted(frame["task"].unique()))
    fig.suptitle(f"DPO on {tasks} vs trainable parameters\n{protocol(records)}")
    shared_legend(fig, axes)
    return fig
