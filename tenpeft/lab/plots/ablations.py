"""Ablation figures: score vs rank, score per tensor shape, and parameter savings per variant."""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.labels import format_count, labels_for, protocol
from tenpeft.lab.plots.records import runs_frame, summarize
from tenpeft.lab.plots.style import metric_label, method_styles, panel_grid, require_axis, styled

LINESTYLES = ("-", "--", ":", "-.")


def _series_summary(records, axis: str, figure: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs frame (``series`` = label without the axis arg, e.g. ``rank``) and its seed summary."""
    frame = runs_frame(records)
    column = require_axis(frame, axis, figure)
    frame = frame.dropna(subset=[column]).copy()
    frame["series"] = labels_for(frame["method"], frame["method_args"], exclude=(axis, f"{axis}s"))
    keys = ["task", "method", "series", column]
    stats = summarize(frame, keys)
    params = frame.groupby(keys, sort=True)["trainable"].median().reset_index()
    return frame, stats.merge(params, on=keys)


def _is_numeric(values) -> bool:
    return all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)


@styled
def rank_ablation_figure(records: list[dict], axis: str = "rank") -> Figure:
    """Headline score (mean and 95% t-interval over seeds) vs the rank axis: a line per method, a panel per task.

    The x axis is log2 when the ranks span 4x or more; the legend gives each line's trainable
    parameter range. Non-numeric ranks (e.g. ``"4x4x2"``) are placed as categories.
    """
    frame, stats = _series_summary(records, axis, "rank_ablation_figure")
    column = f"axis_{axis}"
    tasks = sorted(stats["task"].unique())
    styles = method_styles(stats["method"])
    fig, axes = panel_grid(len(tasks))
    values = sorted(stats[column].unique(), key=lambda v: (str(type(v)), v))
    numeric = _is_numeric(values)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    for ax, task in zip(axes, tasks):
        part = stats[stats["task"] == task]
        lines = list(part.groupby(["method", "series"], sort=True))
        for k, ((method, series), line) in enumerate(lines):
            shift = _dodge(k, len(lines), values, position, numeric)
            line = line.assign(x=line[column].map(position).map(shift)).sort_values("x")
            dash = LINESTYLES[sorted(part.loc[part["method"] == method, "series"].unique()).index(series) % 4]
            lo, hi = format_count(line["trainable"].min()), format_count(line["trainable"].max())
            ax.errorbar(line["x"], line["mean"], yerr=line["ci"].fillna(0.0), capsize=3, linestyle=dash, lw=1.6,
                        label=f"{series} ({lo}–{hi} params)" if lo != hi else f"{series} ({lo} params)",
                        **styles[method])
        _rank_ticks(ax, values, position, numeric)
        ax.set(title=task, xlabel=f"{axis} (log2 scale)" if ax.get_xscale() == "log" else axis,
               ylabel=f"{metric_label(frame, task)} (mean, 95% CI)")
        ax.legend(fontsize="small", title="method (trainable)", title_fontsize="small")
    fig.suptitle(f"{axis.capitalize()} ablation: headline score, mean and 95% t-interval over {_seed_text(stats)}\n{protocol(records)}")
    return fig


def _dodge(k: int, n: int, values, position, numeric: bool):
    """Line ``k`` of ``n`` moved sideways by a few percent of a tick gap, so equal scores of
    different methods stay visible side by side (a factor on a log axis, a shift on a linear one)."""
    offset = (k - (n - 1) / 2) * 0.04
    if numeric and _log_scale([position[v] for v in values]):
        return lambda x: x * 2 ** offset
    return lambda x: x + offset


def _log_scale(xs) -> bool:
    return min(xs) > 0 and max(xs) / min(xs) >= 4


def _rank_ticks(ax, values, position, numeric: bool) -> None:
    xs = [position[v] for v in values]
    if numeric and _log_scale(xs):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.set_xticklabels([str(v) for v in values])


def _seed_text(stats: pd.DataFrame) -> str:
    lo, hi = int(stats["count"].min()), int(stats["count"].max())
    return f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"


@styled
def shape_search_figure(records: list[dict], axis: str = "shape") -> Figure:
    """Headline score (mean and 95% t-interval over seeds) per tensor shape: grouped bars per method, a panel per
    task, each bar annotated with its trainable parameters."""
    frame, stats = _series_summary(records, axis, "shape_search_figure")
    column = f"axis_{axis}"
    tasks = sorted(stats["task"].unique())
    styles = method_styles(stats["method"])
    shapes = sorted(stats[column].unique(), key=_shape_order)
    fig, axes = panel_grid(len(tasks), size=(max(4.6, 0.9 * len(shapes) + 1.5), 3.8))
    for ax, task in zip(axes, tasks):
        part = stats[stats["task"] == task]
        series = sorted(part[["method", "series"]].drop_duplicates().itertuples(index=False))
        width = 0.8 / len(series)
        for k, (method, name) in enumerate(series):
            rows = part[part["series"] == name].set_index(column).reindex(shapes).dropna(subset=["mean"])
            xs = np.array([shapes.index(s) for s in rows.index]) + (k - (len(series) - 1) / 2) * width
            ax.bar(xs, rows["mean"], width * 0.92, yerr=rows["ci"].fillna(0.0), capsize=2, label=name,
                   color=styles[method]["color"], edgecolor="white", error_kw={"lw": 1})
            for x, n in zip(xs, rows["trainable"]):  # inside the bar, at the foot of the axis
                ax.text(x, 0.03, format_count(n), transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", rotation=90, fontsize=7, color="white", fontweight="bold")
        low = (part["mean"] - part["ci"].fillna(0.0)).min()
        high = (part["mean"] + part["ci"].fillna(0.0)).max()
        span = max(high - low, 0.02)
        ax.set_ylim(max(0.0, low - 0.5 * span), high + 0.25 * span)
        ax.set_xticks(range(len(shapes)), [str(s) for s in shapes], rotation=30 if len(shapes) > 4 else 0)
        ax.set(title=task, xlabel=f"tensor {axis} (factorization of each matrix)",
               ylabel=f"{metric_label(frame, task)} (mean, 95% CI)")
        ax.grid(axis="x", visible=False)
        ax.legend(fontsize="small", loc="best", ncols=min(2, len(series)))
    fig.suptitle(f"Shape search: mean and 95% t-interval over {_seed_text(stats)} (in bars: trainable parameters; y axis cut)\n"
                 f"{protocol(records)}")
    return fig


def _shape_order(shape) -> tuple:
    """Shapes by number of modes, then numerically (``16x24`` < ``4x12x8`` < ``8x6x8``)."""
    parts = str(shape).split("x")
    if all(p.isdigit() for p in parts):
        return (0, len(parts), tuple(int(p) for p in parts), "")
    return (1, 0, (), str(shape))


def _savings_frame(rows) -> pd.DataFrame:
    if isinstance(rows, dict) or not isinstance(rows, (list, tuple)) or not rows:
        raise TenpeftError("param_savings_figure needs a non-empty list of {'variant', 'params', 'model'} dicts")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("variant"), str):
            raise TenpeftError(f"savings row #{i} ({row!r}) needs a 'variant' string, e.g. 'LoRA per matrix'")
        params = row.get("params")
        if isinstance(params, bool) or not isinstance(params, (int, float, np.number)) or not params > 0:
            raise TenpeftError(f"savings row #{i} ({row['variant']!r}) needs 'params' > 0, got {params!r}")
    return pd.DataFrame([{"variant": r["variant"], "params": float(r["params"]),
                          "model": str(r.get("model", ""))} for r in rows])


@styled
def param_savings_figure(rows: list[dict]) -> Figure:
    """Trainable parameters per variant as horizontal bars (log x), a panel per model; each bar is
    annotated with its count and its savings factor against the model's first row."""
    data = _savings_frame(rows)
    models = list(dict.fromkeys(data["model"]))
    heights = [0.42 * (data["model"] == m).sum() + 1.2 for m in models]
    fig = Figure(figsize=(8.0, sum(heights)), layout="constrained")
    axes = fig.subplots(len(models), 1, squeeze=False, height_ratios=heights)[:, 0]
    variants = list(dict.fromkeys(data["variant"]))  # colours follow the rows' order
    palette = dict(zip(variants, sns.color_palette("colorblind" if len(variants) <= 10 else "husl",
                                                   len(variants))))
    for ax, model in zip(axes, models):
        part = data[data["model"] == model].reset_index(drop=True)
        ref = part["params"].iloc[0]
        ys = np.arange(len(part))
        ax.barh(ys, part["params"], color=[palette[v] for v in part["variant"]], height=0.65)
        for y, n in zip(ys, part["params"]):
            factor = ref / n
            note = "reference" if y == 0 else (f"{factor:.3g}× fewer" if factor >= 1 else f"{1 / factor:.3g}× more")
            ax.annotate(f"{format_count(n)}  ({note})", (n, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(part["params"].min() / 3, part["params"].max() * 15)
        ax.set_yticks(ys, part["variant"])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("trainable parameters (log scale)")
        if model:
            ax.set_title(model)
    fig.suptitle("Parameter savings vs the first variant")
    return fig
