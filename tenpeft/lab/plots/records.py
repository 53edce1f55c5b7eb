"""Run records (``tenpeft.lab.records``) as tidy pandas frames, seed summaries and Pareto fronts."""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.labels import labels_for
from tenpeft.lab.records import check_record
from tenpeft.lab.stats import t_half_width
from tenpeft.lab.tasks.custom import record_task_label
from tenpeft.schema import is_number

RUN_COLUMNS = ["study", "run_id", "model", "task", "method", "label", "seed", "lr", "trainable", "score",
               "validation", "metric", "higher_is_better"]
HISTORY_COLUMNS = ["study", "run_id", "method", "label", "task", "seed", "step", "val_loss", "train_loss"]


def record_name(record, index: int) -> str:
    """How an error message names a record: its run_id (and ``_file``, when a loader set one), or its
    position in the list."""
    if not isinstance(record, dict) or not (record.get("run_id") or record.get("_file")):
        return f"record #{index}"
    name = f"run {record['run_id']!r}" if record.get("run_id") else f"record #{index}"
    return f"{name} ({record['_file']})" if record.get("_file") else name


def check_records(records: Sequence[dict], need: Sequence[str] = ()) -> None:
    """Raise TenpeftError unless ``records`` is a non-empty list of run records, each well formed
    (``tenpeft.lab.records.check_record``) and given once; ``need`` names further keys a caller needs
    set (e.g. ``stages``)."""
    if isinstance(records, (dict, str, bytes)) or not isinstance(records, Sequence) or not records:
        raise TenpeftError("expected a non-empty list of run records (dicts); got "
                           f"{type(records).__name__} {'(empty)' if not records else ''}".rstrip())
    for i, rec in enumerate(records):
        where = record_name(rec, i)
        check_record(rec, where, consequence="fix that record or leave it out")
        missing = [k for k in need if rec.get(k) is None]
        if missing:
            raise TenpeftError(f"{where} lacks key(s) {missing}, which this figure needs")
    _check_unique(records)


def _check_unique(records: Sequence[dict]) -> None:
    seen: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        key = (rec.get("study"), rec["run_id"])
        if key in seen:
            raise TenpeftError(f"{record_name(rec, i)} repeats run_id {rec['run_id']!r} of study {key[0]!r} "
                               f"(also record #{seen[key]}); load each run once")
        seen[key] = i


def runs_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per run: study, run_id, model, task, method, label, seed, lr, trainable, score (on test),
    validation (the validation score at the chosen checkpoint; NaN in records before the three splits), metric,
    higher_is_better, ``axis_<name>`` per config axis, and ``method_args`` (dict).

    ``label`` is the method plus the ``method_args`` that differ from the method's defaults or vary
    between the given runs of that method (e.g. ``"lora r=4"``); ``seed`` never enters it.
    """
    check_records(records)
    labels = labels_for([r["config"]["method"] for r in records],
                        [r["config"].get("method_args") for r in records])
    rows = []
    for rec, label in zip(records, labels):
        cfg, score = rec["config"], rec["score"]
        args = dict(cfg.get("method_args") or {})
        row = {"study": rec.get("study") or "", "run_id": rec["run_id"], "model": cfg["model"],
               "task": record_task_label(cfg), "method": cfg["method"],
               "label": label,
               "seed": cfg["seed"], "lr": _float(cfg.get("lr")), "trainable": rec["params"]["trainable"],
               "score": _float(score["value"]), "validation": _float(score.get("validation")), "metric": score["metric"],
               "higher_is_better": higher_is_better(rec), "method_args": args}
        row.update({f"axis_{name}": _hashable(v) for name, v in (cfg.get("axes") or {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    axes = sorted(c for c in frame.columns if c.startswith("axis_"))
    return frame[RUN_COLUMNS + axes + ["method_args"]]


def higher_is_better(record: dict) -> bool:
    """Whether a higher score of ``record`` is better (``score.higher_is_better``; records without it: yes)."""
    return bool(record["score"].get("higher_is_better", True))


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _hashable(value):
    """Axis values usable as group keys: lists become ``"8x6x8"``-style strings."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def history_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per history point: study, run_id, method, label, task, seed, step, val_loss, train_loss."""
    check_records(records)
    labels = runs_frame(records).set_index(["study", "run_id"])["label"]
    rows = []
    for i, rec in enumerate(records):
        cfg = rec["config"]
        for point in rec["history"]:
            if not isinstance(point, dict) or not is_number(point.get("step")):
                raise TenpeftError(f"{record_name(rec, i)}: history point {point!r} lacks a numeric 'step'")
            rows.append({"study": rec.get("study") or "", "run_id": rec["run_id"], "method": cfg["method"],
                         "label": labels[(rec.get("study") or "", rec["run_id"])], "task": record_task_label(cfg),
                         "seed": cfg["seed"], "step": point["step"], "val_loss": _float(point.get("val_loss")),
                         "train_loss": _float(point.get("train_loss"))})
    if not rows:
        raise TenpeftError("no history points in any record; train with eval_every > 0 to log val_loss")
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def summarize(frame: pd.DataFrame, by: str | Sequence[str], value: str = "score") -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for a single seed), ``ci`` (half the width of the 95% t-interval of the mean;
    NaN for a single seed) and count of ``value`` per group of columns ``by``."""
    by = [by] if isinstance(by, str) else list(by)
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise TenpeftError("summarize needs a non-empty DataFrame (e.g. runs_frame(records))")
    missing = [c for c in (*by, value) if c not in frame.columns]
    if missing or not by:
        raise TenpeftError(f"summarize: column(s) {missing or 'by'} missing; available: {list(frame.columns)}")
    grouped = frame.groupby(by, sort=True, dropna=False)[value]
    out = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), ci=lambda s: t_half_width(s.dropna()),
                      count="count").reset_index()
    out["std"] = out["std"].where(out["count"] > 1, 0.0).fillna(0.0)
    return out


def pareto_front(points: pd.DataFrame, x: str = "trainable", y: str = "score",
                 higher_is_better: bool = True) -> pd.DataFrame:
    """The non-dominated rows (no other row has x <= and a y at least as good, with one strict), sorted by x.

    Fewer parameters (x) are better, and a higher score (y), or a lower one with ``higher_is_better=False``
    (a loss, a cross-entropy); rows with a NaN x or y are ignored and identical points are all kept.
    """
    if not isinstance(points, pd.DataFrame) or points.empty:
        raise TenpeftError("pareto_front needs a non-empty DataFrame of points")
    missing = [c for c in (x, y) if c not in points.columns]
    if missing:
        raise TenpeftError(f"pareto_front: column(s) {missing} missing; available: {list(points.columns)}")
    valid = points.dropna(subset=[x, y])
    if valid.empty:
        raise TenpeftError(f"pareto_front: every point has a NaN {x!r} or {y!r}")
    xs, ys = valid[x].to_numpy(float), valid[y].to_numpy(float) * (1.0 if higher_is_better else -1.0)
    no_worse = (xs[None, :] <= xs[:, None]) & (ys[None, :] >= ys[:, None])
    better = (xs[None, :] < xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (no_worse & better).any(axis=1)
    return valid[~dominated].sort_values([x, y], ascending=[True, not higher_is_better], kind="stable")
