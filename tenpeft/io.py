"""Adapters on disk: ``CONFIG_NAME`` + ``WEIGHTS_NAME`` (what they contain: ``tenpeft.state``); never pickle.

The names are not PEFT's, so neither PEFT nor transformers takes a tenpeft folder for theirs; a folder
that tenpeft 0.1.0 saved under PEFT's names (``LEGACY_NAMES``) still loads, and a PEFT adapter or a
transformers model given to tenpeft fails naming what it is and what loads it.

The config holds the method, every hyperparameter, the targets, the seed, the base model's
identity and the tenpeft version; the tensors are the trainable ones (shared factors once, trained
norms and heads included) and frozen ones that cannot be rebuilt (a tensorized head's base weight).
Frozen random factors are rebuilt from the seed unless ``store_frozen_random=True``. A merged model
saves the same files as unmerged (stored base weights without ``ΔW``).
Every check runs before the model changes; a failed load leaves the model as it was. The config's
structure is checked in one place (``read_adapter_config``), so a hand-edited file fails with the
field it got wrong. A method, format or family missing here because its plugin module is not imported
fails naming that module (the config's ``plugins``); nothing named in a file is imported.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .atomic import atomic_write_text
from .adapters import activated, active_adapter, add_built, check_name, name_adapter
from .engine import inject
from .errors import TenpeftError
from .hub import model_card, resolve
from .lifecycle import unload
from .placements import merged_wrappers
from .methods import get_method
from .plugins import import_hint
from .schema import Each, Omittable, kind, schema_error
from .state import (CONFIG_NAME, FORMAT, FORMAT_VERSION, IDENTITY_DIMS, LEGACY_NAMES, WEIGHTS_NAME,
                    adapter_config, adapter_tensors, base_identity, saved_hyperparameters, state_of)
from .version import __version__
from .writer import write_adapter


def save_adapter(model: nn.Module, directory: str, store_frozen_random: bool = False,
                 state_dict: dict[str, torch.Tensor] | None = None, adapter_name: str | None = None,
                 is_main_process: bool = True) -> None:
    """Write the adapter of ``model`` (its adapter ``adapter_name``; None: the active one) to ``directory``
    (each file replaced atomically); a merged model writes the files of the unmerged one. A ``state_dict``
    (e.g. the full one FSDP or DeepSpeed gather) supplies the values of the adapter tensors it holds. Tensors
    sharded by FSDP2 (DTensors) are gathered whole, which every process must join: call it on every rank,
    with ``is_main_process`` true on the one that writes (``tenpeft.writer.write_adapter``)."""
    if adapter_name is not None and adapter_name != active_adapter(model):
        with activated(model, adapter_name):
            return save_adapter(model, directory, store_frozen_random, is_main_process=is_main_process)
    write_adapter(model, directory, store_frozen_random, state_dict, is_main_process)


_TENSOR_ENTRY = {"shape": [int], "dtype": str, "component": str}
_CONFIG_SCHEMA = {  # what tenpeft reads from CONFIG_NAME (format and format_version are checked first)
    "tenpeft_version": str, "method": str, "hyperparameters": dict, "targets": [str], "frozen_random_stored": bool,
    "base_model": {"class": str, "model_type": (str, None), "name_or_path": str,
                   "dims": {key: (int, None) for key in IDENTITY_DIMS}},
    "tensors": Each(_TENSOR_ENTRY),
    "plugins": Omittable([str]),  # adapters saved by older tenpeft versions lack it
}


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TenpeftError(f"{path} is not valid JSON ({err}); the file is damaged") from None
    except OSError as err:
        raise TenpeftError(f"cannot read {path}: {err.strerror or err}") from None


def adapter_files(directory: str) -> tuple[str, str]:
    """The paths of the config and weights files of the tenpeft adapter in ``directory`` (``CONFIG_NAME`` and
    ``WEIGHTS_NAME``, or ``LEGACY_NAMES`` when tenpeft 0.1.0 saved it), or a TenpeftError saying what the
    folder holds instead (a PEFT adapter, a transformers model, nothing) and what loads it."""
    names = (CONFIG_NAME, WEIGHTS_NAME)
    legacy = os.path.join(directory, LEGACY_NAMES[0])
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)) and os.path.isfile(legacy):
        found = _load_json(legacy)
        if isinstance(found, dict) and found.get("format") == FORMAT:
            names = LEGACY_NAMES
        elif isinstance(found, dict) and "peft_type" in found:
            raise TenpeftError(f"{directory!r} holds a PEFT adapter (peft_type {found['peft_type']!r}), not a tenpeft "
                               f"one: load it with peft.PeftModel.from_pretrained(base_model, {directory!r})")
    if not os.path.isfile(os.path.join(directory, names[0])):
        what = ("a transformers model (config.json), not a tenpeft adapter: load it with transformers' "
                "from_pretrained" if os.path.isfile(os.path.join(directory, "config.json"))
                else "not a tenpeft adapter directory")
        raise TenpeftError(f"no {CONFIG_NAME} in {directory!r}: {what}; tenpeft.save_adapter writes {CONFIG_NAME} "
                           f"and {WEIGHTS_NAME}")
    return os.path.join(directory, names[0]), os.path.join(directory, names[1])


def read_adapter_config(directory: str, known_method: bool = True) -> dict:
    """The saved config, its structure checked (one TenpeftError naming the first wrong field), its format
    version and (if ``known_method``) its method known here, else an error naming the plugin modules to import."""
    path = adapter_files(directory)[0]
    config = _load_json(path)
    fix = "the file was edited by hand or is not a tenpeft adapter config; save it again with tenpeft.save_adapter"
    if not isinstance(config, dict):
        raise TenpeftError(f"{path} must be a JSON object, got {kind(config)}; {fix}")
    if config.get("format") != FORMAT:
        raise TenpeftError(f"{path} is not a tenpeft adapter config (format {config.get('format')!r}); "
                           f"for a PEFT adapter use peft.PeftModel.from_pretrained")
    error = schema_error(config, {"format_version": int})  # a newer format may differ in the rest
    if error is None and config["format_version"] > FORMAT_VERSION:
        raise TenpeftError(f"{path} uses adapter format {config['format_version']} from tenpeft "
                           f"{config.get('tenpeft_version')}; this is tenpeft {__version__}: upgrade tenpeft")
    error = error or schema_error(config, _CONFIG_SCHEMA)
    if error:
        raise TenpeftError(f"{path}: {error}; {fix}")
    if known_method:
        _check_method_known(path, config)
    return config


def _check_method_known(path: str, config: dict) -> None:
    """The saved method is registered here (installed plugins are loaded to find it), or a TenpeftError
    naming the plugin modules the adapter was saved with."""
    try:
        get_method(config["method"])
        return
    except TenpeftError:
        pass
    plugins = config.get("plugins") or []
    if plugins:
        where = f"registered in module {plugins[0]!r}" if len(plugins) == 1 else \
            "from plugin modules " + ", ".join(repr(m) for m in plugins)
        raise TenpeftError(f"{path} was saved by method {config['method']!r} {where}; import "
                           f"{'it' if len(plugins) == 1 else 'them'} first ({import_hint(plugins)})")
    raise TenpeftError(f"{path} was saved by method {config['method']!r} (tenpeft {config['tenpeft_version']}), "
                       f"unknown to tenpeft {__version__}: upgrade tenpeft or register that method first")


def _missing_plugins_hint(config: dict) -> str:
    """A hint for an error while injecting a saved method: its plugin modules not imported here."""
    missing = [m for m in config.get("plugins") or [] if m not in sys.modules]
    if not missing:
        return ""
    return (f"; the adapter was saved with plugin module(s) {', '.join(repr(m) for m in missing)}, not imported "
            f"here: import them first ({import_hint(missing)})")


def _check_identity(model: nn.Module, saved: dict) -> None:
    current = base_identity(model)
    mismatches = [f"{key}: adapter {saved.get(key)!r}, model {current[key]!r}"
                  for key in ("class", "model_type") if saved.get(key) != current[key]]
    mismatches += [f"{key}: adapter {saved['dims'].get(key)} vs model {current['dims'][key]}"
                   for key in IDENTITY_DIMS if saved.get("dims", {}).get(key) != current["dims"][key]]
    if mismatches:
        raise TenpeftError("the adapter was saved for another base model (" + "; ".join(mismatches) +
                           f"); load it into a {saved.get('class')} of {saved.get('name_or_path') or 'that size'}")


def _read_weights(directory: str, config: dict) -> dict[str, torch.Tensor]:
    path = adapter_files(directory)[1]
    if not os.path.isfile(path):
        raise TenpeftError(f"no {os.path.basename(path)} in {directory!r}; the adapter is incomplete")
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


def load_adapter(model: nn.Module, directory: str, adapter_name: str | None = None, revision: str | None = None,
                 **hub_options) -> nn.Module:
    """Load saved tensors into a model that already carries the same method and hyperparameters (into its
    adapter ``adapter_name``; None: the active one); ``directory`` is a local folder or a Hub repo id
    (``tenpeft.hub.resolve``)."""
    state_of(model)
    directory = resolve(directory, revision, **hub_options)
    with activated(model, adapter_name):
        return _load_into_active(model, directory)


def _load_into_active(model: nn.Module, directory: str) -> nn.Module:
    state = state_of(model)
    if merged_wrappers(model):
        raise TenpeftError("the model is merged; call tenpeft.unmerge(model) before load_adapter")
    config = read_adapter_config(directory)
    _check_identity(model, config["base_model"])
    if config["method"] != state.method or not _same_settings(config["hyperparameters"], state.config):
        raise TenpeftError(f"the model carries {state.method} with other settings than the saved "
                           f"{config['method']} adapter; use tenpeft.from_pretrained(base_model, {directory!r})")
    _copy_in(model, _read_weights(directory, config), config.get("frozen_random_stored", False))
    return model


def _same_settings(saved: dict, config) -> bool:
    """The saved hyperparameters are ``config``'s; a field the file lacks (added to the method after
    it was saved) must hold its default."""
    current = saved_hyperparameters(config)
    try:
        defaults = saved_hyperparameters(type(config)())
    except (TypeError, TenpeftError):  # a config without defaults: every field must be in the file
        defaults = {}
    return set(saved) <= set(current) and all(
        saved[k] == v if k in saved else k in defaults and defaults[k] == v for k, v in current.items())


def from_pretrained(model: nn.Module, directory: str, adapter_name: str | None = None, revision: str | None = None,
                    **hub_options) -> nn.Module:
    """Inject the saved method into a base ``model`` and load its tensors (all or nothing); ``directory``
    is a local folder or a Hub repo id, fetched at ``revision`` (``hub_options``: ``token``, ``cache_dir``,
    ``local_files_only``, ... of ``huggingface_hub.snapshot_download``). Into a model that has adapters,
    ``adapter_name`` adds it as another named adapter (``tenpeft.adapters``), not active."""
    if adapter_name is not None:
        check_name(adapter_name)
    directory = resolve(directory, revision, **hub_options)
    if adapter_name is not None and hasattr(model, "tenpeft_state"):
        return add_built(model, adapter_name, lambda bare: _inject_and_load(bare, directory))
    _inject_and_load(model, directory)
    if adapter_name is not None:
        name_adapter(model, adapter_name)
    return model


def _inject_and_load(model: nn.Module, directory: str) -> None:
    config = read_adapter_config(directory)
    _check_identity(model, config["base_model"])
    weights = _read_weights(directory, config)
    hyperparameters = dict(config["hyperparameters"])
    known = {f.name for f in dataclasses.fields(get_method(config["method"]).config)}
    if set(hyperparameters) - known:
        raise TenpeftError(f"{CONFIG_NAME} has settings {sorted(set(hyperparameters) - known)} that "
                           f"{config['method']} does not take here (saved by tenpeft {config.get('tenpeft_version')})")
    try:
        inject(model, config["method"], **hyperparameters)
    except TenpeftError as err:
        hint = _missing_plugins_hint(config)
        if not hint:
            raise
        raise TenpeftError(f"{err}{hint}") from None
    try:
        _copy_in(model, weights, config.get("frozen_random_stored", False))
    except BaseException:
        unload(model)
        raise


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str | None = None, create_pr: bool = False):
    """Upload ``model``'s adapter (``save_adapter``'s files) and a model card to the Hub repo ``repo_id``
    (created if missing); returns ``huggingface_hub``'s commit info."""
    from huggingface_hub import HfApi

    state = state_of(model)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        save_adapter(model, folder)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        atomic_write_text(os.path.join(folder, "README.md"), model_card(model, repo_id))
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload tenpeft {state.method} adapter")
