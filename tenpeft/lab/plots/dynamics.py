"""Training dynamics: validation-loss curves (overfitting) and sequential-task forgetting heatmaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.labels import protocol
from tenpeft.lab.plots.records import record_name, check_records, history_frame, runs_frame
from tenpeft.lab.plots.style import method_styles, panel_grid, shared_legend, styled


def smoothed_curves(history: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Per (task, method, label, step): mean and std over runs of the trailing moving average of
    ``val_loss`` (each point averages itself and up to ``window - 1`` earlier points of its run)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise TenpeftError(f"window must be an int >= 1 (points of the moving average), got {window!r}")
    points = history.dropna(subset=["val_loss"]).sort_values(["run_id", "step"])
    if points.empty:
        raise TenpeftError("no history point has a val_loss; train with eval_every > 0")
    points = points.assign(smooth=points.groupby(["study", "run_id"])["val_loss"]
                           .transform(lambda s: s.rolling(window, min_periods=1).mean()))
    grouped = points.groupby(["task", "method", "label", "step"], sort=True)["smooth"]
    out = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), count="count").reset_index()
    out["std"] = out["std"].where(out["count"] > 1, 0.0).fillna(0.0)
    return out


@styled
def overfitting_figure(records: list[dict], window: int = 5) -> Figure:
    """Validation loss vs training step: per method (label) the mean over seeds of each run's
    trailing ``window``-point moving average, with a ±1 std band over seeds; a panel per task."""
    curves = smoothed_curves(history_frame(records), window)
    tasks = sorted(curves["task"].unique())
    styles = method_styles(curves["method"])
    fig, axes = panel_grid(len(tasks))
    for ax, task in zip(axes, tasks):
        part = curves[curves["task"] == task]
        for (method, label), line in part.groupby(["method", "label"], sort=True):
            color = styles[method]["color"]
            ax.plot(line["step"], line["mean"], color=color, lw=1.8, label=label, marker=styles[method]["marker"],
                    markersize=4, markevery=max(1, len(line) // 8))
            ax.fill_between(line["step"], line["mean"] - line["std"], line["mean"] + line["std"],
                            color=color, alpha=0.2, lw=0)
        ax.set(title=task, xlabel="training step", ylabel="validation loss (cross-entropy)")
    smoothing = f"{window}-point trailing moving average" if window > 1 else "no smoothing"
    fig.suptitle(f"Validation loss ({smoothing}; mean ± 1 std over seeds)\n{protocol(records)}")
    shared_legend(fig, axes)
    return fig


def _stage_scores(rec: dict) -> tuple[str, list[str], dict[str, dict[str, float]]]:
    """(sequence, stage tasks, {stage task: {evaluated task: score}}) of one forgetting record."""
    stages = rec["stages"]
    where = record_name(rec, 0)
    if not isinstance(stages, list) or not stages:
        raise TenpeftError(f"{where}: stages must be a non-empty list of {{'task', 'scores'}} dicts")
    order, table = [], {}
    for stage in stages:
        if not isinstance(stage, dict) or not isinstance(stage.get("task"), str) \
                or not isinstance(stage.get("scores"), dict):
            raise TenpeftError(f"{where}: stage {stage!r} needs 'task' (str) and 'scores' ({{task: score}})")
        order.append(stage["task"])
        table[stage["task"]] = {t: np.nan if v is None else float(v) for t, v in stage["scores"].items()}
    return str(rec["config"]["task"]), order, table


def forgetting_rows(records: list[dict]) -> list[dict]:
    """Per run and task of its chain: the task's score right after its own stage (``after_own_stage``), after
    the last stage (``at_end``) and the drop (``forgetting``), with the run's method, seed and trainable count."""
    rows = []
    for rec in records:
        _, order, table = _stage_scores(rec)
        for task in order:
            own, end = table[task][task], table[order[-1]][task]
            rows.append({"method": rec["config"]["method"], "seed": rec["config"]["seed"], "task": task,
                         "trainable": rec["params"]["trainable"], "after_own_stage": own, "at_end": end,
                         "forgetting": own - end})
    return rows


def forgetting_matrices(records: list[dict]) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (label, task sequence): the mean over seeds of the score of every evaluated task (columns)
    after each training stage (rows, in training order)."""
    check_records(records, need=("stages",))
    labels = runs_frame(records)["label"]
    cells: dict[tuple[str, str], list[pd.DataFrame]] = {}
    orders: dict[tuple[str, str], list[str]] = {}
    for rec, label in zip(records, labels):
        sequence, order, table = _stage_scores(rec)
        key = (label, sequence)
        if orders.setdefault(key, order) != order:
            raise TenpeftError(f"run {rec['run_id']!r} trains {order}, other seeds of {label!r} trained "
                               f"{orders[key]}; give each order its own config.task")
        cells.setdefault(key, []).append(pd.DataFrame.from_dict(table, orient="index"))
    out = {}
    for key, frames in cells.items():
        mean = pd.concat(frames).groupby(level=0, sort=False).mean()
        columns = orders[key] + sorted(set(mean.columns) - set(orders[key]))
        out[key] = mean.reindex(index=orders[key], columns=columns)
    return out


def average_forgetting(matrix: pd.DataFrame) -> float:
    """Mean over all but the last task of (score right after training on it - score at the end)."""
    drops = [matrix.loc[t, t] - matrix.iloc[-1][t] for t in matrix.index[:-1] if t in matrix.columns]
    return float(np.nanmean(drops)) if drops else float("nan")


@styled
def forgetting_figure(records: list[dict]) -> Figure:
    """A heatmap per method (label): rows = after training on each task in sequence, columns = the
    task evaluated, cells = headline score averaged over seeds (annotated); one shared colour scale."""
    matrices = forgetting_matrices(records)
    sequences = {seq for _, seq in matrices}
    n_cols = max(m.shape[1] for m in matrices.values())
    fig, axes = panel_grid(len(matrices), size=(1.0 * n_cols + 2.0, 0.75 * n_cols + 1.7))
    values = np.concatenate([m.to_numpy(float).ravel() for m in matrices.values()])
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    image = None
    for ax, ((label, sequence), matrix) in zip(axes, sorted(matrices.items())):
        data = matrix.to_numpy(float)
        image = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for (i, j), value in np.ndenumerate(data):
            if not np.isnan(value):
                dark = (value - vmin) / max(vmax - vmin, 1e-12) < 0.6
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if dark else "black")
        ax.set_xticks(range(data.shape[1]), matrix.columns)
        ax.set_yticks(range(data.shape[0]), [f"after {t}" for t in matrix.index])
        ax.grid(False)
        title = label if len(sequences) == 1 else f"{label}\n{sequence}"
        ax.set(title=f"{title}\navg. forgetting {average_forgetting(matrix):+.3f}", xlabel="evaluated task",
               ylabel="training stage")
    fig.colorbar(image, ax=axes, label="headline score (mean over seeds)", shrink=0.9)
    order = f" ({next(iter(sequences))})" if len(sequences) == 1 else ""
    fig.suptitle(f"Forgetting across sequential tasks{order}\navg. forgetting = mean drop of each earlier "
                 f"task's score from right after its stage to the end\n{protocol(records)}", fontsize="medium")
    return fig
