"""Figures and tables from run records (``tenpeft.lab.records``): tidy frames, seed summaries,
Pareto fronts, and one matplotlib Figure per study (no pyplot state; style applied locally)."""
from __future__ import annotations

from tenpeft.lab.plots.ablations import param_savings_figure, rank_ablation_figure, shape_search_figure
from tenpeft.lab.plots.dynamics import (average_forgetting, forgetting_figure, forgetting_matrices, forgetting_rows, overfitting_figure,
                       smoothed_curves)
from tenpeft.lab.plots.frontier import frontier_figure, frontier_points
from tenpeft.lab.plots.labels import figure_name, format_count, labels_for, metric_name, protocol, run_label
from tenpeft.lab.plots.records import check_records, history_frame, pareto_front, runs_frame, summarize
from tenpeft.lab.plots.style import save_figure

__all__ = ["average_forgetting", "check_records", "figure_name", "format_count", "forgetting_figure", "forgetting_matrices", "forgetting_rows",
           "frontier_figure", "frontier_points", "history_frame", "labels_for", "metric_name",
           "overfitting_figure", "param_savings_figure", "pareto_front", "protocol", "rank_ablation_figure", "run_label",
           "runs_frame", "save_figure", "shape_search_figure", "smoothed_curves", "summarize"]
