"""Learning rates of a study: each method's default rate, the per-method grid a comparative study sweeps,
and the choice of one rate per configuration on the validation split (never on the reported test split).

Comparative studies (rank ablation, equal budget, frontier) train every method at each rate of its grid,
``default_lr`` times ``GRID_FACTORS``, and keep per method and rank (or budget) the rate whose mean
validation loss at the chosen checkpoints is lowest over the seeds every rate ran. ``--lrs`` gives every
method one explicit grid; ``--one-lr`` trains each at its default rate, and the study says so.

The grid runs in two phases (:func:`grid_phases`): the first ``--grid-seeds`` seeds train at every rate,
the rate is chosen on their validation scores, and the other seeds train at the chosen rate only
(:func:`at_chosen_rates`); ``--grid-seeds 0`` trains every seed at every rate."""
from __future__ import annotations

import json

from tenpeft.errors import TenpeftError
from tenpeft.lab.records import status
from tenpeft.lab.spec import trainable_fraction

# One default rule, by what a method trains and never by its name: methods that train most of the
# model (full fine-tuning) 5e-5, every adapter (tenpeft's, PEFT's, a user's) 3e-3, the rate LoRA
# does best at on MiniLM/SST-2 (1,000 examples, 150 steps; docs/studies.md).
ADAPTER_LR, FULL_LR = 3e-3, 5e-5
FULL_SHARE = 0.5  # a method training more than this share of the parameters counts as full fine-tuning
GRID_FACTORS = (1 / 3, 1.0, 3.0)  # a comparative study's grid: the method's default rate times these


def default_lr(model: str, method: str, method_args: dict | None = None) -> float:
    """The default learning rate of ``method`` on ``model``: FULL_LR if it trains more than
    FULL_SHARE of the parameters (counted on the meta device), else ADAPTER_LR. A method that
    cannot be built gets ADAPTER_LR here; the checks before training report why."""
    try:
        share = trainable_fraction(model, method, method_args or {})
    except TenpeftError:
        return ADAPTER_LR
    return FULL_LR if share > FULL_SHARE else ADAPTER_LR


def method_grid(model: str, method: str, method_args: dict | None = None) -> list[float]:
    """The rates a comparative study tries for ``method``: its default rate times ``GRID_FACTORS``."""
    base = default_lr(model, method, method_args)
    return [float(f"{base * factor:.3g}") for factor in GRID_FACTORS]


def rates_for(args, method: str, method_args: dict, paper: dict) -> list[float]:
    """The rates a study trains ``method`` at: ``--lrs``; else a paper protocol's rate; else the method's grid
    when the study sweeps one (``args.lr_grid``), or its one default rate."""
    if args.lrs:
        return list(args.lrs)
    if paper.get("lr"):
        return [paper["lr"]]
    if getattr(args, "lr_grid", False):
        return method_grid(args.model, method, method_args)
    return [default_lr(args.model, method, method_args)]


def _configuration(record: dict) -> str:
    c = record["config"]
    return json.dumps({k: v for k, v in c.items() if k not in ("seed", "lr", "axes", "train", "data")} |
                      {"axes": {k: v for k, v in c["axes"].items() if k != "lr"}} |
                      {"data": {k: v for k, v in c["data"].items() if k != "data_seed"}}, sort_keys=True, default=str)


