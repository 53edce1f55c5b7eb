"""tenpeft.lab.plots: record frames, seed summaries, Pareto fronts, every figure, saving, bad input."""
from __future__ import annotations

import json
import math

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tenpeft.errors import TenpeftError
from tenpeft.lab.plots.frontier import FRONT
from tenpeft.lab.plots import (average_forgetting, forgetting_figure, forgetting_matrices, frontier_figure,
                           history_frame, overfitting_figure, param_savings_figure, pareto_front,
                           rank_ablation_figure, runs_frame, save_figure, shape_search_figure, summarize)

TASKS = {"sst2": "accuracy", "mrpc": "f1"}
METHODS = {"lora": 8, "lorta": 4, "loretta_rep": 5}  # method -> base rank
PARAMS = {"lora": 9000, "lorta": 400, "loretta_rep": 2500}


def make_record(task="sst2", method="lora", seed=0, study="study", axes=None, args=None, trainable=1000,
                score=0.8, steps=8, stages=None) -> dict:
    """One synthetic run record: a U-shaped validation loss (overfits after the middle)."""
    rng = np.random.default_rng(abs(hash((task, method, seed, json.dumps(axes)))) % 2**32)
    history = [{"step": 50 * (i + 1), "train_loss": 0.7 * 0.8**i,
                "val_loss": 0.7 - 0.3 * math.sin(math.pi * i / steps) + 0.02 * rng.standard_normal(),
                "metrics": {TASKS.get(task, "accuracy"): score}} for i in range(steps)]
    axis_text = "-".join(f"{k}{v}" for k, v in (axes or {}).items())
    return {"schema": "tenpeft-run/1", "study": study, "run_id": f"{task}-{method}-{axis_text}-s{seed}",
            "config": {"model": "minilm", "task": task, "method": method, "method_args": args or {},
                       "seed": seed, "lr": 5e-4, "axes": axes or {}, "train": {"max_steps": 50 * steps}},
            "params": {"trainable": trainable, "components": {"factors": trainable}},
            "history": history, "best": {"step": 200, "val_loss": 0.4},
            "score": {"metric": TASKS.get(task, "accuracy"), "value": score}, "stages": stages,
            "timings": {"total_s": 1.0}, "provenance": {}}


def grid_records(ranks=(2, 8, 32), seeds=(0, 1)) -> list[dict]:
    """2 tasks x 3 methods x len(ranks) ranks x 2 seeds, score rising with log rank."""
    return [make_record(task, method, seed, "rank_ablation", {"rank": r}, {"rank": r},
                        PARAMS[method] * r // base, 0.7 + 0.02 * math.log2(r) + 0.01 * seed + 0.01 * i)
            for task in TASKS for i, (method, base) in enumerate(METHODS.items()) for r in ranks for seed in seeds]


@pytest.fixture(scope="module")
def records():
    return grid_records()


def _labelled(fig: Figure) -> None:
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax


def test_runs_frame_columns_and_labels(records):
    frame = runs_frame(records)
    assert len(frame) == 2 * 3 * 3 * 2
    assert {"study", "run_id", "model", "task", "method", "seed", "lr", "trainable", "score", "metric",
            "label", "axis_rank"} <= set(frame.columns)
    assert set(frame.loc[frame.method == "lora", "label"]) == {"lora r=2", "lora r=8", "lora r=32"}
    assert frame.loc[frame.task == "mrpc", "metric"].unique().tolist() == ["f1"]


def test_label_shows_only_non_default_args():
    recs = [make_record(method="lora", args={"rank": 8, "seed": 3}),
            make_record(method="lorta", args={"rank": 4, "format": "tt"})]
    assert runs_frame(recs)["label"].tolist() == ["lora", "lorta format=tt"]


def test_summarize_golden():
    frame = pd.DataFrame({"m": ["a", "a", "a", "b"], "score": [0.5, 0.7, 0.9, 0.4]})
    out = summarize(frame, "m").set_index("m")
    assert out.loc["a", "mean"] == pytest.approx(0.7) and out.loc["a", "std"] == pytest.approx(0.2)
    assert out.loc["b", "std"] == 0.0 and out["count"].tolist() == [3, 1]


def test_pareto_front_golden():
    points = pd.DataFrame({"trainable": [100, 50, 200, 400, 50], "score": [0.80, 0.70, 0.78, 0.90, 0.65],
                           "name": ["p", "q", "r", "s", "t"]})
    front = pareto_front(points)
    assert front["name"].tolist() == ["q", "p", "s"]  # r dominated by p, t by q


def test_history_frame(records):
    hist = history_frame(records)
    assert len(hist) == len(records) * 8
    assert list(hist.columns[:3]) == ["study", "run_id", "method"] and hist["val_loss"].notna().all()


def test_rank_ablation_figure(records):
    fig = rank_ablation_figure(records)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.containers) == 3  # an errorbar line per method
    assert all("params" in t.get_text() for t in ax.get_legend().get_texts())
    _labelled(fig)


