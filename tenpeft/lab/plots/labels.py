"""Short human labels for runs, metrics and parameter counts."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

ABBREVIATIONS = {"rank": "r", "bottleneck": "b", "num_virtual_tokens": "tokens"}
IGNORED_ARGS = frozenset({"seed"})  # follows the run's seed, never distinguishes a configuration
METRIC_NAMES = {"accuracy": "accuracy", "acc": "accuracy", "f1": "F1", "matthews": "Matthews corr.",
                "mcc": "Matthews corr.", "spearman": "Spearman ρ", "pearson": "Pearson r"}


@functools.lru_cache(maxsize=None)
def _defaults_json(method: str) -> str:
    defaults: dict = {}
    try:
        from tenpeft.methods import METHODS
        config = METHODS[method].config
        for f in dataclasses.fields(config):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    except (ImportError, KeyError):
        from tenpeft.lab.baselines import NAMED

        defaults = dict(NAMED[method].defaults) if method in NAMED else {}
    return json.dumps({k: _plain(v) for k, v in defaults.items()}, default=str)


def method_defaults(method: str) -> dict:
    """The default method arguments of a tenpeft method or PEFT baseline (``{}`` when unknown)."""
    return json.loads(_defaults_json(method))


def _plain(value):
    """JSON-comparable form: tuples become lists, mappings get sorted keys."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    return value


def arg_key(value) -> str:
    """A canonical string for comparing argument values (``(4, 4)`` equals ``[4, 4]``)."""
    return json.dumps(_plain(value), sort_keys=True, default=str)


def format_value(value) -> str:
    """A compact value: ``[8, 6, 8]`` -> ``8x6x8``, ``0.0005`` -> ``5e-04``, ``["q", "v"]`` -> ``q,v``."""
    if isinstance(value, (list, tuple)):
        sep = "x" if all(isinstance(v, int) for v in value) else ","
        return sep.join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{format_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, float) and value != 0 and not math.isnan(value) and abs(value) < 1e-2:
        return f"{value:.0e}"
    return str(value)


def run_label(method: str, args: dict, varying=(), exclude=()) -> str:
    """``method`` plus each arg that differs from its default or is in ``varying`` (``"lora r=4"``)."""
    defaults = method_defaults(method)
    parts = []
    for key in sorted(args):
        if key in IGNORED_ARGS or key in exclude:
            continue
        differs = key not in defaults or arg_key(args[key]) != arg_key(defaults[key])
        if differs or key in varying:
            parts.append(f"{ABBREVIATIONS.get(key, key)}={format_value(args[key])}")
    return " ".join([method, *parts])


def labels_for(methods, arg_dicts, exclude=()) -> list[str]:
    """Labels of many runs at once (see :func:`run_label`): an arg counts as varying when it differs
    between runs of the same method; args in ``exclude`` (e.g. the x axis of a figure) are left out."""
    methods, arg_dicts = list(methods), [a or {} for a in arg_dicts]
    runs: dict[str, list[dict]] = {}
    for method, args in zip(methods, arg_dicts):
        runs.setdefault(method, []).append(args)
    varying = {}
    for method, arg_sets in runs.items():
        defaults = method_defaults(method)
        keys = set().union(*arg_sets)
        varying[method] = {k for k in keys
                           if len({arg_key(a.get(k, defaults.get(k, "<unset>"))) for a in arg_sets}) > 1}
    return [run_label(m, a, varying[m], exclude=exclude) for m, a in zip(methods, arg_dicts)]


def metric_name(metric: str) -> str:
    """Display name of a headline metric (``f1`` -> ``F1``)."""
    return METRIC_NAMES.get(str(metric).lower(), str(metric))


def format_count(n: float) -> str:
    """A parameter count in 3 significant figures: ``1234`` -> ``1.23k``, ``2.5e6`` -> ``2.5M``."""
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def _values(records, get) -> list:
    seen = []
    for record in records:
        try:
            value = get(record["config"])
        except (KeyError, TypeError):
            continue
        if value not in seen:
            seen.append(value)
    return seen


def _one_or_range(values: list, fmt=str) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(min(values))}–{fmt(max(values))}" if all(isinstance(v, (int, float)) for v in values) else "varied"


def protocol(records) -> str:
    """One line saying how the plotted runs were trained: model(s), training examples, steps,
    batch size and learning rate (``chosen on val. loss: a, b``, the rates the plotted runs were
    chosen at, when they come from a sweep; the rate itself otherwise)."""
    models = _values(records, lambda c: Path(str(c["model"])).name)
    sizes = _values(records, lambda c: c["data"]["train_size"] or "all")
    steps = _values(records, lambda c: c["train"]["max_steps"])
    batches = _values(records, lambda c: c["train"]["batch_size"])
    grids = _rate_grids(records)
    rates = sorted(_values(records, lambda c: c["lr"]))
    rate = f"lr chosen on val. loss: {grids}" if grids else _with(", ".join(format_value(v) for v in rates), "lr {}")
    parts = [", ".join(models), _with(_one_or_range(sizes, _count), "{} train ex."),
             _with(_one_or_range(steps), "{} steps"), _with(_one_or_range(batches), "batch {}"), rate]
    return " · ".join(p for p in parts if p)


def _rate_grids(records) -> str:
    """The swept learning rates, one grid per method: ``1e-03, 0.01`` when every method swept the
    same rates, else the most common grid and the others by method (``1e-03, 0.01 (full: 2e-05, 5e-05)``)."""
    by_method: dict[str, set] = {}
    for record in records:
        config = record.get("config") or {}
        lr = (config.get("axes") or {}).get("lr")
        if lr is not None:
            by_method.setdefault(str(config.get("method")), set()).add(lr)
    text = {m: ", ".join(format_value(v) for v in sorted(g)) for m, g in by_method.items()}
    if not text:
        return ""
    grids = list(text.values())
    main = max(dict.fromkeys(grids), key=grids.count)
    others = "; ".join(f"{m}: {g}" for m, g in sorted(text.items()) if g != main)
    return f"{main} ({others})" if others else main


def _with(text: str, template: str) -> str:
    return template.format(text) if text else ""


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def figure_name(study: str, records) -> str:
    """The file stem of a study's figure: the study and the model(s), so figures of different
    models never overwrite each other (``rank_ablation_minilm``)."""
    models = sorted({Path(str(r["config"]["model"])).name for r in records if isinstance(r.get("config"), dict)})
    slug = "+".join(models)
    return f"{study}_{slug}" if slug else study