def lr_choices(records: list[dict]) -> list[dict]:
    """Per configuration swept over rates: ``{method, axes, task, grid: {lr: mean validation loss}, chosen,
    grid_seeds, seeds, runs}``: the rate of the lowest mean best validation loss over ``grid_seeds`` (the
    seeds every rate ran; diverged runs count as losing), and ``runs``, its runs on every seed."""
    groups: dict[str, dict[float, list[dict]]] = {}
    for r in records:
        groups.setdefault(_configuration(r), {}).setdefault(r["config"]["lr"], []).append(r)
    out = []
    for by_lr in groups.values():
        shared = sorted(set.intersection(*({r["config"]["seed"] for r in rs} for rs in by_lr.values())))
        grid = {lr: _mean_val_loss([r for r in rs if r["config"]["seed"] in shared]) for lr, rs in sorted(by_lr.items())}
        chosen = min(grid, key=lambda lr: grid[lr])
        first = next(iter(by_lr.values()))[0]["config"]
        out.append({"task": first["task"], "method": first["method"], "axes": {k: v for k, v in first["axes"].items()
                    if k != "lr"}, "grid": grid, "chosen": chosen, "grid_seeds": shared, "seeds": len(by_lr[chosen]),
                    "runs": by_lr[chosen]})
    return out


def grid_phases(specs: list, grid_seeds: int) -> tuple[list, list]:
    """``(first, rest)``: ``first`` holds every run of a configuration trained at one rate and, of a swept
    one, the runs of its first ``grid_seeds`` seeds at every rate (0: all seeds); ``rest`` the other runs,
    for :func:`at_chosen_rates` to filter once ``first`` has run."""
    keys = [_configuration({"config": spec.config()}) for spec in specs]
    rates: dict[str, set] = {}
    seeds: dict[str, list] = {}
    for key, spec in zip(keys, specs):
        rates.setdefault(key, set()).add(spec.train.lr)
        seeds.setdefault(key, []).append(spec.seed)
    grid = {key: list(dict.fromkeys(s))[:grid_seeds] if grid_seeds and len(rates[key]) > 1 else s
            for key, s in seeds.items()}
    first = [spec for key, spec in zip(keys, specs) if spec.seed in grid[key]]
    return first, [spec for key, spec in zip(keys, specs) if spec.seed not in grid[key]]


def at_chosen_rates(rest: list, records: list[dict]) -> list:
    """The specs of ``rest`` at the rate :func:`lr_choices` chose from ``records`` for their configuration."""
    chosen = {_configuration(c["runs"][0]): c["chosen"] for c in lr_choices(records)}
    return [spec for spec in rest if chosen.get(_configuration({"config": spec.config()})) == spec.train.lr]


def _mean_val_loss(records: list[dict]) -> float:
    losses = [r["best"]["val_loss"] if status(r) != "diverged" and r.get("best") else float("inf") for r in records]
    return sum(losses) / len(losses)


def chosen_runs(records: list[dict]) -> list[dict]:
    """For each configuration swept over learning rates, the runs of the rate chosen on validation
    (:func:`lr_choices`), diverged ones included."""
    return [r for choice in lr_choices(records) for r in choice["runs"]]


FIXED = (f"note: each method trained at one fixed learning rate (its default: {ADAPTER_LR:g} for adapters, "
         f"{FULL_LR:g} for full fine-tuning), not a rate chosen per method; --lr-grid or --lrs sweeps rates "
         f"and picks one on validation")


def choice_lines(records: list[dict]) -> list[str]:
    """One line per configuration swept over more than one rate: its grid (mean validation loss per rate)
    and the rate chosen; ``FIXED`` alone when no configuration was swept."""
    lines = []
    for c in lr_choices(records):
        if len(c["grid"]) > 1:
            grid = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in c["grid"].items())
            axes = " ".join(f"{k}={v}" for k, v in sorted(c["axes"].items()))
            seeds = ",".join(map(str, c["grid_seeds"]))
            lines.append(f"{c['task']} {c['method']} {axes}".rstrip() + f": chose lr {c['chosen']:g} "
                         f"(mean validation loss over seed(s) {seeds}: {grid}; {c['seeds']} seed(s) at it)")
    return lines or [FIXED]


__all__ = ["ADAPTER_LR", "FULL_LR", "FULL_SHARE", "GRID_FACTORS", "at_chosen_rates", "choice_lines", "chosen_runs",
           "default_lr", "grid_phases", "lr_choices", "method_grid", "rates_for"]
