"""The efficiency study's table and figure: per method the cost its records measured (``record["efficiency"]``,
``tenpeft.lab.efficiency``) beside its score, and score against training memory and against trainable
parameters with the Pareto fronts."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.frontier import task_higher_is_better, draw_front
from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import record_name, runs_frame
from tenpeft.lab.plots.style import metric_label, method_styles, panel_grid, shared_legend, styled

COSTS = {"peak_mib": ("peak_memory_bytes", 2**-20), "step_ms": ("step_s", 1e3),
         "gflops_per_step": ("flops_per_step", 1e-9), "adapter_kib": ("adapter_file_bytes", 2**-10)}
AXES = (("peak_mib", "training peak memory above the model (MiB, log scale)"),
        ("trainable", "trainable parameters (log scale)"))


def efficiency_table(records: list[dict]) -> pd.DataFrame:
    """Per (task, method, label): trainable parameters, score mean over seeds, and the median over seeds of
    peak memory (MiB), step time (ms), GFLOPs per step and adapter file size (KiB)."""
    frame = runs_frame(records)
    costs = []
    for i, record in enumerate(records):
        measured = record.get("efficiency")
        if not isinstance(measured, dict):
            raise TenpeftError(f"{record_name(record, i)} has no 'efficiency' block; run it with the efficiency study")
        costs.append({name: measured[key] * scale for name, (key, scale) in COSTS.items()})
    frame = pd.concat([frame.reset_index(drop=True), pd.DataFrame(costs)], axis=1)
    keys = ["task", "method", "label"]
    table = frame.groupby(keys, sort=True).agg(trainable=("trainable", "median"), score=("score", "mean"),
                                               seeds=("score", "count"), **{c: (c, "median") for c in COSTS})
    return table.reset_index()


@styled
def efficiency_figure(records: list[dict]) -> Figure:
    """Per task two panels: score (mean over seeds) against training peak memory and against trainable
    parameters, a colour and marker per method, each with its Pareto front (less is better on x)."""
    table = efficiency_table(records)
    frame = runs_frame(records)
    tasks = sorted(table["task"].unique())
    styles = method_styles(table["method"])
    fig, axes = panel_grid(2 * len(tasks), ncols=2, size=(5.0, 3.8))
    for k, task in enumerate(tasks):
        part = table[table["task"] == task]
        higher = task_higher_is_better(frame, task)
        for ax, (x, xlabel) in zip(axes[2 * k:2 * k + 2], AXES):
            for method, group in part.groupby("method", sort=True):
                ax.plot(group[x], group["score"], linestyle="none", markersize=6, label=method, **styles[method])
            draw_front(ax, part, x, "score", higher)
            ax.set_xscale("log")
            # under a decade the minor ticks carry the only labels, so they are written plainly (200, 300)
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.xaxis.set_minor_formatter(NullFormatter() if part[x].max() >= 10 * part[x].min() else plain)
            ax.set(title=task, xlabel=xlabel, ylabel=metric_label(frame, task))
    fig.suptitle(f"Score vs cost per method\n{protocol(records)}")
    shared_legend(fig, axes, last=("Pareto front",))
    return fig