def test_shape_search_figure():
    recs = [make_record(task, method, seed, axes={"shape": shape}, trainable=300 + 10 * len(shape),
                        score=0.75 + 0.01 * seed)
            for task in TASKS for method in ("loretta_rep", "lorta") for shape in ("8x6x8", "16x24", "4x12x8")
            for seed in (0, 1)]
    fig = shape_search_figure(recs)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 2 * 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["16x24", "4x12x8", "8x6x8"]
    _labelled(fig)


def test_param_savings_figure():
    rows = [{"variant": v, "params": p, "model": m} for m in ("roberta-base", "llama-7b")
            for v, p in [("LoRA per matrix", 294912), ("+ heads", 40000), ("LoRTA", 3440)]]
    fig = param_savings_figure(rows)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 3
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert "reference" in notes[0] and "85.7× fewer" in notes[2]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel()


def test_overfitting_figure(records):
    fig = overfitting_figure(records, window=3)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 9  # 3 methods x 3 ranks
    assert len(fig.legends) == 1
    _labelled(fig)


def test_forgetting_figure_and_matrix():
    recs = []
    for method in ("lora", "lorta"):
        for seed in (0, 1):
            stages = [{"task": t, "scores": {"sst2": 0.9 - 0.1 * i, "mrpc": 0.6 + 0.1 * (i >= 1) + 0.02 * seed,
                                             "rte": 0.5 + 0.2 * (i == 2)}}
                      for i, t in enumerate(("sst2", "mrpc", "rte"))]
            recs.append(make_record("sst2>mrpc>rte", method, seed, stages=stages))
    matrix = forgetting_matrices(recs)[("lora", "sst2>mrpc>rte")]
    assert matrix.loc["mrpc", "mrpc"] == pytest.approx(0.71) and list(matrix.index) == ["sst2", "mrpc", "rte"]
    assert average_forgetting(matrix) == pytest.approx((0.2 + 0.0) / 2)
    fig = forgetting_figure(recs)
    assert len(fig.axes) == 3  # 2 heatmaps + colorbar
    assert len(fig.axes[0].texts) == 9
    _labelled(fig)


def test_frontier_figure(records):
    fig = frontier_figure(records)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel().startswith(("accuracy", "F1"))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["lora", "loretta_rep", "lorta", FRONT]
    _labelled(fig)


def test_save_figure_atomic(tmp_path, records):
    rc_before = dict(mpl.rcParams)
    fig = frontier_figure(records)
    assert dict(mpl.rcParams) == rc_before  # the style is local
    paths = save_figure(fig, tmp_path / "out", "frontier")
    assert [p.name for p in paths] == ["frontier.png", "frontier.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frontier.pdf", "frontier.png"]
    with pytest.raises(TenpeftError, match="plain file stem"):
        save_figure(fig, tmp_path, "a/b")


