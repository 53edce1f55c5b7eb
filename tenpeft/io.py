"""Adapters on disk: ``adapter_config.json`` + ``adapter_model.safetensors``; never pickle.

The config holds the method, every hyperparameter, the targets, the seed, the base model's
identity and the tenpeft version; the tensors are the trainable ones (shared factors once, trained
norms and heads included) and frozen ones that cannot be rebuilt (a tensorized head's base weight).
Frozen random factors are rebuilt from the seed unless ``store_frozen_random=True``.
Every check runs before the model changes; a failed load leaves the model as it was.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .engine import inject, state_of
from .errors import TenpeftError
from .formats import Budget
from .lifecycle import unload
from .methods import get_method
from .report import adapter_tensors, parameter_report

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
FORMAT, FORMAT_VERSION = "tenpeft-adapter", 1
_DIMS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")


def base_identity(model: nn.Module) -> dict:
    """What an adapter must match: the model class, family and dimensions."""
    config = getattr(model, "config", None)
    dims = {k: getattr(config, k, None) for k in _DIMS}
    return {"class": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "name_or_path": getattr(config, "_name_or_path", "") or "", "dims": dims}


def _jsonable(value):
    if isinstance(value, Budget):
        return {"budget": value.parameters}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_adapter(model: nn.Module, directory: str, store_frozen_random: bool = False) -> None:
    """Write the adapter of ``model`` to ``directory`` (each file replaced atomically)."""
    state = state_of(model)
    tensors = adapter_tensors(model, include_regenerable=store_frozen_random)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tenpeft_version": __version__,
        "method": state.method,
        "hyperparameters": _jsonable({f.name: getattr(state.config, f.name) for f in dataclasses.fields(state.config)}),
        "targets": [t.name for t in state.targets],
        "base_model": base_identity(model),
        "frozen_random_stored": store_frozen_random,
        "tensors": {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "component": c}
                    for n, (t, c) in tensors.items()},
        "parameter_report": parameter_report(model).to_dict(),
    }
    os.makedirs(directory, exist_ok=True)
    weights = {n: t.detach().to("cpu").contiguous() for n, (t, _) in tensors.items()}
    _atomic_write(directory, WEIGHTS_NAME, lambda path: save_file(weights, path, metadata={"format": "pt"}))
    _atomic_write(directory, CONFIG_NAME, lambda path: _write_json(path, config))


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def _atomic_write(directory: str, name: str, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, os.path.join(directory, name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_adapter_config(directory: str) -> dict:
    """The saved config, checked for format and version."""
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise TenpeftError(f"no {CONFIG_NAME} in {directory!r}: not a tenpeft adapter directory")
    try:
        with open(path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TenpeftError(f"{path} is not valid JSON ({err}); the file is damaged") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TenpeftError(f"{path} is not a tenpeft adapter config (format {config.get('format')!r}); "
                           f"for a PEFT adapter use peft.PeftModel.from_pretrained")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise TenpeftError(f"{path} uses adapter format {config['format_version']} from tenpeft "
                           f"{config.get('tenpeft_version')}; this is tenpeft {__version__}: upgrade tenpeft")
    if config.get("method") not in _known_methods():
        raise TenpeftError(f"{path} was saved by method {config.get('method')!r} (tenpeft "
                           f"{config.get('tenpeft_version')}), unknown to tenpeft {__version__}: upgrade tenpeft "
                           f"or register that method first")
    return config


def _known_methods():
    from .methods import METHODS
    return METHODS


def _check_identity(model: nn.Module, saved: dict) -> None:
    current = base_identity(model)
    mismatches = [f"{key}: adapter {saved.get(key)!r}, model {current[key]!r}"
                  for key in ("class", "model_type") if saved.get(key) != current[key]]
    mismatches += [f"{key}: adapter {saved['dims'].get(key)} vs model {current['dims'][key]}"
                   for key in _DIMS if saved.get("dims", {}).get(key) != current["dims"][key]]
    if mismatches:
        raise TenpeftError("the adapter was saved for another base model (" + "; ".join(mismatches) +
                           f"); load it into a {saved.get('class')} of {saved.get('name_or_path') or 'that size'}")


def _read_weights(directory: str, config: dict) -> dict[str, torch.Tensor]:
    path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise TenpeftError(f"no {WEIGHTS_NAME} in {directory!r}; the adapter is incomplete")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise TenpeftError(f"{path} cannot be read ({err}); the file is truncated or damaged") from None
    described = {n: tuple(d["shape"]) for n, d in config.get("tensors", {}).items()}
    actual = {n: tuple(t.shape) for n, t in weights.items()}
    if described != actual:
        raise TenpeftError(f"{CONFIG_NAME} and {WEIGHTS_NAME} disagree: {_diff(described, actual, 'config', 'file')}")
    return weights


def _diff(expected: dict, actual: dict, left: str, right: str) -> str:
    parts = [f"missing from {right}: {sorted(set(expected) - set(actual))[:4]}" if set(expected) - set(actual) else "",
             f"not in {left}: {sorted(set(actual) - set(expected))[:4]}" if set(actual) - set(expected) else ""]
    parts += [f"{n}: {left} {list(expected[n])} vs {right} {list(actual[n])}"
              for n in sorted(set(expected) & set(actual)) if expected[n] != actual[n]][:4]
    return "; ".join(p for p in parts if p)


def _copy_in(model: nn.Module, weights: dict[str, torch.Tensor], frozen_random_stored: bool) -> None:
    targets = {n: t for n, (t, _) in adapter_tensors(model, include_regenerable=frozen_random_stored).items()}
    expected = {n: tuple(t.shape) for n, t in targets.items()}
    actual = {n: tuple(t.shape) for n, t in weights.items()}
    if expected != actual:
        raise TenpeftError(f"the saved tensors do not fit this injection: {_diff(expected, actual, 'model', 'adapter')}")
    with torch.no_grad():
        for name, tensor in targets.items():
            tensor.copy_(weights[name].to(tensor.dtype))


def load_adapter(model: nn.Module, directory: str) -> nn.Module:
    """Load saved tensors into a model that already carries the same method and hyperparameters."""
    state = state_of(model)
    config = read_adapter_config(directory)
    _check_identity(model, config["base_model"])
    mine = _jsonable({f.name: getattr(state.config, f.name) for f in dataclasses.fields(state.config)})
    if config["method"] != state.method or config["hyperparameters"] != mine:
        raise TenpeftError(f"the model carries {state.method} with other settings than the saved "
                           f"{config['method']} adapter; use tenpeft.from_pretrained(base_model, {directory!r})")
    _copy_in(model, _read_weights(directory, config), config.get("frozen_random_stored", False))
    return model


def from_pretrained(model: nn.Module, directory: str) -> nn.Module:
    """Inject the saved method into a base ``model`` and load its tensors (all or nothing)."""
    config = read_adapter_config(directory)
    _check_identity(model, config["base_model"])
    weights = _read_weights(directory, config)
    hyperparameters = dict(config["hyperparameters"])
    known = {f.name for f in dataclasses.fields(get_method(config["method"]).config)}
    if set(hyperparameters) - known:
        raise TenpeftError(f"{CONFIG_NAME} has settings {sorted(set(hyperparameters) - known)} that "
                           f"{config['method']} does not take here (saved by tenpeft {config.get('tenpeft_version')})")
    inject(model, config["method"], **hyperparameters)
    try:
        _copy_in(model, weights, config.get("frozen_random_stored", False))
    except BaseException:
        unload(model)
        raise
    return model
