"""Shared figure plumbing: a local seaborn style, panel grids, per-method colours, atomic saving.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend),
and the style is applied with :func:`matplotlib.rc_context`, so global rcParams never change.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Iterable

import matplotlib as mpl
import seaborn as sns
from matplotlib.figure import Figure

from tenpeft.atomic import atomic_write, sweep_stale
from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.labels import metric_name

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
PANEL_SIZE = (4.6, 3.6)  # inches per panel


def style_rc() -> dict:
    """The rcParams of the plots: seaborn ``whitegrid`` at ``notebook`` scale, slightly smaller."""
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.8),
            "axes.titleweight": "bold", "legend.frameon": True, "legend.framealpha": 0.85}


def styled(func):
    """Run a figure function inside the local style (rcParams restored afterwards)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(style_rc()):
            return func(*args, **kwargs)
    return wrapper


def panel_grid(n: int, ncols: int = 3, size: tuple[float, float] = PANEL_SIZE, sharey: bool = False):
    """A constrained-layout Figure with ``n`` panels in rows of at most ``ncols`` (unused cells removed)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def method_styles(methods: Iterable[str]) -> dict[str, dict]:
    """A stable colour and marker per method (sorted), for consistent legends across panels."""
    methods = sorted(set(methods))
    if len(methods) <= 10:  # colorblind, with purple before vermillion (too close to orange)
        palette = [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9)]
    else:
        palette = sns.color_palette("husl", len(methods))
    return {m: {"color": palette[i], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(methods)}


def shared_legend(fig: Figure, axes, ncols: int = 6, title: str | None = None, last: tuple[str, ...] = ()):
    """One legend below all panels, from the (deduplicated) handles of every panel; labels in
    ``last`` go to the end."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    entries = dict(sorted(entries.items(), key=lambda item: item[0] in last))
    return fig.legend(list(entries.values()), list(entries), loc="outside lower center", title=title,
                      ncols=max(1, min(ncols, len(entries))))


def metric_label(frame, task: str) -> str:
    """The display name of the headline metric(s) of ``task`` in a runs frame."""
    metrics = sorted({metric_name(m) for m in frame.loc[frame["task"] == task, "metric"]})
    return " / ".join(metrics) or "score"


def require_axis(frame, axis: str, figure: str) -> str:
    """The ``axis_<axis>`` column of a runs frame, or a TenpeftError naming what is missing."""
    column = f"axis_{axis}"
    if column not in frame.columns or frame[column].isna().all():
        found = [c[5:] for c in frame.columns if c.startswith("axis_")]
        raise TenpeftError(f"{figure} needs runs with config.axes.{axis}; these records have axes {found}")
    return column


def save_figure(fig: Figure, directory: str | Path, name: str, dpi: int = 150) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` into ``directory`` (created), each atomically."""
    if not isinstance(fig, Figure):
        raise TenpeftError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    if not name or not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
        raise TenpeftError(f"figure name {name!r} must be a plain file stem like 'rank_ablation' (no directories)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sweep_stale(directory)  # temporaries of writers killed midway
    written = []
    for fmt in ("png", "pdf"):
        written.append(atomic_write(directory / f"{name}.{fmt}", lambda tmp, fmt=fmt: fig.savefig(
            tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata={"CreationDate": None} if fmt == "pdf" else None)))
    return written
