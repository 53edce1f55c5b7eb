"""Markdown tables of every study's records on disk (the numbers quoted in docs/results.md come
from here, not by hand): per configuration the test score's mean and 95% t-interval over seeds (the learning
rate chosen on validation), and paired comparisons of the methods on shared seeds, Holm-corrected.

    python studies/summarize.py                    # all studies under results/
    python studies/summarize.py --out /tmp/tables.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots import forgetting_rows, runs_frame, summarize
from tenpeft.lab.records import load_records, old_protocol_note
from tenpeft.lab.stats import compare
from tenpeft.lab.study import best_lr_only, script


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _cell(value) -> str:
    """A table cell: integral floats (pandas turns a rank axis with gaps into floats) as ints, NaN as '-'."""
    if isinstance(value, float):
        return "-" if value != value else (str(int(value)) if value.is_integer() else f"{value:g}")
    return str(value)


def _interval(mean: float, half: float, scale: float, digits: int) -> str:
    """``mean [low, high]``: the 95% t-interval over seeds; a single seed has none."""
    if half != half:
        return f"{scale * mean:.{digits}f} (one seed)"
    return f"{scale * mean:.{digits}f} [{scale * (mean - half):.{digits}f}, {scale * (mean + half):.{digits}f}]"


def _scale(frame: pd.DataFrame) -> tuple[float, str, int]:
    lower = not frame["higher_is_better"].all()
    if lower and frame["higher_is_better"].any():
        raise TenpeftError("these records mix higher- and lower-is-better scores; summarize them apart")
    return (1.0, "lower is better", 3) if lower else (100.0, "%", 1)


def score_table(records: list[dict], by: list[str]) -> str:
    """One row per configuration: trainable parameters, the test score's mean and 95% t-interval over seeds,
    the mean validation score (the split every choice was made on), seeds, time per run. A higher-is-better
    score (an accuracy, a correlation) is shown in %; a lower-is-better one (a cross-entropy) as it is."""
    frame = runs_frame(records)
    scale, unit, digits = _scale(frame)
    frame["seconds"] = [r["timings"]["total_s"] for r in records]
    stats = summarize(frame, by).merge(frame.groupby(by, dropna=False).agg(
        trainable=("trainable", "max"), seconds=("seconds", "mean"), metric=("metric", "first"),
        validation=("validation", "mean")).reset_index(), on=by)
    lines = [f"| {' | '.join(by)} | trainable | test ({unit}; mean, 95% CI) | validation | seeds | s/run |",
             "|" + "---|" * (len(by) + 5)]
    for row in stats.sort_values(by).itertuples(index=False):
        keys = " | ".join(_cell(getattr(row, c)) for c in by)
        validation = "-" if row.validation != row.validation else f"{scale * row.validation:.{digits}f}"
        lines.append(f"| {keys} | {row.trainable:,} | {row.metric} {_interval(row.mean, row.ci, scale, digits)} | "
                     f"{validation} | {row.count} | {row.seconds:.0f} |")
    note = old_protocol_note(records)
    return "\n".join(lines + ([f"\n{note}"] if note else []))


def comparison_table(records: list[dict], by: list[str], between: str = "method") -> str:
    """Every pair of methods within each configuration of the other ``by`` columns, paired on their shared
    seeds (paired t-test), Holm-corrected across the table; a row per pair. No pair with 2 shared seeds:
    one line saying why."""
    frame = runs_frame(records)
    scale, unit, digits = _scale(frame)
    try:
        table = compare(frame, by, between)
    except TenpeftError as err:
        return f"no paired comparison: {err}"
    keys = [c for c in by if c != between]
    lines = [f"| {' | '.join(keys)} | A | B | A - B ({'points' if scale != 1 else unit}; 95% CI) | seeds | p | "
             f"p (Holm) | significant |", "|" + "---|" * (len(keys) + 7)]
    for row in table.itertuples(index=False):
        cells = " | ".join(_cell(getattr(row, c)) for c in keys)
        lines.append(f"| {cells} | {row.a} | {row.b} | {_interval(row.diff, (row.high - row.low) / 2, scale, digits)} | "
                     f"{row.seeds} | {row.p:.3g} | {row.p_holm:.3g} | {'yes' if row.significant else 'no'} |")
    return "\n".join(lines)


def overfitting_table(records: list[dict]) -> str:
    """Per method: lowest validation loss and its step, the last one, and the rise after the lowest."""
    rows = []
    for r in records:
        h = pd.DataFrame(r["history"])
        low = h.loc[h["val_loss"].idxmin()]
        rows.append({"method": r["config"]["method"], "trainable": r["params"]["trainable"], "best_step": low["step"],
                     "min": low["val_loss"], "last": h["val_loss"].iloc[-1], "score": r["score"]["value"]})
    frame = pd.DataFrame(rows)
    g = frame.groupby("method").agg(["mean", "std"])
    lines = ["| method | trainable | step of min val loss | min val loss | last val loss | rise | accuracy (%) |",
             "|---|---|---|---|---|---|---|"]
    for method, row in g.iterrows():
        rise = frame[frame.method == method].eval("last - min")
        lines.append(f"| {method} | {int(row[('trainable', 'mean')]):,} | {row[('best_step', 'mean')]:.0f} | "
                     f"{row[('min', 'mean')]:.3f} | {row[('last', 'mean')]:.3f} | {rise.mean():.3f} ± {rise.std():.3f} | "
                     f"{_pm(row[('score', 'mean')], row[('score', 'std')])} |")
    return "\n".join(lines)


def forgetting_table(records: list[dict]) -> str:
    """Per method and task: score right after its own stage, at the end, and the drop (mean ± std)."""
    frame = pd.DataFrame(forgetting_rows(records)).rename(
        columns={"after_own_stage": "own", "at_end": "end", "forgetting": "forgot"})
    lines = ["| method | trainable | task | after own stage (%) | after the last stage (%) | forgetting (points) |",
             "|---|---|---|---|---|---|"]
    for (method, task), g in frame.groupby(["method", "task"], sort=True):
        lines.append(f"| {method} | {g.trainable.iloc[0]:,} | {task} | {_pm(g.own.mean(), g.own.std())} | "
                     f"{_pm(g.end.mean(), g.end.std())} | {_pm(g['forgot'].mean(), g['forgot'].std())} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    parts = []
    # study: its table's columns, the columns methods are compared within, and an axis whose values are
    # compared within each method as well (the rank ablation's own question: does the rank matter?)
    tables = (("rank_ablation", ["task", "method", "axis_rank", "lr"], ["task", "axis_rank"], "axis_rank"),
              ("shape_search", ["task", "axis_shape", "lr"], ["task", "axis_shape"], None),
              ("equal_budget", ["task", "axis_budget", "method", "axis_rank", "lr"], ["task", "axis_budget"], None),
              ("instruction_tuning", ["task", "method", "axis_rank", "lr"], ["task", "axis_rank"], "axis_rank"))
    for study, by, within, axis in tables:
        records = best_lr_only(load_records(args.results_dir, [study])) if (Path(args.results_dir) / study).is_dir() else []
        if records:
            comparisons = comparison_table(records, [*within, "method"])
            parts.append(f"## {study}\n\n{score_table(records, by)}\n\nPaired comparisons (test split):\n\n{comparisons}")
            if axis:
                values = comparison_table(records, ["task", "method", axis], between=axis)
                parts.append(f"Paired comparisons of each method's {axis} values (test split):\n\n{values}")
    for study, table in (("overfitting", overfitting_table), ("forgetting", forgetting_table)):
        records = load_records(args.results_dir, [study]) if (Path(args.results_dir) / study).is_dir() else []
        if records:
            parts.append(f"## {study}\n\n{table(best_lr_only(records))}")
    savings = Path(args.results_dir) / "param_savings" / "param_savings.json"
    if savings.exists():
        rows = json.loads(savings.read_text())
        parts.append("## param_savings\n\n| model | rank | variant | parameters | x fewer than LoRA |\n|---|---|---|---|---|\n"
                     + "\n".join(f"| {r['model']} | {r['rank']} | {r['variant']} | {r['params']:,} | "
                                 f"{r['savings_vs_lora']:.1f} |" for r in rows))
    text = "\n\n".join(parts) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    script(main)
