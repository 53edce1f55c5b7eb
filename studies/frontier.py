"""Parameter-vs-score frontier over every result on disk: trainable parameters (log scale) vs
the test score, mean and 95% t-interval over seeds per configuration, and the front of the points no
other point dominates significantly (paired t-test on shared seeds, Holm-corrected).

Trains nothing: it reads ``results/*/*.json`` (written by the other studies, PEFT baselines and
full fine-tuning included) and keeps, per configuration, the learning rate with the lowest mean
validation loss. Runs are compared only under the same protocol (model, training examples, steps,
evaluation examples): each task x protocol gets its own panel and its own front. Sequential
(forgetting) runs are left out.

    python studies/frontier.py
    python studies/frontier.py --studies rank_ablation,shape_search --results-dir results
"""
from __future__ import annotations

import argparse
import copy

from tenpeft.lab.plots import frontier_figure, runs_frame, save_figure
from tenpeft.lab.plots.frontier import significant_front, task_higher_is_better
from tenpeft.lab.records import load_records
from tenpeft.lab.study import best_lr_only, print_summary, script


def protocol(record: dict) -> str:
    """What must match for two runs to be comparable (besides the method and its rate)."""
    c = record["config"]
    data, train = c["data"], c["train"]
    examples = data["train_size"] or "all"
    return f"{c['task']} · {c['model']}, {examples} ex., {train['max_steps']} steps"


def for_plot(record: dict) -> dict:
    """A copy whose task names the protocol and whose label is short (a shape, not its dict)."""
    out = copy.deepcopy(record)
    out["config"]["task"] = protocol(record)
    if "shape" in record["config"].get("axes", {}):
        out["config"]["method_args"] = {"shape": record["config"]["axes"]["shape"]}
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--figures-dir", default="figures")
    parser.add_argument("--studies", default=None, help="comma-separated study names (default: all)")
    args = parser.parse_args(argv)
    studies = args.studies.split(",") if args.studies else None
    records = [r for r in load_records(args.results_dir, studies) if r.get("stages") is None]
    swept, records = records, [for_plot(r) for r in best_lr_only(records)]
    frame = print_summary(records, ["task", "label"], within=["task"], between="label", swept=swept)
    runs = runs_frame(records)
    for task, points in frame.groupby("task"):
        part = runs[runs["task"] == task]
        front = significant_front(part, points.rename(columns={"score_mean": "mean"}), task_higher_is_better(part, task))
        print(f"front (not significantly dominated), {task}: "
              + ", ".join(f"{row.label} ({row.trainable:,})" for row in front.itertuples()))
    for path in save_figure(frontier_figure(records), args.figures_dir, "frontier"):
        print(f"wrote {path}")
    return records


if __name__ == "__main__":
    script(main)
