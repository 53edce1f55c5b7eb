"""Short human labels for runs, metrics and parameter counts."""
from __future__ import annotations

import dataclasses
import functools
import json
import math

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