def test_errors_name_the_file():
    record = {**make_record(), "_file": "results/x/run.json"}
    del record["score"]
    with pytest.raises(TenpeftError, match=r"'sst2-lora--s0' \(results/x/run.json\).*score"):
        runs_frame([record])


@pytest.mark.parametrize("bad,match", [
    ([], "non-empty list"),
    ([{**make_record(), "run_id": "x1", "config": {}}], r"'x1' is a damaged run record \(config.model missing"),
    ([{**make_record(), "run_id": "x2", "params": {}}], "'x2'.*field 'params.trainable' is missing"),
    ([{**make_record(), "run_id": "x3", "score": {"metric": "accuracy", "value": None}}],
     "'x3'.*score.value is null, yet the status is 'ok'.*leave it out"),
    ([{**make_record(), "run_id": "x4", "config": {**make_record()["config"], "axes": [1]}}],
     "'x4'.*field 'config.axes' must be an object or null, got list"),
    ([{**make_record(), "schema": "other/2"}], "schema 'other/2', not a tenpeft run record"),
    ([[make_record()]], "record #0 holds list, not a run record"),
    ([make_record(), make_record()], "repeats run_id"),
])
def test_bad_records(bad, match):
    with pytest.raises(TenpeftError, match=match):
        runs_frame(bad)


def test_bad_figure_input(records):
    with pytest.raises(TenpeftError, match="config.axes.shape"):
        shape_search_figure(records)
    with pytest.raises(TenpeftError, match="window"):
        overfitting_figure(records, window=0)
    with pytest.raises(TenpeftError, match="stages"):
        forgetting_figure(records)
    with pytest.raises(TenpeftError, match="params"):
        param_savings_figure([{"variant": "a", "params": 0}])
    with pytest.raises(TenpeftError, match="non-empty"):
        pareto_front(pd.DataFrame())
    with pytest.raises(TenpeftError, match="missing"):
        summarize(runs_frame(records), "nope")


def test_figures_name_their_model_and_protocol():
    """Titles say how the runs were trained; file names carry the model, so figures of two models
    never overwrite each other."""
    from tenpeft.lab.plots import figure_name, protocol

    def rec(model, lr, swept):
        record = make_record(seed=0, axes={"rank": 2}, args={"rank": 2})
        record["config"].update(model=model, lr=lr, data={"train_size": 1000}, train={"max_steps": 200, "batch_size": 16})
        record["config"]["axes"] = {**record["config"].get("axes", {}), **({"lr": lr} if swept else {})}
        return record

    assert protocol([rec("minilm", 3e-3, False)]) == "minilm · 1,000 train ex. · 200 steps · batch 16 · lr 3e-03"
    swept = [rec("minilm", 1e-3, True), rec("minilm", 1e-2, True)]
    assert protocol(swept).endswith("lr chosen on val. loss: 1e-03, 0.01")
    full = [rec("minilm", lr, True) for lr in (2e-5, 5e-5)]
    for record in full:
        record["config"]["method"] = "full"
    assert protocol(swept + full).endswith("lr chosen on val. loss: 1e-03, 0.01 (full: 2e-05, 5e-05)")
    assert figure_name("rank_ablation", [rec("minilm", 3e-3, False)]) == "rank_ablation_minilm"
    assert figure_name("rank_ablation", [rec("/models/roberta-base", 3e-3, False)]) == "rank_ablation_roberta-base"
    fig = rank_ablation_figure([rec("minilm", 3e-3, False)])
    assert "minilm · 1,000 train ex." in fig.get_suptitle()


def test_a_one_point_pareto_front_is_drawn():
    from tenpeft.lab.plots import frontier_figure

    fig = frontier_figure([make_record(seed=0)])
    front = [line for line in fig.axes[0].get_lines() if line.get_label() == FRONT]
    assert len(front) == 1 and len(front[0].get_xdata()) == 1 and front[0].get_marker() == "o"
